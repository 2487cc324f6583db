// Insights in the viewer: the photo's latest insight, "write an insight" (local or hybrid backend,
// the allowlisted OpenRouter models when there are any), and its conversation: streamed answers
// (text as it arrives, tool calls folded with their results), rewind from a message, amend.
import { api, query, showError } from './api.js';
import { clear, h } from './dom.js';

let models = null;  // /insights/openrouter/models, once per page load

export function insightBox(item) {
  const where = { library: item.library, path: item.path };
  const note = h('p', { class: 'insight-note', role: 'status' });
  const view = h('div', { class: 'insight' });
  const thread = h('ol', { class: 'chat', 'aria-label': 'Conversation' });
  const backend = h('select', { 'aria-label': 'Backend' }, h('option', { value: 'local', text: 'Local' }));
  const model = h('select', { 'aria-label': 'Model', hidden: true });
  const write = h('button', { type: 'button', class: 'btn', text: 'Write an insight' });
  const input = h('textarea', { rows: '2', 'aria-label': 'Ask about this photo', placeholder: 'Ask about this photo', maxlength: '4000' });
  const amend = h('input', { type: 'checkbox', id: 'amend' });
  const send = h('button', { type: 'submit', class: 'btn', text: 'Send' });
  const form = h('form', { class: 'chat-form', hidden: true }, input,
    h('div', { class: 'row-controls' }, h('label', { for: 'amend' }, amend, ' Amend the insight'), send));
  const box = h('section', { class: 'insight-box' }, h('h3', { text: 'Insight' }), view, thread, form,
    h('div', { class: 'row-controls' }, backend, model, write), note);

  const choice = () => (backend.value === 'hybrid' ? { backend: 'hybrid', model: model.value || null } : { backend: 'local' });
  const problem = (e) => { note.textContent = e.message; if (e.status !== 503 && e.status !== 502) showError(e); };

  const showInsight = (ins) => {
    clear(view);
    if (!ins) { view.append(h('p', { class: 'none', text: 'No insight yet.' })); form.hidden = true; return; }
    view.append(h('h4', { text: ins.title }), h('p', { class: 'text', text: ins.text }),
      h('p', { class: 'meta', text: `${ins.backend} · ${ins.model}` }));
    form.hidden = false;
  };
  const showThread = (messages) => {
    // [0] is the request that wrote the insight, [1] the insight: its tool calls go under it.
    for (const d of view.querySelectorAll('details.tool')) d.remove();
    for (const t of (messages[1] && messages[1].tools) || []) view.append(toolDetails(t.name, t.arguments, t.result));
    clear(thread);
    for (const m of messages.slice(2)) thread.append(message(m));
  };
  const message = (m) => {
    const li = h('li', { class: `msg ${m.role}` }, h('p', { class: 'text', text: m.content }));
    for (const t of m.tools || []) li.prepend(toolDetails(t.name, t.arguments, t.result));
    if (m.role === 'user') {
      li.append(h('button', { type: 'button', class: 'btn small', text: 'Rewind to here',
        'aria-label': 'Remove this message and everything after it', onclick: () => rewind(m.index) }));
    }
    return li;
  };
  const toolDetails = (name, args, result) => h('details', { class: 'tool' },
    h('summary', { text: `tool: ${name}` }), h('pre', { text: JSON.stringify(args, null, 1) }),
    result === undefined ? null : h('pre', { class: 'result', text: JSON.stringify(result, null, 1) }));

  const load = async () => {
    const { insights } = await api('/insights' + query(where));
    showInsight(insights[0]);
    if (insights[0]) showThread((await api('/insights/chat/history' + query(where))).messages);
  };
  const rewind = async (index) => {
    try { showThread((await api('/insights/chat/rewind', { method: 'POST', body: { ...where, index } })).messages); } catch (e) { problem(e); }
  };

  write.addEventListener('click', async () => {
    write.disabled = true;
    note.textContent = 'Writing…';
    try {
      showInsight(await api('/insights/generate', { method: 'POST', body: { ...where, ...choice() } }));
      clear(thread);
      note.textContent = '';
    } catch (e) { problem(e); } finally { write.disabled = false; }
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    send.disabled = true;
    note.textContent = '';
    thread.append(h('li', { class: 'msg user' }, h('p', { class: 'text', text })));
    const live = h('li', { class: 'msg assistant live' }, h('p', { class: 'text' }));
    thread.append(live);
    try {
      await stream({ ...where, message: text, amend: amend.checked, ...choice() }, live);
      input.value = '';
      amend.checked = false;
    } catch (e) { live.remove(); problem(e); } finally { send.disabled = false; }
  });

  // POST /insights/chat/stream, read as Server-Sent Events.
  const stream = async (body, live) => {
    const resp = await fetch('/insights/chat/stream', {
      method: 'POST', credentials: 'same-origin', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
    });
    if (!resp.ok) {
      const data = await resp.json().catch(() => null);
      const err = new Error(data && data.error ? data.error.message : resp.statusText);
      err.status = resp.status;
      throw err;
    }
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    const text = live.querySelector('.text');
    const tools = new Map();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev = /^event: (.*)$/m.exec(block), data = /^data: (.*)$/m.exec(block);
        if (!ev || !data) continue;  // a keep-alive comment
        const payload = JSON.parse(data[1]);
        if (ev[1] === 'delta') text.textContent += payload.text;
        else if (ev[1] === 'tool_call') {
          const d = toolDetails(payload.name, payload.arguments);
          tools.set(payload.id, d);
          live.insertBefore(d, text);
        } else if (ev[1] === 'tool_result') {
          const d = tools.get(payload.id);
          if (d) d.append(h('pre', { class: 'result', text: JSON.stringify(payload.result, null, 1) }));
        } else if (ev[1] === 'error') {
          throw Object.assign(new Error(payload.message || 'the model failed'), { status: 502 });
        } else if (ev[1] === 'done') {
          if (payload.insight) showInsight(payload.insight);
          showThread((await api('/insights/chat/history' + query(where))).messages);
        }
      }
    }
  };

  (async () => {
    try {
      if (!models) models = await api('/insights/openrouter/models');
      if (models.enabled) {
        backend.append(h('option', { value: 'hybrid', text: 'Hybrid (OpenRouter)' }));
        model.replaceChildren(...models.models.map((m) => h('option', { value: m, text: m })));
        if (models.default) model.value = models.default;
        backend.addEventListener('change', () => { model.hidden = backend.value !== 'hybrid'; });
      }
      await load();
    } catch (e) { problem(e); }
  })();
  return box;
}
