/* Unit tests for src/utf8.c: Markus Kuhn-style cases fed whole, split at
 * every position and one byte at a time; fail-fast positions; the ASCII
 * fast path at every offset and alignment; exhaustive short sequences
 * against a naive reference decoder. */
#include "test.h"

#include <stdbool.h>

#include "codec/utf8.h"

/* ---- helpers ------------------------------------------------------------ */

/* A deliberately naive decoder, written independently of the DFA. */
static bool ref_valid(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0)      { len = 2; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

static bool is_mid(uint32_t st)
{
    return st != UTF8_ACCEPT && st != UTF8_REJECT;
}

/* Whole, every two-way split, and one byte at a time must all agree with
 * `valid`. Returns false (after printing) on any disagreement. */
static bool agrees(const uint8_t *s, size_t n, bool valid)
{
    bool ok = true;
    if (utf8_valid(s, n) != valid) {
        fprintf(stderr, "    whole: got %d\n", !valid);
        ok = false;
    }
    for (size_t k = 0; k <= n; k++) {
        uint32_t st = utf8_feed(UTF8_ACCEPT, s, k);
        st = utf8_feed(st, s + k, n - k);
        if ((st == UTF8_ACCEPT) != valid) {
            fprintf(stderr, "    split at %zu: state %u\n", k, st);
            ok = false;
        }
    }
    uint32_t st = UTF8_ACCEPT;
    bool rejected = false;
    for (size_t k = 0; k < n; k++) {
        st = utf8_feed(st, s + k, 1);
        if (rejected && st != UTF8_REJECT) {
            fprintf(stderr, "    REJECT not sticky at %zu\n", k);
            ok = false;
        }
        rejected = st == UTF8_REJECT;
    }
    if ((st == UTF8_ACCEPT) != valid) {
        fprintf(stderr, "    bytewise: state %u\n", st);
        ok = false;
    }
    return ok;
}

/* Index of the first byte at which byte-by-byte feeding rejects; n if never. */
static size_t reject_at(const uint8_t *s, size_t n)
{
    uint32_t st = UTF8_ACCEPT;
    for (size_t k = 0; k < n; k++) {
        st = utf8_feed(st, s + k, 1);
        if (st == UTF8_REJECT)
            return k;
    }
    return n;
}

#define V(lit) agrees((const uint8_t *)(lit), sizeof(lit) - 1, true)
#define INV(lit) agrees((const uint8_t *)(lit), sizeof(lit) - 1, false)

/* ---- tests ---------------------------------------------------------------- */

TEST(empty_and_ascii)
{
    CHECK(utf8_valid(NULL, 0));
    CHECK_EQ_INT(utf8_feed(UTF8_ACCEPT, NULL, 0), UTF8_ACCEPT);
    CHECK(V("Hello, world"));
    uint8_t all[128];
    for (int i = 0; i < 128; i++) all[i] = (uint8_t)i;
    CHECK(agrees(all, sizeof all, true));
}

TEST(kosme)
{
    /* Greek "kosme" from Kuhn's test file. */
    CHECK(V("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"));
}

TEST(boundaries_first_and_last)
{
    /* First code point of each length. */
    CHECK(agrees((const uint8_t *)"\x00", 1, true));
    CHECK(V("\xc2\x80"));
    CHECK(V("\xe0\xa0\x80"));
    CHECK(V("\xf0\x90\x80\x80"));
    /* Last of each length (U+7F, U+7FF, U+FFFF, U+10FFFF). */
    CHECK(V("\x7f"));
    CHECK(V("\xdf\xbf"));
    CHECK(V("\xef\xbf\xbf"));
    CHECK(V("\xf4\x8f\xbf\xbf"));
    /* Other boundaries: around the surrogates, U+FFFD, U+FFFE. */
    CHECK(V("\xed\x9f\xbf"));
    CHECK(V("\xee\x80\x80"));
    CHECK(V("\xef\xbf\xbd"));
    CHECK(V("\xef\xbf\xbe"));
    CHECK(V("\xf3\xbf\xbf\xbf"));
}

TEST(above_max)
{
    CHECK(INV("\xf4\x90\x80\x80"));          /* U+110000 */
    CHECK(INV("\xf7\xbf\xbf\xbf"));          /* U+1FFFFF */
    CHECK(INV("\xf5\x80\x80\x80"));
    CHECK(INV("\xf6\x80\x80\x80"));
}

TEST(five_and_six_byte_forms)
{
    CHECK(INV("\xf8\x88\x80\x80\x80"));      /* first 5-byte */
    CHECK(INV("\xfb\xbf\xbf\xbf\xbf"));      /* last 5-byte */
    CHECK(INV("\xfc\x84\x80\x80\x80\x80"));  /* first 6-byte */
    CHECK(INV("\xfd\xbf\xbf\xbf\xbf\xbf"));  /* last 6-byte */
}

TEST(fe_ff)
{
    CHECK(INV("\xfe"));
    CHECK(INV("\xff"));
    CHECK(INV("\xfe\xfe\xff\xff"));
    CHECK(INV("abc\xff"));
}

TEST(stray_continuations)
{
    CHECK(INV("\x80"));
    CHECK(INV("\xbf"));
    CHECK(INV("\x80\xbf"));
    CHECK(INV("\x80\xbf\x80"));
    CHECK(INV("a\x80"));
    CHECK(INV("\xc3\xa9\xa9"));              /* one continuation too many */
    for (int c = 0x80; c <= 0xBF; c++) {
        uint8_t b = (uint8_t)c;
        CHECK(agrees(&b, 1, false));
    }
    uint8_t all[64];
    for (int i = 0; i < 64; i++) all[i] = (uint8_t)(0x80 + i);
    CHECK(agrees(all, sizeof all, false));
}

TEST(lonely_start_bytes)
{
    /* Each lead byte followed by a space is invalid. */
    for (int c = 0xC0; c <= 0xFF; c++) {
        uint8_t s[2] = { (uint8_t)c, ' ' };
        CHECK(agrees(s, 2, false));
        CHECK_EQ_INT(reject_at(s, 2), c <= 0xC1 || c >= 0xF5 ? 0 : 1);
    }
}

TEST(truncated_sequences)
{
    /* Valid prefixes cut short: mid-sequence, not complete, not rejected. */
    static const char *const cut[] = {
        "\xc2", "\xdf", "\xe0\xa0", "\xe1", "\xef\xbf", "\xed\x9f",
        "\xf0\x90", "\xf0\x90\x80", "\xf4\x8f\xbf", "\xf1", "\xf3\xbf\xbf",
    };
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        const uint8_t *s = (const uint8_t *)cut[i];
        size_t n = strlen(cut[i]);
        uint32_t st = utf8_feed(UTF8_ACCEPT, s, n);
        CHECK(is_mid(st));
        CHECK(!utf8_valid(s, n));
        CHECK(agrees(s, n, false));
    }
    /* All the Kuhn "last byte missing" cases concatenated. */
    CHECK(INV("\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80"
              "\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf"));
}

TEST(overlongs)
{
    /* '/' in every overlong form. */
    CHECK(INV("\xc0\xaf"));
    CHECK(INV("\xe0\x80\xaf"));
    CHECK(INV("\xf0\x80\x80\xaf"));
    CHECK(INV("\xf8\x80\x80\x80\xaf"));
    CHECK(INV("\xfc\x80\x80\x80\x80\xaf"));
    /* Largest overlongs. */
    CHECK(INV("\xc1\xbf"));
    CHECK(INV("\xe0\x9f\xbf"));
    CHECK(INV("\xf0\x8f\xbf\xbf"));
    /* Overlong NUL. */
    CHECK(INV("\xc0\x80"));
    CHECK(INV("\xe0\x80\x80"));
    CHECK(INV("\xf0\x80\x80\x80"));
}

TEST(surrogates)
{
    static const char *const single[] = {
        "\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf",
        "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf",
    };
    for (size_t i = 0; i < sizeof single / sizeof single[0]; i++) {
        CHECK(agrees((const uint8_t *)single[i], 3, false));
        CHECK_EQ_INT(reject_at((const uint8_t *)single[i], 3), 1);
    }
    CHECK(INV("\xed\xa0\x80\xed\xb0\x80"));  /* a pair is still invalid */
    CHECK(INV("\xed\xaf\xbf\xed\xbf\xbf"));
    CHECK(INV("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
              "edited"));
}

TEST(fail_fast_positions)
{
    /* "kosme" then U+110000: rejected at the 0x90, byte 12. */
    const char *s = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
                    "\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
    CHECK_EQ_INT(reject_at((const uint8_t *)s, strlen(s)), 12);
    CHECK(is_mid(utf8_feed(UTF8_ACCEPT, (const uint8_t *)s, 12)));
    CHECK_EQ_INT(utf8_feed(UTF8_ACCEPT, (const uint8_t *)s, 13), UTF8_REJECT);

    CHECK_EQ_INT(reject_at((const uint8_t *)"\xe0\x80", 2), 1);
    CHECK_EQ_INT(reject_at((const uint8_t *)"\xf0\x80", 2), 1);
    CHECK_EQ_INT(reject_at((const uint8_t *)"\xf4\x90", 2), 1);
    CHECK_EQ_INT(reject_at((const uint8_t *)"\xed\xa0", 2), 1);
    CHECK_EQ_INT(reject_at((const uint8_t *)"\xc0", 1), 0);
    CHECK_EQ_INT(reject_at((const uint8_t *)"\xf5", 1), 0);
    CHECK_EQ_INT(reject_at((const uint8_t *)"abc\x80", 4), 3);
    CHECK_EQ_INT(reject_at((const uint8_t *)"\xe2\x82\x28", 3), 2);
}

TEST(reject_is_sticky)
{
    uint32_t st = utf8_feed(UTF8_ACCEPT, (const uint8_t *)"\xff", 1);
    CHECK_EQ_INT(st, UTF8_REJECT);
    CHECK_EQ_INT(utf8_feed(st, (const uint8_t *)"abc", 3), UTF8_REJECT);
    CHECK_EQ_INT(utf8_feed(st, NULL, 0), UTF8_REJECT);
    /* A state this module never produces is treated as rejected. */
    CHECK_EQ_INT(utf8_feed(0xDEADu, (const uint8_t *)"a", 1), UTF8_REJECT);
}

TEST(mid_state_carries)
{
    /* U+1F600 split at every point; the state in between is "mid". */
    const uint8_t e[4] = { 0xF0, 0x9F, 0x98, 0x80 };
    for (size_t k = 1; k < 4; k++) {
        uint32_t st = utf8_feed(UTF8_ACCEPT, e, k);
        CHECK(is_mid(st));
        CHECK_EQ_INT(utf8_feed(st, e + k, 4 - k), UTF8_ACCEPT);
    }
}

TEST(ascii_fast_path_every_offset)
{
    uint8_t raw[160];
    for (size_t align = 0; align < 8; align++) {
        uint8_t *s = raw + align;
        for (size_t p = 0; p < 100; p++) {
            memset(s, 'a', 100);
            s[p] = 0x80;                     /* stray continuation at p */
            CHECK_EQ_INT(utf8_feed(UTF8_ACCEPT, s, p), UTF8_ACCEPT);
            CHECK_EQ_INT(utf8_feed(UTF8_ACCEPT, s, p + 1), UTF8_REJECT);
            CHECK_EQ_INT(utf8_feed(UTF8_ACCEPT, s, 100), UTF8_REJECT);
            CHECK(!utf8_valid(s, 100));

            memset(s, 'a', 100);
            s[p] = 0xFF;
            CHECK(!utf8_valid(s, 100));

            memset(s, 'a', 101);
            s[p] = 0xC3; s[p + 1] = 0xA9;    /* U+00E9 at p */
            CHECK(utf8_valid(s, 101));
            CHECK(is_mid(utf8_feed(UTF8_ACCEPT, s, p + 1)));

            memset(s, 'a', 100);
            s[p] = 0xE2;                     /* truncated at the end */
            CHECK(utf8_feed(UTF8_ACCEPT, s, p + 1) != UTF8_ACCEPT);
        }
    }
}

TEST(exhaustive_two_and_three_bytes)
{
    int bad = 0;
    for (int a = 0; a < 256; a++) {
        uint8_t s1[1] = { (uint8_t)a };
        if (utf8_valid(s1, 1) != ref_valid(s1, 1)) bad++;
        for (int b = 0; b < 256; b++) {
            uint8_t s2[2] = { (uint8_t)a, (uint8_t)b };
            if (utf8_valid(s2, 2) != ref_valid(s2, 2)) bad++;
        }
    }
    for (int a = 0xE0; a <= 0xEF; a++)
        for (int b = 0; b < 256; b++)
            for (int c = 0; c < 256; c++) {
                uint8_t s3[3] = { (uint8_t)a, (uint8_t)b, (uint8_t)c };
                if (utf8_valid(s3, 3) != ref_valid(s3, 3)) bad++;
            }
    static const uint8_t edge[] = { 0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F,
                                    0xA0, 0xBF, 0xC0, 0xFF };
    for (int a = 0xF0; a <= 0xFF; a++)
        for (int b = 0; b < 256; b++)
            for (size_t c = 0; c < sizeof edge; c++)
                for (size_t d = 0; d < sizeof edge; d++) {
                    uint8_t s4[4] = { (uint8_t)a, (uint8_t)b, edge[c], edge[d] };
                    if (utf8_valid(s4, 4) != ref_valid(s4, 4)) bad++;
                }
    CHECK_EQ_INT(bad, 0);
}

TEST(random_against_reference)
{
    static const uint8_t pool[] = {
        'a', 0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1,
        0xC2, 0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3,
        0xF4, 0xF5, 0xF8, 0xFE, 0xFF,
    };
    int bad = 0, nvalid = 0;
    uint8_t s[24];
    for (int iter = 0; iter < 300000; iter++) {
        size_t n = 1 + test_rand() % sizeof s;
        for (size_t i = 0; i < n; i++)
            s[i] = pool[test_rand() % sizeof pool];
        bool want = ref_valid(s, n);
        nvalid += want;
        size_t k = test_rand() % (n + 1);
        uint32_t st = utf8_feed(utf8_feed(UTF8_ACCEPT, s, k), s + k, n - k);
        if (utf8_valid(s, n) != want || (st == UTF8_ACCEPT) != want) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(nvalid > 100); /* the pool does produce valid strings */
}

int main(void)
{
    test_seed();
    RUN(empty_and_ascii);
    RUN(kosme);
    RUN(boundaries_first_and_last);
    RUN(above_max);
    RUN(five_and_six_byte_forms);
    RUN(fe_ff);
    RUN(stray_continuations);
    RUN(lonely_start_bytes);
    RUN(truncated_sequences);
    RUN(overlongs);
    RUN(surrogates);
    RUN(fail_fast_positions);
    RUN(reject_is_sticky);
    RUN(mid_state_carries);
    RUN(ascii_fast_path_every_offset);
    RUN(exhaustive_two_and_three_bytes);
    RUN(random_against_reference);
    return test_summary("utf8");
}
