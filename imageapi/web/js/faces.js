// Faces in the viewer: boxes over the picture with their person's name, and in the info panel a
// line per face to bind it to a person (made when new) or unbind it.
import { api, query, showError } from './api.js';
import { clear, h } from './dom.js';

let personNames = null;
// A person's name, or which unnamed group of faces they are (the clustering makes those).
const who = (p) => (p.name !== null && p.name !== undefined ? p.name : `Unnamed person ${p.id}`);

export async function faces(item, img, stage, panel) {
  const data = await api('/faces' + query({ library: item.library, path: item.path }));
  if (!data.enabled) return;
  const layer = h('div', { class: 'faces', 'aria-hidden': 'true' });
  const list = h('ul', { class: 'face-list' });
  const box = h('section', { class: 'face-box' }, h('h3', { text: 'People' }), list);
  panel.append(box);
  stage.append(layer);
  let all = data.faces;

  const place = () => {
    // The picture is letterboxed (object-fit: contain): the layer covers what is drawn of it.
    const r = img.getBoundingClientRect(), s = stage.getBoundingClientRect();
    const scale = Math.min(r.width / (img.naturalWidth || 1), r.height / (img.naturalHeight || 1));
    const w = img.naturalWidth * scale, hgt = img.naturalHeight * scale;
    Object.assign(layer.style, {
      left: `${r.left - s.left + stage.scrollLeft + (r.width - w) / 2}px`,
      top: `${r.top - s.top + stage.scrollTop + (r.height - hgt) / 2}px`, width: `${w}px`, height: `${hgt}px`,
    });
  };
  const draw = () => {
    clear(layer);
    clear(list);
    if (!all.length) list.append(h('li', { class: 'none', text: data.scanned ? 'No faces found' : 'Not scanned for faces yet' }));
    all.forEach((f, i) => {
      const label = f.person ? who(f.person) : '?';
      const el = h('div', { class: 'face' + (f.person ? '' : ' unknown') }, h('span', { text: label }));
      Object.assign(el.style, { left: `${f.box.x * 100}%`, top: `${f.box.y * 100}%`, width: `${f.box.w * 100}%`, height: `${f.box.h * 100}%` });
      layer.append(el);
      list.append(faceLine(f, i));
    });
  };
  const faceLine = (f, i) => {
    if (f.person) {
      return h('li', {}, h('span', { text: `Face ${i + 1}: ` }), h('strong', { text: who(f.person) }),
        h('button', { type: 'button', class: 'btn', text: 'Unbind', 'aria-label': `Unbind face ${i + 1} from ${who(f.person)}`, onclick: () => bind(f, null) }));
    }
    const input = h('input', { list: 'person-names', 'aria-label': `Name of face ${i + 1}`, placeholder: 'Who is this?', maxlength: '100' });
    return h('li', {}, h('form', { class: 'tag-add', onsubmit: (ev) => { ev.preventDefault(); if (input.value.trim()) bind(f, input.value.trim()); } },
      h('span', { text: `Face ${i + 1}` }), input, h('button', { type: 'submit', class: 'btn', text: 'Bind' })));
  };
  const bind = async (f, name) => {
    try {
      if (name !== null && !(personNames || []).some((n) => n.toLowerCase() === name.toLowerCase())) {
        await api('/persons', { method: 'POST', body: { name } });
        if (personNames) personNames.push(name);
      }
      const res = await api(`/faces/${f.id}`, { method: 'PATCH', body: { person: name } });
      // Binding may have moved another face of this photo off the person: read them all again.
      const again = await api('/faces' + query({ library: item.library, path: item.path }));
      all = again.faces;
      if (res.face) draw();
    } catch (e) { showError(e); }
  };
  const names = h('datalist', { id: 'person-names' });
  box.append(names);
  // Named people only: an unnamed group has no name to type (it is named on the people page).
  if (!personNames) personNames = (await api('/persons')).persons.filter((p) => p.name !== null && p.name !== undefined).map((p) => p.name);
  names.replaceChildren(...personNames.map((n) => h('option', { value: n })));
  draw();
  if (img.complete) place(); else img.addEventListener('load', place);
  const ro = new ResizeObserver(place);
  ro.observe(stage);
  img.addEventListener('load', place);
  return () => ro.disconnect();
}
