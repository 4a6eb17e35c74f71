#include "chat/guard.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "base/err.h"
#include "base/u64map.h"

typedef struct table {
    uv_mutex_t mu;
    u64map map;    /* key -> entry (malloc'd, owned) */
} table;

typedef struct entry {
    tbucket a, b;      /* addresses: handshakes, logins; users: messages, group changes;
                        * accounts: a = the failed-login ceiling */
    uint32_t failures; /* lines: failed logins in a row */
    uint32_t inflight; /* lines: attempts being checked now */
    uint64_t until;    /* lines: no login before this */
} entry;

struct guard {
    tlimit handshake, login, user_msg, user_group, account;
    table addrs, accounts, lines, users;
};

static void table_init(table *t)
{
    uv_mutex_init(&t->mu);
    u64map_init(&t->map);
}

static void table_clear(table *t)
{
    for (size_t i = 0; i < t->map.cap; i++) free(t->map.slots[i].val);
    u64map_free(&t->map);
}

static void table_free(table *t)
{
    table_clear(t);
    uv_mutex_destroy(&t->mu);
}

/* The entry for key, created if needed (under t->mu). NULL on OOM. */
static entry *get(table *t, uint64_t key)
{
    if (!key) key = 1; /* an unknown address (u64map keys are never 0): one shared entry */
    entry *e = u64map_get(&t->map, key);
    if (e) return e;
    if (t->map.count >= GUARD_MAX_ENTRIES) table_clear(t);
    e = calloc(1, sizeof *e);
    if (e && u64map_put(&t->map, key, e) < 0) { free(e); return NULL; }
    return e;
}

int guard_new(guard **out, const config *cfg)
{
    guard *g = calloc(1, sizeof *g);
    if (!g) return ERR_NOMEM;
    g->handshake = (tlimit){(float)cfg->rate_handshakes, (float)cfg->rate_handshakes * 5};
    g->login = (tlimit){(float)cfg->rate_logins, (float)cfg->rate_logins * 4};
    g->user_msg = (tlimit){(float)cfg->rate_user_msgs, (float)cfg->rate_user_msgs * 4};
    g->account = (tlimit){GUARD_ACCOUNT_PER_MIN / 60.0f, GUARD_ACCOUNT_BURST};
    g->user_group = (tlimit){(float)cfg->rate_groups / 60.0f, (float)cfg->rate_groups};
    table_init(&g->addrs);
    table_init(&g->accounts);
    table_init(&g->lines);
    table_init(&g->users);
    *out = g;
    return ERR_OK;
}

void guard_free(guard *g)
{
    if (!g) return;
    table_free(&g->addrs);
    table_free(&g->accounts);
    table_free(&g->lines);
    table_free(&g->users);
    free(g);
}

uint64_t guard_now(void)
{
    return uv_hrtime() / 1000000;
}

static int take(table *t, uint64_t key, const tlimit *l, bool second, uint64_t now, uint32_t *retry)
{
    if (l->rate <= 0) return ERR_OK;
    uv_mutex_lock(&t->mu);
    entry *e = get(t, key);
    bool ok = !e || tb_take(second ? &e->b : &e->a, l, now, 1, retry);
    uv_mutex_unlock(&t->mu);
    return ok ? ERR_OK : ERR_RATE;
}

int guard_handshake(guard *g, uint64_t addr, uint64_t now, uint32_t *retry_ms)
{
    return take(&g->addrs, addr, &g->handshake, false, now, retry_ms);
}

int guard_login_addr(guard *g, uint64_t addr, uint64_t now, uint32_t *retry_ms)
{
    return take(&g->addrs, addr, &g->login, true, now, retry_ms);
}

int guard_user_msg(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms)
{
    return take(&g->users, uid, &g->user_msg, false, now, retry_ms);
}

int guard_user_group(guard *g, uint64_t uid, uint64_t now, uint32_t *retry_ms)
{
    return take(&g->users, uid, &g->user_group, true, now, retry_ms);
}

/* The line's key: (uid, address) or (uid, device), mixed (splitmix64
 * finaliser) with a different seed for each kind so they never meet. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t guard_line_key(const guard_login *l)
{
    uint64_t k = l->device ? mix(0x6465766963650000ull ^ l->device)
                           : mix(0x61646472ull ^ mix(l->addr));
    return mix(k ^ l->uid * 0x9e3779b97f4a7c15ull);
}

int guard_login_begin(guard *g, const guard_login *l, uint64_t now, uint32_t *retry_ms)
{
    uint64_t key = guard_line_key(l);
    int rc = ERR_OK;
    uv_mutex_lock(&g->lines.mu);
    entry *e = get(&g->lines, key);
    if (e && e->until > now) {
        rc = ERR_RATE;
        if (retry_ms) *retry_ms = (uint32_t)(e->until - now);
    } else if (e && (e->inflight >= 3 || (e->inflight && e->failures + e->inflight >= 3))) {
        rc = ERR_RATE; /* at most 3 checks at once; one at a time after failures */
        if (retry_ms) *retry_ms = 1000;
    } else if (e) {
        e->inflight++;
    }
    uv_mutex_unlock(&g->lines.mu);
    if (rc < 0 || l->device) return rc;
    /* An unknown device also needs a token of the account's ceiling. */
    bool ok = true;
    uv_mutex_lock(&g->accounts.mu);
    entry *a = get(&g->accounts, l->uid);
    if (a) ok = tb_take(&a->a, &g->account, now, 1, retry_ms);
    uv_mutex_unlock(&g->accounts.mu);
    if (ok) return ERR_OK;
    uv_mutex_lock(&g->lines.mu);
    e = u64map_get(&g->lines.map, key);
    if (e && e->inflight) e->inflight--;
    uv_mutex_unlock(&g->lines.mu);
    return ERR_RATE;
}

void guard_login_cancel(guard *g, const guard_login *l)
{
    uint64_t key = guard_line_key(l);
    uv_mutex_lock(&g->lines.mu);
    entry *e = u64map_get(&g->lines.map, key);
    if (e && e->inflight) e->inflight--; /* its failures and delay stay */
    uv_mutex_unlock(&g->lines.mu);
    if (l->device) return;
    uv_mutex_lock(&g->accounts.mu);
    entry *a = u64map_get(&g->accounts.map, l->uid);
    if (a) a->a.used = a->a.used > 1.0f ? a->a.used - 1.0f : 0.0f;
    uv_mutex_unlock(&g->accounts.mu);
}

void guard_login_end(guard *g, const guard_login *l, bool ok, uint64_t now)
{
    uint64_t key = guard_line_key(l);
    uv_mutex_lock(&g->lines.mu);
    entry *e = u64map_get(&g->lines.map, key);
    if (e && e->inflight) e->inflight--;
    if (ok) {
        if (e && !e->inflight) free(u64map_del(&g->lines.map, key));
        else if (e) { e->failures = 0; e->until = 0; }
    } else if (e) {
        e->failures++;
        if (e->failures >= 3) {
            uint32_t shift = e->failures - 3 < 6 ? e->failures - 3 : 6;
            uint64_t delay = 1000ull << shift;
            e->until = now + (delay > 60000 ? 60000 : delay);
        }
    }
    uv_mutex_unlock(&g->lines.mu);
    if (!ok || l->device) return;
    /* A success gives its token back: only failures use up the ceiling. */
    uv_mutex_lock(&g->accounts.mu);
    entry *a = u64map_get(&g->accounts.map, l->uid);
    if (a) {
        a->a.used = a->a.used > 1.0f ? a->a.used - 1.0f : 0.0f;
        if (a->a.used <= 0.0f) free(u64map_del(&g->accounts.map, l->uid));
    }
    uv_mutex_unlock(&g->accounts.mu);
}
