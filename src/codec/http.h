/* http: a pure HTTP/1.1 request codec and response-head writer.
 *
 * No sockets, no globals, no allocation. http_parse_request() is stateless:
 * call it again with the same buffer plus the newly arrived bytes until it
 * returns a whole request. Every slice (http_str) it fills points into the
 * caller's buffer and is valid only while that buffer is unchanged.
 *
 * Limits are parameters (http_limits) and each has its documented status:
 *   request line longer than max_request_line            -> 414
 *   header section over max_header_bytes or more than
 *   max_headers fields                                   -> 431
 *   body (Content-Length or decoded chunked) > max_body  -> 413
 *   malformed syntax, conflicting framing headers        -> 400
 *   Transfer-Encoding other than "chunked"               -> 501
 *   HTTP version other than 1.0 / 1.1                    -> 505
 */
#ifndef PARLEY_HTTP_H
#define PARLEY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Capacity of http_request.headers; http_limits.max_headers is capped by it. */
#define HTTP_MAX_HEADERS 100

typedef struct http_limits {
    size_t max_request_line; /* bytes, without CRLF; default 8192 */
    size_t max_header_bytes; /* whole head incl. request line; default 16384 */
    size_t max_headers;      /* header fields; default 64 */
    size_t max_body;         /* body bytes; default 1 MiB */
} http_limits;

/* Fills *l with the defaults above. */
void http_limits_default(http_limits *l);

/* A slice of the caller's buffer. Not NUL-terminated. */
typedef struct http_str {
    const char *p;
    size_t n;
} http_str;

typedef struct http_header {
    http_str name;  /* as sent (compare case-insensitively) */
    http_str value; /* leading and trailing whitespace trimmed */
} http_header;

typedef struct http_request {
    http_str method;         /* e.g. "GET" (case-sensitive per RFC 9110) */
    http_str target;         /* raw request-target, e.g. "/a/b?x=1" */
    http_str path;           /* target up to '?' (not percent-decoded) */
    http_str query;          /* after '?', empty if none */
    int minor;               /* 1 for HTTP/1.1, 0 for HTTP/1.0 */
    http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    size_t head_len;         /* bytes of request line + headers + blank line */
    bool keep_alive;         /* 1.1 unless "Connection: close"; 1.0 only
                                with "Connection: keep-alive" */
    bool chunked;            /* body was sent chunked (now decoded) */
    bool upgrade;            /* "Connection" lists the "upgrade" token */
    uint64_t content_length; /* body length after decoding */
    http_str body;           /* the whole body; empty if none */
} http_request;

/* Parser details (added with the implementation):
 *   - The request-target must be origin-form ("/path?query") or "*" with
 *     OPTIONS; absolute-form ("http://host/x") and authority-form are
 *     refused with 400. The request line is exactly method SP target SP
 *     version; method and field names must be tokens; the target must be
 *     visible ASCII.
 *   - "HTTP/" DIGITS ["." DIGITS] other than 1.0 and 1.1 is a 505; any
 *     other version text is a 400.
 *   - One empty line before the request line is skipped (RFC 9112 2.2) and
 *     counts in head_len and the return value; a second one is a 400.
 *   - 400 also for: an HTTP/1.1 request without Host or any request with
 *     two Host fields (RFC 9112 3.2), Transfer-Encoding in an HTTP/1.0
 *     request, "chunked" listed twice or no coding listed, a Content-Length
 *     that is not plain digits (lists such as "5, 5" included).
 *   - Chunked framing (size lines with extensions, line ends) may total
 *     max_body + max_request_line bytes, else 413; a chunk size that would
 *     take the decoded body over max_body is a 413 at the digit that does
 *     it (so sizes overflowing 64 bits are 413s too). Whitespace after a
 *     chunk size is allowed only before ";". The trailer section has its
 *     own budget of max_header_bytes and max_headers (431).
 *   - Return codes: 400 ERR_INVALID; 413, 414, 431 ERR_TOO_LARGE; 501
 *     ERR_UNSUPPORTED; 505 ERR_VERSION. *status is set only for those.
 *   - Each limit is clamped to INT_MAX / 8 so a request always fits the
 *     int result; max_headers is clamped to HTTP_MAX_HEADERS.
 *   - A prefix of a request gives ERR_AGAIN or already the error the whole
 *     request gives; never a different answer. */

/* Parses one whole request (head and body) from buf[0..len).
 *
 * Returns the number of bytes the request occupies (> 0; the next pipelined
 * request starts there), ERR_AGAIN when the request is incomplete so far
 * (buf is then left untouched), or another negative code with *status set to
 * the HTTP status to answer with (see the table at the top). A limit is
 * reported as soon as it is known to be exceeded, even before the whole
 * request has arrived (a 2 GB Content-Length is refused at once).
 *
 * buf is modified only for a complete chunked request: the chunks are
 * decoded in place, so body then points at contiguous decoded bytes. Trailer
 * fields after the last chunk are checked against the header limits and
 * ignored. Both Content-Length and Transfer-Encoding, or two different
 * Content-Length values, are a 400. Lines may end in CRLF or a bare LF.
 * *req is owned by the caller; its slices point into buf. */
int http_parse_request(char *buf, size_t len, const http_limits *lim,
                       http_request *req, int *status);

/* The first header named `name` (case-insensitive), or NULL. */
const http_str *http_header_get(const http_request *req, const char *name);

/* True if the comma-separated list in `value` contains `token`
 * (case-insensitive, surrounding whitespace ignored), e.g.
 * http_has_token("keep-alive, Upgrade", "upgrade"). */
bool http_has_token(http_str value, const char *token);

/* Case-insensitive equality of a slice with a C string. */
bool http_str_ieq(http_str s, const char *cstr);

/* Percent-decodes in[0..n) into out (cap bytes). Returns the decoded length,
 * or ERR_INVALID for a malformed escape or a decoded NUL byte, ERR_TOO_LARGE
 * if out is too small. '+' is left as is (this is for paths). */
int http_percent_decode(const char *in, size_t n, char *out, size_t cap);

/* (Added with the implementation.) Names are compared byte for byte and
 * not decoded; the first match wins; "flag" without "=" has an empty value.
 * On an error out is set to "" when cap > 0. A raw NUL byte in the input is
 * ERR_INVALID too, here and in http_percent_decode. */
/* Finds query parameter `name` in a query string ("a=1&token=xyz") and
 * percent-decodes its value ('+' means space here) into out (cap bytes,
 * NUL-terminated). Returns the value length, ERR_NOT_FOUND, ERR_INVALID or
 * ERR_TOO_LARGE. */
int http_query_get(http_str query, const char *name, char *out, size_t cap);

/* The reason phrase for a status ("OK", "Not Found", ...); "Unknown" for
 * codes it does not know. Static string. */
const char *http_reason(int status);

/* (Added with the implementation.) Content-Length is left out for 1xx
 * and 204 (RFC 9110 8.6); for a 304 pass the length a 200 would have. A
 * NUL is written after the head when it fits (not counted). ERR_INVALID
 * for a status outside 100..999 or a content_type containing CR or LF.
 * extra is copied as is. */
/* Writes a response head into out[0..cap):
 *   "HTTP/1.1 <status> <reason>\r\n"
 *   "Content-Type: <content_type>\r\n"     (omitted when content_type NULL)
 *   "Content-Length: <content_length>\r\n"
 *   "Connection: keep-alive|close\r\n"
 *   <extra>                                (preformatted "Name: v\r\n" lines
 *                                           or NULL)
 *   "\r\n"
 * Returns the length written, or ERR_TOO_LARGE if it does not fit. */
int http_response_head(char *out, size_t cap, int status,
                       const char *content_type, uint64_t content_length,
                       bool keep_alive, const char *extra);

#endif
