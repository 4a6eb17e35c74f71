/* conn: one client connection, from accept through HTTP and WebSocket to
 * close. Owned by its I/O thread: call these only on that thread.
 *
 * Memory: an idle connection is its conn struct and nothing else. Input is
 * read into the thread's shared buffer; bytes are kept per connection only
 * while a request or frame is incomplete (`in`) or a fragmented message is
 * being assembled (`msg`), in the connection's conn_more, which also holds
 * the rarer states (TLS, a pause, a blocked write) and exists only while
 * one of them does. Output is a queue of references to shared,
 * pre-encoded buffers (rbuf), written with one writev per loop turn; a
 * write watcher (uv_write) is armed only when the kernel buffer is full.
 *
 * Closing: conn_close_ws() sends a close frame; then the connection
 * "lingers": it flushes, half-closes (FIN), discards input and closes the
 * socket on the peer's EOF or after CONN_LINGER_MS. The struct is freed by
 * libuv's close callback, never during another callback of the same conn.
 */
#ifndef PARLEY_CONN_H
#define PARLEY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/rbuf.h"
#include "net/srv.h"
#include "net/wheel.h"
#include "codec/ws.h"

#define CONN_LINGER_MS 2000

enum conn_state {
    CONN_HTTP,    /* reading HTTP requests */
    CONN_WS,      /* open WebSocket */
    CONN_LINGER,  /* closing: flush, FIN, discard input, wait for EOF */
    CONN_CLOSED,  /* uv_close called; freed by its callback */
};

/* What a connection holds only now and then: pending input, a fragmented
 * message, TLS, a pause, a blocked write. Allocated when one of them is
 * needed, freed as soon as all are back to their default (an idle plain
 * connection has none); a TLS connection keeps it for its lifetime. */
typedef struct conn_more {
    uint8_t *in;             /* incomplete input; NULL while idle */
    uint8_t *msg;            /* fragmented message so far; NULL normally */
    struct tls_conn *tls;    /* TLS state (owned), or NULL for plain TCP */
    struct conn_wreq *wreq;  /* the uv_write in flight, if any */
    uint32_t in_len, in_cap;
    uint32_t msg_len, msg_cap;
    ws_reader wr;            /* the message in progress (zero: none) */
    uint32_t pause_until;    /* loop ms, truncated: the client was told to pause until
                              * then (0: no pause; the keepalive tick clears one that
                              * is over, so the 32-bit clock never wraps into it) */
    uint8_t pause_free;      /* refusals left in this pause that cost no strike */
    uint8_t msg_op;          /* opcode of the fragmented message */
} conn_more;

/* An idle connection is this struct alone (fields ordered to leave no
 * hole; docs/benchmarks.md "Idle memory" has the breakdown). */
struct conn {
    uv_tcp_t tcp;            /* first: a handle pointer is a conn pointer; tcp.data
                              * is the conn_more, or NULL (conn_more_of) */
    srv_thread *t;
    uint64_t id;             /* unique; srv_conn() finds the conn by it */
    wheel_node timer;        /* the one deadline this connection has */
    out_node *out_tail;      /* output queue, circular: out_tail->next is its
                              * head; NULL when empty */
    uint32_t out_bytes;      /* queued, not yet written */
    tbucket frames;          /* WebSocket frames rate limit */
    uint16_t flags;
    uint8_t state;           /* enum conn_state */
    uint8_t missed_pings : 2;
    uint8_t strikes : 6;     /* refusals by rate limits; too many closes (1008) */
    uint64_t user[];         /* the WebSocket handler's state (conn_user) */
};

/* The WebSocket handler's per-connection state (its session): the
 * conn_ws_ops.user_size bytes allocated with every connection, zeroed,
 * 8-byte aligned, so that an idle WebSocket is one allocation. The handler
 * fills it before conn_upgrade(); it is the handler's from then until its
 * on_close() returns (called once), and the memory lasts as long as c. */
static inline void *conn_user(conn *c) { return c->user; }

/* The conn whose conn_user() is `user`. */
static inline conn *conn_of_user(void *user)
{
    return (conn *)((char *)user - offsetof(conn, user));
}

/* The connection's occasional state, or NULL while it has none. */
static inline conn_more *conn_more_of(const conn *c) { return (conn_more *)c->tcp.data; }

/* libuv connection callback for a thread's listener. */
void conn_on_accept(uv_stream_t *listener, int status);

/* Queues one WebSocket frame: the frame header goes into the output node
 * and `payload` (may be NULL for none; a reference is taken, the bytes are
 * never copied) follows it in the same writev, so one encoded payload
 * serves every recipient. Returns ERR_OK, ERR_CLOSED if the connection is
 * not an open WebSocket, ERR_NOMEM, or ERR_FULL if the queue would pass
 * max_queue (nothing is queued; the caller decides, usually
 * conn_close_ws(c, 1013)). */
int conn_send_frame(conn *c, uint8_t opcode, rbuf *payload);

/* A frame of the lossy lane (typing, presence): dropped instead of queued
 * when the queue is over half of max_queue; closes 1013 if it is full. */
void conn_send_frame_lossy(conn *c, uint8_t opcode, rbuf *payload);

/* Backpressure (docs/protocol.md "Backpressure"). A refusal by a rate
 * limit tells the client to pause the whole connection. conn_strike()
 * counts one: *retry_ms comes in as the limit's wait for one more frame
 * and goes out as what to tell the client, the rest of the pause.
 *   - Outside a pause the refusal is a strike and starts a pause of
 *     *retry_ms + CONN_RESUME_MS (so a quarter second's worth of the rate is
 *     back when it ends) with CONN_PAUSE_FREE free refusals.
 *   - During a pause it is free while free refusals are left (the frame was
 *     on its way before the client was told), a strike after that.
 * After CONN_MAX_STRIKES strikes the connection is closed with 1008 (the
 * refusal is not answered). Returns true if it was closed. */
bool conn_strike(conn *c, uint32_t *retry_ms);
#define CONN_MAX_STRIKES 50 /* < 64: conn.strikes has 6 bits */
#define CONN_PAUSE_FREE 64
#define CONN_RESUME_MS 250

/* True while the connection is paused: the layer above refuses what the
 * pause covers (sends) with conn_strike(), without taking from its limits,
 * so that no send overtakes a refused one. */
bool conn_paused(conn *c);

/* An accepted request takes one strike off: refusals are forgiven by good
 * behaviour, so only persistent abuse reaches CONN_MAX_STRIKES. */
void conn_forgive(conn *c);

/* Starts the WebSocket close handshake with `code` (reason may be NULL),
 * then lingers. No-op if already closing. */
void conn_close_ws(conn *c, uint16_t code, const char *reason);

/* Queues an HTTP response: head + body in one buffer. With keep_alive false
 * the connection lingers and closes after it. head_only: HEAD (no body).
 * extra: preformatted header lines or NULL. */
int conn_respond(conn *c, int status, const char *content_type, const void *body,
                 size_t len, bool keep_alive, bool head_only, const char *extra);

/* Switches an HTTP connection to WebSocket after queuing the 101 (the
 * handler has filled conn_user(c)), then calls the handler's on_open().
 * Returns on_open's result, or an error before the switch (then on_close
 * is never called). The HTTP handler may also defer it: hold the
 * connection in on_request (conn_hold), keep what the handshake needs
 * (hs->key points into the request: copy it), then call conn_upgrade()
 * later on the connection's thread, while it is still CONN_HTTP, and
 * conn_resume(): frames the client sent after its request are read from
 * then on, as WebSocket frames. */
int conn_upgrade(conn *c, const ws_handshake *hs);

/* Stops reading input (backpressure: HTTP pipelining, WebSocket pages);
 * processing stops after the current request or frame. conn_resume()
 * restarts it and processes what is already buffered; a paused connection
 * (not held) resumes by itself once its output queue has drained. */
void conn_pause(conn *c);
/* Pauses for an asynchronous request: input stays stopped until the
 * handler's conn_resume(), even if output drains meanwhile. */
void conn_hold(conn *c);
void conn_resume(conn *c);
/* Ends a hold but not the pause: input restarts by itself once the output
 * queue has drained (as after conn_pause), at once if nothing is queued.
 * For an answer that filled the queue (a page). No-op if not held. */
void conn_unhold(conn *c);

/* A 64-bit key for an address, for per-address limits: IPv4 exactly (also
 * IPv4-mapped IPv6), IPv6 by its /64 prefix, hashed; 0 for other families. */
uint64_t conn_addr_key(const struct sockaddr_storage *ss);

/* The key of the peer's address (conn_addr_key), 0 if unknown. */
uint64_t conn_peer_key(conn *c);

/* An address as "ip:port" ("[ip]:port" for IPv6), "-" for another
 * family, into buf (n >= 48 holds any); returns buf. */
const char *conn_addr_name(const struct sockaddr_storage *ss, char *buf, size_t n);

/* The peer's address (conn_addr_name), "-" if unknown (e.g. the peer has
 * reset the connection). Returns buf. */
const char *conn_peer_name(conn *c, char *buf, size_t n);

/* Closes the socket now (no close frame; a WebSocket's on_close is told
 * 1006, "aborted"). Idempotent. */
void conn_abort(conn *c);

/* Graceful stop: WebSockets get 1001, idle HTTP connections close. */
void conn_shutdown(conn *c);

/* Writes c's queued output. */
void conn_flush(conn *c);

/* The thread's flush pass (once per loop turn): writes the output of every
 * connection queued since the last pass, including those queued during it. */
void conn_flush_all(srv_thread *t);

/* The wheel's expiry callback for conn timers. */
void conn_expire(wheel_node *n, void *arg);

/* Frees the thread's recycled output nodes (thread exit). */
void conn_free_nodes(srv_thread *t);

#endif
