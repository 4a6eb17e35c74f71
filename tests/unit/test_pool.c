/* Unit tests of the read pool (src/net/pool.c): a bounded queue answers
 * busy (and pool_continue passes the bound), run() on a worker and done()
 * on the job's own I/O thread, done(NULL) when that thread has ended,
 * jobs start in submission order, and stop runs every queued job. */
#include "test.h"

#include "fixture.h"
#include "net/pool.h"

/* A gate that jobs wait at until the test opens it. */
typedef struct gate {
    uv_mutex_t mu;
    uv_cond_t cv;
    bool open;
    int waiting;           /* jobs at the gate */
} gate;

static void gate_init(gate *g)
{
    memset(g, 0, sizeof *g);
    uv_mutex_init(&g->mu);
    uv_cond_init(&g->cv);
}

static void gate_free(gate *g)
{
    uv_cond_destroy(&g->cv);
    uv_mutex_destroy(&g->mu);
}

static void gate_open(gate *g)
{
    uv_mutex_lock(&g->mu);
    g->open = true;
    uv_cond_broadcast(&g->cv);
    uv_mutex_unlock(&g->mu);
}

/* Waits (bounded) until n jobs are at the gate. */
static bool gate_wait_for(gate *g, int n)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)FX_WAIT_S * 1000000000ull;
    uv_mutex_lock(&g->mu);
    while (g->waiting < n && uv_hrtime() < deadline)
        uv_cond_timedwait(&g->cv, &g->mu, 10000000);
    bool ok = g->waiting >= n;
    uv_mutex_unlock(&g->mu);
    return ok;
}

typedef struct tjob {
    pool_job job;          /* first */
    gate *g;               /* NULL: no wait */
    int k;
    uv_thread_t ran_on;
    bool ran;
    /* done() */
    uv_mutex_t *mu;
    int *order, *norder;   /* run order, by k */
    int *dones, *null_dones;
    srv_thread *done_t;
    uv_thread_t done_on;
    pool *resubmit;        /* done: try to submit `extra` here */
    pool_job *extra;
    int resubmit_rc;
} tjob;

static void tjob_run(pool_job *j)
{
    tjob *x = (tjob *)j;
    x->ran_on = uv_thread_self();
    x->ran = true;
    if (x->mu) {
        uv_mutex_lock(x->mu);
        x->order[(*x->norder)++] = x->k;
        uv_mutex_unlock(x->mu);
    }
    if (!x->g) return;
    uv_mutex_lock(&x->g->mu);
    x->g->waiting++;
    uv_cond_broadcast(&x->g->cv);
    while (!x->g->open) uv_cond_wait(&x->g->cv, &x->g->mu);
    uv_mutex_unlock(&x->g->mu);
}

static void tjob_done(srv_thread *t, void *arg)
{
    tjob *x = arg;
    x->done_t = t;
    x->done_on = uv_thread_self();
    if (x->resubmit) x->resubmit_rc = pool_submit(x->resubmit, x->extra);
    if (!x->mu) return;
    uv_mutex_lock(x->mu);
    if (t) (*x->dones)++;
    else (*x->null_dones)++;
    uv_mutex_unlock(x->mu);
}

typedef struct book {
    uv_mutex_t mu;
    int order[256], norder;
    int dones, null_dones;
} book;

static void book_init(book *b)
{
    memset(b, 0, sizeof *b);
    uv_mutex_init(&b->mu);
}

static void tjob_init(tjob *x, int k, gate *g, book *b, srv_thread *t)
{
    memset(x, 0, sizeof *x);
    x->job.run = tjob_run;
    x->job.done = tjob_done;
    x->job.t = t;
    x->k = k;
    x->g = g;
    if (b) {
        x->mu = &b->mu;
        x->order = b->order;
        x->norder = &b->norder;
        x->dones = &b->dones;
        x->null_dones = &b->null_dones;
    }
}

TEST(bad_arguments)
{
    pool *p = NULL;
    CHECK_EQ_INT(pool_start(&p, 0, 10), ERR_INVALID);
    CHECK_EQ_INT(pool_start(&p, POOL_MAX_THREADS + 1, 10), ERR_INVALID);
    CHECK_EQ_INT(pool_start(&p, 1, 0), ERR_INVALID);
    CHECK(p == NULL);
    pool_stop(NULL); /* nothing */
}

TEST(full_queue_is_busy)
{
    pool *p;
    CHECK_EQ_INT(pool_start(&p, 1, 2), ERR_OK);
    gate g;
    gate_init(&g);
    book b;
    book_init(&b);
    tjob blocker, q[4];
    tjob_init(&blocker, 0, &g, &b, NULL);
    CHECK_EQ_INT(pool_submit(p, &blocker.job), ERR_OK);
    CHECK(gate_wait_for(&g, 1)); /* the only worker is busy: jobs now wait */
    for (int i = 0; i < 4; i++) tjob_init(&q[i], i + 1, NULL, &b, NULL);
    CHECK_EQ_INT(pool_submit(p, &q[0].job), ERR_OK);
    CHECK_EQ_INT(pool_submit(p, &q[1].job), ERR_OK);
    CHECK_EQ_INT(pool_submit(p, &q[2].job), ERR_BUSY); /* two are waiting */
    pool_stats st;
    pool_get_stats(p, &st);
    CHECK_EQ_INT(st.queued, 2);
    CHECK_EQ_INT(st.running, 1);
    CHECK_EQ_INT(st.refused, 1);
    CHECK(!st.stopping);
    /* The second step of admitted work passes the bound. */
    CHECK_EQ_INT(pool_continue(p, &q[3].job), ERR_OK);
    gate_open(&g);
    pool_stop(p);
    CHECK(blocker.ran && q[0].ran && q[1].ran && !q[2].ran && q[3].ran);
    /* Started in submission order; done(NULL) for a job without a thread. */
    CHECK_EQ_INT(b.norder, 4);
    CHECK(b.order[0] == 0 && b.order[1] == 1 && b.order[2] == 2 && b.order[3] == 4);
    CHECK_EQ_INT(b.null_dones, 4);
    CHECK_EQ_INT(b.dones, 0);
    gate_free(&g);
}

static void whoami(srv_thread *t, void *arg)
{
    ((uv_thread_t *)arg)[t->id] = uv_thread_self();
}

TEST(done_runs_on_the_jobs_thread)
{
    fx f;
    fx_loops(&f, 3);
    uv_thread_t io[3];
    for (int k = 0; k < 3; k++) fx_run(&f, k, whoami, io);
    pool *p;
    CHECK_EQ_INT(pool_start(&p, 3, 100), ERR_OK);
    book b;
    book_init(&b);
    tjob jobs[30];
    uv_thread_t self = uv_thread_self();
    for (int i = 0; i < 30; i++) {
        tjob_init(&jobs[i], i, NULL, &b, &f.srv->threads[i % 3]);
        CHECK_EQ_INT(pool_submit(p, &jobs[i].job), ERR_OK);
    }
    pool_stop(p); /* every job ran and was posted ... */
    fx_barrier(&f); /* ... and every post has run */
    CHECK_EQ_INT(b.dones, 30);
    CHECK_EQ_INT(b.null_dones, 0);
    for (int i = 0; i < 30; i++) {
        CHECK(jobs[i].ran);
        CHECK(jobs[i].done_t == &f.srv->threads[i % 3]);
        CHECK(uv_thread_equal(&jobs[i].done_on, &io[i % 3]));
        /* run() on a worker: neither the submitting thread nor an I/O thread */
        CHECK(!uv_thread_equal(&jobs[i].ran_on, &self));
        for (int k = 0; k < 3; k++) CHECK(!uv_thread_equal(&jobs[i].ran_on, &io[k]));
    }
    fx_stop(&f);
}

TEST(ended_thread_gets_done_null)
{
    fx f;
    fx_loops(&f, 2);
    fx_stop_threads(&f); /* posts are refused from now on */
    pool *p;
    CHECK_EQ_INT(pool_start(&p, 1, 10), ERR_OK);
    book b;
    book_init(&b);
    tjob x;
    tjob_init(&x, 1, NULL, &b, &f.srv->threads[1]);
    CHECK_EQ_INT(pool_submit(p, &x.job), ERR_OK);
    pool_stop(p);
    CHECK(x.ran);
    CHECK(x.done_t == NULL); /* on the worker, so that it frees its job */
    CHECK_EQ_INT(b.null_dones, 1);
    fx_stop(&f);
}

typedef struct stopper {
    pool *p;
} stopper;

static void stop_main(void *arg)
{
    pool_stop(((stopper *)arg)->p);
}

TEST(stop_drains_the_queue)
{
    pool *p;
    CHECK_EQ_INT(pool_start(&p, 2, 100), ERR_OK);
    gate g;
    gate_init(&g);
    book b;
    book_init(&b);
    tjob block[2], q[20], extra;
    for (int i = 0; i < 2; i++) {
        tjob_init(&block[i], i, &g, &b, NULL);
        CHECK_EQ_INT(pool_submit(p, &block[i].job), ERR_OK);
    }
    CHECK(gate_wait_for(&g, 2));
    for (int i = 0; i < 20; i++) {
        tjob_init(&q[i], 2 + i, NULL, &b, NULL);
        CHECK_EQ_INT(pool_submit(p, &q[i].job), ERR_OK);
    }
    tjob_init(&extra, 99, NULL, &b, NULL);
    q[19].resubmit = p; /* the last one tries to queue more while stopping */
    q[19].extra = &extra.job;
    stopper s = {p};
    uv_thread_t th;
    CHECK_EQ_INT(uv_thread_create(&th, stop_main, &s), 0);
    /* Wait (bounded) until the stop has begun, then let the workers go. */
    pool_stats st = {0};
    for (int i = 0; i < FX_WAIT_S * 1000 && !st.stopping; i++) {
        pool_get_stats(p, &st);
        if (!st.stopping) uv_sleep(1);
    }
    CHECK(st.stopping);
    CHECK_EQ_INT(pool_submit(p, &extra.job), ERR_CLOSED);
    CHECK_EQ_INT(pool_continue(p, &extra.job), ERR_CLOSED);
    gate_open(&g);
    uv_thread_join(&th);
    int ran = 0;
    for (int i = 0; i < 20; i++) ran += q[i].ran;
    CHECK_EQ_INT(ran, 20);
    CHECK_EQ_INT(b.null_dones, 22);
    CHECK_EQ_INT(q[19].resubmit_rc, ERR_CLOSED);
    CHECK(!extra.ran);
    gate_free(&g);
}

int main(void)
{
    RUN(bad_arguments);
    RUN(full_queue_is_busy);
    RUN(done_runs_on_the_jobs_thread);
    RUN(ended_thread_gets_done_null);
    RUN(stop_drains_the_queue);
    return test_summary("pool");
}
