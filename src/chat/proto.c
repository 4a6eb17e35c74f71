#include "chat/proto.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "chat/api.h"
#include "chat/chat.h"
#include "net/conn.h"
#include "chat/guard.h"
#include "base/err.h"
#include "chat/hub.h"
#include "codec/json.h"
#include "base/log.h"
#include "codec/msg.h"

/* A client's cmid is copied from the frame (msg.h) into the op (store.h). */
_Static_assert(MSG_CMID_MAX == STORE_CMID_MAX, "cmid limits of the codec and the store differ");

#define TYPING_MIN_MS 1000  /* relay at most one typing per sender and conversation per second */

/* A WebSocket session: the hub's session, and the peer's address kept for
 * the close log line (a peer that reset the connection has none by then).
 * It lives in its conn (conn_user: proto_ws_ops.user_size). */
typedef struct ws_session {
    session s;               /* first: conn_user(c) is both */
    uint8_t ip[16];          /* IPv4 in the first 4 bytes */
    uint16_t port;
    uint8_t family;          /* AF_INET, AF_INET6, or 0: unknown */
} ws_session;

static void keep_addr(ws_session *w, conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        memcpy(w->ip, &a->sin_addr, 4);
        w->port = a->sin_port;
        w->family = AF_INET;
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        memcpy(w->ip, &a->sin6_addr, 16);
        w->port = a->sin6_port;
        w->family = AF_INET6;
    }
}

static const char *addr_name(const ws_session *w, char *buf, size_t n)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (w->family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        memcpy(&a->sin_addr, w->ip, 4);
        a->sin_port = w->port;
    } else if (w->family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        memcpy(&a->sin6_addr, w->ip, 16);
        a->sin6_port = w->port;
    }
    return conn_addr_name(&ss, buf, n);
}

/* ---- the WebSocket sink --------------------------------------------------- */

/* Sends a text payload (taken over) to c as one frame. */
static void send_frame(conn *c, rbuf *payload)
{
    if (!payload) { conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory"); return; }
    if (conn_send_frame(c, WS_OP_TEXT, payload) == ERR_FULL)
        conn_close_ws(c, WS_CLOSE_TRY_AGAIN, "output queue full: resume with sync");
    rbuf_unref(payload);
}

static void send_json(conn *c, jbuf *j)
{
    send_frame(c, jb_take(j));
}

/* A page (history, inbox) answers a request: once the output queue is over
 * half full, the connection stops reading requests until it has drained, so
 * a client that asks for many pages at once is paced by TCP instead of
 * passing --max-queue (each page is at most a quarter of it). */
static void send_page(conn *c, jbuf *j)
{
    send_json(c, j);
    if (c->state == CONN_WS && c->out_bytes > chat_of(c->t)->cfg->max_queue / 2) conn_pause(c);
}

static int ws_sink_send(session *s, event *ev)
{
    conn *c = conn_of_user(s);
    int rc = conn_send_frame(c, WS_OP_TEXT, ev->enc[EV_ENC_JSON]);
    if (rc == ERR_FULL) conn_close_ws(c, WS_CLOSE_TRY_AGAIN, "output queue full: resume with sync");
    else if (rc == ERR_OK && ev->kind == EV_MSG) metrics_inc(&c->t->m, M_MSGS_DELIVERED);
    return rc;
}

static void ws_sink_send_lossy(session *s, event *ev)
{
    conn_send_frame_lossy(conn_of_user(s), WS_OP_TEXT, ev->enc[EV_ENC_JSON]);
}

static void ws_sink_close(session *s, uint16_t code, const char *reason)
{
    conn_close_ws(conn_of_user(s), code, reason);
}

static const sink_ops ws_sink = {ws_sink_send, ws_sink_send_lossy, ws_sink_close};

/* {"type":"error","code":...,"message":...,"ref":...} for err (its row of
 * the error table, err.h); message NULL: the row's; ref is raw JSON or "".
 * retry_ms >= 0 adds "retry_after_ms" (busy always has one). */
static void send_fail(conn *c, int err, const char *message, const char *ref, long retry_ms)
{
    const err_info *e = err_info_of(err);
    jbuf j;
    jb_init(&j, 160);
    jb_lit(&j, "{\"type\":\"error\",\"code\":\"");
    jb_lit(&j, e->code);
    jb_lit(&j, "\",\"message\":");
    jb_cstr(&j, message ? message : e->message);
    if (err == ERR_BUSY && retry_ms < 0) retry_ms = 1000;
    if (retry_ms >= 0) {
        jb_lit(&j, ",\"retry_after_ms\":");
        jb_u64(&j, (uint64_t)retry_ms);
    }
    if (ref && *ref) {
        jb_lit(&j, ",\"ref\":");
        jb_lit(&j, ref);
    }
    jb_raw(&j, "}", 1);
    metrics_error(&c->t->m, err);
    send_json(c, &j);
}

static void send_error(conn *c, int err, const char *message, const char *ref)
{
    send_fail(c, err, message, ref, -1);
}

/* ---- session lifecycle ------------------------------------------------------ */

/* Tells every contact of the session's user that they went on/offline. */
static void announce(chat *ch, session *s, bool online, int64_t ts)
{
    audience *to = chat_contacts(ch, s->uid);
    event *ev = to && to->n ? chat_presence_event(s->name, online, ts) : NULL;
    if (ev) hub_send_lossy(ch->hub, to, ev, 0);
    event_unref(ev);
    audience_unref(to);
}

/* The new session learns its contacts' presence. */
static void tell_contacts(chat *ch, conn *c, session *s)
{
    audience *to = chat_contacts(ch, s->uid);
    store_txn *txn;
    if (!to || store_begin(ch->st, false, &txn) < 0) { audience_unref(to); return; }
    for (uint32_t i = 0; i < to->n && c->state == CONN_WS; i++) {
        store_user u;
        if (store_user_get(txn, to->uids[i], &u) < 0) continue;
        bool on = hub_online(ch->hub, u.id);
        event *ev = chat_presence_event(u.name, on, on ? chat_now_ms() : u.last_seen);
        if (ev) s->sink->send_lossy(s, ev);
        event_unref(ev);
    }
    store_abort(txn);
    audience_unref(to);
}

void proto_upgrade(conn *c, const http_request *req, const ws_handshake *hs)
{
    chat *ch = chat_of(c->t);
    char token[64];
    int n = ERR_NOT_FOUND;
    const http_str *auth = http_header_get(req, "Authorization");
    if (auth && auth->n > 7 && strncasecmp(auth->p, "Bearer ", 7) == 0 && auth->n - 7 < sizeof token) {
        n = (int)(auth->n - 7);
        memcpy(token, auth->p + 7, (size_t)n);
    } else {
        n = http_query_get(req->query, "token", token, sizeof token);
    }
    chat_ident id;
    int rc = n > 0 ? chat_authenticate(ch, token, (size_t)n, &id) : ERR_AUTH;
    if (rc == ERR_OK && hub_sessions(ch->hub, id.uid) >= (int)ch->cfg->max_user_conns) {
        metrics_inc(&c->t->m, M_RATE_LIMITED);
        api_send_error(c, req->keep_alive, false, ERR_TOO_MANY_CONNECTIONS, NULL,
                       "Retry-After: 10\r\n", -1);
        return;
    }
    if (rc < 0) {
        api_send_error(c, req->keep_alive, false, rc == ERR_IO ? ERR_IO : ERR_AUTH, NULL, NULL, -1);
        return;
    }
    ws_session *w = conn_user(c);
    memset(w, 0, sizeof *w);
    keep_addr(w, c);
    session *s = &w->s;
    s->uid = id.uid;
    s->device = id.device;
    s->expires = id.expires;
    s->msgs.at = (uint32_t)srv_now(c->t);
    memcpy(&s->token_key, id.token_hash, sizeof s->token_key);
    memcpy(s->name, id.name, sizeof s->name);
    if (conn_upgrade(c, hs) < 0) conn_abort(c);
}

static int on_open(conn *c)
{
    session *s = conn_user(c);
    chat *ch = chat_of(c->t);
    s->sink = &ws_sink;
    s->id = c->id;
    metrics_inc(&c->t->m, M_SESSIONS_OPENED);
    if (log_enabled(LOG_DEBUG)) {
        char addr[64];
        log_write(LOG_DEBUG, "ws open", "conn=%llu user=%s device=%u addr=%s",
                  (unsigned long long)c->id, s->name, (unsigned)s->device,
                  addr_name((ws_session *)s, addr, sizeof addr));
    }
    jbuf j;
    jb_init(&j, 96);
    jb_lit(&j, "{\"type\":\"hello\",\"user\":");
    jb_cstr(&j, s->name);
    jb_lit(&j, ",\"device\":");
    jb_u64(&j, s->device);
    jb_lit(&j, ",\"ts\":");
    jb_i64(&j, chat_now_ms());
    jb_lit(&j, ",\"max_text\":");
    jb_u64(&j, ch->cfg->max_text);
    jb_raw(&j, "}", 1);
    /* Registered before the hello: if saying hello closes the connection
     * (out of memory), on_close removes and frees the session as usual. */
    bool first = hub_session_add(ch->hub, c->t, s);
    send_json(c, &j);
    if (c->state != CONN_WS) return ERR_OK; /* closed while saying hello: s is released */
    if (first) announce(ch, s, true, chat_now_ms());
    tell_contacts(ch, c, s);
    return ERR_OK;
}

/* One line per WebSocket close. Normal ends (1000; 1001 from the client
 * or at the server's own stop) are debug; everything else (policy 1008,
 * try-again 1013, protocol errors, keepalive timeouts, 1006: gone without
 * a close frame) is info, so the default level shows what went wrong
 * without a line per ordinary disconnect. */
static void log_close(conn *c, const ws_session *w, uint16_t code, const char *reason, bool by_peer)
{
    bool normal = code == WS_CLOSE_NORMAL ||
                  (code == WS_CLOSE_GOING_AWAY && (by_peer || c->t->stopping));
    enum log_level level = normal ? LOG_DEBUG : LOG_INFO;
    if (!log_enabled(level)) return;
    char addr[64], why[200];
    log_write(level, "ws close", "conn=%llu user=%s device=%u addr=%s code=%u reason=%s by=%s",
              (unsigned long long)c->id, w->s.name, (unsigned)w->s.device,
              addr_name(w, addr, sizeof addr), (unsigned)code,
              log_value(why, sizeof why, reason, strlen(reason)), by_peer ? "client" : "server");
}

static void on_close(conn *c, uint16_t code, const char *reason, bool by_peer)
{
    session *s = conn_user(c);
    log_close(c, (ws_session *)s, code, reason, by_peer); /* before it is counted */
    metrics_inc(&c->t->m, M_SESSIONS_CLOSED);
    chat *ch = chat_of(c->t);
    if (hub_session_remove(ch->hub, c->t, s)) {
        int64_t now = chat_now_ms();
        announce(ch, s, false, now);
        chat_op *op = chat_op_new(ch, OP_LAST_SEEN, 0, NULL);
        if (op) {
            op->who.uid = s->uid;
            op->ts = now;
            if (chat_submit(op) < 0) chat_op_free(op); /* lossy */
        }
    }
}

static void send_rate_limited(conn *c, uint32_t retry_ms, const char *ref)
{
    send_fail(c, ERR_RATE, "slow down", ref, (long)retry_ms);
}

static void on_refused(conn *c, uint32_t retry_ms, const uint8_t *bytes, size_t len)
{
    const char *data = (const char *)bytes;
    /* Refusals are bounded per connection (CONN_MAX_STRIKES), so reading
     * the refused frame for its ref costs little. */
    msg_req r;
    const char *code, *message;
    msg_parse(data, len, chat_of(c->t)->cfg->max_text, &r, &code, &message);
    send_rate_limited(c, retry_ms, r.ref);
}

static bool on_tick(conn *c)
{
    session *s = conn_user(c);
    if (s->expires <= chat_now_ms()) {
        conn_close_ws(c, WS_CLOSE_POLICY, "token expired");
        return false;
    }
    return true;
}

/* ---- frames --------------------------------------------------------------------- */

typedef struct frame_ctx {
    conn *c;
    session *s;
    chat *ch;
    uint64_t arrived;  /* uv_hrtime() when the frame was handed to us */
    msg_req r;   /* the parsed frame */
} frame_ctx;

/* After the commit: ack or error to the sending connection. */
static void reply_send(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = t ? srv_conn(t, op->origin) : NULL;
    if (t && op->rc >= 0 && !op->duplicate) metrics_inc(&t->m, M_MSGS_SENT);
    if (c && c->state == CONN_WS) {
        if (op->rc >= 0) {
            jbuf j;
            jb_init(&j, 128);
            jb_lit(&j, "{\"type\":\"ack\",\"cmid\":");
            jb_str(&j, op->cmid, op->cmid_len);
            jb_lit(&j, ",\"conv\":");
            jb_u64(&j, op->conv);
            jb_lit(&j, ",\"seq\":");
            jb_u64(&j, op->seq);
            jb_lit(&j, ",\"ts\":");
            jb_i64(&j, op->ts);
            if (op->duplicate) jb_lit(&j, ",\"duplicate\":true");
            jb_raw(&j, "}", 1);
            send_json(c, &j);
            hist_observe(&t->m.send_ack, &hist_seconds, uv_hrtime() - op->arrived_ns);
        } else {
            send_error(c, op->rc, NULL, op->ref);
        }
    }
    chat_op_free(op);
}

/* Cursor updates answer only when refused. */
static void reply_cursor(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = t ? srv_conn(t, op->origin) : NULL;
    if (c && c->state == CONN_WS && op->rc < 0)
        send_error(c, op->rc, op->rc == ERR_INVALID ? "'seq' is beyond the conversation's last_seq"
                                                    : NULL, op->ref);
    chat_op_free(op);
}

static void submit(frame_ctx *f, chat_op *op)
{
    int rc = chat_submit(op);
    if (rc < 0) {
        send_error(f->c, rc, NULL, op->ref);
        chat_op_free(op);
    }
}

static void on_send(frame_ctx *f)
{
    /* A paused connection's sends are all refused (none overtakes a refused
     * one); else per connection, then per user over all devices. */
    const config *cfg = f->ch->cfg;
    tlimit l = {(float)cfg->rate_msgs, (float)cfg->rate_msgs * 4};
    uint32_t retry = 0;
    if (conn_paused(f->c) || !tb_take(&f->s->msgs, &l, srv_now(f->c->t), 1, &retry) ||
        guard_user_msg(f->ch->guard, f->s->uid, guard_now(), &retry) < 0) {
        if (conn_strike(f->c, &retry)) return;
        send_rate_limited(f->c, retry, f->r.ref);
        return;
    }
    conn_forgive(f->c);
    chat_op *op = chat_op_new(f->ch, OP_SEND, f->c->id, reply_send);
    if (!op || !(op->body = malloc(f->r.body_len))) {
        chat_op_free(op);
        send_error(f->c, ERR_NOMEM, NULL, f->r.ref);
        return;
    }
    memcpy(op->cmid, f->r.cmid, f->r.cmid_len + 1);
    op->cmid_len = f->r.cmid_len;
    memcpy(op->body, f->r.body, f->r.body_len);
    op->body_len = f->r.body_len;
    op->conv = f->r.conv;
    op->who.uid = f->s->uid;
    memcpy(op->who.name, f->s->name, sizeof op->who.name);
    memcpy(op->ref, f->r.ref, sizeof op->ref);
    op->arrived_ns = f->arrived;
    submit(f, op);
}

static void on_cursor(frame_ctx *f, bool read)
{
    chat_op *op = chat_op_new(f->ch, OP_CURSOR, f->c->id, reply_cursor);
    if (!op) { send_error(f->c, ERR_NOMEM, NULL, f->r.ref); return; }
    op->conv = f->r.conv;
    op->delivered = f->r.seq;
    op->read = read ? f->r.seq : 0;
    op->accept = read;
    op->who.uid = f->s->uid;
    memcpy(op->who.name, f->s->name, sizeof op->who.name);
    memcpy(op->ref, f->r.ref, sizeof op->ref);
    submit(f, op);
}

static void on_sync(frame_ctx *f)
{
    uint64_t conv = f->r.conv;
    const char *ref = f->r.ref;
    chat_settle(f->ch, conv);
    store_txn *txn;
    if (store_begin(f->ch->st, false, &txn) < 0) { send_error(f->c, ERR_IO, NULL, ref); return; }
    store_member m;
    if (store_member_get(txn, conv, f->s->uid, &m) < 0) {
        store_abort(txn);
        send_error(f->c, ERR_FORBIDDEN, NULL, ref);
        return;
    }
    jbuf j;
    jb_init(&j, 4096);
    jb_lit(&j, "{\"type\":\"history\",\"conv\":");
    jb_u64(&j, conv);
    if (*ref) { jb_lit(&j, ",\"id\":"); jb_lit(&j, ref); }
    jb_raw(&j, ",", 1);
    int rc = chat_write_history(f->ch, txn, conv, f->r.after, f->r.before, (size_t)f->r.limit,
                                chat_page_bytes(f->ch), &j);
    jb_raw(&j, "}", 1);
    store_abort(txn);
    if (rc < 0) { jb_free(&j); send_error(f->c, ERR_IO, NULL, ref); return; }
    send_page(f->c, &j);
}

static void on_inbox(frame_ctx *f)
{
    jbuf j;
    jb_init(&j, 4096);
    jb_lit(&j, "{\"type\":\"inbox\",");
    if (*f->r.ref) { jb_lit(&j, "\"id\":"); jb_lit(&j, f->r.ref); jb_raw(&j, ",", 1); }
    jb_lit(&j, "\"inbox\":");
    int rc = chat_write_inbox(f->ch, f->s->uid, f->r.changed_since,
                              f->r.has_page ? &f->r.page : NULL, (size_t)f->r.limit,
                              chat_page_bytes(f->ch), &j);
    if (rc < 0) {
        jb_free(&j);
        if (rc == ERR_INVALID)
            send_error(f->c, rc, "'page' must be the 'next' of an earlier inbox page", f->r.ref);
        else
            send_error(f->c, rc == ERR_NOMEM ? rc : ERR_IO, NULL, f->r.ref);
        return;
    }
    jb_raw(&j, "}", 1);
    send_page(f->c, &j);
}

typedef struct typing_ctx {
    uint64_t self;
    audience *a;
    uint32_t cap;            /* the audience's room (nmembers may be stale) */
} typing_ctx;

static int typing_member(void *arg, const store_member *m)
{
    typing_ctx *x = arg;
    if (m->uid == x->self) return 0;
    if (x->a->n == x->cap) return 1; /* more members than counted: the rest miss one typing */
    x->a->uids[x->a->n++] = m->uid;
    return 0;
}

static void on_typing(frame_ctx *f)
{
    uint64_t conv = f->r.conv;
    session *s = f->s;
    uint64_t now = srv_now(f->c->t);
    if (s->typing_conv == conv && now - s->typing_at < TYPING_MIN_MS) return; /* lossy lane */
    store_txn *txn;
    if (store_begin(f->ch->st, false, &txn) < 0) return;
    store_member m;
    store_conv cv;
    if (store_member_get(txn, conv, s->uid, &m) < 0 || store_conv_get(txn, conv, &cv) < 0) {
        store_abort(txn);
        send_error(f->c, ERR_FORBIDDEN, NULL, f->r.ref);
        return;
    }
    typing_ctx x = {s->uid, audience_new(cv.nmembers), cv.nmembers};
    if (x.a) {
        x.a->n = 0;
        store_members(txn, conv, typing_member, &x);
    }
    store_abort(txn);
    if (!x.a) return;
    s->typing_conv = conv;
    s->typing_at = now;
    char buf[160];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"typing\",\"conv\":%llu,\"user\":\"%s\"}",
                     (unsigned long long)conv, s->name); /* names need no escaping */
    event *ev = event_new(EV_TYPING, conv, 0, rbuf_copy(buf, (size_t)n));
    if (ev) hub_send_lossy(f->ch->hub, x.a, ev, s->id);
    event_unref(ev);
    audience_unref(x.a);
}

static void on_message(conn *c, const uint8_t *bytes, size_t len)
{
    const char *data = (const char *)bytes;
    frame_ctx f;
    f.arrived = uv_hrtime();
    f.c = c;
    f.s = conn_user(c);
    f.ch = chat_of(c->t);
    const char *code, *message;
    int rc = msg_parse(data, len, f.ch->cfg->max_text, &f.r, &code, &message);
    if (rc < 0) {
        send_error(c, rc, message, f.r.ref);
        return;
    }
    if (f.r.type != MSG_SEND) conn_forgive(c); /* a send is forgiven once it passes its limits */
    switch (f.r.type) {
    case MSG_SEND: on_send(&f); break;
    case MSG_SYNC: on_sync(&f); break;
    case MSG_DELIVERED: on_cursor(&f, false); break;
    case MSG_READ: on_cursor(&f, true); break;
    case MSG_TYPING: on_typing(&f); break;
    case MSG_INBOX: on_inbox(&f); break;
    case MSG_PING: send_frame(c, rbuf_copy("{\"type\":\"pong\"}", 15)); break;
    case MSG_ECHO: send_frame(c, rbuf_copy(data, len)); break;
    }
}

const conn_ws_ops proto_ws_ops = {
    .user_size = sizeof(ws_session),
    .on_open = on_open,
    .on_message = on_message,
    .on_refused = on_refused,
    .on_tick = on_tick,
    .on_close = on_close,
};
