/* Unit tests of the router (src/chat/router.c): /healthz, /metrics, the
 * WebSocket endpoint's refusals, 405s and static files with their path
 * refusals. The router runs as the HTTP handler of a real conn on a
 * loopback listener added to a loop without listeners (fixture.h); the
 * requests are written by hand (wire.h). */
#include "test.h"

#include "fixture.h"
#include "wire.h"

static fx f;
static int port;
static char outside[64];   /* a directory beside the web root */

/* {"error":{"code":C,...}} */
static bool error_is(const wire_resp *r, const char *code)
{
    json_obj o, e;
    char v[64];
    const json_field *fl;
    return json_parse_object(r->body, r->body_len, &o) == ERR_OK &&
           (fl = json_get(&o, "error")) && fl->type == JSON_OBJECT &&
           json_parse_object(fl->val, fl->val_len, &e) == ERR_OK &&
           json_get_str(&e, "code", v, sizeof v) >= 0 && strcmp(v, code) == 0;
}

static bool header_is(const wire_resp *r, const char *name, const char *want)
{
    const char *v = wire_header(r, name);
    return v && strcmp(v, want) == 0;
}

TEST(healthz_page)
{
    wire *w = wire_connect(port);
    wire_resp r;
    CHECK(wire_http(w, "GET", "/healthz", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(strcmp(r.body, "{\"status\":\"ok\"}") == 0);
    CHECK(header_is(&r, "Content-Type", "application/json"));
    CHECK(header_is(&r, "Cache-Control", "no-store"));
    wire_resp_free(&r);
    /* HEAD: the same head, no body; the connection stays usable. */
    CHECK(wire_http(w, "HEAD", "/healthz", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Length", "15"));
    CHECK_EQ_INT(r.body_len, 0);
    wire_resp_free(&r);
    CHECK(wire_http(w, "GET", "/healthz?verbose=1", NULL, NULL, &r));  /* a query changes nothing */
    CHECK_EQ_INT(r.status, 200);
    wire_resp_free(&r);
    /* Another method: not the health check (it falls to the static files). */
    CHECK(wire_http(w, "POST", "/healthz", NULL, "{}", &r));
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_is(&r, "Allow", "GET, HEAD"));
    CHECK(error_is(&r, "method_not_allowed"));
    wire_resp_free(&r);
    wire_close(w);
}

TEST(metrics_page)
{
    wire_resp r;
    CHECK(wire_http1(port, "GET", "/metrics", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    const char *ct = wire_header(&r, "Content-Type");
    CHECK(ct && strncmp(ct, "text/plain; version=0.0.4", 25) == 0);
    CHECK(strstr(r.body, "# TYPE parley_http_requests_total counter") != NULL);
    CHECK(strstr(r.body, "\nparley_commit_batches_total ") != NULL);   /* the writer's, too */
    CHECK(strstr(r.body, "parley_commit_seconds_total{phase=\"commit\"}") != NULL);
    CHECK(header_is(&r, "Cache-Control", "no-store"));
    wire_resp_free(&r);
    CHECK(wire_http1(port, "HEAD", "/metrics", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body_len, 0);
    wire_resp_free(&r);
    CHECK(wire_http1(port, "PUT", "/metrics", NULL, "x", &r));
    CHECK_EQ_INT(r.status, 405);
    wire_resp_free(&r);
}

TEST(websocket_endpoint_refusals)
{
    wire_resp r;
    CHECK(wire_http1(port, "POST", "/v1/ws", NULL, "", &r));
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_is(&r, "Allow", "GET"));
    CHECK(error_is(&r, "method_not_allowed"));
    wire_resp_free(&r);
    CHECK(wire_http1(port, "HEAD", "/v1/ws", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 405);
    wire_resp_free(&r);
    /* A plain GET: this endpoint speaks WebSocket. */
    CHECK(wire_http1(port, "GET", "/v1/ws", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 426);
    CHECK(header_is(&r, "Upgrade", "websocket"));
    CHECK(error_is(&r, "upgrade_required"));
    wire_resp_free(&r);
    /* An upgrade without a key. */
    CHECK(wire_http1(port, "GET", "/v1/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 13\r\n", NULL, &r));
    CHECK_EQ_INT(r.status, 400);
    CHECK(error_is(&r, "bad_handshake"));
    wire_resp_free(&r);
    /* Another protocol version. */
    CHECK(wire_http1(port, "GET", "/v1/ws", "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                     NULL, &r));
    CHECK_EQ_INT(r.status, 426);
    CHECK(header_is(&r, "Sec-WebSocket-Version", "13"));
    CHECK(error_is(&r, "bad_version"));
    wire_resp_free(&r);
    /* A good handshake without a token: the router passes it on, proto answers. */
    CHECK(wire_ws(port, NULL, NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    CHECK(error_is(&r, "unauthorized"));
    wire_resp_free(&r);
}

TEST(origins)
{
    fx g;
    fx_config(&g, 1);
    snprintf(g.cfg.allowed_origins, sizeof g.cfg.allowed_origins,
             " https://chat.example , http://localhost:8080");
    fx_start(&g, true);
    int p = fx_listen(&g, 0);
    wire_resp r;
    CHECK(wire_ws(p, NULL, "Origin: https://evil.example\r\n", &r) == NULL);
    CHECK_EQ_INT(r.status, 403);
    CHECK(error_is(&r, "forbidden_origin"));
    wire_resp_free(&r);
    /* Listed (spaces trimmed, case-insensitive), or none (not a browser):
     * on to authentication. */
    CHECK(wire_ws(p, NULL, "Origin: HTTPS://chat.example\r\n", &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    CHECK(wire_ws(p, NULL, "Origin: http://localhost:8080\r\n", &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    CHECK(wire_ws(p, NULL, NULL, &r) == NULL);
    CHECK_EQ_INT(r.status, 401);
    wire_resp_free(&r);
    CHECK(wire_ws(p, NULL, "Origin: https://chat.example.evil\r\n", &r) == NULL);
    CHECK_EQ_INT(r.status, 403);
    wire_resp_free(&r);
    fx_stop(&g);
}

TEST(static_files)
{
    wire *w = wire_connect(port);
    wire_resp r;
    CHECK(wire_http(w, "GET", "/", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(strcmp(r.body, "<h1>parley</h1>\n") == 0);
    CHECK(header_is(&r, "Content-Type", "text/html; charset=utf-8"));
    CHECK(header_is(&r, "X-Content-Type-Options", "nosniff"));
    char etag[64] = "";
    const char *e = wire_header(&r, "ETag");
    CHECK(e && e[0] == '"');
    if (e) snprintf(etag, sizeof etag, "%s", e);
    wire_resp_free(&r);
    CHECK(wire_http(w, "GET", "/index.html", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "ETag", etag));
    wire_resp_free(&r);
    /* Revalidation: 304, no body, the representation's length. */
    char inm[128];
    snprintf(inm, sizeof inm, "If-None-Match: %s\r\n", etag);
    CHECK(wire_http(w, "GET", "/", inm, NULL, &r));
    CHECK_EQ_INT(r.status, 304);
    CHECK_EQ_INT(r.body_len, 0);
    CHECK(header_is(&r, "Content-Length", "16"));
    wire_resp_free(&r);
    CHECK(wire_http(w, "GET", "/", "If-None-Match: \"stale\"\r\n", NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    wire_resp_free(&r);
    CHECK(wire_http(w, "HEAD", "/app.js", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    CHECK(header_is(&r, "Content-Type", "text/javascript; charset=utf-8"));
    CHECK(header_is(&r, "Content-Length", "12"));
    CHECK_EQ_INT(r.body_len, 0);
    wire_resp_free(&r);
    CHECK(wire_http(w, "GET", "/sub/", NULL, NULL, &r));          /* a directory's index */
    CHECK_EQ_INT(r.status, 200);
    CHECK(strcmp(r.body, "sub\n") == 0);
    wire_resp_free(&r);
    CHECK(wire_http(w, "DELETE", "/app.js", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_is(&r, "Allow", "GET, HEAD"));
    wire_resp_free(&r);
    wire_close(w);
}

TEST(static_path_refusals)
{
    char up[160];
    snprintf(up, sizeof up, "/../%s/secret.txt", outside + 5); /* beside the root, under /tmp */
    char up_enc[160];
    snprintf(up_enc, sizeof up_enc, "/%%2e%%2e/%s/secret.txt", outside + 5);
    const char *paths[] = {
        "/missing.html",
        up, up_enc,
        "/sub/../app.js",        /* no dot segments at all */
        "/%2E%2E%2Fapp.js",
        "/.hidden",              /* hidden files */
        "/sub/.git/config",
        "//app.js",
        "/sub\\..\\app.js",
        "/app.js%00.html",       /* a NUL byte */
        "/%zz",                  /* a bad escape */
        "/link/secret.txt",      /* a symlink out of the root */
        "/escape.txt",
        "/empty",                /* a directory, not a file */
    };
    wire *w = wire_connect(port);
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        wire_resp r;
        if (!wire_http(w, "GET", paths[i], NULL, NULL, &r)) {
            CHECK(!"the connection closed");
            wire_close(w);
            w = wire_connect(port);
            continue;
        }
        if (r.status != 404) fprintf(stderr, "  %s -> %d\n", paths[i], r.status);
        CHECK_EQ_INT(r.status, 404);
        CHECK(error_is(&r, "not_found"));
        CHECK(strstr(r.body, "secret") == NULL);
        wire_resp_free(&r);
    }
    wire_close(w);
}

TEST(bad_requests)
{
    /* Not HTTP at all: the connection's parser answers, then closes. */
    wire *w = wire_connect(port);
    wire_write(w, "HELLO\r\n\r\n", 9);
    wire_resp r;
    CHECK(wire_read_resp(w, false, &r));
    CHECK_EQ_INT(r.status, 400);
    wire_resp_free(&r);
    wire_close(w);
    /* A path that is not absolute. */
    CHECK(wire_http1(port, "GET", "index.html", NULL, NULL, &r));
    CHECK(r.status == 400 || r.status == 404);
    wire_resp_free(&r);
    /* An absurdly long path is refused, not served. */
    static char longp[3000];
    longp[0] = '/';
    memset(longp + 1, 'a', sizeof longp - 2);
    longp[sizeof longp - 1] = 0;
    CHECK(wire_http1(port, "GET", longp, NULL, NULL, &r));
    CHECK(r.status == 404 || r.status == 414 || r.status == 431 || r.status == 500);
    wire_resp_free(&r);
    /* Still healthy. */
    CHECK(wire_http1(port, "GET", "/healthz", NULL, NULL, &r));
    CHECK_EQ_INT(r.status, 200);
    wire_resp_free(&r);
}

int main(void)
{
    fx_config(&f, 2);
    fx_start(&f, true);
    port = fx_listen(&f, 1);
    fx_write_file(f.web_dir, "index.html", "<h1>parley</h1>\n");
    fx_write_file(f.web_dir, "app.js", "console.log\n");
    fx_write_file(f.web_dir, ".hidden", "hidden\n");
    char path[256];
    snprintf(path, sizeof path, "%s/sub", f.web_dir);
    mkdir(path, 0755);
    fx_write_file(path, "index.html", "sub\n");
    snprintf(path, sizeof path, "%s/sub/.git", f.web_dir);
    mkdir(path, 0755);
    fx_write_file(path, "config", "secret\n");
    snprintf(path, sizeof path, "%s/empty", f.web_dir);
    mkdir(path, 0755);
    fx_mkdtemp(outside, sizeof outside, "outside");
    fx_write_file(outside, "secret.txt", "secret\n");
    snprintf(path, sizeof path, "%s/link", f.web_dir);
    if (symlink(outside, path) != 0) fx_fatal("symlink");
    char target[128];
    snprintf(target, sizeof target, "%s/secret.txt", outside);
    snprintf(path, sizeof path, "%s/escape.txt", f.web_dir);
    if (symlink(target, path) != 0) fx_fatal("symlink");

    RUN(healthz_page);
    RUN(metrics_page);
    RUN(websocket_endpoint_refusals);
    RUN(origins);
    RUN(static_files);
    RUN(static_path_refusals);
    RUN(bad_requests);
    fx_stop(&f);
    fx_rmdir(outside);
    return test_summary("router");
}
