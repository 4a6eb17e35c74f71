/* u64map: an open-addressing hash map from non-zero uint64 keys to
 * pointers (linear probing, backward-shift deletion, no tombstones).
 * Not thread-safe: the owner serialises access. The map does not own the
 * values it points to.
 */
#ifndef PARLEY_U64MAP_H
#define PARLEY_U64MAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct u64map_slot {
    uint64_t key; /* 0 = empty */
    void *val;
} u64map_slot;

typedef struct u64map {
    u64map_slot *slots;
    size_t cap;   /* power of two, or 0 */
    size_t count;
} u64map;

void u64map_init(u64map *m);
void u64map_free(u64map *m);
/* The value for key, or NULL. */
void *u64map_get(const u64map *m, uint64_t key);
/* Sets key's value (key != 0). ERR_OK or ERR_NOMEM. */
int u64map_put(u64map *m, uint64_t key, void *val);
/* Removes key; returns its value or NULL. */
void *u64map_del(u64map *m, uint64_t key);

#endif
