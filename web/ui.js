// Rendering. All user content goes in with textContent; the only markup
// set with innerHTML is the constant icons below.

const $ = (id) => document.getElementById(id);

const ICONS = {
  pending: '<svg viewBox="0 0 16 16" width="15" height="15" aria-hidden="true"><circle cx="8" cy="8" r="6" fill="none" stroke="currentColor" stroke-width="1.4"/><path d="M8 4.6V8l2.4 1.5" fill="none" stroke="currentColor" stroke-width="1.4" stroke-linecap="round"/></svg>',
  sent: '<svg viewBox="0 0 18 14" width="17" height="13" aria-hidden="true"><path d="M2.5 7.5l3.5 3.5 8-8.5" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"/></svg>',
  double: '<svg viewBox="0 0 22 14" width="20" height="13" aria-hidden="true"><path d="M1.5 7.5l3.5 3.5 8-8.5" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"/><path d="M9.5 10.5l.5.5 8-8.5" fill="none" stroke="currentColor" stroke-width="1.7" stroke-linecap="round" stroke-linejoin="round"/></svg>',
  failed: '<svg viewBox="0 0 16 16" width="15" height="15" aria-hidden="true"><circle cx="8" cy="8" r="6.5" fill="currentColor"/><path d="M8 4.5v4.2" stroke="#fff" stroke-width="1.6" stroke-linecap="round"/><circle cx="8" cy="11.2" r=".9" fill="#fff"/></svg>',
};
ICONS.delivered = ICONS.double;
ICONS.read = ICONS.double;

// ---- small helpers -----------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function hash(s) {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  return Math.abs(h);
}

/** A stable hue for a name (avatars, sender names in groups). */
export function hue(name) { return hash(name || '?') % 360; }

function initials(name) {
  const parts = String(name || '?').trim().split(/[\s._-]+/).filter(Boolean);
  const s = parts.length > 1 ? parts[0][0] + parts[1][0] : [...(parts[0] || '?')][0];
  return s.toUpperCase();
}

export function fillAvatar(node, name, group = false) {
  node.textContent = initials(name);
  node.style.setProperty('--h', hue(name));
  node.classList.toggle('group', group);
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const dayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });

function startOfDay(t) { const d = new Date(t); d.setHours(0, 0, 0, 0); return d.getTime(); }

export function formatTime(ts) { return ts ? timeFmt.format(ts) : ''; }

/** Time for the chat list: 14:05 today, "Yesterday", a weekday this week, else a date. */
function listTime(ts) {
  if (!ts) return '';
  const days = Math.round((startOfDay(Date.now()) - startOfDay(ts)) / 86400000);
  if (days <= 0) return timeFmt.format(ts);
  if (days === 1) return 'Yesterday';
  if (days < 7) return weekdayFmt.format(ts);
  return dateFmt.format(ts);
}

function dayLabel(ts) {
  const days = Math.round((startOfDay(Date.now()) - startOfDay(ts)) / 86400000);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  return dayFmt.format(ts);
}

function lastSeen(p) {
  if (!p) return '';
  if (p.online) return 'online';
  if (!p.last_seen) return 'offline';
  const days = Math.round((startOfDay(Date.now()) - startOfDay(p.last_seen)) / 86400000);
  if (days === 0) return `last seen today at ${timeFmt.format(p.last_seen)}`;
  if (days === 1) return `last seen yesterday at ${timeFmt.format(p.last_seen)}`;
  return `last seen ${dateFmt.format(p.last_seen)}`;
}

/** The text of a message body: a string, an object's `text`, or its JSON. */
export function bodyText(body) {
  if (typeof body === 'string') return body;
  if (body && typeof body === 'object' && typeof body.text === 'string') return body.text;
  try { return JSON.stringify(body); } catch { return String(body); }
}

/** Appends text to a node, with http(s) links made clickable (still only text nodes). */
function appendLinked(node, text) {
  const re = /\bhttps?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]]/g;
  let last = 0, m;
  while ((m = re.exec(text))) {
    if (m.index > last) node.append(text.slice(last, m.index));
    const a = el('a', null, m[0]);
    a.href = m[0];
    a.target = '_blank';
    a.rel = 'noopener noreferrer';
    node.append(a);
    last = m.index + m[0].length;
  }
  if (last < text.length) node.append(text.slice(last));
}

/** "bob is typing…"; in the chat list of a direct chat just "typing…". */
function typingText(users, short = false) {
  if (!users.length) return '';
  if (short) return 'typing…';
  if (users.length === 1) return `${users[0]} is typing…`;
  if (users.length === 2) return `${users[0]} and ${users[1]} are typing…`;
  return `${users.length} people are typing…`;
}

// ---- screens -------------------------------------------------------------------

export function showLogin(message = '') {
  $('app').hidden = true;
  $('conn').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('login-password').value = '';
  $('login-username').focus();
}

export function showApp(me) {
  $('login').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = me;
  fillAvatar($('me-avatar'), me);
}

export function setLoginMode(register) {
  $('login-title').textContent = register ? 'Create your account' : 'Welcome back';
  $('login-hint').textContent = register
    ? 'Pick a username (3–32 characters: a–z, 0–9, _ . -) and a password of at least 8 characters.'
    : 'Log in to continue your conversations.';
  $('login-submit').textContent = register ? 'Create account' : 'Log in';
  $('login-switch-text').textContent = register ? 'Already have an account?' : 'New to parley?';
  $('login-toggle').textContent = register ? 'Log in' : 'Create an account';
  $('login-password').autocomplete = register ? 'new-password' : 'current-password';
  $('login-error').textContent = '';
}

/** Narrow screens show the list or the chat; wide ones both. */
export function setView(view) { $('app').dataset.view = view; }

let toastTimer = null;
export function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
}

// ---- connection state ------------------------------------------------------------

let connTimer = null;
export function renderConn({ state, retryAt }) {
  const box = $('conn');
  box.dataset.state = state;
  clearInterval(connTimer);
  const text = $('conn-text');
  const retry = $('conn-retry');
  if (state === 'online' || state === 'stopped') {
    box.hidden = true;
    return;
  }
  const update = () => {
    if (state === 'connecting') text.textContent = 'Connecting…';
    else if (state === 'offline') text.textContent = 'No network. Waiting to reconnect…';
    else {
      const s = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      text.textContent = s > 0 ? `Not connected. Retrying in ${s} s` : 'Not connected. Retrying…';
    }
  };
  update();
  retry.hidden = state === 'connecting';
  if (state === 'waiting') connTimer = setInterval(update, 1000);
  // A quick reconnect should not flash: show "connecting" only after a moment.
  if (state === 'connecting' && box.hidden) {
    connTimer = setTimeout(() => { if (box.dataset.state === 'connecting') box.hidden = false; }, 800);
  } else {
    box.hidden = false;
  }
}

// ---- conversation list ------------------------------------------------------------

export function renderConvList(store, openId, filter) {
  const list = $('conv-list');
  const f = (filter || '').trim().toLowerCase();
  const convs = store.sortedConvs().filter((c) => {
    if (!f) return true;
    return store.title(c).toLowerCase().includes(f) || (c.members || []).some((m) => m.includes(f));
  });
  $('list-empty').hidden = store.convs.size > 0;
  const frag = document.createDocumentFragment();
  for (const c of convs) frag.append(convItem(store, c, c.id === openId));
  list.replaceChildren(frag);
  if (f && !convs.length) list.append(el('p', 'list-note muted', 'No chats match.'));

  let unread = 0;
  for (const c of store.convs.values()) unread += store.unread(c) ? 1 : 0;
  document.title = unread ? `(${unread}) parley` : 'parley';
}

function convItem(store, c, active) {
  const title = store.title(c);
  const peer = store.peer(c);
  const a = el('a', 'conv' + (active ? ' active' : ''));
  a.href = `#c${c.id}`;
  a.dataset.testid = 'conv-item';
  a.dataset.conv = c.id;
  a.dataset.name = title;
  if (active) a.setAttribute('aria-current', 'page');

  const av = el('span', 'avatar');
  fillAvatar(av, title, c.type === 'group');
  if (peer) {
    const p = store.presence.get(peer);
    const dot = el('span', 'presence' + (p && p.online ? ' online' : ''));
    dot.dataset.testid = 'presence';
    dot.dataset.online = p && p.online ? 'true' : 'false';
    dot.title = p && p.online ? 'online' : 'offline';
    av.append(dot);
  }

  const main = el('span', 'conv-main');
  const row1 = el('span', 'conv-row');
  const name = el('span', 'conv-name', title);
  name.dataset.testid = 'conv-name';
  const pending = store.outbox.forConv(c.id);
  const lastTs = store.lastActivity(c);
  row1.append(name, el('span', 'conv-time', listTime(lastTs)));

  const row2 = el('span', 'conv-row');
  const preview = el('span', 'preview');
  preview.dataset.testid = 'conv-preview';
  const typing = store.typingUsers(c.id);
  const unread = store.unread(c);
  if (typing.length) {
    preview.classList.add('typing');
    preview.textContent = typingText(typing, c.type !== 'group');
  } else {
    const last = pending.length ? { ...pending[pending.length - 1], from: store.me, pending: true } : c.last_message;
    if (last) {
      if (last.from === store.me) {
        const t = store.receipts.has(c.id) || last.pending ? store.tick(c.id, last) : null;
        if (t) preview.append(tickNode(t));
        preview.append('You: ');
      } else if (c.type === 'group') {
        preview.append(`${last.from}: `);
      }
      preview.append(bodyText(last.body));
    } else {
      preview.classList.add('muted');
      preview.textContent = c.type === 'group' ? `${(c.members || []).length} members` : 'No messages yet';
    }
  }
  row2.append(preview);
  if (unread) {
    const b = el('span', 'badge', unread > 999 ? '999+' : String(unread));
    b.dataset.testid = 'unread';
    row2.append(b);
    a.classList.add('has-unread');
  }
  main.append(row1, row2);
  a.append(av, main);
  return a;
}

function tickNode(t) {
  const s = el('span', 'tick');
  s.dataset.testid = 'tick';
  s.dataset.state = t.state;
  s.title = t.text;
  s.setAttribute('aria-label', t.text);
  s.innerHTML = ICONS[t.state]; // constant markup
  return s;
}

// ---- chat ----------------------------------------------------------------------------

let shownConv = null;
const msgEls = new Map(); // key -> <li>, for the conversation on screen
let stuckToBottom = true;

export function showChat(store, id) {
  const c = store.convs.get(id);
  $('chat-empty').hidden = !!c;
  $('chat-view').hidden = !c;
  if (!c) { shownConv = null; return; }
  if (shownConv !== id) {
    shownConv = id;
    msgEls.clear();
    $('msg-list').replaceChildren();
    stuckToBottom = true;
    $('composer-input').value = '';
    autosize();
  }
  renderChat(store, id);
}

export function renderChat(store, id) {
  const c = store.convs.get(id);
  if (!c || shownConv !== id) return;
  const title = store.title(c);
  const group = c.type === 'group';
  $('chat-name').textContent = title;
  fillAvatar($('chat-avatar'), title, group);
  $('add-member-btn').hidden = !group || !(c.admins || []).includes(store.me);

  const peer = store.peer(c);
  $('chat-sub').textContent = group
    ? [...(c.members || []).filter((m) => m !== store.me), 'You'].join(', ')
    : lastSeen(store.presence.get(peer));
  const typing = store.typingUsers(id);
  $('chat-typing').textContent = typingText(typing);
  $('chat-typing').hidden = !typing.length;
  $('chat-sub').hidden = typing.length > 0;

  // On narrow screens the back button counts the other chats with unread messages.
  let others = 0;
  for (const o of store.convs.values()) if (o.id !== id && store.unread(o)) others++;
  $('back-badge').textContent = others ? String(others) : '';
  $('back-badge').hidden = !others;

  renderMessages(store, c);
}

function msgKey(m) { return m.cmid ? `${m.from}\u0000${m.cmid}` : `#${m.seq}`; }

function renderMessages(store, c) {
  const box = $('messages');
  const list = $('msg-list');
  const msgs = store.messageList(c.id);
  const group = c.type === 'group';
  const wasStuck = stuckToBottom;
  // Unless we follow the bottom, the message at the top of the view stays
  // where it is, whatever comes in above or below it (a page of older ones).
  const anchor = wasStuck ? null : topMessage(box);

  const wanted = [];
  let prevDay = 0, prev = null;
  for (const m of msgs) {
    const day = startOfDay(m.ts || Date.now());
    if (day !== prevDay) {
      const key = `day:${day}`;
      let d = msgEls.get(key);
      if (!d) {
        d = el('li', 'day');
        d.dataset.testid = 'day';
        d.append(el('span', null, dayLabel(day)));
        msgEls.set(key, d);
      }
      wanted.push(d);
      prevDay = day;
      prev = null;
    }
    const key = msgKey(m);
    let li = msgEls.get(key);
    if (!li) { li = messageNode(m, group, store.me); msgEls.set(key, li); }
    updateMessageNode(store, c, li, m, prev);
    wanted.push(li);
    prev = m;
  }

  // Put the wanted nodes in order, reusing what is there.
  const keep = new Set(wanted);
  for (const child of [...list.children]) if (!keep.has(child)) child.remove();
  for (const [k, node] of msgEls) if (!keep.has(node)) msgEls.delete(k);
  let cursor = list.firstElementChild;
  for (const node of wanted) {
    if (node === cursor) { cursor = cursor.nextElementSibling; continue; }
    list.insertBefore(node, cursor);
  }

  const h = store.msgs.get(c.id);
  const older = $('older');
  older.textContent = !h || !h.loaded ? (msgs.length ? '' : 'Loading…')
    : store.hasOlder(c.id) ? (h.loadingOlder ? 'Loading older messages…' : '')
      : msgs.length ? 'This is the beginning of the chat.' : 'No messages yet. Say hello!';
  older.dataset.state = h && h.loadingOlder ? 'loading' : '';

  // Scroll: stay at the bottom if we were there; else keep the anchor still.
  if (wasStuck) box.scrollTop = box.scrollHeight;
  else if (anchor && anchor.node.isConnected) box.scrollTop += offsetIn(box, anchor.node) - anchor.offset;
  updateJump();
}

/** The node's distance from the top edge of the scrolling box, in px. */
function offsetIn(box, node) {
  return node.getBoundingClientRect().top - box.getBoundingClientRect().top;
}

/** The first message (not a day line) not wholly above the view, and its offset; null if none. */
function topMessage(box) {
  const top = box.getBoundingClientRect().top;
  for (const li of $('msg-list').children) {
    if (!li.classList.contains('msg')) continue;
    const r = li.getBoundingClientRect();
    if (r.bottom > top) return { node: li, offset: r.top - top };
  }
  return null;
}

function messageNode(m, group, me) {
  const mine = m.from === me;
  const li = el('li', 'msg ' + (mine ? 'mine' : 'theirs'));
  li.dataset.testid = 'message';
  li.dataset.from = m.from;
  const bubble = el('div', 'bubble');
  if (group && !mine) {
    const s = el('div', 'sender', m.from);
    s.style.setProperty('--h', hue(m.from));
    bubble.append(s);
  }
  const text = el('div', 'text');
  const content = el('span', 'content');
  content.dataset.testid = 'message-text';
  const body = bodyText(m.body);
  appendLinked(content, body);
  text.append(content);
  if (typeof m.body !== 'string' && !(m.body && typeof m.body.text === 'string')) text.classList.add('json');
  if (/^\p{Extended_Pictographic}{1,3}$/u.test(body.trim())) text.classList.add('emoji');
  // An invisible copy of the time (and room for ticks) ends the text, so the
  // real one, in the corner, never covers the last line.
  const space = el('span', 'meta-space' + (mine ? ' with-tick' : ''), formatTime(m.ts));
  space.setAttribute('aria-hidden', 'true');
  text.append(space);
  const meta = el('span', 'meta');
  const time = el('time', null, formatTime(m.ts));
  time.dateTime = new Date(m.ts || Date.now()).toISOString();
  time.title = new Date(m.ts || Date.now()).toLocaleString();
  meta.append(time);
  bubble.append(text, meta);
  li.append(bubble);
  return li;
}

function updateMessageNode(store, c, li, m, prev) {
  if (m.seq) li.dataset.seq = m.seq; else delete li.dataset.seq;
  if (m.cmid) li.dataset.cmid = m.cmid;
  // Runs of messages from one sender hug each other; the first has a tail.
  const first = !prev || prev.from !== m.from || (m.ts - prev.ts) > 5 * 60000;
  li.classList.toggle('first', first);
  const sender = li.querySelector('.sender');
  if (sender) sender.hidden = !first;
  if (m.from !== store.me) return;
  const t = store.tick(c.id, m);
  const meta = li.querySelector('.meta');
  let tick = meta.querySelector('.tick');
  if (!tick || tick.dataset.state !== t.state || tick.title !== t.text) {
    const fresh = tickNode(t);
    if (tick) tick.replaceWith(fresh); else meta.append(fresh);
    tick = fresh;
  }
  li.classList.toggle('failed', t.state === 'failed');
  // Why it was not sent; Retry only when sending again can work.
  let actions = li.querySelector('.failed-actions');
  const want = t.state === 'failed' ? `${t.text}\u0000${t.final ? 1 : 0}` : '';
  if (actions && actions.dataset.key !== want) { actions.remove(); actions = null; }
  if (want && !actions) {
    actions = el('div', 'failed-actions');
    actions.dataset.key = want;
    actions.dataset.testid = 'failed';
    const why = el('span', null, `${t.text}.`);
    why.dataset.testid = 'failed-reason';
    actions.append(why);
    if (!t.final) {
      const retry = el('button', 'link', 'Retry');
      retry.type = 'button';
      retry.dataset.action = 'retry';
      retry.dataset.testid = 'retry';
      actions.append(retry);
    }
    const del = el('button', 'link', 'Delete');
    del.type = 'button';
    del.dataset.action = 'delete';
    del.dataset.testid = 'delete';
    actions.append(del);
    li.querySelector('.bubble').append(actions);
  }
}

export function scrollToBottom() {
  const box = $('messages');
  box.scrollTop = box.scrollHeight;
  stuckToBottom = true;
  updateJump();
}

/** Called on scroll: remembers whether we follow the bottom; true when near the top. */
export function onMessagesScroll() {
  const box = $('messages');
  stuckToBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
  updateJump();
  return box.scrollTop < 200;
}

/** True when the message area does not fill the screen, or shows its top (so older ones should load). */
export function messagesWantOlder() {
  const box = $('messages');
  return box.scrollHeight <= box.clientHeight + 10 || box.scrollTop < 200;
}

function updateJump() { $('jump-btn').hidden = stuckToBottom; }

const numFmt = new Intl.NumberFormat();

/**
 * The composer's size note: hidden while far from the limit, the bytes left
 * when close, and a refusal over it. Returns true when the text may be sent.
 */
export function renderComposerLimit(used, max, tried = false) {
  const note = $('composer-limit');
  const input = $('composer-input');
  const left = max - used;
  const over = left < 0;
  note.hidden = left >= Math.min(2048, max / 8) && !over;
  note.dataset.state = over ? 'over' : 'near';
  note.textContent = over
    ? `Too long to send: ${numFmt.format(-left)} bytes over the limit of ${numFmt.format(max)}. Shorten it or split it.`
    : `${numFmt.format(left)} bytes left`;
  note.classList.remove('shake');
  if (over && tried) {
    void note.offsetWidth; // restart the animation
    note.classList.add('shake');
  }
  input.setAttribute('aria-invalid', over ? 'true' : 'false');
  $('send-btn').setAttribute('aria-disabled', over ? 'true' : 'false');
  return !over;
}

export function autosize() {
  const t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight, 160) + 'px';
}

// ---- dialogs ----------------------------------------------------------------------

/**
 * Opens a dialog; `submit(form)` returns a promise, whose rejection text is
 * shown in the dialog. Resolves when closed.
 */
export function openDialog(id, submit, prepare) {
  const dlg = $(id);
  const form = dlg.querySelector('form');
  const err = dlg.querySelector('.form-error');
  form.reset();
  err.textContent = '';
  prepare?.(dlg);
  const ok = form.querySelector('button[type=submit]');
  form.onsubmit = async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    ok.disabled = true;
    try {
      await submit(form);
      dlg.close();
    } catch (e) {
      err.textContent = e.message || String(e);
    } finally {
      ok.disabled = false;
    }
  };
  form.querySelector('button[value=cancel]').onclick = () => dlg.close();
  dlg.showModal();
  form.querySelector('input')?.focus();
}
