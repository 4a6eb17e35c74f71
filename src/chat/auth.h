/* auth: account rules, password hashing and tokens. Pure functions except
 * auth_hash/auth_verify, which are deliberately slow (Argon2id) and must run
 * off the event loops (libuv's thread pool).
 *
 * Usernames: 3-32 bytes of a-z 0-9 _ . -, starting with a letter or digit,
 * case-insensitive (normalised to lowercase). Passwords: 8-256 bytes.
 * Tokens: 32 random bytes as base64url (43 characters); only their SHA-256
 * is stored.
 */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define AUTH_NAME_MIN 3
#define AUTH_NAME_MAX 32
#define AUTH_PASS_MIN 8
#define AUTH_PASS_MAX 256
#define AUTH_TOKEN_LEN 43
#define AUTH_HASH_MAX 128

/* Initialises libsodium. ERR_IO if it cannot. Call once at start-up. */
int auth_init(void);

/* Checks and lowercases a username into out (AUTH_NAME_MAX + 1 bytes).
 * Returns its length or ERR_INVALID. */
int auth_username(const char *in, size_t n, char *out);

/* True if a password length is within the rules. */
bool auth_password_ok(size_t n);

/* Argon2id hash of a password into out (AUTH_HASH_MAX + 1 bytes, a
 * NUL-terminated PHC string). fast: the minimum cost, for benchmark
 * provisioning only (--insecure-fast-kdf). Slow: call off the loop.
 * Returns ERR_OK or ERR_NOMEM. */
int auth_hash(const char *pass, size_t n, bool fast, char *out);

/* True if pass matches the stored hash. Slow: call off the loop. */
bool auth_verify(const char *hash, const char *pass, size_t n);

/* A new random token (43 chars + NUL) and its SHA-256. */
void auth_new_token(char token[AUTH_TOKEN_LEN + 1], uint8_t hash[32]);

/* SHA-256 of a presented token; ERR_INVALID if it is not 43 base64url
 * characters (then it cannot be one of ours). */
int auth_token_hash(const char *token, size_t n, uint8_t hash[32]);

/* Known-device keys. A login (or registration) hands the new device a key
 * that it presents at its next login, so the login guard can tell the
 * account's own devices from strangers (guard_login_begin). The key is
 * the device number and a MAC of (uid, device) keyed by the user's stored
 * password hash (HMAC-SHA-256, 16 bytes): nothing is stored, nobody without
 * the hash can forge one, and every key dies when the password changes.
 * base64url, AUTH_DEVICE_KEY_LEN characters. Fast: fine on the loop. */
#define AUTH_DEVICE_KEY_LEN 27
void auth_device_key(uint64_t uid, uint32_t device, const char *pwhash,
                     char out[AUTH_DEVICE_KEY_LEN + 1]);
/* The device number of a presented key, or 0 if it is not a key of uid's
 * under this hash (wrong length or alphabet, forged, or an old password). */
uint32_t auth_device_key_check(uint64_t uid, const char *pwhash, const char *key, size_t n);

#endif
