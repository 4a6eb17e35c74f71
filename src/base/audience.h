/* audience: a shared, immutable list of user ids (the members a delivery
 * goes to), reference-counted with atomics so that any thread may hold
 * and drop a reference. The sequencer (store/seq.h) keeps one per
 * conversation and hands a reference to every message of it; the hub
 * (chat/hub.h) delivers to it.
 */
#ifndef PARLEY_AUDIENCE_H
#define PARLEY_AUDIENCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct audience {
    uint32_t refs;
    uint32_t n;
    uint64_t uids[];
} audience;

/* A new audience with room for n uids (n set, uids to fill), one ref. */
audience *audience_new(size_t n);
/* Takes one more reference; returns a. NULL is a no-op. */
audience *audience_ref(audience *a);
void audience_unref(audience *a);

#endif
