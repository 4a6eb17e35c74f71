#include "base/u64map.h"

#include <stdlib.h>

#include "base/err.h"

static size_t slot_of(uint64_t key, size_t cap)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (size_t)key & (cap - 1);
}

void u64map_init(u64map *m)
{
    m->slots = NULL;
    m->cap = m->count = 0;
}

void u64map_free(u64map *m)
{
    free(m->slots);
    u64map_init(m);
}

void *u64map_get(const u64map *m, uint64_t key)
{
    if (!m->cap) return NULL;
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].key == key) return m->slots[i].val;
        if (m->slots[i].key == 0) return NULL;
    }
}

static int grow(u64map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    u64map_slot *s = calloc(cap, sizeof *s);
    if (!s) return ERR_NOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        size_t j = slot_of(m->slots[i].key, cap);
        while (s[j].key) j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    return ERR_OK;
}

int u64map_put(u64map *m, uint64_t key, void *val)
{
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) < 0) return ERR_NOMEM;
    size_t i = slot_of(key, m->cap);
    while (m->slots[i].key && m->slots[i].key != key) i = (i + 1) & (m->cap - 1);
    if (!m->slots[i].key) m->count++;
    m->slots[i].key = key;
    m->slots[i].val = val;
    return ERR_OK;
}

void *u64map_del(u64map *m, uint64_t key)
{
    if (!m->cap) return NULL;
    size_t i = slot_of(key, m->cap);
    while (m->slots[i].key != key) {
        if (!m->slots[i].key) return NULL;
        i = (i + 1) & (m->cap - 1);
    }
    void *val = m->slots[i].val;
    /* Backward-shift: pull later members of the probe run into the hole. */
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j].key; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m->slots[j].key, m->cap);
        if (((j - home) & (m->cap - 1)) >= ((j - i) & (m->cap - 1))) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = 0;
    m->slots[i].val = NULL;
    m->count--;
    return val;
}
