/* guard: parley's shared protection state (rate limits that span threads).
 *
 *   per source address   WebSocket handshakes, and logins/registrations
 *   per account and      growing delays after failed logins, so a stranger
 *   source / device      guessing from one address delays only himself
 *   per account          a much higher ceiling on failed logins over all
 *                        addresses (a spread-out guesser), which never
 *                        holds back the account's known devices
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
/* Failed logins: who is delayed by whose failures.
 *
 * A login attempt is one "line": (account, source address), or, when the
 * attempt presents a valid known-device key (auth_device_key_check),
 * (account, device) whatever the address. Per line: failures grow a delay
 * (1 s, 2 s, 4 s ... 60 s from the third in a row on), at most 3 checks run
 * at once, and only one after failures (failures plus checks running reach
 * 3), so parallel guesses cannot slip past the delay; a success clears the
 * line. Lines of unknown devices also share the account's ceiling: a
 * bucket of GUARD_ACCOUNT_BURST failures, refilled at GUARD_ACCOUNT_PER_MIN
 * a minute, that every check in flight holds a token of (a success gives it
 * back), against guessers spread over many addresses. A known device's line
 * is not held back by the ceiling nor by any other line: a stranger cannot
 * keep the owner's devices out. */
#define GUARD_ACCOUNT_BURST 100
#define GUARD_ACCOUNT_PER_MIN 12

typedef struct guard_login {
    uint64_t uid;       /* the account */
    uint64_t addr;      /* conn_addr_key of the source */
    uint32_t device;    /* the device of a valid known-device key, or 0 */
} guard_login;

/* The line's key: a hash of (account, address) or (account, device), the
 * same on every node (the cluster's own delays, bus.h, use it). */
uint64_t guard_line_key(const guard_login *l);
/* Before checking a password: ERR_OK (the attempt is then in flight until
 * guard_login_end() with the same *l), or ERR_RATE with *retry_ms. */
int guard_login_begin(guard *g, const guard_login *l, uint64_t now, uint32_t *retry_ms);
/* After checking it: ok clears the line, a failure grows its delay. */
void guard_login_end(guard *g, const guard_login *l, bool ok, uint64_t now);
/* The check never ran (the server could not start it): the attempt is no
 * longer in flight, nothing is counted, and the ceiling gets its token back. */
void guard_login_cancel(guard *g, const guard_login *l);
int guard_user_msg(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms);
/* A group created or a member added by uid: ERR_OK or ERR_RATE. */
int guard_user_group(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms);

#endif
