#include "codec/json.h"

#include <stdlib.h>
#include <string.h>


/* ---- parsing ------------------------------------------------------------- */

typedef struct pstate {
    const char *p, *end;
    int depth;
} pstate;

static void skip_ws(pstate *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* At the opening quote. Raw bytes >= 0x80 are not checked here: callers
 * hand in UTF-8-validated text (WebSocket text frames, checked HTTP bodies). */
static int parse_string(pstate *s)
{
    s->p++;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') { s->p++; return ERR_OK; }
        if (c < 0x20) return ERR_INVALID;
        if (c != '\\') { s->p++; continue; }
        if (s->end - s->p < 2) return ERR_INVALID;
        char e = s->p[1];
        if (e == 'u') {
            if (s->end - s->p < 6) return ERR_INVALID;
            for (int i = 2; i < 6; i++)
                if (hexval(s->p[i]) < 0) return ERR_INVALID;
            s->p += 6;
        } else if (strchr("\"\\/bfnrt", e) && e) {
            s->p += 2;
        } else {
            return ERR_INVALID;
        }
    }
    return ERR_INVALID;
}

static int parse_number(pstate *s)
{
    const char *p = s->p;
    if (p < s->end && *p == '-') p++;
    if (p >= s->end) return ERR_INVALID;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (p < s->end && *p >= '0' && *p <= '9') p++;
    else return ERR_INVALID;
    if (p < s->end && *p == '.') {
        p++;
        if (p >= s->end || *p < '0' || *p > '9') return ERR_INVALID;
        while (p < s->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < s->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < s->end && (*p == '+' || *p == '-')) p++;
        if (p >= s->end || *p < '0' || *p > '9') return ERR_INVALID;
        while (p < s->end && *p >= '0' && *p <= '9') p++;
    }
    s->p = p;
    return ERR_OK;
}

static int parse_lit(pstate *s, const char *lit, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0) return ERR_INVALID;
    s->p += n;
    return ERR_OK;
}

static int parse_value(pstate *s, uint8_t *type, json_obj *top);

/* Whether two raw keys name the same key once unescaped. */
static bool same_key(const char *a, size_t an, const char *b, size_t bn)
{
    if (an == bn && memcmp(a, b, an) == 0) return true;
    if (!memchr(a, '\\', an) && !memchr(b, '\\', bn)) return false;
    char qa[258], qb[258], ua[256], ub[256];
    if (an > 256 || bn > 256) return false; /* long escaped keys: compared raw */
    qa[0] = qb[0] = '"';
    memcpy(qa + 1, a, an);
    memcpy(qb + 1, b, bn);
    qa[an + 1] = qb[bn + 1] = '"';
    int na = json_unescape(qa, an + 2, ua, sizeof ua);
    int nb = json_unescape(qb, bn + 2, ub, sizeof ub);
    return na >= 0 && na == nb && memcmp(ua, ub, (size_t)na) == 0;
}

/* At '{' or '['. When top is set (the outermost object), fields are indexed. */
static int parse_container(pstate *s, bool object, json_obj *top)
{
    if (++s->depth > JSON_MAX_DEPTH) return ERR_TOO_LARGE;
    char close = object ? '}' : ']';
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == close) { s->p++; s->depth--; return ERR_OK; }
    for (;;) {
        json_field f = {0};
        if (object) {
            skip_ws(s);
            if (s->p >= s->end || *s->p != '"') return ERR_INVALID;
            const char *k = s->p + 1;
            int rc = parse_string(s);
            if (rc < 0) return rc;
            f.key = k;
            f.key_len = (size_t)(s->p - 1 - k);
            skip_ws(s);
            if (s->p >= s->end || *s->p != ':') return ERR_INVALID;
            s->p++;
        }
        skip_ws(s);
        f.val = s->p;
        int rc = parse_value(s, &f.type, NULL);
        if (rc < 0) return rc;
        f.val_len = (size_t)(s->p - f.val);
        if (top) {
            for (size_t i = 0; i < top->n; i++)
                if (same_key(top->f[i].key, top->f[i].key_len, f.key, f.key_len))
                    return ERR_INVALID; /* duplicate key, also when spelled with escapes */
            if (top->n == JSON_MAX_FIELDS) return ERR_TOO_LARGE;
            top->f[top->n++] = f;
        }
        skip_ws(s);
        if (s->p >= s->end) return ERR_INVALID;
        if (*s->p == ',') { s->p++; continue; }
        if (*s->p == close) { s->p++; s->depth--; return ERR_OK; }
        return ERR_INVALID;
    }
}

static int parse_value(pstate *s, uint8_t *type, json_obj *top)
{
    skip_ws(s);
    if (s->p >= s->end) return ERR_INVALID;
    switch (*s->p) {
    case '{': *type = JSON_OBJECT; return parse_container(s, true, top);
    case '[': *type = JSON_ARRAY; return parse_container(s, false, NULL);
    case '"': *type = JSON_STRING; return parse_string(s);
    case 't': *type = JSON_TRUE; return parse_lit(s, "true", 4);
    case 'f': *type = JSON_FALSE; return parse_lit(s, "false", 5);
    case 'n': *type = JSON_NULL; return parse_lit(s, "null", 4);
    default: *type = JSON_NUMBER; return parse_number(s);
    }
}

int json_validate(const char *str, size_t n, uint8_t *type)
{
    pstate s = {str, str + n, 0};
    uint8_t t = 0;
    int rc = parse_value(&s, &t, NULL);
    if (rc < 0) return rc;
    skip_ws(&s);
    if (s.p != s.end) return ERR_INVALID;
    if (type) *type = t;
    return ERR_OK;
}

int json_parse_object(const char *str, size_t n, json_obj *o)
{
    pstate s = {str, str + n, 0};
    o->n = 0;
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '{') return ERR_INVALID;
    int rc = parse_container(&s, true, o);
    if (rc < 0) return rc;
    skip_ws(&s);
    return s.p == s.end ? ERR_OK : ERR_INVALID;
}

const json_field *json_get(const json_obj *o, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < o->n; i++)
        if (o->f[i].key_len == n && memcmp(o->f[i].key, key, n) == 0) return &o->f[i];
    return NULL;
}

int json_get_u64(const json_obj *o, const char *key, uint64_t *out)
{
    const json_field *f = json_get(o, key);
    if (!f) return ERR_NOT_FOUND;
    if (f->type != JSON_NUMBER || f->val_len > 16) return ERR_INVALID;
    uint64_t v = 0;
    for (size_t i = 0; i < f->val_len; i++) {
        char c = f->val[i];
        if (c < '0' || c > '9') return ERR_INVALID; /* sign, fraction, exponent */
        v = v * 10 + (uint64_t)(c - '0');
    }
    if (v > (1ull << 53)) return ERR_INVALID;
    *out = v;
    return ERR_OK;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t hex4(const char *p)
{
    return (uint32_t)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

int json_unescape(const char *raw, size_t n, char *out, size_t cap)
{
    /* Validate first: raw may come from anywhere. */
    pstate v = {raw, raw + n, 0};
    if (n < 2 || raw[0] != '"' || parse_string(&v) < 0 || v.p != raw + n) return ERR_INVALID;
    if (cap == 0) return ERR_TOO_LARGE;
    const char *p = raw + 1, *end = raw + n - 1;
    size_t o = 0;
    while (p < end) {
        char tmp[4];
        size_t k;
        if (*p != '\\') {
            tmp[0] = *p++;
            k = 1;
        } else {
            char e = p[1];
            p += 2;
            switch (e) {
            case 'b': tmp[0] = '\b'; k = 1; break;
            case 'f': tmp[0] = '\f'; k = 1; break;
            case 'n': tmp[0] = '\n'; k = 1; break;
            case 'r': tmp[0] = '\r'; k = 1; break;
            case 't': tmp[0] = '\t'; k = 1; break;
            case 'u': {
                uint32_t cp = hex4(p);
                p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return ERR_INVALID;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return ERR_INVALID;
                    uint32_t lo = hex4(p + 2);
                    if (lo < 0xDC00 || lo > 0xDFFF) return ERR_INVALID;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
                if (cp == 0) return ERR_INVALID;
                k = put_utf8(tmp, cp);
                break;
            }
            default: tmp[0] = e; k = 1; break; /* " \ / */
            }
        }
        if (o + k >= cap) return ERR_TOO_LARGE;
        memcpy(out + o, tmp, k);
        o += k;
    }
    if (memchr(out, 0, o)) return ERR_INVALID;
    out[o] = 0;
    return (int)o;
}

int json_get_str(const json_obj *o, const char *key, char *out, size_t cap)
{
    const json_field *f = json_get(o, key);
    if (!f) return ERR_NOT_FOUND;
    if (f->type != JSON_STRING) return ERR_INVALID;
    return json_unescape(f->val, f->val_len, out, cap);
}

int json_array_each(const char *val, size_t n,
                    int (*fn)(void *arg, const char *v, size_t len, uint8_t type), void *arg)
{
    pstate s = {val, val + n, 0};
    skip_ws(&s);
    if (s.p >= s.end || *s.p != '[') return ERR_INVALID;
    s.p++;
    skip_ws(&s);
    if (s.p < s.end && *s.p == ']') return ERR_OK;
    for (;;) {
        skip_ws(&s);
        const char *v = s.p;
        uint8_t t;
        int rc = parse_value(&s, &t, NULL);
        if (rc < 0) return rc;
        if ((rc = fn(arg, v, (size_t)(s.p - v), t)) != 0) return rc;
        skip_ws(&s);
        if (s.p >= s.end) return ERR_INVALID;
        if (*s.p == ',') { s.p++; continue; }
        if (*s.p == ']') return ERR_OK;
        return ERR_INVALID;
    }
}

/* ---- building ------------------------------------------------------------ */

void jb_init(jbuf *j, size_t hint)
{
    j->err = 0;
    j->b = rbuf_new(hint < 64 ? 64 : hint);
    if (!j->b) j->err = ERR_NOMEM;
}

static char *reserve(jbuf *j, size_t n)
{
    if (j->err) return NULL;
    rbuf *b = j->b;
    if ((size_t)b->len + n > b->cap) {
        size_t cap = (size_t)b->cap * 2;
        while (cap < (size_t)b->len + n) cap *= 2;
        if (cap > UINT32_MAX - sizeof(rbuf)) { j->err = ERR_TOO_LARGE; return NULL; }
        rbuf *nb = realloc(b, sizeof(rbuf) + cap);
        if (!nb) { j->err = ERR_NOMEM; return NULL; }
        nb->cap = (uint32_t)cap;
        j->b = b = nb;
    }
    char *p = (char *)b->data + b->len;
    b->len += (uint32_t)n;
    return p;
}

void jb_raw(jbuf *j, const void *p, size_t n)
{
    char *d = reserve(j, n);
    if (d && n) memcpy(d, p, n);
}

void jb_lit(jbuf *j, const char *s) { jb_raw(j, s, strlen(s)); }

void jb_str(jbuf *j, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *d = reserve(j, n + 2);
    if (!d) return;
    /* Fast path: nothing to escape. */
    size_t i = 0;
    while (i < n && (unsigned char)s[i] >= 0x20 && s[i] != '"' && s[i] != '\\') i++;
    d[0] = '"';
    memcpy(d + 1, s, i);
    d[i + 1] = '"';
    if (i == n) return;
    j->b->len -= (uint32_t)(n - i + 1); /* keep the clean prefix, redo the rest */
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t k = 0;
        if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; k = 2; }
        else if (c == '\n') { esc[0] = '\\'; esc[1] = 'n'; k = 2; }
        else if (c == '\r') { esc[0] = '\\'; esc[1] = 'r'; k = 2; }
        else if (c == '\t') { esc[0] = '\\'; esc[1] = 't'; k = 2; }
        else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        } else { esc[0] = (char)c; k = 1; }
        jb_raw(j, esc, k);
    }
    jb_raw(j, "\"", 1);
}

void jb_cstr(jbuf *j, const char *s) { jb_str(j, s, strlen(s)); }

void jb_u64(jbuf *j, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do { tmp[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    jb_raw(j, tmp + i, (size_t)(24 - i));
}

void jb_i64(jbuf *j, int64_t v)
{
    if (v < 0) { jb_raw(j, "-", 1); jb_u64(j, (uint64_t)0 - (uint64_t)v); }
    else jb_u64(j, (uint64_t)v);
}

const char *jb_data(const jbuf *j, size_t *len)
{
    if (j->err) return NULL;
    *len = j->b->len;
    return (const char *)j->b->data;
}

size_t jb_len(const jbuf *j) { return j->err || !j->b ? 0 : j->b->len; }

void jb_truncate(jbuf *j, size_t len)
{
    if (!j->err && j->b && len < j->b->len) j->b->len = (uint32_t)len;
}

rbuf *jb_take(jbuf *j)
{
    if (j->err) { jb_free(j); return NULL; }
    rbuf *b = j->b;
    j->b = NULL;
    return b;
}

void jb_free(jbuf *j)
{
    rbuf_unref(j->b);
    j->b = NULL;
}
