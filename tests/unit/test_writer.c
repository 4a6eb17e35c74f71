/* Unit tests for src/writer.c: the group-commit storage writer.
 *
 * Operations are applied on the writer thread and completed (done(),
 * batch_end()) on the completer thread once their batch is durable.
 * Every test runs a real store (LMDB in a fresh mkdtemp directory). The
 * operations' apply() creates users with known names, so what a batch
 * stored is checked by reading the store afterwards. Batch composition is
 * made deterministic with a "gate": an operation whose apply() blocks on a
 * condition variable until the test opens it; while it blocks, the test
 * queues exactly the operations it wants in the next batch. Waiting is done
 * on condition variables with a generous deadline that only turns a hang
 * into a failure: nothing here asserts on time.
 */
#include "test.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "store/writer.h"

#define MAP (64u << 20)
#define DEADLINE_S 60

/* ---- fixture ---------------------------------------------------------------- */

static char tmp_dir[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

static store *fresh_store(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/parley_writer_XXXXXX");
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); exit(2); }
    store *s = NULL;
    int rc = store_open(&s, tmp_dir, MAP);
    if (rc) { fprintf(stderr, "store_open: %s\n", err_name(rc)); exit(2); }
    return s;
}

static void close_store(store *s)
{
    store_close(s);
    nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* The uid of user `name`, 0 if absent (read transaction). */
static uint64_t user_uid(store *s, const char *name)
{
    store_txn *t = NULL;
    if (store_begin(s, false, &t)) exit(2);
    store_user u;
    int rc = store_user_by_name(t, name, &u);
    store_abort(t);
    if (rc == ERR_NOT_FOUND) return 0;
    if (rc) { fprintf(stderr, "user_by_name %s: %s\n", name, err_name(rc)); exit(2); }
    return u.id;
}

/* ---- operations ------------------------------------------------------------- */

typedef struct result {
    int applied;      /* apply() calls */
    int txn_null;     /* apply() saw a NULL transaction */
    int done_calls;
    int done_rc;
    long done_index;  /* global completion order */
    uint64_t uid;     /* what apply() created */
} result;

typedef struct top {
    writer_op op;     /* first: a writer_op * is a top * */
    result *r;
    const char *name; /* create this user, or NULL */
    int rc;           /* then return this */
    bool block;       /* wait at the gate first */
    bool heap;        /* free() in done() */
    char namebuf[40];
} top;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long done_total;           /* under mu */
static long ends;                 /* batch_end calls, under mu */
static long end_seen[64];         /* done_total at each batch_end */
static long end_bad_ctx;          /* batch_end with the wrong ctx */
static long apply_total;          /* apply() calls, under mu */
static long applied_calls;        /* batch_applied calls, under mu */
static long applied_seen[64];     /* apply_total at each batch_applied */
static long applied_bad;          /* batch_applied with the wrong ctx or thread */
static pthread_t apply_thread, done_thread;
static long thread_mixups;        /* apply()s or done()s on different threads */
static bool gate_open, gate_entered;
static int ctx_marker;

static void reset(void)
{
    pthread_mutex_lock(&mu);
    done_total = 0;
    ends = 0;
    end_bad_ctx = 0;
    memset(end_seen, 0, sizeof end_seen);
    apply_total = applied_calls = applied_bad = thread_mixups = 0;
    memset(applied_seen, 0, sizeof applied_seen);
    memset(&apply_thread, 0, sizeof apply_thread);
    memset(&done_thread, 0, sizeof done_thread);
    gate_open = gate_entered = false;
    pthread_mutex_unlock(&mu);
}

static int op_apply(writer_op *wop, store_txn *txn)
{
    top *o = (top *)wop;
    o->r->applied++;
    if (!txn) o->r->txn_null++;
    pthread_mutex_lock(&mu);
    if (apply_total++ == 0) apply_thread = pthread_self();
    else if (!pthread_equal(apply_thread, pthread_self())) thread_mixups++;
    pthread_mutex_unlock(&mu);
    if (o->block) {
        pthread_mutex_lock(&mu);
        gate_entered = true;
        pthread_cond_broadcast(&cv);
        while (!gate_open) pthread_cond_wait(&cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    if (o->name) {
        int rc = store_user_create(txn, o->name, "$argon2id$test", 1, &o->r->uid);
        if (rc) return rc;
    }
    return o->rc;
}

static void op_done(writer_op *wop, int rc)
{
    top *o = (top *)wop;
    result *r = o->r;
    bool heap = o->heap;
    if (heap) { memset(o, 0xA5, sizeof *o); free(o); }
    pthread_mutex_lock(&mu);
    if (done_total == 0) done_thread = pthread_self();
    else if (!pthread_equal(done_thread, pthread_self())) thread_mixups++;
    r->done_calls++;
    r->done_rc = rc;
    r->done_index = done_total++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_batch_end(void *ctx)
{
    pthread_mutex_lock(&mu);
    if (ctx != &ctx_marker) end_bad_ctx++;
    if (ends < 64) end_seen[ends] = done_total;
    ends++;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* On the writer thread, after a batch's last apply(), before its commit. */
static void on_batch_applied(void *ctx)
{
    pthread_mutex_lock(&mu);
    if (ctx != &ctx_marker) applied_bad++;
    if (apply_total > 0 && !pthread_equal(apply_thread, pthread_self())) applied_bad++;
    if (applied_calls < 64) applied_seen[applied_calls] = apply_total;
    applied_calls++;
    pthread_mutex_unlock(&mu);
}

static void op_init(top *o, result *r, const char *name, int rc)
{
    memset(o, 0, sizeof *o);
    memset(r, 0, sizeof *r);
    r->done_index = -1;
    o->op.apply = op_apply;
    o->op.done = op_done;
    o->r = r;
    if (name) {
        snprintf(o->namebuf, sizeof o->namebuf, "%s", name);
        o->name = o->namebuf;
    }
    o->rc = rc;
}

/* Waits (under a deadline that only catches hangs) until *counter >= n. */
static bool wait_for(const long *counter, long n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += DEADLINE_S;
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (*counter < n && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&cv, &mu, &until);
    bool ok = *counter >= n;
    pthread_mutex_unlock(&mu);
    if (!ok) fprintf(stderr, "    timed out waiting for %ld (at %ld)\n", n, *counter);
    return ok;
}

static bool wait_entered(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += DEADLINE_S;
    pthread_mutex_lock(&mu);
    int rc = 0;
    while (!gate_entered && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&cv, &mu, &until);
    bool ok = gate_entered;
    pthread_mutex_unlock(&mu);
    return ok;
}

static void open_gate(void)
{
    pthread_mutex_lock(&mu);
    gate_open = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* Stats once the writer has accounted for `ops` operations (the counters
 * are updated after done() and batch_end()). */
static writer_stats stats_after(writer *w, uint64_t ops)
{
    writer_stats st;
    for (int i = 0; i < DEADLINE_S * 1000; i++) {
        writer_get_stats(w, &st);
        if (st.ops >= ops) break;
        usleep(1000);
    }
    return st;
}

/* Submits a blocking, storing-nothing op and waits until the writer is
 * inside its apply(): the writer's queue is then empty and stays as the
 * test fills it. */
static void block_writer(writer *w, top *o, result *r)
{
    op_init(o, r, NULL, 0);
    o->block = true;
    CHECK_EQ_INT(writer_submit(w, &o->op), ERR_OK);
    CHECK(wait_entered());
}

static uint64_t hist_count(const hist *h, const hist_spec *spec)
{
    uint64_t n = 0;
    for (int i = 0; i <= spec->n; i++) n += h->b[i];
    return n;
}

/* ---- tests ---------------------------------------------------------------- */

#define THREADS 4
#define PER_THREAD 500

typedef struct submitter {
    writer *w;
    int t;
    result *res;  /* PER_THREAD */
    int submit_failed;
} submitter;

static void *submit_main(void *arg)
{
    submitter *sb = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        top *o = malloc(sizeof *o);
        char name[40];
        snprintf(name, sizeof name, "t%d_%d", sb->t, i);
        op_init(o, &sb->res[i], name, 0);
        o->heap = true;
        if (writer_submit(sb->w, &o->op) != ERR_OK) { sb->submit_failed++; free(o); }
    }
    return NULL;
}

TEST(concurrent_submitters)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 2000, 64, 100000, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    if (!w) { close_store(s); return; }

    static result res[THREADS][PER_THREAD];
    submitter sb[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++) {
        sb[t] = (submitter){ .w = w, .t = t, .res = res[t] };
        pthread_create(&th[t], NULL, submit_main, &sb[t]);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(th[t], NULL);
        CHECK_EQ_INT(sb[t].submit_failed, 0);
    }
    const long total = THREADS * PER_THREAD;
    CHECK(wait_for(&done_total, total));
    writer_stats st = stats_after(w, (uint64_t)total);
    fprintf(stderr, "  concurrent_submitters: %llu ops in %llu batches (largest %llu)\n",
            (unsigned long long)st.ops, (unsigned long long)st.batches,
            (unsigned long long)st.max_batch);
    CHECK(st.ops == (uint64_t)total);
    CHECK(st.batches >= (uint64_t)(total / 64));
    CHECK(st.batches < (uint64_t)total);  /* group commit happened */
    CHECK(st.max_batch > 1 && st.max_batch <= 64);
    CHECK(st.failed_batches == 0);
    CHECK(st.queued == 0);
    writer_stop(w);

    /* Exactly once, ok, and in each thread's submission order. */
    int once = 0, ok = 0, ordered = 0, uid_match = 0;
    for (int t = 0; t < THREADS; t++) {
        for (int i = 0; i < PER_THREAD; i++) {
            result *r = &res[t][i];
            once += r->done_calls == 1 && r->applied == 1;
            ok += r->done_rc == ERR_OK && r->txn_null == 0;
            ordered += i == 0 || r->done_index > res[t][i - 1].done_index;
            /* uids are handed out in apply order: equal to done order means
             * ops were applied in the order they completed. */
            uid_match += r->uid == (uint64_t)r->done_index + 1;
        }
    }
    CHECK_EQ_INT(once, total);
    CHECK_EQ_INT(ok, total);
    CHECK_EQ_INT(ordered, total);
    CHECK_EQ_INT(uid_match, total);
    CHECK_EQ_INT(done_total, total);

    /* batch_end once per batch, after that batch's done() calls. */
    CHECK(ends == (long)st.batches);
    CHECK(applied_calls == (long)st.batches);
    CHECK_EQ_INT(end_bad_ctx, 0);
    CHECK_EQ_INT(applied_bad, 0);
    CHECK_EQ_INT(thread_mixups, 0);
    for (long b = 1; b < ends && b < 64; b++) CHECK(end_seen[b] > end_seen[b - 1]);

    /* Everything is durable and readable. */
    int found = 0;
    for (int t = 0; t < THREADS; t++)
        for (int i = 0; i < PER_THREAD; i += 7) {
            char name[40];
            snprintf(name, sizeof name, "t%d_%d", t, i);
            found += user_uid(s, name) == res[t][i].uid && res[t][i].uid != 0;
        }
    CHECK_EQ_INT(found, THREADS * ((PER_THREAD + 6) / 7));
    close_store(s);
}

TEST(batches_are_limited_and_end_once_each)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 500, 3, 100, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    top gate, o[7];
    result rg, r[7];
    block_writer(w, &gate, &rg);
    for (int i = 0; i < 7; i++) {
        char name[16];
        snprintf(name, sizeof name, "b%d", i);
        op_init(&o[i], &r[i], name, 0);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    }
    writer_stats st;
    writer_get_stats(w, &st);
    CHECK(st.queued == 7);
    CHECK(st.batches == 0);
    open_gate();
    CHECK(wait_for(&done_total, 8));
    CHECK(wait_for(&ends, 4));
    st = stats_after(w, 8);
    writer_stop(w);

    /* The gate alone, then 3 + 3 + 1: max_batch is honoured, the queue is
     * taken whole when it is there. */
    CHECK(st.batches == 4);
    CHECK(st.ops == 8);
    CHECK(st.max_batch == 3);
    CHECK_EQ_INT(ends, 4);
    CHECK_EQ_INT(end_seen[0], 1);
    CHECK_EQ_INT(end_seen[1], 4);
    CHECK_EQ_INT(end_seen[2], 7);
    CHECK_EQ_INT(end_seen[3], 8);
    CHECK_EQ_INT(end_bad_ctx, 0);
    /* batch_applied: once per batch, after its last apply(), on the writer
     * thread; done() runs on another thread (the completer). */
    CHECK_EQ_INT(applied_calls, 4);
    CHECK_EQ_INT(applied_seen[0], 1);
    CHECK_EQ_INT(applied_seen[1], 4);
    CHECK_EQ_INT(applied_seen[2], 7);
    CHECK_EQ_INT(applied_seen[3], 8);
    CHECK_EQ_INT(applied_bad, 0);
    CHECK_EQ_INT(thread_mixups, 0);
    CHECK(!pthread_equal(apply_thread, done_thread));
    CHECK_EQ_INT(rg.done_calls, 1);
    CHECK_EQ_INT(rg.done_index, 0);
    for (int i = 0; i < 7; i++) {
        CHECK_EQ_INT(r[i].done_calls, 1);
        CHECK_EQ_INT(r[i].done_rc, ERR_OK);
        CHECK_EQ_INT(r[i].done_index, i + 1);
        CHECK(r[i].uid == (uint64_t)i + 1);
        char name[16];
        snprintf(name, sizeof name, "b%d", i);
        CHECK(user_uid(s, name) == (uint64_t)i + 1);
    }
    close_store(s);
}

TEST(max_batch_one_without_window)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 0, 1, 100, NULL, NULL, NULL), ERR_OK);
    top gate, o[5];
    result rg, r[5];
    block_writer(w, &gate, &rg);
    for (int i = 0; i < 5; i++) {
        op_init(&o[i], &r[i], NULL, i);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    }
    open_gate();
    CHECK(wait_for(&done_total, 6));
    writer_stats st = stats_after(w, 6);
    writer_stop(w);
    CHECK(st.batches == 6);
    CHECK(st.max_batch == 1);
    for (int i = 0; i < 5; i++) CHECK_EQ_INT(r[i].done_rc, i); /* apply's >= 0 result */
    close_store(s);
}

TEST(window_gathers_a_batch)
{
    /* A long window: the first op waits for company until max_batch ops
     * are there (which ends the wait at once), so four ops submitted one
     * after another form one batch, however the threads are scheduled. */
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 10000000, 4, 100, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    top o[4];
    result r[4];
    for (int i = 0; i < 4; i++) {
        op_init(&o[i], &r[i], NULL, 0);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
        if (i == 0) usleep(2000); /* let the writer wake on the first */
    }
    CHECK(wait_for(&done_total, 4));
    writer_stats st = stats_after(w, 4);
    writer_stop(w);
    CHECK(st.batches == 1);
    CHECK(st.max_batch == 4);
    CHECK_EQ_INT(ends, 1);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(r[i].done_index, i);
    close_store(s);
}

/* ---- the log path: group commit while the logger syncs -------------------- */

/* A log op: sequence() appends one entry that changes nothing (LOGREC_NOP),
 * so it is acked at the log's fdatasync and applied as nothing. */
static int nop_sequence(writer_op *op, sequencer *q, uint64_t batch, logrec_buf *out)
{
    (void)op; (void)q; (void)batch;
    return logrec_put(out, &(logrec){.kind = LOGREC_NOP});
}

static void nop_init(top *o, result *r)
{
    op_init(o, r, NULL, 0);
    o->op.sequence = nop_sequence;
    o->op.size_hint = 1;
}

/* The log's fdatasync through the test seam: while armed, a call blocks at
 * the gate (gate_entered, then waits for open_gate()). */
static bool sync_armed;
static int gated_fdatasync(void *arg, int fd)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    if (sync_armed) {
        gate_entered = true;
        pthread_cond_broadcast(&cv);
        while (!gate_open) pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    return fdatasync(fd);
}

static writer *start_log_writer_with(store *s, uint32_t window_us, uint32_t delay_us,
                                     size_t max_batch, uint32_t apply_delay_ms, const wal_io *io)
{
    static char log_dir[sizeof tmp_dir + 8];
    snprintf(log_dir, sizeof log_dir, "%s/log", tmp_dir);
    writer_options wo = {.window_us = window_us, .max_batch = max_batch, .max_queue = 100,
                         .log_dir = log_dir, .segment_bytes = 1u << 20, .io = io,
                         .delay_us = delay_us, .apply_delay_ms = apply_delay_ms};
    writer *w = NULL;
    CHECK_EQ_INT(writer_start_log(&w, s, &wo, NULL, on_batch_end, &ctx_marker), ERR_OK);
    return w;
}

static writer *start_log_writer(store *s, uint32_t window_us, const wal_io *io)
{
    return start_log_writer_with(s, window_us, 0, 64, 0, io);
}

/* A log writer whose fdatasync goes through the gate, gathering for up to
 * an hour (the log copies the seam). */
static writer *start_gated_writer(store *s, size_t max_batch)
{
    wal_io io = {.fdatasync = gated_fdatasync};
    return start_log_writer_with(s, 3600u * 1000000u, 0, max_batch, 0, &io);
}

/* Submits o[0] and waits until the logger is inside its fdatasync (held at
 * the gate), then submits o[1..n): they arrive while the log syncs. */
static void submit_during_a_sync(writer *w, top *o, result *r, int n)
{
    pthread_mutex_lock(&mu);
    sync_armed = true;
    pthread_mutex_unlock(&mu);
    nop_init(&o[0], &r[0]);
    CHECK_EQ_INT(writer_submit(w, &o[0].op), ERR_OK);
    CHECK(wait_entered()); /* the logger syncs the first */
    pthread_mutex_lock(&mu);
    sync_armed = false;
    pthread_mutex_unlock(&mu);
    for (int i = 1; i < n; i++) {
        nop_init(&o[i], &r[i]);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    }
}

TEST(an_op_is_logged_at_once_while_the_logger_is_idle)
{
    /* A window of an hour: with nothing being synced there is nothing to
     * wait for, so the op is appended and acked at once (the old fixed
     * window held it the whole hour: this waits only DEADLINE_S). */
    reset();
    store *s = fresh_store();
    writer *w = start_log_writer(s, 3600u * 1000000u, NULL);
    if (!w) { close_store(s); return; }
    top o;
    result r;
    nop_init(&o, &r);
    CHECK_EQ_INT(writer_submit(w, &o.op), ERR_OK);
    CHECK(wait_for(&done_total, 1));
    CHECK_EQ_INT(r.done_rc, ERR_OK);
    writer_stop(w);
    close_store(s);
}

TEST(ops_arriving_during_a_sync_share_the_next)
{
    /* The first op's fdatasync is held at the gate; three more arrive
     * meanwhile and wait for it (the window is an hour), then go to the
     * log together, in one append, the moment the logger is free. */
    reset();
    store *s = fresh_store();
    writer *w = start_gated_writer(s, 64);
    if (!w) { close_store(s); return; }
    writer_stats st0;
    writer_get_stats(w, &st0);
    top o[4];
    result r[4];
    submit_during_a_sync(w, o, r, 4);
    open_gate();
    CHECK(wait_for(&done_total, 4));
    writer_stats st = stats_after(w, st0.ops + 4);
    writer_stop(w);
    CHECK_EQ_INT(st.log_batches - st0.log_batches, 2);
    CHECK_EQ_INT(st.batches - st0.batches, 2);
    CHECK_EQ_INT(st.max_batch, 3);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(r[i].done_rc, ERR_OK);
        CHECK_EQ_INT(r[i].done_index, i);
    }
    close_store(s);
}

TEST(a_commit_delay_gathers_while_the_logger_is_idle)
{
    /* --commit-delay of an hour (window too): the first op waits for
     * company although nothing is being synced, until max_batch (4) ops
     * are there, which cuts the batch at once: one append of four. */
    reset();
    store *s = fresh_store();
    uint32_t hour = 3600u * 1000000u;
    writer *w = start_log_writer_with(s, hour, hour, 4, 0, NULL);
    if (!w) { close_store(s); return; }
    writer_stats st0;
    writer_get_stats(w, &st0);
    top o[4];
    result r[4];
    for (int i = 0; i < 4; i++) {
        nop_init(&o[i], &r[i]);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
        if (i == 0) {
            usleep(2000); /* let the sequencer wake on the first */
            pthread_mutex_lock(&mu);
            CHECK_EQ_INT(done_total, 0); /* it waits for company */
            pthread_mutex_unlock(&mu);
        }
    }
    CHECK(wait_for(&done_total, 4));
    writer_stats st = stats_after(w, st0.ops + 4);
    writer_stop(w);
    CHECK_EQ_INT(st.log_batches - st0.log_batches, 1);
    CHECK_EQ_INT(st.max_batch, 4);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(r[i].done_index, i);
    close_store(s);
}

TEST(a_commit_delay_is_at_most_the_window)
{
    /* A delay of an hour with a window of 10 ms: the op waits the window at
     * most (the old code waited the delay: this waits only DEADLINE_S). */
    reset();
    store *s = fresh_store();
    writer *w = start_log_writer_with(s, 10000, 3600u * 1000000u, 64, 0, NULL);
    if (!w) { close_store(s); return; }
    top o;
    result r;
    nop_init(&o, &r);
    CHECK_EQ_INT(writer_submit(w, &o.op), ERR_OK);
    CHECK(wait_for(&done_total, 1));
    writer_stop(w);
    close_store(s);
}

/* The number of batches handed to the logger and not applied reaches n
 * (polled under a deadline that only catches hangs). */
static bool wait_unapplied(writer *w, uint64_t n)
{
    writer_stats st;
    for (int i = 0; i < DEADLINE_S * 1000; i++) {
        writer_get_stats(w, &st);
        if (st.unapplied >= n) return true;
        usleep(1000);
    }
    fprintf(stderr, "    timed out waiting for %llu unapplied (at %llu)\n", (unsigned long long)n,
            (unsigned long long)st.unapplied);
    return false;
}

TEST(a_full_open_batch_is_cut_while_the_logger_syncs)
{
    /* max_batch 100. The first op's fdatasync is held; 64 ops are decided
     * into the open batch (one chunk), then 36 more make it full: the
     * batch goes to the logger at once, not when the sync ends. */
    reset();
    store *s = fresh_store();
    writer *w = start_gated_writer(s, 100);
    if (!w) { close_store(s); return; }
    enum { N = 101 };
    static top o[N];
    static result r[N];
    submit_during_a_sync(w, o, r, N);
    CHECK(wait_unapplied(w, 2)); /* the first, and the full one */
    open_gate();
    CHECK(wait_for(&done_total, N));
    writer_stop(w);
    for (int i = 0; i < N; i++) CHECK_EQ_INT(r[i].done_index, i);
    close_store(s);
}

typedef struct waiter { writer *w; uint64_t batch; int rc; } waiter;
static void *wait_applied_thread(void *arg)
{
    waiter *x = arg;
    x->rc = writer_wait_applied(x->w, x->batch, DEADLINE_S * 1000);
    return NULL;
}

TEST(a_waiting_read_cuts_the_open_batch)
{
    /* The first op's fdatasync is held; 64 ops are decided into the open
     * batch (batch 2) and would gather for the window (an hour). A read
     * that waits for batch 2 to be in the store cuts it at once. */
    reset();
    store *s = fresh_store();
    writer *w = start_gated_writer(s, 4096);
    if (!w) { close_store(s); return; }
    enum { N = 65 };
    static top o[N];
    static result r[N];
    submit_during_a_sync(w, o, r, N);
    usleep(2000); /* the chunk is decided into the open batch, which gathers */
    waiter x = {w, 2, -1};
    pthread_t t;
    CHECK_EQ_INT(pthread_create(&t, NULL, wait_applied_thread, &x), 0);
    CHECK(wait_unapplied(w, 2)); /* cut while the first still syncs */
    open_gate();
    pthread_join(t, NULL);
    CHECK_EQ_INT(x.rc, ERR_OK);
    CHECK(wait_for(&done_total, N));
    writer_stop(w);
    close_store(s);
}

TEST(many_small_logged_batches_apply_in_one_transaction)
{
    /* 1,000 ops, each acked before the next is sent: 1,000 log appends of
     * one op each (as at a low rate). The store takes them in one LMDB
     * transaction when asked (a read waits), not one per 256 batches. */
    reset();
    store *s = fresh_store();
    writer *w = start_log_writer_with(s, 1000, 0, 64, 3600u * 1000u, NULL);
    if (!w) { close_store(s); return; }
    enum { N = 1000 };
    static top o[N];
    static result r[N];
    writer_stats st0;
    writer_get_stats(w, &st0);
    for (int i = 0; i < N; i++) {
        nop_init(&o[i], &r[i]);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
        CHECK(wait_for(&done_total, i + 1));
    }
    CHECK_EQ_INT(writer_wait_applied(w, writer_acked(w), DEADLINE_S * 1000), ERR_OK);
    writer_stats st;
    writer_get_stats(w, &st);
    writer_stop(w);
    CHECK_EQ_INT(st.log_batches - st0.log_batches, N);
    CHECK_EQ_INT(st.applies - st0.applies, 1);
    close_store(s);
}

TEST(validation_errors_affect_only_their_op)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 500, 16, 100, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    top gate, o[6];
    result rg, r[6];
    block_writer(w, &gate, &rg);
    op_init(&o[0], &r[0], "dup", 0);
    op_init(&o[1], &r[1], "dup", 0);            /* the store says ERR_CONFLICT */
    op_init(&o[2], &r[2], NULL, ERR_CONFLICT);  /* apply says it */
    op_init(&o[3], &r[3], "keep", 0);
    op_init(&o[4], &r[4], NULL, ERR_FORBIDDEN);
    op_init(&o[5], &r[5], "last", 7);
    for (int i = 0; i < 6; i++) CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    open_gate();
    CHECK(wait_for(&done_total, 7));
    writer_stats st = stats_after(w, 7);
    writer_stop(w);

    static const int want[6] = { ERR_OK, ERR_CONFLICT, ERR_CONFLICT, ERR_OK, ERR_FORBIDDEN, 7 };
    for (int i = 0; i < 6; i++) {
        CHECK_EQ_INT(r[i].done_calls, 1);
        CHECK_EQ_INT(r[i].done_rc, want[i]);
        CHECK_EQ_INT(r[i].done_index, i + 1);
    }
    CHECK(st.batches == 2);       /* the gate, then all six together */
    CHECK(st.failed_batches == 0);
    CHECK_EQ_INT(ends, 2);
    CHECK(user_uid(s, "dup") != 0);
    CHECK(user_uid(s, "keep") != 0);
    CHECK(user_uid(s, "last") != 0);
    close_store(s);
}

TEST(storage_error_aborts_whole_batch)
{
    static const int errs[] = { ERR_IO, ERR_FULL, ERR_NOMEM };
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 500, 16, 100, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    long expect_done = 0, expect_ends = 0;
    for (size_t e = 0; e < sizeof errs / sizeof *errs; e++) {
        pthread_mutex_lock(&mu);
        gate_open = gate_entered = false;
        pthread_mutex_unlock(&mu);

        /* The gate op stores something, in its own batch: that stays. */
        top gate, o[5], after;
        result rg, r[5], ra;
        char name[32];
        op_init(&gate, &rg, NULL, 0);
        snprintf(gate.namebuf, sizeof gate.namebuf, "pre%zu", e);
        gate.name = gate.namebuf;
        gate.block = true;
        CHECK_EQ_INT(writer_submit(w, &gate.op), ERR_OK);
        CHECK(wait_entered());

        for (int i = 0; i < 5; i++) {
            snprintf(name, sizeof name, "e%zu_%d", e, i);
            op_init(&o[i], &r[i], i == 4 ? NULL : name, i == 2 ? errs[e] : 0);
            CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
        }
        open_gate();
        expect_done += 6;
        expect_ends += 2;
        CHECK(wait_for(&done_total, expect_done));
        CHECK(wait_for(&ends, expect_ends));

        CHECK_EQ_INT(rg.done_rc, ERR_OK);
        for (int i = 0; i < 5; i++) {
            CHECK_EQ_INT(r[i].done_calls, 1);
            CHECK_EQ_INT(r[i].done_rc, errs[e]);
            CHECK_EQ_INT(r[i].done_index, rg.done_index + 1 + i);
            snprintf(name, sizeof name, "e%zu_%d", e, i);
            CHECK(user_uid(s, name) == 0); /* nothing of the batch is stored */
        }
        snprintf(name, sizeof name, "pre%zu", e);
        CHECK(user_uid(s, name) != 0);

        /* The writer goes on. */
        snprintf(name, sizeof name, "after%zu", e);
        op_init(&after, &ra, name, 0);
        CHECK_EQ_INT(writer_submit(w, &after.op), ERR_OK);
        expect_done++;
        expect_ends++;
        CHECK(wait_for(&done_total, expect_done));
        CHECK(wait_for(&ends, expect_ends));
        CHECK_EQ_INT(ra.done_rc, ERR_OK);
        CHECK(user_uid(s, name) != 0 && user_uid(s, name) == ra.uid);
    }
    writer_stats st = stats_after(w, (uint64_t)expect_done);
    writer_stop(w);
    CHECK(st.failed_batches == 3);
    CHECK(st.batches == 9);
    CHECK_EQ_INT(ends, 9);
    /* Every batch has its size; only the committed ones have timings. */
    CHECK_EQ_INT(hist_count(&st.batch_ops, &hist_sizes), 9);
    CHECK_EQ_INT(hist_count(&st.batch_ns, &hist_seconds), 6);
    CHECK_EQ_INT(hist_count(&st.fsync_ns, &hist_seconds), 6);
    close_store(s);
}

TEST(histograms_count_each_batch)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 500, 16, 100, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    if (!w) { close_store(s); return; }
    top gate, o[5];
    result rg, r[5];
    block_writer(w, &gate, &rg);          /* batch 1: the gate alone */
    for (int i = 0; i < 5; i++) {         /* batch 2: these five */
        char name[32];
        snprintf(name, sizeof name, "h%d", i);
        op_init(&o[i], &r[i], name, 0);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    }
    open_gate();
    CHECK(wait_for(&ends, 2));
    writer_stats st = stats_after(w, 6);
    writer_stop(w);
    CHECK(st.batches == 2);
    CHECK_EQ_INT(st.batch_ops.b[0], 1);   /* le 1 */
    CHECK_EQ_INT(st.batch_ops.b[3], 1);   /* le 8: five */
    CHECK_EQ_INT(st.batch_ops.sum, 6);
    CHECK_EQ_INT(hist_count(&st.batch_ops, &hist_sizes), 2);
    CHECK_EQ_INT(hist_count(&st.batch_ns, &hist_seconds), 2);
    CHECK_EQ_INT(hist_count(&st.fsync_ns, &hist_seconds), 2);
    /* A batch includes its commit: never shorter in total. */
    CHECK(st.batch_ns.sum >= st.fsync_ns.sum && st.fsync_ns.sum > 0);
    close_store(s);
}

TEST(queue_limit_busy)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 500, 16, 4, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    top gate, o[5];
    result rg, r[5];
    block_writer(w, &gate, &rg);
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "q%d", i);
        op_init(&o[i], &r[i], name, 0);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    }
    op_init(&o[4], &r[4], "q4", 0);
    CHECK_EQ_INT(writer_submit(w, &o[4].op), ERR_BUSY);
    CHECK_EQ_INT(writer_submit(w, &o[4].op), ERR_BUSY);
    writer_stats st;
    writer_get_stats(w, &st);
    CHECK(st.queued == 4);
    open_gate();
    CHECK(wait_for(&done_total, 5));
    CHECK(wait_for(&ends, 2));
    /* A refused op never runs. */
    CHECK_EQ_INT(r[4].applied, 0);
    CHECK_EQ_INT(r[4].done_calls, 0);
    CHECK(user_uid(s, "q4") == 0);
    for (int i = 0; i < 4; i++) CHECK_EQ_INT(r[i].done_rc, ERR_OK);
    /* With the queue drained, the same op is accepted. */
    CHECK_EQ_INT(writer_submit(w, &o[4].op), ERR_OK);
    CHECK(wait_for(&done_total, 6));
    CHECK_EQ_INT(r[4].done_calls, 1);
    CHECK_EQ_INT(r[4].done_rc, ERR_OK);
    writer_stop(w);
    CHECK(user_uid(s, "q4") != 0);
    close_store(s);
}

TEST(stop_applies_everything_queued)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    /* A long window: stop must not leave the gathered batch behind. */
    CHECK_EQ_INT(writer_start(&w, s, 5000000, 1000, 1000, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    top o[100];
    result r[100];
    for (int i = 0; i < 100; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        op_init(&o[i], &r[i], name, 0);
        CHECK_EQ_INT(writer_submit(w, &o[i].op), ERR_OK);
    }
    writer_stop(w);
    /* No waiting: writer_stop returned, so all of it has happened. */
    pthread_mutex_lock(&mu);
    long d = done_total, e = ends;
    pthread_mutex_unlock(&mu);
    CHECK_EQ_INT(d, 100);
    CHECK(e >= 1);
    for (int i = 0; i < 100; i++) {
        CHECK_EQ_INT(r[i].done_calls, 1);
        CHECK_EQ_INT(r[i].done_rc, ERR_OK);
        CHECK_EQ_INT(r[i].done_index, i);
    }
    CHECK(user_uid(s, "s0") != 0 && user_uid(s, "s99") != 0);
    close_store(s);

    /* An idle writer stops too. */
    reset();
    s = fresh_store();
    CHECK_EQ_INT(writer_start(&w, s, 1000, 8, 8, NULL, NULL, NULL), ERR_OK);
    writer_stop(w);
    close_store(s);
}

typedef struct stopper { writer *w; } stopper;

static void *stop_main(void *arg)
{
    writer_stop(((stopper *)arg)->w);
    return NULL;
}

TEST(stop_while_busy_then_closed)
{
    reset();
    store *s = fresh_store();
    writer *w = NULL;
    CHECK_EQ_INT(writer_start(&w, s, 500, 64, 100000, on_batch_applied,
                              on_batch_end, &ctx_marker), ERR_OK);
    top gate, b;
    result rg, rb;
    block_writer(w, &gate, &rg);
    op_init(&b, &rb, "queued", 0);
    CHECK_EQ_INT(writer_submit(w, &b.op), ERR_OK);

    /* writer_stop blocks (the writer is held at the gate). Probe until
     * submits are refused; probes accepted before that still count. w stays
     * alive until the gate opens. */
    stopper sp = { w };
    pthread_t th;
    pthread_create(&th, NULL, stop_main, &sp);
    enum { NPROBE = 20000 };
    static top probe[NPROBE];
    static result rp[NPROBE];
    int accepted = 0, closed_at = -1;
    for (int i = 0; i < NPROBE; i++) {
        op_init(&probe[i], &rp[i], NULL, 0);
        int rc = writer_submit(w, &probe[i].op);
        if (rc == ERR_CLOSED) { closed_at = i; break; }
        CHECK_EQ_INT(rc, ERR_OK);
        accepted++;
        usleep(100);
    }
    CHECK(closed_at >= 0);
    /* Submitting again after the refusal is refused again. */
    if (closed_at >= 0 && closed_at + 1 < NPROBE) {
        op_init(&probe[closed_at + 1], &rp[closed_at + 1], NULL, 0);
        CHECK_EQ_INT(writer_submit(w, &probe[closed_at + 1].op), ERR_CLOSED);
    }
    open_gate();
    pthread_join(th, NULL);

    /* Everything accepted was applied before writer_stop returned. */
    CHECK_EQ_INT(rg.done_calls, 1);
    CHECK_EQ_INT(rb.done_calls, 1);
    CHECK_EQ_INT(rb.done_rc, ERR_OK);
    int once = 0;
    for (int i = 0; i < accepted; i++) once += rp[i].done_calls == 1 && rp[i].done_rc == ERR_OK;
    CHECK_EQ_INT(once, accepted);
    CHECK_EQ_INT(done_total, 2 + accepted);
    if (closed_at >= 0) {
        CHECK_EQ_INT(rp[closed_at].applied, 0);
        CHECK_EQ_INT(rp[closed_at].done_calls, 0);
    }
    CHECK(user_uid(s, "queued") != 0);
    close_store(s);
}

int main(void)
{
    test_seed();
    RUN(concurrent_submitters);
    RUN(batches_are_limited_and_end_once_each);
    RUN(max_batch_one_without_window);
    RUN(window_gathers_a_batch);
    RUN(an_op_is_logged_at_once_while_the_logger_is_idle);
    RUN(ops_arriving_during_a_sync_share_the_next);
    RUN(a_commit_delay_gathers_while_the_logger_is_idle);
    RUN(a_commit_delay_is_at_most_the_window);
    RUN(a_full_open_batch_is_cut_while_the_logger_syncs);
    RUN(a_waiting_read_cuts_the_open_batch);
    RUN(many_small_logged_batches_apply_in_one_transaction);
    RUN(validation_errors_affect_only_their_op);
    RUN(storage_error_aborts_whole_batch);
    RUN(histograms_count_each_batch);
    RUN(queue_limit_busy);
    RUN(stop_applies_everything_queued);
    RUN(stop_while_busy_then_closed);
    return test_summary("writer");
}
