/* The chat service's store reads on the read pool (chat.h, net/pool.h),
 * through the WebSocket and REST handlers on a real loop: the test holds
 * every worker of the pool with jobs of its own (a gate), so that a read
 * waits there as long as it likes, and shows that
 *   - the I/O thread goes on serving other connections meanwhile, and the
 *     waiting connection's later frames are answered after the read, in
 *     order;
 *   - a full queue answers busy (frame, REST, upgrade), typing is dropped;
 *   - a connection gone before its answer loses it (nothing else happens);
 *   - the upgrade completes only after the token check, and a stop that
 *     begins meanwhile refuses it. */
#include "test.h"

#include <poll.h>

#include "chat_ops.h"
#include "fixture.h"
#include "wire.h"

#define READ_THREADS 2
#define READ_QUEUE 3

static fx f;
static int port;

/* ---- holding the pool's workers ------------------------------------------------- */

typedef struct gate {
    uv_mutex_t mu;
    uv_cond_t cv;
    bool open;
    int at, left;            /* jobs at the gate; jobs not yet done */
} gate;

typedef struct gate_job {
    pool_job job;            /* first */
    gate *g;
} gate_job;

static void gate_run(pool_job *j)
{
    gate *g = ((gate_job *)j)->g;
    uv_mutex_lock(&g->mu);
    g->at++;
    uv_cond_broadcast(&g->cv);
    while (!g->open) uv_cond_wait(&g->cv, &g->mu);
    uv_mutex_unlock(&g->mu);
}

static void gate_done(srv_thread *t, void *arg)
{
    gate *g = ((gate_job *)arg)->g;
    free(arg);
    uv_mutex_lock(&g->mu);
    g->left--;
    uv_cond_broadcast(&g->cv);
    uv_mutex_unlock(&g->mu);
}

static bool gate_until(gate *g, bool (*cond)(gate *))
{
    uint64_t deadline = uv_hrtime() + (uint64_t)FX_WAIT_S * 1000000000ull;
    uv_mutex_lock(&g->mu);
    while (!cond(g) && uv_hrtime() < deadline) uv_cond_timedwait(&g->cv, &g->mu, 10000000);
    bool ok = cond(g);
    uv_mutex_unlock(&g->mu);
    return ok;
}

static bool all_at(gate *g) { return g->at == READ_THREADS; }
static bool all_done(gate *g) { return g->left == 0; }

/* Every worker waits at a new gate: reads queue up behind it. */
static gate *block(chat *ch)
{
    gate *g = calloc(1, sizeof *g);
    uv_mutex_init(&g->mu);
    uv_cond_init(&g->cv);
    g->left = READ_THREADS;
    for (int i = 0; i < READ_THREADS; i++) {
        gate_job *j = calloc(1, sizeof *j);
        j->job.run = gate_run;
        j->job.done = gate_done;
        j->g = g;
        if (pool_continue(ch->reads, &j->job) != ERR_OK) fx_fatal("pool_continue");
    }
    if (!gate_until(g, all_at)) fx_fatal("the workers did not reach the gate");
    return g;
}

static void unblock(gate *g)
{
    uv_mutex_lock(&g->mu);
    g->open = true;
    uv_cond_broadcast(&g->cv);
    uv_mutex_unlock(&g->mu);
    if (!gate_until(g, all_done)) fx_fatal("the gate jobs did not end");
    uv_cond_destroy(&g->cv);
    uv_mutex_destroy(&g->mu);
    free(g);
}

/* Waits (bounded) until n reads wait in the pool. */
static bool queued(chat *ch, size_t n)
{
    pool_stats st = {0};
    for (int i = 0; i < FX_WAIT_S * 1000; i++) {
        pool_get_stats(ch->reads, &st);
        if (st.queued == n) return true;
        uv_sleep(1);
    }
    fprintf(stderr, "  %zu reads queued, not %zu\n", st.queued, n);
    return false;
}

static void count_conns(srv_thread *t, void *arg)
{
    *(uint32_t *)arg = t->nconns;
}

/* What earlier tests left has ended: no connection on f's thread, nothing
 * in the pool (a closed session's presence job, say). */
static void settle(void)
{
    for (int i = 0; i < FX_WAIT_S * 1000; i++) {
        uint32_t n = 0;
        pool_stats st;
        fx_run(&f, 0, count_conns, &n);
        pool_get_stats(f.ch->reads, &st);
        if (!n && !st.queued && !st.running) return;
        uv_sleep(1);
    }
    fx_fatal("connections or reads left over");
}

/* ---- the client side ------------------------------------------------------------- */

static bool type_is(const char *frame, const char *type)
{
    char want[48];
    snprintf(want, sizeof want, "{\"type\":\"%s\"", type);
    return frame && strncmp(frame, want, strlen(want)) == 0;
}

static char *expect(wire *w, const char *type)
{
    char *p = wire_next(w);
    if (!type_is(p, type)) {
        fprintf(stderr, "  expected %s, got %s\n", type, p ? p : "nothing");
        free(p);
        return NULL;
    }
    return p;
}

static bool expect_pong(wire *w)
{
    char *p = expect(w, "pong");
    free(p);
    return p != NULL;
}

static wire *connect_as(const test_user *u)
{
    wire *w = wire_ws(port, u->token, NULL, NULL);
    char *hello = w ? expect(w, "hello") : NULL;
    if (!hello) { wire_close(w); return NULL; }
    free(hello);
    return w;
}

/* Nothing has come from the server yet (not even a byte). */
static bool silent(wire *w)
{
    struct pollfd p = {w->fd, POLLIN, 0};
    return w->len == 0 && poll(&p, 1, 0) == 0;
}

static void write_upgrade(wire *w, const char *token, const char *then)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET /v1/ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Authorization: Bearer %s\r\n\r\n", token);
    wire_write(w, req, (size_t)n);
    if (then) wire_text(w, then);
}

static test_user alice, bob, carol;
static uint64_t conv_ab;

static void setup_users(void)
{
    alice = user_register(&f, "alice");
    bob = user_register(&f, "bob");
    carol = user_register(&f, "carol");
    op_result r = conv_direct(&f, &alice, &bob);
    conv_ab = r.op.conv;
    chat_op *op = op_new(&f, OP_SEND, 0);
    op_as(op, &alice);
    op->conv = conv_ab;
    snprintf(op->cmid, sizeof op->cmid, "m1");
    op->cmid_len = 2;
    op->body = strdup("\"hi\"");
    op->body_len = 4;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
}

/* ---- tests --------------------------------------------------------------------------- */

TEST(a_slow_read_does_not_stall_the_thread)
{
    settle();
    wire *wa = connect_as(&alice), *wb = connect_as(&bob);
    CHECK(wa && wb);
    if (!wa || !wb) { wire_close(wa); wire_close(wb); return; }
    gate *g = block(f.ch);
    char frame[160];
    snprintf(frame, sizeof frame, "{\"type\":\"sync\",\"conv\":%llu,\"id\":\"s1\"}",
             (unsigned long long)conv_ab);
    wire_text(wa, frame);
    CHECK(queued(f.ch, 1));
    /* The one I/O thread serves bob while alice's read waits ... */
    wire_text(wb, "{\"type\":\"ping\"}");
    CHECK(expect_pong(wb));
    /* ... and alice's next frame waits for her read, answered after it. */
    wire_text(wa, "{\"type\":\"ping\"}");
    unblock(g);
    char *h = expect(wa, "history");
    CHECK(h && strstr(h, "\"id\":\"s1\"") && strstr(h, "\"cmid\":\"m1\""));
    free(h);
    CHECK(expect_pong(wa));
    wire_close(wa);
    wire_close(wb);
}

TEST(a_full_pool_answers_busy)
{
    settle();
    wire *wa = connect_as(&alice), *wb = connect_as(&bob), *wc = connect_as(&carol);
    CHECK(wa && wb && wc);
    if (!wa || !wb || !wc) { wire_close(wa); wire_close(wb); wire_close(wc); return; }
    gate *g = block(f.ch);
    wire_text(wa, "{\"type\":\"inbox\",\"id\":1}");
    wire_text(wb, "{\"type\":\"inbox\",\"id\":2}");
    wire *rest = wire_connect(port);
    char head[256];
    snprintf(head, sizeof head, "GET /v1/conversations HTTP/1.1\r\nHost: test\r\n%s\r\n",
             wire_bearer(alice.token));
    wire_write(rest, head, strlen(head));
    CHECK(queued(f.ch, READ_QUEUE));
    /* A frame: an error with its ref and a retry time. */
    wire_text(wc, "{\"type\":\"sync\",\"conv\":1,\"id\":\"b1\"}");
    char *e = expect(wc, "error");
    CHECK(e && strcmp(e, "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"server busy: retry "
                         "later\",\"retry_after_ms\":1000,\"ref\":\"b1\"}") == 0);
    free(e);
    /* Typing is lossy: dropped, no answer (the pong comes next). */
    char frame[96];
    snprintf(frame, sizeof frame, "{\"type\":\"typing\",\"conv\":%llu,\"id\":\"t\"}",
             (unsigned long long)conv_ab);
    wire_text(wc, frame);
    wire_text(wc, "{\"type\":\"ping\"}");
    CHECK(expect_pong(wc));
    /* REST and a new upgrade: 503 busy with Retry-After. */
    wire_resp r;
    CHECK(wire_http1(port, "GET", "/v1/conversations", wire_bearer(carol.token), NULL, &r));
    CHECK_EQ_INT(r.status, 503);
    CHECK(r.body && strstr(r.body, "\"code\":\"busy\""));
    CHECK(wire_header(&r, "Retry-After") && strcmp(wire_header(&r, "Retry-After"), "1") == 0);
    wire_resp_free(&r);
    CHECK(wire_ws(port, carol.token, NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 503);
    CHECK(r.body && strstr(r.body, "\"code\":\"busy\""));
    wire_resp_free(&r);
    /* Without a token there is nothing to read: answered at once. */
    CHECK(wire_http1(port, "GET", "/v1/conversations", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    unblock(g);
    e = expect(wa, "inbox");
    CHECK(e && strstr(e, "\"id\":1"));
    free(e);
    e = expect(wb, "inbox");
    CHECK(e && strstr(e, "\"id\":2"));
    free(e);
    CHECK(wire_read_resp(rest, false, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body && strstr(r.body, "\"conversations\":["));
    wire_resp_free(&r);
    wire_close(rest);
    wire_close(wa);
    wire_close(wb);
    wire_close(wc);
}

/* Closes, on the server, every connection of thread t but those with
 * sessions of `keep` (the test's own). */
static uint64_t keep;

static void abort_others(srv_thread *t, void *arg)
{
    int *n = arg;
    uint32_t pos = 0;
    for (conn *c; (c = srv_conn_next(t, &pos));) {
        session *s = conn_user(c);
        if (c->state != CONN_HTTP && c->state != CONN_WS) continue;
        if (c->state == CONN_WS && s->uid == keep) continue;
        conn_abort(c);
        (*n)++;
    }
}

TEST(a_connection_gone_before_its_answer)
{
    settle();
    wire *wa = connect_as(&alice), *wb = connect_as(&bob);
    CHECK(wa && wb);
    if (!wa || !wb) { wire_close(wa); wire_close(wb); return; }
    gate *g = block(f.ch);
    char frame[96];
    snprintf(frame, sizeof frame, "{\"type\":\"sync\",\"conv\":%llu}", (unsigned long long)conv_ab);
    wire_text(wa, frame);                               /* a WebSocket read */
    wire *rest = wire_connect(port);                    /* a REST read */
    char head[256];
    snprintf(head, sizeof head, "GET /v1/conversations/%llu/messages HTTP/1.1\r\nHost: test\r\n%s\r\n",
             (unsigned long long)conv_ab, wire_bearer(alice.token));
    wire_write(rest, head, strlen(head));
    wire *up = wire_connect(port);                      /* an upgrade (with contacts) */
    write_upgrade(up, alice.token, NULL);
    CHECK(queued(f.ch, 3));
    keep = bob.uid;
    int n = 0;
    fx_run(&f, 0, abort_others, &n);
    CHECK(n >= 3);
    unblock(g); /* the answers find no connection: freed, nothing sent */
    pool_stats st;
    for (int i = 0; i < FX_WAIT_S * 1000; i++) {
        pool_get_stats(f.ch->reads, &st);
        if (!st.queued && !st.running) break;
        uv_sleep(1);
    }
    fx_barrier(&f);
    CHECK(wire_closed(wa));
    CHECK(wire_closed(up));
    wire_resp r;
    CHECK(!wire_read_resp(rest, false, &r));
    wire_resp_free(&r);
    wire_text(wb, "{\"type\":\"ping\"}");
    CHECK(expect_pong(wb));
    wire_close(rest);
    wire_close(up);
    wire_close(wa);
    wire_close(wb);
}

TEST(the_upgrade_waits_for_the_token_check)
{
    settle();
    gate *g = block(f.ch);
    wire *w = wire_connect(port);
    write_upgrade(w, carol.token, "{\"type\":\"ping\"}"); /* and a frame right behind it */
    CHECK(queued(f.ch, 1));
    fx_barrier(&f);
    CHECK(silent(w)); /* no 101 before the check */
    unblock(g);
    wire_resp r;
    CHECK(wire_read_resp(w, false, &r));
    CHECK_EQ_INT(r.status, 101);
    wire_resp_free(&r);
    char *hello = expect(w, "hello");
    CHECK(hello && strstr(hello, "\"user\":\"carol\""));
    free(hello);
    CHECK(expect_pong(w)); /* the frame sent before the 101, read after it */
    wire_close(w);
    /* A bad token waits the same way, then 401. */
    settle();
    g = block(f.ch);
    w = wire_connect(port);
    write_upgrade(w, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL);
    CHECK(queued(f.ch, 1));
    fx_barrier(&f);
    CHECK(silent(w));
    unblock(g);
    CHECK(wire_read_resp(w, false, &r));
    CHECK_EQ_INT(r.status, 401);
    CHECK(wire_header(&r, "WWW-Authenticate") != NULL);
    wire_resp_free(&r);
    wire_close(w);
}

TEST(a_stop_refuses_a_waiting_upgrade)
{
    fx g;
    fx_config(&g, 1);
    g.cfg.read_threads = READ_THREADS;
    fx_start(&g, true);
    int p = fx_listen(&g, 0);
    test_user u = user_register(&g, "dora");
    gate *gt = block(g.ch);
    wire *w = wire_connect(p);
    write_upgrade(w, u.token, NULL);
    CHECK(queued(g.ch, 1));
    server_stop(g.srv);
    fx_barrier(&g); /* the thread is stopping; the held request keeps it */
    unblock(gt);
    wire_resp r;
    CHECK(wire_read_resp(w, false, &r));
    CHECK_EQ_INT(r.status, 503);
    CHECK(r.body && strstr(r.body, "\"code\":\"stopping\""));
    wire_resp_free(&r);
    wire_close(w);
    fx_stop(&g);
}

int main(void)
{
    fx_config(&f, 1);
    f.cfg.read_threads = READ_THREADS;
    f.cfg.max_read_queue = READ_QUEUE;
    f.cfg.rate_handshakes = 0; /* every client here is 127.0.0.1 */
    fx_start(&f, true);
    port = fx_listen(&f, 0);
    setup_users();
    RUN(a_slow_read_does_not_stall_the_thread);
    RUN(a_full_pool_answers_busy);
    RUN(a_connection_gone_before_its_answer);
    RUN(the_upgrade_waits_for_the_token_check);
    RUN(a_stop_refuses_a_waiting_upgrade);
    fx_stop(&f);
    return test_summary("reads");
}
