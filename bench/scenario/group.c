/* group: N groups of G users, S senders each (scenario/traffic.h):
 * deliveries/s, fan-out latency (send -> the last of the G-1 members),
 * server CPU per delivery.
 */
#include "scenario/traffic.h"

static void defaults(bench_opts *o)
{
    if (!o->groups) o->groups = 10;
    if (!o->gsize) o->gsize = 100;
    if (o->gsize < 2) o->gsize = 2;
    if (!o->senders) o->senders = 1;
    if (o->senders > o->gsize) o->senders = o->gsize;
    if (!o->window) o->window = 4;
    if (!o->size) o->size = 64;
}

static int sockets(const bench_opts *o)
{
    return o->groups * o->gsize;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "seconds", o->seconds);
    jw_num(j, "groups", o->groups);
    jw_num(j, "group_size", o->gsize);
    jw_num(j, "senders", o->senders);
    traffic_params(o, j);
}

static int run(bench_run *r)
{
    return traffic_run(r, true);
}

const scenario scenario_group = {
    .name = "group",
    .usage = "group --groups N [10] --group-size G [100] --senders S [1], --window W [4] or --rate R: "
             "deliveries/s, fan-out latency; --dir DIR: fdatasync there",
    .kind = "parleyd",
    .floor_ok = false,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
