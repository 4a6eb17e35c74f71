#include "chat/chat.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "chat/auth.h"
#include "codec/ws.h"
#include "base/log.h"

/* ---- lifecycle ------------------------------------------------------------ */

static void intros_submit(chat *ch);
static void intros_drop(chat *ch);

static void batch_end(void *ctx)
{
    hub_flush(((chat *)ctx)->hub);
    intros_submit(ctx); /* after the conv frames they follow */
}

static int bus_open(chat *ch);

int chat_open(chat **out, const config *cfg, server *srv)
{
    chat *ch = calloc(1, sizeof *ch);
    if (!ch) return ERR_NOMEM;
    ch->cfg = cfg;
    ch->srv = srv;
    uv_mutex_init(&ch->presence_mu);
    int rc = guard_new(&ch->guard, cfg);
    if (rc < 0) { uv_mutex_destroy(&ch->presence_mu); free(ch); return rc; }
    if ((rc = hub_new(&ch->hub, srv)) < 0) goto fail_guard;
    /* Every message must fit a quarter of a log segment (writer.h). */
    size_t seg = cfg->log_segment_bytes, need = 4 * (cfg->max_text + 4096);
    if (seg < need) {
        log_warn("--log-segment raised to hold the largest message", "log_segment=%zu max_text=%zu",
                 need, (size_t)cfg->max_text);
        seg = need;
    }
    const db_vfs *vfs = db_for_url(cfg->store_url);
    if (!vfs) { rc = ERR_INVALID; goto fail_hub; }
    db_options o = {
        .url = cfg->store_url,
        .data_dir = cfg->data_dir, .map_size = cfg->store_map_size,
        .log_segment_bytes = seg, .apply_delay_ms = cfg->apply_delay_ms,
        .commit_window_us = cfg->commit_window_us, .commit_delay_us = cfg->commit_delay_us,
        .max_queue = cfg->max_writer_queue,
        .max_user_convs = cfg->max_user_convs, .max_group_members = cfg->max_group_members,
        .batch_end = batch_end, .ctx = ch,
    };
    if ((rc = vfs->open(&ch->db, &o)) < 0) goto fail_hub;
    if ((rc = pool_start(&ch->reads, cfg->read_threads, cfg->max_read_queue)) < 0) {
        db_close(ch->db);
        goto fail_hub;
    }
    if ((rc = bus_open(ch)) < 0) {
        pool_stop(ch->reads);
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
    uv_mutex_destroy(&ch->presence_mu);
    free(ch);
    return rc;
}

void chat_leave(chat *ch)
{
    if (ch->bus) bus_leave(ch->bus);
}

void chat_close(chat *ch)
{
    /* The bus runs until after the writer (its completer publishes): its
     * presence callbacks stop queueing on the read pool before it stops. */
    uv_mutex_lock(&ch->presence_mu);
    ch->presence_closed = true;
    uv_mutex_unlock(&ch->presence_mu);
    pool_stop(ch->reads); /* its last reads may wait for the writer */
    db_close(ch->db);
    intros_drop(ch);
    bus_stop(ch->bus); /* after the writer: its completer publishes */
    hub_flush(ch->hub); /* nobody left to deliver to: frees the parcels */
    hub_free(ch->hub);
    guard_free(ch->guard);
    uv_mutex_destroy(&ch->presence_mu);
    free(ch);
}

/* ---- identities ------------------------------------------------------------ */

int chat_authenticate(chat *ch, const char *token, size_t n, chat_ident *id)
{
    if (auth_token_hash(token, n, id->token_hash) < 0) return ERR_AUTH;
    db_ident who;
    int rc = db_session(ch->db, id->token_hash, &who);
    if (rc == ERR_OK && who.expires <= chat_now_ms()) rc = ERR_AUTH;
    if (rc < 0) return rc == ERR_IO || rc == ERR_UNAVAILABLE ? rc : ERR_AUTH;
    id->uid = who.uid;
    id->device = who.device;
    id->expires = who.expires;
    memcpy(id->name, who.name, sizeof id->name);
    return ERR_OK;
}

/* ---- encoders ------------------------------------------------------------ */

/* "seq":S,"from":"u","cmid":"c","ts":T,"body":B (no braces) */
static void write_msg_fields(jbuf *j, const db_msg *m)
{
    jb_lit(j, "\"seq\":");
    jb_u64(j, m->seq);
    jb_lit(j, ",\"from\":");
    jb_cstr(j, m->from_name);
    jb_lit(j, ",\"cmid\":");
    jb_str(j, m->cmid, m->cmid_len);
    jb_lit(j, ",\"ts\":");
    jb_i64(j, m->ts);
    jb_lit(j, ",\"body\":");
    jb_raw(j, m->body, m->body_len);
}

static void write_names(jbuf *j, const db_conv *c, bool admins_only)
{
    int n = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (admins_only && c->members[i].role != DB_ADMIN) continue;
        if (n++) jb_raw(j, ",", 1);
        jb_cstr(j, c->members[i].name);
    }
}

/* The conversation object; the per-user fields when c has a viewer. */
static void write_conv(jbuf *j, const db_conv *c)
{
    jb_lit(j, "{\"id\":");
    jb_u64(j, c->id);
    jb_lit(j, c->type == DB_DIRECT ? ",\"type\":\"direct\",\"name\":" : ",\"type\":\"group\",\"name\":");
    jb_cstr(j, c->name);
    jb_lit(j, ",\"members\":[");
    write_names(j, c, false);
    jb_lit(j, "],\"admins\":[");
    write_names(j, c, true);
    jb_lit(j, "],\"last_seq\":");
    jb_u64(j, c->last_seq);
    jb_lit(j, ",\"last_ts\":");
    jb_i64(j, c->last_ts);
    const db_member *me = c->me;
    if (me) {
        jb_lit(j, ",\"read_seq\":");
        jb_u64(j, me->read);
        jb_lit(j, ",\"delivered_seq\":");
        jb_u64(j, me->delivered);
        jb_lit(j, ",\"unread\":");
        jb_u64(j, c->last_seq > me->read ? c->last_seq - me->read : 0);
        jb_lit(j, me->invited ? ",\"invited\":true" : ",\"invited\":false");
    }
    jb_lit(j, ",\"last_message\":");
    if (c->last.seq) {
        jb_raw(j, "{", 1);
        write_msg_fields(j, &c->last);
        jb_raw(j, "}", 1);
    } else {
        jb_lit(j, "null");
    }
    jb_raw(j, "}", 1);
}

int chat_write_conv(chat *ch, uint64_t id, uint64_t viewer, jbuf *j)
{
    db_conv *c;
    int rc = db_conv_get(ch->db, id, viewer, &c);
    if (rc < 0) return rc;
    write_conv(j, c);
    free(c);
    return j->err ? j->err : ERR_OK;
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
    if (op->left)
        for (size_t i = 0; i < op->nuids; i++) free(op->left[i]);
    free(op->left);
    free(op->after);
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
    uint64_t key;
    memcpy(&key, op->who.token_hash, sizeof key);
    if (op->ch->bus) bus_revoke(op->ch->bus, op->who.uid, key);
    revocation *r = malloc(sizeof *r);
    if (!r) return;
    int n = op->ch->srv->nthreads;
    r->refs = n;
    r->uid = op->who.uid;
    r->token_key = key;
    for (int i = 0; i < n; i++) hub_queue_call(op->ch->hub, i, close_revoked, r);
}

/* A revocation from another node: posted to every thread now. */
static void revoke_here(chat *ch, uint64_t uid, uint64_t key)
{
    revocation *r = malloc(sizeof *r);
    if (!r) return;
    int n = ch->srv->nthreads;
    r->refs = n;
    r->uid = uid;
    r->token_key = key;
    for (int i = 0; i < n; i++)
        if (srv_post(&ch->srv->threads[i], close_revoked, r) < 0) close_revoked(NULL, r);
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
    db_msg m = {.seq = op->seq, .from = op->who.uid, .ts = op->ts, .cmid = op->cmid,
                .cmid_len = op->cmid_len, .body = op->body, .body_len = op->body_len};
    memcpy(m.from_name, op->who.name, sizeof m.from_name);
    write_msg_fields(&j, &m);
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

/* {"type":"conv","conv":{...}} to every member, from the conversation
 * after the op (the backend's copy: the completer reads no store). */
static void conv_event(chat_op *op, const db_conv *c)
{
    if (!c || !c->n) return;
    jbuf j;
    jb_init(&j, 512);
    jb_lit(&j, "{\"type\":\"conv\",\"conv\":");
    write_conv(&j, c);
    jb_raw(&j, "}", 1);
    if (j.err) { jb_free(&j); return; }
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

/* With --bus: the members are on any node, and so is who is online. The
 * introduction is a read-pool job, submitted after the completer flushed
 * the conv frames it follows (here, and on the bus, which keeps one
 * node's order): the roster says who is online, and each presence goes to
 * the members online through hub_send_lossy (here and over the bus). */
typedef struct intro_job {
    pool_job job;            /* first */
    struct intro_job *next;  /* chat.intros */
    chat *ch;
    uint64_t added;          /* 0: every pair of members */
    uint32_t n;
    db_member *m;            /* n: uid, name, last_seen (points into this allocation) */
} intro_job;

static void intro_job_run(pool_job *j)
{
    intro_job *x = (intro_job *)j;
    chat *ch = x->ch;
    uint64_t *uids = calloc(x->n, sizeof *uids);
    bool *on = calloc(x->n, sizeof *on);
    audience *online = audience_new(x->n);
    if (!uids || !on || !online) goto out;
    for (uint32_t i = 0; i < x->n; i++) uids[i] = x->m[i].uid;
    if (bus_online(ch->bus, uids, x->n, on) < 0) memset(on, 0, x->n * sizeof *on);
    uint32_t k = 0;
    int added_at = -1;
    for (uint32_t i = 0; i < x->n; i++) {
        on[i] = on[i] || hub_online(ch->hub, uids[i]);
        if (on[i]) online->uids[k++] = uids[i];
        if (x->added && uids[i] == x->added) added_at = (int)i;
    }
    online->n = k;
    int64_t now = chat_now_ms();
    for (uint32_t i = 0; i < x->n && k; i++) {
        if (!x->m[i].name[0]) continue; /* no such user */
        audience *to;
        if (x->added && (int)i != added_at) { /* a member, to the one added */
            if (added_at < 0 || !on[added_at]) continue;
            to = audience_new(1);
            if (to) to->uids[0] = x->added;
        } else {                              /* to every other member online */
            to = audience_new(k);
            uint32_t t = 0;
            for (uint32_t q = 0; to && q < k; q++)
                if (online->uids[q] != uids[i]) to->uids[t++] = online->uids[q];
            if (to) to->n = t;
        }
        event *ev = to && to->n ? chat_presence_event(x->m[i].name, on[i],
                                                      on[i] ? now : x->m[i].last_seen) : NULL;
        if (ev) hub_send_lossy(ch->hub, to, ev, 0);
        event_unref(ev);
        audience_unref(to);
    }
out:
    audience_unref(online);
    free(on);
    free(uids);
}

static void intro_job_done(srv_thread *t, void *arg)
{
    free(arg); /* t is NULL: run on the pool */
}

static void intros_submit(chat *ch)
{
    intro_job *x = ch->intros;
    ch->intros = NULL;
    while (x) {
        intro_job *next = x->next;
        uv_mutex_lock(&ch->presence_mu);
        if (ch->presence_closed || pool_continue(ch->reads, &x->job) < 0) free(x);
        uv_mutex_unlock(&ch->presence_mu);
        x = next;
    }
}

/* Introductions never submitted (the writer ended without a last batch_end). */
static void intros_drop(chat *ch)
{
    for (intro_job *x = ch->intros, *next; x; x = next) {
        next = x->next;
        free(x);
    }
    ch->intros = NULL;
}

static void introduce_cluster(chat_op *op, uint64_t added)
{
    const db_conv *c = op->after;
    intro_job *x = calloc(1, sizeof *x + c->n * sizeof x->m[0]);
    if (!x) return; /* lossy */
    x->job.run = intro_job_run;
    x->job.done = intro_job_done;
    x->ch = op->ch;
    x->added = added;
    x->n = c->n;
    x->m = (db_member *)(x + 1);
    memcpy(x->m, c->members, c->n * sizeof x->m[0]);
    x->next = op->ch->intros;
    op->ch->intros = x;
}

/* After op's conversation was created (added 0) or `added` joined it:
 * the names and last_seen come with the conversation (op->after). */
static void introduce(chat_op *op, uint64_t added)
{
    const db_conv *c = op->after;
    if (!c || c->n < 2) return;
    if (op->ch->bus) {
        introduce_cluster(op, added);
        return;
    }
    /* one allocation: the events, the uids, then who is online (scratch) */
    intro *x = calloc(1, sizeof *x + c->n * (sizeof x->ev[0] + sizeof x->uids[0] + sizeof(bool)));
    if (!x) return;
    x->n = c->n;
    x->uids = (uint64_t *)(x->ev + c->n);
    bool *on = (bool *)(x->uids + c->n);
    bool any = false, added_on = false;
    for (uint32_t i = 0; i < c->n; i++) {
        x->uids[i] = c->members[i].uid;
        on[i] = hub_online(op->ch->hub, x->uids[i]);
        any |= on[i];
        if (added && x->uids[i] == added) { x->one = true; x->only = i; added_on = on[i]; }
    }
    if (!any || (added && !x->one)) {
        free(x);
        return;
    }
    int64_t now = chat_now_ms();
    for (uint32_t i = 0; i < c->n; i++) {
        if (x->one && i != x->only && !added_on) continue; /* nobody to tell of them */
        if (!c->members[i].name[0]) continue;              /* no such user */
        x->ev[i] = chat_presence_event(c->members[i].name, on[i], on[i] ? now : c->members[i].last_seen);
    }
    int n = op->ch->srv->nthreads;
    x->refs = n;
    for (int i = 0; i < n; i++) hub_queue_call(op->ch->hub, i, intro_run, x);
}

/* The members of c as an audience (one ref), or NULL. */
static audience *audience_of(const db_conv *c)
{
    audience *a = audience_new(c->n);
    for (uint32_t i = 0; a && i < c->n; i++) a->uids[i] = c->members[i].uid;
    return a;
}

/* Each group left: `removed` to the leaver, `conv` to those who stay. */
static void leave_events(chat_op *op)
{
    op->target = op->who.uid;
    for (size_t i = 0; i < op->nuids; i++) {
        if (op->rcs[i] != ERR_OK) continue;
        op->conv = op->uids[i];
        removed_event(op);
        const db_conv *c = op->left ? op->left[i] : NULL;
        if (!c) continue;
        audience_unref(op->aud);
        op->aud = audience_of(c);
        op->members_version = 0;
        conv_event(op, c);
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
            conv_event(op, op->after);
            introduce(op, 0);
        }
        break;
    case OP_ADD:
        if (ok) {
            conv_event(op, op->after);
            introduce(op, op->target);
        }
        break;
    case OP_REMOVE:
        if (ok) {
            removed_event(op);
            conv_event(op, op->after);
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

int chat_user_msg(chat *ch, uint64_t uid, uint32_t *retry_ms)
{
    int rc = guard_user_msg(ch->guard, uid, guard_now(), retry_ms);
    if (rc < 0 || !ch->bus) return rc;
    if (bus_user_blocked(ch->bus, uid, retry_ms)) return ERR_RATE;
    bus_user_sent(ch->bus, uid);
    return ERR_OK;
}

void chat_settle(chat *ch, uint64_t conv)
{
    db_settle(ch->db, conv);
}

/* ---- the bus (chat/bus.h) ------------------------------------------------------- */

/* A user's first read after their session opened waits this long at most
 * for their channel (bus.h: nothing committed after the read is missed). */
#define CHAT_BUS_WAIT_MS 1000

static void bus_out(void *ctx, audience *to, event *ev)
{
    bus_publish(((chat *)ctx)->bus, to, ev);
}

/* What another node sent one of our users: delivered here as it came
 * (the JSON the clients get), once it is a JSON object. */
static int bus_in(void *ctx, uint64_t uid, const busmsg *m)
{
    chat *ch = ctx;
    if (m->kind == BUSMSG_REVOKE) {
        revoke_here(ch, uid, m->arg);
        return ERR_OK;
    }
    static const uint8_t kinds[BUSMSG_KIND_COUNT] = {
        [BUSMSG_MSG] = EV_MSG,           [BUSMSG_RECEIPT] = EV_RECEIPT, [BUSMSG_CONV] = EV_CONV,
        [BUSMSG_REMOVED] = EV_REMOVED,   [BUSMSG_PRESENCE] = EV_PRESENCE,
        [BUSMSG_TYPING] = EV_TYPING,
    };
    uint8_t type;
    if (m->kind >= BUSMSG_KIND_COUNT || !kinds[m->kind] || !m->payload_len ||
        m->payload[0] != '{' || json_validate(m->payload, m->payload_len, &type) != ERR_OK)
        return ERR_INVALID;
    event *ev = event_new(kinds[m->kind], m->conv, m->seq, rbuf_copy(m->payload, m->payload_len));
    audience *a = audience_new(1);
    if (ev && a) {
        a->uids[0] = uid;
        hub_send_here(ch->hub, a, ev, m->kind == BUSMSG_PRESENCE || m->kind == BUSMSG_TYPING);
    }
    audience_unref(a);
    event_unref(ev);
    return ERR_OK;
}

static void bus_resync(void *ctx, audience *uids)
{
    chat *ch = ctx;
    static const char frame[] = "{\"type\":\"resync\",\"reason\":\"bus\"}";
    event *ev = event_new(EV_RESYNC, 0, 0, rbuf_copy(frame, sizeof frame - 1));
    if (ev) hub_send_here(ch->hub, uids, ev, false);
    event_unref(ev);
}

static int bus_sessions(void *ctx, uint64_t uid)
{
    return hub_sessions(((chat *)ctx)->hub, uid);
}

/* A user came online in the cluster or went offline (bus.h): their
 * contacts, wherever they are, are told on the read pool. Jobs of one
 * user may run out of order, so each tells the state it finds. */
typedef struct presence_job {
    pool_job job;            /* first */
    chat *ch;
    uint64_t uid;
    bool online;             /* what the roster said */
} presence_job;

static bool online_now(chat *ch, uint64_t uid, bool guess)
{
    bool any;
    if (hub_online(ch->hub, uid)) return true;
    return bus_online(ch->bus, &uid, 1, &any) == ERR_OK ? any : guess;
}

static void presence_run(pool_job *j)
{
    presence_job *p = (presence_job *)j;
    chat *ch = p->ch;
    db_user u = {0};
    if (db_users(ch->db, &p->uid, 1, &u) < 0 || !u.id) return;
    audience *to = chat_contacts(ch, p->uid);
    if (!to || !to->n) { audience_unref(to); return; }
    /* Read last, and again once told: a job of the other state that ran
     * meanwhile may have been sent after this one. */
    bool on = online_now(ch, p->uid, p->online);
    for (int round = 0; round < 2; round++) {
        event *ev = chat_presence_event(u.name, on, chat_now_ms());
        if (ev) hub_send_lossy(ch->hub, to, ev, 0);
        event_unref(ev);
        bool again = online_now(ch, p->uid, on);
        if (again == on) break;
        on = again;
    }
    audience_unref(to);
}

static void presence_done(srv_thread *t, void *arg)
{
    free(arg); /* t is NULL: run on the pool */
}

static void bus_presence(void *ctx, uint64_t uid, bool online)
{
    chat *ch = ctx;
    presence_job *p = calloc(1, sizeof *p);
    if (!p) return; /* lossy */
    p->job.run = presence_run;
    p->job.done = presence_done;
    p->ch = ch;
    p->uid = uid;
    p->online = online;
    uv_mutex_lock(&ch->presence_mu);
    if (ch->presence_closed || pool_continue(ch->reads, &p->job) < 0) free(p);
    uv_mutex_unlock(&ch->presence_mu);
}

static const bus_ops chat_bus_ops = {bus_in, bus_resync, bus_sessions, bus_presence};

/* --node-id, or the host name (what the rule allows of it) and 6 random
 * hex digits: unique per process, which is what the bus needs (a node
 * skips the messages with its own id). */
static void make_node_id(chat *ch)
{
    if (ch->cfg->node_id[0]) {
        snprintf(ch->node, sizeof ch->node, "%s", ch->cfg->node_id);
        return;
    }
    char host[256] = "node";
    if (gethostname(host, sizeof host - 1) < 0) strcpy(host, "node");
    host[40] = 0;
    for (char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            *p = '-';
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r = (uint32_t)chat_now_ms() ^ (uint32_t)getpid();
    snprintf(ch->node, sizeof ch->node, "%.40s-%06x", host[0] ? host : "node", (unsigned)(r & 0xffffff));
}

static int bus_open(chat *ch)
{
    make_node_id(ch);
    if (!ch->cfg->bus_url[0]) return ERR_OK;
    bus_options o = {.url = ch->cfg->bus_url, .node = ch->node, .ops = &chat_bus_ops, .ctx = ch,
                     .node_ttl_ms = ch->cfg->node_ttl_ms, .silent_ms = ch->cfg->bus_timeout_ms,
                     .user_msgs_per_s = ch->cfg->rate_user_msgs,
                     .revoke_ttl_ms = (uint64_t)ch->cfg->token_ttl_s * 1000u,
                     .login_burst = GUARD_ACCOUNT_BURST, .login_per_min = GUARD_ACCOUNT_PER_MIN};
    /* Before the bus thread starts: its presence jobs publish at once. */
    hub_set_remote(ch->hub, bus_out, ch);
    int rc = bus_start(&ch->bus, &o);
    if (rc < 0) {
        hub_set_remote(ch->hub, NULL, NULL);
        log_error("cannot start the bus", "bus=%s node=%s err=%s", ch->cfg->bus_url, ch->node,
                  err_name(rc));
        return rc;
    }
    return ERR_OK;
}

/* ---- reads ---------------------------------------------------------------------- */
int chat_is_member(chat *ch, uint64_t conv, uint64_t uid)
{
    audience *a = NULL;
    int rc = db_members(ch->db, conv, uid, &a);
    audience_unref(a);
    return rc;
}

int chat_write_inbox(chat *ch, uint64_t uid, uint64_t since, const msg_page *page,
                     size_t limit, size_t max_bytes, jbuf *j)
{
    if (limit == 0) limit = MSG_INBOX_LIMIT_DEFAULT;
    if (limit > MSG_INBOX_LIMIT_MAX) limit = MSG_INBOX_LIMIT_MAX;
    if (ch->bus) bus_wait(ch->bus, uid, CHAT_BUS_WAIT_MS);
    chat_settle(ch, 0);
    db_inbox_req q = {.uid = uid, .since = since, .limit = limit, .max_bytes = max_bytes};
    if (page) {
        q.page = true;
        q.since = since = page->since;
        q.snapshot = page->snapshot;
        q.ts = page->ts;
        q.conv = page->conv;
    }
    db_inbox *in;
    int rc = db_inbox_get(ch->db, &q, &in);
    if (rc < 0) return rc;
    jb_lit(j, "{\"conversations\":[");
    size_t start = jb_len(j), listed = 0;
    const db_conv *last = NULL;
    bool more = in->more;
    for (size_t i = 0; i < in->n; i++) {
        size_t mark = jb_len(j);
        if (listed) jb_raw(j, ",", 1);
        write_conv(j, in->convs[i]);
        if (listed && jb_len(j) - start > max_bytes) { /* over the budget: stop before it */
            jb_truncate(j, mark);
            more = true;
            break;
        }
        last = in->convs[i];
        listed++;
    }
    jb_lit(j, "],\"cursor\":");
    jb_u64(j, in->cursor);
    jb_lit(j, more ? ",\"more\":true" : ",\"more\":false");
    if (more && last) {
        msg_page next = {since, in->cursor, last->last_ts, last->id};
        char tok[MSG_PAGE_MAX];
        size_t n = msg_page_format(&next, tok);
        jb_lit(j, ",\"next\":");
        jb_str(j, tok, n);
    }
    jb_raw(j, "}", 1);
    db_inbox_free(in);
    return j->err ? j->err : ERR_OK;
}

int chat_write_history(chat *ch, uint64_t conv, uint64_t uid, uint64_t after, uint64_t before,
                       size_t limit, size_t max_bytes, jbuf *j)
{
    if (limit == 0) limit = 50;
    if (limit > MSG_LIMIT_MAX) limit = MSG_LIMIT_MAX;
    if (ch->bus) bus_wait(ch->bus, uid, CHAT_BUS_WAIT_MS);
    db_page *p;
    int rc = db_history(ch->db, conv, uid, after, before, limit, max_bytes, &p);
    if (rc < 0) return rc;
    /* Each message encoded once into a scratch buffer (its offset kept),
     * then the run that fits the budget, at least one, cut at the end away
     * from the anchor: forward, the last ones; backward, the oldest. */
    jbuf tmp;
    jb_init(&tmp, 4096);
    size_t *off = malloc((p->n + 1) * sizeof *off);
    if (!off || tmp.err) { free(off); jb_free(&tmp); free(p); return ERR_NOMEM; }
    for (size_t i = 0; i < p->n; i++) {
        off[i] = jb_len(&tmp);
        jb_raw(&tmp, "{", 1);
        write_msg_fields(&tmp, &p->msgs[i]);
        jb_raw(&tmp, "}", 1);
    }
    off[p->n] = jb_len(&tmp);
    size_t lo = 0, hi = p->n; /* the run [lo, hi) */
    bool more = p->more, forward = before == 0;
    if (forward) {
        for (hi = 0; hi < p->n; hi++)
            if (hi && off[hi + 1] - off[0] + hi > max_bytes) break; /* + the commas */
    } else {
        for (lo = p->n; lo > 0; lo--)
            if (lo < p->n && off[p->n] - off[lo - 1] + (p->n - lo) > max_bytes) break;
    }
    if (hi - lo < p->n) more = true;
    size_t len;
    const char *d = jb_data(&tmp, &len);
    if (!d) rc = ERR_NOMEM;
    jb_lit(j, "\"messages\":[");
    for (size_t i = lo; rc >= 0 && i < hi; i++) {
        if (i > lo) jb_raw(j, ",", 1);
        jb_raw(j, d + off[i], off[i + 1] - off[i]);
    }
    jb_lit(j, more ? "],\"more\":true" : "],\"more\":false");
    free(off);
    jb_free(&tmp);
    free(p);
    return rc < 0 ? rc : j->err ? j->err : ERR_OK;
}

int chat_write_receipts(chat *ch, uint64_t conv, uint64_t uid, uint64_t seq, jbuf *j)
{
    chat_settle(ch, conv);
    db_conv *c;
    int rc = db_conv_get(ch->db, conv, uid, &c);
    if (rc < 0) return rc;
    uint64_t from = 0, delivered = 0, read = 0;
    if (seq) {
        db_page *p = NULL;
        if (seq > c->last_seq) rc = ERR_INVALID; /* no such message */
        else if ((rc = db_history(ch->db, conv, uid, seq - 1, 0, 1, 1, &p)) == ERR_OK)
            rc = p->n && p->msgs[0].seq == seq ? ERR_OK : ERR_INVALID;
        if (rc == ERR_OK) from = p->msgs[0].from;
        free(p);
    }
    if (rc == ERR_OK) {
        jb_lit(j, "{\"members\":[");
        for (uint32_t i = 0; i < c->n; i++) {
            const db_member *m = &c->members[i];
            if (i) jb_raw(j, ",", 1);
            jb_lit(j, "{\"user\":");
            jb_cstr(j, m->name);
            jb_lit(j, ",\"delivered\":");
            jb_u64(j, m->delivered);
            jb_lit(j, ",\"read\":");
            jb_u64(j, m->read);
            jb_raw(j, "}", 1);
            if (seq && m->uid != from) {
                delivered += m->delivered >= seq;
                read += m->read >= seq;
            }
        }
        jb_raw(j, "]", 1);
        if (seq) {
            jb_lit(j, ",\"seq\":");
            jb_u64(j, seq);
            jb_lit(j, ",\"delivered\":");
            jb_u64(j, delivered);
            jb_lit(j, ",\"read\":");
            jb_u64(j, read);
        }
        jb_raw(j, "}", 1);
    }
    free(c);
    return rc;
}

audience *chat_contacts(chat *ch, uint64_t uid)
{
    audience *a = NULL;
    return db_contacts(ch->db, uid, &a) == ERR_OK ? a : NULL;
}
