#include "codec/busmsg.h"

#include <stdio.h>
#include <string.h>

static const char *const kinds[BUSMSG_KIND_COUNT] = {
    [BUSMSG_MSG] = "msg",           [BUSMSG_RECEIPT] = "receipt", [BUSMSG_CONV] = "conv",
    [BUSMSG_REMOVED] = "removed",   [BUSMSG_PRESENCE] = "presence",
    [BUSMSG_TYPING] = "typing",     [BUSMSG_REVOKE] = "revoke",   [BUSMSG_RESYNC] = "resync",
};

static int node_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-';
}

int busmsg_node_ok(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= BUSMSG_NODE_MAX || !node_char((unsigned char)s[n])) return 0;
    return n > 0;
}

const char *busmsg_kind_name(int kind)
{
    return kind > 0 && kind < BUSMSG_KIND_COUNT ? kinds[kind] : NULL;
}

int busmsg_header(const busmsg *m, char *out)
{
    const char *k = busmsg_kind_name(m->kind);
    if (!k || !busmsg_node_ok(m->node)) return ERR_INVALID;
    int n = snprintf(out, BUSMSG_HEADER_MAX, "P1 %s %s %llu %llu %llu\n", m->node, k,
                     (unsigned long long)m->conv, (unsigned long long)m->seq,
                     (unsigned long long)m->arg);
    return n > 0 && n < BUSMSG_HEADER_MAX ? n : ERR_INVALID;
}

/* A token of p[*i..len) up to `end` (a space or the newline): its start
 * and length; *i past the delimiter. 0 when empty or unterminated. */
static size_t token(const char *p, size_t len, size_t *i, char end, const char **tok)
{
    size_t s = *i;
    while (*i < len && p[*i] != ' ' && p[*i] != '\n') (*i)++;
    if (*i >= len || p[*i] != end || *i == s) return 0;
    *tok = p + s;
    return (*i)++ - s;
}

/* A canonical decimal u64: digits only, no leading zero (but "0"), fits. */
static int number(const char *t, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20 || (n > 1 && t[0] == '0')) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9') return 0;
        uint64_t d = (uint64_t)(t[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

int busmsg_parse(const char *data, size_t len, busmsg *m)
{
    size_t i = 0, n;
    const char *t;
    memset(m, 0, sizeof *m);
    if ((n = token(data, len, &i, ' ', &t)) != 2 || memcmp(t, "P1", 2)) return ERR_INVALID;
    if (!(n = token(data, len, &i, ' ', &t)) || n > BUSMSG_NODE_MAX) return ERR_INVALID;
    for (size_t k = 0; k < n; k++)
        if (!node_char((unsigned char)t[k])) return ERR_INVALID;
    memcpy(m->node, t, n);
    m->node[n] = 0;
    if (!(n = token(data, len, &i, ' ', &t))) return ERR_INVALID;
    for (int k = 1; k < BUSMSG_KIND_COUNT; k++)
        if (strlen(kinds[k]) == n && !memcmp(kinds[k], t, n)) m->kind = (uint8_t)k;
    if (!m->kind) return ERR_INVALID;
    if (!(n = token(data, len, &i, ' ', &t)) || !number(t, n, &m->conv)) return ERR_INVALID;
    if (!(n = token(data, len, &i, ' ', &t)) || !number(t, n, &m->seq)) return ERR_INVALID;
    if (!(n = token(data, len, &i, '\n', &t)) || !number(t, n, &m->arg)) return ERR_INVALID;
    m->payload = data + i;
    m->payload_len = len - i;
    return ERR_OK;
}
