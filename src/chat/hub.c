#include "chat/hub.h"

#include <stdlib.h>
#include <string.h>

#include "base/err.h"

typedef struct parcel {
    event *ev;                   /* with a reference, or NULL for a call */
    audience *to;                /* with a reference, or NULL for a call */
    uint64_t except;             /* the session not to send to (0: none) */
    void (*fn)(srv_thread *t, void *arg);
    void *arg;
    bool lossy;                  /* typing/presence: dropped for slow readers */
} parcel;

/* Parcels for one thread, posted as one srv_post(). */
typedef struct outbox {
    size_t n, cap;
    parcel *items;
} outbox;

struct hub {
    server *srv;
    uv_mutex_t mu;
    u64map online;               /* uid -> (void *)(uintptr_t)session count; under mu */
    outbox *pending;             /* per thread; the completer thread's */
    u64map *local;               /* per thread: uid -> first session */
};

int hub_new(hub **out, server *srv)
{
    hub *h = calloc(1, sizeof *h);
    if (!h) return ERR_NOMEM;
    h->srv = srv;
    h->pending = calloc((size_t)srv->nthreads, sizeof *h->pending);
    h->local = calloc((size_t)srv->nthreads, sizeof *h->local);
    if (!h->pending || !h->local) { free(h->pending); free(h->local); free(h); return ERR_NOMEM; }
    uv_mutex_init(&h->mu);
    u64map_init(&h->online);
    for (int i = 0; i < srv->nthreads; i++) {
        u64map_init(&h->local[i]);
        srv->threads[i].app = &h->local[i];
    }
    *out = h;
    return ERR_OK;
}

void hub_free(hub *h)
{
    for (int i = 0; i < h->srv->nthreads; i++) free(h->pending[i].items);
    for (int i = 0; i < h->srv->nthreads; i++) u64map_free(&h->local[i]);
    u64map_free(&h->online);
    uv_mutex_destroy(&h->mu);
    free(h->pending);
    free(h->local);
    free(h);
}

session *hub_local(srv_thread *t, uint64_t uid)
{
    return u64map_get((u64map *)t->app, uid);
}

static int presence_add(hub *h, uint64_t uid, int delta)
{
    uv_mutex_lock(&h->mu);
    intptr_t n = (intptr_t)u64map_get(&h->online, uid) + delta;
    if (n > 0) u64map_put(&h->online, uid, (void *)n);
    else u64map_del(&h->online, uid);
    uv_mutex_unlock(&h->mu);
    return (int)n;
}

bool hub_session_add(hub *h, srv_thread *t, session *s)
{
    u64map *m = t->app;
    s->next_local = u64map_get(m, s->uid);
    if (u64map_put(m, s->uid, s) < 0) return false;
    return presence_add(h, s->uid, 1) == 1;
}

bool hub_session_remove(hub *h, srv_thread *t, session *s)
{
    u64map *m = t->app;
    session *first = u64map_get(m, s->uid);
    if (first == s) {
        if (s->next_local) u64map_put(m, s->uid, s->next_local);
        else u64map_del(m, s->uid);
    } else {
        session *p = first;
        while (p && p->next_local != s) p = p->next_local;
        if (!p) return false; /* was never added */
        p->next_local = s->next_local;
    }
    return presence_add(h, s->uid, -1) == 0;
}

int hub_sessions(hub *h, uint64_t uid)
{
    uv_mutex_lock(&h->mu);
    int n = (int)(intptr_t)u64map_get(&h->online, uid);
    uv_mutex_unlock(&h->mu);
    return n;
}

bool hub_online(hub *h, uint64_t uid)
{
    return hub_sessions(h, uid) > 0;
}

/* ---- delivery on the recipient's thread ---------------------------------- */

static void parcel_release(parcel *p)
{
    event_unref(p->ev);
    audience_unref(p->to);
}

static void deliver(srv_thread *t, void *arg)
{
    outbox *o = arg;
    for (size_t k = 0; k < o->n; k++) {
        parcel *p = &o->items[k];
        if (p->fn) {
            p->fn(t, p->arg);
        } else if (p->to) {
            for (uint32_t i = 0; i < p->to->n; i++) {
                for (session *s = hub_local(t, p->to->uids[i]), *sn; s; s = sn) {
                    sn = s->next_local; /* a send may close s */
                    if (s->id == p->except) continue;
                    if (p->lossy) s->sink->send_lossy(s, p->ev);
                    else s->sink->send(s, p->ev);
                }
            }
        }
        parcel_release(p);
    }
    free(o->items);
    free(o);
}

/* Posts an outbox (taking it over); if the thread has ended, drops the
 * parcels, and calls get t = NULL so their owners can reclaim arg. */
static void post(srv_thread *t, outbox *o)
{
    if (srv_post(t, deliver, o) == ERR_OK) return;
    for (size_t k = 0; k < o->n; k++) {
        if (o->items[k].fn) o->items[k].fn(NULL, o->items[k].arg);
        parcel_release(&o->items[k]);
    }
    free(o->items);
    free(o);
}

static bool push(outbox *o, event *ev, audience *to, uint64_t except,
                 void (*fn)(srv_thread *, void *), void *arg)
{
    if (o->n == o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 16;
        parcel *items = realloc(o->items, cap * sizeof *items);
        if (!items) return false;
        o->items = items;
        o->cap = cap;
    }
    parcel *p = &o->items[o->n++];
    p->ev = ev ? event_ref(ev) : NULL;
    if (to) __atomic_add_fetch(&to->refs, 1, __ATOMIC_RELAXED);
    p->to = to;
    p->except = except;
    p->fn = fn;
    p->arg = arg;
    p->lossy = false;
    return true;
}

static void send_now(hub *h, audience *to, event *ev, uint64_t except, bool lossy)
{
    for (int i = 0; i < h->srv->nthreads; i++) {
        outbox *o = calloc(1, sizeof *o);
        if (!o) continue;
        if (push(o, ev, to, except, NULL, NULL)) {
            o->items[0].lossy = lossy;
            post(&h->srv->threads[i], o);
        } else {
            free(o);
        }
    }
}

void hub_send(hub *h, audience *to, event *ev, uint64_t except)
{
    send_now(h, to, ev, except, false);
}

void hub_send_lossy(hub *h, audience *to, event *ev, uint64_t except)
{
    send_now(h, to, ev, except, true);
}

void hub_queue(hub *h, audience *to, event *ev, uint64_t except)
{
    for (int i = 0; i < h->srv->nthreads; i++) push(&h->pending[i], ev, to, except, NULL, NULL);
}

void hub_queue_call(hub *h, int thread, void (*fn)(srv_thread *t, void *arg), void *arg)
{
    if (!push(&h->pending[thread], NULL, NULL, 0, fn, arg)) fn(NULL, arg);
}

void hub_flush(hub *h)
{
    for (int i = 0; i < h->srv->nthreads; i++) {
        outbox *o = &h->pending[i];
        if (!o->n) continue;
        outbox *moved = malloc(sizeof *moved);
        if (!moved) continue; /* stays queued for the next flush */
        *moved = *o;
        o->n = o->cap = 0;
        o->items = NULL;
        post(&h->srv->threads[i], moved);
    }
}
