/* libparley: the C client library of parley (docs/protocol.md).
 *
 * One parley_client talks to one server at a time as one user (several
 * servers: see "Failover" below):
 *
 *   - REST calls (register, login, logout, inbox, history, conversations,
 *     members, receipts) are plain blocking HTTP/1.1 requests, one TCP
 *     connection each, bounded by options.request_timeout_ms.
 *   - The live connection (WebSocket /v1/ws, "Authorization: Bearer") is
 *     non-blocking. It reconnects by itself with exponential backoff and full
 *     jitter (base 1 s, cap 60 s; a 503/429 Retry-After is waited at least),
 *     keeps every message until its ack and resends it with the same cmid
 *     after a reconnect or an ack timeout, tracks the highest seq of every
 *     conversation, fills gaps with `sync` (messages reach on_message in seq
 *     order, each once), and moves the delivered/read cursors forward only.
 *     Backpressure (docs/protocol.md): a `busy` / `rate_limited` answer
 *     pauses the whole connection for retry_after_ms (no messages, cursors,
 *     gap syncs or typing; refusals of what was already on its way name
 *     the same end) and halves the window of unacked messages on the wire
 *     once per pause (it grows back by one per ack, up to max_inflight).
 *     After the pause the refused messages go again first, oldest first,
 *     with the same cmids, so they are stored once and in the order of
 *     parley_send(); a refusal that names no message makes the client
 *     resend what was in flight after the pause. Every
 *     close of the connection leads to a reconnect, 1008 included; only a
 *     401 on the upgrade (a revoked or expired token) stops it for good.
 *
 * Failover: options.server may list several base URLs separated by commas
 * ("http://a:8080,http://b:8080": nodes of one cluster, which share their
 * database, so a token and the seqs are valid on each). The client uses one
 * server at a time, the first to begin with (parley_server() names it):
 *   - every failure of a connect or of the live connection (refused, timed
 *     out, a failed handshake or upgrade, a 503/429, dropped, closed by the
 *     server) sends the next attempt to the next server in the list, round
 *     robin; a 401 stops for good as with one server;
 *   - each attempt waits its jittered backoff as with one server (the
 *     clients of a node that fails spread out instead of all reaching the
 *     next node at once; a Retry-After is a floor), but the ceiling doubles
 *     once per full round of the list instead of once per failure: with
 *     the defaults and three servers, 1, 1, 1, 2, 2, 2, 4 ... s up to the
 *     cap, so a client whose first servers are down reaches a live one
 *     within one base delay per dead server;
 *   - after the reconnect it resumes as always: unacked messages are resent
 *     with their cmids (the new node answers them as duplicates if they
 *     were stored), the inbox since the cursor and sync fill what was
 *     missed;
 *   - REST calls go to the server in use. One that cannot connect to it
 *     (refused, or its name does not resolve: nothing was sent, so it is
 *     safe to repeat) is tried on the next servers in turn, and the first
 *     that answers becomes the server in use (the next connect goes there
 *     too). A request that fails after it was sent is not repeated
 *     elsewhere (a POST may have been applied): its error is returned.
 *
 * Driving the live connection: either
 *   - blocking: parley_run(c, timeout_ms) polls the socket and the client's
 *     timers and dispatches callbacks until the timeout passes or a callback
 *     calls parley_break(); or
 *   - libuv: parley_attach_uv(c, loop) once, before parley_connect(); the
 *     client then lives on the caller's loop (a uv_poll_t on its socket, a
 *     uv_timer_t for its timers) and parley_run() is refused. REST calls
 *     still block the loop while they run.
 *
 * Threads: a client is not thread-safe; use it from one thread (the loop's
 * thread in libuv mode). Different clients are independent.
 *
 * Errors: every fallible function returns >= 0 on success or a negative
 * code of enum parley_errcode (PARLEY_E*, below; parley_strerror() names
 * it). They are the server's own error codes, with the same numbers and
 * names. Nothing aborts. A call that fails never fires a callback. After a
 * failed REST call parley_last_error() has the HTTP status and the server's
 * error code and message.
 *
 * Callbacks may call any function of the client except parley_free(); their
 * pointer arguments are valid only during the call (copy what you keep).
 *
 * Memory: every allocation of the client goes through the allocator given at
 * creation (libc when NULL), except the short-lived JSON encode buffers of
 * the shared codec (json.h jbuf, libc, freed before the call returns) and
 * libc's getaddrinfo(). Results of REST calls (parley_inbox, parley_history,
 * parley_conv, parley_receipts) are owned by the caller and freed with their
 * *_free function on the same client. Strings passed in are copied when the
 * client keeps them; the caller keeps ownership of everything it passes.
 */
#ifndef PARLEY_H
#define PARLEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks the functions of the API: the shared library (libparley.so) is
 * built with hidden visibility and exports these names only. */
#if defined(__GNUC__) || defined(__clang__)
#define PARLEY_API __attribute__((visibility("default")))
#else
#define PARLEY_API
#endif

/* Error codes: 0 or a count on success, one of these (negative) on failure.
 * parley_strerror() gives the name in quotes, which is also the one the
 * server uses in logs and metrics. */
typedef enum parley_errcode {
    PARLEY_OK           = 0,   /* "ok" */
    PARLEY_EAGAIN       = -1,  /* "again": would block, need more input */
    PARLEY_EINVALID     = -2,  /* "invalid": malformed input or bad argument */
    PARLEY_EPROTOCOL    = -3,  /* "protocol": the server broke a protocol rule */
    PARLEY_ETOO_LARGE   = -4,  /* "too_large": a size or count limit was exceeded */
    PARLEY_EUTF8        = -5,  /* "utf8": text is not valid UTF-8 */
    PARLEY_ENOMEM       = -6,  /* "nomem": allocation failed */
    PARLEY_EIO          = -7,  /* "io": a system call failed (connect, read, ...) */
    PARLEY_ECLOSED      = -8,  /* "closed": not connected, or closed by the peer */
    PARLEY_ETIMEOUT     = -9,  /* "timeout": a deadline passed */
    PARLEY_ENOT_FOUND   = -10, /* "not_found": no such object (404) */
    PARLEY_EUNSUPPORTED = -11, /* "unsupported": valid but not supported */
    PARLEY_EFULL        = -12, /* "full": a bounded queue is full */
    PARLEY_EAUTH        = -13, /* "auth": missing or refused credentials (401) */
    PARLEY_EFORBIDDEN   = -14, /* "forbidden": authenticated but not allowed (403) */
    PARLEY_ECONFLICT    = -15, /* "conflict": already exists (409) */
    PARLEY_EBUSY        = -16, /* "busy": the server is overloaded, retry later (503) */
    PARLEY_ERATE        = -17, /* "rate_limited": slow down, retry later (429) */
    PARLEY_EVERSION     = -18, /* "version": incompatible protocol version */
} parley_errcode;

#define PARLEY_CMID_MAX 65     /* cmid buffer: up to 64 characters + NUL */
#define PARLEY_USER_MAX 33     /* username: up to 32 characters + NUL */
#define PARLEY_TOKEN_MAX 128   /* token buffer (tokens are 43 characters) */
#define PARLEY_DEVICE_KEY_MAX 64 /* device key buffer (keys are 27 characters) */
/* Unacked messages on the wire, at most: the server's free refusals per
 * pause (docs/protocol.md "Backpressure") are 64. */
#define PARLEY_MAX_INFLIGHT 64
/* Servers in options.server, at most (see "Failover" above). */
#define PARLEY_MAX_SERVERS 16

typedef struct parley_client parley_client;

/* A swappable allocator: the same contract as malloc/realloc/free (realloc
 * of NULL allocates, free of NULL is a no-op). ctx is passed back. The
 * struct is copied by parley_new; ctx must stay valid until parley_free
 * (and, in libuv mode, until the loop has run the close callbacks). */
typedef struct parley_allocator {
    void *(*malloc_fn)(void *ctx, size_t size);
    void *(*realloc_fn)(void *ctx, void *ptr, size_t size);
    void (*free_fn)(void *ctx, void *ptr);
    void *ctx;
} parley_allocator;

/* State of the live connection, as reported to on_state. */
typedef enum parley_state {
    PARLEY_IDLE = 0,       /* parley_connect() not called yet, or parley_close() */
    PARLEY_CONNECTING,     /* TCP connect / WebSocket handshake / waiting for hello */
    PARLEY_CONNECTED,      /* hello received: sending and receiving */
    PARLEY_BACKOFF,        /* lost or failed; reconnecting after delay_ms */
    PARLEY_CLOSED,         /* stopped for good (e.g. the token was refused: PARLEY_EAUTH) */
} parley_state;

/* A message. All pointers valid during the callback / while the result that
 * holds it is alive. */
typedef struct parley_message {
    uint64_t conv;
    uint64_t seq;
    int64_t ts;                /* server time, ms since the epoch */
    const char *from;          /* username */
    const char *cmid;
    const char *body;          /* the body as raw JSON text (NUL-terminated) */
    size_t body_len;
    const char *text;          /* the body unescaped when it is a JSON string, else NULL */
} parley_message;

typedef struct parley_ack {
    uint64_t conv;
    uint64_t seq;
    int64_t ts;
    const char *cmid;
    bool duplicate;            /* the server had it already (a resend) */
} parley_ack;

typedef struct parley_receipt {
    uint64_t conv;
    const char *user;
    uint64_t delivered;
    uint64_t read;
} parley_receipt;

typedef struct parley_presence {
    const char *user;
    bool online;
    int64_t last_seen;         /* ms since the epoch */
} parley_presence;

/* A conversation object (docs/protocol.md "Conversations"). Fields the
 * server did not send are 0 / NULL (e.g. read_seq in a `conv` frame). */
typedef struct parley_conv {
    uint64_t id;
    const char *type;          /* "direct" or "group" */
    const char *name;          /* "" for direct conversations */
    const char **members;      /* nmembers usernames */
    size_t nmembers;
    const char **admins;
    size_t nadmins;
    uint64_t last_seq, read_seq, delivered_seq, unread;
    const parley_message *last_message; /* NULL in an empty conversation */
    int64_t last_ts;           /* the last message's time (or creation), ms */
} parley_conv;

/* Details of a failure: the last failed REST call (parley_last_error), or
 * an asynchronous error (on_error). */
typedef struct parley_error {
    int err;                   /* a PARLEY_E* code */
    int status;                /* HTTP status, 0 if none (network error) */
    char code[48];             /* the server's error code ("forbidden"), or "" */
    char message[256];         /* human-readable */
    uint64_t conv;             /* the conversation concerned, 0 if none */
    char cmid[PARLEY_CMID_MAX];/* a refused send: its cmid (dropped from the queue) */
    uint64_t retry_after_ms;   /* for busy / rate_limited */
    uint16_t close_code;       /* the WebSocket close code, if the connection closed */
} parley_error;

typedef struct parley_callbacks {
    /* The live connection changed state. err: why it left CONNECTED or why
     * a connect failed (PARLEY_EIO, PARLEY_ETIMEOUT, PARLEY_ECLOSED for a
     * close by the server (parley_last_error() has the close code),
     * PARLEY_EBUSY for a 503, PARLEY_ERATE for a 429, PARLEY_EAUTH for a
     * refused token with PARLEY_CLOSED), 0 otherwise. delay_ms: for
     * PARLEY_BACKOFF, the wait before the next attempt. */
    void (*on_state)(parley_client *c, parley_state state, int err, uint64_t delay_ms,
                     void *ud);
    /* A message from someone else (or from another device of this user), in
     * seq order per conversation, each seq once. */
    void (*on_message)(parley_client *c, const parley_message *m, void *ud);
    /* One of our messages is durably stored ("sent", ✓). Once per message:
     * from its ack, or (duplicate = true) from a sync that found it stored
     * after its ack was lost with a connection. */
    void (*on_ack)(parley_client *c, const parley_ack *a, void *ud);
    /* A member's delivered/read cursors moved. */
    void (*on_receipt)(parley_client *c, const parley_receipt *r, void *ud);
    void (*on_presence)(parley_client *c, const parley_presence *p, void *ud);
    /* A member is typing (show it for about 5 s). */
    void (*on_typing)(parley_client *c, uint64_t conv, const char *user, void *ud);
    /* A conversation was created with us in it or its members changed; or
     * (removed = true, only conv->id set) we are no longer a member. */
    void (*on_conv)(parley_client *c, const parley_conv *conv, bool removed, void *ud);
    /* An asynchronous error: a refused send (e->cmid set; the message was
     * dropped from the queue), a refused sync or cursor (e->conv), or a
     * server error frame. */
    void (*on_error)(parley_client *c, const parley_error *e, void *ud);
    /* The server may have failed to deliver some events to this connection
     * (docs/protocol.md `resync`; reason: the server's, e.g. "bus", or "").
     * The connection stays open. The client catches up by itself as after
     * a reconnect (the inbox changed since its cursor, every page, then
     * sync of each tracked conversation that changed: on_message gets what
     * was missed, in order, once); it resends nothing (unacked messages go
     * on as before). What else the app shows from live frames may be stale
     * too: refresh it here as after a reconnect (parley_get_receipts for
     * ticks, parley_get_conv for members). (Added after the fields above,
     * which keep their offsets; rebuild against this header, as the client
     * copies the whole struct.) */
    void (*on_resync)(parley_client *c, const char *reason, void *ud);
} parley_callbacks;

typedef struct parley_options {
    const char *server;             /* "http://host[:port][/prefix]", or several
                                       separated by commas (blanks around each
                                       ignored; failover, above), at most
                                       PARLEY_MAX_SERVERS; copied. Default
                                       "http://localhost:8080" */
    const char *token;              /* bearer token or NULL; copied */
    const parley_allocator *allocator; /* NULL: libc; copied */
    const parley_callbacks *callbacks; /* NULL: none; copied */
    void *userdata;                 /* passed to every callback */
    uint32_t backoff_base_ms;       /* 1000 */
    uint32_t backoff_cap_ms;        /* 60000 */
    uint32_t connect_timeout_ms;    /* TCP connect + handshake + hello: 10000 */
    uint32_t request_timeout_ms;    /* one REST call: 30000 */
    uint32_t ack_timeout_ms;        /* resend an unacked message after: 15000 */
    uint32_t keepalive_ms;          /* ping after this much silence, drop after
                                       twice as much: 30000 */
    uint32_t max_pending;           /* unacked messages kept: 10000 (then PARLEY_EFULL) */
    uint32_t max_inflight;          /* unacked messages on the wire, at most: 32
                                       (PARLEY_MAX_INFLIGHT at most) */
    uint32_t max_message;           /* largest incoming WebSocket message: 32 MiB */
    bool manual_delivered;          /* false: send `delivered` for every message
                                       handed to on_message; true: the app calls
                                       parley_mark_delivered() */
    /* Injected sources (tests): NULL for getrandom(2) / CLOCK_MONOTONIC. The
     * random source feeds cmids, WebSocket keys and masks, and jitter. */
    uint64_t (*random)(void *ctx);
    void *random_ctx;
    uint64_t (*clock_ms)(void *ctx);
    void *clock_ctx;
} parley_options;

/* Fills *o with the defaults (all zero means default too). */
PARLEY_API void parley_options_init(parley_options *o);

/* Creates a client. PARLEY_EINVALID for a bad server URL (any entry of a
 * list, an empty one included), PARLEY_EUNSUPPORTED for https (no TLS yet),
 * PARLEY_ETOO_LARGE for more than PARLEY_MAX_SERVERS servers or a token of
 * PARLEY_TOKEN_MAX characters or more, PARLEY_ENOMEM. *out is owned by the
 * caller: parley_free. */
PARLEY_API int parley_new(const parley_options *o, parley_client **out);

/* Closes the connection (no close handshake wait) and frees everything,
 * unacknowledged messages included. Not from inside a callback. In libuv
 * mode the handles are closed asynchronously: let the loop run once more. */
PARLEY_API void parley_free(parley_client *c);

/* The stable name of an error code ("auth", "io", ...; "unknown" for a
 * value that is not a PARLEY_E* code). Static string, never freed. */
PARLEY_API const char *parley_strerror(int err);

/* Details of the last failed REST call (or of the last live-connection
 * failure). Owned by the client, valid until the next call. */
PARLEY_API const parley_error *parley_last_error(const parley_client *c);

/* The username (from register/login or the server's hello; "" if not
 * known yet). Owned by the client. */
PARLEY_API const char *parley_user(const parley_client *c);

/* The server in use: one entry of options.server as "http://host:port[/prefix]"
 * (the first until a failure moves the client on). Owned by the client,
 * valid until the next call that may move it (any REST call, parley_run,
 * the libuv loop). */
PARLEY_API const char *parley_server(const parley_client *c);

/* The token in use ("" if none). Owned by the client. */
PARLEY_API const char *parley_token(const parley_client *c);
/* Sets (copies) the token; NULL or "" clears it. PARLEY_ETOO_LARGE. */
PARLEY_API int parley_set_token(parley_client *c, const char *token);

/* This device's key (docs/protocol.md "Failed logins and known devices"):
 * the `device_key` of the last register or login on this client ("" if
 * none). parley_login() presents it, so that a device that logged in before
 * is not delayed by strangers' failed logins. Keep it next to the token
 * (it outlives the token: keep it after a logout) and give it back with
 * parley_set_device_key() in the next process. Owned by the client. */
PARLEY_API const char *parley_device_key(const parley_client *c);
/* Sets (copies) the key; NULL or "" clears it. PARLEY_ETOO_LARGE for
 * PARLEY_DEVICE_KEY_MAX characters or more, PARLEY_EINVALID for a
 * character outside base64url (A-Z a-z 0-9 - _); the key stays then. */
PARLEY_API int parley_set_device_key(parley_client *c, const char *key);

/* ---- REST (blocking) ---------------------------------------------------- */

typedef struct parley_session {
    char user[PARLEY_USER_MAX];
    char token[PARLEY_TOKEN_MAX];
    uint64_t device;
    int64_t expires;               /* ms since the epoch */
    char device_key[PARLEY_DEVICE_KEY_MAX]; /* the new device's key ("" if none) */
} parley_session;

/* Register a new user / log in (a new device). On success the client uses
 * the new token and the new device's key (parley_device_key), and *out
 * (caller's storage, may be NULL) is filled. parley_login() sends the
 * client's device key, if it has one (a key the server does not know is
 * ignored: the login is then a new device's, delayed by its address's
 * failures). */
PARLEY_API int parley_register(parley_client *c, const char *user, const char *password,
                               parley_session *out);
PARLEY_API int parley_login(parley_client *c, const char *user, const char *password,
                            parley_session *out);
/* Revokes the current token on the server, then clears it. */
PARLEY_API int parley_logout(parley_client *c);

typedef struct parley_inbox {
    parley_conv *convs;        /* most recent activity first */
    size_t n;
    uint64_t cursor;           /* for changed_since */
    bool more;                 /* parley_get_inbox_page: the walk goes on */
    const char *next;          /* then the page token for the next page, else NULL */
} parley_inbox;

typedef struct parley_history {
    parley_message *msgs;      /* ascending seq */
    size_t n;
    bool more;
} parley_history;

typedef struct parley_member_cursor {
    const char *user;
    uint64_t delivered, read;
} parley_member_cursor;

typedef struct parley_receipts {
    parley_member_cursor *members;
    size_t n;
    uint64_t seq, delivered, read; /* with seq != 0: members other than the
                                      sender that have it delivered / read */
} parley_receipts;

/* The whole inbox (GET /v1/conversations[?changed_since=]; changed_since
 * 0: all): every page of a walk, then what changed during it (changed_since
 * = the walk's cursor, a few rounds at most), each conversation once (its
 * newest copy), most recent activity first; cursor: for the next call. */
PARLEY_API int parley_get_inbox(parley_client *c, uint64_t changed_since, parley_inbox **out);
/* One page of the inbox (docs/protocol.md "Pages"): page NULL for the first
 * page of a walk, else the `next` of the previous page (changed_since is
 * then taken from it: pass 0 or the walk's own); limit 0: the server's
 * default (100), at most 1000. While in->more, ask again with in->next;
 * keep in->cursor once a page has more = false. PARLEY_EINVALID for a page
 * token that is not one. */
PARLEY_API int parley_get_inbox_page(parley_client *c, uint64_t changed_since, const char *page,
                                     unsigned limit, parley_inbox **out);
PARLEY_API void parley_inbox_free(parley_client *c, parley_inbox *in);

/* Which page of history: the latest messages, those after a seq (paging
 * forward; seq 0 = from the start), or those before a seq (paging back). */
typedef enum parley_page { PARLEY_LATEST = 0, PARLEY_AFTER, PARLEY_BEFORE } parley_page;

/* GET /v1/conversations/{conv}/messages: up to limit messages (0: 50; at
 * most 500), ascending. The server trims a page to its byte budget
 * (docs/protocol.md "Pages"); this call asks for the following pages in the
 * same direction until it has limit messages or there are no more.
 * h->more: further messages exist beyond those returned, in the direction
 * of paging. PARLEY_EINVALID for PARLEY_BEFORE with seq 0. */
PARLEY_API int parley_get_history(parley_client *c, uint64_t conv, parley_page page, uint64_t seq,
                                  unsigned limit, parley_history **out);
PARLEY_API void parley_history_free(parley_client *c, parley_history *h);

/* Conversations. Each returns the conversation object (*out, caller frees
 * with parley_conv_free; out may be NULL). created (may be NULL) tells a new
 * direct conversation (201) from the existing one (200). */
PARLEY_API int parley_get_conv(parley_client *c, uint64_t conv, parley_conv **out);
PARLEY_API int parley_create_direct(parley_client *c, const char *with, parley_conv **out,
                                    bool *created);
PARLEY_API int parley_create_group(parley_client *c, const char *name, const char *const *members,
                                   size_t nmembers, parley_conv **out);
PARLEY_API int parley_add_member(parley_client *c, uint64_t conv, const char *user,
                                 parley_conv **out);
PARLEY_API int parley_remove_member(parley_client *c, uint64_t conv, const char *user);
PARLEY_API void parley_conv_free(parley_client *c, parley_conv *conv);

/* GET /v1/conversations/{conv}/receipts[?seq=]. */
PARLEY_API int parley_get_receipts(parley_client *c, uint64_t conv, uint64_t seq,
                                   parley_receipts **out);
PARLEY_API void parley_receipts_free(parley_client *c, parley_receipts *r);

/* ---- live connection ---------------------------------------------------- */

/* Starts the live connection (non-blocking; needs a token): from now on the
 * client connects and reconnects by itself until parley_close(). */
PARLEY_API int parley_connect(parley_client *c);
/* Stops: sends a close frame if connected, closes the socket, no more
 * reconnects. Unacknowledged messages stay queued (parley_connect resends
 * them). */
PARLEY_API int parley_close(parley_client *c);
PARLEY_API parley_state parley_get_state(const parley_client *c);

/* Blocking mode: runs the client for up to timeout_ms (-1: until
 * parley_break or the client closes; 0: one pass over what is ready now,
 * without waiting). Returns PARLEY_OK when the time is up or
 * after parley_break(); PARLEY_ECLOSED (or the error that closed it, e.g.
 * PARLEY_EAUTH) once the client is IDLE/CLOSED; PARLEY_EINVALID in libuv mode. */
PARLEY_API int parley_run(parley_client *c, int timeout_ms);
/* Makes the running parley_run() return after the current callback. */
PARLEY_API void parley_break(parley_client *c);

/* libuv mode: the client lives on loop (a uv_loop_t *, declared void * so
 * this header does not need uv.h). Call once, before parley_connect().
 * PARLEY_EINVALID if already attached or the connection was started. */
PARLEY_API int parley_attach_uv(parley_client *c, void *loop);

/* Queues a message with a text (string) body and a fresh random cmid (32
 * hex characters, copied into cmid_out if not NULL). It is written when
 * connected, kept until acked and resent with the same cmid. PARLEY_EFULL,
 * PARLEY_EINVALID (conv 0, text NULL), PARLEY_EUTF8 (text not UTF-8),
 * PARLEY_ENOMEM. */
PARLEY_API int parley_send(parley_client *c, uint64_t conv, const char *text, char *cmid_out);
/* The same with a raw JSON body (any JSON value but null, validated) and an
 * optional caller-chosen cmid (NULL: generated; 1-64 characters). */
PARLEY_API int parley_send_json(parley_client *c, uint64_t conv, const char *json, size_t len,
                                const char *cmid, char *cmid_out);
/* Unacknowledged messages in the queue. */
PARLEY_API size_t parley_pending(const parley_client *c);

/* Tracks a conversation from `highest` (the highest seq the app holds, 0 for
 * none): on connect and on a gap the client syncs what follows. Without it a
 * conversation is tracked from the first seq the client sees. */
PARLEY_API int parley_track(parley_client *c, uint64_t conv, uint64_t highest);
/* The highest seq held in order for conv (0 if untracked). */
PARLEY_API uint64_t parley_highest(const parley_client *c, uint64_t conv);
/* Fetches messages after the highest held now (on_message delivers them). */
PARLEY_API int parley_sync(parley_client *c, uint64_t conv);

/* Moves our cursors forward (lower values are ignored; returns 1 if it moved,
 * 0 if not). Sent now if connected, else on the next connect. */
PARLEY_API int parley_mark_delivered(parley_client *c, uint64_t conv, uint64_t seq);
PARLEY_API int parley_mark_read(parley_client *c, uint64_t conv, uint64_t seq);

/* Tells the members we are typing. Lossy and coalesced: at most one frame
 * per conversation every 2.5 s. Returns 1 if sent, 0 if coalesced,
 * PARLEY_ECLOSED when not connected. */
PARLEY_API int parley_typing(parley_client *c, uint64_t conv);

#ifdef __cplusplus
}
#endif

#endif
