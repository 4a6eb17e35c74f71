/* wal: the durable message log, an append-only sequence of checksummed
 * records in segment files. A batch of records is appended with one write
 * and made durable with one fdatasync: that is where a message is
 * acknowledged. The store applies the log to LMDB later (off the ack path)
 * and releases what LMDB holds durably, and the log recycles those
 * segments. On open the records past the applied position are replayed.
 *
 * Positions (LSN): a 64-bit byte position in the logical log, growing
 * forever, always a multiple of 8. A segment file DIR/%016llx.wal is named
 * by the LSN of its first byte and is `segment_bytes` long; a batch never
 * spans two segments (when the rest of a segment cannot hold it, the next
 * batch starts the next segment: the LSN jumps to that segment's start,
 * which is this segment's start plus its file size).
 *
 * Record (all integers little-endian):
 *   u32 len       payload bytes (1 .. WAL_RECORD_MAX)
 *   u32 crc       CRC-32C of the record's LSN (u64) followed by the payload
 *   payload       len bytes, then zero padding to a multiple of 8
 * The LSN inside the checksum makes stale bytes of a recycled segment, or a
 * record copied to another place, fail the check.
 * Two more headers end the records of a segment:
 *   - end of segment: len 0 and crc = CRC-32C of its LSN followed by the
 *     next segment's start (u64). Written (and synced) when a batch moves
 *     on to the next segment, so a reader tells a segment left with room to
 *     spare from a segment whose records stop early, and a missing next
 *     segment from the one that follows;
 *   - end of log: 8 zero bytes. Every append writes one just past its last
 *     record (when the segment has room), so a log that stopped cleanly
 *     ends in one even in a recycled segment; anything else where the
 *     records stop is a torn append.
 * A segment whose records reach its end needs neither.
 *
 * Recovery, on open:
 *   - a record that fails its check (or a zero len) where nothing valid
 *     follows is the torn tail of an interrupted append: the log is cut
 *     there (logged at warn, with file and offset, unless it is a clean end
 *     of log) and appending resumes at that position. Records of a torn
 *     batch that came before the tear are whole and are replayed: they
 *     were never acknowledged, so a replay may or may not hold them;
 *   - a record that fails its check but is followed by a valid record (the
 *     one at its declared end, or a later segment that holds records) is
 *     corruption in the middle: wal_open() fails with ERR_CORRUPT and logs
 *     the file and the byte offset; nothing is cut or changed. So is an
 *     end-of-segment header that names another next segment than the one
 *     present (a segment is missing).
 *   A bad len that hides the records behind it in the same segment reads as
 *   a torn tail: only what its declared end and the later segments show can
 *   tell corruption from a torn write (a scan for any valid record further
 *   on would also refuse to start after a power loss that wrote the pages
 *   of the last batch out of order).
 *
 * Failed appends: the bytes a failed append may have left on disk (a short
 * write, a write whose fdatasync failed) are overwritten by the next
 * append at the same position, which also writes zeros over whatever of
 * them its own batch does not cover, in the same write and the same
 * fdatasync. So a failed batch never comes back on a later open once an
 * append after it has succeeded (until then, as after a crash, its records
 * may be found: it was never acknowledged). After a failed fdatasync
 * Linux may mark the dirty pages clean without writing them; every byte
 * that was in doubt is written again by that next append, so the log keeps
 * the segment (a new one would still need an end-of-segment header written
 * into the doubtful one) and a region that keeps failing keeps answering
 * ERR_IO.
 *
 * Threads (who may call what, concurrently):
 *   - one thread appends (the logger): wal_append() is never called from
 *     two threads at once, and only that thread calls it;
 *   - wal_prepare(), wal_release(), wal_end() and wal_disk_bytes() may be
 *     called from any other thread (the writer: the applier) while
 *     appends go on, and from several threads at once;
 *   - wal_open() and wal_close() run alone: nothing else is called on the
 *     log during them (wal_close() after every other thread is done).
 *   Creating a segment file (wal_prepare(), or the append that needs one
 *   not prepared) and wal_release() take one mutex, and hold it while
 *   they create, rename or remove files; an append takes it only when it
 *   moves to the next segment (it waits there for a creation under way,
 *   then uses that file). The wal_io functions are called from the thread
 *   that appends and from the thread that prepares, possibly at once. Not
 *   a codec: does I/O.
 *
 * Memory: the caller owns every payload it passes; replay hands payloads
 * valid only during the callback.
 */
#ifndef PARLEY_WAL_H
#define PARLEY_WAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "base/err.h"

#define WAL_RECORD_MAX (32u << 20)          /* one record's payload bytes (a 16 MiB
                                               message and its batch fit) */
#define WAL_SEGMENT_MIN (1u << 20)          /* smallest segment_bytes */
#define WAL_SEGMENT_MAX (1ull << 40)        /* largest segment_bytes */
#define WAL_SEGMENT_DEFAULT (64u << 20)
#define WAL_SPARES 2                        /* recycled segments kept for reuse */

typedef struct wal wal;

/* I/O seam for fault injection in tests (as SQLite's test VFS): when set,
 * the log calls these instead of pwritev(2)/fdatasync(2), for appends and
 * for writing a new segment's zeros. They return what the system calls
 * return (-1 with errno set on failure; pwritev may write less than asked,
 * and the log writes the rest). Either may be NULL: the system call. */
typedef struct wal_io {
    ssize_t (*pwritev)(void *arg, int fd, const struct iovec *iov, int n, off_t off);
    int (*fdatasync)(void *arg, int fd);
    void *arg;
} wal_io;

typedef struct wal_options {
    const char *dir;             /* created if missing (with its parents) */
    uint64_t segment_bytes;      /* 0: WAL_SEGMENT_DEFAULT; WAL_SEGMENT_MIN ..
                                  * WAL_SEGMENT_MAX, rounded down to 4 KiB */
    const wal_io *io;            /* NULL: the real system calls (copied) */
} wal_options;

/* Called once per record at or after `from`, in log order. A non-zero
 * return stops the replay and is returned by wal_open(). */
typedef int (*wal_replay_fn)(void *arg, uint64_t lsn, const void *payload, size_t len);

/* Opens (creating if needed) the log in o->dir and replays every record
 * whose LSN is >= from (the store's applied position: a record boundary,
 * an end-of-segment header's position, a segment start, or the end of the
 * log). Segments that end at or before `from` are released, as
 * wal_release(from) does. Returns ERR_OK and *out; ERR_CORRUPT (a bad
 * record before the tail, or a missing segment: logged with file and
 * offset); ERR_INVALID (bad options; `from` beyond the log's end, inside a
 * record, or before the first segment; an empty directory is an empty
 * log, which only from = 0 fits); ERR_BUSY (another open wal, of any
 * process, has the directory); ERR_IO (errno then tells); ERR_NOMEM. The
 * callback may have run for some records before an error is found. */
int wal_open(wal **out, const wal_options *o, uint64_t from, wal_replay_fn replay, void *arg);

/* Appends n records (payloads iov[0..n-1], each 1..WAL_RECORD_MAX bytes)
 * as one write, then fdatasync. On ERR_OK they are durable and *end (may
 * be NULL) is the LSN just past the last; the batch's first record is at
 * *end minus its framed size. ERR_DISK_FULL: no space on the device
 * (ENOSPC or EDQUOT, also when creating the next segment); ERR_IO: another
 * error (errno tells). After an error nothing of the batch counts: the
 * next append writes at the same position, and the log stays usable.
 * ERR_INVALID: n = 0, an empty record or a NULL payload; ERR_TOO_LARGE: a
 * record over WAL_RECORD_MAX, or the batch (framed: 8 bytes per record
 * plus the padded payloads) over segment_bytes. */
int wal_append(wal *w, const struct iovec *iov, size_t n, uint64_t *end);

/* Makes the segment the log moves to next ready (a spare, or a new file
 * written now: 64 MiB of zeros by default) once the current one is half
 * full (or at once when there is none yet), so that the append that fills
 * it does not create a file before its write. Any thread, beside a
 * concurrent wal_append() (see Threads): the writer calls it from the
 * applier after each commit, and once at start. Correctness never depends
 * on it: an append that finds no next segment ready creates it itself.
 * ERR_OK (also when nothing was due); ERR_DISK_FULL when the filesystem
 * has no room for a whole segment (then nothing is tried: a partial file
 * would take the last free blocks) or the creation ran out; ERR_IO,
 * ERR_NOMEM. After an error the append tries again when it needs the
 * segment. */
int wal_prepare(wal *w);

/* The LSN the next append starts at (or just past the last record).
 * Any thread. */
uint64_t wal_end(const wal *w);

/* Everything before lsn is durable elsewhere: segments that end at or
 * before it may be recycled (renamed to a future segment's name, up to
 * WAL_SPARES of them, or removed). The segment being appended to is
 * kept. Any thread. */
void wal_release(wal *w, uint64_t lsn);

/* Bytes the log holds in its segment files now, spares included (for
 * metrics). Any thread. */
uint64_t wal_disk_bytes(const wal *w);

/* Closes the files (no write: every acknowledged append is durable). NULL
 * is a no-op. */
void wal_close(wal *w);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (0 to start):
 * wal_crc32c(wal_crc32c(0, a, n), b, m) is the CRC of a then b. */
uint32_t wal_crc32c(uint32_t crc, const void *p, size_t n);

#endif
