/* opts: parley-bench's command line.
 *
 * One bench_opts per run, filled by opts_parse() and the scenario's
 * defaults, then read-only: every module takes it as const. Zero means
 * "not given" until the defaults are applied.
 */
#ifndef BENCH_OPTS_H
#define BENCH_OPTS_H

#include <stdbool.h>

#define OPTS_FD_BUDGET 19000   /* sockets per worker (the open-file limit is 20,000) */
#define OPTS_MAX_NODES 8       /* --ports / --pids: cluster nodes */

typedef struct bench_opts {
    const char *scenario;      /* argv[1] */
    int port, pid;             /* the server under test */
    int workers, sources, concurrency;
    const char *json;          /* --json FILE: the run as one object */
    const char *label;         /* --label NAME, default the scenario */
    const char *targets;       /* --targets FILE, default bench/targets.conf */
    bool floor;                /* the server is bench/floor */
    int conns, pairs, groups, gsize, senders, window, seconds, size, messages;
    int pre, timeout, screens;
    const char *dir;           /* fsync: the directory to test */
    double rate, bg_rate;
    /* --ports P1,P2,..: the cluster's nodes (WebSocket connections are
     * spread over them, worker.h); --pids the same nodes' parleyd PIDs, in
     * the same order; --redis-pid, --pg-pid (the postmaster) the engines.
     * nports 0: one server, --port. */
    int nports, npids;
    int ports[OPTS_MAX_NODES], pids[OPTS_MAX_NODES];
    int redis_pid, pg_pid;
} bench_opts;

/* Parses argv[2..] into *o (argv[1] is the scenario). Returns 0, or -1 after
 * printing what is wrong to stderr. Strings point into argv. */
int opts_parse(bench_opts *o, int argc, char **argv);

/* The label of the run (--label, or the scenario's name). */
const char *opts_label(const bench_opts *o);

#endif
