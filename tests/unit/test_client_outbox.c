/* client_outbox: the resend queue (times passed in, no I/O). */
#include <stdlib.h>

#include "client_outbox.h"
#include "test.h"

/* A counting allocator: every test ends with nothing outstanding. */
static long live;
static void *c_malloc(void *ctx, size_t n) { (void)ctx; void *p = malloc(n); if (p) live++; return p; }
static void *c_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    void *q = realloc(p, n);
    if (q && !p) live++;
    return q;
}
static void c_free(void *ctx, void *p) { (void)ctx; if (p) { live--; free(p); } }
static const parley_allocator counting = {c_malloc, c_realloc, c_free, NULL};

#define TIMEOUT 15000

/* Writes everything due at `now`; returns how many, cmids into out. */
static int write_due(client_outbox *ob, uint64_t now, const char **out, int max)
{
    int n = 0;
    client_outmsg *m;
    while (n < max && (m = client_outbox_next(ob, now, TIMEOUT, 0))) {
        out[n++] = m->cmid;
        client_outbox_mark_sent(ob, m, now);
    }
    return n;
}

TEST(fifo_and_ack)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    CHECK_EQ_INT(client_outbox_add(&ob, 7, "a", "\"1\"", 3), ERR_OK);
    CHECK_EQ_INT(client_outbox_add(&ob, 7, "b", "\"2\"", 3), ERR_OK);
    CHECK_EQ_INT(client_outbox_add(&ob, 8, "c", "{\"x\":3}", 7), ERR_OK);
    const char *w[8];
    CHECK_EQ_INT(write_due(&ob, 100, w, 8), 3);
    CHECK(strcmp(w[0], "a") == 0 && strcmp(w[1], "b") == 0 && strcmp(w[2], "c") == 0);
    /* nothing is due again before the ack timeout */
    CHECK(client_outbox_next(&ob, 101, TIMEOUT, 0) == NULL);
    /* acks remove exactly their message, in any order */
    CHECK_EQ_INT(client_outbox_ack(&ob, 7, "b"), ERR_OK);
    CHECK_EQ_INT(client_outbox_count(&ob), 2);
    CHECK(client_outbox_find(&ob, 0, "b") == NULL);
    /* the conv must match */
    CHECK_EQ_INT(client_outbox_ack(&ob, 7, "c"), ERR_NOT_FOUND);
    CHECK_EQ_INT(client_outbox_ack(&ob, 8, "c"), ERR_OK);
    CHECK_EQ_INT(client_outbox_ack(&ob, 7, "a"), ERR_OK);
    CHECK_EQ_INT(client_outbox_count(&ob), 0);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(duplicate_ack_is_harmless)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    client_outbox_add(&ob, 1, "m1", "1", 1);
    client_outbox_add(&ob, 1, "m2", "2", 1);
    const char *w[4];
    write_due(&ob, 0, w, 4);
    CHECK_EQ_INT(client_outbox_ack(&ob, 1, "m1"), ERR_OK);
    /* the resend's "duplicate" ack, or the same ack twice: nothing happens */
    CHECK_EQ_INT(client_outbox_ack(&ob, 1, "m1"), ERR_NOT_FOUND);
    CHECK_EQ_INT(client_outbox_ack(&ob, 1, "never-sent"), ERR_NOT_FOUND);
    CHECK_EQ_INT(client_outbox_count(&ob), 1);
    CHECK(client_outbox_find(&ob, 1, "m2") != NULL);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(resend_after_reconnect_same_cmid_in_order)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    char cmid[8][8];
    for (int i = 0; i < 5; i++) {
        snprintf(cmid[i], sizeof cmid[i], "c%d", i);
        CHECK_EQ_INT(client_outbox_add(&ob, 3, cmid[i], "\"x\"", 3), ERR_OK);
    }
    const char *w[8];
    CHECK_EQ_INT(write_due(&ob, 10, w, 8), 5);
    /* c0 and c2 are acked, then the connection drops */
    client_outbox_ack(&ob, 3, "c0");
    client_outbox_ack(&ob, 3, "c2");
    client_outbox_disconnected(&ob);
    /* after the reconnect: the unacked ones again, in order, same cmids */
    CHECK_EQ_INT(write_due(&ob, 20, w, 8), 3);
    CHECK(strcmp(w[0], "c1") == 0 && strcmp(w[1], "c3") == 0 && strcmp(w[2], "c4") == 0);
    CHECK_EQ_INT(client_outbox_find(&ob, 3, "c1")->attempts, 2);
    CHECK(strcmp(client_outbox_find(&ob, 3, "c1")->body, "\"x\"") == 0);
    /* a message queued while offline goes after them */
    client_outbox_disconnected(&ob);
    client_outbox_add(&ob, 3, "late", "1", 1);
    CHECK_EQ_INT(write_due(&ob, 30, w, 8), 4);
    CHECK(strcmp(w[3], "late") == 0);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(resend_after_ack_timeout)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    client_outbox_add(&ob, 1, "a", "1", 1);
    const char *w[4];
    CHECK_EQ_INT(write_due(&ob, 1000, w, 4), 1);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 0), 1000 + TIMEOUT);
    CHECK_EQ_INT(write_due(&ob, 1000 + TIMEOUT - 1, w, 4), 0);
    CHECK_EQ_INT(write_due(&ob, 1000 + TIMEOUT, w, 4), 1);
    CHECK(strcmp(w[0], "a") == 0);
    CHECK_EQ_INT(client_outbox_find(&ob, 0, "a")->attempts, 2);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(defer_holds_back_the_rest)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    client_outbox_add(&ob, 1, "a", "1", 1);
    client_outbox_add(&ob, 1, "b", "2", 1);
    const char *w[4];
    write_due(&ob, 0, w, 4);
    /* the server is busy for "a": retry after 1 s, "b" resent after it */
    CHECK_EQ_INT(client_outbox_defer(&ob, "a", 1000), ERR_OK);
    client_outbox_disconnected(&ob); /* b must wait too */
    CHECK_EQ_INT(write_due(&ob, 500, w, 4), 0);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 0), 1000);
    CHECK_EQ_INT(write_due(&ob, 1000, w, 4), 2);
    CHECK(strcmp(w[0], "a") == 0 && strcmp(w[1], "b") == 0);
    CHECK_EQ_INT(client_outbox_defer(&ob, "zzz", 5), ERR_NOT_FOUND);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(pause_and_suspect)
{
    /* A refusal that names no message: pause, then resend what was in
     * flight then and is still unacked, in order, same cmids. */
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    client_outbox_add(&ob, 1, "a", "1", 1);
    client_outbox_add(&ob, 1, "b", "2", 1);
    client_outbox_add(&ob, 1, "c", "3", 1);
    const char *w[8];
    CHECK_EQ_INT(write_due(&ob, 100, w, 8), 3);
    client_outbox_pause(&ob, 600);
    client_outbox_suspect(&ob, 100, 600);
    client_outbox_add(&ob, 1, "d", "4", 1); /* queued during the pause */
    CHECK_EQ_INT(client_outbox_ack(&ob, 1, "b"), ERR_OK); /* b's ack came meanwhile */
    CHECK_EQ_INT(write_due(&ob, 599, w, 8), 0);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 0), 600);
    CHECK_EQ_INT(write_due(&ob, 600, w, 8), 3);
    CHECK(strcmp(w[0], "a") == 0 && strcmp(w[1], "c") == 0 && strcmp(w[2], "d") == 0);
    /* the pause is over and nothing is suspected any more */
    CHECK_EQ_INT(ob.paused_until, 0);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 0), 600 + TIMEOUT);
    /* a resend time inside a pause waits for its end */
    client_outbox_pause(&ob, 700);
    client_outbox_suspect(&ob, 650, 650);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 0), 700);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(inflight_window)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "m%d", i);
        client_outbox_add(&ob, 1, id, "1", 1);
    }
    int n = 0;
    client_outmsg *m;
    while ((m = client_outbox_next(&ob, 0, TIMEOUT, 4))) { client_outbox_mark_sent(&ob, m, 0); n++; }
    CHECK_EQ_INT(n, 4);
    client_outbox_ack(&ob, 1, "m0");
    m = client_outbox_next(&ob, 0, TIMEOUT, 4);
    CHECK(m && strcmp(m->cmid, "m4") == 0);
    /* unsent messages without room do not make a timer deadline (they go
     * on an ack): only the ack timeouts of those in flight */
    client_outbox_mark_sent(&ob, m, 0);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 4), TIMEOUT);
    /* nor does a deferred one without room, whether or not its time has
     * come (a deadline next() cannot meet would be a busy timer loop) */
    client_outbox_defer(&ob, "m5", 10);
    CHECK(client_outbox_next(&ob, 20, TIMEOUT, 4) == NULL);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 4), TIMEOUT);
    /* with room, its time is the deadline */
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 5), 10);
    CHECK(client_outbox_next(&ob, 9, TIMEOUT, 5) == NULL);
    m = client_outbox_next(&ob, 10, TIMEOUT, 5);
    CHECK(m && strcmp(m->cmid, "m5") == 0);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

/* The stall of a paced paste (the CLI stopped after 58-82 of 100 acks): the
 * timer fired just before the end of a pause, next() had nothing to write,
 * and by the time the caller asked for the next deadline the pause was over.
 * The deadline skipped times already past ("found by next"), and as nothing
 * was in flight only the keepalive was left: tens of seconds. A pause or a
 * deferral that ended since the last next() is still a deadline (due now). */
TEST(pause_ended_since_next_is_still_due)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    const char *w[8];
    client_outbox_add(&ob, 1, "a", "1", 1);
    client_outbox_add(&ob, 1, "b", "2", 1);
    client_outbox_add(&ob, 1, "c", "3", 1);
    CHECK_EQ_INT(write_due(&ob, 0, w, 8), 3);
    CHECK_EQ_INT(client_outbox_ack(&ob, 1, "a"), ERR_OK);
    /* b is refused (the pause starts), c is refused on its way */
    client_outbox_pause(&ob, 300);
    CHECK_EQ_INT(client_outbox_defer(&ob, "b", 300), ERR_OK);
    client_outbox_pause(&ob, 300);
    CHECK_EQ_INT(client_outbox_defer(&ob, "c", 301), ERR_OK);
    /* the timer fires a little early: nothing yet */
    CHECK(client_outbox_next(&ob, 299, TIMEOUT, 16) == NULL);
    /* asked at 300, 301 or much later, the answer is the end of the pause */
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 16), 300);
    client_outmsg *m = client_outbox_next(&ob, 302, TIMEOUT, 16);
    CHECK(m && strcmp(m->cmid, "b") == 0);
    client_outbox_mark_sent(&ob, m, 302);
    CHECK_EQ_INT(ob.paused_until, 0);
    /* c's own deferral ended too: due, though both times are past */
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 16), 301);
    m = client_outbox_next(&ob, 302, TIMEOUT, 16);
    CHECK(m && strcmp(m->cmid, "c") == 0);
    client_outbox_mark_sent(&ob, m, 302);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 16), 302 + TIMEOUT);
    /* bad input: an empty queue, a pause alone, a window of one */
    client_outbox_ack(&ob, 1, "b");
    client_outbox_ack(&ob, 1, "c");
    CHECK(client_outbox_deadline(&ob, TIMEOUT, 16) == UINT64_MAX);
    client_outbox_pause(&ob, 900);
    CHECK(client_outbox_deadline(&ob, TIMEOUT, 16) == UINT64_MAX);
    client_outbox_add(&ob, 1, "d", "4", 1);
    CHECK_EQ_INT(client_outbox_deadline(&ob, TIMEOUT, 1), 900);
    CHECK(client_outbox_next(&ob, 899, TIMEOUT, 1) == NULL);
    CHECK(client_outbox_next(&ob, 900, TIMEOUT, 1) != NULL);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

/* Whether next() would return a message at t, without changing anything
 * (next() clears a pause that is over). */
static bool due_at(client_outbox *ob, uint64_t t, size_t window)
{
    uint64_t p = ob->paused_until;
    bool due = client_outbox_next(ob, t, TIMEOUT, window) != NULL;
    ob->paused_until = p;
    return due;
}

/* The deadline is exactly the first time next() has something, for any
 * state the client can reach: never later (a stall), never earlier than
 * next() can meet (a busy timer), whenever the caller asks. */
TEST(deadline_is_when_next_has_work)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    char id[PARLEY_CMID_MAX];
    int added = 0;
    uint64_t now = 1000;
    for (int step = 0; step < 3000; step++) {
        now += test_rand() % 200;
        size_t window = (size_t)(test_rand() % 6); /* 0: unlimited */
        int op = (int)(test_rand() % 8);
        client_outmsg *m = ob.n ? &ob.v[test_rand() % ob.n] : NULL;
        if (op <= 1 && ob.n < 40) {
            snprintf(id, sizeof id, "r%d", added++);
            client_outbox_add(&ob, 1, id, "1", 1);
        } else if (op == 2) {
            client_outmsg *n;
            for (int k = 0; k < 8 && (n = client_outbox_next(&ob, now, TIMEOUT, window)); k++)
                client_outbox_mark_sent(&ob, n, now);
        } else if (op == 3 && m) {
            snprintf(id, sizeof id, "%s", m->cmid);
            client_outbox_ack(&ob, 1, id);
        } else if (op == 4 && m) {
            uint64_t until = now + test_rand() % 700;
            client_outbox_pause(&ob, until);
            client_outbox_defer(&ob, m->cmid, until + test_rand() % 3);
        } else if (op == 5) {
            uint64_t until = now + test_rand() % 700;
            client_outbox_pause(&ob, until);
            client_outbox_suspect(&ob, now, until);
        } else if (op == 6 && test_rand() % 8 == 0) {
            client_outbox_disconnected(&ob);
        }
        /* asked at any time from now on (the clock never goes back) */
        uint64_t d = client_outbox_deadline(&ob, TIMEOUT, window);
        if (d == UINT64_MAX) {
            CHECK(!due_at(&ob, now, window));
            CHECK(!due_at(&ob, now + 10 * TIMEOUT, window));
            continue;
        }
        uint64_t at = d > now ? d : now; /* at or before now: due now */
        CHECK(due_at(&ob, at, window));
        CHECK(due_at(&ob, at + 1 + test_rand() % 1000, window)); /* and later: no spin */
        if (d > now) CHECK(!due_at(&ob, now, window) && !due_at(&ob, d - 1, window));
    }
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(limits_and_errors)
{
    client_outbox ob;
    client_outbox_init(&ob, &counting, 2);
    CHECK_EQ_INT(client_outbox_add(&ob, 1, "", "1", 1), ERR_INVALID);
    char longid[80];
    memset(longid, 'x', sizeof longid - 1);
    longid[79] = 0;
    CHECK_EQ_INT(client_outbox_add(&ob, 1, longid, "1", 1), ERR_INVALID);
    CHECK_EQ_INT(client_outbox_add(&ob, 1, "a", "1", 1), ERR_OK);
    CHECK_EQ_INT(client_outbox_add(&ob, 2, "a", "1", 1), ERR_CONFLICT);
    CHECK_EQ_INT(client_outbox_add(&ob, 1, "b", "1", 1), ERR_OK);
    CHECK_EQ_INT(client_outbox_add(&ob, 1, "c", "1", 1), ERR_FULL);
    CHECK_EQ_INT(client_outbox_remove(&ob, "a"), ERR_OK);
    CHECK_EQ_INT(client_outbox_remove(&ob, "a"), ERR_NOT_FOUND);
    CHECK_EQ_INT(client_outbox_add(&ob, 1, "c", "1", 1), ERR_OK);
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

TEST(many_random)
{
    /* random adds, acks, duplicate acks and reconnects against a model */
    client_outbox ob;
    client_outbox_init(&ob, &counting, 0);
    char model[300][16];
    int nm = 0, next = 0;
    for (int step = 0; step < 5000; step++) {
        int op = (int)(test_rand() % 4);
        if (op == 0 && nm < 300) {
            snprintf(model[nm], 16, "k%d", next++);
            CHECK_EQ_INT(client_outbox_add(&ob, 1, model[nm], "1", 1), ERR_OK);
            nm++;
        } else if (op == 1 && nm > 0) {
            int i = (int)(test_rand() % (uint64_t)nm);
            CHECK_EQ_INT(client_outbox_ack(&ob, 1, model[i]), ERR_OK);
            CHECK_EQ_INT(client_outbox_ack(&ob, 1, model[i]), ERR_NOT_FOUND);
            memmove(model[i], model[i + 1], (size_t)(nm - i - 1) * sizeof model[0]);
            nm--;
        } else if (op == 2) {
            client_outbox_disconnected(&ob);
            const char *w[300];
            int n = write_due(&ob, (uint64_t)step, w, 300);
            CHECK_EQ_INT(n, nm);
            for (int i = 0; i < n && i < nm; i++) CHECK(strcmp(w[i], model[i]) == 0);
        }
        CHECK_EQ_INT(client_outbox_count(&ob), nm);
    }
    client_outbox_free(&ob);
    CHECK_EQ_INT(live, 0);
}

int main(void)
{
    test_seed();
    RUN(fifo_and_ack);
    RUN(duplicate_ack_is_harmless);
    RUN(resend_after_reconnect_same_cmid_in_order);
    RUN(resend_after_ack_timeout);
    RUN(defer_holds_back_the_rest);
    RUN(pause_and_suspect);
    RUN(inflight_window);
    RUN(pause_ended_since_next_is_still_due);
    RUN(deadline_is_when_next_has_work);
    RUN(limits_and_errors);
    RUN(many_random);
    return test_summary("client_outbox");
}
