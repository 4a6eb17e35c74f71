#include "client_backoff.h"

void client_backoff_init(client_backoff *b, uint32_t base_ms, uint32_t cap_ms)
{
    b->base_ms = base_ms ? base_ms : 1000;
    b->cap_ms = cap_ms ? cap_ms : 60000;
    if (b->cap_ms < b->base_ms) b->cap_ms = b->base_ms;
    b->attempt = 0;
    b->round = 1;
}

void client_backoff_set_round(client_backoff *b, uint32_t round)
{
    b->round = round ? round : 1;
}

uint64_t client_backoff_ceiling(const client_backoff *b)
{
    uint64_t c = b->base_ms;
    uint32_t doublings = b->attempt / (b->round ? b->round : 1);
    for (uint32_t i = 0; i < doublings && c < b->cap_ms; i++) c <<= 1;
    return c < b->cap_ms ? c : b->cap_ms;
}

uint64_t client_backoff_next(client_backoff *b, uint64_t rnd, uint64_t retry_after_ms)
{
    uint64_t ceil = client_backoff_ceiling(b);
    uint64_t d = rnd % (ceil + 1); /* bias < ceil / 2^64: negligible */
    if (b->attempt < UINT32_MAX) b->attempt++; /* the ceiling stops at cap anyway */
    return d < retry_after_ms ? retry_after_ms : d;
}

void client_backoff_reset(client_backoff *b)
{
    b->attempt = 0;
}
