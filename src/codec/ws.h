/* ws: a pure WebSocket (RFC 6455) codec: handshake, frames, messages.
 *
 * No sockets, no globals, no allocation. The frame parser takes (buf, len)
 * and returns bytes consumed, ERR_AGAIN ("need more") or an error with the
 * close code to send. No extension is negotiated, so every RSV bit must be 0.
 *
 * Close codes the codec produces:
 *   1002 protocol error: RSV bits, unknown opcode, mask rule broken, control
 *        frame > 125 bytes or fragmented, bad continuation sequence, 64-bit
 *        length with the top bit set, close payload of 1 byte, invalid close
 *        code received
 *   1007 invalid UTF-8 in a text message (checked across fragments, failing
 *        fast) or in a close reason
 *   1009 message larger than ws_limits.max_message (known from the header)
 */
#ifndef PARLEY_WS_H
#define PARLEY_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "codec/http.h"

enum ws_opcode {
    WS_OP_CONT   = 0x0,
    WS_OP_TEXT   = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE  = 0x8,
    WS_OP_PING   = 0x9,
    WS_OP_PONG   = 0xA,
};

enum ws_close {
    WS_CLOSE_NORMAL      = 1000,
    WS_CLOSE_GOING_AWAY  = 1001,
    WS_CLOSE_PROTOCOL    = 1002,
    WS_CLOSE_UNSUPPORTED = 1003,
    WS_CLOSE_NO_STATUS   = 1005, /* never sent on the wire */
    WS_CLOSE_ABNORMAL    = 1006, /* never sent on the wire */
    WS_CLOSE_BAD_DATA    = 1007,
    WS_CLOSE_POLICY      = 1008,
    WS_CLOSE_TOO_BIG     = 1009,
    WS_CLOSE_INTERNAL    = 1011,
    WS_CLOSE_TRY_AGAIN   = 1013,
};

/* Which side we are: a server receives masked frames, a client unmasked. */
enum ws_role { WS_SERVER = 0, WS_CLIENT = 1 };

#define WS_MAX_HEADER 14      /* 2 + 8 (length) + 4 (mask) */
#define WS_MAX_CONTROL 125    /* control frame payload limit */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct ws_limits {
    size_t max_message;  /* whole (reassembled) message bytes; default 65536 */
} ws_limits;

void ws_limits_default(ws_limits *l);

typedef struct ws_frame {
    bool fin;
    uint8_t opcode;       /* enum ws_opcode */
    bool masked;
    uint64_t len;         /* payload length */
    size_t header_len;    /* 2..14 */
    uint8_t *payload;     /* into the caller's buffer, already unmasked */
} ws_frame;

/* Per-connection message state, carried between frames (16 bytes). */
typedef struct ws_reader {
    uint64_t msg_len;     /* bytes of the fragmented message so far */
    uint32_t utf8;        /* utf8_feed() state of the text message so far */
    uint8_t opcode;       /* opcode of the message in progress; 0 if none */
} ws_reader;

/* ---- frames ------------------------------------------------------------ */

/* Parses one frame from buf[0..len).
 *
 * Returns the frame's total size (header + payload) when it is all present,
 * ERR_AGAIN when more bytes are needed (buf untouched), or ERR_PROTOCOL /
 * ERR_TOO_LARGE with *close_code set. Header-level rules are checked as soon
 * as the header is present, before the payload arrives: RSV bits, opcode,
 * masking per role (a server rejects unmasked frames, a client masked ones),
 * control frames (fin set, len <= 125), the 64-bit length's top bit, and
 * len > lim->max_message (1009). When the frame is complete its payload is
 * unmasked in place and f->payload points at it.
 *
 * Frame-level only: fragment sequencing, message size across fragments and
 * UTF-8 are ws_reader_check()'s job. */
int ws_parse_frame(uint8_t *buf, size_t len, enum ws_role role,
                   const ws_limits *lim, ws_frame *f, uint16_t *close_code);

/* Checks a parsed frame against the message in progress and advances r.
 *
 * Data frames: a continuation with no message in progress, or a new TEXT /
 * BINARY frame while one is in progress -> 1002; message total above
 * max_message -> 1009; text payload not valid UTF-8 so far (or incomplete
 * at fin) -> 1007. On a frame with fin set the message is complete and r is
 * reset. Control frames (may arrive between fragments) leave r alone; a
 * CLOSE payload of 1 byte or an invalid code (ws_close_code_ok) -> 1002, a
 * reason that is not UTF-8 -> 1007.
 *
 * Returns ERR_OK, or ERR_PROTOCOL / ERR_TOO_LARGE / ERR_UTF8 with
 * *close_code set. It stores no payload: assembling fragments is the
 * caller's job. */
int ws_reader_check(ws_reader *r, const ws_frame *f, const ws_limits *lim,
                    uint16_t *close_code);

/* Writes a frame header for a payload of `len` bytes into out and returns
 * its length (2..14). mask: NULL for unmasked (server) frames, else a 4-byte
 * key that is written into the header; the caller masks the payload with
 * ws_mask(). */
size_t ws_frame_header(uint8_t out[WS_MAX_HEADER], uint8_t opcode, bool fin,
                       uint64_t len, const uint8_t *mask);

/* XORs data[0..n) with key, as if data started `offset` bytes into the
 * payload (so a payload can be masked in pieces). */
void ws_mask(uint8_t *data, size_t n, const uint8_t key[4], size_t offset);

/* True if `code` may appear in a received close frame: 1000-1003,
 * 1007-1014 except 1004-1006 and 1015, and 3000-4999. */
bool ws_close_code_ok(uint16_t code);

/* Builds a close payload (2-byte big-endian code + reason, the reason cut
 * at a UTF-8 boundary to fit 125 bytes) into out. Returns its length. */
size_t ws_close_payload(uint8_t out[WS_MAX_CONTROL], uint16_t code,
                        const char *reason);

/* ---- handshake --------------------------------------------------------- */

typedef struct ws_handshake {
    http_str key;        /* Sec-WebSocket-Key as sent (24 base64 chars) */
    const char *protocol; /* chosen subprotocol (one of `protocols`), or NULL */
} ws_handshake;

/* Computes Sec-WebSocket-Accept = base64(SHA-1(key + WS_GUID)) into out
 * (28 characters + NUL). Returns ERR_OK. Uses OpenSSL's SHA-1. */
int ws_accept_key(const char *key, size_t key_len, char out[29]);

/* Validates an upgrade request (RFC 6455 section 4.2.1) and picks a
 * subprotocol: the first one in the client's Sec-WebSocket-Protocol list
 * that is in the NULL-terminated `protocols` array (NULL array: none).
 *
 * Returns ERR_OK with *hs filled, or an error with *status:
 *   400: not GET, not HTTP/1.1, no "Upgrade: websocket", no "upgrade" token
 *        in Connection, missing or malformed Sec-WebSocket-Key (must be
 *        base64 of 16 bytes)
 *   426: Sec-WebSocket-Version missing or not 13 (answer with
 *        "Sec-WebSocket-Version: 13"). */
int ws_handshake_check(const http_request *req, const char *const *protocols,
                       ws_handshake *hs, int *status);

/* Writes the "101 Switching Protocols" response for *hs into out[0..cap).
 * Returns its length, or ERR_TOO_LARGE. */
int ws_handshake_response(char *out, size_t cap, const ws_handshake *hs);

#endif
