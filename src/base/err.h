/* err: parley's one error vocabulary, and its one table.
 *
 * Every fallible function in parley returns an int: >= 0 on success (a count
 * or ERR_OK), or one of these negative codes. A call that fails never fires
 * its callback. Each code has one row in the table (err.c): its stable
 * lowercase name (logs, metrics labels), the HTTP status and the wire code
 * that REST and WebSocket answers carry, and a default message. Codes from
 * ERR_BAD_JSON on name what a client did wrong in the terms of the
 * protocol (docs/protocol.md, "Error codes", which a test holds against
 * this table); the ones before are general, and so are the storage codes
 * after them. Strings are static.
 */
#ifndef PARLEY_ERR_H
#define PARLEY_ERR_H

enum err {
    ERR_OK          = 0,
    ERR_AGAIN       = -1,  /* need more input (codecs), or would block */
    ERR_INVALID     = -2,  /* malformed input or bad argument */
    ERR_PROTOCOL    = -3,  /* a protocol rule was broken */
    ERR_TOO_LARGE   = -4,  /* a size or count limit was exceeded */
    ERR_UTF8        = -5,  /* text is not valid UTF-8 */
    ERR_NOMEM       = -6,  /* allocation failed */
    ERR_IO          = -7,  /* a system call failed */
    ERR_CLOSED      = -8,  /* the peer or object is closed */
    ERR_TIMEOUT     = -9,  /* a deadline passed */
    ERR_NOT_FOUND   = -10, /* no such object */
    ERR_UNSUPPORTED = -11, /* valid but not supported (e.g. an HTTP feature) */
    ERR_FULL        = -12, /* a bounded queue is full */
    ERR_AUTH        = -13, /* missing or bad credentials */
    ERR_FORBIDDEN   = -14, /* authenticated but not allowed */
    ERR_CONFLICT    = -15, /* already exists */
    ERR_BUSY        = -16, /* overloaded: retry later */
    ERR_RATE        = -17, /* rate limited */
    ERR_VERSION     = -18, /* incompatible version (data format, protocol) */
    /* the protocol's own (docs/protocol.md, "Error codes") */
    ERR_BAD_JSON    = -19, /* a body or frame that is not a JSON object */
    ERR_UNKNOWN_TYPE = -20, /* a frame type the server does not know */
    ERR_BAD_CREDENTIALS = -21, /* wrong username or password */
    ERR_USER_NOT_FOUND = -22, /* a named user does not exist */
    ERR_NOT_MEMBER  = -23, /* the user to remove is not a member */
    ERR_USERNAME_TAKEN = -24, /* register with a taken name */
    ERR_ALREADY_MEMBER = -25, /* add an existing member */
    ERR_TOO_MANY_MEMBERS = -26, /* the group is full, or a user is in too many conversations */
    ERR_BAD_USERNAME = -27, /* a username outside the rules */
    ERR_BAD_PASSWORD = -28, /* a password outside the rules */
    ERR_TOO_MANY_CONNECTIONS = -29, /* the user has --max-user-conns WebSockets open */
    ERR_FORBIDDEN_ORIGIN = -30, /* a browser origin not in --allowed-origins */
    ERR_METHOD      = -31, /* a method the path does not allow */
    ERR_STOPPING    = -32, /* the server is shutting down */
    ERR_BAD_HANDSHAKE = -33, /* an invalid WebSocket handshake */
    ERR_BAD_VERSION = -34, /* a WebSocket version other than 13 */
    ERR_UPGRADE_REQUIRED = -35, /* a plain request to the WebSocket endpoint */
    ERR_CMID_REUSED = -36, /* a cmid already used for a different body */
    /* storage (the message log) */
    ERR_CORRUPT     = -37, /* corrupt data found at startup (file and offset logged) */
    ERR_DISK_FULL   = -38, /* no space left on the device: retry later */
    ERR_UNAVAILABLE = -39, /* the storage (a database server) cannot be reached: retry later */
    ERR_LAST        = -39
};

typedef struct err_info {
    int err;              /* the code */
    const char *name;     /* logs and metrics: unique per code */
    int status;           /* the HTTP status of a REST answer */
    const char *code;     /* the wire code (several general codes share "internal") */
    const char *message;  /* the default message */
} err_info;

/* The row of a code; an unknown code gets the row of "internal" errors
 * (ERR_IO's wire code and status). Never NULL. */
const err_info *err_info_of(int code);

/* Every row, for tests and documentation: *n gets the count. */
const err_info *err_table(int *n);

/* Stable name of a code ("again", "invalid", ...); "unknown" for others.
 * Returns a static string: never freed by the caller. */
const char *err_name(int code);

#endif
