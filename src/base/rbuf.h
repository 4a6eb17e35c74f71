/* rbuf: reference-counted byte buffers for encode-once, send-to-many.
 *
 * An outgoing frame is encoded once into an rbuf; every connection that
 * sends it takes a reference, and the buffer is freed when the last
 * reference is dropped. The count is atomic: references may be taken and
 * dropped on different I/O threads. The bytes must not change once shared.
 */
#ifndef PARLEY_RBUF_H
#define PARLEY_RBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct rbuf {
    uint32_t refs;  /* atomic */
    uint32_t len;   /* bytes used in data */
    uint32_t cap;   /* bytes available in data */
    uint8_t data[];
} rbuf;

/* A new buffer with room for `cap` bytes, len 0 and one reference owned by
 * the caller. NULL when out of memory or cap > UINT32_MAX. */
rbuf *rbuf_new(size_t cap);

/* A new buffer holding a copy of data[0..len), one reference. */
rbuf *rbuf_copy(const void *data, size_t len);

/* Takes another reference; returns b. */
static inline rbuf *rbuf_ref(rbuf *b)
{
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
    return b;
}

/* Drops a reference; the buffer is freed with the last one. NULL is a no-op. */
void rbuf_unref(rbuf *b);

#endif
