#include "lib/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/probe.h"

int pool_items_for(int total, int workers, int wid)
{
    return total / workers + (wid < total % workers);
}

static void child(const bench_opts *o, const sock_target *t, const worker_ops *ops, pool_slot *slot,
                  int wid, int cmd_fd, int nitems, unsigned run_id)
{
    worker *w = xcalloc(1, sizeof *w);
    worker_init(w, wid, o, t, ops, &slot->st, nitems * (ops->per_item > 0 ? ops->per_item : 1),
                run_id);
    w->ack_seq = &slot->ack_seq;
    w->failed = &slot->failed;
    if (ops->setup) ops->setup(w, nitems);
    worker_serve(w, cmd_fd);
    worker_free(w);
    free(w);
    _exit(0);
}

void pool_start(pool *p, const bench_opts *o, const sock_target *t, const worker_ops *ops,
                int items, unsigned run_id)
{
    memset(p, 0, sizeof *p);
    p->n = o->workers;
    if (p->n < 1 || p->n > POOL_MAX) die("--workers must be 1..%d", POOL_MAX);
    p->slot = mmap(NULL, sizeof(pool_slot) * (size_t)p->n, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p->slot == MAP_FAILED) die("mmap: %s", strerror(errno));
    memset(p->slot, 0, sizeof(pool_slot) * (size_t)p->n);
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < p->n; i++) {
        int fds[2];
        if (pipe2(fds, O_CLOEXEC) != 0) die("pipe: %s", strerror(errno));
        pid_t pid = fork();
        if (pid < 0) die("fork: %s", strerror(errno));
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
            if (getppid() == 1) _exit(1);
            close(fds[1]);
            for (int j = 0; j < i; j++) close(p->fd[j]);
            child(o, t, ops, &p->slot[i], i, fds[0], pool_items_for(items, p->n, i), run_id);
        }
        close(fds[0]);
        p->pid[i] = pid;
        p->fd[i] = fds[1];
    }
}

int pool_send(pool *p, int op, const int64_t *args)
{
    int seq = ++p->seq;
    for (int i = 0; i < p->n; i++) {
        pool_cmd m = {op, seq, args ? args[i] : 0};
        if (write(p->fd[i], &m, sizeof m) != (ssize_t)sizeof m) die("worker %d is gone", i);
    }
    return seq;
}

bool pool_done(const pool *p, int seq)
{
    for (int i = 0; i < p->n; i++)
        if (p->slot[i].ack_seq < seq) return false;
    return true;
}

bool pool_cmd_all(pool *p, int op, int64_t arg, double timeout_s)
{
    int64_t args[POOL_MAX];
    for (int i = 0; i < p->n; i++) args[i] = arg;
    int seq = pool_send(p, op, args);
    int64_t end = now_ns() + (int64_t)(timeout_s * 1e9);
    while (now_ns() < end) {
        for (int i = 0; i < p->n; i++)
            if (p->slot[i].failed) die("worker %d failed", i);
        if (pool_done(p, seq)) return true;
        for (int i = 0; i < p->n; i++) {
            int st;
            if (p->pid[i] > 0 && waitpid(p->pid[i], &st, WNOHANG) == p->pid[i]) {
                p->pid[i] = 0;
                die("worker %d exited early", i);
            }
        }
        if (p->tick) p->tick(p->tick_arg);
        else sleep_ms(2);
    }
    return false;
}

uint64_t pool_sum(const pool *p, int k)
{
    uint64_t t = 0;
    for (int i = 0; i < p->n; i++) t += stats_get(&p->slot[i].st, k);
    return t;
}

int64_t pool_mark(const pool *p, int k)
{
    int64_t m = 0;
    for (int i = 0; i < p->n; i++) {
        int64_t v = __atomic_load_n(&p->slot[i].st.mark[k], __ATOMIC_RELAXED);
        if (v > m) m = v;
    }
    return m;
}

void pool_hist(const pool *p, int k, hist *out)
{
    hist_reset(out);
    for (int i = 0; i < p->n; i++) hist_merge(out, &p->slot[i].st.h[k]);
}

void pool_reset_hists(pool *p)
{
    for (int i = 0; i < p->n; i++) memset(p->slot[i].st.h, 0, sizeof p->slot[i].st.h);
}

double pool_prov_s(const pool *p)
{
    double m = 0;
    for (int i = 0; i < p->n; i++)
        if (p->slot[i].st.prov_s > m) m = p->slot[i].st.prov_s;
    return m;
}

double pool_cpu_s(const pool *p)
{
    double t = 0;
    for (int i = 0; p && i < p->n; i++)
        if (p->pid[i] > 0) t += probe_cpu_s(p->pid[i]);
    return t + probe_cpu_s(getpid());
}

void pool_stop(pool *p)
{
    if (!p->slot) return;
    for (int i = 0; i < p->n; i++) {
        pool_cmd m = {CMD_EXIT, ++p->seq, 0};
        if (write(p->fd[i], &m, sizeof m) < 0) { /* gone already */
        }
        close(p->fd[i]);
    }
    int64_t end = now_ns() + 20 * NS_PER_S;
    for (int i = 0; i < p->n; i++) {
        while (p->pid[i] > 0 && now_ns() < end) {
            int st;
            if (waitpid(p->pid[i], &st, WNOHANG) == p->pid[i]) p->pid[i] = 0;
            else sleep_ms(10);
        }
        if (p->pid[i] > 0) {
            kill(p->pid[i], SIGKILL);
            waitpid(p->pid[i], NULL, 0);
            p->pid[i] = 0;
        }
    }
    munmap(p->slot, sizeof(pool_slot) * (size_t)p->n);
    p->slot = NULL;
    p->n = 0;
}
