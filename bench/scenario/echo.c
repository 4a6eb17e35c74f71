/* echo: each connection sends {"type":"echo",...} of --size bytes and waits
 * for it to come back (parleyd returns the frame byte for byte; so does the
 * floor): echoes/s, round trip, server CPU per echo.
 */
#include <stdio.h>
#include <stdlib.h>

#include "lib/pf.h"
#include "lib/prov.h"
#include "scenario/scenario.h"

enum { ST_ECHO = STATS_SCENARIO };
enum { SH_RTT = STATS_HIST_SCENARIO };

typedef struct echo_worker {
    char *payload;           /* owned: the echo frame */
    size_t len;
} echo_worker;

typedef struct echo_conn {
    int64_t t_sent;          /* when the frame in flight was sent */
} echo_conn;

static void setup(worker *w, int nitems)
{
    echo_worker *e = xcalloc(1, sizeof *e);
    e->len = (size_t)w->o->size;
    e->payload = xcalloc(1, e->len + 1);
    pf_echo(e->payload, e->len + 1, e->len);
    w->scn = e;
}

static void cleanup(worker *w)
{
    echo_worker *e = w->scn;
    if (e) free(e->payload);
    free(e);
    w->scn = NULL;
}

static bool provision(worker *w)
{
    return prov_users(w);
}

static void send_echo(worker *w, wsc *c, int64_t t)
{
    echo_worker *e = w->scn;
    ((echo_conn *)worker_user(w, c))->t_sent = t;
    worker_text(w, c, e->payload, e->len);
}

static void ready(worker *w, wsc *c)
{
    worker_mark_ready(w, c);
    if (w->running) { /* a connection that came back during the run */
        ((echo_conn *)worker_user(w, c))->t_sent = now_ns();
        worker_text(w, c, "{\"type\":\"echo\"}", 15);
    }
}

static void start(worker *w)
{
    for (int i = 0; i < w->n; i++)
        if (w->c[i].st == WSC_READY) send_echo(w, &w->c[i], now_ns());
}

static void text(worker *w, wsc *c, const char *p, size_t n)
{
    int64_t t = now_ns();
    pf_frame f;
    if (pf_parse(p, n, &f) != ERR_OK || f.type != PF_ECHO) return;
    hist_add(stats_hist(w->S, SH_RTT), t - ((echo_conn *)worker_user(w, c))->t_sent);
    stats_add(w->S, ST_ECHO, 1);
    if (w->running && !w->stopping) send_echo(w, c, t);
    else c->outstanding = 0;
}

static void defaults(bench_opts *o)
{
    if (!o->conns) o->conns = 100;
    if (!o->size) o->size = 200;
}

static int sockets(const bench_opts *o)
{
    return o->conns;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "conns", o->conns);
    jw_num(j, "seconds", o->seconds);
    jw_num(j, "body_bytes", o->size);
}

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    scn_need_pid(r);
    worker_ops ops = {.per_item = 1,
                      .user_size = sizeof(echo_conn),
                      .setup = setup,
                      .cleanup = cleanup,
                      .provision = provision,
                      .ready = ready,
                      .start = start,
                      .text = text};
    pool p;
    pool_start(&p, o, &r->t, &ops, o->conns, r->run_id);
    if (!pool_cmd_all(&p, CMD_PROVISION, 0, 120)) die("provisioning timed out");
    if (!pool_cmd_all(&p, CMD_CONNECT, o->conns, 120)) die("connect timed out");
    uint64_t e0 = pool_sum(&p, ST_ECHO);
    probe_sample s0 = probe_take(o->pid);
    double b0 = pool_cpu_s(&p);
    pool_cmd_all(&p, CMD_RUN, 0, 10);
    sleep_ms((int64_t)o->seconds * 1000);
    probe_sample s1 = probe_take(o->pid);
    double bcpu = pool_cpu_s(&p) - b0;
    uint64_t e1 = pool_sum(&p, ST_ECHO);
    pool_cmd_all(&p, CMD_STOP, 0, 10);
    double dt = (double)(s1.t - s0.t) / 1e9, cpu = s1.cpu_s - s0.cpu_s;
    double n = (double)(e1 - e0);
    hist h;
    pool_hist(&p, SH_RTT, &h);
    report_header(r, "echo round trips");
    printf("  %d connections, %d-byte frames, %.1f s\n", o->conns, o->size, dt);
    printf("  echoes/s                %.0f\n", n / dt);
    report_hist("round trip", &h);
    printf("  server CPU              %.2f s = %.2f us per echo (%.0f%% of one core)\n", cpu,
           n > 0 ? cpu * 1e6 / n : 0, cpu / dt * 100);
    jw *j = &r->J;
    jw_num(j, "echoes_per_s", n / dt);
    jw_hist(j, "rtt", &h);
    jw_num(j, "server_cpu_s", cpu);
    jw_num(j, "server_cpu_us_per_echo", n > 0 ? cpu * 1e6 / n : 0);
    jw_num(j, "server_cores_busy", cpu / dt);
    jw_num(j, "bench_cores_busy", bcpu / dt);
    report_machine(r, &s0, &s1, bcpu);
    pool_stop(&p);
    return 0;
}

const scenario scenario_echo = {
    .name = "echo",
    .usage = "echo --conns N [100] --size B [200] --seconds S [10]: echo round trips, CPU per echo",
    .kind = "parleyd",
    .floor_ok = true,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
