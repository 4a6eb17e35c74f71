/* wal: the durable message log, an append-only sequence of checksummed
 * records in segment files. A batch of records is appended with one write
 * and made durable with one fdatasync: that is where a message is
 * acknowledged. The store applies the log to LMDB later (off the ack path)
 * and releases what LMDB holds durably, and the log recycles those
 * segments. On open the records past the applied position are replayed.
 *
 * Positions (LSN): a 64-bit byte position in the logical log, growing
 * forever. A segment file DIR/%016llx.wal is named by the LSN of its first
 * byte and is `segment_bytes` long; a batch never spans two segments (when
 * the rest of a segment cannot hold it, the next batch starts the next
 * segment: the LSN jumps to that segment's start).
 *
 * Record (all integers little-endian):
 *   u32 len       payload bytes (1 .. WAL_RECORD_MAX)
 *   u32 crc       CRC-32C of the record's LSN (u64) followed by the payload
 *   payload       len bytes, then zero padding to a multiple of 8
 * The LSN inside the checksum makes stale bytes of a recycled segment, or a
 * record copied to another place, fail the check.
 *
 * Recovery, on open:
 *   - a record that fails its check (or a zero len) where nothing valid
 *     follows is the torn tail of an interrupted append: the log is cut
 *     there (logged at warn, with file and offset) and appending resumes at
 *     that position;
 *   - a record that fails its check but is followed by a valid record (the
 *     one at its declared end, or a later segment that holds records) is
 *     corruption in the middle: wal_open() fails with ERR_CORRUPT and logs
 *     the file and the byte offset; nothing is cut or changed.
 *
 * Threads: one thread appends (the logger); wal_release() and the stats
 * may be called from another thread (the applier). Not a codec: does I/O.
 *
 * Memory: the caller owns every payload it passes; replay hands payloads
 * valid only during the callback.
 */
#ifndef PARLEY_WAL_H
#define PARLEY_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "base/err.h"

#define WAL_RECORD_MAX (16u << 20)          /* one record's payload bytes */
#define WAL_SEGMENT_MIN (1u << 20)          /* smallest segment_bytes */
#define WAL_SEGMENT_DEFAULT (64u << 20)

typedef struct wal wal;

/* I/O seam for fault injection in tests (as SQLite's test VFS): when set,
 * the log calls these instead of pwritev(2)/fdatasync(2). They return what
 * the system calls return (-1 with errno set on failure). */
typedef struct wal_io {
    ssize_t (*pwritev)(void *arg, int fd, const struct iovec *iov, int n, off_t off);
    int (*fdatasync)(void *arg, int fd);
    void *arg;
} wal_io;

typedef struct wal_options {
    const char *dir;             /* created if missing */
    uint64_t segment_bytes;      /* 0: WAL_SEGMENT_DEFAULT; at least WAL_SEGMENT_MIN */
    const wal_io *io;            /* NULL: the real system calls */
} wal_options;

/* Called once per record at or after `from`, in log order. A non-zero
 * return stops the replay and is returned by wal_open(). */
typedef int (*wal_replay_fn)(void *arg, uint64_t lsn, const void *payload, size_t len);

/* Opens (creating if needed) the log in o->dir and replays every record
 * whose LSN is >= from (the store's applied position: a record boundary
 * or a segment start). Returns ERR_OK and *out, ERR_CORRUPT (a bad record
 * before the tail: logged with file and offset), ERR_INVALID (bad
 * options, or `from` beyond the log's end), ERR_IO (errno then tells). */
int wal_open(wal **out, const wal_options *o, uint64_t from, wal_replay_fn replay, void *arg);

/* Appends n records (payloads iov[0..n-1], each 1..WAL_RECORD_MAX bytes)
 * as one write, then fdatasync. On ERR_OK they are durable and *end is
 * the LSN just past the last. ERR_DISK_FULL: no space on the device
 * (ENOSPC or EDQUOT); ERR_IO: another error (errno tells). After an error nothing of
 * the batch counts: the next append writes at the same position, and the
 * log stays usable. ERR_TOO_LARGE: the batch (framed) exceeds a segment. */
int wal_append(wal *w, const struct iovec *iov, size_t n, uint64_t *end);

/* The LSN the next append starts at (or just past the last record). */
uint64_t wal_end(const wal *w);

/* Everything before lsn is durable elsewhere: segments that end at or
 * before it may be recycled (renamed for reuse, or removed). Any thread. */
void wal_release(wal *w, uint64_t lsn);

/* Bytes the log holds in its segment files now (for metrics). Any thread. */
uint64_t wal_disk_bytes(const wal *w);

void wal_close(wal *w);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start). */
uint32_t wal_crc32c(uint32_t crc, const void *p, size_t n);

#endif
