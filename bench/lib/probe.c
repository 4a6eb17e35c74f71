#include "lib/probe.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "base/err.h"
#include "lib/util.h"

long probe_status_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0) {
            v = atol(line + kl);
            break;
        }
    fclose(f);
    return v;
}

double probe_cpu_s(int pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    /* after ')': state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* utime stime cutime cstime (ticks) and ppid of /proc/PID/stat; false if
 * unreadable. */
static bool stat_times(int pid, int *ppid, unsigned long long *ticks)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    long cut = 0, cst = 0;
    if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %ld %ld", ppid, &ut, &st,
                     &cut, &cst) != 5)
        return false;
    *ticks = ut + st + (unsigned long long)(cut > 0 ? cut : 0) + (unsigned long long)(cst > 0 ? cst : 0);
    return true;
}

double probe_tree_cpu_s(int pid)
{
    int ppid;
    unsigned long long sum, t;
    if (pid <= 0 || !stat_times(pid, &ppid, &sum)) return -1;
    DIR *d = opendir("/proc");
    if (!d) return -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long k = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end || k <= 0 || k == pid) continue;
        if (stat_times((int)k, &ppid, &t) && ppid == pid) sum += t;
    }
    closedir(d);
    return (double)sum / (double)sysconf(_SC_CLK_TCK);
}

static long sock_mem_pages(void)
{
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f) return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        char *m = strstr(line, "TCP:");
        char *p = m ? strstr(line, " mem ") : NULL;
        if (p) {
            v = atol(p + 5);
            break;
        }
    }
    fclose(f);
    return v;
}

/* A TcpExt counter of /proc/net/netstat, or -1. The file holds pairs of
 * lines: names, then values. */
static long long tcpext(const char *name)
{
    FILE *f = fopen("/proc/net/netstat", "r");
    if (!f) return -1;
    char *names = xcalloc(1, 8192), *vals = xcalloc(1, 8192);
    long long v = -1;
    while (fgets(names, 8192, f) && fgets(vals, 8192, f)) {
        if (strncmp(names, "TcpExt:", 7) != 0) continue;
        char *sn, *sv;
        char *n = strtok_r(names, " \n", &sn), *x = strtok_r(vals, " \n", &sv);
        while ((n = strtok_r(NULL, " \n", &sn)) && (x = strtok_r(NULL, " \n", &sv)))
            if (!strcmp(n, name)) {
                v = atoll(x);
                break;
            }
        break;
    }
    fclose(f);
    free(names);
    free(vals);
    return v;
}

/* user+nice+system+irq+softirq+steal of all cores, in seconds. */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return -1;
    unsigned long long u = 0, n = 0, sy = 0, id = 0, io = 0, irq = 0, sirq = 0, st = 0;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &sy, &id, &io, &irq,
                   &sirq, &st);
    fclose(f);
    if (k < 4) return -1;
    return (double)(u + n + sy + irq + sirq + st) / (double)sysconf(_SC_CLK_TCK);
}

int probe_parse_io(const char *text, probe_io *out)
{
    static const struct {
        const char *key;
        size_t off;
    } KEYS[] = {
        {"rchar:", offsetof(probe_io, rchar)},
        {"wchar:", offsetof(probe_io, wchar)},
        {"read_bytes:", offsetof(probe_io, read_bytes)},
        {"write_bytes:", offsetof(probe_io, write_bytes)},
        {"cancelled_write_bytes:", offsetof(probe_io, cancelled_write_bytes)},
    };
    *out = (probe_io){-1, -1, -1, -1, -1};
    const char *p = text;
    for (int lines = 0; *p && lines < 64; lines++) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) : strlen(p);
        for (size_t k = 0; k < sizeof KEYS / sizeof KEYS[0]; k++) {
            size_t kl = strlen(KEYS[k].key);
            if (n <= kl || strncmp(p, KEYS[k].key, kl) != 0) continue;
            const char *v = p + kl;
            while (*v == ' ' || *v == '\t') v++;
            char *e;
            errno = 0;
            long long x = strtoll(v, &e, 10);
            bool none = e == v;
            while (e < p + n && (*e == ' ' || *e == '\t' || *e == '\r')) e++;
            if (none || errno || x < 0 || e != p + n) return ERR_INVALID;
            *(long long *)((char *)out + KEYS[k].off) = x;
        }
        p += n;
        if (*p == '\n') p++;
    }
    return out->wchar >= 0 && out->write_bytes >= 0 ? ERR_OK : ERR_INVALID;
}

int probe_read_io(int pid, probe_io *out)
{
    *out = (probe_io){-1, -1, -1, -1, -1};
    if (pid <= 0) return ESRCH;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/io", pid);
    FILE *f = fopen(path, "r");
    if (!f) return errno ? errno : EIO;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int err = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (err) return err;
    buf[n] = 0;
    return probe_parse_io(buf, out) == ERR_OK ? 0 : EINVAL;
}

const char *probe_io_problem(int pid, int err, char *buf, size_t cap)
{
    const char *why = err == EACCES || err == EPERM
                          ? "not permitted: the server is another user's process (or not dumpable), "
                            "so its disk writes are not the bench's to read"
                      : err == ENOENT || err == ESRCH ? "no such process (is --pid the server?)"
                      : err == EINVAL                 ? "its text did not parse"
                                                      : "unexpected error";
    snprintf(buf, cap, "cannot read /proc/%d/io (%s): %s", pid, strerror(err), why);
    return buf;
}

int probe_parse_blkstat(const char *text, long long *bytes)
{
    const char *p = text;
    unsigned long long v = 0;
    for (int i = 0; i < 7; i++) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p < '0' || *p > '9') return ERR_INVALID;
        char *end;
        errno = 0;
        v = strtoull(p, &end, 10);
        if (errno || (*end != ' ' && *end != '\t' && *end != '\n' && *end)) return ERR_INVALID;
        p = end;
    }
    if (v > (unsigned long long)INT64_MAX / 512) return ERR_INVALID;
    *bytes = (long long)v * 512;
    return ERR_OK;
}

unsigned long probe_storage_dev(int pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", pid);
    DIR *d = opendir(dir);
    if (!d) return 0;
    unsigned long dev = 0;
    for (struct dirent *e; !dev && (e = readdir(d));) {
        char path[320], target[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n < 5) continue;
        target[n] = 0;
        if (strcmp(target + n - 4, ".mdb") && strcmp(target + n - 4, ".wal")) continue;
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) dev = (unsigned long)st.st_dev;
    }
    closedir(d);
    return dev;
}

long long probe_dev_written(unsigned long dev)
{
    if (!dev) return -1;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/sys/dev/block/%u:%u/stat", major(dev), minor(dev));
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    long long b;
    return probe_parse_blkstat(buf, &b) == ERR_OK ? b : -1;
}

probe_sample probe_take(int pid)
{
    probe_sample s = {.t = now_ns(), .cpu_s = -1, .rss_kb = -1, .anon_kb = -1, .file_kb = -1,
                      .disk_w = -1, .wchar = -1, .disk_cancel = -1, .dev_w = -1,
                      .io_err = ESRCH};
    if (pid > 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/status", pid);
        s.cpu_s = probe_cpu_s(pid);
        s.rss_kb = probe_status_field(path, "VmRSS:");
        s.anon_kb = probe_status_field(path, "RssAnon:");
        s.file_kb = probe_status_field(path, "RssFile:");
        probe_io io;
        s.io_err = probe_read_io(pid, &io);
        if (!s.io_err) {
            s.disk_w = io.write_bytes;
            s.wchar = io.wchar;
            s.disk_cancel = io.cancelled_write_bytes;
        }
        s.dev_w = probe_dev_written(probe_storage_dev(pid));
    }
    s.slab_kb = probe_status_field("/proc/meminfo", "Slab:");
    s.mach_busy_s = machine_busy_s();
    s.listen_drops = tcpext("ListenOverflows");
    s.sock_pages = sock_mem_pages();
    return s;
}

double probe_loadavg1(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

double probe_cpu_pressure(void)
{
    double v = -1;
    FILE *f = fopen("/proc/pressure/cpu", "r");
    if (f) {
        if (fscanf(f, "some avg10=%lf", &v) != 1) v = -1;
        fclose(f);
    }
    return v;
}

int probe_cores(void)
{
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

void probe_machine_json(jw *j)
{
    struct utsname u;
    uname(&u);
    char model[128] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *c = strchr(line, ':');
            if (c) snprintf(model, sizeof model, "%s", c + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    }
    if (f) fclose(f);
    jw_open(j, "machine");
    jw_num(j, "cores", probe_cores());
    jw_str(j, "kernel", u.release);
    jw_str(j, "cpu", model);
    jw_num(j, "mem_kib", (double)probe_status_field("/proc/meminfo", "MemTotal:"));
    jw_close(j);
}
