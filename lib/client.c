/* libparley: the client library (include/parley.h).
 *
 * Layout of this file:
 *   allocator, clock and randomness
 *   arena-backed results and the JSON -> struct parsers
 *   REST calls (blocking, client_http)
 *   the live connection: a non-blocking state machine
 *       IDLE -> CONNECT (TCP) -> HANDSHAKE (HTTP upgrade) -> OPEN (WebSocket;
 *       CONNECTED once "hello" arrives) -> BACKOFF -> CONNECT ...
 *     with the pure helpers client_backoff (delays), client_outbox (resend
 *     queue) and client_seq (gaps, dedupe, cursors)
 *   drivers: parley_run (poll) and parley_attach_uv (libuv)
 *
 * Internal invariant: code that reads the socket never tears the connection
 * down in the middle of a callback chain; it records the failure in
 * c->dead and the top-level entry points (process, tick) call lose(). A
 * callback may still call parley_close(): c->gen changes and the frame loop
 * stops touching the old connection.
 */
#include "parley.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "client_backoff.h"
#include "client_http.h"
#include "client_outbox.h"
#include "client_seq.h"
#include "base/err.h"
#include "codec/json.h"
#include "codec/utf8.h"
#include "codec/ws.h"

#define STABLE_MS 10000        /* a connection this old resets the backoff */
#define TYPING_EVERY_MS 2500   /* at most one typing frame per conversation */
#define SYNC_LIMIT 500
#define READ_CHUNK 65536

enum phase { PH_IDLE, PH_CONNECT, PH_HANDSHAKE, PH_OPEN, PH_BACKOFF, PH_CLOSED };

/* The catch-up walk of the inbox (after hello, and on `resync`): every page
 * from the last cursor, then the cursor is kept. */
enum walk { WALK_NONE, WALK_DUE, WALK_WAIT };

typedef struct conv_state {
    uint64_t id;
    client_seq seq;
    client_cursor delivered, read;
    uint64_t typing_at;
} conv_state;

/* A message kept while a gap is filled: its raw JSON object. */
typedef struct held_msg {
    size_t len;
    char json[];
} held_msg;

static char own_marker; /* held item standing for one of our own acked messages */

typedef struct uv_poll_box {
    uv_poll_t h;
    parley_allocator A;
} uv_poll_box;

typedef struct uv_timer_box {
    uv_timer_t h;
    parley_allocator A;
} uv_timer_box;

struct parley_client {
    parley_allocator A;
    parley_callbacks cb;
    void *ud;
    parley_options o;            /* numbers and hooks; pointers cleared */
    client_url *urls;            /* the servers of options.server, in order */
    size_t nurls;
    size_t cur;                  /* the server in use (REST and the next connect) */
    size_t ws_server;            /* the server of the current connection attempt */
    char server[600];            /* urls[cur] as a base URL (parley_server) */
    char token[PARLEY_TOKEN_MAX];
    char user[PARLEY_USER_MAX];
    char device_key[PARLEY_DEVICE_KEY_MAX]; /* this device's, from register/login */
    parley_error lasterr;

    uint8_t pool[256];           /* getrandom pool */
    size_t pool_pos;

    /* live connection */
    parley_state state;
    int phase;
    bool started;                /* parley_connect() and not closed */
    int close_err;               /* why it stopped for good */
    int fd;
    uint64_t gen;                /* bumped whenever the socket closes */
    struct sockaddr_storage addrs[8];
    socklen_t alens[8];
    int naddr, addr_i;
    uint64_t phase_deadline;     /* connect + handshake + hello */
    uint64_t retry_at;           /* BACKOFF */
    uint64_t opened_at, last_rx, ping_at;
    bool hello;
    char ws_accept[29];
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    uint8_t *msg;                /* fragmented message being assembled */
    size_t msg_len, msg_cap;
    ws_reader rd;
    ws_limits lim;
    bool close_sent;
    int dead;                    /* pending failure (0 none) */
    uint64_t dead_retry;
    uint16_t dead_close;
    client_backoff bo;
    client_outbox ob;
    uint32_t window;             /* messages in flight allowed now (AIMD) */
    conv_state **convs;          /* sorted by id */
    size_t nconvs, convs_cap;
    bool dirty;                  /* cursors or syncs may be due */
    uint64_t inbox_cursor;
    bool have_cursor;
    int walk;                    /* enum walk */
    char walk_page[128];         /* the page to ask for ("": the first) */
    bool walk_again;             /* a resync came during the walk: walk again after it */

    /* drivers */
    bool brk;
    uv_loop_t *loop;
    uv_poll_box *poll;
    int poll_fd;
    uv_timer_box *timer;
};

/* ---- allocator, clock, randomness ------------------------------------------ */

static void *libc_malloc(void *ctx, size_t n) { (void)ctx; return malloc(n); }
static void *libc_realloc(void *ctx, void *p, size_t n) { (void)ctx; return realloc(p, n); }
static void libc_free(void *ctx, void *p) { (void)ctx; free(p); }

static const parley_allocator libc_alloc = {libc_malloc, libc_realloc, libc_free, NULL};

static void *xalloc(parley_client *c, size_t n) { return c->A.malloc_fn(c->A.ctx, n); }
static void xfree(parley_client *c, void *p) { if (p) c->A.free_fn(c->A.ctx, p); }

static uint64_t now_ms(parley_client *c)
{
    if (c->o.clock_ms) return c->o.clock_ms(c->o.clock_ctx);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t rnd64(parley_client *c)
{
    if (c->o.random) return c->o.random(c->o.random_ctx);
    if (c->pool_pos + 8 > sizeof c->pool) {
        size_t got = 0;
        while (got < sizeof c->pool) {
            ssize_t r = getrandom(c->pool + got, sizeof c->pool - got, 0);
            if (r > 0) got += (size_t)r;
            else if (r < 0 && errno != EINTR) break;
        }
        if (got < sizeof c->pool) { /* no getrandom(2): /dev/urandom */
            int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
            while (fd >= 0 && got < sizeof c->pool) {
                ssize_t r = read(fd, c->pool + got, sizeof c->pool - got);
                if (r > 0) got += (size_t)r;
                else if (r == 0 || errno != EINTR) break;
            }
            if (fd >= 0) close(fd);
        }
        if (got < sizeof c->pool) { /* neither: the clock, so we never abort */
            uint64_t x = now_ms(c) ^ (uint64_t)(uintptr_t)c ^ 0x9e3779b97f4a7c15ull;
            for (size_t i = got; i < sizeof c->pool; i++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                c->pool[i] = (uint8_t)x;
            }
        }
        c->pool_pos = 0;
    }
    uint64_t v;
    memcpy(&v, c->pool + c->pool_pos, 8);
    c->pool_pos += 8;
    return v;
}

static void make_cmid(parley_client *c, char out[PARLEY_CMID_MAX])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = rnd64(c), b = rnd64(c);
    for (int i = 0; i < 16; i++) out[i] = hex[(a >> (60 - 4 * i)) & 15];
    for (int i = 0; i < 16; i++) out[16 + i] = hex[(b >> (60 - 4 * i)) & 15];
    out[32] = 0;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* ---- errors ---------------------------------------------------------------- */

static int err_from_code(const char *code, int status)
{
    static const struct { const char *code; int err; } map[] = {
        {"unauthorized", ERR_AUTH}, {"bad_credentials", ERR_AUTH},
        {"forbidden", ERR_FORBIDDEN},
        {"not_found", ERR_NOT_FOUND}, {"user_not_found", ERR_NOT_FOUND},
        {"not_member", ERR_NOT_FOUND},
        {"username_taken", ERR_CONFLICT}, {"already_member", ERR_CONFLICT},
        {"conflict", ERR_CONFLICT},
        {"too_large", ERR_TOO_LARGE},
        {"busy", ERR_BUSY}, {"stopping", ERR_BUSY},
        {"rate_limited", ERR_RATE}, {"too_many_connections", ERR_RATE},
        {"bad_json", ERR_INVALID}, {"bad_request", ERR_INVALID},
        {"bad_username", ERR_INVALID}, {"bad_password", ERR_INVALID},
        {"too_many_members", ERR_INVALID}, {"unknown_type", ERR_INVALID},
        {"internal", ERR_IO},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(code, map[i].code) == 0) return map[i].err;
    switch (status) {
    case 401: return ERR_AUTH;
    case 403: return ERR_FORBIDDEN;
    case 404: return ERR_NOT_FOUND;
    case 409: return ERR_CONFLICT;
    case 413: return ERR_TOO_LARGE;
    case 429: return ERR_RATE;
    case 503: return ERR_BUSY;
    }
    if (status >= 400 && status < 500) return ERR_INVALID;
    if (status >= 500) return ERR_IO;
    return ERR_PROTOCOL;
}

static void set_error(parley_client *c, int err, int status, const char *code, const char *msg)
{
    memset(&c->lasterr, 0, sizeof c->lasterr);
    c->lasterr.err = err;
    c->lasterr.status = status;
    copy_str(c->lasterr.code, sizeof c->lasterr.code, code ? code : "");
    copy_str(c->lasterr.message, sizeof c->lasterr.message, msg ? msg : parley_strerror(err));
}

/* The public codes (parley.h) are the internal ones (base/err.h) under
 * public names: the library returns what its helpers and the codecs return,
 * unchanged. Each PARLEY_E<X> must equal ERR_<X>. */
_Static_assert((int)PARLEY_OK == (int)ERR_OK, "PARLEY_OK differs from ERR_OK");
#define SAME_CODE(x) \
    _Static_assert((int)PARLEY_E##x == (int)ERR_##x, "PARLEY_E" #x " differs from ERR_" #x)
SAME_CODE(AGAIN); SAME_CODE(INVALID); SAME_CODE(PROTOCOL);
SAME_CODE(TOO_LARGE); SAME_CODE(UTF8); SAME_CODE(NOMEM); SAME_CODE(IO);
SAME_CODE(CLOSED); SAME_CODE(TIMEOUT); SAME_CODE(NOT_FOUND);
SAME_CODE(UNSUPPORTED); SAME_CODE(FULL); SAME_CODE(AUTH); SAME_CODE(FORBIDDEN);
SAME_CODE(CONFLICT); SAME_CODE(BUSY); SAME_CODE(RATE); SAME_CODE(VERSION);
#undef SAME_CODE

/* err_name() is internal (hidden in libparley.so); this is its public name. */
/* The library's codes are the general ones (up to ERR_VERSION); the
 * protocol's own (a server's wire codes) reach an app as strings in
 * parley_last_error(), so they are "unknown" here. */
const char *parley_strerror(int err)
{
    return err < PARLEY_EVERSION ? "unknown" : err_name(err);
}
const parley_error *parley_last_error(const parley_client *c) { return &c->lasterr; }

/* Reads {"error":{"code":..,"message":..}} from an error response. */
static void parse_error_body(const char *body, size_t n, char *code, size_t ccap, char *msg,
                             size_t mcap)
{
    json_obj o, e;
    code[0] = msg[0] = 0;
    if (json_parse_object(body, n, &o) < 0) return;
    const json_field *f = json_get(&o, "error");
    if (!f || f->type != JSON_OBJECT || json_parse_object(f->val, f->val_len, &e) < 0) return;
    if (json_get_str(&e, "code", code, ccap) < 0) code[0] = 0;
    if (json_get_str(&e, "message", msg, mcap) < 0) msg[0] = 0;
}

/* ---- arena-backed results ---------------------------------------------------- */

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_blk;

typedef struct arena {
    const parley_allocator *a;
    arena_blk *head;
} arena;

static void *ar_alloc(arena *ar, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    arena_blk *b = ar->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4000 ? n : 4000;
        b = ar->a->malloc_fn(ar->a->ctx, sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = ar->head;
        ar->head = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static void ar_release(arena ar)
{
    for (arena_blk *b = ar.head, *next; b; b = next) {
        next = b->next;
        ar.a->free_fn(ar.a->ctx, b);
    }
}

typedef struct result_hdr {
    arena ar;
    _Alignas(16) unsigned char pub[];
} result_hdr;

static void *result_new(parley_client *c, size_t size, arena **ar)
{
    arena tmp = {&c->A, NULL};
    result_hdr *h = ar_alloc(&tmp, sizeof *h + size);
    if (!h) { ar_release(tmp); return NULL; }
    h->ar = tmp;
    memset(h->pub, 0, size);
    *ar = &h->ar;
    return h->pub;
}

static void result_free(void *pub)
{
    if (!pub) return;
    result_hdr *h = (result_hdr *)((unsigned char *)pub - offsetof(result_hdr, pub));
    ar_release(h->ar);
}

/* A JSON string field unescaped into the arena; dflt if absent/invalid. */
static const char *ar_jstr(arena *ar, const json_obj *o, const char *key, const char *dflt)
{
    const json_field *f = json_get(o, key);
    if (!f || f->type != JSON_STRING) return dflt;
    char *s = ar_alloc(ar, f->val_len + 1);
    if (!s) return NULL;
    int n = json_unescape(f->val, f->val_len, s, f->val_len + 1);
    return n < 0 ? dflt : s;
}

static uint64_t jnum(const json_obj *o, const char *key)
{
    uint64_t v = 0;
    return json_get_u64(o, key, &v) == ERR_OK ? v : 0;
}

static int64_t jts(const json_obj *o, const char *key)
{
    const json_field *f = json_get(o, key);
    if (!f || f->type != JSON_NUMBER) return 0;
    char tmp[32];
    size_t n = f->val_len < sizeof tmp - 1 ? f->val_len : sizeof tmp - 1;
    memcpy(tmp, f->val, n);
    tmp[n] = 0;
    return strtoll(tmp, NULL, 10);
}

static bool jbool(const json_obj *o, const char *key)
{
    const json_field *f = json_get(o, key);
    return f && f->type == JSON_TRUE;
}

typedef struct str_list {
    arena *ar;
    const char **v;
    size_t n;
    int err;
} str_list;

static int count_elem(void *arg, const char *v, size_t len, uint8_t type)
{
    (void)v; (void)len; (void)type;
    (*(size_t *)arg)++;
    return 0;
}

static int add_str(void *arg, const char *v, size_t len, uint8_t type)
{
    str_list *l = arg;
    if (type != JSON_STRING) return 0;
    char *s = ar_alloc(l->ar, len + 1);
    if (!s) { l->err = ERR_NOMEM; return 1; }
    if (json_unescape(v, len, s, len + 1) < 0) return 0;
    l->v[l->n++] = s;
    return 0;
}

static int ar_strings(arena *ar, const json_obj *o, const char *key, const char ***out,
                      size_t *n)
{
    *out = NULL;
    *n = 0;
    const json_field *f = json_get(o, key);
    if (!f || f->type != JSON_ARRAY) return ERR_OK;
    size_t cnt = 0;
    json_array_each(f->val, f->val_len, count_elem, &cnt);
    str_list l = {ar, ar_alloc(ar, (cnt ? cnt : 1) * sizeof(char *)), 0, 0};
    if (!l.v) return ERR_NOMEM;
    json_array_each(f->val, f->val_len, add_str, &l);
    if (l.err) return l.err;
    *out = l.v;
    *n = l.n;
    return ERR_OK;
}

/* Parses a message object into *m (strings in the arena). */
static int parse_message(arena *ar, const char *s, size_t n, uint64_t conv, parley_message *m)
{
    json_obj o;
    if (json_parse_object(s, n, &o) < 0) return ERR_PROTOCOL;
    memset(m, 0, sizeof *m);
    m->conv = jnum(&o, "conv");
    if (!m->conv) m->conv = conv;
    m->seq = jnum(&o, "seq");
    m->ts = jts(&o, "ts");
    m->from = ar_jstr(ar, &o, "from", "");
    m->cmid = ar_jstr(ar, &o, "cmid", "");
    const json_field *b = json_get(&o, "body");
    char *body = ar_alloc(ar, (b ? b->val_len : 4) + 1);
    if (!m->from || !m->cmid || !body) return ERR_NOMEM;
    if (b) {
        memcpy(body, b->val, b->val_len);
        body[b->val_len] = 0;
        m->body_len = b->val_len;
        if (b->type == JSON_STRING) {
            char *t = ar_alloc(ar, b->val_len + 1);
            if (!t) return ERR_NOMEM;
            if (json_unescape(b->val, b->val_len, t, b->val_len + 1) >= 0) m->text = t;
        }
    } else {
        memcpy(body, "null", 5);
        m->body_len = 4;
    }
    m->body = body;
    return m->seq ? ERR_OK : ERR_PROTOCOL;
}

static int parse_conv(arena *ar, const char *s, size_t n, parley_conv *cv)
{
    json_obj o;
    if (json_parse_object(s, n, &o) < 0) return ERR_PROTOCOL;
    memset(cv, 0, sizeof *cv);
    cv->id = jnum(&o, "id");
    cv->type = ar_jstr(ar, &o, "type", "");
    cv->name = ar_jstr(ar, &o, "name", "");
    if (!cv->type || !cv->name) return ERR_NOMEM;
    int rc = ar_strings(ar, &o, "members", &cv->members, &cv->nmembers);
    if (rc == ERR_OK) rc = ar_strings(ar, &o, "admins", &cv->admins, &cv->nadmins);
    if (rc < 0) return rc;
    cv->last_seq = jnum(&o, "last_seq");
    cv->read_seq = jnum(&o, "read_seq");
    cv->delivered_seq = jnum(&o, "delivered_seq");
    cv->unread = jnum(&o, "unread");
    cv->last_ts = jts(&o, "last_ts");
    const json_field *lm = json_get(&o, "last_message");
    if (lm && lm->type == JSON_OBJECT) {
        parley_message *m = ar_alloc(ar, sizeof *m);
        if (!m) return ERR_NOMEM;
        if (parse_message(ar, lm->val, lm->val_len, cv->id, m) == ERR_OK) cv->last_message = m;
    }
    return cv->id ? ERR_OK : ERR_PROTOCOL;
}

typedef struct obj_list {
    arena *ar;
    void *v;
    size_t n, cap;
    uint64_t conv;
    int err;
    int kind; /* 0 conv, 1 message, 2 member cursor */
} obj_list;

static int add_obj(void *arg, const char *v, size_t len, uint8_t type)
{
    obj_list *l = arg;
    if (type != JSON_OBJECT || l->n >= l->cap) return 0;
    int rc;
    if (l->kind == 0) {
        rc = parse_conv(l->ar, v, len, &((parley_conv *)l->v)[l->n]);
    } else if (l->kind == 1) {
        rc = parse_message(l->ar, v, len, l->conv, &((parley_message *)l->v)[l->n]);
    } else {
        json_obj o;
        parley_member_cursor *m = &((parley_member_cursor *)l->v)[l->n];
        rc = json_parse_object(v, len, &o);
        if (rc == ERR_OK) {
            m->user = ar_jstr(l->ar, &o, "user", "");
            m->delivered = jnum(&o, "delivered");
            m->read = jnum(&o, "read");
            if (!m->user) rc = ERR_NOMEM;
        }
    }
    if (rc == ERR_NOMEM) { l->err = rc; return 1; }
    if (rc == ERR_OK) l->n++;
    return 0;
}

static int ar_objects(arena *ar, const json_field *f, int kind, size_t elem, uint64_t conv,
                      void **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!f || f->type != JSON_ARRAY) return ERR_PROTOCOL;
    size_t cnt = 0;
    json_array_each(f->val, f->val_len, count_elem, &cnt);
    obj_list l = {ar, ar_alloc(ar, (cnt ? cnt : 1) * elem), 0, cnt, conv, 0, kind};
    if (!l.v) return ERR_NOMEM;
    memset(l.v, 0, (cnt ? cnt : 1) * elem);
    json_array_each(f->val, f->val_len, add_obj, &l);
    if (l.err) return l.err;
    *out = l.v;
    *n = l.n;
    return ERR_OK;
}

/* ---- REST -------------------------------------------------------------------- */

typedef struct rest_reply {
    char *raw;
    client_http_response r;
    json_obj o;
} rest_reply;

/* The server in use becomes urls[i]. */
static void use_server(parley_client *c, size_t i)
{
    const client_url *u = &c->urls[i];
    c->cur = i;
    snprintf(c->server, sizeof c->server, "http://%s%s", u->hostport, u->prefix);
}

/* One request; ERR_OK only for a 2xx whose body (if any) is a JSON object
 * (indexed in rep->o). Errors fill lasterr. A request that cannot connect to
 * the server in use (nothing was sent) goes to the next ones in turn; the
 * first that answers becomes the server in use. */
static int rest(parley_client *c, const char *method, const char *path, jbuf *body,
                bool auth, rest_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    if (auth && !c->token[0]) {
        if (body) jb_free(body);
        set_error(c, ERR_AUTH, 0, "", "not logged in (no token)");
        return ERR_AUTH;
    }
    bool connected = false;
    client_http_request rq = {method, path, auth ? c->token : NULL, NULL, 0,
                              (int)c->o.request_timeout_ms, 0, &connected};
    if (body) {
        rq.body = jb_data(body, &rq.body_len);
        if (!rq.body) { jb_free(body); set_error(c, ERR_NOMEM, 0, "", NULL); return ERR_NOMEM; }
    }
    int rc = ERR_IO;
    size_t at = c->cur;
    for (size_t k = 0; k < c->nurls; k++) {
        at = (c->cur + k) % c->nurls;
        rc = client_http_do(&c->A, &c->urls[at], &rq, &rep->raw, &rep->r);
        if (rc != ERR_IO || connected) break;
    }
    if (body) jb_free(body);
    if (rc == ERR_OK && at != c->cur) use_server(c, at);
    if (rc < 0) {
        char msg[400];
        const char *hp = c->urls[at].hostport;
        if (rc == ERR_IO || rc == ERR_TIMEOUT)
            snprintf(msg, sizeof msg, "%s %s%s: %s", rc == ERR_IO ? "cannot reach" : "timed out talking to",
                     hp, c->nurls > 1 && !connected ? " (nor any other server in the list)" : "",
                     rc == ERR_IO ? "connection failed" : "no answer in time");
        else
            snprintf(msg, sizeof msg, "bad response from %s (%s)", hp, parley_strerror(rc));
        set_error(c, rc, 0, "", msg);
        return rc;
    }
    int st = rep->r.status;
    if (st < 200 || st > 299) {
        char code[48], msg[256];
        parse_error_body(rep->r.body.p, rep->r.body.n, code, sizeof code, msg, sizeof msg);
        int err = err_from_code(code, st);
        if (!msg[0]) snprintf(msg, sizeof msg, "HTTP %d %s", st, http_reason(st));
        set_error(c, err, st, code, msg);
        c->lasterr.retry_after_ms = client_http_retry_after_ms(&rep->r);
        xfree(c, rep->raw);
        rep->raw = NULL;
        return err;
    }
    if (rep->r.body.n > 0 && json_parse_object(rep->r.body.p, rep->r.body.n, &rep->o) < 0) {
        set_error(c, ERR_PROTOCOL, st, "", "the server's answer is not a JSON object");
        xfree(c, rep->raw);
        rep->raw = NULL;
        return ERR_PROTOCOL;
    }
    memset(&c->lasterr, 0, sizeof c->lasterr);
    c->lasterr.status = st;
    return ERR_OK;
}

static void rest_done(parley_client *c, rest_reply *rep)
{
    xfree(c, rep->raw);
    rep->raw = NULL;
}

/* Appends s percent-encoded for a path segment. */
static int path_seg(char *out, size_t cap, size_t *pos, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
        if (*pos + 4 >= cap) return ERR_TOO_LARGE;
        if (plain) out[(*pos)++] = (char)ch;
        else {
            out[(*pos)++] = '%';
            out[(*pos)++] = hex[ch >> 4];
            out[(*pos)++] = hex[ch & 15];
        }
    }
    out[*pos] = 0;
    return ERR_OK;
}

/* A device key: 1 .. PARLEY_DEVICE_KEY_MAX - 1 base64url characters. */
static int check_device_key(const char *key, size_t n)
{
    if (n >= PARLEY_DEVICE_KEY_MAX) return ERR_TOO_LARGE;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return ERR_INVALID;
    }
    return ERR_OK;
}

static int auth_call(parley_client *c, const char *path, const char *user, const char *password,
                     bool login, parley_session *out)
{
    if (!user || !password) return ERR_INVALID;
    jbuf j;
    jb_init(&j, 160);
    jb_lit(&j, "{\"username\":");
    jb_cstr(&j, user);
    jb_lit(&j, ",\"password\":");
    jb_cstr(&j, password);
    if (login && c->device_key[0]) {
        jb_lit(&j, ",\"device_key\":");
        jb_cstr(&j, c->device_key);
    }
    jb_lit(&j, "}");
    rest_reply rep;
    int rc = rest(c, "POST", path, &j, false, &rep);
    if (rc < 0) return rc;
    parley_session s;
    memset(&s, 0, sizeof s);
    int n1 = json_get_str(&rep.o, "user", s.user, sizeof s.user);
    int n2 = json_get_str(&rep.o, "token", s.token, sizeof s.token);
    s.device = jnum(&rep.o, "device");
    s.expires = jts(&rep.o, "expires");
    /* An older server sends none: the key we have stays. */
    int n3 = json_get_str(&rep.o, "device_key", s.device_key, sizeof s.device_key);
    rest_done(c, &rep);
    if (n1 <= 0 || n2 <= 0) {
        set_error(c, ERR_PROTOCOL, 0, "", "the server's answer has no user or token");
        return ERR_PROTOCOL;
    }
    if (n3 <= 0 || check_device_key(s.device_key, (size_t)n3) < 0) s.device_key[0] = 0;
    memcpy(c->token, s.token, sizeof c->token);
    memcpy(c->user, s.user, sizeof c->user);
    if (s.device_key[0]) memcpy(c->device_key, s.device_key, sizeof c->device_key);
    if (out) *out = s;
    return ERR_OK;
}

int parley_register(parley_client *c, const char *user, const char *password, parley_session *out)
{
    return auth_call(c, "/v1/users", user, password, false, out);
}

int parley_login(parley_client *c, const char *user, const char *password, parley_session *out)
{
    return auth_call(c, "/v1/sessions", user, password, true, out);
}

int parley_logout(parley_client *c)
{
    if (c->started) parley_close(c);
    rest_reply rep;
    int rc = rest(c, "DELETE", "/v1/sessions/current", NULL, true, &rep);
    if (rc < 0) return rc;
    rest_done(c, &rep);
    c->token[0] = 0;
    return ERR_OK;
}

/* One inbox page into *in, its objects in ar. */
static int inbox_page(parley_client *c, uint64_t since, const char *page, unsigned limit,
                      arena *ar, parley_inbox *in)
{
    char path[256];
    int n = snprintf(path, sizeof path, "/v1/conversations");
    const char *sep = "?";
    if (since) {
        n += snprintf(path + n, sizeof path - (size_t)n, "%schanged_since=%llu", sep,
                      (unsigned long long)since);
        sep = "&";
    }
    if (limit) {
        n += snprintf(path + n, sizeof path - (size_t)n, "%slimit=%u", sep, limit);
        sep = "&";
    }
    if (page) snprintf(path + n, sizeof path - (size_t)n, "%spage=%s", sep, page);
    rest_reply rep;
    int rc = rest(c, "GET", path, NULL, true, &rep);
    if (rc < 0) return rc;
    void *v;
    rc = ar_objects(ar, json_get(&rep.o, "conversations"), 0, sizeof(parley_conv), 0, &v, &in->n);
    in->convs = v;
    in->cursor = jnum(&rep.o, "cursor");
    in->more = jbool(&rep.o, "more");
    in->next = in->more ? ar_jstr(ar, &rep.o, "next", NULL) : NULL;
    rest_done(c, &rep);
    if (rc == ERR_OK && in->more && !in->next) rc = ERR_PROTOCOL; /* or out of memory */
    if (rc < 0) set_error(c, rc, 0, "", "cannot read the inbox answer");
    return rc;
}

/* A page token is digits, '.' and '-' (it goes into the query as is). */
static bool page_token_ok(const char *p)
{
    size_t n = strlen(p);
    if (n == 0 || n > 90) return false;
    for (size_t i = 0; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || p[i] == '.' || p[i] == '-')) return false;
    return true;
}

int parley_get_inbox_page(parley_client *c, uint64_t changed_since, const char *page,
                          unsigned limit, parley_inbox **out)
{
    if (!out || (page && !page_token_ok(page))) return ERR_INVALID;
    arena *ar;
    parley_inbox *in = result_new(c, sizeof *in, &ar);
    if (!in) { set_error(c, ERR_NOMEM, 0, "", NULL); return ERR_NOMEM; }
    int rc = inbox_page(c, changed_since, page, limit, ar, in);
    if (rc < 0) { result_free(in); return rc; }
    *out = in;
    return ERR_OK;
}

typedef struct inbox_entry {
    parley_conv cv;
    size_t order;              /* when it arrived: the later copy is the newer */
} inbox_entry;

static int by_id_newest(const void *a, const void *b)
{
    const inbox_entry *x = a, *y = b;
    if (x->cv.id != y->cv.id) return x->cv.id < y->cv.id ? -1 : 1;
    return x->order > y->order ? -1 : x->order < y->order;
}

static int by_recency(const void *a, const void *b)
{
    const inbox_entry *x = a, *y = b;
    if (x->cv.last_ts != y->cv.last_ts) return x->cv.last_ts > y->cv.last_ts ? -1 : 1;
    return x->cv.id > y->cv.id ? -1 : x->cv.id < y->cv.id;
}

#define INBOX_MAX_PAGES 100000 /* 10,000 conversations are 100 pages of 100 */
#define INBOX_ROUNDS 4         /* walks: the first, then what changed during the last */

int parley_get_inbox(parley_client *c, uint64_t changed_since, parley_inbox **out)
{
    if (!out) return ERR_INVALID;
    arena *ar;
    parley_inbox *in = result_new(c, sizeof *in, &ar);
    if (!in) { set_error(c, ERR_NOMEM, 0, "", NULL); return ERR_NOMEM; }
    inbox_entry *all = NULL;
    size_t n = 0, cap = 0, order = 0;
    int rc = ERR_OK;
    uint64_t since = changed_since;
    for (int round = 0; rc == ERR_OK && round < INBOX_ROUNDS; round++) {
        const char *page = NULL;
        size_t got = 0;
        parley_inbox pg;
        for (size_t k = 0; k < INBOX_MAX_PAGES; k++) {
            memset(&pg, 0, sizeof pg);
            if ((rc = inbox_page(c, since, page, 0, ar, &pg)) < 0) break;
            if (n + pg.n > cap) {
                size_t ncap = cap ? cap * 2 : 128;
                while (ncap < n + pg.n) ncap *= 2;
                inbox_entry *p = c->A.realloc_fn(c->A.ctx, all, ncap * sizeof *p);
                if (!p) { rc = ERR_NOMEM; set_error(c, rc, 0, "", NULL); break; }
                all = p;
                cap = ncap;
            }
            for (size_t i = 0; i < pg.n; i++) all[n++] = (inbox_entry){pg.convs[i], order++};
            got += pg.n;
            if (!pg.more) break;
            page = pg.next;
        }
        if (rc < 0) break;
        if (pg.more) { rc = ERR_PROTOCOL; set_error(c, rc, 0, "", "the inbox did not end"); break; }
        in->cursor = pg.cursor;
        /* Conversations that changed during the walk come with
         * changed_since = its cursor; nothing came: the list is whole. */
        if (round > 0 && got == 0) break;
        since = pg.cursor;
    }
    if (rc == ERR_OK) {
        if (n) qsort(all, n, sizeof *all, by_id_newest);
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            if (k == 0 || all[k - 1].cv.id != all[i].cv.id) all[k++] = all[i];
        n = k;
        if (n) qsort(all, n, sizeof *all, by_recency);
        in->convs = ar_alloc(ar, (n ? n : 1) * sizeof *in->convs);
        if (!in->convs) { rc = ERR_NOMEM; set_error(c, rc, 0, "", NULL); }
        else for (size_t i = 0; i < n; i++) in->convs[i] = all[i].cv;
    }
    c->A.free_fn(c->A.ctx, all);
    if (rc < 0) { result_free(in); return rc; }
    in->n = n;
    *out = in;
    return ERR_OK;
}

void parley_inbox_free(parley_client *c, parley_inbox *in) { (void)c; result_free(in); }

#define HISTORY_DEFAULT 50

int parley_get_history(parley_client *c, uint64_t conv, parley_page page, uint64_t seq,
                       unsigned limit, parley_history **out)
{
    if (!conv || (page == PARLEY_BEFORE && seq == 0) || page > PARLEY_BEFORE) return ERR_INVALID;
    arena *ar;
    parley_history *h = result_new(c, sizeof *h, &ar);
    if (!h) { set_error(c, ERR_NOMEM, 0, "", NULL); return ERR_NOMEM; }
    size_t want = limit ? limit : HISTORY_DEFAULT, n = 0;
    parley_message *all = NULL;
    bool more = false;
    int rc = ERR_OK;
    /* Each page but the last holds at least one message: at most want pages. */
    for (size_t round = 0; round <= want; round++) {
        char path[160];
        int k = snprintf(path, sizeof path, "/v1/conversations/%llu/messages", (unsigned long long)conv);
        const char *sep = "?";
        if (page != PARLEY_LATEST) {
            k += snprintf(path + k, sizeof path - (size_t)k, "%s%s=%llu", sep,
                          page == PARLEY_AFTER ? "after" : "before", (unsigned long long)seq);
            sep = "&";
        }
        if (limit || round) snprintf(path + k, sizeof path - (size_t)k, "%slimit=%zu", sep, want - n);
        rest_reply rep;
        if ((rc = rest(c, "GET", path, NULL, true, &rep)) < 0) break;
        void *v;
        size_t got;
        rc = ar_objects(ar, json_get(&rep.o, "messages"), 1, sizeof(parley_message), conv, &v, &got);
        more = jbool(&rep.o, "more");
        rest_done(c, &rep);
        if (rc < 0) { set_error(c, rc, 0, "", "cannot read the history answer"); break; }
        parley_message *msgs = v;
        if (!all) {
            all = msgs;
        } else if (got) {
            parley_message *joined = ar_alloc(ar, (n + got) * sizeof *joined);
            if (!joined) { rc = ERR_NOMEM; set_error(c, rc, 0, "", NULL); break; }
            /* forward pages follow what we have; backward pages precede it */
            parley_message *first = page == PARLEY_AFTER ? all : msgs;
            parley_message *second = page == PARLEY_AFTER ? msgs : all;
            size_t nf = page == PARLEY_AFTER ? n : got, ns = page == PARLEY_AFTER ? got : n;
            memcpy(joined, first, nf * sizeof *joined);
            memcpy(joined + nf, second, ns * sizeof *joined);
            all = joined;
        }
        n += got;
        if (!more || got == 0 || n >= want) break;
        if (page == PARLEY_AFTER) {
            seq = all[n - 1].seq;
        } else {
            page = PARLEY_BEFORE;
            seq = all[0].seq;
        }
    }
    if (rc < 0) { result_free(h); return rc; }
    h->msgs = all;
    h->n = n;
    h->more = more;
    *out = h;
    return ERR_OK;
}

void parley_history_free(parley_client *c, parley_history *h) { (void)c; result_free(h); }

/* A conversation object answer into *out (if out). */
static int conv_reply(parley_client *c, rest_reply *rep, parley_conv **out)
{
    int rc = ERR_OK;
    if (out) {
        arena *ar;
        parley_conv *cv = result_new(c, sizeof *cv, &ar);
        if (!cv) rc = ERR_NOMEM;
        else if ((rc = parse_conv(ar, rep->r.body.p, rep->r.body.n, cv)) < 0) result_free(cv);
        else *out = cv;
        if (rc < 0) set_error(c, rc, 0, "", "cannot read the conversation answer");
    }
    rest_done(c, rep);
    return rc;
}

int parley_get_conv(parley_client *c, uint64_t conv, parley_conv **out)
{
    if (!conv) return ERR_INVALID;
    char path[64];
    snprintf(path, sizeof path, "/v1/conversations/%llu", (unsigned long long)conv);
    rest_reply rep;
    int rc = rest(c, "GET", path, NULL, true, &rep);
    return rc < 0 ? rc : conv_reply(c, &rep, out);
}

int parley_create_direct(parley_client *c, const char *with, parley_conv **out, bool *created)
{
    if (!with || !*with) return ERR_INVALID;
    jbuf j;
    jb_init(&j, 96);
    jb_lit(&j, "{\"type\":\"direct\",\"with\":");
    jb_cstr(&j, with);
    jb_lit(&j, "}");
    rest_reply rep;
    int rc = rest(c, "POST", "/v1/conversations", &j, true, &rep);
    if (rc < 0) return rc;
    if (created) *created = rep.r.status == 201;
    return conv_reply(c, &rep, out);
}

int parley_create_group(parley_client *c, const char *name, const char *const *members,
                        size_t nmembers, parley_conv **out)
{
    if (!name || (nmembers && !members)) return ERR_INVALID;
    jbuf j;
    jb_init(&j, 128 + nmembers * 36);
    jb_lit(&j, "{\"type\":\"group\",\"name\":");
    jb_cstr(&j, name);
    jb_lit(&j, ",\"members\":[");
    for (size_t i = 0; i < nmembers; i++) {
        if (i) jb_lit(&j, ",");
        jb_cstr(&j, members[i]);
    }
    jb_lit(&j, "]}");
    rest_reply rep;
    int rc = rest(c, "POST", "/v1/conversations", &j, true, &rep);
    return rc < 0 ? rc : conv_reply(c, &rep, out);
}

int parley_add_member(parley_client *c, uint64_t conv, const char *user, parley_conv **out)
{
    if (!conv || !user || !*user) return ERR_INVALID;
    char path[64];
    snprintf(path, sizeof path, "/v1/conversations/%llu/members", (unsigned long long)conv);
    jbuf j;
    jb_init(&j, 64);
    jb_lit(&j, "{\"user\":");
    jb_cstr(&j, user);
    jb_lit(&j, "}");
    rest_reply rep;
    int rc = rest(c, "POST", path, &j, true, &rep);
    return rc < 0 ? rc : conv_reply(c, &rep, out);
}

int parley_remove_member(parley_client *c, uint64_t conv, const char *user)
{
    if (!conv || !user || !*user) return ERR_INVALID;
    char path[512];
    size_t pos = (size_t)snprintf(path, sizeof path, "/v1/conversations/%llu/members/",
                                  (unsigned long long)conv);
    if (path_seg(path, sizeof path, &pos, user) < 0) return ERR_INVALID;
    rest_reply rep;
    int rc = rest(c, "DELETE", path, NULL, true, &rep);
    if (rc < 0) return rc;
    rest_done(c, &rep);
    return ERR_OK;
}

void parley_conv_free(parley_client *c, parley_conv *conv) { (void)c; result_free(conv); }

int parley_get_receipts(parley_client *c, uint64_t conv, uint64_t seq, parley_receipts **out)
{
    if (!conv) return ERR_INVALID;
    char path[96];
    int n = snprintf(path, sizeof path, "/v1/conversations/%llu/receipts", (unsigned long long)conv);
    if (seq) snprintf(path + n, sizeof path - (size_t)n, "?seq=%llu", (unsigned long long)seq);
    rest_reply rep;
    int rc = rest(c, "GET", path, NULL, true, &rep);
    if (rc < 0) return rc;
    arena *ar;
    parley_receipts *r = result_new(c, sizeof *r, &ar);
    if (!r) { rest_done(c, &rep); set_error(c, ERR_NOMEM, 0, "", NULL); return ERR_NOMEM; }
    void *v;
    rc = ar_objects(ar, json_get(&rep.o, "members"), 2, sizeof(parley_member_cursor), conv, &v, &r->n);
    r->members = v;
    r->seq = jnum(&rep.o, "seq");
    r->delivered = jnum(&rep.o, "delivered");
    r->read = jnum(&rep.o, "read");
    rest_done(c, &rep);
    if (rc < 0) {
        result_free(r);
        set_error(c, rc, 0, "", "cannot read the receipts answer");
        return rc;
    }
    *out = r;
    return ERR_OK;
}

void parley_receipts_free(parley_client *c, parley_receipts *r) { (void)c; result_free(r); }

/* ---- creation ------------------------------------------------------------------ */

void parley_options_init(parley_options *o)
{
    memset(o, 0, sizeof *o);
    o->backoff_base_ms = 1000;
    o->backoff_cap_ms = 60000;
    o->connect_timeout_ms = 10000;
    o->request_timeout_ms = 30000;
    o->ack_timeout_ms = 15000;
    o->keepalive_ms = 30000;
    o->max_pending = 10000;
    o->max_inflight = 32;
    o->max_message = 32u << 20;
}

int parley_new(const parley_options *opts, parley_client **out)
{
    parley_options o;
    parley_options_init(&o);
    if (opts) {
        parley_options d = o;
        o = *opts;
#define DFLT(f) if (!o.f) o.f = d.f
        DFLT(backoff_base_ms); DFLT(backoff_cap_ms); DFLT(connect_timeout_ms);
        DFLT(request_timeout_ms); DFLT(ack_timeout_ms); DFLT(keepalive_ms);
        DFLT(max_pending); DFLT(max_inflight); DFLT(max_message);
#undef DFLT
        if (o.max_inflight > PARLEY_MAX_INFLIGHT) o.max_inflight = PARLEY_MAX_INFLIGHT;
    }
    const parley_allocator *a = o.allocator ? o.allocator : &libc_alloc;
    if (!a->malloc_fn || !a->realloc_fn || !a->free_fn) return ERR_INVALID;
    client_url urls[PARLEY_MAX_SERVERS];
    int n = client_http_parse_urls(o.server ? o.server : "http://localhost:8080", urls,
                                   PARLEY_MAX_SERVERS);
    if (n < 0) return n;
    if (o.token && strlen(o.token) >= PARLEY_TOKEN_MAX) return ERR_TOO_LARGE;
    parley_client *c = a->malloc_fn(a->ctx, sizeof *c);
    if (!c) return ERR_NOMEM;
    memset(c, 0, sizeof *c);
    c->urls = a->malloc_fn(a->ctx, (size_t)n * sizeof urls[0]);
    if (!c->urls) { a->free_fn(a->ctx, c); return ERR_NOMEM; }
    memcpy(c->urls, urls, (size_t)n * sizeof urls[0]);
    c->nurls = (size_t)n;
    use_server(c, 0);
    c->A = *a;
    if (o.callbacks) c->cb = *o.callbacks;
    c->ud = o.userdata;
    if (o.token) copy_str(c->token, sizeof c->token, o.token);
    o.server = o.token = NULL;
    o.allocator = NULL;
    o.callbacks = NULL;
    c->o = o;
    c->fd = -1;
    c->poll_fd = -1;
    c->pool_pos = sizeof c->pool;
    c->lim.max_message = o.max_message;
    client_backoff_init(&c->bo, o.backoff_base_ms, o.backoff_cap_ms);
    client_backoff_set_round(&c->bo, (uint32_t)c->nurls);
    client_outbox_init(&c->ob, &c->A, o.max_pending);
    c->window = o.max_inflight;
    *out = c;
    return ERR_OK;
}

const char *parley_token(const parley_client *c) { return c->token; }
const char *parley_server(const parley_client *c) { return c->server; }

int parley_set_token(parley_client *c, const char *token)
{
    if (token && strlen(token) >= PARLEY_TOKEN_MAX) return ERR_TOO_LARGE;
    copy_str(c->token, sizeof c->token, token ? token : "");
    return ERR_OK;
}

const char *parley_device_key(const parley_client *c) { return c->device_key; }

int parley_set_device_key(parley_client *c, const char *key)
{
    if (!key) key = "";
    int rc = check_device_key(key, strnlen(key, PARLEY_DEVICE_KEY_MAX));
    if (rc < 0) return rc;
    copy_str(c->device_key, sizeof c->device_key, key);
    return ERR_OK;
}

/* ---- conversations state ----------------------------------------------------------- */

static size_t conv_pos(const parley_client *c, uint64_t id)
{
    size_t lo = 0, hi = c->nconvs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->convs[mid]->id < id) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static conv_state *conv_find(const parley_client *c, uint64_t id)
{
    size_t i = conv_pos(c, id);
    return i < c->nconvs && c->convs[i]->id == id ? c->convs[i] : NULL;
}

static conv_state *conv_get(parley_client *c, uint64_t id)
{
    size_t i = conv_pos(c, id);
    if (i < c->nconvs && c->convs[i]->id == id) return c->convs[i];
    if (c->nconvs == c->convs_cap) {
        size_t cap = c->convs_cap ? c->convs_cap * 2 : 16;
        conv_state **v = c->A.realloc_fn(c->A.ctx, c->convs, cap * sizeof *v);
        if (!v) return NULL;
        c->convs = v;
        c->convs_cap = cap;
    }
    conv_state *cs = xalloc(c, sizeof *cs);
    if (!cs) return NULL;
    memset(cs, 0, sizeof *cs);
    cs->id = id;
    client_seq_init(&cs->seq, 0);
    memmove(&c->convs[i + 1], &c->convs[i], (c->nconvs - i) * sizeof c->convs[0]);
    c->convs[i] = cs;
    c->nconvs++;
    return cs;
}

static void free_item(void *arg, void *item)
{
    if (item != &own_marker) xfree(arg, item);
}

static void conv_free_state(parley_client *c, conv_state *cs)
{
    client_seq_clear(&cs->seq, &c->A, free_item, c);
    xfree(c, cs);
}

static void conv_drop(parley_client *c, uint64_t id)
{
    size_t i = conv_pos(c, id);
    if (i >= c->nconvs || c->convs[i]->id != id) return;
    conv_free_state(c, c->convs[i]);
    memmove(&c->convs[i], &c->convs[i + 1], (c->nconvs - i - 1) * sizeof c->convs[0]);
    c->nconvs--;
}

/* ---- output ------------------------------------------------------------------------ */

static void uv_update(parley_client *c);

static int out_reserve(parley_client *c, size_t n)
{
    if (c->out_off && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_cap - c->out_len >= n) return ERR_OK;
    if (c->out_off) { /* compact first */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_cap - c->out_len >= n) return ERR_OK;
    }
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap - c->out_len < n) cap *= 2;
    uint8_t *b = c->A.realloc_fn(c->A.ctx, c->out, cap);
    if (!b) return ERR_NOMEM;
    c->out = b;
    c->out_cap = cap;
    return ERR_OK;
}

static void flush(parley_client *c)
{
    while (c->fd >= 0 && !c->dead && c->out_off < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (w > 0) { c->out_off += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        c->dead = ERR_IO;
    }
    if (c->out_off == c->out_len) c->out_off = c->out_len = 0;
}

/* Queues one masked frame. */
static int ws_write(parley_client *c, uint8_t opcode, const void *payload, size_t len)
{
    if (c->fd < 0 || c->phase != PH_OPEN || c->dead || c->close_sent) return ERR_CLOSED;
    uint64_t r = rnd64(c);
    uint8_t key[4];
    memcpy(key, &r, 4);
    if (out_reserve(c, WS_MAX_HEADER + len) < 0) return ERR_NOMEM;
    size_t hl = ws_frame_header(c->out + c->out_len, opcode, true, len, key);
    uint8_t *p = c->out + c->out_len + hl;
    if (len) memcpy(p, payload, len);
    ws_mask(p, len, key, 0);
    c->out_len += hl + len;
    if (opcode == WS_OP_CLOSE) c->close_sent = true;
    return ERR_OK;
}

static int ws_write_json(parley_client *c, jbuf *j)
{
    size_t n;
    const char *d = jb_data(j, &n);
    int rc = d ? ws_write(c, WS_OP_TEXT, d, n) : ERR_NOMEM;
    jb_free(j);
    return rc;
}

/* The server told this connection to pause (docs/protocol.md
 * "Backpressure"): no data frames until it ends. */
static bool paused(const parley_client *c, uint64_t now)
{
    return now < c->ob.paused_until;
}

static bool connected(const parley_client *c)
{
    return c->phase == PH_OPEN && c->hello && !c->dead && !c->close_sent;
}

static void send_sync(parley_client *c, conv_state *cs)
{
    if (!connected(c) || cs->seq.syncing) return;
    jbuf j;
    jb_init(&j, 96);
    jb_lit(&j, "{\"type\":\"sync\",\"conv\":");
    jb_u64(&j, cs->id);
    jb_lit(&j, ",\"after\":");
    jb_u64(&j, cs->seq.highest);
    jb_lit(&j, ",\"limit\":" "500" ",\"id\":\"s:");
    jb_u64(&j, cs->id);
    jb_lit(&j, "\"}");
    if (ws_write_json(c, &j) == ERR_OK) cs->seq.syncing = true;
}

static void send_cursor(parley_client *c, conv_state *cs, bool read)
{
    client_cursor *cur = read ? &cs->read : &cs->delivered;
    jbuf j;
    jb_init(&j, 96);
    jb_lit(&j, read ? "{\"type\":\"read\",\"conv\":" : "{\"type\":\"delivered\",\"conv\":");
    jb_u64(&j, cs->id);
    jb_lit(&j, ",\"seq\":");
    jb_u64(&j, cur->want);
    jb_lit(&j, read ? ",\"id\":\"r:" : ",\"id\":\"d:");
    jb_u64(&j, cs->id);
    jb_lit(&j, "\"}");
    if (ws_write_json(c, &j) == ERR_OK) {
        client_cursor_sent(cur);
        if (read && cs->delivered.want <= cs->read.want) client_cursor_sent(&cs->delivered);
    }
}

/* Writes whatever is due: queued messages, cursors, syncs. */
static void send_walk(parley_client *c);

static void pump(parley_client *c)
{
    if (!connected(c)) return;
    uint64_t now = now_ms(c);
    if (c->walk == WALK_DUE && !paused(c, now)) send_walk(c);
    client_outmsg *m;
    for (size_t guard = 0; guard < 100000 && (m = client_outbox_next(&c->ob, now,
                                  c->o.ack_timeout_ms, c->window)); guard++) {
        jbuf j;
        jb_init(&j, 96 + m->body_len);
        jb_lit(&j, "{\"type\":\"send\",\"conv\":");
        jb_u64(&j, m->conv);
        jb_lit(&j, ",\"cmid\":");
        jb_cstr(&j, m->cmid);
        jb_lit(&j, ",\"body\":");
        jb_raw(&j, m->body, m->body_len);
        jb_lit(&j, "}");
        if (ws_write_json(c, &j) < 0) break;
        client_outbox_mark_sent(&c->ob, m, now);
    }
    if (c->dirty && !paused(c, now)) { /* a pause holds back cursors and syncs too */
        c->dirty = false;
        for (size_t i = 0; i < c->nconvs && connected(c); i++) {
            conv_state *cs = c->convs[i];
            if (client_cursor_due(&cs->read)) send_cursor(c, cs, true);
            if (client_cursor_due(&cs->delivered)) send_cursor(c, cs, false);
            if (client_seq_want_sync(&cs->seq)) send_sync(c, cs);
        }
    }
    flush(c);
}

/* ---- connection lifecycle ---------------------------------------------------------- */

static void set_state(parley_client *c, parley_state s, int err, uint64_t delay)
{
    c->state = s;
    if (c->cb.on_state) c->cb.on_state(c, s, err, delay, c->ud);
}

static void uv_poll_closed(uv_handle_t *h)
{
    uv_poll_box *b = (uv_poll_box *)h;
    b->A.free_fn(b->A.ctx, b);
}

/* Stops watching and closes the socket (the poll handle first: libuv must
 * not watch a closed fd). */
static void release_fd(parley_client *c)
{
    if (c->poll) {
        uv_poll_stop(&c->poll->h);
        uv_close((uv_handle_t *)&c->poll->h, uv_poll_closed);
        c->poll = NULL;
        c->poll_fd = -1;
    }
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void close_socket(parley_client *c)
{
    release_fd(c);
    c->gen++;
    c->in_len = c->out_len = c->out_off = c->msg_len = 0;
    memset(&c->rd, 0, sizeof c->rd);
    c->close_sent = false;
    c->hello = false;
    c->dead = 0;
    c->dead_retry = 0;
    c->dead_close = 0;
    c->ping_at = 0;
    if (c->in_cap > 4 * READ_CHUNK) { /* give big buffers back while idle */
        xfree(c, c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

static void attempt(parley_client *c);

/* The connection failed or was lost: back off and retry, or stop for good. */
static void lose(parley_client *c, int err, uint64_t retry_after, uint16_t close_code)
{
    uint64_t now = now_ms(c);
    bool was_up = c->hello;
    uint64_t up = was_up ? now - c->opened_at : 0;
    close_socket(c);
    client_outbox_disconnected(&c->ob);
    for (size_t i = 0; i < c->nconvs; i++) {
        conv_state *cs = c->convs[i];
        cs->seq.syncing = false;
        if (cs->read.want) client_cursor_reconnected(&cs->read);
        if (cs->delivered.want) client_cursor_reconnected(&cs->delivered);
    }
    c->dirty = true;
    c->walk = WALK_NONE; /* the next hello walks again */
    c->walk_again = false;
    c->lasterr.err = err;
    c->lasterr.close_code = close_code;
    if (!c->started) return;
    if (err == ERR_AUTH) {
        c->started = false;
        c->phase = PH_CLOSED;
        c->close_err = err;
        set_state(c, PARLEY_CLOSED, err, 0);
        return;
    }
    if (up >= STABLE_MS) client_backoff_reset(&c->bo);
    /* The next attempt goes to the next server, unless a REST call has
     * moved on already (to one that answered). */
    if (c->nurls > 1 && c->cur == c->ws_server) use_server(c, (c->cur + 1) % c->nurls);
    uint64_t delay = client_backoff_next(&c->bo, rnd64(c), retry_after);
    c->retry_at = now + delay;
    c->phase = PH_BACKOFF;
    set_state(c, PARLEY_BACKOFF, err, delay);
}

static void start_handshake(parley_client *c)
{
    uint8_t key[16];
    uint64_t a = rnd64(c), b = rnd64(c);
    memcpy(key, &a, 8);
    memcpy(key + 8, &b, 8);
    char k64[32];
    client_http_base64(key, 16, k64);
    ws_accept_key(k64, 24, c->ws_accept);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s/v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: parley.v1.json\r\n"
                     "Authorization: Bearer %s\r\nUser-Agent: libparley/0.1\r\n\r\n",
                     c->urls[c->ws_server].prefix, c->urls[c->ws_server].hostport, k64, c->token);
    if (n < 0 || (size_t)n >= sizeof req || out_reserve(c, (size_t)n) < 0) {
        c->dead = ERR_NOMEM;
        return;
    }
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
    c->phase = PH_HANDSHAKE;
    flush(c);
}

/* Starts a TCP connect to addrs[addr_i], moving on past immediate failures. */
static void connect_next(parley_client *c)
{
    while (c->addr_i < c->naddr) {
        bool inprog;
        int fd = client_http_connect_start(&c->addrs[c->addr_i], c->alens[c->addr_i], &inprog);
        if (fd < 0) { c->addr_i++; continue; }
        c->fd = fd;
        c->phase = PH_CONNECT;
        if (!inprog) start_handshake(c);
        return;
    }
    c->phase = PH_CONNECT;
    c->dead = ERR_IO;
}

static void attempt(parley_client *c)
{
    set_error(c, 0, 0, "", "");
    c->phase_deadline = now_ms(c) + c->o.connect_timeout_ms;
    set_state(c, PARLEY_CONNECTING, 0, 0);
    if (!c->started) return; /* the callback closed us */
    c->ws_server = c->cur;
    int n = client_http_resolve(&c->urls[c->ws_server], c->addrs, c->alens, 8);
    c->naddr = n > 0 ? n : 0;
    c->addr_i = 0;
    if (n <= 0) {
        c->phase = PH_CONNECT;
        c->dead = ERR_IO;
        set_error(c, ERR_IO, 0, "", "cannot resolve the server's name");
        return;
    }
    connect_next(c);
}

/* ---- incoming frames -------------------------------------------------------------- */

static int get_str(const json_obj *o, const char *key, char *out, size_t cap)
{
    int n = json_get_str(o, key, out, cap);
    if (n < 0) out[0] = 0;
    return n;
}

/* Hands a message (raw JSON object) to on_message. */
static void deliver(parley_client *c, conv_state *cs, const char *s, size_t n)
{
    json_obj o;
    if (json_parse_object(s, n, &o) < 0) return;
    char from[PARLEY_USER_MAX + 32], cmid[PARLEY_CMID_MAX + 32];
    parley_message m;
    memset(&m, 0, sizeof m);
    m.conv = cs->id;
    m.seq = jnum(&o, "seq");
    m.ts = jts(&o, "ts");
    get_str(&o, "from", from, sizeof from);
    get_str(&o, "cmid", cmid, sizeof cmid);
    m.from = from;
    m.cmid = cmid;
    if (cmid[0] && client_outbox_ack(&c->ob, cs->id, cmid) == ERR_OK) {
        /* One of ours that the server stored but whose ack we lost (a sync
         * after a reconnect found it): that is its ack. The resend's own
         * "duplicate" ack will find nothing. */
        if (c->window < c->o.max_inflight) c->window++;
        parley_ack a = {cs->id, m.seq, m.ts, cmid, true};
        if (c->cb.on_ack) c->cb.on_ack(c, &a, c->ud);
        return;
    }
    if (!c->o.manual_delivered && client_cursor_move(&cs->delivered, m.seq)) c->dirty = true;
    if (!c->cb.on_message) return;
    const json_field *b = json_get(&o, "body");
    size_t bl = b ? b->val_len : 4;
    char stackbuf[2048];
    char *buf = 2 * (bl + 1) <= sizeof stackbuf ? stackbuf : xalloc(c, 2 * (bl + 1));
    if (!buf) return;
    memcpy(buf, b ? b->val : "null", bl);
    buf[bl] = 0;
    m.body = buf;
    m.body_len = bl;
    if (b && b->type == JSON_STRING && json_unescape(b->val, b->val_len, buf + bl + 1, bl + 1) >= 0)
        m.text = buf + bl + 1;
    c->cb.on_message(c, &m, c->ud);
    if (buf != stackbuf) xfree(c, buf);
}

/* Delivers held messages that became contiguous. */
static void drain_held(parley_client *c, conv_state *cs, uint64_t gen)
{
    void *item;
    while (c->gen == gen && (item = client_seq_pop(&cs->seq, NULL))) {
        if (item != &own_marker) {
            held_msg *h = item;
            deliver(c, cs, h->json, h->len);
            xfree(c, h);
        }
    }
    while ((item = client_seq_pop_stale(&cs->seq))) free_item(c, item);
}

/* One message seq arrived (s,n: its raw JSON object, or NULL for our own
 * acked message): deliver it in order, hold it over a gap, or drop a dup. */
static void offer(parley_client *c, conv_state *cs, uint64_t seq, const char *s, size_t n)
{
    uint64_t gen = c->gen;
    if (cs->seq.known && seq > cs->seq.highest + 1) {
        void *item = &own_marker;
        if (s) {
            held_msg *h = xalloc(c, sizeof *h + n);
            if (!h) { cs->seq.lost = true; c->dirty = true; return; }
            h->len = n;
            memcpy(h->json, s, n);
            item = h;
        }
        int v = client_seq_offer(&cs->seq, &c->A, seq, item);
        if (v != CLIENT_SEQ_HELD) free_item(c, item);
        if (v != CLIENT_SEQ_DUP) c->dirty = true; /* a gap: sync */
        return;
    }
    int v = client_seq_offer(&cs->seq, &c->A, seq, NULL);
    if (v != CLIENT_SEQ_DELIVER) return;
    if (s) deliver(c, cs, s, n);
    drain_held(c, cs, gen);
}

static void on_hello(parley_client *c, const json_obj *o)
{
    char user[PARLEY_USER_MAX];
    if (get_str(o, "user", user, sizeof user) > 0) memcpy(c->user, user, sizeof user);
    c->hello = true;
    c->opened_at = now_ms(c);
    c->dirty = true;
    /* Resume: what changed while we were away? (pump() sends it first) */
    c->walk = WALK_DUE;
    c->walk_page[0] = 0;
    c->walk_again = false;
    set_state(c, PARLEY_CONNECTED, 0, 0);
}

/* Asks for the walk's next page: the first with changed_since = the last
 * cursor, the others by their page token. */
static void send_walk(parley_client *c)
{
    jbuf j;
    jb_init(&j, 192);
    jb_lit(&j, "{\"type\":\"inbox\",\"id\":\"resume\"");
    if (c->walk_page[0]) {
        jb_lit(&j, ",\"page\":");
        jb_cstr(&j, c->walk_page);
    } else if (c->have_cursor) {
        jb_lit(&j, ",\"changed_since\":");
        jb_u64(&j, c->inbox_cursor);
    }
    jb_lit(&j, "}");
    if (ws_write_json(c, &j) == ERR_OK) c->walk = WALK_WAIT;
}

/* `resync`: the server may have failed to deliver events to this session
 * (docs/protocol.md). Catch up as after a reconnect, on the same
 * connection: the inbox since the cursor, then sync what changed; nothing
 * is resent (the outbox goes on as it was). A walk already on its way may
 * have listed the inbox before the loss: walk once more after it. */
static void on_resync(parley_client *c, const json_obj *o)
{
    if (c->walk == WALK_NONE) {
        c->walk = WALK_DUE;
        c->walk_page[0] = 0;
    } else if (c->walk == WALK_WAIT || c->walk_page[0]) {
        c->walk_again = true;
    } /* else a first page is due: it is asked after this frame */
    pump(c); /* the walk goes before the callback (which may block on REST) */
    if (!c->cb.on_resync) return;
    char reason[64];
    get_str(o, "reason", reason, sizeof reason);
    c->cb.on_resync(c, reason, c->ud);
}

static int inbox_conv(void *arg, const char *v, size_t len, uint8_t type)
{
    parley_client *c = arg;
    json_obj o;
    if (type != JSON_OBJECT || json_parse_object(v, len, &o) < 0) return 0;
    conv_state *cs = conv_find(c, jnum(&o, "id"));
    if (cs && cs->seq.known && jnum(&o, "last_seq") > cs->seq.highest) send_sync(c, cs);
    return 0;
}

static void on_inbox(parley_client *c, const json_obj *o)
{
    const json_field *f = json_get(o, "inbox");
    json_obj in;
    if (!f || f->type != JSON_OBJECT || json_parse_object(f->val, f->val_len, &in) < 0) return;
    const json_field *convs = json_get(&in, "conversations");
    if (convs && convs->type == JSON_ARRAY) json_array_each(convs->val, convs->val_len, inbox_conv, c);
    if (!connected(c) || c->walk != WALK_WAIT) return;
    if (jbool(&in, "more")) {
        /* The next page of the walk; the cursor is kept only after the last
         * (a walk broken off starts again from the old one). */
        if (get_str(&in, "next", c->walk_page, sizeof c->walk_page) <= 0) {
            c->walk_page[0] = 0;
            c->walk = WALK_NONE; /* a broken answer: the next walk starts over */
            return;
        }
        c->walk = WALK_DUE;
        return;
    }
    uint64_t cur;
    if (json_get_u64(&in, "cursor", &cur) == ERR_OK) {
        c->inbox_cursor = cur;
        c->have_cursor = true;
    }
    c->walk = WALK_NONE;
    c->walk_page[0] = 0;
    if (c->walk_again) { /* from the cursor this walk ended with */
        c->walk_again = false;
        c->walk = WALK_DUE;
    }
}

typedef struct hist_ctx {
    parley_client *c;
    conv_state *cs;
    uint64_t gen;
} hist_ctx;

static int hist_msg(void *arg, const char *v, size_t len, uint8_t type)
{
    hist_ctx *h = arg;
    if (h->c->gen != h->gen || conv_find(h->c, h->cs->id) != h->cs) return 1;
    json_obj o;
    if (type != JSON_OBJECT || json_parse_object(v, len, &o) < 0) return 0;
    uint64_t seq = jnum(&o, "seq");
    if (seq) offer(h->c, h->cs, seq, v, len);
    return 0;
}

static void on_history(parley_client *c, const json_obj *o)
{
    conv_state *cs = conv_find(c, jnum(o, "conv"));
    if (!cs) return;
    uint64_t before = cs->seq.highest;
    hist_ctx h = {c, cs, c->gen};
    const json_field *f = json_get(o, "messages");
    if (f && f->type == JSON_ARRAY) json_array_each(f->val, f->val_len, hist_msg, &h);
    if (c->gen != h.gen || conv_find(c, h.cs->id) != cs) return;
    bool again = client_seq_sync_done(&cs->seq, jbool(o, "more"), before);
    drain_held(c, cs, h.gen); /* a skipped gap releases what follows */
    if (again) send_sync(c, cs);
}

static void on_ack(parley_client *c, const json_obj *o)
{
    char cmid[PARLEY_CMID_MAX + 8];
    if (get_str(o, "cmid", cmid, sizeof cmid) <= 0) return;
    parley_ack a = {jnum(o, "conv"), jnum(o, "seq"), jts(o, "ts"), cmid, jbool(o, "duplicate")};
    if (client_outbox_ack(&c->ob, a.conv, cmid) < 0) return; /* a duplicate ack */
    if (c->window < c->o.max_inflight) c->window++;
    uint64_t gen = c->gen;
    if (c->cb.on_ack) c->cb.on_ack(c, &a, c->ud);
    if (c->gen != gen || !a.conv || !a.seq) return;
    conv_state *cs = conv_get(c, a.conv);
    if (cs) offer(c, cs, a.seq, NULL, 0);
}

static void on_msg(parley_client *c, const json_obj *o, const char *s, size_t n)
{
    uint64_t conv = jnum(o, "conv"), seq = jnum(o, "seq");
    if (!conv || !seq) return;
    conv_state *cs = conv_get(c, conv);
    if (cs) offer(c, cs, seq, s, n);
}

static void on_error_frame(parley_client *c, const json_obj *o)
{
    parley_error e;
    memset(&e, 0, sizeof e);
    get_str(o, "code", e.code, sizeof e.code);
    get_str(o, "message", e.message, sizeof e.message);
    e.retry_after_ms = jnum(o, "retry_after_ms");
    e.err = err_from_code(e.code, 0);
    char ref[128] = "";
    const json_field *rf = json_get(o, "ref");
    if (rf && rf->type == JSON_STRING) json_unescape(rf->val, rf->val_len, ref, sizeof ref);
    client_outmsg *m = ref[0] ? client_outbox_find(&c->ob, 0, ref) : NULL;
    bool slow = e.err == ERR_BUSY || e.err == ERR_RATE;
    uint64_t now = now_ms(c), retry = e.retry_after_ms ? e.retry_after_ms : 1000;
    if (slow) {
        /* Backpressure: the whole connection pauses for retry_after_ms
         * (refusals of what was already on its way name the same end), and
         * the window halves once per pause. */
        if (!paused(c, now)) c->window = c->window > 1 ? c->window / 2 : 1;
        client_outbox_pause(&c->ob, now + retry);
    }
    if (m) {
        e.conv = m->conv;
        copy_str(e.cmid, sizeof e.cmid, ref);
        if (slow || e.err == ERR_IO) {
            /* transient: resend the same cmid later (holds back the rest) */
            client_outbox_defer(&c->ob, ref, now + retry);
            return;
        }
        client_outbox_remove(&c->ob, ref);
    } else if (strcmp(ref, "resume") == 0 && c->walk == WALK_WAIT) {
        /* A page of the walk was refused: ask again after the pause (busy,
         * rate_limited: handled here); anything else ends the walk (the
         * next reconnect or resync walks again) and is reported. */
        c->walk = slow ? WALK_DUE : WALK_NONE;
        if (slow) return;
        c->walk_again = false;
    } else if (slow && !rf) {
        /* Refused without saying which frame (the frame rate limit): every
         * message in flight may be the one. Resend those still unacked after
         * the pause; the server acks any it had stored as a duplicate. */
        client_outbox_suspect(&c->ob, now, now + retry);
        return;
    } else if ((ref[0] == 's' || ref[0] == 'r' || ref[0] == 'd' || ref[0] == 't') && ref[1] == ':') {
        e.conv = strtoull(ref + 2, NULL, 10);
        conv_state *cs = conv_find(c, e.conv);
        if (cs && ref[0] == 's') {
            cs->seq.syncing = false;
            if (e.err == ERR_FORBIDDEN) conv_drop(c, e.conv); /* not a member: stop tracking */
            else if (slow) c->dirty = true; /* the sync is wanted again */
        }
        if (slow && ref[0] != 't') {
            /* a refused cursor or sync: try again after the pause */
            if (cs && ref[0] == 'r') cs->read.sent = 0;
            if (cs && ref[0] == 'd') cs->delivered.sent = 0;
            c->dirty = true;
        }
    }
    if (c->cb.on_error) c->cb.on_error(c, &e, c->ud);
}

static void on_text(parley_client *c, const char *s, size_t n)
{
    json_obj o;
    if (json_parse_object(s, n, &o) < 0) return; /* not ours to judge: ignore */
    char type[16];
    if (get_str(&o, "type", type, sizeof type) <= 0) return;
    if (!c->hello) {
        if (strcmp(type, "hello") == 0) on_hello(c, &o);
        return;
    }
    if (strcmp(type, "msg") == 0) on_msg(c, &o, s, n);
    else if (strcmp(type, "ack") == 0) on_ack(c, &o);
    else if (strcmp(type, "history") == 0) on_history(c, &o);
    else if (strcmp(type, "receipt") == 0) {
        char user[PARLEY_USER_MAX + 8];
        get_str(&o, "user", user, sizeof user);
        parley_receipt r = {jnum(&o, "conv"), user, jnum(&o, "delivered"), jnum(&o, "read")};
        if (c->cb.on_receipt) c->cb.on_receipt(c, &r, c->ud);
    } else if (strcmp(type, "presence") == 0) {
        char user[PARLEY_USER_MAX + 8];
        get_str(&o, "user", user, sizeof user);
        parley_presence p = {user, jbool(&o, "online"), jts(&o, "last_seen")};
        if (c->cb.on_presence) c->cb.on_presence(c, &p, c->ud);
    } else if (strcmp(type, "typing") == 0) {
        char user[PARLEY_USER_MAX + 8];
        get_str(&o, "user", user, sizeof user);
        if (c->cb.on_typing) c->cb.on_typing(c, jnum(&o, "conv"), user, c->ud);
    } else if (strcmp(type, "conv") == 0) {
        const json_field *f = json_get(&o, "conv");
        if (!f || f->type != JSON_OBJECT || !c->cb.on_conv) return;
        arena *ar;
        parley_conv *cv = result_new(c, sizeof *cv, &ar);
        if (cv && parse_conv(ar, f->val, f->val_len, cv) == ERR_OK) c->cb.on_conv(c, cv, false, c->ud);
        result_free(cv);
    } else if (strcmp(type, "removed") == 0) {
        parley_conv cv;
        memset(&cv, 0, sizeof cv);
        cv.id = jnum(&o, "conv");
        cv.type = cv.name = "";
        conv_drop(c, cv.id);
        if (c->cb.on_conv) c->cb.on_conv(c, &cv, true, c->ud);
    } else if (strcmp(type, "inbox") == 0) on_inbox(c, &o);
    else if (strcmp(type, "error") == 0) on_error_frame(c, &o);
    else if (strcmp(type, "resync") == 0) on_resync(c, &o);
    /* pong and unknown types: nothing (activity is counted already) */
}

static void fail_ws(parley_client *c, int err, uint16_t code)
{
    if (!c->close_sent && c->phase == PH_OPEN) {
        uint8_t p[WS_MAX_CONTROL];
        size_t n = ws_close_payload(p, code, "");
        ws_write(c, WS_OP_CLOSE, p, n);
        flush(c);
    }
    c->dead = err;
    c->dead_close = code;
}

/* Parses the frames in c->in. */
static void parse_frames(parley_client *c)
{
    uint64_t gen = c->gen;
    size_t off = 0;
    while (c->gen == gen && !c->dead && off < c->in_len) {
        ws_frame f;
        uint16_t cc = 0;
        int n = ws_parse_frame(c->in + off, c->in_len - off, WS_CLIENT, &c->lim, &f, &cc);
        if (n == ERR_AGAIN) break;
        if (n < 0 || ws_reader_check(&c->rd, &f, &c->lim, &cc) < 0) {
            fail_ws(c, ERR_PROTOCOL, cc ? cc : WS_CLOSE_PROTOCOL);
            break;
        }
        off += (size_t)n;
        c->last_rx = now_ms(c);
        c->ping_at = 0;
        switch (f.opcode) {
        case WS_OP_TEXT:
        case WS_OP_CONT:
            if (f.fin && c->msg_len == 0 && f.opcode == WS_OP_TEXT) {
                on_text(c, (const char *)f.payload, (size_t)f.len);
                break;
            }
            if (c->msg_cap - c->msg_len < f.len) {
                size_t cap = c->msg_cap ? c->msg_cap : 4096;
                while (cap - c->msg_len < f.len) cap *= 2;
                uint8_t *b = c->A.realloc_fn(c->A.ctx, c->msg, cap);
                if (!b) { fail_ws(c, ERR_NOMEM, WS_CLOSE_INTERNAL); break; }
                c->msg = b;
                c->msg_cap = cap;
            }
            memcpy(c->msg + c->msg_len, f.payload, (size_t)f.len);
            c->msg_len += (size_t)f.len;
            if (f.fin) {
                size_t ml = c->msg_len;
                c->msg_len = 0;
                on_text(c, (const char *)c->msg, ml);
            }
            break;
        case WS_OP_BINARY:
            fail_ws(c, ERR_PROTOCOL, WS_CLOSE_UNSUPPORTED);
            break;
        case WS_OP_PING:
            ws_write(c, WS_OP_PONG, f.payload, (size_t)f.len);
            break;
        case WS_OP_PONG:
            break;
        case WS_OP_CLOSE: {
            uint16_t code = f.len >= 2 ? (uint16_t)(f.payload[0] << 8 | f.payload[1])
                                       : WS_CLOSE_NO_STATUS;
            if (!c->close_sent) {
                uint8_t p[2] = {f.payload && f.len >= 2 ? f.payload[0] : 0x03,
                                f.payload && f.len >= 2 ? f.payload[1] : 0xe8};
                ws_write(c, WS_OP_CLOSE, p, 2);
                flush(c);
            }
            /* Reconnect whatever the code: 1008 means a revoked or expired
             * token but also "too many refused requests", and only the next
             * upgrade tells (401: stop for good). */
            char reason[WS_MAX_CONTROL + 1] = "";
            if (f.len > 2) {
                memcpy(reason, f.payload + 2, (size_t)f.len - 2);
                reason[f.len - 2] = 0;
                for (char *q = reason; *q; q++)
                    if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
            }
            char msg[200];
            snprintf(msg, sizeof msg, "closed by the server (%u%s%s)", code, reason[0] ? ": " : "",
                     reason);
            set_error(c, ERR_CLOSED, 0, "", msg);
            c->dead = ERR_CLOSED;
            c->dead_close = code;
            break;
        }
        }
    }
    if (c->gen != gen) return;
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
}

static void parse_handshake(parley_client *c)
{
    client_http_response r;
    int n = client_http_parse_response((char *)c->in, c->in_len, false, false, 65536, &r);
    if (n == ERR_AGAIN) return;
    if (n < 0) {
        set_error(c, ERR_PROTOCOL, 0, "", "bad handshake response");
        c->dead = ERR_PROTOCOL;
        return;
    }
    if (r.status != 101) {
        char code[48], msg[256];
        parse_error_body(r.body.p, r.body.n, code, sizeof code, msg, sizeof msg);
        int err = err_from_code(code, r.status);
        if (!msg[0]) snprintf(msg, sizeof msg, "WebSocket upgrade refused: HTTP %d", r.status);
        uint64_t ra = client_http_retry_after_ms(&r);
        set_error(c, err, r.status, code, msg);
        c->lasterr.retry_after_ms = ra;
        if (err != ERR_AUTH && err != ERR_BUSY && err != ERR_RATE) err = ERR_PROTOCOL;
        c->dead = err;
        c->dead_retry = ra;
        return;
    }
    const http_str *acc = client_http_header(&r, "sec-websocket-accept");
    const http_str *up = client_http_header(&r, "upgrade");
    if (!acc || acc->n != 28 || memcmp(acc->p, c->ws_accept, 28) != 0 || !up ||
        !http_str_ieq(*up, "websocket")) {
        set_error(c, ERR_PROTOCOL, 101, "", "bad WebSocket accept");
        c->dead = ERR_PROTOCOL;
        return;
    }
    memmove(c->in, c->in + n, c->in_len - (size_t)n);
    c->in_len -= (size_t)n;
    c->phase = PH_OPEN;
    c->last_rx = now_ms(c);
    parse_frames(c);
}

static void on_readable(parley_client *c)
{
    uint64_t gen = c->gen;
    for (int rounds = 0; rounds < 64 && c->gen == gen && !c->dead; rounds++) {
        size_t limit = (size_t)c->o.max_message + WS_MAX_HEADER + 2 * READ_CHUNK;
        if (c->in_cap - c->in_len < READ_CHUNK / 4) {
            if (c->in_cap >= limit) { fail_ws(c, ERR_TOO_LARGE, WS_CLOSE_TOO_BIG); break; }
            size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
            uint8_t *b = c->A.realloc_fn(c->A.ctx, c->in, cap);
            if (!b) { c->dead = ERR_NOMEM; break; }
            c->in = b;
            c->in_cap = cap;
        }
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (r <= 0) {
            if (!c->dead) {
                c->dead = r == 0 ? ERR_CLOSED : ERR_IO;
                if (c->phase == PH_HANDSHAKE) set_error(c, c->dead, 0, "", "connection closed during the handshake");
            }
            break;
        }
        c->in_len += (size_t)r;
        if (c->phase == PH_HANDSHAKE) parse_handshake(c);
        else if (c->phase == PH_OPEN) parse_frames(c);
    }
}

/* Socket readiness (revents as poll(2)). */
static void process(parley_client *c, int revents)
{
    if (c->fd < 0) return;
    if (c->phase == PH_CONNECT) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) err = errno;
        if (err == 0 && (revents & POLLOUT)) {
            start_handshake(c);
        } else if (err != 0 || (revents & (POLLERR | POLLHUP))) {
            release_fd(c);
            c->addr_i++;
            connect_next(c);
        }
    } else {
        if (revents & POLLOUT) flush(c);
        if (revents & (POLLIN | POLLERR | POLLHUP)) on_readable(c);
    }
    if (c->dead) {
        if (!c->lasterr.err) set_error(c, c->dead, 0, "", c->dead == ERR_IO ? "connection failed" : NULL);
        lose(c, c->dead, c->dead_retry, c->dead_close);
        return;
    }
    pump(c);
}

/* Timers. */
static void tick(parley_client *c)
{
    uint64_t now = now_ms(c);
    if (c->phase == PH_BACKOFF && now >= c->retry_at) attempt(c);
    if ((c->phase == PH_CONNECT || c->phase == PH_HANDSHAKE || (c->phase == PH_OPEN && !c->hello)) &&
        now >= c->phase_deadline && !c->dead) {
        set_error(c, ERR_TIMEOUT, 0, "", "connect timed out");
        c->dead = ERR_TIMEOUT;
    }
    if (c->phase == PH_OPEN && c->hello && !c->dead) {
        uint64_t ka = c->o.keepalive_ms;
        if (now - c->last_rx >= 2 * ka) {
            set_error(c, ERR_TIMEOUT, 0, "", "the server stopped answering");
            c->dead = ERR_TIMEOUT;
        } else if (now - c->last_rx >= ka && !c->ping_at) {
            jbuf j;
            jb_init(&j, 16);
            jb_lit(&j, "{\"type\":\"ping\"}");
            ws_write_json(c, &j);
            c->ping_at = now;
        }
    }
    if (c->dead) {
        lose(c, c->dead, c->dead_retry, c->dead_close);
        return;
    }
    pump(c);
}

static uint64_t next_deadline(parley_client *c)
{
    switch (c->phase) {
    case PH_BACKOFF: return c->retry_at;
    case PH_CONNECT:
    case PH_HANDSHAKE: return c->phase_deadline;
    case PH_OPEN: {
        if (!c->hello) return c->phase_deadline;
        uint64_t ka = c->o.keepalive_ms;
        uint64_t d = c->ping_at ? c->last_rx + 2 * ka : c->last_rx + ka;
        if (!connected(c)) return d; /* pump() writes nothing now */
        /* When pump() has something to write. The clock has moved on since
         * pump() last looked, and a pause or deferral may have ended in
         * between: a time already past still counts (else nothing would wake
         * us before the keepalive), and a pause next() has not cleared yet is
         * one pump() has not seen end (held cursors and syncs go then). */
        uint64_t ob = client_outbox_deadline(&c->ob, c->o.ack_timeout_ms, c->window);
        if ((c->dirty || c->walk == WALK_DUE) && c->ob.paused_until && c->ob.paused_until < ob)
            ob = c->ob.paused_until;
        if (ob < d) {
            uint64_t now = now_ms(c);
            d = ob > now ? ob : now + 1; /* due now: 1 ms on, never a busy timer */
        }
        return d;
    }
    default: return UINT64_MAX;
    }
}

static short want_events(const parley_client *c)
{
    if (c->fd < 0) return 0;
    if (c->phase == PH_CONNECT) return POLLOUT;
    return (short)(POLLIN | (c->out_off < c->out_len ? POLLOUT : 0));
}

/* ---- public live API ----------------------------------------------------------------- */

int parley_connect(parley_client *c)
{
    if (c->started) return ERR_OK;
    if (!c->token[0]) {
        set_error(c, ERR_AUTH, 0, "", "not logged in (no token)");
        return ERR_AUTH;
    }
    c->started = true;
    c->close_err = 0;
    client_backoff_reset(&c->bo);
    attempt(c);
    if (c->dead) {
        lose(c, c->dead, 0, 0);
    }
    uv_update(c);
    return ERR_OK;
}

int parley_close(parley_client *c)
{
    bool was = c->started || c->fd >= 0;
    c->started = false;
    if (c->fd >= 0 && c->phase == PH_OPEN && !c->close_sent) {
        uint8_t p[WS_MAX_CONTROL];
        size_t n = ws_close_payload(p, WS_CLOSE_NORMAL, "bye");
        c->dead = 0;
        ws_write(c, WS_OP_CLOSE, p, n);
        flush(c); /* best effort, non-blocking */
    }
    close_socket(c);
    client_outbox_disconnected(&c->ob);
    for (size_t i = 0; i < c->nconvs; i++) c->convs[i]->seq.syncing = false;
    c->walk = WALK_NONE;
    c->walk_again = false;
    c->phase = PH_IDLE;
    if (was) set_state(c, PARLEY_IDLE, 0, 0);
    uv_update(c);
    return ERR_OK;
}

parley_state parley_get_state(const parley_client *c) { return c->state; }
const char *parley_user(const parley_client *c) { return c->user; }

int parley_run(parley_client *c, int timeout_ms)
{
    if (c->loop) return ERR_INVALID;
    c->brk = false;
    uint64_t end = timeout_ms < 0 ? UINT64_MAX : now_ms(c) + (uint64_t)timeout_ms;
    for (;;) { /* at least one pass, even with timeout 0 */
        if (!c->started) return c->close_err ? c->close_err : ERR_CLOSED;
        tick(c);
        if (c->brk) break;
        if (!c->started) return c->close_err ? c->close_err : ERR_CLOSED;
        uint64_t now = now_ms(c), dl = next_deadline(c);
        if (dl > end) dl = end;
        uint64_t wait = dl > now ? dl - now : 0;
        if (wait > 60000) wait = 60000;
        struct pollfd p = {c->fd, want_events(c), 0};
        int rc = poll(&p, c->fd >= 0 ? 1 : 0, (int)wait);
        if (rc < 0 && errno != EINTR) return ERR_IO;
        if (rc > 0) process(c, p.revents);
        if (c->brk || now_ms(c) >= end) break;
    }
    c->brk = false;
    return ERR_OK;
}

void parley_break(parley_client *c) { c->brk = true; }

int parley_send_json(parley_client *c, uint64_t conv, const char *json, size_t len,
                     const char *cmid, char *cmid_out)
{
    if (!conv || !json) return ERR_INVALID;
    uint8_t type;
    if (json_validate(json, len, &type) < 0 || type == JSON_NULL) return ERR_INVALID;
    char id[PARLEY_CMID_MAX];
    if (cmid) {
        size_t n = strlen(cmid);
        if (n == 0 || n >= PARLEY_CMID_MAX || !utf8_valid((const uint8_t *)cmid, n)) return ERR_INVALID;
        memcpy(id, cmid, n + 1);
    } else {
        make_cmid(c, id);
    }
    int rc = client_outbox_add(&c->ob, conv, id, json, len);
    if (rc < 0) return rc;
    if (cmid_out) memcpy(cmid_out, id, strlen(id) + 1);
    pump(c);
    if (c->dead) lose(c, c->dead, c->dead_retry, c->dead_close);
    uv_update(c);
    return ERR_OK;
}

int parley_send(parley_client *c, uint64_t conv, const char *text, char *cmid_out)
{
    if (!text) return ERR_INVALID;
    size_t n = strlen(text);
    if (!utf8_valid((const uint8_t *)text, n)) return ERR_UTF8;
    jbuf j;
    jb_init(&j, n + 16);
    jb_str(&j, text, n);
    size_t len;
    const char *d = jb_data(&j, &len);
    int rc = d ? parley_send_json(c, conv, d, len, NULL, cmid_out) : ERR_NOMEM;
    jb_free(&j);
    return rc;
}

size_t parley_pending(const parley_client *c) { return client_outbox_count(&c->ob); }

int parley_track(parley_client *c, uint64_t conv, uint64_t highest)
{
    if (!conv) return ERR_INVALID;
    conv_state *cs = conv_get(c, conv);
    if (!cs) return ERR_NOMEM;
    client_seq_start(&cs->seq, highest);
    void *item;
    while ((item = client_seq_pop_stale(&cs->seq))) free_item(c, item);
    drain_held(c, cs, c->gen);
    return ERR_OK;
}

uint64_t parley_highest(const parley_client *c, uint64_t conv)
{
    conv_state *cs = conv_find(c, conv);
    return cs ? cs->seq.highest : 0;
}

int parley_sync(parley_client *c, uint64_t conv)
{
    conv_state *cs = conv_find(c, conv);
    if (!cs || !cs->seq.known) return ERR_NOT_FOUND;
    if (!connected(c)) return ERR_CLOSED;
    send_sync(c, cs);
    flush(c);
    if (c->dead) lose(c, c->dead, c->dead_retry, c->dead_close);
    uv_update(c);
    return ERR_OK;
}

static int mark(parley_client *c, uint64_t conv, uint64_t seq, bool read)
{
    if (!conv || !seq) return ERR_INVALID;
    conv_state *cs = conv_get(c, conv);
    if (!cs) return ERR_NOMEM;
    bool moved = client_cursor_move(read ? &cs->read : &cs->delivered, seq);
    if (read) client_cursor_move(&cs->delivered, seq); /* read implies delivered */
    if (!moved) return 0;
    c->dirty = true;
    pump(c);
    if (c->dead) lose(c, c->dead, c->dead_retry, c->dead_close);
    uv_update(c);
    return 1;
}

int parley_mark_delivered(parley_client *c, uint64_t conv, uint64_t seq) { return mark(c, conv, seq, false); }
int parley_mark_read(parley_client *c, uint64_t conv, uint64_t seq) { return mark(c, conv, seq, true); }

int parley_typing(parley_client *c, uint64_t conv)
{
    if (!conv) return ERR_INVALID;
    if (!connected(c)) return ERR_CLOSED;
    conv_state *cs = conv_get(c, conv);
    if (!cs) return ERR_NOMEM;
    uint64_t now = now_ms(c);
    if (cs->typing_at && now - cs->typing_at < TYPING_EVERY_MS) return 0;
    if (paused(c, now)) return 0; /* lossy: not during a pause */
    jbuf j;
    jb_init(&j, 64);
    jb_lit(&j, "{\"type\":\"typing\",\"conv\":");
    jb_u64(&j, conv);
    jb_lit(&j, ",\"id\":\"t:");
    jb_u64(&j, conv);
    jb_lit(&j, "\"}");
    int rc = ws_write_json(c, &j);
    if (rc < 0) return rc;
    cs->typing_at = now;
    flush(c);
    if (c->dead) lose(c, c->dead, c->dead_retry, c->dead_close);
    uv_update(c);
    return 1;
}

/* ---- libuv driver ---------------------------------------------------------------------- */

static void uv_on_poll(uv_poll_t *h, int status, int events)
{
    parley_client *c = h->data;
    int rev = 0;
    if (status < 0) rev |= POLLERR;
    if (events & UV_READABLE) rev |= POLLIN;
    if (events & UV_WRITABLE) rev |= POLLOUT;
    if (events & UV_DISCONNECT) rev |= POLLHUP;
    process(c, rev);
    uv_update(c);
}

static void uv_on_timer(uv_timer_t *h)
{
    parley_client *c = h->data;
    tick(c);
    uv_update(c);
}

static void uv_timer_closed(uv_handle_t *h)
{
    uv_timer_box *b = (uv_timer_box *)h;
    b->A.free_fn(b->A.ctx, b);
}

/* Makes the uv handles match the client: a poll on the current socket with
 * the events it needs, the timer at the next deadline. */
static void uv_update(parley_client *c)
{
    if (!c->loop) return;
    if (c->poll && c->poll_fd != c->fd) {
        uv_poll_stop(&c->poll->h);
        uv_close((uv_handle_t *)&c->poll->h, uv_poll_closed);
        c->poll = NULL;
        c->poll_fd = -1;
    }
    if (c->fd >= 0 && !c->poll) {
        uv_poll_box *b = xalloc(c, sizeof *b);
        if (b && uv_poll_init_socket(c->loop, &b->h, c->fd) == 0) {
            b->A = c->A;
            b->h.data = c;
            c->poll = b;
            c->poll_fd = c->fd;
        } else {
            xfree(c, b);
            if (c->started) { /* cannot watch it: treat as a failed connection */
                set_error(c, ERR_IO, 0, "", "cannot watch the socket");
                lose(c, ERR_IO, 0, 0);
            }
        }
    }
    if (c->poll) {
        short ev = want_events(c);
        int uvev = ((ev & POLLIN) ? UV_READABLE : 0) | ((ev & POLLOUT) ? UV_WRITABLE : 0);
        uv_poll_start(&c->poll->h, uvev, uv_on_poll);
    }
    if (c->timer) {
        uint64_t dl = next_deadline(c), now = now_ms(c);
        if (dl == UINT64_MAX) uv_timer_stop(&c->timer->h);
        else uv_timer_start(&c->timer->h, uv_on_timer, dl > now ? dl - now : 0, 0);
    }
}

int parley_attach_uv(parley_client *c, void *loop)
{
    if (!loop || c->loop || c->started || c->fd >= 0) return ERR_INVALID;
    uv_timer_box *t = xalloc(c, sizeof *t);
    if (!t) return ERR_NOMEM;
    if (uv_timer_init(loop, &t->h) != 0) { xfree(c, t); return ERR_IO; }
    t->A = c->A;
    t->h.data = c;
    c->timer = t;
    c->loop = loop;
    return ERR_OK;
}

/* ---- teardown -------------------------------------------------------------------------- */

void parley_free(parley_client *c)
{
    if (!c) return;
    c->started = false;
    close_socket(c);
    if (c->timer) {
        uv_timer_stop(&c->timer->h);
        uv_close((uv_handle_t *)&c->timer->h, uv_timer_closed);
        c->timer = NULL;
    }
    for (size_t i = 0; i < c->nconvs; i++) conv_free_state(c, c->convs[i]);
    xfree(c, c->convs);
    client_outbox_free(&c->ob);
    xfree(c, c->in);
    xfree(c, c->out);
    xfree(c, c->msg);
    xfree(c, c->urls);
    parley_allocator a = c->A;
    a.free_fn(a.ctx, c);
}
