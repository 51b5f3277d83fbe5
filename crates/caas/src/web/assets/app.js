// cubby's web UI: one ES module, no build step. Pages are picked by the
// URL's hash (#/..., so the server serves one page); data comes from /api
// with the httpOnly login cookie (the page never sees a token).

const main = document.getElementById('main');
const flash = document.getElementById('flash');
let me = null;
let timer = null;     // the current page's live refresh
let cleanup = null;   // the current page's teardown (terminal)

// ------------------------------------------------------------ helpers

function h(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function say(msg, info = false) {
  flash.textContent = msg;
  flash.className = info ? 'info' : '';
  flash.hidden = !msg;
}

// Errors in words a student understands; the server's message when it has one.
function plain(status, body) {
  if (body && body.error && body.error.message) return body.error.message;
  if (status === 0) return 'The service cannot be reached. Check your connection and try again.';
  if (status >= 500) return 'Something went wrong on the server. Try again in a moment.';
  return `The request failed (${status}).`;
}

async function call(method, path, body, retry = true) {
  let r;
  try {
    r = await fetch(path, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': typeof body === 'string' ? 'text/csv' : 'application/json' },
      body: body === undefined ? undefined : (typeof body === 'string' ? body : JSON.stringify(body)),
    });
  } catch (_) {
    throw new Error(plain(0));
  }
  // An expired access cookie: trade the refresh cookie once, then retry.
  if (r.status === 401 && retry && (path === '/api/auth/me' || !path.startsWith('/api/auth/'))) {
    const f = await fetch('/api/auth/refresh', { method: 'POST' });
    if (f.ok) return call(method, path, body, false);
  }
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!r.ok) {
    const e = new Error(plain(r.status, data));
    e.status = r.status;
    throw e;
  }
  return data;
}

const api = {
  get: (p) => call('GET', p),
  post: (p, b) => call('POST', p, b === undefined ? {} : b),
  put: (p, b) => call('PUT', p, b),
};

function stateBadge(s) {
  const label = s ? s.state : 'not started';
  const why = s && s.reason ? ` (${s.reason})` : '';
  // Waiting for a free slot: where in the queue (when the service says).
  const pos = s && s.queue_position !== undefined && s.queue_position !== null ? ` · number ${s.queue_position} in the queue` : '';
  return h('span', { class: `state ${s ? s.state : ''}`, 'data-state': label, text: label + why + pos });
}

function bytes(n) {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(0)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${n} bytes`;
}

function when(secs) {
  return new Date(secs * 1000).toLocaleString();
}

// The newest archive (final or checkpoint) per key.
function newestArchive(archives, key) {
  const m = new Map();
  for (const a of archives) {
    const o = m.get(key(a));
    if (!o || a.created_at > o.created_at) m.set(key(a), a);
  }
  return m;
}

function downloadLink(a, text) {
  if (!a) return null;
  return h('a', { class: 'button secondary', href: `/api/archives/${a.id}/download`, download: `${text.replace(/\W+/g, '-')}-${a.id.slice(0, 8)}.tar.zst`,
    title: `${a.kind}, ${bytes(a.size)}, ${when(a.created_at)}`, text });
}

// The newest session per key (class, or class+student).
function latest(sessions, key) {
  const m = new Map();
  for (const s of sessions) {
    const k = key(s);
    const o = m.get(k);
    if (!o || s.created_at > o.created_at || (s.created_at === o.created_at && isActive(s) && !isActive(o))) m.set(k, s);
  }
  return m;
}
const isActive = (s) => s && !['stopped', 'failed'].includes(s.state);

// Idle culling (sessions/culling.rs): the server says when the warning
// shows; the banner says when the sandbox will be stopped and saved.
function idleBanner(s) {
  if (!s || s.state !== 'ready' || !s.idle_warning) return null;
  const left = Math.max(0, s.cull_at - Math.floor(Date.now() / 1000));
  return h('p', { class: 'idle-warning', role: 'alert',
    text: `No activity for a while: this sandbox will be stopped (your work is saved) in about ${left} s unless you use it.` });
}

// Starts a session, then waits for it to settle in one long poll, so the
// page shows "ready" the moment it is (the 1 s refresh shows the queue
// position meanwhile).
async function startSession(body) {
  const s = await api.post('/api/sessions', body);
  if (s && ['requested', 'starting'].includes(s.state)) await api.get(`/api/sessions/${s.id}?wait=true`);
}

function sessionActions(s, start) {
  const out = [];
  if (!isActive(s)) {
    out.push(h('button', { type: 'button', onclick: guard(start), text: 'Start' }));
    return out;
  }
  if (s.state === 'ready') {
    out.push(h('a', { class: 'button secondary', href: `/api/sessions/${s.id}/open`, target: '_blank', rel: 'noopener', text: 'Open app' }));
    out.push(h('a', { class: 'button secondary', href: `#/terminal/${s.id}`, text: 'Terminal' }));
  }
  if (!['stopping', 'archive_pending'].includes(s.state)) {
    out.push(h('button', { type: 'button', class: 'danger', onclick: guard(() => api.post(`/api/sessions/${s.id}/stop`)), text: 'Stop' }));
  }
  return out;
}

// Runs an action, shows its error in words, refreshes the page's data.
function guard(fn) {
  return async (ev) => {
    // A form handled here must not also be submitted by the browser (that
    // reloaded the page and cut the request short).
    if (ev && ev.type === 'submit') ev.preventDefault();
    const b = ev && ev.currentTarget;
    if (b) b.disabled = true;
    try { say(''); await fn(); } catch (e) { say(e.message); }
    if (b) b.disabled = false;
    if (current && current.refresh) current.refresh();
  };
}

let current = null;
function live(refresh, every = 1000) {
  current = { refresh };
  const tick = async () => {
    try { await refresh(); } catch (e) {
      if (e.status === 401) return route();
      say(e.message);
    }
  };
  tick();
  timer = setInterval(tick, every);
}

// ------------------------------------------------------------ pages

function loginPage() {
  document.getElementById('top').hidden = true;
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      say('');
      await call('POST', '/api/auth/login', { username: user.value.trim(), password: pass.value });
      location.hash = '#/';
      await start();
    } catch (e) { say(e.message); pass.select(); }
  } },
  h('h1', { text: 'Sign in' }),
  h('label', { for: 'username', text: 'User name' }), user,
  h('label', { for: 'password', text: 'Password' }), pass,
  h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Sign in' })));
  main.replaceChildren(form);
  user.focus();
}

function passwordPage() {
  const old = h('input', { id: 'old', type: 'password', autocomplete: 'current-password', required: true });
  const nw = h('input', { id: 'new', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  main.replaceChildren(h('form', { class: 'card', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api.post('/api/auth/password', { old_password: old.value, new_password: nw.value });
      say('Password changed. Sign in again with the new one.', true);
      me = null;
      loginPage();
    } catch (e) { say(e.message); }
  } },
  h('h1', { text: 'Change my password' }),
  h('label', { for: 'old', text: 'Current password' }), old,
  h('label', { for: 'new', text: 'New password' }), nw,
  h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Change password' }))));
  old.focus();
}

function studentHome() {
  const list = h('div');
  const code = h('input', { id: 'join-code', autocomplete: 'off', required: true });
  const join = h('form', { class: 'card', onsubmit: guard(async () => {
    const r = await api.post('/api/classes/join', { join_code: code.value.trim() });
    say(r.added ? `You joined ${r.class.name}.` : `You are already in ${r.class.name}.`, true);
    code.value = '';
  }) }, h('h2', { text: 'Join a class' }), h('label', { for: 'join-code', text: 'Join code from your teacher' }), code,
  h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Join' })));
  main.replaceChildren(h('h1', { text: 'My classes' }), list, join);
  live(async () => {
    const [classes, sessions, archives] = await Promise.all([api.get('/api/classes'), api.get('/api/sessions'),
      api.get('/api/archives').catch(() => [])]);
    const by = latest(sessions, (s) => s.class_id);
    const saved = newestArchive(archives, (a) => a.class_id);
    if (!classes.length) {
      list.replaceChildren(h('p', { class: 'muted', text: 'You are not in any class yet. Ask your teacher for a join code and enter it below.' }));
      return;
    }
    list.replaceChildren(...classes.map((c) => {
      const s = by.get(c.id);
      return h('section', { class: 'card', 'data-class': c.code, 'aria-label': c.name },
        h('h2', { text: `${c.name} (${c.code})` }),
        h('div', { class: 'row' }, h('span', { text: 'My sandbox:' }), stateBadge(s),
          ...sessionActions(s, () => startSession({ class_id: c.id }))),
        idleBanner(s),
        saved.get(c.id) ? h('div', { class: 'row' }, h('span', { class: 'muted', text: `Saved work from ${when(saved.get(c.id).created_at)}:` }),
          downloadLink(saved.get(c.id), 'Download my work'),
          h('a', { class: 'button secondary', href: `#/work/${c.id}/${me.id}`, text: 'All my saved work' })) : null);
    }));
  });
}

function classesHome() {
  const list = h('div');
  const create = h('details', { class: 'card' }, h('summary', { text: 'New class' }), newClassForm());
  main.replaceChildren(h('h1', { text: 'Classes' }), list, create);
  live(async () => {
    const classes = await api.get('/api/classes');
    list.replaceChildren(...(classes.length ? classes.map((c) => h('section', { class: 'card' },
      h('h2', {}, h('a', { href: `#/class/${c.id}`, text: `${c.name} (${c.code})` })),
      h('p', { class: 'muted', text: `${c.enrolled} of ${c.capacity} students · join code ${c.join_code}` }))) :
      [h('p', { class: 'muted', text: 'No classes yet.' })]));
  }, 5000);
}

function newClassForm() {
  const name = h('input', { id: 'c-name', required: true });
  const code = h('input', { id: 'c-code', required: true });
  const cap = h('input', { id: 'c-cap', type: 'number', min: 1, value: 30, required: true });
  return h('form', { onsubmit: guard(async () => {
    await api.post('/api/classes', { name: name.value, code: code.value, capacity: Number(cap.value) });
    say('Class created.', true);
  }) },
  h('label', { for: 'c-name', text: 'Name' }), name,
  h('label', { for: 'c-code', text: 'Code' }), code,
  h('label', { for: 'c-cap', text: 'Capacity' }), cap,
  h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Create class' })));
}

function classPage(id) {
  const head = h('div');
  const roster = h('tbody');
  const table = h('table', { 'aria-label': 'Roster' },
    h('thead', {}, h('tr', {}, h('th', { text: 'Student' }), h('th', { text: 'Sandbox' }), h('th', { text: 'CPU' }),
      h('th', { text: 'Memory' }), h('th', { text: 'Saved work' }), h('th', { text: 'Actions' }))), roster);
  const cpuPrev = new Map();  // session -> last sample, for a CPU rate
  const add = h('input', { id: 'add-student', placeholder: 'user name' });
  const tpl = h('select', { id: 'tpl' });
  const csv = h('textarea', { id: 'roster-csv', placeholder: 'username[,password]' });
  const examFrom = h('input', { id: 'exam-from', type: 'datetime-local', required: true });
  const examTo = h('input', { id: 'exam-to', type: 'datetime-local', required: true });
  const examBox = h('div', { id: 'exam' });
  const secs = (input) => {
    const t = Date.parse(input.value);
    if (Number.isNaN(t)) throw new Error('Give the exam\'s start and end as a date and a time.');
    return Math.floor(t / 1000);
  };
  main.replaceChildren(head,
    h('div', { class: 'row card' },
      h('button', { type: 'button', onclick: guard(() => api.post(`/api/classes/${id}/up`)), text: 'Start whole class' }),
      h('button', { type: 'button', class: 'danger', onclick: guard(() => api.post(`/api/classes/${id}/down`)), text: 'Stop whole class' })),
    h('section', { class: 'card' }, h('h2', { text: 'Roster' }), table),
    h('section', { class: 'card' }, h('h2', { text: 'Settings' }),
      h('form', { onsubmit: guard(async () => {
        await api.post(`/api/classes/${id}/students`, { username: add.value.trim() });
        add.value = '';
      }) }, h('label', { for: 'add-student', text: 'Add a student' }), add,
        h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Add' }))),
      h('form', { onsubmit: guard(async () => {
        const r = await api.post(`/api/classes/${id}/students/import`, csv.value);
        say(`${r.enrolled} enrolled, ${r.created} new accounts.`, true);
        csv.value = '';
      }) }, h('label', { for: 'roster-csv', text: 'Enrol from CSV: one student per line, username[,password] (a password creates the account)' }), csv,
        h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Enrol' }))),
      h('form', { onsubmit: guard(() => api.put(`/api/classes/${id}/template`, { template_id: tpl.value })) },
        h('label', { for: 'tpl', text: 'Template' }), tpl,
        h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Use this template' })))),
    h('section', { class: 'card' }, h('h2', { text: 'Exam' }), examBox,
      h('form', { onsubmit: guard(async () => {
        await api.put(`/api/classes/${id}/exam`, { starts_at: secs(examFrom), ends_at: secs(examTo) });
        say('Exam window set: sessions start only inside it, and at its end every workspace is collected.', true);
      }) }, h('label', { for: 'exam-from', text: 'Starts' }), examFrom, h('label', { for: 'exam-to', text: 'Ends (work is collected)' }), examTo,
        h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Set exam window' })))));
  // The whole class's saved work as one file, where the service offers it
  // (the API says what it serves: /api/openapi.json).
  const whole = h('a', { class: 'button secondary', href: `/api/classes/${id}/archives.zip`, download: '', text: 'Download whole class', hidden: true });
  head.after(h('div', { class: 'row' }, whole));
  api.get('/api/openapi.json').then((doc) => {
    whole.hidden = !(doc && doc.paths && doc.paths['/api/classes/{id}/archives.zip']);
  }).catch(() => {});
  api.get('/api/templates').then((ts) => {
    tpl.replaceChildren(...ts.map((t) => h('option', { value: t.id, text: t.name })));
  }).catch((e) => say(e.message));
  live(async () => {
    const [c, students, sessions, usage, archives] = await Promise.all([
      api.get(`/api/classes/${id}`), api.get(`/api/classes/${id}/students`), api.get('/api/sessions'),
      api.get(`/api/classes/${id}/usage`).catch(() => []), api.get(`/api/archives?class_id=${id}`).catch(() => [])]);
    const use = new Map(usage.map((u) => [u.session_id, u]));
    const saved = newestArchive(archives, (a) => a.student_id);
    const exam = await api.get(`/api/classes/${id}/exam`).catch(() => null);
    examBox.replaceChildren(...(exam ? [
      h('p', { 'data-exam': 'set', text: `From ${when(exam.exam.starts_at)} to ${when(exam.exam.ends_at)}${exam.exam.collected_at ? ' · collected' : ''}` }),
      h('ul', {}, ...exam.students.map((c) => h('li', { 'data-collected': c.username, 'data-status': c.status,
        text: `${c.username}: ${c.status.replace(/_/g, ' ')}${c.reason ? ` (${c.reason})` : ''}` })))]
      : [h('p', { class: 'muted', 'data-exam': 'none', text: 'No exam window: students start whenever they like.' })]));
    if (c.template_id) tpl.value = c.template_id;
    head.replaceChildren(h('h1', { text: `${c.name} (${c.code})` }),
      h('p', { class: 'muted', text: `${c.enrolled} of ${c.capacity} students · join code ${c.join_code}` }));
    const by = latest(sessions.filter((s) => s.class_id === id), (s) => s.student_id);
    roster.replaceChildren(...students.map((st) => {
      const s = by.get(st.id);
      const u = s && use.get(s.id);
      let cpu = '';
      if (u) {
        const p = cpuPrev.get(s.id);
        if (p && u.at_ms > p.at_ms) cpu = `${(((u.cpu_ns - p.cpu_ns) / 1e6 / (u.at_ms - p.at_ms)) * 100).toFixed(0)} %`;
        cpuPrev.set(s.id, u);
      }
      return h('tr', { 'data-student': st.username },
        h('td', { text: st.username }), h('td', {}, stateBadge(s)),
        h('td', { 'data-cpu': cpu, text: cpu }), h('td', { 'data-memory': u ? u.memory_bytes : '', text: u ? bytes(u.memory_bytes) : '' }),
        h('td', {}, h('div', { class: 'row' }, downloadLink(saved.get(st.id), 'Download'),
          saved.get(st.id) ? h('a', { class: 'button secondary', href: `#/work/${id}/${st.id}`, text: 'All saved work' }) : null)),
        h('td', {}, h('div', { class: 'row' }, ...sessionActions(s,
          () => startSession({ class_id: id, student_id: st.id })))));
    }));
  });
}

function usersPage() {
  const tbody = h('tbody');
  const name = h('input', { id: 'u-name', required: true });
  const role = h('select', { id: 'u-role' }, ...['student', 'teacher', 'admin'].map((r) => h('option', { value: r, text: r })));
  const pw = h('input', { id: 'u-pw', type: 'password', autocomplete: 'new-password', required: true });
  const csv = h('textarea', { id: 'u-csv', placeholder: 'username,role,password' });
  const who = h('select', { id: 'p-user' });
  const newPw = h('input', { id: 'p-pw', type: 'password', autocomplete: 'new-password', required: true, minlength: 8 });
  const setPw = h('form', { class: 'card', onsubmit: guard(async () => {
    await api.post(`/api/users/${who.value}/password`, { password: newPw.value });
    say(`Password of ${who.selectedOptions[0].textContent} set; their logins were signed out.`, true);
    newPw.value = '';
  }) }, h('h2', { text: 'Set a user\'s password' }), h('label', { for: 'p-user', text: 'User' }), who,
  h('label', { for: 'p-pw', text: 'New password' }), newPw,
  h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Set password' })));
  main.replaceChildren(h('h1', { text: 'Users' }),
    h('section', { class: 'card' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', { text: 'User' }), h('th', { text: 'Role' }), h('th', { text: 'Status' }), h('th', { text: '' }))), tbody)),
    h('form', { class: 'card', onsubmit: guard(async () => {
      await api.post('/api/users', { username: name.value.trim(), role: role.value, password: pw.value });
      name.value = ''; pw.value = '';
    }) }, h('h2', { text: 'Add a user' }), h('label', { for: 'u-name', text: 'User name' }), name,
      h('label', { for: 'u-role', text: 'Role' }), role, h('label', { for: 'u-pw', text: 'Password' }), pw,
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Add user' }))),
    h('form', { class: 'card', onsubmit: guard(async () => {
      const r = await api.post('/api/users/import', csv.value);
      say(`${r.length} users created.`, true);
      csv.value = '';
    }) }, h('h2', { text: 'Import from CSV' }), h('label', { for: 'u-csv', text: 'One user per line: username,role,password' }), csv,
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Import' }))), setPw);
  live(async () => {
    const users = await api.get('/api/users');
    if (document.activeElement !== who) {
      const keep = who.value;
      who.replaceChildren(...users.map((u) => h('option', { value: u.id, text: u.username })));
      if (keep) who.value = keep;
    }
    tbody.replaceChildren(...users.map((u) => h('tr', {},
      h('td', { text: u.username }), h('td', { text: u.role }), h('td', { text: u.disabled ? 'disabled' : 'active' }),
      h('td', {}, h('button', { type: 'button', class: 'secondary', onclick: guard(() => api.post(`/api/users/${u.id}/disabled`, { disabled: !u.disabled })), text: u.disabled ? 'Enable' : 'Disable' })))));
  }, 5000);
}

function templatesPage() {
  const list = h('div');
  const name = h('input', { id: 't-name', required: true });
  const spec = h('textarea', { id: 't-spec' });
  spec.value = JSON.stringify({ image: 'cubby-demo:latest', port: 8080, memory_bytes: 67108864, cpus: 0.5, pids: 64 }, null, 2);
  main.replaceChildren(h('h1', { text: 'Templates' }), list,
    h('form', { class: 'card', onsubmit: guard(async () => {
      let parsed;
      try { parsed = JSON.parse(spec.value); } catch (e) { throw new Error(`The template is not valid JSON: ${e.message}`); }
      await api.post('/api/templates', { name: name.value.trim(), spec: parsed });
      say('Template saved.', true);
    }) }, h('h2', { text: 'New template' }), h('label', { for: 't-name', text: 'Name' }), name,
      h('label', { for: 't-spec', text: 'What a sandbox is (JSON: image, port, memory_bytes, cpus, pids, user, network, ...)' }), spec,
      h('div', { class: 'row' }, h('button', { type: 'submit', text: 'Save template' }))));
  live(async () => {
    const ts = await api.get('/api/templates');
    // A template being edited is not redrawn under the editor's hands.
    if (list.querySelector('textarea:focus')) return;
    list.replaceChildren(...ts.map((t) => {
      const edit = h('textarea', { 'aria-label': `Spec of ${t.name}`, 'data-template': t.name });
      edit.value = JSON.stringify(t.spec, null, 2);
      return h('section', { class: 'card' }, h('h2', { text: t.name }),
        h('form', { onsubmit: guard(async () => {
          let parsed;
          try { parsed = JSON.parse(edit.value); } catch (e) { throw new Error(`The template is not valid JSON: ${e.message}`); }
          await api.put(`/api/templates/${t.id}`, { spec: parsed });
          say(`Template ${t.name} changed: new sandboxes use it.`, true);
        }) }, edit, h('div', { class: 'row' }, h('button', { type: 'submit', text: `Save ${t.name}` }))));
    }));
  }, 10000);
}

// One student's saved work in a class: every archive (final and
// checkpoints), its files, and for teachers which one the next session
// starts from (shown, and changed here).
function workPage(classId, studentId) {
  const list = h('div');
  const teacher = me.role !== 'student';
  const title = h('h1', { text: 'Saved work' });
  const next = h('p', { id: 'restore-choice', class: 'card', role: 'status', hidden: true });
  main.replaceChildren(title, next, list);
  const restorePath = `/api/classes/${classId}/students/${studentId}/restore`;
  const label = (a) => `${a.kind === 'final' ? 'Saved at stop' : a.kind} · ${when(a.created_at)}`;
  const load = async () => {
    if (teacher) {
      const st = (await api.get(`/api/classes/${classId}/students`)).find((x) => x.id === studentId);
      if (st) title.textContent = `Saved work of ${st.username}`;
    }
    const q = `class_id=${encodeURIComponent(classId)}` + (teacher ? `&student_id=${encodeURIComponent(studentId)}` : '');
    const all = (await api.get(`/api/archives?${q}`)).filter((a) => a.student_id === studentId)
      .sort((a, b) => b.created_at - a.created_at);
    const choice = teacher ? await api.get(restorePath) : null;
    if (choice) {
      const chosen = all.find((a) => a.id === choice.archive_id);
      next.dataset.restore = choice.restore;
      next.textContent = 'Next session starts from: ' + (
        choice.restore === 'empty' ? 'an empty workspace (chosen by a teacher)'
          : choice.restore === 'archive' ? `${chosen ? label(chosen) : 'an archive'} (chosen by a teacher)`
            : all.length ? `the latest saved work (${label(all[0])})` : 'an empty workspace (nothing saved yet)');
      next.hidden = false;
    }
    if (!all.length) {
      list.replaceChildren(h('p', { class: 'muted', text: 'Nothing saved yet: work is saved when a sandbox stops (and at checkpoints while it runs).' }));
      return;
    }
    list.replaceChildren(...all.map((a) => {
      const files = h('ul', { class: 'files', hidden: true, 'aria-label': `Files of ${a.kind} ${when(a.created_at)}` });
      const show = h('button', { type: 'button', class: 'secondary', text: 'Files', onclick: guard(async () => {
        if (!files.hidden) { files.hidden = true; return; }
        const tree = await api.get(`/api/archives/${a.id}/files`);
        files.replaceChildren(...tree.map((e) => h('li', { 'data-path': e.path },
          e.kind === 'file'
            ? h('a', { href: `/api/archives/${a.id}/file?path=${encodeURIComponent(e.path)}`, download: '', text: `${e.path} (${bytes(e.size)})` })
            : h('span', { text: `${e.path}${e.kind === 'dir' ? '/' : e.link ? ` → ${e.link}` : ''}` }))));
        files.hidden = false;
      }) });
      const actions = [downloadLink(a, 'Download'), show];
      if (teacher) {
        actions.push(h('button', { type: 'button', class: 'secondary', text: 'Restore this next time', onclick: guard(async () => {
          await api.put(restorePath, { archive_id: a.id });
          say(`The next session starts from the work ${a.kind === 'final' ? 'saved at stop' : `of the ${a.kind}`} on ${when(a.created_at)}.`, true);
          await load();
        }) }));
      }
      const isNext = choice && (choice.restore === 'archive' ? choice.archive_id === a.id : choice.restore === 'latest' && a === all[0]);
      return h('section', { class: 'card', 'data-archive': a.id, 'data-next': isNext ? 'yes' : null },
        h('h2', { text: label(a) + (isNext ? ' · next session starts from this' : '') }),
        h('p', { class: 'muted', text: `${bytes(a.size)} compressed · sha256 ${a.sha256.slice(0, 16)}…` }),
        h('div', { class: 'row' }, ...actions), files);
    }));
    if (teacher) {
      list.append(h('div', { class: 'row card' }, h('button', { type: 'button', class: 'danger', text: 'Start empty next time', onclick: guard(async () => {
        await api.put(restorePath, { archive_id: null });
        say('The next session starts with an empty workspace (the saved work stays here).', true);
        await load();
      }) })));
    }
  };
  load().catch((e) => say(e.message));
}

function sandboxesPage() {
  const tbody = h('tbody');
  main.replaceChildren(h('h1', { text: 'Running sandboxes' }),
    h('section', { class: 'card' }, h('table', {}, h('thead', {}, h('tr', {}, h('th', { text: 'Session' }), h('th', { text: 'State' }), h('th', { text: 'Address' }), h('th', { text: 'Actions' }))), tbody)));
  live(async () => {
    const ss = await api.get('/api/sessions?active=true');
    tbody.replaceChildren(...ss.map((s) => h('tr', {}, h('td', { text: s.sandbox }), h('td', {}, stateBadge(s)),
      h('td', { text: s.address || '' }), h('td', {}, h('div', { class: 'row' }, ...sessionActions(s, null))))));
  }, 2000);
}

function healthPage() {
  const box = h('dl', { class: 'card health' });
  main.replaceChildren(h('h1', { text: 'Health' }), box);
  const line = (name, part, detail) => [h('dt', { text: name }),
    h('dd', { 'data-ok': part.ok ? 'yes' : 'no', text: part.ok ? `OK — ${detail}` : `NOT OK — ${part.error}` })];
  live(async () => {
    const x = await api.get('/api/admin/health');
    const states = Object.entries(x.active_sessions).map(([k, v]) => `${v} ${k}`).join(', ') || 'none';
    box.replaceChildren(
      ...line('Database', x.database, x.database.kind),
      ...line('Engine', x.engine, x.engine.describe),
      ...line('Sandboxes the engine runs', x.sandboxes, String(x.sandboxes.count)),
      h('dt', { text: 'Active sessions' }), h('dd', { text: states }));
  }, 3000);
}

async function terminalPage(id) {
  const { Terminal } = await import('/assets/vendor/xterm/xterm.mjs');
  const status = h('span', { id: 'term-status', class: 'muted', role: 'status', text: 'connecting…' });
  const box = h('div');
  const again = h('button', { type: 'button', class: 'secondary', text: 'Reconnect', hidden: true });
  main.replaceChildren(h('div', { class: 'row' }, h('h1', { text: 'Terminal' }), status, again,
    h('a', { class: 'button secondary', href: `/api/sessions/${id}/open`, target: '_blank', rel: 'noopener', text: 'Open app' })),
    h('div', { class: 'terminal-wrap' }, box));
  const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000 });
  term.open(box);
  let ws = null;
  let closed = false;
  let resume = null;     // names our shell on the server: a reconnect gets it back
  let retries = 0;
  const enc = new TextEncoder();
  // Columns and rows that fit the box, from the rendered cell size.
  const fit = () => {
    const cell = term._core && term._core._renderService && term._core._renderService.dimensions.css.cell;
    if (!cell || !cell.width) return;
    const cols = Math.max(20, Math.floor((box.clientWidth - 14) / cell.width));
    const rows = Math.max(5, Math.floor(box.clientHeight / cell.height));
    if (cols !== term.cols || rows !== term.rows) term.resize(cols, rows);
  };
  const sendSize = () => {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ resize: [term.cols, term.rows] }));
  };
  term.onResize(sendSize);
  term.onData((d) => { if (ws && ws.readyState === 1) ws.send(enc.encode(d)); });
  const connect = () => {
    again.hidden = true;
    status.textContent = retries ? 'reconnecting…' : 'connecting…';
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    const q = resume ? `?resume=${encodeURIComponent(resume)}` : '';
    const sock = new WebSocket(`${proto}://${location.host}/api/sessions/${id}/terminal${q}`);
    let opened = false;
    ws = sock;
    sock.binaryType = 'arraybuffer';
    sock.onopen = () => { opened = true; retries = 0; status.textContent = 'connected'; fit(); sendSize(); term.focus(); };
    sock.onmessage = (m) => {
      if (typeof m.data !== 'string') return term.write(new Uint8Array(m.data));
      // Text frames are the server's: which shell this is.
      let c = null;
      try { c = JSON.parse(m.data); } catch (_) { return; }
      if (c && c.resume) {
        if (resume && c.fresh) term.write('\r\n[the previous shell had ended: this is a new one]\r\n');
        resume = c.resume;
      }
    };
    sock.onclose = (ev) => {
      if (closed || sock !== ws) return;
      const ended = ev.code === 1000 && ev.reason === 'the shell ended';
      const elsewhere = ev.code === 4000;  // another window took this shell
      if (ended) resume = null;
      // A dropped connection that had worked: come back to the same shell
      // (the server keeps it for a minute), a few times with back-off.
      if (!ended && !elsewhere && resume && (opened || retries > 0) && retries < 8) {
        retries += 1;
        status.textContent = 'reconnecting…';
        setTimeout(() => { if (!closed) connect(); }, Math.min(250 * 2 ** retries, 8000));
        return;
      }
      retries = 0;
      status.textContent = ended ? 'disconnected: the shell ended'
        : elsewhere ? 'disconnected: this shell was opened in another window'
          : 'disconnected: the network dropped or access was refused';
      again.hidden = false;
      term.write('\r\n[disconnected — press Reconnect]\r\n');
    };
  };
  again.addEventListener('click', connect);
  const onWin = () => fit();
  window.addEventListener('resize', onWin);
  cleanup = () => { closed = true; window.removeEventListener('resize', onWin); if (ws) ws.close(); term.dispose(); };
  connect();
}

// ------------------------------------------------------------ router

function nav() {
  const links = [['#/', me.role === 'student' ? 'My classes' : 'Classes']];
  if (me.role === 'admin') links.push(['#/users', 'Users'], ['#/templates', 'Templates'], ['#/sandboxes', 'Sandboxes'], ['#/health', 'Health']);
  if (me.role === 'teacher') links.push(['#/templates', 'Templates']);
  links.push(['#/password', 'Password']);
  const here = location.hash || '#/';
  document.getElementById('nav').replaceChildren(...links.map(([href, text]) =>
    h('a', { href, text, 'aria-current': here === href ? 'page' : null })));
  document.getElementById('whoami').textContent = `${me.username} (${me.role})`;
  document.getElementById('top').hidden = false;
}

async function route() {
  if (timer) { clearInterval(timer); timer = null; }
  if (cleanup) { cleanup(); cleanup = null; }
  current = null;
  if (!me) return loginPage();
  nav();
  const [, page, arg] = (location.hash || '#/').split('/');
  switch (page) {
    case 'class': return classPage(arg);
    case 'terminal': return terminalPage(arg);
    case 'work': return workPage(arg, (location.hash.split('/')[3] || me.id));
    case 'password': return passwordPage();
    case 'users': return usersPage();
    case 'templates': return templatesPage();
    case 'sandboxes': return sandboxesPage();
    case 'health': return healthPage();
    default: return me.role === 'student' ? studentHome() : classesHome();
  }
}

async function start() {
  try { me = await api.get('/api/auth/me'); } catch (_) { me = null; }
  await route();
}

document.getElementById('logout').addEventListener('click', async () => {
  try { await api.post('/api/auth/logout'); } catch (_) { /* signed out either way */ }
  me = null;
  location.hash = '#/';
  route();
});
window.addEventListener('hashchange', () => { say(''); route(); });
start();
