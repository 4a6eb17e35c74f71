#include "base/hist.h"

#define US 1000ull
#define MS 1000000ull
#define S 1000000000ull

const hist_spec hist_seconds = {
    .n = 17,
    .le = {50 * US, 100 * US, 250 * US, 500 * US, 1 * MS, 2500 * US, 5 * MS, 10 * MS,
           25 * MS, 50 * MS, 100 * MS, 250 * MS, 500 * MS, 1 * S, 2500 * MS, 5 * S, 10 * S},
    .scale = 1e-9,
};

const hist_spec hist_sizes = {
    .n = 13,
    .le = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096},
    .scale = 1,
};

static void bump(uint64_t *slot, uint64_t n)
{
    __atomic_store_n(slot, *slot + n, __ATOMIC_RELAXED);
}

void hist_observe(hist *h, const hist_spec *s, uint64_t v)
{
    int i = 0;
    while (i < s->n && v > s->le[i]) i++;
    bump(&h->b[i], 1);
    bump(&h->sum, v);
}

void hist_add(hist *acc, const hist *h, const hist_spec *s)
{
    for (int i = 0; i <= s->n; i++) acc->b[i] += __atomic_load_n(&h->b[i], __ATOMIC_RELAXED);
    acc->sum += __atomic_load_n(&h->sum, __ATOMIC_RELAXED);
}
