/* client_backoff: exponential backoff with full jitter, fed deterministic
 * random values. */
#include "client_backoff.h"
#include "test.h"

TEST(defaults_and_clamps)
{
    client_backoff b;
    client_backoff_init(&b, 0, 0);
    CHECK_EQ_INT(b.base_ms, 1000);
    CHECK_EQ_INT(b.cap_ms, 60000);
    client_backoff_init(&b, 5000, 2000); /* cap below base: base */
    CHECK_EQ_INT(b.cap_ms, 5000);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 5000);
}

TEST(ceiling_doubles_then_caps)
{
    client_backoff b;
    client_backoff_init(&b, 1000, 60000);
    const uint64_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_EQ_INT(client_backoff_ceiling(&b), want[i]);
        client_backoff_next(&b, 0, 0);
    }
    /* many more failures: no overflow, still the cap */
    for (int i = 0; i < 200; i++) client_backoff_next(&b, test_rand(), 0);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 60000);
    CHECK(client_backoff_next(&b, UINT64_MAX, 0) <= 60000);
}

TEST(full_jitter_bounds)
{
    client_backoff b;
    client_backoff_init(&b, 1000, 60000);
    for (int attempt = 0; attempt < 12; attempt++) {
        uint64_t ceil = client_backoff_ceiling(&b);
        /* the extremes of the random value map to 0 and the ceiling */
        client_backoff t = b;
        CHECK_EQ_INT(client_backoff_next(&t, 0, 0), 0);
        t = b;
        CHECK_EQ_INT(client_backoff_next(&t, ceil, 0), ceil);
        t = b;
        CHECK(client_backoff_next(&t, UINT64_MAX, 0) <= ceil);
        /* any value lands in [0, ceil] */
        for (int k = 0; k < 1000; k++) {
            t = b;
            uint64_t d = client_backoff_next(&t, test_rand(), 0);
            CHECK(d <= ceil);
        }
        client_backoff_next(&b, 0, 0);
    }
}

TEST(full_jitter_spreads)
{
    /* Full jitter, not "equal jitter": the delays cover the whole range,
     * the low quarter included, and average about half the ceiling. */
    client_backoff b;
    client_backoff_init(&b, 1000, 60000);
    for (int i = 0; i < 6; i++) client_backoff_next(&b, 0, 0); /* ceiling 60000 */
    uint64_t sum = 0, lo = 0, hi = 0, n = 20000;
    for (uint64_t k = 0; k < n; k++) {
        client_backoff t = b;
        uint64_t d = client_backoff_next(&t, test_rand(), 0);
        sum += d;
        lo += d < 15000;
        hi += d > 45000;
    }
    uint64_t mean = sum / n;
    CHECK(mean > 27000 && mean < 33000);
    CHECK(lo > n / 5 && lo < n * 3 / 10);
    CHECK(hi > n / 5 && hi < n * 3 / 10);
}

TEST(retry_after_is_a_floor)
{
    client_backoff b;
    client_backoff_init(&b, 1000, 60000);
    /* a small jitter is raised to Retry-After */
    CHECK_EQ_INT(client_backoff_next(&b, 0, 7000), 7000);
    /* a jitter above Retry-After is kept (the spread survives) */
    client_backoff_init(&b, 1000, 60000);
    for (int i = 0; i < 4; i++) client_backoff_next(&b, 0, 0); /* ceiling 16000 */
    CHECK_EQ_INT(client_backoff_next(&b, 12000, 5000), 12000);
    /* Retry-After above the cap still wins: wait at least that long */
    CHECK_EQ_INT(client_backoff_next(&b, 3, 120000), 120000);
    /* and every delay is >= Retry-After whatever the random value */
    for (int k = 0; k < 1000; k++) CHECK(client_backoff_next(&b, test_rand(), 2500) >= 2500);
}

TEST(reset_starts_over)
{
    client_backoff b;
    client_backoff_init(&b, 500, 8000);
    for (int i = 0; i < 10; i++) client_backoff_next(&b, test_rand(), 0);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 8000);
    client_backoff_reset(&b);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 500);
    CHECK(client_backoff_next(&b, test_rand(), 0) <= 500);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 1000);
}

TEST(ceiling_doubles_once_per_round)
{
    /* Three servers in turn: each is tried at base before the ceiling
     * doubles; a round of 1 is the plain schedule. */
    client_backoff b;
    client_backoff_init(&b, 1000, 60000);
    CHECK_EQ_INT(b.round, 1);
    client_backoff_set_round(&b, 3);
    const uint64_t want[] = {1000, 1000, 1000, 2000, 2000, 2000, 4000, 4000, 4000, 8000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        CHECK_EQ_INT(client_backoff_ceiling(&b), want[i]);
        CHECK(client_backoff_next(&b, UINT64_MAX, 0) <= want[i]);
    }
    /* a long list still reaches the cap (attempts are not capped below it) */
    client_backoff_set_round(&b, 16);
    for (int i = 0; i < 16 * 8; i++) client_backoff_next(&b, 0, 0);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 60000);
    /* the floor still holds, and a reset starts the rounds over */
    CHECK_EQ_INT(client_backoff_next(&b, 0, 7000), 7000);
    client_backoff_reset(&b);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 1000);
    client_backoff_set_round(&b, 0); /* 0 means 1 */
    client_backoff_next(&b, 0, 0);
    CHECK_EQ_INT(client_backoff_ceiling(&b), 2000);
}

int main(void)
{
    test_seed();
    RUN(defaults_and_clamps);
    RUN(ceiling_doubles_then_caps);
    RUN(full_jitter_bounds);
    RUN(full_jitter_spreads);
    RUN(retry_after_is_a_floor);
    RUN(reset_starts_over);
    RUN(ceiling_doubles_once_per_round);
    return test_summary("client_backoff");
}
