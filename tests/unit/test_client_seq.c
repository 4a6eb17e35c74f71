/* client_seq: gap detection, dedupe by seq, in-order release, cursors. */
#include <stdlib.h>

#include "client_seq.h"
#include "test.h"

static long live;
static void *c_malloc(void *ctx, size_t n) { (void)ctx; void *p = malloc(n); if (p) live++; return p; }
static void *c_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    void *q = realloc(p, n);
    if (q && !p) live++;
    return q;
}
static void c_free(void *ctx, void *p) { (void)ctx; if (p) { live--; free(p); } }
static const parley_allocator A = {c_malloc, c_realloc, c_free, NULL};

/* Items are seq numbers boxed in pointers. */
#define ITEM(s) ((void *)(uintptr_t)(s))

/* The "app": what reached it, in order. */
static uint64_t got[4096];
static int ngot;

/* Feeds a seq the way the client does: deliver / hold / drop, then drain. */
static int feed(client_seq *s, uint64_t seq)
{
    int v = client_seq_offer(s, &A, seq, ITEM(seq));
    if (v == CLIENT_SEQ_DELIVER) {
        got[ngot++] = seq;
        void *it;
        uint64_t q;
        while ((it = client_seq_pop(s, &q))) {
            CHECK_EQ_INT((uint64_t)(uintptr_t)it, q);
            got[ngot++] = q;
        }
    }
    return v;
}

static void count_item(void *arg, void *item) { (void)item; (*(int *)arg)++; }

TEST(in_order_and_dup)
{
    client_seq s;
    client_seq_init(&s, 0);
    ngot = 0;
    client_seq_start(&s, 0);
    CHECK_EQ_INT(feed(&s, 1), CLIENT_SEQ_DELIVER);
    CHECK_EQ_INT(feed(&s, 2), CLIENT_SEQ_DELIVER);
    CHECK_EQ_INT(feed(&s, 2), CLIENT_SEQ_DUP);
    CHECK_EQ_INT(feed(&s, 1), CLIENT_SEQ_DUP);
    CHECK_EQ_INT(s.highest, 2);
    CHECK_EQ_INT(ngot, 2);
    CHECK(!client_seq_want_sync(&s));
    client_seq_clear(&s, &A, NULL, NULL);
    CHECK_EQ_INT(live, 0);
}

TEST(untracked_starts_at_first_seen)
{
    client_seq s;
    client_seq_init(&s, 0);
    ngot = 0;
    CHECK_EQ_INT(feed(&s, 57), CLIENT_SEQ_DELIVER);
    CHECK_EQ_INT(s.highest, 57);
    CHECK_EQ_INT(feed(&s, 56), CLIENT_SEQ_DUP);
    CHECK_EQ_INT(feed(&s, 58), CLIENT_SEQ_DELIVER);
    /* start() only moves forward once known */
    client_seq_start(&s, 10);
    CHECK_EQ_INT(s.highest, 58);
    client_seq_start(&s, 60);
    CHECK_EQ_INT(s.highest, 60);
    client_seq_clear(&s, &A, NULL, NULL);
}

TEST(gap_triggers_sync_and_fill_releases_in_order)
{
    client_seq s;
    client_seq_init(&s, 0);
    ngot = 0;
    client_seq_start(&s, 5);
    /* 8 skips ahead: held, and a sync after 5 is wanted */
    CHECK_EQ_INT(feed(&s, 8), CLIENT_SEQ_HELD);
    CHECK(client_seq_want_sync(&s));
    s.syncing = true; /* the caller sent sync after=5 */
    CHECK(!client_seq_want_sync(&s));
    /* live 10 and a duplicate 8 arrive meanwhile */
    CHECK_EQ_INT(feed(&s, 10), CLIENT_SEQ_HELD);
    CHECK_EQ_INT(feed(&s, 8), CLIENT_SEQ_DUP);
    CHECK_EQ_INT(ngot, 0);
    /* the sync answer: 6..9 (8 again) */
    uint64_t before = s.highest;
    for (uint64_t q = 6; q <= 9; q++) feed(&s, q);
    CHECK(!client_seq_sync_done(&s, false, before));
    /* 6,7,8,9 then the held 10: in order, each once */
    CHECK_EQ_INT(ngot, 5);
    for (int i = 0; i < ngot; i++) CHECK_EQ_INT(got[i], (uint64_t)(6 + i));
    CHECK_EQ_INT(s.highest, 10);
    CHECK_EQ_INT(s.nheld, 0);
    CHECK(!client_seq_want_sync(&s));
    client_seq_clear(&s, &A, NULL, NULL);
    CHECK_EQ_INT(live, 0);
}

TEST(sync_paging_and_progress)
{
    client_seq s;
    client_seq_init(&s, 0);
    ngot = 0;
    client_seq_start(&s, 0);
    feed(&s, 1000); /* held; a sync after 0 */
    s.syncing = true;
    uint64_t before = s.highest;
    for (uint64_t q = 1; q <= 500; q++) feed(&s, q);
    CHECK(client_seq_sync_done(&s, true, before)); /* more: sync again */
    s.syncing = true;
    before = s.highest;
    for (uint64_t q = 501; q <= 990; q++) feed(&s, q);
    /* "more":false but 991..999 are missing and we progressed: ask again
     * (they were committed after the answer was read) */
    CHECK(client_seq_sync_done(&s, false, before));
    s.syncing = true;
    before = s.highest;
    for (uint64_t q = 991; q <= 999; q++) feed(&s, q);
    CHECK(!client_seq_sync_done(&s, false, before));
    CHECK_EQ_INT(ngot, 1000);
    for (int i = 0; i < ngot; i++) CHECK_EQ_INT(got[i], (uint64_t)(i + 1));
    client_seq_clear(&s, &A, NULL, NULL);
    CHECK_EQ_INT(live, 0);
}

TEST(unfillable_gap_is_skipped)
{
    client_seq s;
    client_seq_init(&s, 0);
    ngot = 0;
    client_seq_start(&s, 3);
    feed(&s, 6);
    s.syncing = true;
    /* the answer brings nothing new and the server has no 4, 5 */
    CHECK(!client_seq_sync_done(&s, false, s.highest));
    void *it;
    uint64_t q;
    while ((it = client_seq_pop(&s, &q))) got[ngot++] = q;
    CHECK_EQ_INT(ngot, 1);
    CHECK_EQ_INT(got[0], 6);
    CHECK_EQ_INT(s.highest, 6);
    client_seq_clear(&s, &A, NULL, NULL);
    CHECK_EQ_INT(live, 0);
}

TEST(hold_is_bounded)
{
    client_seq s;
    client_seq_init(&s, 4);
    ngot = 0;
    client_seq_start(&s, 0);
    for (uint64_t q = 10; q < 14; q++) CHECK_EQ_INT(feed(&s, q), CLIENT_SEQ_HELD);
    CHECK_EQ_INT(feed(&s, 20), CLIENT_SEQ_DROPPED); /* the caller frees it */
    CHECK(s.lost);
    s.syncing = true;
    uint64_t before = s.highest;
    for (uint64_t q = 1; q <= 20; q++) feed(&s, q);
    CHECK(!client_seq_sync_done(&s, false, before));
    CHECK(!s.lost);
    CHECK_EQ_INT(ngot, 20);
    for (int i = 0; i < ngot; i++) CHECK_EQ_INT(got[i], (uint64_t)(i + 1));
    client_seq_clear(&s, &A, NULL, NULL);
    CHECK_EQ_INT(live, 0);
}

TEST(stale_after_start_and_clear)
{
    client_seq s;
    client_seq_init(&s, 0);
    client_seq_start(&s, 0);
    client_seq_offer(&s, &A, 5, ITEM(5));
    client_seq_offer(&s, &A, 9, ITEM(9));
    client_seq_start(&s, 7); /* the app already holds up to 7 */
    CHECK(client_seq_pop_stale(&s) == ITEM(5));
    CHECK(client_seq_pop_stale(&s) == NULL);
    int n = 0;
    client_seq_clear(&s, &A, count_item, &n);
    CHECK_EQ_INT(n, 1); /* 9 handed back */
    CHECK_EQ_INT(live, 0);
}

TEST(random_order_each_once)
{
    /* a shuffled stream with duplicates ends up delivered 1..N in order */
    for (int round = 0; round < 50; round++) {
        client_seq s;
        client_seq_init(&s, 0);
        client_seq_start(&s, 0);
        ngot = 0;
        uint64_t n = 1 + test_rand() % 200, seqs[600];
        int k = 0;
        for (uint64_t q = 1; q <= n; q++) {
            seqs[k++] = q;
            if (test_rand() % 3 == 0) seqs[k++] = q; /* duplicate */
        }
        for (int i = k - 1; i > 0; i--) {
            int j = (int)(test_rand() % (uint64_t)(i + 1));
            uint64_t t = seqs[i]; seqs[i] = seqs[j]; seqs[j] = t;
        }
        for (int i = 0; i < k; i++) feed(&s, seqs[i]);
        CHECK_EQ_INT(ngot, n);
        for (int i = 0; i < ngot; i++) CHECK_EQ_INT(got[i], (uint64_t)(i + 1));
        CHECK_EQ_INT(s.nheld, 0);
        client_seq_clear(&s, &A, NULL, NULL);
    }
    CHECK_EQ_INT(live, 0);
}

TEST(cursors_forward_only)
{
    client_cursor c = {0, 0};
    CHECK(!client_cursor_due(&c));
    CHECK(client_cursor_move(&c, 5));
    CHECK(client_cursor_due(&c));
    client_cursor_sent(&c);
    CHECK(!client_cursor_due(&c));
    CHECK(!client_cursor_move(&c, 3)); /* lower: ignored */
    CHECK(!client_cursor_move(&c, 5));
    CHECK_EQ_INT(c.want, 5);
    CHECK(client_cursor_move(&c, 9));
    CHECK_EQ_INT(c.want, 9);
    client_cursor_sent(&c);
    client_cursor_reconnected(&c); /* sent again once after a reconnect */
    CHECK(client_cursor_due(&c));
    CHECK_EQ_INT(c.want, 9);
}

int main(void)
{
    test_seed();
    RUN(in_order_and_dup);
    RUN(untracked_starts_at_first_seen);
    RUN(gap_triggers_sync_and_fill_releases_in_order);
    RUN(sync_paging_and_progress);
    RUN(unfillable_gap_is_skipped);
    RUN(hold_is_bounded);
    RUN(stale_after_start_and_clear);
    RUN(random_order_each_once);
    RUN(cursors_forward_only);
    return test_summary("client_seq");
}
