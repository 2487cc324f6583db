// The search box in the header (every page) and the results page, /web/search?q=: a grid filled
// from GET /search page after page (its next_cursor), the viewer over it.
import { api, query } from './api.js';
import { $, h } from './dom.js';
import { pagedGrid } from './pages.js';
import { empty } from './timeline.js';

// The header's form: submitting goes to the results page; the box shows the query being looked at.
export function wireSearchBox(navigate) {
  const form = $('#search');
  const input = $('#search input');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = input.value.trim();
    if (q) navigate('/web/search' + query({ q }));
  });
  return () => {  // after each navigation
    input.value = location.pathname === '/web/search' ? new URLSearchParams(location.search).get('q') || '' : input.value;
  };
}

export async function mount(main, { query: params, openViewer }) {
  const q = (params.get('q') || '').trim();
  const count = h('span', { class: 'count', 'aria-live': 'polite' });
  const box = h('div', { class: 'folder-page' });
  main.append(h('div', { class: 'toolbar' }, h('h1', { class: 'title', text: q ? `Search: ${q}` : 'Search' }), count), box);
  if (!q) { box.append(empty('Search your photos', 'Type a place, a camera, a file or folder name, a tag or a person in the box above.')); return {}; }
  let cursor = null;
  const g = pagedGrid(box, async () => {
    let data;
    try {
      data = await api('/search' + query({ q, limit: 200, cursor }));
    } catch (e) {
      if (e.status === 404) throw new Error('This server cannot search yet (GET /search answered 404).');
      throw e;
    }
    cursor = data.next_cursor;
    return { items: data.items, done: !cursor };
  }, openViewer);
  const first = await g.load();
  if (first && first.done && !g.items.length) box.append(empty('Nothing found', `No photo matches “${q}”.`));
  count.textContent = first && first.done ? `${g.items.length} found` : '';
  return g;
}
