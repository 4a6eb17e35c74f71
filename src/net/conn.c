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

_Static_assert(CONN_MAX_STRIKES < 64, "conn.strikes is 6 bits");

/* conn.flags */
#define F_FLUSH     0x01 /* its id is in t->flushq (the flush pass writes it) */
#define F_RX        0x02 /* a frame arrived since the last keepalive check */
#define F_REQ_TIMER 0x04 /* the timer is the request deadline (HTTP) */
#define F_SHUT      0x08 /* FIN sent (uv_shutdown) */
#define F_NO_INPUT  0x10 /* input is discarded (lingering) */
#define F_PAUSED    0x20 /* reading stopped (conn_pause) */
#define F_HELD      0x40 /* paused for an async request: conn_resume() only */
#define F_UPGRADED  0x80 /* became a WebSocket (no longer pending) */
#define F_INTERNAL  0x100 /* accepted on the internal listener: its own HTTP handler */
#define F_USER      0x200 /* upgraded, on_close not yet called: conn_user is the handler's */

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

/* The occasional state (conn.h), made on first need; NULL when out of
 * memory. */
static conn_more *more_get(conn *c)
{
    conn_more *m = conn_more_of(c);
    if (m) return m;
    if (!(m = calloc(1, sizeof *m))) return NULL;
    c->tcp.data = m;
    return m;
}

/* Frees the occasional state once none of it is in use. */
static void more_trim(conn *c)
{
    conn_more *m = conn_more_of(c);
    if (!m || m->in || m->msg || m->tls || m->wreq || m->pause_until || m->wr.opcode ||
        m->wr.msg_len || m->wr.utf8)
        return;
    free(m);
    c->tcp.data = NULL;
}

static struct tls_conn *tls_of(const conn *c)
{
    conn_more *m = conn_more_of(c);
    return m ? m->tls : NULL;
}

static struct conn_wreq *wreq_of(const conn *c)
{
    conn_more *m = conn_more_of(c);
    return m ? m->wreq : NULL;
}

static uint32_t in_len_of(const conn *c)
{
    conn_more *m = conn_more_of(c);
    return m ? m->in_len : 0;
}

/* The head of the output queue (out_tail->next), or NULL. */
static out_node *out_head(const conn *c)
{
    return c->out_tail ? c->out_tail->next : NULL;
}

/* Unlinks the head of a non-empty output queue and returns it. */
static out_node *out_pop(conn *c)
{
    out_node *n = c->out_tail->next;
    if (n == c->out_tail) c->out_tail = NULL;
    else c->out_tail->next = n->next;
    return n;
}

/* Puts c on the flush list (its id: a connection that closes before the
 * pass is not found by it). ERR_OK or ERR_NOMEM. */
static int flush_link(conn *c)
{
    if (c->flags & F_FLUSH || wreq_of(c)) return ERR_OK;
    srv_thread *t = c->t;
    if (t->nflushq == t->flushq_cap) {
        uint32_t cap = t->flushq_cap ? t->flushq_cap * 2 : 64;
        uint64_t *p = realloc(t->flushq, cap * sizeof *p);
        if (!p) return ERR_NOMEM;
        t->flushq = p;
        t->flushq_cap = cap;
    }
    t->flushq[t->nflushq++] = c->id;
    c->flags |= F_FLUSH;
    return ERR_OK;
}

/* Takes c off the flush list (its id stays there, and is skipped). */
static void flush_unlink(conn *c)
{
    c->flags &= (uint16_t)~F_FLUSH;
}

void conn_flush_all(srv_thread *t)
{
    for (uint32_t i = 0; i < t->nflushq; i++) { /* conn_flush may add more */
        conn *c = srv_conn(t, t->flushq[i]);
        if (c && (c->flags & F_FLUSH)) conn_flush(c);
    }
    t->nflushq = 0;
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
    while (c->out_tail) {
        out_node *n = out_pop(c);
        rbuf_unref(n->b);
        node_put(c->t, n);
    }
    c->out_bytes = 0;
}

/* Queues hdr[0..hlen) and b (taking a reference; may be NULL) as they
 * are, without the max_queue check. */
static int enqueue_raw(conn *c, const uint8_t *hdr, size_t hlen, rbuf *b)
{
    out_node *n = node_get(c->t);
    if (!n) return ERR_NOMEM;
    if (flush_link(c) < 0) { node_put(c->t, n); return ERR_NOMEM; }
    n->b = b ? rbuf_ref(b) : NULL;
    n->off = 0;
    n->hlen = (uint8_t)hlen;
    if (hlen) memcpy(n->hdr, hdr, hlen);
    if (c->out_tail) {
        n->next = c->out_tail->next;
        c->out_tail->next = n;
    } else {
        n->next = n;
    }
    c->out_tail = n;
    c->out_bytes += (uint32_t)node_len(n);
    return ERR_OK;
}

/* Moves the TLS records waiting in the engine to the output queue. */
static int tls_drain(conn *c)
{
    struct tls_conn *tls = tls_of(c);
    size_t n = tls_pending(tls);
    if (!n) return ERR_OK;
    rbuf *b = rbuf_new(n);
    if (!b) return ERR_NOMEM;
    b->len = (uint32_t)tls_take(tls, b->data, n);
    int rc = enqueue_raw(c, NULL, 0, b);
    rbuf_unref(b);
    return rc;
}

/* Queues a header and a payload (either may be empty): as they are, or
 * encrypted into this connection's own records (the payload is still
 * encoded once; encryption is per connection by nature). */
static int enqueue(conn *c, const uint8_t *hdr, size_t hlen, rbuf *b)
{
    struct tls_conn *tls = tls_of(c);
    if (!tls) return enqueue_raw(c, hdr, hlen, b);
    if (hlen && tls_write(tls, hdr, hlen) < 0) return ERR_PROTOCOL;
    if (b && b->len && tls_write(tls, b->data, b->len) < 0) return ERR_PROTOCOL;
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

/* Tells the WebSocket handler its session ends (once). */
static void ws_closed(conn *c, uint16_t code, const char *reason, bool by_peer)
{
    if (!(c->flags & F_USER)) return;
    c->flags &= (uint16_t)~F_USER;
    c->t->srv->ws->on_close(c, code, reason ? reason : "", by_peer);
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
    conn_more *m = conn_more_of(c);
    if (m) { /* a write in flight ends in on_write, which sees CONN_CLOSED */
        free(m->in);
        free(m->msg);
        tls_conn_free(m->tls);
        free(m);
        c->tcp.data = NULL;
    }
    srv_conn_remove(t, c->id);
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
    if (tls_of(c)) {
        tls_close(tls_of(c)); /* close_notify after the last record */
        tls_drain(c);
    }
    conn_more *m = conn_more_of(c);
    if (m) {
        free(m->msg);
        m->msg = NULL;
        m->msg_len = m->msg_cap = 0;
    }
    wheel_schedule(&c->t->wheel, &c->timer, CONN_LINGER_MS);
    if (!c->out_tail && !wreq_of(c)) linger_fin(c);
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
        if (in_len_of(c) == 0 && !c->out_tail && !wreq_of(c)) conn_abort(c);
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
    conn_more *m = conn_more_of(c);
    return m && m->pause_until ? (int32_t)(m->pause_until - (uint32_t)now) : 0;
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
    conn_more *m = more_get(c);
    if (!m) { conn_abort(c); return true; }
    if (left > 0) {
        *retry_ms = (uint32_t)left;
        if (m->pause_free) {
            m->pause_free--;
            return false; /* it was on its way before the pause was told */
        }
    } else {
        *retry_ms += CONN_RESUME_MS;
        m->pause_until = (uint32_t)(now + *retry_ms);
        if (!m->pause_until) m->pause_until = 1;
        m->pause_free = CONN_PAUSE_FREE;
    }
    if (++c->strikes < CONN_MAX_STRIKES) return false;
    conn_close_ws(c, WS_CLOSE_POLICY, "rate limit: too many refused requests");
    return true;
}

/* Drops `bytes` written bytes from the head of the queue. */
static void consume(conn *c, size_t bytes)
{
    c->out_bytes -= (uint32_t)bytes;
    while (bytes && c->out_tail) {
        out_node *n = out_head(c);
        size_t left = node_len(n) - n->off;
        if (bytes < left) { n->off += (uint32_t)bytes; return; }
        bytes -= left;
        out_pop(c);
        rbuf_unref(n->b);
        node_put(c->t, n);
    }
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
    for (out_node *o = out_head(c); o && n < MAX_IOV - 1; o = o == c->out_tail ? NULL : o->next) {
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
    if (c->state == CONN_LINGER && !c->out_tail) linger_fin(c);
    else if ((c->flags & F_PAUSED) && !(c->flags & F_HELD)) conn_resume(c);
    if (c->state != CONN_CLOSED) more_trim(c);
}

static void on_write(uv_write_t *req, int status)
{
    conn_wreq *w = (conn_wreq *)req;
    conn *c = req->data;
    size_t bytes = w->bytes;
    free(w);
    if (c->state == CONN_CLOSED) return; /* the queue was cleared */
    conn_more_of(c)->wreq = NULL;
    if (status < 0) { abort_why(c, uv_strerror(status), false); return; }
    metrics_add(&c->t->m, M_BYTES_OUT, bytes);
    consume(c, bytes);
    if (c->out_tail) conn_flush(c);
    else after_drain(c);
}

void conn_flush(conn *c)
{
    flush_unlink(c);
    if (wreq_of(c) || c->state == CONN_CLOSED) return;
    uv_buf_t iov[MAX_IOV];
    while (c->out_tail) {
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
        conn_more *m = more_get(c);
        conn_wreq *w = m ? malloc(sizeof *w) : NULL;
        if (!w) { conn_abort(c); return; }
        w->bytes = total;
        w->req.data = c;
        if (uv_write(&w->req, (uv_stream_t *)&c->tcp, iov, (unsigned)n, on_write) != 0) {
            free(w);
            conn_abort(c);
            return;
        }
        m->wreq = w;
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

int conn_upgrade(conn *c, const ws_handshake *hs)
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
    c->flags &= (uint16_t)~F_REQ_TIMER;
    c->missed_pings = 0;
    if (conn_more_of(c)) memset(&conn_more_of(c)->wr, 0, sizeof conn_more_of(c)->wr);
    wheel_schedule(&c->t->wheel, &c->timer, opt_of(c)->ping_interval_ms);
    c->flags |= F_USER;
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

static int append_msg(conn_more *x, size_t max_message, const uint8_t *p, size_t n)
{
    size_t need = (size_t)x->msg_len + n;
    if (need > x->msg_cap) {
        size_t cap = x->msg_cap ? x->msg_cap : 1024;
        while (cap < need) cap *= 2;
        if (cap > max_message) cap = max_message;
        uint8_t *m = realloc(x->msg, cap);
        if (!m) return ERR_NOMEM;
        x->msg = m;
        x->msg_cap = (uint32_t)cap;
    }
    if (n) memcpy(x->msg + x->msg_len, p, n);
    x->msg_len += (uint32_t)n;
    return ERR_OK;
}

static void on_frame(conn *c, ws_frame *f)
{
    srv_thread *t = c->t;
    metrics_inc(&t->m, M_FRAMES_IN);
    c->flags |= F_RX;
    /* The reader's state lives in the conn_more only while a fragmented
     * message is in progress; a whole message is checked on the stack. */
    conn_more *x = conn_more_of(c);
    ws_reader idle = {0};
    ws_reader *wr = x ? &x->wr : &idle;
    uint8_t op = f->opcode == WS_OP_CONT ? wr->opcode : f->opcode;
    uint16_t code = 0;
    int rc = ws_reader_check(wr, f, &t->srv->ws_lim, &code);
    if (rc < 0) { ws_fail(c, code, rc); return; }
    if (wr == &idle && (idle.opcode || idle.msg_len || idle.utf8)) {
        if (!(x = more_get(c))) { conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory"); return; }
        x->wr = idle;
    }
    tlimit fl = {(float)opt_of(c)->rate_frames, (float)opt_of(c)->rate_frames * 5};
    uint32_t retry = 0;
    if (f->opcode != WS_OP_CLOSE && !tb_take(&c->frames, &fl, srv_now(t), 1, &retry)) {
        /* Over the frame rate: the frame is dropped. A whole message is
         * told (with its ref); a fragment cannot be dropped without
         * corrupting its message, so that closes. */
        if (conn_strike(c, &retry)) return;
        if (f->opcode == WS_OP_CONT || !f->fin || (x && x->msg))
            ws_fail(c, WS_CLOSE_POLICY, ERR_RATE);
        else if (f->opcode == WS_OP_TEXT)
            c->t->srv->ws->on_refused(c, retry, f->payload, f->len);
        return;
    }

    switch (f->opcode) {
    case WS_OP_TEXT:
    case WS_OP_BINARY:
    case WS_OP_CONT:
        if (f->fin && !(x && x->msg)) { deliver(c, op, f->payload, f->len); return; }
        if (!x && !(x = more_get(c))) {
            conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        if (!x->msg) x->msg_op = op;
        if (append_msg(x, t->srv->ws_lim.max_message, f->payload, f->len) < 0) {
            conn_close_ws(c, WS_CLOSE_INTERNAL, "out of memory");
            return;
        }
        if (f->fin) {
            uint8_t *m = x->msg;
            uint32_t n = x->msg_len;
            x->msg = NULL;
            x->msg_len = x->msg_cap = 0;
            deliver(c, x->msg_op, m, n); /* x stays: it goes in after_input */
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
            c->flags &= (uint16_t)~F_REQ_TIMER;
            if (t->srv->opt.access_log) alog_begin(c, &req);
            (c->flags & F_INTERNAL ? t->srv->internal_http : t->srv->http)->on_request(c, &req);
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
    conn_more *m = conn_more_of(c);
    if (leftover == 0) {
        if (m) {
            free(m->in);
            m->in = NULL;
            m->in_len = m->in_cap = 0;
            more_trim(c);
        }
    } else if (m && m->in) {
        if (src != m->in) memmove(m->in, src, leftover);
        m->in_len = (uint32_t)leftover;
    } else {
        size_t cap = leftover < 2048 ? 4096 : leftover * 2;
        if (!(m = more_get(c)) || !(m->in = malloc(cap))) { conn_abort(c); return; }
        memcpy(m->in, src, leftover);
        m->in_len = (uint32_t)leftover;
        m->in_cap = (uint32_t)cap;
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
static void grow_in(conn *c, conn_more *m)
{
    if (m->in_cap - m->in_len >= 4096) return;
    size_t limit = in_limit(c), cap = (size_t)m->in_cap * 2;
    if (cap > limit) cap = limit;
    uint8_t *p = cap > m->in_cap ? realloc(m->in, cap) : NULL;
    if (p) { m->in = p; m->in_cap = (uint32_t)cap; }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *c = (conn *)h;
    conn_more *m = conn_more_of(c);
    if (!m || !m->in || m->tls) {
        buf->base = (char *)c->t->rbuf;
        buf->len = SRV_READ_BUF;
        return;
    }
    grow_in(c, m);
    buf->base = (char *)m->in + m->in_len;
    buf->len = m->in_cap - m->in_len; /* 0 -> UV_ENOBUFS */
}

/* TLS: the ciphertext is in the loop buffer; the plaintext goes where
 * plain reads would have put it (the pending input, or a scratch area at
 * the loop buffer's end), then through the same parser. */
static void on_tls_read(conn *c, const uint8_t *cipher, size_t n)
{
    conn_more *m = conn_more_of(c); /* a TLS connection keeps it */
    if (n && tls_feed(m->tls, cipher, n) < 0) { conn_abort(c); return; }
    uint8_t *scratch = c->t->rbuf; /* the ciphertext is in the engine now */
    for (;;) {
        uint8_t *dst;
        size_t cap;
        if (m->in) {
            grow_in(c, m);
            dst = m->in + m->in_len;
            cap = m->in_cap - m->in_len;
            if (!cap) { conn_abort(c); return; } /* cannot happen within limits */
        } else {
            dst = scratch;
            cap = SRV_READ_BUF;
        }
        int k = tls_read(m->tls, dst, cap);
        if (k == 0) break;
        if (k < 0) {
            if (k == ERR_PROTOCOL) metrics_error(&c->t->m, ERR_PROTOCOL);
            conn_abort(c);
            return;
        }
        uint8_t *data = m->in ? m->in : dst;
        size_t len = m->in ? m->in_len + (size_t)k : (size_t)k;
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
    if (tls_of(c)) { on_tls_read(c, (const uint8_t *)buf->base, (size_t)nread); return; }
    uint8_t *data;
    size_t len;
    conn_more *m = conn_more_of(c);
    if (m && m->in) { data = m->in; len = m->in_len + (size_t)nread; }
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
    c->flags &= (uint16_t)~F_HELD;
    if (!c->out_tail && !wreq_of(c)) conn_resume(c); /* else after_drain() resumes */
}

void conn_resume(conn *c)
{
    if (c->state == CONN_CLOSED || !(c->flags & F_PAUSED)) return;
    c->flags &= (uint16_t)~(F_PAUSED | F_HELD);
    conn_more *m = conn_more_of(c);
    if (tls_of(c) && (c->state == CONN_HTTP || c->state == CONN_WS)) {
        /* Requests or frames already decrypted inside the TLS engine. */
        if (m->in_len) {
            size_t used = process(c, m->in, m->in_len);
            after_input(c, m->in_len - used, m->in + used);
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
    if (m && m->in_len) {
        size_t used = process(c, m->in, m->in_len);
        after_input(c, m->in_len - used, m->in + used);
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
        if (in_len_of(c)) {
            conn_more_of(c)->in_len = 0;
            http_fail(c, 408);
        } else {
            conn_abort(c); /* an idle keep-alive connection */
        }
        break;
    case CONN_WS:
        if (conn_more_of(c) && conn_more_of(c)->pause_until && pause_left(c, srv_now(c->t)) <= 0) {
            conn_more_of(c)->pause_until = 0;
            more_trim(c);
        }
        if (!c->t->srv->ws->on_tick(c)) break; /* e.g. its token expired */
        if (c->flags & F_RX) {
            c->flags &= (uint16_t)~F_RX;
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
    /* The WebSocket handler's state comes with every connection (conn_user):
     * most connections upgrade, and an idle one is then one allocation. */
    conn *c = calloc(1, sizeof *c + (t->srv->ws ? t->srv->ws->user_size : 0));
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
    if (listener == (uv_stream_t *)&t->internal) c->flags |= F_INTERNAL;
    if (srv_conn_add(t, c, &c->id) < 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    if (t->npending >= opt_of(c)->max_pending) {
        /* Too many connections that have not upgraded: shed at once. */
        metrics_inc(&t->m, M_PENDING_REFUSED);
        srv_conn_remove(t, c->id);
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    conn_more *m = t->srv->tls ? more_get(c) : NULL;
    if (t->srv->tls && (!m || !(m->tls = tls_conn_new(t->srv->tls)))) {
        free(m);
        c->tcp.data = NULL;
        srv_conn_remove(t, c->id);
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    t->npending++;
    c->state = CONN_HTTP;
    metrics_inc(&t->m, M_ACCEPTED);
    c->flags |= F_REQ_TIMER;
    wheel_schedule(&t->wheel, &c->timer, opt_of(c)->request_timeout_ms);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) conn_abort(c);
}
