#include "client_outbox.h"

#include <string.h>

void client_outbox_init(client_outbox *ob, const parley_allocator *a, size_t max)
{
    memset(ob, 0, sizeof *ob);
    ob->a = a;
    ob->max = max;
}

void client_outbox_free(client_outbox *ob)
{
    for (size_t i = 0; i < ob->n; i++) ob->a->free_fn(ob->a->ctx, ob->v[i].body);
    ob->a->free_fn(ob->a->ctx, ob->v);
    ob->v = NULL;
    ob->n = ob->cap = 0;
}

client_outmsg *client_outbox_find(client_outbox *ob, uint64_t conv, const char *cmid)
{
    for (size_t i = 0; i < ob->n; i++)
        if ((conv == 0 || ob->v[i].conv == conv) && strcmp(ob->v[i].cmid, cmid) == 0)
            return &ob->v[i];
    return NULL;
}

int client_outbox_add(client_outbox *ob, uint64_t conv, const char *cmid,
                      const char *body, size_t len)
{
    size_t cl = strlen(cmid);
    if (cl == 0 || cl >= PARLEY_CMID_MAX) return ERR_INVALID;
    if (client_outbox_find(ob, 0, cmid)) return ERR_CONFLICT;
    if (ob->max && ob->n >= ob->max) return ERR_FULL;
    if (ob->n == ob->cap) {
        size_t cap = ob->cap ? ob->cap * 2 : 16;
        client_outmsg *v = ob->a->realloc_fn(ob->a->ctx, ob->v, cap * sizeof *v);
        if (!v) return ERR_NOMEM;
        ob->v = v;
        ob->cap = cap;
    }
    char *b = ob->a->malloc_fn(ob->a->ctx, len + 1);
    if (!b) return ERR_NOMEM;
    memcpy(b, body, len);
    b[len] = 0;
    client_outmsg *m = &ob->v[ob->n++];
    memset(m, 0, sizeof *m);
    m->conv = conv;
    memcpy(m->cmid, cmid, cl + 1);
    m->body = b;
    m->body_len = len;
    return ERR_OK;
}

static void remove_at(client_outbox *ob, size_t i)
{
    ob->a->free_fn(ob->a->ctx, ob->v[i].body);
    memmove(&ob->v[i], &ob->v[i + 1], (ob->n - i - 1) * sizeof ob->v[0]);
    ob->n--;
}

int client_outbox_ack(client_outbox *ob, uint64_t conv, const char *cmid)
{
    client_outmsg *m = client_outbox_find(ob, conv, cmid);
    if (!m) return ERR_NOT_FOUND;
    remove_at(ob, (size_t)(m - ob->v));
    return ERR_OK;
}

int client_outbox_remove(client_outbox *ob, const char *cmid)
{
    return client_outbox_ack(ob, 0, cmid);
}

client_outmsg *client_outbox_next(client_outbox *ob, uint64_t now, uint64_t ack_timeout,
                                  size_t max_inflight)
{
    if (now < ob->paused_until) return NULL;
    ob->paused_until = 0; /* over */
    size_t inflight = 0;
    for (size_t i = 0; i < ob->n; i++) inflight += ob->v[i].inflight;
    for (size_t i = 0; i < ob->n; i++) {
        client_outmsg *m = &ob->v[i];
        if (m->not_before > now) return NULL; /* holds back the rest: order */
        if (!m->inflight) {
            if (max_inflight && inflight >= max_inflight) return NULL;
            return m;
        }
        if (now - m->sent_at >= ack_timeout || (m->resend_at && now >= m->resend_at))
            return m; /* already counted */
    }
    return NULL;
}

void client_outbox_mark_sent(client_outbox *ob, client_outmsg *m, uint64_t now)
{
    (void)ob;
    m->inflight = true;
    m->sent_at = now;
    m->not_before = 0;
    m->resend_at = 0;
    m->attempts++;
}

int client_outbox_defer(client_outbox *ob, const char *cmid, uint64_t until)
{
    client_outmsg *m = client_outbox_find(ob, 0, cmid);
    if (!m) return ERR_NOT_FOUND;
    m->inflight = false;
    m->not_before = until;
    m->resend_at = 0;
    return ERR_OK;
}

void client_outbox_pause(client_outbox *ob, uint64_t until)
{
    if (until > ob->paused_until) ob->paused_until = until;
}

void client_outbox_suspect(client_outbox *ob, uint64_t sent_before, uint64_t resend_at)
{
    for (size_t i = 0; i < ob->n; i++) {
        client_outmsg *m = &ob->v[i];
        if (m->inflight && m->sent_at <= sent_before && (!m->resend_at || m->resend_at > resend_at))
            m->resend_at = resend_at;
    }
}

void client_outbox_disconnected(client_outbox *ob)
{
    for (size_t i = 0; i < ob->n; i++) {
        ob->v[i].inflight = false;
        ob->v[i].resend_at = 0;
    }
}

uint64_t client_outbox_deadline(const client_outbox *ob, uint64_t ack_timeout, size_t max_inflight)
{
    /* The same walk as client_outbox_next(), solved for the time: message i
     * is reached once every not_before up to it has passed (held), and is
     * written then if it is unsent (and the window has room), or once its
     * ack timeout or resend time has come if it is in flight. Times already
     * past are kept: "due now" must wake the caller, not vanish because the
     * clock moved on between its next() and this call. */
    size_t inflight = 0;
    for (size_t i = 0; i < ob->n; i++) inflight += ob->v[i].inflight;
    uint64_t d = UINT64_MAX, held = 0;
    for (size_t i = 0; i < ob->n; i++) {
        const client_outmsg *m = &ob->v[i];
        if (m->not_before > held) held = m->not_before;
        if (!m->inflight) {
            /* next() stops here: written at `held`, or on an ack if no room */
            if ((!max_inflight || inflight < max_inflight) && held < d) d = held;
            break;
        }
        uint64_t t = m->sent_at + ack_timeout;
        if (m->resend_at && m->resend_at < t) t = m->resend_at;
        if (t < held) t = held;
        if (t < d) d = t;
    }
    /* nothing is written during a pause (next() clears it once over) */
    if (d != UINT64_MAX && d < ob->paused_until) d = ob->paused_until;
    return d;
}
