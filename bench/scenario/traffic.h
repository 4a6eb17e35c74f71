/* traffic: the message traffic shared by the direct and group scenarios.
 *
 * Items are pairs (direct: the first sends, the second receives) or groups
 * of G members (the first S send). Senders run flat out (--window W
 * unacknowledged each) or paced (--rate R msgs/s in total, split over the
 * workers, open loop: latency is measured from the intended send time, so
 * a slow server cannot hide behind coordinated omission). Every ack gives
 * send->ack, every msg send->delivery; in a group the delivery to the last
 * of the G-1 members gives the fan-out latency.
 *
 * Against parleyd a run also gives the server's disk bytes per acked
 * message from /proc/PID/io (write_bytes, wchar), over the measured seconds
 * and up to when its writes settle after them, beside the stored record's
 * size (the mean cmid + body sent plus the fixed fields); with --dir DIR
 * the fdatasync latency of DIR's disk, sampled right before and right
 * after the traffic (the same run's floor under an ack).
 */
#ifndef BENCH_TRAFFIC_H
#define BENCH_TRAFFIC_H

#include "scenario/scenario.h"

/* The parent's side of a direct (group false) or group run. */
int traffic_run(bench_run *r, bool group);

/* What a cluster run adds around the measured seconds (scenario/cluster.c).
 * With a hook the single-server rows (server CPU, the machine's split, the
 * writer, disk bytes: the store is PostgreSQL, another process) are left to
 * it. */
typedef struct traffic_hook {
    /* right before the senders start, and right after the measured seconds */
    void (*begin)(void *arg);
    void (*end)(void *arg);
    /* after the traffic's rows: its own rows and figures into r->J, for msgs
     * acked and deliveries over dt seconds, the load generator having used
     * bench_s CPU seconds */
    void (*report)(void *arg, bench_run *r, double msgs, double deliveries, double dt, double bench_s);
    void *arg;
} traffic_hook;

/* traffic_run with a hook (NULL: as traffic_run). */
int traffic_run_hooked(bench_run *r, bool group, const traffic_hook *h);

/* Parameters both write (mode, rate, window, body_bytes). */
void traffic_params(const bench_opts *o, jw *j);

#endif
