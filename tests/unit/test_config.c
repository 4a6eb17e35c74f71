/* config: the table-driven flags, config file and PARLEY_* variables. */
#include "base/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"
#include "test.h"

static char g_out[32768], g_err[2048];

#define ARGS(...) ((const char *[]){__VA_ARGS__, NULL})
#define NOARGS ((const char *[]){NULL})
#define ENV(...) ((char *[]){__VA_ARGS__, NULL})

/* Runs config_parse on the defaults with "parleyd" + args; keeps what it
 * printed in g_out and g_err. */
static int parse(config *c, char **envp, const char *const *args)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = "parleyd";
    for (int i = 0; args[i] && argc < 63; i++) argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    config_defaults(c);
    char *ob = NULL, *eb = NULL;
    size_t on = 0, en = 0;
    FILE *out = open_memstream(&ob, &on), *err = open_memstream(&eb, &en);
    int rc = config_parse(c, argc, argv, envp, out, err);
    fclose(out);
    fclose(err);
    snprintf(g_out, sizeof g_out, "%s", ob);
    snprintf(g_err, sizeof g_err, "%s", eb);
    free(ob);
    free(eb);
    return rc;
}

static char tmp_paths[32][64];
static int ntmp;

/* A temporary file holding `len` bytes of `text`; removed at the end. */
static const char *write_file_n(const char *text, size_t len)
{
    char *p = tmp_paths[ntmp++ % 32];
    strcpy(p, "/tmp/test_config_XXXXXX");
    int fd = mkstemp(p);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len) {
        fprintf(stderr, "cannot write %s: %s\n", p, strerror(errno));
        exit(2);
    }
    close(fd);
    return p;
}

static const char *write_file(const char *text) { return write_file_n(text, strlen(text)); }

/* The error a file with this text gives, with the path replaced by "F". */
static int file_error(const char *text, char *msg, size_t n)
{
    config c;
    const char *path = write_file(text);
    int rc = parse(&c, NULL, ARGS("--config", path));
    const char *e = g_err;
    char prefix[128];
    snprintf(prefix, sizeof prefix, "parleyd: %s:", path);
    if (strncmp(e, prefix, strlen(prefix)) == 0) snprintf(msg, n, "F:%s", e + strlen(prefix));
    else snprintf(msg, n, "%s", e);
    return rc;
}

#define CHECK_STR(a, b) do { \
    const char *a_ = (a), *b_ = (b); \
    if (strcmp(a_, b_) != 0) { \
        test_cur_failed_++; \
        fprintf(stderr, "  FAIL %s:%d in %s: %s == %s (\"%s\" != \"%s\")\n", __FILE__, __LINE__, \
                test_cur_name_, #a, #b, a_, b_); \
    } } while (0)

#define CHECK_FILE_ERR(text, want) do { \
    char m_[sizeof g_err + 8]; \
    CHECK_EQ_INT(file_error(text, m_, sizeof m_), ERR_INVALID); \
    CHECK_STR(m_, want); \
    } while (0)

/* ---- defaults and --help -------------------------------------------------- */

TEST(defaults)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, NOARGS), 0);
    CHECK_STR(g_err, "");
    CHECK_STR(c.listen, "0.0.0.0");
    CHECK_EQ_INT(c.port, 8080);
    CHECK_STR(c.data_dir, "./data");
    CHECK_STR(c.web_dir, "./web");
    CHECK(c.threads >= 1 && c.threads <= 256);
    CHECK_EQ_INT(c.log_level, LOG_INFO);
    CHECK_EQ_INT(c.max_message, 65536);
    CHECK_EQ_INT(c.max_queue, 1048576);
    CHECK_EQ_INT(c.max_body, 1048576);
    CHECK_EQ_INT(c.max_header_bytes, 16384);
    CHECK_EQ_INT(c.request_timeout_ms, 10000);
    CHECK_EQ_INT(c.idle_timeout_ms, 60000);
    CHECK_EQ_INT(c.ping_interval_ms, 30000);
    CHECK_EQ_INT(c.shutdown_timeout_ms, 5000);
    CHECK_EQ_INT(c.max_text, 16384);
    CHECK_EQ_INT(c.max_group_members, 1000);
    CHECK_EQ_INT(c.token_ttl_s, 2592000);
    CHECK_EQ_INT(c.commit_window_us, 1000);
    CHECK_EQ_INT(c.max_writer_queue, 100000);
    CHECK_EQ_INT(c.store_map_size, 64LL << 30);
    CHECK_EQ_INT(c.insecure_fast_kdf, 0);
    CHECK_EQ_INT(c.rate_frames, 200);
    CHECK_EQ_INT(c.rate_msgs, 50);
    CHECK_EQ_INT(c.rate_user_msgs, 100);
    CHECK_EQ_INT(c.rate_groups, 60);
    CHECK_EQ_INT(c.rate_handshakes, 50);
    CHECK_EQ_INT(c.rate_logins, 5);
    CHECK_EQ_INT(c.admit_rate, 5000);
    CHECK_EQ_INT(c.max_pending, 10000);
    CHECK_EQ_INT(c.max_user_conns, 100);
    CHECK_EQ_INT(c.max_user_convs, 10000);
    CHECK_STR(c.allowed_origins, "");
    CHECK_STR(c.tls_cert, "");
    CHECK_STR(c.tls_key, "");
}

TEST(help_and_version)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--help")), 1);
    CHECK(strstr(g_out, "usage: parleyd") != NULL);
    CHECK(strstr(g_out, "--port N") != NULL);
    CHECK(strstr(g_out, "(default 8080)") != NULL);
    CHECK(strstr(g_out, "--config FILE") != NULL);
    CHECK(strstr(g_out, "PARLEY_") != NULL);
    CHECK_STR(g_err, "");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("-h")), 1);
    CHECK(strstr(g_out, "usage: parleyd") != NULL);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--version")), 1);
    CHECK(strncmp(g_out, "parleyd ", 8) == 0);
    /* in order: --help before a bad flag wins, after it does not */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "1", "--help", "--bogus")), 1);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--bogus", "--help")), ERR_INVALID);
    /* --help reads no config file */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", "/nonexistent/x.conf", "--help")), 1);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--help=yes")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --help takes no value\n");
}

/* --help's entries: "  --name ARG   text" and its indented continuation
 * lines, joined. Returns how many; names[i] without "--", texts[i] joined. */
static int help_entries(const char *help, char names[][64], char texts[][512], int max)
{
    int n = 0;
    const char *p = help;
    while (*p && n < max) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len > 4 && strncmp(p, "  --", 4) == 0 &&
            sscanf(p, "  --%63[a-z0-9-]", names[n]) == 1) {
            snprintf(texts[n], 512, "%.*s", (int)len, p);
            n++;
        } else if (n && len > 4 && strncmp(p, "    ", 4) == 0) {
            size_t l = strlen(texts[n - 1]), skip = strspn(p, " ");
            snprintf(texts[n - 1] + l, 512 - l, " %.*s", (int)(len - skip), p + skip);
        }
        p += len + (e != NULL);
    }
    return n;
}

/* Every "(default X)" in --help, fed back as a flag, gives config_defaults():
 * the help text tells the truth about the table. */
TEST(help_defaults_parse_back_to_the_defaults)
{
    static char names[64][64], texts[64][512];
    config c, d, want;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--help")), 1);
    int n = help_entries(g_out, names, texts, 64);
    CHECK(n >= 34);
    config_defaults(&want);
    int fed = 0;
    for (int i = 0; i < n; i++) {
        char *def = strstr(texts[i], "(default ");
        if (!def) {
            CHECK(strcmp(names[i], "config") == 0 || strcmp(names[i], "help") == 0 ||
                  strcmp(names[i], "version") == 0);
            continue;
        }
        def += 9;
        char *end = strrchr(def, ')');
        CHECK(end != NULL && end[1] == 0);
        if (end) *end = 0;
        /* names of defaults that are not values: cores, no origin list, no
         * TLS, no metrics listener, the embedded store, no bus, a node id
         * made at start */
        if (strcmp(def, "cores") == 0 || strcmp(def, "any") == 0 || strcmp(def, "embedded") == 0 ||
            strcmp(names[i], "node-id") == 0 ||
            (strcmp(def, "off") == 0 && (strncmp(names[i], "tls-", 4) == 0 ||
                                         strcmp(names[i], "metrics-listen") == 0 ||
                                         strcmp(names[i], "bus") == 0)))
            continue;
        char flag[600];
        snprintf(flag, sizeof flag, "--%.63s=%.500s", names[i], def);
        int rc = parse(&d, NULL, ARGS(flag));
        CHECK_EQ_INT(rc, 0);
        if (rc) fprintf(stderr, "    %s: %s", flag, g_err);
        d.threads = want.threads;
        CHECK(memcmp(&d, &want, sizeof d) == 0);
        fed++;
    }
    CHECK(fed >= 28);
}

/* ---- each type, both flag forms ---------------------------------------------- */

TEST(flag_forms_and_order)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "9000")), 0);
    CHECK_EQ_INT(c.port, 9000);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port=9001")), 0);
    CHECK_EQ_INT(c.port, 9001);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "1", "--port=2")), 0); /* the last wins */
    CHECK_EQ_INT(c.port, 2);
    /* a required value is the next argument, whatever it looks like */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--allowed-origins", "--port")), 0);
    CHECK_STR(c.allowed_origins, "--port");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--allowed-origins=")), 0);
    CHECK_STR(c.allowed_origins, "");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--allowed-origins=a=b")), 0);
    CHECK_STR(c.allowed_origins, "a=b");
}

TEST(syntax_errors)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--bogus")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: unknown flag '--bogus' (see --help)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--bogus=1")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: unknown flag '--bogus' (see --help)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--data")), ERR_INVALID); /* no abbreviations */
    CHECK_STR(g_err, "parleyd: unknown flag '--data' (see --help)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--threads")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --threads needs a value (see --help)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --config needs a value (see --help)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("stray")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: unexpected argument 'stray' (see --help)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("-p", "1")), ERR_INVALID);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--")), ERR_INVALID);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--=1")), ERR_INVALID);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--version=2")), ERR_INVALID);
}

TEST(strings)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--listen", "::1", "--data-dir", "/var/lib/parley",
                                      "--web-dir", "w", "--tls-cert", "c.pem", "--tls-key", "k.pem",
                                      "--allowed-origins", "https://a.example,https://b.example")), 0);
    CHECK_STR(c.listen, "::1");
    CHECK_STR(c.data_dir, "/var/lib/parley");
    CHECK_STR(c.web_dir, "w");
    CHECK_STR(c.tls_cert, "c.pem");
    CHECK_STR(c.tls_key, "k.pem");
    CHECK_STR(c.allowed_origins, "https://a.example,https://b.example");
    /* oversize values: the longest that fits, then one more byte */
    char v[sizeof c.allowed_origins + 1];
    memset(v, 'a', sizeof v);
    v[sizeof c.allowed_origins - 1] = 0;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--allowed-origins", v)), 0);
    CHECK_EQ_INT(strlen(c.allowed_origins), sizeof c.allowed_origins - 1);
    v[sizeof c.allowed_origins - 1] = 'a';
    v[sizeof c.allowed_origins] = 0;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--allowed-origins", v)), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --allowed-origins: the value is 1024 bytes long; at most 1023 fit\n");
    char l[sizeof c.listen + 1];
    memset(l, '1', sizeof l - 1);
    l[sizeof l - 1] = 0;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--listen", l)), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --listen: the value is 64 bytes long; at most 63 fit\n");
    CHECK_STR(c.listen, "0.0.0.0"); /* a value that does not fit is not cut */
}

TEST(host_and_port)
{
    char host[64];
    int port = -1;
    CHECK_EQ_INT(config_hostport("127.0.0.1:9100", host, sizeof host, &port), 0);
    CHECK_STR(host, "127.0.0.1");
    CHECK_EQ_INT(port, 9100);
    CHECK_EQ_INT(config_hostport("[::1]:0", host, sizeof host, &port), 0);
    CHECK_STR(host, "::1");
    CHECK_EQ_INT(port, 0);
    CHECK_EQ_INT(config_hostport("0.0.0.0:65535", host, sizeof host, &port), 0);
    CHECK_EQ_INT(port, 65535);
    static const char *const bad[] = {"", "9100", "127.0.0.1", "127.0.0.1:", ":9100",
                                      "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:9x",
                                      "::1:9100", "[::1]9100", "[::1", "[]:80", "[::1]:",
                                      "127.0.0.1:99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(config_hostport(bad[i], host, sizeof host, &port), ERR_INVALID);
    CHECK_EQ_INT(config_hostport("127.0.0.1:80", host, 9, &port), ERR_INVALID); /* host too long */

    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--metrics-listen", "127.0.0.1:9100")), 0);
    CHECK_STR(c.metrics_listen, "127.0.0.1:9100");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--metrics-listen", "")), 0); /* off */
    CHECK_STR(c.metrics_listen, "");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--metrics-listen", "localhost")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --metrics-listen: 'localhost' is not HOST:PORT (e.g. "
                     "127.0.0.1:9100 or [::1]:9100)\n");
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_METRICS_LISTEN=1.2.3.4"), NOARGS), ERR_INVALID);
    CHECK(strstr(g_err, "PARLEY_METRICS_LISTEN") != NULL);
    CHECK_FILE_ERR("metrics-listen = :80\n",
                   "F:1: metrics-listen: ':80' is not HOST:PORT (e.g. 127.0.0.1:9100 or "
                   "[::1]:9100)\n");
    CHECK_EQ_INT(parse(&c, NULL, NOARGS), 0);
    CHECK_EQ_INT(c.access_log, 0);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--access-log")), 0);
    CHECK_EQ_INT(c.access_log, 1);
}

TEST(integers)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "0", "--threads", "256", "--rate-msgs", "0",
                                      "--max-user-conns", "100000000", "--max-writer-queue", "7",
                                      "--max-group-members", "2")), 0);
    CHECK_EQ_INT(c.port, 0);
    CHECK_EQ_INT(c.threads, 256);
    CHECK_EQ_INT(c.rate_msgs, 0);
    CHECK_EQ_INT(c.max_user_conns, 100000000);
    CHECK_EQ_INT(c.max_writer_queue, 7);
    CHECK_EQ_INT(c.max_group_members, 2);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "65535")), 0);
    CHECK_EQ_INT(c.port, 65535);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "007")), 0); /* decimal, not octal */
    CHECK_EQ_INT(c.port, 7);
}

TEST(bounds_errors)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "70000")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --port: 70000 is above the maximum 65535\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "-1")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --port: -1 is below the minimum 0\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--threads", "0")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --threads: 0 is below the minimum 1\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--threads", "257")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --threads: 257 is above the maximum 256\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--rate-msgs", "-5")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --rate-msgs: -5 is below the minimum 0\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--max-user-conns", "0")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --max-user-conns: 0 is below the minimum 1\n");
    /* far too large: no wrap-around into range */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "99999999999999999999999999")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --port: 99999999999999999999999999 is above the maximum 65535\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "18446744073709617152")), ERR_INVALID); /* 2^64 + 65536 */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "-99999999999999999999999999")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --port: -99999999999999999999999999 is below the minimum 0\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--store-size", "20T")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --store-size: 20T is above the maximum 16 TiB\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--store-size", "1000000000000000000T")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --store-size: 1000000000000000000T is above the maximum 16 TiB\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--request-timeout", "2h")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --request-timeout: 2h is above the maximum 3600000 ms\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--max-message", "124")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --max-message: 124 is below the minimum 125\n");
}

TEST(not_numbers)
{
    config c;
    const char *bad[] = {"", "abc", "12x", "0x10", " 5", "+5", "5K", "1.5", "-", "5 5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", bad[i])), ERR_INVALID);
        CHECK(strncmp(g_err, "parleyd: --port: '", 18) == 0);
        CHECK_EQ_INT(c.port, 8080);
    }
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "12x")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --port: '12x' is not a whole number\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "abc")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --port: 'abc' is not a number\n");
}

TEST(sizes)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--max-message", "64K", "--max-queue", "2MiB", "--store-size",
                                      "2 GiB", "--max-body", "0", "--max-text", "1k")), 0);
    CHECK_EQ_INT(c.max_message, 65536);
    CHECK_EQ_INT(c.max_queue, 2 << 20);
    CHECK_EQ_INT(c.store_map_size, 2LL << 30);
    CHECK_EQ_INT(c.max_body, 0);
    CHECK_EQ_INT(c.max_text, 1024);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--store-size", "1t")), 0);
    CHECK_EQ_INT(c.store_map_size, 1LL << 40);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--store-size", "16TiB")), 0);
    CHECK_EQ_INT(c.store_map_size, 16LL << 40);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--max-message", "64KB")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --max-message: '64KB' is not a size (bytes, or a number with K, M, G or T)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--max-writer-queue", "1K")), ERR_INVALID); /* a count */
    CHECK_STR(g_err, "parleyd: --max-writer-queue: '1K' is not a whole number\n");
}

TEST(durations)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--request-timeout", "2s", "--idle-timeout", "5m",
                                      "--ping-interval", "1500", "--shutdown-timeout", "0ms",
                                      "--token-ttl", "1d", "--commit-window", "2ms")), 0);
    CHECK_EQ_INT(c.request_timeout_ms, 2000);
    CHECK_EQ_INT(c.idle_timeout_ms, 300000);
    CHECK_EQ_INT(c.ping_interval_ms, 1500);
    CHECK_EQ_INT(c.shutdown_timeout_ms, 0);
    CHECK_EQ_INT(c.token_ttl_s, 86400);
    CHECK_EQ_INT(c.commit_window_us, 2000);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--token-ttl", "90m", "--commit-window", "250us",
                                      "--request-timeout", "1000000us", "--idle-timeout", "1h")), 0);
    CHECK_EQ_INT(c.token_ttl_s, 5400);
    CHECK_EQ_INT(c.commit_window_us, 250);
    CHECK_EQ_INT(c.request_timeout_ms, 1000);
    CHECK_EQ_INT(c.idle_timeout_ms, 3600000);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--request-timeout", "1500us")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --request-timeout: '1500us' is not a whole number of ms\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--token-ttl", "1500ms")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --token-ttl: '1500ms' is not a whole number of s\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--ping-interval", "3 weeks")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --ping-interval: '3 weeks' is not a duration (ms, or a number "
                     "with us, ms, s, m, h or d)\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--ping-interval", "2S")), ERR_INVALID); /* units are exact */
}

TEST(bools_and_enums)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--insecure-fast-kdf")), 0);
    CHECK_EQ_INT(c.insecure_fast_kdf, 1);
    const char *yes[] = {"true", "yes", "on", "1", "TRUE"}, *no[] = {"false", "no", "off", "0", "Off"};
    for (int i = 0; i < 5; i++) {
        char f[64];
        snprintf(f, sizeof f, "--insecure-fast-kdf=%s", yes[i]);
        CHECK_EQ_INT(parse(&c, NULL, ARGS(f)), 0);
        CHECK_EQ_INT(c.insecure_fast_kdf, 1);
        snprintf(f, sizeof f, "--insecure-fast-kdf=%s", no[i]);
        CHECK_EQ_INT(parse(&c, NULL, ARGS("--insecure-fast-kdf", f)), 0);
        CHECK_EQ_INT(c.insecure_fast_kdf, 0);
    }
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--insecure-fast-kdf=maybe")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --insecure-fast-kdf: 'maybe' is not true or false\n");
    /* a bare bool takes no next argument */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--insecure-fast-kdf", "false")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: unexpected argument 'false' (see --help)\n");
    const char *lv[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ_INT(parse(&c, NULL, ARGS("--log-level", lv[i])), 0);
        CHECK_EQ_INT(c.log_level, i);
    }
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--log-level", "DEBUG")), 0);
    CHECK_EQ_INT(c.log_level, LOG_DEBUG);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--log-level", "verbose")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: --log-level: 'verbose' is not one of error, warn, info, debug\n");
}

/* ---- the config file --------------------------------------------------------- */

TEST(file_parses)
{
    config c;
    const char *path = write_file(
        "\xEF\xBB\xBF# parleyd settings\n"
        "\n"
        "port = 9090\n"
        "   # an indented comment\n"
        "data-dir=/srv/parley data\n"
        "\tlisten\t=\t127.0.0.1\t\n"
        "log-level = debug\r\n"
        "store-size = 2 GiB\n"
        "request-timeout = 3s\n"
        "insecure-fast-kdf = yes\n"
        "allowed-origins =\n"
        "web-dir = a=b # not a comment\n"
        "   \n"
        "rate-msgs = 7"); /* no final newline */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", path)), 0);
    CHECK_STR(g_err, "");
    CHECK_EQ_INT(c.port, 9090);
    CHECK_STR(c.data_dir, "/srv/parley data");
    CHECK_STR(c.listen, "127.0.0.1");
    CHECK_EQ_INT(c.log_level, LOG_DEBUG);
    CHECK_EQ_INT(c.store_map_size, 2LL << 30);
    CHECK_EQ_INT(c.request_timeout_ms, 3000);
    CHECK_EQ_INT(c.insecure_fast_kdf, 1);
    CHECK_STR(c.allowed_origins, "");
    CHECK_STR(c.web_dir, "a=b # not a comment");
    CHECK_EQ_INT(c.rate_msgs, 7);
    CHECK_EQ_INT(c.max_message, 65536); /* untouched keys keep their defaults */
    /* --config=FILE works too, and an empty file changes nothing */
    char flag[128];
    snprintf(flag, sizeof flag, "--config=%s", write_file(""));
    CHECK_EQ_INT(parse(&c, NULL, ARGS(flag)), 0);
    CHECK_EQ_INT(c.port, 8080);
}

TEST(file_errors_name_the_line)
{
    CHECK_FILE_ERR("port = 1\n# x\nprot = 2\n",
                   "F:3: unknown key 'prot' (the keys are the flag names without --; see --help)\n");
    CHECK_FILE_ERR("--port = 2\n",
                   "F:1: unknown key '--port' (the keys are the flag names without --; see --help)\n");
    CHECK_FILE_ERR("help = 1\n",
                   "F:1: unknown key 'help' (the keys are the flag names without --; see --help)\n");
    CHECK_FILE_ERR("\n\nthis is garbage\n", "F:3: expected key = value\n");
    CHECK_FILE_ERR("port\n", "F:1: expected key = value\n");
    CHECK_FILE_ERR("port = 1\n= 5\n", "F:2: expected key = value\n");
    CHECK_FILE_ERR("[server]\nport = 1\n", "F:1: expected key = value\n");
    CHECK_FILE_ERR("a\nb\nc\nport = 70000\n", "F:1: expected key = value\n");
    CHECK_FILE_ERR("# ok\n\n\nport = 70000\n", "F:4: port: 70000 is above the maximum 65535\n");
    CHECK_FILE_ERR("port = \n", "F:1: port: '' is not a number\n");
    CHECK_FILE_ERR("port = 8080 # public\n", "F:1: port: '8080 # public' is not a whole number\n");
    CHECK_FILE_ERR("log-level = loud\n",
                   "F:1: log-level: 'loud' is not one of error, warn, info, debug\n");
    CHECK_FILE_ERR("insecure-fast-kdf\n", "F:1: expected key = value\n");
    CHECK_FILE_ERR("port = 1\nthreads = 2\nport = 3\n", "F:3: port is already set on line 1\n");
    CHECK_FILE_ERR("config = other.conf\n", "F:1: config cannot be set in a config file\n");
    /* oversize: a value longer than its field, a line longer than the limit */
    char big[CONFIG_LINE_MAX + 64];
    int n = snprintf(big, sizeof big, "listen = ");
    memset(big + n, 'x', 100);
    strcpy(big + n + 100, "\n");
    CHECK_FILE_ERR(big, "F:1: listen: the value is 100 bytes long; at most 63 fit\n");
    n = snprintf(big, sizeof big, "port = 1\n# ");
    memset(big + n, 'x', CONFIG_LINE_MAX);
    strcpy(big + n + CONFIG_LINE_MAX, "\n");
    CHECK_FILE_ERR(big, "F:2: line is longer than 4096 bytes\n");
    /* the longest line is fine */
    n = snprintf(big, sizeof big, "#");
    memset(big + n, 'x', CONFIG_LINE_MAX - 1);
    strcpy(big + n + CONFIG_LINE_MAX - 1, "\nport = 5\n");
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", write_file(big))), 0);
    CHECK_EQ_INT(c.port, 5);
    /* binary garbage */
    const char *path = write_file_n("port = 1\nport\0= 2\n", 19);
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", path)), ERR_INVALID);
    CHECK(strstr(g_err, ":2: a NUL byte") != NULL);
}

TEST(file_cannot_be_read)
{
    config c;
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", "/nonexistent/parleyd.conf")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: cannot read config file /nonexistent/parleyd.conf: "
                     "No such file or directory\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", "/tmp")), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: cannot read config file /tmp: Is a directory\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", "")), ERR_INVALID);
}

/* ---- the environment and precedence ----------------------------------------- */

TEST(environment)
{
    config c;
    CHECK_EQ_INT(parse(&c, ENV("HOME=/root", "PARLEY_PORT=9090", "PARLEY_DATA_DIR=/data",
                               "PARLEY_INSECURE_FAST_KDF=1", "PARLEY_MAX_MESSAGE=1M",
                               "PARLEY_LOG_LEVEL=warn", "PARLEY_ALLOWED_ORIGINS="), NOARGS), 0);
    CHECK_EQ_INT(c.port, 9090);
    CHECK_STR(c.data_dir, "/data");
    CHECK_EQ_INT(c.insecure_fast_kdf, 1);
    CHECK_EQ_INT(c.max_message, 1 << 20);
    CHECK_EQ_INT(c.log_level, LOG_WARN);
    /* other tools' variables, look-alikes and malformed entries are left alone */
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_SERVER=http://x", "PARLEY_CONFIG=/nonexistent",
                               "PARLEY_WEB=/w", "parley_port=1", "PARLEY_PORTS=2", "PARLEY_PORT",
                               "PARLEY_CLI=/bin/false", "=", "PARLEY_-PORT=3"), NOARGS), 0);
    CHECK_EQ_INT(c.port, 8080);
    CHECK_STR(c.web_dir, "./web");
    /* the first of two, as getenv() */
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_PORT=1", "PARLEY_PORT=2"), NOARGS), 0);
    CHECK_EQ_INT(c.port, 1);
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_PORT=70000"), NOARGS), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: PARLEY_PORT: 70000 is above the maximum 65535\n");
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_THREADS="), NOARGS), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: PARLEY_THREADS: '' is not a number\n");
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_INSECURE_FAST_KDF=sure"), NOARGS), ERR_INVALID);
    CHECK_STR(g_err, "parleyd: PARLEY_INSECURE_FAST_KDF: 'sure' is not true or false\n");
    /* a bad variable is reported even if a flag sets the same setting */
    CHECK_EQ_INT(parse(&c, ENV("PARLEY_PORT=x"), ARGS("--port", "1")), ERR_INVALID);
}

TEST(precedence)
{
    config c;
    const char *path = write_file("port = 1\nthreads = 3\nmax-text = 100\nlisten = 10.0.0.1\n");
    char **env = ENV("PARLEY_PORT=2", "PARLEY_THREADS=4");
    /* defaults < file */
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", path)), 0);
    CHECK_EQ_INT(c.port, 1);
    CHECK_EQ_INT(c.threads, 3);
    /* file < environment */
    CHECK_EQ_INT(parse(&c, env, ARGS("--config", path)), 0);
    CHECK_EQ_INT(c.port, 2);
    CHECK_EQ_INT(c.threads, 4);
    CHECK_EQ_INT(c.max_text, 100);
    /* environment < flags, before or after --config */
    CHECK_EQ_INT(parse(&c, env, ARGS("--port", "5", "--config", path, "--listen", "::")), 0);
    CHECK_EQ_INT(c.port, 5);
    CHECK_EQ_INT(c.threads, 4);
    CHECK_EQ_INT(c.max_text, 100);
    CHECK_STR(c.listen, "::");
    CHECK_EQ_INT(parse(&c, env, ARGS("--config", path, "--threads=6")), 0);
    CHECK_EQ_INT(c.threads, 6);
    CHECK_EQ_INT(c.port, 2);
    /* the last --config is the one read */
    const char *other = write_file("port = 7\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--config", path, "--config", other)), 0);
    CHECK_EQ_INT(c.port, 7);
    CHECK_EQ_INT(c.max_text, 16384); /* the first file is not read */
    /* a bad file fails even when a flag overrides its bad key */
    const char *bad = write_file("port = huge\n");
    CHECK_EQ_INT(parse(&c, NULL, ARGS("--port", "1", "--config", bad)), ERR_INVALID);
    CHECK(strstr(g_err, ":1: port: 'huge' is not a number") != NULL);
}

int main(void)
{
    RUN(defaults);
    RUN(help_and_version);
    RUN(help_defaults_parse_back_to_the_defaults);
    RUN(flag_forms_and_order);
    RUN(syntax_errors);
    RUN(strings);
    RUN(host_and_port);
    RUN(integers);
    RUN(bounds_errors);
    RUN(not_numbers);
    RUN(sizes);
    RUN(durations);
    RUN(bools_and_enums);
    RUN(file_parses);
    RUN(file_errors_name_the_line);
    RUN(file_cannot_be_read);
    RUN(environment);
    RUN(precedence);
    for (int i = 0; i < ntmp && i < 32; i++) unlink(tmp_paths[i]);
    return test_summary("config");
}
