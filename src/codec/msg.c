#include "codec/msg.h"

#include <stdio.h>
#include <string.h>

#include "codec/json.h"

/* Refuses with err: its wire code from the error table, and message m. */
static int fail(const char **code, const char **message, int err, const char *m)
{
    *code = err_info_of(err)->code;
    *message = m;
    return err;
}

#define BAD(m) fail(code, message, ERR_INVALID, (m))

static void set_ref(msg_req *r, const json_field *f)
{
    if (f && (f->type == JSON_STRING || f->type == JSON_NUMBER) && f->val_len <= MSG_REF_MAX) {
        memcpy(r->ref, f->val, f->val_len);
        r->ref[f->val_len] = 0;
    }
}

static bool type_is(const json_field *t, const char *name)
{
    size_t n = strlen(name);
    return t->val_len == n + 2 && memcmp(t->val + 1, name, n) == 0;
}

int msg_check_body(const char *body, size_t len, size_t max_text, const char **message)
{
    if (!body || (len == 4 && memcmp(body, "null", 4) == 0)) {
        *message = "'body' is required";
        return ERR_INVALID;
    }
    if (len == 2 && memcmp(body, "\"\"", 2) == 0) {
        *message = "'body' must not be empty";
        return ERR_INVALID;
    }
    if (len > max_text) {
        *message = "message body too large";
        return ERR_TOO_LARGE;
    }
    return ERR_OK;
}

static int parse_send(const json_obj *o, size_t max_text, msg_req *r, const char **code,
                      const char **message)
{
    const json_field *cmid = json_get(o, "cmid");
    if (!cmid || cmid->type != JSON_STRING) return BAD("'cmid' must be a string");
    int n = json_unescape(cmid->val, cmid->val_len, r->cmid, sizeof r->cmid);
    if (n <= 0) return BAD("'cmid' must be 1-64 characters");
    r->cmid_len = (size_t)n;
    r->ref[0] = 0; /* from here on, the ref of a send is its (valid) cmid */
    set_ref(r, cmid);
    const json_field *body = json_get(o, "body");
    const char *why;
    int rc = msg_check_body(body ? body->val : NULL, body ? body->val_len : 0, max_text, &why);
    if (rc < 0) return fail(code, message, rc, why);
    r->body = body->val;
    r->body_len = body->val_len;
    return ERR_OK;
}

static int parse_sync(const json_obj *o, msg_req *r, const char **code, const char **message)
{
    int ra = json_get_u64(o, "after", &r->after);
    int rb = json_get_u64(o, "before", &r->before);
    int rl = json_get_u64(o, "limit", &r->limit);
    if (ra == ERR_INVALID || rb == ERR_INVALID || rl == ERR_INVALID ||
        (rl == ERR_OK && (r->limit == 0 || r->limit > MSG_LIMIT_MAX)) ||
        (rb == ERR_OK && r->before == 0))
        return BAD("'after' and 'before' must be seqs, 'limit' 1..500");
    if (ra == ERR_OK && rb == ERR_OK) return BAD("use 'after' or 'before', not both");
    if (rl != ERR_OK) r->limit = 50;
    if (ra != ERR_OK) r->after = 0;
    if (rb != ERR_OK) r->before = ra == ERR_OK ? 0 : UINT64_MAX; /* neither: the latest page */
    return ERR_OK;
}

/* One decimal field of a page token at s[*i..n), up to '.' or the end. */
static bool page_field(const char *s, size_t n, size_t *i, uint64_t *out)
{
    size_t start = *i;
    uint64_t v = 0;
    while (*i < n && s[*i] >= '0' && s[*i] <= '9') {
        unsigned d = (unsigned)(s[*i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
        (*i)++;
    }
    size_t len = *i - start;
    if (len == 0 || (len > 1 && s[start] == '0')) return false;
    *out = v;
    return true;
}

int msg_page_parse(const char *s, size_t n, msg_page *p)
{
    uint64_t f[4];
    bool neg = false;
    size_t i = 0;
    for (int k = 0; k < 4; k++) {
        if (k) {
            if (i >= n || s[i] != '.') return ERR_INVALID;
            i++;
        }
        if (k == 2 && i < n && s[i] == '-') { neg = true; i++; }
        if (!page_field(s, n, &i, &f[k])) return ERR_INVALID;
    }
    if (i != n || f[1] < f[0] || f[3] == 0) return ERR_INVALID;
    if (neg ? f[2] == 0 || f[2] > (uint64_t)INT64_MAX + 1 : f[2] > (uint64_t)INT64_MAX)
        return ERR_INVALID;
    p->since = f[0];
    p->snapshot = f[1];
    p->ts = neg ? (int64_t)(0 - f[2]) : (int64_t)f[2];
    p->conv = f[3];
    return ERR_OK;
}

size_t msg_page_format(const msg_page *p, char *out)
{
    int n = snprintf(out, MSG_PAGE_MAX, "%llu.%llu.%lld.%llu", (unsigned long long)p->since,
                     (unsigned long long)p->snapshot, (long long)p->ts,
                     (unsigned long long)p->conv);
    return n > 0 ? (size_t)n : 0;
}

static int parse_inbox(const json_obj *o, msg_req *r, const char **code, const char **message)
{
    int rs = json_get_u64(o, "changed_since", &r->changed_since);
    if (rs == ERR_INVALID) return BAD("'changed_since' must be a cursor");
    int rl = json_get_u64(o, "limit", &r->limit);
    if (rl == ERR_INVALID || (rl == ERR_OK && (r->limit == 0 || r->limit > MSG_INBOX_LIMIT_MAX)))
        return BAD("'limit' must be 1..1000");
    if (rl != ERR_OK) r->limit = MSG_INBOX_LIMIT_DEFAULT;
    const json_field *pg = json_get(o, "page");
    if (!pg) return ERR_OK;
    char tok[MSG_PAGE_MAX];
    int n = pg->type == JSON_STRING ? json_unescape(pg->val, pg->val_len, tok, sizeof tok) : -1;
    if (n <= 0 || msg_page_parse(tok, (size_t)n, &r->page) < 0)
        return BAD("'page' must be the 'next' of an earlier inbox page");
    if (rs == ERR_OK && r->changed_since != r->page.since)
        return BAD("'changed_since' differs from the walk of 'page'");
    r->has_page = true;
    r->changed_since = r->page.since;
    return ERR_OK;
}

int msg_parse(const char *data, size_t len, size_t max_text, msg_req *r, const char **code,
              const char **message)
{
    memset(r, 0, sizeof *r);
    json_obj o;
    int rc = json_parse_object(data, len, &o);
    if (rc < 0)
        return fail(code, message, ERR_BAD_JSON,
                    rc == ERR_TOO_LARGE ? "too deeply nested or too many fields"
                                        : "expected a JSON object");
    set_ref(r, json_get(&o, "id"));
    const json_field *t = json_get(&o, "type");
    if (!t || t->type != JSON_STRING) return BAD("missing string field 'type'");
    static const struct { const char *name; uint8_t type; } types[] = {
        {"send", MSG_SEND}, {"sync", MSG_SYNC}, {"delivered", MSG_DELIVERED},
        {"read", MSG_READ}, {"typing", MSG_TYPING}, {"inbox", MSG_INBOX},
        {"ping", MSG_PING}, {"echo", MSG_ECHO},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (type_is(t, types[i].name)) r->type = types[i].type;
    if (!r->type) return fail(code, message, ERR_UNKNOWN_TYPE, "unknown frame type");
    if (r->type == MSG_PING || r->type == MSG_ECHO) return ERR_OK;
    if (r->type == MSG_INBOX) return parse_inbox(&o, r, code, message);
    if (json_get_u64(&o, "conv", &r->conv) < 0 || r->conv == 0)
        return BAD("'conv' must be a conversation id");
    switch (r->type) {
    case MSG_SEND:
        return parse_send(&o, max_text, r, code, message);
    case MSG_SYNC:
        return parse_sync(&o, r, code, message);
    case MSG_DELIVERED:
    case MSG_READ:
        if (json_get_u64(&o, "seq", &r->seq) < 0) return BAD("'seq' must be a number");
        return ERR_OK;
    default: /* MSG_TYPING */
        return ERR_OK;
    }
}
