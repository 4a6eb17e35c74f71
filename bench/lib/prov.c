#include "lib/prov.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"

static void add_counts(worker *w, const rest_counts *k)
{
    stats_add(w->S, ST_PROV_REQS, k->sent);
    stats_add(w->S, ST_PROV_FAIL, k->failed);
    stats_add(w->S, ST_BUSY, k->busy);
}

bool prov_users(worker *w)
{
    rest_req *r = xcalloc((size_t)w->n, sizeof *r);
    for (int i = 0; i < w->n; i++) {
        char name[64], body[160];
        worker_username(name, sizeof name, w->prefix, w->id, i);
        snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"bench-password\"}", name);
        rest_req_set(&r[i], w->t, "POST", "/v1/users", NULL, body);
    }
    rest_counts k = {0};
    int fail = rest_batch(w->t, r, w->n, 8, 180, &w->rng, &k);
    add_counts(w, &k);
    for (int i = 0; i < w->n; i++) {
        w->toks[i][0] = 0;
        json_obj o;
        if (r[i].resp && json_parse_object(r[i].resp, strlen(r[i].resp), &o) == ERR_OK &&
            json_get_str(&o, "token", w->toks[i], sizeof w->toks[i]) < 0)
            w->toks[i][0] = 0;
        w->c[i].tok = w->toks[i][0] ? w->toks[i] : NULL;
        free(r[i].resp);
    }
    free(r);
    if (fail) fprintf(stderr, "worker %d: %d registrations failed\n", w->id, fail);
    return fail == 0;
}

bool prov_convs(worker *w, prov_conv *cv, int n)
{
    rest_req *r = xcalloc((size_t)(n ? n : 1), sizeof *r);
    for (int j = 0; j < n; j++)
        rest_req_set(&r[j], w->t, "POST", "/v1/conversations", w->c[cv[j].owner].tok, cv[j].body);
    rest_counts k = {0};
    int fail = rest_batch(w->t, r, n, 8, 180, &w->rng, &k);
    add_counts(w, &k);
    for (int j = 0; j < n; j++) {
        cv[j].id = 0;
        json_obj o;
        if (r[j].resp && json_parse_object(r[j].resp, strlen(r[j].resp), &o) == ERR_OK &&
            json_get_u64(&o, "id", &cv[j].id) < 0)
            cv[j].id = 0;
        free(r[j].resp);
    }
    free(r);
    if (fail) fprintf(stderr, "worker %d: %d conversations failed\n", w->id, fail);
    return fail == 0;
}

int prov_register(rest_conn *h, const char *name, char *tok)
{
    char body[160];
    snprintf(body, sizeof body, "{\"username\":\"%s\",\"password\":\"bench-password\"}", name);
    rest_resp r;
    int st = rest_do(h, "POST", "/v1/users", NULL, body, &r);
    json_obj o;
    if (st != 201 || json_parse_object(r.body, r.body_len, &o) != ERR_OK ||
        json_get_str(&o, "token", tok, 64) < 0) {
        fprintf(stderr, "register %s: %d\n", name, st);
        return ERR_INVALID;
    }
    return ERR_OK;
}

uint64_t prov_direct(rest_conn *h, const char *tok, const char *with)
{
    char body[160];
    snprintf(body, sizeof body, "{\"type\":\"direct\",\"with\":\"%s\"}", with);
    rest_resp r;
    int st = rest_do(h, "POST", "/v1/conversations", tok, body, &r);
    json_obj o;
    uint64_t id = 0;
    if ((st != 201 && st != 200) || json_parse_object(r.body, r.body_len, &o) != ERR_OK ||
        json_get_u64(&o, "id", &id) < 0)
        return 0;
    return id;
}
