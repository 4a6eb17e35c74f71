/* client_backoff: reconnect delays for libparley, exponential backoff with
 * full jitter. Pure: no clock, no randomness of its own (the caller passes a
 * random 64-bit value per delay), no allocation.
 *
 *   ceiling(n) = min(cap, base * 2^(n / round))   n = failed attempts so far
 *   delay      = uniform in [0, ceiling(n)]       ("full jitter")
 *   delay      = max(delay, retry_after)          a 503/429 Retry-After is a floor
 *
 * round is the number of servers the client goes through in turn (1 for
 * one server): the ceiling doubles once per full round of the list, so each
 * server is tried at every ceiling before it grows.
 *
 * The server already spreads its Retry-After values, so the floor keeps that
 * spread instead of synchronising clients on it. reset() after a connection
 * that held long enough, so the next loss starts again at base.
 */
#ifndef PARLEY_CLIENT_BACKOFF_H
#define PARLEY_CLIENT_BACKOFF_H

#include <stdint.h>

typedef struct client_backoff {
    uint32_t base_ms;   /* > 0 */
    uint32_t cap_ms;    /* >= base_ms */
    uint32_t attempt;   /* failures since the last reset */
    uint32_t round;     /* failures per doubling of the ceiling: >= 1 */
} client_backoff;

/* base 0 becomes 1000, cap 0 becomes 60000, cap < base becomes base;
 * round 1. */
void client_backoff_init(client_backoff *b, uint32_t base_ms, uint32_t cap_ms);

/* Failures per doubling of the ceiling (the servers in the list); 0 is 1. */
void client_backoff_set_round(client_backoff *b, uint32_t round);

/* min(cap, base * 2^(attempt / round)), without overflow. */
uint64_t client_backoff_ceiling(const client_backoff *b);

/* The next delay in ms for random value rnd (uniform 64 bits), at least
 * retry_after_ms; advances attempt. */
uint64_t client_backoff_next(client_backoff *b, uint64_t rnd, uint64_t retry_after_ms);

void client_backoff_reset(client_backoff *b);

#endif
