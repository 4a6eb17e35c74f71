#include "base/audience.h"

#include <stdlib.h>

audience *audience_new(size_t n)
{
    audience *a = malloc(sizeof *a + n * sizeof a->uids[0]);
    if (!a) return NULL;
    a->refs = 1;
    a->n = (uint32_t)n;
    return a;
}

audience *audience_ref(audience *a)
{
    if (a) __atomic_add_fetch(&a->refs, 1, __ATOMIC_RELAXED);
    return a;
}

void audience_unref(audience *a)
{
    if (a && __atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) == 0) free(a);
}
