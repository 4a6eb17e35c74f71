#include "net/conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "codec/http.h"
#include "base/log.h"
#include "net/tls.h"

/* conn.flags */
#define F_FLUSH     0x01 /* linked in t->flush_head */
#define F_RX        0x02 /* a frame arrived since the last keepalive check */
#define F_REQ_TIMER 0x04 /* the timer is the request deadline (HTTP) */
#define F_SHUT      0x08 /* FIN sent (uv_shutdown) */
#define F_NO_INPUT  0x10 /* input is discarded (lingering) */
#define F_PAUSED    0x20 /* reading stopped (conn_pause) */
#define F_HELD      0x40 /* paused for an async request: conn_resume() only */
#define F_UPGRADED  0x80 /* became a WebSocket (no longer pending) */

#define MAX_IOV 128 /* two per frame (header, payload): 64 frames per writev */

/* One queued write: an optional framing header (a transport's few bytes,
 * e.g. a WebSocket frame header) written ahead of a shared payload in the
 * same writev, so a payload encoded once is never copied per recipient. */
struct out_node {
    out_node *next;
    rbuf *b;                   /* the payload (a reference), or NULL */
    uint32_t off;              /* bytes of hdr, then of b, already written */
    uint8_t hlen;              /* header bytes in hdr */
    uint8_t hdr[WS_MAX_HEADER];
};

static size_t node_len(const out_node *n) { return n->hlen + (n->b ? n->b->len : 0); }

typedef struct conn_wreq {
    uv_write_t req;
    size_t bytes;
} conn_wreq;

/* ---- helpers ------------------------------------------------------------ */

static const srv_options *opt_of(const conn *c) { return &c->t->srv->opt; }

static void flush_link(conn *c)
{
    if (c->flags & F_FLUSH || c->wreq) return;
    srv_thread *t = c->t;
    c->flags |= F_FLUSH;
    c->fprev = NULL;
    c->fnext = t->flush_head;
    if (t->flush_head) t->flush_head->fprev = c;
    t->flush_head = c;
}

static void flush_unlink(conn *c)
{
    if (!(c->flags & F_FLUSH)) return;
    if (c->fprev) c->fprev->fnext = c->fnext;
    else c->t->flush_head = c->fnext;
    if (c->fnext) c->fnext->fprev = c->fprev;
    c->fprev = c->fnext = NULL;
    c->flags &= (uint8_t)~F_FLUSH;
}

static out_node *node_get(srv_thread *t)
{
    out_node *n = t->free_nodes;
    if (n) { t->free_nodes = n->next; return n; }
    return malloc(sizeof *n);
}

static void node_put(srv_thread *t, out_node *n)
{
    n->next = t->free_nodes;
    t->free_nodes = n;
}

void conn_free_nodes(srv_thread *t)
{
    while (t->free_nodes) {
        out_node *n = t->free_nodes;
        t->free_nodes = n->next;
        free(n);
    }
}

static void out_clear(conn *c)
{
    while (c->out_head) {
        out_node *n = c->out_head;
        c->out_head = n->next;
        rbuf_unref(n->b);
        node_put(c->t, n);
    }
    c->out_tail = NULL;
    c->out_bytes = 0;
}

/* Queues hdr[0..hlen) and b (taking a reference; may be NULL) as they
 * are, without the max_queue check. */
static int enqueue_raw(conn *c, const uint8_t *hdr, size_t hlen, rbuf *b)
{
    out_node *n = node_get(c->t);
    if (!n) return ERR_NOMEM;
    n->next = NULL;
    n->b = b ? rbuf_ref(b) : NULL;
    n->off = 0;
    n->hlen = (uint8_t)hlen;
    if (hlen) memcpy(n->hdr, hdr, hlen);
    if (c->out_tail) c->out_tail->next = n;
    else c->out_head = n;
    c->out_tail = n;
    c->out_bytes += (uint32_t)node_len(n);
    flush_link(c);
    return ERR_OK;
}

/* Moves the TLS records waiting in the engine to the output queue. */
static int tls_drain(conn *c)
{
    size_t n = tls_pending(c->tls);
    if (!n) return ERR_OK;
    rbuf *b = rbuf_new(n);
    if (!b) return ERR_NOMEM;
    b->len = (uint32_t)tls_take(c->tls, b->data, n);
    int rc = enqueue_raw(c, NULL, 0, b);
    rbuf_unref(b);
    return rc;
}

/* Queues a header and a payload (either may be empty): as they are, or
 * encrypted into this connection's own records (the payload is still
 * encoded once; encryption is per connection by nature). */
static int enqueue(conn *c, const uint8_t *hdr, size_t hlen, rbuf *b)
{
    if (!c->tls) return enqueue_raw(c, hdr, hlen, b);
    if (hlen && tls_write(c->tls, hdr, hlen) < 0) return ERR_PROTOCOL;
    if (b && b->len && tls_write(c->tls, b->data, b->len) < 0) return ERR_PROTOCOL;
    return tls_drain(c);
}

/* Queues a WebSocket frame: its header into the node, the payload shared. */
static int enqueue_frame(conn *c, uint8_t opcode, rbuf *payload)
{
    uint8_t hdr[WS_MAX_HEADER];
    size_t h = ws_frame_header(hdr, opcode, true, payload ? payload->len : 0, NULL);
    return enqueue(c, hdr, h, payload);
}

/* A control frame's payload (at most WS_MAX_CONTROL bytes), copied. */
static int enqueue_control(conn *c, uint8_t opcode, const void *payload, size_t len)
{
    rbuf *b = len ? rbuf_copy(payload, len) : NULL;
    if (len && !b) return ERR_NOMEM;
    int rc = enqueue_frame(c, opcode, b);
    rbuf_unref(b);
    return rc;
}

/* ---- access log (--access-log) ------------------------------------------ */

/* A parsed request waiting for its response, in t->alog by conn id (a
 * connection has at most one: a held request stops its input). */
typedef struct alog_req {
    uint64_t t0;           /* uv_hrtime() when it was parsed */
    uint16_t method_len, path_len;
    char method[16];
    char path[256];        /* without the query; cut to fit */
} alog_req;

static void alog_begin(conn *c, const http_request *req)
{
    srv_thread *t = c->t;
    alog_req *r = u64map_get(&t->alog, c->id);
    if (!r) {
        if (!(r = malloc(sizeof *r))) return;
        if (u64map_put(&t->alog, c->id, r) < 0) { free(r); return; }
    }
    r->t0 = uv_hrtime();
    r->method_len = (uint16_t)(req->method.n < sizeof r->method ? req->method.n : sizeof r->method);
    memcpy(r->method, req->method.p, r->method_len);
    r->path_len = (uint16_t)(req->path.n < sizeof r->path ? req->path.n : sizeof r->path);
    memcpy(r->path, req->path.p, r->path_len);
}

/* One logfmt line for the response just queued; a response to no parsed
 * request (a malformed one, a timeout) shows "-" for what is unknown. */
static void alog_end(conn *c, int status, size_t bytes)
{
    alog_req *r = u64map_del(&c->t->alog, c->id);
    char method[40], path[600], addr[64], dur[32] = "-";
    if (r) snprintf(dur, sizeof dur, "%.3f", (double)(uv_hrtime() - r->t0) / 1e6);
    log_info("access", "method=%s path=%s status=%d bytes=%zu duration_ms=%s addr=%s",
             r ? log_value(method, sizeof method, r->method, r->method_len) : "-",
             r ? log_value(path, sizeof path, r->path, r->path_len) : "-", status, bytes, dur,
             conn_peer_name(c, addr, sizeof addr));
    free(r);
}

static void alog_drop(conn *c)
{
    if (opt_of(c)->access_log) free(u64map_del(&c->t->alog, c->id));
}

/* ---- closing ------------------------------------------------------------ */

static void on_close(uv_handle_t *h)
{
    conn *c = (conn *)h;
    free(c);
}

/* Tells the WebSocket handler its session ends (once: it clears c->user). */
static void ws_closed(conn *c, uint16_t code, const char *reason, bool by_peer)
{
    if (c->user) c->t->srv->ws->on_close(c, code, reason ? reason : "", by_peer);
}

/* conn_abort, saying why to the WebSocket handler (close code 1006). */
static void abort_why(conn *c, const char *why, bool by_peer)
{
    if (c->state == CONN_CLOSED) return;
    srv_thread *t = c->t;
    if (c->state == CONN_WS) metrics_inc(&t->m, M_WS_CLOSED);
    ws_closed(c, WS_CLOSE_ABNORMAL, why, by_peer);
    alog_drop(c);
    if (!(c->flags & F_UPGRADED)) t->npending--;
    c->state = CONN_CLOSED;
    wheel_cancel(&t->wheel, &c->timer);
    flush_unlink(c);
    out_clear(c);
    free(c->in);
    free(c->msg);
    c->in = c->msg = NULL;
    c->in_len = c->in_cap = c->msg_len = c->msg_cap = 0;
    tls_conn_free(c->tls);
    c->tls = NULL;
    if (c->prev) c->prev->next = c->next;
    else t->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    t->nconns--;
    u64map_del(&t->by_id, c->id);
    metrics_inc(&t->m, M_CLOSED);
    uv_close((uv_handle_t *)&c->tcp, on_close);
    if (t->stopping && t->nconns == 0) srv_thread_idle(t);
}

void conn_abort(conn *c)
{
    abort_why(c, "aborted", false);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    free(req);
}

/* Output is flushed and we are lingering: send FIN, keep reading to EOF. */
static void linger_fin(conn *c)
{
    if (c->flags & F_SHUT) return;
    c->flags |= F_SHUT;
    uv_shutdown_t *req = malloc(sizeof *req);
    if (!req || uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        free(req);
        conn_abort(c);
    }
}

/* Enters the lingering state: no more input is processed; once the queue is
 * written we half-close and wait for EOF, at most CONN_LINGER_MS. A
 * WebSocket's handler is told the close code and reason. */
static void linger(conn *c, uint16_t code, const char *reason, bool by_peer)
{
    if (c->state == CONN_LINGER || c->state == CONN_CLOSED) return;
    if (c->state == CONN_WS) metrics_inc(&c->t->m, M_WS_CLOSED);
    ws_closed(c, code, reason, by_peer);
    c->state = CONN_LINGER;
    c->flags |= F_NO_INPUT;
    if (c->tls) {
        tls_close(c->tls); /* close_notify after the last record */
        tls_drain(c);
    }
    free(c->msg);
    c->msg = NULL;
    c->msg_len = c->msg_cap = 0;
    wheel_schedule(&c->t->wheel, &c->timer, CONN_LINGER_MS);
    if (!c->out_head && !c->wreq) linger_fin(c);
}

/* Sends a close frame with code and reason (may be NULL), then lingers;
 * why: the reason the handler is told; by_peer: this echoes the peer's. */
static void close_ws(conn *c, uint16_t code, const char *reason, const char *why, bool by_peer)
{
    if (c->state != CONN_WS) {
        if (c->state == CONN_HTTP) linger(c, 0, NULL, false);
        return;
    }
    uint8_t payload[WS_MAX_CONTROL];
    size_t n = ws_close_payload(payload, code, reason);
    if (enqueue_control(c, WS_OP_CLOSE, payload, n) == ERR_OK) { /* may pass max_queue */
        metrics_close(&c->t->m, code);
        metrics_inc(&c->t->m, M_FRAMES_OUT);
    }
    linger(c, code, why, by_peer);
}

void conn_close_ws(conn *c, uint16_t code, const char *reason)
{
    close_ws(c, code, reason, reason, false);
}

void conn_shutdown(conn *c)
{
    switch (c->state) {
    case CONN_WS:
        conn_close_ws(c, WS_CLOSE_GOING_AWAY, "server shutting down");
        break;
    case CONN_HTTP:
        /* A held request (REST write, login, static file) is answered first:
         * its reply closes the connection (no keep-alive while stopping). */
        if (c->flags & F_HELD) break;
        if (c->in_len == 0 && !c->out_head && !c->wreq) conn_abort(c);
        else linger(c, 0, NULL, false);
        break;
    default:
        break;
    }
}

/* ---- output ------------------------------------------------------------- */

int conn_send_frame(conn *c, uint8_t opcode, rbuf *payload)
{
    if (c->state != CONN_WS) return ERR_CLOSED;
    size_t len = payload ? payload->len : 0;
    uint8_t hdr[WS_MAX_HEADER];
    size_t h = ws_frame_header(hdr, opcode, true, len, NULL);
    if ((size_t)c->out_bytes + h + len > opt_of(c)->max_queue) {
        metrics_inc(&c->t->m, M_QUEUE_FULL);
        return ERR_FULL;
    }
    int rc = enqueue(c, hdr, h, payload);
    if (rc == ERR_OK) metrics_inc(&c->t->m, M_FRAMES_OUT);
    return rc;
}

uint64_t conn_addr_key(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        return 0x100000000ull | a->sin_addr.s_addr;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a6 = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        const uint8_t *p = a6->s6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a6)) { /* an IPv4 client on a [::] listener */
            uint32_t v4;
            memcpy(&v4, p + 12, 4);
            return 0x100000000ull | v4;
        }
        /* FNV-1a over the /64 prefix only: one subscriber holds a whole /64,
         * so its interface ids are one address for the limits. */
        uint64_t h = 0xcbf29ce484222325ull;
        for (int i = 0; i < 8; i++) h = (h ^ p[i]) * 0x100000001b3ull;
        return h | 0x8000000000000000ull;
    }
    return 0;
}

uint64_t conn_peer_key(conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) return 0;
    return conn_addr_key(&ss);
}

const char *conn_addr_name(const struct sockaddr_storage *ss, char *buf, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(buf, n, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(buf, n, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
    } else {
        snprintf(buf, n, "-");
    }
    return buf;
}

const char *conn_peer_name(conn *c, char *buf, size_t n)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) != 0) ss.ss_family = AF_UNSPEC;
    return conn_addr_name(&ss, buf, n);
}

void conn_send_frame_lossy(conn *c, uint8_t opcode, rbuf *payload)
{
    if (c->state != CONN_WS) return;
    if (c->out_bytes + (payload ? payload->len : 0) > opt_of(c)->max_queue / 2) {
        metrics_inc(&c->t->m, M_LOSSY_DROPPED);
        return;
    }
    if (conn_send_frame(c, opcode, payload) == ERR_FULL)
        conn_close_ws(c, WS_CLOSE_TRY_AGAIN, "output queue full: resume with sync");
}

void conn_forgive(conn *c)
{
    if (c->strikes) c->strikes--;
}

/* Milliseconds of the pause still to run (<= 0: none). */
static int32_t pause_left(const conn *c, uint64_t now)
{
    return c->pause_until ? (int32_t)(c->pause_until - (uint32_t)now) : 0;
}

bool conn_paused(conn *c)
{
    return pause_left(c, srv_now(c->t)) > 0;
}

bool conn_strike(conn *c, uint32_t *retry_ms)
{
    metrics_inc(&c->t->m, M_RATE_LIMITED); /* the refusal counts ERR_RATE */
    uint64_t now = srv_now(c->t);
    int32_t left = pause_left(c, now);
    if (left > 0) {
        *retry_ms = (uint32_t)left;
        if (c->pause_free) {
            c->pause_free--;
            return false; /* it was on its way before the pause was told */
        }
    } else {
        *retry_ms += CONN_RESUME_MS;
        c->pause_until = (uint32_t)(now + *retry_ms);
        if (!c->pause_until) c->pause_until = 1;
        c->pause_free = CONN_PAUSE_FREE;
    }
    if (++c->strikes < CONN_MAX_STRIKES) return false;
    conn_close_ws(c, WS_CLOSE_POLICY, "rate limit: too many refused requests");
    return true;
}

/* Drops `bytes` written bytes from the head of the queue. */
static void consume(conn *c, size_t bytes)
{
    c->out_bytes -= (uint32_t)bytes;
    while (bytes && c->out_head) {
        out_node *n = c->out_head;
        size_t left = node_len(n) - n->off;
        if (bytes < left) { n->off += (uint32_t)bytes; return; }
        bytes -= left;
        c->out_head = n->next;
        rbuf_unref(n->b);
        node_put(c->t, n);
    }
    if (!c->out_head) c->out_tail = NULL;
}

/* Pieces up to this size are copied into the write scratch rather than
 * given their own iovec: a frame header is 2-10 bytes, and a writev of many
 * small segments costs the kernel more than one copy of their bytes. */
#define COALESCE_MAX 1024

/* Adds one piece to iov[n]: copied into the thread's scratch (appended to
 * the previous iovec when that one ends there) or referenced in place.
 * Returns the new count. */
static int add_piece(srv_thread *t, uv_buf_t *iov, int n, size_t *used, const uint8_t *p,
                     size_t len, bool coalesce)
{
    if (coalesce && len <= COALESCE_MAX && *used + len <= SRV_WRITE_BUF) {
        uint8_t *dst = t->wbuf + *used;
        if (n == 0 || (uint8_t *)iov[n - 1].base + iov[n - 1].len != dst) {
            iov[n].base = (char *)dst;
            iov[n++].len = 0;
        }
        memcpy(dst, p, len);
        iov[n - 1].len += len;
        *used += len;
        return n;
    }
    iov[n].base = (char *)p;
    iov[n++].len = len;
    return n;
}

/* The queued output as iovecs: each node's header, then its shared payload.
 * coalesce: small pieces go through the thread's write scratch, valid only
 * until the next flush, so only for a write that completes in the call
 * (uv_try_write); a uv_write that outlives it gets references only. */
static int fill_iov(conn *c, uv_buf_t *iov, size_t *total, bool coalesce)
{
    int n = 0;
    size_t used = 0;
    *total = 0;
    for (out_node *o = c->out_head; o && n < MAX_IOV - 1; o = o->next) {
        size_t off = o->off;
        if (off < o->hlen) {
            n = add_piece(c->t, iov, n, &used, o->hdr + off, o->hlen - off, coalesce);
            *total += o->hlen - off;
            off = 0;
        } else {
            off -= o->hlen;
        }
        if (o->b && off < o->b->len) {
            n = add_piece(c->t, iov, n, &used, o->b->data + off, o->b->len - off, coalesce);
            *total += o->b->len - off;
        }
    }
    return n;
}

static void on_tls_read(conn *c, const uint8_t *cipher, size_t n);

static void after_drain(conn *c)
{
    if (c->state == CONN_LINGER && !c->out_head) linger_fin(c);
    else if ((c->flags & F_PAUSED) && !(c->flags & F_HELD)) conn_resume(c);
}

static void on_write(uv_write_t *req, int status)
{
    conn_wreq *w = (conn_wreq *)req;
    conn *c = req->data;
    size_t bytes = w->bytes;
    free(w);
    if (c->state == CONN_CLOSED) return; /* the queue was cleared */
    c->wreq = NULL;
    if (status < 0) { abort_why(c, uv_strerror(status), false); return; }
    metrics_add(&c->t->m, M_BYTES_OUT, bytes);
    consume(c, bytes);
    if (c->out_head) conn_flush(c);
    else after_drain(c);
}

void conn_flush(conn *c)
{
    flush_unlink(c);
    if (c->wreq || c->state == CONN_CLOSED) return;
    uv_buf_t iov[MAX_IOV];
    while (c->out_head) {
        size_t total;
        int n = fill_iov(c, iov, &total, true);
        int r = uv_try_write((uv_stream_t *)&c->tcp, iov, (unsigned)n);
        metrics_inc(&c->t->m, M_WRITES);
        if (r == UV_EAGAIN) r = 0;
        if (r < 0) { abort_why(c, uv_strerror(r), false); return; }
        metrics_add(&c->t->m, M_BYTES_OUT, (uint64_t)r);
        consume(c, (size_t)r);
        if ((size_t)r == total) continue; /* more nodes than MAX_IOV, or done */
        /* The kernel buffer is full: let libuv write the rest when it can. */
        n = fill_iov(c, iov, &total, false);
        conn_wreq *w = malloc(sizeof *w);
        if (!w) { conn_abort(c); return; }
        w->bytes = total;
        w->req.data = c;
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, iov, (unsigned)n, on_write) != 0) {
            free(w);
            conn_abort(c);
            return;
        }
        c->wreq = w;
        metrics_inc(&c->t->m, M_WRITES_BLOCKED);
        return;
    }
    after_drain(c);
}

/* ---- HTTP --------------------------------------------------------------- */

int conn_respond(conn *c, int status, const char *content_type, const void *body,
                 size_t len, bool keep_alive, bool head_only, const char *extra)
{
    char head[2048];
    if (c->t->stopping) keep_alive = false;
    int h = http_response_head(head, sizeof head, status, content_type, len,
                               keep_alive, extra);
    if (h < 0) return h;
    size_t blen = head_only ? 0 : len;
    rbuf *b = rbuf_new((size_t)h + blen);
    if (!b) return ERR_NOMEM;
    memcpy(b->data, head, (size_t)h);
    if (blen) memcpy(b->data + h, body, blen);
    b->len = (uint32_t)(h + blen);
    int rc = enqueue(c, NULL, 0, b); /* a response is bounded by what we serve */
    rbuf_unref(b);
    metrics_status(&c->t->m, status);
    if (opt_of(c)->access_log) alog_end(c, status, blen);
    if (!keep_alive) linger(c, 0, NULL, false);
    return rc;
}

int conn_upgrade(conn *c, const ws_handshake *hs, void *user)
{
    char resp[512];
    int n = ws_handshake_response(resp, sizeof resp, hs);
    if (n < 0) return n;
    rbuf *b = rbuf_copy(resp, (size_t)n);
    if (!b) return ERR_NOMEM;
    int rc = enqueue(c, NULL, 0, b);
    rbuf_unref(b);
    if (rc < 0) return rc;
    metrics_status(&c->t->m, 101);
    if (opt_of(c)->access_log) alog_end(c, 101, 0);
    metrics_inc(&c->t->m, M_WS_UPGRADES);
    c->t->npending--;
    c->flags |= F_UPGRADED;
    c->state = CONN_WS;
    c->flags &= (uint8_t)~F_REQ_TIMER;
    c->missed_pings = 0;
    memset(&c->wr, 0, sizeof c->wr);
    wheel_schedule(&c->t->wheel, &c->timer, opt_of(c)->ping_interval_ms);
    c->user = user;
    return c->t->srv->ws->on_open(c);
}

static void http_fail(conn *c, int status)
{
    char body[128];
    int n = snprintf(body, sizeof body,
                     "{\"error\":{\"code\":\"http_%d\",\"message\":\"%s\"}}", status,
                     http_reason(status));
    metrics_error(&c->t->m, ERR_PROTOCOL);
    conn_respond(c, status, "application/json", body, (size_t)n, false, false, NULL);
}

/* ---- WebSocket input ---------------------------------------------------- */

static void ws_fail(conn *c, uint16_t code, int err)
{
    metrics_error(&c->t->m, err);
    const char *reason = code == WS_CLOSE_TOO_BIG ? "message too big"
                       : code == WS_CLOSE_BAD_DATA ? "invalid UTF-8"
                       : code == WS_CLOSE_UNSUPPORTED ? "binary messages are not supported"
                       : "protocol error";
    conn_close_ws(c, code, reason);
}

static void deliver(conn *c, uint8_t op, const uint8_t *data, size_t len)
{
    if (op != WS_OP_TEXT) {
        ws_fail(c, WS_CLOSE_UNSUPPORTED, ERR_UNSUPPORTED);
        return;
    }
    c->t->srv->ws->on_message(c, data, len);
}

static int append_msg(conn *c, const uint8_t *p, size_t n)
{
    size_t need = (size_t)c->msg_len + n;
    if (need > c->msg_cap) {
        size_t cap = c->msg_cap ? c->msg_cap : 1024;
        while (cap < need) cap *= 2;
        if (cap > c->t->srv->ws_lim.max_message) cap = c->t->srv->ws_lim.max_message;
        uint8_t *m = realloc(c->msg, cap);
        if (!m) return ERR_NOMEM;
        c->msg = m;
        c->msg_cap = (uint32_t)cap;
    }
    if (n) memcpy(c->msg + c->msg_len, p, n);
    c->msg_len += (uint32_t)n;
    return ERR_OK;
}

static void on_frame(conn *c, ws_frame *f)
{
    srv_thread *t = c->t;
    metrics_inc(&t->m, M_FRAMES_IN);
    c->flags |= F_RX;
    uint8_t op = f->opcode == WS_OP_CONT ? c->wr.opcode : f->opcode;
    uint16_t code = 0;
    int rc = ws_reader_check(&c->wr, f, &t->srv->ws_lim, &code);
    if (rc < 0) { ws_fail(c, code, rc); return; }
    tlimit fl = {(float)opt_of(c)->rate_frames, (float)opt_of(c)->rate_frames * 5};
    uint32_t retry = 0;
    if (f->opcode != WS_OP_CLOSE && !tb_take(&c->frames, &fl, srv_now(t), 1, &retry)) {
        /* Over the frame rate: the frame is dropped. A whole message is
         * told (with its ref); a fragment cannot be dropped without
         * corrupting its message, so that closes. */
        if (conn_strike(c, &retry)) return;
        if (f->opcode == WS_OP_CONT || !f->fin || c->msg)
            ws_fail(c, WS_CLOSE_POLICY, ERR_RATE);
        else if (f->opcode == WS_OP_TEXT)
            c->t->srv->ws->on_refused(c, retry, f->payload, f->len);
        return;
    }

    switch (f->opcode) {
    case WS_OP_TEXT:
    case WS_OP_BINARY:
    case WS_OP_CONT:
        if (f->fin && !c->msg) { deliver(c, op, f->payload, f->len); return; }
        if (!c->msg) c->msg_op = op;
        if (append_msg(c, f->payload, f->len) < 0) {
            conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        if (f->fin) {
            uint8_t *m = c->msg;
            uint32_t n = c->msg_len;
            c->msg = NULL;
            c->msg_len = c->msg_cap = 0;
            deliver(c, c->msg_op, m, n);
            free(m);
        }
        return;
    case WS_OP_PING: {
        rbuf *b = f->len ? rbuf_copy(f->payload, f->len) : NULL;
        if (f->len && !b) { conn_abort(c); return; }
        if (conn_send_frame(c, WS_OP_PONG, b) == ERR_FULL)
            conn_close_ws(c, WS_CLOSE_TRY_AGAIN, "output queue full");
        rbuf_unref(b);
        return;
    }
    case WS_OP_PONG:
        return;
    case WS_OP_CLOSE: {
        uint16_t peer = f->len >= 2 ? (uint16_t)(f->payload[0] << 8 | f->payload[1])
                                    : WS_CLOSE_NORMAL;
        char why[WS_MAX_CONTROL + 1];
        size_t n = f->len > 2 ? f->len - 2 : 0;
        if (n) memcpy(why, f->payload + 2, n);
        why[n] = 0;
        close_ws(c, peer, NULL, why, true); /* echo the peer's code */
        return;
    }
    }
}

/* ---- input -------------------------------------------------------------- */

/* Processes data[0..len); returns the bytes consumed. */
static size_t process(conn *c, uint8_t *data, size_t len)
{
    size_t off = 0;
    srv_thread *t = c->t;
    while (off < len) {
        if (c->state == CONN_HTTP) {
            http_request req;
            int status = 0;
            int r = http_parse_request((char *)data + off, len - off, &t->srv->http_lim,
                                       &req, &status);
            if (r == ERR_AGAIN) break;
            if (r < 0) { http_fail(c, status ? status : 400); return len; }
            off += (size_t)r;
            metrics_inc(&t->m, M_HTTP_REQUESTS);
            c->flags &= (uint8_t)~F_REQ_TIMER;
            if (t->srv->opt.access_log) alog_begin(c, &req);
            (c->internal ? t->srv->internal_http : t->srv->http)->on_request(c, &req);
            if (c->state == CONN_HTTP && c->out_bytes > t->srv->opt.max_queue)
                conn_pause(c); /* a pipelining client that does not read */
            if (c->flags & F_PAUSED) break;
        } else if (c->state == CONN_WS) {
            ws_frame f;
            uint16_t code = 0;
            int r = ws_parse_frame(data + off, len - off, WS_SERVER, &t->srv->ws_lim, &f, &code);
            if (r == ERR_AGAIN) break;
            if (r < 0) { ws_fail(c, code, r); return len; }
            off += (size_t)r;
            on_frame(c, &f);
            if (c->flags & F_PAUSED) break; /* the layer above paused input (conn_pause) */
        } else {
            return len; /* lingering or closed: discard */
        }
    }
    return off;
}

/* After input was processed: keep the leftover, arm the right deadline. */
static void after_input(conn *c, size_t leftover, const uint8_t *src)
{
    if (c->state == CONN_CLOSED) return;
    if (c->state == CONN_LINGER) leftover = 0;
    if (leftover == 0) {
        free(c->in);
        c->in = NULL;
        c->in_len = c->in_cap = 0;
    } else if (c->in) {
        if (src != c->in) memmove(c->in, src, leftover);
        c->in_len = (uint32_t)leftover;
    } else {
        size_t cap = leftover < 2048 ? 4096 : leftover * 2;
        c->in = malloc(cap);
        if (!c->in) { conn_abort(c); return; }
        memcpy(c->in, src, leftover);
        c->in_len = (uint32_t)leftover;
        c->in_cap = (uint32_t)cap;
    }
    if (c->state != CONN_HTTP) return;
    const srv_options *cfg = opt_of(c);
    if (leftover && !(c->flags & F_REQ_TIMER)) {
        c->flags |= F_REQ_TIMER; /* from the first byte of a request */
        wheel_schedule(&c->t->wheel, &c->timer, cfg->request_timeout_ms);
    } else if (!leftover && !(c->flags & F_REQ_TIMER)) {
        wheel_schedule(&c->t->wheel, &c->timer, cfg->idle_timeout_ms);
    }
}

/* The most input a connection may hold: one whole request or frame. */
static size_t in_limit(const conn *c)
{
    const server *s = c->t->srv;
    size_t http = s->http_lim.max_header_bytes + s->http_lim.max_body + 1024;
    size_t ws = s->ws_lim.max_message + WS_MAX_HEADER + 1024;
    return http > ws ? http : ws;
}

/* Makes room in the pending input (doubling, up to in_limit); leaves it
 * as is when it cannot grow. */
static void grow_in(conn *c)
{
    if (c->in_cap - c->in_len >= 4096) return;
    size_t limit = in_limit(c), cap = (size_t)c->in_cap * 2;
    if (cap > limit) cap = limit;
    uint8_t *p = cap > c->in_cap ? realloc(c->in, cap) : NULL;
    if (p) { c->in = p; c->in_cap = (uint32_t)cap; }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = (conn *)h;
    if (!c->in || c->tls) {
        buf->base = (char *)c->t->rbuf;
        buf->len = SRV_READ_BUF;
        return;
    }
    grow_in(c);
    buf->base = (char *)c->in + c->in_len;
    buf->len = c->in_cap - c->in_len; /* 0 -> UV_ENOBUFS */
}

/* TLS: the ciphertext is in the loop buffer; the plaintext goes where
 * plain reads would have put it (the pending input, or a scratch area at
 * the loop buffer's end), then through the same parser. */
static void on_tls_read(conn *c, const uint8_t *cipher, size_t n)
{
    if (n && tls_feed(c->tls, cipher, n) < 0) { conn_abort(c); return; }
    uint8_t *scratch = c->t->rbuf; /* the ciphertext is in the engine now */
    for (;;) {
        uint8_t *dst;
        size_t cap;
        if (c->in) {
            grow_in(c);
            dst = c->in + c->in_len;
            cap = c->in_cap - c->in_len;
            if (!cap) { conn_abort(c); return; } /* cannot happen within limits */
        } else {
            dst = scratch;
            cap = SRV_READ_BUF;
        }
        int k = tls_read(c->tls, dst, cap);
        if (k == 0) break;
        if (k < 0) {
            if (k == ERR_PROTOCOL) metrics_error(&c->t->m, ERR_PROTOCOL);
            conn_abort(c);
            return;
        }
        uint8_t *data = c->in ? c->in : dst;
        size_t len = c->in ? c->in_len + (size_t)k : (size_t)k;
        size_t used = process(c, data, len);
        after_input(c, len - used, data + used);
        if (c->state == CONN_CLOSED) return;
        if (c->flags & (F_NO_INPUT | F_PAUSED)) break;
    }
    if (c->state != CONN_CLOSED && tls_drain(c) < 0) conn_abort(c); /* handshake records */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = (conn *)s;
    if (nread == 0) return;
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            log_debug("read error", "err=%s", uv_err_name((int)nread));
        abort_why(c, nread == UV_EOF ? "the peer closed the connection without a close frame"
                                     : uv_strerror((int)nread), true);
        return;
    }
    metrics_add(&c->t->m, M_BYTES_IN, (uint64_t)nread);
    if (c->flags & F_NO_INPUT) {
        after_input(c, 0, NULL);
        return;
    }
    if (c->tls) { on_tls_read(c, (const uint8_t *)buf->base, (size_t)nread); return; }
    uint8_t *data;
    size_t len;
    if (c->in) { data = c->in; len = c->in_len + (size_t)nread; }
    else { data = (uint8_t *)buf->base; len = (size_t)nread; }
    size_t used = process(c, data, len);
    after_input(c, len - used, data + used);
}

void conn_pause(conn *c)
{
    if (c->flags & F_PAUSED) return;
    c->flags |= F_PAUSED;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

void conn_hold(conn *c)
{
    c->flags |= F_HELD;
    conn_pause(c);
}

void conn_unhold(conn *c)
{
    if (!(c->flags & F_HELD)) return;
    c->flags &= (uint8_t)~F_HELD;
    if (!c->out_head && !c->wreq) conn_resume(c); /* else after_drain() resumes */
}

void conn_resume(conn *c)
{
    if (c->state == CONN_CLOSED || !(c->flags & F_PAUSED)) return;
    c->flags &= (uint8_t)~(F_PAUSED | F_HELD);
    if (c->tls && (c->state == CONN_HTTP || c->state == CONN_WS)) {
        /* Requests or frames already decrypted inside the TLS engine. */
        if (c->in_len) {
            size_t used = process(c, c->in, c->in_len);
            after_input(c, c->in_len - used, c->in + used);
        }
        if ((c->state == CONN_HTTP || c->state == CONN_WS) && !(c->flags & F_PAUSED))
            on_tls_read(c, NULL, 0);
        if (c->state != CONN_CLOSED && !(c->flags & F_PAUSED) &&
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
            conn_abort(c);
        return;
    }
    if (c->state == CONN_LINGER) {
        /* keep draining input to EOF while lingering */
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_abort(c);
        return;
    }
    if (c->in_len) {
        size_t used = process(c, c->in, c->in_len);
        after_input(c, c->in_len - used, c->in + used);
    }
    if (c->state != CONN_CLOSED && !(c->flags & F_PAUSED) &&
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_abort(c);
}

/* ---- timers ------------------------------------------------------------- */

void conn_expire(wheel_node *n, void *arg)
{
    conn *c = (conn *)((char *)n - offsetof(conn, timer));
    const srv_options *cfg = opt_of(c);
    switch (c->state) {
    case CONN_HTTP:
        metrics_inc(&c->t->m, M_TIMEOUTS);
        if (c->in_len) {
            c->in_len = 0;
            http_fail(c, 408);
        } else {
            conn_abort(c); /* an idle keep-alive connection */
        }
        break;
    case CONN_WS:
        if (c->pause_until && pause_left(c, srv_now(c->t)) <= 0) c->pause_until = 0;
        if (!c->t->srv->ws->on_tick(c)) break; /* e.g. its token expired */
        if (c->flags & F_RX) {
            c->flags &= (uint8_t)~F_RX;
            c->missed_pings = 0;
        } else if (c->missed_pings >= 2) {
            metrics_inc(&c->t->m, M_TIMEOUTS);
            conn_close_ws(c, WS_CLOSE_GOING_AWAY, "keepalive timeout");
            break;
        } else {
            if (enqueue_control(c, WS_OP_PING, NULL, 0) == ERR_OK)
                metrics_inc(&c->t->m, M_PINGS_SENT);
            c->missed_pings++;
        }
        wheel_schedule(&c->t->wheel, &c->timer, cfg->ping_interval_ms);
        break;
    case CONN_LINGER:
        conn_abort(c);
        break;
    default:
        break;
    }
}

/* ---- accept ------------------------------------------------------------- */

void conn_on_accept(uv_stream_t *listener, int status)
{
    srv_thread *t = listener->data;
    if (status < 0) {
        log_warn("accept failed", "err=%s", uv_err_name(status));
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) return;
    c->t = t;
    uv_tcp_init(&t->loop, &c->tcp);
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    if (t->stopping) { /* accepted from the backlog after stop began */
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->internal = listener == (uv_stream_t *)&t->internal;
    c->id = (++t->next_id << 8) | (uint64_t)t->id;
    if (u64map_put(&t->by_id, c->id, c) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    if (t->npending >= opt_of(c)->max_pending) {
        /* Too many connections that have not upgraded: shed at once. */
        metrics_inc(&t->m, M_PENDING_REFUSED);
        u64map_del(&t->by_id, c->id);
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    if (t->srv->tls && !(c->tls = tls_conn_new(t->srv->tls))) {
        u64map_del(&t->by_id, c->id);
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    t->npending++;
    c->state = CONN_HTTP;
    c->next = t->conns;
    if (t->conns) t->conns->prev = c;
    t->conns = c;
    t->nconns++;
    metrics_inc(&t->m, M_ACCEPTED);
    c->flags |= F_REQ_TIMER;
    wheel_schedule(&t->wheel, &c->timer, opt_of(c)->request_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_abort(c);
}
