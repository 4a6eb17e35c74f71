/* Unit tests of the login guard (src/chat/guard.c): failed logins delay
 * their own line, (account, source address) or (account, known device),
 * and share a much higher per-account ceiling that never holds back a
 * known device, so a stranger cannot lock the owner out. Times are
 * synthetic milliseconds. */
#include "test.h"

#include "base/config.h"
#include "base/err.h"
#include "chat/guard.h"

#define T0 1000000ull
#define ADDR(n) (0x100000000ull | (uint64_t)(n))

static guard *fresh(void)
{
    static config cfg;
    config_defaults(&cfg);
    guard *g = NULL;
    if (guard_new(&g, &cfg) != ERR_OK) exit(2);
    return g;
}

static guard_login line(uint64_t uid, uint64_t addr, uint32_t device)
{
    return (guard_login){uid, addr, device};
}

/* One whole attempt: begin, then end with ok. Returns begin's answer. */
static int attempt(guard *g, guard_login l, bool ok, uint64_t now, uint32_t *retry)
{
    int rc = guard_login_begin(g, &l, now, retry);
    if (rc == ERR_OK) guard_login_end(g, &l, ok, now);
    return rc;
}

TEST(stranger_delays_only_his_own_address)
{
    guard *g = fresh();
    guard_login attacker = line(7, ADDR(2), 0), owner = line(7, ADDR(3), 0);
    uint32_t retry = 0;
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(attempt(g, attacker, false, T0, &retry), ERR_OK);
    /* The attacker's address now waits, even with the right password... */
    CHECK_EQ_INT(guard_login_begin(g, &attacker, T0 + 10, &retry), ERR_RATE);
    CHECK(retry > 0 && retry <= 1000);
    /* ... and the owner at another address logs in at once, a new device. */
    CHECK_EQ_INT(attempt(g, owner, true, T0 + 10, &retry), ERR_OK);
    /* Another account is untouched, from the attacker's address too. */
    CHECK_EQ_INT(attempt(g, line(8, ADDR(2), 0), true, T0 + 10, &retry), ERR_OK);
    guard_free(g);
}

TEST(delays_grow_to_a_minute_and_a_success_clears_them)
{
    guard *g = fresh();
    guard_login a = line(7, ADDR(2), 0);
    uint32_t retry = 0;
    uint64_t now = T0;
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(attempt(g, a, false, now, &retry), ERR_OK);
    uint32_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_EQ_INT(guard_login_begin(g, &a, now, &retry), ERR_RATE);
        CHECK_EQ_INT(retry, want[i]);
        now += retry;
        CHECK_EQ_INT(attempt(g, a, false, now, &retry), ERR_OK);
    }
    CHECK_EQ_INT(guard_login_begin(g, &a, now, &retry), ERR_RATE);
    CHECK_EQ_INT(retry, 60000);
    now += retry;
    CHECK_EQ_INT(attempt(g, a, true, now, &retry), ERR_OK);
    /* Cleared: three more failures before the next delay. */
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(attempt(g, a, false, now, &retry), ERR_OK);
    CHECK_EQ_INT(guard_login_begin(g, &a, now, &retry), ERR_RATE);
    CHECK_EQ_INT(retry, 1000);
    guard_free(g);
}

TEST(parallel_guesses_on_one_line)
{
    guard *g = fresh();
    guard_login a = line(7, ADDR(2), 0);
    uint32_t retry = 0;
    /* At most 3 checks at once. */
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_OK);
    CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_RATE);
    CHECK_EQ_INT(retry, 1000);
    /* One failed: only one check at a time then (1 + 2 running >= 3). */
    guard_login_end(g, &a, false, T0);
    CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_RATE);
    guard_login_end(g, &a, false, T0);
    guard_login_end(g, &a, false, T0);
    /* Three failures: the delay. */
    CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_RATE);
    CHECK_EQ_INT(retry, 1000);
    /* The owner elsewhere is not held back by the attacker's checks. */
    guard_login o = line(7, ADDR(3), 0);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(guard_login_begin(g, &o, T0, &retry), ERR_OK);
    for (int i = 0; i < 3; i++) guard_login_end(g, &o, true, T0);
    guard_free(g);
}

TEST(known_device_is_not_delayed_by_others)
{
    guard *g = fresh();
    uint32_t retry = 0;
    /* Failures from the device's own address, and from everywhere: the
     * account's ceiling is used up. */
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(attempt(g, line(7, ADDR(2), 0), false, T0, &retry), ERR_OK);
    for (uint32_t i = 0; i < GUARD_ACCOUNT_BURST; i++)
        attempt(g, line(7, ADDR(1000 + i), 0), false, T0, &retry);
    CHECK_EQ_INT(attempt(g, line(7, ADDR(5000), 0), true, T0, &retry), ERR_RATE);
    /* Device 4 presents its key: it logs in, from the attacker's address. */
    CHECK_EQ_INT(attempt(g, line(7, ADDR(2), 4), true, T0, &retry), ERR_OK);
    CHECK_EQ_INT(attempt(g, line(7, ADDR(9), 4), true, T0, &retry), ERR_OK);
    /* Its own failures delay it, and only it. */
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(attempt(g, line(7, ADDR(9), 4), false, T0, &retry), ERR_OK);
    CHECK_EQ_INT(attempt(g, line(7, ADDR(9), 4), true, T0, &retry), ERR_RATE);
    CHECK(retry > 0 && retry <= 1000);
    /* Whatever the address: the line is the device. */
    CHECK_EQ_INT(attempt(g, line(7, ADDR(10), 4), true, T0, &retry), ERR_RATE);
    CHECK_EQ_INT(attempt(g, line(7, ADDR(9), 5), true, T0, &retry), ERR_OK);
    /* Another account's device 4 is another line. */
    for (int i = 0; i < 3; i++) attempt(g, line(8, ADDR(9), 4), true, T0, &retry);
    CHECK_EQ_INT(attempt(g, line(8, ADDR(9), 4), true, T0, &retry), ERR_OK);
    guard_free(g);
}

TEST(account_ceiling_over_many_addresses)
{
    guard *g = fresh();
    uint32_t retry = 0;
    uint64_t now = T0;
    /* A guesser spread over addresses: each address stays under its own
     * delay (2 failures each), the account's ceiling stops him. */
    int checked = 0, refused = 0;
    for (uint32_t i = 0; i < GUARD_ACCOUNT_BURST; i++)
        for (int k = 0; k < 2; k++) {
            if (attempt(g, line(7, ADDR(100 + i), 0), false, now, &retry) == ERR_OK) checked++;
            else refused++;
        }
    CHECK_EQ_INT(checked, GUARD_ACCOUNT_BURST);
    CHECK_EQ_INT(refused, GUARD_ACCOUNT_BURST);
    /* Every unknown device now waits for the refill... */
    CHECK_EQ_INT(attempt(g, line(7, ADDR(7777), 0), true, now, &retry), ERR_RATE);
    uint32_t per = 60000 / GUARD_ACCOUNT_PER_MIN;
    CHECK(retry > 0 && retry <= per + 1);
    /* ... which lets GUARD_ACCOUNT_PER_MIN checks a minute through. */
    now += retry;
    CHECK_EQ_INT(attempt(g, line(7, ADDR(7777), 0), false, now, &retry), ERR_OK);
    CHECK_EQ_INT(attempt(g, line(7, ADDR(7778), 0), false, now, &retry), ERR_RATE);
    now += 60000;
    checked = 0;
    for (uint32_t i = 0; i < 3 * GUARD_ACCOUNT_PER_MIN; i++)
        if (attempt(g, line(7, ADDR(20000 + i), 0), false, now, &retry) == ERR_OK) checked++;
    CHECK_EQ_INT(checked, GUARD_ACCOUNT_PER_MIN);
    /* Other accounts have their own ceiling. */
    CHECK_EQ_INT(attempt(g, line(8, ADDR(7777), 0), true, now, &retry), ERR_OK);
    guard_free(g);
}

TEST(checks_in_flight_hold_the_ceiling)
{
    guard *g = fresh();
    uint32_t retry = 0;
    /* Simultaneous guesses from many addresses: no more run at once than
     * the ceiling holds. */
    int ok = 0;
    for (uint32_t i = 0; i < 2 * GUARD_ACCOUNT_BURST; i++) {
        guard_login l = line(7, ADDR(100 + i), 0);
        if (guard_login_begin(g, &l, T0, &retry) == ERR_OK) ok++;
    }
    CHECK_EQ_INT(ok, GUARD_ACCOUNT_BURST);
    /* They all turn out right: the tokens come back. */
    for (uint32_t i = 0; i < GUARD_ACCOUNT_BURST; i++) {
        guard_login l = line(7, ADDR(100 + i), 0);
        guard_login_end(g, &l, true, T0);
    }
    CHECK_EQ_INT(attempt(g, line(7, ADDR(1), 0), true, T0, &retry), ERR_OK);
    /* Successes never use up the ceiling. */
    for (uint32_t i = 0; i < 3 * GUARD_ACCOUNT_BURST; i++)
        CHECK_EQ_INT(attempt(g, line(7, ADDR(50000 + i), 0), true, T0, &retry), ERR_OK);
    guard_free(g);
}

TEST(refused_by_the_ceiling_leaves_the_line_alone)
{
    guard *g = fresh();
    uint32_t retry = 0;
    for (uint32_t i = 0; i < GUARD_ACCOUNT_BURST; i++)
        attempt(g, line(7, ADDR(100 + i), 0), false, T0, &retry);
    guard_login a = line(7, ADDR(5), 0);
    for (int i = 0; i < 5; i++) CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_RATE);
    /* After a refill of 3 tokens, the line runs 3 checks at once: the
     * refusals did not count as checks in flight on it. */
    uint64_t later = T0 + 3 * 60000 / GUARD_ACCOUNT_PER_MIN + 10;
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(guard_login_begin(g, &a, later, &retry), ERR_OK);
    for (int i = 0; i < 3; i++) guard_login_end(g, &a, true, later);
    guard_free(g);
}

/* A check the server could not start (out of memory, a full thread pool)
 * is cancelled: no longer in flight, and no failure counted or cleared. */
TEST(a_cancelled_check_frees_its_place)
{
    guard *g = fresh();
    guard_login a = line(9, ADDR(4), 0);
    uint32_t retry = 0;
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_OK);
    CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_RATE);   /* 3 in flight */
    for (int i = 0; i < 3; i++) guard_login_cancel(g, &a);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_OK);
    for (int i = 0; i < 3; i++) guard_login_end(g, &a, false, T0);   /* three failures */
    CHECK_EQ_INT(guard_login_begin(g, &a, T0, &retry), ERR_RATE);   /* the delay */
    CHECK_EQ_INT(guard_login_begin(g, &a, T0 + 1000, &retry), ERR_OK);
    guard_login_cancel(g, &a);                                        /* keeps the failures */
    CHECK_EQ_INT(attempt(g, a, false, T0 + 1000, &retry), ERR_OK);
    CHECK_EQ_INT(guard_login_begin(g, &a, T0 + 2000, &retry), ERR_RATE); /* grown: 2 s */
    guard_free(g);
}

TEST(bad_calls_are_harmless)
{
    guard *g = fresh();
    uint32_t retry = 0;
    /* An end without a begin, of a line or an account never seen. */
    guard_login l = line(99, ADDR(1), 0);
    guard_login_end(g, &l, true, T0);
    guard_login_end(g, &l, false, T0);
    l.device = 3;
    guard_login_end(g, &l, false, T0);
    /* Address 0 (unknown) and uid 0 are keys like any other. */
    CHECK_EQ_INT(attempt(g, line(0, 0, 0), false, T0, &retry), ERR_OK);
    CHECK_EQ_INT(attempt(g, line(99, ADDR(1), 0), true, T0, &retry), ERR_OK);
    /* The NULL retry pointer is allowed. */
    for (int i = 0; i < 3; i++) attempt(g, line(5, 0, 0), false, T0, NULL);
    CHECK_EQ_INT(attempt(g, line(5, 0, 0), true, T0, NULL), ERR_RATE);
    guard_free(g);
}

int main(void)
{
    test_seed();
    RUN(stranger_delays_only_his_own_address);
    RUN(delays_grow_to_a_minute_and_a_success_clears_them);
    RUN(parallel_guesses_on_one_line);
    RUN(known_device_is_not_delayed_by_others);
    RUN(account_ceiling_over_many_addresses);
    RUN(checks_in_flight_hold_the_ceiling);
    RUN(refused_by_the_ceiling_leaves_the_line_alone);
    RUN(a_cancelled_check_frees_its_place);
    RUN(bad_calls_are_harmless);
    return test_summary("guard");
}
