#include "scenario/traffic.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/disk.h"
#include "lib/pf.h"
#include "lib/prov.h"

enum {
    ST_SENT = STATS_SCENARIO, ST_ACKED, ST_DLV, ST_FAN_DONE, ST_LATE, ST_SKIPPED, ST_PAYLOAD
};
enum { SH_ACK = STATS_HIST_SCENARIO, SH_DLV, SH_FAN };

enum { K_SEND, K_RECV, K_MEMBER };

#define FAN_RING 1024
#define MAX_UNACKED_PACED 2000

/* The fixed part of a stored message beside its cmid and body, as
 * src/store/store.c lays out its msgs table: the key (conv, seq: two u64)
 * and the value's header (format u8, sender u64, ts i64, cmid length u8). */
#define STORED_FIXED_BYTES (8 + 8 + 1 + 8 + 8 + 1)

/* --dir: fdatasync samples taken right before and right after the traffic
 * (each half bounded in time), the same run's floor under an ack. */
#define SYNC_SAMPLES 100
#define SYNC_BUDGET_NS (3 * NS_PER_S)

/* After the senders stop: the last acks and the writes the server defers
 * past them are waited for, until nothing changed for SETTLE_QUIET_MS (at
 * most SETTLE_MAX_MS). */
#define SETTLE_STEP_MS 200
#define SETTLE_QUIET_MS 1000
#define SETTLE_MAX_MS 6000
/* Then the device's writes are sampled this long with the server quiet:
 * the rest of the machine's rate, subtracted from the run's. */
#define BG_MS 1000

typedef struct tconn {
    uint8_t kind;
    uint32_t grp;            /* item (pair or group) in the worker */
    uint32_t member;         /* index in the group; senders are 0 .. S-1 */
    uint64_t conv;
    uint64_t k;              /* next message number */
} tconn;

/* A message of one sender of one group, until all members have it. */
typedef struct fan {
    uint64_t k;
    int64_t t;
    uint32_t cnt;
} fan;

typedef struct tworker {
    bool group;
    int per;                 /* connections per item */
    int *senders, nsenders, rr;
    double rate;             /* this worker's share, msgs/s; 0: flat out */
    int64_t pace_t0;
    uint64_t pace_sent;
    fan *fans;               /* group: items x senders x FAN_RING */
} tworker;

static tconn *tc(worker *w, const wsc *c)
{
    return worker_user(w, c);
}

static void setup_common(worker *w, int nitems, bool group)
{
    const bench_opts *o = w->o;
    tworker *t = xcalloc(1, sizeof *t);
    t->group = group;
    t->per = group ? o->gsize : 2;
    t->senders = xcalloc((size_t)(w->n ? w->n : 1), sizeof *t->senders);
    for (int i = 0; i < w->n; i++) {
        tconn *x = tc(w, &w->c[i]);
        x->grp = (uint32_t)(i / t->per);
        x->member = (uint32_t)(i % t->per);
        if (group) {
            x->kind = K_MEMBER;
            if ((int)x->member < o->senders) t->senders[t->nsenders++] = i;
        } else {
            x->kind = i % 2 ? K_RECV : K_SEND;
            x->member = 0;
            if (x->kind == K_SEND) t->senders[t->nsenders++] = i;
            if (o->floor) w->c[i].pair = (int64_t)w->id * 1000000 + (int64_t)x->grp;
        }
    }
    if (group) t->fans = xcalloc((size_t)nitems * (size_t)o->senders * FAN_RING, sizeof *t->fans);
    if (o->rate > 0 && t->nsenders) {
        int total = group ? o->groups : o->pairs, active = 0;
        for (int i = 0; i < o->workers; i++) active += pool_items_for(total, o->workers, i) > 0;
        t->rate = o->rate / (active ? active : 1);
    }
    w->scn = t;
}

static void setup_direct(worker *w, int nitems)
{
    setup_common(w, nitems, false);
}

static void setup_group(worker *w, int nitems)
{
    setup_common(w, nitems, true);
}

static void cleanup(worker *w)
{
    tworker *t = w->scn;
    if (t) {
        free(t->senders);
        free(t->fans);
    }
    free(t);
    w->scn = NULL;
}

/* Users, then a direct conversation per pair or a group per group. */
static bool provision(worker *w)
{
    tworker *t = w->scn;
    const bench_opts *o = w->o;
    if (!prov_users(w)) return false;
    prov_conv *cv = xcalloc((size_t)w->n, sizeof *cv);
    int nconv = 0;
    for (int i = 0; i < w->n; i += t->per) {
        size_t cap = 64 + (size_t)t->per * 48;
        char *body = xcalloc(1, cap), name[64];
        if (!t->group) {
            worker_username(name, sizeof name, w->prefix, w->id, i + 1);
            snprintf(body, cap, "{\"type\":\"direct\",\"with\":\"%s\"}", name);
        } else {
            size_t n = (size_t)snprintf(body, cap, "{\"type\":\"group\",\"name\":\"bench %d\",\"members\":[",
                                        i / t->per);
            for (int m = 1; m < o->gsize && n < cap; m++) {
                worker_username(name, sizeof name, w->prefix, w->id, i + m);
                n += (size_t)snprintf(body + n, cap - n, "%s\"%s\"", m > 1 ? "," : "", name);
            }
            if (n < cap) snprintf(body + n, cap - n, "]}");
        }
        cv[nconv].body = body;
        cv[nconv++].owner = i;
    }
    bool ok = prov_convs(w, cv, nconv);
    for (int j = 0; j < nconv; j++) {
        for (int m = 0; m < t->per && cv[j].owner + m < w->n; m++)
            tc(w, &w->c[cv[j].owner + m])->conv = cv[j].id;
        free(cv[j].body);
    }
    free(cv);
    return ok;
}

static void send_msg(worker *w, wsc *c, int64_t t)
{
    tconn *x = tc(w, c);
    char p[17400];
    size_t n = pf_send(p, sizeof p, x->conv, x->k, t, x->member, w->o->size);
    stats_add(w->S, ST_PAYLOAD, pf_send_payload(x->k, t, x->member, w->o->size));
    x->k++;
    c->outstanding++;
    stats_add(w->S, ST_SENT, 1);
    worker_text(w, c, p, n);
}

static void start(worker *w)
{
    tworker *t = w->scn;
    t->pace_t0 = now_ns();
    t->pace_sent = 0;
    if (t->rate > 0) return;
    for (int s = 0; s < t->nsenders; s++) {
        wsc *c = &w->c[t->senders[s]];
        for (int k = 0; k < w->o->window && c->st == WSC_READY; k++) send_msg(w, c, now_ns());
    }
}

/* Open loop: every message due by now goes out, stamped with the time it
 * was due. */
static int tick(worker *w)
{
    tworker *t = w->scn;
    if (!w->running || w->stopping || t->rate <= 0 || !t->nsenders) return -1;
    int64_t now = now_ns();
    double due = (double)(now - t->pace_t0) / 1e9 * t->rate;
    int guard = 0;
    while ((double)t->pace_sent < due && guard++ < 100000) {
        int64_t intended = t->pace_t0 + (int64_t)((double)t->pace_sent / t->rate * 1e9);
        wsc *c = &w->c[t->senders[t->rr++ % t->nsenders]];
        t->pace_sent++;
        if (c->st != WSC_READY) {
            stats_add(w->S, ST_SKIPPED, 1);
            continue;
        }
        if (c->outstanding >= MAX_UNACKED_PACED) {
            stats_add(w->S, ST_LATE, 1);
            continue;
        }
        send_msg(w, c, intended);
    }
    return 1;
}

static void text(worker *w, wsc *c, const char *p, size_t n)
{
    int64_t now = now_ns();
    tworker *t = w->scn;
    tconn *x = tc(w, c);
    const bench_opts *o = w->o;
    pf_frame f;
    if (pf_parse(p, n, &f) != ERR_OK) {
        stats_add(w->S, ST_ERRORS, 1);
        return;
    }
    /* the floor relays the send itself: to the sender as its ack, to the
     * partner as its delivery */
    bool is_ack = o->floor ? f.type == PF_SEND && x->kind == K_SEND : f.type == PF_ACK;
    bool is_msg = o->floor ? f.type == PF_SEND : f.type == PF_MSG;
    if (is_ack) {
        int64_t ts = pf_cmid_time(&f);
        if (ts > 0) hist_add(stats_hist(w->S, SH_ACK), now - ts);
        stats_add(w->S, ST_ACKED, 1);
        if (c->outstanding > 0) c->outstanding--;
        if (w->running && !w->stopping && t->rate <= 0 && c->outstanding < o->window)
            send_msg(w, c, now_ns());
    } else if (is_msg) {
        uint64_t k = 0;
        uint32_t m = 0;
        int64_t ts = pf_body_time(&f, &k, &m);
        if (ts > 0) hist_add(stats_hist(w->S, SH_DLV), now - ts);
        stats_add(w->S, ST_DLV, 1);
        if (t->fans && ts > 0 && (int)m < o->senders) {
            fan *g = &t->fans[((size_t)x->grp * (size_t)o->senders + m) * FAN_RING + k % FAN_RING];
            if (g->k != k || g->t != ts) {
                g->k = k;
                g->t = ts;
                g->cnt = 0;
            }
            if (++g->cnt == (uint32_t)(o->gsize - 1)) {
                hist_add(stats_hist(w->S, SH_FAN), now - ts);
                stats_add(w->S, ST_FAN_DONE, 1);
            }
        }
    } else if (f.type == PF_ERROR) {
        scn_note_error(w, &f, p, n);
        if (c->outstanding > 0) c->outstanding--;
    }
}

void traffic_params(const bench_opts *o, jw *j)
{
    jw_str(j, "mode", o->rate > 0 ? "paced" : "flat");
    jw_num(j, "rate", o->rate);
    jw_num(j, "window", o->window);
    jw_num(j, "body_bytes", o->size);
}

/* The disk under the data directory (--dir), sampled into h; false (with
 * the reason printed) when it cannot be. */
static bool sync_half(const bench_opts *o, hist *h)
{
    char err[600];
    if (disk_sync_sample(o->dir, SYNC_SAMPLES / 2, SYNC_BUDGET_NS, h, err, sizeof err) >= 0) return true;
    printf("  fdatasync               not measured: %s\n", err);
    return false;
}

/* The end of a run, once the server's writes settled after it. */
typedef struct run_tail {
    probe_io io;             /* the server's I/O counters then (-1: not read) */
    long long dev_w;         /* its storage device's written bytes then (-1: unknown) */
    double bg_bytes_per_s;   /* that device's writes over BG_MS after it: the
                              * machine's other writers (-1: unknown) */
    uint64_t acked;          /* acks counted by then (all, since the start) */
    double waited_s;         /* from the senders' stop */
} run_tail;

/* Waits for the run's tail (see SETTLE_*). */
static run_tail settle(const pool *p, int pid)
{
    run_tail t = {.io = {-1, -1, -1, -1, -1}, .dev_w = -1, .bg_bytes_per_s = -1};
    int64_t t0 = now_ns(), quiet_since = t0;
    unsigned long dev = probe_storage_dev(pid);
    probe_io io;
    probe_read_io(pid, &t.io);
    t.acked = pool_sum(p, ST_ACKED);
    for (int i = 0; i < SETTLE_MAX_MS / SETTLE_STEP_MS; i++) {
        sleep_ms(SETTLE_STEP_MS);
        if (probe_read_io(pid, &io) != 0) break;
        uint64_t a = pool_sum(p, ST_ACKED);
        int64_t now = now_ns();
        if (io.write_bytes != t.io.write_bytes || io.wchar != t.io.wchar || a != t.acked) quiet_since = now;
        t.io = io;
        t.acked = a;
        if (now - quiet_since >= SETTLE_QUIET_MS * NS_PER_MS) break;
    }
    t.waited_s = (double)(now_ns() - t0) / 1e9;
    /* The server is quiet now: what the device takes next is the rest of
     * the machine (the rate subtracted from the run's device bytes). */
    t.dev_w = probe_dev_written(dev);
    int64_t b0 = now_ns();
    sleep_ms(BG_MS);
    long long after = probe_dev_written(dev);
    if (t.dev_w >= 0 && after >= t.dev_w)
        t.bg_bytes_per_s = (double)(after - t.dev_w) / ((double)(now_ns() - b0) / 1e9);
    return t;
}

/* The stored record's size: the mean cmid + body of the messages sent
 * (payload bytes over sent messages) plus STORED_FIXED_BYTES; NAN when
 * nothing was sent. Printed and recorded. */
static double stored_record(bench_run *r, double payload, double sent)
{
    if (sent <= 0) return NAN;
    double rec = STORED_FIXED_BYTES + payload / sent;
    printf("  stored record           %.0f B per message (estimate: cmid + body %.0f B as sent, + %d B "
           "fixed: key conv+seq, format, sender, ts, cmid length)\n", rec, payload / sent,
           STORED_FIXED_BYTES);
    jw_num(&r->J, "stored_record_bytes", rec);
    return rec;
}

/* The disk figures of a run, per acked message, beside the stored record
 * (rec, NAN if unknown):
 *   - device: bytes that reached the block device of the server's store
 *     from the start of the run to its settled tail, less the rest of the
 *     machine's rate measured right after (tail->bg_bytes_per_s): what the
 *     disk really took, block-rounded, journal included. The target's figure.
 *   - wchar: bytes the server passed to write calls (not block-rounded).
 *   - write_bytes: what /proc/PID/io says the server sent to storage. The
 *     kernel counts it when a page-cache folio turns dirty, the whole
 *     folio: with large folios (ext4 since Linux 6.x) a 200-byte append
 *     into a clean 64 KiB folio counts 64 KiB, so it overstates small
 *     synced appends many times over; printed for comparison only.
 * Over the measured seconds (s0..s1, msgs acked) and up to the settled
 * tail (from s0, every ack since a0). */
static void disk_figures(bench_run *r, const probe_sample *s0, const probe_sample *s1,
                         const run_tail *tail, uint64_t a0, double msgs, double rec, double dt)
{
    jw *j = &r->J;
    if (s0->io_err || s1->io_err) {
        char why[300];
        int err = s0->io_err ? s0->io_err : s1->io_err;
        printf("  disk writes             not measured: %s\n",
               probe_io_problem(r->o->pid, err, why, sizeof why));
        jw_str(j, "disk_not_measured", why);
        return;
    }
    if (msgs <= 0) return;
    double win = (double)(s1->disk_w - s0->disk_w), wwin = (double)(s1->wchar - s0->wchar);
    printf("  disk writes (run)       %.0f B per message to write calls (wchar), %.1f MB/s; "
           "write_bytes %.0f B\n", wwin / msgs, wwin / dt / 1e6, win / msgs);
    jw_num(j, "wchar_mb_per_s", wwin / dt / 1e6);
    jw_num(j, "write_bytes_per_msg_run", win / msgs);
    jw_num(j, "wchar_bytes_per_msg_run", wwin / msgs);
    if (tail->io.write_bytes < 0 || tail->acked <= a0) return;
    double n = (double)(tail->acked - a0);
    double all = (double)(tail->io.write_bytes - s0->disk_w), wall = (double)(tail->io.wchar - s0->wchar);
    double span = (double)(tail->waited_s) + dt;
    double dev = NAN, bg = tail->bg_bytes_per_s;
    if (s0->dev_w >= 0 && tail->dev_w >= s0->dev_w && bg >= 0) {
        dev = (double)(tail->dev_w - s0->dev_w) - bg * span;
        if (dev < 0) dev = 0;
    }
    if (dev == dev)
        printf("  disk bytes per message  %.0f B reached the device (less the machine's other "
               "writes, %.2f MB/s measured after), %.0f B to write calls (wchar), write_bytes %.0f B; "
               "%.0f acked, until the server's writes settled %.1f s after the run\n",
               dev / n, bg / 1e6, wall / n, all / n, n, tail->waited_s);
    else
        printf("  disk bytes per message  device not measured (no block device stat for the "
               "store's files); %.0f B to write calls (wchar), write_bytes %.0f B; %.0f acked\n",
               wall / n, all / n, n);
    if (rec == rec && dev == dev)
        printf("  disk / stored record    %.1fx (device), %.1fx (wchar)\n", dev / n / rec,
               wall / n / rec);
    jw_num(j, "disk_bytes_per_msg", dev / n);
    jw_num(j, "disk_bg_mb_per_s", bg >= 0 ? bg / 1e6 : NAN);
    jw_num(j, "wchar_bytes_per_msg", wall / n);
    jw_num(j, "write_bytes_per_msg", all / n);
    jw_num(j, "disk_msgs_counted", n);
    jw_num(j, "disk_settle_s", tail->waited_s);
    if (rec == rec) jw_num(j, "disk_per_stored_record", dev / n / rec);
}

int traffic_run(bench_run *r, bool group)
{
    return traffic_run_hooked(r, group, NULL);
}

int traffic_run_hooked(bench_run *r, bool group, const traffic_hook *h)
{
    const bench_opts *o = r->o;
    scn_need_pid(r);
    int items = group ? o->groups : o->pairs;
    worker_ops ops = {.per_item = group ? o->gsize : 2,
                      .user_size = sizeof(tconn),
                      .setup = group ? setup_group : setup_direct,
                      .cleanup = cleanup,
                      .provision = provision,
                      .start = start,
                      .tick = tick,
                      .text = text};
    pool p;
    pool_start(&p, o, &r->t, &ops, items, r->run_id);
    if (!pool_cmd_all(&p, CMD_PROVISION, 0, 240)) die("provisioning timed out");
    double prov = pool_prov_s(&p);
    int nconn = group ? o->groups * o->gsize : 2 * o->pairs;
    if (!pool_cmd_all(&p, CMD_CONNECT, nconn, 120)) die("connect timed out");
    sleep_ms(1000); /* presence frames settle */
    hist hs;
    hist_reset(&hs);
    bool sync_ok = o->dir && !o->floor && sync_half(o, &hs);
    pool_reset_hists(&p);
    uint64_t a0 = pool_sum(&p, ST_ACKED), d0 = pool_sum(&p, ST_DLV), f0 = pool_sum(&p, ST_FAN_DONE);
    uint64_t n0 = pool_sum(&p, ST_SENT), y0 = pool_sum(&p, ST_PAYLOAD);
    metrics_writer m0 = o->floor ? (metrics_writer){0} : metrics_scrape(&r->t);
    probe_sample s0 = probe_take(o->pid);
    if (h) h->begin(h->arg);
    double b0 = pool_cpu_s(&p);
    pool_cmd_all(&p, CMD_RUN, 0, 10);
    sleep_ms((int64_t)o->seconds * 1000);
    probe_sample s1 = probe_take(o->pid);
    double bcpu = pool_cpu_s(&p) - b0;
    if (h) h->end(h->arg);
    metrics_writer m1 = o->floor ? (metrics_writer){0} : metrics_scrape(&r->t);
    uint64_t a1 = pool_sum(&p, ST_ACKED), d1 = pool_sum(&p, ST_DLV), f1 = pool_sum(&p, ST_FAN_DONE);
    pool_cmd_all(&p, CMD_STOP, 0, 10);
    uint64_t n1 = pool_sum(&p, ST_SENT), y1 = pool_sum(&p, ST_PAYLOAD);
    run_tail tail = {.io = {-1, -1, -1, -1, -1}, .dev_w = -1, .bg_bytes_per_s = -1};
    if (!o->floor && !s0.io_err) tail = settle(&p, o->pid);
    if (sync_ok) sync_ok = sync_half(o, &hs);
    double dt = (double)(s1.t - s0.t) / 1e9, cpu = s1.cpu_s - s0.cpu_s;
    double msgs = (double)(a1 - a0), dl = (double)(d1 - d0);
    hist ha, hd, hf;
    pool_hist(&p, SH_ACK, &ha);
    pool_hist(&p, SH_DLV, &hd);
    pool_hist(&p, SH_FAN, &hf);
    char what[160];
    if (group)
        snprintf(what, sizeof what, "%d groups of %d, %d sender(s) each, %s", o->groups, o->gsize,
                 o->senders, o->rate > 0 ? "paced" : "flat out");
    else snprintf(what, sizeof what, "%d pairs, %s", o->pairs, o->rate > 0 ? "paced" : "flat out");
    report_header(r, what);
    if (!o->floor) printf("  provisioning            %d users in %.1f s\n", nconn, prov);
    if (o->rate > 0)
        printf("  target rate             %.0f msgs/s (open loop; latency from the intended send time)\n",
               o->rate);
    else printf("  window                  %d unacknowledged per sender\n", o->window);
    printf("  durable msgs/s          %.0f acked%s\n", msgs / dt,
           o->floor ? " (floor: relayed, nothing stored)" : "");
    printf("  deliveries/s            %.0f\n", dl / dt);
    report_hist("send->ack", &ha);
    report_hist("send->delivery", &hd);
    if (group) report_hist("fan-out (last member)", &hf);
    jw *j = &r->J;
    if (h) {
        h->report(h->arg, r, msgs, dl, dt, bcpu);
    } else {
        printf("  server CPU              %.2f s = %.2f us per message, %.3f us per delivery (%.0f%% of one "
               "core)\n", cpu, msgs > 0 ? cpu * 1e6 / msgs : 0, dl > 0 ? cpu * 1e6 / dl : 0,
               cpu / dt * 100);
        report_machine(r, &s0, &s1, bcpu);
        report_writer(r, &m0, &m1, dt);
    }
    if (!o->floor && !h) {
        double rec = stored_record(r, (double)(y1 - y0), (double)(n1 - n0));
        disk_figures(r, &s0, &s1, &tail, a0, msgs, rec, dt);
    }
    if (sync_ok && hs.count) {
        printf("  fdatasync, same run     (4 KiB, %s, %d before and %d after the traffic)\n", o->dir,
               SYNC_SAMPLES / 2, SYNC_SAMPLES / 2);
        report_hist("fdatasync", &hs);
        jw_hist(j, "fdatasync", &hs);
        if (ha.count && hs.count)
            printf("  send->ack / fdatasync   p99 %.1fx, same run\n",
                   hist_pct_us(&ha, 0.99) / hist_pct_us(&hs, 0.99));
    }
    uint64_t errs = pool_sum(&p, ST_ERRORS), closed = pool_sum(&p, ST_CLOSED),
             late = pool_sum(&p, ST_LATE), busy = pool_sum(&p, ST_BUSY);
    if (errs || closed || late)
        printf("  problems                %" PRIu64 " error frames (%" PRIu64 " busy), %" PRIu64
               " connections lost, %" PRIu64 " paced sends skipped (%d unacked)\n",
               errs, busy, closed, late, MAX_UNACKED_PACED);
    jw_num(j, "provision_s", prov);
    jw_num(j, "msgs_per_s", msgs / dt);
    jw_num(j, "deliveries_per_s", dl / dt);
    jw_hist(j, "send_ack", &ha);
    jw_hist(j, "send_delivery", &hd);
    if (group) {
        jw_hist(j, "fanout", &hf);
        jw_num(j, "fanouts_complete", (double)(f1 - f0));
    }
    if (!h) {
        jw_num(j, "server_cpu_s", cpu);
        jw_num(j, "server_cpu_us_per_msg", msgs > 0 ? cpu * 1e6 / msgs : 0);
        jw_num(j, "server_cpu_us_per_delivery", dl > 0 ? cpu * 1e6 / dl : 0);
        jw_num(j, "server_cores_busy", cpu / dt);
    }
    jw_num(j, "bench_cores_busy", bcpu / dt);
    jw_num(j, "error_frames", (double)errs);
    jw_num(j, "busy", (double)busy);
    jw_num(j, "conns_lost", (double)closed);
    jw_num(j, "paced_skipped", (double)late);
    pool_stop(&p);
    return 0;
}
