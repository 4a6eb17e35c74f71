/* A tiny unit-test harness: one binary per module.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_EQ_INT(a, b); }
 *   int main(void) { RUN(name); return test_summary("http"); }
 *
 * A test passes when none of its checks fail. test_summary() prints
 * "<module>: N passed, N failed" and returns the process exit status.
 * TEST_SEED (environment) fixes the random splits; the seed is printed.
 */
#ifndef PARLEY_TEST_H
#define PARLEY_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>

static int test_passed_, test_failed_, test_cur_failed_;
static const char *test_cur_name_;

#define TEST(name) static void name(void)

#define CHECK(cond) do { \
    if (!(cond)) { \
        test_cur_failed_++; \
        fprintf(stderr, "  FAIL %s:%d in %s: %s\n", __FILE__, __LINE__, \
                test_cur_name_, #cond); \
    } } while (0)

#define CHECK_EQ_INT(a, b) do { \
    long long a_ = (long long)(a), b_ = (long long)(b); \
    if (a_ != b_) { \
        test_cur_failed_++; \
        fprintf(stderr, "  FAIL %s:%d in %s: %s == %s (%lld != %lld)\n", \
                __FILE__, __LINE__, test_cur_name_, #a, #b, a_, b_); \
    } } while (0)

#define CHECK_MEM(p, q, n) CHECK(memcmp((p), (q), (n)) == 0)

#define RUN(name) do { \
    test_cur_name_ = #name; test_cur_failed_ = 0; \
    name(); \
    if (test_cur_failed_) { test_failed_++; fprintf(stderr, "FAIL %s\n", #name); } \
    else test_passed_++; \
    } while (0)

/* Deterministic PRNG for random splits (xorshift64*). */
static uint64_t test_rng_state_ = 0x9e3779b97f4a7c15ull;
static inline void test_seed(void)
{
    const char *s = getenv("TEST_SEED");
    if (s) test_rng_state_ = strtoull(s, NULL, 0) | 1;
}
static inline uint64_t test_rand(void)
{
    uint64_t x = test_rng_state_;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    test_rng_state_ = x;
    return x * 0x2545f4914f6cdd1dull;
}

static inline int test_summary(const char *module)
{
    printf("%s: %d passed, %d failed\n", module, test_passed_, test_failed_);
    return test_failed_ ? 1 : 0;
}

#endif
