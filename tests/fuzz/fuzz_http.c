/* libFuzzer driver for the HTTP/1.1 codec (src/http.c).
 *
 * Parses the input as a stream of pipelined requests with the default
 * limits and with tiny ones, and checks what must always hold: the result
 * is a length inside the buffer, ERR_AGAIN or an error with its status;
 * every slice lies in the buffer; the body length is content_length; a
 * buffer is untouched unless a request was returned; a prefix of the input
 * gives "need more" or the same answer; the bytes after a request parse as
 * the next one. The input also goes through the percent-decoder and the
 * query lookup. tests/fuzz/replay.c provides main() for corpus replay.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/http.h"

#define REQUIRE(c) do { \
    if (!(c)) { \
        fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #c); \
        abort(); \
    } } while (0)

static void check_slice(const char *buf, size_t len, http_str s)
{
    REQUIRE(s.p != NULL);
    REQUIRE(s.p >= buf && s.n <= len && s.p <= buf + len - s.n);
}

/* Parses buf[0..len) as one request (buf is a private copy) and checks the
 * answer. Returns the result code. */
static int parse_one(char *buf, size_t len, const http_limits *lim,
                     http_request *req)
{
    char *orig = malloc(len ? len : 1);
    memcpy(orig, buf, len);
    int status = 0;
    int rc = http_parse_request(buf, len, lim, req, &status);
    if (rc > 0) {
        REQUIRE((size_t)rc <= len);
        REQUIRE(req->head_len > 0 && req->head_len <= (size_t)rc);
        REQUIRE(req->head_len <= lim->max_header_bytes);
        REQUIRE(req->minor == 0 || req->minor == 1);
        REQUIRE(req->nheaders <= lim->max_headers &&
                req->nheaders <= HTTP_MAX_HEADERS);
        REQUIRE(req->method.n > 0 && req->target.n > 0);
        REQUIRE(req->method.n <= lim->max_request_line);
        check_slice(buf, (size_t)rc, req->method);
        check_slice(buf, (size_t)rc, req->target);
        check_slice(buf, (size_t)rc, req->path);
        check_slice(buf, (size_t)rc, req->query);
        REQUIRE(req->path.p == req->target.p);
        REQUIRE(req->path.n + req->query.n <= req->target.n);
        REQUIRE(req->target.p[0] == '/' || req->target.n == 1);
        for (size_t i = 0; i < req->nheaders; i++) {
            check_slice(buf, req->head_len, req->headers[i].name);
            check_slice(buf, req->head_len, req->headers[i].value);
            REQUIRE(req->headers[i].name.n > 0);
            /* the first field of a name is what http_header_get finds */
            char name[64];
            if (req->headers[i].name.n < sizeof name) {
                memcpy(name, req->headers[i].name.p, req->headers[i].name.n);
                name[req->headers[i].name.n] = '\0';
                const http_str *v = http_header_get(req, name);
                REQUIRE(v != NULL && v->p <= req->headers[i].value.p);
            }
        }
        check_slice(buf, (size_t)rc, req->body);
        REQUIRE(req->body.n == req->content_length);
        REQUIRE(req->body.n <= lim->max_body);
        REQUIRE(req->body.p == buf + req->head_len);
        if (!req->chunked) {
            REQUIRE(req->head_len + req->body.n == (size_t)rc);
            REQUIRE(memcmp(buf, orig, len) == 0);
        } else {
            REQUIRE(req->head_len + req->body.n < (size_t)rc);
            /* decoding happens inside the request: the rest is untouched */
            REQUIRE(memcmp(buf, orig, req->head_len) == 0);
            REQUIRE(memcmp(buf + rc, orig + rc, len - (size_t)rc) == 0);
        }
        if (req->minor == 0 && req->keep_alive)
            REQUIRE(http_header_get(req, "connection") != NULL);
    } else {
        REQUIRE(memcmp(buf, orig, len) == 0);
        if (rc != ERR_AGAIN) {
            switch (status) {
            case 400: REQUIRE(rc == ERR_INVALID); break;
            case 413: case 414: case 431: REQUIRE(rc == ERR_TOO_LARGE); break;
            case 501: REQUIRE(rc == ERR_UNSUPPORTED); break;
            case 505: REQUIRE(rc == ERR_VERSION); break;
            default: REQUIRE(!"unexpected status");
            }
        }
    }
    free(orig);
    return rc;
}

/* Answer of a fresh copy of in[0..k). */
static int parse_copy(const uint8_t *in, size_t k, const http_limits *lim,
                      int *status)
{
    char *b = malloc(k ? k : 1);
    memcpy(b, in, k);
    http_request req;
    *status = 0;
    int rc = http_parse_request(b, k, lim, &req, status);
    free(b);
    return rc;
}

/* Whole stream: requests one after another, as a server would. */
static void parse_stream(const uint8_t *data, size_t size,
                         const http_limits *lim)
{
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    http_request *req = malloc(sizeof *req);
    size_t off = 0;
    for (int n = 0; n < 64 && off < size; n++) {
        int rc = parse_one(buf + off, size - off, lim, req);
        if (rc <= 0) {
            /* a prefix of the remaining bytes agrees with the answer */
            const uint8_t *rest = data + off;
            size_t rlen = size - off;
            size_t cuts[3] = { rlen - 1, rlen / 2, rlen > 7 ? 7 : 0 };
            int want_status = 0;
            int want = parse_copy(rest, rlen, lim, &want_status);
            REQUIRE(want == rc);
            for (int i = 0; i < 3; i++) {
                if (cuts[i] >= rlen) continue;
                int st;
                int r = parse_copy(rest, cuts[i], lim, &st);
                REQUIRE(r == ERR_AGAIN || (r == want && st == want_status));
            }
            break;
        }
        /* a strict prefix of a request only asks for more */
        int st;
        REQUIRE(parse_copy(data + off, (size_t)rc - 1, lim, &st) == ERR_AGAIN);
        REQUIRE(parse_copy(data + off, (size_t)rc / 2, lim, &st) == ERR_AGAIN);
        /* and the bytes up to its end give the same request */
        REQUIRE(parse_copy(data + off, (size_t)rc, lim, &st) == rc);
        off += (size_t)rc;
    }
    free(req);
    free(buf);
}

static void check_decoders(const uint8_t *data, size_t size)
{
    const char *in = (const char *)data;
    char out[256];
    size_t caps[3] = { sizeof out, size / 2 < sizeof out ? size / 2 : sizeof out, 0 };
    for (int i = 0; i < 3; i++) {
        int n = http_percent_decode(in, size, out, caps[i]);
        REQUIRE(n == ERR_INVALID || n == ERR_TOO_LARGE ||
                (n >= 0 && (size_t)n <= caps[i] && (size_t)n <= size));
        if (n > 0) REQUIRE(memchr(out, '\0', (size_t)n) == NULL);
    }

    http_str q = { in, size };
    const char *names[] = { "a", "token", "", "x y" };
    char first[8];
    size_t fl = 0;
    while (fl < size && fl < sizeof first - 1 && in[fl] != '=' && in[fl] != '&' &&
           in[fl] != '\0')
        fl++;
    memcpy(first, in, fl);
    first[fl] = '\0';
    for (int i = 0; i < 5; i++) {
        const char *name = i < 4 ? names[i] : first;
        for (size_t cap = 0; cap <= sizeof out; cap += sizeof out / 4) {
            int n = http_query_get(q, name, out, cap);
            REQUIRE(n == ERR_NOT_FOUND || n == ERR_INVALID ||
                    n == ERR_TOO_LARGE || (n >= 0 && (size_t)n < cap));
            if (n >= 0) REQUIRE(out[n] == '\0' && strlen(out) == (size_t)n);
        }
    }
    if (fl == size || (fl < size && in[fl] == '='))
        REQUIRE(fl == 0 || http_query_get(q, first, out, sizeof out) != ERR_NOT_FOUND);

    (void)http_has_token(q, "upgrade");
    (void)http_str_ieq(q, "chunked");
}

static void check_response(const uint8_t *data, size_t size)
{
    if (size < 4) return;
    int status = 100 + (data[0] | data[1] << 8) % 900;
    char ct[32];
    size_t n = size - 4 < sizeof ct - 1 ? size - 4 : sizeof ct - 1;
    memcpy(ct, data + 4, n);
    ct[n] = '\0';
    char out[160];
    size_t cap = data[2] % sizeof out;
    int rc = http_response_head(out, cap, status, data[3] & 1 ? ct : NULL,
                                (uint64_t)size << (data[3] & 31),
                                data[3] & 2, data[3] & 4 ? "X-A: b\r\n" : NULL);
    REQUIRE(rc == ERR_TOO_LARGE || rc == ERR_INVALID ||
            (rc > 0 && (size_t)rc <= cap));
    if (rc > 0) REQUIRE(memcmp(out, "HTTP/1.1 ", 9) == 0 &&
                        memcmp(out + rc - 4, "\r\n\r\n", 4) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_limits def, tiny;
    http_limits_default(&def);
    tiny.max_request_line = 24;
    tiny.max_header_bytes = 64;
    tiny.max_headers = 3;
    tiny.max_body = 16;

    parse_stream(data, size, &def);
    parse_stream(data, size, &tiny);
    check_decoders(data, size);
    check_response(data, size);
    return 0;
}
