#include "lib/stats.h"

void stats_add(stats *s, int k, uint64_t d)
{
    __atomic_fetch_add(&s->c[k], d, __ATOMIC_RELAXED);
}

uint64_t stats_get(const stats *s, int k)
{
    return __atomic_load_n(&s->c[k], __ATOMIC_RELAXED);
}

void stats_mark(stats *s, int k, int64_t t)
{
    if (t > __atomic_load_n(&s->mark[k], __ATOMIC_RELAXED))
        __atomic_store_n(&s->mark[k], t, __ATOMIC_RELAXED);
}

hist *stats_hist(stats *s, int k)
{
    return &s->h[k];
}
