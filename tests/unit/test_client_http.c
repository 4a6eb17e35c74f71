/* client_http: URL parsing (one and lists), the response parser (whole,
 * byte at a time and randomly split), base64, Retry-After, and whether a
 * failed request got as far as a connection. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include "client_http.h"
#include "test.h"
#include "codec/ws.h"

TEST(urls)
{
    client_url u;
    CHECK_EQ_INT(client_http_parse_url("http://localhost:8080", &u), ERR_OK);
    CHECK(strcmp(u.host, "localhost") == 0 && strcmp(u.port, "8080") == 0 && u.prefix[0] == 0);
    CHECK(strcmp(u.hostport, "localhost:8080") == 0);
    CHECK_EQ_INT(client_http_parse_url("http://127.0.0.1", &u), ERR_OK);
    CHECK(strcmp(u.port, "80") == 0);
    CHECK_EQ_INT(client_http_parse_url("HTTP://Example.com:1/chat/", &u), ERR_OK);
    CHECK(strcmp(u.prefix, "/chat") == 0 && strcmp(u.host, "Example.com") == 0);
    CHECK_EQ_INT(client_http_parse_url("http://[::1]:9000/", &u), ERR_OK);
    CHECK(strcmp(u.host, "::1") == 0 && strcmp(u.hostport, "[::1]:9000") == 0);
    CHECK_EQ_INT(client_http_parse_url("https://x", &u), ERR_UNSUPPORTED);
    const char *bad[] = {"", "localhost:8080", "ftp://x", "http://", "http://:80", "http://x:",
                         "http://x:0", "http://x:65536", "http://x:12a", "http://a b",
                         "http://x/a?b", "http://[::1", "http://x y/", "http://x\r\n:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = client_http_parse_url(bad[i], &u);
        if (rc != ERR_INVALID) fprintf(stderr, "  url '%s' -> %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, ERR_INVALID);
    }
    CHECK_EQ_INT(client_http_parse_url(NULL, &u), ERR_INVALID);
}

/* Parses text fed in pieces: every prefix must give ERR_AGAIN (or the
 * final answer), then the whole gives `want` with the body `body`. */
static void parse_split(const char *text, bool no_body, int want, int status, const char *body)
{
    size_t n = strlen(text);
    char buf[4096];
    client_http_response r;
    /* byte at a time (up to where the response ends) */
    size_t upto = want >= 0 ? (size_t)want : n;
    for (size_t k = 0; k < upto; k++) {
        memcpy(buf, text, k);
        int rc = client_http_parse_response(buf, k, no_body, false, 1 << 20, &r);
        if (want >= 0) CHECK_EQ_INT(rc, ERR_AGAIN);
        else CHECK(rc == ERR_AGAIN || rc == want);
    }
    memcpy(buf, text, n);
    int rc = client_http_parse_response(buf, n, no_body, false, 1 << 20, &r);
    CHECK_EQ_INT(rc, want);
    if (want >= 0) {
        CHECK_EQ_INT(r.status, status);
        CHECK_EQ_INT(r.body.n, strlen(body));
        CHECK(r.body.n == 0 || memcmp(r.body.p, body, r.body.n) == 0);
        /* trailing bytes (the next response, WebSocket frames) are not
         * consumed (a chunked body was decoded in place: copy again) */
        memcpy(buf, text, n);
        memcpy(buf + n, "XYZ", 3);
        CHECK_EQ_INT(client_http_parse_response(buf, n + 3, no_body, false, 1 << 20, &r), want);
    }
}

TEST(url_lists)
{
    client_url u[4];
    CHECK_EQ_INT(client_http_parse_urls("http://a:8080", u, 4), 1);
    CHECK(strcmp(u[0].hostport, "a:8080") == 0);
    CHECK_EQ_INT(client_http_parse_urls("http://a:8080,http://b:9090/chat/", u, 4), 2);
    CHECK(strcmp(u[0].hostport, "a:8080") == 0 && u[0].prefix[0] == 0);
    CHECK(strcmp(u[1].hostport, "b:9090") == 0 && strcmp(u[1].prefix, "/chat") == 0);
    /* blanks around an entry are not part of it */
    CHECK_EQ_INT(client_http_parse_urls(" http://a ,\thttp://[::1]:7 , http://c:1", u, 4), 3);
    CHECK(strcmp(u[0].hostport, "a:80") == 0 && strcmp(u[1].hostport, "[::1]:7") == 0 &&
          strcmp(u[2].hostport, "c:1") == 0);
    /* every entry is checked: one bad one fails the list */
    const char *bad[] = {"", ",", "http://a,", ",http://a", "http://a,,http://b", "http://a, ,http://b",
                         "http://a,localhost:8080", "http://a,http://b:0", "http://a;http://b",
                         "http://a http://b", "http://a,http://x/a?b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = client_http_parse_urls(bad[i], u, 4);
        if (rc != ERR_INVALID) fprintf(stderr, "  list '%s' -> %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, ERR_INVALID);
    }
    CHECK_EQ_INT(client_http_parse_urls("http://a,https://b", u, 4), ERR_UNSUPPORTED);
    CHECK_EQ_INT(client_http_parse_urls("http://a,http://b,http://c", u, 2), ERR_TOO_LARGE);
    CHECK_EQ_INT(client_http_parse_urls(NULL, u, 4), ERR_INVALID);
    char longest[700];
    memset(longest, 'h', sizeof longest - 1);
    longest[sizeof longest - 1] = 0;
    memcpy(longest, "http://", 7);
    CHECK_EQ_INT(client_http_parse_urls(longest, u, 4), ERR_INVALID);
}

static void *t_malloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void *t_realloc(void *ctx, void *p, size_t n) { (void)ctx; return realloc(p, n); }
static void t_free(void *ctx, void *p) { (void)ctx; free(p); }
static const parley_allocator test_libc_alloc = {t_malloc, t_realloc, t_free, NULL};

/* A loopback listener: its port; *fd the socket (closed by the caller). */
static int listener(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(*fd, (struct sockaddr *)&a, sizeof a);
    listen(*fd, 4);
    socklen_t al = sizeof a;
    getsockname(*fd, (struct sockaddr *)&a, &al);
    return ntohs(a.sin_port);
}

TEST(connected_tells_where_a_request_failed)
{
    /* Refused: nothing was sent (the request may go to another server). */
    int ls, port = listener(&ls);
    close(ls);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    client_url u;
    CHECK_EQ_INT(client_http_parse_url(url, &u), ERR_OK);
    bool connected = true;
    client_http_request rq = {"GET", "/healthz", NULL, NULL, 0, 2000, 0, &connected};
    char *raw = NULL;
    client_http_response r;
    CHECK_EQ_INT(client_http_do(&test_libc_alloc, &u, &rq, &raw, &r), ERR_IO);
    CHECK(!connected && raw == NULL);
    /* Connected (the kernel's backlog takes it), the request sent, no
     * answer: a failure after the connect. */
    port = listener(&ls);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    CHECK_EQ_INT(client_http_parse_url(url, &u), ERR_OK);
    connected = false;
    rq.timeout_ms = 200;
    CHECK_EQ_INT(client_http_do(&test_libc_alloc, &u, &rq, &raw, &r), ERR_TIMEOUT);
    CHECK(connected && raw == NULL);
    close(ls);
    /* without the pointer nothing is written */
    rq.connected = NULL;
    port = listener(&ls);
    close(ls);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", port);
    CHECK_EQ_INT(client_http_parse_url(url, &u), ERR_OK);
    CHECK_EQ_INT(client_http_do(&test_libc_alloc, &u, &rq, &raw, &r), ERR_IO);
}

TEST(responses)
{
    const char *r1 = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bc\"}\n";
    parse_split(r1, false, (int)strlen(r1), 200, "{\"a\":\"bc\"}\n");
    const char *r2 = "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n";
    parse_split(r2, false, (int)strlen(r2), 204, "");
    const char *r3 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    parse_split(r3, false, (int)strlen(r3), 101, "");
    const char *r4 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
    parse_split(r4, false, (int)strlen(r4), 200, "Wikipedia");
    const char *r5 = "HTTP/1.0 503 Service Unavailable\nRetry-After: 7\nContent-Length: 2\n\nab";
    parse_split(r5, false, (int)strlen(r5), 503, "ab");
    const char *r6 = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    parse_split(r6, true, (int)strlen(r6) - 5, 200, ""); /* HEAD: no body */
    /* errors */
    parse_split("HTTP/2 200 OK\r\n\r\n", false, ERR_PROTOCOL, 0, "");
    parse_split("HTTP/1.1 2000 OK\r\n\r\n", false, ERR_PROTOCOL, 0, "");
    parse_split("SSH-2.0-OpenSSH\r\n\r\n", false, ERR_PROTOCOL, 0, "");
    parse_split("HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", false, ERR_PROTOCOL, 0, "");
    parse_split("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", false, ERR_PROTOCOL, 0, "");
    parse_split("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false, ERR_PROTOCOL, 0, "");
    parse_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, ERR_PROTOCOL, 0, "");
    parse_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false, ERR_PROTOCOL, 0, "");
}

TEST(response_limits_and_eof)
{
    char buf[256];
    client_http_response r;
    const char *big = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
    strcpy(buf, big);
    CHECK_EQ_INT(client_http_parse_response(buf, strlen(buf), false, false, 100, &r), ERR_TOO_LARGE);
    /* no length, not chunked: the body ends with the connection */
    const char *eof = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end";
    strcpy(buf, eof);
    CHECK_EQ_INT(client_http_parse_response(buf, strlen(buf), false, false, 100, &r), ERR_AGAIN);
    CHECK_EQ_INT(client_http_parse_response(buf, strlen(buf), false, true, 100, &r), (int)strlen(eof));
    CHECK(r.close);
    CHECK_EQ_INT(r.body.n, 13);
    /* a head that never ends */
    static char huge[70000];
    memcpy(huge, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(huge + 20, 'a', sizeof huge - 20);
    CHECK_EQ_INT(client_http_parse_response(huge, sizeof huge, false, false, 100, &r), ERR_TOO_LARGE);
}

TEST(random_splits_chunked)
{
    const char *t = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "3\r\nabc\r\n10\r\n0123456789abcdef\r\n1\r\nZ\r\n0\r\n\r\n";
    size_t n = strlen(t);
    for (int round = 0; round < 200; round++) {
        char buf[512];
        client_http_response r;
        size_t have = 0;
        int rc = ERR_AGAIN;
        while (have < n) {
            size_t step = 1 + test_rand() % 9;
            if (have + step > n) step = n - have;
            memcpy(buf, t, have + step); /* the caller re-presents the same bytes */
            have += step;
            rc = client_http_parse_response(buf, have, false, false, 1 << 20, &r);
            if (have < n) CHECK_EQ_INT(rc, ERR_AGAIN);
        }
        CHECK_EQ_INT(rc, (int)n);
        CHECK_EQ_INT(r.body.n, 20);
        CHECK(memcmp(r.body.p, "abc0123456789abcdefZ", 20) == 0);
    }
}

TEST(headers_and_retry_after)
{
    char buf[256] = "HTTP/1.1 503 Service Unavailable\r\nretry-after:  12 \r\nContent-Length: 0\r\n\r\n";
    client_http_response r;
    CHECK(client_http_parse_response(buf, strlen(buf), false, false, 100, &r) > 0);
    CHECK_EQ_INT(client_http_retry_after_ms(&r), 12000);
    const http_str *v = client_http_header(&r, "RETRY-AFTER");
    CHECK(v && v->n == 2);
    char b2[256] = "HTTP/1.1 503 x\r\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\nContent-Length: 0\r\n\r\n";
    CHECK(client_http_parse_response(b2, strlen(b2), false, false, 100, &r) > 0);
    CHECK_EQ_INT(client_http_retry_after_ms(&r), 0); /* only delta-seconds */
    char b3[256] = "HTTP/1.1 503 x\r\nRetry-After: 999999\r\nContent-Length: 0\r\n\r\n";
    CHECK(client_http_parse_response(b3, strlen(b3), false, false, 100, &r) > 0);
    CHECK_EQ_INT(client_http_retry_after_ms(&r), 86400000); /* capped at a day */
}

TEST(base64)
{
    char out[64];
    CHECK_EQ_INT(client_http_base64((const uint8_t *)"", 0, out), 0);
    client_http_base64((const uint8_t *)"f", 1, out);
    CHECK(strcmp(out, "Zg==") == 0);
    client_http_base64((const uint8_t *)"fo", 2, out);
    CHECK(strcmp(out, "Zm8=") == 0);
    client_http_base64((const uint8_t *)"foobar", 6, out);
    CHECK(strcmp(out, "Zm9vYmFy") == 0);
    /* RFC 6455's example key gives the example accept through ws.h */
    const uint8_t nonce[16] = {0x0f, 0x42, 0x2d, 0x6c, 0x35, 0x34, 0xde, 0x2c, 0xef, 0x1f,
                               0x97, 0x2b, 0x09, 0x6a, 0x33, 0xa4};
    CHECK_EQ_INT(client_http_base64(nonce, 16, out), 24);
    char acc[29];
    ws_accept_key(out, 24, acc);
    CHECK_EQ_INT(strlen(acc), 28);
}

int main(void)
{
    test_seed();
    RUN(urls);
    RUN(url_lists);
    RUN(connected_tells_where_a_request_failed);
    RUN(responses);
    RUN(response_limits_and_eof);
    RUN(random_splits_chunked);
    RUN(headers_and_retry_after);
    RUN(base64);
    return test_summary("client_http");
}
