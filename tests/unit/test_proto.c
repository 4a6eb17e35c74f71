/* Unit tests of the WebSocket protocol (src/chat/proto.c) through
 * conn_ws_ops on real conns: loopback listeners on two loops of a server
 * without listeners (fixture.h), the chat service on a temporary LMDB
 * store, a hand-written client (wire.h). proto's handlers take a conn *,
 * so they are driven by frames on a real connection rather than a fake
 * one; accounts and conversations are made through chat operations
 * (chat_ops.h). Frames with bad input are answered with error frames and
 * the connection stays usable. */
#include "test.h"

#include "chat_ops.h"
#include "fixture.h"
#include "wire.h"

static fx f;
static int port0, port1;    /* listeners on thread 0 and thread 1 */

static bool type_is(const char *frame, const char *type)
{
    json_obj o;
    char v[32];
    return frame && json_parse_object(frame, strlen(frame), &o) == ERR_OK &&
           json_get_str(&o, "type", v, sizeof v) >= 0 && strcmp(v, type) == 0;
}

static bool field_is(const char *frame, const char *key, const char *want)
{
    json_obj o;
    char v[128];
    return frame && json_parse_object(frame, strlen(frame), &o) == ERR_OK &&
           json_get_str(&o, key, v, sizeof v) >= 0 && strcmp(v, want) == 0;
}

static uint64_t num_of(const char *frame, const char *key)
{
    json_obj o;
    uint64_t v = UINT64_MAX;
    if (!frame || json_parse_object(frame, strlen(frame), &o) < 0) return UINT64_MAX;
    json_get_u64(&o, key, &v);
    return v;
}

/* The next frame (presence skipped) must be of that type: returns it
 * (the caller frees), or NULL after reporting what came instead. */
static char *expect(wire *w, const char *type)
{
    char *p = wire_next(w);
    if (!type_is(p, type)) {
        fprintf(stderr, "  expected %s, got %s (close %u)\n", type, p ? p : "nothing", w->close_code);
        free(p);
        return NULL;
    }
    return p;
}

/* Nothing but presence arrived before: a ping is answered next. */
static bool quiet(wire *w)
{
    wire_text(w, "{\"type\":\"ping\"}");
    char *p = expect(w, "pong");
    free(p);
    return p != NULL;
}

/* The next presence frame of user with that online value (other frames
 * are skipped: a new session is first told its contacts' state). */
static char *next_presence(wire *w, const char *user, bool online)
{
    for (int i = 0; i < 32; i++) {
        uint8_t op;
        char *p;
        size_t n;
        if (!wire_frame(w, &op, &p, &n)) return NULL;
        if (op == WS_OP_TEXT && type_is(p, "presence") && field_is(p, "user", user) &&
            strstr(p, online ? "\"online\":true" : "\"online\":false"))
            return p;
        free(p);
        if (op == WS_OP_CLOSE) return NULL;
    }
    return NULL;
}

/* A logged-in connection: the 101 and the hello. */
static wire *connect_as(int port, const test_user *u)
{
    wire_resp r;
    wire *w = wire_ws(port, u->token, NULL, &r);
    if (!w) fprintf(stderr, "  upgrade: %d %s\n", r.status, r.body ? r.body : "");
    wire_resp_free(&r);
    if (!w) return NULL;
    char *hello = expect(w, "hello");
    if (!hello || !field_is(hello, "user", u->name)) { free(hello); wire_close(w); return NULL; }
    free(hello);
    return w;
}

/* ---- the upgrade ------------------------------------------------------------ */

TEST(upgrade_needs_a_good_token)
{
    test_user u = user_register(&f, "ursula");
    wire_resp r;
    CHECK(wire_ws(port0, NULL, NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    CHECK(wire_ws(port0, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    CHECK(wire_header(&r, "WWW-Authenticate") != NULL);
    wire_resp_free(&r);
    CHECK(wire_ws(port0, "short", NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    /* Bearer, then the hello with the user and device. */
    wire *w = wire_ws(port0, u.token, NULL, &r);
    CHECK(w != NULL);
    CHECK(wire_header(&r, "Sec-WebSocket-Protocol") &&
          strcmp(wire_header(&r, "Sec-WebSocket-Protocol"), "parley.v1.json") == 0);
    wire_resp_free(&r);
    char *hello = w ? expect(w, "hello") : NULL;
    CHECK(field_is(hello, "user", "ursula"));
    CHECK_EQ_INT(num_of(hello, "device"), 1);
    CHECK(num_of(hello, "ts") != UINT64_MAX);
    free(hello);
    wire_close(w);
    /* The token in the query (browsers cannot set headers on a WebSocket). */
    wire *q = wire_connect(port0);
    char path[160];
    snprintf(path, sizeof path, "/v1/ws?token=%s", u.token);
    const char *h = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    CHECK(wire_http(q, "GET", path, h, NULL, &r));
    CHECK_EQ_INT(r.status, 101);
    wire_resp_free(&r);
    hello = expect(q, "hello");
    CHECK(hello != NULL);
    free(hello);
    wire_close(q);
}

TEST(too_many_connections_per_user)
{
    test_user u = user_register(&f, "vera");
    wire *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = connect_as(i % 2 ? port1 : port0, &u);     /* across both threads */
        CHECK(w[i] != NULL);
    }
    wire_resp r;
    CHECK(wire_ws(port0, u.token, NULL, &r) == NULL);      /* max_user_conns is 3 here */
    CHECK_EQ_INT(r.status, 429);
    CHECK(strstr(r.body, "too_many_connections") != NULL);
    CHECK(wire_header(&r, "Retry-After") != NULL);
    wire_resp_free(&r);
    for (int i = 0; i < 3; i++) wire_close(w[i]);
}

/* ---- frames --------------------------------------------------------------------- */

TEST(ping_echo_and_bad_frames)
{
    test_user u = user_register(&f, "walt");
    wire *w = connect_as(port0, &u);
    CHECK(w != NULL);
    if (!w) return;
    wire_text(w, "{\"type\":\"ping\",\"id\":1}");
    char *p = expect(w, "pong");
    CHECK(p && strcmp(p, "{\"type\":\"pong\"}") == 0);
    free(p);
    const char *echo = "{\"type\":\"echo\",\"x\":[1, 2,{\"y\":\"\\u00e9\"}]}";
    wire_text(w, echo);
    p = expect(w, "echo");
    CHECK(p && strcmp(p, echo) == 0);                       /* byte for byte */
    free(p);
    /* Bad input: an error frame each, with the frame's id as ref. */
    struct { const char *frame, *code, *ref; } bad[] = {
        {"not json", "bad_json", NULL},
        {"[1,2]", "bad_json", NULL},
        {"{\"type\":\"ping\"", "bad_json", NULL},
        {"{\"id\":\"r1\"}", "bad_request", "r1"},
        {"{\"type\":7,\"id\":\"r2\"}", "bad_request", "r2"},
        {"{\"type\":\"fly\",\"id\":\"r3\"}", "unknown_type", "r3"},
        {"{\"type\":\"send\",\"id\":\"r4\"}", "bad_request", "r4"},
        {"{\"type\":\"send\",\"conv\":0,\"cmid\":\"c\",\"body\":1,\"id\":\"r5\"}", "bad_request", "r5"},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"\",\"body\":1,\"id\":\"r6\"}", "bad_request", "r6"},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"c7\",\"id\":\"r7\"}", "bad_request", "c7"},
        {"{\"type\":\"sync\",\"conv\":1,\"limit\":0,\"id\":\"r8\"}", "bad_request", "r8"},
        {"{\"type\":\"sync\",\"conv\":1,\"after\":1,\"before\":5,\"id\":\"r9\"}", "bad_request", "r9"},
        {"{\"type\":\"read\",\"conv\":1,\"id\":\"r10\"}", "bad_request", "r10"},
        {"{\"type\":\"inbox\",\"changed_since\":\"x\",\"id\":\"r11\"}", "bad_request", "r11"},
        {"{\"type\":\"typing\",\"id\":\"r12\"}", "bad_request", "r12"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        wire_text(w, bad[i].frame);
        p = expect(w, "error");
        bool ok = p && field_is(p, "code", bad[i].code) &&
                  (bad[i].ref ? field_is(p, "ref", bad[i].ref) : !strstr(p, "\"ref\""));
        if (!ok) fprintf(stderr, "  %s -> %s\n", bad[i].frame, p ? p : "nothing");
        CHECK(ok);
        CHECK(p && strstr(p, "\"message\":") != NULL);
        free(p);
    }
    /* A body over --max-text. */
    static char big[20000];
    int n = snprintf(big, sizeof big, "{\"type\":\"send\",\"conv\":1,\"cmid\":\"big\",\"body\":\"");
    memset(big + n, 'x', f.cfg.max_text);
    snprintf(big + n + f.cfg.max_text, sizeof big - (size_t)n - f.cfg.max_text, "\"}");
    wire_text(w, big);
    p = expect(w, "error");
    CHECK(field_is(p, "code", "too_large") && field_is(p, "ref", "big"));
    free(p);
    CHECK(quiet(w));                                        /* still open and answering */
    /* A binary message is not part of the protocol: 1003. */
    wire_send(w, WS_OP_BINARY, true, "\x01\x02", 2);
    CHECK(wire_closed(w));
    CHECK_EQ_INT(w->close_code, WS_CLOSE_UNSUPPORTED);
    wire_close(w);
}

/* What thread 0 holds for one user's WebSocket (read on its loop). */
typedef struct held {
    uint64_t uid;
    int conns;               /* open WebSockets whose session is uid's */
    bool more;               /* ... with a conn_more */
    bool msg;                /* ... assembling a fragmented message */
} held;

static void look(srv_thread *t, void *arg)
{
    held *h = arg;
    h->conns = 0;
    h->more = h->msg = false;
    uint32_t pos = 0;
    for (conn *c; (c = srv_conn_next(t, &pos));) {
        if (c->state != CONN_WS || ((session *)conn_user(c))->uid != h->uid) continue;
        h->conns++;
        h->more = conn_more_of(c) != NULL;
        h->msg = h->more && conn_more_of(c)->msg != NULL;
    }
}

/* A WebSocket pong frame came back (text frames before it are skipped). */
static bool ponged(wire *w)
{
    for (int i = 0; i < 16; i++) {
        uint8_t op;
        char *p;
        size_t n;
        if (!wire_frame(w, &op, &p, &n)) return false;
        free(p);
        if (op == WS_OP_PONG) return true;
        if (op == WS_OP_CLOSE) return false;
    }
    return false;
}

TEST(an_idle_websocket_is_its_conn_alone)
{
    /* The session lives in the conn; the rare state (a fragmented message
     * here) exists only while it is used. */
    test_user u = user_register(&f, "ida");
    wire *w = connect_as(port0, &u);
    CHECK(w != NULL);
    if (!w) return;
    CHECK(quiet(w));
    held h = {.uid = u.uid};
    fx_run(&f, 0, look, &h);
    CHECK_EQ_INT(h.conns, 1);
    CHECK(!h.more);
    /* Half a message: kept while it is incomplete (a ping between the
     * fragments proves the first one has been read). */
    wire_send(w, WS_OP_TEXT, false, "{\"type\":", 8);
    wire_send(w, WS_OP_PING, true, "p", 1);
    CHECK(ponged(w));
    fx_run(&f, 0, look, &h);
    CHECK_EQ_INT(h.conns, 1);
    CHECK(h.more && h.msg);
    /* Its end: the message is answered and the state goes. */
    wire_send(w, WS_OP_CONT, true, "\"ping\"}", 7);
    char *p = expect(w, "pong");
    CHECK(p != NULL);
    free(p);
    fx_run(&f, 0, look, &h);
    CHECK_EQ_INT(h.conns, 1);
    CHECK(!h.more);
    /* A continuation with nothing to continue still fails (1002). */
    wire_send(w, WS_OP_CONT, true, "x", 1);
    CHECK(wire_closed(w));
    CHECK_EQ_INT(w->close_code, WS_CLOSE_PROTOCOL);
    wire_close(w);
}

TEST(send_ack_and_fan_out)
{
    test_user a = user_register(&f, "anna"), b = user_register(&f, "bert"), c = user_register(&f, "cleo");
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    wire *a0 = connect_as(port0, &a), *a1 = connect_as(port1, &a), *b1 = connect_as(port1, &b);
    wire *c0 = connect_as(port0, &c);
    CHECK(a0 && a1 && b1 && c0);
    if (!a0 || !a1 || !b1 || !c0) return;
    char frame[256];
    snprintf(frame, sizeof frame,
             "{\"type\":\"send\",\"conv\":%llu,\"cmid\":\"c1\",\"body\":{\"t\":\"hi\" }}",
             (unsigned long long)conv);
    wire_text(a0, frame);
    char *ack = expect(a0, "ack");
    CHECK(field_is(ack, "cmid", "c1"));
    CHECK_EQ_INT(num_of(ack, "conv"), conv);
    CHECK_EQ_INT(num_of(ack, "seq"), 1);
    CHECK(num_of(ack, "ts") != UINT64_MAX);
    CHECK(ack && !strstr(ack, "duplicate"));
    char *m = expect(b1, "msg");
    CHECK(m && strstr(m, "\"body\":{\"t\":\"hi\" }"));       /* the client's bytes */
    CHECK(field_is(m, "from", "anna") && field_is(m, "cmid", "c1"));
    CHECK_EQ_INT(num_of(m, "seq"), 1);
    CHECK_EQ_INT(num_of(m, "ts"), num_of(ack, "ts"));
    free(m);
    m = expect(a1, "msg");                                  /* the sender's other device */
    CHECK_EQ_INT(num_of(m, "seq"), 1);
    free(m);
    free(ack);
    CHECK(quiet(a0));                                       /* not echoed to the sender */
    CHECK(quiet(c0));                                       /* not a member */

    /* A resend is acked as a duplicate and not sent again: Bob's next
     * message is the next one. */
    wire_text(a0, frame);
    ack = expect(a0, "ack");
    CHECK(ack && strstr(ack, "\"duplicate\":true"));
    CHECK_EQ_INT(num_of(ack, "seq"), 1);
    free(ack);
    snprintf(frame, sizeof frame, "{\"type\":\"send\",\"conv\":%llu,\"cmid\":\"c2\",\"body\":2}",
             (unsigned long long)conv);
    wire_text(a0, frame);
    ack = expect(a0, "ack");
    CHECK_EQ_INT(num_of(ack, "seq"), 2);
    free(ack);
    m = expect(b1, "msg");
    CHECK_EQ_INT(num_of(m, "seq"), 2);
    free(m);
    m = expect(a1, "msg");
    CHECK_EQ_INT(num_of(m, "seq"), 2);
    free(m);

    /* Not a member: an error with the cmid as ref, nothing sent. */
    wire_text(c0, frame);
    char *e = expect(c0, "error");
    CHECK(field_is(e, "code", "forbidden") && field_is(e, "ref", "c2"));
    free(e);
    CHECK(quiet(b1));
    wire_close(a0); wire_close(a1); wire_close(b1); wire_close(c0);
}

TEST(sync_inbox_and_receipts)
{
    test_user a = user_register(&f, "dina"), b = user_register(&f, "egon"), c = user_register(&f, "fina");
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    for (int i = 1; i <= 5; i++) {
        char cmid[8];
        snprintf(cmid, sizeof cmid, "m%d", i);
        msg_send(&f, &a, conv, cmid, "\"x\"", 0);
    }
    wire *a0 = connect_as(port0, &a), *b1 = connect_as(port1, &b), *c0 = connect_as(port0, &c);
    CHECK(a0 && b1 && c0);
    if (!a0 || !b1 || !c0) return;
    char frame[256];
    snprintf(frame, sizeof frame, "{\"type\":\"sync\",\"conv\":%llu,\"after\":1,\"limit\":2,\"id\":\"s1\"}",
             (unsigned long long)conv);
    wire_text(b1, frame);
    char *h = expect(b1, "history");
    CHECK(field_is(h, "id", "s1"));
    CHECK_EQ_INT(num_of(h, "conv"), conv);
    CHECK(h && strstr(h, "\"seq\":2,") && strstr(h, "\"seq\":3,") && !strstr(h, "\"seq\":4,"));
    CHECK(h && strstr(h, "\"more\":true"));
    free(h);
    snprintf(frame, sizeof frame, "{\"type\":\"sync\",\"conv\":%llu}", (unsigned long long)conv);
    wire_text(b1, frame);                                   /* the latest page */
    h = expect(b1, "history");
    CHECK(h && strstr(h, "\"seq\":1,") && strstr(h, "\"seq\":5,") && strstr(h, "\"more\":false"));
    CHECK(h && !strstr(h, "\"id\""));
    free(h);
    snprintf(frame, sizeof frame, "{\"type\":\"sync\",\"conv\":%llu,\"id\":9}", (unsigned long long)conv);
    wire_text(c0, frame);
    char *e = expect(c0, "error");
    CHECK(field_is(e, "code", "forbidden"));
    CHECK_EQ_INT(num_of(e, "ref"), 9);                      /* a number ref stays a number */
    free(e);

    wire_text(b1, "{\"type\":\"inbox\",\"id\":\"i1\"}");
    char *in = expect(b1, "inbox");
    CHECK(field_is(in, "id", "i1"));
    CHECK(in && strstr(in, "\"inbox\":{\"conversations\":[{") && strstr(in, "\"unread\":5"));
    free(in);
    wire_text(c0, "{\"type\":\"inbox\",\"changed_since\":0}");
    in = expect(c0, "inbox");
    CHECK(in && strstr(in, "\"conversations\":[]"));
    free(in);

    /* read: no answer to the reader when it works, a receipt to everyone. */
    snprintf(frame, sizeof frame, "{\"type\":\"read\",\"conv\":%llu,\"seq\":3}", (unsigned long long)conv);
    wire_text(b1, frame);
    char *rc = expect(a0, "receipt");
    CHECK(field_is(rc, "user", "egon"));
    CHECK_EQ_INT(num_of(rc, "read"), 3);
    CHECK_EQ_INT(num_of(rc, "delivered"), 3);
    free(rc);
    rc = expect(b1, "receipt");
    CHECK_EQ_INT(num_of(rc, "read"), 3);
    free(rc);
    snprintf(frame, sizeof frame, "{\"type\":\"delivered\",\"conv\":%llu,\"seq\":2}", (unsigned long long)conv);
    wire_text(b1, frame);                                   /* backwards: no receipt */
    CHECK(quiet(b1));
    snprintf(frame, sizeof frame, "{\"type\":\"delivered\",\"conv\":%llu,\"seq\":5}", (unsigned long long)conv);
    wire_text(b1, frame);
    rc = expect(a0, "receipt");
    CHECK_EQ_INT(num_of(rc, "delivered"), 5);
    CHECK_EQ_INT(num_of(rc, "read"), 3);
    free(rc);
    snprintf(frame, sizeof frame, "{\"type\":\"read\",\"conv\":%llu,\"seq\":1,\"id\":\"x\"}",
             (unsigned long long)conv);
    wire_text(c0, frame);
    e = expect(c0, "error");
    CHECK(field_is(e, "code", "forbidden") && field_is(e, "ref", "x"));
    free(e);
    wire_close(a0); wire_close(b1); wire_close(c0);
}

TEST(typing_and_presence)
{
    test_user a = user_register(&f, "gabi"), b = user_register(&f, "hans"), c = user_register(&f, "iris");
    uint64_t conv = conv_direct(&f, &a, &b).op.conv;
    wire *a0 = connect_as(port0, &a);
    CHECK(a0 != NULL);
    if (!a0) return;
    /* A new session is told its contacts' state. */
    char *p = next_presence(a0, "hans", false);
    CHECK(p != NULL);
    free(p);
    /* Hans comes online: Gabi (a contact) is told, lossy lane. */
    wire *b1 = connect_as(port1, &b);
    CHECK(b1 != NULL);
    if (!b1) { wire_close(a0); return; }
    p = next_presence(a0, "hans", true);
    CHECK(p && num_of(p, "last_seen") != UINT64_MAX);
    free(p);
    char frame[160];
    snprintf(frame, sizeof frame, "{\"type\":\"typing\",\"conv\":%llu}", (unsigned long long)conv);
    wire_text(b1, frame);
    char *t = expect(a0, "typing");
    CHECK(field_is(t, "user", "hans"));
    CHECK_EQ_INT(num_of(t, "conv"), conv);
    free(t);
    CHECK(quiet(b1));                                       /* not to the typist */
    wire *c0 = connect_as(port0, &c);
    CHECK(c0 != NULL);
    if (c0) {
        wire_text(c0, frame);                               /* not a member */
        char *e = expect(c0, "error");
        CHECK(field_is(e, "code", "forbidden"));
        free(e);
        wire_close(c0);
    }
    /* Hans leaves: offline. */
    wire_close(b1);
    p = next_presence(a0, "hans", false);
    CHECK(p != NULL);
    free(p);
    wire_close(a0);
}

TEST(logout_closes_the_sessions_of_the_token)
{
    test_user a = user_register(&f, "jorg");
    wire *w0 = connect_as(port0, &a), *w1 = connect_as(port1, &a);
    CHECK(w0 && w1);
    if (!w0 || !w1) return;
    chat_ident id;
    CHECK_EQ_INT(chat_authenticate(f.ch, a.token, strlen(a.token), &id), ERR_OK);
    chat_op *op = op_new(&f, OP_LOGOUT, 0);
    op->who = id;
    CHECK_EQ_INT(op_do(op).op.rc, ERR_OK);
    CHECK(wire_closed(w0));
    CHECK_EQ_INT(w0->close_code, WS_CLOSE_POLICY);
    CHECK(strcmp(w0->close_reason, "token revoked") == 0);
    CHECK(wire_closed(w1));
    CHECK_EQ_INT(w1->close_code, WS_CLOSE_POLICY);
    wire_close(w0);
    wire_close(w1);
    wire_resp r;
    CHECK(wire_ws(port0, a.token, NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
}

TEST(refusals_by_the_rate_limits)
{
    fx g;
    fx_config(&g, 1);
    g.cfg.rate_frames = 1;       /* burst 5 */
    g.cfg.rate_msgs = 1;         /* burst 4 */
    fx_start(&g, true);
    int p = fx_listen(&g, 0);
    test_user a = user_register(&g, "kurt"), b = user_register(&g, "lara");
    uint64_t conv = conv_direct(&g, &a, &b).op.conv;
    wire *w = connect_as(p, &a);
    CHECK(w != NULL);
    if (!w) { fx_stop(&g); return; }
    /* Frames over the frame rate: an error with the frame's ref. */
    for (int i = 0; i < 12; i++) {
        char frame[64];
        snprintf(frame, sizeof frame, "{\"type\":\"ping\",\"id\":\"p%d\"}", i);
        wire_text(w, frame);
    }
    int pongs = 0, limited = 0;
    for (int i = 0; i < 12; i++) {
        char *fr = wire_next(w);
        if (type_is(fr, "pong")) pongs++;
        else if (type_is(fr, "error") && field_is(fr, "code", "rate_limited") &&
                 num_of(fr, "retry_after_ms") != UINT64_MAX && strstr(fr, "\"ref\":\"p"))
            limited++;
        free(fr);
    }
    CHECK(pongs >= 5);
    CHECK(limited >= 1);
    CHECK_EQ_INT(pongs + limited, 12);                      /* every frame answered */
    wire_close(w);
    fx_stop(&g);

    /* Sends over the per-connection send rate: rate_limited with the cmid. */
    fx_config(&g, 1);
    g.cfg.rate_msgs = 1;
    fx_start(&g, true);
    p = fx_listen(&g, 0);
    a = user_register(&g, "kurt");
    b = user_register(&g, "lara");
    conv = conv_direct(&g, &a, &b).op.conv;
    w = connect_as(p, &a);
    CHECK(w != NULL);
    if (!w) { fx_stop(&g); return; }
    for (int i = 0; i < 10; i++) {
        char frame[128];
        snprintf(frame, sizeof frame, "{\"type\":\"send\",\"conv\":%llu,\"cmid\":\"s%d\",\"body\":1}",
                 (unsigned long long)conv, i);
        wire_text(w, frame);
    }
    int acks = 0;
    limited = 0;
    for (int i = 0; i < 10; i++) {
        char *fr = wire_next(w);
        if (type_is(fr, "ack")) acks++;
        else if (type_is(fr, "error") && field_is(fr, "code", "rate_limited") && strstr(fr, "\"ref\":\"s"))
            limited++;
        free(fr);
    }
    CHECK(acks >= 4);
    CHECK(limited >= 1);
    CHECK_EQ_INT(acks + limited, 10);
    wire_close(w);
    fx_stop(&g);
}

int main(void)
{
    fx_config(&f, 2);
    f.cfg.max_user_conns = 3;
    f.cfg.rate_handshakes = 0;   /* every client here is 127.0.0.1 */
    fx_start(&f, true);
    port0 = fx_listen(&f, 0);
    port1 = fx_listen(&f, 1);
    RUN(upgrade_needs_a_good_token);
    RUN(too_many_connections_per_user);
    RUN(ping_echo_and_bad_frames);
    RUN(an_idle_websocket_is_its_conn_alone);
    RUN(send_ack_and_fan_out);
    RUN(sync_inbox_and_receipts);
    RUN(typing_and_presence);
    RUN(logout_closes_the_sessions_of_the_token);
    RUN(refusals_by_the_rate_limits);
    fx_stop(&f);
    return test_summary("proto");
}
