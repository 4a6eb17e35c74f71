/* seq: the sequencer's memory of conversations, at the level of the chat
 * domain: append a message -> its seq and ts, or "duplicate" with the
 * original seq; move a member's cursors; a user's last_seen. Each call
 * checks the request against the state in memory (member, cmid, cursor
 * bounds), advances that state and appends the resulting log entry
 * (logrec.h) to the batch being built; nothing touches the disk except
 * loading a conversation on first use and looking up an old cmid (read
 * transactions). The writer (writer.h) logs the batch and later applies
 * it to the store.
 *
 * What is kept per conversation: type, last_seq, last_ts, and its members
 * (uid, role, cursors, invitation) sorted by uid, with the member list as a
 * shared audience (base/audience.h) versioned by `members_version`
 * (changes whenever the member set may have changed: a fresh load). Per
 * message: the cmids of messages not yet applied to the store (older ones
 * are found in the store).
 *
 * Threads: one thread (the writer's sequencer) calls everything here,
 * except nothing. Memory: results are copies; an audience result is one
 * reference the caller drops.
 */
#ifndef PARLEY_SEQ_H
#define PARLEY_SEQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/audience.h"
#include "store/logrec.h"
#include "store/store.h"

/* A request the sequencer cannot decide alone (it would accept an
 * invitation, which counts against the user's conversation cap): take the
 * slow path (an ordinary store transaction, writer.h). */
#define SEQ_SLOW 1

typedef struct sequencer sequencer;

typedef struct seq_result {
    uint64_t seq;             /* send: the message's seq (the original one if duplicate) */
    int64_t ts;               /* send: its ts */
    bool duplicate;           /* send: this cmid was stored before (same body) */
    bool changed;             /* cursor: moved forward */
    uint64_t delivered, read; /* cursor: the member's cursors after the move */
    audience *aud;            /* send, cursor (changed): the members, one ref */
    uint64_t members_version; /* of aud */
} seq_result;

int seq_new(sequencer **out, store *s);
void seq_free(sequencer *q);

/* The store clock as the sequencer hands it out (versions of changes). */
void seq_set_clock(sequencer *q, uint64_t clock);
uint64_t seq_clock(const sequencer *q);

/* Batch numbers: every entry appended is tagged with the batch number
 * given; seq_applied(q, b) says batches <= b are in the store. */
void seq_applied(sequencer *q, uint64_t batch);

/* A message from uid in conv at time now. ERR_OK (*r: seq, ts,
 * duplicate, aud), ERR_FORBIDDEN (not a member, no such conversation),
 * ERR_CMID_REUSED (the cmid was used with another body), SEQ_SLOW,
 * ERR_NOMEM / ERR_IO. Nothing is appended for a duplicate. */
int seq_send(sequencer *q, uint64_t batch, uint64_t conv, uint64_t uid, const char *cmid,
             size_t cmid_len, const char *body, size_t body_len, int64_t now, logrec_buf *out,
             seq_result *r);

/* Moves uid's cursors in conv forward (delivered is raised to read).
 * ERR_OK (*r: changed, the cursors, aud if changed), ERR_FORBIDDEN,
 * ERR_INVALID (beyond last_seq), SEQ_SLOW (accept is set and the member is
 * invited), ERR_NOMEM / ERR_IO. */
int seq_cursor(sequencer *q, uint64_t batch, uint64_t conv, uint64_t uid, uint64_t delivered,
               uint64_t read, bool accept, logrec_buf *out, seq_result *r);

/* uid was last seen at ts (appended as is; the store keeps the latest). */
int seq_seen(sequencer *q, uint64_t batch, uint64_t uid, int64_t ts, logrec_buf *out);

/* While rc is set (not ERR_OK), a send or cursor move that would append
 * is refused with rc after its checks (a duplicate still gets its seq, a
 * non-member still ERR_FORBIDDEN), and last_seen is dropped: the store
 * cannot take more. */
void seq_refuse(sequencer *q, int rc);

/* Drops what is kept of conv (a store transaction changed it). */
void seq_forget(sequencer *q, uint64_t conv);
/* Drops everything (after a failed log append the state in memory may be
 * ahead of the log). Call only once every batch logged is applied. */
void seq_reset(sequencer *q);

/* Conversations and cmids held now (for metrics and tests). */
void seq_counts(const sequencer *q, size_t *convs, size_t *cmids);

#endif
