/* conn: the address keys behind every per-address limit (conn_addr_key). */
#include "net/conn.h"

#include <arpa/inet.h>

#include "test.h"

static uint64_t key6(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    a->sin6_family = AF_INET6;
    if (inet_pton(AF_INET6, text, &a->sin6_addr) != 1) return 0;
    return conn_addr_key(&ss);
}

static uint64_t key4(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    a->sin_family = AF_INET;
    if (inet_pton(AF_INET, text, &a->sin_addr) != 1) return 0;
    return conn_addr_key(&ss);
}

TEST(ipv4_exact)
{
    CHECK(key4("192.0.2.1") != 0);
    CHECK(key4("192.0.2.1") != key4("192.0.2.2"));
    CHECK(key4("192.0.2.1") == key4("192.0.2.1"));
}

TEST(ipv6_by_its_64)
{
    /* One subscriber's /64 is one address for the limits, whatever the
     * interface ids it rotates through; the next /64 is another. */
    CHECK(key6("2001:db8:1:2::1") != 0);
    CHECK(key6("2001:db8:1:2::1") == key6("2001:db8:1:2:abcd:ef01:2345:6789"));
    CHECK(key6("2001:db8:1:2::1") != key6("2001:db8:1:3::1"));
    /* never equal to an IPv4 key */
    CHECK(key6("2001:db8:1:2::1") != key4("0.0.0.0"));
}

TEST(ipv4_mapped_is_ipv4)
{
    /* On a [::] listener IPv4 clients arrive as ::ffff:a.b.c.d: each keeps
     * its own key, the same as over IPv4, not one shared /64. */
    CHECK(key6("::ffff:192.0.2.1") == key4("192.0.2.1"));
    CHECK(key6("::ffff:192.0.2.1") != key6("::ffff:192.0.2.2"));
}

TEST(other_families_are_unknown)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    CHECK(conn_addr_key(&ss) == 0);
}

int main(void)
{
    RUN(ipv4_exact);
    RUN(ipv6_by_its_64);
    RUN(ipv4_mapped_is_ipv4);
    RUN(other_families_are_unknown);
    return test_summary("conn");
}
