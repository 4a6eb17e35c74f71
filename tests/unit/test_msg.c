#include "codec/msg.h"
#include "test.h"

static int parse(const char *s, msg_req *r, const char **code)
{
    const char *message = NULL;
    *code = NULL;
    int rc = msg_parse(s, strlen(s), 100, r, code, &message);
    if (rc < 0) CHECK(*code && message && *message);
    return rc;
}

TEST(valid_frames)
{
    msg_req r;
    const char *code;
    CHECK_EQ_INT(parse("{\"type\":\"send\",\"conv\":7,\"cmid\":\"c\\u0031\",\"body\":{\"a\":[1]},\"id\":9}", &r, &code), 0);
    CHECK_EQ_INT(r.type, MSG_SEND);
    CHECK_EQ_INT(r.conv, 7);
    CHECK(strcmp(r.cmid, "c1") == 0 && r.cmid_len == 2);
    CHECK(r.body_len == 9 && memcmp(r.body, "{\"a\":[1]}", 9) == 0);
    CHECK(strcmp(r.ref, "\"c\\u0031\"") == 0); /* a send's ref is its cmid, raw */
    CHECK_EQ_INT(parse(" {\"type\":\"sync\",\"conv\":3,\"before\":10,\"id\":\"x\"} ", &r, &code), 0);
    CHECK(r.type == MSG_SYNC && r.before == 10 && r.after == 0 && r.limit == 50);
    CHECK(strcmp(r.ref, "\"x\"") == 0);
    CHECK_EQ_INT(parse("{\"type\":\"sync\",\"conv\":3,\"after\":4,\"limit\":500}", &r, &code), 0);
    CHECK(r.after == 4 && r.limit == 500);
    CHECK_EQ_INT(parse("{\"type\":\"read\",\"conv\":3,\"seq\":0}", &r, &code), 0);
    CHECK(r.type == MSG_READ && r.seq == 0);
    CHECK_EQ_INT(parse("{\"type\":\"delivered\",\"conv\":3,\"seq\":12}", &r, &code), 0);
    CHECK_EQ_INT(parse("{\"type\":\"typing\",\"conv\":1}", &r, &code), 0);
    CHECK_EQ_INT(parse("{\"type\":\"inbox\",\"changed_since\":5}", &r, &code), 0);
    CHECK(r.type == MSG_INBOX && r.changed_since == 5 && !r.has_page);
    CHECK_EQ_INT(r.limit, MSG_INBOX_LIMIT_DEFAULT);
    CHECK_EQ_INT(parse("{\"type\":\"inbox\",\"limit\":1000,\"page\":\"3.9.-5.7\"}", &r, &code), 0);
    CHECK(r.has_page && r.limit == 1000 && r.changed_since == 3);
    CHECK(r.page.since == 3 && r.page.snapshot == 9 && r.page.ts == -5 && r.page.conv == 7);
    CHECK_EQ_INT(parse("{\"type\":\"inbox\",\"changed_since\":3,\"page\":\"3.9.1\\u002e7\"}", &r, &code), 0);
    CHECK(r.has_page && r.page.ts == 1 && r.page.conv == 7);
    CHECK_EQ_INT(parse("{\"type\":\"ping\"}", &r, &code), 0);
    CHECK_EQ_INT(parse("{\"type\":\"echo\",\"anything\":[null]}", &r, &code), 0);
}

TEST(errors_and_codes)
{
    msg_req r;
    const char *code;
    struct { const char *in, *code, *ref; } cases[] = {
        {"", "bad_json", ""},
        {"[1]", "bad_json", ""},
        {"{\"type\":\"send\",}", "bad_json", ""},
        {"{\"type\":1}", "bad_request", ""},
        {"{\"id\":\"q\"}", "bad_request", "\"q\""},
        {"{\"type\":\"nope\",\"id\":4}", "unknown_type", "4"},
        {"{\"type\":\"send\",\"conv\":\"7\",\"cmid\":\"a\",\"body\":1}", "bad_request", ""},
        {"{\"type\":\"send\",\"conv\":0,\"cmid\":\"a\",\"body\":1}", "bad_request", ""},
        {"{\"type\":\"send\",\"conv\":-1,\"cmid\":\"a\",\"body\":1}", "bad_request", ""},
        {"{\"type\":\"send\",\"conv\":1.5,\"cmid\":\"a\",\"body\":1}", "bad_request", ""},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":5,\"body\":1,\"id\":1}", "bad_request", "1"},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"\",\"body\":1,\"id\":2}", "bad_request", "2"},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"a\",\"id\":3}", "bad_request", "\"a\""},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"a\",\"body\":null}", "bad_request", "\"a\""},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"a\",\"body\":\"\"}", "bad_request", "\"a\""},
        {"{\"type\":\"read\",\"conv\":1,\"seq\":9007199254740993,\"id\":5}", "bad_request", "5"},
        {"{\"type\":\"send\",\"conv\":1,\"cmid\":\"a\",\"body\":\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789\"}",
         "too_large", "\"a\""},
        {"{\"type\":\"sync\",\"conv\":1,\"limit\":0}", "bad_request", ""},
        {"{\"type\":\"sync\",\"conv\":1,\"limit\":501}", "bad_request", ""},
        {"{\"type\":\"sync\",\"conv\":1,\"after\":1,\"before\":5}", "bad_request", ""},
        {"{\"type\":\"sync\",\"conv\":1,\"before\":0}", "bad_request", ""},
        {"{\"type\":\"read\",\"conv\":1}", "bad_request", ""},
        {"{\"type\":\"read\",\"conv\":1,\"seq\":\"3\"}", "bad_request", ""},
        {"{\"type\":\"typing\"}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"changed_since\":-1}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"limit\":0,\"id\":1}", "bad_request", "1"},
        {"{\"type\":\"inbox\",\"limit\":1001}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"limit\":\"5\"}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"page\":5}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"page\":null}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"page\":\"\"}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"page\":\"1.2.3\"}", "bad_request", ""},
        {"{\"type\":\"inbox\",\"page\":\"0.2.3.4\",\"changed_since\":1}", "bad_request", ""},
        {"{\"type\":\"ping\",\"type\":\"ping\"}", "bad_json", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = parse(cases[i].in, &r, &code);
        CHECK(rc < 0);
        if (rc < 0 && (strcmp(code, cases[i].code) != 0 || strcmp(r.ref, cases[i].ref) != 0))
            fprintf(stderr, "  case %zu: %s -> code %s ref %s\n", i, cases[i].in, code, r.ref);
        CHECK(rc >= 0 || strcmp(code, cases[i].code) == 0);
        CHECK(rc >= 0 || strcmp(r.ref, cases[i].ref) == 0);
    }
}

TEST(long_id_is_not_echoed)
{
    char buf[256];
    snprintf(buf, sizeof buf, "{\"type\":\"nope\",\"id\":\"%090d\"}", 0);
    msg_req r;
    const char *code;
    CHECK(parse(buf, &r, &code) < 0);
    CHECK(r.ref[0] == 0);
}

/* The body rules, shared by the WebSocket send and the REST send. */
TEST(body_rules)
{
    const char *why = NULL;
    CHECK_EQ_INT(msg_check_body("\"hi\"", 4, 100, &why), ERR_OK);
    CHECK_EQ_INT(msg_check_body("\" \"", 3, 100, &why), ERR_OK);      /* a space is a message */
    CHECK_EQ_INT(msg_check_body("{}", 2, 100, &why), ERR_OK);
    CHECK_EQ_INT(msg_check_body("0", 1, 100, &why), ERR_OK);
    CHECK_EQ_INT(msg_check_body("\"\"", 2, 100, &why), ERR_INVALID);
    CHECK(why && strstr(why, "empty"));
    CHECK_EQ_INT(msg_check_body("null", 4, 100, &why), ERR_INVALID);
    CHECK_EQ_INT(msg_check_body(NULL, 0, 100, &why), ERR_INVALID);
    CHECK_EQ_INT(msg_check_body("\"abc\"", 5, 4, &why), ERR_TOO_LARGE);
    CHECK_EQ_INT(msg_check_body("\"ab\"", 4, 4, &why), ERR_OK);       /* at the limit */
}

TEST(page_tokens)
{
    msg_page p = {0}, q;
    char tok[MSG_PAGE_MAX];
    static const msg_page round[] = {
        {0, 0, 0, 1}, {5, 9, 1763800000000, 42}, {0, 1, -1, 2}, {3, 3, INT64_MIN, 1},
        {UINT64_MAX, UINT64_MAX, INT64_MAX, UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof round / sizeof round[0]; i++) {
        size_t n = msg_page_format(&round[i], tok);
        CHECK(n > 0 && n < MSG_PAGE_MAX && tok[n] == 0);
        CHECK_EQ_INT(msg_page_parse(tok, n, &q), ERR_OK);
        CHECK(q.since == round[i].since && q.snapshot == round[i].snapshot &&
              q.ts == round[i].ts && q.conv == round[i].conv);
        /* a prefix that ends before the last field has a digit is refused */
        size_t last = (size_t)(strrchr(tok, '.') - tok);
        for (size_t k = 0; k <= last + 1; k++) CHECK_EQ_INT(msg_page_parse(tok, k, &p), ERR_INVALID);
    }
    static const char *const bad[] = {
        "", ".", "1", "1.2.3", "1.2.3.4.5", "1.2.3.4.", ".1.2.3.4", "1..3.4", "a.2.3.4",
        "1.2.3.4 ", " 1.2.3.4", "+1.2.3.4", "-1.2.3.4", "1.-2.3.4", "1.2.3.-4", "1.2.--3.4",
        "1.2.-0.4", "01.2.3.4", "1.02.3.4", "1.2.03.4", "1.2.3.04", "0.0.0.0", "3.2.1.1",
        "18446744073709551616.18446744073709551616.1.1", "0.18446744073709551616.1.1",
        "0.1.9223372036854775808.1", "0.1.-9223372036854775809.1", "0.1.1.18446744073709551616",
        "0x1.2.3.4", "1.2.3.4\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = msg_page_parse(bad[i], strlen(bad[i]), &p);
        if (rc != ERR_INVALID) fprintf(stderr, "  accepted: '%s'\n", bad[i]);
        CHECK_EQ_INT(rc, ERR_INVALID);
    }
    CHECK_EQ_INT(msg_page_parse("0.1.-9223372036854775808.1", 26, &p), ERR_OK);
    CHECK(p.ts == INT64_MIN);
    /* not NUL-terminated: only n bytes are read */
    CHECK_EQ_INT(msg_page_parse("1.2.3.4999", 7, &p), ERR_OK);
    CHECK(p.conv == 4);
}

int main(void)
{
    RUN(valid_frames);
    RUN(errors_and_codes);
    RUN(long_id_is_not_echoed);
    RUN(body_rules);
    RUN(page_tokens);
    return test_summary("msg");
}
