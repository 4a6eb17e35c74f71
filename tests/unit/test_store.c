/* Unit tests of the LMDB store (src/store.c). Each test works in a fresh
 * directory under /tmp, removed afterwards. */
#include "test.h"
#include "store/store.h"

#include <ftw.h>
#include <signal.h>
#include <sys/wait.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#define MAP (64u << 20)

/* ---- fixtures ----------------------------------------------------------- */

static char tmp_dir[64];

static const char *tmp_new(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/parley_store_XXXXXX");
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); exit(2); }
    return tmp_dir;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

static void tmp_rm(void)
{
    nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh store in a fresh directory. */
static store *fresh(void)
{
    store *s = NULL;
    int rc = store_open(&s, tmp_new(), MAP);
    if (rc) { fprintf(stderr, "store_open: %s\n", err_name(rc)); exit(2); }
    return s;
}

static void done(store *s)
{
    store_close(s);
    tmp_rm();
}

static store_txn *wbegin(store *s)
{
    store_txn *t = NULL;
    if (store_begin(s, true, &t)) exit(2);
    return t;
}

static store_txn *rbegin(store *s)
{
    store_txn *t = NULL;
    if (store_begin(s, false, &t)) exit(2);
    return t;
}

static uint64_t mkuser(store_txn *t, const char *name)
{
    uint64_t uid = 0;
    int rc = store_user_create(t, name, "$argon2id$hash", 1000, &uid);
    if (rc) { fprintf(stderr, "user_create %s: %s\n", name, err_name(rc)); exit(2); }
    return uid;
}

static uint64_t mkconv(store_txn *t, uint8_t type, const char *name)
{
    store_conv c = { .type = type, .created = 5, .last_ts = 5 };
    snprintf(c.name, sizeof c.name, "%s", name);
    if (store_conv_create(t, &c)) exit(2);
    return c.id;
}

static int put_msg(store_txn *t, uint64_t conv, uint64_t seq, const char *body)
{
    char cmid[32];
    int n = snprintf(cmid, sizeof cmid, "c%llu-%llu", (unsigned long long)conv,
                     (unsigned long long)seq);
    store_msg m = { .conv = conv, .seq = seq, .from = 7, .ts = (int64_t)(1000 + seq),
                    .cmid = cmid, .cmid_len = (size_t)n,
                    .body = body, .body_len = strlen(body) };
    return store_msg_put(t, &m);
}

/* Raw LMDB access to the environment, for the version tests. */
static int raw_version(const char *dir, bool set, uint8_t *last)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = { 7, "version" }, v;
    int rc = mdb_env_create(&env);
    if (rc) return rc;
    mdb_env_set_maxdbs(env, 16);
    if ((rc = mdb_env_open(env, dir, 0, 0600))) goto out;
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn))) goto out;
    if ((rc = mdb_dbi_open(txn, "meta", 0, &dbi)) || (rc = mdb_get(txn, dbi, &k, &v))) {
        mdb_txn_abort(txn);
        goto out;
    }
    if (set) {
        /* Same size as the store wrote; a different last byte. */
        uint8_t b[16];
        if (v.mv_size > sizeof b) { mdb_txn_abort(txn); rc = -1; goto out; }
        memcpy(b, v.mv_data, v.mv_size);
        b[v.mv_size - 1] = *last;
        MDB_val nv = { v.mv_size, b };
        if ((rc = mdb_put(txn, dbi, &k, &nv, 0))) { mdb_txn_abort(txn); goto out; }
        rc = mdb_txn_commit(txn);
    } else {
        *last = ((uint8_t *)v.mv_data)[v.mv_size - 1];
        mdb_txn_abort(txn);
    }
out:
    mdb_env_close(env);
    return rc;
}

/* ---- environment --------------------------------------------------------- */

TEST(open_create_reopen)
{
    char dir[128];
    snprintf(dir, sizeof dir, "%s/a/b", tmp_new());   /* missing: created */
    store *s = NULL;
    CHECK_EQ_INT(store_open(&s, dir, MAP), ERR_OK);
    CHECK(s != NULL);
    store_txn *t = wbegin(s);
    uint64_t uid = mkuser(t, "alice");
    uint64_t conv = mkconv(t, STORE_GROUP, "g");
    CHECK_EQ_INT(put_msg(t, conv, 1, "\"hi\""), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    store_close(s);

    s = NULL;
    CHECK_EQ_INT(store_open(&s, dir, MAP), ERR_OK);
    t = rbegin(s);
    store_user u;
    CHECK_EQ_INT(store_user_by_name(t, "alice", &u), ERR_OK);
    CHECK_EQ_INT(u.id, uid);
    store_msg m;
    CHECK_EQ_INT(store_msg_get(t, conv, 1, &m), ERR_OK);
    CHECK(m.body_len == 4 && memcmp(m.body, "\"hi\"", 4) == 0);
    store_abort(t);
    /* Counters continue after a reopen. */
    t = wbegin(s);
    CHECK_EQ_INT(mkuser(t, "bob"), uid + 1);
    CHECK_EQ_INT(mkconv(t, STORE_GROUP, "h"), conv + 1);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    done(s);

    CHECK_EQ_INT(store_open(NULL, "/tmp", MAP), ERR_INVALID);
}

TEST(version_mismatch)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    mkuser(t, "alice");
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    store_close(s);

    uint8_t cur = 0, other;
    CHECK_EQ_INT(raw_version(tmp_dir, false, &cur), 0);
    CHECK_EQ_INT(cur, STORE_FORMAT_VERSION);
    other = (uint8_t)(cur + 1);
    CHECK_EQ_INT(raw_version(tmp_dir, true, &other), 0);

    s = (store *)1;
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_VERSION);
    CHECK(s == NULL);
    uint8_t after = 0;
    CHECK_EQ_INT(raw_version(tmp_dir, false, &after), 0);
    CHECK_EQ_INT(after, other);                 /* unchanged */

    /* Back to our version: the data is intact. */
    CHECK_EQ_INT(raw_version(tmp_dir, true, &cur), 0);
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_OK);
    t = rbegin(s);
    store_user u;
    CHECK_EQ_INT(store_user_by_name(t, "alice", &u), ERR_OK);
    store_abort(t);
    done(s);
}

TEST(foreign_and_corrupt_env)
{
    /* An LMDB environment that is not a parley store. */
    tmp_new();
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = { 3, "abc" }, v = { 3, "xyz" };
    CHECK_EQ_INT(mdb_env_create(&env), 0);
    CHECK_EQ_INT(mdb_env_open(env, tmp_dir, 0, 0600), 0);
    CHECK_EQ_INT(mdb_txn_begin(env, NULL, 0, &txn), 0);
    CHECK_EQ_INT(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    CHECK_EQ_INT(mdb_put(txn, dbi, &k, &v, 0), 0);
    CHECK_EQ_INT(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    store *s = NULL;
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_VERSION);
    tmp_rm();

    /* Garbage where the data file should be. */
    tmp_new();
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", tmp_dir);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        for (int i = 0; i < 16384; i++) fputc((i * 7919) & 0xff, f);
        fclose(f);
    }
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_IO);
    tmp_rm();

    /* A file where the directory should be. */
    tmp_new();
    snprintf(path, sizeof path, "%s/file", tmp_dir);
    f = fopen(path, "w");
    if (f) fclose(f);
    CHECK_EQ_INT(store_open(&s, path, MAP), ERR_IO);
    tmp_rm();
}

/* One store per directory: a second open, from this process or another,
 * is refused while the first is open; the lock dies with its holder. */
TEST(one_store_per_directory)
{
    char path[160];
    CHECK_EQ_INT(store_lock_pid(NULL), 0);
    store *s = fresh();
    CHECK_EQ_INT(store_lock_pid(tmp_dir), (int)getpid());
    store *s2 = (store *)1;
    CHECK_EQ_INT(store_open(&s2, tmp_dir, MAP), ERR_BUSY);
    CHECK(s2 == NULL);
    pid_t pid = fork();
    if (pid == 0) {
        store *c = NULL;
        _exit(store_open(&c, tmp_dir, MAP) == ERR_BUSY ? 0 : 1);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* The refused opens changed nothing: the first store still works. */
    store_txn *t = wbegin(s);
    mkuser(t, "alice");
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    store_close(s);

    /* Released by store_close(); a stale LOCK's content does not matter. */
    snprintf(path, sizeof path, "%s/LOCK", tmp_dir);
    FILE *f = fopen(path, "w");
    if (f) { fputs("garbage\n", f); fclose(f); }
    CHECK_EQ_INT(store_lock_pid(tmp_dir), 0);
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_OK);
    store_close(s);

    /* Released when the holder dies, even by SIGKILL. */
    int fds[2];
    CHECK_EQ_INT(pipe(fds), 0);
    pid = fork();
    if (pid == 0) {
        store *c = NULL;
        close(fds[0]);
        if (store_open(&c, tmp_dir, MAP) != ERR_OK) _exit(2);
        if (write(fds[1], "o", 1) != 1) _exit(2);
        for (;;) pause();
    }
    close(fds[1]);
    char ok = 0;
    CHECK(read(fds[0], &ok, 1) == 1 && ok == 'o');
    close(fds[0]);
    CHECK_EQ_INT(store_lock_pid(tmp_dir), (int)pid);
    CHECK_EQ_INT(store_open(&s2, tmp_dir, MAP), ERR_BUSY);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_OK);
    t = rbegin(s);
    store_user u;
    CHECK_EQ_INT(store_user_by_name(t, "alice", &u), ERR_OK);
    store_abort(t);
    store_close(s);

    /* A LOCK that is a symlink is not followed: refused. */
    remove(path);
    CHECK_EQ_INT(symlink("/tmp/parley_store_elsewhere", path), 0);
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_IO);
    tmp_rm();
}

/* ---- users and sessions ------------------------------------------------- */

TEST(users)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t a = 0, b = 0, x = 0;
    CHECK_EQ_INT(store_user_create(t, "alice", "h1", 100, &a), ERR_OK);
    CHECK_EQ_INT(store_user_create(t, "bob", "h2", 200, &b), ERR_OK);
    CHECK_EQ_INT(a, 1);
    CHECK_EQ_INT(b, 2);
    CHECK_EQ_INT(store_user_create(t, "alice", "h3", 300, &x), ERR_CONFLICT);
    CHECK_EQ_INT(store_commit(t), ERR_OK);   /* a conflict does not poison */

    t = rbegin(s);
    store_user u;
    CHECK_EQ_INT(store_user_by_name(t, "alice", &u), ERR_OK);
    CHECK_EQ_INT(u.id, a);
    CHECK(strcmp(u.name, "alice") == 0);
    CHECK(strcmp(u.pwhash, "h1") == 0);
    CHECK_EQ_INT(u.created, 100);
    CHECK_EQ_INT(u.last_seen, 0);
    CHECK_EQ_INT(u.next_device, 1);
    CHECK_EQ_INT(store_user_get(t, b, &u), ERR_OK);
    CHECK(strcmp(u.name, "bob") == 0);
    CHECK_EQ_INT(store_user_get(t, 99, &u), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_user_by_name(t, "carol", &u), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_user_create(t, "carol", "h", 1, &x), ERR_INVALID); /* read txn */
    store_abort(t);

    t = wbegin(s);
    CHECK_EQ_INT(store_user_get(t, a, &u), ERR_OK);
    u.last_seen = 12345;
    u.next_device = 4;
    CHECK_EQ_INT(store_user_put(t, &u), ERR_OK);
    /* Rename keeps the names index in step; a taken name conflicts. */
    store_user r;
    CHECK_EQ_INT(store_user_get(t, b, &r), ERR_OK);
    snprintf(r.name, sizeof r.name, "alice");
    CHECK_EQ_INT(store_user_put(t, &r), ERR_CONFLICT);
    snprintf(r.name, sizeof r.name, "robert");
    CHECK_EQ_INT(store_user_put(t, &r), ERR_OK);
    store_user ghost = { .id = 77 };
    snprintf(ghost.name, sizeof ghost.name, "ghost");
    CHECK_EQ_INT(store_user_put(t, &ghost), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = rbegin(s);
    CHECK_EQ_INT(store_user_get(t, a, &u), ERR_OK);
    CHECK_EQ_INT(u.last_seen, 12345);
    CHECK_EQ_INT(u.next_device, 4);
    CHECK(strcmp(u.pwhash, "h1") == 0);
    CHECK_EQ_INT(store_user_by_name(t, "bob", &u), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_user_by_name(t, "robert", &u), ERR_OK);
    CHECK_EQ_INT(u.id, b);
    store_abort(t);
    done(s);
}

TEST(limits)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    char name[STORE_NAME_MAX + 2], hash[STORE_HASH_MAX + 2], cmid[STORE_CMID_MAX + 1];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';                /* STORE_NAME_MAX + 1 bytes */
    memset(hash, 'h', sizeof hash - 1);
    hash[sizeof hash - 1] = '\0';
    memset(cmid, 'c', sizeof cmid);
    uint64_t uid;
    CHECK_EQ_INT(store_user_create(t, name, "h", 1, &uid), ERR_TOO_LARGE);
    CHECK_EQ_INT(store_user_create(t, "ok", hash, 1, &uid), ERR_TOO_LARGE);
    CHECK_EQ_INT(store_user_create(t, "", "h", 1, &uid), ERR_INVALID);
    CHECK_EQ_INT(store_user_create(t, NULL, "h", 1, &uid), ERR_INVALID);
    store_user u;
    CHECK_EQ_INT(store_user_by_name(t, name, &u), ERR_TOO_LARGE);

    /* Exactly at the limits is fine. */
    name[STORE_NAME_MAX] = '\0';
    hash[STORE_HASH_MAX] = '\0';
    CHECK_EQ_INT(store_user_create(t, name, hash, 1, &uid), ERR_OK);
    CHECK_EQ_INT(store_user_by_name(t, name, &u), ERR_OK);
    CHECK_EQ_INT(strlen(u.name), STORE_NAME_MAX);
    CHECK_EQ_INT(strlen(u.pwhash), STORE_HASH_MAX);

    CHECK_EQ_INT(store_cmid_put(t, 1, 1, cmid, STORE_CMID_MAX + 1, 1), ERR_TOO_LARGE);
    CHECK_EQ_INT(store_cmid_put(t, 1, 1, cmid, 0, 1), ERR_INVALID);
    CHECK_EQ_INT(store_cmid_put(t, 1, 1, cmid, STORE_CMID_MAX, 9), ERR_OK);
    uint64_t seq = 0;
    CHECK_EQ_INT(store_cmid_get(t, 1, 1, cmid, STORE_CMID_MAX + 1, &seq), ERR_TOO_LARGE);
    CHECK_EQ_INT(store_cmid_get(t, 1, 1, cmid, STORE_CMID_MAX, &seq), ERR_OK);
    CHECK_EQ_INT(seq, 9);

    store_msg m = { .conv = 1, .seq = 1, .cmid = cmid, .cmid_len = STORE_CMID_MAX + 1,
                    .body = "{}", .body_len = 2 };
    CHECK_EQ_INT(store_msg_put(t, &m), ERR_TOO_LARGE);
    m.cmid_len = 0;
    m.seq = 0;
    CHECK_EQ_INT(store_msg_put(t, &m), ERR_INVALID);

    store_conv c = { .type = STORE_GROUP };
    memset(c.name, 'g', sizeof c.name);          /* no NUL within the limit */
    CHECK_EQ_INT(store_conv_create(t, &c), ERR_TOO_LARGE);
    CHECK_EQ_INT(store_commit(t), ERR_OK);       /* argument errors don't poison */
    done(s);
}

TEST(sessions)
{
    store *s = fresh();
    uint8_t h1[32], h2[32];
    memset(h1, 0xab, 32);
    memset(h2, 0xab, 32);
    h2[31] = 0xac;
    store_txn *t = wbegin(s);
    store_session in = { .uid = 42, .device = 3, .expires = -5 }, out;
    CHECK_EQ_INT(store_session_put(t, h1, &in), ERR_OK);
    CHECK_EQ_INT(store_session_get(t, h1, &out), ERR_OK);
    CHECK_EQ_INT(out.uid, 42);
    CHECK_EQ_INT(out.device, 3);
    CHECK_EQ_INT(out.expires, -5);
    CHECK_EQ_INT(store_session_get(t, h2, &out), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = wbegin(s);
    in.expires = 1700000000000LL;
    CHECK_EQ_INT(store_session_put(t, h1, &in), ERR_OK);
    CHECK_EQ_INT(store_session_del(t, h2), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_session_get(t, h1, &out), ERR_OK);
    CHECK_EQ_INT(out.expires, 1700000000000LL);
    store_abort(t);

    t = wbegin(s);
    CHECK_EQ_INT(store_session_del(t, h1), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_session_get(t, h1, &out), ERR_NOT_FOUND);
    store_abort(t);
    done(s);
}

/* ---- conversations and members ----------------------------------------- */

TEST(convs)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    store_conv c = { .type = STORE_GROUP, .last_ts = 10, .version = 3, .created = 10,
                     .nmembers = 99 };
    snprintf(c.name, sizeof c.name, "friends");
    CHECK_EQ_INT(store_conv_create(t, &c), ERR_OK);
    CHECK_EQ_INT(c.id, 1);
    CHECK_EQ_INT(c.nmembers, 0);
    store_conv d = { .type = STORE_DIRECT, .created = 11 };
    CHECK_EQ_INT(store_conv_create(t, &d), ERR_OK);
    CHECK_EQ_INT(d.id, 2);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = rbegin(s);
    store_conv g;
    CHECK_EQ_INT(store_conv_get(t, 1, &g), ERR_OK);
    CHECK_EQ_INT(g.id, 1);
    CHECK_EQ_INT(g.type, STORE_GROUP);
    CHECK(strcmp(g.name, "friends") == 0);
    CHECK_EQ_INT(g.last_seq, 0);
    CHECK_EQ_INT(g.last_ts, 10);
    CHECK_EQ_INT(g.version, 3);
    CHECK_EQ_INT(g.nmembers, 0);
    CHECK_EQ_INT(g.created, 10);
    CHECK_EQ_INT(store_conv_get(t, 2, &g), ERR_OK);
    CHECK_EQ_INT(g.type, STORE_DIRECT);
    CHECK_EQ_INT(g.name[0], '\0');
    CHECK_EQ_INT(store_conv_get(t, 3, &g), ERR_NOT_FOUND);
    store_abort(t);

    t = wbegin(s);
    CHECK_EQ_INT(store_conv_get(t, 1, &g), ERR_OK);
    g.last_seq = 17;
    g.last_ts = 99;
    g.version = 8;
    g.nmembers = 1000;                           /* ignored */
    snprintf(g.name, sizeof g.name, "a much longer group name than before");
    CHECK_EQ_INT(store_conv_put(t, &g), ERR_OK);
    store_conv missing = { .id = 50, .type = STORE_GROUP };
    CHECK_EQ_INT(store_conv_put(t, &missing), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_conv_get(t, 1, &g), ERR_OK);
    CHECK_EQ_INT(g.last_seq, 17);
    CHECK_EQ_INT(g.last_ts, 99);
    CHECK_EQ_INT(g.version, 8);
    CHECK_EQ_INT(g.nmembers, 0);
    CHECK(strcmp(g.name, "a much longer group name than before") == 0);
    store_abort(t);
    done(s);
}

TEST(directs)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    CHECK_EQ_INT(store_direct_put(t, 9, 3, 77), ERR_OK);
    CHECK_EQ_INT(store_direct_put(t, 3, 4, 78), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    uint64_t c = 0;
    CHECK_EQ_INT(store_direct_get(t, 3, 9, &c), ERR_OK);
    CHECK_EQ_INT(c, 77);
    CHECK_EQ_INT(store_direct_get(t, 9, 3, &c), ERR_OK);
    CHECK_EQ_INT(c, 77);
    CHECK_EQ_INT(store_direct_get(t, 4, 3, &c), ERR_OK);
    CHECK_EQ_INT(c, 78);
    CHECK_EQ_INT(store_direct_get(t, 9, 4, &c), ERR_NOT_FOUND);
    store_abort(t);
    done(s);
}

typedef struct collect { uint64_t ids[64]; int n; int stop_at; } collect;

static int collect_member(void *arg, const store_member *m)
{
    collect *c = arg;
    c->ids[c->n++] = m->uid;
    return c->stop_at && c->n == c->stop_at ? 42 : 0;
}

static int collect_conv(void *arg, uint64_t conv)
{
    collect *c = arg;
    c->ids[c->n++] = conv;
    return c->stop_at && c->n == c->stop_at ? 43 : 0;
}

static uint32_t nmembers(store_txn *t, uint64_t conv)
{
    store_conv c;
    return store_conv_get(t, conv, &c) ? 9999 : c.nmembers;
}

TEST(members)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t c1 = mkconv(t, STORE_GROUP, "one");
    uint64_t c2 = mkconv(t, STORE_GROUP, "two");
    store_member m = { .uid = 5, .role = STORE_ADMIN, .delivered = 1, .read = 1, .version = 2 };
    CHECK_EQ_INT(store_member_put(t, c1, &m), ERR_OK);
    CHECK_EQ_INT(nmembers(t, c1), 1);
    /* Rewriting an existing member does not count twice. */
    m.delivered = 10;
    m.read = 8;
    CHECK_EQ_INT(store_member_put(t, c1, &m), ERR_OK);
    CHECK_EQ_INT(nmembers(t, c1), 1);
    store_member b = { .uid = 6 };
    CHECK_EQ_INT(store_member_put(t, c1, &b), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c2, &m), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, 999, &m), ERR_NOT_FOUND);   /* no such conv */
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = rbegin(s);
    CHECK_EQ_INT(nmembers(t, c1), 2);
    CHECK_EQ_INT(nmembers(t, c2), 1);
    store_member g;
    CHECK_EQ_INT(store_member_get(t, c1, 5, &g), ERR_OK);
    CHECK_EQ_INT(g.uid, 5);
    CHECK_EQ_INT(g.role, STORE_ADMIN);
    CHECK_EQ_INT(g.delivered, 10);
    CHECK_EQ_INT(g.read, 8);
    CHECK_EQ_INT(g.version, 2);
    CHECK_EQ_INT(store_member_get(t, c2, 6, &g), ERR_NOT_FOUND);
    collect uc = {0};
    CHECK_EQ_INT(store_user_convs(t, 5, collect_conv, &uc), ERR_OK);
    CHECK_EQ_INT(uc.n, 2);
    CHECK_EQ_INT(uc.ids[0], c1);
    CHECK_EQ_INT(uc.ids[1], c2);
    store_abort(t);

    t = wbegin(s);
    CHECK_EQ_INT(store_member_del(t, c1, 5), ERR_OK);
    CHECK_EQ_INT(store_member_del(t, c1, 5), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_member_del(t, c2, 6), ERR_NOT_FOUND);
    CHECK_EQ_INT(nmembers(t, c1), 1);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_member_get(t, c1, 5, &g), ERR_NOT_FOUND);
    CHECK_EQ_INT(nmembers(t, c1), 1);
    CHECK_EQ_INT(nmembers(t, c2), 1);
    memset(&uc, 0, sizeof uc);
    CHECK_EQ_INT(store_user_convs(t, 5, collect_conv, &uc), ERR_OK);
    CHECK_EQ_INT(uc.n, 1);
    CHECK_EQ_INT(uc.ids[0], c2);
    store_abort(t);
    done(s);
}

/* The value stored under a 16-byte key (a, b) of database db, read raw:
 * its size into *len and first or last byte into *byte. */
static int raw_value(const char *dir, const char *db, uint64_t a, uint64_t b, size_t *len,
                     uint8_t *last)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t kb[16];
    for (int i = 0; i < 8; i++) {
        kb[i] = (uint8_t)(a >> (56 - 8 * i));
        kb[8 + i] = (uint8_t)(b >> (56 - 8 * i));
    }
    MDB_val k = { 16, kb }, v;
    int rc = mdb_env_create(&env);
    if (rc) return rc;
    mdb_env_set_maxdbs(env, 16);
    if ((rc = mdb_env_open(env, dir, MDB_RDONLY, 0600))) goto out;
    if ((rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) goto out;
    if (!(rc = mdb_dbi_open(txn, db, 0, &dbi)) && !(rc = mdb_get(txn, dbi, &k, &v))) {
        *len = v.mv_size;
        *last = v.mv_size ? ((uint8_t *)v.mv_data)[v.mv_size - 1] : 0;
    }
    mdb_txn_abort(txn);
out:
    mdb_env_close(env);
    return rc;
}

static uint32_t count(store_txn *t, uint64_t uid, bool invited, uint32_t cap)
{
    uint32_t n = 9999;
    CHECK_EQ_INT(store_user_convs_count(t, uid, invited, cap, &n), ERR_OK);
    return n;
}

/* Invitations: the member state and the counts kept in user_convs; joined
 * members are stored exactly as format 1 stored every member. */
TEST(invitations)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t c1 = mkconv(t, STORE_GROUP, "one");
    uint64_t c2 = mkconv(t, STORE_GROUP, "two");
    uint64_t c3 = mkconv(t, STORE_GROUP, "three");
    store_member joined = { .uid = 5, .version = 1 };
    store_member inv = { .uid = 5, .delivered = 3, .read = 2, .version = 1, .invited = true };
    CHECK_EQ_INT(store_member_put(t, c1, &joined), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c2, &inv), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c3, &inv), ERR_OK);
    CHECK_EQ_INT(count(t, 5, false, 100), 1);
    CHECK_EQ_INT(count(t, 5, true, 100), 2);
    CHECK_EQ_INT(count(t, 5, true, 1), 1);              /* stops at the cap */
    CHECK_EQ_INT(count(t, 6, true, 100), 0);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    /* Read raw with the store closed (one LMDB env per process at a time). */
    char dir[64];
    memcpy(dir, tmp_dir, sizeof dir);
    store_close(s);
    size_t len = 0;
    uint8_t last = 0;
    CHECK_EQ_INT(raw_value(dir, "members", c1, 5, &len, &last), 0);
    CHECK_EQ_INT(len, 26);                              /* format 1, unchanged */
    CHECK_EQ_INT(raw_value(dir, "user_convs", 5, c1, &len, &last), 0);
    CHECK_EQ_INT(len, 0);
    CHECK_EQ_INT(raw_value(dir, "members", c2, 5, &len, &last), 0);
    CHECK(len == 27 && last == 1);
    CHECK_EQ_INT(raw_value(dir, "user_convs", 5, c2, &len, &last), 0);
    CHECK(len == 1 && last == 1);

    CHECK_EQ_INT(store_open(&s, dir, MAP), ERR_OK);
    t = wbegin(s);
    store_member g;
    CHECK_EQ_INT(store_member_get(t, c1, 5, &g), ERR_OK);
    CHECK(!g.invited);
    CHECK_EQ_INT(store_member_get(t, c2, 5, &g), ERR_OK);
    CHECK(g.invited && g.delivered == 3 && g.read == 2);
    /* A cursor moved while invited stays invited (rewritten in place). */
    g.delivered = 4;
    CHECK_EQ_INT(store_member_put(t, c2, &g), ERR_OK);
    CHECK_EQ_INT(store_member_get(t, c2, 5, &g), ERR_OK);
    CHECK(g.invited && g.delivered == 4);
    CHECK_EQ_INT(count(t, 5, true, 100), 2);
    /* Accepted: counted as joined, the record back to the format-1 shape. */
    g.invited = false;
    g.read = 4;
    CHECK_EQ_INT(store_member_put(t, c2, &g), ERR_OK);
    CHECK_EQ_INT(count(t, 5, false, 100), 2);
    CHECK_EQ_INT(count(t, 5, true, 100), 1);
    CHECK_EQ_INT(nmembers(t, c2), 1);
    CHECK_EQ_INT(store_member_get(t, c2, 5, &g), ERR_OK);
    CHECK(!g.invited && g.delivered == 4 && g.read == 4);
    /* Leaving an invitation drops it from the count. */
    CHECK_EQ_INT(store_member_del(t, c3, 5), ERR_OK);
    CHECK_EQ_INT(count(t, 5, true, 100), 0);
    collect uc = {0};
    CHECK_EQ_INT(store_user_convs(t, 5, collect_conv, &uc), ERR_OK);
    CHECK(uc.n == 2 && uc.ids[0] == c1 && uc.ids[1] == c2);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    store_close(s);
    CHECK_EQ_INT(raw_value(dir, "members", c2, 5, &len, &last), 0);
    CHECK_EQ_INT(len, 26);
    CHECK_EQ_INT(raw_value(dir, "user_convs", 5, c2, &len, &last), 0);
    CHECK_EQ_INT(len, 0);
    tmp_rm();
}

TEST(iteration_order_and_stop)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t c[4];
    for (int i = 0; i < 4; i++) c[i] = mkconv(t, STORE_GROUP, "g");
    /* Members of c[1] inserted out of order, with neighbours in c[0], c[2]. */
    const uint64_t uids[] = { 300, 5, (uint64_t)1 << 40, 1, 256, 255 };
    for (size_t i = 0; i < sizeof uids / sizeof uids[0]; i++) {
        store_member m = { .uid = uids[i] };
        CHECK_EQ_INT(store_member_put(t, c[1], &m), ERR_OK);
    }
    store_member n = { .uid = 2 };
    CHECK_EQ_INT(store_member_put(t, c[0], &n), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c[2], &n), ERR_OK);
    /* user 5 in c[3], c[1], c[2]; user 4 and 6 (neighbours) in c[0]. */
    store_member u5 = { .uid = 5 }, u4 = { .uid = 4 }, u6 = { .uid = 6 };
    CHECK_EQ_INT(store_member_put(t, c[3], &u5), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c[2], &u5), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c[0], &u4), ERR_OK);
    CHECK_EQ_INT(store_member_put(t, c[0], &u6), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = rbegin(s);
    collect got = {0};
    CHECK_EQ_INT(store_members(t, c[1], collect_member, &got), ERR_OK);
    CHECK_EQ_INT(got.n, 6);
    const uint64_t want[] = { 1, 5, 255, 256, 300, (uint64_t)1 << 40 };
    for (int i = 0; i < 6 && i < got.n; i++) CHECK_EQ_INT(got.ids[i], want[i]);
    memset(&got, 0, sizeof got);
    got.stop_at = 3;
    CHECK_EQ_INT(store_members(t, c[1], collect_member, &got), 42);
    CHECK_EQ_INT(got.n, 3);
    memset(&got, 0, sizeof got);
    CHECK_EQ_INT(store_members(t, 77, collect_member, &got), ERR_OK);   /* none */
    CHECK_EQ_INT(got.n, 0);

    memset(&got, 0, sizeof got);
    CHECK_EQ_INT(store_user_convs(t, 5, collect_conv, &got), ERR_OK);
    CHECK_EQ_INT(got.n, 3);
    CHECK_EQ_INT(got.ids[0], c[1]);
    CHECK_EQ_INT(got.ids[1], c[2]);
    CHECK_EQ_INT(got.ids[2], c[3]);
    memset(&got, 0, sizeof got);
    got.stop_at = 1;
    CHECK_EQ_INT(store_user_convs(t, 5, collect_conv, &got), 43);
    CHECK_EQ_INT(got.n, 1);
    store_abort(t);
    done(s);
}

/* ---- messages ------------------------------------------------------------ */

typedef struct seqs { uint64_t seq[64]; int n; int stop_at; uint64_t conv; bool bad; } seqs;

static int collect_msg(void *arg, const store_msg *m)
{
    seqs *q = arg;
    char body[32];
    snprintf(body, sizeof body, "{\"n\":%llu}", (unsigned long long)m->seq);
    if (m->conv != q->conv || m->body_len != strlen(body) ||
        memcmp(m->body, body, m->body_len) != 0)
        q->bad = true;
    q->seq[q->n++] = m->seq;
    return q->stop_at && q->n == q->stop_at ? 44 : 0;
}

static int collect_msg_any(void *arg, const store_msg *m)
{
    seqs *q = arg;
    q->seq[q->n++] = m->seq;
    return 0;
}

/* Runs store_msgs and compares the visited seqs with want[0..nwant). */
static void page(store_txn *t, uint64_t conv, uint64_t from, bool fwd, size_t limit,
                 const uint64_t *want, int nwant, bool want_more, int line)
{
    seqs q = { .conv = conv };
    bool more = !want_more;
    int rc = store_msgs(t, conv, from, fwd, limit, collect_msg, &q, &more);
    bool ok = rc == ERR_OK && q.n == nwant && more == want_more && !q.bad;
    for (int i = 0; ok && i < nwant; i++) ok = q.seq[i] == want[i];
    if (!ok) {
        fprintf(stderr, "  page(line %d, conv %llu, from %llu, %s, limit %zu): rc %d, "
                "n %d, more %d, bad %d:", line, (unsigned long long)conv,
                (unsigned long long)from, fwd ? "fwd" : "back", limit, rc, q.n, more, q.bad);
        for (int i = 0; i < q.n; i++) fprintf(stderr, " %llu", (unsigned long long)q.seq[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ok);
}

#define PAGE(conv, from, fwd, limit, more, ...) do { \
    const uint64_t w_[] = { 0, __VA_ARGS__ }; \
    page(t, conv, from, fwd, limit, w_ + 1, (int)(sizeof w_ / sizeof w_[0]) - 1, more, \
         __LINE__); } while (0)

TEST(messages)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    /* conv 1, 2, 3 with seq 1..10 each (written interleaved), conv 4 empty. */
    for (uint64_t seq = 1; seq <= 10; seq++)
        for (uint64_t conv = 1; conv <= 3; conv++) {
            char body[32];
            snprintf(body, sizeof body, "{\"n\":%llu}", (unsigned long long)seq);
            CHECK_EQ_INT(put_msg(t, conv, seq, body), ERR_OK);
        }
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = rbegin(s);
    store_msg m;
    CHECK_EQ_INT(store_msg_get(t, 2, 7, &m), ERR_OK);
    CHECK_EQ_INT(m.conv, 2);
    CHECK_EQ_INT(m.seq, 7);
    CHECK_EQ_INT(m.from, 7);
    CHECK_EQ_INT(m.ts, 1007);
    CHECK(m.cmid_len == 4 && memcmp(m.cmid, "c2-7", 4) == 0);
    CHECK(m.body_len == 7 && memcmp(m.body, "{\"n\":7}", 7) == 0);
    CHECK_EQ_INT(store_msg_get(t, 2, 11, &m), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_msg_get(t, 4, 1, &m), ERR_NOT_FOUND);

    /* Forward. */
    PAGE(2, 1, true, 4, true, 1, 2, 3, 4);
    PAGE(2, 0, true, 2, true, 1, 2);
    PAGE(2, 7, true, 10, false, 7, 8, 9, 10);
    PAGE(2, 8, true, 3, false, 8, 9, 10);        /* exactly to the end */
    PAGE(2, 8, true, 2, true, 8, 9);
    PAGE(2, 10, true, 1, false, 10);
    PAGE(2, 1, true, 10, false, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    PAGE(3, 9, true, 5, false, 9, 10);           /* the last conversation */
    {   /* past the end: nothing */
        seqs q = { .conv = 2 };
        bool more = true;
        CHECK_EQ_INT(store_msgs(t, 2, 11, true, 5, collect_msg, &q, &more), ERR_OK);
        CHECK_EQ_INT(q.n, 0);
        CHECK(!more);
    }
    /* Backward. */
    PAGE(2, UINT64_MAX, false, 3, true, 10, 9, 8);
    PAGE(2, 3, false, 5, false, 3, 2, 1);
    PAGE(2, 3, false, 3, false, 3, 2, 1);        /* exactly to the start */
    PAGE(2, 4, false, 3, true, 4, 3, 2);
    PAGE(2, 50, false, 2, true, 10, 9);          /* from beyond the newest */
    PAGE(2, 1, false, 9, false, 1);
    PAGE(3, UINT64_MAX, false, 2, true, 10, 9);  /* no key after conv 3 */
    PAGE(1, UINT64_MAX, false, 1, true, 10);
    PAGE(1, 2, false, 10, false, 2, 1);          /* conv 0 does not exist */
    {
        seqs q = { .conv = 2 };
        bool more = true;
        CHECK_EQ_INT(store_msgs(t, 2, 0, false, 5, collect_msg, &q, &more), ERR_OK);
        CHECK_EQ_INT(q.n, 0);
        CHECK(!more);
        CHECK_EQ_INT(store_msgs(t, 4, UINT64_MAX, false, 5, collect_msg, &q, &more), ERR_OK);
        CHECK_EQ_INT(q.n, 0);
        CHECK(!more);
        CHECK_EQ_INT(store_msgs(t, 4, 1, true, 5, collect_msg, &q, &more), ERR_OK);
        CHECK_EQ_INT(q.n, 0);
        CHECK(!more);
        /* limit 0: visits nothing; more says whether there is one at from. */
        CHECK_EQ_INT(store_msgs(t, 2, 5, true, 0, collect_msg, &q, &more), ERR_OK);
        CHECK_EQ_INT(q.n, 0);
        CHECK(more);
        /* NULL more is allowed. */
        CHECK_EQ_INT(store_msgs(t, 2, 5, true, 2, collect_msg, &q, NULL), ERR_OK);
        CHECK_EQ_INT(q.n, 2);
    }
    /* Early stop: fn's value is returned, more is about the last visited. */
    {
        seqs q = { .conv = 2, .stop_at = 2 };
        bool more = false;
        CHECK_EQ_INT(store_msgs(t, 2, 9, true, 5, collect_msg, &q, &more), 44);
        CHECK_EQ_INT(q.n, 2);
        CHECK(!more);
        memset(&q, 0, sizeof q);
        q.conv = 2;
        q.stop_at = 2;
        CHECK_EQ_INT(store_msgs(t, 2, UINT64_MAX, false, 5, collect_msg, &q, &more), 44);
        CHECK_EQ_INT(q.n, 2);
        CHECK_EQ_INT(q.seq[1], 9);
        CHECK(more);
    }
    store_abort(t);

    /* Overwrite, empty body, no cmid, large body (overflow pages). */
    t = wbegin(s);
    store_msg e = { .conv = 5, .seq = 1, .from = 1 };
    CHECK_EQ_INT(store_msg_put(t, &e), ERR_OK);
    size_t big = 100000;
    char *body = malloc(big);
    for (size_t i = 0; i < big; i++) body[i] = (char)('a' + i % 26);
    store_msg l = { .conv = 5, .seq = 2, .from = 1, .body = body, .body_len = big,
                    .cmid = "x", .cmid_len = 1 };
    CHECK_EQ_INT(store_msg_put(t, &l), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_msg_get(t, 5, 1, &m), ERR_OK);
    CHECK_EQ_INT(m.body_len, 0);
    CHECK_EQ_INT(m.cmid_len, 0);
    CHECK_EQ_INT(store_msg_get(t, 5, 2, &m), ERR_OK);
    CHECK(m.body_len == big && memcmp(m.body, body, big) == 0);
    store_abort(t);
    free(body);
    done(s);
}

TEST(cmids)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    CHECK_EQ_INT(store_cmid_put(t, 1, 2, "abc", 3, 10), ERR_OK);
    CHECK_EQ_INT(store_cmid_put(t, 1, 2, "ab", 2, 11), ERR_OK);
    CHECK_EQ_INT(store_cmid_put(t, 1, 3, "abc", 3, 12), ERR_OK);
    CHECK_EQ_INT(store_cmid_put(t, 2, 2, "abc", 3, 13), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    uint64_t seq = 0;
    CHECK_EQ_INT(store_cmid_get(t, 1, 2, "abc", 3, &seq), ERR_OK);
    CHECK_EQ_INT(seq, 10);
    CHECK_EQ_INT(store_cmid_get(t, 1, 2, "ab", 2, &seq), ERR_OK);
    CHECK_EQ_INT(seq, 11);
    CHECK_EQ_INT(store_cmid_get(t, 1, 3, "abc", 3, &seq), ERR_OK);
    CHECK_EQ_INT(seq, 12);
    CHECK_EQ_INT(store_cmid_get(t, 2, 2, "abc", 3, &seq), ERR_OK);
    CHECK_EQ_INT(seq, 13);
    CHECK_EQ_INT(store_cmid_get(t, 1, 2, "a", 1, &seq), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_cmid_get(t, 3, 2, "abc", 3, &seq), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_cmid_get(t, 1, 2, "abc", 0, &seq), ERR_INVALID);
    CHECK_EQ_INT(store_cmid_put(t, 1, 2, "zz", 2, 1), ERR_INVALID);   /* read txn */
    store_abort(t);
    done(s);
}

/* ---- transactions ------------------------------------------------------- */

TEST(clock_tick_persist)
{
    store *s = fresh();
    store_txn *t = rbegin(s);
    CHECK_EQ_INT(store_clock(t), 0);
    CHECK_EQ_INT(store_tick(t), 0);              /* read txn: fails */
    store_abort(t);

    t = wbegin(s);
    CHECK_EQ_INT(store_clock(t), 0);
    CHECK_EQ_INT(store_tick(t), 1);
    CHECK_EQ_INT(store_tick(t), 2);
    CHECK_EQ_INT(store_tick(t), 3);
    CHECK_EQ_INT(store_clock(t), 3);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = wbegin(s);                               /* aborted ticks are lost */
    CHECK_EQ_INT(store_tick(t), 4);
    store_abort(t);

    char dir[64];
    snprintf(dir, sizeof dir, "%s", tmp_dir);
    store_close(s);
    CHECK_EQ_INT(store_open(&s, dir, MAP), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_clock(t), 3);
    store_abort(t);
    t = wbegin(s);
    CHECK_EQ_INT(store_tick(t), 4);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    t = rbegin(s);
    CHECK_EQ_INT(store_clock(t), 4);
    store_abort(t);
    done(s);
}

TEST(counts_kept_at_commit)
{
    store *s = fresh();
    uint64_t users = 9, convs = 9;
    store_counts(s, &users, &convs);
    CHECK(users == 0 && convs == 0);
    store_txn *t = wbegin(s);
    mkuser(t, "cnt_a");
    mkuser(t, "cnt_b");
    mkconv(t, STORE_GROUP, "g");
    store_counts(s, &users, &convs);
    CHECK(users == 0 && convs == 0);      /* not before the commit */
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    store_counts(s, &users, &convs);
    CHECK(users == 2 && convs == 1);
    t = wbegin(s);
    mkuser(t, "cnt_c");
    store_abort(t);                       /* an aborted write counts nothing */
    store_counts(s, &users, &convs);
    CHECK(users == 2 && convs == 1);
    char dir[64];
    snprintf(dir, sizeof dir, "%s", tmp_dir);
    store_close(s);
    CHECK_EQ_INT(store_open(&s, dir, MAP), ERR_OK); /* counted again at open */
    store_counts(s, &users, &convs);
    CHECK(users == 2 && convs == 1);
    done(s);
}

TEST(abort_leaves_nothing)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t conv = mkconv(t, STORE_GROUP, "g");
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    t = wbegin(s);
    mkuser(t, "alice");
    CHECK_EQ_INT(put_msg(t, conv, 1, "{}"), ERR_OK);
    store_member m = { .uid = 1 };
    CHECK_EQ_INT(store_member_put(t, conv, &m), ERR_OK);
    CHECK_EQ_INT(store_cmid_put(t, conv, 1, "k", 1, 1), ERR_OK);
    store_tick(t);
    store_abort(t);

    t = rbegin(s);
    store_user u;
    store_msg msg;
    store_member g;
    uint64_t seq;
    CHECK_EQ_INT(store_user_by_name(t, "alice", &u), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_user_get(t, 1, &u), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_msg_get(t, conv, 1, &msg), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_member_get(t, conv, 1, &g), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_cmid_get(t, conv, 1, "k", 1, &seq), ERR_NOT_FOUND);
    CHECK_EQ_INT(nmembers(t, conv), 0);
    CHECK_EQ_INT(store_clock(t), 0);
    store_abort(t);
    /* The aborted uid is handed out again. */
    t = wbegin(s);
    CHECK_EQ_INT(mkuser(t, "bob"), 1);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    done(s);
}

TEST(map_full)
{
    store *s = NULL;
    CHECK_EQ_INT(store_open(&s, tmp_new(), 1u << 20), ERR_OK);
    store_txn *t = wbegin(s);
    uint64_t conv = mkconv(t, STORE_GROUP, "g");
    CHECK_EQ_INT(put_msg(t, conv, 1, "{\"n\":1}"), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    char body[4000];
    memset(body, 'x', sizeof body);
    t = wbegin(s);
    int rc = ERR_OK;
    uint64_t seq;
    for (seq = 2; seq < 10000 && rc == ERR_OK; seq++) {
        store_msg m = { .conv = conv, .seq = seq, .body = body, .body_len = sizeof body };
        rc = store_msg_put(t, &m);
    }
    CHECK_EQ_INT(rc, ERR_FULL);
    CHECK_EQ_INT(store_commit(t), ERR_FULL);     /* all of it discarded */

    t = rbegin(s);
    store_msg m;
    CHECK_EQ_INT(store_msg_get(t, conv, 1, &m), ERR_OK);
    CHECK_EQ_INT(store_msg_get(t, conv, 2, &m), ERR_NOT_FOUND);
    store_abort(t);
    /* Still writable within the map. */
    t = wbegin(s);
    CHECK_EQ_INT(put_msg(t, conv, 2, "{\"n\":2}"), ERR_OK);
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    done(s);
}

TEST(read_snapshot_and_reuse)
{
    store *s = fresh();
    store_txn *old = rbegin(s);
    store_user u;
    CHECK_EQ_INT(store_user_by_name(old, "alice", &u), ERR_NOT_FOUND);

    store_txn *t = wbegin(s);
    uint64_t conv = mkconv(t, STORE_GROUP, "g");
    mkuser(t, "alice");
    CHECK_EQ_INT(put_msg(t, conv, 1, "{\"n\":1}"), ERR_OK);
    store_tick(t);
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    /* The old read txn still sees its snapshot. */
    CHECK_EQ_INT(store_user_by_name(old, "alice", &u), ERR_NOT_FOUND);
    store_conv c;
    CHECK_EQ_INT(store_conv_get(old, conv, &c), ERR_NOT_FOUND);
    CHECK_EQ_INT(store_clock(old), 0);
    seqs q = { .conv = conv };
    CHECK_EQ_INT(store_msgs(old, conv, 1, true, 10, collect_msg, &q, NULL), ERR_OK);
    CHECK_EQ_INT(q.n, 0);
    CHECK_EQ_INT(store_commit(old), ERR_OK);     /* commit of a read txn: ok */

    /* A reused (renewed) handle and its cursors see the new state; so does
     * each later reuse. */
    for (uint64_t seq = 2; seq <= 5; seq++) {
        store_txn *r = rbegin(s);
        CHECK_EQ_INT(store_user_by_name(r, "alice", &u), ERR_OK);
        memset(&q, 0, sizeof q);
        q.conv = conv;
        CHECK_EQ_INT(store_msgs(r, conv, 1, true, 10, collect_msg, &q, NULL), ERR_OK);
        CHECK_EQ_INT(q.n, (int)seq - 1);
        store_abort(r);
        t = wbegin(s);
        char body[32];
        snprintf(body, sizeof body, "{\"n\":%llu}", (unsigned long long)seq);
        CHECK_EQ_INT(put_msg(t, conv, seq, body), ERR_OK);
        CHECK_EQ_INT(store_commit(t), ERR_OK);
    }
    /* Several read txns at once. */
    store_txn *r[8];
    for (int i = 0; i < 8; i++) r[i] = rbegin(s);
    for (int i = 0; i < 8; i++) {
        store_msg m;
        CHECK_EQ_INT(store_msg_get(r[i], conv, 5, &m), ERR_OK);
    }
    for (int i = 0; i < 8; i++) store_abort(r[i]);
    done(s);
}

/* Readers on several threads while a writer commits: each reader checks that
 * its snapshot is consistent (last_seq of the conversation == the newest
 * message), exercising the shared pool of read transactions. */
typedef struct race { store *s; uint64_t conv; atomic_int stop; int bad; atomic_long reads; } race;

static int newest(void *arg, const store_msg *m)
{
    *(uint64_t *)arg = m->seq;
    return 0;
}

static void *reader(void *arg)
{
    race *r = arg;
    while (!atomic_load(&r->stop)) {
        store_txn *t;
        if (store_begin(r->s, false, &t)) { r->bad++; break; }
        store_conv c;
        uint64_t top = 0;
        if (store_conv_get(t, r->conv, &c) ||
            store_msgs(t, r->conv, UINT64_MAX, false, 1, newest, &top, NULL) ||
            top != c.last_seq)
            r->bad++;
        store_abort(t);
        atomic_fetch_add(&r->reads, 1);
    }
    return NULL;
}

TEST(threads)
{
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t conv = mkconv(t, STORE_GROUP, "g");
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    race rs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        rs[i] = (race){ .s = s, .conv = conv };
        atomic_init(&rs[i].stop, 0);
        atomic_init(&rs[i].reads, 0);
        pthread_create(&th[i], NULL, reader, &rs[i]);
    }
    for (uint64_t seq = 1; seq <= 40; seq++) {
        t = wbegin(s);
        store_conv c;
        CHECK_EQ_INT(store_conv_get(t, conv, &c), ERR_OK);
        CHECK_EQ_INT(put_msg(t, conv, seq, "{}"), ERR_OK);
        c.last_seq = seq;
        CHECK_EQ_INT(store_conv_put(t, &c), ERR_OK);
        CHECK_EQ_INT(store_commit(t), ERR_OK);
    }
    /* Let every reader finish at least one read (scheduling decides when),
     * bounded at 30 s, before stopping them. */
    for (int i = 0; i < 4; i++)
        for (int w = 0; w < 30000 && atomic_load(&rs[i].reads) == 0; w++) usleep(1000);
    for (int i = 0; i < 4; i++) atomic_store(&rs[i].stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(rs[i].bad, 0);
        CHECK(atomic_load(&rs[i].reads) > 0);
    }
    done(s);
}

/* kill -9 of a writer in the middle of its work: every acknowledged
 * (committed) transaction is there, and no transaction is there in part.
 * Transaction k stores messages 10k-9 .. 10k and sets last_seq = 10k. */
TEST(crash_atomicity)
{
    tmp_new();
    int fds[2];
    CHECK_EQ_INT(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        store *s;
        if (store_open(&s, tmp_dir, MAP)) _exit(2);
        store_txn *t;
        if (store_begin(s, true, &t)) _exit(2);
        uint64_t conv = mkconv(t, STORE_GROUP, "g");
        if (store_commit(t)) _exit(2);
        for (uint64_t k = 1;; k++) {
            if (store_begin(s, true, &t)) _exit(2);
            store_conv c;
            if (store_conv_get(t, conv, &c)) _exit(2);
            for (uint64_t seq = 10 * k - 9; seq <= 10 * k; seq++)
                if (put_msg(t, conv, seq, "{\"n\":0}")) _exit(2);
            c.last_seq = 10 * k;
            if (store_conv_put(t, &c) || store_commit(t)) _exit(2);
            char ack = 'a';
            if (write(fds[1], &ack, 1) != 1) _exit(2);     /* acknowledged */
        }
    }
    close(fds[1]);
    /* Kill after a pseudo-random number of acknowledgements. */
    long want = 20 + (long)(test_rand() % 200), acked = 0;
    char buf[64];
    while (acked < want) {
        ssize_t n = read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        acked += n;
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    close(fds[0]);
    CHECK(acked >= want);

    store *s = NULL;
    CHECK_EQ_INT(store_open(&s, tmp_dir, MAP), ERR_OK);
    if (!s) { tmp_rm(); return; }
    store_txn *t = rbegin(s);
    store_conv c;
    CHECK_EQ_INT(store_conv_get(t, 1, &c), ERR_OK);
    CHECK(c.last_seq >= (uint64_t)acked * 10);
    CHECK_EQ_INT(c.last_seq % 10, 0);
    seqs q = { .conv = 1 };
    uint64_t count = 0, expect = 1;
    bool more = true, gap = false;
    for (uint64_t from = 1; more; from += 64) {
        q.n = 0;
        int rc = store_msgs(t, 1, from, true, 64, collect_msg_any, &q, &more);
        if (rc) { CHECK_EQ_INT(rc, ERR_OK); break; }
        for (int i = 0; i < q.n; i++) if (q.seq[i] != expect++) gap = true;
        count += (uint64_t)q.n;
    }
    CHECK(!gap);
    CHECK_EQ_INT(count, c.last_seq);               /* nothing beyond it */
    store_abort(t);
    done(s);
}

/* ---- throughput smoke (prints, asserts nothing) -------------------------- */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(throughput_smoke)
{
    enum { CONVS = 100, SENDS = 10000 };
    store *s = fresh();
    store_txn *t = wbegin(s);
    uint64_t convs[CONVS], users[2];
    users[0] = mkuser(t, "u0");
    users[1] = mkuser(t, "u1");
    for (int i = 0; i < CONVS; i++) {
        convs[i] = mkconv(t, STORE_GROUP, "g");
        for (int j = 0; j < 2; j++) {
            store_member m = { .uid = users[j] };
            CHECK_EQ_INT(store_member_put(t, convs[i], &m), ERR_OK);
        }
    }
    CHECK_EQ_INT(store_commit(t), ERR_OK);

    const char body[] = "{\"type\":\"text\",\"text\":\"hello there, this is a typical "
                        "short chat message of about a hundred bytes\"}";
    double t0 = now_s();
    t = wbegin(s);
    int fails = 0;
    for (int i = 0; i < SENDS; i++) {
        uint64_t conv = convs[i % CONVS], uid = users[i & 1], seq;
        char cmid[32];
        int clen = snprintf(cmid, sizeof cmid, "cm-%08d-abcdef", i);
        store_member m;
        store_conv c;
        if (store_member_get(t, conv, uid, &m)) fails++;
        if (store_cmid_get(t, conv, uid, cmid, (size_t)clen, &seq) != ERR_NOT_FOUND) fails++;
        if (store_conv_get(t, conv, &c)) fails++;
        uint64_t v = store_tick(t);
        store_msg msg = { .conv = conv, .seq = c.last_seq + 1, .from = uid, .ts = i,
                          .cmid = cmid, .cmid_len = (size_t)clen,
                          .body = body, .body_len = sizeof body - 1 };
        if (store_msg_put(t, &msg)) fails++;
        if (store_cmid_put(t, conv, uid, cmid, (size_t)clen, msg.seq)) fails++;
        c.last_seq = msg.seq;
        c.last_ts = i;
        c.version = v;
        if (store_conv_put(t, &c)) fails++;
        m.delivered = m.read = msg.seq;
        m.version = v;
        if (store_member_put(t, conv, &m)) fails++;
    }
    double t1 = now_s();
    CHECK_EQ_INT(store_commit(t), ERR_OK);
    double t2 = now_s();
    CHECK_EQ_INT(fails, 0);

    /* Short read transactions, as I/O threads do. */
    enum { READS = 200000 };
    double r0 = now_s();
    for (int i = 0; i < READS; i++) {
        store_txn *r;
        store_member m;
        if (store_begin(s, false, &r)) { fails++; break; }
        if (store_member_get(r, convs[i % CONVS], users[i & 1], &m)) fails++;
        store_abort(r);
    }
    double r1 = now_s();
    CHECK_EQ_INT(fails, 0);
    printf("store throughput: %d sends in one write txn: %.0f sends/s "
           "(apply %.1f ms + commit %.1f ms); short read txn + get: %.0f /s\n",
           SENDS, SENDS / (t2 - t0), (t1 - t0) * 1e3, (t2 - t1) * 1e3,
           READS / (r1 - r0));
    done(s);
}

int main(void)
{
    test_seed();
    RUN(open_create_reopen);
    RUN(version_mismatch);
    RUN(foreign_and_corrupt_env);
    RUN(one_store_per_directory);
    RUN(users);
    RUN(limits);
    RUN(sessions);
    RUN(convs);
    RUN(directs);
    RUN(members);
    RUN(invitations);
    RUN(iteration_order_and_stop);
    RUN(messages);
    RUN(cmids);
    RUN(clock_tick_persist);
    RUN(counts_kept_at_commit);
    RUN(abort_leaves_nothing);
    RUN(map_full);
    RUN(read_snapshot_and_reuse);
    RUN(threads);
    RUN(crash_atomicity);
    RUN(throughput_smoke);
    return test_summary("store");
}
