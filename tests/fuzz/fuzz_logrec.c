/* Fuzzes the log entry codec (logrec_next), which reads what the log holds
 * at start: every input decodes into entries whose pointers stay inside
 * the input, or stops with ERR_INVALID; every decoded entry encodes back
 * to the same bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/logrec.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_logrec: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    logrec r;
    int rc;
    logrec_buf b = {0};
    while ((rc = logrec_next(data, size, &off, &r)) == ERR_OK) {
        REQUIRE(off <= size);
        if (r.kind == LOGREC_MSG) {
            REQUIRE((const uint8_t *)r.cmid >= data && (const uint8_t *)r.cmid + r.cmid_len <= data + size);
            REQUIRE((const uint8_t *)r.body >= data && (const uint8_t *)r.body + r.body_len <= data + size);
        }
        REQUIRE(logrec_put(&b, &r) == ERR_OK);
    }
    REQUIRE(rc == ERR_NOT_FOUND || rc == ERR_INVALID);
    /* What decoded re-encodes to the same bytes. */
    REQUIRE(b.len <= size);
    if (b.len) REQUIRE(memcmp(b.p, data, b.len) == 0);
    if (rc == ERR_NOT_FOUND) REQUIRE(b.len == size);
    logrec_buf_free(&b);
    return 0;
}
