#include "store/logrec.h"

#include <stdlib.h>
#include <string.h>

#define MSG_FIXED (1 + 5 * 8 + 1 + 4)
#define CURSOR_LEN (1 + 5 * 8)
#define SEEN_LEN (1 + 2 * 8)

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int reserve(logrec_buf *b, size_t n)
{
    if (b->err) return b->err;
    if (b->cap - b->len >= n) return ERR_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) {
        if (cap > SIZE_MAX / 2) return b->err = ERR_NOMEM;
        cap *= 2;
    }
    uint8_t *p = realloc(b->p, cap);
    if (!p) return b->err = ERR_NOMEM;
    b->p = p;
    b->cap = cap;
    return ERR_OK;
}

int logrec_put(logrec_buf *b, const logrec *r)
{
    uint8_t *p;
    int rc;
    switch (r->kind) {
    case LOGREC_MSG:
        if (r->cmid_len > 255 || r->body_len > UINT32_MAX) return ERR_TOO_LARGE;
        if ((rc = reserve(b, MSG_FIXED + r->cmid_len + r->body_len))) return rc;
        p = b->p + b->len;
        p[0] = LOGREC_MSG;
        put64(p + 1, r->conv);
        put64(p + 9, r->seq);
        put64(p + 17, r->uid);
        put64(p + 25, (uint64_t)r->ts);
        put64(p + 33, r->version);
        p[41] = (uint8_t)r->cmid_len;
        for (int i = 0; i < 4; i++) p[42 + i] = (uint8_t)(r->body_len >> (8 * i));
        memcpy(p + MSG_FIXED, r->cmid, r->cmid_len);
        memcpy(p + MSG_FIXED + r->cmid_len, r->body, r->body_len);
        b->len += MSG_FIXED + r->cmid_len + r->body_len;
        return ERR_OK;
    case LOGREC_CURSOR:
        if ((rc = reserve(b, CURSOR_LEN))) return rc;
        p = b->p + b->len;
        p[0] = LOGREC_CURSOR;
        put64(p + 1, r->conv);
        put64(p + 9, r->uid);
        put64(p + 17, r->delivered);
        put64(p + 25, r->read);
        put64(p + 33, r->version);
        b->len += CURSOR_LEN;
        return ERR_OK;
    case LOGREC_NOP:
        if ((rc = reserve(b, 1))) return rc;
        b->p[b->len++] = LOGREC_NOP;
        return ERR_OK;
    case LOGREC_SEEN:
        if ((rc = reserve(b, SEEN_LEN))) return rc;
        p = b->p + b->len;
        p[0] = LOGREC_SEEN;
        put64(p + 1, r->uid);
        put64(p + 9, (uint64_t)r->ts);
        b->len += SEEN_LEN;
        return ERR_OK;
    }
    return ERR_INVALID;
}

void logrec_buf_free(logrec_buf *b)
{
    free(b->p);
    *b = (logrec_buf){0};
}

int logrec_next(const uint8_t *p, size_t len, size_t *off, logrec *r)
{
    size_t o = *off;
    if (o >= len) return ERR_NOT_FOUND;
    const uint8_t *q = p + o;
    size_t left = len - o;
    memset(r, 0, sizeof *r);
    r->kind = q[0];
    switch (q[0]) {
    case LOGREC_MSG: {
        if (left < MSG_FIXED) return ERR_INVALID;
        size_t cl = q[41], bl = 0;
        for (int i = 3; i >= 0; i--) bl = bl << 8 | q[42 + i];
        if (left - MSG_FIXED < cl || left - MSG_FIXED - cl < bl) return ERR_INVALID;
        r->conv = get64(q + 1);
        r->seq = get64(q + 9);
        r->uid = get64(q + 17);
        r->ts = (int64_t)get64(q + 25);
        r->version = get64(q + 33);
        r->cmid = (const char *)q + MSG_FIXED;
        r->cmid_len = cl;
        r->body = (const char *)q + MSG_FIXED + cl;
        r->body_len = bl;
        *off = o + MSG_FIXED + cl + bl;
        return ERR_OK;
    }
    case LOGREC_CURSOR:
        if (left < CURSOR_LEN) return ERR_INVALID;
        r->conv = get64(q + 1);
        r->uid = get64(q + 9);
        r->delivered = get64(q + 17);
        r->read = get64(q + 25);
        r->version = get64(q + 33);
        *off = o + CURSOR_LEN;
        return ERR_OK;
    case LOGREC_NOP:
        *off = o + 1;
        return ERR_OK;
    case LOGREC_SEEN:
        if (left < SEEN_LEN) return ERR_INVALID;
        r->uid = get64(q + 1);
        r->ts = (int64_t)get64(q + 9);
        *off = o + SEEN_LEN;
        return ERR_OK;
    }
    return ERR_INVALID;
}
