/* libparley's client (include/parley.h) without a server: argument errors,
 * the allocator, and the live connection driven by parley_run() and by
 * libuv against a scripted peer in this process, built from the server's
 * own codecs (http.h, ws.h). Time and randomness are injected, so backoff
 * delays are exact; everything is single-threaded (but the peer of the
 * blocking REST calls, one thread per answer) and every wait bounded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "client_backoff.h"
#include "codec/http.h"
#include "codec/json.h"
#include "parley.h"
#include "test.h"
#include "codec/ws.h"

/* ---- injected clock, random source, counting allocator ------------------------ */

static uint64_t fake_now = 1000000;
static uint64_t clock_fn(void *ctx) { (void)ctx; return fake_now; }

static uint64_t rnd_const;
static bool rnd_fixed;
static uint64_t rnd_fn(void *ctx) { (void)ctx; return rnd_fixed ? rnd_const : test_rand(); }

static long live, allocs, fail_after = -1;
static void *c_malloc(void *ctx, size_t n)
{
    (void)ctx;
    if (fail_after >= 0 && allocs >= fail_after) return NULL;
    void *p = malloc(n);
    if (p) { live++; allocs++; }
    return p;
}
static void *c_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    if (fail_after >= 0 && allocs >= fail_after) return NULL;
    void *q = realloc(p, n);
    if (q && !p) { live++; allocs++; }
    return q;
}
static void c_free(void *ctx, void *p) { (void)ctx; if (p) { live--; free(p); } }
static const parley_allocator counting = {c_malloc, c_realloc, c_free, NULL};

/* ---- what the callbacks saw -------------------------------------------------------- */

typedef struct seen {
    int states[64];
    int state_errs[64];
    uint64_t delays[64];
    int nstates;
    uint64_t msgs[256];
    char texts[256][32];
    int nmsgs;
    char acks[64][PARLEY_CMID_MAX];
    bool ack_dup[64];
    uint64_t ack_seq[64];
    int nacks;
    char errs[16][48];
    char err_cmid[16][PARLEY_CMID_MAX];
    int nerrs;
    int ntyping, nreceipts, npresence;
    int nresync;
    char resync_reason[64];
} seen;

static void on_state(parley_client *c, parley_state s, int err, uint64_t delay, void *ud)
{
    seen *x = ud;
    if (x->nstates < 64) {
        x->states[x->nstates] = s;
        x->state_errs[x->nstates] = err;
        x->delays[x->nstates++] = delay;
    }
}
static void on_message(parley_client *c, const parley_message *m, void *ud)
{
    seen *x = ud;
    if (x->nmsgs < 256) {
        snprintf(x->texts[x->nmsgs], 32, "%s", m->text ? m->text : m->body);
        x->msgs[x->nmsgs++] = m->seq;
    }
}
static void on_ack(parley_client *c, const parley_ack *a, void *ud)
{
    seen *x = ud;
    if (x->nacks < 64) {
        snprintf(x->acks[x->nacks], PARLEY_CMID_MAX, "%s", a->cmid);
        x->ack_dup[x->nacks] = a->duplicate;
        x->ack_seq[x->nacks++] = a->seq;
    }
}
static void on_error(parley_client *c, const parley_error *e, void *ud)
{
    seen *x = ud;
    if (x->nerrs < 16) {
        snprintf(x->errs[x->nerrs], 48, "%s", e->code);
        snprintf(x->err_cmid[x->nerrs++], PARLEY_CMID_MAX, "%s", e->cmid);
    }
}
static void on_typing(parley_client *c, uint64_t conv, const char *user, void *ud) { ((seen *)ud)->ntyping++; }
static void on_receipt(parley_client *c, const parley_receipt *r, void *ud) { ((seen *)ud)->nreceipts++; }
static void on_presence(parley_client *c, const parley_presence *p, void *ud) { ((seen *)ud)->npresence++; }

static void on_resync(parley_client *c, const char *reason, void *ud)
{
    seen *x = ud;
    x->nresync++;
    snprintf(x->resync_reason, sizeof x->resync_reason, "%s", reason);
}

static const parley_callbacks callbacks = {on_state, on_message, on_ack, on_receipt, on_presence,
                                           on_typing, NULL, on_error, on_resync};

static parley_client *new_client_at(const char *url, seen *x, bool fake_clock)
{
    parley_options o;
    parley_options_init(&o);
    o.server = url;
    o.token = "tok-123";
    o.allocator = &counting;
    o.callbacks = &callbacks;
    o.userdata = x;
    o.random = rnd_fn;
    if (fake_clock) o.clock_ms = clock_fn;
    parley_client *c = NULL;
    int rc = parley_new(&o, &c);
    CHECK_EQ_INT(rc, PARLEY_OK);
    return c;
}

static parley_client *new_client(int port, seen *x, bool fake_clock)
{
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    return new_client_at(url, x, fake_clock);
}

/* A loopback port nobody listens on (at the time of asking). */
static int closed_port(void);

/* ---- the scripted peer ------------------------------------------------------------ */

typedef struct peer {
    int ls, port, fd;
    uint8_t buf[1 << 17];
    size_t len;
    parley_client *c;   /* driven while we wait */
    uv_loop_t *loop;    /* libuv mode */
} peer;

static void peer_listen(peer *p)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(p->ls, (struct sockaddr *)&a, sizeof a);
    listen(p->ls, 8);
    socklen_t al = sizeof a;
    getsockname(p->ls, (struct sockaddr *)&a, &al);
    p->port = ntohs(a.sin_port);
}

/* Lets the client make progress for a moment. */
static void drive(peer *p)
{
    if (p->loop) {
        uv_run(p->loop, UV_RUN_NOWAIT);
        poll(NULL, 0, 1);
    } else if (p->c) {
        parley_run(p->c, 0);
        poll(NULL, 0, 1);
    }
}

/* Non-blocking, and no Nagle: a frame's header and payload go out at once
 * (else the payload may wait for the client's delayed ACK, ~40 ms, longer
 * than a short drive). */
static void peer_socket(int fd)
{
    fcntl(fd, F_SETFL, O_NONBLOCK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static bool peer_accept(peer *p)
{
    for (int i = 0; i < 2000; i++) {
        struct pollfd q = {p->ls, POLLIN, 0};
        if (poll(&q, 1, 0) > 0) {
            p->fd = accept(p->ls, NULL, NULL);
            peer_socket(p->fd);
            p->len = 0;
            return p->fd >= 0;
        }
        drive(p);
    }
    return false;
}

/* Reads whatever arrived; false on EOF. */
static bool peer_fill(peer *p)
{
    ssize_t r = recv(p->fd, p->buf + p->len, sizeof p->buf - p->len, 0);
    if (r > 0) p->len += (size_t)r;
    return r != 0;
}

static void peer_send(peer *p, const void *d, size_t n)
{
    size_t off = 0;
    for (int i = 0; off < n && i < 10000; i++) {
        ssize_t w = send(p->fd, (const char *)d + off, n - off, MSG_NOSIGNAL);
        if (w > 0) off += (size_t)w;
        else drive(p);
    }
}

/* An unmasked server frame. */
static void peer_frame(peer *p, uint8_t op, bool fin, const char *payload, size_t n)
{
    uint8_t h[WS_MAX_HEADER];
    size_t hl = ws_frame_header(h, op, fin, n, NULL);
    peer_send(p, h, hl);
    if (n) peer_send(p, payload, n);
}

static void peer_text(peer *p, const char *json) { peer_frame(p, WS_OP_TEXT, true, json, strlen(json)); }

/* Answers the upgrade: 101 (and hello), or an error status with extra headers. */
static bool peer_handshake(peer *p, int status, const char *extra)
{
    http_limits lim;
    http_limits_default(&lim);
    http_request req;
    int st;
    int n = ERR_AGAIN;
    for (int i = 0; i < 2000 && n == ERR_AGAIN; i++) {
        peer_fill(p);
        n = http_parse_request((char *)p->buf, p->len, &lim, &req, &st);
        if (n == ERR_AGAIN) drive(p);
    }
    CHECK(n > 0);
    if (n <= 0) return false;
    const http_str *auth = http_header_get(&req, "Authorization");
    CHECK(auth && auth->n == 14 && memcmp(auth->p, "Bearer tok-123", 14) == 0);
    const char *protos[] = {"parley.v1.json", NULL};
    ws_handshake hs;
    CHECK_EQ_INT(ws_handshake_check(&req, protos, &hs, &st), ERR_OK);
    CHECK(hs.protocol != NULL);
    char out[1024];
    if (status == 101) {
        int rl = ws_handshake_response(out, sizeof out, &hs);
        memmove(p->buf, p->buf + n, p->len - (size_t)n);
        p->len -= (size_t)n;
        peer_send(p, out, (size_t)rl);
        peer_text(p, "{\"type\":\"hello\",\"user\":\"alice\",\"device\":1,\"ts\":1}");
    } else {
        const char *body = status == 401 ? "{\"error\":{\"code\":\"unauthorized\",\"message\":\"bad token\"}}"
                                         : "{\"error\":{\"code\":\"stopping\",\"message\":\"bye\"}}";
        int rl = snprintf(out, sizeof out, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%s"
                          "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                          status, extra ? extra : "", strlen(body), body);
        peer_send(p, out, (size_t)rl);
    }
    return true;
}

/* The next client frame (masked, as the server role requires). Returns its
 * opcode and copies the payload (NUL-terminated) into out; -1 on EOF/timeout. */
static int peer_recv(peer *p, char *out, size_t cap)
{
    ws_limits lim;
    ws_limits_default(&lim);
    for (int i = 0; i < 3000; i++) {
        ws_frame f;
        uint16_t cc;
        int n = ws_parse_frame(p->buf, p->len, WS_SERVER, &lim, &f, &cc);
        if (n > 0) {
            size_t l = f.len < cap - 1 ? (size_t)f.len : cap - 1;
            memcpy(out, f.payload, l);
            out[l] = 0;
            memmove(p->buf, p->buf + n, p->len - (size_t)n);
            p->len -= (size_t)n;
            return f.opcode;
        }
        CHECK_EQ_INT(n, ERR_AGAIN);
        if (n != ERR_AGAIN) return -1;
        if (!peer_fill(p)) return -1;
        drive(p);
    }
    return -1;
}

/* The next client text frame of the given "type" (others are skipped and
 * returned through *skipped if not NULL). */
static bool peer_expect(peer *p, const char *type, char *out, size_t cap)
{
    char want[64];
    snprintf(want, sizeof want, "\"type\":\"%s\"", type);
    for (int i = 0; i < 50; i++) {
        int op = peer_recv(p, out, cap);
        if (op < 0) return false;
        if (op == WS_OP_TEXT && strstr(out, want)) return true;
    }
    return false;
}

static void str_field(const char *json, const char *key, char *out, size_t cap)
{
    json_obj o;
    out[0] = 0;
    if (json_parse_object(json, strlen(json), &o) == ERR_OK) json_get_str(&o, key, out, cap);
}

static uint64_t num_field(const char *json, const char *key)
{
    json_obj o;
    uint64_t v = 0;
    if (json_parse_object(json, strlen(json), &o) == ERR_OK) json_get_u64(&o, key, &v);
    return v;
}

static void peer_close(peer *p)
{
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
}

static int last_state(const seen *x) { return x->nstates ? x->states[x->nstates - 1] : -1; }

/* Runs the client until its state is `st` (bounded). */
static bool wait_state(peer *p, seen *x, int st)
{
    for (int i = 0; i < 2000; i++) {
        if (last_state(x) == st) return true;
        drive(p);
    }
    return last_state(x) == st;
}

/* ---- a REST peer: the REST calls block, so it answers on a thread ------------------ */

typedef struct rest_peer {
    int ls;
    int status;          /* the answer */
    const char *reply;
    bool got;            /* what it was asked (read after rest_peer_join) */
    char method[8], path[64], body[1024];
    pthread_t th;
} rest_peer;

/* Accepts one connection, reads one request, answers, closes. */
static void *rest_peer_run(void *arg)
{
    rest_peer *r = arg;
    struct pollfd q = {r->ls, POLLIN, 0};
    if (poll(&q, 1, 10000) <= 0) return NULL;
    int fd = accept(r->ls, NULL, NULL);
    if (fd < 0) return NULL;
    static char buf[8192];
    size_t len = 0;
    http_limits lim;
    http_limits_default(&lim);
    http_request req;
    int st, n = ERR_AGAIN;
    for (int i = 0; i < 100 && n == ERR_AGAIN && len < sizeof buf; i++) {
        struct pollfd w = {fd, POLLIN, 0};
        if (poll(&w, 1, 10000) <= 0) break;
        ssize_t got = recv(fd, buf + len, sizeof buf - len, 0);
        if (got <= 0) break;
        len += (size_t)got;
        n = http_parse_request(buf, len, &lim, &req, &st);
    }
    if (n > 0 && req.method.n < sizeof r->method && req.path.n < sizeof r->path &&
        req.body.n < sizeof r->body) {
        memcpy(r->method, req.method.p, req.method.n);
        memcpy(r->path, req.path.p, req.path.n);
        memcpy(r->body, req.body.p, req.body.n);
        r->got = true;
    }
    char out[2048];
    int ol = snprintf(out, sizeof out, "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                      r->status, strlen(r->reply), r->reply);
    send(fd, out, (size_t)ol, MSG_NOSIGNAL);
    close(fd);
    return NULL;
}

static void rest_peer_start(rest_peer *r, int ls, int status, const char *reply)
{
    memset(r, 0, sizeof *r);
    r->ls = ls;
    r->status = status;
    r->reply = reply;
    pthread_create(&r->th, NULL, rest_peer_run, r);
}

static void rest_peer_join(rest_peer *r) { pthread_join(r->th, NULL); }

/* ---- tests ------------------------------------------------------------------------- */

TEST(argument_errors)
{
    parley_options o;
    parley_options_init(&o);
    parley_client *c = NULL;
    o.server = "localhost:8080";
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_EINVALID);
    o.server = "https://example.com";
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_EUNSUPPORTED);
    /* a list: every entry is checked */
    const char *bad_lists[] = {"http://a:1,", ",http://a:1", "http://a:1,,http://b:2",
                               "http://a:1,b:2", "http://a:1,http://b:0"};
    for (size_t i = 0; i < sizeof bad_lists / sizeof bad_lists[0]; i++) {
        CHECK_EQ_INT(parley_new(&o, &c), PARLEY_EUNSUPPORTED); /* still the https one */
        o.server = bad_lists[i];
        CHECK_EQ_INT(parley_new(&o, &c), PARLEY_EINVALID);
        o.server = "https://example.com";
    }
    o.server = "http://a:1,https://b:2";
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_EUNSUPPORTED);
    char many[64 * (PARLEY_MAX_SERVERS + 1)] = "";
    for (int i = 0; i <= PARLEY_MAX_SERVERS; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%shttp://h%d:80", i ? "," : "", i);
    o.server = many;
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_ETOO_LARGE);
    *strrchr(many, ',') = 0; /* PARLEY_MAX_SERVERS: fine */
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_OK);
    CHECK(strcmp(parley_server(c), "http://h0:80") == 0);
    parley_free(c);
    c = NULL;
    o.server = " http://a:1/chat/ , http://b:2";
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_OK);
    CHECK(strcmp(parley_server(c), "http://a:1/chat") == 0);
    parley_free(c);
    c = NULL;
    o.server = NULL;
    char tok[300];
    memset(tok, 'a', sizeof tok - 1);
    tok[299] = 0;
    o.token = tok;
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_ETOO_LARGE);
    o.token = NULL;
    parley_allocator bad = {NULL, NULL, NULL, NULL};
    o.allocator = &bad;
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_EINVALID);
    CHECK(c == NULL);

    seen x;
    memset(&x, 0, sizeof x);
    o.allocator = &counting;
    o.callbacks = &callbacks;
    o.userdata = &x;
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_OK);
    /* a failed call never fires a callback */
    CHECK_EQ_INT(parley_connect(c), PARLEY_EAUTH);
    CHECK_EQ_INT(x.nstates, 0);
    CHECK_EQ_INT(parley_run(c, 0), PARLEY_ECLOSED);
    CHECK_EQ_INT(parley_send(c, 0, "x", NULL), PARLEY_EINVALID);
    CHECK_EQ_INT(parley_send(c, 1, "\xff\xfe", NULL), PARLEY_EUTF8);
    CHECK_EQ_INT(parley_send_json(c, 1, "{bad", 4, NULL, NULL), PARLEY_EINVALID);
    CHECK_EQ_INT(parley_send_json(c, 1, "null", 4, NULL, NULL), PARLEY_EINVALID);
    CHECK_EQ_INT(parley_send_json(c, 1, "1", 1, "", NULL), PARLEY_EINVALID);
    CHECK_EQ_INT(parley_send_json(c, 1, "{\"a\":1}", 7, "mine", NULL), PARLEY_OK);
    CHECK_EQ_INT(parley_send_json(c, 1, "2", 1, "mine", NULL), PARLEY_ECONFLICT);
    CHECK_EQ_INT(parley_pending(c), 1);
    CHECK_EQ_INT(parley_sync(c, 5), PARLEY_ENOT_FOUND);
    CHECK_EQ_INT(parley_typing(c, 5), PARLEY_ECLOSED);
    CHECK_EQ_INT(parley_get_history(c, 1, PARLEY_BEFORE, 0, 0, NULL), PARLEY_EINVALID);
    /* REST without a token: refused locally, with details */
    parley_inbox *in;
    CHECK_EQ_INT(parley_get_inbox(c, 0, &in), PARLEY_EAUTH);
    CHECK(parley_last_error(c)->status == 0 && parley_last_error(c)->message[0]);
    /* cursors move forward only, offline too */
    CHECK_EQ_INT(parley_mark_read(c, 3, 10), 1);
    CHECK_EQ_INT(parley_mark_read(c, 3, 10), 0);
    CHECK_EQ_INT(parley_mark_read(c, 3, 4), 0);
    CHECK_EQ_INT(parley_mark_delivered(c, 3, 8), 0); /* read 10 implies delivered 10 */
    CHECK_EQ_INT(parley_track(c, 3, 7), PARLEY_OK);
    CHECK_EQ_INT(parley_highest(c, 3), 7);
    CHECK_EQ_INT(parley_highest(c, 4), 0);
    char cmid[PARLEY_CMID_MAX];
    CHECK_EQ_INT(parley_send(c, 3, "héllo \"q\"\n", cmid), PARLEY_OK);
    CHECK_EQ_INT(strlen(cmid), 32);
    CHECK_EQ_INT(x.nstates, 0);
    CHECK(strcmp(parley_strerror(PARLEY_EAUTH), "auth") == 0);
    parley_free(c);
    CHECK_EQ_INT(live, 0);
}

TEST(allocation_failures)
{
    /* every allocation failing in turn: errors, never a crash or a leak */
    for (long n = 0; n < 40; n++) {
        allocs = 0;
        fail_after = n;
        parley_options o;
        parley_options_init(&o);
        o.allocator = &counting;
        o.token = "t";
        parley_client *c = NULL;
        int rc = parley_new(&o, &c);
        if (rc == PARLEY_OK) {
            for (int i = 0; i < 20; i++) {
                int r = parley_send(c, (uint64_t)(1 + i % 3), "hello", NULL);
                CHECK(r == PARLEY_OK || r == PARLEY_ENOMEM);
                r = parley_track(c, (uint64_t)(10 + i), 5);
                CHECK(r == PARLEY_OK || r == PARLEY_ENOMEM);
            }
            parley_free(c);
        } else {
            CHECK_EQ_INT(rc, PARLEY_ENOMEM);
        }
        CHECK_EQ_INT(live, 0);
    }
    fail_after = -1;
}

TEST(device_key_kept_and_sent_at_login)
{
    /* The key of the last register/login is kept and presented at the
     * next login (docs/protocol.md "Failed logins and known devices"); an
     * app persists it with parley_device_key / parley_set_device_key. */
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, false);
    rest_peer r;
    parley_session s;
    char key[PARLEY_DEVICE_KEY_MAX];
    CHECK(strcmp(parley_device_key(c), "") == 0);
    /* register: nothing to present, the new key kept */
    rest_peer_start(&r, p.ls, 201, "{\"user\":\"alice\",\"token\":\"tok-1\",\"device\":1,"
                    "\"expires\":5,\"device_key\":\"AAAAAQ-key_of_device_1\"}");
    CHECK_EQ_INT(parley_register(c, "alice", "password123", &s), PARLEY_OK);
    rest_peer_join(&r);
    CHECK(r.got && strcmp(r.path, "/v1/users") == 0);
    CHECK(strstr(r.body, "device_key") == NULL);
    CHECK(strcmp(s.device_key, "AAAAAQ-key_of_device_1") == 0);
    CHECK(strcmp(parley_device_key(c), "AAAAAQ-key_of_device_1") == 0);
    /* login: sends it, keeps the new device's */
    rest_peer_start(&r, p.ls, 200, "{\"user\":\"alice\",\"token\":\"tok-2\",\"device\":2,"
                    "\"expires\":5,\"device_key\":\"AAAAAg-key_of_device_2\"}");
    CHECK_EQ_INT(parley_login(c, "alice", "password123", &s), PARLEY_OK);
    rest_peer_join(&r);
    CHECK(r.got && strcmp(r.method, "POST") == 0 && strcmp(r.path, "/v1/sessions") == 0);
    str_field(r.body, "device_key", key, sizeof key);
    CHECK(strcmp(key, "AAAAAQ-key_of_device_1") == 0);
    str_field(r.body, "username", key, sizeof key);
    CHECK(strcmp(key, "alice") == 0);
    CHECK(strcmp(parley_device_key(c), "AAAAAg-key_of_device_2") == 0);
    CHECK(strcmp(parley_token(c), "tok-2") == 0 && s.device == 2);
    /* a refused login and answers without a (usable) key keep it */
    const char *keep[] = {
        "{\"user\":\"alice\",\"token\":\"tok-3\",\"device\":3,\"expires\":5}",
        "{\"user\":\"alice\",\"token\":\"tok-4\",\"device\":4,\"expires\":5,\"device_key\":7}",
        "{\"user\":\"alice\",\"token\":\"tok-5\",\"device\":5,\"expires\":5,"
        "\"device_key\":\"not base64url!\"}",
        "{\"user\":\"alice\",\"token\":\"tok-6\",\"device\":6,\"expires\":5,\"device_key\":"
        "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}",
    };
    for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
        rest_peer_start(&r, p.ls, 200, keep[i]);
        CHECK_EQ_INT(parley_login(c, "alice", "password123", &s), PARLEY_OK);
        rest_peer_join(&r);
        str_field(r.body, "device_key", key, sizeof key);
        CHECK(strcmp(key, "AAAAAg-key_of_device_2") == 0);
        CHECK(s.device_key[0] == 0);
        CHECK(strcmp(parley_device_key(c), "AAAAAg-key_of_device_2") == 0);
    }
    rest_peer_start(&r, p.ls, 429, "{\"error\":{\"code\":\"rate_limited\",\"message\":\"wait\"}}");
    CHECK_EQ_INT(parley_login(c, "alice", "password123", &s), PARLEY_ERATE);
    rest_peer_join(&r);
    CHECK(strcmp(parley_device_key(c), "AAAAAg-key_of_device_2") == 0);
    /* the setter: bad keys refused (the key stays), NULL / "" clear it */
    char longkey[PARLEY_DEVICE_KEY_MAX + 1];
    memset(longkey, 'A', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = 0;
    CHECK_EQ_INT(parley_set_device_key(c, longkey), PARLEY_ETOO_LARGE);
    const char *bad[] = {"a b", "a\"b", "key=1", "\xc3\xa9t\xc3\xa9", "a\nb", "a/b+c"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(parley_set_device_key(c, bad[i]), PARLEY_EINVALID);
    CHECK(strcmp(parley_device_key(c), "AAAAAg-key_of_device_2") == 0);
    longkey[PARLEY_DEVICE_KEY_MAX - 1] = 0; /* the longest that fits */
    CHECK_EQ_INT(parley_set_device_key(c, longkey), PARLEY_OK);
    CHECK(strcmp(parley_device_key(c), longkey) == 0);
    CHECK_EQ_INT(parley_set_device_key(c, NULL), PARLEY_OK);
    CHECK(strcmp(parley_device_key(c), "") == 0);
    /* no key: none sent */
    rest_peer_start(&r, p.ls, 401, "{\"error\":{\"code\":\"bad_credentials\",\"message\":\"no\"}}");
    CHECK_EQ_INT(parley_login(c, "alice", "wrong-password", &s), PARLEY_EAUTH);
    rest_peer_join(&r);
    CHECK(r.got && strstr(r.body, "device_key") == NULL);
    CHECK(strcmp(parley_device_key(c), "") == 0);
    parley_free(c);
    /* a new process: the app gives back the key it kept */
    c = new_client(p.port, &x, false);
    CHECK_EQ_INT(parley_set_device_key(c, "AAAAAg-key_of_device_2"), PARLEY_OK);
    CHECK_EQ_INT(parley_set_device_key(c, ""), PARLEY_OK);
    CHECK(strcmp(parley_device_key(c), "") == 0);
    CHECK_EQ_INT(parley_set_device_key(c, "AAAAAg-key_of_device_2"), PARLEY_OK);
    rest_peer_start(&r, p.ls, 200, "{\"user\":\"alice\",\"token\":\"tok-7\",\"device\":7,"
                    "\"expires\":5,\"device_key\":\"AAAABw-key_of_device_7\"}");
    CHECK_EQ_INT(parley_login(c, "alice", "password123", NULL), PARLEY_OK);
    rest_peer_join(&r);
    str_field(r.body, "device_key", key, sizeof key);
    CHECK(strcmp(key, "AAAAAg-key_of_device_2") == 0);
    CHECK(strcmp(parley_device_key(c), "AAAABw-key_of_device_7") == 0);
    parley_free(c);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(backoff_when_refused)
{
    /* a port nobody listens on */
    peer p;
    peer_listen(&p);
    int port = p.port;
    close(p.ls);
    seen x;
    memset(&x, 0, sizeof x);
    rnd_fixed = true;
    rnd_const = 0x9e3779b97f4a7c15ull;
    parley_client *c = new_client(port, &x, true);
    p.c = c;
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    CHECK_EQ_INT(x.states[0], PARLEY_CONNECTING);
    client_backoff model;
    client_backoff_init(&model, 1000, 60000);
    for (int attempt = 0; attempt < 9; attempt++) {
        CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
        uint64_t want = client_backoff_next(&model, rnd_const, 0);
        uint64_t got = x.delays[x.nstates - 1];
        CHECK_EQ_INT(got, want);
        CHECK(got <= (attempt < 6 ? 1000u << attempt : 60000u));
        CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_EIO);
        /* not yet: nothing happens */
        int before = x.nstates;
        if (got > 0) {
            fake_now += got - 1;
            parley_run(c, 0);
            CHECK_EQ_INT(x.nstates, before);
            fake_now += 1;
        }
        parley_run(c, 0); /* the retry */
        CHECK(x.nstates > before && x.states[before] == PARLEY_CONNECTING);
    }
    /* a pending message survives all of it */
    CHECK_EQ_INT(parley_send(c, 1, "kept", NULL), PARLEY_OK);
    CHECK_EQ_INT(parley_close(c), PARLEY_OK);
    CHECK_EQ_INT(last_state(&x), PARLEY_IDLE);
    CHECK_EQ_INT(parley_pending(c), 1);
    CHECK_EQ_INT(parley_run(c, 0), PARLEY_ECLOSED);
    parley_free(c);
    rnd_fixed = false;
    CHECK_EQ_INT(live, 0);
}

TEST(resend_same_cmid_after_reconnect)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char cm[3][PARLEY_CMID_MAX], f[4096], cmid[80];
    CHECK_EQ_INT(parley_send(c, 7, "one", cm[0]), PARLEY_OK); /* queued before connecting */
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    CHECK_EQ_INT(parley_send(c, 7, "two", cm[1]), PARLEY_OK);
    CHECK_EQ_INT(parley_send(c, 7, "three", cm[2]), PARLEY_OK);
    CHECK(peer_expect(&p, "inbox", f, sizeof f)); /* resume first */
    for (int i = 0; i < 3; i++) {
        CHECK(peer_expect(&p, "send", f, sizeof f));
        str_field(f, "cmid", cmid, sizeof cmid);
        CHECK(strcmp(cmid, cm[i]) == 0);
        CHECK_EQ_INT(num_field(f, "conv"), 7);
    }
    /* only "one" is acked, then the connection breaks */
    char ack[256];
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":7,\"seq\":1,\"ts\":5}", cm[0]);
    peer_text(&p, ack);
    for (int i = 0; i < 200 && x.nacks < 1; i++) drive(&p);
    CHECK_EQ_INT(x.nacks, 1);
    CHECK_EQ_INT(parley_pending(c), 2);
    peer_close(&p);
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    CHECK(x.delays[x.nstates - 1] <= 1000);
    fake_now += x.delays[x.nstates - 1];
    /* reconnect: the two unacked messages again, same cmids, same order */
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    for (int i = 1; i < 3; i++) {
        CHECK(peer_expect(&p, "send", f, sizeof f));
        str_field(f, "cmid", cmid, sizeof cmid);
        CHECK(strcmp(cmid, cm[i]) == 0);
        char body[32];
        str_field(f, "body", body, sizeof body);
        CHECK(strcmp(body, i == 1 ? "two" : "three") == 0);
    }
    /* the server had "two" already (duplicate), then "three"; then "three"
     * is acked a second time: no second callback */
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":7,\"seq\":2,\"ts\":6,\"duplicate\":true}", cm[1]);
    peer_text(&p, ack);
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":7,\"seq\":3,\"ts\":7}", cm[2]);
    peer_text(&p, ack);
    peer_text(&p, ack);
    peer_text(&p, "{\"type\":\"pong\"}");
    for (int i = 0; i < 300 && parley_pending(c) > 0; i++) drive(&p);
    for (int i = 0; i < 50; i++) drive(&p);
    CHECK_EQ_INT(parley_pending(c), 0);
    CHECK_EQ_INT(x.nacks, 3);
    CHECK(x.ack_dup[1] && !x.ack_dup[2]);
    CHECK_EQ_INT(x.ack_seq[2], 3);
    CHECK_EQ_INT(parley_highest(c, 7), 3); /* our own seqs count as held */
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(gap_fill_and_dedupe)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096];
    parley_track(c, 9, 4); /* the app holds up to 4 */
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK(strstr(f, "changed_since") == NULL);
    /* the inbox says conv 9 is at 6: the client syncs after 4 */
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":["
                  "{\"id\":9,\"type\":\"direct\",\"last_seq\":6},{\"id\":10,\"last_seq\":3}],\"cursor\":77}}");
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "conv"), 9);
    CHECK_EQ_INT(num_field(f, "after"), 4);
    peer_text(&p, "{\"type\":\"history\",\"conv\":9,\"id\":\"s:9\",\"messages\":["
                  "{\"seq\":5,\"from\":\"bob\",\"cmid\":\"b5\",\"ts\":1,\"body\":\"m5\"},"
                  "{\"seq\":6,\"from\":\"bob\",\"cmid\":\"b6\",\"ts\":1,\"body\":{\"rich\":true}}],\"more\":false}");
    for (int i = 0; i < 100 && x.nmsgs < 2; i++) drive(&p);
    CHECK_EQ_INT(x.nmsgs, 2);
    /* a msg that skips ahead: held, sync after 6 */
    peer_text(&p, "{\"type\":\"msg\",\"conv\":9,\"seq\":8,\"from\":\"bob\",\"cmid\":\"b8\",\"ts\":1,\"body\":\"m8\"}");
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "after"), 6);
    /* meanwhile live 7 and a duplicate 8, then the answer with 7 and 8 */
    peer_text(&p, "{\"type\":\"msg\",\"conv\":9,\"seq\":7,\"from\":\"bob\",\"cmid\":\"b7\",\"ts\":1,\"body\":\"m7\"}");
    peer_text(&p, "{\"type\":\"msg\",\"conv\":9,\"seq\":8,\"from\":\"bob\",\"cmid\":\"b8\",\"ts\":1,\"body\":\"m8\"}");
    peer_text(&p, "{\"type\":\"history\",\"conv\":9,\"id\":\"s:9\",\"messages\":["
                  "{\"seq\":7,\"from\":\"bob\",\"cmid\":\"b7\",\"ts\":1,\"body\":\"m7\"},"
                  "{\"seq\":8,\"from\":\"bob\",\"cmid\":\"b8\",\"ts\":1,\"body\":\"m8\"}],\"more\":false}");
    peer_text(&p, "{\"type\":\"msg\",\"conv\":9,\"seq\":8,\"from\":\"bob\",\"cmid\":\"b8\",\"ts\":1,\"body\":\"m8\"}");
    peer_text(&p, "{\"type\":\"msg\",\"conv\":9,\"seq\":9,\"from\":\"bob\",\"cmid\":\"b9\",\"ts\":1,\"body\":\"m9\"}");
    /* typing, receipt, presence pass through */
    peer_text(&p, "{\"type\":\"typing\",\"conv\":9,\"user\":\"bob\"}");
    peer_text(&p, "{\"type\":\"receipt\",\"conv\":9,\"user\":\"bob\",\"delivered\":3,\"read\":2}");
    peer_text(&p, "{\"type\":\"presence\",\"user\":\"bob\",\"online\":true,\"last_seen\":1}");
    for (int i = 0; i < 300 && (x.nmsgs < 5 || x.npresence < 1); i++) drive(&p);
    CHECK_EQ_INT(x.nmsgs, 5);
    for (int i = 0; i < x.nmsgs; i++) CHECK_EQ_INT(x.msgs[i], (uint64_t)(5 + i));
    CHECK(strcmp(x.texts[0], "m5") == 0 && strcmp(x.texts[1], "{\"rich\":true}") == 0);
    CHECK(x.ntyping == 1 && x.nreceipts == 1 && x.npresence == 1);
    CHECK_EQ_INT(parley_highest(c, 9), 9);
    /* delivered cursors go out (forward only, coalesced): the last one is 9 */
    uint64_t last_delivered = 0;
    for (int i = 0; i < 20; i++) {
        int op = peer_recv(&p, f, sizeof f);
        if (op < 0) break;
        if (strstr(f, "\"delivered\"")) last_delivered = num_field(f, "seq");
        if (last_delivered == 9) break;
    }
    CHECK_EQ_INT(last_delivered, 9);
    /* a reconnect asks only for what changed since the cursor */
    peer_close(&p);
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 77);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

/* A history frame of conv with seqs from..to (and more). */
static void peer_history(peer *p, uint64_t conv, uint64_t from, uint64_t to, bool more)
{
    static char buf[1 << 15];
    int n = snprintf(buf, sizeof buf, "{\"type\":\"history\",\"conv\":%llu,\"messages\":[",
                     (unsigned long long)conv);
    for (uint64_t s = from; s <= to; s++)
        n += snprintf(buf + n, sizeof buf - (size_t)n,
                      "%s{\"seq\":%llu,\"from\":\"bob\",\"cmid\":\"b%llu\",\"ts\":1,\"body\":\"m%llu\"}",
                      s == from ? "" : ",", (unsigned long long)s, (unsigned long long)s,
                      (unsigned long long)s);
    snprintf(buf + n, sizeof buf - (size_t)n, "],\"more\":%s}", more ? "true" : "false");
    peer_text(p, buf);
}

TEST(inbox_pages_and_trimmed_sync_pages)
{
    /* The server answers the resume inbox in pages and trims each sync
     * page to its byte budget (more: true): the client asks for the next
     * inbox page with `page` = `next`, syncs every conversation listed on
     * any page and follows `more` until the gap is filled; it keeps the
     * inbox cursor only once the last page arrived. */
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096], tok[64];
    parley_track(c, 9, 0);
    parley_track(c, 10, 0);
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK(strstr(f, "changed_since") == NULL && strstr(f, "page") == NULL);
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":["
                  "{\"id\":9,\"type\":\"group\",\"last_seq\":40}],\"cursor\":77,\"more\":true,"
                  "\"next\":\"0.77.1763800000000.9\"}}");
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK(num_field(f, "conv") == 9 && num_field(f, "after") == 0 && num_field(f, "limit") == 500);
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    str_field(f, "page", tok, sizeof tok);
    CHECK(strcmp(tok, "0.77.1763800000000.9") == 0);
    CHECK(strstr(f, "changed_since") == NULL);
    /* the sync answer comes in trimmed pages */
    peer_history(&p, 9, 1, 15, true);
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK(num_field(f, "conv") == 9 && num_field(f, "after") == 15);
    peer_history(&p, 9, 16, 30, true);
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK(num_field(f, "after") == 30);
    /* the second (last) inbox page lists conv 10 */
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":["
                  "{\"id\":10,\"type\":\"group\",\"last_seq\":3}],\"cursor\":77,\"more\":false}}");
    peer_history(&p, 9, 31, 40, false);
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK(num_field(f, "conv") == 10 && num_field(f, "after") == 0);
    peer_history(&p, 10, 1, 3, false);
    for (int i = 0; i < 500 && x.nmsgs < 43; i++) drive(&p);
    CHECK_EQ_INT(x.nmsgs, 43);
    CHECK_EQ_INT(parley_highest(c, 9), 40);
    CHECK_EQ_INT(parley_highest(c, 10), 3);
    for (int i = 0; i < 40; i++) CHECK_EQ_INT(x.msgs[i], (uint64_t)(i + 1));
    /* reconnect: changed_since the walk's cursor; this walk breaks off
     * after its first page ... */
    peer_close(&p);
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 77);
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":["
                  "{\"id\":11,\"last_seq\":1}],\"cursor\":90,\"more\":true,\"next\":\"77.90.5.11\"}}");
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    str_field(f, "page", tok, sizeof tok);
    CHECK(strcmp(tok, "77.90.5.11") == 0);
    peer_close(&p);
    /* ... so the next one starts again from 77, not 90 */
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 77);
    /* more without a next: a broken answer, the cursor stays */
    peer_text(&p, "{\"type\":\"inbox\",\"inbox\":{\"conversations\":[],\"cursor\":95,\"more\":true}}");
    peer_text(&p, "{\"type\":\"pong\"}");
    for (int i = 0; i < 30; i++) drive(&p);
    peer_close(&p);
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 77);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(lost_ack_found_by_sync)
{
    /* The ack of "mine" is lost with the connection; after the reconnect the
     * resume sync brings the message back: it counts as the ack (once), is
     * not handed to on_message, and the resend's duplicate ack is ignored. */
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096], cmid[PARLEY_CMID_MAX], got[80], frame[512];
    parley_track(c, 5, 1);
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    parley_send(c, 5, "mine", cmid);
    CHECK(peer_expect(&p, "send", f, sizeof f));
    peer_close(&p); /* stored as seq 2, but the ack never comes */
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK(peer_expect(&p, "send", f, sizeof f)); /* the resend, same cmid */
    str_field(f, "cmid", got, sizeof got);
    CHECK(strcmp(got, cmid) == 0);
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":[{\"id\":5,\"last_seq\":3}],\"cursor\":9}}");
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "after"), 1);
    snprintf(frame, sizeof frame, "{\"type\":\"history\",\"conv\":5,\"messages\":["
             "{\"seq\":2,\"from\":\"alice\",\"cmid\":\"%s\",\"ts\":1,\"body\":\"mine\"},"
             "{\"seq\":3,\"from\":\"bob\",\"cmid\":\"b3\",\"ts\":1,\"body\":\"theirs\"}],\"more\":false}", cmid);
    peer_text(&p, frame);
    snprintf(frame, sizeof frame, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":5,\"seq\":2,\"ts\":1,\"duplicate\":true}", cmid);
    peer_text(&p, frame);
    peer_text(&p, "{\"type\":\"pong\"}");
    for (int i = 0; i < 300 && (x.nmsgs < 1 || x.nacks < 1); i++) drive(&p);
    for (int i = 0; i < 30; i++) drive(&p);
    CHECK_EQ_INT(x.nacks, 1);
    CHECK(strcmp(x.acks[0], cmid) == 0 && x.ack_dup[0] && x.ack_seq[0] == 2);
    CHECK_EQ_INT(x.nmsgs, 1);
    CHECK_EQ_INT(x.msgs[0], 3);
    CHECK_EQ_INT(parley_pending(c), 0);
    CHECK_EQ_INT(parley_highest(c, 5), 3);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(refused_send_is_dropped_and_reported)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096], cmid[PARLEY_CMID_MAX], got[80], frame[256];
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    parley_send(c, 4, "nope", cmid);
    CHECK(peer_expect(&p, "send", f, sizeof f));
    /* busy: kept and resent (same cmid) after retry_after_ms */
    snprintf(frame, sizeof frame, "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"later\",\"ref\":\"%s\",\"retry_after_ms\":1000}", cmid);
    peer_text(&p, frame);
    for (int i = 0; i < 50; i++) drive(&p);
    CHECK_EQ_INT(parley_pending(c), 1);
    CHECK_EQ_INT(x.nerrs, 0);
    fake_now += 1000;
    CHECK(peer_expect(&p, "send", f, sizeof f));
    str_field(f, "cmid", got, sizeof got);
    CHECK(strcmp(got, cmid) == 0);
    /* forbidden: dropped and reported with its cmid */
    snprintf(frame, sizeof frame, "{\"type\":\"error\",\"code\":\"forbidden\",\"message\":\"not a member\",\"ref\":\"%s\"}", cmid);
    peer_text(&p, frame);
    for (int i = 0; i < 200 && x.nerrs < 1; i++) drive(&p);
    CHECK_EQ_INT(x.nerrs, 1);
    CHECK(strcmp(x.errs[0], "forbidden") == 0 && strcmp(x.err_cmid[0], cmid) == 0);
    CHECK_EQ_INT(parley_pending(c), 0);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(rate_limited_without_ref)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096], cm[3][PARLEY_CMID_MAX], got[80], ack[256];
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    for (int i = 0; i < 3; i++) parley_send(c, 4, "burst", cm[i]);
    for (int i = 0; i < 3; i++) CHECK(peer_expect(&p, "send", f, sizeof f));
    /* the frame limiter dropped one of them and cannot say which; the
     * first was stored and its ack comes during the pause */
    peer_text(&p, "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"slow down\",\"retry_after_ms\":500}");
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":4,\"seq\":1,\"ts\":5}", cm[0]);
    peer_text(&p, ack);
    for (int i = 0; i < 50; i++) drive(&p);
    CHECK_EQ_INT(x.nacks, 1);
    CHECK_EQ_INT(x.nerrs, 0); /* handled, not the app's business */
    /* nothing during the pause, even a new message */
    parley_send(c, 4, "later", NULL);
    for (int i = 0; i < 20; i++) { drive(&p); peer_fill(&p); }
    CHECK_EQ_INT(p.len, 0);
    fake_now += 500;
    /* then the two unacked ones again, same cmids, in order, then the new one */
    for (int i = 1; i < 3; i++) {
        CHECK(peer_expect(&p, "send", f, sizeof f));
        str_field(f, "cmid", got, sizeof got);
        CHECK(strcmp(got, cm[i]) == 0);
    }
    CHECK(peer_expect(&p, "send", f, sizeof f));
    str_field(f, "body", got, sizeof got);
    CHECK(strcmp(got, "later") == 0);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

/* Every complete client frame that arrives while the client runs a moment
 * (never waits for one): the number of sends, their cmids in order (up to
 * 64) and the number of other text frames of type `other` (may be NULL). */
static int peer_sends(peer *p, char cmids[][PARLEY_CMID_MAX], const char *other, int *nother)
{
    for (int i = 0; i < 30; i++) { drive(p); peer_fill(p); }
    ws_limits lim;
    ws_limits_default(&lim);
    char want[64];
    snprintf(want, sizeof want, "\"type\":\"%s\"", other ? other : "-");
    int n = 0;
    for (int guard = 0; guard < 10000; guard++) {
        ws_frame f;
        uint16_t cc;
        if (ws_parse_frame(p->buf, p->len, WS_SERVER, &lim, &f, &cc) <= 0) break;
        char out[4096];
        size_t l = f.len < sizeof out - 1 ? (size_t)f.len : sizeof out - 1;
        memcpy(out, f.payload, l);
        out[l] = 0;
        size_t used = (size_t)(f.payload + f.len - p->buf);
        memmove(p->buf, p->buf + used, p->len - used);
        p->len -= used;
        if (strstr(out, "\"type\":\"send\"")) {
            if (cmids && n < 64) str_field(out, "cmid", cmids[n], PARLEY_CMID_MAX);
            n++;
        } else if (nother && strstr(out, want)) {
            (*nother)++;
        }
    }
    return n;
}

TEST(rate_limited_pauses_the_connection)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char cm[7][PARLEY_CMID_MAX], got[64][PARLEY_CMID_MAX], frame[256];
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    for (int i = 0; i < 7; i++) parley_send(c, 4, "paste", cm[i]);
    CHECK_EQ_INT(peer_sends(&p, got, NULL, NULL), 7);
    /* two pass; the third starts a pause, the four behind it were on
     * their way and are refused too, naming the same end */
    for (int i = 0; i < 2; i++) {
        snprintf(frame, sizeof frame, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":4,\"seq\":%d,\"ts\":5}", cm[i], i + 1);
        peer_text(&p, frame);
    }
    for (int i = 2; i < 7; i++) {
        snprintf(frame, sizeof frame, "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":\"slow down\","
                 "\"retry_after_ms\":%d,\"ref\":\"%s\"}", 300 - 10 * (i - 2), cm[i]);
        peer_text(&p, frame);
    }
    for (int i = 0; i < 50 && x.nacks < 2; i++) drive(&p);
    CHECK_EQ_INT(x.nacks, 2);
    for (int i = 0; i < 20; i++) drive(&p);
    CHECK_EQ_INT(x.nerrs, 0); /* handled: kept and resent, not the app's business */
    CHECK_EQ_INT(parley_pending(c), 5);
    /* during the pause nothing is written: no new message, no cursor, no typing */
    for (int i = 0; i < 40; i++) CHECK_EQ_INT(parley_send(c, 4, "more", NULL), PARLEY_OK);
    CHECK_EQ_INT(parley_mark_read(c, 4, 2), 1);
    CHECK_EQ_INT(parley_typing(c, 4), 0);
    fake_now += 299;
    int nread = 0;
    CHECK_EQ_INT(peer_sends(&p, NULL, "read", &nread), 0);
    CHECK_EQ_INT(nread, 0);
    CHECK_EQ_INT(p.len, 0);
    /* after it: the refused ones first, oldest first, same cmids; the
     * window halved once for the pause (32 -> 16), not once per refusal */
    fake_now += 1;
    CHECK_EQ_INT(peer_sends(&p, got, "read", &nread), 16);
    for (int i = 2; i < 7; i++) CHECK(strcmp(got[i - 2], cm[i]) == 0);
    CHECK_EQ_INT(nread, 1);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(max_inflight_is_capped_by_the_protocol)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", p.port);
    parley_options o;
    parley_options_init(&o);
    CHECK_EQ_INT(o.max_inflight, 32);
    o.server = url;
    o.token = "tok-123";
    o.allocator = &counting;
    o.callbacks = &callbacks;
    o.userdata = &x;
    o.random = rnd_fn;
    o.clock_ms = clock_fn;
    o.max_inflight = 1000; /* more than the server forgives in one pause */
    parley_client *c = NULL;
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_OK);
    p.c = c;
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    for (int i = 0; i < 100; i++) parley_send(c, 4, "x", NULL);
    CHECK_EQ_INT(peer_sends(&p, NULL, NULL, NULL), PARLEY_MAX_INFLIGHT);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(retry_after_and_auth)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    rnd_fixed = true;
    rnd_const = 0; /* jitter 0: the delay is exactly the floor */
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 503, "Retry-After: 7\r\n"));
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    CHECK_EQ_INT(x.delays[x.nstates - 1], 7000);
    CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_EBUSY);
    CHECK_EQ_INT(parley_last_error(c)->status, 503);
    peer_close(&p);
    fake_now += 6999;
    for (int i = 0; i < 20; i++) drive(&p);
    CHECK_EQ_INT(last_state(&x), PARLEY_BACKOFF); /* not before Retry-After */
    fake_now += 1;
    /* then a 401: stop for good, no more attempts */
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 401, "WWW-Authenticate: Bearer\r\n"));
    CHECK(wait_state(&p, &x, PARLEY_CLOSED));
    CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_EAUTH);
    CHECK_EQ_INT(parley_run(c, 0), PARLEY_EAUTH);
    peer_close(&p);
    fake_now += 3600000;
    struct pollfd q = {p.ls, POLLIN, 0};
    CHECK_EQ_INT(poll(&q, 1, 20), 0); /* nobody calls again */
    parley_free(c);
    close(p.ls);
    rnd_fixed = false;
    CHECK_EQ_INT(live, 0);
}

TEST(control_frames_fragments_keepalive)
{
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096];
    parley_track(c, 2, 0);
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    /* a message in three fragments with a ping between them */
    const char *m = "{\"type\":\"msg\",\"conv\":2,\"seq\":1,\"from\":\"bob\",\"cmid\":\"x\",\"ts\":1,\"body\":\"frag\"}";
    size_t n = strlen(m);
    peer_frame(&p, WS_OP_TEXT, false, m, 10);
    peer_frame(&p, WS_OP_PING, true, "hi", 2);
    peer_frame(&p, WS_OP_CONT, false, m + 10, 20);
    peer_frame(&p, WS_OP_CONT, true, m + 30, n - 30);
    int op = peer_recv(&p, f, sizeof f);
    CHECK_EQ_INT(op, WS_OP_PONG);
    CHECK(strcmp(f, "hi") == 0);
    for (int i = 0; i < 100 && x.nmsgs < 1; i++) drive(&p);
    CHECK_EQ_INT(x.nmsgs, 1);
    CHECK(strcmp(x.texts[0], "frag") == 0);
    /* silence: a ping after keepalive_ms, a drop after twice that */
    fake_now += 30000;
    CHECK(peer_expect(&p, "ping", f, sizeof f));
    fake_now += 30000;
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_ETIMEOUT);
    peer_close(&p);
    /* a close frame with 1008: reconnect (it may be a rate limit) ... */
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    uint8_t cp[WS_MAX_CONTROL];
    size_t cl = ws_close_payload(cp, WS_CLOSE_POLICY, "token revoked");
    peer_frame(&p, WS_OP_CLOSE, true, (const char *)cp, cl);
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_ECLOSED);
    CHECK_EQ_INT(parley_last_error(c)->close_code, WS_CLOSE_POLICY);
    CHECK(strstr(parley_last_error(c)->message, "token revoked") != NULL);
    /* the client echoed the close */
    bool echoed = false;
    for (int i = 0; i < 10; i++) {
        op = peer_recv(&p, f, sizeof f);
        if (op < 0) break;
        if (op == WS_OP_CLOSE) { echoed = true; break; }
    }
    CHECK(echoed);
    peer_close(&p);
    /* ... and the upgrade's 401 tells it was the token: stop for good */
    fake_now += x.delays[x.nstates - 1];
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 401, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CLOSED));
    CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_EAUTH);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(libuv_mode)
{
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, false); /* real clock: uv timers */
    CHECK_EQ_INT(parley_attach_uv(c, &loop), PARLEY_OK);
    CHECK_EQ_INT(parley_attach_uv(c, &loop), PARLEY_EINVALID);
    CHECK_EQ_INT(parley_run(c, 0), PARLEY_EINVALID);
    p.loop = &loop;
    char cmid[PARLEY_CMID_MAX], f[4096], got[80];
    CHECK_EQ_INT(parley_send(c, 3, "via uv", cmid), PARLEY_OK);
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK(peer_expect(&p, "send", f, sizeof f));
    str_field(f, "cmid", got, sizeof got);
    CHECK(strcmp(got, cmid) == 0);
    char ack[256];
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":3,\"seq\":1,\"ts\":5}", cmid);
    peer_text(&p, ack);
    peer_text(&p, "{\"type\":\"msg\",\"conv\":3,\"seq\":2,\"from\":\"bob\",\"cmid\":\"q\",\"ts\":1,\"body\":\"uv!\"}");
    for (int i = 0; i < 500 && (x.nacks < 1 || x.nmsgs < 1); i++) drive(&p);
    CHECK_EQ_INT(x.nacks, 1);
    CHECK_EQ_INT(x.nmsgs, 1);
    CHECK_EQ_INT(parley_pending(c), 0);
    /* typing goes out at once, coalesced after that */
    CHECK_EQ_INT(parley_typing(c, 3), 1);
    CHECK_EQ_INT(parley_typing(c, 3), 0);
    CHECK(peer_expect(&p, "typing", f, sizeof f));
    /* the peer goes away: backoff on the loop's timer, then reconnect */
    peer_close(&p);
    CHECK(wait_state(&p, &x, PARLEY_BACKOFF));
    CHECK(peer_accept(&p)); /* the timer fires within the first ceiling (1 s) */
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    parley_close(c);
    parley_free(c);
    uv_run(&loop, UV_RUN_DEFAULT); /* close callbacks free the handles */
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

/* A clock that moves on at every look, as on a slow machine: time always
 * passes between pump() writing what is due and the timer it then arms. */
static uint64_t step_clock_fn(void *ctx) { (void)ctx; return fake_now++; }

/* The paced CLI's stall (it stopped after 58-82 of 100 acks): the loop's
 * timer fired just before a pause ended, pump() had nothing to write, and
 * by the time the next deadline was taken the pause was over, so the
 * refused message counted as "due now" and no timer was armed for it: the
 * next wake was the keepalive, tens of seconds on. With pauses of several
 * lengths (so that some end between the two looks), every refused message
 * is resent once its pause is over, driven by the libuv timer alone. */
TEST(libuv_resends_when_a_pause_ends_between_looks)
{
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", p.port);
    parley_options o;
    parley_options_init(&o);
    o.server = url;
    o.token = "tok-123";
    o.allocator = &counting;
    o.callbacks = &callbacks;
    o.userdata = &x;
    o.random = rnd_fn;
    o.clock_ms = step_clock_fn;
    parley_client *c = NULL;
    CHECK_EQ_INT(parley_new(&o, &c), PARLEY_OK);
    CHECK_EQ_INT(parley_attach_uv(c, &loop), PARLEY_OK);
    p.loop = &loop;
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(wait_state(&p, &x, PARLEY_CONNECTED));
    char cmid[PARLEY_CMID_MAX], f[4096], got[80], frame[256];
    int resent = 0;
    for (int retry = 1; retry <= 12; retry++) {
        CHECK_EQ_INT(parley_send(c, 4, "paced", cmid), PARLEY_OK);
        CHECK(peer_expect(&p, "send", f, sizeof f));
        snprintf(frame, sizeof frame, "{\"type\":\"error\",\"code\":\"rate_limited\",\"message\":"
                 "\"slow down\",\"retry_after_ms\":%d,\"ref\":\"%s\"}", retry, cmid);
        peer_text(&p, frame);
        /* nothing else happens: only the client's timer can bring it back */
        if (!peer_expect(&p, "send", f, sizeof f)) break;
        str_field(f, "cmid", got, sizeof got);
        CHECK(strcmp(got, cmid) == 0);
        resent++;
        snprintf(frame, sizeof frame, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":4,\"seq\":%d,\"ts\":5}",
                 cmid, resent);
        peer_text(&p, frame);
        for (int i = 0; i < 200 && parley_pending(c); i++) drive(&p);
        CHECK_EQ_INT(parley_pending(c), 0);
    }
    CHECK_EQ_INT(resent, 12);
    parley_close(c);
    parley_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(resync_catches_up_on_the_same_connection)
{
    /* The server lost events for this session (its node lost the bus) and
     * says `resync`: the client lists the inbox since its cursor and syncs
     * the conversation that changed, on the same connection, and fetches
     * the message it missed; it resends nothing, acked or not. */
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096], cm[2][PARLEY_CMID_MAX], got[64][PARLEY_CMID_MAX], frame[512];
    parley_track(c, 9, 4);
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":["
                  "{\"id\":9,\"type\":\"direct\",\"last_seq\":4}],\"cursor\":77,\"more\":false}}");
    /* ours: seq 5 acked, the second on its way (no ack yet) */
    CHECK_EQ_INT(parley_send(c, 9, "mine", cm[0]), PARLEY_OK);
    CHECK_EQ_INT(parley_send(c, 9, "unacked", cm[1]), PARLEY_OK);
    CHECK_EQ_INT(peer_sends(&p, got, NULL, NULL), 2);
    snprintf(frame, sizeof frame, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":9,\"seq\":5,\"ts\":5}", cm[0]);
    peer_text(&p, frame);
    for (int i = 0; i < 200 && x.nacks < 1; i++) drive(&p);
    CHECK_EQ_INT(x.nacks, 1);
    /* bob's seq 6 is stored but never reaches us live; then the resync */
    int states = x.nstates;
    peer_text(&p, "{\"type\":\"resync\",\"reason\":\"bus\"}");
    int ninbox = 0;
    CHECK_EQ_INT(peer_sends(&p, NULL, "inbox", &ninbox), 0); /* nothing resent */
    CHECK_EQ_INT(ninbox, 1);
    CHECK_EQ_INT(x.nresync, 1);
    CHECK(strcmp(x.resync_reason, "bus") == 0);
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":["
                  "{\"id\":9,\"type\":\"direct\",\"last_seq\":6}],\"cursor\":80,\"more\":false}}");
    CHECK(peer_expect(&p, "sync", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "conv"), 9);
    CHECK_EQ_INT(num_field(f, "after"), 5);
    peer_history(&p, 9, 6, 6, false);
    for (int i = 0; i < 200 && x.nmsgs < 1; i++) drive(&p);
    CHECK_EQ_INT(x.nmsgs, 1);
    CHECK_EQ_INT(x.msgs[0], 6);
    CHECK_EQ_INT(parley_highest(c, 9), 6);
    /* the same connection all along: no state change, nothing resent */
    CHECK_EQ_INT(x.nstates, states);
    CHECK_EQ_INT(last_state(&x), PARLEY_CONNECTED);
    CHECK_EQ_INT(peer_sends(&p, NULL, NULL, NULL), 0);
    CHECK_EQ_INT(parley_pending(c), 1);
    /* the unacked one goes again only as usual: after the ack timeout */
    fake_now += 15000;
    CHECK_EQ_INT(peer_sends(&p, got, NULL, NULL), 1);
    CHECK(strcmp(got[0], cm[1]) == 0);
    /* the walk kept its cursor: the next resync asks from 80; a resync
     * without a reason says "" */
    peer_text(&p, "{\"type\":\"resync\"}");
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 80);
    CHECK_EQ_INT(x.nresync, 2);
    CHECK(strcmp(x.resync_reason, "") == 0);
    /* frame types the client does not know are still ignored */
    peer_text(&p, "{\"type\":\"from_the_future\",\"conv\":9,\"seq\":99}");
    peer_text(&p, "{\"type\":\"msg\",\"conv\":9,\"seq\":7,\"from\":\"bob\",\"cmid\":\"b7\",\"ts\":1,\"body\":\"m7\"}");
    for (int i = 0; i < 200 && x.nmsgs < 2; i++) drive(&p);
    CHECK_EQ_INT(x.nmsgs, 2);
    CHECK_EQ_INT(x.msgs[1], 7);
    CHECK_EQ_INT(parley_highest(c, 9), 7);
    CHECK_EQ_INT(last_state(&x), PARLEY_CONNECTED);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(resync_during_a_walk_and_refused_pages)
{
    /* A resync while the walk after hello is on its way: that walk may have
     * listed the inbox before the loss, so the client walks once more, from
     * the cursor it ends with (not twice at once). A page refused with busy
     * is asked again after the pause, silently. */
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, true);
    p.c = c;
    char f[4096], tok[64];
    parley_connect(c);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    peer_text(&p, "{\"type\":\"resync\",\"reason\":\"bus\"}");
    int ninbox = 0;
    peer_sends(&p, NULL, "inbox", &ninbox);
    CHECK_EQ_INT(ninbox, 0); /* not a second walk at once */
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":[],"
                  "\"cursor\":40,\"more\":true,\"next\":\"0.40.7.1\"}}");
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    str_field(f, "page", tok, sizeof tok);
    CHECK(strcmp(tok, "0.40.7.1") == 0);
    /* that page is refused for now: again after the pause, same page */
    peer_text(&p, "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"later\",\"ref\":\"resume\","
                  "\"retry_after_ms\":500}");
    ninbox = 0;
    peer_sends(&p, NULL, "inbox", &ninbox);
    CHECK_EQ_INT(ninbox, 0);
    fake_now += 500;
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    str_field(f, "page", tok, sizeof tok);
    CHECK(strcmp(tok, "0.40.7.1") == 0);
    CHECK_EQ_INT(x.nerrs, 0); /* handled, not the app's business */
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":[],"
                  "\"cursor\":40,\"more\":false}}");
    /* the walk ended: once more for the resync, from its cursor */
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 40);
    CHECK(strstr(f, "page") == NULL);
    peer_text(&p, "{\"type\":\"inbox\",\"id\":\"resume\",\"inbox\":{\"conversations\":[],"
                  "\"cursor\":45,\"more\":false}}");
    ninbox = 0;
    peer_sends(&p, NULL, "inbox", &ninbox);
    CHECK_EQ_INT(ninbox, 0); /* and only once */
    /* a refusal that is not for now ends the walk and is reported */
    peer_text(&p, "{\"type\":\"resync\"}");
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 45);
    peer_text(&p, "{\"type\":\"error\",\"code\":\"bad_request\",\"message\":\"no\",\"ref\":\"resume\"}");
    for (int i = 0; i < 100 && x.nerrs < 1; i++) drive(&p);
    CHECK_EQ_INT(x.nerrs, 1);
    CHECK(strcmp(x.errs[0], "bad_request") == 0);
    fake_now += 20000; /* under the keepalive */
    ninbox = 0;
    peer_sends(&p, NULL, "inbox", &ninbox);
    CHECK_EQ_INT(ninbox, 0);
    /* the next resync walks from the cursor kept */
    peer_text(&p, "{\"type\":\"resync\"}");
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(num_field(f, "changed_since"), 45);
    CHECK_EQ_INT(last_state(&x), PARLEY_CONNECTED);
    parley_close(c);
    parley_free(c);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

TEST(libuv_refused_walk_page_wakes_the_timer)
{
    /* On a loop only the client's timer brings the refused page back when
     * the pause ends (nothing else is due): not the keepalive, 30 s on. */
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    peer p;
    peer_listen(&p);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client(p.port, &x, false);
    CHECK_EQ_INT(parley_attach_uv(c, &loop), PARLEY_OK);
    p.loop = &loop;
    char f[4096];
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    CHECK(peer_accept(&p));
    CHECK(peer_handshake(&p, 101, NULL));
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    peer_text(&p, "{\"type\":\"error\",\"code\":\"busy\",\"message\":\"later\",\"ref\":\"resume\","
                  "\"retry_after_ms\":30}");
    CHECK(peer_expect(&p, "inbox", f, sizeof f));
    CHECK_EQ_INT(x.nerrs, 0);
    parley_close(c);
    parley_free(c);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    peer_close(&p);
    close(p.ls);
    CHECK_EQ_INT(live, 0);
}

static int closed_port(void)
{
    peer p;
    peer_listen(&p);
    close(p.ls);
    return p.port;
}

/* Which server a connect went to: the first of the peers with a pending
 * connection (accepted into p->fd), or -1 when none has one. */
static int accept_any(peer *const *ps, int n)
{
    for (int i = 0; i < 2000; i++) {
        for (int k = 0; k < n; k++) {
            struct pollfd q = {ps[k]->ls, POLLIN, 0};
            if (poll(&q, 1, 0) > 0) {
                ps[k]->fd = accept(ps[k]->ls, NULL, NULL);
                peer_socket(ps[k]->fd);
                ps[k]->len = 0;
                return k;
            }
        }
        drive(ps[0]);
    }
    return -1;
}

TEST(failover_round_robin)
{
    /* Three servers: nobody listens on the first, A and B are peers. The
     * client goes down the list on every failure (a refused connect, a
     * dropped connection), round robin, resends the unacked message with
     * its cmid on the next server, and its backoff ceiling doubles once per
     * round of three, not per failure. */
    peer a, b;
    peer_listen(&a);
    peer_listen(&b);
    int dead = closed_port();
    char url[200], dead_url[64], a_url[64], b_url[64];
    snprintf(dead_url, sizeof dead_url, "http://127.0.0.1:%d", dead);
    snprintf(a_url, sizeof a_url, "http://127.0.0.1:%d", a.port);
    snprintf(b_url, sizeof b_url, "http://127.0.0.1:%d", b.port);
    snprintf(url, sizeof url, "%s,%s, %s", dead_url, a_url, b_url);
    seen x;
    memset(&x, 0, sizeof x);
    rnd_fixed = true;
    rnd_const = 0x9e3779b97f4a7c15ull;
    parley_client *c = new_client_at(url, &x, true);
    a.c = b.c = c;
    client_backoff model;
    client_backoff_init(&model, 1000, 60000);
    client_backoff_set_round(&model, 3);
    peer *both[2] = {&a, &b};
    char cmid[PARLEY_CMID_MAX], f[4096], got[80], ack[256];
    CHECK(strcmp(parley_server(c), dead_url) == 0);
    CHECK_EQ_INT(parley_send(c, 7, "kept", cmid), PARLEY_OK);
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    /* 1. refused: on to A after one base-ceiling delay */
    CHECK(wait_state(&a, &x, PARLEY_BACKOFF));
    CHECK_EQ_INT(x.state_errs[x.nstates - 1], PARLEY_EIO);
    CHECK_EQ_INT(x.delays[x.nstates - 1], client_backoff_next(&model, rnd_const, 0));
    CHECK(strcmp(parley_server(c), a_url) == 0);
    fake_now += x.delays[x.nstates - 1];
    CHECK_EQ_INT(accept_any(both, 2), 0);
    CHECK(peer_handshake(&a, 101, NULL));
    CHECK(wait_state(&a, &x, PARLEY_CONNECTED));
    CHECK(peer_expect(&a, "send", f, sizeof f));
    str_field(f, "cmid", got, sizeof got);
    CHECK(strcmp(got, cmid) == 0);
    /* 2. A drops it before the ack: on to B, the same ceiling */
    peer_close(&a);
    CHECK(wait_state(&a, &x, PARLEY_BACKOFF));
    CHECK_EQ_INT(x.delays[x.nstates - 1], client_backoff_next(&model, rnd_const, 0));
    CHECK(client_backoff_ceiling(&model) == 1000);
    CHECK(strcmp(parley_server(c), b_url) == 0);
    fake_now += x.delays[x.nstates - 1];
    CHECK_EQ_INT(accept_any(both, 2), 1);
    CHECK(peer_handshake(&b, 101, NULL));
    CHECK(wait_state(&b, &x, PARLEY_CONNECTED));
    CHECK(peer_expect(&b, "inbox", f, sizeof f));
    CHECK(peer_expect(&b, "send", f, sizeof f)); /* the resend, same cmid */
    str_field(f, "cmid", got, sizeof got);
    CHECK(strcmp(got, cmid) == 0);
    snprintf(ack, sizeof ack, "{\"type\":\"ack\",\"cmid\":\"%s\",\"conv\":7,\"seq\":1,\"ts\":5,"
             "\"duplicate\":true}", cmid);
    peer_text(&b, ack);
    for (int i = 0; i < 200 && x.nacks < 1; i++) drive(&b);
    CHECK_EQ_INT(x.nacks, 1);
    CHECK_EQ_INT(parley_pending(c), 0);
    /* 3. B goes too: round robin, back to the first (refused), then A,
     * where the second round's ceiling starts */
    peer_close(&b);
    CHECK(wait_state(&b, &x, PARLEY_BACKOFF));
    CHECK_EQ_INT(x.delays[x.nstates - 1], client_backoff_next(&model, rnd_const, 0));
    CHECK(strcmp(parley_server(c), dead_url) == 0);
    fake_now += x.delays[x.nstates - 1];
    int before = x.nstates;
    for (int i = 0; i < 2000 && !(x.nstates > before + 1 && last_state(&x) == PARLEY_BACKOFF); i++)
        drive(&a);
    CHECK_EQ_INT(last_state(&x), PARLEY_BACKOFF);
    CHECK_EQ_INT(client_backoff_ceiling(&model), 2000);
    CHECK_EQ_INT(x.delays[x.nstates - 1], client_backoff_next(&model, rnd_const, 0));
    CHECK(strcmp(parley_server(c), a_url) == 0);
    fake_now += x.delays[x.nstates - 1];
    CHECK_EQ_INT(accept_any(both, 2), 0);
    CHECK(peer_handshake(&a, 101, NULL));
    CHECK(wait_state(&a, &x, PARLEY_CONNECTED));
    parley_close(c);
    parley_free(c);
    peer_close(&a);
    close(a.ls);
    close(b.ls);
    rnd_fixed = false;
    CHECK_EQ_INT(live, 0);
}

TEST(rest_failover)
{
    /* REST calls go to the server in use; one that cannot connect (nothing
     * was sent) goes on down the list, and the server that answers becomes
     * the server in use, for REST and for the next connect. */
    peer a, b;
    peer_listen(&a);
    peer_listen(&b);
    int dead = closed_port();
    char url[200], a_url[64], b_url[64];
    snprintf(a_url, sizeof a_url, "http://127.0.0.1:%d", a.port);
    snprintf(b_url, sizeof b_url, "http://127.0.0.1:%d", b.port);
    snprintf(url, sizeof url, "http://127.0.0.1:%d,%s,%s", dead, a_url, b_url);
    seen x;
    memset(&x, 0, sizeof x);
    parley_client *c = new_client_at(url, &x, false);
    rest_peer r;
    rest_peer_start(&r, a.ls, 200, "{\"user\":\"alice\",\"token\":\"tok-123\",\"device\":1,"
                    "\"expires\":5}");
    CHECK_EQ_INT(parley_login(c, "alice", "password123", NULL), PARLEY_OK);
    rest_peer_join(&r);
    CHECK(r.got && strcmp(r.path, "/v1/sessions") == 0);
    CHECK(strcmp(parley_server(c), a_url) == 0);
    /* a failure after the request was sent is not repeated elsewhere */
    rest_peer_start(&r, a.ls, 503, "{\"error\":{\"code\":\"busy\",\"message\":\"later\"}}");
    parley_inbox *in = NULL;
    CHECK_EQ_INT(parley_get_inbox(c, 0, &in), PARLEY_EBUSY);
    rest_peer_join(&r);
    CHECK(r.got);
    struct pollfd q = {b.ls, POLLIN, 0};
    CHECK_EQ_INT(poll(&q, 1, 0), 0); /* B was never asked */
    CHECK(strcmp(parley_server(c), a_url) == 0);
    /* the live connection goes to the server in use */
    a.c = c;
    CHECK_EQ_INT(parley_connect(c), PARLEY_OK);
    peer *both[2] = {&a, &b};
    CHECK_EQ_INT(accept_any(both, 2), 0);
    CHECK(peer_handshake(&a, 101, NULL));
    CHECK(wait_state(&a, &x, PARLEY_CONNECTED));
    /* A stops listening (its WebSocket stays): a REST call skips it and the
     * closed one after it, and B answers... */
    close(a.ls);
    rest_peer_start(&r, b.ls, 200, "{\"conversations\":[],\"cursor\":3,\"more\":false}");
    CHECK_EQ_INT(parley_get_inbox_page(c, 0, NULL, 0, &in), PARLEY_OK);
    rest_peer_join(&r);
    parley_inbox_free(c, in);
    CHECK(strcmp(parley_server(c), b_url) == 0);
    /* ... so when A's connection drops, the next connect goes to B, the
     * server that answered, not to the one after A */
    peer_close(&a);
    CHECK(wait_state(&a, &x, PARLEY_BACKOFF));
    CHECK(strcmp(parley_server(c), b_url) == 0);
    parley_close(c);
    /* none can be reached: the error says so */
    close(b.ls);
    CHECK_EQ_INT(parley_get_inbox_page(c, 0, NULL, 0, &in), PARLEY_EIO);
    CHECK(strstr(parley_last_error(c)->message, "nor any other server") != NULL);
    parley_free(c);
    CHECK_EQ_INT(live, 0);
}

int main(void)
{
    test_seed();
    RUN(argument_errors);
    RUN(allocation_failures);
    RUN(device_key_kept_and_sent_at_login);
    RUN(backoff_when_refused);
    RUN(resend_same_cmid_after_reconnect);
    RUN(gap_fill_and_dedupe);
    RUN(inbox_pages_and_trimmed_sync_pages);
    RUN(lost_ack_found_by_sync);
    RUN(refused_send_is_dropped_and_reported);
    RUN(rate_limited_without_ref);
    RUN(rate_limited_pauses_the_connection);
    RUN(max_inflight_is_capped_by_the_protocol);
    RUN(retry_after_and_auth);
    RUN(control_frames_fragments_keepalive);
    RUN(libuv_mode);
    RUN(libuv_resends_when_a_pause_ends_between_looks);
    RUN(resync_catches_up_on_the_same_connection);
    RUN(resync_during_a_walk_and_refused_pages);
    RUN(libuv_refused_walk_page_wakes_the_timer);
    RUN(failover_round_robin);
    RUN(rest_failover);
    return test_summary("client");
}
