#include "store/writer.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/log.h"

/* Most logged batches not yet applied: the sequencer waits beyond it (the
 * applier bounds the memory the log path holds). */
#define MAX_UNAPPLIED 4096
#define MAX_UNAPPLIED_BYTES (256u << 20)
/* The applier stops gathering (--apply-delay, counted from the first batch
 * that finds its queue empty) once APPLY_TRIGGER batches have been handed to
 * the logger and not applied, or they hold APPLY_TRIGGER_BYTES of memory
 * (held_bytes()); one transaction applies up to APPLY_GROUP batches holding
 * at most group_bytes() of entries (or one larger batch). At a low
 * rate a batch is often a single message: bounded by count alone (256, as
 * before), 5,000 msgs/s made 13 LMDB commits a second, whose syncs set the
 * ack's p99; by bytes it is one. The byte bound follows the space left: an
 * LMDB transaction writes all its pages to fresh space (it cannot reuse
 * the pages it or the one before it freed), and on a nearly full disk
 * (test_durable_diskfull) groups of thousands of large messages failed to
 * apply, and kept failing after space returned, where 1 MiB groups
 * recover. */
#define APPLY_GROUP MAX_UNAPPLIED
#define APPLY_GROUP_MIN (64u << 10)
#define APPLY_GROUP_MAX (16u << 20)
#define APPLY_TRIGGER (MAX_UNAPPLIED / 2)
#define APPLY_TRIGGER_BYTES (64u << 20)
/* A log batch's entries: one log record each, cut once past a quarter of a
 * segment (at most this); one append holds at most half a segment. An
 * entry is at most a quarter (writer_options), so every append fits. */
#define BATCH_BYTES (4u << 20)
/* While the logger is busy the sequencer decides what arrives in chunks of
 * this many ops (woken once per chunk, not per op), into the open batch. */
#define SEQ_CHUNK 64

enum { ITEM_LOG, ITEM_SLOW };

/* A batch on its way: sequencer -> logger -> completer (and, logged,
 * applier); a slow batch: sequencer -> logger -> applier -> completer. */
typedef struct item {
    struct item *next;         /* in the queue it is in */
    struct item *cnext;        /* in the completer's queue */
    int refs;                  /* atomic: completer, and applier or sequencer */
    uint8_t kind;
    uint64_t bno;              /* log: the batch number (seq.h) */
    uint64_t gen;              /* the sequencer's generation when built */
    writer_op *ops, *tail;
    size_t n;
    int *rcs;                  /* n results */
    size_t rcs_cap;
    int rc;                    /* the whole batch's error, or ERR_OK */
    logrec_buf buf;            /* log: the entries */
    uint64_t lsn_end;          /* log: the log position past it (the last of a write), or 0 */
    uint64_t t0;               /* uv_hrtime() when sequencing began */
    /* slow results, for the sequencer */
    bool done;
    uint64_t *touched;
    size_t ntouched;
    uint64_t clock;
} item;

typedef struct queue { item *head, *tail; } queue;

struct writer {
    store *s;
    wal *log;                  /* NULL: no log, every op takes the slow path */
    sequencer *seq;                  /* the sequencer's (sequencer thread only) */
    struct item *cur;          /* the log batch being built (sequencer thread only) */
    size_t cur_n;              /* its ops, under mu (writer_submit wakes the sequencer
                                * once the queue and the open batch make a full one) */
    uint32_t window_us, apply_delay_ms;
    uint32_t delay_us;         /* gather this long even while the logger is idle */
    size_t batch_bytes, append_bytes;  /* cut a batch past this; one append at most this */
    size_t max_batch, max_queue;
    void (*batch_applied)(void *ctx);
    void (*batch_end)(void *ctx);
    void *ctx;
    uv_thread_t seq_tid, log_tid, app_tid, done_tid;
    uv_mutex_t mu;
    uv_cond_t cond;            /* sequencer: ops queued, slow batch done, room, stopping */
    uv_cond_t log_cond;        /* logger: batches queued */
    uv_cond_t app_cond;        /* applier: batches logged into an empty queue, a slow
                                * batch, enough to apply, a failed append, a read
                                * waits, the logger's end, a stop */
    uv_cond_t done_cond;       /* completer: batches to complete */
    uv_cond_t applied_cond;    /* readers waiting for the applied position */
    /* all under mu: */
    writer_op *head, *tail;
    size_t depth;
    queue lq, aq;              /* logger's, applier's */
    bool aq_slow;              /* a slow batch is in aq */
    item *chead, *ctail;       /* completer's */
    uint64_t next_bno, acked, applied;
    uint64_t gen, failed_gen;  /* batches of failed_gen fail without a write */
    bool reset_needed;         /* a log append failed: the sequencer starts over */
    int last_log_error;        /* why */
    bool need_clean;           /* logger: after a failed append, a good append must
                                * overwrite what it may have left before anything
                                * else is decided (the sequencer starts over only then) */
    uint64_t fail_lo, fail_hi; /* the batch numbers of the last failed run: readers
                                * never wait for them */
    bool abandoned;            /* applier: gave up on a group while stopping: nothing
                                * after it may be applied (the next start replays) */
    uint64_t released_upto;    /* applier: the log position of its last commit, released
                                * to the log after the next commit (or a sync) */
    int apply_rc;              /* the applier's last error (ERR_FULL: the LMDB map is
                                * full): new log-path ops are refused with it */
    size_t unapplied;          /* log batches handed to the logger, not applied or failed */
    size_t unapplied_bytes;
    unsigned urgent;           /* readers waiting: the applier does not gather */
    bool log_busy;             /* the logger is appending (or handing on) what it took */
    bool stopping, seq_ended, log_ended, app_ended;
    writer_stats st;
};

static bool storage_error(int rc)
{
    return rc == ERR_IO || rc == ERR_FULL || rc == ERR_NOMEM || rc == ERR_DISK_FULL;
}

static void qpush(queue *q, item *it)
{
    it->next = NULL;
    if (q->tail) q->tail->next = it;
    else q->head = it;
    q->tail = it;
}

static item *item_new(uint8_t kind)
{
    item *it;
    for (int tries = 0; !(it = calloc(1, sizeof *it)); tries++) {
        if (tries == 0) log_error("out of memory for a storage batch: waiting", "n=%d", tries);
        uv_sleep(10);
    }
    it->kind = kind;
    it->refs = 1;
    it->t0 = uv_hrtime();
    return it;
}

static void item_unref(item *it)
{
    if (__atomic_sub_fetch(&it->refs, 1, __ATOMIC_ACQ_REL)) return;
    logrec_buf_free(&it->buf);
    free(it->rcs);
    free(it->touched);
    free(it);
}

/* Adds op with its result (sequence()'s, or 0 for a slow op to run). */
static void item_add(item *it, writer_op *op, int rc)
{
    if (it->n == it->rcs_cap) {
        size_t cap = it->rcs_cap ? it->rcs_cap * 2 : 16;
        int *r;
        for (int tries = 0; !(r = realloc(it->rcs, cap * sizeof *r)); tries++) {
            if (tries == 0) log_error("out of memory for a storage batch: waiting", "n=%d", tries);
            uv_sleep(10);
        }
        it->rcs = r;
        it->rcs_cap = cap;
    }
    it->rcs[it->n++] = rc;
    op->next = NULL;
    if (it->tail) it->tail->next = op;
    else it->ops = op;
    it->tail = op;
}

/* Hands it to the completer (under mu). */
static void complete_later(writer *w, item *it)
{
    it->cnext = NULL;
    if (w->ctail) w->ctail->cnext = it;
    else w->chead = it;
    w->ctail = it;
    uv_cond_signal(&w->done_cond);
}

/* Takes up to max (>= 1) operations off the queue (under mu). */
static writer_op *take(writer *w, size_t max, size_t *n)
{
    writer_op *first = w->head, *last = first;
    size_t k = 1;
    while (last->next && k < max) { last = last->next; k++; }
    w->head = last->next;
    if (!w->head) w->tail = NULL;
    last->next = NULL;
    w->depth -= k;
    *n = k;
    return first;
}

/* ---- sequencer ------------------------------------------------------------------ */

/* The memory a logged batch holds until it is applied: its entries, and
 * one cmid record per op in the sequencer (seq.c). */
static size_t held_bytes(const item *it) { return it->buf.cap + it->n * 160; }

/* Sends a log batch to the logger (under mu). */
static void send_log(writer *w, item *it)
{
    w->unapplied++;
    w->unapplied_bytes += held_bytes(it);
    qpush(&w->lq, it);
    uv_cond_signal(&w->log_cond);
}

/* Runs a slow batch through the logger and the applier and waits for it
 * (unlocked on entry and exit). */
static void run_slow(writer *w, item *it)
{
    uv_mutex_lock(&w->mu);
    it->refs = 2; /* completer, and this thread */
    qpush(&w->lq, it);
    uv_cond_signal(&w->log_cond);
    while (!it->done) uv_cond_wait(&w->cond, &w->mu);
    uv_mutex_unlock(&w->mu);
    if (w->seq) {
        for (size_t i = 0; i < it->ntouched; i++) seq_forget(w->seq, it->touched[i]);
        if (it->clock) seq_set_clock(w->seq, it->clock);
    }
    item_unref(it);
}

/* After a failed append, once every logged batch is applied: forget
 * everything and start from the store (under mu). */
static void start_over(writer *w)
{
    seq_reset(w->seq);
    seq_applied(w->seq, w->applied);
    store_txn *txn;
    if (store_begin(w->s, false, &txn) == ERR_OK) {
        seq_set_clock(w->seq, store_clock(txn));
        store_abort(txn);
    }
    w->gen++;
    w->reset_needed = false;
}

/* Decides ops in order into log batches and slow batches. Log ops join
 * the open batch (w->cur), which stays open for the sequencer to cut
 * (cut()); a slow op first sends it on. With fail_rc set every op fails
 * with it (in a batch the logger fails); with refuse set (the store
 * cannot take more), slow ops fail with it, and the sequencer refuses
 * what would append (seq_refuse). Unlocked on entry and exit. */
static void sequence_ops(writer *w, writer_op *ops, int fail_rc, int refuse)
{
    item *cur = w->cur, *slow = NULL;
    w->cur = NULL; /* cur below is the open batch; once sent it may be freed */
    for (writer_op *op = ops, *next; op; op = next) {
        next = op->next;
        int early = fail_rc ? fail_rc : refuse && !op->sequence ? refuse : ERR_OK;
        if (w->log && (op->sequence || early)) {
            /* A slow batch before it runs first: the op is decided on the
             * state the slow one leaves. */
            if (slow) { run_slow(w, slow); slow = NULL; }
            if (!cur) {
                cur = item_new(ITEM_LOG);
                uv_mutex_lock(&w->mu);
                cur->bno = ++w->next_bno;
                cur->gen = w->gen;
                uv_mutex_unlock(&w->mu);
            }
            /* A batch stays under one log record: cut it before an op that
             * would take it past the limit. */
            if (cur->buf.len && cur->buf.len + op->size_hint > w->batch_bytes) {
                uv_mutex_lock(&w->mu);
                send_log(w, cur);
                cur = item_new(ITEM_LOG);
                cur->bno = ++w->next_bno;
                cur->gen = w->gen;
                uv_mutex_unlock(&w->mu);
            }
            int rc = early ? early : op->sequence(op, w->seq, cur->bno, &cur->buf);
            if (rc == SEQ_SLOW && refuse) rc = refuse;
            if (rc != SEQ_SLOW) {
                item_add(cur, op, rc);
                if (cur->buf.len >= w->batch_bytes) {
                    uv_mutex_lock(&w->mu);
                    send_log(w, cur);
                    uv_mutex_unlock(&w->mu);
                    cur = NULL;
                }
                continue;
            }
        }
        if (cur) {
            /* Once sent, cur is the logger's (and may be freed): decide first. */
            if (cur->n) {
                uv_mutex_lock(&w->mu);
                send_log(w, cur);
                uv_mutex_unlock(&w->mu);
            } else {
                item_unref(cur);
            }
            cur = NULL;
        }
        if (!slow) {
            slow = item_new(ITEM_SLOW);
            uv_mutex_lock(&w->mu);
            slow->gen = w->gen;
            uv_mutex_unlock(&w->mu);
        }
        item_add(slow, op, 0);
    }
    if (slow) run_slow(w, slow); /* then cur is NULL: a slow op sent it on */
    w->cur = cur;
}

/* Sends the open batch to the logger (under mu). */
static void cut(writer *w)
{
    item *it = w->cur;
    if (!it) return;
    w->cur = NULL;
    w->cur_n = 0;
    if (it->n) send_log(w, it);
    else item_unref(it);
}

/* Nothing for the logger to do (under mu). */
static bool log_idle(const writer *w) { return !w->log_busy && !w->lq.head; }

/* Group commit. With a log, an op that arrives while the logger is idle is
 * decided and sent on at once; while the logger appends an earlier batch,
 * what arrives joins the open batch (decided in chunks of SEQ_CHUNK, so
 * deciding overlaps the sync), cut when the logger is free again, when it
 * holds max_batch ops, or window_us after it began: everything that
 * arrived during one fdatasync shares the next. delay_us makes a batch
 * gather that long even while the logger is idle (fewer fdatasyncs at a
 * low rate, each ack that much later). Without a log (every op a slow
 * batch, writer_start()), ops gather for window_us, up to max_batch.
 * window_us 0: never wait; delay_us is at most window_us. A read waiting
 * for the store (urgent) cuts the wait: its conversation's ops may be in
 * the open batch. Sets *wake: when the wait ends by itself. */
static bool gathering(const writer *w, uint64_t now, uint64_t since, uint64_t *wake)
{
    uint64_t until = since + (uint64_t)w->window_us * 1000;
    uint64_t delay = since + (uint64_t)w->delay_us * 1000;
    if (delay > until) delay = until;
    size_t have = w->depth + (w->cur ? w->cur->n : 0);
    if (!w->window_us || w->stopping || w->reset_needed || w->urgent || now >= until ||
        have >= w->max_batch)
        return false;
    *wake = until;
    if (!w->log || !log_idle(w)) return true;
    if (now >= delay) return false;
    *wake = delay;
    return true;
}

static void sequencer_main(void *arg)
{
    writer *w = arg;
    uint64_t since = 0; /* when the batch being gathered began (0: none) */
    uv_mutex_lock(&w->mu);
    for (;;) {
        if (!w->head && !w->cur) {
            if (w->stopping) break; /* drained */
            since = 0;
            uv_cond_wait(&w->cond, &w->mu);
            continue;
        }
        uint64_t now = uv_hrtime(), wake = 0;
        if (!since) since = now;
        bool gather = gathering(w, now, since, &wake);
        if (gather && (w->depth < SEQ_CHUNK || !w->log)) {
            /* Woken by the logger going idle, a chunk, max_batch, a stop. */
            uv_cond_timedwait(&w->cond, &w->mu, wake - now);
            continue;
        }
        if (w->head) {
            /* After a failed append the sequencer starts over from the
             * store once the applier holds everything logged; until then
             * (a full disk may hold it up), ops fail at once with the
             * append's error. The open batch was decided before the reset:
             * it goes first (the logger fails it with its generation). */
            if (w->reset_needed) cut(w);
            /* Bounded memory: wait for the applier. */
            if (w->unapplied >= MAX_UNAPPLIED || w->unapplied_bytes >= MAX_UNAPPLIED_BYTES) {
                cut(w);
                while ((w->unapplied >= MAX_UNAPPLIED ||
                        w->unapplied_bytes >= MAX_UNAPPLIED_BYTES) && !w->apply_rc)
                    uv_cond_wait(&w->cond, &w->mu);
            }
            int fail_rc = ERR_OK;
            if (w->seq && w->reset_needed) {
                if (!w->unapplied && !w->need_clean) start_over(w);
                else fail_rc = w->last_log_error;
            }
            if (w->seq) seq_applied(w->seq, w->applied);
            if (w->cur && w->cur->n >= w->max_batch) cut(w); /* full: it goes first */
            size_t n, room = w->max_batch - (w->cur ? w->cur->n : 0);
            writer_op *ops = take(w, room, &n);
            /* The store cannot take more (its map or the disk is full):
             * what is logged waits for room, and nothing new is acked
             * meanwhile. */
            int refuse = w->log ? w->apply_rc : ERR_OK;
            if (w->seq) seq_refuse(w->seq, refuse);
            item *before = w->cur;
            uv_mutex_unlock(&w->mu);
            sequence_ops(w, ops, fail_rc, refuse);
            uv_mutex_lock(&w->mu);
            w->cur_n = w->cur ? w->cur->n : 0;
            /* A batch cut inside (its bytes, a slow op): the open one is new. */
            if (w->cur != before) since = w->cur ? uv_hrtime() : 0;
            if (gather) continue; /* a chunk decided while the logger is busy */
        }
        cut(w);
        since = 0;
    }
    w->seq_ended = true;
    uv_cond_signal(&w->log_cond);
    uv_mutex_unlock(&w->mu);
}

/* ---- logger -------------------------------------------------------------------- */

/* Enough is logged and unapplied that the applier stops gathering (under mu). */
static bool apply_now(const writer *w)
{
    return w->unapplied >= APPLY_TRIGGER || w->unapplied_bytes >= APPLY_TRIGGER_BYTES;
}

/* Appends log batches its[0..n) with one write and one fdatasync, then
 * hands them to the completer and (those with entries) the applier, or
 * fails them all. Unlocked on entry and exit. */
static void log_group(writer *w, item **its, size_t n)
{
    struct iovec iov[64];
    size_t k = 0;
    int rc = ERR_OK;
    uint64_t end = 0, t1 = uv_hrtime(), bytes = 0;
    bool wake_applier = false;
    uv_mutex_lock(&w->mu);
    bool failed = its[0]->gen == w->failed_gen && w->reset_needed;
    uv_mutex_unlock(&w->mu);
    for (size_t i = 0; i < n && !failed; i++)
        if (its[i]->buf.len) {
            iov[k++] = (struct iovec){its[i]->buf.p, its[i]->buf.len};
            bytes += its[i]->buf.len;
        }
    if (!failed && k) rc = wal_append(w->log, iov, k, &end);
    uint64_t t2 = uv_hrtime();
    uv_mutex_lock(&w->mu);
    if (!failed && rc == ERR_OK) {
        w->st.log_batches += k ? 1 : 0;
        w->st.log_bytes += bytes;
        if (k) hist_observe(&w->st.fsync_ns, &hist_seconds, t2 - t1);
        for (size_t j = n; k && j-- > 0;) /* the last one with entries ends the write */
            if (its[j]->buf.len) { its[j]->lsn_end = end; break; }
    } else {
        if (!failed) {
            log_error("log append failed: the batch is refused", "batches=%zu err=%s", n,
                      err_name(rc));
            w->failed_gen = its[0]->gen;
            w->reset_needed = true;
            wake_applier = true; /* the sequencer's start over waits for it */
            w->need_clean = true;
            w->last_log_error = rc;
            w->fail_lo = its[0]->bno;
        }
        rc = w->last_log_error;
    }
    for (size_t i = 0; i < n; i++) {
        item *it = its[i];
        w->st.batches++;
        w->st.ops += it->n;
        if (it->n > w->st.max_batch) w->st.max_batch = it->n;
        hist_observe(&w->st.batch_ops, &hist_sizes, it->n);
        if (rc != ERR_OK) {
            w->st.failed_batches++;
            it->rc = rc;
            w->fail_hi = it->bno;
        } else {
            hist_observe(&w->st.batch_ns, &hist_seconds, t2 - it->t0);
        }
        if (rc == ERR_OK && it->buf.len) {
            w->acked = it->bno; /* readers of anything wait for this one */
            it->refs = 2; /* completer and applier */
            complete_later(w, it);
            wake_applier |= !w->aq.head;
            qpush(&w->aq, it);
        } else {
            /* Failed, or nothing to apply (refusals, duplicates): done. */
            w->unapplied--;
            w->unapplied_bytes -= held_bytes(it);
            complete_later(w, it);
        }
    }
    /* The applier waits for a first batch, or gathers until it has enough
     * (woken here once) or its delay ends: no wakeup per append. */
    if (wake_applier || apply_now(w)) uv_cond_signal(&w->app_cond);
    uv_cond_broadcast(&w->cond); /* a sequencer starting over waits for unapplied */
    uv_cond_broadcast(&w->applied_cond); /* readers of a failed batch wait no more */
    uv_mutex_unlock(&w->mu);
}

/* After a failed append: one good append (an entry that changes nothing)
 * overwrites whatever the failed one left in the log, which would
 * otherwise be replayed at the next start. Until it works nothing new is
 * decided. Unlocked. */
static void log_clean(writer *w)
{
    uint8_t nop = LOGREC_NOP;
    struct iovec v = {&nop, 1};
    uint64_t end;
    int rc = wal_append(w->log, &v, 1, &end);
    uv_mutex_lock(&w->mu);
    if (rc == ERR_OK) {
        w->need_clean = false;
        log_info("the message log takes appends again", "lsn=%llu", (unsigned long long)end);
        uv_cond_broadcast(&w->cond);
    }
    uv_mutex_unlock(&w->mu);
}

static void logger_main(void *arg)
{
    writer *w = arg;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->lq.head && !w->seq_ended) {
            if (w->need_clean && w->log) {
                uv_mutex_unlock(&w->mu);
                log_clean(w);
                uv_mutex_lock(&w->mu);
                if (w->need_clean) uv_cond_timedwait(&w->log_cond, &w->mu, 100 * 1000000ull);
                continue;
            }
            uv_cond_wait(&w->log_cond, &w->mu);
        }
        if (!w->lq.head) break;
        item *list = w->lq.head;
        w->lq.head = w->lq.tail = NULL;
        w->log_busy = true;
        uv_mutex_unlock(&w->mu);
        while (list) {
            if (list->kind == ITEM_SLOW) {
                item *it = list;
                list = list->next;
                uv_mutex_lock(&w->mu);
                if (w->reset_needed && it->gen == w->failed_gen) {
                    /* After a failed append of its generation: the store
                     * lacks what came before it (and the failed bytes may
                     * be replayed): refused. */
                    it->rc = w->last_log_error;
                    complete_later(w, it);
                    it->done = true;
                    uv_cond_broadcast(&w->cond);
                } else {
                    qpush(&w->aq, it);
                    w->aq_slow = true;
                    uv_cond_signal(&w->app_cond);
                }
                uv_mutex_unlock(&w->mu);
                continue;
            }
            item *group[64];
            size_t n = 0, bytes = 0;
            while (list && list->kind == ITEM_LOG && n < 64 &&
                   (n == 0 || bytes + list->buf.len <= w->append_bytes)) {
                bytes += list->buf.len;
                group[n++] = list;
                list = list->next;
            }
            log_group(w, group, n);
        }
        uv_mutex_lock(&w->mu);
        w->log_busy = false;
        /* Idle: the sequencer cuts what gathered during the append. */
        if (!w->lq.head) uv_cond_signal(&w->cond);
    }
    w->log_ended = true;
    uv_cond_signal(&w->app_cond);
    uv_mutex_unlock(&w->mu);
}

/* ---- applier ------------------------------------------------------------------- */

typedef struct conv_upd { uint64_t conv, last_seq, version; int64_t last_ts; } conv_upd;
typedef struct member_upd { uint64_t conv, uid, delivered, read, version; } member_upd;
typedef struct seen_upd { uint64_t uid; int64_t ts; } seen_upd;

/* What one applier transaction changes, coalesced. */
typedef struct apply_set {
    conv_upd *c;
    member_upd *m;
    seen_upd *u;
    size_t nc, nm, nu, cc, cm, cu;
    uint64_t clock;
    int err;
} apply_set;

static void *grow(void *p, size_t *cap, size_t n, size_t size, int *err)
{
    if (n < *cap) return p;
    size_t c = *cap ? *cap * 2 : 256;
    void *q = realloc(p, c * size);
    if (!q) { *err = ERR_NOMEM; return p; }
    *cap = c;
    return q;
}

static int by_conv(const void *a, const void *b)
{
    const conv_upd *x = a, *y = b;
    return x->conv < y->conv ? -1 : x->conv > y->conv;
}

static int by_member(const void *a, const void *b)
{
    const member_upd *x = a, *y = b;
    if (x->conv != y->conv) return x->conv < y->conv ? -1 : 1;
    return x->uid < y->uid ? -1 : x->uid > y->uid;
}

static int by_user(const void *a, const void *b)
{
    const seen_upd *x = a, *y = b;
    return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Writes one batch's messages and gathers its other changes into set. */
static int apply_entries(store_txn *txn, const uint8_t *p, size_t len, apply_set *set)
{
    size_t off = 0;
    logrec r;
    int rc;
    while ((rc = logrec_next(p, len, &off, &r)) == ERR_OK) {
        if (r.version > set->clock) set->clock = r.version;
        switch (r.kind) {
        case LOGREC_MSG: {
            store_msg m = {r.conv, r.seq, r.uid, r.ts, r.cmid, r.cmid_len, r.body, r.body_len};
            if ((rc = store_msg_put(txn, &m)) < 0) return rc;
            if ((rc = store_cmid_put(txn, r.conv, r.uid, r.cmid, r.cmid_len, r.seq)) < 0) return rc;
            set->c = grow(set->c, &set->cc, set->nc, sizeof *set->c, &set->err);
            set->m = grow(set->m, &set->cm, set->nm, sizeof *set->m, &set->err);
            if (set->err) return set->err;
            set->c[set->nc++] = (conv_upd){r.conv, r.seq, r.version, r.ts};
            set->m[set->nm++] = (member_upd){r.conv, r.uid, r.seq, r.seq, r.version};
            break;
        }
        case LOGREC_CURSOR:
            set->m = grow(set->m, &set->cm, set->nm, sizeof *set->m, &set->err);
            if (set->err) return set->err;
            set->m[set->nm++] = (member_upd){r.conv, r.uid, r.delivered, r.read, r.version};
            break;
        case LOGREC_SEEN:
            set->u = grow(set->u, &set->cu, set->nu, sizeof *set->u, &set->err);
            if (set->err) return set->err;
            set->u[set->nu++] = (seen_upd){r.uid, r.ts};
            break;
        }
    }
    return rc == ERR_NOT_FOUND ? ERR_OK : ERR_CORRUPT;
}

#define MAXU(a, b) ((a) > (b) ? (a) : (b))

/* Writes the coalesced changes: each conversation record and each member
 * once, whatever number of entries moved them; cursors only grow. */
static int apply_set_write(store_txn *txn, apply_set *set)
{
    int rc;
    if (set->nc) qsort(set->c, set->nc, sizeof *set->c, by_conv);
    for (size_t i = 0; i < set->nc;) {
        conv_upd u = set->c[i];
        for (i++; i < set->nc && set->c[i].conv == u.conv; i++) {
            u.last_seq = MAXU(u.last_seq, set->c[i].last_seq);
            u.last_ts = MAXU(u.last_ts, set->c[i].last_ts);
            u.version = MAXU(u.version, set->c[i].version);
        }
        store_conv c;
        if ((rc = store_conv_get(txn, u.conv, &c)) == ERR_NOT_FOUND) continue;
        if (rc < 0) return rc;
        c.last_seq = MAXU(c.last_seq, u.last_seq);
        c.last_ts = MAXU(c.last_ts, u.last_ts);
        c.version = MAXU(c.version, u.version);
        if ((rc = store_conv_put(txn, &c)) < 0) return rc;
    }
    if (set->nm) qsort(set->m, set->nm, sizeof *set->m, by_member);
    for (size_t i = 0; i < set->nm;) {
        member_upd u = set->m[i];
        for (i++; i < set->nm && set->m[i].conv == u.conv && set->m[i].uid == u.uid; i++) {
            u.delivered = MAXU(u.delivered, set->m[i].delivered);
            u.read = MAXU(u.read, set->m[i].read);
            u.version = MAXU(u.version, set->m[i].version);
        }
        store_member m;
        if ((rc = store_member_get(txn, u.conv, u.uid, &m)) == ERR_NOT_FOUND) continue;
        if (rc < 0) return rc;
        if (u.delivered <= m.delivered && u.read <= m.read && u.version <= m.version) continue;
        m.delivered = MAXU(m.delivered, u.delivered);
        m.read = MAXU(m.read, u.read);
        m.version = MAXU(m.version, u.version);
        if ((rc = store_member_put(txn, u.conv, &m)) < 0) return rc;
    }
    if (set->nu) qsort(set->u, set->nu, sizeof *set->u, by_user);
    for (size_t i = 0; i < set->nu;) {
        seen_upd u = set->u[i];
        for (i++; i < set->nu && set->u[i].uid == u.uid; i++) u.ts = MAXU(u.ts, set->u[i].ts);
        store_user usr;
        if ((rc = store_user_get(txn, u.uid, &usr)) == ERR_NOT_FOUND) continue;
        if (rc < 0) return rc;
        if (u.ts <= usr.last_seen) continue;
        usr.last_seen = u.ts;
        if ((rc = store_user_put(txn, &usr)) < 0) return rc;
    }
    store_clock_raise(txn, set->clock);
    return ERR_OK;
}

static void apply_set_free(apply_set *set)
{
    free(set->c);
    free(set->m);
    free(set->u);
    memset(set, 0, sizeof *set);
}

/* Writes logged batches its[0..n) into the store in one transaction and
 * publishes the position. Retries (the log holds them) until it works or
 * the writer stops. Unlocked. */
static void apply_logged(writer *w, item **its, size_t n)
{
    uv_mutex_lock(&w->mu);
    bool abandoned = w->abandoned;
    uv_mutex_unlock(&w->mu);
    if (abandoned) {
        /* An earlier group was given up: applying this one would move
         * log_applied past it. The log keeps both for the next start. */
        uv_mutex_lock(&w->mu);
        for (size_t i = 0; i < n; i++) {
            w->unapplied--;
            w->unapplied_bytes -= held_bytes(its[i]);
        }
        uv_cond_broadcast(&w->cond);
        uv_cond_broadcast(&w->applied_cond);
        uv_mutex_unlock(&w->mu);
        for (size_t i = 0; i < n; i++) item_unref(its[i]);
        return;
    }
    uint64_t lsn = 0;
    for (size_t i = 0; i < n; i++)
        if (its[i]->lsn_end) lsn = its[i]->lsn_end;
    for (int attempt = 0;; attempt++) {
        uint64_t t0 = uv_hrtime();
        apply_set set = {0};
        store_txn *txn;
        int rc = store_begin(w->s, true, &txn);
        for (size_t i = 0; rc == ERR_OK && i < n; i++)
            rc = apply_entries(txn, its[i]->buf.p, its[i]->buf.len, &set);
        if (rc == ERR_OK) rc = apply_set_write(txn, &set);
        if (rc == ERR_OK && lsn) rc = store_meta_put(txn, "log_applied", lsn);
        apply_set_free(&set);
        if (rc == ERR_OK) rc = store_commit(txn);
        else store_abort(txn);
        uint64_t t1 = uv_hrtime();
        if (rc == ERR_OK) {
            /* The log keeps what this commit applied until the next
             * commit (or a sync): a store whose commits stop syncing
             * their meta page (MDB_NOMETASYNC, one fsync instead of two)
             * needs that, and a full sync loses nothing by it. */
            if (w->released_upto) wal_release(w->log, w->released_upto);
            if (lsn) w->released_upto = lsn;
            /* The next segment, off the ack path: once the current one is
             * half full, this thread creates (or takes a spare for) the
             * next, so that the append that fills the current one does not
             * zero-fill a file before its fdatasync (wal.h: safe beside the
             * logger's appends; an error leaves it to that append). */
            wal_prepare(w->log);
            uv_mutex_lock(&w->mu);
            if (w->apply_rc) log_info("the store takes the log again", "err=%s", err_name(w->apply_rc));
            w->apply_rc = ERR_OK;
            w->st.applies++;
            w->st.apply_ns += t1 - t0;
            for (size_t i = 0; i < n; i++) {
                w->unapplied--;
                w->unapplied_bytes -= held_bytes(its[i]);
                if (its[i]->bno > w->applied) w->applied = its[i]->bno;
            }
            uv_cond_broadcast(&w->applied_cond);
            uv_cond_broadcast(&w->cond);
            uv_mutex_unlock(&w->mu);
            for (size_t i = 0; i < n; i++) item_unref(its[i]);
            return;
        }
        if (rc == ERR_IO && store_space_low(w->s)) rc = ERR_DISK_FULL;
        if (attempt == 0)
            log_error("applying the log to the store failed: retrying", "batches=%zu err=%s", n,
                      err_name(rc));
        uv_mutex_lock(&w->mu);
        w->apply_rc = rc == ERR_FULL || rc == ERR_DISK_FULL ? rc : ERR_IO;
        uv_cond_broadcast(&w->cond); /* a sequencer waiting for room refuses instead */
        bool stopping = w->stopping;
        uv_mutex_unlock(&w->mu);
        if (stopping && attempt >= 10) {
            /* They stay in the log: the next start replays them. */
            log_error("stopping with logged batches not in the store: the next start applies them",
                      "batches=%zu err=%s", n, err_name(rc));
            uv_mutex_lock(&w->mu);
            w->abandoned = true;
            uv_cond_broadcast(&w->applied_cond);
            for (size_t i = 0; i < n; i++) {
                w->unapplied--;
                w->unapplied_bytes -= held_bytes(its[i]);
            }
            uv_cond_broadcast(&w->cond);
            uv_mutex_unlock(&w->mu);
            for (size_t i = 0; i < n; i++) item_unref(its[i]);
            return;
        }
        uv_sleep(attempt < 10 ? 10 : 200);
    }
}

/* Runs a slow batch in its own transaction (after what was logged before
 * it is applied) and hands it to the completer and the sequencer. */
static void apply_slow(writer *w, item *it)
{
    store_txn *txn = NULL;
    uv_mutex_lock(&w->mu);
    int rc = w->abandoned ? (w->apply_rc ? w->apply_rc : ERR_IO) : ERR_OK;
    uv_mutex_unlock(&w->mu);
    /* After a given-up group the store lacks what came before: refused. */
    if (rc == ERR_OK) rc = store_begin(w->s, true, &txn);
    uint64_t t0 = uv_hrtime(), t1 = t0;
    bool committed = false;
    if (rc == ERR_OK) {
        size_t i = 0;
        for (writer_op *op = it->ops; op; op = op->next, i++) {
            it->rcs[i] = op->apply(op, txn);
            if (storage_error(it->rcs[i])) { rc = it->rcs[i]; break; }
        }
        if (w->batch_applied) w->batch_applied(w->ctx);
        size_t nt;
        const uint64_t *t = store_touched(txn, &nt);
        if (rc == ERR_OK && nt && (it->touched = malloc(nt * sizeof *t))) {
            memcpy(it->touched, t, nt * sizeof *t);
            it->ntouched = nt;
        } else if (rc == ERR_OK && nt) {
            rc = ERR_NOMEM;
        }
        it->clock = store_clock(txn);
        t1 = uv_hrtime();
        if (rc == ERR_OK) { rc = store_commit(txn); committed = true; }
        else store_abort(txn);
        /* These ops are not in the log: durable now, and with them every
         * earlier commit (the log may let go of what they applied). */
        if (rc == ERR_OK && w->log) rc = store_sync(w->s);
        if (rc == ERR_OK && w->log && w->released_upto) wal_release(w->log, w->released_upto);
    }
    uint64_t t2 = uv_hrtime();
    if (rc == ERR_IO && store_space_low(w->s)) rc = ERR_DISK_FULL;
    if (rc != ERR_OK) {
        log_error("storage batch failed", "ops=%zu err=%s", it->n, err_name(rc));
        it->clock = 0;
        free(it->touched);
        it->touched = NULL;
        it->ntouched = 0;
    }
    it->rc = rc;
    uv_mutex_lock(&w->mu);
    w->st.apply_ns += t1 - t0;
    w->st.commit_ns += t2 - t1;
    w->st.batches++;
    w->st.ops += it->n;
    if (it->n > w->st.max_batch) w->st.max_batch = it->n;
    if (rc != ERR_OK) w->st.failed_batches++;
    hist_observe(&w->st.batch_ops, &hist_sizes, it->n);
    if (committed) {
        hist_observe(&w->st.batch_ns, &hist_seconds, t2 - it->t0);
        hist_observe(&w->st.fsync_ns, &hist_seconds, t2 - t1);
    }
    complete_later(w, it);
    it->done = true;
    uv_cond_broadcast(&w->cond);
    uv_mutex_unlock(&w->mu);
}

/* Entry bytes one apply transaction takes at most: a sixteenth of the space
 * left, within [APPLY_GROUP_MIN, APPLY_GROUP_MAX]. Unlocked (applier). */
static size_t group_bytes(writer *w)
{
    uint64_t left = store_space_left(w->s) / 16;
    return left < APPLY_GROUP_MIN ? APPLY_GROUP_MIN : left > APPLY_GROUP_MAX ? APPLY_GROUP_MAX : left;
}

static void applier_main(void *arg)
{
    writer *w = arg;
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->aq.head && !w->log_ended) uv_cond_wait(&w->app_cond, &w->mu);
        if (!w->aq.head) break;
        if (w->apply_delay_ms && w->aq.head->kind == ITEM_LOG) {
            /* Gather logged batches: fewer, larger commits, fewer pages
             * written per message. A slow batch, a waiting read or a stop
             * cuts the wait short. */
            uint64_t until = uv_hrtime() + (uint64_t)w->apply_delay_ms * 1000000;
            for (uint64_t now = uv_hrtime(); now < until && !w->urgent && !w->log_ended &&
                                             !w->stopping && !w->aq_slow && !w->reset_needed &&
                                             !apply_now(w);
                 now = uv_hrtime())
                uv_cond_timedwait(&w->app_cond, &w->mu, until - now);
        }
        item *list = w->aq.head;
        w->aq.head = w->aq.tail = NULL;
        w->aq_slow = false;
        uv_mutex_unlock(&w->mu);
        while (list) {
            if (list->kind == ITEM_SLOW) {
                item *it = list;
                list = list->next;
                apply_slow(w, it);
                continue;
            }
            item *group[APPLY_GROUP];
            size_t n = 0, bytes = 0, cap = group_bytes(w);
            while (list && list->kind == ITEM_LOG && n < APPLY_GROUP &&
                   (n == 0 || bytes + list->buf.len <= cap)) {
                bytes += list->buf.len;
                group[n++] = list;
                list = list->next;
            }
            apply_logged(w, group, n);
        }
        uv_mutex_lock(&w->mu);
    }
    w->app_ended = true;
    uv_cond_signal(&w->done_cond);
    uv_cond_broadcast(&w->applied_cond);
    uv_mutex_unlock(&w->mu);
}

/* ---- completer ------------------------------------------------------------------ */

static void completer_main(void *arg)
{
    writer *w = arg;
    store_forbid_this_thread(); /* the completions read nothing (db.h) */
    uv_mutex_lock(&w->mu);
    for (;;) {
        while (!w->chead && !(w->app_ended && w->log_ended)) uv_cond_wait(&w->done_cond, &w->mu);
        if (!w->chead) break;
        item *list = w->chead;
        w->chead = w->ctail = NULL;
        uv_mutex_unlock(&w->mu);
        uint64_t t1 = uv_hrtime();
        for (item *it = list, *in; it; it = in) {
            in = it->cnext;
            size_t i = 0;
            for (writer_op *op = it->ops, *next; op; op = next, i++) {
                next = op->next; /* done() may free op */
                op->next = NULL;
                op->done(op, it->rc != ERR_OK ? it->rc : it->rcs[i]);
            }
            it->ops = it->tail = NULL;
            if (w->batch_end) w->batch_end(w->ctx);
            item_unref(it);
        }
        uint64_t t2 = uv_hrtime();
        uv_mutex_lock(&w->mu);
        w->st.done_ns += t2 - t1;
    }
    uv_mutex_unlock(&w->mu);
}

/* ---- start, replay, stop ------------------------------------------------------------ */

typedef struct replay_ctx {
    store *s;
    store_txn *txn;
    apply_set set;
    uint64_t lsn, records, bytes;
    int rc;
} replay_ctx;

static int replay_flush(replay_ctx *x)
{
    if (!x->txn) return ERR_OK;
    int rc = apply_set_write(x->txn, &x->set);
    if (rc == ERR_OK) rc = store_meta_put(x->txn, "log_applied", x->lsn);
    apply_set_free(&x->set);
    if (rc == ERR_OK) rc = store_commit(x->txn);
    else store_abort(x->txn);
    x->txn = NULL;
    x->bytes = 0;
    return rc;
}

static int replay_one(void *arg, uint64_t lsn, const void *p, size_t len)
{
    replay_ctx *x = arg;
    int rc;
    if (!x->txn && (rc = store_begin(x->s, true, &x->txn)) < 0) return rc;
    if ((rc = apply_entries(x->txn, p, len, &x->set)) < 0) {
        log_error("a log record does not decode", "lsn=%llu err=%s", (unsigned long long)lsn,
                  err_name(rc));
        return rc;
    }
    /* The position past this record: the log's framing (wal.h). */
    x->lsn = lsn + 8 + ((len + 7) & ~(size_t)7);
    x->records++;
    x->bytes += len;
    return x->bytes >= (64u << 20) ? replay_flush(x) : ERR_OK;
}

/* Whether dir holds a log segment file (NNNN.wal). */
static bool log_has_segments(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        found = n > 4 && !strcmp(e->d_name + n - 4, ".wal");
    }
    closedir(d);
    return found;
}

static int writer_init(writer **out, store *s, uint32_t window_us, size_t max_batch,
                       size_t max_queue, void (*batch_applied)(void *ctx),
                       void (*batch_end)(void *ctx), void *ctx)
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
    *out = w;
    return ERR_OK;
}

static int threads_start(writer *w)
{
    uv_mutex_init(&w->mu);
    uv_cond_init(&w->cond);
    uv_cond_init(&w->log_cond);
    uv_cond_init(&w->app_cond);
    uv_cond_init(&w->done_cond);
    uv_cond_init(&w->applied_cond);
    int rc;
    if ((rc = uv_thread_create(&w->done_tid, completer_main, w)) != 0) goto fail0;
    if ((rc = uv_thread_create(&w->app_tid, applier_main, w)) != 0) goto fail1;
    if ((rc = uv_thread_create(&w->log_tid, logger_main, w)) != 0) goto fail2;
    if ((rc = uv_thread_create(&w->seq_tid, sequencer_main, w)) != 0) goto fail3;
    return ERR_OK;
fail3:
    uv_mutex_lock(&w->mu);
    w->seq_ended = true;
    uv_cond_signal(&w->log_cond);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->log_tid);
    goto joined2;
fail2:
    uv_mutex_lock(&w->mu);
    w->log_ended = true;
    uv_cond_signal(&w->app_cond);
    uv_mutex_unlock(&w->mu);
joined2:
    uv_thread_join(&w->app_tid);
    goto joined1;
fail1:
    uv_mutex_lock(&w->mu);
    w->app_ended = w->log_ended = true;
    uv_cond_signal(&w->done_cond);
    uv_mutex_unlock(&w->mu);
joined1:
    uv_thread_join(&w->done_tid);
fail0:
    log_error("cannot start the writer's threads", "err=\"%s\"", uv_strerror(rc));
    uv_cond_destroy(&w->applied_cond);
    uv_cond_destroy(&w->done_cond);
    uv_cond_destroy(&w->app_cond);
    uv_cond_destroy(&w->log_cond);
    uv_cond_destroy(&w->cond);
    uv_mutex_destroy(&w->mu);
    return ERR_IO;
}

int writer_start(writer **out, store *s, uint32_t window_us, size_t max_batch, size_t max_queue,
                 void (*batch_applied)(void *ctx), void (*batch_end)(void *ctx), void *ctx)
{
    writer *w;
    int rc = writer_init(&w, s, window_us, max_batch, max_queue, batch_applied, batch_end, ctx);
    if (rc < 0) return rc;
    if ((rc = threads_start(w)) < 0) { free(w); return rc; }
    *out = w;
    return ERR_OK;
}

int writer_start_log(writer **out, store *s, const writer_options *o,
                     void (*batch_applied)(void *ctx), void (*batch_end)(void *ctx), void *ctx)
{
    writer *w;
    int rc = writer_init(&w, s, o->window_us, o->max_batch, o->max_queue, batch_applied,
                         batch_end, ctx);
    if (rc < 0) return rc;
    w->apply_delay_ms = o->apply_delay_ms;
    w->delay_us = o->delay_us;
    uint64_t seg = o->segment_bytes ? o->segment_bytes : WAL_SEGMENT_DEFAULT;
    w->batch_bytes = seg / 4 < BATCH_BYTES ? seg / 4 : BATCH_BYTES;
    w->append_bytes = seg / 2;
    uint64_t from = 0;
    store_txn *txn;
    if ((rc = store_begin(s, false, &txn)) == ERR_OK) {
        rc = store_meta_get(txn, "log_applied", &from);
        store_abort(txn);
    }
    if (rc == ERR_OK && from && !log_has_segments(o->log_dir)) {
        /* A store without its log: restored from a copy (mdb_copy), or the
         * log was removed. Everything the store holds is there; a new log
         * starts. */
        log_warn("the store has no message log: starting a new one", "dir=%s log_applied=%llu",
                 o->log_dir, (unsigned long long)from);
        from = 0;
    }
    replay_ctx x = {s, NULL, {0}, from, 0, 0, ERR_OK};
    wal_options wo = {o->log_dir, o->segment_bytes, o->io};
    if (rc == ERR_OK) rc = wal_open(&w->log, &wo, from, replay_one, &x);
    if (rc == ERR_OK) rc = replay_flush(&x);
    else if (x.txn) { store_abort(x.txn); apply_set_free(&x.set); }
    if (rc == ERR_OK && x.records)
        log_info("replayed the log into the store", "records=%llu from=%llu to=%llu",
                 (unsigned long long)x.records, (unsigned long long)from,
                 (unsigned long long)x.lsn);
    if (rc == ERR_OK && (rc = store_begin(s, true, &txn)) == ERR_OK) {
        /* Everything logged is applied now: the log may start afresh there
         * (recorded before the segments are released, so that a crash in
         * between never leaves a position in a released segment). */
        rc = store_meta_put(txn, "log_applied", wal_end(w->log));
        rc = rc == ERR_OK ? store_commit(txn) : (store_abort(txn), rc);
    }
    if (rc == ERR_OK) wal_release(w->log, wal_end(w->log));
    /* A fresh log has no segment: create the first one here, before the
     * threads start, not in the first append (on the ack path of the first
     * messages). A log more than half into its segment gets the next. An
     * error is left to the append. */
    if (rc == ERR_OK) wal_prepare(w->log);
    if (rc == ERR_OK) rc = seq_new(&w->seq, s);
    if (rc == ERR_OK && (rc = store_begin(s, false, &txn)) == ERR_OK) {
        seq_set_clock(w->seq, store_clock(txn));
        store_abort(txn);
    }
    if (rc == ERR_OK) rc = threads_start(w);
    if (rc < 0) {
        if (w->log) wal_close(w->log);
        seq_free(w->seq);
        free(w);
        return rc;
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
    /* Wake the sequencer for the first op, a chunk, or a full batch (with
     * what the open batch holds). */
    if (w->depth == 1 || w->depth == SEQ_CHUNK || w->depth + w->cur_n >= w->max_batch)
        uv_cond_signal(&w->cond);
    uv_mutex_unlock(&w->mu);
    return ERR_OK;
}

uint64_t writer_acked(writer *w)
{
    uv_mutex_lock(&w->mu);
    uint64_t a = w->acked;
    uv_mutex_unlock(&w->mu);
    return a;
}

bool writer_is_applied(writer *w, uint64_t batch)
{
    uv_mutex_lock(&w->mu);
    bool yes = w->applied >= batch || !w->log || (batch >= w->fail_lo && batch <= w->fail_hi);
    uv_mutex_unlock(&w->mu);
    return yes;
}

int writer_wait_applied(writer *w, uint64_t batch, uint32_t timeout_ms)
{
    if (!w->log) return ERR_OK;
    uint64_t until = uv_hrtime() + (uint64_t)timeout_ms * 1000000;
    uv_mutex_lock(&w->mu);
    w->urgent++;
    uv_cond_signal(&w->app_cond);
    uv_cond_signal(&w->cond); /* the open batch may hold what the read waits for */
    int rc = ERR_OK;
    for (uint64_t now = uv_hrtime();
         w->applied < batch && !w->app_ended && !w->abandoned &&
         !(batch >= w->fail_lo && batch <= w->fail_hi);
         now = uv_hrtime()) {
        if (now >= until) { rc = ERR_TIMEOUT; break; }
        uv_cond_timedwait(&w->applied_cond, &w->mu, until - now);
    }
    w->urgent--;
    uv_mutex_unlock(&w->mu);
    return rc;
}

void writer_stop(writer *w)
{
    uv_mutex_lock(&w->mu);
    w->stopping = true;
    uv_cond_broadcast(&w->cond);
    uv_cond_signal(&w->app_cond);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->seq_tid);  /* sequences what is queued */
    uv_thread_join(&w->log_tid);  /* logs it */
    uv_thread_join(&w->app_tid);  /* applies it */
    uv_thread_join(&w->done_tid); /* completes it */
    if (w->log && store_sync(w->s) == ERR_OK && w->released_upto)
        wal_release(w->log, w->released_upto);
    if (w->log) wal_close(w->log);
    seq_free(w->seq);
    uv_cond_destroy(&w->applied_cond);
    uv_cond_destroy(&w->done_cond);
    uv_cond_destroy(&w->app_cond);
    uv_cond_destroy(&w->log_cond);
    uv_cond_destroy(&w->cond);
    uv_mutex_destroy(&w->mu);
    free(w);
}

void writer_get_stats(writer *w, writer_stats *st)
{
    uv_mutex_lock(&w->mu);
    *st = w->st;
    st->queued = w->depth;
    st->unapplied = w->unapplied;
    uv_mutex_unlock(&w->mu);
}
