/* Fuzzes the client frame codec (msg_parse), the dispatcher's whole view of
 * untrusted frames: every outcome is a valid request whose fields satisfy
 * the documented rules, or one of the documented error codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/json.h"
#include "codec/msg.h"
#include "codec/utf8.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_msg: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!utf8_valid(data, size)) return 0; /* WebSocket text frames are UTF-8 */
    char *s = malloc(size ? size : 1);
    if (!s) return 0;
    memcpy(s, data, size);
    msg_req r;
    const char *code = NULL, *message = NULL;
    size_t max_text = size % 2 ? 16 : 16384;
    int rc = msg_parse(s, size, max_text, &r, &code, &message);
    REQUIRE(strlen(r.ref) <= MSG_REF_MAX);
    if (r.ref[0]) REQUIRE(json_validate(r.ref, strlen(r.ref), NULL) == ERR_OK);
    if (rc < 0) {
        REQUIRE(code && message && *message);
        REQUIRE(!strcmp(code, "bad_json") || !strcmp(code, "bad_request") ||
                !strcmp(code, "unknown_type") || !strcmp(code, "too_large"));
    } else {
        REQUIRE(r.type >= MSG_SEND && r.type <= MSG_ECHO);
        if (r.type != MSG_PING && r.type != MSG_ECHO && r.type != MSG_INBOX) REQUIRE(r.conv > 0);
        if (r.type == MSG_SEND) {
            REQUIRE(r.cmid_len > 0 && r.cmid_len <= MSG_CMID_MAX && strlen(r.cmid) == r.cmid_len);
            REQUIRE(r.body >= s && r.body + r.body_len <= s + size && r.body_len <= max_text);
            uint8_t t;
            REQUIRE(json_validate(r.body, r.body_len, &t) == ERR_OK && t != JSON_NULL);
        }
        if (r.type == MSG_SYNC) {
            REQUIRE(r.limit >= 1 && r.limit <= MSG_LIMIT_MAX);
            REQUIRE(!(r.after && r.before));
        }
        if (r.type == MSG_INBOX) {
            REQUIRE(r.limit >= 1 && r.limit <= MSG_INBOX_LIMIT_MAX);
            if (r.has_page) {
                /* a token read is one msg_page_format writes back the same */
                REQUIRE(r.changed_since == r.page.since && r.page.snapshot >= r.page.since);
                REQUIRE(r.page.conv >= 1);
                char tok[MSG_PAGE_MAX];
                msg_page q;
                size_t n = msg_page_format(&r.page, tok);
                REQUIRE(msg_page_parse(tok, n, &q) == ERR_OK && !memcmp(&q, &r.page, sizeof q));
            }
        }
    }
    free(s);
    return 0;
}
