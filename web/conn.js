// The WebSocket: connect, reconnect with backoff, request/response by id,
// keepalive, and the outbox of messages waiting for their ack.

export const BACKOFF_BASE_MS = 1000;
export const BACKOFF_CAP_MS = 60000;
const REQUEST_TIMEOUT_MS = 15000;
const PING_AFTER_MS = 25000;   // silence before we ping
const PONG_TIMEOUT_MS = 10000; // no answer by then: the socket is dead
const RESEND_AFTER_MS = 10000; // no ack by then: send again, same cmid
// Sends on the wire without their ack, at most (docs/protocol.md
// "Backpressure": the server forgives 64 refusals of frames already on their
// way per pause).
export const MAX_INFLIGHT = 32;
const MAX_HELD = 1000;         // frames held back during a pause, at most

/**
 * The largest message body the server takes by default: its --max-text, in
 * bytes of the body as JSON (docs/protocol.md, `send`). The server announces
 * its own in `hello` (`max_text`: Connection.maxText); this is for a server
 * that does not, and until the first hello.
 */
export const MAX_TEXT_BYTES = 16384;

const utf8 = new TextEncoder();

/** The size a body counts for against the limit: its JSON, in UTF-8 bytes. */
export function bodyBytes(body) {
  return utf8.encode(JSON.stringify(body)).length;
}

/** Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS) {
  return Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/**
 * The servers to connect to, from the content of
 * `<meta name="parley-servers">`: origins separated by commas (the nodes of
 * one cluster), http(s):// or ws(s)://, as WebSocket base URLs
 * (`wss://a.example`). Entries that are not such an origin are skipped with
 * a warning; none at all (or no meta) is [], which means the page's own
 * origin.
 */
export function parseServers(content) {
  const out = [];
  for (const raw of String(content || '').split(',')) {
    const entry = raw.trim();
    if (!entry) continue;
    let u;
    try { u = new URL(entry); } catch { u = null; }
    const ws = u && { 'http:': 'ws:', 'https:': 'wss:', 'ws:': 'ws:', 'wss:': 'wss:' }[u.protocol];
    if (!ws || u.search || u.hash || u.username || u.password || u.pathname.replace(/\/+$/, '')) {
      console.warn(`parley: parley-servers: not an origin, skipped: ${entry}`);
      continue;
    }
    const base = `${ws}//${u.host}`;
    if (!out.includes(base)) out.push(base);
  }
  return out;
}

/** The page's own origin as a WebSocket base URL. */
function sameOrigin() {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}`;
}

/**
 * One logical connection that keeps itself open.
 * Callbacks: onFrame(frame) for every server frame that is not an answer to
 * request(); onReady() after `hello`; onState({state, retryAt, attempt,
 * server}); onRevoked() when the token is refused.
 *
 * servers: WebSocket base URLs to use in turn (parseServers); empty: the
 * page's origin. With several, every failed connect or lost connection
 * sends the next attempt to the next one, round robin; each attempt waits
 * its jittered backoff, whose ceiling doubles once per round of the list.
 */
export class Connection {
  constructor({ token, onFrame, onReady, onState, onRevoked, checkAuth, servers = [] }) {
    this.token = token;
    this.servers = servers.length ? [...servers] : [sameOrigin()];
    this.cur = 0;             // the server of the next (or current) socket
    this.onFrame = onFrame;
    this.onReady = onReady;
    this.onState = onState;
    this.onRevoked = onRevoked;
    this.checkAuth = checkAuth; // async () => false when the token is no longer valid
    this.ws = null;
    this.ready = false;
    this.maxText = MAX_TEXT_BYTES; // the server's limit on a body (its last hello)
    this.stopped = true;
    this.attempt = 0;
    this.retryTimer = null;
    this.retryAt = 0;
    this.nextId = 1;
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.recent = [];           // [{at, frame}] sent in the last moments (see rateLimited)
    this.pausedUntil = 0;       // backpressure: no frames before (Date.now() ms)
    this.pauseTimer = null;
    this.held = [];             // frames sent during the pause, written when it ends
    this.resumeFns = new Set(); // called when the pause ends (the outbox)
    this.lastRx = 0;
    this.pingAt = 0;
    this.ticker = null;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => { if (this.ws) this.drop('offline'); };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this.onOnline);
    window.addEventListener('offline', this.onOffline);
    this.ticker = setInterval(() => this.tick(), 2500);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    window.removeEventListener('offline', this.onOffline);
    clearInterval(this.ticker);
    clearTimeout(this.retryTimer);
    if (this.ws) {
      const ws = this.ws;
      this.detach();
      ws.close(1000, 'bye');
    }
    this.failPending('stopped');
    this.setState('stopped');
  }

  setState(state) {
    this.state = state;
    this.onState?.({ state, retryAt: this.retryAt, attempt: this.attempt, server: this.server() });
  }

  /** The WebSocket base URL in use (or to be tried next). */
  server() { return this.servers[this.cur]; }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped || this.ws) return;
    this.setState('connecting');
    const url = `${this.server()}/v1/ws?token=${encodeURIComponent(this.token)}`;
    let ws;
    try {
      ws = new WebSocket(url, 'parley.v1.json');
    } catch (e) {
      this.scheduleRetry(false);
      return;
    }
    this.ws = ws;
    this.ready = false;
    ws.onmessage = (ev) => this.receive(ev.data);
    ws.onclose = (ev) => this.closed(ev.code);
    ws.onerror = () => { /* onclose follows */ };
  }

  detach() {
    const ws = this.ws;
    if (!ws) return;
    ws.onmessage = ws.onclose = ws.onerror = null;
    this.ws = null;
    this.ready = false;
    // A pause is the connection's: a new one starts unpaused (onReady
    // sends everything again).
    clearTimeout(this.pauseTimer);
    this.pauseTimer = null;
    this.pausedUntil = 0;
    this.held = [];
    this.resumeFns.clear();
  }

  /** Give up on the current socket at once (dead, or the browser went offline). */
  drop(reason) {
    const ws = this.ws;
    const wasReady = this.ready;
    this.detach();
    try { ws.close(4000, reason); } catch { /* already closing */ }
    this.failPending(reason);
    this.scheduleRetry(wasReady);
  }

  closed(code) {
    const wasReady = this.ready;
    this.detach();
    this.failPending('closed');
    if (this.stopped) return;
    // 1008: the token was revoked or expired, or we were refused too often:
    // scheduleRetry asks the server which, as after a failed upgrade.
    this.scheduleRetry(wasReady, !wasReady || code === 1008);
  }

  async scheduleRetry(wasReady, probe = !wasReady) {
    if (this.stopped) return;
    if (wasReady) this.attempt = 0;
    let delay = backoffDelay(Math.floor(this.attempt / this.servers.length));
    this.attempt++;
    // The page's origin answers REST (and /healthz) for the server that failed only if it is that server.
    const failedHere = this.server() === sameOrigin();
    this.cur = (this.cur + 1) % this.servers.length; // the next attempt: the next server
    if (probe && navigator.onLine !== false) {
      // The browser does not say why a socket was refused or closed: a
      // refused token, a server that is stopping (503 with Retry-After), or
      // just down. Ask over HTTP.
      if (this.checkAuth && (await this.checkAuth().catch(() => true)) === false) {
        this.onRevoked?.();
        return;
      }
      if (failedHere) {
        try {
          const res = await fetch('/healthz', { cache: 'no-store' });
          const ra = Number(res.headers.get('Retry-After'));
          if (res.status === 503 && ra > 0) delay = Math.max(delay, ra * 1000 + Math.random() * 1000);
        } catch { /* down: plain backoff */ }
      }
      if (this.stopped || this.ws) return;
    }
    this.retryAt = Date.now() + delay;
    this.setState(navigator.onLine === false ? 'offline' : 'waiting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Try now (user asked, or the browser is back online). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    this.attempt = 0;
    this.connect();
  }

  receive(text) {
    this.lastRx = Date.now();
    this.pingAt = 0;
    let f;
    try { f = JSON.parse(text); } catch { return; }
    if (!f || typeof f !== 'object') return;
    if (f.type === 'hello') {
      this.maxText = Number.isSafeInteger(f.max_text) && f.max_text > 0 ? f.max_text : MAX_TEXT_BYTES;
      this.ready = true;
      this.attempt = 0;
      this.retryAt = 0;
      this.setState('online');
      this.onReady?.(f);
      return;
    }
    if (f.type === 'pong') return;
    if (f.type === 'error' && f.code === 'rate_limited') {
      this.pause(f.retry_after_ms);
      if (f.ref === undefined) {
        this.rateLimited();
        return;
      }
      // A refused request goes again after the pause, same id.
      const p = this.pending.get(String(f.ref));
      if (p) {
        this.afterPause(() => { if (this.pending.get(String(f.ref)) === p) this.send(p.frame); });
        return;
      }
    }
    const key = f.type === 'error' ? f.ref : f.id;
    if (key !== undefined && this.pending.has(String(key))) {
      const p = this.pending.get(String(key));
      this.pending.delete(String(key));
      clearTimeout(p.timer);
      if (f.type === 'error') p.reject(Object.assign(new Error(f.message || f.code), { code: f.code }));
      else p.resolve(f);
      return;
    }
    this.onFrame?.(f);
  }

  /**
   * Backpressure (docs/protocol.md): a `rate_limited` refusal pauses the
   * whole connection for retry_after_ms. Refusals that arrive during the
   * pause answer frames that were on their way and name the same end.
   */
  pause(retryMs) {
    const ms = Number(retryMs) > 0 ? Number(retryMs) : 1000;
    const until = Date.now() + ms;
    if (until <= this.pausedUntil) return;
    this.pausedUntil = until;
    clearTimeout(this.pauseTimer);
    this.pauseTimer = setTimeout(() => this.resume(), ms);
  }

  paused() { return Date.now() < this.pausedUntil; }

  /** fn() once the pause ends (at once if there is none). */
  afterPause(fn) {
    if (!this.paused()) fn();
    else this.resumeFns.add(fn);
  }

  resume() {
    this.pauseTimer = null;
    if (this.paused()) { // the clock said otherwise: wait for the rest
      this.pauseTimer = setTimeout(() => this.resume(), this.pausedUntil - Date.now());
      return;
    }
    this.pausedUntil = 0;
    // What was refused goes first (the outbox resends in order), then the
    // frames held back meanwhile.
    const fns = [...this.resumeFns];
    this.resumeFns.clear();
    for (const fn of fns) fn();
    const held = this.held;
    this.held = [];
    for (const frame of held) {
      if (frame.id && !this.pending.has(frame.id)) continue; // a request that timed out meanwhile
      if (!this.send(frame)) break;
    }
  }

  /**
   * Send a frame; false when not connected (the caller retries on onReady).
   * During a pause a frame is held back and written when it ends (typing,
   * which is lossy, is dropped: false).
   */
  send(frame) {
    if (!this.ws || !this.ready) return false;
    if (this.paused()) {
      if (frame.type === 'typing' || this.held.length >= MAX_HELD) return false;
      this.held.push(frame);
      return true;
    }
    this.ws.send(JSON.stringify(frame));
    if (frame.type !== 'ping' && frame.type !== 'typing' && frame.type !== 'send') {
      const now = Date.now();
      this.recent.push({ at: now, frame });
      while (this.recent.length && (now - this.recent[0].at > 2000 || this.recent.length > 500)) this.recent.shift();
    }
    return true;
  }

  /**
   * The server dropped a frame over its rate limit, without saying which
   * (only `send` refusals carry a ref). Send again, after the pause, what
   * may have been lost: unanswered requests (same id) and cursor moves
   * (forward only, so a repeat is harmless).
   */
  rateLimited() {
    const again = this.recent.filter(({ frame }) =>
      frame.type === 'read' || frame.type === 'delivered' || (frame.id && this.pending.has(frame.id)));
    this.recent = [];
    this.afterPause(() => {
      for (const { frame } of again) {
        if (frame.id && !this.pending.has(frame.id)) continue;
        this.send(frame);
      }
    });
  }

  /** Send a frame with an id and wait for the frame that answers it. */
  request(frame) {
    return new Promise((resolve, reject) => {
      const id = `r${this.nextId++}`;
      const sent = { ...frame, id };
      if (!this.send(sent)) { reject(new Error('not connected')); return; }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error('timeout'));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, { resolve, reject, timer, frame: sent });
    });
  }

  failPending(reason) {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(reason));
    }
    this.pending.clear();
  }

  tick() {
    if (!this.ws || !this.ready) return;
    const now = Date.now();
    if (this.pingAt && now - this.pingAt > PONG_TIMEOUT_MS) { this.drop('ping timeout'); return; }
    if (!this.pingAt && now - this.lastRx > PING_AFTER_MS) {
      this.pingAt = now;
      this.send({ type: 'ping' });
    }
  }
}

/** Why a message over the limit was not sent. */
export const TOO_LONG = 'the message is too long for the server';

/**
 * Messages sent but not yet acknowledged, kept in localStorage so that they
 * survive a reload, and sent again with the same cmid until acked.
 */
export class Outbox {
  constructor(storageKey) {
    this.key = storageKey;
    this.items = new Map(); // cmid -> {cmid, conv, body, ts, failed?, final?}
    this.sentAt = new Map(); // cmid -> time of last send (not persisted)
    this.inflight = new Set(); // cmids sent on this connection, no ack or refusal yet
    this.notBefore = new Map(); // cmid -> not before (busy, internal): holds back the rest
    this.done = new Set();   // cmids acked or dropped here (so a save never brings them back)
    this.conn = null;        // the connection of the last flush
    this.timer = null;
    this.timerAt = 0;
    this.resumed = () => { if (this.conn) this.flush(this.conn); };
    for (const it of this.read()) this.items.set(it.cmid, it);
  }

  read() {
    try {
      const list = JSON.parse(localStorage.getItem(this.key) || '[]');
      return Array.isArray(list) ? list.filter((it) => it && typeof it.cmid === 'string') : [];
    } catch { return []; }
  }

  /** Writes ours, keeping what other tabs of the same user have pending. */
  save() {
    const all = new Map();
    for (const it of this.read()) if (!this.done.has(it.cmid)) all.set(it.cmid, it);
    for (const it of this.items.values()) all.set(it.cmid, it);
    try {
      localStorage.setItem(this.key, JSON.stringify([...all.values()]));
    } catch { /* storage full: keep in memory */ }
  }

  add(conv, body) {
    const item = { cmid: crypto.randomUUID(), conv, body, ts: Date.now() };
    this.items.set(item.cmid, item);
    this.save();
    return item;
  }

  get(cmid) { return this.items.get(cmid); }

  remove(cmid) {
    const had = this.items.delete(cmid);
    this.sentAt.delete(cmid);
    this.notBefore.delete(cmid);
    if (this.inflight.delete(cmid)) this.kick(0); // room in the window
    if (had) {
      this.done.add(cmid);
      this.save();
    }
    return had;
  }

  /** It was refused: `reason` says why; `final` when sending it again can never work (no Retry). */
  fail(cmid, reason, { final = false } = {}) {
    const it = this.items.get(cmid);
    if (!it) return;
    it.failed = reason;
    if (final) it.final = true; else delete it.final;
    if (this.inflight.delete(cmid)) this.kick(0);
    this.save();
  }

  forConv(conv) { return [...this.items.values()].filter((it) => it.conv === conv); }

  /**
   * Send what has no ack yet, in the order written, with at most
   * MAX_INFLIGHT on the wire: after a (re)connect (all: nothing is in
   * flight any more) everything from the start; else what is new, refused
   * or sent too long ago. Nothing during a pause (it flushes when the pause
   * ends); a message deferred by the server holds back the ones behind it.
   */
  flush(conn, { all = false } = {}) {
    this.conn = conn;
    if (all) this.inflight.clear();
    if (conn.paused()) {
      conn.afterPause(this.resumed);
      return;
    }
    const now = Date.now();
    for (const it of this.items.values()) {
      if (it.failed) continue;
      if (conn.ready && bodyBytes(it.body) > conn.maxText) {
        // Kept from elsewhere (another tab, an older page): the server would
        // refuse it (or close the socket, over its frame limit) every time.
        this.fail(it.cmid, TOO_LONG, { final: true });
        continue;
      }
      const frame = { type: 'send', conv: it.conv, cmid: it.cmid, body: it.body };
      if (this.inflight.has(it.cmid)) {
        if (now - (this.sentAt.get(it.cmid) || 0) >= RESEND_AFTER_MS && conn.send(frame)) this.sentAt.set(it.cmid, now);
        continue;
      }
      const nb = this.notBefore.get(it.cmid) || 0;
      if (nb > now) { this.kick(nb - now); break; }
      if (this.inflight.size >= MAX_INFLIGHT || !conn.send(frame)) break;
      this.inflight.add(it.cmid);
      this.notBefore.delete(it.cmid);
      this.sentAt.set(it.cmid, now);
    }
  }

  /** Flush again in ms (an ack made room, a deferral ends). */
  kick(ms) {
    const at = Date.now() + ms;
    if (!this.conn || (this.timer && this.timerAt <= at)) return;
    clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      if (this.conn) this.flush(this.conn);
    }, ms);
  }

  /**
   * The server refused one for now (`busy`, `internal`, `rate_limited`):
   * send it again, same cmid, after ms, before the ones behind it (a
   * `rate_limited` also paused the connection: the flush waits for that).
   */
  retryLater(cmid, ms) {
    if (!this.items.has(cmid)) return;
    this.inflight.delete(cmid);
    this.notBefore.set(cmid, Date.now() + ms);
    this.kick(ms);
  }

  clear() {
    for (const cmid of this.items.keys()) this.done.add(cmid);
    this.items.clear();
    this.sentAt.clear();
    this.inflight.clear();
    this.notBefore.clear();
    clearTimeout(this.timer);
    this.timer = null;
    this.conn = null;
    localStorage.removeItem(this.key);
  }
}
