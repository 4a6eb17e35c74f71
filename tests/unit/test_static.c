#include "test.h"
#include "base/err.h"
#include "net/static.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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

/* ---- the file system: a temporary web root ------------------------------- */

static char root[64];

static void put(const char *name, const char *data)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", root, name);
    FILE *f = fopen(p, "wb");
    if (!f) { perror(p); exit(2); }
    fputs(data, f);
    fclose(f);
}

static void mkroot(void)
{
    snprintf(root, sizeof root, "/tmp/parley_static_XXXXXX");
    if (!mkdtemp(root)) { perror("mkdtemp"); exit(2); }
    char p[256];
    put("a.txt", "hello");
    snprintf(p, sizeof p, "%s/pipe", root);
    if (mkfifo(p, 0600) != 0) { perror("mkfifo"); exit(2); }
    snprintf(p, sizeof p, "%s/dir", root);
    if (mkdir(p, 0700) != 0) { perror("mkdir"); exit(2); }
    snprintf(p, sizeof p, "%s/zero", root);
    if (symlink("/dev/zero", p) != 0) { perror("symlink"); exit(2); }
    char fifo[256];
    snprintf(fifo, sizeof fifo, "%s/pipe", root);
    snprintf(p, sizeof p, "%s/pipe-link", root);
    if (symlink(fifo, p) != 0) { perror("symlink"); exit(2); }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

static int open_in_root(const char *name, static_file *f)
{
    char full[256];
    snprintf(full, sizeof full, "%s/%s", root, name);
    f->fd = -1;
    int rc = static_open(root, full, f);
    if (rc == ERR_OK) close(f->fd);
    return rc;
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: static_open blocked (a FIFO opened without O_NONBLOCK?)\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */ }
    _exit(1);
}

TEST(open_regular_files_only)
{
    signal(SIGALRM, on_alarm);
    alarm(10); /* a blocked open() fails the test instead of hanging it */
    static_file f;
    CHECK_EQ_INT(open_in_root("a.txt", &f), ERR_OK);
    CHECK_EQ_INT(f.size, 5);
    CHECK(f.etag[0] == '"');
    CHECK_EQ_INT(open_in_root("pipe", &f), ERR_NOT_FOUND);
    CHECK_EQ_INT(open_in_root("pipe-link", &f), ERR_NOT_FOUND);
    CHECK_EQ_INT(open_in_root("dir", &f), ERR_NOT_FOUND);
    CHECK_EQ_INT(open_in_root("zero", &f), ERR_NOT_FOUND);   /* outside the root */
    CHECK_EQ_INT(open_in_root("missing", &f), ERR_NOT_FOUND);
    /* A unix socket: open() would fail; it is refused before. */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/sock", root);
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&sa, sizeof sa) == 0);
    CHECK_EQ_INT(open_in_root("sock", &f), ERR_NOT_FOUND);
    close(s);
    alarm(0);
}

/* ---- loads on the thread pool ------------------------------------------- */

static uv_thread_t loop_thread;
static int loads_done;

typedef struct load_case {
    static_load l;    /* first */
    const char *name;
    bool on_loop;     /* done() ran on the loop's thread */
    int rc;
    bool not_modified;
    uint64_t size;
    char body[16];
    bool has_body;
    char etag[48];
} load_case;

static void case_done(static_load *l)
{
    load_case *c = (load_case *)l;
    uv_thread_t self = uv_thread_self();
    c->on_loop = uv_thread_equal(&self, &loop_thread);
    c->rc = l->rc;
    c->not_modified = l->not_modified;
    c->size = l->file.size;
    c->has_body = l->body != NULL;
    if (l->body && l->file.size < sizeof c->body) memcpy(c->body, l->body, l->file.size);
    memcpy(c->etag, l->file.etag, sizeof c->etag);
    loads_done++;
    free(l->body);
    l->body = NULL; /* the case struct lives on: only the body is freed here */
}

static void start_case(uv_loop_t *loop, load_case *c, const char *name, bool head, const char *inm)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    c->l.root = root;
    c->l.done = case_done;
    c->l.head = head;
    snprintf(c->l.full, sizeof c->l.full, "%s/%s", root, name);
    if (inm) snprintf(c->l.inm, sizeof c->l.inm, "%s", inm);
    CHECK_EQ_INT(static_load_start(loop, &c->l), ERR_OK);
}

TEST(loads_off_the_loop)
{
    signal(SIGALRM, on_alarm);
    alarm(20);
    uv_loop_t loop;
    CHECK_EQ_INT(uv_loop_init(&loop), 0);
    loop_thread = uv_thread_self();
    loads_done = 0;
    load_case c[6];
    start_case(&loop, &c[0], "a.txt", false, NULL);
    start_case(&loop, &c[1], "pipe", false, NULL);
    start_case(&loop, &c[2], "dir", false, NULL);
    start_case(&loop, &c[3], "a.txt", true, NULL);
    start_case(&loop, &c[4], "missing", false, NULL);
    start_case(&loop, &c[5], "zero", false, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(loads_done, 6);
    for (int i = 0; i < 6; i++) CHECK(c[i].on_loop);
    CHECK_EQ_INT(c[0].rc, ERR_OK);
    CHECK(c[0].has_body && c[0].size == 5 && memcmp(c[0].body, "hello", 5) == 0);
    CHECK(!c[0].not_modified);
    CHECK_EQ_INT(c[1].rc, ERR_NOT_FOUND);
    CHECK_EQ_INT(c[2].rc, ERR_NOT_FOUND);
    CHECK_EQ_INT(c[3].rc, ERR_OK);           /* HEAD: size, no body */
    CHECK(!c[3].has_body && c[3].size == 5);
    CHECK_EQ_INT(c[4].rc, ERR_NOT_FOUND);
    CHECK_EQ_INT(c[5].rc, ERR_NOT_FOUND);

    /* If-None-Match: the same ETag skips the body; another reads it. */
    char etag[48];
    memcpy(etag, c[0].etag, sizeof etag);
    loads_done = 0;
    start_case(&loop, &c[0], "a.txt", false, etag);
    start_case(&loop, &c[1], "a.txt", false, "\"0-0\"");
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(loads_done, 2);
    CHECK(c[0].rc == ERR_OK && c[0].not_modified && !c[0].has_body);
    CHECK(c[1].rc == ERR_OK && !c[1].not_modified && c[1].has_body);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
    alarm(0);
}

int main(void)
{
    mkroot();
    RUN(index_and_plain_files);
    RUN(traversal_refused);
    RUN(too_long);
    RUN(content_types);
    RUN(open_regular_files_only);
    RUN(loads_off_the_loop);
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return test_summary("static");
}
