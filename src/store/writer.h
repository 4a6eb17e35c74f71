/* writer: the durable path. Every change to the store goes through it.
 *
 * Any thread submits operations. The sequencer thread handles them in
 * order (group commit: with a log, what arrives while the logger appends
 * an earlier batch gathers into the next, at most window_us and max_batch;
 * an op that finds the logger idle goes at once, or after delay_us; a read
 * waiting for the store cuts the wait; without a log, ops gather for
 * window_us):
 *
 *   - The log path (an op with sequence(), when the writer has a log):
 *     sequence() decides the op against the sequencer's memory (seq.h:
 *     messages, cursors, last_seen) and appends its log entries to the
 *     batch being built. The logger thread appends the batch to the log
 *     (wal.h: one write, one fdatasync, together with whatever other
 *     batches are waiting) and that is where the ops are durable: the
 *     completer acks them. While a batch is synced the sequencer already
 *     builds the next one. The applier thread writes logged batches into
 *     LMDB later, off the ack path, coalescing cursor and conversation
 *     updates (a conversation's record and a member's cursors are written
 *     once per applied group, however many messages moved them), and
 *     records the log position it holds ("log_applied"), after which the
 *     log recycles those segments.
 *   - The slow path (every other op, and one whose sequence() answers
 *     SEQ_SLOW): a barrier. Everything logged before it is applied first,
 *     then apply() runs in a store write transaction on the applier
 *     thread, committed durably; the sequencer waits for it and drops its
 *     memory of the conversations the transaction changed.
 *
 * The completer completes every op in submission order, with done() and,
 * after each batch, batch_end(ctx). On start the log's records past
 * "log_applied" are replayed into LMDB (a torn tail is cut; a bad record
 * before the tail fails the start: wal.h).
 *
 * A failed log append (disk full: ERR_DISK_FULL; ERR_IO) fails its batch
 * and every batch sequenced after it; the sequencer then waits for the
 * applier to catch up and starts again from the store, so nothing that
 * was not acked counts and nothing acked is lost.
 *
 * An operation is embedded in the caller's struct (intrusive) and owned by
 * the caller; the writer only links it. apply() returns >= 0 on success or
 * a negative code; a validation error (forbidden, conflict, ...) must be
 * returned before apply() writes anything. A storage error (ERR_IO,
 * ERR_FULL, ERR_NOMEM) aborts the whole transaction: every op of it then
 * completes with that error. batch_applied(ctx), if set, runs on the
 * thread that ran apply(), after a slow batch's last apply(), before its
 * commit.
 *
 * Without a log (writer_start()), every op takes the slow path: that is
 * plain group commit.
 */
#ifndef PARLEY_WRITER_H
#define PARLEY_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "base/hist.h"
#include "store/seq.h"
#include "store/store.h"
#include "store/wal.h"

typedef struct writer writer;
typedef struct writer_op writer_op;

struct writer_op {
    writer_op *next;
    /* The slow path, on the applier thread (required). */
    int (*apply)(writer_op *op, store_txn *txn);
    /* The log path, on the sequencer thread (optional): decide the op with
     * seq.h's calls, passing batch and out. Returns >= 0, a negative code
     * (the op fails, nothing appended), or SEQ_SLOW (take the slow path). */
    int (*sequence)(writer_op *op, sequencer *q, uint64_t batch, logrec_buf *out);
    /* The log path: at most the bytes sequence() may append (a batch is
     * cut before an op that would take it past its limit). */
    size_t size_hint;
    void (*done)(writer_op *op, int rc);
};

typedef struct writer_stats {
    uint64_t batches, ops, failed_batches;
    uint64_t max_batch;
    uint64_t queued;      /* now */
    uint64_t apply_ns;    /* time in apply() */
    uint64_t commit_ns;   /* writer: time committing (the fsync) */
    uint64_t done_ns;     /* completer: time in done() and batch_end() */
    uint64_t log_batches; /* log appends (each one write + fdatasync) */
    uint64_t log_bytes;   /* entry bytes appended */
    uint64_t applies;     /* applier transactions of logged batches */
    uint64_t unapplied;   /* now: logged batches not yet in LMDB */
    /* Histograms (base/hist.h), one observation per batch, counted by the
     * writer thread in the per-batch update it already makes under the
     * writer's lock (no lock of their own, none per operation): */
    hist batch_ns;        /* a committed batch, from its first op decided (or its
                             first apply()) to durable (hist_seconds) */
    hist fsync_ns;        /* its durable write: the log append + fdatasync, or a slow
                             batch's store_commit() (hist_seconds) */
    hist batch_ops;       /* operations per batch (hist_sizes) */
} writer_stats;

/* Starts the writer without a log. window_us: how long to gather a batch
 * after its first operation; max_batch: apply at most this many per transaction;
 * max_queue: writer_submit() refuses with ERR_BUSY beyond this depth. */
int writer_start(writer **out, store *s, uint32_t window_us, size_t max_batch, size_t max_queue,
                 void (*batch_applied)(void *ctx), void (*batch_end)(void *ctx), void *ctx);

typedef struct writer_options {
    uint32_t window_us;          /* gather a batch at most this long after its first
                                  * op, while the logger appends an earlier one */
    size_t max_batch;            /* ops per batch */
    size_t max_queue;            /* writer_submit() refuses beyond this depth */
    const char *log_dir;         /* the log's directory (created if missing) */
    uint64_t segment_bytes;      /* 0: the log's default; one log entry (a message
                                  * with its cmid, plus 64 bytes) must fit in a
                                  * quarter of it */
    uint32_t apply_delay_ms;     /* the applier gathers logged batches this long
                                  * (fewer, larger LMDB commits) unless a read waits */
    const wal_io *io;            /* NULL: the real system calls (wal.h) */
    uint32_t delay_us;           /* gather this long after a batch's first op even
                                  * while the logger is idle (at most window_us;
                                  * 0: an idle logger takes the op at once) */
} writer_options;

/* Starts the writer with a log: replays the log's tail into the store,
 * then starts the threads. ERR_CORRUPT (a bad record before the log's
 * tail, logged with file and offset), ERR_IO, ERR_NOMEM. */
int writer_start_log(writer **out, store *s, const writer_options *o,
                     void (*batch_applied)(void *ctx), void (*batch_end)(void *ctx), void *ctx);

/* Read-your-writes. writer_acked() is the number of the last batch
 * acknowledged (durable); writer_wait_applied() blocks until the store
 * holds every batch up to `batch` (asking the applier not to wait), or
 * timeout_ms passes: ERR_OK or ERR_TIMEOUT. Any thread. */
uint64_t writer_acked(writer *w);
int writer_wait_applied(writer *w, uint64_t batch, uint32_t timeout_ms);
bool writer_is_applied(writer *w, uint64_t batch);

/* Queues op. Any thread. ERR_BUSY (queue full) or ERR_CLOSED (stopping):
 * op is not queued and its callbacks will not run. */
int writer_submit(writer *w, writer_op *op);

/* Applies and completes everything already queued, then ends the writer's
 * threads and frees w. */
void writer_stop(writer *w);

/* A snapshot of the counters. Any thread. */
void writer_get_stats(writer *w, writer_stats *st);

#endif
