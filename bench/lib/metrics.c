#include "lib/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lib/rest.h"

double metrics_value(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;) {
        if (strncmp(line, name, nl) == 0 && line[nl] == ' ') return strtod(line + nl + 1, NULL);
        line = strchr(line, '\n');
        if (line) line++;
    }
    return NAN;
}

metrics_writer metrics_scrape(const sock_target *t)
{
    metrics_writer m = {0};
    rest_conn h;
    rest_init(&h, t, 0);
    rest_resp r;
    if (rest_do(&h, "GET", "/metrics", NULL, NULL, &r) == 200) {
        m.batches = metrics_value(r.body, "parley_commit_batches_total");
        m.ops = metrics_value(r.body, "parley_commit_ops_total");
        m.max_batch = metrics_value(r.body, "parley_commit_max_batch");
        m.apply_s = metrics_value(r.body, "parley_commit_seconds_total{phase=\"apply\"}");
        m.commit_s = metrics_value(r.body, "parley_commit_seconds_total{phase=\"commit\"}");
        m.fanout_s = metrics_value(r.body, "parley_commit_seconds_total{phase=\"fanout\"}");
        m.queue = metrics_value(r.body, "parley_commit_queue");
        m.ok = m.batches == m.batches;
    }
    rest_close(&h);
    return m;
}
