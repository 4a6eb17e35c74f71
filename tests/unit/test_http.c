/* Unit tests for the HTTP/1.1 request codec (src/http.c).
 *
 * Every request is fed three ways by feed(): whole, one byte at a time
 * (each strict prefix parsed from its own exactly-sized heap copy, so ASan
 * sees any read past the end) and in random splits (TEST_SEED). A prefix
 * must give ERR_AGAIN or, once an error is detectable, exactly the error of
 * the whole input, from then on; it must never consume anything early and
 * must leave the buffer untouched.
 */
#include "test.h"

#include "codec/http.h"

/* ---- feeding helper ----------------------------------------------------- */

#define CHECK_AT(cond, line) do { \
    if (!(cond)) { \
        test_cur_failed_++; \
        fprintf(stderr, "  FAIL %s:%d (case at line %d) in %s: %s\n", \
                __FILE__, __LINE__, (line), test_cur_name_, #cond); \
    } } while (0)

typedef struct parsed {
    char *buf;          /* heap copy of the whole input, parsed in place */
    size_t len;
    http_request req;
    int rc, status;
    size_t first_err;   /* shortest prefix that already fails (else len+1) */
} parsed;

static http_limits deflim(void)
{
    http_limits l;
    http_limits_default(&l);
    return l;
}

/* Parses the prefix in[0..k) from its own heap copy and checks it against
 * the whole result. *failed_at tracks the first failing prefix of a mode. */
static void check_prefix(const char *in, size_t k, const http_limits *lim,
                         const parsed *whole, size_t *failed_at,
                         const char *mode, int line)
{
    char *b = malloc(k ? k : 1);
    memcpy(b, in, k);
    http_request r;
    int st = -777;
    int rc = http_parse_request(b, k, lim, &r, &st);
    bool ok;
    if (whole->rc > 0) {
        /* a success: nothing before the request's end, then the same end */
        ok = (size_t)whole->rc > k ? rc == ERR_AGAIN : rc == whole->rc;
    } else if (rc == ERR_AGAIN) {
        ok = *failed_at > k; /* once failed, it must keep failing */
    } else {
        ok = rc == whole->rc && st == whole->status;
        if (*failed_at > k) *failed_at = k;
    }
    if (!ok)
        fprintf(stderr, "    %s: prefix %zu of %zu gave rc %d status %d "
                "(whole: rc %d status %d)\n", mode, k, whole->len, rc, st,
                whole->rc, whole->status);
    CHECK_AT(ok, line);
    if (rc <= 0) CHECK_AT(memcmp(b, in, k) == 0, line);
    free(b);
}

static void feed_at(parsed *P, const char *in, size_t n,
                    const http_limits *lim_in, int line)
{
    http_limits lim = lim_in ? *lim_in : deflim();
    memset(P, 0, sizeof *P);
    P->len = n;
    P->buf = malloc(n ? n : 1);
    memcpy(P->buf, in, n);
    P->status = -777;
    P->rc = http_parse_request(P->buf, n, &lim, &P->req, &P->status);
    if (P->rc <= 0) CHECK_AT(memcmp(P->buf, in, n) == 0, line);
    if (P->rc > 0) CHECK_AT((size_t)P->rc <= n, line);

    /* one byte at a time: every strict prefix */
    P->first_err = n + 1;
    size_t failed = n + 1;
    for (size_t k = 0; k < n; k++)
        check_prefix(in, k, &lim, P, &failed, "bytewise", line);
    if (P->rc < 0 && P->rc != ERR_AGAIN)
        P->first_err = failed <= n ? failed : n;

    /* random splits: prefixes growing by random steps, a few rounds */
    for (int round = 0; round < 4; round++) {
        size_t maxstep = n / 4 + 2;
        failed = n + 1;
        for (size_t k = (size_t)(test_rand() % maxstep); k < n;
             k += 1 + (size_t)(test_rand() % maxstep))
            check_prefix(in, k, &lim, P, &failed, "random", line);
    }
}

#define FEED(P, lit) feed_at(&(P), (lit), sizeof(lit) - 1, NULL, __LINE__)
#define FEED_LIM(P, lit, lim) \
    feed_at(&(P), (lit), sizeof(lit) - 1, (lim), __LINE__)

static void done(parsed *P) { free(P->buf); P->buf = NULL; }

/* Feeds an input expected to fail with rc and status. */
static void expect_err_at(const char *in, size_t n, const http_limits *lim,
                          int rc, int status, int line)
{
    parsed P;
    feed_at(&P, in, n, lim, line);
    if (P.rc != rc || P.status != status)
        fprintf(stderr, "    case at line %d: rc %d status %d, want %d %d\n",
                line, P.rc, P.status, rc, status);
    CHECK_AT(P.rc == rc, line);
    CHECK_AT(P.status == status, line);
    done(&P);
}

#define EXPECT_ERR(lit, rc, status) \
    expect_err_at((lit), sizeof(lit) - 1, NULL, (rc), (status), __LINE__)
#define EXPECT_ERR_LIM(lit, lim, rc, status) \
    expect_err_at((lit), sizeof(lit) - 1, (lim), (rc), (status), __LINE__)

/* The head of a chunked request. */
#define CH "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

static bool str_is(http_str s, const char *c)
{
    return s.n == strlen(c) && memcmp(s.p, c, s.n) == 0;
}

static bool in_buf(const parsed *P, http_str s)
{
    return s.p >= P->buf && s.p + s.n <= P->buf + P->len;
}

/* A growable string for building big inputs. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *s, const char *d, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
    }
    memcpy(s->p + s->n, d, n);
    s->n += n;
    s->p[s->n] = '\0';
}

static void sb_str(sbuf *s, const char *d) { sb_add(s, d, strlen(d)); }

static void sb_rep(sbuf *s, char c, size_t n)
{
    for (size_t i = 0; i < n; i++) sb_add(s, &c, 1);
}

/* ---- requests that parse ------------------------------------------------ */

TEST(limits_default)
{
    http_limits l;
    memset(&l, 0xff, sizeof l);
    http_limits_default(&l);
    CHECK_EQ_INT(l.max_request_line, 8192);
    CHECK_EQ_INT(l.max_header_bytes, 16384);
    CHECK_EQ_INT(l.max_headers, 64);
    CHECK_EQ_INT(l.max_body, 1024 * 1024);
}

TEST(simple_get)
{
    parsed P;
    FEED(P, "GET /index.html HTTP/1.1\r\nHost: example.com\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.method, "GET"));
    CHECK(str_is(P.req.target, "/index.html"));
    CHECK(str_is(P.req.path, "/index.html"));
    CHECK_EQ_INT(P.req.query.n, 0);
    CHECK(in_buf(&P, P.req.query));
    CHECK_EQ_INT(P.req.minor, 1);
    CHECK_EQ_INT(P.req.nheaders, 1);
    CHECK(str_is(P.req.headers[0].name, "Host"));
    CHECK(str_is(P.req.headers[0].value, "example.com"));
    CHECK_EQ_INT(P.req.head_len, P.len);
    CHECK(P.req.keep_alive);
    CHECK(!P.req.chunked);
    CHECK(!P.req.upgrade);
    CHECK_EQ_INT(P.req.content_length, 0);
    CHECK_EQ_INT(P.req.body.n, 0);
    CHECK(in_buf(&P, P.req.body));
    done(&P);

    /* no headers at all (HTTP/1.0 needs no Host), other methods */
    FEED(P, "DELETE /x HTTP/1.0\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.method, "DELETE"));
    CHECK_EQ_INT(P.req.nheaders, 0);
    CHECK_EQ_INT(P.req.minor, 0);
    done(&P);

    FEED(P, "M-SEARCH! /x HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.method, "M-SEARCH!"));
    done(&P);

    /* OPTIONS * */
    FEED(P, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.target, "*"));
    CHECK(str_is(P.req.path, "*"));
    CHECK_EQ_INT(P.req.query.n, 0);
    done(&P);

    /* an incomplete request is only ever "need more" */
    FEED(P, "GET / HTTP/1.1\r\nHost: a\r\n");
    CHECK_EQ_INT(P.rc, ERR_AGAIN);
    done(&P);
    http_request r;
    int st = 0;
    http_limits l = deflim();
    CHECK_EQ_INT(http_parse_request(NULL, 0, &l, &r, &st), ERR_AGAIN);
}

TEST(headers_parsed_and_trimmed)
{
    parsed P;
    FEED(P, "GET / HTTP/1.1\r\n"
            "Host:example.com\r\n"
            "X-Pad: \t  padded value \t \r\n"
            "X-Empty:\r\n"
            "X-Blank:   \t\r\n"
            "x-dup: first\r\n"
            "X-DUP: second\r\n"
            "X-Inner: a  b\tc\r\n"
            "X-Obs: caf\xc3\xa9\r\n"
            "X-Tchar!#$%&'*+-.^_`|~09: v\r\n"
            "\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK_EQ_INT(P.req.nheaders, 9);
    CHECK(str_is(P.req.headers[0].value, "example.com"));
    CHECK(str_is(P.req.headers[1].name, "X-Pad"));
    CHECK(str_is(P.req.headers[1].value, "padded value"));
    CHECK(str_is(P.req.headers[2].value, ""));
    CHECK(in_buf(&P, P.req.headers[2].value));
    CHECK(str_is(P.req.headers[3].value, ""));
    CHECK(str_is(P.req.headers[6].value, "a  b\tc"));
    CHECK(str_is(P.req.headers[7].value, "caf\xc3\xa9"));
    CHECK(str_is(P.req.headers[8].name, "X-Tchar!#$%&'*+-.^_`|~09"));
    for (size_t i = 0; i < P.req.nheaders; i++) {
        CHECK(in_buf(&P, P.req.headers[i].name));
        CHECK(in_buf(&P, P.req.headers[i].value));
    }

    const http_str *v = http_header_get(&P.req, "x-pad");
    CHECK(v && str_is(*v, "padded value"));
    v = http_header_get(&P.req, "X-Dup");
    CHECK(v && str_is(*v, "first"));
    CHECK(http_header_get(&P.req, "X-Missing") == NULL);
    CHECK(http_header_get(&P.req, "X-Pa") == NULL);
    CHECK(http_header_get(&P.req, "X-Padd") == NULL);
    done(&P);
}

TEST(query_split)
{
    parsed P;
    FEED(P, "GET /a/b?x=1&y=%20z HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(str_is(P.req.target, "/a/b?x=1&y=%20z"));
    CHECK(str_is(P.req.path, "/a/b"));
    CHECK(str_is(P.req.query, "x=1&y=%20z"));
    done(&P);

    FEED(P, "GET /a? HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(str_is(P.req.path, "/a"));
    CHECK_EQ_INT(P.req.query.n, 0);
    CHECK(in_buf(&P, P.req.query));
    done(&P);

    FEED(P, "GET /?a=b?c HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(str_is(P.req.path, "/"));
    CHECK(str_is(P.req.query, "a=b?c"));
    done(&P);

    /* the path is not percent-decoded */
    FEED(P, "GET /%41%2f?q HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(str_is(P.req.path, "/%41%2f"));
    CHECK(str_is(P.req.query, "q"));
    done(&P);
}

TEST(keep_alive)
{
    parsed P;
    FEED(P, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK(P.rc > 0 && P.req.keep_alive);
    done(&P);
    FEED(P, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.keep_alive);
    done(&P);
    FEED(P, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.keep_alive);
    done(&P);
    /* a later Connection line counts too */
    FEED(P, "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo\r\nConnection: close\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.keep_alive);
    done(&P);
    /* "closed" is not "close" */
    FEED(P, "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n");
    CHECK(P.rc > 0 && P.req.keep_alive);
    done(&P);
    FEED(P, "GET / HTTP/1.0\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.keep_alive);
    CHECK_EQ_INT(P.req.minor, 0);
    done(&P);
    FEED(P, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(P.rc > 0 && P.req.keep_alive);
    done(&P);
    FEED(P, "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.keep_alive);
    done(&P);
}

TEST(upgrade_flag)
{
    parsed P;
    FEED(P, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
            "Connection: keep-alive, Upgrade\r\n\r\n");
    CHECK(P.rc > 0);
    CHECK(P.req.upgrade);
    CHECK(P.req.keep_alive);
    done(&P);
    FEED(P, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nconnection: upgrade\r\n\r\n");
    CHECK(P.rc > 0 && P.req.upgrade);
    done(&P);
    /* the Upgrade header alone is not enough */
    FEED(P, "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.upgrade);
    done(&P);
    FEED(P, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrades\r\n\r\n");
    CHECK(P.rc > 0 && !P.req.upgrade);
    done(&P);
}

TEST(content_length_body)
{
    parsed P;
    FEED(P, "POST /msg HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK_EQ_INT(P.req.content_length, 11);
    CHECK(str_is(P.req.body, "hello world"));
    CHECK_EQ_INT(P.req.head_len, P.len - 11);
    CHECK(P.req.body.p == P.buf + P.req.head_len);
    CHECK(!P.req.chunked);
    done(&P);

    /* identical duplicates, leading zeros, whitespace around the value */
    FEED(P, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\ncontent-length:  003 \r\n\r\nabc");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.body, "abc"));
    done(&P);

    FEED(P, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK_EQ_INT(P.req.body.n, 0);
    done(&P);

    /* body bytes that look like a request are body */
    FEED(P, "PUT / HTTP/1.0\r\nContent-Length: 18\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.body, "GET / HTTP/1.1\r\n\r\n"));
    done(&P);

    /* exactly max_body is fine */
    http_limits l = deflim();
    l.max_body = 4;
    FEED_LIM(P, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd", &l);
    CHECK_EQ_INT(P.rc, (int)P.len);
    done(&P);
}

TEST(chunked_body)
{
    parsed P;
    FEED(P, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n"
            "1;name=value;flag\r\n \r\n"
            "A ; ext=\"quoted; x\"\r\n0123456789\r\n"
            "0\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(P.req.chunked);
    CHECK_EQ_INT(P.req.content_length, 16);
    CHECK(str_is(P.req.body, "hello 0123456789"));
    CHECK(P.req.body.p == P.buf + P.req.head_len);
    CHECK(str_is(P.req.headers[1].value, "chunked"));
    done(&P);

    /* trailers, upper/lowercase hex, leading zeros, case of "Chunked" */
    FEED(P, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
            "0000b\r\nhello world\r\n"
            "1f\r\n0123456789abcdefghijklmnopqrstu\r\n"
            "0;last\r\n"
            "X-Checksum: abc\r\n"
            "X-Other:  1 \r\n"
            "\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK_EQ_INT(P.req.content_length, 42);
    CHECK(str_is(P.req.body, "hello world0123456789abcdefghijklmnopqrstu"));
    /* trailers are not headers */
    CHECK_EQ_INT(P.req.nheaders, 2);
    CHECK(http_header_get(&P.req, "X-Checksum") == NULL);
    done(&P);

    /* empty chunked body; a list with empty elements */
    FEED(P, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked ,\r\n\r\n0\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(P.req.chunked);
    CHECK_EQ_INT(P.req.content_length, 0);
    CHECK_EQ_INT(P.req.body.n, 0);
    done(&P);

    /* data containing CR, LF and chunk-like bytes */
    FEED(P, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            "4\r\n\r\n0\n\r\n0\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK_EQ_INT(P.req.body.n, 4);
    CHECK(P.req.body.n == 4 && memcmp(P.req.body.p, "\r\n0\n", 4) == 0);
    done(&P);

    /* decoded size exactly max_body */
    http_limits l = deflim();
    l.max_body = 5;
    FEED_LIM(P, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", &l);
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.body, "abcde"));
    done(&P);
}

TEST(pipelining)
{
    static const char in[] =
        "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
        "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        "\r\nGET /d?z HTTP/1.0\r\n\r\n";
    size_t n = sizeof in - 1, off = 0;
    const char *paths[] = { "/a", "/b", "/c", "/d" };
    const char *bodies[] = { "", "abc", "hi", "" };
    for (int i = 0; i < 4; i++) {
        parsed P;
        feed_at(&P, in + off, n - off, NULL, __LINE__);
        CHECK(P.rc > 0);
        if (P.rc <= 0) { done(&P); return; }
        CHECK(str_is(P.req.path, paths[i]));
        CHECK(str_is(P.req.body, bodies[i]));
        off += (size_t)P.rc;
        done(&P);
    }
    CHECK_EQ_INT(off, n);

    /* the same in one buffer parsed in place, as a server does */
    char buf[sizeof in];
    memcpy(buf, in, sizeof in);
    http_limits l = deflim();
    http_request r;
    int st = 0, count = 0;
    off = 0;
    while (off < n) {
        int rc = http_parse_request(buf + off, n - off, &l, &r, &st);
        CHECK(rc > 0);
        if (rc <= 0) break;
        CHECK(str_is(r.path, paths[count]));
        CHECK(str_is(r.body, bodies[count]));
        off += (size_t)rc;
        count++;
    }
    CHECK_EQ_INT(count, 4);
    /* only whole requests: a trailing partial one is "need more" */
    CHECK_EQ_INT(http_parse_request(buf, 5, &l, &r, &st), ERR_AGAIN);
}

TEST(lf_only_line_endings)
{
    parsed P;
    FEED(P, "GET /lf HTTP/1.1\nHost: a\nX-A: b \n\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.path, "/lf"));
    CHECK_EQ_INT(P.req.nheaders, 2);
    CHECK(str_is(P.req.headers[1].value, "b"));
    done(&P);

    /* mixed, with a chunked body and trailer */
    FEED(P, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\n\r\n"
            "3\nabc\n2;x\r\nde\n0\nT: 1\n\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.body, "abcde"));
    done(&P);

    FEED(P, "POST / HTTP/1.1\nHost: a\nContent-Length: 2\n\nok");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.body, "ok"));
    done(&P);
}

TEST(leading_empty_line)
{
    /* RFC 9112 2.2: one empty line before a request is ignored */
    parsed P;
    FEED(P, "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.method, "GET"));
    CHECK_EQ_INT(P.req.head_len, P.len);
    done(&P);
    FEED(P, "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    done(&P);
    /* but no more than one */
    EXPECT_ERR("\r\n\r\nGET / HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("\rGET / HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
}

/* ---- 400 ---------------------------------------------------------------- */

TEST(bad_request_line)
{
    EXPECT_ERR("\r\n", ERR_AGAIN, -777); /* nothing yet */
    EXPECT_ERR("GET\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / \r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET  / HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /  HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(" GET / HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1 \r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET\t/ HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("G(T / HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("G\xc3\x89T / HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /a\x01 HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /a\x7f HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /a\0b HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET /a\rb HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\r\n\r\n", ERR_INVALID, 400);
    /* request-target forms: origin-form only, and "*" for OPTIONS */
    EXPECT_ERR("GET a/b HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET * HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("OPTIONS *x HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("options * HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET http://example.com/ HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("CONNECT example.com:443 HTTP/1.1\r\n\r\n", ERR_INVALID, 400);
    /* garbage versions */
    EXPECT_ERR("GET / HTTP/x\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.x\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / http/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTPS/1.1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1.1\r\n\r\n", ERR_INVALID, 400);
    /* the error wins over what follows and comes before the head ends */
    parsed P;
    FEED(P, "GET / HTTP/x\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.status, 400);
    CHECK_EQ_INT(P.first_err, strlen("GET / HTTP/x\r\n"));
    done(&P);
}

TEST(bad_header_fields)
{
    /* whitespace before the colon */
    EXPECT_ERR("GET / HTTP/1.1\r\nHost : a\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", ERR_INVALID, 400);
    /* obs-fold, also right after the request line */
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\n Host: a\r\n\r\n", ERR_INVALID, 400);
    /* names that are not tokens */
    EXPECT_ERR("GET / HTTP/1.1\r\n: a\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX(A): a\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX\"A: a\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nNoColon\r\n\r\n", ERR_INVALID, 400);
    /* control characters in values (HTAB is fine, tested above) */
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\x01z\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\0z\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\x7fz\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\x1b\r\n\r\n", ERR_INVALID, 400);
    /* bare CR inside a value or as a line end */
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\r\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("GET / HTTP/1.1\r\nX-A: a\r\n\r\r\n", ERR_INVALID, 400);
    /* two Host fields */
    EXPECT_ERR("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", ERR_INVALID, 400);
    /* HTTP/1.1 without Host (RFC 9112 3.2): known when the head ends */
    parsed P;
    FEED(P, "GET / HTTP/1.1\r\nX-Host: a\r\n\r\n");
    CHECK_EQ_INT(P.rc, ERR_INVALID);
    CHECK_EQ_INT(P.status, 400);
    CHECK_EQ_INT(P.first_err, P.len);
    done(&P);
    EXPECT_ERR("POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok", ERR_INVALID, 400);
    /* HTTP/1.0 needs none; an empty Host is allowed */
    FEED(P, "GET / HTTP/1.0\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    done(&P);
    FEED(P, "GET / HTTP/1.1\r\nHOST:\r\n\r\n");
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(P.rc > 0 && str_is(P.req.headers[0].value, ""));
    done(&P);
}

TEST(bad_framing)
{
    /* Content-Length and Transfer-Encoding together, in either order */
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
               "0\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
               "0\r\n\r\n", ERR_INVALID, 400);
    /* differing duplicates */
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
               ERR_INVALID, 400);
    /* invalid values */
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\nx", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\nx", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
               ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
               ERR_INVALID, 400);
    /* chunked twice, or no coding at all */
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
               ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
               ERR_INVALID, 400);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", ERR_INVALID, 400);
    /* Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1) */
    EXPECT_ERR("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
               ERR_INVALID, 400);
    /* an invalid Content-Length is refused before the head ends */
    parsed P;
    FEED(P, "POST / HTTP/1.1\r\nContent-Length: 1x\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.status, 400);
    CHECK_EQ_INT(P.first_err, strlen("POST / HTTP/1.1\r\nContent-Length: 1x\r\n"));
    done(&P);
}

TEST(bad_chunked)
{
    EXPECT_ERR(CH "x\r\n", ERR_INVALID, 400);                 /* no size */
    EXPECT_ERR(CH "\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH ";a\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH "0x5\r\nhello\r\n0\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH "-5\r\nhello\r\n0\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH " 5\r\nhello\r\n0\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH "5 \r\nhello\r\n0\r\n\r\n", ERR_INVALID, 400);  /* BWS only before ';' */
    EXPECT_ERR(CH "5g\r\nhello\r\n0\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH "5\rhello\r\n0\r\n\r\n", ERR_INVALID, 400);    /* bare CR */
    EXPECT_ERR(CH "5;a\x01\r\nhello\r\n0\r\n\r\n", ERR_INVALID, 400); /* CTL in ext */
    EXPECT_ERR(CH "5\r\nhelloX\r\n0\r\n\r\n", ERR_INVALID, 400); /* data too long */
    EXPECT_ERR(CH "5\r\nhello\r0\r\n\r\n", ERR_INVALID, 400);    /* CR not CRLF */
    EXPECT_ERR(CH "5\r\nhel\r\n0\r\n\r\n", ERR_INVALID, 400);    /* data too short */
    EXPECT_ERR(CH "0\r\nX : y\r\n\r\n", ERR_INVALID, 400);       /* bad trailer */
    EXPECT_ERR(CH "0\r\nX: \x01\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH "0\r\n folded\r\n\r\n", ERR_INVALID, 400);
    EXPECT_ERR(CH "0\r\n\r\r\n", ERR_INVALID, 400);
    /* the error is found as soon as the bad byte is there */
    parsed P;
    FEED(P, CH "5\r\nhelloX\r\n0\r\n\r\n");
    CHECK_EQ_INT(P.first_err, strlen(CH "5\r\nhelloX"));
    done(&P);
    /* incomplete chunked bodies only ask for more */
    FEED(P, CH "5\r\nhello\r\n0\r\n");
    CHECK_EQ_INT(P.rc, ERR_AGAIN);
    done(&P);
    FEED(P, CH "5\r\nhello\r\n0\r\nX-T: 1\r\n");
    CHECK_EQ_INT(P.rc, ERR_AGAIN);
    done(&P);
}

/* ---- 413 ---------------------------------------------------------------- */

TEST(too_large_body_content_length)
{
    /* refused as soon as the head is parsed, without any body byte */
    static const char head[] =
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000000\r\n\r\n";
    parsed P;
    FEED(P, head);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 413);
    CHECK_EQ_INT(P.first_err, sizeof head - 1);
    done(&P);

    http_limits l = deflim();
    l.max_body = 4;
    EXPECT_ERR_LIM("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", &l,
                   ERR_TOO_LARGE, 413);
    EXPECT_ERR_LIM("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde", &l,
                   ERR_TOO_LARGE, 413);
    l.max_body = 0;
    EXPECT_ERR_LIM("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n", &l,
                   ERR_TOO_LARGE, 413);
    FEED_LIM(P, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &l);
    CHECK(P.rc > 0);
    done(&P);
}

TEST(too_large_body_chunked)
{
    /* a size that can never fit: refused at the digit that crosses max_body,
     * before the line or any data arrives; sizes that would overflow 64 bits
     * are therefore always a 413 */
    parsed P;
    FEED(P, CH "100001\r\n");
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 413);
    CHECK_EQ_INT(P.first_err, strlen(CH "100001"));
    done(&P);
    EXPECT_ERR(CH "fffffffffffffffffffffffffff\r\n", ERR_TOO_LARGE, 413);
    EXPECT_ERR(CH "10000000000000000\r\n", ERR_TOO_LARGE, 413);
    FEED(P, CH "100000\r\n");
    CHECK_EQ_INT(P.rc, ERR_AGAIN); /* exactly 1 MiB is allowed */
    done(&P);

    /* the decoded total counts, not each chunk */
    http_limits l = deflim();
    l.max_body = 5;
    EXPECT_ERR_LIM(CH "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", &l, ERR_TOO_LARGE, 413);
    FEED_LIM(P, CH "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n", &l);
    CHECK_EQ_INT(P.first_err, strlen(CH "3\r\nabc\r\n3"));
    done(&P);

    /* framing (size lines, extensions, line ends) is bounded by
     * max_body + max_request_line: here 5 + 16 bytes */
    l.max_request_line = 16;
    FEED_LIM(P, CH "1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n0\r\n\r\n", &l);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 413);
    CHECK_EQ_INT(P.first_err, strlen(CH) + 21);
    done(&P);
    /* many small chunks add up */
    EXPECT_ERR_LIM(CH "0001\r\na\r\n0001\r\nb\r\n0001\r\nc\r\n0\r\n\r\n", &l,
                   ERR_TOO_LARGE, 413);
    /* inside the budget: 3 x ("1\r\n" + "\r\n") + "0\r\n" = 18 <= 21 */
    FEED_LIM(P, CH "1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", &l);
    CHECK_EQ_INT(P.rc, (int)P.len);
    CHECK(str_is(P.req.body, "abc"));
    done(&P);
}

/* ---- 414 ---------------------------------------------------------------- */

TEST(uri_too_long)
{
    http_limits l = deflim();
    l.max_request_line = 32;
    sbuf s = { 0 };
    sb_str(&s, "GET /");
    sb_rep(&s, 'a', 32 - strlen("GET / HTTP/1.1"));
    sb_str(&s, " HTTP/1.1"); /* exactly 32 bytes: fine */
    CHECK_EQ_INT(s.n, 32);
    sb_str(&s, "\r\nHost: a\r\n\r\n");
    parsed P;
    feed_at(&P, s.p, s.n, &l, __LINE__);
    CHECK_EQ_INT(P.rc, (int)s.n);
    done(&P);
    /* the same with LF only */
    feed_at(&P, s.p, 32, &l, __LINE__);
    CHECK_EQ_INT(P.rc, ERR_AGAIN);
    done(&P);
    s.n = 32;
    sb_str(&s, "\nHost: a\n\n");
    feed_at(&P, s.p, s.n, &l, __LINE__);
    CHECK_EQ_INT(P.rc, (int)s.n);
    done(&P);

    /* one more byte: refused at 33 bytes, before the line end arrives */
    s.n = 0;
    sb_str(&s, "GET /");
    sb_rep(&s, 'a', 33 - strlen("GET / HTTP/1.1"));
    sb_str(&s, " HTTP/1.1\r\n\r\n");
    feed_at(&P, s.p, s.n, &l, __LINE__);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 414);
    CHECK_EQ_INT(P.first_err, 33);
    done(&P);
    /* only the line so far, no LF yet */
    feed_at(&P, s.p, 40, &l, __LINE__);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 414);
    done(&P);

    /* with the default limit: a 9000-byte target, never terminated */
    s.n = 0;
    sb_str(&s, "GET /");
    sb_rep(&s, 'x', 9000);
    feed_at(&P, s.p, s.n, NULL, __LINE__);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 414);
    CHECK_EQ_INT(P.first_err, 8193);
    done(&P);
    /* a garbage line that is too long is a 414 too */
    s.n = 0;
    sb_rep(&s, '\x01', 8300);
    feed_at(&P, s.p, s.n, NULL, __LINE__);
    CHECK_EQ_INT(P.status, 414);
    done(&P);
    free(s.p);
}

/* ---- 431 ---------------------------------------------------------------- */

TEST(header_fields_too_many)
{
    sbuf s = { 0 };
    char line[64];
    parsed P;
    /* exactly the default 64 fields */
    sb_str(&s, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < 64; i++) {
        snprintf(line, sizeof line, "X-H%d: %d\r\n", i, i);
        sb_str(&s, line);
    }
    size_t at64 = s.n;
    sb_str(&s, "\r\n");
    feed_at(&P, s.p, s.n, NULL, __LINE__);
    CHECK_EQ_INT(P.rc, (int)s.n);
    CHECK_EQ_INT(P.req.nheaders, 64);
    CHECK(str_is(P.req.headers[63].value, "63"));
    done(&P);

    /* one more: 431 when the 65th field line is complete */
    s.n = at64;
    sb_str(&s, "X-H64: 64\r\n\r\n");
    feed_at(&P, s.p, s.n, NULL, __LINE__);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 431);
    CHECK_EQ_INT(P.first_err, s.n - 2);
    done(&P);

    /* a small limit */
    http_limits l = deflim();
    l.max_headers = 2;
    EXPECT_ERR_LIM("GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\nC: 3\r\n\r\n", &l,
                   ERR_TOO_LARGE, 431);
    FEED_LIM(P, "GET / HTTP/1.1\r\nHost: a\r\nB: 2\r\n\r\n", &l);
    CHECK(P.rc > 0);
    done(&P);
    l.max_headers = 0;
    EXPECT_ERR_LIM("GET / HTTP/1.1\r\nA: 1\r\n\r\n", &l, ERR_TOO_LARGE, 431);

    /* max_headers is capped by HTTP_MAX_HEADERS */
    l.max_headers = 1000;
    s.n = 0;
    sb_str(&s, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < HTTP_MAX_HEADERS; i++) sb_str(&s, "A: b\r\n");
    size_t atmax = s.n;
    sb_str(&s, "\r\n");
    feed_at(&P, s.p, s.n, &l, __LINE__);
    CHECK_EQ_INT(P.req.nheaders, HTTP_MAX_HEADERS);
    CHECK_EQ_INT(P.rc, (int)s.n);
    done(&P);
    s.n = atmax;
    sb_str(&s, "A: b\r\n\r\n");
    feed_at(&P, s.p, s.n, &l, __LINE__);
    CHECK_EQ_INT(P.status, 431);
    done(&P);

    /* trailers are counted against the same limit (on their own: the head
     * has two fields) */
    l.max_headers = 2;
    EXPECT_ERR_LIM(CH "0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &l, ERR_TOO_LARGE, 431);
    FEED_LIM(P, CH "0\r\nA: 1\r\nB: 2\r\n\r\n", &l);
    CHECK(P.rc > 0);
    done(&P);
    free(s.p);
}

TEST(header_section_too_big)
{
    http_limits l = deflim();
    l.max_header_bytes = 64;
    /* "GET / HTTP/1.0\r\n" + "X-Fill: " + n x 'a' + "\r\n\r\n" */
    sbuf s = { 0 };
    parsed P;
    for (size_t extra = 0; extra < 3; extra++) {
        s.n = 0;
        sb_str(&s, "GET / HTTP/1.0\r\nX-Fill: ");
        sb_rep(&s, 'a', 36 + extra);
        sb_str(&s, "\r\n\r\n");
        feed_at(&P, s.p, s.n, &l, __LINE__);
        if (extra == 0) {
            /* exactly 64 bytes fit */
            CHECK_EQ_INT(s.n, 64);
            CHECK_EQ_INT(P.rc, 64);
        } else {
            /* one or two more: refused at byte 64, even when only the
             * final blank line goes over */
            CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
            CHECK_EQ_INT(P.status, 431);
            CHECK_EQ_INT(P.first_err, 64);
        }
        done(&P);
    }
    /* a request line that alone passes the head limit */
    l.max_header_bytes = 10;
    EXPECT_ERR_LIM("GET / HTTP/1.1\r\n\r\n", &l, ERR_TOO_LARGE, 431);

    /* by bytes with the default limit, well before the head ends */
    s.n = 0;
    sb_str(&s, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 40; i++) {
        sb_str(&s, "X-Big: ");
        sb_rep(&s, 'v', 500);
        sb_str(&s, "\r\n");
    }
    sb_str(&s, "\r\n");
    feed_at(&P, s.p, s.n, NULL, __LINE__);
    CHECK_EQ_INT(P.rc, ERR_TOO_LARGE);
    CHECK_EQ_INT(P.status, 431);
    CHECK_EQ_INT(P.first_err, 16384);
    done(&P);

    /* one huge field without a line end */
    s.n = 0;
    sb_str(&s, "GET / HTTP/1.1\r\nX-Big: ");
    sb_rep(&s, 'v', 17000);
    feed_at(&P, s.p, s.n, NULL, __LINE__);
    CHECK_EQ_INT(P.status, 431);
    CHECK_EQ_INT(P.first_err, 16384);
    done(&P);

    /* trailers have their own header-size budget */
    l.max_header_bytes = 64;
    EXPECT_ERR_LIM(CH "0\r\nX-T: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n",
                   &l, ERR_TOO_LARGE, 431);
    l = deflim();
    s.n = 0;
    sb_str(&s, CH "0\r\nX-T: ");
    sb_rep(&s, 't', 17000);
    feed_at(&P, s.p, s.n, &l, __LINE__);
    CHECK_EQ_INT(P.status, 431);
    CHECK_EQ_INT(P.first_err, strlen(CH "0\r\n") + 16384);
    done(&P);
    free(s.p);
}

/* ---- 501 and 505 -------------------------------------------------------- */

TEST(not_implemented)
{
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
               ERR_UNSUPPORTED, 501);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
               ERR_UNSUPPORTED, 501);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
               ERR_UNSUPPORTED, 501);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
               ERR_UNSUPPORTED, 501);
    EXPECT_ERR("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n\r\n",
               ERR_UNSUPPORTED, 501);
}

TEST(version_not_supported)
{
    EXPECT_ERR("GET / HTTP/2.0\r\n\r\n", ERR_VERSION, 505);
    EXPECT_ERR("GET / HTTP/1.2\r\n\r\n", ERR_VERSION, 505);
    EXPECT_ERR("GET / HTTP/0.9\r\n\r\n", ERR_VERSION, 505);
    EXPECT_ERR("GET / HTTP/3\r\n\r\n", ERR_VERSION, 505);
    EXPECT_ERR("GET / HTTP/1.10\r\n\r\n", ERR_VERSION, 505);
    EXPECT_ERR("GET / HTTP/11.1\r\n\r\n", ERR_VERSION, 505);
    /* known as soon as the request line ends */
    parsed P;
    FEED(P, "GET / HTTP/2.0\r\nHost: a\r\n\r\n");
    CHECK_EQ_INT(P.status, 505);
    CHECK_EQ_INT(P.first_err, strlen("GET / HTTP/2.0\r\n"));
    done(&P);
}

/* ---- helpers ------------------------------------------------------------ */

static http_str S(const char *c) { return (http_str){ c, strlen(c) }; }

TEST(str_ieq_and_tokens)
{
    CHECK(http_str_ieq(S("Content-Length"), "content-length"));
    CHECK(http_str_ieq(S(""), ""));
    CHECK(!http_str_ieq(S("Content-Lengt"), "content-length"));
    CHECK(!http_str_ieq(S("Content-Lengths"), "content-length"));
    CHECK(!http_str_ieq(S("a@"), "a`")); /* not a blind |0x20 */

    CHECK(http_has_token(S("keep-alive, Upgrade"), "upgrade"));
    CHECK(http_has_token(S("Upgrade"), "upgrade"));
    CHECK(http_has_token(S(" \tupgrade\t ,x"), "UPGRADE"));
    CHECK(http_has_token(S(",,upgrade,,"), "upgrade"));
    CHECK(!http_has_token(S("upgrades, keep-alive"), "upgrade"));
    CHECK(!http_has_token(S("up grade"), "upgrade"));
    CHECK(!http_has_token(S(""), "upgrade"));
    CHECK(!http_has_token(S("a,,b"), ""));
}

TEST(percent_decode)
{
    char out[32];
    memset(out, 'X', sizeof out);
    CHECK_EQ_INT(http_percent_decode("/a%20b%2Fc", 10, out, sizeof out), 6);
    CHECK_MEM(out, "/a b/c", 6);
    CHECK_EQ_INT(http_percent_decode("%41%62%e2%82%AC", 15, out, sizeof out), 5);
    CHECK_MEM(out, "Ab\xe2\x82\xac", 5);
    CHECK_EQ_INT(http_percent_decode("a+b", 3, out, sizeof out), 3);
    CHECK_MEM(out, "a+b", 3);
    CHECK_EQ_INT(http_percent_decode("", 0, out, sizeof out), 0);
    CHECK_EQ_INT(http_percent_decode("%25", 3, out, sizeof out), 1);
    CHECK_EQ_INT(out[0], '%');
    /* malformed escapes */
    CHECK_EQ_INT(http_percent_decode("%zz", 3, out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_percent_decode("%4g", 3, out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_percent_decode("ab%4", 4, out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_percent_decode("ab%", 3, out, sizeof out), ERR_INVALID);
    /* the length bounds the input: "%41" cut to "%4" */
    CHECK_EQ_INT(http_percent_decode("%41", 2, out, sizeof out), ERR_INVALID);
    /* NUL, encoded or raw */
    CHECK_EQ_INT(http_percent_decode("a%00b", 5, out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_percent_decode("a\0b", 3, out, sizeof out), ERR_INVALID);
    /* room */
    CHECK_EQ_INT(http_percent_decode("abcd", 4, out, 4), 4);
    CHECK_EQ_INT(http_percent_decode("abcde", 5, out, 4), ERR_TOO_LARGE);
    CHECK_EQ_INT(http_percent_decode("%41%42", 6, out, 2), 2);
    CHECK_EQ_INT(http_percent_decode("%41%42", 6, out, 1), ERR_TOO_LARGE);
    CHECK_EQ_INT(http_percent_decode("a", 1, NULL, 0), ERR_TOO_LARGE);
    CHECK_EQ_INT(http_percent_decode("", 0, NULL, 0), 0);
    /* malformed beats too small */
    CHECK_EQ_INT(http_percent_decode("abcdef%z", 8, out, 2), ERR_INVALID);
}

TEST(query_get)
{
    char out[16];
    http_str q = S("a=1&token=xyz&sp=a+b%20c&plus=%2B&empty=&flag&dup=1&dup=2&eq=a=b");
    CHECK_EQ_INT(http_query_get(q, "token", out, sizeof out), 3);
    CHECK(strcmp(out, "xyz") == 0);
    CHECK_EQ_INT(http_query_get(q, "a", out, sizeof out), 1);
    CHECK(strcmp(out, "1") == 0);
    CHECK_EQ_INT(http_query_get(q, "sp", out, sizeof out), 5);
    CHECK(strcmp(out, "a b c") == 0);
    CHECK_EQ_INT(http_query_get(q, "plus", out, sizeof out), 1);
    CHECK(strcmp(out, "+") == 0);
    memset(out, 'X', sizeof out);
    CHECK_EQ_INT(http_query_get(q, "empty", out, sizeof out), 0);
    CHECK_EQ_INT(out[0], '\0');
    CHECK_EQ_INT(http_query_get(q, "flag", out, sizeof out), 0);
    CHECK_EQ_INT(http_query_get(q, "dup", out, sizeof out), 1);
    CHECK(strcmp(out, "1") == 0);
    CHECK_EQ_INT(http_query_get(q, "eq", out, sizeof out), 3);
    CHECK(strcmp(out, "a=b") == 0);
    /* names match whole and case-sensitively */
    CHECK_EQ_INT(http_query_get(q, "tok", out, sizeof out), ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get(q, "tokens", out, sizeof out), ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get(q, "Token", out, sizeof out), ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get(q, "xyz", out, sizeof out), ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get(S(""), "a", out, sizeof out), ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get((http_str){ NULL, 0 }, "a", out, sizeof out),
                 ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get(S("&&&"), "", out, sizeof out), ERR_NOT_FOUND);
    CHECK_EQ_INT(http_query_get(S("&=v&"), "", out, sizeof out), 1);
    CHECK_EQ_INT(http_query_get(S("x=1&&y=2"), "y", out, sizeof out), 1);
    /* bad escapes and NUL in the value asked for */
    CHECK_EQ_INT(http_query_get(S("a=%zz"), "a", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_query_get(S("a=%2"), "a", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_query_get(S("a=%"), "a", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(http_query_get(S("a=x%00"), "a", out, sizeof out), ERR_INVALID);
    /* ... but not in other parameters */
    CHECK_EQ_INT(http_query_get(S("b=%zz&a=ok"), "a", out, sizeof out), 2);
    /* the query slice bounds the value */
    CHECK_EQ_INT(http_query_get((http_str){ "a=12345", 4 }, "a", out, sizeof out), 2);
    CHECK(strcmp(out, "12") == 0);
    /* room for the value and its NUL */
    CHECK_EQ_INT(http_query_get(S("a=abc"), "a", out, 4), 3);
    CHECK(strcmp(out, "abc") == 0);
    CHECK_EQ_INT(http_query_get(S("a=abcd"), "a", out, 4), ERR_TOO_LARGE);
    CHECK_EQ_INT(http_query_get(S("a=%41%42%43"), "a", out, 4), 3);
    CHECK_EQ_INT(http_query_get(S("a="), "a", out, 1), 0);
    CHECK_EQ_INT(http_query_get(S("a="), "a", NULL, 0), ERR_TOO_LARGE);
    CHECK_EQ_INT(http_query_get(S("a=%zzzzzz"), "a", out, 2), ERR_INVALID);
}

TEST(reason)
{
    static const struct { int code; const char *r; } t[] = {
        { 100, "Continue" }, { 101, "Switching Protocols" }, { 200, "OK" },
        { 201, "Created" }, { 204, "No Content" }, { 206, "Partial Content" },
        { 301, "Moved Permanently" }, { 302, "Found" }, { 304, "Not Modified" },
        { 400, "Bad Request" }, { 401, "Unauthorized" }, { 403, "Forbidden" },
        { 404, "Not Found" }, { 405, "Method Not Allowed" },
        { 408, "Request Timeout" }, { 409, "Conflict" },
        { 411, "Length Required" }, { 413, "Content Too Large" },
        { 414, "URI Too Long" }, { 415, "Unsupported Media Type" },
        { 416, "Range Not Satisfiable" }, { 422, "Unprocessable Content" },
        { 426, "Upgrade Required" }, { 429, "Too Many Requests" },
        { 431, "Request Header Fields Too Large" },
        { 500, "Internal Server Error" }, { 501, "Not Implemented" },
        { 503, "Service Unavailable" }, { 505, "HTTP Version Not Supported" },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        CHECK(strcmp(http_reason(t[i].code), t[i].r) == 0);
    CHECK(strcmp(http_reason(299), "Unknown") == 0);
    CHECK(strcmp(http_reason(0), "Unknown") == 0);
    CHECK(strcmp(http_reason(-1), "Unknown") == 0);
}

TEST(response_head)
{
    char out[256];
    static const char want1[] =
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 42\r\n"
        "Connection: keep-alive\r\n"
        "X-A: 1\r\nRetry-After: 3\r\n"
        "\r\n";
    int n = http_response_head(out, sizeof out, 200, "application/json", 42,
                               true, "X-A: 1\r\nRetry-After: 3\r\n");
    CHECK_EQ_INT(n, (int)sizeof want1 - 1);
    CHECK(n > 0 && memcmp(out, want1, (size_t)n) == 0);
    CHECK_EQ_INT(out[n], '\0'); /* NUL-terminated when there is room */

    static const char want2[] =
        "HTTP/1.1 404 Not Found\r\n"
        "Content-Length: 18446744073709551615\r\n"
        "Connection: close\r\n"
        "\r\n";
    n = http_response_head(out, sizeof out, 404, NULL, UINT64_MAX, false, NULL);
    CHECK_EQ_INT(n, (int)sizeof want2 - 1);
    CHECK(n > 0 && memcmp(out, want2, (size_t)n) == 0);

    /* no Content-Length in 1xx and 204 (RFC 9110 8.6) */
    static const char want3[] =
        "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n";
    n = http_response_head(out, sizeof out, 204, NULL, 0, true, NULL);
    CHECK_EQ_INT(n, (int)sizeof want3 - 1);
    CHECK(n > 0 && memcmp(out, want3, (size_t)n) == 0);
    n = http_response_head(out, sizeof out, 101, NULL, 0, true,
                           "Upgrade: websocket\r\n");
    CHECK(n > 0 && strstr(out, "Content-Length") == NULL);
    CHECK(n > 0 && strncmp(out, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
    /* a 304 carries the length of the representation, as given */
    n = http_response_head(out, sizeof out, 304, NULL, 10, true, NULL);
    CHECK(n > 0 && strstr(out, "\r\nContent-Length: 10\r\n") != NULL);
    n = http_response_head(out, sizeof out, 200, NULL, 0, true, NULL);
    CHECK(n > 0 && strstr(out, "Content-Length: 0\r\n") != NULL);

    /* unknown codes get "Unknown"; nonsense codes and injected lines fail */
    n = http_response_head(out, sizeof out, 299, NULL, 0, true, NULL);
    CHECK(n > 0 && strncmp(out, "HTTP/1.1 299 Unknown\r\n", 22) == 0);
    CHECK_EQ_INT(http_response_head(out, sizeof out, 42, NULL, 0, true, NULL),
                 ERR_INVALID);
    CHECK_EQ_INT(http_response_head(out, sizeof out, 1000, NULL, 0, true, NULL),
                 ERR_INVALID);
    CHECK_EQ_INT(http_response_head(out, sizeof out, 200, "text/html\r\nX: y",
                                    0, true, NULL), ERR_INVALID);

    /* every capacity short of the length fails; the exact length fits */
    size_t len = sizeof want1 - 1;
    for (size_t cap = 0; cap < len; cap++) {
        char *small = malloc(cap ? cap : 1);
        CHECK_EQ_INT(http_response_head(small, cap, 200, "application/json", 42,
                                        true, "X-A: 1\r\nRetry-After: 3\r\n"),
                     ERR_TOO_LARGE);
        free(small);
    }
    char *exact = malloc(len);
    n = http_response_head(exact, len, 200, "application/json", 42, true,
                           "X-A: 1\r\nRetry-After: 3\r\n");
    CHECK_EQ_INT(n, (int)len);
    CHECK(n > 0 && memcmp(exact, want1, len) == 0);
    free(exact);
}

/* Random requests built from pieces: whatever the split, the answer is the
 * same, and successful parses have consistent slices. */
TEST(random_requests)
{
    static const char *const lines[] = {
        "Host: a\r\n", "Connection: close\r\n", "Content-Length: 3\r\n",
        "Transfer-Encoding: chunked\r\n", "X-Bad : x\r\n", " folded\r\n",
        "X-Ok:\tv\t\r\n", "Connection: upgrade\n", "Content-Length: 4\r\n",
        "X-Ctl: \x01\r\n", "Transfer-Encoding: gzip\r\n",
    };
    static const char *const bodies[] = {
        "", "abc", "3\r\nabc\r\n0\r\n\r\n", "1;x\r\na\r\n0\r\nT: v\r\n\r\n",
        "3\r\nab\r\n", "abcd",
    };
    static const char *const starts[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n", "POST /p?q=1 HTTP/1.0\r\n", "PUT /x HTTP/1.1\nHost: b\n",
        "GET / HTTP/2.0\r\n", "OPTIONS * HTTP/1.1\r\n",
    };
    for (int iter = 0; iter < 300; iter++) {
        sbuf s = { 0 };
        sb_str(&s, starts[test_rand() % 5]);
        int nl = (int)(test_rand() % 4);
        for (int i = 0; i < nl; i++) sb_str(&s, lines[test_rand() % 11]);
        sb_str(&s, "\r\n");
        sb_str(&s, bodies[test_rand() % 6]);
        parsed P;
        feed_at(&P, s.p, s.n, NULL, __LINE__);
        if (P.rc > 0) {
            CHECK((size_t)P.rc <= s.n);
            CHECK(in_buf(&P, P.req.method));
            CHECK(in_buf(&P, P.req.body));
            CHECK_EQ_INT(P.req.body.n, P.req.content_length);
            CHECK(P.req.head_len <= (size_t)P.rc);
        } else {
            CHECK(P.rc == ERR_AGAIN || P.status >= 400);
        }
        done(&P);
        free(s.p);
    }
}

int main(void)
{
    test_seed();
    fprintf(stderr, "http: random seed 0x%llx (set TEST_SEED to repeat)\n",
            (unsigned long long)test_rng_state_);
    RUN(limits_default);
    RUN(simple_get);
    RUN(headers_parsed_and_trimmed);
    RUN(query_split);
    RUN(keep_alive);
    RUN(upgrade_flag);
    RUN(content_length_body);
    RUN(chunked_body);
    RUN(pipelining);
    RUN(lf_only_line_endings);
    RUN(leading_empty_line);
    RUN(bad_request_line);
    RUN(bad_header_fields);
    RUN(bad_framing);
    RUN(bad_chunked);
    RUN(too_large_body_content_length);
    RUN(too_large_body_chunked);
    RUN(uri_too_long);
    RUN(header_fields_too_many);
    RUN(header_section_too_big);
    RUN(not_implemented);
    RUN(version_not_supported);
    RUN(str_ieq_and_tokens);
    RUN(percent_decode);
    RUN(query_get);
    RUN(reason);
    RUN(response_head);
    RUN(random_requests);
    return test_summary("http");
}
