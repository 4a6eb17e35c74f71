/* client_outbox: libparley's resend queue. Pure: times are passed in, no
 * I/O; memory comes from the caller's allocator.
 *
 * Every message waits here from parley_send() until its ack. The queue is
 * FIFO and messages are written in that order:
 *
 *   client_outbox_next(now)     the first message that should be written now
 *                               (never written on this connection, or written
 *                               longer than ack_timeout ago), or NULL;
 *   client_outbox_mark_sent()   the caller wrote it;
 *   client_outbox_ack()         removes it (a second ack of the same cmid, as
 *                               for a resend answered "duplicate", finds
 *                               nothing: ERR_NOT_FOUND, nothing happens);
 *   client_outbox_disconnected()  the connection is gone: every message is
 *                               written again, in order, with the same cmid.
 *
 * A message deferred by the server (busy, rate limited) holds back the
 * messages behind it until its time, so the order is kept; a pause holds
 * back everything.
 */
#ifndef PARLEY_CLIENT_OUTBOX_H
#define PARLEY_CLIENT_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "parley.h"

typedef struct client_outmsg {
    uint64_t conv;
    char cmid[PARLEY_CMID_MAX];
    char *body;           /* raw JSON value, owned by the outbox */
    size_t body_len;
    uint64_t sent_at;     /* ms of the last write */
    uint64_t not_before;  /* ms: not before (busy / rate limited), 0 = now */
    uint64_t resend_at;   /* in flight but suspected lost: resend then (0 none) */
    uint32_t attempts;    /* writes so far */
    bool inflight;        /* written on the current connection */
} client_outmsg;

typedef struct client_outbox {
    const parley_allocator *a;  /* not owned */
    client_outmsg *v;           /* FIFO, v[0] oldest */
    size_t n, cap;
    size_t max;                 /* ERR_FULL above; 0: unlimited */
    uint64_t paused_until;      /* nothing is written before (ms) */
} client_outbox;

void client_outbox_init(client_outbox *ob, const parley_allocator *a, size_t max);
void client_outbox_free(client_outbox *ob);

/* Appends a message; body[0..len) is copied. ERR_INVALID (empty or too long
 * cmid), ERR_CONFLICT (cmid already queued), ERR_FULL, ERR_NOMEM. */
int client_outbox_add(client_outbox *ob, uint64_t conv, const char *cmid,
                      const char *body, size_t len);

/* The queued message with this cmid (conv 0 matches any), or NULL. The
 * pointer is valid until the next add/remove. */
client_outmsg *client_outbox_find(client_outbox *ob, uint64_t conv, const char *cmid);

/* Removes the acked message: ERR_OK, or ERR_NOT_FOUND (unknown or already
 * acked: a duplicate ack). */
int client_outbox_ack(client_outbox *ob, uint64_t conv, const char *cmid);
/* Removes a message the server refused for good. Same returns. */
int client_outbox_remove(client_outbox *ob, const char *cmid);

/* The first message to write now (see above), with at most max_inflight
 * messages in flight (0: unlimited); NULL if none. */
client_outmsg *client_outbox_next(client_outbox *ob, uint64_t now, uint64_t ack_timeout,
                                  size_t max_inflight);
void client_outbox_mark_sent(client_outbox *ob, client_outmsg *m, uint64_t now);

/* The server deferred it (busy): not before `until`, resent then. */
int client_outbox_defer(client_outbox *ob, const char *cmid, uint64_t until);

/* The server refused something without saying which message (a frame
 * rate limit): write nothing before `until`, and then resend the messages
 * that were in flight when the refusal arrived (sent at or before
 * `sent_before`) unless their acks came meanwhile. Resends carry the same
 * cmid, so a message the server did store is only acked again. */
void client_outbox_pause(client_outbox *ob, uint64_t until);
void client_outbox_suspect(client_outbox *ob, uint64_t sent_before, uint64_t resend_at);

/* The connection is gone: nothing is in flight any more. */
void client_outbox_disconnected(client_outbox *ob);

/* When client_outbox_next(t, ack_timeout, max_inflight) first returns a
 * message if nothing else happens (no ack, no add, no refusal): the earliest
 * t at which an unsent message may go (its deferral and the pause are over,
 * the window has room) or an in-flight one is resent (ack timeout, or the
 * resend time of a suspect). It may be at or before the caller's now: then
 * something is due now (for instance a pause that ended after the caller's
 * last next()), and next() at any later time returns it, so waking then
 * never spins. UINT64_MAX: only an ack (room in the window) or new work can
 * make a message due. */
uint64_t client_outbox_deadline(const client_outbox *ob, uint64_t ack_timeout, size_t max_inflight);

static inline size_t client_outbox_count(const client_outbox *ob) { return ob->n; }

#endif
