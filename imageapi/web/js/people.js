// People: the named persons and the unnamed groups of similar faces the face passes made (largest
// first), to name, merge and fix. /web/people lists them (select some and merge them into another,
// name a group where it stands); /web/people/ID shows a person's photos or their faces, each face
// with "Not this person" (the server remembers it) and a link to its photo. Names are user data:
// they go in as text only.
import { api, query, showError } from './api.js';
import { h } from './dom.js';
import { acrossLibraries, pagedGrid } from './pages.js';
import { empty } from './timeline.js';

const PAGE = 100;        // unnamed groups drawn at a time (there can be thousands)
const FACES_PAGE = 24;

const named = (p) => (p.named !== undefined ? p.named : p.name !== null && p.name !== undefined);
// What a person is called on the page: their name, or which unnamed group they are.
const label = (p) => (named(p) ? p.name : `Unnamed person ${p.id}`);
const plural = (n, one, many = one + 's') => `${n} ${n === 1 ? one : many}`;
const counts = (p) => [p.photos !== undefined ? plural(p.photos, 'photo') : null,
  p.faces !== undefined ? plural(p.faces, 'face') : null].filter(Boolean).join(' · ');
const sameName = (a, b) => a.toLowerCase() === b.toLowerCase();

function facesOff() {
  return empty('Faces are off', 'This server does not look for faces (FACE_BACKEND is off, or no detector is installed '
    + 'or reachable). `imageapi faces status` on the server says why and how to turn them on.');
}

function toolbar(title, status, ...more) {
  return h('div', { class: 'toolbar' }, title, status, ...more);
}

// Announced to screen readers and shown: what the last action did.
const statusLine = () => h('p', { class: 'people-status', role: 'status' });

// A merge target for a <select>: named people by name, then the unnamed groups.
const option = (p) => h('option', { value: String(p.id), text: named(p) ? p.name : `${label(p)} (${counts(p)})` });

// Merge each into `into`; the person they make (an unnamed target takes a merged one's name).
async function mergeInto(ids, into) {
  let res = null;
  for (const id of ids) res = await api(`/persons/${id}/merge`, { method: 'POST', body: { into: Number(into) } });
  return res && res.person;
}

// Name a person; when another already has the name, offer to merge into them instead (409).
// `ask(target)` shows that offer; resolves to the person named, or null when the offer was shown.
async function giveName(person, name, everyone, ask) {
  const clash = () => everyone.find((p) => p.id !== person.id && named(p) && sameName(p.name, name));
  if (clash()) { ask(clash()); return null; }
  try {
    return (await api(`/persons/${person.id}`, { method: 'PATCH', body: { name } })).person;
  } catch (e) {
    if (e.status !== 409) throw e;
    everyone.splice(0, everyone.length, ...(await api('/persons')).persons);  // named meanwhile elsewhere
    if (!clash()) throw e;
    ask(clash());
    return null;
  }
}

// The offer shown when a name is taken: merge into the person who has it, or keep editing.
function mergeOffer(place, person, target, done) {
  const yes = h('button', { type: 'button', class: 'btn', text: `Merge into ${target.name}` });
  const offer = h('div', { class: 'merge-offer', role: 'group', 'aria-label': 'Name taken' },
    h('span', { text: `${target.name} already exists. Merge ${label(person)} into them?` }), yes,
    h('button', { type: 'button', class: 'btn', text: 'Cancel', onclick: () => { offer.remove(); place.querySelector('input:not(.pick)')?.focus(); } }));
  yes.addEventListener('click', async () => {
    try {
      await mergeInto([person.id], target.id);
      done(target);
    } catch (e) { showError(e); }
  });
  place.querySelector('.merge-offer')?.remove();
  place.append(offer);
  yes.focus();
}

export async function people(main, params) {
  return params.person ? personPage(main, params) : listPage(main, params);
}

async function listPage(main) {
  const title = h('h1', { class: 'title', text: 'People', tabindex: '-1' });
  const status = statusLine();
  main.append(toolbar(title, status));
  const box = h('div', { class: 'folder-page people-page' });
  main.append(box);
  const selected = new Set();
  let everyone = [];

  const count = h('span', { class: 'count' });
  const into = h('select', { 'aria-label': 'Merge the selected into' });
  const bar = h('form', { class: 'tag-add merge-bar', hidden: true, 'aria-label': 'Merge', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!into.value || !selected.size) return;
    const ids = [...selected];
    let target = everyone.find((p) => String(p.id) === into.value);
    try {
      const before = label(target);
      target = (await mergeInto(ids, into.value)) || target;
      const what = ids.length === 1 ? label(everyone.find((p) => p.id === ids[0])) : plural(ids.length, 'person', 'people');
      status.textContent = `Merged ${what} into ${before}` + (label(target) === before ? '.' : `, now named ${label(target)}.`);
    } catch (e) { showError(e); }
    selected.clear();
    await draw();
    box.querySelector(`[data-id="${target.id}"] a`)?.focus();
  } }, count, into, h('button', { type: 'submit', class: 'btn', text: 'Merge' }),
  h('button', { type: 'button', class: 'btn', text: 'Clear selection', onclick: () => {
    selected.clear();
    for (const c of box.querySelectorAll('input.pick')) c.checked = false;
    pick();
  } }));

  const pick = () => {
    bar.hidden = !selected.size;
    count.textContent = `${selected.size} selected`;
    // Filled only while something is selected: a hidden list of every name is no use to anyone.
    if (!selected.size) { into.replaceChildren(); return; }
    into.replaceChildren(h('option', { value: '', text: 'Merge into…' }), ...everyone.filter((p) => !selected.has(p.id)).map(option));
  };

  const card = (p) => {
    const check = h('input', { type: 'checkbox', class: 'pick', 'aria-label': `Select ${label(p)}`, onchange: () => {
      if (check.checked) selected.add(p.id); else selected.delete(p.id);
      pick();
    } });
    check.checked = selected.has(p.id);
    const li = h('li', { class: 'person' + (named(p) ? '' : ' unnamed'), dataset: { id: String(p.id) } },
      h('a', { href: `/web/people/${p.id}`, 'data-nav': '' },
        h('img', { src: `/persons/${p.id}/face`, alt: '', loading: 'lazy', onerror: (ev) => ev.target.classList.add('broken') }),
        named(p) ? h('span', { class: 'name', text: p.name })
          : h('span', { class: 'name' }, 'Unnamed', h('span', { class: 'sr-only', text: ` person ${p.id}` })),
        h('span', { class: 'count', text: counts(p) })),
      check);
    if (!named(p)) li.append(nameForm(p, li));
    return li;
  };

  const nameForm = (p, li) => {
    const input = h('input', { 'aria-label': `Name ${label(p)}`, placeholder: 'Who is this?', maxlength: '200', autocomplete: 'off' });
    const after = async (who, how) => {
      // The focus goes on to the next group to name (or where the list starts).
      const next = li.nextElementSibling && li.nextElementSibling.dataset.id;
      status.textContent = how;
      selected.delete(p.id);
      await draw();
      (box.querySelector(`[data-id="${next}"] input:not(.pick)`) || box.querySelector(`[data-id="${who.id}"] a`) || title).focus();
    };
    return h('form', { class: 'tag-add name-form', onsubmit: async (ev) => {
      ev.preventDefault();
      const name = input.value.trim();
      if (!name) return;
      try {
        const done = await giveName(p, name, everyone, (target) => mergeOffer(li, p, target,
          (t) => after(t, `Merged ${label(p)} into ${t.name}.`)));
        if (done) await after(done, `Named ${done.name}.`);
      } catch (e) { showError(e); }
    } }, input, h('button', { type: 'submit', class: 'btn', text: 'Name' }));
  };

  const section = (heading, hint, list, more) => h('section', { class: 'people-section' },
    h('h2', { class: 'year-h', text: heading }), hint ? h('p', { class: 'count', text: hint }) : null, list, more);

  const draw = async () => {
    const data = await api('/persons');
    box.replaceChildren();
    if (!data.enabled) { box.append(facesOff()); return; }
    everyone = data.persons;
    for (const id of [...selected]) if (!everyone.some((p) => p.id === id)) selected.delete(id);
    const known = everyone.filter(named), groups = everyone.filter((p) => !named(p));
    if (!everyone.length) {
      box.append(empty('No people yet', 'Faces found in the photos are grouped here once scanned; add a person by name with `imageapi people add NAME`.'));
      return;
    }
    box.append(bar);
    if (known.length) box.append(section(`Named · ${known.length}`, null, h('ul', { class: 'people' }, known.map(card)), null));
    if (groups.length) {
      const list = h('ul', { class: 'people' });
      let shown = 0;
      const more = h('button', { type: 'button', class: 'btn more', onclick: () => {
        const first = shown;
        showMore();
        list.children[first]?.querySelector('a')?.focus();
      } });
      const showMore = () => {
        list.append(...groups.slice(shown, shown + PAGE).map(card));
        shown = Math.min(groups.length, shown + PAGE);
        more.hidden = shown >= groups.length;
        more.textContent = `Show ${Math.min(PAGE, groups.length - shown)} more`;
      };
      showMore();
      box.append(section(`Unnamed · ${groups.length}`, 'Groups of faces that look alike, largest first: name one, or select several and merge them.', list, more));
    }
    pick();
  };
  await draw();
  return {};
}

// The photos of a person's faces, for the viewer (its ←/→ go through them in this order).
function faceSource(items, load, isDone) {
  return {
    count: () => items.length,
    async at(i) {
      while (i >= items.length && !isDone()) await load();
      return items[i] || null;
    },
    async locate(t) { return items.findIndex((it) => it.library === t.library && it.path === t.path); },
  };
}

async function personPage(main, { person, query: q, navigate, openViewer }) {
  const data = await api('/persons');
  if (!data.enabled) { main.append(toolbar(h('h1', { class: 'title', text: 'People' }), null), facesOff()); return {}; }
  const everyone = data.persons;
  const me = everyone.find((p) => String(p.id) === String(person));
  const all = h('a', { href: '/web/people', 'data-nav': '', text: 'All people' });
  if (!me) {
    main.append(toolbar(h('h1', { class: 'title', text: 'People' }), null, all),
      empty('No such person', 'They may have been merged into someone else or removed.'));
    return {};
  }
  const tab = q.get('tab') || (named(me) ? 'photos' : 'faces');
  const title = h('h1', { class: 'title', text: label(me), tabindex: '-1' });
  const status = statusLine();
  const name = h('input', { 'aria-label': named(me) ? 'New name' : 'Name', value: named(me) ? me.name : '',
    placeholder: 'Who is this?', maxlength: '200', autocomplete: 'off' });
  const rename = h('form', { class: 'tag-add', onsubmit: async (ev) => {
    ev.preventDefault();
    const wanted = name.value.trim();
    if (!wanted) return;
    try {
      const done = await giveName(me, wanted, everyone, (target) => mergeOffer(rename, me, target,
        (t) => navigate(`/web/people/${t.id}`, { replace: true })));
      if (done) {
        me.name = done.name;
        me.named = true;
        title.textContent = done.name;
        name.setAttribute('aria-label', 'New name');
        submit.textContent = 'Rename';
        status.textContent = `Named ${done.name}.`;
      }
    } catch (e) { showError(e); }
  } });
  const submit = h('button', { type: 'submit', class: 'btn', text: named(me) ? 'Rename' : 'Name' });
  rename.append(name, submit);
  const into = h('select', { 'aria-label': 'Merge into' }, h('option', { value: '', text: 'Merge into…' }),
    everyone.filter((p) => p !== me).map(option));
  const merge = h('form', { class: 'tag-add', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!into.value) return;
    try {
      const res = await api(`/persons/${me.id}/merge`, { method: 'POST', body: { into: Number(into.value) } });
      navigate(`/web/people/${res.person.id}`, { replace: true });
    } catch (e) { showError(e); }
  } }, into, h('button', { type: 'submit', class: 'btn', text: 'Merge' }));
  const tabLink = (key, text) => h('a', { href: `/web/people/${me.id}` + query({ tab: key }), 'data-nav': '', text,
    'aria-current': tab === key ? 'page' : 'false' });
  main.append(toolbar(title, status, rename, merge, all),
    h('nav', { class: 'toolbar people-tabs', 'aria-label': 'Show' }, tabLink('photos', 'Photos'), tabLink('faces', 'Faces'),
      h('span', { class: 'count', text: counts(me) })));
  const box = h('div', { class: 'folder-page' });
  main.append(box);
  if (tab === 'faces') return facesTab(box, me, everyone, status, title);
  const { libraries } = await api('/libraries');
  const g = pagedGrid(box, acrossLibraries(libraries, (library, cursor) =>
    api(`/persons/${me.id}/photos` + query({ library, limit: 200, cursor }))), openViewer);
  const first = await g.load();
  if (first && first.done && !g.items.length) box.append(empty('No photos yet', ''));
  return g;
}

// A person's faces, page after page, each with its photo and "Not this person"; the ticked ones
// can be moved to another person.
async function facesTab(box, me, everyone, status, title) {
  const items = [];   // {library, path} of each face's photo, for the viewer
  const list = h('ul', { class: 'face-grid', 'aria-label': `Faces of ${label(me)}` });
  const more = h('button', { type: 'button', class: 'btn more', text: 'More faces', hidden: true });
  const ticked = new Map();   // face id -> its card
  const count = h('span', { class: 'count' });
  const to = h('select', { 'aria-label': 'Move the selected faces to' }, h('option', { value: '', text: 'Move to…' }),
    everyone.filter((p) => p.id !== me.id).map(option));
  const bar = h('form', { class: 'tag-add merge-bar', hidden: true, 'aria-label': 'Move faces', onsubmit: async (ev) => {
    ev.preventDefault();
    if (!to.value || !ticked.size) return;
    const target = everyone.find((p) => String(p.id) === to.value);
    let moved = 0, last = null;
    for (const [id, li] of [...ticked]) {
      try {
        await api(`/faces/${id}`, { method: 'PATCH', body: { person_id: Number(to.value) } });
      } catch (e) { showError(e); break; }
      moved++;
      last = li;
      drop(id, li);
    }
    status.textContent = `Moved ${plural(moved, 'face')} to ${label(target)}.`;
    tick();
    focusAfter(last);
  } }, count, to, h('button', { type: 'submit', class: 'btn', text: 'Move' }));
  const tick = () => {
    bar.hidden = !ticked.size;
    count.textContent = `${ticked.size} selected`;
  };
  // A face taken off this person: its card goes, and so does its photo from the viewer's list.
  let after = null;
  const drop = (id, li) => {
    ticked.delete(id);
    after = li.nextElementSibling || li.previousElementSibling;
    const at = items.findIndex((it) => it.face === id);
    if (at >= 0) items.splice(at, 1);
    li.remove();
  };
  const focusAfter = (li) => { if (li) (after && after.isConnected ? after.querySelector('button') : title).focus(); };
  box.append(bar, list, more);
  let cursor = null, done = false, busy = null, shown = 0;
  const load = () => {
    if (done || busy) return busy;
    busy = api(`/persons/${me.id}/faces` + query({ limit: FACES_PAGE, cursor })).then((page) => {
      for (const f of page.faces) { items.push({ library: f.library, path: f.path, name: f.path.split('/').pop(), face: f.id }); list.append(faceCard(f)); }
      shown += page.faces.length;
      cursor = page.next_cursor;
      done = !cursor;
      more.hidden = done;
      busy = null;
      if (done && !shown) box.append(empty('No faces', `No face is bound to ${label(me)} now.`));
    }, (e) => { busy = null; done = true; showError(e); });
    return busy;
  };
  const faceCard = (f) => {
    const where = `${f.library}: ${f.path}`;
    const view = new URLSearchParams(location.search);
    view.set('view', `${f.library}/${f.path}`);
    const li = h('li', { class: 'face-card', dataset: { face: String(f.id) } },
      h('a', { href: location.pathname + '?' + view.toString(), 'data-nav': '', title: where, 'aria-label': `Photo ${where}` },
        h('img', { src: `/faces/${f.id}/crop`, alt: `Face in ${where}`, loading: 'lazy', onerror: (ev) => ev.target.classList.add('broken') })),
      h('button', { type: 'button', class: 'btn small', text: 'Not this person', 'aria-label': `Not this person: the face in ${where}`,
        onclick: () => notThem(f, li) }));
    const check = h('input', { type: 'checkbox', class: 'pick', 'aria-label': `Select the face in ${where}`, onchange: () => {
      if (check.checked) ticked.set(f.id, li); else ticked.delete(f.id);
      tick();
    } });
    li.append(check);
    return li;
  };
  const notThem = async (f, li) => {
    try {
      await api(`/faces/${f.id}`, { method: 'PATCH', body: { person: null } });
    } catch (e) { showError(e); return; }
    drop(f.id, li);
    tick();
    status.textContent = `That face is no longer ${label(me)}.`;
    focusAfter(li);
  };
  more.addEventListener('click', load);
  const io = new IntersectionObserver((es) => { if (es.some((e) => e.isIntersecting)) load(); }, { rootMargin: '800px' });
  io.observe(more);
  await load();
  return { source: faceSource(items, load, () => done), unmount() { io.disconnect(); } };
}
