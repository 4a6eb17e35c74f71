#include "lib/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>


#define RBUF 262144
#define IDX_CMD 0xfffffff0u
#define HANDSHAKE_TIMEOUT (15 * NS_PER_S)
#define GIVE_UP_ATTEMPTS 40

/* ---- timers ------------------------------------------------------------------ */

static void heap_push(timer_heap *h, int64_t t, uint32_t i)
{
    if (h->n == h->cap) {
        h->cap = h->cap * 2 + 64;
        h->t = xrealloc(h->t, (size_t)h->cap * sizeof *h->t);
        h->i = xrealloc(h->i, (size_t)h->cap * sizeof *h->i);
    }
    int k = h->n++;
    while (k > 0) {
        int p = (k - 1) / 2;
        if (h->t[p] <= t) break;
        h->t[k] = h->t[p];
        h->i[k] = h->i[p];
        k = p;
    }
    h->t[k] = t;
    h->i[k] = i;
}

static void heap_pop(timer_heap *h)
{
    int64_t t = h->t[--h->n];
    uint32_t i = h->i[h->n];
    int k = 0;
    for (;;) {
        int a = 2 * k + 1, b = a + 1, m = k;
        int64_t mt = t;
        if (a < h->n && h->t[a] < mt) {
            m = a;
            mt = h->t[a];
        }
        if (b < h->n && h->t[b] < mt) m = b;
        if (m == k) break;
        h->t[k] = h->t[m];
        h->i[k] = h->i[m];
        k = m;
    }
    if (h->n) {
        h->t[k] = t;
        h->i[k] = i;
    }
}

/* ---- set-up -------------------------------------------------------------------- */

void worker_username(char *out, size_t cap, const char *prefix, int wid, int i)
{
    snprintf(out, cap, "%sw%du%d", prefix, wid, i);
}

void worker_init(worker *w, int id, const bench_opts *o, const sock_target *t,
                 const worker_ops *ops, stats *S, int n, unsigned run_id)
{
    memset(w, 0, sizeof *w);
    w->id = id;
    w->o = o;
    w->t = t;
    w->ops = *ops;
    w->S = S;
    rng_seed(&w->rng, (uint64_t)id + 1);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) die("epoll: %s", strerror(errno));
    w->cmd_fd = -1;
    w->n = n;
    w->c = xcalloc((size_t)n, sizeof *w->c);
    w->user = xcalloc((size_t)n, ops->user_size ? ops->user_size : 1);
    w->toks = xcalloc((size_t)n, sizeof *w->toks);
    for (int i = 0; i < n; i++) wsc_init(&w->c[i], (uint32_t)i);
    w->rbuf = xcalloc(1, RBUF);
    snprintf(w->prefix, sizeof w->prefix, "pb%06x", run_id & 0xffffff);
    if (o->nports > 0) {
        w->nnodes = o->nports;
        w->nodes = xcalloc((size_t)o->nports, sizeof *w->nodes);
        for (int k = 0; k < o->nports; k++) {
            w->nodes[k] = *t;
            w->nodes[k].port = o->ports[k];
        }
    }
}

int worker_node_of(int i, int per, int nnodes)
{
    if (nnodes <= 1) return 0;
    if (per < 1) per = 1;
    return (i / per + i % per) % nnodes;
}

const sock_target *worker_conn_target(const worker *w, const wsc *c)
{
    if (!w->nodes) return w->t;
    return &w->nodes[worker_node_of((int)c->idx, w->ops.per_item, w->nnodes)];
}

void *worker_user(worker *w, const wsc *c)
{
    return w->user + (size_t)c->idx * w->ops.user_size;
}

/* ---- connection life ------------------------------------------------------------ */

static void set_events(worker *w, wsc *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u32 = c->idx};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void close_conn(worker *w, wsc *c, bool rst)
{
    if (c->fd >= 0) epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->st == WSC_CONNECTING || c->st == WSC_HANDSHAKE || c->st == WSC_OPEN) w->inflight--;
    if (c->counted) {
        c->counted = false;
        w->nready--;
    }
    wsc_close(c, rst);
}

void worker_reconnect_at(worker *w, wsc *c, int64_t at)
{
    close_conn(w, c, true);
    c->st = WSC_WAIT;
    c->when = at;
    heap_push(&w->heap, at, c->idx);
}

void worker_drop(worker *w, wsc *c, bool rst)
{
    close_conn(w, c, rst);
    c->st = WSC_DEAD;
}

void worker_lost(worker *w, wsc *c, uint64_t retry_after_ms, bool rst)
{
    close_conn(w, c, rst);
    if (c->bo.attempt >= GIVE_UP_ATTEMPTS && !w->reconnect_forever) {
        c->st = WSC_DEAD;
        return;
    }
    uint64_t d = client_backoff_next(&c->bo, rng_next(&w->rng), retry_after_ms);
    c->st = WSC_WAIT;
    c->when = now_ns() + (int64_t)d * NS_PER_MS;
    heap_push(&w->heap, c->when, c->idx);
}

static void start_conn(worker *w, wsc *c)
{
    stats_add(w->S, ST_ATTEMPTS, 1);
    if (wsc_connect(c, worker_conn_target(w, c), (int)c->idx + w->id * 7919) != ERR_OK) {
        stats_add(w->S, ST_HS_FAIL, 1);
        worker_lost(w, c, 0, false);
        return;
    }
    w->inflight++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = c->idx};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

void worker_mark_ready(worker *w, wsc *c)
{
    if (c->counted) return;
    c->counted = true;
    w->nready++;
    stats_add(w->S, ST_READY, 1);
}

static void became_ready(worker *w, wsc *c)
{
    c->st = WSC_READY;
    w->inflight--;
    hist_add(stats_hist(w->S, SH_HANDSHAKE), now_ns() - c->t0);
    if (w->ops.ready) w->ops.ready(w, c);
    else worker_mark_ready(w, c);
}

/* Sends; starts watching for writability when output got queued. */
static int send_frame(worker *w, wsc *c, uint8_t op, const void *p, size_t n)
{
    bool had = c->out_len > 0;
    if (wsc_send_frame(c, op, p, n) != ERR_OK) {
        stats_add(w->S, ST_CLOSED, 1);
        worker_lost(w, c, 0, false);
        return ERR_IO;
    }
    if (!had && c->out_len) set_events(w, c, EPOLLIN | EPOLLOUT);
    return ERR_OK;
}

int worker_text(worker *w, wsc *c, const char *p, size_t n)
{
    if (c->fd < 0) return ERR_IO;
    return send_frame(w, c, WS_OP_TEXT, p, n);
}

static void note_closed(worker *w, const char *what)
{
    stats_add(w->S, ST_CLOSED, 1);
    if (stats_get(w->S, ST_CLOSED) <= 3) fprintf(stderr, "%s\n", what);
}

/* The upgrade answer in c->in. */
static void on_upgrade(worker *w, wsc *c)
{
    wsc_upgrade u = {0};
    int n = wsc_parse_upgrade(c, &u);
    if (n == ERR_AGAIN) return;
    if (n < 0) {
        if (u.status == 503) stats_add(w->S, ST_REJ503, 1);
        else if (u.status == 429) stats_add(w->S, ST_REJ429, 1);
        else {
            stats_add(w->S, ST_HS_FAIL, 1);
            if (stats_get(w->S, ST_HS_FAIL) <= 3)
                fprintf(stderr, "handshake: HTTP %d%s\n", u.status,
                        u.status == 101 ? " with a wrong Sec-WebSocket-Accept" : "");
        }
        worker_lost(w, c, u.retry_after_ms, false);
        return;
    }
    c->st = WSC_OPEN;
    if (w->o->floor) became_ready(w, c); /* the floor sends no hello */
}

/* Parses the frames in data[0..have); keeps a partial one in c->in. */
static void on_frames(worker *w, wsc *c, uint8_t *data, size_t have, bool data_is_in)
{
    size_t off = 0;
    while (c->fd >= 0 && off < have) {
        ws_frame f;
        uint16_t code = 0;
        int n = wsc_parse_frame(data + off, have - off, &f, &code);
        if (n == ERR_AGAIN) break;
        if (n < 0) {
            stats_add(w->S, ST_ERRORS, 1);
            fprintf(stderr, "bad frame from server (close %u)\n", code);
            worker_lost(w, c, 0, false);
            return;
        }
        off += (size_t)n;
        if (!f.fin || f.opcode == WS_OP_CONT) {
            /* parleyd does not fragment; a fragment is counted, not assembled */
            stats_add(w->S, ST_ERRORS, 1);
            continue;
        }
        if (f.opcode == WS_OP_TEXT) {
            if (c->st == WSC_OPEN) {
                became_ready(w, c); /* the server's first frame is hello */
                continue;
            }
            if (w->ops.text) w->ops.text(w, c, (const char *)f.payload, (size_t)f.len);
        } else if (f.opcode == WS_OP_PING) {
            send_frame(w, c, WS_OP_PONG, f.payload, (size_t)f.len);
        } else if (f.opcode == WS_OP_CLOSE) {
            uint16_t cc = f.len >= 2 ? (uint16_t)(f.payload[0] << 8 | f.payload[1]) : 1005;
            char what[64];
            snprintf(what, sizeof what, "server closed a connection: %u", cc);
            note_closed(w, what);
            worker_lost(w, c, 0, false);
            return;
        }
    }
    if (c->fd < 0) return;
    size_t tail = have - off;
    if (data_is_in) {
        memmove(c->in, c->in + off, tail);
        c->in_len = (uint32_t)tail;
    } else if (tail) {
        c->in_len = 0;
        wsc_keep_input(c, data + off, tail);
    }
    if (!c->in_len && c->in_cap > 65536) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void on_readable(worker *w, wsc *c)
{
    ssize_t r = recv(c->fd, w->rbuf, RBUF, 0);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) {
        if (c->st == WSC_HANDSHAKE || c->st == WSC_CONNECTING || c->st == WSC_OPEN)
            stats_add(w->S, ST_HS_FAIL, 1);
        else {
            char what[96];
            snprintf(what, sizeof what, "connection lost: %s", r == 0 ? "EOF" : strerror(errno));
            note_closed(w, what);
        }
        worker_lost(w, c, 0, false);
        return;
    }
    if (c->st == WSC_HANDSHAKE) {
        wsc_keep_input(c, w->rbuf, (size_t)r);
        on_upgrade(w, c);
        if (c->fd >= 0 && c->st >= WSC_OPEN && c->in_len) on_frames(w, c, c->in, c->in_len, true);
        return;
    }
    if (c->in_len) {
        wsc_keep_input(c, w->rbuf, (size_t)r);
        on_frames(w, c, c->in, c->in_len, true);
    } else {
        on_frames(w, c, w->rbuf, (size_t)r, false);
    }
}

static void on_writable(worker *w, wsc *c)
{
    if (c->st == WSC_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err || wsc_send_upgrade(c, worker_conn_target(w, c)) != ERR_OK) {
            stats_add(w->S, ST_HS_FAIL, 1);
            worker_lost(w, c, 0, false);
            return;
        }
        if (!c->out_len) set_events(w, c, EPOLLIN);
        return;
    }
    int rc = wsc_flush(c);
    if (rc == ERR_AGAIN) return;
    if (rc != ERR_OK) {
        stats_add(w->S, ST_CLOSED, 1);
        worker_lost(w, c, 0, false);
        return;
    }
    set_events(w, c, EPOLLIN);
}

/* ---- commands ------------------------------------------------------------------ */

void worker_open(worker *w, int target)
{
    w->target = target < w->n ? target : w->n;
}

static bool cmd_done(worker *w)
{
    switch (w->pend_op) {
    case CMD_CONNECT: {
        if (w->nready >= w->target) return true;
        int dead = 0;
        for (int i = 0; i < w->target && i < w->n; i++) dead += w->c[i].st == WSC_DEAD;
        return w->nready + dead >= w->target;
    }
    case CMD_STOP:
        if (now_ns() > w->pend_deadline) return true;
        for (int i = 0; i < w->n; i++)
            if (w->c[i].outstanding > 0 && w->c[i].st == WSC_READY) return false;
        return true;
    default:
        return true;
    }
}

static void handle_cmd(worker *w, const pool_cmd *m)
{
    w->pend_op = m->op;
    w->pend_seq = m->seq;
    switch (m->op) {
    case CMD_PROVISION: {
        int64_t t0 = now_ns();
        bool ok = !w->ops.provision || w->o->floor || w->n == 0 || w->ops.provision(w);
        w->S->prov_s = (double)(now_ns() - t0) / 1e9;
        if (!ok && w->failed) *w->failed = 1;
        break;
    }
    case CMD_CONNECT:
        worker_open(w, (int)m->arg);
        break;
    case CMD_RUN:
        w->running = true;
        w->stopping = false;
        if (w->ops.start) w->ops.start(w);
        break;
    case CMD_STOP:
        w->stopping = true;
        w->pend_deadline = now_ns() + 3 * NS_PER_S;
        break;
    case CMD_SCENARIO:
        if (w->ops.command) w->ops.command(w, m->arg);
        break;
    default:
        break;
    }
}

/* ---- the loop ---------------------------------------------------------------------- */

void worker_poll(worker *w, int max_ms)
{
    int64_t now = now_ns();
    int guard = 0;
    while (w->heap.n && w->heap.t[0] <= now && guard++ < 4096) {
        uint32_t i = w->heap.i[0];
        int64_t t = w->heap.t[0];
        heap_pop(&w->heap);
        wsc *c = &w->c[i];
        if (c->st == WSC_WAIT && c->when == t) start_conn(w, c);
    }
    int conc = w->o->concurrency;
    while (w->next_open < w->target && w->inflight < conc) {
        wsc *c = &w->c[w->next_open++];
        if (c->st == WSC_NONE) start_conn(w, c);
    }
    int tick_ms = w->ops.tick ? w->ops.tick(w) : -1;
    if (now - w->last_scan > 250 * NS_PER_MS) {
        w->last_scan = now;
        for (int i = 0; i < w->n; i++) {
            wsc *c = &w->c[i];
            if ((c->st == WSC_CONNECTING || c->st == WSC_HANDSHAKE || c->st == WSC_OPEN) &&
                now - c->t0 > HANDSHAKE_TIMEOUT) {
                stats_add(w->S, ST_HS_FAIL, 1);
                worker_lost(w, c, 0, true);
            }
        }
    }
    int timeout = max_ms;
    if (w->heap.n) {
        int64_t d = (w->heap.t[0] - now) / NS_PER_MS + 1;
        if (d < timeout) timeout = d < 0 ? 0 : (int)d;
    }
    if (tick_ms >= 0 && tick_ms < timeout) timeout = tick_ms;
    if (w->next_open < w->target && w->inflight < conc) timeout = 0;
    struct epoll_event evs[512];
    int k = epoll_wait(w->ep, evs, 512, timeout);
    for (int e = 0; e < k; e++) {
        uint32_t i = evs[e].data.u32;
        if (i == IDX_CMD) {
            pool_cmd m;
            ssize_t r = read(w->cmd_fd, &m, sizeof m);
            if (r == (ssize_t)sizeof m) handle_cmd(w, &m);
            else if (r == 0) {
                w->pend_op = CMD_EXIT;
                w->pend_seq = -1;
            }
            continue;
        }
        wsc *c = &w->c[i];
        if (c->fd < 0) continue;
        if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (c->st == WSC_CONNECTING) on_writable(w, c);
            else on_readable(w, c);
        }
        if (c->fd >= 0 && (evs[e].events & EPOLLOUT)) on_writable(w, c);
    }
    if (w->pend_op && w->pend_op != CMD_EXIT && cmd_done(w)) {
        if (w->ack_seq) *w->ack_seq = w->pend_seq;
        w->pend_op = 0;
    }
}

void worker_serve(worker *w, int cmd_fd)
{
    w->cmd_fd = cmd_fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = IDX_CMD};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, cmd_fd, &ev);
    int64_t hard_end = now_ns() + 900 * NS_PER_S;
    while (now_ns() < hard_end) {
        worker_poll(w, 50);
        if (w->pend_op == CMD_EXIT) break;
        if (getppid() == 1) break;
    }
}

void worker_free(worker *w)
{
    if (w->ops.cleanup) w->ops.cleanup(w);
    /* RST, so no TIME_WAIT sockets linger into the next measurement */
    for (int i = 0; i < w->n; i++)
        if (w->c[i].fd >= 0) close_conn(w, &w->c[i], true);
    if (w->ep >= 0) close(w->ep);
    free(w->c);
    free(w->user);
    free(w->toks);
    free(w->nodes);
    free(w->rbuf);
    free(w->heap.t);
    free(w->heap.i);
    memset(w, 0, sizeof *w);
    w->ep = -1;
}
