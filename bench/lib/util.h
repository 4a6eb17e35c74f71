/* util: the load generator's small helpers: a monotonic clock, a seeded
 * random generator, and allocation that ends the program when memory runs
 * out (a load generator without memory has no figure to give).
 *
 * No globals: every rng belongs to its caller (one per process or worker).
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL

/* CLOCK_MONOTONIC in ns. Send times travel in messages in this clock, so
 * every process on the machine can measure any delivery. */
int64_t now_ns(void);

/* Prints "parley-bench: <message>" to stderr and exits with status 1. */
__attribute__((format(printf, 1, 2), noreturn)) void die(const char *fmt, ...);

/* calloc/realloc that never return NULL (die instead). The caller owns and
 * frees the result. */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* xorshift64*: fast, not cryptographic. */
typedef struct rng {
    uint64_t s; /* never 0 */
} rng;

/* Seeds from the clock, the pid and `salt`. */
void rng_seed(rng *r, uint64_t salt);
uint64_t rng_next(rng *r);

/* Sleeps for ms milliseconds (bounded: at most a day). */
void sleep_ms(int64_t ms);

#endif
