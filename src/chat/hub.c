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

/* One I/O thread's registry (t->app). `local` is written by the thread
 * under mu and read by it without; the completer reads it under mu. The
 * mutex sits on a cache line of its own: the completer takes it for every
 * conversation message, the thread reads `local` for every delivery. */
typedef struct hub_thread {
    u64map local;                /* uid -> first session on this thread */
    uint64_t *journal;           /* ring of HUB_JOURNAL uids (under mu) */
    _Alignas(64) uv_mutex_t mu;
    uint64_t head;               /* records ever appended (under mu) */
} hub_thread;

/* A conversation's members online on one thread. */
typedef struct route_part {
    audience *on;                /* sorted uids, with a reference, or NULL (none) */
    uint32_t cap;                /* room in `on` */
    uint64_t seen;               /* the thread's journal head it reflects */
} route_part;

/* A conversation's route (hub.h): the completer's. */
typedef struct route {
    uint64_t conv;
    uint64_t version;            /* the caller's members_version, or HUB_UNVERSIONED */
    uint64_t *members;           /* sorted, no duplicates */
    uint32_t n, members_cap;
    size_t cost;                 /* uids held: members_cap + the parts' caps */
    uint64_t used;               /* ms of the last use */
    struct route *prev, *next;   /* most recently used first */
    route_part part[];           /* one per thread */
} route;

struct hub {
    server *srv;
    int nthreads;
    uv_mutex_t mu;
    u64map online;               /* uid -> (void *)(uintptr_t)session count; under mu */
    hub_thread *th;              /* per thread */
    /* the completer's */
    outbox *pending;             /* per thread */
    u64map routes;               /* conv -> route */
    route *mru, *lru;
    size_t route_uids;
    hub_limits lim;
    uint64_t now;                /* ms, read once per batch */
    bool now_stale;
    uint64_t *scratch;           /* a thread's part being built */
    size_t scratch_cap;
    hub_route_stats st;
    /* the other nodes (hub_set_remote): set before the threads start */
    void (*remote)(void *ctx, audience *to, event *ev);
    void *remote_ctx;
};

int hub_new(hub **out, server *srv)
{
    hub *h = calloc(1, sizeof *h);
    if (!h) return ERR_NOMEM;
    int n = srv->nthreads;
    h->srv = srv;
    h->nthreads = n;
    h->pending = calloc((size_t)n, sizeof *h->pending);
    h->th = aligned_alloc(_Alignof(hub_thread), (size_t)n * sizeof *h->th);
    if (h->th) memset(h->th, 0, (size_t)n * sizeof *h->th);
    for (int i = 0; h->th && i < n; i++) {
        h->th[i].journal = malloc(HUB_JOURNAL * sizeof *h->th[i].journal);
        if (!h->th[i].journal) { n = i; goto fail; }
    }
    if (!h->pending || !h->th) goto fail;
    uv_mutex_init(&h->mu);
    u64map_init(&h->online);
    u64map_init(&h->routes);
    h->lim = (hub_limits)HUB_LIMITS_DEFAULT;
    h->now_stale = true;
    for (int i = 0; i < n; i++) {
        u64map_init(&h->th[i].local);
        uv_mutex_init(&h->th[i].mu);
        srv->threads[i].app = &h->th[i];
    }
    *out = h;
    return ERR_OK;
fail:
    for (int i = 0; h->th && i < n; i++) free(h->th[i].journal);
    free(h->th);
    free(h->pending);
    free(h);
    return ERR_NOMEM;
}

static void route_drop(hub *h, route *r);

void hub_free(hub *h)
{
    while (h->mru) route_drop(h, h->mru);
    u64map_free(&h->routes);
    free(h->scratch);
    for (int i = 0; i < h->nthreads; i++) {
        free(h->pending[i].items);
        u64map_free(&h->th[i].local);
        uv_mutex_destroy(&h->th[i].mu);
        free(h->th[i].journal);
    }
    u64map_free(&h->online);
    uv_mutex_destroy(&h->mu);
    free(h->pending);
    free(h->th);
    free(h);
}

session *hub_local(srv_thread *t, uint64_t uid)
{
    return u64map_get(&((hub_thread *)t->app)->local, uid);
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

/* Under ht->mu: uid's presence on this thread changed. */
static void journal(hub_thread *ht, uint64_t uid)
{
    ht->journal[ht->head % HUB_JOURNAL] = uid;
    ht->head++;
}

bool hub_session_add(hub *h, srv_thread *t, session *s)
{
    hub_thread *ht = t->app;
    uv_mutex_lock(&ht->mu);
    session *first = u64map_get(&ht->local, s->uid);
    s->next_local = first;
    int rc = u64map_put(&ht->local, s->uid, s);
    if (rc == ERR_OK && !first) journal(ht, s->uid);
    uv_mutex_unlock(&ht->mu);
    if (rc < 0) return false;
    return presence_add(h, s->uid, 1) == 1;
}

bool hub_session_remove(hub *h, srv_thread *t, session *s)
{
    hub_thread *ht = t->app;
    uv_mutex_lock(&ht->mu);
    session *first = u64map_get(&ht->local, s->uid);
    if (first == s) {
        if (s->next_local) {
            u64map_put(&ht->local, s->uid, s->next_local);
        } else {
            u64map_del(&ht->local, s->uid);
            journal(ht, s->uid);
        }
    } else {
        session *p = first;
        while (p && p->next_local != s) p = p->next_local;
        if (!p) { uv_mutex_unlock(&ht->mu); return false; } /* was never added */
        p->next_local = s->next_local;
    }
    uv_mutex_unlock(&ht->mu);
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
    for (int i = 0; i < h->nthreads; i++) {
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

void hub_set_remote(hub *h, void (*publish)(void *ctx, audience *to, event *ev), void *ctx)
{
    h->remote = publish;
    h->remote_ctx = ctx;
}

/* The one point where an event leaves for the other nodes. */
static void remote(hub *h, audience *to, event *ev)
{
    if (h->remote && to && ev) h->remote(h->remote_ctx, to, ev);
}

void hub_send(hub *h, audience *to, event *ev, uint64_t except)
{
    remote(h, to, ev);
    send_now(h, to, ev, except, false);
}

void hub_send_lossy(hub *h, audience *to, event *ev, uint64_t except)
{
    remote(h, to, ev);
    send_now(h, to, ev, except, true);
}

void hub_send_here(hub *h, audience *to, event *ev, bool lossy)
{
    send_now(h, to, ev, 0, lossy);
}

static void queue_here(hub *h, audience *to, event *ev, uint64_t except)
{
    for (int i = 0; i < h->nthreads; i++) push(&h->pending[i], ev, to, except, NULL, NULL);
}

void hub_queue(hub *h, audience *to, event *ev, uint64_t except)
{
    remote(h, to, ev);
    queue_here(h, to, ev, except);
}

void hub_queue_call(hub *h, int thread, void (*fn)(srv_thread *t, void *arg), void *arg)
{
    if (!push(&h->pending[thread], NULL, NULL, 0, fn, arg)) fn(NULL, arg);
}

/* ---- routes: fan-out by conversation (the completer's) ------------------- */

static uint64_t now_ms(hub *h)
{
    if (h->now_stale) {
        h->now = uv_hrtime() / 1000000u;
        h->now_stale = false;
    }
    return h->now;
}

/* Where uid is or would go in v (sorted). */
static size_t uid_slot(const uint64_t *v, size_t n, uint64_t uid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid] < uid) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static bool has_uid(const uint64_t *v, size_t n, uint64_t uid)
{
    size_t i = uid_slot(v, n, uid);
    return i < n && v[i] == uid;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v and drops duplicates; returns the new count. */
static size_t sort_unique(uint64_t *v, size_t n)
{
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; i++) sorted = v[i - 1] <= v[i];
    if (!sorted) qsort(v, n, sizeof *v, cmp_u64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!k || v[k - 1] != v[i]) v[k++] = v[i];
    return k;
}

static bool scratch_fit(hub *h, size_t n)
{
    if (n <= h->scratch_cap) return true;
    size_t cap = h->scratch_cap ? h->scratch_cap : 64;
    while (cap < n) cap *= 2;
    uint64_t *v = realloc(h->scratch, cap * sizeof *v);
    if (!v) return false;
    h->scratch = v;
    h->scratch_cap = cap;
    return true;
}

/* Whether the sorted, duplicate-free list equals `members` as a set. */
static bool same_members(hub *h, const route *r, const audience *members)
{
    size_t n = members->n;
    bool sorted = true;
    for (size_t i = 1; i < n && sorted; i++) sorted = members->uids[i - 1] < members->uids[i];
    if (sorted) return n == r->n && memcmp(members->uids, r->members, n * sizeof *r->members) == 0;
    if (n < r->n || !scratch_fit(h, n)) return false;
    memcpy(h->scratch, members->uids, n * sizeof *h->scratch);
    n = sort_unique(h->scratch, n);
    return n == r->n && memcmp(h->scratch, r->members, n * sizeof *r->members) == 0;
}

static bool shared(const audience *a)
{
    return __atomic_load_n(&a->refs, __ATOMIC_ACQUIRE) != 1;
}

static void lru_unlink(hub *h, route *r)
{
    if (r->prev) r->prev->next = r->next;
    else h->mru = r->next;
    if (r->next) r->next->prev = r->prev;
    else h->lru = r->prev;
    r->prev = r->next = NULL;
}

static void lru_front(hub *h, route *r)
{
    r->next = h->mru;
    if (h->mru) h->mru->prev = r;
    h->mru = r;
    if (!h->lru) h->lru = r;
}

static void set_cost(hub *h, route *r)
{
    size_t c = r->members_cap;
    for (int t = 0; t < h->nthreads; t++) c += r->part[t].on ? r->part[t].cap : 0;
    h->route_uids = h->route_uids - r->cost + c;
    r->cost = c;
}

static void route_drop(hub *h, route *r)
{
    lru_unlink(h, r);
    u64map_del(&h->routes, r->conv);
    for (int t = 0; t < h->nthreads; t++) audience_unref(r->part[t].on);
    h->route_uids -= r->cost;
    h->st.evictions++;
    free(r->members);
    free(r);
}

/* Makes part p hold the sorted uids v[0..n) (a new audience if the old
 * one is shared or too small). False: out of memory (p unchanged). */
static bool part_set(route_part *p, const uint64_t *v, size_t n)
{
    if (!n) {
        audience_unref(p->on);
        p->on = NULL;
        p->cap = 0;
        return true;
    }
    if (!p->on || shared(p->on) || p->cap < n) {
        size_t cap = n + n / 8 + 4;
        audience *a = audience_new(cap);
        if (!a) return false;
        audience_unref(p->on);
        p->on = a;
        p->cap = (uint32_t)cap;
    }
    memcpy(p->on->uids, v, n * sizeof *v);
    p->on->n = (uint32_t)n;
    return true;
}

/* Rebuilds thread t's part from the members, reading t's map under its
 * mutex (the scratch holds the result until the lock is released). */
static bool part_rescan(hub *h, route *r, int t)
{
    if (!scratch_fit(h, r->n)) return false;
    hub_thread *ht = &h->th[t];
    size_t k = 0;
    uv_mutex_lock(&ht->mu);
    for (uint32_t i = 0; i < r->n; i++)
        if (u64map_get(&ht->local, r->members[i])) h->scratch[k++] = r->members[i];
    uint64_t head = ht->head;
    uv_mutex_unlock(&ht->mu);
    if (!part_set(&r->part[t], h->scratch, k)) return false;
    r->part[t].seen = head;
    return true;
}

/* Brings thread t's part up to date with its journal. Called with ht->mu
 * held; `changed` collects (uid, present) pairs in the scratch as
 * uid << 1 | present, applied after the unlock by part_apply(). */
static size_t part_changes(hub *h, route *r, hub_thread *ht, uint64_t from)
{
    size_t k = 0;
    for (uint64_t i = from; i < ht->head; i++) {
        uint64_t uid = ht->journal[i % HUB_JOURNAL];
        if (!has_uid(r->members, r->n, uid)) continue;
        h->scratch[k++] = uid;
        h->scratch[k++] = u64map_get(&ht->local, uid) != NULL;
    }
    return k / 2;
}

static bool part_apply(hub *h, route_part *p, size_t nchanges)
{
    size_t n = p->on ? p->on->n : 0;
    /* Writable, with room for every change an insertion. */
    if (!p->on || shared(p->on) || p->cap < n + nchanges) {
        size_t cap = n + nchanges + (n + nchanges) / 8 + 4;
        audience *a = audience_new(cap);
        if (!a) return false;
        if (n) memcpy(a->uids, p->on->uids, n * sizeof *a->uids);
        a->n = (uint32_t)n;
        audience_unref(p->on);
        p->on = a;
        p->cap = (uint32_t)cap;
    }
    uint64_t *v = p->on->uids;
    for (size_t c = 0; c < nchanges; c++) {
        uint64_t uid = h->scratch[2 * c];
        bool present = h->scratch[2 * c + 1];
        size_t at = uid_slot(v, n, uid);
        bool there = at < n && v[at] == uid;
        if (present && !there) {
            memmove(v + at + 1, v + at, (n - at) * sizeof *v);
            v[at] = uid;
            n++;
        } else if (!present && there) {
            memmove(v + at, v + at + 1, (n - at - 1) * sizeof *v);
            n--;
        }
    }
    p->on->n = (uint32_t)n;
    if (!n) {
        audience_unref(p->on);
        p->on = NULL;
        p->cap = 0;
    }
    return true;
}

/* Brings every part of r up to date with the threads' journals; false:
 * out of memory (the route must not be used). */
static bool route_refresh(hub *h, route *r)
{
    for (int t = 0; t < h->nthreads; t++) {
        hub_thread *ht = &h->th[t];
        route_part *p = &r->part[t];
        uv_mutex_lock(&ht->mu);
        uint64_t head = ht->head, behind = head - p->seen;
        if (!behind) { uv_mutex_unlock(&ht->mu); continue; }
        if (behind > HUB_JOURNAL || behind > r->n || !scratch_fit(h, 2 * (size_t)behind)) {
            uv_mutex_unlock(&ht->mu);
            h->st.rescans++;
            if (!part_rescan(h, r, t)) return false;
            continue;
        }
        size_t k = part_changes(h, r, ht, p->seen);
        uv_mutex_unlock(&ht->mu);
        h->st.replays++;
        if (k && !part_apply(h, p, k)) { p->seen = head - behind; return false; }
        p->seen = head;
    }
    set_cost(h, r);
    return true;
}

/* Room for a route of `need` more uids (keep: a route that stays, already
 * counted): drops the least recently used others. */
static void make_room(hub *h, size_t need, const route *keep)
{
    while (h->lru && (h->routes.count >= h->lim.max_routes + (keep != NULL) ||
                      h->route_uids + need > h->lim.max_uids)) {
        if (h->lru == keep) {
            if (!keep->prev) break;
            route_drop(h, keep->prev);
        } else {
            route_drop(h, h->lru);
        }
    }
}

/* (Re)fills r from `members`: the sorted list and every part. */
static bool route_build(hub *h, route *r, const audience *members, uint64_t version)
{
    size_t n = members->n;
    if (n > r->members_cap) {
        uint64_t *v = malloc(n * sizeof *v);
        if (!v) return false;
        free(r->members);
        r->members = v;
        r->members_cap = (uint32_t)n;
    }
    if (n) memcpy(r->members, members->uids, n * sizeof *r->members);
    r->n = (uint32_t)sort_unique(r->members, n);
    r->version = version;
    h->st.builds++;
    for (int t = 0; t < h->nthreads; t++)
        if (!part_rescan(h, r, t)) { r->n = 0; r->version = 0; set_cost(h, r); return false; }
    set_cost(h, r);
    return true;
}

/* The route for conv, current for these members, or NULL (not cached:
 * too big, or out of memory). */
static route *route_get(hub *h, uint64_t conv, uint64_t version, const audience *members)
{
    route *r = u64map_get(&h->routes, conv);
    bool fresh = r && (version != HUB_UNVERSIONED ? r->version == version && r->n <= members->n
                                                  : r->version == HUB_UNVERSIONED &&
                                                        same_members(h, r, members));
    if (r && fresh) {
        if (!route_refresh(h, r)) { route_drop(h, r); return NULL; }
        h->st.hits++;
    } else {
        if (members->n > h->lim.max_uids / 4 || !h->lim.max_routes) {
            if (r) route_drop(h, r);
            return NULL;
        }
        if (!r) {
            make_room(h, members->n, NULL);
            r = calloc(1, sizeof *r + (size_t)h->nthreads * sizeof r->part[0]);
            if (!r) return NULL;
            r->conv = conv;
            if (u64map_put(&h->routes, conv, r) < 0) { free(r); return NULL; }
            lru_front(h, r);
        } else {
            make_room(h, members->n, r);
        }
        if (!route_build(h, r, members, version)) { route_drop(h, r); return NULL; }
    }
    r->used = now_ms(h);
    if (h->mru != r) {
        lru_unlink(h, r);
        lru_front(h, r);
    }
    make_room(h, 0, r); /* what r's parts grew by */
    return r;
}

void hub_queue_conv(hub *h, uint64_t conv, uint64_t members_version, audience *members,
                    event *ev, uint64_t except)
{
    if (!members || !ev) return;
    remote(h, members, ev);
    route *r = conv ? route_get(h, conv, members_version, members) : NULL;
    if (!r) {
        h->st.uncached++;
        queue_here(h, members, ev, except);
        return;
    }
    for (int t = 0; t < h->nthreads; t++)
        if (r->part[t].on) push(&h->pending[t], ev, r->part[t].on, except, NULL, NULL);
}

/* Drops the routes unused for idle_ms (the least recently used last). */
static void sweep(hub *h)
{
    h->now_stale = true;
    if (!h->lru) return;
    uint64_t now = now_ms(h);
    while (h->lru && now - h->lru->used >= h->lim.idle_ms) route_drop(h, h->lru);
}

void hub_flush(hub *h)
{
    for (int i = 0; i < h->nthreads; i++) {
        outbox *o = &h->pending[i];
        if (!o->n) continue;
        outbox *moved = malloc(sizeof *moved);
        if (!moved) continue; /* stays queued for the next flush */
        *moved = *o;
        o->n = o->cap = 0;
        o->items = NULL;
        post(&h->srv->threads[i], moved);
    }
    sweep(h);
    h->now_stale = true;
}

void hub_set_limits(hub *h, const hub_limits *lim)
{
    h->lim = *lim;
    while (h->lru && (h->routes.count > h->lim.max_routes || h->route_uids > h->lim.max_uids))
        route_drop(h, h->lru);
}

void hub_route_stats_get(hub *h, hub_route_stats *out)
{
    *out = h->st;
    out->routes = h->routes.count;
    out->uids = h->route_uids;
}
