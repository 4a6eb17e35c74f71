/* client_http: the client half of HTTP/1.1 for libparley: URL parsing, a
 * pure response parser, base64, Retry-After, and a plain blocking request
 * helper (one TCP connection per request, "Connection: close").
 *
 * The parser follows http.h's conventions: it takes (buf, len), returns the
 * bytes the response occupies, ERR_AGAIN for "need more" (buf untouched) or
 * an error, never allocates, and its slices point into buf.
 */
#ifndef PARLEY_CLIENT_HTTP_H
#define PARLEY_CLIENT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/err.h"
#include "codec/http.h"
#include "parley.h"

typedef struct client_url {
    char host[256];      /* without brackets for IPv6 literals */
    char port[8];        /* "8080" */
    char prefix[256];    /* path prefix without trailing '/', "" for none */
    char hostport[270];  /* for the Host header: "host:port", "[::1]:80" */
} client_url;

/* Parses "http://host[:port][/prefix]". ERR_INVALID for anything else,
 * ERR_UNSUPPORTED for "https://". */
int client_http_parse_url(const char *url, client_url *u);

/* Parses a comma-separated list of such URLs into out[0..max) (spaces and
 * tabs around each are ignored; "," inside a URL therefore cannot be
 * given). Returns the count (>= 1) or the error of the first bad entry:
 * ERR_INVALID (an empty entry, a malformed URL), ERR_UNSUPPORTED (https),
 * ERR_TOO_LARGE (more than max). out is written up to the bad entry. */
int client_http_parse_urls(const char *list, client_url *out, size_t max);

typedef struct client_http_response {
    int status;
    int minor;                 /* 1 for HTTP/1.1 */
    http_header headers[HTTP_MAX_HEADERS];
    size_t nheaders;
    size_t head_len;           /* status line + headers + blank line */
    bool chunked;
    bool close;                /* "Connection: close" */
    http_str body;             /* decoded body (chunks decoded in place) */
} client_http_response;

/* Parses one response from buf[0..len).
 *   no_body: the response has no body whatever its headers say (a 101, or
 *            the answer to HEAD); 1xx, 204 and 304 never have one either.
 *   eof:     the peer closed after buf; a response framed by the end of
 *            the connection (no Content-Length, not chunked) is complete.
 * Returns its length, ERR_AGAIN, ERR_PROTOCOL (malformed), ERR_TOO_LARGE
 * (head over 64 KiB or more than HTTP_MAX_HEADERS fields, body over
 * max_body). A complete chunked body is decoded in place (buf changes). */
int client_http_parse_response(char *buf, size_t len, bool no_body, bool eof,
                               size_t max_body, client_http_response *r);

/* The first header named name (case-insensitive), or NULL. */
const http_str *client_http_header(const client_http_response *r, const char *name);

/* Retry-After in ms: delta-seconds (capped at one day); 0 if absent or not
 * delta-seconds. */
uint64_t client_http_retry_after_ms(const client_http_response *r);

/* Standard base64 of in[0..n) into out (4 * ceil(n / 3) + 1 bytes, NUL
 * terminated). Returns the length without NUL. */
size_t client_http_base64(const uint8_t *in, size_t n, char *out);

/* Resolves u (getaddrinfo, blocking) into up to max addresses. Returns the
 * count (> 0) or ERR_IO. */
int client_http_resolve(const client_url *u, struct sockaddr_storage *addrs,
                        socklen_t *lens, int max);

/* A non-blocking TCP socket with connect() started (CLOEXEC, NODELAY).
 * Returns the fd, or ERR_IO. *in_progress tells EINPROGRESS from done. */
int client_http_connect_start(const struct sockaddr_storage *addr, socklen_t len,
                              bool *in_progress);

typedef struct client_http_request {
    const char *method;        /* "GET", "POST", "DELETE" */
    const char *path;          /* after the URL prefix, e.g. "/v1/users" */
    const char *token;         /* Authorization: Bearer, or NULL */
    const char *body;          /* JSON, or NULL */
    size_t body_len;
    int timeout_ms;            /* bound on the whole exchange */
    size_t max_response;       /* bytes; 0: 16 MiB */
    bool *connected;           /* if not NULL: set to whether the TCP connection
                                  was established (false: nothing was sent, the
                                  request may go to another server) */
} client_http_request;

/* Performs one request and reads the whole response. On ERR_OK *raw is a
 * buffer from a (the caller frees it with a->free_fn) and *resp's slices
 * point into it. Errors: ERR_IO (resolve/connect/send/recv failed, *raw
 * NULL; *rq->connected tells a failed connect from a later failure), ERR_TIMEOUT, ERR_PROTOCOL / ERR_TOO_LARGE (bad response), ERR_NOMEM,
 * ERR_INVALID (request too large). Any HTTP status is ERR_OK. */
int client_http_do(const parley_allocator *a, const client_url *u,
                   const client_http_request *rq, char **raw, client_http_response *resp);

#endif
