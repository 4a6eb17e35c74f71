#include "net/srv.h"

#include <stdlib.h>

#include "base/err.h"

struct srv_msg {
    srv_msg *next;
    void (*fn)(srv_thread *t, void *arg);
    void *arg;
};

static void close_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static uint32_t slot_of(uint64_t id) { return (uint32_t)(id >> 8) & (SRV_MAX_SLOTS - 1); }

int srv_conn_add(srv_thread *t, conn *c, uint64_t *id)
{
    uint32_t slot;
    if (t->table_free) {
        slot = t->table_free - 1;
        t->table_free = (uint32_t)(t->table[slot] >> 1);
    } else {
        if (t->table_len == SRV_MAX_SLOTS) return ERR_FULL;
        if (t->table_len == t->table_cap) {
            uint32_t cap = t->table_cap ? t->table_cap * 2 : 64;
            uintptr_t *p = realloc(t->table, cap * sizeof *p);
            if (!p) return ERR_NOMEM;
            t->table = p;
            uint32_t *g = realloc(t->table_gen, cap * sizeof *g);
            if (!g) return ERR_NOMEM; /* the bigger table stays; its cap does not */
            t->table_gen = g;
            t->table_cap = cap;
        }
        slot = t->table_len++;
    }
    if (++t->next_gen == 0) t->next_gen = 1; /* ids are never 0 */
    t->table[slot] = (uintptr_t)c;
    t->table_gen[slot] = t->next_gen;
    t->nconns++;
    *id = (uint64_t)t->next_gen << 32 | (uint64_t)slot << 8 | (uint64_t)(uint8_t)t->id;
    return ERR_OK;
}

/* The slot of a live id of this thread, or -1. */
static int64_t live_slot(const srv_thread *t, uint64_t id)
{
    uint32_t slot = slot_of(id);
    if ((uint8_t)id != (uint8_t)t->id || slot >= t->table_len || t->table[slot] & 1 ||
        t->table_gen[slot] != (uint32_t)(id >> 32))
        return -1;
    return slot;
}

void srv_conn_remove(srv_thread *t, uint64_t id)
{
    int64_t slot = live_slot(t, id);
    if (slot < 0) return;
    t->table[slot] = (uintptr_t)t->table_free << 1 | 1;
    t->table_free = (uint32_t)slot + 1;
    t->nconns--;
}

conn *srv_conn(srv_thread *t, uint64_t id)
{
    int64_t slot = live_slot(t, id);
    return slot < 0 ? NULL : (conn *)t->table[slot];
}

conn *srv_conn_next(srv_thread *t, uint32_t *pos)
{
    while (*pos < t->table_len) {
        uintptr_t e = t->table[(*pos)++];
        if (!(e & 1)) return (conn *)e;
    }
    return NULL;
}

void srv_thread_free(srv_thread *t)
{
    free(t->table);
    free(t->table_gen);
    t->table = NULL;
    t->table_gen = NULL;
    t->table_len = t->table_cap = t->table_free = t->nconns = 0;
    free(t->flushq);
    t->flushq = NULL;
    t->nflushq = t->flushq_cap = 0;
}

void srv_thread_idle(srv_thread *t)
{
    uv_mutex_lock(&t->mu);
    t->closed = true; /* no uv_async_send after this */
    uv_mutex_unlock(&t->mu);
    /* Every handle left is the thread's own: closing them ends uv_run. */
    uv_walk(&t->loop, close_handle, NULL);
}

/* Runs a list of posts (newest first) in posting order. */
static void run_posts(srv_thread *t, srv_msg *p)
{
    srv_msg *fifo = NULL;
    while (p) {
        srv_msg *next = p->next;
        p->next = fifo;
        fifo = p;
        p = next;
    }
    while (fifo) {
        srv_msg *next = fifo->next;
        fifo->fn(t, fifo->arg);
        free(fifo);
        fifo = next;
    }
}

static void on_wake(uv_async_t *h)
{
    srv_thread *t = h->data;
    uv_mutex_lock(&t->mu);
    srv_msg *p = t->posts;
    t->posts = NULL;
    uv_mutex_unlock(&t->mu);
    run_posts(t, p);
}

int srv_post(srv_thread *t, void (*fn)(srv_thread *t, void *arg), void *arg)
{
    srv_msg *p = malloc(sizeof *p);
    if (!p) return ERR_NOMEM;
    p->fn = fn;
    p->arg = arg;
    uv_mutex_lock(&t->mu);
    if (t->closed) {
        uv_mutex_unlock(&t->mu);
        free(p);
        return ERR_CLOSED;
    }
    p->next = t->posts;
    t->posts = p;
    uv_async_send(&t->wake); /* under mu: never after the handle closes */
    uv_mutex_unlock(&t->mu);
    return ERR_OK;
}

int srv_thread_init(srv_thread *t)
{
    if (uv_loop_init(&t->loop) != 0) return ERR_IO;
    uv_mutex_init(&t->mu);
    uv_async_init(&t->loop, &t->wake, on_wake);
    t->wake.data = t;
    return ERR_OK;
}

void srv_thread_drain(srv_thread *t)
{
    uv_mutex_lock(&t->mu);
    t->closed = true; /* nothing more comes in */
    srv_msg *p = t->posts;
    t->posts = NULL;
    uv_mutex_unlock(&t->mu);
    run_posts(t, p);
}
