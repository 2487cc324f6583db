// The viewer, over the grid it was opened from: the preview-size picture (the original on demand)
// or the video through HLS, ←/→ and swipes to the neighbours in the grid's order, Esc to close, and
// the info panel (date, camera, exposure, size, path, GPS, tags).
import { api, mediaUrl, query, showError } from './api.js';
import { clear, h } from './dom.js';
import { faces } from './faces.js';
import { insightBox } from './insights.js';
import { bytes, duration, exposure, takenAt } from './format.js';

let tagNames = null;  // every tag, for autocompletion (fetched once per page load)

export class Viewer {
  constructor(source, { onClose, onMove }) {
    this.source = source;
    this.onClose = onClose;
    this.onMove = onMove;
    this.index = -1;
    this.item = null;
    this.hls = null;
    this.seq = 0;
    this.stage = h('div', { class: 'stage' });
    this.info = h('aside', { class: 'info', 'aria-label': 'Information' });
    this.prev = h('button', { type: 'button', class: 'nav prev', 'aria-label': 'Previous', text: '‹', onclick: () => this.move(-1) });
    this.next = h('button', { type: 'button', class: 'nav next', 'aria-label': 'Next', text: '›', onclick: () => this.move(1) });
    this.download = h('a', { class: 'btn', text: 'Download' });
    const infoBtn = h('button', { type: 'button', class: 'btn', text: 'Info', 'aria-pressed': 'true', onclick: () => {
      const on = this.el.classList.toggle('no-info');
      infoBtn.setAttribute('aria-pressed', String(!on));
    } });
    this.title = h('span', { class: 'name' });
    this.el = h('div', { class: 'viewer', role: 'dialog', 'aria-modal': 'true', 'aria-label': 'Viewer', tabindex: '-1' },
      h('div', { class: 'bar' },
        h('button', { type: 'button', class: 'btn close', 'aria-label': 'Close', text: '✕', onclick: () => this.onClose() }),
        this.title, infoBtn, this.download),
      h('div', { class: 'body' }, this.stage, this.prev, this.next, this.info));
    if (window.innerWidth < 700) this.el.classList.add('no-info');
    this.keys = (ev) => this.key(ev);
    document.addEventListener('keydown', this.keys);
    this.swipe();
    document.body.append(this.el);
    document.body.classList.add('viewing');
    this.el.focus();
  }

  key(ev) {
    if (ev.target.closest('input, textarea, select')) {
      if (ev.key === 'Escape') ev.target.blur();
      return;
    }
    if (ev.key === 'Escape') { ev.preventDefault(); this.onClose(); }
    else if (ev.key === 'ArrowLeft') { ev.preventDefault(); this.move(-1); }
    else if (ev.key === 'ArrowRight') { ev.preventDefault(); this.move(1); }
  }

  swipe() {
    let x0 = null, y0 = 0;
    this.stage.addEventListener('pointerdown', (ev) => { if (ev.pointerType !== 'mouse') { x0 = ev.clientX; y0 = ev.clientY; } });
    this.stage.addEventListener('pointerup', (ev) => {
      if (x0 === null) return;
      const dx = ev.clientX - x0, dy = ev.clientY - y0;
      x0 = null;
      if (Math.abs(dx) > 50 && Math.abs(dx) > 2 * Math.abs(dy)) this.move(dx < 0 ? 1 : -1);
      else if (dy > 120 && Math.abs(dy) > 2 * Math.abs(dx)) this.onClose();
    });
  }

  async move(delta) {
    await this.showing;  // a key pressed while the picture loads counts from that picture
    if (this.index < 0) return;
    const item = await this.source.at(this.index + delta).catch(showError);
    if (item) this.onMove(item);
  }

  show(target) {
    this.showing = this.load(target).catch((e) => { showError(e); });
    return this.showing;
  }

  async load(target) {
    if (this.item && this.item.library === target.library && this.item.path === target.path) return;
    const seq = ++this.seq;
    const meta = await api('/image/metadata' + query({ library: target.library, path: target.path }));
    const index = await this.source.locate(target, meta);
    if (seq !== this.seq) return;  // another picture was asked for meanwhile
    this.item = { ...target, kind: meta.kind, name: meta.name };
    this.index = index;
    this.prev.disabled = index <= 0;
    this.next.disabled = index < 0 || index >= this.source.count() - 1;
    this.title.textContent = meta.name;
    this.download.href = mediaUrl(this.item, 'full');
    this.download.setAttribute('download', meta.name);
    if (this.stopFaces) this.stopFaces();
    this.stopFaces = null;
    const img = this.media(meta);
    this.renderInfo(meta);
    if (img) {
      faces(this.item, img, this.stage, this.info).then((stop) => {
        if (seq === this.seq) this.stopFaces = stop; else if (stop) stop();
      }, showError);
    }
  }

  media(meta) {
    if (this.hls) { this.hls.destroy(); this.hls = null; }
    clear(this.stage);
    const item = this.item;
    if (meta.kind === 'video') {
      const video = h('video', { controls: true, playsinline: true, preload: 'metadata', poster: mediaUrl(item) });
      this.stage.append(video);
      const stream = '/video/stream' + query({ library: item.library, path: item.path });
      if (video.canPlayType('application/vnd.apple.mpegurl')) {
        video.src = stream;  // Safari plays HLS itself
      } else {
        import('../vendor/hls/hls.light.min.mjs').then(({ default: Hls }) => {
          if (this.item !== item) return;
          if (!Hls.isSupported()) { video.src = '/video' + query({ library: item.library, path: item.path }); return; }
          this.hls = new Hls({ enableWorker: false });
          this.hls.on(Hls.Events.ERROR, (_, data) => { if (data.fatal) showError(new Error(`the video cannot be played: ${data.details}`)); });
          this.hls.loadSource(stream);
          this.hls.attachMedia(video);
        }, showError);
      }
      return;
    }
    const img = h('img', { src: mediaUrl(item, 'preview'), alt: meta.name, class: 'picture' });
    if (meta.kind === 'image') {
      // The original on demand (browsers show JPEG/PNG/WebP/GIF themselves, not RAW or HEIC).
      img.title = 'Click to zoom to the original';
      img.addEventListener('click', () => {
        const zoomed = this.stage.classList.toggle('zoomed');
        if (zoomed) img.src = mediaUrl(item, 'full');
      });
    }
    this.stage.append(img);
    return img;
  }

  renderInfo(meta) {
    const rows = [];
    const add = (label, value) => { if (value) rows.push(h('dt', { text: label }), h('dd', {}, value)); };
    add('Date', takenAt(meta.taken_at));
    add('Camera', [meta.make, meta.model].filter(Boolean).join(' '));
    add('Lens', meta.lens);
    add('Exposure', exposure(meta));
    add('Dimensions', meta.width && meta.height ? `${meta.width} × ${meta.height}` : '');
    if (meta.kind === 'video') add('Duration', duration(meta.duration));
    add('File size', bytes(meta.size));
    add('Path', `${meta.library}: ${meta.path}`);
    if (meta.gps_lat !== null && meta.gps_lat !== undefined && meta.gps_lon !== null) {
      const lat = meta.gps_lat.toFixed(5), lon = meta.gps_lon.toFixed(5);
      // The place found offline from the GPS (city, region, country), then the point on a map.
      const p = meta.place;
      const named = p ? [p.city, p.region, p.country].filter((x, i, all) => x && all.indexOf(x) === i).join(', ') : '';
      add('Place', [named ? h('span', { class: 'place-name', text: named }) : null, named ? h('br') : null, h('a', {
        href: `https://www.openstreetmap.org/?mlat=${lat}&mlon=${lon}#map=16/${lat}/${lon}`,
        target: '_blank', rel: 'noopener noreferrer', text: `${lat}, ${lon} (OpenStreetMap)`,
      })]);
    }
    clear(this.info).append(h('h2', { text: meta.name }), h('dl', {}, rows), this.tagEditor(meta));
    if (meta.kind !== 'video' && meta.kind !== 'other') this.info.append(insightBox(this.item));
  }

  tagEditor(meta) {
    const item = this.item;
    const list = h('ul', { class: 'tags', 'aria-label': 'Tags' });
    const listId = 'tag-names';
    const input = h('input', { name: 'tag', list: listId, 'aria-label': 'Add a tag', placeholder: 'Add a tag', maxlength: '100', autocomplete: 'off' });
    const options = h('datalist', { id: listId });
    const draw = (tags) => {
      clear(list);
      if (!tags.length) list.append(h('li', { class: 'none', text: 'No tags' }));
      for (const t of tags) {
        list.append(h('li', { class: 'tag' }, h('span', { text: t }),
          h('button', { type: 'button', 'aria-label': `Remove tag ${t}`, text: '×', onclick: () => change('DELETE', t) })));
      }
    };
    const change = async (method, tag) => {
      try {
        const res = await api('/image/tags', { method, body: { library: item.library, path: item.path, tag } });
        if (this.item === item) draw(res.files[0].tags);
        if (method === 'POST' && tagNames && !tagNames.includes(tag)) { tagNames.push(tag); fill(); }
      } catch (e) { showError(e); }
    };
    const fill = () => options.replaceChildren(...(tagNames || []).map((t) => h('option', { value: t })));
    const form = h('form', { class: 'tag-add', onsubmit: (ev) => {
      ev.preventDefault();
      const tag = input.value.trim();
      if (tag) { input.value = ''; change('POST', tag); }
    } }, input, options, h('button', { type: 'submit', class: 'btn', text: 'Add' }));
    draw(meta.tags || []);
    if (tagNames) fill();
    else api('/tags').then((r) => { tagNames = r.tags.map((t) => t.name); fill(); }, showError);
    return h('section', { class: 'tag-box' }, h('h3', { text: 'Tags' }), list, form);
  }

  close() {
    this.seq++;
    if (this.stopFaces) this.stopFaces();
    if (this.hls) this.hls.destroy();
    document.removeEventListener('keydown', this.keys);
    this.el.remove();
    document.body.classList.remove('viewing');
  }
}
