/* Unit tests for src/ws.c.
 *
 * Frames are built here byte by byte (independently of ws_frame_header),
 * masked as a client sends them, and each stream is fed three ways through
 * a small connection simulator: whole, one byte at a time, and in random
 * splits. Every strict prefix of a frame must give ERR_AGAIN with the
 * buffer untouched, unless a header-level error is already decidable, in
 * which case it must be reported at exactly that byte with its close code.
 */
#include "test.h"

#include <stdbool.h>

#include "codec/utf8.h"
#include "codec/ws.h"

#define FIN 0x80
#define RSV1 0x40
#define RSV2 0x20
#define RSV3 0x10

static const uint8_t KEY[4] = { 0x37, 0xfa, 0x21, 0x3d }; /* RFC 6455 5.7 */

/* ---- frame builder ------------------------------------------------------ */

/* Writes one frame: b0 as given (FIN, RSV, opcode), the length in the
 * smallest form unless `form` forces 7, 16 or 64 bits, masked with KEY when
 * `masked`. payload NULL means a filler pattern. Returns its size. */
static size_t put_frame_ex(uint8_t *out, uint8_t b0, bool masked, int form,
                           const void *payload, size_t n)
{
    size_t i = 0;
    uint8_t m = masked ? 0x80 : 0;
    out[i++] = b0;
    if (form == 0)
        form = n < 126 ? 7 : n <= 0xFFFF ? 16 : 64;
    if (form == 7) {
        out[i++] = (uint8_t)(m | n);
    } else if (form == 16) {
        out[i++] = m | 126;
        out[i++] = (uint8_t)(n >> 8);
        out[i++] = (uint8_t)n;
    } else {
        out[i++] = m | 127;
        for (int k = 7; k >= 0; k--)
            out[i++] = (uint8_t)((uint64_t)n >> (8 * k));
    }
    if (masked) {
        memcpy(out + i, KEY, 4);
        i += 4;
    }
    const uint8_t *p = payload;
    for (size_t k = 0; k < n; k++) {
        uint8_t c = p ? p[k] : (uint8_t)('a' + k % 26);
        out[i + k] = c ^ (masked ? KEY[k % 4] : 0);
    }
    return i + n;
}

/* The stream under test. */
static struct {
    uint8_t b[300000];
    size_t n;
} S;

static void s_reset(void) { S.n = 0; }

static void s_frame(uint8_t b0, const void *p, size_t n)   /* masked */
{
    S.n += put_frame_ex(S.b + S.n, b0, true, 0, p, n);
}

static void s_uframe(uint8_t b0, const void *p, size_t n)  /* unmasked */
{
    S.n += put_frame_ex(S.b + S.n, b0, false, 0, p, n);
}

static void s_raw(const void *p, size_t n)
{
    memcpy(S.b + S.n, p, n);
    S.n += n;
}

#define S_STR(b0, lit) s_frame((b0), (lit), sizeof(lit) - 1)
#define S_USTR(b0, lit) s_uframe((b0), (lit), sizeof(lit) - 1)
#define S_RAW(lit) s_raw((lit), sizeof(lit) - 1)

/* ---- connection simulator ---------------------------------------------- */

enum split { SPLIT_WHOLE, SPLIT_BYTES, SPLIT_RANDOM };
static const char *const split_name[] = { "whole", "bytes", "random" };

typedef struct outcome {
    int err;          /* ERR_OK: all consumed; ERR_AGAIN: mid-frame; or error */
    uint16_t code;    /* close code with an error */
    size_t fed;       /* bytes fed when the error was reported */
    int nmsg, nctrl;  /* complete messages, control frames */
    uint8_t last_op;  /* opcode of the last message */
    size_t last_len;
    uint64_t hash;    /* over every message and control frame, in order */
    bool sane;        /* every invariant held */
} outcome;

static uint8_t conn_buf[sizeof S.b];
static uint8_t msg_buf[sizeof S.b];
static uint8_t last_msg[sizeof S.b];

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_item(uint64_t h, uint8_t op, const uint8_t *p, size_t n)
{
    uint8_t tag[9] = { op };
    for (int i = 0; i < 8; i++)
        tag[1 + i] = (uint8_t)((uint64_t)n >> (8 * i));
    return fnv(fnv(h, tag, sizeof tag), p, n);
}

static void run_stream(const uint8_t *s, size_t n, enum ws_role role,
                       const ws_limits *lim, enum split mode, outcome *o)
{
    memset(o, 0, sizeof *o);
    o->hash = 0xcbf29ce484222325ull;
    o->sane = true;
    ws_reader r;
    memset(&r, 0, sizeof r);
    size_t have = 0, fed = 0, base = 0, msg_len = 0;
    uint8_t msg_op = 0;

    while (fed < n) {
        size_t chunk = n - fed;
        if (mode == SPLIT_BYTES) {
            chunk = 1;
        } else if (mode == SPLIT_RANDOM) {
            chunk = test_rand() % 4 == 0 ? 1 + test_rand() % (n - fed)
                                         : 1 + test_rand() % 16;
            if (chunk > n - fed)
                chunk = n - fed;
        }
        memcpy(conn_buf + have, s + fed, chunk);
        have += chunk;
        fed += chunk;

        for (;;) {
            ws_frame f;
            uint16_t code = 0;
            int rc = ws_parse_frame(conn_buf, have, role, lim, &f, &code);
            if (rc == ERR_AGAIN) {
                /* Untouched: compare the head (where the header and the
                 * start of the payload sit) and the last byte. */
                size_t cmp = have < 96 ? have : 96;
                if (memcmp(conn_buf, s + base, cmp) != 0 ||
                    (have && conn_buf[have - 1] != s[base + have - 1])) {
                    fprintf(stderr, "    buffer modified on ERR_AGAIN\n");
                    o->sane = false;
                }
                break;
            }
            if (rc < 0) {
                o->err = rc;
                o->code = code;
                o->fed = fed;
                return;
            }
            if ((size_t)rc > have || f.header_len + f.len != (size_t)rc ||
                f.payload != conn_buf + f.header_len ||
                f.masked != (role == WS_SERVER)) {
                fprintf(stderr, "    bad frame fields\n");
                o->sane = false;
            }
            rc = (int)(f.header_len + f.len);
            int rc2 = ws_reader_check(&r, &f, lim, &code);
            if (rc2 < 0) {
                o->err = rc2;
                o->code = code;
                o->fed = fed;
                return;
            }
            if (f.opcode & 0x8) {
                o->nctrl++;
                o->hash = hash_item(o->hash, f.opcode, f.payload,
                                    (size_t)f.len);
            } else {
                if (f.opcode != WS_OP_CONT) {
                    msg_op = f.opcode;
                    msg_len = 0;
                }
                memcpy(msg_buf + msg_len, f.payload, (size_t)f.len);
                msg_len += (size_t)f.len;
                if (f.fin) {
                    o->nmsg++;
                    o->last_op = msg_op;
                    o->last_len = msg_len;
                    memcpy(last_msg, msg_buf, msg_len);
                    o->hash = hash_item(o->hash, msg_op, msg_buf, msg_len);
                }
            }
            memmove(conn_buf, conn_buf + rc, have - (size_t)rc);
            have -= (size_t)rc;
            base += (size_t)rc;
        }
    }
    o->err = have ? ERR_AGAIN : ERR_OK;
}

#define RANDOM_RUNS 16

/* S must parse cleanly in every split mode, giving nmsg messages (the last
 * being want/want_len when want is not NULL) and nctrl control frames. */
static bool stream_ok(enum ws_role role, const ws_limits *lim, int nmsg,
                      int nctrl, const void *want, size_t want_len)
{
    bool ok = true;
    for (int run = 0; run < 2 + RANDOM_RUNS; run++) {
        enum split mode = run < 2 ? (enum split)run : SPLIT_RANDOM;
        outcome o;
        run_stream(S.b, S.n, role, lim, mode, &o);
        bool good = o.sane && o.err == ERR_OK && o.nmsg == nmsg &&
                    o.nctrl == nctrl;
        if (good && want)
            good = o.last_len == want_len &&
                   memcmp(last_msg, want, want_len) == 0;
        if (!good) {
            fprintf(stderr, "    %s: err %d code %u fed %zu nmsg %d nctrl %d"
                    " len %zu sane %d\n", split_name[mode], o.err, o.code,
                    o.fed, o.nmsg, o.nctrl, o.last_len, o.sane);
            ok = false;
        }
    }
    return ok;
}

/* S must fail with err/code in every split mode; fed one byte at a time the
 * error must come exactly when byte `at` arrives (0: the last byte). */
static bool stream_err(enum ws_role role, const ws_limits *lim, int err,
                       uint16_t code, size_t at)
{
    bool ok = true;
    if (at == 0)
        at = S.n;
    for (int run = 0; run < 2 + RANDOM_RUNS; run++) {
        enum split mode = run < 2 ? (enum split)run : SPLIT_RANDOM;
        outcome o;
        run_stream(S.b, S.n, role, lim, mode, &o);
        bool good = o.sane && o.err == err && o.code == code;
        if (mode == SPLIT_BYTES)
            good = good && o.fed == at;
        else
            good = good && o.fed >= at;
        if (!good) {
            fprintf(stderr, "    %s: err %d code %u fed %zu (want %d %u at "
                    "%zu) sane %d\n", split_name[mode], o.err, o.code, o.fed,
                    err, code, at, o.sane);
            ok = false;
        }
    }
    return ok;
}

static ws_limits deflim(void)
{
    ws_limits l;
    ws_limits_default(&l);
    return l;
}

/* ---- basics -------------------------------------------------------------- */

TEST(limits_default)
{
    ws_limits l;
    memset(&l, 0xff, sizeof l);
    ws_limits_default(&l);
    CHECK_EQ_INT(l.max_message, 65536);
    CHECK_EQ_INT(sizeof(ws_reader), 16);
}

TEST(rfc_examples_client_role)
{
    /* RFC 6455 5.7, unmasked frames as a client receives them. */
    ws_limits l = deflim();
    uint8_t hello[] = { 0x81, 0x05, 'H', 'e', 'l', 'l', 'o' };
    ws_frame f;
    uint16_t code = 0;
    CHECK_EQ_INT(ws_parse_frame(hello, sizeof hello, WS_CLIENT, &l, &f, &code),
                 7);
    CHECK(f.fin);
    CHECK_EQ_INT(f.opcode, WS_OP_TEXT);
    CHECK(!f.masked);
    CHECK_EQ_INT(f.len, 5);
    CHECK_EQ_INT(f.header_len, 2);
    CHECK(f.payload == hello + 2);
    CHECK_MEM(f.payload, "Hello", 5);

    s_reset();
    S_RAW("\x01\x03Hel\x80\x02lo");                /* fragmented */
    CHECK(stream_ok(WS_CLIENT, &l, 1, 0, "Hello", 5));
    s_reset();
    S_RAW("\x89\x05Hello\x8a\x05Hello");           /* ping, pong */
    CHECK(stream_ok(WS_CLIENT, &l, 0, 2, NULL, 0));

    uint8_t big[4 + 256] = { 0x82, 0x7E, 0x01, 0x00 };
    CHECK_EQ_INT(ws_parse_frame(big, sizeof big, WS_CLIENT, &l, &f, &code),
                 260);
    CHECK_EQ_INT(f.len, 256);
    CHECK_EQ_INT(f.header_len, 4);

    static uint8_t huge[10 + 65536] = { 0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0 };
    CHECK_EQ_INT(ws_parse_frame(huge, sizeof huge, WS_CLIENT, &l, &f, &code),
                 10 + 65536);
    CHECK_EQ_INT(f.len, 65536);
    CHECK_EQ_INT(f.header_len, 10);
}

TEST(rfc_example_masked_server_role)
{
    static const uint8_t wire[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    uint8_t m[sizeof wire];
    memcpy(m, wire, sizeof m);
    ws_limits l = deflim();
    ws_frame f;
    uint16_t code = 0;
    CHECK_EQ_INT(ws_parse_frame(m, sizeof m, WS_SERVER, &l, &f, &code), 11);
    CHECK(f.masked);
    CHECK_EQ_INT(f.header_len, 6);
    CHECK(f.payload == m + 6);
    CHECK_MEM(f.payload, "Hello", 5);            /* unmasked in place */
    s_reset();
    S_STR(FIN | WS_OP_TEXT, "Hello");
    CHECK(S.n == sizeof wire && memcmp(S.b, wire, sizeof wire) == 0);
    CHECK(stream_ok(WS_SERVER, &l, 1, 0, "Hello", 5));
}

TEST(again_leaves_buffer_untouched)
{
    ws_limits l = deflim();
    uint8_t frame[64], copy[64];
    size_t n = put_frame_ex(frame, FIN | WS_OP_BINARY, true, 0, "abcdefghij",
                            10);
    memcpy(copy, frame, n);
    ws_frame f;
    memset(&f, 0, sizeof f);
    uint16_t code = 0;
    for (size_t k = 0; k < n; k++) {
        CHECK_EQ_INT(ws_parse_frame(frame, k, WS_SERVER, &l, &f, &code),
                     ERR_AGAIN);
        CHECK_MEM(frame, copy, n);
    }
    CHECK_EQ_INT(code, 0);
    CHECK_EQ_INT(ws_parse_frame(frame, n, WS_SERVER, &l, &f, &code), (int)n);
    CHECK_MEM(f.payload, "abcdefghij", 10);
    /* Trailing bytes of the next frame are not consumed or touched. */
    n = put_frame_ex(frame, FIN | WS_OP_BINARY, true, 0, "xy", 2);
    frame[n] = 0x81;
    CHECK_EQ_INT(ws_parse_frame(frame, n + 1, WS_SERVER, &l, &f, &code),
                 (int)n);
    CHECK_EQ_INT(frame[n], 0x81);
}

TEST(non_minimal_length_accepted)
{
    /* RFC 6455 asks senders for the minimal form; we accept longer forms. */
    ws_limits l = deflim();
    s_reset();
    S.n += put_frame_ex(S.b, FIN | WS_OP_TEXT, true, 16, "hi", 2);
    S.n += put_frame_ex(S.b + S.n, FIN | WS_OP_TEXT, true, 64, "yo", 2);
    CHECK(stream_ok(WS_SERVER, &l, 2, 0, "yo", 2));
}

/* ---- header-level rejections -------------------------------------------- */

TEST(rsv1_set)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | RSV1 | WS_OP_TEXT, "Hello");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
    s_reset();
    S_STR(FIN | RSV1 | WS_OP_PING, "");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
}

TEST(rsv2_set)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | RSV2 | WS_OP_BINARY, "Hello");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
    s_reset();
    S_USTR(FIN | RSV2 | WS_OP_TEXT, "Hello");
    CHECK(stream_err(WS_CLIENT, &l, ERR_PROTOCOL, 1002, 2));
}

TEST(rsv3_set)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | RSV3 | WS_OP_TEXT, "Hello");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
    /* After a good frame, on a continuation. */
    s_reset();
    S_STR(WS_OP_TEXT, "Hel");
    S_STR(FIN | RSV3 | WS_OP_CONT, "lo");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 9 + 2));
}

TEST(reserved_opcodes)
{
    ws_limits l = deflim();
    for (int op = 3; op <= 0xF; op++) {
        if (op >= 8 && op <= 0xA)
            continue;
        s_reset();
        s_frame((uint8_t)(FIN | op), "x", 1);
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
        s_reset();
        s_uframe((uint8_t)(FIN | op), "", 0);
        CHECK(stream_err(WS_CLIENT, &l, ERR_PROTOCOL, 1002, 2));
        /* Also when it arrives after a valid first fragment. */
        s_reset();
        S_STR(WS_OP_BINARY, "ab");
        s_frame((uint8_t)(FIN | op), "x", 1);
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 8 + 2));
    }
}

TEST(unmasked_frame_to_server)
{
    ws_limits l = deflim();
    s_reset();
    S_USTR(FIN | WS_OP_TEXT, "Hello");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
    s_reset();
    S_USTR(FIN | WS_OP_PING, "");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
}

TEST(masked_frame_to_client)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | WS_OP_TEXT, "Hello");
    CHECK(stream_err(WS_CLIENT, &l, ERR_PROTOCOL, 1002, 2));
    s_reset();
    S_USTR(FIN | WS_OP_TEXT, "ok");
    S_STR(FIN | WS_OP_CLOSE, "\x03\xe8");
    CHECK(stream_err(WS_CLIENT, &l, ERR_PROTOCOL, 1002, 4 + 2));
}

TEST(control_frame_126_bytes)
{
    ws_limits l = deflim();
    uint8_t p[126];
    memset(p, 'p', sizeof p);
    static const uint8_t ops[] = { WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE };
    for (size_t i = 0; i < sizeof ops; i++) {
        s_reset();
        s_frame(FIN | ops[i], p, 126);           /* 16-bit form */
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
        s_reset();
        S.n = put_frame_ex(S.b, FIN | ops[i], true, 64, p, 126);
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
        /* 125 is the limit and is fine. */
        s_reset();
        s_frame(FIN | ops[i], p, 125);
        if (ops[i] == WS_OP_CLOSE) { S.b[6] = 0x03 ^ KEY[0]; S.b[7] = 0xe8 ^ KEY[1]; }
        CHECK(stream_ok(WS_SERVER, &l, 0, 1, NULL, 0));
    }
    /* A control frame with 126 declared in the 16-bit form but only 5 sent:
     * known at byte 2 already. */
    s_reset();
    S_RAW("\x89\xfe");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
}

TEST(fragmented_control_frame)
{
    ws_limits l = deflim();
    static const uint8_t ops[] = { WS_OP_PING, WS_OP_PONG, WS_OP_CLOSE };
    for (size_t i = 0; i < sizeof ops; i++) {
        s_reset();
        s_frame(ops[i], "ab", 2);                /* FIN clear */
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 2));
        s_reset();
        S_STR(WS_OP_TEXT, "x");
        s_frame(ops[i], "", 0);
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 7 + 2));
    }
}

TEST(length_top_bit_set)
{
    ws_limits l = deflim();
    s_reset();
    S_RAW("\x82\xff\x80\x00\x00\x00\x00\x00\x00\x05" "\x37\xfa\x21\x3d");
    S_RAW("hello");
    /* Known as soon as the first length byte arrives (byte 3). */
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 3));
    s_reset();
    S_RAW("\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff");
    CHECK(stream_err(WS_CLIENT, &l, ERR_PROTOCOL, 1002, 3));
    /* Even with a huge limit. */
    ws_limits big = { .max_message = SIZE_MAX };
    CHECK(stream_err(WS_CLIENT, &big, ERR_PROTOCOL, 1002, 3));
}

TEST(oversize_frame_from_header)
{
    ws_limits l = deflim();
    /* A header claiming 2 GB and no payload: 1009 at once; the lower bound
     * from the length bytes so far already exceeds the limit at byte 7. */
    s_reset();
    S_RAW("\x82\xff\x00\x00\x00\x00\x80\x00\x00\x00" "\x37\xfa\x21\x3d");
    CHECK(stream_err(WS_SERVER, &l, ERR_TOO_LARGE, 1009, 7));
    /* max_message + 1 in the 64-bit form: known at the last length byte. */
    s_reset();
    S_RAW("\x81\xff\x00\x00\x00\x00\x00\x01\x00\x01" "\x37\xfa\x21\x3d");
    CHECK(stream_err(WS_SERVER, &l, ERR_TOO_LARGE, 1009, 10));
    /* 7-bit and 16-bit lengths against a small limit. */
    ws_limits small = { .max_message = 100 };
    s_reset();
    s_frame(FIN | WS_OP_BINARY, NULL, 101);
    CHECK(stream_err(WS_SERVER, &small, ERR_TOO_LARGE, 1009, 2));
    s_reset();
    s_frame(FIN | WS_OP_TEXT, NULL, 100);
    CHECK(stream_ok(WS_SERVER, &small, 1, 0, NULL, 0));
    ws_limits mid = { .max_message = 300 };
    s_reset();
    s_frame(FIN | WS_OP_BINARY, NULL, 301);      /* 01 2d: known at byte 4 */
    CHECK(stream_err(WS_SERVER, &mid, ERR_TOO_LARGE, 1009, 4));
    s_reset();
    s_frame(FIN | WS_OP_BINARY, NULL, 600);      /* 02 58: known at byte 3 */
    CHECK(stream_err(WS_SERVER, &mid, ERR_TOO_LARGE, 1009, 3));
    /* Exactly the limit passes. */
    s_reset();
    s_frame(FIN | WS_OP_BINARY, NULL, 65536);
    CHECK(stream_ok(WS_SERVER, &l, 1, 0, NULL, 0));
    s_reset();
    s_frame(FIN | WS_OP_BINARY, NULL, 65537);
    CHECK(stream_err(WS_SERVER, &l, ERR_TOO_LARGE, 1009, 10));
}

TEST(control_frames_not_bound_by_max_message)
{
    ws_limits tiny = { .max_message = 10 };
    uint8_t p[125];
    memset(p, 'x', sizeof p);
    s_reset();
    s_frame(FIN | WS_OP_PING, p, 125);
    CHECK(stream_ok(WS_SERVER, &tiny, 0, 1, NULL, 0));
    s_reset();
    s_frame(FIN | WS_OP_TEXT, p, 11);
    CHECK(stream_err(WS_SERVER, &tiny, ERR_TOO_LARGE, 1009, 2));
}

/* ---- message-level rules (ws_reader_check) ------------------------------ */

TEST(oversize_across_fragments)
{
    ws_limits l = deflim();
    static uint8_t chunk[40000];
    memset(chunk, 'z', sizeof chunk);
    s_reset();
    s_frame(WS_OP_TEXT, chunk, 40000);
    s_frame(FIN | WS_OP_CONT, chunk, 40000);
    CHECK(stream_err(WS_SERVER, &l, ERR_TOO_LARGE, 1009, 0));
    /* Exactly the limit across three fragments is fine. */
    s_reset();
    s_frame(WS_OP_BINARY, chunk, 30000);
    s_frame(WS_OP_CONT, chunk, 30000);
    s_frame(FIN | WS_OP_CONT, chunk, 5536);
    CHECK(stream_ok(WS_SERVER, &l, 1, 0, NULL, 0));
    /* One more byte is not; reported on the fragment that crosses it,
     * before fin. */
    s_reset();
    s_frame(WS_OP_BINARY, chunk, 30000);
    s_frame(WS_OP_CONT, chunk, 30000);
    s_frame(WS_OP_CONT, chunk, 5537);
    CHECK(stream_err(WS_SERVER, &l, ERR_TOO_LARGE, 1009, 0));
    /* The count restarts with each message. */
    s_reset();
    s_frame(WS_OP_BINARY, chunk, 40000);
    s_frame(FIN | WS_OP_CONT, chunk, 20000);
    s_frame(WS_OP_BINARY, chunk, 40000);
    s_frame(FIN | WS_OP_CONT, chunk, 20000);
    CHECK(stream_ok(WS_SERVER, &l, 2, 0, NULL, 0));
}

TEST(continuation_without_start)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | WS_OP_CONT, "x");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
    s_reset();
    S_STR(WS_OP_CONT, "x");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
    /* After a complete message, too. */
    s_reset();
    S_STR(FIN | WS_OP_TEXT, "done");
    S_STR(FIN | WS_OP_CONT, "x");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
}

TEST(new_message_while_fragmented)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(WS_OP_TEXT, "a");
    S_STR(FIN | WS_OP_TEXT, "b");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
    s_reset();
    S_STR(WS_OP_BINARY, "a");
    S_STR(WS_OP_TEXT, "b");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
    s_reset();
    S_STR(WS_OP_TEXT, "a");
    S_STR(FIN | WS_OP_BINARY, "b");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
}

TEST(invalid_utf8_single_frame)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                            "\xed\xa0\x80" "edited");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    s_reset();
    S_STR(FIN | WS_OP_TEXT, "\xc0\xaf");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    /* The same bytes in a binary message are fine. */
    s_reset();
    S_STR(FIN | WS_OP_BINARY, "\xc0\xaf");
    CHECK(stream_ok(WS_SERVER, &l, 1, 0, "\xc0\xaf", 2));
}

TEST(utf8_split_across_fragments)
{
    ws_limits l = deflim();
    const uint8_t *msg = (const uint8_t *)"\xce\xba\xe2\x82\xac\xf0\x9f\x98\x80z";
    size_t n = 10;
    /* Every 3-way split of the message into fragments. */
    for (size_t a = 0; a <= n; a++)
        for (size_t b = a; b <= n; b++) {
            s_reset();
            s_frame(WS_OP_TEXT, msg, a);
            s_frame(WS_OP_CONT, msg + a, b - a);
            s_frame(FIN | WS_OP_CONT, msg + b, n - b);
            CHECK(stream_ok(WS_SERVER, &l, 1, 0, msg, n));
        }
}

TEST(invalid_utf8_first_fragment_fails_fast)
{
    ws_limits l = deflim();
    /* Only the first fragment (no fin) has arrived; it is already bad. */
    s_reset();
    S_STR(WS_OP_TEXT, "ok\xff");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    s_reset();
    S_STR(WS_OP_TEXT, "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    /* Bad only at the join of two fragments: E2 | 28. */
    s_reset();
    S_STR(WS_OP_TEXT, "a\xe2");
    S_STR(WS_OP_CONT, "\x28");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    /* A surrogate built across fragments: ED | A0 80. */
    s_reset();
    S_STR(WS_OP_TEXT, "\xed");
    S_STR(FIN | WS_OP_CONT, "\xa0\x80");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
}

TEST(truncated_utf8_at_fin)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | WS_OP_TEXT, "abc\xe2\x82");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    s_reset();
    S_STR(WS_OP_TEXT, "abc\xf0\x9f");
    S_STR(FIN | WS_OP_CONT, "\x98");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    /* An empty final fragment cannot complete a sequence either. */
    s_reset();
    S_STR(WS_OP_TEXT, "\xc3");
    S_STR(FIN | WS_OP_CONT, "");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
}

TEST(ping_pong_between_fragments)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(WS_OP_TEXT, "Hel");
    S_STR(FIN | WS_OP_PING, "p1");
    S_STR(WS_OP_CONT, "l\xe2");                  /* U+20AC starts here */
    S_STR(FIN | WS_OP_PONG, "");
    S_STR(WS_OP_CONT, "\x82");
    S_STR(FIN | WS_OP_PING, "p2");
    S_STR(FIN | WS_OP_CONT, "\xaco");
    CHECK(stream_ok(WS_SERVER, &l, 1, 3, "Hell\xe2\x82\xaco", 8));
    /* A close between fragments is a control frame too. */
    s_reset();
    S_STR(WS_OP_BINARY, "a");
    S_STR(FIN | WS_OP_CLOSE, "\x03\xe8" "bye");
    CHECK(stream_ok(WS_SERVER, &l, 0, 1, NULL, 0));
}

TEST(close_payload_one_byte)
{
    ws_limits l = deflim();
    s_reset();
    S_STR(FIN | WS_OP_CLOSE, "\x03");
    CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
    s_reset();
    S_USTR(FIN | WS_OP_CLOSE, "\x03");
    CHECK(stream_err(WS_CLIENT, &l, ERR_PROTOCOL, 1002, 0));
}

static void close_frame(uint16_t code, const char *reason)
{
    uint8_t p[WS_MAX_CONTROL];
    size_t rl = strlen(reason);
    p[0] = (uint8_t)(code >> 8);
    p[1] = (uint8_t)code;
    memcpy(p + 2, reason, rl);
    s_reset();
    s_frame(FIN | WS_OP_CLOSE, p, 2 + rl);
}

TEST(invalid_close_codes)
{
    ws_limits l = deflim();
    static const uint16_t bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016,
                                    1100, 2000, 2999, 5000, 65535 };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        close_frame(bad[i], "");
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
        close_frame(bad[i], "reason");
        CHECK(stream_err(WS_SERVER, &l, ERR_PROTOCOL, 1002, 0));
        CHECK(!ws_close_code_ok(bad[i]));
    }
}

TEST(valid_close_codes)
{
    ws_limits l = deflim();
    static const uint16_t good[] = { 1000, 1001, 1002, 1003, 1007, 1008,
                                     1009, 1010, 1011, 1012, 1013, 1014,
                                     3000, 3999, 4000, 4999 };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        close_frame(good[i], "");
        CHECK(stream_ok(WS_SERVER, &l, 0, 1, NULL, 0));
        close_frame(good[i], "going \xe2\x82\xac");
        CHECK(stream_ok(WS_SERVER, &l, 0, 1, NULL, 0));
        CHECK(ws_close_code_ok(good[i]));
    }
    s_reset();
    S_STR(FIN | WS_OP_CLOSE, "");                 /* empty: no status */
    CHECK(stream_ok(WS_SERVER, &l, 0, 1, NULL, 0));
    /* The whole table. */
    int bad = 0;
    for (uint32_t c = 0; c <= 65535; c++) {
        bool want = (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) ||
                    (c >= 3000 && c <= 4999);
        bad += ws_close_code_ok((uint16_t)c) != want;
    }
    CHECK_EQ_INT(bad, 0);
}

TEST(close_reason_bad_utf8)
{
    ws_limits l = deflim();
    close_frame(1000, "bye\xff");
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    close_frame(1000, "\xe2\x82");               /* truncated */
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
    close_frame(1001, "\xed\xa0\x80");           /* surrogate */
    CHECK(stream_err(WS_SERVER, &l, ERR_UTF8, 1007, 0));
}

TEST(reader_check_direct)
{
    /* ws_reader_check on hand-made frames: state advances and resets. */
    ws_limits l = deflim();
    ws_reader r;
    memset(&r, 0, sizeof r);
    uint16_t code = 0;
    uint8_t p[4] = { 'a', 0xe2, 0x82, 0xac };
    ws_frame f = { .fin = false, .opcode = WS_OP_TEXT, .len = 2,
                   .header_len = 2, .payload = p };
    CHECK_EQ_INT(ws_reader_check(&r, &f, &l, &code), ERR_OK);
    CHECK_EQ_INT(r.opcode, WS_OP_TEXT);
    CHECK_EQ_INT(r.msg_len, 2);
    CHECK(r.utf8 != UTF8_ACCEPT && r.utf8 != UTF8_REJECT);
    ws_frame c = { .fin = true, .opcode = WS_OP_PING, .len = 0,
                   .header_len = 2, .payload = p };
    CHECK_EQ_INT(ws_reader_check(&r, &c, &l, &code), ERR_OK);
    CHECK_EQ_INT(r.opcode, WS_OP_TEXT);          /* control leaves r alone */
    CHECK_EQ_INT(r.msg_len, 2);
    f.fin = true;
    f.opcode = WS_OP_CONT;
    f.payload = p + 2;
    CHECK_EQ_INT(ws_reader_check(&r, &f, &l, &code), ERR_OK);
    CHECK_EQ_INT(r.opcode, 0);
    CHECK_EQ_INT(r.msg_len, 0);
    CHECK_EQ_INT(r.utf8, UTF8_ACCEPT);
    CHECK_EQ_INT(code, 0);
    /* A hand-made oversized control frame is refused here too. */
    c.len = 126;
    CHECK_EQ_INT(ws_reader_check(&r, &c, &l, &code), ERR_PROTOCOL);
    CHECK_EQ_INT(code, 1002);
}

TEST(random_valid_streams)
{
    /* Random messages, fragmented at random byte positions (also inside
     * UTF-8 sequences), with control frames between fragments. */
    ws_limits l = deflim();
    static const char *const cps[] = { "a", "Z", " ", "\xc3\xa9",
                                       "\xe2\x82\xac", "\xf0\x9f\x98\x80" };
    static uint8_t msg[600];
    for (int iter = 0; iter < 60; iter++) {
        s_reset();
        int nmsg = 1 + (int)(test_rand() % 5), nctrl = 0;
        uint64_t h = 0xcbf29ce484222325ull;
        for (int m = 0; m < nmsg; m++) {
            bool text = test_rand() % 2;
            size_t len = 0, want = test_rand() % 500;
            while (len < want) {
                if (text) {
                    const char *cp = cps[test_rand() % 6];
                    memcpy(msg + len, cp, strlen(cp));
                    len += strlen(cp);
                } else {
                    msg[len++] = (uint8_t)test_rand();
                }
            }
            uint8_t op = text ? WS_OP_TEXT : WS_OP_BINARY;
            size_t pos = 0;
            int nfrag = 1 + (int)(test_rand() % 4);
            for (int k = 0; k < nfrag; k++) {
                size_t end = k == nfrag - 1 ? len
                                            : pos + test_rand() % (len - pos + 1);
                s_frame((uint8_t)((k == nfrag - 1 ? FIN : 0) |
                                  (k == 0 ? op : WS_OP_CONT)),
                        msg + pos, end - pos);
                pos = end;
                if (k == nfrag - 1)
                    h = hash_item(h, op, msg, len);
                if (test_rand() % 3 == 0) {
                    uint8_t cop = test_rand() % 2 ? WS_OP_PING : WS_OP_PONG;
                    uint8_t cp[8];
                    size_t cn = test_rand() % 8;
                    for (size_t q = 0; q < cn; q++) cp[q] = (uint8_t)test_rand();
                    s_frame(FIN | cop, cp, cn);
                    h = hash_item(h, cop, cp, cn);
                    nctrl++;
                }
            }
        }
        for (int run = 0; run < 3; run++) {
            outcome o;
            run_stream(S.b, S.n, WS_SERVER, &l, (enum split)run, &o);
            CHECK(o.sane);
            CHECK_EQ_INT(o.err, ERR_OK);
            CHECK_EQ_INT(o.nmsg, nmsg);
            CHECK_EQ_INT(o.nctrl, nctrl);
            CHECK(o.hash == h);
        }
    }
}

/* ---- writing frames -------------------------------------------------------- */

TEST(frame_header_bytes)
{
    uint8_t h[WS_MAX_HEADER];
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_TEXT, true, 5, NULL), 2);
    CHECK_MEM(h, "\x81\x05", 2);
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_TEXT, true, 5, KEY), 6);
    CHECK_MEM(h, "\x81\x85\x37\xfa\x21\x3d", 6);
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_BINARY, true, 256, NULL), 4);
    CHECK_MEM(h, "\x82\x7e\x01\x00", 4);
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_BINARY, true, 65536, NULL), 10);
    CHECK_MEM(h, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_CONT, false, 0, NULL), 2);
    CHECK_MEM(h, "\x00\x00", 2);
    CHECK_EQ_INT(ws_frame_header(h, WS_OP_BINARY, false, 0x0102030405060708ull,
                                 KEY), 14);
    CHECK_MEM(h, "\x02\xff\x01\x02\x03\x04\x05\x06\x07\x08\x37\xfa\x21\x3d",
              14);
}

TEST(round_trip_lengths)
{
    static const uint64_t lens[] = { 0, 125, 126, 65535, 65536 };
    static const size_t hlen[] = { 2, 2, 4, 4, 10 };
    static uint8_t buf[WS_MAX_HEADER + 65536], orig[65536];
    for (size_t i = 0; i < sizeof orig; i++)
        orig[i] = (uint8_t)(i * 7 + 3);
    ws_limits l = deflim();
    for (size_t i = 0; i < 5; i++) {
        for (int masked = 0; masked <= 1; masked++) {
            size_t n = (size_t)lens[i];
            size_t h = ws_frame_header(buf, WS_OP_BINARY, true, lens[i],
                                       masked ? KEY : NULL);
            CHECK_EQ_INT(h, hlen[i] + (masked ? 4 : 0));
            memcpy(buf + h, orig, n);
            if (masked) {
                ws_mask(buf + h, n, KEY, 0);
                if (n >= 4)
                    CHECK(memcmp(buf + h, orig, n) != 0);
            }
            /* Feed it to the simulator too (one byte at a time etc.). */
            s_reset();
            s_raw(buf, h + n);
            CHECK(stream_ok(masked ? WS_SERVER : WS_CLIENT, &l, 1, 0, orig, n));
            ws_frame f;
            uint16_t code = 0;
            int rc = ws_parse_frame(buf, h + n, masked ? WS_SERVER : WS_CLIENT,
                                    &l, &f, &code);
            CHECK_EQ_INT(rc, (long long)(h + n));
            CHECK_EQ_INT(f.len, n);
            CHECK_EQ_INT(f.header_len, h);
            CHECK(f.fin);
            CHECK_EQ_INT(f.opcode, WS_OP_BINARY);
            CHECK(f.masked == (masked != 0));
            CHECK(f.payload == buf + h);
            CHECK(memcmp(f.payload, orig, n) == 0);
        }
    }
}

TEST(mask_offsets)
{
    uint8_t raw[64], data[64], want[64];
    for (size_t align = 0; align < 8; align++)
        for (size_t off = 0; off < 9; off++)
            for (size_t n = 0; n <= 40; n++) {
                for (size_t i = 0; i < n; i++)
                    raw[i] = (uint8_t)test_rand();
                memcpy(data + align, raw, n);
                for (size_t i = 0; i < n; i++)
                    want[i] = raw[i] ^ KEY[(off + i) % 4];
                ws_mask(data + align, n, KEY, off);
                CHECK(memcmp(data + align, want, n) == 0);
                ws_mask(data + align, n, KEY, off);   /* involution */
                CHECK(memcmp(data + align, raw, n) == 0);
            }
    /* Masking in random pieces equals masking the whole. */
    static uint8_t a[1000], b[1000];
    for (size_t i = 0; i < sizeof a; i++)
        a[i] = b[i] = (uint8_t)(i * 31);
    ws_mask(a, sizeof a, KEY, 0);
    size_t pos = 0;
    while (pos < sizeof b) {
        size_t k = 1 + test_rand() % 37;
        if (k > sizeof b - pos) k = sizeof b - pos;
        ws_mask(b + pos, k, KEY, pos);
        pos += k;
    }
    CHECK(memcmp(a, b, sizeof a) == 0);
    /* A large offset. */
    uint8_t x[3] = { 0, 0, 0 };
    ws_mask(x, 3, KEY, (size_t)1 << 40 | 2);
    CHECK(x[0] == KEY[2] && x[1] == KEY[3] && x[2] == KEY[0]);
}

TEST(close_payload_build)
{
    uint8_t out[WS_MAX_CONTROL];
    CHECK_EQ_INT(ws_close_payload(out, 1000, NULL), 2);
    CHECK_MEM(out, "\x03\xe8", 2);
    CHECK_EQ_INT(ws_close_payload(out, 4999, "bye"), 5);
    CHECK_MEM(out, "\x13\x87" "bye", 5);
    CHECK_EQ_INT(ws_close_payload(out, 1001, ""), 2);

    char r[300];
    memset(r, 'a', 200);
    r[200] = '\0';
    CHECK_EQ_INT(ws_close_payload(out, 1000, r), 125);   /* cut to 123 */
    r[123] = '\0';
    CHECK_EQ_INT(ws_close_payload(out, 1000, r), 125);   /* exactly fits */
    r[122] = '\0';
    CHECK_EQ_INT(ws_close_payload(out, 1000, r), 124);

    /* Multi-byte characters straddling byte 123 are dropped whole. */
    struct { size_t pad; const char *cp; size_t want; } cases[] = {
        { 121, "\xc3\xa9", 125 },          /* 121 + 2 = 123: fits */
        { 122, "\xc3\xa9", 124 },          /* 124: drop the 2-byte char */
        { 120, "\xe2\x82\xac", 125 },      /* 123: fits */
        { 121, "\xe2\x82\xac", 123 },
        { 122, "\xe2\x82\xac", 124 },
        { 119, "\xf0\x9f\x98\x80", 125 },
        { 120, "\xf0\x9f\x98\x80", 122 },
        { 121, "\xf0\x9f\x98\x80", 123 },
        { 122, "\xf0\x9f\x98\x80", 124 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(r, 'a', cases[i].pad);
        strcpy(r + cases[i].pad, cases[i].cp);
        strcat(r, "tail");
        size_t n = ws_close_payload(out, 1000, r);
        if (cases[i].pad + strlen(cases[i].cp) + 4 <= 123)
            continue;
        CHECK_EQ_INT(n, cases[i].want);
        CHECK(utf8_valid(out + 2, n - 2));
        CHECK(memcmp(out + 2, r, n - 2) == 0);
    }
    /* All-multibyte reason: 41 x U+20AC = 123 bytes fits; 42 is cut. */
    r[0] = '\0';
    for (int i = 0; i < 42; i++) strcat(r, "\xe2\x82\xac");
    CHECK_EQ_INT(ws_close_payload(out, 1000, r), 125);
    CHECK(utf8_valid(out + 2, 123));
    /* An invalid reason is cut before the first bad byte. */
    CHECK_EQ_INT(ws_close_payload(out, 1000, "ab\xff" "cd"), 4);
    CHECK_EQ_INT(ws_close_payload(out, 1000, "ab\xe2\x82"), 4);
    /* What it builds is accepted by the reader. */
    ws_limits l = deflim();
    size_t n = ws_close_payload(out, 1000, r);
    s_reset();
    s_frame(FIN | WS_OP_CLOSE, out, n);
    CHECK(stream_ok(WS_SERVER, &l, 0, 1, NULL, 0));
}

/* ---- handshake ------------------------------------------------------------ */

TEST(accept_key_rfc_example)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    CHECK_EQ_INT(ws_accept_key(key, strlen(key), out), ERR_OK);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    /* Only key_len bytes are read. */
    CHECK_EQ_INT(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==XYZ", 24, out), ERR_OK);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
    char longkey[200];
    memset(longkey, 'A', sizeof longkey);
    CHECK_EQ_INT(ws_accept_key(longkey, sizeof longkey, out), ERR_INVALID);
}

static http_request REQ;

static void req_start(const char *method, int minor)
{
    memset(&REQ, 0, sizeof REQ);
    REQ.method.p = method;
    REQ.method.n = strlen(method);
    REQ.target.p = "/ws";
    REQ.target.n = 3;
    REQ.path = REQ.target;
    REQ.minor = minor;
}

static void req_add(const char *name, const char *value)
{
    http_header *h = &REQ.headers[REQ.nheaders++];
    h->name.p = name;
    h->name.n = strlen(name);
    h->value.p = value;
    h->value.n = strlen(value);
}

#define GOOD_KEY "dGhlIHNhbXBsZSBub25jZQ=="

/* A valid request with header `skip` left out and, if `name`, one more
 * header added. */
static void req_std(const char *skip, const char *name, const char *value)
{
    req_start("GET", 1);
    static const char *const std[][2] = {
        { "Host", "example.com" },
        { "Upgrade", "websocket" },
        { "Connection", "Upgrade" },
        { "Sec-WebSocket-Key", GOOD_KEY },
        { "Sec-WebSocket-Version", "13" },
    };
    for (size_t i = 0; i < 5; i++)
        if (!skip || strcmp(skip, std[i][0]) != 0)
            req_add(std[i][0], std[i][1]);
    if (name)
        req_add(name, value);
}

static int hs_status(const char *const *protocols, ws_handshake *hs)
{
    int status = 0;
    int rc = ws_handshake_check(&REQ, protocols, hs, &status);
    if (rc == ERR_OK && status != 101)
        return -1;
    if (rc != ERR_OK && (status == 0 || status == 101))
        return -2;
    return status;
}

TEST(handshake_ok)
{
    ws_handshake hs;
    req_std(NULL, NULL, NULL);
    CHECK_EQ_INT(hs_status(NULL, &hs), 101);
    CHECK(hs.key.n == 24 && memcmp(hs.key.p, GOOD_KEY, 24) == 0);
    CHECK(hs.protocol == NULL);

    /* Case-insensitive names and tokens, token lists. */
    req_start("GET", 1);
    req_add("upgrade", "WebSocket");
    req_add("CONNECTION", "keep-alive, Upgrade");
    req_add("sec-websocket-key", GOOD_KEY);
    req_add("SEC-WEBSOCKET-VERSION", "13");
    CHECK_EQ_INT(hs_status(NULL, &hs), 101);

    req_start("GET", 1);
    req_add("Upgrade", "foo/2, websocket");
    req_add("Connection", "keep-alive");
    req_add("Connection", "\tupgrade ");
    req_add("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==");
    req_add("Sec-WebSocket-Version", "13");
    CHECK_EQ_INT(hs_status(NULL, &hs), 101);
}

TEST(handshake_400)
{
    ws_handshake hs;
    req_std(NULL, NULL, NULL);
    REQ.method.p = "POST"; REQ.method.n = 4;
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    REQ.method.p = "get"; REQ.method.n = 3;       /* methods are case-sensitive */
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    req_std(NULL, NULL, NULL);
    REQ.minor = 0;
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);

    req_std("Upgrade", NULL, NULL);
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    req_std("Upgrade", "Upgrade", "h2c");
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    req_std("Upgrade", "Upgrade", "websockets");
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    req_std("Connection", NULL, NULL);
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    req_std("Connection", "Connection", "keep-alive");
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    req_std("Connection", "Connection", "upgraded");
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);

    req_std("Sec-WebSocket-Key", NULL, NULL);
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    static const char *const bad_keys[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",             /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===",           /* 25 */
        "dGhlIHNhbXBsZSBub25jZQ",              /* no padding */
        "dGhlIHNhbXBsZSBub25jZUE=",            /* 17 bytes */
        "dGhlIHNhbXBsZSBub25jZUFC",            /* 18 bytes */
        "dGhlIHNhbXBsZSBub25jZ*==",            /* bad character */
        "dGhlIHNhbXBsZSBub25j Q==",
        "dGhlIHNhbXBsZSBub25jZQ=A",
        "=GhlIHNhbXBsZSBub25jZQ==",
    };
    for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
        req_std("Sec-WebSocket-Key", "Sec-WebSocket-Key", bad_keys[i]);
        CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    }
    /* The key must not appear twice (RFC 6455 11.3.1). */
    req_std(NULL, "Sec-WebSocket-Key", GOOD_KEY);
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    /* Nor the version. */
    req_std(NULL, "Sec-WebSocket-Version", "13");
    CHECK_EQ_INT(hs_status(NULL, &hs), 400);
    int status = 0;
    CHECK_EQ_INT(ws_handshake_check(&REQ, NULL, &hs, &status), ERR_INVALID);
    CHECK_EQ_INT(status, 400);
}

TEST(handshake_426)
{
    ws_handshake hs;
    req_std("Sec-WebSocket-Version", NULL, NULL);
    CHECK_EQ_INT(hs_status(NULL, &hs), 426);
    static const char *const bad[] = { "8", "12", "14", "", "13, 8", "013",
                                       "1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        req_std("Sec-WebSocket-Version", "Sec-WebSocket-Version", bad[i]);
        CHECK_EQ_INT(hs_status(NULL, &hs), 426);
    }
    int status = 0;
    CHECK_EQ_INT(ws_handshake_check(&REQ, NULL, &hs, &status), ERR_VERSION);
    CHECK_EQ_INT(status, 426);
    /* An old-draft client (no Sec-WebSocket-Key, no version) is told 426. */
    req_std("Sec-WebSocket-Version", NULL, NULL);
    REQ.nheaders = 0;
    req_add("Upgrade", "websocket");
    req_add("Connection", "Upgrade");
    req_add("Sec-WebSocket-Key1", "4 @1  46546xW%0l 1 5");
    CHECK_EQ_INT(hs_status(NULL, &hs), 426);
}

TEST(handshake_subprotocol)
{
    static const char *const srv[] = { "superchat", "chat", NULL };
    ws_handshake hs;

    req_std(NULL, "Sec-WebSocket-Protocol", "chat, superchat");
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    CHECK(hs.protocol == srv[1]);                /* the client's first */

    req_std(NULL, "Sec-WebSocket-Protocol", "superchat, chat");
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    CHECK(hs.protocol == srv[0]);

    req_std(NULL, "Sec-WebSocket-Protocol", "x, y");
    req_add("Sec-WebSocket-Protocol", "z, chat");
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    CHECK(hs.protocol == srv[1]);                /* across several headers */

    req_std(NULL, "sec-websocket-protocol", " ,\t superchat\t,");
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    CHECK(hs.protocol == srv[0]);

    req_std(NULL, "Sec-WebSocket-Protocol", "Chat, SUPERCHAT, superchat2");
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    CHECK(hs.protocol == NULL);                  /* names are case-sensitive */

    req_std(NULL, "Sec-WebSocket-Protocol", "chat");
    CHECK_EQ_INT(hs_status(NULL, &hs), 101);
    CHECK(hs.protocol == NULL);                  /* server offers none */
    static const char *const none[] = { NULL };
    CHECK_EQ_INT(hs_status(none, &hs), 101);
    CHECK(hs.protocol == NULL);

    req_std(NULL, NULL, NULL);
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    CHECK(hs.protocol == NULL);                  /* client offers none */
}

TEST(handshake_response)
{
    static const char *const srv[] = { "chat", NULL };
    ws_handshake hs;
    char out[512];
    const char *want =
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "\r\n";
    req_std(NULL, NULL, NULL);
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    int n = ws_handshake_response(out, sizeof out, &hs);
    CHECK_EQ_INT(n, (long long)strlen(want));
    CHECK(n > 0 && memcmp(out, want, (size_t)n) == 0);

    const char *want_p =
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: chat\r\n"
        "\r\n";
    req_std(NULL, "Sec-WebSocket-Protocol", "chat");
    CHECK_EQ_INT(hs_status(srv, &hs), 101);
    n = ws_handshake_response(out, sizeof out, &hs);
    size_t wn = strlen(want_p);
    CHECK_EQ_INT(n, (long long)wn);
    CHECK(n > 0 && memcmp(out, want_p, wn) == 0);
    /* Every smaller buffer is refused; the exact size is enough. */
    for (size_t cap = 0; cap < wn; cap++)
        CHECK_EQ_INT(ws_handshake_response(out, cap, &hs), ERR_TOO_LARGE);
    memset(out, 0, sizeof out);
    CHECK_EQ_INT(ws_handshake_response(out, wn, &hs), (long long)wn);
    CHECK(memcmp(out, want_p, wn) == 0);
}

TEST(handshake_from_parsed_request)
{
    /* The RFC 6455 1.2 request through the real HTTP codec. */
    char raw[] = "GET /chat HTTP/1.1\r\n"
                 "Host: server.example.com\r\n"
                 "Upgrade: websocket\r\n"
                 "Connection: Upgrade\r\n"
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Origin: http://example.com\r\n"
                 "Sec-WebSocket-Protocol: chat, superchat\r\n"
                 "Sec-WebSocket-Version: 13\r\n"
                 "\r\n";
    static const char *const srv[] = { "superchat", "chat", NULL };
    http_limits hl;
    http_limits_default(&hl);
    int status = 0;
    CHECK_EQ_INT(http_parse_request(raw, strlen(raw), &hl, &REQ, &status),
                 (long long)strlen(raw));
    ws_handshake hs;
    CHECK_EQ_INT(ws_handshake_check(&REQ, srv, &hs, &status), ERR_OK);
    CHECK_EQ_INT(status, 101);
    CHECK(hs.protocol == srv[1]);
    char out[256];
    int n = ws_handshake_response(out, sizeof out, &hs);
    const char *want =
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        "Sec-WebSocket-Protocol: chat\r\n"
        "\r\n";
    CHECK_EQ_INT(n, (long long)strlen(want));
    CHECK(n > 0 && memcmp(out, want, strlen(want)) == 0);
}

int main(void)
{
    test_seed();
    RUN(limits_default);
    RUN(rfc_examples_client_role);
    RUN(rfc_example_masked_server_role);
    RUN(again_leaves_buffer_untouched);
    RUN(non_minimal_length_accepted);
    RUN(rsv1_set);
    RUN(rsv2_set);
    RUN(rsv3_set);
    RUN(reserved_opcodes);
    RUN(unmasked_frame_to_server);
    RUN(masked_frame_to_client);
    RUN(control_frame_126_bytes);
    RUN(fragmented_control_frame);
    RUN(length_top_bit_set);
    RUN(oversize_frame_from_header);
    RUN(control_frames_not_bound_by_max_message);
    RUN(oversize_across_fragments);
    RUN(continuation_without_start);
    RUN(new_message_while_fragmented);
    RUN(invalid_utf8_single_frame);
    RUN(utf8_split_across_fragments);
    RUN(invalid_utf8_first_fragment_fails_fast);
    RUN(truncated_utf8_at_fin);
    RUN(ping_pong_between_fragments);
    RUN(close_payload_one_byte);
    RUN(invalid_close_codes);
    RUN(valid_close_codes);
    RUN(close_reason_bad_utf8);
    RUN(reader_check_direct);
    RUN(random_valid_streams);
    RUN(frame_header_bytes);
    RUN(round_trip_lengths);
    RUN(mask_offsets);
    RUN(close_payload_build);
    RUN(accept_key_rfc_example);
    RUN(handshake_ok);
    RUN(handshake_400);
    RUN(handshake_426);
    RUN(handshake_subprotocol);
    RUN(handshake_response);
    RUN(handshake_from_parsed_request);
    return test_summary("ws");
}
