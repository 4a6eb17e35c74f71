/* event: what fans out. One event is one thing that happened (a message, a
 * receipt, presence, typing, a conversation or membership change), made
 * once by the chat service and shared, read-only, by every recipient on
 * every thread. It carries its payload in each encoding a transport needs;
 * the JSON text is made with the event, other encodings (MessagePack,
 * deflated JSON) have their slots and are added by the code that first
 * needs them. No transport bytes are inside: a WebSocket, SSE or long-poll
 * sink writes its own small framing header ahead of the shared payload.
 *
 * Ownership: event_new() returns one reference (the caller's); recipients
 * that keep the event take their own (event_ref); the last event_unref()
 * frees it with its encodings. The refcount is atomic: references are
 * taken and dropped on any thread. The fields never change once shared.
 */
#ifndef PARLEY_EVENT_H
#define PARLEY_EVENT_H

#include <stdint.h>

#include "base/rbuf.h"

enum event_kind {
    EV_MSG = 1,      /* a message at (conv, seq) */
    EV_RECEIPT,      /* a member's delivered/read cursors moved */
    EV_PRESENCE,     /* a contact went online or offline (lossy) */
    EV_TYPING,       /* a member is typing (lossy) */
    EV_CONV,         /* a conversation was created or its members changed */
    EV_REMOVED,      /* the recipient was removed from a conversation */
    EV_RESYNC,       /* events may have been missed (the bus was lost): resync */
};

enum event_encoding {
    EV_ENC_JSON,     /* JSON text, docs/protocol.md: made with the event */
    EV_ENC_COUNT     /* MessagePack and deflated JSON go before this when they come */
};

typedef struct event {
    uint32_t refs;               /* atomic */
    uint8_t kind;                /* enum event_kind */
    uint64_t conv;               /* the conversation, or 0 (presence) */
    uint64_t seq;                /* EV_MSG: its seq; otherwise 0 */
    rbuf *enc[EV_ENC_COUNT];     /* each a reference owned by the event, or NULL */
} event;

/* A new event holding `json` (the reference is taken over, also on
 * failure). NULL when out of memory or json is NULL. */
event *event_new(enum event_kind kind, uint64_t conv, uint64_t seq, rbuf *json);

static inline event *event_ref(event *ev)
{
    __atomic_add_fetch(&ev->refs, 1, __ATOMIC_RELAXED);
    return ev;
}

/* Drops a reference; NULL is a no-op. */
void event_unref(event *ev);

#endif
