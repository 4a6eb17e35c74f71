/* bus: the events of this node reach the sessions on the other nodes of a
 * cluster, and theirs reach ours, over Redis pub/sub (--bus
 * redis://HOST:PORT; docs/cluster.md "The bus").
 *
 * Channels are per user: `parley:u:<uid>`. A node subscribes to the
 * channel of every user who has a session on it (from their first session
 * on the node to their last), and publishes each event once per recipient
 * user, after the commit, at the one point where this node's own fan-out
 * starts (hub.h's remote hook). Redis's own channel table is then the
 * registry of which nodes host whom. One more channel, `parley:all`, is
 * subscribed by every node: a node that had to drop events it owed the
 * others (its queue to Redis overflowed while Redis was away) says `resync`
 * there once it is back. Messages are codec/busmsg.h; a node skips its own
 * (by node id) and counts and drops what it cannot parse.
 *
 * Pub/sub is lossy, so a session is never left silently stale:
 * - when the subscriber connection comes back after a loss (Redis
 *   restarted, the network cut), every channel is subscribed again and,
 *   once Redis confirmed the last of them, every local session is told to
 *   resync (ops->resync: the `resync` frame, docs/protocol.md);
 * - a user's first read on this node after their session opened waits (at
 *   most its bound) until their channel is confirmed (bus_wait), so that
 *   nothing committed after that read can be missed;
 * - events to publish while the publisher is away are kept in order, up to
 *   bus_options.max_queue_bytes; past it they are dropped and `resync` goes
 *   to parley:all when the publisher is back. Lossy kinds (presence,
 *   typing) are never kept.
 *
 * Threads: the bus has its own thread and libuv loop, which owns both Redis
 * connections (hiredis on its libuv adapter: one subscribes, one
 * publishes; the publisher also keeps the roster below). bus_publish,
 * bus_revoke and bus_touch may be called from any thread: they queue under
 * a mutex and wake the bus thread. The ops run on the bus thread (sessions
 * also on read-pool threads). bus_wait, bus_online and
 * bus_remote_sessions run on a read-pool thread; bus_healthy and
 * bus_render_metrics on any.
 *
 * Ownership: the bus takes its own references to the audiences and events
 * it queues and drops them once published (or dropped). Strings in
 * bus_options are copied.
 */
#ifndef PARLEY_BUS_H
#define PARLEY_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/audience.h"
#include "chat/event.h"
#include "codec/busmsg.h"

typedef struct bus bus;

/* What the bus asks of the node, on the bus thread. */
typedef struct bus_ops {
    /* A message from another node for the local sessions of uid (m's
     * payload is valid during the call only). Kinds msg, receipt, conv,
     * removed, presence, typing and revoke. ERR_OK, or ERR_INVALID for a
     * payload the node refuses (counted as refused). */
    int (*deliver)(void *ctx, uint64_t uid, const busmsg *m);
    /* The local sessions of these users must resync (the audience is
     * borrowed; take a reference to keep it). */
    void (*resync)(void *ctx, audience *uids);
    /* How many sessions uid has on this node now (0: none). Any thread
     * (the bus thread and read-pool threads call it). */
    int (*sessions)(void *ctx, uint64_t uid);
    /* uid came online in the cluster (its first session anywhere) or went
     * offline (its last one closed, or the node holding it died): the node
     * tells uid's contacts. While Redis is away, this node's own first and
     * last sessions decide instead. */
    void (*presence)(void *ctx, uint64_t uid, bool online);
} bus_ops;

typedef struct bus_options {
    const char *url;               /* redis://HOST[:PORT] (6379) */
    const char *node;              /* this node's id (busmsg_node_ok) */
    const bus_ops *ops;
    void *ctx;
    size_t max_queue_bytes;        /* events kept for the publisher while it is away */
    uint32_t max_inflight;         /* PUBLISH commands awaiting Redis's reply, at most */
    uint32_t connect_timeout_ms;   /* a connection not up by then is retried */
    uint32_t node_ttl_ms;          /* a node whose heartbeat is older is dead (its sessions stop counting) */
    uint32_t silent_ms;            /* a link that read nothing this long is dropped (the echo is 1 s) */
    uint64_t revoke_ttl_ms;        /* a logout is kept in the journal this long (the token's life) */
    uint32_t user_msgs_per_s;      /* a user's messages over the cluster, per second (burst 4x); 0: none */
    uint32_t login_burst;          /* failed logins of unknown devices per account, at most ... */
    uint32_t login_per_min;        /* ... refilled at this many a minute */
} bus_options;

#define BUS_MAX_QUEUE_DEFAULT ((size_t)64 << 20)
#define BUS_MAX_INFLIGHT_DEFAULT 65536u
#define BUS_CONNECT_TIMEOUT_DEFAULT 2000u
#define BUS_NODE_TTL_DEFAULT 10000u
#define BUS_SILENT_DEFAULT 3500u

/* Whether url is a bus URL bus_start accepts. */
bool bus_url_ok(const char *url);

/* Starts the bus thread (*out is set before it starts: the ops may run
 * at once), which connects (and reconnects, with backoff)
 * on its own: the bus is usable at once and healthy once both connections
 * are up. ERR_INVALID (bad URL or node id), ERR_NOMEM, ERR_IO. */
int bus_start(bus **out, const bus_options *o);
/* Stops the thread, closing both connections (what is still queued is
 * dropped) and frees the bus. Call after every caller of the others. */
void bus_stop(bus *b);

/* Publishes ev to the channels of to's users. Any thread. */
void bus_publish(bus *b, audience *to, event *ev);
/* Tells the other nodes to close uid's sessions opened with token key
 * `key` (a logout). Any thread. The logout is also kept in a journal in
 * Redis (`parley:rv:<uid>`, for revoke_ttl_ms), written before the
 * message: a node reads a user's journal whenever their channel is
 * confirmed, so that a node which was off the bus, or whose session of
 * the token opened while the message went by, still closes it. */
void bus_revoke(bus *b, uint64_t uid, uint64_t key);
/* A session of uid opened or closed on this node: the bus thread asks
 * ops->sessions, subscribes or unsubscribes uid's channel to match, and
 * writes the count in the roster. Any thread. */
void bus_touch(bus *b, uint64_t uid);

/* The roster (Redis, written by the bus thread): which nodes hold how many
 * sessions of each user, `parley:p:<uid>` (node -> count); each node's
 * users, `parley:pn:<node>`; the nodes, `parley:nodes`, each alive while
 * its heartbeat `parley:node:<id>` (refreshed every node_ttl_ms / 4, gone
 * after node_ttl_ms) stands. Every node sweeps the dead nodes' entries out
 * at its heartbeat; the users left without a session go offline (ops->
 * presence on the node that swept them). A node whose own heartbeat or
 * connection was lost writes its whole part again.
 *
 * The queries below block (a read-pool thread: a small pool of blocking
 * Redis connections, bounded by BUS_QUERY_TIMEOUT_MS) and answer
 * ERR_UNAVAILABLE at once while the bus is down: the caller then goes by
 * this node alone. */
#define BUS_QUERY_TIMEOUT_MS 1000u
/* on[i]: whether uids[i] has a session on any node. */
int bus_online(bus *b, const uint64_t *uids, size_t n, bool *on);
/* *n: uid's sessions on the other nodes. */
int bus_remote_sessions(bus *b, uint64_t uid, int *n);
/* A read of uid's (a read-pool thread): if uid has a session on this node,
 * waits until their channel is confirmed, at most timeout_ms, or until the
 * bus is found down (its return then brings a resync). A wait that ends at
 * its bound leaves a mark: uid's sessions here are told to resync when the
 * channel is confirmed (what was committed meanwhile may have missed them). */
void bus_wait(bus *b, uint64_t uid, uint32_t timeout_ms);

/* The node is stopping (call before its sessions close): the roster is no
 * longer written, and the node's heartbeat is deleted, so that the other
 * nodes sweep its users at their next heartbeat (those without a session
 * elsewhere go offline for their contacts). Any thread. */
void bus_leave(bus *b);

/* Per-user limits over the cluster (docs/cluster.md, "Presence and limits
 * across nodes"). Messages: each user has one token bucket in Redis
 * (`parley:r:<uid>`, user_msgs_per_s, burst 4x) besides each node's own;
 * the counts of the messages a node admitted are added by the bus thread
 * (a script per user per wake, never on the send path), and a node told
 * the bucket is empty refuses the user's messages for the time it names.
 * The bound is then held over the cluster one round trip late. */
void bus_user_sent(bus *b, uint64_t uid);        /* any thread; asynchronous */
/* Whether uid's bucket is empty as this node last heard: *retry_ms then. Any thread. */
bool bus_user_blocked(bus *b, uint64_t uid, uint32_t *retry_ms);

/* Failed logins over the cluster, per the guard's line (guard_line_key):
 * `parley:lf:<line>` counts the failures in a row and holds the delay
 * (the guard's: 1 s from the third, doubling, at most 60 s); an unknown
 * device's failures also take from the account's bucket `parley:la:<uid>`
 * (login_burst, login_per_min). The check blocks (a read-pool thread):
 * ERR_OK, ERR_RATE with *retry_ms, or ERR_UNAVAILABLE (the bus is down:
 * the node's own guard alone then). The result is asynchronous (any
 * thread): a failure counted, a success clearing the line. */
int bus_login_check(bus *b, uint64_t line, uint64_t uid, bool unknown_device, uint32_t *retry_ms);
void bus_login_result(bus *b, uint64_t line, uint64_t uid, bool unknown_device, bool ok);

/* Both connections up. Any thread. */
bool bus_healthy(bus *b);

/* Prometheus text: parley_bus_* (up, reconnects, published, received,
 * dropped, refused, subscriptions, queue, publish latency) into
 * out[0..cap). Returns the length, or ERR_TOO_LARGE. Any thread. */
int bus_render_metrics(bus *b, char *out, size_t cap);

#endif
