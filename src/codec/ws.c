/* ws: RFC 6455 codec. See ws.h for the contract.
 *
 * Nothing here allocates or keeps state between calls: ws_parse_frame()
 * reads the caller's buffer, ws_reader carries the message state, and the
 * handshake functions read an http_request and write into a caller buffer.
 */
#include "codec/ws.h"

#include <limits.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "codec/utf8.h"

/* ---- frames ------------------------------------------------------------ */

void ws_limits_default(ws_limits *l)
{
    l->max_message = 65536;
}

static bool ws_opcode_known(uint8_t op)
{
    return op == WS_OP_CONT || op == WS_OP_TEXT || op == WS_OP_BINARY ||
           op == WS_OP_CLOSE || op == WS_OP_PING || op == WS_OP_PONG;
}

static bool ws_is_control(uint8_t op)
{
    return (op & 0x8) != 0;
}

static int ws_fail(uint16_t *close_code, uint16_t code, int err)
{
    if (close_code)
        *close_code = code;
    return err;
}

int ws_parse_frame(uint8_t *buf, size_t len, enum ws_role role,
                   const ws_limits *lim, ws_frame *f, uint16_t *close_code)
{
    ws_limits deflim;
    if (!lim) {
        ws_limits_default(&deflim);
        lim = &deflim;
    }
    if (len < 2)
        return ERR_AGAIN;

    uint8_t b0 = buf[0], b1 = buf[1];
    bool fin = (b0 & 0x80) != 0;
    uint8_t opcode = b0 & 0x0F;
    bool masked = (b1 & 0x80) != 0;
    uint8_t len7 = b1 & 0x7F;

    /* Everything decidable from the first two bytes. */
    if (b0 & 0x70)
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
    if (!ws_opcode_known(opcode))
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
    if (masked != (role == WS_SERVER))
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
    bool control = ws_is_control(opcode);
    if (control && (!fin || len7 > WS_MAX_CONTROL))
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);

    /* Extended length: 0, 2 or 8 bytes, big-endian. */
    size_t nlen = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    if (nlen == 8 && len >= 3 && (buf[2] & 0x80))
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);

    /* The length bytes present so far give a lower bound on the length:
     * an oversize data frame is refused before the rest arrives. */
    uint64_t plen = len7;
    if (nlen) {
        size_t have = len - 2 < nlen ? len - 2 : nlen;
        plen = 0;
        for (size_t i = 0; i < have; i++)
            plen = (plen << 8) | buf[2 + i];
        if (have > 0) /* < 2^63: the 64-bit form's top bit is clear */
            plen <<= 8 * (nlen - have);
    }
    if (!control && plen > lim->max_message)
        return ws_fail(close_code, WS_CLOSE_TOO_BIG, ERR_TOO_LARGE);
    if (len < 2 + nlen)
        return ERR_AGAIN;

    size_t header_len = 2 + nlen + (masked ? 4 : 0);
    /* The result must fit the int return value (and size_t). */
    if (plen > (uint64_t)INT_MAX - header_len)
        return ws_fail(close_code, WS_CLOSE_TOO_BIG, ERR_TOO_LARGE);
    size_t total = header_len + (size_t)plen;
    if (len < total)
        return ERR_AGAIN;

    uint8_t *payload = buf + header_len;
    if (masked)
        ws_mask(payload, (size_t)plen, buf + 2 + nlen, 0);

    f->fin = fin;
    f->opcode = opcode;
    f->masked = masked;
    f->len = plen;
    f->header_len = header_len;
    f->payload = payload;
    return (int)total;
}

static int ws_check_close(const ws_frame *f, uint16_t *close_code)
{
    if (f->len == 0)
        return ERR_OK;
    if (f->len == 1)
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
    uint16_t code = (uint16_t)(f->payload[0] << 8 | f->payload[1]);
    if (!ws_close_code_ok(code))
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
    if (!utf8_valid(f->payload + 2, (size_t)f->len - 2))
        return ws_fail(close_code, WS_CLOSE_BAD_DATA, ERR_UTF8);
    return ERR_OK;
}

int ws_reader_check(ws_reader *r, const ws_frame *f, const ws_limits *lim,
                    uint16_t *close_code)
{
    ws_limits deflim;
    if (!lim) {
        ws_limits_default(&deflim);
        lim = &deflim;
    }
    if (!ws_opcode_known(f->opcode))
        return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);

    if (ws_is_control(f->opcode)) {
        /* Re-checked here so a hand-made frame cannot slip through. */
        if (!f->fin || f->len > WS_MAX_CONTROL)
            return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
        if (f->opcode == WS_OP_CLOSE)
            return ws_check_close(f, close_code);
        return ERR_OK;
    }

    uint8_t msg_op;
    uint64_t so_far;
    uint32_t st;
    if (f->opcode == WS_OP_CONT) {
        if (r->opcode == 0)
            return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
        msg_op = r->opcode;
        so_far = r->msg_len;
        st = r->utf8;
    } else {
        if (r->opcode != 0)
            return ws_fail(close_code, WS_CLOSE_PROTOCOL, ERR_PROTOCOL);
        msg_op = f->opcode;
        so_far = 0;
        st = UTF8_ACCEPT;
    }

    if (f->len > lim->max_message || so_far > lim->max_message - f->len)
        return ws_fail(close_code, WS_CLOSE_TOO_BIG, ERR_TOO_LARGE);

    if (msg_op == WS_OP_TEXT) {
        st = utf8_feed(st, f->payload, (size_t)f->len);
        if (st == UTF8_REJECT || (f->fin && st != UTF8_ACCEPT))
            return ws_fail(close_code, WS_CLOSE_BAD_DATA, ERR_UTF8);
    }

    if (f->fin) {
        r->opcode = 0;
        r->msg_len = 0;
        r->utf8 = UTF8_ACCEPT;
    } else {
        r->opcode = msg_op;
        r->msg_len = so_far + f->len;
        r->utf8 = st;
    }
    return ERR_OK;
}

size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], uint8_t opcode, bool fin,
                       uint64_t len, const uint8_t *mask)
{
    size_t n = 0;
    uint8_t mbit = mask ? 0x80 : 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        out[n++] = (uint8_t)(mbit | len);
    } else if (len <= 0xFFFF) {
        out[n++] = (uint8_t)(mbit | 126);
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = (uint8_t)(mbit | 127);
        for (int shift = 56; shift >= 0; shift -= 8)
            out[n++] = (uint8_t)(len >> shift);
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void ws_mask(uint8_t *data, size_t n, const uint8_t key[4], size_t offset)
{
    /* The key rotated to `offset`, repeated over a 64-bit word. Built in
     * memory order, so it is right whatever the byte order. */
    uint8_t k8[8];
    for (size_t i = 0; i < 8; i++)
        k8[i] = key[(offset + i) & 3];
    uint64_t k;
    memcpy(&k, k8, 8);

    size_t i = 0;
    for (; n - i >= 8; i += 8) {
        uint64_t w;
        memcpy(&w, data + i, 8);
        w ^= k;
        memcpy(data + i, &w, 8);
    }
    for (; i < n; i++)
        data[i] ^= k8[i & 7];
}

bool ws_close_code_ok(uint16_t code)
{
    if (code >= 1000 && code <= 1003)
        return true;
    if (code >= 1007 && code <= 1014)
        return true;
    return code >= 3000 && code <= 4999;
}

size_t ws_close_payload(uint8_t out[WS_MAX_CONTROL], uint16_t code,
                        const char *reason)
{
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (!reason)
        return 2;
    /* Keep the longest prefix of at most 123 bytes that ends at a code
     * point boundary (and stop at any invalid byte), so the peer always
     * receives a valid UTF-8 reason. */
    const uint8_t *s = (const uint8_t *)reason;
    uint32_t st = UTF8_ACCEPT;
    size_t keep = 0;
    for (size_t i = 0; i < WS_MAX_CONTROL - 2 && s[i]; i++) {
        st = utf8_feed(st, s + i, 1);
        if (st == UTF8_REJECT)
            break;
        if (st == UTF8_ACCEPT)
            keep = i + 1;
    }
    memcpy(out + 2, s, keep);
    return 2 + keep;
}

/* ---- handshake --------------------------------------------------------- */

#define WS_KEY_MAX 128 /* a valid key is 24 characters */

int ws_accept_key(const char *key, size_t key_len, char out[29])
{
    static const char guid[] = WS_GUID;
    unsigned char in[WS_KEY_MAX + sizeof guid];
    unsigned char md[SHA_DIGEST_LENGTH];

    if (key_len > WS_KEY_MAX) {
        out[0] = '\0';
        return ERR_INVALID;
    }
    memcpy(in, key, key_len);
    memcpy(in + key_len, guid, sizeof guid - 1);
    SHA1(in, key_len + sizeof guid - 1, md);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH); /* 28 + NUL */
    return ERR_OK;
}

/* True if any header named `name` lists `token` (case-insensitive). */
static bool ws_headers_have_token(const http_request *req, const char *name,
                                  const char *token)
{
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *h = &req->headers[i];
        if (http_str_ieq(h->name, name) && http_has_token(h->value, token))
            return true;
    }
    return false;
}

/* The first header named `name`, or NULL; *count gets how many there are. */
static const http_str *ws_header_once(const http_request *req,
                                      const char *name, size_t *count)
{
    const http_str *first = NULL;
    *count = 0;
    for (size_t i = 0; i < req->nheaders; i++) {
        const http_header *h = &req->headers[i];
        if (http_str_ieq(h->name, name)) {
            if (!first)
                first = &h->value;
            (*count)++;
        }
    }
    return first;
}

static bool ws_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Base64 of exactly 16 bytes: 22 alphabet characters and "==". */
static bool ws_key_ok(http_str k)
{
    if (k.n != 24 || k.p[22] != '=' || k.p[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!ws_b64_char(k.p[i]))
            return false;
    return true;
}

static bool ws_is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The first element of the comma-separated list v (whitespace trimmed,
 * compared case-sensitively) that is in the NULL-terminated list. */
static const char *ws_pick_protocol(http_str v, const char *const *list)
{
    size_t i = 0;
    while (i < v.n) {
        size_t start = i;
        while (i < v.n && v.p[i] != ',')
            i++;
        size_t end = i++;
        while (start < end && ws_is_ows(v.p[start]))
            start++;
        while (end > start && ws_is_ows(v.p[end - 1]))
            end--;
        for (size_t k = 0; end > start && list[k]; k++)
            if (strlen(list[k]) == end - start &&
                memcmp(list[k], v.p + start, end - start) == 0)
                return list[k];
    }
    return NULL;
}

static int ws_hs_fail(int *status, int code)
{
    if (status)
        *status = code;
    /* As http.c maps its statuses: 400 is ERR_INVALID; a version we do
     * not speak is ERR_VERSION. */
    return code == 426 ? ERR_VERSION : ERR_INVALID;
}

int ws_handshake_check(const http_request *req, const char *const *protocols,
                       ws_handshake *hs, int *status)
{
    if (req->method.n != 3 || memcmp(req->method.p, "GET", 3) != 0)
        return ws_hs_fail(status, 400);
    if (req->minor < 1)
        return ws_hs_fail(status, 400);
    if (!ws_headers_have_token(req, "Upgrade", "websocket"))
        return ws_hs_fail(status, 400);
    if (!ws_headers_have_token(req, "Connection", "upgrade"))
        return ws_hs_fail(status, 400);

    /* The version comes before the key, so that a client speaking an older
     * draft (which has no Sec-WebSocket-Key) learns to use 13. */
    size_t nver, nkey;
    const http_str *ver = ws_header_once(req, "Sec-WebSocket-Version", &nver);
    if (nver > 1)
        return ws_hs_fail(status, 400); /* must not appear twice */
    if (!ver || ver->n != 2 || memcmp(ver->p, "13", 2) != 0)
        return ws_hs_fail(status, 426);

    const http_str *key = ws_header_once(req, "Sec-WebSocket-Key", &nkey);
    if (!key || nkey != 1 || !ws_key_ok(*key))
        return ws_hs_fail(status, 400);

    const char *chosen = NULL;
    if (protocols) {
        for (size_t i = 0; i < req->nheaders && !chosen; i++) {
            const http_header *h = &req->headers[i];
            if (http_str_ieq(h->name, "Sec-WebSocket-Protocol"))
                chosen = ws_pick_protocol(h->value, protocols);
        }
    }

    hs->key = *key;
    hs->protocol = chosen;
    if (status)
        *status = 101;
    return ERR_OK;
}

static bool ws_put(char *out, size_t cap, size_t *n, const char *s, size_t m)
{
    if (m > cap - *n)
        return false;
    memcpy(out + *n, s, m);
    *n += m;
    return true;
}

#define WS_PUTS(s) ws_put(out, cap, &n, (s), strlen(s))

int ws_handshake_response(char *out, size_t cap, const ws_handshake *hs)
{
    char accept[29];
    if (ws_accept_key(hs->key.p, hs->key.n, accept) != ERR_OK)
        return ERR_INVALID;

    size_t n = 0;
    bool ok = WS_PUTS("HTTP/1.1 101 Switching Protocols\r\n"
                      "Upgrade: websocket\r\n"
                      "Connection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: ") &&
              WS_PUTS(accept) && WS_PUTS("\r\n");
    if (ok && hs->protocol)
        ok = WS_PUTS("Sec-WebSocket-Protocol: ") && WS_PUTS(hs->protocol) &&
             WS_PUTS("\r\n");
    ok = ok && WS_PUTS("\r\n");
    if (!ok || n > INT_MAX)
        return ERR_TOO_LARGE;
    if (n < cap)
        out[n] = '\0'; /* a convenience when there is room; not counted */
    return (int)n;
}
