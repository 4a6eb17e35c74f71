#include "store/writer.h"

#include <stdbool.h>
#include <stdlib.h>
#include <uv.h>

#include "base/log.h"

/* A committed batch on its way to the completer. */
typedef struct batch {
    struct batch *next;
    writer_op *ops;
    size_t n;
    int rc;        /* the batch's own result: begin/commit/storage error */
    int rcs[];     /* apply() results, one per op */
} batch;

struct writer {
    store *s;
    uint32_t window_us;
    size_t max_batch, max_queue;
    void (*batch_applied)(void *ctx);
    void (*batch_end)(void *ctx);
    void *ctx;
    uv_thread_t tid, done_tid;
    uv_mutex_t mu;
    uv_cond_t cond;          /* writer: operations queued, or stopping */
    uv_cond_t done_cond;     /* completer: batches committed, or stopping */
    writer_op *head, *tail;  /* under mu */
    size_t depth;            /* under mu */
    batch *bhead, *btail;    /* committed, not completed; under mu */
    bool stopping;           /* under mu: no more submits */
    bool writer_ended;       /* under mu: the completer may end when drained */
    writer_stats st;         /* under mu */
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

/* Applies and commits one batch, then hands it to the completer. */
static void run_batch(writer *w, writer_op *ops, size_t n)
{
    /* The batch goes to the completer, which alone completes operations (done()
     * and batch_end must never run on two threads at once): out of memory for
     * it, wait for some rather than complete here. */
    batch *b;
    for (int tries = 0; !(b = calloc(1, sizeof *b + n * sizeof b->rcs[0])); tries++) {
        if (tries == 0) log_error("out of memory for a storage batch: waiting", "ops=%zu", n);
        uv_sleep(10);
    }
    int *rcs = b->rcs;
    store_txn *txn = NULL;
    int rc = store_begin(w->s, true, &txn);
    uint64_t t0 = uv_hrtime(), t1 = t0;
    bool committed = false; /* store_commit() ran: t2 - t1 is its time */
    if (rc == ERR_OK) {
        size_t i = 0;
        for (writer_op *op = ops; op; op = op->next, i++) {
            rcs[i] = op->apply(op, txn);
            if (storage_error(rcs[i])) { rc = rcs[i]; break; }
        }
        if (w->batch_applied) w->batch_applied(w->ctx);
        t1 = uv_hrtime();
        if (rc == ERR_OK) { rc = store_commit(txn); committed = true; }
        else store_abort(txn);
    }
    uint64_t t2 = uv_hrtime();
    if (rc != ERR_OK) log_error("storage batch failed", "ops=%zu err=%s", n, err_name(rc));
    b->ops = ops;
    b->n = n;
    b->rc = rc;
    uv_mutex_lock(&w->mu);
    w->st.apply_ns += t1 - t0;
    w->st.commit_ns += t2 - t1;
    w->st.batches++;
    w->st.ops += n;
    if (n > w->st.max_batch) w->st.max_batch = n;
    if (rc != ERR_OK) w->st.failed_batches++;
    hist_observe(&w->st.batch_ops, &hist_sizes, n);
    if (committed) {
        hist_observe(&w->st.batch_ns, &hist_seconds, t2 - t0);
        hist_observe(&w->st.fsync_ns, &hist_seconds, t2 - t1);
    }
    if (w->btail) w->btail->next = b;
    else w->bhead = b;
    w->btail = b;
    uv_cond_signal(&w->done_cond);
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
    w->writer_ended = true;
    uv_cond_signal(&w->done_cond);
    uv_mutex_unlock(&w->mu);
}

/* The completer: the completions of committed batches, in order. */
static void completer_main(void *arg)
{
    writer *w = arg;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->bhead && !w->writer_ended) uv_cond_wait(&w->done_cond, &w->mu);
        if (!w->bhead) break;
        batch *list = w->bhead;
        w->bhead = w->btail = NULL;
        uv_mutex_unlock(&w->mu);
        uint64_t t1 = uv_hrtime();
        for (batch *b = list, *bn; b; b = bn) {
            bn = b->next;
            size_t i = 0;
            for (writer_op *op = b->ops, *next; op; op = next, i++) {
                next = op->next; /* done() may free op */
                op->next = NULL;
                int rc = b->rc != ERR_OK ? b->rc : b->rcs[i];
                op->done(op, rc);
            }
            if (w->batch_end) w->batch_end(w->ctx);
            free(b);
        }
        uint64_t t2 = uv_hrtime();
        uv_mutex_lock(&w->mu);
        w->st.done_ns += t2 - t1;
    }
    uv_mutex_unlock(&w->mu);
}

int writer_start(writer **out, store *s, uint32_t window_us, size_t max_batch, size_t max_queue,
                 void (*batch_applied)(void *ctx), void (*batch_end)(void *ctx), void *ctx)
{
    writer *w = calloc(1, sizeof *w);
    if (!w) return ERR_NOMEM;
    w->s = s;
    w->window_us = window_us;
    w->max_batch = max_batch ? max_batch : 1;
    w->max_queue = max_queue;
    w->batch_applied = batch_applied;
    w->batch_end = batch_end;
    w->ctx = ctx;
    uv_mutex_init(&w->mu);
    uv_cond_init(&w->cond);
    uv_cond_init(&w->done_cond);
    int rc = uv_thread_create(&w->done_tid, completer_main, w);
    if (rc != 0) {
        log_error("cannot start the completer thread", "err=\"%s\"", uv_strerror(rc));
        goto fail;
    }
    if ((rc = uv_thread_create(&w->tid, writer_main, w)) != 0) {
        log_error("cannot start the writer thread", "err=\"%s\"", uv_strerror(rc));
        uv_mutex_lock(&w->mu);
        w->writer_ended = true;
        uv_cond_signal(&w->done_cond);
        uv_mutex_unlock(&w->mu);
        uv_thread_join(&w->done_tid);
        goto fail;
    }
    *out = w;
    return ERR_OK;
fail:
    uv_cond_destroy(&w->done_cond);
    uv_cond_destroy(&w->cond);
    uv_mutex_destroy(&w->mu);
    free(w);
    return ERR_IO;
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
    uv_thread_join(&w->tid);      /* applies and commits what is queued */
    uv_thread_join(&w->done_tid); /* completes it */
    uv_cond_destroy(&w->done_cond);
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
