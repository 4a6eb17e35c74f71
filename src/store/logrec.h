/* logrec: the entries of the message log (wal.h), a pure codec.
 *
 * One log record (a wal record) holds the entries of one batch, back to
 * back. Each entry is a kind byte and fixed little-endian fields:
 *   LOGREC_MSG     conv u64, seq u64, from u64, ts i64, version u64,
 *                  cmid_len u8, body_len u32, cmid, body
 *   LOGREC_CURSOR  conv u64, uid u64, delivered u64, read u64, version u64
 *   LOGREC_SEEN    uid u64, ts i64
 *   LOGREC_NOP     nothing (a record that changes nothing: the log's first
 *                  good append after a failed one, writer.c)
 * A message entry is the message as stored (store.h store_msg) plus the
 * store-clock version its conversation and the sender's membership take;
 * a cursor entry is a member's cursors after the move (they only grow);
 * a seen entry a user's last_seen.
 *
 * Memory: logrec_buf owns its bytes; a decoded entry points into the
 * buffer it was decoded from.
 */
#ifndef PARLEY_LOGREC_H
#define PARLEY_LOGREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

enum logrec_kind { LOGREC_MSG = 1, LOGREC_CURSOR = 2, LOGREC_SEEN = 3, LOGREC_NOP = 4 };

typedef struct logrec {
    uint8_t kind;                 /* enum logrec_kind */
    uint64_t conv, uid;           /* uid: the sender (MSG), the member, the user */
    uint64_t seq;                 /* MSG */
    uint64_t delivered, read;     /* CURSOR */
    int64_t ts;                   /* MSG, SEEN */
    uint64_t version;             /* MSG, CURSOR */
    const char *cmid;             /* MSG (not NUL-terminated) */
    size_t cmid_len;              /* <= 255 */
    const char *body;             /* MSG */
    size_t body_len;
} logrec;

typedef struct logrec_buf {
    uint8_t *p;
    size_t len, cap;
    int err;                      /* ERR_NOMEM once an append failed */
} logrec_buf;

/* Appends one entry (its kind decides the fields used). ERR_OK, or
 * ERR_NOMEM / ERR_TOO_LARGE (a cmid over 255 bytes, a body over 4 GiB);
 * the buffer then keeps its previous entries. */
int logrec_put(logrec_buf *b, const logrec *r);
void logrec_buf_free(logrec_buf *b);

/* Decodes the entry at *off in p[0..len): ERR_OK and *r (pointing into
 * p) with *off advanced, ERR_NOT_FOUND at the end, ERR_INVALID for a
 * truncated or unknown entry. */
int logrec_next(const uint8_t *p, size_t len, size_t *off, logrec *r);

#endif
