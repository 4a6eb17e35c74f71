#include "lib/jw.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/util.h"

void jw_init(jw *j)
{
    j->cap = 4096;
    j->p = xcalloc(1, j->cap);
    j->n = 0;
    j->first = true;
}

void jw_free(jw *j)
{
    free(j->p);
    j->p = NULL;
    j->n = j->cap = 0;
}

static void reserve(jw *j, size_t more)
{
    if (j->cap - j->n > more) return;
    j->cap = (j->n + more) * 2 + 64;
    j->p = xrealloc(j->p, j->cap);
}

void jw_bytes(jw *j, const char *p, size_t n)
{
    reserve(j, n + 1);
    memcpy(j->p + j->n, p, n);
    j->n += n;
    j->p[j->n] = 0;
}

void jw_raw(jw *j, const char *fmt, ...)
{
    for (int tries = 0; tries < 4; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(j->p + j->n, j->cap - j->n, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if ((size_t)k < j->cap - j->n) {
            j->n += (size_t)k;
            return;
        }
        reserve(j, (size_t)k + 1);
    }
}

static void sep(jw *j)
{
    if (!j->first) jw_bytes(j, ",", 1);
    j->first = false;
}

static void quoted(jw *j, const char *s)
{
    jw_bytes(j, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') {
            char e[2] = {'\\', *s};
            jw_bytes(j, e, 2);
        } else if ((unsigned char)*s < 0x20) {
            jw_bytes(j, " ", 1);
        } else {
            jw_bytes(j, s, 1);
        }
    }
    jw_bytes(j, "\"", 1);
}

void jw_key(jw *j, const char *key)
{
    sep(j);
    quoted(j, key);
    jw_bytes(j, ":", 1);
}

void jw_open(jw *j, const char *key)
{
    if (key) jw_key(j, key);
    else sep(j);
    jw_bytes(j, "{", 1);
    j->first = true;
}

void jw_close(jw *j)
{
    jw_bytes(j, "}", 1);
    j->first = false;
}

void jw_open_array(jw *j, const char *key)
{
    if (key) jw_key(j, key);
    else sep(j);
    jw_bytes(j, "[", 1);
    j->first = true;
}

void jw_close_array(jw *j)
{
    jw_bytes(j, "]", 1);
    j->first = false;
}

void jw_num(jw *j, const char *key, double v)
{
    jw_key(j, key);
    if (v != v) jw_bytes(j, "null", 4);
    else if (v == (double)(int64_t)v && v < 1e15 && v > -1e15) jw_raw(j, "%" PRId64, (int64_t)v);
    else jw_raw(j, "%.3f", v);
}

void jw_str(jw *j, const char *key, const char *s)
{
    jw_key(j, key);
    quoted(j, s);
}

void jw_bool(jw *j, const char *key, bool v)
{
    jw_key(j, key);
    jw_raw(j, "%s", v ? "true" : "false");
}

void jw_hist(jw *j, const char *key, const hist *h)
{
    jw_open(j, key);
    jw_num(j, "count", (double)h->count);
    jw_num(j, "p50_us", hist_pct_us(h, 0.5));
    jw_num(j, "p90_us", hist_pct_us(h, 0.9));
    jw_num(j, "p99_us", hist_pct_us(h, 0.99));
    jw_num(j, "p999_us", hist_pct_us(h, 0.999));
    jw_num(j, "max_us", hist_max_us(h));
    jw_num(j, "mean_us", hist_mean_us(h));
    jw_close(j);
}
