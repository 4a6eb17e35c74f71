#include "net/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/err.h"

static void bump(uint64_t *slot)
{
    __atomic_store_n(slot, *slot + 1, __ATOMIC_RELAXED);
}

void metrics_status(metrics *m, int status)
{
    if (status >= 0 && status < METRICS_STATUS_SLOTS) bump(&m->status[status]);
}

void metrics_close(metrics *m, uint16_t code)
{
    if (code >= 1000 && code < 1000 + METRICS_CLOSE_SLOTS) bump(&m->close_sent[code - 1000]);
}

void metrics_error(metrics *m, int err)
{
    if (err < 0 && -err < METRICS_ERR_SLOTS) bump(&m->errors[-err]);
}

static const struct {
    const char *name, *type, *help;
} defs[M_COUNT] = {
    [M_ACCEPTED] = {"parley_connections_accepted_total", "counter", "TCP connections accepted"},
    [M_CLOSED] = {"parley_connections_closed_total", "counter", "TCP connections closed"},
    [M_HTTP_REQUESTS] = {"parley_http_requests_total", "counter", "HTTP requests parsed"},
    [M_WS_UPGRADES] = {"parley_ws_upgrades_total", "counter", "WebSocket handshakes completed"},
    [M_WS_CLOSED] = {"parley_ws_closed_total", "counter", "WebSocket connections closed"},
    [M_FRAMES_IN] = {"parley_ws_frames_in_total", "counter", "WebSocket frames received"},
    [M_FRAMES_OUT] = {"parley_ws_frames_out_total", "counter", "WebSocket frames sent"},
    [M_BYTES_IN] = {"parley_bytes_in_total", "counter", "Bytes read from sockets"},
    [M_BYTES_OUT] = {"parley_bytes_out_total", "counter", "Bytes written to sockets"},
    [M_WRITES] = {"parley_writes_total", "counter", "writev calls"},
    [M_WRITES_BLOCKED] = {"parley_writes_blocked_total", "counter", "Writes that waited for a full kernel buffer"},
    [M_QUEUE_FULL] = {"parley_queue_full_total", "counter", "Connections closed because their output queue was full"},
    [M_TIMEOUTS] = {"parley_timeouts_total", "counter", "Connections closed by a request or keepalive timeout"},
    [M_PINGS_SENT] = {"parley_pings_sent_total", "counter", "Keepalive pings sent"},
    [M_RATE_LIMITED] = {"parley_rate_limited_total", "counter", "Requests and frames refused by a rate limit"},
    [M_ADMIT_REFUSED] = {"parley_admission_refused_total", "counter", "WebSocket handshakes refused with 503 by admission control"},
    [M_PENDING_REFUSED] = {"parley_pending_refused_total", "counter", "Connections closed at accept: too many not yet upgraded"},
    [M_LOSSY_DROPPED] = {"parley_lossy_dropped_total", "counter", "Typing and presence frames dropped for slow readers"},
    [M_MSGS_SENT] = {"parley_messages_sent_total", "counter", "Messages stored and acknowledged (resends of a cmid excluded)"},
    [M_MSGS_DELIVERED] = {"parley_messages_delivered_total", "counter", "Messages queued live to a recipient's connection"},
    [M_SESSIONS_OPENED] = {"parley_sessions_opened_total", "counter", "Authenticated sessions opened"},
    [M_SESSIONS_CLOSED] = {"parley_sessions_closed_total", "counter", "Authenticated sessions closed"},
};

typedef struct out {
    char *p;
    size_t n, cap;
    int overflow;
} out;

__attribute__((format(printf, 2, 3)))
static void put(out *o, const char *fmt, ...)
{
    if (o->overflow) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= o->cap - o->n) { o->overflow = 1; return; }
    o->n += (size_t)k;
}

static uint64_t sum(metrics *const *t, int n, size_t offset)
{
    uint64_t s = 0;
    for (int i = 0; i < n; i++)
        s += __atomic_load_n((const uint64_t *)((const char *)t[i] + offset), __ATOMIC_RELAXED);
    return s;
}

#define SUM(field) sum(per_thread, n, offsetof(metrics, field))

int metrics_render(metrics *const *per_thread, int n, char *buf, size_t cap)
{
    out o = {buf, 0, cap, 0};
    uint64_t acc = SUM(c[M_ACCEPTED]), clo = SUM(c[M_CLOSED]);
    uint64_t up = SUM(c[M_WS_UPGRADES]), wclo = SUM(c[M_WS_CLOSED]);
    put(&o, "# HELP parley_connections_open Open TCP connections\n"
            "# TYPE parley_connections_open gauge\nparley_connections_open %llu\n",
        (unsigned long long)(acc - clo));
    put(&o, "# HELP parley_ws_connections_open Open WebSocket connections\n"
            "# TYPE parley_ws_connections_open gauge\nparley_ws_connections_open %llu\n",
        (unsigned long long)(up - wclo));
    put(&o, "# HELP parley_sessions Authenticated sessions (WebSocket connections of a user)\n"
            "# TYPE parley_sessions gauge\nparley_sessions %llu\n",
        (unsigned long long)(SUM(c[M_SESSIONS_OPENED]) - SUM(c[M_SESSIONS_CLOSED])));
    put(&o, "# HELP parley_threads I/O threads\n# TYPE parley_threads gauge\n"
            "parley_threads %d\n", n);
    for (int k = 0; k < M_COUNT; k++)
        put(&o, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", defs[k].name, defs[k].help,
            defs[k].name, defs[k].type, defs[k].name, (unsigned long long)SUM(c[k]));
    put(&o, "# HELP parley_http_responses_total HTTP responses by status\n"
            "# TYPE parley_http_responses_total counter\n");
    for (int s = 0; s < METRICS_STATUS_SLOTS; s++) {
        uint64_t v = SUM(status[s]);
        if (v) put(&o, "parley_http_responses_total{status=\"%d\"} %llu\n", s,
                   (unsigned long long)v);
    }
    put(&o, "# HELP parley_ws_close_sent_total WebSocket close frames sent by code\n"
            "# TYPE parley_ws_close_sent_total counter\n");
    for (int s = 0; s < METRICS_CLOSE_SLOTS; s++) {
        uint64_t v = SUM(close_sent[s]);
        if (v) put(&o, "parley_ws_close_sent_total{code=\"%d\"} %llu\n", 1000 + s,
                   (unsigned long long)v);
    }
    put(&o, "# HELP parley_errors_total Errors answered, by kind\n"
            "# TYPE parley_errors_total counter\n");
    for (int s = 1; s < METRICS_ERR_SLOTS; s++) {
        uint64_t v = SUM(errors[s]);
        if (v) put(&o, "parley_errors_total{kind=\"%s\"} %llu\n", err_name(-s),
                   (unsigned long long)v);
    }
    if (o.overflow) return ERR_TOO_LARGE;
    const hist *h[256];
    int k = n < 256 ? n : 256;
    for (int i = 0; i < k; i++) h[i] = &per_thread[i]->send_ack;
    int r = metrics_render_hist(buf + o.n, cap - o.n, "parley_send_ack_seconds",
                                "WebSocket sends: from the frame's arrival to its ack queued "
                                "(durably stored)", &hist_seconds, h, k);
    return r < 0 ? r : (int)o.n + r;
}

/* A bucket bound or sum in its rendered unit, without trailing zeros. */
static const char *num(char *b, size_t n, double v)
{
    snprintf(b, n, "%.9f", v);
    char *dot = strchr(b, '.');
    if (dot) {
        char *e = b + strlen(b) - 1;
        while (e > dot && *e == '0') *e-- = 0;
        if (e == dot) *e = 0;
    }
    return b;
}

int metrics_render_hist(char *buf, size_t cap, const char *name, const char *help,
                        const hist_spec *s, const hist *const *h, int n)
{
    out o = {buf, 0, cap, 0};
    hist acc = {{0}, 0};
    for (int i = 0; i < n; i++) hist_add(&acc, h[i], s);
    put(&o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    char b[48];
    for (int i = 0; i < s->n; i++) {
        cum += acc.b[i];
        put(&o, "%s_bucket{le=\"%s\"} %llu\n", name, num(b, sizeof b, (double)s->le[i] * s->scale),
            (unsigned long long)cum);
    }
    cum += acc.b[s->n];
    put(&o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %s\n%s_count %llu\n", name,
        (unsigned long long)cum, name, num(b, sizeof b, (double)acc.sum * s->scale), name,
        (unsigned long long)cum);
    return o.overflow ? ERR_TOO_LARGE : (int)o.n;
}

/* ---- process ------------------------------------------------------------ */

/* The fields of /proc/self/statm: total and resident pages. */
static int read_statm(unsigned long long *vm, unsigned long long *rss)
{
    FILE *f = fopen("/proc/self/statm", "re");
    if (!f) return ERR_IO;
    int k = fscanf(f, "%llu %llu", vm, rss);
    fclose(f);
    return k == 2 ? ERR_OK : ERR_IO;
}

/* The entries of /proc/self/fd, read with open + getdents64 rather than
 * opendir: opendir opens its descriptor with openat, which ThreadSanitizer
 * does not intercept here, so closedir on an I/O thread was reported as a
 * race with the accept4 that had last used that descriptor number. */
static int count_fds(void)
{
    int fd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    char buf[4096] __attribute__((aligned(8)));
    int n = 0;
    for (;;) {
        long len = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (len <= 0) break;
        for (long off = 0; off < len;) {
            struct dirent64 *e = (struct dirent64 *)(void *)(buf + off);
            if (e->d_name[0] != '.') n++;
            off += e->d_reclen;
        }
    }
    close(fd);
    return n - 1; /* the directory's own */
}

/* Seconds since the epoch when the process started: its start in clock
 * ticks after boot (/proc/self/stat, field 22) plus the boot time. */
static double start_time(void)
{
    char line[1024];
    unsigned long long ticks = 0, btime = 0;
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f) return 0;
    size_t len = fread(line, 1, sizeof line - 1, f);
    fclose(f);
    line[len] = 0;
    char *p = strrchr(line, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return 0;
    /* After ") ": field 3 (state) onwards; starttime is field 22. */
    p++;
    for (int field = 3; field < 22 && p; field++) p = strchr(p + 1, ' ');
    if (!p || sscanf(p, " %llu", &ticks) != 1) return 0;
    f = fopen("/proc/stat", "re");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &btime) == 1) break;
    fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    return btime ? (double)btime + (double)ticks / (double)(hz > 0 ? hz : 100) : 0;
}

int metrics_render_process(char *buf, size_t cap, const char *version)
{
    out o = {buf, 0, cap, 0};
    struct rusage ru;
    double cpu = 0;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
              (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    put(&o, "# HELP process_cpu_seconds_total User and system CPU time spent in seconds\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n", cpu);
    unsigned long long vm, rss;
    long page = sysconf(_SC_PAGESIZE);
    if (read_statm(&vm, &rss) == ERR_OK) {
        put(&o, "# HELP process_resident_memory_bytes Resident memory size in bytes\n"
                "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n",
            rss * (unsigned long long)page);
        put(&o, "# HELP process_virtual_memory_bytes Virtual memory size in bytes\n"
                "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n",
            vm * (unsigned long long)page);
    }
    int fds = count_fds();
    if (fds >= 0)
        put(&o, "# HELP process_open_fds Open file descriptors\n"
                "# TYPE process_open_fds gauge\nprocess_open_fds %d\n", fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        put(&o, "# HELP process_max_fds Maximum number of open file descriptors\n"
                "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
            (unsigned long long)rl.rlim_cur);
    double st = start_time();
    if (st > 0)
        put(&o, "# HELP process_start_time_seconds Start time of the process since the epoch "
                "in seconds\n# TYPE process_start_time_seconds gauge\n"
                "process_start_time_seconds %.2f\n", st);
    put(&o, "# HELP parley_build_info The running build (always 1)\n"
            "# TYPE parley_build_info gauge\nparley_build_info{version=\"%s\"} 1\n", version);
    return o.overflow ? ERR_TOO_LARGE : (int)o.n;
}
