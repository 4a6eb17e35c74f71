/* fake_sink: sessions whose sink records what the hub hands them.
 *
 *   fake_session *a = fake_new(f, uid, 0);  a session of uid on thread 0
 *   fake_add(f, a);                         hub_session_add on its thread
 *   ... hub_send / chat operations ...
 *   fake_count(a, EV_MSG, false);           events it received, by kind/lane
 *   fake_nth(a, 0).json                     what it received, in order
 *
 * The sink checks that every call runs on the session's own thread
 * (wrong_thread counts the ones that did not) and never after the session
 * closed (after_close). close() does what a transport's close path does:
 * it removes the session from the hub (on its thread). close_on_send makes
 * send() close the session while the hub is delivering to it.
 *
 * Session ids look like conn ids ((n << 8) | thread), so a session can be
 * the origin of a chat operation: the reply goes to its thread and the
 * fan-out skips it.
 */
#ifndef PARLEY_TEST_FAKE_SINK_H
#define PARLEY_TEST_FAKE_SINK_H

#include "fixture.h"

typedef struct fake_rec {
    uint64_t session;
    uint8_t kind;
    uint64_t conv, seq;
    bool lossy;
    char *json;          /* a copy of the event's JSON, NUL-terminated */
} fake_rec;

typedef struct fake_session {
    session s;           /* first: a session* is a fake_session* */
    fx *f;
    int thread;
    bool close_on_send;  /* send() closes the session (1013) */
    bool closed;
    uint16_t close_code;
    char close_reason[64];
    bool online_on_add;  /* hub_session_add's answer */
    bool offline_on_remove;
    int wrong_thread, after_close;
} fake_session;

static struct {
    uv_mutex_t mu;
    bool init;
    fake_rec *r;
    size_t n, cap;
    uint64_t next_id;
} fake_log_;

static inline void fake_lock_(void)
{
    if (!fake_log_.init) { uv_mutex_init(&fake_log_.mu); fake_log_.init = true; }
    uv_mutex_lock(&fake_log_.mu);
}

static inline void fake_unlock_(void) { uv_mutex_unlock(&fake_log_.mu); }

/* Forgets every record (between tests). */
static inline void fake_reset(void)
{
    fake_lock_();
    for (size_t i = 0; i < fake_log_.n; i++) free(fake_log_.r[i].json);
    free(fake_log_.r);
    fake_log_.r = NULL;
    fake_log_.n = fake_log_.cap = 0;
    fake_unlock_();
}

static inline void fake_check_thread_(fake_session *fs)
{
    uv_thread_t self = uv_thread_self();
    srv_thread *t = &fs->f->srv->threads[fs->thread];
    if (!uv_thread_equal(&self, &t->tid)) fs->wrong_thread++;
}

static inline void fake_record_(fake_session *fs, event *ev, bool lossy)
{
    fake_check_thread_(fs);
    if (fs->closed) fs->after_close++;
    rbuf *b = ev->enc[EV_ENC_JSON];
    char *json = malloc(b->len + 1);
    if (!json) fx_fatal("out of memory");
    memcpy(json, b->data, b->len);
    json[b->len] = 0;
    fake_lock_();
    if (fake_log_.n == fake_log_.cap) {
        fake_log_.cap = fake_log_.cap ? fake_log_.cap * 2 : 64;
        fake_log_.r = realloc(fake_log_.r, fake_log_.cap * sizeof *fake_log_.r);
        if (!fake_log_.r) fx_fatal("out of memory");
    }
    fake_log_.r[fake_log_.n++] = (fake_rec){fs->s.id, ev->kind, ev->conv, ev->seq, lossy, json};
    fake_unlock_();
}

static inline void fake_sink_close_(session *s, uint16_t code, const char *reason)
{
    fake_session *fs = (fake_session *)s;
    fake_check_thread_(fs);
    if (fs->closed) return;
    fs->closed = true;
    fs->close_code = code;
    snprintf(fs->close_reason, sizeof fs->close_reason, "%s", reason ? reason : "");
    /* As a transport's close path does (proto's on_close). */
    fs->offline_on_remove = hub_session_remove(fs->f->hub, &fs->f->srv->threads[fs->thread], s);
}

static inline int fake_sink_send_(session *s, event *ev)
{
    fake_session *fs = (fake_session *)s;
    fake_record_(fs, ev, false);
    if (fs->close_on_send) {
        fake_sink_close_(s, WS_CLOSE_TRY_AGAIN, "closed by the test");
        return ERR_CLOSED;
    }
    return ERR_OK;
}

static inline void fake_sink_send_lossy_(session *s, event *ev)
{
    fake_record_((fake_session *)s, ev, true);
}

static const sink_ops fake_sink = {fake_sink_send_, fake_sink_send_lossy_, fake_sink_close_};

/* A session of uid on thread `thread` (not yet in the hub). */
static inline fake_session *fake_new(fx *f, uint64_t uid, int thread)
{
    fake_session *fs = calloc(1, sizeof *fs);
    if (!fs) fx_fatal("out of memory");
    fs->f = f;
    fs->thread = thread;
    fs->s.sink = &fake_sink;
    fake_lock_();
    fs->s.id = (++fake_log_.next_id << 8) | (uint64_t)thread;
    fake_unlock_();
    fs->s.uid = uid;
    fs->s.device = 1;
    snprintf(fs->s.name, sizeof fs->s.name, "user%llu", (unsigned long long)uid);
    return fs;
}

static inline void fake_add_on_(srv_thread *t, void *arg)
{
    fake_session *fs = arg;
    fs->online_on_add = hub_session_add(fs->f->hub, t, &fs->s);
}

static inline void fake_remove_on_(srv_thread *t, void *arg)
{
    fake_session *fs = arg;
    fs->closed = true;
    fs->offline_on_remove = hub_session_remove(fs->f->hub, t, &fs->s);
}

/* hub_session_add on the session's thread; returns whether it made the
 * user online. */
static inline bool fake_add(fake_session *fs)
{
    fx_run(fs->f, fs->thread, fake_add_on_, fs);
    return fs->online_on_add;
}

/* hub_session_remove on the session's thread; returns whether it made
 * the user offline. */
static inline bool fake_remove(fake_session *fs)
{
    fx_run(fs->f, fs->thread, fake_remove_on_, fs);
    return fs->offline_on_remove;
}

/* Events fs received of that kind (0: any) on that lane. */
static inline int fake_count(const fake_session *fs, int kind, bool lossy)
{
    int n = 0;
    fake_lock_();
    for (size_t i = 0; i < fake_log_.n; i++) {
        const fake_rec *r = &fake_log_.r[i];
        if (r->session == fs->s.id && (!kind || r->kind == kind) && r->lossy == lossy) n++;
    }
    fake_unlock_();
    return n;
}

/* Every event fs received, either lane. */
static inline int fake_total(const fake_session *fs)
{
    return fake_count(fs, 0, false) + fake_count(fs, 0, true);
}

/* The k-th event fs received (either lane), as a copy (kind 0 if there
 * is none); its json stays valid until fake_reset(). */
static inline fake_rec fake_nth(const fake_session *fs, int k)
{
    fake_rec out = {0, 0, 0, 0, false, NULL};
    fake_lock_();
    for (size_t i = 0; i < fake_log_.n; i++)
        if (fake_log_.r[i].session == fs->s.id && k-- == 0) { out = fake_log_.r[i]; break; }
    fake_unlock_();
    return out;
}

/* The last event of that kind fs received (kind 0 if there is none). */
static inline fake_rec fake_last(const fake_session *fs, int kind)
{
    fake_rec out = {0, 0, 0, 0, false, NULL};
    fake_lock_();
    for (size_t i = 0; i < fake_log_.n; i++)
        if (fake_log_.r[i].session == fs->s.id && fake_log_.r[i].kind == kind) out = fake_log_.r[i];
    fake_unlock_();
    return out;
}

#endif
