/* fsync: 200 x (4 KiB pwrite + fdatasync) in --dir: the disk's sync
 * latency, the floor under every durable acknowledgement on this disk.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "scenario/scenario.h"

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    const char *dir = o->dir ? o->dir : "/tmp";
    char path[512];
    snprintf(path, sizeof path, "%s/parley-bench-fsync.%d", dir, getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("%s: %s", path, strerror(errno));
    char buf[4096];
    memset(buf, 'f', sizeof buf);
    hist h;
    hist_reset(&h);
    int64_t end = now_ns() + 5 * NS_PER_S;
    for (int i = 0; i < o->messages && now_ns() < end; i++) {
        if (pwrite(fd, buf, sizeof buf, (off_t)(i % 64) * 4096) != (ssize_t)sizeof buf) break;
        int64_t t = now_ns();
        if (fdatasync(fd) != 0) break;
        hist_add(&h, now_ns() - t);
    }
    close(fd);
    unlink(path);
    report_header(r, "disk: 4 KiB pwrite + fdatasync");
    printf("  directory               %s\n", dir);
    report_hist("fdatasync", &h);
    jw_hist(&r->J, "fdatasync", &h);
    return 0;
}

static void defaults(bench_opts *o)
{
    if (!o->messages) o->messages = 200;
}

static int sockets(const bench_opts *o)
{
    return 0;
}

const scenario scenario_fsync = {
    .name = "fsync",
    .usage = "fsync --dir DIR [/tmp] --messages N [200]: the disk's fdatasync latency",
    .kind = "disk",
    .floor_ok = false,
    .needs_server = false,
    .defaults = defaults,
    .sockets = sockets,
    .params = NULL,
    .run = run,
};
