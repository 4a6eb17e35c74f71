/* hist: fixed-bucket histograms with one writer. */
#include "base/hist.h"

#include "test.h"

TEST(buckets_are_upper_bounds)
{
    hist h = {{0}, 0};
    hist_observe(&h, &hist_sizes, 0);    /* <= 1 */
    hist_observe(&h, &hist_sizes, 1);    /* <= 1: bounds are inclusive */
    hist_observe(&h, &hist_sizes, 2);    /* <= 2 */
    hist_observe(&h, &hist_sizes, 3);    /* <= 4 */
    hist_observe(&h, &hist_sizes, 4096); /* the last bound */
    hist_observe(&h, &hist_sizes, 4097); /* above it: the +Inf bucket */
    hist_observe(&h, &hist_sizes, UINT64_MAX / 4);
    CHECK_EQ_INT(h.b[0], 2);
    CHECK_EQ_INT(h.b[1], 1);
    CHECK_EQ_INT(h.b[2], 1);
    CHECK_EQ_INT(h.b[hist_sizes.n - 1], 1);
    CHECK_EQ_INT(h.b[hist_sizes.n], 2);
    CHECK(h.sum == 0 + 1 + 2 + 3 + 4096 + 4097 + UINT64_MAX / 4);
}

TEST(specs_ascend_and_fit)
{
    const hist_spec *specs[] = {&hist_seconds, &hist_sizes};
    for (int k = 0; k < 2; k++) {
        const hist_spec *s = specs[k];
        CHECK(s->n > 4 && s->n <= HIST_MAX_BOUNDS);
        for (int i = 1; i < s->n; i++) CHECK(s->le[i] > s->le[i - 1]);
        CHECK(s->scale > 0);
    }
    CHECK(hist_seconds.le[0] == 50000);                        /* 50 us in ns */
    CHECK(hist_seconds.le[hist_seconds.n - 1] == 10000000000ull); /* 10 s */
}

TEST(durations)
{
    hist h = {{0}, 0};
    hist_observe(&h, &hist_seconds, 1);          /* 1 ns */
    hist_observe(&h, &hist_seconds, 1000000);    /* 1 ms, exactly a bound */
    hist_observe(&h, &hist_seconds, 1000001);    /* just above */
    hist_observe(&h, &hist_seconds, 60000000000ull); /* a minute */
    CHECK_EQ_INT(h.b[0], 1);
    int ms = 0;
    while (hist_seconds.le[ms] != 1000000) ms++;
    CHECK_EQ_INT(h.b[ms], 1);
    CHECK_EQ_INT(h.b[ms + 1], 1);
    CHECK_EQ_INT(h.b[hist_seconds.n], 1);
}

TEST(add_sums_blocks)
{
    hist a = {{0}, 0}, b = {{0}, 0}, acc = {{0}, 0};
    for (int i = 0; i < 10; i++) hist_observe(&a, &hist_sizes, 3);
    for (int i = 0; i < 5; i++) hist_observe(&b, &hist_sizes, 5000);
    hist_add(&acc, &a, &hist_sizes);
    hist_add(&acc, &b, &hist_sizes);
    CHECK_EQ_INT(acc.b[2], 10);
    CHECK_EQ_INT(acc.b[hist_sizes.n], 5);
    CHECK_EQ_INT(acc.sum, 30 + 25000);
    uint64_t total = 0;
    for (int i = 0; i <= hist_sizes.n; i++) total += acc.b[i];
    CHECK_EQ_INT(total, 15);
}

int main(void)
{
    RUN(buckets_are_upper_bounds);
    RUN(specs_ascend_and_fit);
    RUN(durations);
    RUN(add_sums_blocks);
    return test_summary("hist");
}
