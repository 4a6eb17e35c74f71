/* catchup: the first screen after missed messages.
 *
 * User a sends --messages M into a direct conversation over one WebSocket
 * (window 256) while b is offline. Then b opens one fresh connection and
 * asks for its first screen, GET /v1/conversations (the inbox) and GET
 * /v1/conversations/{id}/messages?limit=50, pipelined: time (connect to
 * both answers parsed) and bytes received, cold and --screens warm repeats.
 * Then a full sync pages ?after=S&limit=500 until "more" is false; the run
 * fails unless it returns all M messages, gapless.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/pf.h"
#include "lib/prov.h"
#include "scenario/scenario.h"

enum { ST_ACKED = STATS_SCENARIO };
enum { SH_ACK = STATS_HIST_SCENARIO };

#define WINDOW 256
#define SCREEN 50
#define PAGE 500

typedef struct cconn {
    uint64_t conv, k;
} cconn;

static void text(worker *w, wsc *c, const char *p, size_t n)
{
    int64_t now = now_ns();
    pf_frame f;
    if (pf_parse(p, n, &f) != ERR_OK) return;
    if (f.type == PF_ACK) {
        int64_t ts = pf_cmid_time(&f);
        if (ts > 0) hist_add(stats_hist(w->S, SH_ACK), now - ts);
        stats_add(w->S, ST_ACKED, 1);
        if (c->outstanding > 0) c->outstanding--;
    } else if (f.type == PF_ERROR) {
        scn_note_error(w, &f, p, n);
        if (c->outstanding > 0) c->outstanding--;
    }
}

typedef struct page_scan {
    uint64_t max_seq;
    int count;
} page_scan;

static int scan_msg(void *arg, const char *v, size_t len, uint8_t type)
{
    page_scan *ps = arg;
    json_obj o;
    uint64_t seq = 0;
    if (type != JSON_OBJECT || json_parse_object(v, len, &o) != ERR_OK || json_get_u64(&o, "seq", &seq) < 0)
        return 0;
    ps->count++;
    if (seq > ps->max_seq) ps->max_seq = seq;
    return 0;
}

/* The messages of a history page; *more from its "more". */
static page_scan scan_page(const char *body, size_t len, bool *more)
{
    page_scan ps = {0};
    json_obj o;
    const json_field *f;
    *more = false;
    if (json_parse_object(body, len, &o) != ERR_OK) return ps;
    if ((f = json_get(&o, "messages"))) json_array_each(f->val, f->val_len, scan_msg, &ps);
    f = json_get(&o, "more");
    *more = f && f->type == JSON_TRUE;
    return ps;
}

/* True when the inbox lists conversation conv with a last_seq. */
static int find_conv(void *arg, const char *v, size_t len, uint8_t type)
{
    uint64_t *want = arg, id = 0, last = 0;
    json_obj o;
    return type == JSON_OBJECT && json_parse_object(v, len, &o) == ERR_OK && json_get_u64(&o, "id", &id) == ERR_OK &&
           id == *want && json_get_u64(&o, "last_seq", &last) == ERR_OK;
}

typedef struct screen {
    double ms;
    uint64_t bytes_in, bytes_out, last_seq;
    int msgs;
} screen;

/* First screen: inbox + last 50, pipelined on one fresh connection. */
static int first_screen(bench_run *r, const char *tok, uint64_t conv, screen *s)
{
    int64_t t0 = now_ns();
    rest_conn h;
    rest_init(&h, &r->t, (int)(rng_next(&r->rng) % 64));
    char path[128];
    snprintf(path, sizeof path, "/v1/conversations/%" PRIu64 "/messages?limit=%d", conv, SCREEN);
    rest_resp a, b;
    if (rest_open(&h) != ERR_OK || rest_write(&h, "GET", "/v1/conversations", tok, NULL) != ERR_OK ||
        rest_write(&h, "GET", path, tok, NULL) != ERR_OK || rest_read(&h, &a) != ERR_OK) {
        rest_close(&h);
        return ERR_IO;
    }
    bool ok = false;
    json_obj o;
    const json_field *f;
    if (a.status == 200 && json_parse_object(a.body, a.body_len, &o) == ERR_OK &&
        (f = json_get(&o, "conversations")))
        ok = json_array_each(f->val, f->val_len, find_conv, &conv) == 1;
    if (rest_read(&h, &b) != ERR_OK) {
        rest_close(&h);
        return ERR_IO;
    }
    s->ms = (double)(now_ns() - t0) / 1e6;
    bool more;
    page_scan ps = b.status == 200 ? scan_page(b.body, b.body_len, &more) : (page_scan){0};
    s->last_seq = ps.max_seq;
    s->msgs = ps.count;
    s->bytes_in = h.bytes_in;
    s->bytes_out = h.bytes_out;
    rest_close(&h);
    return ok && b.status == 200 ? ERR_OK : ERR_INVALID;
}

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    rest_conn h;
    rest_init(&h, &r->t, 0);
    char na[40], nb[40], ta[64], tb[64];
    snprintf(na, sizeof na, "pb%06xca", r->run_id & 0xffffff);
    snprintf(nb, sizeof nb, "pb%06xcb", r->run_id & 0xffffff);
    if (prov_register(&h, na, ta) < 0 || prov_register(&h, nb, tb) < 0) die("catchup users");
    uint64_t conv = prov_direct(&h, ta, nb);
    if (!conv) die("catchup conversation");
    rest_close(&h);

    /* b is offline; a sends M messages over one WebSocket, window 256 */
    stats *S = xcalloc(1, sizeof *S);
    worker w;
    worker_ops ops = {.per_item = 1, .user_size = sizeof(cconn), .text = text};
    worker_init(&w, 99, o, &r->t, &ops, S, 1, r->run_id);
    wsc *c = &w.c[0];
    cconn *x = worker_user(&w, c);
    c->tok = ta;
    x->conv = conv;
    worker_open(&w, 1);
    int64_t end = now_ns() + 30 * NS_PER_S;
    while (w.nready < 1 && now_ns() < end) worker_poll(&w, 10);
    if (w.nready < 1) die("catchup sender could not connect");
    metrics_writer m0 = metrics_scrape(&r->t);
    probe_sample s0 = probe_take(o->pid);
    double b0 = pool_cpu_s(NULL);
    int64_t t0 = now_ns();
    end = t0 + 600 * NS_PER_S;
    uint64_t sent = 0;
    while (stats_get(S, ST_ACKED) < (uint64_t)o->messages && now_ns() < end) {
        while (c->outstanding < WINDOW && sent < (uint64_t)o->messages) {
            char p[17400];
            size_t n = pf_send(p, sizeof p, x->conv, x->k++, now_ns(), 0, o->size);
            c->outstanding++;
            worker_text(&w, c, p, n);
            sent++;
        }
        worker_poll(&w, 10);
        if (c->st != WSC_READY) die("catchup sender lost its connection");
    }
    double fill_s = (double)(now_ns() - t0) / 1e9;
    metrics_writer m1 = metrics_scrape(&r->t);
    probe_sample s1 = probe_take(o->pid);
    double bcpu = pool_cpu_s(NULL) - b0;
    uint64_t acked = stats_get(S, ST_ACKED);
    hist ha = S->h[SH_ACK];
    worker_free(&w);
    free(S);

    /* the first screen: cold, then repeated */
    screen cold, warm;
    if (first_screen(r, tb, conv, &cold) != ERR_OK) die("first screen failed");
    hist fs;
    hist_reset(&fs);
    for (int i = 0; i < o->screens; i++) {
        if (first_screen(r, tb, conv, &warm) != ERR_OK) die("first screen failed");
        hist_add(&fs, (int64_t)(warm.ms * 1e6));
    }
    /* the full sync: pages of 500 with after= */
    int64_t ts = now_ns();
    rest_conn sy;
    rest_init(&sy, &r->t, 1);
    if (rest_open(&sy) != ERR_OK) die("connect");
    uint64_t after = 0, got = 0, gaps = 0;
    int pages = 0;
    while (pages < 100000) {
        char path[128];
        snprintf(path, sizeof path, "/v1/conversations/%" PRIu64 "/messages?after=%" PRIu64 "&limit=%d", conv,
                 after, PAGE);
        rest_resp rr;
        if (rest_write(&sy, "GET", path, tb, NULL) != ERR_OK || rest_read(&sy, &rr) != ERR_OK || rr.status != 200)
            die("sync page failed");
        pages++;
        bool more;
        page_scan ps = scan_page(rr.body, rr.body_len, &more);
        if (ps.count && ps.max_seq != after + (uint64_t)ps.count) gaps++;
        got += (uint64_t)ps.count;
        if (ps.max_seq > after) after = ps.max_seq;
        if (!more || !ps.count) break;
    }
    double sync_ms = (double)(now_ns() - ts) / 1e6;
    uint64_t sbin = sy.bytes_in, sbout = sy.bytes_out;
    rest_close(&sy);

    report_header(r, "catch-up after missed messages");
    printf("  missed messages         %" PRIu64 " (sent over one WebSocket in %.1f s = %.0f msgs/s into one "
           "conversation, window %d)\n", acked, fill_s, (double)acked / fill_s, WINDOW);
    report_hist("fill send->ack", &ha);
    report_writer(r, &m0, &m1, fill_s);
    report_machine(r, &s0, &s1, bcpu);
    jw *j = &r->J;
    if (s0.disk_w >= 0 && s1.disk_w >= 0 && acked) {
        printf("  disk writes             %.0f bytes per message\n", (double)(s1.disk_w - s0.disk_w) / (double)acked);
        jw_num(j, "disk_bytes_per_msg", (double)(s1.disk_w - s0.disk_w) / (double)acked);
    }
    printf("  first screen (cold)     %.2f ms, %" PRIu64 " bytes in, %" PRIu64 " bytes out (inbox + last %d, "
           "last seq %" PRIu64 ")\n", cold.ms, cold.bytes_in, cold.bytes_out, cold.msgs, cold.last_seq);
    report_hist("first screen (warm)", &fs);
    printf("  full sync               %.0f ms, %" PRIu64 " bytes in, %" PRIu64 " bytes out, %d pages of %d, %" PRIu64
           " messages, %" PRIu64 " bad pages\n", sync_ms, sbin, sbout, pages, PAGE, got, gaps);
    jw_num(j, "messages", (double)acked);
    jw_num(j, "fill_s", fill_s);
    jw_num(j, "fill_msgs_per_s", (double)acked / fill_s);
    jw_hist(j, "fill_send_ack", &ha);
    jw_num(j, "first_screen_ms", cold.ms);
    jw_num(j, "first_screen_bytes", (double)cold.bytes_in);
    jw_num(j, "first_screen_bytes_out", (double)cold.bytes_out);
    jw_num(j, "first_screen_msgs", cold.msgs);
    jw_hist(j, "first_screen_warm", &fs);
    jw_num(j, "full_sync_ms", sync_ms);
    jw_num(j, "full_sync_bytes", (double)sbin);
    jw_num(j, "full_sync_pages", pages);
    jw_num(j, "full_sync_messages", (double)got);
    jw_num(j, "full_sync_bad_pages", (double)gaps);
    return got == acked && !gaps ? 0 : 1;
}

static void defaults(bench_opts *o)
{
    if (!o->messages) o->messages = 100000;
    if (!o->screens) o->screens = 20;
    if (!o->size) o->size = 64;
}

static int sockets(const bench_opts *o)
{
    return 1;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "messages", o->messages);
    jw_num(j, "screen", SCREEN);
    jw_num(j, "page", PAGE);
}

const scenario scenario_catchup = {
    .name = "catchup",
    .usage = "catchup --messages M [100000] --screens N [20]: first screen and full sync after M missed "
             "messages",
    .kind = "parleyd",
    .floor_ok = false,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
