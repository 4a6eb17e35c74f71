/* hub: who is connected where, and getting events to them.
 *
 * A session is one authenticated client connection, whatever carries it:
 * it reaches its client only through its sink (send, send_lossy, close),
 * so the hub and the chat service never see a transport. The WebSocket
 * sink (proto.c) is the first; SSE and long-poll sinks plug in the same way.
 *
 * Each I/O thread keeps its own map of user id -> that user's sessions on
 * the thread (no lock: only the thread touches it). A delivery is a
 * "parcel": one event (event.h, encoded once, shared by every recipient)
 * and an audience (user ids, shared by every thread).
 * Parcels reach a thread through srv_post(); the completer (writer.h)
 * queues parcels per thread while it completes a batch and posts each thread's
 * list once per batch (hub_flush), so a batch of N messages costs one
 * wakeup per thread, not N.
 *
 * Presence: a global count of sessions per user, under a mutex touched only
 * when a session opens or closes. A user's first session makes them
 * online, the last one offline.
 */
#ifndef PARLEY_HUB_H
#define PARLEY_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/ratelimit.h"
#include "base/u64map.h"
#include "chat/event.h"
#include "net/srv.h"

typedef struct session session;

/* How a session reaches its client. Each call runs on the session's thread
 * and may close the session (the sink then tells the hub through its
 * transport's close path): callers iterating sessions read next_local
 * first. The event is borrowed; a sink that queues it takes a reference
 * (or one of its encodings'). Codes are WebSocket close codes (1008 policy,
 * 1013 try again), which other transports map to their own. */
typedef struct sink_ops {
    /* Queues ev. A full output queue closes the session (1013: resume by
     * sync). Returns ERR_OK or ERR_CLOSED/ERR_FULL (then it is closing). */
    int (*send)(session *s, event *ev);
    /* The lossy lane (typing, presence): skipped for a slow reader. */
    void (*send_lossy)(session *s, event *ev);
    /* Closes the session's connection with a code and reason. */
    void (*close)(session *s, uint16_t code, const char *reason);
} sink_ops;

/* One authenticated client connection. Owned by its I/O thread. A
 * transport embeds it in its own per-connection state and finds that state
 * from the session's address (the WebSocket sink: in the conn, conn_user). */
struct session {
    const sink_ops *sink;    /* the transport's (borrowed, static) */
    uint64_t id;             /* the connection's id: origin of requests, excluded from echo */
    uint64_t uid;
    uint32_t device;
    uint64_t token_key;      /* first 8 bytes of the token's hash (revocation) */
    char name[33];
    session *next_local;     /* the user's next session on this thread */
    uint64_t typing_conv;    /* typing rate limit: last conversation ... */
    uint64_t typing_at;      /* ... and when (loop ms) */
    int64_t expires;         /* the token's expiry (ms since the epoch) */
    tbucket msgs;            /* sends per connection */
};

/* Shared, immutable list of recipients (atomic refcount). */
typedef struct audience {
    uint32_t refs;
    uint32_t n;
    uint64_t uids[];
} audience;

/* A new audience with room for n uids (n set, uids to fill), one ref. */
audience *audience_new(size_t n);
void audience_unref(audience *a);

typedef struct hub hub;

/* Creates the hub for srv's threads (sets each thread's app pointer).
 * Call before the threads start. */
int hub_new(hub **out, server *srv);
void hub_free(hub *h);

/* Thread-side registry (call on the session's thread). hub_session_add
 * returns whether this made the user online (their first session). */
bool hub_session_add(hub *h, srv_thread *t, session *s);
/* Returns whether this made the user offline (their last session). */
bool hub_session_remove(hub *h, srv_thread *t, session *s);
/* True if the user has a session anywhere. Any thread. */
bool hub_online(hub *h, uint64_t uid);
/* How many sessions the user has, over all threads. Any thread. */
int hub_sessions(hub *h, uint64_t uid);
/* The first session of uid on thread t (follow next_local), or NULL. */
session *hub_local(srv_thread *t, uint64_t uid);

/* Sends ev to every session of the audience's users, except the session
 * with id except (0: none). Any thread; posts right away. Takes its own
 * references to ev and to. */
void hub_send(hub *h, audience *to, event *ev, uint64_t except);

/* The same for the lossy lane (typing, presence): slow readers skip it. */
void hub_send_lossy(hub *h, audience *to, event *ev, uint64_t except);

/* The completer thread only (it completes the writer's batches): the same
 * as hub_send, queued until hub_flush(). */
void hub_queue(hub *h, audience *to, event *ev, uint64_t except);
/* Completer thread only: a call of fn(t, arg) on I/O thread `thread`,
 * queued in order with the parcels (results that need thread-side work).
 * If that thread has already ended, fn(NULL, arg) runs instead, on the
 * caller's thread, so fn can free arg. */
void hub_queue_call(hub *h, int thread, void (*fn)(srv_thread *t, void *arg), void *arg);
/* Completer thread only: posts every thread's queued parcels, one post per
 * thread. Also called once after the threads ended, to free what is left. */
void hub_flush(hub *h);

#endif
