/* busmsg: the codec of what cluster nodes say to each other on the bus
 * (chat/bus.h; docs/cluster.md "The bus"). One bus message is one Redis
 * pub/sub payload: a header line, then the event's JSON text exactly as
 * the clients receive it (docs/protocol.md), or nothing:
 *
 *   P1 <node> <kind> <conv> <seq> <arg>\n<payload>
 *
 * node: the publishing node's id (1-64 of A-Z a-z 0-9 . _ -); kind: one of
 * the names below; conv, seq, arg: decimal, no sign, no leading zeros,
 * at most 20 digits and 2^64-1. arg is the revoked token's key for
 * `revoke`, else 0. The recipient user is the channel's, not the
 * message's. Anything else is refused whole (ERR_INVALID): a node never
 * acts on a message it did not fully understand.
 *
 * Pure: no I/O, no allocation. busmsg_parse's payload points into its
 * input.
 */
#ifndef PARLEY_BUSMSG_H
#define PARLEY_BUSMSG_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define BUSMSG_NODE_MAX 64
/* Room for the longest header: "P1 " + node + kind + three 20-digit
 * numbers, the spaces, the newline, and snprintf's NUL. */
#define BUSMSG_HEADER_MAX (3 + BUSMSG_NODE_MAX + 1 + 8 + 3 * 21 + 1 + 1)

enum busmsg_kind {
    BUSMSG_MSG = 1,   /* "msg": a message frame (normal lane) */
    BUSMSG_RECEIPT,   /* "receipt" */
    BUSMSG_CONV,      /* "conv": a conversation created or changed */
    BUSMSG_REMOVED,   /* "removed": the recipient left a conversation */
    BUSMSG_PRESENCE,  /* "presence" (lossy lane) */
    BUSMSG_TYPING,    /* "typing" (lossy lane) */
    BUSMSG_REVOKE,    /* "revoke": close the recipient's sessions of token key `arg` */
    BUSMSG_RESYNC,    /* "resync": a node lost events; every session resyncs */
    BUSMSG_KIND_COUNT
};

typedef struct busmsg {
    char node[BUSMSG_NODE_MAX + 1];
    uint8_t kind;                 /* enum busmsg_kind */
    uint64_t conv, seq, arg;
    const char *payload;          /* into the input (parse) */
    size_t payload_len;
} busmsg;

/* Whether s is a valid node id (the --node-id rule above). */
int busmsg_node_ok(const char *s);

/* The kind's name, or NULL. */
const char *busmsg_kind_name(int kind);

/* Writes m's header line (the payload is not copied) into out, which has
 * room for BUSMSG_HEADER_MAX bytes. Returns its length, or ERR_INVALID
 * for a bad node id or kind. */
int busmsg_header(const busmsg *m, char *out);

/* Parses one bus message: ERR_OK with *m (payload into data), or
 * ERR_INVALID. */
int busmsg_parse(const char *data, size_t len, busmsg *m);

#endif
