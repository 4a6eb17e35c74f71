/* wheel: a hashed timing wheel, O(1) to schedule, cancel and expire.
 *
 * One wheel per I/O thread drives every per-connection deadline (handshake,
 * keepalive, close wait) from a single libuv timer, so a connection pays an
 * intrusive node (24 bytes) instead of a uv_timer_t (152 bytes) and the loop
 * pays one timer instead of one per connection. Resolution is one tick.
 *
 * Nodes are owned by the caller (embedded in their objects); the wheel only
 * links them. Not thread-safe: a wheel belongs to one loop thread.
 */
#ifndef PARLEY_WHEEL_H
#define PARLEY_WHEEL_H

#include <stdbool.h>
#include <stdint.h>

#define WHEEL_SLOTS 1024  /* power of two */

typedef struct wheel_node {
    struct wheel_node *prev, *next; /* NULL prev: not scheduled */
    uint64_t due;                   /* tick at which it expires */
} wheel_node;

typedef struct wheel {
    uint64_t now;           /* current tick */
    uint32_t tick_ms;       /* milliseconds per tick */
    uint64_t count;         /* scheduled nodes */
    wheel_node slots[WHEEL_SLOTS]; /* list heads (sentinels) */
} wheel;

/* Initialises an empty wheel at tick 0 with the given resolution. */
void wheel_init(wheel *w, uint32_t tick_ms);

/* Schedules n to expire `delay_ms` from now (rounded up to whole ticks, at
 * least one). Reschedules it if it was already scheduled. */
void wheel_schedule(wheel *w, wheel_node *n, uint64_t delay_ms);

/* Unschedules n; a no-op if it is not scheduled. */
void wheel_cancel(wheel *w, wheel_node *n);

static inline bool wheel_scheduled(const wheel_node *n) { return n->prev != 0; }

/* Advances one tick and calls expire(n, arg) for every node due by then,
 * each unscheduled before its call (the callback may schedule it again or
 * free it). Returns the number expired. */
unsigned wheel_tick(wheel *w, void (*expire)(wheel_node *n, void *arg), void *arg);

#endif
