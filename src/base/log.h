/* log: structured log lines (logfmt) to stderr.
 *
 *   log_info("listening", "addr=%s port=%d", addr, port);
 *   -> ts=2026-11-22T10:00:00.123Z level=info msg=listening addr=0.0.0.0 port=8080
 *
 * Thread-safe (one fprintf per line). Never log tokens or passwords.
 */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H

#include <stddef.h>

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Sets the most verbose level printed (default LOG_INFO). */
void log_set_level(enum log_level level);

/* Parses "error", "warn", "info", "debug". Returns the level or ERR_INVALID. */
int log_parse_level(const char *name);

/* True if `level` would be printed: test before building costly fields. */
int log_enabled(enum log_level level);

/* Prints one line: ts, level, msg (a bare word or phrase; quoted if it has
 * spaces), then the caller's key=value fields (fmt may be NULL). */
void log_write(enum log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A field's value for a log line: s[0..len) as it is when it is a bare
 * word (non-empty, printable, no space, '"', '=' or '\\'), otherwise
 * quoted with '"' and '\\' escaped and control bytes as \n, \r, \t or
 * \xHH. Written into buf (cap bytes, truncated to fit, always
 * NUL-terminated, still quoted when cut); returns buf. For values that
 * come from outside (paths, close reasons). */
const char *log_value(char *buf, size_t cap, const char *s, size_t len);

#define log_error(msg, ...) log_write(LOG_ERROR, msg, __VA_ARGS__)
#define log_warn(msg, ...)  log_write(LOG_WARN, msg, __VA_ARGS__)
#define log_info(msg, ...)  log_write(LOG_INFO, msg, __VA_ARGS__)
#define log_debug(msg, ...) \
    do { if (log_enabled(LOG_DEBUG)) log_write(LOG_DEBUG, msg, __VA_ARGS__); } while (0)

#endif
