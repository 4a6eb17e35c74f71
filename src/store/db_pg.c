/* db_pg: the PostgreSQL backend of db.h (--store postgresql://...), for
 * several parleyd nodes sharing one database.
 *
 * Writes: one writer thread per node with a connection of its own takes
 * every op waiting (up to DB_PG_MAX_BATCH) and runs them in one
 * transaction, each op one call of a function of the schema
 * (pg_schema.c), which decides it with its checks and answers a text code
 * (never an SQL error, so one refused op does not abort the others). The
 * ops complete, in order, on the writer thread once COMMIT has returned
 * (synchronous_commit on: durable). A deadlock or serialization failure
 * between nodes reruns the batch (nothing of it was acked; cmids make a
 * send idempotent anyway); a broken connection is reset, and the batch
 * fails with ERR_UNAVAILABLE when the database cannot be reached.
 *
 * Reads: blocking calls on the caller's thread (the read pool), each on a
 * connection borrowed from a small pool; a read of several statements
 * runs in one REPEATABLE READ, READ ONLY transaction, so it sees one
 * state. Read-your-writes needs nothing: an ack follows the COMMIT, and a
 * later read's snapshot holds it (db_settle returns at once).
 *
 * The audience of a send or cursor (the members to fan out to) is cached
 * per conversation by its members_version (bumped by every membership
 * change): a send answers the version and the members are read only when
 * it moved.
 *
 * Ownership: the backend links a submitted op until its done(); the
 * connections are the backend's.
 */
#include "store/db.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>

#include "base/log.h"
#include "base/u64map.h"
#include "store/pg_schema.h"

#define DB_PG_MAX_BATCH 1024
#define DB_PG_READ_CONNS 8
#define DB_PG_AUDIENCES 65536   /* cached audiences before the cache is emptied */
#define DB_PG_RETRIES 3         /* reruns of a batch that lost a race with another node */

typedef struct pg_aud {
    uint64_t version;
    audience *a;
} pg_aud;

typedef struct pgdb {
    db base;                          /* first */
    db_options opt;
    char *url;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    writer_op *head, *tail;           /* submitted, waiting */
    size_t queued;
    bool stopping;
    pthread_t tid;
    PGconn *wconn;                    /* the writer's */
    u64map auds;                      /* writer: conv -> pg_aud* */
    writer_stats st;                  /* under mu */
    uint64_t nusers, nconvs;          /* atomics: counts as of counted_at */
    bool down;                        /* atomic: the database could not be reached */
    int64_t pinged_at;                /* writer: ms */
    int64_t counted_at;               /* writer: ms */
    /* reads */
    pthread_mutex_t rmu;
    pthread_cond_t rcond;
    PGconn *free_conns[DB_PG_READ_CONNS];
    int nfree, nconns;
} pgdb;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- statements ------------------------------------------------------------------ */

/* The parameters of one statement: numbers as text, strings and bytes as
 * binary (length given, no copy, no NUL needed). */
#define PQ_MAX_ARGS 8
typedef struct pq_args {
    const char *v[PQ_MAX_ARGS];
    int len[PQ_MAX_ARGS];
    int fmt[PQ_MAX_ARGS];
    int n;
    char num[PQ_MAX_ARGS][24];
    char *heap;                       /* an array's text, freed by pq_run */
} pq_args;

/* (bigint columns: a value past 2^63 - 1, which no id, seq or cursor
 * reaches, is that, as its comparisons mean the same) */
static void arg_u64(pq_args *a, uint64_t v)
{
    if (v > INT64_MAX) v = INT64_MAX;
    snprintf(a->num[a->n], sizeof a->num[0], "%" PRIu64, v);
    a->v[a->n] = a->num[a->n];
    a->len[a->n] = 0;
    a->fmt[a->n++] = 0;
}

static void arg_i64(pq_args *a, int64_t v)
{
    snprintf(a->num[a->n], sizeof a->num[0], "%" PRId64, v);
    a->v[a->n] = a->num[a->n];
    a->len[a->n] = 0;
    a->fmt[a->n++] = 0;
}

static void arg_bool(pq_args *a, bool v)
{
    a->v[a->n] = v ? "t" : "f";
    a->len[a->n] = 0;
    a->fmt[a->n++] = 0;
}

static void arg_bytes(pq_args *a, const void *p, size_t n)
{
    a->v[a->n] = p;
    a->len[a->n] = (int)n;
    a->fmt[a->n++] = 1;
}

static void arg_str(pq_args *a, const char *s) { arg_bytes(a, s, strlen(s)); }

/* {1,2,3} as the text of a bigint[]; false if out of memory. */
static bool arg_u64s(pq_args *a, const uint64_t *v, size_t n)
{
    char *p = malloc(3 + n * 21); /* {, n numbers of up to 20 digits and their commas, }, NUL */
    if (!p) return false;
    size_t k = 0;
    p[k++] = '{';
    for (size_t i = 0; i < n; i++) k += (size_t)sprintf(p + k, i ? ",%" PRIu64 : "%" PRIu64, v[i]);
    p[k++] = '}';
    p[k] = 0;
    free(a->heap);
    a->heap = p;
    a->v[a->n] = p;
    a->len[a->n] = 0;
    a->fmt[a->n++] = 0;
    return true;
}

/* Runs sql; NULL and *rc set when it failed: ERR_AGAIN for a race lost to
 * another transaction (deadlock, serialization: rerun), ERR_UNAVAILABLE
 * for a connection that is gone, else ERR_IO. */
static PGresult *pq_run(PGconn *c, const char *sql, pq_args *a, int *rc)
{
    PGresult *r = a ? PQexecParams(c, sql, a->n, NULL, a->v, a->len, a->fmt, 0) : PQexec(c, sql);
    if (a) {
        free(a->heap);
        a->heap = NULL;
    }
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) return r;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (PQstatus(c) != CONNECTION_OK) *rc = ERR_UNAVAILABLE;
    else if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01"))) *rc = ERR_AGAIN;
    else {
        *rc = ERR_IO;
        log_error("database statement failed", "err=\"%s\"", PQresultErrorMessage(r));
    }
    PQclear(r);
    return NULL;
}

static bool pq_ok(PGconn *c, const char *sql, int *rc)
{
    PGresult *r = pq_run(c, sql, NULL, rc);
    PQclear(r);
    return r != NULL;
}

static uint64_t u64_at(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoull(PQgetvalue(r, row, col), NULL, 10);
}

static int64_t i64_at(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool bool_at(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static void name_at(char *out, const PGresult *r, int row, int col)
{
    snprintf(out, DB_NAME_MAX + 1, "%s", PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* The schema's text codes. */
static int code_of(const char *s)
{
    static const struct {
        const char *name;
        int rc;
    } codes[] = {
        {"ok", ERR_OK},
        {"forbidden", ERR_FORBIDDEN},
        {"invalid", ERR_INVALID},
        {"not_found", ERR_NOT_FOUND},
        {"user_not_found", ERR_USER_NOT_FOUND},
        {"too_many_members", ERR_TOO_MANY_MEMBERS},
        {"already_member", ERR_ALREADY_MEMBER},
        {"not_member", ERR_NOT_MEMBER},
        {"username_taken", ERR_USERNAME_TAKEN},
        {"cmid_reused", ERR_CMID_REUSED},
    };
    for (size_t i = 0; s && i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(s, codes[i].name)) return codes[i].rc;
    return ERR_IO;
}

/* Every connection's session: acks after a durable COMMIT, text as UTF-8. */
static const char SESSION_SQL[] = "set synchronous_commit = on; set client_encoding = 'UTF8'";

static PGconn *connect_db(const char *url, char *err, size_t cap)
{
    /* the URL's own settings, and a bound on a connect that hangs (a
     * network cut) unless the URL sets one */
    const char *keys[] = {"connect_timeout", "dbname", NULL};
    const char *vals[] = {"5", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, cap, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    int rc;
    if (!pq_ok(c, SESSION_SQL, &rc)) {
        snprintf(err, cap, "cannot set up the session");
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* A connection that works, reset once if it broke. An idle connection
 * has nothing to read unless its server spoke first (a FATAL before a
 * restart, or its end): then it is reset too. */
static bool conn_alive(PGconn *c)
{
    struct pollfd p = {PQsocket(c), POLLIN, 0};
    bool spoke = PQtransactionStatus(c) == PQTRANS_IDLE && poll(&p, 1, 0) != 0;
    if (PQstatus(c) == CONNECTION_OK && !spoke) return true;
    PQreset(c);
    if (PQstatus(c) != CONNECTION_OK) return false;
    int rc;
    return pq_ok(c, SESSION_SQL, &rc);
}

/* ---- copies ------------------------------------------------------------------------ */

static const char CONVS_SQL[] =
    "select id, type, name, last_seq, last_ts from convs where id = any($1::bigint[])";
static const char MEMBERS_SQL[] =
    "select m.conv, m.uid, m.role, m.invited, m.delivered_seq, m.read_seq, u.name, u.last_seen"
    " from members m join users u on u.id = m.uid where m.conv = any($1::bigint[])"
    " order by m.conv, m.uid";
static const char LAST_SQL[] =
    "select g.conv, g.seq, g.sender, g.ts, g.cmid, g.body, coalesce(u.name, '')"
    " from convs c join messages g on g.conv = c.id and g.seq = c.last_seq"
    " left join users u on u.id = g.sender where c.id = any($1::bigint[])";

static void msg_at(db_msg *m, const PGresult *r, int row, int col, char *tail)
{
    m->seq = u64_at(r, row, col);
    m->from = u64_at(r, row, col + 1);
    m->ts = i64_at(r, row, col + 2);
    size_t cl = (size_t)PQgetlength(r, row, col + 3), bl = (size_t)PQgetlength(r, row, col + 4);
    memcpy(tail, PQgetvalue(r, row, col + 3), cl);
    memcpy(tail + cl, PQgetvalue(r, row, col + 4), bl);
    m->cmid = tail;
    m->cmid_len = cl;
    m->body = tail + cl;
    m->body_len = bl;
    name_at(m->from_name, r, row, col + 5);
}

/* The conversations ids[n] as viewer sees them (viewer 0: nobody), each
 * out[i] a copy or NULL (none, or viewer is not a member), in the caller's
 * transaction (or none: then three statements, possibly of three states). */
static int conv_copies(PGconn *c, const uint64_t *ids, size_t n, uint64_t viewer, db_conv **out)
{
    for (size_t i = 0; i < n; i++) out[i] = NULL;
    if (!n) return ERR_OK;
    int rc = ERR_OK;
    pq_args a = {0};
    PGresult *cv = NULL, *mm = NULL, *lm = NULL;
    if (!arg_u64s(&a, ids, n) || !(cv = pq_run(c, CONVS_SQL, &a, &rc))) goto done;
    a.n = 0;
    if (!arg_u64s(&a, ids, n) || !(mm = pq_run(c, MEMBERS_SQL, &a, &rc))) goto done;
    a.n = 0;
    if (!arg_u64s(&a, ids, n) || !(lm = pq_run(c, LAST_SQL, &a, &rc))) goto done;
    int nm = PQntuples(mm), nl = PQntuples(lm);
    for (int row = 0; row < PQntuples(cv); row++) {
        uint64_t id = u64_at(cv, row, 0);
        size_t k = 0;
        while (k < n && ids[k] != id) k++;
        if (k == n || out[k]) continue;
        int first = 0, count = 0;
        while (first < nm && u64_at(mm, first, 0) != id) first++;
        while (first + count < nm && u64_at(mm, first + count, 0) == id) count++;
        int last = -1;
        for (int j = 0; j < nl && last < 0; j++)
            if (u64_at(lm, j, 0) == id) last = j;
        size_t tail = last >= 0 ? (size_t)PQgetlength(lm, last, 4) + (size_t)PQgetlength(lm, last, 5)
                                : 0;
        db_conv *x = calloc(1, sizeof *x + (size_t)count * sizeof x->members[0] + tail);
        if (!x) { rc = ERR_NOMEM; goto done; }
        x->id = id;
        x->type = (uint8_t)u64_at(cv, row, 1);
        name_at(x->name, cv, row, 2);
        x->last_seq = u64_at(cv, row, 3);
        x->last_ts = i64_at(cv, row, 4);
        x->n = (uint32_t)count;
        for (int j = 0; j < count; j++) {
            db_member *m = &x->members[j];
            int r = first + j;
            m->uid = u64_at(mm, r, 1);
            m->role = (uint8_t)u64_at(mm, r, 2);
            m->invited = bool_at(mm, r, 3);
            m->delivered = u64_at(mm, r, 4);
            m->read = u64_at(mm, r, 5);
            name_at(m->name, mm, r, 6);
            m->last_seen = i64_at(mm, r, 7);
            if (viewer && m->uid == viewer) x->me = m;
        }
        if (last >= 0) msg_at(&x->last, lm, last, 1, (char *)(x->members + count));
        if (viewer && !x->me) { free(x); continue; }
        out[k] = x;
    }
done:
    PQclear(cv);
    PQclear(mm);
    PQclear(lm);
    if (rc < 0)
        for (size_t i = 0; i < n; i++) { free(out[i]); out[i] = NULL; }
    return rc;
}

static int members_of(PGconn *c, uint64_t conv, audience **out)
{
    pq_args a = {0};
    arg_u64(&a, conv);
    int rc = ERR_OK;
    PGresult *r = pq_run(c, "select uid from members where conv = $1 order by uid", &a, &rc);
    if (!r) return rc;
    audience *x = audience_new((size_t)PQntuples(r));
    if (x)
        for (int i = 0; i < PQntuples(r); i++) x->uids[i] = u64_at(r, i, 0);
    PQclear(r);
    if (!x) return ERR_NOMEM;
    *out = x;
    return ERR_OK;
}

/* ---- the writer ------------------------------------------------------------------------ */

/* op->aud for the members at version mv of op->conv (writer thread). */
static int audience_at(pgdb *x, db_op *op, uint64_t mv)
{
    pg_aud *e = u64map_get(&x->auds, op->conv);
    if (!e || e->version != mv) {
        audience *a;
        int rc = members_of(x->wconn, op->conv, &a);
        if (rc < 0) return rc;
        if (!e) {
            if (x->auds.count >= DB_PG_AUDIENCES) {
                for (size_t i = 0; i < x->auds.cap; i++)
                    if (x->auds.slots[i].key) {
                        pg_aud *o = x->auds.slots[i].val;
                        audience_unref(o->a);
                        free(o);
                    }
                u64map_free(&x->auds);
                u64map_init(&x->auds);
            }
            if (!(e = calloc(1, sizeof *e)) || u64map_put(&x->auds, op->conv, e) < 0) {
                free(e);
                audience_unref(op->aud);
                op->aud = a;
                op->members_version = mv;
                return ERR_OK;
            }
        }
        audience_unref(e->a);
        e->a = a;
        e->version = mv;
    }
    audience_unref(op->aud);
    op->aud = audience_ref(e->a);
    op->members_version = mv;
    return ERR_OK;
}

/* The members after a membership change, and the conversation (after). */
static int changed_conv(pgdb *x, db_op *op, uint64_t conv)
{
    audience *a;
    int rc = members_of(x->wconn, conv, &a);
    if (rc < 0) return rc;
    audience_unref(op->aud);
    op->aud = a;
    op->members_version = 0;
    free(op->after);
    op->after = NULL;
    return conv_copies(x->wconn, &conv, 1, 0, &op->after);
}

static void clear_results(db_op *op)
{
    free(op->after);
    op->after = NULL;
    if (op->left)
        for (size_t i = 0; i < op->nuids; i++) free(op->left[i]);
    free(op->left);
    op->left = NULL;
    op->duplicate = op->changed = false;
}

/* One op other than a send, cursor move or last_seen (run_fast) in the
 * batch's transaction: its domain result in op->rc, or a negative return
 * when the transaction is broken. */
static int run_op(pgdb *x, db_op *op)
{
    PGconn *c = x->wconn;
    const db_options *o = &x->opt;
    pq_args a = {0};
    PGresult *r = NULL;
    int rc = ERR_OK;
    int64_t now = now_ms();
    clear_results(op);
    switch (op->kind) {
    case OP_REGISTER:
        arg_str(&a, op->name);
        arg_str(&a, op->pwhash);
        arg_i64(&a, now);
        arg_bytes(&a, op->new_token_hash, 32);
        arg_i64(&a, op->expires);
        if (!(r = pq_run(c, "select rc, user_id from parley_register($1, $2, $3, $4, $5)", &a, &rc)))
            return rc;
        op->rc = code_of(PQgetvalue(r, 0, 0));
        if (op->rc == ERR_OK) {
            op->who.uid = u64_at(r, 0, 1);
            op->who.device = 1;
            snprintf(op->who.name, sizeof op->who.name, "%s", op->name);
        }
        break;
    case OP_LOGIN:
        arg_u64(&a, op->who.uid);
        arg_bytes(&a, op->new_token_hash, 32);
        arg_i64(&a, op->expires);
        if (!(r = pq_run(c, "select rc, dev from parley_login($1, $2, $3)", &a, &rc))) return rc;
        op->rc = code_of(PQgetvalue(r, 0, 0));
        if (op->rc == ERR_OK) op->who.device = (uint32_t)u64_at(r, 0, 1);
        break;
    case OP_LOGOUT:
        arg_bytes(&a, op->who.token_hash, 32);
        if (!(r = pq_run(c, "delete from sessions where token_hash = $1", &a, &rc))) return rc;
        op->rc = ERR_OK;
        break;
    case OP_DIRECT:
        arg_u64(&a, op->who.uid);
        arg_u64(&a, op->target);
        arg_i64(&a, now);
        arg_u64(&a, o->max_user_convs);
        if (!(r = pq_run(c, "select rc, conv_id, dup from parley_direct($1, $2, $3, $4)", &a, &rc)))
            return rc;
        op->rc = code_of(PQgetvalue(r, 0, 0));
        if (op->rc == ERR_OK) {
            op->conv = u64_at(r, 0, 1);
            op->duplicate = bool_at(r, 0, 2);
            if ((rc = changed_conv(x, op, op->conv)) < 0) break;
            if (op->duplicate) { free(op->after); op->after = NULL; }
        }
        break;
    case OP_GROUP:
        arg_u64(&a, op->who.uid);
        arg_str(&a, op->name);
        if (!arg_u64s(&a, op->uids, op->nuids)) { rc = ERR_NOMEM; break; }
        arg_i64(&a, now);
        arg_u64(&a, o->max_user_convs);
        if (!(r = pq_run(c, "select rc, conv_id from parley_group($1, $2, $3::bigint[], $4, $5)", &a,
                         &rc)))
            return rc;
        op->rc = code_of(PQgetvalue(r, 0, 0));
        if (op->rc == ERR_OK) {
            op->conv = u64_at(r, 0, 1);
            rc = changed_conv(x, op, op->conv);
        }
        break;
    case OP_ADD:
    case OP_REMOVE:
        arg_u64(&a, op->who.uid);
        arg_u64(&a, op->conv);
        arg_u64(&a, op->target);
        if (op->kind == OP_ADD) {
            arg_u64(&a, o->max_group_members);
            arg_u64(&a, o->max_user_convs);
        }
        if (!(r = pq_run(c, op->kind == OP_ADD ? "select parley_add($1, $2, $3, $4, $5)"
                                               : "select parley_remove($1, $2, $3)",
                         &a, &rc)))
            return rc;
        op->rc = code_of(PQgetvalue(r, 0, 0));
        if (op->rc == ERR_OK) rc = changed_conv(x, op, op->conv);
        break;
    case OP_LEAVE: {
        arg_u64(&a, op->who.uid);
        if (!arg_u64s(&a, op->uids, op->nuids)) { rc = ERR_NOMEM; break; }
        if (!(r = pq_run(c, "select unnest(parley_leave($1, $2::bigint[]))", &a, &rc))) return rc;
        if ((size_t)PQntuples(r) != op->nuids) { rc = ERR_IO; break; }
        op->rc = ERR_OK;
        if (!(op->left = calloc(op->nuids ? op->nuids : 1, sizeof *op->left))) { rc = ERR_NOMEM; break; }
        for (size_t i = 0; i < op->nuids; i++) {
            op->rcs[i] = code_of(PQgetvalue(r, (int)i, 0));
            if (op->rcs[i] != ERR_OK) continue;
            if ((rc = conv_copies(c, &op->uids[i], 1, 0, &op->left[i])) < 0) break;
            if (op->left[i] && !op->left[i]->n) { free(op->left[i]); op->left[i] = NULL; }
        }
        break;
    }
    default:
        op->rc = ERR_INVALID;
        break;
    }
    free(a.heap);
    PQclear(r);
    return rc;
}

/* A member's cursor moved twice in one batch: only the last move is told. */
static void supersede_cursors(writer_op *ops)
{
    u64map latest;
    u64map_init(&latest);
    for (writer_op *w = ops; w; w = w->next) {
        db_op *op = (db_op *)w;
        if (op->kind != OP_CURSOR || op->rc != ERR_OK || !op->changed) continue;
        uint64_t key = (op->conv << 32) ^ op->who.uid;
        db_op *prev = u64map_get(&latest, key);
        if (prev && prev->conv == op->conv && prev->who.uid == op->who.uid) prev->changed = false;
        u64map_put(&latest, key, op);
    }
    u64map_free(&latest);
}

/* ---- the hot path, pipelined ---- */

#define DB_PG_PIPELINE 128 /* statements sent before their results are read */

static bool is_fast(const writer_op *w)
{
    uint8_t k = ((const db_op *)w)->kind;
    return k == OP_SEND || k == OP_CURSOR || k == OP_LAST_SEEN;
}

static const char SEND_SQL[] =
    "select rc, seq_out, ts_out, dup, mv from parley_send($1, $2, $3, $4, $5, $6)";
static const char CURSOR_SQL[] =
    "select rc, changed, dl_out, rd_out, mv from parley_cursor($1, $2, $3, $4, $5, $6)";
static const char SEEN_SQL[] = "update users set last_seen = $2 where id = $1 and last_seen < $2";

/* A send, cursor move or last_seen: its statement (a: its parameters). */
static const char *fast_stmt(const pgdb *x, db_op *op, pq_args *a, int64_t now)
{
    a->n = 0;
    arg_u64(a, op->kind == OP_LAST_SEEN ? op->who.uid : op->conv);
    if (op->kind == OP_LAST_SEEN) {
        arg_i64(a, op->ts);
        return SEEN_SQL;
    }
    arg_u64(a, op->who.uid);
    if (op->kind == OP_SEND) {
        arg_bytes(a, op->cmid, op->cmid_len);
        arg_bytes(a, op->body, op->body_len);
        arg_i64(a, now);
    } else {
        arg_u64(a, op->delivered);
        arg_u64(a, op->read);
        arg_bool(a, op->accept);
    }
    arg_u64(a, x->opt.max_user_convs);
    return op->kind == OP_SEND ? SEND_SQL : CURSOR_SQL;
}

/* Its answer into op; the members_version it names in op->members_version
 * (the audience is looked up after the pipeline). */
static void fast_result(db_op *op, const PGresult *r)
{
    op->duplicate = op->changed = false;
    op->members_version = 0;
    if (op->kind == OP_LAST_SEEN) { op->rc = ERR_OK; return; }
    op->rc = code_of(PQgetvalue(r, 0, 0));
    if (op->rc != ERR_OK) return;
    if (op->kind == OP_SEND) {
        op->seq = u64_at(r, 0, 1);
        op->ts = i64_at(r, 0, 2);
        op->duplicate = bool_at(r, 0, 3);
    } else {
        op->changed = bool_at(r, 0, 1);
        op->delivered = u64_at(r, 0, 2);
        op->read = u64_at(r, 0, 3);
    }
    op->members_version = u64_at(r, 0, 4);
}

static int result_rc(PGconn *c, const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (PQstatus(c) != CONNECTION_OK) return ERR_UNAVAILABLE;
    if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01"))) return ERR_AGAIN;
    if (r && PQresultStatus(r) != PGRES_PIPELINE_ABORTED)
        log_error("database statement failed", "err=\"%s\"", PQresultErrorMessage(r));
    return ERR_IO;
}

/* n fast ops from first, in one round trip: every statement sent, then
 * every answer read (libpq's pipeline mode); then the audiences. */
static int run_fast(pgdb *x, writer_op *first, size_t n)
{
    PGconn *c = x->wconn;
    if (!PQenterPipelineMode(c)) return ERR_IO;
    int64_t now = now_ms();
    pq_args a = {0};
    size_t sent = 0;
    int rc = ERR_OK;
    for (writer_op *w = first; sent < n; w = w->next, sent++) {
        const char *sql = fast_stmt(x, (db_op *)w, &a, now);
        if (!PQsendQueryParams(c, sql, a.n, NULL, a.v, a.len, a.fmt, 0)) {
            rc = PQstatus(c) != CONNECTION_OK ? ERR_UNAVAILABLE : ERR_IO;
            break;
        }
    }
    if (!PQpipelineSync(c) && rc == ERR_OK) rc = ERR_UNAVAILABLE;
    writer_op *w = first;
    for (size_t i = 0; i < sent; i++, w = w->next) {
        PGresult *r = PQgetResult(c);
        if (!r) { rc = ERR_UNAVAILABLE; break; }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            if (rc == ERR_OK) fast_result((db_op *)w, r);
        } else if (rc == ERR_OK) {
            rc = result_rc(c, r);
        }
        PQclear(r);
        while ((r = PQgetResult(c))) PQclear(r); /* this statement's end (NULL) */
    }
    /* the sync's own result, then out of pipeline mode */
    for (int guard = 0; guard < 4; guard++) {
        PGresult *r = PQgetResult(c);
        if (!r) continue;
        bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
        PQclear(r);
        if (sync) break;
    }
    if (!PQexitPipelineMode(c) && rc == ERR_OK) rc = ERR_IO;
    w = first;
    for (size_t i = 0; rc == ERR_OK && i < n; i++, w = w->next) {
        db_op *op = (db_op *)w;
        if (op->kind != OP_LAST_SEEN && op->rc == ERR_OK)
            rc = audience_at(x, op, op->members_version);
    }
    return rc;
}

/* Runs a batch: ERR_OK (each op's result in op->rc), or why it failed whole.
 * Runs of sends, cursor moves and last_seen go pipelined; the rest one by one. */
static int run_ops(pgdb *x, writer_op *ops)
{
    int rc = ERR_OK;
    for (writer_op *w = ops; w && rc == ERR_OK;) {
        if (!is_fast(w)) {
            rc = run_op(x, (db_op *)w);
            w = w->next;
            continue;
        }
        size_t n = 0;
        writer_op *end = w;
        while (end && is_fast(end) && n < DB_PG_PIPELINE) { end = end->next; n++; }
        rc = run_fast(x, w, n);
        w = end;
    }
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Rows a batch writes, locked first and in one order: the conversations
 * (by id) its sends, cursor moves, adds, removes and leaves write, then
 * the users (by id) its last_seen and logins write. Two nodes' batches
 * over the same rows then wait for each other instead of deadlocking
 * (each op locks its own rows in the batch's order otherwise; a member's
 * row is written only under its conversation's). One op alone needs
 * nothing. */
static bool conv_op(uint8_t k) { return k == OP_SEND || k == OP_CURSOR || k == OP_ADD || k == OP_REMOVE; }
static bool user_op(uint8_t k) { return k == OP_LAST_SEEN || k == OP_LOGIN; }

static int lock_sorted(pgdb *x, const char *sql, uint64_t *ids, size_t n)
{
    qsort(ids, n, sizeof *ids, cmp_u64);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] && (!u || ids[i] != ids[u - 1])) ids[u++] = ids[i];
    if (!u) return ERR_OK;
    int rc = ERR_OK;
    pq_args a = {0};
    if (!arg_u64s(&a, ids, u)) return ERR_NOMEM;
    PQclear(pq_run(x->wconn, sql, &a, &rc));
    return rc;
}

static int lock_rows(pgdb *x, writer_op *ops)
{
    size_t nc = 0, nu = 0, total = 0;
    for (writer_op *w = ops; w; w = w->next, total++) {
        db_op *op = (db_op *)w;
        if (conv_op(op->kind)) nc++;
        if (op->kind == OP_LEAVE) nc += op->nuids;
        if (user_op(op->kind)) nu++;
    }
    if (total < 2 || (!nc && !nu)) return ERR_OK;
    uint64_t *convs = malloc((nc + nu + 1) * sizeof *convs), *uids = convs + nc;
    if (!convs) return ERR_NOMEM;
    size_t c = 0, u = 0;
    for (writer_op *w = ops; w; w = w->next) {
        db_op *op = (db_op *)w;
        if (conv_op(op->kind)) convs[c++] = op->conv;
        if (op->kind == OP_LEAVE)
            for (size_t i = 0; i < op->nuids; i++) convs[c++] = op->uids[i];
        if (user_op(op->kind)) uids[u++] = op->who.uid;
    }
    int rc = lock_sorted(x, "select id from convs where id = any($1::bigint[]) order by id for update",
                         convs, c);
    if (rc == ERR_OK)
        rc = lock_sorted(x, "select id from users where id = any($1::bigint[]) order by id for update",
                         uids, u);
    free(convs);
    return rc;
}

static int run_batch(pgdb *x, writer_op *ops)
{
    int rc = ERR_OK;
    for (int attempt = 0; attempt <= DB_PG_RETRIES; attempt++) {
        if (!conn_alive(x->wconn)) return ERR_UNAVAILABLE;
        rc = ERR_OK;
        if (!pq_ok(x->wconn, "begin", &rc)) continue;
        rc = lock_rows(x, ops);
        if (rc == ERR_OK) rc = run_ops(x, ops);
        if (rc == ERR_OK && pq_ok(x->wconn, "commit", &rc)) return ERR_OK;
        int ignore;
        if (PQstatus(x->wconn) == CONNECTION_OK) pq_ok(x->wconn, "rollback", &ignore);
        if (rc != ERR_AGAIN && rc != ERR_UNAVAILABLE) return rc;
    }
    return rc == ERR_AGAIN ? ERR_BUSY : rc;
}

#define DB_PG_COUNT_MS 60000 /* how often the writer recounts users and conversations */
#define DB_PG_PING_MS 2000   /* how often an idle writer checks the database is there */

static void set_down(pgdb *x, bool down)
{
    if (__atomic_exchange_n(&x->down, down, __ATOMIC_RELAXED) != down) {
        if (down) log_error("the database cannot be reached", "store=postgresql");
        else log_info("the database can be reached again", "store=postgresql");
    }
}

/* An idle writer's look at the database, for /healthz. */
static void ping(pgdb *x)
{
    int64_t now = now_ms();
    if (now - x->pinged_at < DB_PG_PING_MS) return;
    x->pinged_at = now;
    int rc;
    set_down(x, !(conn_alive(x->wconn) && pq_ok(x->wconn, "select 1", &rc)));
}

/* The counts of the metrics page, which must not wait for the database:
 * this node's own registrations and new conversations are added as they
 * commit; a recount between batches, once a minute, adds the others'. */
static void count(pgdb *x)
{
    int64_t now = now_ms();
    if (now - x->counted_at < DB_PG_COUNT_MS) return;
    x->counted_at = now;
    int rc;
    PGresult *r = conn_alive(x->wconn)
                      ? pq_run(x->wconn, "select (select count(*) from users), (select count(*) from convs)",
                               NULL, &rc)
                      : NULL;
    if (!r) return;
    __atomic_store_n(&x->nusers, u64_at(r, 0, 0), __ATOMIC_RELAXED);
    __atomic_store_n(&x->nconvs, u64_at(r, 0, 1), __ATOMIC_RELAXED);
    PQclear(r);
}

static void *writer_main(void *arg)
{
    pgdb *x = arg;
    pthread_mutex_lock(&x->mu);
    for (;;) {
        while (!x->head && !x->stopping) {
            pthread_mutex_unlock(&x->mu);
            ping(x);
            count(x);
            pthread_mutex_lock(&x->mu);
            if (x->head || x->stopping) break;
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += DB_PG_PING_MS / 1000;
            pthread_cond_timedwait(&x->cond, &x->mu, &until);
        }
        if (!x->head) break;
        writer_op *ops = x->head, *last = ops;
        size_t n = 1;
        while (last->next && n < DB_PG_MAX_BATCH) { last = last->next; n++; }
        x->head = last->next;
        if (!x->head) x->tail = NULL;
        last->next = NULL;
        x->queued -= n;
        pthread_mutex_unlock(&x->mu);

        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = run_batch(x, ops);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        set_down(x, rc == ERR_UNAVAILABLE);
        x->pinged_at = now_ms();
        uint64_t ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)t1.tv_nsec -
                      (uint64_t)t0.tv_nsec;
        if (rc < 0) log_error("storage batch failed", "ops=%zu err=%s", n, err_name(rc));
        else supersede_cursors(ops);
        for (writer_op *w = ops; rc >= 0 && w; w = w->next) {
            db_op *op = (db_op *)w;
            if (op->rc != ERR_OK) continue;
            if (op->kind == OP_REGISTER) __atomic_add_fetch(&x->nusers, 1, __ATOMIC_RELAXED);
            if ((op->kind == OP_DIRECT && !op->duplicate) || op->kind == OP_GROUP)
                __atomic_add_fetch(&x->nconvs, 1, __ATOMIC_RELAXED);
        }
        pthread_mutex_lock(&x->mu);
        x->st.batches++;
        x->st.ops += n;
        if (rc < 0) x->st.failed_batches++;
        if (n > x->st.max_batch) x->st.max_batch = n;
        x->st.commit_ns += ns;
        hist_observe(&x->st.batch_ns, &hist_seconds, ns);
        hist_observe(&x->st.fsync_ns, &hist_seconds, ns);
        hist_observe(&x->st.batch_ops, &hist_sizes, n);
        pthread_mutex_unlock(&x->mu);
        for (writer_op *w = ops, *next; w; w = next) {
            next = w->next; /* done() may free it */
            w->next = NULL;
            db_op *op = (db_op *)w;
            w->done(w, rc < 0 ? rc : op->rc);
        }
        if (x->opt.batch_end) x->opt.batch_end(x->opt.ctx);
        pthread_mutex_lock(&x->mu);
    }
    pthread_mutex_unlock(&x->mu);
    return NULL;
}

/* ---- the backend -------------------------------------------------------------------- */

static int pg_submit(db *d, db_op *op)
{
    pgdb *x = (pgdb *)d;
    pthread_mutex_lock(&x->mu);
    int rc = x->stopping ? ERR_CLOSED : x->queued >= x->opt.max_queue ? ERR_BUSY : ERR_OK;
    if (rc == ERR_OK) {
        op->wop.next = NULL;
        if (x->tail) x->tail->next = &op->wop;
        else x->head = &op->wop;
        x->tail = &op->wop;
        x->queued++;
        pthread_cond_signal(&x->cond);
    }
    pthread_mutex_unlock(&x->mu);
    return rc;
}

static void pg_settle(db *d, uint64_t conv)
{
    (void)d; /* an ack follows the COMMIT: every later read sees it */
    (void)conv;
}

static void pg_stats(db *d, writer_stats *st)
{
    pgdb *x = (pgdb *)d;
    pthread_mutex_lock(&x->mu);
    *st = x->st;
    st->queued = x->queued;
    pthread_mutex_unlock(&x->mu);
}

static void close_idle(pgdb *x)
{
    for (int i = 0; i < x->nfree; i++) PQfinish(x->free_conns[i]);
    x->nfree = x->nconns = 0;
}

static void pg_close(db *d)
{
    pgdb *x = (pgdb *)d;
    pthread_mutex_lock(&x->mu);
    x->stopping = true;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->mu);
    pthread_join(x->tid, NULL);
    PQfinish(x->wconn);
    for (size_t i = 0; i < x->auds.cap; i++)
        if (x->auds.slots[i].key) {
            pg_aud *e = x->auds.slots[i].val;
            audience_unref(e->a);
            free(e);
        }
    u64map_free(&x->auds);
    close_idle(x);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cond);
    pthread_mutex_destroy(&x->rmu);
    pthread_cond_destroy(&x->rcond);
    free(x->url);
    free(x);
}

static int pg_open(db **out, const db_options *o)
{
    if (!o->url) return ERR_INVALID;
    pgdb *x = calloc(1, sizeof *x);
    if (!x) return ERR_NOMEM;
    x->base.vfs = &db_pg;
    x->opt = *o;
    if (!(x->url = strdup(o->url))) { free(x); return ERR_NOMEM; }
    x->opt.url = x->url;
    x->opt.data_dir = NULL;
    pthread_mutex_init(&x->mu, NULL);
    pthread_cond_init(&x->cond, NULL);
    pthread_mutex_init(&x->rmu, NULL);
    pthread_cond_init(&x->rcond, NULL);
    u64map_init(&x->auds);
    char err[512];
    int found = 0, rc;
    if (!(x->wconn = connect_db(x->url, err, sizeof err))) {
        log_error("cannot connect to the database", "err=\"%s\"", err);
        rc = ERR_UNAVAILABLE;
        goto fail;
    }
    if ((rc = pg_schema_migrate(x->wconn, &found, err, sizeof err)) < 0) {
        if (rc == ERR_VERSION)
            log_error("the database's schema is newer than this parleyd: run the newer parleyd",
                      "found=%d known=%d", found, pg_schema_version());
        else log_error("cannot bring the database's schema up to date", "err=\"%s\"", err);
        goto fail;
    }
    if (found < pg_schema_version())
        log_info("database schema migrated", "from=%d to=%d", found, pg_schema_version());
    if (pthread_create(&x->tid, NULL, writer_main, x) != 0) { rc = ERR_IO; goto fail; }
    *out = &x->base;
    return ERR_OK;
fail:
    PQfinish(x->wconn);
    u64map_free(&x->auds);
    pthread_mutex_destroy(&x->mu);
    pthread_cond_destroy(&x->cond);
    pthread_mutex_destroy(&x->rmu);
    pthread_cond_destroy(&x->rcond);
    free(x->url);
    free(x);
    return rc;
}

/* ---- reads ----------------------------------------------------------------------------- */

static PGconn *borrow(pgdb *x)
{
    pthread_mutex_lock(&x->rmu);
    while (!x->nfree && x->nconns >= DB_PG_READ_CONNS) pthread_cond_wait(&x->rcond, &x->rmu);
    PGconn *c = NULL;
    if (x->nfree) c = x->free_conns[--x->nfree];
    else x->nconns++;
    pthread_mutex_unlock(&x->rmu);
    if (c) {
        if (conn_alive(c)) return c; /* reset first if its server went away */
        PQfinish(c);
    } else {
        char err[512];
        if ((c = connect_db(x->url, err, sizeof err))) return c;
        log_warn("cannot connect to the database", "err=\"%s\"", err);
    }
    pthread_mutex_lock(&x->rmu); /* one connection fewer */
    x->nconns--;
    pthread_cond_signal(&x->rcond);
    pthread_mutex_unlock(&x->rmu);
    return NULL;
}

static void give_back(pgdb *x, PGconn *c)
{
    pthread_mutex_lock(&x->rmu);
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE)
        x->free_conns[x->nfree++] = c;
    else {
        PQfinish(c);
        x->nconns--;
    }
    pthread_cond_signal(&x->rcond);
    pthread_mutex_unlock(&x->rmu);
}

static const char READ_TXN[] = "begin isolation level repeatable read read only";

static int pg_session(db *d, const uint8_t h[32], db_ident *who)
{
    pgdb *x = (pgdb *)d;
    PGconn *c = borrow(x);
    if (!c) return ERR_UNAVAILABLE;
    pq_args a = {0};
    arg_bytes(&a, h, 32);
    int rc = ERR_OK;
    PGresult *r = pq_run(c,
                         "select s.uid, s.device, s.expires, u.name from sessions s"
                         " join users u on u.id = s.uid where s.token_hash = $1",
                         &a, &rc);
    if (r && !PQntuples(r)) rc = ERR_NOT_FOUND;
    else if (r) {
        who->uid = u64_at(r, 0, 0);
        who->device = (uint32_t)u64_at(r, 0, 1);
        who->expires = i64_at(r, 0, 2);
        memcpy(who->token_hash, h, sizeof who->token_hash);
        name_at(who->name, r, 0, 3);
    }
    PQclear(r);
    give_back(x, c);
    return rc;
}

static int pg_account(db *d, const char *name, db_account *out)
{
    pgdb *x = (pgdb *)d;
    PGconn *c = borrow(x);
    if (!c) return ERR_UNAVAILABLE;
    pq_args a = {0};
    arg_str(&a, name);
    int rc = ERR_OK;
    PGresult *r = pq_run(c, "select id, name, pwhash from users where name = $1", &a, &rc);
    if (r && !PQntuples(r)) rc = ERR_NOT_FOUND;
    else if (r) {
        out->id = u64_at(r, 0, 0);
        name_at(out->name, r, 0, 1);
        snprintf(out->pwhash, sizeof out->pwhash, "%s", PQgetvalue(r, 0, 2));
    }
    PQclear(r);
    give_back(x, c);
    return rc;
}

static int pg_users(db *d, const uint64_t *uids, size_t n, db_user *out)
{
    for (size_t i = 0; i < n; i++) memset(&out[i], 0, sizeof out[i]);
    if (!n) return ERR_OK;
    pgdb *x = (pgdb *)d;
    PGconn *c = borrow(x);
    if (!c) return ERR_UNAVAILABLE;
    pq_args a = {0};
    int rc = ERR_OK;
    PGresult *r = NULL;
    if (!arg_u64s(&a, uids, n)) rc = ERR_NOMEM;
    else if ((r = pq_run(c, "select id, name, last_seen from users where id = any($1::bigint[])", &a,
                         &rc))) {
        for (int row = 0; row < PQntuples(r); row++) {
            uint64_t id = u64_at(r, row, 0);
            for (size_t i = 0; i < n; i++)
                if (uids[i] == id) {
                    out[i].id = id;
                    name_at(out[i].name, r, row, 1);
                    out[i].last_seen = i64_at(r, row, 2);
                }
        }
    }
    PQclear(r);
    give_back(x, c);
    return rc;
}

/* Runs fn(c, arg) in a read-only snapshot transaction on a borrowed connection. */
static int in_snapshot(pgdb *x, int (*fn)(PGconn *c, void *arg), void *arg)
{
    PGconn *c = borrow(x);
    if (!c) return ERR_UNAVAILABLE;
    int rc = ERR_OK, ignore;
    if (pq_ok(c, READ_TXN, &rc)) {
        rc = fn(c, arg);
        pq_ok(c, rc < 0 ? "rollback" : "commit", &ignore);
    }
    give_back(x, c);
    return rc;
}

typedef struct conv_read {
    uint64_t conv, viewer;
    db_conv *out;
} conv_read;

static int conv_read_run(PGconn *c, void *arg)
{
    conv_read *q = arg;
    int rc = conv_copies(c, &q->conv, 1, q->viewer, &q->out);
    return rc < 0 ? rc : q->out ? ERR_OK : ERR_FORBIDDEN;
}

static int pg_conv(db *d, uint64_t conv, uint64_t viewer, db_conv **out)
{
    conv_read q = {conv, viewer, NULL};
    int rc = in_snapshot((pgdb *)d, conv_read_run, &q);
    if (rc == ERR_OK) *out = q.out;
    return rc;
}

static bool is_member(PGconn *c, uint64_t conv, uint64_t uid, int *rc)
{
    pq_args a = {0};
    arg_u64(&a, conv);
    arg_u64(&a, uid);
    PGresult *r = pq_run(c, "select 1 from members where conv = $1 and uid = $2", &a, rc);
    bool yes = r && PQntuples(r) == 1;
    PQclear(r);
    if (r && !yes) *rc = ERR_FORBIDDEN;
    return yes;
}

typedef struct members_read {
    uint64_t conv, viewer;
    audience *out;
} members_read;

static int members_read_run(PGconn *c, void *arg)
{
    members_read *q = arg;
    int rc = ERR_OK;
    if (!is_member(c, q->conv, q->viewer, &rc)) return rc;
    return members_of(c, q->conv, &q->out);
}

static int pg_members(db *d, uint64_t conv, uint64_t viewer, audience **out)
{
    members_read q = {conv, viewer, NULL};
    int rc = in_snapshot((pgdb *)d, members_read_run, &q);
    if (rc == ERR_OK) *out = q.out;
    return rc;
}

typedef struct history_read {
    uint64_t conv, viewer, after, before;
    size_t limit, max_bytes;
    db_page *out;
} history_read;

static int history_run(PGconn *c, void *arg)
{
    history_read *q = arg;
    int rc = ERR_OK;
    if (!is_member(c, q->conv, q->viewer, &rc)) return rc;
    bool forward = q->before == 0;
    pq_args a = {0};
    arg_u64(&a, q->conv);
    arg_u64(&a, forward ? q->after : q->before == UINT64_MAX ? (uint64_t)INT64_MAX : q->before);
    arg_u64(&a, q->limit + 1);
    PGresult *r = pq_run(c,
                         forward ? "select g.seq, g.sender, g.ts, g.cmid, g.body, coalesce(u.name, '')"
                                   " from messages g left join users u on u.id = g.sender"
                                   " where g.conv = $1 and g.seq > $2 order by g.seq limit $3"
                                 : "select g.seq, g.sender, g.ts, g.cmid, g.body, coalesce(u.name, '')"
                                   " from messages g left join users u on u.id = g.sender"
                                   " where g.conv = $1 and g.seq < $2 order by g.seq desc limit $3",
                         &a, &rc);
    if (!r) return rc;
    int rows = PQntuples(r);
    size_t n = 0, spent = 0, bytes = 0;
    bool more = (size_t)rows > q->limit;
    /* the run that fits: from the anchor, at least one */
    while (n < (size_t)rows && n < q->limit) {
        size_t cl = (size_t)PQgetlength(r, (int)n, 3), bl = (size_t)PQgetlength(r, (int)n, 4);
        size_t cost = db_msg_floor((size_t)PQgetlength(r, (int)n, 5), cl, bl);
        if (n && spent + cost > q->max_bytes) { more = true; break; }
        spent += cost;
        bytes += cl + bl;
        n++;
    }
    db_page *p = malloc(sizeof *p + n * sizeof p->msgs[0] + bytes);
    if (!p) { PQclear(r); return ERR_NOMEM; }
    p->n = n;
    p->more = more;
    char *tail = (char *)(p->msgs + n);
    for (size_t i = 0; i < n; i++) {
        db_msg *m = &p->msgs[forward ? i : n - 1 - i]; /* ascending */
        msg_at(m, r, (int)i, 0, tail);
        tail += m->cmid_len + m->body_len;
    }
    PQclear(r);
    q->out = p;
    return ERR_OK;
}

static int pg_history(db *d, uint64_t conv, uint64_t viewer, uint64_t after, uint64_t before,
                      size_t limit, size_t max_bytes, db_page **out)
{
    history_read q = {conv, viewer, after, before, limit, max_bytes, NULL};
    if (before == 1) { /* nothing before the first */
        int rc = ERR_OK;
        PGconn *c = borrow((pgdb *)d);
        if (!c) return ERR_UNAVAILABLE;
        bool yes = is_member(c, conv, viewer, &rc);
        give_back((pgdb *)d, c);
        if (!yes) return rc;
        db_page *p = calloc(1, sizeof *p);
        if (!p) return ERR_NOMEM;
        *out = p;
        return ERR_OK;
    }
    int rc = in_snapshot((pgdb *)d, history_run, &q);
    if (rc == ERR_OK) *out = q.out;
    return rc;
}

typedef struct inbox_read {
    const db_inbox_req *q;
    db_inbox *out;
} inbox_read;

static int inbox_run(PGconn *c, void *arg)
{
    inbox_read *ir = arg;
    const db_inbox_req *q = ir->q;
    int rc = ERR_OK;
    /* A cursor is the snapshot's xmin plus the database's cursor base
     * (parley_cursor_base: 0, or above the clock of the embedded store it
     * was migrated from). A changed_since below the base, or one this
     * database has not given yet, lists everything: a change may be
     * listed twice, never missed. */
    PGresult *r = pq_run(c,
                         "select pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
                         " (select base from parley_cursor_base)",
                         NULL, &rc);
    if (!r) return rc;
    uint64_t base = u64_at(r, 0, 1), cursor = u64_at(r, 0, 0) + base;
    PQclear(r);
    if (q->page && (q->snapshot > cursor || q->since > q->snapshot || q->snapshot < base))
        return ERR_INVALID;
    uint64_t since = q->since >= base && q->since <= cursor ? q->since - base : 0;
    if (q->page) cursor = q->snapshot;
    pq_args a = {0};
    arg_u64(&a, q->uid);
    arg_u64(&a, since);
    arg_bool(&a, q->page);
    arg_u64(&a, q->page ? q->snapshot - base : 0);
    arg_i64(&a, q->ts);
    arg_u64(&a, q->conv);
    arg_u64(&a, q->limit + 1);
    /* since: what changed at or after it (a change of a transaction still
     * running when the cursor was taken has an id >= it) */
    r = pq_run(c,
               "select c.id from members m join convs c on c.id = m.conv where m.uid = $1"
               " and ($2::bigint = 0 or c.version >= $2::bigint::text::xid8"
               "  or m.version >= $2::bigint::text::xid8)"
               " and (not $3::boolean or (c.version < $4::bigint::text::xid8 and"
               "  (c.last_ts < $5::bigint or (c.last_ts = $5::bigint and c.id < $6::bigint))))"
               " order by c.last_ts desc, c.id desc limit $7::bigint",
               &a, &rc);
    if (!r) return rc;
    size_t rows = (size_t)PQntuples(r), want = rows < q->limit ? rows : q->limit;
    uint64_t *ids = calloc(want ? want : 1, sizeof *ids);
    db_conv **convs = calloc(want ? want : 1, sizeof *convs);
    db_inbox *in = calloc(1, sizeof *in);
    if (!ids || !convs || !in) {
        free(ids);
        free(convs);
        free(in);
        PQclear(r);
        return ERR_NOMEM;
    }
    for (size_t i = 0; i < want; i++) ids[i] = u64_at(r, (int)i, 0);
    PQclear(r);
    in->cursor = cursor;
    in->convs = convs;
    rc = conv_copies(c, ids, want, q->uid, convs);
    size_t spent = 0, k = 0, i = 0;
    for (; rc >= 0 && i < want; i++) { /* in order, within the budget; the rest freed */
        if (!convs[i]) continue;
        size_t cost = db_conv_floor(convs[i]);
        if (k && spent + cost > q->max_bytes) break;
        spent += cost;
        convs[k++] = convs[i];
        if (k - 1 != i) convs[i] = NULL;
    }
    in->more = i < want || rows > want;
    for (size_t j = k; j < want; j++) { free(convs[j]); convs[j] = NULL; }
    in->n = k;
    free(ids);
    if (rc < 0) { db_inbox_free(in); return rc; }
    ir->out = in;
    return ERR_OK;
}

static int pg_inbox(db *d, const db_inbox_req *q, db_inbox **out)
{
    inbox_read ir = {q, NULL};
    int rc = in_snapshot((pgdb *)d, inbox_run, &ir);
    if (rc == ERR_OK) *out = ir.out;
    return rc;
}

static int pg_contacts(db *d, uint64_t uid, audience **out)
{
    pgdb *x = (pgdb *)d;
    PGconn *c = borrow(x);
    if (!c) return ERR_UNAVAILABLE;
    pq_args a = {0};
    arg_u64(&a, uid);
    int rc = ERR_OK;
    PGresult *r = pq_run(c,
                         "select distinct o.uid from members m join members o on o.conv = m.conv"
                         " where m.uid = $1 and o.uid <> $1",
                         &a, &rc);
    if (r) {
        audience *au = audience_new((size_t)PQntuples(r));
        if (au) {
            for (int i = 0; i < PQntuples(r); i++) au->uids[i] = u64_at(r, i, 0);
            *out = au;
        } else {
            rc = ERR_NOMEM;
        }
    }
    PQclear(r);
    give_back(x, c);
    return rc;
}

static bool pg_healthy(db *d)
{
    return !__atomic_load_n(&((pgdb *)d)->down, __ATOMIC_RELAXED);
}

static void pg_counts(db *d, uint64_t *users, uint64_t *convs)
{
    pgdb *x = (pgdb *)d;
    *users = __atomic_load_n(&x->nusers, __ATOMIC_RELAXED);
    *convs = __atomic_load_n(&x->nconvs, __ATOMIC_RELAXED);
}

const db_vfs db_pg = {
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .submit = pg_submit,
    .settle = pg_settle,
    .stats = pg_stats,
    .session = pg_session,
    .account = pg_account,
    .users = pg_users,
    .conv = pg_conv,
    .members = pg_members,
    .history = pg_history,
    .inbox = pg_inbox,
    .contacts = pg_contacts,
    .healthy = pg_healthy,
    .counts = pg_counts,
};
