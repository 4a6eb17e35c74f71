/* wire: a blocking loopback client for the tests of the HTTP and WebSocket
 * handlers (router, api, proto), speaking to a real conn on a listener
 * added with fx_listen(). Requests are written by hand, responses and
 * frames read with the project's codecs (ws_parse_frame as a client).
 *
 *   wire *w = wire_connect(port);
 *   wire_resp r;
 *   wire_http(w, "GET", "/healthz", NULL, NULL, &r);  r.status, r.body, wire_header(&r, ...)
 *   wire *ws = wire_ws(port, token, NULL, &r);        101, then frames
 *   wire_text(ws, "{\"type\":\"ping\"}");
 *   char *frame = wire_next(ws);                      the next text frame (malloc'd)
 *
 * Reads time out after FX_WAIT_S (a failed test, never a hang). A test
 * that needs "nothing else arrived" sends a ping and expects the pong
 * next: a connection's frames are answered in order.
 */
#ifndef PARLEY_TEST_WIRE_H
#define PARLEY_TEST_WIRE_H

#include <errno.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "codec/ws.h"
#include "fixture.h"

typedef struct wire {
    int fd;
    uint8_t *buf;        /* bytes read, not yet consumed */
    size_t len, cap;
    bool eof;
    uint16_t close_code; /* the server's close frame, if one came */
    char close_reason[128];
} wire;

typedef struct wire_resp {
    int status;
    char head[8192];     /* status line and headers, NUL-terminated */
    char *body;          /* NUL-terminated (owned: wire_resp_free) */
    size_t body_len;
} wire_resp;

static inline wire *wire_connect(int port)
{
    wire *w = calloc(1, sizeof *w);
    if (!w) fx_fatal("out of memory");
    w->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (w->fd < 0 || connect(w->fd, (struct sockaddr *)&a, sizeof a) != 0) fx_fatal("connect");
    struct timeval tv = {FX_WAIT_S, 0};
    setsockopt(w->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(w->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return w;
}

static inline void wire_close(wire *w)
{
    if (!w) return;
    close(w->fd);
    free(w->buf);
    free(w);
}

static inline void wire_resp_free(wire_resp *r)
{
    free(r->body);
    r->body = NULL;
}

static inline void wire_write(wire *w, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = send(w->fd, c, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return; /* the server closed: the reads will tell */
        c += k;
        n -= (size_t)k;
    }
}

/* Reads more bytes into w->buf; false on EOF, error or timeout. */
static inline bool wire_fill(wire *w)
{
    if (w->eof) return false;
    if (w->cap - w->len < 65536) {
        size_t cap = w->cap ? w->cap * 2 : 131072;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) fx_fatal("out of memory");
        w->buf = b;
        w->cap = cap;
    }
    ssize_t k;
    do k = recv(w->fd, w->buf + w->len, w->cap - w->len, 0);
    while (k < 0 && errno == EINTR);
    if (k <= 0) { w->eof = true; return false; }
    w->len += (size_t)k;
    return true;
}

static inline void wire_consume(wire *w, size_t n)
{
    memmove(w->buf, w->buf + n, w->len - n);
    w->len -= n;
}

/* The value of header `name` in r (case-insensitive), or NULL. The result
 * is a static buffer, good until the next call. */
static inline const char *wire_header(const wire_resp *r, const char *name)
{
    static char v[1024];
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            h += n + 1;
            while (*h == ' ') h++;
            const char *e = strstr(h, "\r\n");
            size_t len = e ? (size_t)(e - h) : strlen(h);
            if (len >= sizeof v) len = sizeof v - 1;
            memcpy(v, h, len);
            v[len] = 0;
            return v;
        }
    }
    return NULL;
}

/* Reads one response. no_body: the request was HEAD (the head still
 * says how long the body would be). Returns false if the connection
 * closed (or timed out) before a whole response. */
static inline bool wire_read_resp(wire *w, bool no_body, wire_resp *r)
{
    memset(r, 0, sizeof *r);
    size_t end = 0;
    for (;;) {
        for (size_t i = 0; i + 3 < w->len; i++)
            if (memcmp(w->buf + i, "\r\n\r\n", 4) == 0) { end = i + 4; break; }
        if (end) break;
        if (!wire_fill(w)) return false;
    }
    size_t hn = end - 2 < sizeof r->head ? end - 2 : sizeof r->head - 1;
    memcpy(r->head, w->buf, hn);
    r->head[hn] = 0;
    wire_consume(w, end);
    r->status = atoi(r->head + 9);
    const char *cl = wire_header(r, "Content-Length");
    size_t len = cl && !no_body && r->status != 204 && r->status != 304 && r->status != 101
                     ? (size_t)strtoull(cl, NULL, 10) : 0;
    while (w->len < len)
        if (!wire_fill(w)) return false;
    r->body = malloc(len + 1);
    if (!r->body) fx_fatal("out of memory");
    memcpy(r->body, w->buf, len);
    r->body[len] = 0;
    r->body_len = len;
    wire_consume(w, len);
    return true;
}

/* Sends one request (extra: header lines, each ending in \r\n) and reads
 * its response. */
static inline bool wire_http(wire *w, const char *method, const char *path, const char *extra,
                             const char *body, wire_resp *r)
{
    char head[4096];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: test\r\n%s", method, path,
                     extra ? extra : "");
    if (body)
        n += snprintf(head + n, sizeof head - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
    wire_write(w, head, (size_t)n);
    if (blen) wire_write(w, body, blen);
    return wire_read_resp(w, strcmp(method, "HEAD") == 0, r);
}

/* One request on a connection of its own. */
static inline bool wire_http1(int port, const char *method, const char *path, const char *extra,
                              const char *body, wire_resp *r)
{
    wire *w = wire_connect(port);
    bool ok = wire_http(w, method, path, extra, body, r);
    wire_close(w);
    return ok;
}

/* "Authorization: Bearer <token>\r\n" */
static inline const char *wire_bearer(const char *token)
{
    static char h[128];
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", token);
    return h;
}

/* ---- WebSocket ---------------------------------------------------------------- */

/* Opens a WebSocket on /v1/ws with the token (NULL: none) and extra header
 * lines; r gets the handshake's response. NULL unless it is a 101. */
static inline wire *wire_ws(int port, const char *token, const char *extra, wire_resp *r)
{
    wire *w = wire_connect(port);
    char h[1024];
    snprintf(h, sizeof h,
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
             "Sec-WebSocket-Protocol: parley.v1.json\r\n%s%s",
             token ? wire_bearer(token) : "", extra ? extra : "");
    wire_resp tmp;
    wire_resp *out = r ? r : &tmp;
    if (!wire_http(w, "GET", "/v1/ws", h, NULL, out) || out->status != 101) {
        if (!r) wire_resp_free(&tmp);
        wire_close(w);
        return NULL;
    }
    if (!r) wire_resp_free(&tmp);
    return w;
}

/* Sends one masked frame. */
static inline void wire_send(wire *w, uint8_t opcode, bool fin, const void *p, size_t n)
{
    uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t hdr[WS_MAX_HEADER];
    size_t h = ws_frame_header(hdr, opcode, fin, n, key);
    uint8_t *frame = malloc(h + n + 1);
    if (!frame) fx_fatal("out of memory");
    memcpy(frame, hdr, h);
    if (n) memcpy(frame + h, p, n);
    ws_mask(frame + h, n, key, 0);
    wire_write(w, frame, h + n);
    free(frame);
}

static inline void wire_text(wire *w, const char *json)
{
    wire_send(w, WS_OP_TEXT, true, json, strlen(json));
}

/* The next frame from the server: its opcode and payload (malloc'd,
 * NUL-terminated). false on EOF or timeout. A close frame sets
 * close_code/close_reason. Pings are not answered (tests are short). */
static inline bool wire_frame(wire *w, uint8_t *opcode, char **payload, size_t *plen)
{
    ws_limits lim;
    ws_limits_default(&lim);
    lim.max_message = 1u << 24;
    for (;;) {
        ws_frame f;
        uint16_t code = 0;
        int r = w->len ? ws_parse_frame(w->buf, w->len, WS_CLIENT, &lim, &f, &code) : ERR_AGAIN;
        if (r == ERR_AGAIN) {
            if (!wire_fill(w)) return false;
            continue;
        }
        if (r < 0) fx_fatal("the server sent a bad frame");
        char *p = malloc(f.len + 1);
        if (!p) fx_fatal("out of memory");
        memcpy(p, f.payload, f.len);
        p[f.len] = 0;
        *opcode = f.opcode;
        *plen = f.len;
        *payload = p;
        if (f.opcode == WS_OP_CLOSE && f.len >= 2) {
            w->close_code = (uint16_t)(f.payload[0] << 8 | f.payload[1]);
            snprintf(w->close_reason, sizeof w->close_reason, "%.*s", (int)(f.len - 2),
                     (const char *)f.payload + 2);
        }
        wire_consume(w, (size_t)r);
        return true;
    }
}

/* The next text frame that is not presence (presence is lossy and comes
 * when contacts come and go), malloc'd; NULL if the connection closed
 * (close_code tells how) or timed out. */
static inline char *wire_next(wire *w)
{
    for (;;) {
        uint8_t op;
        char *p;
        size_t n;
        if (!wire_frame(w, &op, &p, &n)) return NULL;
        if (op == WS_OP_CLOSE) { free(p); return NULL; }
        if (op != WS_OP_TEXT || strstr(p, "\"type\":\"presence\"")) { free(p); continue; }
        return p;
    }
}

/* True if the server closed the connection: a close frame (its code in
 * close_code) or EOF, with no text frame before it except presence. */
static inline bool wire_closed(wire *w)
{
    char *p = wire_next(w);
    bool closed = p == NULL;
    free(p);
    return closed;
}

#endif
