/* ratelimit: token buckets, pure and small (8 bytes each).
 *
 * A bucket holds up to `burst` tokens and refills at `rate` tokens per
 * second; each action takes `cost` tokens or is refused with the time until
 * it would pass. Time is the caller's (milliseconds, monotonic), so the
 * module has no clock and no globals. A zeroed bucket is full.
 */
#ifndef PARLEY_RATELIMIT_H
#define PARLEY_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

typedef struct tbucket {
    float used;     /* tokens taken, not yet refilled (0 = full) */
    uint32_t at;    /* ms (truncated) when `used` was last brought up to date */
} tbucket;

typedef struct tlimit {
    float rate;     /* tokens per second; 0 = unlimited */
    float burst;    /* bucket size */
} tlimit;

/* Takes `cost` tokens at time now_ms. Returns true if allowed; if refused
 * and retry_ms is not NULL, *retry_ms is the wait until it would pass. */
bool tb_take(tbucket *b, const tlimit *l, uint64_t now_ms, float cost, uint32_t *retry_ms);

#endif
