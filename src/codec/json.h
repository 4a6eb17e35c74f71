/* json: parley's message codec. A pure, allocation-free JSON (RFC 8259)
 * validator that indexes the top-level fields of an object, and a builder
 * that writes JSON straight into a shared buffer (rbuf).
 *
 * Parsing: json_parse_object() validates the whole text strictly (nesting up
 * to a depth limit) and records, for each top-level key, the raw bytes of
 * its value. Values stay in the caller's buffer: a message body is stored
 * and forwarded byte for byte as the client sent it. Getters convert on
 * demand. Duplicate top-level keys are refused.
 *
 * Building: jbuf grows an rbuf holding only the JSON text; jb_take() hands
 * it over. Encode once, send the same rbuf to every recipient: each
 * transport writes its own framing header ahead of it (no transport bytes
 * are inside the buffer).
 */
#ifndef PARLEY_JSON_H
#define PARLEY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "base/rbuf.h"

#define JSON_MAX_FIELDS 24  /* top-level fields of one object */
#define JSON_MAX_DEPTH 32   /* nesting of objects and arrays */

enum json_type {
    JSON_NULL = 1, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
};

typedef struct json_field {
    const char *key;    /* raw key bytes between the quotes */
    size_t key_len;
    const char *val;    /* raw value text (strings include their quotes) */
    size_t val_len;
    uint8_t type;       /* enum json_type */
} json_field;

typedef struct json_obj {
    json_field f[JSON_MAX_FIELDS];
    size_t n;
} json_obj;

/* Validates s[0..n) as one JSON object (surrounding whitespace allowed) and
 * indexes its top-level fields into *o. Returns ERR_OK, ERR_INVALID (not
 * JSON, not an object, a duplicate key: compared unescaped, so "a" and
 * "\u0061" are the same key) or ERR_TOO_LARGE (more than
 * JSON_MAX_FIELDS fields or deeper than JSON_MAX_DEPTH). s is not copied:
 * *o points into it. */
int json_parse_object(const char *s, size_t n, json_obj *o);

/* Validates s[0..n) as any one JSON value; *type gets its type. */
int json_validate(const char *s, size_t n, uint8_t *type);

/* The field named key (plain ASCII, compared to the raw key), or NULL. */
const json_field *json_get(const json_obj *o, const char *key);

/* A non-negative integer without fraction or exponent that fits in 53 bits
 * (exact in every JSON implementation). ERR_NOT_FOUND if absent,
 * ERR_INVALID otherwise. */
int json_get_u64(const json_obj *o, const char *key, uint64_t *out);

/* A string field, unescaped into out (cap bytes incl. NUL). Returns its
 * length, ERR_NOT_FOUND, ERR_INVALID (not a string, or an escape producing
 * NUL or an unpaired surrogate) or ERR_TOO_LARGE. */
int json_get_str(const json_obj *o, const char *key, char *out, size_t cap);

/* Unescapes a raw JSON string value (with its quotes) as json_get_str;
 * raw is validated first (ERR_INVALID if it is not exactly one string). */
int json_unescape(const char *raw, size_t n, char *out, size_t cap);

/* Calls fn for each element of a raw JSON array value (as validated), with
 * the element's raw text and type. Stops when fn returns non-zero (which is
 * returned). ERR_INVALID if val is not an array. */
int json_array_each(const char *val, size_t n,
                    int (*fn)(void *arg, const char *v, size_t len, uint8_t type), void *arg);

/* ---- building ----------------------------------------------------------- */

typedef struct jbuf {
    rbuf *b;     /* owned until jb_take()/jb_free() */
    int err;     /* sticky: the first failure */
} jbuf;

/* Starts an empty buffer with room for about `hint` bytes. */
void jb_init(jbuf *j, size_t hint);
void jb_raw(jbuf *j, const void *p, size_t n);
void jb_lit(jbuf *j, const char *s);                  /* a C string, as is */
void jb_str(jbuf *j, const char *s, size_t n);        /* a quoted, escaped string */
void jb_cstr(jbuf *j, const char *s);                 /* jb_str of a C string */
void jb_u64(jbuf *j, uint64_t v);
void jb_i64(jbuf *j, int64_t v);
/* The JSON so far (not NUL-terminated) and its length; valid until the
 * next call on j. NULL after an error. */
const char *jb_data(const jbuf *j, size_t *len);
/* The length so far (0 after an error). */
size_t jb_len(const jbuf *j);
/* Cuts the text back to its first len bytes (a mark taken with jb_len), to
 * drop what was written since; len beyond the text is ignored. */
void jb_truncate(jbuf *j, size_t len);
/* Hands over the JSON text as an rbuf (one reference, the caller's). NULL
 * after an error; j is empty afterwards either way. */
rbuf *jb_take(jbuf *j);
void jb_free(jbuf *j);

#endif
