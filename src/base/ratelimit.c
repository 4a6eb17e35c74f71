#include "base/ratelimit.h"

bool tb_take(tbucket *b, const tlimit *l, uint64_t now_ms, float cost, uint32_t *retry_ms)
{
    if (l->rate <= 0) return true;
    uint32_t now = (uint32_t)now_ms;
    uint32_t dt = now - b->at; /* wraps correctly within 49 days */
    b->at = now;
    b->used -= (float)dt * l->rate / 1000.0f;
    if (b->used < 0) b->used = 0;
    if (b->used + cost <= l->burst) {
        b->used += cost;
        return true;
    }
    if (retry_ms) {
        float over = b->used + cost - l->burst;
        *retry_ms = (uint32_t)(over * 1000.0f / l->rate) + 1;
    }
    return false;
}
