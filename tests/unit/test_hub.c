/* Unit tests of the hub (src/chat/hub.c) over real I/O loops without
 * listeners (fixture.h) and sessions with a recording sink (fake_sink.h):
 * the per-thread registry, presence across threads, and delivery of each
 * event once to each session of the audience but the excluded one, on the
 * right lane, with a sink that closes its session during delivery; and
 * fan-out by conversation: a message goes only to the threads with a
 * member online, the route is reused until the member set or a member's
 * presence on a thread changes, and its memory stays within its bounds. */
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

/* ---- fan-out by conversation (hub_queue_conv) ------------------------------ */

static hub_route_stats stats_of(fx *f)
{
    hub_route_stats st;
    hub_route_stats_get(f->hub, &st);
    return st;
}

/* Parcels the hub holds for ev (before a flush): its refs but the test's. */
static int parcels_of(event *ev)
{
    return (int)refs_of(&ev->refs) - 1;
}

TEST(conv_goes_only_to_threads_with_a_member_online)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    /* Members 1 and 2 on thread 0; 3 (not a member) on thread 1. */
    fake_session *m1 = fake_new(&f, 1, 0), *m2 = fake_new(&f, 2, 0), *x3 = fake_new(&f, 3, 1);
    fake_add(m1); fake_add(m2); fake_add(x3);
    const uint64_t ids[] = {1, 2};
    audience *members = aud_of(2, ids);
    event *ev = ev_of(EV_MSG, 9, 1, "{\"seq\":1}");
    hub_queue_conv(f.hub, 9, 5, members, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 1);               /* thread 0 only */
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_total(x3), 0);
    /* The route holds its own copy: the caller's list may go. */
    CHECK_EQ_INT(refs_of(&members->refs), 1);
    audience_unref(members);
    hub_route_stats st = stats_of(&f);
    CHECK_EQ_INT(st.routes, 1);
    CHECK_EQ_INT(st.builds, 1);
    CHECK_EQ_INT(st.uncached, 0);
    /* A conversation with nobody online queues nothing at all. */
    const uint64_t away[] = {7, 8};
    audience *nobody = aud_of(2, away);
    hub_queue_conv(f.hub, 10, 1, nobody, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 0);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_total(m1) + fake_total(m2) + fake_total(x3), 2);
    CHECK_EQ_INT(stats_of(&f).routes, 2);
    CHECK(!m1->wrong_thread && !m2->wrong_thread && !x3->wrong_thread);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(nobody);
    fx_stop(&f);
    free(m1); free(m2); free(x3);
}

TEST(conv_route_is_reused_until_the_member_set_changes)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    fake_session *m1 = fake_new(&f, 1, 0), *m4 = fake_new(&f, 4, 1);
    fake_add(m1); fake_add(m4);
    const uint64_t v1[] = {1, 2}, v2[] = {4, 1, 2}, v2b[] = {2, 4, 1};
    audience *a1 = aud_of(2, v1), *a2 = aud_of(3, v2), *a2b = aud_of(3, v2b);
    event *e1 = ev_of(EV_MSG, 9, 1, "{\"seq\":1}"), *e2 = ev_of(EV_MSG, 9, 2, "{\"seq\":2}");
    /* Versioned: the same version is a hit, another one a rebuild. */
    hub_queue_conv(f.hub, 9, 1, a1, e1, 0);
    hub_queue_conv(f.hub, 9, 1, a1, e1, 0);
    hub_route_stats st = stats_of(&f);
    CHECK_EQ_INT(st.builds, 1);
    CHECK_EQ_INT(st.hits, 1);
    CHECK_EQ_INT(parcels_of(e1), 2);               /* thread 0, twice */
    hub_queue_conv(f.hub, 9, 2, a2, e2, 0);        /* 4 joined: on thread 1 */
    st = stats_of(&f);
    CHECK_EQ_INT(st.builds, 2);
    CHECK_EQ_INT(st.routes, 1);
    CHECK_EQ_INT(parcels_of(e2), 2);               /* both threads */
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 3);
    CHECK_EQ_INT(fake_count(m4, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_nth(m4, 0).seq, 2);
    /* Unversioned: the same members in any order are a hit, others a rebuild. */
    hub_queue_conv(f.hub, 11, HUB_UNVERSIONED, a2, e1, 0);
    hub_queue_conv(f.hub, 11, HUB_UNVERSIONED, a2b, e1, 0);
    st = stats_of(&f);
    CHECK_EQ_INT(st.builds, 3);
    CHECK_EQ_INT(st.hits, 2);
    hub_queue_conv(f.hub, 11, HUB_UNVERSIONED, a1, e2, 0); /* 4 left */
    st = stats_of(&f);
    CHECK_EQ_INT(st.builds, 4);
    CHECK_EQ_INT(parcels_of(e2), 1);               /* thread 0 only now */
    /* A versioned call after unversioned ones rebuilds (and back). */
    hub_queue_conv(f.hub, 11, 3, a1, e2, 0);
    hub_queue_conv(f.hub, 11, HUB_UNVERSIONED, a1, e2, 0);
    CHECK_EQ_INT(stats_of(&f).builds, 6);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 3 + 5);
    CHECK_EQ_INT(fake_count(m4, EV_MSG, false), 1 + 2);
    CHECK_EQ_INT(refs_of(&e1->refs), 1);
    CHECK_EQ_INT(refs_of(&e2->refs), 1);
    event_unref(e1); event_unref(e2);
    audience_unref(a1); audience_unref(a2); audience_unref(a2b);
    fx_stop(&f);
    free(m1); free(m4);
}

TEST(conv_route_follows_sessions_opening_and_closing)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    fake_session *m1 = fake_new(&f, 1, 0), *m5 = fake_new(&f, 5, 1), *m1b = fake_new(&f, 1, 0);
    fake_session *x6 = fake_new(&f, 6, 1);
    fake_add(m1);
    const uint64_t ids[] = {1, 5, 7};
    audience *a = aud_of(3, ids);
    event *ev = ev_of(EV_MSG, 9, 1, "{}");
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 1);
    /* 5 comes online on thread 1: the route's part there gains it. */
    fake_add(m5);
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 3);
    hub_route_stats st = stats_of(&f);
    CHECK_EQ_INT(st.builds, 1);
    CHECK_EQ_INT(st.replays, 1);
    /* A second session of a user already on the thread, and a stranger
     * coming and going: the route needs nothing new for the first, and the
     * second changes no part (both still reach the right sessions). */
    fake_add(m1b);
    fake_add(x6);
    fake_remove(x6);
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 5);
    st = stats_of(&f);
    CHECK_EQ_INT(st.builds, 1);
    CHECK_EQ_INT(st.replays, 2);                   /* thread 1's journal: 6 came and went */
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 3);
    CHECK_EQ_INT(fake_count(m5, EV_MSG, false), 2);
    CHECK_EQ_INT(fake_count(m1b, EV_MSG, false), 3); /* open when they were delivered */
    CHECK_EQ_INT(fake_total(x6), 0);
    /* 5 goes offline: thread 1 gets no post any more. */
    fake_remove(m5);
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 1);
    hub_flush(f.hub);
    fx_barrier(&f);
    /* One of 1's two sessions closes: the other still gets it. */
    fake_remove(m1);
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 1);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 4);
    CHECK_EQ_INT(fake_count(m1b, EV_MSG, false), 5);
    CHECK_EQ_INT(fake_count(m5, EV_MSG, false), 2);
    CHECK_EQ_INT(stats_of(&f).builds, 1);
    CHECK(!m1->after_close && !m5->after_close && !m1->wrong_thread && !m5->wrong_thread);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(a);
    fx_stop(&f);
    free(m1); free(m5); free(m1b); free(x6);
}

TEST(conv_route_rescans_after_the_journal_overran)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    uint64_t ids[64];
    for (int i = 0; i < 64; i++) ids[i] = 100 + (uint64_t)i;
    audience *a = aud_of(64, ids);
    fake_session *m = fake_new(&f, 100, 1), *x = fake_new(&f, 999, 1);
    event *ev = ev_of(EV_MSG, 9, 1, "{}");
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 0);
    /* More presence changes on thread 1 than its journal holds. */
    for (unsigned i = 0; i < HUB_JOURNAL / 2 + 8; i++) {
        x->closed = false;
        fake_add(x);
        fake_remove(x);
    }
    fake_add(m);
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    CHECK_EQ_INT(parcels_of(ev), 1);
    hub_route_stats st = stats_of(&f);
    CHECK_EQ_INT(st.rescans, 1);
    CHECK_EQ_INT(st.replays, 0);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_total(x), 0);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(a);
    fx_stop(&f);
    free(m); free(x);
}

TEST(conv_parts_queued_are_never_changed_under_a_parcel)
{
    fake_reset();
    fx f;
    fx_loops(&f, 1);
    fake_session *m1 = fake_new(&f, 1, 0), *m2 = fake_new(&f, 2, 0);
    fake_add(m1);
    const uint64_t ids[] = {1, 2};
    audience *a = aud_of(2, ids);
    event *e1 = ev_of(EV_MSG, 9, 1, "{\"seq\":1}"), *e2 = ev_of(EV_MSG, 9, 2, "{\"seq\":2}");
    hub_queue_conv(f.hub, 9, 1, a, e1, 0);
    fake_add(m2);                      /* after e1 was queued, before the flush */
    hub_queue_conv(f.hub, 9, 1, a, e2, 0);
    hub_flush(f.hub);
    fx_barrier(&f);
    /* e1's audience was the part as it was: 2 was not in it (a part that
     * a parcel holds is copied, not changed). */
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 2);
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_nth(m2, 0).seq, 2);
    /* With no parcel holding it, the part changes in place: m2 leaves
     * and comes back, and the next messages reach exactly who is there. */
    fake_remove(m2);
    hub_queue_conv(f.hub, 9, 1, a, e1, 0);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 1);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 3);
    CHECK_EQ_INT(refs_of(&e1->refs), 1);
    CHECK_EQ_INT(refs_of(&e2->refs), 1);
    event_unref(e1); event_unref(e2);
    audience_unref(a);
    fx_stop(&f);
    free(m1); free(m2);
}

TEST(conv_keeps_the_order_of_everything_queued)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    fake_session *s1 = fake_new(&f, 1, 0), *s2 = fake_new(&f, 2, 1), *s3 = fake_new(&f, 3, 1);
    fake_add(s1); fake_add(s2); fake_add(s3);
    const uint64_t before[] = {1, 2, 3}, after[] = {1, 3};
    audience *a = aud_of(3, before), *b = aud_of(2, after);
    const uint64_t just2[] = {2};
    audience *removed = aud_of(1, just2);
    event *m1 = ev_of(EV_MSG, 9, 1, "{\"seq\":1}"), *m2 = ev_of(EV_MSG, 9, 2, "{\"seq\":2}");
    event *rm = ev_of(EV_REMOVED, 9, 0, "{\"type\":\"removed\"}");
    event *cv = ev_of(EV_CONV, 9, 0, "{\"type\":\"conv\"}");
    event *m3 = ev_of(EV_MSG, 9, 3, "{\"seq\":3}");
    /* One batch: two messages, 2 is removed (a one-off), the conv event to
     * those who stay, a message to the new member set. */
    hub_queue_conv(f.hub, 9, 1, a, m1, s1->s.id);
    hub_queue_conv(f.hub, 9, 1, a, m2, s1->s.id);
    hub_queue(f.hub, removed, rm, 0);
    hub_queue_conv(f.hub, 9, 2, b, cv, 0);
    hub_queue_conv(f.hub, 9, 2, b, m3, s1->s.id);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_total(s2), 3);
    CHECK_EQ_INT(fake_nth(s2, 0).seq, 1);
    CHECK_EQ_INT(fake_nth(s2, 1).seq, 2);
    CHECK_EQ_INT(fake_nth(s2, 2).kind, EV_REMOVED);
    CHECK_EQ_INT(fake_total(s3), 4);
    CHECK_EQ_INT(fake_nth(s3, 0).seq, 1);
    CHECK_EQ_INT(fake_nth(s3, 1).seq, 2);
    CHECK_EQ_INT(fake_nth(s3, 2).kind, EV_CONV);
    CHECK_EQ_INT(fake_nth(s3, 3).seq, 3);
    CHECK_EQ_INT(fake_total(s1), 1);               /* the sender: only the conv event */
    CHECK_EQ_INT(fake_nth(s1, 0).kind, EV_CONV);
    event *all[] = {m1, m2, rm, cv, m3};
    for (int i = 0; i < 5; i++) {
        CHECK_EQ_INT(refs_of(&all[i]->refs), 1);
        event_unref(all[i]);
    }
    audience_unref(a); audience_unref(b); audience_unref(removed);
    fx_stop(&f);
    free(s1); free(s2); free(s3);
}

TEST(conv_routes_stay_within_their_bounds)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    fake_session *m1 = fake_new(&f, 1, 0), *m2 = fake_new(&f, 2, 1);
    fake_add(m1); fake_add(m2);
    const uint64_t ids[] = {1, 2};
    audience *a = aud_of(2, ids);
    event *ev = ev_of(EV_MSG, 9, 1, "{}");
    hub_limits lim = {2, 64, 60000};
    hub_set_limits(f.hub, &lim);
    /* Least recently used goes first: 21, 22, 21, then 23 evicts 22. */
    hub_queue_conv(f.hub, 21, 1, a, ev, 0);
    hub_queue_conv(f.hub, 22, 1, a, ev, 0);
    hub_queue_conv(f.hub, 21, 1, a, ev, 0);
    hub_queue_conv(f.hub, 23, 1, a, ev, 0);
    hub_route_stats st = stats_of(&f);
    CHECK_EQ_INT(st.routes, 2);
    CHECK_EQ_INT(st.evictions, 1);
    CHECK_EQ_INT(st.builds, 3);
    hub_queue_conv(f.hub, 21, 1, a, ev, 0);        /* kept */
    CHECK_EQ_INT(stats_of(&f).builds, 3);
    hub_queue_conv(f.hub, 22, 1, a, ev, 0);        /* gone: built again */
    CHECK_EQ_INT(stats_of(&f).builds, 4);
    CHECK(stats_of(&f).uids <= 64);
    /* A member list over a quarter of max_uids is not cached, still delivered. */
    uint64_t big[20];
    for (int i = 0; i < 20; i++) big[i] = (uint64_t)i + 1;
    audience *large = aud_of(20, big);
    hub_queue_conv(f.hub, 24, 1, large, ev, 0);
    st = stats_of(&f);
    CHECK_EQ_INT(st.uncached, 1);
    CHECK_EQ_INT(st.routes, 2);
    /* Fewer uids allowed: routes go at once. */
    hub_limits small = {2, 8, 60000};
    hub_set_limits(f.hub, &small);
    CHECK(stats_of(&f).uids <= 8);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 7);
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 7);
    /* max_routes 0: nothing is cached, everything still delivered. */
    hub_limits none = {0, 64, 60000};
    hub_set_limits(f.hub, &none);
    CHECK_EQ_INT(stats_of(&f).routes, 0);
    hub_queue_conv(f.hub, 21, 1, a, ev, 0);
    st = stats_of(&f);
    CHECK_EQ_INT(st.routes, 0);
    CHECK_EQ_INT(st.uids, 0);
    CHECK_EQ_INT(st.uncached, 2);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 8);
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 8);
    /* Idle routes go at a flush (idle_ms 0: every route is idle). */
    hub_limits idle = {2, 64, 0};
    hub_set_limits(f.hub, &idle);
    hub_queue_conv(f.hub, 25, 1, a, ev, 0);
    CHECK(stats_of(&f).routes >= 1);
    hub_flush(f.hub);
    st = stats_of(&f);
    CHECK_EQ_INT(st.routes, 0);
    CHECK_EQ_INT(st.uids, 0);
    fx_barrier(&f);                                 /* the parcels outlived their route */
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 9);
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 9);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(a); audience_unref(large);
    fx_stop(&f);
    free(m1); free(m2);
}

TEST(conv_odd_input_delivers_nothing_wrong)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    fake_session *m1 = fake_new(&f, 1, 0), *m2 = fake_new(&f, 2, 1);
    fake_add(m1); fake_add(m2);
    const uint64_t dup[] = {1, 0, 1, 2, 2, 1, 12345678901ull};
    audience *d = aud_of(7, dup), *empty = aud_of(0, NULL);
    event *ev = ev_of(EV_MSG, 9, 1, "{}");
    hub_queue_conv(f.hub, 9, 1, NULL, ev, 0);      /* no members: nothing */
    hub_queue_conv(f.hub, 9, 1, d, NULL, 0);       /* no event: nothing */
    CHECK_EQ_INT(parcels_of(ev), 0);
    CHECK_EQ_INT(stats_of(&f).routes, 0);
    hub_queue_conv(f.hub, 9, 1, empty, ev, 0);     /* nobody */
    CHECK_EQ_INT(parcels_of(ev), 0);
    hub_queue_conv(f.hub, 9, 2, d, ev, 0xdead00);  /* duplicates and uid 0 */
    CHECK_EQ_INT(parcels_of(ev), 2);
    hub_queue_conv(f.hub, 0, 1, d, ev, 0);         /* no conversation: as hub_queue */
    CHECK_EQ_INT(parcels_of(ev), 4);
    CHECK_EQ_INT(stats_of(&f).uncached, 1);
    hub_flush(f.hub);
    fx_barrier(&f);
    CHECK_EQ_INT(fake_count(m1, EV_MSG, false), 1 + 3); /* hub_queue keeps a list's duplicates */
    CHECK_EQ_INT(fake_count(m2, EV_MSG, false), 1 + 2);
    /* After the threads ended: queued parcels are dropped with their refs. */
    fx_stop_threads(&f);
    hub_queue_conv(f.hub, 9, 2, d, ev, 0);
    hub_flush(f.hub);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(d); audience_unref(empty);
    fx_stop(&f);
    free(m1); free(m2);
}

/* Opens or closes the session on its thread (posted, not waited for). */
static void toggle_on(srv_thread *t, void *arg)
{
    fake_session *fs = arg;
    if (fs->closed) {
        fs->closed = false;
        hub_session_add(fs->f->hub, t, &fs->s);
    } else {
        fs->closed = true;
        hub_session_remove(fs->f->hub, t, &fs->s);
    }
}

TEST(conv_fan_out_races_sessions_opening_and_closing)
{
    fake_reset();
    test_seed();
    fx f;
    fx_loops(&f, 2);
    enum { N = 16 };
    fake_session *s[N];
    uint64_t ids[N / 2];
    for (int i = 0; i < N; i++) {
        s[i] = fake_new(&f, 1 + (uint64_t)i / 2, i % 2); /* each user on both threads */
        s[i]->closed = true;
    }
    for (int i = 0; i < N / 2; i++) ids[i] = 1 + (uint64_t)i;
    audience *a = aud_of(N / 2, ids);
    event *ev = ev_of(EV_MSG, 9, 1, "{}");
    /* The test thread plays the completer while the threads open and close. */
    for (int round = 0; round < 300; round++) {
        fake_session *x = s[test_rand() % N];
        if (srv_post(&f.srv->threads[x->thread], toggle_on, x) != ERR_OK) fx_fatal("srv_post");
        hub_queue_conv(f.hub, 9, 1, a, ev, 0);
        if (round % 3 == 0) hub_flush(f.hub);
    }
    hub_flush(f.hub);
    fx_barrier(&f);
    int before[N];
    for (int i = 0; i < N; i++) before[i] = fake_count(s[i], EV_MSG, false);
    /* Settled: one more message reaches exactly the open sessions, once. */
    hub_queue_conv(f.hub, 9, 1, a, ev, 0);
    hub_flush(f.hub);
    fx_barrier(&f);
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(fake_count(s[i], EV_MSG, false) - before[i], s[i]->closed ? 0 : 1);
        CHECK(!s[i]->wrong_thread && !s[i]->after_close);
    }
    CHECK_EQ_INT(stats_of(&f).builds, 1);
    for (int i = 0; i < N; i++)
        if (!s[i]->closed) fake_remove(s[i]);
    CHECK_EQ_INT(refs_of(&ev->refs), 1);
    event_unref(ev);
    audience_unref(a);
    fx_stop(&f);
    for (int i = 0; i < N; i++) free(s[i]);
}

/* The remote hook (the bus): every event the hub is given goes to it once,
 * with the whole audience, from every entry point; hub_send_here and
 * calls do not. */
typedef struct remote_log {
    int calls;
    uint32_t last_n;
    uint8_t last_kind;
} remote_log;

static void record_remote(void *ctx, audience *to, event *ev)
{
    remote_log *r = ctx;
    r->calls++;
    r->last_n = to->n;
    r->last_kind = ev->kind;
}

static void nothing(srv_thread *t, void *arg) {}

TEST(every_event_leaves_for_the_remote_once)
{
    fake_reset();
    fx f;
    fx_loops(&f, 2);
    cast k;
    cast_up(&f, &k);
    remote_log r = {0};
    hub_set_remote(f.hub, record_remote, &r);
    const uint64_t to[] = {1, 2, 3};
    audience *a = aud_of(3, to);
    event *ev = ev_of(EV_MSG, 5, 1, "{\"type\":\"msg\",\"seq\":1}");
    hub_send(f.hub, a, ev, 0);
    CHECK(r.calls == 1 && r.last_n == 3 && r.last_kind == EV_MSG);
    event *ty = ev_of(EV_TYPING, 5, 0, "{\"type\":\"typing\"}");
    hub_send_lossy(f.hub, a, ty, 0);
    CHECK(r.calls == 2 && r.last_kind == EV_TYPING);
    hub_queue(f.hub, a, ev, 0);
    CHECK_EQ_INT(r.calls, 3);
    hub_queue_conv(f.hub, 5, 1, a, ev, 0);   /* a route built */
    hub_queue_conv(f.hub, 5, 1, a, ev, 0);   /* the route reused */
    hub_queue_conv(f.hub, 0, 1, a, ev, 0);   /* no conversation: sent uncached, still once */
    CHECK(r.calls == 6 && r.last_n == 3);
    hub_queue_call(f.hub, 0, nothing, NULL);
    hub_flush(f.hub);
    CHECK_EQ_INT(r.calls, 6);
    /* what came from another node is delivered here only */
    hub_send_here(f.hub, a, ev, false);
    hub_send_here(f.hub, a, ty, true);
    fx_barrier(&f);
    CHECK_EQ_INT(r.calls, 6);
    /* bob0 (uid 2): 1 send + 1 queue + 3 conv + 1 here on the reliable
     * lane; the typing twice on the lossy one */
    CHECK_EQ_INT(fake_count(k.bob0, EV_MSG, false), 6);
    CHECK_EQ_INT(fake_count(k.bob0, EV_TYPING, true), 2);
    CHECK(no_thread_faults(&k));
    hub_set_remote(f.hub, NULL, NULL);
    hub_send(f.hub, a, ev, 0);
    fx_barrier(&f);
    CHECK_EQ_INT(r.calls, 6);
    event_unref(ev);
    event_unref(ty);
    audience_unref(a);
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
    RUN(conv_goes_only_to_threads_with_a_member_online);
    RUN(conv_route_is_reused_until_the_member_set_changes);
    RUN(conv_route_follows_sessions_opening_and_closing);
    RUN(conv_route_rescans_after_the_journal_overran);
    RUN(conv_parts_queued_are_never_changed_under_a_parcel);
    RUN(conv_keeps_the_order_of_everything_queued);
    RUN(conv_routes_stay_within_their_bounds);
    RUN(conv_odd_input_delivers_nothing_wrong);
    RUN(conv_fan_out_races_sessions_opening_and_closing);
    RUN(every_event_leaves_for_the_remote_once);
    fake_reset();
    return test_summary("hub");
}
