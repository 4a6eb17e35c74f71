#include "chat/proto.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sodium.h>
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
    if ((err == ERR_BUSY || err == ERR_UNAVAILABLE) && retry_ms < 0) retry_ms = 1000;
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

/* Tells everyone in `to` that the user went on/offline (lossy lane). */
static void announce(chat *ch, audience *to, const char *name, bool online, int64_t ts)
{
    event *ev = to && to->n ? chat_presence_event(name, online, ts) : NULL;
    if (ev) hub_send_lossy(ch->hub, to, ev, 0);
    event_unref(ev);
}

/* A WebSocket upgrade waiting for its token check on the read pool. The
 * connection is held (conn_hold): no 101 and no frame is read before
 * upgrade_done() completes the handshake or refuses it on the connection's
 * thread, with the answers a check on the loop gave. The same job reads
 * the user's contacts and their presence, which on_open() sends right
 * after the hello, as before. */
typedef struct upgrade_job {
    pool_job job;            /* first */
    chat *ch;
    uint64_t conn;
    bool keep_alive;
    char token[64];          /* wiped once checked */
    size_t token_len;
    char key[32];            /* Sec-WebSocket-Key, a copy (24 characters) */
    size_t key_len;
    const char *protocol;    /* the chosen subprotocol (the router's static list), or NULL */
    int rc;                  /* the token check */
    chat_ident id;
    audience *contacts;      /* who shares a conversation with the user (one ref), or NULL */
    event **tell;            /* their presence, for the new session (a ref each) */
    uint32_t ntell;
    int remote;              /* the user's sessions on other nodes (--bus; 0 when unknown) */
} upgrade_job;

/* The upgrade being completed on this thread, for on_open(): set around
 * conn_upgrade() by upgrade_done(). */
static _Thread_local upgrade_job *opening;

static void upgrade_free(upgrade_job *u)
{
    for (uint32_t i = 0; i < u->ntell; i++) event_unref(u->tell[i]);
    free(u->tell);
    audience_unref(u->contacts);
    sodium_memzero(u->token, sizeof u->token);
    free(u);
}

/* On the read pool: the token, then the contacts and their presence. */
static void upgrade_run(pool_job *j)
{
    upgrade_job *u = (upgrade_job *)j;
    chat *ch = u->ch;
    u->rc = chat_authenticate(ch, u->token, u->token_len, &u->id);
    sodium_memzero(u->token, sizeof u->token);
    if (u->rc < 0) return;
    /* Connections per user count over the cluster; without the bus's
     * answer, this node's alone. */
    if (ch->bus && bus_remote_sessions(ch->bus, u->id.uid, &u->remote) < 0) u->remote = 0;
    u->contacts = chat_contacts(ch, u->id.uid);
    uint32_t n = u->contacts ? u->contacts->n : 0;
    db_user *usr = n ? calloc(n, sizeof *usr) : NULL;
    bool *on = n ? calloc(n, sizeof *on) : NULL;
    if (!usr || !on || !(u->tell = calloc(n, sizeof *u->tell)) ||
        db_users(ch->db, u->contacts->uids, n, usr) < 0) {
        free(usr);
        free(on);
        return;
    }
    /* Online: a session here, or (--bus) on any node of the roster. */
    if (ch->bus && bus_online(ch->bus, u->contacts->uids, n, on) < 0) memset(on, 0, n * sizeof *on);
    int64_t now = chat_now_ms();
    for (uint32_t i = 0; i < n; i++) {
        if (!usr[i].id) continue;
        on[i] = on[i] || hub_online(ch->hub, usr[i].id);
        event *ev = chat_presence_event(usr[i].name, on[i], on[i] ? now : usr[i].last_seen);
        if (ev) u->tell[u->ntell++] = ev;
    }
    free(on);
    free(usr);
}

/* On the connection's thread (still held, CONN_HTTP). */
static void finish_upgrade(conn *c, upgrade_job *u)
{
    chat *ch = u->ch;
    if (c->t->stopping) { /* the stop began while the token was checked */
        api_send_error(c, u->keep_alive, false, ERR_STOPPING, NULL, "Retry-After: 1\r\n", -1);
        return;
    }
    if (u->rc == ERR_OK &&
        hub_sessions(ch->hub, u->id.uid) + u->remote >= (int)ch->cfg->max_user_conns) {
        metrics_inc(&c->t->m, M_RATE_LIMITED);
        api_send_error(c, u->keep_alive, false, ERR_TOO_MANY_CONNECTIONS, NULL,
                       "Retry-After: 10\r\n", -1);
        return;
    }
    if (u->rc < 0) {
        api_send_error(c, u->keep_alive, false,
                       u->rc == ERR_IO || u->rc == ERR_UNAVAILABLE ? u->rc : ERR_AUTH, NULL, NULL, -1);
        return;
    }
    ws_session *w = conn_user(c);
    memset(w, 0, sizeof *w);
    keep_addr(w, c);
    session *s = &w->s;
    s->uid = u->id.uid;
    s->device = u->id.device;
    s->expires = u->id.expires;
    s->msgs.at = (uint32_t)srv_now(c->t);
    memcpy(&s->token_key, u->id.token_hash, sizeof s->token_key);
    memcpy(s->name, u->id.name, sizeof s->name);
    ws_handshake hs = {{u->key, u->key_len}, u->protocol};
    opening = u;
    int rc = conn_upgrade(c, &hs);
    opening = NULL;
    if (rc < 0) conn_abort(c);
}

static void upgrade_done(srv_thread *t, void *arg)
{
    upgrade_job *u = arg;
    conn *c = t ? srv_conn(t, u->conn) : NULL;
    if (c && c->state == CONN_HTTP) finish_upgrade(c, u);
    if (c) conn_resume(c); /* the frames sent after the request, or the next request */
    upgrade_free(u);
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
    upgrade_job *u = n > 0 && hs->key.n <= sizeof u->key ? calloc(1, sizeof *u) : NULL;
    if (!u) {
        sodium_memzero(token, sizeof token);
        if (n > 0) { conn_abort(c); return; } /* out of memory */
        api_send_error(c, req->keep_alive, false, ERR_AUTH, NULL, NULL, -1);
        return;
    }
    u->job.run = upgrade_run;
    u->job.done = upgrade_done;
    u->job.t = c->t;
    u->ch = ch;
    u->conn = c->id;
    u->keep_alive = req->keep_alive;
    memcpy(u->token, token, (size_t)n);
    u->token_len = (size_t)n;
    sodium_memzero(token, sizeof token);
    memcpy(u->key, hs->key.p, hs->key.n);
    u->key_len = hs->key.n;
    u->protocol = hs->protocol;
    if (pool_submit(ch->reads, &u->job) < 0) {
        upgrade_free(u);
        api_send_error(c, req->keep_alive, false, ERR_BUSY, NULL, NULL, -1);
        return;
    }
    conn_hold(c); /* the handshake waits for the check */
}

/* A connection's id as logs show it: with --bus qualified by the node
 * (`chat-1/42`), so that ids from several nodes' logs never meet. */
static const char *conn_name(conn *c, char *buf, size_t cap)
{
    chat *ch = chat_of(c->t);
    if (ch->bus) snprintf(buf, cap, "%s/%llu", ch->node, (unsigned long long)c->id);
    else snprintf(buf, cap, "%llu", (unsigned long long)c->id);
    return buf;
}

static int on_open(conn *c)
{
    session *s = conn_user(c);
    chat *ch = chat_of(c->t);
    s->sink = &ws_sink;
    s->id = c->id;
    metrics_inc(&c->t->m, M_SESSIONS_OPENED);
    if (log_enabled(LOG_DEBUG)) {
        char addr[64], id[96];
        log_write(LOG_DEBUG, "ws open", "conn=%s user=%s device=%u addr=%s", conn_name(c, id, sizeof id),
                  s->name, (unsigned)s->device, addr_name((ws_session *)s, addr, sizeof addr));
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
    /* Its channel and its count in the cluster's roster: the bus says when
     * the user comes online over the cluster (bus.h ops->presence). */
    if (ch->bus) bus_touch(ch->bus, s->uid);
    send_json(c, &j);
    if (c->state != CONN_WS) return ERR_OK; /* closed while saying hello: s is released */
    upgrade_job *u = opening; /* its contacts and their presence, read on the pool */
    if (!u) return ERR_OK;
    if (first && !ch->bus) announce(ch, u->contacts, s->name, true, chat_now_ms());
    for (uint32_t i = 0; i < u->ntell && c->state == CONN_WS; i++) s->sink->send_lossy(s, u->tell[i]);
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
    char addr[64], why[200], id[96];
    log_write(level, "ws close", "conn=%s user=%s device=%u addr=%s code=%u reason=%s by=%s",
              conn_name(c, id, sizeof id), w->s.name, (unsigned)w->s.device,
              addr_name(w, addr, sizeof addr), (unsigned)code,
              log_value(why, sizeof why, reason, strlen(reason)), by_peer ? "client" : "server");
}

/* The user's last session closed: the contacts are read and told on the
 * read pool (no answer comes back). Offline and online announcements of
 * one user leave in the order of the sessions' opens and closes: an online
 * one is sent on the I/O thread before the session can close, and this one
 * checks that the user did not come back meanwhile. */
typedef struct offline_job {
    pool_job job;            /* first */
    chat *ch;
    uint64_t uid;
    int64_t ts;
    char name[sizeof ((session *)0)->name];
} offline_job;

static void offline_run(pool_job *j)
{
    offline_job *o = (offline_job *)j;
    hub *h = o->ch->hub;
    if (hub_online(h, o->uid)) return; /* back already: the new session told them */
    audience *to = chat_contacts(o->ch, o->uid);
    announce(o->ch, to, o->name, false, o->ts);
    /* Back while this was on its way: the new session's "online" may have
     * gone out before this "offline"; it is said again after it. */
    if (hub_online(h, o->uid)) announce(o->ch, to, o->name, true, chat_now_ms());
    audience_unref(to);
}

static void offline_done(srv_thread *t, void *arg)
{
    free(arg); /* t is NULL: run on the pool */
}

static void announce_offline(chat *ch, session *s, int64_t ts)
{
    offline_job *o = calloc(1, sizeof *o);
    if (!o) return; /* lossy */
    o->job.run = offline_run;
    o->job.done = offline_done;
    o->ch = ch;
    o->uid = s->uid;
    o->ts = ts;
    memcpy(o->name, s->name, sizeof o->name);
    /* The session was admitted: its end is told even when the pool is full. */
    if (pool_continue(ch->reads, &o->job) < 0) free(o);
}

static void on_close(conn *c, uint16_t code, const char *reason, bool by_peer)
{
    session *s = conn_user(c);
    log_close(c, (ws_session *)s, code, reason, by_peer); /* before it is counted */
    metrics_inc(&c->t->m, M_SESSIONS_CLOSED);
    chat *ch = chat_of(c->t);
    bool last = hub_session_remove(ch->hub, c->t, s);
    if (ch->bus) bus_touch(ch->bus, s->uid); /* the bus tells of the user's last one anywhere */
    if (last) {
        int64_t now = chat_now_ms();
        if (!ch->bus) announce_offline(ch, s, now);
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
        chat_user_msg(f->ch, f->s->uid, &retry) < 0) {
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

/* A frame answered from the read pool (sync, inbox, typing). The
 * connection is held (conn_hold) until read_done() has answered on its
 * thread, so its frames are still handled one after the other and answered
 * in the order they came (a later send or ping waits for the page), and
 * no read runs on the I/O thread. */
typedef struct read_job {
    pool_job job;            /* first */
    chat *ch;
    uint64_t conn;
    uint64_t uid;
    uint64_t at;             /* typing: the frame's loop time */
    msg_req r;               /* the frame (no body) */
    int rc;                  /* ERR_OK, or the error to answer */
    const char *message;     /* its message (static), NULL: the row's */
    bool quiet;              /* typing: nothing to answer, nothing to relay */
    jbuf j;                  /* sync, inbox: the whole answer */
    audience *to;            /* typing: the other members (one ref) */
} read_job;

static void sync_run(pool_job *job)
{
    read_job *x = (read_job *)job;
    uint64_t conv = x->r.conv;
    const char *ref = x->r.ref;
    chat_settle(x->ch, conv);
    jbuf *j = &x->j;
    jb_init(j, 4096);
    jb_lit(j, "{\"type\":\"history\",\"conv\":");
    jb_u64(j, conv);
    if (*ref) { jb_lit(j, ",\"id\":"); jb_lit(j, ref); }
    jb_raw(j, ",", 1);
    int rc = chat_write_history(x->ch, conv, x->uid, x->r.after, x->r.before, (size_t)x->r.limit,
                                chat_page_bytes(x->ch), j);
    jb_raw(j, "}", 1);
    if (rc < 0) { jb_free(j); x->rc = rc == ERR_FORBIDDEN || rc == ERR_UNAVAILABLE ? rc : ERR_IO; }
}

static void inbox_run(pool_job *job)
{
    read_job *x = (read_job *)job;
    jbuf *j = &x->j;
    jb_init(j, 4096);
    jb_lit(j, "{\"type\":\"inbox\",");
    if (*x->r.ref) { jb_lit(j, "\"id\":"); jb_lit(j, x->r.ref); jb_raw(j, ",", 1); }
    jb_lit(j, "\"inbox\":");
    int rc = chat_write_inbox(x->ch, x->uid, x->r.changed_since, x->r.has_page ? &x->r.page : NULL,
                              (size_t)x->r.limit, chat_page_bytes(x->ch), j);
    if (rc < 0) {
        jb_free(j);
        if (rc == ERR_INVALID) {
            x->rc = rc;
            x->message = "'page' must be the 'next' of an earlier inbox page";
        } else {
            x->rc = rc == ERR_NOMEM || rc == ERR_UNAVAILABLE ? rc : ERR_IO;
        }
        return;
    }
    jb_raw(j, "}", 1);
}

static void typing_run(pool_job *job)
{
    read_job *x = (read_job *)job;
    audience *a = NULL;
    int rc = db_members(x->ch->db, x->r.conv, x->uid, &a);
    if (rc < 0) {
        if (rc == ERR_FORBIDDEN) x->rc = rc;
        else x->quiet = true;
        return;
    }
    uint32_t k = 0; /* the other members */
    for (uint32_t i = 0; i < a->n; i++)
        if (a->uids[i] != x->uid) a->uids[k++] = a->uids[i];
    a->n = k;
    x->to = a;
}

/* The typing frame's relay, once its members are known. */
static void relay_typing(conn *c, read_job *x)
{
    session *s = conn_user(c);
    uint64_t conv = x->r.conv;
    s->typing_conv = conv;
    s->typing_at = x->at;
    char buf[160];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"typing\",\"conv\":%llu,\"user\":\"%s\"}",
                     (unsigned long long)conv, s->name); /* names need no escaping */
    event *ev = event_new(EV_TYPING, conv, 0, rbuf_copy(buf, (size_t)n));
    if (ev) hub_send_lossy(x->ch->hub, x->to, ev, s->id);
    event_unref(ev);
}

/* On the connection's thread: the answer, then the next frames. */
static void read_done(srv_thread *t, void *arg)
{
    read_job *x = arg;
    conn *c = t ? srv_conn(t, x->conn) : NULL;
    if (c && c->state == CONN_WS) {
        if (x->rc < 0) send_error(c, x->rc, x->message, x->r.ref);
        else if (x->r.type == MSG_TYPING) { if (!x->quiet) relay_typing(c, x); }
        else send_page(c, &x->j);
    }
    if (c) {
        /* A page that filled half the queue keeps input paused until it
         * has drained (send_page); anything else reads on at once. */
        if (c->state == CONN_WS && c->out_bytes > x->ch->cfg->max_queue / 2) conn_unhold(c);
        else conn_resume(c);
    }
    jb_free(&x->j);
    audience_unref(x->to);
    free(x);
}

/* Queues the frame's read and holds the connection. A full pool answers
 * busy (typing, a lossy frame, is dropped instead). */
static void submit_read(frame_ctx *f, void (*run)(pool_job *))
{
    read_job *x = calloc(1, sizeof *x);
    if (!x) { send_error(f->c, ERR_NOMEM, NULL, f->r.ref); return; }
    x->job.run = run;
    x->job.done = read_done;
    x->job.t = f->c->t;
    x->ch = f->ch;
    x->conn = f->c->id;
    x->uid = f->s->uid;
    x->at = srv_now(f->c->t);
    x->r = f->r;
    x->r.body = NULL;
    if (pool_submit(f->ch->reads, &x->job) < 0) {
        free(x);
        if (f->r.type != MSG_TYPING) send_error(f->c, ERR_BUSY, NULL, f->r.ref);
        return;
    }
    conn_hold(f->c);
}

static void on_sync(frame_ctx *f)
{
    submit_read(f, sync_run);
}

static void on_inbox(frame_ctx *f)
{
    submit_read(f, inbox_run);
}

static void on_typing(frame_ctx *f)
{
    session *s = f->s;
    uint64_t now = srv_now(f->c->t);
    if (s->typing_conv == f->r.conv && now - s->typing_at < TYPING_MIN_MS) return; /* lossy lane */
    submit_read(f, typing_run);
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
