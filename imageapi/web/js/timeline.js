// The timeline: every file, newest first, under month and day headers, in a square or a justified
// grid (rows of the pictures' own shapes, as tall as it takes to fill the width). Virtualized: the layout of the whole timeline is computed from /timeline/buckets (counts
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
const KEEP = 20000;        // files kept loaded; the months farthest from the view are dropped beyond
//                            (a full-speed scroll through 100,000 kept them all: the major GCs over
//                            that heap were the longest pauses of the main thread)
const GUESS = 1.4;         // aspect ratio assumed for a justified month not loaded yet
const LAYOUT_KEY = 'imageapi.grid';
const STACK_KEY = 'imageapi.stack';  // 'all': every copy of a duplicates stack; else its top only

function saved(key) { try { return localStorage.getItem(key); } catch { return null; } }
function save(key, value) { try { localStorage.setItem(key, value); } catch { /* private mode */ } }

// Width / height as the thumbnail shows it (EXIF orientations 5-8 and a video turned 90 degrees swap
// them), kept within 1:2..3:1 so one panorama does not make a row a strip.
function aspect(it) {
  if (!it || !it.width || !it.height) return 1;
  const turned = (it.orientation >= 5 && it.orientation <= 8) || Math.abs(it.rotation || 0) % 180 === 90;
  return Math.min(3, Math.max(0.5, turned ? it.height / it.width : it.width / it.height));
}

// A day's files as justified rows: add files until the row at height `target` is wider than
// `width`, then shrink it to fit exactly; the day's last row keeps `target` and stays short.
function justify(items, off, count, width, target) {
  const rows = [];
  let start = 0, sum = 0;
  for (let i = 0; i < count; i++) {
    sum += aspect(items[off + i]);
    const full = sum * target >= width;
    if (!full && i < count - 1) continue;
    const rh = full ? width / sum : target;
    const ws = [];
    let acc = 0, x = 0;
    for (let k = start; k <= i; k++) {
      acc += aspect(items[off + k]);
      const nx = Math.round(acc * rh);
      ws.push(nx - x);
      x = nx;
    }
    rows.push({ first: start, n: i - start + 1, h: Math.round(rh), ws });
    start = i + 1;
    sum = 0;
  }
  return rows;
}

// Rows of `per` equal tiles `tw` wide and `rh` high (the square grid; a justified month's guess).
function even(count, per, tw, rh) {
  const rows = [];
  for (let r = 0; r * per < count; r++) rows.push({ first: r * per, n: Math.min(per, count - r * per), h: rh, tw });
  return rows;
}

export async function mount(main, { query: q, navigate, openViewer }) {
  const library = q.get('library') || '';
  const { libraries } = await api('/libraries');
  const filter = h('select', {
    id: 'library-filter', 'aria-label': 'Library',
    onchange: () => navigate('/web/timeline' + query({ library: filter.value })),
  }, h('option', { value: '', text: 'All libraries' }),
  libraries.map((l) => h('option', { value: l.name, text: `${l.name} (${l.files})` })));
  filter.value = library;
  let mode = saved(LAYOUT_KEY) === 'justified' ? 'justified' : 'square';
  const shape = h('select', {
    id: 'grid-layout', 'aria-label': 'Grid layout',
    onchange: () => { mode = shape.value; save(LAYOUT_KEY, mode); relayout(); },
  }, h('option', { value: 'square', text: 'Square grid' }), h('option', { value: 'justified', text: 'Justified grid' }));
  shape.value = mode;
  // Duplicates stack: one picture shown, "+N" on it; ticked off, every copy (the others dimmed).
  const collapse = saved(STACK_KEY) !== 'all';
  const stacking = h('input', {
    type: 'checkbox', id: 'stack-copies', checked: collapse,
    onchange: () => { save(STACK_KEY, stacking.checked ? 'top' : 'all'); navigate(location.pathname + location.search, { remount: true }); },
  });
  main.append(h('div', { class: 'toolbar' }, h('h1', { class: 'title', text: 'Timeline' }), filter, shape,
    h('label', { for: 'stack-copies' }, stacking, ' Stack copies')));
  if (!libraries.length) {
    main.append(empty('No libraries yet', 'Index a folder on the server: run `imageapi scan --full PATH`, then reload this page.'));
    return {};
  }
  const { months } = await api('/timeline/buckets' + query({ library, collapse: collapse ? 'true' : null }));
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
  let held = 0;                 // files in `loaded`
  const spare = [];             // placeholder rows taken off the canvas, put back on it again
  const pending = new Set();    // month indexes being fetched
  const queue = [];
  const shown = new Map();      // block index -> element
  let blocks = [];
  let cols = 4;
  let size = 100;
  let height = 0;
  let laidOut = 0;              // the width of the last layout

  function layout() {
    const width = scroller.clientWidth || main.clientWidth || 800;
    laidOut = width;
    cols = width < 400 ? 3 : width < 600 ? 4 : Math.max(4, Math.floor(width / 180));
    size = Math.floor(width / cols);
    const target = width < 600 ? 120 : 220;  // a justified row's height before it is fitted
    const per = Math.max(1, Math.round(width / (target * GUESS)));
    blocks = [];
    let y = 0;
    months.forEach((m, mi) => {
      m.top = y;
      blocks.push({ kind: 'month', top: y, h: MONTH_H, mi });
      y += MONTH_H;
      if (mode === 'justified' && m.jw !== width && loaded.has(mi)) {
        // kept when the files are dropped again, so the layout stays put
        const items = loaded.get(mi);
        let o = 0;
        m.jrows = m.days.map((d) => { const r = justify(items, o, d.count, width, target); o += d.count; return r; });
        m.jw = width;
      }
      let off = 0;
      m.days.forEach((d, di) => {
        blocks.push({ kind: 'day', top: y, h: DAY_H, mi, day: d.day });
        y += DAY_H;
        const rows = mode === 'square' ? even(d.count, cols, size, size)
          : m.jw === width ? m.jrows[di] : even(d.count, per, Math.floor(width / per), target);
        for (const r of rows) {
          blocks.push({ kind: 'row', top: y, h: r.h, mi, first: off + r.first, n: r.n, tw: r.tw, ws: r.ws });
          y += r.h;
        }
        off += d.count;
      });
    });
    height = y;
    canvas.style.height = height + 'px';
    for (const el of shown.values()) takeOff(el);
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

  function blockEl(b, fast) {
    if (b.kind === 'month') return h('h2', { class: 'month-h', text: monthTitle(months[b.mi].month), dataset: { month: months[b.mi].month } });
    if (b.kind === 'day') return h('h3', { class: 'day-h', text: b.day ? dayTitle(b.day) : '' });
    const items = fast ? null : loaded.get(b.mi);
    if (!items) {
      // Not loaded yet, or passed at full speed: one element drawn as b.n grey squares (a fast
      // scroll passes thousands of these; the pictures come once it slows).
      const ph = spare.pop() || h('div', { class: 'row ph', dataset: { pending: '1' } });
      ph.style.width = b.n * b.tw + 'px';
      ph.style.backgroundSize = `${b.tw}px 100%`;
      return ph;
    }
    const row = h('div', { class: 'row' });
    for (let i = 0; i < b.n && items[b.first + i]; i++) {
      const t = tile(items[b.first + i], openViewer);
      t.style.width = (b.ws ? b.ws[i] : b.tw) + 'px';
      t.style.height = b.h + 'px';
      row.append(t);
    }
    return row;
  }

  let frame = 0;
  function schedule() {
    if (!frame) frame = requestAnimationFrame(() => { frame = 0; draw(); });
  }

  // While the view moves more than a screen a frame (a fling, a held key) nothing drawn stays long
  // enough to be seen: only the screen itself, as grey squares; its pictures and the rows around
  // it once it slows (120 ms without such a jump). The scrubber's jumps are not counted.
  let lastTop = 0, settle = 0;
  function draw() {
    const top = scroller.scrollTop;
    const fast = Math.abs(top - lastTop) > scroller.clientHeight;
    lastTop = top;
    clearTimeout(settle);
    if (fast) settle = setTimeout(schedule, 120);
    const over = fast ? 0 : OVERSCAN;
    const lo = top - over, hi = top + scroller.clientHeight + over;
    const first = firstBlockBelow(Math.max(0, lo));
    let last = first;
    for (; last < blocks.length && blocks[last].top < hi; last++);
    for (const [i, el] of shown) {  // off first, so a placeholder row can be put back at once
      if (i < first || i >= last) { takeOff(el); shown.delete(i); }
    }
    for (let i = first; i < last; i++) {
      const b = blocks[i];
      if (b.kind === 'row' && !loaded.has(b.mi)) request(b.mi);
      const old = shown.get(i);
      if (old && !fast && old.dataset.pending && loaded.has(b.mi)) { takeOff(old); shown.delete(i); }
      if (!shown.has(i)) {
        const el = blockEl(b, fast);
        el.style.top = b.top + 'px';  // (not a transform: each one was a paint chunk to layerize)
        el.style.height = b.h + 'px';
        // In block order, not at the end: Tab and screen readers follow the DOM, and a month that
        // loads late must not put its pictures after the ones drawn below it.
        let next = null, nextI = Infinity;
        for (const [j, e] of shown) if (j > i && j < nextI) { next = e; nextI = j; }
        canvas.insertBefore(el, next);
        shown.set(i, el);
      }
    }
    markScrubber(top);
  }

  function takeOff(el) {
    el.remove();
    if (el.dataset.pending && spare.length < 64) spare.push(el);
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
        if (mode === 'justified' && months[mi].jw !== laidOut) return relayout();  // rows of its pictures' shapes now
        for (const [i, el] of shown) {
          if (blocks[i].mi === mi && el.dataset.pending) { takeOff(el); shown.delete(i); }
        }
        schedule();
      }, showError).finally(() => { pending.delete(mi); pump(); });
    }
  }

  async function loadMonth(mi) {
    if (loaded.has(mi)) return loaded.get(mi);
    const items = [];
    for (;;) {
      const page = await api('/timeline/items' + query({ library, month: months[mi].month, offset: items.length, limit: PAGE, stack: 'true', collapse: collapse ? 'true' : null }));
      items.push(...page.items);
      if (page.items.length < PAGE) break;
    }
    if (!loaded.has(mi)) {
      loaded.set(mi, items);
      held += items.length;
      if (held > KEEP) drop(mi);
    }
    return items;
  }

  // Forget the files of the months farthest from the view (fetched again if they come back).
  function drop(keep) {
    const at = monthAtY(scroller.scrollTop);
    const far = [...loaded.keys()].sort((a, b) => Math.abs(b - at) - Math.abs(a - at));
    for (const mi of far) {
      if (held <= KEEP) break;
      if (mi === keep || visibleMonth(mi)) continue;
      held -= loaded.get(mi).length;
      loaded.delete(mi);
    }
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

  function monthAtY(top) {
    let lo = 0, hi = months.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (months[mid].top <= top + 1) lo = mid; else hi = mid - 1;
    }
    return lo;
  }

  // Lay out again (a month loaded in the justified grid, the layout switched, a new width) keeping
  // the month at the top of the view where it was, as far into it as before.
  function relayout() {
    const top = scroller.scrollTop;
    const mi = monthAtY(top);
    const into = top - months[mi].top;
    layout();
    if (top > 0) {
      const end = mi + 1 < months.length ? months[mi + 1].top : height;
      scroller.scrollTop = months[mi].top + Math.max(0, Math.min(into, end - months[mi].top - 1));
    }
    draw();
  }

  let marked = null;
  function markScrubber(top) {
    const el = scrub.children[monthAtY(top)];
    if (el !== marked) {
      if (marked) marked.classList.remove('current');
      if (el) el.classList.add('current');
      marked = el;
    }
  }

  function jumpTo(mi) {
    scroller.scrollTop = lastTop = months[mi].top;  // a jump to a month: its pictures at once
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
  let lastWidth = -1;
  const resize = new ResizeObserver(() => {
    if (scroller.clientWidth === lastWidth) return draw();  // taller or shorter: no new layout
    lastWidth = scroller.clientWidth;
    relayout();
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
