#include "hub.h"

#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "err.h"
#include "ws.h"

typedef struct parcel parcel;
struct parcel {
    parcel *next;
    rbuf *frame;                 /* with a reference, or NULL for a call */
    audience *to;                /* with a reference, or NULL */
    uint64_t conn;               /* target (to == NULL) or excluded connection */
    void (*fn)(srv_thread *t, void *arg);
    void *arg;
};

typedef struct outbox {
    parcel *head, *tail;
} outbox;

struct hub {
    server *srv;
    uv_mutex_t mu;
    u64map online;               /* uid -> (void *)(uintptr_t)session count; under mu */
    outbox *pending;             /* per thread; the writer thread's */
    u64map *local;               /* per thread: uid -> first session */
};

audience *audience_new(size_t n)
{
    audience *a = malloc(sizeof *a + n * sizeof a->uids[0]);
    if (!a) return NULL;
    a->refs = 1;
    a->n = (uint32_t)n;
    return a;
}

void audience_unref(audience *a)
{
    if (a && __atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0) free(a);
}

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

bool hub_online(hub *h, uint64_t uid)
{
    uv_mutex_lock(&h->mu);
    bool on = u64map_get(&h->online, uid) != NULL;
    uv_mutex_unlock(&h->mu);
    return on;
}

/* ---- delivery on the recipient's thread ---------------------------------- */

static void send_to(conn *c, rbuf *frame)
{
    if (conn_send(c, frame) == ERR_FULL)
        conn_close_ws(c, WS_CLOSE_TRY_AGAIN, "output queue full: resume with sync");
}

static void deliver(srv_thread *t, void *arg)
{
    for (parcel *p = arg, *next; p; p = next) {
        next = p->next;
        if (p->fn) {
            p->fn(t, p->arg);
        } else if (p->to) {
            for (uint32_t i = 0; i < p->to->n; i++) {
                for (session *s = hub_local(t, p->to->uids[i]), *sn; s; s = sn) {
                    sn = s->next_local; /* send_to may close s */
                    if (s->c->id != p->conn) send_to(s->c, p->frame);
                }
            }
        } else {
            conn *c = srv_conn(t, p->conn);
            if (c && c->state == CONN_WS) send_to(c, p->frame);
        }
        rbuf_unref(p->frame);
        audience_unref(p->to);
        free(p);
    }
}

static parcel *parcel_new(rbuf *frame, audience *to, uint64_t conn_id)
{
    parcel *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->frame = frame ? rbuf_ref(frame) : NULL;
    if (to) __atomic_add_fetch(&to->refs, 1, __ATOMIC_RELAXED);
    p->to = to;
    p->conn = conn_id;
    return p;
}

static void post(srv_thread *t, parcel *list)
{
    if (srv_post(t, deliver, list) != ERR_OK) {
        /* The thread has ended: drop the parcels; calls get t = NULL so
         * their owners can reclaim arg. */
        for (parcel *p = list, *next; p; p = next) {
            next = p->next;
            if (p->fn) p->fn(NULL, p->arg);
            rbuf_unref(p->frame);
            audience_unref(p->to);
            free(p);
        }
    }
}

void hub_send(hub *h, audience *to, rbuf *frame, uint64_t except_conn)
{
    for (int i = 0; i < h->srv->nthreads; i++) {
        parcel *p = parcel_new(frame, to, except_conn);
        if (p) post(&h->srv->threads[i], p);
    }
}

static void enqueue(hub *h, int thread, parcel *p)
{
    outbox *o = &h->pending[thread];
    if (o->tail) o->tail->next = p;
    else o->head = p;
    o->tail = p;
}

void hub_queue(hub *h, audience *to, rbuf *frame, uint64_t except_conn)
{
    for (int i = 0; i < h->srv->nthreads; i++) {
        parcel *p = parcel_new(frame, to, except_conn);
        if (p) enqueue(h, i, p);
    }
}

void hub_queue_conn(hub *h, uint64_t conn_id, rbuf *frame)
{
    parcel *p = parcel_new(frame, NULL, conn_id);
    if (p) enqueue(h, srv_conn_thread(conn_id), p);
}

void hub_queue_call(hub *h, int thread, void (*fn)(srv_thread *t, void *arg), void *arg)
{
    parcel *p = parcel_new(NULL, NULL, 0);
    if (!p) return;
    p->fn = fn;
    p->arg = arg;
    enqueue(h, thread, p);
}

void hub_flush(hub *h)
{
    for (int i = 0; i < h->srv->nthreads; i++) {
        outbox *o = &h->pending[i];
        if (!o->head) continue;
        post(&h->srv->threads[i], o->head);
        o->head = o->tail = NULL;
    }
}
