#include "codec/busmsg.h"
#include "test.h"

static int parse(const char *s, busmsg *m)
{
    return busmsg_parse(s, strlen(s), m);
}

TEST(round_trip)
{
    busmsg m = {.kind = BUSMSG_MSG, .conv = 7, .seq = UINT64_MAX, .arg = 0};
    strcpy(m.node, "node-1.a_B");
    char h[BUSMSG_HEADER_MAX + 32];
    int n = busmsg_header(&m, h);
    CHECK(n > 0);
    CHECK(strcmp(h, "P1 node-1.a_B msg 7 18446744073709551615 0\n") == 0);
    strcat(h, "{\"type\":\"msg\"}");
    busmsg p;
    CHECK_EQ_INT(parse(h, &p), ERR_OK);
    CHECK(strcmp(p.node, "node-1.a_B") == 0 && p.kind == BUSMSG_MSG && p.conv == 7);
    CHECK(p.seq == UINT64_MAX && p.arg == 0);
    CHECK(p.payload == h + n && p.payload_len == 14);
    /* every kind has a name that parses back; an empty payload is fine */
    for (int k = 1; k < BUSMSG_KIND_COUNT; k++) {
        busmsg q = {.kind = (uint8_t)k, .arg = 42};
        strcpy(q.node, "n");
        n = busmsg_header(&q, h);
        CHECK(n > 0);
        CHECK_EQ_INT(busmsg_parse(h, (size_t)n, &p), ERR_OK);
        CHECK(p.kind == k && p.arg == 42 && p.payload_len == 0);
    }
    /* the longest header fits */
    memset(m.node, 'x', BUSMSG_NODE_MAX);
    m.node[BUSMSG_NODE_MAX] = 0;
    m.kind = BUSMSG_PRESENCE; /* the longest kind name */
    m.conv = m.seq = m.arg = UINT64_MAX;
    n = busmsg_header(&m, h);
    CHECK(n > 0 && n < BUSMSG_HEADER_MAX);
    CHECK_EQ_INT(busmsg_parse(h, (size_t)n, &p), ERR_OK);
}

TEST(refused)
{
    static const char *const bad[] = {
        "", "P1", "P1 ", "P2 n msg 1 1 0\n", "p1 n msg 1 1 0\n", "P1  msg 1 1 0\n",
        "P1 n msg 1 1 0", /* no newline */
        "P1 n msg 1 1 0 \n", "P1 n message 1 1 0\n", "P1 n msg 01 1 0\n", "P1 n msg -1 1 0\n",
        "P1 n msg 1 18446744073709551616 0\n", "P1 n msg 1 1 +0\n", "P1 n/x msg 1 1 0\n",
        "P1 n msg 1 1\n", "P1 n msg 1 1 0 0\n", "P1 n\tmsg 1 1 0\n", "P1 n msg 1 1 0x\n",
        "P1 n msg 1 1 99999999999999999999\n",
        "P1 xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx msg 1 1 0\n",
    };
    busmsg m;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = parse(bad[i], &m);
        if (rc != ERR_INVALID) fprintf(stderr, "  accepted: '%s'\n", bad[i]);
        CHECK_EQ_INT(rc, ERR_INVALID);
    }
    /* a NUL in the header is refused; only len bytes are read */
    CHECK_EQ_INT(busmsg_parse("P1 n\0 msg 1 1 0\n", 16, &m), ERR_INVALID);
    CHECK_EQ_INT(busmsg_parse("P1 n msg 1 1 0\nXYZ", 15, &m), ERR_OK);
    CHECK(m.payload_len == 0);
    /* what a header refuses to write */
    busmsg w = {.kind = 0};
    char h[BUSMSG_HEADER_MAX];
    strcpy(w.node, "n");
    CHECK_EQ_INT(busmsg_header(&w, h), ERR_INVALID);
    w.kind = BUSMSG_KIND_COUNT;
    CHECK_EQ_INT(busmsg_header(&w, h), ERR_INVALID);
    w.kind = BUSMSG_MSG;
    strcpy(w.node, "a b");
    CHECK_EQ_INT(busmsg_header(&w, h), ERR_INVALID);
    w.node[0] = 0;
    CHECK_EQ_INT(busmsg_header(&w, h), ERR_INVALID);
    CHECK(busmsg_node_ok("a") && !busmsg_node_ok("") && !busmsg_node_ok("a:b"));
}

int main(void)
{
    RUN(round_trip);
    RUN(refused);
    return test_summary("busmsg");
}
