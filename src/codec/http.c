/* http: a pure HTTP/1.1 request codec and response-head writer (see http.h).
 *
 * The parser is a left-to-right scan of the buffer. Each check runs on the
 * bytes it needs and nothing later, so a prefix of a request either asks for
 * more (ERR_AGAIN) or already fails with the very error the whole request
 * would fail with: feeding bytes one at a time or all at once gives the same
 * answer. Limits are checked on windows that end where the limit ends, so a
 * line that cannot fit is refused before its end arrives.
 *
 * Internally a status code (400, 413, ...) is carried as a positive int,
 * NEED_MORE means "incomplete so far" and 0 means success.
 */
#include "codec/http.h"

#include <limits.h>
#include <string.h>

#define NEED_MORE (-1)

/* Every limit is clamped to this so that a whole request (head, body,
 * chunk framing and trailers) always fits the int return value. */
#define LIMIT_CLAMP ((size_t)INT_MAX / 8)

/* Character classes. */
enum {
    C_TCHAR  = 1, /* token character (RFC 9110 section 5.6.2) */
    C_VALUE  = 2, /* field value: HTAB, SP, VCHAR, obs-text */
    C_TARGET = 4, /* request-target: VCHAR */
    C_HEX    = 8, /* hex digit */
};

static const unsigned char cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 6, 6, 6, 6, 6, 6,
    6, 15, 15, 15, 15, 15, 15, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,
    7, 15, 15, 15, 15, 15, 15, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
};

static inline bool is(unsigned char c, int cl) { return (cls[c] & cl) != 0; }

/* Value of a hex digit (only called on C_HEX characters). */
static inline unsigned hexval(unsigned char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

static inline bool is_ows(char c) { return c == ' ' || c == '\t'; }

static inline size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

/* The slice [p, e) with surrounding SP/HTAB removed. */
static http_str trim(const char *p, const char *e)
{
    while (p < e && is_ows(*p)) p++;
    while (e > p && is_ows(e[-1])) e--;
    return (http_str){ p, (size_t)(e - p) };
}

/* ---- public helpers ----------------------------------------------------- */

void http_limits_default(http_limits *l)
{
    l->max_request_line = 8192;
    l->max_header_bytes = 16384;
    l->max_headers = 64;
    l->max_body = 1024 * 1024;
}

bool http_str_ieq(http_str s, const char *cstr)
{
    size_t n = strlen(cstr);
    if (s.n != n) return false;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s.p[i]) != lower((unsigned char)cstr[i]))
            return false;
    return true;
}

const http_str *http_header_get(const http_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (http_str_ieq(req->headers[i].name, name))
            return &req->headers[i].value;
    return NULL;
}

bool http_has_token(http_str value, const char *token)
{
    if (!token[0] || !value.n) return false;
    const char *p = value.p, *e = value.p + value.n;
    for (;;) {
        const char *c = memchr(p, ',', (size_t)(e - p));
        const char *ce = c ? c : e;
        if (http_str_ieq(trim(p, ce), token)) return true;
        if (!c) return false;
        p = c + 1;
    }
}

/* ---- request line ------------------------------------------------------- */

/* "HTTP/" 1*DIGIT [ "." 1*DIGIT ]: 0 for 1.0 / 1.1 (sets *minor), 505 for
 * another well-formed version, 400 for anything else. */
static int parse_version(const char *v, size_t n, int *minor)
{
    if (n < 6 || memcmp(v, "HTTP/", 5) != 0) return 400;
    size_t i = 5;
    while (i < n && v[i] >= '0' && v[i] <= '9') i++;
    if (i == 5) return 400;
    if (i < n) {
        if (v[i] != '.') return 400;
        size_t d = ++i;
        while (i < n && v[i] >= '0' && v[i] <= '9') i++;
        if (i == d || i != n) return 400;
    }
    if (n == 8 && v[5] == '1' && v[6] == '.' && (v[7] == '0' || v[7] == '1')) {
        *minor = v[7] - '0';
        return 0;
    }
    return 505;
}

/* method SP request-target SP HTTP-version, in b[s, e). */
static int parse_request_line(const char *b, size_t s, size_t e,
                              http_request *req)
{
    size_t i = s;
    while (i < e && is((unsigned char)b[i], C_TCHAR)) i++;
    if (i == s || i == e || b[i] != ' ') return 400;
    req->method = (http_str){ b + s, i - s };

    size_t t = ++i;
    while (i < e && is((unsigned char)b[i], C_TARGET)) i++;
    if (i == t || i == e || b[i] != ' ') return 400;
    http_str target = { b + t, i - t };
    req->target = target;
    if (target.p[0] == '/') {
        const char *q = memchr(target.p, '?', target.n);
        if (q) {
            req->path = (http_str){ target.p, (size_t)(q - target.p) };
            req->query = (http_str){ q + 1, target.n - req->path.n - 1 };
        } else {
            req->path = target;
            req->query = (http_str){ target.p + target.n, 0 };
        }
    } else if (target.n == 1 && target.p[0] == '*' &&
               req->method.n == 7 && memcmp(req->method.p, "OPTIONS", 7) == 0) {
        req->path = target;
        req->query = (http_str){ target.p + 1, 0 };
    } else {
        return 400; /* absolute-form, authority-form or garbage */
    }
    i++;
    return parse_version(b + i, e - i, &req->minor);
}

/* ---- header fields ------------------------------------------------------ */

/* What the head says about framing and the connection. */
typedef struct framing {
    uint64_t cl;
    size_t te_chunked;   /* "chunked" codings listed */
    bool cl_seen, te_seen, te_other, host_seen;
    bool conn_close, conn_keep, conn_upgrade;
} framing;

/* field-name ":" OWS field-value OWS, in b[s, e). */
static int parse_field(const char *b, size_t s, size_t e, http_header *h)
{
    size_t i = s;
    while (i < e && is((unsigned char)b[i], C_TCHAR)) i++;
    /* no name, whitespace before the colon, obs-fold, bad characters */
    if (i == s || i == e || b[i] != ':') return 400;
    h->name = (http_str){ b + s, i - s };
    i++;
    while (i < e && is_ows(b[i])) i++;
    size_t vs = i, ve = i;
    for (; i < e; i++) {
        unsigned char c = (unsigned char)b[i];
        if (!is(c, C_VALUE)) return 400; /* CTLs, bare CR, DEL */
        if (c != ' ' && c != '\t') ve = i + 1;
    }
    h->value = (http_str){ b + vs, ve - vs };
    return 0;
}

static bool parse_u64(http_str v, uint64_t *out)
{
    if (v.n == 0) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        unsigned d = (unsigned)((unsigned char)v.p[i] - '0');
        if (d > 9 || x > (UINT64_MAX - d) / 10) return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* Notes the framing and connection headers as they come. */
static int note_field(framing *f, const http_header *h)
{
    http_str v = h->value;
    switch (h->name.n) {
    case 4:
        if (http_str_ieq(h->name, "host")) {
            if (f->host_seen) return 400;
            f->host_seen = true;
        }
        break;
    case 10:
        if (http_str_ieq(h->name, "connection")) {
            f->conn_close |= http_has_token(v, "close");
            f->conn_keep |= http_has_token(v, "keep-alive");
            f->conn_upgrade |= http_has_token(v, "upgrade");
        }
        break;
    case 14:
        if (http_str_ieq(h->name, "content-length")) {
            uint64_t n;
            if (!parse_u64(v, &n)) return 400;
            if (f->cl_seen && n != f->cl) return 400;
            f->cl = n;
            f->cl_seen = true;
        }
        break;
    case 17:
        if (http_str_ieq(h->name, "transfer-encoding")) {
            f->te_seen = true;
            const char *p = v.p, *e = v.p + v.n;
            while (p < e) {
                const char *c = memchr(p, ',', (size_t)(e - p));
                const char *ce = c ? c : e;
                http_str coding = trim(p, ce);
                if (http_str_ieq(coding, "chunked")) {
                    if (f->te_chunked < 2) f->te_chunked++;
                } else if (coding.n) {
                    f->te_other = true;
                }
                if (!c) break;
                p = c + 1;
            }
        }
        break;
    }
    return 0;
}

/* Scans field lines from *pos up to and including the blank line. Every
 * line must end (LF included) at or before index `limit_end`, and there may
 * be at most `max_fields` fields, else 431. Fields are stored in hdrs when
 * it is not NULL; the framing headers are noted in f when it is not NULL.
 * On success *pos is just past the blank line. */
static int scan_fields(const char *b, size_t len, size_t *pos,
                       size_t limit_end, size_t max_fields, http_header *hdrs,
                       size_t *nfields, framing *f)
{
    size_t p = *pos;
    size_t wend = min_size(len, limit_end);
    for (;;) {
        const char *lf = p < wend ? memchr(b + p, '\n', wend - p) : NULL;
        if (!lf) return len >= limit_end ? 431 : NEED_MORE;
        size_t e = (size_t)(lf - b), ce = e;
        if (ce > p && b[ce - 1] == '\r') ce--;
        if (ce == p) {
            *pos = e + 1;
            return 0;
        }
        if (*nfields >= max_fields) return 431;
        http_header tmp, *h = hdrs ? &hdrs[*nfields] : &tmp;
        int st = parse_field(b, p, ce, h);
        if (!st && f) st = note_field(f, h);
        if (st) return st;
        ++*nfields;
        p = e + 1;
    }
}

/* ---- chunked body ------------------------------------------------------- */

/* A line end (CRLF or LF) at *p, within b[0, wend). */
static int take_eol(const char *b, size_t wend, size_t *p)
{
    size_t i = *p;
    if (i >= wend) return NEED_MORE;
    if (b[i] == '\n') {
        *p = i + 1;
        return 0;
    }
    if (b[i] != '\r') return 400;
    if (i + 1 >= wend) return NEED_MORE;
    if (b[i + 1] != '\n') return 400;
    *p = i + 2;
    return 0;
}

/* Validates a chunked body starting at b[p] without touching it: sizes,
 * extensions, the line end after each chunk's data, the last chunk and the
 * trailer section. Framing bytes (size lines with their extensions, and line
 * ends) may total max_body + max_request_line; they are scanned in windows
 * that stop at that budget, so an over-long line is a 413 before its end
 * arrives. Sets *end past the trailer section and *total to the decoded
 * length. */
static int scan_chunked(const char *b, size_t len, size_t p,
                        const http_limits *L, size_t *end, uint64_t *total)
{
    size_t framing_left = L->max_body + L->max_request_line;
    uint64_t sum = 0;
    for (;;) {
        /* chunk-size [ chunk-ext ] line end */
        size_t ls = p;
        bool capped = len - ls >= framing_left;
        size_t wend = capped ? ls + framing_left : len;
        uint64_t sz = 0;
        int st;
        while (p < wend && is((unsigned char)b[p], C_HEX)) {
            /* sz <= max_body < 2^60 here, so this cannot overflow. */
            sz = sz * 16 + hexval((unsigned char)b[p++]);
            if (sz > L->max_body - sum) return 413;
        }
        if (p == wend) goto more;
        if (p == ls) return 400;
        size_t q = p;
        while (q < wend && is_ows(b[q])) q++;
        if (q == wend) goto more;
        if (b[q] == ';') { /* extensions: ignored, but no CTLs */
            while (q < wend && is((unsigned char)b[q], C_VALUE)) q++;
            if (q == wend) goto more;
        } else if (q != p) {
            return 400; /* whitespace not followed by an extension */
        }
        p = q;
        st = take_eol(b, wend, &p);
        if (st == NEED_MORE) goto more;
        if (st) return st;
        framing_left -= p - ls;
        if (sz == 0) break;

        /* chunk-data line end */
        if (len - p < sz) return NEED_MORE;
        p += (size_t)sz;
        sum += sz;
        ls = p;
        capped = len - ls >= framing_left;
        wend = capped ? ls + framing_left : len;
        st = take_eol(b, wend, &p);
        if (st == NEED_MORE) goto more;
        if (st) return st;
        framing_left -= p - ls;
        continue;
    more:
        return capped ? 413 : NEED_MORE;
    }

    /* trailer section: checked like the header section, then ignored */
    size_t ntrailers = 0;
    int st = scan_fields(b, len, &p, p + L->max_header_bytes, L->max_headers,
                         NULL, &ntrailers, NULL);
    if (st) return st;
    *end = p;
    *total = sum;
    return 0;
}

/* Decodes a chunked body scan_chunked() accepted, in place, to b[p...]. */
static void dechunk(char *b, size_t len, size_t p)
{
    size_t w = p;
    for (;;) {
        size_t sz = 0;
        while (is((unsigned char)b[p], C_HEX))
            sz = sz * 16 + hexval((unsigned char)b[p++]);
        const char *lf = memchr(b + p, '\n', len - p);
        p = (size_t)(lf - b) + 1;
        if (sz == 0) return;
        memmove(b + w, b + p, sz);
        w += sz;
        p += sz;
        p += b[p] == '\r' ? 2 : 1;
    }
}

/* ---- request ------------------------------------------------------------ */

static int parse(char *b, size_t len, const http_limits *lim,
                 http_request *req, size_t *used)
{
    http_limits L;
    L.max_request_line = min_size(lim->max_request_line, LIMIT_CLAMP);
    L.max_header_bytes = min_size(lim->max_header_bytes, LIMIT_CLAMP);
    L.max_headers = min_size(lim->max_headers, HTTP_MAX_HEADERS);
    L.max_body = min_size(lim->max_body, LIMIT_CLAMP);

    http_str none = { b, 0 };
    req->method = req->target = req->path = req->query = req->body = none;
    req->minor = 0;
    req->nheaders = 0;
    req->head_len = 0;
    req->keep_alive = req->chunked = req->upgrade = false;
    req->content_length = 0;

    /* One empty line before the request line is ignored (RFC 9112 2.2). */
    size_t pos = 0;
    if (len == 0) return NEED_MORE;
    if (b[0] == '\n') {
        pos = 1;
    } else if (b[0] == '\r') {
        if (len < 2) return NEED_MORE;
        if (b[1] != '\n') return 400;
        pos = 2;
    }

    /* Request line: its LF is looked for only where the line may end. */
    size_t s = pos, avail = len - s, rl = L.max_request_line;
    const char *lf = memchr(b + s, '\n', min_size(avail, rl + 2));
    if (!lf) {
        if (avail > rl + 1 || (avail == rl + 1 && b[s + rl] != '\r'))
            return 414;
        return NEED_MORE;
    }
    size_t e = (size_t)(lf - b), ce = e;
    if (ce > s && b[ce - 1] == '\r') ce--;
    if (ce - s > rl) return 414;
    int st = parse_request_line(b, s, ce, req);
    if (st) return st;
    pos = e + 1;

    /* Header section. The head limit counts from b[0]: a request line
     * that already passed it fails the first window below (431). */
    framing f;
    memset(&f, 0, sizeof f);
    st = scan_fields(b, len, &pos, L.max_header_bytes, L.max_headers,
                     req->headers, &req->nheaders, &f);
    if (st) return st;
    req->head_len = pos;
    if (req->minor == 1 && !f.host_seen) return 400; /* RFC 9112 3.2 */
    req->upgrade = f.conn_upgrade;
    req->keep_alive = !f.conn_close && (req->minor == 1 || f.conn_keep);

    /* Framing */
    if (f.te_seen) {
        if (req->minor == 0) return 400; /* RFC 9112 6.1: faulty framing */
        if (f.cl_seen) return 400;
        if (f.te_other) return 501;
        if (f.te_chunked != 1) return 400;
        size_t end;
        uint64_t total;
        st = scan_chunked(b, len, pos, &L, &end, &total);
        if (st) return st;
        dechunk(b, len, pos);
        req->chunked = true;
        req->content_length = total;
        req->body = (http_str){ b + pos, (size_t)total };
        *used = end;
        return 0;
    }
    uint64_t cl = f.cl_seen ? f.cl : 0;
    if (cl > L.max_body) return 413;
    if (len - pos < cl) return NEED_MORE;
    req->content_length = cl;
    req->body = (http_str){ b + pos, (size_t)cl };
    *used = pos + (size_t)cl;
    return 0;
}

int http_parse_request(char *buf, size_t len, const http_limits *lim,
                       http_request *req, int *status)
{
    size_t used = 0;
    int st = parse(buf, len, lim, req, &used);
    if (st == 0) return (int)used;
    if (st == NEED_MORE) return ERR_AGAIN;
    if (status) *status = st;
    switch (st) {
    case 413: case 414: case 431: return ERR_TOO_LARGE;
    case 501: return ERR_UNSUPPORTED;
    case 505: return ERR_VERSION;
    default: return ERR_INVALID;
    }
}

/* ---- percent-decoding and queries --------------------------------------- */

/* Decodes in[0..n) into out[0..cap); '+' becomes a space when `plus`.
 * Returns 0 with *outlen set, ERR_INVALID or ERR_TOO_LARGE. A malformed
 * input is ERR_INVALID whatever the room in out. */
static int pct_decode(const char *in, size_t n, char *out, size_t cap,
                      bool plus, size_t *outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == '%') {
            if (n - i < 3 || !is((unsigned char)in[i + 1], C_HEX) ||
                !is((unsigned char)in[i + 2], C_HEX))
                return ERR_INVALID;
            c = (unsigned char)(hexval((unsigned char)in[i + 1]) * 16 +
                                hexval((unsigned char)in[i + 2]));
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (c == 0) return ERR_INVALID;
        if (o < cap) out[o] = (char)c;
        o++;
    }
    if (o > cap || o > INT_MAX) return ERR_TOO_LARGE;
    *outlen = o;
    return 0;
}

int http_percent_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    int rc = pct_decode(in, n, out, cap, false, &o);
    return rc ? rc : (int)o;
}

int http_query_get(http_str query, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = query.p, *e = query.p + query.n;
    while (p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        const char *se = amp ? amp : e;
        const char *eq = memchr(p, '=', (size_t)(se - p));
        const char *ke = eq ? eq : se;
        if (se > p && (size_t)(ke - p) == nl && memcmp(p, name, nl) == 0) {
            const char *vs = eq ? eq + 1 : se;
            size_t o = 0;
            int rc = pct_decode(vs, (size_t)(se - vs), out, cap ? cap - 1 : 0,
                                true, &o);
            if (!rc && cap == 0) rc = ERR_TOO_LARGE;
            if (rc) {
                if (cap) out[0] = '\0';
                return rc;
            }
            out[o] = '\0';
            return (int)o;
        }
        if (!amp) break;
        p = amp + 1;
    }
    return ERR_NOT_FOUND;
}

/* ---- responses ---------------------------------------------------------- */

const char *http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return "Unknown";
}

/* Appends to a bounded buffer; `n` keeps counting past the end. */
typedef struct writer {
    char *out;
    size_t cap, n;
} writer;

static void put(writer *w, const char *s, size_t len)
{
    if (w->n < w->cap) memcpy(w->out + w->n, s, min_size(len, w->cap - w->n));
    w->n += len;
}

static void put_str(writer *w, const char *s) { put(w, s, strlen(s)); }

static void put_u64(writer *w, uint64_t v)
{
    char tmp[20];
    size_t i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    put(w, tmp + i, sizeof tmp - i);
}

int http_response_head(char *out, size_t cap, int status,
                       const char *content_type, uint64_t content_length,
                       bool keep_alive, const char *extra)
{
    if (status < 100 || status > 999) return ERR_INVALID;
    if (content_type && content_type[strcspn(content_type, "\r\n")])
        return ERR_INVALID; /* would inject header lines */
    writer w = { out, cap, 0 };
    put_str(&w, "HTTP/1.1 ");
    put_u64(&w, (uint64_t)status);
    put_str(&w, " ");
    put_str(&w, http_reason(status));
    put_str(&w, "\r\n");
    if (content_type) {
        put_str(&w, "Content-Type: ");
        put_str(&w, content_type);
        put_str(&w, "\r\n");
    }
    /* RFC 9110 8.6: never in a 1xx or 204. (In a 304 it must be the length
     * a 200 would have: the caller passes that.) */
    if (status >= 200 && status != 204) {
        put_str(&w, "Content-Length: ");
        put_u64(&w, content_length);
        put_str(&w, "\r\n");
    }
    put_str(&w, keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
    if (extra) put_str(&w, extra);
    put_str(&w, "\r\n");
    if (w.n > cap || w.n > INT_MAX) return ERR_TOO_LARGE;
    if (w.n < cap) out[w.n] = '\0';
    return (int)w.n;
}
