/* Unit tests of the load generator's library (bench/lib): the pure parts
 * that decide what a figure says: histograms, the result reader, parley
 * frames and the stored-record estimate, /proc/PID/io, the fdatasync
 * sampler, the upgrade check, options and the targets file.
 * Run from the repository root (make bench-test): it reads
 * bench/targets.conf.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "codec/ws.h"
#include "lib/disk.h"
#include "lib/hist.h"
#include "lib/jr.h"
#include "lib/jw.h"
#include "lib/opts.h"
#include "lib/pf.h"
#include "lib/probe.h"
#include "lib/targets.h"
#include "lib/util.h"
#include "lib/worker.h"
#include "lib/wsc.h"
#include "test.h"

/* ---- hist ---------------------------------------------------------------------- */

TEST(hist_percentiles_within_bucket_error)
{
    hist *h = calloc(1, sizeof *h);
    for (int i = 1; i <= 1000; i++) hist_add(h, (int64_t)i * 1000000); /* 1..1000 ms */
    CHECK_EQ_INT(h->count, 1000);
    double p50 = hist_pct_us(h, 0.5), p99 = hist_pct_us(h, 0.99);
    CHECK(p50 >= 500000 && p50 <= 500000 * (1 + 1.0 / 64));
    CHECK(p99 >= 990000 && p99 <= 990000 * (1 + 1.0 / 64));
    CHECK(hist_pct_us(h, 1.0) == 1000000); /* never above the exact max */
    CHECK(hist_max_us(h) == 1000000);
    CHECK(fabs(hist_mean_us(h) - 500500) < 1);
    hist *g = calloc(1, sizeof *g);
    hist_add(g, -5); /* negative counts as 0 */
    hist_merge(g, h);
    CHECK_EQ_INT(g->count, 1001);
    CHECK(hist_pct_us(g, 0.0001) == 0);
    hist_reset(g);
    CHECK(hist_pct_us(g, 0.5) == 0 && g->count == 0);
    free(h);
    free(g);
}

/* ---- jw + jr ------------------------------------------------------------------- */

TEST(jr_reads_objects_beyond_json_max_fields)
{
    jw j;
    jw_init(&j);
    jw_open(&j, NULL);
    jw_str(&j, "label", "storm \"x\"");
    jw_open(&j, "figures");
    for (int i = 0; i < 40; i++) { /* more than JSON_MAX_FIELDS */
        char k[16];
        snprintf(k, sizeof k, "f%d", i);
        jw_num(&j, k, i * 1.5);
    }
    jw_open(&j, "nested");
    jw_num(&j, "p99_us", 1234);
    jw_num(&j, "nan", NAN);
    jw_close(&j);
    jw_close(&j);
    jw_close(&j);
    CHECK(jr_num(j.p, j.n, "figures.f39") == 58.5);
    CHECK(jr_num(j.p, j.n, "figures.f0") == 0);
    CHECK(jr_num(j.p, j.n, "figures.nested.p99_us") == 1234);
    CHECK(isnan(jr_num(j.p, j.n, "figures.nested.nan"))); /* null */
    CHECK(isnan(jr_num(j.p, j.n, "figures.f40")));
    CHECK(isnan(jr_num(j.p, j.n, "figures.f1.x")));
    char s[32];
    CHECK(jr_str(j.p, j.n, "label", s, sizeof s) == 9 && !strcmp(s, "storm \"x\""));
    CHECK(jr_str(j.p, j.n, "figures.f1", s, sizeof s) == ERR_INVALID && !s[0]);
    jw_free(&j);
}

TEST(jr_refuses_bad_input)
{
    const char *v;
    size_t vl;
    uint8_t t;
    CHECK(jr_get("{\"a\":1", 6, "a", &v, &vl, &t) == ERR_INVALID);
    CHECK(jr_get("[1,2]", 5, "a", &v, &vl, &t) == ERR_INVALID);
    CHECK(jr_get("{\"a\":1}x", 8, "a", &v, &vl, &t) == ERR_INVALID);
    CHECK(isnan(jr_num("{\"a\":\"1\"}", 9, "a"))); /* a string is not a number */
    const char *ok = " { \"a\" : { \"b}\" : [1,{\"c\":2}] , \"c\" : 3 } } ";
    CHECK(jr_num(ok, strlen(ok), "a.c") == 3);
    CHECK(jr_get(ok, strlen(ok), "a.b}", &v, &vl, &t) == ERR_OK && t == JSON_ARRAY && vl == 11);
}

/* ---- pf ------------------------------------------------------------------------ */

TEST(pf_send_frames_carry_their_timing)
{
    char buf[17400];
    for (int size = 32; size <= 16000; size = size * 3 + 1) {
        size_t n = pf_send(buf, sizeof buf, 7, 42, 123456789, 3, size);
        pf_frame f;
        CHECK(n > 0 && pf_parse(buf, n, &f) == ERR_OK && f.type == PF_SEND);
        CHECK(pf_u64(&f, "conv", 0) == 7);
        CHECK(pf_cmid_time(&f) == 123456789);
        uint64_t k = 0;
        uint32_t m = 0;
        CHECK(pf_body_time(&f, &k, &m) == 123456789 && k == 42 && m == 3);
        const json_field *b = json_get(&f.o, "body");
        CHECK(b && (int)b->val_len - 2 >= size - 1);
    }
    CHECK(pf_send(buf, 64, 1, 1, 1, 0, 1000) == 0); /* does not fit */
    CHECK(pf_echo(buf, sizeof buf, 200) == 200 && strlen(buf) == 200);
    pf_frame f;
    CHECK(pf_parse(buf, 200, &f) == ERR_OK && f.type == PF_ECHO);
}

TEST(pf_reads_server_frames)
{
    const char *ack = "{\"type\":\"ack\",\"cmid\":\"5.777\",\"conv\":9,\"seq\":43,\"ts\":1,\"duplicate\":true}";
    pf_frame f;
    CHECK(pf_parse(ack, strlen(ack), &f) == ERR_OK && f.type == PF_ACK);
    CHECK(pf_u64(&f, "seq", 0) == 43 && pf_true(&f, "duplicate") && !pf_true(&f, "seq"));
    CHECK(pf_cmid_time(&f) == 777);
    const char *msg = "{\"type\":\"msg\",\"conv\":9,\"seq\":43,\"from\":\"a\",\"cmid\":\"c\",\"ts\":1,"
                      "\"body\":\"99 4 1 xxxx\"}";
    uint64_t k;
    uint32_t m;
    CHECK(pf_parse(msg, strlen(msg), &f) == ERR_OK && f.type == PF_MSG);
    CHECK(pf_body_time(&f, &k, &m) == 99 && k == 4 && m == 1);
    CHECK(pf_cmid_time(&f) == -1); /* "c" has no time */
    const char *odd = "{\"type\":\"msg\",\"body\":{\"rich\":1}}";
    CHECK(pf_parse(odd, strlen(odd), &f) == ERR_OK && pf_body_time(&f, NULL, NULL) == -1);
    const char *other = "{\"type\":\"receipts2\"}";
    CHECK(pf_parse(other, strlen(other), &f) == ERR_OK && f.type == PF_OTHER);
    /* bad input: not JSON, no type, a type that is not a string */
    CHECK(pf_parse("{\"type\":\"ack\"", 13, &f) == ERR_INVALID);
    CHECK(pf_parse("{\"seq\":1}", 9, &f) == ERR_INVALID);
    CHECK(pf_parse("{\"type\":1}", 10, &f) == ERR_INVALID);
    CHECK(pf_parse("[]", 2, &f) == ERR_INVALID);
}

TEST(pf_send_payload_is_the_cmid_and_body_of_the_frame)
{
    static const struct {
        uint64_t k;
        int64_t t;
        uint32_t m;
        int size;
    } cases[] = {
        {0, 0, 0, 32}, {9, 9, 9, 64}, {10, 1234567890123, 12, 64}, {99999, 999999999999999, 0, 200},
        {1, 123456789012345678, 4000000000u, 32}, /* the head is longer than the body size */
        {7, 5, 1, 16000}, {7, 5, 1, 20000},      /* capped at 16,000 */
    };
    char buf[17400], cm[80];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = pf_send(buf, sizeof buf, 3, cases[i].k, cases[i].t, cases[i].m, cases[i].size);
        pf_frame f;
        CHECK(n > 0 && pf_parse(buf, n, &f) == ERR_OK);
        int cl = pf_str(&f, "cmid", cm, sizeof cm);
        const json_field *b = json_get(&f.o, "body");
        CHECK(cl > 0 && b && b->type == JSON_STRING);
        size_t want = (size_t)cl + b->val_len - 2; /* the body without its quotes (no escapes) */
        if (pf_send_payload(cases[i].k, cases[i].t, cases[i].m, cases[i].size) != want)
            fprintf(stderr, "  case %zu: %zu != %zu\n", i,
                    pf_send_payload(cases[i].k, cases[i].t, cases[i].m, cases[i].size), want);
        CHECK(pf_send_payload(cases[i].k, cases[i].t, cases[i].m, cases[i].size) == want);
    }
    CHECK(pf_send_payload(1, -1, 0, 64) == 0);
}

/* ---- probe: /proc/PID/io ------------------------------------------------------- */

TEST(probe_parses_proc_io)
{
    const char *io = "rchar: 1580\nwchar: 1001797\nsyscr: 5\nsyscw: 3\nread_bytes: 0\n"
                     "write_bytes: 1028096\ncancelled_write_bytes: 4096\n";
    probe_io x;
    CHECK(probe_parse_io(io, &x) == ERR_OK);
    CHECK(x.rchar == 1580 && x.wchar == 1001797 && x.read_bytes == 0 && x.write_bytes == 1028096 &&
          x.cancelled_write_bytes == 4096);
    /* no trailing newline, trailing blanks, lines in another order */
    CHECK(probe_parse_io("write_bytes: 7  \nwchar:\t9", &x) == ERR_OK && x.write_bytes == 7 &&
          x.wchar == 9 && x.rchar == -1 && x.cancelled_write_bytes == -1);
    /* bad input: a missing field, a bad number, a negative one, junk after it, nothing */
    CHECK(probe_parse_io("rchar: 1\nwchar: 2\n", &x) == ERR_INVALID);
    CHECK(probe_parse_io("wchar: 2\nwrite_bytes: x\n", &x) == ERR_INVALID);
    CHECK(probe_parse_io("wchar: 2\nwrite_bytes: -4\n", &x) == ERR_INVALID);
    CHECK(probe_parse_io("wchar: 2\nwrite_bytes: 4 kB\n", &x) == ERR_INVALID);
    CHECK(probe_parse_io("wchar: 2\nwrite_bytes:\n", &x) == ERR_INVALID);
    CHECK(probe_parse_io("wchar: 99999999999999999999999\nwrite_bytes: 1\n", &x) == ERR_INVALID);
    CHECK(probe_parse_io("", &x) == ERR_INVALID);
    /* the real file of this process, and of none */
    CHECK(probe_read_io(getpid(), &x) == 0 && x.wchar >= 0 && x.write_bytes >= 0);
    CHECK(probe_read_io(0, &x) != 0 && x.write_bytes == -1);
    char why[300];
    CHECK(strstr(probe_io_problem(42, EACCES, why, sizeof why), "/proc/42/io") != NULL);
    CHECK(strstr(why, "another user") != NULL);
    /* a block device's stat: sectors written is the 7th number */
    long long b = -1;
    CHECK(probe_parse_blkstat("  297973    26087 14368418   476325  3782244   324405 170460616   939642"
                              "        0   331732  1530358\n", &b) == ERR_OK && b == 170460616LL * 512);
    CHECK(probe_parse_blkstat("1 2 3 4 5 6 7", &b) == ERR_OK && b == 7 * 512);
    CHECK(probe_parse_blkstat("1 2 3 4 5 6", &b) == ERR_INVALID);
    CHECK(probe_parse_blkstat("1 2 3 4 5 6 x7", &b) == ERR_INVALID);
    CHECK(probe_parse_blkstat("1 2 3 4 5 6 -7", &b) == ERR_INVALID);
    CHECK(probe_parse_blkstat("1 2 3 4 5 6 99999999999999999999", &b) == ERR_INVALID);
    CHECK(probe_parse_blkstat("", &b) == ERR_INVALID);
    CHECK(probe_dev_written(0) == -1 && probe_storage_dev(0) == 0);
    {   /* this process with a log file open: its device, and a counter */
        char tmpl[] = "/tmp/benchlib_XXXXXX.wal";
        int fd = mkstemps(tmpl, 4);
        CHECK(fd >= 0);
        struct stat st;
        CHECK(fd >= 0 && fstat(fd, &st) == 0);
        CHECK(probe_storage_dev(getpid()) == (unsigned long)st.st_dev);
        /* a device number with no stat file (a tmpfs, say): unknown */
        CHECK(probe_dev_written(probe_storage_dev(getpid())) >= -1);
        if (fd >= 0) { close(fd); unlink(tmpl); }
        CHECK(probe_storage_dev(getpid()) == 0);
    }
    probe_sample s = probe_take(0);
    CHECK(s.io_err != 0 && s.disk_w == -1);
    s = probe_take(getpid());
    CHECK(s.io_err == 0 && s.disk_w >= 0 && s.wchar >= 0);
}

/* ---- disk ------------------------------------------------------------------------ */

TEST(disk_sync_sample_is_bounded_and_reports_a_bad_dir)
{
    hist *h = calloc(1, sizeof *h);
    char err[600];
    CHECK(disk_sync_sample("/tmp", 3, 5 * NS_PER_S, h, err, sizeof err) == 3 && h->count == 3);
    CHECK(disk_sync_sample("/tmp", 1000, 0, h, err, sizeof err) == 0); /* no time left */
    CHECK(disk_sync_sample("/nonexistent/dir", 3, NS_PER_S, h, err, sizeof err) == -1);
    CHECK(strstr(err, "/nonexistent/dir") != NULL && h->count == 3);
    free(h);
}

/* ---- wsc: the upgrade answer ------------------------------------------------------ */

static int upgrade(const char *text, wsc_upgrade *u, uint32_t *left)
{
    wsc c;
    wsc_init(&c, 0);
    wsc_keep_input(&c, (const uint8_t *)text, strlen(text));
    int rc = wsc_parse_upgrade(&c, u);
    *left = c.in_len;
    free(c.in);
    return rc;
}

TEST(wsc_checks_the_upgrade_answer)
{
    char want[29];
    CHECK(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, want) == ERR_OK);
    char ok[512];
    snprintf(ok, sizeof ok,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: %s\r\n\r\n\x81\x02hi", want);
    wsc_upgrade u = {0};
    uint32_t left = 0;
    CHECK(upgrade(ok, &u, &left) == (int)strlen(ok) - 4 && u.status == 101 && left == 4);
    /* one byte short of the head: need more */
    char part[512];
    snprintf(part, sizeof part, "%.*s", (int)strlen(ok) - 5, ok);
    CHECK(upgrade(part, &u, &left) == ERR_AGAIN);
    /* a wrong accept key is refused */
    const char *bad = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
    CHECK(upgrade(bad, &u, &left) == ERR_PROTOCOL && u.status == 101);
    /* admission control: 503 with Retry-After */
    const char *busy = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n";
    CHECK(upgrade(busy, &u, &left) == ERR_PROTOCOL && u.status == 503 && u.retry_after_ms == 2000);
    CHECK(upgrade("garbage\r\n\r\n", &u, &left) == ERR_PROTOCOL);
}

/* ---- opts ------------------------------------------------------------------------ */

TEST(opts_refuses_bad_values)
{
    char *ok[] = {"pb", "direct", "--port", "9000", "--rate", "2.5", "--floor", "--label", "x", NULL};
    bench_opts o = {0};
    CHECK(opts_parse(&o, 9, ok) == 0 && o.port == 9000 && o.rate == 2.5 && o.floor);
    CHECK(!strcmp(opts_label(&o), "x"));
    char *bad1[] = {"pb", "idle", "--conns", "12x", NULL};
    char *bad2[] = {"pb", "idle", "--conns", NULL};
    char *bad3[] = {"pb", "idle", "--what", "1", NULL};
    char *bad4[] = {"pb", "idle", "--rate", "-1", NULL};
    bench_opts p = {0};
    CHECK(opts_parse(&p, 4, bad1) == -1);
    CHECK(opts_parse(&p, 3, bad2) == -1);
    CHECK(opts_parse(&p, 4, bad3) == -1);
    CHECK(opts_parse(&p, 4, bad4) == -1);
}

TEST(opts_node_lists)
{
    char *ok[] = {"pb", "cluster", "--ports", "9000,9001,9002", "--pids", "7", "--pg-pid", "12", NULL};
    bench_opts o = {0};
    CHECK(opts_parse(&o, 8, ok) == 0 && o.nports == 3 && o.ports[0] == 9000 && o.ports[2] == 9002);
    CHECK(o.npids == 1 && o.pids[0] == 7 && o.pg_pid == 12);
    char *bad1[] = {"pb", "cluster", "--ports", "9000,", NULL};
    char *bad2[] = {"pb", "cluster", "--ports", "1,2,3,4,5,6,7,8,9", NULL};
    char *bad3[] = {"pb", "cluster", "--pids", "0", NULL};
    char *bad4[] = {"pb", "cluster", "--ports", "9000;9001", NULL};
    bench_opts p = {0};
    CHECK(opts_parse(&p, 4, bad1) == -1);
    CHECK(opts_parse(&p, 4, bad2) == -1);
    CHECK(opts_parse(&p, 4, bad3) == -1);
    CHECK(opts_parse(&p, 4, bad4) == -1);
}

TEST(probe_tree_cpu_counts_the_process)
{
    volatile unsigned x = 0;
    for (unsigned i = 0; i < 20000000u; i++) x += i;
    double self = probe_cpu_s(getpid()), tree = probe_tree_cpu_s(getpid());
    CHECK(self >= 0 && tree >= self);
    CHECK(probe_tree_cpu_s(0) < 0);
}

/* ---- worker: node placement ------------------------------------------------------ */

TEST(worker_node_spreads_items)
{
    /* a pair's two users always on different nodes; pairs rotate */
    CHECK(worker_node_of(0, 2, 1) == 0 && worker_node_of(1, 2, 1) == 0);
    CHECK(worker_node_of(0, 2, 2) == 0 && worker_node_of(1, 2, 2) == 1);
    CHECK(worker_node_of(2, 2, 2) == 1 && worker_node_of(3, 2, 2) == 0);
    for (int n = 2; n <= 3; n++)
        for (int i = 0; i < 60; i += 2) CHECK(worker_node_of(i, 2, n) != worker_node_of(i + 1, 2, n));
    /* a group's members over every node, about evenly */
    int cnt[3] = {0};
    for (int i = 100; i < 150; i++) cnt[worker_node_of(i, 50, 3)]++;
    CHECK(cnt[0] >= 16 && cnt[1] >= 16 && cnt[2] >= 16);
}

/* ---- targets --------------------------------------------------------------------- */

static const char RUN_DIRECT[] =
    "{\"scenario\":\"direct\",\"label\":\"direct\",\"params\":{\"rate\":0,\"pairs\":500},\"figures\":"
    "{\"msgs_per_s\":160000,\"server_cpu_us_per_msg\":5,\"send_delivery\":{\"p99_us\":7000},"
    "\"send_ack\":{\"p50_us\":1500,\"p99_us\":6000,\"p999_us\":9000},"
    "\"disk_bytes_per_msg\":400,\"stored_record_bytes\":150,\"wchar_bytes_per_msg\":180}}";
static const char RUN_FLOOR[] =
    "{\"scenario\":\"direct\",\"label\":\"direct-floor\",\"figures\":{\"server_cpu_us_per_msg\":2}}";
static const char RUN_5K[] =
    "{\"scenario\":\"direct\",\"label\":\"direct-5k\",\"params\":{\"rate\":5000},\"figures\":"
    "{\"msgs_per_s\":5000,\"send_ack\":{\"p50_us\":400,\"p99_us\":1000,\"p999_us\":3000},"
    "\"fdatasync\":{\"p99_us\":600}}}";
static const char RUN_PACED[] =
    "{\"scenario\":\"direct\",\"label\":\"direct-paced\",\"params\":{\"rate\":50000},\"figures\":"
    "{\"msgs_per_s\":49000,\"send_delivery\":{\"p99_us\":4500.5},"
    "\"send_ack\":{\"p50_us\":800,\"p99_us\":4500.5,\"p999_us\":25000}}}";
static const char RUN_GROUP[] =
    "{\"scenario\":\"group\",\"label\":\"group\",\"params\":{\"groups\":10,\"group_size\":100},"
    "\"figures\":{\"deliveries_per_s\":1600000,\"server_cpu_us_per_delivery\":0.5}}";

/* The JSON of the targets table for these runs (the caller frees it). */
static char *judge(const targets *t, const char *const *runs, int n)
{
    runset rs = {0};
    for (int i = 0; i < n; i++) CHECK(runset_add(&rs, runs[i], strlen(runs[i])) == ERR_OK);
    jw j;
    jw_init(&j);
    jw_open(&j, NULL);
    fflush(stdout); /* the printed table is not what is checked here */
    int saved = dup(1), null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, 1);
    targets_table(t, &rs, &j);
    fflush(stdout);
    if (saved >= 0) dup2(saved, 1);
    if (saved >= 0) close(saved);
    if (null >= 0) close(null);
    targets_floor_ratios(t, &rs, &j);
    jw_close(&j);
    return j.p;
}

TEST(targets_file_of_the_repo_judges_runs)
{
    char err[700];
    targets *t = targets_load("bench/targets.conf", err, sizeof err);
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK(targets_count(t) == 15);
    runset rs = {0};
    CHECK(runset_add(&rs, RUN_DIRECT, strlen(RUN_DIRECT)) == ERR_OK);
    CHECK(runset_add(&rs, "{\"figures\":{}}", 14) == ERR_INVALID); /* no label */
    CHECK(runset_figure(&rs, "direct:send_delivery.p99_us") == 7000);
    CHECK(runset_figure(&rs, "direct:params.pairs") == 500);
    CHECK(isnan(runset_figure(&rs, "nosuch:msgs_per_s")));
    const char *const runs[] = {RUN_DIRECT, RUN_FLOOR, RUN_5K, RUN_PACED, RUN_GROUP};
    char *p = judge(t, runs, 5);
    size_t n = strlen(p);
    const char *v;
    size_t vl;
    uint8_t ty;
    CHECK(jr_get(p, n, "targets", &v, &vl, &ty) == ERR_OK && ty == JSON_ARRAY);
    /* issue 10's figures, each beside its target */
    CHECK(strstr(p, "{\"target\":\"direct: durable msgs/s, flat out\",\"goal\":\">= 150,000\","
                    "\"measured\":\"160000 msgs/s (500 pairs)\",\"value\":160000,\"met\":true,"
                    "\"floor\":\"CPU 5.0 us/msg vs floor 2.00 = 2.5x\",\"ratio_to_floor\":2.500}") != NULL);
    CHECK(strstr(p, "\"measured\":\"p50 1.50, p99 6.00, p99.9 9.00 ms\",\"value\":6000}") != NULL);
    CHECK(strstr(p, "\"measured\":\"400 B at the device = 2.7x the 150 B record (wchar 180 B)\",\"value\":400,"
                    "\"met\":true") != NULL);
    CHECK(strstr(p, "\"measured\":\"1.00 ms = 1.7x fdatasync p99 0.60 ms; p50 0.40, p99.9 3.00 ms\","
                    "\"value\":1000,\"met\":true") != NULL);
    CHECK(strstr(p, "\"measured\":\"4.50 ms at 50000/s (got 49000); p50 0.80 ms\",\"value\":4500.500,"
                    "\"met\":true") != NULL);
    CHECK(strstr(p, "\"target\":\"direct: send->ack p99.9 at 50,000/s\",\"goal\":\"<= 20 ms\","
                    "\"measured\":\"25.00 ms at 50000/s (got 49000)\",\"value\":25000,"
                    "\"met\":false") != NULL);
    CHECK(strstr(p, "\"measured\":\"1600000/s (10 x 100)\",\"value\":1600000,\"met\":true") != NULL);
    CHECK(strstr(p, "half of max") == NULL); /* no direct-half run: not shown */
    CHECK(strstr(p, "\"target\":\"idle: user-space bytes per idle conn\",\"goal\":\"<= 384 B at 15,000+\","
                    "\"measured\":\"n/a\",\"value\":null,\"met\":false") != NULL);
    CHECK(jr_num(p, n, "floor_ratios.direct_cpu_per_msg") == 2.5);
    CHECK(isnan(jr_num(p, n, "floor_ratios.echo_cpu_per_echo")));
    free(p);
    targets_free(t);
}

TEST(targets_judge_ack_latency_by_the_same_runs_fdatasync)
{
    char err[700];
    targets *t = targets_load("bench/targets.conf", err, sizeof err);
    CHECK(t != NULL);
    if (!t) return;
    /* over 2x the fdatasync p99 of the same run: not met */
    const char *slow[] = {"{\"label\":\"direct-5k\",\"params\":{\"rate\":5000},\"figures\":"
                          "{\"send_ack\":{\"p99_us\":1300},\"fdatasync\":{\"p99_us\":600}}}"};
    char *p = judge(t, slow, 1);
    CHECK(strstr(p, "\"value\":1300,\"met\":false") != NULL);
    free(p);
    /* no fdatasync in that run: the ratio is unknown, never met */
    const char *nosync[] = {"{\"label\":\"direct-5k\",\"params\":{\"rate\":5000},\"figures\":"
                            "{\"send_ack\":{\"p99_us\":100}}}"};
    p = judge(t, nosync, 1);
    CHECK(strstr(p, "\"measured\":\"0.10 ms = n/ax fdatasync p99 n/a ms; p50 n/a, p99.9 n/a ms\","
                    "\"value\":100,\"met\":false,\"undecided\":true") != NULL);
    free(p);
    /* a slower offered rate does not count as the 5,000/s target */
    const char *slowrate[] = {"{\"label\":\"direct-5k\",\"params\":{\"rate\":1000},\"figures\":"
                              "{\"send_ack\":{\"p99_us\":100},\"fdatasync\":{\"p99_us\":600}}}"};
    p = judge(t, slowrate, 1);
    CHECK(strstr(p, "\"value\":100,\"met\":false") != NULL);
    free(p);
    /* disk over 3x the stored record: not met; no stored record: not met */
    const char *disk[] = {"{\"label\":\"direct\",\"figures\":{\"disk_bytes_per_msg\":451,"
                          "\"stored_record_bytes\":150}}"};
    p = judge(t, disk, 1);
    CHECK(strstr(p, "\"measured\":\"451 B at the device = 3.0x the 150 B record (wchar n/a B)\",\"value\":451,"
                    "\"met\":false") != NULL);
    free(p);
    targets_free(t);
}

/* An undecided condition (a side unknown) prints n/a, a failed one NO. */
TEST(targets_expression_with_a_factor)
{
    static const char CONF[] = "target a\nfigure r:x\nmet value <= 2 * r:y\nmet r:z >= 1\nmeasured {value}\n";
    char err[700];
    char path[] = "/tmp/test_benchlib.XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write(fd, CONF, strlen(CONF)) == (ssize_t)strlen(CONF));
    close(fd);
    targets *t = targets_load(path, err, sizeof err);
    unlink(path);
    CHECK(t != NULL);
    if (!t) return;
    static const struct {
        const char *run;
        const char *want;
    } cases[] = {
        {"{\"label\":\"r\",\"figures\":{\"x\":4,\"y\":2,\"z\":1}}", "\"value\":4,\"met\":true"},
        {"{\"label\":\"r\",\"figures\":{\"x\":4.5,\"y\":2,\"z\":1}}", "\"value\":4.500,\"met\":false"},
        {"{\"label\":\"r\",\"figures\":{\"x\":4,\"z\":1}}", "\"value\":4,\"met\":false,\"undecided\":true"},
        {"{\"label\":\"r\",\"figures\":{\"x\":5,\"z\":0}}", "\"value\":5,\"met\":false}"}, /* z fails */
        {"{\"label\":\"r\",\"figures\":{\"x\":9,\"z\":0}}", "\"value\":9,\"met\":false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *runs[] = {cases[i].run};
        char *p = judge(t, runs, 1);
        CHECK(strstr(p, cases[i].want) != NULL);
        free(p);
    }
    targets_free(t);
}

static targets *load_text(const char *text, char *err, size_t cap)
{
    char path[] = "/tmp/test_benchlib.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return NULL;
    if (write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        close(fd);
        return NULL;
    }
    close(fd);
    targets *t = targets_load(path, err, cap);
    unlink(path);
    return t;
}

TEST(targets_file_errors_name_the_line)
{
    char err[700];
    targets *t = load_text("target a\nfigure r:x\nmeasured {value}\nmet value < 3\n", err, sizeof err);
    CHECK(t && targets_count(t) == 1);
    targets_free(t);
    static const struct {
        const char *text, *want;
    } bad[] = {
        {"target a\nfigure r:x\nmeasured {value\n", "bad measured template"},
        {"target a\nfigure nocolon\nmeasured x\n", "figure must be RUN:PATH"},
        {"target a\nfigure r:x\nmeasured x\nmet value 3\n", "bad met condition"},
        {"target a\nfigure r:x\nmeasured x\nmet value < 3 4\n", "bad met condition"},
        {"target a\nfigure r:x\nmeasured {value|9}\n", "bad measured template"},
        {"target a\nfigure r:x\nmeasured x\nfloor {ratio}\n", "floor needs a ratio"},
        {"target a\nfigure r:x\nmeasured x\ncolour red\n", ":4: unknown key colour"},
        {"figure r:x\n", ":1: unknown key figure"},
        {"target a\nmeasured x\ntarget b\n", ":3: the target before: a target needs a figure"},
        {"target a\ngoal\n", ":2: goal needs a value"},
        {"# nothing\n", "no targets"},
        {"note {x:y / }\n", "bad note template"},
        {"floor_ratio r\nvalue a:b ^ c:d\n", "bad value expression"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        t = load_text(bad[i].text, err, sizeof err);
        CHECK(t == NULL);
        if (!strstr(err, bad[i].want)) fprintf(stderr, "  case %zu: got \"%s\"\n", i, err);
        CHECK(strstr(err, bad[i].want) != NULL);
        targets_free(t);
    }
    CHECK(targets_load("/nonexistent/targets.conf", err, sizeof err) == NULL && strstr(err, "cannot read"));
}

int main(void)
{
    RUN(hist_percentiles_within_bucket_error);
    RUN(jr_reads_objects_beyond_json_max_fields);
    RUN(jr_refuses_bad_input);
    RUN(pf_send_frames_carry_their_timing);
    RUN(pf_reads_server_frames);
    RUN(pf_send_payload_is_the_cmid_and_body_of_the_frame);
    RUN(probe_parses_proc_io);
    RUN(disk_sync_sample_is_bounded_and_reports_a_bad_dir);
    RUN(wsc_checks_the_upgrade_answer);
    RUN(opts_refuses_bad_values);
    RUN(opts_node_lists);
    RUN(worker_node_spreads_items);
    RUN(probe_tree_cpu_counts_the_process);
    RUN(targets_file_of_the_repo_judges_runs);
    RUN(targets_judge_ack_latency_by_the_same_runs_fdatasync);
    RUN(targets_expression_with_a_factor);
    RUN(targets_file_errors_name_the_line);
    return test_summary("bench lib");
}
