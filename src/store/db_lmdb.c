/* db_lmdb: the embedded backend of db.h: LMDB (store.h) behind the
 * durable path (writer.h): sends, cursor moves and last_seen are decided
 * by the sequencer's memory (seq.h) and acked at the log's fdatasync; every
 * other operation runs, with its checks, in an LMDB write transaction
 * after everything logged before it is applied.
 *
 * The domain's rules live here, once: invitations (a member added by a
 * non-contact is "invited": it gets the conversation's messages but does
 * not count against --max-user-convs until it accepts by sending, reading,
 * or opening the direct conversation itself; invitations have a cap of
 * their own), the per-user and per-group caps, cmid idempotency.
 */
#include "store/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/u64map.h"
#include "store/seq.h"

/* The last log batch with an entry of a conversation, by conversation id
 * modulo the table (a shared slot only makes a read wait needlessly).
 * Written by the sequencer, read by any thread (relaxed atomics). */
#define PENDING_SLOTS 4096

typedef struct lmdb_db {
    db base;                          /* first */
    store *st;
    writer *w;
    db_options opt;
    uint64_t pending_batch[PENDING_SLOTS];
    /* Cursor updates of one member in one batch: only the last one is
     * told. Maps (conv, uid) to the latest cursor op of the batch being
     * applied; writer thread only, emptied after each batch's apply. */
    u64map latest_cursor;
    /* The same for the log path, on the sequencer thread: the cursor ops
     * of the sequencer's batch number seq_latest_batch. */
    u64map seq_latest;
    uint64_t seq_latest_batch;
} lmdb_db;

static lmdb_db *db_of(const db_op *op) { return (lmdb_db *)op->db; }
static const db_options *lim_of(const db_op *op) { return &db_of(op)->opt; }

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void mark_pending(lmdb_db *x, uint64_t conv, uint64_t batch)
{
    __atomic_store_n(&x->pending_batch[conv % PENDING_SLOTS], batch, __ATOMIC_RELAXED);
}

static void batch_applied(void *ctx)
{
    lmdb_db *x = ctx;
    if (x->latest_cursor.count) u64map_free(&x->latest_cursor);
}

static void batch_end(void *ctx)
{
    lmdb_db *x = ctx;
    if (x->opt.batch_end) x->opt.batch_end(x->opt.ctx);
}

typedef struct collect_ctx {
    audience *a;
    uint32_t cap;
} collect_ctx;

static int collect_uid(void *arg, const store_member *m)
{
    collect_ctx *x = arg;
    if (x->a->n == x->cap) return ERR_INVALID; /* nmembers was stale */
    x->a->uids[x->a->n++] = m->uid;
    return 0;
}

/* Builds op->aud from the conversation's nmembers members (one allocation). */
static int collect_members(store_txn *txn, db_op *op, uint32_t nmembers)
{
    audience_unref(op->aud);
    op->aud = audience_new(nmembers);
    if (!op->aud) return ERR_NOMEM;
    op->aud->n = 0;
    collect_ctx x = {op->aud, nmembers};
    int rc = store_members(txn, op->conv, collect_uid, &x);
    return rc == ERR_INVALID ? ERR_IO : rc;
}

static int load_members(store_txn *txn, db_op *op)
{
    store_conv c;
    int rc = store_conv_get(txn, op->conv, &c);
    return rc < 0 ? rc : collect_members(txn, op, c.nmembers);
}

/* ---- accounts ---------------------------------------------------------------- */

/* The new session of OP_REGISTER / OP_LOGIN: the caller made the token
 * (op->token, op->new_token_hash) and its expiry (op->expires). */
static int new_session(store_txn *txn, db_op *op, uint32_t device)
{
    store_session s = {op->who.uid, device, op->expires};
    op->who.device = device;
    return store_session_put(txn, op->new_token_hash, &s);
}

static int apply_register(store_txn *txn, db_op *op)
{
    uint64_t uid;
    int rc = store_user_create(txn, op->name, op->pwhash, now_ms(), &uid);
    if (rc < 0) return rc == ERR_CONFLICT ? ERR_USERNAME_TAKEN : rc;
    store_user u;
    if ((rc = store_user_get(txn, uid, &u)) < 0) return rc;
    u.next_device = 2;
    if ((rc = store_user_put(txn, &u)) < 0) return rc;
    op->who.uid = uid;
    memcpy(op->who.name, u.name, sizeof u.name);
    return new_session(txn, op, 1);
}

static int apply_login(store_txn *txn, db_op *op)
{
    store_user u;
    int rc = store_user_get(txn, op->who.uid, &u);
    if (rc < 0) return rc;
    uint32_t device = u.next_device ? u.next_device : 1;
    u.next_device = device + 1;
    if ((rc = store_user_put(txn, &u)) < 0) return rc;
    return new_session(txn, op, device);
}

static int apply_logout(store_txn *txn, db_op *op)
{
    int rc = store_session_del(txn, op->who.token_hash);
    return rc == ERR_NOT_FOUND ? ERR_OK : rc;
}

static int apply_last_seen(store_txn *txn, db_op *op)
{
    store_user u;
    int rc = store_user_get(txn, op->who.uid, &u);
    if (rc < 0) return rc == ERR_NOT_FOUND ? ERR_OK : rc;
    if (op->ts <= u.last_seen) return ERR_OK;
    u.last_seen = op->ts;
    return store_user_put(txn, &u);
}


/* ---- conversations ------------------------------------------------------------ */

/* Invitations. A user added to a conversation by someone who is not their
 * contact is a member "invited": they see it and get its messages, but it
 * does not count against their --max-user-convs until they accept it by
 * sending, reading (a `read` frame) or opening the direct conversation
 * themselves; they may also just leave it. Invitations have a cap of their
 * own (the same number), so strangers cannot fill a user's cap, nor grow
 * their inbox without bound. A contact, cheaply checked, is a user with
 * whom `uid` has a direct conversation that `uid` has accepted. */
static bool is_contact(store_txn *txn, uint64_t actor, uint64_t uid)
{
    uint64_t conv;
    store_member m;
    return store_direct_get(txn, actor, uid, &conv) == ERR_OK &&
           store_member_get(txn, conv, uid, &m) == ERR_OK && !m.invited;
}

/* ERR_TOO_MANY_MEMBERS if uid already has --max-user-convs memberships of
 * that kind (accepted ones, or invitations). */
static int check_user_convs(store_txn *txn, const db_op *op, uint64_t uid, bool invited)
{
    uint32_t n, cap = lim_of(op)->max_user_convs;
    int rc = store_user_convs_count(txn, uid, invited, cap, &n);
    if (rc < 0) return rc;
    return n >= cap ? ERR_TOO_MANY_MEMBERS : ERR_OK;
}

/* The acting user accepts an invitation (me, theirs): it now counts. */
static int accept_invitation(store_txn *txn, const db_op *op, store_member *me)
{
    if (!me->invited) return ERR_OK;
    int rc = check_user_convs(txn, op, op->who.uid, false);
    if (rc < 0) return rc;
    me->invited = false;
    return ERR_OK;
}

static int add_member(store_txn *txn, uint64_t conv, uint64_t uid, uint8_t role, uint64_t version,
                      bool invited)
{
    store_member m = {uid, role, 0, 0, version, invited};
    return store_member_put(txn, conv, &m);
}

/* Stamps a change on the conversation (after member_put/del, which keep
 * nmembers: re-read so their update is not overwritten). */
static int touch_conv(store_txn *txn, uint64_t conv, uint64_t version)
{
    store_conv c;
    int rc = store_conv_get(txn, conv, &c);
    if (rc < 0) return rc;
    c.version = version;
    return store_conv_put(txn, &c);
}

static int apply_direct(store_txn *txn, db_op *op)
{
    uint64_t a = op->who.uid, b = op->target;
    int rc = store_direct_get(txn, a, b, &op->conv);
    if (rc == ERR_OK) {
        /* Opening the direct conversation someone started with you accepts it. */
        store_member me;
        op->duplicate = true;
        if (store_member_get(txn, op->conv, a, &me) == ERR_OK && me.invited) {
            if ((rc = accept_invitation(txn, op, &me)) < 0) return rc;
            me.version = store_tick(txn);
            if ((rc = store_member_put(txn, op->conv, &me)) < 0) return rc;
        }
        return load_members(txn, op);
    }
    if (rc != ERR_NOT_FOUND) return rc;
    /* b has no direct conversation with a: b is invited. */
    if ((rc = check_user_convs(txn, op, a, false)) < 0 || (rc = check_user_convs(txn, op, b, true)) < 0)
        return rc;
    uint64_t v = store_tick(txn);
    store_conv c = {0};
    c.type = STORE_DIRECT;
    c.created = c.last_ts = now_ms();
    c.version = v;
    if ((rc = store_conv_create(txn, &c)) < 0) return rc;
    op->conv = c.id;
    if ((rc = add_member(txn, c.id, a, STORE_MEMBER, v, false)) < 0) return rc;
    if ((rc = add_member(txn, c.id, b, STORE_MEMBER, v, true)) < 0) return rc;
    if ((rc = store_direct_put(txn, a, b, c.id)) < 0) return rc;
    return load_members(txn, op);
}

static int apply_group(store_txn *txn, db_op *op)
{
    int rc = check_user_convs(txn, op, op->who.uid, false);
    for (size_t i = 0; rc == ERR_OK && i < op->nuids; i++)
        if (op->uids[i] != op->who.uid)
            rc = check_user_convs(txn, op, op->uids[i], !is_contact(txn, op->who.uid, op->uids[i]));
    if (rc < 0) return rc;
    uint64_t v = store_tick(txn);
    store_conv c = {0};
    c.type = STORE_GROUP;
    memcpy(c.name, op->name, sizeof c.name);
    c.created = c.last_ts = now_ms();
    c.version = v;
    rc = store_conv_create(txn, &c);
    if (rc < 0) return rc;
    op->conv = c.id;
    if ((rc = add_member(txn, c.id, op->who.uid, STORE_ADMIN, v, false)) < 0) return rc;
    for (size_t i = 0; i < op->nuids; i++) {
        uint64_t uid = op->uids[i];
        if (uid == op->who.uid) continue;
        store_member m;
        if (store_member_get(txn, c.id, uid, &m) == ERR_OK) continue; /* listed twice */
        bool invited = !is_contact(txn, op->who.uid, uid);
        if ((rc = add_member(txn, c.id, uid, STORE_MEMBER, v, invited)) < 0) return rc;
    }
    return load_members(txn, op);
}

/* A membership change: the actor must be a member (403), the conversation
 * a group (400), and the actor an admin when `admin` (403). */
static int check_actor(store_txn *txn, db_op *op, store_conv *c, bool admin)
{
    store_member me;
    if (store_conv_get(txn, op->conv, c) < 0) return ERR_FORBIDDEN;
    if (store_member_get(txn, op->conv, op->who.uid, &me) < 0) return ERR_FORBIDDEN;
    if (c->type != STORE_GROUP) return ERR_INVALID;
    if (admin && me.role != STORE_ADMIN) return ERR_FORBIDDEN;
    return ERR_OK;
}

static int apply_add(store_txn *txn, db_op *op)
{
    store_conv c;
    int rc = check_actor(txn, op, &c, true);
    if (rc < 0) return rc;
    if (c.nmembers >= lim_of(op)->max_group_members) return ERR_TOO_MANY_MEMBERS;
    store_member m;
    if (store_member_get(txn, op->conv, op->target, &m) == ERR_OK) return ERR_ALREADY_MEMBER;
    bool invited = !is_contact(txn, op->who.uid, op->target);
    if ((rc = check_user_convs(txn, op, op->target, invited)) < 0) return rc;
    uint64_t v = store_tick(txn);
    if ((rc = add_member(txn, op->conv, op->target, STORE_MEMBER, v, invited)) < 0) return rc;
    if ((rc = touch_conv(txn, op->conv, v)) < 0) return rc;
    return load_members(txn, op);
}

/* A group never ends without an admin: when the last one goes, the member
 * with the lowest uid becomes one. */
typedef struct admin_ctx {
    bool any;
    store_member first;
    bool have_first;
} admin_ctx;

static int admin_scan(void *arg, const store_member *m)
{
    admin_ctx *x = arg;
    if (m->role == STORE_ADMIN) { x->any = true; return 1; }
    if (!x->have_first) { x->first = *m; x->have_first = true; }
    return 0;
}

static int keep_an_admin(store_txn *txn, uint64_t conv, uint64_t version)
{
    admin_ctx x = {false, {0}, false};
    int rc = store_members(txn, conv, admin_scan, &x);
    if (rc < 0) return rc;
    if (x.any || !x.have_first) return ERR_OK;
    x.first.role = STORE_ADMIN;
    x.first.version = version;
    return store_member_put(txn, conv, &x.first);
}

static int apply_remove(store_txn *txn, db_op *op)
{
    store_conv c;
    bool self = op->target == op->who.uid;
    int rc = check_actor(txn, op, &c, !self);
    if (rc < 0) return rc;
    if ((rc = store_member_del(txn, op->conv, op->target)) < 0)
        return rc == ERR_NOT_FOUND ? ERR_NOT_MEMBER : rc;
    uint64_t v = store_tick(txn);
    if ((rc = keep_an_admin(txn, op->conv, v)) < 0) return rc;
    if ((rc = touch_conv(txn, op->conv, v)) < 0) return rc;
    return load_members(txn, op);
}

/* Leaves up to CHAT_LEAVE_MAX groups in one write: each one left, or why
 * not in op->rcs; the op itself fails only on a storage error. */
static int apply_leave(store_txn *txn, db_op *op)
{
    uint64_t v = 0;
    for (size_t i = 0; i < op->nuids; i++) {
        uint64_t conv = op->uids[i];
        store_conv c;
        store_member me;
        op->rcs[i] = ERR_FORBIDDEN;
        if (store_conv_get(txn, conv, &c) < 0 || store_member_get(txn, conv, op->who.uid, &me) < 0)
            continue;
        op->rcs[i] = ERR_INVALID;
        if (c.type != STORE_GROUP) continue; /* a direct conversation is for good */
        if (!v) v = store_tick(txn);
        int rc = store_member_del(txn, conv, op->who.uid);
        if (rc == ERR_OK) rc = keep_an_admin(txn, conv, v);
        if (rc == ERR_OK) rc = touch_conv(txn, conv, v);
        if (rc < 0) return rc;
        op->rcs[i] = ERR_OK;
    }
    return ERR_OK;
}

/* ---- messages and cursors ------------------------------------------------------ */

static int apply_send(store_txn *txn, db_op *op)
{
    store_member me;
    if (store_member_get(txn, op->conv, op->who.uid, &me) < 0) return ERR_FORBIDDEN;
    uint64_t seq;
    int rc = store_cmid_get(txn, op->conv, op->who.uid, op->cmid, op->cmid_len, &seq);
    if (rc == ERR_OK) {
        /* A resend carries the same body, byte for byte; another body under
         * a used cmid is a client bug that must not pass for an ack. */
        store_msg old;
        bool found = store_msg_get(txn, op->conv, seq, &old) == ERR_OK;
        if (found && (old.body_len != op->body_len || memcmp(old.body, op->body, op->body_len) != 0))
            return ERR_CMID_REUSED;
        op->duplicate = true;
        op->seq = seq;
        op->ts = found ? old.ts : 0;
        return ERR_OK;
    }
    if (rc != ERR_NOT_FOUND) return rc;
    if ((rc = accept_invitation(txn, op, &me)) < 0) return rc; /* replying accepts */
    store_conv c;
    if ((rc = store_conv_get(txn, op->conv, &c)) < 0) return rc;
    int64_t now = now_ms();
    store_msg m = {op->conv, c.last_seq + 1, op->who.uid, now > c.last_ts ? now : c.last_ts,
                   op->cmid, op->cmid_len, op->body, op->body_len};
    if ((rc = store_msg_put(txn, &m)) < 0) return rc;
    if ((rc = store_cmid_put(txn, op->conv, op->who.uid, op->cmid, op->cmid_len, m.seq)) < 0)
        return rc;
    uint64_t v = store_tick(txn);
    c.last_seq = m.seq;
    c.last_ts = m.ts;
    c.version = v;
    if ((rc = store_conv_put(txn, &c)) < 0) return rc;
    /* The sender has read what it sent. */
    me.delivered = me.read = m.seq;
    me.version = v;
    if ((rc = store_member_put(txn, op->conv, &me)) < 0) return rc;
    op->seq = m.seq;
    op->ts = m.ts;
    return collect_members(txn, op, c.nmembers);
}

static uint64_t cursor_key(const db_op *op)
{
    return (op->conv << 32) ^ op->who.uid;
}

static int apply_cursor(store_txn *txn, db_op *op)
{
    store_member me;
    store_conv c;
    if (store_conv_get(txn, op->conv, &c) < 0 ||
        store_member_get(txn, op->conv, op->who.uid, &me) < 0)
        return ERR_FORBIDDEN;
    /* A client only learns of a seq once it is stored: beyond last_seq is
     * a mistake, refused rather than clamped. */
    if (op->read > c.last_seq || op->delivered > c.last_seq) return ERR_INVALID;
    uint64_t rd = op->read;
    uint64_t dl = op->delivered > rd ? op->delivered : rd;
    bool accepted = op->accept && me.invited; /* a read accepts an invitation */
    int rc;
    if (accepted && (rc = accept_invitation(txn, op, &me)) < 0) return rc;
    op->changed = dl > me.delivered || rd > me.read;
    if (dl > me.delivered) me.delivered = dl;
    if (rd > me.read) me.read = rd;
    op->delivered = me.delivered;
    op->read = me.read;
    if (!op->changed && !accepted) return ERR_OK;
    me.version = store_tick(txn);
    if ((rc = store_member_put(txn, op->conv, &me)) < 0) return rc;
    if (!op->changed) return ERR_OK;
    db_op *prev = u64map_get(&db_of(op)->latest_cursor, cursor_key(op));
    /* superseded within this batch: not told (a key shared by another member
     * is not a supersession: both are told) */
    if (prev && prev->conv == op->conv && prev->who.uid == op->who.uid) prev->changed = false;
    u64map_put(&db_of(op)->latest_cursor, cursor_key(op), op);
    return load_members(txn, op);
}



static int sequence(writer_op *wop, sequencer *q, uint64_t batch, logrec_buf *out)
{
    db_op *op = (db_op *)wop;
    seq_result r;
    int rc;
    switch (op->kind) {
    case OP_SEND:
        rc = seq_send(q, batch, op->conv, op->who.uid, op->cmid, op->cmid_len, op->body,
                      op->body_len, now_ms(), out, &r);
        if (rc != ERR_OK) return rc;
        op->seq = r.seq;
        op->ts = r.ts;
        op->duplicate = r.duplicate;
        audience_unref(op->aud);
        op->aud = r.aud;
        op->members_version = r.members_version;
        /* A read of conv waits for this batch (a duplicate's original was
         * marked when it was sequenced). Only an entry appended marks: a
         * batch number that is never logged would hold readers. */
        if (!r.duplicate) mark_pending(db_of(op), op->conv, batch);
        return ERR_OK;
    case OP_CURSOR:
        rc = seq_cursor(q, batch, op->conv, op->who.uid, op->delivered, op->read, op->accept,
                        out, &r);
        if (rc != ERR_OK) return rc;
        op->changed = r.changed;
        op->delivered = r.delivered;
        op->read = r.read;
        audience_unref(op->aud);
        op->aud = r.aud;
        op->members_version = r.members_version;
        if (!op->changed) return ERR_OK;
        lmdb_db *x = db_of(op);
        mark_pending(x, op->conv, batch);
        if (batch != x->seq_latest_batch) {
            if (x->seq_latest.count) u64map_free(&x->seq_latest);
            x->seq_latest_batch = batch;
        }
        db_op *prev = u64map_get(&x->seq_latest, cursor_key(op));
        /* superseded within this batch: not told */
        if (prev && prev->conv == op->conv && prev->who.uid == op->who.uid) prev->changed = false;
        u64map_put(&x->seq_latest, cursor_key(op), op);
        return ERR_OK;
    case OP_LAST_SEEN:
        return seq_seen(q, batch, op->who.uid, op->ts, out);
    }
    return SEQ_SLOW;
}

static void keep_after(store_txn *txn, db_op *op);
static void keep_left(store_txn *txn, db_op *op);

static int apply(writer_op *wop, store_txn *txn)
{
    db_op *op = (db_op *)wop;
    int rc = ERR_INVALID;
    /* results of an earlier attempt, if any, are not this one's */
    free(op->after);
    op->after = NULL;
    op->duplicate = false;
    switch (op->kind) {
    case OP_REGISTER: return apply_register(txn, op);
    case OP_LOGIN: return apply_login(txn, op);
    case OP_LOGOUT: return apply_logout(txn, op);
    case OP_DIRECT: rc = apply_direct(txn, op); break;
    case OP_GROUP: rc = apply_group(txn, op); break;
    case OP_ADD: rc = apply_add(txn, op); break;
    case OP_REMOVE: rc = apply_remove(txn, op); break;
    case OP_SEND: return apply_send(txn, op);
    case OP_CURSOR: return apply_cursor(txn, op);
    case OP_LAST_SEEN: return apply_last_seen(txn, op);
    case OP_LEAVE:
        rc = apply_leave(txn, op);
        if (rc == ERR_OK) keep_left(txn, op);
        return rc;
    }
    /* a membership change: the conversation after it, for its events */
    if (rc == ERR_OK && !op->duplicate) keep_after(txn, op);
    return rc;
}

/* ---- copies (reads, and the conversation after a membership change) ------------- */

/* The members of a conversation being copied, growing. */
typedef struct mlist {
    db_member *m;
    size_t n, cap;
} mlist;

static int mlist_add(void *arg, const store_member *sm)
{
    mlist *l = arg;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 8;
        db_member *m = realloc(l->m, cap * sizeof *m);
        if (!m) return ERR_NOMEM;
        l->m = m;
        l->cap = cap;
    }
    db_member *d = &l->m[l->n++];
    memset(d, 0, sizeof *d);
    d->uid = sm->uid;
    d->role = sm->role;
    d->invited = sm->invited;
    d->delivered = sm->delivered;
    d->read = sm->read;
    return 0;
}

/* A page or a batch names few senders: the last few looked up. */
typedef struct name_cache {
    uint64_t uid[8];
    char name[8][DB_NAME_MAX + 1];
    unsigned next;
} name_cache;

static const char *cached_name(name_cache *nc, store_txn *txn, uint64_t uid)
{
    for (int i = 0; i < 8; i++)
        if (nc->uid[i] == uid) return nc->name[i];
    unsigned k = nc->next++ % 8;
    store_user u;
    if (store_user_get(txn, uid, &u) == ERR_OK) memcpy(nc->name[k], u.name, sizeof u.name);
    else nc->name[k][0] = 0;
    nc->uid[k] = uid;
    return nc->name[k];
}

static void msg_copy(db_msg *d, const store_msg *m, const char *from, char *tail)
{
    d->seq = m->seq;
    d->from = m->from;
    d->ts = m->ts;
    snprintf(d->from_name, sizeof d->from_name, "%s", from);
    memcpy(tail, m->cmid, m->cmid_len);
    memcpy(tail + m->cmid_len, m->body, m->body_len);
    d->cmid = tail;
    d->cmid_len = m->cmid_len;
    d->body = tail + m->cmid_len;
    d->body_len = m->body_len;
}

static int not_found_is(int rc, int as) { return rc == ERR_NOT_FOUND ? as : rc; }

/* Conversation id as viewer (0: nobody) sees it, in txn (read or write:
 * nothing is written while it copies). */
static int conv_copy(store_txn *txn, uint64_t id, uint64_t viewer, db_conv **out)
{
    store_conv c;
    int rc = store_conv_get(txn, id, &c);
    if (rc < 0) return not_found_is(rc, ERR_FORBIDDEN);
    mlist l = {NULL, 0, 0};
    if ((rc = store_members(txn, id, mlist_add, &l)) < 0) { free(l.m); return rc; }
    const db_member *me = NULL;
    for (size_t i = 0; i < l.n; i++) {
        store_user u;
        if (store_user_get(txn, l.m[i].uid, &u) == ERR_OK) {
            memcpy(l.m[i].name, u.name, sizeof u.name);
            l.m[i].last_seen = u.last_seen;
        }
        if (viewer && l.m[i].uid == viewer) me = &l.m[i];
    }
    if (viewer && !me) { free(l.m); return ERR_FORBIDDEN; }
    store_msg m;
    bool has = c.last_seq && store_msg_get(txn, id, c.last_seq, &m) == ERR_OK;
    size_t tail = has ? m.cmid_len + m.body_len : 0;
    db_conv *x = malloc(sizeof *x + l.n * sizeof x->members[0] + tail);
    if (!x) { free(l.m); return ERR_NOMEM; }
    memset(x, 0, sizeof *x);
    x->id = c.id;
    x->type = c.type;
    memcpy(x->name, c.name, sizeof x->name);
    x->last_seq = c.last_seq;
    x->last_ts = c.last_ts;
    x->n = (uint32_t)l.n;
    if (l.n) memcpy(x->members, l.m, l.n * sizeof x->members[0]);
    if (me) x->me = &x->members[me - l.m];
    if (has) {
        const char *from = "";
        for (size_t i = 0; i < l.n; i++)
            if (l.m[i].uid == m.from) from = l.m[i].name;
        name_cache nc = {{0}, {{0}}, 0};
        if (!*from) from = cached_name(&nc, txn, m.from); /* a sender who left */
        msg_copy(&x->last, &m, from, (char *)(x->members + l.n));
    }
    free(l.m);
    *out = x;
    return ERR_OK;
}

/* The conversation after a membership change, for its completion (the
 * completer does not read the store). */
static void keep_after(store_txn *txn, db_op *op)
{
    free(op->after);
    op->after = NULL;
    if (conv_copy(txn, op->conv, 0, &op->after) < 0) op->after = NULL;
}

static void keep_left(store_txn *txn, db_op *op)
{
    if (op->left)
        for (size_t i = 0; i < op->nuids; i++) free(op->left[i]);
    free(op->left);
    if (!(op->left = calloc(op->nuids ? op->nuids : 1, sizeof *op->left))) return;
    for (size_t i = 0; i < op->nuids; i++) {
        db_conv *c = NULL;
        if (op->rcs[i] != ERR_OK || conv_copy(txn, op->uids[i], 0, &c) < 0) continue;
        if (c->n) op->left[i] = c;
        else free(c); /* nobody stays to be told */
    }
}

static store *st_of(db *d) { return ((lmdb_db *)d)->st; }

static int read_begin(db *d, store_txn **txn)
{
    return store_begin(st_of(d), false, txn) < 0 ? ERR_IO : ERR_OK;
}

static int lmdb_session(db *d, const uint8_t h[32], db_ident *who)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    store_session s;
    store_user u;
    int rc = store_session_get(txn, h, &s);
    if (rc == ERR_OK) rc = store_user_get(txn, s.uid, &u);
    store_abort(txn);
    if (rc < 0) return rc;
    who->uid = s.uid;
    who->device = s.device;
    who->expires = s.expires;
    memcpy(who->token_hash, h, sizeof who->token_hash);
    memcpy(who->name, u.name, sizeof who->name);
    return ERR_OK;
}

static int lmdb_account(db *d, const char *name, db_account *out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    store_user u;
    int rc = store_user_by_name(txn, name, &u);
    store_abort(txn);
    if (rc < 0) return rc;
    out->id = u.id;
    memcpy(out->name, u.name, sizeof out->name);
    memcpy(out->pwhash, u.pwhash, sizeof out->pwhash);
    return ERR_OK;
}

static int lmdb_users(db *d, const uint64_t *uids, size_t n, db_user *out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    int rc = ERR_OK;
    for (size_t i = 0; i < n; i++) {
        store_user u;
        int r = store_user_get(txn, uids[i], &u);
        memset(&out[i], 0, sizeof out[i]);
        if (r == ERR_OK) {
            out[i].id = u.id;
            memcpy(out[i].name, u.name, sizeof out[i].name);
            out[i].last_seen = u.last_seen;
        } else if (r != ERR_NOT_FOUND) {
            rc = r;
            break;
        }
    }
    store_abort(txn);
    return rc;
}

static int lmdb_conv(db *d, uint64_t conv, uint64_t viewer, db_conv **out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    int rc = conv_copy(txn, conv, viewer, out);
    store_abort(txn);
    return rc;
}

static int lmdb_members(db *d, uint64_t conv, uint64_t viewer, audience **out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    store_member me;
    db_op op;
    memset(&op, 0, sizeof op);
    op.conv = conv;
    int rc = store_member_get(txn, conv, viewer, &me);
    if (rc == ERR_OK) rc = load_members(txn, &op);
    store_abort(txn);
    if (rc < 0) {
        audience_unref(op.aud);
        return not_found_is(rc, ERR_FORBIDDEN);
    }
    *out = op.aud;
    return ERR_OK;
}

/* A history page being copied: the messages, then their bytes. */
typedef struct page_ctx {
    store_txn *txn;
    name_cache nc;
    db_msg *m;
    size_t n, cap;
    char *bytes;
    size_t len, room;
    size_t budget, spent;
    bool trimmed;
    int err;
} page_ctx;

static int page_one(void *arg, const store_msg *m)
{
    page_ctx *x = arg;
    const char *from = cached_name(&x->nc, x->txn, m->from);
    /* no more than the JSON of the message: the caller trims exactly */
    size_t cost = db_msg_floor(strlen(from), m->cmid_len, m->body_len);
    if (x->n && x->spent + cost > x->budget) { x->trimmed = true; return 1; }
    size_t need = m->cmid_len + m->body_len;
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 16;
        db_msg *v = realloc(x->m, cap * sizeof *v);
        if (!v) { x->err = ERR_NOMEM; return 1; }
        x->m = v;
        x->cap = cap;
    }
    if (x->len + need > x->room) {
        size_t room = x->room ? x->room : 4096;
        while (room < x->len + need) room *= 2;
        char *b = realloc(x->bytes, room);
        if (!b) { x->err = ERR_NOMEM; return 1; }
        x->bytes = b;
        x->room = room;
    }
    msg_copy(&x->m[x->n], m, from, x->bytes + x->len);
    x->m[x->n].cmid = (const char *)(uintptr_t)x->len; /* offsets until the page is made */
    x->len += need;
    x->n++;
    x->spent += cost;
    return 0;
}

static int lmdb_history(db *d, uint64_t conv, uint64_t viewer, uint64_t after, uint64_t before,
                        size_t limit, size_t max_bytes, db_page **out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    store_member me;
    int rc = store_member_get(txn, conv, viewer, &me);
    if (rc < 0) { store_abort(txn); return not_found_is(rc, ERR_FORBIDDEN); }
    page_ctx x;
    memset(&x, 0, sizeof x);
    x.txn = txn;
    x.budget = max_bytes;
    bool more = false, forward = before == 0;
    if (forward)
        rc = store_msgs(txn, conv, after + 1, true, limit, page_one, &x, &more);
    else if (before > 1)
        rc = store_msgs(txn, conv, before == UINT64_MAX ? UINT64_MAX : before - 1, false, limit,
                        page_one, &x, &more);
    store_abort(txn);
    if (rc >= 0 && x.err) rc = x.err;
    db_page *p = rc >= 0 ? malloc(sizeof *p + x.n * sizeof p->msgs[0] + x.len) : NULL;
    if (rc >= 0 && !p) rc = ERR_NOMEM;
    if (p) {
        p->n = x.n;
        p->more = more || x.trimmed;
        char *bytes = (char *)(p->msgs + x.n);
        if (x.len) memcpy(bytes, x.bytes, x.len);
        for (size_t i = 0; i < x.n; i++) {
            db_msg *m = &p->msgs[forward ? i : x.n - 1 - i]; /* ascending */
            *m = x.m[i];
            m->cmid = bytes + (uintptr_t)x.m[i].cmid;
            m->body = m->cmid + m->cmid_len;
        }
        *out = p;
    }
    free(x.m);
    free(x.bytes);
    return rc < 0 ? rc : ERR_OK;
}

typedef struct inbox_item {
    uint64_t conv;
    int64_t last_ts;
} inbox_item;

typedef struct inbox_ctx {
    store_txn *txn;
    const db_inbox_req *q;
    inbox_item *items;
    size_t n, cap;
} inbox_ctx;

/* Inbox order: last_ts descending, then id descending. */
static bool comes_before(int64_t ts_a, uint64_t a, int64_t ts_b, uint64_t b)
{
    return ts_a != ts_b ? ts_a > ts_b : a > b;
}

static int inbox_collect(void *arg, uint64_t conv)
{
    inbox_ctx *x = arg;
    const db_inbox_req *q = x->q;
    store_conv c;
    store_member m;
    if (store_conv_get(x->txn, conv, &c) < 0 || store_member_get(x->txn, conv, q->uid, &m) < 0)
        return 0;
    if (q->since && c.version <= q->since && m.version <= q->since) return 0;
    if (q->page) {
        /* A later page of a walk: what changed since the walk began may
         * have moved in the order (it is listed by changed_since = the
         * walk's cursor); the rest comes after the last one listed. */
        if (c.version > q->snapshot) return 0;
        if (!comes_before(q->ts, q->conv, c.last_ts, conv)) return 0;
    }
    if (x->n == x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 32;
        inbox_item *it = realloc(x->items, cap * sizeof *it);
        if (!it) return ERR_NOMEM;
        x->items = it;
        x->cap = cap;
    }
    x->items[x->n++] = (inbox_item){conv, c.last_ts};
    return 0;
}

static int by_recent(const void *a, const void *b)
{
    const inbox_item *x = a, *y = b;
    if (x->conv == y->conv) return 0;
    return comes_before(x->last_ts, x->conv, y->last_ts, y->conv) ? -1 : 1;
}


static int lmdb_inbox(db *d, const db_inbox_req *q, db_inbox **out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    uint64_t cursor = store_clock(txn);
    if (q->page && (q->snapshot > cursor || q->since > q->snapshot)) {
        store_abort(txn);
        return ERR_INVALID;
    }
    if (q->page) cursor = q->snapshot;
    inbox_ctx x = {txn, q, NULL, 0, 0};
    int rc = store_user_convs(txn, q->uid, inbox_collect, &x);
    db_inbox *in = rc >= 0 ? calloc(1, sizeof *in) : NULL;
    if (rc >= 0 && !in) rc = ERR_NOMEM;
    if (in) {
        in->cursor = cursor;
        if (x.n) qsort(x.items, x.n, sizeof *x.items, by_recent);
        size_t want = x.n < q->limit ? x.n : q->limit, spent = 0, i = 0;
        if (want && !(in->convs = calloc(want, sizeof *in->convs))) rc = ERR_NOMEM;
        for (; rc >= 0 && i < x.n && in->n < want; i++) {
            db_conv *c;
            int r = conv_copy(txn, x.items[i].conv, q->uid, &c);
            if (r == ERR_FORBIDDEN) continue;
            if (r < 0) { rc = r; break; }
            size_t cost = db_conv_floor(c);
            if (in->n && spent + cost > q->max_bytes) { free(c); break; }
            spent += cost;
            in->convs[in->n++] = c;
        }
        in->more = i < x.n;
    }
    store_abort(txn);
    free(x.items);
    if (rc < 0) { db_inbox_free(in); return rc; }
    *out = in;
    return ERR_OK;
}

typedef struct contacts_ctx {
    store_txn *txn;
    uint64_t self;
    u64map seen;
} contacts_ctx;

static int contact_member(void *arg, const store_member *m)
{
    contacts_ctx *x = arg;
    if (m->uid == x->self || u64map_get(&x->seen, m->uid)) return 0;
    return u64map_put(&x->seen, m->uid, (void *)1);
}

static int contact_conv(void *arg, uint64_t conv)
{
    contacts_ctx *x = arg;
    return store_members(x->txn, conv, contact_member, x);
}

static int lmdb_contacts(db *d, uint64_t uid, audience **out)
{
    store_txn *txn;
    if (read_begin(d, &txn) < 0) return ERR_IO;
    contacts_ctx x = {txn, uid, {0}};
    u64map_init(&x.seen);
    int rc = store_user_convs(txn, uid, contact_conv, &x);
    store_abort(txn);
    audience *a = rc >= 0 ? audience_new(x.seen.count) : NULL;
    if (rc >= 0 && !a) rc = ERR_NOMEM;
    if (a) {
        size_t k = 0;
        for (size_t i = 0; i < x.seen.cap; i++)
            if (x.seen.slots[i].key) a->uids[k++] = x.seen.slots[i].key;
        *out = a;
    }
    u64map_free(&x.seen);
    return rc < 0 ? rc : ERR_OK;
}

static bool lmdb_healthy(db *d)
{
    (void)d; /* its own files: a failing disk shows in the answers (disk_full, internal) */
    return true;
}

static void lmdb_counts(db *d, uint64_t *users, uint64_t *convs)
{
    store_counts(st_of(d), users, convs);
}


static void lmdb_settle(db *d, uint64_t conv)
{
    writer *w = ((lmdb_db *)d)->w;
    uint64_t need = conv ? __atomic_load_n(&((lmdb_db *)d)->pending_batch[conv % PENDING_SLOTS],
                                           __ATOMIC_RELAXED)
                         : writer_acked(w);
    if (need && !writer_is_applied(w, need)) writer_wait_applied(w, need, 1000);
}

/* ---- the backend ---------------------------------------------------------------- */

static int lmdb_submit(db *d, db_op *op)
{
    op->wop.apply = apply;
    op->wop.sequence =
        op->kind == OP_SEND || op->kind == OP_CURSOR || op->kind == OP_LAST_SEEN ? sequence : NULL;
    op->wop.size_hint = 64 + op->cmid_len + op->body_len;
    return writer_submit(((lmdb_db *)d)->w, &op->wop);
}

static int lmdb_open(db **out, const db_options *o)
{
    lmdb_db *x = calloc(1, sizeof *x);
    if (!x) return ERR_NOMEM;
    x->base.vfs = &db_lmdb;
    x->opt = *o;
    int rc = store_open(&x->st, o->data_dir, o->map_size);
    if (rc < 0) { free(x); return rc; }
    char log_dir[4096];
    if ((size_t)snprintf(log_dir, sizeof log_dir, "%s/log", o->data_dir) >= sizeof log_dir) {
        store_close(x->st);
        free(x);
        return ERR_TOO_LARGE;
    }
    writer_options wo = {o->commit_window_us, 4096, o->max_queue, log_dir, o->log_segment_bytes,
                         o->apply_delay_ms, NULL, o->commit_delay_us};
    u64map_init(&x->latest_cursor);
    u64map_init(&x->seq_latest);
    if ((rc = writer_start_log(&x->w, x->st, &wo, batch_applied, batch_end, x)) < 0) {
        store_close(x->st);
        free(x);
        return rc;
    }
    *out = &x->base;
    return ERR_OK;
}

static void lmdb_close(db *d)
{
    lmdb_db *x = (lmdb_db *)d;
    writer_stop(x->w);
    store_close(x->st);
    u64map_free(&x->latest_cursor);
    u64map_free(&x->seq_latest);
    free(x);
}

static void lmdb_stats(db *d, writer_stats *st) { writer_get_stats(((lmdb_db *)d)->w, st); }

store *db_lmdb_store(db *d)
{
    return d && d->vfs == &db_lmdb ? ((lmdb_db *)d)->st : NULL;
}

const db_vfs db_lmdb = {
    .name = "lmdb",
    .open = lmdb_open,
    .close = lmdb_close,
    .submit = lmdb_submit,
    .settle = lmdb_settle,
    .stats = lmdb_stats,
    .session = lmdb_session,
    .account = lmdb_account,
    .users = lmdb_users,
    .conv = lmdb_conv,
    .members = lmdb_members,
    .history = lmdb_history,
    .inbox = lmdb_inbox,
    .contacts = lmdb_contacts,
    .healthy = lmdb_healthy,
    .counts = lmdb_counts,
};
