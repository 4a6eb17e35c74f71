#include "base/rbuf.h"

#include <stdlib.h>
#include <string.h>

rbuf *rbuf_new(size_t cap)
{
    if (cap > UINT32_MAX - sizeof(rbuf)) return NULL;
    rbuf *b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->refs = 1;
    b->len = 0;
    b->cap = (uint32_t)cap;
    return b;
}

rbuf *rbuf_copy(const void *data, size_t len)
{
    rbuf *b = rbuf_new(len);
    if (!b) return NULL;
    memcpy(b->data, data, len);
    b->len = (uint32_t)len;
    return b;
}

void rbuf_unref(rbuf *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) free(b);
}
