/* db: what the backends of db.h share: the backend table by name or
 * URL, the size floors of the page budgets, freeing an inbox page. */
#include "store/db.h"

#include <stdlib.h>
#include <string.h>

size_t db_conv_floor(const db_conv *c)
{
    size_t n = 120 + strlen(c->name) + c->last.cmid_len + c->last.body_len;
    for (uint32_t i = 0; i < c->n; i++) n += 3 + strlen(c->members[i].name);
    return n;
}

void db_inbox_free(db_inbox *in)
{
    if (!in) return;
    for (size_t i = 0; i < in->n; i++) free(in->convs[i]);
    free(in->convs);
    free(in);
}

const db_vfs *db_find(const char *name)
{
    if (!name) return NULL;
    if (!strcmp(name, db_lmdb.name)) return &db_lmdb;
    if (!strcmp(name, db_pg.name)) return &db_pg;
    return NULL;
}

const db_vfs *db_for_url(const char *url)
{
    if (!url || !*url) return &db_lmdb;
    if (!strncmp(url, "postgresql://", 13) || !strncmp(url, "postgres://", 11)) return &db_pg;
    return NULL;
}
