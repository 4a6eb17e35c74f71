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
 * and runs the other ops as LMDB transactions. The cluster backend,
 * "postgresql" (db_pg.c), runs each batch as one transaction that several
 * nodes may write at once (docs/cluster.md).
 *
 * Reads are calls that block the calling thread (run them on a read pool,
 * never on an I/O loop) and answer copies the caller owns: a db_conv and a
 * db_page are one allocation each (free()), a db_inbox is freed with
 * db_inbox_free(), an audience with audience_unref(); nothing points into
 * the backend's memory. Each read sees one consistent state of the store.
 *
 * Read-your-writes: db_settle(d, conv) returns once everything acked of
 * conv (0: of anything) is visible to reads; a read that must see an
 * acked write calls it first.
 *
 * Ownership: a db_op is the caller's (usually embedded in its own struct,
 * see chat.h); the backend links it until its completion, wop.done(), which
 * runs on the backend's completion thread and must not block nor read the
 * store: what the completion needs (the members, the conversation after a
 * membership change) comes with the op. What the op points to (body, uids,
 * rcs, aud, after, left) is the op's: aud is one reference the backend
 * hands over; after and left[i] are copies (free()).
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

/* ---- what reads answer (copies) ---- */

#define DB_NAME_MAX STORE_NAME_MAX
#define DB_CMID_MAX STORE_CMID_MAX
#define DB_HASH_MAX STORE_HASH_MAX

enum db_conv_type { DB_DIRECT = STORE_DIRECT, DB_GROUP = STORE_GROUP };
enum db_role { DB_MEMBER = STORE_MEMBER, DB_ADMIN = STORE_ADMIN };

/* A user as others see it. id 0: no such user (in db_users' answers). */
typedef struct db_user {
    uint64_t id;
    char name[DB_NAME_MAX + 1];
    int64_t last_seen;                /* ms; 0 = never */
} db_user;

/* A user as a login sees it. */
typedef struct db_account {
    uint64_t id;
    char name[DB_NAME_MAX + 1];
    char pwhash[DB_HASH_MAX + 1];
} db_account;

typedef struct db_member {
    uint64_t uid;
    uint8_t role;                     /* enum db_role */
    bool invited;                     /* added by a non-contact, not yet accepted */
    uint64_t delivered, read;         /* cursors */
    int64_t last_seen;                /* the user's, ms; 0 = never */
    char name[DB_NAME_MAX + 1];
} db_member;

/* A message; cmid and body point into the same allocation as it. */
typedef struct db_msg {
    uint64_t seq;                     /* 0: none (db_conv.last) */
    uint64_t from;                    /* uid */
    int64_t ts;                       /* ms since the epoch */
    char from_name[DB_NAME_MAX + 1];  /* "" if the sender is gone */
    const char *cmid;                 /* not NUL-terminated */
    size_t cmid_len;
    const char *body;                 /* JSON text of the body value */
    size_t body_len;
} db_msg;

/* A conversation: one allocation (free()) holding its members (by uid)
 * and its last message. */
typedef struct db_conv {
    uint64_t id;
    uint8_t type;                     /* enum db_conv_type */
    char name[DB_NAME_MAX + 1];       /* groups; "" for direct */
    uint64_t last_seq;                /* 0 = no messages */
    int64_t last_ts;                  /* of the last message, or the creation */
    const db_member *me;              /* the viewer's membership, NULL without a viewer */
    db_msg last;                      /* the last message (last.seq 0: none) */
    uint32_t n;
    db_member members[];
} db_conv;

/* One page of history: one allocation (free()), messages by seq ascending. */
typedef struct db_page {
    size_t n;
    bool more;                        /* more messages in the direction of paging */
    db_msg msgs[];
} db_page;

/* What an inbox page asks for: all of uid's conversations, or those
 * changed after `since` (0: all); a later page of a walk (page: since,
 * snapshot, ts and conv from the page before it: what changed after the
 * walk began is left out, the rest comes after (ts, conv) in the order). */
typedef struct db_inbox_req {
    uint64_t uid, since;
    bool page;
    uint64_t snapshot;                /* the walk's cursor */
    int64_t ts;                       /* the last one listed */
    uint64_t conv;
    size_t limit;                     /* conversations, >= 1 */
    size_t max_bytes;                 /* about this many bytes of them (at least one) */
} db_inbox_req;

/* An inbox page, most recent activity first (last_ts descending, then id
 * descending): db_inbox_free(). */
typedef struct db_inbox {
    uint64_t cursor;                  /* changed_since of the next walk */
    bool more;                        /* more conversations after these */
    size_t n;
    db_conv **convs;                  /* each with uid as its viewer */
} db_inbox;

void db_inbox_free(db_inbox *in);

/* Lower bounds of the JSON size of a message and of a conversation object
 * (chat.c encodes them): a backend cuts a page where these pass its byte
 * budget, and chat trims it exactly, so a backend never cuts what the
 * budget keeps, and copies more than the budget only when the first one
 * alone is bigger. */
static inline size_t db_msg_floor(size_t from_len, size_t cmid_len, size_t body_len)
{
    return 40 + from_len + cmid_len + body_len;
}
size_t db_conv_floor(const db_conv *c);

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
    db_conv *after;                   /* OP_DIRECT (new), OP_GROUP, OP_ADD, OP_REMOVE: \
                                         the conversation after the op, no viewer     \
                                         (owned copy, or NULL) */                     \
    db_conv **left;                   /* OP_LEAVE: nuids, the group after each one   \
                                         left (NULL: not left, or nobody stays) */    \
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
    const char *url;                  /* postgresql: the database (a libpq URI) */
    const char *data_dir;
    size_t map_size;                  /* lmdb: the map's size limit */
    uint64_t log_segment_bytes;       /* lmdb: the log's segments */
    uint32_t apply_delay_ms;          /* lmdb: the applier's gathering */
    uint32_t commit_window_us;
    uint32_t commit_delay_us;         /* lmdb: gathering while the log is idle */
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

    /* Reads (blocking; copies). ERR_IO for a storage error. */
    /* The session of a token's hash: who (uid, device, expires, name);
     * ERR_NOT_FOUND. Expiry is the caller's to check. */
    int (*session)(db *d, const uint8_t token_hash[32], db_ident *who);
    /* A user by (normalized) name; ERR_NOT_FOUND. */
    int (*account)(db *d, const char *name, db_account *out);
    /* Users by id: out[i] for uids[i] (id 0 when there is none). */
    int (*users)(db *d, const uint64_t *uids, size_t n, db_user *out);
    /* A conversation as viewer sees it (viewer 0: nobody's, me NULL);
     * ERR_FORBIDDEN when there is none or viewer is not a member. */
    int (*conv)(db *d, uint64_t conv, uint64_t viewer, db_conv **out);
    /* The members for a member viewer, as a new audience that is the
     * caller's (to change, then to share); ERR_FORBIDDEN. */
    int (*members)(db *d, uint64_t conv, uint64_t viewer, audience **out);
    /* A page of history for a member viewer (ERR_FORBIDDEN): after
     * `after` ascending (before 0), or before `before` (UINT64_MAX: the
     * latest), at most limit messages, cut at the end away from the anchor
     * where db_msg_floor() of them passes max_bytes (at least one): never
     * before the exact JSON budget would cut (the caller trims to it). */
    int (*history)(db *d, uint64_t conv, uint64_t viewer, uint64_t after, uint64_t before,
                   size_t limit, size_t max_bytes, db_page **out);
    /* A page of uid's inbox; ERR_INVALID for a walk from the future. */
    int (*inbox)(db *d, const db_inbox_req *q, db_inbox **out);
    /* Everyone who shares a conversation with uid (uid excluded), one ref. */
    int (*contacts)(db *d, uint64_t uid, audience **out);
    /* Whether the storage can be reached, as last seen (never blocks:
     * /healthz asks it on an I/O thread). */
    bool (*healthy)(db *d);
    /* How many users and conversations there are: never blocks (the
     * metrics page calls it on an I/O thread); may lag a few seconds. */
    void (*counts)(db *d, uint64_t *users, uint64_t *convs);
} db_vfs;

struct db {
    const db_vfs *vfs;
};

extern const db_vfs db_lmdb;
extern const db_vfs db_pg;

/* The backend of that name ("lmdb", "postgresql"), or NULL. */
const db_vfs *db_find(const char *name);
/* The backend for --store: empty, the embedded one; postgresql:// or
 * postgres://, db_pg; anything else NULL. */
const db_vfs *db_for_url(const char *url);

static inline int db_submit(db *d, db_op *op)
{
    op->db = d;
    return d->vfs->submit(d, op);
}
static inline void db_settle(db *d, uint64_t conv) { d->vfs->settle(d, conv); }
static inline void db_close(db *d) { d->vfs->close(d); }

static inline void db_stats(db *d, writer_stats *st) { d->vfs->stats(d, st); }
static inline int db_session(db *d, const uint8_t h[32], db_ident *who)
{
    return d->vfs->session(d, h, who);
}
static inline int db_account_get(db *d, const char *name, db_account *out)
{
    return d->vfs->account(d, name, out);
}
static inline int db_users(db *d, const uint64_t *uids, size_t n, db_user *out)
{
    return d->vfs->users(d, uids, n, out);
}
static inline int db_conv_get(db *d, uint64_t conv, uint64_t viewer, db_conv **out)
{
    return d->vfs->conv(d, conv, viewer, out);
}
static inline int db_members(db *d, uint64_t conv, uint64_t viewer, audience **out)
{
    return d->vfs->members(d, conv, viewer, out);
}
static inline int db_history(db *d, uint64_t conv, uint64_t viewer, uint64_t after,
                             uint64_t before, size_t limit, size_t max_bytes, db_page **out)
{
    return d->vfs->history(d, conv, viewer, after, before, limit, max_bytes, out);
}
static inline int db_inbox_get(db *d, const db_inbox_req *q, db_inbox **out)
{
    return d->vfs->inbox(d, q, out);
}
static inline int db_contacts(db *d, uint64_t uid, audience **out)
{
    return d->vfs->contacts(d, uid, out);
}
static inline bool db_healthy(db *d) { return d->vfs->healthy(d); }
static inline void db_counts(db *d, uint64_t *users, uint64_t *convs)
{
    d->vfs->counts(d, users, convs);
}

/* The lmdb backend's store, for tests and tools that read the embedded
 * files themselves (NULL for another backend): never the server's reads. */
store *db_lmdb_store(db *d);

#endif
