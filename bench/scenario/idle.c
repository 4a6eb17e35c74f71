/* idle: N authenticated idle WebSockets, opened in two halves.
 *
 * User-space bytes per connection come from the server's RssAnon (and
 * VmRSS) delta over the second half of the ramp, kernel bytes from the
 * machine's Slab delta over the same half (both ends of every loopback
 * connection), handshakes/s from the ramp's duration. The server is sampled
 * 2 s after each half.
 */
#include <inttypes.h>
#include <stdio.h>

#include "lib/prov.h"
#include "scenario/scenario.h"

static bool provision(worker *w)
{
    return prov_users(w);
}

static void defaults(bench_opts *o)
{
    if (!o->conns) o->conns = 15000;
}

static int sockets(const bench_opts *o)
{
    return o->conns;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "conns", o->conns);
}

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    scn_need_pid(r);
    int n = o->conns;
    worker_ops ops = {.per_item = 1, .provision = provision};
    pool p;
    pool_start(&p, o, &r->t, &ops, n, r->run_id);
    if (!pool_cmd_all(&p, CMD_PROVISION, 0, 240)) die("provisioning timed out");
    double prov = pool_prov_s(&p);
    sleep_ms(1000);
    probe_sample s0 = probe_take(o->pid);
    int64_t t0 = now_ns();
    /* the first half */
    int64_t half[POOL_MAX];
    for (int i = 0; i < p.n; i++) half[i] = pool_items_for(n, p.n, i) / 2;
    int seq = pool_send(&p, CMD_CONNECT, half);
    int64_t end = now_ns() + 180 * NS_PER_S;
    while (!pool_done(&p, seq) && now_ns() < end) sleep_ms(2);
    int64_t t1 = now_ns();
    uint64_t open_half = pool_sum(&p, ST_READY);
    sleep_ms(2000);
    probe_sample s1 = probe_take(o->pid);
    double b1 = pool_cpu_s(&p);
    /* the second half */
    int64_t t2 = now_ns();
    if (!pool_cmd_all(&p, CMD_CONNECT, n, 180)) fprintf(stderr, "connect timed out\n");
    int64_t t3 = now_ns();
    uint64_t open_all = pool_sum(&p, ST_READY);
    sleep_ms(2000);
    probe_sample s2 = probe_take(o->pid);
    double bcpu = pool_cpu_s(&p) - b1;

    double ramp_s = (double)(t1 - t0 + t3 - t2) / 1e9;
    double dn = (double)(open_all - open_half);
    double anon_pc = dn > 0 ? (double)(s2.anon_kb - s1.anon_kb) * 1024.0 / dn : 0;
    double rss_pc = dn > 0 ? (double)(s2.rss_kb - s1.rss_kb) * 1024.0 / dn : 0;
    double rss_all_pc = open_all ? (double)(s2.rss_kb - s0.rss_kb) * 1024.0 / (double)open_all : 0;
    double slab_pc = dn > 0 ? (double)(s2.slab_kb - s1.slab_kb) * 1024.0 / dn : 0;
    double sock_pc = dn > 0 ? (double)(s2.sock_pages - s1.sock_pages) * 4096.0 / dn : 0;
    double hs_per_s = ramp_s > 0 ? (double)open_all / ramp_s : 0;
    hist hs;
    pool_hist(&p, SH_HANDSHAKE, &hs);
    uint64_t hs_fail = pool_sum(&p, ST_HS_FAIL), rej = pool_sum(&p, ST_REJ503);

    report_header(r, "idle authenticated connections");
    printf("  connections open        %" PRIu64 " of %d (%d workers, %d source addresses); %" PRIu64
           " failed handshakes, %" PRIu64 " refused (503)\n",
           open_all, n, o->workers, o->sources, hs_fail, rej);
    if (!o->floor)
        printf("  provisioning            %d users in %.1f s (%.0f/s)\n", n, prov, prov > 0 ? n / prov : 0);
    printf("  handshakes/s            %.0f (connect to %s, %d in flight per worker)\n", hs_per_s,
           o->floor ? "101" : "hello", o->concurrency);
    report_hist("handshake latency", &hs);
    printf("  server RSS              %ld KiB before, %ld KiB at %" PRIu64 ", %ld KiB at %" PRIu64 "\n",
           s0.rss_kb, s1.rss_kb, open_half, s2.rss_kb, open_all);
    printf("  user-space per conn     %.0f B anon (RssAnon), %.0f B VmRSS, second half of the ramp; "
           "%.0f B VmRSS over the whole ramp\n", anon_pc, rss_pc, rss_all_pc);
    printf("  kernel per conn         %.0f B slab, %.0f B TCP buffers (both ends of the loopback "
           "connection)\n", slab_pc, sock_pc);
    jw *j = &r->J;
    jw_num(j, "conns_open", (double)open_all);
    jw_num(j, "handshake_failures", (double)hs_fail);
    jw_num(j, "rejected_503", (double)rej);
    jw_num(j, "provision_s", prov);
    jw_num(j, "handshakes_per_s", hs_per_s);
    jw_hist(j, "handshake", &hs);
    jw_num(j, "rss_kib_before", (double)s0.rss_kb);
    jw_num(j, "rss_kib_half", (double)s1.rss_kb);
    jw_num(j, "rss_kib_after", (double)s2.rss_kb);
    jw_num(j, "anon_kib_half", (double)s1.anon_kb);
    jw_num(j, "anon_kib_after", (double)s2.anon_kb);
    jw_num(j, "user_bytes_per_conn", anon_pc);
    jw_num(j, "rss_bytes_per_conn", rss_pc);
    jw_num(j, "rss_bytes_per_conn_whole_ramp", rss_all_pc);
    jw_num(j, "slab_bytes_per_conn", slab_pc);
    jw_num(j, "sock_bytes_per_conn", sock_pc);
    if (s0.listen_drops >= 0 && s2.listen_drops >= 0) {
        printf("  accept queue overflows  %lld during the ramp (TcpExt ListenOverflows, whole machine)\n",
               s2.listen_drops - s0.listen_drops);
        jw_num(j, "listen_overflows", (double)(s2.listen_drops - s0.listen_drops));
    }
    report_machine(r, &s1, &s2, bcpu);
    pool_stop(&p);
    return open_all == (uint64_t)n ? 0 : 1;
}

const scenario scenario_idle = {
    .name = "idle",
    .usage = "idle --conns N [15000]: authenticated idle WebSockets; server bytes per connection",
    .kind = "parleyd",
    .floor_ok = true,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
