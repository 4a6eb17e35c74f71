/* pf: parley's WebSocket frames as the load generator reads and writes
 * them (docs/protocol.md).
 *
 * Reading: pf_parse() runs the project's JSON parser (codec/json.h
 * json_parse_object) over a whole frame and names its type; the getters
 * read fields from the index. Everything points into the caller's frame.
 *
 * Writing: the generator's frames carry their own timing. A "send" has
 *   cmid  "<k>.<t>"            message number k, send time t (ns, monotonic)
 *   body  "<t> <k> <m> xxx..."  the same t and k, the sender's member index
 *                               m, padded to the body size
 * so whichever process receives the ack or the msg can measure it.
 */
#ifndef BENCH_PF_H
#define BENCH_PF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/json.h"

enum pf_type {
    PF_OTHER, PF_HELLO, PF_ACK, PF_MSG, PF_ECHO, PF_SEND, PF_INBOX, PF_HISTORY, PF_ERROR,
    PF_PRESENCE, PF_RECEIPT, PF_CONV, PF_PONG
};

typedef struct pf_frame {
    uint8_t type;            /* enum pf_type; PF_OTHER when unknown */
    json_obj o;              /* top-level fields, into the frame */
} pf_frame;

/* Parses one frame. ERR_OK, or ERR_INVALID (not a JSON object, no "type"). */
int pf_parse(const char *p, size_t n, pf_frame *f);

/* A non-negative integer field; dflt when absent or not one. */
uint64_t pf_u64(const pf_frame *f, const char *key, uint64_t dflt);
/* True when the field is the literal true. */
bool pf_true(const pf_frame *f, const char *key);
/* A string field unescaped into out (cap bytes); its length or < 0 (out ""). */
int pf_str(const pf_frame *f, const char *key, char *out, size_t cap);

/* ack / floor echo of a send: t of "cmid":"<k>.<t>", or -1. */
int64_t pf_cmid_time(const pf_frame *f);
/* msg / floor echo: t, k and m of the body "<t> <k> <m> ...", or -1. */
int64_t pf_body_time(const pf_frame *f, uint64_t *k, uint32_t *m);

/* Writes a send frame for message k of member m into conv at time t with a
 * body of body_bytes (32..16000) into out (cap >= body_bytes + 256).
 * Returns its length. */
size_t pf_send(char *out, size_t cap, uint64_t conv, uint64_t k, int64_t t, uint32_t m,
               int body_bytes);

/* The bytes of the cmid plus the body (as stored: unescaped) of the frame
 * pf_send(.., k, t, m, body_bytes) writes; 0 when t < 0. */
size_t pf_send_payload(uint64_t k, int64_t t, uint32_t m, int body_bytes);

/* An echo frame of exactly n bytes ({"type":"echo","d":"xxx..."}, n >= 24)
 * into out (cap > n). Returns n. */
size_t pf_echo(char *out, size_t cap, size_t n);

#endif
