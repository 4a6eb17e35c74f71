#include "chat/router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/err.h"
#include "chat/api.h"
#include "base/log.h"
#include "chat/proto.h"
#include "chat/chat.h"
#include "chat/guard.h"
#include "net/static.h"

#define JSON "application/json"

static const char *const subprotocols[] = {"parley.v1.json", NULL};

static bool path_is(const http_request *r, const char *p)
{
    size_t n = strlen(p);
    return r->path.n == n && memcmp(r->path.p, p, n) == 0;
}

static bool method_is(const http_request *r, const char *m)
{
    size_t n = strlen(m);
    return r->method.n == n && memcmp(r->method.p, m, n) == 0;
}

static void error_json(conn *c, const http_request *req, int err, const char *message,
                       const char *extra)
{
    api_send_error(c, req->keep_alive, method_is(req, "HEAD"), err, message, extra, -1);
}

static void healthz(conn *c, const http_request *req)
{
    chat *ch = chat_of(c->t);
    bool stopping = c->t->stopping, store_ok = db_healthy(ch->db);
    bool bus_ok = !ch->bus || bus_healthy(ch->bus);
    /* a node that cannot reach its database or its bus is drained by a load balancer */
    const char *body = stopping ? "{\"status\":\"stopping\"}"
                       : !store_ok && !bus_ok ? "{\"status\":\"unavailable\",\"store\":\"down\",\"bus\":\"down\"}"
                       : !store_ok ? "{\"status\":\"unavailable\",\"store\":\"down\"}"
                       : !bus_ok ? "{\"status\":\"unavailable\",\"bus\":\"down\"}"
                                : "{\"status\":\"ok\"}";
    conn_respond(c, stopping || !store_ok || !bus_ok ? 503 : 200, JSON, body, strlen(body), req->keep_alive,
                 method_is(req, "HEAD"), "Cache-Control: no-store\r\n");
}

/* n + k, or the first error of the two. */
static int grow(int n, int k)
{
    return n < 0 ? n : k < 0 ? k : n + k;
}

/* The writer's histograms and the store's gauges, into buf[0..cap). */
static int chat_metrics(chat *ch, const writer_stats *ws, char *buf, size_t cap)
{
    const hist *h[1];
    h[0] = &ws->batch_ns;
    int n = metrics_render_hist(buf, cap, "parley_commit_batch_seconds",
                                "Group commits: from the first write applied to durable", &hist_seconds,
                                h, 1);
    h[0] = &ws->fsync_ns;
    if (n >= 0)
        n = grow(n, metrics_render_hist(buf + n, cap - (size_t)n, "parley_commit_fsync_seconds",
                                        "Group commits: the durable commit (LMDB writes the pages "
                                        "and fsyncs them)", &hist_seconds, h, 1));
    h[0] = &ws->batch_ops;
    if (n >= 0)
        n = grow(n, metrics_render_hist(buf + n, cap - (size_t)n, "parley_commit_batch_size",
                                        "Group commits: writes per batch", &hist_sizes, h, 1));
    if (n < 0) return n;
    uint64_t users, convs;
    db_counts(ch->db, &users, &convs);
    pool_stats ps;
    pool_get_stats(ch->reads, &ps);
    int k = snprintf(buf + n, cap - (size_t)n,
                     "# HELP parley_log_appends_total Message log appends (one write, one fdatasync)\n"
                     "# TYPE parley_log_appends_total counter\nparley_log_appends_total %llu\n"
                     "# HELP parley_log_bytes_total Entry bytes appended to the message log\n"
                     "# TYPE parley_log_bytes_total counter\nparley_log_bytes_total %llu\n"
                     "# HELP parley_store_applies_total LMDB transactions applying the log\n"
                     "# TYPE parley_store_applies_total counter\nparley_store_applies_total %llu\n"
                     "# HELP parley_store_unapplied_batches Logged batches not yet in LMDB\n"
                     "# TYPE parley_store_unapplied_batches gauge\n"
                     "parley_store_unapplied_batches %llu\n"
                     "# HELP parley_users Registered users\n# TYPE parley_users gauge\n"
                     "parley_users %llu\n"
                     "# HELP parley_conversations Conversations (direct and groups)\n"
                     "# TYPE parley_conversations gauge\nparley_conversations %llu\n"
                     "# HELP parley_reads_total Store reads run on the read pool\n"
                     "# TYPE parley_reads_total counter\nparley_reads_total %llu\n"
                     "# HELP parley_reads_refused_total Reads answered busy (the read queue was full)\n"
                     "# TYPE parley_reads_refused_total counter\nparley_reads_refused_total %llu\n"
                     "# HELP parley_read_queue Reads waiting for a read-pool thread\n"
                     "# TYPE parley_read_queue gauge\nparley_read_queue %llu\n"
                     "# HELP parley_reads_running Reads running on the read pool\n"
                     "# TYPE parley_reads_running gauge\nparley_reads_running %llu\n",
                     (unsigned long long)ws->log_batches, (unsigned long long)ws->log_bytes,
                     (unsigned long long)ws->applies, (unsigned long long)ws->unapplied,
                     (unsigned long long)users, (unsigned long long)convs,
                     (unsigned long long)ps.done, (unsigned long long)ps.refused,
                     (unsigned long long)ps.queued, (unsigned long long)ps.running);
    return k >= 0 && (size_t)k < cap - (size_t)n ? n + k : ERR_TOO_LARGE;
}

static void metrics_page(conn *c, const http_request *req)
{
    server *s = c->t->srv;
    metrics *per[256];
    for (int i = 0; i < s->nthreads && i < 256; i++) per[i] = &s->threads[i].m;
    size_t cap = 128 * 1024;
    char *buf = malloc(cap);
    int n = buf ? metrics_render(per, s->nthreads, buf, cap) : ERR_NOMEM;
    if (n >= 0 && s->app) {
        writer_stats ws;
        ((chat *)s->app)->db->vfs->stats(((chat *)s->app)->db, &ws);
        int k = snprintf(buf + n, cap - (size_t)n,
            "# HELP parley_commit_batches_total Group commits (one transaction, one fsync)\n"
            "# TYPE parley_commit_batches_total counter\nparley_commit_batches_total %llu\n"
            "# HELP parley_commit_ops_total Writes committed in group commits\n"
            "# TYPE parley_commit_ops_total counter\nparley_commit_ops_total %llu\n"
            "# HELP parley_commit_failed_total Group commits that failed\n"
            "# TYPE parley_commit_failed_total counter\nparley_commit_failed_total %llu\n"
            "# HELP parley_commit_queue Writes waiting for the writer\n"
            "# TYPE parley_commit_queue gauge\nparley_commit_queue %llu\n"
            "# HELP parley_commit_max_batch Largest group commit so far\n"
            "# TYPE parley_commit_max_batch gauge\nparley_commit_max_batch %llu\n"
            "# HELP parley_commit_seconds_total Writer time by phase\n"
            "# TYPE parley_commit_seconds_total counter\n"
            "parley_commit_seconds_total{phase=\"apply\"} %.6f\n"
            "parley_commit_seconds_total{phase=\"commit\"} %.6f\n"
            "parley_commit_seconds_total{phase=\"fanout\"} %.6f\n",
            (unsigned long long)ws.batches, (unsigned long long)ws.ops,
            (unsigned long long)ws.failed_batches, (unsigned long long)ws.queued,
            (unsigned long long)ws.max_batch, ws.apply_ns / 1e9, ws.commit_ns / 1e9,
            ws.done_ns / 1e9);
        n = k > 0 && (size_t)k < cap - (size_t)n ? n + k : ERR_TOO_LARGE;
        if (n >= 0) n = grow(n, chat_metrics((chat *)s->app, &ws, buf + n, cap - (size_t)n));
        bus *b = ((chat *)s->app)->bus;
        if (n >= 0 && b) n = grow(n, bus_render_metrics(b, buf + n, cap - (size_t)n));
    }
    if (n >= 0) n = grow(n, metrics_render_process(buf + n, cap - (size_t)n, PARLEY_VERSION));
    if (n < 0) {
        free(buf);
        error_json(c, req, ERR_IO, "metrics unavailable", NULL);
        return;
    }
    conn_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", buf, (size_t)n,
                 req->keep_alive, method_is(req, "HEAD"), "Cache-Control: no-store\r\n");
    free(buf);
}

/* With --allowed-origins, a browser (which always sends Origin) may open
 * a WebSocket only from a listed origin; non-browser clients send none. */
static bool origin_allowed(const config *cfg, const http_str *origin)
{
    if (!cfg->allowed_origins[0] || !origin) return true;
    const char *p = cfg->allowed_origins;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n && *p == ' ') { p++; n--; }
        while (n && p[n - 1] == ' ') n--;
        if (n == origin->n && strncasecmp(p, origin->p, n) == 0) return true;
        if (!end) break;
        p = end + 1;
    }
    return false;
}

static void websocket(conn *c, const http_request *req)
{
    if (!http_header_get(req, "Upgrade")) {
        error_json(c, req, ERR_UPGRADE_REQUIRED, "this endpoint speaks WebSocket",
                   "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        return;
    }
    ws_handshake hs;
    int status = 400;
    if (ws_handshake_check(req, subprotocols, &hs, &status) < 0) {
        error_json(c, req, status == 426 ? ERR_BAD_VERSION : ERR_BAD_HANDSHAKE, NULL,
                   status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL);
        return;
    }
    if (c->t->stopping) {
        error_json(c, req, ERR_STOPPING, NULL, "Retry-After: 1\r\n");
        return;
    }
    if (!origin_allowed(chat_of(c->t)->cfg, http_header_get(req, "Origin"))) {
        error_json(c, req, ERR_FORBIDDEN_ORIGIN, "this origin may not open WebSockets", NULL);
        return;
    }
    /* Admission control: a reconnect storm ramps instead of collapsing the
     * server. The refusal is cheap (before any storage read) and spreads
     * retries with a jittered Retry-After. */
    const config *cfg = chat_of(c->t)->cfg;
    tlimit admit = {(float)cfg->admit_rate, (float)cfg->admit_rate};
    if (!tb_take(&c->t->admit, &admit, srv_now(c->t), 1, NULL)) {
        char extra[48];
        snprintf(extra, sizeof extra, "Retry-After: %u\r\n", 1 + (unsigned)(uv_hrtime() % 5));
        metrics_inc(&c->t->m, M_ADMIT_REFUSED);
        error_json(c, req, ERR_BUSY, "too many connections at once: retry later", extra);
        return;
    }
    uint32_t retry = 0;
    if (guard_handshake(((chat *)c->t->srv->app)->guard, conn_peer_key(c), guard_now(), &retry) < 0) {
        char extra[48];
        snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry / 1000 + 1);
        metrics_inc(&c->t->m, M_RATE_LIMITED);
        error_json(c, req, ERR_RATE, "too many handshakes from this address", extra);
        return;
    }
    proto_upgrade(c, req, &hs);
}

/* A static file load in flight: the connection is held until it ends. */
typedef struct static_req {
    static_load load;        /* first: done() gets it back */
    srv_thread *t;
    uint64_t conn;           /* by id: the connection may be gone by then */
    bool keep_alive;
} static_req;

static void static_error(conn *c, const static_req *r, int err, const char *message)
{
    api_send_error(c, r->keep_alive, r->load.head, err, message, NULL, -1);
}

/* On the connection's thread, after the thread pool opened and read it. */
static void static_loaded(static_load *l)
{
    static_req *r = (static_req *)l;
    conn *c = srv_conn(r->t, r->conn);
    if (c && c->state == CONN_HTTP) {
        char extra[160];
        snprintf(extra, sizeof extra,
                 "ETag: %s\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n",
                 l->file.etag);
        if (l->rc == ERR_TOO_LARGE)
            static_error(c, r, ERR_IO, "file too large to serve");
        else if (l->rc == ERR_NOT_FOUND)
            static_error(c, r, ERR_NOT_FOUND, "no such file");
        else if (l->rc < 0)
            static_error(c, r, ERR_IO, "read failed");
        else if (l->not_modified) /* no body; Content-Length is the representation's (RFC 9110 8.6) */
            conn_respond(c, 304, NULL, NULL, l->file.size, r->keep_alive, true, extra);
        else
            conn_respond(c, 200, static_content_type(l->full), l->body, l->file.size,
                         r->keep_alive, l->head, extra);
        conn_resume(c);
    }
    static_load_free(l);
}

/* Files are opened and read on libuv's thread pool, never on the loop. */
static void static_file_page(conn *c, const http_request *req)
{
    const config *cfg = chat_of(c->t)->cfg;
    bool head = method_is(req, "HEAD");
    if (!head && !method_is(req, "GET")) {
        error_json(c, req, ERR_METHOD, "use GET or HEAD", "Allow: GET, HEAD\r\n");
        return;
    }
    static_req *r = calloc(1, sizeof *r);
    if (!r) {
        error_json(c, req, ERR_BUSY, NULL, NULL);
        return;
    }
    int rc = static_join(cfg->web_dir, req->path.p, req->path.n, r->load.full, sizeof r->load.full);
    if (rc < 0) {
        free(r);
        if (rc == ERR_TOO_LARGE) error_json(c, req, ERR_IO, "file too large to serve", NULL);
        else error_json(c, req, ERR_NOT_FOUND, "no such file", NULL);
        return;
    }
    const http_str *inm = http_header_get(req, "If-None-Match");
    if (inm && inm->n < sizeof r->load.inm && !memchr(inm->p, 0, inm->n)) {
        memcpy(r->load.inm, inm->p, inm->n);
        r->load.inm[inm->n] = 0;
    }
    r->load.root = cfg->web_dir;
    r->load.head = head;
    r->load.done = static_loaded;
    r->t = c->t;
    r->conn = c->id;
    r->keep_alive = req->keep_alive;
    if (static_load_start(&c->t->loop, &r->load) < 0) {
        free(r);
        error_json(c, req, ERR_BUSY, NULL, NULL);
        return;
    }
    conn_hold(c);
}

static void router_handle(conn *c, const http_request *req)
{
    if (path_is(req, "/v1/ws")) {
        if (!method_is(req, "GET")) {
            error_json(c, req, ERR_METHOD, "use GET", "Allow: GET\r\n");
            return;
        }
        websocket(c, req);
        return;
    }
    if (path_is(req, "/healthz") && (method_is(req, "GET") || method_is(req, "HEAD"))) {
        healthz(c, req);
        return;
    }
    if (path_is(req, "/metrics") && (method_is(req, "GET") || method_is(req, "HEAD"))) {
        metrics_page(c, req);
        return;
    }
    if (api_handle(c, req)) return;
    static_file_page(c, req);
}

const conn_http_ops router_http_ops = {.on_request = router_handle};

/* The internal listener (--metrics-listen): /metrics and nothing else. */
static void router_metrics_handle(conn *c, const http_request *req)
{
    if (!path_is(req, "/metrics")) {
        error_json(c, req, ERR_NOT_FOUND, "this address serves only /metrics", NULL);
        return;
    }
    if (!method_is(req, "GET") && !method_is(req, "HEAD")) {
        error_json(c, req, ERR_METHOD, "use GET or HEAD", "Allow: GET, HEAD\r\n");
        return;
    }
    metrics_page(c, req);
}

const conn_http_ops router_metrics_ops = {.on_request = router_metrics_handle};
