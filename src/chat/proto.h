/* proto: the WebSocket chat protocol (docs/protocol.md, "WebSocket frames").
 *
 * One JSON object per text frame. Every frame is answered or acted on;
 * application errors come back as {"type":"error",...} and never close the
 * connection. The session (hub.h) is c->user from the upgrade on.
 */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/http.h"
#include "codec/ws.h"

typedef struct conn conn;

/* Authenticates an upgrade request (Authorization: Bearer, or ?token=) and
 * upgrades c, or answers 401. */
void proto_upgrade(conn *c, const http_request *req, const ws_handshake *hs);

/* A WebSocket opened on c (c->user is the session). ERR_OK or an error. */
int proto_on_open(conn *c);

/* One complete, UTF-8-valid text message. data is valid during the call. */
void proto_on_text(conn *c, const char *data, size_t len);

/* c is closing: release c->user and set it to NULL. */
void proto_on_close(conn *c);

/* Tells c that the text frame data[0..len) was dropped by a rate limit: an
 * error frame with code rate_limited, retry_after_ms and the frame's ref. */
void proto_rate_limited(conn *c, uint32_t retry_ms, const char *data, size_t len);

/* Periodic check of an open session (keepalive tick): returns false after
 * closing it (its token expired). */
bool proto_on_tick(conn *c);

/* The protocol error code for an err code ("forbidden", "busy", ...). */
const char *proto_error_code(int err);

#endif
