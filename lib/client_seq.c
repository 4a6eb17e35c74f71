#include "client_seq.h"

#include <string.h>

void client_seq_init(client_seq *s, size_t max_held)
{
    memset(s, 0, sizeof *s);
    s->max_held = max_held ? max_held : 1024;
}

void client_seq_start(client_seq *s, uint64_t highest)
{
    if (!s->known || highest > s->highest) s->highest = highest;
    s->known = true;
}

/* Index of the first held seq >= seq. */
static size_t lower_bound(const client_seq *s, uint64_t seq)
{
    size_t lo = 0, hi = s->nheld;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->held[mid].seq < seq) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int client_seq_offer(client_seq *s, const parley_allocator *a, uint64_t seq, void *item)
{
    if (!s->known) {
        s->known = true;
        s->highest = seq;
        return CLIENT_SEQ_DELIVER;
    }
    if (seq <= s->highest) return CLIENT_SEQ_DUP;
    if (seq == s->highest + 1) {
        s->highest = seq;
        return CLIENT_SEQ_DELIVER;
    }
    size_t i = lower_bound(s, seq);
    if (i < s->nheld && s->held[i].seq == seq) return CLIENT_SEQ_DUP;
    if (s->nheld >= s->max_held) {
        s->lost = true;
        return CLIENT_SEQ_DROPPED;
    }
    if (s->nheld == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        if (cap > s->max_held) cap = s->max_held;
        client_seq_held *h = a->realloc_fn(a->ctx, s->held, cap * sizeof *h);
        if (!h) {
            s->lost = true;
            return ERR_NOMEM;
        }
        s->held = h;
        s->cap = cap;
    }
    memmove(&s->held[i + 1], &s->held[i], (s->nheld - i) * sizeof s->held[0]);
    s->held[i].seq = seq;
    s->held[i].item = item;
    s->nheld++;
    return CLIENT_SEQ_HELD;
}

static void *take_first(client_seq *s)
{
    void *item = s->held[0].item;
    memmove(&s->held[0], &s->held[1], (s->nheld - 1) * sizeof s->held[0]);
    s->nheld--;
    return item;
}

void *client_seq_pop(client_seq *s, uint64_t *seq)
{
    if (s->nheld == 0 || s->held[0].seq != s->highest + 1) return NULL;
    s->highest = s->held[0].seq;
    if (seq) *seq = s->highest;
    return take_first(s);
}

void *client_seq_pop_stale(client_seq *s)
{
    if (s->nheld == 0 || s->held[0].seq > s->highest) return NULL;
    return take_first(s);
}

bool client_seq_want_sync(const client_seq *s)
{
    return s->known && !s->syncing && (s->nheld > 0 || s->lost);
}

bool client_seq_sync_done(client_seq *s, bool more, uint64_t before)
{
    s->syncing = false;
    if (more) return true;
    s->lost = false; /* a complete answer covered whatever was dropped */
    if (s->nheld == 0) return false;
    if (s->highest > before) return true; /* progress: fetch what came since */
    /* No progress and still a gap: the server does not have those seqs. */
    s->highest = s->held[0].seq - 1;
    return false;
}

void client_seq_clear(client_seq *s, const parley_allocator *a,
                      void (*fn)(void *arg, void *item), void *arg)
{
    for (size_t i = 0; i < s->nheld; i++)
        if (fn) fn(arg, s->held[i].item);
    a->free_fn(a->ctx, s->held);
    s->held = NULL;
    s->nheld = s->cap = 0;
}

bool client_cursor_move(client_cursor *c, uint64_t seq)
{
    if (seq <= c->want) return false;
    c->want = seq;
    return true;
}
