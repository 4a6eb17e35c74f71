/* scenario: what a parley-bench scenario provides, and the table of them.
 *
 * A scenario is one file here. It fills the defaults of its flags, says how
 * many sockets its workers hold (so the pool gets enough processes), writes
 * its parameters into the result, and runs: the parent side in run(), the
 * per-connection behaviour as worker_ops handed to pool_start() (lib/pool.h)
 * or to a worker of the parent's own. The scenario's state lives in its
 * run() frame (parent) and in w->scn and worker_user() (each worker).
 */
#ifndef BENCH_SCENARIO_H
#define BENCH_SCENARIO_H

#include <stdbool.h>

#include "lib/jw.h"
#include "lib/opts.h"
#include "lib/pf.h"
#include "lib/pool.h"
#include "lib/report.h"

typedef struct scenario {
    const char *name;
    const char *usage;        /* its flags and defaults, one line */
    const char *kind;         /* "parleyd" or "disk" ("floor" with --floor) */
    bool floor_ok;            /* also runs against bench/floor */
    bool needs_server;        /* --port is required */
    void (*defaults)(bench_opts *o);
    int (*sockets)(const bench_opts *o);   /* connections the workers hold */
    void (*params)(const bench_opts *o, jw *j);
    int (*run)(bench_run *r);              /* the exit status */
} scenario;

extern const scenario scenario_fsync, scenario_idle, scenario_echo, scenario_direct,
    scenario_group, scenario_storm, scenario_catchup, scenario_cluster;

/* Dies unless --pid was given (server CPU and memory come from /proc). */
void scn_need_pid(const bench_run *r);

/* An error frame f (raw text p[0..n)) from the server: counted in
 * ST_ERRORS (and ST_BUSY for code "busy"), the first three printed. */
void scn_note_error(worker *w, const pf_frame *f, const char *p, size_t n);

#endif
