/* report: one run's output: the table on stdout and the JSON object.
 *
 * A bench_run is the parent's context for one run (its options, the
 * server's address, the result being written); it lives on main()'s stack
 * and is passed to the scenario. The JSON object has the shape
 * docs/benchmarks.md documents: scenario, label, target, time, machine,
 * params, figures, then the load average and CPU pressure at start and end.
 * Between report_begin() and report_end() the scenario writes its figures
 * into r->J.
 */
#ifndef BENCH_REPORT_H
#define BENCH_REPORT_H

#include "lib/hist.h"
#include "lib/jw.h"
#include "lib/metrics.h"
#include "lib/opts.h"
#include "lib/probe.h"
#include "lib/sock.h"
#include "lib/util.h"

typedef struct bench_run {
    const bench_opts *o;     /* borrowed, read-only */
    sock_target t;           /* the server */
    const char *kind;        /* "parleyd", "floor" or "disk" */
    unsigned run_id;         /* random: user names of this run are unique */
    rng rng;                 /* the parent's */
    jw J;                    /* owned: the result object */
    double load_start, psi_start;
} bench_run;

/* Sets r up for options o and starts the object; params() writes the
 * scenario's own parameters (after workers, sources, server_pid). Opens
 * "figures". */
void report_begin(bench_run *r, const bench_opts *o, const char *kind,
                  void (*params)(const bench_opts *o, jw *j));

/* Closes the object, writes it to --json, prints the targets measured by
 * this run (targets.h) and frees r->J. */
void report_end(bench_run *r);

/* "== <label> (<kind>): <what> ==" */
void report_header(const bench_run *r, const char *what);

/* One histogram row of the table: p50 p90 p99 p99.9 max in us. */
void report_hist(const char *name, const hist *h);

/* Where the machine's CPU went between a and b: the server, the load
 * generator (bench_s CPU seconds), other processes. Printed and recorded
 * as "machine_cpu". */
void report_machine(bench_run *r, const probe_sample *a, const probe_sample *b, double bench_s);

/* The writer's group commits between two scrapes over dt seconds, printed
 * and recorded as "writer" (nothing when either scrape failed). */
void report_writer(bench_run *r, const metrics_writer *a, const metrics_writer *b, double dt);

#endif
