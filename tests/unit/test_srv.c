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

int main(void)
{
    RUN(posts_run_in_order_on_their_thread);
    RUN(posts_left_at_the_end_still_run);
    RUN(a_server_without_listeners_stops);
    return test_summary("srv");
}
