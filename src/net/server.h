/* server: parleyd's I/O threads.
 *
 * N threads, each one libuv loop that owns its own SO_REUSEPORT listener and
 * every connection it accepts; nothing on the hot path is shared between
 * threads. Work for another thread goes through srv_post() (a queue plus a
 * uv_async wakeup). Per loop: one 64 KiB read buffer shared by all its
 * connections, one timing wheel for every per-connection deadline, and one
 * flush pass per loop turn (uv_prepare) that writes each connection's queued
 * frames with a single writev.
 *
 * Lifecycle: server_start() binds every listener (so a busy port fails at
 * once) and starts the threads; server_stop() begins a graceful stop (no new
 * connections, WebSockets closed with 1001, output flushed); server_force()
 * closes whatever is left; server_wait() joins the threads.
 */
#ifndef PARLEY_SERVER_H
#define PARLEY_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "base/config.h"
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

#define SRV_READ_BUF (64 * 1024)
#define SRV_TICK_MS 100

/* One I/O thread. Fields are owned by the thread itself, except `posts`
 * (guarded by `mu`) and `m` (read by any thread, written by this one). */
struct srv_thread {
    uv_loop_t loop;
    server *srv;
    int id;
    uv_thread_t tid;
    int listen_fd;           /* bound before the thread starts */
    uv_tcp_t listener;
    uv_async_t wake;         /* srv_post() wakeup */
    uv_mutex_t mu;
    srv_msg *posts;          /* pending posts, newest first; under mu */
    bool closed;             /* wake is closing: posts refused; under mu */
    uv_timer_t tick;         /* drives `wheel` every SRV_TICK_MS */
    uv_prepare_t flush;      /* writes queued output once per loop turn */
    wheel wheel;
    uint8_t *rbuf;           /* shared read buffer, SRV_READ_BUF bytes */
    conn *conns;             /* every connection of this thread */
    uint32_t nconns;
    conn *flush_head;        /* connections with output to write */
    out_node *free_nodes;    /* recycled output-queue nodes */
    u64map by_id;            /* conn id -> conn, for async completions */
    uint32_t npending;       /* connections not (yet) upgraded to WebSocket */
    tbucket admit;           /* admission control: handshakes per second */
    uint64_t next_id;        /* conn ids: (next_id << 8) | thread id */
    void *app;               /* the application's per-thread state (hub) */
    bool stopping;
    metrics m;
};

struct server {
    const config *cfg;
    http_limits http_lim;
    ws_limits ws_lim;
    int nthreads;
    srv_thread *threads;
    int port;                /* the bound port (useful with --port 0) */
    uv_async_t *on_done;     /* sent when a thread has ended (main loop's) */
    void *app;               /* the application (chat), or NULL */
    struct tls_ctx *tls;     /* TLS on every listener (owned), or NULL */
};

/* The connection with this id on thread t, or NULL if it has closed. */
conn *srv_conn(srv_thread *t, uint64_t id);

/* The thread a connection id belongs to. */
static inline int srv_conn_thread(uint64_t id) { return (int)(id & 0xff); }

/* Binds the listeners and prepares cfg->threads loops (not yet running).
 * cfg must outlive the server. on_done (may be NULL) is signalled as each
 * thread ends. Returns ERR_OK and *out, or ERR_IO after logging why (e.g.
 * the port is taken). */
int server_create(server **out, const config *cfg, uv_async_t *on_done);

/* Starts the threads. */
void server_run(server *s);

/* Begins a graceful stop. Any thread. Idempotent. */
void server_stop(server *s);

/* Closes every remaining connection now. Any thread. */
void server_force(server *s);

/* Joins the threads (all must have ended or be ending). */
void server_wait(server *s);

/* Frees a server whose threads were joined. */
void server_free(server *s);

/* Runs fn(t, arg) on thread t's loop, soon. Any thread. Returns ERR_OK,
 * ERR_NOMEM or ERR_CLOSED (the thread is ending); on error fn is not called
 * and arg stays the caller's. On success arg is owned by fn. */
int srv_post(srv_thread *t, void (*fn)(srv_thread *t, void *arg), void *arg);

/* Called by conn when a stopping thread has no connections left: ends the
 * thread's loop. Thread t only. */
void srv_thread_idle(srv_thread *t);

/* Milliseconds of the thread's loop clock (cached per loop turn). */
static inline uint64_t srv_now(srv_thread *t) { return uv_now(&t->loop); }

#endif
