/* jw: writes the results as JSON (one object per run, the merged summary).
 *
 * A jw owns a growing NUL-terminated buffer (jw_init ... jw_free). Objects
 * are written in order: jw_open / jw_close nest, every key is escaped, a
 * NaN number is written as null. Integral values are written without a
 * fraction, others with three decimals (the format docs/benchmarks.md
 * documents for bench/results/latest.json).
 */
#ifndef BENCH_JW_H
#define BENCH_JW_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/hist.h"

typedef struct jw {
    char *p;      /* owned; NUL-terminated */
    size_t n, cap;
    bool first;   /* no member written yet at this level */
} jw;

/* Starts an empty buffer (no "{": call jw_open(j, NULL) for the outer object). */
void jw_init(jw *j);
void jw_free(jw *j);

/* Appends preformatted text as is (the caller makes it valid JSON). */
__attribute__((format(printf, 2, 3))) void jw_raw(jw *j, const char *fmt, ...);
/* Appends n bytes as is. */
void jw_bytes(jw *j, const char *p, size_t n);

/* "key": (with the separating comma). */
void jw_key(jw *j, const char *key);
/* Opens an object: as the value of key, or an element/outer object (key NULL). */
void jw_open(jw *j, const char *key);
void jw_close(jw *j);
/* Opens and closes an array value (elements: jw_open(j, NULL) or jw_elem_*). */
void jw_open_array(jw *j, const char *key);
void jw_close_array(jw *j);

void jw_num(jw *j, const char *key, double v);
void jw_str(jw *j, const char *key, const char *s);
void jw_bool(jw *j, const char *key, bool v);

/* {"count","p50_us","p90_us","p99_us","p999_us","max_us","mean_us"} */
void jw_hist(jw *j, const char *key, const hist *h);

#endif
