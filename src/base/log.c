#include "base/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/err.h"

static int log_level_ = LOG_INFO;
static const char *const log_names_[] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
    __atomic_store_n(&log_level_, (int)level, __ATOMIC_RELAXED);
}

int log_enabled(enum log_level level)
{
    return (int)level <= __atomic_load_n(&log_level_, __ATOMIC_RELAXED);
}

int log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, log_names_[i]) == 0) return i;
    return ERR_INVALID;
}

void log_write(enum log_level level, const char *msg, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int quoted = strchr(msg, ' ') != NULL;
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=%s%s%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
                     log_names_[level], quoted ? "\"" : "", msg, quoted ? "\"" : "");
    if (fmt && n > 0 && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0) n += m;
    }
    if (n < 0) return;
    if ((size_t)n >= sizeof line) n = sizeof line - 1;
    fprintf(stderr, "%.*s\n", n, line);
}

static bool bare(const char *s, size_t len)
{
    if (len == 0) return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == '"' || ch == '=' || ch == '\\' || ch == 0x7f) return false;
    }
    return true;
}

const char *log_value(char *buf, size_t cap, const char *s, size_t len)
{
    if (cap == 0) return buf;
    if (!s) len = 0;
    if (bare(s, len) && len < cap) {
        memcpy(buf, s, len);
        buf[len] = 0;
        return buf;
    }
    if (cap < 3) { buf[0] = 0; return buf; }
    size_t o = 0, end = cap - 2; /* room for the closing quote and NUL */
    buf[o++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[5];
        size_t k;
        if (ch == '"' || ch == '\\') { esc[0] = '\\'; esc[1] = (char)ch; k = 2; }
        else if (ch == '\n') { memcpy(esc, "\\n", 2); k = 2; }
        else if (ch == '\r') { memcpy(esc, "\\r", 2); k = 2; }
        else if (ch == '\t') { memcpy(esc, "\\t", 2); k = 2; }
        else if (ch < ' ' || ch == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", ch); k = 4; }
        else { esc[0] = (char)ch; k = 1; }
        if (o + k > end) break;
        memcpy(buf + o, esc, k);
        o += k;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}
