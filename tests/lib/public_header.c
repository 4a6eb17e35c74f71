/* An application of libparley: it includes <parley.h> and no other header
 * of parley, is compiled as C11 and as C++ with warnings as errors, and is
 * linked once against build/libparley.a and once against build/libparley.so
 * (tests/lib/check_lib.py). It needs no server: what it checks is that the
 * public header is complete on its own and that the public error codes
 * are the ones the library returns.
 *
 * Written in the common subset of C and C++ (explicit casts, no designated
 * initializers). Exit status 0 when every check passed.
 */
#include <parley.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(x)                                                                 \
    do {                                                                         \
        if (!(x)) {                                                              \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #x); \
            failures++;                                                          \
        }                                                                        \
    } while (0)

#define CHECK_RC(call, want)                                                         \
    do {                                                                             \
        int rc_ = (call);                                                            \
        if (rc_ != (want)) {                                                         \
            fprintf(stderr, "%s:%d: %s = %d (%s), want %s\n", __FILE__, __LINE__,  \
                    #call, rc_, parley_strerror(rc_), #want);                        \
            failures++;                                                              \
        }                                                                            \
    } while (0)

/* An allocator that counts the blocks the client holds. */
static long live_blocks;

static void *count_malloc(void *ctx, size_t n)
{
    (void)ctx;
    void *p = malloc(n);
    if (p) live_blocks++;
    return p;
}

static void *count_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    void *q = realloc(p, n);
    if (q && !p) live_blocks++;
    return q;
}

static void count_free(void *ctx, void *p)
{
    (void)ctx;
    if (p) live_blocks--;
    free(p);
}

typedef struct named_code {
    int code;
    const char *name;
} named_code;

/* Every public code with the name parley.h gives it. */
static const named_code codes[] = {
    {PARLEY_OK, "ok"},
    {PARLEY_EAGAIN, "again"},
    {PARLEY_EINVALID, "invalid"},
    {PARLEY_EPROTOCOL, "protocol"},
    {PARLEY_ETOO_LARGE, "too_large"},
    {PARLEY_EUTF8, "utf8"},
    {PARLEY_ENOMEM, "nomem"},
    {PARLEY_EIO, "io"},
    {PARLEY_ECLOSED, "closed"},
    {PARLEY_ETIMEOUT, "timeout"},
    {PARLEY_ENOT_FOUND, "not_found"},
    {PARLEY_EUNSUPPORTED, "unsupported"},
    {PARLEY_EFULL, "full"},
    {PARLEY_EAUTH, "auth"},
    {PARLEY_EFORBIDDEN, "forbidden"},
    {PARLEY_ECONFLICT, "conflict"},
    {PARLEY_EBUSY, "busy"},
    {PARLEY_ERATE, "rate_limited"},
    {PARLEY_EVERSION, "version"},
};

static void error_codes(void)
{
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        /* 0, -1, -2, ...: no gap, each named as documented */
        CHECK(codes[i].code == -(int)i);
        const char *name = parley_strerror(codes[i].code);
        if (strcmp(name, codes[i].name) != 0) {
            fprintf(stderr, "parley_strerror(%d) = \"%s\", want \"%s\"\n", codes[i].code, name,
                    codes[i].name);
            failures++;
        }
    }
    /* The library has no code without a public name: one past the last, and
     * positive values, are unknown. */
    CHECK(strcmp(parley_strerror(PARLEY_EVERSION - 1), "unknown") == 0);
    CHECK(strcmp(parley_strerror(1), "unknown") == 0);
    CHECK(strcmp(parley_strerror(-1000), "unknown") == 0);
}

static void bad_arguments(void)
{
    parley_options o;
    parley_options_init(&o);
    parley_client *c = NULL;
    o.server = "localhost:8080";
    CHECK_RC(parley_new(&o, &c), PARLEY_EINVALID);
    o.server = "https://example.com";
    CHECK_RC(parley_new(&o, &c), PARLEY_EUNSUPPORTED);
    o.server = "http://127.0.0.1:1,,http://127.0.0.1:2"; /* a list: an empty entry */
    CHECK_RC(parley_new(&o, &c), PARLEY_EINVALID);
    o.server = "http://127.0.0.1:1";
    char token[300];
    memset(token, 'a', sizeof token - 1);
    token[sizeof token - 1] = 0;
    o.token = token;
    CHECK_RC(parley_new(&o, &c), PARLEY_ETOO_LARGE);
    CHECK(c == NULL);
}

/* A client that is never connected: every call answers with a public code
 * and touches no callback. */
static int callbacks_fired;

static void on_state(parley_client *c, parley_state st, int err, uint64_t delay_ms, void *ud)
{
    (void)c, (void)st, (void)err, (void)delay_ms, (void)ud;
    callbacks_fired++;
}

static void on_error(parley_client *c, const parley_error *e, void *ud)
{
    (void)c, (void)e, (void)ud;
    callbacks_fired++;
}

static void offline_client(void)
{
    parley_allocator a;
    a.malloc_fn = count_malloc;
    a.realloc_fn = count_realloc;
    a.free_fn = count_free;
    a.ctx = NULL;
    parley_callbacks cb;
    memset(&cb, 0, sizeof cb);
    cb.on_state = on_state;
    cb.on_error = on_error;

    parley_options o;
    parley_options_init(&o);
    o.server = "http://127.0.0.1:1, http://127.0.0.1:2"; /* nothing listens there */
    o.allocator = &a;
    o.callbacks = &cb;
    o.request_timeout_ms = 2000;
    parley_client *c = NULL;
    CHECK_RC(parley_new(&o, &c), PARLEY_OK);
    if (!c) return;
    CHECK(live_blocks > 0);
    CHECK(parley_get_state(c) == PARLEY_IDLE);
    CHECK(strcmp(parley_user(c), "") == 0);
    CHECK(strcmp(parley_token(c), "") == 0);
    CHECK(strcmp(parley_server(c), "http://127.0.0.1:1") == 0);

    CHECK_RC(parley_connect(c), PARLEY_EAUTH); /* no token */
    CHECK_RC(parley_run(c, 0), PARLEY_ECLOSED);
    CHECK_RC(parley_send(c, 0, "x", NULL), PARLEY_EINVALID);
    CHECK_RC(parley_send(c, 1, "\xff\xfe", NULL), PARLEY_EUTF8);
    CHECK_RC(parley_send_json(c, 1, "{bad", 4, NULL, NULL), PARLEY_EINVALID);
    char cmid[PARLEY_CMID_MAX];
    CHECK_RC(parley_send(c, 1, "hello", cmid), PARLEY_OK);
    CHECK(strlen(cmid) == 32);
    CHECK_RC(parley_send_json(c, 1, "2", 1, cmid, NULL), PARLEY_ECONFLICT);
    CHECK(parley_pending(c) == 1);
    CHECK_RC(parley_sync(c, 5), PARLEY_ENOT_FOUND);
    CHECK_RC(parley_typing(c, 5), PARLEY_ECLOSED);
    CHECK_RC(parley_get_history(c, 1, PARLEY_BEFORE, 0, 0, NULL), PARLEY_EINVALID);
    CHECK_RC(parley_track(c, 3, 7), PARLEY_OK);
    CHECK(parley_highest(c, 3) == 7);
    CHECK_RC(parley_mark_read(c, 3, 10), 1);
    CHECK_RC(parley_mark_read(c, 3, 9), 0);

    /* REST: without a token refused locally; with one, the connection is
     * refused and the details say so. */
    parley_inbox *in = NULL;
    CHECK_RC(parley_get_inbox(c, 0, &in), PARLEY_EAUTH);
    CHECK(parley_last_error(c)->err == PARLEY_EAUTH);
    CHECK_RC(parley_get_inbox_page(c, 0, "0.1.2.3&x=y", 0, &in), PARLEY_EINVALID);
    CHECK_RC(parley_get_inbox_page(c, 0, "", 0, &in), PARLEY_EINVALID);
    CHECK_RC(parley_get_inbox_page(c, 0, NULL, 10, NULL), PARLEY_EINVALID);
    CHECK_RC(parley_get_inbox_page(c, 0, "0.1.2.3", 10, &in), PARLEY_EAUTH);
    CHECK_RC(parley_set_token(c, "t0ken"), PARLEY_OK);
    CHECK(strcmp(parley_token(c), "t0ken") == 0);
    int rc = parley_get_inbox(c, 0, &in);
    CHECK(rc == PARLEY_EIO || rc == PARLEY_ETIMEOUT);
    const parley_error *e = parley_last_error(c);
    CHECK(e->err == rc && e->status == 0 && e->message[0] != 0);
    CHECK(strcmp(parley_server(c), "http://127.0.0.1:1") == 0); /* no other answered */

    CHECK(callbacks_fired == 0);
    parley_free(c);
    CHECK(live_blocks == 0);
}

int main(void)
{
    error_codes();
    bad_arguments();
    offline_client();
    if (failures) {
        fprintf(stderr, "public_header: %d checks failed\n", failures);
        return 1;
    }
    printf("public_header: ok\n");
    return 0;
}
