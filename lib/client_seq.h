/* client_seq: libparley's per-conversation order keeper: gap detection,
 * dedupe by seq, and the delivered/read cursors. Pure: no I/O, memory from
 * the caller's allocator.
 *
 * The tracker holds `highest`, the highest seq handed to the app in order.
 * client_seq_offer() classifies an arriving seq:
 *   seq <= highest         DUP      (already delivered: drop it)
 *   seq == highest + 1     DELIVER  (highest advances)
 *   seq >  highest + 1     HELD     a gap: the item is kept (sorted, bounded)
 *                                   and the caller syncs after `highest`;
 *                          DROPPED  the same but the hold is full: the caller
 *                                   frees it, the sync brings it back
 * After each DELIVER (and after a sync answer) client_seq_pop() hands out the
 * held items that have become contiguous, in order.
 *
 * An untracked conversation starts at the first seq offered (or at the
 * value given to client_seq_start()).
 */
#ifndef PARLEY_CLIENT_SEQ_H
#define PARLEY_CLIENT_SEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "parley.h"

enum client_seq_verdict {
    CLIENT_SEQ_DELIVER = 0,
    CLIENT_SEQ_DUP = 1,
    CLIENT_SEQ_HELD = 2,
    CLIENT_SEQ_DROPPED = 3,
};

typedef struct client_seq_held {
    uint64_t seq;
    void *item;        /* the caller's; handed back by pop / clear */
} client_seq_held;

typedef struct client_seq {
    uint64_t highest;  /* highest seq delivered in order */
    bool known;        /* tracking started */
    bool syncing;      /* a sync is outstanding (set by the caller) */
    bool lost;         /* something was DROPPED since the last complete sync */
    client_seq_held *held; /* ascending seq, no duplicates */
    size_t nheld, cap, max_held;
} client_seq;

/* max_held 0 means 1024. */
void client_seq_init(client_seq *s, size_t max_held);
/* Starts tracking at `highest` (moves forward only once known). */
void client_seq_start(client_seq *s, uint64_t highest);

/* Classifies seq (see above). For HELD the tracker keeps item; for the other
 * verdicts the caller keeps it. ERR_NOMEM when holding fails (the caller
 * frees item and syncs, as for DROPPED). */
int client_seq_offer(client_seq *s, const parley_allocator *a, uint64_t seq, void *item);

/* The next held item that is now contiguous (its seq is highest + 1;
 * highest advances and *seq gets it), or NULL. */
void *client_seq_pop(client_seq *s, uint64_t *seq);
/* A held item at or below highest (it became stale when client_seq_start
 * moved highest past it), or NULL: call until NULL and free them. */
void *client_seq_pop_stale(client_seq *s);

/* True if a sync should be sent now: something is held or was dropped, and
 * no sync is outstanding. */
bool client_seq_want_sync(const client_seq *s);

/* A sync answer was processed: more = the server's "more" flag, before = the
 * highest before the answer. Returns true if another sync is needed (more
 * pages, or a gap remains and the answer made progress). When the answer
 * made no progress and a gap remains (the server does not have those seqs),
 * the gap is skipped: highest jumps to just below the first held seq, so
 * pop() hands out the rest. */
bool client_seq_sync_done(client_seq *s, bool more, uint64_t before);

/* Hands every held item to fn and empties the hold (free/forget). */
void client_seq_clear(client_seq *s, const parley_allocator *a,
                      void (*fn)(void *arg, void *item), void *arg);

/* ---- cursors ------------------------------------------------------------ */

/* A cursor we move (delivered or read): want = the highest asked for, sent =
 * the highest written to the server. Forward only. */
typedef struct client_cursor {
    uint64_t want, sent;
} client_cursor;

/* Moves want forward; true if it moved. */
bool client_cursor_move(client_cursor *c, uint64_t seq);
/* True if want has not been sent yet. */
static inline bool client_cursor_due(const client_cursor *c) { return c->want > c->sent; }
static inline void client_cursor_sent(client_cursor *c) { c->sent = c->want; }
/* After a reconnect: send the cursor again once (the server ignores lower
 * values, so this is idempotent). */
static inline void client_cursor_reconnected(client_cursor *c) { c->sent = 0; }

#endif
