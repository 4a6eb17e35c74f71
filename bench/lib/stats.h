/* stats: one process's counters, time marks and latency histograms.
 *
 * A worker process writes only its own stats (a slot in the pool's shared
 * memory); the parent reads every slot and merges them (pool.h). Counters
 * are updated with relaxed atomics so the parent can read them while the
 * worker runs; histograms are merged only between phases, while the
 * workers are quiet. Fixed size and pointer-free (shared memory).
 *
 * The first counters and histograms are the library's own (the
 * connection's life); a scenario numbers its own from STATS_SCENARIO and
 * STATS_HIST_SCENARIO up.
 */
#ifndef BENCH_STATS_H
#define BENCH_STATS_H

#include <stdint.h>

#include "lib/hist.h"

enum stats_counter {
    ST_READY,         /* connections open (hello received), now or ever */
    ST_HS_FAIL,       /* failed connects and handshakes */
    ST_REJ503,        /* upgrades refused with 503 (admission control) */
    ST_REJ429,        /* upgrades refused with 429 */
    ST_CLOSED,        /* open connections lost or closed by the server */
    ST_ERRORS,        /* error frames and bad frames from the server */
    ST_BUSY,          /* "busy" answers: 503 to REST, error code busy */
    ST_ATTEMPTS,      /* connection attempts */
    ST_PROV_REQS,     /* provisioning requests written */
    ST_PROV_FAIL,     /* provisioning requests that failed */
    STATS_SCENARIO = 12,
    STATS_COUNTERS = 32
};

enum stats_hist {
    SH_HANDSHAKE,     /* connect -> hello (or 101 on the floor) */
    STATS_HIST_SCENARIO = 1,
    STATS_HISTS = 12
};

#define STATS_MARKS 4

typedef struct stats {
    uint64_t c[STATS_COUNTERS];
    int64_t mark[STATS_MARKS];   /* scenario time marks (latest wins) */
    double prov_s;               /* provisioning time of this process */
    hist h[STATS_HISTS];
} stats;

void stats_add(stats *s, int k, uint64_t d);
uint64_t stats_get(const stats *s, int k);
/* mark[k] = max(mark[k], t) */
void stats_mark(stats *s, int k, int64_t t);
hist *stats_hist(stats *s, int k);

#endif
