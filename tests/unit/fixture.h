/* fixture: real I/O loops without listeners, for the unit tests of the
 * layers above the net layer (hub, chat, proto, api, router).
 *
 *   fx f;
 *   fx_loops(&f, 2);        two srv_thread loops running, no listener
 *                           (srv_options.port = SRV_NO_LISTEN)
 *   fx_chat(&f);            or instead: the chat service too, on a fresh
 *                           LMDB store in a temporary directory (f.cfg
 *                           may be changed between fx_config and fx_start)
 *   fx_run(&f, 1, fn, arg); fn(t, arg) on thread 1; returns after it ran
 *   fx_barrier(&f);         every post made before it has run everywhere
 *   fx_listen(&f, 0);       a loopback listener on thread 0's loop (conn's
 *                           own accept path); returns its port
 *   fx_stop(&f);            graceful stop, join, chat_close, rm the dirs
 *
 * What the chat service needs from the net layer is exactly this: threads
 * to post to (srv_post), their count, and the hub's per-thread maps; no
 * socket is opened unless a test asks for a listener.
 *
 * Every wait is bounded (FX_WAIT_S): a hang fails the test binary instead
 * of stalling `make test`. Waits are for events, never for time.
 */
#ifndef PARLEY_TEST_FIXTURE_H
#define PARLEY_TEST_FIXTURE_H

#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "base/config.h"
#include "base/err.h"
#include "chat/auth.h"
#include "chat/chat.h"
#include "chat/hub.h"
#include "chat/proto.h"
#include "chat/router.h"
#include "net/conn.h"
#include "net/server.h"

#define FX_MAX_THREADS 8
#define FX_WAIT_S 20

typedef struct fx {
    config cfg;
    char data_dir[64];
    char web_dir[64];
    int nthreads;
    server *srv;
    chat *ch;            /* fx_chat */
    hub *hub;            /* fx_loops' own hub, or ch->hub */
    bool own_hub;
    bool joined;         /* the threads have ended */
    uv_tcp_t listeners[FX_MAX_THREADS]; /* fx_listen; closed by the thread's stop */
    int ports[FX_MAX_THREADS];
} fx;

static inline void fx_fatal(const char *what)
{
    fprintf(stderr, "fixture: %s\n", what);
    exit(2);
}

/* ---- temporary directories ------------------------------------------------ */

static inline int fx_rm_one_(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    remove(path);
    return 0;
}

static inline void fx_rmdir(const char *dir)
{
    if (dir[0]) nftw(dir, fx_rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

static inline void fx_mkdtemp(char *out, size_t cap, const char *tag)
{
    snprintf(out, cap, "/tmp/parley_%s_XXXXXX", tag);
    if (!mkdtemp(out)) fx_fatal("mkdtemp");
}

/* Writes a file under dir (for the static file tests). */
static inline void fx_write_file(const char *dir, const char *name, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) fx_fatal("fopen");
    fputs(text, f);
    fclose(f);
}

/* ---- calls on a thread ---------------------------------------------------- */

typedef struct fx_call {
    void (*fn)(srv_thread *t, void *arg);
    void *arg;
    uv_mutex_t mu;
    uv_cond_t cv;
    bool done;
} fx_call;

static inline void fx_call_run_(srv_thread *t, void *arg)
{
    fx_call *c = arg;
    if (c->fn) c->fn(t, c->arg);
    uv_mutex_lock(&c->mu);
    c->done = true;
    uv_cond_signal(&c->cv);
    uv_mutex_unlock(&c->mu);
}

/* Runs fn(t, arg) on thread i's loop and waits until it has run. */
static inline void fx_run(fx *f, int i, void (*fn)(srv_thread *t, void *arg), void *arg)
{
    fx_call c;
    memset(&c, 0, sizeof c);
    c.fn = fn;
    c.arg = arg;
    uv_mutex_init(&c.mu);
    uv_cond_init(&c.cv);
    if (srv_post(&f->srv->threads[i], fx_call_run_, &c) != ERR_OK) fx_fatal("srv_post");
    uv_mutex_lock(&c.mu);
    uint64_t deadline = uv_hrtime() + (uint64_t)FX_WAIT_S * 1000000000ull;
    while (!c.done) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) fx_fatal("a thread did not run a post");
        uv_cond_timedwait(&c.cv, &c.mu, deadline - now);
    }
    uv_mutex_unlock(&c.mu);
    uv_cond_destroy(&c.cv);
    uv_mutex_destroy(&c.mu);
}

/* Every post made (by this thread) before the call has run on every
 * thread: srv_post runs a thread's posts in order. */
static inline void fx_barrier(fx *f)
{
    for (int i = 0; i < f->nthreads; i++) fx_run(f, i, NULL, NULL);
}

/* ---- setup ----------------------------------------------------------------- */

/* The defaults, with what tests want: fast password hashing, a short commit
 * window, a small store map. Call before fx_start; then adjust f->cfg. */
static inline void fx_config(fx *f, int nthreads)
{
    memset(f, 0, sizeof *f);
    if (nthreads < 1 || nthreads > FX_MAX_THREADS) fx_fatal("thread count");
    config_defaults(&f->cfg);
    f->nthreads = nthreads;
    f->cfg.threads = nthreads;
    f->cfg.insecure_fast_kdf = 1;
    f->cfg.commit_window_us = 100;
    f->cfg.store_map_size = 64u << 20;
    f->cfg.log_segment_bytes = 1u << 20;  /* small log segments: many fixtures */
    snprintf(f->cfg.listen, sizeof f->cfg.listen, "127.0.0.1");
    fx_mkdtemp(f->web_dir, sizeof f->web_dir, "web");
    snprintf(f->cfg.web_dir, sizeof f->cfg.web_dir, "%s", f->web_dir);
}

/* Creates the loops from f->cfg (no listener) and, with chat, the chat
 * service on a fresh store; then starts the threads. */
static inline void fx_start(fx *f, bool with_chat)
{
    const config *c = &f->cfg;
    srv_options opt = {
        .listen = c->listen, .port = SRV_NO_LISTEN, .threads = f->nthreads,
        .tls_cert = "", .tls_key = "",
        .max_message = c->max_message, .max_queue = c->max_queue,
        .max_body = c->max_body, .max_header_bytes = c->max_header_bytes,
        .request_timeout_ms = c->request_timeout_ms, .idle_timeout_ms = c->idle_timeout_ms,
        .ping_interval_ms = c->ping_interval_ms, .max_pending = c->max_pending,
        .rate_frames = c->rate_frames,
    };
    if (auth_init() < 0) fx_fatal("auth_init");
    if (server_create(&f->srv, &opt, &router_http_ops, &proto_ws_ops, NULL) != ERR_OK)
        fx_fatal("server_create");
    if (f->srv->port != -1) fx_fatal("SRV_NO_LISTEN bound a port");
    if (with_chat) {
        fx_mkdtemp(f->data_dir, sizeof f->data_dir, "data");
        snprintf(f->cfg.data_dir, sizeof f->cfg.data_dir, "%s", f->data_dir);
        if (chat_open(&f->ch, &f->cfg, f->srv) != ERR_OK) fx_fatal("chat_open");
        f->hub = f->ch->hub;
    } else {
        if (hub_new(&f->hub, f->srv) != ERR_OK) fx_fatal("hub_new");
        f->own_hub = true;
    }
    server_run(f->srv);
}

static inline void fx_loops(fx *f, int nthreads)
{
    fx_config(f, nthreads);
    fx_start(f, false);
}

static inline void fx_chat(fx *f, int nthreads)
{
    fx_config(f, nthreads);
    fx_start(f, true);
}

/* Graceful stop: connections close, the threads end (posts are refused
 * from then on), the writer commits what is queued. */
static inline void fx_stop_threads(fx *f)
{
    if (!f->srv || f->joined) return;
    server_stop(f->srv);
    server_wait(f->srv);
    f->joined = true;
}

static inline void fx_stop(fx *f)
{
    if (!f->srv) return;
    fx_stop_threads(f);
    if (f->ch) chat_close(f->ch);
    else if (f->own_hub) {
        hub_flush(f->hub);
        hub_free(f->hub);
    }
    server_free(f->srv);
    f->srv = NULL;
    fx_rmdir(f->data_dir);
    fx_rmdir(f->web_dir);
}

/* ---- a loopback listener on one thread -------------------------------------- */

typedef struct fx_listen_ctx {
    fx *f;
    int rc;
} fx_listen_ctx;

static inline void fx_listen_on_(srv_thread *t, void *arg)
{
    fx_listen_ctx *x = arg;
    uv_tcp_t *l = &x->f->listeners[t->id];
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    x->rc = -1;
    if (uv_tcp_init(&t->loop, l) != 0) return;
    l->data = t; /* conn_on_accept finds its thread here */
    if (uv_tcp_bind(l, (const struct sockaddr *)&a, 0) != 0 ||
        uv_listen((uv_stream_t *)l, 128, conn_on_accept) != 0) {
        uv_close((uv_handle_t *)l, NULL);
        return;
    }
    struct sockaddr_storage ss;
    int len = sizeof ss;
    uv_tcp_getsockname(l, (struct sockaddr *)&ss, &len);
    x->f->ports[t->id] = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    x->rc = 0;
}

/* Listens on 127.0.0.1 (a free port) on thread i: the connections it
 * accepts belong to that thread. Returns the port. */
static inline int fx_listen(fx *f, int i)
{
    fx_listen_ctx x = {f, -1};
    fx_run(f, i, fx_listen_on_, &x);
    if (x.rc < 0) fx_fatal("listen");
    return f->ports[i];
}

#endif
