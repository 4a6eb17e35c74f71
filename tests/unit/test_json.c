/* Unit tests for src/json.c: the strict parser/indexer, the getters, the
 * unescaper, json_array_each, and the builder (jb_*) with jb_take(), framed.
 *
 * Every document is parsed from an exact-size heap copy, so a read past the
 * end shows up under ASan, and every strict prefix of a valid document must
 * be refused (the parser is not incremental: a cut document is invalid).
 * A small recursive-descent validator written here from RFC 8259 is the
 * reference for a differential test of json_validate() on random input.
 */
#include "test.h"

#include <stdbool.h>

#include "codec/json.h"
#include "base/rbuf.h"
#include "codec/ws.h"

/* ---- helpers -------------------------------------------------------------- */

static char *dup_exact(const char *s, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (!p) exit(2);
    memcpy(p, s, n);
    return p;
}

/* json_parse_object on an exact-size heap copy of s[0..n). The copy is kept
 * alive in *keep (spans point into it); free it with free(). */
static int parse_n(const char *s, size_t n, json_obj *o, char **keep)
{
    char *p = dup_exact(s, n);
    int rc = json_parse_object(p, n, o);
    if (keep) *keep = p;
    else free(p);
    return rc;
}

static int parse(const char *s, json_obj *o, char **keep)
{
    return parse_n(s, strlen(s), o, keep);
}

static int validate_n(const char *s, size_t n, uint8_t *type)
{
    char *p = dup_exact(s, n);
    int rc = json_validate(p, n, type);
    free(p);
    return rc;
}

static int validate(const char *s, uint8_t *type)
{
    return validate_n(s, strlen(s), type);
}

static bool span_is(const char *p, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(p, want, n) == 0;
}

/* Field i has key k, raw value v and type t. */
static bool field_is(const json_obj *o, size_t i, const char *k, const char *v, uint8_t t)
{
    if (i >= o->n) return false;
    const json_field *f = &o->f[i];
    return span_is(f->key, f->key_len, k) && span_is(f->val, f->val_len, v) && f->type == t;
}

/* Every strict prefix of a valid document must be refused. */
static int prefixes_refused(const char *s)
{
    size_t n = strlen(s), bad = 0;
    for (size_t k = 0; k < n; k++) {
        json_obj o;
        /* A prefix ending inside trailing whitespace is still complete. */
        size_t end = n;
        while (end > 0 && strchr(" \t\r\n", s[end - 1])) end--;
        int rc = parse_n(s, k, &o, NULL);
        if (k >= end ? rc != ERR_OK : rc == ERR_OK) {
            fprintf(stderr, "    prefix %zu of %s: rc %d\n", k, s, rc);
            bad++;
        }
    }
    return (int)bad;
}

/* ---- parsing: valid documents ---------------------------------------------- */

TEST(parse_all_value_types)
{
    const char *s = "{\"a\":1,\"b\":\"x y\",\"c\":true,\"d\":false,\"e\":null,"
                    "\"f\":[1,[2],{\"z\":3}],\"g\":{\"h\":{\"i\":[]}},\"j\":-2.5e+3}";
    json_obj o;
    char *keep;
    CHECK_EQ_INT(parse(s, &o, &keep), ERR_OK);
    CHECK_EQ_INT(o.n, 8);
    CHECK(field_is(&o, 0, "a", "1", JSON_NUMBER));
    CHECK(field_is(&o, 1, "b", "\"x y\"", JSON_STRING));
    CHECK(field_is(&o, 2, "c", "true", JSON_TRUE));
    CHECK(field_is(&o, 3, "d", "false", JSON_FALSE));
    CHECK(field_is(&o, 4, "e", "null", JSON_NULL));
    CHECK(field_is(&o, 5, "f", "[1,[2],{\"z\":3}]", JSON_ARRAY));
    CHECK(field_is(&o, 6, "g", "{\"h\":{\"i\":[]}}", JSON_OBJECT));
    CHECK(field_is(&o, 7, "j", "-2.5e+3", JSON_NUMBER));
    /* The spans point into the caller's buffer, not into a copy. */
    for (size_t i = 0; i < o.n; i++) {
        CHECK(o.f[i].key > keep && o.f[i].key + o.f[i].key_len < keep + strlen(s));
        CHECK(o.f[i].val > keep && o.f[i].val + o.f[i].val_len < keep + strlen(s));
    }
    /* json_get finds them; unknown and nested keys are absent. */
    CHECK(json_get(&o, "g") == &o.f[6]);
    CHECK(json_get(&o, "a") == &o.f[0]);
    CHECK(json_get(&o, "z") == NULL);
    CHECK(json_get(&o, "h") == NULL);
    CHECK(json_get(&o, "") == NULL);
    CHECK(json_get(&o, "aa") == NULL);
    free(keep);
    CHECK_EQ_INT(prefixes_refused(s), 0);
}

TEST(parse_empty_and_whitespace)
{
    json_obj o;
    o.n = 99;
    CHECK_EQ_INT(parse("{}", &o, NULL), ERR_OK);
    CHECK_EQ_INT(o.n, 0);
    CHECK_EQ_INT(parse(" \t\r\n{ \t\r\n} \t\r\n", &o, NULL), ERR_OK);
    CHECK_EQ_INT(o.n, 0);

    const char *s = " \n{ \"a\" :\t1 ,\r\n\"b\"\n:\t[ 1 , 2 ] , \"c\" : { } , \"d\":\"\" }\n ";
    char *keep;
    CHECK_EQ_INT(parse(s, &o, &keep), ERR_OK);
    CHECK_EQ_INT(o.n, 4);
    CHECK(field_is(&o, 0, "a", "1", JSON_NUMBER));
    CHECK(field_is(&o, 1, "b", "[ 1 , 2 ]", JSON_ARRAY));
    CHECK(field_is(&o, 2, "c", "{ }", JSON_OBJECT));
    CHECK(field_is(&o, 3, "d", "\"\"", JSON_STRING));
    free(keep);
    CHECK_EQ_INT(prefixes_refused(s), 0);
}

TEST(parse_string_escapes)
{
    const char *s = "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\","
                    "\"k\\\"\\u0041\":0,\"raw\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\"}";
    json_obj o;
    char *keep;
    CHECK_EQ_INT(parse(s, &o, &keep), ERR_OK);
    CHECK_EQ_INT(o.n, 3);
    CHECK(field_is(&o, 0, "s", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\u20AC\\ud83d\\ude00\"",
                   JSON_STRING));
    CHECK(field_is(&o, 1, "k\\\"\\u0041", "0", JSON_NUMBER)); /* key stays raw */
    CHECK(field_is(&o, 2, "raw", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\x7f\"", JSON_STRING));
    free(keep);
    CHECK_EQ_INT(prefixes_refused(s), 0);
}

TEST(parse_numbers_all_forms)
{
    static const char *const nums[] = {
        "0", "-0", "1", "-1", "9", "10", "123456789", "-987", "0.0", "0.5", "-0.5",
        "1.25", "10.01", "1e5", "1E5", "1e+5", "1e-5", "1E+05", "0e0", "-0E-0",
        "1.5e10", "-1.25E-3", "123.456e789", "18446744073709551616", "1e400",
    };
    for (size_t i = 0; i < sizeof nums / sizeof *nums; i++) {
        char doc[128];
        snprintf(doc, sizeof doc, "{\"n\":%s}", nums[i]);
        json_obj o;
        char *keep;
        int rc = parse(doc, &o, &keep);
        if (rc != ERR_OK) fprintf(stderr, "    number %s: %d\n", nums[i], rc);
        CHECK_EQ_INT(rc, ERR_OK);
        CHECK(field_is(&o, 0, "n", nums[i], JSON_NUMBER));
        free(keep);
        /* Bare, in an array, and with whitespace after. */
        uint8_t t = 0;
        CHECK_EQ_INT(validate(nums[i], &t), ERR_OK);
        CHECK_EQ_INT(t, JSON_NUMBER);
        snprintf(doc, sizeof doc, "[%s,%s ]", nums[i], nums[i]);
        CHECK_EQ_INT(validate(doc, &t), ERR_OK);
        CHECK_EQ_INT(t, JSON_ARRAY);
    }
}

/* ---- parsing: refusals --------------------------------------------------- */

TEST(parse_rejects_malformed)
{
    static const char *const bad[] = {
        "", " ", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}", "{\"a\"::1}", "{:1}",
        "{\"a\":1,}", "{,\"a\":1}", "{\"a\":1,,\"b\":2}", "{\"a\":1 \"b\":2}",
        "{\"a\":[1,]}", "{\"a\":[,1]}", "{\"a\":[1 2]}", "{\"a\":{\"b\":1,}}", "{\"a\":[}",
        "{\"a\":{]}", "{\"a\":[1}", "{\"a\":{\"b\":1]}",
        "{'a':1}", "{\"a\":'x'}", "{a:1}", "{1:2}", "{null:1}",
        "{\"a\":01}", "{\"a\":-01}", "{\"a\":00}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":+1}",
        "{\"a\":-}", "{\"a\":1e}", "{\"a\":1e+}", "{\"a\":1.e5}", "{\"a\":-.5}", "{\"a\":0x10}",
        "{\"a\":1.5.5}", "{\"a\":1e5e5}", "{\"a\":--1}", "{\"a\":NaN}", "{\"a\":Infinity}",
        "{\"a\":-Infinity}",
        "{\"a\":tru}", "{\"a\":True}", "{\"a\":nul}", "{\"a\":NULL}", "{\"a\":falsey}",
        "{\"a\":truefalse}", "{\"a\":undefined}", "{\"a\":x}",
        "{\"a\":\"abc}", "{\"a\":\"abc", "{\"a", "{\"a\":\"\\\"}",
        "{\"a\":\"x\ty\"}", "{\"a\":\"x\ny\"}", "{\"a\":\"\x01\"}", "{\"a\":\"\x1f\"}",
        "{\"a\\\n\":1}",
        "{\"a\":\"\\x41\"}", "{\"a\":\"\\u12G4\"}", "{\"a\":\"\\u123\"}", "{\"a\":\"\\u\"}",
        "{\"a\":\"\\U0041\"}", "{\"a\":\"\\a\"}", "{\"a\":\"\\0\"}", "{\"a\":\"\\'\"}",
        "{\"a\":\"\\ \"}", "{\"a\":\"\\",
        "{\"a\":1}x", "{\"a\":1}}", "{\"a\":1} {}", "{\"a\":1},", "{}[]", "{} 1",
        "[]", "[{\"a\":1}]", "\"s\"", "1", "true", "null", "false", "-1",
        "{\"a\":1", "{\"a\":1,", "/*c*/{}", "{}//", "\xef\xbb\xbf{}", "{\"a\":1\x0b}",
        "\f{}", "{\"a\":\"b\"\"c\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        json_obj o;
        int rc = parse(bad[i], &o, NULL);
        if (rc != ERR_INVALID) fprintf(stderr, "    accepted or wrong code %d: %s\n", rc, bad[i]);
        CHECK_EQ_INT(rc, ERR_INVALID);
    }
    /* A NUL byte anywhere is not JSON. */
    static const char nul1[] = "{\"a\":\"x\0y\"}";
    static const char nul2[] = "{\"a\":1}\0";
    static const char nul3[] = "{\"a\":1\0}";
    json_obj o;
    CHECK_EQ_INT(parse_n(nul1, sizeof nul1 - 1, &o, NULL), ERR_INVALID);
    CHECK_EQ_INT(parse_n(nul2, sizeof nul2 - 1, &o, NULL), ERR_INVALID);
    CHECK_EQ_INT(parse_n(nul3, sizeof nul3 - 1, &o, NULL), ERR_INVALID);
}

TEST(parse_rejects_duplicate_top_level_keys)
{
    json_obj o;
    CHECK_EQ_INT(parse("{\"a\":1,\"a\":2}", &o, NULL), ERR_INVALID);
    CHECK_EQ_INT(parse("{\"a\":1,\"b\":2,\"a\":1}", &o, NULL), ERR_INVALID);
    CHECK_EQ_INT(parse("{\"\":1,\"\":2}", &o, NULL), ERR_INVALID);
    CHECK_EQ_INT(parse("{\"ab\":1,\"a\":2,\"abc\":3,\"b\":4}", &o, NULL), ERR_OK);
    CHECK_EQ_INT(o.n, 4);
}

/* The same key spelled with an escape is still the same key: a client's
 * JSON parser (last one wins) and parley's raw json_get() would read
 * different values from {"a":1,"\u0061":2}. */
TEST(parse_rejects_escaped_duplicate_keys)
{
    json_obj o;
    CHECK_EQ_INT(parse("{\"a\":1,\"\\u0061\":2}", &o, NULL), ERR_INVALID);
    CHECK_EQ_INT(parse("{\"a/\":1,\"a\\/\":2}", &o, NULL), ERR_INVALID);
}

static char *nest(int depth, bool arrays_inside)
{
    /* {"a": + (depth - 1) containers + } */
    size_t cap = (size_t)depth * 8 + 32, n = 0;
    char *s = malloc(cap);
    n += (size_t)sprintf(s + n, "{\"a\":");
    for (int i = 1; i < depth; i++)
        n += (size_t)sprintf(s + n, arrays_inside ? (i % 2 ? "[" : "{\"b\":") : "{\"b\":");
    n += (size_t)sprintf(s + n, "1");
    for (int i = depth - 1; i >= 1; i--)
        n += (size_t)sprintf(s + n, arrays_inside ? (i % 2 ? "]" : "}") : "}");
    sprintf(s + n, "}");
    return s;
}

TEST(depth_limit)
{
    for (int mixed = 0; mixed < 2; mixed++) {
        json_obj o;
        char *ok = nest(JSON_MAX_DEPTH, mixed);
        char *deep = nest(JSON_MAX_DEPTH + 1, mixed);
        char *deeper = nest(200, mixed);
        CHECK_EQ_INT(parse(ok, &o, NULL), ERR_OK);
        CHECK_EQ_INT(o.n, 1);
        CHECK_EQ_INT(parse(deep, &o, NULL), ERR_TOO_LARGE);
        CHECK_EQ_INT(parse(deeper, &o, NULL), ERR_TOO_LARGE);
        uint8_t t;
        CHECK_EQ_INT(validate(ok, &t), ERR_OK);
        CHECK_EQ_INT(validate(deep, &t), ERR_TOO_LARGE);
        free(ok); free(deep); free(deeper);
    }
    /* Arrays alone, through json_validate. */
    char buf[2 * 40 + 1];
    for (int d = JSON_MAX_DEPTH; d <= JSON_MAX_DEPTH + 1; d++) {
        memset(buf, '[', (size_t)d);
        memset(buf + d, ']', (size_t)d);
        buf[2 * d] = 0;
        uint8_t t = 0;
        CHECK_EQ_INT(validate(buf, &t), d <= JSON_MAX_DEPTH ? ERR_OK : ERR_TOO_LARGE);
    }
    /* Depth is nesting, not the number of containers: many siblings are fine. */
    char wide[4096];
    size_t n = (size_t)sprintf(wide, "{\"a\":[");
    for (int i = 0; i < 300; i++) n += (size_t)sprintf(wide + n, "%s[{}]", i ? "," : "");
    sprintf(wide + n, "]}");
    json_obj o;
    CHECK_EQ_INT(parse(wide, &o, NULL), ERR_OK);
}

TEST(field_limit)
{
    char buf[1024];
    for (int k = JSON_MAX_FIELDS - 1; k <= JSON_MAX_FIELDS + 2; k++) {
        size_t n = (size_t)sprintf(buf, "{");
        for (int i = 0; i < k; i++) n += (size_t)sprintf(buf + n, "%s\"f%d\":%d", i ? "," : "", i, i);
        sprintf(buf + n, "}");
        json_obj o;
        char *keep;
        int rc = parse(buf, &o, &keep);
        CHECK_EQ_INT(rc, k <= JSON_MAX_FIELDS ? ERR_OK : ERR_TOO_LARGE);
        if (rc == ERR_OK) {
            CHECK_EQ_INT(o.n, k);
            char key[8], val[8];
            sprintf(key, "f%d", k - 1);
            sprintf(val, "%d", k - 1);
            CHECK(field_is(&o, (size_t)k - 1, key, val, JSON_NUMBER));
        }
        free(keep);
    }
    /* Nested objects may have more fields: the limit is top-level. */
    size_t n = (size_t)sprintf(buf, "{\"x\":{");
    for (int i = 0; i < 40; i++) n += (size_t)sprintf(buf + n, "%s\"f%d\":%d", i ? "," : "", i, i);
    sprintf(buf + n, "}}");
    json_obj o;
    CHECK_EQ_INT(parse(buf, &o, NULL), ERR_OK);
}

/* ---- json_get_u64 ---------------------------------------------------------- */

TEST(get_u64)
{
    const char *s = "{\"zero\":0,\"one\":1,\"big\":9007199254740992,\"over\":9007199254740993,"
                    "\"nines\":9999999999999999,\"huge\":18446744073709551617,"
                    "\"long\":123456789012345678901234567890,\"neg\":-1,\"negz\":-0,"
                    "\"frac\":1.0,\"exp\":1e3,\"expz\":1E0,\"str\":\"5\",\"t\":true,\"nul\":null,"
                    "\"arr\":[1],\"obj\":{\"a\":1},\"mid\":4294967296}";
    json_obj o;
    char *keep;
    CHECK_EQ_INT(parse(s, &o, &keep), ERR_OK);
    uint64_t v = 77;
    CHECK_EQ_INT(json_get_u64(&o, "zero", &v), ERR_OK);
    CHECK_EQ_INT(v, 0);
    CHECK_EQ_INT(json_get_u64(&o, "one", &v), ERR_OK);
    CHECK_EQ_INT(v, 1);
    CHECK_EQ_INT(json_get_u64(&o, "mid", &v), ERR_OK);
    CHECK(v == 4294967296ull);
    CHECK_EQ_INT(json_get_u64(&o, "big", &v), ERR_OK);
    CHECK(v == (1ull << 53));
    static const char *const bad[] = { "over", "nines", "huge", "long", "neg", "negz", "frac",
                                       "exp", "expz", "str", "t", "nul", "arr", "obj" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        v = 77;
        int rc = json_get_u64(&o, bad[i], &v);
        if (rc != ERR_INVALID) fprintf(stderr, "    u64 %s: %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, ERR_INVALID);
        CHECK_EQ_INT(v, 77); /* untouched on failure */
    }
    CHECK_EQ_INT(json_get_u64(&o, "missing", &v), ERR_NOT_FOUND);
    free(keep);
}

/* ---- json_unescape / json_get_str ----------------------------------------- */

/* Unescapes a raw JSON string literal given as a C string. */
static int unesc(const char *raw, char *out, size_t cap)
{
    char *p = dup_exact(raw, strlen(raw));
    int rc = json_unescape(p, strlen(raw), out, cap);
    free(p);
    return rc;
}

static bool unesc_is(const char *raw, const char *want, size_t want_len)
{
    char out[64];
    memset(out, 'X', sizeof out);
    int rc = unesc(raw, out, sizeof out);
    bool ok = rc == (int)want_len && memcmp(out, want, want_len) == 0 && out[want_len] == 0;
    if (!ok) fprintf(stderr, "    unescape %s: rc %d\n", raw, rc);
    return ok;
}

TEST(unescape_all_escapes)
{
    CHECK(unesc_is("\"\"", "", 0));
    CHECK(unesc_is("\"plain text\"", "plain text", 10));
    CHECK(unesc_is("\"\\\"\"", "\"", 1));
    CHECK(unesc_is("\"\\\\\"", "\\", 1));
    CHECK(unesc_is("\"\\/\"", "/", 1));
    CHECK(unesc_is("\"\\b\\f\\n\\r\\t\"", "\b\f\n\r\t", 5));
    CHECK(unesc_is("\"a\\\"b\\\\c\\/d\"", "a\"b\\c/d", 7));
    CHECK(unesc_is("\"\\u0041\\u0062\"", "Ab", 2));
    CHECK(unesc_is("\"\\u0001\\u001f\"", "\x01\x1f", 2));
    CHECK(unesc_is("\"\\u007f\"", "\x7f", 1));
    CHECK(unesc_is("\"\\u0080\"", "\xc2\x80", 2));
    CHECK(unesc_is("\"\\u00e9\\u00E9\"", "\xc3\xa9\xc3\xa9", 4));
    CHECK(unesc_is("\"\\u07ff\"", "\xdf\xbf", 2));
    CHECK(unesc_is("\"\\u0800\"", "\xe0\xa0\x80", 3));
    CHECK(unesc_is("\"\\u20ac\"", "\xe2\x82\xac", 3));
    CHECK(unesc_is("\"\\ud7ff\"", "\xed\x9f\xbf", 3));
    CHECK(unesc_is("\"\\ue000\"", "\xee\x80\x80", 3));
    CHECK(unesc_is("\"\\uffff\"", "\xef\xbf\xbf", 3));
    /* Surrogate pairs become one 4-byte sequence. */
    CHECK(unesc_is("\"\\ud83d\\ude00\"", "\xf0\x9f\x98\x80", 4));
    CHECK(unesc_is("\"\\uD83D\\uDE00\"", "\xf0\x9f\x98\x80", 4));
    CHECK(unesc_is("\"\\ud800\\udc00\"", "\xf0\x90\x80\x80", 4));
    CHECK(unesc_is("\"\\udbff\\udfff\"", "\xf4\x8f\xbf\xbf", 4));
    CHECK(unesc_is("\"x\\ud83d\\ude00y\"", "x\xf0\x9f\x98\x80y", 6));
    /* Raw UTF-8 passes through unchanged. */
    CHECK(unesc_is("\"\xc3\xa9\xf0\x9f\x98\x80\"", "\xc3\xa9\xf0\x9f\x98\x80", 6));
}

TEST(unescape_rejects_surrogates_and_nul)
{
    static const char *const bad[] = {
        "\"\\ud83d\"", "\"\\ud83dx\"", "\"\\ud83d\\u0041\"", "\"\\ud83d\\ud83d\"",
        "\"\\ude00\"", "\"\\udfff\"", "\"\\ude00\\ud83d\"", "\"a\\udc00b\"", "\"\\ud83d\\n\"",
        "\"\\ud83d\\\\ude00\"", "\"\\ud83du\\ude00\"",
        "\"\\u0000\"", "\"a\\u0000b\"", "\"\\u0000\\u0041\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char out[32];
        int rc = unesc(bad[i], out, sizeof out);
        if (rc != ERR_INVALID) fprintf(stderr, "    unescape accepted %s: %d\n", bad[i], rc);
        CHECK_EQ_INT(rc, ERR_INVALID);
    }
    /* Not a quoted string at all. */
    char out[8];
    CHECK_EQ_INT(unesc("abc", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(unesc("\"abc", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(unesc("\"", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(unesc("", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(unesc("12", out, sizeof out), ERR_INVALID);
    /* A raw NUL byte cannot come out either. */
    static const char rawnul[] = "\"a\0b\"";
    char *p = dup_exact(rawnul, sizeof rawnul - 1);
    CHECK_EQ_INT(json_unescape(p, sizeof rawnul - 1, out, sizeof out), ERR_INVALID);
    free(p);
}

/* json_unescape is public and says ERR_INVALID for "not a string": a raw
 * value that is not a valid JSON string literal must be refused, not
 * decoded as if the escape were fine. */
TEST(unescape_rejects_malformed_literals)
{
    char out[16];
    CHECK_EQ_INT(unesc("\"\\x\"", out, sizeof out), ERR_INVALID);   /* "\x" */
    CHECK_EQ_INT(unesc("\"\\\"", out, sizeof out), ERR_INVALID);    /* "\" : escaped close */
    CHECK_EQ_INT(unesc("\"a\"b\"", out, sizeof out), ERR_INVALID);  /* unescaped quote */
    CHECK_EQ_INT(unesc("\"a\nb\"", out, sizeof out), ERR_INVALID);  /* raw control char */
}

TEST(unescape_capacity)
{
    /* cap counts the NUL: n bytes need cap n + 1. Guard bytes must survive. */
    struct { const char *raw; size_t len; } c[] = {
        { "\"abc\"", 3 }, { "\"\\u20ac\"", 3 }, { "\"\\ud83d\\ude00\"", 4 },
        { "\"a\\nb\"", 3 }, { "\"\xc3\xa9z\"", 3 }, { "\"\"", 0 },
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        for (size_t cap = 1; cap <= c[i].len + 2; cap++) {
            char buf[16];
            memset(buf, 'G', sizeof buf);
            int rc = unesc(c[i].raw, buf, cap);
            if (cap <= c[i].len) {
                CHECK_EQ_INT(rc, ERR_TOO_LARGE);
            } else {
                CHECK_EQ_INT(rc, (int)c[i].len);
                CHECK(buf[c[i].len] == 0);
            }
            for (size_t k = cap; k < sizeof buf; k++) CHECK(buf[k] == 'G');
        }
    }
}

TEST(get_str)
{
    const char *s = "{\"name\":\"Zo\\u00eb \\\"Z\\\"\",\"n\":5,\"e\":\"\",\"z\":\"\\u0000\","
                    "\"o\":{\"name\":\"inner\"},\"a\":[\"x\"]}";
    json_obj o;
    char *keep;
    CHECK_EQ_INT(parse(s, &o, &keep), ERR_OK);
    char out[32];
    memset(out, 'X', sizeof out);
    CHECK_EQ_INT(json_get_str(&o, "name", out, sizeof out), 8);
    CHECK(memcmp(out, "Zo\xc3\xab \"Z\"", 9) == 0);
    CHECK_EQ_INT(json_get_str(&o, "name", out, 8), ERR_TOO_LARGE);
    CHECK_EQ_INT(json_get_str(&o, "name", out, 9), 8);
    CHECK_EQ_INT(json_get_str(&o, "e", out, sizeof out), 0);
    CHECK(out[0] == 0);
    CHECK_EQ_INT(json_get_str(&o, "n", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(json_get_str(&o, "o", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(json_get_str(&o, "a", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(json_get_str(&o, "z", out, sizeof out), ERR_INVALID);
    CHECK_EQ_INT(json_get_str(&o, "missing", out, sizeof out), ERR_NOT_FOUND);
    free(keep);
}

/* ---- json_array_each ---------------------------------------------------- */

typedef struct collect {
    int calls, stop_at, stop_rc;
    char raw[16][32];
    uint8_t type[16];
} collect;

static int collect_fn(void *arg, const char *v, size_t len, uint8_t type)
{
    collect *c = arg;
    if (c->calls < 16 && len < 32) {
        memcpy(c->raw[c->calls], v, len);
        c->raw[c->calls][len] = 0;
        c->type[c->calls] = type;
    }
    c->calls++;
    return c->calls == c->stop_at ? c->stop_rc : 0;
}

static int each(const char *s, collect *c)
{
    char *p = dup_exact(s, strlen(s));
    int rc = json_array_each(p, strlen(s), collect_fn, c);
    free(p);
    return rc;
}

TEST(array_each)
{
    collect c = {0};
    CHECK_EQ_INT(each("[1,\"a,b\",true,false,null,[2,[3]],{\"k\":[4]},-1.5e2]", &c), ERR_OK);
    CHECK_EQ_INT(c.calls, 8);
    static const char *const raw[] = { "1", "\"a,b\"", "true", "false", "null", "[2,[3]]",
                                       "{\"k\":[4]}", "-1.5e2" };
    static const uint8_t type[] = { JSON_NUMBER, JSON_STRING, JSON_TRUE, JSON_FALSE, JSON_NULL,
                                    JSON_ARRAY, JSON_OBJECT, JSON_NUMBER };
    for (int i = 0; i < 8; i++) {
        CHECK(strcmp(c.raw[i], raw[i]) == 0);
        CHECK_EQ_INT(c.type[i], type[i]);
    }

    /* Whitespace is not part of an element. */
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(each(" [ 1 ,\n\"x\" ,\t{ } ] ", &c), ERR_OK);
    CHECK_EQ_INT(c.calls, 3);
    CHECK(strcmp(c.raw[0], "1") == 0);
    CHECK(strcmp(c.raw[1], "\"x\"") == 0);
    CHECK(strcmp(c.raw[2], "{ }") == 0);

    /* Empty arrays call nothing. */
    memset(&c, 0, sizeof c);
    CHECK_EQ_INT(each("[]", &c), ERR_OK);
    CHECK_EQ_INT(each("[ \n ]", &c), ERR_OK);
    CHECK_EQ_INT(c.calls, 0);

    /* Early stop: fn's non-zero value comes back and no more calls follow. */
    memset(&c, 0, sizeof c);
    c.stop_at = 2;
    c.stop_rc = 42;
    CHECK_EQ_INT(each("[10,20,30,40]", &c), 42);
    CHECK_EQ_INT(c.calls, 2);
    memset(&c, 0, sizeof c);
    c.stop_at = 1;
    c.stop_rc = -15;
    CHECK_EQ_INT(each("[10,20]", &c), -15);
    CHECK_EQ_INT(c.calls, 1);

    /* Not an array: refused without calling fn. */
    static const char *const notarr[] = { "{}", "{\"a\":[1]}", "\"[1]\"", "1", "", " ", "null",
                                          "]", "x[1]" };
    for (size_t i = 0; i < sizeof notarr / sizeof *notarr; i++) {
        memset(&c, 0, sizeof c);
        CHECK_EQ_INT(each(notarr[i], &c), ERR_INVALID);
        CHECK_EQ_INT(c.calls, 0);
    }

    /* On a field value straight out of json_parse_object. */
    json_obj o;
    char *keep;
    CHECK_EQ_INT(parse("{\"m\":[\"ann\",\"bob\"],\"x\":1}", &o, &keep), ERR_OK);
    const json_field *f = json_get(&o, "m");
    memset(&c, 0, sizeof c);
    CHECK(f != NULL);
    if (f) CHECK_EQ_INT(json_array_each(f->val, f->val_len, collect_fn, &c), ERR_OK);
    CHECK_EQ_INT(c.calls, 2);
    CHECK(strcmp(c.raw[1], "\"bob\"") == 0);
    free(keep);
}

/* ---- json_validate -------------------------------------------------------- */

TEST(validate_types)
{
    struct { const char *s; uint8_t t; } ok[] = {
        { "null", JSON_NULL }, { "false", JSON_FALSE }, { "true", JSON_TRUE },
        { "-12.5e3", JSON_NUMBER }, { "\"s\"", JSON_STRING }, { "[]", JSON_ARRAY },
        { "{}", JSON_OBJECT }, { " \t\n\r[1, {\"a\": [null]}] \n", JSON_ARRAY },
        { "{\"a\":1,\"a\":2}", JSON_OBJECT }, /* duplicates are json_parse_object's rule */
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint8_t t = 0;
        CHECK_EQ_INT(validate(ok[i].s, &t), ERR_OK);
        CHECK_EQ_INT(t, ok[i].t);
        CHECK_EQ_INT(validate(ok[i].s, NULL), ERR_OK); /* type is optional */
    }
    static const char *const bad[] = { "", " ", "1 2", "[] []", "nul", "\"", "[1,]", "{\"a\"}",
                                       "01", "1.", ".5", "+1", "'s'", "[\"\\x\"]", "truex" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint8_t t = 0;
        CHECK_EQ_INT(validate(bad[i], &t), ERR_INVALID);
    }
}

/* ---- differential: json_validate vs a reference validator ---------------- */

typedef struct ref {
    const unsigned char *p, *e;
    int depth;
    bool too_deep;
} ref;

static void ref_ws(ref *r)
{
    while (r->p < r->e && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static bool ref_value(ref *r, uint8_t *t);

static bool ref_digits(ref *r)
{
    const unsigned char *s = r->p;
    while (r->p < r->e && *r->p >= '0' && *r->p <= '9') r->p++;
    return r->p > s;
}

static bool ref_string(ref *r)
{
    r->p++; /* opening quote */
    for (;;) {
        if (r->p >= r->e) return false;
        unsigned char c = *r->p++;
        if (c == '"') return true;
        if (c < 0x20) return false;
        if (c != '\\') continue;
        if (r->p >= r->e) return false;
        c = *r->p++;
        if (c == 'u') {
            for (int i = 0; i < 4; i++) {
                if (r->p >= r->e || !strchr("0123456789abcdefABCDEF", *r->p) || !*r->p) return false;
                r->p++;
            }
        } else if (!c || !strchr("\"\\/bfnrt", c)) {
            return false;
        }
    }
}

static bool ref_number(ref *r)
{
    if (r->p < r->e && *r->p == '-') r->p++;
    if (r->p >= r->e) return false;
    if (*r->p == '0') r->p++;
    else if (*r->p >= '1' && *r->p <= '9') ref_digits(r);
    else return false;
    if (r->p < r->e && *r->p == '.') { r->p++; if (!ref_digits(r)) return false; }
    if (r->p < r->e && (*r->p == 'e' || *r->p == 'E')) {
        r->p++;
        if (r->p < r->e && (*r->p == '+' || *r->p == '-')) r->p++;
        if (!ref_digits(r)) return false;
    }
    return true;
}

static bool ref_word(ref *r, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(r->e - r->p) < n || memcmp(r->p, w, n) != 0) return false;
    r->p += n;
    return true;
}

static bool ref_container(ref *r, bool obj)
{
    if (++r->depth > JSON_MAX_DEPTH) { r->too_deep = true; return false; }
    r->p++;
    ref_ws(r);
    unsigned char close = obj ? '}' : ']';
    if (r->p < r->e && *r->p == close) { r->p++; r->depth--; return true; }
    for (;;) {
        uint8_t t;
        ref_ws(r);
        if (obj) {
            if (r->p >= r->e || *r->p != '"' || !ref_string(r)) return false;
            ref_ws(r);
            if (r->p >= r->e || *r->p++ != ':') return false;
        }
        if (!ref_value(r, &t)) return false;
        ref_ws(r);
        if (r->p >= r->e) return false;
        unsigned char c = *r->p++;
        if (c == close) { r->depth--; return true; }
        if (c != ',') return false;
    }
}

static bool ref_value(ref *r, uint8_t *t)
{
    ref_ws(r);
    if (r->p >= r->e) return false;
    switch (*r->p) {
    case '{': *t = JSON_OBJECT; return ref_container(r, true);
    case '[': *t = JSON_ARRAY; return ref_container(r, false);
    case '"': *t = JSON_STRING; return ref_string(r);
    case 't': *t = JSON_TRUE; return ref_word(r, "true");
    case 'f': *t = JSON_FALSE; return ref_word(r, "false");
    case 'n': *t = JSON_NULL; return ref_word(r, "null");
    default: *t = JSON_NUMBER; return ref_number(r);
    }
}

/* ERR_OK, ERR_INVALID or ERR_TOO_LARGE, like json_validate. */
static int ref_validate(const char *s, size_t n, uint8_t *t)
{
    ref r = { (const unsigned char *)s, (const unsigned char *)s + n, 0, false };
    bool ok = ref_value(&r, t);
    if (r.too_deep) return ERR_TOO_LARGE;
    if (!ok) return ERR_INVALID;
    ref_ws(&r);
    return r.p == r.e ? ERR_OK : ERR_INVALID;
}

/* A random valid-looking document (then possibly mutated). */
static void gen_value(char *out, size_t *n, size_t cap, int depth)
{
    static const char *const atoms[] = {
        "0", "-1", "12", "1.5", "-0.25e+3", "7E-2", "true", "false", "null", "\"\"", "\"a\"",
        "\"\\n\\u00e9\"", "\"\\ud83d\\ude00\"", "\"\xc3\xa9\"", "\"x\\\"y\"",
    };
    if (*n + 40 >= cap) return;
    unsigned k = (unsigned)(test_rand() % (depth > 4 ? 3 : 5));
    if (k >= 3) {
        bool obj = k == 3;
        out[(*n)++] = obj ? '{' : '[';
        int items = (int)(test_rand() % 4);
        for (int i = 0; i < items && *n + 40 < cap; i++) {
            if (i) out[(*n)++] = ',';
            if (test_rand() % 4 == 0) out[(*n)++] = ' ';
            if (obj) {
                *n += (size_t)sprintf(out + *n, "\"k%d\":", (int)(test_rand() % 3));
            }
            gen_value(out, n, cap, depth + 1);
        }
        if (*n + 1 < cap) out[(*n)++] = obj ? '}' : ']';
        return;
    }
    const char *a = atoms[test_rand() % (sizeof atoms / sizeof *atoms)];
    size_t l = strlen(a);
    memcpy(out + *n, a, l);
    *n += l;
}

TEST(validate_differential)
{
    static const char alpha[] = "{}[]\":,0123456789-+.eE \t\n\\ubfnrtalsx\x01\x7f\xc3\xa9/'";
    int agree = 0, valid = 0, invalid = 0, deep = 0;
    for (int iter = 0; iter < 2000; iter++) {
        char buf[256];
        size_t n = 0;
        if (iter % 2 == 0) {
            n = (size_t)(test_rand() % 24);
            for (size_t i = 0; i < n; i++) buf[i] = alpha[test_rand() % (sizeof alpha - 1)];
        } else {
            gen_value(buf, &n, 200, 0);
            int muts = (int)(test_rand() % 3);
            for (int m = 0; m < muts && n > 0; m++) {
                size_t at = (size_t)(test_rand() % n);
                switch (test_rand() % 3) {
                case 0: buf[at] = alpha[test_rand() % (sizeof alpha - 1)]; break;
                case 1: memmove(buf + at, buf + at + 1, n - at - 1); n--; break;
                default:
                    if (n < sizeof buf - 1) {
                        memmove(buf + at + 1, buf + at, n - at);
                        buf[at] = alpha[test_rand() % (sizeof alpha - 1)];
                        n++;
                    }
                }
            }
        }
        if (iter % 97 == 0 && n + 80 < sizeof buf) { /* some deep ones */
            int d = 30 + (iter / 97) % 5; /* 30..34: both sides of the limit */
            memmove(buf + d, buf, n);
            memset(buf, '[', (size_t)d);
            memset(buf + d + n, ']', (size_t)d);
            n += 2 * (size_t)d;
        }
        uint8_t t1 = 0, t2 = 0;
        int want = ref_validate(buf, n, &t1);
        int got = validate_n(buf, n, &t2);
        if (want == got && (want != ERR_OK || t1 == t2)) {
            agree++;
        } else {
            fprintf(stderr, "    differential: ref %d got %d on [%.*s]\n", want, got, (int)n, buf);
        }
        if (want == ERR_OK) valid++;
        else if (want == ERR_INVALID) invalid++;
        else deep++;
        /* An object json_validate accepts parses as one unless the top-level
         * rules (duplicates, field count) say otherwise, never the reverse. */
        json_obj o;
        int po = parse_n(buf, n, &o, NULL);
        if (po == ERR_OK) CHECK(got == ERR_OK && t2 == JSON_OBJECT);
    }
    fprintf(stderr, "  validate_differential: %d valid, %d invalid, %d too deep\n", valid, invalid,
            deep);
    CHECK_EQ_INT(agree, 2000);
    /* The generator must exercise both sides. */
    CHECK(valid > 300);
    CHECK(invalid > 300);
    CHECK(deep > 0);
}

/* ---- builder -------------------------------------------------------------- */

static bool jb_is(jbuf *j, const char *want, size_t want_len)
{
    size_t len = 0;
    const char *d = jb_data(j, &len);
    bool ok = d && len == want_len && memcmp(d, want, len) == 0;
    if (!ok) fprintf(stderr, "    builder: got [%.*s]\n", d ? (int)len : 4, d ? d : "NULL");
    return ok;
}

/* jb_str of s[0..n), then checks the result is a JSON string that
 * unescapes back to s and contains no raw control character. */
static bool str_round_trip(const char *s, size_t n)
{
    jbuf j;
    jb_init(&j, 8);
    jb_str(&j, s, n);
    size_t len = 0;
    const char *d = jb_data(&j, &len);
    bool ok = d != NULL;
    uint8_t t = 0;
    if (ok) ok = json_validate(d, len, &t) == ERR_OK && t == JSON_STRING;
    for (size_t i = 0; ok && i < len; i++) ok = (unsigned char)d[i] >= 0x20;
    if (ok) {
        char *out = malloc(n + 1);
        int rc = json_unescape(d, len, out, n + 1);
        ok = rc == (int)n && memcmp(out, s, n) == 0;
        free(out);
    }
    jb_free(&j);
    return ok;
}

TEST(builder_strings)
{
    jbuf j;
    jb_init(&j, 0);
    CHECK(jb_is(&j, "", 0));
    jb_str(&j, "", 0);
    CHECK(jb_is(&j, "\"\"", 2));
    jb_free(&j);

    jb_init(&j, 0);
    jb_cstr(&j, "he said \"hi\" \\o/");
    const char *w1 = "\"he said \\\"hi\\\" \\\\o/\"";
    CHECK(jb_is(&j, w1, strlen(w1)));
    jb_free(&j);

    jb_init(&j, 0);
    jb_cstr(&j, "\"");
    jb_lit(&j, ",");
    jb_cstr(&j, "\\");
    jb_lit(&j, ",");
    jb_cstr(&j, "tail\"");
    const char *w2 = "\"\\\"\",\"\\\\\",\"tail\\\"\"";
    CHECK(jb_is(&j, w2, strlen(w2)));
    jb_free(&j);

    /* UTF-8 and DEL pass through byte for byte. */
    const char *u = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f";
    jb_init(&j, 0);
    jb_cstr(&j, u);
    char want[64];
    size_t wn = (size_t)sprintf(want, "\"%s\"", u);
    CHECK(jb_is(&j, want, wn));
    jb_free(&j);

    /* Every control character is escaped and comes back unchanged. */
    for (int c = 1; c < 0x20; c++) {
        char s[4] = { 'a', (char)c, 'b', 0 };
        CHECK(str_round_trip(s, 3));
        char s1[1] = { (char)c };
        CHECK(str_round_trip(s1, 1));
    }
    char all[0x20 + 4];
    for (int c = 1; c < 0x20; c++) all[c - 1] = (char)c;
    memcpy(all + 0x1f, "\"\\/", 3);
    CHECK(str_round_trip(all, 0x1f + 3));
    CHECK(str_round_trip("ok then \"quoted\" and \\ back \n", 29));

    /* The short forms where JSON has them, \u00XX otherwise. */
    jb_init(&j, 0);
    jb_str(&j, "\n\r\t\x01\x1f", 5);
    size_t len = 0;
    const char *d = jb_data(&j, &len);
    CHECK(d != NULL);
    if (d) {
        CHECK(len > 7 && memchr(d, '\n', len) == NULL && memchr(d, '\x01', len) == NULL);
        uint8_t t;
        CHECK_EQ_INT(json_validate(d, len, &t), ERR_OK);
    }
    jb_free(&j);

    /* A NUL byte is escaped (\u0000), so the output is still valid JSON. */
    jb_init(&j, 0);
    jb_str(&j, "a\0b", 3);
    d = jb_data(&j, &len);
    CHECK(d != NULL);
    if (d) {
        CHECK(memchr(d, 0, len) == NULL);
        CHECK_EQ_INT(json_validate(d, len, NULL), ERR_OK);
        CHECK(len == 10 && memcmp(d, "\"a\\u0000b\"", 10) == 0);
    }
    jb_free(&j);
}

TEST(builder_random_round_trip)
{
    static const char *const pieces[] = { "a", "Z", " ", "\"", "\\", "/", "\n", "\t", "\x01",
                                          "\x1f", "\x7f", "\xc3\xa9", "\xe2\x82\xac",
                                          "\xf0\x9f\x98\x80", "u", "\\u", "0" };
    int ok = 0;
    for (int iter = 0; iter < 500; iter++) {
        char s[256];
        size_t n = 0;
        int k = (int)(test_rand() % 40);
        for (int i = 0; i < k; i++) {
            const char *p = pieces[test_rand() % (sizeof pieces / sizeof *pieces)];
            memcpy(s + n, p, strlen(p));
            n += strlen(p);
        }
        ok += str_round_trip(s, n);
    }
    CHECK_EQ_INT(ok, 500);
}

TEST(builder_numbers)
{
    struct { uint64_t v; const char *s; } u[] = {
        { 0, "0" }, { 7, "7" }, { 10, "10" }, { 1234567890, "1234567890" },
        { 9007199254740992ull, "9007199254740992" }, { UINT64_MAX, "18446744073709551615" },
    };
    for (size_t i = 0; i < sizeof u / sizeof *u; i++) {
        jbuf j;
        jb_init(&j, 0);
        jb_u64(&j, u[i].v);
        CHECK(jb_is(&j, u[i].s, strlen(u[i].s)));
        jb_free(&j);
    }
    struct { int64_t v; const char *s; } s[] = {
        { 0, "0" }, { -1, "-1" }, { 1, "1" }, { -10, "-10" },
        { INT64_MAX, "9223372036854775807" }, { INT64_MIN, "-9223372036854775808" },
        { INT64_MIN + 1, "-9223372036854775807" },
    };
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        jbuf j;
        jb_init(&j, 0);
        jb_i64(&j, s[i].v);
        CHECK(jb_is(&j, s[i].s, strlen(s[i].s)));
        uint8_t t = 0;
        size_t len;
        const char *d = jb_data(&j, &len);
        CHECK(d && json_validate(d, len, &t) == ERR_OK && t == JSON_NUMBER);
        jb_free(&j);
    }
    /* Appending: numbers in a sequence. */
    jbuf j;
    jb_init(&j, 0);
    jb_lit(&j, "[");
    jb_u64(&j, 1);
    jb_raw(&j, ",", 1);
    jb_i64(&j, -2);
    jb_raw(&j, "]", 1);
    CHECK(jb_is(&j, "[1,-2]", 6));
    jb_free(&j);
}

TEST(builder_growth)
{
    size_t big = 100 * 1024;
    char *s = malloc(big);
    for (size_t i = 0; i < big; i++) s[i] = (char)('a' + i % 26);

    /* Fast path: nothing to escape. */
    jbuf j;
    jb_init(&j, 16);
    jb_str(&j, s, big);
    size_t len = 0;
    const char *d = jb_data(&j, &len);
    CHECK(d != NULL);
    CHECK_EQ_INT(len, big + 2);
    if (d && len == big + 2) CHECK(d[0] == '"' && memcmp(d + 1, s, big) == 0 && d[big + 1] == '"');
    jb_free(&j);

    /* Slow path after a clean prefix, growing while escaping. */
    s[big / 2] = '\n';
    for (size_t i = big / 2 + 1; i < big; i += 7) s[i] = '\x02';
    CHECK(str_round_trip(s, big));

    /* All escapes: six output bytes per input byte. */
    memset(s, '\x01', big);
    jb_init(&j, 16);
    jb_str(&j, s, big);
    d = jb_data(&j, &len);
    CHECK(d != NULL);
    CHECK_EQ_INT(len, big * 6 + 2);
    if (d) CHECK_EQ_INT(json_validate(d, len, NULL), ERR_OK);
    jb_free(&j);

    /* Many small appends, mixed. */
    jb_init(&j, 1);
    jb_lit(&j, "{\"a\":[");
    for (int i = 0; i < 20000; i++) {
        if (i) jb_lit(&j, ",");
        if (i % 3 == 0) jb_u64(&j, (uint64_t)i);
        else if (i % 3 == 1) jb_i64(&j, -i);
        else jb_cstr(&j, "x\"y");
    }
    jb_lit(&j, "]}");
    d = jb_data(&j, &len);
    CHECK(d != NULL);
    json_obj o;
    if (d) {
        int rc = json_parse_object(d, len, &o);
        CHECK_EQ_INT(rc, ERR_OK);
        collect c = {0};
        if (rc == ERR_OK)
            CHECK_EQ_INT(json_array_each(o.f[0].val, o.f[0].val_len, collect_fn, &c), ERR_OK);
        CHECK_EQ_INT(c.calls, 20000);
        CHECK(strcmp(c.raw[2], "\"x\\\"y\"") == 0);
        CHECK(strcmp(c.raw[1], "-1") == 0);
    }
    jb_free(&j);
    free(s);
}

TEST(builder_sticky_error)
{
    /* A size no rbuf can hold fails before anything is read from p. */
    static const char one[1] = { 'x' };
    jbuf j;
    jb_init(&j, 0);
    jb_lit(&j, "{");
    jb_raw(&j, one, (size_t)1 << 33);
    CHECK(j.err < 0);
    int err = j.err;
    size_t len = 123;
    CHECK(jb_data(&j, &len) == NULL);
    jb_lit(&j, "}");
    jb_u64(&j, 5);
    CHECK_EQ_INT(j.err, err); /* the first failure stays */
    CHECK(jb_data(&j, &len) == NULL);
    CHECK(jb_take(&j) == NULL);
    CHECK(j.b == NULL);
    jb_free(&j); /* harmless on an empty jbuf */
}

TEST(builder_truncate)
{
    jbuf j;
    jb_init(&j, 0);
    jb_lit(&j, "[1");
    size_t mark = jb_len(&j);
    CHECK_EQ_INT(mark, 2);
    jb_lit(&j, ",{\"a\":2}");
    CHECK_EQ_INT(jb_len(&j), 10);
    jb_truncate(&j, 99); /* beyond the text: ignored */
    CHECK_EQ_INT(jb_len(&j), 10);
    jb_truncate(&j, mark);
    jb_lit(&j, "]");
    size_t len;
    const char *d = jb_data(&j, &len);
    CHECK(d && len == 3 && memcmp(d, "[1]", 3) == 0);
    rbuf *b = jb_take(&j);
    CHECK_EQ_INT(jb_len(&j), 0); /* taken: empty */
    jb_truncate(&j, 0);          /* harmless */
    rbuf_unref(b);
    jb_init(&j, 0);
    jb_raw(&j, "x", (size_t)1 << 33);
    CHECK_EQ_INT(jb_len(&j), 0); /* after an error */
    jb_truncate(&j, 0);
    jb_free(&j);
}

/* ---- jb_take, framed ------------------------------------------------------------ */

/* The builder's text as a transport sends it: a frame header written ahead
 * of the shared payload (conn_send_frame), here joined into one buffer. */
static rbuf *frame_of(rbuf *payload)
{
    if (!payload) return NULL;
    uint8_t h[WS_MAX_HEADER];
    size_t hl = ws_frame_header(h, WS_OP_TEXT, true, payload->len, NULL);
    rbuf *b = rbuf_new(hl + payload->len);
    memcpy(b->data, h, hl);
    memcpy(b->data + hl, payload->data, payload->len);
    b->len = (uint32_t)(hl + payload->len);
    CHECK_EQ_INT(payload->refs, 1);
    rbuf_unref(payload);
    return b;
}

TEST(builder_frames)
{
    static const size_t sizes[] = { 0, 1, 2, 125, 126, 127, 65535, 65536, 200000 };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        jbuf j;
        jb_init(&j, n < 1000 ? 0 : n / 3);
        char *want = malloc(n + 1);
        if (n >= 2) {
            /* A JSON string of exactly n bytes. */
            char *body = malloc(n);
            for (size_t k = 0; k < n - 2; k++) body[k] = (char)('0' + k % 10);
            jb_str(&j, body, n - 2);
            want[0] = '"';
            memcpy(want + 1, body, n - 2);
            want[n - 1] = '"';
            free(body);
        } else if (n == 1) {
            jb_u64(&j, 7);
            want[0] = '7';
        }
        rbuf *p = jb_take(&j);
        CHECK(p != NULL);
        CHECK(!p || p->len == n);
        CHECK(j.b == NULL);
        rbuf *b = frame_of(p);
        jb_free(&j); /* j is empty: nothing to free, b must survive */
        if (!b) { free(want); continue; }
        CHECK_EQ_INT(b->refs, 1);
        size_t hl = n < 126 ? 2 : n <= 0xFFFF ? 4 : 10;
        CHECK_EQ_INT(b->len, hl + n);

        ws_limits lim;
        ws_limits_default(&lim);
        lim.max_message = 1 << 20;
        ws_frame f;
        uint16_t code = 0;
        uint8_t *copy = malloc(b->len);
        memcpy(copy, b->data, b->len);
        int rc = ws_parse_frame(copy, b->len, WS_CLIENT, &lim, &f, &code);
        CHECK_EQ_INT(rc, (int)(hl + n));
        if (rc > 0) {
            CHECK(f.fin);
            CHECK_EQ_INT(f.opcode, WS_OP_TEXT);
            CHECK(!f.masked);
            CHECK(f.len == n);
            CHECK_EQ_INT(f.header_len, hl);
            CHECK(memcmp(f.payload, want, n) == 0);
            CHECK(f.payload == copy + hl);
        }
        /* Every strict prefix is incomplete. */
        for (size_t cut = 0; cut < b->len; cut += (cut < 20 ? 1 : b->len / 7 + 1))
            CHECK_EQ_INT(ws_parse_frame(copy, cut, WS_CLIENT, &lim, &f, &code), ERR_AGAIN);
        free(copy);
        rbuf_unref(b);
        free(want);
    }
}

/* ---- round trip: builder -> parser -------------------------------------------- */

TEST(round_trip_object)
{
    const char *text = "line1\nline2 \"q\" \\ tab\t caf\xc3\xa9 \xf0\x9f\x98\x80 \x01";
    jbuf j;
    jb_init(&j, 32);
    jb_lit(&j, "{");
    jb_cstr(&j, "type"); jb_lit(&j, ":"); jb_cstr(&j, "msg"); jb_lit(&j, ",");
    jb_cstr(&j, "conv"); jb_lit(&j, ":"); jb_u64(&j, 9007199254740992ull); jb_lit(&j, ",");
    jb_cstr(&j, "neg"); jb_lit(&j, ":"); jb_i64(&j, INT64_MIN); jb_lit(&j, ",");
    jb_cstr(&j, "text"); jb_lit(&j, ":"); jb_cstr(&j, text); jb_lit(&j, ",");
    jb_cstr(&j, "arr"); jb_lit(&j, ":["); jb_u64(&j, 1); jb_lit(&j, ",");
    jb_cstr(&j, "two"); jb_lit(&j, "],");
    jb_cstr(&j, "obj"); jb_lit(&j, ":{"); jb_cstr(&j, "k"); jb_lit(&j, ":null}");
    jb_lit(&j, "}");
    size_t len = 0;
    const char *d = jb_data(&j, &len);
    CHECK(d != NULL);
    if (!d) { jb_free(&j); return; }
    char *copy = dup_exact(d, len);
    json_obj o;
    CHECK_EQ_INT(json_parse_object(copy, len, &o), ERR_OK);
    CHECK_EQ_INT(o.n, 6);
    char s[128];
    CHECK_EQ_INT(json_get_str(&o, "type", s, sizeof s), 3);
    CHECK(strcmp(s, "msg") == 0);
    uint64_t v = 0;
    CHECK_EQ_INT(json_get_u64(&o, "conv", &v), ERR_OK);
    CHECK(v == 9007199254740992ull);
    const json_field *f = json_get(&o, "neg");
    CHECK(f && f->type == JSON_NUMBER && span_is(f->val, f->val_len, "-9223372036854775808"));
    CHECK_EQ_INT(json_get_u64(&o, "neg", &v), ERR_INVALID);
    CHECK_EQ_INT(json_get_str(&o, "text", s, sizeof s), (int)strlen(text));
    CHECK(strcmp(s, text) == 0);
    f = json_get(&o, "arr");
    CHECK(f && f->type == JSON_ARRAY && span_is(f->val, f->val_len, "[1,\"two\"]"));
    f = json_get(&o, "obj");
    CHECK(f && f->type == JSON_OBJECT && span_is(f->val, f->val_len, "{\"k\":null}"));
    free(copy);

    /* And the same bytes through a frame. */
    rbuf *b = frame_of(jb_take(&j));
    CHECK(b != NULL);
    if (b) {
        ws_frame fr;
        uint16_t code;
        int rc = ws_parse_frame(b->data, b->len, WS_CLIENT, NULL, &fr, &code);
        CHECK_EQ_INT(rc, (int)b->len);
        if (rc > 0) CHECK_EQ_INT(json_parse_object((const char *)fr.payload, fr.len, &o), ERR_OK);
        rbuf_unref(b);
    }
}

int main(void)
{
    test_seed();
    fprintf(stderr, "seed: 0x%llx\n", (unsigned long long)test_rng_state_);
    RUN(parse_all_value_types);
    RUN(parse_empty_and_whitespace);
    RUN(parse_string_escapes);
    RUN(parse_numbers_all_forms);
    RUN(parse_rejects_malformed);
    RUN(parse_rejects_duplicate_top_level_keys);
    RUN(parse_rejects_escaped_duplicate_keys);
    RUN(depth_limit);
    RUN(field_limit);
    RUN(get_u64);
    RUN(unescape_all_escapes);
    RUN(unescape_rejects_surrogates_and_nul);
    RUN(unescape_rejects_malformed_literals);
    RUN(unescape_capacity);
    RUN(get_str);
    RUN(array_each);
    RUN(validate_types);
    RUN(validate_differential);
    RUN(builder_strings);
    RUN(builder_random_round_trip);
    RUN(builder_numbers);
    RUN(builder_growth);
    RUN(builder_sticky_error);
    RUN(builder_truncate);
    RUN(builder_frames);
    RUN(round_trip_object);
    return test_summary("json");
}
