#include "net/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>

#include "base/log.h"

struct tls_ctx {
    SSL_CTX *ssl;
};

struct tls_conn {
    SSL *ssl;
    BIO *in, *out; /* owned by ssl */
};

static void log_ssl_error(const char *what, const char *file)
{
    unsigned long e = ERR_get_error();
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    log_error(what, "file=%s err=\"%s\"", file ? file : "-", buf);
    ERR_clear_error();
}

int tls_ctx_new(tls_ctx **out, const char *cert_file, const char *key_file)
{
    SSL_CTX *ssl = SSL_CTX_new(TLS_server_method());
    if (!ssl) return ERR_NOMEM;
    SSL_CTX_set_min_proto_version(ssl, TLS1_2_VERSION);
    /* TLS 1.2: forward secrecy and AEAD only (1.3's suites all qualify). */
    SSL_CTX_set_cipher_list(ssl, "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL");
    SSL_CTX_set_options(ssl, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ssl, cert_file) != 1) {
        log_ssl_error("cannot load TLS certificate", cert_file);
        SSL_CTX_free(ssl);
        return ERR_INVALID;
    }
    if (SSL_CTX_use_PrivateKey_file(ssl, key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ssl) != 1) {
        log_ssl_error("cannot load TLS key (or it does not match the certificate)", key_file);
        SSL_CTX_free(ssl);
        return ERR_INVALID;
    }
    tls_ctx *c = malloc(sizeof *c);
    if (!c) { SSL_CTX_free(ssl); return ERR_NOMEM; }
    c->ssl = ssl;
    *out = c;
    return ERR_OK;
}

void tls_ctx_free(tls_ctx *ctx)
{
    if (!ctx) return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

tls_conn *tls_conn_new(tls_ctx *ctx)
{
    tls_conn *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ssl = SSL_new(ctx->ssl);
    t->in = BIO_new(BIO_s_mem());
    t->out = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->in || !t->out) {
        SSL_free(t->ssl);
        BIO_free(t->in);
        BIO_free(t->out);
        free(t);
        return NULL;
    }
    BIO_set_mem_eof_return(t->in, -1); /* empty means "want more", not EOF */
    SSL_set_bio(t->ssl, t->in, t->out);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_conn_free(tls_conn *t)
{
    if (!t) return;
    SSL_free(t->ssl); /* frees the BIOs */
    free(t);
}

int tls_feed(tls_conn *t, const uint8_t *p, size_t n)
{
    while (n) {
        int k = BIO_write(t->in, p, n > INT32_MAX ? INT32_MAX : (int)n);
        if (k <= 0) return ERR_NOMEM;
        p += k;
        n -= (size_t)k;
    }
    return ERR_OK;
}

int tls_read(tls_conn *t, uint8_t *out, size_t cap)
{
    int k = SSL_read(t->ssl, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
    if (k > 0) return k;
    switch (SSL_get_error(t->ssl, k)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return ERR_CLOSED;
    default:
        ERR_clear_error();
        return ERR_PROTOCOL;
    }
}

int tls_write(tls_conn *t, const uint8_t *p, size_t n)
{
    while (n) {
        int k = SSL_write(t->ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
        if (k <= 0) { ERR_clear_error(); return ERR_PROTOCOL; }
        p += k;
        n -= (size_t)k;
    }
    return ERR_OK;
}

void tls_close(tls_conn *t)
{
    if (SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t tls_pending(tls_conn *t)
{
    return BIO_ctrl_pending(t->out);
}

size_t tls_take(tls_conn *t, uint8_t *out, size_t cap)
{
    int k = BIO_read(t->out, out, cap > INT32_MAX ? INT32_MAX : (int)cap);
    return k > 0 ? (size_t)k : 0;
}
