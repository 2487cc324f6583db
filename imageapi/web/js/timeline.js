// The timeline: every file, newest first, under month and day headers, in a square grid that fills
// the width. Virtualized: the layout of the whole timeline is computed from /timeline/buckets (counts
// per day) before any file is loaded; only the rows near the viewport are in the DOM, and a month's
// files are fetched when one of its rows comes near. The scrubber on the right jumps to any month.
import { api, query, showError } from './api.js';
import { h } from './dom.js';
import { dayTitle, monthTitle } from './format.js';
import { tile } from './grid.js';

const MONTH_H = 56;
const DAY_H = 34;
const OVERSCAN = 600;      // pixels rendered above and below the viewport
const MAX_LOADS = 4;       // months fetched at once
const PAGE = 5000;         // /timeline/items' largest page

export async function mount(main, { query: q, navigate, openViewer }) {
  const library = q.get('library') || '';
  const { libraries } = await api('/libraries');
  const filter = h('select', {
    id: 'library-filter', 'aria-label': 'Library',
    onchange: () => navigate('/web/timeline' + query({ library: filter.value })),
  }, h('option', { value: '', text: 'All libraries' }),
  libraries.map((l) => h('option', { value: l.name, text: `${l.name} (${l.files})` })));
  filter.value = library;
  main.append(h('div', { class: 'toolbar' }, h('h1', { class: 'title', text: 'Timeline' }), filter));
  if (!libraries.length) {
    main.append(empty('No libraries yet', 'Index a folder on the server: run `imageapi scan --full PATH`, then reload this page.'));
    return {};
  }
  const { months } = await api('/timeline/buckets' + query({ library }));
  if (!months.length) {
    main.append(empty('No photos or videos yet', 'Put some in the library folder and run `imageapi scan` on the server (or wait for the watcher).'));
    return {};
  }
  let total = 0;
  for (const m of months) {
    m.start = total;
    total += m.count;
    if (!m.days.length) m.days = [{ day: null, count: m.count }];
  }

  const canvas = h('div', { class: 'canvas' });
  const scroller = h('div', { class: 'scroller', tabindex: '-1' }, canvas);
  const scrub = h('nav', { class: 'scrubber', 'aria-label': 'Jump to a date' });
  const scrubLabel = h('div', { class: 'scrub-label', hidden: true });
  main.append(h('div', { class: 'timeline' }, scroller, scrub, scrubLabel));

  const loaded = new Map();     // month index -> items
  const pending = new Set();    // month indexes being fetched
  const queue = [];
  const shown = new Map();      // block index -> element
  let blocks = [];
  let cols = 4;
  let size = 100;
  let height = 0;

  function layout() {
    const width = scroller.clientWidth || main.clientWidth || 800;
    cols = width < 400 ? 3 : width < 600 ? 4 : Math.max(4, Math.floor(width / 180));
    size = Math.floor(width / cols);
    blocks = [];
    let y = 0;
    months.forEach((m, mi) => {
      m.top = y;
      blocks.push({ kind: 'month', top: y, h: MONTH_H, mi });
      y += MONTH_H;
      let off = 0;
      for (const d of m.days) {
        blocks.push({ kind: 'day', top: y, h: DAY_H, mi, day: d.day });
        y += DAY_H;
        for (let r = 0; r * cols < d.count; r++) {
          blocks.push({ kind: 'row', top: y, h: size, mi, first: off + r * cols, n: Math.min(cols, d.count - r * cols) });
          y += size;
        }
        off += d.count;
      }
    });
    height = y;
    canvas.style.height = height + 'px';
    for (const el of shown.values()) el.remove();
    shown.clear();
    drawScrubber();
  }

  function firstBlockBelow(y) {
    let lo = 0, hi = blocks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (blocks[mid].top + blocks[mid].h <= y) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function blockEl(b) {
    if (b.kind === 'month') return h('h2', { class: 'month-h', text: monthTitle(months[b.mi].month), dataset: { month: months[b.mi].month } });
    if (b.kind === 'day') return h('h3', { class: 'day-h', text: b.day ? dayTitle(b.day) : '' });
    const items = loaded.get(b.mi);
    if (!items) {
      // Not loaded yet: one element drawn as b.n grey squares (a fast scroll passes thousands of these).
      const ph = h('div', { class: 'row ph', dataset: { pending: '1' } });
      ph.style.width = b.n * size + 'px';
      ph.style.backgroundSize = `${size}px 100%`;
      return ph;
    }
    const row = h('div', { class: 'row' });
    for (let i = 0; i < b.n; i++) {
      const t = tile(items[b.first + i], openViewer);
      t.style.width = t.style.height = size + 'px';
      row.append(t);
    }
    return row;
  }

  let frame = 0;
  function schedule() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
  }

  function draw() {
    const top = scroller.scrollTop;
    const lo = top - OVERSCAN, hi = top + scroller.clientHeight + OVERSCAN;
    const want = new Set();
    for (let i = firstBlockBelow(Math.max(0, lo)); i < blocks.length && blocks[i].top < hi; i++) {
      want.add(i);
      const b = blocks[i];
      if (b.kind === 'row' && !loaded.has(b.mi)) request(b.mi);
      if (!shown.has(i)) {
        const el = blockEl(b);
        el.style.transform = `translateY(${b.top}px)`;
        el.style.height = b.h + 'px';
        canvas.append(el);
        shown.set(i, el);
      }
    }
    for (const [i, el] of shown) {
      if (!want.has(i)) { el.remove(); shown.delete(i); }
    }
    markScrubber(top);
  }

  function request(mi) {
    if (pending.has(mi) || queue.includes(mi)) return;
    queue.push(mi);
    pump();
  }

  function visibleMonth(mi) {
    const m = months[mi], next = months[mi + 1];
    const end = next ? next.top : height;
    const top = scroller.scrollTop;
    return end >= top - OVERSCAN && m.top <= top + scroller.clientHeight + OVERSCAN;
  }

  function pump() {
    while (pending.size < MAX_LOADS && queue.length) {
      const mi = queue.shift();
      if (loaded.has(mi) || !visibleMonth(mi)) continue;  // scrolled past before its turn
      pending.add(mi);
      loadMonth(mi).then(() => {
        for (const [i, el] of shown) {
          if (blocks[i].mi === mi && el.dataset.pending) { el.remove(); shown.delete(i); }
        }
        schedule();
      }, showError).finally(() => { pending.delete(mi); pump(); });
    }
  }

  async function loadMonth(mi) {
    if (loaded.has(mi)) return loaded.get(mi);
    const items = [];
    for (;;) {
      const page = await api('/timeline/items' + query({ library, month: months[mi].month, offset: items.length, limit: PAGE }));
      items.push(...page.items);
      if (page.items.length < PAGE) break;
    }
    loaded.set(mi, items);
    return items;
  }

  // -- the scrubber: a mark per month at its place in the timeline, a label per year ---------------
  function drawScrubber() {
    scrub.replaceChildren();
    let year = null;
    months.forEach((m, mi) => {
      const pct = (m.top / Math.max(1, height)) * 100;
      const y = m.month === 'undated' ? 'No date' : m.month.slice(0, 4);
      const first = y !== year;
      year = y;
      const mark = h('button', {
        type: 'button', class: first ? 'scrub-year' : 'scrub-month', 'aria-label': monthTitle(m.month),
        title: `${monthTitle(m.month)}: ${m.count}`, tabindex: first ? '0' : '-1',
        dataset: { month: m.month }, onclick: () => jumpTo(mi),
      }, first ? y : '');
      mark.style.top = pct + '%';
      scrub.append(mark);
    });
  }

  let marked = null;
  function markScrubber(top) {
    let lo = 0, hi = months.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (months[mid].top <= top + 1) lo = mid; else hi = mid - 1;
    }
    const el = scrub.children[lo];
    if (el !== marked) {
      if (marked) marked.classList.remove('current');
      if (el) el.classList.add('current');
      marked = el;
    }
  }

  function jumpTo(mi) {
    scroller.scrollTop = months[mi].top;
    schedule();
  }

  function monthAt(clientY) {
    const r = scrub.getBoundingClientRect();
    const y = Math.min(1, Math.max(0, (clientY - r.top) / r.height)) * height;
    let mi = 0;
    while (mi + 1 < months.length && months[mi + 1].top <= y) mi++;
    return mi;
  }

  let dragging = false;
  scrub.addEventListener('pointerdown', (ev) => {
    if (ev.target.closest('button')) return;  // a mark: its click jumps to its month
    dragging = true;
    scrub.setPointerCapture(ev.pointerId);
    scrubTo(ev.clientY);
  });
  scrub.addEventListener('pointermove', (ev) => {
    const mi = monthAt(ev.clientY);
    scrubLabel.textContent = monthTitle(months[mi].month);
    scrubLabel.style.top = (ev.clientY - scrub.getBoundingClientRect().top) + 'px';
    scrubLabel.hidden = false;
    if (dragging) scrubTo(ev.clientY);
  });
  scrub.addEventListener('pointerup', () => { dragging = false; });
  scrub.addEventListener('pointerleave', () => { if (!dragging) scrubLabel.hidden = true; });
  function scrubTo(clientY) { jumpTo(monthAt(clientY)); }

  scroller.addEventListener('scroll', schedule, { passive: true });
  const resize = new ResizeObserver(() => {
    const anchor = firstBlockBelow(scroller.scrollTop);
    const b = blocks[anchor];
    const oldSize = size;
    layout();
    if (b && size !== oldSize) {
      const m = months[b.mi];
      scroller.scrollTop = m.top;  // keep the month in view
    }
    draw();
  });
  resize.observe(scroller);
  layout();
  draw();

  // -- what the viewer needs: the files in timeline order ------------------------------------------
  function monthOfIndex(i) {
    let lo = 0, hi = months.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (months[mid].start <= i) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  const source = {
    count: () => total,
    async at(i) {
      if (i < 0 || i >= total) return null;
      const mi = monthOfIndex(i);
      const items = await loadMonth(mi);
      return items[i - months[mi].start] || null;
    },
    async locate(target, meta) {
      const month = meta && meta.taken_at ? meta.taken_at.slice(0, 7) : 'undated';
      const mi = months.findIndex((m) => m.month === month);
      if (mi < 0) return -1;
      const items = await loadMonth(mi);
      const k = items.findIndex((it) => it.library === target.library && it.path === target.path);
      return k < 0 ? -1 : months[mi].start + k;
    },
  };

  return {
    source,
    unmount() { resize.disconnect(); },
    focusItem(item) {
      if (!item) return;
      const el = canvas.querySelector(`a.tile[data-path="${CSS.escape(item.path)}"][data-library="${CSS.escape(item.library)}"]`);
      if (el) el.focus({ preventScroll: false });
    },
  };
}

export function empty(title, text) {
  return h('section', { class: 'empty' }, h('h2', { text: title }), h('p', { text }));
}
