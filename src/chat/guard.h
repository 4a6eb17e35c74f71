/* guard: parley's shared protection state (rate limits that span threads).
 *
 *   per source address   WebSocket handshakes, and logins/registrations
 *   per account          growing delays after failed logins
 *   per user             messages across all of the user's devices; groups
 *                        created and members added (--rate-groups, a minute)
 *
 * Per-connection limits live in the session (ratelimit.h buckets, no lock).
 * Each table here is a hash map under its own mutex, touched only on a
 * handshake, a login or a send; a table that passes GUARD_MAX_ENTRIES is
 * emptied (every bucket starts full again), so memory stays bounded under
 * an address-spraying attack. All calls are thread-safe. Times are
 * milliseconds of a monotonic clock (guard_now()).
 */
#ifndef PARLEY_GUARD_H
#define PARLEY_GUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/config.h"
#include "base/ratelimit.h"

#define GUARD_MAX_ENTRIES 200000

typedef struct guard guard;

int guard_new(guard **out, const config *cfg);
void guard_free(guard *g);

uint64_t guard_now(void);


/* ERR_OK, or ERR_RATE with *retry_ms set. */
int guard_handshake(guard *g, uint64_t addr, uint64_t now, uint32_t *retry_ms);
int guard_login_addr(guard *g, uint64_t addr, uint64_t now, uint32_t *retry_ms);
/* Before checking a password: ERR_RATE while the account is in a delay,
 * while 3 checks of it are already running, or, after failures, while one
 * is (failures plus checks running reach 3): parallel guesses cannot slip
 * past the delay. On ERR_OK the attempt is in flight until
 * guard_login_end(). */
int guard_login_begin(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms);
/* After checking it: failures grow the delay (1 s, 2 s, 4 s ... 60 s after
 * the third in a row); a success clears it. */
void guard_login_end(guard *g, uint64_t uid, bool ok, uint64_t now);
int guard_user_msg(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms);
/* A group created or a member added by uid: ERR_OK or ERR_RATE. */
int guard_user_group(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms);

#endif
