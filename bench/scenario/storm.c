/* storm: a reconnect storm.
 *
 * N clients in N/2 direct conversations are connected and synced; then all
 * drop at once (RST). Each "a" client sends a message at the moment of the
 * drop and resends it with the same cmid after reconnecting; every client
 * reconnects with libparley's backoff (client_backoff: base 1 s, cap 60 s,
 * full jitter, a 503's Retry-After as the floor), lists its inbox with
 * changed_since and syncs what changed. Meanwhile a background
 * conversation that is never dropped (two connections of the parent's own
 * worker) sends --bg-rate msgs/s with cmids.
 *
 * Reported: the time until all are back (hello) and all synced, refused
 * handshakes (503), the background's send->delivery before, during and
 * after the storm, and messages lost: every acknowledged background message
 * must be in history with its seq (REST paging, gapless), and every "a"
 * client's acknowledged message must be in its sync. Must be 0.
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/pf.h"
#include "lib/prov.h"
#include "scenario/scenario.h"

enum { ST_LOST = STATS_SCENARIO, ST_SYNCED, ST_BACK, ST_DUP };
enum { SH_BACK = STATS_HIST_SCENARIO, SH_SYNC, SH_BG_PRE, SH_BG_STORM, SH_BG_POST, SH_BG_ACK };
enum { MARK_BACK, MARK_SYNC };

enum { K_A, K_B, K_BG_SEND, K_BG_RECV };

/* Where a client is in getting back in sync. */
enum { SP_NONE, SP_ACK, SP_INBOX, SP_HISTORY, SP_SYNCED };

typedef struct sconn {
    uint8_t kind;
    uint8_t phase;           /* SP_* */
    bool want_resend;        /* the message of the drop awaits its ack */
    bool ack_found;          /* that message was seen in history */
    uint64_t conv, known_seq, cursor, ack_seq;
} sconn;

typedef struct sworker {
    bool dropped;            /* the storm has begun */
    int64_t drop_at;
} sworker;

static sconn *sc(worker *w, const wsc *c)
{
    return worker_user(w, c);
}

static int drop_msg(char *out, size_t cap, const worker *w, const wsc *c, uint64_t conv)
{
    return snprintf(out, cap,
                    "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"drop-%u-%u\","
                    "\"body\":\"sent as the connection dropped\"}",
                    conv, (unsigned)w->id, (unsigned)c->idx);
}

/* ---- the storm clients (workers) ------------------------------------------------ */

static void setup(worker *w, int nitems)
{
    w->scn = xcalloc(1, sizeof(sworker));
    for (int i = 0; i < w->n; i++) sc(w, &w->c[i])->kind = i % 2 ? K_B : K_A;
}

static void cleanup(worker *w)
{
    free(w->scn);
    w->scn = NULL;
}

static bool provision(worker *w)
{
    if (!prov_users(w)) return false;
    int n = w->n / 2;
    prov_conv *cv = xcalloc((size_t)(n ? n : 1), sizeof *cv);
    for (int j = 0; j < n; j++) {
        char name[64];
        worker_username(name, sizeof name, w->prefix, w->id, 2 * j + 1);
        cv[j].body = xcalloc(1, 160);
        snprintf(cv[j].body, 160, "{\"type\":\"direct\",\"with\":\"%s\"}", name);
        cv[j].owner = 2 * j;
    }
    bool ok = prov_convs(w, cv, n);
    for (int j = 0; j < n; j++) {
        sc(w, &w->c[2 * j])->conv = sc(w, &w->c[2 * j + 1])->conv = cv[j].id;
        free(cv[j].body);
    }
    free(cv);
    return ok;
}

static void send_inbox(worker *w, wsc *c)
{
    sconn *x = sc(w, c);
    char p[128];
    int n = x->cursor ? snprintf(p, sizeof p, "{\"type\":\"inbox\",\"changed_since\":%" PRIu64 "}", x->cursor)
                      : snprintf(p, sizeof p, "{\"type\":\"inbox\"}");
    x->phase = SP_INBOX;
    worker_text(w, c, p, (size_t)n);
}

static void send_sync(worker *w, wsc *c)
{
    sconn *x = sc(w, c);
    char p[160];
    int n = snprintf(p, sizeof p, "{\"type\":\"sync\",\"conv\":%" PRIu64 ",\"after\":%" PRIu64 ",\"limit\":500}",
                     x->conv, x->known_seq);
    x->phase = SP_HISTORY;
    worker_text(w, c, p, (size_t)n);
}

static void synced(worker *w, wsc *c)
{
    sworker *s = w->scn;
    sconn *x = sc(w, c);
    x->phase = SP_SYNCED;
    if (!s->dropped) { /* the initial connect: ready once in sync */
        worker_mark_ready(w, c);
        return;
    }
    if (x->kind == K_A && x->ack_seq && !x->ack_found) stats_add(w->S, ST_LOST, 1);
    int64_t t = now_ns();
    stats_add(w->S, ST_SYNCED, 1);
    hist_add(stats_hist(w->S, SH_SYNC), t - s->drop_at);
    stats_mark(w->S, MARK_SYNC, t);
}

static void ready(worker *w, wsc *c)
{
    sworker *s = w->scn;
    sconn *x = sc(w, c);
    if (!s->dropped) {
        send_inbox(w, c);
        return;
    }
    if (!c->counted) {
        int64_t t = now_ns();
        stats_add(w->S, ST_BACK, 1);
        hist_add(stats_hist(w->S, SH_BACK), t - s->drop_at);
        stats_mark(w->S, MARK_BACK, t);
    }
    worker_mark_ready(w, c);
    x->ack_found = false;
    if (x->want_resend) { /* the message of the drop, with the same cmid */
        char p[256];
        int n = drop_msg(p, sizeof p, w, c, x->conv);
        x->phase = SP_ACK;
        worker_text(w, c, p, (size_t)n);
    } else {
        send_inbox(w, c);
    }
}

typedef struct conv_scan {
    uint64_t conv, last_seq;
    bool found;
} conv_scan;

static int scan_conv(void *arg, const char *v, size_t len, uint8_t type)
{
    conv_scan *cs = arg;
    json_obj o;
    uint64_t id = 0;
    if (type != JSON_OBJECT || json_parse_object(v, len, &o) != ERR_OK || json_get_u64(&o, "id", &id) < 0)
        return 0;
    if (id == cs->conv) {
        cs->found = true;
        json_get_u64(&o, "last_seq", &cs->last_seq);
    }
    return 0;
}

typedef struct msg_scan {
    uint64_t want_seq, max_seq;
    const char *want_cmid;
    bool found;
    int count;
} msg_scan;

static int scan_msg(void *arg, const char *v, size_t len, uint8_t type)
{
    msg_scan *ms = arg;
    json_obj o;
    uint64_t seq = 0;
    if (type != JSON_OBJECT || json_parse_object(v, len, &o) != ERR_OK || json_get_u64(&o, "seq", &seq) < 0)
        return 0;
    ms->count++;
    if (seq > ms->max_seq) ms->max_seq = seq;
    char cm[80];
    if (ms->want_seq && seq == ms->want_seq && json_get_str(&o, "cmid", cm, sizeof cm) >= 0 &&
        !strcmp(cm, ms->want_cmid))
        ms->found = true;
    return 0;
}

static void text(worker *w, wsc *c, const char *p, size_t n)
{
    sconn *x = sc(w, c);
    pf_frame f;
    if (pf_parse(p, n, &f) != ERR_OK) {
        stats_add(w->S, ST_ERRORS, 1);
        return;
    }
    const json_field *fl;
    switch (f.type) {
    case PF_ACK:
        if (x->phase != SP_ACK) return;
        x->ack_seq = pf_u64(&f, "seq", 0);
        if (pf_true(&f, "duplicate")) stats_add(w->S, ST_DUP, 1);
        x->want_resend = false;
        send_inbox(w, c);
        break;
    case PF_INBOX: {
        if (x->phase != SP_INBOX) return;
        json_obj in;
        conv_scan cs = {.conv = x->conv};
        if ((fl = json_get(&f.o, "inbox")) && json_parse_object(fl->val, fl->val_len, &in) == ERR_OK) {
            json_get_u64(&in, "cursor", &x->cursor);
            if ((fl = json_get(&in, "conversations"))) json_array_each(fl->val, fl->val_len, scan_conv, &cs);
        }
        if (cs.found && cs.last_seq > x->known_seq) send_sync(w, c);
        else synced(w, c); /* an acked message not shown as a change counts as lost */
        break;
    }
    case PF_HISTORY: {
        if (x->phase != SP_HISTORY) return;
        char cmid[48];
        snprintf(cmid, sizeof cmid, "drop-%u-%u", (unsigned)w->id, (unsigned)c->idx);
        msg_scan ms = {.want_seq = x->ack_seq, .want_cmid = cmid};
        if ((fl = json_get(&f.o, "messages"))) json_array_each(fl->val, fl->val_len, scan_msg, &ms);
        if (ms.max_seq > x->known_seq) x->known_seq = ms.max_seq;
        if (ms.found) x->ack_found = true;
        if (pf_true(&f, "more") && ms.count > 0) send_sync(w, c);
        else synced(w, c);
        break;
    }
    case PF_ERROR:
        scn_note_error(w, &f, p, n);
        if (x->phase == SP_ACK) { /* e.g. busy: send it again */
            x->phase = SP_NONE;
            ready(w, c);
        }
        break;
    default:
        break;
    }
}

/* CMD_SCENARIO: the drop, at time arg. */
static void drop(worker *w, int64_t at)
{
    sworker *s = w->scn;
    s->dropped = true;
    s->drop_at = at;
    w->reconnect_forever = true;
    for (int i = 0; i < w->n; i++) {
        wsc *c = &w->c[i];
        sconn *x = sc(w, c);
        if (x->kind == K_A && c->fd >= 0 && c->st == WSC_READY) {
            char p[256];
            int n = drop_msg(p, sizeof p, w, c, x->conv);
            worker_text(w, c, p, (size_t)n);
            x->want_resend = true;
        }
        x->phase = SP_NONE;
        client_backoff_init(&c->bo, 1000, 60000);
        uint64_t d = client_backoff_next(&c->bo, rng_next(&w->rng), 0);
        worker_reconnect_at(w, c, at + (int64_t)d * NS_PER_MS);
    }
}

/* ---- the background conversation (the parent's own worker) ---------------------- */

typedef struct bg {
    worker w;                /* two connections: 0 sends, 1 receives */
    stats *S;                /* owned */
    uint64_t *seq;           /* owned: acked seq by message number */
    int64_t *t;              /* owned: intended send time by message number */
    uint8_t *resend;         /* owned */
    uint64_t cap, sent, acked;
    double rate;
    bool on;
    int64_t pace_t0, drop_at, storm_end;
} bg;

static bg *bg_of(worker *w)
{
    return w->scn;
}

static void bg_send(bg *b, int64_t intended, uint64_t k)
{
    wsc *c = &b->w.c[0];
    if (c->st != WSC_READY) return;
    char p[256];
    int n = snprintf(p, sizeof p,
                     "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"bg%" PRIu64 "\",\"body\":\"%" PRId64
                     " %" PRIu64 " 0 background\"}",
                     sc(&b->w, c)->conv, k, intended, k);
    worker_text(&b->w, c, p, (size_t)n);
}

/* "bg<k>" -> k, or UINT64_MAX */
static uint64_t bg_k(const pf_frame *f, const char *key)
{
    char v[48];
    if (pf_str(f, key, v, sizeof v) < 3 || strncmp(v, "bg", 2) != 0) return UINT64_MAX;
    char *e;
    uint64_t k = strtoull(v + 2, &e, 10);
    return *e ? UINT64_MAX : k;
}

static void bg_text(worker *w, wsc *c, const char *p, size_t n)
{
    bg *b = bg_of(w);
    int64_t t = now_ns();
    pf_frame f;
    if (pf_parse(p, n, &f) != ERR_OK) return;
    if (sc(w, c)->kind == K_BG_SEND) {
        if (f.type == PF_ACK) {
            uint64_t k = bg_k(&f, "cmid");
            if (k < b->cap && !b->seq[k]) {
                b->seq[k] = pf_u64(&f, "seq", 0);
                b->acked++;
                hist_add(stats_hist(w->S, SH_BG_ACK), t - b->t[k]);
            }
        } else if (f.type == PF_ERROR) {
            scn_note_error(w, &f, p, n);
            uint64_t k = bg_k(&f, "ref");
            if (k < b->cap) b->resend[k] = 1;
        }
    } else if (f.type == PF_MSG) {
        int64_t ts = pf_body_time(&f, NULL, NULL);
        if (ts <= 0) return;
        int h = ts < b->drop_at || !b->drop_at         ? SH_BG_PRE
                : (!b->storm_end || ts <= b->storm_end) ? SH_BG_STORM
                                                        : SH_BG_POST;
        hist_add(stats_hist(w->S, h), t - ts);
    }
}

/* One turn of the background: its I/O, the paced sends, the resends. */
static void bg_tick(void *arg)
{
    bg *b = arg;
    worker_poll(&b->w, 1);
    if (!b->on) return;
    int64_t now = now_ns();
    double due = (double)(now - b->pace_t0) / 1e9 * b->rate;
    int guard = 0;
    while ((double)b->sent < due && b->sent < b->cap && guard++ < 1000) {
        int64_t intended = b->pace_t0 + (int64_t)((double)b->sent / b->rate * 1e9);
        b->t[b->sent] = intended;
        bg_send(b, intended, b->sent);
        b->sent++;
    }
    for (uint64_t k = 0; k < b->sent && guard < 2000; k++)
        if (b->resend[k]) {
            b->resend[k] = 0;
            bg_send(b, b->t[k], k);
            guard++;
        }
}

typedef struct verify {
    uint64_t *seen;          /* seq by message number */
    uint64_t cap, expect, after, gaps, total;
    int got;
} verify;

static int verify_msg(void *arg, const char *v, size_t len, uint8_t type)
{
    verify *vf = arg;
    json_obj o;
    uint64_t seq = 0;
    char cm[48];
    if (type != JSON_OBJECT || json_parse_object(v, len, &o) != ERR_OK || json_get_u64(&o, "seq", &seq) < 0)
        return 0;
    if (seq != vf->expect) vf->gaps++;
    vf->expect = seq + 1;
    vf->after = seq;
    vf->got++;
    vf->total++;
    if (json_get_str(&o, "cmid", cm, sizeof cm) > 2 && !strncmp(cm, "bg", 2)) {
        uint64_t k = strtoull(cm + 2, NULL, 10);
        if (k < vf->cap) vf->seen[k] = seq;
    }
    return 0;
}

/* Pages through the background conversation's history over REST; counts
 * acknowledged messages missing (or at another seq) and gaps in seq. */
static void bg_verify(const bench_run *r, bg *b, const char *tok, uint64_t conv, uint64_t *lost,
                      uint64_t *gaps, uint64_t *total)
{
    rest_conn h;
    rest_init(&h, &r->t, 1);
    verify vf = {.seen = xcalloc(b->cap + 1, sizeof(uint64_t)), .cap = b->cap, .expect = 1};
    for (int page = 0; page < 100000; page++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/conversations/%" PRIu64 "/messages?after=%" PRIu64 "&limit=500",
                 conv, vf.after);
        rest_resp rr;
        int st = rest_do(&h, "GET", path, tok, NULL, &rr);
        if (st != 200) {
            fprintf(stderr, "history: HTTP %d\n", st);
            break;
        }
        json_obj o;
        const json_field *f;
        if (json_parse_object(rr.body, rr.body_len, &o) != ERR_OK || !(f = json_get(&o, "messages"))) break;
        vf.got = 0;
        json_array_each(f->val, f->val_len, verify_msg, &vf);
        const json_field *more = json_get(&o, "more");
        if (!more || more->type != JSON_TRUE || !vf.got) break;
    }
    *lost = 0;
    for (uint64_t k = 0; k < b->sent; k++)
        if (b->seq[k] && vf.seen[k] != b->seq[k]) (*lost)++;
    *gaps = vf.gaps;
    *total = vf.total;
    free(vf.seen);
    rest_close(&h);
}

/* ---- the parent --------------------------------------------------------------------- */

/* The writer's queue and the server's response time, sampled every 50 ms
 * by a separate process: a blocking GET /metrics must not stall the
 * background conversation this process drives. */
typedef struct qsamp {
    volatile int stop, n;
    volatile double max, sum, max_at_s, rt_max_ms, rt_sum_ms;
} qsamp;

static pid_t start_sampler(const bench_run *r, qsamp *q, int64_t drop_at)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid != 0) return pid;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int64_t end = drop_at + (int64_t)r->o->timeout * NS_PER_S;
    while (!q->stop && now_ns() < end) {
        int64_t t = now_ns();
        metrics_writer m = metrics_scrape(&r->t);
        double rt = (double)(now_ns() - t) / 1e6;
        if (m.ok && m.queue == m.queue) {
            q->sum += m.queue;
            q->rt_sum_ms += rt;
            if (rt > q->rt_max_ms) q->rt_max_ms = rt;
            if (m.queue > q->max) {
                q->max = m.queue;
                q->max_at_s = (double)(now_ns() - drop_at) / 1e9;
            }
            q->n++;
        }
        sleep_ms(50);
    }
    _exit(0);
}

static void stop_sampler(qsamp *q, pid_t pid)
{
    q->stop = 1;
    if (pid <= 0) return;
    int64_t end = now_ns() + 15 * NS_PER_S;
    while (waitpid(pid, NULL, WNOHANG) == 0 && now_ns() < end) sleep_ms(10);
    if (now_ns() >= end) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    scn_need_pid(r);
    int pairs = o->conns / 2, conns = pairs * 2;

    /* the background conversation: provisioned by the parent, never dropped */
    rest_conn h;
    rest_init(&h, &r->t, 0);
    char na[40], nb[40], ta[64], tb[64];
    snprintf(na, sizeof na, "pb%06xbga", r->run_id & 0xffffff);
    snprintf(nb, sizeof nb, "pb%06xbgb", r->run_id & 0xffffff);
    if (prov_register(&h, na, ta) < 0 || prov_register(&h, nb, tb) < 0) die("background users");
    uint64_t bconv = prov_direct(&h, ta, nb);
    if (!bconv) die("background conversation");
    rest_close(&h);
    bg *b = xcalloc(1, sizeof *b);
    b->S = xcalloc(1, sizeof *b->S);
    worker_ops bops = {.per_item = 1, .user_size = sizeof(sconn), .text = bg_text};
    worker_init(&b->w, 99, o, &r->t, &bops, b->S, 2, r->run_id);
    b->w.scn = b;
    sc(&b->w, &b->w.c[0])->kind = K_BG_SEND;
    sc(&b->w, &b->w.c[1])->kind = K_BG_RECV;
    b->w.c[0].tok = ta;
    b->w.c[1].tok = tb;
    sc(&b->w, &b->w.c[0])->conv = sc(&b->w, &b->w.c[1])->conv = bconv;
    b->rate = o->bg_rate;
    b->cap = (uint64_t)(o->bg_rate * (o->timeout + o->pre + 30)) + 16;
    b->seq = xcalloc(b->cap, sizeof *b->seq);
    b->t = xcalloc(b->cap, sizeof *b->t);
    b->resend = xcalloc(b->cap, 1);
    worker_open(&b->w, 2);

    worker_ops ops = {.per_item = 2,
                      .user_size = sizeof(sconn),
                      .setup = setup,
                      .cleanup = cleanup,
                      .provision = provision,
                      .ready = ready,
                      .text = text,
                      .command = drop};
    pool p;
    pool_start(&p, o, &r->t, &ops, pairs, r->run_id);
    int64_t tp = now_ns();
    if (!pool_cmd_all(&p, CMD_PROVISION, 0, 240)) die("provisioning timed out");
    double prov = (double)(now_ns() - tp) / 1e9;
    p.tick = bg_tick;
    p.tick_arg = b;
    int64_t tc = now_ns();
    if (!pool_cmd_all(&p, CMD_CONNECT, conns, 180))
        die("initial connect timed out (%" PRIu64 " ready)", pool_sum(&p, ST_READY));
    double conn_s = (double)(now_ns() - tc) / 1e9;
    uint64_t rej_initial = pool_sum(&p, ST_REJ503);
    for (int i = 0; i < 2000 && b->w.nready < 2; i++) bg_tick(b);
    if (b->w.nready < 2) die("background connections failed");

    /* steady state */
    b->on = true;
    b->pace_t0 = now_ns();
    int64_t pre_end = now_ns() + (int64_t)o->pre * NS_PER_S;
    while (now_ns() < pre_end) bg_tick(b);
    metrics_writer m0 = metrics_scrape(&r->t);
    probe_sample s0 = probe_take(o->pid);
    uint64_t rej0 = pool_sum(&p, ST_REJ503), r429_0 = pool_sum(&p, ST_REJ429),
             fail0 = pool_sum(&p, ST_HS_FAIL), att0 = pool_sum(&p, ST_ATTEMPTS);
    double b0 = pool_cpu_s(&p);
    int64_t drop_at = now_ns();
    b->drop_at = drop_at;
    report_header(r, "reconnect storm");
    printf("  %d clients (%d direct conversations), %d workers; provisioning %.1f s; initial connect "
           "%.1f s (%" PRIu64 " refused with 503 on the way)\n",
           conns, pairs, o->workers, prov, conn_s, rej_initial);
    fflush(stdout);

    /* the storm */
    pool_cmd_all(&p, CMD_SCENARIO, drop_at, 10);
    int64_t end = drop_at + (int64_t)o->timeout * NS_PER_S;
    qsamp *q = mmap(NULL, sizeof *q, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) die("mmap");
    memset((void *)q, 0, sizeof *q);
    pid_t sampler = start_sampler(r, q, drop_at);
    int64_t last_tick = now_ns(), max_gap = 0;
    while (now_ns() < end && pool_sum(&p, ST_SYNCED) < (uint64_t)conns) {
        bg_tick(b);
        int64_t t = now_ns();
        if (t - last_tick > max_gap) max_gap = t - last_tick;
        last_tick = t;
    }
    stop_sampler(q, sampler);
    double qmax = q->max, qmax_at = q->max_at_s, qsum = q->sum, rt_max = q->rt_max_ms;
    int qn = q->n;
    double rt_mean = qn ? q->rt_sum_ms / qn : 0;
    munmap(q, sizeof *q);
    int64_t t_all = pool_mark(&p, MARK_SYNC), t_back = pool_mark(&p, MARK_BACK);
    uint64_t nsynced = pool_sum(&p, ST_SYNCED), back = pool_sum(&p, ST_BACK);
    b->storm_end = now_ns();
    probe_sample s1 = probe_take(o->pid);
    double bcpu = pool_cpu_s(&p) - b0;
    metrics_writer m1 = metrics_scrape(&r->t);

    /* a little steady state after, then the background stops and drains */
    int64_t post_end = now_ns() + NS_PER_S;
    while (now_ns() < post_end) bg_tick(b);
    b->on = false;
    int64_t drain_end = now_ns() + 10 * NS_PER_S, last_resend = 0;
    while (now_ns() < drain_end && b->acked < b->sent) {
        bg_tick(b);
        if (now_ns() - last_resend > 2 * NS_PER_S) { /* the server may have refused some */
            last_resend = now_ns();
            for (uint64_t k = 0; k < b->sent; k++)
                if (!b->seq[k]) b->resend[k] = 1;
        }
    }
    uint64_t bg_lost = 0, gaps = 0, total = 0;
    bg_verify(r, b, ta, bconv, &bg_lost, &gaps, &total);
    uint64_t storm_lost = pool_sum(&p, ST_LOST);
    double all_s = nsynced == (uint64_t)conns ? (double)(t_all - drop_at) / 1e9 : -1;
    double back_s = back >= (uint64_t)conns ? (double)(t_back - drop_at) / 1e9 : -1;
    hist hb, hs;
    pool_hist(&p, SH_BACK, &hb);
    pool_hist(&p, SH_SYNC, &hs);
    const hist *pre = &b->S->h[SH_BG_PRE], *during = &b->S->h[SH_BG_STORM], *post = &b->S->h[SH_BG_POST],
               *bga = &b->S->h[SH_BG_ACK];
    uint64_t rej = pool_sum(&p, ST_REJ503) - rej0, r429 = pool_sum(&p, ST_REJ429) - r429_0;
    uint64_t fails = pool_sum(&p, ST_HS_FAIL) - fail0, atts = pool_sum(&p, ST_ATTEMPTS) - att0;
    uint64_t dups = pool_sum(&p, ST_DUP);

    if (all_s >= 0) printf("  all back and synced     %.2f s after the drop (all back: %.2f s)\n", all_s, back_s);
    else
        printf("  NOT all synced          %" PRIu64 " of %d synced, %" PRIu64 " back within %d s\n", nsynced,
               conns, back, o->timeout);
    report_hist("drop -> back (hello)", &hb);
    report_hist("drop -> synced", &hs);
    printf("  handshakes              %" PRIu64 " attempts, %" PRIu64 " refused 503 (admission control), %" PRIu64
           " refused 429, %" PRIu64 " failed\n", atts, rej, r429, fails);
    if (s0.listen_drops >= 0 && s1.listen_drops >= 0)
        printf("  accept queue overflows  %lld (TcpExt ListenOverflows, whole machine): each costs its client a "
               "1 s SYN retransmit\n", s1.listen_drops - s0.listen_drops);
    printf("  drop-time messages      %" PRIu64 " of %d stored before the drop (resend answered as duplicate)\n",
           dups, pairs);
    printf("  background              %.0f msgs/s; %" PRIu64 " sent, %" PRIu64 " acked, history %" PRIu64
           " messages, %" PRIu64 " seq gaps\n", o->bg_rate, b->sent, b->acked, total, gaps);
    report_hist("bg delivery before", pre);
    report_hist("bg delivery during", during);
    report_hist("bg delivery after", post);
    report_hist("bg send->ack (all)", bga);
    printf("  messages lost           %" PRIu64 " (background %" PRIu64 ", storm clients %" PRIu64 "), must be 0\n",
           bg_lost + storm_lost, bg_lost, storm_lost);
    printf("  server CPU              %.2f s during the storm (%.0f%% of one core)\n", s1.cpu_s - s0.cpu_s,
           (s1.cpu_s - s0.cpu_s) / ((double)(s1.t - s0.t) / 1e9) * 100);
    if (qn)
        printf("  writer queue            max %.0f writes waiting (%.2f s after the drop), mean %.0f; GET /metrics "
               "answered in %.0f ms mean, %.0f ms max (%d samples)\n", qmax, qmax_at, qsum / qn, rt_mean, rt_max, qn);
    printf("  load generator          background loop stalled at most %.1f ms\n", (double)max_gap / 1e6);
    report_machine(r, &s0, &s1, bcpu);
    report_writer(r, &m0, &m1, (double)(s1.t - s0.t) / 1e9);
    jw *j = &r->J;
    jw_num(j, "provision_s", prov);
    jw_num(j, "initial_connect_s", conn_s);
    jw_num(j, "all_synced_s", all_s);
    jw_num(j, "all_back_s", back_s);
    jw_num(j, "synced", (double)nsynced);
    jw_num(j, "back", (double)back);
    jw_hist(j, "drop_to_back", &hb);
    jw_hist(j, "drop_to_synced", &hs);
    jw_num(j, "handshake_attempts", (double)atts);
    jw_num(j, "rejected_503", (double)rej);
    jw_num(j, "rejected_429", (double)r429);
    jw_num(j, "handshake_failures", (double)fails);
    jw_num(j, "drop_msgs_stored_before", (double)dups);
    jw_num(j, "bg_sent", (double)b->sent);
    jw_num(j, "bg_acked", (double)b->acked);
    jw_num(j, "bg_gaps", (double)gaps);
    jw_hist(j, "bg_delivery_before", pre);
    jw_hist(j, "bg_delivery_during", during);
    jw_hist(j, "bg_delivery_after", post);
    jw_num(j, "bg_p99_during_us", hist_pct_us(during, 0.99));
    jw_num(j, "messages_lost", (double)(bg_lost + storm_lost));
    jw_num(j, "lost_background", (double)bg_lost);
    jw_num(j, "lost_storm_clients", (double)storm_lost);
    jw_num(j, "server_cpu_s", s1.cpu_s - s0.cpu_s);
    jw_num(j, "writer_queue_max", qmax);
    jw_num(j, "listen_overflows", (double)(s1.listen_drops - s0.listen_drops));
    jw_num(j, "writer_queue_mean", qn ? qsum / qn : 0);
    jw_num(j, "metrics_rt_mean_ms", rt_mean);
    jw_num(j, "metrics_rt_max_ms", rt_max);
    jw_num(j, "bench_bg_loop_max_gap_ms", (double)max_gap / 1e6);
    p.tick = NULL;
    pool_stop(&p);
    b->w.scn = NULL;
    worker_free(&b->w);
    free(b->S);
    free(b->seq);
    free(b->t);
    free(b->resend);
    free(b);
    return bg_lost + storm_lost ? 1 : 0;
}

static void defaults(bench_opts *o)
{
    if (!o->conns) o->conns = 15000;
    if (o->bg_rate <= 0) o->bg_rate = 200;
    if (!o->pre) o->pre = 3;
    if (!o->timeout) o->timeout = 60;
}

static int sockets(const bench_opts *o)
{
    return o->conns;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "conns", o->conns);
    jw_num(j, "bg_rate", o->bg_rate);
    jw_num(j, "pre_seconds", o->pre);
    jw_num(j, "backoff_base_ms", 1000);
    jw_num(j, "backoff_cap_ms", 60000);
}

const scenario scenario_storm = {
    .name = "storm",
    .usage = "storm --conns N [15000] --bg-rate R [200] --pre S [3] --timeout S [60]: all clients drop "
             "and come back; time to synced, messages lost",
    .kind = "parleyd",
    .floor_ok = false,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
