/* Fuzzes the bus message codec (busmsg_parse), which reads what other
 * nodes, or anything else that can publish on the Redis server, put on the
 * bus: every input parses into a message whose payload lies inside the
 * input and whose header writes back to the same bytes, or is refused with
 * ERR_INVALID. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/busmsg.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_busmsg: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    busmsg m;
    int rc = busmsg_parse((const char *)data, size, &m);
    if (rc != ERR_OK) {
        REQUIRE(rc == ERR_INVALID);
        return 0;
    }
    REQUIRE((const uint8_t *)m.payload >= data && (const uint8_t *)m.payload + m.payload_len == data + size);
    char h[BUSMSG_HEADER_MAX];
    int n = busmsg_header(&m, h);
    REQUIRE(n > 0 && (size_t)n == (size_t)((const uint8_t *)m.payload - data));
    REQUIRE(memcmp(h, data, (size_t)n) == 0);
    return 0;
}
