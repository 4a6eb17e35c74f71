/* disk: the sync latency of the disk under a directory, the floor under
 * every durable acknowledgement on it.
 *
 * disk_sync_sample() writes a scratch file in the directory (4 KiB pwrite
 * into one of 64 slots, then fdatasync, n times), adds each fdatasync's
 * time to the caller's histogram and removes the file. Bounded in count
 * and time. Nothing is kept between calls.
 */
#ifndef BENCH_DISK_H
#define BENCH_DISK_H

#include <stddef.h>
#include <stdint.h>

#include "lib/hist.h"

/* Up to n samples within budget_ns into h. Returns the number taken, or -1
 * with the reason in err (cap bytes) when the file could not be created. */
int disk_sync_sample(const char *dir, int n, int64_t budget_ns, hist *h, char *err, size_t cap);

#endif
