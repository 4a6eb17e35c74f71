#include "net/wheel.h"

#include <stddef.h>

void wheel_init(wheel *w, uint32_t tick_ms)
{
    w->now = 0;
    w->tick_ms = tick_ms ? tick_ms : 1;
    w->count = 0;
    for (int i = 0; i < WHEEL_SLOTS; i++)
        w->slots[i].prev = w->slots[i].next = &w->slots[i];
}

void wheel_cancel(wheel *w, wheel_node *n)
{
    if (!n->prev) return;
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = NULL;
    w->count--;
}

void wheel_schedule(wheel *w, wheel_node *n, uint64_t delay_ms)
{
    wheel_cancel(w, n);
    uint64_t ticks = (delay_ms + w->tick_ms - 1) / w->tick_ms;
    if (ticks == 0) ticks = 1;
    n->due = w->now + ticks;
    wheel_node *head = &w->slots[n->due & (WHEEL_SLOTS - 1)];
    n->next = head;
    n->prev = head->prev;
    head->prev->next = n;
    head->prev = n;
    w->count++;
}

unsigned wheel_tick(wheel *w, void (*expire)(wheel_node *n, void *arg), void *arg)
{
    w->now++;
    wheel_node *head = &w->slots[w->now & (WHEEL_SLOTS - 1)];
    /* Move the due nodes to a private list first: callbacks may reschedule
     * into this very slot (a delay of exactly WHEEL_SLOTS ticks). */
    wheel_node due = {&due, &due, 0};
    for (wheel_node *n = head->next, *next; n != head; n = next) {
        next = n->next;
        if (n->due > w->now) continue; /* a later lap */
        n->prev->next = n->next;
        n->next->prev = n->prev;
        n->next = &due;
        n->prev = due.prev;
        due.prev->next = n;
        due.prev = n;
    }
    unsigned fired = 0;
    while (due.next != &due) {
        wheel_node *n = due.next;
        due.next = n->next;
        n->next->prev = &due;
        n->prev = n->next = NULL;
        w->count--;
        fired++;
        expire(n, arg);
    }
    return fired;
}
