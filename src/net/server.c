#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/conn.h"
#include "base/err.h"
#include "base/log.h"
#include "net/tls.h"

/* ---- listeners ---------------------------------------------------------- */

static int parse_listen(const char *addr, int port, struct sockaddr_storage *ss, socklen_t *sl)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof *s4;
    } else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof *s6;
    } else {
        log_error("bad listen address", "addr=%s err=\"not an IPv4 or IPv6 address\"", addr);
        return ERR_INVALID;
    }
    return ERR_OK;
}

static void log_in_use(const char *addr, int port)
{
    log_error("cannot listen: the port is already in use by another process "
              "(another parleyd, or another program)",
              "addr=%s port=%d err=\"%s\"", addr, port, strerror(EADDRINUSE));
}

/* Linux lets SO_REUSEPORT listeners of one user share a port and splits the
 * connections between them, so a second parleyd on a busy port would start
 * and take part of the clients. A probe bound without SO_REUSEPORT fails
 * (EADDRINUSE) while any other socket listens on the port, whatever its
 * options; SO_REUSEADDR still lets it pass old TIME_WAIT connections. */
static int probe_port(const char *addr, int port, const struct sockaddr_storage *ss, socklen_t sl)
{
    if (port == 0) return ERR_OK; /* the kernel picks a free one */
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("cannot listen", "addr=%s port=%d err=\"%s\"", addr, port, strerror(errno));
        return ERR_IO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (const struct sockaddr *)ss, sl);
    int e = errno;
    close(fd);
    if (rc == 0) return ERR_OK;
    if (e == EADDRINUSE) log_in_use(addr, port);
    else log_error("cannot listen", "addr=%s port=%d err=\"%s\"", addr, port, strerror(e));
    return ERR_IO;
}

/* Whether a listening TCP socket that is not one of ours (by inode) shares
 * our port and overlaps our address (equal, or either is the wildcard).
 * This closes the race the probe leaves (two servers starting at once: the
 * later one to look sees the other and gives up). Asks the kernel through
 * sock_diag; false when that is not available (the probe still ran). */
static bool other_listener(const struct sockaddr_storage *ss, int port, const server *s)
{
    int nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (nl < 0) return false;
    struct timeval tv = {1, 0};
    setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = (uint8_t)ss->ss_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = 1u << 10; /* TCP_LISTEN */
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(nl, &req, sizeof req, 0, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(nl);
        return false;
    }
    uint8_t ours[16] = {0}, any[16] = {0};
    size_t alen = ss->ss_family == AF_INET ? 4 : 16;
    if (ss->ss_family == AF_INET) memcpy(ours, &((const struct sockaddr_in *)ss)->sin_addr, 4);
    else memcpy(ours, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    bool wild = memcmp(ours, any, alen) == 0;
    ino_t *mine = calloc((size_t)s->nthreads, sizeof *mine);
    if (!mine) {
        close(nl);
        return false;
    }
    for (int i = 0; i < s->nthreads; i++) {
        struct stat st;
        if (fstat(s->threads[i].listen_fd, &st) == 0) mine[i] = st.st_ino;
    }
    bool found = false, done = false;
    long buf[8192 / sizeof(long)]; /* aligned for struct nlmsghdr */
    for (int rounds = 0; !done && rounds < 100000; rounds++) {
        ssize_t got = recv(nl, buf, sizeof buf, 0);
        if (got <= 0) break;
        for (size_t off = 0; !done && off + sizeof(struct nlmsghdr) <= (size_t)got;) {
            const struct nlmsghdr *h = (const struct nlmsghdr *)((const char *)buf + off);
            if (h->nlmsg_len < sizeof *h || h->nlmsg_len > (size_t)got - off) break;
            off += NLMSG_ALIGN(h->nlmsg_len);
            if (h->nlmsg_type == NLMSG_DONE || h->nlmsg_type == NLMSG_ERROR) { done = true; break; }
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) continue;
            const struct inet_diag_msg *m = NLMSG_DATA(h);
            if (ntohs(m->id.idiag_sport) != port) continue;
            const uint8_t *src = (const uint8_t *)m->id.idiag_src;
            if (!wild && memcmp(src, any, alen) != 0 && memcmp(src, ours, alen) != 0) continue;
            bool mine_too = false;
            for (int i = 0; i < s->nthreads; i++) mine_too |= mine[i] == (ino_t)m->idiag_inode;
            if (!mine_too) found = true;
        }
    }
    free(mine);
    close(nl);
    return found;
}

/* A non-blocking listening socket with SO_REUSEPORT, so every thread has its
 * own accept queue and the kernel spreads connections over them. */
static int bind_listener(const char *addr, int port, bool shared, int *bound_port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_listen(addr, port, &ss, &sl) < 0) return ERR_INVALID;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("cannot create a socket", "addr=%s err=\"%s\"", addr, strerror(errno));
        return ERR_IO;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (shared) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 4096) != 0) {
        if (errno == EADDRINUSE) log_in_use(addr, port);
        else log_error("cannot listen", "addr=%s port=%d err=\"%s\"", addr, port, strerror(errno));
        close(fd);
        return ERR_IO;
    }
    if (bound_port) {
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        *bound_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fd;
}

/* Binds one listener per thread into s->threads[i].listen_fd, refusing a
 * port that another process listens on. */
static int bind_listeners(server *s, const srv_options *cfg)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int port = cfg->port;
    if (port == SRV_NO_LISTEN) { /* loops only (tests): nothing to bind */
        for (int i = 0; i < s->nthreads; i++) s->threads[i].listen_fd = -1;
        s->port = -1;
        return ERR_OK;
    }
    if (parse_listen(cfg->listen, port, &ss, &sl) < 0 || probe_port(cfg->listen, port, &ss, sl) < 0)
        return ERR_IO;
    for (int i = 0; i < s->nthreads; i++) {
        int fd = bind_listener(cfg->listen, port, true, i == 0 ? &port : NULL);
        if (fd < 0) {
            for (int j = 0; j < i; j++) close(s->threads[j].listen_fd);
            return ERR_IO;
        }
        s->threads[i].listen_fd = fd;
    }
    if (other_listener(&ss, port, s)) {
        log_in_use(cfg->listen, port);
        for (int j = 0; j < s->nthreads; j++) close(s->threads[j].listen_fd);
        return ERR_IO;
    }
    s->port = port;
    return ERR_OK;
}

/* A file the server must read at startup: false after logging why not. */
static bool readable(const char *what, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("cannot read file", "what=\"%s\" file=%s err=\"%s\"", what, path, strerror(errno));
        return false;
    }
    close(fd);
    return true;
}

/* ---- per-thread handles --------------------------------------------------- */

static void on_tick(uv_timer_t *h)
{
    srv_thread *t = h->data;
    wheel_tick(&t->wheel, conn_expire, t);
}

static void on_flush(uv_prepare_t *h)
{
    srv_thread *t = h->data;
    conn_flush_all(t);
}

static void thread_stop(srv_thread *t, void *arg)
{
    if (t->stopping) return;
    t->stopping = true;
    if (t->listen_fd >= 0 && !uv_is_closing((uv_handle_t *)&t->listener))
        uv_close((uv_handle_t *)&t->listener, NULL);
    if (t->has_internal && !uv_is_closing((uv_handle_t *)&t->internal))
        uv_close((uv_handle_t *)&t->internal, NULL);
    uint32_t pos = 0;
    for (conn *c; (c = srv_conn_next(t, &pos));) conn_shutdown(c);
    if (t->nconns == 0) srv_thread_idle(t);
}

static void thread_force(srv_thread *t, void *arg)
{
    thread_stop(t, NULL);
    uint32_t pos = 0;
    for (conn *c; (c = srv_conn_next(t, &pos));) conn_abort(c);
}

static void thread_main(void *arg)
{
    srv_thread *t = arg;
    uv_run(&t->loop, UV_RUN_DEFAULT);
    srv_thread_drain(t); /* posts that raced with the end */
    conn_free_nodes(t);
    srv_thread_free(t);
    u64map_free(&t->alog);
    if (t->srv->on_done) uv_async_send(t->srv->on_done);
}

static int thread_init(server *s, srv_thread *t, int id, int fd)
{
    t->srv = s;
    t->id = id;
    t->listen_fd = fd;
    if (srv_thread_init(t) < 0) {
        log_error("cannot create an event loop", "thread=%d err=\"%s\"", id, strerror(errno));
        return ERR_IO;
    }
    t->rbuf = malloc(SRV_READ_BUF);
    t->wbuf = malloc(SRV_WRITE_BUF);
    if (!t->rbuf || !t->wbuf) {
        log_error("cannot start an I/O thread", "thread=%d err=\"out of memory\"", id);
        return ERR_NOMEM;
    }
    wheel_init(&t->wheel, SRV_TICK_MS);
    if (fd >= 0) {
        uv_tcp_init(&t->loop, &t->listener);
        int rc = uv_tcp_open(&t->listener, fd);
        t->listener.data = t;
        if (rc == 0) rc = uv_listen((uv_stream_t *)&t->listener, 4096, conn_on_accept);
        if (rc != 0) {
            log_error("cannot listen", "thread=%d err=\"%s\"", id, uv_strerror(rc));
            return ERR_IO;
        }
    }
    uv_timer_init(&t->loop, &t->tick);
    t->tick.data = t;
    uv_timer_start(&t->tick, on_tick, SRV_TICK_MS, SRV_TICK_MS);
    uv_prepare_init(&t->loop, &t->flush);
    t->flush.data = t;
    uv_prepare_start(&t->flush, on_flush);
    return ERR_OK;
}

int server_create(server **out, const srv_options *opt, const conn_http_ops *http,
                  const conn_ws_ops *ws, uv_async_t *on_done)
{
    server *s = calloc(1, sizeof *s);
    if (!s) return ERR_NOMEM;
    s->opt = *opt;
    s->http = http;
    s->ws = ws;
    s->on_done = on_done;
    http_limits_default(&s->http_lim);
    s->http_lim.max_body = opt->max_body;
    s->http_lim.max_header_bytes = opt->max_header_bytes;
    ws_limits_default(&s->ws_lim);
    s->ws_lim.max_message = opt->max_message;
    if (opt->tls_cert[0] || opt->tls_key[0]) {
        if (!opt->tls_cert[0] || !opt->tls_key[0]) {
            log_error("TLS needs both --tls-cert and --tls-key", NULL);
            free(s);
            return ERR_INVALID;
        }
        if (!readable("TLS certificate", opt->tls_cert) || !readable("TLS key", opt->tls_key) ||
            tls_ctx_new(&s->tls, opt->tls_cert, opt->tls_key) < 0) {
            free(s);
            return ERR_INVALID;
        }
    }
    s->nthreads = opt->threads;
    s->threads = calloc((size_t)s->nthreads, sizeof *s->threads);
    if (!s->threads) { free(s); return ERR_NOMEM; }
    if (bind_listeners(s, opt) < 0) {
        free(s->threads);
        free(s);
        return ERR_IO;
    }
    for (int i = 0; i < s->nthreads; i++) {
        srv_thread *t = &s->threads[i];
        if (thread_init(s, t, i, t->listen_fd) < 0)
            exit(1); /* at startup only, after logging why: nothing to lose */
    }
    *out = s;
    return ERR_OK;
}

int server_listen_internal(server *s, const char *addr, int port, const conn_http_ops *http)
{
    srv_thread *t = &s->threads[0];
    if (t->has_internal) return ERR_INVALID;
    int fd = bind_listener(addr, port, false, &s->internal_port);
    if (fd < 0) return fd;
    /* Thread 0 has not started: its loop is still ours to set up. */
    uv_tcp_init(&t->loop, &t->internal);
    int rc = uv_tcp_open(&t->internal, fd);
    t->internal.data = t;
    if (rc == 0) rc = uv_listen((uv_stream_t *)&t->internal, 128, conn_on_accept);
    if (rc != 0) {
        log_error("cannot listen", "addr=%s port=%d err=\"%s\"", addr, port, uv_strerror(rc));
        uv_close((uv_handle_t *)&t->internal, NULL);
        return ERR_IO;
    }
    t->has_internal = true;
    s->internal_http = http;
    return ERR_OK;
}

void server_run(server *s)
{
    for (int i = 0; i < s->nthreads; i++)
        uv_thread_create(&s->threads[i].tid, thread_main, &s->threads[i]);
}

void server_stop(server *s)
{
    for (int i = 0; i < s->nthreads; i++) srv_post(&s->threads[i], thread_stop, NULL);
}

void server_force(server *s)
{
    for (int i = 0; i < s->nthreads; i++) srv_post(&s->threads[i], thread_force, NULL);
}

void server_wait(server *s)
{
    for (int i = 0; i < s->nthreads; i++) {
        srv_thread *t = &s->threads[i];
        uv_thread_join(&t->tid);
        uv_loop_close(&t->loop);
        free(t->rbuf);
        free(t->wbuf);
    }
}

void server_free(server *s)
{
    tls_ctx_free(s->tls);
    for (int i = 0; i < s->nthreads; i++) uv_mutex_destroy(&s->threads[i].mu);
    free(s->threads);
    free(s);
}
