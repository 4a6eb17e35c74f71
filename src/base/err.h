/* err: parley's one error vocabulary.
 *
 * Every fallible function in parley returns an int: >= 0 on success (a count
 * or ERR_OK), or one of these negative codes. A call that fails never fires
 * its callback. err_name() gives the stable lowercase name used in logs,
 * metrics labels and protocol error codes.
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
};

/* Stable name of a code ("again", "invalid", ...); "unknown" for others.
 * Returns a static string: never freed by the caller. */
const char *err_name(int code);

#endif
