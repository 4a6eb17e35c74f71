/* msg: the client frame codec. One WebSocket text frame (a JSON object)
 * becomes a typed request, or a documented error (docs/protocol.md).
 *
 * Pure: no sockets, no storage, no allocation. All validation of untrusted
 * frames happens here, so it can be unit-tested and fuzzed on its own;
 * proto.c only executes valid requests.
 */
#ifndef PARLEY_MSG_H
#define PARLEY_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define MSG_CMID_MAX 64
#define MSG_REF_MAX 79
#define MSG_LIMIT_MAX 500

enum msg_type {
    MSG_SEND = 1, MSG_SYNC, MSG_DELIVERED, MSG_READ, MSG_TYPING, MSG_INBOX, MSG_PING, MSG_ECHO,
};

typedef struct msg_req {
    uint8_t type;                 /* enum msg_type */
    char ref[MSG_REF_MAX + 1];    /* raw JSON of "id" (send with a valid cmid: of
                                     "cmid"), "" if none */
    uint64_t conv;                /* send, sync, delivered, read, typing */
    uint64_t seq;                 /* delivered, read */
    uint64_t after, before;       /* sync: before = 0 when paging forward after
                                     `after`; UINT64_MAX (neither given): the
                                     latest page */
    uint64_t limit;               /* sync: 1..500, default 50 */
    uint64_t changed_since;       /* inbox: 0 = all */
    char cmid[MSG_CMID_MAX + 1];  /* send: unescaped, NUL-terminated */
    size_t cmid_len;
    const char *body;             /* send: raw JSON of the body, in the frame */
    size_t body_len;
} msg_req;

/* The rules of a message body, the same for every transport: raw JSON
 * text of one value (body[0..len)), neither null nor the empty string "",
 * at most max_text bytes. Returns ERR_OK, ERR_INVALID or ERR_TOO_LARGE,
 * with *message (static) naming what is wrong. */
int msg_check_body(const char *body, size_t len, size_t max_text, const char **message);

/* Parses data[0..len) (valid UTF-8, as WebSocket text frames are).
 * max_text: the largest body (as JSON) a send may carry.
 *
 * Returns ERR_OK with *r filled, or ERR_BAD_JSON (not a JSON object, too
 * deep, too many fields), ERR_INVALID (a missing or wrongly typed field),
 * ERR_UNKNOWN_TYPE or ERR_TOO_LARGE (a send body over max_text; the body
 * rules are msg_check_body's), with
 * *code set to that error's wire code (err_info_of) and *message to a
 * static string naming what is wrong. r->ref is set
 * whenever it could be read, so an error can echo it. r->body points into
 * data. */
int msg_parse(const char *data, size_t len, size_t max_text, msg_req *r, const char **code,
              const char **message);

#endif
