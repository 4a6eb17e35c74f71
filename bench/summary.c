#include "summary.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/err.h"
#include "lib/jr.h"
#include "lib/jw.h"
#include "lib/targets.h"
#include "lib/util.h"

/* The whole file, NUL-terminated, trailing blanks cut; NULL if unreadable.
 * The caller frees it. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 65536, n = 0, r;
    char *p = xcalloc(1, cap);
    while ((r = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n < 4096) {
            cap *= 2;
            p = xrealloc(p, cap);
        }
    }
    fclose(f);
    p[n] = 0;
    while (n && (p[n - 1] == '\n' || p[n - 1] == ' ')) p[--n] = 0;
    *len = n;
    return p;
}

/* Writes the machine object of the first run as is. */
static void copy_machine(jw *j, const runset *rs)
{
    const char *v;
    size_t vl;
    uint8_t t;
    if (jr_get(rs->text[0], rs->len[0], "machine", &v, &vl, &t) != ERR_OK) return;
    jw_key(j, "machine");
    jw_bytes(j, v, vl);
}

static void conditions(const runset *rs)
{
    printf("\nconditions per run: CPU used by other processes on this machine during the measurement "
           "(cores), load average and CPU pressure (PSI some avg10) at the start\n");
    for (int i = 0; i < rs->n; i++) {
        double oc = jr_num(rs->text[i], rs->len[i], "figures.machine_cpu.other_cores");
        double la = jr_num(rs->text[i], rs->len[i], "loadavg_start");
        double ps = jr_num(rs->text[i], rs->len[i], "cpu_pressure_start");
        char other[24] = "-";
        if (oc == oc) snprintf(other, sizeof other, "%.2f", oc);
        printf("  %-14s other processes %-6s load %5.2f  cpu pressure %5.1f%%\n", rs->label[i], other,
               la == la ? la : -1, ps == ps ? ps : -1);
    }
}

/* The runs of the cluster scenario side by side (1, 2, 3 nodes ...), with
 * each figure's ratio to the run with the fewest nodes: every node, Redis,
 * PostgreSQL and the load generator share this machine's cores, so the
 * ratios within one suite are the figure, not the absolutes. */
static void cluster_table(const runset *rs)
{
    int idx[RUNSET_MAX], n = 0;
    for (int i = 0; i < rs->n; i++) {
        char sc[32];
        if (jr_str(rs->text[i], rs->len[i], "scenario", sc, sizeof sc) >= 0 && !strcmp(sc, "cluster"))
            idx[n++] = i;
    }
    if (!n) return;
    for (int a = 1; a < n; a++) /* by node count */
        for (int b = a; b > 0; b--) {
            double x = jr_num(rs->text[idx[b - 1]], rs->len[idx[b - 1]], "figures.nodes");
            double y = jr_num(rs->text[idx[b]], rs->len[idx[b]], "figures.nodes");
            if (!(y < x)) break;
            int t = idx[b];
            idx[b] = idx[b - 1];
            idx[b - 1] = t;
        }
#define F(i, path) jr_num(rs->text[i], rs->len[i], path)
    int base = idx[0];
    printf("\n== cluster: the cost of scaling out on this machine (nodes, Redis, PostgreSQL and the load "
           "generator share its cores; (x) = ratio to %.0f node(s)) ==\n", F(base, "figures.nodes"));
    static const char *const ph[] = {"direct", "direct_paced", "group", "group_multi"};
    static const char *const what[] = {
        "direct: pairs, the two users on different nodes, flat out; msgs/s acked, send->delivery",
        "direct_paced: the same at a fixed offered rate (open loop); msgs/s acked, send->delivery",
        "group: one sender per group, members on every node; deliveries/s, fan-out (last member)",
        "group_multi: senders of one group on different nodes; deliveries/s, fan-out (last member)"};
    printf("(bus pub/rcv: PUBLISH commands per message, and bus messages received from another node per "
           "message, over all nodes)\n");
    for (int q = 0; q < 4; q++) {
        char path[96];
        bool grp = q >= 2;
        printf("%s\n", what[q]);
        printf("  %-11s %5s  %-17s %-22s %-12s %s\n", "run", "nodes", grp ? "deliveries/s" : "msgs/s",
               grp ? "fan-out p50 / p99 ms" : "delivery p50 / p99 ms", "bus pub/rcv",
               "CPU s per 1k msgs: each node | redis | postgres | all (x)");
        for (int k = 0; k < n; k++) {
            int i = idx[k];
            double v, v0, p50, p99;
            snprintf(path, sizeof path, "figures.%s.%s", ph[q], grp ? "deliveries_per_s" : "msgs_per_s");
            v = F(i, path);
            v0 = F(base, path);
            snprintf(path, sizeof path, "figures.%s.%s.p50_us", ph[q], grp ? "fanout" : "send_delivery");
            p50 = F(i, path);
            snprintf(path, sizeof path, "figures.%s.%s.p99_us", ph[q], grp ? "fanout" : "send_delivery");
            p99 = F(i, path);
            char a[40], b[40], bus[40], cpu[200];
            char pp[96], rp[96];
            snprintf(pp, sizeof pp, "figures.%s.bus.published_per_msg", ph[q]);
            snprintf(rp, sizeof rp, "figures.%s.bus.received_per_msg", ph[q]);
            snprintf(bus, sizeof bus, "%.1f / %.1f", F(i, pp), F(i, rp));
            snprintf(a, sizeof a, "%.0f (%.2f)", v, v / v0);
            snprintf(b, sizeof b, "%.1f / %.1f", p50 / 1e3, p99 / 1e3);
            size_t off = 0;
            int nn = (int)F(i, "figures.nodes");
            for (int m = 1; m <= nn && m <= 8 && off < sizeof cpu; m++) {
                snprintf(path, sizeof path, "figures.%s.cpu_s_per_1k_msgs.n%d", ph[q], m);
                off += (size_t)snprintf(cpu + off, sizeof cpu - off, "%s%.3f", m > 1 ? " " : "", F(i, path));
            }
            static const char *const eng[] = {"redis", "postgres", "cluster"};
            for (int e = 0; e < 3 && off < sizeof cpu; e++) {
                snprintf(path, sizeof path, "figures.%s.cpu_s_per_1k_msgs.%s", ph[q], eng[e]);
                double x = F(i, path);
                off += (size_t)snprintf(cpu + off, sizeof cpu - off, " | %.3f", x);
                if (e == 2 && off < sizeof cpu) {
                    double x0 = F(base, path);
                    snprintf(cpu + off, sizeof cpu - off, " (%.2f)", x / x0);
                }
            }
            printf("  %-11s %5.0f  %-17s %-22s %-12s %s\n", rs->label[i], F(i, "figures.nodes"), a, b, bus,
                   cpu);
        }
    }
#undef F
}

int summary_main(int argc, char **argv)
{
    const char *out = NULL, *given = NULL;
    runset rs = {0};
    char *texts[RUNSET_MAX];
    int ntexts = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) {
            out = argv[++i];
            continue;
        }
        if (!strcmp(argv[i], "--targets") && i + 1 < argc) {
            given = argv[++i];
            continue;
        }
        if (ntexts >= RUNSET_MAX) break;
        size_t len = 0;
        char *t = slurp(argv[i], &len);
        if (!t || !len || runset_add(&rs, t, len) != ERR_OK) {
            fprintf(stderr, "summary: skipping %s\n", argv[i]);
            free(t);
            continue;
        }
        texts[ntexts++] = t;
    }
    if (!rs.n) die("summary: no runs");
    char path[600], err[700];
    targets_path(given, path, sizeof path);
    targets *tg = targets_load(path, err, sizeof err);
    if (!tg) die("summary: %s", err);

    jw j;
    jw_init(&j);
    jw_open(&j, NULL);
    jw_num(&j, "generated", (double)time(NULL));
    copy_machine(&j, &rs);
    printf("\n== parley-bench summary: targets (%s) ==\n", path);
    targets_table(tg, &rs, &j);
    conditions(&rs);
    cluster_table(&rs);
    targets_notes(tg, &rs);
    targets_floor_ratios(tg, &rs, &j);
    jw_open_array(&j, "runs");
    for (int i = 0; i < rs.n; i++) {
        if (i) jw_bytes(&j, ",", 1);
        jw_bytes(&j, rs.text[i], rs.len[i]);
    }
    jw_close_array(&j);
    jw_close(&j);
    jw_bytes(&j, "\n", 1);
    int rc = 0;
    if (out) {
        FILE *f = fopen(out, "w");
        if (!f) die("%s: %s", out, strerror(errno));
        if (fwrite(j.p, 1, j.n, f) != j.n) rc = 1;
        if (fclose(f) != 0) rc = 1;
        printf("wrote %s\n", out);
    }
    jw_free(&j);
    targets_free(tg);
    for (int i = 0; i < ntexts; i++) free(texts[i]);
    return rc;
}
