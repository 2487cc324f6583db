// One thumbnail of a grid: a link to the viewer, the picture, a video's duration, a RAW/HEIC badge,
// a duplicates stack's count.
// Built with plain DOM calls and no listener of its own (one click and one error listener on the
// document serve every tile): the timeline makes hundreds a second while it is scrolled fast, and
// each closure or listener more is garbage the main thread collects in long pauses.
import { mediaUrl } from './api.js';
import { badge, duration } from './format.js';

const opens = new WeakMap();  // tile -> [item, open]
let search = null, prefix = '';

function viewHref(item) {
  if (location.search !== search || !prefix.startsWith(location.pathname + '?')) {
    search = location.search;
    const q = new URLSearchParams(search);
    q.delete('view');
    const rest = q.toString();
    prefix = location.pathname + '?' + (rest ? rest + '&' : '');
  }
  return prefix + new URLSearchParams({ view: `${item.library}/${item.path}` }).toString();
}

function wire() {
  document.addEventListener('click', (ev) => {
    const a = ev.target instanceof Element ? ev.target.closest('a.tile') : null;
    const hit = a && opens.get(a);
    if (!hit || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    hit[1](hit[0]);
  });
  // No thumbnail (the server says why in /image/metadata): an empty square, not a broken image.
  document.addEventListener('error', (ev) => {
    const img = ev.target;
    if (img instanceof HTMLImageElement && img.parentElement && img.parentElement.classList.contains('tile')) {
      img.parentElement.classList.add('broken');
    }
  }, true);
}

export function tile(item, open) {
  if (!tile.wired) { tile.wired = true; wire(); }
  const a = document.createElement('a');
  a.className = 'tile';
  a.href = viewHref(item);
  a.title = item.name;
  a.dataset.library = item.library;
  a.dataset.path = item.path;
  opens.set(a, [item, open]);
  const img = document.createElement('img');
  img.alt = item.name;
  img.loading = 'lazy';
  img.decoding = 'async';
  img.draggable = false;
  img.src = mediaUrl(item);
  a.append(img);
  if (item.kind === 'video') a.append(span('dur', '▶ ' + duration(item.duration)));
  const b = badge(item.kind);
  if (b) a.append(span('badge', b));
  // Duplicates (?stack=true): the copy to keep carries "+N", the other copies are dimmed in place
  // (the timeline's layout is laid out from counts before any file is loaded).
  if (item.stack && item.stack.top) a.append(span('stack', '+' + (item.stack.count - 1)));
  else if (item.stack) a.classList.add('stacked');
  return a;
}

function span(cls, text) {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  return s;
}
