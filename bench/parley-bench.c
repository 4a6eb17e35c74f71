/* parley-bench: the load generator and benchmark suite of parley.
 *
 *   parley-bench SCENARIO --port P [--pid PID] [flags]
 *   parley-bench summary --out FILE RUN.json...   (the targets of issue 5)
 *   parley-bench fsync --dir DIR
 *
 * A parent process forks --workers worker processes (the open-file limit is
 * per process), each with its own epoll loop and its share of the
 * connections, bound to source addresses 127.0.0.2 .. 127.0.0.(1+sources)
 * (bind before connect) so no single address runs out of ports. Workers
 * provision their own users and conversations over REST, in parallel
 * (pipelined keep-alive connections; start parleyd with --insecure-fast-kdf
 * so each registration costs the minimum Argon2id). The parent steps the
 * workers through the phases (provision, connect, run, stop) over pipes,
 * samples the server (/proc/PID/stat CPU, /proc/PID/status RSS,
 * /proc/meminfo Slab) and merges the workers' counters and log-linear
 * latency histograms from shared memory.
 *
 * Scenarios (defaults in brackets):
 *   idle     --conns N [15000]: N authenticated idle WebSockets, opened in two
 *            halves; server user-space bytes per connection from the RssAnon
 *            (and VmRSS) delta over the second half, kernel bytes per
 *            connection from the Slab delta (both ends of each loopback
 *            connection), handshakes/s.
 *   echo     --conns N [100] --size B [200] --seconds S [10]: each connection
 *            sends {"type":"echo",...} and waits for it: echoes/s, round trip,
 *            server CPU per echo.
 *   direct   --pairs P [100] --seconds S [10], flat out (--window W [8]
 *            unacknowledged per sender) or --rate R msgs/s in total (open loop,
 *            latency from the intended send time): durable msgs/s, send->ack
 *            and send->delivery percentiles, server CPU us per message.
 *   group    --groups N [10] --group-size G [100] --senders S [1] --window W
 *            [4] or --rate R: deliveries/s, fan-out latency (send -> last
 *            member), server CPU us per delivery.
 *   storm    --conns N [15000] --bg-rate R [200] --pre S [3]: N clients in
 *            N/2 direct conversations drop at once (RST) and reconnect with
 *            libparley's backoff (client_backoff: base 1 s, cap 60 s, full
 *            jitter, Retry-After as a floor). Each "a" client sends a message
 *            at the moment of the drop and resends it with the same cmid after
 *            the reconnect; every client then lists its inbox (changed_since)
 *            and syncs. Meanwhile a background conversation that is not
 *            dropped sends R msgs/s with cmids. Reports the time until all are
 *            back and until all are synced, rejected handshakes (503), the
 *            background p99 during the storm, and messages lost (an acked
 *            message missing from history): must be 0.
 *   catchup  --messages M [100000]: one member is offline while M messages
 *            arrive in a direct conversation; then time and bytes to the first
 *            screen (GET /v1/conversations and GET .../messages?limit=50,
 *            pipelined on one fresh connection) and to a full sync (paging
 *            with after= and limit=500).
 *   fsync    --dir DIR: 200 x (4 KiB pwrite + fdatasync): the disk's sync
 *            latency, the floor under every durable acknowledgement.
 *
 * Besides latency and throughput every run records the server's CPU, its
 * writer metrics (GET /metrics: commits, writes per commit, time per phase),
 * disk bytes written per message (/proc/PID/io), the load generator's own CPU
 * and the whole machine's (/proc/stat: server, generator, other processes),
 * so a figure taken on a busy machine says so.
 *
 * Common flags: --workers W [2; more when a worker would need over 19,000
 * sockets] --sources K [8] --concurrency C [256 handshakes in flight per
 * worker] --json FILE (the run as one JSON object) --label NAME --floor (the
 * target is bench/floor, a minimal echo server: idle, echo and direct only;
 * no users, pairs are linked by ?pair=N and the floor relays each frame to
 * the sender, as its ack, and to the partner, as its delivery).
 *
 * Every loop is bounded in count and time; every run prints a table.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_backoff.h"
#include "client_http.h"
#include "codec/json.h"
#include "codec/ws.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_WORKERS 32
#define FD_BUDGET 19000          /* sockets per worker (the limit is 20,000) */

/* ---- options ---------------------------------------------------------------- */

static struct {
    const char *scenario;
    int port, pid, workers, sources, concurrency;
    const char *json, *label;
    bool floor;
    int conns, pairs, groups, gsize, senders, window, seconds, size, messages;
    int pre, timeout, screens;
    const char *dir;
    double rate, bg_rate;
} O;

/* ---- time, randomness, small helpers ------------------------------------------ */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static uint64_t rng_state;

static uint64_t rnd64(void)
{
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

__attribute__((format(printf, 1, 2), noreturn)) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "parley-bench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

/* ---- log-linear histogram ------------------------------------------------------
 * Values in ns. Below 2^(SUB+1) each value has its own bucket; above, every
 * power of two is split into 2^SUB linear buckets (relative error < 1/64). */

#define H_SUB 6
#define H_BUCKETS 2560

typedef struct hist {
    uint64_t count, sum, max;
    uint64_t b[H_BUCKETS];
} hist;

static unsigned h_idx(uint64_t v)
{
    if (v < (2u << H_SUB)) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sh = msb - H_SUB;
    uint64_t i = ((uint64_t)sh << H_SUB) + (v >> sh);
    return i < H_BUCKETS ? (unsigned)i : H_BUCKETS - 1;
}

static uint64_t h_upper(unsigned i)
{
    if (i < (2u << H_SUB)) return i;
    unsigned sh = (i >> H_SUB) - 1;
    uint64_t mant = i - ((uint64_t)sh << H_SUB);
    return ((mant + 1) << sh) - 1;
}

static void h_add(hist *h, int64_t v)
{
    if (v < 0) v = 0;
    h->b[h_idx((uint64_t)v)]++;
    h->count++;
    h->sum += (uint64_t)v;
    if ((uint64_t)v > h->max) h->max = (uint64_t)v;
}

static void h_merge(hist *into, const hist *h)
{
    into->count += h->count;
    into->sum += h->sum;
    if (h->max > into->max) into->max = h->max;
    for (unsigned i = 0; i < H_BUCKETS; i++) into->b[i] += h->b[i];
}

/* The q-quantile in microseconds (the upper edge of its bucket, at most max). */
static double h_pct_us(const hist *h, double q)
{
    if (!h->count) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = h_upper(i);
            return (double)(v < h->max ? v : h->max) / 1e3;
        }
    }
    return (double)h->max / 1e3;
}

/* ---- shared memory: per-worker counters and histograms --------------------------- */

enum {
    H_ACK, H_DLV, H_FAN, H_HS, H_RTT, H_BACK, H_SYNC, H_BG_PRE, H_BG_STORM, H_BG_POST, H_BG_ACK,
    H_KINDS
};

enum {
    C_READY, C_HS_FAIL, C_REJ503, C_REJ429, C_CLOSED, C_SENT, C_ACKED, C_DLV, C_ECHO, C_ERRORS,
    C_LOST, C_SYNCED, C_BACK, C_ATTEMPTS, C_PROV_REQS, C_PROV_FAIL, C_DUP, C_FAN_DONE, C_LATE,
    C_SKIPPED, C_BUSY, C_NCOUNT
};

typedef struct wshm {
    volatile int ack_seq;          /* last command completed */
    volatile int failed;
    volatile int64_t t_back_last;  /* storm: last client back (hello) */
    volatile int64_t t_sync_last;  /* storm: last client synced */
    volatile uint64_t c[C_NCOUNT];
    double prov_s;
    hist h[H_KINDS];
} wshm;

static wshm *SHM;                  /* MAX_WORKERS slots, mmap'd shared */

static void cnt(wshm *s, int k, uint64_t d)
{
    __atomic_fetch_add(&s->c[k], d, __ATOMIC_RELAXED);
}

static uint64_t sum_c(int k)
{
    uint64_t t = 0;
    for (int i = 0; i < O.workers; i++) t += __atomic_load_n(&SHM[i].c[k], __ATOMIC_RELAXED);
    return t;
}

/* ---- the server, seen from /proc ------------------------------------------------ */

typedef struct psample {
    double cpu_s;
    long rss_kb, anon_kb, file_kb, slab_kb, sock_pages;
    long long disk_w;            /* write_bytes of /proc/PID/io */
    long long listen_drops;      /* TcpExt ListenOverflows (system-wide) */
    double mach_busy_s;          /* all cores, from /proc/stat */
    int64_t t;
} psample;

static long status_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) { v = atol(line + kl); break; }
    fclose(f);
    return v;
}

static double proc_cpu_s(int pid)
{
    char path[64], buf[2048];
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

static long sock_mem_pages(void)
{
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        char *m = strstr(line, "TCP:");
        char *p = m ? strstr(line, " mem ") : NULL;
        if (p) { v = atol(p + 5); break; }
    }
    fclose(f);
    return v;
}

/* A TcpExt counter of /proc/net/netstat (system-wide), or -1. */
static long long tcpext(const char *name)
{
    FILE *f = fopen("/proc/net/netstat", "r");
    if (!f) return -1;
    static char names[8192], vals[8192];
    long long v = -1;
    while (fgets(names, sizeof names, f) && fgets(vals, sizeof vals, f)) {
        if (strncmp(names, "TcpExt:", 7) != 0) continue;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn), *x = strtok_r(vals, " \n", &sv);
        while ((n = strtok_r(NULL, " \n", &sn)) && (x = strtok_r(NULL, " \n", &sv)))
            if (!strcmp(n, name)) { v = atoll(x); break; }
        break;
    }
    fclose(f);
    return v;
}

/* CPU seconds all cores spent not idle (user+nice+system+irq+softirq+steal). */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long u = 0, n = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0, st = 0;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &sy, &id, &io, &irq, &sirq, &st);
    fclose(f);
    if (k < 4) return -1;
    return (double)(u + n + sy + irq + sirq + st) / (double)sysconf(_SC_CLK_TCK);
}

static psample sample(void)
{
    psample s = {.t = now_ns(), .cpu_s = -1, .rss_kb = -1, .anon_kb = -1, .file_kb = -1};
    if (O.pid > 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/status", O.pid);
        s.cpu_s = proc_cpu_s(O.pid);
        s.rss_kb = status_field(path, "VmRSS:");
        s.anon_kb = status_field(path, "RssAnon:");
        s.file_kb = status_field(path, "RssFile:");
        snprintf(path, sizeof path, "/proc/%d/io", O.pid);
        FILE *f = fopen(path, "r");
        char line[128];
        s.disk_w = -1;
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "write_bytes: %lld", &s.disk_w) == 1) break;
        if (f) fclose(f);
    }
    s.slab_kb = status_field("/proc/meminfo", "Slab:");
    s.mach_busy_s = machine_busy_s();
    s.listen_drops = tcpext("ListenOverflows");
    s.sock_pages = sock_mem_pages();
    return s;
}

/* ---- JSON writer for the results -------------------------------------------------- */

typedef struct jw {
    char *p;
    size_t n, cap;
    bool first;
} jw;

__attribute__((format(printf, 2, 3))) static void jw_raw(jw *j, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(j->p + j->n, j->cap - j->n, fmt, ap);
        va_end(ap);
        if (k >= 0 && (size_t)k < j->cap - j->n) { j->n += (size_t)k; return; }
        j->cap = j->cap * 2 + (size_t)(k > 0 ? k : 64) + 64;
        j->p = xrealloc(j->p, j->cap);
    }
}

static void jw_key(jw *j, const char *key)
{
    if (!j->first) jw_raw(j, ",");
    j->first = false;
    jw_raw(j, "\"%s\":", key);
}

static void jw_open(jw *j, const char *key)
{
    if (key) jw_key(j, key);
    else if (!j->first) jw_raw(j, ",");
    jw_raw(j, "{");
    j->first = true;
}

static void jw_close(jw *j)
{
    jw_raw(j, "}");
    j->first = false;
}

static void jw_num(jw *j, const char *key, double v)
{
    jw_key(j, key);
    if (v != v) jw_raw(j, "null");
    else if (v == (double)(int64_t)v && v < 1e15 && v > -1e15) jw_raw(j, "%" PRId64, (int64_t)v);
    else jw_raw(j, "%.3f", v);
}

static void jw_str(jw *j, const char *key, const char *s)
{
    jw_key(j, key);
    jw_raw(j, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') jw_raw(j, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) jw_raw(j, " ");
        else jw_raw(j, "%c", *s);
    }
    jw_raw(j, "\"");
}

static void jw_bool(jw *j, const char *key, bool v)
{
    jw_key(j, key);
    jw_raw(j, v ? "true" : "false");
}

static void jw_hist(jw *j, const char *key, const hist *h)
{
    jw_open(j, key);
    jw_num(j, "count", (double)h->count);
    jw_num(j, "p50_us", h_pct_us(h, 0.5));
    jw_num(j, "p90_us", h_pct_us(h, 0.9));
    jw_num(j, "p99_us", h_pct_us(h, 0.99));
    jw_num(j, "p999_us", h_pct_us(h, 0.999));
    jw_num(j, "max_us", (double)h->max / 1e3);
    jw_num(j, "mean_us", h->count ? (double)h->sum / (double)h->count / 1e3 : 0);
    jw_close(j);
}

static void print_hist(const char *name, const hist *h)
{
    if (!h->count) {
        printf("  %-24s (no samples)\n", name);
        return;
    }
    printf("  %-24s p50 %8.0f  p90 %8.0f  p99 %8.0f  p99.9 %8.0f  max %8.0f us  (n=%" PRIu64 ")\n",
           name, h_pct_us(h, 0.5), h_pct_us(h, 0.9), h_pct_us(h, 0.99), h_pct_us(h, 0.999),
           (double)h->max / 1e3, h->count);
}

/* "some avg10" of /proc/pressure/cpu: the share of time runnable tasks waited
 * for a CPU over the last 10 s (-1 without PSI). */
static double cpu_pressure(void)
{
    double v = -1;
    FILE *f = fopen("/proc/pressure/cpu", "r");
    if (f) {
        if (fscanf(f, "some avg10=%lf", &v) != 1) v = -1;
        fclose(f);
    }
    return v;
}

static double loadavg1(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static void jw_machine(jw *j)
{
    struct utsname u;
    uname(&u);
    char model[128] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) snprintf(model, sizeof model, "%s", c + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    }
    if (f) fclose(f);
    jw_open(j, "machine");
    jw_num(j, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    jw_str(j, "kernel", u.release);
    jw_str(j, "cpu", model);
    jw_num(j, "mem_kib", (double)status_field("/proc/meminfo", "MemTotal:"));
    jw_close(j);
}

/* ---- blocking HTTP client (parent: provisioning, catchup, loss checks) ---------- */

typedef struct hc {
    int fd;
    char *in;
    size_t in_len, in_cap;
    uint64_t bytes_in, bytes_out;
} hc;

static const char *HOST = "127.0.0.1";

static int src_addr(int i, struct sockaddr_in *src)
{
    memset(src, 0, sizeof *src);
    src->sin_family = AF_INET;
    src->sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % O.sources));
    return 0;
}

static int tcp_connect(int src_i, bool nonblock)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src;
    src_addr(src_i, &src);
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { close(fd); return -1; }
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)O.port)};
    inet_pton(AF_INET, HOST, &dst.sin_addr);
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int hc_open(hc *h)
{
    memset(h, 0, sizeof *h);
    h->fd = tcp_connect((int)(rnd64() % 64), false);
    if (h->fd < 0) return -1;
    struct timeval tv = {.tv_sec = 30};
    setsockopt(h->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(h->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    return 0;
}

static void hc_close(hc *h)
{
    if (h->fd >= 0) close(h->fd);
    free(h->in);
    h->in = NULL;
    h->fd = -1;
}

static int build_req(char *out, size_t cap, const char *method, const char *path, const char *token,
                     const char *body)
{
    const char *a1 = token ? "Authorization: Bearer " : "", *a2 = token ? token : "", *a3 = token ? "\r\n" : "";
    int n;
    if (body)
        n = snprintf(out, cap,
                     "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%sContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, HOST, O.port, a1, a2, a3, strlen(body), body);
    else
        n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s%s%s\r\n", method, path, HOST, O.port,
                     a1, a2, a3);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int hc_write(hc *h, const char *method, const char *path, const char *token, const char *body)
{
    size_t cap = 1024 + (body ? strlen(body) : 0);
    char *req = malloc(cap);
    if (!req) return -1;
    int n = build_req(req, cap, method, path, token, body);
    int rc = -1;
    if (n > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = send(h->fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
            if (w <= 0) break;
            off += w;
        }
        if (off == n) rc = 0;
        h->bytes_out += (uint64_t)off;
    }
    free(req);
    return rc;
}

/* Reads one response. *body points into h->in until the next call. */
static int hc_read(hc *h, int *status, const char **body, size_t *blen, uint64_t *retry_ms)
{
    for (int guard = 0; guard < 1000000; guard++) {
        if (h->in_len) {
            client_http_response r;
            int n = client_http_parse_response(h->in, h->in_len, false, false, 64u << 20, &r);
            if (n > 0) {
                /* Move the body to the front of a fresh buffer so it stays
                 * valid (NUL-terminated) while the rest is kept. */
                static char *keep;
                static size_t keep_cap;
                if (keep_cap < r.body.n + 1) {
                    keep_cap = r.body.n + 1;
                    keep = xrealloc(keep, keep_cap);
                }
                memcpy(keep, r.body.p, r.body.n);
                keep[r.body.n] = 0;
                *status = r.status;
                *body = keep;
                *blen = r.body.n;
                if (retry_ms) *retry_ms = client_http_retry_after_ms(&r);
                memmove(h->in, h->in + n, h->in_len - (size_t)n);
                h->in_len -= (size_t)n;
                return 0;
            }
            if (n != ERR_AGAIN) return -1;
        }
        if (h->in_cap - h->in_len < 65536) {
            h->in_cap = h->in_cap * 2 + 65536;
            h->in = xrealloc(h->in, h->in_cap);
        }
        ssize_t r = recv(h->fd, h->in + h->in_len, h->in_cap - h->in_len, 0);
        if (r <= 0) return -1;
        h->in_len += (size_t)r;
        h->bytes_in += (uint64_t)r;
    }
    return -1;
}

/* One request on a fresh or kept connection; retries 503/429 (bounded). */
static int hc_do(hc *h, const char *method, const char *path, const char *token, const char *body,
                 const char **resp, size_t *rlen)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        if (h->fd < 0 && hc_open(h) < 0) return -1;
        int st = 0;
        uint64_t ra = 0;
        if (hc_write(h, method, path, token, body) < 0 || hc_read(h, &st, resp, rlen, &ra) < 0) {
            hc_close(h);
            usleep(100000);
            continue;
        }
        if (st == 503 || st == 429) {
            usleep((useconds_t)(ra ? ra : 200) * 1000);
            continue;
        }
        return st;
    }
    return -1;
}

/* ---- parleyd's writer metrics (GET /metrics) ------------------------------------- */

typedef struct wmetrics {
    bool ok;
    double batches, ops, max_batch, apply_s, commit_s, fanout_s, queue;
} wmetrics;

static double prom(const char *text, const char *name)
{
    const char *p = text;
    size_t nl = strlen(name);
    while ((p = strstr(p, name)) != NULL) {
        if ((p == text || p[-1] == '\n') && (p[nl] == ' ')) return strtod(p + nl + 1, NULL);
        p += nl;
    }
    return NAN;
}

static wmetrics scrape(void)
{
    wmetrics m = {0};
    if (O.floor) return m;
    hc h;
    h.fd = -1;
    h.in = NULL;
    const char *b;
    size_t bl;
    if (hc_do(&h, "GET", "/metrics", NULL, NULL, &b, &bl) == 200) {
        m.batches = prom(b, "parley_commit_batches_total");
        m.ops = prom(b, "parley_commit_ops_total");
        m.max_batch = prom(b, "parley_commit_max_batch");
        m.apply_s = prom(b, "parley_commit_seconds_total{phase=\"apply\"}");
        m.commit_s = prom(b, "parley_commit_seconds_total{phase=\"commit\"}");
        m.fanout_s = prom(b, "parley_commit_seconds_total{phase=\"fanout\"}");
        m.queue = prom(b, "parley_commit_queue");
        m.ok = m.batches == m.batches;
    }
    hc_close(&h);
    return m;
}

/* Prints and records the writer's work between two scrapes. */
static void report_writer(jw *j, const wmetrics *a, const wmetrics *b, double dt)
{
    if (!a->ok || !b->ok) return;
    double nb = b->batches - a->batches, ops = b->ops - a->ops;
    if (nb <= 0) return;
    /* One group commit is one durable transaction: one fsync. */
    printf("  group commit            %.0f commits (fsyncs)/s, %.1f writes per commit (largest so far %.0f)\n",
           nb / dt, ops / nb, b->max_batch);
    printf("  writer time per commit  apply %.3f ms, commit (fsync) %.3f ms, fan-out %.3f ms\n",
           (b->apply_s - a->apply_s) * 1e3 / nb, (b->commit_s - a->commit_s) * 1e3 / nb,
           (b->fanout_s - a->fanout_s) * 1e3 / nb);
    jw_open(j, "writer");
    jw_num(j, "commits_per_s", nb / dt);
    jw_num(j, "writes_per_commit", ops / nb);
    jw_num(j, "apply_ms_per_commit", (b->apply_s - a->apply_s) * 1e3 / nb);
    jw_num(j, "commit_ms_per_commit", (b->commit_s - a->commit_s) * 1e3 / nb);
    jw_num(j, "fanout_ms_per_commit", (b->fanout_s - a->fanout_s) * 1e3 / nb);
    jw_close(j);
}

/* ---- tiny JSON field scanners for our own and the server's frames ---------------- */

/* Pointer just after "key": in p[0..n), or NULL. */
static const char *jfind(const char *p, size_t n, const char *key)
{
    size_t kl = strlen(key);
    const char *end = p + n;
    while (p < end) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q || (size_t)(end - q) < kl + 3) return NULL;
        if (memcmp(q + 1, key, kl) == 0 && q[kl + 1] == '"' && q[kl + 2] == ':') return q + kl + 3;
        p = q + 1;
    }
    return NULL;
}

static bool type_is(const char *p, size_t n, const char *type)
{
    const char *v = jfind(p, n < 64 ? n : 64, "type");
    size_t tl = strlen(type);
    return v && (size_t)(p + n - v) > tl + 2 && v[0] == '"' && memcmp(v + 1, type, tl) == 0 &&
           v[tl + 1] == '"';
}

static uint64_t jnum_u64(const char *p, size_t n, const char *key, bool *ok)
{
    const char *v = jfind(p, n, key);
    if (!v) { if (ok) *ok = false; return 0; }
    if (*v == '"') v++;
    if (ok) *ok = isdigit((unsigned char)*v) != 0;
    return strtoull(v, NULL, 10);
}

/* ---- REST engine: many requests over pipelined keep-alive connections ----------- */

typedef struct rreq {
    char *raw;
    int raw_len;
    int status, tries;
    int64_t not_before;
    char *resp;
    bool done;
} rreq;

#define RDEPTH 16

typedef struct rconn {
    int fd;
    int q[RDEPTH], qh, qn;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
} rconn;

static void rreq_set(rreq *r, const char *method, const char *path, const char *token,
                     const char *body)
{
    size_t cap = 1024 + (body ? strlen(body) : 0);
    r->raw = xcalloc(1, cap);
    r->raw_len = build_req(r->raw, cap, method, path, token, body);
    if (r->raw_len < 0) die("request too large");
}

static void rconn_drop(rconn *c, int *queue, int *qtail, int nreq, rreq *r)
{
    for (int i = 0; i < c->qn; i++) {
        int idx = c->q[(c->qh + i) % RDEPTH];
        r[idx].tries++;
        queue[(*qtail)++ % nreq] = idx;
    }
    c->qn = c->qh = 0;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->in_len = c->out_len = c->out_off = 0;
}

/* Runs every request; returns how many failed. Requests answered 503/429
 * are retried after Retry-After (at least 50 ms), at most 40 times. */
static int rest_batch(rreq *r, int n, int nconn, wshm *S, int timeout_s)
{
    if (n <= 0) return 0;
    if (nconn > n) nconn = n;
    rconn *cs = xcalloc((size_t)nconn, sizeof *cs);
    int *queue = xcalloc((size_t)n, sizeof *queue);
    int qhead = 0, qtail = 0, done = 0, failed = 0;
    for (int i = 0; i < n; i++) queue[qtail++ % n] = i;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < nconn; i++) cs[i].fd = -1;
    int64_t deadline = now_ns() + (int64_t)timeout_s * 1000000000LL;
    struct epoll_event evs[64];
    while (done + failed < n && now_ns() < deadline) {
        int64_t now = now_ns();
        for (int i = 0; i < nconn; i++) {
            rconn *c = &cs[i];
            /* queue order; a request waiting for not_before blocks the rest
             * briefly, which is what a retry storm wants anyway */
            while (c->qn < RDEPTH && qhead < qtail && r[queue[qhead % n]].not_before <= now) {
                if (c->fd < 0) {
                    c->fd = tcp_connect(i * 7 + (int)(rnd64() % 8), false);
                    if (c->fd < 0) break;
                    int fl = fcntl(c->fd, F_GETFL);
                    fcntl(c->fd, F_SETFL, fl | O_NONBLOCK);
                    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
                }
                int idx = queue[qhead++ % n];
                c->q[(c->qh + c->qn++) % RDEPTH] = idx;
                if (c->out_cap < c->out_len + (size_t)r[idx].raw_len) {
                    c->out_cap = (c->out_len + (size_t)r[idx].raw_len) * 2;
                    c->out = xrealloc(c->out, c->out_cap);
                }
                memcpy(c->out + c->out_len, r[idx].raw, (size_t)r[idx].raw_len);
                c->out_len += (size_t)r[idx].raw_len;
                cnt(S, C_PROV_REQS, 1);
            }
            if (c->fd >= 0 && c->out_len > c->out_off) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0) c->out_off += (size_t)w;
                else if (w < 0 && errno != EAGAIN) { rconn_drop(c, queue, &qtail, n, r); continue; }
                if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
                struct epoll_event ev = {.events = EPOLLIN | (c->out_len ? EPOLLOUT : 0u),
                                         .data.u32 = (uint32_t)i};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
            }
        }
        int k = epoll_wait(ep, evs, 64, 5);
        for (int e = 0; e < k; e++) {
            rconn *c = &cs[evs[e].data.u32];
            if (c->fd < 0) continue;
            if (!(evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP))) continue;
            if (c->in_cap - c->in_len < 16384) {
                c->in_cap = c->in_cap * 2 + 65536;
                c->in = xrealloc(c->in, c->in_cap);
            }
            ssize_t got = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
            if (got < 0 && errno == EAGAIN) continue;
            if (got <= 0) { rconn_drop(c, queue, &qtail, n, r); continue; }
            c->in_len += (size_t)got;
            size_t off = 0;
            bool drop = false;
            while (c->qn > 0) {
                client_http_response resp;
                int m = client_http_parse_response(c->in + off, c->in_len - off, false, false,
                                                   64u << 20, &resp);
                if (m == ERR_AGAIN) break;
                if (m < 0) { drop = true; break; }
                off += (size_t)m;
                int idx = c->q[c->qh];
                c->qh = (c->qh + 1) % RDEPTH;
                c->qn--;
                rreq *q = &r[idx];
                if ((resp.status == 503 || resp.status == 429) && q->tries < 40) {
                    uint64_t ra = client_http_retry_after_ms(&resp);
                    q->tries++;
                    q->not_before = now_ns() + (int64_t)(ra > 50 ? ra : 50) * 1000000LL;
                    queue[qtail++ % n] = idx;
                    if (resp.status == 503) cnt(S, C_BUSY, 1);
                } else {
                    q->status = resp.status;
                    q->resp = xcalloc(1, resp.body.n + 1);
                    memcpy(q->resp, resp.body.p, resp.body.n);
                    q->done = true;
                    if (resp.status >= 200 && resp.status < 300) done++;
                    else {
                        failed++;
                        cnt(S, C_PROV_FAIL, 1);
                        if (failed <= 3)
                            fprintf(stderr, "provisioning: HTTP %d %.200s\n", resp.status, q->resp);
                    }
                }
                if (resp.close) { drop = true; break; }
            }
            memmove(c->in, c->in + off, c->in_len - off);
            c->in_len -= off;
            if (drop) rconn_drop(c, queue, &qtail, n, r);
        }
    }
    for (int i = 0; i < nconn; i++) {
        if (cs[i].fd >= 0) close(cs[i].fd);
        free(cs[i].in);
        free(cs[i].out);
    }
    close(ep);
    free(cs);
    free(queue);
    for (int i = 0; i < n; i++) free(r[i].raw), r[i].raw = NULL;
    return n - done;
}

/* ---- WebSocket connections ------------------------------------------------------ */

enum { ST_NONE, ST_WAIT, ST_CONN, ST_HS, ST_OPEN, ST_READY, ST_DEAD };

enum {
    K_IDLE, K_ECHO, K_DSEND, K_DRECV, K_GMEM, K_STORM_A, K_STORM_B, K_BG_SEND, K_BG_RECV,
    K_CATCH_SEND
};

typedef struct bc {
    int fd;
    uint8_t st, kind;
    bool counted;        /* counted as ready */
    bool want_resend;    /* storm: the message of the drop awaits its ack */
    bool ack_found;      /* storm: that message was seen in history */
    uint8_t sync_phase;  /* storm: 0 none, 1 waiting ack, 2 inbox, 3 history, 4 synced */
    uint32_t idx;        /* in the worker */
    uint32_t grp;        /* pair or group in the worker */
    uint32_t member;     /* index in the group */
    int outstanding;     /* unacknowledged sends */
    char *tok;
    uint8_t *in;
    uint32_t in_len, in_cap;
    uint8_t *out;
    uint32_t out_len, out_cap;
    int64_t t0;          /* connect start */
    int64_t t_sent;      /* echo: last send */
    int64_t when;        /* timer */
    uint64_t conv, known_seq, cursor, ack_seq, k;
    client_backoff bo;
} bc;

typedef struct theap {
    int64_t *t;
    uint32_t *i;
    int n, cap;
} theap;

typedef struct wctx {
    int id, ep, cmd_fd;
    bc *c;
    int n;                  /* connections */
    int next_open, target, inflight, nready;
    theap heap;
    uint8_t *rbuf;
    wshm *S;
    bool running, stopping, storm_reconnect;
    int64_t drop_at;
    /* pacing */
    double rate;
    int64_t pace_t0;
    uint64_t pace_sent;
    int *senders, nsenders, rr;
    /* pending command */
    int pend_op, pend_seq;
    int64_t pend_deadline;
    int64_t last_scan;
    /* group fan-out tracking: per group, per sender member, a ring */
    struct fan { uint64_t k; int64_t t; uint32_t cnt; } *fan;
    int ngroups;
    /* provisioning data */
    char (*toks)[48];
    uint64_t *convs;
    char prefix[24];
} wctx;

#define FAN_RING 1024
#define IDX_CMD 0xfffffff0u

static ws_limits LIM = {.max_message = 64u << 20};
static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

static void heap_push(theap *h, int64_t t, uint32_t i)
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

static void heap_pop(theap *h)
{
    int64_t t = h->t[--h->n];
    uint32_t i = h->i[h->n];
    int k = 0;
    for (;;) {
        int a = 2 * k + 1, b = a + 1, m = k;
        int64_t mt = t;
        if (a < h->n && h->t[a] < mt) { m = a; mt = h->t[a]; }
        if (b < h->n && h->t[b] < mt) { m = b; }
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

static void bc_close(wctx *w, bc *c, bool rst)
{
    if (c->fd >= 0) {
        if (rst) {
            struct linger lg = {1, 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->st == ST_CONN || c->st == ST_HS || c->st == ST_OPEN) w->inflight--;
    if (c->counted) { c->counted = false; w->nready--; }
    c->fd = -1;
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->in_len = c->in_cap = c->out_len = c->out_cap = 0;
    c->outstanding = 0;
}

static void bc_schedule(wctx *w, bc *c, int64_t at)
{
    c->st = ST_WAIT;
    c->when = at;
    heap_push(&w->heap, at, c->idx);
}

/* Lost or refused: reconnect after libparley's backoff, or give up. */
static void bc_failed(wctx *w, bc *c, uint64_t retry_after_ms, bool rst)
{
    bc_close(w, c, rst);
    if (c->bo.attempt >= 40 && !w->storm_reconnect) {
        c->st = ST_DEAD;
        return;
    }
    uint64_t d = client_backoff_next(&c->bo, rnd64(), retry_after_ms);
    bc_schedule(w, c, now_ns() + (int64_t)d * 1000000LL);
}

static void bc_epoll(wctx *w, bc *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.u32 = c->idx};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static int bc_write(wctx *w, bc *c, const void *data, size_t len)
{
    if (c->fd < 0) return -1;
    if (!c->out_len) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return 0;
        if (n < 0) {
            if (errno != EAGAIN) return -1;
            n = 0;
        }
        data = (const uint8_t *)data + n;
        len -= (size_t)n;
        bc_epoll(w, c, EPOLLIN | EPOLLOUT);
    }
    if (c->out_len + len > (64u << 20)) return -1;
    if (c->out_cap < c->out_len + len) {
        c->out_cap = (uint32_t)((c->out_len + len) * 2);
        c->out = xrealloc(c->out, c->out_cap);
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += (uint32_t)len;
    return 0;
}

static int bc_frame(wctx *w, bc *c, uint8_t op, const char *payload, size_t n)
{
    uint8_t stackbuf[2048];
    uint8_t *f = n + WS_MAX_HEADER <= sizeof stackbuf ? stackbuf : xcalloc(1, n + WS_MAX_HEADER);
    size_t h = ws_frame_header(f, op, true, n, MASK);
    memcpy(f + h, payload, n);
    ws_mask(f + h, n, MASK, 0);
    int rc = bc_write(w, c, f, h + n);
    if (f != stackbuf) free(f);
    return rc;
}

static int bc_text(wctx *w, bc *c, const char *payload, size_t n)
{
    return bc_frame(w, c, WS_OP_TEXT, payload, n);
}

static void bc_start(wctx *w, bc *c)
{
    c->t0 = now_ns();
    c->fd = tcp_connect((int)c->idx + w->id * 7919, true);
    cnt(w->S, C_ATTEMPTS, 1);
    if (c->fd < 0) {
        cnt(w->S, C_HS_FAIL, 1);
        bc_failed(w, c, 0, false);
        return;
    }
    c->st = ST_CONN;
    w->inflight++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u32 = c->idx};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void send_handshake(wctx *w, bc *c)
{
    char req[768];
    char path[64];
    if (O.floor) {
        if (c->kind == K_DSEND || c->kind == K_DRECV)
            snprintf(path, sizeof path, "/v1/ws?pair=%u", (unsigned)(w->id * 1000000 + (int)c->grp));
        else snprintf(path, sizeof path, "/v1/ws");
    } else snprintf(path, sizeof path, "/v1/ws");
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: parley.v1.json\r\n%s%s%s\r\n",
                     path, HOST, O.port, c->tok ? "Authorization: Bearer " : "", c->tok ? c->tok : "",
                     c->tok ? "\r\n" : "");
    c->st = ST_HS;
    if (bc_write(w, c, req, (size_t)n) < 0) {
        cnt(w->S, C_HS_FAIL, 1);
        bc_failed(w, c, 0, false);
        return;
    }
    if (!c->out_len) bc_epoll(w, c, EPOLLIN);
}

/* ---- scenario behaviour per connection ------------------------------------------ */

static void on_ready(wctx *w, bc *c);
static void on_text(wctx *w, bc *c, const char *p, size_t n);

static void mark_ready(wctx *w, bc *c)
{
    if (!c->counted) {
        c->counted = true;
        w->nready++;
        cnt(w->S, C_READY, 1);
    }
}

/* Parses the handshake response in c->in. */
static void handle_handshake(wctx *w, bc *c)
{
    client_http_response r;
    int n = client_http_parse_response((char *)c->in, c->in_len, false, false, 1u << 20, &r);
    if (n == ERR_AGAIN) return;
    if (n < 0) {
        cnt(w->S, C_HS_FAIL, 1);
        bc_failed(w, c, 0, false);
        return;
    }
    if (r.status != 101) {
        uint64_t ra = client_http_retry_after_ms(&r);
        if (r.status == 503) cnt(w->S, C_REJ503, 1);
        else if (r.status == 429) cnt(w->S, C_REJ429, 1);
        else {
            cnt(w->S, C_HS_FAIL, 1);
            if (__atomic_load_n(&w->S->c[C_HS_FAIL], __ATOMIC_RELAXED) <= 3)
                fprintf(stderr, "handshake: HTTP %d\n", r.status);
        }
        bc_failed(w, c, ra, false);
        return;
    }
    memmove(c->in, c->in + n, c->in_len - (size_t)n);
    c->in_len -= (uint32_t)n;
    c->st = ST_OPEN;
    if (O.floor) {
        c->st = ST_READY;
        w->inflight--;
        h_add(&w->S->h[H_HS], now_ns() - c->t0);
        on_ready(w, c);
    }
}

static void process_frames(wctx *w, bc *c, uint8_t *data, size_t have, bool data_is_in)
{
    size_t off = 0;
    while (c->fd >= 0 && off < have) {
        ws_frame f;
        uint16_t code;
        int n = ws_parse_frame(data + off, have - off, WS_CLIENT, &LIM, &f, &code);
        if (n == ERR_AGAIN) break;
        if (n < 0) {
            cnt(w->S, C_ERRORS, 1);
            fprintf(stderr, "bad frame from server (close %u)\n", code);
            bc_failed(w, c, 0, false);
            return;
        }
        off += (size_t)n;
        if (f.opcode == WS_OP_TEXT) {
            if (c->st == ST_OPEN && !O.floor) {
                /* the server's first frame is hello */
                c->st = ST_READY;
                w->inflight--;
                h_add(&w->S->h[H_HS], now_ns() - c->t0);
                on_ready(w, c);
                continue;
            }
            on_text(w, c, (const char *)f.payload, f.len);
        } else if (f.opcode == WS_OP_PING) {
            bc_frame(w, c, WS_OP_PONG, (const char *)f.payload, f.len);
        } else if (f.opcode == WS_OP_CLOSE) {
            uint16_t cc = f.len >= 2 ? (uint16_t)(f.payload[0] << 8 | f.payload[1]) : 1005;
            cnt(w->S, C_CLOSED, 1);
            if (__atomic_load_n(&w->S->c[C_CLOSED], __ATOMIC_RELAXED) <= 3)
                fprintf(stderr, "server closed a connection: %u\n", cc);
            bc_failed(w, c, 0, false);
            return;
        }
    }
    if (c->fd < 0) return;
    size_t tail = have - off;
    if (data_is_in) {
        memmove(c->in, c->in + off, tail);
        c->in_len = (uint32_t)tail;
    } else if (tail) {
        if (c->in_cap < tail) {
            c->in_cap = (uint32_t)(tail * 2 + 1024);
            c->in = xrealloc(c->in, c->in_cap);
        }
        memcpy(c->in, data + off, tail);
        c->in_len = (uint32_t)tail;
    }
    if (!c->in_len && c->in_cap > 65536) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

#define RBUF 262144

static void on_readable(wctx *w, bc *c)
{
    ssize_t r = recv(c->fd, w->rbuf, RBUF, 0);
    if (r < 0 && errno == EAGAIN) return;
    if (r <= 0) {
        if (c->st == ST_HS || c->st == ST_CONN || c->st == ST_OPEN) cnt(w->S, C_HS_FAIL, 1);
        else {
            cnt(w->S, C_CLOSED, 1);
            if (__atomic_load_n(&w->S->c[C_CLOSED], __ATOMIC_RELAXED) <= 3)
                fprintf(stderr, "connection lost: %s\n", r == 0 ? "EOF" : strerror(errno));
        }
        bc_failed(w, c, 0, false);
        return;
    }
    if (c->st == ST_HS) {
        if (c->in_cap < c->in_len + (size_t)r + 1) {
            c->in_cap = (uint32_t)(c->in_len + (size_t)r + 1024);
            c->in = xrealloc(c->in, c->in_cap);
        }
        memcpy(c->in + c->in_len, w->rbuf, (size_t)r);
        c->in_len += (uint32_t)r;
        handle_handshake(w, c);
        if (c->fd >= 0 && c->st >= ST_OPEN && c->in_len)
            process_frames(w, c, c->in, c->in_len, true);
        return;
    }
    if (c->in_len) {
        if (c->in_cap < c->in_len + (size_t)r) {
            c->in_cap = (uint32_t)((c->in_len + (size_t)r) * 2);
            c->in = xrealloc(c->in, c->in_cap);
        }
        memcpy(c->in + c->in_len, w->rbuf, (size_t)r);
        c->in_len += (uint32_t)r;
        process_frames(w, c, c->in, c->in_len, true);
    } else {
        process_frames(w, c, w->rbuf, (size_t)r, false);
    }
}

static void on_writable(wctx *w, bc *c)
{
    if (c->st == ST_CONN) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            cnt(w->S, C_HS_FAIL, 1);
            bc_failed(w, c, 0, false);
            return;
        }
        send_handshake(w, c);
        return;
    }
    while (c->out_len) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            cnt(w->S, C_CLOSED, 1);
            bc_failed(w, c, 0, false);
            return;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (uint32_t)n;
    }
    bc_epoll(w, c, EPOLLIN);
}

/* ---- messages ---------------------------------------------------------------------- */

static char PAD[17000];

/* A send frame; the body starts with the send time in ns, the message number
 * and the sender's member index, padded to --size bytes. */
static int send_msg(wctx *w, bc *c, int64_t t)
{
    char p[17400];
    uint64_t k = c->k++;
    int bl = O.size > 16000 ? 16000 : O.size;
    char head[96];
    int hl = snprintf(head, sizeof head, "%" PRId64 " %" PRIu64 " %u ", t, k, c->member);
    int pad = bl - hl > 0 ? bl - hl : 0;
    int n = snprintf(p, sizeof p,
                     "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"%" PRIu64 ".%" PRId64
                     "\",\"body\":\"%s%.*s\"}",
                     c->conv ? c->conv : 1, k, t, head, pad, PAD);
    c->outstanding++;
    cnt(w->S, C_SENT, 1);
    return bc_text(w, c, p, (size_t)n);
}

/* "cmid":"K.T" -> T */
static int64_t cmid_time(const char *p, size_t n)
{
    const char *v = jfind(p, n, "cmid");
    if (!v || *v != '"') return -1;
    const char *dot = memchr(v, '.', (size_t)(p + n - v) < 80 ? (size_t)(p + n - v) : 80);
    return dot ? strtoll(dot + 1, NULL, 10) : -1;
}

/* "body":"T K M ..." */
static int64_t body_time(const char *p, size_t n, uint64_t *k, uint32_t *m)
{
    const char *v = jfind(p, n, "body");
    if (!v || *v != '"') return -1;
    char *e;
    int64_t t = strtoll(v + 1, &e, 10);
    unsigned long long kk = strtoull(e, &e, 10);
    unsigned long mm = strtoul(e, &e, 10);
    if (k) *k = kk;
    if (m) *m = (uint32_t)mm;
    return t;
}

static void storm_after_ack(wctx *w, bc *c);
static void storm_send_inbox(wctx *w, bc *c);

/* Background conversation bookkeeping (parent only). */
static struct {
    uint64_t *seq;       /* acked seq by message number */
    int64_t *t;          /* intended send time by message number */
    uint8_t *resend;
    uint64_t cap, sent, acked;
    int64_t storm_end;
} BG;

static void note_error(wctx *w, const char *p, size_t n)
{
    cnt(w->S, C_ERRORS, 1);
    if (type_is(p, n, "error") && jfind(p, n, "code") && memcmp(jfind(p, n, "code"), "\"busy\"", 6) == 0)
        cnt(w->S, C_BUSY, 1);
    if (__atomic_load_n(&w->S->c[C_ERRORS], __ATOMIC_RELAXED) <= 3)
        fprintf(stderr, "server error frame: %.*s\n", (int)(n < 300 ? n : 300), p);
}

static void on_ready(wctx *w, bc *c)
{
    switch (c->kind) {
    case K_STORM_A:
    case K_STORM_B:
        if (w->storm_reconnect) {
            if (!c->counted) {
                cnt(w->S, C_BACK, 1);
                int64_t t = now_ns();
                h_add(&w->S->h[H_BACK], t - w->drop_at);
                if (t > w->S->t_back_last) w->S->t_back_last = t;
            }
            mark_ready(w, c);
            c->ack_found = false;
            if (c->want_resend) {
                /* resend the message of the drop with the same cmid */
                char p[256];
                int n = snprintf(p, sizeof p,
                                 "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"drop-%u-%u\","
                                 "\"body\":\"sent as the connection dropped\"}",
                                 c->conv, (unsigned)w->id, (unsigned)c->idx);
                c->sync_phase = 1;
                bc_text(w, c, p, (size_t)n);
            } else storm_send_inbox(w, c);
        } else {
            storm_send_inbox(w, c); /* ready once the inbox is answered */
        }
        break;
    default:
        mark_ready(w, c);
        if (w->running && (c->kind == K_ECHO)) {
            c->t_sent = now_ns();
            bc_text(w, c, "{\"type\":\"echo\"}", 15);
        }
        break;
    }
}

static char *ECHO_PAYLOAD;
static size_t ECHO_LEN;

static void storm_send_inbox(wctx *w, bc *c)
{
    char p[128];
    int n = c->cursor ? snprintf(p, sizeof p, "{\"type\":\"inbox\",\"changed_since\":%" PRIu64 "}", c->cursor)
                      : snprintf(p, sizeof p, "{\"type\":\"inbox\"}");
    c->sync_phase = 2;
    bc_text(w, c, p, (size_t)n);
}

static void storm_sync(wctx *w, bc *c)
{
    char p[160];
    int n = snprintf(p, sizeof p,
                     "{\"type\":\"sync\",\"conv\":%" PRIu64 ",\"after\":%" PRIu64 ",\"limit\":500}",
                     c->conv, c->known_seq);
    c->sync_phase = 3;
    bc_text(w, c, p, (size_t)n);
}

static void storm_synced(wctx *w, bc *c)
{
    c->sync_phase = 4;
    if (!w->storm_reconnect) {
        mark_ready(w, c);
        return;
    }
    if (c->kind == K_STORM_A && c->ack_seq && !c->ack_found) cnt(w->S, C_LOST, 1);
    int64_t t = now_ns();
    cnt(w->S, C_SYNCED, 1);
    h_add(&w->S->h[H_SYNC], t - w->drop_at);
    if (t > w->S->t_sync_last) w->S->t_sync_last = t;
}

static void storm_after_ack(wctx *w, bc *c)
{
    storm_send_inbox(w, c);
}

typedef struct hist_scan {
    uint64_t want_seq, max_seq;
    bool found;
    char cmid[80];
    int count;
} hist_scan;

static int scan_msg(void *arg, const char *v, size_t len, uint8_t type)
{
    hist_scan *hs = arg;
    if (type != JSON_OBJECT) return 0;
    json_obj o;
    if (json_parse_object(v, len, &o) < 0) return 0;
    uint64_t seq = 0;
    if (json_get_u64(&o, "seq", &seq) < 0) return 0;
    hs->count++;
    if (seq > hs->max_seq) hs->max_seq = seq;
    if (hs->want_seq && seq == hs->want_seq) {
        char cm[80];
        if (json_get_str(&o, "cmid", cm, sizeof cm) >= 0 && strcmp(cm, hs->cmid) == 0) hs->found = true;
    }
    return 0;
}

typedef struct inbox_scan {
    uint64_t conv, last_seq;
    bool found;
} inbox_scan;

static int scan_conv(void *arg, const char *v, size_t len, uint8_t type)
{
    inbox_scan *is = arg;
    if (type != JSON_OBJECT) return 0;
    json_obj o;
    uint64_t id = 0;
    if (json_parse_object(v, len, &o) < 0 || json_get_u64(&o, "id", &id) < 0) return 0;
    if (id == is->conv) {
        is->found = true;
        json_get_u64(&o, "last_seq", &is->last_seq);
    }
    return 0;
}

static void storm_text(wctx *w, bc *c, const char *p, size_t n)
{
    if (type_is(p, n, "ack")) {
        if (c->sync_phase != 1) return;
        c->ack_seq = jnum_u64(p, n, "seq", NULL);
        if (jfind(p, n, "duplicate")) cnt(w->S, C_DUP, 1);
        c->want_resend = false;
        storm_after_ack(w, c);
    } else if (type_is(p, n, "inbox")) {
        if (c->sync_phase != 2) return;
        json_obj o, in;
        const json_field *f;
        c->cursor = jnum_u64(p, n, "cursor", NULL);
        inbox_scan is = {.conv = c->conv};
        if (json_parse_object(p, n, &o) == 0 && (f = json_get(&o, "inbox")) &&
            json_parse_object(f->val, f->val_len, &in) == 0 && (f = json_get(&in, "conversations")))
            json_array_each(f->val, f->val_len, scan_conv, &is);
        if (is.found && is.last_seq > c->known_seq) storm_sync(w, c);
        else storm_synced(w, c); /* an acked message not shown as a change counts as lost */
    } else if (type_is(p, n, "history")) {
        if (c->sync_phase != 3) return;
        json_obj o;
        const json_field *f;
        hist_scan hs = {.want_seq = c->ack_seq};
        snprintf(hs.cmid, sizeof hs.cmid, "drop-%u-%u", (unsigned)w->id, (unsigned)c->idx);
        if (json_parse_object(p, n, &o) == 0 && (f = json_get(&o, "messages")))
            json_array_each(f->val, f->val_len, scan_msg, &hs);
        bool more = jfind(p, n, "more") && memcmp(jfind(p, n, "more"), "true", 4) == 0;
        if (hs.max_seq > c->known_seq) c->known_seq = hs.max_seq;
        if (hs.found) c->ack_found = true;
        if (more && hs.count > 0) storm_sync(w, c);
        else storm_synced(w, c);
    } else if (type_is(p, n, "error")) {
        note_error(w, p, n);
        if (c->sync_phase == 1) {
            /* e.g. busy: resend after a while via reconnect-free retry */
            c->sync_phase = 0;
            on_ready(w, c);
        }
    }
}

static void on_text(wctx *w, bc *c, const char *p, size_t n)
{
    int64_t t = now_ns();
    switch (c->kind) {
    case K_ECHO:
        if (O.floor || type_is(p, n, "echo")) {
            h_add(&w->S->h[H_RTT], t - c->t_sent);
            cnt(w->S, C_ECHO, 1);
            if (w->running && !w->stopping) {
                c->t_sent = t;
                bc_text(w, c, ECHO_PAYLOAD, ECHO_LEN);
            } else c->outstanding = 0;
        }
        break;
    case K_DSEND:
    case K_GMEM:
    case K_DRECV:
    case K_CATCH_SEND:
        if (O.floor ? type_is(p, n, "send") && c->kind == K_DSEND : type_is(p, n, "ack")) {
            int64_t ts = cmid_time(p, n);
            if (ts > 0) h_add(&w->S->h[H_ACK], t - ts);
            cnt(w->S, C_ACKED, 1);
            if (c->outstanding > 0) c->outstanding--;
            if (w->running && !w->stopping && w->rate <= 0 && c->outstanding < O.window)
                send_msg(w, c, now_ns());
        } else if (O.floor ? type_is(p, n, "send") : type_is(p, n, "msg")) {
            uint64_t k = 0;
            uint32_t m = 0;
            int64_t ts = body_time(p, n, &k, &m);
            if (ts > 0) h_add(&w->S->h[H_DLV], t - ts);
            cnt(w->S, C_DLV, 1);
            if (c->kind == K_GMEM && w->fan && ts > 0 && (int)m < O.senders) {
                struct fan *f = &w->fan[((size_t)c->grp * (size_t)O.senders + m) * FAN_RING + k % FAN_RING];
                if (f->k != k || f->t != ts) { f->k = k; f->t = ts; f->cnt = 0; }
                if (++f->cnt == (uint32_t)(O.gsize - 1)) {
                    h_add(&w->S->h[H_FAN], t - ts);
                    cnt(w->S, C_FAN_DONE, 1);
                }
            }
        } else if (type_is(p, n, "error")) {
            note_error(w, p, n);
            if (c->outstanding > 0) c->outstanding--;
        }
        break;
    case K_STORM_A:
    case K_STORM_B:
        storm_text(w, c, p, n);
        break;
    case K_BG_SEND:
        if (type_is(p, n, "ack")) {
            const char *v = jfind(p, n, "cmid");
            uint64_t k = v && *v == '"' ? strtoull(v + 3, NULL, 10) : UINT64_MAX; /* "bg<k>" */
            if (k < BG.cap && !BG.seq[k]) {
                BG.seq[k] = jnum_u64(p, n, "seq", NULL);
                BG.acked++;
                h_add(&w->S->h[H_BG_ACK], t - BG.t[k]);
            }
        } else if (type_is(p, n, "error")) {
            note_error(w, p, n);
            const char *v = jfind(p, n, "ref");
            uint64_t k = v && *v == '"' ? strtoull(v + 3, NULL, 10) : UINT64_MAX;
            if (k < BG.cap) BG.resend[k] = 1;
        }
        break;
    case K_BG_RECV:
        if (type_is(p, n, "msg")) {
            int64_t ts = body_time(p, n, NULL, NULL);
            if (ts <= 0) break;
            int h = ts < w->drop_at || !w->drop_at ? H_BG_PRE
                    : (!BG.storm_end || ts <= BG.storm_end) ? H_BG_STORM : H_BG_POST;
            h_add(&w->S->h[h], t - ts);
        }
        break;
    default:
        break;
    }
}

/* ---- the worker loop ------------------------------------------------------------ */

enum { CMD_PROVISION = 1, CMD_CONNECT, CMD_RUN, CMD_STOP, CMD_DROP, CMD_EXIT };

typedef struct cmd {
    int op, seq;
    int64_t arg;
} cmd;

static void start_traffic(wctx *w)
{
    w->running = true;
    w->stopping = false;
    w->pace_t0 = now_ns();
    w->pace_sent = 0;
    for (int i = 0; i < w->n; i++) {
        bc *c = &w->c[i];
        if (c->st != ST_READY) continue;
        if (c->kind == K_ECHO) {
            c->t_sent = now_ns();
            bc_text(w, c, ECHO_PAYLOAD, ECHO_LEN);
        }
    }
    if (w->rate <= 0)
        for (int s = 0; s < w->nsenders; s++) {
            bc *c = &w->c[w->senders[s]];
            if (c->st != ST_READY) continue;
            for (int k = 0; k < O.window; k++) send_msg(w, c, now_ns());
        }
}

static void pace(wctx *w)
{
    if (!w->running || w->stopping || w->rate <= 0 || !w->nsenders) return;
    int64_t now = now_ns();
    double due = (double)(now - w->pace_t0) / 1e9 * w->rate;
    int guard = 0;
    while ((double)w->pace_sent < due && guard++ < 100000) {
        int64_t intended = w->pace_t0 + (int64_t)((double)w->pace_sent / w->rate * 1e9);
        bc *c = &w->c[w->senders[w->rr++ % w->nsenders]];
        w->pace_sent++;
        if (c->st != ST_READY) { cnt(w->S, C_SKIPPED, 1); continue; }
        if (c->outstanding >= 2000) { cnt(w->S, C_LATE, 1); continue; }
        send_msg(w, c, intended);
    }
}

static void storm_drop(wctx *w)
{
    w->storm_reconnect = true;
    for (int i = 0; i < w->n; i++) {
        bc *c = &w->c[i];
        if (c->kind == K_STORM_A && c->fd >= 0 && c->st == ST_READY) {
            char p[256];
            int n = snprintf(p, sizeof p,
                             "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"drop-%u-%u\","
                             "\"body\":\"sent as the connection dropped\"}",
                             c->conv, (unsigned)w->id, (unsigned)c->idx);
            bc_text(w, c, p, (size_t)n);
            c->want_resend = true;
        }
        if (c->st == ST_WAIT) {
            /* not connected (should not happen): reconnect now */
        }
        bc_close(w, c, true);
        c->sync_phase = 0;
        client_backoff_init(&c->bo, 1000, 60000);
        uint64_t d = client_backoff_next(&c->bo, rnd64(), 0);
        bc_schedule(w, c, w->drop_at + (int64_t)d * 1000000LL);
    }
}

static bool cmd_done(wctx *w)
{
    switch (w->pend_op) {
    case CMD_CONNECT: {
        int dead = 0;
        if (w->nready >= w->target) return true;
        for (int i = 0; i < w->target && i < w->n; i++) dead += w->c[i].st == ST_DEAD;
        return w->nready + dead >= w->target;
    }
    case CMD_STOP: {
        if (now_ns() > w->pend_deadline) return true;
        for (int i = 0; i < w->n; i++)
            if (w->c[i].outstanding > 0 && w->c[i].st == ST_READY) return false;
        return true;
    }
    default:
        return true;
    }
}

static void provision(wctx *w);

static void handle_cmd(wctx *w, const cmd *m)
{
    w->pend_op = m->op;
    w->pend_seq = m->seq;
    switch (m->op) {
    case CMD_PROVISION:
        provision(w);
        break;
    case CMD_CONNECT:
        w->target = (int)m->arg < w->n ? (int)m->arg : w->n;
        break;
    case CMD_RUN:
        start_traffic(w);
        break;
    case CMD_STOP:
        w->stopping = true;
        w->pend_deadline = now_ns() + 3000000000LL;
        break;
    case CMD_DROP:
        w->drop_at = m->arg;
        storm_drop(w);
        break;
    case CMD_EXIT:
        break;
    }
}

static void loop_once(wctx *w, int max_ms)
{
    int64_t now = now_ns();
    /* timers */
    int guard = 0;
    while (w->heap.n && w->heap.t[0] <= now && guard++ < 4096) {
        uint32_t i = w->heap.i[0];
        int64_t t = w->heap.t[0];
        heap_pop(&w->heap);
        bc *c = &w->c[i];
        if (c->st == ST_WAIT && c->when == t) bc_start(w, c);
    }
    /* ramp */
    while (w->next_open < w->target && w->inflight < O.concurrency) {
        bc *c = &w->c[w->next_open++];
        if (c->st == ST_NONE) bc_start(w, c);
    }
    pace(w);
    /* handshake timeouts, every 250 ms */
    if (now - w->last_scan > 250000000LL) {
        w->last_scan = now;
        for (int i = 0; i < w->n; i++) {
            bc *c = &w->c[i];
            if ((c->st == ST_CONN || c->st == ST_HS || c->st == ST_OPEN) && now - c->t0 > 15000000000LL) {
                cnt(w->S, C_HS_FAIL, 1);
                bc_failed(w, c, 0, true);
            }
        }
    }
    int timeout = max_ms;
    if (w->heap.n) {
        int64_t d = (w->heap.t[0] - now) / 1000000 + 1;
        if (d < timeout) timeout = d < 0 ? 0 : (int)d;
    }
    if (w->running && w->rate > 0) timeout = timeout > 1 ? 1 : timeout;
    if (w->next_open < w->target && w->inflight < O.concurrency) timeout = 0;
    struct epoll_event evs[512];
    int k = epoll_wait(w->ep, evs, 512, timeout);
    for (int e = 0; e < k; e++) {
        uint32_t i = evs[e].data.u32;
        if (i == IDX_CMD) {
            cmd m;
            ssize_t r = read(w->cmd_fd, &m, sizeof m);
            if (r == sizeof m) handle_cmd(w, &m);
            else if (r == 0) { w->pend_op = CMD_EXIT; w->pend_seq = -1; }
            continue;
        }
        bc *c = &w->c[i];
        if (c->fd < 0) continue;
        if (evs[e].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            if (c->st == ST_CONN) on_writable(w, c);
            else on_readable(w, c);
        }
        if (c->fd >= 0 && (evs[e].events & EPOLLOUT)) on_writable(w, c);
    }
    if (w->pend_op && w->pend_op != CMD_EXIT && cmd_done(w)) {
        w->S->ack_seq = w->pend_seq;
        w->pend_op = 0;
    }
}

/* ---- provisioning ----------------------------------------------------------------- */

static unsigned RUN_ID;

static void provision(wctx *w)
{
    int64_t t0 = now_ns();
    if (O.floor || w->n == 0) goto out;
    /* users: one per connection */
    rreq *r = xcalloc((size_t)w->n, sizeof *r);
    for (int i = 0; i < w->n; i++) {
        char body[160];
        snprintf(body, sizeof body, "{\"username\":\"%sw%du%d\",\"password\":\"bench-password\"}",
                 w->prefix, w->id, i);
        rreq_set(&r[i], "POST", "/v1/users", NULL, body);
    }
    int fail = rest_batch(r, w->n, 8, w->S, 180);
    for (int i = 0; i < w->n; i++) {
        char tok[64] = "";
        if (r[i].resp) {
            json_obj o;
            if (json_parse_object(r[i].resp, strlen(r[i].resp), &o) == 0)
                json_get_str(&o, "token", tok, sizeof tok);
        }
        snprintf(w->toks[i], sizeof w->toks[i], "%s", tok);
        w->c[i].tok = w->toks[i][0] ? w->toks[i] : NULL;
        free(r[i].resp);
    }
    free(r);
    if (fail) {
        fprintf(stderr, "worker %d: %d registrations failed\n", w->id, fail);
        w->S->failed = 1;
        goto out;
    }
    /* conversations */
    int nconv = 0;
    rreq *cr = xcalloc((size_t)w->n, sizeof *cr);
    int *owner = xcalloc((size_t)w->n, sizeof *owner);
    for (int i = 0; i < w->n; i++) {
        bc *c = &w->c[i];
        char *body = NULL;
        if (c->kind == K_DSEND || c->kind == K_STORM_A) {
            body = xcalloc(1, 160);
            snprintf(body, 160, "{\"type\":\"direct\",\"with\":\"%sw%du%d\"}", w->prefix, w->id, i + 1);
        } else if (c->kind == K_GMEM && c->member == 0) {
            size_t cap = 64 + (size_t)O.gsize * 40;
            body = xcalloc(1, cap);
            size_t n = (size_t)snprintf(body, cap, "{\"type\":\"group\",\"name\":\"bench %u\",\"members\":[",
                                        (unsigned)c->grp);
            for (int m = 1; m < O.gsize; m++)
                n += (size_t)snprintf(body + n, cap - n, "%s\"%sw%du%d\"", m > 1 ? "," : "", w->prefix,
                                      w->id, i + m);
            snprintf(body + n, cap - n, "]}");
        }
        if (!body) continue;
        rreq_set(&cr[nconv], "POST", "/v1/conversations", c->tok, body);
        owner[nconv++] = i;
        free(body);
    }
    fail = rest_batch(cr, nconv, 8, w->S, 180);
    for (int j = 0; j < nconv; j++) {
        uint64_t id = 0;
        if (cr[j].resp) {
            json_obj o;
            if (json_parse_object(cr[j].resp, strlen(cr[j].resp), &o) == 0) json_get_u64(&o, "id", &id);
        }
        int i = owner[j];
        bc *c = &w->c[i];
        int members = c->kind == K_GMEM ? O.gsize : 2;
        for (int m = 0; m < members && i + m < w->n; m++) w->c[i + m].conv = id;
        free(cr[j].resp);
    }
    free(cr);
    free(owner);
    if (fail) {
        fprintf(stderr, "worker %d: %d conversations failed\n", w->id, fail);
        w->S->failed = 1;
    }
out:
    w->S->prov_s = (double)(now_ns() - t0) / 1e9;
}

/* Assigns this worker's connections for the scenario. */
static void worker_setup(wctx *w, int nitems)
{
    const char *s = O.scenario;
    int per = 1;
    if (!strcmp(s, "direct") || !strcmp(s, "storm")) per = 2;
    else if (!strcmp(s, "group")) per = O.gsize;
    w->n = nitems * per;
    w->c = xcalloc((size_t)w->n, sizeof *w->c);
    w->toks = xcalloc((size_t)w->n, sizeof *w->toks);
    w->senders = xcalloc((size_t)w->n, sizeof *w->senders);
    for (int i = 0; i < w->n; i++) {
        bc *c = &w->c[i];
        c->fd = -1;
        c->idx = (uint32_t)i;
        c->grp = (uint32_t)(i / per);
        c->member = (uint32_t)(i % per);
        client_backoff_init(&c->bo, 1000, 60000);
        if (!strcmp(s, "idle")) c->kind = K_IDLE;
        else if (!strcmp(s, "echo")) c->kind = K_ECHO;
        else if (!strcmp(s, "direct")) {
            c->kind = i % 2 ? K_DRECV : K_DSEND;
            c->member = 0;
            if (c->kind == K_DSEND) w->senders[w->nsenders++] = i;
        } else if (!strcmp(s, "group")) {
            c->kind = K_GMEM;
            if ((int)c->member < O.senders) w->senders[w->nsenders++] = i;
        } else if (!strcmp(s, "storm")) c->kind = i % 2 ? K_STORM_B : K_STORM_A;
    }
    if (!strcmp(s, "group")) {
        w->ngroups = nitems;
        w->fan = xcalloc((size_t)nitems * (size_t)O.senders * FAN_RING, sizeof *w->fan);
    }
}

static int items_for(int total, int wid)
{
    return total / O.workers + (wid < total % O.workers);
}

static void worker_main(int wid, int cmd_fd, int nitems)
{
    static wctx W;
    wctx *w = &W;
    w->id = wid;
    w->cmd_fd = cmd_fd;
    w->S = &SHM[wid];
    w->rbuf = xcalloc(1, RBUF);
    rng_state ^= (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL;
    snprintf(w->prefix, sizeof w->prefix, "pb%06x", RUN_ID);
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = IDX_CMD};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, cmd_fd, &ev);
    worker_setup(w, nitems);
    if (O.rate > 0) {
        int active = 0;
        const char *s = O.scenario;
        int total = !strcmp(s, "direct") ? O.pairs : O.groups;
        for (int i = 0; i < O.workers; i++) active += items_for(total, i) > 0;
        w->rate = w->nsenders ? O.rate / (active ? active : 1) : 0;
    }
    int64_t hard_end = now_ns() + 900LL * 1000000000LL;
    while (now_ns() < hard_end) {
        loop_once(w, 50);
        if (w->pend_op == CMD_EXIT) break;
        if (getppid() == 1) break;
    }
    /* RST, so no TIME_WAIT sockets linger into the next measurement */
    for (int i = 0; i < w->n; i++)
        if (w->c[i].fd >= 0) bc_close(w, &w->c[i], true);
    _exit(0);
}

/* ---- parent: workers and commands -------------------------------------------------- */

static pid_t WPID[MAX_WORKERS];
static int WFD[MAX_WORKERS];
static int CMD_SEQ;
static void (*PARENT_TICK)(void);

static void start_workers(int total_items)
{
    SHM = mmap(NULL, sizeof(wshm) * MAX_WORKERS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (SHM == MAP_FAILED) die("mmap: %s", strerror(errno));
    memset(SHM, 0, sizeof(wshm) * MAX_WORKERS);
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < O.workers; i++) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) die("pipe: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0) die("fork: %s", strerror(errno));
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
            if (getppid() == 1) _exit(1);
            close(p[1]);
            for (int j = 0; j < i; j++) close(WFD[j]);
            worker_main(i, p[0], items_for(total_items, i));
        }
        close(p[0]);
        WPID[i] = pid;
        WFD[i] = p[1];
    }
}

/* Sends a command to every worker and waits (bounded) until all finish it. */
static bool cmd_all(int op, int64_t arg, double timeout_s)
{
    int seq = ++CMD_SEQ;
    for (int i = 0; i < O.workers; i++) {
        cmd m = {op, seq, arg};
        if (write(WFD[i], &m, sizeof m) != (ssize_t)sizeof m) die("worker %d is gone", i);
    }
    int64_t end = now_ns() + (int64_t)(timeout_s * 1e9);
    while (now_ns() < end) {
        int ok = 0;
        for (int i = 0; i < O.workers; i++) {
            if (SHM[i].failed) die("worker %d failed", i);
            ok += SHM[i].ack_seq >= seq;
        }
        if (ok == O.workers) return true;
        int st;
        for (int i = 0; i < O.workers; i++)
            if (WPID[i] > 0 && waitpid(WPID[i], &st, WNOHANG) == WPID[i]) {
                WPID[i] = 0;
                die("worker %d exited early", i);
            }
        if (PARENT_TICK) PARENT_TICK();
        else usleep(2000);
    }
    return false;
}

static void stop_workers(void)
{
    for (int i = 0; i < O.workers; i++) {
        cmd m = {CMD_EXIT, ++CMD_SEQ, 0};
        if (write(WFD[i], &m, sizeof m) < 0) { /* gone already */ }
        close(WFD[i]);
    }
    int64_t end = now_ns() + 20000000000LL;
    for (int i = 0; i < O.workers; i++) {
        while (WPID[i] > 0 && now_ns() < end) {
            int st;
            if (waitpid(WPID[i], &st, WNOHANG) == WPID[i]) WPID[i] = 0;
            else usleep(10000);
        }
        if (WPID[i] > 0) {
            kill(WPID[i], SIGKILL);
            waitpid(WPID[i], NULL, 0);
            WPID[i] = 0;
        }
    }
}

static void merged(int kind, hist *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < O.workers; i++) h_merge(out, &SHM[i].h[kind]);
}

static void reset_hists(void)
{
    /* only between phases, while workers are quiet */
    for (int i = 0; i < O.workers; i++) memset(SHM[i].h, 0, sizeof SHM[i].h);
}

static double max_prov(void)
{
    double m = 0;
    for (int i = 0; i < O.workers; i++)
        if (SHM[i].prov_s > m) m = SHM[i].prov_s;
    return m;
}

/* ---- result file ---------------------------------------------------------------- */

static jw J;
static double LOAD_START, PSI_START;

/* CPU seconds of the load generator: the workers and this process. */
static double bench_cpu_s(void)
{
    double t = 0;
    for (int i = 0; i < O.workers; i++)
        if (WPID[i] > 0) t += proc_cpu_s(WPID[i]);
    return t + proc_cpu_s(getpid());
}

static void result_begin(void)
{
    J.cap = 4096;
    J.p = xcalloc(1, J.cap);
    J.first = true;
    jw_raw(&J, "{");
    J.first = true;
    jw_str(&J, "scenario", O.scenario);
    jw_str(&J, "label", O.label ? O.label : O.scenario);
    jw_str(&J, "target", O.floor ? "floor" : strcmp(O.scenario, "fsync") ? "parleyd" : "disk");
    jw_num(&J, "time", (double)time(NULL));
    jw_machine(&J);
    jw_open(&J, "params");
    jw_num(&J, "workers", O.workers);
    jw_num(&J, "sources", O.sources);
    jw_num(&J, "server_pid", O.pid);
    if (!strcmp(O.scenario, "idle") || !strcmp(O.scenario, "echo") || !strcmp(O.scenario, "storm"))
        jw_num(&J, "conns", O.conns);
    if (!strcmp(O.scenario, "echo") || !strcmp(O.scenario, "direct") || !strcmp(O.scenario, "group"))
        jw_num(&J, "seconds", O.seconds);
    if (!strcmp(O.scenario, "direct")) jw_num(&J, "pairs", O.pairs);
    if (!strcmp(O.scenario, "group")) {
        jw_num(&J, "groups", O.groups);
        jw_num(&J, "group_size", O.gsize);
        jw_num(&J, "senders", O.senders);
    }
    if (!strcmp(O.scenario, "direct") || !strcmp(O.scenario, "group")) {
        jw_str(&J, "mode", O.rate > 0 ? "paced" : "flat");
        jw_num(&J, "rate", O.rate);
        jw_num(&J, "window", O.window);
    }
    if (!strcmp(O.scenario, "direct") || !strcmp(O.scenario, "group") || !strcmp(O.scenario, "echo"))
        jw_num(&J, "body_bytes", O.size);
    if (!strcmp(O.scenario, "storm")) {
        jw_num(&J, "bg_rate", O.bg_rate);
        jw_num(&J, "pre_seconds", O.pre);
        jw_num(&J, "backoff_base_ms", 1000);
        jw_num(&J, "backoff_cap_ms", 60000);
    }
    if (!strcmp(O.scenario, "catchup")) {
        jw_num(&J, "messages", O.messages);
        jw_num(&J, "screen", 50);
        jw_num(&J, "page", 500);
    }
    jw_close(&J);
    jw_open(&J, "figures");
}

static void result_end(void)
{
    jw_close(&J); /* figures */
    jw_num(&J, "loadavg_start", LOAD_START);
    jw_num(&J, "loadavg_end", loadavg1());
    jw_num(&J, "cpu_pressure_start", PSI_START);
    jw_num(&J, "cpu_pressure_end", cpu_pressure());
    jw_raw(&J, "}\n");
    if (O.json) {
        FILE *f = fopen(O.json, "w");
        if (!f) die("%s: %s", O.json, strerror(errno));
        fwrite(J.p, 1, J.n, f);
        fclose(f);
        printf("  -> %s\n", O.json);
    }
}

/* Where the machine's CPU went between two samples: the server, the load
 * generator, everything else (other processes on the machine). */
static void report_machine(const psample *a, const psample *b, double bench_s)
{
    double dt = (double)(b->t - a->t) / 1e9;
    double busy = b->mach_busy_s - a->mach_busy_s, srv = b->cpu_s - a->cpu_s;
    double cores = (double)sysconf(_SC_NPROCESSORS_ONLN);
    if (dt <= 0 || busy < 0) return;
    double other = busy - srv - bench_s;
    if (other < 0) other = 0;
    printf("  machine CPU             %.0f%% of %.0f cores busy: server %.0f%%, load generator %.0f%%, other "
           "processes %.0f%% (of one core)\n", busy / dt / cores * 100, cores, srv / dt * 100, bench_s / dt * 100,
           other / dt * 100);
    jw_open(&J, "machine_cpu");
    jw_num(&J, "busy_share", busy / dt / cores);
    jw_num(&J, "server_cores", srv / dt);
    jw_num(&J, "bench_cores", bench_s / dt);
    jw_num(&J, "other_cores", other / dt);
    jw_close(&J);
}

/* ---- scenarios (parent side) ------------------------------------------------------ */

static void header(const char *what)
{
    printf("\n== %s %s: %s ==\n", O.label ? O.label : O.scenario,
           O.floor ? "(floor)" : strcmp(O.scenario, "fsync") ? "(parleyd)" : "(disk)", what);
}

static void need_pid(void)
{
    if (O.pid <= 0) die("--pid is required for %s (server RSS and CPU)", O.scenario);
}

static int run_idle(void)
{
    need_pid();
    int n = O.conns;
    start_workers(n);
    if (!cmd_all(CMD_PROVISION, 0, 240)) die("provisioning timed out");
    double prov = max_prov();
    sleep(1);
    psample s0 = sample();
    int half_w[MAX_WORKERS];
    int64_t t0 = now_ns();
    /* first half */
    for (int i = 0; i < O.workers; i++) half_w[i] = items_for(n, i) / 2;
    {
        int seq = ++CMD_SEQ;
        for (int i = 0; i < O.workers; i++) {
            cmd m = {CMD_CONNECT, seq, half_w[i]};
            if (write(WFD[i], &m, sizeof m) != (ssize_t)sizeof m) die("worker gone");
        }
        int64_t end = now_ns() + 180000000000LL;
        for (;;) {
            int ok = 0;
            for (int i = 0; i < O.workers; i++) ok += SHM[i].ack_seq >= seq;
            if (ok == O.workers || now_ns() > end) break;
            usleep(2000);
        }
    }
    int64_t t1 = now_ns();
    uint64_t open_half = sum_c(C_READY);
    sleep(2);
    psample s1 = sample();
    double b1 = bench_cpu_s();
    int64_t t2 = now_ns();
    if (!cmd_all(CMD_CONNECT, n, 180)) fprintf(stderr, "connect timed out\n");
    int64_t t3 = now_ns();
    uint64_t open_all = sum_c(C_READY);
    sleep(2);
    psample s2 = sample();
    double bcpu = bench_cpu_s() - b1;
    double ramp_s = (double)(t1 - t0 + t3 - t2) / 1e9;
    double dn = (double)(open_all - open_half);
    double anon_pc = dn > 0 ? (double)(s2.anon_kb - s1.anon_kb) * 1024.0 / dn : 0;
    double rss_pc = dn > 0 ? (double)(s2.rss_kb - s1.rss_kb) * 1024.0 / dn : 0;
    double rss_all_pc = open_all ? (double)(s2.rss_kb - s0.rss_kb) * 1024.0 / (double)open_all : 0;
    double slab_pc = dn > 0 ? (double)(s2.slab_kb - s1.slab_kb) * 1024.0 / dn : 0;
    double sock_pc = dn > 0 ? (double)(s2.sock_pages - s1.sock_pages) * 4096.0 / dn : 0;
    hist hs;
    merged(H_HS, &hs);
    header("idle authenticated connections");
    printf("  connections open        %" PRIu64 " of %d (%d workers, %d source addresses); %" PRIu64
           " failed handshakes, %" PRIu64 " refused (503)\n",
           open_all, n, O.workers, O.sources, sum_c(C_HS_FAIL), sum_c(C_REJ503));
    if (!O.floor) printf("  provisioning            %d users in %.1f s (%.0f/s)\n", n, prov, prov > 0 ? n / prov : 0);
    printf("  handshakes/s            %.0f (connect to %s, %d in flight per worker)\n",
           ramp_s > 0 ? (double)open_all / ramp_s : 0, O.floor ? "101" : "hello", O.concurrency);
    print_hist("handshake latency", &hs);
    printf("  server RSS              %ld KiB before, %ld KiB at %" PRIu64 ", %ld KiB at %" PRIu64 "\n",
           s0.rss_kb, s1.rss_kb, open_half, s2.rss_kb, open_all);
    printf("  user-space per conn     %.0f B anon (RssAnon), %.0f B VmRSS, second half of the ramp; "
           "%.0f B VmRSS over the whole ramp\n", anon_pc, rss_pc, rss_all_pc);
    printf("  kernel per conn         %.0f B slab, %.0f B TCP buffers (both ends of the loopback "
           "connection)\n", slab_pc, sock_pc);
    jw_num(&J, "conns_open", (double)open_all);
    jw_num(&J, "handshake_failures", (double)sum_c(C_HS_FAIL));
    jw_num(&J, "rejected_503", (double)sum_c(C_REJ503));
    jw_num(&J, "provision_s", prov);
    jw_num(&J, "handshakes_per_s", ramp_s > 0 ? (double)open_all / ramp_s : 0);
    jw_hist(&J, "handshake", &hs);
    jw_num(&J, "rss_kib_before", (double)s0.rss_kb);
    jw_num(&J, "rss_kib_half", (double)s1.rss_kb);
    jw_num(&J, "rss_kib_after", (double)s2.rss_kb);
    jw_num(&J, "anon_kib_half", (double)s1.anon_kb);
    jw_num(&J, "anon_kib_after", (double)s2.anon_kb);
    jw_num(&J, "user_bytes_per_conn", anon_pc);
    jw_num(&J, "rss_bytes_per_conn", rss_pc);
    jw_num(&J, "rss_bytes_per_conn_whole_ramp", rss_all_pc);
    jw_num(&J, "slab_bytes_per_conn", slab_pc);
    jw_num(&J, "sock_bytes_per_conn", sock_pc);
    if (s0.listen_drops >= 0 && s2.listen_drops >= 0) {
        printf("  accept queue overflows  %lld during the ramp (TcpExt ListenOverflows, whole machine)\n",
               s2.listen_drops - s0.listen_drops);
        jw_num(&J, "listen_overflows", (double)(s2.listen_drops - s0.listen_drops));
    }
    report_machine(&s1, &s2, bcpu);
    stop_workers();
    return open_all == (uint64_t)n ? 0 : 1;
}

static int run_echo(void)
{
    need_pid();
    start_workers(O.conns);
    if (!cmd_all(CMD_PROVISION, 0, 120)) die("provisioning timed out");
    if (!cmd_all(CMD_CONNECT, O.conns, 120)) die("connect timed out");
    uint64_t e0 = sum_c(C_ECHO);
    psample s0 = sample();
    double b0 = bench_cpu_s();
    cmd_all(CMD_RUN, 0, 10);
    usleep((useconds_t)O.seconds * 1000000u);
    psample s1 = sample();
    double bcpu = bench_cpu_s() - b0;
    uint64_t e1 = sum_c(C_ECHO);
    cmd_all(CMD_STOP, 0, 10);
    double dt = (double)(s1.t - s0.t) / 1e9, cpu = s1.cpu_s - s0.cpu_s;
    double n = (double)(e1 - e0);
    hist h;
    merged(H_RTT, &h);
    header("echo round trips");
    printf("  %d connections, %d-byte frames, %.1f s\n", O.conns, (int)ECHO_LEN, dt);
    printf("  echoes/s                %.0f\n", n / dt);
    print_hist("round trip", &h);
    printf("  server CPU              %.2f s = %.2f us per echo (%.0f%% of one core)\n", cpu,
           n > 0 ? cpu * 1e6 / n : 0, cpu / dt * 100);
    jw_num(&J, "echoes_per_s", n / dt);
    jw_hist(&J, "rtt", &h);
    jw_num(&J, "server_cpu_s", cpu);
    jw_num(&J, "server_cpu_us_per_echo", n > 0 ? cpu * 1e6 / n : 0);
    jw_num(&J, "server_cores_busy", cpu / dt);
    jw_num(&J, "bench_cores_busy", bcpu / dt);
    report_machine(&s0, &s1, bcpu);
    stop_workers();
    return 0;
}

static int run_traffic(void)
{
    need_pid();
    bool group = !strcmp(O.scenario, "group");
    int items = group ? O.groups : O.pairs;
    start_workers(items);
    if (!cmd_all(CMD_PROVISION, 0, 240)) die("provisioning timed out");
    double prov = max_prov();
    int nconn = group ? O.groups * O.gsize : 2 * O.pairs;
    if (!cmd_all(CMD_CONNECT, nconn, 120)) die("connect timed out");
    sleep(1); /* presence frames settle */
    reset_hists();
    uint64_t a0 = sum_c(C_ACKED), d0 = sum_c(C_DLV), f0 = sum_c(C_FAN_DONE);
    wmetrics m0 = scrape();
    psample s0 = sample();
    double b0 = bench_cpu_s();
    cmd_all(CMD_RUN, 0, 10);
    usleep((useconds_t)O.seconds * 1000000u);
    psample s1 = sample();
    double bcpu = bench_cpu_s() - b0;
    wmetrics m1 = scrape();
    uint64_t a1 = sum_c(C_ACKED), d1 = sum_c(C_DLV), f1 = sum_c(C_FAN_DONE);
    cmd_all(CMD_STOP, 0, 10);
    double dt = (double)(s1.t - s0.t) / 1e9, cpu = s1.cpu_s - s0.cpu_s;
    double msgs = (double)(a1 - a0), dl = (double)(d1 - d0);
    hist ha, hd, hf;
    merged(H_ACK, &ha);
    merged(H_DLV, &hd);
    merged(H_FAN, &hf);
    char what[160];
    if (group)
        snprintf(what, sizeof what, "%d groups of %d, %d sender(s) each, %s", O.groups, O.gsize, O.senders,
                 O.rate > 0 ? "paced" : "flat out");
    else
        snprintf(what, sizeof what, "%d pairs, %s", O.pairs, O.rate > 0 ? "paced" : "flat out");
    header(what);
    if (!O.floor) printf("  provisioning            %d users in %.1f s\n", nconn, prov);
    if (O.rate > 0) printf("  target rate             %.0f msgs/s (open loop; latency from the intended send time)\n", O.rate);
    else printf("  window                  %d unacknowledged per sender\n", O.window);
    printf("  durable msgs/s          %.0f acked%s\n", msgs / dt, O.floor ? " (floor: relayed, nothing stored)" : "");
    printf("  deliveries/s            %.0f\n", dl / dt);
    print_hist("send->ack", &ha);
    print_hist("send->delivery", &hd);
    if (group) print_hist("fan-out (last member)", &hf);
    printf("  server CPU              %.2f s = %.2f us per message, %.3f us per delivery (%.0f%% of one core)\n",
           cpu, msgs > 0 ? cpu * 1e6 / msgs : 0, dl > 0 ? cpu * 1e6 / dl : 0, cpu / dt * 100);
    report_machine(&s0, &s1, bcpu);
    report_writer(&J, &m0, &m1, dt);
    double disk = s1.disk_w >= 0 && s0.disk_w >= 0 ? (double)(s1.disk_w - s0.disk_w) : NAN;
    if (!O.floor && disk == disk && msgs > 0) {
        printf("  disk writes             %.1f MB/s = %.0f bytes per message\n", disk / dt / 1e6, disk / msgs);
        jw_num(&J, "disk_bytes_per_msg", disk / msgs);
        jw_num(&J, "disk_mb_per_s", disk / dt / 1e6);
    }
    uint64_t errs = sum_c(C_ERRORS), closed = sum_c(C_CLOSED), late = sum_c(C_LATE);
    if (errs || closed || late)
        printf("  problems                %" PRIu64 " error frames (%" PRIu64 " busy), %" PRIu64
               " connections lost, %" PRIu64 " paced sends skipped (2000 unacked)\n",
               errs, sum_c(C_BUSY), closed, late);
    jw_num(&J, "provision_s", prov);
    jw_num(&J, "msgs_per_s", msgs / dt);
    jw_num(&J, "deliveries_per_s", dl / dt);
    jw_hist(&J, "send_ack", &ha);
    jw_hist(&J, "send_delivery", &hd);
    if (group) {
        jw_hist(&J, "fanout", &hf);
        jw_num(&J, "fanouts_complete", (double)(f1 - f0));
    }
    jw_num(&J, "server_cpu_s", cpu);
    jw_num(&J, "server_cpu_us_per_msg", msgs > 0 ? cpu * 1e6 / msgs : 0);
    jw_num(&J, "server_cpu_us_per_delivery", dl > 0 ? cpu * 1e6 / dl : 0);
    jw_num(&J, "server_cores_busy", cpu / dt);
    jw_num(&J, "bench_cores_busy", bcpu / dt);
    jw_num(&J, "error_frames", (double)errs);
    jw_num(&J, "busy", (double)sum_c(C_BUSY));
    jw_num(&J, "conns_lost", (double)closed);
    jw_num(&J, "paced_skipped", (double)late);
    stop_workers();
    return 0;
}

/* A parent-side context for a few connections (background, catchup). */
static wctx PW;
static wshm PSTATS;

static void pw_init(int n)
{
    memset(&PW, 0, sizeof PW);
    PW.id = 99;
    PW.S = &PSTATS;
    PW.rbuf = xcalloc(1, RBUF);
    PW.ep = epoll_create1(EPOLL_CLOEXEC);
    PW.cmd_fd = -1;
    PW.n = n;
    PW.c = xcalloc((size_t)n, sizeof *PW.c);
    for (int i = 0; i < n; i++) {
        PW.c[i].fd = -1;
        PW.c[i].idx = (uint32_t)i;
        client_backoff_init(&PW.c[i].bo, 1000, 60000);
    }
}

static int register_one(hc *h, const char *name, char *tok)
{
    char body[160];
    const char *resp;
    size_t rl;
    snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"bench-password\"}", name);
    int st = hc_do(h, "POST", "/v1/users", NULL, body, &resp, &rl);
    json_obj o;
    if (st != 201 || json_parse_object(resp, rl, &o) < 0 || json_get_str(&o, "token", tok, 64) < 0) {
        fprintf(stderr, "register %s: %d\n", name, st);
        return -1;
    }
    return 0;
}

static uint64_t direct_conv(hc *h, const char *tok, const char *with)
{
    char body[160];
    const char *resp;
    size_t rl;
    snprintf(body, sizeof body, "{\"type\":\"direct\",\"with\":\"%s\"}", with);
    int st = hc_do(h, "POST", "/v1/conversations", tok, body, &resp, &rl);
    json_obj o;
    uint64_t id = 0;
    if ((st != 201 && st != 200) || json_parse_object(resp, rl, &o) < 0 || json_get_u64(&o, "id", &id) < 0)
        return 0;
    return id;
}

static void bg_send(int64_t intended, uint64_t k)
{
    bc *c = &PW.c[0];
    if (c->st != ST_READY) return;
    char p[256];
    int n = snprintf(p, sizeof p,
                     "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"bg%" PRIu64 "\",\"body\":\"%" PRId64
                     " %" PRIu64 " 0 background\"}",
                     c->conv, k, intended, k);
    bc_text(&PW, c, p, (size_t)n);
}

static bool BG_ON;

static void bg_tick(void)
{
    loop_once(&PW, 1);
    if (!BG_ON) return;
    int64_t now = now_ns();
    double due = (double)(now - PW.pace_t0) / 1e9 * O.bg_rate;
    int guard = 0;
    while ((double)BG.sent < due && BG.sent < BG.cap && guard++ < 1000) {
        int64_t intended = PW.pace_t0 + (int64_t)((double)BG.sent / O.bg_rate * 1e9);
        BG.t[BG.sent] = intended;
        bg_send(intended, BG.sent);
        BG.sent++;
    }
    for (uint64_t k = 0; k < BG.sent && guard < 2000; k++)
        if (BG.resend[k]) {
            BG.resend[k] = 0;
            bg_send(BG.t[k], k);
            guard++;
        }
}

/* Pages through a conversation's history over REST; counts acked background
 * messages that are missing and gaps in seq. */
static void bg_verify(const char *tok, uint64_t conv, uint64_t *lost, uint64_t *gaps, uint64_t *total)
{
    hc h;
    h.fd = -1;
    h.in = NULL;
    uint64_t after = 0, expect = 1;
    uint64_t *seen = xcalloc(BG.cap + 1, sizeof *seen); /* seq by message number */
    *gaps = *lost = *total = 0;
    for (int page = 0; page < 100000; page++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/conversations/%" PRIu64 "/messages?after=%" PRIu64 "&limit=500",
                 conv, after);
        const char *resp;
        size_t rl;
        int st = hc_do(&h, "GET", path, tok, NULL, &resp, &rl);
        if (st != 200) { fprintf(stderr, "history: HTTP %d\n", st); break; }
        json_obj o;
        const json_field *f;
        if (json_parse_object(resp, rl, &o) < 0 || !(f = json_get(&o, "messages"))) break;
        /* walk messages */
        const char *p = f->val, *end = f->val + f->val_len;
        int got = 0;
        while (p < end) {
            const char *s = jfind(p, (size_t)(end - p), "seq");
            if (!s) break;
            uint64_t seq = strtoull(s, NULL, 10);
            const char *cm = jfind(s, (size_t)(end - s), "cmid");
            if (!cm) break;
            uint64_t k = strtoull(cm + 3, NULL, 10);
            if (seq != expect) (*gaps)++;
            expect = seq + 1;
            if (k < BG.cap) seen[k] = seq;
            after = seq;
            got++;
            (*total)++;
            p = cm;
        }
        bool more = jfind(resp, rl, "more") && memcmp(jfind(resp, rl, "more"), "true", 4) == 0;
        if (!more || !got) break;
    }
    for (uint64_t k = 0; k < BG.sent; k++)
        if (BG.seq[k] && seen[k] != BG.seq[k]) (*lost)++;
    free(seen);
    hc_close(&h);
}

static int run_storm(void)
{
    need_pid();
    int pairs = O.conns / 2;
    O.conns = pairs * 2;
    /* background conversation: provisioned by the parent, never dropped */
    hc h;
    h.fd = -1;
    h.in = NULL;
    char na[40], nb[40], ta[64], tb[64];
    snprintf(na, sizeof na, "pb%06xbga", RUN_ID);
    snprintf(nb, sizeof nb, "pb%06xbgb", RUN_ID);
    if (register_one(&h, na, ta) < 0 || register_one(&h, nb, tb) < 0) die("background users");
    uint64_t bconv = direct_conv(&h, ta, nb);
    if (!bconv) die("background conversation");
    hc_close(&h);
    pw_init(2);
    PW.c[0].kind = K_BG_SEND;
    PW.c[1].kind = K_BG_RECV;
    PW.c[0].tok = ta;
    PW.c[1].tok = tb;
    PW.c[0].conv = PW.c[1].conv = bconv;
    BG.cap = (uint64_t)(O.bg_rate * (O.timeout + O.pre + 30)) + 16;
    BG.seq = xcalloc(BG.cap, sizeof *BG.seq);
    BG.t = xcalloc(BG.cap, sizeof *BG.t);
    BG.resend = xcalloc(BG.cap, 1);
    PW.target = 2;

    start_workers(pairs);
    int64_t tp = now_ns();
    if (!cmd_all(CMD_PROVISION, 0, 240)) die("provisioning timed out");
    double prov = (double)(now_ns() - tp) / 1e9;
    PARENT_TICK = bg_tick;
    int64_t tc = now_ns();
    if (!cmd_all(CMD_CONNECT, O.conns, 180)) die("initial connect timed out (%" PRIu64 " ready)", sum_c(C_READY));
    double conn_s = (double)(now_ns() - tc) / 1e9;
    uint64_t rej_initial = sum_c(C_REJ503);
    for (int i = 0; i < 2000 && PW.nready < 2; i++) bg_tick();
    if (PW.nready < 2) die("background connections failed");
    /* steady state */
    BG_ON = true;
    PW.pace_t0 = now_ns();
    int64_t pre_end = now_ns() + (int64_t)O.pre * 1000000000LL;
    while (now_ns() < pre_end) bg_tick();
    wmetrics m0 = scrape();
    psample s0 = sample();
    uint64_t rej0 = sum_c(C_REJ503), r429_0 = sum_c(C_REJ429), fail0 = sum_c(C_HS_FAIL),
             att0 = sum_c(C_ATTEMPTS);
    double b0 = bench_cpu_s();
    int64_t drop_at = now_ns();
    PW.drop_at = drop_at;
    header("reconnect storm");
    printf("  %d clients (%d direct conversations), %d workers; provisioning %.1f s; initial connect %.1f s "
           "(%" PRIu64 " refused with 503 on the way)\n",
           O.conns, pairs, O.workers, prov, conn_s, rej_initial);
    fflush(stdout);
    cmd_all(CMD_DROP, drop_at, 10);
    int64_t end = drop_at + (int64_t)O.timeout * 1000000000LL;
    /* The writer's queue and the server's response time, sampled every 50 ms
     * by a separate process (a blocking GET /metrics must not stall the
     * background conversation this process drives). */
    struct qsamp { volatile int stop; volatile int n; volatile double max, sum, max_at_s, rt_max_ms, rt_sum_ms; } *Q;
    Q = mmap(NULL, sizeof *Q, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (Q == MAP_FAILED) die("mmap");
    memset((void *)Q, 0, sizeof *Q);
    fflush(stdout);
    pid_t sampler = fork();
    if (sampler == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int64_t qend = drop_at + (int64_t)O.timeout * 1000000000LL;
        while (!Q->stop && now_ns() < qend) {
            int64_t t = now_ns();
            wmetrics q = scrape();
            double rt = (double)(now_ns() - t) / 1e6;
            if (q.ok && q.queue == q.queue) {
                Q->sum += q.queue;
                Q->rt_sum_ms += rt;
                if (rt > Q->rt_max_ms) Q->rt_max_ms = rt;
                if (q.queue > Q->max) { Q->max = q.queue; Q->max_at_s = (double)(now_ns() - drop_at) / 1e9; }
                Q->n++;
            }
            usleep(50000);
        }
        _exit(0);
    }
    int64_t last_tick = now_ns(), max_gap = 0;
    while (now_ns() < end && sum_c(C_SYNCED) < (uint64_t)O.conns) {
        bg_tick();
        int64_t t = now_ns();
        if (t - last_tick > max_gap) max_gap = t - last_tick;
        last_tick = t;
    }
    Q->stop = 1;
    if (sampler > 0) {
        int64_t wend = now_ns() + 15000000000LL;
        while (waitpid(sampler, NULL, WNOHANG) == 0 && now_ns() < wend) usleep(10000);
        if (now_ns() >= wend) { kill(sampler, SIGKILL); waitpid(sampler, NULL, 0); }
    }
    double qmax = Q->max, qmax_at = Q->max_at_s;
    int qn = Q->n;
    double qsum = Q->sum, rt_max = Q->rt_max_ms, rt_mean = qn ? Q->rt_sum_ms / qn : 0;
    int64_t t_all = 0, t_back = 0;
    for (int i = 0; i < O.workers; i++) {
        if (SHM[i].t_sync_last > t_all) t_all = SHM[i].t_sync_last;
        if (SHM[i].t_back_last > t_back) t_back = SHM[i].t_back_last;
    }
    uint64_t synced = sum_c(C_SYNCED), back = sum_c(C_BACK);
    BG.storm_end = now_ns();
    psample s1 = sample();
    double bcpu = bench_cpu_s() - b0;
    wmetrics m1 = scrape();
    /* a little steady state after, then stop the background and drain */
    int64_t post_end = now_ns() + 1000000000LL;
    while (now_ns() < post_end) bg_tick();
    BG_ON = false;
    int64_t drain_end = now_ns() + 10000000000LL;
    while (now_ns() < drain_end && BG.acked < BG.sent) {
        bg_tick();
        /* resend anything not acked for 2 s (the server may have refused it) */
        static int64_t last;
        if (now_ns() - last > 2000000000LL) {
            last = now_ns();
            for (uint64_t k = 0; k < BG.sent; k++)
                if (!BG.seq[k]) BG.resend[k] = 1;
        }
    }
    uint64_t bg_lost = 0, gaps = 0, total = 0;
    bg_verify(ta, bconv, &bg_lost, &gaps, &total);
    uint64_t storm_lost = sum_c(C_LOST);
    double all_s = synced == (uint64_t)O.conns ? (double)(t_all - drop_at) / 1e9 : -1;
    double back_s = back >= (uint64_t)O.conns ? (double)(t_back - drop_at) / 1e9 : -1;
    hist hb, hs, pre, during, post, bga;
    merged(H_BACK, &hb);
    merged(H_SYNC, &hs);
    pre = PSTATS.h[H_BG_PRE];
    during = PSTATS.h[H_BG_STORM];
    post = PSTATS.h[H_BG_POST];
    bga = PSTATS.h[H_BG_ACK];
    uint64_t rej = sum_c(C_REJ503) - rej0, r429 = sum_c(C_REJ429) - r429_0;
    uint64_t fails = sum_c(C_HS_FAIL) - fail0, atts = sum_c(C_ATTEMPTS) - att0;
    if (all_s >= 0) printf("  all back and synced     %.2f s after the drop (all back: %.2f s)\n", all_s, back_s);
    else printf("  NOT all synced          %" PRIu64 " of %d synced, %" PRIu64 " back within %d s\n", synced,
                O.conns, back, O.timeout);
    print_hist("drop -> back (hello)", &hb);
    print_hist("drop -> synced", &hs);
    printf("  handshakes              %" PRIu64 " attempts, %" PRIu64 " refused 503 (admission control), %" PRIu64
           " refused 429, %" PRIu64 " failed\n", atts, rej, r429, fails);
    if (s0.listen_drops >= 0 && s1.listen_drops >= 0)
        printf("  accept queue overflows  %lld (TcpExt ListenOverflows, whole machine): each costs its client a "
               "1 s SYN retransmit\n", s1.listen_drops - s0.listen_drops);
    printf("  drop-time messages      %" PRIu64 " of %d stored before the drop (resend answered as duplicate)\n",
           sum_c(C_DUP), pairs);
    printf("  background              %.0f msgs/s; %" PRIu64 " sent, %" PRIu64 " acked, history %" PRIu64
           " messages, %" PRIu64 " seq gaps\n", O.bg_rate, BG.sent, BG.acked, total, gaps);
    print_hist("bg delivery before", &pre);
    print_hist("bg delivery during", &during);
    print_hist("bg delivery after", &post);
    print_hist("bg send->ack (all)", &bga);
    printf("  messages lost           %" PRIu64 " (background %" PRIu64 ", storm clients %" PRIu64 "), must be 0\n",
           bg_lost + storm_lost, bg_lost, storm_lost);
    printf("  server CPU              %.2f s during the storm (%.0f%% of one core)\n", s1.cpu_s - s0.cpu_s,
           (s1.cpu_s - s0.cpu_s) / ((double)(s1.t - s0.t) / 1e9) * 100);
    if (qn)
        printf("  writer queue            max %.0f writes waiting (%.2f s after the drop), mean %.0f; GET /metrics "
               "answered in %.0f ms mean, %.0f ms max (%d samples)\n", qmax, qmax_at, qsum / qn, rt_mean, rt_max, qn);
    printf("  load generator          background loop stalled at most %.1f ms\n", (double)max_gap / 1e6);
    report_machine(&s0, &s1, bcpu);
    report_writer(&J, &m0, &m1, (double)(s1.t - s0.t) / 1e9);
    jw_num(&J, "provision_s", prov);
    jw_num(&J, "initial_connect_s", conn_s);
    jw_num(&J, "all_synced_s", all_s);
    jw_num(&J, "all_back_s", back_s);
    jw_num(&J, "synced", (double)synced);
    jw_num(&J, "back", (double)back);
    jw_hist(&J, "drop_to_back", &hb);
    jw_hist(&J, "drop_to_synced", &hs);
    jw_num(&J, "handshake_attempts", (double)atts);
    jw_num(&J, "rejected_503", (double)rej);
    jw_num(&J, "rejected_429", (double)r429);
    jw_num(&J, "handshake_failures", (double)fails);
    jw_num(&J, "drop_msgs_stored_before", (double)sum_c(C_DUP));
    jw_num(&J, "bg_sent", (double)BG.sent);
    jw_num(&J, "bg_acked", (double)BG.acked);
    jw_num(&J, "bg_gaps", (double)gaps);
    jw_hist(&J, "bg_delivery_before", &pre);
    jw_hist(&J, "bg_delivery_during", &during);
    jw_hist(&J, "bg_delivery_after", &post);
    jw_num(&J, "bg_p99_during_us", h_pct_us(&during, 0.99));
    jw_num(&J, "messages_lost", (double)(bg_lost + storm_lost));
    jw_num(&J, "lost_background", (double)bg_lost);
    jw_num(&J, "lost_storm_clients", (double)storm_lost);
    jw_num(&J, "server_cpu_s", s1.cpu_s - s0.cpu_s);
    jw_num(&J, "writer_queue_max", qmax);
    jw_num(&J, "listen_overflows", (double)(s1.listen_drops - s0.listen_drops));
    jw_num(&J, "writer_queue_mean", qn ? qsum / qn : 0);
    jw_num(&J, "metrics_rt_mean_ms", rt_mean);
    jw_num(&J, "metrics_rt_max_ms", rt_max);
    jw_num(&J, "bench_bg_loop_max_gap_ms", (double)max_gap / 1e6);
    PARENT_TICK = NULL;
    stop_workers();
    return bg_lost + storm_lost ? 1 : 0;
}

/* First screen: inbox + last 50, pipelined on one fresh connection. */
static int first_screen(const char *tok, uint64_t conv, double *ms, uint64_t *bin, uint64_t *bout,
                        uint64_t *last_seq, int *nmsgs)
{
    int64_t t0 = now_ns();
    hc h;
    if (hc_open(&h) < 0) return -1;
    char path[128];
    snprintf(path, sizeof path, "/v1/conversations/%" PRIu64 "/messages?limit=50", conv);
    if (hc_write(&h, "GET", "/v1/conversations", tok, NULL) < 0 || hc_write(&h, "GET", path, tok, NULL) < 0) {
        hc_close(&h);
        return -1;
    }
    int st1 = 0, st2 = 0;
    const char *b;
    size_t bl;
    if (hc_read(&h, &st1, &b, &bl, NULL) < 0) { hc_close(&h); return -1; }
    bool ok = st1 == 200 && jfind(b, bl, "last_seq");
    if (hc_read(&h, &st2, &b, &bl, NULL) < 0) { hc_close(&h); return -1; }
    *ms = (double)(now_ns() - t0) / 1e6;
    hist_scan hs = {0};
    json_obj o;
    const json_field *f;
    if (st2 == 200 && json_parse_object(b, bl, &o) == 0 && (f = json_get(&o, "messages")))
        json_array_each(f->val, f->val_len, scan_msg, &hs);
    *last_seq = hs.max_seq;
    *nmsgs = hs.count;
    *bin = h.bytes_in;
    *bout = h.bytes_out;
    hc_close(&h);
    return ok && st2 == 200 ? 0 : -1;
}

static int run_catchup(void)
{
    hc h;
    h.fd = -1;
    h.in = NULL;
    char na[40], nb[40], ta[64], tb[64];
    snprintf(na, sizeof na, "pb%06xca", RUN_ID);
    snprintf(nb, sizeof nb, "pb%06xcb", RUN_ID);
    if (register_one(&h, na, ta) < 0 || register_one(&h, nb, tb) < 0) die("catchup users");
    uint64_t conv = direct_conv(&h, ta, nb);
    if (!conv) die("catchup conversation");
    hc_close(&h);
    /* b is offline; a sends M messages over one WebSocket, window 256 */
    pw_init(1);
    PW.S = &PSTATS;
    O.workers = 0;
    bc *c = &PW.c[0];
    c->kind = K_CATCH_SEND;
    c->tok = ta;
    c->conv = conv;
    PW.target = 1;
    int64_t end = now_ns() + 30000000000LL;
    while (PW.nready < 1 && now_ns() < end) loop_once(&PW, 10);
    if (PW.nready < 1) die("catchup sender could not connect");
    wmetrics m0 = scrape();
    psample s0 = sample();
    double b0 = bench_cpu_s();
    int64_t t0 = now_ns();
    int window = 256;
    end = t0 + 600000000000LL;
    uint64_t sent = 0;
    while (PSTATS.c[C_ACKED] < (uint64_t)O.messages && now_ns() < end) {
        while (c->outstanding < window && sent < (uint64_t)O.messages) {
            send_msg(&PW, c, now_ns());
            sent++;
        }
        loop_once(&PW, 10);
        if (c->st != ST_READY) die("catchup sender lost its connection");
    }
    double fill_s = (double)(now_ns() - t0) / 1e9;
    wmetrics m1 = scrape();
    psample s1 = sample();
    double bcpu = bench_cpu_s() - b0;
    uint64_t acked = PSTATS.c[C_ACKED];
    bc_close(&PW, c, false);
    hist ha = PSTATS.h[H_ACK];
    /* first screen: cold, then repeated */
    double ms0 = 0, ms;
    uint64_t bin0 = 0, bout0 = 0, bin, bout, last = 0;
    int nm = 0;
    if (first_screen(tb, conv, &ms0, &bin0, &bout0, &last, &nm) < 0) die("first screen failed");
    hist fs;
    memset(&fs, 0, sizeof fs);
    for (int i = 0; i < O.screens; i++) {
        if (first_screen(tb, conv, &ms, &bin, &bout, &last, &nm) < 0) die("first screen failed");
        h_add(&fs, (int64_t)(ms * 1e6));
    }
    /* full sync: pages of 500 after= */
    int64_t ts = now_ns();
    hc s;
    if (hc_open(&s) < 0) die("connect");
    uint64_t after = 0, got = 0, gaps = 0;
    int pages = 0;
    for (; pages < 100000; ) {
        char path[128];
        snprintf(path, sizeof path, "/v1/conversations/%" PRIu64 "/messages?after=%" PRIu64 "&limit=500",
                 conv, after);
        const char *b;
        size_t bl;
        int st = 0;
        if (hc_write(&s, "GET", path, tb, NULL) < 0 || hc_read(&s, &st, &b, &bl, NULL) < 0 || st != 200)
            die("sync page failed (HTTP %d)", st);
        pages++;
        hist_scan hs = {0};
        json_obj o;
        const json_field *f;
        if (json_parse_object(b, bl, &o) == 0 && (f = json_get(&o, "messages")))
            json_array_each(f->val, f->val_len, scan_msg, &hs);
        if (hs.count && hs.max_seq != after + (uint64_t)hs.count) gaps++;
        got += (uint64_t)hs.count;
        if (hs.max_seq > after) after = hs.max_seq;
        bool more = jfind(b, bl, "more") && memcmp(jfind(b, bl, "more"), "true", 4) == 0;
        if (!more || !hs.count) break;
    }
    double sync_ms = (double)(now_ns() - ts) / 1e6;
    uint64_t sbin = s.bytes_in, sbout = s.bytes_out;
    hc_close(&s);
    header("catch-up after missed messages");
    printf("  missed messages         %" PRIu64 " (sent over one WebSocket in %.1f s = %.0f msgs/s into one "
           "conversation, window %d)\n", acked, fill_s, (double)acked / fill_s, window);
    print_hist("fill send->ack", &ha);
    report_writer(&J, &m0, &m1, fill_s);
    report_machine(&s0, &s1, bcpu);
    if (s0.disk_w >= 0 && s1.disk_w >= 0 && acked) {
        printf("  disk writes             %.0f bytes per message\n", (double)(s1.disk_w - s0.disk_w) / (double)acked);
        jw_num(&J, "disk_bytes_per_msg", (double)(s1.disk_w - s0.disk_w) / (double)acked);
    }
    printf("  first screen (cold)     %.2f ms, %" PRIu64 " bytes in, %" PRIu64 " bytes out (inbox + last %d, "
           "last seq %" PRIu64 ")\n", ms0, bin0, bout0, nm, last);
    print_hist("first screen (warm)", &fs);
    printf("  full sync               %.0f ms, %" PRIu64 " bytes in, %" PRIu64 " bytes out, %d pages of 500, %"
           PRIu64 " messages, %" PRIu64 " bad pages\n", sync_ms, sbin, sbout, pages, got, gaps);
    jw_num(&J, "messages", (double)acked);
    jw_num(&J, "fill_s", fill_s);
    jw_num(&J, "fill_msgs_per_s", (double)acked / fill_s);
    jw_hist(&J, "fill_send_ack", &ha);
    jw_num(&J, "first_screen_ms", ms0);
    jw_num(&J, "first_screen_bytes", (double)bin0);
    jw_num(&J, "first_screen_bytes_out", (double)bout0);
    jw_num(&J, "first_screen_msgs", nm);
    jw_hist(&J, "first_screen_warm", &fs);
    jw_num(&J, "full_sync_ms", sync_ms);
    jw_num(&J, "full_sync_bytes", (double)sbin);
    jw_num(&J, "full_sync_pages", pages);
    jw_num(&J, "full_sync_messages", (double)got);
    jw_num(&J, "full_sync_bad_pages", (double)gaps);
    return got == acked && !gaps ? 0 : 1;
}

/* fsync: the latency of one 4 KiB pwrite + fdatasync in --dir, the floor
 * under any durable acknowledgement on this disk. */
static int run_fsync(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/parley-bench-fsync.%d", dir, getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("%s: %s", path, strerror(errno));
    char buf[4096];
    memset(buf, 'f', sizeof buf);
    hist h;
    memset(&h, 0, sizeof h);
    int64_t end = now_ns() + 5000000000LL;
    for (int i = 0; i < O.messages && now_ns() < end; i++) {
        if (pwrite(fd, buf, sizeof buf, (off_t)(i % 64) * 4096) != (ssize_t)sizeof buf) break;
        int64_t t = now_ns();
        if (fdatasync(fd) != 0) break;
        h_add(&h, now_ns() - t);
    }
    close(fd);
    unlink(path);
    header("disk: 4 KiB pwrite + fdatasync");
    printf("  directory               %s\n", dir);
    print_hist("fdatasync", &h);
    jw_hist(&J, "fdatasync", &h);
    return 0;
}

/* ---- summary: the targets of issue 5 against the runs of one `make bench` ----------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 65536, n = 0;
    char *p = xcalloc(1, cap);
    size_t r;
    while ((r = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 4096) {
            cap *= 2;
            p = xrealloc(p, cap);
        }
    }
    fclose(f);
    p[n] = 0;
    while (n && (p[n - 1] == '\n' || p[n - 1] == ' ')) p[--n] = 0;
    return p;
}

typedef struct run {
    char label[48];
    char *text;
} run;

static run RUNS[64];
static int NRUNS;

static const char *run_text(const char *label)
{
    for (int i = 0; i < NRUNS; i++)
        if (!strcmp(RUNS[i].label, label)) return RUNS[i].text;
    return NULL;
}

/* A number at "key" (a path like "send_delivery.p99_us" looks up the object
 * first) in the figures of run `label`; NAN if absent. */
static double fig(const char *label, const char *path)
{
    const char *t = run_text(label);
    if (!t) return NAN;
    const char *p = jfind(t, strlen(t), "figures");
    if (!p) return NAN;
    char key[64];
    const char *dot = strchr(path, '.');
    if (dot) {
        snprintf(key, sizeof key, "%.*s", (int)(dot - path), path);
        p = jfind(p, strlen(p), key);
        if (!p) return NAN;
        path = dot + 1;
    }
    p = jfind(p, strlen(p), path);
    if (!p || *p == 'n') return NAN;
    return strtod(p, NULL);
}

static double param(const char *label, const char *key)
{
    const char *t = run_text(label);
    const char *p = t ? jfind(t, strlen(t), "params") : NULL;
    p = p ? jfind(p, strlen(p), key) : NULL;
    return p ? strtod(p, NULL) : NAN;
}

typedef struct target_row {
    const char *name, *goal;
    double measured, goal_v, floor_v;
    const char *unit, *floor_what;
    bool higher_better;
    double ratio; /* parley / floor */
} target_row;

static int run_summary(int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) { out = argv[++i]; continue; }
        if (NRUNS >= 64) break;
        char *t = slurp(argv[i]);
        if (!t || !*t) { fprintf(stderr, "summary: skipping %s\n", argv[i]); free(t); continue; }
        const char *l = jfind(t, strlen(t), "label");
        if (!l || *l != '"') { free(t); continue; }
        const char *e = strchr(l + 1, '"');
        snprintf(RUNS[NRUNS].label, sizeof RUNS[NRUNS].label, "%.*s", (int)(e - l - 1), l + 1);
        RUNS[NRUNS++].text = t;
    }
    if (!NRUNS) die("summary: no runs");
    double idle_b = fig("idle", "user_bytes_per_conn"), idle_fb = fig("idle-floor", "user_bytes_per_conn");
    double idle_slab = fig("idle", "slab_bytes_per_conn"), idle_fslab = fig("idle-floor", "slab_bytes_per_conn");
    double idle_n = fig("idle", "conns_open");
    double d_rate = fig("direct", "msgs_per_s");
    double cpu_p = fig("direct", "server_cpu_us_per_msg"), cpu_f = fig("direct-floor", "server_cpu_us_per_msg");
    double paced_rate = param("direct-paced", "rate");
    double paced_p99 = fig("direct-paced", "send_delivery.p99_us");
    double paced_got = fig("direct-paced", "msgs_per_s");
    double half_rate = param("direct-half", "rate"), half_p99 = fig("direct-half", "send_delivery.p99_us");
    double g_rate = fig("group", "deliveries_per_s");
    double g_cpu = fig("group", "server_cpu_us_per_delivery");
    double fs_ms = fig("catchup", "first_screen_ms"), fs_b = fig("catchup", "first_screen_bytes");
    double cu_msgs = fig("catchup", "messages");
    double st_s = fig("storm", "all_synced_s"), st_lost = fig("storm", "messages_lost");
    double st_n = param("storm", "conns");
    double st_p99 = fig("storm", "bg_p99_during_us"), st_rej = fig("storm", "rejected_503");
    double fs_p50 = fig("fsync", "fdatasync.p50_us"), fs_p99 = fig("fsync", "fdatasync.p99_us");
    double echo_cpu = fig("echo", "server_cpu_us_per_echo"), echo_fcpu = fig("echo-floor", "server_cpu_us_per_echo");

    jw j = {.cap = 65536};
    j.p = xcalloc(1, j.cap);
    jw_raw(&j, "{");
    j.first = true;
    jw_num(&j, "generated", (double)time(NULL));
    /* machine: copy from the first run */
    const char *m = jfind(RUNS[0].text, strlen(RUNS[0].text), "machine");
    if (m) {
        const char *e = strchr(m, '}');
        jw_key(&j, "machine");
        jw_raw(&j, "%.*s", (int)(e - m + 1), m);
    }
    jw_raw(&j, ",\"targets\":[");
    j.first = true;

    printf("\n== parley-bench summary: targets of issue 5 ==\n");
    printf("%-42s %-24s %-34s %-4s %s\n", "target", "goal", "measured", "met", "vs floor (same run)");
    struct {
        const char *name, *goal;
        char measured[80];
        bool met, known;
        char floor[96];
        double value, ratio;
    } rows[12];
    int nr = 0;
#define ROW(N, G, V, MET, FMT, ...)                                                      \
    do {                                                                                 \
        rows[nr].name = N;                                                               \
        rows[nr].goal = G;                                                               \
        rows[nr].value = V;                                                              \
        rows[nr].known = (V) == (V);                                                     \
        rows[nr].met = rows[nr].known && (MET);                                          \
        snprintf(rows[nr].measured, sizeof rows[nr].measured, FMT, __VA_ARGS__);         \
        rows[nr].floor[0] = 0;                                                           \
        rows[nr].ratio = NAN;                                                            \
        nr++;                                                                            \
    } while (0)
    ROW("idle: user-space bytes per idle conn", "< 1024 B at 15,000+", idle_b, idle_b < 1024 && idle_n >= 15000,
        "%.0f B (RssAnon) at %.0f", idle_b, idle_n);
    if (idle_fb == idle_fb) {
        rows[nr - 1].ratio = idle_b / idle_fb;
        snprintf(rows[nr - 1].floor, sizeof rows[nr - 1].floor, "floor %.0f B = %.1fx; kernel %.0f vs %.0f B",
                 idle_fb, idle_b / idle_fb, idle_slab, idle_fslab);
    }
    ROW("direct: durable msgs/s", ">= 100,000", d_rate, d_rate >= 100000, "%.0f msgs/s", d_rate);
    if (cpu_f == cpu_f) {
        rows[nr - 1].ratio = cpu_p / cpu_f;
        snprintf(rows[nr - 1].floor, sizeof rows[nr - 1].floor, "CPU %.1f us/msg vs floor %.2f = %.1fx", cpu_p,
                 cpu_f, cpu_p / cpu_f);
    }
    ROW("direct: p99 send->delivery at 50,000/s", "< 5 ms", paced_p99, paced_p99 < 5000 && paced_rate >= 50000,
        "%.2f ms at %.0f/s (got %.0f)", paced_p99 / 1000, paced_rate, paced_got);
    if (half_rate == half_rate)
        ROW("direct: p99 send->delivery at half of max", "(for reference)", half_p99, half_p99 < 5000,
            "%.2f ms at %.0f/s", half_p99 / 1000, half_rate);
    ROW("group: deliveries/s", ">= 500,000", g_rate, g_rate >= 500000, "%.0f/s", g_rate);
    if (g_cpu == g_cpu && cpu_f == cpu_f) {
        rows[nr - 1].ratio = g_cpu / cpu_f;
        snprintf(rows[nr - 1].floor, sizeof rows[nr - 1].floor, "CPU %.2f us/delivery vs floor %.2f/msg = %.1fx",
                 g_cpu, cpu_f, g_cpu / cpu_f);
    }
    ROW("catchup: first screen time", "<= 20 ms after 100,000", fs_ms, fs_ms <= 20 && cu_msgs >= 100000,
        "%.2f ms after %.0f", fs_ms, cu_msgs);
    ROW("catchup: first screen bytes", "<= 20 KB", fs_b, fs_b <= 20 * 1024, "%.0f B", fs_b);
    ROW("storm: all back and synced", "<= 5 s for 15,000", st_s, st_s >= 0 && st_s <= 5 && st_n >= 15000,
        "%.2f s for %.0f (%.0f x 503)", st_s, st_n, st_rej);
    ROW("storm: messages lost", "0", st_lost, st_lost == 0, "%.0f", st_lost);
    ROW("storm: background p99 during the storm", "(for reference)", st_p99, st_p99 < 100000, "%.1f ms",
        st_p99 / 1000);
    for (int i = 0; i < nr; i++) {
        printf("%-42s %-24s %-34s %-4s %s\n", rows[i].name, rows[i].goal, rows[i].known ? rows[i].measured : "n/a",
               !rows[i].known ? "n/a" : rows[i].goal[0] == '(' ? "-" : rows[i].met ? "yes" : "NO", rows[i].floor);
        jw_open(&j, NULL);
        jw_str(&j, "target", rows[i].name);
        jw_str(&j, "goal", rows[i].goal);
        jw_str(&j, "measured", rows[i].known ? rows[i].measured : "n/a");
        jw_num(&j, "value", rows[i].known ? rows[i].value : NAN);
        if (rows[i].goal[0] != '(') jw_bool(&j, "met", rows[i].met);
        if (rows[i].floor[0]) {
            jw_str(&j, "floor", rows[i].floor);
            jw_num(&j, "ratio_to_floor", rows[i].ratio);
        }
        jw_close(&j);
    }
    printf("\nconditions per run: CPU used by other processes on this machine during the measurement "
           "(cores), load average and CPU pressure (PSI some avg10) at the start\n");
    for (int i = 0; i < NRUNS; i++) {
        const char *t = RUNS[i].text;
        size_t tl = strlen(t);
        const char *mc = jfind(t, tl, "machine_cpu");
        const char *oc = mc ? jfind(mc, strlen(mc), "other_cores") : NULL;
        const char *la = jfind(t, tl, "loadavg_start");
        const char *ps = jfind(t, tl, "cpu_pressure_start");
        char other[24] = "-";
        if (oc) snprintf(other, sizeof other, "%.2f", strtod(oc, NULL));
        printf("  %-14s other processes %-6s load %5.2f  cpu pressure %5.1f%%\n", RUNS[i].label, other,
               la ? strtod(la, NULL) : -1, ps ? strtod(ps, NULL) : -1);
    }
    if (fs_p50 == fs_p50)
        printf("disk: one 4 KiB fdatasync takes p50 %.2f ms, p99 %.2f ms (the floor under every durable ack)\n",
               fs_p50 / 1000, fs_p99 / 1000);
    if (echo_cpu == echo_cpu && echo_fcpu == echo_fcpu)
        printf("echo: server CPU %.2f us/echo vs floor %.2f us/echo = %.1fx\n", echo_cpu, echo_fcpu,
               echo_cpu / echo_fcpu);
    jw_raw(&j, "]");
    j.first = false;
    jw_open(&j, "floor_ratios");
    jw_num(&j, "idle_user_bytes_per_conn", idle_b / idle_fb);
    jw_num(&j, "idle_kernel_bytes_per_conn", idle_slab / idle_fslab);
    jw_num(&j, "direct_cpu_per_msg", cpu_p / cpu_f);
    jw_num(&j, "echo_cpu_per_echo", echo_cpu / echo_fcpu);
    jw_close(&j);
    jw_raw(&j, ",\"runs\":[");
    for (int i = 0; i < NRUNS; i++) jw_raw(&j, "%s%s", i ? "," : "", RUNS[i].text);
    jw_raw(&j, "]}\n");
    if (out) {
        FILE *f = fopen(out, "w");
        if (!f) die("%s: %s", out, strerror(errno));
        fwrite(j.p, 1, j.n, f);
        fclose(f);
        printf("wrote %s\n", out);
    }
    return 0;
}

/* ---- main --------------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: parley-bench idle|echo|direct|group|storm|catchup --port P [--pid PID] [flags]\n"
            "       parley-bench summary --out FILE RUN.json...\n"
            "flags: --workers W --sources K --concurrency C --json FILE --label NAME --floor\n"
            "       --conns N --pairs P --groups N --group-size G --senders S --window W --rate R\n"
            "       --seconds S --size B --messages M --bg-rate R --pre S --timeout S --screens N\n"
            "       parley-bench fsync --dir DIR [--messages N]   (disk fdatasync latency)\n"
            "(see the comment at the top of bench/parley-bench.c)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    if (!strcmp(argv[1], "summary")) return run_summary(argc, argv);
    O.scenario = argv[1];
    O.sources = 8;
    O.concurrency = 256;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--floor")) { O.floor = true; continue; }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        int iv = atoi(v);
        if (!strcmp(a, "--port")) O.port = iv;
        else if (!strcmp(a, "--pid")) O.pid = iv;
        else if (!strcmp(a, "--workers")) O.workers = iv;
        else if (!strcmp(a, "--sources")) O.sources = iv;
        else if (!strcmp(a, "--concurrency")) O.concurrency = iv;
        else if (!strcmp(a, "--json")) O.json = v;
        else if (!strcmp(a, "--label")) O.label = v;
        else if (!strcmp(a, "--conns")) O.conns = iv;
        else if (!strcmp(a, "--pairs")) O.pairs = iv;
        else if (!strcmp(a, "--groups")) O.groups = iv;
        else if (!strcmp(a, "--group-size")) O.gsize = iv;
        else if (!strcmp(a, "--senders")) O.senders = iv;
        else if (!strcmp(a, "--window")) O.window = iv;
        else if (!strcmp(a, "--rate")) O.rate = atof(v);
        else if (!strcmp(a, "--seconds")) O.seconds = iv;
        else if (!strcmp(a, "--size")) O.size = iv;
        else if (!strcmp(a, "--messages")) O.messages = iv;
        else if (!strcmp(a, "--bg-rate")) O.bg_rate = atof(v);
        else if (!strcmp(a, "--pre")) O.pre = iv;
        else if (!strcmp(a, "--timeout")) O.timeout = iv;
        else if (!strcmp(a, "--screens")) O.screens = iv;
        else if (!strcmp(a, "--dir")) O.dir = v;
        else usage();
    }
    if (strcmp(O.scenario, "fsync") && (O.port <= 0 || O.port > 65535)) die("--port is required");
    const char *s = O.scenario;
    bool idle = !strcmp(s, "idle"), echo = !strcmp(s, "echo"), direct = !strcmp(s, "direct"),
         group = !strcmp(s, "group"), storm = !strcmp(s, "storm"), catchup = !strcmp(s, "catchup"),
         fsync = !strcmp(s, "fsync");
    if (!(idle || echo || direct || group || storm || catchup || fsync)) usage();
    if (fsync) {
        O.port = O.port ? O.port : 1;
        if (!O.messages) O.messages = 200;
    }
    if (O.floor && !(idle || echo || direct)) die("--floor supports idle, echo and direct");
    if (O.sources < 1 || O.sources > 250) O.sources = 8;
    if (O.concurrency < 1) O.concurrency = 256;
    if (!O.conns) O.conns = idle || storm ? 15000 : 100;
    if (!O.pairs) O.pairs = 100;
    if (!O.groups) O.groups = 10;
    if (!O.gsize) O.gsize = 100;
    if (O.gsize < 2) O.gsize = 2;
    if (!O.senders) O.senders = 1;
    if (O.senders > O.gsize) O.senders = O.gsize;
    if (!O.window) O.window = group ? 4 : 8;
    if (!O.seconds) O.seconds = 10;
    if (!O.size) O.size = echo ? 200 : 64;
    if (O.size < 32) O.size = 32;
    if (!O.messages) O.messages = 100000;
    if (O.bg_rate <= 0) O.bg_rate = 200;
    if (!O.pre) O.pre = 3;
    if (!O.timeout) O.timeout = 60;
    if (!O.screens) O.screens = 20;
    int socks = idle || echo || storm ? O.conns : direct ? 2 * O.pairs : O.groups * O.gsize;
    if (!O.workers) O.workers = 2;
    while (O.workers < MAX_WORKERS && socks / O.workers > FD_BUDGET) O.workers++;
    if (O.workers > MAX_WORKERS) O.workers = MAX_WORKERS;
    if (socks / O.workers > FD_BUDGET) die("too many connections for %d workers", MAX_WORKERS);
    rng_state = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
    RUN_ID = (unsigned)(rnd64() & 0xffffff);
    memset(PAD, 'x', sizeof PAD - 1);
    /* echo frame: {"type":"echo","d":"xxx"} of --size bytes */
    ECHO_LEN = (size_t)O.size;
    ECHO_PAYLOAD = xcalloc(1, ECHO_LEN + 1);
    int eh = snprintf(ECHO_PAYLOAD, ECHO_LEN + 1, "{\"type\":\"echo\",\"d\":\"");
    for (size_t i = (size_t)eh; i < ECHO_LEN - 2; i++) ECHO_PAYLOAD[i] = 'x';
    ECHO_PAYLOAD[ECHO_LEN - 2] = '"';
    ECHO_PAYLOAD[ECHO_LEN - 1] = '}';
    LOAD_START = loadavg1();
    PSI_START = cpu_pressure();
    result_begin();
    int rc;
    if (idle) rc = run_idle();
    else if (echo) rc = run_echo();
    else if (direct || group) rc = run_traffic();
    else if (storm) rc = run_storm();
    else if (fsync) rc = run_fsync(O.dir ? O.dir : "/tmp");
    else rc = run_catchup();
    result_end();
    return rc;
}
