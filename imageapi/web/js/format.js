// Dates, durations, sizes and exposure, as the page shows them.

const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September',
  'October', 'November', 'December'];
const WEEKDAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];

export function monthTitle(month) {
  if (month === 'undated') return 'No date';
  return `${MONTHS[Number(month.slice(5, 7)) - 1]} ${month.slice(0, 4)}`;
}

export function dayTitle(day) {
  const [y, m, d] = day.split('-').map(Number);
  const wd = new Date(Date.UTC(y, m - 1, d)).getUTCDay();
  return `${WEEKDAYS[wd]} ${d} ${MONTHS[m - 1].slice(0, 3)} ${y}`;
}

// "2021-06-01T09:30:00+02:00" -> "Tue 1 Jun 2021, 09:30:00 (UTC+02:00)": the wall-clock time of the
// camera, with its offset when known.
export function takenAt(iso) {
  if (!iso) return 'unknown';
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}(?::\d{2})?)(?:\.\d+)?(Z|[+-]\d{2}:\d{2})?$/.exec(iso);
  if (!m) return iso;
  const offset = m[3] ? ` (UTC${m[3] === 'Z' ? '' : m[3]})` : ' (offset unknown)';
  return `${dayTitle(m[1])}, ${m[2]}${offset}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '';
  const s = Math.round(seconds);
  const mm = Math.floor(s / 60) % 60, hh = Math.floor(s / 3600), ss = String(s % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export function exposure(rec) {
  const parts = [];
  if (rec.exposure_time) {
    parts.push(rec.exposure_time >= 1 ? `${rec.exposure_time} s` : `1/${Math.round(1 / rec.exposure_time)} s`);
  }
  if (rec.f_number) parts.push(`f/${rec.f_number}`);
  if (rec.iso) parts.push(`ISO ${rec.iso}`);
  if (rec.focal_length) parts.push(`${rec.focal_length} mm`);
  return parts.join(' · ');
}

export const badge = (kind) => (kind === 'raw' ? 'RAW' : kind === 'heic' ? 'HEIC' : '');
