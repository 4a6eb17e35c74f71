#include "net/metrics.h"

#include <stdarg.h>
#include <stdio.h>

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
    return o.overflow ? ERR_TOO_LARGE : (int)o.n;
}
