#include "store/seq.h"

#include <stdlib.h>
#include <string.h>

#include "base/u64map.h"

#define CONV_KEEP 65536        /* conversations kept before applied ones are dropped */

typedef struct smember {
    uint64_t uid, delivered, read;
    uint8_t role;
    bool invited;
} smember;

typedef struct sconv {
    uint64_t id, last_seq;
    int64_t last_ts;
    uint64_t batch;            /* the last batch with an entry of it */
    uint64_t mver;             /* members_version of aud */
    audience *aud;             /* the members' uids (one ref) */
    uint8_t type;
    uint32_t n, cap;
    smember *m;                /* n, sorted by uid (owned) */
} sconv;

/* A cmid of a message not yet applied to the store. */
typedef struct scmid {
    struct scmid *next;        /* FIFO, oldest first */
    uint64_t key, conv, uid, seq, batch, body_hash;
    int64_t ts;
    uint8_t len;
    char cmid[STORE_CMID_MAX];
} scmid;

struct sequencer {
    store *st;
    uint64_t clock;
    uint64_t applied;          /* batches <= applied are in the store */
    uint64_t mvers;            /* members_version counter */
    int refuse;                /* seq_refuse() */
    u64map convs;              /* id -> sconv */
    u64map cmids;              /* key -> scmid */
    scmid *chead, *ctail;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0xff51afd7ed558ccdull;
    return h ^ (h >> 33);
}

static uint64_t hash_bytes(uint64_t h, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
    return mix(h, n);
}

static uint64_t cmid_key(uint64_t conv, uint64_t uid, const char *cmid, size_t len)
{
    uint64_t h = hash_bytes(mix(mix(0xcbf29ce484222325ull, conv), uid), cmid, len);
    return h | 1;              /* never 0 (u64map's empty key) */
}

int seq_new(sequencer **out, store *s)
{
    sequencer *q = calloc(1, sizeof *q);
    if (!q) return ERR_NOMEM;
    q->st = s;
    u64map_init(&q->convs);
    u64map_init(&q->cmids);
    *out = q;
    return ERR_OK;
}

static void conv_free(sconv *c)
{
    if (!c) return;
    audience_unref(c->aud);
    free(c->m);
    free(c);
}

void seq_reset(sequencer *q)
{
    for (size_t i = 0; i < q->convs.cap; i++)
        if (q->convs.slots[i].key) conv_free(q->convs.slots[i].val);
    u64map_free(&q->convs);
    u64map_init(&q->convs);
    for (scmid *e = q->chead, *n; e; e = n) { n = e->next; free(e); }
    q->chead = q->ctail = NULL;
    u64map_free(&q->cmids);
    u64map_init(&q->cmids);
}

void seq_free(sequencer *q)
{
    if (!q) return;
    seq_reset(q);
    free(q);
}

void seq_set_clock(sequencer *q, uint64_t clock) { q->clock = clock; }
void seq_refuse(sequencer *q, int rc) { q->refuse = rc; }
uint64_t seq_clock(const sequencer *q) { return q->clock; }

void seq_counts(const sequencer *q, size_t *convs, size_t *cmids)
{
    *convs = q->convs.count;
    *cmids = q->cmids.count;
}

void seq_forget(sequencer *q, uint64_t conv)
{
    conv_free(u64map_del(&q->convs, conv));
}

void seq_applied(sequencer *q, uint64_t batch)
{
    q->applied = batch;
    /* Applied cmids are in the store now. */
    while (q->chead && q->chead->batch <= batch) {
        scmid *e = q->chead;
        q->chead = e->next;
        if (!q->chead) q->ctail = NULL;
        if (u64map_get(&q->cmids, e->key) == e) u64map_del(&q->cmids, e->key);
        free(e);
    }
    if (q->convs.count <= CONV_KEEP) return;
    /* Too many kept: drop the ones whose entries are all applied. */
    size_t n = 0;
    uint64_t *ids = malloc(q->convs.count * sizeof *ids);
    if (!ids) return;
    for (size_t i = 0; i < q->convs.cap; i++) {
        sconv *c = q->convs.slots[i].val;
        if (q->convs.slots[i].key && c->batch <= batch) ids[n++] = c->id;
    }
    for (size_t i = 0; i < n && q->convs.count > CONV_KEEP / 2; i++) seq_forget(q, ids[i]);
    free(ids);
}

typedef struct load_ctx {
    sconv *c;
    int err;
} load_ctx;

static int load_member(void *arg, const store_member *m)
{
    load_ctx *x = arg;
    sconv *c = x->c;
    if (c->n == c->cap) {
        uint32_t cap = c->cap ? c->cap * 2 : 4;
        smember *nm = realloc(c->m, cap * sizeof *nm);
        if (!nm) return x->err = ERR_NOMEM;
        c->m = nm;
        c->cap = cap;
    }
    c->m[c->n++] = (smember){m->uid, m->delivered, m->read, m->role, m->invited};
    return 0;
}

/* The conversation's state: kept, or loaded from the store. NULL with *rc
 * ERR_FORBIDDEN (none such) or a storage error. */
static sconv *conv_of(sequencer *q, uint64_t id, int *rc)
{
    sconv *c = u64map_get(&q->convs, id);
    if (c) return c;
    store_txn *txn;
    if ((*rc = store_begin(q->st, false, &txn)) < 0) return NULL;
    store_conv sc;
    *rc = store_conv_get(txn, id, &sc);
    if (*rc < 0) {
        store_abort(txn);
        if (*rc == ERR_NOT_FOUND) *rc = ERR_FORBIDDEN;
        return NULL;
    }
    c = calloc(1, sizeof *c);
    if (!c) { store_abort(txn); *rc = ERR_NOMEM; return NULL; }
    c->id = id;
    c->type = sc.type;
    c->last_seq = sc.last_seq;
    c->last_ts = sc.last_ts;
    load_ctx x = {c, 0};
    c->cap = sc.nmembers ? sc.nmembers : 1;
    c->m = malloc(c->cap * sizeof *c->m);
    *rc = c->m ? store_members(txn, id, load_member, &x) : ERR_NOMEM;
    store_abort(txn);
    if (*rc >= 0 && x.err) *rc = x.err;
    if (*rc >= 0 && !(c->aud = audience_new(c->n))) *rc = ERR_NOMEM;
    if (*rc >= 0) {
        for (uint32_t i = 0; i < c->n; i++) c->aud->uids[i] = c->m[i].uid;
        c->mver = ++q->mvers;
        *rc = u64map_put(&q->convs, id, c);
    }
    if (*rc < 0) { conv_free(c); return NULL; }
    return c;
}

static smember *member_of(sconv *c, uint64_t uid)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->m[mid].uid < uid) lo = mid + 1;
        else hi = mid;
    }
    return lo < c->n && c->m[lo].uid == uid ? &c->m[lo] : NULL;
}

static void give_audience(const sconv *c, seq_result *r)
{
    r->aud = audience_ref(c->aud);
    r->members_version = c->mver;
}

/* A cmid used before: in memory (not yet applied) or in the store.
 * ERR_OK (found: *seq, *ts), ERR_NOT_FOUND, ERR_CMID_REUSED, or an error. */
static int find_cmid(sequencer *q, uint64_t conv, uint64_t uid, const char *cmid, size_t len,
                     const char *body, size_t blen, uint64_t *seqno, int64_t *ts)
{
    uint64_t key = cmid_key(conv, uid, cmid, len);
    scmid *e = u64map_get(&q->cmids, key);
    if (e && e->conv == conv && e->uid == uid && e->len == len && !memcmp(e->cmid, cmid, len)) {
        if (e->body_hash != hash_bytes(0, body, blen)) return ERR_CMID_REUSED;
        *seqno = e->seq;
        *ts = e->ts;
        return ERR_OK;
    }
    store_txn *txn;
    int rc = store_begin(q->st, false, &txn);
    if (rc < 0) return rc;
    rc = store_cmid_get(txn, conv, uid, cmid, len, seqno);
    if (rc == ERR_OK) {
        /* A resend carries the same body, byte for byte. */
        store_msg old;
        bool found = store_msg_get(txn, conv, *seqno, &old) == ERR_OK;
        if (found && (old.body_len != blen || memcmp(old.body, body, blen) != 0))
            rc = ERR_CMID_REUSED;
        *ts = found ? old.ts : 0;
    }
    store_abort(txn);
    return rc;
}

int seq_send(sequencer *q, uint64_t batch, uint64_t conv, uint64_t uid, const char *cmid,
             size_t cmid_len, const char *body, size_t body_len, int64_t now, logrec_buf *out,
             seq_result *r)
{
    memset(r, 0, sizeof *r);
    if (cmid_len > STORE_CMID_MAX) return ERR_TOO_LARGE;
    int rc;
    sconv *c = conv_of(q, conv, &rc);
    if (!c) return rc;
    smember *m = member_of(c, uid);
    if (!m) return ERR_FORBIDDEN;
    rc = find_cmid(q, conv, uid, cmid, cmid_len, body, body_len, &r->seq, &r->ts);
    if (rc == ERR_OK) { r->duplicate = true; return ERR_OK; }
    if (rc != ERR_NOT_FOUND) return rc;
    if (m->invited) return SEQ_SLOW; /* replying accepts the invitation */
    if (q->refuse) return q->refuse;
    scmid *e = malloc(sizeof *e);
    if (!e) return ERR_NOMEM;
    logrec lr = {LOGREC_MSG, conv, uid, c->last_seq + 1, 0, 0, now > c->last_ts ? now : c->last_ts,
                 q->clock + 1, cmid, cmid_len, body, body_len};
    *e = (scmid){NULL, cmid_key(conv, uid, cmid, cmid_len), conv, uid, lr.seq, batch,
                 hash_bytes(0, body, body_len), lr.ts, (uint8_t)cmid_len, {0}};
    memcpy(e->cmid, cmid, cmid_len);
    /* Without its memory a resend before the apply would be stored twice:
     * no room for it refuses the message. */
    scmid *was = u64map_get(&q->cmids, e->key);
    if ((rc = u64map_put(&q->cmids, e->key, e)) < 0 || (rc = logrec_put(out, &lr)) < 0) {
        if (was) u64map_put(&q->cmids, e->key, was); /* the slot exists: cannot fail */
        else u64map_del(&q->cmids, e->key);
        free(e);
        return rc;
    }
    if (q->ctail) q->ctail->next = e;
    else q->chead = e;
    q->ctail = e;
    q->clock++;
    c->last_seq = lr.seq;
    c->last_ts = lr.ts;
    c->batch = batch;
    m->delivered = m->read = lr.seq; /* the sender has read what it sent */
    r->seq = lr.seq;
    r->ts = lr.ts;
    give_audience(c, r);
    return ERR_OK;
}

int seq_cursor(sequencer *q, uint64_t batch, uint64_t conv, uint64_t uid, uint64_t delivered,
               uint64_t read, bool accept, logrec_buf *out, seq_result *r)
{
    memset(r, 0, sizeof *r);
    int rc;
    sconv *c = conv_of(q, conv, &rc);
    if (!c) return rc;
    smember *m = member_of(c, uid);
    if (!m) return ERR_FORBIDDEN;
    /* A client only learns of a seq once it is stored: beyond last_seq is
     * a mistake, refused rather than clamped. */
    if (read > c->last_seq || delivered > c->last_seq) return ERR_INVALID;
    if (accept && m->invited) return SEQ_SLOW;
    uint64_t dl = delivered > read ? delivered : read;
    r->changed = dl > m->delivered || read > m->read;
    uint64_t nd = dl > m->delivered ? dl : m->delivered, nr = read > m->read ? read : m->read;
    if (r->changed && q->refuse) { r->changed = false; return q->refuse; }
    if (r->changed) {
        logrec lr = {LOGREC_CURSOR, conv, uid, 0, nd, nr, 0, q->clock + 1, NULL, 0, NULL, 0};
        if ((rc = logrec_put(out, &lr)) < 0) { r->changed = false; return rc; }
        q->clock++;
        m->delivered = nd;
        m->read = nr;
        c->batch = batch;
        give_audience(c, r);
    }
    r->delivered = m->delivered;
    r->read = m->read;
    return ERR_OK;
}

int seq_seen(sequencer *q, uint64_t batch, uint64_t uid, int64_t ts, logrec_buf *out)
{
    (void)batch;
    if (q->refuse) return ERR_OK; /* dropped: the store cannot take more */
    logrec lr = {LOGREC_SEEN, 0, uid, 0, 0, 0, ts, 0, NULL, 0, NULL, 0};
    return logrec_put(out, &lr);
}
