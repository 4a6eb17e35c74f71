/* parley-bench: the load generator and benchmark suite of parley
 * (docs/benchmarks.md).
 *
 *   parley-bench SCENARIO --port P [--pid PID] [flags]
 *   parley-bench summary [--targets FILE] --out FILE RUN.json...
 *
 * The scenarios are in bench/scenario/ (one file each, the table below),
 * the load-generation library in bench/lib/ (worker processes, the client
 * connection on the project's codecs, histograms, /proc probes, results),
 * and the targets the figures are judged by in bench/targets.conf, read at
 * run time.
 *
 * Common flags: --workers W [2; more when a worker would need over 19,000
 * sockets] --sources K [8 source addresses] --concurrency C [256 handshakes
 * in flight per worker] --json FILE (the run as one JSON object) --label
 * NAME --targets FILE --floor (the server is bench/floor: idle, echo and
 * direct only). Every loop is bounded in count and time; every run prints a
 * table.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/opts.h"
#include "lib/pool.h"
#include "lib/report.h"
#include "scenario/scenario.h"
#include "summary.h"

static const scenario *const SCENARIOS[] = {
    &scenario_idle, &scenario_echo,    &scenario_direct, &scenario_group,
    &scenario_storm, &scenario_catchup, &scenario_fsync, &scenario_cluster,
};

#define NSCENARIOS (sizeof SCENARIOS / sizeof SCENARIOS[0])

static const scenario *find(const char *name)
{
    for (size_t i = 0; i < NSCENARIOS; i++)
        if (!strcmp(SCENARIOS[i]->name, name)) return SCENARIOS[i];
    return NULL;
}

__attribute__((noreturn)) static void usage(void)
{
    fprintf(stderr,
            "usage: parley-bench SCENARIO --port P [--pid PID] [flags]\n"
            "       parley-bench summary [--targets FILE] --out FILE RUN.json...\n"
            "scenarios:\n");
    for (size_t i = 0; i < NSCENARIOS; i++) fprintf(stderr, "  %s\n", SCENARIOS[i]->usage);
    fprintf(stderr,
            "flags: --workers W --sources K --concurrency C --json FILE --label NAME --targets FILE\n"
            "       --floor (idle, echo, direct against bench/floor) --size B --seconds S --rate R\n"
            "(docs/benchmarks.md)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    if (!strcmp(argv[1], "summary")) return summary_main(argc, argv);
    const scenario *s = find(argv[1]);
    if (!s) usage();
    bench_opts o = {0};
    if (opts_parse(&o, argc, argv) != 0) usage();
    if (s->needs_server && (o.port <= 0 || o.port > 65535)) die("--port is required");
    if (o.floor && !s->floor_ok) die("--floor supports idle, echo and direct");
    if (o.sources < 1 || o.sources > 250) o.sources = 8;
    if (o.concurrency < 1) o.concurrency = 256;
    if (!o.seconds) o.seconds = 10;
    s->defaults(&o);
    if (!o.size) o.size = 64;
    if (o.size < 32) o.size = 32;
    int socks = s->sockets(&o);
    if (!o.workers) o.workers = 2;
    while (o.workers < POOL_MAX && socks / o.workers > OPTS_FD_BUDGET) o.workers++;
    if (o.workers > POOL_MAX) o.workers = POOL_MAX;
    if (socks / o.workers > OPTS_FD_BUDGET) die("too many connections for %d workers", POOL_MAX);

    bench_run r = {0};
    snprintf(r.t.host, sizeof r.t.host, "127.0.0.1");
    r.t.port = o.port;
    r.t.sources = o.sources;
    rng_seed(&r.rng, 0);
    r.run_id = (unsigned)(rng_next(&r.rng) & 0xffffff);
    report_begin(&r, &o, o.floor ? "floor" : s->kind, s->params);
    int rc = s->run(&r);
    report_end(&r);
    return rc;
}
