/* Unit tests of the guard's buckets (src/chat/guard.c, guard.h): WebSocket
 * handshakes and logins per source address, messages per user; each key
 * and each kind its own bucket, refilled with time, 0 disabling a rate,
 * the tables bounded by GUARD_MAX_ENTRIES, and takes from many threads
 * never passing the burst. Times are synthetic milliseconds. (The login
 * delay rule has its own file: it is changing.) */
#include "test.h"

#include <uv.h>

#include "base/config.h"
#include "base/err.h"
#include "chat/guard.h"

#define T0 5000000ull
#define ADDR(n) (0x100000000ull | (uint64_t)(n))

static config cfg;

static guard *fresh(void)
{
    guard *g = NULL;
    if (guard_new(&g, &cfg) != ERR_OK || !g) exit(2);
    return g;
}

/* How many of n takes at time now pass. */
static int passes(int (*take)(guard *, uint64_t, uint64_t, uint32_t *), guard *g, uint64_t key,
                  uint64_t now, int n)
{
    int ok = 0;
    uint32_t retry;
    for (int i = 0; i < n; i++) ok += take(g, key, now, &retry) == ERR_OK;
    return ok;
}

TEST(handshakes_per_address)
{
    cfg.rate_handshakes = 2;   /* burst x5: 10 */
    guard *g = fresh();
    CHECK_EQ_INT(passes(guard_handshake, g, ADDR(1), T0, 10), 10);
    uint32_t retry = 0;
    CHECK_EQ_INT(guard_handshake(g, ADDR(1), T0, &retry), ERR_RATE);
    CHECK(retry > 0 && retry <= 501);               /* one token at 2/s */
    /* Another address has its own bucket. */
    CHECK_EQ_INT(passes(guard_handshake, g, ADDR(2), T0, 10), 10);
    /* Time refills: after the wait it was told, one more passes, not two. */
    CHECK_EQ_INT(guard_handshake(g, ADDR(1), T0 + retry, &retry), ERR_OK);
    CHECK_EQ_INT(guard_handshake(g, ADDR(1), T0 + 501, &retry), ERR_RATE);
    CHECK_EQ_INT(passes(guard_handshake, g, ADDR(1), T0 + 60000, 20), 10); /* full again, no more */
    guard_free(g);
}

TEST(logins_per_address_are_a_bucket_of_their_own)
{
    cfg.rate_handshakes = 1;   /* burst 5 */
    cfg.rate_logins = 1;       /* burst 4 */
    guard *g = fresh();
    CHECK_EQ_INT(passes(guard_handshake, g, ADDR(7), T0, 10), 5);
    CHECK_EQ_INT(passes(guard_login_addr, g, ADDR(7), T0, 10), 4);  /* untouched by handshakes */
    uint32_t retry = 0;
    CHECK_EQ_INT(guard_login_addr(g, ADDR(7), T0, &retry), ERR_RATE);
    CHECK(retry > 0 && retry <= 1001);
    CHECK_EQ_INT(passes(guard_login_addr, g, ADDR(8), T0, 10), 4);
    CHECK_EQ_INT(passes(guard_login_addr, g, ADDR(7), T0 + 2000, 10), 2);
    guard_free(g);
}

TEST(messages_per_user)
{
    cfg.rate_user_msgs = 10;   /* burst 40 */
    guard *g = fresh();
    CHECK_EQ_INT(passes(guard_user_msg, g, 42, T0, 100), 40);
    uint32_t retry = 0;
    CHECK_EQ_INT(guard_user_msg(g, 42, T0, &retry), ERR_RATE);
    CHECK(retry > 0 && retry <= 101);
    CHECK_EQ_INT(passes(guard_user_msg, g, 43, T0, 100), 40);
    /* Users and addresses are different tables: uid 42 is no address. */
    CHECK_EQ_INT(guard_handshake(g, 42, T0, &retry), ERR_OK);
    CHECK_EQ_INT(passes(guard_user_msg, g, 42, T0 + 1000, 100), 10);
    guard_free(g);
}

TEST(a_zero_rate_disables_the_limit)
{
    cfg.rate_handshakes = 0;
    cfg.rate_logins = 0;
    cfg.rate_user_msgs = 0;
    guard *g = fresh();
    CHECK_EQ_INT(passes(guard_handshake, g, ADDR(1), T0, 5000), 5000);
    CHECK_EQ_INT(passes(guard_login_addr, g, ADDR(1), T0, 5000), 5000);
    CHECK_EQ_INT(passes(guard_user_msg, g, 1, T0, 5000), 5000);
    guard_free(g);
}

TEST(tables_stay_bounded)
{
    cfg.rate_handshakes = 1;   /* burst 5 */
    guard *g = fresh();
    CHECK_EQ_INT(passes(guard_handshake, g, ADDR(1), T0, 5), 5);
    uint32_t retry;
    CHECK_EQ_INT(guard_handshake(g, ADDR(1), T0, &retry), ERR_RATE);
    /* A spray of addresses fills the table; passing GUARD_MAX_ENTRIES
     * empties it, so memory stays bounded (and every bucket is full). */
    int refused = 0;
    for (uint64_t i = 0; i < GUARD_MAX_ENTRIES; i++)
        refused += guard_handshake(g, ADDR(1000 + i), T0, &retry) != ERR_OK;
    CHECK_EQ_INT(refused, 0);
    CHECK_EQ_INT(guard_handshake(g, ADDR(1), T0, &retry), ERR_OK);
    guard_free(g);
}

typedef struct race {
    guard *g;
    int ok;
} race;

static void racer(void *arg)
{
    race *r = arg;
    uint32_t retry;
    for (int i = 0; i < 2000; i++) r->ok += guard_user_msg(r->g, 9, T0, &retry) == ERR_OK;
}

TEST(many_threads_never_pass_the_burst)
{
    cfg.rate_user_msgs = 100;  /* burst 400 */
    guard *g = fresh();
    uv_thread_t t[4];
    race r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (race){g, 0};
        uv_thread_create(&t[i], racer, &r[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        uv_thread_join(&t[i]);
        total += r[i].ok;
    }
    CHECK_EQ_INT(total, 400);
    guard_free(g);
}

/* An unknown peer address (key 0) is limited like any address, in one
 * entry: it neither passes unlimited nor grows the table per call. */
TEST(an_unknown_address_is_limited_too)
{
    cfg.rate_handshakes = 1;   /* burst 5 */
    guard *g = fresh();
    CHECK_EQ_INT(passes(guard_handshake, g, 0, T0, 100), 5);
    guard_free(g);
}

TEST(bad_calls_are_harmless)
{
    cfg.rate_handshakes = 1;
    guard *g = fresh();
    uint32_t retry = 7;
    /* The largest keys and times. */
    CHECK_EQ_INT(guard_handshake(g, UINT64_MAX, UINT64_MAX, &retry), ERR_OK);
    CHECK_EQ_INT(guard_user_msg(g, UINT64_MAX, 0, &retry), ERR_OK);
    CHECK(guard_now() > 0);
    guard_free(g);
    guard_free(NULL);
}

int main(void)
{
    config_defaults(&cfg);
    RUN(handshakes_per_address);
    RUN(logins_per_address_are_a_bucket_of_their_own);
    RUN(messages_per_user);
    RUN(a_zero_rate_disables_the_limit);
    RUN(tables_stay_bounded);
    RUN(many_threads_never_pass_the_burst);
    RUN(an_unknown_address_is_limited_too);
    RUN(bad_calls_are_harmless);
    return test_summary("guard_limits");
}
