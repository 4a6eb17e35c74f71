#include "lib/disk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/util.h"

int disk_sync_sample(const char *dir, int n, int64_t budget_ns, hist *h, char *err, size_t cap)
{
    char path[512];
    snprintf(path, sizeof path, "%s/parley-bench-fsync.%d", dir, getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    char buf[4096];
    memset(buf, 'f', sizeof buf);
    int64_t end = now_ns() + budget_ns;
    int taken = 0;
    for (int i = 0; i < n && now_ns() < end; i++) {
        if (pwrite(fd, buf, sizeof buf, (off_t)(i % 64) * 4096) != (ssize_t)sizeof buf) break;
        int64_t t = now_ns();
        if (fdatasync(fd) != 0) break;
        hist_add(h, now_ns() - t);
        taken++;
    }
    close(fd);
    unlink(path);
    return taken;
}
