// The map page: clusters of the photos with GPS (GET /map) over the tiles of MAP_TILE_URL, or over
// a plain background when the server sets no tile URL. Leaflet (vendored, loaded only here) draws
// the map; every marker is built with DOM calls, names and paths going in as text.
import { api, mediaUrl, query, showError } from './api.js';
import { h } from './dom.js';

const DEFAULT_VIEW = { lat: 20, lon: 0, zoom: 2 };
const VIEW_KEY = 'imageapi.map';  // where the map was, for the next visit (sessionStorage)

let leaflet = null;
async function loadLeaflet() {
  if (!leaflet) {
    const css = new URL('../vendor/leaflet/leaflet.css', import.meta.url).href;
    if (![...document.styleSheets].some((s) => s.href === css)) {
      document.head.append(h('link', { rel: 'stylesheet', href: css }));
    }
    leaflet = await import('../vendor/leaflet/leaflet-src.esm.js');
  }
  return leaflet;
}

// Leaflet's attribution is HTML: the setting's text is escaped into it.
const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const wrapLon = (lon) => ((((lon + 180) % 360) + 360) % 360) - 180;
const clampLat = (lat) => Math.max(-90, Math.min(90, lat));

// The view as /map's bbox: south,west,north,east; a view wider than the world is the whole world,
// and one across the antimeridian has west > east.
function bboxOf(bounds) {
  const south = clampLat(bounds.getSouth()), north = clampLat(bounds.getNorth());
  let west = bounds.getWest(), east = bounds.getEast();
  if (east - west >= 360) { west = -180; east = 180; } else { west = wrapLon(west); east = wrapLon(east); }
  if (east === -180 && west > -180) east = 180;
  return [south, west, north, east].map((v) => v.toFixed(6)).join(',');
}

function savedView() {
  try {
    const v = JSON.parse(sessionStorage.getItem(VIEW_KEY) || 'null');
    if (v && Number.isFinite(v.lat) && Number.isFinite(v.lon) && Number.isInteger(v.zoom)) return v;
  } catch { /* private mode, or not JSON */ }
  return DEFAULT_VIEW;
}

function clusterIcon(L, c) {
  const el = h('div', { class: 'map-cluster' });
  if (c.cover) el.append(h('img', { src: mediaUrl(c.cover), alt: '', loading: 'lazy', draggable: 'false' }));
  el.append(h('span', { class: 'n', text: c.count.toLocaleString() }));
  const size = c.count < 10 ? 44 : c.count < 1000 ? 52 : 60;
  return L.divIcon({ html: el, className: 'map-cluster-icon', iconSize: [size, size] });
}

function photoIcon(L, p) {
  const el = h('div', { class: 'map-photo' }, h('img', { src: mediaUrl(p), alt: '', loading: 'lazy', draggable: 'false' }));
  return L.divIcon({ html: el, className: 'map-photo-icon', iconSize: [40, 40] });
}

export async function mount(main, { query: q, openViewer }) {
  const library = q.get('library') || null;
  const box = h('div', { class: 'map-box', role: 'region', 'aria-label': 'Map of photos' });
  const count = h('span', { class: 'count', 'aria-live': 'polite' });
  main.append(h('div', { class: 'toolbar' }, h('h1', { class: 'title', text: 'Map' }), count), box);
  const L = await loadLeaflet();
  const start = savedView();
  const map = L.map(box, { worldCopyJump: true, minZoom: 1, maxZoom: 19, zoomSnap: 1 })
    .setView([start.lat, start.lon], start.zoom);
  map.attributionControl.setPrefix(false);
  const layer = L.layerGroup().addTo(map);
  let photos = [];  // the single photos shown: the viewer's order
  let tiles = null;
  let asked = 0;

  async function refresh() {
    const mine = ++asked;
    const zoom = map.getZoom();
    const center = map.getCenter();
    try { sessionStorage.setItem(VIEW_KEY, JSON.stringify({ lat: center.lat, lon: wrapLon(center.lng), zoom })); } catch { /* private mode */ }
    let data;
    try {
      data = await api('/map' + query({ bbox: bboxOf(map.getBounds()), zoom, library }));
    } catch (e) {
      if (mine === asked) showError(e);
      return;
    }
    if (mine !== asked) return;  // the map moved again meanwhile
    if (!tiles && data.tiles && data.tiles.url) {
      tiles = L.tileLayer(data.tiles.url, { maxZoom: 19, attribution: escapeHtml(data.tiles.attribution || '') }).addTo(map);
    }
    layer.clearLayers();
    for (const c of data.clusters) {
      const m = L.marker([c.lat, c.lon], { icon: clusterIcon(L, c), title: `${c.count} photos`, keyboard: true, riseOnHover: true });
      const [s, w, n, e] = c.bounds;
      // Into the cell: its bounds fill the view (two or more levels closer).
      m.on('click', () => map.fitBounds([[s, w], [n, e]], { maxZoom: Math.max(zoom + 1, Math.min(19, zoom + 3)) }));
      layer.addLayer(m);
    }
    photos = data.photos;
    for (const p of photos) {
      const m = L.marker([p.lat, p.lon], { icon: photoIcon(L, p), title: p.name, keyboard: true, riseOnHover: true });
      m.on('click', () => openViewer(p));
      layer.addLayer(m);
    }
    count.textContent = `${data.total.toLocaleString()} photos with a place here`;
    box.dataset.zoom = String(zoom);
    box.dataset.loaded = String(mine);
  }

  map.on('moveend', refresh);
  await refresh();
  return {
    unmount() { asked++; map.remove(); },
    source: {
      count: () => photos.length,
      async at(i) { return photos[i] || null; },
      async locate(t) { return photos.findIndex((p) => p.library === t.library && p.path === t.path); },
    },
  };
}
