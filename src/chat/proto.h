/* proto: the WebSocket chat protocol (docs/protocol.md, "WebSocket frames").
 *
 * One JSON object per text frame. Every frame is answered or acted on;
 * application errors come back as {"type":"error",...} and never close the
 * connection (only a client that keeps sending through the pauses that
 * rate-limit refusals ask for is closed, 1008: protocol.md, Backpressure). The session (hub.h) is conn_user(c) (it lives in the conn) from the upgrade on; it
 * reaches the client through the WebSocket sink defined here.
 */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/http.h"
#include "codec/ws.h"

#include "net/srv.h"

typedef struct conn conn;

/* Authenticates an upgrade request (Authorization: Bearer, or ?token=) and
 * upgrades c, or answers 401. */
void proto_upgrade(conn *c, const http_request *req, const ws_handshake *hs);

/* The WebSocket handlers of the chat protocol, for server_create(): open
 * (conn_user(c) is the session filled by proto_upgrade), one text message, a
 * message refused by the frame rate limit (an error frame with code
 * rate_limited, retry_after_ms and the frame's ref), the keepalive tick
 * (closes a session whose token expired), close (releases the session). */
extern const conn_ws_ops proto_ws_ops;


#endif
