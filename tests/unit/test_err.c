/* err: the one error table, and docs/protocol.md's "Error codes" held
 * against it (run from the repository root, as make test does). */
#include "base/err.h"

#include <stdbool.h>

#include "test.h"

TEST(one_row_per_code)
{
    int n;
    const err_info *t = err_table(&n);
    CHECK_EQ_INT(n, 1 - ERR_LAST);
    for (int i = 0; i < n; i++) {
        CHECK_EQ_INT(t[i].err, -i);
        CHECK(err_info_of(-i) == &t[i]);
        CHECK(t[i].name && *t[i].name && t[i].code && *t[i].code && t[i].message && *t[i].message);
        CHECK(t[i].status >= 200 && t[i].status <= 599);
        CHECK(strcmp(err_name(-i), t[i].name) == 0);
        for (int j = 0; j < i; j++) CHECK(strcmp(t[i].name, t[j].name) != 0);
        /* A wire code means one HTTP status, whichever code carries it. */
        for (int j = 0; j < i; j++)
            if (strcmp(t[i].code, t[j].code) == 0) CHECK_EQ_INT(t[i].status, t[j].status);
    }
    /* Unknown codes answer as internal errors, never crash. */
    CHECK(strcmp(err_info_of(ERR_LAST - 1)->code, "internal") == 0);
    CHECK(strcmp(err_info_of(12345)->code, "internal") == 0);
    CHECK(strcmp(err_name(ERR_LAST - 1), "unknown") == 0);
}

TEST(the_inconsistencies_are_gone)
{
    /* One code per meaning: a full group is not a too-large message. */
    CHECK(strcmp(err_info_of(ERR_TOO_LARGE)->code, "too_large") == 0);
    CHECK_EQ_INT(err_info_of(ERR_TOO_LARGE)->status, 413);
    CHECK(strcmp(err_info_of(ERR_TOO_MANY_MEMBERS)->code, "too_many_members") == 0);
    CHECK(strcmp(err_info_of(ERR_RATE)->code, "rate_limited") == 0);
    CHECK_EQ_INT(err_info_of(ERR_RATE)->status, 429);
}

/* The wire codes of docs/protocol.md's "### Error codes" table, each with
 * its HTTP column: every row names codes of the table with that status, and
 * every wire code of the table is documented. */
TEST(protocol_doc_matches)
{
    FILE *f = fopen("docs/protocol.md", "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[2048];
    bool in = false;
    int n;
    const err_info *t = err_table(&n);
    bool documented[64] = {0};
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "### Error codes", 15) == 0) { in = true; continue; }
        if (!in) continue;
        if (line[0] == '#') break;
        if (line[0] != '|' || strncmp(line, "| code", 6) == 0 || strncmp(line, "| ---", 5) == 0)
            continue;
        /* | `a`, `b` | 400 | when | */
        char *cell2 = strchr(line + 1, '|');
        if (!cell2) continue;
        int status = atoi(cell2 + 1);
        rows++;
        for (char *p = line + 1; p < cell2; p++) {
            if (*p != '`') continue;
            char *e = strchr(p + 1, '`');
            if (!e || e > cell2) break;
            *e = 0;
            bool known = false;
            for (int i = 1; i < n; i++) {
                if (strcmp(t[i].code, p + 1) != 0) continue;
                known = true;
                documented[i] = true;
                if (t[i].status != status)
                    fprintf(stderr, "  protocol.md: %s is HTTP %d, the table says %d\n", p + 1,
                            status, t[i].status);
                CHECK_EQ_INT(t[i].status, status);
            }
            if (!known) fprintf(stderr, "  protocol.md: %s is not in the error table\n", p + 1);
            CHECK(known);
            p = e;
        }
    }
    fclose(f);
    CHECK(rows > 10);
    for (int i = 1; i < n; i++) {
        if (!documented[i]) fprintf(stderr, "  protocol.md lacks %s (%s)\n", t[i].code, t[i].name);
        CHECK(documented[i]);
    }
}

int main(void)
{
    RUN(one_row_per_code);
    RUN(the_inconsistencies_are_gone);
    RUN(protocol_doc_matches);
    return test_summary("err");
}
