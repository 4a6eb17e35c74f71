#include "base/config.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/err.h"
#include "base/log.h"

#define PARLEY_VERSION "0.1.0"

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen, "0.0.0.0");
    c->port = 8080;
    strcpy(c->data_dir, "./data");
    strcpy(c->web_dir, "./web");
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = n > 0 ? (int)n : 1;
    c->log_level = LOG_INFO;
    c->max_message = 64 * 1024;
    c->max_queue = 1024 * 1024;
    c->max_body = 1024 * 1024;
    c->max_header_bytes = 16 * 1024;
    c->request_timeout_ms = 10000;
    c->idle_timeout_ms = 60000;
    c->ping_interval_ms = 30000;
    c->shutdown_timeout_ms = 5000;
    c->max_text = 16 * 1024;
    c->max_group_members = 1000;
    c->token_ttl_s = 30u * 24 * 3600;
    c->commit_window_us = 1000;
    c->max_writer_queue = 100000;
    c->store_map_size = (size_t)64 << 30;
    c->rate_frames = 200;
    c->rate_msgs = 50;
    c->rate_user_msgs = 100;
    c->rate_handshakes = 50;
    c->rate_logins = 5;
    c->admit_rate = 5000;
    c->max_pending = 10000;
    c->max_user_conns = 100;
    c->max_user_convs = 10000;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: parleyd [flags]\n"
"\n"
"parley real-time messaging server " PARLEY_VERSION "\n"
"\n"
"  --listen ADDR          address to listen on (default 0.0.0.0)\n"
"  --port N               TCP port (default 8080; 0 picks a free port)\n"
"  --data-dir DIR         where data is stored (default ./data)\n"
"  --web-dir DIR          static files served at / (default ./web)\n"
"  --threads N            I/O threads, one event loop each (default: cores)\n"
"  --log-level LEVEL      error, warn, info or debug (default info)\n"
"  --max-message BYTES    largest WebSocket message (default 65536; 1009 above)\n"
"  --max-queue BYTES      output queued per connection (default 1048576)\n"
"  --max-body BYTES       largest HTTP request body (default 1048576; 413 above)\n"
"  --max-header-bytes N   largest HTTP request head (default 16384; 431 above)\n"
"  --request-timeout MS   time to send a whole request or handshake (default 10000)\n"
"  --idle-timeout MS      idle keep-alive HTTP connection lifetime (default 60000)\n"
"  --ping-interval MS     WebSocket ping after this much silence; closed after\n"
"                         two unanswered pings (default 30000)\n"
"  --shutdown-timeout MS  bound on a graceful stop (default 5000)\n"
"  --max-text BYTES       largest message body, as JSON (default 16384)\n"
"  --max-group-members N  members per group (default 1000)\n"
"  --token-ttl SECONDS    session token lifetime (default 2592000 = 30 days)\n"
"  --commit-window US     group commit: gather writes this long (default 1000)\n"
"  --max-writer-queue N   writes waiting to commit before 'busy' (default 100000)\n"
"  --store-size BYTES     largest size of the LMDB store (default 64 GiB)\n"
"  --insecure-fast-kdf    minimum Argon2 cost, for benchmark provisioning only\n"
"\nprotection (a rate of 0 turns that limit off):\n"
"  --rate-frames N        WebSocket frames/s per connection (default 200, burst x5)\n"
"  --rate-msgs N          messages/s per connection (default 50, burst x4)\n"
"  --rate-user-msgs N     messages/s per user over all devices (default 100, burst x4)\n"
"  --rate-handshakes N    WebSocket handshakes/s per source address (default 50, burst x5)\n"
"  --rate-logins N        logins and registrations/s per source address (default 5, burst x4)\n"
"  --admit-rate N         WebSocket handshakes/s per I/O thread before 503 (default 5000)\n"
"  --max-pending N        connections not yet upgraded, per I/O thread (default 10000)\n"
"  --max-user-conns N     WebSockets per user (default 100)\n"
"  --max-user-convs N     conversations per user (default 10000)\n"
"  --allowed-origins LIST browser origins allowed to open WebSockets, comma-separated\n"
"                         (default: any)\n"
"  --tls-cert FILE        serve https:// and wss:// with this PEM certificate chain\n"
"  --tls-key FILE         ... and this PEM private key (TLS 1.2+, AEAD ciphers only)\n"
"  --help                 this text\n"
"  --version              the version\n"
"\n"
"SIGTERM or SIGINT stops gracefully: no new connections, WebSockets closed\n"
"with 1001, output flushed, exit 0 within --shutdown-timeout.\n");
}

static int parse_num(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return ERR_INVALID;
    *out = v;
    return 0;
}

int config_parse(config *c, int argc, char **argv, FILE *out, FILE *err)
{
    enum { O_LISTEN = 256, O_PORT, O_DATA, O_WEB, O_THREADS, O_LOG, O_MAXMSG,
           O_MAXQ, O_MAXBODY, O_MAXHDR, O_REQTO, O_IDLETO, O_PING, O_SHUTDOWN,
           O_MAXTEXT, O_MAXGROUP, O_TTL, O_WINDOW, O_WQUEUE, O_STORESIZE, O_FASTKDF,
           O_RFRAMES, O_RMSGS, O_RUSER, O_RHS, O_RLOGIN, O_ADMIT, O_PENDING, O_UCONNS, O_UCONVS,
           O_ORIGINS, O_TLSCERT, O_TLSKEY, O_HELP, O_VERSION };
    static const struct option opts[] = {
        {"listen", required_argument, 0, O_LISTEN},
        {"port", required_argument, 0, O_PORT},
        {"data-dir", required_argument, 0, O_DATA},
        {"web-dir", required_argument, 0, O_WEB},
        {"threads", required_argument, 0, O_THREADS},
        {"log-level", required_argument, 0, O_LOG},
        {"max-message", required_argument, 0, O_MAXMSG},
        {"max-queue", required_argument, 0, O_MAXQ},
        {"max-body", required_argument, 0, O_MAXBODY},
        {"max-header-bytes", required_argument, 0, O_MAXHDR},
        {"request-timeout", required_argument, 0, O_REQTO},
        {"idle-timeout", required_argument, 0, O_IDLETO},
        {"ping-interval", required_argument, 0, O_PING},
        {"shutdown-timeout", required_argument, 0, O_SHUTDOWN},
        {"max-text", required_argument, 0, O_MAXTEXT},
        {"max-group-members", required_argument, 0, O_MAXGROUP},
        {"token-ttl", required_argument, 0, O_TTL},
        {"commit-window", required_argument, 0, O_WINDOW},
        {"max-writer-queue", required_argument, 0, O_WQUEUE},
        {"store-size", required_argument, 0, O_STORESIZE},
        {"insecure-fast-kdf", no_argument, 0, O_FASTKDF},
        {"rate-frames", required_argument, 0, O_RFRAMES},
        {"rate-msgs", required_argument, 0, O_RMSGS},
        {"rate-user-msgs", required_argument, 0, O_RUSER},
        {"rate-handshakes", required_argument, 0, O_RHS},
        {"rate-logins", required_argument, 0, O_RLOGIN},
        {"admit-rate", required_argument, 0, O_ADMIT},
        {"max-pending", required_argument, 0, O_PENDING},
        {"max-user-conns", required_argument, 0, O_UCONNS},
        {"max-user-convs", required_argument, 0, O_UCONVS},
        {"allowed-origins", required_argument, 0, O_ORIGINS},
        {"tls-cert", required_argument, 0, O_TLSCERT},
        {"tls-key", required_argument, 0, O_TLSKEY},
        {"help", no_argument, 0, O_HELP},
        {"version", no_argument, 0, O_VERSION},
        {0, 0, 0, 0},
    };
    optind = 1;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        long long v = 0;
        int rc = 0;
        switch (o) {
        case O_LISTEN:
            if (strlen(optarg) >= sizeof c->listen) rc = ERR_INVALID;
            else strcpy(c->listen, optarg);
            break;
        case O_PORT:
            if ((rc = parse_num(optarg, 0, 65535, &v)) == 0) c->port = (int)v;
            break;
        case O_DATA:
            if (strlen(optarg) >= sizeof c->data_dir) rc = ERR_INVALID;
            else strcpy(c->data_dir, optarg);
            break;
        case O_WEB:
            if (strlen(optarg) >= sizeof c->web_dir) rc = ERR_INVALID;
            else strcpy(c->web_dir, optarg);
            break;
        case O_THREADS:
            if ((rc = parse_num(optarg, 1, 256, &v)) == 0) c->threads = (int)v;
            break;
        case O_LOG:
            if ((rc = log_parse_level(optarg)) >= 0) { c->log_level = rc; rc = 0; }
            break;
        case O_MAXMSG:
            if ((rc = parse_num(optarg, 125, 1 << 30, &v)) == 0) c->max_message = (size_t)v;
            break;
        case O_MAXQ:
            if ((rc = parse_num(optarg, 4096, 1 << 30, &v)) == 0) c->max_queue = (size_t)v;
            break;
        case O_MAXBODY:
            if ((rc = parse_num(optarg, 0, 1 << 30, &v)) == 0) c->max_body = (size_t)v;
            break;
        case O_MAXHDR:
            if ((rc = parse_num(optarg, 256, 1 << 20, &v)) == 0) c->max_header_bytes = (size_t)v;
            break;
        case O_REQTO:
            if ((rc = parse_num(optarg, 1, 3600000, &v)) == 0) c->request_timeout_ms = (uint32_t)v;
            break;
        case O_IDLETO:
            if ((rc = parse_num(optarg, 1, 86400000, &v)) == 0) c->idle_timeout_ms = (uint32_t)v;
            break;
        case O_PING:
            if ((rc = parse_num(optarg, 10, 86400000, &v)) == 0) c->ping_interval_ms = (uint32_t)v;
            break;
        case O_SHUTDOWN:
            if ((rc = parse_num(optarg, 0, 3600000, &v)) == 0) c->shutdown_timeout_ms = (uint32_t)v;
            break;
        case O_MAXTEXT:
            if ((rc = parse_num(optarg, 16, 1 << 24, &v)) == 0) c->max_text = (size_t)v;
            break;
        case O_MAXGROUP:
            if ((rc = parse_num(optarg, 2, 1000000, &v)) == 0) c->max_group_members = (uint32_t)v;
            break;
        case O_TTL:
            if ((rc = parse_num(optarg, 1, 10L * 365 * 86400, &v)) == 0) c->token_ttl_s = (uint32_t)v;
            break;
        case O_WINDOW:
            if ((rc = parse_num(optarg, 0, 1000000, &v)) == 0) c->commit_window_us = (uint32_t)v;
            break;
        case O_WQUEUE:
            if ((rc = parse_num(optarg, 1, 100000000, &v)) == 0) c->max_writer_queue = (size_t)v;
            break;
        case O_STORESIZE:
            if ((rc = parse_num(optarg, 1 << 20, 1LL << 44, &v)) == 0) c->store_map_size = (size_t)v;
            break;
        case O_FASTKDF:
            c->insecure_fast_kdf = 1;
            break;
        case O_RFRAMES: case O_RMSGS: case O_RUSER: case O_RHS: case O_RLOGIN: case O_ADMIT:
        case O_PENDING: case O_UCONNS: case O_UCONVS: {
            uint32_t *f[] = {&c->rate_frames, &c->rate_msgs, &c->rate_user_msgs, &c->rate_handshakes,
                             &c->rate_logins, &c->admit_rate, &c->max_pending, &c->max_user_conns,
                             &c->max_user_convs};
            bool is_cap = o == O_PENDING || o == O_UCONNS || o == O_UCONVS;
            if ((rc = parse_num(optarg, is_cap ? 1 : 0, 100000000, &v)) == 0)
                *f[o - O_RFRAMES] = (uint32_t)v;
            break;
        }
        case O_ORIGINS:
            if (strlen(optarg) >= sizeof c->allowed_origins) rc = ERR_INVALID;
            else strcpy(c->allowed_origins, optarg);
            break;
        case O_TLSCERT:
        case O_TLSKEY: {
            char *dst = o == O_TLSCERT ? c->tls_cert : c->tls_key;
            if (strlen(optarg) >= sizeof c->tls_cert) rc = ERR_INVALID;
            else strcpy(dst, optarg);
            break;
        }
        case O_HELP:
            usage(out);
            return 1;
        case O_VERSION:
            fprintf(out, "parleyd " PARLEY_VERSION "\n");
            return 1;
        default:
            fprintf(err, "parleyd: unknown or incomplete flag '%s' (see --help)\n",
                    argv[optind - 1]);
            return ERR_INVALID;
        }
        if (rc < 0) {
            fprintf(err, "parleyd: bad value '%s' for --%s (see --help)\n", optarg,
                    opts[o - O_LISTEN].name);
            return ERR_INVALID;
        }
    }
    if (optind < argc) {
        fprintf(err, "parleyd: unexpected argument '%s' (see --help)\n", argv[optind]);
        return ERR_INVALID;
    }
    return 0;
}
