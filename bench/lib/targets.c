#include "lib/targets.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "lib/jr.h"
#include "lib/util.h"

#define MAX_MET 4

typedef struct row {
    char name[96], goal[64], figure[96], show[96];
    char measured[256], ratio[160], floor[256];
    char met[MAX_MET][96];
    int nmet;
} row;

typedef struct ratio_def {
    char name[64], value[160];
} ratio_def;

struct targets {
    row *rows;
    int nrows;
    ratio_def *ratios;
    int nratios;
    char (*notes)[320];
    int nnotes;
};

/* ---- runs ---------------------------------------------------------------------- */

int runset_add(runset *rs, const char *text, size_t len)
{
    if (rs->n >= RUNSET_MAX) return ERR_FULL;
    if (jr_str(text, len, "label", rs->label[rs->n], sizeof rs->label[0]) < 0) return ERR_INVALID;
    rs->text[rs->n] = text;
    rs->len[rs->n] = len;
    rs->n++;
    return ERR_OK;
}

double runset_figure(const runset *rs, const char *ref)
{
    const char *colon = strchr(ref, ':');
    if (!colon) return NAN;
    size_t ll = (size_t)(colon - ref);
    for (int i = 0; i < rs->n; i++) {
        if (strlen(rs->label[i]) != ll || memcmp(rs->label[i], ref, ll) != 0) continue;
        char path[160];
        const char *p = colon + 1;
        if (strncmp(p, "params.", 7) == 0) snprintf(path, sizeof path, "%s", p);
        else snprintf(path, sizeof path, "figures.%s", p);
        return jr_num(rs->text[i], rs->len[i], path);
    }
    return NAN;
}

/* ---- expressions ---------------------------------------------------------------
 *   EXPR    = operand [ ("/" | "*") operand ]
 *   operand = number | "value" | "ratio" | RUN:PATH
 * An unknown figure makes the expression NAN (unknown); bad syntax is
 * ERR_INVALID. */

typedef struct ectx {
    const runset *rs;
    double value, ratio;
} ectx;

static bool tokch(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '.' || c == ':' || c == '-' || c == '+';
}

static int operand(const ectx *e, const char **pp, const char *end, double *out)
{
    const char *p = *pp;
    while (p < end && *p == ' ') p++;
    const char *s = p;
    while (p < end && tokch(*p)) p++;
    size_t n = (size_t)(p - s);
    if (!n || n >= 160) return ERR_INVALID;
    char tok[160];
    memcpy(tok, s, n);
    tok[n] = 0;
    *pp = p;
    if (!strcmp(tok, "value")) *out = e->value;
    else if (!strcmp(tok, "ratio")) *out = e->ratio;
    else if (strchr(tok, ':')) *out = runset_figure(e->rs, tok);
    else {
        char *x;
        *out = strtod(tok, &x);
        if (*x) return ERR_INVALID;
    }
    return ERR_OK;
}

static int eval(const ectx *e, const char *s, size_t n, double *out)
{
    const char *p = s, *end = s + n;
    double a, b;
    if (operand(e, &p, end, &a) != ERR_OK) return ERR_INVALID;
    while (p < end && *p == ' ') p++;
    if (p < end && (*p == '/' || *p == '*')) {
        char op = *p++;
        if (operand(e, &p, end, &b) != ERR_OK) return ERR_INVALID;
        a = op == '/' ? a / b : a * b;
        while (p < end && *p == ' ') p++;
    }
    if (p != end) return ERR_INVALID;
    *out = a;
    return ERR_OK;
}

/* "EXPR OP EXPR": ERR_OK with *holds (false when a side is unknown, and
 * then *known false too; known may be NULL). */
static int condition_known(const ectx *e, const char *s, bool *holds, bool *known_out)
{
    static const char *const OPS[] = {"<=", ">=", "==", "!=", "<", ">"};
    const char *at = strpbrk(s, "<>=!");
    if (!at) return ERR_INVALID;
    int op = -1;
    for (int i = 0; i < 6 && op < 0; i++)
        if (strncmp(at, OPS[i], strlen(OPS[i])) == 0) op = i;
    if (op < 0) return ERR_INVALID;
    double a, b;
    const char *rhs = at + strlen(OPS[op]);
    if (eval(e, s, (size_t)(at - s), &a) != ERR_OK || eval(e, rhs, strlen(rhs), &b) != ERR_OK)
        return ERR_INVALID;
    bool known = a == a && b == b;
    if (known_out) *known_out = known;
    switch (op) {
    case 0: *holds = known && a <= b; break;
    case 1: *holds = known && a >= b; break;
    case 2: *holds = known && a == b; break;
    case 3: *holds = known && a != b; break;
    case 4: *holds = known && a < b; break;
    default: *holds = known && a > b; break;
    }
    return ERR_OK;
}

static int condition(const ectx *e, const char *s, bool *holds)
{
    return condition_known(e, s, holds, NULL);
}

/* Expands "{EXPR}" / "{EXPR|D}" in tpl into out. ERR_OK, or ERR_INVALID for
 * bad syntax. *all_known: every expression was known (else "n/a" printed). */
static int expand(const ectx *e, const char *tpl, char *out, size_t cap, bool *all_known)
{
    size_t o = 0;
    bool known = true;
    out[0] = 0;
    for (const char *p = tpl; *p;) {
        if (*p != '{') {
            if (*p == '}') return ERR_INVALID;
            if (o + 1 < cap) out[o++] = *p;
            p++;
            continue;
        }
        const char *close = strchr(p, '}');
        if (!close) return ERR_INVALID;
        const char *s = p + 1, *bar = memchr(s, '|', (size_t)(close - s));
        int dec = 0;
        if (bar) {
            char *x;
            long d = strtol(bar + 1, &x, 10);
            if (x != close || bar + 1 == close || d < 0 || d > 6) return ERR_INVALID;
            dec = (int)d;
        }
        double v;
        if (eval(e, s, (size_t)((bar ? bar : close) - s), &v) != ERR_OK) return ERR_INVALID;
        char num[64];
        if (v == v) snprintf(num, sizeof num, "%.*f", dec, v);
        else {
            snprintf(num, sizeof num, "n/a");
            known = false;
        }
        for (const char *q = num; *q; q++)
            if (o + 1 < cap) out[o++] = *q;
        p = close + 1;
    }
    out[o < cap ? o : cap - 1] = 0;
    if (all_known) *all_known = known;
    return ERR_OK;
}

/* ---- the file ---------------------------------------------------------------------- */

void targets_path(const char *given, char *out, size_t cap)
{
    if (given) {
        snprintf(out, cap, "%s", given);
        return;
    }
    snprintf(out, cap, "bench/targets.conf");
    if (access(out, R_OK) == 0) return;
    char exe[512];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return;
    *slash = 0;
    char alt[600];
    snprintf(alt, sizeof alt, "%s/../../bench/targets.conf", exe);
    if (access(alt, R_OK) == 0) snprintf(out, cap, "%s", alt);
}

void targets_free(targets *t)
{
    if (!t) return;
    free(t->rows);
    free(t->ratios);
    free(t->notes);
    free(t);
}

int targets_count(const targets *t)
{
    return t->nrows;
}

__attribute__((format(printf, 5, 6))) static targets *fail(targets *t, char *err, size_t cap,
                                                            const char *where, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(err, cap, "%s: %s", where, msg);
    targets_free(t);
    return NULL;
}

static bool set(char *dst, size_t cap, const char *v)
{
    size_t n = strlen(v);
    if (n >= cap) return false;
    memcpy(dst, v, n + 1);
    return true;
}

/* Every expression of the file is checked once against no runs. */
static const char *check_row(const row *r)
{
    ectx e = {.rs = &(runset){0}, .value = NAN, .ratio = NAN};
    double v;
    bool b;
    char tmp[512];
    if (!r->figure[0]) return "a target needs a figure";
    if (!strchr(r->figure, ':') || eval(&e, r->figure, strlen(r->figure), &v) != ERR_OK)
        return "figure must be RUN:PATH";
    if (!r->measured[0]) return "a target needs measured";
    if (expand(&e, r->measured, tmp, sizeof tmp, NULL) != ERR_OK) return "bad measured template";
    for (int i = 0; i < r->nmet; i++)
        if (condition(&e, r->met[i], &b) != ERR_OK) return "bad met condition";
    if (r->show[0] && eval(&e, r->show, strlen(r->show), &v) != ERR_OK) return "bad show expression";
    if (r->ratio[0] && eval(&e, r->ratio, strlen(r->ratio), &v) != ERR_OK) return "bad ratio expression";
    if (r->floor[0] && expand(&e, r->floor, tmp, sizeof tmp, NULL) != ERR_OK) return "bad floor template";
    if (r->floor[0] && !r->ratio[0]) return "floor needs a ratio";
    return NULL;
}

targets *targets_load(const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errcap, "%s: cannot read", path);
        return NULL;
    }
    targets *t = xcalloc(1, sizeof *t);
    char line[1024], where[600];
    int lineno = 0;
    enum { NONE, ROW, RATIO } in = NONE;
    while (fgets(line, sizeof line, f) && lineno < 100000) {
        lineno++;
        snprintf(where, sizeof where, "%s:%d", path, lineno);
        size_t n = strlen(line);
        if (n == sizeof line - 1 && line[n - 1] != '\n') {
            fclose(f);
            return fail(t, err, errcap, where, "line too long");
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ')) line[--n] = 0;
        char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p || *p == '#') continue;
        char *key = p;
        while (*p && *p != ' ' && *p != '\t') p++;
        if (*p) *p++ = 0;
        while (*p == ' ' || *p == '\t') p++;
        const char *val = p;
        if (!*val) {
            fclose(f);
            return fail(t, err, errcap, where, "%s needs a value", key);
        }
        bool ok = true;
        row *r = in == ROW ? &t->rows[t->nrows - 1] : NULL;
        if (!strcmp(key, "target")) {
            if (r) {
                const char *bad = check_row(r);
                if (bad) {
                    fclose(f);
                    return fail(t, err, errcap, where, "the target before: %s", bad);
                }
            }
            t->rows = xrealloc(t->rows, (size_t)(t->nrows + 1) * sizeof *t->rows);
            r = &t->rows[t->nrows++];
            memset(r, 0, sizeof *r);
            ok = set(r->name, sizeof r->name, val);
            in = ROW;
        } else if (!strcmp(key, "floor_ratio")) {
            t->ratios = xrealloc(t->ratios, (size_t)(t->nratios + 1) * sizeof *t->ratios);
            ratio_def *d = &t->ratios[t->nratios++];
            memset(d, 0, sizeof *d);
            ok = set(d->name, sizeof d->name, val);
            in = RATIO;
        } else if (!strcmp(key, "note")) {
            t->notes = xrealloc(t->notes, (size_t)(t->nnotes + 1) * sizeof *t->notes);
            ok = set(t->notes[t->nnotes++], sizeof t->notes[0], val);
            ectx e = {.rs = &(runset){0}, .value = NAN, .ratio = NAN};
            char tmp[512];
            if (ok && expand(&e, val, tmp, sizeof tmp, NULL) != ERR_OK) {
                fclose(f);
                return fail(t, err, errcap, where, "bad note template");
            }
        } else if (in == RATIO && !strcmp(key, "value")) {
            ratio_def *d = &t->ratios[t->nratios - 1];
            ectx e = {.rs = &(runset){0}, .value = NAN, .ratio = NAN};
            double v;
            ok = set(d->value, sizeof d->value, val);
            if (ok && eval(&e, val, strlen(val), &v) != ERR_OK) {
                fclose(f);
                return fail(t, err, errcap, where, "bad value expression");
            }
        } else if (r && !strcmp(key, "goal")) ok = set(r->goal, sizeof r->goal, val);
        else if (r && !strcmp(key, "figure")) ok = set(r->figure, sizeof r->figure, val);
        else if (r && !strcmp(key, "show")) ok = set(r->show, sizeof r->show, val);
        else if (r && !strcmp(key, "measured")) ok = set(r->measured, sizeof r->measured, val);
        else if (r && !strcmp(key, "ratio")) ok = set(r->ratio, sizeof r->ratio, val);
        else if (r && !strcmp(key, "floor")) ok = set(r->floor, sizeof r->floor, val);
        else if (r && !strcmp(key, "met")) {
            if (r->nmet == MAX_MET) {
                fclose(f);
                return fail(t, err, errcap, where, "at most %d met lines", MAX_MET);
            }
            ok = set(r->met[r->nmet++], sizeof r->met[0], val);
        } else {
            fclose(f);
            return fail(t, err, errcap, where, "unknown key %s here", key);
        }
        if (!ok) {
            fclose(f);
            return fail(t, err, errcap, where, "%s is too long", key);
        }
    }
    fclose(f);
    snprintf(where, sizeof where, "%s:%d", path, lineno);
    if (in == ROW) {
        const char *bad = check_row(&t->rows[t->nrows - 1]);
        if (bad) return fail(t, err, errcap, where, "the last target: %s", bad);
    }
    if (!t->nrows) return fail(t, err, errcap, where, "no targets");
    return t;
}

/* ---- evaluation ---------------------------------------------------------------- */

typedef struct result {
    bool shown, known, reference, met, has_floor;
    bool undecided;          /* a met condition had an unknown side */
    double value, ratio;
    char measured[256], floor[256];
} result;

static void evaluate(const row *r, const runset *rs, result *out)
{
    memset(out, 0, sizeof *out);
    ectx e = {.rs = rs, .value = NAN, .ratio = NAN};
    double v = NAN;
    eval(&e, r->figure, strlen(r->figure), &v);
    e.value = v;
    out->value = v;
    out->known = v == v;
    out->reference = r->goal[0] == '(' || !r->nmet;
    out->shown = true;
    if (r->show[0]) {
        double s = NAN;
        eval(&e, r->show, strlen(r->show), &s);
        out->shown = s == s;
    }
    /* not met when any condition fails; undecided when none failed but
     * one could not be judged */
    bool met = out->known, failed = false, unknown = false;
    for (int i = 0; i < r->nmet && out->known; i++) {
        bool h = false, k = true;
        condition_known(&e, r->met[i], &h, &k);
        met = met && h;
        failed = failed || (k && !h);
        unknown = unknown || !k;
    }
    out->undecided = !failed && unknown;
    out->met = met;
    if (out->known) expand(&e, r->measured, out->measured, sizeof out->measured, NULL);
    else snprintf(out->measured, sizeof out->measured, "n/a");
    out->ratio = NAN;
    if (r->ratio[0]) {
        eval(&e, r->ratio, strlen(r->ratio), &out->ratio);
        e.ratio = out->ratio;
        if (out->ratio == out->ratio) {
            out->has_floor = true;
            if (r->floor[0]) expand(&e, r->floor, out->floor, sizeof out->floor, NULL);
            else snprintf(out->floor, sizeof out->floor, "%.1fx", out->ratio);
        }
    }
}

static const char *met_word(const result *x)
{
    return !x->known || x->undecided ? "n/a" : x->reference ? "-" : x->met ? "yes" : "NO";
}

void targets_table(const targets *t, const runset *rs, jw *j)
{
    printf("%-42s %-30s %-4s %s\n", "target", "goal", "met", "measured | vs floor (same suite)");
    jw_open_array(j, "targets");
    for (int i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        result x;
        evaluate(r, rs, &x);
        if (!x.shown) continue;
        printf("%-42s %-30s %-4s %s%s%s\n", r->name, r->goal, met_word(&x), x.measured,
               x.has_floor ? " | " : "", x.has_floor ? x.floor : "");
        jw_open(j, NULL);
        jw_str(j, "target", r->name);
        jw_str(j, "goal", r->goal);
        jw_str(j, "measured", x.measured);
        jw_num(j, "value", x.value);
        if (!x.reference) jw_bool(j, "met", x.known && x.met);
        if (!x.reference && x.known && x.undecided) jw_bool(j, "undecided", true);
        if (x.has_floor) {
            jw_str(j, "floor", x.floor);
            jw_num(j, "ratio_to_floor", x.ratio);
        }
        jw_close(j);
    }
    jw_close_array(j);
}

void targets_floor_ratios(const targets *t, const runset *rs, jw *j)
{
    jw_open(j, "floor_ratios");
    ectx e = {.rs = rs, .value = NAN, .ratio = NAN};
    for (int i = 0; i < t->nratios; i++) {
        double v = NAN;
        eval(&e, t->ratios[i].value, strlen(t->ratios[i].value), &v);
        jw_num(j, t->ratios[i].name, v);
    }
    jw_close(j);
}

void targets_notes(const targets *t, const runset *rs)
{
    ectx e = {.rs = rs, .value = NAN, .ratio = NAN};
    for (int i = 0; i < t->nnotes; i++) {
        char out[512];
        bool known = false;
        if (expand(&e, t->notes[i], out, sizeof out, &known) == ERR_OK && known) printf("%s\n", out);
    }
}

void targets_print_run(const char *given_path, const char *label, const char *text, size_t len)
{
    char path[600], err[700];
    targets_path(given_path, path, sizeof path);
    targets *t = targets_load(path, err, sizeof err);
    if (!t) {
        printf("  targets                 not shown (%s)\n", err);
        return;
    }
    runset rs = {0};
    if (runset_add(&rs, text, len) != ERR_OK) {
        targets_free(t);
        return;
    }
    size_t ll = strlen(label);
    for (int i = 0; i < t->nrows; i++) {
        const row *r = &t->rows[i];
        if (strncmp(r->figure, label, ll) != 0 || r->figure[ll] != ':') continue;
        result x;
        evaluate(r, &rs, &x);
        if (!x.shown) continue;
        printf("  target                  %s: %s; goal %s: %s\n", r->name, x.measured, r->goal,
               met_word(&x));
    }
    targets_free(t);
}
