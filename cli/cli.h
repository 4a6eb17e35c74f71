/* The parley CLI: declarations shared by the files under cli/. */
#ifndef PARLEY_CLI_H
#define PARLEY_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/json.h"
#include "parley.h"

/* Exit statuses (documented in `parley --help`). */
enum {
    EXIT_OK = 0,
    EXIT_USAGE = 1,    /* bad command line */
    EXIT_SERVER = 2,   /* refused by the server: auth, permission, not found, conflict, invalid */
    EXIT_NETWORK = 3,  /* server unreachable, timed out, connection lost, messages not sent */
    EXIT_LOCAL = 4,    /* local failure: config file, terminal, out of memory */
};

#define DEFAULT_SERVER "http://localhost:8080"

/* ---- config (cli/cli_config.c) ---- */

#define CLI_MAX_DEVICE_KEYS 32

/* The device key of one server and user (docs/protocol.md "Failed logins
 * and known devices"), kept across logins and logouts. */
typedef struct cli_device_key {
    char server[512];
    char user[PARLEY_USER_MAX];
    char key[PARLEY_DEVICE_KEY_MAX];
} cli_device_key;

typedef struct cli_config {
    char path[4096];
    char server[512];
    char user[PARLEY_USER_MAX];
    char token[PARLEY_TOKEN_MAX];
    cli_device_key keys[CLI_MAX_DEVICE_KEYS]; /* oldest first */
    size_t nkeys;
} cli_config;

/* Finds the path ($PARLEY_CONFIG or ~/.config/parley/config) and reads it
 * if it exists. Returns 0, or -1 with a message on stderr. */
int cli_config_load(cli_config *cfg);
/* Writes the file atomically with mode 0600 (its directory 0700 when
 * created). Returns 0 or -1 with a message on stderr. */
int cli_config_save(const cli_config *cfg);
/* The device key kept for server and user (server: one URL or a
 * comma-separated list; blanks around an entry, a trailing '/' of an entry
 * and the case of the user do not matter), or else the newest one kept for
 * the user and a list that names a server of this one (a cluster's nodes
 * share their accounts), or NULL. Owned by cfg. */
const char *cli_config_device_key(const cli_config *cfg, const char *server, const char *user);
/* Keeps key for server and user, replacing the one they had; the oldest
 * is forgotten when CLI_MAX_DEVICE_KEYS are kept. Values that do not fit
 * the file's format (too long, a space, a key outside base64url) are not
 * kept. */
void cli_config_set_device_key(cli_config *cfg, const char *server, const char *user,
                               const char *key);

/* ---- global options and output (cli/parley.c, cli/cli_out.c) ---- */

typedef struct cli_opts {
    const char *server;   /* the effective server URL, or a comma-separated list */
    bool json;
    int timeout_ms;       /* network bound for one-shot commands */
    cli_config cfg;
} cli_opts;

/* Prints a failed library call: "parley: <what>: <message>" (or a JSON
 * error object on stderr with --json) and returns the exit status for it. */
int cli_fail(const cli_opts *o, parley_client *c, int rc, const char *what);
/* The exit status for an error code (status: the HTTP status, 0 if none). */
int cli_exit_for(int rc, int status);
/* Prints a usage/local error and returns code. */
int cli_error(const cli_opts *o, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* JSON builders (jbuf from json.h). */
void cli_json_message(jbuf *j, const parley_message *m);
void cli_json_conv(jbuf *j, const parley_conv *cv);
/* Prints the finished JSON and a newline to stdout, frees j. */
void cli_json_print(jbuf *j);

/* Writes s[0..n) to out with control characters made harmless (a message
 * cannot move the cursor or change the terminal). Newlines become "\n   "
 * continuation when indent is true, else a visible "↵". */
void cli_put_clean(char *out, size_t cap, const char *s, size_t n);
/* "YYYY-MM-DD HH:MM" for a ms timestamp; "HH:MM" when !full and it is
 * today. */
void cli_time(char *out, size_t cap, int64_t ts_ms, bool full);

/* Creates a client for the effective server with the config's token. */
int cli_client(const cli_opts *o, const parley_callbacks *cb, void *ud, parley_client **out);
/* True if arg looks like a CONV argument (checked before anything else). */
bool cli_conv_arg_ok(const char *arg);
/* Resolves CONV: a number, or @user (the direct conversation, created if
 * needed). Returns 0 with *conv set, or an exit status. */
int cli_resolve_conv(const cli_opts *o, parley_client *c, const char *arg, uint64_t *conv);

/* ---- chat (cli/cli_chat.c) ---- */

typedef struct chat_args {
    const char *conv;     /* as given */
    unsigned last;        /* history lines shown first */
    int wait_ms;          /* bound on sending what is queued after EOF */
} chat_args;

int cli_chat(const cli_opts *o, const chat_args *a);

#endif
