/* store: the embedded LMDB backend of store.h.
 *
 * One MDB_env in the data directory, opened with MDB_NOTLS (read
 * transactions are not tied to a thread's TLS reader slot, so libuv threads
 * may share them) and full durability (no MDB_NOSYNC / MDB_NOMETASYNC):
 * mdb_txn_commit() returns after the data pages and then the meta page are
 * on disk, so a crash leaves either the whole transaction or none of it.
 * Every named database is opened once, in store_open(); its MDB_dbi is
 * valid for the life of the environment.
 *
 * Encoding. Keys are big-endian integers (so LMDB's memcmp order is numeric
 * order and a conversation's messages are one contiguous range). Values
 * with several fields are records: byte 0 is the record format (currently
 * REC_V1), then fixed-width big-endian fields, then length-prefixed strings
 * (u8 length, the limits are <= 255), and for messages the body as the rest
 * of the value. A decoder rejects an unknown format (ERR_VERSION) and a
 * record too short for its format (ERR_IO, corruption). Values that are a
 * single id (names, directs, cmids, meta counters) are a bare 8-byte
 * big-endian integer; "version" in meta is a 4-byte big-endian integer.
 *
 *   users     [fmt][created i64][last_seen i64][next_device u32]
 *             [name_len u8][name][hash_len u8][hash]
 *   sessions  [fmt][uid u64][device u32][expires i64]
 *   convs     [fmt][type u8][last_seq u64][last_ts i64][version u64]
 *             [nmembers u32][created i64][name_len u8][name]
 *   members   [fmt][role u8][delivered u64][read u64][version u64]
 *             [state u8: 1 invited], the state only for an invitation
 *   msgs      [fmt][from u64][ts i64][cmid_len u8][cmid][body ...]
 *   user_convs  empty value, or [1] for an invitation
 *
 * The invited state came after format 1 without changing it, compatibly
 * both ways: a record or user_convs value without it (every one written
 * before) is a joined membership, and an older build reading a newer store
 * ignores the trailing byte (it counts invitations as joined).
 *
 * Read transactions are cheap: a finished read transaction is not freed but
 * reset (mdb_txn_reset) and kept, with its cursors, in a small pool owned by
 * the store; store_begin(read) pops one and renews it (mdb_txn_renew,
 * mdb_cursor_renew), which with MDB_NOTLS keeps the reader slot and needs
 * no malloc and no reader-table lock. The pool is a mutex-protected list
 * rather than thread-local storage because a thread-local cache could not
 * be emptied by store_close() nor when a libuv thread exits (leaked reader
 * slots pin old pages forever); the critical section is a few instructions.
 *
 * Write transactions: one at a time (LMDB's writer lock). The store clock
 * is cached in the transaction and written to meta once, just before
 * commit, so a batch of store_tick() calls costs no B-tree operations.
 * The first LMDB error that poisons a write transaction (map full, I/O) is
 * kept and returned by store_commit(), which then discards everything.
 */
#include "store/store.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#include "base/log.h"

enum {
    DB_META, DB_USERS, DB_NAMES, DB_SESSIONS, DB_CONVS, DB_DIRECTS,
    DB_MEMBERS, DB_USER_CONVS, DB_MSGS, DB_CMIDS, DB_COUNT
};

static const char *const db_names[DB_COUNT] = {
    "meta", "users", "names", "sessions", "convs", "directs",
    "members", "user_convs", "msgs", "cmids",
};

#define REC_V1 1
#define MAXDBS 16               /* room for databases added later */
#define MAXREADERS 512
#define POOL_MAX 128            /* reset read transactions kept for reuse */
#define DEFAULT_MAP_SIZE ((size_t)1 << 30)

/* Record sizes (format 1). */
#define USER_FIXED (1 + 8 + 8 + 4)
#define SESSION_LEN (1 + 8 + 4 + 8)
#define CONV_FIXED (1 + 1 + 8 + 8 + 8 + 4 + 8)
#define MEMBER_LEN (1 + 1 + 8 + 8 + 8)  /* + 1 state byte for an invitation */
#define MSG_FIXED (1 + 8 + 8 + 1)

struct store {
    MDB_env *env;                   /* owned */
    int lock_fd;                    /* DIR/LOCK, flock'd while open; owned */
    MDB_dbi dbi[DB_COUNT];
    pthread_mutex_t pool_mu;        /* guards pool, npool */
    store_txn *pool;                /* reset read transactions, owned */
    unsigned npool;
    uint64_t nusers, nconvs;        /* as of the last commit (atomic: read by any thread) */
};

struct store_txn {
    store *s;                       /* borrowed */
    MDB_txn *txn;                   /* owned (reset, not freed, while pooled) */
    bool write;
    int err;                        /* write: first error that poisoned txn */
    bool clock_loaded, clock_dirty; /* write: clock cache state */
    uint64_t clock;
    uint64_t *touched;              /* write: conversations changed (owned) */
    size_t ntouched, touched_cap;
    unsigned cur_live;              /* bit i: cur[i] is bound to txn */
    /* Cursors opened on demand. Read: owned, renewed on reuse, closed when
     * the handle is discarded. Write: LMDB frees them at commit/abort. */
    MDB_cursor *cur[DB_COUNT];
    store_txn *next;                /* pool link */
};

/* ---- helpers ------------------------------------------------------------ */

static int map_err(int rc)
{
    switch (rc) {
    case MDB_SUCCESS:          return ERR_OK;
    case MDB_NOTFOUND:         return ERR_NOT_FOUND;
    case MDB_KEYEXIST:         return ERR_CONFLICT;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:         return ERR_FULL;
    case MDB_READERS_FULL:     return ERR_BUSY;
    case MDB_VERSION_MISMATCH: return ERR_VERSION;
    case MDB_BAD_VALSIZE:
    case EINVAL:               return ERR_INVALID;
    case ENOMEM:               return ERR_NOMEM;
    case ENOSPC:
    case EDQUOT:               return ERR_DISK_FULL;
    default:                   return ERR_IO;
    }
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);  p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Two big-endian u64s: the key of msgs, members, user_convs, directs. */
static MDB_val key2(uint8_t buf[16], uint64_t a, uint64_t b)
{
    put64(buf, a);
    put64(buf + 8, b);
    return (MDB_val){ .mv_size = 16, .mv_data = buf };
}

static MDB_val key1(uint8_t buf[8], uint64_t a)
{
    put64(buf, a);
    return (MDB_val){ .mv_size = 8, .mv_data = buf };
}

/* A mutation failed: remember errors that leave the LMDB write transaction
 * unusable, so store_commit() reports them. */
static int wfail(store_txn *t, int rc)
{
    int e = map_err(rc);
    if (rc != MDB_NOTFOUND && rc != MDB_KEYEXIST && t->err == ERR_OK) t->err = e;
    return e;
}

static int wput(store_txn *t, int db, MDB_val *k, MDB_val *v, unsigned flags)
{
    int rc = mdb_put(t->txn, t->s->dbi[db], k, v, flags);
    return rc ? wfail(t, rc) : ERR_OK;
}

static int wdel(store_txn *t, int db, MDB_val *k)
{
    int rc = mdb_del(t->txn, t->s->dbi[db], k, NULL);
    return rc ? wfail(t, rc) : ERR_OK;
}

static int get(store_txn *t, int db, MDB_val *k, MDB_val *v)
{
    int rc = mdb_get(t->txn, t->s->dbi[db], k, v);
    return rc ? map_err(rc) : ERR_OK;
}

/* A cursor on db bound to t's transaction (owned by t). */
static int cursor(store_txn *t, int db, MDB_cursor **out)
{
    unsigned bit = 1u << db;
    if (!(t->cur_live & bit)) {
        int rc;
        if (t->cur[db]) {
            rc = mdb_cursor_renew(t->txn, t->cur[db]);  /* read txns only */
            if (rc) { mdb_cursor_close(t->cur[db]); t->cur[db] = NULL; }
        } else {
            rc = mdb_cursor_open(t->txn, t->s->dbi[db], &t->cur[db]);
            if (rc) t->cur[db] = NULL;
        }
        if (rc) return map_err(rc);
        t->cur_live |= bit;
    }
    *out = t->cur[db];
    return ERR_OK;
}

static int check_name(const char *name, size_t *len)
{
    if (!name) return ERR_INVALID;
    size_t n = strnlen(name, STORE_NAME_MAX + 1);
    if (n > STORE_NAME_MAX) return ERR_TOO_LARGE;
    if (n == 0) return ERR_INVALID;
    *len = n;
    return ERR_OK;
}

static int check_write(store_txn *t)
{
    if (!t) return ERR_INVALID;
    return t->write ? ERR_OK : ERR_INVALID;
}

static int meta_get_u64(store_txn *t, const char *name, uint64_t *v);
static int meta_put_u64(store_txn *t, const char *name, uint64_t v);
static int clock_load(store_txn *t);

/* Remembers that conversation conv (or its members) changed in t. */
static int touch(store_txn *t, uint64_t conv)
{
    if (t->ntouched && t->touched[t->ntouched - 1] == conv) return ERR_OK;
    if (t->ntouched == t->touched_cap) {
        size_t cap = t->touched_cap ? t->touched_cap * 2 : 8;
        uint64_t *n = realloc(t->touched, cap * sizeof *n);
        if (!n) { if (!t->err) t->err = ERR_NOMEM; return ERR_NOMEM; }
        t->touched = n;
        t->touched_cap = cap;
    }
    t->touched[t->ntouched++] = conv;
    return ERR_OK;
}

const uint64_t *store_touched(store_txn *t, size_t *n)
{
    *n = t && t->write ? t->ntouched : 0;
    return *n ? t->touched : NULL;
}

int store_meta_get(store_txn *t, const char *name, uint64_t *v)
{
    if (!t || !name || !v) return ERR_INVALID;
    return meta_get_u64(t, name, v);
}

int store_meta_put(store_txn *t, const char *name, uint64_t v)
{
    int rc = check_write(t);
    return rc ? rc : meta_put_u64(t, name, v);
}

void store_clock_raise(store_txn *t, uint64_t v)
{
    if (check_write(t)) return;
    int rc = clock_load(t);
    if (rc) { if (!t->err) t->err = rc; return; }
    if (v > t->clock) { t->clock = v; t->clock_dirty = true; }
}

static int meta_get_u64(store_txn *t, const char *name, uint64_t *v)
{
    MDB_val k = { strlen(name), (void *)name }, d;
    int rc = get(t, DB_META, &k, &d);
    if (rc == ERR_NOT_FOUND) { *v = 0; return ERR_OK; }
    if (rc) return rc;
    if (d.mv_size != 8) return ERR_IO;
    *v = get64(d.mv_data);
    return ERR_OK;
}

static int meta_put_u64(store_txn *t, const char *name, uint64_t v)
{
    uint8_t b[8];
    MDB_val k = { strlen(name), (void *)name }, d = key1(b, v);
    return wput(t, DB_META, &k, &d, 0);
}

/* ---- records ------------------------------------------------------------ */

static int rec_check(const MDB_val *v, size_t min)
{
    if (v->mv_size < 1) return ERR_IO;
    if (((const uint8_t *)v->mv_data)[0] != REC_V1) return ERR_VERSION;
    return v->mv_size < min ? ERR_IO : ERR_OK;
}

static size_t user_encode(uint8_t *b, const store_user *u, size_t nlen, size_t hlen)
{
    b[0] = REC_V1;
    put64(b + 1, (uint64_t)u->created);
    put64(b + 9, (uint64_t)u->last_seen);
    put32(b + 17, u->next_device);
    size_t o = USER_FIXED;
    b[o++] = (uint8_t)nlen;
    memcpy(b + o, u->name, nlen);
    o += nlen;
    b[o++] = (uint8_t)hlen;
    memcpy(b + o, u->pwhash, hlen);
    return o + hlen;
}

static int user_decode(const MDB_val *v, uint64_t uid, store_user *u)
{
    int rc = rec_check(v, USER_FIXED + 2);
    if (rc) return rc;
    const uint8_t *b = v->mv_data;
    size_t n = v->mv_size, o = USER_FIXED;
    size_t nlen = b[o++];
    if (nlen > STORE_NAME_MAX || o + nlen + 1 > n) return ERR_IO;
    const uint8_t *name = b + o;
    o += nlen;
    size_t hlen = b[o++];
    if (hlen > STORE_HASH_MAX || o + hlen > n) return ERR_IO;
    u->id = uid;
    u->created = (int64_t)get64(b + 1);
    u->last_seen = (int64_t)get64(b + 9);
    u->next_device = get32(b + 17);
    memcpy(u->name, name, nlen);
    u->name[nlen] = '\0';
    memcpy(u->pwhash, b + o, hlen);
    u->pwhash[hlen] = '\0';
    return ERR_OK;
}

static size_t conv_encode(uint8_t *b, const store_conv *c, uint32_t nmembers, size_t nlen)
{
    b[0] = REC_V1;
    b[1] = c->type;
    put64(b + 2, c->last_seq);
    put64(b + 10, (uint64_t)c->last_ts);
    put64(b + 18, c->version);
    put32(b + 26, nmembers);
    put64(b + 30, (uint64_t)c->created);
    b[CONV_FIXED] = (uint8_t)nlen;
    memcpy(b + CONV_FIXED + 1, c->name, nlen);
    return CONV_FIXED + 1 + nlen;
}

static int conv_decode(const MDB_val *v, uint64_t id, store_conv *c)
{
    int rc = rec_check(v, CONV_FIXED + 1);
    if (rc) return rc;
    const uint8_t *b = v->mv_data;
    size_t nlen = b[CONV_FIXED];
    if (nlen > STORE_NAME_MAX || CONV_FIXED + 1 + nlen > v->mv_size) return ERR_IO;
    c->id = id;
    c->type = b[1];
    c->last_seq = get64(b + 2);
    c->last_ts = (int64_t)get64(b + 10);
    c->version = get64(b + 18);
    c->nmembers = get32(b + 26);
    c->created = (int64_t)get64(b + 30);
    memcpy(c->name, b + CONV_FIXED + 1, nlen);
    c->name[nlen] = '\0';
    return ERR_OK;
}

/* nmembers of an encoded conversation record (checked by the caller). */
static uint32_t conv_nmembers(const MDB_val *v)
{
    return get32((const uint8_t *)v->mv_data + 26);
}

/* Returns the record's length: MEMBER_LEN, one more for an invitation. */
static size_t member_encode(uint8_t b[MEMBER_LEN + 1], const store_member *m)
{
    b[0] = REC_V1;
    b[1] = m->role;
    put64(b + 2, m->delivered);
    put64(b + 10, m->read);
    put64(b + 18, m->version);
    b[MEMBER_LEN] = 1;
    return MEMBER_LEN + (m->invited ? 1 : 0);
}

static bool member_invited(const MDB_val *v)
{
    return v->mv_size > MEMBER_LEN && ((const uint8_t *)v->mv_data)[MEMBER_LEN] == 1;
}

static int member_decode(const MDB_val *v, uint64_t uid, store_member *m)
{
    int rc = rec_check(v, MEMBER_LEN);
    if (rc) return rc;
    const uint8_t *b = v->mv_data;
    m->uid = uid;
    m->role = b[1];
    m->delivered = get64(b + 2);
    m->read = get64(b + 10);
    m->version = get64(b + 18);
    m->invited = member_invited(v);
    return ERR_OK;
}

/* Fills m from a msgs entry; cmid and body point into v (the map). */
static int msg_decode(const MDB_val *k, const MDB_val *v, store_msg *m)
{
    if (k->mv_size != 16) return ERR_IO;
    int rc = rec_check(v, MSG_FIXED);
    if (rc) return rc;
    const uint8_t *b = v->mv_data;
    size_t clen = b[17];
    if (clen > STORE_CMID_MAX || MSG_FIXED + clen > v->mv_size) return ERR_IO;
    m->conv = get64(k->mv_data);
    m->seq = get64((const uint8_t *)k->mv_data + 8);
    m->from = get64(b + 1);
    m->ts = (int64_t)get64(b + 9);
    m->cmid = (const char *)b + MSG_FIXED;
    m->cmid_len = clen;
    m->body = (const char *)b + MSG_FIXED + clen;
    m->body_len = v->mv_size - MSG_FIXED - clen;
    return ERR_OK;
}

/* ---- environment -------------------------------------------------------- */

/* mkdir -p; ERR_OK if dir exists as a directory afterwards. */
static int make_dirs(const char *dir)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p) return ERR_NOMEM;
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            log_error("cannot create the data directory", "dir=%s err=\"%s\"", p, strerror(errno));
            free(p);
            return ERR_IO;
        }
        p[i] = c;
    }
    free(p);
    struct stat st;
    int e = stat(dir, &st) != 0 ? errno : 0;
    if (e || !S_ISDIR(st.st_mode)) {
        log_error("cannot use the data directory", "dir=%s err=\"%s\"", dir,
                  e ? strerror(e) : "not a directory");
        return ERR_IO;
    }
    return ERR_OK;
}

/* Takes the directory's lock: an exclusive flock on DIR/LOCK, held (and
 * the fd kept) until store_close(); the kernel drops it when the process
 * dies, however it dies. The file then holds our pid, for the message of
 * the next one to try. Returns the fd, ERR_BUSY if another open store (of
 * any process) holds the lock, or ERR_IO with errno set. */
static int lock_dir(const char *dir)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return ERR_IO;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        log_error("cannot open the data directory's lock file", "dir=%s file=LOCK err=\"%s\"",
                  dir, strerror(errno));
        return ERR_IO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        if (e != EWOULDBLOCK)
            log_error("cannot lock the data directory", "dir=%s file=LOCK err=\"%s\"", dir,
                      strerror(e));
        return e == EWOULDBLOCK ? ERR_BUSY : ERR_IO;
    }
    char pid[24];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) { /* only informative */ }
    return fd;
}

int store_lock_pid(const char *dir)
{
    char path[4096], buf[24];
    if (!dir || snprintf(path, sizeof path, "%s/LOCK", dir) >= (int)sizeof path) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    long pid = strtol(buf, NULL, 10);
    return pid > 0 && pid < 1L << 30 ? (int)pid : 0;
}

/* Inside the opening write transaction: checks the format version, creates
 * the databases of a fresh environment and records its version. Nothing is
 * written unless the environment is empty. */
static int open_dbs(store *s, MDB_txn *txn)
{
    MDB_dbi meta;
    int rc = mdb_dbi_open(txn, db_names[DB_META], 0, &meta);
    bool fresh = false;
    if (rc == MDB_NOTFOUND) {
        /* No meta: a new environment, or something that is not ours. */
        MDB_dbi main_db;
        MDB_stat st;
        if ((rc = mdb_dbi_open(txn, NULL, 0, &main_db)) != 0) return map_err(rc);
        if ((rc = mdb_stat(txn, main_db, &st)) != 0) return map_err(rc);
        if (st.ms_entries != 0) return ERR_VERSION;
        fresh = true;
    } else if (rc == MDB_INCOMPATIBLE) {
        return ERR_VERSION;     /* "meta" is a plain key of a foreign env */
    } else if (rc) {
        return map_err(rc);
    } else {
        MDB_val k = { 7, "version" }, d;
        rc = mdb_get(txn, meta, &k, &d);
        if (rc == MDB_NOTFOUND) return ERR_VERSION;
        if (rc) return map_err(rc);
        if (d.mv_size != 4) return ERR_IO;
        if (get32(d.mv_data) != STORE_FORMAT_VERSION) return ERR_VERSION;
    }
    for (int i = 0; i < DB_COUNT; i++) {
        rc = mdb_dbi_open(txn, db_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc) return rc == MDB_INCOMPATIBLE ? ERR_IO : map_err(rc);
    }
    if (fresh) {
        uint8_t b[4];
        put32(b, STORE_FORMAT_VERSION);
        MDB_val k = { 7, "version" }, d = { 4, b };
        if ((rc = mdb_put(txn, s->dbi[DB_META], &k, &d, 0)) != 0) return map_err(rc);
    }
    return ERR_OK;
}

int store_open(store **out, const char *dir, size_t map_size)
{
    if (!out || !dir || !*dir) return ERR_INVALID;
    *out = NULL;
    int rc = make_dirs(dir);
    if (rc) return rc;

    int lock_fd = lock_dir(dir);
    if (lock_fd < 0) return lock_fd;
    store *s = calloc(1, sizeof *s);
    if (!s) { close(lock_fd); return ERR_NOMEM; }
    s->lock_fd = lock_fd;
    if (pthread_mutex_init(&s->pool_mu, NULL) != 0) { close(lock_fd); free(s); return ERR_NOMEM; }

    MDB_txn *txn = NULL;
    int e = 0;
    if ((rc = mdb_env_create(&s->env)) != 0) { s->env = NULL; goto fail_mdb; }
    if ((rc = mdb_env_set_maxdbs(s->env, MAXDBS)) != 0 ||
        (rc = mdb_env_set_maxreaders(s->env, MAXREADERS)) != 0 ||
        (rc = mdb_env_set_mapsize(s->env, map_size ? map_size : DEFAULT_MAP_SIZE)) != 0 ||
        (rc = mdb_env_open(s->env, dir, MDB_NOTLS, 0600)) != 0)
        goto fail_mdb;
    int dead;
    mdb_reader_check(s->env, &dead);    /* free slots of crashed processes */

    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn)) != 0) goto fail_mdb;
    if ((rc = open_dbs(s, txn)) != 0) {
        mdb_txn_abort(txn);             /* nothing is changed */
        if (rc != ERR_VERSION)
            log_error("cannot open the store", "dir=%s err=%s", dir, err_name(rc));
        goto fail;
    }
    MDB_stat su, sc;
    if (mdb_stat(txn, s->dbi[DB_USERS], &su) == 0 && mdb_stat(txn, s->dbi[DB_CONVS], &sc) == 0) {
        s->nusers = su.ms_entries;
        s->nconvs = sc.ms_entries;
    }
    if ((rc = mdb_txn_commit(txn)) != 0) goto fail_mdb;
    *out = s;
    return ERR_OK;

fail_mdb:
    e = rc > 0 ? rc : 0;            /* LMDB reports system errors as errno values */
    /* LMDB's errors are errno values (EACCES: "Permission denied") or its own. */
    log_error("cannot open the store", "dir=%s err=\"%s\"", dir, mdb_strerror(rc));
    rc = map_err(rc);
    if (rc == ERR_NOT_FOUND || rc == ERR_CONFLICT || rc == ERR_INVALID) rc = ERR_IO;
fail:
    if (s->env) mdb_env_close(s->env);
    pthread_mutex_destroy(&s->pool_mu);
    close(s->lock_fd);
    free(s);
    errno = e;
    return rc;
}

/* Frees a read transaction handle and its cursors. */
static void txn_discard(store_txn *t)
{
    for (int i = 0; i < DB_COUNT; i++)
        if (t->cur[i]) mdb_cursor_close(t->cur[i]);
    mdb_txn_abort(t->txn);
    free(t);
}

void store_close(store *s)
{
    if (!s) return;
    store_txn *t = s->pool;
    while (t) {
        store_txn *next = t->next;
        txn_discard(t);
        t = next;
    }
    mdb_env_close(s->env);
    pthread_mutex_destroy(&s->pool_mu);
    close(s->lock_fd);              /* releases the directory */
    free(s);
}

static _Thread_local bool forbidden_here;
static uint64_t forbidden_begins; /* atomic */

void store_forbid_this_thread(void) { forbidden_here = true; }

uint64_t store_forbidden_begins(void)
{
    return __atomic_load_n(&forbidden_begins, __ATOMIC_RELAXED);
}

int store_begin(store *s, bool write, store_txn **out)
{
    if (!s || !out) return ERR_INVALID;
    if (forbidden_here) __atomic_add_fetch(&forbidden_begins, 1, __ATOMIC_RELAXED);
    *out = NULL;
    int rc;
    if (!write) {
        pthread_mutex_lock(&s->pool_mu);
        store_txn *t = s->pool;
        if (t) { s->pool = t->next; s->npool--; }
        pthread_mutex_unlock(&s->pool_mu);
        if (t) {
            if ((rc = mdb_txn_renew(t->txn)) == 0) {
                t->cur_live = 0;
                t->next = NULL;
                *out = t;
                return ERR_OK;
            }
            txn_discard(t);             /* fall back to a new handle */
        }
    }
    store_txn *t = calloc(1, sizeof *t);
    if (!t) return ERR_NOMEM;
    t->s = s;
    t->write = write;
    if ((rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn)) != 0) {
        free(t);
        return map_err(rc);
    }
    *out = t;
    return ERR_OK;
}

/* Ends a read transaction: back to the pool, or freed if the pool is full. */
static void read_end(store_txn *t)
{
    store *s = t->s;
    mdb_txn_reset(t->txn);
    pthread_mutex_lock(&s->pool_mu);
    if (s->npool < POOL_MAX) {
        t->next = s->pool;
        s->pool = t;
        s->npool++;
        t = NULL;
    }
    pthread_mutex_unlock(&s->pool_mu);
    if (t) txn_discard(t);
}

int store_commit(store_txn *t)
{
    if (!t) return ERR_INVALID;
    if (!t->write) { read_end(t); return ERR_OK; }
    int rc = t->err;
    if (!rc && t->clock_dirty) rc = meta_put_u64(t, "clock", t->clock);
    if (rc) {
        mdb_txn_abort(t->txn);
    } else {
        /* The gauges: entry counts are in the transaction's own database
         * records (no page is read), kept once the commit is durable. */
        MDB_stat su, sc;
        bool counted = mdb_stat(t->txn, t->s->dbi[DB_USERS], &su) == 0 &&
                       mdb_stat(t->txn, t->s->dbi[DB_CONVS], &sc) == 0;
        store *s = t->s;
        rc = mdb_txn_commit(t->txn);    /* frees the txn even on failure */
        if (rc) rc = map_err(rc);
        if (rc == ERR_NOT_FOUND || rc == ERR_CONFLICT || rc == ERR_INVALID) rc = ERR_IO;
        if (rc == ERR_OK && counted) {
            __atomic_store_n(&s->nusers, (uint64_t)su.ms_entries, __ATOMIC_RELAXED);
            __atomic_store_n(&s->nconvs, (uint64_t)sc.ms_entries, __ATOMIC_RELAXED);
        }
    }
    free(t->touched);
    free(t);                            /* LMDB freed the write cursors */
    return rc;
}

uint64_t store_space_left(store *s)
{
    struct statvfs v;
    if (fstatvfs(s->lock_fd, &v) != 0) return UINT64_MAX;
    return (uint64_t)v.f_bavail * v.f_frsize;
}

bool store_space_low(store *s)
{
    struct statvfs v;
    if (fstatvfs(s->lock_fd, &v) != 0) return false;
    return (uint64_t)v.f_bavail * v.f_frsize < STORE_SPACE_LOW;
}

int store_sync(store *s)
{
    int rc = mdb_env_sync(s->env, 1);
    return rc ? map_err(rc) : ERR_OK;
}

void store_counts(store *s, uint64_t *users, uint64_t *convs)
{
    *users = __atomic_load_n(&s->nusers, __ATOMIC_RELAXED);
    *convs = __atomic_load_n(&s->nconvs, __ATOMIC_RELAXED);
}

void store_abort(store_txn *t)
{
    if (!t) return;
    if (!t->write) { read_end(t); return; }
    mdb_txn_abort(t->txn);
    free(t->touched);
    free(t);
}

/* ---- clock -------------------------------------------------------------- */

static int clock_load(store_txn *t)
{
    if (t->clock_loaded) return ERR_OK;
    int rc = meta_get_u64(t, "clock", &t->clock);
    if (rc) return rc;
    t->clock_loaded = true;
    return ERR_OK;
}

uint64_t store_tick(store_txn *t)
{
    if (check_write(t)) return 0;
    int rc = clock_load(t);
    if (rc) { if (!t->err) t->err = rc; return 0; }
    t->clock++;
    t->clock_dirty = true;              /* written to meta by store_commit() */
    return t->clock;
}

uint64_t store_clock(store_txn *t)
{
    if (!t) return 0;
    if (t->write) return clock_load(t) ? 0 : t->clock;
    uint64_t v;
    return meta_get_u64(t, "clock", &v) ? 0 : v;
}

/* ---- users and sessions -------------------------------------------------- */

int store_user_create(store_txn *t, const char *name, const char *pwhash, int64_t now,
                      uint64_t *uid)
{
    int rc;
    size_t nlen, hlen;
    if ((rc = check_write(t)) || (rc = check_name(name, &nlen))) return rc;
    if (!pwhash || !uid) return ERR_INVALID;
    if ((hlen = strnlen(pwhash, STORE_HASH_MAX + 1)) > STORE_HASH_MAX) return ERR_TOO_LARGE;

    uint64_t next;
    if ((rc = meta_get_u64(t, "next_user", &next))) return rc;
    if (next == 0) next = 1;            /* uid 0 is never used */

    uint8_t kb[8], vb[8];
    MDB_val k = { nlen, (void *)name }, v = key1(vb, next);
    if ((rc = wput(t, DB_NAMES, &k, &v, MDB_NOOVERWRITE))) return rc;

    store_user u = { .created = now, .last_seen = 0, .next_device = 1 };
    memcpy(u.name, name, nlen);
    memcpy(u.pwhash, pwhash, hlen);
    uint8_t rb[USER_FIXED + 2 + STORE_NAME_MAX + STORE_HASH_MAX];
    k = key1(kb, next);
    v = (MDB_val){ user_encode(rb, &u, nlen, hlen), rb };
    if ((rc = wput(t, DB_USERS, &k, &v, 0))) return rc;
    if ((rc = meta_put_u64(t, "next_user", next + 1))) return rc;
    *uid = next;
    return ERR_OK;
}

int store_user_get(store_txn *t, uint64_t uid, store_user *u)
{
    if (!t || !u) return ERR_INVALID;
    uint8_t kb[8];
    MDB_val k = key1(kb, uid), v;
    int rc = get(t, DB_USERS, &k, &v);
    return rc ? rc : user_decode(&v, uid, u);
}

int store_user_by_name(store_txn *t, const char *name, store_user *u)
{
    size_t nlen;
    int rc;
    if (!t || !u) return ERR_INVALID;
    if ((rc = check_name(name, &nlen))) return rc;
    MDB_val k = { nlen, (void *)name }, v;
    if ((rc = get(t, DB_NAMES, &k, &v))) return rc;
    if (v.mv_size != 8) return ERR_IO;
    return store_user_get(t, get64(v.mv_data), u);
}

int store_user_put(store_txn *t, const store_user *u)
{
    int rc;
    size_t nlen, hlen;
    if ((rc = check_write(t))) return rc;
    if (!u) return ERR_INVALID;
    if ((rc = check_name(u->name, &nlen))) return rc;
    if ((hlen = strnlen(u->pwhash, STORE_HASH_MAX + 1)) > STORE_HASH_MAX) return ERR_TOO_LARGE;

    store_user old;                     /* a copy: puts move map pages */
    if ((rc = store_user_get(t, u->id, &old))) return rc;
    if (strcmp(old.name, u->name) != 0) {
        /* A rename keeps the names index in step. */
        uint8_t vb[8];
        MDB_val k = { nlen, (void *)u->name }, v = key1(vb, u->id);
        if ((rc = wput(t, DB_NAMES, &k, &v, MDB_NOOVERWRITE))) return rc;
        k = (MDB_val){ strlen(old.name), old.name };
        if ((rc = wdel(t, DB_NAMES, &k)) && rc != ERR_NOT_FOUND) return rc;
    }
    uint8_t kb[8], rb[USER_FIXED + 2 + STORE_NAME_MAX + STORE_HASH_MAX];
    MDB_val k = key1(kb, u->id), v = { user_encode(rb, u, nlen, hlen), rb };
    return wput(t, DB_USERS, &k, &v, 0);
}

int store_session_put(store_txn *t, const uint8_t token_hash[32], const store_session *s)
{
    int rc;
    if ((rc = check_write(t))) return rc;
    if (!token_hash || !s) return ERR_INVALID;
    uint8_t b[SESSION_LEN];
    b[0] = REC_V1;
    put64(b + 1, s->uid);
    put32(b + 9, s->device);
    put64(b + 13, (uint64_t)s->expires);
    MDB_val k = { 32, (void *)token_hash }, v = { sizeof b, b };
    return wput(t, DB_SESSIONS, &k, &v, 0);
}

int store_session_get(store_txn *t, const uint8_t token_hash[32], store_session *s)
{
    if (!t || !token_hash || !s) return ERR_INVALID;
    MDB_val k = { 32, (void *)token_hash }, v;
    int rc = get(t, DB_SESSIONS, &k, &v);
    if (rc || (rc = rec_check(&v, SESSION_LEN))) return rc;
    const uint8_t *b = v.mv_data;
    s->uid = get64(b + 1);
    s->device = get32(b + 9);
    s->expires = (int64_t)get64(b + 13);
    return ERR_OK;
}

int store_session_del(store_txn *t, const uint8_t token_hash[32])
{
    int rc;
    if ((rc = check_write(t))) return rc;
    if (!token_hash) return ERR_INVALID;
    MDB_val k = { 32, (void *)token_hash };
    return wdel(t, DB_SESSIONS, &k);
}

/* ---- conversations and members ----------------------------------------- */

int store_conv_create(store_txn *t, store_conv *c)
{
    int rc;
    size_t nlen;
    if ((rc = check_write(t))) return rc;
    if (!c) return ERR_INVALID;
    if ((nlen = strnlen(c->name, STORE_NAME_MAX + 1)) > STORE_NAME_MAX) return ERR_TOO_LARGE;

    uint64_t id;
    if ((rc = meta_get_u64(t, "next_conv", &id))) return rc;
    if (id == 0) id = 1;                /* conversation 0 is never used */
    uint8_t kb[8], rb[CONV_FIXED + 1 + STORE_NAME_MAX];
    MDB_val k = key1(kb, id), v = { conv_encode(rb, c, 0, nlen), rb };
    if ((rc = wput(t, DB_CONVS, &k, &v, MDB_NOOVERWRITE))) return rc == ERR_CONFLICT ? ERR_IO : rc;
    if ((rc = meta_put_u64(t, "next_conv", id + 1))) return rc;
    if ((rc = touch(t, id))) return rc;
    c->id = id;
    c->nmembers = 0;                    /* as stored: no members yet */
    return ERR_OK;
}

int store_conv_get(store_txn *t, uint64_t id, store_conv *c)
{
    if (!t || !c) return ERR_INVALID;
    uint8_t kb[8];
    MDB_val k = key1(kb, id), v;
    int rc = get(t, DB_CONVS, &k, &v);
    return rc ? rc : conv_decode(&v, id, c);
}

/* Positions the convs cursor on conversation id and checks its record. */
static int conv_seek(store_txn *t, uint64_t id, uint8_t kb[8], MDB_cursor **cur, MDB_val *v)
{
    int rc = cursor(t, DB_CONVS, cur);
    if (rc) return rc;
    MDB_val k = key1(kb, id);
    if ((rc = mdb_cursor_get(*cur, &k, v, MDB_SET)) != 0) return map_err(rc);
    return rec_check(v, CONV_FIXED + 1);
}

/* Rewrites the conversation record under cur (positioned by conv_seek). */
static int conv_write(store_txn *t, MDB_cursor *cur, uint8_t kb[8], const store_conv *c,
                      uint32_t nmembers, size_t nlen)
{
    uint8_t rb[CONV_FIXED + 1 + STORE_NAME_MAX];
    MDB_val k = { 8, kb }, v = { conv_encode(rb, c, nmembers, nlen), rb };
    int rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
    return rc ? wfail(t, rc) : ERR_OK;
}

int store_conv_put(store_txn *t, const store_conv *c)
{
    int rc;
    size_t nlen;
    if ((rc = check_write(t))) return rc;
    if (!c) return ERR_INVALID;
    if ((nlen = strnlen(c->name, STORE_NAME_MAX + 1)) > STORE_NAME_MAX) return ERR_TOO_LARGE;
    uint8_t kb[8];
    MDB_cursor *cur;
    MDB_val v;
    if ((rc = conv_seek(t, c->id, kb, &cur, &v))) return rc;
    if ((rc = touch(t, c->id))) return rc;
    /* nmembers belongs to member_put/member_del: keep the stored count. */
    return conv_write(t, cur, kb, c, conv_nmembers(&v), nlen);
}

/* Adds delta to a conversation's member count (if it exists). */
static int conv_add_members(store_txn *t, uint64_t conv, int delta)
{
    uint8_t kb[8];
    MDB_cursor *cur;
    MDB_val v;
    store_conv c;
    int rc = conv_seek(t, conv, kb, &cur, &v);
    if (rc || (rc = conv_decode(&v, conv, &c))) return rc;
    uint32_t n = c.nmembers;
    if (delta < 0) n = n ? n - 1 : 0;
    else n++;
    return conv_write(t, cur, kb, &c, n, strlen(c.name));
}

static MDB_val direct_key(uint8_t kb[16], uint64_t a, uint64_t b)
{
    return a < b ? key2(kb, a, b) : key2(kb, b, a);
}

int store_direct_get(store_txn *t, uint64_t a, uint64_t b, uint64_t *conv)
{
    if (!t || !conv) return ERR_INVALID;
    uint8_t kb[16];
    MDB_val k = direct_key(kb, a, b), v;
    int rc = get(t, DB_DIRECTS, &k, &v);
    if (rc) return rc;
    if (v.mv_size != 8) return ERR_IO;
    *conv = get64(v.mv_data);
    return ERR_OK;
}

int store_direct_put(store_txn *t, uint64_t a, uint64_t b, uint64_t conv)
{
    int rc;
    if ((rc = check_write(t))) return rc;
    uint8_t kb[16], vb[8];
    MDB_val k = direct_key(kb, a, b), v = key1(vb, conv);
    return wput(t, DB_DIRECTS, &k, &v, 0);
}

int store_member_get(store_txn *t, uint64_t conv, uint64_t uid, store_member *m)
{
    if (!t || !m) return ERR_INVALID;
    uint8_t kb[16];
    MDB_val k = key2(kb, conv, uid), v;
    int rc = get(t, DB_MEMBERS, &k, &v);
    return rc ? rc : member_decode(&v, uid, m);
}

int store_member_put(store_txn *t, uint64_t conv, const store_member *m)
{
    int rc;
    if ((rc = check_write(t))) return rc;
    if (!m) return ERR_INVALID;
    if ((rc = touch(t, conv))) return rc;
    MDB_cursor *cur;
    if ((rc = cursor(t, DB_MEMBERS, &cur))) return rc;
    uint8_t kb[16], rb[MEMBER_LEN + 1], ub[16], one = 1;
    MDB_val k = key2(kb, conv, m->uid), v;
    size_t len = member_encode(rb, m);
    MDB_val uk = key2(ub, m->uid, conv);
    MDB_val state = m->invited ? (MDB_val){ 1, &one } : (MDB_val){ 0, NULL };

    rc = mdb_cursor_get(cur, &k, &v, MDB_SET);
    if (rc == 0) {
        bool was = member_invited(&v);
        k = (MDB_val){ 16, kb };
        if (v.mv_size == len) {
            /* Same shape (the hot path of a send): rewrite in place. */
            v = (MDB_val){ len, rb };
            rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT);
            if (rc) return wfail(t, rc);
        } else {
            v = (MDB_val){ len, rb };
            if ((rc = wput(t, DB_MEMBERS, &k, &v, 0))) return rc;
        }
        /* An invitation accepted (or made again): user_convs follows. */
        return was == m->invited ? ERR_OK : wput(t, DB_USER_CONVS, &uk, &state, 0);
    }
    if (rc != MDB_NOTFOUND) return map_err(rc);

    /* A new member: the conversation must exist (checked before writing). */
    MDB_cursor *ccur;
    MDB_val cv;
    uint8_t ckb[8];
    if ((rc = conv_seek(t, conv, ckb, &ccur, &cv))) return rc;
    k = (MDB_val){ 16, kb };
    v = (MDB_val){ len, rb };
    if ((rc = wput(t, DB_MEMBERS, &k, &v, 0))) return rc;
    if ((rc = wput(t, DB_USER_CONVS, &uk, &state, 0))) return rc;
    return conv_add_members(t, conv, +1);
}

int store_member_del(store_txn *t, uint64_t conv, uint64_t uid)
{
    int rc;
    if ((rc = check_write(t))) return rc;
    if ((rc = touch(t, conv))) return rc;
    uint8_t kb[16], ub[16];
    MDB_val k = key2(kb, conv, uid), uk = key2(ub, uid, conv);
    if ((rc = wdel(t, DB_MEMBERS, &k))) return rc;
    if ((rc = wdel(t, DB_USER_CONVS, &uk)) && rc != ERR_NOT_FOUND) return rc;
    rc = conv_add_members(t, conv, -1);
    return rc == ERR_NOT_FOUND ? ERR_OK : rc;
}

/* Positions cur on the first key >= (a, b) and checks it starts with a.
 * Returns 1 when positioned inside prefix a, 0 when past it, or an error. */
static int prefix_first(MDB_cursor *cur, uint64_t a, uint64_t b, MDB_val *k, MDB_val *v)
{
    uint8_t kb[16];
    *k = key2(kb, a, b);
    int rc = mdb_cursor_get(cur, k, v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return map_err(rc);
    return k->mv_size == 16 && get64(k->mv_data) == a;
}

static int prefix_next(MDB_cursor *cur, uint64_t a, MDB_val *k, MDB_val *v, MDB_cursor_op op)
{
    int rc = mdb_cursor_get(cur, k, v, op);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return map_err(rc);
    return k->mv_size == 16 && get64(k->mv_data) == a;
}

int store_members(store_txn *t, uint64_t conv,
                  int (*fn)(void *arg, const store_member *m), void *arg)
{
    if (!t || !fn) return ERR_INVALID;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = cursor(t, DB_MEMBERS, &cur);
    if (rc) return rc;
    for (rc = prefix_first(cur, conv, 0, &k, &v); rc == 1;
         rc = prefix_next(cur, conv, &k, &v, MDB_NEXT)) {
        store_member m;
        int r = member_decode(&v, get64((const uint8_t *)k.mv_data + 8), &m);
        if (r) return r;
        if ((r = fn(arg, &m)) != 0) return r;
    }
    return rc < 0 ? rc : ERR_OK;
}

int store_user_convs(store_txn *t, uint64_t uid,
                     int (*fn)(void *arg, uint64_t conv), void *arg)
{
    if (!t || !fn) return ERR_INVALID;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = cursor(t, DB_USER_CONVS, &cur);
    if (rc) return rc;
    for (rc = prefix_first(cur, uid, 0, &k, &v); rc == 1;
         rc = prefix_next(cur, uid, &k, &v, MDB_NEXT)) {
        int r = fn(arg, get64((const uint8_t *)k.mv_data + 8));
        if (r) return r;
    }
    return rc < 0 ? rc : ERR_OK;
}

int store_user_convs_count(store_txn *t, uint64_t uid, bool invited, uint32_t cap,
                           uint32_t *n)
{
    if (!t || !n) return ERR_INVALID;
    *n = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = cursor(t, DB_USER_CONVS, &cur);
    if (rc) return rc;
    for (rc = prefix_first(cur, uid, 0, &k, &v); rc == 1 && *n < cap;
         rc = prefix_next(cur, uid, &k, &v, MDB_NEXT)) {
        bool inv = v.mv_size == 1 && ((const uint8_t *)v.mv_data)[0] == 1;
        if (inv == invited) ++*n;
    }
    return rc < 0 ? rc : ERR_OK;
}

/* ---- messages ------------------------------------------------------------ */

int store_msg_put(store_txn *t, const store_msg *m)
{
    int rc;
    if ((rc = check_write(t))) return rc;
    if (!m || m->seq == 0) return ERR_INVALID;    /* seqs start at 1 */
    if (m->cmid_len > STORE_CMID_MAX) return ERR_TOO_LARGE;
    if ((m->cmid_len && !m->cmid) || (m->body_len && !m->body)) return ERR_INVALID;
    if (m->body_len > UINT32_MAX - MSG_FIXED - STORE_CMID_MAX) return ERR_TOO_LARGE;

    uint8_t kb[16];
    MDB_val k = key2(kb, m->conv, m->seq);
    MDB_val v = { MSG_FIXED + m->cmid_len + m->body_len, NULL };
    /* MDB_RESERVE: encode straight into the page, no staging copy. */
    if ((rc = wput(t, DB_MSGS, &k, &v, MDB_RESERVE))) return rc;
    uint8_t *b = v.mv_data;
    b[0] = REC_V1;
    put64(b + 1, m->from);
    put64(b + 9, (uint64_t)m->ts);
    b[17] = (uint8_t)m->cmid_len;
    if (m->cmid_len) memcpy(b + MSG_FIXED, m->cmid, m->cmid_len);
    if (m->body_len) memcpy(b + MSG_FIXED + m->cmid_len, m->body, m->body_len);
    return ERR_OK;
}

int store_msg_get(store_txn *t, uint64_t conv, uint64_t seq, store_msg *m)
{
    if (!t || !m) return ERR_INVALID;
    uint8_t kb[16];
    MDB_val k = key2(kb, conv, seq), v;
    int rc = get(t, DB_MSGS, &k, &v);
    return rc ? rc : msg_decode(&k, &v, m);
}

int store_msgs(store_txn *t, uint64_t conv, uint64_t from, bool forward, size_t limit,
               int (*fn)(void *arg, const store_msg *m), void *arg, bool *more)
{
    if (more) *more = false;
    if (!t || !fn) return ERR_INVALID;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = cursor(t, DB_MSGS, &cur);
    if (rc) return rc;

    MDB_cursor_op step = forward ? MDB_NEXT : MDB_PREV;
    int in;                             /* 1: cursor on a message of conv */
    if (forward) {
        in = prefix_first(cur, conv, from, &k, &v);
    } else {
        /* The first key >= (conv, from); unless it is exactly that
         * message, step back to the one before it. */
        uint8_t kb[16];
        k = key2(kb, conv, from);
        rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
        } else if (rc == 0 && !(k.mv_size == 16 && get64(k.mv_data) == conv &&
                                get64((const uint8_t *)k.mv_data + 8) == from)) {
            rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
        }
        if (rc == MDB_NOTFOUND) in = 0;
        else if (rc) in = map_err(rc);
        else in = k.mv_size == 16 && get64(k.mv_data) == conv;
    }

    size_t n = 0;
    while (in == 1 && n < limit) {
        store_msg m;
        int r = msg_decode(&k, &v, &m);
        if (r) return r;
        n++;
        if ((r = fn(arg, &m)) != 0) {
            if (more) {
                int nx = prefix_next(cur, conv, &k, &v, step);
                *more = nx == 1;
            }
            return r;
        }
        in = prefix_next(cur, conv, &k, &v, step);
    }
    if (in < 0) return in;
    if (more) *more = in == 1;  /* the cursor is on the next one, if any */
    return ERR_OK;
}

int store_cmid_get(store_txn *t, uint64_t conv, uint64_t uid, const char *cmid,
                   size_t len, uint64_t *seq)
{
    if (!t || !seq || !cmid || len == 0) return ERR_INVALID;
    if (len > STORE_CMID_MAX) return ERR_TOO_LARGE;
    uint8_t kb[16 + STORE_CMID_MAX];
    key2(kb, conv, uid);
    memcpy(kb + 16, cmid, len);
    MDB_val k = { 16 + len, kb }, v;
    int rc = get(t, DB_CMIDS, &k, &v);
    if (rc) return rc;
    if (v.mv_size != 8) return ERR_IO;
    *seq = get64(v.mv_data);
    return ERR_OK;
}

int store_cmid_put(store_txn *t, uint64_t conv, uint64_t uid, const char *cmid,
                   size_t len, uint64_t seq)
{
    int rc;
    if ((rc = check_write(t))) return rc;
    if (!cmid || len == 0) return ERR_INVALID;
    if (len > STORE_CMID_MAX) return ERR_TOO_LARGE;
    uint8_t kb[16 + STORE_CMID_MAX], vb[8];
    key2(kb, conv, uid);
    memcpy(kb + 16, cmid, len);
    MDB_val k = { 16 + len, kb }, v = key1(vb, seq);
    return wput(t, DB_CMIDS, &k, &v, 0);
}

/* ---- whole-table walks (tools: migrate.h) ---------------------------------- */

/* Walks every entry of db in key order with cursor `cur` of t. */
static int walk(store_txn *t, int db, int (*each)(void *ctx, const MDB_val *k, const MDB_val *v),
                void *ctx)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = cursor(t, db, &cur);
    if (rc) return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        int r = each(ctx, &k, &v);
        if (r) return r;
    }
    return rc == MDB_NOTFOUND ? ERR_OK : map_err(rc);
}

struct walk_fn {
    union {
        int (*user)(void *arg, const store_user *u);
        int (*session)(void *arg, const uint8_t token_hash[32], const store_session *s);
        int (*conv)(void *arg, const store_conv *c);
        int (*direct)(void *arg, uint64_t lo, uint64_t hi, uint64_t conv);
    } fn;
    void *arg;
};

static int each_user(void *ctx, const MDB_val *k, const MDB_val *v)
{
    struct walk_fn *w = ctx;
    if (k->mv_size != 8) return ERR_IO;
    store_user u;
    int rc = user_decode(v, get64(k->mv_data), &u);
    return rc ? rc : w->fn.user(w->arg, &u);
}

int store_users_each(store_txn *t, int (*fn)(void *arg, const store_user *u), void *arg)
{
    if (!t || !fn) return ERR_INVALID;
    struct walk_fn w = {.fn.user = fn, .arg = arg};
    return walk(t, DB_USERS, each_user, &w);
}

static int each_session(void *ctx, const MDB_val *k, const MDB_val *v)
{
    struct walk_fn *w = ctx;
    if (k->mv_size != 32) return ERR_IO;
    int rc = rec_check(v, SESSION_LEN);
    if (rc) return rc;
    const uint8_t *b = v->mv_data;
    store_session s = {get64(b + 1), get32(b + 9), (int64_t)get64(b + 13)};
    return w->fn.session(w->arg, k->mv_data, &s);
}

int store_sessions_each(store_txn *t,
                        int (*fn)(void *arg, const uint8_t token_hash[32], const store_session *s),
                        void *arg)
{
    if (!t || !fn) return ERR_INVALID;
    struct walk_fn w = {.fn.session = fn, .arg = arg};
    return walk(t, DB_SESSIONS, each_session, &w);
}

static int each_conv(void *ctx, const MDB_val *k, const MDB_val *v)
{
    struct walk_fn *w = ctx;
    if (k->mv_size != 8) return ERR_IO;
    store_conv c;
    int rc = conv_decode(v, get64(k->mv_data), &c);
    return rc ? rc : w->fn.conv(w->arg, &c);
}

int store_convs_each(store_txn *t, int (*fn)(void *arg, const store_conv *c), void *arg)
{
    if (!t || !fn) return ERR_INVALID;
    struct walk_fn w = {.fn.conv = fn, .arg = arg};
    return walk(t, DB_CONVS, each_conv, &w);
}

static int each_direct(void *ctx, const MDB_val *k, const MDB_val *v)
{
    struct walk_fn *w = ctx;
    if (k->mv_size != 16 || v->mv_size != 8) return ERR_IO;
    const uint8_t *kb = k->mv_data;
    return w->fn.direct(w->arg, get64(kb), get64(kb + 8), get64(v->mv_data));
}

int store_directs_each(store_txn *t, int (*fn)(void *arg, uint64_t lo, uint64_t hi, uint64_t conv),
                       void *arg)
{
    if (!t || !fn) return ERR_INVALID;
    struct walk_fn w = {.fn.direct = fn, .arg = arg};
    return walk(t, DB_DIRECTS, each_direct, &w);
}
