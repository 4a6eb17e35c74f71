/* hist: a log-linear latency histogram (values in ns).
 *
 * Below 2^(HIST_SUB+1) every value has its own bucket; above, every power of
 * two is split into 2^HIST_SUB linear buckets, so a percentile is reported
 * with a relative error under 1/64 (the upper edge of its bucket, never more
 * than the exact maximum). Fixed size and pointer-free: a hist can live in
 * shared memory, be copied with memcpy and merged across processes.
 *
 * Pure: no allocation, no globals. The caller owns every hist.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB 6
#define HIST_BUCKETS 2560

typedef struct hist {
    uint64_t count, sum, max;
    uint64_t b[HIST_BUCKETS];
} hist;

void hist_reset(hist *h);

/* Adds one value (negative values count as 0). */
void hist_add(hist *h, int64_t v_ns);

/* into += h. */
void hist_merge(hist *into, const hist *h);

/* The q-quantile (0 < q <= 1) in microseconds; 0 for an empty hist. */
double hist_pct_us(const hist *h, double q);

/* Mean and maximum in microseconds; 0 for an empty hist. */
double hist_mean_us(const hist *h);
double hist_max_us(const hist *h);

#endif
