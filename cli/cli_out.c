/* CLI output helpers: errors and exit statuses, JSON, safe text, time. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "codec/utf8.h"

int cli_exit_for(int rc, int status)
{
    if (rc >= 0) return EXIT_OK;
    if (rc == PARLEY_EBUSY || rc == PARLEY_ERATE) return EXIT_NETWORK; /* retry later */
    if (status > 0) return EXIT_SERVER; /* the server answered: it refused */
    switch (rc) {
    case PARLEY_EIO:
    case PARLEY_ETIMEOUT:
    case PARLEY_ECLOSED:
    case PARLEY_EPROTOCOL:
        return EXIT_NETWORK;
    case PARLEY_ENOMEM:
        return EXIT_LOCAL;
    case PARLEY_EINVALID:
    case PARLEY_EUTF8:
    case PARLEY_ETOO_LARGE:
        return EXIT_USAGE;
    default:
        return EXIT_SERVER; /* auth, forbidden, not found, conflict, busy... */
    }
}

static void json_error(const char *code, const char *message, int exit_code)
{
    jbuf j;
    jb_init(&j, 256);
    jb_lit(&j, "{\"error\":{\"code\":");
    jb_cstr(&j, code);
    jb_lit(&j, ",\"message\":");
    jb_cstr(&j, message);
    jb_lit(&j, ",\"exit\":");
    jb_u64(&j, (uint64_t)exit_code);
    jb_lit(&j, "}}");
    size_t n;
    const char *d = jb_data(&j, &n);
    if (d) fprintf(stderr, "%.*s\n", (int)n, d);
    jb_free(&j);
}

int cli_error(const cli_opts *o, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (o && o->json)
        json_error(code == EXIT_USAGE ? "usage" : code == EXIT_LOCAL ? "local" : "error", msg, code);
    else
        fprintf(stderr, "parley: %s\n", msg);
    return code;
}

int cli_fail(const cli_opts *o, parley_client *c, int rc, const char *what)
{
    const parley_error *e = c ? parley_last_error(c) : NULL;
    int status = e && e->err == rc ? e->status : 0;
    int code = cli_exit_for(rc, status);
    const char *ecode = e && e->err == rc && e->code[0] ? e->code : parley_strerror(rc);
    const char *msg = e && e->err == rc && e->message[0] ? e->message : parley_strerror(rc);
    if (o && o->json) {
        char full[600];
        snprintf(full, sizeof full, "%s: %s", what, msg);
        json_error(ecode, full, code);
    } else if (strcmp(ecode, msg) == 0) {
        fprintf(stderr, "parley: %s: %s\n", what, msg);
    } else {
        fprintf(stderr, "parley: %s: %s (%s)\n", what, msg, ecode);
    }
    return code;
}

void cli_json_message(jbuf *j, const parley_message *m)
{
    jb_lit(j, "{\"conv\":");
    jb_u64(j, m->conv);
    jb_lit(j, ",\"seq\":");
    jb_u64(j, m->seq);
    jb_lit(j, ",\"from\":");
    jb_cstr(j, m->from ? m->from : "");
    jb_lit(j, ",\"cmid\":");
    jb_cstr(j, m->cmid ? m->cmid : "");
    jb_lit(j, ",\"ts\":");
    jb_i64(j, m->ts);
    jb_lit(j, ",\"body\":");
    jb_raw(j, m->body ? m->body : "null", m->body ? m->body_len : 4);
    jb_lit(j, "}");
}

static void str_array(jbuf *j, const char **v, size_t n)
{
    jb_lit(j, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) jb_lit(j, ",");
        jb_cstr(j, v[i]);
    }
    jb_lit(j, "]");
}

void cli_json_conv(jbuf *j, const parley_conv *cv)
{
    jb_lit(j, "{\"id\":");
    jb_u64(j, cv->id);
    jb_lit(j, ",\"type\":");
    jb_cstr(j, cv->type ? cv->type : "");
    jb_lit(j, ",\"name\":");
    jb_cstr(j, cv->name ? cv->name : "");
    jb_lit(j, ",\"members\":");
    str_array(j, cv->members, cv->nmembers);
    jb_lit(j, ",\"admins\":");
    str_array(j, cv->admins, cv->nadmins);
    jb_lit(j, ",\"last_seq\":");
    jb_u64(j, cv->last_seq);
    jb_lit(j, ",\"read_seq\":");
    jb_u64(j, cv->read_seq);
    jb_lit(j, ",\"delivered_seq\":");
    jb_u64(j, cv->delivered_seq);
    jb_lit(j, ",\"unread\":");
    jb_u64(j, cv->unread);
    jb_lit(j, ",\"last_message\":");
    if (cv->last_message) cli_json_message(j, cv->last_message);
    else jb_lit(j, "null");
    jb_lit(j, "}");
}

void cli_json_print(jbuf *j)
{
    size_t n;
    const char *d = jb_data(j, &n);
    if (d) {
        fwrite(d, 1, n, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    jb_free(j);
}

void cli_put_clean(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 8 < cap;) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n') {
            memcpy(out + o, " \xe2\x86\xb5 ", 5); /* " ↵ " */
            o += 5;
            i++;
        } else if (ch == '\t') {
            out[o++] = ' ';
            i++;
        } else if (ch < 0x20 || ch == 0x7f) {
            out[o++] = '?';
            i++;
        } else if (ch < 0x80) {
            out[o++] = (char)ch;
            i++;
        } else {
            /* one UTF-8 sequence; C1 controls (U+0080..U+009F) and invalid bytes -> '?' */
            size_t len = ch >= 0xf0 ? 4 : ch >= 0xe0 ? 3 : ch >= 0xc0 ? 2 : 1;
            if (i + len > n || len == 1 || !utf8_valid((const uint8_t *)s + i, len) ||
                (ch == 0xc2 && (unsigned char)s[i + 1] < 0xa0)) {
                out[o++] = '?';
                i++;
                continue;
            }
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    out[o] = 0;
}

void cli_time(char *out, size_t cap, int64_t ts_ms, bool full)
{
    time_t t = (time_t)(ts_ms / 1000), now = time(NULL);
    struct tm tm, today;
    localtime_r(&t, &tm);
    localtime_r(&now, &today);
    if (tm.tm_year != today.tm_year || tm.tm_yday != today.tm_yday) full = true;
    strftime(out, cap, full ? "%Y-%m-%d %H:%M" : "%H:%M", &tm);
}

int cli_client(const cli_opts *o, const parley_callbacks *cb, void *ud, parley_client **out)
{
    parley_options po;
    parley_options_init(&po);
    po.server = o->server;
    po.token = o->cfg.token[0] ? o->cfg.token : NULL;
    po.callbacks = cb;
    po.userdata = ud;
    /* Delivered means shown: a client that shows no messages (no on_message)
     * never moves the cursor by itself. */
    po.manual_delivered = !cb || !cb->on_message;
    po.request_timeout_ms = (uint32_t)o->timeout_ms;
    po.connect_timeout_ms = (uint32_t)(o->timeout_ms < 10000 ? o->timeout_ms : 10000);
    int rc = parley_new(&po, out);
    if (rc == PARLEY_EUNSUPPORTED)
        return cli_error(o, EXIT_USAGE, "%s: https is not supported yet (use http://)", o->server);
    if (rc < 0) return cli_error(o, rc == PARLEY_ENOMEM ? EXIT_LOCAL : EXIT_USAGE,
                                 "bad server URL '%s' (expected http://host[:port], or several "
                                 "separated by commas)", o->server);
    return 0;
}

bool cli_conv_arg_ok(const char *arg)
{
    if (arg[0] == '@') return arg[1] != 0;
    char *end;
    unsigned long long v = strtoull(arg, &end, 10);
    return *arg && !*end && v != 0 && arg[0] != '-' && arg[0] != '+';
}

int cli_resolve_conv(const cli_opts *o, parley_client *c, const char *arg, uint64_t *conv)
{
    if (arg[0] == '@') {
        parley_conv *cv = NULL;
        int rc = parley_create_direct(c, arg + 1, &cv, NULL);
        if (rc < 0) return cli_fail(o, c, rc, arg);
        *conv = cv->id;
        parley_conv_free(c, cv);
        return 0;
    }
    char *end;
    unsigned long long v = strtoull(arg, &end, 10);
    if (!*arg || *end || v == 0 || arg[0] == '-' || arg[0] == '+')
        return cli_error(o, EXIT_USAGE, "'%s' is not a conversation (a number, or @user)", arg);
    *conv = v;
    return 0;
}
