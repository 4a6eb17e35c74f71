/* Unit tests of src/store/seq.c (the sequencer's memory of conversations)
 * and src/store/logrec.c (the log entries it appends).
 *
 * Every sequencer test runs over a real store (LMDB in a fresh mkdtemp
 * directory) holding what the sequencer reads: users, one group
 * conversation whose record says last_seq = BASE_SEQ, and its members
 * (alice an admin, bob a member, carol invited; dave is no member). The
 * entries a call appends are decoded back with logrec_next(); "the apply"
 * is done by hand with store.h's write calls, as the writer's applier does
 * (message, cmid, conversation record), followed by seq_applied().
 */
#include "test.h"

#include <ftw.h>
#include <stdbool.h>
#include <unistd.h>

#include "store/logrec.h"
#include "store/seq.h"
#include "store/store.h"

#define MAP (256u << 20)     /* sparse: the eviction test needs room */
#define BASE_SEQ 5         /* the group's last_seq in the store */
#define BASE_TS 1000000    /* its last_ts */

/* ---- fixture ---------------------------------------------------------------- */

static char tmp_dir[64];

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

typedef struct world {
    store *st;
    sequencer *q;
    uint64_t alice, bob, carol, dave;
    uint64_t conv;           /* the group */
    logrec_buf out;
} world;

static void must(int rc, const char *what)
{
    if (rc < 0) { fprintf(stderr, "%s: %s\n", what, err_name(rc)); exit(2); }
}

static store_txn *wbegin(store *s)
{
    store_txn *t = NULL;
    must(store_begin(s, true, &t), "store_begin");
    return t;
}

static void commit(store_txn *t)
{
    must(store_commit(t), "store_commit");
}

static uint64_t add_user(store_txn *t, const char *name)
{
    uint64_t uid = 0;
    must(store_user_create(t, name, "$argon2id$fake", BASE_TS, &uid), "user_create");
    return uid;
}

static void add_member(store_txn *t, uint64_t conv, uint64_t uid, uint8_t role, bool invited)
{
    store_member m = {uid, role, 0, 0, store_tick(t), invited};
    must(store_member_put(t, conv, &m), "member_put");
}

static void world_open(world *w)
{
    memset(w, 0, sizeof *w);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/parley_seq_XXXXXX");
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); exit(2); }
    must(store_open(&w->st, tmp_dir, MAP), "store_open");
    store_txn *t = wbegin(w->st);
    w->alice = add_user(t, "alice");
    w->bob = add_user(t, "bob");
    w->carol = add_user(t, "carol");
    w->dave = add_user(t, "dave");
    store_conv c = {0};
    c.type = STORE_GROUP;
    snprintf(c.name, sizeof c.name, "team");
    c.last_seq = BASE_SEQ;
    c.last_ts = BASE_TS;
    c.created = BASE_TS;
    c.version = store_tick(t);
    must(store_conv_create(t, &c), "conv_create");
    w->conv = c.id;
    /* Inserted out of uid order: the sequencer keeps them sorted. */
    add_member(t, w->conv, w->carol, STORE_MEMBER, true);
    add_member(t, w->conv, w->alice, STORE_ADMIN, false);
    add_member(t, w->conv, w->bob, STORE_MEMBER, false);
    uint64_t clock = store_clock(t);
    commit(t);
    must(seq_new(&w->q, w->st), "seq_new");
    seq_set_clock(w->q, clock);
}

static void world_close(world *w)
{
    seq_free(w->q);
    logrec_buf_free(&w->out);
    store_close(w->st);
    nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A send of a NUL-terminated cmid and body. */
static int send_msg(world *w, uint64_t batch, uint64_t uid, const char *cmid, const char *body,
                    int64_t now, seq_result *r)
{
    return seq_send(w->q, batch, w->conv, uid, cmid, strlen(cmid), body, strlen(body), now,
                    &w->out, r);
}

static void drop(seq_result *r)
{
    audience_unref(r->aud);
    r->aud = NULL;
}

/* The entries appended to w->out since byte `from`, decoded into v (at
 * most cap); returns how many, -1 if they do not decode. */
static int entries_since(const world *w, size_t from, logrec *v, int cap)
{
    size_t off = from;
    int n = 0;
    for (;;) {
        logrec r;
        int rc = logrec_next(w->out.p, w->out.len, &off, &r);
        if (rc == ERR_NOT_FOUND) return n;
        if (rc != ERR_OK || n == cap) return -1;
        v[n++] = r;
    }
}

/* "The apply": writes every message entry of w->out from byte `from` into
 * the store as the writer's applier does (message, cmid, the
 * conversation's last_seq/last_ts), then tells the sequencer the batch is
 * applied. */
static void apply_batch(world *w, size_t from, uint64_t batch)
{
    store_txn *t = wbegin(w->st);
    size_t off = from;
    logrec r;
    while (logrec_next(w->out.p, w->out.len, &off, &r) == ERR_OK) {
        if (r.kind != LOGREC_MSG) continue;
        store_msg m = {r.conv, r.seq, r.uid, r.ts, r.cmid, r.cmid_len, r.body, r.body_len};
        must(store_msg_put(t, &m), "msg_put");
        must(store_cmid_put(t, r.conv, r.uid, r.cmid, r.cmid_len, r.seq), "cmid_put");
        store_conv c;
        must(store_conv_get(t, r.conv, &c), "conv_get");
        c.last_seq = r.seq;
        c.last_ts = r.ts;
        c.version = r.version;
        must(store_conv_put(t, &c), "conv_put");
        store_clock_raise(t, r.version);
    }
    commit(t);
    seq_applied(w->q, batch);
}

/* Writes conv's record and members behind the sequencer's back. */
static void set_last_seq(world *w, uint64_t last_seq, int64_t last_ts)
{
    store_txn *t = wbegin(w->st);
    store_conv c;
    must(store_conv_get(t, w->conv, &c), "conv_get");
    c.last_seq = last_seq;
    c.last_ts = last_ts;
    must(store_conv_put(t, &c), "conv_put");
    commit(t);
}

static bool aud_is(const audience *a, const uint64_t *uids, uint32_t n)
{
    if (!a || a->n != n) return false;
    for (uint32_t i = 0; i < n; i++)
        if (a->uids[i] != uids[i]) return false;
    return true;
}

/* ---- sends ------------------------------------------------------------------ */

TEST(send_assigns_next_seq_and_ts_never_goes_back)
{
    world w;
    world_open(&w);
    uint64_t clock0 = seq_clock(w.q);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "c1", "\"one\"", BASE_TS + 10, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    CHECK_EQ_INT(r.ts, BASE_TS + 10);
    CHECK(!r.duplicate);
    CHECK_EQ_INT(seq_clock(w.q), clock0 + 1);
    drop(&r);
    /* a clock that went back: the ts stays where it was */
    CHECK_EQ_INT(send_msg(&w, 1, w.bob, "c2", "\"two\"", BASE_TS + 3, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 2);
    CHECK_EQ_INT(r.ts, BASE_TS + 10);
    drop(&r);
    /* and far back, before the conversation's stored last_ts */
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "c3", "\"three\"", 5, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 3);
    CHECK_EQ_INT(r.ts, BASE_TS + 10);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "c4", "\"four\"", BASE_TS + 99, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 4);
    CHECK_EQ_INT(r.ts, BASE_TS + 99);
    drop(&r);

    /* the log entries: the message as stored, with the version it takes */
    logrec e[8];
    CHECK_EQ_INT(entries_since(&w, 0, e, 8), 4);
    CHECK_EQ_INT(e[0].kind, LOGREC_MSG);
    CHECK_EQ_INT(e[0].conv, w.conv);
    CHECK_EQ_INT(e[0].seq, BASE_SEQ + 1);
    CHECK_EQ_INT(e[0].uid, w.alice);
    CHECK_EQ_INT(e[0].ts, BASE_TS + 10);
    CHECK_EQ_INT(e[0].version, clock0 + 1);
    CHECK(e[0].cmid_len == 2 && !memcmp(e[0].cmid, "c1", 2));
    CHECK(e[0].body_len == 5 && !memcmp(e[0].body, "\"one\"", 5));
    CHECK_EQ_INT(e[1].uid, w.bob);
    CHECK_EQ_INT(e[1].seq, BASE_SEQ + 2);
    CHECK_EQ_INT(e[1].ts, BASE_TS + 10);
    CHECK_EQ_INT(e[1].version, clock0 + 2);
    CHECK_EQ_INT(e[3].seq, BASE_SEQ + 4);
    CHECK_EQ_INT(e[3].version, clock0 + 4);
    for (int i = 1; i < 4; i++) {
        CHECK(e[i].ts >= e[i - 1].ts);
        CHECK_EQ_INT(e[i].seq, e[i - 1].seq + 1);
    }
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, 1);
    CHECK_EQ_INT(cmids, 4);
    world_close(&w);
}

TEST(send_continues_after_the_apply_and_a_reload)
{
    world w;
    world_open(&w);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "a1", "1", BASE_TS + 50, &r), ERR_OK);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "a2", "2", BASE_TS + 60, &r), ERR_OK);
    drop(&r);
    apply_batch(&w, 0, 1);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 0);           /* applied: the store has them */
    /* memory and a fresh load from the store agree */
    size_t mark = w.out.len;
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "b1", "3", BASE_TS, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 3);
    CHECK_EQ_INT(r.ts, BASE_TS + 60);
    drop(&r);
    apply_batch(&w, mark, 2);
    seq_forget(w.q, w.conv);
    CHECK_EQ_INT(send_msg(&w, 3, w.bob, "b2", "4", BASE_TS, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 4);
    CHECK_EQ_INT(r.ts, BASE_TS + 60); /* from the stored last_ts */
    drop(&r);
    world_close(&w);
}

TEST(resend_is_a_duplicate_in_memory_before_the_apply)
{
    world w;
    world_open(&w);
    seq_result r, d;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "dup", "{\"t\":\"hi\"}", BASE_TS + 1, &r), ERR_OK);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "next", "2", BASE_TS + 2, &r), ERR_OK);
    drop(&r);
    size_t len = w.out.len;
    uint64_t clock = seq_clock(w.q);
    /* same cmid, same body: the original seq and ts, nothing appended */
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "{\"t\":\"hi\"}", BASE_TS + 500, &d), ERR_OK);
    CHECK(d.duplicate);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 1);
    CHECK_EQ_INT(d.ts, BASE_TS + 1);
    drop(&d);
    CHECK_EQ_INT(w.out.len, len);
    CHECK_EQ_INT(seq_clock(w.q), clock);
    /* same cmid, another body: refused, nothing appended */
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "{\"t\":\"ho\"}", BASE_TS + 500, &d),
                 ERR_CMID_REUSED);
    CHECK(!d.duplicate);
    CHECK(d.aud == NULL);
    CHECK_EQ_INT(w.out.len, len);
    /* a body that is a prefix of the first one is another body too */
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "{\"t\":\"hi\"", BASE_TS + 500, &d),
                 ERR_CMID_REUSED);
    CHECK_EQ_INT(w.out.len, len);
    /* the cmid is the sender's: another member's identical send is new */
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "dup", "{\"t\":\"hi\"}", BASE_TS + 3, &d), ERR_OK);
    CHECK(!d.duplicate);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 3);
    drop(&d);
    /* the next new message still takes the next seq */
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "later", "3", BASE_TS + 4, &d), ERR_OK);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 4);
    drop(&d);
    world_close(&w);
}

TEST(resend_is_a_duplicate_from_the_store_after_the_apply)
{
    world w;
    world_open(&w);
    seq_result r, d;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "dup", "\"body\"", BASE_TS + 7, &r), ERR_OK);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 1, w.bob, "other", "\"x\"", BASE_TS + 8, &r), ERR_OK);
    drop(&r);
    apply_batch(&w, 0, 1);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 0);  /* so the answer below comes from the store */
    size_t len = w.out.len;
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "\"body\"", BASE_TS + 900, &d), ERR_OK);
    CHECK(d.duplicate);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 1);
    CHECK_EQ_INT(d.ts, BASE_TS + 7);
    drop(&d);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "\"bodY\"", BASE_TS + 900, &d), ERR_CMID_REUSED);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "\"body\" ", BASE_TS + 900, &d),
                 ERR_CMID_REUSED);
    CHECK_EQ_INT(w.out.len, len);
    /* also after the conversation itself was reloaded from the store */
    seq_forget(w.q, w.conv);
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "other", "\"x\"", BASE_TS + 900, &d), ERR_OK);
    CHECK(d.duplicate);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 2);
    CHECK_EQ_INT(d.ts, BASE_TS + 8);
    drop(&d);
    CHECK_EQ_INT(w.out.len, len);
    /* and after everything was dropped */
    seq_reset(w.q);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "dup", "\"body\"", BASE_TS + 900, &d), ERR_OK);
    CHECK(d.duplicate);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 1);
    drop(&d);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "new", "\"n\"", BASE_TS + 900, &d), ERR_OK);
    CHECK(!d.duplicate);
    CHECK_EQ_INT(d.seq, BASE_SEQ + 3);
    drop(&d);
    world_close(&w);
}

TEST(same_cmid_in_another_conversation_is_new)
{
    world w;
    world_open(&w);
    store_txn *t = wbegin(w.st);
    store_conv c = {0};
    c.type = STORE_DIRECT;
    c.created = c.last_ts = BASE_TS;
    must(store_conv_create(t, &c), "conv_create");
    add_member(t, c.id, w.alice, STORE_MEMBER, false);
    add_member(t, c.id, w.dave, STORE_MEMBER, false);
    commit(t);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "same", "1", BASE_TS + 1, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    drop(&r);
    CHECK_EQ_INT(seq_send(w.q, 1, c.id, w.alice, "same", 4, "1", 1, BASE_TS + 1, &w.out, &r),
                 ERR_OK);
    CHECK(!r.duplicate);
    CHECK_EQ_INT(r.seq, 1);
    uint64_t want[] = {w.alice, w.dave};
    CHECK(aud_is(r.aud, want, 2));
    drop(&r);
    /* dave is a member there, not in the group */
    CHECK_EQ_INT(seq_send(w.q, 1, c.id, w.dave, "d", 1, "2", 1, BASE_TS + 2, &w.out, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, 2);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 1, w.dave, "d", "2", BASE_TS + 2, &r), ERR_FORBIDDEN);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, 2);
    CHECK_EQ_INT(cmids, 3);
    world_close(&w);
}

TEST(send_refusals_append_nothing)
{
    world w;
    world_open(&w);
    seq_result r;
    uint64_t clock = seq_clock(w.q);
    /* not a member */
    CHECK_EQ_INT(send_msg(&w, 1, w.dave, "x", "1", BASE_TS + 1, &r), ERR_FORBIDDEN);
    CHECK(r.aud == NULL);
    /* no such conversation (nor a user) */
    CHECK_EQ_INT(seq_send(w.q, 1, w.conv + 100, w.alice, "x", 1, "1", 1, BASE_TS, &w.out, &r),
                 ERR_FORBIDDEN);
    CHECK_EQ_INT(seq_send(w.q, 1, 0, w.alice, "x", 1, "1", 1, BASE_TS, &w.out, &r),
                 ERR_FORBIDDEN);
    CHECK_EQ_INT(send_msg(&w, 1, 999999, "x", "1", BASE_TS + 1, &r), ERR_FORBIDDEN);
    /* an invited member: replying accepts, which is the slow path */
    CHECK_EQ_INT(send_msg(&w, 1, w.carol, "x", "1", BASE_TS + 1, &r), SEQ_SLOW);
    CHECK(r.aud == NULL);
    /* a cmid over STORE_CMID_MAX bytes */
    char big[STORE_CMID_MAX + 2];
    memset(big, 'k', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, big, "1", BASE_TS + 1, &r), ERR_TOO_LARGE);
    CHECK_EQ_INT(w.out.len, 0);
    CHECK_EQ_INT(seq_clock(w.q), clock);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 0);
    /* none of them took a seq; a cmid of exactly STORE_CMID_MAX is fine */
    big[STORE_CMID_MAX] = '\0';
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, big, "1", BASE_TS + 1, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, big, "1", BASE_TS + 2, &r), ERR_OK);
    CHECK(r.duplicate);
    drop(&r);
    world_close(&w);
}

/* ---- audience and members_version ---------------------------------------- */

TEST(audience_and_members_version)
{
    world w;
    world_open(&w);
    seq_result r1, r2, r3;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "m1", "1", BASE_TS + 1, &r1), ERR_OK);
    /* every member, invited ones included, in uid order */
    uint64_t want[] = {w.alice, w.bob, w.carol};
    CHECK(aud_is(r1.aud, want, 3));
    CHECK(r1.members_version != 0);
    CHECK_EQ_INT(send_msg(&w, 1, w.bob, "m2", "2", BASE_TS + 2, &r2), ERR_OK);
    CHECK_EQ_INT(r2.members_version, r1.members_version);
    CHECK(aud_is(r2.aud, want, 3));
    /* a cursor move hands the same audience */
    seq_result c;
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.carol, BASE_SEQ + 1, 0, false, &w.out, &c), ERR_OK);
    CHECK(c.changed);
    CHECK_EQ_INT(c.members_version, r1.members_version);
    CHECK(aud_is(c.aud, want, 3));
    drop(&c);
    /* the members change in the store (a slow op): once forgotten, a new
     * version and the new member set */
    apply_batch(&w, 0, 1);
    store_txn *t = wbegin(w.st);
    add_member(t, w.conv, w.dave, STORE_MEMBER, false);
    must(store_member_del(t, w.conv, w.bob), "member_del");
    commit(t);
    size_t mark = w.out.len;
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "m3", "3", BASE_TS + 3, &r3), ERR_OK);
    CHECK_EQ_INT(r3.members_version, r1.members_version); /* not forgotten yet */
    CHECK(aud_is(r3.aud, want, 3));
    drop(&r3);
    apply_batch(&w, mark, 2);
    seq_forget(w.q, w.conv);
    mark = w.out.len;
    CHECK_EQ_INT(send_msg(&w, 3, w.alice, "m4", "4", BASE_TS + 4, &r3), ERR_OK);
    CHECK_EQ_INT(r3.seq, BASE_SEQ + 4);
    CHECK(r3.members_version != r1.members_version);
    uint64_t want2[] = {w.alice, w.carol, w.dave};
    CHECK(aud_is(r3.aud, want2, 3));
    /* the references handed out earlier still hold the old set */
    CHECK(aud_is(r1.aud, want, 3));
    CHECK(aud_is(r2.aud, want, 3));
    drop(&r2);
    CHECK_EQ_INT(send_msg(&w, 3, w.bob, "m5", "5", BASE_TS + 5, &r2), ERR_FORBIDDEN); /* removed */
    CHECK(r2.aud == NULL);
    uint64_t prev = r3.members_version;
    drop(&r3);
    /* seq_reset (once everything is applied): a new version again */
    apply_batch(&w, mark, 3);
    seq_reset(w.q);
    CHECK_EQ_INT(send_msg(&w, 4, w.dave, "m6", "6", BASE_TS + 6, &r3), ERR_OK);
    CHECK_EQ_INT(r3.seq, BASE_SEQ + 5);
    CHECK(r3.members_version != prev);
    CHECK(r3.members_version != r1.members_version);
    CHECK(aud_is(r3.aud, want2, 3));
    drop(&r3);
    drop(&r1);
    world_close(&w);
}

/* ---- cursors ---------------------------------------------------------------- */

TEST(cursors_only_move_forward)
{
    world w;
    world_open(&w);
    seq_result r;
    uint64_t clock = seq_clock(w.q);
    /* delivered raised to read */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 0, 3, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    CHECK_EQ_INT(r.delivered, 3);
    CHECK_EQ_INT(r.read, 3);
    CHECK(r.aud != NULL);
    drop(&r);
    CHECK_EQ_INT(seq_clock(w.q), clock + 1);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 5, 0, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    CHECK_EQ_INT(r.delivered, 5);
    CHECK_EQ_INT(r.read, 3);
    drop(&r);
    size_t len = w.out.len;
    /* back, or the same: no change, nothing appended, no audience */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 2, 1, false, &w.out, &r), ERR_OK);
    CHECK(!r.changed);
    CHECK_EQ_INT(r.delivered, 5);
    CHECK_EQ_INT(r.read, 3);
    CHECK(r.aud == NULL);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 5, 3, false, &w.out, &r), ERR_OK);
    CHECK(!r.changed);
    CHECK_EQ_INT(w.out.len, len);
    CHECK_EQ_INT(seq_clock(w.q), clock + 2);
    /* read moves alone */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 0, 4, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    CHECK_EQ_INT(r.delivered, 5);
    CHECK_EQ_INT(r.read, 4);
    drop(&r);

    logrec e[4];
    CHECK_EQ_INT(entries_since(&w, 0, e, 4), 3);
    CHECK_EQ_INT(e[0].kind, LOGREC_CURSOR);
    CHECK_EQ_INT(e[0].conv, w.conv);
    CHECK_EQ_INT(e[0].uid, w.bob);
    CHECK_EQ_INT(e[0].delivered, 3);
    CHECK_EQ_INT(e[0].read, 3);
    CHECK_EQ_INT(e[0].version, clock + 1);
    CHECK_EQ_INT(e[1].delivered, 5);
    CHECK_EQ_INT(e[1].read, 3);
    CHECK_EQ_INT(e[2].delivered, 5);
    CHECK_EQ_INT(e[2].read, 4);
    CHECK_EQ_INT(e[2].version, clock + 3);
    world_close(&w);
}

TEST(cursor_refusals)
{
    world w;
    world_open(&w);
    seq_result r;
    /* beyond last_seq: refused, not clamped */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, BASE_SEQ + 1, 0, false, &w.out, &r),
                 ERR_INVALID);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 0, BASE_SEQ + 1, false, &w.out, &r),
                 ERR_INVALID);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, UINT64_MAX, UINT64_MAX, false, &w.out, &r),
                 ERR_INVALID);
    CHECK(!r.changed);
    /* at last_seq is fine */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, BASE_SEQ, BASE_SEQ, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    drop(&r);
    /* a new message moves the bound */
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "m", "1", BASE_TS + 1, &r), ERR_OK);
    drop(&r);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, BASE_SEQ + 1, 0, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    drop(&r);
    /* the sender has read what it sent */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.alice, 0, 0, false, &w.out, &r), ERR_OK);
    CHECK(!r.changed);
    CHECK_EQ_INT(r.delivered, BASE_SEQ + 1);
    CHECK_EQ_INT(r.read, BASE_SEQ + 1);
    size_t len = w.out.len;
    /* not a member, no such conversation */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.dave, 1, 1, false, &w.out, &r), ERR_FORBIDDEN);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv + 50, w.bob, 1, 1, false, &w.out, &r), ERR_FORBIDDEN);
    /* an invited member: accepting is the slow path, a plain move is not */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.carol, 1, 1, true, &w.out, &r), SEQ_SLOW);
    CHECK(r.aud == NULL);
    CHECK_EQ_INT(w.out.len, len);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.carol, 2, 1, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    CHECK_EQ_INT(r.delivered, 2);
    CHECK_EQ_INT(r.read, 1);
    drop(&r);
    /* accept for a member that is not invited is an ordinary move */
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, 0, BASE_SEQ + 1, true, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    drop(&r);
    world_close(&w);
}

/* ---- last seen ------------------------------------------------------------- */

TEST(seen_appends_an_entry)
{
    world w;
    world_open(&w);
    CHECK_EQ_INT(seq_seen(w.q, 1, w.bob, BASE_TS + 42, &w.out), ERR_OK);
    CHECK_EQ_INT(seq_seen(w.q, 1, w.bob, BASE_TS + 40, &w.out), ERR_OK); /* as is */
    logrec e[3];
    CHECK_EQ_INT(entries_since(&w, 0, e, 3), 2);
    CHECK_EQ_INT(e[0].kind, LOGREC_SEEN);
    CHECK_EQ_INT(e[0].uid, w.bob);
    CHECK_EQ_INT(e[0].ts, BASE_TS + 42);
    CHECK_EQ_INT(e[1].ts, BASE_TS + 40);
    world_close(&w);
}

/* ---- seq_refuse ------------------------------------------------------------ */

TEST(refuse_after_the_checks)
{
    world w;
    world_open(&w);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "kept", "\"k\"", BASE_TS + 1, &r), ERR_OK);
    drop(&r);
    size_t len = w.out.len;
    uint64_t clock = seq_clock(w.q);
    seq_refuse(w.q, ERR_DISK_FULL);
    /* the checks still answer as before */
    CHECK_EQ_INT(send_msg(&w, 2, w.dave, "x", "1", BASE_TS + 2, &r), ERR_FORBIDDEN);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "kept", "\"other\"", BASE_TS + 2, &r), ERR_CMID_REUSED);
    CHECK_EQ_INT(send_msg(&w, 2, w.carol, "x", "1", BASE_TS + 2, &r), SEQ_SLOW);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "kept", "\"k\"", BASE_TS + 2, &r), ERR_OK);
    CHECK(r.duplicate);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    drop(&r);
    CHECK_EQ_INT(seq_cursor(w.q, 2, w.conv, w.bob, BASE_SEQ + 2, 0, false, &w.out, &r),
                 ERR_INVALID);
    CHECK_EQ_INT(seq_cursor(w.q, 2, w.conv, w.dave, 1, 1, false, &w.out, &r), ERR_FORBIDDEN);
    /* what would append is refused with the code given */
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "new", "1", BASE_TS + 2, &r), ERR_DISK_FULL);
    CHECK(r.aud == NULL);
    CHECK(!r.duplicate);
    CHECK_EQ_INT(seq_cursor(w.q, 2, w.conv, w.bob, 1, 1, false, &w.out, &r), ERR_DISK_FULL);
    CHECK(!r.changed);
    CHECK(r.aud == NULL);
    /* a cursor that does not move is no append: answered */
    CHECK_EQ_INT(seq_cursor(w.q, 2, w.conv, w.alice, 0, 0, false, &w.out, &r), ERR_OK);
    CHECK(!r.changed);
    CHECK_EQ_INT(r.read, BASE_SEQ + 1);
    /* last_seen is dropped */
    CHECK_EQ_INT(seq_seen(w.q, 2, w.bob, BASE_TS + 9, &w.out), ERR_OK);
    CHECK_EQ_INT(w.out.len, len);
    CHECK_EQ_INT(seq_clock(w.q), clock);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 1);
    /* another code, then back to normal: nothing refused took a seq */
    seq_refuse(w.q, ERR_IO);
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "new", "1", BASE_TS + 2, &r), ERR_IO);
    seq_refuse(w.q, ERR_OK);
    CHECK_EQ_INT(send_msg(&w, 3, w.bob, "new", "1", BASE_TS + 3, &r), ERR_OK);
    CHECK(!r.duplicate);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 2);
    drop(&r);
    CHECK_EQ_INT(seq_cursor(w.q, 3, w.conv, w.carol, 1, 1, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    drop(&r);
    CHECK_EQ_INT(seq_seen(w.q, 3, w.bob, BASE_TS + 9, &w.out), ERR_OK);
    logrec e[4];
    CHECK_EQ_INT(entries_since(&w, len, e, 4), 3);
    CHECK_EQ_INT(e[0].kind, LOGREC_MSG);
    CHECK_EQ_INT(e[1].kind, LOGREC_CURSOR);
    CHECK_EQ_INT(e[2].kind, LOGREC_SEEN);
    world_close(&w);
}

/* A batch whose log append failed is forgotten with seq_reset (once the
 * batches before it are applied): its cmids and seqs were never logged,
 * so the resend is a new message at the same seq. */
TEST(reset_after_a_failed_batch_forgets_its_messages)
{
    world w;
    world_open(&w);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "ok", "1", BASE_TS + 1, &r), ERR_OK);
    drop(&r);
    apply_batch(&w, 0, 1);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "lost", "2", BASE_TS + 2, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 2);
    drop(&r);
    CHECK_EQ_INT(seq_cursor(w.q, 2, w.conv, w.bob, BASE_SEQ + 2, 0, false, &w.out, &r), ERR_OK);
    drop(&r);
    /* batch 2 failed: nothing of it reached the log or the store */
    seq_reset(w.q);
    CHECK_EQ_INT(send_msg(&w, 3, w.alice, "lost", "2", BASE_TS + 3, &r), ERR_OK);
    CHECK(!r.duplicate);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 2);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 3, w.alice, "ok", "1", BASE_TS + 3, &r), ERR_OK);
    CHECK(r.duplicate); /* the applied one is still known, from the store */
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    drop(&r);
    /* bob's cursor move was forgotten with it */
    CHECK_EQ_INT(seq_cursor(w.q, 3, w.conv, w.bob, 0, 0, false, &w.out, &r), ERR_OK);
    CHECK_EQ_INT(r.delivered, 0);
    world_close(&w);
}

/* An entry that cannot be appended (the buffer's allocation failed) leaves
 * the sequencer as it was: no cmid kept, no seq or version taken. */
TEST(failed_append_changes_nothing)
{
    world w;
    world_open(&w);
    seq_result r;
    uint64_t clock = seq_clock(w.q);
    w.out.err = ERR_NOMEM;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "c", "1", BASE_TS + 1, &r), ERR_NOMEM);
    CHECK(r.aud == NULL);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, BASE_SEQ, BASE_SEQ, false, &w.out, &r),
                 ERR_NOMEM);
    CHECK(!r.changed);
    CHECK(r.aud == NULL);
    CHECK_EQ_INT(seq_seen(w.q, 1, w.bob, BASE_TS, &w.out), ERR_NOMEM);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 0);
    CHECK_EQ_INT(seq_clock(w.q), clock);
    CHECK_EQ_INT(w.out.len, 0);
    w.out.err = ERR_OK;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "c", "1", BASE_TS + 1, &r), ERR_OK);
    CHECK(!r.duplicate);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    drop(&r);
    CHECK_EQ_INT(seq_clock(w.q), clock + 1);
    CHECK_EQ_INT(seq_cursor(w.q, 1, w.conv, w.bob, BASE_SEQ, BASE_SEQ, false, &w.out, &r), ERR_OK);
    CHECK(r.changed);
    drop(&r);
    /* a failure after a kept cmid: the kept one stays a duplicate */
    w.out.err = ERR_NOMEM;
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "d", "2", BASE_TS + 2, &r), ERR_NOMEM);
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "c", "1", BASE_TS + 2, &r), ERR_OK);
    CHECK(r.duplicate);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 1);
    drop(&r);
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 1);
    w.out.err = ERR_OK;
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "d", "2", BASE_TS + 2, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 2);
    drop(&r);
    world_close(&w);
}

/* ---- seq_forget / seq_reset ------------------------------------------------- */

TEST(forget_and_reset_reload_from_the_store)
{
    world w;
    world_open(&w);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "a", "1", BASE_TS + 1, &r), ERR_OK);
    drop(&r);
    apply_batch(&w, 0, 1);
    /* the store changes behind the sequencer (a slow op's transaction) */
    set_last_seq(&w, 100, BASE_TS + 5000);
    store_txn *t = wbegin(w.st);
    add_member(t, w.conv, w.dave, STORE_MEMBER, false);
    store_member inv = {w.carol, STORE_MEMBER, 0, 0, store_tick(t), false}; /* accepted */
    must(store_member_put(t, w.conv, &inv), "member_put");
    commit(t);
    /* kept in memory until told */
    CHECK_EQ_INT(send_msg(&w, 2, w.dave, "d", "1", BASE_TS + 2, &r), ERR_FORBIDDEN);
    CHECK_EQ_INT(send_msg(&w, 2, w.carol, "c", "1", BASE_TS + 2, &r), SEQ_SLOW);
    CHECK_EQ_INT(send_msg(&w, 2, w.bob, "b", "1", BASE_TS + 2, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, BASE_SEQ + 2);
    drop(&r);
    apply_batch(&w, 0, 2); /* rewrites last_seq from the entries */
    set_last_seq(&w, 100, BASE_TS + 5000);
    seq_forget(w.q, w.conv);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, 0);
    CHECK_EQ_INT(send_msg(&w, 3, w.dave, "d", "1", BASE_TS + 3, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, 101);
    CHECK_EQ_INT(r.ts, BASE_TS + 5000);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 3, w.carol, "c", "1", BASE_TS + 3, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, 102);
    drop(&r);
    /* seq_reset drops everything (conversations and cmids) */
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, 1);
    CHECK_EQ_INT(cmids, 2);
    set_last_seq(&w, 200, BASE_TS + 6000);
    store_txn *t2 = wbegin(w.st);
    must(store_member_del(t2, w.conv, w.dave), "member_del");
    commit(t2);
    seq_reset(w.q);
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, 0);
    CHECK_EQ_INT(cmids, 0);
    CHECK_EQ_INT(send_msg(&w, 4, w.dave, "d2", "1", BASE_TS + 4, &r), ERR_FORBIDDEN);
    CHECK_EQ_INT(send_msg(&w, 4, w.bob, "b2", "1", BASE_TS + 4, &r), ERR_OK);
    CHECK_EQ_INT(r.seq, 201);
    CHECK_EQ_INT(r.ts, BASE_TS + 6000);
    drop(&r);
    /* forgetting a conversation never loaded is a no-op */
    seq_forget(w.q, w.conv + 77);
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, 1);
    world_close(&w);
}

TEST(applied_drops_only_applied_cmids)
{
    world w;
    world_open(&w);
    seq_result r;
    CHECK_EQ_INT(send_msg(&w, 1, w.alice, "b1", "1", BASE_TS + 1, &r), ERR_OK);
    drop(&r);
    size_t mark = w.out.len;
    CHECK_EQ_INT(send_msg(&w, 2, w.alice, "b2", "2", BASE_TS + 2, &r), ERR_OK);
    drop(&r);
    CHECK_EQ_INT(send_msg(&w, 3, w.alice, "b3", "3", BASE_TS + 3, &r), ERR_OK);
    drop(&r);
    /* only batch 1 reaches the store */
    store_txn *t = wbegin(w.st);
    size_t off = 0;
    logrec e;
    while (off < mark && logrec_next(w.out.p, mark, &off, &e) == ERR_OK) {
        store_msg m = {e.conv, e.seq, e.uid, e.ts, e.cmid, e.cmid_len, e.body, e.body_len};
        must(store_msg_put(t, &m), "msg_put");
        must(store_cmid_put(t, e.conv, e.uid, e.cmid, e.cmid_len, e.seq), "cmid_put");
    }
    commit(t);
    seq_applied(w.q, 1);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 2);
    /* the unapplied ones are still answered from memory, the applied one
     * from the store */
    for (int i = 1; i <= 3; i++) {
        char cm[8], body[8];
        snprintf(cm, sizeof cm, "b%d", i);
        snprintf(body, sizeof body, "%d", i);
        CHECK_EQ_INT(send_msg(&w, 4, w.alice, cm, body, BASE_TS + 9, &r), ERR_OK);
        CHECK(r.duplicate);
        CHECK_EQ_INT(r.seq, BASE_SEQ + i);
        CHECK_EQ_INT(r.ts, BASE_TS + i);
        drop(&r);
        CHECK_EQ_INT(send_msg(&w, 4, w.alice, cm, "\"no\"", BASE_TS + 9, &r), ERR_CMID_REUSED);
    }
    seq_applied(w.q, 3);
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(cmids, 0);
    world_close(&w);
}

/* Beyond CONV_KEEP (seq.c) conversations, seq_applied() drops applied
 * ones; one with entries not yet applied must stay (reloading it from the
 * store would hand out its unapplied seqs again). */
#define MANY_CONVS (65536 + 64)

TEST(many_conversations_keep_the_unapplied_ones)
{
    world w;
    world_open(&w);
    static uint64_t ids[MANY_CONVS];
    store_txn *t = wbegin(w.st);
    for (size_t i = 0; i < MANY_CONVS; i++) {
        store_conv c = {0};
        c.type = STORE_GROUP;
        c.created = c.last_ts = BASE_TS;
        must(store_conv_create(t, &c), "conv_create");
        store_member m = {w.alice, STORE_ADMIN, 0, 0, 1, false};
        must(store_member_put(t, c.id, &m), "member_put");
        ids[i] = c.id;
    }
    commit(t);
    seq_result r;
    /* two conversations get a message in batch 2, never applied */
    uint64_t hot[2] = {ids[7], ids[MANY_CONVS - 3]};
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(seq_send(w.q, 2, hot[k], w.alice, "h", 1, "1", 1, BASE_TS, &w.out, &r),
                     ERR_OK);
        CHECK_EQ_INT(r.seq, 1);
        drop(&r);
    }
    /* load every other one (a cursor that does not move appends nothing) */
    int bad = 0;
    for (size_t i = 0; i < MANY_CONVS; i++)
        if (seq_cursor(w.q, 1, ids[i], w.alice, 0, 0, false, &w.out, &r) != ERR_OK) bad++;
    CHECK_EQ_INT(bad, 0);
    size_t convs, cmids;
    seq_counts(w.q, &convs, &cmids);
    CHECK_EQ_INT(convs, MANY_CONVS);
    seq_applied(w.q, 1);
    seq_counts(w.q, &convs, &cmids);
    CHECK(convs < MANY_CONVS);       /* applied ones were dropped */
    CHECK(convs >= 2);
    CHECK_EQ_INT(cmids, 2);          /* batch 2's cmids are not applied */
    /* the unapplied conversations continue from memory: seq 2, not 1 again */
    for (int k = 0; k < 2; k++) {
        CHECK_EQ_INT(seq_send(w.q, 2, hot[k], w.alice, "h2", 2, "2", 1, BASE_TS, &w.out, &r),
                     ERR_OK);
        CHECK_EQ_INT(r.seq, 2);
        drop(&r);
        CHECK_EQ_INT(seq_send(w.q, 2, hot[k], w.alice, "h", 1, "1", 1, BASE_TS, &w.out, &r),
                     ERR_OK);
        CHECK(r.duplicate);
        CHECK_EQ_INT(r.seq, 1);
        drop(&r);
    }
    world_close(&w);
}

/* ---- logrec ------------------------------------------------------------------ */

static void put_all(logrec_buf *b, const logrec *v, int n)
{
    for (int i = 0; i < n; i++) CHECK_EQ_INT(logrec_put(b, &v[i]), ERR_OK);
}

static bool same_rec(const logrec *a, const logrec *b)
{
    if (a->kind != b->kind) return false;
    switch (a->kind) {
    case LOGREC_MSG:
        return a->conv == b->conv && a->seq == b->seq && a->uid == b->uid && a->ts == b->ts &&
               a->version == b->version && a->cmid_len == b->cmid_len &&
               a->body_len == b->body_len && !memcmp(a->cmid, b->cmid, a->cmid_len) &&
               !memcmp(a->body, b->body, a->body_len);
    case LOGREC_CURSOR:
        return a->conv == b->conv && a->uid == b->uid && a->delivered == b->delivered &&
               a->read == b->read && a->version == b->version;
    case LOGREC_SEEN:
        return a->uid == b->uid && a->ts == b->ts;
    }
    return false;
}

TEST(logrec_round_trips_each_kind)
{
    static char cmid255[255], body[3000];
    memset(cmid255, 'c', sizeof cmid255);
    for (size_t i = 0; i < sizeof body; i++) body[i] = (char)(i * 7);
    logrec v[] = {
        {.kind = LOGREC_MSG, .conv = 7, .uid = 3, .seq = 42, .ts = 1700000000123, .version = 99,
         .cmid = "c1", .cmid_len = 2, .body = "{\"t\":\"hi\"}", .body_len = 10},
        {.kind = LOGREC_CURSOR, .conv = 7, .uid = 4, .delivered = 42, .read = 40, .version = 100},
        {.kind = LOGREC_SEEN, .uid = 4, .ts = 1700000000999},
        {.kind = LOGREC_MSG, .conv = UINT64_MAX, .uid = UINT64_MAX, .seq = UINT64_MAX,
         .ts = INT64_MIN, .version = UINT64_MAX, .cmid = cmid255, .cmid_len = 255, .body = body,
         .body_len = sizeof body},
        {.kind = LOGREC_MSG, .conv = 1, .uid = 1, .seq = 1, .ts = -1, .version = 0,
         .cmid = "", .cmid_len = 0, .body = "", .body_len = 0},
        {.kind = LOGREC_CURSOR, .conv = UINT64_MAX, .uid = UINT64_MAX, .delivered = UINT64_MAX,
         .read = UINT64_MAX, .version = UINT64_MAX},
        {.kind = LOGREC_SEEN, .uid = 0, .ts = INT64_MAX},
    };
    int n = (int)(sizeof v / sizeof v[0]);
    logrec_buf b = {0};
    put_all(&b, v, n);
    CHECK_EQ_INT(b.err, ERR_OK);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        logrec r;
        size_t before = off;
        CHECK_EQ_INT(logrec_next(b.p, b.len, &off, &r), ERR_OK);
        CHECK(off > before);
        CHECK(same_rec(&r, &v[i]));
        if (r.kind == LOGREC_MSG && r.body_len) /* points into the buffer */
            CHECK(r.body >= (const char *)b.p && r.body < (const char *)b.p + b.len);
    }
    CHECK_EQ_INT(off, b.len);
    logrec r;
    CHECK_EQ_INT(logrec_next(b.p, b.len, &off, &r), ERR_NOT_FOUND);
    CHECK_EQ_INT(off, b.len);
    off = 0;
    CHECK_EQ_INT(logrec_next(b.p, 0, &off, &r), ERR_NOT_FOUND);
    logrec_buf_free(&b);
    CHECK(b.p == NULL && b.len == 0);
}

TEST(logrec_truncated_or_unknown_is_invalid)
{
    logrec v[] = {
        {.kind = LOGREC_MSG, .conv = 7, .uid = 3, .seq = 42, .ts = 5, .version = 9,
         .cmid = "cmid", .cmid_len = 4, .body = "\"body\"", .body_len = 6},
        {.kind = LOGREC_CURSOR, .conv = 7, .uid = 4, .delivered = 42, .read = 40, .version = 10},
        {.kind = LOGREC_SEEN, .uid = 4, .ts = 77},
    };
    logrec_buf b = {0};
    put_all(&b, v, 3);
    /* entry boundaries */
    size_t bound[4] = {0};
    for (int i = 0; i < 3; i++) {
        size_t off = bound[i];
        logrec r;
        CHECK_EQ_INT(logrec_next(b.p, b.len, &off, &r), ERR_OK);
        bound[i + 1] = off;
    }
    CHECK_EQ_INT(bound[3], b.len);
    /* every cut of the buffer: the whole entries before it decode, the cut
     * one is ERR_INVALID (a cut at a boundary is the end) */
    for (size_t cut = 0; cut < b.len; cut++) {
        size_t off = 0;
        int whole = 0, rc;
        logrec r;
        while ((rc = logrec_next(b.p, cut, &off, &r)) == ERR_OK) whole++;
        int at_bound = cut == bound[0] || cut == bound[1] || cut == bound[2];
        int want_whole = cut >= bound[2] ? 2 : cut >= bound[1] ? 1 : 0;
        CHECK_EQ_INT(whole, want_whole);
        CHECK_EQ_INT(rc, at_bound ? ERR_NOT_FOUND : ERR_INVALID);
        CHECK_EQ_INT(off, bound[want_whole]); /* not advanced by a failure */
    }
    /* unknown kinds */
    uint8_t bad[64] = {0};
    for (int k = 0; k < 256; k++) {
        if (k == LOGREC_MSG || k == LOGREC_CURSOR || k == LOGREC_SEEN || k == LOGREC_NOP) continue;
        bad[0] = (uint8_t)k;
        size_t off = 0;
        logrec r;
        CHECK_EQ_INT(logrec_next(bad, sizeof bad, &off, &r), ERR_INVALID);
        CHECK_EQ_INT(off, 0);
    }
    /* a no-op entry is one byte and decodes to nothing else */
    uint8_t nop[2] = {LOGREC_NOP, LOGREC_NOP};
    size_t noff = 0;
    logrec nr;
    CHECK_EQ_INT(logrec_next(nop, sizeof nop, &noff, &nr), ERR_OK);
    CHECK_EQ_INT(nr.kind, LOGREC_NOP);
    CHECK_EQ_INT(noff, 1);
    /* a message whose body length points past the end */
    logrec_buf m = {0};
    CHECK_EQ_INT(logrec_put(&m, &v[0]), ERR_OK);
    m.p[42] = 0xff; /* body_len's low byte */
    size_t off = 0;
    logrec r;
    CHECK_EQ_INT(logrec_next(m.p, m.len, &off, &r), ERR_INVALID);
    m.p[42] = 6;
    m.p[45] = 0xff; /* body_len's high byte: ~4 GiB */
    CHECK_EQ_INT(logrec_next(m.p, m.len, &off, &r), ERR_INVALID);
    m.p[45] = 0;
    m.p[41] = 200; /* cmid_len */
    CHECK_EQ_INT(logrec_next(m.p, m.len, &off, &r), ERR_INVALID);
    CHECK_EQ_INT(off, 0);
    logrec_buf_free(&m);
    logrec_buf_free(&b);
}

TEST(logrec_put_refuses_too_large_and_unknown)
{
    static char cmid[256];
    memset(cmid, 'x', sizeof cmid);
    logrec_buf b = {0};
    logrec ok = {.kind = LOGREC_SEEN, .uid = 1, .ts = 2};
    CHECK_EQ_INT(logrec_put(&b, &ok), ERR_OK);
    size_t len = b.len;
    logrec big = {.kind = LOGREC_MSG, .conv = 1, .uid = 1, .seq = 1, .cmid = cmid,
                  .cmid_len = 256, .body = "1", .body_len = 1};
    CHECK_EQ_INT(logrec_put(&b, &big), ERR_TOO_LARGE);
    CHECK_EQ_INT(b.len, len);
    CHECK_EQ_INT(b.err, ERR_OK); /* the buffer stays usable */
    logrec unknown = {.kind = 9, .uid = 1};
    CHECK_EQ_INT(logrec_put(&b, &unknown), ERR_INVALID);
    logrec zero = {0};
    CHECK_EQ_INT(logrec_put(&b, &zero), ERR_INVALID);
    CHECK_EQ_INT(b.len, len);
    CHECK_EQ_INT(logrec_put(&b, &ok), ERR_OK);
    size_t off = 0;
    logrec r;
    CHECK_EQ_INT(logrec_next(b.p, b.len, &off, &r), ERR_OK);
    CHECK_EQ_INT(logrec_next(b.p, b.len, &off, &r), ERR_OK);
    CHECK_EQ_INT(logrec_next(b.p, b.len, &off, &r), ERR_NOT_FOUND);
    logrec_buf_free(&b);
}

int main(void)
{
    RUN(send_assigns_next_seq_and_ts_never_goes_back);
    RUN(send_continues_after_the_apply_and_a_reload);
    RUN(resend_is_a_duplicate_in_memory_before_the_apply);
    RUN(resend_is_a_duplicate_from_the_store_after_the_apply);
    RUN(same_cmid_in_another_conversation_is_new);
    RUN(send_refusals_append_nothing);
    RUN(audience_and_members_version);
    RUN(cursors_only_move_forward);
    RUN(cursor_refusals);
    RUN(seen_appends_an_entry);
    RUN(refuse_after_the_checks);
    RUN(reset_after_a_failed_batch_forgets_its_messages);
    RUN(failed_append_changes_nothing);
    RUN(forget_and_reset_reload_from_the_store);
    RUN(applied_drops_only_applied_cmids);
    RUN(many_conversations_keep_the_unapplied_ones);
    RUN(logrec_round_trips_each_kind);
    RUN(logrec_truncated_or_unknown_is_invalid);
    RUN(logrec_put_refuses_too_large_and_unknown);
    return test_summary("seq");
}
