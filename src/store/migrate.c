/* migrate: an embedded store into a PostgreSQL database (migrate.h).
 *
 * The copy is one transaction of six COPY ... FROM STDIN (text format),
 * the rows built in a buffer flushed every FLUSH_BYTES, the store read
 * through its whole-table walks (store.h) in key order: memory stays a
 * buffer and a row, however large the store. The tables are locked for
 * the transaction (EXCLUSIVE: a parleyd already on the database waits),
 * and found empty first, in the same transaction.
 *
 * The verify is a merge: the store walked in key order, the database
 * read in the same order through server-side cursors (FETCH FETCH_ROWS at
 * a time) in one repeatable-read, read-only transaction, compared row by
 * row; messages are hashed per conversation on each side (SHA-256 of each
 * message's seq, sender, ts as big-endian u64, cmid and body each as a
 * big-endian u32 length and the bytes) and the digests compared.
 */
#include "store/migrate.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/err.h"
#include "base/log.h"
#include "store/db.h"
#include "store/pg_schema.h"
#include "store/store.h"

#define MAP_SIZE ((size_t)64 << 30)   /* as the server's --store-size default */
#define FLUSH_BYTES ((size_t)256 << 10)
#define FETCH_ROWS 5000

typedef struct mig {
    char *err;
    size_t cap;
    PGconn *pg;
    store *st;
    store_txn *t;
    migrate_report *r;
} mig;

__attribute__((format(printf, 3, 4)))
static int fail(mig *m, int rc, const char *fmt, ...)
{
    if (m->err[0]) return rc;           /* the first reason wins */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, m->cap, fmt, ap);
    va_end(ap);
    size_t n = strlen(m->err);          /* libpq's messages end in newlines */
    while (n && (m->err[n - 1] == '\n' || m->err[n - 1] == ' ')) m->err[--n] = 0;
    return rc;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the database ------------------------------------------------------------ */

static int pg_fail(mig *m, const char *what, const PGresult *res)
{
    int rc = PQstatus(m->pg) == CONNECTION_OK ? ERR_IO : ERR_UNAVAILABLE;
    return fail(m, rc, "%s: %s", what, res ? PQresultErrorMessage(res) : PQerrorMessage(m->pg));
}

static int exec(mig *m, const char *sql)
{
    PGresult *res = PQexec(m->pg, sql);
    ExecStatusType st = PQresultStatus(res);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? ERR_OK : pg_fail(m, sql, res);
    PQclear(res);
    return rc;
}

static int connect_db(mig *m, const char *url)
{
    const char *const keys[] = {"dbname", "connect_timeout", NULL};
    const char *const vals[] = {url, "10", NULL};
    m->pg = PQconnectdbParams(keys, vals, 1);
    if (!m->pg) return fail(m, ERR_NOMEM, "out of memory");
    if (PQstatus(m->pg) != CONNECTION_OK)
        return fail(m, ERR_UNAVAILABLE, "cannot connect to the database: %s",
                    PQerrorMessage(m->pg));
    int rc = exec(m, "set synchronous_commit = on; set client_encoding = 'UTF8'; "
                     "set client_min_messages = warning");
    if (rc < 0) return rc;
    int found = 0;
    char err[512];
    rc = pg_schema_migrate(m->pg, &found, err, sizeof err);
    if (rc == ERR_VERSION)
        return fail(m, rc, "the database has schema version %d, newer than this parleyd "
                           "knows (%d): refusing it", found, pg_schema_version());
    if (rc < 0) return fail(m, PQstatus(m->pg) == CONNECTION_OK ? rc : ERR_UNAVAILABLE,
                            "cannot create the schema: %s", err);
    return ERR_OK;
}

/* ---- the store ----------------------------------------------------------------- */

/* Replays the log into LMDB (the embedded backend's open), then opens the
 * store itself for reading. */
static int open_store(mig *m, const char *dir)
{
    char path[4096];
    struct stat sb;
    if ((size_t)snprintf(path, sizeof path, "%s/data.mdb", dir) >= sizeof path)
        return fail(m, ERR_TOO_LARGE, "--from: path too long");
    if (stat(dir, &sb) != 0)
        return fail(m, ERR_NOT_FOUND, "--from %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode) || stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
        return fail(m, ERR_NOT_FOUND, "--from %s is not a parley data directory (no data.mdb)",
                    dir);
    db_options o = {
        .data_dir = dir, .map_size = MAP_SIZE, .log_segment_bytes = (uint64_t)64 << 20,
        .apply_delay_ms = 0, .commit_window_us = 1000, .max_queue = 1024,
        .max_user_convs = 10000, .max_group_members = 1000,
    };
    db *d = NULL;
    int rc = db_lmdb.open(&d, &o);
    if (rc == ERR_BUSY) {
        int pid = store_lock_pid(dir);
        return fail(m, rc, "%s is in use by another process (pid %d, a parleyd?): stop it "
                           "before migrating", dir, pid);
    }
    if (rc == ERR_VERSION)
        return fail(m, rc, "%s holds another storage format version than this parleyd "
                           "reads (%d): refusing it", dir, STORE_FORMAT_VERSION);
    if (rc == ERR_CORRUPT)
        return fail(m, rc, "%s: its message log is corrupt (file and offset logged above)", dir);
    if (rc < 0)
        return fail(m, rc, "cannot open the store in %s: %s%s%s", dir, err_name(rc),
                    errno ? ", " : "", errno ? strerror(errno) : "");
    db_close(d);                        /* applies everything the log held */
    if ((rc = store_open(&m->st, dir, MAP_SIZE)) < 0)
        return fail(m, rc, "cannot reopen the store in %s: %s", dir, err_name(rc));
    if ((rc = store_begin(m->st, false, &m->t)) < 0)
        return fail(m, rc, "cannot read the store in %s: %s", dir, err_name(rc));
    return ERR_OK;
}

/* ---- COPY ------------------------------------------------------------------------ */

typedef struct cbuf {
    mig *m;
    char *b;
    size_t len, cap;
    int rc;
    uint64_t rows;
} cbuf;

static bool cb_room(cbuf *c, size_t n)
{
    if (c->rc < 0) return false;
    if (c->len + n <= c->cap) return true;
    size_t cap = c->cap ? c->cap : FLUSH_BYTES * 2;
    while (cap < c->len + n) cap *= 2;
    char *b = realloc(c->b, cap);
    if (!b) { c->rc = fail(c->m, ERR_NOMEM, "out of memory"); return false; }
    c->b = b;
    c->cap = cap;
    return true;
}

static void cb_raw(cbuf *c, const char *s, size_t n)
{
    if (!cb_room(c, n)) return;
    memcpy(c->b + c->len, s, n);
    c->len += n;
}

/* A text field of COPY's text format: backslash, newline, CR, tab escaped. */
static void cb_text(cbuf *c, const char *s, size_t n)
{
    if (!cb_room(c, 2 * n)) return;
    char *o = c->b + c->len;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        default: *o++ = ch;
        }
    }
    c->len = (size_t)(o - c->b);
}

static void cb_u64(cbuf *c, uint64_t v, char sep)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%" PRIu64 "%c", v, sep);
    cb_raw(c, t, (size_t)n);
}

static void cb_i64(cbuf *c, int64_t v, char sep)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%" PRId64 "%c", v, sep);
    cb_raw(c, t, (size_t)n);
}

static void cb_flush(cbuf *c)
{
    if (c->rc < 0 || c->len == 0) return;
    if (PQputCopyData(c->m->pg, c->b, (int)c->len) != 1)
        c->rc = pg_fail(c->m, "COPY", NULL);
    c->len = 0;
}

static int cb_row(cbuf *c)
{
    if (c->rc < 0) return c->rc;
    c->b[c->len - 1] = '\n';           /* the last field's separator */
    c->rows++;
    if (c->len >= FLUSH_BYTES) cb_flush(c);
    return c->rc;
}

static int copy_begin(mig *m, cbuf *c, const char *sql)
{
    c->m = m;
    c->len = 0;
    c->rows = 0;
    c->rc = ERR_OK;
    PGresult *res = PQexec(m->pg, sql);
    int rc = PQresultStatus(res) == PGRES_COPY_IN ? ERR_OK : pg_fail(m, sql, res);
    PQclear(res);
    return c->rc = rc;
}

/* Ends the COPY (aborted if anything failed); its result. */
static int copy_end(cbuf *c)
{
    cb_flush(c);
    int rc = c->rc;
    if (PQputCopyEnd(c->m->pg, rc < 0 ? "aborted" : NULL) != 1 && rc >= 0)
        rc = pg_fail(c->m, "COPY", NULL);
    PGresult *res;
    while ((res = PQgetResult(c->m->pg))) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK && rc >= 0) rc = pg_fail(c->m, "COPY", res);
        PQclear(res);
    }
    return rc;
}

static int copy_user(void *arg, const store_user *u)
{
    cbuf *c = arg;
    cb_u64(c, u->id, '\t');
    cb_text(c, u->name, strlen(u->name));
    cb_raw(c, "\t", 1);
    cb_text(c, u->pwhash, strlen(u->pwhash));
    cb_raw(c, "\t", 1);
    cb_i64(c, u->created, '\t');
    cb_i64(c, u->last_seen, '\t');
    cb_u64(c, u->next_device, '\t');
    return cb_row(c);
}

static int copy_session(void *arg, const uint8_t h[32], const store_session *s)
{
    cbuf *c = arg;
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, h, 32);
    cb_raw(c, "\\\\x", 3);             /* bytea's hex input, its backslash escaped */
    cb_raw(c, hex, 64);
    cb_raw(c, "\t", 1);
    cb_u64(c, s->uid, '\t');
    cb_u64(c, s->device, '\t');
    cb_i64(c, s->expires, '\t');
    return cb_row(c);
}

static int copy_conv(void *arg, const store_conv *v)
{
    cbuf *c = arg;
    cb_u64(c, v->id, '\t');
    cb_u64(c, v->type, '\t');
    cb_text(c, v->name, strlen(v->name));
    cb_raw(c, "\t", 1);
    cb_u64(c, v->last_seq, '\t');
    cb_i64(c, v->last_ts, '\t');
    cb_i64(c, v->created, '\t');
    cb_u64(c, v->nmembers, '\t');
    return cb_row(c);
}

static int copy_direct(void *arg, uint64_t lo, uint64_t hi, uint64_t conv)
{
    cbuf *c = arg;
    cb_u64(c, lo, '\t');
    cb_u64(c, hi, '\t');
    cb_u64(c, conv, '\t');
    return cb_row(c);
}

typedef struct conv_walk {
    cbuf *c;
    uint64_t conv;
} conv_walk;

static int copy_member(void *arg, const store_member *mb)
{
    conv_walk *w = arg;
    cbuf *c = w->c;
    cb_u64(c, w->conv, '\t');
    cb_u64(c, mb->uid, '\t');
    cb_u64(c, mb->role, '\t');
    cb_u64(c, mb->delivered, '\t');
    cb_u64(c, mb->read, '\t');
    cb_raw(c, mb->invited ? "t\t" : "f\t", 2);
    return cb_row(c);
}

static int copy_conv_members(void *arg, const store_conv *v)
{
    conv_walk w = {arg, v->id};
    return store_members(((cbuf *)arg)->m->t, v->id, copy_member, &w);
}

static int copy_msg(void *arg, const store_msg *s)
{
    cbuf *c = arg;
    cb_u64(c, s->conv, '\t');
    cb_u64(c, s->seq, '\t');
    cb_u64(c, s->from, '\t');
    cb_i64(c, s->ts, '\t');
    cb_text(c, s->cmid, s->cmid_len);
    cb_raw(c, "\t", 1);
    cb_text(c, s->body, s->body_len);
    cb_raw(c, "\t", 1);
    return cb_row(c);
}

static int copy_conv_msgs(void *arg, const store_conv *v)
{
    return store_msgs(((cbuf *)arg)->m->t, v->id, 1, true, SIZE_MAX, copy_msg, arg, NULL);
}

/* A walk that failed in the store (not in a callback) has no reason yet. */
static int walk_rc(mig *m, int rc, const char *what)
{
    return rc < 0 ? fail(m, rc, "reading the store's %s: %s", what, err_name(rc)) : rc;
}

static int copy_table(mig *m, cbuf *c, const char *sql, const char *what, uint64_t *count,
                      int (*walk)(mig *m, cbuf *c))
{
    int rc = copy_begin(m, c, sql);
    if (rc < 0) return rc;
    rc = walk_rc(m, walk(m, c), what);
    if (rc < 0 && c->rc >= 0) c->rc = rc;
    rc = copy_end(c);
    *count = c->rows;
    return rc;
}

static int walk_users(mig *m, cbuf *c) { return store_users_each(m->t, copy_user, c); }
static int walk_sessions(mig *m, cbuf *c) { return store_sessions_each(m->t, copy_session, c); }
static int walk_convs(mig *m, cbuf *c) { return store_convs_each(m->t, copy_conv, c); }
static int walk_directs(mig *m, cbuf *c) { return store_directs_each(m->t, copy_direct, c); }
static int walk_members(mig *m, cbuf *c) { return store_convs_each(m->t, copy_conv_members, c); }
static int walk_msgs(mig *m, cbuf *c) { return store_convs_each(m->t, copy_conv_msgs, c); }

/* Moves an identity sequence past the highest id given (the table's or
 * the store's counter, next - 1). */
static int advance(mig *m, const char *table, const char *counter)
{
    uint64_t next = 0;
    int rc = store_meta_get(m->t, counter, &next);
    if (rc < 0 && rc != ERR_NOT_FOUND) return fail(m, rc, "reading the store: %s", err_name(rc));
    char sql[256];
    snprintf(sql, sizeof sql,
             "select setval(pg_get_serial_sequence('%s', 'id'), v) from (select "
             "greatest(coalesce(max(id), 0), %" PRIu64 ") v from %s) t where v > 0",
             table, next ? next - 1 : 0, table);
    return exec(m, sql);
}

/* Inbox cursors from now on start above every one the embedded store
 * gave (its clock): a client's old changed_since lists everything once. */
static int cursor_base(mig *m)
{
    char sql[128];
    snprintf(sql, sizeof sql, "update parley_cursor_base set base = %" PRIu64, m->r->clock + 1);
    return exec(m, sql);
}

/* ERR_OK and *empty, with the tables locked in the open transaction. */
static int lock_and_check(mig *m, bool *empty)
{
    int rc = exec(m, "lock table users, sessions, convs, directs, members, messages "
                     "in exclusive mode");
    if (rc < 0) return rc;
    PGresult *res = PQexec(m->pg, "select exists (select 1 from users) or "
                                  "exists (select 1 from convs)");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(m, "reading the database", res);
        PQclear(res);
        return rc;
    }
    *empty = PQgetvalue(res, 0, 0)[0] == 'f';
    PQclear(res);
    return ERR_OK;
}

/* Copies the store when the database holds nothing; *copied tells. */
static int copy_all(mig *m, bool *copied)
{
    *copied = false;
    int rc = exec(m, "begin");
    if (rc < 0) return rc;
    bool empty = false;
    if ((rc = lock_and_check(m, &empty)) < 0 || !empty) {
        exec(m, "rollback");
        return rc;
    }
    cbuf c = {0};
    migrate_counts *n = &m->r->copied;
    if ((rc = copy_table(m, &c, "copy users (id, name, pwhash, created, last_seen, next_device) "
                                "from stdin", "users", &n->users, walk_users)) < 0 ||
        (rc = copy_table(m, &c, "copy sessions (token_hash, uid, device, expires) from stdin",
                         "sessions", &n->sessions, walk_sessions)) < 0 ||
        (rc = copy_table(m, &c, "copy convs (id, type, name, last_seq, last_ts, created, "
                                "nmembers) from stdin", "conversations", &n->convs,
                         walk_convs)) < 0 ||
        (rc = copy_table(m, &c, "copy directs (lo, hi, conv) from stdin", "directs",
                         &n->directs, walk_directs)) < 0 ||
        (rc = copy_table(m, &c, "copy members (conv, uid, role, delivered_seq, read_seq, "
                                "invited) from stdin", "members", &n->members,
                         walk_members)) < 0 ||
        (rc = copy_table(m, &c, "copy messages (conv, seq, sender, ts, cmid, body) from stdin",
                         "messages", &n->messages, walk_msgs)) < 0 ||
        (rc = advance(m, "users", "next_user")) < 0 ||
        (rc = advance(m, "convs", "next_conv")) < 0 ||
        (rc = cursor_base(m)) < 0 ||
        (rc = exec(m, "commit")) < 0) {
        free(c.b);
        exec(m, "rollback");
        memset(n, 0, sizeof *n);
        return rc;
    }
    free(c.b);
    *copied = true;
    return ERR_OK;
}

/* ---- verify ----------------------------------------------------------------------- */

/* A server-side cursor read FETCH_ROWS at a time. */
typedef struct rows {
    mig *m;
    const char *name;
    PGresult *res;
    int i, n;
    bool end;
} rows;

static int rows_open(mig *m, rows *q, const char *name, const char *select)
{
    *q = (rows){.m = m, .name = name};
    char sql[512];
    snprintf(sql, sizeof sql, "declare %s no scroll cursor for %s", name, select);
    return exec(m, sql);
}

/* 1: a current row (q->i); 0: no more; < 0: error. */
static int rows_peek(rows *q)
{
    if (q->res && q->i < q->n) return 1;
    if (q->end) return 0;
    PQclear(q->res);
    char sql[96];
    snprintf(sql, sizeof sql, "fetch %d from %s", FETCH_ROWS, q->name);
    q->res = PQexec(q->m->pg, sql);
    if (PQresultStatus(q->res) != PGRES_TUPLES_OK) {
        int rc = pg_fail(q->m, "reading the database", q->res);
        PQclear(q->res);
        q->res = NULL;
        q->end = true;
        return rc;
    }
    q->i = 0;
    q->n = PQntuples(q->res);
    if (q->n == 0) q->end = true;
    return q->n > 0;
}

static void rows_close(rows *q)
{
    PQclear(q->res);
    q->res = NULL;
}

static const char *col(const rows *q, int j) { return PQgetvalue(q->res, q->i, j); }
static size_t col_len(const rows *q, int j) { return (size_t)PQgetlength(q->res, q->i, j); }
static uint64_t col_u64(const rows *q, int j) { return strtoull(col(q, j), NULL, 10); }
static int64_t col_i64(const rows *q, int j) { return strtoll(col(q, j), NULL, 10); }
static bool col_is(const rows *q, int j, const char *s, size_t n)
{
    return col_len(q, j) == n && memcmp(col(q, j), s, n) == 0;
}

typedef struct verify {
    mig *m;
    rows users, sessions, convs, directs, members, msgs;
    uint64_t conv;                      /* the conversation being compared */
    crypto_hash_sha256_state hs, ht;    /* its messages: the store's, the database's */
    uint64_t ns, nt;
} verify;

#define DIFF(v, ...) fail((v)->m, ERR_CONFLICT, __VA_ARGS__)

/* The database's row at q matches when it is there with the key `key`. */
static int expect(verify *v, rows *q, uint64_t key, const char *what)
{
    int rc = rows_peek(q);
    if (rc < 0) return rc;
    if (rc == 0) return DIFF(v, "%s %" PRIu64 " is missing from the database", what, key);
    uint64_t got = col_u64(q, 0);
    if (got < key)
        return DIFF(v, "the database holds %s %" PRIu64 ", which the store does not", what, got);
    if (got > key) return DIFF(v, "%s %" PRIu64 " is missing from the database", what, key);
    return 1;
}

static int v_user(void *arg, const store_user *u)
{
    verify *v = arg;
    rows *q = &v->users;
    int rc = expect(v, q, u->id, "user");
    if (rc <= 0) return rc;
    if (!col_is(q, 1, u->name, strlen(u->name)) || !col_is(q, 2, u->pwhash, strlen(u->pwhash)) ||
        col_i64(q, 3) != u->created || col_i64(q, 4) != u->last_seen ||
        col_u64(q, 5) != u->next_device)
        return DIFF(v, "user %" PRIu64 " (%s) differs in the database", u->id, u->name);
    q->i++;
    v->m->r->verified.users++;
    return 0;
}

static int v_session(void *arg, const uint8_t h[32], const store_session *s)
{
    verify *v = arg;
    rows *q = &v->sessions;
    char hex[65];
    sodium_bin2hex(hex, sizeof hex, h, 32);
    int rc = rows_peek(q);
    if (rc < 0) return rc;
    if (rc == 0 || !col_is(q, 0, hex, 64))
        return DIFF(v, "sessions differ: the store's session of user %" PRIu64 " device %" PRIu32
                       " is not the database's next one", s->uid, s->device);
    if (col_u64(q, 1) != s->uid || col_u64(q, 2) != s->device || col_i64(q, 3) != s->expires)
        return DIFF(v, "the session of user %" PRIu64 " device %" PRIu32
                       " differs in the database", s->uid, s->device);
    q->i++;
    v->m->r->verified.sessions++;
    return 0;
}

static int v_direct(void *arg, uint64_t lo, uint64_t hi, uint64_t conv)
{
    verify *v = arg;
    rows *q = &v->directs;
    int rc = rows_peek(q);
    if (rc < 0) return rc;
    if (rc == 0 || col_u64(q, 0) != lo || col_u64(q, 1) != hi || col_u64(q, 2) != conv)
        return DIFF(v, "directs differ: the store's direct conversation %" PRIu64
                       " of users %" PRIu64 " and %" PRIu64 " is not the database's next one",
                    conv, lo, hi);
    q->i++;
    v->m->r->verified.directs++;
    return 0;
}

static int v_member(void *arg, const store_member *mb)
{
    verify *v = arg;
    rows *q = &v->members;
    int rc = rows_peek(q);
    if (rc < 0) return rc;
    if (rc == 0 || col_u64(q, 0) != v->conv || col_u64(q, 1) != mb->uid)
        return DIFF(v, "conversation %" PRIu64 ": members differ (user %" PRIu64
                       " is not the database's next member)", v->conv, mb->uid);
    bool invited = col(q, 5)[0] == 't';
    if (col_u64(q, 2) != mb->role || col_u64(q, 3) != mb->delivered ||
        col_u64(q, 4) != mb->read || invited != mb->invited)
        return DIFF(v, "conversation %" PRIu64 ": member %" PRIu64
                       " differs in the database (role, cursors or invitation)", v->conv, mb->uid);
    q->i++;
    v->m->r->verified.members++;
    return 0;
}

static void hash_msg(crypto_hash_sha256_state *h, uint64_t seq, uint64_t from, int64_t ts,
                     const char *cmid, size_t cmid_len, const char *body, size_t body_len)
{
    uint8_t b[8 * 3 + 4];
    uint64_t f[3] = {seq, from, (uint64_t)ts};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 8; i++) b[k * 8 + i] = (uint8_t)(f[k] >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) b[24 + i] = (uint8_t)((uint32_t)cmid_len >> (24 - 8 * i));
    crypto_hash_sha256_update(h, b, sizeof b);
    crypto_hash_sha256_update(h, (const uint8_t *)cmid, cmid_len);
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)((uint32_t)body_len >> (24 - 8 * i));
    crypto_hash_sha256_update(h, b, 4);
    crypto_hash_sha256_update(h, (const uint8_t *)body, body_len);
}

/* Hashes the database's next message if it is of the conversation. */
static int take_db_msg(verify *v)
{
    rows *q = &v->msgs;
    int rc = rows_peek(q);
    if (rc <= 0) return rc;
    if (col_u64(q, 0) != v->conv) return 0;
    hash_msg(&v->ht, col_u64(q, 1), col_u64(q, 2), col_i64(q, 3), col(q, 4), col_len(q, 4),
             col(q, 5), col_len(q, 5));
    v->nt++;
    q->i++;
    return 1;
}

static int v_msg(void *arg, const store_msg *s)
{
    verify *v = arg;
    hash_msg(&v->hs, s->seq, s->from, s->ts, s->cmid, s->cmid_len, s->body, s->body_len);
    v->ns++;
    int rc = take_db_msg(v);
    return rc < 0 ? rc : 0;
}

static int v_conv(void *arg, const store_conv *c)
{
    verify *v = arg;
    mig *m = v->m;
    rows *q = &v->convs;
    int rc = expect(v, q, c->id, "conversation");
    if (rc <= 0) return rc;
    if (col_u64(q, 1) != c->type || !col_is(q, 2, c->name, strlen(c->name)) ||
        col_u64(q, 3) != c->last_seq || col_i64(q, 4) != c->last_ts ||
        col_i64(q, 5) != c->created || col_u64(q, 6) != c->nmembers)
        return DIFF(v, "conversation %" PRIu64 " differs in the database (type, name, last "
                       "seq or ts, created or member count)", c->id);
    q->i++;
    m->r->verified.convs++;
    v->conv = c->id;
    if ((rc = walk_rc(m, store_members(m->t, c->id, v_member, v), "members")) != 0) return rc;
    if ((rc = rows_peek(&v->members)) < 0) return rc;
    if (rc == 1 && col_u64(&v->members, 0) == c->id)
        return DIFF(v, "conversation %" PRIu64 ": members differ (the database holds user %s, "
                       "whom the store does not)", c->id, col(&v->members, 1));
    crypto_hash_sha256_init(&v->hs);
    crypto_hash_sha256_init(&v->ht);
    v->ns = v->nt = 0;
    rc = walk_rc(m, store_msgs(m->t, c->id, 1, true, SIZE_MAX, v_msg, v, NULL), "messages");
    if (rc != 0) return rc;
    while ((rc = take_db_msg(v)) == 1) {}  /* the database's extra ones */
    if (rc < 0) return rc;
    uint8_t ds[crypto_hash_sha256_BYTES], dt[crypto_hash_sha256_BYTES];
    crypto_hash_sha256_final(&v->hs, ds);
    crypto_hash_sha256_final(&v->ht, dt);
    if (v->ns != v->nt || memcmp(ds, dt, sizeof ds) != 0) {
        char hs[17], ht[17];
        sodium_bin2hex(hs, sizeof hs, ds, 8);
        sodium_bin2hex(ht, sizeof ht, dt, 8);
        return DIFF(v, "conversation %" PRIu64 ": messages differ: %" PRIu64 " in the store "
                       "(sha256 %s...), %" PRIu64 " in the database (sha256 %s...)",
                    c->id, v->ns, hs, v->nt, ht);
    }
    m->r->verified.messages += v->ns;
    m->r->checksums++;
    return 0;
}

/* The database holds rows beyond the store's last: a difference. */
static int no_more(verify *v, rows *q, const char *what)
{
    int rc = rows_peek(q);
    if (rc < 0) return rc;
    if (rc == 1)
        return DIFF(v, "the database holds more %s than the store (%s %s)", what, what,
                    col(q, 0));
    return ERR_OK;
}

static int verify_all(mig *m)
{
    memset(&m->r->verified, 0, sizeof m->r->verified);
    m->r->checksums = 0;
    verify v = {.m = m};
    int rc = exec(m, "begin isolation level repeatable read, read only");
    if (rc < 0) return rc;
    if ((rc = rows_open(m, &v.users, "m_users", "select id, name, pwhash, created, last_seen, "
                                                "next_device from users order by id")) < 0 ||
        (rc = rows_open(m, &v.sessions, "m_sessions", "select encode(token_hash, 'hex'), uid, "
                                                      "device, expires from sessions order by "
                                                      "token_hash")) < 0 ||
        (rc = rows_open(m, &v.convs, "m_convs", "select id, type, name, last_seq, last_ts, "
                                                "created, nmembers from convs order by id")) < 0 ||
        (rc = rows_open(m, &v.directs, "m_directs", "select lo, hi, conv from directs "
                                                    "order by lo, hi")) < 0 ||
        (rc = rows_open(m, &v.members, "m_members", "select conv, uid, role, delivered_seq, "
                                                    "read_seq, invited from members "
                                                    "order by conv, uid")) < 0 ||
        (rc = rows_open(m, &v.msgs, "m_msgs", "select conv, seq, sender, ts, cmid, body "
                                              "from messages order by conv, seq")) < 0)
        goto out;
    if ((rc = walk_rc(m, store_users_each(m->t, v_user, &v), "users")) < 0 ||
        (rc = no_more(&v, &v.users, "users")) < 0 ||
        (rc = walk_rc(m, store_sessions_each(m->t, v_session, &v), "sessions")) < 0 ||
        (rc = no_more(&v, &v.sessions, "sessions")) < 0 ||
        (rc = walk_rc(m, store_directs_each(m->t, v_direct, &v), "directs")) < 0 ||
        (rc = no_more(&v, &v.directs, "directs")) < 0 ||
        (rc = walk_rc(m, store_convs_each(m->t, v_conv, &v), "conversations")) < 0 ||
        (rc = no_more(&v, &v.convs, "conversations")) < 0 ||
        (rc = no_more(&v, &v.members, "members of conversation")) < 0 ||
        (rc = no_more(&v, &v.msgs, "messages of conversation")) < 0)
        goto out;
out:
    rows_close(&v.users);
    rows_close(&v.sessions);
    rows_close(&v.convs);
    rows_close(&v.directs);
    rows_close(&v.members);
    rows_close(&v.msgs);
    int e = exec(m, "rollback");
    return rc < 0 ? rc : e;
}

/* ---- the whole ------------------------------------------------------------------------- */

int migrate_run(const char *data_dir, const char *url, migrate_report *r, char *err, size_t cap)
{
    memset(r, 0, sizeof *r);
    err[0] = 0;
    mig m = {.err = err, .cap = cap, .r = r};
    int rc;
    if (sodium_init() < 0) return fail(&m, ERR_IO, "libsodium did not start");
    if ((rc = connect_db(&m, url)) < 0) goto out;
    if ((rc = open_store(&m, data_dir)) < 0) goto out;
    r->clock = store_clock(m.t);
    double t0 = now_s();
    bool copied = false;
    if ((rc = copy_all(&m, &copied)) < 0) goto out;
    r->already = !copied;
    double t1 = now_s();
    r->copy_s = t1 - t0;
    rc = verify_all(&m);
    r->verify_s = now_s() - t1;
    if (rc == ERR_CONFLICT && copied) rc = ERR_CORRUPT;
out:
    if (m.t) store_abort(m.t);
    if (m.st) store_close(m.st);
    if (m.pg) PQfinish(m.pg);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: parleyd migrate --from DATA_DIR --to postgresql://USER@HOST:PORT/DB\n"
            "\n"
            "Copies an embedded store (parleyd's --data-dir) into a PostgreSQL database for\n"
            "cluster mode (--store), keeping every id, token and message, then verifies the\n"
            "database against the store: row counts, every row, and a SHA-256 of each\n"
            "conversation's messages. Stop the parleyd on DATA_DIR first. The database's\n"
            "schema is created if needed; a database that already holds data is not\n"
            "written: it is verified, and accepted only if it holds exactly this store (so\n"
            "running it twice is safe).\n"
            "\n"
            "  --from DATA_DIR   the embedded store (its message log is applied first)\n"
            "  --to URL          the database (a libpq URI)\n"
            "  --help            this text\n"
            "\n"
            "Exit status: 0 migrated (or already there) and verified; 1 failed (the reason\n"
            "on standard error); 2 usage error.\n");
}

static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != 0) return NULL;
    if (*i + 1 >= argc) return "";
    return argv[++*i];
}

static void counts(FILE *out, const char *label, const migrate_counts *c)
{
    fprintf(out, "%s users %" PRIu64 ", sessions %" PRIu64 ", conversations %" PRIu64
                 ", directs %" PRIu64 ", members %" PRIu64 ", messages %" PRIu64,
            label, c->users, c->sessions, c->convs, c->directs, c->members, c->messages);
}

int migrate_main(int argc, char **argv, FILE *out, FILE *errout)
{
    const char *from = NULL, *to = NULL;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(out);
            return 0;
        } else if ((v = flag_value(argc, argv, &i, "--from"))) {
            from = v;
        } else if ((v = flag_value(argc, argv, &i, "--to"))) {
            to = v;
        } else {
            fprintf(errout, "parleyd migrate: unknown argument '%s'\n", argv[i]);
            usage(errout);
            return 2;
        }
    }
    if (!from || !*from || !to || !*to) {
        fprintf(errout, "parleyd migrate: --from DATA_DIR and --to URL are required\n");
        usage(errout);
        return 2;
    }
    if (strncmp(to, "postgresql://", 13) != 0 && strncmp(to, "postgres://", 11) != 0) {
        fprintf(errout, "parleyd migrate: --to must be a postgresql:// URL\n");
        return 2;
    }
    log_set_level(LOG_WARN);
    migrate_report r;
    char err[1024];
    int rc = migrate_run(from, to, &r, err, sizeof err);
    if (rc < 0) {
        if (rc == ERR_CONFLICT)
            fprintf(errout, "parleyd migrate: the database already holds other data than this "
                            "store: refusing it (%s)\n", err);
        else if (rc == ERR_CORRUPT)
            fprintf(errout, "parleyd migrate: verify failed after the copy: %s\n", err);
        else
            fprintf(errout, "parleyd migrate: %s\n", err[0] ? err : err_name(rc));
        return 1;
    }
    fprintf(out, "parleyd migrate: %s -> the database\n", from);
    if (r.already) {
        fprintf(out, "copied   nothing: the database already holds this store\n");
    } else {
        counts(out, "copied  ", &r.copied);
        fprintf(out, " in %.2f s\n", r.copy_s);
    }
    counts(out, "verified", &r.verified);
    fprintf(out, "; %" PRIu64 " conversation checksums match (%.2f s)\n", r.checksums,
            r.verify_s);
    fprintf(out, "done: start parleyd with --store and this URL (not --data-dir)\n");
    fflush(out);
    return 0;
}
