#include "chat/event.h"

#include <stdlib.h>

event *event_new(enum event_kind kind, uint64_t conv, uint64_t seq, rbuf *json)
{
    if (!json) return NULL;
    event *ev = calloc(1, sizeof *ev);
    if (!ev) { rbuf_unref(json); return NULL; }
    ev->refs = 1;
    ev->kind = (uint8_t)kind;
    ev->conv = conv;
    ev->seq = seq;
    ev->enc[EV_ENC_JSON] = json;
    return ev;
}

void event_unref(event *ev)
{
    if (!ev || __atomic_sub_fetch(&ev->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (int i = 0; i < EV_ENC_COUNT; i++) rbuf_unref(ev->enc[i]);
    free(ev);
}
