/* jr: reads the load generator's own result files (bench/results, the
 * per-run JSON objects that `parley-bench summary` merges).
 *
 * codec/json.h indexes at most JSON_MAX_FIELDS top-level fields, and a run's
 * "figures" object has more (the storm records 32), so this walks objects
 * of any size: the text is validated first with json_validate() (strict
 * RFC 8259), then members are visited in order. Nothing is allocated or
 * copied: every slice points into the caller's text.
 */
#ifndef BENCH_JR_H
#define BENCH_JR_H

#include <stddef.h>
#include <stdint.h>

/* Calls fn(arg, key, key_len, val, val_len, type) for each member of the
 * object s[0..n) (key: raw bytes between the quotes; val: raw value text,
 * strings with their quotes; type: enum json_type). Stops when fn returns
 * non-zero, which is returned. ERR_INVALID if s is not one JSON object. */
int jr_object_each(const char *s, size_t n,
                   int (*fn)(void *arg, const char *key, size_t key_len, const char *val,
                             size_t val_len, uint8_t type),
                   void *arg);

/* The value at a dotted path ("figures.send_delivery.p99_us": each part a
 * key of the object before it) in the object s[0..n). ERR_OK with *val,
 * *val_len, *type set, ERR_NOT_FOUND, or ERR_INVALID (s is not an object). */
int jr_get(const char *s, size_t n, const char *path, const char **val, size_t *val_len,
           uint8_t *type);

/* The number at path; NAN when absent, null or not a number. */
double jr_num(const char *s, size_t n, const char *path);

/* The string at path, unescaped into out (cap bytes, NUL-terminated).
 * Returns its length or a negative code (ERR_NOT_FOUND, ERR_INVALID,
 * ERR_TOO_LARGE); out is "" on error. */
int jr_str(const char *s, size_t n, const char *path, char *out, size_t cap);

#endif
