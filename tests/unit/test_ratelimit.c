#include "base/ratelimit.h"
#include "test.h"

TEST(burst_then_refused_then_refills)
{
    tlimit l = {10, 5}; /* 10/s, burst 5 */
    tbucket b = {0, 1000};
    for (int i = 0; i < 5; i++) CHECK(tb_take(&b, &l, 1000, 1, NULL));
    uint32_t retry = 0;
    CHECK(!tb_take(&b, &l, 1000, 1, &retry));
    CHECK(retry >= 100 && retry <= 101);
    CHECK(!tb_take(&b, &l, 1050, 1, NULL)); /* half a token back */
    CHECK(tb_take(&b, &l, 1100, 1, NULL));  /* one token back */
    CHECK(!tb_take(&b, &l, 1100, 1, NULL));
    CHECK(tb_take(&b, &l, 5000, 5, NULL));  /* full again, never above burst */
    CHECK(!tb_take(&b, &l, 5000, 1, NULL));
}

TEST(unlimited_and_cost)
{
    tlimit off = {0, 0};
    tbucket b = {0, 0};
    for (int i = 0; i < 1000; i++) CHECK(tb_take(&b, &off, 0, 1, NULL));
    tlimit l = {1, 10};
    CHECK(tb_take(&b, &l, 0, 10, NULL));
    uint32_t retry = 0;
    CHECK(!tb_take(&b, &l, 0, 2, &retry));
    CHECK(retry >= 2000 && retry <= 2001);
}

TEST(clock_wrap)
{
    tlimit l = {1000, 1};
    tbucket b = {0, 0xFFFFFFF0u};
    CHECK(tb_take(&b, &l, 0xFFFFFFF0ull, 1, NULL));
    CHECK(!tb_take(&b, &l, 0xFFFFFFF0ull, 1, NULL));
    CHECK(tb_take(&b, &l, 0x100000000ull + 5, 1, NULL)); /* 21 ms later, across the wrap */
}

int main(void)
{
    RUN(burst_then_refused_then_refills);
    RUN(unlimited_and_cost);
    RUN(clock_wrap);
    return test_summary("ratelimit");
}
