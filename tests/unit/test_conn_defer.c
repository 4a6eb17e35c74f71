/* conn: answers that wait for other threads (src/net/conn.c). A WebSocket
 * upgrade the HTTP handler defers (conn_hold in on_request, conn_upgrade and
 * conn_resume later on the connection's thread): nothing is opened before,
 * and frames the client sent right after its request are read as WebSocket
 * frames once it resumes. conn_unhold: a hold ends, but input waits for the
 * output to drain. Handlers of the test's own, over a loopback listener. */
#include "test.h"

#include "fixture.h"
#include "wire.h"

/* ---- the test's handlers (each runs on the connection's thread) ---------- */

static struct {
    uv_mutex_t mu;
    int requests, opens, messages;
    uint64_t held;             /* the held connection's id */
    char key[64];              /* the deferred handshake's key, copied */
    size_t key_len;
    const char *protocol;
    int after_unhold;          /* messages seen right after conn_unhold */
} st;

static int count(int *v)
{
    uv_mutex_lock(&st.mu);
    int n = *v;
    uv_mutex_unlock(&st.mu);
    return n;
}

static const char *const protos[] = {"parley.v1.json", NULL};

static void on_request(conn *c, const http_request *req)
{
    ws_handshake hs;
    int status = 400;
    if (ws_handshake_check(req, protos, &hs, &status) < 0) {
        conn_respond(c, status, NULL, NULL, 0, false, false, NULL);
        return;
    }
    uv_mutex_lock(&st.mu);
    st.requests++;
    st.held = c->id;
    memcpy(st.key, hs.key.p, hs.key.n);
    st.key_len = hs.key.n;
    st.protocol = hs.protocol;
    uv_mutex_unlock(&st.mu);
    conn_hold(c);
}

static int on_open(conn *c)
{
    uv_mutex_lock(&st.mu);
    st.opens++;
    uv_mutex_unlock(&st.mu);
    return ERR_OK;
}

/* "hold" holds the connection; anything else is echoed. */
static void on_message(conn *c, const uint8_t *data, size_t len)
{
    uv_mutex_lock(&st.mu);
    st.messages++;
    st.held = c->id;
    uv_mutex_unlock(&st.mu);
    if (len == 4 && memcmp(data, "hold", 4) == 0) { conn_hold(c); return; }
    rbuf *b = rbuf_copy(data, len);
    conn_send_frame(c, WS_OP_TEXT, b); /* takes its own reference */
    rbuf_unref(b);
}

static void on_refused(conn *c, uint32_t retry_ms, const uint8_t *data, size_t len) {}
static bool on_tick(conn *c) { return true; }
static void on_close(conn *c, uint16_t code, const char *reason, bool by_peer) {}

static const conn_http_ops http_ops = {.on_request = on_request};
static const conn_ws_ops ws_ops = {.user_size = 8, .on_open = on_open, .on_message = on_message,
                                   .on_refused = on_refused, .on_tick = on_tick,
                                   .on_close = on_close};

static void start(fx *f)
{
    memset(f, 0, sizeof *f);
    memset(&st, 0, sizeof st);
    uv_mutex_init(&st.mu);
    f->nthreads = 1;
    srv_options opt = {
        .listen = "127.0.0.1", .port = SRV_NO_LISTEN, .threads = 1, .tls_cert = "",
        .tls_key = "", .max_message = 65536, .max_queue = 1 << 20, .max_body = 65536,
        .max_header_bytes = 16384, .request_timeout_ms = 10000, .idle_timeout_ms = 60000,
        .ping_interval_ms = 30000, .max_pending = 100, .rate_frames = 0,
    };
    if (server_create(&f->srv, &opt, &http_ops, &ws_ops, NULL) != ERR_OK) fx_fatal("server_create");
    server_run(f->srv);
}

static void stop(fx *f)
{
    fx_stop(f);
    uv_mutex_destroy(&st.mu);
}

/* Waits (bounded, by polling the thread) until *v reaches n. */
static bool wait_count(fx *f, int *v, int n)
{
    for (int i = 0; i < FX_WAIT_S * 1000; i++) {
        fx_barrier(f);
        if (count(v) >= n) return true;
        uv_sleep(1);
    }
    return false;
}

#define UPGRADE                                                                      \
    "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"     \
    "Sec-WebSocket-Protocol: parley.v1.json\r\n\r\n"

/* A masked text frame appended to buf at *n. */
static void put_frame(char *buf, size_t *n, const char *text)
{
    uint8_t key[4] = {1, 2, 3, 4};
    size_t len = strlen(text);
    size_t h = ws_frame_header((uint8_t *)buf + *n, WS_OP_TEXT, true, len, key);
    memcpy(buf + *n + h, text, len);
    ws_mask((uint8_t *)buf + *n + h, len, key, 0);
    *n += h + len;
}

static void finish_upgrade(srv_thread *t, void *arg)
{
    conn *c = srv_conn(t, st.held);
    if (!c || c->state != CONN_HTTP) return;
    ws_handshake hs = {{st.key, st.key_len}, st.protocol};
    if (conn_upgrade(c, &hs) < 0) { conn_abort(c); return; }
    conn_resume(c);
}

TEST(deferred_upgrade)
{
    fx f;
    start(&f);
    int port = fx_listen(&f, 0);
    wire *w = wire_connect(port);
    /* The request and, in the same write, a frame sent before any answer. */
    char buf[2048];
    size_t n = (size_t)snprintf(buf, sizeof buf, "%s", UPGRADE);
    put_frame(buf, &n, "early");
    wire_write(w, buf, n);
    CHECK(wait_count(&f, &st.requests, 1));
    /* Held: not upgraded, the early frame not read. */
    fx_barrier(&f);
    CHECK_EQ_INT(count(&st.opens), 0);
    CHECK_EQ_INT(count(&st.messages), 0);
    fx_run(&f, 0, finish_upgrade, NULL);
    CHECK_EQ_INT(count(&st.opens), 1);
    wire_resp r;
    CHECK(wire_read_resp(w, false, &r));
    CHECK_EQ_INT(r.status, 101);
    CHECK(strstr(r.head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") != NULL);
    CHECK(strstr(r.head, "Sec-WebSocket-Protocol: parley.v1.json") != NULL);
    wire_resp_free(&r);
    char *e = wire_next(w);
    CHECK(e && strcmp(e, "early") == 0); /* read as a WebSocket frame after the resume */
    free(e);
    wire_text(w, "later");
    e = wire_next(w);
    CHECK(e && strcmp(e, "later") == 0);
    free(e);
    wire_close(w);
    stop(&f);
}

static void gone_upgrade(srv_thread *t, void *arg)
{
    *(bool *)arg = srv_conn(t, st.held) == NULL;
}

TEST(deferred_upgrade_of_a_closed_connection)
{
    fx f;
    start(&f);
    int port = fx_listen(&f, 0);
    wire *w = wire_connect(port);
    wire_write(w, UPGRADE, strlen(UPGRADE));
    CHECK(wait_count(&f, &st.requests, 1));
    wire_close(w);
    /* Reading is stopped while held, so the peer's leaving is noticed once
     * the answer comes: the completion finds the connection still there,
     * upgrades it, and the connection then closes (EOF, or the 101's write). */
    bool gone = false;
    fx_run(&f, 0, gone_upgrade, &gone);
    CHECK(!gone);
    fx_run(&f, 0, finish_upgrade, NULL);
    for (int i = 0; i < FX_WAIT_S * 1000 && !gone; i++) {
        fx_run(&f, 0, gone_upgrade, &gone);
        if (!gone) uv_sleep(1);
    }
    CHECK(gone);
    stop(&f);
}

/* Answers the held frame and ends the hold with its answer still queued. */
static void answer_unhold(srv_thread *t, void *arg)
{
    conn *c = srv_conn(t, st.held);
    if (!c) return;
    rbuf *b = rbuf_copy("answer", 6);
    conn_send_frame(c, WS_OP_TEXT, b);
    rbuf_unref(b);
    conn_unhold(c);
    st.after_unhold = st.messages; /* the pipelined frame was not read yet */
    conn_unhold(c);                /* no longer held: nothing */
}

static void answer_resume(srv_thread *t, void *arg)
{
    conn *c = srv_conn(t, st.held);
    if (!c) return;
    rbuf *b = rbuf_copy("answer", 6);
    conn_send_frame(c, WS_OP_TEXT, b);
    rbuf_unref(b);
    conn_resume(c);
    st.after_unhold = st.messages; /* conn_resume reads what is buffered at once */
}

static void held_then(void (*fn)(srv_thread *, void *), int want_after)
{
    fx f;
    start(&f);
    int port = fx_listen(&f, 0);
    wire *w = wire_connect(port);
    wire_write(w, UPGRADE, strlen(UPGRADE));
    CHECK(wait_count(&f, &st.requests, 1));
    fx_run(&f, 0, finish_upgrade, NULL);
    wire_resp r;
    CHECK(wire_read_resp(w, false, &r) && r.status == 101);
    wire_resp_free(&r);
    char buf[256];
    size_t n = 0;
    put_frame(buf, &n, "hold");
    put_frame(buf, &n, "next");
    wire_write(w, buf, n);
    CHECK(wait_count(&f, &st.messages, 1));
    fx_barrier(&f);
    CHECK_EQ_INT(count(&st.messages), 1); /* held: "next" waits */
    fx_run(&f, 0, fn, NULL);
    CHECK_EQ_INT(st.after_unhold, want_after);
    char *a = wire_next(w);
    CHECK(a && strcmp(a, "answer") == 0);
    free(a);
    a = wire_next(w);
    CHECK(a && strcmp(a, "next") == 0); /* read once the answer was written */
    free(a);
    wire_close(w);
    stop(&f);
}

TEST(unhold_waits_for_the_output)
{
    held_then(answer_unhold, 1);
}

TEST(resume_reads_at_once)
{
    held_then(answer_resume, 2);
}

int main(void)
{
    RUN(deferred_upgrade);
    RUN(deferred_upgrade_of_a_closed_connection);
    RUN(unhold_waits_for_the_output);
    RUN(resume_reads_at_once);
    return test_summary("conn_defer");
}
