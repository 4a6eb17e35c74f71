/* parley: the command-line client (built on libparley, include/parley.h).
 *
 * One-shot commands use the library's blocking calls (REST, or the live
 * connection driven by parley_run for `send`); `parley chat` runs on a
 * libuv loop (cli/cli_chat.c). Exit statuses: see usage().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
"usage: parley [options] COMMAND [ARGS]\n"
"\n"
"parley command-line client " VERSION "\n"
"\n"
"commands:\n"
"  register [USER]               create an account and log in\n"
"  login [USER]                  log in (a new device) and keep the token\n"
"  logout                        revoke the token and forget it\n"
"  whoami                        the user and server in the config file\n"
"  inbox [--changed-since C]     your conversations, most recent first\n"
"  history CONV [--limit N] [--before SEQ | --after SEQ]\n"
"                                messages of a conversation (the latest by default)\n"
"  send CONV TEXT...             send a message and wait until it is stored (✓);\n"
"                                TEXT '-' reads it from stdin; gives up when the\n"
"                                connection fails (on every server of a list)\n"
"  direct USER                   start (or find) the direct conversation with USER\n"
"  group create NAME [MEMBER...] create a group (you are its admin)\n"
"  group add CONV USER           add a member (admins only)\n"
"  group remove CONV USER        remove a member, or yourself to leave\n"
"  chat CONV [--last N] [--wait SECONDS]\n"
"                                interactive chat: messages, ticks (✓ sent,\n"
"                                ✓✓ delivered, read), typing; line editing on a\n"
"                                terminal. Not a terminal: one line of stdin is one\n"
"                                message; at EOF it waits for the acks, giving up\n"
"                                after --wait (30) seconds without one. Lines\n"
"                                starting with '/': /quit, /typing, /help ('//'\n"
"                                sends a leading '/'); typing a /command never\n"
"                                tells others you type\n"
"\n"
"CONV is a conversation id, or @USER for the direct conversation with USER.\n"
"Passwords are read from the terminal without echo, or else from the first line\n"
"of stdin.\n"
"\n"
"receipts: inbox and history mark the messages they show delivered (✓✓ for\n"
"their senders), never read; chat marks what it shows of its conversation read,\n"
"and the messages of other conversations it mentions delivered. Sending a\n"
"message marks its conversation read up to it (the server does). No other\n"
"command moves your cursors.\n"
"\n"
"options:\n"
"  --server URL[,URL...]\n"
"                    the server (default: $PARLEY_SERVER, else the server of the\n"
"                    last login, else " DEFAULT_SERVER "); several URLs (the\n"
"                    nodes of a cluster) are tried in turn: the next one when\n"
"                    a connection fails\n"
"  --json            machine-readable output: one JSON document on stdout (chat:\n"
"                    one JSON object per line); errors as {\"error\":{...}} and\n"
"                    warnings as {\"warning\":{...}} on stderr\n"
"  --timeout SECONDS bound on network waits of one-shot commands (default 30)\n"
"  --help, --version\n"
"\n"
"environment:\n"
"  PARLEY_SERVER     the server URL (or URLs, as --server)\n"
"  PARLEY_CONFIG     the config file (default ~/.config/parley/config, mode 0600)\n"
"\n"
"exit status:\n"
"  0  success\n"
"  1  usage error (unknown command or flag, bad argument)\n"
"  2  refused by the server: bad credentials or token, not a member, not found,\n"
"     already exists, invalid input; or not logged in\n"
"  3  network: server unreachable, timed out, busy or rate limited, connection\n"
"     lost, or messages left unsent\n"
"  4  local failure: config file, terminal, out of memory\n");
}

/* ---- arguments ------------------------------------------------------------ */

typedef struct args {
    const char *pos[64];
    int npos;
    const char *server;
    bool json, help, version;
    long timeout_s;
    long limit, last, wait_s;
    unsigned long long before, after, changed_since;
    bool has_limit, has_before, has_after, has_changed, has_last, has_wait;
} args;

static int parse_num(const char *flag, const char *v, unsigned long long max, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (!*v || *end || v[0] == '-' || v[0] == '+' || errno || n > max) {
        fprintf(stderr, "parley: %s: '%s' is not a valid number\n", flag, v);
        return -1;
    }
    *out = n;
    return 0;
}

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    bool dashdash = false;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (dashdash || s[0] != '-' || strcmp(s, "-") == 0) {
            if (a->npos >= 64) { fprintf(stderr, "parley: too many arguments\n"); return -1; }
            a->pos[a->npos++] = s;
            continue;
        }
        if (strcmp(s, "--") == 0) { dashdash = true; continue; }
        if (strcmp(s, "--json") == 0) { a->json = true; continue; }
        if (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0) { a->help = true; continue; }
        if (strcmp(s, "--version") == 0) { a->version = true; continue; }
        /* flags with a value: --flag V or --flag=V */
        static const char *const valued[] = {"--server", "--timeout", "--limit", "--before",
                                             "--after", "--changed-since", "--last", "--wait"};
        const char *name = NULL, *val = NULL;
        for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++) {
            size_t n = strlen(valued[k]);
            if (strncmp(s, valued[k], n) == 0 && (s[n] == 0 || s[n] == '=')) {
                name = valued[k];
                if (s[n] == '=') val = s + n + 1;
                else if (i + 1 < argc) val = argv[++i];
                else { fprintf(stderr, "parley: %s needs a value\n", name); return -1; }
                break;
            }
        }
        if (!name) {
            fprintf(stderr, "parley: unknown option '%s' (see parley --help)\n", s);
            return -1;
        }
        unsigned long long v = 0;
        if (strcmp(name, "--server") == 0) { a->server = val; continue; }
        if (parse_num(name, val, 1ull << 53, &v) < 0) return -1;
        if (strcmp(name, "--timeout") == 0) {
            if (v == 0 || v > 86400) { fprintf(stderr, "parley: --timeout: 1..86400 seconds\n"); return -1; }
            a->timeout_s = (long)v;
        } else if (strcmp(name, "--limit") == 0) {
            if (v == 0 || v > 500) { fprintf(stderr, "parley: --limit: 1..500\n"); return -1; }
            a->limit = (long)v; a->has_limit = true;
        } else if (strcmp(name, "--before") == 0) { a->before = v; a->has_before = true; }
        else if (strcmp(name, "--after") == 0) { a->after = v; a->has_after = true; }
        else if (strcmp(name, "--changed-since") == 0) { a->changed_since = v; a->has_changed = true; }
        else if (strcmp(name, "--last") == 0) {
            if (v > 500) { fprintf(stderr, "parley: --last: 0..500\n"); return -1; }
            a->last = (long)v; a->has_last = true;
        } else if (strcmp(name, "--wait") == 0) {
            if (v > 86400) { fprintf(stderr, "parley: --wait: 0..86400 seconds\n"); return -1; }
            a->wait_s = (long)v; a->has_wait = true;
        }
    }
    return 0;
}

/* Refuses command-specific flags given to another command. */
static int only_flags(const args *a, const char *cmd, const char *allowed)
{
    struct { bool set; const char *name; } f[] = {
        {a->has_limit, "--limit"}, {a->has_before, "--before"}, {a->has_after, "--after"},
        {a->has_changed, "--changed-since"}, {a->has_last, "--last"}, {a->has_wait, "--wait"},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].set && !strstr(allowed, f[i].name)) {
            fprintf(stderr, "parley: %s does not take %s (see parley --help)\n", cmd, f[i].name);
            return -1;
        }
    }
    return 0;
}

/* ---- input ------------------------------------------------------------------ */

static int read_line_stdin(char *out, size_t cap)
{
    if (!fgets(out, (int)cap, stdin)) return -1;
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = 0;
    return (int)n;
}

/* Reads a secret: from the terminal without echo, else the next stdin line. */
static int read_secret(const char *prompt, char *out, size_t cap)
{
    if (!isatty(STDIN_FILENO)) return read_line_stdin(out, cap);
    struct termios old, quiet;
    bool restore = tcgetattr(STDIN_FILENO, &old) == 0;
    if (restore) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    fprintf(stderr, "%s", prompt);
    fflush(stderr);
    int n = read_line_stdin(out, cap);
    if (restore) tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fprintf(stderr, "\n");
    return n;
}

/* ---- commands ------------------------------------------------------------------ */

static int need_login(const cli_opts *o)
{
    if (o->cfg.token[0]) return 0;
    return cli_error(o, EXIT_SERVER, "not logged in: run `parley login USER` first");
}

static int cmd_auth(cli_opts *o, const args *a, bool reg)
{
    const char *cmd = reg ? "register" : "login";
    if (a->npos > 2) return cli_error(o, EXIT_USAGE, "usage: parley %s [USER]", cmd);
    char user[128], pw[512];
    if (a->npos == 2) {
        snprintf(user, sizeof user, "%s", a->pos[1]);
    } else {
        if (!isatty(STDIN_FILENO)) return cli_error(o, EXIT_USAGE, "usage: parley %s USER", cmd);
        fprintf(stderr, "Username: ");
        if (read_line_stdin(user, sizeof user) <= 0) return cli_error(o, EXIT_USAGE, "no username");
    }
    if (read_secret("Password: ", pw, sizeof pw) < 0)
        return cli_error(o, EXIT_USAGE, "no password given (on stdin or the terminal)");
    if (reg && isatty(STDIN_FILENO)) {
        char again[512];
        if (read_secret("Password (again): ", again, sizeof again) < 0 || strcmp(pw, again) != 0)
            return cli_error(o, EXIT_USAGE, "the passwords do not match");
    }
    parley_client *c;
    int rc = cli_client(o, NULL, NULL, &c);
    if (rc) return rc;
    /* This machine logged in before: its key keeps strangers' failed
     * logins from delaying it (docs/protocol.md). */
    const char *known = reg ? NULL : cli_config_device_key(&o->cfg, o->server, user);
    if (known) parley_set_device_key(c, known);
    parley_session s;
    rc = reg ? parley_register(c, user, pw, &s) : parley_login(c, user, pw, &s);
    memset(pw, 0, sizeof pw);
    if (rc < 0) {
        int code = cli_fail(o, c, rc, reg ? "register" : "login");
        parley_free(c);
        return code;
    }
    if (parley_device_key(c)[0])
        cli_config_set_device_key(&o->cfg, o->server, s.user, parley_device_key(c));
    parley_free(c);
    snprintf(o->cfg.server, sizeof o->cfg.server, "%s", o->server);
    memcpy(o->cfg.user, s.user, sizeof o->cfg.user);
    memcpy(o->cfg.token, s.token, sizeof o->cfg.token);
    if (cli_config_save(&o->cfg) < 0) return EXIT_LOCAL;
    if (o->json) {
        jbuf j;
        jb_init(&j, 256);
        jb_lit(&j, "{\"user\":");
        jb_cstr(&j, s.user);
        jb_lit(&j, ",\"device\":");
        jb_u64(&j, s.device);
        jb_lit(&j, ",\"expires\":");
        jb_i64(&j, s.expires);
        jb_lit(&j, ",\"server\":");
        jb_cstr(&j, o->server);
        jb_lit(&j, ",\"registered\":");
        jb_lit(&j, reg ? "true" : "false");
        jb_lit(&j, ",\"config\":");
        jb_cstr(&j, o->cfg.path);
        jb_lit(&j, "}");
        cli_json_print(&j);
    } else {
        printf("%s %s (device %llu) on %s\n", reg ? "registered and logged in as" : "logged in as",
               s.user, (unsigned long long)s.device, o->server);
    }
    return EXIT_OK;
}

static int cmd_logout(cli_opts *o, const args *a)
{
    if (a->npos != 1) return cli_error(o, EXIT_USAGE, "usage: parley logout");
    int rc = need_login(o);
    if (rc) return rc;
    parley_client *c;
    if ((rc = cli_client(o, NULL, NULL, &c))) return rc;
    rc = parley_logout(c);
    bool was_invalid = rc == PARLEY_EAUTH; /* the token was dead already: forget it too */
    if (rc < 0 && !was_invalid) {
        int code = cli_fail(o, c, rc, "logout");
        parley_free(c);
        return code;
    }
    parley_free(c);
    char user[PARLEY_USER_MAX];
    memcpy(user, o->cfg.user, sizeof user);
    o->cfg.token[0] = 0;
    o->cfg.user[0] = 0;
    if (cli_config_save(&o->cfg) < 0) return EXIT_LOCAL;
    if (o->json) {
        jbuf j;
        jb_init(&j, 96);
        jb_lit(&j, "{\"user\":");
        jb_cstr(&j, user);
        jb_lit(&j, ",\"logged_out\":true,\"token_was_valid\":");
        jb_lit(&j, was_invalid ? "false" : "true");
        jb_lit(&j, "}");
        cli_json_print(&j);
    } else {
        printf("logged out%s%s%s\n", user[0] ? " " : "", user,
               was_invalid ? " (the token was no longer valid)" : "");
    }
    return EXIT_OK;
}

static int cmd_whoami(cli_opts *o, const args *a)
{
    if (a->npos != 1) return cli_error(o, EXIT_USAGE, "usage: parley whoami");
    int rc = need_login(o);
    if (rc) return rc;
    if (o->json) {
        jbuf j;
        jb_init(&j, 128);
        jb_lit(&j, "{\"user\":");
        jb_cstr(&j, o->cfg.user);
        jb_lit(&j, ",\"server\":");
        jb_cstr(&j, o->server);
        jb_lit(&j, "}");
        cli_json_print(&j);
    } else {
        printf("%s on %s\n", o->cfg.user, o->server);
    }
    return EXIT_OK;
}

/* "bob" for a direct conversation with bob, the name for a group. */
static void conv_title(const cli_opts *o, const parley_conv *cv, char *out, size_t cap)
{
    if (strcmp(cv->type, "direct") == 0) {
        const char *peer = "";
        for (size_t i = 0; i < cv->nmembers; i++)
            if (strcmp(cv->members[i], o->cfg.user) != 0) peer = cv->members[i];
        snprintf(out, cap, "@%s", peer);
    } else {
        char clean[256];
        cli_put_clean(clean, sizeof clean, cv->name, strlen(cv->name));
        snprintf(out, cap, "%s", clean);
    }
}

static void print_body(const parley_message *m, char *out, size_t cap)
{
    if (m->text) cli_put_clean(out, cap, m->text, strlen(m->text));
    else cli_put_clean(out, cap, m->body, m->body_len);
}

/* ---- delivered: what `history` and `inbox` showed has reached this device ------------ */

enum { MARK_WAIT, MARK_DONE, MARK_REFUSED };

typedef struct mark_ctx {
    const char *me;
    uint64_t *conv, *seq;  /* the delivered cursor moves wanted, n of them */
    uint8_t *state;        /* MARK_WAIT, MARK_DONE (confirmed) or MARK_REFUSED */
    size_t n, left;
    bool down;             /* the live connection failed */
    int err;               /* why (an error code, 0 if none was given) */
    char why[256];         /* a refusal, for the warning */
} mark_ctx;

static void mark_confirm(parley_client *c, mark_ctx *m, uint64_t conv, uint64_t delivered)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->state[i] != MARK_WAIT || m->conv[i] != conv || delivered < m->seq[i]) continue;
        m->state[i] = MARK_DONE;
        m->left--;
    }
    if (m->left == 0) parley_break(c);
}

/* Our own cursor moved: the server sends the receipt to our connection too,
 * once the move is stored. */
static void mark_on_receipt(parley_client *c, const parley_receipt *r, void *ud)
{
    mark_ctx *m = ud;
    if (m->n && strcmp(r->user, m->me) == 0) mark_confirm(c, m, r->conv, r->delivered);
}

static void mark_on_state(parley_client *c, parley_state st, int err, uint64_t delay, void *ud)
{
    mark_ctx *m = ud;
    if (m->n && (st == PARLEY_BACKOFF || st == PARLEY_CLOSED)) {
        m->down = true;
        m->err = err;
        parley_break(c);
    }
}

/* A refused cursor move (the library retries only busy and rate_limited). */
static void mark_on_error(parley_client *c, const parley_error *e, void *ud)
{
    mark_ctx *m = ud;
    if (!m->n || !e->conv || strcmp(e->code, "busy") == 0 || strcmp(e->code, "rate_limited") == 0) return;
    for (size_t i = 0; i < m->n; i++) {
        if (m->state[i] != MARK_WAIT || m->conv[i] != e->conv) continue;
        snprintf(m->why, sizeof m->why, "%.180s (%.60s)", e->message, e->code);
        m->state[i] = MARK_REFUSED;
        m->left--;
    }
    if (m->left == 0) parley_break(c);
}

static const parley_callbacks mark_callbacks = {
    .on_state = mark_on_state, .on_receipt = mark_on_receipt, .on_error = mark_on_error,
};

/* Our delivered cursor in conv (0 if unknown). */
static uint64_t my_delivered(parley_client *c, const char *me, uint64_t conv)
{
    parley_receipts *r;
    uint64_t d = 0;
    if (parley_get_receipts(c, conv, 0, &r) < 0) return 0;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->members[i].user, me) == 0) d = r->members[i].delivered;
    parley_receipts_free(c, r);
    return d;
}

static void mark_warn(const cli_opts *o, const char *what, const char *why)
{
    if (o->json) {
        jbuf j;
        jb_init(&j, 256);
        jb_lit(&j, "{\"warning\":{\"code\":\"not_delivered\",\"message\":");
        char msg[400];
        snprintf(msg, sizeof msg, "%s: not marked delivered: %s", what, why);
        jb_cstr(&j, msg);
        jb_lit(&j, "}}");
        size_t n;
        const char *d = jb_data(&j, &n);
        if (d) fprintf(stderr, "%.*s\n", (int)n, d);
        jb_free(&j);
    } else {
        fprintf(stderr, "parley: %s: not marked delivered: %s\n", what, why);
    }
}

/* After messages were shown: moves our delivered cursor of each m->conv[i]
 * to m->seq[i] (never read: showing is not reading) over the live
 * connection, and waits, bounded by --timeout, until the server confirms
 * each. A failure is a warning on stderr: what was shown stays shown, and
 * the exit status is that of the command. c was made with mark_callbacks
 * and m as its userdata. */
static void mark_delivered(const cli_opts *o, parley_client *c, mark_ctx *m, const char *what)
{
    if (m->n == 0) return;
    m->left = m->n;
    for (size_t i = 0; i < m->n; i++) parley_mark_delivered(c, m->conv[i], m->seq[i]); /* sent on connect */
    int rc = parley_connect(c);
    if (rc < 0) { m->down = true; m->err = rc; }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100000 && !m->down && m->left; i++) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= o->timeout_ms) break;
        if ((rc = parley_run(c, (int)(o->timeout_ms - el))) < 0) { m->down = true; m->err = rc; }
    }
    char why[512];
    if (m->why[0]) {
        snprintf(why, sizeof why, "refused: %s", m->why);
    } else if (m->down) {
        const parley_error *e = parley_last_error(c);
        snprintf(why, sizeof why, "no live connection: %s",
                 e->message[0] ? e->message : m->err ? parley_strerror(m->err) : "connection failed");
    } else {
        snprintf(why, sizeof why, "no confirmation from the server within %d s", o->timeout_ms / 1000);
    }
    parley_close(c);
    /* No confirmation comes when the cursor was there already (another
     * device moved it meanwhile), or when the connection went after the move:
     * ask (for a few) before warning. */
    size_t missing = 0, asked = 0;
    uint64_t first = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->state[i] == MARK_DONE) continue;
        if (m->state[i] == MARK_WAIT && asked++ < 20 && my_delivered(c, m->me, m->conv[i]) >= m->seq[i])
            continue;
        if (!missing++) first = m->conv[i];
    }
    if (!missing) return;
    char full[700];
    if (missing == 1) snprintf(full, sizeof full, "#%llu: %s", (unsigned long long)first, why);
    else snprintf(full, sizeof full, "%zu conversations: %s", missing, why);
    mark_warn(o, what, full);
}

/* Room for n cursor moves in m (one allocation; free m->conv). */
static int mark_alloc(mark_ctx *m, size_t n)
{
    if (n == 0) return 0;
    char *p = calloc(n, 2 * sizeof(uint64_t) + 1);
    if (!p) return -1;
    m->conv = (uint64_t *)p;
    m->seq = m->conv + n;
    m->state = (uint8_t *)(m->seq + n);
    return 0;
}

static int cmd_inbox(cli_opts *o, const args *a)
{
    if (a->npos != 1) return cli_error(o, EXIT_USAGE, "usage: parley inbox [--changed-since C]");
    int rc = need_login(o);
    if (rc) return rc;
    parley_client *c;
    mark_ctx m = {.me = o->cfg.user};
    if ((rc = cli_client(o, &mark_callbacks, &m, &c))) return rc;
    parley_inbox *in;
    rc = parley_get_inbox(c, a->changed_since, &in);
    if (rc < 0) {
        int code = cli_fail(o, c, rc, "inbox");
        parley_free(c);
        return code;
    }
    if (o->json) {
        jbuf j;
        jb_init(&j, 1024);
        jb_lit(&j, "{\"conversations\":[");
        for (size_t i = 0; i < in->n; i++) {
            if (i) jb_lit(&j, ",");
            cli_json_conv(&j, &in->convs[i]);
        }
        jb_lit(&j, "],\"cursor\":");
        jb_u64(&j, in->cursor);
        jb_lit(&j, "}");
        cli_json_print(&j);
    } else if (in->n == 0) {
        printf("no conversations\n");
    } else {
        for (size_t i = 0; i < in->n; i++) {
            const parley_conv *cv = &in->convs[i];
            char title[300], unread[32] = "", last[400] = "";
            conv_title(o, cv, title, sizeof title);
            if (cv->unread) snprintf(unread, sizeof unread, "%llu unread", (unsigned long long)cv->unread);
            if (cv->last_message) {
                char body[300], when[32];
                print_body(cv->last_message, body, sizeof body);
                cli_time(when, sizeof when, cv->last_message->ts, true);
                snprintf(last, sizeof last, "[%s] %s: %s", when,
                         strcmp(cv->last_message->from, o->cfg.user) == 0 ? "you" : cv->last_message->from,
                         body);
            }
            printf("#%-5llu %-6s %-24s %-10s %s\n", (unsigned long long)cv->id, cv->type, title,
                   unread, last);
        }
    }
    fflush(stdout);
    /* The messages the inbox told of have reached this device. */
    size_t n = 0;
    for (size_t i = 0; i < in->n; i++) n += in->convs[i].last_seq > in->convs[i].delivered_seq;
    if (mark_alloc(&m, n) == 0) {
        for (size_t i = 0; i < in->n; i++) {
            if (in->convs[i].last_seq <= in->convs[i].delivered_seq) continue;
            m.conv[m.n] = in->convs[i].id;
            m.seq[m.n++] = in->convs[i].last_seq;
        }
        mark_delivered(o, c, &m, "inbox");
        free(m.conv);
    } else {
        mark_warn(o, "inbox", "out of memory");
    }
    parley_inbox_free(c, in);
    parley_free(c);
    return EXIT_OK;
}

static int cmd_history(cli_opts *o, const args *a)
{
    if (a->npos != 2)
        return cli_error(o, EXIT_USAGE, "usage: parley history CONV [--limit N] [--before SEQ | --after SEQ]");
    if (a->has_before && a->has_after)
        return cli_error(o, EXIT_USAGE, "use --before or --after, not both");
    if ((a->has_before && a->before == 0))
        return cli_error(o, EXIT_USAGE, "--before: a seq >= 1");
    if (!cli_conv_arg_ok(a->pos[1]))
        return cli_error(o, EXIT_USAGE, "'%s' is not a conversation (a number, or @user)", a->pos[1]);
    int rc = need_login(o);
    if (rc) return rc;
    parley_client *c;
    mark_ctx mk = {.me = o->cfg.user};
    if ((rc = cli_client(o, &mark_callbacks, &mk, &c))) return rc;
    uint64_t conv;
    if ((rc = cli_resolve_conv(o, c, a->pos[1], &conv))) { parley_free(c); return rc; }
    parley_history *h;
    rc = parley_get_history(c, conv, a->has_after ? PARLEY_AFTER : a->has_before ? PARLEY_BEFORE
                                                                 : PARLEY_LATEST,
                            a->has_after ? a->after : a->before,
                            a->has_limit ? (unsigned)a->limit : 0, &h);
    if (rc < 0) {
        int code = cli_fail(o, c, rc, "history");
        parley_free(c);
        return code;
    }
    if (o->json) {
        jbuf j;
        jb_init(&j, 4096);
        jb_lit(&j, "{\"conv\":");
        jb_u64(&j, conv);
        jb_lit(&j, ",\"messages\":[");
        for (size_t i = 0; i < h->n; i++) {
            if (i) jb_lit(&j, ",");
            cli_json_message(&j, &h->msgs[i]);
        }
        jb_lit(&j, "],\"more\":");
        jb_lit(&j, h->more ? "true" : "false");
        jb_lit(&j, "}");
        cli_json_print(&j);
    } else {
        for (size_t i = 0; i < h->n; i++) {
            const parley_message *m = &h->msgs[i];
            char body[20000], when[32];
            print_body(m, body, sizeof body);
            cli_time(when, sizeof when, m->ts, true);
            printf("#%llu [%s] %s: %s\n", (unsigned long long)m->seq, when, m->from, body);
        }
        if (h->n == 0) printf("no messages\n");
    }
    fflush(stdout);
    /* The messages shown have reached this device (an older page moves
     * nothing: the cursor is past it). */
    uint64_t top = h->n ? h->msgs[h->n - 1].seq : 0;
    if (top && top > my_delivered(c, o->cfg.user, conv)) {
        if (mark_alloc(&mk, 1) == 0) {
            mk.conv[0] = conv;
            mk.seq[0] = top;
            mk.n = 1;
            mark_delivered(o, c, &mk, "history");
            free(mk.conv);
        } else {
            mark_warn(o, "history", "out of memory");
        }
    }
    parley_history_free(c, h);
    parley_free(c);
    return EXIT_OK;
}

/* ---- send: the live connection, blocking ------------------------------------------ */

typedef struct send_ctx {
    char cmid[PARLEY_CMID_MAX];
    int done;            /* 1 acked, 2 refused, 3 connection failed */
    parley_ack ack;
    char ack_cmid[PARLEY_CMID_MAX];
    parley_error err;
    int state_err;
    char first[600];     /* the server the connection started with */
} send_ctx;

static void send_on_ack(parley_client *c, const parley_ack *a, void *ud)
{
    send_ctx *s = ud;
    if (strcmp(a->cmid, s->cmid) != 0) return;
    s->ack = *a;
    snprintf(s->ack_cmid, sizeof s->ack_cmid, "%s", a->cmid);
    s->ack.cmid = s->ack_cmid;
    s->done = 1;
    parley_break(c);
}

static void send_on_error(parley_client *c, const parley_error *e, void *ud)
{
    send_ctx *s = ud;
    if (strcmp(e->cmid, s->cmid) != 0) return;
    s->err = *e;
    s->done = 2;
    parley_break(c);
}

static void send_on_state(parley_client *c, parley_state st, int err, uint64_t delay, void *ud)
{
    send_ctx *s = ud;
    /* One try per server: with a list, a failure moves on to the next one
     * (after its short backoff), until the list comes round again. */
    if (st == PARLEY_BACKOFF && strcmp(parley_server(c), s->first) != 0) return;
    if (st == PARLEY_BACKOFF || st == PARLEY_CLOSED) {
        s->done = 3;
        s->state_err = err ? err : PARLEY_EIO;
        parley_break(c);
    }
}

static int cmd_send(cli_opts *o, const args *a)
{
    if (a->npos < 3) return cli_error(o, EXIT_USAGE, "usage: parley send CONV TEXT...");
    if (!cli_conv_arg_ok(a->pos[1]))
        return cli_error(o, EXIT_USAGE, "'%s' is not a conversation (a number, or @user)", a->pos[1]);
    int rc = need_login(o);
    if (rc) return rc;
    /* the text: the arguments joined by spaces, or stdin for "-" */
    char *text = NULL;
    size_t tl = 0;
    if (a->npos == 3 && strcmp(a->pos[2], "-") == 0) {
        size_t cap = 0;
        for (;;) {
            if (cap - tl < 4096) {
                char *nt = realloc(text, cap = cap ? cap * 2 : 8192);
                if (!nt) { free(text); return cli_error(o, EXIT_LOCAL, "out of memory"); }
                text = nt;
            }
            size_t r = fread(text + tl, 1, cap - tl - 1, stdin);
            tl += r;
            if (r == 0) break;
        }
        if (tl && text[tl - 1] == '\n') tl--;
        text[tl] = 0;
    } else {
        for (int i = 2; i < a->npos; i++) tl += strlen(a->pos[i]) + 1;
        text = malloc(tl + 1);
        if (!text) return cli_error(o, EXIT_LOCAL, "out of memory");
        text[0] = 0;
        for (int i = 2; i < a->npos; i++) {
            if (i > 2) strcat(text, " ");
            strcat(text, a->pos[i]);
        }
        tl = strlen(text);
    }
    if (tl == 0) { free(text); return cli_error(o, EXIT_USAGE, "empty message"); }
    send_ctx s;
    memset(&s, 0, sizeof s);
    parley_callbacks cb = {0};
    cb.on_ack = send_on_ack;
    cb.on_error = send_on_error;
    cb.on_state = send_on_state;
    parley_client *c;
    if ((rc = cli_client(o, &cb, &s, &c))) { free(text); return rc; }
    uint64_t conv;
    if ((rc = cli_resolve_conv(o, c, a->pos[1], &conv))) { free(text); parley_free(c); return rc; }
    rc = parley_send(c, conv, text, s.cmid);
    free(text);
    if (rc < 0) {
        parley_free(c);
        return cli_error(o, rc == PARLEY_ENOMEM ? EXIT_LOCAL : EXIT_USAGE, "cannot send: %s",
                         rc == PARLEY_EUTF8 ? "the text is not valid UTF-8" : parley_strerror(rc));
    }
    snprintf(s.first, sizeof s.first, "%s", parley_server(c));
    if ((rc = parley_connect(c)) < 0) {
        int code = cli_fail(o, c, rc, "send");
        parley_free(c);
        return code;
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 100000 && !s.done; i++) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (el >= o->timeout_ms) break;
        rc = parley_run(c, (int)(o->timeout_ms - el));
        if (rc < 0 && !s.done) { s.done = 3; s.state_err = rc; }
    }
    int code = EXIT_OK;
    if (s.done == 1) {
        if (o->json) {
            jbuf j;
            jb_init(&j, 160);
            jb_lit(&j, "{\"conv\":");
            jb_u64(&j, s.ack.conv);
            jb_lit(&j, ",\"seq\":");
            jb_u64(&j, s.ack.seq);
            jb_lit(&j, ",\"ts\":");
            jb_i64(&j, s.ack.ts);
            jb_lit(&j, ",\"cmid\":");
            jb_cstr(&j, s.ack.cmid);
            jb_lit(&j, ",\"duplicate\":");
            jb_lit(&j, s.ack.duplicate ? "true" : "false");
            jb_lit(&j, "}");
            cli_json_print(&j);
        } else {
            printf("✓ sent #%llu to #%llu\n", (unsigned long long)s.ack.seq,
                   (unsigned long long)s.ack.conv);
        }
    } else if (s.done == 2) {
        code = cli_exit_for(s.err.err, 1); /* the server refused it */
        if (o->json) {
            jbuf j;
            jb_init(&j, 256);
            jb_lit(&j, "{\"error\":{\"code\":");
            jb_cstr(&j, s.err.code);
            jb_lit(&j, ",\"message\":");
            jb_cstr(&j, s.err.message);
            jb_lit(&j, ",\"cmid\":");
            jb_cstr(&j, s.cmid);
            jb_lit(&j, ",\"exit\":");
            jb_u64(&j, (uint64_t)code);
            jb_lit(&j, "}}");
            size_t n;
            const char *d = jb_data(&j, &n);
            if (d) fprintf(stderr, "%.*s\n", (int)n, d);
            jb_free(&j);
        } else {
            fprintf(stderr, "parley: send: %s (%s)\n", s.err.message, s.err.code);
        }
    } else if (s.done == 3) {
        code = cli_fail(o, c, s.state_err, "send");
        if (code == EXIT_USAGE) code = EXIT_NETWORK;
    } else {
        code = cli_error(o, EXIT_NETWORK, "send: no acknowledgement within %d s", o->timeout_ms / 1000);
    }
    parley_close(c);
    parley_free(c);
    return code;
}

/* ---- conversations ------------------------------------------------------------------ */

static void print_conv(const cli_opts *o, const parley_conv *cv, const char *what)
{
    if (o->json) {
        jbuf j;
        jb_init(&j, 512);
        cli_json_conv(&j, cv);
        cli_json_print(&j);
        return;
    }
    char title[300];
    conv_title(o, cv, title, sizeof title);
    printf("%s#%llu %s %s: ", what, (unsigned long long)cv->id, cv->type, title);
    for (size_t i = 0; i < cv->nmembers; i++) {
        bool admin = false;
        for (size_t k = 0; k < cv->nadmins; k++) admin |= strcmp(cv->admins[k], cv->members[i]) == 0;
        printf("%s%s%s", i ? ", " : "", cv->members[i], admin ? " (admin)" : "");
    }
    printf("\n");
}

static int cmd_direct(cli_opts *o, const args *a)
{
    if (a->npos != 2) return cli_error(o, EXIT_USAGE, "usage: parley direct USER");
    int rc = need_login(o);
    if (rc) return rc;
    parley_client *c;
    if ((rc = cli_client(o, NULL, NULL, &c))) return rc;
    const char *user = a->pos[1][0] == '@' ? a->pos[1] + 1 : a->pos[1];
    parley_conv *cv;
    bool created = false;
    rc = parley_create_direct(c, user, &cv, &created);
    if (rc < 0) {
        int code = cli_fail(o, c, rc, "direct");
        parley_free(c);
        return code;
    }
    print_conv(o, cv, created ? "new " : "");
    parley_conv_free(c, cv);
    parley_free(c);
    return EXIT_OK;
}

static int cmd_group(cli_opts *o, const args *a)
{
    const char *sub = a->npos >= 2 ? a->pos[1] : "";
    int rc;
    if (strcmp(sub, "create") == 0) {
        if (a->npos < 3) return cli_error(o, EXIT_USAGE, "usage: parley group create NAME [MEMBER...]");
    } else if (strcmp(sub, "add") == 0 || strcmp(sub, "remove") == 0) {
        if (a->npos != 4) return cli_error(o, EXIT_USAGE, "usage: parley group %s CONV USER", sub);
        if (!cli_conv_arg_ok(a->pos[2]))
            return cli_error(o, EXIT_USAGE, "'%s' is not a conversation (a number, or @user)", a->pos[2]);
    } else {
        return cli_error(o, EXIT_USAGE, "usage: parley group create|add|remove ... (see parley --help)");
    }
    if ((rc = need_login(o))) return rc;
    parley_client *c;
    if ((rc = cli_client(o, NULL, NULL, &c))) return rc;
    parley_conv *cv = NULL;
    int code = EXIT_OK;
    if (strcmp(sub, "create") == 0) {
        const char *members[64];
        size_t n = 0;
        for (int i = 3; i < a->npos; i++) members[n++] = a->pos[i][0] == '@' ? a->pos[i] + 1 : a->pos[i];
        rc = parley_create_group(c, a->pos[2], members, n, &cv);
        if (rc < 0) code = cli_fail(o, c, rc, "group create");
        else print_conv(o, cv, "new ");
    } else {
        uint64_t conv;
        const char *user = a->pos[3][0] == '@' ? a->pos[3] + 1 : a->pos[3];
        if ((code = cli_resolve_conv(o, c, a->pos[2], &conv))) { parley_free(c); return code; }
        if (strcmp(sub, "add") == 0) {
            rc = parley_add_member(c, conv, user, &cv);
            if (rc < 0) code = cli_fail(o, c, rc, "group add");
            else print_conv(o, cv, "");
        } else {
            rc = parley_remove_member(c, conv, user);
            if (rc < 0) code = cli_fail(o, c, rc, "group remove");
            else if (o->json) {
                jbuf j;
                jb_init(&j, 96);
                jb_lit(&j, "{\"conv\":");
                jb_u64(&j, conv);
                jb_lit(&j, ",\"removed\":");
                jb_cstr(&j, user);
                jb_lit(&j, "}");
                cli_json_print(&j);
            } else {
                printf("removed %s from #%llu\n", user, (unsigned long long)conv);
            }
        }
    }
    if (cv) parley_conv_free(c, cv);
    parley_free(c);
    return code;
}

/* ---- main ------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    args a;
    if (parse_args(argc, argv, &a) < 0) return EXIT_USAGE;
    if (a.help) { usage(stdout); return EXIT_OK; }
    if (a.version) { printf("parley " VERSION "\n"); return EXIT_OK; }
    if (a.npos == 0) { usage(stderr); return EXIT_USAGE; }
    cli_opts o;
    memset(&o, 0, sizeof o);
    o.json = a.json;
    o.timeout_ms = (int)(a.timeout_s ? a.timeout_s : 30) * 1000;
    const char *cmd = a.pos[0];
    static const char *const known[] = {"register", "login", "logout", "whoami", "inbox", "history",
                                        "send", "direct", "group", "chat"};
    bool ok = false;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) ok |= strcmp(cmd, known[i]) == 0;
    if (!ok) return cli_error(&o, EXIT_USAGE, "unknown command '%s' (see parley --help)", cmd);
    const char *allowed = strcmp(cmd, "history") == 0 ? "--limit --before --after"
                        : strcmp(cmd, "inbox") == 0 ? "--changed-since"
                        : strcmp(cmd, "chat") == 0 ? "--last --wait" : "";
    if (only_flags(&a, cmd, allowed) < 0) return EXIT_USAGE;
    if (cli_config_load(&o.cfg) < 0) return EXIT_LOCAL;
    const char *env = getenv("PARLEY_SERVER");
    o.server = a.server ? a.server
             : env && *env ? env
             : o.cfg.server[0] ? o.cfg.server : DEFAULT_SERVER;
    if (strlen(o.server) >= sizeof o.cfg.server) /* it is kept in the config file */
        return cli_error(&o, EXIT_USAGE, "the server list is too long (at most %zu characters)",
                         sizeof o.cfg.server - 1);
    if (strcmp(cmd, "register") == 0) return cmd_auth(&o, &a, true);
    if (strcmp(cmd, "login") == 0) return cmd_auth(&o, &a, false);
    if (strcmp(cmd, "logout") == 0) return cmd_logout(&o, &a);
    if (strcmp(cmd, "whoami") == 0) return cmd_whoami(&o, &a);
    if (strcmp(cmd, "inbox") == 0) return cmd_inbox(&o, &a);
    if (strcmp(cmd, "history") == 0) return cmd_history(&o, &a);
    if (strcmp(cmd, "send") == 0) return cmd_send(&o, &a);
    if (strcmp(cmd, "direct") == 0) return cmd_direct(&o, &a);
    if (strcmp(cmd, "group") == 0) return cmd_group(&o, &a);
    /* chat */
    if (a.npos != 2) return cli_error(&o, EXIT_USAGE, "usage: parley chat CONV [--last N] [--wait SECONDS]");
    if (!cli_conv_arg_ok(a.pos[1]))
        return cli_error(&o, EXIT_USAGE, "'%s' is not a conversation (a number, or @user)", a.pos[1]);
    int rc = need_login(&o);
    if (rc) return rc;
    chat_args ca = {a.pos[1], a.has_last ? (unsigned)a.last : 20,
                    (int)(a.has_wait ? a.wait_s : 30) * 1000};
    return cli_chat(&o, &ca);
}
