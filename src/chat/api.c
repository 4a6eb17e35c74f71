#include "chat/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include <strings.h>
#include <uv.h>

#include "chat/auth.h"
#include "chat/chat.h"
#include "net/conn.h"
#include "base/err.h"
#include "chat/guard.h"
#include "codec/json.h"
#include "base/log.h"
#include "codec/msg.h"
#include "codec/utf8.h"

#define JSON_TYPE "application/json"

/* ---- responses --------------------------------------------------------------- */

static void respond_json(conn *c, int status, const char *body, size_t n, bool keep_alive)
{
    conn_respond(c, status, JSON_TYPE, body, n, keep_alive, false, NULL);
}

/* {"error":{"code":...,"message":...[,"retry_after_ms":N]}} into j (new),
 * and the header lines that go with it when the caller gives none. */
static const char *error_body(jbuf *j, const err_info *e, const char *message, long retry_ms,
                              const char *extra)
{
    jb_init(j, 128);
    jb_lit(j, "{\"error\":{\"code\":\"");
    jb_lit(j, e->code);
    jb_lit(j, "\",\"message\":");
    jb_cstr(j, message ? message : e->message);
    if (retry_ms >= 0) {
        jb_lit(j, ",\"retry_after_ms\":");
        jb_u64(j, (uint64_t)retry_ms);
    }
    jb_lit(j, "}}");
    if (extra) return extra;
    return e->status == 401 ? "WWW-Authenticate: Bearer\r\n"
         : e->status == 503 ? "Retry-After: 1\r\n" : NULL;
}

void api_send_error(conn *c, bool keep_alive, bool head, int err, const char *message,
                    const char *extra, long retry_ms)
{
    const err_info *e = err_info_of(err);
    jbuf j;
    extra = error_body(&j, e, message, retry_ms, extra);
    size_t n;
    const char *p = jb_data(&j, &n);
    metrics_error(&c->t->m, err);
    if (p) conn_respond(c, e->status, JSON_TYPE, p, n, keep_alive, head, extra);
    else conn_abort(c);
    jb_free(&j);
}

static void api_error(conn *c, bool keep_alive, int err, const char *message)
{
    api_send_error(c, keep_alive, false, err, message, NULL, -1);
}

static void respond_jbuf(conn *c, int status, jbuf *j, bool keep_alive)
{
    size_t n;
    const char *p = jb_data(j, &n);
    if (p) respond_json(c, status, p, n, keep_alive);
    else api_error(c, keep_alive, ERR_NOMEM, "out of memory");
    jb_free(j);
}

/* An answer made on the read pool, sent on the connection's thread
 * (answer_send): what api_send_error() and respond_jbuf() would have sent. */
typedef struct api_answer {
    int status;              /* 0: none (a write took the request: its reply answers) */
    int err;                 /* an error answer: counted (metrics_error) */
    bool rate_limited;       /* counted as M_RATE_LIMITED */
    char extra[96];          /* header lines, or "" */
    jbuf body;
} api_answer;

static void answer_error(api_answer *a, int err, const char *message, const char *extra,
                         long retry_ms)
{
    const err_info *e = err_info_of(err);
    jb_free(&a->body);
    extra = error_body(&a->body, e, message, retry_ms, extra);
    snprintf(a->extra, sizeof a->extra, "%s", extra ? extra : "");
    a->status = e->status;
    a->err = err;
}

static void answer_send(conn *c, bool keep_alive, api_answer *a)
{
    if (a->rate_limited) metrics_inc(&c->t->m, M_RATE_LIMITED);
    size_t n;
    const char *p = jb_data(&a->body, &n);
    if (a->err) {
        metrics_error(&c->t->m, a->err);
        if (p) conn_respond(c, a->status, JSON_TYPE, p, n, keep_alive, false,
                            a->extra[0] ? a->extra : NULL);
        else conn_abort(c);
    } else if (p) {
        respond_json(c, a->status, p, n, keep_alive);
    } else {
        api_error(c, keep_alive, ERR_NOMEM, "out of memory");
    }
    jb_free(&a->body);
}

/* ---- request helpers ------------------------------------------------------------ */

/* A request being handled: on its I/O thread (c), or on the read pool
 * (c NULL: the handler answers into *ans, which its job sends). */
typedef struct req_ctx {
    conn *c;
    api_answer *ans;
    uint64_t id;         /* the connection's id */
    const http_request *r;
    chat *ch;
    bool ka;             /* keep-alive */
    chat_ident who;
    json_obj body;
} req_ctx;

/* Answers an error (api_send_error's answer) wherever the handler runs. */
static void fail_with(req_ctx *x, int err, const char *message, const char *extra, long retry_ms)
{
    if (x->c) api_send_error(x->c, x->ka, false, err, message, extra, retry_ms);
    else answer_error(x->ans, err, message, extra, retry_ms);
}

static void fail(req_ctx *x, int err, const char *message)
{
    fail_with(x, err, message, NULL, -1);
}

/* Answers status with j's JSON (taken). */
static void ok_json(req_ctx *x, int status, jbuf *j)
{
    if (x->c) { respond_jbuf(x->c, status, j, x->ka); return; }
    jb_free(&x->ans->body);
    x->ans->body = *j;
    x->ans->status = status;
    x->ans->err = 0;
    j->b = NULL;
}

static bool method(const req_ctx *x, const char *m)
{
    size_t n = strlen(m);
    return x->r->method.n == n && memcmp(x->r->method.p, m, n) == 0;
}

/* Authenticates the request; answers 401 and returns false if it fails. */
static bool authenticate(req_ctx *x)
{
    const http_str *h = http_header_get(x->r, "Authorization");
    int rc = ERR_AUTH;
    if (h && h->n > 7 && strncasecmp(h->p, "Bearer ", 7) == 0)
        rc = chat_authenticate(x->ch, h->p + 7, h->n - 7, &x->who);
    if (rc == ERR_OK) return true;
    if (rc == ERR_IO) fail(x, ERR_IO, "storage error");
    else if (rc == ERR_UNAVAILABLE) fail(x, rc, NULL);
    else fail(x, ERR_AUTH, "missing or invalid token");
    return false;
}

/* Parses the body as a JSON object; answers 400 and returns false if not. */
static bool parse_body(req_ctx *x)
{
    const http_str *b = &x->r->body;
    if (b->n == 0 || !utf8_valid((const uint8_t *)b->p, b->n) ||
        json_parse_object(b->p, b->n, &x->body) < 0) {
        fail(x, ERR_BAD_JSON, "the body must be a JSON object");
        return false;
    }
    return true;
}

/* A username field resolved to a uid (a read of the storage interface). */
static int lookup_user(chat *ch, const char *name, uint64_t *uid)
{
    char norm[AUTH_NAME_MAX + 1];
    if (auth_username(name, strlen(name), norm) < 0) return ERR_USER_NOT_FOUND;
    db_account u;
    int rc = db_account_get(ch->db, norm, &u);
    if (rc == ERR_OK) *uid = u.id;
    return rc == ERR_NOT_FOUND ? ERR_USER_NOT_FOUND : rc;
}

/* A number in the query: decimal digits, 0 .. 2^53 (as in JSON frames,
 * what a JavaScript client holds exactly). Anything else sets *rc to
 * ERR_INVALID: never saturated, never wrapped. Returns whether present. */
static bool query_u64(const http_request *r, const char *name, uint64_t *out, int *rc)
{
    char v[32];
    int n = http_query_get(r->query, name, v, sizeof v);
    if (n == ERR_NOT_FOUND) return false;
    uint64_t x = 0;
    bool ok = n > 0 && n <= 16;
    for (int i = 0; ok && i < n; i++) {
        ok = v[i] >= '0' && v[i] <= '9';
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (!ok || x > (1ull << 53)) { *rc = ERR_INVALID; return true; }
    *out = x;
    return true;
}

/* ---- async completion -------------------------------------------------------------- */

/* Every reply runs on the request's thread: the connection may be gone. */
static conn *reply_conn(srv_thread *t, chat_op *op)
{
    conn *c = t ? srv_conn(t, op->origin) : NULL;
    return c && c->state == CONN_HTTP ? c : NULL;
}

static void reply_session(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = reply_conn(t, op);
    if (c) {
        if (op->rc >= 0) {
            jbuf j;
            jb_init(&j, 160);
            jb_lit(&j, "{\"user\":");
            jb_cstr(&j, op->who.name);
            jb_lit(&j, ",\"token\":");
            jb_cstr(&j, op->token);
            jb_lit(&j, ",\"device\":");
            jb_u64(&j, op->who.device);
            jb_lit(&j, ",\"expires\":");
            jb_i64(&j, op->expires);
            char dkey[AUTH_DEVICE_KEY_LEN + 1];
            auth_device_key(op->who.uid, op->who.device, op->pwhash, dkey);
            jb_lit(&j, ",\"device_key\":");
            jb_cstr(&j, dkey);
            jb_raw(&j, "}", 1);
            respond_jbuf(c, op->kind == OP_REGISTER ? 201 : 200, &j, op->keep_alive);
        } else {
            api_error(c, op->keep_alive, op->rc, NULL);
        }
        conn_resume(c);
    }
    sodium_memzero(op->token, sizeof op->token);
    chat_op_free(op);
}

static void reply_empty(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = reply_conn(t, op);
    if (c) {
        if (op->rc >= 0) conn_respond(c, 204, NULL, NULL, 0, op->keep_alive, false, NULL);
        else api_error(c, op->keep_alive, op->rc, NULL);
        conn_resume(c);
    }
    chat_op_free(op);
}

static void read_conv(conn *c, const chat_op *op);

/* Answers with the conversation as the acting user now sees it (read on
 * the read pool: read_conv). */
static void reply_conv(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = reply_conn(t, op);
    if (c) {
        if (op->rc < 0) {
            api_error(c, op->keep_alive, op->rc, NULL);
            conn_resume(c);
        } else {
            read_conv(c, op); /* still held until its answer */
        }
    }
    chat_op_free(op);
}

static void reply_send(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = reply_conn(t, op);
    if (t && op->rc >= 0 && !op->duplicate) metrics_inc(&t->m, M_MSGS_SENT);
    if (c) {
        if (op->rc >= 0) {
            char body[128];
            int n = snprintf(body, sizeof body, "{\"seq\":%llu,\"ts\":%lld%s}",
                             (unsigned long long)op->seq, (long long)op->ts,
                             op->duplicate ? ",\"duplicate\":true" : "");
            respond_json(c, op->duplicate ? 200 : 201, body, (size_t)n, op->keep_alive);
        } else {
            api_error(c, op->keep_alive, op->rc, NULL);
        }
        conn_resume(c);
    }
    chat_op_free(op);
}

/* {"left":[ids],"failed":[{"conv":id,"code":"..."}]} for a batch leave. */
static void reply_leave(srv_thread *t, void *arg)
{
    chat_op *op = arg;
    conn *c = reply_conn(t, op);
    if (c) {
        if (op->rc >= 0) {
            jbuf j;
            jb_init(&j, 64 + op->nuids * 40);
            jb_lit(&j, "{\"left\":[");
            int n = 0;
            for (size_t i = 0; i < op->nuids; i++) {
                if (op->rcs[i] != ERR_OK) continue;
                if (n++) jb_raw(&j, ",", 1);
                jb_u64(&j, op->uids[i]);
            }
            jb_lit(&j, "],\"failed\":[");
            n = 0;
            for (size_t i = 0; i < op->nuids; i++) {
                if (op->rcs[i] == ERR_OK) continue;
                jb_lit(&j, n++ ? ",{\"conv\":" : "{\"conv\":");
                jb_u64(&j, op->uids[i]);
                jb_lit(&j, ",\"code\":\"");
                jb_lit(&j, err_info_of(op->rcs[i])->code);
                jb_lit(&j, "\"}");
            }
            jb_lit(&j, "]}");
            respond_jbuf(c, 200, &j, op->keep_alive);
        } else {
            api_error(c, op->keep_alive, op->rc, NULL);
        }
        conn_resume(c);
    }
    chat_op_free(op);
}

/* Queues op for the writer and holds the connection until its reply (on
 * the read pool the connection is held already, and nothing is answered
 * now: the reply answers). */
static void submit(req_ctx *x, chat_op *op)
{
    op->keep_alive = x->ka;
    int rc = chat_submit(op);
    if (rc < 0) {
        chat_op_free(op);
        fail(x, rc, NULL);
        return;
    }
    if (x->c) conn_hold(x->c);
    else x->ans->status = 0;
}

static chat_op *new_op(req_ctx *x, enum db_op_kind kind, void (*reply)(srv_thread *, void *))
{
    chat_op *op = chat_op_new(x->ch, kind, x->id, reply);
    if (!op) { fail(x, ERR_NOMEM, "out of memory"); return NULL; }
    op->who = x->who;
    return op;
}

/* ---- reads on the read pool --------------------------------------------------------- */

/* A request's store reads (the token check, every authenticated endpoint,
 * the login's user lookup, the conversation answered after a change) run
 * on the read pool (chat.h), never on the I/O thread: the connection is
 * held (conn_hold) while its job runs, and the answer, made whole on the
 * pool, is sent on the connection's thread if it is still there. Held, a
 * connection reads no further request, so pipelined responses stay in
 * request order. */
typedef struct answer_job {
    pool_job job;            /* first */
    chat *ch;
    uint64_t conn;
    bool keep_alive;
    api_answer ans;          /* status 0: a write took the request (its reply answers) */
} answer_job;

/* Queues a job for x's connection and holds it; false: answered busy (a
 * is still the caller's). */
static bool queue_job(req_ctx *x, answer_job *a, void (*run)(pool_job *),
                      void (*done)(srv_thread *, void *))
{
    a->job.run = run;
    a->job.done = done;
    a->job.t = x->c->t;
    a->ch = x->ch;
    a->conn = x->c->id;
    a->keep_alive = x->ka;
    if (pool_submit(x->ch->reads, &a->job) < 0) {
        api_error(x->c, x->ka, ERR_BUSY, NULL);
        return false;
    }
    conn_hold(x->c);
    return true;
}

/* On the connection's thread: the answer, then the next request. */
static void answer_done(srv_thread *t, void *arg)
{
    answer_job *a = arg;
    conn *c = t ? srv_conn(t, a->conn) : NULL;
    if (c && a->ans.status) {
        if (c->state == CONN_HTTP) answer_send(c, a->keep_alive, &a->ans);
        conn_resume(c); /* lingering (timed out meanwhile): reads to the end */
    }
    jb_free(&a->ans.body);
    free(a); /* the job's whole allocation: a is its first member */
}

/* The conversation object answered after a change (reply_conv). */
typedef struct conv_job {
    answer_job a;            /* first */
    uint64_t conv, uid;
    int status;
} conv_job;

static void conv_run(pool_job *j)
{
    conv_job *q = (conv_job *)j;
    req_ctx x = {.ans = &q->a.ans, .ch = q->a.ch, .ka = q->a.keep_alive};
    jbuf b;
    jb_init(&b, 512);
    int rc = chat_write_conv(q->a.ch, q->conv, q->uid, &b);
    if (rc < 0) { jb_free(&b); fail(&x, rc, rc == ERR_IO ? "storage error" : NULL); }
    else ok_json(&x, q->status, &b);
}

/* The change is made: this read is its second step, never refused busy. */
static void read_conv(conn *c, const chat_op *op)
{
    conv_job *q = calloc(1, sizeof *q);
    if (q) {
        q->a.job.run = conv_run;
        q->a.job.done = answer_done;
        q->a.job.t = c->t;
        q->a.ch = op->ch;
        q->a.conn = c->id;
        q->a.keep_alive = op->keep_alive;
        q->conv = op->conv;
        q->uid = op->who.uid;
        q->status = op->kind == OP_ADD || op->duplicate ? 200 : 201;
        if (pool_continue(op->ch->reads, &q->a.job) == ERR_OK) return;
        free(q);
    }
    api_error(c, op->keep_alive, ERR_IO, "storage error");
    conn_resume(c);
}

/* ---- accounts (password work runs on libuv's thread pool) -------------------------- */

typedef struct kdf_job {
    uv_work_t work;
    chat_op *op;
    char pass[AUTH_PASS_MAX + 1];
    size_t pass_len;
    bool ok;           /* login: the password matched */
    bool known;        /* login: the user exists (then `line` is in flight in the guard) */
    bool fast;
    guard_login line;  /* login: the guard's line of this attempt */
} kdf_job;

/* Verified against when the user does not exist, so both cases cost the same. */
static char dummy_hash[AUTH_HASH_MAX + 1];

static void kdf_free(kdf_job *k)
{
    sodium_memzero(k->pass, sizeof k->pass);
    free(k);
}

static void hash_work(uv_work_t *w)
{
    kdf_job *k = w->data;
    k->ok = auth_hash(k->pass, k->pass_len, k->fast, k->op->pwhash) == ERR_OK;
}

static void verify_work(uv_work_t *w)
{
    kdf_job *k = w->data;
    k->ok = auth_verify(k->known ? k->op->pwhash : dummy_hash, k->pass, k->pass_len) && k->known;
}

static void kdf_after(uv_work_t *w, int status)
{
    kdf_job *k = w->data;
    chat_op *op = k->op;
    srv_thread *t = NULL;
    for (int i = 0; i < op->ch->srv->nthreads; i++)
        if (&op->ch->srv->threads[i].loop == w->loop) t = &op->ch->srv->threads[i];
    conn *c = reply_conn(t, op); /* NULL once it closed, timed out or lingers */
    bool ok = k->ok && status == 0;
    if (op->kind == OP_LOGIN && k->known) {
        guard_login_end(op->ch->guard, &k->line, ok, guard_now());
        if (op->ch->bus) /* the cluster's delays (bus.h) */
            bus_login_result(op->ch->bus, guard_line_key(&k->line), k->line.uid, !k->line.device, ok);
    }
    kdf_free(k);
    if (!c) { chat_op_free(op); return; }
    if (!ok) {
        if (op->kind == OP_LOGIN) api_error(c, op->keep_alive, ERR_BAD_CREDENTIALS, "wrong username or password");
        else api_error(c, op->keep_alive, ERR_IO, "password hashing failed");
        chat_op_free(op);
        conn_resume(c);
        return;
    }
    int rc = chat_submit(op);
    if (rc < 0) {
        api_error(c, op->keep_alive, rc, NULL);
        chat_op_free(op);
        conn_resume(c);
    }
}

/* On the I/O thread. Returns whether it was queued (else it answered). */
static bool start_kdf(req_ctx *x, chat_op *op, const char *pass, size_t n, bool verify,
                      const guard_login *line)
{
    bool known = line != NULL;
    kdf_job *k = calloc(1, sizeof *k);
    if (!k) {
        if (line) guard_login_cancel(x->ch->guard, line);
        chat_op_free(op);
        fail(x, ERR_NOMEM, "out of memory");
        return false;
    }
    k->op = op;
    op->keep_alive = x->ka;
    memcpy(k->pass, pass, n);
    k->pass_len = n;
    k->known = known;
    if (line) k->line = *line;
    k->fast = x->ch->cfg->insecure_fast_kdf;
    k->work.data = k;
    if (uv_queue_work(&x->c->t->loop, &k->work, verify ? verify_work : hash_work, kdf_after) != 0) {
        if (line) guard_login_cancel(x->ch->guard, line);
        kdf_free(k);
        chat_op_free(op);
        fail(x, ERR_BUSY, "server busy: retry later");
        return false;
    }
    conn_hold(x->c);
    return true;
}

/* Reads username and password; answers 400 itself when they break the rules. */
static bool credentials(req_ctx *x, char *name, char *pass, size_t *pass_len, bool strict)
{
    char raw[AUTH_NAME_MAX * 4 + 1];
    int n = json_get_str(&x->body, "username", raw, sizeof raw);
    int p = json_get_str(&x->body, "password", pass, AUTH_PASS_MAX + 1);
    if (n == ERR_NOT_FOUND || p == ERR_NOT_FOUND || n == ERR_INVALID || p == ERR_INVALID) {
        fail(x, ERR_INVALID, "'username' and 'password' strings are required");
        return false;
    }
    if (n < 0 || auth_username(raw, (size_t)n, name) < 0) {
        if (strict) {
            fail(x, ERR_BAD_USERNAME,
                 "usernames are 3-32 characters of a-z 0-9 _ . - starting with a letter or digit");
            return false;
        }
        name[0] = 0; /* login: unknown user, same answer as a wrong password */
    }
    if (p < 0 || !auth_password_ok((size_t)p)) {
        if (strict) {
            fail(x, ERR_BAD_PASSWORD, "passwords are 8-256 bytes");
            return false;
        }
        p = 0;
    }
    *pass_len = (size_t)p;
    return true;
}

static void too_many(req_ctx *x, uint32_t retry_ms, const char *message)
{
    char extra[48];
    snprintf(extra, sizeof extra, "Retry-After: %u\r\n", retry_ms / 1000 + 1);
    if (x->c) metrics_inc(&x->c->t->m, M_RATE_LIMITED);
    else x->ans->rate_limited = true;
    fail_with(x, ERR_RATE, message, extra, (long)retry_ms);
}

/* Logins and registrations per source address. */
static bool login_allowed(req_ctx *x)
{
    uint32_t retry = 0;
    if (guard_login_addr(x->ch->guard, conn_peer_key(x->c), guard_now(), &retry) == ERR_OK)
        return true;
    too_many(x, retry, "too many attempts from this address");
    return false;
}

static void post_users(req_ctx *x)
{
    char name[AUTH_NAME_MAX + 1], pass[AUTH_PASS_MAX + 1];
    size_t plen;
    if (!login_allowed(x) || !parse_body(x) || !credentials(x, name, pass, &plen, true)) return;
    chat_op *op = new_op(x, OP_REGISTER, reply_session);
    if (!op) return;
    memcpy(op->name, name, sizeof name);
    memcpy(op->who.name, name, sizeof name);
    start_kdf(x, op, pass, plen, false, NULL);
    sodium_memzero(pass, sizeof pass);
}

/* A login's user lookup by name, on the read pool; then the password check
 * (start_kdf) from the connection's thread. */
typedef struct login_job {
    answer_job a;            /* first; ans.status: refused by the guard */
    chat_op *op;             /* owned until start_kdf */
    char name[AUTH_NAME_MAX + 1];
    char pass[AUTH_PASS_MAX + 1];
    size_t plen;
    char dkey[AUTH_DEVICE_KEY_LEN + 2];
    int dk;
    guard_login line;
    bool known;              /* the user exists: `line` is in flight in the guard */
} login_job;

static void login_free(login_job *q)
{
    if (q->known) guard_login_cancel(q->a.ch->guard, &q->line);
    chat_op_free(q->op);
    jb_free(&q->a.ans.body);
    sodium_memzero(q->pass, sizeof q->pass);
    free(q);
}

static void login_run(pool_job *j)
{
    login_job *q = (login_job *)j;
    req_ctx x = {.ans = &q->a.ans, .ch = q->a.ch, .ka = q->a.keep_alive};
    db_account u;
    if (!q->name[0] || !q->plen) return;
    int rc = db_account_get(q->a.ch->db, q->name, &u);
    if (rc == ERR_IO || rc == ERR_UNAVAILABLE) { /* not "wrong password" */
        fail(&x, rc, rc == ERR_IO ? "storage error" : NULL);
        return;
    }
    if (rc == ERR_OK) {
        q->line.uid = u.id;
        /* Not one of this account's keys (another's, forged, too long, or
         * from before a password change): an unknown device. */
        if (q->dk > 0) q->line.device = auth_device_key_check(u.id, u.pwhash, q->dkey, (size_t)q->dk);
        uint32_t retry = 0;
        bool refused = guard_login_begin(q->a.ch->guard, &q->line, guard_now(), &retry) < 0;
        /* The cluster's delays, from every node's failures (bus.h); the
         * node's own alone while the bus is down. */
        if (!refused && q->a.ch->bus &&
            bus_login_check(q->a.ch->bus, guard_line_key(&q->line), u.id, !q->line.device,
                            &retry) == ERR_RATE) {
            guard_login_cancel(q->a.ch->guard, &q->line);
            refused = true;
        }
        if (refused) {
            too_many(&x, retry, q->line.device
                         ? "too many failed logins on this device: wait and retry"
                         : "too many failed logins: wait and retry, or log in with "
                           "this device's device_key");
            return;
        }
        q->known = true;
        q->op->who.uid = u.id;
        memcpy(q->op->who.name, u.name, sizeof u.name);
        memcpy(q->op->pwhash, u.pwhash, sizeof u.pwhash);
    }
}

static void login_done(srv_thread *t, void *arg)
{
    login_job *q = arg;
    conn *c = t ? srv_conn(t, q->a.conn) : NULL;
    if (c && c->state == CONN_HTTP && !q->a.ans.status) {
        req_ctx x = {.c = c, .id = c->id, .ch = q->a.ch, .ka = q->a.keep_alive};
        chat_op *op = q->op;
        bool known = q->known;
        q->op = NULL;    /* start_kdf's now, and the guard's line with it */
        q->known = false;
        if (!start_kdf(&x, op, q->pass, q->plen, true, known ? &q->line : NULL)) conn_resume(c);
    } else if (c) {
        if (c->state == CONN_HTTP) answer_send(c, q->a.keep_alive, &q->a.ans);
        conn_resume(c);
    }
    login_free(q);
}

/* Logins are delayed per (account, source address) after failures, or per
 * (account, device) for a device that presents its known-device key. */
static void post_sessions(req_ctx *x)
{
    char name[AUTH_NAME_MAX + 1], pass[AUTH_PASS_MAX + 1], dkey[AUTH_DEVICE_KEY_LEN + 2];
    size_t plen;
    if (!login_allowed(x) || !parse_body(x) || !credentials(x, name, pass, &plen, false)) return;
    int dk = json_get_str(&x->body, "device_key", dkey, sizeof dkey);
    if (dk == ERR_INVALID) {
        sodium_memzero(pass, sizeof pass);
        fail(x, ERR_INVALID, "'device_key' must be a string");
        return;
    }
    chat_op *op = new_op(x, OP_LOGIN, reply_session);
    login_job *q = op ? calloc(1, sizeof *q) : NULL;
    if (!q) {
        if (op) { chat_op_free(op); fail(x, ERR_NOMEM, "out of memory"); }
        sodium_memzero(pass, sizeof pass);
        return;
    }
    q->op = op;
    memcpy(q->name, name, sizeof name);
    memcpy(q->pass, pass, sizeof pass);
    sodium_memzero(pass, sizeof pass);
    q->plen = plen;
    memcpy(q->dkey, dkey, sizeof dkey);
    q->dk = dk;
    q->line = (guard_login){0, conn_peer_key(x->c), 0};
    if (!queue_job(x, &q->a, login_run, login_done)) login_free(q);
}

/* ---- conversations ------------------------------------------------------------------ */

typedef struct names_ctx {
    chat *ch;
    chat_op *op;
    int rc;
} names_ctx;

static int add_name(void *arg, const char *v, size_t len, uint8_t type)
{
    names_ctx *x = arg;
    char name[AUTH_NAME_MAX * 4 + 1];
    if (type != JSON_STRING || json_unescape(v, len, name, sizeof name) < 0) return x->rc = ERR_INVALID;
    if (x->op->nuids + 1 >= x->ch->cfg->max_group_members) return x->rc = ERR_TOO_MANY_MEMBERS; /* + creator */
    uint64_t uid;
    int rc = lookup_user(x->ch, name, &uid);
    if (rc < 0) return x->rc = rc;
    uint64_t *u = realloc(x->op->uids, (x->op->nuids + 1) * sizeof *u);
    if (!u) return x->rc = ERR_NOMEM;
    x->op->uids = u;
    u[x->op->nuids++] = uid;
    return 0;
}

/* Groups created and members added, per user (--rate-groups). */
static bool group_change_allowed(req_ctx *x)
{
    uint32_t retry = 0;
    if (guard_user_group(x->ch->guard, x->who.uid, guard_now(), &retry) == ERR_OK) return true;
    too_many(x, retry, "too many groups created or members added: slow down");
    return false;
}

static void post_conversations(req_ctx *x)
{
    if (!parse_body(x)) return;
    char type[16], name[256];
    if (json_get_str(&x->body, "type", type, sizeof type) < 0) {
        fail(x, ERR_INVALID, "'type' must be \"direct\" or \"group\"");
        return;
    }
    if (strcmp(type, "direct") == 0) {
        uint64_t uid;
        if (json_get_str(&x->body, "with", name, sizeof name) < 0) {
            fail(x, ERR_INVALID, "'with' must be a username");
            return;
        }
        int rc = lookup_user(x->ch, name, &uid);
        if (rc < 0) { fail(x, rc, NULL); return; }
        if (uid == x->who.uid) {
            fail(x, ERR_INVALID, "a direct conversation needs another user");
            return;
        }
        chat_op *op = new_op(x, OP_DIRECT, reply_conv);
        if (!op) return;
        op->target = uid;
        submit(x, op);
    } else if (strcmp(type, "group") == 0) {
        int n = json_get_str(&x->body, "name", name, sizeof name);
        const json_field *members = json_get(&x->body, "members");
        if (n <= 0 || n > STORE_NAME_MAX) {
            fail(x, ERR_INVALID, "'name' must be 1-64 bytes");
            return;
        }
        if (members && members->type != JSON_ARRAY) {
            fail(x, ERR_INVALID, "'members' must be a list of usernames");
            return;
        }
        chat_op *op = new_op(x, OP_GROUP, reply_conv);
        if (!op) return;
        memcpy(op->name, name, (size_t)n + 1);
        names_ctx nx = {x->ch, op, 0};
        if (members) json_array_each(members->val, members->val_len, add_name, &nx);
        if (nx.rc < 0) {
            chat_op_free(op);
            if (nx.rc == ERR_INVALID) fail(x, ERR_INVALID, "'members' must be a list of usernames");
            else fail(x, nx.rc, NULL);
            return;
        }
        if (!group_change_allowed(x)) { chat_op_free(op); return; }
        submit(x, op);
    } else {
        fail(x, ERR_INVALID, "'type' must be \"direct\" or \"group\"");
    }
}

static void get_inbox(req_ctx *x)
{
    static const char bad_page[] = "'page' must be the 'next' of an earlier inbox page";
    uint64_t since = 0, limit = MSG_INBOX_LIMIT_DEFAULT;
    int rc = 0;
    bool s = query_u64(x->r, "changed_since", &since, &rc);
    if (rc < 0) { fail(x, ERR_INVALID, "'changed_since' must be a cursor"); return; }
    bool l = query_u64(x->r, "limit", &limit, &rc);
    if (rc < 0 || (l && (limit == 0 || limit > MSG_INBOX_LIMIT_MAX))) {
        fail(x, ERR_INVALID, "'limit' must be 1..1000");
        return;
    }
    char tok[MSG_PAGE_MAX];
    msg_page page;
    int n = http_query_get(x->r->query, "page", tok, sizeof tok);
    bool p = n != ERR_NOT_FOUND;
    if (p && (n <= 0 || msg_page_parse(tok, (size_t)n, &page) < 0)) {
        fail(x, ERR_INVALID, bad_page);
        return;
    }
    if (p && s && since != page.since) {
        fail(x, ERR_INVALID, "'changed_since' differs from the walk of 'page'");
        return;
    }
    jbuf j;
    jb_init(&j, 4096);
    if ((rc = chat_write_inbox(x->ch, x->who.uid, since, p ? &page : NULL, (size_t)limit,
                               chat_page_bytes(x->ch), &j)) < 0) {
        jb_free(&j);
        fail(x, rc, rc == ERR_INVALID ? bad_page : NULL);
        return;
    }
    ok_json(x, 200, &j);
}

static void get_conv(req_ctx *x, uint64_t conv)
{
    chat_settle(x->ch, conv);
    jbuf j;
    jb_init(&j, 512);
    int rc = chat_write_conv(x->ch, conv, x->who.uid, &j);
    if (rc < 0) { jb_free(&j); fail(x, rc, NULL); return; }
    ok_json(x, 200, &j);
}

static void get_messages(req_ctx *x, uint64_t conv)
{
    uint64_t after = 0, before = 0, limit = 50;
    int rc = 0;
    bool a = query_u64(x->r, "after", &after, &rc);
    bool b = query_u64(x->r, "before", &before, &rc);
    bool l = query_u64(x->r, "limit", &limit, &rc);
    if (rc < 0 || (a && b) || (l && (limit == 0 || limit > 500)) || (b && before == 0)) {
        fail(x, ERR_INVALID,
             "use after=S or before=S (not both) and limit=1..500");
        return;
    }
    chat_settle(x->ch, conv);
    jbuf j;
    jb_init(&j, 4096);
    jb_raw(&j, "{", 1);
    rc = chat_write_history(x->ch, conv, x->who.uid, after, a ? 0 : b ? before : UINT64_MAX,
                            (size_t)limit, chat_page_bytes(x->ch), &j);
    jb_raw(&j, "}", 1);
    if (rc < 0) { jb_free(&j); fail(x, rc, NULL); return; }
    ok_json(x, 200, &j);
}

static void post_message(req_ctx *x, uint64_t conv)
{
    if (!parse_body(x)) return;
    const json_field *body = json_get(&x->body, "body");
    char cmid[STORE_CMID_MAX + 1];
    int n = json_get_str(&x->body, "cmid", cmid, sizeof cmid);
    if (n <= 0) { fail(x, ERR_INVALID, "'cmid' must be 1-64 characters"); return; }
    const char *why;
    int rc = msg_check_body(body ? body->val : NULL, body ? body->val_len : 0,
                            x->ch->cfg->max_text, &why);
    if (rc < 0) { fail(x, rc, why); return; }
    uint32_t retry = 0;
    if (chat_user_msg(x->ch, x->who.uid, &retry) < 0) {
        too_many(x, retry, "too many messages: slow down");
        return;
    }
    chat_op *op = new_op(x, OP_SEND, reply_send);
    if (!op) return;
    if (!(op->body = malloc(body->val_len))) {
        chat_op_free(op);
        fail(x, ERR_NOMEM, "out of memory");
        return;
    }
    memcpy(op->body, body->val, body->val_len);
    op->body_len = body->val_len;
    memcpy(op->cmid, cmid, (size_t)n + 1);
    op->cmid_len = (size_t)n;
    op->conv = conv;
    submit(x, op);
}

static void post_member(req_ctx *x, uint64_t conv)
{
    if (!parse_body(x)) return;
    char name[AUTH_NAME_MAX * 4 + 1];
    uint64_t uid;
    if (json_get_str(&x->body, "user", name, sizeof name) < 0) {
        fail(x, ERR_INVALID, "'user' must be a username");
        return;
    }
    int rc = lookup_user(x->ch, name, &uid);
    if (rc < 0) { fail(x, rc, NULL); return; }
    if (uid != x->who.uid && !group_change_allowed(x)) return;
    chat_op *op = new_op(x, OP_ADD, reply_conv);
    if (!op) return;
    op->conv = conv;
    op->target = uid;
    submit(x, op);
}

static void delete_member(req_ctx *x, uint64_t conv, const char *user)
{
    uint64_t uid;
    char name[AUTH_NAME_MAX * 4 + 1];
    int n = http_percent_decode(user, strlen(user), name, sizeof name - 1);
    if (n < 0) { fail(x, ERR_NOT_MEMBER, "not a member"); return; }
    name[n] = 0;
    int rc = lookup_user(x->ch, name, &uid);
    if (rc < 0) {
        /* Do not tell non-members whether the user exists. */
        if (chat_is_member(x->ch, conv, x->who.uid) < 0) fail(x, ERR_FORBIDDEN, NULL);
        else fail(x, rc == ERR_USER_NOT_FOUND ? ERR_NOT_MEMBER : rc, NULL);
        return;
    }
    chat_op *op = new_op(x, OP_REMOVE, reply_empty);
    if (!op) return;
    op->conv = conv;
    op->target = uid;
    submit(x, op);
}

typedef struct convs_ctx {
    chat_op *op;
    int rc;
} convs_ctx;

static int add_conv_id(void *arg, const char *v, size_t len, uint8_t type)
{
    convs_ctx *x = arg;
    uint64_t id = 0;
    if (type != JSON_NUMBER || len > 16) return x->rc = ERR_INVALID;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9') return x->rc = ERR_INVALID; /* sign, fraction, exponent */
        id = id * 10 + (uint64_t)(v[i] - '0');
    }
    if (id == 0 || id > (1ull << 53)) return x->rc = ERR_INVALID;
    for (size_t i = 0; i < x->op->nuids; i++)
        if (x->op->uids[i] == id) return 0; /* listed twice: once */
    if (x->op->nuids == CHAT_LEAVE_MAX) return x->rc = ERR_INVALID;
    x->op->uids[x->op->nuids++] = id;
    return 0;
}

/* POST /v1/conversations/leave {"convs":[ids]}: leaves many groups at once. */
static void post_leave(req_ctx *x)
{
    if (!parse_body(x)) return;
    const json_field *convs = json_get(&x->body, "convs");
    chat_op *op = NULL;
    convs_ctx cx = {NULL, ERR_INVALID};
    if (convs && convs->type == JSON_ARRAY) {
        if (!(op = new_op(x, OP_LEAVE, reply_leave))) return;
        op->uids = malloc(CHAT_LEAVE_MAX * sizeof *op->uids);
        op->rcs = malloc(CHAT_LEAVE_MAX * sizeof *op->rcs);
        if (!op->uids || !op->rcs) {
            chat_op_free(op);
            fail(x, ERR_NOMEM, "out of memory");
            return;
        }
        cx = (convs_ctx){op, 0};
        json_array_each(convs->val, convs->val_len, add_conv_id, &cx);
        if (cx.rc == 0 && op->nuids == 0) cx.rc = ERR_INVALID;
    }
    if (cx.rc < 0) {
        chat_op_free(op);
        fail(x, ERR_INVALID, "'convs' must list 1-500 conversation ids");
        return;
    }
    submit(x, op);
}

static void get_receipts(req_ctx *x, uint64_t conv)
{
    uint64_t seq = 0;
    int rc = 0;
    bool given = query_u64(x->r, "seq", &seq, &rc);
    if (rc < 0 || (given && seq == 0)) {
        fail(x, ERR_INVALID, "'seq' must be a message seq (1 or more)");
        return;
    }
    jbuf j;
    jb_init(&j, 1024);
    rc = chat_write_receipts(x->ch, conv, x->who.uid, seq, &j);
    if (rc < 0) {
        jb_free(&j);
        if (rc == ERR_INVALID) fail(x, ERR_INVALID, "'seq' is beyond the conversation's last_seq");
        else fail(x, rc, NULL);
        return;
    }
    ok_json(x, 200, &j);
}

/* ---- routing --------------------------------------------------------------------------- */

static void not_allowed(req_ctx *x, const char *allow)
{
    char extra[64];
    snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
    api_send_error(x->c, x->ka, false, ERR_METHOD, NULL, extra, -1);
}

/* Splits "/v1/conversations/{id}/{rest...}". Returns false if no id. */
static bool conv_path(const char *p, uint64_t *id, const char **rest)
{
    const char *prefix = "/v1/conversations/";
    size_t n = strlen(prefix);
    if (strncmp(p, prefix, n) != 0) return false;
    p += n;
    if (*p < '1' || *p > '9') return false;
    char *end;
    unsigned long long v = strtoull(p, &end, 10);
    if (*end && *end != '/') return false;
    *id = v;
    *rest = end;
    return true;
}

/* The authenticated endpoints: their whole handling runs on the read pool. */
enum route {
    R_LOGOUT, R_INBOX, R_CREATE, R_LEAVE, R_CONV, R_MESSAGES, R_SEND, R_ADD_MEMBER,
    R_REMOVE_MEMBER, R_RECEIPTS,
};

/* An authenticated request on the read pool: a copy of what the handlers
 * read of it (method, query, body, the Authorization header, keep-alive),
 * as an http_request whose slices point into `bytes`. */
typedef struct rest_job {
    answer_job a;            /* first */
    uint8_t route;           /* enum route */
    uint64_t conv;
    char user[512];          /* R_REMOVE_MEMBER: the path's last segment */
    http_request r;
    char bytes[];
} rest_job;

static http_str copy_str(char **at, http_str s)
{
    http_str out = {*at, s.n};
    if (s.n) memcpy(*at, s.p, s.n);
    *at += s.n;
    return out;
}

static void rest_run(pool_job *j)
{
    rest_job *q = (rest_job *)j;
    req_ctx x = {.ans = &q->a.ans, .id = q->a.conn, .r = &q->r, .ch = q->a.ch,
                 .ka = q->a.keep_alive};
    if (!authenticate(&x)) return;
    switch (q->route) {
    case R_LOGOUT: {
        chat_op *op = new_op(&x, OP_LOGOUT, reply_empty);
        if (op) submit(&x, op);
        break;
    }
    case R_INBOX: get_inbox(&x); break;
    case R_CREATE: post_conversations(&x); break;
    case R_LEAVE: post_leave(&x); break;
    case R_CONV: get_conv(&x, q->conv); break;
    case R_MESSAGES: get_messages(&x, q->conv); break;
    case R_SEND: post_message(&x, q->conv); break;
    case R_ADD_MEMBER: post_member(&x, q->conv); break;
    case R_REMOVE_MEMBER: delete_member(&x, q->conv, q->user); break;
    case R_RECEIPTS: get_receipts(&x, q->conv); break;
    }
}

/* Queues an authenticated request for the read pool. Without a bearer
 * token it is answered at once (nothing to read). */
static void authed(req_ctx *x, enum route route, uint64_t conv, const char *user)
{
    const http_request *r = x->r;
    const http_str *h = http_header_get(r, "Authorization");
    if (!h || h->n <= 7 || strncasecmp(h->p, "Bearer ", 7) != 0) {
        api_error(x->c, x->ka, ERR_AUTH, "missing or invalid token");
        return;
    }
    size_t n = r->method.n + r->query.n + r->body.n + h->n;
    rest_job *q = calloc(1, sizeof *q + n);
    if (!q) { api_error(x->c, x->ka, ERR_NOMEM, "out of memory"); return; }
    q->route = (uint8_t)route;
    q->conv = conv;
    if (user) snprintf(q->user, sizeof q->user, "%s", user);
    char *at = q->bytes;
    q->r.method = copy_str(&at, r->method);
    q->r.query = copy_str(&at, r->query);
    q->r.body = copy_str(&at, r->body);
    q->r.headers[0].name = (http_str){"Authorization", 13};
    q->r.headers[0].value = copy_str(&at, *h);
    q->r.nheaders = 1;
    q->r.keep_alive = r->keep_alive;
    if (!queue_job(x, &q->a, rest_run, answer_done)) free(q);
}

bool api_handle(conn *c, const http_request *req)
{
    char path[512];
    if (req->path.n >= sizeof path || req->path.n < 4 || memcmp(req->path.p, "/v1/", 4) != 0)
        return false;
    memcpy(path, req->path.p, req->path.n);
    path[req->path.n] = 0;
    req_ctx x = {.c = c, .id = c->id, .r = req, .ch = chat_of(c->t), .ka = req->keep_alive};
    uint64_t conv;
    const char *rest;
    if (strcmp(path, "/v1/users") == 0) {
        if (method(&x, "POST")) post_users(&x);
        else not_allowed(&x, "POST");
    } else if (strcmp(path, "/v1/sessions") == 0) {
        if (method(&x, "POST")) post_sessions(&x);
        else not_allowed(&x, "POST");
    } else if (strcmp(path, "/v1/sessions/current") == 0) {
        if (!method(&x, "DELETE")) not_allowed(&x, "DELETE");
        else authed(&x, R_LOGOUT, 0, NULL);
    } else if (strcmp(path, "/v1/conversations") == 0) {
        if (!method(&x, "GET") && !method(&x, "POST")) not_allowed(&x, "GET, POST");
        else authed(&x, method(&x, "GET") ? R_INBOX : R_CREATE, 0, NULL);
    } else if (strcmp(path, "/v1/conversations/leave") == 0) {
        if (!method(&x, "POST")) not_allowed(&x, "POST");
        else authed(&x, R_LEAVE, 0, NULL);
    } else if (conv_path(path, &conv, &rest)) {
        if (strcmp(rest, "") == 0) {
            if (!method(&x, "GET")) not_allowed(&x, "GET");
            else authed(&x, R_CONV, conv, NULL);
        } else if (strcmp(rest, "/messages") == 0) {
            if (!method(&x, "GET") && !method(&x, "POST")) not_allowed(&x, "GET, POST");
            else authed(&x, method(&x, "GET") ? R_MESSAGES : R_SEND, conv, NULL);
        } else if (strcmp(rest, "/members") == 0) {
            if (!method(&x, "POST")) not_allowed(&x, "POST");
            else authed(&x, R_ADD_MEMBER, conv, NULL);
        } else if (strncmp(rest, "/members/", 9) == 0 && rest[9] && !strchr(rest + 9, '/')) {
            if (!method(&x, "DELETE")) not_allowed(&x, "DELETE");
            else authed(&x, R_REMOVE_MEMBER, conv, rest + 9);
        } else if (strcmp(rest, "/receipts") == 0) {
            if (!method(&x, "GET")) not_allowed(&x, "GET");
            else authed(&x, R_RECEIPTS, conv, NULL);
        } else {
            api_error(c, x.ka, ERR_NOT_FOUND, "no such endpoint");
        }
    } else {
        api_error(c, x.ka, ERR_NOT_FOUND, "no such endpoint");
    }
    return true;
}

int api_init(void)
{
    /* A real Argon2id hash of a random password: logins of unknown users
     * verify against it, costing the same as a wrong password. */
    char pass[AUTH_TOKEN_LEN + 1];
    uint8_t h[32];
    auth_new_token(pass, h);
    return auth_hash(pass, AUTH_TOKEN_LEN, false, dummy_hash);
}
