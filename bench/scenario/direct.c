/* direct: P pairs of users, one direct conversation each; one side sends,
 * the other receives (scenario/traffic.h): durable msgs/s, send->ack and
 * send->delivery, server CPU and disk bytes per message beside the stored
 * record's size, group commits; with --dir DIR (the data directory's
 * filesystem) also fdatasync there in the same run. With --floor the pairs
 * are linked by ?pair=N and the floor relays.
 */
#include "scenario/traffic.h"

static void defaults(bench_opts *o)
{
    if (!o->pairs) o->pairs = 100;
    if (!o->window) o->window = 8;
    if (!o->size) o->size = 64;
}

static int sockets(const bench_opts *o)
{
    return 2 * o->pairs;
}

static void params(const bench_opts *o, jw *j)
{
    jw_num(j, "seconds", o->seconds);
    jw_num(j, "pairs", o->pairs);
    traffic_params(o, j);
}

static int run(bench_run *r)
{
    return traffic_run(r, false);
}

const scenario scenario_direct = {
    .name = "direct",
    .usage = "direct --pairs P [100] --seconds S [10], --window W [8] or --rate R: durable msgs/s, "
             "send->ack, send->delivery, disk bytes per message; --dir DIR: fdatasync there, same run",
    .kind = "parleyd",
    .floor_ok = true,
    .needs_server = true,
    .defaults = defaults,
    .sockets = sockets,
    .params = params,
    .run = run,
};
