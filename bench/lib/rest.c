#include "lib/rest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "client_http.h"

#define MAX_RESPONSE (64u << 20)

int rest_format(char *out, size_t cap, const sock_target *t, const char *method, const char *path,
                const char *token, const char *body)
{
    const char *a1 = token ? "Authorization: Bearer " : "", *a2 = token ? token : "",
               *a3 = token ? "\r\n" : "";
    int n;
    if (body)
        n = snprintf(out, cap,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%sContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, t->host, t->port, a1, a2, a3, strlen(body), body);
    else
        n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%s\r\n", method, path, t->host,
                     t->port, a1, a2, a3);
    return n < 0 || (size_t)n >= cap ? ERR_TOO_LARGE : n;
}

void rest_init(rest_conn *h, const sock_target *t, int src)
{
    memset(h, 0, sizeof *h);
    h->t = t;
    h->src = src;
    h->fd = -1;
}

int rest_open(rest_conn *h)
{
    if (h->fd >= 0) return ERR_OK;
    h->fd = sock_connect(h->t, h->src, false);
    if (h->fd < 0) return ERR_IO;
    struct timeval tv = {.tv_sec = 30};
    setsockopt(h->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(h->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    h->in_len = 0;
    return ERR_OK;
}

void rest_close(rest_conn *h)
{
    if (h->fd >= 0) close(h->fd);
    h->fd = -1;
    free(h->in);
    free(h->body);
    h->in = h->body = NULL;
    h->in_len = h->in_cap = h->body_cap = 0;
}

int rest_write(rest_conn *h, const char *method, const char *path, const char *token,
               const char *body)
{
    if (h->fd < 0) return ERR_IO;
    size_t cap = 1024 + (body ? strlen(body) : 0);
    char *req = xcalloc(1, cap);
    int n = rest_format(req, cap, h->t, method, path, token, body);
    int rc = n < 0 ? n : ERR_IO;
    if (n > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = send(h->fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w <= 0) break;
            off += w;
        }
        h->bytes_out += (uint64_t)off;
        if (off == n) rc = ERR_OK;
    }
    free(req);
    return rc;
}

int rest_read(rest_conn *h, rest_resp *r)
{
    if (h->fd < 0) return ERR_IO;
    for (int guard = 0; guard < 1000000; guard++) {
        if (h->in_len) {
            client_http_response resp;
            int n = client_http_parse_response(h->in, h->in_len, false, false, MAX_RESPONSE, &resp);
            if (n > 0) {
                /* the body moves to its own buffer so the rest of the input
                 * (a pipelined answer) can stay where it is */
                if (h->body_cap < resp.body.n + 1) {
                    h->body_cap = resp.body.n + 1;
                    h->body = xrealloc(h->body, h->body_cap);
                }
                memcpy(h->body, resp.body.p, resp.body.n);
                h->body[resp.body.n] = 0;
                r->status = resp.status;
                r->body = h->body;
                r->body_len = resp.body.n;
                r->retry_after_ms = client_http_retry_after_ms(&resp);
                memmove(h->in, h->in + n, h->in_len - (size_t)n);
                h->in_len -= (size_t)n;
                return ERR_OK;
            }
            if (n != ERR_AGAIN) return ERR_PROTOCOL;
        }
        if (h->in_cap - h->in_len < 65536) {
            h->in_cap = h->in_cap * 2 + 65536;
            h->in = xrealloc(h->in, h->in_cap);
        }
        ssize_t got = recv(h->fd, h->in + h->in_len, h->in_cap - h->in_len, 0);
        if (got <= 0) return ERR_IO;
        h->in_len += (size_t)got;
        h->bytes_in += (uint64_t)got;
    }
    return ERR_IO;
}

int rest_do(rest_conn *h, const char *method, const char *path, const char *token,
            const char *body, rest_resp *r)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        if (h->fd < 0 && rest_open(h) != ERR_OK) return ERR_IO;
        if (rest_write(h, method, path, token, body) != ERR_OK || rest_read(h, r) != ERR_OK) {
            if (h->fd >= 0) close(h->fd);
            h->fd = -1;
            h->in_len = 0;
            sleep_ms(100);
            continue;
        }
        if (r->status == 503 || r->status == 429) {
            sleep_ms(r->retry_after_ms ? (int64_t)r->retry_after_ms : 200);
            continue;
        }
        return r->status;
    }
    return ERR_TIMEOUT;
}

/* ---- pipelined batches ----------------------------------------------------- */

typedef struct bconn {
    int fd;
    int q[REST_DEPTH], qh, qn;   /* requests written, awaiting answers, in order */
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
} bconn;

/* The run queue of request indexes: a ring over n slots (each request is in
 * it at most once at any time). */
typedef struct runq {
    int *q;
    int head, tail, n;
} runq;

static void runq_push(runq *rq, int idx)
{
    rq->q[rq->tail++ % rq->n] = idx;
}

void rest_req_set(rest_req *r, const sock_target *t, const char *method, const char *path,
                  const char *token, const char *body)
{
    size_t cap = 1024 + (body ? strlen(body) : 0);
    r->raw = xcalloc(1, cap);
    r->raw_len = rest_format(r->raw, cap, t, method, path, token, body);
    if (r->raw_len < 0) die("request too large");
}

/* A lost connection: its unanswered requests go back to the queue. */
static void bconn_drop(bconn *c, runq *rq, rest_req *r)
{
    for (int i = 0; i < c->qn; i++) {
        int idx = c->q[(c->qh + i) % REST_DEPTH];
        r[idx].tries++;
        runq_push(rq, idx);
    }
    c->qn = c->qh = 0;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->in_len = c->out_len = c->out_off = 0;
}

int rest_batch(const sock_target *t, rest_req *r, int n, int nconn, int timeout_s, rng *rg,
               rest_counts *cnt)
{
    if (n <= 0) return 0;
    if (nconn > n) nconn = n;
    bconn *cs = xcalloc((size_t)nconn, sizeof *cs);
    runq rq = {.q = xcalloc((size_t)n, sizeof(int)), .n = n};
    int done = 0, failed = 0;
    for (int i = 0; i < n; i++) runq_push(&rq, i);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconn; i++) cs[i].fd = -1;
    int64_t deadline = now_ns() + (int64_t)timeout_s * NS_PER_S;
    struct epoll_event evs[64];
    while (done + failed < n && now_ns() < deadline) {
        int64_t now = now_ns();
        for (int i = 0; i < nconn; i++) {
            bconn *c = &cs[i];
            /* queue order; a request waiting for not_before holds the rest
             * back briefly, which is what a retry storm wants anyway */
            while (c->qn < REST_DEPTH && rq.head < rq.tail &&
                   r[rq.q[rq.head % n]].not_before <= now) {
                if (c->fd < 0) {
                    c->fd = sock_connect(t, i * 7 + (int)(rng_next(rg) % 8), false);
                    if (c->fd < 0) break;
                    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                }
                int idx = rq.q[rq.head++ % n];
                c->q[(c->qh + c->qn++) % REST_DEPTH] = idx;
                if (c->out_cap < c->out_len + (size_t)r[idx].raw_len) {
                    c->out_cap = (c->out_len + (size_t)r[idx].raw_len) * 2;
                    c->out = xrealloc(c->out, c->out_cap);
                }
                memcpy(c->out + c->out_len, r[idx].raw, (size_t)r[idx].raw_len);
                c->out_len += (size_t)r[idx].raw_len;
                cnt->sent++;
            }
            if (c->fd >= 0 && c->out_len > c->out_off) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0) c->out_off += (size_t)w;
                else if (w < 0 && errno != EAGAIN) {
                    bconn_drop(c, &rq, r);
                    continue;
                }
                if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
                struct epoll_event ev = {.events = EPOLLIN | (c->out_len ? EPOLLOUT : 0u),
                                         .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
        int k = epoll_wait(ep, evs, 64, 5);
        for (int e = 0; e < k; e++) {
            bconn *c = &cs[evs[e].data.u32];
            if (c->fd < 0 || !(evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            if (c->in_cap - c->in_len < 16384) {
                c->in_cap = c->in_cap * 2 + 65536;
                c->in = xrealloc(c->in, c->in_cap);
            }
            ssize_t got = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (got < 0 && errno == EAGAIN) continue;
            if (got <= 0) {
                bconn_drop(c, &rq, r);
                continue;
            }
            c->in_len += (size_t)got;
            size_t off = 0;
            bool drop = false;
            while (c->qn > 0) {
                client_http_response resp;
                int m = client_http_parse_response(c->in + off, c->in_len - off, false, false,
                                                   MAX_RESPONSE, &resp);
                if (m == ERR_AGAIN) break;
                if (m < 0) {
                    drop = true;
                    break;
                }
                off += (size_t)m;
                int idx = c->q[c->qh];
                c->qh = (c->qh + 1) % REST_DEPTH;
                c->qn--;
                rest_req *q = &r[idx];
                if ((resp.status == 503 || resp.status == 429) && q->tries < 40) {
                    uint64_t ra = client_http_retry_after_ms(&resp);
                    q->tries++;
                    q->not_before = now_ns() + (int64_t)(ra > 50 ? ra : 50) * NS_PER_MS;
                    runq_push(&rq, idx);
                    if (resp.status == 503) cnt->busy++;
                } else {
                    q->status = resp.status;
                    q->resp = xcalloc(1, resp.body.n + 1);
                    memcpy(q->resp, resp.body.p, resp.body.n);
                    if (resp.status >= 200 && resp.status < 300) done++;
                    else {
                        failed++;
                        cnt->failed++;
                        if (failed <= 3)
                            fprintf(stderr, "provisioning: HTTP %d %.200s\n", resp.status, q->resp);
                    }
                }
                if (resp.close) {
                    drop = true;
                    break;
                }
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            if (drop) bconn_drop(c, &rq, r);
        }
    }
    for (int i = 0; i < nconn; i++) {
        if (cs[i].fd >= 0) close(cs[i].fd);
        free(cs[i].in);
        free(cs[i].out);
    }
    close(ep);
    free(cs);
    free(rq.q);
    for (int i = 0; i < n; i++) {
        free(r[i].raw);
        r[i].raw = NULL;
    }
    return n - done;
}
