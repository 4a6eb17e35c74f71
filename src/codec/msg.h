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
#define MSG_LIMIT_MAX 500          /* sync: messages per page */
#define MSG_INBOX_LIMIT_DEFAULT 100 /* inbox: conversations per page */
#define MSG_INBOX_LIMIT_MAX 1000
#define MSG_PAGE_MAX 96            /* an inbox page token, NUL included */

/* Where a walk of the inbox stands: the `next` token of a page (and the
 * `page` of the request for the next one). Pages follow the inbox order,
 * last_ts descending then conversation id descending; the next page lists
 * what comes after (ts, conv) in that order. */
typedef struct msg_page {
    uint64_t since;     /* the walk's changed_since (0: all) */
    uint64_t snapshot;  /* the store clock when the walk began: its cursor */
    int64_t ts;         /* the last listed conversation's last_ts */
    uint64_t conv;      /* and its id (>= 1) */
} msg_page;

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
    uint64_t limit;               /* sync: 1..500, default 50; inbox: 1..1000,
                                     default 100 */
    uint64_t changed_since;       /* inbox: 0 = all (with a page: its since) */
    bool has_page;                /* inbox: continue a walk at `page` */
    msg_page page;
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

/* An inbox page token: "SINCE.SNAPSHOT.TS.CONV" in decimal (TS may be
 * negative), opaque to clients. msg_page_format writes it NUL-terminated
 * into out[MSG_PAGE_MAX] and returns its length; msg_page_parse reads
 * exactly that form (no signs but TS's '-', no spaces, no leading zeros
 * but "0", no overflow, snapshot >= since, conv >= 1): ERR_OK or
 * ERR_INVALID. */
size_t msg_page_format(const msg_page *p, char *out);
int msg_page_parse(const char *s, size_t n, msg_page *p);

#endif
