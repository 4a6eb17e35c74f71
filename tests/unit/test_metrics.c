/* metrics: per-thread counters and histograms rendered as Prometheus text. */
#include "net/metrics.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "test.h"

static char buf[128 * 1024];

/* The value on the line that starts with `key ` (-1 if none). */
static double value(const char *text, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
        if (strncmp(p, key, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
    return -1;
}

TEST(histogram_text_is_cumulative_over_blocks)
{
    hist a = {{0}, 0}, b = {{0}, 0};
    hist_observe(&a, &hist_seconds, 40000);      /* 40 us */
    hist_observe(&a, &hist_seconds, 2000000);    /* 2 ms */
    hist_observe(&b, &hist_seconds, 2000000);
    hist_observe(&b, &hist_seconds, 20000000000ull); /* 20 s: +Inf only */
    const hist *hs[] = {&a, &b};
    int n = metrics_render_hist(buf, sizeof buf, "x_seconds", "help text", &hist_seconds, hs, 2);
    CHECK(n > 0 && (size_t)n == strlen(buf));
    CHECK(strncmp(buf, "# HELP x_seconds help text\n# TYPE x_seconds histogram\n", 53) == 0);
    CHECK(value(buf, "x_seconds_bucket{le=\"0.00005\"}") == 1);
    CHECK(value(buf, "x_seconds_bucket{le=\"0.001\"}") == 1);
    CHECK(value(buf, "x_seconds_bucket{le=\"0.0025\"}") == 3);
    CHECK(value(buf, "x_seconds_bucket{le=\"10\"}") == 3);
    CHECK(value(buf, "x_seconds_bucket{le=\"+Inf\"}") == 4);
    CHECK(value(buf, "x_seconds_count") == 4);
    double sum = value(buf, "x_seconds_sum");
    CHECK(sum > 20.00403 && sum < 20.00405);
    /* Each bound once, ascending, no exponent notation. */
    CHECK(strstr(buf, "e-") == NULL);
    int buckets = 0;
    for (const char *p = buf; (p = strstr(p, "_bucket{")); p++) buckets++;
    CHECK_EQ_INT(buckets, hist_seconds.n + 1);

    n = metrics_render_hist(buf, sizeof buf, "y_size", "h", &hist_sizes, hs, 0);
    CHECK(n > 0);
    CHECK(value(buf, "y_size_bucket{le=\"1\"}") == 0);
    CHECK(value(buf, "y_size_bucket{le=\"4096\"}") == 0);
    CHECK(value(buf, "y_size_count") == 0 && value(buf, "y_size_sum") == 0);
}

TEST(render_sums_threads_with_derived_gauges)
{
    metrics *m[2];
    for (int i = 0; i < 2; i++) m[i] = calloc(1, sizeof *m[i]);
    metrics_add(m[0], M_MSGS_SENT, 3);
    metrics_add(m[1], M_MSGS_SENT, 4);
    metrics_inc(m[0], M_MSGS_DELIVERED);
    metrics_add(m[0], M_SESSIONS_OPENED, 5);
    metrics_add(m[1], M_SESSIONS_CLOSED, 2);
    hist_observe(&m[1]->send_ack, &hist_seconds, 300000);
    int n = metrics_render(m, 2, buf, sizeof buf);
    CHECK(n > 0);
    CHECK(value(buf, "parley_messages_sent_total") == 7);
    CHECK(value(buf, "parley_messages_delivered_total") == 1);
    CHECK(value(buf, "parley_sessions") == 3);
    CHECK(value(buf, "parley_sessions_opened_total") == 5);
    CHECK(value(buf, "parley_send_ack_seconds_count") == 1);
    CHECK(value(buf, "parley_send_ack_seconds_bucket{le=\"0.00025\"}") == 0);
    CHECK(value(buf, "parley_send_ack_seconds_bucket{le=\"0.0005\"}") == 1);
    CHECK(strstr(buf, "# TYPE parley_send_ack_seconds histogram\n") != NULL);
    CHECK(strstr(buf, "# TYPE parley_sessions gauge\n") != NULL);
    /* Too small a buffer is an error, never a cut text. */
    CHECK_EQ_INT(metrics_render(m, 2, buf, (size_t)n - 1), ERR_TOO_LARGE);
    CHECK_EQ_INT(metrics_render(m, 2, buf, 100), ERR_TOO_LARGE);
    free(m[0]);
    free(m[1]);
}

TEST(process_and_build_info)
{
    int n = metrics_render_process(buf, sizeof buf, "9.8.7");
    CHECK(n > 0);
    CHECK(value(buf, "process_cpu_seconds_total") >= 0);
    CHECK(value(buf, "process_resident_memory_bytes") > 4096);
    CHECK(value(buf, "process_virtual_memory_bytes") >= value(buf, "process_resident_memory_bytes"));
    CHECK(value(buf, "process_open_fds") >= 3); /* stdin, stdout, stderr */
    CHECK(value(buf, "process_max_fds") >= value(buf, "process_open_fds"));
    CHECK(value(buf, "process_start_time_seconds") > 1.6e9);
    CHECK(value(buf, "parley_build_info{version=\"9.8.7\"}") == 1);
    CHECK(strstr(buf, "# TYPE process_cpu_seconds_total counter\n") != NULL);
    CHECK_EQ_INT(metrics_render_process(buf, 64, "9.8.7"), ERR_TOO_LARGE);
}

int main(void)
{
    RUN(histogram_text_is_cumulative_over_blocks);
    RUN(render_sums_threads_with_derived_gauges);
    RUN(process_and_build_info);
    return test_summary("metrics");
}
