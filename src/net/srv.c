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

conn *srv_conn(srv_thread *t, uint64_t id)
{
    return u64map_get(&t->by_id, id);
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
