/* probe: the server and the machine, seen from /proc.
 *
 * A sample holds the server process's CPU (/proc/PID/stat, all threads),
 * memory (/proc/PID/status), I/O (/proc/PID/io: bytes it caused to be
 * written to storage, and bytes it passed to write calls) and the
 * machine's kernel memory, listen overflows and busy CPU time. Fields that
 * could not be read are -1; why /proc/PID/io could not be read is kept as
 * an errno. Every buffer is the caller's (or on the stack): nothing here
 * keeps state between calls.
 */
#ifndef BENCH_PROBE_H
#define BENCH_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "lib/jw.h"

/* The counters of /proc/PID/io (see proc(5)); -1 when a line is absent. */
typedef struct probe_io {
    long long rchar, wchar;            /* bytes passed to read / write calls */
    long long read_bytes, write_bytes; /* bytes fetched from / sent to storage */
    long long cancelled_write_bytes;   /* dirty page cache dropped before writeback */
} probe_io;

/* Parses the text of /proc/PID/io (NUL-terminated). ERR_OK when it holds
 * at least wchar and write_bytes, else ERR_INVALID (unknown lines are
 * ignored; a line whose number does not parse is an error). */
int probe_parse_io(const char *text, probe_io *out);

/* Reads /proc/PID/io into *out: 0, or the errno of the failure (EINVAL
 * when the text did not parse). */
int probe_read_io(int pid, probe_io *out);

/* Why the I/O of pid could not be measured (err from probe_read_io), in
 * words, into buf: the output prints this instead of a figure. */
const char *probe_io_problem(int pid, int err, char *buf, size_t cap);

/* Bytes written to a block device so far: "sectors written" (the 7th
 * number) of the text of /sys/dev/block/MAJ:MIN/stat (see the kernel's
 * Documentation/block/stat.rst), times 512. ERR_OK and *bytes, or
 * ERR_INVALID (fewer than 7 numbers, a bad one). */
int probe_parse_blkstat(const char *text, long long *bytes);

/* The block device (st_dev) holding the files the process has open for
 * its storage: the first regular file among /proc/PID/fd whose name ends
 * in ".mdb" or ".wal" (parleyd's store and log); 0 when none is found. */
unsigned long probe_storage_dev(int pid);

/* Bytes written to device dev so far (probe_parse_blkstat of its stat
 * file), or -1. The counter is the device's: every process on the
 * machine writing to it counts. */
long long probe_dev_written(unsigned long dev);

typedef struct probe_sample {
    int64_t t;                /* now_ns() when taken */
    double cpu_s;             /* server utime + stime */
    long rss_kb, anon_kb, file_kb;
    long slab_kb;             /* /proc/meminfo Slab (whole machine) */
    long sock_pages;          /* /proc/net/sockstat TCP mem (pages) */
    long long disk_w;         /* write_bytes of /proc/PID/io */
    long long wchar;          /* wchar of /proc/PID/io */
    long long disk_cancel;    /* cancelled_write_bytes of /proc/PID/io */
    long long dev_w;          /* bytes written to the device of the server's storage
                               * (probe_storage_dev), by every process; -1 unknown */
    int io_err;               /* 0, or why /proc/PID/io was not read (errno) */
    long long listen_drops;   /* TcpExt ListenOverflows (whole machine) */
    double mach_busy_s;       /* all cores, not idle, from /proc/stat */
} probe_sample;

/* Samples process pid (<= 0: only the machine-wide fields). */
probe_sample probe_take(int pid);

/* utime + stime of pid in seconds, or -1. */
double probe_cpu_s(int pid);

/* CPU seconds of a process and its children: utime + stime + cutime +
 * cstime of pid (cutime: its children that ended and were reaped), plus the
 * same of every live process whose parent is pid (one /proc scan). For
 * PostgreSQL's postmaster that is the whole server: its backends and
 * auxiliary processes are its children, and a backend that exits moves
 * into the postmaster's cutime, so the sum does not drop. -1 when pid
 * cannot be read. */
double probe_tree_cpu_s(int pid);

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
