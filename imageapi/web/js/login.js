// The login page: a session cookie for the browser (POST /login with session: true).
import { api } from './api.js';
import { h } from './dom.js';

export function mount(main, { query, navigate }) {
  const msg = h('p', { class: 'login-msg', role: 'alert', 'aria-live': 'assertive' });
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const button = h('button', { type: 'submit', text: 'Log in' });
  const form = h('form', { class: 'login', onsubmit: submit },
    h('h1', { text: 'imageapi' }),
    h('label', { for: 'username', text: 'User name' }), user,
    h('label', { for: 'password', text: 'Password' }), pass,
    button, msg);
  main.append(form);
  user.focus();

  async function submit(ev) {
    ev.preventDefault();
    msg.textContent = '';
    button.disabled = true;
    try {
      await api('/login', { method: 'POST', body: { username: user.value, password: pass.value, session: true }, quiet401: true });
      const next = query.get('next');
      navigate(next && next.startsWith('/') && !next.startsWith('//') ? next : '/', { replace: true });
    } catch (e) {
      if (e.status === 429) msg.textContent = `Too many failed logins: try again in ${e.retryAfter || 1} s.`;
      else if (e.status === 401) msg.textContent = 'Wrong user name or password.';
      else msg.textContent = e.message;
      pass.select();
    } finally {
      button.disabled = false;
    }
  }
  return {};
}
