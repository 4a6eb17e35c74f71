/* Unit tests for src/auth.c: username rules, password bounds, Argon2id
 * hashing and verification, and tokens. SHA-256 is checked against
 * OpenSSL's implementation, independent of the libsodium one auth.c uses.
 */
#include "test.h"

#include <stdbool.h>
#include <openssl/sha.h>
#include <sodium.h>

#include "chat/auth.h"

/* ---- usernames ------------------------------------------------------------ */

/* auth_username on an exact-size heap copy; out is prefilled with 'X'. */
static int uname(const char *in, size_t n, char out[AUTH_NAME_MAX + 1])
{
    char *p = malloc(n ? n : 1);
    memcpy(p, in, n);
    memset(out, 'X', AUTH_NAME_MAX + 1);
    int rc = auth_username(p, n, out);
    CHECK(memcmp(p, in, n) == 0); /* input untouched */
    free(p);
    return rc;
}

static bool uname_is(const char *in, const char *want)
{
    char out[AUTH_NAME_MAX + 1];
    int rc = uname(in, strlen(in), out);
    bool ok = rc == (int)strlen(want) && memcmp(out, want, strlen(want) + 1) == 0;
    if (!ok) fprintf(stderr, "    username %s: rc %d\n", in, rc);
    return ok;
}

static bool uname_bad(const char *in, size_t n)
{
    char out[AUTH_NAME_MAX + 1];
    int rc = uname(in, n, out);
    if (rc != ERR_INVALID) fprintf(stderr, "    username accepted: %.*s (%d)\n", (int)n, in, rc);
    return rc == ERR_INVALID;
}

TEST(username_lengths)
{
    char name[64];
    char out[AUTH_NAME_MAX + 1];
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++) name[i] = (char)('a' + i % 26);
        name[n] = 0;
        int rc = uname(name, n, out);
        if (n >= AUTH_NAME_MIN && n <= AUTH_NAME_MAX) {
            CHECK_EQ_INT(rc, (int)n);
            CHECK(memcmp(out, name, n) == 0);
            CHECK(out[n] == 0);
        } else {
            CHECK_EQ_INT(rc, ERR_INVALID);
        }
    }
    CHECK_EQ_INT(AUTH_NAME_MIN, 3);
    CHECK_EQ_INT(AUTH_NAME_MAX, 32);
    CHECK(uname_bad("ab", 2));
    CHECK(uname_is("abc", "abc"));
    CHECK(uname_is("abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyz012345"));
    CHECK(uname_bad("abcdefghijklmnopqrstuvwxyz0123456", 33));
    CHECK(uname_bad("", 0));
    /* The length is n, not strlen: a NUL inside is a bad character. */
    CHECK(uname_bad("ab\0cd", 5));
    CHECK(uname_bad("abc\0", 4));
}

TEST(username_characters)
{
    CHECK(uname_is("a_b", "a_b"));
    CHECK(uname_is("a.b", "a.b"));
    CHECK(uname_is("a-b", "a-b"));
    CHECK(uname_is("abc_", "abc_"));
    CHECK(uname_is("a..", "a.."));
    CHECK(uname_is("0ab", "0ab"));
    CHECK(uname_is("007", "007"));
    CHECK(uname_is("z-9.x_y", "z-9.x_y"));
    /* First character: a letter or digit. */
    CHECK(uname_bad("_ab", 3));
    CHECK(uname_bad(".ab", 3));
    CHECK(uname_bad("-ab", 3));
    /* Uppercase folds to lowercase, first character included. */
    CHECK(uname_is("ABC", "abc"));
    CHECK(uname_is("Alice.Smith", "alice.smith"));
    CHECK(uname_is("ZzZ_09", "zzz_09"));
    /* Everything else is refused, in every position. */
    for (int c = 0; c < 256; c++) {
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        bool punct = c == '_' || c == '.' || c == '-';
        for (int pos = 0; pos < 3; pos++) {
            char in[4] = "abc";
            in[pos] = (char)c;
            char out[AUTH_NAME_MAX + 1];
            int rc = uname(in, 3, out);
            bool want_ok = alnum || (punct && pos > 0);
            if (want_ok) {
                CHECK_EQ_INT(rc, 3);
                char lc = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
                CHECK(out[pos] == lc && out[3] == 0);
            } else {
                if (rc != ERR_INVALID) fprintf(stderr, "    byte 0x%02x at %d accepted\n", c, pos);
                CHECK_EQ_INT(rc, ERR_INVALID);
            }
        }
    }
    CHECK(uname_bad("caf\xc3\xa9", 5));
    CHECK(uname_bad("a b", 3));
    CHECK(uname_bad("a@b", 3));
    CHECK(uname_bad("a+b", 3));
    CHECK(uname_bad("a/b", 3));
}

TEST(init_twice)
{
    CHECK_EQ_INT(auth_init(), ERR_OK); /* a second call is harmless */
}

TEST(password_bounds)
{
    CHECK(!auth_password_ok(0));
    CHECK(!auth_password_ok(1));
    CHECK(!auth_password_ok(7));
    CHECK(auth_password_ok(8));
    CHECK(auth_password_ok(9));
    CHECK(auth_password_ok(100));
    CHECK(auth_password_ok(255));
    CHECK(auth_password_ok(256));
    CHECK(!auth_password_ok(257));
    CHECK(!auth_password_ok(100000));
    CHECK(!auth_password_ok(SIZE_MAX));
    CHECK_EQ_INT(AUTH_PASS_MIN, 8);
    CHECK_EQ_INT(AUTH_PASS_MAX, 256);
}

/* ---- hashing -------------------------------------------------------------- */

/* The m= (KiB) parameter of a PHC string, or -1. */
static long phc_mem(const char *h)
{
    const char *m = strstr(h, "$m=");
    return m ? strtol(m + 3, NULL, 10) : -1;
}

static bool hash_ok(const char *h)
{
    size_t n = strnlen(h, AUTH_HASH_MAX + 1);
    return n > 0 && n <= AUTH_HASH_MAX && strncmp(h, "$argon2id$", 10) == 0;
}

TEST(hash_verify_fast)
{
    const char *pw = "correct horse battery staple";
    char h[AUTH_HASH_MAX + 1];
    memset(h, 'X', sizeof h);
    CHECK_EQ_INT(auth_hash(pw, strlen(pw), true, h), ERR_OK);
    CHECK(hash_ok(h));
    CHECK(strstr(h, pw) == NULL);
    CHECK(auth_verify(h, pw, strlen(pw)));
    CHECK(!auth_verify(h, "correct horse battery stapl", strlen(pw) - 1));
    CHECK(!auth_verify(h, "correct horse battery staple!", strlen(pw) + 1));
    CHECK(!auth_verify(h, "Correct horse battery staple", strlen(pw)));
    CHECK(!auth_verify(h, "", 0));
    CHECK(!auth_verify(h, pw, 8)); /* a prefix, by length */

    /* Salted: the same password hashes differently, both verify. */
    char h2[AUTH_HASH_MAX + 1];
    CHECK_EQ_INT(auth_hash(pw, strlen(pw), true, h2), ERR_OK);
    CHECK(strcmp(h, h2) != 0);
    CHECK(auth_verify(h2, pw, strlen(pw)));

    /* Binary-safe: the length counts, not a NUL. */
    static const char b1[] = "abc\0defgh", b2[] = "abc\0xyzgh";
    char hb[AUTH_HASH_MAX + 1];
    CHECK_EQ_INT(auth_hash(b1, 9, true, hb), ERR_OK);
    CHECK(auth_verify(hb, b1, 9));
    CHECK(!auth_verify(hb, b2, 9));
    CHECK(!auth_verify(hb, b1, 3));

    /* The longest password. */
    char longpw[AUTH_PASS_MAX];
    for (int i = 0; i < AUTH_PASS_MAX; i++) longpw[i] = (char)(' ' + i % 90);
    CHECK_EQ_INT(auth_hash(longpw, sizeof longpw, true, h), ERR_OK);
    CHECK(auth_verify(h, longpw, sizeof longpw));
    longpw[AUTH_PASS_MAX - 1] ^= 1;
    CHECK(!auth_verify(h, longpw, sizeof longpw));

    /* Garbage stored hashes do not verify. */
    CHECK(!auth_verify("", pw, strlen(pw)));
    CHECK(!auth_verify("$argon2id$", pw, strlen(pw)));
    CHECK(!auth_verify("not a hash at all", pw, strlen(pw)));
}

TEST(hash_verify_slow)
{
    const char *pw = "a much slower password";
    char fast[AUTH_HASH_MAX + 1], slow[AUTH_HASH_MAX + 1];
    CHECK_EQ_INT(auth_hash(pw, strlen(pw), false, slow), ERR_OK);
    CHECK(hash_ok(slow));
    CHECK(auth_verify(slow, pw, strlen(pw)));
    CHECK(!auth_verify(slow, "a much slower passworD", strlen(pw)));
    /* fast really is the cheaper setting, and the slow one is not minimal. */
    CHECK_EQ_INT(auth_hash(pw, strlen(pw), true, fast), ERR_OK);
    long mf = phc_mem(fast), ms = phc_mem(slow);
    CHECK(mf > 0 && ms > 0);
    CHECK(mf < ms);
    CHECK(ms >= (long)(crypto_pwhash_MEMLIMIT_INTERACTIVE / 1024));
}

/* ---- tokens ---------------------------------------------------------------- */

static bool b64url(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

TEST(new_token)
{
    char tok[AUTH_TOKEN_LEN + 1];
    uint8_t h[32];
    memset(tok, 'X', sizeof tok);
    auth_new_token(tok, h);
    CHECK_EQ_INT(strlen(tok), AUTH_TOKEN_LEN);
    CHECK_EQ_INT(AUTH_TOKEN_LEN, 43);
    int good = 0;
    for (int i = 0; i < AUTH_TOKEN_LEN; i++) good += b64url(tok[i]);
    CHECK_EQ_INT(good, AUTH_TOKEN_LEN);

    /* It decodes to 32 bytes. */
    uint8_t raw[64];
    size_t rawlen = 0;
    CHECK_EQ_INT(sodium_base642bin(raw, sizeof raw, tok, AUTH_TOKEN_LEN, NULL, &rawlen, NULL,
                                   sodium_base64_VARIANT_URLSAFE_NO_PADDING), 0);
    CHECK_EQ_INT(rawlen, 32);

    /* Its hash is SHA-256 of the token text, and what auth_token_hash says. */
    uint8_t ref[32], h2[32];
    SHA256((const unsigned char *)tok, AUTH_TOKEN_LEN, ref);
    CHECK(memcmp(h, ref, 32) == 0);
    CHECK_EQ_INT(auth_token_hash(tok, AUTH_TOKEN_LEN, h2), ERR_OK);
    CHECK(memcmp(h2, h, 32) == 0);

    /* Tokens differ, and so do their hashes. */
    enum { N = 64 };
    static char toks[N][AUTH_TOKEN_LEN + 1];
    static uint8_t hs[N][32];
    for (int i = 0; i < N; i++) auth_new_token(toks[i], hs[i]);
    int dup = 0;
    for (int i = 0; i < N; i++)
        for (int k = i + 1; k < N; k++)
            dup += strcmp(toks[i], toks[k]) == 0 || memcmp(hs[i], hs[k], 32) == 0;
    CHECK_EQ_INT(dup, 0);
    CHECK(strcmp(toks[0], tok) != 0);
}

TEST(token_hash_rules)
{
    const char *good = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0189-_Z"; /* 43 */
    CHECK_EQ_INT(strlen(good), 43);
    uint8_t h[32], ref[32];
    CHECK_EQ_INT(auth_token_hash(good, 43, h), ERR_OK);
    SHA256((const unsigned char *)good, 43, ref);
    CHECK(memcmp(h, ref, 32) == 0);

    /* Wrong lengths. */
    char buf[64];
    memset(buf, 'A', sizeof buf);
    for (size_t n = 0; n < sizeof buf; n++) {
        int rc = auth_token_hash(buf, n, h);
        CHECK_EQ_INT(rc, n == AUTH_TOKEN_LEN ? ERR_OK : ERR_INVALID);
    }

    /* One bad character anywhere. */
    static const char bad[] = { '+', '/', '=', ' ', '.', '~', '\0', '\n', '"', '\x80', '\xff' };
    int refused = 0, tried = 0;
    for (size_t b = 0; b < sizeof bad; b++) {
        for (int pos = 0; pos < 43; pos += (pos < 2 || pos > 40) ? 1 : 7) {
            memcpy(buf, good, 43);
            buf[pos] = bad[b];
            tried++;
            refused += auth_token_hash(buf, 43, h) == ERR_INVALID;
        }
    }
    CHECK_EQ_INT(refused, tried);

    /* Every byte value in the last position: base64url only. */
    for (int c = 0; c < 256; c++) {
        memcpy(buf, good, 43);
        buf[42] = (char)c;
        CHECK_EQ_INT(auth_token_hash(buf, 43, h), b64url((char)c) ? ERR_OK : ERR_INVALID);
    }
}

/* ---- known-device keys ------------------------------------------------------ */

TEST(device_keys)
{
    char h1[AUTH_HASH_MAX + 1], h2[AUTH_HASH_MAX + 1], key[AUTH_DEVICE_KEY_LEN + 1];
    CHECK_EQ_INT(auth_hash("password-one", 12, true, h1), ERR_OK);
    CHECK_EQ_INT(auth_hash("password-one", 12, true, h2), ERR_OK); /* another salt */
    auth_device_key(42, 7, h1, key);
    CHECK_EQ_INT(strlen(key), AUTH_DEVICE_KEY_LEN);
    for (size_t i = 0; i < AUTH_DEVICE_KEY_LEN; i++) CHECK(b64url(key[i]));
    CHECK_EQ_INT(auth_device_key_check(42, h1, key, AUTH_DEVICE_KEY_LEN), 7);
    /* Deterministic: the same device gets the same key again. */
    char again[AUTH_DEVICE_KEY_LEN + 1];
    auth_device_key(42, 7, h1, again);
    CHECK(strcmp(key, again) == 0);
    /* Another user, another hash (a new password): not a key. */
    CHECK_EQ_INT(auth_device_key_check(43, h1, key, AUTH_DEVICE_KEY_LEN), 0);
    CHECK_EQ_INT(auth_device_key_check(42, h2, key, AUTH_DEVICE_KEY_LEN), 0);
    CHECK_EQ_INT(auth_device_key_check(42, "", key, AUTH_DEVICE_KEY_LEN), 0);
    CHECK_EQ_INT(auth_device_key_check(42, NULL, key, AUTH_DEVICE_KEY_LEN), 0);
    /* Any changed character, a wrong length or alphabet: not a key. */
    int refused = 0;
    for (size_t i = 0; i < AUTH_DEVICE_KEY_LEN; i++) {
        char bad[AUTH_DEVICE_KEY_LEN + 1];
        memcpy(bad, key, sizeof bad);
        bad[i] = bad[i] == 'A' ? 'B' : 'A';
        refused += auth_device_key_check(42, h1, bad, AUTH_DEVICE_KEY_LEN) == 0;
    }
    CHECK_EQ_INT(refused, AUTH_DEVICE_KEY_LEN);
    for (size_t n = 0; n < AUTH_DEVICE_KEY_LEN; n++)
        CHECK_EQ_INT(auth_device_key_check(42, h1, key, n), 0);
    char longer[AUTH_DEVICE_KEY_LEN + 2];
    memcpy(longer, key, AUTH_DEVICE_KEY_LEN);
    longer[AUTH_DEVICE_KEY_LEN] = 'A';
    longer[AUTH_DEVICE_KEY_LEN + 1] = 0;
    CHECK_EQ_INT(auth_device_key_check(42, h1, longer, AUTH_DEVICE_KEY_LEN + 1), 0);
    char odd[AUTH_DEVICE_KEY_LEN + 1];
    memcpy(odd, key, sizeof odd);
    odd[3] = '+';
    CHECK_EQ_INT(auth_device_key_check(42, h1, odd, AUTH_DEVICE_KEY_LEN), 0);
    memset(odd, 'A', AUTH_DEVICE_KEY_LEN); /* device 0 and a zero MAC */
    CHECK_EQ_INT(auth_device_key_check(42, h1, odd, AUTH_DEVICE_KEY_LEN), 0);
    /* Each device its own key. */
    auth_device_key(42, 8, h1, again);
    CHECK(strcmp(key, again) != 0);
    CHECK_EQ_INT(auth_device_key_check(42, h1, again, AUTH_DEVICE_KEY_LEN), 8);
    auth_device_key(42, 0xffffffffu, h1, again);
    CHECK_EQ_INT(auth_device_key_check(42, h1, again, AUTH_DEVICE_KEY_LEN), 0xffffffffu);
}

int main(void)
{
    test_seed();
    if (auth_init() != ERR_OK) {
        fprintf(stderr, "auth_init failed\n");
        return 1;
    }
    RUN(init_twice);
    RUN(username_lengths);
    RUN(username_characters);
    RUN(password_bounds);
    RUN(hash_verify_fast);
    RUN(hash_verify_slow);
    RUN(new_token);
    RUN(token_hash_rules);
    RUN(device_keys);
    return test_summary("auth");
}
