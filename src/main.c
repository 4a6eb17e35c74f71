/* parleyd: the parley server. Parses flags, starts the I/O threads, and
 * turns SIGTERM/SIGINT into a graceful stop bounded by --shutdown-timeout
 * (a second signal forces it). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "chat/api.h"
#include "chat/auth.h"
#include "chat/chat.h"
#include "chat/proto.h"
#include "chat/router.h"
#include "base/config.h"
#include "base/err.h"
#include "base/log.h"
#include "net/server.h"
#include "store/migrate.h"
#include "store/store.h"

typedef struct app {
    config cfg;
    server *srv;
    chat *chat;
    uv_signal_t sigterm, sigint;
    uv_timer_t deadline;
    uv_async_t done;
    int threads_done;
    int signals;
} app;

static void on_deadline(uv_timer_t *h)
{
    app *a = h->data;
    log_warn("shutdown timeout: closing remaining connections", "timeout_ms=%u",
             a->cfg.shutdown_timeout_ms);
    server_force(a->srv);
}

static void on_signal(uv_signal_t *h, int signum)
{
    app *a = h->data;
    if (a->signals++ == 0) {
        log_info("stopping", "signal=%s", strsignal(signum));
        chat_leave(a->chat); /* before the sessions close: the cluster's roster */
        server_stop(a->srv);
        uv_timer_start(&a->deadline, on_deadline, a->cfg.shutdown_timeout_ms, 0);
    } else {
        log_warn("second signal: forcing stop", NULL);
        server_force(a->srv);
    }
}

static void on_thread_done(uv_async_t *h)
{
    app *a = h->data;
    /* uv_async coalesces sends: count the threads whose loops have ended. */
    int ended = 0;
    for (int i = 0; i < a->srv->nthreads; i++) {
        srv_thread *t = &a->srv->threads[i];
        uv_mutex_lock(&t->mu);
        ended += t->closed;
        uv_mutex_unlock(&t->mu);
    }
    if (ended < a->srv->nthreads) return;
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    uv_close((uv_handle_t *)&a->deadline, NULL);
    uv_close((uv_handle_t *)&a->done, NULL);
}

/* mkdir -p; on failure errno says why and `failed` names the directory. */
static int make_dir(const char *path, char *failed, size_t n)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST) { snprintf(failed, n, "%s", tmp); return ERR_IO; }
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) { snprintf(failed, n, "%s", tmp); return ERR_IO; }
    return ERR_OK;
}

/* A missing web root is not fatal (REST and WebSocket work without it),
 * but every static file would answer 404: say so at startup. */
static void check_web_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        log_warn("web dir not found: static files will answer 404", "dir=%s err=\"%s\"", dir,
                 strerror(errno));
    else if (!S_ISDIR(st.st_mode))
        log_warn("web dir is not a directory: static files will answer 404", "dir=%s", dir);
}

int main(int argc, char **argv)
{
    /* parleyd migrate --from DATA_DIR --to URL: a tool, not the server */
    if (argc > 1 && !strcmp(argv[1], "migrate"))
        return migrate_main(argc - 1, argv + 1, stdout, stderr);
    static app a;
    config_defaults(&a.cfg);
    int rc = config_parse(&a.cfg, argc, argv, environ, stdout, stderr);
    if (rc == 1) return 0;
    if (rc < 0) return 2;
    log_set_level((enum log_level)a.cfg.log_level);
    /* A message must fit an output queue with room to spare, or a member
     * could never receive it (live or by sync: pages hold at least one). */
    size_t fit = a.cfg.max_queue / 2 > 1024 ? a.cfg.max_queue / 2 - 1024 : 256;
    if (a.cfg.max_text > fit) {
        log_warn("--max-text lowered to fit --max-queue: a message must fit a connection's "
                 "output queue", "max_text=%zu now=%zu max_queue=%zu", a.cfg.max_text, fit,
                 a.cfg.max_queue);
        a.cfg.max_text = fit;
    }
    signal(SIGPIPE, SIG_IGN);
    char failed[512];
    if (make_dir(a.cfg.data_dir, failed, sizeof failed) < 0) {
        log_error("cannot create the data directory", "dir=%s err=\"%s\"", failed, strerror(errno));
        return 1;
    }
    check_web_dir(a.cfg.web_dir);
    uv_loop_t *loop = uv_default_loop();
    if (!loop) {
        log_error("cannot create the main event loop", "err=\"%s\"", strerror(errno));
        return 1;
    }
    /* Signals first: a stop requested right after start must be graceful. */
    int uv = uv_async_init(loop, &a.done, on_thread_done);
    a.done.data = &a;
    if (uv == 0) uv = uv_signal_init(loop, &a.sigterm);
    if (uv == 0) uv = uv_signal_init(loop, &a.sigint);
    a.sigterm.data = a.sigint.data = &a;
    if (uv == 0) uv = uv_signal_start(&a.sigterm, on_signal, SIGTERM);
    if (uv == 0) uv = uv_signal_start(&a.sigint, on_signal, SIGINT);
    if (uv != 0) {
        log_error("cannot set up signal handling", "err=\"%s\"", uv_strerror(uv));
        return 1;
    }
    if (auth_init() < 0 || api_init() < 0) {
        log_error("crypto init failed", NULL);
        return 1;
    }
    if (a.cfg.insecure_fast_kdf)
        log_warn("INSECURE: --insecure-fast-kdf hashes new passwords at the minimum Argon2 cost; "
                 "use it only to provision benchmark users", NULL);
    const config *c = &a.cfg;
    srv_options opt = {
        .listen = c->listen, .port = c->port, .threads = c->threads,
        .tls_cert = c->tls_cert, .tls_key = c->tls_key,
        .max_message = c->max_message, .max_queue = c->max_queue,
        .max_body = c->max_body, .max_header_bytes = c->max_header_bytes,
        .request_timeout_ms = c->request_timeout_ms, .idle_timeout_ms = c->idle_timeout_ms,
        .ping_interval_ms = c->ping_interval_ms, .max_pending = c->max_pending,
        .rate_frames = c->rate_frames, .access_log = c->access_log,
    };
    if (server_create(&a.srv, &opt, &router_http_ops, &proto_ws_ops, &a.done) < 0) return 1;
    if (c->metrics_listen[0]) {
        char host[64];
        int port = 0;
        config_hostport(c->metrics_listen, host, sizeof host, &port); /* checked by config */
        if (server_listen_internal(a.srv, host, port, &router_metrics_ops) < 0) return 1;
        log_info("metrics listening", "addr=%s port=%d", host, a.srv->internal_port);
    }
    if (a.cfg.bus_url[0] && !bus_url_ok(a.cfg.bus_url)) {
        log_error("--bus must be redis://HOST[:PORT]", "bus=%s", a.cfg.bus_url);
        return 1;
    }
    if (a.cfg.bus_url[0] && !a.cfg.store_url[0]) {
        log_error("--bus needs --store postgresql://...: the nodes of a cluster share one database",
                  "bus=%s", a.cfg.bus_url);
        return 1;
    }
    rc = chat_open(&a.chat, &a.cfg, a.srv);
    if (rc < 0) {
        /* The store (or the writer) logged the system's reason. */
        int e = errno;
        if (a.cfg.store_url[0])
            log_error("cannot start: the database was refused or cannot be reached (the reason "
                      "is logged above)", "store=postgresql");
        else if (rc == ERR_VERSION)
            log_error("the data directory holds another storage format version: refusing to start",
                      "dir=%s", a.cfg.data_dir);
        else if (rc == ERR_BUSY)
            log_error("the data directory is in use by another process (another parleyd?): "
                      "refusing to start", "dir=%s lock=%s/LOCK pid=%d err=\"%s\"", a.cfg.data_dir,
                      a.cfg.data_dir, store_lock_pid(a.cfg.data_dir), strerror(e));
        else if (rc == ERR_NOMEM)
            log_error("cannot start", "err=\"out of memory\"");
        else
            log_error("cannot start (the reason is logged above)", "dir=%s", a.cfg.data_dir);
        return 1;
    }
    server_run(a.srv);
    log_info("listening", "addr=%s port=%d threads=%d tls=%s data_dir=%s web_dir=%s access_log=%s%s%s",
             a.cfg.listen, a.srv->port, a.cfg.threads, a.srv->tls ? "on" : "off", a.cfg.data_dir,
             a.cfg.web_dir, a.cfg.access_log ? "on" : "off", a.chat->bus ? " node=" : "",
             a.chat->bus ? a.chat->node : "");
    printf("parleyd listening on %s://%s:%d\n", a.srv->tls ? "https" : "http", a.cfg.listen,
           a.srv->port);
    fflush(stdout);
    uv_timer_init(loop, &a.deadline);
    a.deadline.data = &a;
    uv_run(loop, UV_RUN_DEFAULT);
    server_wait(a.srv);
    chat_close(a.chat); /* commits what is queued */
    server_free(a.srv);
    uv_loop_close(loop);
    log_info("stopped", NULL);
    return 0;
}
