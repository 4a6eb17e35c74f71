/* Unit tests of the message log (src/store/wal.c): round trips across
 * segments, torn tails cut at every byte, corruption in the middle refused,
 * stale bytes of recycled segments, recycling, preparing the next segment
 * from another thread while appends go on, and faults injected through
 * the wal_io seam. Each test works in a fresh directory under /tmp.
 *
 *   test_wal                      runs the tests
 *   test_wal --write-corpus DIR   writes the fuzz corpus of fuzz_wal there
 */
#include "test.h"
#include "store/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIN WAL_SEGMENT_MIN
#define SEG0 "0000000000000000.wal"

/* ---- directories and files ------------------------------------------------ */

static char tmp_dir[64];

static const char *tmp_new(void)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/parley_wal_XXXXXX");
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); exit(2); }
    return tmp_dir;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

static void tmp_rm(void)
{
    nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void seg_path(char *out, size_t cap, uint64_t start)
{
    snprintf(out, cap, "%s/%016llx.wal", tmp_dir, (unsigned long long)start);
}

/* The segment files of tmp_dir: count, and their total size. */
static int count_files(uint64_t *bytes)
{
    DIR *d = opendir(tmp_dir);
    if (!d) return -1;
    int n = 0;
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char p[400];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
        if (stat(p, &st) == 0) sum += (uint64_t)st.st_size;
        n++;
    }
    closedir(d);
    if (bytes) *bytes = sum;
    return n;
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(len > 0 ? (size_t)len : 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; }
    fclose(f);
    *n = (size_t)len;
    return b;
}

static void write_at(const char *path, const void *p, size_t n, uint64_t off)
{
    int fd = open(path, O_WRONLY);
    if (fd < 0 || pwrite(fd, p, n, (off_t)off) != (ssize_t)n) { perror(path); exit(2); }
    close(fd);
}

static void flip_byte(const char *path, uint64_t off)
{
    int fd = open(path, O_RDWR);
    uint8_t b;
    if (fd < 0 || pread(fd, &b, 1, (off_t)off) != 1) { perror(path); exit(2); }
    b ^= 0x40;
    if (pwrite(fd, &b, 1, (off_t)off) != 1) exit(2);
    close(fd);
}

/* Removes the segment files that start after `start`. */
static void remove_after(uint64_t start)
{
    DIR *d = opendir(tmp_dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        unsigned long long s;
        char tail[8];
        if (sscanf(e->d_name, "%16llx%7s", &s, tail) != 2 || strcmp(tail, ".wal") != 0) continue;
        if (s <= start) continue;
        char p[400];
        snprintf(p, sizeof p, "%s/%s", tmp_dir, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
}

/* ---- capturing the log ------------------------------------------------------ */

static int cap_fd = -1, cap_saved = -1;
static char cap_path[64];

static void capture_start(void)
{
    snprintf(cap_path, sizeof cap_path, "/tmp/parley_wal_log_XXXXXX");
    cap_fd = mkstemp(cap_path);
    if (cap_fd < 0) exit(2);
    fflush(stderr);
    cap_saved = dup(2);
    dup2(cap_fd, 2);
}

/* What was logged since capture_start (malloc'd). */
static char *capture_end(void)
{
    fflush(stderr);
    dup2(cap_saved, 2);
    close(cap_saved);
    off_t n = lseek(cap_fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    if (!s || pread(cap_fd, s, (size_t)n, 0) != n) exit(2);
    s[n] = 0;
    close(cap_fd);
    unlink(cap_path);
    return s;
}

/* ---- payloads and the model of what the log holds --------------------------- */

static uint8_t pay_byte(uint64_t seed, size_t i)
{
    uint64_t x = (seed + 1) * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    return (uint8_t)(x >> 56);
}

static uint8_t *payload(uint64_t seed, size_t len)
{
    uint8_t *p = malloc(len);
    for (size_t i = 0; i < len; i++) p[i] = pay_byte(seed, i);
    return p;
}

typedef struct mrec {
    uint64_t lsn;
    uint32_t len;
    uint64_t seed;
} mrec;

typedef struct model {
    mrec *r;
    size_t n, cap;
} model;

static void model_add(model *m, uint64_t lsn, uint32_t len, uint64_t seed)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 256;
        m->r = realloc(m->r, m->cap * sizeof *m->r);
    }
    m->r[m->n++] = (mrec){lsn, len, seed};
}

static uint64_t framed(const size_t *lens, size_t n)
{
    uint64_t f = 0;
    for (size_t i = 0; i < n; i++) f += 8 + ((lens[i] + 7) & ~(size_t)7);
    return f;
}

static uint64_t seed_next = 1;
static int append_errno; /* errno right after the last wal_append */

/* Appends records of these lengths (fresh payloads); on ERR_OK adds them to
 * m (if not NULL) and checks *end against wal_end. */
static int append(wal *w, model *m, const size_t *lens, size_t n, uint64_t *end_out)
{
    struct iovec v[64];
    uint64_t seeds[64];
    if (n > 64) exit(2);
    for (size_t i = 0; i < n; i++) {
        seeds[i] = seed_next++;
        v[i].iov_base = payload(seeds[i], lens[i]);
        v[i].iov_len = lens[i];
    }
    uint64_t end = 0;
    errno = 0;
    int rc = wal_append(w, v, n, &end);
    append_errno = errno;
    if (rc == ERR_OK) {
        CHECK_EQ_INT(end, wal_end(w));
        CHECK(end % 8 == 0);
        uint64_t lsn = end - framed(lens, n);
        if (m && m->n) CHECK(lsn >= m->r[m->n - 1].lsn + 8 + ((m->r[m->n - 1].len + 7) & ~7u));
        for (size_t i = 0; i < n; i++) {
            if (m) model_add(m, lsn, (uint32_t)lens[i], seeds[i]);
            lsn += 8 + ((lens[i] + 7) & ~(size_t)7);
        }
        if (end_out) *end_out = end;
    }
    for (size_t i = 0; i < n; i++) free(v[i].iov_base);
    return rc;
}

static int append1(wal *w, model *m, size_t len)
{
    return append(w, m, &len, 1, NULL);
}

/* Replay checker: every record must be the model's next one. */
typedef struct got {
    const model *m;
    size_t i;           /* the next expected index */
    size_t n, bad;
    uint64_t last_lsn;
} got;

static int on_rec(void *arg, uint64_t lsn, const void *p, size_t len)
{
    got *g = arg;
    g->n++;
    g->last_lsn = lsn;
    if (!g->m || g->i >= g->m->n) { g->bad++; return 0; }
    const mrec *e = &g->m->r[g->i++];
    bool ok = e->lsn == lsn && e->len == len;
    for (size_t k = 0; ok && k < len; k++) ok = ((const uint8_t *)p)[k] == pay_byte(e->seed, k);
    if (!ok) {
        if (g->bad < 3)
            fprintf(stderr, "  replay: record %zu: lsn %llu len %zu, expected lsn %llu len %u\n",
                    g->i - 1, (unsigned long long)lsn, len, (unsigned long long)e->lsn, e->len);
        g->bad++;
    }
    return 0;
}

static wal_options opts(uint64_t seg, const wal_io *io)
{
    return (wal_options){.dir = tmp_dir, .segment_bytes = seg, .io = io};
}

/* Opens with replay from `from`, expecting exactly the model's records
 * [first record >= from, upto) (upto: SIZE_MAX for all). */
static wal *open_expect(uint64_t seg, const wal_io *io, uint64_t from, const model *m, size_t upto)
{
    got g = {.m = m};
    while (g.i < m->n && m->r[g.i].lsn < from) g.i++;
    size_t first = g.i;
    wal *w = NULL;
    wal_options o = opts(seg, io);
    int rc = wal_open(&w, &o, from, on_rec, &g);
    CHECK_EQ_INT(rc, ERR_OK);
    if (upto > m->n) upto = m->n;
    CHECK_EQ_INT(g.bad, 0);
    CHECK_EQ_INT(g.n, upto - first);
    return w;
}

static uint64_t wal_end_of(const model *m)
{
    const mrec *r = &m->r[m->n - 1];
    return r->lsn + 8 + ((r->len + 7) & ~7u);
}

static void model_free(model *m)
{
    free(m->r);
    memset(m, 0, sizeof *m);
}

/* ---- hand-made records (the format, independently of the writer) -------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static size_t enc_record(uint8_t *out, uint64_t lsn, const void *p, uint32_t len)
{
    uint8_t l[8];
    put64(l, lsn);
    put32(out, len);
    put32(out + 4, wal_crc32c(wal_crc32c(0, l, 8), p, len));
    memcpy(out + 8, p, len);
    size_t padded = (len + 7) & ~7u;
    memset(out + 8 + len, 0, padded - len);
    return 8 + padded;
}

static size_t enc_marker(uint8_t *out, uint64_t lsn, uint64_t next)
{
    uint8_t b[16];
    put64(b, lsn);
    put64(b + 8, next);
    put32(out, 0);
    put32(out + 4, wal_crc32c(0, b, 16));
    return 8;
}

/* ---- CRC-32C ---------------------------------------------------------------- */

static uint32_t crc_bitwise(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

TEST(crc32c_vectors)
{
    CHECK_EQ_INT(wal_crc32c(0, "123456789", 9), 0xE3069283u);
    CHECK_EQ_INT(wal_crc32c(0, "", 0), 0);
    uint8_t z[32] = {0};
    CHECK_EQ_INT(wal_crc32c(0, z, 32), 0x8A9136AAu); /* RFC 3720, 32 zero bytes */
    uint8_t buf[1024];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)test_rand();
    for (int t = 0; t < 300; t++) {
        size_t off = test_rand() % 16, n = test_rand() % (sizeof buf - 16), cut = n ? test_rand() % n : 0;
        uint32_t want = crc_bitwise(buf + off, n);
        CHECK_EQ_INT(wal_crc32c(0, buf + off, n), want);
        CHECK_EQ_INT(wal_crc32c(wal_crc32c(0, buf + off, cut), buf + off + cut, n - cut), want);
    }
}

/* ---- bad arguments ------------------------------------------------------------ */

static int stop_at_7(void *arg, uint64_t lsn, const void *p, size_t len)
{
    (void)arg; (void)lsn; (void)p; (void)len;
    return 7;
}

TEST(bad_arguments)
{
    tmp_new();
    wal *w = (wal *)1;
    wal_options o = opts(MIN, NULL);
    o.dir = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_INVALID);
    CHECK(w == NULL);
    o = opts(MIN - 1, NULL);
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_INVALID);
    o = opts(WAL_SEGMENT_MAX + 4096, NULL);
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_INVALID);
    CHECK_EQ_INT(wal_open(NULL, &o, 0, NULL, NULL), ERR_INVALID);

    /* An empty directory is an empty log, for from = 0 only. */
    o = opts(MIN, NULL);
    capture_start();
    int rc = wal_open(&w, &o, 8, NULL, NULL);
    char *log = capture_end();
    CHECK_EQ_INT(rc, ERR_INVALID);
    CHECK(strstr(log, "beyond the end") != NULL);
    free(log);
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    CHECK_EQ_INT(wal_end(w), 0);

    /* A second open of the same directory is refused while it is open. */
    wal *w2 = NULL;
    capture_start();
    CHECK_EQ_INT(wal_open(&w2, &o, 0, NULL, NULL), ERR_BUSY);
    free(capture_end());

    uint8_t small[8] = "abcdefg";
    struct iovec v[2] = {{small, 5}, {small, 0}};
    CHECK_EQ_INT(wal_append(w, v, 0, NULL), ERR_INVALID);
    CHECK_EQ_INT(wal_append(w, NULL, 1, NULL), ERR_INVALID);
    CHECK_EQ_INT(wal_append(w, v, 2, NULL), ERR_INVALID);       /* an empty record */
    v[1] = (struct iovec){NULL, 3};
    CHECK_EQ_INT(wal_append(w, v, 2, NULL), ERR_INVALID);       /* a NULL payload */
    v[1] = (struct iovec){small, WAL_RECORD_MAX + 1u};          /* never read */
    CHECK_EQ_INT(wal_append(w, v, 2, NULL), ERR_TOO_LARGE);
    uint8_t *big = calloc(1, 600u << 10);
    struct iovec b2[2] = {{big, 600u << 10}, {big, 600u << 10}};
    CHECK_EQ_INT(wal_append(w, b2, 2, NULL), ERR_TOO_LARGE);    /* over a segment */
    free(big);
    CHECK_EQ_INT(wal_end(w), 0);
    uint64_t end = 0;
    CHECK_EQ_INT(wal_append(w, v, 1, &end), ERR_OK);            /* still usable */
    CHECK_EQ_INT(end, 16);
    wal_close(w);
    wal_close(NULL);

    /* from: inside a record, beyond the end, at the end */
    capture_start();
    CHECK_EQ_INT(wal_open(&w, &o, 8, NULL, NULL), ERR_INVALID);
    CHECK_EQ_INT(wal_open(&w, &o, 24, NULL, NULL), ERR_INVALID);
    log = capture_end();
    CHECK(strstr(log, "not a record boundary") != NULL);
    CHECK(strstr(log, "beyond the end") != NULL);
    free(log);
    CHECK_EQ_INT(wal_open(&w, &o, 16, NULL, NULL), ERR_OK);
    wal_close(w);

    /* A non-zero return of the callback stops the replay and is returned. */
    w = (wal *)1;
    CHECK_EQ_INT(wal_open(&w, &o, 0, stop_at_7, NULL), 7);
    CHECK(w == NULL);
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);      /* no lock left behind */
    wal_close(w);
    tmp_rm();
}

/* ---- round trip ----------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static size_t rand_len(void)
{
    uint64_t r = test_rand() % 100;
    if (r < 70) return 1 + test_rand() % 300;           /* chat messages */
    if (r < 98) return 1 + test_rand() % 9000;          /* past the copy limit */
    return 1 + test_rand() % (100u << 10);               /* big ones */
}

TEST(round_trip_across_segments)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    enum { BATCHES = 400 };
    double ms[BATCHES];
    uint64_t batch_lsn[BATCHES], seg_jumps = 0, prev_end = 0;
    size_t small_n = 0;
    double small_sum = 0;
    for (int b = 0; b < BATCHES; b++) {
        size_t n = 1 + test_rand() % 16, lens[16];
        for (size_t i = 0; i < n; i++) lens[i] = rand_len();
        while (framed(lens, n) > MIN / 2)
            for (size_t i = 0; i < n; i++) lens[i] = lens[i] / 2 + 1;
        uint64_t end;
        double t0 = now_ms();
        int rc = append(w, &m, lens, n, &end);
        ms[b] = now_ms() - t0;
        CHECK_EQ_INT(rc, ERR_OK);
        if (rc) break;
        batch_lsn[b] = end - framed(lens, n);
        if (batch_lsn[b] != prev_end) {
            seg_jumps++;
            CHECK(batch_lsn[b] % MIN == 0); /* the jump goes to a segment start */
        }
        if (framed(lens, n) < 4096) { small_sum += ms[b]; small_n++; }
        prev_end = end;
    }
    CHECK(seg_jumps >= 4);
    uint64_t bytes;
    int files = count_files(&bytes);
    CHECK_EQ_INT(bytes, wal_disk_bytes(w));
    CHECK(files >= 5);
    wal_close(w);

    double sorted[BATCHES];
    memcpy(sorted, ms, sizeof ms);
    qsort(sorted, BATCHES, sizeof *sorted, cmp_double);
    double sum = 0;
    for (int i = 0; i < BATCHES; i++) sum += ms[i];
    printf("wal: %d batches (%zu records, %d segments) append+fdatasync on %s: mean %.3f ms, "
           "p50 %.3f, p99 %.3f, max %.3f; batches under 4 KiB (%zu): mean %.3f ms\n",
           BATCHES, m.n, files, tmp_dir, sum / BATCHES, sorted[BATCHES / 2],
           sorted[BATCHES * 99 / 100], sorted[BATCHES - 1], small_n,
           small_n ? small_sum / (double)small_n : 0);

    /* everything; appending goes on where it was */
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    CHECK_EQ_INT(wal_end(w), prev_end);
    size_t l3[3] = {10, 5000, 77};
    CHECK_EQ_INT(append(w, &m, l3, 3, NULL), ERR_OK);
    CHECK_EQ_INT(m.r[m.n - 3].lsn, prev_end);
    wal_close(w);
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    /* from the middle of a segment (which releases the segments before
     * it, as wal_release would), from a later batch that starts a
     * segment, and from the end */
    int mid = BATCHES / 3;
    while (mid < BATCHES && batch_lsn[mid] % MIN == 0) mid++;
    w = open_expect(MIN, NULL, batch_lsn[mid], &m, SIZE_MAX);
    wal_close(w);
    char p0[128];
    seg_path(p0, sizeof p0, 0);
    CHECK(access(p0, F_OK) != 0); /* recycled under a later name */
    int at_start = 0;
    for (int b = mid + 1; b < BATCHES && !at_start; b++)
        if (batch_lsn[b] % MIN == 0) at_start = b;
    CHECK(at_start > 0);
    w = open_expect(MIN, NULL, batch_lsn[at_start], &m, SIZE_MAX);
    wal_close(w);
    w = open_expect(MIN, NULL, wal_end_of(&m), &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* The bytes on disk are the format wal.h writes down: records, padding,
 * the zero end-of-log header, and the end-of-segment header. */
TEST(format_on_disk)
{
    tmp_new();
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    uint8_t *a = payload(100, 5), *b = payload(101, 5000), *c = payload(102, 16);
    struct iovec v[3] = {{a, 5}, {b, 5000}, {c, 16}};
    uint64_t end;
    CHECK_EQ_INT(wal_append(w, v, 3, &end), ERR_OK);
    uint8_t *want = calloc(1, 3 * MIN);
    size_t n = 0;
    n += enc_record(want + n, n, a, 5);
    n += enc_record(want + n, n, b, 5000);
    n += enc_record(want + n, n, c, 16);
    CHECK_EQ_INT(end, n);
    /* a batch that does not fit ends the segment and starts the next */
    size_t big = MIN - n;
    uint8_t *d = payload(103, big);
    struct iovec vb = {d, big};
    CHECK_EQ_INT(wal_append(w, &vb, 1, &end), ERR_OK);
    CHECK_EQ_INT(end, MIN + 8 + ((big + 7) & ~(size_t)7));
    wal_close(w);
    enc_marker(want + n, n, MIN);
    size_t got_n;
    char p[128];
    seg_path(p, sizeof p, 0);
    uint8_t *disk = read_file(p, &got_n);
    CHECK_EQ_INT(got_n, MIN);
    CHECK(disk && memcmp(disk, want, MIN) == 0); /* the rest is zeros */
    free(disk);
    size_t m1 = enc_record(want + MIN, MIN, d, (uint32_t)big);
    seg_path(p, sizeof p, MIN);
    disk = read_file(p, &got_n);
    CHECK_EQ_INT(got_n, MIN);
    CHECK(disk && memcmp(disk, want + MIN, m1 + 8) == 0);
    free(disk);
    free(a); free(b); free(c); free(d); free(want);
    tmp_rm();
}

/* ---- torn tails --------------------------------------------------------------- */

/* The last batch L (lens below) at byte `loff` of the segment file at
 * `lseg`, its records' LSNs in m from index `li`; the file's pristine
 * bytes in `saved`. For every offset inside L and three ways of tearing
 * it, open replays the earlier records and L's whole records before the
 * tear, an append works, and a reopen replays it. */
static void torn_cases(model *m, size_t li, uint64_t lseg, uint64_t loff, const uint8_t *saved,
                       size_t saved_n, unsigned trunc_stride)
{
    char p[128];
    seg_path(p, sizeof p, lseg);
    uint64_t lend = m->r[m->n - 1].lsn - lseg + 8 + ((m->r[m->n - 1].len + 7) & ~7u);
    size_t nrec = m->n - li;
    int warned = 0, cases = 0;
    for (int mode = 0; mode < 3; mode++) {
        for (uint64_t o = loff; o < lend; o += mode == 0 ? trunc_stride : 1) {
            /* tear */
            if (mode == 0) {
                if (truncate(p, (off_t)o) != 0) exit(2);
            } else {
                uint8_t junk[4096];
                size_t n = (size_t)(lend + 8 - o);
                for (size_t i = 0; i < n; i++) junk[i] = mode == 1 ? 0 : (uint8_t)(test_rand() | 1);
                write_at(p, junk, n, o);
            }
            /* what must replay */
            model e = {0};
            for (size_t i = 0; i < li; i++) model_add(&e, m->r[i].lsn, m->r[i].len, m->r[i].seed);
            for (size_t i = li; i < m->n; i++) {
                /* a cut file ends the records at its last multiple of 8 */
                uint64_t ro = m->r[i].lsn - lseg;
                bool whole = mode == 0 ? ro + 8 + ((m->r[i].len + 7) & ~7u) <= (o & ~(uint64_t)7)
                                       : ro + 8 + m->r[i].len <= o;
                if (!whole) break;
                model_add(&e, m->r[i].lsn, m->r[i].len, m->r[i].seed);
            }
            capture_start();
            wal *w = open_expect(MIN, NULL, 0, &e, SIZE_MAX);
            char *log = capture_end();
            if (mode == 2) {
                /* garbage where the records stop: a torn append, logged */
                bool torn = strstr(log, "level=warn") && strstr(log, "torn tail");
                CHECK(torn);
                warned += torn;
                char f[160];
                snprintf(f, sizeof f, "file=%s", p);
                CHECK(strstr(log, f) != NULL);
            }
            if (mode == 1 && (o == loff || e.n == li + nrec)) CHECK(strstr(log, "level=warn") == NULL);
            free(log);
            if (w) {
                CHECK_EQ_INT(append1(w, &e, 10), ERR_OK);
                wal_close(w);
                w = open_expect(MIN, NULL, 0, &e, SIZE_MAX);
                wal_close(w);
            }
            model_free(&e);
            cases++;
            /* restore: the pristine file, nothing else after it */
            if (truncate(p, (off_t)saved_n) != 0) exit(2); /* after a cut */
            size_t keep = (size_t)lend + 8192 < saved_n ? (size_t)lend + 8192 : saved_n;
            write_at(p, saved, keep, 0); /* the rest is zeros */
            remove_after(lseg);
        }
    }
    CHECK(warned > 0);
    CHECK(cases >= 2 * (int)(lend - loff));
}

TEST(torn_tail_every_offset)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    size_t b1[2] = {3, 40}, b2[1] = {700}, b3[3] = {1, 2, 3}, last[3] = {5, 150, 20};
    CHECK_EQ_INT(append(w, &m, b1, 2, NULL), ERR_OK);
    CHECK_EQ_INT(append(w, &m, b2, 1, NULL), ERR_OK);
    CHECK_EQ_INT(append(w, &m, b3, 3, NULL), ERR_OK);
    size_t li = m.n;
    CHECK_EQ_INT(append(w, &m, last, 3, NULL), ERR_OK);
    wal_close(w);
    char p[128];
    seg_path(p, sizeof p, 0);
    size_t n;
    uint8_t *saved = read_file(p, &n);
    torn_cases(&m, li, 0, m.r[li].lsn, saved, n, 1);
    free(saved);
    model_free(&m);
    tmp_rm();
}

/* The torn batch is the first of a segment (after an end-of-segment). */
TEST(torn_tail_first_batch_of_a_segment)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    size_t b1[2] = {3, 40};
    uint64_t end;
    CHECK_EQ_INT(append(w, &m, b1, 2, &end), ERR_OK);
    size_t b2 = MIN - end - 16 - 8; /* leaves room for the two end headers */
    CHECK_EQ_INT(append1(w, &m, b2), ERR_OK);
    CHECK_EQ_INT(wal_end(w), MIN - 16);
    size_t li = m.n, last[3] = {5, 150, 20};
    CHECK_EQ_INT(append(w, &m, last, 3, NULL), ERR_OK);
    CHECK_EQ_INT(m.r[li].lsn, MIN);
    wal_close(w);
    char p[128];
    seg_path(p, sizeof p, MIN);
    size_t n;
    uint8_t *saved = read_file(p, &n);
    /* a cut at offset o leaves a file too short for any batch: each
     * append then makes a new segment, so cut every 7th byte (every
     * residue modulo 8 comes round) */
    torn_cases(&m, li, MIN, 0, saved, n, 7);
    free(saved);
    model_free(&m);
    tmp_rm();
}

/* ---- corruption in the middle -------------------------------------------------- */

/* Opens expecting ERR_CORRUPT, a log line naming file and offset, and
 * every file unchanged. */
static void expect_corrupt(uint64_t seg_start, uint64_t off)
{
    char p[128], f[200], oo[64];
    uint8_t *before[8];
    size_t nb[8];
    int files = count_files(NULL);
    for (int i = 0; i < 8; i++) {
        seg_path(p, sizeof p, (uint64_t)i * MIN);
        before[i] = read_file(p, &nb[i]);
    }
    wal *w = (wal *)1;
    wal_options o = opts(MIN, NULL);
    got g = {0};
    capture_start();
    int rc = wal_open(&w, &o, 0, on_rec, &g);
    char *log = capture_end();
    CHECK_EQ_INT(rc, ERR_CORRUPT);
    CHECK(w == NULL);
    seg_path(p, sizeof p, seg_start);
    snprintf(f, sizeof f, "file=%s ", p);
    snprintf(oo, sizeof oo, " offset=%llu ", (unsigned long long)off);
    CHECK(strstr(log, "level=error") != NULL);
    CHECK(strstr(log, f) != NULL);
    CHECK(strstr(log, oo) != NULL);
    if (!strstr(log, f) || !strstr(log, oo)) fprintf(stderr, "  log: %s", log);
    free(log);
    CHECK_EQ_INT(count_files(NULL), files);
    for (int i = 0; i < 8; i++) {
        seg_path(p, sizeof p, (uint64_t)i * MIN);
        size_t n;
        uint8_t *now = read_file(p, &n);
        CHECK((now == NULL) == (before[i] == NULL));
        if (now && before[i]) CHECK(n == nb[i] && memcmp(now, before[i], n) == 0);
        free(now);
        free(before[i]);
    }
}

/* Three segments of records of 1000 bytes (and a short tail). */
static void three_segments(model *m)
{
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    while (wal_end(w) < 2 * MIN + 5000) {
        size_t lens[4] = {1000, 1000, 1000, 1000};
        CHECK_EQ_INT(append(w, m, lens, 4, NULL), ERR_OK);
    }
    wal_close(w);
}

TEST(corrupt_middle_same_segment)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    for (int b = 0; b < 6; b++) {
        size_t lens[3] = {20, 300, 7};
        CHECK_EQ_INT(append(w, &m, lens, 3, NULL), ERR_OK);
    }
    wal_close(w);
    char p[128];
    seg_path(p, sizeof p, 0);
    uint64_t r = m.r[7].lsn; /* the middle of batch 3 */
    flip_byte(p, r + 8 + 100); /* payload */
    expect_corrupt(0, r);
    flip_byte(p, r + 8 + 100);
    flip_byte(p, r + 5); /* checksum */
    expect_corrupt(0, r);
    flip_byte(p, r + 5);
    flip_byte(p, m.r[0].lsn + 9); /* the very first record */
    expect_corrupt(0, 0);
    flip_byte(p, m.r[0].lsn + 9);
    /* the record before the last one: the last is at its declared end */
    flip_byte(p, m.r[m.n - 2].lsn + 12);
    expect_corrupt(0, m.r[m.n - 2].lsn);
    flip_byte(p, m.r[m.n - 2].lsn + 12);
    /* all put back: opens */
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

TEST(corrupt_middle_across_segments)
{
    tmp_new();
    model m = {0};
    three_segments(&m);
    size_t last0 = 0; /* the last record of segment 0 */
    while (m.r[last0 + 1].lsn < MIN) last0++;
    uint64_t r = m.r[last0].lsn;
    char p[128];
    seg_path(p, sizeof p, 0);
    /* its payload: the end-of-segment header at its declared end tells */
    flip_byte(p, r + 8 + 3);
    expect_corrupt(0, r);
    flip_byte(p, r + 8 + 3);
    /* its len: the declared end is nowhere, later segments tell */
    flip_byte(p, r + 1);
    expect_corrupt(0, r);
    flip_byte(p, r + 1);
    /* a zeroed header with records after it in later segments */
    uint8_t z[8] = {0}, keep[8];
    int fd = open(p, O_RDONLY);
    if (pread(fd, keep, 8, (off_t)m.r[3].lsn) != 8) exit(2);
    close(fd);
    write_at(p, z, 8, m.r[3].lsn);
    expect_corrupt(0, m.r[3].lsn);
    write_at(p, keep, 8, m.r[3].lsn);
    /* a record of segment 1 */
    size_t k = last0 + 10;
    seg_path(p, sizeof p, MIN);
    flip_byte(p, m.r[k].lsn - MIN + 8 + 500);
    expect_corrupt(MIN, m.r[k].lsn - MIN);
    flip_byte(p, m.r[k].lsn - MIN + 8 + 500);
    /* a missing segment: segment 0's end header names segment 1 */
    char q[128];
    seg_path(q, sizeof q, 3 * MIN);
    size_t n;
    uint8_t *s1 = read_file(p, &n);
    if (rename(p, q) != 0) exit(2);
    uint64_t marker = m.r[last0].lsn + 8 + 1000;
    expect_corrupt(0, marker);
    if (rename(q, p) != 0) exit(2);
    free(s1);
    wal *w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* ---- recycling ---------------------------------------------------------------------- */

TEST(recycled_segments_stale_bytes)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    /* records of 1016 bytes (1024 framed): every 1024 bytes a header */
    size_t lens[4] = {1016, 1016, 1016, 1016};
    while (wal_end(w) < 2 * MIN + 4096) CHECK_EQ_INT(append(w, &m, lens, 4, NULL), ERR_OK);
    char p0[128];
    seg_path(p0, sizeof p0, 0);
    size_t n0;
    uint8_t *old0 = read_file(p0, &n0);
    /* segments 0 and 1 are in LMDB: recycled as 3 and 4 */
    wal_release(w, 2 * MIN);
    CHECK_EQ_INT(count_files(NULL), 3);
    char p3[128];
    seg_path(p3, sizeof p3, 3 * MIN);
    CHECK(access(p0, F_OK) != 0 && access(p3, F_OK) == 0);
    uint64_t released = 2 * MIN;
    /* fill segment 2, then a few records into the recycled segment 3 */
    while (wal_end(w) < 3 * MIN + 8192) CHECK_EQ_INT(append(w, &m, lens, 4, NULL), ERR_OK);
    uint64_t end = wal_end(w);
    wal_close(w);
    /* a clean end in a recycled segment: the end-of-log zeros, no warning */
    capture_start();
    w = open_expect(MIN, NULL, released, &m, SIZE_MAX);
    char *clean = capture_end();
    CHECK(strstr(clean, "level=warn") == NULL);
    free(clean);
    wal_close(w);
    /* segment 3 still holds segment 0's records past the end; put back
     * the stale header the end-of-log zeros covered, as a crash would
     * have left it */
    uint64_t off = end - 3 * MIN;
    CHECK(off % 1024 == 0);
    write_at(p3, old0 + off, 8, off);
    capture_start();
    w = open_expect(MIN, NULL, released, &m, SIZE_MAX);
    char *log = capture_end();
    CHECK(strstr(log, "torn tail") != NULL); /* stale bytes, not a clean end */
    free(log);
    CHECK_EQ_INT(wal_end(w), end);
    /* a valid record copied to another place is not one either */
    wal_close(w);
    size_t n3;
    uint8_t *s3 = read_file(p3, &n3);
    write_at(p3, s3 + off - 1024, 1024, off);
    free(s3);
    capture_start();
    w = open_expect(MIN, NULL, released, &m, SIZE_MAX);
    free(capture_end());
    CHECK_EQ_INT(wal_end(w), end);
    CHECK_EQ_INT(append(w, &m, lens, 2, NULL), ERR_OK);
    wal_close(w);
    w = open_expect(MIN, NULL, released, &m, SIZE_MAX);
    wal_close(w);
    free(old0);
    model_free(&m);
    tmp_rm();
}

TEST(release_keeps_the_files_bounded)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    int most = 0;
    uint64_t released = 0;
    size_t lens[2] = {30000, 20000};
    while (wal_end(w) < 30 * MIN) {
        CHECK_EQ_INT(append(w, &m, lens, 2, NULL), ERR_OK);
        released = wal_end(w);
        wal_release(w, released);
        uint64_t bytes;
        int n = count_files(&bytes);
        if (n > most) most = n;
        CHECK(n <= 2 + WAL_SPARES);
        CHECK_EQ_INT(bytes, wal_disk_bytes(w));
    }
    CHECK(most >= 2);
    /* five segments released at once: two kept as spares, the rest removed */
    released = wal_end(w);
    while (wal_end(w) < released + 5 * MIN) CHECK_EQ_INT(append(w, &m, lens, 2, NULL), ERR_OK);
    int before = count_files(NULL);
    CHECK(before >= 6);
    released = wal_end(w);
    wal_release(w, released);
    uint64_t bytes;
    CHECK_EQ_INT(count_files(&bytes), 1 + WAL_SPARES);
    CHECK_EQ_INT(bytes, wal_disk_bytes(w));
    CHECK_EQ_INT(bytes, (1 + WAL_SPARES) * (uint64_t)MIN);
    wal_close(w);
    /* reopen from the released position: nothing to replay, and the next
     * record after a reopen comes back */
    w = open_expect(MIN, NULL, released, &m, SIZE_MAX);
    CHECK_EQ_INT(append(w, &m, lens, 1, NULL), ERR_OK);
    wal_close(w);
    w = open_expect(MIN, NULL, released, &m, SIZE_MAX);
    CHECK(count_files(NULL) <= 2 + WAL_SPARES);
    /* from before the first segment: refused */
    wal_close(w);
    w = (wal *)1;
    capture_start();
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_INVALID);
    char *log = capture_end();
    CHECK(strstr(log, "before the first segment") != NULL);
    free(log);
    model_free(&m);
    tmp_rm();
}

/* Recycling while the log grows keeps reusing the same files: once spares
 * exist, a rollover creates nothing (the inode numbers repeat). */
TEST(recycling_reuses_files)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    size_t lens[1] = {100000};
    ino_t seen[64];
    int nseen = 0;
    while (wal_end(w) < 20 * MIN) {
        CHECK_EQ_INT(append(w, &m, lens, 1, NULL), ERR_OK);
        wal_release(w, wal_end(w));
        DIR *d = opendir(tmp_dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            bool known = false;
            for (int i = 0; i < nseen; i++) known |= seen[i] == e->d_ino;
            if (!known && nseen < 64) seen[nseen++] = e->d_ino;
        }
        if (d) closedir(d);
    }
    CHECK(nseen <= 2 + WAL_SPARES + 1);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* The applier releases from its own thread while the logger appends. */
typedef struct applier {
    wal *w;
    volatile int stop;
    uint64_t releases;
} applier;

static void *applier_main(void *arg)
{
    applier *a = arg;
    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        wal_release(a->w, wal_end(a->w));
        (void)wal_disk_bytes(a->w);
        a->releases++;
        usleep(200);
    }
    return NULL;
}

TEST(release_from_another_thread)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    applier a = {.w = w};
    pthread_t t;
    CHECK_EQ_INT(pthread_create(&t, NULL, applier_main, &a), 0);
    size_t lens[3] = {20000, 300, 9000};
    while (wal_end(w) < 12 * MIN) CHECK_EQ_INT(append(w, &m, lens, 3, NULL), ERR_OK);
    __atomic_store_n(&a.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK(a.releases > 0);
    uint64_t end = wal_end(w), bytes;
    wal_release(w, end);
    CHECK(count_files(&bytes) <= 2 + WAL_SPARES);
    CHECK_EQ_INT(bytes, wal_disk_bytes(w));
    wal_close(w);
    /* the last segment's records are all still there */
    uint64_t from = end - end % MIN;
    size_t i = 0;
    while (m.r[i].lsn < from) i++;
    w = open_expect(MIN, NULL, m.r[i].lsn, &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* ---- preparing the next segment ---------------------------------------------- */

static ino_t ino_of(uint64_t start)
{
    char p[128];
    struct stat st;
    seg_path(p, sizeof p, start);
    return stat(p, &st) == 0 ? st.st_ino : 0;
}

/* Where the segment after the one holding `end` starts (MIN segments from
 * 0): the append that does not fit before it moves there. */
static uint64_t next_start(uint64_t end)
{
    return end % MIN == 0 ? end : end - end % MIN + MIN;
}

/* wal_prepare on the appending thread: the first segment of a fresh log at
 * once, then the next one only once the current one is half full; the
 * append that moves on uses the prepared file (same inode), and a second
 * wal_prepare before that changes nothing. */
TEST(prepare_readies_the_next_segment)
{
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    CHECK_EQ_INT(count_files(NULL), 0);
    CHECK_EQ_INT(wal_prepare(w), ERR_OK);
    CHECK_EQ_INT(count_files(NULL), 1);
    ino_t first = ino_of(0);
    CHECK(first != 0);
    CHECK_EQ_INT(append1(w, &m, 1000), ERR_OK);
    CHECK(ino_of(0) == first);
    CHECK_EQ_INT(count_files(NULL), 1);
    while (wal_end(w) + 1008 < MIN / 2) CHECK_EQ_INT(append1(w, &m, 1000), ERR_OK);
    CHECK_EQ_INT(wal_prepare(w), ERR_OK); /* not half full: nothing */
    CHECK_EQ_INT(count_files(NULL), 1);
    CHECK_EQ_INT(append1(w, &m, 1000), ERR_OK);
    CHECK_EQ_INT(wal_prepare(w), ERR_OK);
    CHECK_EQ_INT(count_files(NULL), 2);
    ino_t second = ino_of(MIN);
    CHECK(second != 0);
    CHECK_EQ_INT(wal_prepare(w), ERR_OK); /* ready already: nothing */
    CHECK(ino_of(MIN) == second);
    CHECK_EQ_INT(count_files(NULL), 2);
    while (wal_end(w) < MIN + 100) CHECK_EQ_INT(append1(w, &m, 1000), ERR_OK);
    CHECK(ino_of(MIN) == second);
    CHECK_EQ_INT(count_files(NULL), 2);
    wal_close(w);
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* The writer's applier calls wal_prepare (and wal_release) from its own
 * thread while the logger appends. Here a thread calls them in a loop
 * while this one appends across 40 segment boundaries: first with no
 * release (every next segment is a new file, zero-filled by whichever
 * thread gets there first, while appends write), then releasing (spares
 * recycled and reused). Every append works, a crossing append that found
 * its next segment ready used that very file, and the log replays every
 * record. The first part slows the appender's writes at the seam (a wider
 * window between filling its iovecs and the system call). With the
 * preparation writing its zeros through the appender's iovec scratch
 * (before it had its own), ThreadSanitizer reports the race at once, and
 * a plain build writes zeros where a batch goes (the replay misses its
 * records). */
typedef struct preparer {
    wal *w;
    int stop;               /* atomic */
    uint64_t release_to;    /* atomic: 0, or release up to here */
    uint64_t calls, errors;
} preparer;

static void *preparer_main(void *arg)
{
    preparer *p = arg;
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        if (wal_prepare(p->w) != ERR_OK) p->errors++;
        uint64_t to = __atomic_load_n(&p->release_to, __ATOMIC_ACQUIRE);
        if (to) wal_release(p->w, to);
        (void)wal_disk_bytes(p->w);
        p->calls++;
        sched_yield();
    }
    return NULL;
}

/* Appends batches until `segments` more boundaries are crossed; counts the
 * crossings that found the next segment ready (and checks they used it). */
static void append_across(wal *w, model *m, preparer *p, int segments, int *ready)
{
    static const size_t lens[4] = {3000, 200, 9000, 40}; /* 9000: its own iovec */
    uint64_t f = framed(lens, 4);
    for (int crossed = 0; crossed < segments;) {
        uint64_t end = wal_end(w), next = next_start(end);
        bool crossing = end == 0 || end + f > next;
        ino_t before = crossing ? ino_of(next) : 0;
        CHECK_EQ_INT(append(w, m, lens, 4, NULL), ERR_OK);
        if (!crossing) continue;
        crossed++;
        CHECK(wal_end(w) > next && wal_end(w) <= next + f);
        if (before) {
            (*ready)++;
            CHECK(ino_of(next) == before); /* used, not made again */
        }
        if (p && m->n > 64) {
            /* release up to a record about three segments back */
            size_t i = m->n - 1;
            while (i > 0 && m->r[i].lsn + 3 * MIN > wal_end(w)) i--;
            if (m->r[i].lsn) __atomic_store_n(&p->release_to, m->r[i].lsn, __ATOMIC_RELEASE);
        }
    }
}

/* Widens the window in which the appender's iovecs are set up but not yet
 * read by the system call: its writes wait 200 us at the seam (the
 * preparer's go straight through). */
static pthread_t slow_tid;

static ssize_t slow_pwritev(void *arg, int fd, const struct iovec *iov, int n, off_t off)
{
    (void)arg;
    if (pthread_equal(pthread_self(), slow_tid)) usleep(200);
    return pwritev(fd, iov, n, off);
}

TEST(prepare_from_another_thread)
{
    tmp_new();
    model m = {0};
    slow_tid = pthread_self();
    wal_io slow = {slow_pwritev, NULL, NULL};
    wal_options o = opts(MIN, &slow);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    preparer p = {.w = w};
    pthread_t t;
    int ready = 0;
    CHECK_EQ_INT(pthread_create(&t, NULL, preparer_main, &p), 0);
    append_across(w, &m, NULL, 20, &ready);
    __atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK(p.calls > 0);
    CHECK_EQ_INT(p.errors, 0);
    CHECK(ready > 0); /* the preparer won some (it has half a segment's head start) */
    int nfiles = count_files(NULL);
    CHECK(nfiles >= 20 && nfiles <= 21); /* and perhaps the next, prepared */
    wal_close(w);
    /* every record of the 20 new segments */
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    if (!w) { model_free(&m); tmp_rm(); return; }

    int ready1 = ready;
    p = (preparer){.w = w};
    CHECK_EQ_INT(pthread_create(&t, NULL, preparer_main, &p), 0);
    append_across(w, &m, &p, 20, &ready);
    __atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK_EQ_INT(p.errors, 0);
    CHECK(ready > ready1);
    uint64_t bytes, to = p.release_to;
    CHECK(to > 0);
    wal_release(w, to); /* the preparer may have stopped before it */
    CHECK(count_files(&bytes) <= 5 + WAL_SPARES);
    CHECK_EQ_INT(bytes, wal_disk_bytes(w));
    wal_close(w);
    /* every record from the last released position on */
    w = open_expect(MIN, NULL, to, &m, SIZE_MAX);
    wal_close(w);
    printf("wal: prepare beside appends: %d of 40 crossings found the next segment ready\n", ready);
    model_free(&m);
    tmp_rm();
}

/* ---- faults through the seam ---------------------------------------------------------- */

typedef struct fault {
    int writes, syncs;                  /* calls seen */
    int fail_write_at, fail_write_n;    /* calls [at, at+n) fail */
    int write_errno;
    int short_write_at;                 /* this call writes half */
    int fail_sync_at, fail_sync_n;
    int sync_errno;
} fault;

static ssize_t f_pwritev(void *arg, int fd, const struct iovec *iov, int n, off_t off)
{
    fault *f = arg;
    int c = f->writes++;
    if (c >= f->fail_write_at && c < f->fail_write_at + f->fail_write_n) {
        errno = f->write_errno;
        return -1;
    }
    if (c == f->short_write_at) {
        size_t total = 0;
        for (int i = 0; i < n; i++) total += iov[i].iov_len;
        size_t want = total / 2 ? total / 2 : 1, have = 0;
        struct iovec v[1024];
        int k = 0;
        for (int i = 0; i < n && have < want; i++) {
            v[k] = iov[i];
            if (have + v[k].iov_len > want) v[k].iov_len = want - have;
            have += v[k++].iov_len;
        }
        return pwritev(fd, v, k, off);
    }
    return pwritev(fd, iov, n, off);
}

static int f_fdatasync(void *arg, int fd)
{
    fault *f = arg;
    int c = f->syncs++;
    if (c >= f->fail_sync_at && c < f->fail_sync_at + f->fail_sync_n) {
        errno = f->sync_errno;
        return -1;
    }
    return fdatasync(fd);
}

static void arm_write(fault *f, int after, int n, int e)
{
    f->fail_write_at = f->writes + after;
    f->fail_write_n = n;
    f->write_errno = e;
}

static void arm_sync(fault *f, int after, int n, int e)
{
    f->fail_sync_at = f->syncs + after;
    f->fail_sync_n = n;
    f->sync_errno = e;
}

static void disarm(fault *f)
{
    f->fail_write_n = f->fail_sync_n = 0;
    f->short_write_at = -1;
}

/* Appends a failing batch of 5 records, then a good one whose first
 * record has the same size (so it would line up with the failed batch's
 * second record if those bytes were left behind). */
static void fail_then_good(wal *w, model *m, int want_rc, int want_errno)
{
    uint64_t end = wal_end(w);
    size_t bad[5] = {120, 120, 120, 120, 120};
    int rc = append(w, NULL, bad, 5, NULL);
    CHECK_EQ_INT(rc, want_rc);
    if (want_errno) CHECK_EQ_INT(append_errno, want_errno);
    CHECK_EQ_INT(wal_end(w), end);
    CHECK_EQ_INT(append1(w, m, 120), ERR_OK);
    CHECK_EQ_INT(m->r[m->n - 1].lsn, end);
}

TEST(faults_leave_only_acknowledged_batches)
{
    tmp_new();
    model m = {0};
    fault f = {.short_write_at = -1};
    wal_io io = {f_pwritev, f_fdatasync, &f};
    wal_options o = opts(MIN, &io);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(append1(w, &m, 50 + (size_t)i), ERR_OK);
    capture_start();

    arm_write(&f, 0, 1, ENOSPC);
    fail_then_good(w, &m, ERR_DISK_FULL, ENOSPC);
    arm_write(&f, 0, 1, EDQUOT);
    fail_then_good(w, &m, ERR_DISK_FULL, EDQUOT);
    arm_write(&f, 0, 1, EIO);
    fail_then_good(w, &m, ERR_IO, EIO);
    /* a short write, then the rest fails */
    f.short_write_at = f.writes;
    arm_write(&f, 1, 1, ENOSPC);
    fail_then_good(w, &m, ERR_DISK_FULL, ENOSPC);
    disarm(&f);
    /* a short write alone: the rest is written, the append succeeds */
    f.short_write_at = f.writes;
    size_t three[3] = {9, 9000, 9};
    CHECK_EQ_INT(append(w, &m, three, 3, NULL), ERR_OK);
    disarm(&f);
    /* the write lands, its fdatasync fails */
    arm_sync(&f, 0, 1, EIO);
    fail_then_good(w, &m, ERR_IO, EIO);
    arm_sync(&f, 0, 1, ENOSPC);
    fail_then_good(w, &m, ERR_DISK_FULL, ENOSPC);
    /* a failing run, longer than one append */
    arm_write(&f, 0, 3, EIO);
    for (int i = 0; i < 3; i++) CHECK_EQ_INT(append1(w, NULL, 64), ERR_IO);
    CHECK_EQ_INT(append1(w, &m, 64), ERR_OK);

    /* the next segment cannot be made: no space */
    uint64_t end = wal_end(w);
    size_t fill = MIN - end - 8 - 200;
    CHECK_EQ_INT(append1(w, &m, fill), ERR_OK);
    end = wal_end(w);
    arm_write(&f, 0, 1, ENOSPC); /* the new segment's zeros */
    CHECK_EQ_INT(append1(w, NULL, 1000), ERR_DISK_FULL);
    CHECK_EQ_INT(wal_end(w), end);
    CHECK_EQ_INT(count_files(NULL), 1); /* no half-made file left */
    disarm(&f);
    arm_sync(&f, 0, 1, EIO); /* the new segment's sync */
    CHECK_EQ_INT(append1(w, NULL, 1000), ERR_IO);
    CHECK_EQ_INT(count_files(NULL), 1);
    /* the segment is made, then ending the old one fails */
    arm_write(&f, 1, 1, EIO);
    CHECK_EQ_INT(append1(w, NULL, 1000), ERR_IO);
    CHECK_EQ_INT(wal_end(w), end);
    CHECK_EQ_INT(count_files(NULL), 2);
    arm_sync(&f, 0, 1, EIO); /* the prepared segment is kept: only the end header */
    CHECK_EQ_INT(append1(w, NULL, 1000), ERR_IO);
    disarm(&f);
    /* space again: a small batch still fits the old segment... */
    CHECK_EQ_INT(append1(w, &m, 40), ERR_OK);
    CHECK_EQ_INT(m.r[m.n - 1].lsn, end);
    /* ...and a big one goes to the new segment, failing once there */
    arm_write(&f, 1, 1, EIO); /* the end header is written, the batch fails */
    end = wal_end(w);
    CHECK_EQ_INT(append1(w, NULL, 3000), ERR_IO);
    CHECK_EQ_INT(wal_end(w), MIN);
    disarm(&f);
    CHECK_EQ_INT(append1(w, &m, 300), ERR_OK);
    CHECK_EQ_INT(m.r[m.n - 1].lsn, MIN);
    arm_sync(&f, 0, 1, EIO);
    fail_then_good(w, &m, ERR_IO, EIO);
    disarm(&f);
    char *log = capture_end();
    CHECK(strstr(log, "cannot append to the message log") != NULL);
    CHECK(strstr(log, "work again") != NULL);
    CHECK(strstr(log, "code=disk_full") != NULL);
    free(log);
    uint64_t bytes;
    count_files(&bytes);
    CHECK_EQ_INT(bytes, wal_disk_bytes(w));
    wal_close(w);
    /* exactly the acknowledged batches, in a reopen with and without the seam */
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    w = open_expect(MIN, &io, 0, &m, SIZE_MAX);
    CHECK_EQ_INT(append1(w, &m, 5), ERR_OK);
    wal_close(w);
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

/* A failed fdatasync's batch is on disk (in the page cache, here): a
 * successful append after it writes zeros over what it does not cover
 * itself, and a crash before that may find it (never acknowledged). */
TEST(failed_sync_then_reopen)
{
    tmp_new();
    model m = {0};
    fault f = {.short_write_at = -1};
    wal_io io = {f_pwritev, f_fdatasync, &f};
    wal_options o = opts(MIN, &io);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    CHECK_EQ_INT(append1(w, &m, 33), ERR_OK);
    capture_start();
    size_t bad[3] = {300, 300, 300};
    uint64_t at = wal_end(w);
    for (int round = 0; round < 2; round++) {
        arm_sync(&f, 0, 1, round ? ENOSPC : EIO);
        CHECK_EQ_INT(append(w, NULL, bad, 3, NULL), round ? ERR_DISK_FULL : ERR_IO);
        CHECK_EQ_INT(append1(w, &m, 20), ERR_OK);
        char p[128];
        seg_path(p, sizeof p, 0);
        size_t n;
        uint8_t *b = read_file(p, &n);
        uint64_t good_end = at + 32, bad_end = at + framed(bad, 3) + 8;
        CHECK(b && all_zero(b + good_end, (size_t)(bad_end - good_end)));
        free(b);
        at = wal_end(w);
    }
    free(capture_end());
    wal_close(w);
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);

    /* the same failure, and the process ends before another append */
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    capture_start();
    arm_sync(&f, 0, 1, EIO);
    CHECK_EQ_INT(append(w, NULL, bad, 3, NULL), ERR_IO);
    free(capture_end());
    wal_close(w);
    /* reopen: the records of the failed batch may be there (they are,
     * here: the page cache has them), and appending goes on after them */
    got g = {0};
    CHECK_EQ_INT(wal_open(&w, &o, 0, on_rec, &g), ERR_OK);
    CHECK(g.n == m.n || g.n == m.n + 3);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* A preparation that fails (the disk full, or an I/O error, while it
 * writes the zeros) leaves no file behind, and the append that needs the
 * segment creates it itself: correctness never depends on the preparer. */
TEST(failed_prepare_left_to_the_append)
{
    tmp_new();
    model m = {0};
    fault f = {.short_write_at = -1};
    wal_io io = {f_pwritev, f_fdatasync, &f};
    wal_options o = opts(MIN, &io);
    wal *w = NULL;
    CHECK_EQ_INT(wal_open(&w, &o, 0, NULL, NULL), ERR_OK);
    arm_write(&f, 0, 1, ENOSPC);
    CHECK_EQ_INT(wal_prepare(w), ERR_DISK_FULL);
    CHECK_EQ_INT(count_files(NULL), 0); /* no .tmp left either */
    disarm(&f);
    CHECK_EQ_INT(append1(w, &m, 500), ERR_OK);
    CHECK_EQ_INT(count_files(NULL), 1);
    while (wal_end(w) < MIN / 2) CHECK_EQ_INT(append1(w, &m, 5000), ERR_OK);
    arm_write(&f, 0, 1, EIO);
    CHECK_EQ_INT(wal_prepare(w), ERR_IO);
    CHECK_EQ_INT(count_files(NULL), 1);
    disarm(&f);
    while (wal_end(w) < MIN + 100) CHECK_EQ_INT(append1(w, &m, 5000), ERR_OK);
    CHECK_EQ_INT(count_files(NULL), 2);
    wal_close(w);
    w = open_expect(MIN, NULL, 0, &m, SIZE_MAX);
    wal_close(w);
    model_free(&m);
    tmp_rm();
}

/* ---- the fuzz corpus -------------------------------------------------------------------- */

/* fuzz_wal's input: a 16-byte header (flags, first start / MIN as u16,
 * reserved, u32 bytes of file 1, u64 from), then the bytes of file 1 and
 * of file 2. See tests/fuzz/fuzz_wal.c. */
static void corpus_entry(const char *dir, const char *name, uint8_t flags, uint64_t from,
                         const uint8_t *f1, size_t n1, const uint8_t *f2, size_t n2)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) { perror(p); exit(2); }
    uint8_t h[16] = {flags};
    put32(h + 4, (uint32_t)n1);
    put64(h + 8, from);
    fwrite(h, 1, 16, f);
    fwrite(f1, 1, n1, f);
    if (f2) fwrite(f2, 1, n2, f);
    fclose(f);
}

static int write_corpus(const char *out)
{
    enum { APPEND = 16, TWO = 1, GAP = 2, FROM = 4, PAD = 8 };
    tmp_new();
    model m = {0};
    wal_options o = opts(MIN, NULL);
    wal *w = NULL;
    if (wal_open(&w, &o, 0, NULL, NULL) != ERR_OK) return 1;
    size_t b1[2] = {12, 40}, b2[1] = {200}, b3[3] = {5, 1, 30};
    append(w, &m, b1, 2, NULL);
    append(w, &m, b2, 1, NULL);
    append(w, &m, b3, 3, NULL);
    uint64_t end = wal_end(w);
    wal_close(w);
    char p[128];
    seg_path(p, sizeof p, 0);
    size_t n;
    uint8_t *seg = read_file(p, &n);
    size_t used = (size_t)end + 8;
    corpus_entry(out, "valid_one", APPEND, 0, seg, used, NULL, 0);
    corpus_entry(out, "valid_one_padded", APPEND | PAD, 0, seg, used, NULL, 0);
    corpus_entry(out, "from_middle", APPEND | FROM, m.r[2].lsn, seg, used, NULL, 0);
    corpus_entry(out, "from_inside", FROM, m.r[2].lsn + 8, seg, used, NULL, 0);
    corpus_entry(out, "torn_short", APPEND, 0, seg, (size_t)m.r[4].lsn + 5, NULL, 0);
    uint8_t *t = malloc(used);
    memcpy(t, seg, used);
    for (size_t i = (size_t)m.r[5].lsn + 3; i < used; i++) t[i] = (uint8_t)(i * 37 + 1);
    corpus_entry(out, "torn_garbage", APPEND, 0, t, used, NULL, 0);
    memcpy(t, seg, used);
    t[m.r[2].lsn + 8 + 50] ^= 1;
    corpus_entry(out, "corrupt_one", APPEND, 0, t, used, NULL, 0);
    free(t);
    /* two segments, made by hand: records, an end-of-segment header, and
     * records in the next one */
    uint8_t a[2048] = {0}, b[2048] = {0};
    size_t na = 0, nb = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t *pl = payload(500 + (uint64_t)i, 10 + (size_t)i * 30);
        na += enc_record(a + na, na, pl, 10 + (uint32_t)i * 30);
        free(pl);
    }
    size_t last_a = na - (8 + 104);
    na += enc_marker(a + na, na, MIN);
    for (int i = 0; i < 3; i++) {
        uint8_t *pl = payload(600 + (uint64_t)i, 70);
        nb += enc_record(b + nb, MIN + nb, pl, 70);
        free(pl);
    }
    nb += 8;
    corpus_entry(out, "valid_two", APPEND | TWO, 0, a, na, b, nb);
    corpus_entry(out, "valid_two_from_second", APPEND | TWO | FROM, MIN, a, na, b, nb);
    /* a missing segment: the second file's records are valid where it
     * is, two segments on, but the first one's end header names the next */
    uint8_t g[2048] = {0};
    size_t ng = 0;
    for (int i = 0; i < 3; i++) {
        uint8_t *pl = payload(700 + (uint64_t)i, 70);
        ng += enc_record(g + ng, 2 * MIN + ng, pl, 70);
        free(pl);
    }
    corpus_entry(out, "gap_two", APPEND | TWO | GAP, 0, a, na, g, ng + 8);
    corpus_entry(out, "misnamed_two", APPEND | TWO | GAP, 0, a, na, b, nb);
    a[last_a + 8 + 20] ^= 4;
    corpus_entry(out, "corrupt_two", APPEND | TWO, 0, a, na, b, nb);
    a[last_a + 8 + 20] ^= 4;
    b[8 + 3] ^= 4;
    corpus_entry(out, "torn_two", APPEND | TWO | PAD, 0, a, na, b, 8 + 70);
    free(seg);
    model_free(&m);
    tmp_rm();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0) return write_corpus(argv[2]);
    test_seed();
    RUN(crc32c_vectors);
    RUN(bad_arguments);
    RUN(round_trip_across_segments);
    RUN(format_on_disk);
    RUN(torn_tail_every_offset);
    RUN(torn_tail_first_batch_of_a_segment);
    RUN(corrupt_middle_same_segment);
    RUN(corrupt_middle_across_segments);
    RUN(recycled_segments_stale_bytes);
    RUN(release_keeps_the_files_bounded);
    RUN(recycling_reuses_files);
    RUN(release_from_another_thread);
    RUN(prepare_readies_the_next_segment);
    RUN(prepare_from_another_thread);
    RUN(faults_leave_only_acknowledged_batches);
    RUN(failed_sync_then_reopen);
    RUN(failed_prepare_left_to_the_append);
    return test_summary("wal");
}
