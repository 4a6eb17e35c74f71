#include "lib/opts.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *opts_label(const bench_opts *o)
{
    return o->label ? o->label : o->scenario;
}

static bool int_arg(const char *v, int *out)
{
    char *e;
    long x = strtol(v, &e, 10);
    if (e == v || *e || x < 0 || x > 100000000) return false;
    *out = (int)x;
    return true;
}

/* "P1,P2,...": 1..OPTS_MAX_NODES integers 1..4194304 into out[], their
 * count into *n. */
static bool list_arg(const char *v, int *out, int *n)
{
    *n = 0;
    const char *p = v;
    for (;;) {
        char *e;
        long x = strtol(p, &e, 10);
        if (e == p || x < 1 || x > 4194304 || *n >= OPTS_MAX_NODES) return false;
        out[(*n)++] = (int)x;
        if (!*e) return true;
        if (*e != ',') return false;
        p = e + 1;
    }
}

static bool num_arg(const char *v, double *out)
{
    char *e;
    double x = strtod(v, &e);
    if (e == v || *e || !(x >= 0) || x > 1e9) return false;
    *out = x;
    return true;
}

int opts_parse(bench_opts *o, int argc, char **argv)
{
    static const struct {
        const char *flag;
        size_t off;
    } ints[] = {
        {"--port", offsetof(bench_opts, port)},         {"--pid", offsetof(bench_opts, pid)},
        {"--workers", offsetof(bench_opts, workers)},   {"--sources", offsetof(bench_opts, sources)},
        {"--concurrency", offsetof(bench_opts, concurrency)},
        {"--conns", offsetof(bench_opts, conns)},       {"--pairs", offsetof(bench_opts, pairs)},
        {"--groups", offsetof(bench_opts, groups)},     {"--group-size", offsetof(bench_opts, gsize)},
        {"--senders", offsetof(bench_opts, senders)},   {"--window", offsetof(bench_opts, window)},
        {"--seconds", offsetof(bench_opts, seconds)},   {"--size", offsetof(bench_opts, size)},
        {"--messages", offsetof(bench_opts, messages)}, {"--pre", offsetof(bench_opts, pre)},
        {"--timeout", offsetof(bench_opts, timeout)},   {"--screens", offsetof(bench_opts, screens)},
        {"--redis-pid", offsetof(bench_opts, redis_pid)}, {"--pg-pid", offsetof(bench_opts, pg_pid)},
    };
    static const struct {
        const char *flag;
        size_t off;
    } strs[] = {
        {"--json", offsetof(bench_opts, json)},       {"--label", offsetof(bench_opts, label)},
        {"--targets", offsetof(bench_opts, targets)}, {"--dir", offsetof(bench_opts, dir)},
    };
    o->scenario = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--floor")) {
            o->floor = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "parley-bench: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        bool known = false, ok = true;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !known; k++)
            if (!strcmp(a, ints[k].flag)) {
                known = true;
                ok = int_arg(v, (int *)((char *)o + ints[k].off));
            }
        for (size_t k = 0; k < sizeof strs / sizeof strs[0] && !known; k++)
            if (!strcmp(a, strs[k].flag)) {
                known = true;
                *(const char **)((char *)o + strs[k].off) = v;
            }
        if (!known && !strcmp(a, "--rate")) known = true, ok = num_arg(v, &o->rate);
        if (!known && !strcmp(a, "--bg-rate")) known = true, ok = num_arg(v, &o->bg_rate);
        if (!known && !strcmp(a, "--ports")) known = true, ok = list_arg(v, o->ports, &o->nports);
        if (!known && !strcmp(a, "--pids")) known = true, ok = list_arg(v, o->pids, &o->npids);
        if (!known) {
            fprintf(stderr, "parley-bench: unknown flag %s\n", a);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "parley-bench: bad value for %s: %s\n", a, v);
            return -1;
        }
    }
    return 0;
}
