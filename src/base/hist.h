/* hist: a histogram with fixed buckets, for Prometheus.
 *
 * A `hist` counts observations per bucket of a `hist_spec` (upper bounds,
 * ascending, in the unit the observations are given in: nanoseconds for
 * durations, plain counts for sizes) and their sum. It has one writer: the
 * thread that owns it calls hist_observe() with plain adds published by
 * relaxed atomic stores, no lock. Any thread may read it (hist_read), at
 * any time; a renderer sums the blocks of several writers.
 *
 * Buckets are stored per bucket (not cumulative), so an observation is one
 * increment; cumulative counts, +Inf and _count are made when reading, and
 * always agree with each other.
 */
#ifndef PARLEY_HIST_H
#define PARLEY_HIST_H

#include <stdint.h>

#define HIST_MAX_BOUNDS 20

typedef struct hist_spec {
    int n;                           /* bounds used */
    uint64_t le[HIST_MAX_BOUNDS];    /* upper bounds (inclusive), ascending */
    double scale;                    /* rendered value = bound * scale (1e-9: ns as seconds) */
} hist_spec;

typedef struct hist {
    uint64_t b[HIST_MAX_BOUNDS + 1]; /* per bucket; b[spec->n] is above the last bound */
    uint64_t sum;                    /* of the observed values */
} hist;

/* Durations in nanoseconds, 50 us .. 10 s (rendered in seconds). */
extern const hist_spec hist_seconds;
/* Sizes (operations per batch): 1, 2, 4 .. 4096. */
extern const hist_spec hist_sizes;

/* Counts v. The owner thread only. */
void hist_observe(hist *h, const hist_spec *s, uint64_t v);

/* Adds h's counts into acc (a reader's private copy). Any thread. */
void hist_add(hist *acc, const hist *h, const hist_spec *s);

#endif
