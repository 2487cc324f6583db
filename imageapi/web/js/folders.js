// Folders: a library's tree (GET /photos with its sub-folders), breadcrumbs, and the folder's files.
import { api, query, showError } from './api.js';
import { h } from './dom.js';
import { tile } from './grid.js';
import { empty } from './timeline.js';

const PAGE = 200;

const folderHref = (library, path) =>
  '/web/folders/' + [library, ...(path ? path.split('/') : [])].map(encodeURIComponent).join('/');

export async function mount(main, { library, folder, openViewer }) {
  const { libraries } = await api('/libraries');
  if (!libraries.length) {
    main.append(empty('No libraries yet', 'Index a folder on the server: run `imageapi scan --full PATH`, then reload this page.'));
    return {};
  }
  if (!library) {
    main.append(h('div', { class: 'toolbar' }, h('h1', { class: 'title', text: 'Folders' })),
      h('ul', { class: 'folders' }, libraries.map((l) => h('li', {},
        h('a', { href: folderHref(l.name, ''), 'data-nav': '' }, h('span', { text: l.name }), h('span', { class: 'count', text: String(l.files) }))))));
    return {};
  }
  const crumbs = h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumbs' },
    h('a', { href: '/web/folders', 'data-nav': '', text: 'Folders' }), ' / ',
    h('a', { href: folderHref(library, ''), 'data-nav': '', text: library }));
  let at = '';
  for (const part of folder ? folder.split('/') : []) {
    at = at ? `${at}/${part}` : part;
    crumbs.append(' / ', h('a', { href: folderHref(library, at), 'data-nav': '', text: part }));
  }
  crumbs.lastElementChild.setAttribute('aria-current', 'page');
  const sub = h('ul', { class: 'folders' });
  const grid = h('div', { class: 'flat-grid' });
  const more = h('button', { type: 'button', class: 'btn more', text: 'More', hidden: true });
  main.append(h('div', { class: 'toolbar' }, crumbs), h('div', { class: 'folder-page' }, sub, grid, more));

  const items = [];
  let cursor = null;
  async function page() {
    const data = await api('/photos' + query({ library, path: folder, limit: PAGE, cursor }));
    if (!cursor) {
      for (const f of data.folders) {
        sub.append(h('li', {}, h('a', { href: folderHref(library, f.path), 'data-nav': '' },
          h('span', { text: f.name }), h('span', { class: 'count', text: String(f.count) }))));
      }
    }
    for (const it of data.items) {
      items.push(it);
      grid.append(tile(it, openViewer));
    }
    cursor = data.next_cursor;
    more.hidden = !cursor;
    if (!items.length && !data.folders.length) main.append(empty('This folder is empty', 'Nothing here is indexed yet.'));
  }
  more.addEventListener('click', () => page().catch(showError));
  await page();
  const io = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting) && cursor) page().catch(showError);
  }, { rootMargin: '800px' });
  io.observe(more);

  return {
    unmount() { io.disconnect(); },
    source: {
      count: () => items.length,
      async at(i) { return items[i] || null; },
      async locate(target) {
        return items.findIndex((it) => it.library === target.library && it.path === target.path);
      },
    },
    focusItem() {},
  };
}
