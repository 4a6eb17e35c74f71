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

/* MAC over ("parley-device-key-v1", uid, device), keyed by the hash. */
static void device_mac(uint64_t uid, uint32_t device, const char *pwhash, uint8_t mac[16])
{
    uint8_t msg[20 + 12], full[crypto_auth_hmacsha256_BYTES];
    memcpy(msg, "parley-device-key-v1", 20);
    for (int i = 0; i < 8; i++) msg[20 + i] = (uint8_t)(uid >> (56 - 8 * i));
    for (int i = 0; i < 4; i++) msg[28 + i] = (uint8_t)(device >> (24 - 8 * i));
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, (const unsigned char *)pwhash, strlen(pwhash));
    crypto_auth_hmacsha256_update(&st, msg, sizeof msg);
    crypto_auth_hmacsha256_final(&st, full);
    memcpy(mac, full, 16);
    sodium_memzero(&st, sizeof st);
    sodium_memzero(full, sizeof full);
}

void auth_device_key(uint64_t uid, uint32_t device, const char *pwhash,
                     char out[AUTH_DEVICE_KEY_LEN + 1])
{
    uint8_t raw[20];
    for (int i = 0; i < 4; i++) raw[i] = (uint8_t)(device >> (24 - 8 * i));
    device_mac(uid, device, pwhash, raw + 4);
    sodium_bin2base64(out, AUTH_DEVICE_KEY_LEN + 1, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

uint32_t auth_device_key_check(uint64_t uid, const char *pwhash, const char *key, size_t n)
{
    uint8_t raw[20], mac[16];
    size_t len = 0;
    if (n != AUTH_DEVICE_KEY_LEN || !pwhash || !pwhash[0] ||
        sodium_base642bin(raw, sizeof raw, key, n, NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || len != sizeof raw)
        return 0;
    uint32_t device = (uint32_t)raw[0] << 24 | (uint32_t)raw[1] << 16 | (uint32_t)raw[2] << 8 | raw[3];
    if (device == 0) return 0;
    device_mac(uid, device, pwhash, mac);
    bool ok = sodium_memcmp(mac, raw + 4, sizeof mac) == 0;
    sodium_memzero(mac, sizeof mac);
    return ok ? device : 0;
}
