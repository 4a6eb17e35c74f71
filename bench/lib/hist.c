#include "lib/hist.h"

#include <string.h>

static unsigned idx(uint64_t v)
{
    if (v < (2u << HIST_SUB)) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sh = msb - HIST_SUB;
    uint64_t i = ((uint64_t)sh << HIST_SUB) + (v >> sh);
    return i < HIST_BUCKETS ? (unsigned)i : HIST_BUCKETS - 1;
}

static uint64_t upper(unsigned i)
{
    if (i < (2u << HIST_SUB)) return i;
    unsigned sh = (i >> HIST_SUB) - 1;
    uint64_t mant = i - ((uint64_t)sh << HIST_SUB);
    return ((mant + 1) << sh) - 1;
}

void hist_reset(hist *h)
{
    memset(h, 0, sizeof *h);
}

void hist_add(hist *h, int64_t v_ns)
{
    uint64_t v = v_ns < 0 ? 0 : (uint64_t)v_ns;
    h->b[idx(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max) h->max = v;
}

void hist_merge(hist *into, const hist *h)
{
    into->count += h->count;
    into->sum += h->sum;
    if (h->max > into->max) into->max = h->max;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) into->b[i] += h->b[i];
}

double hist_pct_us(const hist *h, double q)
{
    if (!h->count) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > h->count) rank = h->count;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = upper(i);
            return (double)(v < h->max ? v : h->max) / 1e3;
        }
    }
    return (double)h->max / 1e3;
}

double hist_mean_us(const hist *h)
{
    return h->count ? (double)h->sum / (double)h->count / 1e3 : 0;
}

double hist_max_us(const hist *h)
{
    return (double)h->max / 1e3;
}
