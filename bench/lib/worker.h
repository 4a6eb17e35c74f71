/* worker: one process's event loop over its share of the connections.
 *
 * A worker owns an epoll instance, its connections (wsc), a timer heap for
 * reconnects, a token table and a read buffer; the scenario owns `scn`
 * (its per-worker state, made by ops->setup) and the per-connection state
 * returned by worker_user(). Stats go to the worker's own `stats` (a
 * shared-memory slot in a forked worker, or the caller's memory).
 *
 * Connections open at most `concurrency` at a time (the ramp), count as
 * ready when the server's first text frame (hello) arrives (the 101 on the
 * floor), answer pings, and reconnect after libparley's backoff when lost or
 * refused (a 503's Retry-After is the floor of the delay); after 40 failed
 * attempts they give up, unless reconnect_forever is set (the storm).
 *
 * Forked workers are driven by the parent through pool.h commands; the
 * parent can also run a worker of its own (worker_poll) for a few
 * connections (storm background, catch-up sender).
 */
#ifndef BENCH_WORKER_H
#define BENCH_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/opts.h"
#include "lib/sock.h"
#include "lib/stats.h"
#include "lib/util.h"
#include "lib/wsc.h"

typedef struct worker worker;

/* Commands from the parent (pool.h). */
enum worker_cmd { CMD_PROVISION = 1, CMD_CONNECT, CMD_RUN, CMD_STOP, CMD_SCENARIO, CMD_EXIT };

/* One command on a worker's pipe, and the worker's slot of shared memory
 * where it acknowledges commands and keeps its stats (the parent, pool.h,
 * only reads it). */
typedef struct pool_cmd {
    int op, seq;             /* enum worker_cmd; sequence number */
    int64_t arg;
} pool_cmd;

typedef struct pool_slot {
    volatile int ack_seq;    /* last command completed */
    volatile int failed;     /* provisioning failed */
    stats st;
} pool_slot;

/* What a scenario plugs into a worker. Every callback is optional. */
typedef struct worker_ops {
    int per_item;            /* connections per item (a pair: 2, a group: G) */
    size_t user_size;        /* scenario bytes per connection (worker_user) */
    /* after the connections exist: kinds, tokens, w->scn */
    void (*setup)(worker *w, int nitems);
    /* CMD_PROVISION: users and conversations; false on failure */
    bool (*provision)(worker *w);
    /* CMD_RUN: traffic starts (w->running is set) */
    void (*start)(worker *w);
    /* CMD_SCENARIO with its argument (the storm's drop) */
    void (*command)(worker *w, int64_t arg);
    /* every loop iteration; returns the longest wait in ms it allows, or -1 */
    int (*tick)(worker *w);
    /* a connection became ready (call worker_mark_ready to count it) */
    void (*ready)(worker *w, wsc *c);
    /* a text message from the server on a ready connection */
    void (*text)(worker *w, wsc *c, const char *p, size_t n);
    /* w->scn is about to be dropped (the worker exits) */
    void (*cleanup)(worker *w);
} worker_ops;

typedef struct timer_heap {
    int64_t *t;
    uint32_t *i;
    int n, cap;
} timer_heap;

struct worker {
    int id;                  /* 0.. in the pool; 99 for the parent's own */
    const bench_opts *o;     /* borrowed */
    const sock_target *t;    /* borrowed: the server, or a cluster's first node (REST goes there) */
    sock_target *nodes;      /* owned: o->nports targets (--ports), NULL for one server */
    int nnodes;
    worker_ops ops;          /* a copy */
    void *scn;               /* the scenario's per-worker state */
    stats *S;                /* borrowed: this process's stats */
    rng rng;
    int ep;                  /* owned epoll fd */
    int cmd_fd;              /* the parent's command pipe, or -1 */
    wsc *c;                  /* owned: n connections */
    int n;
    uint8_t *user;           /* owned: n * ops.user_size bytes, zeroed */
    char (*toks)[48];        /* owned: a token per connection (provisioning) */
    char prefix[24];         /* user names: <prefix>w<id>u<i> */
    int next_open, target, inflight, nready;
    timer_heap heap;
    uint8_t *rbuf;           /* owned read buffer */
    bool running, stopping;
    bool reconnect_forever;
    int pend_op, pend_seq;   /* the command being carried out */
    int64_t pend_deadline, last_scan;
    volatile int *ack_seq;   /* where a finished command is acknowledged, or NULL */
    volatile int *failed;    /* set when provisioning fails, or NULL */
};

/* Sets up w with n closed connections (the scenario's ops.setup is called
 * by the pool, or by the caller for its own worker). */
void worker_init(worker *w, int id, const bench_opts *o, const sock_target *t,
                 const worker_ops *ops, stats *S, int n, unsigned run_id);
/* Closes every connection (RST) and frees what w owns (ops.cleanup first). */
void worker_free(worker *w);

/* The scenario's state of connection c (ops.user_size bytes). */
void *worker_user(worker *w, const wsc *c);

/* Lets connections 0 .. target-1 open (the ramp). */
void worker_open(worker *w, int target);

/* One loop iteration: timers, the ramp, ops.tick, epoll (at most max_ms),
 * commands. */
void worker_poll(worker *w, int max_ms);

/* A forked worker's life: commands from cmd_fd until CMD_EXIT, the parent's
 * death, or 900 s. */
void worker_serve(worker *w, int cmd_fd);

/* Counts c as open (once). */
void worker_mark_ready(worker *w, wsc *c);

/* Sends a text frame on c. ERR_OK or ERR_IO (c is then being reconnected). */
int worker_text(worker *w, wsc *c, const char *p, size_t n);

/* Closes c and schedules its reconnect (or gives up). */
void worker_lost(worker *w, wsc *c, uint64_t retry_after_ms, bool rst);

/* Closes c (RST) and schedules its reconnect at `at` (ns). */
void worker_reconnect_at(worker *w, wsc *c, int64_t at);

/* Closes c for good (no reconnect). */
void worker_drop(worker *w, wsc *c, bool rst);

/* The node (0 .. nnodes-1) that connection i of a worker opens its
 * WebSocket to, with per connections per item (a pair: 2; a group: G):
 * (i / per + i % per) % nnodes. The two users of a pair are always on
 * different nodes when nnodes > 1, pairs take turns at which node sends,
 * and a group's members spread evenly. 0 when nnodes <= 1. */
int worker_node_of(int i, int per, int nnodes);

/* The target connection c opens its WebSocket to: its node (above) when
 * --ports gave a cluster, else w->t. */
const sock_target *worker_conn_target(const worker *w, const wsc *c);

/* The user name of connection i of worker wid in run prefix. */
void worker_username(char *out, size_t cap, const char *prefix, int wid, int i);

#endif
