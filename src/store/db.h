/* db: parley's storage at the level of the chat domain, a backend chosen
 * at startup (a table of functions, as SQLite's sqlite3_vfs is).
 *
 * Writes are operations (db_op) submitted whole and completed
 * asynchronously, in submission order, once durable: register, log in and
 * out, open a direct conversation, create a group, add and remove members,
 * leave groups, send a message (-> its seq and ts, or "duplicate" with the
 * original seq), move a member's cursors, record last_seen. A backend
 * decides each op atomically with its checks (membership, caps, cmids), so
 * several writers may submit at once; it batches them (one durable write
 * for many ops). The embedded backend, "lmdb" (db_lmdb.c), sequences sends
 * and cursors in memory and acks them at its log's fdatasync (writer.h),
 * and runs the other ops as LMDB transactions.
 *
 * Read-your-writes: db_settle(d, conv) returns once everything acked of
 * conv (0: of anything) is visible to reads.
 *
 * Reads still go to the LMDB store directly (db_lmdb_store()): moving
 * them behind this table (results as copies) is the next step of this
 * interface, and what a PostgreSQL backend needs.
 *
 * Ownership: a db_op is the caller's (usually embedded in its own struct,
 * see chat.h); the backend links it until its completion, wop.done(), which
 * runs on the backend's completion thread and must not block. What the op
 * points to (body, uids, rcs, aud) is the op's; aud is one reference the
 * backend hands over.
 */
#ifndef PARLEY_DB_H
#define PARLEY_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/audience.h"
#include "store/store.h"
#include "store/writer.h"

enum db_op_kind {
    OP_REGISTER, OP_LOGIN, OP_LOGOUT, OP_DIRECT, OP_GROUP, OP_ADD, OP_REMOVE,
    OP_SEND, OP_CURSOR, OP_LAST_SEEN, OP_LEAVE,
};

#define DB_LEAVE_MAX 500                 /* conversations one OP_LEAVE leaves */

/* Who acts. */
typedef struct db_ident {
    uint64_t uid;
    uint32_t device;
    uint8_t token_hash[32];              /* of the token the request came with */
    int64_t expires;
    char name[STORE_NAME_MAX + 1];
} db_ident;

struct db;

/* The fields of an operation, as a list, so that a caller's struct can
 * hold them by name in a union with db_op (chat.h's chat_op). */
#define DB_OP_FIELDS                                                                  \
    writer_op wop;                    /* first: the backend's link; wop.done is the  \
                                         caller's completion */                       \
    struct db *db;                    /* set by db_submit() */                        \
    uint8_t kind;                     /* enum db_op_kind */                           \
    int rc;                           /* the result */                                \
    db_ident who;                     /* the acting user */                           \
    /* parameters */                                                                  \
    uint64_t conv;                                                                    \
    uint64_t target;                  /* OP_ADD/OP_REMOVE/OP_DIRECT: uid */           \
    uint64_t delivered, read;         /* OP_CURSOR */                                 \
    int64_t ts;                       /* OP_LAST_SEEN, and results */                 \
    char name[STORE_NAME_MAX + 1];    /* OP_REGISTER username, OP_GROUP name */       \
    char pwhash[STORE_HASH_MAX + 1];  /* OP_REGISTER */                               \
    char token[48];                   /* OP_REGISTER/OP_LOGIN: the new token (the    \
                                         caller's, with new_token_hash and expires) */ \
    uint8_t new_token_hash[32];                                                       \
    char cmid[STORE_CMID_MAX + 1];    /* OP_SEND */                                   \
    size_t cmid_len;                                                                  \
    char *body;                       /* OP_SEND: JSON text (owned) */                \
    size_t body_len;                                                                  \
    uint64_t *uids;                   /* OP_GROUP members to add, OP_LEAVE conversation \
                                         ids, no id twice (owned) */                  \
    size_t nuids;                                                                     \
    int *rcs;                         /* OP_LEAVE: nuids results, ERR_OK (left),     \
                                         ERR_FORBIDDEN (not a member) or ERR_INVALID  \
                                         (a direct conversation) (owned) */           \
    audience *aud;                    /* the members after the op (owned ref) */      \
    uint64_t members_version;         /* of aud, when the backend versions it (0: no) */ \
    /* results */                                                                     \
    uint64_t seq;                     /* OP_SEND */                                   \
    bool duplicate;                   /* OP_SEND, OP_DIRECT (existing) */             \
    bool changed;                     /* OP_CURSOR: moved forward, not superseded */  \
    bool accept;                      /* OP_CURSOR: a read, which accepts an invitation */ \
    int64_t expires;                  /* OP_REGISTER/OP_LOGIN: the new token's expiry */

typedef struct db_op {
    DB_OP_FIELDS
} db_op;

typedef struct db db;

/* What a backend is opened with. Limits are the domain's rules. */
typedef struct db_options {
    const char *data_dir;
    size_t map_size;                  /* lmdb: the map's size limit */
    uint64_t log_segment_bytes;       /* lmdb: the log's segments */
    uint32_t apply_delay_ms;          /* lmdb: the applier's gathering */
    uint32_t commit_window_us;
    size_t max_queue;                 /* ops waiting before ERR_BUSY */
    uint32_t max_user_convs;          /* memberships per user (and invitations) */
    uint32_t max_group_members;
    /* After each batch's completions, on the completion thread. */
    void (*batch_end)(void *ctx);
    void *ctx;
} db_options;

typedef struct db_vfs {
    const char *name;
    /* ERR_OK, ERR_VERSION (data of another version), ERR_BUSY (the data is
     * another server's), ERR_CORRUPT, ERR_IO (errno tells). */
    int (*open)(db **out, const db_options *o);
    /* Completes what is queued, then closes. */
    void (*close)(db *d);
    /* Queues op (kind and parameters set, wop.done the completion).
     * ERR_OK, or ERR_BUSY / ERR_CLOSED (then the op is still the caller's
     * and its completion will not run). */
    int (*submit)(db *d, db_op *op);
    void (*settle)(db *d, uint64_t conv);
    void (*stats)(db *d, writer_stats *st);
} db_vfs;

struct db {
    const db_vfs *vfs;
};

extern const db_vfs db_lmdb;

/* The backend of that name, or NULL. */
const db_vfs *db_find(const char *name);

static inline int db_submit(db *d, db_op *op)
{
    op->db = d;
    return d->vfs->submit(d, op);
}
static inline void db_settle(db *d, uint64_t conv) { d->vfs->settle(d, conv); }
static inline void db_close(db *d) { d->vfs->close(d); }

/* The lmdb backend's store, for the reads that do not go through this
 * table yet (NULL for another backend). */
store *db_lmdb_store(db *d);
/* A conversation's members as an audience (one ref), or NULL. */
audience *db_lmdb_members(store_txn *txn, uint64_t conv);

#endif
