/* Unit tests of the chat service (src/chat/chat.c) without sockets: real
 * I/O loops without listeners (fixture.h), the real writer and LMDB in a
 * temporary directory, sessions with a recording sink (fake_sink.h).
 * Operations go in through chat_submit() and come back through their
 * reply on the origin's thread (chat_ops.h); fan-out is read off the fake
 * sinks. Faults are injected around the store (a map too small to hold
 * the next message), not by mocking it. */
#include "test.h"

#include "chat_ops.h"
#include "fake_sink.h"
#include "fixture.h"

/* ---- reading JSON the service wrote ----------------------------------------- */

typedef struct list {
    char item[16][64];
    uint64_t num[64];
    int n;
} list;

static int list_str(void *arg, const char *v, size_t len, uint8_t type)
{
    list *l = arg;
    if (type != JSON_STRING || l->n >= 16) return 1;
    if (json_unescape(v, len, l->item[l->n], sizeof l->item[0]) < 0) return 1;
    l->n++;
    return 0;
}

/* The strings of array field `key` of the JSON object text. */
static list strings_of(const char *text, size_t n, const char *key)
{
    list l;
    memset(&l, 0, sizeof l);
    json_obj o;
    if (json_parse_object(text, n, &o) < 0) { l.n = -1; return l; }
    const json_field *fl = json_get(&o, key);
    if (!fl || fl->type != JSON_ARRAY) { l.n = -1; return l; }
    json_array_each(fl->val, fl->val_len, list_str, &l);
    return l;
}

typedef struct num_ctx {
    list *l;
    const char *key;
} num_ctx;

static int list_num(void *arg, const char *v, size_t len, uint8_t type)
{
    num_ctx *x = arg;
    json_obj o;
    uint64_t u = 0;
    if (type != JSON_OBJECT || x->l->n >= 64 || json_parse_object(v, len, &o) < 0 ||
        json_get_u64(&o, x->key, &u) < 0)
        return 1;
    x->l->num[x->l->n++] = u;
    return 0;
}

/* Field `field` of each object in array `key` of the JSON object text. */
static list numbers_of(const char *text, size_t n, const char *key, const char *field)
{
    list l;
    memset(&l, 0, sizeof l);
    json_obj o;
    if (json_parse_object(text, n, &o) < 0) { l.n = -1; return l; }
    const json_field *fl = json_get(&o, key);
    if (!fl || fl->type != JSON_ARRAY) { l.n = -1; return l; }
    num_ctx x = {&l, field};
    json_array_each(fl->val, fl->val_len, list_num, &x);
    return l;
}

static uint64_t u64_of(const char *text, size_t n, const char *key)
{
    json_obj o;
    uint64_t v = UINT64_MAX;
    if (json_parse_object(text, n, &o) < 0 || json_get_u64(&o, key, &v) < 0) return UINT64_MAX;
    return v;
}

static bool str_is(const char *text, size_t n, const char *key, const char *want)
{
    json_obj o;
    char v[256];
    return json_parse_object(text, n, &o) == ERR_OK && json_get_str(&o, key, v, sizeof v) >= 0 &&
           strcmp(v, want) == 0;
}

/* The conversation object as uid sees it, into buf. */
static size_t conv_json(fx *f, uint64_t conv, uint64_t uid, char *buf, size_t cap)
{
    chat_settle(f->ch, 0);
    jbuf j;
    jb_init(&j, 512);
    int rc = chat_write_conv(f->ch, conv, uid, &j);
    size_t n = 0;
    const char *p = jb_data(&j, &n);
    if (rc < 0 || !p || n >= cap) n = 0;
    else memcpy(buf, p, n);
    buf[n] = 0;
    jb_free(&j);
    return n;
}

/* {history} of conv: chat_write_history's fields between braces. */
static size_t history_json(fx *f, uint64_t uid, uint64_t conv, uint64_t after, uint64_t before, size_t limit,
                           char *buf, size_t cap, int *rc)
{
    chat_settle(f->ch, 0);
    jbuf j;
    jb_init(&j, 4096);
    jb_raw(&j, "{", 1);
    *rc = chat_write_history(f->ch, conv, uid, after, before, limit, chat_page_bytes(f->ch),
                             &j);
    jb_raw(&j, "}", 1);
    size_t n = 0;
    const char *p = jb_data(&j, &n);
    if (!p || n >= cap) n = 0;
    else memcpy(buf, p, n);
    buf[n] = 0;
    jb_free(&j);
    return n;
}

static size_t inbox_json(fx *f, uint64_t uid, uint64_t since, char *buf, size_t cap)
{
    jbuf j;
    jb_init(&j, 4096);
    int rc = chat_write_inbox(f->ch, uid, since, NULL, 1000, chat_page_bytes(f->ch), &j);
    size_t n = 0;
    const char *p = jb_data(&j, &n);
    if (rc < 0 || !p || n >= cap) n = 0;
    else memcpy(buf, p, n);
    buf[n] = 0;
    jb_free(&j);
    return n;
}

static size_t receipts_json(fx *f, uint64_t conv, uint64_t uid, uint64_t seq, char *buf,
                            size_t cap, int *rc)
{
    jbuf j;
    jb_init(&j, 1024);
    *rc = chat_write_receipts(f->ch, conv, uid, seq, &j);
    size_t n = 0;
    const char *p = jb_data(&j, &n);
    if (*rc < 0 || !p || n >= cap) n = 0;
    else memcpy(buf, p, n);
    buf[n] = 0;
    jb_free(&j);
    return n;
}

static store_member member_of(fx *f, uint64_t conv, uint64_t uid, int *rc)
{
    store_member m;
    memset(&m, 0, sizeof m);
    store_txn *txn;
    *rc = (chat_settle(f->ch, 0), store_begin(db_lmdb_store(f->ch->db), false, &txn));
    if (*rc < 0) return m;
    *rc = store_member_get(txn, conv, uid, &m);
    store_abort(txn);
    return m;
}

static store_conv conv_of(fx *f, uint64_t conv)
{
    store_conv c;
    memset(&c, 0, sizeof c);
    store_txn *txn;
    if ((chat_settle(f->ch, 0), store_begin(db_lmdb_store(f->ch->db), false, &txn)) < 0) return c;
    store_conv_get(txn, conv, &c);
    store_abort(txn);
    return c;
}

static fake_session *online(fx *f, const test_user *u, int thread)
{
    fake_session *s = fake_new(f, u->uid, thread);
    snprintf(s->s.name, sizeof s->s.name, "%.32s", u->name);
    fake_add(s);
    return s;
}

/* ---- accounts ------------------------------------------------------------------ */

TEST(register_and_login)
{
    fx f;
    fx_chat(&f, 2);
    int64_t before = chat_now_ms();
    chat_op *op = op_new(&f, OP_REGISTER, op_origin(1));
    snprintf(op->name, sizeof op->name, "alice");
    snprintf(op->pwhash, sizeof op->pwhash, "$test$");
    op_result r = op_do(op);
    CHECK_EQ_INT(r.op.rc, ERR_OK);
    CHECK_EQ_INT(r.thread, 1);                      /* the reply ran on the origin's thread */
    CHECK(r.op.who.uid > 0);
    CHECK_EQ_INT(r.op.who.device, 1);
    CHECK_EQ_INT(strlen(r.op.token), AUTH_TOKEN_LEN);
    CHECK(r.op.expires >= before + (int64_t)f.cfg.token_ttl_s * 1000);
    chat_ident id;
    CHECK_EQ_INT(chat_authenticate(f.ch, r.op.token, strlen(r.op.token), &id), ERR_OK);
    CHECK_EQ_INT(id.uid, r.op.who.uid);
    CHECK_EQ_INT(id.device, 1);
    CHECK(strcmp(id.name, "alice") == 0);
    char first[48];
    memcpy(first, r.op.token, sizeof first);

    /* The same name again. */
    op = op_new(&f, OP_REGISTER, 0);
    snprintf(op->name, sizeof op->name, "alice");
    snprintf(op->pwhash, sizeof op->pwhash, "$test$");
    CHECK_EQ_INT(op_do(op).op.rc, ERR_USERNAME_TAKEN);

    /* A login is a new device with a token of its own; the first stays good. */
    op = op_new(&f, OP_LOGIN, 0);
    op->who.uid = id.uid;
    op_result l = op_do(op);
    CHECK_EQ_INT(l.op.rc, ERR_OK);
    CHECK_EQ_INT(l.op.who.device, 2);
    CHECK(strcmp(l.op.token, first) != 0);
    chat_ident id2;
    CHECK_EQ_INT(chat_authenticate(f.ch, l.op.token, strlen(l.op.token), &id2), ERR_OK);
    CHECK_EQ_INT(id2.device, 2);
    CHECK_EQ_INT(chat_authenticate(f.ch, first, strlen(first), &id), ERR_OK);
    op = op_new(&f, OP_LOGIN, 0);
    op->who.uid = id.uid;
    CHECK_EQ_INT(op_do(op).op.who.device, 3);

    /* A login for an account that does not exist. */
    op = op_new(&f, OP_LOGIN, 0);
    op->who.uid = 424242;
    CHECK(op_do(op).op.rc < 0);
    fx_stop(&f);
}

TEST(bad_tokens_do_not_authenticate)
{
    fx f;
    fx_chat(&f, 1);
    test_user a = user_register(&f, "alice");
    CHECK(a.uid > 0);
    chat_ident id;
    const char *bad[] = {
        "", "x", "not a token at all",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",     /* well formed, unknown */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!",     /* a character outside base64url */
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",    /* 44 characters */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(chat_authenticate(f.ch, bad[i], strlen(bad[i]), &id), ERR_AUTH);
    /* The right token cut short, or with a byte changed. */
    CHECK_EQ_INT(chat_authenticate(f.ch, a.token, AUTH_TOKEN_LEN - 1, &id), ERR_AUTH);
    char t[48];
    memcpy(t, a.token, sizeof t);
    t[5] = t[5] == 'A' ? 'B' : 'A';
    CHECK_EQ_INT(chat_authenticate(f.ch, t, AUTH_TOKEN_LEN, &id), ERR_AUTH);
    CHECK_EQ_INT(chat_authenticate(f.ch, a.token, AUTH_TOKEN_LEN, &id), ERR_OK);
    fx_stop(&f);
}

TEST(expired_tokens_do_not_authenticate)
{
    fx f;
    fx_config(&f, 1);
    f.cfg.token_ttl_s = 0;  /* every token expires as it is made */
    fx_start(&f, true);
    test_user a = user_register(&f, "alice");
    CHECK(a.uid > 0);
    chat_ident id;
    CHECK_EQ_INT(chat_authenticate(f.ch, a.token, strlen(a.token), &id), ERR_AUTH);
    fx_stop(&f);
}

TEST(logout_revokes_the_token_and_closes_its_sessions)
{
    fake_reset();
    fx f;
    fx_chat(&f, 2);
    test_user a = user_register(&f, "alice");
    chat_op *op = op_new(&f, OP_LOGIN, 0);
    op->who.uid = a.uid;
    op_result second = op_do(op);
    chat_ident one, two;
    CHECK_EQ_INT(chat_authenticate(f.ch, a.token, strlen(a.token), &one), ERR_OK);
    CHECK_EQ_INT(chat_authenticate(f.ch, second.op.token, strlen(second.op.token), &two), ERR_OK);
    chat_ident revoked = one;
    /* Sessions opened with the first token on both threads, one with the second. */
    fake_session *s1 = fake_new(&f, a.uid, 0), *s2 = fake_new(&f, a.uid, 1), *s3 = fake_new(&f, a.uid, 1);
    memcpy(&s1->s.token_key, one.token_hash, sizeof s1->s.token_key);
    memcpy(&s2->s.token_key, one.token_hash, sizeof s2->s.token_key);
    memcpy(&s3->s.token_key, two.token_hash, sizeof s3->s.token_key);
    fake_add(s1);
    fake_add(s2);
    fake_add(s3);
    op = op_new(&f, OP_LOGOUT, 0);
    op->who = one;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    op_settle(&f);
    CHECK(s1->closed && s2->closed && !s3->closed);
    CHECK_EQ_INT(s1->close_code, WS_CLOSE_POLICY);
    CHECK(strcmp(s1->close_reason, "token revoked") == 0);
    CHECK_EQ_INT(hub_sessions(f.hub, a.uid), 1);
    CHECK_EQ_INT(chat_authenticate(f.ch, a.token, strlen(a.token), &one), ERR_AUTH);
    CHECK_EQ_INT(chat_authenticate(f.ch, second.op.token, strlen(second.op.token), &two), ERR_OK);
    /* Logging out a token that is already gone is not an error. */
    op = op_new(&f, OP_LOGOUT, 0);
    op->who = revoked;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    CHECK(!s1->wrong_thread && !s2->wrong_thread && !s3->wrong_thread);
    fake_remove(s3);
    fx_stop(&f);
    free(s1); free(s2); free(s3);
}

/* ---- conversations ---------------------------------------------------------------- */

TEST(direct_conversations_are_made_once)
{
    fake_reset();
    fx f;
    fx_chat(&f, 2);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"), c = user_register(&f, "carol");
    fake_session *sa = online(&f, &a, 0), *sb = online(&f, &b, 1), *sc = online(&f, &c, 1);
    op_result d = conv_direct(&f, &a, &b);
    CHECK_EQ_INT(d.op.rc, ERR_OK);
    CHECK(d.op.conv > 0);
    CHECK(!d.op.duplicate);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sa, EV_CONV, false), 1);   /* both members hear of it */
    CHECK_EQ_INT(fake_count(sb, EV_CONV, false), 1);
    CHECK_EQ_INT(fake_total(sc), 0);
    fake_rec ev = fake_last(sb, EV_CONV);
    CHECK(ev.json && strstr(ev.json, "\"type\":\"conv\"") && strstr(ev.json, "\"direct\""));
    CHECK_EQ_INT(ev.conv, d.op.conv);
    /* Either way round, the same conversation, and no new event. */
    op_result again = conv_direct(&f, &b, &a);
    CHECK_EQ_INT(again.op.rc, ERR_OK);
    CHECK(again.op.duplicate);
    CHECK_EQ_INT(again.op.conv, d.op.conv);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sa, EV_CONV, false), 1);
    CHECK_EQ_INT(fake_count(sb, EV_CONV, false), 1);
    /* The conversation as each member sees it. */
    char buf[2048];
    size_t n = conv_json(&f, d.op.conv, a.uid, buf, sizeof buf);
    CHECK(n > 0);
    list m = strings_of(buf, n, "members");
    CHECK_EQ_INT(m.n, 2);
    CHECK(str_is(buf, n, "type", "direct"));
    CHECK_EQ_INT(conv_json(&f, d.op.conv, c.uid, buf, sizeof buf), 0); /* not a member */
    CHECK_EQ_INT(chat_is_member(f.ch, d.op.conv, a.uid), ERR_OK);
    CHECK_EQ_INT(chat_is_member(f.ch, d.op.conv, c.uid), ERR_FORBIDDEN);
    CHECK_EQ_INT(chat_is_member(f.ch, 9999, a.uid), ERR_FORBIDDEN);
    fake_remove(sa); fake_remove(sb); fake_remove(sc);
    fx_stop(&f);
    free(sa); free(sb); free(sc);
}

TEST(groups_add_and_remove)
{
    fake_reset();
    fx f;
    fx_config(&f, 2);
    f.cfg.max_group_members = 4;
    fx_start(&f, true);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"),
              c = user_register(&f, "carol"), d = user_register(&f, "dave"),
              e = user_register(&f, "erin");
    fake_session *sa = online(&f, &a, 0), *sb = online(&f, &b, 1), *sc = online(&f, &c, 0),
                 *sd = online(&f, &d, 1), *se = online(&f, &e, 0);
    /* Listed twice, and the creator listed too: each is a member once. */
    const test_user *const members[] = {&b, &c, &b, &a};
    op_result g = conv_group(&f, &a, "team", members, 4);
    CHECK_EQ_INT(g.op.rc, ERR_OK);
    uint64_t conv = g.op.conv;
    CHECK(conv > 0);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sa, EV_CONV, false), 1);
    CHECK_EQ_INT(fake_count(sb, EV_CONV, false), 1);
    CHECK_EQ_INT(fake_count(sc, EV_CONV, false), 1);
    CHECK_EQ_INT(fake_total(sd), 0);
    char buf[2048];
    size_t n = conv_json(&f, conv, a.uid, buf, sizeof buf);
    CHECK_EQ_INT(strings_of(buf, n, "members").n, 3);
    list admins = strings_of(buf, n, "admins");
    CHECK_EQ_INT(admins.n, 1);
    CHECK(strcmp(admins.item[0], "alice") == 0);
    CHECK(str_is(buf, n, "name", "team"));

    /* Adding: only an admin, only a group, only a non-member, up to the cap. */
    chat_op *op = op_new(&f, OP_ADD, 0);
    op_as(op, &b);
    op->conv = conv;
    op->target = d.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_FORBIDDEN);          /* bob is no admin */
    op = op_new(&f, OP_ADD, 0);
    op_as(op, &d);
    op->conv = conv;
    op->target = e.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_FORBIDDEN);          /* dave is no member */
    op = op_new(&f, OP_ADD, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = b.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_ALREADY_MEMBER);
    op = op_new(&f, OP_ADD, 0);
    op_as(op, &a);
    op->conv = 987654;
    op->target = d.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_FORBIDDEN);          /* no such conversation */
    op_result direct = conv_direct(&f, &a, &e);
    op = op_new(&f, OP_ADD, 0);
    op_as(op, &a);
    op->conv = direct.op.conv;
    op->target = d.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_INVALID);            /* a direct conversation */
    op_settle(&f);
    int conv_events_a = fake_count(sa, EV_CONV, false);
    op = op_new(&f, OP_ADD, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = d.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sd, EV_CONV, false), 1);       /* the new member hears of it */
    CHECK_EQ_INT(fake_count(sa, EV_CONV, false), conv_events_a + 1);
    op = op_new(&f, OP_ADD, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = e.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_TOO_MANY_MEMBERS);   /* 4 is the cap */

    /* Removing: an admin removes anyone, a member only themself. */
    op = op_new(&f, OP_REMOVE, 0);
    op_as(op, &b);
    op->conv = conv;
    op->target = c.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_FORBIDDEN);
    op_settle(&f);
    int conv_events_b = fake_count(sb, EV_CONV, false);
    int conv_events_c = fake_count(sc, EV_CONV, false);
    op = op_new(&f, OP_REMOVE, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = c.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sc, EV_REMOVED, false), 1);    /* the removed one is told so */
    CHECK_EQ_INT(fake_count(sc, EV_CONV, false), conv_events_c); /* and sees no more */
    CHECK_EQ_INT(fake_count(sb, EV_CONV, false), conv_events_b + 1);
    CHECK_EQ_INT(fake_last(sc, EV_REMOVED).conv, conv);
    CHECK_EQ_INT(chat_is_member(f.ch, conv, c.uid), ERR_FORBIDDEN);
    op = op_new(&f, OP_REMOVE, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = c.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_NOT_MEMBER);
    op = op_new(&f, OP_REMOVE, 0);
    op_as(op, &b);
    op->conv = conv;
    op->target = b.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);                 /* leaving */
    CHECK_EQ_INT(chat_is_member(f.ch, conv, b.uid), ERR_FORBIDDEN);
    n = conv_json(&f, conv, a.uid, buf, sizeof buf);
    CHECK_EQ_INT(strings_of(buf, n, "members").n, 2);      /* alice and dave */
    CHECK_EQ_INT(conv_of(&f, conv).nmembers, 2);
    op_settle(&f);
    fake_session *all[] = {sa, sb, sc, sd, se};
    for (int i = 0; i < 5; i++) {
        CHECK(!all[i]->wrong_thread);
        fake_remove(all[i]);
    }
    fx_stop(&f);
    for (int i = 0; i < 5; i++) free(all[i]);
}

/* The events of membership changes come from the conversation as the
 * backend copied it after the op (db.h): right members, last message,
 * presence introductions, and not one store read on the completer. */
TEST(membership_events_come_with_the_op_not_from_store_reads)
{
    fake_reset();
    fx f;
    fx_chat(&f, 2);
    uint64_t before = store_forbidden_begins();
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"),
              c = user_register(&f, "carol");
    fake_session *sa = online(&f, &a, 0), *sb = online(&f, &b, 1), *sc = online(&f, &c, 1);
    const test_user *const members[] = {&b};
    op_result g = conv_group(&f, &a, "crew", members, 1);
    CHECK_EQ_INT(g.op.rc, ERR_OK);
    uint64_t conv = g.op.conv;
    msg_send(&f, &a, conv, "m1", "{\"text\":\"first\"}", 0);
    chat_op *op = op_new(&f, OP_ADD, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = c.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    op_settle(&f);
    fake_rec ev = fake_last(sc, EV_CONV);                  /* carol's first view of it */
    CHECK(ev.json && strstr(ev.json, "\"members\":[\"alice\",\"bob\",\"carol\"]"));
    CHECK(ev.json && strstr(ev.json, "\"name\":\"crew\""));
    CHECK(ev.json && strstr(ev.json, "\"text\":\"first\"")); /* the last message */
    CHECK(ev.json && strstr(ev.json, "\"from\":\"alice\""));
    CHECK(fake_count(sc, EV_PRESENCE, true) >= 1);          /* introduced to the others */
    /* Leaving: the leaver is told "removed", those who stay get the group without it. */
    op = op_new(&f, OP_LEAVE, 0);
    op_as(op, &b);
    CHECK((op->uids = calloc(2, sizeof *op->uids)) && (op->rcs = calloc(2, sizeof *op->rcs)));
    op->uids[0] = conv;
    op->uids[1] = 987654;                                   /* not a member there */
    op->nuids = 2;
    op_result left = op_do(op);
    CHECK_EQ_INT(left.op.rc, ERR_OK);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sb, EV_REMOVED, false), 1);
    ev = fake_last(sa, EV_CONV);
    CHECK(ev.json && strstr(ev.json, "\"members\":[\"alice\",\"carol\"]"));
    ev = fake_last(sc, EV_CONV);
    CHECK(ev.json && strstr(ev.json, "\"members\":[\"alice\",\"carol\"]"));
    /* Removing the last but one: the one removed is told, the admin sees it. */
    op = op_new(&f, OP_REMOVE, 0);
    op_as(op, &a);
    op->conv = conv;
    op->target = c.uid;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    op_settle(&f);
    ev = fake_last(sa, EV_CONV);
    CHECK(ev.json && strstr(ev.json, "\"members\":[\"alice\"]"));
    CHECK_EQ_INT(fake_count(sc, EV_REMOVED, false), 1);
    op_result d = conv_direct(&f, &b, &c);
    CHECK_EQ_INT(d.op.rc, ERR_OK);
    op_settle(&f);
    ev = fake_last(sc, EV_CONV);
    CHECK(ev.json && strstr(ev.json, "\"members\":[\"bob\",\"carol\"]") &&
          strstr(ev.json, "\"last_message\":null"));
    CHECK_EQ_INT(store_forbidden_begins() - before, 0);      /* the completer read nothing */
    fake_remove(sa); fake_remove(sb); fake_remove(sc);
    fx_stop(&f);
    free(sa); free(sb); free(sc);
}

/* ---- messages -------------------------------------------------------------------- */

TEST(send_orders_by_seq_and_cmid_is_idempotent)
{
    fake_reset();
    fx f;
    fx_chat(&f, 2);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"), c = user_register(&f, "carol");
    /* Alice sends from her session on thread 0, has a second one on
     * thread 1; Bob is on thread 1; Carol is in no conversation. */
    fake_session *a0 = online(&f, &a, 0), *a1 = online(&f, &a, 1), *b1 = online(&f, &b, 1),
                 *c0 = online(&f, &c, 0);
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    op_settle(&f);
    fake_reset();
    uint64_t origin = a0->s.id;
    op_result r1 = msg_send(&f, &a, conv, "c1", "{\"text\":\"one\"}", origin);
    op_result r2 = msg_send(&f, &a, conv, "c2", "\"two\"", origin);
    op_result r3 = msg_send(&f, &a, conv, "c3", "[3, 3.0 ,\"\\u00e9\"]", origin);
    CHECK_EQ_INT(r1.op.rc, ERR_OK);
    CHECK_EQ_INT(r1.op.seq, 1);
    CHECK_EQ_INT(r2.op.seq, 2);
    CHECK_EQ_INT(r3.op.seq, 3);
    CHECK(!r1.op.duplicate && !r2.op.duplicate && !r3.op.duplicate);
    CHECK(r1.op.ts <= r2.op.ts && r2.op.ts <= r3.op.ts);
    CHECK_EQ_INT(r1.thread, 0);
    op_settle(&f);
    CHECK_EQ_INT(fake_total(a0), 0);                        /* the sending session: its ack only */
    CHECK_EQ_INT(fake_count(a1, EV_MSG, false), 3);         /* the sender's other device */
    CHECK_EQ_INT(fake_count(b1, EV_MSG, false), 3);
    CHECK_EQ_INT(fake_total(c0), 0);
    for (int k = 0; k < 3; k++) CHECK_EQ_INT(fake_nth(b1, k).seq, (uint64_t)k + 1);
    fake_rec m = fake_nth(b1, 2);
    CHECK(m.json && strstr(m.json, "\"body\":[3, 3.0 ,\"\\u00e9\"]")); /* byte for byte */
    CHECK(m.json && strstr(m.json, "\"from\":\"alice\"") && strstr(m.json, "\"cmid\":\"c3\""));
    CHECK_EQ_INT(u64_of(m.json, strlen(m.json), "conv"), conv);

    /* The same cmid with another body is refused, nothing stored. */
    CHECK_EQ_INT(msg_send(&f, &a, conv, "c2", "\"two again\"", origin).op.rc, ERR_CMID_REUSED);
    /* A resend: the original seq and ts, and nothing fans out. */
    op_result dup = msg_send(&f, &a, conv, "c2", "\"two\"", origin);
    CHECK_EQ_INT(dup.op.rc, ERR_OK);
    CHECK(dup.op.duplicate);
    CHECK_EQ_INT(dup.op.seq, 2);
    CHECK_EQ_INT(dup.op.ts, r2.op.ts);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(b1, EV_MSG, false), 3);
    CHECK_EQ_INT(conv_of(&f, conv).last_seq, 3);
    /* A cmid is the sender's: Bob's "c2" is a new message. */
    op_result rb = msg_send(&f, &b, conv, "c2", "\"bob\"", b1->s.id);
    CHECK(!rb.op.duplicate);
    CHECK_EQ_INT(rb.op.seq, 4);
    CHECK_EQ_INT(rb.thread, 1);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(a0, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_count(b1, EV_MSG, false), 3);         /* not echoed to its origin */

    /* Not a member, no such conversation: refused, nothing stored or sent. */
    CHECK_EQ_INT(msg_send(&f, &c, conv, "x", "1", c0->s.id).op.rc, ERR_FORBIDDEN);
    CHECK_EQ_INT(msg_send(&f, &a, 777777, "x", "1", origin).op.rc, ERR_FORBIDDEN);
    CHECK_EQ_INT(msg_send(&f, &a, 0, "x", "1", origin).op.rc, ERR_FORBIDDEN);
    op_settle(&f);
    CHECK_EQ_INT(conv_of(&f, conv).last_seq, 4);
    CHECK_EQ_INT(fake_count(b1, EV_MSG, false), 3);
    CHECK_EQ_INT(fake_count(a1, EV_MSG, false), 4);
    fake_session *all[] = {a0, a1, b1, c0};
    for (int i = 0; i < 4; i++) {
        CHECK(!all[i]->wrong_thread && !all[i]->after_close);
        fake_remove(all[i]);
    }
    fx_stop(&f);
    for (int i = 0; i < 4; i++) free(all[i]);
}

TEST(concurrent_sends_get_distinct_seqs_in_order)
{
    fake_reset();
    fx f;
    fx_chat(&f, 2);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"), c = user_register(&f, "carol");
    fake_session *a0 = online(&f, &a, 0), *b1 = online(&f, &b, 1), *c1 = online(&f, &c, 1);
    const test_user *const members[] = {&b, &c};
    uint64_t conv = conv_group(&f, &a, "g", members, 2).op.conv;
    op_settle(&f);
    fake_reset();
    enum { N = 40 };
    int tags[N];
    const test_user *from[] = {&a, &b, &c};
    fake_session *origin[] = {a0, b1, c1};
    for (int i = 0; i < N; i++) {
        char cmid[16];
        snprintf(cmid, sizeof cmid, "m%d", i);
        tags[i] = op_submit(msg_op(&f, from[i % 3], conv, cmid, "0", origin[i % 3]->s.id), NULL);
        CHECK(tags[i] >= 0);
    }
    uint64_t last = 0;
    bool in_order = true;
    for (int i = 0; i < N; i++) {
        op_result r = op_wait(tags[i]);
        CHECK_EQ_INT(r.op.rc, ERR_OK);
        if (r.op.seq != last + 1) in_order = false;    /* submission order is seq order */
        last = r.op.seq;
    }
    CHECK(in_order);
    CHECK_EQ_INT(last, N);
    op_settle(&f);
    /* Each member got every message but its own, once, in seq order. */
    for (int k = 0; k < 3; k++) {
        fake_session *s = origin[k];
        int own = 0;
        for (int i = 0; i < N; i++) own += i % 3 == k;
        CHECK_EQ_INT(fake_count(s, EV_MSG, false), N - own);
        uint64_t prev = 0;
        bool ascending = true;
        for (int i = 0; i < N - own; i++) {
            fake_rec r = fake_nth(s, i);
            if (r.seq <= prev) ascending = false;
            prev = r.seq;
        }
        CHECK(ascending);
        fake_remove(s);
    }
    fx_stop(&f);
    free(a0); free(b1); free(c1);
}

/* ---- cursors ------------------------------------------------------------------------ */

static op_result cursor(fx *f, const test_user *u, uint64_t conv, uint64_t delivered, uint64_t read)
{
    chat_op *op = op_new(f, OP_CURSOR, 0);
    op_as(op, u);
    op->conv = conv;
    op->delivered = delivered;
    op->read = read;
    return op_do(op);
}

TEST(cursors_only_move_forward)
{
    fake_reset();
    fx f;
    fx_chat(&f, 2);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"), c = user_register(&f, "carol");
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    for (int i = 0; i < 3; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "c%d", i);
        msg_send(&f, &a, conv, cmid, "1", 0);
    }
    fake_session *sa = online(&f, &a, 0), *sb = online(&f, &b, 1);
    int rc;
    /* The sender has read what it sent. */
    store_member ma = member_of(&f, conv, a.uid, &rc);
    CHECK_EQ_INT(ma.read, 3);
    CHECK_EQ_INT(ma.delivered, 3);

    op_result r = cursor(&f, &b, conv, 0, 2);              /* read 2: delivered follows */
    CHECK_EQ_INT(r.op.rc, ERR_OK);
    CHECK(r.op.changed);
    CHECK_EQ_INT(r.op.read, 2);
    CHECK_EQ_INT(r.op.delivered, 2);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sa, EV_RECEIPT, false), 1);     /* every member hears of it */
    CHECK_EQ_INT(fake_count(sb, EV_RECEIPT, false), 1);
    fake_rec e = fake_last(sa, EV_RECEIPT);
    CHECK(e.json && str_is(e.json, strlen(e.json), "user", "bob"));
    CHECK_EQ_INT(u64_of(e.json, strlen(e.json), "read"), 2);

    r = cursor(&f, &b, conv, 1, 1);                         /* backwards: nothing moves */
    CHECK_EQ_INT(r.op.rc, ERR_OK);
    CHECK(!r.op.changed);
    CHECK_EQ_INT(r.op.read, 2);
    CHECK_EQ_INT(r.op.delivered, 2);
    r = cursor(&f, &b, conv, 3, 0);                         /* delivered alone */
    CHECK(r.op.changed);
    CHECK_EQ_INT(r.op.delivered, 3);
    CHECK_EQ_INT(r.op.read, 2);
    r = cursor(&f, &b, conv, 100, 100);                     /* past the end: refused */
    CHECK_EQ_INT(r.op.rc, ERR_INVALID);
    r = cursor(&f, &b, conv, 3, 3);                         /* read up to the end */
    CHECK_EQ_INT(r.op.rc, ERR_OK);
    CHECK(r.op.changed);
    CHECK_EQ_INT(r.op.read, 3);
    CHECK_EQ_INT(r.op.delivered, 3);
    r = cursor(&f, &b, conv, 3, 3);                         /* and then not changed */
    CHECK(!r.op.changed);
    op_settle(&f);
    CHECK_EQ_INT(fake_count(sa, EV_RECEIPT, false), 3);     /* one per change */
    store_member mb = member_of(&f, conv, b.uid, &rc);
    CHECK_EQ_INT(mb.read, 3);
    CHECK_EQ_INT(mb.delivered, 3);
    CHECK_EQ_INT(cursor(&f, &c, conv, 1, 1).op.rc, ERR_FORBIDDEN);   /* not a member */
    CHECK_EQ_INT(cursor(&f, &b, 5555, 1, 1).op.rc, ERR_FORBIDDEN);   /* no conversation */

    /* Receipts: per member, and the counts for one message. */
    char buf[1024];
    size_t n = receipts_json(&f, conv, a.uid, 2, buf, sizeof buf, &rc);
    CHECK_EQ_INT(rc, ERR_OK);
    CHECK_EQ_INT(u64_of(buf, n, "read"), 1);                /* bob (the sender is not counted) */
    CHECK_EQ_INT(u64_of(buf, n, "delivered"), 1);
    CHECK_EQ_INT(numbers_of(buf, n, "members", "read").n, 2);
    receipts_json(&f, conv, a.uid, 99, buf, sizeof buf, &rc);  /* no message there */
    CHECK_EQ_INT(rc, ERR_INVALID);
    receipts_json(&f, conv, c.uid, 0, buf, sizeof buf, &rc);
    CHECK_EQ_INT(rc, ERR_FORBIDDEN);
    fake_remove(sa); fake_remove(sb);
    fx_stop(&f);
    free(sa); free(sb);
}

/* ---- reads ---------------------------------------------------------------------------- */

static list history_seqs(fx *f, uint64_t uid, uint64_t conv, uint64_t after, uint64_t before, size_t limit,
                         bool *more)
{
    char buf[16384];
    int rc;
    size_t n = history_json(f, uid, conv, after, before, limit, buf, sizeof buf, &rc);
    list l = numbers_of(buf, n, "messages", "seq");
    json_obj o;
    const json_field *m = json_parse_object(buf, n, &o) == ERR_OK ? json_get(&o, "more") : NULL;
    *more = m && m->type == JSON_TRUE;
    if (rc < 0) l.n = -1;
    return l;
}

TEST(history_pages_both_ways)
{
    fx f;
    fx_chat(&f, 1);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob");
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    for (int i = 1; i <= 7; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "c%d", i);
        msg_send(&f, i % 2 ? &a : &b, conv, cmid, "{}", 0);
    }
    bool more;
    list l = history_seqs(&f, a.uid, conv, 0, 0, 3, &more);       /* forward from the start */
    CHECK_EQ_INT(l.n, 3);
    CHECK(l.num[0] == 1 && l.num[1] == 2 && l.num[2] == 3);
    CHECK(more);
    l = history_seqs(&f, a.uid, conv, 5, 0, 3, &more);
    CHECK_EQ_INT(l.n, 2);
    CHECK(l.num[0] == 6 && l.num[1] == 7);
    CHECK(!more);
    l = history_seqs(&f, a.uid, conv, 0, UINT64_MAX, 3, &more);   /* the latest page, ascending */
    CHECK_EQ_INT(l.n, 3);
    CHECK(l.num[0] == 5 && l.num[1] == 6 && l.num[2] == 7);
    CHECK(more);
    l = history_seqs(&f, a.uid, conv, 0, 5, 10, &more);           /* before 5 */
    CHECK_EQ_INT(l.n, 4);
    CHECK(l.num[0] == 1 && l.num[3] == 4);
    CHECK(!more);
    l = history_seqs(&f, a.uid, conv, 0, 1, 10, &more);           /* nothing before the first */
    CHECK_EQ_INT(l.n, 0);
    l = history_seqs(&f, a.uid, conv, 7, 0, 10, &more);           /* nothing after the last */
    CHECK_EQ_INT(l.n, 0);
    CHECK(!more);
    l = history_seqs(&f, a.uid, conv, 0, 0, 0, &more);            /* limit 0: the default (50) */
    CHECK_EQ_INT(l.n, 7);
    l = history_seqs(&f, a.uid, conv, 0, 0, 100000, &more);       /* an absurd limit is capped */
    CHECK_EQ_INT(l.n, 7);
    l = history_seqs(&f, a.uid, 424242, 0, 0, 10, &more);  /* no such conversation: refused */
    CHECK_EQ_INT(l.n, -1);
    test_user c = user_register(&f, "carol");
    l = history_seqs(&f, c.uid, conv, 0, 0, 10, &more);    /* not a member: refused */
    CHECK_EQ_INT(l.n, -1);
    char buf[4096];
    int rc;
    size_t n = history_json(&f, a.uid, conv, 0, 0, 1, buf, sizeof buf, &rc);
    CHECK(strstr(buf, "\"from\":\"alice\"") != NULL);
    CHECK(n > 0);
    fx_stop(&f);
}

TEST(inbox_lists_changes_since_a_cursor)
{
    fx f;
    fx_chat(&f, 1);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob"), c = user_register(&f, "carol");
    uint64_t ab = conv_direct(&f, &a, &b).op.conv;
    uint64_t ac = conv_direct(&f, &a, &c).op.conv;
    msg_send(&f, &a, ab, "1", "1", 0);
    msg_send(&f, &c, ac, "1", "1", 0);                      /* the most recent */
    char buf[8192];
    size_t n = inbox_json(&f, a.uid, 0, buf, sizeof buf);
    list ids = numbers_of(buf, n, "conversations", "id");
    CHECK_EQ_INT(ids.n, 2);
    CHECK_EQ_INT(ids.num[0], ac);                           /* most recent first */
    CHECK_EQ_INT(ids.num[1], ab);
    list unread = numbers_of(buf, n, "conversations", "unread");
    CHECK_EQ_INT(unread.num[0], 1);                          /* carol's message */
    CHECK_EQ_INT(unread.num[1], 0);                          /* her own */
    uint64_t cursor = u64_of(buf, n, "cursor");
    CHECK(cursor > 0 && cursor != UINT64_MAX);
    n = inbox_json(&f, a.uid, cursor, buf, sizeof buf);     /* nothing changed since */
    CHECK_EQ_INT(numbers_of(buf, n, "conversations", "id").n, 0);
    msg_send(&f, &b, ab, "2", "2", 0);
    n = inbox_json(&f, a.uid, cursor, buf, sizeof buf);
    ids = numbers_of(buf, n, "conversations", "id");
    CHECK_EQ_INT(ids.n, 1);
    CHECK_EQ_INT(ids.num[0], ab);
    CHECK(u64_of(buf, n, "cursor") > cursor);
    n = inbox_json(&f, b.uid, 0, buf, sizeof buf);
    CHECK_EQ_INT(numbers_of(buf, n, "conversations", "id").n, 1);
    n = inbox_json(&f, 999999, 0, buf, sizeof buf);          /* nobody: an empty inbox */
    CHECK(n > 0);
    CHECK_EQ_INT(numbers_of(buf, n, "conversations", "id").n, 0);
    /* Contacts: everyone sharing a conversation, once, not oneself. */
    audience *who = chat_contacts(f.ch, a.uid);
    CHECK(who && who->n == 2);
    if (who) CHECK((who->uids[0] == b.uid && who->uids[1] == c.uid) ||
                   (who->uids[0] == c.uid && who->uids[1] == b.uid));
    audience_unref(who);
    who = chat_contacts(f.ch, 999999);
    CHECK(who && who->n == 0);
    audience_unref(who);
    uint64_t uids2[2] = {b.uid, 999999};
    db_user us[2];
    CHECK_EQ_INT(db_users(f.ch->db, uids2, 2, us), ERR_OK);
    CHECK(us[0].id == b.uid && strcmp(us[0].name, "bob") == 0);
    CHECK(us[1].id == 0);
    fx_stop(&f);
}

/* ---- bad input and faults --------------------------------------------------------------- */

TEST(an_unknown_operation_is_refused)
{
    fx f;
    fx_chat(&f, 1);
    chat_op *op = op_new(&f, OP_SEND, 0);
    op->kind = 200;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_INVALID);
    op = op_new(&f, OP_LAST_SEEN, 0);                       /* of a user that does not exist */
    op->who.uid = 31337;
    op->ts = chat_now_ms();
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    /* Last seen only moves forward. */
    test_user a = user_register(&f, "alice");
    op = op_new(&f, OP_LAST_SEEN, 0);
    op->who.uid = a.uid;
    op->ts = 5000;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    op = op_new(&f, OP_LAST_SEEN, 0);
    op->who.uid = a.uid;
    op->ts = 4000;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    store_txn *txn;
    store_user u;
    CHECK_EQ_INT((chat_settle(f.ch, 0), store_begin(db_lmdb_store(f.ch->db), false, &txn)), ERR_OK);
    CHECK_EQ_INT(store_user_get(txn, a.uid, &u), ERR_OK);
    store_abort(txn);
    CHECK_EQ_INT(u.last_seen, 5000);
    fx_stop(&f);
}

/* The store (LMDB) is full: what was acknowledged is in the log and was
 * delivered; new messages are refused with ERR_FULL instead of being
 * acked into a log the store cannot take; a start with a bigger map
 * applies every acknowledged message. */
TEST(a_full_store_refuses_new_messages_and_keeps_the_acked)
{
    fake_reset();
    fx f;
    fx_config(&f, 2);
    f.cfg.store_map_size = 1u << 20;  /* the fault: room for a few big messages only */
    f.cfg.apply_delay_ms = 0;
    fx_start(&f, true);
    test_user a = user_register(&f, "alice"), b = user_register(&f, "bob");
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    fake_session *sb = online(&f, &b, 1);
    static char big[120 * 1024];
    memset(big, 'x', sizeof big);
    big[0] = '"';
    big[sizeof big - 2] = '"';
    big[sizeof big - 1] = 0;
    int stored = 0, rc = ERR_OK;
    for (int i = 0; i < 400 && rc == ERR_OK; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "b%d", i);
        op_result r = msg_send(&f, &a, conv, cmid, big, 0);
        rc = r.op.rc;
        if (rc == ERR_OK) {
            stored++;
            CHECK_EQ_INT(r.op.seq, (uint64_t)stored);
        }
    }
    CHECK_EQ_INT(rc, ERR_FULL);
    CHECK(stored > 0);
    op_settle(&f);
    /* Every acknowledged message was delivered; none of the refused. */
    CHECK_EQ_INT(fake_count(sb, EV_MSG, false), stored);
    fake_remove(sb);
    free(sb);
    /* Stop (what the store cannot take stays in the log), keep the data,
     * and start on it with room: the log's tail is applied. */
    char keep[sizeof f.data_dir + 8];
    snprintf(keep, sizeof keep, "%s.keep", f.data_dir);
    fx_stop_threads(&f);
    chat_close(f.ch);
    f.ch = NULL;
    CHECK_EQ_INT(rename(f.data_dir, keep), 0);
    fx_stop(&f);
    store *st;
    CHECK_EQ_INT(store_open(&st, keep, 64u << 20), ERR_OK);
    char log_dir[sizeof keep + 8];
    snprintf(log_dir, sizeof log_dir, "%s/log", keep);
    writer_options wo = {100, 64, 100, log_dir, 0, 0, NULL, 0};
    writer *w;
    CHECK_EQ_INT(writer_start_log(&w, st, &wo, NULL, NULL, NULL), ERR_OK);
    writer_stop(w);
    store_txn *txn;
    store_conv c = {0};
    CHECK_EQ_INT(store_begin(st, false, &txn), ERR_OK);
    CHECK_EQ_INT(store_conv_get(txn, conv, &c), ERR_OK);
    store_abort(txn);
    CHECK_EQ_INT(c.last_seq, (uint64_t)stored);
    store_close(st);
    fx_rmdir(keep);
}

int main(void)
{
    RUN(register_and_login);
    RUN(bad_tokens_do_not_authenticate);
    RUN(expired_tokens_do_not_authenticate);
    RUN(logout_revokes_the_token_and_closes_its_sessions);
    RUN(direct_conversations_are_made_once);
    RUN(groups_add_and_remove);
    RUN(membership_events_come_with_the_op_not_from_store_reads);
    RUN(send_orders_by_seq_and_cmid_is_idempotent);
    RUN(concurrent_sends_get_distinct_seqs_in_order);
    RUN(cursors_only_move_forward);
    RUN(history_pages_both_ways);
    RUN(inbox_lists_changes_since_a_cursor);
    RUN(an_unknown_operation_is_refused);
    RUN(a_full_store_refuses_new_messages_and_keeps_the_acked);
    fake_reset();
    return test_summary("chat");
}
