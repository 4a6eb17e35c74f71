/* `parley chat CONV`: the interactive view, on a libuv loop.
 *
 * Three output modes:
 *   tty    stdin and stdout are terminals (and no --json): libedit line
 *          editing (readline-compatible callback API); incoming lines are
 *          printed above the prompt; the ticks of our own messages are
 *          updated in place at the end of their line while it is on screen
 *          (else a short status line is printed); "X is typing…" shows in
 *          the prompt for 5 s.
 *   plain  anything else: one stdin line is one message; events are printed
 *          as lines.
 *   json   --json: like plain, but every event is one JSON object per line.
 *
 * Ticks: ✓ sent (acked: stored durably), ✓✓ delivered (to every other
 * member), "✓✓ read" (read by every other member; blue on a terminal).
 */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <wchar.h>

#include <editline/readline.h>

#include "cli.h"

#define TYPING_SHOW_MS 5000
#define MAX_OWN 512          /* own messages whose ticks we follow */

enum tick { T_PENDING = 0, T_SENT, T_DELIVERED, T_READ };

typedef struct own_msg {
    char cmid[PARLEY_CMID_MAX];
    uint64_t seq;            /* 0 until acked */
    int tick;
    /* where its tick is on screen (tty): */
    long row;                /* row counter at the message's first row, -1 unknown */
    long epoch;              /* terminal geometry epoch when printed */
    int tick_col;            /* display width before the tick */
    int tick_w;              /* display width of the tick shown */
    char snippet[64];        /* the start of its text, for status lines */
} own_msg;

typedef struct member {
    char user[PARLEY_USER_MAX];
    uint64_t delivered, read;
} member;

typedef struct chat {
    const cli_opts *o;
    const chat_args *a;
    parley_client *c;
    uv_loop_t loop;
    uint64_t conv;
    char title[300];
    char me[PARLEY_USER_MAX];
    bool tty, json;
    /* stdin */
    uv_poll_t in_poll;
    bool in_poll_on;
    char *lb;
    size_t lblen, lbcap;
    bool eof;
    /* timers and signals */
    uv_timer_t typing_timer, drain_timer;
    uv_signal_t sigint, sigterm, sigwinch;
    /* state */
    own_msg own[MAX_OWN];
    size_t nown;             /* ring: the latest MAX_OWN */
    size_t own_start;
    member *mem;
    size_t nmem;
    char typing_user[PARLEY_USER_MAX];
    uint64_t last_read;
    bool quitting, finished;
    int exit_code;
    bool connected_once;
    bool up;                 /* the last state was CONNECTED */
    /* terminal */
    bool rl_on;
    bool in_rl;              /* inside rl_callback_read_char() */
    long rows;               /* rows printed so far */
    int cols, term_rows;
    long epoch;
    char prompt[400];
} chat;

static chat *g_chat; /* for the libedit line callback (it has no user pointer) */

/* ---- small helpers ------------------------------------------------------------ */

static int str_width(const char *s, size_t n)
{
    mbstate_t st;
    memset(&st, 0, sizeof st);
    int w = 0;
    size_t i = 0;
    while (i < n) {
        wchar_t wc;
        size_t k = mbrtowc(&wc, s + i, n - i, &st);
        if (k == (size_t)-1 || k == (size_t)-2) { w++; i++; memset(&st, 0, sizeof st); continue; }
        if (k == 0) k = 1;
        /* skip ANSI escapes we emit ourselves */
        if (s[i] == '\033') {
            size_t j = i + 1;
            if (j < n && s[j] == '[') {
                j++;
                while (j < n && !((s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= 'a' && s[j] <= 'z'))) j++;
                i = j + 1;
                continue;
            }
        }
        int cw = wcwidth(wc);
        w += cw > 0 ? cw : 0;
        i += k;
    }
    return w;
}

static void term_size(chat *ch)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
        ch->cols = ws.ws_col;
        ch->term_rows = ws.ws_row > 0 ? ws.ws_row : 24;
    } else {
        ch->cols = 80;
        ch->term_rows = 24;
    }
}

static own_msg *own_at(chat *ch, size_t i) { return &ch->own[(ch->own_start + i) % MAX_OWN]; }

static own_msg *own_find_cmid(chat *ch, const char *cmid)
{
    for (size_t i = ch->nown; i-- > 0;)
        if (strcmp(own_at(ch, i)->cmid, cmid) == 0) return own_at(ch, i);
    return NULL;
}

static own_msg *own_add(chat *ch)
{
    if (ch->nown == MAX_OWN) {
        ch->own_start = (ch->own_start + 1) % MAX_OWN;
        ch->nown--;
    }
    own_msg *m = own_at(ch, ch->nown++);
    memset(m, 0, sizeof *m);
    m->row = -1;
    return m;
}

static member *member_get(chat *ch, const char *user, bool add)
{
    for (size_t i = 0; i < ch->nmem; i++)
        if (strcmp(ch->mem[i].user, user) == 0) return &ch->mem[i];
    if (!add) return NULL;
    member *v = realloc(ch->mem, (ch->nmem + 1) * sizeof *v);
    if (!v) return NULL;
    ch->mem = v;
    member *m = &v[ch->nmem++];
    memset(m, 0, sizeof *m);
    snprintf(m->user, sizeof m->user, "%s", user);
    return m;
}

/* The tick a seq of ours has from the other members' cursors. */
static int tick_for(chat *ch, uint64_t seq)
{
    size_t others = 0, dl = 0, rd = 0;
    for (size_t i = 0; i < ch->nmem; i++) {
        if (strcmp(ch->mem[i].user, ch->me) == 0) continue;
        others++;
        if (ch->mem[i].delivered >= seq) dl++;
        if (ch->mem[i].read >= seq) rd++;
    }
    if (!others) return T_SENT;
    if (rd == others) return T_READ;
    if (dl == others) return T_DELIVERED;
    return T_SENT;
}

static const char *tick_text(chat *ch, int t)
{
    bool color = ch->tty;
    switch (t) {
    case T_SENT: return "✓";
    case T_DELIVERED: return "✓✓";
    case T_READ: return color ? "\033[1;34m✓✓ read\033[0m" : "✓✓ read";
    default: return "⋯";
    }
}

static const char *tick_name(int t)
{
    return t == T_READ ? "read" : t == T_DELIVERED ? "delivered" : t == T_SENT ? "sent" : "pending";
}

/* ---- output -------------------------------------------------------------------- */

/* Before printing above the prompt: erase the prompt (all its rows). */
static void tty_hide_prompt(chat *ch)
{
    if (!ch->rl_on) return;
    int pw = str_width(ch->prompt, strlen(ch->prompt));
    int bw = rl_line_buffer ? str_width(rl_line_buffer, (size_t)(rl_point > 0 ? rl_point : 0)) : 0;
    int up = ch->cols > 0 ? (pw + bw) / ch->cols : 0;
    if (up > 0) printf("\033[%dA", up);
    printf("\r\033[J");
}

static void tty_show_prompt(chat *ch)
{
    fflush(stdout);
    if (ch->rl_on) rl_forced_update_display();
}

/* Prints one output line (tty: above the prompt). Returns the row counter
 * value of its first row. */
static long out_line(chat *ch, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static long out_line(chat *ch, const char *fmt, ...)
{
    char buf[24000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    long first = ch->rows;
    if (ch->tty) {
        tty_hide_prompt(ch);
        fputs(buf, stdout);
        fputs("\n", stdout);
        int w = str_width(buf, strlen(buf));
        ch->rows += w <= 0 ? 1 : (w + ch->cols - 1) / ch->cols;
        tty_show_prompt(ch);
    } else {
        fputs(buf, stdout);
        fputs("\n", stdout);
        fflush(stdout);
    }
    return first;
}

static void out_json(chat *ch, jbuf *j)
{
    (void)ch;
    cli_json_print(j);
}

static void json_event(jbuf *j, const char *ev)
{
    jb_init(j, 256);
    jb_lit(j, "{\"event\":");
    jb_cstr(j, ev);
}

/* Prints a message line (history or live). */
static void show_message(chat *ch, const parley_message *m, bool history)
{
    if (ch->json) {
        jbuf j;
        json_event(&j, "msg");
        jb_lit(&j, ",\"message\":");
        cli_json_message(&j, m);
        if (history) jb_lit(&j, ",\"history\":true");
        bool mine = strcmp(m->from, ch->me) == 0;
        if (mine && history) {
            jb_lit(&j, ",\"tick\":");
            jb_cstr(&j, tick_name(tick_for(ch, m->seq)));
        }
        jb_lit(&j, "}");
        out_json(ch, &j);
        return;
    }
    char body[16000], when[32];
    if (m->text) cli_put_clean(body, sizeof body, m->text, strlen(m->text));
    else cli_put_clean(body, sizeof body, m->body, m->body_len);
    cli_time(when, sizeof when, m->ts, false);
    bool mine = strcmp(m->from, ch->me) == 0;
    if (!mine) {
        if (ch->tty)
            out_line(ch, "[%s] \033[1m%s\033[0m: %s", when, m->from, body);
        else
            out_line(ch, "[%s] %s: %s", when, m->from, body);
        return;
    }
    /* ours (from history, or from another device): with its tick */
    int t = tick_for(ch, m->seq);
    own_msg *om = own_add(ch);
    snprintf(om->cmid, sizeof om->cmid, "%s", m->cmid);
    om->seq = m->seq;
    om->tick = t;
    snprintf(om->snippet, sizeof om->snippet, "%.40s", body);
    char head[128];
    snprintf(head, sizeof head, "[%s] you: ", when);
    om->tick_col = str_width(head, strlen(head)) + str_width(body, strlen(body)) + 1;
    om->tick_w = str_width(tick_text(ch, t), strlen(tick_text(ch, t)));
    om->epoch = ch->epoch;
    om->row = out_line(ch, "%s%s %s", head, body, tick_text(ch, t));
}

/* Shows a new tick for one of our messages: in place when still on screen. */
static void show_tick(chat *ch, own_msg *m, int t)
{
    if (t <= m->tick) return;
    m->tick = t;
    if (ch->json) {
        jbuf j;
        json_event(&j, t == T_SENT ? "sent" : "tick");
        jb_lit(&j, ",\"conv\":");
        jb_u64(&j, ch->conv);
        jb_lit(&j, ",\"cmid\":");
        jb_cstr(&j, m->cmid);
        jb_lit(&j, ",\"seq\":");
        jb_u64(&j, m->seq);
        jb_lit(&j, ",\"state\":");
        jb_cstr(&j, tick_name(t));
        jb_lit(&j, "}");
        out_json(ch, &j);
        return;
    }
    const char *tt = tick_text(ch, t);
    if (ch->tty && m->row >= 0 && m->epoch == ch->epoch && ch->cols > 0) {
        long row = m->row + m->tick_col / ch->cols;
        int col = m->tick_col % ch->cols;
        long up = ch->rows - row;
        int nw = str_width(tt, strlen(tt));
        if (up > 0 && up < ch->term_rows - 2 && col + nw < ch->cols) {
            tty_hide_prompt(ch);
            printf("\033[%ldA\r", up);
            if (col) printf("\033[%dC", col);
            printf("%s\033[K\033[%ldB\r", tt, up);
            m->tick_w = nw;
            tty_show_prompt(ch);
            return;
        }
    }
    m->row = -1;
    out_line(ch, "  %s #%llu \"%s\"", tt, (unsigned long long)m->seq, m->snippet);
}

static void show_status(chat *ch, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void show_status(chat *ch, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (ch->tty) out_line(ch, "\033[2m* %s\033[0m", buf);
    else out_line(ch, "* %s", buf);
}

static void set_prompt(chat *ch)
{
    if (!ch->tty) return;
    if (ch->typing_user[0])
        snprintf(ch->prompt, sizeof ch->prompt, "%s is typing… > ", ch->typing_user);
    else
        snprintf(ch->prompt, sizeof ch->prompt, "%s> ", ch->title);
    if (ch->rl_on) {
        tty_hide_prompt(ch);
        rl_set_prompt(ch->prompt);
        tty_show_prompt(ch);
    }
}

/* ---- ending -------------------------------------------------------------------- */

/* Leaves line editing (restores the terminal). Never from inside
 * rl_callback_read_char(): libedit would go back to raw mode after it. */
static void rl_stop(chat *ch)
{
    if (!ch->rl_on) return;
    tty_hide_prompt(ch);
    rl_callback_handler_remove();
    ch->rl_on = false;
    fflush(stdout);
}

static void close_cb(uv_handle_t *h) { (void)h; }

static void finish(chat *ch, int code)
{
    if (ch->finished) return;
    ch->finished = true;
    if (code > ch->exit_code) ch->exit_code = code;
    if (!ch->in_rl) rl_stop(ch); /* else on_stdin does it */
    if (ch->json) {
        jbuf j;
        json_event(&j, "exit");
        jb_lit(&j, ",\"code\":");
        jb_u64(&j, (uint64_t)ch->exit_code);
        jb_lit(&j, ",\"unsent\":");
        jb_u64(&j, parley_pending(ch->c));
        jb_lit(&j, "}");
        out_json(ch, &j);
    }
    parley_close(ch->c);
    if (ch->in_poll_on) { uv_poll_stop(&ch->in_poll); uv_close((uv_handle_t *)&ch->in_poll, close_cb); ch->in_poll_on = false; }
    uv_close((uv_handle_t *)&ch->typing_timer, close_cb);
    uv_close((uv_handle_t *)&ch->drain_timer, close_cb);
    uv_close((uv_handle_t *)&ch->sigint, close_cb);
    uv_close((uv_handle_t *)&ch->sigterm, close_cb);
    uv_close((uv_handle_t *)&ch->sigwinch, close_cb);
    uv_stop(&ch->loop);
}

static void on_drain_timeout(uv_timer_t *t)
{
    chat *ch = t->data;
    size_t n = parley_pending(ch->c);
    if (!ch->json) show_status(ch, "%zu message%s not sent (gave up: no acknowledgement for %d s)", n,
                               n == 1 ? "" : "s", ch->a->wait_ms / 1000);
    finish(ch, n ? EXIT_NETWORK : EXIT_OK);
}

/* Stop reading input; leave once everything queued is acked, or after
 * --wait without an ack (pasted lines drain at the server's pace however
 * many there are). */
static void quit(chat *ch)
{
    if (ch->quitting) return;
    ch->quitting = true;
    if (ch->in_poll_on) { uv_poll_stop(&ch->in_poll); }
    if (ch->rl_on && !ch->in_rl) rl_stop(ch); /* else on_stdin does it */
    size_t n = parley_pending(ch->c);
    if (n == 0) { finish(ch, EXIT_OK); return; }
    if (!ch->json) show_status(ch, "waiting for %zu unsent message%s…", n, n == 1 ? "" : "s");
    uv_timer_start(&ch->drain_timer, on_drain_timeout, (uint64_t)ch->a->wait_ms, 0);
}

/* ---- input ----------------------------------------------------------------------- */

static void send_line(chat *ch, const char *line)
{
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\r' || line[n - 1] == '\n')) n--;
    if (n == 0) return;
    char text[16384];
    if (n >= sizeof text) n = sizeof text - 1;
    memcpy(text, line, n);
    text[n] = 0;
    if (text[0] == '/' && text[1] != '/') {
        if (strcmp(text, "/quit") == 0 || strcmp(text, "/q") == 0) { quit(ch); return; }
        if (strcmp(text, "/typing") == 0) {
            int rc = parley_typing(ch->c, ch->conv);
            if (rc < 0 && !ch->json) show_status(ch, "not connected: typing not sent");
            return;
        }
        if (strcmp(text, "/help") == 0) {
            if (!ch->json) show_status(ch, "/quit leaves, /typing says you are typing, '//' starts a message with '/'");
            return;
        }
        if (!ch->json) show_status(ch, "unknown command %s (try /help)", text);
        return;
    }
    const char *msg = text[0] == '/' ? text + 1 : text;
    char cmid[PARLEY_CMID_MAX];
    int rc = parley_send(ch->c, ch->conv, msg, cmid);
    if (rc < 0) {
        if (ch->json) {
            jbuf j;
            json_event(&j, "error");
            jb_lit(&j, ",\"code\":");
            jb_cstr(&j, parley_strerror(rc));
            jb_lit(&j, ",\"message\":\"message not queued\"}");
            out_json(ch, &j);
        } else {
            show_status(ch, "message not queued: %s", rc == PARLEY_EUTF8 ? "not UTF-8" : parley_strerror(rc));
        }
        return;
    }
    own_msg *om = own_add(ch);
    snprintf(om->cmid, sizeof om->cmid, "%s", cmid);
    om->tick = T_PENDING;
    char clean[16384];
    cli_put_clean(clean, sizeof clean, msg, strlen(msg));
    snprintf(om->snippet, sizeof om->snippet, "%.40s", clean);
    if (ch->json) {
        jbuf j;
        json_event(&j, "queued");
        jb_lit(&j, ",\"conv\":");
        jb_u64(&j, ch->conv);
        jb_lit(&j, ",\"cmid\":");
        jb_cstr(&j, cmid);
        jb_lit(&j, ",\"text\":");
        jb_cstr(&j, msg);
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else if (ch->tty) {
        char when[32], head[64];
        cli_time(when, sizeof when, (int64_t)time(NULL) * 1000, false);
        snprintf(head, sizeof head, "[%s] you: ", when);
        om->tick_col = str_width(head, strlen(head)) + str_width(clean, strlen(clean)) + 1;
        om->tick_w = 1;
        om->epoch = ch->epoch;
        om->row = out_line(ch, "%s%s %s", head, clean, tick_text(ch, T_PENDING));
    }
    /* plain mode: the ack line ("✓ #seq ...") is the echo */
}

/* Whether a line being edited is a message being typed: not a command (a
 * leading '/', unless it is the '//' of a message that starts with '/'), and
 * not only blanks. Commands never tell the others we are typing. */
static bool is_typing(const char *line)
{
    if (line[0] == '/' && line[1] != '/') return false;
    for (const char *p = line; *p; p++)
        if (*p != ' ' && *p != '\t') return true;
    return false;
}

/* libedit calls this with a finished line (NULL at EOF), from inside
 * rl_callback_read_char(). */
static void on_rl_line(char *line)
{
    chat *ch = g_chat;
    if (!line) { /* Ctrl-D on an empty line */
        printf("\r\033[J");
        quit(ch);
        return;
    }
    /* The typed line is still on screen, the cursor below it: erase it; the
     * message is shown the way it will stay (with its tick). */
    if (ch->cols > 0) {
        int w = str_width(ch->prompt, strlen(ch->prompt)) + str_width(line, strlen(line));
        printf("\033[%dA\r\033[J", w / ch->cols + 1);
    }
    /* libedit's callback mode keeps the old line in its buffer until the
     * next key (and redraws it): installing the handler again resets it and
     * draws a fresh prompt. */
    rl_callback_handler_install(ch->prompt, on_rl_line);
    if (*line) add_history(line);
    send_line(ch, line);
    free(line);
}

static void on_stdin(uv_poll_t *h, int status, int events)
{
    chat *ch = h->data;
    if (ch->quitting) return;
    if (ch->tty) {
        ch->in_rl = true;
        rl_callback_read_char();
        ch->in_rl = false;
        if (ch->quitting || ch->finished) rl_stop(ch);
        else if (rl_line_buffer && rl_end > 0 && is_typing(rl_line_buffer)) parley_typing(ch->c, ch->conv);
        return;
    }
    for (int rounds = 0; rounds < 16; rounds++) {
        if (ch->lbcap - ch->lblen < 4096) {
            size_t cap = ch->lbcap ? ch->lbcap * 2 : 8192;
            char *b = realloc(ch->lb, cap);
            if (!b) { finish(ch, EXIT_LOCAL); return; }
            ch->lb = b;
            ch->lbcap = cap;
        }
        ssize_t r = read(STDIN_FILENO, ch->lb + ch->lblen, ch->lbcap - ch->lblen - 1);
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            r = 0;
        }
        if (r == 0) ch->eof = true;
        ch->lblen += (size_t)r;
        /* complete lines (at EOF, the last partial line too) */
        size_t start = 0;
        for (size_t i = 0; i < ch->lblen; i++) {
            if (ch->lb[i] != '\n') continue;
            ch->lb[i] = 0;
            send_line(ch, ch->lb + start);
            start = i + 1;
            if (ch->quitting) break;
        }
        if (ch->eof && start < ch->lblen && !ch->quitting) {
            ch->lb[ch->lblen] = 0;
            send_line(ch, ch->lb + start);
            start = ch->lblen;
        }
        memmove(ch->lb, ch->lb + start, ch->lblen - start);
        ch->lblen -= start;
        if (ch->eof || ch->quitting || (size_t)r < 4096) break;
    }
    if (ch->eof) quit(ch);
}

/* ---- library callbacks -------------------------------------------------------------- */

static void update_ticks(chat *ch)
{
    for (size_t i = 0; i < ch->nown; i++) {
        own_msg *m = own_at(ch, i);
        if (m->seq && m->tick >= T_SENT && m->tick < T_READ) show_tick(ch, m, tick_for(ch, m->seq));
    }
}

/* The members' cursors from the server (receipt frames sent while we were
 * away are gone: after a reconnect ask again). Returns the library error. */
static int refresh_receipts(chat *ch)
{
    parley_receipts *r;
    int rc = parley_get_receipts(ch->c, ch->conv, 0, &r);
    if (rc < 0) return rc;
    for (size_t i = 0; i < r->n; i++) {
        member *m = member_get(ch, r->members[i].user, true);
        if (!m) continue;
        if (r->members[i].delivered > m->delivered) m->delivered = r->members[i].delivered;
        if (r->members[i].read > m->read) m->read = r->members[i].read;
    }
    parley_receipts_free(ch->c, r);
    return PARLEY_OK;
}

static void cb_state(parley_client *c, parley_state st, int err, uint64_t delay, void *ud)
{
    chat *ch = ud;
    const parley_error *e = parley_last_error(c);
    if (ch->finished) return;
    if (ch->json) {
        jbuf j;
        json_event(&j, "state");
        jb_lit(&j, ",\"state\":");
        jb_cstr(&j, st == PARLEY_CONNECTED ? "connected" : st == PARLEY_CONNECTING ? "connecting"
                  : st == PARLEY_BACKOFF ? "backoff" : st == PARLEY_CLOSED ? "closed" : "idle");
        if (err) {
            jb_lit(&j, ",\"error\":");
            jb_cstr(&j, parley_strerror(err));
        }
        /* connecting/connected: the server tried; backoff: the next one */
        jb_lit(&j, ",\"server\":");
        jb_cstr(&j, parley_server(c));
        if (st == PARLEY_BACKOFF) {
            jb_lit(&j, ",\"delay_ms\":");
            jb_u64(&j, delay);
        }
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else if (st == PARLEY_CONNECTED) {
        if (strchr(ch->o->server, ',') && ch->connected_once) /* a list: say which one */
            show_status(ch, "reconnected to %s", parley_server(c));
        else if (strchr(ch->o->server, ','))
            show_status(ch, "connected as %s to %s", ch->me, parley_server(c));
        else
            show_status(ch, ch->connected_once ? "reconnected" : "connected as %s", ch->me);
    } else if (st == PARLEY_BACKOFF) {
        show_status(ch, "connection %s (%s); retrying in %.1f s", ch->up ? "lost" : "failed",
                    e->message[0] ? e->message : parley_strerror(err), (double)delay / 1000.0);
    } else if (st == PARLEY_CLOSED) {
        show_status(ch, "disconnected for good: %s", e->message[0] ? e->message : parley_strerror(err));
    }
    if (st == PARLEY_CONNECTED && ch->connected_once && refresh_receipts(ch) == PARLEY_OK)
        update_ticks(ch);
    if (st == PARLEY_CONNECTED) ch->connected_once = true;
    ch->up = st == PARLEY_CONNECTED;
    if (st == PARLEY_CLOSED && !ch->finished) finish(ch, EXIT_SERVER);
}

/* The server may have lost live frames for us (docs/protocol.md `resync`):
 * the library fetches the missed messages by itself; the members' cursors
 * are ours to ask for again, as after a reconnect. */
static void cb_resync(parley_client *c, const char *reason, void *ud)
{
    chat *ch = ud;
    if (ch->finished) return;
    if (ch->json) {
        jbuf j;
        json_event(&j, "resync");
        jb_lit(&j, ",\"reason\":");
        jb_cstr(&j, reason);
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else {
        show_status(ch, "the server may have missed events%s%s%s; catching up", reason[0] ? " (" : "",
                    reason, reason[0] ? ")" : "");
    }
    if (refresh_receipts(ch) == PARLEY_OK) update_ticks(ch);
}

static void mark_read(chat *ch, uint64_t seq)
{
    if (seq > ch->last_read) {
        ch->last_read = seq;
        parley_mark_read(ch->c, ch->conv, seq);
    }
}

static void cb_message(parley_client *c, const parley_message *m, void *ud)
{
    chat *ch = ud;
    if (m->conv != ch->conv) {
        if (!ch->json) {
            char body[200];
            if (m->text) cli_put_clean(body, sizeof body, m->text, strlen(m->text));
            else cli_put_clean(body, sizeof body, m->body, m->body_len);
            show_status(ch, "#%llu %s: %.60s", (unsigned long long)m->conv, m->from, body);
        }
        return;
    }
    if (ch->typing_user[0] && strcmp(ch->typing_user, m->from) == 0) {
        ch->typing_user[0] = 0;
        set_prompt(ch);
    }
    show_message(ch, m, false);
    if (strcmp(m->from, ch->me) != 0) mark_read(ch, m->seq); /* it is on the screen */
    /* A message from X at seq S says X has delivered and read up to S: the
     * server moves the sender's cursors with the send and sends no receipt
     * for that (docs/protocol.md, "Client rules"). */
    member *mb = member_get(ch, m->from, true);
    if (mb) {
        if (m->seq > mb->delivered) mb->delivered = m->seq;
        if (m->seq > mb->read) mb->read = m->seq;
        update_ticks(ch);
    }
}

static void cb_ack(parley_client *c, const parley_ack *a, void *ud)
{
    chat *ch = ud;
    own_msg *m = own_find_cmid(ch, a->cmid); /* NULL if it left the ring */
    if (ch->json) {
        jbuf j;
        json_event(&j, "ack");
        jb_lit(&j, ",\"conv\":");
        jb_u64(&j, a->conv);
        jb_lit(&j, ",\"cmid\":");
        jb_cstr(&j, a->cmid);
        jb_lit(&j, ",\"seq\":");
        jb_u64(&j, a->seq);
        jb_lit(&j, ",\"ts\":");
        jb_i64(&j, a->ts);
        jb_lit(&j, ",\"duplicate\":");
        jb_lit(&j, a->duplicate ? "true" : "false");
        jb_lit(&j, "}");
        out_json(ch, &j);
    }
    if (m) {
        m->seq = a->seq;
        if (ch->json) {
            m->tick = T_SENT;
        } else if (ch->tty) {
            show_tick(ch, m, T_SENT);
        } else {
            m->tick = T_SENT;
            out_line(ch, "✓ #%llu you: %s", (unsigned long long)a->seq, m->snippet);
        }
        show_tick(ch, m, tick_for(ch, a->seq));
    } else if (!ch->json) {
        out_line(ch, "✓ #%llu", (unsigned long long)a->seq);
    }
    if (ch->quitting && parley_pending(c) == 0) finish(ch, EXIT_OK);
    else if (ch->quitting) /* progress: wait --wait again from this ack */
        uv_timer_start(&ch->drain_timer, on_drain_timeout, (uint64_t)ch->a->wait_ms, 0);
}

static void cb_receipt(parley_client *c, const parley_receipt *r, void *ud)
{
    chat *ch = ud;
    if (r->conv != ch->conv) return;
    member *mb = member_get(ch, r->user, true);
    if (!mb) return;
    if (r->delivered > mb->delivered) mb->delivered = r->delivered;
    if (r->read > mb->read) mb->read = r->read;
    if (ch->json) {
        jbuf j;
        json_event(&j, "receipt");
        jb_lit(&j, ",\"conv\":");
        jb_u64(&j, r->conv);
        jb_lit(&j, ",\"user\":");
        jb_cstr(&j, r->user);
        jb_lit(&j, ",\"delivered\":");
        jb_u64(&j, r->delivered);
        jb_lit(&j, ",\"read\":");
        jb_u64(&j, r->read);
        jb_lit(&j, "}");
        out_json(ch, &j);
    }
    update_ticks(ch);
}

static void on_typing_expired(uv_timer_t *t)
{
    chat *ch = t->data;
    ch->typing_user[0] = 0;
    set_prompt(ch);
}

static void cb_typing(parley_client *c, uint64_t conv, const char *user, void *ud)
{
    chat *ch = ud;
    if (conv != ch->conv || strcmp(user, ch->me) == 0) return;
    if (ch->json) {
        jbuf j;
        json_event(&j, "typing");
        jb_lit(&j, ",\"conv\":");
        jb_u64(&j, conv);
        jb_lit(&j, ",\"user\":");
        jb_cstr(&j, user);
        jb_lit(&j, "}");
        out_json(ch, &j);
        return;
    }
    if (ch->tty) {
        bool changed = strcmp(ch->typing_user, user) != 0;
        snprintf(ch->typing_user, sizeof ch->typing_user, "%s", user);
        if (changed) set_prompt(ch);
        uv_timer_start(&ch->typing_timer, on_typing_expired, TYPING_SHOW_MS, 0);
    } else {
        out_line(ch, "%s is typing…", user);
    }
}

static void cb_presence(parley_client *c, const parley_presence *p, void *ud)
{
    chat *ch = ud;
    if (!member_get(ch, p->user, false) || strcmp(p->user, ch->me) == 0) return;
    if (ch->json) {
        jbuf j;
        json_event(&j, "presence");
        jb_lit(&j, ",\"user\":");
        jb_cstr(&j, p->user);
        jb_lit(&j, ",\"online\":");
        jb_lit(&j, p->online ? "true" : "false");
        jb_lit(&j, ",\"last_seen\":");
        jb_i64(&j, p->last_seen);
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else if (p->online) {
        show_status(ch, "%s is online", p->user);
    } else if (p->last_seen <= 0) {
        show_status(ch, "%s is offline", p->user);
    } else {
        char when[32];
        cli_time(when, sizeof when, p->last_seen, false);
        show_status(ch, "%s is offline (last seen %s)", p->user, when);
    }
}

static void cb_conv(parley_client *c, const parley_conv *cv, bool removed, void *ud)
{
    chat *ch = ud;
    if (cv->id != ch->conv) return;
    if (removed) {
        if (ch->json) {
            jbuf j;
            json_event(&j, "removed");
            jb_lit(&j, ",\"conv\":");
            jb_u64(&j, cv->id);
            jb_lit(&j, "}");
            out_json(ch, &j);
        } else {
            show_status(ch, "you are no longer a member of this conversation");
        }
        finish(ch, EXIT_SERVER);
        return;
    }
    /* members changed: keep cursors of those who stay */
    for (size_t i = 0; i < cv->nmembers; i++) member_get(ch, cv->members[i], true);
    size_t k = 0;
    for (size_t i = 0; i < ch->nmem; i++) {
        bool in = false;
        for (size_t m = 0; m < cv->nmembers; m++) in |= strcmp(cv->members[m], ch->mem[i].user) == 0;
        if (in) ch->mem[k++] = ch->mem[i];
    }
    ch->nmem = k;
    if (ch->json) {
        jbuf j;
        json_event(&j, "conv");
        jb_lit(&j, ",\"conv\":");
        cli_json_conv(&j, cv);
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else {
        char list[1024] = "";
        for (size_t i = 0; i < cv->nmembers; i++) {
            strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
            strncat(list, cv->members[i], sizeof list - strlen(list) - 1);
        }
        show_status(ch, "members: %s", list);
    }
}

static void cb_error(parley_client *c, const parley_error *e, void *ud)
{
    chat *ch = ud;
    if (e->cmid[0] || e->err == PARLEY_EFORBIDDEN || e->err == PARLEY_EAUTH) ch->exit_code = EXIT_SERVER;
    if (ch->json) {
        jbuf j;
        json_event(&j, "error");
        jb_lit(&j, ",\"code\":");
        jb_cstr(&j, e->code);
        jb_lit(&j, ",\"message\":");
        jb_cstr(&j, e->message);
        if (e->cmid[0]) {
            jb_lit(&j, ",\"cmid\":");
            jb_cstr(&j, e->cmid);
        }
        if (e->conv) {
            jb_lit(&j, ",\"conv\":");
            jb_u64(&j, e->conv);
        }
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else if (e->cmid[0]) {
        own_msg *m = own_find_cmid(ch, e->cmid);
        if (ch->tty) out_line(ch, "\033[1;31m! not sent\033[0m \"%s\": %s (%s)", m ? m->snippet : "", e->message, e->code);
        else out_line(ch, "! not sent \"%s\": %s (%s)", m ? m->snippet : "", e->message, e->code);
    } else {
        out_line(ch, "! %s (%s)", e->message, e->code);
    }
    if (ch->quitting && parley_pending(c) == 0) finish(ch, EXIT_OK);
}

/* ---- signals ---------------------------------------------------------------------------- */

static void on_signal(uv_signal_t *s, int signum)
{
    chat *ch = s->data;
    if (signum == SIGWINCH) {
        term_size(ch);
        ch->epoch++; /* lines may have reflowed: no more in-place ticks for them */
        if (ch->rl_on) rl_resize_terminal();
        return;
    }
    size_t n = parley_pending(ch->c);
    if (n && !ch->json) show_status(ch, "%zu message%s not sent", n, n == 1 ? "" : "s");
    finish(ch, n ? EXIT_NETWORK : EXIT_OK);
}

/* ---- setup ------------------------------------------------------------------------------ */

static int load(chat *ch)
{
    const cli_opts *o = ch->o;
    parley_client *c = ch->c;
    int rc = cli_resolve_conv(o, c, ch->a->conv, &ch->conv);
    if (rc) return rc;
    parley_conv *cv;
    if ((rc = parley_get_conv(c, ch->conv, &cv)) < 0) return cli_fail(o, c, rc, "chat");
    for (size_t i = 0; i < cv->nmembers; i++) member_get(ch, cv->members[i], true);
    if (strcmp(cv->type, "direct") == 0) {
        const char *peer = "";
        for (size_t i = 0; i < cv->nmembers; i++)
            if (strcmp(cv->members[i], ch->me) != 0) peer = cv->members[i];
        snprintf(ch->title, sizeof ch->title, "@%s", peer);
    } else {
        char clean[200];
        cli_put_clean(clean, sizeof clean, cv->name, strlen(cv->name));
        snprintf(ch->title, sizeof ch->title, "%s", clean);
    }
    uint64_t last_seq = cv->last_seq;
    size_t nmembers = cv->nmembers;
    char type[16];
    snprintf(type, sizeof type, "%s", cv->type);
    parley_conv_free(c, cv);

    if ((rc = refresh_receipts(ch)) < 0) return cli_fail(o, c, rc, "chat");

    if (ch->json) {
        jbuf j;
        json_event(&j, "open");
        jb_lit(&j, ",\"conv\":");
        jb_u64(&j, ch->conv);
        jb_lit(&j, ",\"type\":");
        jb_cstr(&j, type);
        jb_lit(&j, ",\"title\":");
        jb_cstr(&j, ch->title);
        jb_lit(&j, ",\"user\":");
        jb_cstr(&j, ch->me);
        jb_lit(&j, ",\"last_seq\":");
        jb_u64(&j, last_seq);
        jb_lit(&j, "}");
        out_json(ch, &j);
    } else {
        show_status(ch, "#%llu %s (%s, %zu member%s); /quit or Ctrl-D to leave",
                    (unsigned long long)ch->conv, ch->title, type, nmembers, nmembers == 1 ? "" : "s");
    }
    uint64_t highest = last_seq;
    if (ch->a->last > 0) {
        parley_history *h;
        if ((rc = parley_get_history(c, ch->conv, PARLEY_LATEST, 0, ch->a->last, &h)) < 0)
            return cli_fail(o, c, rc, "chat");
        for (size_t i = 0; i < h->n; i++) show_message(ch, &h->msgs[i], true);
        if (h->n) highest = h->msgs[h->n - 1].seq;
        parley_history_free(c, h);
    }
    parley_track(c, ch->conv, highest); /* on connect the client syncs what follows */
    if (highest) mark_read(ch, highest);
    return 0;
}

int cli_chat(const cli_opts *o, const chat_args *a)
{
    setlocale(LC_ALL, "");
    chat *ch = calloc(1, sizeof *ch);
    if (!ch) return cli_error(o, EXIT_LOCAL, "out of memory");
    g_chat = ch;
    ch->o = o;
    ch->a = a;
    ch->json = o->json;
    ch->tty = !o->json && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    snprintf(ch->me, sizeof ch->me, "%s", o->cfg.user);
    term_size(ch);
    if (uv_loop_init(&ch->loop) != 0) { free(ch); return cli_error(o, EXIT_LOCAL, "cannot start the event loop"); }
    parley_callbacks cb = {0};
    cb.on_state = cb_state;
    cb.on_message = cb_message;
    cb.on_ack = cb_ack;
    cb.on_receipt = cb_receipt;
    cb.on_presence = cb_presence;
    cb.on_typing = cb_typing;
    cb.on_conv = cb_conv;
    cb.on_error = cb_error;
    cb.on_resync = cb_resync;
    int rc = cli_client(o, &cb, ch, &ch->c);
    if (rc) { uv_loop_close(&ch->loop); free(ch); return rc; }
    rc = load(ch);
    if (rc) {
        parley_free(ch->c);
        uv_loop_close(&ch->loop);
        free(ch->mem);
        free(ch);
        return rc;
    }
    if ((rc = parley_attach_uv(ch->c, &ch->loop)) < 0) {
        parley_free(ch->c);
        free(ch->mem);
        free(ch);
        return cli_error(o, EXIT_LOCAL, "cannot attach to the event loop: %s", parley_strerror(rc));
    }
    uv_timer_init(&ch->loop, &ch->typing_timer);
    uv_timer_init(&ch->loop, &ch->drain_timer);
    ch->typing_timer.data = ch->drain_timer.data = ch;
    uv_signal_init(&ch->loop, &ch->sigint);
    uv_signal_init(&ch->loop, &ch->sigterm);
    uv_signal_init(&ch->loop, &ch->sigwinch);
    ch->sigint.data = ch->sigterm.data = ch->sigwinch.data = ch;
    uv_signal_start(&ch->sigint, on_signal, SIGINT);
    uv_signal_start(&ch->sigterm, on_signal, SIGTERM);
    if (ch->tty) uv_signal_start(&ch->sigwinch, on_signal, SIGWINCH);
    signal(SIGPIPE, SIG_IGN);

    /* stdin: watched when it can be polled; a regular file is read at once */
    struct stat st;
    bool regular = fstat(STDIN_FILENO, &st) == 0 && S_ISREG(st.st_mode);
    ch->in_poll.data = ch;
    if (!regular && uv_poll_init(&ch->loop, &ch->in_poll, STDIN_FILENO) == 0) {
        ch->in_poll_on = true;
        uv_poll_start(&ch->in_poll, UV_READABLE, on_stdin);
    }
    if (ch->tty) {
        rl_catch_signals = 0;
        rl_catch_sigwinch = 0;
        set_prompt(ch);
        rl_callback_handler_install(ch->prompt, on_rl_line);
        ch->rl_on = true;
    }
    if ((rc = parley_connect(ch->c)) < 0) {
        finish(ch, cli_fail(o, ch->c, rc, "chat"));
    } else if (!ch->in_poll_on) {
        /* a regular file (or nothing pollable): queue every line now, then EOF */
        on_stdin(&ch->in_poll, 0, 0);
        if (!ch->eof && !ch->quitting) quit(ch);
    }
    while (!ch->finished && uv_run(&ch->loop, UV_RUN_DEFAULT) != 0) {
        /* uv_stop() (finish) or nothing left to do */
    }
    int code = ch->exit_code;
    parley_free(ch->c);
    uv_run(&ch->loop, UV_RUN_DEFAULT); /* the close callbacks */
    uv_loop_close(&ch->loop);
    free(ch->lb);
    free(ch->mem);
    free(ch);
    return code;
}
