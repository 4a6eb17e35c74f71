/* Backend conformance suite of src/store/db.h: every test drives a db
 * only through db.h (its ops, db_settle and its reads), never store.h, the
 * chat service or a server, and takes the backend under test as a
 * parameter. main() runs each test against every backend of `backends`
 * (only "lmdb" today, on a fresh temporary data directory; the PostgreSQL
 * backend adds a row that opens a fresh database), each test on a fresh,
 * empty db.
 *
 * Ops are submitted with db_submit() and waited for (bounded: OP_WAIT_S);
 * a test that reads what it wrote calls db_settle() first, as a server's
 * reads do. Nothing here asserts on time: the short sleeps between steps
 * only make the activity timestamps (ms) of conversations distinct, so
 * that the inbox order is the same on every run.
 */
#include "test.h"

#include <ftw.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libpq-fe.h>
#include <uv.h>

#include "base/err.h"
#include "store/db.h"

#define OP_WAIT_S 10
#define BIG (1u << 20)            /* a byte budget nothing here reaches */

/* ---- backends --------------------------------------------------------------- */

/* A backend under test: its table and how to open a fresh, empty db of it. */
typedef struct backend {
    const char *name;
    const db_vfs *vfs;
    /* A fresh, empty db opened with o (its data_dir is the backend's own
     * business); *env is what drop() needs to remove the data. */
    int (*open_fresh)(const struct backend *be, db_options *o, db **out, void **env);
    /* Removes what open_fresh made (the db is closed by then). */
    void (*drop)(void *env);
} backend;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    remove(path);
    return 0;
}

static int lmdb_open_fresh(const backend *be, db_options *o, db **out, void **env)
{
    char *dir = malloc(64);
    if (!dir) return ERR_NOMEM;
    snprintf(dir, 64, "/tmp/parley_db_XXXXXX");
    if (!mkdtemp(dir)) { free(dir); return ERR_IO; }
    o->data_dir = dir;
    int rc = be->vfs->open(out, o);
    if (rc < 0) {
        nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(dir);
        return rc;
    }
    *env = dir;
    return ERR_OK;
}

static void lmdb_drop(void *env)
{
    nftw(env, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(env);
}

/* PostgreSQL: a fresh database on the server PARLEY_TEST_PG_HOSTPORT
 * names (HOST:PORT, role postgres may create databases, owner parley):
 * tests/integration/test_cluster_store.py runs this binary so. */
static int pg_admin(const char *sql)
{
    char url[256];
    snprintf(url, sizeof url, "postgresql://postgres@%s/postgres", getenv("PARLEY_TEST_PG_HOSTPORT"));
    PGconn *c = PQconnectdb(url);
    int rc = ERR_IO;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_COMMAND_OK) rc = ERR_OK;
        else fprintf(stderr, "    pg: %s", PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "    pg: %s", PQerrorMessage(c));
    }
    PQfinish(c);
    return rc;
}

static int pg_open_fresh(const backend *be, db_options *o, db **out, void **env)
{
    static unsigned seq;
    char *name = malloc(64), sql[160], url[256];
    if (!name) return ERR_NOMEM;
    snprintf(name, 64, "tdb_%d_%u", (int)getpid(), ++seq);
    snprintf(sql, sizeof sql, "create database %s owner parley", name);
    if (pg_admin(sql) < 0) { free(name); return ERR_IO; }
    snprintf(url, sizeof url, "postgresql://parley@%s/%s", getenv("PARLEY_TEST_PG_HOSTPORT"), name);
    o->url = url; /* the backend keeps its own copy */
    int rc = be->vfs->open(out, o);
    if (rc < 0) {
        snprintf(sql, sizeof sql, "drop database %s", name);
        pg_admin(sql);
        free(name);
        return rc;
    }
    *env = name;
    return ERR_OK;
}

static void pg_drop(void *env)
{
    char sql[160];
    snprintf(sql, sizeof sql, "drop database %s with (force)", (char *)env);
    pg_admin(sql);
    free(env);
}

static const backend backends[] = {
    {"lmdb", &db_lmdb, lmdb_open_fresh, lmdb_drop},
    {"postgresql", &db_pg, pg_open_fresh, pg_drop},
};

/* ---- a db under test ---------------------------------------------------------- */

typedef struct tdb {
    const backend *be;
    db *d;
    void *env;
} tdb;

/* What a server opens a db with (chat_open), scaled down for tests. */
static db_options test_options(void)
{
    db_options o = {
        .map_size = 64u << 20, .log_segment_bytes = 1u << 20, .apply_delay_ms = 50,
        .commit_window_us = 100, .max_queue = 100000,
        .max_user_convs = 10000, .max_group_members = 1000,
    };
    return o;
}

static void fatal(const char *what, int rc)
{
    fprintf(stderr, "  FATAL in %s: %s (%s)\n", test_cur_name_, what, err_name(rc));
    exit(2);
}

static void tdb_open_with(tdb *t, const backend *be, db_options o)
{
    memset(t, 0, sizeof *t);
    t->be = be;
    int rc = be->open_fresh(be, &o, &t->d, &t->env);
    if (rc < 0) fatal("open a fresh db", rc);
}

static void tdb_open(tdb *t, const backend *be) { tdb_open_with(t, be, test_options()); }

static void tdb_close(tdb *t)
{
    if (t->d) db_close(t->d);
    t->d = NULL;
    if (t->env) t->be->drop(t->env);
    t->env = NULL;
}

/* ---- ops and their completion ------------------------------------------------- */

typedef struct top {
    db_op op;                    /* first: wop.done gets &op.wop */
    uv_mutex_t mu;
    uv_cond_t cv;
    bool done;
    int rc;
} top;

static void top_done(writer_op *wop, int rc)
{
    top *o = (top *)wop;
    uv_mutex_lock(&o->mu);
    o->rc = rc;
    o->done = true;
    uv_cond_signal(&o->cv);
    uv_mutex_unlock(&o->mu);
}

static top *top_new(uint8_t kind, const db_ident *who)
{
    top *o = calloc(1, sizeof *o);
    if (!o) fatal("calloc", ERR_NOMEM);
    uv_mutex_init(&o->mu);
    uv_cond_init(&o->cv);
    o->op.kind = kind;
    o->op.wop.done = top_done;
    if (who) o->op.who = *who;
    return o;
}

static void top_free(top *o)
{
    if (!o) return;
    db_op *op = &o->op;
    free(op->body);
    free(op->uids);
    free(op->rcs);
    if (op->left)
        for (size_t i = 0; i < op->nuids; i++) free(op->left[i]);
    free(op->left);
    free(op->after);
    audience_unref(op->aud);
    uv_cond_destroy(&o->cv);
    uv_mutex_destroy(&o->mu);
    free(o);
}

/* Submits o and waits for its completion: the rc given to wop.done (which
 * is also checked against op.rc when the backend sets it), or the submit's
 * refusal. A completion that does not come within OP_WAIT_S fails the
 * binary: the op is still the backend's, nothing after it can be trusted. */
static int top_run(tdb *t, top *o)
{
    int rc = db_submit(t->d, &o->op);
    if (rc < 0) return rc;
    uv_mutex_lock(&o->mu);
    uint64_t deadline = uv_hrtime() + (uint64_t)OP_WAIT_S * 1000000000ull;
    while (!o->done) {
        uint64_t now = uv_hrtime();
        if (now >= deadline) {
            uv_mutex_unlock(&o->mu);
            test_cur_failed_++;
            fprintf(stderr, "  FAIL in %s: an op (kind %d) did not complete within %d s\n",
                    test_cur_name_, o->op.kind, OP_WAIT_S);
            exit(1);
        }
        uv_cond_timedwait(&o->cv, &o->mu, deadline - now);
    }
    uv_mutex_unlock(&o->mu);
    return o->rc;
}

/* ---- domain helpers ------------------------------------------------------------ */

#define EXPIRES 4102444800000ll   /* 2100-01-01, ms */

/* Any 32 bytes make a token's hash: seed repeated. */
static void hash_of(uint8_t h[32], uint8_t seed)
{
    for (int i = 0; i < 32; i++) h[i] = (uint8_t)(seed + i * 7);
}

static void pwhash_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "$argon2id$v=19$test$%s", name);
}

/* Registers name with a session of token hash hash_of(seed); *who is the
 * acting identity after it (uid, device, token hash, name). */
static int reg(tdb *t, const char *name, uint8_t seed, db_ident *who)
{
    top *o = top_new(OP_REGISTER, NULL);
    snprintf(o->op.name, sizeof o->op.name, "%s", name);
    snprintf(o->op.who.name, sizeof o->op.who.name, "%s", name);
    pwhash_of(o->op.pwhash, sizeof o->op.pwhash, name);
    snprintf(o->op.token, sizeof o->op.token, "token-%s", name);
    hash_of(o->op.new_token_hash, seed);
    o->op.expires = EXPIRES;
    int rc = top_run(t, o);
    if (rc == ERR_OK && who) {
        *who = o->op.who;
        memcpy(who->token_hash, o->op.new_token_hash, sizeof who->token_hash);
        who->expires = o->op.expires;
    }
    top_free(o);
    return rc;
}

static db_ident must_reg(tdb *t, const char *name, uint8_t seed)
{
    db_ident who;
    memset(&who, 0, sizeof who);
    int rc = reg(t, name, seed, &who);
    if (rc < 0) fatal("register", rc);
    return who;
}

/* Opens who's direct conversation with target: the completed op (the
 * caller frees it), or NULL with *rc. */
static top *direct_op(tdb *t, const db_ident *who, uint64_t target, int *rc)
{
    top *o = top_new(OP_DIRECT, who);
    o->op.target = target;
    *rc = top_run(t, o);
    return o;
}

static uint64_t must_direct(tdb *t, const db_ident *who, uint64_t target)
{
    int rc;
    top *o = direct_op(t, who, target, &rc);
    uint64_t conv = o->op.conv;
    top_free(o);
    if (rc < 0) fatal("direct", rc);
    return conv;
}

/* A group named name created by who with the n uids: the completed op. */
static top *group_op(tdb *t, const db_ident *who, const char *name, const uint64_t *uids, size_t n,
                     int *rc)
{
    top *o = top_new(OP_GROUP, who);
    snprintf(o->op.name, sizeof o->op.name, "%s", name);
    o->op.uids = malloc((n ? n : 1) * sizeof *o->op.uids);
    if (!o->op.uids) fatal("malloc", ERR_NOMEM);
    if (n) memcpy(o->op.uids, uids, n * sizeof *uids);
    o->op.nuids = n;
    *rc = top_run(t, o);
    return o;
}

static uint64_t must_group(tdb *t, const db_ident *who, const char *name, const uint64_t *uids,
                           size_t n)
{
    int rc;
    top *o = group_op(t, who, name, uids, n, &rc);
    uint64_t conv = o->op.conv;
    top_free(o);
    if (rc < 0) fatal("group", rc);
    return conv;
}

static top *member_op(tdb *t, uint8_t kind, const db_ident *who, uint64_t conv, uint64_t target,
                      int *rc)
{
    top *o = top_new(kind, who);
    o->op.conv = conv;
    o->op.target = target;
    *rc = top_run(t, o);
    return o;
}

/* A message from who in conv (cmid and body NUL-terminated). */
static int send_msg(tdb *t, const db_ident *who, uint64_t conv, const char *cmid, const char *body,
                    uint64_t *seq, bool *duplicate, int64_t *ts)
{
    top *o = top_new(OP_SEND, who);
    o->op.conv = conv;
    o->op.cmid_len = strlen(cmid);
    memcpy(o->op.cmid, cmid, o->op.cmid_len + 1);
    o->op.body_len = strlen(body);
    if (!(o->op.body = malloc(o->op.body_len ? o->op.body_len : 1))) fatal("malloc", ERR_NOMEM);
    memcpy(o->op.body, body, o->op.body_len);
    int rc = top_run(t, o);
    if (seq) *seq = o->op.seq;
    if (duplicate) *duplicate = o->op.duplicate;
    if (ts) *ts = o->op.ts;
    top_free(o);
    return rc;
}

static uint64_t must_send(tdb *t, const db_ident *who, uint64_t conv, const char *cmid,
                          const char *body)
{
    uint64_t seq = 0;
    int rc = send_msg(t, who, conv, cmid, body, &seq, NULL, NULL);
    if (rc < 0) fatal("send", rc);
    return seq;
}

/* Moves who's cursors in conv: rc, and the op's changed and cursors after. */
static int cursor(tdb *t, const db_ident *who, uint64_t conv, uint64_t delivered, uint64_t read,
                  bool accept, bool *changed, uint64_t *dl, uint64_t *rd)
{
    top *o = top_new(OP_CURSOR, who);
    o->op.conv = conv;
    o->op.delivered = delivered;
    o->op.read = read;
    o->op.accept = accept;
    int rc = top_run(t, o);
    if (changed) *changed = o->op.changed;
    if (dl) *dl = o->op.delivered;
    if (rd) *rd = o->op.read;
    top_free(o);
    return rc;
}

/* Lets a few ms pass: activity timestamps (ms) of what follows differ. */
static void next_ms(void) { usleep(3000); }

static const db_member *member_of(const db_conv *c, uint64_t uid)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (c->members[i].uid == uid) return &c->members[i];
    return NULL;
}

static bool aud_has(const audience *a, uint64_t uid)
{
    for (uint32_t i = 0; a && i < a->n; i++)
        if (a->uids[i] == uid) return true;
    return false;
}

static bool bytes_are(const char *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* ---- the tests ----------------------------------------------------------------- */

#define DB_TEST(name) static void name(const backend *be)

DB_TEST(register_session_account_users_counts)
{
    tdb t;
    tdb_open(&t, be);
    uint64_t nu = 99, nc = 99;
    db_counts(t.d, &nu, &nc);
    CHECK_EQ_INT(nu, 0);
    CHECK_EQ_INT(nc, 0);

    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    CHECK(alice.uid != 0);
    CHECK(bob.uid != 0 && bob.uid != alice.uid);
    CHECK_EQ_INT(alice.device, 1);
    CHECK_EQ_INT(reg(&t, "alice", 3, NULL), ERR_USERNAME_TAKEN);

    /* The session by its token's hash. */
    uint8_t h[32];
    hash_of(h, 1);
    db_ident who;
    memset(&who, 0, sizeof who);
    CHECK_EQ_INT(db_session(t.d, h, &who), ERR_OK);
    CHECK_EQ_INT(who.uid, alice.uid);
    CHECK_EQ_INT(who.device, 1);
    CHECK_EQ_INT(who.expires, EXPIRES);
    CHECK(strcmp(who.name, "alice") == 0);
    CHECK_MEM(who.token_hash, h, 32);
    hash_of(h, 2);
    CHECK_EQ_INT(db_session(t.d, h, &who), ERR_OK);
    CHECK_EQ_INT(who.uid, bob.uid);
    CHECK(strcmp(who.name, "bob") == 0);
    hash_of(h, 77);
    CHECK_EQ_INT(db_session(t.d, h, &who), ERR_NOT_FOUND);

    /* A login is a new session on a new device; a logout ends one. */
    top *o = top_new(OP_LOGIN, &alice);
    snprintf(o->op.token, sizeof o->op.token, "token-alice-2");
    hash_of(o->op.new_token_hash, 11);
    o->op.expires = EXPIRES + 1;
    CHECK_EQ_INT(top_run(&t, o), ERR_OK);
    top_free(o);
    hash_of(h, 11);
    CHECK_EQ_INT(db_session(t.d, h, &who), ERR_OK);
    CHECK_EQ_INT(who.uid, alice.uid);
    CHECK_EQ_INT(who.device, 2);
    CHECK_EQ_INT(who.expires, EXPIRES + 1);
    o = top_new(OP_LOGOUT, &alice); /* the first session's hash */
    CHECK_EQ_INT(top_run(&t, o), ERR_OK);
    top_free(o);
    hash_of(h, 1);
    CHECK_EQ_INT(db_session(t.d, h, &who), ERR_NOT_FOUND);
    hash_of(h, 11);
    CHECK_EQ_INT(db_session(t.d, h, &who), ERR_OK);

    /* The account by name, for a login's password check. */
    db_account a;
    memset(&a, 0, sizeof a);
    CHECK_EQ_INT(db_account_get(t.d, "alice", &a), ERR_OK);
    CHECK_EQ_INT(a.id, alice.uid);
    CHECK(strcmp(a.name, "alice") == 0);
    char pw[DB_HASH_MAX + 1];
    pwhash_of(pw, sizeof pw, "alice");
    CHECK(strcmp(a.pwhash, pw) == 0);
    CHECK_EQ_INT(db_account_get(t.d, "nobody", &a), ERR_NOT_FOUND);

    /* Users by id: id 0 for one that does not exist. */
    o = top_new(OP_LAST_SEEN, &bob);
    o->op.ts = 1700000000123ll;
    CHECK_EQ_INT(top_run(&t, o), ERR_OK);
    top_free(o);
    db_settle(t.d, 0);
    uint64_t ids[3] = {bob.uid, alice.uid + bob.uid + 1000, alice.uid};
    db_user u[3];
    memset(u, 0x5a, sizeof u);
    CHECK_EQ_INT(db_users(t.d, ids, 3, u), ERR_OK);
    CHECK_EQ_INT(u[0].id, bob.uid);
    CHECK(strcmp(u[0].name, "bob") == 0);
    CHECK_EQ_INT(u[0].last_seen, 1700000000123ll);
    CHECK_EQ_INT(u[1].id, 0);
    CHECK_EQ_INT(u[2].id, alice.uid);
    CHECK(strcmp(u[2].name, "alice") == 0);
    CHECK_EQ_INT(u[2].last_seen, 0);
    CHECK_EQ_INT(db_users(t.d, ids, 0, u), ERR_OK);

    db_counts(t.d, &nu, &nc);
    CHECK_EQ_INT(nu, 2);
    CHECK_EQ_INT(nc, 0);
    must_direct(&t, &alice, bob.uid);
    db_counts(t.d, &nu, &nc);
    CHECK_EQ_INT(nu, 2);
    CHECK_EQ_INT(nc, 1);
    tdb_close(&t);
}

DB_TEST(direct_conversation)
{
    tdb t;
    tdb_open(&t, be);
    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    db_ident carol = must_reg(&t, "carol", 3);

    int rc;
    top *o = direct_op(&t, &alice, bob.uid, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    CHECK(!o->op.duplicate);
    uint64_t conv = o->op.conv;
    CHECK(conv != 0);
    /* The new conversation comes with the op: both members, named, no viewer. */
    const db_conv *after = o->op.after;
    CHECK(after != NULL);
    if (after) {
        CHECK_EQ_INT(after->id, conv);
        CHECK_EQ_INT(after->type, DB_DIRECT);
        CHECK(after->me == NULL);
        CHECK_EQ_INT(after->n, 2);
        const db_member *ma = member_of(after, alice.uid), *mb = member_of(after, bob.uid);
        CHECK(ma && strcmp(ma->name, "alice") == 0 && !ma->invited);
        CHECK(mb && strcmp(mb->name, "bob") == 0 && mb->invited);
        CHECK_EQ_INT(after->last_seq, 0);
        CHECK_EQ_INT(after->last.seq, 0);
    }
    CHECK(o->op.aud && o->op.aud->n == 2 && aud_has(o->op.aud, alice.uid) &&
          aud_has(o->op.aud, bob.uid));
    top_free(o);

    /* As each member: me is theirs; the invitee is invited. */
    db_conv *c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, conv, alice.uid, &c), ERR_OK);
    if (c) {
        CHECK_EQ_INT(c->id, conv);
        CHECK_EQ_INT(c->type, DB_DIRECT);
        CHECK(strcmp(c->name, "") == 0);
        CHECK_EQ_INT(c->n, 2);
        CHECK(c->me && c->me->uid == alice.uid && !c->me->invited);
        CHECK(c->me && c->me->role == DB_MEMBER);
        CHECK(c->me && c->me->delivered == 0 && c->me->read == 0);
        CHECK(c->me && c->me >= c->members && c->me < c->members + c->n);
        CHECK_EQ_INT(c->last_seq, 0);
        CHECK(c->last_ts > 0); /* the creation */
        CHECK_EQ_INT(c->last.seq, 0);
        const db_member *mb = member_of(c, bob.uid);
        CHECK(mb && mb->invited && strcmp(mb->name, "bob") == 0);
        free(c);
    }
    c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, conv, bob.uid, &c), ERR_OK);
    if (c) {
        CHECK(c->me && c->me->uid == bob.uid && c->me->invited);
        CHECK(c->me && strcmp(c->me->name, "bob") == 0);
        free(c);
    }
    /* Not a member, no such conversation: forbidden alike. */
    c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, conv, carol.uid, &c), ERR_FORBIDDEN);
    CHECK_EQ_INT(db_conv_get(t.d, conv + 1000, alice.uid, &c), ERR_FORBIDDEN);
    CHECK(c == NULL);
    /* Nobody's view. */
    CHECK_EQ_INT(db_conv_get(t.d, conv, 0, &c), ERR_OK);
    if (c) {
        CHECK(c->me == NULL);
        CHECK_EQ_INT(c->n, 2);
        free(c);
    }

    /* Opening it again, from either side: the same conversation. */
    o = direct_op(&t, &alice, bob.uid, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    CHECK(o->op.duplicate);
    CHECK_EQ_INT(o->op.conv, conv);
    top_free(o);
    o = direct_op(&t, &bob, alice.uid, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    CHECK(o->op.duplicate);
    CHECK_EQ_INT(o->op.conv, conv);
    top_free(o);
    /* Bob opening it himself accepted the invitation. */
    c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, conv, bob.uid, &c), ERR_OK);
    if (c) {
        CHECK(c->me && !c->me->invited);
        free(c);
    }
    uint64_t nu = 0, nc = 0;
    db_counts(t.d, &nu, &nc);
    CHECK_EQ_INT(nc, 1);

    /* Another pair is another conversation. */
    uint64_t conv2 = must_direct(&t, &carol, alice.uid);
    CHECK(conv2 != conv);
    tdb_close(&t);
}

/* The members of a db_conv as (uid, role, name): checks c has exactly
 * these n members. */
typedef struct want_member {
    uint64_t uid;
    uint8_t role;
    const char *name;
} want_member;

static void check_members(const db_conv *c, const want_member *w, size_t n, int line)
{
    if (!c) {
        test_cur_failed_++;
        fprintf(stderr, "  FAIL line %d in %s: no conversation\n", line, test_cur_name_);
        return;
    }
    bool ok = c->n == n;
    for (size_t i = 0; ok && i < n; i++) {
        const db_member *m = member_of(c, w[i].uid);
        ok = m && m->role == w[i].role && strcmp(m->name, w[i].name) == 0;
    }
    if (!ok) {
        test_cur_failed_++;
        fprintf(stderr, "  FAIL line %d in %s: members of conv %llu:", line, test_cur_name_,
                (unsigned long long)c->id);
        for (uint32_t i = 0; i < c->n; i++)
            fprintf(stderr, " %llu/%u/%s", (unsigned long long)c->members[i].uid,
                    c->members[i].role, c->members[i].name);
        fprintf(stderr, " (want %zu)\n", n);
    }
}

/* A group never ends without an admin (PRODUCT.md): the last admin
 * leaving (OP_REMOVE of themself, or OP_LEAVE) hands the role to the
 * member with the lowest uid; a group with an admin left keeps its roles. */
DB_TEST(the_last_admin_leaving_hands_the_role_on)
{
    tdb t;
    tdb_open(&t, be);
    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    db_ident carol = must_reg(&t, "carol", 3);
    int rc;
    uint64_t uids[] = {bob.uid, carol.uid};
    top *o = group_op(&t, &alice, "team", uids, 2, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    uint64_t g = o->op.conv;
    top_free(o);
    o = member_op(&t, OP_REMOVE, &alice, g, alice.uid, &rc); /* the only admin leaves */
    CHECK_EQ_INT(rc, ERR_OK);
    want_member w2[] = {{bob.uid, DB_ADMIN, "bob"}, {carol.uid, DB_MEMBER, "carol"}};
    check_members(o->op.after, w2, 2, __LINE__);
    top_free(o);
    db_conv *c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, g, carol.uid, &c), ERR_OK);
    check_members(c, w2, 2, __LINE__);
    free(c);
    o = member_op(&t, OP_ADD, &bob, g, alice.uid, &rc); /* and the new admin can add */
    CHECK_EQ_INT(rc, ERR_OK);
    top_free(o);
    o = top_new(OP_LEAVE, &bob);                        /* the admin leaves again */
    o->op.nuids = 1;
    o->op.uids = malloc(sizeof *o->op.uids);
    o->op.rcs = malloc(sizeof *o->op.rcs);
    o->op.uids[0] = g;
    CHECK_EQ_INT(top_run(&t, o), ERR_OK);
    CHECK_EQ_INT(o->op.rcs[0], ERR_OK);
    want_member w2b[] = {{alice.uid, DB_ADMIN, "alice"}, {carol.uid, DB_MEMBER, "carol"}};
    if (o->op.left) check_members(o->op.left[0], w2b, 2, __LINE__);
    else CHECK(o->op.left != NULL);
    top_free(o);
    /* An admin removing a member changes no role. */
    o = member_op(&t, OP_REMOVE, &alice, g, carol.uid, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    want_member w1[] = {{alice.uid, DB_ADMIN, "alice"}};
    check_members(o->op.after, w1, 1, __LINE__);
    top_free(o);
    tdb_close(&t);
}

DB_TEST(group_create_add_remove_leave)
{
    tdb t;
    tdb_open(&t, be);
    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    db_ident carol = must_reg(&t, "carol", 3);
    db_ident dave = must_reg(&t, "dave", 4);
    db_ident erin = must_reg(&t, "erin", 5);
    /* bob is alice's contact (he opened their direct conversation too). */
    uint64_t direct = must_direct(&t, &alice, bob.uid);
    must_direct(&t, &bob, alice.uid);

    int rc;
    uint64_t uids[] = {bob.uid, carol.uid, bob.uid, alice.uid}; /* twice, and herself */
    top *o = group_op(&t, &alice, "team", uids, 4, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    uint64_t g = o->op.conv;
    CHECK(g != 0 && g != direct);
    want_member w3[] = {{alice.uid, DB_ADMIN, "alice"}, {bob.uid, DB_MEMBER, "bob"},
                        {carol.uid, DB_MEMBER, "carol"}};
    check_members(o->op.after, w3, 3, __LINE__);
    if (o->op.after) {
        CHECK_EQ_INT(o->op.after->type, DB_GROUP);
        CHECK(strcmp(o->op.after->name, "team") == 0);
        CHECK(o->op.after->me == NULL);
        /* A contact joins as a member; a stranger is invited. */
        const db_member *mb = member_of(o->op.after, bob.uid);
        const db_member *mc = member_of(o->op.after, carol.uid);
        CHECK(mb && !mb->invited);
        CHECK(mc && mc->invited);
    }
    top_free(o);

    /* Add: an admin only, not twice. */
    o = member_op(&t, OP_ADD, &alice, g, dave.uid, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    want_member w4[] = {{alice.uid, DB_ADMIN, "alice"}, {bob.uid, DB_MEMBER, "bob"},
                        {carol.uid, DB_MEMBER, "carol"}, {dave.uid, DB_MEMBER, "dave"}};
    check_members(o->op.after, w4, 4, __LINE__);
    CHECK(o->op.aud && o->op.aud->n == 4 && aud_has(o->op.aud, dave.uid));
    top_free(o);
    o = member_op(&t, OP_ADD, &bob, g, erin.uid, &rc);
    CHECK_EQ_INT(rc, ERR_FORBIDDEN);
    top_free(o);
    o = member_op(&t, OP_ADD, &alice, g, dave.uid, &rc);
    CHECK_EQ_INT(rc, ERR_ALREADY_MEMBER);
    top_free(o);
    o = member_op(&t, OP_ADD, &erin, g, erin.uid, &rc);
    CHECK_EQ_INT(rc, ERR_FORBIDDEN);
    top_free(o);
    o = member_op(&t, OP_ADD, &alice, direct, carol.uid, &rc);
    CHECK_EQ_INT(rc, ERR_INVALID);
    top_free(o);

    /* Remove. */
    o = member_op(&t, OP_REMOVE, &alice, g, carol.uid, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    want_member w3b[] = {{alice.uid, DB_ADMIN, "alice"}, {bob.uid, DB_MEMBER, "bob"},
                         {dave.uid, DB_MEMBER, "dave"}};
    check_members(o->op.after, w3b, 3, __LINE__);
    CHECK(o->op.aud && o->op.aud->n == 3 && !aud_has(o->op.aud, carol.uid));
    top_free(o);
    o = member_op(&t, OP_REMOVE, &alice, g, carol.uid, &rc);
    CHECK_EQ_INT(rc, ERR_NOT_MEMBER);
    top_free(o);
    o = member_op(&t, OP_REMOVE, &bob, g, dave.uid, &rc);
    CHECK_EQ_INT(rc, ERR_FORBIDDEN);
    top_free(o);

    /* members: for a member only. */
    audience *a = NULL;
    CHECK_EQ_INT(db_members(t.d, g, dave.uid, &a), ERR_OK);
    CHECK(a && a->n == 3 && aud_has(a, alice.uid) && aud_has(a, bob.uid) && aud_has(a, dave.uid));
    audience_unref(a);
    a = NULL;
    CHECK_EQ_INT(db_members(t.d, g, carol.uid, &a), ERR_FORBIDDEN);
    CHECK_EQ_INT(db_members(t.d, g + 1000, alice.uid, &a), ERR_FORBIDDEN);
    CHECK(a == NULL);

    /* contacts: everyone sharing a conversation, oneself excluded. */
    CHECK_EQ_INT(db_contacts(t.d, alice.uid, &a), ERR_OK);
    CHECK(a && a->n == 2 && aud_has(a, bob.uid) && aud_has(a, dave.uid));
    audience_unref(a);
    a = NULL;
    CHECK_EQ_INT(db_contacts(t.d, carol.uid, &a), ERR_OK);
    CHECK(a && a->n == 0);
    audience_unref(a);
    a = NULL;

    /* Leave: each conversation's result, and the group after it. */
    uint64_t g2 = must_group(&t, &bob, "solo", NULL, 0);
    o = top_new(OP_LEAVE, &bob);
    uint64_t leave[] = {g, direct, g + 1000, g2};
    o->op.nuids = 4;
    o->op.uids = malloc(sizeof leave);
    o->op.rcs = malloc(4 * sizeof *o->op.rcs);
    memcpy(o->op.uids, leave, sizeof leave);
    CHECK_EQ_INT(top_run(&t, o), ERR_OK);
    CHECK_EQ_INT(o->op.rcs[0], ERR_OK);
    CHECK_EQ_INT(o->op.rcs[1], ERR_INVALID);   /* a direct conversation is for good */
    CHECK_EQ_INT(o->op.rcs[2], ERR_FORBIDDEN); /* no such conversation */
    CHECK_EQ_INT(o->op.rcs[3], ERR_OK);
    CHECK(o->op.left != NULL);
    if (o->op.left) {
        want_member w2[] = {{alice.uid, DB_ADMIN, "alice"}, {dave.uid, DB_MEMBER, "dave"}};
        check_members(o->op.left[0], w2, 2, __LINE__);
        CHECK(o->op.left[0] && o->op.left[0]->me == NULL);
        CHECK(o->op.left[1] == NULL);
        CHECK(o->op.left[2] == NULL);
        CHECK(o->op.left[3] == NULL); /* nobody stays */
    }
    top_free(o);
    CHECK_EQ_INT(db_members(t.d, g, bob.uid, &a), ERR_FORBIDDEN);
    db_conv *c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, g, bob.uid, &c), ERR_FORBIDDEN);
    CHECK_EQ_INT(db_conv_get(t.d, g, alice.uid, &c), ERR_OK);
    check_members(c, (want_member[]){{alice.uid, DB_ADMIN, "alice"}, {dave.uid, DB_MEMBER, "dave"}},
                  2, __LINE__);
    free(c);
    /* bob still shares the direct conversation with alice. */
    CHECK_EQ_INT(db_contacts(t.d, bob.uid, &a), ERR_OK);
    CHECK(a && a->n == 1 && aud_has(a, alice.uid));
    audience_unref(a);
    tdb_close(&t);
}

/* Five messages from alice in a direct conversation with bob, cmids c1..c5. */
typedef struct chat5 {
    tdb t;
    db_ident alice, bob, carol;
    uint64_t conv;
} chat5;

static const char *body_of(int i)
{
    static const char *bodies[] = {"", "{\"text\":\"one\"}", "{\"text\":\"two\"}",
                                   "{\"text\":\"three\"}", "{\"text\":\"four\"}",
                                   "{\"text\":\"five\"}"};
    return bodies[i];
}

static void chat5_open(chat5 *x, const backend *be)
{
    tdb_open(&x->t, be);
    x->alice = must_reg(&x->t, "alice", 1);
    x->bob = must_reg(&x->t, "bob", 2);
    x->carol = must_reg(&x->t, "carol", 3);
    x->conv = must_direct(&x->t, &x->alice, x->bob.uid);
    for (int i = 1; i <= 5; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "c%d", i);
        uint64_t seq = 0;
        bool dup = true;
        CHECK_EQ_INT(send_msg(&x->t, &x->alice, x->conv, cmid, body_of(i), &seq, &dup, NULL),
                     ERR_OK);
        CHECK_EQ_INT(seq, i); /* gapless from 1 */
        CHECK(!dup);
    }
}

/* Checks that page p holds messages first..first+n-1 of chat5. */
static void check_page(const db_page *p, uint64_t first, size_t n, bool more, int line)
{
    bool ok = p && p->n == n && p->more == more;
    for (size_t i = 0; ok && i < n; i++) {
        const db_msg *m = &p->msgs[i];
        char cmid[8];
        snprintf(cmid, sizeof cmid, "c%llu", (unsigned long long)(first + i));
        ok = m->seq == first + i && bytes_are(m->cmid, m->cmid_len, cmid) &&
             bytes_are(m->body, m->body_len, body_of((int)(first + i))) &&
             strcmp(m->from_name, "alice") == 0 && m->ts > 0;
    }
    if (!ok) {
        test_cur_failed_++;
        fprintf(stderr, "  FAIL line %d in %s: page want seq %llu..+%zu more=%d, got", line,
                test_cur_name_, (unsigned long long)first, n, more);
        if (!p) fprintf(stderr, " none");
        else {
            for (size_t i = 0; i < p->n; i++)
                fprintf(stderr, " %llu:%.*s", (unsigned long long)p->msgs[i].seq,
                        (int)p->msgs[i].cmid_len, p->msgs[i].cmid);
            fprintf(stderr, " more=%d", p->more);
        }
        fprintf(stderr, "\n");
    }
}

DB_TEST(sends_are_gapless_and_idempotent)
{
    chat5 x;
    chat5_open(&x, be);
    tdb *t = &x.t;
    /* A resend: the original seq and ts, nothing new. */
    uint64_t seq = 0;
    bool dup = false;
    int64_t ts0 = 0, ts = 0;
    CHECK_EQ_INT(send_msg(t, &x.alice, x.conv, "c6", "{\"text\":\"six\"}", &seq, &dup, &ts0),
                 ERR_OK);
    CHECK_EQ_INT(seq, 6);
    CHECK(!dup);
    CHECK_EQ_INT(send_msg(t, &x.alice, x.conv, "c3", body_of(3), &seq, &dup, NULL), ERR_OK);
    CHECK_EQ_INT(seq, 3);
    CHECK(dup);
    CHECK_EQ_INT(send_msg(t, &x.alice, x.conv, "c6", "{\"text\":\"six\"}", &seq, &dup, &ts),
                 ERR_OK);
    CHECK_EQ_INT(seq, 6);
    CHECK(dup);
    CHECK_EQ_INT(ts, ts0);
    /* After the apply too. */
    db_settle(t->d, x.conv);
    CHECK_EQ_INT(send_msg(t, &x.alice, x.conv, "c1", body_of(1), &seq, &dup, NULL), ERR_OK);
    CHECK_EQ_INT(seq, 1);
    CHECK(dup);
    /* The same cmid with another body is refused, not acked. */
    CHECK_EQ_INT(send_msg(t, &x.alice, x.conv, "c2", "{\"text\":\"other\"}", &seq, &dup, NULL),
                 ERR_CMID_REUSED);
    /* A cmid is the sender's: bob's c1 is a new message. */
    CHECK_EQ_INT(send_msg(t, &x.bob, x.conv, "c1", body_of(1), &seq, &dup, NULL), ERR_OK);
    CHECK_EQ_INT(seq, 7);
    CHECK(!dup);
    /* Not a member, no such conversation. */
    CHECK_EQ_INT(send_msg(t, &x.carol, x.conv, "c9", "{}", &seq, &dup, NULL), ERR_FORBIDDEN);
    CHECK_EQ_INT(send_msg(t, &x.alice, x.conv + 1000, "c9", "{}", &seq, &dup, NULL),
                 ERR_FORBIDDEN);
    CHECK_EQ_INT(must_send(t, &x.alice, x.conv, "c8", "{}"), 8);
    db_settle(t->d, x.conv);
    db_page *p = NULL;
    CHECK_EQ_INT(db_history(t->d, x.conv, x.alice.uid, 0, 0, 100, BIG, &p), ERR_OK);
    CHECK(p && p->n == 8);
    for (size_t i = 0; p && i < p->n; i++) CHECK_EQ_INT(p->msgs[i].seq, i + 1);
    if (p && p->n == 8) {
        CHECK_EQ_INT(p->msgs[6].from, x.bob.uid);
        CHECK(strcmp(p->msgs[6].from_name, "bob") == 0);
        for (size_t i = 1; i < p->n; i++) CHECK(p->msgs[i].ts >= p->msgs[i - 1].ts);
    }
    free(p);
    tdb_close(t);
}

DB_TEST(history_pages_both_ways)
{
    chat5 x;
    chat5_open(&x, be);
    tdb *t = &x.t;
    db_settle(t->d, x.conv);
    db_page *p;
#define PAGE(viewer, after, before, limit, bytes) \
    (p = NULL, db_history(t->d, x.conv, (viewer), (after), (before), (limit), (bytes), &p))
    uint64_t a = x.alice.uid, b = x.bob.uid;
    /* Forward, from the start. */
    CHECK_EQ_INT(PAGE(a, 0, 0, 100, BIG), ERR_OK);
    check_page(p, 1, 5, false, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(b, 0, 0, 2, BIG), ERR_OK);
    check_page(p, 1, 2, true, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(b, 2, 0, 2, BIG), ERR_OK);
    check_page(p, 3, 2, true, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(b, 4, 0, 2, BIG), ERR_OK);
    check_page(p, 5, 1, false, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(b, 3, 0, 2, BIG), ERR_OK); /* exactly the rest */
    check_page(p, 4, 2, false, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(b, 5, 0, 10, BIG), ERR_OK);
    check_page(p, 1, 0, false, __LINE__);
    free(p);
    /* Backward, from the latest: ascending within the page. */
    CHECK_EQ_INT(PAGE(a, 0, UINT64_MAX, 100, BIG), ERR_OK);
    check_page(p, 1, 5, false, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(a, 0, UINT64_MAX, 2, BIG), ERR_OK);
    check_page(p, 4, 2, true, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(a, 0, 4, 2, BIG), ERR_OK);
    check_page(p, 2, 2, true, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(a, 0, 2, 2, BIG), ERR_OK);
    check_page(p, 1, 1, false, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(a, 0, 3, 2, BIG), ERR_OK); /* exactly the rest */
    check_page(p, 1, 2, false, __LINE__);
    free(p);
    CHECK_EQ_INT(PAGE(a, 0, 1, 10, BIG), ERR_OK);
    check_page(p, 1, 0, false, __LINE__);
    free(p);
    /* Not a member, no such conversation. */
    CHECK_EQ_INT(PAGE(x.carol.uid, 0, 0, 10, BIG), ERR_FORBIDDEN);
    CHECK_EQ_INT(db_history(t->d, x.conv + 1000, a, 0, 0, 10, BIG, &p), ERR_FORBIDDEN);
    CHECK_EQ_INT(db_history(t->d, x.conv, 0, 0, 0, 10, BIG, &p), ERR_FORBIDDEN);
#undef PAGE
    tdb_close(t);
}

DB_TEST(history_byte_budget)
{
    tdb t;
    tdb_open(&t, be);
    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    uint64_t conv = must_direct(&t, &alice, bob.uid);
    /* Large bodies: the budget is about their bytes, whatever a backend
     * adds per message. */
    enum { N = 6, LEN = 1000 };
    char body[LEN + 16];
    for (int i = 1; i <= N; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "m%d", i);
        int k = snprintf(body, sizeof body, "\"%d", i);
        memset(body + k, 'a' + i, LEN - k - 1);
        body[LEN - 1] = '"';
        body[LEN] = 0;
        CHECK_EQ_INT(must_send(&t, &alice, conv, cmid, body), i);
    }
    db_settle(t.d, conv);
    db_page *p = NULL;
    /* A tiny budget: one message all the same, the one next to the anchor. */
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 0, 0, 100, 1, &p), ERR_OK);
    CHECK(p && p->n == 1 && p->more && p->msgs[0].seq == 1 && p->msgs[0].body_len == LEN);
    free(p);
    p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 3, 0, 100, 1, &p), ERR_OK);
    CHECK(p && p->n == 1 && p->more && p->msgs[0].seq == 4);
    free(p);
    p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 0, UINT64_MAX, 100, 1, &p), ERR_OK);
    CHECK(p && p->n == 1 && p->more && p->msgs[0].seq == N);
    free(p);
    p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 5, 0, 100, 1, &p), ERR_OK);
    CHECK(p && p->n == 1 && !p->more && p->msgs[0].seq == 6); /* the last one: nothing more */
    free(p);
    /* About three messages' worth: cut at the end away from the anchor. */
    size_t budget = 3 * LEN + 100;
    p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 0, 0, 100, budget, &p), ERR_OK);
    CHECK(p && p->n >= 2 && p->n <= 3 && p->more);
    for (size_t i = 0; p && i < p->n; i++) CHECK_EQ_INT(p->msgs[i].seq, 1 + i);
    free(p);
    p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 0, UINT64_MAX, 100, budget, &p), ERR_OK);
    CHECK(p && p->n >= 2 && p->n <= 3 && p->more);
    for (size_t i = 0; p && i < p->n; i++) CHECK_EQ_INT(p->msgs[i].seq, N - p->n + 1 + i);
    free(p);
    /* The limit cuts before the budget does. */
    p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 0, UINT64_MAX, 1, BIG, &p), ERR_OK);
    CHECK(p && p->n == 1 && p->more && p->msgs[0].seq == N);
    free(p);
    tdb_close(&t);
}

DB_TEST(history_copy_outlives_writes_and_close)
{
    chat5 x;
    chat5_open(&x, be);
    tdb *t = &x.t;
    db_settle(t->d, x.conv);
    db_page *fwd = NULL, *back = NULL;
    db_conv *c = NULL;
    CHECK_EQ_INT(db_history(t->d, x.conv, x.bob.uid, 0, 0, 100, BIG, &fwd), ERR_OK);
    CHECK_EQ_INT(db_history(t->d, x.conv, x.bob.uid, 0, UINT64_MAX, 3, BIG, &back), ERR_OK);
    CHECK_EQ_INT(db_conv_get(t->d, x.conv, x.bob.uid, &c), ERR_OK);
    check_page(fwd, 1, 5, false, __LINE__);
    check_page(back, 3, 3, true, __LINE__);
    /* More writes: messages, cursors, members, a resend. */
    for (int i = 0; i < 50; i++) {
        char cmid[16];
        snprintf(cmid, sizeof cmid, "more%d", i);
        must_send(t, i % 2 ? &x.bob : &x.alice, x.conv, cmid, "{\"text\":\"later\"}");
    }
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 55, 55, true, NULL, NULL, NULL), ERR_OK);
    must_direct(t, &x.carol, x.bob.uid);
    must_group(t, &x.alice, "g", (uint64_t[]){x.bob.uid, x.carol.uid}, 2);
    db_settle(t->d, 0);
    check_page(fwd, 1, 5, false, __LINE__);
    check_page(back, 3, 3, true, __LINE__);
    CHECK(c && c->last_seq == 5 && c->last.seq == 5 && c->me && c->me->read == 0);
    CHECK(c && bytes_are(c->last.body, c->last.body_len, body_of(5)));
    /* And after the db is gone. */
    db_close(t->d);
    t->d = NULL;
    check_page(fwd, 1, 5, false, __LINE__);
    check_page(back, 3, 3, true, __LINE__);
    CHECK(c && c->n == 2 && member_of(c, x.alice.uid) &&
          strcmp(member_of(c, x.alice.uid)->name, "alice") == 0);
    CHECK(c && bytes_are(c->last.cmid, c->last.cmid_len, "c5"));
    free(fwd);
    free(back);
    free(c);
    tdb_close(t);
}

DB_TEST(conv_last_message)
{
    tdb t;
    tdb_open(&t, be);
    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    db_ident carol = must_reg(&t, "carol", 3);
    uint64_t g = must_group(&t, &alice, "team", (uint64_t[]){bob.uid, carol.uid}, 2);
    db_conv *c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, g, carol.uid, &c), ERR_OK);
    int64_t created = c ? c->last_ts : 0;
    CHECK(c && c->last_seq == 0 && c->last.seq == 0 && c->last_ts > 0);
    CHECK(c && c->last.cmid_len == 0 && c->last.body_len == 0);
    free(c);
    next_ms();
    must_send(&t, &alice, g, "a1", "{\"text\":\"hi\"}");
    next_ms();
    int64_t ts = 0;
    uint64_t seq = 0;
    CHECK_EQ_INT(send_msg(&t, &bob, g, "b-1", "{\"text\":\"hello\",\"n\":[1,2]}", &seq, NULL, &ts),
                 ERR_OK);
    CHECK_EQ_INT(seq, 2);
    db_settle(t.d, g);
    c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, g, carol.uid, &c), ERR_OK);
    if (c) {
        CHECK_EQ_INT(c->last_seq, 2);
        CHECK_EQ_INT(c->last_ts, ts);
        CHECK(c->last_ts > created);
        CHECK_EQ_INT(c->last.seq, 2);
        CHECK_EQ_INT(c->last.from, bob.uid);
        CHECK_EQ_INT(c->last.ts, ts);
        CHECK(strcmp(c->last.from_name, "bob") == 0);
        CHECK(bytes_are(c->last.cmid, c->last.cmid_len, "b-1"));
        CHECK(bytes_are(c->last.body, c->last.body_len, "{\"text\":\"hello\",\"n\":[1,2]}"));
        CHECK(strcmp(c->name, "team") == 0);
        /* The senders have read what they sent. */
        const db_member *mb = member_of(c, bob.uid), *ma = member_of(c, alice.uid);
        CHECK(mb && mb->delivered == 2 && mb->read == 2);
        CHECK(ma && ma->delivered == 1 && ma->read == 1);
        CHECK(c->me && c->me->uid == carol.uid && c->me->read == 0);
        free(c);
    }
    /* The sender left: the last message keeps its sender's name. */
    top *o = top_new(OP_LEAVE, &bob);
    o->op.nuids = 1;
    o->op.uids = malloc(sizeof *o->op.uids);
    o->op.rcs = malloc(sizeof *o->op.rcs);
    o->op.uids[0] = g;
    CHECK_EQ_INT(top_run(&t, o), ERR_OK);
    CHECK_EQ_INT(o->op.rcs[0], ERR_OK);
    top_free(o);
    c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, g, alice.uid, &c), ERR_OK);
    if (c) {
        CHECK_EQ_INT(c->n, 2);
        CHECK_EQ_INT(c->last.from, bob.uid);
        CHECK(strcmp(c->last.from_name, "bob") == 0);
        free(c);
    }
    tdb_close(&t);
}

DB_TEST(cursors_move_forward_only)
{
    chat5 x;
    chat5_open(&x, be);
    tdb *t = &x.t;
    bool changed = false;
    uint64_t dl = 0, rd = 0;
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 3, 0, false, &changed, &dl, &rd), ERR_OK);
    CHECK(changed);
    CHECK_EQ_INT(dl, 3);
    CHECK_EQ_INT(rd, 0);
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 2, 0, false, &changed, &dl, &rd), ERR_OK);
    CHECK(!changed);
    CHECK_EQ_INT(dl, 3);
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 3, 0, false, &changed, &dl, &rd), ERR_OK);
    CHECK(!changed);
    /* A read (accepting bob's invitation) below delivered keeps delivered. */
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 0, 2, true, &changed, &dl, &rd), ERR_OK);
    CHECK(changed);
    CHECK_EQ_INT(dl, 3);
    CHECK_EQ_INT(rd, 2);
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 0, 1, true, &changed, &dl, &rd), ERR_OK);
    CHECK(!changed);
    CHECK_EQ_INT(rd, 2);
    /* A read beyond delivered raises delivered. */
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 0, 4, true, &changed, &dl, &rd), ERR_OK);
    CHECK(changed);
    CHECK_EQ_INT(dl, 4);
    CHECK_EQ_INT(rd, 4);
    /* Beyond the last message, not a member, no such conversation. */
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 6, 0, false, NULL, NULL, NULL), ERR_INVALID);
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 0, 6, true, NULL, NULL, NULL), ERR_INVALID);
    CHECK_EQ_INT(cursor(t, &x.carol, x.conv, 1, 1, true, NULL, NULL, NULL), ERR_FORBIDDEN);
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv + 1000, 1, 1, true, NULL, NULL, NULL), ERR_FORBIDDEN);

    db_settle(t->d, x.conv);
    db_conv *c = NULL;
    CHECK_EQ_INT(db_conv_get(t->d, x.conv, x.alice.uid, &c), ERR_OK);
    if (c) {
        const db_member *mb = member_of(c, x.bob.uid);
        CHECK(mb && mb->delivered == 4 && mb->read == 4);
        CHECK(mb && !mb->invited); /* the read accepted it */
        CHECK(c->me && c->me->delivered == 5 && c->me->read == 5); /* the sender's own */
        free(c);
    }
    /* Once applied, a lower one is still not a change. */
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 3, 3, true, &changed, &dl, &rd), ERR_OK);
    CHECK(!changed);
    CHECK_EQ_INT(dl, 4);
    CHECK_EQ_INT(rd, 4);
    CHECK_EQ_INT(cursor(t, &x.bob, x.conv, 5, 0, false, &changed, &dl, &rd), ERR_OK);
    CHECK(changed);
    CHECK_EQ_INT(dl, 5);
    CHECK_EQ_INT(rd, 4);
    db_settle(t->d, x.conv);
    c = NULL;
    CHECK_EQ_INT(db_conv_get(t->d, x.conv, x.bob.uid, &c), ERR_OK);
    CHECK(c && c->me && c->me->delivered == 5 && c->me->read == 4);
    free(c);
    tdb_close(t);
}

/* ---- inbox ---------------------------------------------------------------------- */

/* alice in five conversations, made and then written to with distinct
 * activity times; ids[0] is the most recent, ids[4] the least. */
typedef struct inbox5 {
    tdb t;
    db_ident alice, others[4];
    uint64_t ids[5];
} inbox5;

static void inbox5_open(inbox5 *x, const backend *be)
{
    tdb_open(&x->t, be);
    tdb *t = &x->t;
    x->alice = must_reg(t, "alice", 1);
    const char *names[4] = {"bob", "carol", "dave", "erin"};
    for (int i = 0; i < 4; i++) x->others[i] = must_reg(t, names[i], (uint8_t)(2 + i));
    uint64_t made[5];
    for (int i = 0; i < 4; i++) {
        made[i] = must_direct(t, &x->others[i], x->alice.uid);
        next_ms();
    }
    made[4] = must_group(t, &x->alice, "all", (uint64_t[]){x->others[0].uid}, 1);
    next_ms();
    /* Activity in this order: made[2], made[4], made[0]; made[3] and
     * made[1] stay at their creation. Most recent first: */
    must_send(t, &x->others[2], made[2], "x", "{}");
    next_ms();
    must_send(t, &x->alice, made[4], "x", "{}");
    next_ms();
    must_send(t, &x->others[0], made[0], "x", "{}");
    x->ids[0] = made[0];
    x->ids[1] = made[4];
    x->ids[2] = made[2];
    x->ids[3] = made[3];
    x->ids[4] = made[1];
    db_settle(t->d, 0);
}

static db_inbox_req inbox_req(uint64_t uid, size_t limit)
{
    db_inbox_req q = {.uid = uid, .limit = limit, .max_bytes = BIG};
    return q;
}

/* Checks that in lists exactly ids[0..n) in that order. */
static void check_inbox(const db_inbox *in, const uint64_t *ids, size_t n, bool more, int line)
{
    bool ok = in && in->n == n && in->more == more;
    for (size_t i = 0; ok && i < n; i++) ok = in->convs[i] && in->convs[i]->id == ids[i];
    if (!ok) {
        test_cur_failed_++;
        fprintf(stderr, "  FAIL line %d in %s: inbox want", line, test_cur_name_);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %llu", (unsigned long long)ids[i]);
        fprintf(stderr, " more=%d, got", more);
        if (!in) fprintf(stderr, " none");
        else {
            for (size_t i = 0; i < in->n; i++)
                fprintf(stderr, " %llu(ts %lld)", (unsigned long long)in->convs[i]->id,
                        (long long)in->convs[i]->last_ts);
            fprintf(stderr, " more=%d", in->more);
        }
        fprintf(stderr, "\n");
    }
}

/* In order: last_ts descending, then id descending; each with uid as me. */
static void check_inbox_order(const db_inbox *in, uint64_t uid, int line)
{
    for (size_t i = 0; in && i < in->n; i++) {
        const db_conv *c = in->convs[i];
        if (!c->me || c->me->uid != uid) {
            test_cur_failed_++;
            fprintf(stderr, "  FAIL line %d in %s: inbox conv %llu without its viewer\n", line,
                    test_cur_name_, (unsigned long long)c->id);
        }
        if (i == 0) continue;
        const db_conv *p = in->convs[i - 1];
        if (!(p->last_ts > c->last_ts || (p->last_ts == c->last_ts && p->id > c->id))) {
            test_cur_failed_++;
            fprintf(stderr, "  FAIL line %d in %s: inbox order %llu(ts %lld) before %llu(ts %lld)\n",
                    line, test_cur_name_, (unsigned long long)p->id, (long long)p->last_ts,
                    (unsigned long long)c->id, (long long)c->last_ts);
        }
    }
}

DB_TEST(inbox_first_page_order_limit_more)
{
    inbox5 x;
    inbox5_open(&x, be);
    tdb *t = &x.t;
    db_inbox_req q = inbox_req(x.alice.uid, 100);
    db_inbox *in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, x.ids, 5, false, __LINE__);
    check_inbox_order(in, x.alice.uid, __LINE__);
    CHECK(in && in->cursor > 0);
    if (in && in->n == 5) {
        CHECK_EQ_INT(in->convs[0]->last_seq, 1);
        CHECK_EQ_INT(in->convs[0]->last.from, x.others[0].uid);
        CHECK_EQ_INT(in->convs[3]->last_seq, 0);
        CHECK_EQ_INT(in->convs[1]->type, DB_GROUP);
    }
    uint64_t cursor = in ? in->cursor : 0;
    db_inbox_free(in);
    /* Limits. */
    q.limit = 2;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, x.ids, 2, true, __LINE__);
    CHECK(in && in->cursor == cursor); /* nothing changed meanwhile */
    db_inbox_free(in);
    q.limit = 5;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, x.ids, 5, false, __LINE__);
    db_inbox_free(in);
    q.limit = 1;
    q.max_bytes = 1; /* at least one */
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, x.ids, 1, true, __LINE__);
    db_inbox_free(in);
    q.limit = 100;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    CHECK(in && in->n >= 1 && in->n < 5 && in->more);
    check_inbox(in, x.ids, in ? in->n : 0, true, __LINE__);
    db_inbox_free(in);
    /* Someone else's inbox: bob is in two of them (one direct, the group). */
    q = inbox_req(x.others[0].uid, 100);
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, (uint64_t[]){x.ids[0], x.ids[1]}, 2, false, __LINE__);
    check_inbox_order(in, x.others[0].uid, __LINE__);
    db_inbox_free(in);
    /* A user without conversations. */
    db_ident zed = must_reg(t, "zed", 9);
    q = inbox_req(zed.uid, 100);
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, NULL, 0, false, __LINE__);
    db_inbox_free(in);
    tdb_close(t);
}

DB_TEST(inbox_pages_walk_without_repeats)
{
    inbox5 x;
    inbox5_open(&x, be);
    tdb *t = &x.t;
    db_inbox_req q = inbox_req(x.alice.uid, 2);
    db_inbox *in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, x.ids, 2, true, __LINE__);
    if (!in || in->n != 2) { db_inbox_free(in); tdb_close(t); return; }
    uint64_t snapshot = in->cursor;
    /* The walk's next pages: after the last one listed, same snapshot. */
    uint64_t seen[8];
    size_t nseen = 0;
    for (size_t i = 0; i < in->n; i++) seen[nseen++] = in->convs[i]->id;
    int pages = 1;
    while (in->more && pages < 5) {
        db_inbox_req n = q;
        n.page = true;
        n.since = 0;
        n.snapshot = snapshot;
        n.ts = in->convs[in->n - 1]->last_ts;
        n.conv = in->convs[in->n - 1]->id;
        db_inbox_free(in);
        in = NULL;
        CHECK_EQ_INT(db_inbox_get(t->d, &n, &in), ERR_OK);
        if (!in) break;
        pages++;
        CHECK_EQ_INT(in->cursor, snapshot);
        check_inbox_order(in, x.alice.uid, __LINE__);
        for (size_t i = 0; i < in->n && nseen < 8; i++) seen[nseen++] = in->convs[i]->id;
        if (!in->n) break;
    }
    db_inbox_free(in);
    CHECK_EQ_INT(pages, 3);
    CHECK_EQ_INT(nseen, 5);
    for (size_t i = 0; i < nseen && i < 5; i++) CHECK_EQ_INT(seen[i], x.ids[i]);
    tdb_close(t);
}

DB_TEST(inbox_walk_leaves_out_what_changed_after_it_began)
{
    inbox5 x;
    inbox5_open(&x, be);
    tdb *t = &x.t;
    db_inbox_req q = inbox_req(x.alice.uid, 2);
    db_inbox *in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, x.ids, 2, true, __LINE__);
    if (!in || in->n != 2) { db_inbox_free(in); tdb_close(t); return; }
    uint64_t snapshot = in->cursor;
    db_inbox_req n = q;
    n.page = true;
    n.snapshot = snapshot;
    n.ts = in->convs[1]->last_ts;
    n.conv = in->convs[1]->id;
    n.limit = 100;
    db_inbox_free(in);
    /* ids[3] moves to the top meanwhile: not on the walk's later pages (it
     * would be a repeat for whoever walks on), but listed by the next
     * walk since the snapshot. */
    next_ms();
    must_send(t, &x.alice, x.ids[3], "late", "{}");
    db_settle(t->d, 0);
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &n, &in), ERR_OK);
    check_inbox(in, (uint64_t[]){x.ids[2], x.ids[4]}, 2, false, __LINE__);
    db_inbox_free(in);
    db_inbox_req s = inbox_req(x.alice.uid, 100);
    s.since = snapshot;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &s, &in), ERR_OK);
    check_inbox(in, (uint64_t[]){x.ids[3]}, 1, false, __LINE__);
    CHECK(in && in->cursor > snapshot);
    db_inbox_free(in);
    tdb_close(t);
}

DB_TEST(inbox_since_lists_only_changes)
{
    inbox5 x;
    inbox5_open(&x, be);
    tdb *t = &x.t;
    db_inbox_req q = inbox_req(x.alice.uid, 100);
    db_inbox *in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    uint64_t c1 = in ? in->cursor : 0;
    db_inbox_free(in);
    /* Nothing changed. */
    q.since = c1;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, NULL, 0, false, __LINE__);
    CHECK(in && in->cursor == c1);
    db_inbox_free(in);
    /* A message in ids[4]; a cursor of alice's own in ids[2]; a change
     * elsewhere (bob and carol's new conversation, without alice). */
    next_ms();
    must_send(t, &x.others[1], x.ids[4], "y", "{}");
    CHECK_EQ_INT(cursor(t, &x.alice, x.ids[2], 1, 1, true, NULL, NULL, NULL), ERR_OK);
    must_direct(t, &x.others[0], x.others[1].uid);
    db_settle(t->d, 0);
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, (uint64_t[]){x.ids[4], x.ids[2]}, 2, false, __LINE__);
    check_inbox_order(in, x.alice.uid, __LINE__);
    if (in && in->n == 2) {
        CHECK_EQ_INT(in->convs[0]->last_seq, 1);
        CHECK(in->convs[1]->me && in->convs[1]->me->read == 1);
    }
    uint64_t c2 = in ? in->cursor : 0;
    CHECK(c2 > c1);
    db_inbox_free(in);
    /* Since the newer cursor: nothing again; since 0: everything. */
    q.since = c2;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, NULL, 0, false, __LINE__);
    db_inbox_free(in);
    q.since = 0;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    CHECK(in && in->n == 5);
    check_inbox_order(in, x.alice.uid, __LINE__);
    db_inbox_free(in);
    /* A member added later: the group is listed to the newcomer since any
     * cursor of theirs from before. */
    q = inbox_req(x.others[3].uid, 100);
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    uint64_t ce = in ? in->cursor : 0;
    db_inbox_free(in);
    int rc;
    top_free(member_op(t, OP_ADD, &x.alice, x.ids[1], x.others[3].uid, &rc));
    CHECK_EQ_INT(rc, ERR_OK);
    db_settle(t->d, 0);
    q.since = ce;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    check_inbox(in, (uint64_t[]){x.ids[1]}, 1, false, __LINE__);
    db_inbox_free(in);
    tdb_close(t);
}

DB_TEST(inbox_page_from_the_future_is_invalid)
{
    inbox5 x;
    inbox5_open(&x, be);
    tdb *t = &x.t;
    db_inbox_req q = inbox_req(x.alice.uid, 2);
    db_inbox *in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &q, &in), ERR_OK);
    uint64_t cursor = in ? in->cursor : 0;
    db_inbox_free(in);
    db_inbox_req n = q;
    n.page = true;
    n.snapshot = cursor + 1000000;
    n.ts = INT64_MAX;
    n.conv = UINT64_MAX;
    in = NULL;
    CHECK_EQ_INT(db_inbox_get(t->d, &n, &in), ERR_INVALID);
    CHECK(in == NULL);
    /* The present is fine: a walk from the top with the current cursor. */
    n.snapshot = cursor;
    CHECK_EQ_INT(db_inbox_get(t->d, &n, &in), ERR_OK);
    check_inbox(in, x.ids, 2, true, __LINE__);
    db_inbox_free(in);
    tdb_close(t);
}

DB_TEST(read_your_writes_after_settle)
{
    tdb t;
    db_options o = test_options();
    o.apply_delay_ms = 10000; /* the applier would wait this long: settle must not */
    tdb_open_with(&t, be, o);
    db_ident alice = must_reg(&t, "alice", 1);
    db_ident bob = must_reg(&t, "bob", 2);
    uint64_t conv = must_direct(&t, &alice, bob.uid);
    for (int i = 1; i <= 3; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "c%d", i);
        CHECK_EQ_INT(must_send(&t, &alice, conv, cmid, body_of(i)), i);
        db_settle(t.d, conv);
        db_page *p = NULL;
        CHECK_EQ_INT(db_history(t.d, conv, bob.uid, 0, UINT64_MAX, 10, BIG, &p), ERR_OK);
        check_page(p, 1, (size_t)i, false, __LINE__);
        free(p);
    }
    /* A cursor, then the conversation as its reader sees it. */
    CHECK_EQ_INT(cursor(&t, &bob, conv, 3, 0, false, NULL, NULL, NULL), ERR_OK);
    db_settle(t.d, conv);
    db_conv *c = NULL;
    CHECK_EQ_INT(db_conv_get(t.d, conv, bob.uid, &c), ERR_OK);
    CHECK(c && c->last_seq == 3 && c->last.seq == 3 && c->me && c->me->delivered == 3);
    free(c);
    /* settle(0): everything, for the inbox. */
    CHECK_EQ_INT(must_send(&t, &bob, conv, "b1", "{}"), 4);
    db_settle(t.d, 0);
    db_inbox_req q = inbox_req(alice.uid, 10);
    db_inbox *in = NULL;
    CHECK_EQ_INT(db_inbox_get(t.d, &q, &in), ERR_OK);
    CHECK(in && in->n == 1 && in->convs[0]->last_seq == 4 && in->convs[0]->last.from == bob.uid);
    db_inbox_free(in);
    /* Another conversation's settle is independent of this one's writes. */
    db_ident carol = must_reg(&t, "carol", 3);
    uint64_t conv2 = must_direct(&t, &carol, alice.uid);
    CHECK_EQ_INT(must_send(&t, &carol, conv2, "k1", "{}"), 1);
    db_settle(t.d, conv2);
    db_page *p = NULL;
    CHECK_EQ_INT(db_history(t.d, conv2, alice.uid, 0, 0, 10, BIG, &p), ERR_OK);
    CHECK(p && p->n == 1 && p->msgs[0].seq == 1);
    free(p);
    tdb_close(&t);
}

/* Two dbs of one backend, one after the other in one process (as this
 * suite opens them, and as a tool or a test might), doing the same thing:
 * the second must not see anything of the first, closed one. The failure
 * shows under the sanitizer build (the plain build corrupts freed memory
 * silently). */
DB_TEST(dbs_one_after_another_are_independent)
{
    for (int round = 0; round < 2; round++) {
        tdb t;
        tdb_open(&t, be);
        db_ident alice = must_reg(&t, "alice", 1);
        db_ident bob = must_reg(&t, "bob", 2);
        uint64_t conv = must_direct(&t, &alice, bob.uid);
        CHECK_EQ_INT(must_send(&t, &alice, conv, "c1", body_of(1)), 1);
        bool changed = false;
        CHECK_EQ_INT(cursor(&t, &bob, conv, 1, 0, false, &changed, NULL, NULL), ERR_OK);
        CHECK(changed);
        db_settle(t.d, conv);
        db_conv *c = NULL;
        CHECK_EQ_INT(db_conv_get(t.d, conv, bob.uid, &c), ERR_OK);
        CHECK(c && c->me && c->me->delivered == 1);
        free(c);
        tdb_close(&t);
    }
}

/* ---- main ------------------------------------------------------------------------ */

#define RUN_ON(be, fn) do { \
    static char full_[160]; \
    snprintf(full_, sizeof full_, "%s/%s", (be)->name, #fn); \
    test_cur_name_ = full_; test_cur_failed_ = 0; \
    fn(be); \
    if (test_cur_failed_) { test_failed_++; fprintf(stderr, "FAIL %s\n", full_); } \
    else test_passed_++; \
    } while (0)

int main(void)
{
    for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++) {
        const backend *be = &backends[i];
        if (be->vfs == &db_pg && !getenv("PARLEY_TEST_PG_HOSTPORT")) continue; /* no server */
        RUN_ON(be, register_session_account_users_counts);
        RUN_ON(be, direct_conversation);
        RUN_ON(be, group_create_add_remove_leave);
        RUN_ON(be, the_last_admin_leaving_hands_the_role_on);
        RUN_ON(be, sends_are_gapless_and_idempotent);
        RUN_ON(be, history_pages_both_ways);
        RUN_ON(be, history_byte_budget);
        RUN_ON(be, history_copy_outlives_writes_and_close);
        RUN_ON(be, conv_last_message);
        RUN_ON(be, cursors_move_forward_only);
        RUN_ON(be, inbox_first_page_order_limit_more);
        RUN_ON(be, inbox_pages_walk_without_repeats);
        RUN_ON(be, inbox_walk_leaves_out_what_changed_after_it_began);
        RUN_ON(be, inbox_since_lists_only_changes);
        RUN_ON(be, inbox_page_from_the_future_is_invalid);
        RUN_ON(be, read_your_writes_after_settle);
        RUN_ON(be, dbs_one_after_another_are_independent);
        (void)dbs_one_after_another_are_independent;
    }
    return test_summary("db");
}
