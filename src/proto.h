/* proto: the session layer over a WebSocket connection.
 *
 * Text messages are JSON objects with a "type". This is the transport's
 * placeholder protocol, replaced by the chat protocol (docs/protocol.md):
 *   {"type":"ping"}           -> {"type":"pong"}
 *   {"type":"echo",...}       -> the same message, byte for byte (diagnostic
 *                                and benchmark use)
 *   anything else             -> {"type":"error","code":...,"message":...}
 *                                and the connection stays open
 * Error codes: bad_json (not JSON, or not an object), bad_request (no string
 * "type"), unknown_type.
 */
#ifndef PARLEY_PROTO_H
#define PARLEY_PROTO_H

#include <stddef.h>

typedef struct conn conn;

/* A WebSocket opened on c. Returns ERR_OK, or an error to refuse it. */
int proto_on_open(conn *c);

/* One complete, UTF-8-valid text message. data is valid during the call. */
void proto_on_text(conn *c, const char *data, size_t len);

/* c is closing: release c->user and set it to NULL. */
void proto_on_close(conn *c);

#endif
