/* cluster: the cost of scaling out, measured on one box: N parleyd nodes
 * on one PostgreSQL and one Redis (bench/run.sh starts them; --ports and
 * --pids name the nodes, --redis-pid and --pg-pid the engines).
 *
 * Three phases, each the traffic of scenario/traffic.h with every WebSocket
 * placed by worker_node_of(): the users of a pair on two different nodes
 * (so every delivery crosses the bus when N > 1), a group's members spread
 * over all nodes. Provisioning (REST) goes to the first node: the users and
 * conversations are in the shared database, and a token works on every
 * node. Each phase has users and conversations of its own.
 *
 *   direct      P pairs, flat out (--window W each): durable msgs/s,
 *               send->ack and send->delivery of the cross-node pairs
 *   direct_paced the same pairs' shape at --rate R msgs/s in total [2,000],
 *               open loop: send->delivery when the queue is not the figure
 *   group       N groups of G, one sender each (each group written through
 *               one node, its members on every node): deliveries/s and the
 *               fan-out (send -> the last of the G-1 members)
 *   group_multi the same with S senders per group (--senders, 2), which
 *               sit on different nodes: one conversation written through
 *               several nodes at once
 *
 * Around each phase's measured seconds it reads utime + stime of every
 * node, of redis-server and of PostgreSQL (the postmaster and its
 * children: probe_tree_cpu_s) and reports CPU seconds per 1,000 messages
 * (and per 1,000 deliveries) for each, with the machine's other use.
 * Figures: "nodes", then "direct", "direct_paced", "group" and
 * "group_multi", each with the
 * traffic's figures and "cpu_s_per_1k_msgs", "cpu_s_per_1k_deliveries",
 * "cores" (keys n1 .. nN, nodes, redis, postgres, cluster = nodes +
 * engines, bench, other), and "machine_cpu" (the direct phase's) as every
 * run has.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lib/metrics.h"
#include "lib/rest.h"
#include "scenario/traffic.h"

/* Counters summed over the nodes' GET /metrics: the bus and the writers. */
enum { BUS_PUB, BUS_RECV, BUS_DROP, BUS_RESYNC, WR_BATCHES, WR_OPS, NCOUNT };
static const char *const COUNT_NAME[NCOUNT] = {
    "parley_bus_published_total", "parley_bus_received_total", "parley_bus_dropped_total",
    "parley_bus_resyncs_total",   "parley_commit_batches_total", "parley_commit_ops_total"};

typedef struct cl_sample {
    double node[OPTS_MAX_NODES], redis, pg;
    probe_sample mach;       /* the machine's busy time and the clock */
    double count[NCOUNT];    /* NAN when a node's scrape failed */
} cl_sample;

typedef struct cl_probe {
    const bench_opts *o;
    sock_target t;           /* the first node; the others differ by port */
    cl_sample a, b;
    bool have_mach;          /* the direct phase's machine split, for the top level */
    double mach[4];          /* busy_share, server_cores, bench_cores, other_cores */
} cl_probe;

static void defaults(bench_opts *o)
{
    if (!o->pairs) o->pairs = 100;
    if (!o->window) o->window = 8;
    if (!o->groups) o->groups = 8;
    if (!o->gsize) o->gsize = 30;
    if (o->gsize < 2) o->gsize = 2;
    if (!o->senders) o->senders = 2;
    if (o->senders > o->gsize) o->senders = o->gsize;
    if (!o->size) o->size = 64;
    if (o->rate <= 0) o->rate = 2000;
}

static int sockets(const bench_opts *o)
{
    int d = 2 * o->pairs, g = o->groups * o->gsize;
    return d > g ? d : g;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "nodes", o->nports ? o->nports : 1);
    jw_num(j, "seconds", o->seconds);
    jw_num(j, "pairs", o->pairs);
    jw_num(j, "groups", o->groups);
    jw_num(j, "group_size", o->gsize);
    jw_num(j, "senders", o->senders);
    jw_num(j, "paced_rate", o->rate);
    jw_num(j, "window", o->window);
    jw_num(j, "body_bytes", o->size);
}

/* Every node's /metrics, the counters summed into s->count. */
static void scrape(const cl_probe *c, cl_sample *s)
{
    const bench_opts *o = c->o;
    int n = o->nports ? o->nports : 1;
    for (int k = 0; k < n; k++) {
        sock_target t = c->t;
        if (o->nports) t.port = o->ports[k];
        rest_conn h;
        rest_init(&h, &t, 0);
        rest_resp r;
        bool ok = rest_do(&h, "GET", "/metrics", NULL, NULL, &r) == 200;
        for (int q = 0; q < NCOUNT; q++) s->count[q] += ok ? metrics_value(r.body, COUNT_NAME[q]) : NAN;
        rest_close(&h);
    }
}

/* The nodes' PIDs: --pids, or --pid alone for one server. */
static int node_pids(const bench_opts *o, const int **pids)
{
    *pids = o->npids ? o->pids : &o->pid;
    return o->npids ? o->npids : 1;
}

static void take(const cl_probe *c, cl_sample *s)
{
    const bench_opts *o = c->o;
    const int *pids;
    int np = node_pids(o, &pids);
    memset(s, 0, sizeof *s);
    for (int k = 0; k < np; k++) s->node[k] = probe_cpu_s(pids[k]);
    s->redis = o->redis_pid > 0 ? probe_cpu_s(o->redis_pid) : -1;
    s->pg = o->pg_pid > 0 ? probe_tree_cpu_s(o->pg_pid) : -1;
    s->mach = probe_take(0);
}

static void begin(void *arg)
{
    cl_probe *c = arg;
    take(c, &c->a);
    scrape(c, &c->a);
}

static void end(void *arg)
{
    cl_probe *c = arg;
    cl_sample b;
    take(c, &b);
    scrape(c, &b);
    c->b = b;
}

static double diff(double a, double b)
{
    return a < 0 || b < 0 ? -1 : b - a;
}

/* One row: CPU seconds, per 1,000 messages and deliveries, cores. */
static void row(const char *name, double cpu, double msgs, double dl, double dt)
{
    if (cpu < 0) {
        printf("    %-10s not measured\n", name);
        return;
    }
    printf("    %-10s %7.2f s  %8.4f s per 1k msgs  %8.5f s per 1k deliveries  %5.2f cores\n", name, cpu,
           msgs > 0 ? cpu * 1e3 / msgs : 0, dl > 0 ? cpu * 1e3 / dl : 0, cpu / dt);
}

/* "machine_cpu" as report_machine() writes it; the "server" is the whole
 * cluster (nodes and engines). */
static void write_mach(jw *j, const double m[4])
{
    jw_open(j, "machine_cpu");
    jw_num(j, "busy_share", m[0]);
    jw_num(j, "server_cores", m[1]);
    jw_num(j, "bench_cores", m[2]);
    jw_num(j, "other_cores", m[3]);
    jw_close(j);
}

static void report(void *arg, bench_run *r, double msgs, double dl, double dt, double bench_s)
{
    cl_probe *c = arg;
    const bench_opts *o = c->o;
    jw *j = &r->J;
    double mdt = (double)(c->b.mach.t - c->a.mach.t) / 1e9;
    if (mdt <= 0) mdt = dt;
    double busy = c->b.mach.mach_busy_s - c->a.mach.mach_busy_s;
    const int *pids;
    int np = node_pids(o, &pids);
    double node[OPTS_MAX_NODES], nodes = 0, cl;
    for (int k = 0; k < np; k++) {
        node[k] = diff(c->a.node[k], c->b.node[k]);
        if (node[k] > 0) nodes += node[k];
    }
    double redis = diff(c->a.redis, c->b.redis), pg = diff(c->a.pg, c->b.pg);
    cl = nodes + (redis > 0 ? redis : 0) + (pg > 0 ? pg : 0);
    double other = busy - cl - bench_s;
    if (other < 0) other = 0;
    printf("  CPU over the %.1f s measured (%.0f msgs, %.0f deliveries):\n", mdt, msgs, dl);
    char name[16];
    for (int k = 0; k < np; k++) {
        snprintf(name, sizeof name, "node %d", k + 1);
        row(name, node[k], msgs, dl, mdt);
    }
    row("redis", redis, msgs, dl, mdt);
    row("postgres", pg, msgs, dl, mdt);
    row("cluster", cl, msgs, dl, mdt);
    row("generator", bench_s, msgs, dl, mdt);
    row("other", other, msgs, dl, mdt);
    printf("    machine    %.0f%% of %d cores busy\n", busy / mdt / probe_cores() * 100, probe_cores());
    double cnt[NCOUNT];
    for (int q = 0; q < NCOUNT; q++) cnt[q] = c->b.count[q] - c->a.count[q];
    printf("  bus (all nodes)         %.0f PUBLISH = %.1f per message, %.0f received from other nodes = "
           "%.1f per message, %.0f dropped, %.0f resyncs\n", cnt[BUS_PUB], msgs > 0 ? cnt[BUS_PUB] / msgs : 0,
           cnt[BUS_RECV], msgs > 0 ? cnt[BUS_RECV] / msgs : 0, cnt[BUS_DROP], cnt[BUS_RESYNC]);
    if (cnt[WR_BATCHES] > 0)
        printf("  writers (all nodes)     %.0f transactions/s, %.1f writes each\n", cnt[WR_BATCHES] / mdt,
               cnt[WR_OPS] / cnt[WR_BATCHES]);
    jw_open(j, "bus");
    jw_num(j, "published", cnt[BUS_PUB]);
    jw_num(j, "received", cnt[BUS_RECV]);
    jw_num(j, "dropped", cnt[BUS_DROP]);
    jw_num(j, "resyncs", cnt[BUS_RESYNC]);
    jw_num(j, "published_per_msg", msgs > 0 ? cnt[BUS_PUB] / msgs : NAN);
    jw_num(j, "received_per_msg", msgs > 0 ? cnt[BUS_RECV] / msgs : NAN);
    jw_close(j);
    jw_open(j, "writers");
    jw_num(j, "commits_per_s", cnt[WR_BATCHES] / mdt);
    jw_num(j, "writes_per_commit", cnt[WR_BATCHES] > 0 ? cnt[WR_OPS] / cnt[WR_BATCHES] : NAN);
    jw_close(j);
    static const char *const keys[] = {"cpu_s_per_1k_msgs", "cpu_s_per_1k_deliveries", "cores"};
    for (int q = 0; q < 3; q++) {
        double per = q == 0 ? msgs / 1e3 : q == 1 ? dl / 1e3 : mdt;
        jw_open(j, keys[q]);
        for (int k = 0; k < np; k++) {
            snprintf(name, sizeof name, "n%d", k + 1);
            jw_num(j, name, node[k] >= 0 && per > 0 ? node[k] / per : NAN);
        }
        jw_num(j, "nodes", per > 0 ? nodes / per : NAN);
        jw_num(j, "redis", redis >= 0 && per > 0 ? redis / per : NAN);
        jw_num(j, "postgres", pg >= 0 && per > 0 ? pg / per : NAN);
        jw_num(j, "cluster", per > 0 ? cl / per : NAN);
        jw_num(j, "bench", per > 0 ? bench_s / per : NAN);
        jw_num(j, "other", per > 0 ? other / per : NAN);
        jw_close(j);
    }
    double m[4] = {busy / mdt / probe_cores(), cl / mdt, bench_s / mdt, other / mdt};
    write_mach(j, m);
    if (!c->have_mach) {
        memcpy(c->mach, m, sizeof m);
        c->have_mach = true;
    }
}

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    int n = o->nports ? o->nports : 1;
    if (o->nports && o->npids != o->nports) die("cluster: --pids must name one PID per port of --ports");
    cl_probe c = {.o = o, .t = r->t};
    traffic_hook h = {.begin = begin, .end = end, .report = report, .arg = &c};
    printf("cluster: %d node(s); pairs across nodes, group members spread over them\n", n);
    jw_num(&r->J, "nodes", n);
    /* each phase with its own options (the group phase: one sender per
     * group); r->o points at them while the phase runs */
    bench_opts flat = *o, paced = *o, one = *o, multi = *o;
    flat.rate = one.rate = multi.rate = 0;
    one.senders = 1;
    static const char *const names[] = {"direct", "direct_paced", "group", "group_multi"};
    const bench_opts *po[] = {&flat, &paced, &one, &multi};
    int rc = 0;
    for (int ph = 0; ph < 4 && !rc; ph++) {
        if (ph == 3) printf("\n(group_multi: %d senders per group, on different nodes when there are "
                            "several: one conversation written through several nodes)\n", multi.senders);
        /* fresh user names for each phase (worker.c: the prefix) */
        if (ph) r->run_id = (r->run_id + 1) & 0xffffff;
        r->o = po[ph];
        jw_open(&r->J, names[ph]);
        rc = traffic_run_hooked(r, ph >= 2, &h);
        jw_close(&r->J);
    }
    r->o = o;
    /* the top level's machine_cpu (the summary's conditions): the direct
     * phase's */
    if (c.have_mach) write_mach(&r->J, c.mach);
    return rc;
}

const scenario scenario_cluster = {
    .name = "cluster",
    .usage = "cluster --ports P1,P2,.. --pids N1,N2,.. [--redis-pid R --pg-pid PM] --pairs P [100] "
             "--rate R [2000, direct_paced] --groups N [8] --group-size G [30] --senders S [2, the group_multi phase] --window W [8] --seconds S [10]: "
             "cross-node durable msgs/s, send->delivery, group fan-out, CPU per 1k msgs per node and engine",
    .kind = "parleyd",
    .floor_ok = false,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
