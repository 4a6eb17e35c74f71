/* store: parley's durable state behind one synchronous, transactional
 * interface. The embedded backend is LMDB (one environment in --data-dir);
 * a PostgreSQL backend can implement the same functions later.
 *
 * Threads: any number of read transactions on any threads at once, one
 * write transaction at a time (the group-commit writer's). A transaction is
 * used by the thread that began it. store_commit() of a write transaction
 * returns only once the data is durable (fsync).
 *
 * Memory: every pointer a read function hands out (names, bodies, cmids)
 * points into the store's memory map and is valid only until the end of the
 * transaction; copy what you keep. Nothing returned is freed by the caller,
 * except the store and transactions through their own functions.
 * In a write transaction such a pointer is valid only until the next write
 * call in it (LMDB may move the page it points into).
 *
 * Errors of write calls: ERR_INVALID for a read transaction or bad
 * arguments, ERR_TOO_LARGE for a name, hash or cmid over its limit,
 * ERR_FULL when the map is full. After ERR_FULL or ERR_IO the transaction
 * can only be discarded: store_commit() then returns that error.
 *
 * Layout (all integers big-endian in keys, so ranges are ordered):
 *   meta        "version" -> format version; "next_user", "next_conv",
 *               "clock" -> counters
 *   users       uid -> user record (name, password hash, created, last_seen,
 *               next device number)
 *   names       username -> uid
 *   sessions    sha256(token) -> uid, device, expires
 *   convs       conv id -> conversation record
 *   directs     (low uid, high uid) -> conv id
 *   members     (conv, uid) -> member record (role, cursors, version,
 *               invited)
 *   user_convs  (uid, conv) -> whether the membership is an invitation
 *               (a user's conversations, and what counts against a cap)
 *   msgs        (conv, seq) -> message record: a page of history is one
 *               cursor range read
 *   cmids       (conv, uid, cmid) -> seq (idempotent sends)
 */
#ifndef PARLEY_STORE_H
#define PARLEY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define STORE_FORMAT_VERSION 1
#define STORE_NAME_MAX 64      /* username / group name bytes, without NUL */
#define STORE_HASH_MAX 128     /* password hash string (crypto_pwhash_STRBYTES) */
#define STORE_CMID_MAX 64      /* client message id bytes */

typedef struct store store;
typedef struct store_txn store_txn;

enum store_conv_type { STORE_DIRECT = 1, STORE_GROUP = 2 };
enum store_role { STORE_MEMBER = 0, STORE_ADMIN = 1 };

typedef struct store_user {
    uint64_t id;
    char name[STORE_NAME_MAX + 1];
    char pwhash[STORE_HASH_MAX + 1];
    int64_t created;           /* ms since the epoch */
    int64_t last_seen;         /* ms; 0 = never */
    uint32_t next_device;      /* device number the next login gets */
} store_user;

typedef struct store_session {
    uint64_t uid;
    uint32_t device;
    int64_t expires;           /* ms since the epoch */
} store_session;

typedef struct store_conv {
    uint64_t id;
    uint8_t type;              /* enum store_conv_type */
    char name[STORE_NAME_MAX + 1]; /* groups; empty for direct */
    uint64_t last_seq;         /* 0 = no messages */
    int64_t last_ts;           /* ms of the last message, or creation */
    uint64_t version;          /* store clock value of the last change */
    uint32_t nmembers;
    int64_t created;
} store_conv;

typedef struct store_member {
    uint64_t uid;
    uint8_t role;              /* enum store_role */
    uint64_t delivered;        /* highest seq delivered to any device */
    uint64_t read;             /* highest seq read */
    uint64_t version;          /* store clock value of the last change */
    bool invited;              /* added by a non-contact and not yet accepted */
} store_member;

typedef struct store_msg {
    uint64_t conv;
    uint64_t seq;
    uint64_t from;             /* uid */
    int64_t ts;                /* ms since the epoch */
    const char *cmid;          /* not NUL-terminated */
    size_t cmid_len;
    const char *body;          /* JSON text of the body value */
    size_t body_len;
} store_msg;

/* ---- environment and transactions ---------------------------------------- */

/* Opens (creating if needed) the store in directory `dir`, whose map may
 * grow to map_size bytes. Returns ERR_OK and *out, ERR_VERSION if the
 * directory holds another format version (nothing is changed), ERR_BUSY if
 * another open store holds the directory, ERR_IO (errno then tells the
 * system's reason, or is 0). The directory is created if missing; map_size
 * 0 means 1 GiB.
 *
 * One store per directory: an open store holds an exclusive flock on
 * DIR/LOCK until store_close() (or the death of its process), so a second
 * server on the same data directory, in this process or another, cannot
 * open it. The file holds the pid of the holder: store_lock_pid() reads it
 * (0 if unknown), for the message of the refused one. A failure is logged
 * with the system's reason ("Permission denied"). */
int store_open(store **out, const char *dir, size_t map_size);
void store_close(store *s);
int store_lock_pid(const char *dir);

/* Begins a transaction; write = true for the (single) writer. */
int store_begin(store *s, bool write, store_txn **out);
/* A thread that must never use the store (the writer's completer: its
 * completions run between two batches, so a read there would hold every
 * ack behind it) marks itself. A transaction begun on a marked thread
 * still works, but is counted: store_forbidden_begins() (all threads,
 * since the start of the process), so that tests can show there is none. */
void store_forbid_this_thread(void);
uint64_t store_forbidden_begins(void);
/* Commits (durably, for a write transaction) and frees the transaction. On
 * error everything in it is discarded. */
int store_commit(store_txn *t);

/* Discards and frees the transaction. */
void store_abort(store_txn *t);

/* Whether the store's filesystem has less than STORE_SPACE_LOW bytes left
 * for it: LMDB reports a write cut short by a full disk as EIO (ERR_IO),
 * which the caller then reads as ERR_DISK_FULL. */
#define STORE_SPACE_LOW (8u << 20)
bool store_space_low(store *s);

/* Bytes left to an unprivileged writer on the store's filesystem, or
 * UINT64_MAX when it cannot be told. */
uint64_t store_space_left(store *s);

/* Makes everything committed durable (fsync). */
int store_sync(store *s);

/* The numbers of users and conversations as of the last commit: counted
 * when the store opens and kept at each commit (LMDB keeps entry counts
 * per database), so reading them costs two loads. Any thread. */
void store_counts(store *s, uint64_t *users, uint64_t *convs);

/* The store clock: a counter that orders every change. store_tick()
 * advances it (write txn) and returns the new value; store_clock() reads. */
/* store_tick() returns 0 if it fails (read transaction, I/O error). */
uint64_t store_tick(store_txn *t);
uint64_t store_clock(store_txn *t);
/* Raises the clock to at least v (write txn): versions assigned outside
 * the store (the sequencer's, writer.h) are never handed out again. */
void store_clock_raise(store_txn *t, uint64_t v);

/* Named counters in the meta table ("log_applied": the log position the
 * store holds, writer.h). A missing name reads as 0. */
int store_meta_get(store_txn *t, const char *name, uint64_t *v);
int store_meta_put(store_txn *t, const char *name, uint64_t v);

/* The conversations whose record or members a write transaction changed
 * so far (in order, a conversation possibly more than once), valid until
 * the next write call or the end of the transaction: the sequencer drops
 * its copies of them (writer.h). */
const uint64_t *store_touched(store_txn *t, size_t *n);

/* ---- users and sessions ---------------------------------------------------- */

/* Creates a user with the next uid. ERR_CONFLICT if the name is taken. */
int store_user_create(store_txn *t, const char *name, const char *pwhash, int64_t now,
                      uint64_t *uid);
/* ERR_NOT_FOUND if there is no such user. */
int store_user_by_name(store_txn *t, const char *name, store_user *u);
int store_user_get(store_txn *t, uint64_t uid, store_user *u);
/* Rewrites a user's record (last_seen, next_device). */
int store_user_put(store_txn *t, const store_user *u);

int store_session_put(store_txn *t, const uint8_t token_hash[32], const store_session *s);
int store_session_get(store_txn *t, const uint8_t token_hash[32], store_session *s);
int store_session_del(store_txn *t, const uint8_t token_hash[32]);

/* ---- conversations and members ------------------------------------------- */

/* Creates a conversation with the next id; c->id is set, the rest is the
 * caller's (nmembers is maintained by member_put/member_del). */
int store_conv_create(store_txn *t, store_conv *c);
int store_conv_get(store_txn *t, uint64_t id, store_conv *c);
/* ERR_NOT_FOUND if c->id does not exist; c->nmembers is ignored (the stored
 * count is kept). */
int store_conv_put(store_txn *t, const store_conv *c);

/* The direct conversation of two users (order does not matter). */
int store_direct_get(store_txn *t, uint64_t a, uint64_t b, uint64_t *conv);
int store_direct_put(store_txn *t, uint64_t a, uint64_t b, uint64_t conv);

/* ERR_NOT_FOUND if uid is not a member. */
int store_member_get(store_txn *t, uint64_t conv, uint64_t uid, store_member *m);
/* Adds or rewrites a member; keeps user_convs (with the invited state)
 * and the conversation's nmembers in step. */
int store_member_put(store_txn *t, uint64_t conv, const store_member *m);
/* Removes a member (ERR_NOT_FOUND if absent); keeps the indexes in step. */
int store_member_del(store_txn *t, uint64_t conv, uint64_t uid);

/* Calls fn for each member of conv in uid order until fn returns non-zero
 * (which is then returned). Returns ERR_OK after the last. */
int store_members(store_txn *t, uint64_t conv,
                  int (*fn)(void *arg, const store_member *m), void *arg);

/* Calls fn for each conversation id of uid in id order (as store_members). */
int store_user_convs(store_txn *t, uint64_t uid,
                     int (*fn)(void *arg, uint64_t conv), void *arg);

/* Counts uid's memberships that are invitations (invited) or not, stopping
 * at cap: *n = min(count, cap). One walk of uid's user_convs, no member
 * records read. */
int store_user_convs_count(store_txn *t, uint64_t uid, bool invited, uint32_t cap,
                           uint32_t *n);

/* ---- messages ------------------------------------------------------------ */

/* Stores a message at (m->conv, m->seq). The caller assigns seq. */
/* seq 0 is ERR_INVALID. */
int store_msg_put(store_txn *t, const store_msg *m);
/* ERR_NOT_FOUND if there is no message at that seq. */
int store_msg_get(store_txn *t, uint64_t conv, uint64_t seq, store_msg *m);

/* Calls fn for up to `limit` messages of conv: ascending from seq `from`
 * (inclusive) when forward, else descending from `from` (inclusive).
 * Stops early when fn returns non-zero (returned). Sets *more (if not NULL)
 * to whether another message lies beyond the last one visited. */
int store_msgs(store_txn *t, uint64_t conv, uint64_t from, bool forward, size_t limit,
               int (*fn)(void *arg, const store_msg *m), void *arg, bool *more);

/* Idempotency: the seq a (conv, uid, cmid) was stored at. */
int store_cmid_get(store_txn *t, uint64_t conv, uint64_t uid, const char *cmid,
                   size_t len, uint64_t *seq);
int store_cmid_put(store_txn *t, uint64_t conv, uint64_t uid, const char *cmid,
                   size_t len, uint64_t seq);

/* ---- whole tables, for tools (migrate.h) ----------------------------------- */

/* Each calls fn for every entry in key order until fn returns non-zero
 * (which is then returned); ERR_OK after the last. Users by uid, sessions
 * by token hash (bytes), conversations by id, directs by (lo, hi): the
 * orders PostgreSQL's primary keys sort in. What fn gets points into the
 * map (valid until the end of the transaction). fn may read other tables
 * (members, messages) in the same transaction, not walk the same one. */
int store_users_each(store_txn *t, int (*fn)(void *arg, const store_user *u), void *arg);
int store_sessions_each(store_txn *t,
                        int (*fn)(void *arg, const uint8_t token_hash[32], const store_session *s),
                        void *arg);
int store_convs_each(store_txn *t, int (*fn)(void *arg, const store_conv *c), void *arg);
int store_directs_each(store_txn *t, int (*fn)(void *arg, uint64_t lo, uint64_t hi, uint64_t conv),
                       void *arg);

#endif
