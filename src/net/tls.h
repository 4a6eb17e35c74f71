/* tls: TLS for parleyd's sockets (OpenSSL, memory BIOs).
 *
 * The event loop owns the socket; OpenSSL only transforms bytes: ciphertext
 * read from the socket goes in with tls_feed(), plaintext comes out of
 * tls_read(); plaintext to send goes in with tls_write(), and every record
 * OpenSSL produces (handshake, data, close_notify) is taken with
 * tls_take() and written to the socket by the caller. TLS 1.2 and 1.3
 * only, forward-secret AEAD ciphers only. Idle connections release their
 * OpenSSL buffers (SSL_MODE_RELEASE_BUFFERS).
 */
#ifndef PARLEY_TLS_H
#define PARLEY_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

/* A server context from PEM files (certificate chain, private key).
 * ERR_INVALID after logging why (unreadable, mismatched). */
int tls_ctx_new(tls_ctx **out, const char *cert_file, const char *key_file);
void tls_ctx_free(tls_ctx *ctx);

/* A connection's TLS state, or NULL when out of memory. */
tls_conn *tls_conn_new(tls_ctx *ctx);
void tls_conn_free(tls_conn *t);

/* Hands ciphertext from the socket to the engine. ERR_OK or ERR_NOMEM. */
int tls_feed(tls_conn *t, const uint8_t *p, size_t n);

/* Decrypts into out[0..cap). Returns the bytes produced (> 0), 0 when it
 * needs more ciphertext (or is mid-handshake), ERR_CLOSED after the peer's
 * close_notify, ERR_PROTOCOL on a TLS error (the connection must close). */
int tls_read(tls_conn *t, uint8_t *out, size_t cap);

/* Encrypts all of p[0..n). ERR_OK or ERR_PROTOCOL. */
int tls_write(tls_conn *t, const uint8_t *p, size_t n);

/* Queues a close_notify alert. */
void tls_close(tls_conn *t);

/* Bytes of records waiting to be sent. */
size_t tls_pending(tls_conn *t);

/* Moves up to cap bytes of waiting records into out; returns the count. */
size_t tls_take(tls_conn *t, uint8_t *out, size_t cap);

#endif
