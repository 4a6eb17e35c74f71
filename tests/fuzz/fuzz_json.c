/* libFuzzer driver for the message codec (src/json.c). tests/fuzz/replay.c
 * supplies main() for corpus replay without libFuzzer.
 *
 * The input goes through json_validate() and json_parse_object(), and both
 * are compared with a small reference validator written here from RFC 8259.
 * When the object parses, every indexed field is checked: its key and value
 * spans lie inside the input, the value's type matches its first byte, the
 * raw value re-validates with the same type, json_get() finds it, strings
 * unescape consistently into a small and a big buffer (and survive a
 * jb_str() round trip), numbers agree with a reference u64 reading, and
 * arrays iterate into elements that validate. The fields are rebuilt into a
 * new object with the builder and parsed back. Finally the input itself is
 * encoded with jb_str(), which must give valid JSON that unescapes back to
 * the input, taken with jb_take() and framed as a transport frames it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "base/rbuf.h"
#include "codec/utf8.h"
#include "codec/ws.h"

#define REQUIRE(c) do { \
    if (!(c)) { \
        fprintf(stderr, "fuzz_json: invariant failed: %s (%s:%d)\n", #c, \
                __FILE__, __LINE__); \
        abort(); \
    } } while (0)

/* ---- reference validator ----------------------------------------------- */

#define REF_KEYS 64

typedef struct ref {
    const uint8_t *p, *e;
    int depth;
    bool too_deep;
    /* the top-level object's raw keys (the first REF_KEYS of them) */
    const uint8_t *key[REF_KEYS];
    size_t key_len[REF_KEYS];
    size_t nkeys;
} ref;

static void ref_ws(ref *r)
{
    while (r->p < r->e && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static bool ref_value(ref *r, uint8_t *t);

static bool ref_digits(ref *r)
{
    const uint8_t *s = r->p;
    while (r->p < r->e && *r->p >= '0' && *r->p <= '9') r->p++;
    return r->p > s;
}

static bool ref_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool ref_string(ref *r)
{
    r->p++;
    for (;;) {
        if (r->p >= r->e) return false;
        uint8_t c = *r->p++;
        if (c == '"') return true;
        if (c < 0x20) return false;
        if (c != '\\') continue;
        if (r->p >= r->e) return false;
        c = *r->p++;
        if (c == 'u') {
            for (int i = 0; i < 4; i++) {
                if (r->p >= r->e || !ref_hex(*r->p)) return false;
                r->p++;
            }
        } else if (c != '"' && c != '\\' && c != '/' && c != 'b' && c != 'f' && c != 'n' &&
                   c != 'r' && c != 't') {
            return false;
        }
    }
}

static bool ref_number(ref *r)
{
    if (r->p < r->e && *r->p == '-') r->p++;
    if (r->p >= r->e) return false;
    if (*r->p == '0') r->p++;
    else if (*r->p >= '1' && *r->p <= '9') ref_digits(r);
    else return false;
    if (r->p < r->e && *r->p == '.') { r->p++; if (!ref_digits(r)) return false; }
    if (r->p < r->e && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->e && (*r->p == '+' || *r->p == '-')) r->p++;
        if (!ref_digits(r)) return false;
    }
    return true;
}

static bool ref_word(ref *r, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(r->e - r->p) < n || memcmp(r->p, w, n) != 0) return false;
    r->p += n;
    return true;
}

static bool ref_container(ref *r, bool obj)
{
    if (++r->depth > JSON_MAX_DEPTH) { r->too_deep = true; return false; }
    r->p++;
    ref_ws(r);
    uint8_t close = obj ? '}' : ']';
    if (r->p < r->e && *r->p == close) { r->p++; r->depth--; return true; }
    for (;;) {
        uint8_t t;
        ref_ws(r);
        if (obj) {
            const uint8_t *k = r->p + 1;
            if (r->p >= r->e || *r->p != '"' || !ref_string(r)) return false;
            if (r->depth == 1) {
                if (r->nkeys < REF_KEYS) {
                    r->key[r->nkeys] = k;
                    r->key_len[r->nkeys] = (size_t)(r->p - 1 - k);
                }
                r->nkeys++;
            }
            ref_ws(r);
            if (r->p >= r->e || *r->p++ != ':') return false;
        }
        if (!ref_value(r, &t)) return false;
        ref_ws(r);
        if (r->p >= r->e) return false;
        uint8_t c = *r->p++;
        if (c == close) { r->depth--; return true; }
        if (c != ',') return false;
    }
}

static bool ref_value(ref *r, uint8_t *t)
{
    ref_ws(r);
    if (r->p >= r->e) return false;
    switch (*r->p) {
    case '{': *t = JSON_OBJECT; return ref_container(r, true);
    case '[': *t = JSON_ARRAY; return ref_container(r, false);
    case '"': *t = JSON_STRING; return ref_string(r);
    case 't': *t = JSON_TRUE; return ref_word(r, "true");
    case 'f': *t = JSON_FALSE; return ref_word(r, "false");
    case 'n': *t = JSON_NULL; return ref_word(r, "null");
    default: *t = JSON_NUMBER; return ref_number(r);
    }
}

static int ref_validate(ref *rr, const uint8_t *s, size_t n, uint8_t *t)
{
    ref r = { .p = s, .e = s + n };
    bool ok = ref_value(&r, t);
    *rr = r;
    if (r.too_deep) return ERR_TOO_LARGE;
    if (!ok) return ERR_INVALID;
    ref_ws(&r);
    return r.p == r.e ? ERR_OK : ERR_INVALID;
}

/* ---- helpers --------------------------------------------------------------- */

static uint8_t type_of_first(char c)
{
    switch (c) {
    case '{': return JSON_OBJECT;
    case '[': return JSON_ARRAY;
    case '"': return JSON_STRING;
    case 't': return JSON_TRUE;
    case 'f': return JSON_FALSE;
    case 'n': return JSON_NULL;
    default: return (c == '-' || (c >= '0' && c <= '9')) ? JSON_NUMBER : 0;
    }
}

static bool inside(const char *p, size_t n, const char *base, size_t len)
{
    return p >= base && p <= base + len && n <= (size_t)(base + len - p);
}

typedef struct elems {
    const char *base;
    size_t len;
    int calls, stop_at;
} elems;

static int elem_fn(void *arg, const char *v, size_t len, uint8_t type)
{
    elems *e = arg;
    REQUIRE(inside(v, len, e->base, e->len));
    REQUIRE(len > 0);
    uint8_t t = 0;
    REQUIRE(json_validate(v, len, &t) == ERR_OK);
    REQUIRE(t == type);
    REQUIRE(type_of_first(v[0]) == type);
    e->calls++;
    return e->calls == e->stop_at ? 12345 : 0;
}

/* Unescapes a raw string value into a small and an exact-bound buffer and
 * checks they agree. Returns the big result. */
static int check_unescape(const char *raw, size_t n)
{
    char small[8];
    char *big = malloc(n); /* unescaping never grows: n - 2 bytes + NUL */
    REQUIRE(big);
    int rb = json_unescape(raw, n, big, n);
    REQUIRE(rb >= 0 || rb == ERR_INVALID);
    int rs = json_unescape(raw, n, small, sizeof small);
    if (rb >= 0) {
        REQUIRE((size_t)rb <= n - 2);
        REQUIRE(big[rb] == 0);
        REQUIRE(memchr(big, 0, (size_t)rb) == NULL);
        if (utf8_valid((const uint8_t *)raw, n))
            REQUIRE(utf8_valid((const uint8_t *)big, (size_t)rb));
        if (rb < (int)sizeof small) {
            REQUIRE(rs == rb);
            REQUIRE(memcmp(small, big, (size_t)rb + 1) == 0);
        } else {
            REQUIRE(rs == ERR_TOO_LARGE);
        }
        /* jb_str of the text gives a string that unescapes to the same. */
        jbuf j;
        jb_init(&j, 0);
        jb_str(&j, big, (size_t)rb);
        size_t jl = 0;
        const char *jd = jb_data(&j, &jl);
        REQUIRE(jd);
        uint8_t t = 0;
        REQUIRE(json_validate(jd, jl, &t) == ERR_OK && t == JSON_STRING);
        char *back = malloc((size_t)rb + 1);
        REQUIRE(json_unescape(jd, jl, back, (size_t)rb + 1) == rb);
        REQUIRE(memcmp(back, big, (size_t)rb) == 0);
        free(back);
        jb_free(&j);
    } else {
        REQUIRE(rs == ERR_INVALID || rs == ERR_TOO_LARGE);
    }
    free(big);
    return rb;
}

/* The u64 rule, independently: digits only, no leading zero, <= 2^53. */
static bool ref_u64(const char *v, size_t n, uint64_t *out)
{
    if (n == 0 || n > 16) return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') return false;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (x > (1ull << 53)) return false;
    *out = x;
    return true;
}

static void check_object(const char *s, size_t n, const json_obj *o)
{
    REQUIRE(o->n <= JSON_MAX_FIELDS);
    for (size_t i = 0; i < o->n; i++) {
        const json_field *f = &o->f[i];
        REQUIRE(inside(f->key, f->key_len, s, n));
        REQUIRE(f->key > s && f->key[-1] == '"');
        REQUIRE(f->key + f->key_len < s + n && f->key[f->key_len] == '"');
        REQUIRE(inside(f->val, f->val_len, s, n));
        REQUIRE(f->val_len > 0);
        REQUIRE(f->val > f->key + f->key_len);
        if (i) REQUIRE(f->key > o->f[i - 1].val + o->f[i - 1].val_len);
        REQUIRE(f->type == type_of_first(f->val[0]));
        uint8_t t = 0;
        REQUIRE(json_validate(f->val, f->val_len, &t) == ERR_OK);
        REQUIRE(t == f->type);
        for (size_t k = 0; k < i; k++)
            REQUIRE(o->f[k].key_len != f->key_len ||
                    memcmp(o->f[k].key, f->key, f->key_len) != 0);

        /* The key unescapes like any string. */
        check_unescape(f->key - 1, f->key_len + 2);

        /* json_get finds it by its raw key (raw keys hold no NUL). */
        char *key = malloc(f->key_len + 1);
        memcpy(key, f->key, f->key_len);
        key[f->key_len] = 0;
        REQUIRE(strlen(key) == f->key_len);
        REQUIRE(json_get(o, key) == f);

        uint64_t u = 0, ru = 0;
        int rc = json_get_u64(o, key, &u);
        bool want = f->type == JSON_NUMBER && ref_u64(f->val, f->val_len, &ru);
        REQUIRE(want ? rc == ERR_OK && u == ru : rc == ERR_INVALID);

        if (f->type == JSON_STRING) {
            int rb = check_unescape(f->val, f->val_len);
            char *out = malloc(f->val_len);
            REQUIRE(json_get_str(o, key, out, f->val_len) == rb);
            free(out);
        } else {
            char out[4];
            REQUIRE(json_get_str(o, key, out, sizeof out) == ERR_INVALID);
        }

        elems e = { f->val, f->val_len, 0, 0 };
        if (f->type == JSON_ARRAY) {
            REQUIRE(json_array_each(f->val, f->val_len, elem_fn, &e) == ERR_OK);
            int total = e.calls;
            if (total > 0) {
                e.calls = 0;
                e.stop_at = total;
                REQUIRE(json_array_each(f->val, f->val_len, elem_fn, &e) == 12345);
                REQUIRE(e.calls == total);
            }
        } else {
            REQUIRE(json_array_each(f->val, f->val_len, elem_fn, &e) == ERR_INVALID);
            REQUIRE(e.calls == 0);
        }
        free(key);
    }

    /* Rebuild the fields with the builder and parse them back. */
    jbuf j;
    jb_init(&j, n);
    jb_lit(&j, "{");
    for (size_t i = 0; i < o->n; i++) {
        if (i) jb_lit(&j, ",");
        jb_raw(&j, "\"", 1);
        jb_raw(&j, o->f[i].key, o->f[i].key_len);
        jb_raw(&j, "\":", 2);
        jb_raw(&j, o->f[i].val, o->f[i].val_len);
    }
    jb_lit(&j, "}");
    size_t rl = 0;
    const char *rd = jb_data(&j, &rl);
    REQUIRE(rd);
    json_obj o2;
    REQUIRE(json_parse_object(rd, rl, &o2) == ERR_OK);
    REQUIRE(o2.n == o->n);
    for (size_t i = 0; i < o->n; i++) {
        REQUIRE(o2.f[i].key_len == o->f[i].key_len);
        REQUIRE(memcmp(o2.f[i].key, o->f[i].key, o->f[i].key_len) == 0);
        REQUIRE(o2.f[i].val_len == o->f[i].val_len);
        REQUIRE(memcmp(o2.f[i].val, o->f[i].val, o->f[i].val_len) == 0);
        REQUIRE(o2.f[i].type == o->f[i].type);
    }
    jb_free(&j);
}

/* An independent unescaper for keys (raw bytes between the quotes, already
 * validated): -1 for an escape that cannot be decoded (unpaired surrogate,
 * NUL), else the decoded length. */
static int kref_hex(const uint8_t *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int c = p[i], d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

static int ref_unescape(const uint8_t *k, size_t n, uint8_t *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        if (k[i] != 0x5c) { if (o >= cap) return -1; out[o++] = k[i++]; continue; }
        uint8_t e = k[i + 1];
        i += 2;
        if (e != 'u') {
            uint8_t c = e == 'b' ? 8 : e == 'f' ? 12 : e == 'n' ? 10 : e == 'r' ? 13 : e == 't' ? 9 : e;
            if (o >= cap) return -1;
            out[o++] = c;
            continue;
        }
        int hi = kref_hex(k + i);
        i += 4;
        if (hi < 0 || (hi >= 0xDC00 && hi <= 0xDFFF) || hi == 0) return -1;
        cp = (uint32_t)hi;
        if (hi >= 0xD800 && hi <= 0xDBFF) {
            if (i + 6 > n || k[i] != '\\' || k[i + 1] != 'u') return -1;
            int lo = kref_hex(k + i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF) return -1;
            cp = 0x10000 + (((uint32_t)hi - 0xD800) << 10) + ((uint32_t)lo - 0xDC00);
            i += 6;
        }
        if (o + 4 > cap) return -1;
        if (cp < 0x80) out[o++] = (uint8_t)cp;
        else if (cp < 0x800) { out[o++] = (uint8_t)(0xC0 | cp >> 6); out[o++] = (uint8_t)(0x80 | (cp & 63)); }
        else if (cp < 0x10000) {
            out[o++] = (uint8_t)(0xE0 | cp >> 12); out[o++] = (uint8_t)(0x80 | ((cp >> 6) & 63));
            out[o++] = (uint8_t)(0x80 | (cp & 63));
        } else {
            out[o++] = (uint8_t)(0xF0 | cp >> 18); out[o++] = (uint8_t)(0x80 | ((cp >> 12) & 63));
            out[o++] = (uint8_t)(0x80 | ((cp >> 6) & 63)); out[o++] = (uint8_t)(0x80 | (cp & 63));
        }
    }
    return (int)o;
}

static bool ref_same_key(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    if (an == bn && memcmp(a, b, an) == 0) return true;
    if (an > 256 || bn > 256) return false;
    if (!memchr(a, '\\', an) && !memchr(b, '\\', bn)) return false;
    uint8_t ua[1024], ub[1024];
    int na = ref_unescape(a, an, ua, sizeof ua), nb = ref_unescape(b, bn, ub, sizeof ub);
    return na >= 0 && na == nb && memcmp(ua, ub, (size_t)na) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy, so over-reads are caught. */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);

    uint8_t t = 0, rt = 0;
    int rv = json_validate(s, size, &t);
    ref r;
    int want = ref_validate(&r, data, size, &rt);
    REQUIRE(rv == want);
    if (rv == ERR_OK) REQUIRE(t == rt);

    json_obj o;
    int rc = json_parse_object(s, size, &o);
    REQUIRE(rc == ERR_OK || rc == ERR_INVALID || rc == ERR_TOO_LARGE);
    if (rv == ERR_OK && t == JSON_OBJECT) {
        /* A valid object is refused only for its top-level rules, taken
         * field by field: a duplicate key (raw-equal, or equal once
         * unescaped when both are at most 256 raw bytes), or one field too
         * many. */
        int expect = ERR_OK;
        bool either = false;
        for (size_t i = 0; i < r.nkeys && i < REF_KEYS && expect == ERR_OK; i++) {
            bool dup = false;
            for (size_t k = 0; k < i; k++)
                dup |= ref_same_key(r.key[k], r.key_len[k], r.key[i], r.key_len[i]);
            if (i >= JSON_MAX_FIELDS) { expect = ERR_TOO_LARGE; either = dup; }
            else if (dup) expect = ERR_INVALID;
        }
        if (r.nkeys > REF_KEYS && expect == ERR_OK) expect = ERR_TOO_LARGE;
        REQUIRE(rc == expect || (either && rc == ERR_INVALID));
        if (rc == ERR_OK) {
            REQUIRE(o.n == r.nkeys);
            for (size_t i = 0; i < o.n; i++)
                REQUIRE(o.f[i].key == (const char *)s + (r.key[i] - data) &&
                        o.f[i].key_len == r.key_len[i]);
            check_object(s, size, &o);
        }
    } else if (rv == ERR_OK) {
        REQUIRE(rc == ERR_INVALID);   /* valid JSON, not an object */
    } else {
        REQUIRE(rc == ERR_INVALID || rc == ERR_TOO_LARGE); /* not JSON */
    }

    /* A top-level string value unescapes consistently. */
    if (rv == ERR_OK && t == JSON_STRING) {
        size_t a = 0, b = size;
        while (s[a] != '"') a++;
        while (s[b - 1] != '"') b--;
        check_unescape(s + a, b - a);
    }
    if (rv == ERR_OK && t == JSON_ARRAY) {
        elems e = { s, size, 0, 0 };
        REQUIRE(json_array_each(s, size, elem_fn, &e) == ERR_OK);
    }

    /* The builder: any bytes make a valid JSON string (the parser does not
     * look at UTF-8, but valid UTF-8 is the contract), which unescapes back
     * unless it holds a NUL, which json_unescape refuses. */
    jbuf j;
    jb_init(&j, size / 2);
    jb_str(&j, s, size);
    size_t jl = 0;
    const char *jd = jb_data(&j, &jl);
    REQUIRE(jd);
    REQUIRE(jl >= size + 2);
    for (size_t i = 0; i < jl; i++) REQUIRE((uint8_t)jd[i] >= 0x20);
    int jv = json_validate(jd, jl, &t);
    if (utf8_valid(data, size)) REQUIRE(jv == ERR_OK && t == JSON_STRING);
    if (jv == ERR_OK) {
        char *back = malloc(size + 1);
        int ru = json_unescape(jd, jl, back, size + 1);
        if (memchr(s, 0, size)) {
            REQUIRE(ru == ERR_INVALID);
        } else {
            REQUIRE(ru == (int)size);
            REQUIRE(memcmp(back, s, size) == 0);
        }
        free(back);
    }
    char *copy = malloc(jl);
    memcpy(copy, jd, jl);
    rbuf *pl = jb_take(&j);            /* jd is gone now */
    REQUIRE(pl && pl->len == jl && pl->refs == 1);
    REQUIRE(j.b == NULL);
    rbuf *fr = rbuf_new(WS_MAX_HEADER + jl);
    REQUIRE(fr);
    fr->len = (uint32_t)ws_frame_header(fr->data, WS_OP_TEXT, true, jl, NULL);
    memcpy(fr->data + fr->len, pl->data, jl);
    fr->len += (uint32_t)jl;
    rbuf_unref(pl);
    REQUIRE(fr->len >= jl + 2);
    ws_frame f;
    uint16_t code = 0;
    ws_limits lim = { .max_message = SIZE_MAX };
    REQUIRE(ws_parse_frame(fr->data, fr->len, WS_CLIENT, &lim, &f, &code) == (int)fr->len);
    REQUIRE(f.fin && f.opcode == WS_OP_TEXT && !f.masked && f.len == jl);
    REQUIRE(memcmp(f.payload, copy, jl) == 0);
    rbuf_unref(fr);
    free(copy);

    free(s);
    return 0;
}
