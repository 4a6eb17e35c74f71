/* writer: the one storage writer thread, with group commit.
 *
 * Any thread submits operations; the writer gathers what arrives within the
 * commit window (or up to max_batch operations), applies them all in one
 * write transaction and commits it durably: one fsync for the whole batch,
 * which is what makes a durable ack cheap. A second thread, the completer,
 * then completes the batch's operations in submission order (acks and
 * fan-out), while the writer already applies the next batch.
 *
 * An operation is embedded in the caller's struct (intrusive) and owned by
 * the caller; the writer only links it. apply() runs on the writer thread
 * inside the batch's transaction: it returns >= 0 on success or a negative
 * code; a validation error (forbidden, conflict, ...) must be returned
 * before apply() writes anything. A storage error (ERR_IO, ERR_FULL,
 * ERR_NOMEM) aborts the whole batch: every operation then completes with
 * that error and nothing of the batch is stored. done() runs on the
 * completer thread once the batch is durable, with apply()'s result (or the
 * batch's error); it must not block. After
 * each batch, batch_end(ctx) runs there too (to flush what done() queued
 * for the I/O threads). batch_applied(ctx), if set, runs on the writer
 * thread after a batch's last apply(), before its commit.
 */
#ifndef PARLEY_WRITER_H
#define PARLEY_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "base/hist.h"
#include "store/store.h"

typedef struct writer writer;
typedef struct writer_op writer_op;

struct writer_op {
    writer_op *next;
    int (*apply)(writer_op *op, store_txn *txn);
    void (*done)(writer_op *op, int rc);
};

typedef struct writer_stats {
    uint64_t batches, ops, failed_batches;
    uint64_t max_batch;
    uint64_t queued;      /* now */
    uint64_t apply_ns;    /* time in apply() */
    uint64_t commit_ns;   /* writer: time committing (the fsync) */
    uint64_t done_ns;     /* completer: time in done() and batch_end() */
    /* Histograms (base/hist.h), one observation per batch, counted by the
     * writer thread in the per-batch update it already makes under the
     * writer's lock (no lock of their own, none per operation): */
    hist batch_ns;        /* a committed batch, first apply() to durable (hist_seconds) */
    hist fsync_ns;        /* its store_commit(): LMDB writes the pages and fsyncs (hist_seconds) */
    hist batch_ops;       /* operations per batch (hist_sizes) */
} writer_stats;

/* Starts the writer thread. window_us: how long to gather a batch after its
 * first operation; max_batch: apply at most this many per transaction;
 * max_queue: writer_submit() refuses with ERR_BUSY beyond this depth. */
int writer_start(writer **out, store *s, uint32_t window_us, size_t max_batch, size_t max_queue,
                 void (*batch_applied)(void *ctx), void (*batch_end)(void *ctx), void *ctx);

/* Queues op. Any thread. ERR_BUSY (queue full) or ERR_CLOSED (stopping):
 * op is not queued and its callbacks will not run. */
int writer_submit(writer *w, writer_op *op);

/* Applies and completes everything already queued, then ends both threads
 * and frees w. */
void writer_stop(writer *w);

/* A snapshot of the counters. Any thread. */
void writer_get_stats(writer *w, writer_stats *st);

#endif
