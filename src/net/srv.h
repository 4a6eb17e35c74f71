/* srv: an I/O thread and what it owns; the types the net layer shares.
 *
 * N threads, each one libuv loop that owns its own SO_REUSEPORT listener and
 * every connection it accepts; nothing on the hot path is shared between
 * threads. Work for another thread goes through srv_post() (a queue plus a
 * uv_async wakeup). Per loop: one 64 KiB read buffer shared by all its
 * connections, one timing wheel for every per-connection deadline, and one
 * flush pass per loop turn (uv_prepare) that writes each connection's queued
 * frames with a single writev. Thread 0 may also own an internal listener
 * (server_listen_internal: /metrics only), whose connections use their own
 * HTTP handler. server.h starts and stops the threads;
 * conn.h is one connection. This module calls neither.
 */
#ifndef PARLEY_SRV_H
#define PARLEY_SRV_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "codec/http.h"
#include "net/metrics.h"
#include "base/ratelimit.h"
#include "base/u64map.h"
#include "net/wheel.h"
#include "codec/ws.h"

typedef struct conn conn;
typedef struct server server;
typedef struct srv_thread srv_thread;
typedef struct srv_msg srv_msg;
typedef struct out_node out_node;

/* What the layer above the server sets: limits and addresses (copied from
 * its configuration; the strings must outlive the server). */
typedef struct srv_options {
    const char *listen;          /* address to bind */
    int port;                    /* 0 picks a free one (server.port has it);
                                  * SRV_NO_LISTEN binds nothing */
    int threads;                 /* I/O threads, each one loop and listener */
    const char *tls_cert;        /* PEM chain and key: both or neither ("") */
    const char *tls_key;
    size_t max_message;          /* WebSocket message bytes (1009 beyond) */
    size_t max_queue;            /* output bytes queued per connection */
    size_t max_body;             /* HTTP request body bytes (413 beyond) */
    size_t max_header_bytes;     /* HTTP request head bytes (431 beyond) */
    uint32_t request_timeout_ms; /* a whole request or handshake (408) */
    uint32_t idle_timeout_ms;    /* idle keep-alive HTTP connections */
    uint32_t ping_interval_ms;   /* WebSocket keepalive ping */
    uint32_t max_pending;        /* connections not upgraded, per thread */
    uint32_t rate_frames;        /* WebSocket frames/s per connection (0: off) */
    bool access_log;             /* one log line per HTTP request */
} srv_options;

/* srv_options.port for loops without listeners: the threads run, post and
 * flush as usual but accept nothing (listen is not read). For tests that
 * drive the layers above over real loops, and for connections attached by
 * other means (a listener added on a thread's loop with conn_on_accept). */
#define SRV_NO_LISTEN (-1)

/* How the layer above handles connections, one table per protocol (as
 * libuv hands callbacks in): the server never calls that layer by name.
 * Every callback runs on the connection's thread; pointers it is given are
 * valid during the call only. The tables must outlive the server. */
typedef struct conn_http_ops {
    /* One parsed request. Answer with conn_respond(), or hold the
     * connection (conn_hold) and answer later, or conn_upgrade(). */
    void (*on_request)(conn *c, const http_request *req);
} conn_http_ops;

typedef struct conn_ws_ops {
    /* Bytes of per-connection state the handler keeps in every connection
     * (conn_user(), its session): allocated with the conn, no allocation
     * of its own. */
    size_t user_size;
    /* The WebSocket is open (the 101 is queued); conn_user(c) is what the
     * handler filled before conn_upgrade(). ERR_OK, or an error: the
     * connection is aborted. */
    int (*on_open)(conn *c);
    /* One complete, UTF-8-valid text message. */
    void (*on_message)(conn *c, const uint8_t *data, size_t len);
    /* A whole text message dropped by the frame rate limit; retry_ms: when
     * a frame passes again. */
    void (*on_refused)(conn *c, uint32_t retry_ms, const uint8_t *data, size_t len);
    /* The keepalive tick (every ping interval): false after it closed c. */
    bool (*on_tick)(conn *c);
    /* c is closing (no more input): release what conn_user(c) holds (the
     * memory goes with the conn); called once.
     * code and reason (never NULL) say why: the close frame sent or echoed,
     * or 1006 when the connection ended without one; by_peer: the client
     * closed (its close frame or the end of the connection). */
    void (*on_close)(conn *c, uint16_t code, const char *reason, bool by_peer);
} conn_ws_ops;

#define SRV_READ_BUF (64 * 1024)
#define SRV_WRITE_BUF (64 * 1024)
#define SRV_TICK_MS 100

/* One I/O thread. Fields are owned by the thread itself, except `posts`
 * (guarded by `mu`) and `m` (read by any thread, written by this one). */
struct srv_thread {
    uv_loop_t loop;
    server *srv;
    int id;
    uv_thread_t tid;
    int listen_fd;           /* bound before the thread starts; -1: none */
    uv_tcp_t listener;
    uv_tcp_t internal;       /* thread 0 only: the internal listener (server_listen_internal) */
    bool has_internal;
    uv_async_t wake;         /* srv_post() wakeup */
    uv_mutex_t mu;
    srv_msg *posts;          /* pending posts, newest first; under mu */
    bool closed;             /* wake is closing: posts refused; under mu */
    uv_timer_t tick;         /* drives `wheel` every SRV_TICK_MS */
    uv_prepare_t flush;      /* writes queued output once per loop turn */
    wheel wheel;
    uint8_t *rbuf;           /* shared read buffer, SRV_READ_BUF bytes */
    uint8_t *wbuf;           /* write scratch, SRV_WRITE_BUF bytes: small pieces
                              * of one writev are gathered here (conn_flush) */
    uintptr_t *table;        /* every connection of this thread by slot (srv_conn_add):
                              * a conn pointer, or a free slot (odd: the next free
                              * slot + 1, shifted left once, | 1) */
    uint32_t *table_gen;     /* each slot's generation: the upper half of its id */
    uint32_t table_len;      /* slots used so far (the high-water mark) */
    uint32_t table_cap;      /* slots allocated */
    uint32_t table_free;     /* the first free slot + 1; 0: none */
    uint32_t nconns;
    uint64_t *flushq;        /* ids of the connections with output to write (F_FLUSH),
                              * in linking order; the flush pass resolves them */
    uint32_t nflushq, flushq_cap;
    out_node *free_nodes;    /* recycled output-queue nodes */
    u64map alog;             /* --access-log: conn id -> its request awaiting a response */
    uint32_t npending;       /* connections not (yet) upgraded to WebSocket */
    tbucket admit;           /* admission control: handshakes per second */
    uint32_t next_gen;       /* conn ids: (generation << 32) | (slot << 8) | thread id */
    void *app;               /* the application's per-thread state (hub) */
    bool stopping;
    metrics m;
};

struct server {
    srv_options opt;         /* a copy of the caller's */
    const conn_http_ops *http;
    const conn_ws_ops *ws;
    const conn_http_ops *internal_http; /* connections of the internal listener, or NULL */
    int internal_port;       /* its bound port */
    http_limits http_lim;
    ws_limits ws_lim;
    int nthreads;
    srv_thread *threads;
    int port;                /* the bound port (useful with --port 0) */
    uv_async_t *on_done;     /* sent when a thread has ended (main loop's) */
    void *app;               /* the layer above's, set before server_run(), or NULL */
    struct tls_ctx *tls;     /* TLS on every listener (owned), or NULL */
};

/* The connection table. A connection id is (generation << 32) | (slot << 8)
 * | thread id: srv_conn() is an index and a comparison, and the table costs
 * a pointer and a generation (12 bytes) per connection at the thread's
 * peak. The 32-bit generation counts the thread's connections, so an id
 * comes back only after 2^32 more connections on that thread, and never
 * while its connection is open. */
#define SRV_MAX_SLOTS (1u << 24)

/* Gives c a slot; *id is its id (never 0). ERR_OK, ERR_NOMEM, or ERR_FULL
 * (SRV_MAX_SLOTS connections on this thread). */
int srv_conn_add(srv_thread *t, conn *c, uint64_t *id);

/* Frees the slot of id: srv_conn() no longer finds it. No-op for an id
 * that is not a live one of this thread. */
void srv_conn_remove(srv_thread *t, uint64_t id);

/* The connection with this id on thread t, or NULL if it has closed. */
conn *srv_conn(srv_thread *t, uint64_t id);

/* Iterates the thread's connections: the first one at a slot >= *pos, with
 * *pos moved past it, or NULL at the end. Connections may be removed
 * during the walk. */
conn *srv_conn_next(srv_thread *t, uint32_t *pos);

/* Frees the connection table and the flush list (the loop has ended). */
void srv_thread_free(srv_thread *t);

/* The thread a connection id belongs to. */
static inline int srv_conn_thread(uint64_t id) { return (int)(id & 0xff); }

/* Runs fn(t, arg) on thread t's loop, soon. Any thread. Returns ERR_OK,
 * ERR_NOMEM or ERR_CLOSED (the thread is ending); on error fn is not called
 * and arg stays the caller's. On success arg is owned by fn. */
int srv_post(srv_thread *t, void (*fn)(srv_thread *t, void *arg), void *arg);

/* Called by conn when a stopping thread has no connections left: ends the
 * thread's loop. Thread t only. */
void srv_thread_idle(srv_thread *t);

/* For server.c: initialises t's loop, lock and wakeup (ERR_IO), and runs
 * the posts left after the loop ended (accepted before the thread began to
 * end, not yet run): in posting order, on the ended thread, so that each fn
 * releases its arg (no connection is left by then); later posts are
 * refused with ERR_CLOSED. */
int srv_thread_init(srv_thread *t);
void srv_thread_drain(srv_thread *t);

/* Milliseconds of the thread's loop clock (cached per loop turn). */
static inline uint64_t srv_now(srv_thread *t) { return uv_now(&t->loop); }

#endif
