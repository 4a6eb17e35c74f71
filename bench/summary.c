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
