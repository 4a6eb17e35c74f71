/* Fuzzes the message log's recovery: the input becomes one or two segment
 * files in a scratch directory, then wal_open replays them. Every outcome
 * is ERR_OK, ERR_CORRUPT or ERR_INVALID; replayed records are in order,
 * aligned, at or after `from`; and after a successful open an append
 * works and a reopen replays the same records followed by it.
 *
 * Input: a 16-byte header, then the bytes of the first file and of the
 * second (tests/unit/test_wal.c --write-corpus writes the corpus):
 *   [0]      flags: 1 two files; 2 the second starts two segments after
 *            the first (a gap); 4 replay from the u64 at [8] (else 0);
 *            8 files padded with zeros to WAL_SEGMENT_MIN (else as long as
 *            their bytes); 16 append, reopen and compare
 *   [1..2]   the first file's start / WAL_SEGMENT_MIN (u16, little-endian)
 *   [4..7]   bytes of the first file (u32); the rest is the second's
 *   [8..15]  from (u64)
 * Files are at most WAL_SEGMENT_MIN bytes. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "store/wal.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "fuzz_wal: %s (%s:%d)\n", #c, __FILE__, __LINE__); abort(); } } while (0)

static char dir[64];

static void clean(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
}

static void at_exit(void)
{
    clean();
    rmdir(dir);
}

static void setup(void)
{
    if (dir[0]) return;
    /* below LOG_ERROR: nothing printed (torn tails and corruption are
     * what the inputs are made of) */
    log_set_level((enum log_level)-1);
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/parley_fuzz_wal_XXXXXX", base);
    REQUIRE(mkdtemp(dir) != NULL);
    atexit(at_exit);
}

static uint64_t get(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_file(uint64_t start, const uint8_t *p, size_t n, int pad)
{
    char path[200];
    snprintf(path, sizeof path, "%s/%016llx.wal", dir, (unsigned long long)start);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, p, n) == (ssize_t)n);
    if (pad) REQUIRE(ftruncate(fd, WAL_SEGMENT_MIN) == 0);
    close(fd);
}

typedef struct seen {
    uint64_t from, n, next, last;
    uint32_t hash;
} seen;

static int on_rec(void *arg, uint64_t lsn, const void *p, size_t len)
{
    seen *s = arg;
    REQUIRE(lsn % 8 == 0 && lsn >= s->from && lsn >= s->next);
    REQUIRE(len >= 1 && len <= WAL_RECORD_MAX);
    s->hash = wal_crc32c(s->hash, &lsn, sizeof lsn);
    s->hash = wal_crc32c(s->hash, p, len);
    s->n++;
    s->last = lsn;
    s->next = lsn + 8 + ((len + 7) & ~(size_t)7);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    clean();
    uint8_t h[16] = {0};
    memcpy(h, data, size < 16 ? size : 16);
    const uint8_t *body = size > 16 ? data + 16 : data;
    size_t rest = size > 16 ? size - 16 : 0;
    int flags = h[0];
    uint64_t start = get(h + 1, 2) * WAL_SEGMENT_MIN;
    size_t n1 = (size_t)get(h + 4, 4);
    if (n1 > rest) n1 = rest;
    if (n1 > WAL_SEGMENT_MIN) n1 = WAL_SEGMENT_MIN;
    size_t n2 = rest - n1;
    if (n2 > WAL_SEGMENT_MIN) n2 = WAL_SEGMENT_MIN;
    uint64_t from = flags & 4 ? get(h + 8, 8) : 0;
    put_file(start, body, n1, flags & 8);
    if (flags & 1)
        put_file(start + (flags & 2 ? 2u : 1u) * WAL_SEGMENT_MIN, body + n1, n2, flags & 8);

    wal_options o = {.dir = dir, .segment_bytes = WAL_SEGMENT_MIN};
    wal *w = NULL;
    seen s = {.from = from};
    int rc = wal_open(&w, &o, from, on_rec, &s);
    REQUIRE(rc == ERR_OK || rc == ERR_CORRUPT || rc == ERR_INVALID);
    if (rc != ERR_OK) {
        REQUIRE(w == NULL);
        return 0;
    }
    uint64_t end = wal_end(w);
    REQUIRE(end >= from && end >= s.next && end % 8 == 0);
    if (flags & 16) {
        uint8_t pay[64] = "fuzz";
        size_t len = rest < sizeof pay ? (rest ? rest : 4) : sizeof pay;
        if (rest) memcpy(pay, body, len);
        struct iovec v = {pay, len};
        uint64_t e2 = 0;
        REQUIRE(wal_append(w, &v, 1, &e2) == ERR_OK);
        uint64_t lsn = e2 - 8 - ((len + 7) & ~(size_t)7);
        REQUIRE(lsn >= end && e2 == wal_end(w));
        wal_close(w);
        seen want = s;
        on_rec(&want, lsn, pay, len);
        seen again = {.from = from};
        w = NULL;
        REQUIRE(wal_open(&w, &o, from, on_rec, &again) == ERR_OK);
        REQUIRE(again.n == want.n && again.hash == want.hash && again.last == lsn);
        REQUIRE(wal_end(w) == e2);
    }
    wal_close(w);
    return 0;
}
