#include "scenario/scenario.h"

#include <stdio.h>
#include <string.h>

#include "lib/pf.h"

void scn_need_pid(const bench_run *r)
{
    if (r->o->pid <= 0) die("--pid is required for %s (server RSS and CPU)", r->o->scenario);
}

void scn_note_error(worker *w, const pf_frame *f, const char *p, size_t n)
{
    char code[32];
    stats_add(w->S, ST_ERRORS, 1);
    if (pf_str(f, "code", code, sizeof code) >= 0 && !strcmp(code, "busy")) stats_add(w->S, ST_BUSY, 1);
    if (stats_get(w->S, ST_ERRORS) <= 3)
        fprintf(stderr, "server error frame: %.*s\n", (int)(n < 300 ? n : 300), p);
}
