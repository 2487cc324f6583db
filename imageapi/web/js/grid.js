// One thumbnail of a grid: a link to the viewer, the picture, a video's duration, a RAW/HEIC badge.
import { mediaUrl } from './api.js';
import { h } from './dom.js';
import { badge, duration } from './format.js';

export function tile(item, open) {
  const href = (() => {
    const q = new URLSearchParams(location.search);
    q.set('view', `${item.library}/${item.path}`);
    return location.pathname + '?' + q.toString();
  })();
  const a = h('a', {
    class: 'tile', href, title: item.name, dataset: { library: item.library, path: item.path },
    onclick: (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      open(item);
    },
  }, h('img', {
    src: mediaUrl(item), alt: item.name, loading: 'lazy', decoding: 'async', draggable: 'false',
    onerror: () => a.classList.add('broken'),  // no thumbnail (the server says why in /image/metadata)
  }));
  if (item.kind === 'video') a.append(h('span', { class: 'dur', text: '▶ ' + duration(item.duration) }));
  const b = badge(item.kind);
  if (b) a.append(h('span', { class: 'badge', text: b }));
  return a;
}
