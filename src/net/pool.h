/* pool: a few worker threads with a bounded queue, for the work that must
 * not run on the I/O loops (the chat service's store reads), each result
 * handed back to an I/O thread with srv_post().
 *
 * It is not libuv's thread pool: that one has four threads shared with
 * the password KDF (100s of ms per job) and file reads, and no bound of
 * its own; a read queued behind them would wait for them.
 *
 * A job is embedded in the caller's struct (intrusive) and owned by the
 * caller; the pool only links it. A worker calls run(job), then done(t,
 * job) runs on thread t's loop (srv_post), where it answers and frees the
 * job. When t is NULL, or t has ended (srv_post refuses), or the post
 * cannot be allocated, done(NULL, job) runs on the worker instead, so that
 * it frees the job: done must not touch any I/O thread's state when its t
 * is NULL.
 *
 * Order: jobs start in submission order. With several workers they may
 * end in another order: a caller that needs one client's answers in order
 * keeps at most one job of that client in the pool (the chat service holds
 * the connection until its answer: conn_hold). Results that one worker
 * posts to one thread arrive in the order it posted them.
 *
 * Bounds: pool_submit() refuses with ERR_BUSY when max_queue jobs are
 * waiting (running ones do not count); the caller answers busy. A job that
 * completes work already admitted (the second step of a request) uses
 * pool_continue(), which is never refused for the bound.
 *
 * Stop: pool_stop() refuses further jobs (ERR_CLOSED), lets the workers run
 * every job already queued (each done() as above), joins them and frees
 * the pool.
 *
 * Threads: pool_submit, pool_continue and pool_stats from any thread;
 * pool_stop from one thread, once, when nothing submits any more.
 */
#ifndef PARLEY_POOL_H
#define PARLEY_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/srv.h"

typedef struct pool pool;
typedef struct pool_job pool_job;

struct pool_job {
    pool_job *next;                        /* the pool's queue */
    void (*run)(pool_job *job);            /* on a worker (required) */
    void (*done)(srv_thread *t, void *job);/* then on t (required; t NULL: above) */
    srv_thread *t;                         /* where done runs, or NULL */
};

#define POOL_MAX_THREADS 64

/* Starts nthreads (1..POOL_MAX_THREADS) workers; max_queue >= 1.
 * ERR_OK, ERR_INVALID, ERR_NOMEM or ERR_IO (a thread did not start). */
int pool_start(pool **out, int nthreads, size_t max_queue);

/* Queues job. ERR_OK; ERR_BUSY (max_queue jobs waiting) or ERR_CLOSED
 * (stopping): the job is not queued, its callbacks will not run. */
int pool_submit(pool *p, pool_job *job);

/* pool_submit without the bound: ERR_OK or ERR_CLOSED. */
int pool_continue(pool *p, pool_job *job);

typedef struct pool_stats {
    size_t queued;        /* now: waiting */
    size_t running;       /* now: in run() or handing back */
    uint64_t done;        /* jobs finished */
    uint64_t refused;     /* ERR_BUSY answers */
    bool stopping;        /* pool_stop() has begun: ERR_CLOSED */
} pool_stats;

void pool_get_stats(pool *p, pool_stats *out);

/* Runs what is queued, ends the workers, frees p. NULL: nothing. */
void pool_stop(pool *p);

#endif
