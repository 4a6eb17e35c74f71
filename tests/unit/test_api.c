/* Unit tests of the REST API (src/chat/api.c): routing, answers and error
 * answers (status, wire code, headers), with bad input on every route. A
 * real conn on a loopback listener of a loop without listeners
 * (fixture.h) runs the router, which hands /v1/ to api_handle(); the chat
 * service underneath is the real one on a temporary LMDB store. */
#include "test.h"

#include "chat/api.h"
#include "fixture.h"
#include "wire.h"

static fx f;
static int port;
static wire *w;   /* one keep-alive connection for most requests */

/* Sends a request on w (reconnecting if the server closed it). */
static wire_resp api(const char *method, const char *path, const char *token, const char *body)
{
    wire_resp r;
    char extra[256] = "";
    if (token) snprintf(extra, sizeof extra, "%s", wire_bearer(token));
    if (body) strncat(extra, "Content-Type: application/json\r\n", sizeof extra - strlen(extra) - 1);
    if (!w) w = wire_connect(port);
    if (!wire_http(w, method, path, extra, body, &r)) {
        wire_close(w);
        w = wire_connect(port);
        if (!wire_http(w, method, path, extra, body, &r)) fx_fatal("no response");
    }
    if (r.status >= 400 && wire_header(&r, "Connection") &&
        strcasecmp(wire_header(&r, "Connection"), "close") == 0) {
        wire_close(w);
        w = NULL;
    }
    return r;
}

static bool code_is(const wire_resp *r, const char *code)
{
    json_obj o, e;
    char v[64];
    const json_field *fl;
    return json_parse_object(r->body, r->body_len, &o) == ERR_OK &&
           (fl = json_get(&o, "error")) && fl->type == JSON_OBJECT &&
           json_parse_object(fl->val, fl->val_len, &e) == ERR_OK &&
           json_get_str(&e, "code", v, sizeof v) >= 0 && strcmp(v, code) == 0;
}

/* status and error code in one check, with the body shown when wrong. */
static bool refused(wire_resp r, int status, const char *code)
{
    bool ok = r.status == status && code_is(&r, code);
    if (!ok) fprintf(stderr, "  got %d %s (want %d %s)\n", r.status, r.body, status, code);
    wire_resp_free(&r);
    return ok;
}

static bool str_of(const wire_resp *r, const char *key, char *out, size_t cap)
{
    json_obj o;
    return json_parse_object(r->body, r->body_len, &o) == ERR_OK &&
           json_get_str(&o, key, out, cap) >= 0;
}

static uint64_t u64_of(const wire_resp *r, const char *key)
{
    json_obj o;
    uint64_t v = 0;
    if (json_parse_object(r->body, r->body_len, &o) < 0 || json_get_u64(&o, key, &v) < 0)
        return UINT64_MAX;
    return v;
}

static bool has_true(const wire_resp *r, const char *key)
{
    json_obj o;
    const json_field *fl;
    return json_parse_object(r->body, r->body_len, &o) == ERR_OK && (fl = json_get(&o, key)) &&
           fl->type == JSON_TRUE;
}

typedef struct account {
    char name[40];
    char token[64];
} account;

static account make_user(const char *name)
{
    account a;
    memset(&a, 0, sizeof a);
    snprintf(a.name, sizeof a.name, "%s", name);
    char body[160];
    snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"password1\"}", name);
    wire_resp r = api("POST", "/v1/users", NULL, body);
    if (r.status != 201 || !str_of(&r, "token", a.token, sizeof a.token)) fx_fatal("register");
    wire_resp_free(&r);
    return a;
}

static uint64_t make_direct(const account *a, const char *with, int *status)
{
    char body[160];
    snprintf(body, sizeof body, "{\"type\":\"direct\",\"with\":\"%s\"}", with);
    wire_resp r = api("POST", "/v1/conversations", a->token, body);
    *status = r.status;
    uint64_t id = u64_of(&r, "id");
    wire_resp_free(&r);
    return id;
}

/* ---- accounts ------------------------------------------------------------------ */

TEST(register_and_login)
{
    wire_resp r = api("POST", "/v1/users", NULL, "{\"username\":\"Alice\",\"password\":\"password1\"}");
    CHECK_EQ_INT(r.status, 201);
    char v[64];
    CHECK(str_of(&r, "user", v, sizeof v) && strcmp(v, "alice") == 0);  /* normalised */
    CHECK(str_of(&r, "token", v, sizeof v) && strlen(v) == AUTH_TOKEN_LEN);
    CHECK_EQ_INT(u64_of(&r, "device"), 1);
    CHECK(u64_of(&r, "expires") != UINT64_MAX);
    CHECK(strncmp(wire_header(&r, "Content-Type"), "application/json", 16) == 0);
    wire_resp_free(&r);
    CHECK(refused(api("POST", "/v1/users", NULL, "{\"username\":\"alice\",\"password\":\"password2\"}"),
                  409, "username_taken"));

    r = api("POST", "/v1/sessions", NULL, "{\"username\":\"ALICE\",\"password\":\"password1\"}");
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(u64_of(&r, "device"), 2);
    char token[64] = "";
    CHECK(str_of(&r, "token", token, sizeof token));
    wire_resp_free(&r);
    r = api("GET", "/v1/conversations", token, NULL);
    CHECK_EQ_INT(r.status, 200);
    wire_resp_free(&r);
    CHECK(refused(api("POST", "/v1/sessions", NULL, "{\"username\":\"alice\",\"password\":\"wrong-one\"}"),
                  401, "bad_credentials"));
    /* An unknown user answers as a wrong password does. */
    CHECK(refused(api("POST", "/v1/sessions", NULL, "{\"username\":\"nobody\",\"password\":\"password1\"}"),
                  401, "bad_credentials"));
    CHECK(refused(api("POST", "/v1/sessions", NULL, "{\"username\":\"x\",\"password\":\"p\"}"),
                  401, "bad_credentials"));

    /* Logout: 204, then the token is dead; the other device's is not. */
    r = api("DELETE", "/v1/sessions/current", token, NULL);
    CHECK_EQ_INT(r.status, 204);
    CHECK_EQ_INT(r.body_len, 0);
    wire_resp_free(&r);
    r = api("GET", "/v1/conversations", token, NULL);
    CHECK_EQ_INT(r.status, 401);
    CHECK(code_is(&r, "unauthorized"));
    CHECK(wire_header(&r, "WWW-Authenticate") && strcmp(wire_header(&r, "WWW-Authenticate"), "Bearer") == 0);
    wire_resp_free(&r);
    CHECK(refused(api("DELETE", "/v1/sessions/current", NULL, NULL), 401, "unauthorized"));
}

TEST(account_bad_input)
{
    const char *bodies[] = {
        "", "nope", "[1,2]", "{\"username\":\"bob\"", "\"string\"",
        "{\"username\":\"bob\",\"username\":\"bob\",\"password\":\"password1\"}",  /* duplicate key */
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
        CHECK(refused(api("POST", "/v1/users", NULL, bodies[i]), 400, "bad_json"));
    CHECK(refused(api("POST", "/v1/users", NULL, "{\"username\":\"b\xff\xfe\",\"password\":\"password1\"}"),
                  400, "bad_json"));                                    /* not UTF-8 */
    CHECK(refused(api("POST", "/v1/users", NULL, "{\"username\":\"bob\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/users", NULL, "{\"password\":\"password1\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/users", NULL, "{\"username\":7,\"password\":\"password1\"}"),
                  400, "bad_request"));
    const char *names[] = {"ab", "-bob", "bob smith", "b\\u00f6b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"password1\"}", names[i]);
        CHECK(refused(api("POST", "/v1/users", NULL, body), 400, "bad_username"));
    }
    CHECK(refused(api("POST", "/v1/users", NULL, "{\"username\":\"bob\",\"password\":\"short\"}"),
                  400, "bad_password"));
    CHECK(refused(api("POST", "/v1/sessions", NULL, "{}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/sessions", NULL, "{"), 400, "bad_json"));
    /* Nothing was created. */
    CHECK(refused(api("POST", "/v1/sessions", NULL, "{\"username\":\"bob\",\"password\":\"password1\"}"),
                  401, "bad_credentials"));
}

TEST(methods_and_unknown_paths)
{
    account a = make_user("meth");
    struct { const char *method, *path, *allow; } cases[] = {
        {"GET", "/v1/users", "POST"},
        {"PUT", "/v1/sessions", "POST"},
        {"GET", "/v1/sessions/current", "DELETE"},
        {"DELETE", "/v1/conversations", "GET, POST"},
        {"POST", "/v1/conversations/1", "GET"},
        {"PATCH", "/v1/conversations/1/messages", "GET, POST"},
        {"GET", "/v1/conversations/1/members", "POST"},
        {"GET", "/v1/conversations/1/members/bob", "DELETE"},
        {"POST", "/v1/conversations/1/receipts", "GET"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wire_resp r = api(cases[i].method, cases[i].path, a.token, NULL);
        CHECK_EQ_INT(r.status, 405);
        CHECK(code_is(&r, "method_not_allowed"));
        const char *allow = wire_header(&r, "Allow");
        if (!allow || strcmp(allow, cases[i].allow) != 0)
            fprintf(stderr, "  %s %s: Allow %s\n", cases[i].method, cases[i].path, allow ? allow : "-");
        CHECK(allow && strcmp(allow, cases[i].allow) == 0);
        wire_resp_free(&r);
    }
    const char *unknown[] = {
        "/v1/", "/v1/nope", "/v1/users/alice", "/v1/conversations/0", "/v1/conversations/abc",
        "/v1/conversations/1x", "/v1/conversations/01", "/v1/conversations/1/bogus",
        "/v1/conversations/1/members/", "/v1/conversations/1/members/a/b", "/v1/sessions/other",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        wire_resp r = api("GET", unknown[i], a.token, NULL);
        if (r.status != 404) fprintf(stderr, "  %s -> %d\n", unknown[i], r.status);
        CHECK(refused(r, 404, "not_found"));
    }
    /* Not under /v1/: not the API's (the router's static files answer). */
    wire_resp r = api("GET", "/v1", a.token, NULL);
    CHECK_EQ_INT(r.status, 404);
    wire_resp_free(&r);
}

TEST(authentication_is_required)
{
    const char *paths[] = {
        "/v1/conversations", "/v1/conversations/1", "/v1/conversations/1/messages",
        "/v1/conversations/1/receipts",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        CHECK(refused(api("GET", paths[i], NULL, NULL), 401, "unauthorized"));
        CHECK(refused(api("GET", paths[i], "not-a-token", NULL), 401, "unauthorized"));
        CHECK(refused(api("GET", paths[i], "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL),
                      401, "unauthorized"));
    }
    wire_resp r = api("GET", "/v1/conversations", NULL, NULL);
    CHECK(wire_header(&r, "WWW-Authenticate") != NULL);
    wire_resp_free(&r);
    /* "Bearer" is required, case-insensitively. */
    account a = make_user("authy");
    char extra[128];
    wire *x = wire_connect(port);
    snprintf(extra, sizeof extra, "Authorization: bearer %s\r\n", a.token);
    CHECK(wire_http(x, "GET", "/v1/conversations", extra, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    wire_resp_free(&r);
    snprintf(extra, sizeof extra, "Authorization: Basic %s\r\n", a.token);
    CHECK(wire_http(x, "GET", "/v1/conversations", extra, NULL, &r));
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    wire_close(x);
}

/* ---- conversations ------------------------------------------------------------------- */

TEST(conversations)
{
    account a = make_user("carl"), b = make_user("dora"), c = make_user("emil");
    int st;
    uint64_t d = make_direct(&a, "dora", &st);
    CHECK_EQ_INT(st, 201);
    CHECK(d > 0 && d != UINT64_MAX);
    CHECK_EQ_INT(make_direct(&b, "CARL", &st), d);          /* the same one, from the other side */
    CHECK_EQ_INT(st, 200);
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":\"direct\",\"with\":\"carl\"}"),
                  400, "bad_request"));                      /* oneself */
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":\"direct\",\"with\":\"nobody\"}"),
                  404, "user_not_found"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":\"direct\",\"with\":\"!!\"}"),
                  404, "user_not_found"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":\"direct\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":\"channel\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"with\":\"dora\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":3}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "nope"), 400, "bad_json"));

    wire_resp r = api("POST", "/v1/conversations", a.token,
                      "{\"type\":\"group\",\"name\":\"team\",\"members\":[\"dora\",\"emil\"]}");
    CHECK_EQ_INT(r.status, 201);
    uint64_t g = u64_of(&r, "id");
    CHECK(strstr(r.body, "\"type\":\"group\"") && strstr(r.body, "\"admins\":[\"carl\"]"));
    wire_resp_free(&r);
    CHECK(refused(api("POST", "/v1/conversations", a.token,
                      "{\"type\":\"group\",\"name\":\"t\",\"members\":\"dora\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token,
                      "{\"type\":\"group\",\"name\":\"t\",\"members\":[1]}"), 400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token,
                      "{\"type\":\"group\",\"name\":\"t\",\"members\":[\"ghost\"]}"), 404, "user_not_found"));
    CHECK(refused(api("POST", "/v1/conversations", a.token, "{\"type\":\"group\",\"name\":\"\"}"),
                  400, "bad_request"));
    CHECK(refused(api("POST", "/v1/conversations", a.token,
                      "{\"type\":\"group\",\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}"),
                  400, "bad_request"));                      /* 65 bytes */

    /* The inbox, and reading one conversation. */
    r = api("GET", "/v1/conversations", a.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    uint64_t cursor = u64_of(&r, "cursor");
    CHECK(cursor != UINT64_MAX);
    CHECK(strstr(r.body, "\"name\":\"team\"") != NULL);
    wire_resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/conversations?changed_since=%llu", (unsigned long long)cursor);
    r = api("GET", path, a.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "\"conversations\":[]") != NULL);
    wire_resp_free(&r);
    CHECK(refused(api("GET", "/v1/conversations?changed_since=abc", a.token, NULL), 400, "bad_request"));
    CHECK(refused(api("GET", "/v1/conversations?changed_since=-1", a.token, NULL), 400, "bad_request"));
    CHECK(refused(api("GET", "/v1/conversations?changed_since=", a.token, NULL), 400, "bad_request"));
    snprintf(path, sizeof path, "/v1/conversations/%llu", (unsigned long long)g);
    r = api("GET", path, c.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(u64_of(&r, "id"), g);
    wire_resp_free(&r);
    snprintf(path, sizeof path, "/v1/conversations/%llu", (unsigned long long)d);
    CHECK(refused(api("GET", path, c.token, NULL), 403, "forbidden"));  /* not emil's */
    CHECK(refused(api("GET", "/v1/conversations/99999", a.token, NULL), 403, "forbidden"));
}

TEST(messages)
{
    account a = make_user("fred"), b = make_user("gina"), c = make_user("hugo");
    int st;
    uint64_t d = make_direct(&a, "gina", &st);
    char path[128];
    snprintf(path, sizeof path, "/v1/conversations/%llu/messages", (unsigned long long)d);
    wire_resp r = api("POST", path, a.token, "{\"cmid\":\"c1\",\"body\":{\"text\":\"hi\"}}");
    CHECK_EQ_INT(r.status, 201);
    CHECK_EQ_INT(u64_of(&r, "seq"), 1);
    uint64_t ts = u64_of(&r, "ts");
    wire_resp_free(&r);
    /* The same cmid with another body is refused (cmid_reused), nothing stored. */
    CHECK(refused(api("POST", path, a.token, "{\"cmid\":\"c1\",\"body\":\"changed\"}"), 409,
                  "cmid_reused"));
    r = api("POST", path, a.token, "{\"cmid\":\"c1\",\"body\":{\"text\":\"hi\"}}");  /* a resend */
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(u64_of(&r, "seq"), 1);
    CHECK_EQ_INT(u64_of(&r, "ts"), ts);
    CHECK(has_true(&r, "duplicate"));
    wire_resp_free(&r);
    r = api("POST", path, b.token, "{\"cmid\":\"c1\",\"body\":[1, 2]}");
    CHECK_EQ_INT(r.status, 201);
    CHECK_EQ_INT(u64_of(&r, "seq"), 2);
    wire_resp_free(&r);
    /* Bad sends. */
    CHECK(refused(api("POST", path, a.token, "{\"body\":1}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token, "{\"cmid\":\"\",\"body\":1}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token, "{\"cmid\":5,\"body\":1}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token,
                      "{\"cmid\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"body\":1}"),
                  400, "bad_request"));                      /* 65 characters */
    CHECK(refused(api("POST", path, a.token, "{\"cmid\":\"c9\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token, "{\"cmid\":\"c9\",\"body\":null}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token, "{\"cmid\":\"c9\",\"body\":1"), 400, "bad_json"));
    static char big[20000];
    int n = snprintf(big, sizeof big, "{\"cmid\":\"big\",\"body\":\"");
    memset(big + n, 'x', f.cfg.max_text + 1);
    snprintf(big + n + f.cfg.max_text + 1, sizeof big - (size_t)n - f.cfg.max_text - 1, "\"}");
    CHECK(refused(api("POST", path, a.token, big), 413, "too_large"));
    CHECK(refused(api("POST", path, c.token, "{\"cmid\":\"c9\",\"body\":1}"), 403, "forbidden"));
    CHECK(refused(api("POST", "/v1/conversations/99999/messages", a.token, "{\"cmid\":\"c9\",\"body\":1}"),
                  403, "forbidden"));

    /* History. */
    r = api("GET", path, b.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "\"body\":{\"text\":\"hi\"}") != NULL);          /* byte for byte */
    CHECK(strstr(r.body, "\"body\":[1, 2]") != NULL);
    CHECK(strstr(r.body, "\"more\":false") != NULL);
    wire_resp_free(&r);
    char q[192];
    snprintf(q, sizeof q, "%s?after=1&limit=1", path);
    r = api("GET", q, a.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "\"seq\":2") && !strstr(r.body, "\"seq\":1,"));
    wire_resp_free(&r);
    snprintf(q, sizeof q, "%s?before=2", path);
    r = api("GET", q, a.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "\"seq\":1,") && !strstr(r.body, "\"seq\":2"));
    wire_resp_free(&r);
    const char *bad[] = {"?after=1&before=2", "?limit=0", "?limit=501", "?before=0", "?after=x",
                         "?after=-1", "?limit="};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(q, sizeof q, "%s%s", path, bad[i]);
        wire_resp e = api("GET", q, a.token, NULL);
        if (e.status != 400) fprintf(stderr, "  %s -> %d\n", bad[i], e.status);
        CHECK(refused(e, 400, "bad_request"));
    }
    CHECK(refused(api("GET", path, c.token, NULL), 403, "forbidden"));

    /* Receipts. */
    snprintf(q, sizeof q, "/v1/conversations/%llu/receipts", (unsigned long long)d);
    r = api("GET", q, a.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "\"members\":[") != NULL);
    wire_resp_free(&r);
    snprintf(q, sizeof q, "/v1/conversations/%llu/receipts?seq=2", (unsigned long long)d);
    r = api("GET", q, a.token, NULL);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(u64_of(&r, "seq"), 2);
    CHECK_EQ_INT(u64_of(&r, "read"), 0);                    /* gina sent it; fred has read 1 */
    CHECK_EQ_INT(u64_of(&r, "delivered"), 0);
    wire_resp_free(&r);
    snprintf(q, sizeof q, "/v1/conversations/%llu/receipts?seq=99", (unsigned long long)d);
    CHECK(refused(api("GET", q, a.token, NULL), 400, "bad_request"));  /* beyond last_seq */
    snprintf(q, sizeof q, "/v1/conversations/%llu/receipts?seq=two", (unsigned long long)d);
    CHECK(refused(api("GET", q, a.token, NULL), 400, "bad_request"));
    snprintf(q, sizeof q, "/v1/conversations/%llu/receipts", (unsigned long long)d);
    CHECK(refused(api("GET", q, c.token, NULL), 403, "forbidden"));
}

TEST(members)
{
    account a = make_user("ivan"), b = make_user("jane"), c = make_user("karl");
    (void)c;
    wire_resp r = api("POST", "/v1/conversations", a.token,
                      "{\"type\":\"group\",\"name\":\"club\",\"members\":[\"jane\"]}");
    uint64_t g = u64_of(&r, "id");
    wire_resp_free(&r);
    char path[128];
    snprintf(path, sizeof path, "/v1/conversations/%llu/members", (unsigned long long)g);
    CHECK(refused(api("POST", path, b.token, "{\"user\":\"karl\"}"), 403, "forbidden")); /* not admin */
    r = api("POST", path, a.token, "{\"user\":\"KARL\"}");
    CHECK_EQ_INT(r.status, 200);
    CHECK(strstr(r.body, "\"karl\"") != NULL);
    wire_resp_free(&r);
    CHECK(refused(api("POST", path, a.token, "{\"user\":\"karl\"}"), 409, "already_member"));
    CHECK(refused(api("POST", path, a.token, "{\"user\":\"ghost\"}"), 404, "user_not_found"));
    CHECK(refused(api("POST", path, a.token, "{\"name\":\"karl\"}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token, "{\"user\":[\"karl\"]}"), 400, "bad_request"));
    CHECK(refused(api("POST", path, a.token, "karl"), 400, "bad_json"));
    int st;
    uint64_t d = make_direct(&a, "jane", &st);
    char dpath[128];
    snprintf(dpath, sizeof dpath, "/v1/conversations/%llu/members", (unsigned long long)d);
    CHECK(refused(api("POST", dpath, a.token, "{\"user\":\"karl\"}"), 400, "bad_request")); /* direct */

    char del[160];
    snprintf(del, sizeof del, "%s/karl", path);
    CHECK(refused(api("DELETE", del, b.token, NULL), 403, "forbidden"));
    r = api("DELETE", del, a.token, NULL);
    CHECK_EQ_INT(r.status, 204);
    wire_resp_free(&r);
    CHECK(refused(api("DELETE", del, a.token, NULL), 404, "not_member"));
    snprintf(del, sizeof del, "%s/ghost", path);
    CHECK(refused(api("DELETE", del, a.token, NULL), 404, "not_member"));
    CHECK(refused(api("DELETE", del, c.token, NULL), 403, "forbidden"));   /* karl is out now */
    snprintf(del, sizeof del, "%s/%%zz", path);
    CHECK(refused(api("DELETE", del, a.token, NULL), 404, "not_member"));
    snprintf(del, sizeof del, "%s/j%%61ne", path);                        /* percent-encoded */
    r = api("DELETE", del, b.token, NULL);                                 /* leaving */
    CHECK_EQ_INT(r.status, 204);
    wire_resp_free(&r);
    snprintf(del, sizeof del, "/v1/conversations/%llu", (unsigned long long)g);
    CHECK(refused(api("GET", del, b.token, NULL), 403, "forbidden"));
}

TEST(keep_alive_and_close)
{
    wire *x = wire_connect(port);
    wire_resp r;
    for (int i = 0; i < 3; i++) {
        CHECK(wire_http(x, "GET", "/v1/nothing", NULL, NULL, &r));
        CHECK_EQ_INT(r.status, 404);
        wire_resp_free(&r);
    }
    CHECK(wire_http(x, "GET", "/v1/nothing", "Connection: close\r\n", NULL, &r));
    CHECK_EQ_INT(r.status, 404);
    CHECK(wire_header(&r, "Connection") && strcasecmp(wire_header(&r, "Connection"), "close") == 0);
    wire_resp_free(&r);
    CHECK(!wire_read_resp(x, false, &r));                   /* closed after the answer */
    wire_resp_free(&r);
    wire_close(x);
}

TEST(rate_limits)
{
    fx g;
    fx_config(&g, 1);
    g.cfg.rate_logins = 1;        /* burst 4 */
    g.cfg.rate_user_msgs = 1;     /* burst 4 */
    fx_start(&g, true);
    int p = fx_listen(&g, 0);
    wire *x = wire_connect(p);
    wire_resp r;
    int limited = 0;
    for (int i = 0; i < 12 && !limited; i++) {
        CHECK(wire_http(x, "POST", "/v1/sessions", NULL, "{}", &r));
        if (r.status == 429) {
            limited = 1;
            CHECK(code_is(&r, "rate_limited"));
            CHECK(wire_header(&r, "Retry-After") != NULL);
            CHECK(strstr(r.body, "\"retry_after_ms\":") != NULL);
        } else {
            CHECK_EQ_INT(r.status, 400);
        }
        wire_resp_free(&r);
    }
    CHECK(limited);
    wire_close(x);
    fx_stop(&g);

    /* Failed logins delay the account: the fourth try waits. */
    fx_config(&g, 1);
    fx_start(&g, true);
    p = fx_listen(&g, 0);
    x = wire_connect(p);
    CHECK(wire_http(x, "POST", "/v1/users", NULL, "{\"username\":\"lena\",\"password\":\"password1\"}", &r));
    CHECK_EQ_INT(r.status, 201);
    wire_resp_free(&r);
    for (int i = 0; i < 3; i++) {
        CHECK(wire_http(x, "POST", "/v1/sessions", NULL, "{\"username\":\"lena\",\"password\":\"wrong-pass\"}", &r));
        CHECK_EQ_INT(r.status, 401);
        wire_resp_free(&r);
    }
    CHECK(wire_http(x, "POST", "/v1/sessions", NULL, "{\"username\":\"lena\",\"password\":\"password1\"}", &r));
    CHECK_EQ_INT(r.status, 429);
    CHECK(code_is(&r, "rate_limited"));
    CHECK(wire_header(&r, "Retry-After") != NULL);
    wire_resp_free(&r);
    wire_close(x);
    fx_stop(&g);
}

int main(void)
{
    if (auth_init() < 0 || api_init() < 0) fx_fatal("api_init");
    fx_config(&f, 2);
    f.cfg.rate_logins = 0;        /* every request here comes from 127.0.0.1 */
    f.cfg.rate_user_msgs = 0;
    fx_start(&f, true);
    port = fx_listen(&f, 0);
    RUN(register_and_login);
    RUN(account_bad_input);
    RUN(methods_and_unknown_paths);
    RUN(authentication_is_required);
    RUN(conversations);
    RUN(messages);
    RUN(members);
    RUN(keep_alive_and_close);
    RUN(rate_limits);
    wire_close(w);
    fx_stop(&f);
    return test_summary("api");
}
