#include "chat/chat.h"

#include <stdlib.h>
#include <string.h>

#include "chat/auth.h"
#include "codec/ws.h"
#include "base/log.h"

/* ---- lifecycle ------------------------------------------------------------ */

static void batch_end(void *ctx)
{
    hub_flush(((chat *)ctx)->hub);
}

int chat_open(chat **out, const config *cfg, server *srv)
{
    chat *ch = calloc(1, sizeof *ch);
    if (!ch) return ERR_NOMEM;
    ch->cfg = cfg;
    ch->srv = srv;
    int rc = guard_new(&ch->guard, cfg);
    if (rc < 0) { free(ch); return rc; }
    if ((rc = hub_new(&ch->hub, srv)) < 0) goto fail_guard;
    /* Every message must fit a quarter of a log segment (writer.h). */
    size_t seg = cfg->log_segment_bytes, need = 4 * (cfg->max_text + 4096);
    if (seg < need) {
        log_warn("--log-segment raised to hold the largest message", "log_segment=%zu max_text=%zu",
                 need, (size_t)cfg->max_text);
        seg = need;
    }
    db_options o = {
        .data_dir = cfg->data_dir, .map_size = cfg->store_map_size,
        .log_segment_bytes = seg, .apply_delay_ms = cfg->apply_delay_ms,
        .commit_window_us = cfg->commit_window_us, .max_queue = cfg->max_writer_queue,
        .max_user_convs = cfg->max_user_convs, .max_group_members = cfg->max_group_members,
        .batch_end = batch_end, .ctx = ch,
    };
    if ((rc = db_lmdb.open(&ch->db, &o)) < 0) goto fail_hub;
    ch->st = db_lmdb_store(ch->db);
    if ((rc = pool_start(&ch->reads, cfg->read_threads, cfg->max_read_queue)) < 0) {
        db_close(ch->db);
        goto fail_hub;
    }
    srv->app = ch;
    *out = ch;
    return ERR_OK;
fail_hub:
    hub_free(ch->hub);
fail_guard:
    guard_free(ch->guard);
    free(ch);
    return rc;
}

void chat_close(chat *ch)
{
    pool_stop(ch->reads); /* its last reads may wait for the writer */
    db_close(ch->db);
    hub_flush(ch->hub); /* nobody left to deliver to: frees the parcels */
    hub_free(ch->hub);
    guard_free(ch->guard);
    free(ch);
}

/* ---- identities ------------------------------------------------------------ */

int chat_user_name(store_txn *txn, uint64_t uid, char *out)
{
    store_user u;
    int rc = store_user_get(txn, uid, &u);
    if (rc < 0) return rc;
    memcpy(out, u.name, sizeof u.name);
    return ERR_OK;
}

int chat_authenticate(chat *ch, const char *token, size_t n, chat_ident *id)
{
    if (auth_token_hash(token, n, id->token_hash) < 0) return ERR_AUTH;
    store_txn *txn;
    if (store_begin(ch->st, false, &txn) < 0) return ERR_IO;
    store_session s;
    int rc = store_session_get(txn, id->token_hash, &s);
    if (rc == ERR_OK && s.expires <= chat_now_ms()) rc = ERR_AUTH;
    if (rc == ERR_OK) rc = chat_user_name(txn, s.uid, id->name);
    store_abort(txn);
    if (rc < 0) return rc == ERR_IO ? ERR_IO : ERR_AUTH;
    id->uid = s.uid;
    id->device = s.device;
    id->expires = s.expires;
    return ERR_OK;
}

/* ---- encoders ------------------------------------------------------------ */

/* A page or a batch names few senders: remember the last few. */
typedef struct name_cache {
    uint64_t uid[8];
    char name[8][STORE_NAME_MAX + 1];
    unsigned next;
} name_cache;

static const char *cached_name(name_cache *nc, store_txn *txn, uint64_t uid)
{
    for (int i = 0; i < 8; i++)
        if (nc->uid[i] == uid) return nc->name[i];
    unsigned k = nc->next++ % 8;
    if (chat_user_name(txn, uid, nc->name[k]) < 0) strcpy(nc->name[k], "");
    nc->uid[k] = uid;
    return nc->name[k];
}

/* "seq":S,"from":"u","cmid":"c","ts":T,"body":B (no braces) */
static void write_msg_fields(jbuf *j, const store_msg *m, const char *from)
{
    jb_lit(j, "\"seq\":");
    jb_u64(j, m->seq);
    jb_lit(j, ",\"from\":");
    jb_cstr(j, from);
    jb_lit(j, ",\"cmid\":");
    jb_str(j, m->cmid, m->cmid_len);
    jb_lit(j, ",\"ts\":");
    jb_i64(j, m->ts);
    jb_lit(j, ",\"body\":");
    jb_raw(j, m->body, m->body_len);
}

typedef struct members_ctx {
    store_txn *txn;
    jbuf *j;
    name_cache *nc;
    bool admins_only;
    int n;
} members_ctx;

static int write_member_name(void *arg, const store_member *m)
{
    members_ctx *x = arg;
    if (x->admins_only && m->role != STORE_ADMIN) return 0;
    if (x->n++) jb_raw(x->j, ",", 1);
    jb_cstr(x->j, cached_name(x->nc, x->txn, m->uid));
    return 0;
}

/* The conversation object; viewer 0 leaves out the per-user fields. */
int chat_write_conv(chat *ch, store_txn *txn, uint64_t id, uint64_t viewer, jbuf *j)
{
    store_conv c;
    store_member me = {0};
    if (store_conv_get(txn, id, &c) < 0) return ERR_FORBIDDEN;
    if (viewer && store_member_get(txn, id, viewer, &me) < 0) return ERR_FORBIDDEN;
    name_cache nc = {{0}, {{0}}, 0};
    jb_lit(j, "{\"id\":");
    jb_u64(j, c.id);
    jb_lit(j, c.type == STORE_DIRECT ? ",\"type\":\"direct\",\"name\":" : ",\"type\":\"group\",\"name\":");
    jb_cstr(j, c.name);
    members_ctx x = {txn, j, &nc, false, 0};
    jb_lit(j, ",\"members\":[");
    store_members(txn, id, write_member_name, &x);
    jb_lit(j, "],\"admins\":[");
    x.admins_only = true;
    x.n = 0;
    store_members(txn, id, write_member_name, &x);
    jb_lit(j, "],\"last_seq\":");
    jb_u64(j, c.last_seq);
    jb_lit(j, ",\"last_ts\":");
    jb_i64(j, c.last_ts);
    if (viewer) {
        jb_lit(j, ",\"read_seq\":");
        jb_u64(j, me.read);
        jb_lit(j, ",\"delivered_seq\":");
        jb_u64(j, me.delivered);
        jb_lit(j, ",\"unread\":");
        jb_u64(j, c.last_seq > me.read ? c.last_seq - me.read : 0);
        jb_lit(j, me.invited ? ",\"invited\":true" : ",\"invited\":false");
    }
    jb_lit(j, ",\"last_message\":");
    store_msg m;
    if (c.last_seq && store_msg_get(txn, id, c.last_seq, &m) == ERR_OK) {
        jb_raw(j, "{", 1);
        write_msg_fields(j, &m, cached_name(&nc, txn, m.from));
        jb_raw(j, "}", 1);
    } else {
        jb_lit(j, "null");
    }
    jb_raw(j, "}", 1);
    return ERR_OK;
}

/* ---- operations: common ------------------------------------------------------ */

chat_op *chat_op_new(chat *ch, enum db_op_kind kind, uint64_t origin,
                     void (*reply)(srv_thread *t, void *op))
{
    chat_op *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->ch = ch;
    op->kind = (uint8_t)kind;
    op->origin = origin;
    op->reply = reply;
    return op;
}

void chat_op_free(chat_op *op)
{
    if (!op) return;
    free(op->body);
    free(op->uids);
    free(op->rcs);
    audience_unref(op->aud);
    free(op);
}

/* Completes op: its reply runs on the origin's thread (which frees it). */
static void finish(chat_op *op)
{
    if (op->origin && op->reply)
        hub_queue_call(op->ch->hub, srv_conn_thread(op->origin), op->reply, op);
    else chat_op_free(op);
}

/* A revoked token: every thread closes the sessions opened with it. */
typedef struct revocation {
    int refs; /* atomic: threads still to run */
    uint64_t uid, token_key;
} revocation;

static void close_revoked(srv_thread *t, void *arg)
{
    revocation *r = arg;
    for (session *s = t ? hub_local(t, r->uid) : NULL, *next; s; s = next) {
        next = s->next_local;
        if (s->token_key == r->token_key) s->sink->close(s, WS_CLOSE_POLICY, "token revoked");
    }
    if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) free(r);
}

static void revoke_everywhere(chat_op *op)
{
    revocation *r = malloc(sizeof *r);
    if (!r) return;
    int n = op->ch->srv->nthreads;
    r->refs = n;
    r->uid = op->who.uid;
    memcpy(&r->token_key, op->who.token_hash, sizeof r->token_key);
    for (int i = 0; i < n; i++) hub_queue_call(op->ch->hub, i, close_revoked, r);
}

/* ---- after the commit ------------------------------------------------------------ */

/* Queues ev (taken over; NULL is a no-op) to the op's audience: the members
 * of op->conv (hub.h, fan-out by conversation), versioned by the
 * sequencer's members_version when it gave the list (else the hub compares
 * the list with the one it cached). */
static void fan_out(chat_op *op, event *ev, uint64_t except)
{
    uint64_t v = op->members_version ? op->members_version : HUB_UNVERSIONED;
    if (ev && op->aud) hub_queue_conv(op->ch->hub, op->conv, v, op->aud, ev, except);
    event_unref(ev);
}

static event *msg_event(const chat_op *op)
{
    jbuf j;
    jb_init(&j, 128 + op->body_len);
    jb_lit(&j, "{\"type\":\"msg\",\"conv\":");
    jb_u64(&j, op->conv);
    jb_raw(&j, ",", 1);
    store_msg m = {op->conv, op->seq, op->who.uid, op->ts, op->cmid, op->cmid_len,
                   op->body, op->body_len};
    write_msg_fields(&j, &m, op->who.name);
    jb_raw(&j, "}", 1);
    return event_new(EV_MSG, op->conv, op->seq, jb_take(&j));
}

static event *receipt_event(const chat_op *op)
{
    jbuf j;
    jb_init(&j, 128);
    jb_lit(&j, "{\"type\":\"receipt\",\"conv\":");
    jb_u64(&j, op->conv);
    jb_lit(&j, ",\"user\":");
    jb_cstr(&j, op->who.name);
    jb_lit(&j, ",\"delivered\":");
    jb_u64(&j, op->delivered);
    jb_lit(&j, ",\"read\":");
    jb_u64(&j, op->read);
    jb_raw(&j, "}", 1);
    return event_new(EV_RECEIPT, op->conv, 0, jb_take(&j));
}

/* {"type":"conv","conv":{...}} to every member, in a read txn of its own
 * (the batch is committed: the new state is visible). */
static void conv_event(chat_op *op)
{
    store_txn *txn;
    if (store_begin(op->ch->st, false, &txn) < 0) return;
    jbuf j;
    jb_init(&j, 512);
    jb_lit(&j, "{\"type\":\"conv\",\"conv\":");
    int rc = chat_write_conv(op->ch, txn, op->conv, 0, &j);
    jb_raw(&j, "}", 1);
    store_abort(txn);
    if (rc < 0) { jb_free(&j); return; }
    fan_out(op, event_new(EV_CONV, op->conv, 0, jb_take(&j)), 0);
}

static void removed_event(chat_op *op)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"removed\",\"conv\":%llu}",
                     (unsigned long long)op->conv);
    event *ev = event_new(EV_REMOVED, op->conv, 0, rbuf_copy(buf, (size_t)n));
    audience *a = audience_new(1);
    if (a && ev) {
        a->uids[0] = op->target;
        hub_queue(op->ch->hub, a, ev, 0);
    }
    audience_unref(a);
    event_unref(ev);
}

event *chat_presence_event(const char *name, bool online, int64_t last_seen)
{
    jbuf j;
    jb_init(&j, 96);
    jb_lit(&j, "{\"type\":\"presence\",\"user\":");
    jb_cstr(&j, name);
    jb_lit(&j, online ? ",\"online\":true,\"last_seen\":" : ",\"online\":false,\"last_seen\":");
    jb_i64(&j, last_seen);
    jb_raw(&j, "}", 1);
    return event_new(EV_PRESENCE, 0, 0, jb_take(&j));
}

/* Members who now share a conversation learn each other's presence on the
 * lossy lane, as a connecting session learns its contacts' (proto.c).
 * Each member's presence is one event, encoded once; a call on every I/O
 * thread, queued after the conv frame, hands each local session of a
 * member the events of the others. */
typedef struct intro {
    int refs;           /* atomic: threads still to run */
    bool one;           /* only the pairs with uids[only] (a member added) */
    uint32_t only;
    uint32_t n;
    uint64_t *uids;     /* n members (points into this allocation) */
    event *ev[];        /* n: uids[i]'s presence, or NULL (not needed, or no memory) */
} intro;

static void intro_free(intro *x)
{
    for (uint32_t i = 0; i < x->n; i++) event_unref(x->ev[i]);
    free(x);
}

static void intro_run(srv_thread *t, void *arg)
{
    intro *x = arg;
    for (uint32_t i = 0; t && i < x->n; i++) {
        bool added = x->one && i == x->only;
        if (x->one && !added && !x->ev[x->only]) continue;
        for (session *s = hub_local(t, x->uids[i]), *next; s; s = next) {
            next = s->next_local;
            if (x->one && !added) { s->sink->send_lossy(s, x->ev[x->only]); continue; }
            for (uint32_t j = 0; j < x->n; j++)
                if (j != i && x->ev[j]) s->sink->send_lossy(s, x->ev[j]);
        }
    }
    if (__atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) == 0) intro_free(x);
}

/* After op's conversation was created (added 0) or `added` joined it. */
static void introduce(chat_op *op, uint64_t added)
{
    audience *a = op->aud;
    if (!a || a->n < 2) return;
    intro *x = calloc(1, sizeof *x + a->n * (sizeof x->ev[0] + sizeof x->uids[0]));
    if (!x) return;
    x->n = a->n;
    x->uids = (uint64_t *)(x->ev + a->n);
    memcpy(x->uids, a->uids, a->n * sizeof a->uids[0]);
    bool any = false, added_on = false;
    for (uint32_t i = 0; i < a->n; i++) {
        bool on = hub_online(op->ch->hub, a->uids[i]);
        any |= on;
        if (added && a->uids[i] == added) { x->one = true; x->only = i; added_on = on; }
    }
    store_txn *txn;
    if (!any || (added && !x->one) || store_begin(op->ch->st, false, &txn) < 0) {
        free(x);
        return;
    }
    int64_t now = chat_now_ms();
    for (uint32_t i = 0; i < a->n; i++) {
        if (x->one && i != x->only && !added_on) continue; /* nobody to tell of them */
        store_user u;
        if (store_user_get(txn, a->uids[i], &u) < 0) continue;
        bool on = hub_online(op->ch->hub, u.id);
        x->ev[i] = chat_presence_event(u.name, on, on ? now : u.last_seen);
    }
    store_abort(txn);
    int n = op->ch->srv->nthreads;
    x->refs = n;
    for (int i = 0; i < n; i++) hub_queue_call(op->ch->hub, i, intro_run, x);
}

/* Each group left: `removed` to the leaver, `conv` to those who stay. */
static void leave_events(chat_op *op)
{
    op->target = op->who.uid;
    for (size_t i = 0; i < op->nuids; i++) {
        if (op->rcs[i] != ERR_OK) continue;
        op->conv = op->uids[i];
        removed_event(op);
        store_txn *txn;
        if (store_begin(op->ch->st, false, &txn) < 0) continue;
        audience_unref(op->aud);
        op->aud = db_lmdb_members(txn, op->conv);
        store_abort(txn);
        if (op->aud && op->aud->n) conv_event(op);
    }
}

static void done(writer_op *wop, int rc)
{
    chat_op *op = (chat_op *)wop;
    op->rc = rc;
    bool ok = rc >= 0;
    switch (op->kind) {
    case OP_SEND:
        if (ok && !op->duplicate) fan_out(op, msg_event(op), op->origin);
        break;
    case OP_CURSOR:
        if (ok && op->changed) fan_out(op, receipt_event(op), 0);
        break;
    case OP_DIRECT:
    case OP_GROUP:
        if (ok && !op->duplicate) {
            conv_event(op);
            introduce(op, 0);
        }
        break;
    case OP_ADD:
        if (ok) {
            conv_event(op);
            introduce(op, op->target);
        }
        break;
    case OP_REMOVE:
        if (ok) {
            removed_event(op);
            if (op->aud && op->aud->n) conv_event(op);
        }
        break;
    case OP_LOGOUT:
        if (ok) revoke_everywhere(op);
        break;
    case OP_LEAVE:
        if (ok) leave_events(op);
        break;
    default:
        break;
    }
    finish(op);
}

/* The log path (writer.h): a send, a cursor move or a last_seen decided
 * by the sequencer's memory of the conversation; SEQ_SLOW sends it down
 * the slow path (apply_send / apply_cursor accept an invitation there). */
int chat_submit(chat_op *op)
{
    if (op->kind == OP_REGISTER || op->kind == OP_LOGIN) {
        /* The new session's token: made here, its hash stored. */
        auth_new_token(op->token, op->new_token_hash);
        op->expires = chat_now_ms() + (int64_t)op->ch->cfg->token_ttl_s * 1000;
    }
    op->wop.done = done;
    return db_submit(op->ch->db, &op->d);
}

void chat_settle(chat *ch, uint64_t conv)
{
    db_settle(ch->db, conv);
}

/* ---- reads ---------------------------------------------------------------------- */
int chat_is_member(chat *ch, uint64_t conv, uint64_t uid)
{
    store_txn *txn;
    if (store_begin(ch->st, false, &txn) < 0) return ERR_IO;
    store_member m;
    int rc = store_member_get(txn, conv, uid, &m);
    store_abort(txn);
    return rc == ERR_OK ? ERR_OK : rc == ERR_NOT_FOUND ? ERR_FORBIDDEN : rc;
}

typedef struct inbox_item {
    uint64_t conv;
    int64_t last_ts;
} inbox_item;

typedef struct inbox_ctx {
    store_txn *txn;
    uint64_t uid, since;
    const msg_page *page;
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
    store_conv c;
    store_member m;
    if (store_conv_get(x->txn, conv, &c) < 0 || store_member_get(x->txn, conv, x->uid, &m) < 0)
        return 0;
    if (x->since && c.version <= x->since && m.version <= x->since) return 0;
    if (x->page) {
        /* A later page of a walk: what changed since the walk began may
         * have moved in the order (it is listed by changed_since = the
         * walk's cursor); the rest comes after the last one listed. */
        if (c.version > x->page->snapshot) return 0;
        if (!comes_before(x->page->ts, x->page->conv, c.last_ts, conv)) return 0;
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

int chat_write_inbox(chat *ch, uint64_t uid, uint64_t since, const msg_page *page,
                     size_t limit, size_t max_bytes, jbuf *j)
{
    if (limit == 0) limit = MSG_INBOX_LIMIT_DEFAULT;
    if (limit > MSG_INBOX_LIMIT_MAX) limit = MSG_INBOX_LIMIT_MAX;
    chat_settle(ch, 0);
    store_txn *txn;
    if (store_begin(ch->st, false, &txn) < 0) return ERR_IO;
    uint64_t cursor = store_clock(txn);
    if (page) {
        if (page->snapshot > cursor || page->since > page->snapshot) {
            store_abort(txn);
            return ERR_INVALID;
        }
        since = page->since;
        cursor = page->snapshot;
    }
    inbox_ctx x = {txn, uid, since, page, NULL, 0, 0};
    int rc = store_user_convs(txn, uid, inbox_collect, &x);
    if (rc >= 0) {
        if (x.n) qsort(x.items, x.n, sizeof *x.items, by_recent);
        jb_lit(j, "{\"conversations\":[");
        size_t start = jb_len(j), listed = 0;
        inbox_item last = {0, 0};
        bool more = false;
        for (size_t i = 0; i < x.n; i++) {
            if (listed == limit) { more = true; break; }
            size_t mark = jb_len(j);
            if (listed) jb_raw(j, ",", 1);
            if (chat_write_conv(ch, txn, x.items[i].conv, uid, j) < 0) {
                jb_truncate(j, mark);
                continue;
            }
            if (listed && jb_len(j) - start > max_bytes) { /* over the budget: stop before it */
                jb_truncate(j, mark);
                more = true;
                break;
            }
            last = x.items[i];
            listed++;
        }
        jb_lit(j, "],\"cursor\":");
        jb_u64(j, cursor);
        jb_lit(j, more ? ",\"more\":true" : ",\"more\":false");
        if (more) {
            msg_page next = {since, cursor, last.last_ts, last.conv};
            char tok[MSG_PAGE_MAX];
            size_t n = msg_page_format(&next, tok);
            jb_lit(j, ",\"next\":");
            jb_str(j, tok, n);
        }
        jb_raw(j, "}", 1);
    }
    store_abort(txn);
    free(x.items);
    return rc < 0 ? rc : j->err ? j->err : ERR_OK;
}

typedef struct history_ctx {
    store_txn *txn;
    jbuf *j;
    name_cache nc;
    size_t n;
    size_t start, max_bytes;  /* where the messages begin; the budget */
    bool trimmed;             /* stopped by the budget */
} history_ctx;

/* Forward: write each message as it comes, until the budget is passed. */
static int history_one(void *arg, const store_msg *m)
{
    history_ctx *x = arg;
    size_t mark = jb_len(x->j);
    if (x->n) jb_raw(x->j, ",", 1);
    jb_raw(x->j, "{", 1);
    write_msg_fields(x->j, m, cached_name(&x->nc, x->txn, m->from));
    jb_raw(x->j, "}", 1);
    if (x->n && jb_len(x->j) - x->start > x->max_bytes) {
        jb_truncate(x->j, mark);
        x->trimmed = true;
        return 1;
    }
    x->n++;
    return 0;
}

/* Backward: the messages arrive newest first; each is encoded into a
 * scratch buffer (its offset kept) until the budget is passed, then they
 * are copied out oldest first. */
typedef struct back_ctx {
    store_txn *txn;
    jbuf tmp;
    name_cache nc;
    size_t *off;
    size_t n, max_bytes;
    bool trimmed;
} back_ctx;

static int back_one(void *arg, const store_msg *m)
{
    back_ctx *x = arg;
    size_t mark = jb_len(&x->tmp);
    jb_raw(&x->tmp, "{", 1);
    write_msg_fields(&x->tmp, m, cached_name(&x->nc, x->txn, m->from));
    jb_raw(&x->tmp, "}", 1);
    if (x->n && jb_len(&x->tmp) + x->n > x->max_bytes) { /* + the commas */
        jb_truncate(&x->tmp, mark);
        x->trimmed = true;
        return 1;
    }
    x->off[x->n++] = mark;
    return 0;
}

int chat_write_history(chat *ch, store_txn *txn, uint64_t conv, uint64_t after,
                       uint64_t before, size_t limit, size_t max_bytes, jbuf *j)
{
    if (limit == 0) limit = 50;
    if (limit > MSG_LIMIT_MAX) limit = MSG_LIMIT_MAX;
    bool more = false;
    int rc;
    jb_lit(j, "\"messages\":[");
    if (before == 0) {
        history_ctx x = {txn, j, {{0}, {{0}}, 0}, 0, jb_len(j), max_bytes, false};
        rc = store_msgs(txn, conv, after + 1, true, limit, history_one, &x, &more);
        more = more || x.trimmed;
    } else {
        back_ctx x = {txn, {0}, {{0}, {{0}}, 0}, malloc(limit * sizeof(size_t)), 0, max_bytes,
                      false};
        jb_init(&x.tmp, 4096);
        if (!x.off || x.tmp.err) { free(x.off); jb_free(&x.tmp); return ERR_NOMEM; }
        rc = before <= 1 ? ERR_OK
                         : store_msgs(txn, conv, before == UINT64_MAX ? UINT64_MAX : before - 1,
                                      false, limit, back_one, &x, &more);
        more = more || x.trimmed;
        size_t len;
        const char *d = jb_data(&x.tmp, &len);
        if (!d) rc = ERR_NOMEM;
        for (size_t i = x.n; rc >= 0 && i-- > 0;) {
            size_t end = i + 1 < x.n ? x.off[i + 1] : len;
            if (i + 1 < x.n) jb_raw(j, ",", 1);
            jb_raw(j, d + x.off[i], end - x.off[i]);
        }
        free(x.off);
        jb_free(&x.tmp);
    }
    jb_lit(j, more ? "],\"more\":true" : "],\"more\":false");
    return rc < 0 ? rc : j->err ? j->err : ERR_OK;
}

typedef struct receipts_ctx {
    store_txn *txn;
    jbuf *j;
    name_cache nc;
    uint64_t seq, from;
    uint64_t delivered, read;
    int n;
} receipts_ctx;

static int receipt_one(void *arg, const store_member *m)
{
    receipts_ctx *x = arg;
    if (x->n++) jb_raw(x->j, ",", 1);
    jb_lit(x->j, "{\"user\":");
    jb_cstr(x->j, cached_name(&x->nc, x->txn, m->uid));
    jb_lit(x->j, ",\"delivered\":");
    jb_u64(x->j, m->delivered);
    jb_lit(x->j, ",\"read\":");
    jb_u64(x->j, m->read);
    jb_raw(x->j, "}", 1);
    if (x->seq && m->uid != x->from) {
        x->delivered += m->delivered >= x->seq;
        x->read += m->read >= x->seq;
    }
    return 0;
}

int chat_write_receipts(chat *ch, uint64_t conv, uint64_t uid, uint64_t seq, jbuf *j)
{
    chat_settle(ch, conv);
    store_txn *txn;
    if (store_begin(ch->st, false, &txn) < 0) return ERR_IO;
    store_member me;
    int rc = store_member_get(txn, conv, uid, &me) == ERR_OK ? ERR_OK : ERR_FORBIDDEN;
    receipts_ctx x = {txn, j, {{0}, {{0}}, 0}, seq, 0, 0, 0, 0};
    store_msg m;
    if (rc == ERR_OK && seq) {
        if (store_msg_get(txn, conv, seq, &m) == ERR_OK) x.from = m.from;
        else rc = ERR_INVALID; /* beyond last_seq */
    }
    if (rc == ERR_OK) {
        jb_lit(j, "{\"members\":[");
        store_members(txn, conv, receipt_one, &x);
        jb_raw(j, "]", 1);
        if (seq) {
            jb_lit(j, ",\"seq\":");
            jb_u64(j, seq);
            jb_lit(j, ",\"delivered\":");
            jb_u64(j, x.delivered);
            jb_lit(j, ",\"read\":");
            jb_u64(j, x.read);
        }
        jb_raw(j, "}", 1);
    }
    store_abort(txn);
    return rc;
}

typedef struct contacts_ctx {
    store_txn *txn;
    uint64_t self;
    u64map seen;
    audience *a;
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

audience *chat_contacts(chat *ch, uint64_t uid)
{
    store_txn *txn;
    if (store_begin(ch->st, false, &txn) < 0) return NULL;
    contacts_ctx x = {txn, uid, {0}, NULL};
    u64map_init(&x.seen);
    int rc = store_user_convs(txn, uid, contact_conv, &x);
    store_abort(txn);
    audience *a = rc >= 0 ? audience_new(x.seen.count) : NULL;
    if (a) {
        size_t k = 0;
        for (size_t i = 0; i < x.seen.cap; i++)
            if (x.seen.slots[i].key) a->uids[k++] = x.seen.slots[i].key;
    }
    u64map_free(&x.seen);
    return a;
}
