#include "lib/report.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "lib/targets.h"

void report_begin(bench_run *r, const bench_opts *o, const char *kind,
                  void (*params)(const bench_opts *, jw *))
{
    r->o = o;
    r->kind = kind;
    r->load_start = probe_loadavg1();
    r->psi_start = probe_cpu_pressure();
    jw_init(&r->J);
    jw *j = &r->J;
    jw_open(j, NULL);
    jw_str(j, "scenario", o->scenario);
    jw_str(j, "label", opts_label(o));
    jw_str(j, "target", kind);
    jw_num(j, "time", (double)time(NULL));
    probe_machine_json(j);
    jw_open(j, "params");
    jw_num(j, "workers", o->workers);
    jw_num(j, "sources", o->sources);
    jw_num(j, "server_pid", o->pid);
    if (params) params(o, j);
    jw_close(j);
    jw_open(j, "figures");
}

void report_end(bench_run *r)
{
    jw *j = &r->J;
    jw_close(j); /* figures */
    jw_num(j, "loadavg_start", r->load_start);
    jw_num(j, "loadavg_end", probe_loadavg1());
    jw_num(j, "cpu_pressure_start", r->psi_start);
    jw_num(j, "cpu_pressure_end", probe_cpu_pressure());
    jw_close(j);
    jw_bytes(j, "\n", 1);
    /* the targets judge parleyd; a floor run is only a reference */
    if (strcmp(r->kind, "floor") != 0) targets_print_run(r->o->targets, opts_label(r->o), j->p, j->n);
    if (r->o->json) {
        FILE *f = fopen(r->o->json, "w");
        if (!f) die("%s: %s", r->o->json, strerror(errno));
        fwrite(j->p, 1, j->n, f);
        fclose(f);
        printf("  -> %s\n", r->o->json);
    }
    jw_free(j);
}

void report_header(const bench_run *r, const char *what)
{
    printf("\n== %s (%s): %s ==\n", opts_label(r->o), r->kind, what);
}

void report_hist(const char *name, const hist *h)
{
    if (!h->count) {
        printf("  %-24s (no samples)\n", name);
        return;
    }
    printf("  %-24s p50 %8.0f  p90 %8.0f  p99 %8.0f  p99.9 %8.0f  max %8.0f us  (n=%" PRIu64 ")\n",
           name, hist_pct_us(h, 0.5), hist_pct_us(h, 0.9), hist_pct_us(h, 0.99),
           hist_pct_us(h, 0.999), hist_max_us(h), h->count);
}

void report_machine(bench_run *r, const probe_sample *a, const probe_sample *b, double bench_s)
{
    double dt = (double)(b->t - a->t) / 1e9;
    double busy = b->mach_busy_s - a->mach_busy_s, srv = b->cpu_s - a->cpu_s;
    double cores = probe_cores();
    if (dt <= 0 || busy < 0) return;
    double other = busy - srv - bench_s;
    if (other < 0) other = 0;
    printf("  machine CPU             %.0f%% of %.0f cores busy: server %.0f%%, load generator %.0f%%, "
           "other processes %.0f%% (of one core)\n",
           busy / dt / cores * 100, cores, srv / dt * 100, bench_s / dt * 100, other / dt * 100);
    jw_open(&r->J, "machine_cpu");
    jw_num(&r->J, "busy_share", busy / dt / cores);
    jw_num(&r->J, "server_cores", srv / dt);
    jw_num(&r->J, "bench_cores", bench_s / dt);
    jw_num(&r->J, "other_cores", other / dt);
    jw_close(&r->J);
}

void report_writer(bench_run *r, const metrics_writer *a, const metrics_writer *b, double dt)
{
    if (!a->ok || !b->ok) return;
    double nb = b->batches - a->batches, ops = b->ops - a->ops;
    if (nb <= 0) return;
    double apply = (b->apply_s - a->apply_s) * 1e3 / nb, commit = (b->commit_s - a->commit_s) * 1e3 / nb,
           fanout = (b->fanout_s - a->fanout_s) * 1e3 / nb;
    /* one group commit is one durable transaction: one fsync */
    printf("  group commit            %.0f commits (fsyncs)/s, %.1f writes per commit (largest so far "
           "%.0f)\n", nb / dt, ops / nb, b->max_batch);
    printf("  writer time per commit  apply %.3f ms, commit (fsync) %.3f ms, fan-out %.3f ms\n", apply,
           commit, fanout);
    jw_open(&r->J, "writer");
    jw_num(&r->J, "commits_per_s", nb / dt);
    jw_num(&r->J, "writes_per_commit", ops / nb);
    jw_num(&r->J, "apply_ms_per_commit", apply);
    jw_num(&r->J, "commit_ms_per_commit", commit);
    jw_num(&r->J, "fanout_ms_per_commit", fanout);
    jw_close(&r->J);
}
