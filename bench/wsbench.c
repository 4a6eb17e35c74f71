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
 *   wsbench chat  --port P --pid PID [--pairs 50] [--seconds 10] [--window 16]
 *                 [--rate R]
 *       Registers 2 x pairs users (start the server with --insecure-fast-kdf),
 *       one direct conversation per pair; one side of each pair sends, the
 *       other receives. Flat out (each sender keeps `window` messages
 *       unacknowledged) or at a total of R messages/s. Reports durable
 *       messages/s, send->ack and send->delivery percentiles and server CPU
 *       per message.
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

#include "json.h"
#include "ws.h"

typedef struct client {
    int fd;
    const char *token;     /* NULL: default_token */
    int state; /* 0 connecting, 1 handshake sent, 2 open */
    uint8_t in[4096];
    size_t in_len;
    double sent_at;
} client;

static int port = 8080, pid = 0, nconns = 0, seconds = 10, size = 200, sources = 8;
static int pairs_n = 50, window_n = 16;
static double rate_v = 0;

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

static char default_token[64];

static void send_handshake(client *c)
{
    char req[512];
    int n = snprintf(req, sizeof req,
                     "GET /v1/ws?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     c->token ? c->token : default_token);
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


/* ---- provisioning over REST (blocking) ---------------------------------- */

/* POSTs body to path; returns the HTTP status and copies the response body
 * into out (NUL-terminated). */
static int http_post(const char *path, const char *auth, const char *body, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    if (fd < 0 || connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n%s%s%s\r\n%s",
                     path, strlen(body), auth ? "Authorization: Bearer " : "", auth ? auth : "",
                     auth ? "\r\n" : "", body);
    if (write(fd, req, (size_t)n) != n) { close(fd); return -1; }
    char resp[8192];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof resp - 1 && (r = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    resp[got] = 0;
    int status = 0;
    sscanf(resp, "HTTP/1.1 %d", &status);
    char *b = strstr(resp, "\r\n\r\n");
    snprintf(out, cap, "%s", b ? b + 4 : "");
    return status;
}

/* Copies the string value of "key" from a flat JSON object into out. */
static int json_field_str(const char *js, const char *key, char *out, size_t cap)
{
    json_obj o;
    if (json_parse_object(js, strlen(js), &o) < 0) return -1;
    return json_get_str(&o, key, out, cap) < 0 ? -1 : 0;
}

/* Registers user `name`; its token goes into token (64 bytes). */
static int register_user(const char *name, char *token)
{
    char body[256], resp[1024];
    snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"bench-password\"}", name);
    int st = http_post("/v1/users", NULL, body, resp, sizeof resp);
    if (st != 201 || json_field_str(resp, "token", token, 64) < 0) {
        fprintf(stderr, "register %s: %d %s\n", name, st, resp);
        return -1;
    }
    return 0;
}

static unsigned run_id(void)
{
    return (unsigned)(getpid() ^ (unsigned)time(NULL)) & 0xffffff;
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
                if (f.opcode != WS_OP_TEXT || f.len < 14 ||
                    memcmp(f.payload, "{\"type\":\"echo\"", 14) != 0)
                    continue; /* hello, presence */
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


/* ---- chat scenario --------------------------------------------------------- */

#define RING 65536

typedef struct pair {
    uint64_t conv;
    char token_a[64], token_b[64];
    double sent[RING];      /* send time by message number % RING */
    uint64_t next, acked;   /* messages sent / acknowledged */
} pair;

static double *ack_lat, *dlv_lat;
static size_t n_ack, n_dlv, max_lat = 4000000;

static int send_chat(client *c, pair *p, int idx)
{
    char payload[160];
    double t = now_s();
    uint64_t k = p->next++;
    p->sent[k % RING] = t;
    int n = snprintf(payload, sizeof payload,
                     "{\"type\":\"send\",\"conv\":%llu,\"cmid\":\"%d-%llu\",\"body\":%.9f}",
                     (unsigned long long)p->conv, idx, (unsigned long long)k, t);
    uint8_t frame[WS_MAX_HEADER + 160];
    uint8_t key[4] = {9, 8, 7, 6};
    size_t h = ws_frame_header(frame, WS_OP_TEXT, true, (uint64_t)n, key);
    memcpy(frame + h, payload, (size_t)n);
    ws_mask(frame + h, (size_t)n, key, 0);
    return write(c->fd, frame, h + (size_t)n) == (ssize_t)(h + (size_t)n) ? 0 : -1;
}

/* Handles one frame for connection i (even: sender of pair i/2). */
static void on_chat_frame(client *cs, pair *pairs, int i, const char *js, size_t len, long *delivered)
{
    json_obj o;
    if (json_parse_object(js, len, &o) < 0) return;
    const json_field *type = json_get(&o, "type");
    if (!type) return;
    double t = now_s();
    if (type->val_len == 5 && memcmp(type->val, "\"ack\"", 5) == 0) {
        char cmid[64];
        if (json_get_str(&o, "cmid", cmid, sizeof cmid) < 0) return;
        const char *dash = strchr(cmid, '-');
        uint64_t k = dash ? strtoull(dash + 1, NULL, 10) : 0;
        pair *p = &pairs[i / 2];
        if (n_ack < max_lat) ack_lat[n_ack++] = t - p->sent[k % RING];
        p->acked++;
    } else if (type->val_len == 5 && memcmp(type->val, "\"msg\"", 5) == 0) {
        const json_field *body = json_get(&o, "body");
        if (!body) return;
        double sent = strtod(body->val, NULL);
        if (n_dlv < max_lat) dlv_lat[n_dlv++] = t - sent;
        (*delivered)++;
    }
    (void)cs;
}

static int run_chat(int npairs, double rate, int window)
{
    unsigned id = run_id();
    pair *pairs = calloc((size_t)npairs, sizeof *pairs);
    client *cs = calloc((size_t)npairs * 2, sizeof *cs);
    ack_lat = malloc(max_lat * sizeof *ack_lat);
    dlv_lat = malloc(max_lat * sizeof *dlv_lat);
    double t0 = now_s();
    for (int i = 0; i < npairs; i++) {
        char a[40], b[40], body[128], resp[2048];
        snprintf(a, sizeof a, "ba%x-%d", id, i);
        snprintf(b, sizeof b, "bb%x-%d", id, i);
        if (register_user(a, pairs[i].token_a) < 0 || register_user(b, pairs[i].token_b) < 0) return 1;
        snprintf(body, sizeof body, "{\"type\":\"direct\",\"with\":\"%s\"}", b);
        if (http_post("/v1/conversations", pairs[i].token_a, body, resp, sizeof resp) != 201) {
            fprintf(stderr, "conversation: %s\n", resp);
            return 1;
        }
        json_obj o;
        if (json_parse_object(resp, strlen(resp), &o) < 0 || json_get_u64(&o, "id", &pairs[i].conv) < 0)
            return 1;
        cs[2 * i].token = pairs[i].token_a;
        cs[2 * i + 1].token = pairs[i].token_b;
    }
    double prov = now_s() - t0;
    int ep = epoll_create1(0);
    int nconn = npairs * 2;
    if (connect_all(cs, nconn, ep, 0, NULL, NULL) < nconn) return 1;
    long delivered = 0;
    double cpu0 = cpu_s(), start = now_s(), end = start + seconds;
    if (rate <= 0)
        for (int i = 0; i < npairs; i++)
            for (int w = 0; w < window; w++) send_chat(&cs[2 * i], &pairs[i], 2 * i);
    double next_send = start;
    uint64_t sent_total = 0;
    struct epoll_event evs[256];
    static uint8_t buf[1 << 16];
    while (now_s() < end) {
        if (rate > 0) {
            /* Paced: spread sends over the pairs, catching up if behind. */
            double now = now_s();
            while (next_send <= now && now < end) {
                int i = (int)(sent_total % (uint64_t)npairs);
                send_chat(&cs[2 * i], &pairs[i], 2 * i);
                sent_total++;
                next_send += 1.0 / rate;
            }
        }
        int timeout = rate > 0 ? 1 : 100;
        int k = epoll_wait(ep, evs, 256, timeout);
        for (int e = 0; e < k; e++) {
            int i = (int)evs[e].data.u32;
            client *c = &cs[i];
            ssize_t r = read(c->fd, buf, sizeof buf);
            if (r <= 0) continue;
            /* Frames may straddle reads: keep the tail in c->in. */
            size_t have = c->in_len + (size_t)r;
            uint8_t *data = buf;
            if (c->in_len) {
                if (have > sizeof c->in) { fprintf(stderr, "frame too large\n"); return 1; }
                memcpy(c->in + c->in_len, buf, (size_t)r);
                data = c->in;
            }
            size_t off = 0;
            for (;;) {
                ws_frame f;
                uint16_t code;
                ws_limits lim = {.max_message = 1 << 20};
                int n = ws_parse_frame(data + off, have - off, WS_CLIENT, &lim, &f, &code);
                if (n == ERR_AGAIN) break;
                if (n < 0) { fprintf(stderr, "bad frame\n"); return 1; }
                off += (size_t)n;
                if (f.opcode != WS_OP_TEXT) continue;
                uint64_t before = pairs[i / 2].acked;
                on_chat_frame(cs, pairs, i, (const char *)f.payload, f.len, &delivered);
                if (rate <= 0 && i % 2 == 0 && pairs[i / 2].acked > before)
                    send_chat(c, &pairs[i / 2], i); /* keep the window full */
            }
            size_t tail = have - off;
            if (tail > sizeof c->in) { fprintf(stderr, "frame too large\n"); return 1; }
            memmove(c->in, data + off, tail);
            c->in_len = tail;
        }
    }
    double dt = now_s() - start, cpu = cpu_s() - cpu0;
    uint64_t acked = 0;
    for (int i = 0; i < npairs; i++) acked += pairs[i].acked;
    qsort(ack_lat, n_ack, sizeof *ack_lat, cmp_double);
    qsort(dlv_lat, n_dlv, sizeof *dlv_lat, cmp_double);
#define P(a, n, q) ((n) ? (a)[(size_t)((q) * (double)((n) - 1))] * 1e6 : 0)
    printf("chat: %d pairs, %s, %.1f s (provisioning %.1f s)\n", npairs,
           rate > 0 ? "paced" : "flat out", dt, prov);
    if (rate > 0) printf("  target %.0f msg/s\n", rate);
    else printf("  window %d per sender\n", window);
    printf("  %.0f durable messages/s acknowledged, %.0f deliveries/s\n", acked / dt, delivered / dt);
    printf("  send->ack      p50 %.0f us  p90 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us\n",
           P(ack_lat, n_ack, 0.5), P(ack_lat, n_ack, 0.9), P(ack_lat, n_ack, 0.99),
           P(ack_lat, n_ack, 0.999), P(ack_lat, n_ack, 1.0));
    printf("  send->delivery p50 %.0f us  p90 %.0f us  p99 %.0f us  p99.9 %.0f us  max %.0f us\n",
           P(dlv_lat, n_dlv, 0.5), P(dlv_lat, n_dlv, 0.9), P(dlv_lat, n_dlv, 0.99),
           P(dlv_lat, n_dlv, 0.999), P(dlv_lat, n_dlv, 1.0));
    printf("  server CPU %.2f s = %.2f us per message\n", cpu, acked ? cpu * 1e6 / (double)acked : 0);
    printf("json: {\"scenario\":\"chat\",\"pairs\":%d,\"mode\":\"%s\",\"rate\":%.0f,\"window\":%d,"
           "\"seconds\":%.1f,\"msgs_per_s\":%.0f,\"deliveries_per_s\":%.0f,"
           "\"ack_p50_us\":%.0f,\"ack_p99_us\":%.0f,\"delivery_p50_us\":%.0f,"
           "\"delivery_p99_us\":%.0f,\"delivery_p999_us\":%.0f,\"server_cpu_us_per_msg\":%.2f}\n",
           npairs, rate > 0 ? "paced" : "flat", rate, window, dt, acked / dt, delivered / dt,
           P(ack_lat, n_ack, 0.5), P(ack_lat, n_ack, 0.99), P(dlv_lat, n_dlv, 0.5),
           P(dlv_lat, n_dlv, 0.99), P(dlv_lat, n_dlv, 0.999),
           acked ? cpu * 1e6 / (double)acked : 0);
    for (int i = 0; i < nconn; i++) close(cs[i].fd);
    close(ep);
    free(cs);
    free(pairs);
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
        else if (!strcmp(argv[i], "--pairs")) pairs_n = v < 1 ? 1 : v;
        else if (!strcmp(argv[i], "--window")) window_n = v < 1 ? 1 : v;
        else if (!strcmp(argv[i], "--rate")) rate_v = atof(argv[i + 1]);
        else { fprintf(stderr, "unknown flag %s\n", argv[i]); return 2; }
    }
    if (!pid) { fprintf(stderr, "--pid is required\n"); return 2; }
    if (strcmp(argv[1], "chat") != 0) {
        char name[40];
        snprintf(name, sizeof name, "bench%x", run_id());
        if (register_user(name, default_token) < 0) return 1;
    }
    if (!strcmp(argv[1], "chat")) return run_chat(pairs_n, rate_v, window_n);
    if (!strcmp(argv[1], "idle")) return run_idle();
    if (!strcmp(argv[1], "echo")) return run_echo();
    fprintf(stderr, "unknown scenario %s\n", argv[1]);
    return 2;
}
