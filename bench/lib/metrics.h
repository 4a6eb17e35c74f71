/* metrics: parleyd's storage-writer figures from GET /metrics (Prometheus
 * text): group commits, writes per commit, time per phase, queue length.
 */
#ifndef BENCH_METRICS_H
#define BENCH_METRICS_H

#include <stdbool.h>

#include "lib/sock.h"

typedef struct metrics_writer {
    bool ok;                 /* the scrape worked and had the commit figures */
    double batches, ops, max_batch;
    double apply_s, commit_s, fanout_s;
    double queue;            /* ops waiting now */
} metrics_writer;

/* One GET /metrics on a fresh connection (blocking, bounded by the
 * connection's 30 s timeouts). ok is false when it failed. */
metrics_writer metrics_scrape(const sock_target *t);

/* The value of sample `name` (with its labels, e.g.
 * parley_commit_seconds_total{phase="apply"}) in Prometheus text; NAN if
 * absent. */
double metrics_value(const char *text, const char *name);

#endif
