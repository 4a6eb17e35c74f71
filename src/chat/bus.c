#include "chat/bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include "base/config.h"
#include "base/err.h"
#include "base/hist.h"
#include "base/log.h"
#include "base/u64map.h"
#include "net/metrics.h"

#define CHAN_USER "parley:u:"
#define CHAN_ALL "parley:all"
#define CHAN_MAX 48            /* "parley:u:" + 20 digits, NUL */
#define ARGV_CHUNK 1024        /* channels per SUBSCRIBE / UNSUBSCRIBE */
#define TICK_MS 100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define ECHO_EVERY_MS 1000     /* the node publishes on its own channel this often */
#define CHAN_NODE "parley:n:"  /* + node id: the echo */
#define QUERY_CONNS 4          /* blocking connections kept for the read-pool queries */
#define ROSTER_USER "parley:p:"
#define ROSTER_NODE "parley:pn:"
#define ROSTER_BEAT "parley:node:"
#define ROSTER_NODES "parley:nodes"

/* The roster's scripts (bus.h). Keys beyond KEYS are built inside: one
 * Redis, not Redis Cluster (docs/cluster.md). */

/* A user's count on this node, absolute: {total before, total after}.
 * KEYS: the user's hash, this node's set; ARGV: node, count, uid. */
static const char TOUCH_LUA[] =
    "local before = 0\n"
    "for _, v in ipairs(redis.call('HVALS', KEYS[1])) do before = before + tonumber(v) end\n"
    "local mine = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')\n"
    "local c = tonumber(ARGV[2])\n"
    "if c > 0 then\n"
    "  redis.call('HSET', KEYS[1], ARGV[1], c)\n"
    "  redis.call('SADD', KEYS[2], ARGV[3])\n"
    "else\n"
    "  redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "  redis.call('SREM', KEYS[2], ARGV[3])\n"
    "end\n"
    "return {before, before - mine + c}\n";

/* The heartbeat, then the sweep of dead nodes: {1 if our beat was still
 * there, the users left with no session}. KEYS: the node list, our beat;
 * ARGV: node, nonce, ttl ms. */
static const char BEAT_LUA[] =
    "local old = redis.call('GET', KEYS[2])\n"
    "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])\n"
    "redis.call('SADD', KEYS[1], ARGV[1])\n"
    "local gone = {}\n"
    "for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if redis.call('EXISTS', '" ROSTER_BEAT "' .. n) == 0 then\n"
    "    for _, u in ipairs(redis.call('SMEMBERS', '" ROSTER_NODE "' .. n)) do\n"
    "      local k = '" ROSTER_USER "' .. u\n"
    "      redis.call('HDEL', k, n)\n"
    "      if redis.call('EXISTS', k) == 0 then gone[#gone + 1] = u end\n"
    "    end\n"
    "    redis.call('DEL', '" ROSTER_NODE "' .. n)\n"
    "    redis.call('SREM', KEYS[1], n)\n"
    "  end\n"
    "end\n"
    "return {old == ARGV[2] and 1 or 0, gone}\n";

/* A user's message bucket (bus.h): {retry ms, 0 if not empty}. KEYS: the
 * bucket; ARGV: messages, per second, burst. Redis's clock for every node. */
static const char RATE_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local n, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')\n"
    "local tokens = tonumber(b[1]) or burst\n"
    "local at = tonumber(b[2]) or now\n"
    "tokens = math.min(burst, tokens + (now - at) * rate / 1000) - n\n"
    "if tokens < -burst then tokens = -burst end\n"
    "redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)\n"
    "redis.call('PEXPIRE', KEYS[1], math.ceil(2000 * burst / rate) + 1000)\n"
    "if tokens >= 0 then return 0 end\n"
    "return math.ceil(-tokens * 1000 / rate)\n";

/* The account's bucket of failed logins (unknown devices), refilled. */
#define LOGIN_BUCKET_LUA \
    "local burst, per = tonumber(ARGV[2]), tonumber(ARGV[3])\n" \
    "local b = redis.call('HMGET', KEYS[2], 'tokens', 'at')\n" \
    "local tokens = tonumber(b[1]) or burst\n" \
    "local at = tonumber(b[2]) or now\n" \
    "tokens = math.min(burst, tokens + (now - at) * per / 60000)\n"

/* Before a password check: {retry ms, 0: go}. KEYS: the line, the
 * account's bucket; ARGV: unknown device (0/1), burst, per minute. */
static const char LOGIN_CHECK_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local u = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')\n"
    "if u > now then return math.ceil(u - now) end\n"
    "if ARGV[1] == '1' then\n"
    LOGIN_BUCKET_LUA
    "  if tokens < 1 then return math.ceil((1 - tokens) * 60000 / per) end\n"
    "end\n"
    "return 0\n";

/* A failed check: the line's failures and delay, the account's bucket. */
static const char LOGIN_FAIL_LUA[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local f = redis.call('HINCRBY', KEYS[1], 'failures', 1)\n"
    "if f >= 3 then\n"
    "  local d = 1000 * 2 ^ math.min(f - 3, 6)\n"
    "  if d > 60000 then d = 60000 end\n"
    "  redis.call('HSET', KEYS[1], 'until', now + d)\n"
    "end\n"
    "redis.call('PEXPIRE', KEYS[1], 900000)\n"
    "if ARGV[1] == '1' then\n"
    LOGIN_BUCKET_LUA
    "  redis.call('HSET', KEYS[2], 'tokens', tokens - 1, 'at', now)\n"
    "  redis.call('PEXPIRE', KEYS[2], math.ceil(60000 * burst / per) + 1000)\n"
    "end\n"
    "return f\n";

/* A logout's journal entry, written before its PUBLISH (bus.h: a node
 * that missed the message reads it when its channel is confirmed). KEYS:
 * the user's journal; ARGV: token key, expiry ms, now ms, ttl ms. */
static const char REVOKE_LUA[] =
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])\n"
    "redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])\n"
    "redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "return 1\n";

/* This node's whole part, written again: {users now online who were not,
 * users no longer online}. KEYS: this node's set; ARGV: node, then uid and
 * count pairs. */
static const char SYNC_LUA[] =
    "local node = ARGV[1]\n"
    "local want = {}\n"
    "for i = 2, #ARGV - 1, 2 do want[ARGV[i]] = ARGV[i + 1] end\n"
    "local on, off = {}, {}\n"
    "for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
    "  if not want[u] then\n"
    "    local k = '" ROSTER_USER "' .. u\n"
    "    redis.call('HDEL', k, node)\n"
    "    if redis.call('EXISTS', k) == 0 then off[#off + 1] = u end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[1])\n"
    "for u, c in pairs(want) do\n"
    "  local k = '" ROSTER_USER "' .. u\n"
    "  if redis.call('EXISTS', k) == 0 then on[#on + 1] = u end\n"
    "  redis.call('HSET', k, node, c)\n"
    "  redis.call('SADD', KEYS[1], u)\n"
    "end\n"
    "return {on, off}\n";

/* A channel's state in `subs` (the channels wanted, and where each stands
 * with Redis). hiredis keeps one callback per channel and drops it when
 * an UNSUBSCRIBE is answered, so a channel is never subscribed again
 * before its UNSUBSCRIBE was answered: it waits in SUB_RESUBSCRIBE. */
enum {
    SUB_PENDING = 1,           /* wanted; SUBSCRIBE sent (or to send at connect) */
    SUB_CONFIRMED,             /* Redis confirmed it */
    SUB_UNSUBSCRIBING,         /* not wanted; UNSUBSCRIBE sent, unanswered */
    SUB_RESUBSCRIBE,           /* wanted again while unsubscribing */
};

/* A command for the publisher, formatted (hiredis), from any thread. */
typedef struct bus_cmd {
    struct bus_cmd *next;
    char *text;
    size_t len;
} bus_cmd;

/* An event (or a revocation, a resync) to publish. */
typedef struct item {
    struct item *next;
    audience *to;              /* a reference; NULL: parley:all */
    event *ev;                 /* a reference, or NULL (revoke, resync) */
    uint8_t kind;              /* enum busmsg_kind */
    uint64_t arg;
    uint64_t at;               /* ns, when queued */
    size_t bytes;              /* counted against max_queue_bytes */
} item;

/* One of the two Redis connections. */
typedef struct rlink {
    bus *b;
    const char *name;          /* "subscriber", "publisher" */
    redisAsyncContext *ac;     /* NULL: none (connect at next_try) */
    bool up;                   /* connected (the bus thread's view) */
    bool ever;                 /* was up once: the next connect is a reconnect */
    uint64_t since;            /* ms: the pending connect began */
    uint64_t next_try;         /* ms */
    uint32_t backoff;
    uint64_t last_rx;          /* ms: Redis last sent this link something (or it connected) */
} rlink;

struct bus {
    bus_options o;
    const bus_ops *ops;
    void *ctx;
    char node[BUSMSG_NODE_MAX + 1];
    char host[256];
    int port;
    uv_thread_t tid;
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t timer;
    /* under mu */
    uv_mutex_t mu;
    uv_cond_t cond;            /* a channel confirmed, or the subscriber lost */
    item *head, *tail;
    size_t queued_bytes;
    uint64_t *dirty;           /* uids touched, to settle */
    size_t ndirty, dirty_cap;
    bool stopping;
    bool leaving;              /* bus_leave: the roster is not written any more */
    bool draining, drained;    /* bus_stop waits (bounded) for what is queued to be published */
    bool lost;                 /* events owed to others were dropped: resync at parley:all */
    u64map subs;               /* uid -> SUB_* */
    u64map sent;               /* uid -> messages admitted, not yet counted in Redis */
    u64map blocked;            /* uid -> ms until which its bucket is empty */
    u64map late;               /* uids whose read did not wait for their channel: resync at confirm */
    bus_cmd *cmds, *cmds_tail;    /* commands to send (login results) */
    bool sub_up, pub_up;       /* mirrored from the links, for any thread */
    bool echoed;               /* our echo came back since the last connect of either link */
    /* the bus thread's */
    rlink sub, pub;
    uint32_t inflight;         /* PUBLISH commands unanswered */
    bool resync_pending;       /* at parley:all's confirmation: resync the local sessions */
    hist latency;              /* queued -> PUBLISH answered, ns */
    char nonce[24];            /* this process's heartbeat value */
    char echo_chan[sizeof CHAN_NODE + BUSMSG_NODE_MAX];
    uint64_t next_echo;        /* ms */
    uint64_t echo_since;       /* ms: the first echo since the publisher connected, or 0 */
    char beat_key[sizeof ROSTER_BEAT + BUSMSG_NODE_MAX];
    char node_key[sizeof ROSTER_NODE + BUSMSG_NODE_MAX];
    uint64_t next_beat;        /* ms */
    bool beat_first;           /* the first heartbeat since the publisher connected */
    bool left;                 /* the heartbeat was deleted (bus_leave) */
    uint64_t *recheck;         /* users whose presence is told again after the next sync */
    size_t nrecheck, recheck_cap;
    /* blocking connections for the queries, under qmu */
    uv_mutex_t qmu;
    redisContext *qfree[QUERY_CONNS];
    int nqfree;
    uint64_t query_until;      /* ms: after a failed query, none before this */
    /* counters (atomic) */
    uint64_t n_published, n_received, n_dropped, n_refused, n_reconnects, n_resyncs;
    uint64_t n_syncs, n_swept, n_roster_errors;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ms(void) { return now_ns() / 1000000u; }

static void count(uint64_t *c, uint64_t n) { __atomic_add_fetch(c, n, __ATOMIC_RELAXED); }

static uint64_t read_count(const uint64_t *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }

static bool lossy_kind(int kind) { return kind == BUSMSG_PRESENCE || kind == BUSMSG_TYPING; }

static int kind_of(const event *ev)
{
    switch (ev->kind) {
    case EV_MSG: return BUSMSG_MSG;
    case EV_RECEIPT: return BUSMSG_RECEIPT;
    case EV_CONV: return BUSMSG_CONV;
    case EV_REMOVED: return BUSMSG_REMOVED;
    case EV_PRESENCE: return BUSMSG_PRESENCE;
    case EV_TYPING: return BUSMSG_TYPING;
    default: return 0; /* not for other nodes (a resync is each node's own) */
    }
}

static void item_free(item *it)
{
    audience_unref(it->to);
    event_unref(it->ev);
    free(it);
}

/* HOST:PORT of a redis:// URL into buf (the default port added). */
static const char *url_hostport(const char *url, char *buf, size_t cap)
{
    if (strncmp(url, "redis://", 8)) return NULL;
    const char *hp = url + 8;
    size_t n = strlen(hp);
    if (!strchr(hp, ':') || (n && hp[n - 1] == ']')) { /* no port: the default */
        if (snprintf(buf, cap, "%s:6379", hp) >= (int)cap) return NULL;
        return buf;
    }
    return hp;
}

bool bus_url_ok(const char *url)
{
    char buf[300], host[256];
    int port;
    const char *hp = url_hostport(url, buf, sizeof buf);
    return hp && config_hostport(hp, host, sizeof host, &port) == 0 && port > 0 &&
           !strchr(host, '/');
}

static int parse_url(bus *b, const char *url)
{
    char buf[300];
    const char *hp = bus_url_ok(url) ? url_hostport(url, buf, sizeof buf) : NULL;
    return hp && config_hostport(hp, b->host, sizeof b->host, &b->port) == 0 ? ERR_OK : ERR_INVALID;
}

/* ---- the queue (any thread) ---------------------------------------------- */

static void enqueue(bus *b, item *it)
{
    bool keep;
    uv_mutex_lock(&b->mu);
    keep = !b->stopping;
    /* Lossy kinds are never kept for a publisher that is away; the rest up
     * to the bound, past which other nodes' sessions must resync. */
    if (keep && !b->pub_up && lossy_kind(it->kind)) keep = false;
    if (keep && b->queued_bytes + it->bytes > b->o.max_queue_bytes) {
        keep = false;
        if (!lossy_kind(it->kind)) b->lost = true;
    }
    if (keep) {
        if (b->tail) b->tail->next = it;
        else b->head = it;
        b->tail = it;
        b->queued_bytes += it->bytes;
    }
    uv_mutex_unlock(&b->mu);
    if (keep) uv_async_send(&b->wake);
    else {
        count(&b->n_dropped, 1);
        item_free(it);
    }
}

void bus_publish(bus *b, audience *to, event *ev)
{
    int kind = ev ? kind_of(ev) : 0;
    if (!kind || !to || !to->n || !ev->enc[EV_ENC_JSON]) return;
    item *it = calloc(1, sizeof *it);
    if (!it) { count(&b->n_dropped, 1); return; }
    it->to = audience_ref(to);
    it->ev = event_ref(ev);
    it->kind = (uint8_t)kind;
    it->at = now_ns();
    it->bytes = sizeof *it + ev->enc[EV_ENC_JSON]->len + to->n * sizeof to->uids[0];
    enqueue(b, it);
}

void bus_revoke(bus *b, uint64_t uid, uint64_t key)
{
    item *it = calloc(1, sizeof *it);
    audience *a = audience_new(1);
    if (!it || !a) { free(it); audience_unref(a); count(&b->n_dropped, 1); return; }
    a->uids[0] = uid;
    it->to = a;
    it->kind = BUSMSG_REVOKE;
    it->arg = key;
    it->at = now_ns();
    it->bytes = sizeof *it + sizeof a->uids[0];
    enqueue(b, it);
}

void bus_touch(bus *b, uint64_t uid)
{
    uv_mutex_lock(&b->mu);
    if (b->ndirty == b->dirty_cap) {
        size_t cap = b->dirty_cap ? b->dirty_cap * 2 : 256;
        uint64_t *v = realloc(b->dirty, cap * sizeof *v);
        if (!v) { /* lost: this uid's channel settles at its next touch */
            uv_mutex_unlock(&b->mu);
            return;
        }
        b->dirty = v;
        b->dirty_cap = cap;
    }
    b->dirty[b->ndirty++] = uid;
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
}

void bus_wait(bus *b, uint64_t uid, uint32_t timeout_ms)
{
    if (b->ops->sessions(b->ctx, uid) <= 0) return; /* no session here: nothing to miss */
    uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000u;
    uv_mutex_lock(&b->mu);
    for (;;) {
        uintptr_t st = (uintptr_t)u64map_get(&b->subs, uid);
        if (st == SUB_CONFIRMED || !b->sub_up || b->stopping) break;
        uint64_t t = now_ns();
        if (t >= end || uv_cond_timedwait(&b->cond, &b->mu, end - t) != 0) {
            if ((uintptr_t)u64map_get(&b->subs, uid) != SUB_CONFIRMED && b->sub_up)
                u64map_put(&b->late, uid, (void *)1); /* resync at the confirmation */
            break;
        }
    }
    uv_mutex_unlock(&b->mu);
}

bool bus_healthy(bus *b)
{
    uv_mutex_lock(&b->mu);
    bool ok = b->sub_up && b->pub_up && b->echoed;
    uv_mutex_unlock(&b->mu);
    return ok;
}

/* ---- subscriptions (the bus thread) ---------------------------------------- */

static void on_sub(redisAsyncContext *ac, void *reply, void *priv);

static size_t user_channel(char *out, uint64_t uid)
{
    return (size_t)snprintf(out, CHAN_MAX, CHAN_USER "%llu", (unsigned long long)uid);
}

/* Sends `cmd` for the n channels of uids (and parley:all after them when
 * `all`), in chunks. */
static void send_channels(bus *b, const char *cmd, const uint64_t *uids, size_t n, bool all)
{
    if (!b->sub.ac || !b->sub.up) return;
    size_t total = n + (all ? 1 : 0);
    const char *argv[ARGV_CHUNK + 1];
    size_t lens[ARGV_CHUNK + 1];
    char (*names)[CHAN_MAX] = malloc(ARGV_CHUNK * sizeof *names);
    if (!names) return; /* the connection's next loss subscribes everything again */
    for (size_t i = 0; i < total;) {
        int argc = 1;
        argv[0] = cmd;
        lens[0] = strlen(cmd);
        for (; i < total && argc <= ARGV_CHUNK; i++, argc++) {
            if (i < n) {
                lens[argc] = user_channel(names[argc - 1], uids[i]);
                argv[argc] = names[argc - 1];
            } else {
                argv[argc] = CHAN_ALL;
                lens[argc] = strlen(CHAN_ALL);
            }
        }
        redisAsyncCommandArgv(b->sub.ac, on_sub, NULL, argc, argv, lens);
    }
    free(names);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void touch_roster(bus *b, uint64_t uid, int count_here);
static void recheck_later(bus *b, uint64_t uid);
static void read_journal(bus *b, uint64_t uid);

/* Settles the touched uids: a channel for every user with a session here,
 * none for the others, and their counts in the roster. */
static void settle(bus *b)
{
    uv_mutex_lock(&b->mu);
    uint64_t *v = b->dirty;
    size_t n = b->ndirty;
    b->dirty = NULL;
    b->ndirty = b->dirty_cap = 0;
    bool leaving = b->leaving;
    uv_mutex_unlock(&b->mu);
    if (!n) { free(v); return; }
    qsort(v, n, sizeof *v, cmp_u64);
    size_t nsub = 0, nunsub = 0;
    uint64_t *sub = malloc(n * sizeof *sub), *unsub = malloc(n * sizeof *unsub);
    if (!sub || !unsub) { free(sub); free(unsub); free(v); return; }
    for (size_t i = 0; i < n; i++) {
        if (i && v[i] == v[i - 1]) continue;
        int count_here = b->ops->sessions(b->ctx, v[i]);
        bool want = count_here > 0, was;
        uv_mutex_lock(&b->mu);
        uintptr_t st = (uintptr_t)u64map_get(&b->subs, v[i]);
        was = st == SUB_PENDING || st == SUB_CONFIRMED || st == SUB_RESUBSCRIBE;
        if (want) {
            if (!st) {
                if (u64map_put(&b->subs, v[i], (void *)(uintptr_t)SUB_PENDING) == ERR_OK)
                    sub[nsub++] = v[i];
            } else if (st == SUB_UNSUBSCRIBING) {
                u64map_put(&b->subs, v[i], (void *)(uintptr_t)SUB_RESUBSCRIBE);
            }
        } else if (st == SUB_PENDING || st == SUB_CONFIRMED) {
            if (b->sub.up) {
                u64map_put(&b->subs, v[i], (void *)(uintptr_t)SUB_UNSUBSCRIBING);
                unsub[nunsub++] = v[i];
            } else {
                u64map_del(&b->subs, v[i]);
            }
        } else if (st == SUB_RESUBSCRIBE) {
            u64map_put(&b->subs, v[i], (void *)(uintptr_t)SUB_UNSUBSCRIBING);
        }
        if (!want) u64map_del(&b->late, v[i]); /* no session left to resync */
        uv_mutex_unlock(&b->mu);
        /* The roster decides who is online in the cluster; without it, this
         * node's own first and last sessions do. */
        if (leaving) continue; /* the others sweep this node's users */
        if (b->pub.ac && b->pub.up) touch_roster(b, v[i], count_here);
        else if (want != was) {
            b->ops->presence(b->ctx, v[i], want);
            recheck_later(b, v[i]); /* the other nodes' contacts hear it after the sync */
        }
    }
    send_channels(b, "SUBSCRIBE", sub, nsub, false);
    send_channels(b, "UNSUBSCRIBE", unsub, nunsub, false);
    free(sub);
    free(unsub);
    free(v);
}

/* The local sessions of every user subscribed here resync. */
static void resync_all(bus *b)
{
    uv_mutex_lock(&b->mu);
    audience *a = audience_new(b->subs.count);
    size_t k = 0;
    for (size_t i = 0; a && i < b->subs.cap; i++) {
        uintptr_t st = (uintptr_t)b->subs.slots[i].val;
        if (b->subs.slots[i].key && (st == SUB_CONFIRMED || st == SUB_PENDING))
            a->uids[k++] = b->subs.slots[i].key;
    }
    uv_mutex_unlock(&b->mu);
    if (!a) return;
    a->n = (uint32_t)k;
    if (k) {
        count(&b->n_resyncs, 1);
        log_info("bus: sessions told to resync", "users=%zu", k);
        b->ops->resync(b->ctx, a);
    }
    audience_unref(a);
}

/* uid of a user channel, or 0 (parley:all, or not ours). */
static uint64_t channel_uid(const char *s, size_t n)
{
    size_t p = strlen(CHAN_USER);
    if (n <= p || n > p + 20 || memcmp(s, CHAN_USER, p)) return 0;
    uint64_t v = 0;
    for (size_t i = p; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    return v;
}

static void on_message(bus *b, const redisReply *chan, const redisReply *data)
{
    if (chan->type != REDIS_REPLY_STRING || data->type != REDIS_REPLY_STRING) return;
    if (chan->len == strlen(b->echo_chan) && !memcmp(chan->str, b->echo_chan, chan->len)) {
        uv_mutex_lock(&b->mu); /* Redis answers both links: healthy */
        b->echoed = true;
        uv_mutex_unlock(&b->mu);
        return;
    }
    bool all = chan->len == strlen(CHAN_ALL) && !memcmp(chan->str, CHAN_ALL, chan->len);
    uint64_t uid = all ? 0 : channel_uid(chan->str, chan->len);
    busmsg m;
    if ((!all && !uid) || busmsg_parse(data->str, data->len, &m) != ERR_OK ||
        (all && m.kind != BUSMSG_RESYNC) || (!all && m.kind == BUSMSG_RESYNC)) {
        if (read_count(&b->n_refused) == 0)
            log_warn("bus: a message that is not parley's was ignored (counted in "
                     "parley_bus_refused_total; logged once)", "bytes=%zu", data->len);
        count(&b->n_refused, 1);
        return;
    }
    if (!strcmp(m.node, b->node)) return; /* our own: delivered here already */
    if (!all && b->ops->deliver(b->ctx, uid, &m) != ERR_OK) {
        count(&b->n_refused, 1);
        return;
    }
    count(&b->n_received, 1);
    if (all) resync_all(b);
}

static void on_subscribed(bus *b, const redisReply *chan, bool unsubscribed)
{
    if (chan->type != REDIS_REPLY_STRING) return;
    if (chan->len == strlen(CHAN_ALL) && !memcmp(chan->str, CHAN_ALL, chan->len)) {
        /* parley:all goes last at a connect: every channel before it is confirmed */
        if (!unsubscribed && b->resync_pending) {
            b->resync_pending = false;
            resync_all(b);
        }
        return;
    }
    uint64_t uid = channel_uid(chan->str, chan->len);
    if (!uid) return;
    bool again = false;
    uv_mutex_lock(&b->mu);
    uintptr_t st = (uintptr_t)u64map_get(&b->subs, uid);
    bool late = false;
    if (!unsubscribed && st == SUB_PENDING) {
        u64map_put(&b->subs, uid, (void *)(uintptr_t)SUB_CONFIRMED);
        late = u64map_del(&b->late, uid) != NULL;
        uv_cond_broadcast(&b->cond);
    } else if (unsubscribed && st == SUB_UNSUBSCRIBING) {
        u64map_del(&b->subs, uid);
    } else if (unsubscribed && st == SUB_RESUBSCRIBE) {
        u64map_put(&b->subs, uid, (void *)(uintptr_t)SUB_PENDING);
        again = true;
    }
    uv_mutex_unlock(&b->mu);
    if (again) send_channels(b, "SUBSCRIBE", &uid, 1, false);
    if (!unsubscribed && st == SUB_PENDING) read_journal(b, uid);
    audience *a = late ? audience_new(1) : NULL;
    if (a) { /* a read went ahead without the channel: catch up now */
        a->uids[0] = uid;
        count(&b->n_resyncs, 1);
        b->ops->resync(b->ctx, a);
        audience_unref(a);
    }
}

static void on_sub(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    const redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *t = r->element[0]->str;
    if (!strcmp(t, "message")) on_message(b, r->element[1], r->element[2]);
    else if (!strcmp(t, "subscribe")) on_subscribed(b, r->element[1], false);
    else if (!strcmp(t, "unsubscribe")) on_subscribed(b, r->element[1], true);
}

/* ---- publishing (the bus thread) ---------------------------------------------- */

static void drain(bus *b);

/* bus_stop's wait: nothing queued, nothing unanswered. */
static void check_drained(bus *b)
{
    if (b->inflight) return;
    uv_mutex_lock(&b->mu);
    if (b->draining && !b->head && !b->drained) {
        b->drained = true;
        uv_cond_broadcast(&b->cond);
    }
    uv_mutex_unlock(&b->mu);
}

static void on_published(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    b->inflight--;
    if (!reply) { /* unanswered at a disconnect: it may not have reached anyone */
        uv_mutex_lock(&b->mu);
        b->lost = true;
        uv_mutex_unlock(&b->mu);
        count(&b->n_dropped, 1);
        return;
    }
    if (((redisReply *)reply)->type == REDIS_REPLY_ERROR) {
        uv_mutex_lock(&b->mu);
        b->lost = true;
        uv_mutex_unlock(&b->mu);
        count(&b->n_dropped, 1);
        return;
    }
    count(&b->n_published, 1);
    uint64_t at = (uint64_t)(uintptr_t)priv, t = now_ns();
    hist_observe(&b->latency, &hist_seconds, t > at ? t - at : 0);
    if (b->inflight == b->o.max_inflight / 2) drain(b);
    if (!b->inflight) check_drained(b);
}

static uint64_t reply_uid(const redisReply *r);

/* The revocation journal `parley:rv:<uid>`: token keys revoked, scored by
 * when the token would have expired anyway. */
static size_t journal_key(char *out, uint64_t uid)
{
    return (size_t)snprintf(out, CHAN_MAX, "parley:rv:%llu", (unsigned long long)uid);
}

static void journal_revoke(bus *b, uint64_t uid, uint64_t key)
{
    char jk[CHAN_MAX], karg[24], exp[24], now[24], ttl[24];
    uint64_t t = (uint64_t)time(NULL) * 1000u, life = b->o.revoke_ttl_ms ? b->o.revoke_ttl_ms : 1;
    size_t jl = journal_key(jk, uid);
    size_t kl = (size_t)snprintf(karg, sizeof karg, "%llu", (unsigned long long)key);
    size_t el = (size_t)snprintf(exp, sizeof exp, "%llu", (unsigned long long)(t + life));
    size_t nl = (size_t)snprintf(now, sizeof now, "%llu", (unsigned long long)t);
    size_t tl = (size_t)snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)life);
    const char *argv[] = {"EVAL", REVOKE_LUA, "1", jk, karg, exp, now, ttl};
    size_t lens[] = {4, sizeof REVOKE_LUA - 1, 1, jl, kl, el, nl, tl};
    redisAsyncCommandArgv(b->pub.ac, NULL, NULL, 8, argv, lens);
}

/* A user's channel was confirmed: the logouts this node may have missed
 * (its channel not yet there, or the bus lost) are read from the journal,
 * and the sessions of those tokens closed. */
static void on_journal(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    const redisReply *r = reply;
    uint64_t uid = (uint64_t)(uintptr_t)priv;
    for (size_t i = 0; r && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        uint64_t key = reply_uid(r->element[i]);
        busmsg m = {.kind = BUSMSG_REVOKE, .arg = key};
        if (key) b->ops->deliver(b->ctx, uid, &m);
    }
}

static void read_journal(bus *b, uint64_t uid)
{
    if (!b->pub.ac || !b->pub.up) return; /* the window stays open: docs/cluster.md */
    char jk[CHAN_MAX], now[24];
    size_t jl = journal_key(jk, uid);
    size_t nl = (size_t)snprintf(now, sizeof now, "%llu", (unsigned long long)time(NULL) * 1000u);
    const char *argv[] = {"ZRANGEBYSCORE", jk, now, "+inf"};
    size_t lens[] = {13, jl, nl, 4};
    redisAsyncCommandArgv(b->pub.ac, on_journal, (void *)(uintptr_t)uid, 4, argv, lens);
}

static void publish_item(bus *b, item *it)
{
    busmsg m = {.kind = it->kind, .arg = it->arg};
    memcpy(m.node, b->node, sizeof m.node);
    const rbuf *json = it->ev ? it->ev->enc[EV_ENC_JSON] : NULL;
    if (it->ev) {
        m.conv = it->ev->conv;
        m.seq = it->ev->seq;
    }
    size_t jlen = json ? json->len : 0;
    char *buf = malloc(BUSMSG_HEADER_MAX + jlen);
    int h = buf ? busmsg_header(&m, buf) : ERR_NOMEM;
    if (h < 0) {
        free(buf);
        count(&b->n_dropped, 1);
        uv_mutex_lock(&b->mu);
        b->lost = true;
        uv_mutex_unlock(&b->mu);
        return;
    }
    if (jlen) memcpy(buf + h, json->data, jlen);
    size_t len = (size_t)h + jlen;
    void *at = (void *)(uintptr_t)it->at;
    if (it->kind == BUSMSG_REVOKE && it->to && it->to->n == 1) journal_revoke(b, it->to->uids[0], it->arg);
    if (!it->to) {
        b->inflight++;
        redisAsyncCommand(b->pub.ac, on_published, at, "PUBLISH %s %b", CHAN_ALL, buf, len);
    }
    for (uint32_t i = 0; it->to && i < it->to->n; i++) {
        char chan[CHAN_MAX];
        size_t cl = user_channel(chan, it->to->uids[i]);
        b->inflight++;
        redisAsyncCommand(b->pub.ac, on_published, at, "PUBLISH %b %b", chan, cl, buf, len);
    }
    free(buf);
}

/* Publishes what is queued, while the publisher is up and under its bound
 * of unanswered commands. */
static void drain(bus *b)
{
    while (b->pub.ac && b->pub.up && b->inflight < b->o.max_inflight) {
        uv_mutex_lock(&b->mu);
        item *it = b->head;
        if (it) {
            b->head = it->next;
            if (!b->head) b->tail = NULL;
            b->queued_bytes -= it->bytes;
        }
        uv_mutex_unlock(&b->mu);
        if (!it) break;
        publish_item(b, it);
        item_free(it);
    }
    /* Events were dropped while the publisher was up (the queue
     * overflowed, no memory, unanswered): once the queue is empty, the
     * others' sessions resync. */
    if (b->pub.ac && b->pub.up) {
        uv_mutex_lock(&b->mu);
        bool lost = b->lost && !b->head;
        if (lost) b->lost = false;
        uv_mutex_unlock(&b->mu);
        if (lost) {
            item it = {.kind = BUSMSG_RESYNC, .at = now_ns()};
            log_warn("bus: events for other nodes were dropped; every node's sessions resync", NULL);
            publish_item(b, &it);
        }
    }
    check_drained(b);
}

/* ---- the roster (the bus thread; bus.h) ------------------------------------------ */

static void roster_error(bus *b, const redisReply *r)
{
    if (read_count(&b->n_roster_errors) == 0)
        log_warn("bus: Redis refused a roster script (counted in parley_bus_roster_errors_total; "
                 "logged once)", "err=\"%s\"", r && r->type == REDIS_REPLY_ERROR ? r->str : "?");
    count(&b->n_roster_errors, 1);
}

static void recheck_later(bus *b, uint64_t uid)
{
    if (b->nrecheck == b->recheck_cap) {
        size_t cap = b->recheck_cap ? b->recheck_cap * 2 : 64;
        uint64_t *v = realloc(b->recheck, cap * sizeof *v);
        if (!v) return; /* lossy */
        b->recheck = v;
        b->recheck_cap = cap;
    }
    b->recheck[b->nrecheck++] = uid;
}

static uint64_t reply_uid(const redisReply *r)
{
    if (r->type == REDIS_REPLY_INTEGER) return r->integer > 0 ? (uint64_t)r->integer : 0;
    if (r->type != REDIS_REPLY_STRING || !r->len || r->len > 20) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->str[i] < '0' || r->str[i] > '9') return 0;
        v = v * 10 + (uint64_t)(r->str[i] - '0');
    }
    return v;
}

/* ops->presence for each uid of an array reply. */
static void presence_list(bus *b, const redisReply *r, bool online)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        uint64_t uid = reply_uid(r->element[i]);
        if (uid) b->ops->presence(b->ctx, uid, online);
    }
}

static void on_touched(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    const redisReply *r = reply;
    uint64_t uid = (uint64_t)(uintptr_t)priv;
    if (!r) { /* lost with the connection (it may have run): told again after the sync */
        recheck_later(b, uid);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_INTEGER) {
        roster_error(b, r);
        b->beat_first = true; /* the next heartbeat writes our whole part */
        recheck_later(b, uid);
        return;
    }
    long long before = r->element[0]->integer, after = r->element[1]->integer;
    if ((before > 0) != (after > 0)) b->ops->presence(b->ctx, uid, after > 0);
}

static void touch_roster(bus *b, uint64_t uid, int count_here)
{
    char ukey[CHAN_MAX], uarg[24], carg[16];
    size_t ul = (size_t)snprintf(ukey, sizeof ukey, ROSTER_USER "%llu", (unsigned long long)uid);
    size_t al = (size_t)snprintf(uarg, sizeof uarg, "%llu", (unsigned long long)uid);
    size_t cl = (size_t)snprintf(carg, sizeof carg, "%d", count_here > 0 ? count_here : 0);
    const char *argv[] = {"EVAL", TOUCH_LUA, "2", ukey, b->node_key, b->node, carg, uarg};
    size_t lens[] = {4, sizeof TOUCH_LUA - 1, 1, ul, strlen(b->node_key), strlen(b->node), cl, al};
    redisAsyncCommandArgv(b->pub.ac, on_touched, (void *)(uintptr_t)uid, 8, argv, lens);
}

static void on_synced(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    const redisReply *r = reply;
    if (!r) return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        roster_error(b, r);
        return;
    }
    count(&b->n_syncs, 1);
    presence_list(b, r->element[0], true);
    presence_list(b, r->element[1], false);
    /* What changed while the roster could not be written: told again to
     * every node's contacts (the job tells the state it finds). */
    uint64_t *v = b->recheck;
    size_t n = b->nrecheck;
    b->recheck = NULL;
    b->nrecheck = b->recheck_cap = 0;
    for (size_t i = 0; i < n; i++) b->ops->presence(b->ctx, v[i], b->ops->sessions(b->ctx, v[i]) > 0);
    free(v);
}

/* This node's whole part of the roster, from the users subscribed here. */
static void sync_roster(bus *b)
{
    uv_mutex_lock(&b->mu);
    size_t n = 0, cap = b->subs.count;
    uint64_t *v = malloc((cap + 1) * sizeof *v);
    for (size_t i = 0; v && i < b->subs.cap; i++) {
        uintptr_t st = (uintptr_t)b->subs.slots[i].val;
        if (b->subs.slots[i].key && st != SUB_UNSUBSCRIBING) v[n++] = b->subs.slots[i].key;
    }
    uv_mutex_unlock(&b->mu);
    size_t argc = 5 + 2 * n;
    const char **argv = v ? malloc(argc * sizeof *argv) : NULL;
    size_t *lens = argv ? malloc(argc * sizeof *lens) : NULL;
    char *text = lens ? malloc(n * 40 + 1) : NULL;
    if (!text) { /* the next heartbeat tries again */
        free(v); free(argv); free(lens);
        b->beat_first = true;
        return;
    }
    argv[0] = "EVAL"; lens[0] = 4;
    argv[1] = SYNC_LUA; lens[1] = sizeof SYNC_LUA - 1;
    argv[2] = "1"; lens[2] = 1;
    argv[3] = b->node_key; lens[3] = strlen(b->node_key);
    argv[4] = b->node; lens[4] = strlen(b->node);
    size_t k = 5;
    char *p = text;
    for (size_t i = 0; i < n; i++) {
        int c = b->ops->sessions(b->ctx, v[i]);
        if (c <= 0) continue; /* closed meanwhile: its touch is on its way */
        int a = sprintf(p, "%llu", (unsigned long long)v[i]);
        argv[k] = p; lens[k++] = (size_t)a; p += a;
        a = sprintf(p, "%d", c);
        argv[k] = p; lens[k++] = (size_t)a; p += a;
    }
    redisAsyncCommandArgv(b->pub.ac, on_synced, NULL, (int)k, argv, lens);
    free(text); free(lens); free(argv); free(v);
}

static void on_beat(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    const redisReply *r = reply;
    if (!r) return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        roster_error(b, r);
        return;
    }
    /* Our heartbeat had lapsed (Redis restarted, or we were silent past the
     * TTL and swept), or the publisher is new: our part is written again. */
    if ((b->beat_first || r->element[0]->integer != 1) && b->pub.ac && b->pub.up && !b->left) {
        if (!b->beat_first)
            log_warn("bus: this node's heartbeat was gone from Redis; its sessions are written "
                     "again", "node=%s", b->node);
        b->beat_first = false;
        sync_roster(b);
    }
    const redisReply *gone = r->element[1];
    if (gone->type == REDIS_REPLY_ARRAY && gone->elements) {
        count(&b->n_swept, gone->elements);
        log_info("bus: a dead node's users are offline", "users=%zu", gone->elements);
        presence_list(b, gone, false);
    }
}

static void beat(bus *b)
{
    char ttl[16];
    size_t tl = (size_t)snprintf(ttl, sizeof ttl, "%u", b->o.node_ttl_ms);
    const char *argv[] = {"EVAL", BEAT_LUA, "2", ROSTER_NODES, b->beat_key, b->node, b->nonce, ttl};
    size_t lens[] = {4, sizeof BEAT_LUA - 1, 1, strlen(ROSTER_NODES), strlen(b->beat_key),
                     strlen(b->node), strlen(b->nonce), tl};
    redisAsyncCommandArgv(b->pub.ac, on_beat, NULL, 8, argv, lens);
    b->next_beat = now_ms() + b->o.node_ttl_ms / 4;
}

/* ---- the queries (read-pool threads; bus.h) --------------------------------------- */

#define QUERY_BACKOFF_MS 2000

/* A connection for a query: a kept one (*kept set), or a new one. NULL
 * while the bus is down or a query failed less than QUERY_BACKOFF_MS ago
 * (a Redis that hangs holds no read-pool thread for long). */
static redisContext *query_take(bus *b, bool fresh, bool *kept)
{
    uv_mutex_lock(&b->mu);
    bool up = b->pub_up && !b->stopping;
    uv_mutex_unlock(&b->mu);
    if (!up) return NULL; /* known to be down: no wait */
    redisContext *c = NULL;
    uv_mutex_lock(&b->qmu);
    bool wait = now_ms() < b->query_until;
    if (!wait && !fresh && b->nqfree) c = b->qfree[--b->nqfree];
    uv_mutex_unlock(&b->qmu);
    if (wait) return NULL;
    *kept = c != NULL;
    if (c) return c;
    struct timeval tv = {BUS_QUERY_TIMEOUT_MS / 1000, (BUS_QUERY_TIMEOUT_MS % 1000) * 1000};
    c = redisConnectWithTimeout(b->host, b->port, tv);
    if (c && !c->err && redisSetTimeout(c, tv) == REDIS_OK) return c;
    if (c) redisFree(c);
    uv_mutex_lock(&b->qmu);
    b->query_until = now_ms() + QUERY_BACKOFF_MS;
    uv_mutex_unlock(&b->qmu);
    return NULL;
}

/* A failure on a new connection starts the backoff; one on a kept
 * connection (Redis restarted, or closed it idle) is tried again fresh. */
static void query_give(bus *b, redisContext *c, bool ok, bool kept)
{
    if (!ok && !kept) {
        uv_mutex_lock(&b->qmu);
        b->query_until = now_ms() + QUERY_BACKOFF_MS;
        uv_mutex_unlock(&b->qmu);
    }
    if (ok && !c->err) {
        uv_mutex_lock(&b->qmu);
        if (b->nqfree < QUERY_CONNS) {
            b->qfree[b->nqfree++] = c;
            c = NULL;
        }
        uv_mutex_unlock(&b->qmu);
    }
    if (c) redisFree(c);
}

/* Runs fn on a query connection: a kept one, and once more on a new one
 * if that failed. ERR_OK, or ERR_UNAVAILABLE. */
static int query(bus *b, bool (*fn)(redisContext *c, void *arg), void *arg)
{
    bool kept = false, ok = false;
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        redisContext *c = query_take(b, attempt > 0, &kept);
        if (!c) return ERR_UNAVAILABLE;
        ok = fn(c, arg);
        query_give(b, c, ok, kept);
        if (!kept) break;
    }
    return ok ? ERR_OK : ERR_UNAVAILABLE;
}

typedef struct online_q {
    const uint64_t *uids;
    size_t n;
    bool *on;
} online_q;

static bool query_online(redisContext *c, void *arg)
{
    const online_q *q = arg;
    const uint64_t *uids = q->uids;
    size_t n = q->n;
    bool *on = q->on;
    for (size_t i = 0; i < n; i++)
        redisAppendCommand(c, "EXISTS " ROSTER_USER "%llu", (unsigned long long)uids[i]);
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        redisReply *r = NULL;
        if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) { ok = false; break; }
        on[i] = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
        if (r->type != REDIS_REPLY_INTEGER) ok = false;
        freeReplyObject(r);
    }
    return ok;
}

int bus_online(bus *b, const uint64_t *uids, size_t n, bool *on)
{
    online_q q = {uids, n, on};
    return n ? query(b, query_online, &q) : ERR_OK;
}

typedef struct sessions_q {
    bus *b;
    uint64_t uid;
    int *n;
} sessions_q;

static bool query_sessions(redisContext *c, void *arg)
{
    const sessions_q *q = arg;
    bus *b = q->b;
    uint64_t uid = q->uid;
    int *n = q->n;
    *n = 0;
    redisReply *r = redisCommand(c, "HGETALL " ROSTER_USER "%llu", (unsigned long long)uid);
    bool ok = r && r->type == REDIS_REPLY_ARRAY;
    for (size_t i = 0; ok && i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) continue;
        if (k->len == strlen(b->node) && !memcmp(k->str, b->node, k->len)) continue;
        long x = strtol(v->str, NULL, 10);
        if (x > 0 && x < 1000000) *n += (int)x;
    }
    if (r) freeReplyObject(r);
    return ok;
}

int bus_remote_sessions(bus *b, uint64_t uid, int *n)
{
    sessions_q q = {b, uid, n};
    return query(b, query_sessions, &q);
}

/* ---- per-user limits over the cluster (bus.h) --------------------------------------- */

void bus_user_sent(bus *b, uint64_t uid)
{
    if (!b->o.user_msgs_per_s) return;
    uv_mutex_lock(&b->mu);
    uintptr_t n = (uintptr_t)u64map_get(&b->sent, uid);
    u64map_put(&b->sent, uid, (void *)(n + 1)); /* lost on no memory: counted by the node alone */
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
}

bool bus_user_blocked(bus *b, uint64_t uid, uint32_t *retry_ms)
{
    if (!b->o.user_msgs_per_s) return false;
    uint64_t t = now_ms();
    uv_mutex_lock(&b->mu);
    uint64_t until = (uint64_t)(uintptr_t)u64map_get(&b->blocked, uid);
    bool blocked = until > t;
    if (until && !blocked) u64map_del(&b->blocked, uid);
    uv_mutex_unlock(&b->mu);
    if (blocked && retry_ms) *retry_ms = (uint32_t)(until - t);
    return blocked;
}

static void on_rated(redisAsyncContext *ac, void *reply, void *priv)
{
    bus *b = ((rlink *)ac->data)->b;
    const redisReply *r = reply;
    if (!r) return;
    if (r->type != REDIS_REPLY_INTEGER) { roster_error(b, r); return; }
    if (r->integer <= 0) return;
    uint64_t until = now_ms() + (uint64_t)(r->integer < 3600000 ? r->integer : 3600000);
    uv_mutex_lock(&b->mu);
    u64map_put(&b->blocked, (uint64_t)(uintptr_t)priv, (void *)(uintptr_t)until);
    uv_mutex_unlock(&b->mu);
}

/* The counts admitted since the last wake, into the users' buckets. */
static void flush_limits(bus *b)
{
    uv_mutex_lock(&b->mu);
    size_t n = b->sent.count;
    uint64_t *uid = n ? malloc(n * sizeof *uid) : NULL;
    uintptr_t *cnt = n ? malloc(n * sizeof *cnt) : NULL;
    size_t k = 0;
    for (size_t i = 0; uid && cnt && i < b->sent.cap; i++)
        if (b->sent.slots[i].key) {
            uid[k] = b->sent.slots[i].key;
            cnt[k++] = (uintptr_t)b->sent.slots[i].val;
        }
    if (n) { /* counted (or, without Redis, left to each node) */
        u64map_free(&b->sent);
        u64map_init(&b->sent);
    }
    bus_cmd *cmds = b->cmds;
    b->cmds = b->cmds_tail = NULL;
    uv_mutex_unlock(&b->mu);
    bool up = b->pub.ac && b->pub.up;
    char rate[16], burst[16];
    size_t rl = (size_t)snprintf(rate, sizeof rate, "%u", b->o.user_msgs_per_s);
    size_t bl = (size_t)snprintf(burst, sizeof burst, "%u", b->o.user_msgs_per_s * 4);
    for (size_t i = 0; up && i < k; i++) {
        char key[CHAN_MAX], num[24];
        size_t kl = (size_t)snprintf(key, sizeof key, "parley:r:%llu", (unsigned long long)uid[i]);
        size_t nl = (size_t)snprintf(num, sizeof num, "%llu", (unsigned long long)cnt[i]);
        const char *argv[] = {"EVAL", RATE_LUA, "1", key, num, rate, burst};
        size_t lens[] = {4, sizeof RATE_LUA - 1, 1, kl, nl, rl, bl};
        redisAsyncCommandArgv(b->pub.ac, on_rated, (void *)(uintptr_t)uid[i], 7, argv, lens);
    }
    free(uid);
    free(cnt);
    for (bus_cmd *c = cmds, *next; c; c = next) {
        next = c->next;
        if (up) redisAsyncFormattedCommand(b->pub.ac, NULL, NULL, c->text, c->len);
        redisFreeCommand(c->text);
        free(c);
    }
}

/* Expired blocks leave the map (the tick's: at most every 100 ms, not at
 * every send), so that it holds the users refused now and no more. */
static void prune_blocked(bus *b)
{
    uint64_t t = now_ms();
    uv_mutex_lock(&b->mu);
    size_t n = 0;
    uint64_t gone[256];
    for (size_t i = 0; b->blocked.count && i < b->blocked.cap; i++) {
        u64map_slot *s = &b->blocked.slots[i];
        if (s->key && (uint64_t)(uintptr_t)s->val <= t) {
            gone[n++] = s->key;
            if (n == sizeof gone / sizeof gone[0]) break; /* the rest at the next tick */
        }
    }
    for (size_t i = 0; i < n; i++) u64map_del(&b->blocked, gone[i]);
    uv_mutex_unlock(&b->mu);
}

static size_t login_keys(char *line_key, char *acct_key, uint64_t line, uint64_t uid, size_t *al)
{
    *al = (size_t)snprintf(acct_key, CHAN_MAX, "parley:la:%llu", (unsigned long long)uid);
    return (size_t)snprintf(line_key, CHAN_MAX, "parley:lf:%016llx", (unsigned long long)line);
}

typedef struct login_q {
    const char **argv;
    const size_t *lens;
    long long wait;            /* the script's answer: ms to wait, 0: go */
} login_q;

static bool query_login(redisContext *c, void *arg)
{
    login_q *q = arg;
    redisReply *r = redisCommandArgv(c, 8, q->argv, q->lens);
    bool ok = r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0;
    if (ok) q->wait = r->integer;
    if (r) freeReplyObject(r);
    return ok;
}

int bus_login_check(bus *b, uint64_t line, uint64_t uid, bool unknown_device, uint32_t *retry_ms)
{
    char lk[CHAN_MAX], ak[CHAN_MAX], burst[16], per[16];
    size_t al, ll = login_keys(lk, ak, line, uid, &al);
    size_t bl = (size_t)snprintf(burst, sizeof burst, "%u", b->o.login_burst);
    size_t pl = (size_t)snprintf(per, sizeof per, "%u", b->o.login_per_min ? b->o.login_per_min : 1);
    const char *argv[] = {"EVAL", LOGIN_CHECK_LUA, "2", lk, ak, unknown_device ? "1" : "0", burst, per};
    size_t lens[] = {4, sizeof LOGIN_CHECK_LUA - 1, 1, ll, al, 1, bl, pl};
    login_q q = {argv, lens, -1};
    if (query(b, query_login, &q) < 0) return ERR_UNAVAILABLE;
    long long wait = q.wait;
    if (wait == 0) return ERR_OK;
    if (retry_ms) *retry_ms = (uint32_t)(wait < 3600000 ? wait : 3600000);
    return ERR_RATE;
}

void bus_login_result(bus *b, uint64_t line, uint64_t uid, bool unknown_device, bool ok)
{
    char lk[CHAN_MAX], ak[CHAN_MAX], burst[16], per[16];
    size_t al, ll = login_keys(lk, ak, line, uid, &al);
    size_t bl = (size_t)snprintf(burst, sizeof burst, "%u", b->o.login_burst);
    size_t pl = (size_t)snprintf(per, sizeof per, "%u", b->o.login_per_min ? b->o.login_per_min : 1);
    bus_cmd *c = calloc(1, sizeof *c);
    int n = -1;
    if (c && ok) {
        const char *argv[] = {"DEL", lk};
        size_t lens[] = {3, ll};
        n = redisFormatCommandArgv(&c->text, 2, argv, lens);
    } else if (c) {
        const char *argv[] = {"EVAL", LOGIN_FAIL_LUA, "2", lk, ak, unknown_device ? "1" : "0", burst, per};
        size_t lens[] = {4, sizeof LOGIN_FAIL_LUA - 1, 1, ll, al, 1, bl, pl};
        n = redisFormatCommandArgv(&c->text, 8, argv, lens);
    }
    if (n < 0) { free(c); return; } /* lossy: the node's own guard still counts it */
    c->len = (size_t)n;
    uv_mutex_lock(&b->mu);
    if (b->cmds_tail) b->cmds_tail->next = c;
    else b->cmds = c;
    b->cmds_tail = c;
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
}

/* ---- hiredis on this loop ------------------------------------------------------------ */

/* hiredis's event hooks on a uv_poll_t. Not Debian's adapters/libuv.h
 * (hiredis 0.14.1): that one returns on a poll error without telling
 * hiredis, so a connection Redis reset (POLLERR) was never seen as lost;
 * here an error status makes hiredis read, find the error and disconnect. */
typedef struct poller {
    uv_poll_t handle;
    redisAsyncContext *ac;     /* NULL once hiredis cleaned up */
    int events;
} poller;

static void on_poll(uv_poll_t *h, int status, int events)
{
    poller *p = h->data;
    if (p->ac && status == 0 && (events & UV_READABLE)) ((rlink *)p->ac->data)->last_rx = now_ms();
    if (p->ac && (status < 0 || (events & UV_READABLE))) redisAsyncHandleRead(p->ac);
    if (p->ac && status == 0 && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void poll_update(poller *p, int add, int del)
{
    p->events = (p->events | add) & ~del;
    if (p->events) uv_poll_start(&p->handle, p->events, on_poll);
    else uv_poll_stop(&p->handle);
}

static void add_read(void *d) { poll_update(d, UV_READABLE, 0); }
static void del_read(void *d) { poll_update(d, 0, UV_READABLE); }
static void add_write(void *d) { poll_update(d, UV_WRITABLE, 0); }
static void del_write(void *d) { poll_update(d, 0, UV_WRITABLE); }

static void poller_closed(uv_handle_t *h) { free(h->data); }

static void cleanup(void *d)
{
    poller *p = d;
    if (!p) return;
    p->ac = NULL;
    uv_close((uv_handle_t *)&p->handle, poller_closed);
}

static int attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    poller *p = calloc(1, sizeof *p);
    if (!p) return REDIS_ERR;
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->handle.data = p;
    p->ac = ac;
    ac->ev.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return REDIS_OK;
}

/* ---- the connections (the bus thread) ------------------------------------------- */

static void set_up(bus *b, rlink *l, bool up)
{
    l->up = up;
    l->last_rx = now_ms();
    uv_mutex_lock(&b->mu);
    b->echoed = false; /* healthy again once the echo went round */
    if (l == &b->sub) b->sub_up = up;
    else b->pub_up = up;
    if (l == &b->pub) b->echo_since = 0;
    if (!up) uv_cond_broadcast(&b->cond); /* bus_wait and bus_stop's drain look again */
    if (l == &b->sub && !up) {
        /* Redis forgot this connection's channels: each wanted one is
         * subscribed again at the next connect, the others are gone. */
        for (size_t i = 0; i < b->subs.cap; i++) {
            u64map_slot *s = &b->subs.slots[i];
            uintptr_t st = (uintptr_t)s->val;
            if (s->key && (st == SUB_CONFIRMED || st == SUB_RESUBSCRIBE)) s->val = (void *)(uintptr_t)SUB_PENDING;
        }
        /* an UNSUBSCRIBE that was never answered: nothing left to wait for */
        uint64_t *gone = malloc((b->subs.count + 1) * sizeof *gone);
        size_t ngone = 0;
        for (size_t i = 0; gone && i < b->subs.cap; i++)
            if (b->subs.slots[i].key && (uintptr_t)b->subs.slots[i].val == SUB_UNSUBSCRIBING)
                gone[ngone++] = b->subs.slots[i].key;
        for (size_t i = 0; i < ngone; i++) u64map_del(&b->subs, gone[i]);
        free(gone);
        u64map_free(&b->late); /* the reconnect resyncs every session */
        u64map_init(&b->late);
        uv_cond_broadcast(&b->cond);
    }
    uv_mutex_unlock(&b->mu);
}

static void retry_later(rlink *l)
{
    l->ac = NULL;
    l->since = 0;
    l->next_try = now_ms() + l->backoff;
    l->backoff = l->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff * 2;
}

/* The channels wanted at a (re)connect, then parley:all. */
static void settle(bus *b);

static void subscribe_all(bus *b)
{
    settle(b); /* touches not yet seen: their channels go in this round */
    uv_mutex_lock(&b->mu);
    /* unsubscribing ones are simply not subscribed again */
    uint64_t *v = malloc((b->subs.count + 1) * sizeof *v);
    size_t n = 0;
    for (size_t i = 0; v && i < b->subs.cap; i++)
        if (b->subs.slots[i].key && (uintptr_t)b->subs.slots[i].val == SUB_UNSUBSCRIBING)
            v[n++] = b->subs.slots[i].key;
    for (size_t i = 0; i < n; i++) u64map_del(&b->subs, v[i]);
    free(v);
    v = malloc((b->subs.count + 1) * sizeof *v);
    n = 0;
    for (size_t i = 0; v && i < b->subs.cap; i++)
        if (b->subs.slots[i].key) v[n++] = b->subs.slots[i].key;
    uv_mutex_unlock(&b->mu);
    b->resync_pending = true;
    const char *echo[] = {"SUBSCRIBE", b->echo_chan};
    size_t echo_len[] = {9, strlen(b->echo_chan)};
    redisAsyncCommandArgv(b->sub.ac, on_sub, NULL, 2, echo, echo_len);
    send_channels(b, "SUBSCRIBE", v, v ? n : 0, true);
    free(v);
}

static void leave_or_beat(bus *b);

static void on_connect(const redisAsyncContext *ac, int status)
{
    rlink *l = ac->data;
    bus *b = l->b;
    if (status != REDIS_OK) {
        log_warn("bus: cannot connect to Redis", "link=%s host=%s port=%d err=\"%s\"", l->name,
                 b->host, b->port, ac->errstr);
        retry_later(l); /* hiredis frees the context */
        return;
    }
    if (l->ever) count(&b->n_reconnects, 1);
    log_info("bus: connected to Redis", "link=%s host=%s port=%d", l->name, b->host, b->port);
    l->ever = true;
    l->since = 0;
    l->backoff = BACKOFF_MIN_MS;
    set_up(b, l, true);
    char name[BUSMSG_NODE_MAX + 16];
    snprintf(name, sizeof name, "parley-%s-%s", b->node, l == &b->sub ? "sub" : "pub");
    redisAsyncCommand(l->ac, NULL, NULL, "CLIENT SETNAME %s", name); /* for CLIENT LIST */
    if (l == &b->sub) {
        subscribe_all(b);
        return;
    }
    b->beat_first = true;
    b->next_beat = 0;
    leave_or_beat(b); /* then this node's part of the roster, written again */
    drain(b); /* what was kept, then a resync if some had to be dropped */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rlink *l = ac->data;
    bus *b = l->b;
    set_up(b, l, false);
    uv_mutex_lock(&b->mu);
    bool stopping = b->stopping;
    uv_mutex_unlock(&b->mu);
    if (!stopping)
        log_warn("bus: lost the connection to Redis", "link=%s err=\"%s\"", l->name,
                 ac->errstr[0] ? ac->errstr : "closed");
    retry_later(l); /* hiredis frees the context */
}

static void connect_link(bus *b, rlink *l)
{
    redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
    if (!ac) { retry_later(l); return; }
    if (ac->err) {
        log_warn("bus: cannot connect to Redis", "link=%s host=%s port=%d err=\"%s\"", l->name,
                 b->host, b->port, ac->errstr);
        redisAsyncFree(ac);
        retry_later(l);
        return;
    }
    ac->data = l;
    if (attach(ac, &b->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        retry_later(l);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    l->ac = ac;
    l->since = now_ms();
}

static void tend(bus *b, rlink *l)
{
    uint64_t t = now_ms();
    if (!l->ac && t >= l->next_try) connect_link(b, l);
    else if (l->ac && !l->up && l->since && t - l->since > b->o.connect_timeout_ms) {
        log_warn("bus: connecting to Redis timed out", "link=%s host=%s port=%d", l->name, b->host,
                 b->port);
        redisAsyncContext *ac = l->ac;
        retry_later(l);
        redisAsyncFree(ac); /* not connected: no disconnect callback */
    }
}

/* The heartbeat when due; once leaving, the heartbeat deleted instead. */
static void leave_or_beat(bus *b)
{
    if (!b->pub.ac || !b->pub.up || b->left) return;
    uv_mutex_lock(&b->mu);
    bool leaving = b->leaving;
    uv_mutex_unlock(&b->mu);
    if (leaving) {
        redisAsyncCommand(b->pub.ac, NULL, NULL, "DEL %s", b->beat_key);
        b->left = true;
        log_info("bus: left the roster; the other nodes sweep this node's users", "node=%s", b->node);
    } else if (now_ms() >= b->next_beat) {
        beat(b);
    }
}

void bus_leave(bus *b)
{
    uv_mutex_lock(&b->mu);
    b->leaving = true;
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
}

/* A link Redis sent nothing for silent_ms, though the echo asks it to
 * every ECHO_EVERY_MS (a frozen Redis, a network cut that no RST tells of):
 * dropped, so that it is made again and its sessions resync. */
static void check_silent(bus *b, rlink *l)
{
    uint64_t t = now_ms();
    if (!l->ac || !l->up || t - l->last_rx <= b->o.silent_ms) return;
    /* The subscriber hears only the echo, which the publisher sends: it is
     * silent by no fault of its own until echoes went out for a while. */
    if (l == &b->sub && (!b->echo_since || t - b->echo_since <= b->o.silent_ms)) return;
    log_warn("bus: Redis sent nothing for too long; the connection is dropped", "link=%s ms=%llu",
             l->name, (unsigned long long)(t - l->last_rx));
    redisAsyncFree(l->ac); /* its disconnect callback marks it down and retries */
}

static void echo(bus *b)
{
    uint64_t t = now_ms();
    if (!b->pub.ac || !b->pub.up || t < b->next_echo) return; /* its reply keeps pub alive */
    b->next_echo = t + ECHO_EVERY_MS;
    if (!b->echo_since) b->echo_since = t;
    redisAsyncCommand(b->pub.ac, NULL, NULL, "PUBLISH %s %s", b->echo_chan, b->nonce);
}

static void on_tick(uv_timer_t *t)
{
    bus *b = t->data;
    check_silent(b, &b->sub);
    check_silent(b, &b->pub);
    echo(b);
    prune_blocked(b);
    tend(b, &b->sub);
    tend(b, &b->pub);
    leave_or_beat(b);
    drain(b);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_wake(uv_async_t *a)
{
    bus *b = a->data;
    uv_mutex_lock(&b->mu);
    bool stopping = b->stopping;
    uv_mutex_unlock(&b->mu);
    if (stopping) {
        uv_timer_stop(&b->timer);
        if (b->sub.ac) redisAsyncFree(b->sub.ac); /* its disconnect callback clears it */
        if (b->pub.ac) redisAsyncFree(b->pub.ac);
        b->sub.ac = b->pub.ac = NULL;
        uv_walk(&b->loop, close_handle, NULL);
        return;
    }
    settle(b);
    leave_or_beat(b);
    flush_limits(b);
    drain(b);
}

static void run(void *arg)
{
    bus *b = arg;
    uv_run(&b->loop, UV_RUN_DEFAULT);
}

/* ---- lifecycle ------------------------------------------------------------------- */

int bus_start(bus **out, const bus_options *o)
{
    if (!o->node || !busmsg_node_ok(o->node) || !o->ops) return ERR_INVALID;
    bus *b = calloc(1, sizeof *b);
    if (!b) return ERR_NOMEM;
    b->o = *o;
    b->o.url = NULL;
    b->o.node = NULL;
    if (!b->o.max_queue_bytes) b->o.max_queue_bytes = BUS_MAX_QUEUE_DEFAULT;
    if (!b->o.max_inflight) b->o.max_inflight = BUS_MAX_INFLIGHT_DEFAULT;
    if (!b->o.connect_timeout_ms) b->o.connect_timeout_ms = BUS_CONNECT_TIMEOUT_DEFAULT;
    if (!b->o.node_ttl_ms) b->o.node_ttl_ms = BUS_NODE_TTL_DEFAULT;
    if (!b->o.silent_ms) b->o.silent_ms = BUS_SILENT_DEFAULT;
    b->ops = o->ops;
    b->ctx = o->ctx;
    snprintf(b->node, sizeof b->node, "%s", o->node);
    snprintf(b->beat_key, sizeof b->beat_key, ROSTER_BEAT "%s", o->node);
    snprintf(b->echo_chan, sizeof b->echo_chan, CHAN_NODE "%s", o->node);
    snprintf(b->node_key, sizeof b->node_key, ROSTER_NODE "%s", o->node);
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(b->nonce, sizeof b->nonce, "%lx.%lx", (unsigned long)ts.tv_sec ^ (unsigned long)getpid(),
                 (unsigned long)ts.tv_nsec);
    }
    if (parse_url(b, o->url ? o->url : "") < 0) { free(b); return ERR_INVALID; }
    b->sub = (rlink){.b = b, .name = "subscriber", .backoff = BACKOFF_MIN_MS};
    b->pub = (rlink){.b = b, .name = "publisher", .backoff = BACKOFF_MIN_MS};
    u64map_init(&b->subs);
    u64map_init(&b->sent);
    u64map_init(&b->blocked);
    u64map_init(&b->late);
    if (uv_loop_init(&b->loop) != 0) { free(b); return ERR_IO; }
    uv_mutex_init(&b->mu);
    uv_mutex_init(&b->qmu);
    uv_cond_init(&b->cond);
    uv_async_init(&b->loop, &b->wake, on_wake);
    b->wake.data = b;
    uv_timer_init(&b->loop, &b->timer);
    b->timer.data = b;
    uv_timer_start(&b->timer, on_tick, 0, TICK_MS);
    /* Set before the thread starts: its ops may run at once, and read it. */
    *out = b;
    if (uv_thread_create(&b->tid, run, b) != 0) {
        *out = NULL;
        uv_walk(&b->loop, close_handle, NULL);
        uv_run(&b->loop, UV_RUN_DEFAULT);
        uv_loop_close(&b->loop);
        uv_cond_destroy(&b->cond);
        uv_mutex_destroy(&b->qmu);
        uv_mutex_destroy(&b->mu);
        free(b);
        return ERR_IO;
    }
    return ERR_OK;
}

#define BUS_DRAIN_MS 2000

void bus_stop(bus *b)
{
    if (!b) return;
    /* What the last commits queued for the other nodes goes first, while
     * the publisher is up, for at most BUS_DRAIN_MS. */
    uv_mutex_lock(&b->mu);
    b->draining = true;
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
    uint64_t end = now_ns() + (uint64_t)BUS_DRAIN_MS * 1000000u;
    uv_mutex_lock(&b->mu);
    for (;;) {
        uint64_t t = now_ns();
        if (b->drained || !b->pub_up || t >= end) break;
        uv_cond_timedwait(&b->cond, &b->mu, end - t);
    }
    if (!b->drained && b->head)
        log_warn("bus: stopped with events still queued for the other nodes",
                 "bytes=%zu", b->queued_bytes);
    b->stopping = true;
    uv_cond_broadcast(&b->cond);
    uv_mutex_unlock(&b->mu);
    uv_async_send(&b->wake);
    uv_thread_join(&b->tid);
    uv_loop_close(&b->loop);
    for (item *it = b->head, *next; it; it = next) {
        next = it->next;
        item_free(it);
    }
    u64map_free(&b->subs);
    u64map_free(&b->sent);
    u64map_free(&b->blocked);
    u64map_free(&b->late);
    for (bus_cmd *c = b->cmds, *next; c; c = next) {
        next = c->next;
        redisFreeCommand(c->text);
        free(c);
    }
    free(b->dirty);
    free(b->recheck);
    for (int i = 0; i < b->nqfree; i++) redisFree(b->qfree[i]);
    uv_cond_destroy(&b->cond);
    uv_mutex_destroy(&b->qmu);
    uv_mutex_destroy(&b->mu);
    free(b);
}

/* ---- metrics ------------------------------------------------------------------------ */

int bus_render_metrics(bus *b, char *out, size_t cap)
{
    uv_mutex_lock(&b->mu);
    bool up = b->sub_up && b->pub_up;
    size_t subs = b->subs.count, queued = b->queued_bytes;
    uv_mutex_unlock(&b->mu);
    int n = snprintf(out, cap,
        "# HELP parley_bus_up Both Redis connections of the bus are up\n"
        "# TYPE parley_bus_up gauge\nparley_bus_up %d\n"
        "# HELP parley_bus_reconnects_total Connections to Redis made again after a loss\n"
        "# TYPE parley_bus_reconnects_total counter\nparley_bus_reconnects_total %llu\n"
        "# HELP parley_bus_published_total PUBLISH commands Redis answered (one per recipient user)\n"
        "# TYPE parley_bus_published_total counter\nparley_bus_published_total %llu\n"
        "# HELP parley_bus_received_total Bus messages from other nodes\n"
        "# TYPE parley_bus_received_total counter\nparley_bus_received_total %llu\n"
        "# HELP parley_bus_dropped_total Events for other nodes dropped (queue full, lossy while "
        "Redis was away, unanswered at a disconnect)\n"
        "# TYPE parley_bus_dropped_total counter\nparley_bus_dropped_total %llu\n"
        "# HELP parley_bus_refused_total Bus messages ignored: not parley's\n"
        "# TYPE parley_bus_refused_total counter\nparley_bus_refused_total %llu\n"
        "# HELP parley_bus_resyncs_total Times this node's sessions were told to resync\n"
        "# TYPE parley_bus_resyncs_total counter\nparley_bus_resyncs_total %llu\n"
        "# HELP parley_bus_subscriptions User channels this node subscribes to\n"
        "# TYPE parley_bus_subscriptions gauge\nparley_bus_subscriptions %zu\n"
        "# HELP parley_bus_queue_bytes Events waiting for the publisher\n"
        "# TYPE parley_bus_queue_bytes gauge\nparley_bus_queue_bytes %zu\n"
        "# HELP parley_bus_roster_syncs_total Times this node wrote its whole part of the roster\n"
        "# TYPE parley_bus_roster_syncs_total counter\nparley_bus_roster_syncs_total %llu\n"
        "# HELP parley_bus_swept_total Users found offline because the node holding them died\n"
        "# TYPE parley_bus_swept_total counter\nparley_bus_swept_total %llu\n"
        "# HELP parley_bus_roster_errors_total Roster scripts Redis refused\n"
        "# TYPE parley_bus_roster_errors_total counter\nparley_bus_roster_errors_total %llu\n",
        up ? 1 : 0, (unsigned long long)read_count(&b->n_reconnects),
        (unsigned long long)read_count(&b->n_published), (unsigned long long)read_count(&b->n_received),
        (unsigned long long)read_count(&b->n_dropped), (unsigned long long)read_count(&b->n_refused),
        (unsigned long long)read_count(&b->n_resyncs), subs, queued,
        (unsigned long long)read_count(&b->n_syncs), (unsigned long long)read_count(&b->n_swept),
        (unsigned long long)read_count(&b->n_roster_errors));
    if (n < 0 || (size_t)n >= cap) return ERR_TOO_LARGE;
    const hist *h[1] = {&b->latency};
    int k = metrics_render_hist(out + n, cap - (size_t)n, "parley_bus_publish_seconds",
                                "Bus: from an event queued to Redis answering its PUBLISH",
                                &hist_seconds, h, 1);
    return k < 0 ? k : n + k;
}
