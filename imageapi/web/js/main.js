// The web client: a page per address (history API), the viewer over the grid as `?view=`.
import { api, hideError, setUnauthorizedHandler, showError } from './api.js';
import { $, clear, h } from './dom.js';
import * as folders from './folders.js';
import * as login from './login.js';
import * as mapPage from './map.js';
import * as pages from './pages.js';
import * as search from './search.js';
import * as timeline from './timeline.js';
import { Viewer } from './viewer.js';

const main = $('#main');
let current = null;   // {key, page, handle}
let viewer = null;

// `remount`: the page is made again even when its address is the same (a choice it reads once).
export function navigate(url, { replace = false, remount = false } = {}) {
  if (url !== location.pathname + location.search) history[replace ? 'replaceState' : 'pushState'](null, '', url);
  if (remount && current) current.key = null;
  render();
}

function route(path) {
  if (path === '/web/login') return [login, {}];
  if (path === '/' || path === '/web/timeline' || path === '/web/') return [timeline, {}];
  if (path === '/web/map') return [mapPage, {}];
  if (path === '/web/search') return [search, {}];
  if (path === '/web/folders' || path.startsWith('/web/folders/')) {
    const rest = decodeURIComponent(path.slice('/web/folders'.length)).replace(/^\//, '');
    const [library, ...parts] = rest ? rest.split('/') : [''];
    return [folders, { library: library || null, folder: parts.join('/') }];
  }
  const m = /^\/web\/(tags|people|memories|videos|status)(?:\/(.+))?$/.exec(path);
  if (m) {
    const arg = m[2] ? decodeURIComponent(m[2]) : null;
    return [{ mount: pages[m[1]] }, { tag: arg, person: arg }];
  }
  return [null, {}];
}

function pageKey() {
  const q = new URLSearchParams(location.search);
  q.delete('view');
  return location.pathname + '?' + q.toString();
}

async function render() {
  hideError();
  searchShown();
  const key = pageKey();
  const q = new URLSearchParams(location.search);
  if (!current || current.key !== key) {
    if (viewer) { viewer.close(); viewer = null; }
    if (current && current.handle && current.handle.unmount) current.handle.unmount();
    clear(main);
    const [page, params] = route(location.pathname);
    document.body.classList.toggle('bare', page === login);
    for (const a of document.querySelectorAll('#nav a')) {
      a.setAttribute('aria-current', location.pathname.startsWith(a.dataset.prefix) || (a.dataset.prefix === '/web/timeline' && location.pathname === '/') ? 'page' : 'false');
    }
    current = { key, page };
    if (!page) {
      main.append(h('section', { class: 'empty' }, h('h1', { text: 'Page not found' }),
        h('p', {}, 'There is nothing at this address. ', h('a', { href: '/', 'data-nav': '' }, 'Go to the timeline'))));
      return;
    }
    try {
      current.handle = await page.mount(main, { ...params, query: q, navigate, openViewer });
    } catch (e) {
      showError(e);
    }
  }
  const view = q.get('view');
  if (view && current.handle && current.handle.source) {
    const slash = view.indexOf('/');
    const target = { library: view.slice(0, slash), path: view.slice(slash + 1) };
    if (!viewer) viewer = new Viewer(current.handle.source, { onClose: closeViewer, onMove: moveViewer });
    viewer.show(target).catch(showError);
  } else if (viewer) {
    viewer.close();
    viewer = null;
  }
}

function viewUrl(item) {
  const q = new URLSearchParams(location.search);
  q.set('view', `${item.library}/${item.path}`);
  return location.pathname + '?' + q.toString();
}

function openViewer(item) { navigate(viewUrl(item)); }
function moveViewer(item) { navigate(viewUrl(item), { replace: true }); }

function closeViewer() {
  const q = new URLSearchParams(location.search);
  const view = q.get('view') || '';  // the address says which picture was shown last
  const item = { library: view.slice(0, view.indexOf('/')), path: view.slice(view.indexOf('/') + 1) };
  q.delete('view');
  const s = q.toString();
  navigate(location.pathname + (s ? '?' + s : ''));
  if (current && current.handle && current.handle.focusItem) current.handle.focusItem(item);
}

// Same-origin links marked data-nav go through the router.
document.addEventListener('click', (ev) => {
  const a = ev.target.closest('a[data-nav]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', render);
const searchShown = search.wireSearchBox(navigate);

setUnauthorizedHandler(() => {
  if (location.pathname !== '/web/login') {
    navigate('/web/login' + '?next=' + encodeURIComponent(location.pathname + location.search), { replace: true });
  }
});

$('#logout').addEventListener('click', async () => {
  try {
    await api('/logout', { method: 'POST', quiet401: true });
  } catch (e) {
    if (e.status !== 401) { showError(e); return; }
  }
  navigate('/web/login', { replace: true });
});
$('#error .close').addEventListener('click', hideError);

render();
