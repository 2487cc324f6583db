// The smaller pages: tags, memories, the video wall and the status. Each grid here is a
// plain (not virtualized) grid that loads page after page as it is scrolled.
import { api, query, showError } from './api.js';
import { h } from './dom.js';
import { tile } from './grid.js';
import { empty } from './timeline.js';

const toolbar = (title, ...more) => h('div', { class: 'toolbar' }, h('h1', { class: 'title', text: title }), ...more);

// A grid filled by `next()` ({items, done}) until done; the viewer's source is what is loaded so far.
export function pagedGrid(box, next, openViewer, make = tile) {
  const items = [];
  const grid = h('div', { class: 'flat-grid' });
  const more = h('button', { type: 'button', class: 'btn more', text: 'More', hidden: true });
  box.append(grid, more);
  let done = false, busy = null;
  const load = () => {
    if (done || busy) return busy;
    busy = next().then((page) => {
      for (const it of page.items) { items.push(it); grid.append(make(it, openViewer)); }
      done = page.done;
      more.hidden = done;
      busy = null;
      return page;
    }, (e) => { busy = null; showError(e); });
    return busy;
  };
  more.addEventListener('click', load);
  const io = new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) load(); }, { rootMargin: '800px' });
  io.observe(more);
  return {
    items, load,
    unmount() { io.disconnect(); },
    source: {
      count: () => items.length,
      async at(i) {
        while (i >= items.length && !done) await load();
        return items[i] || null;
      },
      async locate(t) { return items.findIndex((it) => it.library === t.library && it.path === t.path); },
    },
  };
}

// Pages over every library in turn (/photos and /persons/{id}/photos are per library).
export function acrossLibraries(libraries, fetchPage) {
  let li = 0, cursor = null;
  return async () => {
    if (li >= libraries.length) return { items: [], done: true };
    const data = await fetchPage(libraries[li].name, cursor);
    cursor = data.next_cursor;
    if (!cursor) li++;
    return { items: data.items, done: li >= libraries.length };
  };
}

export async function tags(main, { tag, openViewer }) {
  if (!tag) {
    const { tags: all } = await api('/tags');
    main.append(toolbar('Tags'));
    if (!all.length) { main.append(empty('No tags yet', 'Open a photo and add a tag in its info panel.')); return {}; }
    main.append(h('div', { class: 'folder-page' }, h('ul', { class: 'folders' }, all.map((t) => h('li', {},
      h('a', { href: '/web/tags/' + encodeURIComponent(t.name), 'data-nav': '' },
        h('span', { text: t.name }), h('span', { class: 'count', text: String(t.count) })))))));
    return {};
  }
  const { libraries } = await api('/libraries');
  const box = h('div', { class: 'folder-page' });
  main.append(toolbar('Tag: ' + tag, h('a', { href: '/web/tags', 'data-nav': '', text: 'All tags' })), box);
  const g = pagedGrid(box, acrossLibraries(libraries, (library, cursor) =>
    api('/photos' + query({ library, tag, recursive: 'true', limit: 200, cursor }))), openViewer);
  const first = await g.load();
  if (first && first.done && !g.items.length) box.append(empty('Nothing has this tag', ''));
  return g;
}

// People (named and the unnamed groups of faces) live in people.js.
export { people } from './people.js';

const TZ_KEY = 'imageapi.tz';

// The time zone whose "today" memories are about: the address's, else the one chosen before, else
// the browser's.
function memoryZone(q) {
  let kept = null;
  try { kept = localStorage.getItem(TZ_KEY); } catch { /* private mode */ }
  return q.get('tz') || kept || Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

export async function memories(main, { query: q, navigate, openViewer }) {
  const span = q.get('span') || 'day';
  const tz = memoryZone(q);
  const date = q.get('date');  // another day than today (YYYY-MM-DD)
  const go = (changes) => navigate('/web/memories' + query({ span, date, tz, ...changes }));
  const pick = h('select', { 'aria-label': 'Span', onchange: () => go({ span: pick.value }) },
    ['day', 'week', 'month'].map((s) => h('option', { value: s, text: `This ${s}` })));
  pick.value = span;
  const zones = Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : [];
  const zone = h('select', {
    id: 'memories-tz', 'aria-label': 'Time zone',
    onchange: () => { try { localStorage.setItem(TZ_KEY, zone.value); } catch { /* private mode */ } go({ tz: zone.value }); },
  }, [...new Set([tz, 'UTC', ...zones])].sort().map((z) => h('option', { value: z, text: z.replaceAll('_', ' ') })));
  zone.value = tz;
  main.append(toolbar('Memories', pick, zone));
  const data = await api('/memories' + query({ span, tz, date }));
  const box = h('div', { class: 'folder-page' }, h('p', { class: 'count memories-day', text: `${data.date} (${tz})` }));
  main.append(box);
  const items = [];
  if (!data.years.length) box.append(empty('No memories today', `Nothing was taken this ${span} in earlier years.`));
  for (const y of data.years) {
    box.append(h('h2', { class: 'year-h', text: `${y.year} · ${y.count}` }),
      h('div', { class: 'flat-grid' }, y.items.map((it) => { items.push(it); return tile(it, openViewer); })));
  }
  return {
    source: {
      count: () => items.length,
      async at(i) { return items[i] || null; },
      async locate(t) { return items.findIndex((it) => it.library === t.library && it.path === t.path); },
    },
  };
}

function wallTile(item, open) {
  const t = tile({ ...item, kind: 'video' }, open);
  const img = t.querySelector('img');
  img.src = item.urls.thumbnail;
  if (item.urls.clip) {
    const v = h('video', { muted: true, loop: true, playsinline: true, preload: 'none', poster: item.urls.thumbnail, 'aria-hidden': 'true' });
    v.muted = true;
    v.src = item.urls.clip;
    v.addEventListener('error', () => { if (item.urls.gif) img.src = item.urls.gif; v.remove(); });
    t.prepend(v);
  }
  return t;
}

export async function videos(main, { query: q, openViewer }) {
  const { libraries } = await api('/libraries');
  const box = h('div', { class: 'folder-page' });
  main.append(toolbar('Videos'), box);
  if (!libraries.length) { box.append(empty('No libraries yet', 'Run `imageapi scan --full PATH` on the server.')); return {}; }
  const visible = new IntersectionObserver((es) => {
    for (const e of es) {
      if (e.isIntersecting) e.target.play().catch(() => {}); else e.target.pause();
    }
  });
  const g = pagedGrid(box, acrossLibraries(libraries, async (library, cursor) => {
    const data = await api('/video/wall' + query({ library, limit: 60, cursor }));
    for (const it of data.items) it.library = data.library;
    return data;
  }), openViewer, (item, open) => {
    const t = wallTile(item, open);
    const v = t.querySelector('video');
    if (v) visible.observe(v);
    return t;
  });
  const first = await g.load();
  if (first && first.done && !g.items.length) box.append(empty('No videos yet', 'Videos appear here once the library is scanned.'));
  const unmount = g.unmount;
  g.unmount = () => { unmount(); visible.disconnect(); };
  return g;
}

export async function status(main) {
  const data = await api('/status');
  const box = h('div', { class: 'folder-page status' });
  main.append(toolbar('Status'), box);
  const dl = (obj) => h('dl', {}, Object.entries(obj).flatMap(([k, v]) =>
    [h('dt', { text: k.replaceAll('_', ' ') }), h('dd', { text: typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v) })]));
  box.append(h('h2', { text: 'Backlog' }), dl(data.backlog), h('h2', { text: 'Watcher' }), dl(data.watcher),
    h('h2', { text: 'Faces' }), dl(data.faces), h('h2', { text: 'Last scans' }));
  if (!data.last_scans.length) box.append(h('p', { text: 'No scan yet: run `imageapi scan --full PATH`.' }));
  else {
    const cols = ['library', 'mode', 'status', 'started_at', 'finished_at', 'scanned', 'added', 'changed', 'removed', 'moved', 'errors'];
    box.append(h('div', { class: 'table' }, h('table', {},
      h('thead', {}, h('tr', {}, cols.map((c) => h('th', { text: c.replace('_at', '') })))),
      h('tbody', {}, data.last_scans.map((s) => h('tr', {}, cols.map((c) => h('td', { text: s[c] === null ? '' : String(s[c]) }))))))));
  }
  return {};
}

