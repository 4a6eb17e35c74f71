/* Unit tests of the I/O threads' posts (src/net/srv.c) and of a server
 * without listeners (SRV_NO_LISTEN, src/net/server.c): posts run in
 * order on their thread; posts left when a thread ends still run there (so
 * their owners can release what they carry); later ones are refused. */
#include "test.h"

#include "fixture.h"

typedef struct trail {
    uv_mutex_t mu;
    int seen[64];
    int n;
    int wrong_thread;
    srv_thread *want;
} trail;

typedef struct step {
    trail *tr;
    int k;
} step;

static void record(srv_thread *t, void *arg)
{
    step *s = arg;
    uv_mutex_lock(&s->tr->mu);
    if (s->tr->n < 64) s->tr->seen[s->tr->n++] = s->k;
    if (t != s->tr->want) s->tr->wrong_thread++;
    uv_mutex_unlock(&s->tr->mu);
}

TEST(posts_run_in_order_on_their_thread)
{
    fx f;
    fx_loops(&f, 3);
    CHECK_EQ_INT(f.srv->port, -1);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(f.srv->threads[i].listen_fd, -1);
    trail tr = {.n = 0, .wrong_thread = 0, .want = &f.srv->threads[2]};
    uv_mutex_init(&tr.mu);
    step steps[40];
    for (int k = 0; k < 40; k++) {
        steps[k] = (step){&tr, k};
        CHECK_EQ_INT(srv_post(&f.srv->threads[2], record, &steps[k]), ERR_OK);
    }
    fx_barrier(&f);
    CHECK_EQ_INT(tr.n, 40);
    bool ordered = true;
    for (int k = 0; k < tr.n; k++) ordered &= tr.seen[k] == k;
    CHECK(ordered);
    CHECK_EQ_INT(tr.wrong_thread, 0);
    /* After the threads ended: refused, fn not called, arg still ours. */
    fx_stop_threads(&f);
    CHECK_EQ_INT(srv_post(&f.srv->threads[0], record, &steps[0]), ERR_CLOSED);
    CHECK_EQ_INT(tr.n, 40);
    fx_stop(&f);
    uv_mutex_destroy(&tr.mu);
}

static void close_wake(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

TEST(posts_left_at_the_end_still_run)
{
    srv_thread t;
    memset(&t, 0, sizeof t);
    CHECK_EQ_INT(srv_thread_init(&t), ERR_OK);
    trail tr = {.n = 0, .wrong_thread = 0, .want = &t};
    uv_mutex_init(&tr.mu);
    step steps[5];
    for (int k = 0; k < 5; k++) {
        steps[k] = (step){&tr, k};
        CHECK_EQ_INT(srv_post(&t, record, &steps[k]), ERR_OK);  /* the loop never runs them */
    }
    srv_thread_drain(&t);
    CHECK_EQ_INT(tr.n, 5);
    bool ordered = true;
    for (int k = 0; k < tr.n; k++) ordered &= tr.seen[k] == k;
    CHECK(ordered);
    CHECK_EQ_INT(tr.wrong_thread, 0);
    CHECK_EQ_INT(srv_post(&t, record, &steps[0]), ERR_CLOSED);
    srv_thread_drain(&t);                                         /* nothing twice */
    CHECK_EQ_INT(tr.n, 5);
    uv_walk(&t.loop, close_wake, NULL);
    uv_run(&t.loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&t.loop), 0);
    uv_mutex_destroy(&t.mu);
    uv_mutex_destroy(&tr.mu);
}

TEST(a_server_without_listeners_stops)
{
    /* Stopping twice and forcing are harmless with no listener to close. */
    fx f;
    fx_loops(&f, 2);
    server_stop(f.srv);
    server_force(f.srv);
    server_stop(f.srv);
    fx_stop(&f);
    CHECK(f.srv == NULL);
}

/* ---- the connection table ----------------------------------------------- */

/* How many times the walk meets each of the n conns (others: -1). */
static void walk(srv_thread *t, conn **cs, int n, int *seen)
{
    memset(seen, 0, (size_t)n * sizeof *seen);
    uint32_t pos = 0;
    for (conn *c; (c = srv_conn_next(t, &pos));) {
        int k = 0;
        while (k < n && cs[k] != c) k++;
        if (k == n) { seen[0] = -1; return; }
        seen[k]++;
    }
}

TEST(the_connection_table)
{
    /* Table operations only: a zeroed thread, conns never opened. */
    srv_thread t;
    memset(&t, 0, sizeof t);
    t.id = 3;
    enum { N = 200 };
    static conn *cs[N];
    static uint64_t ids[N];
    int seen[N];
    bool ok = true;
    for (int k = 0; k < N; k++) {
        cs[k] = calloc(1, sizeof(conn));
        ok &= srv_conn_add(&t, cs[k], &cs[k]->id) == ERR_OK;
        ids[k] = cs[k]->id;
        ok &= ids[k] != 0 && srv_conn_thread(ids[k]) == 3;
    }
    CHECK(ok);
    CHECK_EQ_INT(t.nconns, N);
    ok = true;
    for (int k = 0; k < N; k++) ok &= srv_conn(&t, ids[k]) == cs[k];
    for (int k = 1; k < N; k++) ok &= ids[k] != ids[k - 1];
    CHECK(ok);
    walk(&t, cs, N, seen);
    ok = true;
    for (int k = 0; k < N; k++) ok &= seen[k] == 1;
    CHECK(ok);

    /* Removed: not found by its id, not walked, its slot reused under a new
     * id that the old one never finds. Removing twice changes nothing. */
    srv_conn_remove(&t, cs[7]->id);
    srv_conn_remove(&t, cs[7]->id);
    CHECK_EQ_INT(t.nconns, N - 1);
    CHECK(srv_conn(&t, ids[7]) == NULL);
    conn *fresh = calloc(1, sizeof(conn));
    CHECK_EQ_INT(srv_conn_add(&t, fresh, &fresh->id), ERR_OK);
    CHECK(fresh->id != ids[7]);
    CHECK((fresh->id & 0xffffff00u) == (ids[7] & 0xffffff00u)); /* the same slot */
    CHECK(srv_conn(&t, ids[7]) == NULL);
    CHECK(srv_conn(&t, fresh->id) == fresh);
    srv_conn_remove(&t, ids[7]);                      /* a stale id frees nothing */
    CHECK(srv_conn(&t, fresh->id) == fresh);
    CHECK_EQ_INT(t.nconns, N);
    CHECK(t.table_len == N);

    /* Bad ids: 0, another thread's, a slot never used, a generation that is
     * not the slot's, a free slot. */
    CHECK(srv_conn(&t, 0) == NULL);
    CHECK(srv_conn(&t, (ids[5] & ~0xffull) | 4) == NULL);
    CHECK(srv_conn(&t, ((uint64_t)1 << 32) | ((uint64_t)(N + 5) << 8) | 3) == NULL);
    CHECK(srv_conn(&t, ids[5] + ((uint64_t)1 << 32)) == NULL);
    srv_conn_remove(&t, cs[9]->id);
    CHECK(srv_conn(&t, ids[9]) == NULL);
    CHECK(srv_conn(&t, ids[9] & 0xffffffffull) == NULL);

    /* Removing during the walk (as a thread's stop does) visits each once. */
    conn *old7 = cs[7];
    cs[7] = fresh;
    int visited = 0;
    uint32_t pos = 0;
    for (conn *c; (c = srv_conn_next(&t, &pos));) {
        visited++;
        srv_conn_remove(&t, c->id);
    }
    CHECK_EQ_INT(visited, N - 1);
    CHECK_EQ_INT(t.nconns, 0);
    pos = 0;
    CHECK(srv_conn_next(&t, &pos) == NULL);
    /* Every slot is free again and is reused before the table grows. */
    conn *again = calloc(1, sizeof(conn));
    CHECK_EQ_INT(srv_conn_add(&t, again, &again->id), ERR_OK);
    CHECK(t.table_len == N);
    CHECK(srv_conn(&t, again->id) == again);
    srv_thread_free(&t);
    CHECK(t.table == NULL && t.nconns == 0);
    for (int k = 0; k < N; k++) free(cs[k]);
    free(old7);
    free(again);
}

int main(void)
{
    RUN(the_connection_table);
    RUN(posts_run_in_order_on_their_thread);
    RUN(posts_left_at_the_end_still_run);
    RUN(a_server_without_listeners_stops);
    return test_summary("srv");
}
