/* Unit tests of the hub (src/chat/hub.c) over real I/O loops without
 * listeners (fixture.h) and sessions with a recording sink (fake_sink.h):
 * the per-thread registry, presence across threads, and delivery of each
 * event once to each session of the audience but the excluded one, on the
 * right lane, with a sink that closes its session during delivery. */
#include "test.h"

#include "fake_sink.h"
#include "fixture.h"

static event *ev_of(enum event_kind kind, uint64_t conv, uint64_t seq, const char *json)
{
    event *ev = event_new(kind, conv, seq, rbuf_copy(json, strlen(json)));
    if (!ev) fx_fatal("event_new");
    return ev;
}

static audience *aud_of(size_t n, const uint64_t *uids)
{
    audience *a = audience_new(n);
    if (!a) fx_fatal("audience_new");
    for (size_t i = 0; i < n; i++) a->uids[i] = uids[i];
    return a;
}

static uint32_t refs_of(const uint32_t *refs)
{
    return __atomic_load_n(refs, __ATOMIC_ACQUIRE);
}

TEST(sessions_per_thread_and_presence_across_threads)
{
    fx f;
    fx_loops(&f, 3);
    fake_session *a = fake_new(&f, 7, 0), *b = fake_new(&f, 7, 1), *c = fake_new(&f, 7, 1);
    fake_session *other = fake_new(&f, 8, 2);
    CHECK(!hub_online(f.hub, 7));
    CHECK_EQ_INT(hub_sessions(f.hub, 7), 0);
    CHECK(fake_add(a));                 /* the first session: online */
    CHECK(!fake_add(b));
    CHECK(!fake_add(c));
    CHECK(fake_add(other));
    CHECK(hub_online(f.hub, 7));
    CHECK_EQ_INT(hub_sessions(f.hub, 7), 3);
    CHECK_EQ_INT(hub_sessions(f.hub, 8), 1);
    /* Each thread's map holds only its own sessions (read on the thread). */
    CHECK(hub_local(&f.srv->threads[0], 7) == &a->s);
    CHECK(a->s.next_local == NULL);
    session *first = hub_local(&f.srv->threads[1], 7);
    CHECK(first == &c->s || first == &b->s);
    CHECK(first && first->next_local && first->next_local->next_local == NULL);
    CHECK(hub_local(&f.srv->threads[2], 7) == NULL);
    CHECK(hub_local(&f.srv->threads[0], 8) == NULL);
    /* Removing from the middle and the head of a thread's list. */
    CHECK(!fake_remove(b));
    CHECK(hub_local(&f.srv->threads[1], 7) == &c->s);
    CHECK(c->s.next_local == NULL);
    CHECK(!fake_remove(a));
    CHECK(hub_local(&f.srv->threads[0], 7) == NULL);
    CHECK_EQ_INT(hub_sessions(f.hub, 7), 1);
    CHECK(fake_remove(c));              /* the last one: offline */
    CHECK(!hub_online(f.hub, 7));
    CHECK(hub_online(f.hub, 8));
    /* A session that was re-added counts once more. */
    a->closed = false;
    CHECK(fake_add(a));
    CHECK(fake_remove(a));
    fx_stop(&f);
    free(a); free(b); free(c); free(other);
}

TEST(removing_a_session_never_added_changes_nothing)
{
    fx f;
    fx_loops(&f, 2);
    fake_session *a = fake_new(&f, 7, 0), *stray = fake_new(&f, 7, 0), *nobody = fake_new(&f, 9, 1);
    CHECK(fake_add(a));
    CHECK(!fake_remove(stray));         /* same user, same thread, not in the list */
    CHECK(!fake_remove(nobody));        /* a user with no session at all */
    CHECK_EQ_INT(hub_sessions(f.hub, 7), 1);
    CHECK_EQ_INT(hub_sessions(f.hub, 9), 0);
    CHECK(hub_local(&f.srv->threads[0], 7) == &a->s);
    CHECK(fake_remove(a));
    fx_stop(&f);
    free(a); free(stray); free(nobody);
}

/* Alice has a session on each thread, Bob one on thread 0, Carol (not in
 * the audience) one on thread 1. */
typedef struct cast {
    fake_session *alice0, *alice1, *bob0, *carol1;
} cast;

static void cast_up(fx *f, cast *k)
{
    k->alice0 = fake_new(f, 1, 0);
    k->alice1 = fake_new(f, 1, 1);
    k->bob0 = fake_new(f, 2, 0);
    k->carol1 = fake_new(f, 3, 1);
    fake_add(k->alice0);
    fake_add(k->alice1);
    fake_add(k->bob0);
    fake_add(k->carol1);
}

static void cast_down(cast *k)
{
    free(k->alice0); free(k->alice1); free(k->bob0); free(k->carol1);
}

static bool no_thread_faults(const cast *k)
{
    const fake_session *all[] = {k->alice0, k->alice1, k->bob0, k->carol1};
    for (int i = 0; i < 4; i++)
        if (all[i]->wrong_thread || all[i]->after_close) return false;
    return true;
}

TEST(send_reaches_each_session_once_except_the_excluded)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    cast k;
    cast_up(&f, &k);
    const uint64_t to[] = {1, 2};
    audience *a = aud_of(2, to);
    event *ev = ev_of(EV_MSG, 5, 1, "{\"type\":\"msg\",\"seq\":1}");
    hub_send(f.hub, a, ev, k.alice0->s.id);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_total(k.alice0), 0);          /* the origin: excluded */
    CHECK_EQ_INT(fake_count(k.alice1, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_count(k.bob0, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_total(k.alice1) + fake_total(k.bob0), 2); /* once each, reliable lane */
    CHECK_EQ_INT(fake_total(k.carol1), 0);          /* not in the audience */
    fake_rec r = fake_nth(k.bob0, 0);
    CHECK(r.json && strcmp(r.json, "{\"type\":\"msg\",\"seq\":1}") == 0);
    CHECK_EQ_INT(r.conv, 5);
    CHECK_EQ_INT(r.seq, 1);
    /* except 0: nobody is excluded. */
    hub_send(f.hub, a, ev, 0);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(k.alice0, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_count(k.alice1, EV_MSG, false), 2);
    CHECK_EQ_INT(fake_count(k.bob0, EV_MSG, false), 2);
    CHECK(no_thread_faults(&k));
    /* The hub dropped every reference it took. */
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    CHECK_EQ_INT(refs_of(&a->refs), 1);
    event_unref(ev);
    audience_unref(a);
    fx_stop(&f);
    cast_down(&k);
}

TEST(lossy_goes_to_the_lossy_lane)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    cast k;
    cast_up(&f, &k);
    const uint64_t to[] = {1, 2, 3};
    audience *a = aud_of(3, to);
    event *ev = ev_of(EV_TYPING, 5, 0, "{\"type\":\"typing\"}");
    hub_send_lossy(f.hub, a, ev, k.bob0->s.id);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(k.alice0, EV_TYPING, true), 1);
    CHECK_EQ_INT(fake_count(k.alice1, EV_TYPING, true), 1);
    CHECK_EQ_INT(fake_count(k.carol1, EV_TYPING, true), 1);
    CHECK_EQ_INT(fake_total(k.bob0), 0);
    CHECK_EQ_INT(fake_count(k.alice0, 0, false), 0);  /* nothing on the reliable lane */
    CHECK_EQ_INT(fake_count(k.carol1, 0, false), 0);
    CHECK(no_thread_faults(&k));
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(a);
    fx_stop(&f);
    cast_down(&k);
}

typedef struct call_log {
    uv_mutex_t mu;
    int order[16];      /* thread ids the calls ran on, -1: NULL (ended) */
    int n;
    int seen_before;    /* events bob0 had when the call ran */
    fake_session *watch;
} call_log;

static void record_call(srv_thread *t, void *arg)
{
    call_log *l = arg;
    uv_mutex_lock(&l->mu);
    if (l->n < 16) l->order[l->n++] = t ? t->id : -1;
    uv_mutex_unlock(&l->mu);
    if (t && l->watch) l->seen_before = fake_total(l->watch);
}

TEST(queue_and_flush_deliver_in_order_once)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    cast k;
    cast_up(&f, &k);
    const uint64_t to[] = {1, 2};
    audience *a = aud_of(2, to);
    event *e1 = ev_of(EV_MSG, 5, 1, "{\"seq\":1}"), *e2 = ev_of(EV_MSG, 5, 2, "{\"seq\":2}");
    call_log l = {.n = 0, .watch = k.bob0};
    uv_mutex_init(&l.mu);
    /* The test thread plays the completer. */
    hub_queue(f.hub, a, e1, k.alice1->s.id);
    hub_queue(f.hub, a, e2, k.alice1->s.id);
    hub_queue_call(f.hub, 0, record_call, &l);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_total(k.bob0), 0);            /* queued, not yet posted */
    CHECK_EQ_INT(l.n, 0);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(k.bob0, EV_MSG, false), 2);
    CHECK_EQ_INT(fake_count(k.alice0, EV_MSG, false), 2);
    CHECK_EQ_INT(fake_total(k.alice1), 0);          /* excluded */
    CHECK_EQ_INT(fake_total(k.carol1), 0);
    CHECK_EQ_INT(fake_nth(k.bob0, 0).seq, 1);       /* in queueing order */
    CHECK_EQ_INT(fake_nth(k.bob0, 1).seq, 2);
    CHECK_EQ_INT(l.n, 1);
    CHECK_EQ_INT(l.order[0], 0);                    /* on the thread it named */
    CHECK_EQ_INT(l.seen_before, 2);                 /* after the parcels queued before it */
    /* A second flush with nothing queued delivers nothing again. */
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(k.bob0, EV_MSG, false), 2);
    CHECK(no_thread_faults(&k));
    CHECK_EQ_INT(refs_of(&e1->refs), 1);
    CHECK_EQ_INT(refs_of(&e2->refs), 1);
    CHECK_EQ_INT(refs_of(&a->refs), 1);
    /* After the threads ended: parcels are dropped, calls run with NULL
     * on the caller's thread so they can free what they carry. */
    fx_stop_threads(&f);
    hub_queue(f.hub, a, e1, 0);
    hub_queue_call(f.hub, 1, record_call, &l);
    hub_flush(f.hub);
    CHECK_EQ_INT(l.n, 2);
    CHECK_EQ_INT(l.order[1], -1);
    CHECK_EQ_INT(refs_of(&e1->refs), 1);
    CHECK_EQ_INT(refs_of(&a->refs), 1);
    hub_send(f.hub, a, e2, 0);                      /* refused posts free their parcels too */
    CHECK_EQ_INT(refs_of(&e2->refs), 1);
    event_unref(e1);
    event_unref(e2);
    audience_unref(a);
    fx_stop(&f);
    uv_mutex_destroy(&l.mu);
    cast_down(&k);
}

TEST(a_sink_that_closes_its_session_during_delivery)
{
    fake_reset();
    fx f;
    fx_loops(&f, 1);
    fake_session *s[3];
    for (int i = 0; i < 3; i++) {
        s[i] = fake_new(&f, 5, 0);
        fake_add(s[i]);
    }
    s[1]->close_on_send = true;   /* the middle of the thread's list */
    s[2]->close_on_send = true;   /* and its head (the last added) */
    const uint64_t to[] = {5};
    audience *a = aud_of(1, to);
    event *ev = ev_of(EV_MSG, 1, 1, "{}");
    hub_send(f.hub, a, ev, 0);
    fx_barrier(&f);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(fake_count(s[i], EV_MSG, false), 1);
    CHECK(s[1]->closed && s[2]->closed && !s[0]->closed);
    CHECK_EQ_INT(s[1]->close_code, WS_CLOSE_TRY_AGAIN);
    CHECK_EQ_INT(hub_sessions(f.hub, 5), 1);
    CHECK(hub_local(&f.srv->threads[0], 5) == &s[0]->s);
    /* The next event reaches only the session left. */
    hub_send(f.hub, a, ev, 0);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(s[0], EV_MSG, false), 2);
    CHECK_EQ_INT(fake_count(s[1], EV_MSG, false), 1);
    CHECK_EQ_INT(fake_count(s[2], EV_MSG, false), 1);
    for (int i = 0; i < 3; i++) CHECK(!s[i]->wrong_thread && !s[i]->after_close);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(a);
    fx_stop(&f);
    for (int i = 0; i < 3; i++) free(s[i]);
}

TEST(odd_audiences_deliver_nothing_wrong)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    cast k;
    cast_up(&f, &k);
    /* Empty, unknown users, uid 0, and an except that matches nobody. */
    audience *empty = aud_of(0, NULL);
    const uint64_t strangers[] = {0, 99, 12345678901ull};
    audience *nobody = aud_of(3, strangers);
    const uint64_t bob[] = {2};
    audience *just_bob = aud_of(1, bob);
    event *ev = ev_of(EV_CONV, 5, 0, "{}");
    hub_send(f.hub, empty, ev, 0);
    hub_send(f.hub, nobody, ev, 0);
    hub_send_lossy(f.hub, nobody, ev, 0);
    hub_queue(f.hub, empty, ev, 0);
    hub_flush(f.hub);
    hub_send(f.hub, just_bob, ev, 0xdead00); /* no such session: Bob still gets it */
    fx_barrier(&f);
    CHECK_EQ_INT(fake_total(k.alice0) + fake_total(k.alice1) + fake_total(k.carol1), 0);
    CHECK_EQ_INT(fake_count(k.bob0, EV_CONV, false), 1);
    CHECK(event_new(EV_MSG, 1, 1, NULL) == NULL);   /* no payload: no event */
    event_unref(NULL);                              /* a no-op */
    audience_unref(NULL);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(empty);
    audience_unref(nobody);
    audience_unref(just_bob);
    fx_stop(&f);
    cast_down(&k);
}

int main(void)
{
    RUN(sessions_per_thread_and_presence_across_threads);
    RUN(removing_a_session_never_added_changes_nothing);
    RUN(send_reaches_each_session_once_except_the_excluded);
    RUN(lossy_goes_to_the_lossy_lane);
    RUN(queue_and_flush_deliver_in_order_once);
    RUN(a_sink_that_closes_its_session_during_delivery);
    RUN(odd_audiences_deliver_nothing_wrong);
    fake_reset();
    return test_summary("hub");
}
