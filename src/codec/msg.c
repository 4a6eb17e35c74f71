#include "codec/msg.h"

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
    if (r->type == MSG_INBOX) {
        if (json_get_u64(&o, "changed_since", &r->changed_since) == ERR_INVALID)
            return BAD("'changed_since' must be a cursor");
        return ERR_OK;
    }
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
