/* prov: provisioning over REST: the users and conversations a run needs.
 *
 * A worker registers one user per connection (rest_batch: 8 keep-alive
 * connections, 16 requests pipelined on each) and keeps the tokens in its
 * own table; then it creates the conversations its scenario asks for. The
 * parent registers its few users (storm background, catch-up) one by one.
 * Start parleyd with --insecure-fast-kdf: each registration then costs the
 * minimum Argon2id.
 */
#ifndef BENCH_PROV_H
#define BENCH_PROV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/rest.h"
#include "lib/worker.h"

/* Registers user worker_username(i) for every connection i of w and points
 * c[i].tok at its token (in w->toks). False when any failed. */
bool prov_users(worker *w);

/* One conversation to create: `body` (JSON, owned by the caller) posted
 * with connection `owner`'s token. */
typedef struct prov_conv {
    char *body;
    int owner;
    uint64_t id;             /* filled: the new conversation's id, 0 if it failed */
} prov_conv;

/* Creates them all (pipelined). False when any failed. */
bool prov_convs(worker *w, prov_conv *cv, int n);

/* The parent's way: registers `name` on h, its token into tok (64 bytes). */
int prov_register(rest_conn *h, const char *name, char *tok);
/* Creates a direct conversation with `with` using tok; its id or 0. */
uint64_t prov_direct(rest_conn *h, const char *tok, const char *with);

#endif
