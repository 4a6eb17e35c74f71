/* wal: the durable message log (see wal.h for the format and the contract).
 *
 * State: the appender (the one thread that calls wal_append) owns the end,
 * dirty_end, the failure count and its scratch (stage, iov): no other
 * thread touches them, but for the end, read atomically. It also owns the
 * current segment (fd, cur_start, cur_span) but changes it only under
 * `mu` (roll), so that wal_prepare() may read it under `mu` from another
 * thread. The segment lists (live: from the oldest kept to the current
 * one; future: recycled or prepared files named after the current one),
 * next_fd (future[0] opened) and the released position are under `mu`,
 * shared with wal_release() and wal_prepare(). The directory, the segment
 * size and the I/O seam are set at open and only read after. */
#include "store/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "base/log.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

#define HDR 8u                      /* u32 len, u32 crc */
#define COPY_MAX 4096u              /* payloads up to this are copied into one buffer */
#define READ_CHUNK (1u << 20)       /* replay reads this much per pread */
#define ZERO_BYTES (64u << 10)      /* one iovec of zeros */
#define ZERO_IOV 64                 /* iovecs of zeros per pwritev: 4 MiB */
#define NAME_LEN 20                 /* 16 hex digits + ".wal" */
#define RETRIES 100                 /* EINTR retries of one call */

typedef struct seg {
    uint64_t start;
    uint64_t size;                  /* file bytes */
} seg;

struct wal {
    char *dir;
    int dirfd;                      /* flock'd while open */
    uint64_t seg_bytes;
    wal_io io;

    /* the appender's; fd, cur_start and cur_span written only under mu */
    int fd;                         /* current segment, -1: none yet */
    uint64_t cur_start, cur_span;   /* its LSN and its usable bytes */
    uint64_t end;                   /* next append's LSN (atomic for wal_end) */
    uint64_t dirty_end;             /* a failed append may have written up to here */
    bool failing;                   /* the last append failed (for the log) */
    uint64_t failures;
    uint8_t *stage;                 /* headers, small payloads, padding */
    size_t stage_cap;
    struct iovec *iov;
    size_t iov_cap;

    pthread_mutex_t mu;             /* guards what follows */
    int next_fd;                    /* future[0] opened or created, -1: none */
    seg *live;                      /* oldest first; the last is the current one */
    size_t nlive, live_cap;
    seg future[WAL_SPARES];         /* in LSN order, right after the live ones */
    size_t nfuture;
    uint64_t released;
    uint64_t disk_bytes;            /* atomic for wal_disk_bytes */
};

static uint8_t zeros[ZERO_BYTES];   /* never written */

/* ---- CRC-32C, slicing by 8 ---------------------------------------------- */

static uint32_t crc_tab[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

uint32_t wal_crc32c(uint32_t crc, const void *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *b = p;
    crc = ~crc;
    while (n && ((uintptr_t)b & 7)) {
        crc = crc_tab[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
        n--;
    }
    for (; n >= 8; n -= 8, b += 8) {
        uint32_t lo = ((uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                       (uint32_t)b[3] << 24) ^ crc;
        crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^
              crc_tab[5][(lo >> 16) & 0xff] ^ crc_tab[4][lo >> 24] ^
              crc_tab[3][b[4]] ^ crc_tab[2][b[5]] ^ crc_tab[1][b[6]] ^ crc_tab[0][b[7]];
    }
    while (n--) crc = crc_tab[0][(crc ^ *b++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- format ---------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t pad8(uint64_t n)
{
    return (n + 7) & ~(uint64_t)7;
}

static uint32_t crc_lsn(uint64_t lsn)
{
    uint8_t b[8];
    put64(b, lsn);
    return wal_crc32c(0, b, 8);
}

static uint32_t record_crc(uint64_t lsn, const void *payload, size_t len)
{
    return wal_crc32c(crc_lsn(lsn), payload, len);
}

static uint32_t marker_crc(uint64_t lsn, uint64_t next)
{
    uint8_t b[8];
    put64(b, next);
    return wal_crc32c(crc_lsn(lsn), b, 8);
}

static void seg_name(char out[NAME_LEN + 1], uint64_t start)
{
    snprintf(out, NAME_LEN + 1, "%016" PRIx64 ".wal", start);
}

/* "0000000000100000.wal" -> 0x100000; false for any other name. */
static bool parse_name(const char *s, uint64_t *start)
{
    if (strlen(s) != NAME_LEN || strcmp(s + 16, ".wal") != 0) return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        v = v << 4 | (uint64_t)d;
    }
    if (v >> 63) return false; /* not one of ours: LSNs stay far from wrapping */
    *start = v;
    return true;
}

static bool is_tmp_name(const char *s)
{
    size_t n = strlen(s);
    return n == 20 && strcmp(s + 16, ".tmp") == 0;
}

/* Opens DIR/NAME. By path, not openat(dirfd): the same file, and a call
 * every checker knows (ThreadSanitizer does not see openat here, so a
 * segment opened on the applier under a descriptor number an I/O thread
 * had just closed looked like that thread's socket). -1 with errno. */
static int seg_open(const wal *w, const char *name, int flags, mode_t mode)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", w->dir, name) >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return open(path, flags, mode);
}

/* "DIR/NAME" as a log field value (quoted when it needs to be). */
static const char *file_field(char *buf, size_t cap, const wal *w, const char *name)
{
    char path[4096];
    int n = snprintf(path, sizeof path, "%s/%s", w->dir, name);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof path) n = (int)sizeof path - 1;
    return log_value(buf, cap, path, (size_t)n);
}

static int err_of(int e)
{
    return e == ENOSPC || e == EDQUOT ? ERR_DISK_FULL : ERR_IO;
}

static uint64_t load64(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store64(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* ---- I/O through the seam ---------------------------------------------------- */

static ssize_t io_pwritev(wal *w, int fd, const struct iovec *iov, int n, off_t off)
{
    if (w->io.pwritev) return w->io.pwritev(w->io.arg, fd, iov, n, off);
    return pwritev(fd, iov, n, off);
}

/* fdatasync, retried on EINTR. 0, or -1 with errno. */
static int io_sync(wal *w, int fd)
{
    for (int t = 0; t < RETRIES; t++) {
        int r = w->io.fdatasync ? w->io.fdatasync(w->io.arg, fd) : fdatasync(fd);
        if (r == 0) return 0;
        if (errno != EINTR) return -1;
    }
    return -1;
}

/* Writes every byte of iov[0..n) at off, IOV_MAX iovecs per call, the rest
 * of a short write again; iov is consumed. 0, or -1 with errno. */
static int write_all(wal *w, int fd, struct iovec *iov, size_t n, uint64_t off)
{
    size_t i = 0;
    int eintr = 0;
    while (i < n) {
        if (iov[i].iov_len == 0) { i++; continue; }
        int cnt = n - i > IOV_MAX ? IOV_MAX : (int)(n - i);
        ssize_t r = io_pwritev(w, fd, iov + i, cnt, (off_t)off);
        if (r < 0) {
            if (errno == EINTR && ++eintr < RETRIES) continue;
            return -1;
        }
        if (r == 0) { errno = EIO; return -1; } /* no progress: never loop on it */
        eintr = 0;
        off += (uint64_t)r;
        size_t left = (size_t)r;
        while (left && i < n) {
            if (left >= iov[i].iov_len) {
                left -= iov[i].iov_len;
                i++;
            } else {
                iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
                iov[i].iov_len -= left;
                left = 0;
            }
        }
    }
    return 0;
}

static int reserve_iov(wal *w, size_t n)
{
    if (n <= w->iov_cap) return ERR_OK;
    size_t cap = w->iov_cap ? w->iov_cap : 64;
    while (cap < n) cap *= 2;
    struct iovec *v = realloc(w->iov, cap * sizeof *v);
    if (!v) return ERR_NOMEM;
    w->iov = v;
    w->iov_cap = cap;
    return ERR_OK;
}

/* Writes len zero bytes at off, ZERO_IOV iovecs of zeros per call. Its
 * iovecs are its own (on the stack): it runs on whichever thread creates a
 * segment, the appender's roll() or wal_prepare() on another thread, while
 * the appender may be filling its own w->iov (the scratch of appends,
 * which only the appending thread touches). */
static int write_zeros(wal *w, int fd, uint64_t off, uint64_t len)
{
    struct iovec v[ZERO_IOV];
    while (len) {
        size_t cnt = 0;
        uint64_t chunk = 0;
        while (len - chunk && cnt < ZERO_IOV) {
            uint64_t k = len - chunk < ZERO_BYTES ? len - chunk : ZERO_BYTES;
            v[cnt].iov_base = zeros;
            v[cnt].iov_len = (size_t)k;
            cnt++;
            chunk += k;
        }
        if (write_all(w, fd, v, cnt, off) != 0) return -1;
        off += chunk;
        len -= chunk;
    }
    return 0;
}

/* ---- segment lists (under mu) ---------------------------------------------- */

static int live_push(wal *w, seg s)
{
    if (w->nlive == w->live_cap) {
        size_t cap = w->live_cap ? w->live_cap * 2 : 16;
        seg *v = realloc(w->live, cap * sizeof *v);
        if (!v) return ERR_NOMEM;
        w->live = v;
        w->live_cap = cap;
    }
    w->live[w->nlive++] = s;
    return ERR_OK;
}

/* The start of the segment after the current one: where the next append
 * that does not fit goes (with no current segment, the end). */
static uint64_t after_live(const wal *w)
{
    return w->fd >= 0 ? w->cur_start + w->cur_span : load64(&w->end);
}

static void add_disk(wal *w, int64_t d)
{
    store64(&w->disk_bytes, (uint64_t)((int64_t)w->disk_bytes + d));
}

/* Recycles the live segments (never the last, the current one) that end at
 * or before the released position: renamed to the next future name while
 * there are fewer than WAL_SPARES future files and the file has the
 * configured size, otherwise removed. The directory is synced after, so a
 * future segment's name is durable before it is used. */
static void recycle_locked(wal *w)
{
    size_t done = 0;
    while (w->nlive - done > 1 && w->live[done].start + w->live[done].size <= w->released) {
        seg s = w->live[done++];
        char old[NAME_LEN + 1], to[NAME_LEN + 1], f[4200];
        seg_name(old, s.start);
        if (s.size == w->seg_bytes && w->nfuture < WAL_SPARES) {
            uint64_t ns = w->nfuture ? w->future[w->nfuture - 1].start + w->future[w->nfuture - 1].size
                                     : after_live(w);
            seg_name(to, ns);
            if (renameat(w->dirfd, old, w->dirfd, to) == 0) {
                w->future[w->nfuture++] = (seg){ns, s.size};
                log_debug("log segment recycled", "file=%s as=%s",
                          file_field(f, sizeof f, w, old), to);
                continue;
            }
            log_warn("cannot recycle a log segment", "file=%s err=\"%s\"",
                     file_field(f, sizeof f, w, old), strerror(errno));
        }
        if (unlinkat(w->dirfd, old, 0) != 0 && errno != ENOENT) {
            log_warn("cannot remove a log segment", "file=%s err=\"%s\"",
                     file_field(f, sizeof f, w, old), strerror(errno));
            done--; /* keep it listed: it still takes disk space */
            break;
        }
        add_disk(w, -(int64_t)s.size);
    }
    if (!done) return;
    memmove(w->live, w->live + done, (w->nlive - done) * sizeof *w->live);
    w->nlive -= done;
    if (fsync(w->dirfd) != 0)
        log_warn("cannot sync the log directory", "dir=%s err=\"%s\"", w->dir, strerror(errno));
}

/* ---- new segments ---------------------------------------------------------- */

/* Creates DIR/<start>.wal of seg_bytes: written as DIR/<start>.tmp, sized,
 * synced, renamed, the directory synced. Returns the open fd, or an error
 * with errno set.
 *
 * Sizing: fallocate first (the space is reserved, and ENOSPC shows here,
 * cheaply, instead of in the middle of appends), then zeros written over
 * the whole file. fallocate alone leaves unwritten extents: the first
 * write to each block converts it, which is a metadata change the append's
 * fdatasync then has to commit to the journal too. Zeros make every later
 * append a pure data overwrite. Measured on this project's ext4 disk:
 * append+fdatasync of 1 KiB 0.134-0.139 ms in a zero-written file against
 * 0.149-0.152 ms in a fallocated one, for 6 ms of zeros per 8 MiB (about
 * 50 ms per 64 MiB segment, paid only while the log grows: recycled
 * segments are written already). */
static int create_segment(wal *w, uint64_t start, int *fd_out, const char **step_out)
{
    char name[NAME_LEN + 1], tmp[NAME_LEN + 1];
    seg_name(name, start);
    snprintf(tmp, sizeof tmp, "%016" PRIx64 ".tmp", start);
    int fd = seg_open(w, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const char *step = "create segment";
    if (fd < 0) goto fail;
    step = "fallocate segment";
    if (fallocate(fd, 0, 0, (off_t)w->seg_bytes) != 0 && errno != EOPNOTSUPP && errno != ENOSYS)
        goto fail;
    step = "zero segment";
    if (write_zeros(w, fd, 0, w->seg_bytes) != 0) goto fail;
    step = "sync segment";
    if (io_sync(w, fd) != 0) goto fail;
    step = "rename segment";
    if (renameat(w->dirfd, tmp, w->dirfd, name) != 0) goto fail;
    step = "sync directory";
    if (fsync(w->dirfd) != 0) goto fail; /* the name exists, empty: harmless */
    add_disk(w, (int64_t)w->seg_bytes);
    *fd_out = fd;
    return ERR_OK;
fail:;
    int e = errno;
    if (fd >= 0) close(fd);
    unlinkat(w->dirfd, tmp, 0);
    *step_out = step;
    errno = e;
    return err_of(e);
}

/* Makes future[0] the segment at `start`, open in next_fd: the recycled or
 * prepared file of that name, or a new one. Under mu. */
static int prepare_next(wal *w, uint64_t start, const char **step)
{
    if (w->nlive == w->live_cap) { /* room for the switch, before it is due */
        size_t cap = w->live_cap ? w->live_cap * 2 : 16;
        seg *v = realloc(w->live, cap * sizeof *v);
        if (!v) { *step = "buffer"; errno = ENOMEM; return ERR_NOMEM; }
        w->live = v;
        w->live_cap = cap;
    }
    if (w->next_fd >= 0) return ERR_OK;
    char name[NAME_LEN + 1];
    seg_name(name, start);
    if (w->nfuture && w->future[0].start == start) {
        int fd = seg_open(w, name, O_RDWR | O_CLOEXEC, 0);
        struct stat st;
        if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_size == w->future[0].size) {
            w->next_fd = fd;
            return ERR_OK;
        }
        if (fd >= 0) close(fd);
        /* unusable: drop it and every future file after it */
        for (size_t i = 0; i < w->nfuture; i++) {
            char n[NAME_LEN + 1];
            seg_name(n, w->future[i].start);
            if (unlinkat(w->dirfd, n, 0) == 0 || errno == ENOENT) add_disk(w, -(int64_t)w->future[i].size);
        }
        w->nfuture = 0;
    } else if (w->nfuture) {
        w->nfuture = 0; /* cannot happen: future names follow the live ones */
    }
    int fd, rc = create_segment(w, start, &fd, step);
    if (rc != ERR_OK) return rc;
    w->future[0] = (seg){start, w->seg_bytes};
    w->nfuture = 1;
    w->next_fd = fd;
    return ERR_OK;
}

/* Moves the appender to the next segment: prepares it, ends the current
 * one with an end-of-segment header (synced before the new segment gets a
 * record), then switches. On an error nothing changed but what is
 * prepared. */
static int roll(wal *w, const char **step, uint64_t *at)
{
    pthread_mutex_lock(&w->mu);
    uint64_t next = after_live(w);
    *at = next;
    int rc = prepare_next(w, next, step);
    pthread_mutex_unlock(&w->mu);
    if (rc != ERR_OK) return rc;
    *at = w->end;
    if (w->fd >= 0 && w->end + HDR <= w->cur_start + w->cur_span) {
        uint8_t m[HDR];
        put32(m, 0);
        put32(m + 4, marker_crc(w->end, next));
        struct iovec v = {m, HDR};
        uint64_t off = w->end - w->cur_start;
        if (write_all(w, w->fd, &v, 1, off) != 0 || io_sync(w, w->fd) != 0) {
            int e = errno;
            if (w->dirty_end < w->end + HDR) w->dirty_end = w->end + HDR;
            *step = "end segment";
            errno = e;
            return err_of(e);
        }
    }
    pthread_mutex_lock(&w->mu);
    seg s = w->future[0];
    memmove(w->future, w->future + 1, (w->nfuture - 1) * sizeof *w->future);
    w->nfuture--;
    if (w->nlive && w->live[w->nlive - 1].start == s.start) {
        /* an empty short file replaced by the new one (see settle) */
        add_disk(w, -(int64_t)w->live[w->nlive - 1].size);
        w->live[w->nlive - 1] = s;
    } else {
        w->live[w->nlive++] = s; /* room made by prepare_next */
    }
    if (w->fd >= 0) close(w->fd);
    w->fd = w->next_fd;
    w->next_fd = -1;
    w->cur_start = s.start;
    w->cur_span = s.size & ~(uint64_t)7;
    w->dirty_end = 0;
    store64(&w->end, s.start);
    recycle_locked(w); /* the old current one may be released already */
    pthread_mutex_unlock(&w->mu);
    return ERR_OK;
}

/* ---- append ------------------------------------------------------------------ */

/* Logs the first of a run of failed appends (the recovery is logged too),
 * keeps errno. `at` is the LSN the failed write was for. */
static int append_failed(wal *w, int rc, const char *step, uint64_t at)
{
    int e = errno;
    w->failures++;
    if (!w->failing) {
        char name[NAME_LEN + 1], f[4200];
        uint64_t start = w->fd >= 0 && at >= w->cur_start && at < w->cur_start + w->cur_span
                             ? w->cur_start : at;
        seg_name(name, start);
        log_error("cannot append to the message log", "file=%s offset=%" PRIu64
                  " step=\"%s\" err=\"%s\" code=%s", file_field(f, sizeof f, w, name),
                  at - start, step, rc == ERR_NOMEM ? "out of memory" : strerror(e),
                  err_name(rc));
        w->failing = true;
    }
    errno = e;
    return rc;
}

int wal_append(wal *w, const struct iovec *iov, size_t n, uint64_t *end_out)
{
    if (!w || !iov || n == 0) return ERR_INVALID;
    uint64_t framed = 0;
    size_t stage = 0, niov = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        if (len == 0 || !iov[i].iov_base) return ERR_INVALID;
        if (len > WAL_RECORD_MAX) return ERR_TOO_LARGE;
        framed += HDR + pad8(len);
        if (len <= COPY_MAX) stage += HDR + pad8(len);
        else { stage += HDR + 8; niov += 2; }
    }
    if (framed > w->seg_bytes) return ERR_TOO_LARGE;
    if (w->fd < 0 || w->end + framed > w->cur_start + w->cur_span) {
        const char *step = "new segment";
        uint64_t where = w->end;
        int rc = roll(w, &step, &where);
        if (rc != ERR_OK) return append_failed(w, rc, step, where);
        if (w->end + framed > w->cur_start + w->cur_span)
            return ERR_TOO_LARGE; /* a recycled file smaller than a batch: cannot happen */
    }
    uint64_t at = w->end, seg_end = w->cur_start + w->cur_span;
    uint64_t stop = at + framed;          /* what this write covers */
    bool trailer = stop + HDR <= seg_end; /* the end-of-log zeros after it */
    if (trailer) { stage += HDR; stop += HDR; }
    uint64_t fill = w->dirty_end > stop ? w->dirty_end - stop : 0;
    niov += 1 + (size_t)((fill + ZERO_BYTES - 1) / ZERO_BYTES);
    if (stage > w->stage_cap) {
        uint8_t *b = realloc(w->stage, stage);
        if (!b) return append_failed(w, ERR_NOMEM, "buffer", at);
        w->stage = b;
        w->stage_cap = stage;
    }
    if (reserve_iov(w, niov) != ERR_OK) return append_failed(w, ERR_NOMEM, "buffer", at);

    /* Headers, small payloads and padding go to the stage, large payloads
     * are their own iovecs: one iovec for a batch of small records. */
    uint8_t *s = w->stage, *run = s;
    size_t k = 0;
    uint64_t lsn = at;
    for (size_t i = 0; i < n; i++) {
        size_t len = iov[i].iov_len;
        size_t pad = (size_t)(pad8(len) - len);
        put32(s, (uint32_t)len);
        put32(s + 4, record_crc(lsn, iov[i].iov_base, len));
        s += HDR;
        if (len <= COPY_MAX) {
            memcpy(s, iov[i].iov_base, len);
            s += len;
        } else {
            w->iov[k++] = (struct iovec){run, (size_t)(s - run)};
            w->iov[k++] = (struct iovec){iov[i].iov_base, len};
            run = s;
        }
        memset(s, 0, pad);
        s += pad;
        lsn += HDR + len + pad;
    }
    if (trailer) { memset(s, 0, HDR); s += HDR; }
    if (s > run) w->iov[k++] = (struct iovec){run, (size_t)(s - run)};
    for (uint64_t z = 0; z < fill; z += ZERO_BYTES)
        w->iov[k++] = (struct iovec){zeros, (size_t)(fill - z < ZERO_BYTES ? fill - z : ZERO_BYTES)};

    if (write_all(w, w->fd, w->iov, k, at - w->cur_start) != 0) {
        int e = errno;
        if (w->dirty_end < stop) w->dirty_end = stop;
        errno = e;
        return append_failed(w, err_of(e), "write", at);
    }
    if (io_sync(w, w->fd) != 0) {
        int e = errno;
        if (w->dirty_end < stop) w->dirty_end = stop;
        errno = e;
        return append_failed(w, err_of(e), "fdatasync", at);
    }
    w->dirty_end = 0;
    if (w->failing) {
        log_info("appends to the message log work again", "failed=%" PRIu64, w->failures);
        w->failing = false;
        w->failures = 0;
    }
    store64(&w->end, at + framed);
    if (end_out) *end_out = at + framed;
    return ERR_OK;
}

/* Whether the log's filesystem has room for a new segment now (true when
 * it cannot tell). */
static bool room_for_segment(const wal *w)
{
    struct statvfs st;
    if (fstatvfs(w->dirfd, &st) != 0) return true;
    return (uint64_t)st.f_bavail * (uint64_t)st.f_frsize >= w->seg_bytes;
}

/* Any thread, beside a concurrent wal_append(): everything it reads or
 * writes is under mu (the segment lists, next_fd, and the current
 * segment's fd, start and span, which the appender changes only under mu,
 * in roll()); the end is read atomically; creating a file uses only the
 * constants of the log (dirfd, seg_bytes, io) and write_zeros' own
 * iovecs. It holds mu while it creates the file: an append that needs the
 * segment meanwhile waits for it in roll() and then uses it. */
int wal_prepare(wal *w)
{
    if (!w) return ERR_INVALID;
    pthread_mutex_lock(&w->mu);
    int rc = ERR_OK;
    /* Once the current segment is half full (or there is none yet): early
     * enough that the append which fills it finds the next one ready, late
     * enough that a short-lived log does not write a segment it never
     * uses (writing one is a burst of disk writes that slows the syncs of
     * appends meanwhile). */
    bool due = w->fd < 0 || load64(&w->end) - w->cur_start >= w->cur_span / 2;
    if (w->next_fd < 0 && due) {
        const char *step = NULL;
        uint64_t start = after_live(w);
        bool spare = w->nfuture && w->future[0].start == start;
        if (!spare && !room_for_segment(w)) {
            /* Not even tried: a file that cannot be whole would take the
             * last free blocks (fallocate may allocate up to the failure)
             * from the store's commits until it is removed. The append
             * that needs it tries itself. */
            rc = ERR_DISK_FULL;
        } else if ((rc = prepare_next(w, start, &step)) != ERR_OK) {
            char name[NAME_LEN + 1], f[4200];
            seg_name(name, start);
            log_debug("cannot prepare the next log segment", "file=%s step=\"%s\" err=\"%s\"",
                      file_field(f, sizeof f, w, name), step ? step : "", strerror(errno));
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

uint64_t wal_end(const wal *w)
{
    return load64(&w->end);
}

void wal_release(wal *w, uint64_t lsn)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    if (lsn > w->released) {
        w->released = lsn;
        recycle_locked(w);
    }
    pthread_mutex_unlock(&w->mu);
}

uint64_t wal_disk_bytes(const wal *w)
{
    return load64(&w->disk_bytes);
}

void wal_close(wal *w)
{
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->next_fd >= 0) close(w->next_fd);
    if (w->dirfd >= 0) close(w->dirfd); /* drops the flock */
    pthread_mutex_destroy(&w->mu);
    free(w->live);
    free(w->stage);
    free(w->iov);
    free(w->dir);
    free(w);
}

/* ---- open and replay -------------------------------------------------------- */

typedef struct file {
    uint64_t start, size;
} file;

/* One segment file being read, through a buffer of READ_CHUNK or more. */
typedef struct reader {
    wal *w;
    int fd;
    uint64_t size;
    uint8_t *buf;
    size_t cap;
    uint64_t boff;          /* file offset of buf[0] */
    size_t blen;
    int err;                /* errno of a failed read, 0 */
} reader;

static int rd_open(reader *r, uint64_t start, uint64_t size)
{
    char name[NAME_LEN + 1];
    seg_name(name, start);
    if (r->fd >= 0) close(r->fd);
    r->fd = seg_open(r->w, name, O_RDONLY | O_CLOEXEC, 0);
    r->size = size;
    r->blen = 0;
    r->boff = 0;
    if (r->fd < 0) {
        char f[4200];
        r->err = errno;
        log_error("cannot open a log segment", "file=%s err=\"%s\"",
                  file_field(f, sizeof f, r->w, name), strerror(errno));
        return ERR_IO;
    }
    return ERR_OK;
}

/* Bytes [off, off+n) of the file, or NULL (beyond its end, or r->err). */
static const uint8_t *rd_get(reader *r, uint64_t off, size_t n)
{
    if (off > r->size || n > r->size - off) return NULL;
    if (off >= r->boff && off + n <= r->boff + r->blen) return r->buf + (off - r->boff);
    size_t want = n > READ_CHUNK ? n : READ_CHUNK;
    if (want > r->size - off) want = (size_t)(r->size - off);
    if (want > r->cap) {
        uint8_t *b = realloc(r->buf, want);
        if (!b) { r->err = ENOMEM; return NULL; }
        r->buf = b;
        r->cap = want;
    }
    size_t got = 0;
    int eintr = 0;
    while (got < want) {
        ssize_t k = pread(r->fd, r->buf + got, want - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR && ++eintr < RETRIES) continue;
        if (k < 0) { r->err = errno; r->blen = 0; return NULL; }
        if (k == 0) break; /* the file shrank: what is missing is not there */
        got += (size_t)k;
    }
    r->boff = off;
    r->blen = got;
    return got >= n ? r->buf : NULL;
}

enum { REC_OK, REC_MARKER, REC_BAD };

typedef struct rec {
    uint32_t len, crc;
    const uint8_t *payload;
} rec;

/* Checks the header at pos of a segment starting at `start` whose records
 * must end by `limit`, with `next` the start of the segment after it. */
static int rec_check(reader *r, uint64_t start, uint64_t pos, uint64_t limit, uint64_t next, rec *out)
{
    memset(out, 0, sizeof *out);
    if (pos + HDR > limit) return REC_BAD;
    const uint8_t *h = rd_get(r, pos, HDR);
    if (!h) return REC_BAD;
    out->len = get32(h);
    out->crc = get32(h + 4);
    uint64_t lsn = start + pos;
    if (out->len == 0) return out->crc == marker_crc(lsn, next) ? REC_MARKER : REC_BAD;
    if (out->len > WAL_RECORD_MAX || pos + HDR + pad8(out->len) > limit) return REC_BAD;
    const uint8_t *p = rd_get(r, pos, HDR + out->len);
    if (!p) return REC_BAD;
    if (record_crc(lsn, p + HDR, out->len) != out->crc) return REC_BAD;
    out->payload = p + HDR;
    return REC_OK;
}

typedef struct scan {
    wal *w;
    reader r;
    file *f;
    size_t nf;
    uint64_t from;
    bool from_ok;           /* the scan passed `from` */
    bool bad_from;          /* ... and it is inside a record */
    wal_replay_fn replay;
    void *arg;
} scan;

/* Where segment i's records may be: its usable bytes (limit), its span
 * (to the next file's start, or its own size for the last) and the next
 * segment's start. */
static void seg_bounds(const scan *s, size_t i, uint64_t *limit, uint64_t *span, uint64_t *next)
{
    uint64_t size = s->f[i].size & ~(uint64_t)7;
    *span = i + 1 < s->nf ? s->f[i + 1].start - s->f[i].start : size;
    *limit = size < *span ? size : *span;
    *next = s->f[i].start + *span;
}

static int read_failed(scan *s, uint64_t start, uint64_t pos)
{
    char name[NAME_LEN + 1], f[4200];
    seg_name(name, start);
    log_error("cannot read a log segment", "file=%s offset=%" PRIu64 " err=\"%s\"",
              file_field(f, sizeof f, s->w, name), pos, strerror(s->r.err));
    errno = s->r.err;
    return s->r.err == ENOMEM ? ERR_NOMEM : ERR_IO;
}

/* 1 if segment i holds a record (a valid first header, or a first record
 * whose declared end holds a valid one), 0 if not, or an error. */
static int holds_records(scan *s, size_t i)
{
    uint64_t limit, span, next, start = s->f[i].start;
    seg_bounds(s, i, &limit, &span, &next);
    int rc = rd_open(&s->r, start, s->f[i].size);
    if (rc != ERR_OK) return rc;
    rec h, h2;
    int k = rec_check(&s->r, start, 0, limit, next, &h);
    if (k == REC_BAD && h.len >= 1 && h.len <= WAL_RECORD_MAX && !s->r.err)
        k = rec_check(&s->r, start, HDR + pad8(h.len), limit, next, &h2);
    if (s->r.err) return read_failed(s, start, 0);
    return k != REC_BAD;
}

/* A boundary of the log passed by the scan: `from` must be one. */
static int boundary(scan *s, uint64_t lsn)
{
    if (lsn == s->from) s->from_ok = true;
    if (!s->from_ok && lsn > s->from) {
        s->bad_from = true;
        return ERR_INVALID;
    }
    return ERR_OK;
}

typedef struct scan_end {
    size_t cur;             /* the segment holding the end, or nf: none */
    uint64_t end;
    uint64_t dirty_end;     /* bytes of a torn record to overwrite */
} scan_end;

/* Reads segments k.. in order, replaying records >= from, up to the first
 * bad record (torn tail, or ERR_CORRUPT) or the last segment's end. */
static int scan_log(scan *s, size_t k, scan_end *out)
{
    wal *w = s->w;
    int rc = boundary(s, s->f[k].start);
    if (rc != ERR_OK) return rc;
    for (size_t i = k; i < s->nf; i++) {
        uint64_t start = s->f[i].start, limit, span, next;
        seg_bounds(s, i, &limit, &span, &next);
        if ((rc = rd_open(&s->r, start, s->f[i].size)) != ERR_OK) return rc;
        uint64_t pos = 0;
        for (;;) {
            if (pos + HDR > limit && limit == span) break; /* full */
            rec h;
            int kind = rec_check(&s->r, start, pos, limit, next, &h);
            if (s->r.err) return read_failed(s, start, pos);
            if ((rc = boundary(s, start + pos)) != ERR_OK) return rc;
            if (kind == REC_MARKER) break;
            if (kind == REC_BAD) {
                /* torn tail, or corruption: what follows decides */
                char name[NAME_LEN + 1], f[4200];
                seg_name(name, start);
                const char *why = NULL;
                uint64_t decl = HDR + pad8(h.len);
                if (h.len >= 1 && h.len <= WAL_RECORD_MAX && pos + decl + HDR <= limit) {
                    rec h2;
                    if (rec_check(&s->r, start, pos + decl, limit, next, &h2) != REC_BAD)
                        why = "a valid record follows it";
                    if (s->r.err) return read_failed(s, start, pos + decl);
                }
                for (size_t j = i + 1; !why && j < s->nf; j++) {
                    int held = holds_records(s, j);
                    if (held < 0) return held;
                    if (held) why = "a later segment holds records";
                }
                if (why) {
                    log_error("corrupt record in the message log: not starting",
                              "file=%s offset=%" PRIu64 " lsn=%" PRIu64 " len=%" PRIu32
                              " reason=\"%s\"", file_field(f, sizeof f, w, name), pos,
                              start + pos, h.len, why);
                    return ERR_CORRUPT;
                }
                if (h.len != 0 || h.crc != 0 || pos + HDR > limit) {
                    log_warn("torn tail of the message log: cut", "file=%s offset=%" PRIu64
                             " lsn=%" PRIu64, file_field(f, sizeof f, w, name), pos, start + pos);
                }
                out->cur = i;
                out->end = start + pos;
                out->dirty_end = 0;
                if (h.len >= 1 && h.len <= WAL_RECORD_MAX)
                    out->dirty_end = start + (pos + decl < span ? pos + decl : span);
                return boundary(s, out->end);
            }
            uint64_t lsn = start + pos;
            if (lsn >= s->from && s->replay) {
                rc = s->replay(s->arg, lsn, h.payload, h.len);
                if (rc != 0) return rc;
            }
            pos += HDR + pad8(h.len);
        }
        if ((rc = boundary(s, next)) != ERR_OK) return rc;
        if (i + 1 == s->nf) {
            out->cur = s->nf;
            out->end = next;
            out->dirty_end = 0;
            return ERR_OK;
        }
    }
    return ERR_INVALID; /* not reached: the loop returns at the last segment */
}

/* mkdir -p. */
static int make_dirs(const char *dir)
{
    size_t n = strlen(dir);
    char *p = malloc(n + 1);
    if (!p) return ERR_NOMEM;
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (p[i] != '/' && p[i] != '\0') continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            int e = errno;
            log_error("cannot create the log directory", "dir=%s err=\"%s\"", p, strerror(e));
            free(p);
            errno = e;
            return ERR_IO;
        }
        p[i] = c;
    }
    free(p);
    return ERR_OK;
}

static int cmp_file(const void *a, const void *b)
{
    const file *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The segment files of the directory, sorted; stale .tmp files removed
 * (only after a successful scan: see `tmps`). */
static int list_files(wal *w, file **out, size_t *n, bool *tmps)
{
    int fd = dup(w->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int e = errno;
        if (fd >= 0) close(fd);
        log_error("cannot read the log directory", "dir=%s err=\"%s\"", w->dir, strerror(e));
        errno = e;
        return ERR_IO;
    }
    rewinddir(d);
    file *v = NULL;
    size_t nv = 0, cap = 0;
    int rc = ERR_OK;
    struct dirent *e;
    *tmps = false;
    while ((e = readdir(d))) {
        uint64_t start;
        if (is_tmp_name(e->d_name)) { *tmps = true; continue; }
        if (!parse_name(e->d_name, &start)) continue;
        struct stat st;
        int bad = fstatat(w->dirfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ? errno : 0;
        if (bad || !S_ISREG(st.st_mode)) {
            char f[4200];
            log_error("cannot use a log segment", "file=%s err=\"%s\"",
                      file_field(f, sizeof f, w, e->d_name),
                      bad ? strerror(bad) : "not a regular file");
            errno = bad ? bad : EINVAL;
            rc = ERR_IO;
            break;
        }
        if (nv == cap) {
            cap = cap ? cap * 2 : 16;
            file *nvv = realloc(v, cap * sizeof *v);
            if (!nvv) { rc = ERR_NOMEM; break; }
            v = nvv;
        }
        v[nv++] = (file){start, (uint64_t)st.st_size};
    }
    closedir(d);
    if (rc != ERR_OK) { free(v); return rc; }
    if (nv) qsort(v, nv, sizeof *v, cmp_file);
    *out = v;
    *n = nv;
    return ERR_OK;
}

static void remove_tmps(wal *w)
{
    int fd = dup(w->dirfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) { if (fd >= 0) close(fd); return; }
    rewinddir(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (is_tmp_name(e->d_name)) unlinkat(w->dirfd, e->d_name, 0);
    closedir(d);
}

/* After a successful scan: the live list (every segment up to the one
 * holding the end), the empty files after it that follow in order as
 * future segments (the rest removed), and the segments before `from`
 * released. */
static int settle(wal *w, const file *f, size_t nf, const scan_end *se, uint64_t from)
{
    size_t nlive = se->cur < nf ? se->cur + 1 : nf;
    for (size_t i = 0; i < nlive; i++) {
        int rc = live_push(w, (seg){f[i].start, f[i].size});
        if (rc != ERR_OK) return rc;
        add_disk(w, (int64_t)f[i].size);
    }
    store64(&w->end, se->end);
    if (se->cur < nf) {
        const file *c = &f[se->cur];
        char name[NAME_LEN + 1], fl[4200];
        seg_name(name, c->start);
        /* An empty file shorter than a segment (cut by hand, or by a crash
         * of a creation that was not ours) stays listed with no current
         * segment: the next append makes a full one under its name. */
        if (!(se->end == c->start && c->size < w->seg_bytes)) {
            w->fd = seg_open(w, name, O_RDWR | O_CLOEXEC, 0);
            if (w->fd < 0) {
                int e = errno;
                log_error("cannot open a log segment", "file=%s err=\"%s\"",
                          file_field(fl, sizeof fl, w, name), strerror(e));
                errno = e;
                return ERR_IO;
            }
            w->cur_start = c->start;
            w->cur_span = c->size & ~(uint64_t)7;
            uint64_t d = se->dirty_end;
            if (d > w->cur_start + w->cur_span) d = w->cur_start + w->cur_span;
            w->dirty_end = d > se->end ? d : 0;
        }
    }
    bool changed = false;
    for (size_t i = nlive; i < nf; i++) {
        uint64_t expect = w->nfuture ? w->future[w->nfuture - 1].start + w->future[w->nfuture - 1].size
                                     : after_live(w);
        if (f[i].start == expect && f[i].size == w->seg_bytes && w->nfuture < WAL_SPARES) {
            w->future[w->nfuture++] = (seg){f[i].start, f[i].size};
            add_disk(w, (int64_t)f[i].size);
            continue;
        }
        char name[NAME_LEN + 1];
        seg_name(name, f[i].start);
        if (unlinkat(w->dirfd, name, 0) == 0) changed = true;
    }
    pthread_mutex_lock(&w->mu);
    w->released = from;
    recycle_locked(w);
    pthread_mutex_unlock(&w->mu);
    if (changed && fsync(w->dirfd) != 0)
        log_warn("cannot sync the log directory", "dir=%s err=\"%s\"", w->dir, strerror(errno));
    return ERR_OK;
}

int wal_open(wal **out, const wal_options *o, uint64_t from, wal_replay_fn replay, void *arg)
{
    if (!out) return ERR_INVALID;
    *out = NULL;
    if (!o || !o->dir || !o->dir[0]) return ERR_INVALID;
    uint64_t sb = o->segment_bytes ? o->segment_bytes : WAL_SEGMENT_DEFAULT;
    if (sb < WAL_SEGMENT_MIN || sb > WAL_SEGMENT_MAX) return ERR_INVALID;
    sb &= ~(uint64_t)4095;
    wal *w = calloc(1, sizeof *w);
    if (!w) return ERR_NOMEM;
    w->dir = strdup(o->dir);
    w->dirfd = w->fd = w->next_fd = -1;
    w->seg_bytes = sb;
    if (o->io) w->io = *o->io;
    if (!w->dir || pthread_mutex_init(&w->mu, NULL) != 0) {
        free(w->dir);
        free(w);
        return ERR_NOMEM;
    }
    int rc = make_dirs(w->dir);
    if (rc != ERR_OK) goto fail;
    w->dirfd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        int e = errno;
        log_error("cannot open the log directory", "dir=%s err=\"%s\"", w->dir, strerror(e));
        errno = e;
        rc = ERR_IO;
        goto fail;
    }
    if (flock(w->dirfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        rc = e == EWOULDBLOCK ? ERR_BUSY : ERR_IO;
        log_error("cannot lock the log directory", "dir=%s err=\"%s\"", w->dir,
                  e == EWOULDBLOCK ? "another process or log has it open" : strerror(e));
        errno = e;
        goto fail;
    }
    file *f = NULL;
    size_t nf = 0;
    bool tmps;
    rc = list_files(w, &f, &nf, &tmps);
    if (rc != ERR_OK) goto fail;

    scan_end se = {nf, 0, 0};
    scan s = {.w = w, .r = {.w = w, .fd = -1}, .f = f, .nf = nf, .from = from,
              .replay = replay, .arg = arg};
    if (nf == 0) {
        s.from_ok = from == 0;
    } else if (from < f[0].start) {
        log_error("replay position before the first segment of the message log",
                  "dir=%s from=%" PRIu64 " first=%" PRIu64, w->dir, from, f[0].start);
        rc = ERR_INVALID;
    } else {
        size_t k = 0;
        while (k + 1 < nf && f[k + 1].start <= from) k++;
        rc = scan_log(&s, k, &se);
    }
    if (s.bad_from)
        log_error("replay position is not a record boundary of the message log",
                  "dir=%s from=%" PRIu64, w->dir, from);
    if (rc == ERR_OK && !s.from_ok) {
        log_error("replay position beyond the end of the message log",
                  "dir=%s from=%" PRIu64 " end=%" PRIu64, w->dir, from, se.end);
        rc = ERR_INVALID;
    }
    if (s.r.fd >= 0) close(s.r.fd);
    free(s.r.buf);
    if (rc == ERR_OK) {
        if (tmps) remove_tmps(w);
        rc = settle(w, f, nf, &se, from);
    }
    free(f);
    if (rc != ERR_OK) goto fail;
    *out = w;
    return ERR_OK;
fail:;
    int e = errno;
    wal_close(w);
    errno = e;
    return rc;
}
