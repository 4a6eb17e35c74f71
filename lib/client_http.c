#include "client_http.h"

#include <openssl/evp.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD (64 * 1024)

/* ---- URL ---------------------------------------------------------------- */

int client_http_parse_url(const char *url, client_url *u)
{
    memset(u, 0, sizeof *u);
    if (!url) return ERR_INVALID;
    if (strncasecmp(url, "https://", 8) == 0) return ERR_UNSUPPORTED;
    if (strncasecmp(url, "http://", 7) != 0) return ERR_INVALID;
    const char *p = url + 7, *host, *hend;
    bool v6 = false;
    if (*p == '[') {
        host = ++p;
        hend = strchr(p, ']');
        if (!hend) return ERR_INVALID;
        p = hend + 1;
        v6 = true;
    } else {
        host = p;
        while (*p && *p != ':' && *p != '/') p++;
        hend = p;
    }
    size_t hl = (size_t)(hend - host);
    if (hl == 0 || hl >= sizeof u->host) return ERR_INVALID;
    for (const char *q = host; q < hend; q++) {
        unsigned char ch = (unsigned char)*q;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_' ||
                  (v6 && (ch == ':' || ch == '%'));
        if (!ok) return ERR_INVALID;
    }
    memcpy(u->host, host, hl);
    unsigned long port = 80;
    if (*p == ':') {
        p++;
        if (!(*p >= '0' && *p <= '9')) return ERR_INVALID;
        port = 0;
        while (*p >= '0' && *p <= '9') {
            port = port * 10 + (unsigned long)(*p++ - '0');
            if (port > 65535) return ERR_INVALID;
        }
        if (port == 0) return ERR_INVALID;
    }
    if (*p && *p != '/') return ERR_INVALID;
    size_t pl = strlen(p);
    while (pl > 0 && p[pl - 1] == '/') pl--;
    if (pl >= sizeof u->prefix) return ERR_INVALID;
    for (size_t i = 0; i < pl; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f || p[i] == '?' ||
            p[i] == '#')
            return ERR_INVALID;
    memcpy(u->prefix, p, pl);
    snprintf(u->port, sizeof u->port, "%lu", port);
    snprintf(u->hostport, sizeof u->hostport, v6 ? "[%s]:%s" : "%s:%s", u->host, u->port);
    return ERR_OK;
}

int client_http_parse_urls(const char *list, client_url *out, size_t max)
{
    if (!list) return ERR_INVALID;
    size_t n = 0;
    const char *p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
        char one[600];
        if (a == b || (size_t)(b - a) >= sizeof one) return ERR_INVALID;
        if (n >= max) return ERR_TOO_LARGE;
        memcpy(one, a, (size_t)(b - a));
        one[b - a] = 0;
        int rc = client_http_parse_url(one, &out[n]);
        if (rc < 0) return rc;
        n++;
        if (!*end) return (int)n;
        p = end + 1;
    }
}

/* ---- response parser ---------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Finds the end of the line starting at p (before limit): returns the index
 * of '\n' or -1. */
static long line_end(const char *buf, size_t from, size_t len)
{
    const char *nl = memchr(buf + from, '\n', len - from);
    return nl ? (long)(nl - buf) : -1;
}

const http_str *client_http_header(const client_http_response *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (http_str_ieq(r->headers[i].name, name)) return &r->headers[i].value;
    return NULL;
}

/* Chunked body at buf[0..len): returns the bytes of chunked framing
 * (including trailers) when complete and *decoded its decoded size, or
 * ERR_AGAIN / an error. decode: also move the data together in place. */
static long chunked(char *buf, size_t len, size_t max_body, bool decode, size_t *decoded)
{
    size_t pos = 0, out = 0;
    for (;;) {
        long le = line_end(buf, pos, len);
        if (le < 0) return len - pos > 1024 ? ERR_PROTOCOL : ERR_AGAIN;
        uint64_t sz = 0;
        size_t i = pos, digits = 0;
        for (; i < (size_t)le; i++, digits++) {
            char c = buf[i];
            int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (v < 0) break;
            if (sz > (max_body + 1) / 16 + 1) return ERR_TOO_LARGE;
            sz = sz * 16 + (uint64_t)v;
        }
        if (digits == 0) return ERR_PROTOCOL;
        if (i < (size_t)le && buf[i] != ';' && buf[i] != '\r' && buf[i] != ' ' && buf[i] != '\t')
            return ERR_PROTOCOL;
        if (out + sz > max_body) return ERR_TOO_LARGE;
        pos = (size_t)le + 1;
        if (sz == 0) {
            /* trailers until an empty line */
            for (;;) {
                le = line_end(buf, pos, len);
                if (le < 0) return len - pos > MAX_HEAD ? ERR_TOO_LARGE : ERR_AGAIN;
                size_t ll = (size_t)le - pos;
                bool empty = ll == 0 || (ll == 1 && buf[pos] == '\r');
                pos = (size_t)le + 1;
                if (empty) {
                    *decoded = out;
                    return (long)pos;
                }
            }
        }
        if (len - pos < sz) return ERR_AGAIN;
        if (decode) memmove(buf + out, buf + pos, (size_t)sz);
        out += (size_t)sz;
        pos += (size_t)sz;
        if (len - pos < 1) return ERR_AGAIN;
        if (buf[pos] == '\r') {
            if (len - pos < 2) return ERR_AGAIN;
            if (buf[pos + 1] != '\n') return ERR_PROTOCOL;
            pos += 2;
        } else if (buf[pos] == '\n') {
            pos += 1;
        } else {
            return ERR_PROTOCOL;
        }
    }
}

int client_http_parse_response(char *buf, size_t len, bool no_body, bool eof,
                               size_t max_body, client_http_response *r)
{
    memset(r, 0, offsetof(client_http_response, headers));
    r->nheaders = 0;
    r->head_len = 0;
    r->body.p = NULL;
    r->body.n = 0;
    r->chunked = r->close = false;
    /* status line */
    size_t scan = len < MAX_HEAD ? len : MAX_HEAD;
    long le = line_end(buf, 0, scan);
    if (le < 0) {
        if (len >= 5 && memcmp(buf, "HTTP/", 5) != 0) return ERR_PROTOCOL;
        return len >= MAX_HEAD ? ERR_TOO_LARGE : ERR_AGAIN;
    }
    size_t ll = (size_t)le;
    if (ll > 0 && buf[ll - 1] == '\r') ll--;
    if (ll < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') ||
        buf[8] != ' ' || buf[9] < '1' || buf[9] > '9' || buf[10] < '0' || buf[10] > '9' ||
        buf[11] < '0' || buf[11] > '9' || (ll > 12 && buf[12] != ' '))
        return ERR_PROTOCOL;
    r->minor = buf[7] - '0';
    r->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    size_t pos = (size_t)le + 1;
    /* headers */
    bool have_len = false;
    uint64_t clen = 0;
    for (;;) {
        le = line_end(buf, pos, scan);
        if (le < 0) return len >= MAX_HEAD ? ERR_TOO_LARGE : ERR_AGAIN;
        size_t end = (size_t)le;
        if (end > pos && buf[end - 1] == '\r') end--;
        if (end == pos) {
            pos = (size_t)le + 1;
            break;
        }
        if (r->nheaders >= HTTP_MAX_HEADERS) return ERR_TOO_LARGE;
        size_t c = pos;
        while (c < end && is_tchar((unsigned char)buf[c])) c++;
        if (c == pos || c >= end || buf[c] != ':') return ERR_PROTOCOL;
        http_header *h = &r->headers[r->nheaders++];
        h->name.p = buf + pos;
        h->name.n = c - pos;
        size_t vs = c + 1, ve = end;
        while (vs < ve && (buf[vs] == ' ' || buf[vs] == '\t')) vs++;
        while (ve > vs && (buf[ve - 1] == ' ' || buf[ve - 1] == '\t')) ve--;
        h->value.p = buf + vs;
        h->value.n = ve - vs;
        if (http_str_ieq(h->name, "content-length")) {
            uint64_t v = 0;
            if (h->value.n == 0 || h->value.n > 18) return ERR_PROTOCOL;
            for (size_t i = 0; i < h->value.n; i++) {
                if (h->value.p[i] < '0' || h->value.p[i] > '9') return ERR_PROTOCOL;
                v = v * 10 + (uint64_t)(h->value.p[i] - '0');
            }
            if (have_len && v != clen) return ERR_PROTOCOL;
            have_len = true;
            clen = v;
        } else if (http_str_ieq(h->name, "transfer-encoding")) {
            if (http_has_token(h->value, "chunked")) r->chunked = true;
            else return ERR_PROTOCOL;
        } else if (http_str_ieq(h->name, "connection")) {
            if (http_has_token(h->value, "close")) r->close = true;
        }
        pos = (size_t)le + 1;
    }
    r->head_len = pos;
    if (no_body || (r->status >= 100 && r->status < 200) || r->status == 204 ||
        r->status == 304) {
        r->body.p = buf + pos;
        return (int)pos;
    }
    if (r->chunked) {
        size_t dec = 0;
        long n = chunked(buf + pos, len - pos, max_body, false, &dec);
        if (n < 0) return (int)n;
        chunked(buf + pos, len - pos, max_body, true, &dec);
        r->body.p = buf + pos;
        r->body.n = dec;
        return (int)(pos + (size_t)n);
    }
    if (have_len) {
        if (clen > max_body) return ERR_TOO_LARGE;
        if (len - pos < clen) return ERR_AGAIN;
        r->body.p = buf + pos;
        r->body.n = (size_t)clen;
        return (int)(pos + clen);
    }
    if (!eof) return len - pos > max_body ? ERR_TOO_LARGE : ERR_AGAIN;
    if (len - pos > max_body) return ERR_TOO_LARGE;
    r->body.p = buf + pos;
    r->body.n = len - pos;
    return (int)len;
}

uint64_t client_http_retry_after_ms(const client_http_response *r)
{
    const http_str *v = client_http_header(r, "retry-after");
    if (!v || v->n == 0 || v->n > 9) return 0;
    uint64_t s = 0;
    for (size_t i = 0; i < v->n; i++) {
        if (v->p[i] < '0' || v->p[i] > '9') return 0;
        s = s * 10 + (uint64_t)(v->p[i] - '0');
    }
    if (s > 86400) s = 86400;
    return s * 1000;
}

/* ---- base64 ------------------------------------------------------------- */

size_t client_http_base64(const uint8_t *in, size_t n, char *out)
{
    /* OpenSSL's encoder, as ws_accept_key uses; it NUL-terminates. */
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* ---- sockets ------------------------------------------------------------ */

int client_http_resolve(const client_url *u, struct sockaddr_storage *addrs,
                        socklen_t *lens, int max)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc == EAI_BADFLAGS || (rc != 0 && rc != EAI_SYSTEM)) {
        hints.ai_flags = AI_NUMERICSERV; /* AI_ADDRCONFIG hides loopback-only hosts */
        rc = getaddrinfo(u->host, u->port, &hints, &res);
    }
    if (rc != 0 || !res) return ERR_IO;
    int n = 0;
    for (struct addrinfo *ai = res; ai && n < max; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof addrs[0]) continue;
        memcpy(&addrs[n], ai->ai_addr, ai->ai_addrlen);
        lens[n] = ai->ai_addrlen;
        n++;
    }
    freeaddrinfo(res);
    return n > 0 ? n : ERR_IO;
}

int client_http_connect_start(const struct sockaddr_storage *addr, socklen_t len,
                              bool *in_progress)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return ERR_IO;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    *in_progress = false;
    if (connect(fd, (const struct sockaddr *)addr, len) < 0) {
        if (errno != EINPROGRESS) {
            close(fd);
            return ERR_IO;
        }
        *in_progress = true;
    }
    return fd;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Waits for events on fd until the deadline: ERR_OK, ERR_TIMEOUT, ERR_IO. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline) return ERR_TIMEOUT;
        struct pollfd p = {fd, events, 0};
        int rc = poll(&p, 1, (int)(deadline - now > 60000 ? 60000 : deadline - now));
        if (rc > 0) return ERR_OK;
        if (rc < 0 && errno != EINTR) return ERR_IO;
    }
}

static int connect_blocking(const client_url *u, uint64_t deadline)
{
    struct sockaddr_storage addrs[8];
    socklen_t lens[8];
    int n = client_http_resolve(u, addrs, lens, 8);
    if (n < 0) return n;
    int last = ERR_IO;
    for (int i = 0; i < n; i++) {
        bool inprog;
        int fd = client_http_connect_start(&addrs[i], lens[i], &inprog);
        if (fd < 0) continue;
        if (!inprog) return fd;
        int rc = wait_fd(fd, POLLOUT, deadline);
        if (rc == ERR_OK) {
            int err = 0;
            socklen_t el = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0) return fd;
            rc = ERR_IO;
        }
        close(fd);
        last = rc;
        if (rc == ERR_TIMEOUT) break;
    }
    return last;
}

int client_http_do(const parley_allocator *a, const client_url *u,
                   const client_http_request *rq, char **raw, client_http_response *resp)
{
    *raw = NULL;
    size_t max = rq->max_response ? rq->max_response : 16u << 20;
    uint64_t deadline = mono_ms() + (uint64_t)(rq->timeout_ms > 0 ? rq->timeout_ms : 30000);
    char head[2048];
    int hl = snprintf(head, sizeof head,
                      "%s %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: libparley/0.1\r\n"
                      "Accept: application/json\r\nConnection: close\r\n%s%s%s"
                      "%sContent-Length: %zu\r\n\r\n",
                      rq->method, u->prefix, rq->path, u->hostport,
                      rq->token ? "Authorization: Bearer " : "", rq->token ? rq->token : "",
                      rq->token ? "\r\n" : "",
                      rq->body ? "Content-Type: application/json\r\n" : "",
                      rq->body ? rq->body_len : (size_t)0);
    if (rq->connected) *rq->connected = false;
    if (hl < 0 || (size_t)hl >= sizeof head) return ERR_INVALID;
    int fd = connect_blocking(u, deadline);
    if (fd < 0) return fd;
    if (rq->connected) *rq->connected = true;
    int rc = ERR_OK;
    /* send head and body */
    const char *parts[2] = {head, rq->body};
    size_t lens[2] = {(size_t)hl, rq->body ? rq->body_len : 0};
    for (int k = 0; k < 2 && rc == ERR_OK; k++) {
        size_t off = 0;
        while (off < lens[k]) {
            ssize_t w = send(fd, parts[k] + off, lens[k] - off, MSG_NOSIGNAL);
            if (w > 0) { off += (size_t)w; continue; }
            if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                if ((rc = wait_fd(fd, POLLOUT, deadline)) < 0) break;
                continue;
            }
            rc = ERR_IO;
            break;
        }
    }
    /* read until the response is complete */
    char *buf = NULL;
    size_t len = 0, cap = 0;
    bool eof = false;
    while (rc == ERR_OK) {
        int n = len ? client_http_parse_response(buf, len, strcmp(rq->method, "HEAD") == 0,
                                                 eof, max, resp)
                    : (eof ? ERR_IO : ERR_AGAIN);
        if (n >= 0) break;
        if (n != ERR_AGAIN) { rc = eof && n == ERR_AGAIN ? ERR_IO : n; break; }
        if (eof) { rc = ERR_IO; break; } /* closed inside the response */
        if (cap - len < 16384) {
            if (cap >= max + MAX_HEAD + 65536) { rc = ERR_TOO_LARGE; break; }
            size_t ncap = cap ? cap * 2 : 16384;
            char *nb = a->realloc_fn(a->ctx, buf, ncap);
            if (!nb) { rc = ERR_NOMEM; break; }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = recv(fd, buf + len, cap - len, 0);
        if (r > 0) { len += (size_t)r; continue; }
        if (r == 0) { eof = true; continue; }
        if (errno == EAGAIN || errno == EINTR) {
            rc = wait_fd(fd, POLLIN, deadline);
            continue;
        }
        rc = ERR_IO;
    }
    close(fd);
    if (rc < 0) {
        a->free_fn(a->ctx, buf);
        return rc;
    }
    *raw = buf;
    return ERR_OK;
}
