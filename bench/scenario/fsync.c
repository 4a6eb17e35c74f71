/* fsync: 200 x (4 KiB pwrite + fdatasync) in --dir: the disk's sync
 * latency, the floor under every durable acknowledgement on this disk.
 */
#include <stdio.h>

#include "lib/disk.h"
#include "scenario/scenario.h"

static int run(bench_run *r)
{
    const bench_opts *o = r->o;
    const char *dir = o->dir ? o->dir : "/tmp";
    char err[600];
    hist h;
    hist_reset(&h);
    if (disk_sync_sample(dir, o->messages, 5 * NS_PER_S, &h, err, sizeof err) < 0) die("%s", err);
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
