/* probe: the server and the machine, seen from /proc.
 *
 * A sample holds the server process's CPU (/proc/PID/stat, all threads),
 * memory (/proc/PID/status), disk writes (/proc/PID/io) and the machine's
 * kernel memory, listen overflows and busy CPU time. Fields that could not
 * be read are -1. Every buffer is the caller's (or on the stack): nothing
 * here keeps state between calls.
 */
#ifndef BENCH_PROBE_H
#define BENCH_PROBE_H

#include <stdint.h>

#include "lib/jw.h"

typedef struct probe_sample {
    int64_t t;                /* now_ns() when taken */
    double cpu_s;             /* server utime + stime */
    long rss_kb, anon_kb, file_kb;
    long slab_kb;             /* /proc/meminfo Slab (whole machine) */
    long sock_pages;          /* /proc/net/sockstat TCP mem (pages) */
    long long disk_w;         /* write_bytes of /proc/PID/io */
    long long listen_drops;   /* TcpExt ListenOverflows (whole machine) */
    double mach_busy_s;       /* all cores, not idle, from /proc/stat */
} probe_sample;

/* Samples process pid (<= 0: only the machine-wide fields). */
probe_sample probe_take(int pid);

/* utime + stime of pid in seconds, or -1. */
double probe_cpu_s(int pid);

/* 1-minute load average, or -1. */
double probe_loadavg1(void);

/* "some avg10" of /proc/pressure/cpu (percent), or -1 without PSI. */
double probe_cpu_pressure(void);

/* A "Key:" number of a /proc status-style file (kB for memory), or -1. */
long probe_status_field(const char *path, const char *key);

/* Writes "machine": {cores, kernel, cpu, mem_kib}. */
void probe_machine_json(jw *j);

/* Online cores. */
int probe_cores(void);

#endif
