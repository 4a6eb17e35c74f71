#include "lib/probe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

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

probe_sample probe_take(int pid)
{
    probe_sample s = {.t = now_ns(), .cpu_s = -1, .rss_kb = -1, .anon_kb = -1, .file_kb = -1,
                      .disk_w = -1};
    if (pid > 0) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/status", pid);
        s.cpu_s = probe_cpu_s(pid);
        s.rss_kb = probe_status_field(path, "VmRSS:");
        s.anon_kb = probe_status_field(path, "RssAnon:");
        s.file_kb = probe_status_field(path, "RssFile:");
        snprintf(path, sizeof path, "/proc/%d/io", pid);
        FILE *f = fopen(path, "r");
        char line[128];
        while (f && fgets(line, sizeof line, f))
            if (sscanf(line, "write_bytes: %lld", &s.disk_w) == 1) break;
        if (f) fclose(f);
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
