#include "net/pool.h"

#include <stdlib.h>

#include "base/err.h"

struct pool {
    uv_mutex_t mu;
    uv_cond_t cv;              /* work queued, or stopping */
    pool_job *head, *tail;     /* FIFO; under mu */
    size_t queued, running;    /* under mu */
    size_t max_queue;
    uint64_t done, refused;    /* under mu */
    bool stopping;             /* under mu */
    int nthreads;              /* started */
    uv_thread_t tids[POOL_MAX_THREADS];
};

/* After run(): done() on the job's thread, or here with NULL. */
static void hand_back(pool_job *j)
{
    if (!j->t || srv_post(j->t, j->done, j) != ERR_OK) j->done(NULL, j);
}

static void worker(void *arg)
{
    pool *p = arg;
    uv_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) uv_cond_wait(&p->cv, &p->mu);
        pool_job *j = p->head;
        if (!j) break; /* stopping, and nothing is left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->queued--;
        p->running++;
        uv_mutex_unlock(&p->mu);
        j->next = NULL;
        j->run(j);
        hand_back(j); /* j may be gone from here on */
        uv_mutex_lock(&p->mu);
        p->running--;
        p->done++;
    }
    uv_mutex_unlock(&p->mu);
}

static void stop_threads(pool *p)
{
    uv_mutex_lock(&p->mu);
    p->stopping = true;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) uv_thread_join(&p->tids[i]);
}

int pool_start(pool **out, int nthreads, size_t max_queue)
{
    if (!out || nthreads < 1 || nthreads > POOL_MAX_THREADS || max_queue < 1) return ERR_INVALID;
    pool *p = calloc(1, sizeof *p);
    if (!p) return ERR_NOMEM;
    p->max_queue = max_queue;
    uv_mutex_init(&p->mu);
    uv_cond_init(&p->cv);
    for (int i = 0; i < nthreads; i++) {
        if (uv_thread_create(&p->tids[i], worker, p) != 0) {
            stop_threads(p);
            uv_cond_destroy(&p->cv);
            uv_mutex_destroy(&p->mu);
            free(p);
            return ERR_IO;
        }
        p->nthreads++;
    }
    *out = p;
    return ERR_OK;
}

static int enqueue(pool *p, pool_job *j, bool bounded)
{
    uv_mutex_lock(&p->mu);
    int rc = ERR_OK;
    if (p->stopping) {
        rc = ERR_CLOSED;
    } else if (bounded && p->queued >= p->max_queue) {
        p->refused++;
        rc = ERR_BUSY;
    } else {
        j->next = NULL;
        if (p->tail) p->tail->next = j;
        else p->head = j;
        p->tail = j;
        p->queued++;
        uv_cond_signal(&p->cv);
    }
    uv_mutex_unlock(&p->mu);
    return rc;
}

int pool_submit(pool *p, pool_job *job)
{
    return enqueue(p, job, true);
}

int pool_continue(pool *p, pool_job *job)
{
    return enqueue(p, job, false);
}

void pool_get_stats(pool *p, pool_stats *out)
{
    uv_mutex_lock(&p->mu);
    out->queued = p->queued;
    out->running = p->running;
    out->done = p->done;
    out->refused = p->refused;
    out->stopping = p->stopping;
    uv_mutex_unlock(&p->mu);
}

void pool_stop(pool *p)
{
    if (!p) return;
    stop_threads(p); /* the workers empty the queue before they end */
    uv_cond_destroy(&p->cv);
    uv_mutex_destroy(&p->mu);
    free(p);
}
