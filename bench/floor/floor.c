/* floor: the reference parley-bench measures parleyd against.
 *
 *   floor [--port N] [--listen ADDR] [--max-seconds S]
 *
 * A minimal WebSocket server on one epoll loop (one thread), doing the least
 * any WebSocket chat server must do per message: accept, upgrade (RFC 6455
 * handshake), parse and unmask client frames (src/ws.h), and write frames
 * out. No authentication, no storage, no JSON. It is not part of parleyd.
 *
 *   /v1/ws            every text message is echoed to the sender
 *   /v1/ws?pair=N     the two connections that ask for the same N are linked:
 *                     every text message goes back to the sender (its "ack")
 *                     and to the partner (its "delivery"): the shape of
 *                     parley-bench's direct scenario without the store
 *
 * Per connection it keeps a 56-byte record; a buffer exists only while a
 * handshake or a partial frame is pending, or output waits for the kernel
 * (the same "zero buffers while idle" rule as parleyd). Output produced while
 * handling one batch of events is written once per connection after the
 * batch. Every loop is bounded: --max-seconds (default 3600), SIGTERM/SIGINT.
 *
 * It prints "floor listening on ADDR:PORT" once ready.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "codec/ws.h"

enum { HS = 0, OPEN = 1 };

typedef struct fconn {
    int fd;
    int partner;          /* fd, or -1 */
    uint8_t state;
    uint8_t dirty;
    uint8_t want_out;
    uint8_t closing;
    uint64_t pair_key;    /* ?pair=N + 1, or 0 */
    uint32_t in_len, in_cap, out_len, out_cap;
    uint8_t *in, *out;    /* NULL while idle */
} fconn;

static fconn **conns;     /* by fd */
static int max_fd;
static int ep;
static int *dirty, ndirty;
static uint8_t rbuf[262144];
static volatile sig_atomic_t stop;
static ws_limits lim = {.max_message = 1u << 20};

/* pair id -> waiting fd, open addressing */
#define PAIR_SLOTS (1u << 17)
static struct { uint64_t key; int fd; } pairs[PAIR_SLOTS];

static uint32_t pair_hash(uint64_t key)
{
    return (uint32_t)(key * 0x9E3779B97F4A7C15ULL >> 47) & (PAIR_SLOTS - 1);
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void conn_close(fconn *c)
{
    if (c->partner >= 0 && conns[c->partner]) conns[c->partner]->partner = -1;
    else if (c->pair_key) {
        /* still waiting for its partner: leave a tombstone (key kept, fd 0) */
        uint32_t h = pair_hash(c->pair_key);
        for (uint32_t i = 0; i < PAIR_SLOTS && (pairs[h].fd || pairs[h].key); i++, h = (h + 1) & (PAIR_SLOTS - 1))
            if (pairs[h].fd == c->fd + 1 && pairs[h].key == c->pair_key) { pairs[h].fd = 0; break; }
    }
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    free(c->in);
    free(c->out);
    free(c);
}

static int out_append(fconn *c, const void *p, size_t n)
{
    if (c->out_len + n > (64u << 20)) return -1;
    if (c->out_cap < c->out_len + n) {
        uint32_t cap = (uint32_t)((c->out_len + n) * 2 + 256);
        uint8_t *o = realloc(c->out, cap);
        if (!o) return -1;
        c->out = o;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    if (!c->dirty) {
        c->dirty = 1;
        dirty[ndirty++] = c->fd;
    }
    return 0;
}

static int frame_out(fconn *c, uint8_t op, const uint8_t *payload, size_t n)
{
    uint8_t h[WS_MAX_HEADER];
    size_t hl = ws_frame_header(h, op, true, n, NULL);
    return out_append(c, h, hl) < 0 || out_append(c, payload, n) < 0 ? -1 : 0;
}

static void flush(fconn *c)
{
    c->dirty = 0;
    while (c->out_len) {
        ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (w < 0 && errno == EAGAIN) break;
        if (w <= 0) { conn_close(c); return; }
        memmove(c->out, c->out + w, c->out_len - (size_t)w);
        c->out_len -= (uint32_t)w;
    }
    uint8_t want = c->out_len > 0;
    if (want != c->want_out) {
        c->want_out = want;
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.fd = c->fd};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    if (!c->out_len && c->out_cap > 65536) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (!c->out_len && c->closing) conn_close(c);
}

static void link_pair(fconn *c, uint64_t key)
{
    uint32_t h = pair_hash(key);
    c->pair_key = key;
    for (uint32_t i = 0; i < PAIR_SLOTS; i++, h = (h + 1) & (PAIR_SLOTS - 1)) {
        if (pairs[h].fd && pairs[h].key == key) {
            int other = pairs[h].fd - 1;
            pairs[h].fd = 0; /* tombstone: key stays, fd 0 */
            if (conns[other] && conns[other]->partner < 0) {
                conns[other]->partner = c->fd;
                c->partner = other;
                return;
            }
        }
        if (!pairs[h].fd && !pairs[h].key) {
            pairs[h].key = key;
            pairs[h].fd = c->fd + 1;
            return;
        }
    }
}

/* The upgrade request is complete in c->in[0..end). Returns 0 or -1. */
static int handshake(fconn *c, size_t end)
{
    char *req = (char *)c->in;
    req[end - 1] = 0;
    char *key = NULL;
    for (char *line = strstr(req, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Sec-WebSocket-Key:", 18) == 0) {
            key = line + 20;
            while (*key == ' ') key++;
            break;
        }
    }
    if (!key || strncmp(req, "GET ", 4) != 0) return -1;
    size_t klen = strcspn(key, "\r\n ");
    char accept[29];
    if (ws_accept_key(key, klen, accept) < 0) return -1;
    char *sp = strchr(req + 4, ' ');
    char *pair = strstr(req + 4, "pair=");
    if (pair && sp && pair < sp) link_pair(c, strtoull(pair + 5, NULL, 10) + 1);
    char resp[256];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    if (send(c->fd, resp, (size_t)n, MSG_NOSIGNAL) != n) return -1;
    c->state = OPEN;
    return 0;
}

/* Parses frames in data[0..len); keeps a partial frame in c->in. */
static void frames(fconn *c, uint8_t *data, size_t len, int data_is_in)
{
    size_t off = 0;
    int fd = c->fd;
    while (off < len) {
        ws_frame f;
        uint16_t code;
        int n = ws_parse_frame(data + off, len - off, WS_SERVER, &lim, &f, &code);
        if (n == ERR_AGAIN) break;
        if (n < 0) { conn_close(c); return; }
        off += (size_t)n;
        if (f.opcode == WS_OP_TEXT || f.opcode == WS_OP_BINARY) {
            if (frame_out(c, f.opcode, f.payload, f.len) < 0) { conn_close(c); return; }
            if (c->partner >= 0 && conns[c->partner])
                frame_out(conns[c->partner], f.opcode, f.payload, f.len);
        } else if (f.opcode == WS_OP_PING) {
            frame_out(c, WS_OP_PONG, f.payload, f.len);
        } else if (f.opcode == WS_OP_CLOSE) {
            frame_out(c, WS_OP_CLOSE, f.payload, f.len < 2 ? 0 : 2);
            c->closing = 1;
            break;
        }
    }
    if (!conns[fd]) return;
    size_t tail = len - off;
    if (!tail) {
        free(c->in);
        c->in = NULL;
        c->in_len = c->in_cap = 0;
        return;
    }
    if (data_is_in) {
        memmove(c->in, c->in + off, tail);
    } else {
        if (c->in_cap < tail) {
            uint8_t *p = realloc(c->in, tail * 2);
            if (!p) { conn_close(c); return; }
            c->in = p;
            c->in_cap = (uint32_t)(tail * 2);
        }
        memcpy(c->in, data + off, tail);
    }
    c->in_len = (uint32_t)tail;
}

static void on_read(fconn *c)
{
    ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) { conn_close(c); return; }
    if (c->state == HS || c->in_len) {
        if (c->in_len + (size_t)r > (2u << 20)) { conn_close(c); return; }
        if (c->in_cap < c->in_len + (size_t)r + 1) {
            uint32_t cap = (uint32_t)(c->in_len + (size_t)r + 1) * 2;
            uint8_t *p = realloc(c->in, cap);
            if (!p) { conn_close(c); return; }
            c->in = p;
            c->in_cap = cap;
        }
        memcpy(c->in + c->in_len, rbuf, (size_t)r);
        c->in_len += (uint32_t)r;
        if (c->state == HS) {
            c->in[c->in_len] = 0;
            char *e = strstr((char *)c->in, "\r\n\r\n");
            if (!e) {
                if (c->in_len > 16384) conn_close(c);
                return;
            }
            size_t end = (size_t)(e + 4 - (char *)c->in);
            if (handshake(c, end) < 0) { conn_close(c); return; }
            memmove(c->in, c->in + end, c->in_len - end);
            c->in_len -= (uint32_t)end;
        }
        frames(c, c->in, c->in_len, 1);
    } else {
        frames(c, rbuf, (size_t)r, 0);
    }
}

int main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1";
    int port = 0, max_seconds = 3600;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--listen")) listen_addr = argv[i + 1];
        else if (!strcmp(argv[i], "--max-seconds")) max_seconds = atoi(argv[i + 1]);
        else { fprintf(stderr, "usage: floor [--port N] [--listen ADDR] [--max-seconds S]\n"); return 2; }
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    max_fd = (int)(rl.rlim_cur > 1048576 ? 1048576 : rl.rlim_cur);
    conns = calloc((size_t)max_fd, sizeof *conns);
    dirty = calloc((size_t)max_fd, sizeof *dirty);
    if (!conns || !dirty) return 1;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, listen_addr, &a.sin_addr) != 1 || bind(ls, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(ls, 4096) != 0) {
        perror("floor: listen");
        return 1;
    }
    socklen_t al = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &al);
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = ls};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
    printf("floor listening on %s:%d\n", listen_addr, ntohs(a.sin_port));
    fflush(stdout);
    time_t end = time(NULL) + max_seconds;
    struct epoll_event evs[512];
    while (!stop && time(NULL) < end) {
        int k = epoll_wait(ep, evs, 512, 500);
        for (int e = 0; e < k; e++) {
            int fd = evs[e].data.fd;
            if (fd == ls) {
                for (int i = 0; i < 512; i++) {
                    int cfd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) break;
                    if (cfd >= max_fd) { close(cfd); continue; }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    fconn *c = calloc(1, sizeof *c);
                    if (!c) { close(cfd); continue; }
                    c->fd = cfd;
                    c->partner = -1;
                    conns[cfd] = c;
                    struct epoll_event ev = {.events = EPOLLIN, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                }
                continue;
            }
            fconn *c = conns[fd];
            if (!c) continue;
            if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_read(c);
            if (conns[fd] && (evs[e].events & EPOLLOUT) && !conns[fd]->dirty) {
                conns[fd]->dirty = 1;
                dirty[ndirty++] = fd;
            }
        }
        for (int i = 0; i < ndirty; i++) {
            fconn *c = conns[dirty[i]];
            if (c && c->dirty) flush(c);
        }
        ndirty = 0;
    }
    for (int fd = 0; fd < max_fd; fd++)
        if (conns[fd]) conn_close(conns[fd]);
    close(ls);
    return 0;
}
