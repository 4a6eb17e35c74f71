/* hub: who is connected where, and getting events to them.
 *
 * A session is one authenticated client connection, whatever carries it:
 * it reaches its client only through its sink (send, send_lossy, close),
 * so the hub and the chat service never see a transport. The WebSocket
 * sink (proto.c) is the first; SSE and long-poll sinks plug in the same way.
 *
 * Each I/O thread keeps its own map of user id -> that user's sessions on
 * the thread. A delivery is a "parcel": one event (event.h, encoded once,
 * shared by every recipient) and an audience (user ids, shared read-only).
 * Parcels reach a thread through srv_post(); the completer (writer.h)
 * queues parcels per thread while it completes a batch and posts each
 * thread's list once per batch (hub_flush), so a batch of N messages costs
 * one wakeup per thread, not N. Each thread's parcels run in the order they
 * were queued, whatever call queued them.
 *
 * Fan-out by conversation (hub_queue_conv). The hub keeps, per
 * conversation, its "route": the sorted member list and, per I/O thread,
 * the members who have a session on that thread (an audience of its own).
 * A message is queued once to each thread whose part is not empty, with
 * that part only: the work is the online members per message, not
 * threads x members, and a conversation with nobody online queues nothing.
 * A route is reused while the member set (the caller's version, or the
 * list itself when unversioned) and its members' presence stay the same.
 * Presence changes reach routes through a journal per thread: when a
 * user's first session opens on a thread, or their last one there closes,
 * the thread appends the uid; a route replays the records it has not seen
 * (a member's part on that thread gains or loses the uid) or, when more
 * have passed than the journal holds, rescans its members for that thread.
 * Other sessions opening or closing change nothing a route holds.
 *
 * Bounds: routes hold at most hub_limits.max_uids uids in all (members and
 * parts) and max_routes conversations, evicting the least recently used;
 * a route unused for idle_ms is dropped at the next hub_flush() (a server
 * with no batch at all keeps its routes, within the bounds); a member
 * list longer than a quarter of max_uids is never cached (each message
 * then goes to every thread with the whole list, as hub_queue). A message
 * to a cached conversation allocates nothing but its parcel slots, whatever
 * the group's size; a part is copied only when a presence change hits it
 * while a parcel still holds it.
 *
 * Threads and ownership:
 * - a session, its thread's uid -> sessions map: the session's I/O thread.
 *   It changes the map (hub_session_add/remove) under its thread's mutex
 *   and reads it without (hub_local, delivery); the completer only reads
 *   the map, and only to learn whether a uid has a session there, under
 *   that mutex. Sessions open and close on their own I/O thread.
 * - the journal of a thread: appended by its I/O thread under that mutex,
 *   read by the completer under it.
 * - the routes, the per-thread outboxes: the completer thread only
 *   (hub_queue*, hub_flush, hub_route_stats, hub_set_limits).
 * - route parts and every audience in a parcel: shared read-only once
 *   queued (atomic refcount); the completer changes a part in place only
 *   while it holds the only reference.
 * - presence counts: a mutex of their own, touched when a session opens or
 *   closes and by hub_online/hub_sessions (any thread).
 * Lock order: none nested (a thread mutex and the presence mutex are never
 * held together).
 *
 * Memory: nothing per session beyond struct session; per I/O thread a
 * journal of HUB_JOURNAL uids (8 bytes each).
 *
 * Presence: a global count of sessions per user. A user's first session
 * makes them online, the last one offline.
 */
#ifndef PARLEY_HUB_H
#define PARLEY_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/audience.h"
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

/* Delivers ev to the sessions on this node only (what another node sent
 * over the bus, a resync): every session of the audience's users, on the
 * lossy lane or not. Any thread; posts right away. */
void hub_send_here(hub *h, audience *to, event *ev, bool lossy);

/* The other nodes of a cluster (chat/bus.h): every hub_send, hub_send_lossy,
 * hub_queue and hub_queue_conv also calls publish(ctx, audience, ev) on the
 * caller's thread, with the whole audience (every member of the
 * conversation), before it delivers here: the one point where events leave
 * the node. publish takes its own references. Call before the threads
 * start; NULL (the default) for none. */
void hub_set_remote(hub *h, void (*publish)(void *ctx, audience *to, event *ev), void *ctx);

/* The completer thread only (it completes the writer's batches): the same
 * as hub_send, queued until hub_flush(), to every thread with the whole
 * audience. For one-off audiences (a removed member, presence). */
void hub_queue(hub *h, audience *to, event *ev, uint64_t except);

/* hub_queue_conv's members_version when the caller has none: the hub then
 * compares the member list with the one its route holds (O(n), no
 * allocation) and rebuilds the route when they differ. */
#define HUB_UNVERSIONED 0

/* Completer thread only: queues ev to the members of conversation conv who
 * are online, except the session with id except (0: none), through conv's
 * route (above), queued until hub_flush() in order with every other parcel.
 * members: the conversation's whole member list, borrowed (the hub copies
 * what it keeps; the caller may free it on return); its order does not
 * matter, and a route delivers a duplicate once. members_version: a value
 * that changes whenever conv's member set changes (compared for equality,
 * per conversation), or HUB_UNVERSIONED. Takes its own references to ev.
 * A NULL members or ev queues nothing; conv 0 (no conversation) and a list
 * too long to cache are sent as hub_queue() does. */
void hub_queue_conv(hub *h, uint64_t conv, uint64_t members_version, audience *members,
                    event *ev, uint64_t except);
/* Completer thread only: a call of fn(t, arg) on I/O thread `thread`,
 * queued in order with the parcels (results that need thread-side work).
 * If that thread has already ended, fn(NULL, arg) runs instead, on the
 * caller's thread, so fn can free arg. */
void hub_queue_call(hub *h, int thread, void (*fn)(srv_thread *t, void *arg), void *arg);
/* Completer thread only: posts every thread's queued parcels, one post per
 * thread, then drops the routes idle for hub_limits.idle_ms. Also called
 * once after the threads ended, to free what is left. */
void hub_flush(hub *h);

/* The route cache's bounds (above). */
#define HUB_JOURNAL 1024u              /* per thread, uids */

typedef struct hub_limits {
    size_t max_routes;                 /* conversations cached */
    size_t max_uids;                   /* uids held by all routes */
    uint64_t idle_ms;                  /* a route unused this long is dropped */
} hub_limits;

#define HUB_LIMITS_DEFAULT {4096, (size_t)1 << 20, 60000}

/* Completer thread only (or before the threads start): new bounds; routes
 * over them go at once. */
void hub_set_limits(hub *h, const hub_limits *lim);

typedef struct hub_route_stats {
    size_t routes;                     /* conversations cached */
    size_t uids;                       /* uids they hold */
    uint64_t hits;                     /* hub_queue_conv answered from an unchanged route */
    uint64_t builds;                   /* routes built from a member list (new or changed) */
    uint64_t replays;                  /* a thread's part updated from its journal */
    uint64_t rescans;                  /* a thread's part rebuilt (journal overrun) */
    uint64_t evictions;                /* routes dropped (idle or over the bounds) */
    uint64_t uncached;                 /* hub_queue_conv calls sent as hub_queue */
} hub_route_stats;

/* Completer thread only. */
void hub_route_stats_get(hub *h, hub_route_stats *out);

#endif
