// Wiring: session, connection, sync rules (docs/protocol.md "Client rules"), UI events.

import * as api from './api.js';
import { Connection, Outbox, MAX_TEXT_BYTES, TOO_LONG, bodyBytes, parseServers } from './conn.js';
import { Store, loadDeviceKey, saveDeviceKey } from './store.js';
import * as ui from './ui.js';

const SESSION_KEY = 'parley.session';
const PAGE = 50;            // messages per page (first screen, older pages)
const SYNC_LIMIT = 500;     // per gap-fill request
const MAX_GAP = 1000;       // more missing than this: start again from the latest page
const PREFETCH = 20;        // conversations whose latest page is fetched on connect
const MAX_INBOX_PAGES = 1000; // bound on one inbox walk (pages of up to 100)
const TYPING_EVERY_MS = 2500;
// `sync` without after/before starts at the oldest message: the latest page is
// the one before a seq higher than any there is.
const LATEST = Number.MAX_SAFE_INTEGER;

const $ = (id) => document.getElementById(id);
const touchOnly = matchMedia('(hover: none) and (pointer: coarse)');

let session = null; // {user, token, device}
let store = null;
let outbox = null;
let conn = null;
let openId = null;
let filter = '';
let registerMode = false;
let typingSentAt = 0;
const sentRead = new Map();      // conv -> highest read we sent
const sentDelivered = new Map(); // conv -> highest delivered we sent
const deliveredTimers = new Map();
const syncing = new Map();       // conv -> {again}
const gapTimers = new Map();
let renderQueued = false;
let typingTimer = null;
let catchingUp = null;           // {again} while a catch-up runs (catchUp)

// ---- session -------------------------------------------------------------------

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    return s && s.token && s.user ? s : null;
  } catch { return null; }
}

function boot() {
  bindLogin();
  bindApp();
  session = loadSession();
  if (session) startApp();
  else ui.showLogin();
}

function startApp() {
  api.setToken(session.token);
  api.setUnauthorizedHandler(() => signedOut('Your session has ended. Please log in again.'));
  outbox = new Outbox(`parley.outbox.${session.user}`);
  store = new Store(session.user, outbox);
  store.onChange(scheduleRender);
  sentRead.clear();
  sentDelivered.clear();
  ui.showApp(session.user);
  conn = new Connection({
    token: session.token,
    // <meta name="parley-servers" content="https://a.example,https://b.example">:
    // the WebSocket fails over between them; none: this page's origin.
    servers: parseServers(document.querySelector('meta[name="parley-servers"]')?.content),
    onFrame,
    onReady,
    onState: (st) => {
      ui.renderConn(st);
      // Who is online is unknown while we are not: the next hello tells again.
      if (st.state !== 'online' && store && store.presence.size) {
        store.presence.clear();
        store.emit();
      }
    },
    onRevoked: () => signedOut('Your session has ended. Please log in again.'),
    checkAuth: async () => {
      try { await api.inbox(store.cursor); return true; } catch (e) { return e.status !== 401; }
    },
  });
  conn.start();
  route();
  scheduleRender();
}

function stopApp() {
  for (const t of [...deliveredTimers.values(), ...gapTimers.values()]) clearTimeout(t);
  deliveredTimers.clear();
  gapTimers.clear();
  syncing.clear();
  catchingUp = null;
  conn?.stop();
  conn = null;
  store = null;
  outbox = null;
  openId = null;
  api.setToken(null);
}

function signedOut(message) {
  if (!session) return;
  session = null;
  localStorage.removeItem(SESSION_KEY);
  stopApp();
  if (location.hash) history.replaceState(null, '', location.pathname);
  ui.showLogin(message);
}

async function logout() {
  const pending = outbox ? [...outbox.items.values()].filter((p) => !p.failed).length : 0;
  if (pending && !confirm(`${pending} message(s) are not sent yet and will be lost. Log out anyway?`)) return;
  outbox?.clear();
  // Close our socket first: the server closes it with 1008 once the token is revoked.
  conn?.stop();
  api.setUnauthorizedHandler(() => {});
  try { await api.logout(); } catch { /* the token goes away locally anyway */ }
  signedOut('');
}

function bindLogin() {
  $('login-toggle').onclick = () => {
    registerMode = !registerMode;
    ui.setLoginMode(registerMode);
  };
  $('login-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const username = $('login-username').value.trim().toLowerCase();
    const password = $('login-password').value;
    const err = $('login-error');
    err.textContent = '';
    if (!username || !password) { err.textContent = 'Enter a username and a password.'; return; }
    const btn = $('login-submit');
    btn.disabled = true;
    try {
      const r = registerMode ? await api.register(username, password)
        : await api.login(username, password, loadDeviceKey(username));
      saveDeviceKey(r.user, r.device_key);
      session = { user: r.user, token: r.token, device: r.device };
      localStorage.setItem(SESSION_KEY, JSON.stringify(session));
      $('login-password').value = '';
      startApp();
    } catch (e) {
      err.textContent = api.describe(e);
    } finally {
      btn.disabled = false;
    }
  };
}

// ---- rendering ------------------------------------------------------------------

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(render);
}

function render() {
  renderQueued = false;
  if (!store) return;
  ui.renderConvList(store, openId, filter);
  if (openId !== null) ui.renderChat(store, openId);
  // Typing indicators run out by themselves.
  clearTimeout(typingTimer);
  const next = store.nextTypingExpiry();
  if (next) typingTimer = setTimeout(scheduleRender, next - Date.now() + 20);
}

// ---- routing: #c<id> is the open conversation ------------------------------------

function route() {
  if (!store) return;
  const m = /^#c(\d+)$/.exec(location.hash);
  const id = m ? Number(m[1]) : null;
  if (id !== null && !store.convs.has(id)) {
    // Not known yet (first inbox still on its way): onReady routes again.
    if (store.cursor) history.replaceState(null, '', location.pathname);
    ui.setView('list');
    return;
  }
  if (id === openId) { ui.setView(id === null ? 'list' : 'chat'); return; }
  openId = id;
  typingSentAt = 0;
  ui.showChat(store, id);
  updateComposerLimit();
  ui.setView(id === null ? 'list' : 'chat');
  scheduleRender();
  if (id !== null) {
    openConv(id);
    if (matchMedia('(min-width: 721px)').matches) $('composer-input').focus();
  }
}

async function openConv(id) {
  const h = store.msgs.get(id);
  if (conn?.ready) {
    if (!h || !h.loaded) await loadLatest(id);
    else fillGap(id);
    fetchReceipts(id);
  }
  markRead(id);
  loadOlderIfWanted(id);
}

// ---- sync --------------------------------------------------------------------------

/**
 * One walk of the inbox (docs/protocol.md "Pages"): every page, applied as
 * it comes, `page` = the previous `next` while `more`; the cursor is kept
 * only with the last page. afterFirst runs once the first page is in.
 * Returns the ids listed, or null if the store changed meanwhile.
 */
async function walkInbox(s, since, afterFirst = () => {}) {
  const ids = [];
  let frame = { type: 'inbox', ...(since ? { changed_since: since } : {}) };
  for (let n = 0; n < MAX_INBOX_PAGES; n++) {
    const { inbox } = await conn.request(frame);
    if (s !== store) return null;
    const more = !!(inbox.more && inbox.next);
    store.applyInbox({ conversations: inbox.conversations, cursor: more ? 0 : inbox.cursor });
    for (const c of inbox.conversations || []) ids.push(c.id);
    if (n === 0) afterFirst();
    if (!more) break;
    frame = { type: 'inbox', page: inbox.next };
  }
  return ids;
}

async function onReady() {
  updateComposerLimit(); // the hello may have brought another limit
  await catchUp({ reconnected: true });
}

/**
 * What was missed (docs/protocol.md "Client rules"): the inbox since the
 * cursor, every page, then the messages missing from what changed (the open
 * conversation first) and its receipts. After a (re)connect the outbox goes
 * again from the start; on `resync` (the same connection, the server may
 * have lost live frames) nothing is resent, and a resync that comes while
 * a catch-up runs runs it once more after it (that one may have listed the
 * inbox before the loss).
 */
async function catchUp({ reconnected }) {
  if (!reconnected && catchingUp) { catchingUp.again = true; return; }
  const job = { again: false };
  catchingUp = job;
  const s = store;
  let resend = reconnected;
  try {
    do {
      job.again = false;
      await catchUpOnce(s, resend);
      resend = false;
    } while (job.again && s === store && conn?.ready);
  } finally {
    if (catchingUp === job) catchingUp = null;
  }
}

async function catchUpOnce(s, resend) {
  try {
    const first = !s.cursor;
    const changed = await walkInbox(s, s.cursor, () => {
      if (resend) outbox.flush(conn, { all: true });
      if (first) route(); // a #c<id> from before the reload
    });
    if (changed === null) return;
    // The open one first, then the most recent ones.
    const order = [...new Set([openId, ...changed].filter((x) => x !== null && store.convs.has(x)))];
    let prefetched = 0;
    for (const id of order) {
      if (s !== store) return;
      const h = store.msgs.get(id);
      if (h && h.loaded) await fillGap(id);
      else if (id === openId || prefetched++ < PREFETCH) await loadLatest(id);
      const c = store.convs.get(id);
      if (id === openId || (c && c.last_message && c.last_message.from === store.me)) fetchReceipts(id);
    }
    if (openId !== null) markRead(openId);
  } catch (e) {
    // The socket went away mid-way (the next onReady starts over), or the
    // server did not answer: reconnect, with backoff, and start over.
    if (e.message === 'timeout' && conn?.ready && s === store) conn.drop('sync timed out');
    else if (e.message !== 'closed' && e.message !== 'stopped') console.warn('parley: sync after connect failed', e);
  }
}

/** We are no longer a member (removed while away: the inbox delta does not say so). */
function lostConv(id) {
  if (!store?.convs.has(id)) return;
  ui.toast(`You are no longer in “${store.title(store.convs.get(id))}”.`);
  store.removeConv(id);
  if (id === openId) location.hash = '';
}

/** A sync request; `forbidden` means we are no longer a member. */
async function syncRequest(id, frame) {
  try {
    return await conn.request({ type: 'sync', conv: id, ...frame });
  } catch (e) {
    if (e.code === 'forbidden') lostConv(id);
    throw e;
  }
}

/** Latest page of a conversation (first screen). */
async function loadLatest(id) {
  if (syncing.has(id)) { syncing.get(id).again = true; return; }
  syncing.set(id, { again: false });
  try {
    const r = await syncRequest(id, { before: LATEST, limit: PAGE });
    if (!store) return;
    const h = store.held(id);
    store.addMessages(id, r.messages || []);
    h.loaded = true;
    h.more = r.more !== false;
    store.emit();
  } catch { return; } finally {
    syncing.delete(id);
  }
  await fillGap(id, { reset: false });
}

/** Fetch everything after the highest seq held without a hole, until nothing is missing. */
async function fillGap(id, { reset = true } = {}) {
  if (!store || !conn?.ready) return;
  const h = store.msgs.get(id);
  if (!h || !h.loaded) return;
  if (syncing.has(id)) { syncing.get(id).again = true; return; }
  const job = { again: false };
  syncing.set(id, job);
  try {
    let more = false; // the last page said there is more after it
    for (let round = 0; round < 100; round++) {
      const c = store.convs.get(id);
      const top = store.top(id);
      const highest = Math.max(c ? c.last_seq : 0, ...store.held(id).bySeq.keys());
      if (top >= highest && !job.again && !more) break;
      job.again = false;
      if (reset && highest - top > MAX_GAP) {
        // Too far behind for one screen: show the latest page; older ones load on scroll.
        store.resetMessages(id);
        syncing.delete(id);
        return loadLatest(id);
      }
      const r = await syncRequest(id, { after: top, limit: SYNC_LIMIT });
      if (!store) return;
      store.addMessages(id, r.messages || []);
      more = !!r.more && (r.messages || []).length > 0; // pages are trimmed to fit: follow `more`
      if (!(r.messages || []).length && !job.again) break;
    }
  } catch { /* disconnected: onReady resumes */ } finally {
    if (syncing.get(id) === job) syncing.delete(id);
  }
  if (!store) return;
  noteDelivered(id, store.top(id));
  if (id === openId) markRead(id);
}

/** A seq jumped ahead: wait a moment (frames in flight may fill it), then fetch what is missing. */
function scheduleGapFill(id) {
  if (gapTimers.has(id)) return;
  gapTimers.set(id, setTimeout(() => {
    gapTimers.delete(id);
    fillGap(id);
  }, 300));
}

async function loadOlder(id) {
  const h = store?.msgs.get(id);
  if (!h || !h.loaded || !store.hasOlder(id) || h.loadingOlder || !conn?.ready) return;
  h.loadingOlder = true;
  store.emit();
  try {
    const r = await syncRequest(id, { before: h.min, limit: PAGE });
    if (!store) return;
    store.addMessages(id, r.messages || []);
    if (store.msgs.get(id) === h) h.more = r.more !== false && (r.messages || []).length > 0;
  } catch { return; /* try again on the next scroll */ } finally {
    h.loadingOlder = false;
    store?.emit();
  }
  // Still at the top (a short page, or a fling) with more above: go on.
  loadOlderIfWanted(id);
}

/** Loads older messages while the view is not full, or shows its top, and older ones exist. */
function loadOlderIfWanted(id) {
  requestAnimationFrame(() => requestAnimationFrame(() => {
    if (id === openId && ui.messagesWantOlder()) loadOlder(id);
  }));
}

async function fetchReceipts(id) {
  try {
    const r = await api.receipts(id);
    store?.applyReceipts(id, r);
  } catch (e) {
    if (e.status === 403) lostConv(id); // else ticks stay as they are
  }
}

async function refreshInbox() {
  if (!conn?.ready) return;
  try {
    await walkInbox(store, store.cursor);
  } catch { /* next reconnect */ }
}

// ---- cursors: forward only -----------------------------------------------------------

function noteDelivered(id, seq) {
  if (!store || !(seq > 0)) return;
  const c = store.convs.get(id);
  const floor = Math.max(sentDelivered.get(id) || 0, c ? c.delivered_seq : 0);
  if (seq <= floor) return;
  if (deliveredTimers.has(id)) return;
  // Coalesce a burst of messages into one cursor move.
  deliveredTimers.set(id, setTimeout(() => {
    deliveredTimers.delete(id);
    if (!store) return;
    const cc = store.convs.get(id);
    const target = Math.max(store.top(id), cc && !store.msgs.get(id)?.loaded ? cc.last_seq : 0);
    const sent = Math.max(sentDelivered.get(id) || 0, cc ? cc.delivered_seq : 0);
    if (target > sent && conn?.send({ type: 'delivered', conv: id, seq: target })) {
      sentDelivered.set(id, target);
      if (cc) cc.delivered_seq = target;
    }
  }, 150));
}

/** Coalesces a burst of incoming messages into one read cursor move. */
let readTimer = null;
function scheduleRead(id) {
  if (readTimer) return;
  readTimer = setTimeout(() => { readTimer = null; markRead(id); }, 100);
}

function markRead(id) {
  if (!store || id !== openId || document.visibilityState !== 'visible') return;
  const c = store.convs.get(id);
  const seq = store.top(id);
  if (!c || !(seq > 0)) return;
  const floor = Math.max(sentRead.get(id) || 0, c.read_seq || 0);
  if (seq <= floor) return;
  if (conn?.send({ type: 'read', conv: id, seq })) {
    sentRead.set(id, seq);
    c.read_seq = Math.max(c.read_seq, seq);
    c.delivered_seq = Math.max(c.delivered_seq, seq);
    store.emit();
  }
}

// ---- frames --------------------------------------------------------------------------

function onFrame(f) {
  if (!store) return;
  switch (f.type) {
    case 'msg': {
      const c = store.convs.get(f.conv);
      if (!c) {
        // Its `conv` frame has not come (yet): the inbox has it.
        refreshInbox().then(() => noteDelivered(f.conv, f.seq));
        break;
      }
      store.clearTyping(f.conv, f.from);
      // A message from X at seq S means X has delivered and read up to S
      // (the server moves the sender's cursors; no receipt frame says so).
      if (f.from !== store.me) store.setReceipt(f.conv, f.from, f.seq, f.seq, false);
      const h = store.msgs.get(f.conv);
      const msg = { seq: f.seq, from: f.from, cmid: f.cmid, ts: f.ts, body: f.body };
      if (h && h.loaded) {
        store.addMessages(f.conv, [msg]);
        if (store.top(f.conv) < f.seq) scheduleGapFill(f.conv);
      } else if (f.seq > (c.last_seq || 0)) {
        c.last_seq = f.seq;
        c.last_message = msg;
        c.last_ts = f.ts;
        store.emit();
      }
      if (f.conv === openId) scheduleRead(f.conv);
      noteDelivered(f.conv, f.seq);
      break;
    }
    case 'ack':
      store.ack(f);
      if (store.msgs.get(f.conv)?.loaded && store.top(f.conv) < f.seq) scheduleGapFill(f.conv);
      break;
    case 'receipt':
      store.setReceipt(f.conv, f.user, f.delivered, f.read);
      break;
    case 'presence':
      store.setPresence(f.user, !!f.online, f.last_seen);
      break;
    case 'typing':
      if (f.user !== store.me) store.setTyping(f.conv, f.user);
      break;
    case 'conv':
      if (f.conv && f.conv.id) {
        store.upsertConv(f.conv);
        store.emit();
      }
      break;
    case 'removed':
      lostConv(f.conv);
      break;
    case 'error':
      onError(f);
      break;
    case 'resync':
      // The server may have failed to deliver some frames to us; the
      // connection stays: catch up on it (docs/protocol.md).
      catchUp({ reconnected: false });
      break;
    default:
      break;
  }
}

function onError(f) {
  const item = f.ref !== undefined ? outbox.get(String(f.ref)) : null;
  if (item) {
    if (f.code === 'busy' || f.code === 'internal' || f.code === 'rate_limited') {
      outbox.retryLater(item.cmid, f.retry_after_ms || 2000);
    } else {
      // These can never work by sending the same again: no Retry for them.
      const final = { too_large: TOO_LONG, forbidden: 'you are not in this chat', bad_request: f.message || 'refused' };
      outbox.fail(item.cmid, final[f.code] || f.message || f.code, { final: f.code in final });
      store.emit();
    }
    return;
  }
  console.warn('parley:', f.code, f.message);
}

// ---- sending --------------------------------------------------------------------

function sendMessage() {
  const input = $('composer-input');
  const text = composerText();
  if (!text.trim() || openId === null) return;
  // Over the limit it stays in the composer, with the reason under it.
  if (!ui.renderComposerLimit(bodyBytes(text), maxText(), true)) return;
  input.value = '';
  ui.autosize();
  updateComposerLimit();
  outbox.add(openId, text);
  outbox.flush(conn);
  // The message ends this bout of typing (the other side hides "typing…" when it
  // arrives): the next keystroke may tell again once the server's 1 s limit passed.
  typingSentAt = Math.min(typingSentAt, Date.now() - TYPING_EVERY_MS + 1100);
  store.emit();
  requestAnimationFrame(ui.scrollToBottom);
}

/** What Enter would send: the composer's text without leading blank lines and trailing space. */
function composerText() {
  return $('composer-input').value.replace(/^\s*\n|\s+$/g, '');
}

/** The server's limit on a message body, as its hello announced it. */
function maxText() { return conn ? conn.maxText : MAX_TEXT_BYTES; }

function updateComposerLimit() {
  const text = composerText();
  ui.renderComposerLimit(text ? bodyBytes(text) : 0, maxText());
}

function onComposerInput() {
  ui.autosize();
  updateComposerLimit();
  if (openId === null || !$('composer-input').value.trim()) return;
  const now = Date.now();
  if (now - typingSentAt < TYPING_EVERY_MS) return;
  if (conn?.send({ type: 'typing', conv: openId })) typingSentAt = now;
}

// ---- UI events ---------------------------------------------------------------------

function parseUsers(text) {
  return [...new Set(text.split(/[\s,;]+/).map((s) => s.trim().replace(/^@/, '').toLowerCase()).filter(Boolean))];
}

function failWith(e) { throw new Error(api.describe(e)); }

function bindApp() {
  window.addEventListener('hashchange', route);
  $('back-btn').onclick = () => { location.hash = ''; };
  $('logout-btn').onclick = logout;
  $('conv-filter').oninput = (ev) => { filter = ev.target.value; scheduleRender(); };

  const newChat = () => ui.openDialog('dlg-chat', async (form) => {
    const [user] = parseUsers(form.elements.user.value);
    if (!user) throw new Error('Enter a username.');
    if (user === store.me) throw new Error('That is you. Pick someone else.');
    const c = await api.createDirect(user).catch(failWith);
    store.upsertConv(c);
    store.emit();
    location.hash = `#c${c.id}`;
  });
  $('new-chat-btn').onclick = newChat;
  $('empty-new-chat').onclick = newChat;

  $('new-group-btn').onclick = () => ui.openDialog('dlg-group', async (form) => {
    const name = form.elements.name.value.trim();
    if (!name) throw new Error('Give the group a name.');
    const members = parseUsers(form.elements.members.value).filter((u) => u !== store.me);
    const c = await api.createGroup(name, members).catch(failWith);
    store.upsertConv(c);
    store.emit();
    location.hash = `#c${c.id}`;
  });

  $('add-member-btn').onclick = () => {
    const id = openId;
    const c = store.convs.get(id);
    ui.openDialog('dlg-member', async (form) => {
      const users = parseUsers(form.elements.user.value);
      if (!users.length) throw new Error('Enter a username.');
      for (const u of users) {
        const updated = await api.addMember(id, u).catch(failWith);
        if (updated && updated.id) store.upsertConv(updated);
      }
      store.emit();
      ui.toast(users.length === 1 ? `${users[0]} was added.` : `${users.join(', ')} were added.`);
    }, (dlg) => {
      dlg.querySelector('[data-testid=member-list]').textContent = `Members: ${(c.members || []).join(', ')}`;
    });
  };

  const input = $('composer-input');
  $('composer').onsubmit = (ev) => { ev.preventDefault(); sendMessage(); input.focus(); };
  input.addEventListener('input', onComposerInput);
  input.addEventListener('keydown', (ev) => {
    // Enter sends, Shift+Enter is a new line (not while composing with an IME;
    // on touch screens Enter is a new line and the button sends).
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !touchOnly.matches) {
      ev.preventDefault();
      sendMessage();
    }
  });

  $('messages').addEventListener('scroll', () => {
    if (ui.onMessagesScroll() && openId !== null) loadOlder(openId);
  }, { passive: true });
  $('jump-btn').onclick = ui.scrollToBottom;

  $('msg-list').addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    if (!btn || !outbox) return;
    const cmid = btn.closest('.msg')?.dataset.cmid;
    const item = cmid && outbox.get(cmid);
    if (!item) return;
    if (btn.dataset.action === 'delete') outbox.remove(cmid);
    else if (!item.final) { delete item.failed; outbox.save(); outbox.flush(conn); }
    store.emit();
  });

  $('conn-retry').onclick = () => conn?.reconnectNow();

  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && openId !== null) markRead(openId);
  });
  window.addEventListener('focus', () => { if (openId !== null) markRead(openId); });

  // Sends with no ack after a while go again (same cmid).
  setInterval(() => { if (conn && outbox) outbox.flush(conn); }, 3000);
  // Other tabs: a log out there logs out here.
  window.addEventListener('storage', (ev) => {
    if (ev.key === SESSION_KEY && !ev.newValue && session) signedOut('You logged out in another tab.');
  });
}

boot();
