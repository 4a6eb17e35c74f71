/* chat_ops: running chat operations from a test and waiting for them.
 *
 *   chat_op *op = op_new(&f, OP_SEND, origin);   origin 0: a fresh one on thread 0
 *   ... fill op ...
 *   op_result r = op_do(op);                     submit, wait for the reply
 *   r.op.rc, r.op.seq, r.thread                  (a copy, owned pointers cleared)
 *
 *   op_settle(&f);   whatever the committed batches fanned out has been
 *                    delivered on every thread (one writer op per thread,
 *                    whose reply runs after the parcels queued before it)
 *
 * Shortcuts: user_register(), conv_direct(), conv_group(), msg_send().
 * Every wait is bounded (FX_WAIT_S).
 */
#ifndef PARLEY_TEST_CHAT_OPS_H
#define PARLEY_TEST_CHAT_OPS_H

#include "fixture.h"

typedef struct op_result {
    chat_op op;         /* the op as its reply saw it; body/uids/aud cleared */
    int thread;         /* where the reply ran (-1: no thread) */
    int submit_rc;      /* chat_submit's answer */
} op_result;

static struct {
    uv_mutex_t mu;
    uv_cond_t cv;
    bool init;
    op_result done[64];
    bool used[64];      /* answered, not yet collected */
    bool busy[64];      /* handed out, not yet collected */
    unsigned next_tag;
    uint64_t next_origin;
} ops_;

static inline void ops_init_(void)
{
    if (ops_.init) return;
    uv_mutex_init(&ops_.mu);
    uv_cond_init(&ops_.cv);
    ops_.init = true;
}

/* The reply: a copy for the test, then the op is freed (as replies do). */
static inline void op_reply_(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    unsigned slot = (unsigned)strtoul(op->ref + 1, NULL, 10) % 64;
    uv_mutex_lock(&ops_.mu);
    op_result *r = &ops_.done[slot];
    r->op = *op;
    r->op.body = NULL;
    r->op.uids = NULL;
    r->op.aud = NULL;
    r->op.rcs = NULL;
    r->op.after = NULL;
    r->op.left = NULL;
    r->thread = t ? t->id : -1;
    ops_.used[slot] = true;
    uv_cond_broadcast(&ops_.cv);
    uv_mutex_unlock(&ops_.mu);
    chat_op_free(op);
}

/* A fresh origin id on thread i (a conn id no connection has). */
static inline uint64_t op_origin(int thread)
{
    ops_init_();
    uv_mutex_lock(&ops_.mu);
    uint64_t id = ((0x100000 + ++ops_.next_origin) << 8) | (uint64_t)thread;
    uv_mutex_unlock(&ops_.mu);
    return id;
}

static inline chat_op *op_new(fx *f, enum db_op_kind kind, uint64_t origin)
{
    ops_init_();
    chat_op *op = chat_op_new(f->ch, kind, origin ? origin : op_origin(0), op_reply_);
    if (!op) fx_fatal("chat_op_new");
    uv_mutex_lock(&ops_.mu);
    unsigned tag = ops_.next_tag++ % 64;
    if (ops_.busy[tag]) fx_fatal("more than 64 ops in flight");
    ops_.busy[tag] = true;
    uv_mutex_unlock(&ops_.mu);
    snprintf(op->ref, sizeof op->ref, "#%u", tag);
    return op;
}

/* Submits op; returns its tag (wait with op_wait), or -1 if refused (then
 * *refused holds the error and op was freed). */
static inline int op_submit(chat_op *op, int *refused)
{
    int tag = (int)strtol(op->ref + 1, NULL, 10);
    int rc = chat_submit(op);
    if (refused) *refused = rc;
    if (rc < 0) {
        uv_mutex_lock(&ops_.mu);
        ops_.busy[tag] = false;
        uv_mutex_unlock(&ops_.mu);
        chat_op_free(op);
        return -1;
    }
    return tag;
}

static inline op_result op_wait(int tag)
{
    op_result out;
    uv_mutex_lock(&ops_.mu);
    uint64_t deadline = uv_hrtime() + (uint64_t)FX_WAIT_S * 1000000000ull;
    while (!ops_.used[tag]) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) fx_fatal("an operation was never answered");
        uv_cond_timedwait(&ops_.cv, &ops_.mu, deadline - now);
    }
    out = ops_.done[tag];
    ops_.used[tag] = false;
    ops_.busy[tag] = false;
    uv_mutex_unlock(&ops_.mu);
    out.submit_rc = ERR_OK;
    return out;
}

static inline op_result op_do(chat_op *op)
{
    int refused = 0;
    int tag = op_submit(op, &refused);
    if (tag < 0) {
        op_result r;
        memset(&r, 0, sizeof r);
        r.op.rc = refused;
        r.submit_rc = refused;
        r.thread = -1;
        return r;
    }
    return op_wait(tag);
}

/* Everything fanned out by batches committed so far has been delivered:
 * the completer posts a batch's parcels to every thread before it
 * completes a later batch, and each thread runs its posts in order. */
static inline void op_settle(fx *f)
{
    int tags[FX_MAX_THREADS];
    for (int i = 0; i < f->nthreads; i++) {
        chat_op *op = op_new(f, OP_LAST_SEEN, op_origin(i)); /* uid 0: a no-op */
        tags[i] = op_submit(op, NULL);
        if (tags[i] < 0) fx_fatal("settle refused");
    }
    for (int i = 0; i < f->nthreads; i++) op_wait(tags[i]);
}

/* ---- shortcuts ------------------------------------------------------------- */

typedef struct test_user {
    uint64_t uid;
    char name[STORE_NAME_MAX + 1];
    char token[48];
} test_user;

/* Registers name (any password hash will do: chat stores it as given). */
static inline test_user user_register(fx *f, const char *name)
{
    chat_op *op = op_new(f, OP_REGISTER, 0);
    snprintf(op->name, sizeof op->name, "%s", name);
    snprintf(op->who.name, sizeof op->who.name, "%s", name);
    snprintf(op->pwhash, sizeof op->pwhash, "$test$%s", name);
    op_result r = op_do(op);
    test_user u;
    memset(&u, 0, sizeof u);
    if (r.op.rc < 0) return u;
    u.uid = r.op.who.uid;
    snprintf(u.name, sizeof u.name, "%s", r.op.who.name);
    memcpy(u.token, r.op.token, sizeof u.token);
    return u;
}

static inline void op_as(chat_op *op, const test_user *u)
{
    op->who.uid = u->uid;
    snprintf(op->who.name, sizeof op->who.name, "%s", u->name);
}

static inline op_result conv_direct(fx *f, const test_user *a, const test_user *b)
{
    chat_op *op = op_new(f, OP_DIRECT, 0);
    op_as(op, a);
    op->target = b->uid;
    return op_do(op);
}

static inline op_result conv_group(fx *f, const test_user *admin, const char *name,
                                   const test_user *const *members, size_t n)
{
    chat_op *op = op_new(f, OP_GROUP, 0);
    op_as(op, admin);
    snprintf(op->name, sizeof op->name, "%s", name);
    op->uids = calloc(n ? n : 1, sizeof *op->uids);
    if (!op->uids) fx_fatal("out of memory");
    for (size_t i = 0; i < n; i++) op->uids[i] = members[i]->uid;
    op->nuids = n;
    return op_do(op);
}

/* A send op, not yet submitted (origin 0: a fresh one). */
static inline chat_op *msg_op(fx *f, const test_user *from, uint64_t conv, const char *cmid,
                              const char *body, uint64_t origin)
{
    chat_op *op = op_new(f, OP_SEND, origin);
    op_as(op, from);
    op->conv = conv;
    op->cmid_len = strlen(cmid);
    memcpy(op->cmid, cmid, op->cmid_len + 1);
    op->body_len = strlen(body);
    op->body = malloc(op->body_len ? op->body_len : 1);
    if (!op->body) fx_fatal("out of memory");
    memcpy(op->body, body, op->body_len);
    return op;
}

static inline op_result msg_send(fx *f, const test_user *from, uint64_t conv, const char *cmid,
                                 const char *body, uint64_t origin)
{
    return op_do(msg_op(f, from, conv, cmid, body, origin));
}

#endif
