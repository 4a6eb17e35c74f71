/* pool: the worker processes of one run.
 *
 * The parent forks `workers` processes (the open-file limit is per
 * process); each runs worker_serve() over its share of the items (pairs,
 * groups, connections) and exits with the parent (PR_SET_PDEATHSIG). The
 * parent steps them through phases with pool_cmd() over one pipe per worker;
 * a worker acknowledges a finished command in its slot of shared memory,
 * where it also keeps its stats. The parent only reads the slots.
 *
 * A pool owns the shared memory, the pipes and the child processes; 
 * pool_stop() ends them all and unmaps the memory.
 */
#ifndef BENCH_POOL_H
#define BENCH_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "lib/stats.h"
#include "lib/worker.h"

#define POOL_MAX 32

typedef struct pool {
    int n;                   /* worker processes */
    pool_slot *slot;         /* owned: n slots of shared memory */
    pid_t pid[POOL_MAX];
    int fd[POOL_MAX];        /* command pipes (write ends) */
    int seq;
    /* called about every 2 ms while pool_cmd() waits (the parent's own
     * connections); NULL: sleep */
    void (*tick)(void *arg);
    void *tick_arg;
} pool;

/* Items of `total` that worker wid of `workers` gets. */
int pool_items_for(int total, int workers, int wid);

/* Forks o->workers processes; worker i gets pool_items_for(items) items,
 * ops->per_item connections each, and runs ops->setup then commands. */
void pool_start(pool *p, const bench_opts *o, const sock_target *t, const worker_ops *ops,
                int items, unsigned run_id);

/* Sends a command to every worker and waits, at most timeout_s, until all
 * have done it. Dies when a worker failed or exited. False on timeout. */
bool pool_cmd_all(pool *p, int op, int64_t arg, double timeout_s);

/* Sends one command per worker (args[i]) without waiting; returns its seq. */
int pool_send(pool *p, int op, const int64_t *args);
/* True when every worker has acknowledged seq. */
bool pool_done(const pool *p, int seq);

/* Sum of counter k over the workers. */
uint64_t pool_sum(const pool *p, int k);
/* The latest time mark k over the workers. */
int64_t pool_mark(const pool *p, int k);
/* Histogram k merged over the workers into *out. */
void pool_hist(const pool *p, int k, hist *out);
/* Clears every histogram (only between phases, while workers are quiet). */
void pool_reset_hists(pool *p);
/* The longest provisioning time of a worker, in s. */
double pool_prov_s(const pool *p);
/* CPU seconds of the workers and the calling process. */
double pool_cpu_s(const pool *p);

/* Tells every worker to exit, waits (20 s at most, then SIGKILL), unmaps. */
void pool_stop(pool *p);

#endif
