#include "test.h"
#include "base/err.h"
#include "net/static.h"

static int join(const char *path, char *out)
{
    return static_join("/srv/web/", path, strlen(path), out, 256);
}

TEST(index_and_plain_files)
{
    char out[256];
    CHECK(join("/", out) > 0);
    CHECK(strcmp(out, "/srv/web/index.html") == 0);
    CHECK(join("/app.js", out) > 0);
    CHECK(strcmp(out, "/srv/web/app.js") == 0);
    CHECK(join("/img/", out) > 0);
    CHECK(strcmp(out, "/srv/web/img/index.html") == 0);
    CHECK(join("/a%20b.txt", out) > 0);
    CHECK(strcmp(out, "/srv/web/a b.txt") == 0);
}

TEST(traversal_refused)
{
    char out[256];
    const char *bad[] = {
        "/..", "/../etc/passwd", "/a/../../x", "/%2e%2e/etc/passwd", "/%2E%2E%2Fetc",
        "/a/%2e%2e/%2e%2e/x", "/.git/config", "/.env", "/a/./b", "//etc/passwd",
        "/a%00.html", "/a\\..\\b", "/%5c..%5cb", "etc/passwd", "", "/%zz", "/%2",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = static_join("/srv/web", bad[i], strlen(bad[i]), out, sizeof out);
        if (rc >= 0) fprintf(stderr, "  accepted: %s -> %s\n", bad[i], out);
        CHECK(rc < 0);
    }
}

TEST(too_long)
{
    char out[16];
    CHECK_EQ_INT(static_join("/srv/web", "/abcdefghijkl.html", 18, out, sizeof out), ERR_TOO_LARGE);
}

TEST(content_types)
{
    CHECK(strcmp(static_content_type("/x/index.html"), "text/html; charset=utf-8") == 0);
    CHECK(strcmp(static_content_type("app.JS"), "text/javascript; charset=utf-8") == 0);
    CHECK(strcmp(static_content_type("a.css"), "text/css; charset=utf-8") == 0);
    CHECK(strcmp(static_content_type("a.svg"), "image/svg+xml") == 0);
    CHECK(strcmp(static_content_type("a.png"), "image/png") == 0);
    CHECK(strcmp(static_content_type("noext"), "application/octet-stream") == 0);
    CHECK(strcmp(static_content_type("/dir.v1/noext"), "application/octet-stream") == 0);
}

int main(void)
{
    RUN(index_and_plain_files);
    RUN(traversal_refused);
    RUN(too_long);
    RUN(content_types);
    return test_summary("static");
}
