/* log: logfmt values and lines. */
#include "base/log.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static const char *val(char *buf, size_t cap, const char *s)
{
    return log_value(buf, cap, s, s ? strlen(s) : 0);
}

TEST(bare_words_stay_bare)
{
    char b[64];
    CHECK(strcmp(val(b, sizeof b, "/healthz"), "/healthz") == 0);
    CHECK(strcmp(val(b, sizeof b, "127.0.0.1:80"), "127.0.0.1:80") == 0);
    CHECK(strcmp(val(b, sizeof b, "caf\xc3\xa9"), "caf\xc3\xa9") == 0); /* UTF-8 is printable */
}

TEST(others_are_quoted_and_escaped)
{
    char b[64];
    CHECK(strcmp(val(b, sizeof b, ""), "\"\"") == 0);
    CHECK(strcmp(val(b, sizeof b, NULL), "\"\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "token revoked"), "\"token revoked\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "a=b"), "\"a=b\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "say \"hi\""), "\"say \\\"hi\\\"\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "back\\slash"), "\"back\\\\slash\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "l1\nl2\r\t"), "\"l1\\nl2\\r\\t\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "\x01\x7f"), "\"\\x01\\x7f\"") == 0);
    /* an embedded NUL is a byte like another */
    CHECK(strcmp(log_value(b, sizeof b, "a\0b", 3), "\"a\\x00b\"") == 0);
}

TEST(cut_to_fit_and_still_quoted)
{
    char b[8];
    CHECK(strcmp(val(b, sizeof b, "abcdefgh"), "\"abcde\"") == 0); /* bare but too long */
    CHECK(strcmp(val(b, sizeof b, "a b c d e f"), "\"a b c\"") == 0);
    CHECK(strcmp(val(b, sizeof b, "abcd\"e"), "\"abcd\"") == 0); /* never half an escape */
    CHECK(strcmp(val(b, 3, "x y"), "\"\"") == 0);
    char tiny[2] = "z";
    val(tiny, sizeof tiny, "x y");
    CHECK(tiny[0] == 0);
    for (int n = 3; n <= 8; n++) {
        char c[8];
        memset(c, 'Z', sizeof c);
        val(c, (size_t)n, "\"\"\"\"\"\"\"\"");
        CHECK(strlen(c) < (size_t)n && c[0] == '"' && c[strlen(c) - 1] == '"');
    }
}

TEST(lines_are_logfmt)
{
    char path[] = "/tmp/test_log_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    char b[64];
    log_write(LOG_INFO, "ws close", "code=%d reason=%s", 1008, val(b, sizeof b, "token revoked"));
    log_write(LOG_DEBUG, "hidden", NULL); /* above the default level */
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char got[512] = "";
    ssize_t n = pread(fd, got, sizeof got - 1, 0);
    close(fd);
    unlink(path);
    CHECK(n > 0);
    CHECK(strstr(got, " level=info msg=\"ws close\" code=1008 reason=\"token revoked\"\n") != NULL);
    CHECK(strncmp(got, "ts=", 3) == 0);
    CHECK(strstr(got, "hidden") == NULL);
}

int main(void)
{
    RUN(bare_words_stay_bare);
    RUN(others_are_quoted_and_escaped);
    RUN(cut_to_fit_and_still_quoted);
    RUN(lines_are_logfmt);
    return test_summary("log");
}
