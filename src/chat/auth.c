#include "chat/auth.h"

#include <sodium.h>
#include <string.h>

int auth_init(void)
{
    return sodium_init() < 0 ? ERR_IO : ERR_OK;
}

int auth_username(const char *in, size_t n, char *out)
{
    if (n < AUTH_NAME_MIN || n > AUTH_NAME_MAX) return ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) return ERR_INVALID;
        out[i] = c;
    }
    out[n] = 0;
    return (int)n;
}

bool auth_password_ok(size_t n)
{
    return n >= AUTH_PASS_MIN && n <= AUTH_PASS_MAX;
}

int auth_hash(const char *pass, size_t n, bool fast, char *out)
{
    char buf[crypto_pwhash_STRBYTES];
    unsigned long long ops = fast ? crypto_pwhash_OPSLIMIT_MIN : crypto_pwhash_OPSLIMIT_INTERACTIVE;
    size_t mem = fast ? crypto_pwhash_MEMLIMIT_MIN : crypto_pwhash_MEMLIMIT_INTERACTIVE;
    if (crypto_pwhash_str_alg(buf, pass, n, ops, mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return ERR_NOMEM;
    size_t len = strlen(buf);
    if (len > AUTH_HASH_MAX) return ERR_NOMEM;
    memcpy(out, buf, len + 1);
    return ERR_OK;
}

bool auth_verify(const char *hash, const char *pass, size_t n)
{
    return crypto_pwhash_str_verify(hash, pass, n) == 0;
}

void auth_new_token(char token[AUTH_TOKEN_LEN + 1], uint8_t hash[32])
{
    uint8_t raw[32];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(token, AUTH_TOKEN_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    crypto_hash_sha256(hash, (const unsigned char *)token, AUTH_TOKEN_LEN);
    sodium_memzero(raw, sizeof raw);
}

int auth_token_hash(const char *token, size_t n, uint8_t hash[32])
{
    if (n != AUTH_TOKEN_LEN) return ERR_INVALID;
    for (size_t i = 0; i < n; i++) {
        char c = token[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return ERR_INVALID;
    }
    crypto_hash_sha256(hash, (const unsigned char *)token, n);
    return ERR_OK;
}
