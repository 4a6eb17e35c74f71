/* rest: the load generator's HTTP/1.1 client for parleyd's REST API.
 *
 * Requests are written here; responses are parsed with libparley's pure
 * response parser (client_http.h, on codec/http.h's types). Two ways:
 *
 *   rest_conn   one blocking keep-alive connection (30 s socket timeouts):
 *               the parent's provisioning of a few users, the catch-up
 *               first screen and history paging, /metrics scrapes.
 *   rest_batch  many requests over a few non-blocking connections with up
 *               to REST_DEPTH requests pipelined on each: a worker's
 *               provisioning of thousands of users and conversations.
 *
 * 503 and 429 answers are retried after their Retry-After (bounded).
 */
#ifndef BENCH_REST_H
#define BENCH_REST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/sock.h"
#include "lib/util.h"

/* Formats one request ("Content-Type: application/json" when body is not
 * NULL, "Authorization: Bearer" when token is not NULL) into out[0..cap).
 * Returns its length, or ERR_TOO_LARGE. */
int rest_format(char *out, size_t cap, const sock_target *t, const char *method, const char *path,
                const char *token, const char *body);

typedef struct rest_conn {
    const sock_target *t;   /* borrowed; outlives the connection */
    int src;                /* source address index */
    int fd;                 /* -1 while closed */
    char *in;               /* owned: bytes received, not yet parsed */
    size_t in_len, in_cap;
    char *body;             /* owned: the last response's body, NUL-terminated */
    size_t body_cap;
    uint64_t bytes_in, bytes_out;  /* on the wire, since rest_init */
} rest_conn;

typedef struct rest_resp {
    int status;
    const char *body;       /* into the rest_conn; valid until its next read */
    size_t body_len;
    uint64_t retry_after_ms;
} rest_resp;

/* A closed connection to t from source address src. */
void rest_init(rest_conn *h, const sock_target *t, int src);
/* Connects (blocking). ERR_OK or ERR_IO. */
int rest_open(rest_conn *h);
/* Closes the socket and frees the buffers; h can be opened again. */
void rest_close(rest_conn *h);

/* Writes one request. ERR_OK, ERR_IO or ERR_TOO_LARGE. */
int rest_write(rest_conn *h, const char *method, const char *path, const char *token,
               const char *body);
/* Reads one whole response into *r. ERR_OK, ERR_IO (closed, timeout) or
 * ERR_PROTOCOL. */
int rest_read(rest_conn *h, rest_resp *r);

/* One request, opening the connection when needed; 503/429 and lost
 * connections are retried (at most 20 attempts). Returns the HTTP status
 * (r filled) or a negative code. */
int rest_do(rest_conn *h, const char *method, const char *path, const char *token,
            const char *body, rest_resp *r);

/* ---- pipelined batches ----------------------------------------------------- */

#define REST_DEPTH 16

typedef struct rest_req {
    char *raw;              /* owned: the formatted request, freed by rest_batch */
    int raw_len;
    int tries;
    int64_t not_before;     /* retry time after a 503/429 */
    int status;             /* the final answer's status, 0 if none */
    char *resp;             /* owned by the caller after rest_batch: the body
                               (NUL-terminated, free()), NULL if none */
} rest_req;

typedef struct rest_counts {
    uint64_t sent;          /* requests written, retries included */
    uint64_t failed;        /* final answers other than 2xx */
    uint64_t busy;          /* 503 answers (retried) */
} rest_counts;

/* Formats r (dies if it does not fit). */
void rest_req_set(rest_req *r, const sock_target *t, const char *method, const char *path,
                  const char *token, const char *body);

/* Runs all n requests over at most nconn connections within timeout_s.
 * 503/429 are retried after Retry-After (at least 50 ms), at most 40 times.
 * Returns how many did not get a 2xx answer; *c is added to. */
int rest_batch(const sock_target *t, rest_req *r, int n, int nconn, int timeout_s, rng *rg,
               rest_counts *c);

#endif
