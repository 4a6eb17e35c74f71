/* chat: parley's application core, shared by the REST API (api.c) and the
 * WebSocket protocol (proto.c).
 *
 * Mutations are writer operations (writer.h): the caller fills a chat_op,
 * chat_submit() queues it, the writer applies it inside the batch
 * transaction and, after the durable commit, fans out the resulting frames
 * (encoded once) through the hub and calls op->reply(t, op) on the origin
 * connection's thread. reply owns the op from then on and frees it with
 * chat_op_free(). If the origin connection has closed, reply still runs
 * (with srv_conn() returning NULL) so it can free the op.
 *
 * Reads (chat_authenticate, chat_write_*, chat_contacts, ...) are the
 * storage interface's blocking reads (db.h, copies) and may wait for the
 * applier (chat_settle): they run on the read pool (ch->reads, net/pool.h),
 * never on an I/O thread nor on the completer; the adapters (api.c,
 * proto.c) queue a job there that builds the whole answer and post it back
 * to the connection's thread.
 */
#ifndef PARLEY_CHAT_H
#define PARLEY_CHAT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/config.h"
#include "chat/bus.h"
#include "chat/guard.h"
#include "chat/hub.h"
#include "codec/json.h"
#include "codec/msg.h"
#include "net/pool.h"
#include "net/srv.h"
#include "store/db.h"
#include "store/store.h"

typedef struct chat {
    const config *cfg;
    server *srv;
    db *db;                           /* the storage backend */
    hub *hub;
    guard *guard;
    pool *reads;       /* the read pool: every store read of the adapters */
    bus *bus;          /* the other nodes (--bus), or NULL */
    char node[BUSMSG_NODE_MAX + 1]; /* this node's id (--node-id, or made at start) */
    uv_mutex_t presence_mu;           /* the bus's presence jobs vs the read pool's stop */
    bool presence_closed;             /* under presence_mu: the read pool is stopping */
    struct intro_job *intros;         /* the completer's: introductions to run after its flush */
} chat;

/* Opens the store in cfg->data_dir, creates the hub for srv and starts the
 * writer and the read pool (--read-threads, --max-read-queue). Returns
 * ERR_OK, ERR_VERSION (data from another version), ERR_IO. */
int chat_open(chat **out, const config *cfg, server *srv);
/* Stops the read pool (running what is queued: its answers find no
 * thread and are freed) and the writer (applying what is queued), and
 * closes the store. Call after the I/O threads have ended. */
void chat_close(chat *ch);
/* The stop began (any thread, before the sessions close): with --bus the
 * node leaves the cluster's roster, so that the other nodes tell its
 * users' contacts (bus_leave). */
void chat_leave(chat *ch);

/* A message of uid's, before it is submitted: this node's per-user bucket
 * (guard_user_msg), then with --bus the cluster's (bus_user_blocked; the
 * message is then counted there). ERR_OK, or ERR_RATE with *retry_ms.
 * Any I/O thread. */
int chat_user_msg(chat *ch, uint64_t uid, uint32_t *retry_ms);

static inline chat *chat_of(srv_thread *t) { return (chat *)t->srv->app; }

static inline int64_t chat_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- identities ------------------------------------------------------------ */

typedef db_ident chat_ident;

/* Resolves a bearer token: ERR_OK with *id, or ERR_AUTH (unknown, expired
 * or malformed). Read transaction. */
int chat_authenticate(chat *ch, const char *token, size_t n, chat_ident *id);

/* ---- operations ------------------------------------------------------------ */

#define CHAT_LEAVE_MAX DB_LEAVE_MAX

typedef struct chat_op chat_op;
/* An operation: what the storage sees (db.h's db_op, whose fields it
 * holds by name through the union) and how to answer it. */
struct chat_op {
    union {
        db_op d;                      /* first: a writer_op* is a chat_op* */
        struct { DB_OP_FIELDS };
    };
    chat *ch;
    uint64_t origin;                  /* conn id to reply to (0: none) */
    void (*reply)(srv_thread *t, void *op); /* on origin's thread */
    bool keep_alive;                  /* REST: the request's keep-alive */
    char ref[80];                     /* WS: raw JSON of the frame's "id", or "" */
    uint64_t arrived_ns;              /* OP_SEND (WebSocket): uv_hrtime() at the frame's arrival */
};

/* A zeroed op of that kind, or NULL. */
chat_op *chat_op_new(chat *ch, enum db_op_kind kind, uint64_t origin,
                     void (*reply)(srv_thread *t, void *op));
void chat_op_free(chat_op *op);

/* Queues op. ERR_OK, or ERR_BUSY / ERR_CLOSED (then op is still the
 * caller's and reply will not run). */
int chat_submit(chat_op *op);

/* ---- reads (the read pool's threads) -------------------------------------- */

/* Read-your-writes. A message or cursor is acked once it is in the log,
 * before the store holds it (writer.h): a read of conv (0: of anything)
 * first waits until the store holds what was acked of it. Returns at once
 * when nothing of conv is pending (the usual case); otherwise it asks the
 * applier not to gather and waits for its commit (bounded). It blocks the
 * calling thread: call it on the read pool, before the read. */
void chat_settle(chat *ch, uint64_t conv);

/* Appends a conversation object as seen by uid. ERR_FORBIDDEN if uid is
 * not a member (or no such conversation); ERR_IO, ERR_UNAVAILABLE, ERR_NOMEM. */
int chat_write_conv(chat *ch, uint64_t conv, uint64_t uid, jbuf *j);

/* The page budget: the most bytes of messages (or conversations) one
 * history or inbox page holds, a quarter of --max-queue, so that every
 * answer fits the output queue. A page always holds at least one. */
static inline size_t chat_page_bytes(const chat *ch) { return ch->cfg->max_queue / 4; }

/* Appends one page of uid's inbox, most recent activity first (last_ts
 * descending, then id descending):
 *   {"conversations":[...],"cursor":C,"more":B[,"next":"TOKEN"]}
 * at most `limit` conversations (1..MSG_INBOX_LIMIT_MAX) whose objects
 * total at most max_bytes (but always one); all, or only those changed
 * after `since` (0: all). page NULL: the first page of a walk, whose
 * cursor C is the store clock now. page (a `next` token, msg.h): the page
 * after it, of the same walk (since and cursor come from the token);
 * conversations that changed after the walk began are left out (they come
 * with changed_since = C). ERR_INVALID for a token from the future. */
int chat_write_inbox(chat *ch, uint64_t uid, uint64_t since, const msg_page *page,
                     size_t limit, size_t max_bytes, jbuf *j);

/* Appends "messages":[...],"more":B (no braces) for a member uid
 * (ERR_FORBIDDEN): after `after`
 * ascending, or before `before` (UINT64_MAX: the latest), limit <= 500,
 * trimmed to max_bytes of messages (at least one) at the end away from the
 * anchor: forward, the last ones; backward, the oldest. more: further
 * messages exist in the direction of paging. */
int chat_write_history(chat *ch, uint64_t conv, uint64_t uid, uint64_t after, uint64_t before,
                       size_t limit, size_t max_bytes, jbuf *j);

/* Appends {"members":[...]} receipts, and counts for seq when seq > 0.
 * ERR_FORBIDDEN for a non-member, ERR_INVALID when there is no message at
 * seq (beyond last_seq). */
int chat_write_receipts(chat *ch, uint64_t conv, uint64_t uid, uint64_t seq, jbuf *j);

/* A member check: ERR_OK or ERR_FORBIDDEN (ERR_IO). */
int chat_is_member(chat *ch, uint64_t conv, uint64_t uid);

/* {"type":"presence","user":name,"online":B,"last_seen":T} as an event
 * (one ref), or NULL. */
event *chat_presence_event(const char *name, bool online, int64_t last_seen);

/* The uids of everyone who shares a conversation with uid (uid excluded),
 * as a new audience (one ref), or NULL. */
audience *chat_contacts(chat *ch, uint64_t uid);

#endif
