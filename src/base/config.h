/* config: parleyd's settings, from defaults, a config file, the environment
 * and command-line flags.
 *
 * One table in config.c describes every setting (name, type, field, default,
 * bounds, help); it drives the parsing of all three sources, the messages,
 * config_defaults() and `parleyd --help`. Each setting is
 *   a flag         --name VALUE or --name=VALUE (a bool also bare: --name)
 *   a file key     name = VALUE, in the file given by --config FILE
 *   a variable     PARLEY_NAME=VALUE (upper case, '-' as '_')
 * and later sources win: defaults < config file < environment < flags.
 *
 * The file: one `key = value` a line; spaces around both are trimmed; blank
 * lines and lines whose first non-blank is '#' are skipped (there are no
 * comments after a value); a key may appear once; lines end in LF or CRLF
 * and hold at most CONFIG_LINE_MAX bytes.
 *
 * Values: numbers in decimal; sizes may end in K, M, G or T (1024-based, also
 * KiB..TiB); durations in us, ms, s, m, h or d (converted to the field's
 * unit, exactly); bools are true/false, yes/no, on/off or 1/0.
 *
 * config_parse() never exits and reads no file but the config file: the
 * caller decides what to do.
 */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct config {
    char listen[64];             /* --listen, default 0.0.0.0 */
    int port;                    /* --port, default 8080; 0 picks a free one */
    char data_dir[512];          /* --data-dir, default ./data */
    char store_url[512];         /* --store, "": the embedded store in data_dir */
    char bus_url[512];           /* --bus, "": no bus (one node) */
    char node_id[65];            /* --node-id, "": the host name and a random suffix */
    uint32_t node_ttl_ms;        /* --node-ttl, a silent node's sessions stop counting, 10000 */
    uint32_t bus_timeout_ms;     /* --bus-timeout, a silent Redis connection is dropped, 3500 */
    char web_dir[512];           /* --web-dir, default ./web */
    int threads;                 /* --threads, default: number of cores */
    int log_level;               /* --log-level, default info */
    int access_log;              /* --access-log: a line per HTTP request, default off */
    size_t max_message;          /* --max-message, WebSocket message bytes, 65536 */
    size_t max_queue;            /* --max-queue, output bytes per connection, 1 MiB */
    size_t max_body;             /* --max-body, HTTP request body bytes, 1 MiB */
    size_t max_header_bytes;     /* --max-header-bytes, HTTP head bytes, 16384 */
    uint32_t request_timeout_ms; /* --request-timeout, handshake/request, 10000 */
    uint32_t idle_timeout_ms;    /* --idle-timeout, idle keep-alive HTTP, 60000 */
    uint32_t ping_interval_ms;   /* --ping-interval, WebSocket keepalive, 30000 */
    uint32_t shutdown_timeout_ms;/* --shutdown-timeout, graceful stop bound, 5000 */
    size_t max_text;             /* --max-text, message body JSON bytes, 16384 */
    uint32_t max_group_members;  /* --max-group-members, 1000 */
    uint32_t token_ttl_s;        /* --token-ttl, seconds, 30 days */
    size_t log_segment_bytes;    /* --log-segment, one log segment file, 64 MiB */
    uint32_t apply_delay_ms;     /* --apply-delay, logged batches gather before LMDB, 200 */
    uint32_t commit_window_us;   /* --commit-window, group commit gather time, 1000 */
    uint32_t commit_delay_us;    /* --commit-delay, gather even while the log is idle, 0 */
    size_t max_writer_queue;     /* --max-writer-queue, ops waiting to commit, 100000 */
    int read_threads;            /* --read-threads, store reads off the I/O loops, 4 */
    size_t max_read_queue;       /* --max-read-queue, reads waiting before busy, 4096 */
    size_t store_map_size;       /* --store-size, LMDB map bytes, 64 GiB */
    int insecure_fast_kdf;       /* --insecure-fast-kdf: minimum Argon2 cost (benchmarks) */
    /* protection (0 disables a rate) */
    uint32_t rate_frames;        /* --rate-frames, WebSocket frames/s per connection, 200 (burst x5) */
    uint32_t rate_msgs;          /* --rate-msgs, sends/s per connection, 50 (burst x4) */
    uint32_t rate_user_msgs;     /* --rate-user-msgs, sends/s per user, all devices, 100 (burst x4) */
    uint32_t rate_groups;        /* --rate-groups, groups created + members added per minute per user, 60 (burst x1) */
    uint32_t rate_handshakes;    /* --rate-handshakes, WebSocket handshakes/s per address, 50 (burst x5) */
    uint32_t rate_logins;        /* --rate-logins, logins+registrations/s per address, 5 (burst x4) */
    uint32_t admit_rate;         /* --admit-rate, handshakes/s per I/O thread, 5000 (burst x1) */
    uint32_t max_pending;        /* --max-pending, not-yet-upgraded connections per thread, 10000 */
    uint32_t max_user_conns;     /* --max-user-conns, WebSockets per user, 100 */
    uint32_t max_user_convs;     /* --max-user-convs, conversations per user, 10000 */
    char allowed_origins[1024];  /* --allowed-origins, comma-separated; empty: any */
    char tls_cert[512];          /* --tls-cert, PEM certificate chain; empty: plain TCP */
    char tls_key[512];           /* --tls-key, PEM private key */
    char metrics_listen[80];     /* --metrics-listen HOST:PORT serving only /metrics; empty: off */
} config;

#define CONFIG_LINE_MAX 4096

#define PARLEY_VERSION "0.1.0"  /* --version, --help, /metrics' parley_build_info */

/* Splits "HOST:PORT" or "[IPV6]:PORT" (port 0..65535; 0: any free one)
 * into host (n bytes, without brackets) and *port. 0, or ERR_INVALID. The
 * host is not resolved (the server binds numeric addresses). */
int config_hostport(const char *v, char *host, size_t n, int *port);

/* Fills *c with the defaults (threads: the number of cores). */
void config_defaults(config *c);

/* Fills *c (which holds the defaults) from the file named by --config, then
 * the PARLEY_* variables in envp (a NULL-terminated "NAME=VALUE" array, as
 * environ; NULL reads none; other variables are ignored), then the flags in
 * argv, each overriding the one before.
 * Returns 0 to run, 1 when --help (-h) or --version was printed to `out`, or
 * ERR_INVALID after printing one line to `err` that names the flag, the
 * variable or the file and line (then *c is partly filled). */
int config_parse(config *c, int argc, char **argv, char **envp, FILE *out, FILE *err);

#endif
