// The one way the client talks to the server: same-origin fetch with the session cookie.
// Errors come back as {"error": {"code", "message"}}; they are shown in one place (#error).

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

export async function api(path, { method = 'GET', body, quiet401 = false } = {}) {
  const init = { method, credentials: 'same-origin', headers: {} };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `the server cannot be reached (${e.message})`);
  }
  const data = await resp.json().catch(() => null);
  if (!resp.ok) {
    const err = data && data.error ? data.error : { code: 'http_' + resp.status, message: resp.statusText };
    const error = new ApiError(resp.status, err.code, err.message, Number(resp.headers.get('Retry-After')) || 0);
    if (resp.status === 401 && !quiet401) onUnauthorized(error);
    throw error;
  }
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

export const mediaUrl = (item, size = 'thumb') =>
  '/image' + query({ library: item.library, path: item.path, size: size === 'thumb' ? null : size });

// The error bar: one place for every failure.
export function showError(err) {
  const bar = document.getElementById('error');
  if (!bar) return;
  bar.querySelector('.msg').textContent = err instanceof Error ? err.message : String(err);
  bar.hidden = false;
}

export function hideError() {
  const bar = document.getElementById('error');
  if (bar) bar.hidden = true;
}
