/*
 * harness.c - the machinery of the upager benchmark: the forked child of
 * each run and the pipe its result comes back through, the measurement of
 * a phase, the memory of each system, the memory cgroups, and the
 * aggregation of the runs.  The workloads are in wl_*.c and floor.c, the
 * tables in report.c, the options and the schedule in main.c.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upager.h"
#include "harness.h"

/* ------------------------------------------------------------------------
 * Systems, workloads, options
 * ---------------------------------------------------------------------- */

const char *const bench_sys_name[NSYS] = {"upager", "malloc", "kmmap", "read", "pread"};

#define PAGED (B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP))
const struct wl_def bench_wls[NWL] = {
    [WL_SEQ] = {"seq", "sequential write, then read, of one array of 4x budget",
                PAGED | B(SYS_PREAD), {"write", "read", "read-cold", NULL}, bench_wl_seq},
    [WL_SEQ2] = {"seq2", "the same from two threads, each on its own half of the array",
                 PAGED, {"write", "read", NULL}, bench_wl_seq2},
    [WL_RAND] = {"rand", "uniform random 8-byte reads over 4x budget (after a fill)",
                 PAGED, {"read", NULL}, bench_wl_rand},
    [WL_HOTCOLD] = {"hotcold", "hot set of budget/2 re-read between chunks of a cold scan (4x budget, twice)",
                    PAGED, {"mixed", NULL}, bench_wl_hotcold},
    [WL_HOTCOLD2] = {"hotcold2", "the same from two threads, each on its own half of the hot set and of the cold array",
                     PAGED, {"mixed", NULL}, bench_wl_hotcold2},
    [WL_FIT] = {"fit", "data that fits (budget/2), after first touch: RMW passes (2 GiB in all) + random reads",
                PAGED, {"rw", NULL}, bench_wl_fit},
    [WL_SORT] = {"sort", "sort 4x budget of uint64: introsort chunks of budget/4, k-way merge into a 2nd array",
                 PAGED, {"chunks", "merge", "total", NULL}, bench_wl_sort},
    [WL_THR1] = {"thr1", "random reads on two arrays of 2x budget, one thread",
                 PAGED, {"read", NULL}, bench_wl_thr1},
    [WL_THR2] = {"thr2", "the same reads from two threads, one array each",
                 PAGED, {"read", NULL}, bench_wl_thr2},
    [WL_FILE] = {"file", "read-only file of 4x budget scanned once, cache dropped before",
                 B(SYS_UPAGER) | B(SYS_KMMAP) | B(SYS_READ), {"scan", NULL}, bench_wl_file},
};

const char *bench_wl_name(int wl)
{
    if (wl >= 0 && wl < NWL)
        return bench_wls[wl].name;
    return wl == WL_SWEEP ? "sweep" : wl == WL_FLOOR ? "floor" : wl == WL_DEVICE ? "device" : "probe";
}

struct bench_options bench_opt;

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void bench_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("upager_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

char *bench_fmt_size(char *buf, size_t len, double bytes)
{
    if (bytes >= GiB && fmod(bytes, GiB) == 0)
        snprintf(buf, len, "%.0fG", bytes / GiB);
    else if (bytes >= MiB && fmod(bytes, MiB) == 0)
        snprintf(buf, len, "%.0fM", bytes / MiB);
    else if (bytes >= KiB && fmod(bytes, KiB) == 0)
        snprintf(buf, len, "%.0fK", bytes / KiB);
    else
        snprintf(buf, len, "%.0f", bytes);
    return buf;
}

/* 0 past the end of a value; reads "Key:   123 kB" and "key 123" lines. */
static uint64_t proc_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    size_t kl = strlen(key);
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && (line[kl] == ':' || line[kl] == ' ')) {
            v = strtoull(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static int read_str(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return 0;
}

/* Creates an unlinked temporary file in the bench directory. */
int bench_tmpfile_fd(void)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/upager-bench-XXXXXX", bench_opt.dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    unlink(path);
    return fd;
}

struct result *bench_res; /* the child's result (in the child) */
static int result_fd = -1; /* the pipe to the parent (in the child) */

/* Sends the whole result so far: after each phase, so that the phases done
 * before a crash or a timeout are kept, and at the end (ok != 0). */
void bench_child_send(void)
{
    const char *p = (const char *)bench_res;
    size_t left = sizeof *bench_res;
    while (left) {
        ssize_t w = write(result_fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(3);
        p += w;
        left -= (size_t)w;
    }
}

void bench_child_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (bench_res->ok >= 0) {
        vsnprintf(bench_res->err, sizeof bench_res->err, fmt, ap);
        bench_res->ok = -1;
    }
    va_end(ap);
}

/* ------------------------------------------------------------------------
 * Phase measurement (in the child)
 * ---------------------------------------------------------------------- */

struct snap {
    double t;
    struct rusage ru;
    uint64_t io_rd, io_wr;
    struct upager_stats st;
};

int bench_sys;                /* the system of this child */
size_t bench_budget, bench_data; /* its sizes */

static void snap_take(struct snap *s, bool end)
{
    if (end)
        s->t = bench_now();
    getrusage(RUSAGE_SELF, &s->ru);
    s->io_rd = proc_field("/proc/self/io", "read_bytes");
    s->io_wr = proc_field("/proc/self/io", "write_bytes");
    if (bench_sys == SYS_UPAGER)
        upager_get_stats(&s->st);
    else
        memset(&s->st, 0, sizeof s->st);
    if (!end)
        s->t = bench_now();
}

static double tv_sec(const struct timeval *tv) { return (double)tv->tv_sec + (double)tv->tv_usec * 1e-6; }

static struct snap ph_begin_snap;

void bench_ph_begin(void) { snap_take(&ph_begin_snap, false); }

struct phase *bench_ph_end(const char *name, uint64_t ops, uint64_t sum, uint64_t bad)
{
    struct snap e;
    snap_take(&e, true);
    struct snap *b = &ph_begin_snap;
    if (bench_res->nph >= MAXPH)
        return NULL;
    struct phase *p = &bench_res->ph[bench_res->nph++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->sec = e.t - b->t;
    p->cpu = tv_sec(&e.ru.ru_utime) + tv_sec(&e.ru.ru_stime) - tv_sec(&b->ru.ru_utime) -
             tv_sec(&b->ru.ru_stime);
    p->minflt = e.ru.ru_minflt - b->ru.ru_minflt;
    p->majflt = e.ru.ru_majflt - b->ru.ru_majflt;
    p->io_rd = e.io_rd - b->io_rd;
    p->io_wr = e.io_wr - b->io_wr;
    if (bench_sys == SYS_UPAGER) {
        p->faults = e.st.faults - b->st.faults;
        p->major = e.st.major_faults - b->st.major_faults;
        p->st_rd = e.st.bytes_read - b->st.bytes_read;
        p->st_wr = e.st.bytes_written - b->st.bytes_written;
        p->evictions = e.st.evictions - b->st.evictions;
        p->writebacks = e.st.writebacks - b->st.writebacks;
    } else {
        p->faults = p->minflt + p->majflt;
        p->major = p->majflt;
    }
    p->ops = ops;
    p->sum = sum;
    p->bad = bad;
    if (bad)
        bench_child_fail("%s: %" PRIu64 " words read back wrong", name, bad);
    bench_res->hwm = proc_field("/proc/self/status", "VmHWM") * KiB;
    bench_res->rss_file = proc_field("/proc/self/status", "RssFile") * KiB;
    bench_child_send();
    return p;
}

/* ------------------------------------------------------------------------
 * Memory of each system (in the child)
 * ---------------------------------------------------------------------- */

void *bench_mem_alloc(size_t n)
{
    void *p = NULL;
    switch (bench_sys) {
    case SYS_UPAGER:
        p = upager_malloc(n);
        if (!p)
            bench_child_fail("upager_malloc(%zu): %s", n, strerror(errno));
        return p;
    case SYS_MALLOC:
    case SYS_READ:
    case SYS_PREAD:
        p = malloc(n);
        if (!p)
            bench_child_fail("malloc(%zu): %s", n, strerror(errno));
        return p;
    case SYS_KMMAP: {
        int fd = bench_tmpfile_fd();
        if (fd < 0) {
            bench_child_fail("temporary file in %s: %s", bench_opt.dir, strerror(errno));
            return NULL;
        }
        if (ftruncate(fd, (off_t)n) != 0) {
            bench_child_fail("ftruncate: %s", strerror(errno));
            close(fd);
            return NULL;
        }
        p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED) {
            bench_child_fail("mmap: %s", strerror(errno));
            return NULL;
        }
        return p;
    }
    }
    return NULL;
}

void bench_mem_free(void *p, size_t n)
{
    if (!p)
        return;
    switch (bench_sys) {
    case SYS_UPAGER: upager_free(p); break;
    case SYS_KMMAP: munmap(p, n); break;
    default: free(p); break;
    }
}

/* Random-access advice before a random-read phase (unless --no-advice): the
 * paged systems are told, malloc needs nothing. */
void bench_advise_random(void *p, size_t n)
{
    if (bench_opt.no_advice)
        return;
    if (bench_sys == SYS_UPAGER) {
        int e = upager_advise(p, n, UPAGER_ADVICE_RANDOM);
        if (e)
            bench_child_fail("upager_advise(RANDOM): %s", strerror(e));
    } else if (bench_sys == SYS_KMMAP) {
        if (madvise(p, n, MADV_RANDOM) != 0)
            bench_child_fail("madvise(MADV_RANDOM): %s", strerror(errno));
    }
}

/* ------------------------------------------------------------------------
 * The work itself: the same code for every system
 * ---------------------------------------------------------------------- */

void bench_fill_val(uint64_t *a, size_t n, uint64_t first)
{
    for (size_t i = 0; i < n; i++)
        a[i] = val(first + i);
}

/* Sums the words and counts those that are not val(first + i). */
uint64_t bench_scan_val(const uint64_t *a, size_t n, uint64_t first, uint64_t *bad)
{
    uint64_t s = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = a[i];
        s += v;
        b += v != val(first + i);
    }
    *bad += b;
    return s;
}

uint64_t bench_rand_reads(const uint64_t *a, size_t n, uint64_t count, struct rng *r,
                           uint64_t *bad)
{
    uint64_t s = 0, b = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t j = rng_below(r, n);
        uint64_t v = ((const volatile uint64_t *)a)[j];
        s += v;
        b += v != val(j);
    }
    *bad += b;
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}


/* ------------------------------------------------------------------------
 * The child
 * ---------------------------------------------------------------------- */

static char cg_path[PATH_MAX]; /* the cgroup made for this child, or "" */

static int up_setup(size_t budget)
{
    char b[32];
    snprintf(b, sizeof b, "%zu", budget);
    if (getenv("UPAGER_BUDGET"))
        unsetenv("UPAGER_BUDGET");
    int e = upager_configure("budget", b);
    if (e) {
        bench_child_fail("upager_configure(budget, %s): %s", b, strerror(e));
        return -1;
    }
    if (!getenv("UPAGER_DIR") && (e = upager_configure("dir", bench_opt.dir)) != 0) {
        bench_child_fail("upager_configure(dir, %s): %s", bench_opt.dir, strerror(e));
        return -1;
    }
    if ((e = upager_init()) != 0) {
        bench_child_fail("upager_init: %s", strerror(e));
        return -1;
    }
    return 0;
}

static void child_main(int wl, int sys, size_t budget, size_t data)
{
    bench_sys = sys;
    bench_budget = budget;
    bench_data = data;
    if (cg_path[0]) {
        char p[PATH_MAX + 32], pid[32];
        snprintf(p, sizeof p, "%s/cgroup.procs", cg_path);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        if (write_str(p, pid) != 0) {
            bench_child_fail("joining cgroup %s: %s", cg_path, strerror(errno));
            return;
        }
    }
    write_str("/proc/self/clear_refs", "5"); /* reset VmHWM to VmRSS */
    bench_res->base_rss = proc_field("/proc/self/status", "VmRSS") * KiB;
    bench_res->base_anon = proc_field("/proc/self/status", "RssAnon") * KiB;
    if (sys == SYS_UPAGER && up_setup(budget) != 0)
        return;
    if (wl < NWL)
        bench_wls[wl].run();
    else if (wl == WL_SWEEP)
        bench_wl_sweep();
    else if (wl == WL_FLOOR)
        bench_wl_floor();
    else if (wl == WL_DEVICE)
        bench_wl_device();
    bench_res->hwm = proc_field("/proc/self/status", "VmHWM") * KiB;
    bench_res->rss_file = proc_field("/proc/self/status", "RssFile") * KiB;
    if (sys == SYS_UPAGER) {
        struct upager_stats st;
        if (upager_get_stats(&st) == 0) {
            bench_res->page_size = st.page_size;
            bench_res->budget = st.budget_bytes;
            bench_res->up_peak_resident = st.peak_resident_bytes;
            bench_res->up_io_errors = st.io_errors;
        }
    }
}

/* ------------------------------------------------------------------------
 * Cgroups (in the parent)
 * ---------------------------------------------------------------------- */

static struct {
    int version;           /* 2, 1, or 0: none                               */
    char parent[PATH_MAX]; /* where to make ours                             */
    char label[64];
    int seq;
} cg;

/* mount point and root of the cgroup hierarchy: v2, or the v1 one that has
 * the memory controller. */
static int cg_find_mount(int version, char *mnt, size_t mlen, char *root, size_t rlen)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        char r[PATH_MAX], m[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2)
            continue;
        char *dash = strstr(line, " - ");
        if (!dash)
            continue;
        char fstype[64], src[256], sopts[1024] = "";
        if (sscanf(dash + 3, "%63s %255s %1023s", fstype, src, sopts) < 2)
            continue;
        if (version == 2 && strcmp(fstype, "cgroup2") != 0)
            continue;
        if (version == 1) {
            if (strcmp(fstype, "cgroup") != 0)
                continue;
            bool mem = false;
            for (char *t = strtok(sopts, ","); t; t = strtok(NULL, ","))
                mem |= strcmp(t, "memory") == 0;
            if (!mem)
                continue;
        }
        snprintf(mnt, mlen, "%s", m);
        snprintf(root, rlen, "%s", r);
        found = 0;
        break;
    }
    fclose(f);
    return found;
}

/* Our own cgroup path in that hierarchy (from /proc/self/cgroup). */
static int cg_own_path(int version, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        bool match = false;
        if (version == 2)
            match = strcmp(line, "0") == 0 && c1[1] == '\0';
        else
            for (char *t = strtok(c1 + 1, ","); t; t = strtok(NULL, ","))
                match |= strcmp(t, "memory") == 0;
        if (match) {
            snprintf(out, len, "%s", c2 + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static const char *cg_limit_file(void)
{
    return cg.version == 2 ? "memory.max" : "memory.limit_in_bytes";
}

/* Makes a fresh cgroup with the limit; returns 0 and its path. */
static int cg_make(size_t limit, char *out, size_t len)
{
    if (!cg.version)
        return -1;
    if ((size_t)snprintf(out, len, "%.3900s/upager-bench-%d-%d", cg.parent, (int)getpid(), cg.seq++) >= len)
        return -1;
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return -1;
    char p[PATH_MAX + 64], v[32];
    snprintf(p, sizeof p, "%s/%s", out, cg_limit_file());
    snprintf(v, sizeof v, "%zu", limit);
    if (write_str(p, v) != 0) {
        rmdir(out);
        return -1;
    }
    if (cg.version == 2) {
        snprintf(p, sizeof p, "%s/memory.swap.max", out);
        if (access(p, F_OK) == 0)
            write_str(p, "0");
    }
    return 0;
}

/* The peak usage of a cgroup and its OOM kills (0 where the kernel does
 * not say). */
static void cg_usage(const char *path, uint64_t *peak, uint64_t *oom_kills)
{
    char p[PATH_MAX + 64], buf[64];
    snprintf(p, sizeof p, "%s/%s", path, cg.version == 2 ? "memory.peak" : "memory.max_usage_in_bytes");
    *peak = read_str(p, buf, sizeof buf) == 0 ? strtoull(buf, NULL, 10) : 0;
    snprintf(p, sizeof p, "%s/%s", path, cg.version == 2 ? "memory.events" : "memory.oom_control");
    *oom_kills = proc_field(p, "oom_kill");
}

static void cg_remove(const char *path)
{
    for (int i = 0; i < 50; i++) {
        if (rmdir(path) == 0 || errno == ENOENT)
            return;
        usleep(20000);
    }
    fprintf(stderr, "upager_bench: could not remove cgroup %s: %s\n", path, strerror(errno));
}

/* Tries a parent directory: makes a test cgroup with a limit, moves a
 * child into it. */
static bool cg_try(int version, const char *parent)
{
    cg.version = version;
    snprintf(cg.parent, sizeof cg.parent, "%s", parent);
    if (version == 2) {
        char p[PATH_MAX + 64], buf[512];
        snprintf(p, sizeof p, "%s/cgroup.controllers", parent);
        if (read_str(p, buf, sizeof buf) != 0 || !strstr(buf, "memory"))
            goto no;
        snprintf(p, sizeof p, "%s/cgroup.subtree_control", parent);
        if (read_str(p, buf, sizeof buf) != 0)
            goto no;
        if (!strstr(buf, "memory") && write_str(p, "+memory") != 0)
            goto no;
    }
    char path[PATH_MAX];
    if (cg_make(64 * MiB, path, sizeof path) != 0)
        goto no;
    pid_t pid = fork();
    if (pid == 0) {
        char p[PATH_MAX + 32], s[32];
        snprintf(p, sizeof p, "%s/cgroup.procs", path);
        snprintf(s, sizeof s, "%d", (int)getpid());
        _exit(write_str(p, s) == 0 ? 0 : 1);
    }
    int st = 1;
    if (pid > 0)
        waitpid(pid, &st, 0);
    cg_remove(path);
    if (pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return true;
no:
    cg.version = 0;
    return false;
}

void bench_cg_detect(void)
{
    char mnt[PATH_MAX], root[PATH_MAX], own[PATH_MAX], dir[3 * PATH_MAX];
    for (int v = 2; v >= 1; v--) {
        if (cg_find_mount(v, mnt, sizeof mnt, root, sizeof root) != 0)
            continue;
        if (cg_own_path(v, own, sizeof own) == 0) {
            const char *rel = own;
            size_t rl = strlen(root);
            if (strcmp(root, "/") != 0 && strncmp(own, root, rl) == 0)
                rel = own + rl;
            snprintf(dir, sizeof dir, "%s%s", mnt, rel);
            size_t dl = strlen(dir);
            while (dl > 1 && dir[dl - 1] == '/')
                dir[--dl] = '\0';
            if (cg_try(v, dir))
                goto found;
        }
        if (cg_try(v, mnt))
            goto found;
    }
    snprintf(cg.label, sizeof cg.label, "kernel mmap (unconstrained)");
    return;
found:
    snprintf(cg.label, sizeof cg.label, "kernel mmap (cgroup v%d %s)", cg.version,
             cg_limit_file());
}

const char *bench_cg_label(void) { return cg.label; }
int bench_cg_version(void) { return cg.version; }

/* ------------------------------------------------------------------------
 * Running children (in the parent)
 * ---------------------------------------------------------------------- */

struct run *bench_runs;
int bench_nruns;
static int cap_runs;

static void cleanup(void)
{
    bench_file_remove();
}

static volatile pid_t cur_child; /* the child running now, in the parent */

static void on_signal(int sig)
{
    if (cur_child > 0) {
        kill(cur_child, SIGKILL);
        waitpid(cur_child, NULL, 0);
        if (cg_path[0])
            rmdir(cg_path);
    }
    bench_file_remove();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* The input file goes at exit and on a signal, the running child and its
 * cgroup on a signal. */
void bench_install_signals(void)
{
    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);
}

struct run *bench_run_child(int wl, int sys, int rep, int frac, size_t budget, size_t data)
{
    if (bench_nruns == cap_runs) {
        cap_runs = cap_runs ? 2 * cap_runs : 256;
        bench_runs = realloc(bench_runs, (size_t)cap_runs * sizeof *bench_runs);
        if (!bench_runs)
            bench_die("out of memory");
    }
    struct run *ru = &bench_runs[bench_nruns++];
    memset(ru, 0, sizeof *ru);
    ru->wl = wl;
    ru->sys = sys;
    ru->rep = rep;
    ru->frac = frac;
    ru->budget = budget;
    ru->data = data;
    /* The kernel peer pages within the budget; upager gets budget/8 more
     * for what is outside its budget by design (frames in flight, the page
     * cache of its store, metadata, buffers), the issue-13 allowance. */
    cg_path[0] = '\0';
    size_t limit = sys == SYS_KMMAP ? budget
                 : sys == SYS_UPAGER && bench_opt.up_cgroup ? budget + budget / 8 : 0;
    if (limit && cg.version) {
        if (cg_make(limit, cg_path, sizeof cg_path) != 0) {
            fprintf(stderr, "upager_bench: cgroup for the %s run: %s\n", bench_sys_name[sys], strerror(errno));
            cg_path[0] = '\0';
        } else {
            ru->cg_limit = limit;
        }
    }
    if (wl == WL_FILE)
        bench_file_drop_cache(); /* every system starts from a cold cache */
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        bench_die("pipe: %s", strerror(errno));
    fflush(NULL);
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0)
        bench_die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        static struct result res;
        bench_res = &res;
        result_fd = pfd[1];
        child_main(wl, sys, budget, data);
        if (bench_res->ok == 0)
            bench_res->ok = 1;
        bench_child_send();
        _exit(0);
    }
    cur_child = pid;
    close(pfd[1]);
    static struct result tmp;
    size_t got = 0;
    char *dst = (char *)&tmp;
    bool timed_out = false, final = false;
    for (;;) {
        int left_ms = (int)((t0 + bench_opt.timeout - bench_now()) * 1000);
        if (left_ms <= 0) {
            timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd pf = {pfd[0], POLLIN, 0};
        int n = poll(&pf, 1, left_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        ssize_t r = read(pfd[0], dst + got, sizeof tmp - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof tmp) {
            ru->r = tmp;  /* the latest complete report */
            final = tmp.ok != 0;
            got = 0;
        }
    }
    close(pfd[0]);
    int st = 0;
    struct rusage rus;
    while (wait4(pid, &st, 0, &rus) < 0 && errno == EINTR)
        ;
    cur_child = 0;
    ru->ru_maxrss_kib = rus.ru_maxrss;
    if (cg_path[0]) {
        snprintf(ru->r.cg_label, sizeof ru->r.cg_label, "%s", cg.label);
        cg_usage(cg_path, &ru->cg_peak, &ru->cg_oom_kills);
        cg_remove(cg_path);
    }
    ru->timed_out = timed_out;
    if (timed_out)
        snprintf(ru->status, sizeof ru->status, "timed out after %d s (killed)", bench_opt.timeout);
    else if (WIFSIGNALED(st))
        snprintf(ru->status, sizeof ru->status, "killed by signal %d (%s)%s", WTERMSIG(st),
                 strsignal(WTERMSIG(st)),
                 ru->cg_oom_kills ? ", OOM-killed in its cgroup"
                 : WTERMSIG(st) == SIGKILL && ru->cg_limit ? ", cgroup OOM?" : "");
    else if (!final)
        snprintf(ru->status, sizeof ru->status, "exited with status %d without a result",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    else if (ru->r.ok != 1)
        snprintf(ru->status, sizeof ru->status, "%s", ru->r.err[0] ? ru->r.err : "failed");
    if (ru->status[0])
        fprintf(stderr, "upager_bench: %s/%s run %d: %s\n",
                bench_wl_name(wl),
                bench_sys_name[sys], rep + 1, ru->status);
    return ru;
}

/* ------------------------------------------------------------------------
 * Summaries (in the parent)
 * ---------------------------------------------------------------------- */

const struct phase *bench_find_phase(const struct run *ru, const char *ph)
{
    for (int i = 0; i < ru->r.nph; i++)
        if (strcmp(ru->r.ph[i].name, ph) == 0)
            return &ru->r.ph[i];
    return NULL;
}

bool bench_aggregate(int wl, int sys, int frac, const char *ph, struct agg *a)
{
    memset(a, 0, sizeof *a);
    double t[256], f[256], m[256], rd[256], wr[256], ev[256], c[256];
    int n = 0, any = 0;
    for (int i = 0; i < bench_nruns; i++) {
        struct run *ru = &bench_runs[i];
        if (ru->wl != wl || ru->sys != sys || ru->frac != frac)
            continue;
        any++;
        if (ru->cg_limit)
            a->cg_limit = ru->cg_limit;
        if (ru->cg_peak > a->cg_peak)
            a->cg_peak = ru->cg_peak;
        a->oom_kills += ru->cg_oom_kills;
        const struct phase *p = bench_find_phase(ru, ph);
        if (ru->status[0]) {
            a->failed++;
            if (!a->status[0])
                snprintf(a->status, sizeof a->status, "%s", ru->status);
        }
        if (ru->timed_out)
            a->timeouts++;
        if (!p || p->bad || n >= 256)
            continue;
        t[n] = p->sec;
        bool up = sys == SYS_UPAGER;
        f[n] = (double)p->faults;
        m[n] = (double)p->major;
        rd[n] = (double)(up ? p->st_rd : p->io_rd);
        wr[n] = (double)(up ? p->st_wr : p->io_wr);
        ev[n] = (double)p->evictions;
        c[n] = p->cpu;
        a->ops = (double)p->ops;
        if (ru->r.hwm > a->hwm) {
            a->hwm = ru->r.hwm;
            a->base = ru->r.base_rss;
        }
        if (ru->r.up_peak_resident > a->up_peak)
            a->up_peak = ru->r.up_peak_resident;
        a->page_size = ru->r.page_size;
        n++;
    }
    if (!any)
        return false;
    a->n = n;
    a->missing = any - n;
    if (n) {
        double s[256];
        memcpy(s, t, sizeof(double) * (size_t)n);
        a->med = bench_median(s, n);
        a->min = s[0];
        a->max = s[n - 1];
        a->faults = bench_median(f, n);
        a->major = bench_median(m, n);
        a->rd = bench_median(rd, n);
        a->wr = bench_median(wr, n);
        a->evictions = bench_median(ev, n);
        a->cpu = bench_median(c, n);
    }
    return true;
}

const char *bench_sys_label(int sys)
{
    static char buf[96];
    switch (sys) {
    case SYS_UPAGER: return "upager";
    case SYS_MALLOC: return "malloc (in RAM)";
    case SYS_KMMAP:
        snprintf(buf, sizeof buf, "%s", cg.version ? "kernel mmap (cgroup)" : "kernel mmap (unconstrained)");
        return buf;
    case SYS_READ: return "read() into malloc";
    case SYS_PREAD: return "raw pread 1M";
    }
    return "?";
}


static char problems[8192]; /* upager's */
static char notes[8192];    /* the peers' (timeouts of the kernel peer...) */
static void vappend(char *buf, size_t len, const char *fmt, va_list ap)
{
    size_t l = strlen(buf);
    if (l + 4 >= len)
        return;
    buf[l++] = ' ';
    buf[l++] = ' ';
    buf[l++] = ' ';
    vsnprintf(buf + l, len - l, fmt, ap);
    l = strlen(buf);
    if (l + 1 < len) {
        buf[l] = '\n';
        buf[l + 1] = '\0';
    }
}
void bench_problem(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(problems, sizeof problems, fmt, ap);
    va_end(ap);
}
void bench_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(notes, sizeof notes, fmt, ap);
    va_end(ap);
}

bool bench_have_problems(void) { return problems[0] != '\0'; }

void bench_print_problems(void)
{
    printf("\n== upager problems seen ==\n%s", problems[0] ? problems : "   none\n");
    if (notes[0])
        printf("\n== peer runs that failed ==\n%s", notes);
}
