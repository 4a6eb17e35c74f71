#include "base/config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"

/* ---- the table ------------------------------------------------------------
 *
 * One entry per setting. It alone gives the flag (--name), the config file
 * key (name), the environment variable (PARLEY_NAME, '-' as '_'), the
 * default, the bounds, the parsing and the --help line.
 */

enum opt_type { T_STR, T_BOOL, T_ENUM, T_INT, T_U32, T_SIZE }; /* how the field is stored */
enum opt_unit { U_NONE, U_BYTES, U_US, U_MS, U_S };          /* what a number counts */

typedef struct opt {
    const char *name;           /* without "--" */
    enum opt_type type;
    enum opt_unit unit;         /* numbers: which suffixes a value may carry */
    size_t off;                 /* offset of the field in config */
    size_t cap;                 /* T_STR: size of the char array, with its NUL */
    long long def;              /* numbers, T_BOOL (0/1), T_ENUM (index) */
    const char *def_str;        /* T_STR */
    long long (*def_fn)(void);  /* a default known only at run time */
    const char *shown;          /* the default's name in --help when it is not the value */
    long long min, max;         /* numbers, in the field's unit */
    const char *const *choices; /* T_ENUM: NULL-terminated; the value is the index */
    const char *arg;            /* --help: what the value is */
    const char *help;
    const char *section;        /* --help: a heading printed before this entry */
    bool (*check)(const char *v); /* T_STR: a non-empty value must pass */
    const char *check_what;     /* ... what it must be, for the message */
} opt;

/* Each macro checks at compile time that the field has the storage type its
 * parser writes (a negative array size otherwise). */
#define FIELD_(f, T) \
    (offsetof(config, f) + 0 * sizeof(char[_Generic(((config *)0)->f, T: 1, default: -1)]))
#define STR(f)      .type = T_STR, .off = FIELD_(f, char *), .cap = sizeof(((config *)0)->f)
#define BOOL(f)     .type = T_BOOL, .off = FIELD_(f, int)
#define ENUM(f, ch) .type = T_ENUM, .off = FIELD_(f, int), .choices = ch
#define INT(f)      .type = T_INT, .off = FIELD_(f, int)
#define U32(f, u)   .type = T_U32, .unit = u, .off = FIELD_(f, uint32_t)
#define SIZE(f, u)  .type = T_SIZE, .unit = u, .off = FIELD_(f, size_t)

#define KiB (1LL << 10)
#define MiB (1LL << 20)
#define GiB (1LL << 30)
#define TiB (1LL << 40)
#define RATE_MAX 100000000

_Static_assert(LOG_ERROR == 0 && LOG_WARN == 1 && LOG_INFO == 2 && LOG_DEBUG == 3,
               "log_levels[] is indexed by enum log_level");
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};

static long long cores(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (n > 256 ? 256 : n) : 1;
}

static bool is_store_url(const char *v)
{
    return !*v || !strncmp(v, "postgresql://", 13) || !strncmp(v, "postgres://", 11);
}

static bool is_bus_url(const char *v)
{
    return !*v || !strncmp(v, "redis://", 8);
}

/* The node id rule of codec/busmsg.h (checked again where it is used). */
static bool is_node_id(const char *v)
{
    for (const char *p = v; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return strlen(v) <= 64;
}

static bool is_hostport(const char *v)
{
    char host[64];
    int port;
    return config_hostport(v, host, sizeof host, &port) == 0;
}

static const opt opts[] = {
    {"listen", STR(listen), .def_str = "0.0.0.0", .arg = "ADDR",
     .help = "address to listen on, IPv4 or IPv6"},
    {"port", INT(port), .def = 8080, .min = 0, .max = 65535, .arg = "N",
     .help = "TCP port; 0 picks a free one, printed on stdout"},
    {"metrics-listen", STR(metrics_listen), .def_str = "", .shown = "off", .arg = "ADDR",
     .help = "also serve /metrics, and nothing else, on this internal HOST:PORT, e.g. "
             "127.0.0.1:9100 or [::1]:9100",
     .check = is_hostport, .check_what = "HOST:PORT (e.g. 127.0.0.1:9100 or [::1]:9100)"},
    {"data-dir", STR(data_dir), .def_str = "./data", .arg = "DIR",
     .help = "where data is stored, created if missing"},
    {"store", STR(store_url), .def_str = "", .shown = "embedded", .arg = "URL",
     .help = "the storage: empty for the embedded store in --data-dir, or a PostgreSQL "
             "database, postgresql://USER@HOST:PORT/DB (cluster mode)",
     .check = is_store_url, .check_what = "empty or postgresql://USER@HOST:PORT/DB"},
    {"bus", STR(bus_url), .def_str = "", .shown = "off", .arg = "URL",
     .help = "the bus between cluster nodes: redis://HOST:PORT (needs --store postgresql://)",
     .check = is_bus_url, .check_what = "empty or redis://HOST:PORT"},
    {"node-id", STR(node_id), .def_str = "", .shown = "host name + random", .arg = "ID",
     .help = "this node's name in the cluster: 1-64 of A-Z a-z 0-9 . _ -, unique per node",
     .check = is_node_id, .check_what = "1-64 of A-Z a-z 0-9 . _ -"},
    {"node-ttl", U32(node_ttl_ms, U_MS), .def = 10000, .min = 300, .max = 600000, .arg = "MS",
     .help = "with --bus: a node silent this long is taken for dead and its sessions stop counting"},
    {"bus-timeout", U32(bus_timeout_ms, U_MS), .def = 3500, .min = 2000, .max = 600000, .arg = "MS",
     .help = "with --bus: a Redis connection that brought nothing this long (the node's echo "
             "goes round every second) is dropped and made again"},
    {"web-dir", STR(web_dir), .def_str = "./web", .arg = "DIR",
     .help = "static files served at /"},
    {"threads", INT(threads), .def_fn = cores, .shown = "cores", .min = 1, .max = 256, .arg = "N",
     .help = "I/O threads, each one event loop with its own listener"},
    {"log-level", ENUM(log_level, log_levels), .def = LOG_INFO, .arg = "LEVEL",
     .help = "error, warn, info or debug; logs are logfmt on stderr"},
    {"access-log", BOOL(access_log), .def = 0,
     .help = "log one line per HTTP request (method, path, status, bytes, duration, address) "
             "at info"},
    {"max-message", SIZE(max_message, U_BYTES), .def = 64 * KiB, .min = 125, .max = GiB,
     .arg = "BYTES", .help = "largest WebSocket message; larger closes with 1009"},
    {"max-queue", SIZE(max_queue, U_BYTES), .def = MiB, .min = 4096, .max = GiB, .arg = "BYTES",
     .help = "output bytes queued per connection; beyond it 1013"},
    {"max-body", SIZE(max_body, U_BYTES), .def = MiB, .min = 0, .max = GiB, .arg = "BYTES",
     .help = "largest HTTP request body; larger gets 413"},
    {"max-header-bytes", SIZE(max_header_bytes, U_BYTES), .def = 16 * KiB, .min = 256,
     .max = MiB, .arg = "BYTES", .help = "largest HTTP request head; larger gets 431"},
    {"request-timeout", U32(request_timeout_ms, U_MS), .def = 10000, .min = 1, .max = 3600000,
     .arg = "MS", .help = "time to send a whole request or handshake; then 408"},
    {"idle-timeout", U32(idle_timeout_ms, U_MS), .def = 60000, .min = 1, .max = 86400000,
     .arg = "MS", .help = "idle keep-alive HTTP connections are closed after this"},
    {"ping-interval", U32(ping_interval_ms, U_MS), .def = 30000, .min = 10, .max = 86400000,
     .arg = "MS",
     .help = "WebSocket ping after this much silence; closed with 1001 after two unanswered"},
    {"shutdown-timeout", U32(shutdown_timeout_ms, U_MS), .def = 5000, .min = 0, .max = 3600000,
     .arg = "MS", .help = "bound on a graceful stop"},
    {"tls-cert", STR(tls_cert), .def_str = "", .shown = "off", .arg = "FILE",
     .help = "serve https:// and wss:// with this PEM certificate chain"},
    {"tls-key", STR(tls_key), .def_str = "", .shown = "off", .arg = "FILE",
     .help = "... and this PEM private key; TLS 1.2+, forward-secret AEAD ciphers only"},
    {"max-text", SIZE(max_text, U_BYTES), .def = 16 * KiB, .min = 16, .max = 16 * MiB,
     .arg = "BYTES", .help = "largest message body as JSON; larger gets too_large"},
    {"max-group-members", U32(max_group_members, U_NONE), .def = 1000, .min = 2, .max = 1000000,
     .arg = "N", .help = "members per group"},
    {"token-ttl", U32(token_ttl_s, U_S), .def = 30LL * 24 * 3600, .min = 1,
     .max = 10LL * 365 * 86400, .arg = "SECONDS", .help = "session token lifetime"},
    {"commit-window", U32(commit_window_us, U_US), .def = 1000, .min = 0, .max = 1000000,
     .arg = "US", .help = "group commit: longest a batch gathers while the log syncs"},
    {"commit-delay", U32(commit_delay_us, U_US), .def = 0, .min = 0, .max = 1000000,
     .arg = "US", .help = "group commit: gather this long even while the log is idle"},
    {"max-writer-queue", SIZE(max_writer_queue, U_NONE), .def = 100000, .min = 1,
     .max = 100000000, .arg = "N", .help = "writes waiting to commit before busy"},
    {"log-segment", SIZE(log_segment_bytes, U_BYTES), .def = 64 * MiB, .min = MiB, .max = 4 * GiB,
     .arg = "BYTES", .help = "size of one message-log segment file in DATA_DIR/log"},
    {"apply-delay", U32(apply_delay_ms, U_MS), .def = 200, .min = 0, .max = 10000,
     .arg = "MS", .help = "how long logged messages gather before they are written into LMDB"},
    {"read-threads", INT(read_threads), .def = 4, .min = 1, .max = 64, .arg = "N",
     .help = "threads that read the store (tokens, sync, inbox, REST reads), off the I/O loops"},
    {"max-read-queue", SIZE(max_read_queue, U_NONE), .def = 4096, .min = 1, .max = 1000000,
     .arg = "N", .help = "reads waiting for a read thread before busy"},
    {"store-size", SIZE(store_map_size, U_BYTES), .def = 64 * GiB, .min = MiB, .max = 16 * TiB,
     .arg = "BYTES", .help = "largest size of the LMDB map, virtual until used"},
    {"insecure-fast-kdf", BOOL(insecure_fast_kdf), .def = 0,
     .help = "minimum Argon2 cost, only to provision benchmark users; logged loudly"},

    {"rate-frames", U32(rate_frames, U_NONE), .def = 200, .min = 0, .max = RATE_MAX, .arg = "N",
     .help = "WebSocket frames/s per connection; burst x5",
     .section = "protection (each limit is counted in /metrics; a rate of 0 turns it off):"},
    {"rate-msgs", U32(rate_msgs, U_NONE), .def = 50, .min = 0, .max = RATE_MAX, .arg = "N",
     .help = "messages/s per connection; burst x4"},
    {"rate-user-msgs", U32(rate_user_msgs, U_NONE), .def = 100, .min = 0, .max = RATE_MAX,
     .arg = "N", .help = "messages/s per user over all devices; burst x4"},
    {"rate-groups", U32(rate_groups, U_NONE), .def = 60, .min = 0, .max = RATE_MAX, .arg = "N",
     .help = "groups created plus members added per minute per user, then 429; burst N"},
    {"rate-handshakes", U32(rate_handshakes, U_NONE), .def = 50, .min = 0, .max = RATE_MAX,
     .arg = "N", .help = "WebSocket handshakes/s per source address, then 429; burst x5"},
    {"rate-logins", U32(rate_logins, U_NONE), .def = 5, .min = 0, .max = RATE_MAX, .arg = "N",
     .help = "logins and registrations/s per source address, then 429; burst x4"},
    {"admit-rate", U32(admit_rate, U_NONE), .def = 5000, .min = 0, .max = RATE_MAX, .arg = "N",
     .help = "WebSocket handshakes/s per I/O thread; beyond it 503 with a jittered Retry-After"},
    {"max-pending", U32(max_pending, U_NONE), .def = 10000, .min = 1, .max = RATE_MAX,
     .arg = "N",
     .help = "connections not yet upgraded, per I/O thread; beyond it new ones are closed"},
    {"max-user-conns", U32(max_user_conns, U_NONE), .def = 100, .min = 1, .max = RATE_MAX,
     .arg = "N", .help = "WebSockets per user, then 429"},
    {"max-user-convs", U32(max_user_convs, U_NONE), .def = 10000, .min = 1, .max = RATE_MAX,
     .arg = "N", .help = "conversations per user"},
    {"allowed-origins", STR(allowed_origins), .def_str = "", .shown = "any", .arg = "LIST",
     .help = "browser origins allowed to open WebSockets, comma-separated; others get 403"},
};

#define NOPTS (sizeof opts / sizeof opts[0])

static const opt *find_opt(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0) return &opts[i];
    return NULL;
}

/* ---- values ---------------------------------------------------------------- */

static void store_num(config *c, const opt *o, long long v)
{
    char *p = (char *)c + o->off;
    switch (o->type) {
    case T_BOOL: case T_ENUM: case T_INT: *(int *)p = (int)v; break;
    case T_U32: *(uint32_t *)p = (uint32_t)v; break;
    case T_SIZE: *(size_t *)p = (size_t)v; break;
    case T_STR: break;
    }
}

/* Microseconds per field unit (durations). */
static unsigned long long unit_us(enum opt_unit u)
{
    return u == U_US ? 1 : u == U_MS ? 1000 : u == U_S ? 1000000 : 0;
}

static const char *unit_name(enum opt_unit u)
{
    return u == U_US ? " us" : u == U_MS ? " ms" : u == U_S ? " s" : "";
}

/* A number as --help and the messages show it: whole GiB and TiB by name. */
static const char *fmt_num(const opt *o, long long v, char *buf, size_t n)
{
    if (o->unit == U_BYTES && v >= TiB && v % TiB == 0)
        snprintf(buf, n, "%lld TiB", v / TiB);
    else if (o->unit == U_BYTES && v >= GiB && v % GiB == 0)
        snprintf(buf, n, "%lld GiB", v / GiB);
    else
        snprintf(buf, n, "%lld", v);
    return buf;
}

static const struct { const char *sfx; unsigned long long mul; } byte_units[] = {
    {"K", 1ULL << 10}, {"KiB", 1ULL << 10}, {"M", 1ULL << 20}, {"MiB", 1ULL << 20},
    {"G", 1ULL << 30}, {"GiB", 1ULL << 30}, {"T", 1ULL << 40}, {"TiB", 1ULL << 40},
}, time_units[] = {
    {"us", 1}, {"ms", 1000}, {"s", 1000000}, {"m", 60000000ULL}, {"h", 3600000000ULL},
    {"d", 86400000000ULL},
};

static int parse_number(const opt *o, const char *s, long long *out, char *why, size_t wn)
{
    const char *p = s;
    bool neg = *p == '-', big = false;
    if (neg) p++;
    if (*p < '0' || *p > '9') {
        snprintf(why, wn, "'%.64s' is not a number", s);
        return ERR_INVALID;
    }
    unsigned long long v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (~0ULL - 9) / 10) big = true;
        else v = v * 10 + (unsigned)(*p - '0');
    }
    while (*p == ' ' || *p == '\t') p++;
    if (*p) {
        unsigned long long mul = 0;
        if (o->unit == U_BYTES) {
            for (size_t i = 0; i < sizeof byte_units / sizeof byte_units[0]; i++)
                if (strcasecmp(p, byte_units[i].sfx) == 0) mul = byte_units[i].mul;
            if (!mul) {
                snprintf(why, wn, "'%.64s' is not a size (bytes, or a number with K, M, G or T)",
                         s);
                return ERR_INVALID;
            }
        } else if (unit_us(o->unit)) {
            for (size_t i = 0; i < sizeof time_units / sizeof time_units[0]; i++)
                if (strcmp(p, time_units[i].sfx) == 0) mul = time_units[i].mul;
            if (!mul) {
                snprintf(why, wn,
                         "'%.64s' is not a duration (%s, or a number with us, ms, s, m, h or d)", s,
                         unit_name(o->unit) + 1);
                return ERR_INVALID;
            }
        } else {
            snprintf(why, wn, "'%.64s' is not a whole number", s);
            return ERR_INVALID;
        }
        if (__builtin_mul_overflow(v, mul, &v)) big = true;
        if (unit_us(o->unit) && !big) {
            if (v % unit_us(o->unit)) {
                snprintf(why, wn, "'%.64s' is not a whole number of%s", s, unit_name(o->unit));
                return ERR_INVALID;
            }
            v /= unit_us(o->unit);
        }
    }
    /* Saturate far beyond any bound: the checks below then name the bound. */
    if (big || v > 1ULL << 62) v = 1ULL << 62;
    long long x = neg ? -(long long)v : (long long)v;
    char lim[32];
    if (x < o->min) {
        snprintf(why, wn, "%.64s is below the minimum %s%s", s, fmt_num(o, o->min, lim, sizeof lim),
                 unit_name(o->unit));
        return ERR_INVALID;
    }
    if (x > o->max) {
        snprintf(why, wn, "%.64s is above the maximum %s%s", s, fmt_num(o, o->max, lim, sizeof lim),
                 unit_name(o->unit));
        return ERR_INVALID;
    }
    *out = x;
    return 0;
}

/* Sets o's field from the text v, or explains in why (no prefix). */
static int set_value(config *c, const opt *o, const char *v, char *why, size_t wn)
{
    long long x = 0;
    switch (o->type) {
    case T_STR: {
        size_t n = strlen(v);
        if (n >= o->cap) {
            snprintf(why, wn, "the value is %zu bytes long; at most %zu fit", n, o->cap - 1);
            return ERR_INVALID;
        }
        if (n && o->check && !o->check(v)) {
            snprintf(why, wn, "'%.64s' is not %s", v, o->check_what);
            return ERR_INVALID;
        }
        memcpy((char *)c + o->off, v, n + 1);
        return 0;
    }
    case T_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(v, yes[i]) == 0) { store_num(c, o, 1); return 0; }
            if (strcasecmp(v, no[i]) == 0) { store_num(c, o, 0); return 0; }
        }
        snprintf(why, wn, "'%.64s' is not true or false", v);
        return ERR_INVALID;
    }
    case T_ENUM: {
        char list[128] = "";
        for (int i = 0; o->choices[i]; i++) {
            if (strcasecmp(v, o->choices[i]) == 0) { store_num(c, o, i); return 0; }
            size_t l = strlen(list);
            snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", o->choices[i]);
        }
        snprintf(why, wn, "'%.64s' is not one of %s", v, list);
        return ERR_INVALID;
    }
    case T_INT: case T_U32: case T_SIZE:
        if (parse_number(o, v, &x, why, wn) < 0) return ERR_INVALID;
        store_num(c, o, x);
        return 0;
    }
    return ERR_INVALID;
}

int config_hostport(const char *v, char *host, size_t n, int *port)
{
    const char *colon = strrchr(v, ':');
    if (!colon) return ERR_INVALID;
    const char *h = v;
    size_t hl = (size_t)(colon - v);
    if (hl && *h == '[') {
        if (hl < 3 || h[hl - 1] != ']') return ERR_INVALID;
        h++;
        hl -= 2;
    } else if (memchr(h, ':', hl)) {
        return ERR_INVALID; /* IPv6 needs brackets */
    }
    if (hl == 0 || hl >= n) return ERR_INVALID;
    const char *p = colon + 1;
    long val = 0;
    if (!*p) return ERR_INVALID;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') return ERR_INVALID;
        val = val * 10 + (*p - '0');
        if (val > 65535) return ERR_INVALID;
    }
    memcpy(host, h, hl);
    host[hl] = 0;
    *port = (int)val;
    return 0;
}

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        if (o->type == T_STR) snprintf((char *)c + o->off, o->cap, "%s", o->def_str);
        else store_num(c, o, o->def_fn ? o->def_fn() : o->def);
    }
}

/* ---- --help ------------------------------------------------------------------ */

#define HELP_COL 28
#define HELP_WIDTH 79

/* "  LEFT    text" with text wrapped at HELP_WIDTH under HELP_COL. */
static void help_line(FILE *f, const char *left, const char *text)
{
    int col = fprintf(f, "  %s", left);
    if (col >= HELP_COL - 1) { fputc('\n', f); col = 0; }
    fprintf(f, "%*s", HELP_COL - col, "");
    col = HELP_COL;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, ' ');
        int w = e ? (int)(e - p) : (int)strlen(p);
        if (col > HELP_COL && col + 1 + w > HELP_WIDTH) {
            fprintf(f, "\n%*s", HELP_COL, "");
            col = HELP_COL;
        } else if (col > HELP_COL) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", w, p);
        col += w;
        p += w;
        while (*p == ' ') p++;
    }
    fputc('\n', f);
}

static const char *shown_default(const opt *o, char *buf, size_t n)
{
    if (o->shown) return o->shown;
    switch (o->type) {
    case T_STR: return o->def_str;
    case T_BOOL: return o->def ? "on" : "off";
    case T_ENUM: return o->choices[o->def];
    default: return fmt_num(o, o->def, buf, n);
    }
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: parleyd [flags]\n"
"\n"
"parley real-time messaging server " PARLEY_VERSION "\n"
"\n"
"Each setting is a flag, a key in the --config file (the flag's name without\n"
"--) and an environment variable (PARLEY_ and the name in upper case with _\n"
"for -: PARLEY_DATA_DIR). Later sources win: defaults, then the config file,\n"
"then the environment, then the command line. Flags take --name VALUE or\n"
"--name=VALUE. Sizes may end in K, M, G or T (1024-based: 64K = 65536) and\n"
"times in us, ms, s, m, h or d (2s = 2000 for an MS setting).\n"
"\n");
    help_line(f, "--config FILE", "read settings from FILE: one key = value a line; "
                                  "blank lines and lines starting with # are skipped");
    help_line(f, "--help, -h", "this text");
    help_line(f, "--version", "the version");
    fputc('\n', f);
    for (size_t i = 0; i < NOPTS; i++) {
        const opt *o = &opts[i];
        char left[64], text[256], num[32];
        if (o->section) fprintf(f, "\n%s\n", o->section);
        snprintf(left, sizeof left, "--%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        snprintf(text, sizeof text, "%s (default %s)", o->help, shown_default(o, num, sizeof num));
        help_line(f, left, text);
    }
    fprintf(f,
"\n"
"SIGTERM or SIGINT stops gracefully: no new connections, WebSockets closed\n"
"with 1001, output flushed, exit 0 within --shutdown-timeout.\n");
}

/* ---- sources ----------------------------------------------------------------- */

#define WHY_MAX 256

/* The config file: "key = value" lines. */
static int load_file(config *c, const char *path, FILE *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(err, "parleyd: cannot read config file %s: %s\n", path, strerror(errno));
        return ERR_INVALID;
    }
    char line[CONFIG_LINE_MAX + 1], why[WHY_MAX];
    int set_on[NOPTS] = {0}; /* line that set each key */
    int lineno = 0, rc = 0;
    while (rc == 0) {
        size_t n = 0;
        int ch;
        bool too_long = false, nul = false, any = false;
        while ((ch = getc(f)) != EOF && ch != '\n') {
            any = true;
            if (ch == 0) nul = true;
            if (n < CONFIG_LINE_MAX) line[n++] = (char)ch;
            else too_long = true;
        }
        if (ch == EOF && !any) break;
        lineno++;
        if (n && line[n - 1] == '\r') n--;
        line[n] = 0;
        rc = ERR_INVALID;
        if (too_long) {
            fprintf(err, "parleyd: %s:%d: line is longer than %d bytes\n", path, lineno,
                    CONFIG_LINE_MAX);
            break;
        }
        if (nul) {
            fprintf(err, "parleyd: %s:%d: a NUL byte: not a text file\n", path, lineno);
            break;
        }
        char *p = line;
        if (lineno == 1 && memcmp(p, "\xEF\xBB\xBF", 3) == 0) p += 3; /* UTF-8 byte order mark */
        while (*p == ' ' || *p == '\t') p++;
        rc = 0;
        if (*p == 0 || *p == '#') continue;
        char *eq = strchr(p, '=');
        char *kend = eq;
        while (kend && kend > p && (kend[-1] == ' ' || kend[-1] == '\t')) kend--;
        if (!eq || kend == p) {
            fprintf(err, "parleyd: %s:%d: expected key = value\n", path, lineno);
            rc = ERR_INVALID;
            break;
        }
        char *v = eq + 1, *vend = line + n;
        while (*v == ' ' || *v == '\t') v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
        *vend = 0;
        size_t klen = (size_t)(kend - p);
        const opt *o = find_opt(p, klen);
        rc = ERR_INVALID;
        if (!o && klen == 6 && memcmp(p, "config", 6) == 0)
            fprintf(err, "parleyd: %s:%d: config cannot be set in a config file\n", path, lineno);
        else if (!o)
            fprintf(err, "parleyd: %s:%d: unknown key '%.*s' (the keys are the flag names "
                         "without --; see --help)\n",
                    path, lineno, (int)(klen > 64 ? 64 : klen), p);
        else if (set_on[o - opts])
            fprintf(err, "parleyd: %s:%d: %s is already set on line %d\n", path, lineno, o->name,
                    set_on[o - opts]);
        else if (set_value(c, o, v, why, sizeof why) < 0)
            fprintf(err, "parleyd: %s:%d: %s: %s\n", path, lineno, o->name, why);
        else {
            set_on[o - opts] = lineno;
            rc = 0;
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(err, "parleyd: cannot read config file %s: %s\n", path, strerror(errno));
        rc = ERR_INVALID;
    }
    fclose(f);
    return rc;
}

/* PARLEY_<NAME> variables; others are left alone (the CLI has its own). */
static int load_env(config *c, char **envp, FILE *err)
{
    if (!envp) return 0;
    for (size_t i = 0; i < NOPTS; i++) {
        char var[64], why[WHY_MAX];
        int n = snprintf(var, sizeof var, "PARLEY_%s", opts[i].name);
        for (char *p = var; *p; p++) *p = *p == '-' ? '_' : (*p >= 'a' && *p <= 'z') ? *p - 32 : *p;
        for (char **e = envp; *e; e++) {
            if (strncmp(*e, var, (size_t)n) != 0 || (*e)[n] != '=') continue;
            if (set_value(c, &opts[i], *e + n + 1, why, sizeof why) < 0) {
                fprintf(err, "parleyd: %s: %s\n", var, why);
                return ERR_INVALID;
            }
            break; /* the first one, as getenv() */
        }
    }
    return 0;
}

enum { A_NONE, A_HELP, A_VERSION };

/* One pass over argv. apply == 0: checks the syntax, finds --config, --help
 * and --version. apply == 1: sets every flag's value, in order. */
static int scan_argv(config *c, int argc, char **argv, bool apply, const char **file, int *action,
                     FILE *err)
{
    char why[WHY_MAX];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        /* In order: --help or --version before a bad flag wins, after it not. */
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            if (!apply) { *action = A_HELP; return 0; }
            continue;
        }
        if (strcmp(a, "--version") == 0) {
            if (!apply) { *action = A_VERSION; return 0; }
            continue;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == 0 || a[2] == '=') {
            fprintf(err, "parleyd: unexpected argument '%.64s' (see --help)\n", a);
            return ERR_INVALID;
        }
        const char *name = a + 2, *eq = strchr(name, '='), *val = eq ? eq + 1 : NULL;
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_opt(name, len);
        bool is_config = !o && len == 6 && memcmp(name, "config", 6) == 0;
        if (!o && !is_config) {
            bool meta = (len == 4 && !memcmp(name, "help", 4)) ||
                        (len == 7 && !memcmp(name, "version", 7));
            if (meta)
                fprintf(err, "parleyd: --%.*s takes no value\n", (int)len, name);
            else
                fprintf(err, "parleyd: unknown flag '--%.*s' (see --help)\n",
                        (int)(len > 64 ? 64 : len), name);
            return ERR_INVALID;
        }
        if (!val && o && o->type == T_BOOL) val = "true";
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(err, "parleyd: --%.*s needs a value (see --help)\n", (int)len, name);
                return ERR_INVALID;
            }
            val = argv[++i];
        }
        if (is_config) {
            *file = val;
        } else if (apply && set_value(c, o, val, why, sizeof why) < 0) {
            fprintf(err, "parleyd: --%s: %s\n", o->name, why);
            return ERR_INVALID;
        }
    }
    return 0;
}

int config_parse(config *c, int argc, char **argv, char **envp, FILE *out, FILE *err)
{
    const char *file = NULL;
    int action = A_NONE;
    if (scan_argv(c, argc, argv, false, &file, &action, err) < 0) return ERR_INVALID;
    if (action == A_HELP) { usage(out); return 1; }
    if (action == A_VERSION) { fprintf(out, "parleyd " PARLEY_VERSION "\n"); return 1; }
    if (file && load_file(c, file, err) < 0) return ERR_INVALID;
    if (load_env(c, envp, err) < 0) return ERR_INVALID;
    return scan_argv(c, argc, argv, true, &file, &action, err);
}
