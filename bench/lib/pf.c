#include "lib/pf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *raw;         /* the type's JSON string, with quotes */
    uint8_t type;
} TYPES[] = {
    {"\"msg\"", PF_MSG},         {"\"ack\"", PF_ACK},         {"\"echo\"", PF_ECHO},
    {"\"send\"", PF_SEND},       {"\"presence\"", PF_PRESENCE}, {"\"receipt\"", PF_RECEIPT},
    {"\"inbox\"", PF_INBOX},     {"\"history\"", PF_HISTORY}, {"\"error\"", PF_ERROR},
    {"\"hello\"", PF_HELLO},     {"\"conv\"", PF_CONV},       {"\"pong\"", PF_PONG},
};

int pf_parse(const char *p, size_t n, pf_frame *f)
{
    f->type = PF_OTHER;
    if (json_parse_object(p, n, &f->o) != ERR_OK) return ERR_INVALID;
    const json_field *t = json_get(&f->o, "type");
    if (!t || t->type != JSON_STRING) return ERR_INVALID;
    for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) {
        size_t l = strlen(TYPES[i].raw);
        if (t->val_len == l && memcmp(t->val, TYPES[i].raw, l) == 0) {
            f->type = TYPES[i].type;
            break;
        }
    }
    return ERR_OK;
}

uint64_t pf_u64(const pf_frame *f, const char *key, uint64_t dflt)
{
    uint64_t v;
    return json_get_u64(&f->o, key, &v) == ERR_OK ? v : dflt;
}

bool pf_true(const pf_frame *f, const char *key)
{
    const json_field *v = json_get(&f->o, key);
    return v && v->type == JSON_TRUE;
}

int pf_str(const pf_frame *f, const char *key, char *out, size_t cap)
{
    int rc = json_get_str(&f->o, key, out, cap);
    if (rc < 0 && cap) out[0] = 0;
    return rc;
}

/* Decimal digits at p (bounded by end); -1 when there are none. */
static int64_t digits(const char **pp, const char *end)
{
    const char *p = *pp;
    int64_t v = 0;
    int n = 0;
    while (p < end && *p >= '0' && *p <= '9' && n < 19) {
        v = v * 10 + (*p - '0');
        p++;
        n++;
    }
    *pp = p;
    return n ? v : -1;
}

int64_t pf_cmid_time(const pf_frame *f)
{
    char cm[80];
    if (pf_str(f, "cmid", cm, sizeof cm) < 0) return -1;
    const char *dot = strchr(cm, '.');
    if (!dot) return -1;
    const char *p = dot + 1;
    return digits(&p, cm + strlen(cm));
}

int64_t pf_body_time(const pf_frame *f, uint64_t *k, uint32_t *m)
{
    /* The body is the generator's own plain string: the numbers are read
     * from the raw value (after its opening quote), without copying it. */
    const json_field *b = json_get(&f->o, "body");
    if (!b || b->type != JSON_STRING) return -1;
    const char *p = b->val + 1, *end = b->val + b->val_len - 1;
    int64_t t = digits(&p, end);
    if (t < 0 || p >= end || *p++ != ' ') return -1;
    int64_t kk = digits(&p, end);
    if (kk < 0 || p >= end || *p++ != ' ') return -1;
    int64_t mm = digits(&p, end);
    if (mm < 0) return -1;
    if (k) *k = (uint64_t)kk;
    if (m) *m = (uint32_t)mm;
    return t;
}

size_t pf_send(char *out, size_t cap, uint64_t conv, uint64_t k, int64_t t, uint32_t m,
               int body_bytes)
{
    if (body_bytes > 16000) body_bytes = 16000;
    char head[96];
    int hl = snprintf(head, sizeof head, "%" PRId64 " %" PRIu64 " %u ", t, k, m);
    int pad = body_bytes - hl > 0 ? body_bytes - hl : 0;
    int n = snprintf(out, cap,
                     "{\"type\":\"send\",\"conv\":%" PRIu64 ",\"cmid\":\"%" PRIu64 ".%" PRId64
                     "\",\"body\":\"%s",
                     conv ? conv : 1, k, t, head);
    if (n < 0 || (size_t)n + (size_t)pad + 3 > cap) return 0;
    memset(out + n, 'x', (size_t)pad);
    n += pad;
    memcpy(out + n, "\"}", 3);
    return (size_t)n + 2;
}

static size_t ndigits(uint64_t v)
{
    size_t n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

size_t pf_send_payload(uint64_t k, int64_t t, uint32_t m, int body_bytes)
{
    if (t < 0) return 0;
    if (body_bytes > 16000) body_bytes = 16000;
    size_t tk = ndigits((uint64_t)t) + ndigits(k);
    size_t head = tk + ndigits(m) + 3; /* "<t> <k> <m> " */
    size_t body = (size_t)(body_bytes > 0 ? body_bytes : 0);
    return tk + 1 + (head > body ? head : body); /* cmid "<k>.<t>" */
}

size_t pf_echo(char *out, size_t cap, size_t n)
{
    static const char head[] = "{\"type\":\"echo\",\"d\":\"";
    if (n < sizeof head + 1 || cap <= n) return 0;
    memcpy(out, head, sizeof head - 1);
    memset(out + sizeof head - 1, 'x', n - (sizeof head - 1) - 2);
    out[n - 2] = '"';
    out[n - 1] = '}';
    out[n] = 0;
    return n;
}
