/* wsbench: transport benchmarks against a running parleyd.
 *
 *   wsbench idle  --port P --pid PID [--conns 15000] [--sources 8]
 *       Opens N WebSocket connections from 127.0.0.2..(1+sources), keeps
 *       them idle, and reports the server's RSS growth per connection over
 *       the second half of the ramp (so start-up allocations do not count).
 *   wsbench echo  --port P --pid PID [--conns 100] [--seconds 10] [--size 200]
 *       Each connection sends a SIZE-byte text message {"type":"echo",...}
 *       and waits for it to come back, in a loop. Reports echoes per second,
 *       round-trip percentiles and server CPU microseconds per echo (from
 *       /proc/PID/stat).
 *
 * Output: a table on stdout and one JSON object line (prefix "json: ").
 * Every loop is bounded in count and time.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ws.h"

typedef struct client {
    int fd;
    int state; /* 0 connecting, 1 handshake sent, 2 open */
    uint8_t in[4096];
    size_t in_len;
    double sent_at;
} client;

static int port = 8080, pid = 0, nconns = 0, seconds = 10, size = 200, sources = 8;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(void)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static double cpu_s(void)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int open_conn(int i)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % sources));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { close(fd); return -1; }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_handshake(client *c)
{
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n");
    if (write(c->fd, req, (size_t)n) != n) c->state = -1;
    else c->state = 1;
}

/* Reads the 101 response; returns 1 when open, 0 for more, -1 on error. */
static int read_handshake(client *c)
{
    ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len - 1);
    if (r <= 0) return r == 0 || errno != EAGAIN ? -1 : 0;
    c->in_len += (size_t)r;
    c->in[c->in_len] = 0;
    char *end = strstr((char *)c->in, "\r\n\r\n");
    if (!end) return 0;
    if (strncmp((char *)c->in, "HTTP/1.1 101", 12) != 0) return -1;
    size_t used = (size_t)(end + 4 - (char *)c->in);
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    c->state = 2;
    return 1;
}

static uint8_t *echo_frame;
static size_t echo_len;

static void build_echo(void)
{
    char *payload = malloc((size_t)size + 1);
    int n = snprintf(payload, (size_t)size + 1, "{\"type\":\"echo\",\"d\":\"");
    while (n < size - 2) payload[n++] = 'x';
    payload[n++] = '"';
    payload[n++] = '}';
    echo_frame = malloc(WS_MAX_HEADER + (size_t)n);
    uint8_t key[4] = {1, 2, 3, 4};
    size_t h = ws_frame_header(echo_frame, WS_OP_TEXT, true, (uint64_t)n, key);
    memcpy(echo_frame + h, payload, (size_t)n);
    ws_mask(echo_frame + h, (size_t)n, key, 0);
    echo_len = h + (size_t)n;
    free(payload);
}

/* Opens every connection and completes its handshake. Returns how many. */
static int connect_all(client *cs, int n, int ep, int report_every, long *rss_mid, int *mid_at)
{
    int open = 0, pending = 0, next = 0;
    double deadline = now_s() + 120;
    struct epoll_event evs[256];
    while (open < n && now_s() < deadline) {
        while (next < n && pending < 512) {
            int fd = open_conn(next);
            if (fd < 0) { fprintf(stderr, "connect %d: %s\n", next, strerror(errno)); return open; }
            cs[next].fd = fd;
            cs[next].state = 0;
            struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = (uint32_t)next};
            epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
            next++;
            pending++;
        }
        int k = epoll_wait(ep, evs, 256, 1000);
        for (int i = 0; i < k; i++) {
            client *c = &cs[evs[i].data.u32];
            if (c->state == 0 && (evs[i].events & EPOLLOUT)) {
                send_handshake(c);
                struct epoll_event ev = {.events = EPOLLIN, .data.u32 = evs[i].data.u32};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            } else if (c->state == 1 && (evs[i].events & EPOLLIN)) {
                int r = read_handshake(c);
                if (r < 0) { fprintf(stderr, "handshake failed\n"); return open; }
                if (r == 1) {
                    open++;
                    pending--;
                    if (rss_mid && open == n / 2) { *rss_mid = rss_kb(); *mid_at = open; }
                    if (report_every && open % report_every == 0)
                        fprintf(stderr, "  %d open, server rss %ld KiB\n", open, rss_kb());
                }
            }
        }
    }
    return open;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_idle(void)
{
    if (!nconns) nconns = 15000;
    client *cs = calloc((size_t)nconns, sizeof *cs);
    int ep = epoll_create1(0);
    long rss0 = rss_kb(), rss_mid = 0;
    int mid_at = 0;
    double t0 = now_s();
    int open = connect_all(cs, nconns, ep, 2500, &rss_mid, &mid_at);
    double dt = now_s() - t0;
    sleep(2); /* let the server settle */
    long rss1 = rss_kb();
    double per = mid_at && open > mid_at ? (double)(rss1 - rss_mid) * 1024.0 / (open - mid_at) : 0;
    double per_all = open ? (double)(rss1 - rss0) * 1024.0 / open : 0;
    printf("idle: %d connections open in %.2f s (%.0f handshakes/s)\n", open, dt, open / dt);
    printf("  server RSS: %ld KiB before, %ld KiB at %d, %ld KiB at %d\n", rss0, rss_mid, mid_at,
           rss1, open);
    printf("  user-space bytes per idle connection: %.0f (second half of ramp), %.0f (whole ramp)\n",
           per, per_all);
    printf("json: {\"scenario\":\"idle\",\"conns\":%d,\"handshakes_per_s\":%.0f,"
           "\"rss_kib_before\":%ld,\"rss_kib_after\":%ld,\"bytes_per_conn\":%.0f,"
           "\"bytes_per_conn_whole_ramp\":%.0f}\n",
           open, open / dt, rss0, rss1, per, per_all);
    for (int i = 0; i < nconns; i++) if (cs[i].fd > 0) close(cs[i].fd);
    free(cs);
    close(ep);
    return open == nconns ? 0 : 1;
}

static int run_echo(void)
{
    if (!nconns) nconns = 100;
    build_echo();
    client *cs = calloc((size_t)nconns, sizeof *cs);
    int ep = epoll_create1(0);
    int open = connect_all(cs, nconns, ep, 0, NULL, NULL);
    if (open < nconns) return 1;
    size_t max_samples = 4000000;
    double *lat = malloc(max_samples * sizeof *lat);
    size_t nlat = 0;
    long echoes = 0;
    double cpu0 = cpu_s(), t0 = now_s(), end = t0 + seconds;
    for (int i = 0; i < nconns; i++) {
        cs[i].sent_at = now_s();
        if (write(cs[i].fd, echo_frame, echo_len) != (ssize_t)echo_len) return 1;
    }
    struct epoll_event evs[256];
    while (now_s() < end) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            client *c = &cs[evs[i].data.u32];
            ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
            if (r <= 0) { if (r < 0 && errno == EAGAIN) continue; fprintf(stderr, "closed\n"); return 1; }
            c->in_len += (size_t)r;
            size_t off = 0;
            for (;;) {
                ws_frame f;
                uint16_t code;
                ws_limits lim = {.max_message = 1 << 20};
                int n = ws_parse_frame(c->in + off, c->in_len - off, WS_CLIENT, &lim, &f, &code);
                if (n == ERR_AGAIN) break;
                if (n < 0) { fprintf(stderr, "bad frame\n"); return 1; }
                off += (size_t)n;
                if (f.opcode != WS_OP_TEXT) continue;
                double t = now_s();
                if (nlat < max_samples) lat[nlat++] = t - c->sent_at;
                echoes++;
                c->sent_at = t;
                if (write(c->fd, echo_frame, echo_len) != (ssize_t)echo_len) return 1;
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
        }
    }
    double dt = now_s() - t0, cpu = cpu_s() - cpu0;
    qsort(lat, nlat, sizeof *lat, cmp_double);
#define PCT(p) (nlat ? lat[(size_t)((p) * (double)(nlat - 1))] * 1e6 : 0)
    printf("echo: %d connections, %d-byte messages, %.1f s\n", nconns, size, dt);
    printf("  %.0f echoes/s; round trip p50 %.0f us, p99 %.0f us, max %.0f us\n", echoes / dt,
           PCT(0.5), PCT(0.99), PCT(1.0));
    printf("  server CPU: %.2f s = %.2f us per echo\n", cpu, cpu * 1e6 / (double)echoes);
    printf("json: {\"scenario\":\"echo\",\"conns\":%d,\"size\":%d,\"seconds\":%.1f,"
           "\"echoes_per_s\":%.0f,\"rtt_p50_us\":%.0f,\"rtt_p99_us\":%.0f,"
           "\"server_cpu_us_per_echo\":%.2f}\n",
           nconns, size, dt, echoes / dt, PCT(0.5), PCT(0.99), cpu * 1e6 / (double)echoes);
    for (int i = 0; i < nconns; i++) close(cs[i].fd);
    free(cs);
    free(lat);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: wsbench idle|echo --port P --pid PID [--conns N] [--seconds S] "
                        "[--size B] [--sources K]\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        int v = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--port")) port = v;
        else if (!strcmp(argv[i], "--pid")) pid = v;
        else if (!strcmp(argv[i], "--conns")) nconns = v;
        else if (!strcmp(argv[i], "--seconds")) seconds = v;
        else if (!strcmp(argv[i], "--size")) size = v < 32 ? 32 : v;
        else if (!strcmp(argv[i], "--sources")) sources = v < 1 ? 1 : v;
        else { fprintf(stderr, "unknown flag %s\n", argv[i]); return 2; }
    }
    if (!pid) { fprintf(stderr, "--pid is required\n"); return 2; }
    if (!strcmp(argv[1], "idle")) return run_idle();
    if (!strcmp(argv[1], "echo")) return run_echo();
    fprintf(stderr, "unknown scenario %s\n", argv[1]);
    return 2;
}
