#include "lib/jr.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

static const char *ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* At a '"' of validated text: just past the closing quote. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') p++;
        else if (*p == '"') return p + 1;
    }
    return end;
}

/* At the start of a validated value: just past its end. */
static const char *skip_value(const char *p, const char *end)
{
    if (*p == '"') return skip_string(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\t' &&
               *p != '\n' && *p != '\r')
            p++;
        return p;
    }
    int depth = 0;
    while (p < end) {
        if (*p == '"') {
            p = skip_string(p, end);
            continue;
        }
        if (*p == '{' || *p == '[') depth++;
        else if (*p == '}' || *p == ']') {
            if (--depth == 0) return p + 1;
        }
        p++;
    }
    return end;
}

static uint8_t type_of(char c)
{
    switch (c) {
    case '{': return JSON_OBJECT;
    case '[': return JSON_ARRAY;
    case '"': return JSON_STRING;
    case 't': return JSON_TRUE;
    case 'f': return JSON_FALSE;
    case 'n': return JSON_NULL;
    default: return JSON_NUMBER;
    }
}

/* Walks an object already known to be valid. */
static int walk(const char *s, size_t n,
                int (*fn)(void *, const char *, size_t, const char *, size_t, uint8_t), void *arg)
{
    const char *p = s, *end = s + n;
    p = ws(p, end);
    if (p >= end || *p != '{') return ERR_INVALID;
    p = ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *k = p + 1;
        p = skip_string(p, end);
        size_t kl = (size_t)(p - 1 - k);
        p = ws(p, end);
        if (p >= end || *p != ':') return ERR_INVALID;
        p = ws(p + 1, end);
        if (p >= end) return ERR_INVALID;
        const char *v = p;
        p = skip_value(p, end);
        int rc = fn(arg, k, kl, v, (size_t)(p - v), type_of(*v));
        if (rc) return rc;
        p = ws(p, end);
        if (p < end && *p == ',') p = ws(p + 1, end);
        else break;
    }
    return ERR_OK;
}

int jr_object_each(const char *s, size_t n,
                   int (*fn)(void *, const char *, size_t, const char *, size_t, uint8_t), void *arg)
{
    uint8_t t = 0;
    if (json_validate(s, n, &t) != ERR_OK || t != JSON_OBJECT) return ERR_INVALID;
    return walk(s, n, fn, arg);
}

typedef struct find {
    const char *key;
    size_t key_len;
    const char *val;
    size_t val_len;
    uint8_t type;
} find;

static int find_fn(void *arg, const char *k, size_t kl, const char *v, size_t vl, uint8_t t)
{
    find *f = arg;
    if (kl != f->key_len || memcmp(k, f->key, kl) != 0) return 0;
    f->val = v;
    f->val_len = vl;
    f->type = t;
    return 1;
}

int jr_get(const char *s, size_t n, const char *path, const char **val, size_t *val_len,
           uint8_t *type)
{
    uint8_t t = 0;
    if (json_validate(s, n, &t) != ERR_OK || t != JSON_OBJECT) return ERR_INVALID;
    const char *cur = s;
    size_t cur_n = n;
    for (int guard = 0; guard < JSON_MAX_DEPTH; guard++) {
        const char *dot = strchr(path, '.');
        find f = {.key = path, .key_len = dot ? (size_t)(dot - path) : strlen(path)};
        if (walk(cur, cur_n, find_fn, &f) != 1) return ERR_NOT_FOUND;
        if (!dot) {
            *val = f.val;
            *val_len = f.val_len;
            *type = f.type;
            return ERR_OK;
        }
        if (f.type != JSON_OBJECT) return ERR_NOT_FOUND;
        cur = f.val;
        cur_n = f.val_len;
        path = dot + 1;
    }
    return ERR_NOT_FOUND;
}

double jr_num(const char *s, size_t n, const char *path)
{
    const char *v;
    size_t vl;
    uint8_t t;
    if (jr_get(s, n, path, &v, &vl, &t) != ERR_OK || t != JSON_NUMBER || vl >= 64) return NAN;
    char tmp[64];
    memcpy(tmp, v, vl);
    tmp[vl] = 0;
    return strtod(tmp, NULL);
}

int jr_str(const char *s, size_t n, const char *path, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    uint8_t t;
    if (cap) out[0] = 0;
    int rc = jr_get(s, n, path, &v, &vl, &t);
    if (rc != ERR_OK) return rc;
    if (t != JSON_STRING) return ERR_INVALID;
    rc = json_unescape(v, vl, out, cap);
    if (rc < 0 && cap) out[0] = 0;
    return rc;
}
