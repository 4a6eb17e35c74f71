/* wsc: one WebSocket client connection of the load generator, on the
 * project's codecs: the upgrade answer is parsed with libparley's response
 * parser (client_http.h) and its Sec-WebSocket-Accept checked with
 * ws_accept_key(); frames are parsed with ws_parse_frame() (client role)
 * and written with ws_frame_header() / ws_mask().
 *
 * The connection owns its socket and two buffers: `in` holds only a
 * partial frame (or a partial upgrade answer) and `out` only what the
 * kernel did not take; both are NULL while idle, so 15,000 idle
 * connections cost the generator little. The event loop that watches the
 * socket is the worker's (worker.h): wsc never touches epoll.
 */
#ifndef BENCH_WSC_H
#define BENCH_WSC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client_backoff.h"
#include "codec/ws.h"
#include "lib/sock.h"

enum wsc_state {
    WSC_NONE,        /* never started */
    WSC_WAIT,        /* waiting for its (re)connect time */
    WSC_CONNECTING,  /* TCP connect in progress */
    WSC_HANDSHAKE,   /* upgrade request sent */
    WSC_OPEN,        /* 101 received, waiting for the server's hello */
    WSC_READY,       /* usable */
    WSC_DEAD         /* gave up */
};

typedef struct wsc {
    int fd;                  /* -1 while closed */
    uint8_t st;              /* enum wsc_state */
    bool counted;            /* counted in the worker's open connections */
    uint32_t idx;            /* index in its worker */
    int64_t pair;            /* floor: the ?pair=N of the upgrade, -1 for none */
    int outstanding;         /* requests awaiting an answer (the scenario's count) */
    const char *tok;         /* bearer token, borrowed (the worker's table), or NULL */
    uint8_t *in;             /* owned: pending input, NULL when none */
    uint32_t in_len, in_cap;
    uint8_t *out;            /* owned: output the kernel has not taken */
    uint32_t out_len, out_cap;
    int64_t t0;              /* start of the current connect */
    int64_t when;            /* WSC_WAIT: when to connect */
    client_backoff bo;       /* libparley's reconnect backoff */
} wsc;

/* A closed connection with index idx (backoff base 1 s, cap 60 s). */
void wsc_init(wsc *c, uint32_t idx);

/* Starts a non-blocking connect. ERR_OK or ERR_IO. */
int wsc_connect(wsc *c, const sock_target *t, int src_i);

/* Queues the upgrade request (GET /v1/ws or /v1/ws?pair=N, subprotocol
 * parley.v1.json, the token as Authorization: Bearer) and tries to send it.
 * ERR_OK or ERR_IO. */
int wsc_send_upgrade(wsc *c, const sock_target *t);

typedef struct wsc_upgrade {
    int status;                /* the HTTP status */
    uint64_t retry_after_ms;   /* its Retry-After, 0 if none */
} wsc_upgrade;

/* Parses the upgrade answer in c->in: its length (> 0) for a valid 101
 * (the bytes are removed from c->in; frames may follow), ERR_AGAIN, or
 * ERR_PROTOCOL (malformed, not 101, or a wrong Sec-WebSocket-Accept) with
 * *u set when a status was read. */
int wsc_parse_upgrade(wsc *c, wsc_upgrade *u);

/* Writes data, queueing in c->out what the kernel does not take now.
 * ERR_OK (sent or queued) or ERR_IO (broken, or over 64 MiB queued). */
int wsc_write(wsc *c, const void *data, size_t len);

/* A masked frame with the given opcode and payload, through wsc_write. */
int wsc_send_frame(wsc *c, uint8_t opcode, const void *payload, size_t n);

/* Sends queued output. ERR_OK (all gone), ERR_AGAIN (kernel full) or ERR_IO. */
int wsc_flush(wsc *c);

/* Appends received bytes to c->in. */
void wsc_keep_input(wsc *c, const uint8_t *data, size_t n);

/* Parses one server frame from buf[0..len) (client role, messages up to
 * 64 MiB): the frame's size, ERR_AGAIN, or an error with *close_code. */
int wsc_parse_frame(uint8_t *buf, size_t len, ws_frame *f, uint16_t *close_code);

/* Closes the socket (with RST when rst, so no TIME_WAIT lingers into the
 * next measurement) and frees both buffers. Safe when already closed. */
void wsc_close(wsc *c, bool rst);

#endif
