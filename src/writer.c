#include "writer.h"

#include <stdbool.h>
#include <stdlib.h>
#include <uv.h>

#include "log.h"

struct writer {
    store *s;
    uint32_t window_us;
    size_t max_batch, max_queue;
    void (*batch_end)(void *ctx);
    void *ctx;
    uv_thread_t tid;
    uv_mutex_t mu;
    uv_cond_t cond;
    writer_op *head, *tail; /* under mu */
    size_t depth;           /* under mu */
    bool stopping;          /* under mu */
    writer_stats st;        /* under mu */
};

static bool storage_error(int rc)
{
    return rc == ERR_IO || rc == ERR_FULL || rc == ERR_NOMEM;
}

/* Takes up to max_batch operations off the queue (under mu). */
static writer_op *take(writer *w, size_t *n)
{
    writer_op *first = w->head, *last = first;
    size_t k = 1;
    while (last->next && k < w->max_batch) { last = last->next; k++; }
    w->head = last->next;
    if (!w->head) w->tail = NULL;
    last->next = NULL;
    w->depth -= k;
    *n = k;
    return first;
}

static void run_batch(writer *w, writer_op *ops, size_t n)
{
    int *rcs = malloc(n * sizeof *rcs);
    store_txn *txn = NULL;
    int batch_rc = rcs ? store_begin(w->s, true, &txn) : ERR_NOMEM;
    size_t i = 0;
    uint64_t t0 = uv_hrtime(), t1 = t0;
    if (batch_rc == ERR_OK) {
        for (writer_op *op = ops; op; op = op->next, i++) {
            rcs[i] = op->apply(op, txn);
            if (storage_error(rcs[i])) { batch_rc = rcs[i]; break; }
        }
        t1 = uv_hrtime();
        if (batch_rc == ERR_OK) batch_rc = store_commit(txn);
        else store_abort(txn);
    }
    uint64_t t2 = uv_hrtime();
    if (batch_rc != ERR_OK)
        log_error("storage batch failed", "ops=%zu err=%s", n, err_name(batch_rc));
    i = 0;
    for (writer_op *op = ops, *next; op; op = next, i++) {
        next = op->next; /* done() may free op */
        op->next = NULL;
        op->done(op, batch_rc == ERR_OK ? rcs[i] : batch_rc);
    }
    free(rcs);
    if (w->batch_end) w->batch_end(w->ctx);
    uint64_t t3 = uv_hrtime();
    uv_mutex_lock(&w->mu);
    w->st.apply_ns += t1 - t0;
    w->st.commit_ns += t2 - t1;
    w->st.done_ns += t3 - t2;
    w->st.batches++;
    w->st.ops += n;
    if (n > w->st.max_batch) w->st.max_batch = n;
    if (batch_rc != ERR_OK) w->st.failed_batches++;
    uv_mutex_unlock(&w->mu);
}

static void writer_main(void *arg)
{
    writer *w = arg;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->head && !w->stopping) uv_cond_wait(&w->cond, &w->mu);
        if (!w->head) break; /* stopping and drained */
        if (w->window_us && !w->stopping && w->depth < w->max_batch) {
            /* Gather: let more operations join this batch. */
            uint64_t until = uv_hrtime() + (uint64_t)w->window_us * 1000;
            for (uint64_t now = uv_hrtime(); now < until && w->depth < w->max_batch && !w->stopping;
                 now = uv_hrtime())
                uv_cond_timedwait(&w->cond, &w->mu, until - now);
        }
        size_t n;
        writer_op *ops = take(w, &n);
        uv_mutex_unlock(&w->mu);
        run_batch(w, ops, n);
        uv_mutex_lock(&w->mu);
    }
    uv_mutex_unlock(&w->mu);
}

int writer_start(writer **out, store *s, uint32_t window_us, size_t max_batch, size_t max_queue,
                 void (*batch_end)(void *ctx), void *ctx)
{
    writer *w = calloc(1, sizeof *w);
    if (!w) return ERR_NOMEM;
    w->s = s;
    w->window_us = window_us;
    w->max_batch = max_batch ? max_batch : 1;
    w->max_queue = max_queue;
    w->batch_end = batch_end;
    w->ctx = ctx;
    uv_mutex_init(&w->mu);
    uv_cond_init(&w->cond);
    if (uv_thread_create(&w->tid, writer_main, w) != 0) {
        uv_cond_destroy(&w->cond);
        uv_mutex_destroy(&w->mu);
        free(w);
        return ERR_IO;
    }
    *out = w;
    return ERR_OK;
}

int writer_submit(writer *w, writer_op *op)
{
    op->next = NULL;
    uv_mutex_lock(&w->mu);
    if (w->stopping) { uv_mutex_unlock(&w->mu); return ERR_CLOSED; }
    if (w->depth >= w->max_queue) { uv_mutex_unlock(&w->mu); return ERR_BUSY; }
    if (w->tail) w->tail->next = op;
    else w->head = op;
    w->tail = op;
    w->depth++;
    /* Wake the writer for the first op, or when a batch is full. */
    if (w->depth == 1 || w->depth >= w->max_batch) uv_cond_signal(&w->cond);
    uv_mutex_unlock(&w->mu);
    return ERR_OK;
}

void writer_stop(writer *w)
{
    uv_mutex_lock(&w->mu);
    w->stopping = true;
    uv_cond_signal(&w->cond);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->tid);
    uv_cond_destroy(&w->cond);
    uv_mutex_destroy(&w->mu);
    free(w);
}

void writer_get_stats(writer *w, writer_stats *st)
{
    uv_mutex_lock(&w->mu);
    *st = w->st;
    st->queued = w->depth;
    uv_mutex_unlock(&w->mu);
}
