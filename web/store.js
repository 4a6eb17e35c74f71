// Client state: conversations, the messages held for each, receipts,
// presence and typing. No network here; app.js feeds it frames and answers.

export const TYPING_SHOW_MS = 5000;

export class Store {
  constructor(me, outbox) {
    this.me = me;
    this.outbox = outbox;
    this.convs = new Map();    // id -> conversation object (protocol shape)
    this.msgs = new Map();     // id -> {bySeq: Map<seq, msg>, min, top, loaded, more (older exist), loadingOlder}
    this.receipts = new Map(); // id -> Map<user, {delivered, read}>
    this.presence = new Map(); // user -> {online, last_seen}
    this.typing = new Map();   // id -> Map<user, expiresAt>
    this.cursor = 0;           // inbox cursor for changed_since
    this.listeners = new Set();
  }

  onChange(fn) { this.listeners.add(fn); }
  emit() { for (const fn of this.listeners) fn(); }

  // ---- conversations ----------------------------------------------------

  upsertConv(c) {
    const old = this.convs.get(c.id);
    const merged = { ...(old || { read_seq: 0, delivered_seq: 0, last_seq: 0, last_message: null }), ...c };
    if (old) {
      // Cursors and the last message only move forward.
      merged.read_seq = Math.max(old.read_seq || 0, c.read_seq || 0);
      merged.delivered_seq = Math.max(old.delivered_seq || 0, c.delivered_seq || 0);
      if ((old.last_seq || 0) > (c.last_seq || 0)) {
        merged.last_seq = old.last_seq;
        merged.last_message = old.last_message;
        merged.last_ts = Math.max(old.last_ts || 0, c.last_ts || 0);
      }
    }
    this.convs.set(c.id, merged);
    return merged;
  }

  applyInbox(inbox) {
    for (const c of inbox.conversations || []) this.upsertConv(c);
    if (inbox.cursor) this.cursor = Math.max(this.cursor, inbox.cursor);
    this.emit();
  }

  removeConv(id) {
    this.convs.delete(id);
    this.msgs.delete(id);
    this.receipts.delete(id);
    this.typing.delete(id);
    this.emit();
  }

  /** A conversation's title: the group name, or the other member of a direct chat. */
  title(c) {
    if (!c) return '';
    if (c.type === 'group') return c.name || 'Group';
    return (c.members || []).find((m) => m !== this.me) || this.me;
  }

  /** The other user of a direct conversation, or null. */
  peer(c) {
    return c && c.type === 'direct' ? (c.members || []).find((m) => m !== this.me) || null : null;
  }

  lastActivity(c) {
    let t = c.last_ts || (c.last_message && c.last_message.ts) || 0;
    for (const p of this.outbox.forConv(c.id)) t = Math.max(t, p.ts);
    return t;
  }

  /** Conversations, most recent activity first. */
  sortedConvs() {
    return [...this.convs.values()].sort((a, b) => this.lastActivity(b) - this.lastActivity(a) || b.id - a.id);
  }

  unread(c) { return Math.max(0, (c.last_seq || 0) - (c.read_seq || 0)); }

  // ---- messages ------------------------------------------------------------

  held(id) {
    let m = this.msgs.get(id);
    if (!m) {
      m = { bySeq: new Map(), min: 0, top: 0, loaded: false };
      this.msgs.set(id, m);
    }
    return m;
  }

  /** Whether messages older than the oldest held exist (the server's `more` for a page of older ones). */
  hasOlder(id) {
    const h = this.msgs.get(id);
    return !!h && h.min > 1 && h.more !== false;
  }

  /** Highest seq held with nothing missing below it (down to the oldest held). */
  top(id) { return this.msgs.get(id)?.top || 0; }

  /**
   * Adds messages (deduplicated by seq). Returns how many were new.
   * A message of ours that is still in the outbox (ack lost) leaves it.
   */
  addMessages(id, list) {
    const h = this.held(id);
    let added = 0;
    for (const m of list) {
      if (!m || !(m.seq > 0)) continue;
      if (m.from === this.me && m.cmid) this.outbox.remove(m.cmid);
      if (h.bySeq.has(m.seq)) continue;
      h.bySeq.set(m.seq, m);
      added++;
      if (!h.min || m.seq < h.min) h.min = m.seq;
    }
    if (!h.top && h.min) h.top = h.min;
    while (h.bySeq.has(h.top + 1)) h.top++;
    const last = list.length ? list.reduce((a, b) => (b.seq > a.seq ? b : a)) : null;
    const c = this.convs.get(id);
    if (c && last && last.seq >= (c.last_seq || 0)) {
      c.last_seq = last.seq;
      c.last_message = last;
      c.last_ts = Math.max(c.last_ts || 0, last.ts || 0);
    }
    if (added) this.emit();
    return added;
  }

  /** Forget what is held (used when the gap to fill is too large: start again from the latest page). */
  resetMessages(id) {
    this.msgs.delete(id);
  }

  /** The messages of a conversation in order: stored ones by seq, then pending ones. */
  messageList(id) {
    const h = this.msgs.get(id);
    const list = h ? [...h.bySeq.values()].sort((a, b) => a.seq - b.seq) : [];
    const pending = this.outbox.forConv(id).sort((a, b) => a.ts - b.ts)
      .map((p) => ({ cmid: p.cmid, from: this.me, ts: p.ts, body: p.body, pending: true, failed: p.failed, final: !!p.final }));
    return list.concat(pending);
  }

  /** Our message got its seq. */
  ack(f) {
    const p = this.outbox.get(f.cmid);
    const body = p ? p.body : undefined;
    this.outbox.remove(f.cmid);
    const c = this.convs.get(f.conv);
    if (c) {
      // The server moves the sender's own cursors with the send.
      c.read_seq = Math.max(c.read_seq || 0, f.seq);
      c.delivered_seq = Math.max(c.delivered_seq || 0, f.seq);
    }
    this.setReceipt(f.conv, this.me, f.seq, f.seq, false);
    const h = this.msgs.get(f.conv);
    const msg = { seq: f.seq, from: this.me, cmid: f.cmid, ts: f.ts, body };
    if (body !== undefined && h && h.loaded) {
      this.addMessages(f.conv, [msg]);
    } else if (c && f.seq >= (c.last_seq || 0) && body !== undefined) {
      c.last_seq = f.seq;
      c.last_message = msg;
      c.last_ts = f.ts;
    }
    this.emit();
  }

  // ---- receipts ------------------------------------------------------------

  setReceipt(id, user, delivered, read, emit = true) {
    let r = this.receipts.get(id);
    if (!r) { r = new Map(); this.receipts.set(id, r); }
    const old = r.get(user) || { delivered: 0, read: 0 };
    const next = { delivered: Math.max(old.delivered, delivered || 0, read || 0), read: Math.max(old.read, read || 0) };
    r.set(user, next);
    if (user === this.me) {
      const c = this.convs.get(id);
      if (c) {
        c.read_seq = Math.max(c.read_seq || 0, next.read);
        c.delivered_seq = Math.max(c.delivered_seq || 0, next.delivered);
      }
    }
    if (emit) this.emit();
  }

  applyReceipts(id, data) {
    for (const m of data.members || []) this.setReceipt(id, m.user, m.delivered, m.read, false);
    this.emit();
  }

  /**
   * Status of one of our messages: pending, failed, sent, delivered or read
   * (delivered / read by every other member), with counts for groups.
   */
  tick(id, msg) {
    if (msg.failed) return { state: 'failed', text: `Not sent: ${msg.failed}`, final: !!msg.final };
    if (msg.pending) return { state: 'pending', text: 'Sending…' };
    const c = this.convs.get(id);
    const others = (c?.members || []).filter((u) => u !== this.me);
    const r = this.receipts.get(id) || new Map();
    let delivered = 0, read = 0;
    for (const u of others) {
      const x = r.get(u);
      if (x && x.read >= msg.seq) read++;
      if (x && x.delivered >= msg.seq) delivered++;
    }
    const n = others.length;
    const detail = c?.type === 'group' ? ` · delivered to ${delivered} of ${n}, read by ${read} of ${n}` : '';
    if (n && read === n) return { state: 'read', text: 'Read' + detail };
    if (n && delivered === n) return { state: 'delivered', text: 'Delivered' + detail };
    return { state: 'sent', text: 'Sent' + detail };
  }

  // ---- presence and typing ------------------------------------------------

  setPresence(user, online, lastSeen) {
    this.presence.set(user, { online, last_seen: lastSeen || 0 });
    this.emit();
  }

  setTyping(id, user) {
    let t = this.typing.get(id);
    if (!t) { t = new Map(); this.typing.set(id, t); }
    t.set(user, Date.now() + TYPING_SHOW_MS);
    this.emit();
  }

  clearTyping(id, user) {
    const t = this.typing.get(id);
    if (t && t.delete(user)) this.emit();
  }

  /** Users typing in a conversation right now. */
  typingUsers(id) {
    const t = this.typing.get(id);
    if (!t) return [];
    const now = Date.now();
    const out = [];
    for (const [u, until] of t) {
      if (until > now) out.push(u);
      else t.delete(u);
    }
    return out;
  }

  /** The next moment a typing indicator runs out (to schedule a re-render), or 0. */
  nextTypingExpiry() {
    let next = 0;
    for (const t of this.typing.values())
      for (const until of t.values()) if (until > Date.now() && (!next || until < next)) next = until;
    return next;
  }
}

// ---- device keys ------------------------------------------------------------
// The `device_key` of each user's last login in this browser (docs/protocol.md
// "Failed logins and known devices"), presented at the next login so that
// strangers' failed logins do not delay it. Kept after a logout.

const DEVICE_KEY_PREFIX = 'parley.device_key.';
const DEVICE_KEY_RE = /^[A-Za-z0-9_-]{1,63}$/;

/** The key kept for user, or null (none, or not a key). */
export function loadDeviceKey(user) {
  try {
    const k = localStorage.getItem(DEVICE_KEY_PREFIX + user);
    return typeof k === 'string' && DEVICE_KEY_RE.test(k) ? k : null;
  } catch { return null; }
}

/** Keeps the key of user's new device (ignored unless it is a key). */
export function saveDeviceKey(user, key) {
  if (typeof user !== 'string' || !user || typeof key !== 'string' || !DEVICE_KEY_RE.test(key)) return;
  try { localStorage.setItem(DEVICE_KEY_PREFIX + user, key); } catch { /* storage full: next time without */ }
}
