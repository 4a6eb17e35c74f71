/* libFuzzer driver for the WebSocket codec (src/ws.c) and the UTF-8
 * validator (src/utf8.c). tests/fuzz/replay.c supplies main() for corpus
 * replay without libFuzzer.
 *
 * The input is read as a stream of frames, once as a server (masked frames,
 * default limits) and once as a client (unmasked frames, a small limit).
 * Every result is checked against invariants and against a small model of
 * the message rules written independently of ws_reader_check(). The input
 * is also fed to utf8_feed() in two pieces and compared with the whole and
 * with a naive decoder, and used as a close reason. An input starting with
 * "GET " also goes through the HTTP parser and the WebSocket handshake.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"
#include "codec/utf8.h"
#include "codec/ws.h"

#define REQUIRE(c) do { \
    if (!(c)) { \
        fprintf(stderr, "fuzz_ws: invariant failed: %s (%s:%d)\n", #c, \
                __FILE__, __LINE__); \
        abort(); \
    } } while (0)

/* Naive UTF-8 check, independent of the DFA. */
static bool ref_utf8(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0)      { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

/* True if s[0..n) can be extended to valid UTF-8: valid, or valid up to
 * an unfinished last sequence that some continuation bytes would complete.
 * Only the second byte of a sequence is restricted beyond 80..BF, so trying
 * each second byte with 0x80 fills after it is exhaustive. */
static bool ref_prefix(const uint8_t *s, size_t n)
{
    if (ref_utf8(s, n))
        return true;
    size_t j = n;
    while (j > 0 && n - j < 4 && (s[j - 1] & 0xC0) == 0x80)
        j--;
    if (j == 0)
        return false;
    j--;                                  /* the last lead byte */
    size_t cut = n - j;
    uint8_t lead = s[j];
    size_t need = (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3
                : (lead & 0xF8) == 0xF0 ? 4 : 0;
    if (need <= cut || !ref_utf8(s, j))
        return false;
    uint8_t t[4];
    memcpy(t, s + j, cut);
    for (unsigned b = 0x80; b <= 0xBF; b++) {
        if (cut == 1)
            t[1] = (uint8_t)b;
        for (size_t k = cut > 1 ? cut : 2; k < need; k++)
            t[k] = 0x80;
        if (ref_utf8(t, need))
            return true;
        if (cut > 1)
            break;
    }
    return false;
}

static void require_code(int rc, uint16_t code)
{
    switch (rc) {
    case ERR_PROTOCOL:  REQUIRE(code == WS_CLOSE_PROTOCOL); break;
    case ERR_TOO_LARGE: REQUIRE(code == WS_CLOSE_TOO_BIG); break;
    case ERR_UTF8:      REQUIRE(code == WS_CLOSE_BAD_DATA); break;
    default:            REQUIRE(!"unexpected error code");
    }
}

/* The model's view of the message in progress. */
typedef struct model {
    uint8_t op;        /* 0: none */
    size_t len;
    uint8_t *text;     /* accumulated text payload (capacity: input size) */
} model;

/* What ws_reader_check() must answer for f, per ws.h. */
static int model_check(model *m, const ws_frame *f, const ws_limits *lim,
                       uint16_t *code)
{
    if (f->opcode & 0x8) {
        if (f->opcode != WS_OP_CLOSE || f->len == 0)
            return ERR_OK;
        if (f->len == 1) { *code = 1002; return ERR_PROTOCOL; }
        unsigned c = (unsigned)f->payload[0] << 8 | f->payload[1];
        bool ok = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                  (c >= 3000 && c <= 4999);
        if (!ok) { *code = 1002; return ERR_PROTOCOL; }
        if (!ref_utf8(f->payload + 2, (size_t)f->len - 2)) {
            *code = 1007;
            return ERR_UTF8;
        }
        return ERR_OK;
    }
    if (f->opcode == WS_OP_CONT && m->op == 0) { *code = 1002; return ERR_PROTOCOL; }
    if (f->opcode != WS_OP_CONT && m->op != 0) { *code = 1002; return ERR_PROTOCOL; }
    uint8_t op = f->opcode == WS_OP_CONT ? m->op : f->opcode;
    size_t before = f->opcode == WS_OP_CONT ? m->len : 0;
    if (before + f->len > lim->max_message) { *code = 1009; return ERR_TOO_LARGE; }
    if (op == WS_OP_TEXT) {
        memcpy(m->text + before, f->payload, (size_t)f->len);
        size_t n = before + (size_t)f->len;
        bool whole = ref_utf8(m->text, n);
        bool prefix = ref_prefix(m->text, n);
        if (!prefix || (f->fin && !whole)) { *code = 1007; return ERR_UTF8; }
    }
    if (f->fin) {
        m->op = 0;
        m->len = 0;
    } else {
        m->op = op;
        m->len = before + (size_t)f->len;
    }
    return ERR_OK;
}

static void run_frames(const uint8_t *data, size_t size, enum ws_role role,
                       const ws_limits *lim)
{
    uint8_t *buf = malloc(size ? size : 1);
    uint8_t *text = malloc(size ? size : 1);
    REQUIRE(buf && text);
    memcpy(buf, data, size);
    ws_reader r;
    memset(&r, 0, sizeof r);
    model m = { 0, 0, text };
    size_t off = 0;

    while (off < size) {
        uint8_t *p = buf + off;
        const uint8_t *orig = data + off;
        size_t rem = size - off;
        ws_frame f;
        uint16_t code = 0;
        int rc = ws_parse_frame(p, rem, role, lim, &f, &code);

        if (rc < 0) {
            /* Untouched, and every shorter prefix agrees. */
            REQUIRE(memcmp(p, orig, rem) == 0);
            if (rc != ERR_AGAIN)
                require_code(rc, code);
            for (size_t k = 0; k < rem && k <= 16; k++) {
                uint16_t c2 = 0;
                int rk = ws_parse_frame(p, k, role, lim, &f, &c2);
                REQUIRE(rk == ERR_AGAIN || (rk == rc && c2 == code));
            }
            break;
        }

        size_t n = (size_t)rc;
        REQUIRE(n > 0 && n <= rem);
        REQUIRE(f.header_len >= 2 && f.header_len <= WS_MAX_HEADER);
        REQUIRE(f.header_len + f.len == n);
        REQUIRE(f.payload == p + f.header_len);
        REQUIRE(f.masked == (role == WS_SERVER));
        REQUIRE(f.opcode <= 2 || (f.opcode >= 8 && f.opcode <= 10));
        if (f.opcode & 0x8)
            REQUIRE(f.fin && f.len <= WS_MAX_CONTROL);
        else
            REQUIRE(f.len <= lim->max_message);
        REQUIRE(memcmp(p, orig, f.header_len) == 0);
        /* The payload was unmasked in place with the frame's key. */
        const uint8_t *key = f.masked ? p + f.header_len - 4 : NULL;
        for (size_t i = 0; i < f.len; i++)
            REQUIRE(f.payload[i] ==
                    (orig[f.header_len + i] ^ (key ? key[i & 3] : 0)));
        /* Re-encoding gives the same header when the same form was used. */
        uint8_t h[WS_MAX_HEADER];
        size_t hn = ws_frame_header(h, f.opcode, f.fin, f.len, key);
        REQUIRE(hn >= 2 && hn <= WS_MAX_HEADER && hn <= f.header_len);
        if (hn == f.header_len)
            REQUIRE(memcmp(h, orig, hn) == 0);
        /* Every strict prefix needs more. */
        for (size_t k = 0; k < n && k <= 16; k++) {
            ws_frame g;
            REQUIRE(ws_parse_frame(p, k, role, lim, &g, &code) == ERR_AGAIN);
        }
        ws_frame g;
        REQUIRE(ws_parse_frame(p, n - 1, role, lim, &g, &code) == ERR_AGAIN);

        uint16_t want_code = 0;
        code = 0;
        int want = model_check(&m, &f, lim, &want_code);
        ws_reader before = r;
        int rc2 = ws_reader_check(&r, &f, lim, &code);
        REQUIRE(rc2 == want);
        if (rc2 < 0) {
            require_code(rc2, code);
            REQUIRE(code == want_code);
            break;
        }
        REQUIRE(rc2 == ERR_OK);
        REQUIRE(r.utf8 != UTF8_REJECT);
        REQUIRE(r.msg_len <= lim->max_message);
        REQUIRE(r.opcode == m.op && r.msg_len == m.len);
        if (f.opcode & 0x8)
            REQUIRE(memcmp(&r, &before, sizeof r) == 0);
        if (r.opcode != WS_OP_TEXT)
            REQUIRE(r.utf8 == UTF8_ACCEPT);
        if (r.opcode == 0)
            REQUIRE(r.msg_len == 0);
        off += n;
    }
    free(text);
    free(buf);
}

static void run_utf8(const uint8_t *data, size_t size)
{
    bool valid = utf8_valid(data, size);
    REQUIRE(valid == ref_utf8(data, size));
    uint32_t whole = utf8_feed(UTF8_ACCEPT, data, size);
    REQUIRE((whole == UTF8_ACCEPT) == valid);
    /* Rejected exactly when no continuation could make it valid. */
    REQUIRE((whole == UTF8_REJECT) == !ref_prefix(data, size));
    size_t splits[3] = { size / 2, size ? data[0] % (size + 1) : 0,
                         size ? size - 1 : 0 };
    for (int i = 0; i < 3; i++) {
        size_t k = splits[i];
        uint32_t st = utf8_feed(UTF8_ACCEPT, data, k);
        st = utf8_feed(st, data + k, size - k);
        REQUIRE(st == whole);
    }
}

static void run_close_payload(const uint8_t *data, size_t size)
{
    char reason[200];
    size_t n = size < sizeof reason - 1 ? size : sizeof reason - 1;
    memcpy(reason, data, n);
    reason[n] = '\0';
    uint8_t out[WS_MAX_CONTROL];
    uint16_t code = size >= 2 ? (uint16_t)(data[0] << 8 | data[1]) : 1000;
    size_t len = ws_close_payload(out, code, reason);
    REQUIRE(len >= 2 && len <= WS_MAX_CONTROL);
    REQUIRE(out[0] == code >> 8 && out[1] == (code & 0xFF));
    REQUIRE(memcmp(out + 2, reason, len - 2) == 0);
    REQUIRE(ref_utf8(out + 2, len - 2));
    size_t rl = strlen(reason);
    if (rl <= WS_MAX_CONTROL - 2 && ref_utf8((const uint8_t *)reason, rl))
        REQUIRE(len == 2 + rl);
}

static void run_mask(const uint8_t *data, size_t size)
{
    if (size < 5)
        return;
    const uint8_t *key = data;
    size_t n = size - 4;
    uint8_t *a = malloc(n), *b = malloc(n);
    REQUIRE(a && b);
    memcpy(a, data + 4, n);
    memcpy(b, data + 4, n);
    ws_mask(a, n, key, 0);
    size_t pos = 0, step = 1 + data[0] % 13;
    while (pos < n) {
        size_t k = n - pos < step ? n - pos : step;
        ws_mask(b + pos, k, key, pos);
        pos += k;
        step = step * 5 % 17 + 1;
    }
    REQUIRE(memcmp(a, b, n) == 0);
    for (size_t i = 0; i < n; i++)
        REQUIRE(a[i] == (data[4 + i] ^ key[i & 3]));
    free(a);
    free(b);
}

static void run_handshake(const uint8_t *data, size_t size)
{
    if (size < 4 || memcmp(data, "GET ", 4) != 0)
        return;
    char *buf = malloc(size);
    REQUIRE(buf);
    memcpy(buf, data, size);
    static http_request req; /* large; the fuzzer is single-threaded */
    http_limits hl;
    http_limits_default(&hl);
    int status = 0;
    if (http_parse_request(buf, size, &hl, &req, &status) > 0) {
        static const char *const protos[] = { "chat", "superchat", "v1.parley",
                                              NULL };
        ws_handshake hs;
        status = 0;
        int rc = ws_handshake_check(&req, protos, &hs, &status);
        if (rc == ERR_OK) {
            REQUIRE(status == 101);
            REQUIRE(hs.key.n == 24);
            REQUIRE(hs.protocol == NULL || hs.protocol == protos[0] ||
                    hs.protocol == protos[1] || hs.protocol == protos[2]);
            char out[256];
            int n = ws_handshake_response(out, sizeof out, &hs);
            REQUIRE(n > 0 && (size_t)n <= sizeof out);
            REQUIRE(memcmp(out, "HTTP/1.1 101 ", 13) == 0);
            REQUIRE(memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
            REQUIRE(ws_handshake_response(out, (size_t)n - 1, &hs) ==
                    ERR_TOO_LARGE);
        } else {
            REQUIRE(rc < 0 && (status == 400 || status == 426));
        }
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ws_limits server;
    ws_limits_default(&server);
    run_frames(data, size, WS_SERVER, &server);
    ws_limits client = { .max_message = 200 };
    run_frames(data, size, WS_CLIENT, &client);
    run_utf8(data, size);
    run_close_payload(data, size);
    run_mask(data, size);
    run_handshake(data, size);
    return 0;
}
