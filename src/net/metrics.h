/* metrics: per-thread counters, rendered in Prometheus text format.
 *
 * Each I/O thread owns one `metrics` and is its only writer, so counting is
 * a plain add published with a relaxed atomic store: no lock, no contended
 * cache line. Any thread may render the sum over all threads at any time.
 * Gauges that can be derived (open connections = accepted - closed) are.
 * Histograms (base/hist.h) follow the same rule: one writer per block,
 * summed at render.
 */
#ifndef PARLEY_METRICS_H
#define PARLEY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "base/hist.h"

enum metric {
    M_ACCEPTED,        /* TCP connections accepted */
    M_CLOSED,          /* TCP connections closed */
    M_HTTP_REQUESTS,   /* HTTP requests parsed */
    M_WS_UPGRADES,     /* WebSocket handshakes completed */
    M_WS_CLOSED,       /* WebSocket connections closed */
    M_FRAMES_IN,       /* WebSocket frames received */
    M_FRAMES_OUT,      /* WebSocket frames queued for sending */
    M_BYTES_IN,        /* bytes read from sockets */
    M_BYTES_OUT,       /* bytes written to sockets */
    M_WRITES,          /* write system calls (writev) */
    M_WRITES_BLOCKED,  /* writes that left bytes for the writability watcher */
    M_QUEUE_FULL,      /* connections closed because their output queue was full */
    M_TIMEOUTS,        /* connections closed by a request/keepalive timeout */
    M_PINGS_SENT,      /* keepalive pings sent */
    M_RATE_LIMITED,    /* requests and frames refused by a rate limit */
    M_ADMIT_REFUSED,   /* handshakes refused by admission control (503) */
    M_PENDING_REFUSED, /* connections closed at accept: too many not upgraded */
    M_LOSSY_DROPPED,   /* typing/presence frames dropped for a slow reader */
    M_MSGS_SENT,       /* messages stored and acknowledged (resends excluded) */
    M_MSGS_DELIVERED,  /* messages queued live to a recipient's connection */
    M_SESSIONS_OPENED, /* authenticated sessions opened (open = opened - closed) */
    M_SESSIONS_CLOSED, /* authenticated sessions closed */
    M_COUNT
};

#define METRICS_STATUS_SLOTS 600  /* HTTP status codes 0..599 */
#define METRICS_CLOSE_SLOTS 16    /* WebSocket close codes 1000..1015 */
#define METRICS_ERR_SLOTS 64      /* -err codes (ERR_LAST and beyond) */

typedef struct metrics {
    uint64_t c[M_COUNT];
    uint64_t status[METRICS_STATUS_SLOTS];  /* HTTP responses by status */
    uint64_t close_sent[METRICS_CLOSE_SLOTS]; /* WebSocket closes we sent */
    uint64_t errors[METRICS_ERR_SLOTS];    /* errors answered, by err code */
    hist send_ack;     /* ns from a send frame's arrival to its ack queued (hist_seconds) */
} metrics;

/* Owner thread only. */
static inline void metrics_add(metrics *m, enum metric k, uint64_t n)
{
    __atomic_store_n(&m->c[k], m->c[k] + n, __ATOMIC_RELAXED);
}
static inline void metrics_inc(metrics *m, enum metric k) { metrics_add(m, k, 1); }
void metrics_status(metrics *m, int status);
void metrics_close(metrics *m, uint16_t code);
void metrics_error(metrics *m, int err);

/* Renders the sum of the n per-thread blocks as Prometheus text into
 * out[0..cap). Returns the length, or ERR_TOO_LARGE. Any thread. */
int metrics_render(metrics *const *per_thread, int n, char *out, size_t cap);

/* Renders one Prometheus histogram `name` (with its HELP and TYPE lines),
 * the sum of the n blocks h[] counted on spec s, into out[0..cap).
 * Returns the length, or ERR_TOO_LARGE. Any thread. */
int metrics_render_hist(char *out, size_t cap, const char *name, const char *help,
                        const hist_spec *s, const hist *const *h, int n);

/* Renders the process_* metrics (CPU seconds, resident and virtual memory,
 * open and maximum file descriptors, start time; read from getrusage and
 * /proc at each call) and parley_build_info{version="..."} into
 * out[0..cap). Returns the length, or ERR_TOO_LARGE. Any thread. */
int metrics_render_process(char *out, size_t cap, const char *version);

#endif
