/*
 * floor.c - what a fault costs without upager: a plain sigaction SIGSEGV
 * handler on a PROT_NONE page that mprotects it RW, the same plus a pread
 * of one page from a page-cache-hot file, and that pread into fresh frames,
 * per page size; and what the device costs without any cache (O_DIRECT).
 * The child measures (bench_wl_floor, bench_wl_device), the parent takes
 * the medians and prints them (bench_floor_summary, bench_device_summary).
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"

/* ------------------------------------------------------------------------
 * The floor: bare SIGSEGV + mprotect round trips, and the same with a pread
 * ---------------------------------------------------------------------- */

static struct {
    char *base;
    size_t len, ps, fsize;
    int fd, pread;
} fl;

static void floor_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr, b = (uintptr_t)fl.base;
    if (a < b || a >= b + fl.len) {
        signal(sig, SIG_DFL); /* not ours: fault again and die */
        return;
    }
    char *pg = (char *)(a & ~(uintptr_t)(fl.ps - 1));
    if (mprotect(pg, fl.ps, PROT_READ | PROT_WRITE) != 0)
        _exit(99);
    if (fl.pread) {
        ssize_t r = pread(fl.fd, pg, fl.ps, (off_t)((size_t)(pg - fl.base) % fl.fsize));
        (void)r;
    }
}

static size_t floor_sizes[8];
static int nfloor_sizes;
static void device_sizes(size_t up_ps);

/* The standard sizes the machine allows, and upager's page size when it is
 * not one of them. */
void bench_floor_sizes(size_t up_ps)
{
    nfloor_sizes = 0;
    const size_t fs[] = {4 * KiB, 64 * KiB, 128 * KiB, 2 * MiB};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if (fs[i] >= (size_t)sysconf(_SC_PAGESIZE))
            floor_sizes[nfloor_sizes++] = fs[i];
    bool have = false;
    for (int i = 0; i < nfloor_sizes; i++)
        have |= floor_sizes[i] == up_ps;
    if (up_ps && !have && up_ps <= 2 * MiB)
        floor_sizes[nfloor_sizes++] = up_ps;
    device_sizes(up_ps);
}

void bench_wl_floor(void)
{
    const size_t fsize = 64 * MiB;
    int fd = bench_tmpfile_fd();
    char *buf = malloc(MiB);
    if (fd < 0 || !buf) {
        bench_child_fail("floor file: %s", strerror(errno));
        return;
    }
    for (size_t off = 0; off < fsize; off += MiB) {
        bench_fill_val((uint64_t *)buf, MiB / 8, off / 8);
        if (pwrite(fd, buf, MiB, (off_t)off) != (ssize_t)MiB) {
            bench_child_fail("floor pwrite: %s", strerror(errno));
            return;
        }
    }
    for (size_t off = 0; off < fsize; off += MiB) /* hot in the page cache */
        if (pread(fd, buf, MiB, (off_t)off) != (ssize_t)MiB) {
            bench_child_fail("floor pread: %s", strerror(errno));
            return;
        }
    free(buf);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = floor_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    fl.fd = fd;
    fl.fsize = fsize;
    for (int k = 0; k < nfloor_sizes; k++) {
        size_t ps = floor_sizes[k];
        size_t np = 64 * MiB / ps;
        if (np > 4096)
            np = 4096;
        size_t len = np * ps;
        char *raw = mmap(NULL, len + ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) {
            bench_child_fail("floor mmap: %s", strerror(errno));
            return;
        }
        char *base = (char *)(((uintptr_t)raw + ps - 1) & ~(uintptr_t)(ps - 1));
        int rounds = 5;
        struct phase *p = &bench_res->ph[bench_res->nph];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%zu", ps);
        p->ops = np * (size_t)rounds;
        for (int mode = 0; mode < 3; mode++) {
            /* 0: bare, frames resident; 1: + pread, frames resident;
             * 2: + pread into fresh frames (MADV_DONTNEED between rounds) */
            mprotect(base, len, PROT_READ | PROT_WRITE);
            memset(base, 1, len);
            fl.base = base;
            fl.len = len;
            fl.ps = ps;
            fl.pread = mode > 0;
            double per[512];
            int nr = rounds < 512 ? rounds : 512;
            for (int r = 0; r < nr; r++) {
                if (mode == 2)
                    madvise(base, len, MADV_DONTNEED);
                mprotect(base, len, PROT_NONE);
                double t0 = bench_now();
                for (size_t i = 0; i < np; i++)
                    (void)*(volatile char *)(base + i * ps);
                per[r] = (bench_now() - t0) / (double)np * 1e6;
            }
            p->aux[mode] = bench_median(per, nr);
        }
        fl.len = 0;
        munmap(raw, len + ps);
        bench_res->nph++;
    }
    close(fd);
}

/* ------------------------------------------------------------------------
 * In the parent: the medians per page size
 * ---------------------------------------------------------------------- */

static struct floor_agg floors[8];
static int nfloors;

void bench_floor_summary(FILE *tsv)
{
    nfloors = 0;
    for (int k = 0; k < nfloor_sizes; k++) {
        double v[3][256];
        int n = 0;
        char name[32];
        snprintf(name, sizeof name, "%zu", floor_sizes[k]);
        for (int i = 0; i < bench_nruns && n < 256; i++) {
            if (bench_runs[i].wl != WL_FLOOR || bench_runs[i].status[0])
                continue;
            const struct phase *p = bench_find_phase(&bench_runs[i], name);
            if (!p)
                continue;
            for (int m = 0; m < 3; m++)
                v[m][n] = p->aux[m];
            n++;
        }
        if (!n)
            continue;
        struct floor_agg *f = &floors[nfloors++];
        f->ps = floor_sizes[k];
        f->bare = bench_median(v[0], n);
        f->bmin = v[0][0];
        f->bmax = v[0][n - 1];
        f->pread = bench_median(v[1], n);
        f->pmin = v[1][0];
        f->pmax = v[1][n - 1];
        f->fresh = bench_median(v[2], n);
        fprintf(tsv, "floor\t%zu\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\n", f->ps, f->bare,
                f->bmin, f->bmax, f->pread, f->pmin, f->pmax, f->fresh);
    }
    if (!nfloors)
        return;
    printf("\n== floor: a plain sigaction SIGSEGV handler on a PROT_NONE page (us per fault) ==\n");
    printf("   %-9s %26s %30s %22s\n", "page", "mprotect RW (frames resident)",
           "+ pread, page-cache hot (resident)", "+ pread into fresh frames");
    for (int i = 0; i < nfloors; i++) {
        char b[32];
        struct floor_agg *f = &floors[i];
        printf("   %-9s %10.2f (%.2f-%.2f) %15.2f (%.2f-%.2f) %22.2f\n", bench_fmt_size(b, sizeof b, (double)f->ps),
               f->bare, f->bmin, f->bmax, f->pread, f->pmin, f->pmax, f->fresh);
    }
}

const struct floor_agg *bench_floor_for(size_t ps)
{
    for (int i = 0; i < nfloors; i++)
        if (floors[i].ps == ps)
            return &floors[i];
    return NULL;
}


/* ------------------------------------------------------------------------
 * The device: O_DIRECT on a file in the bench directory, so that neither
 * page cache plays a part.  Sequential writes and reads in 1 MiB requests,
 * then random reads of each size, one at a time, each timed: the cost a
 * major fault cannot go below when its page is not cached.
 * ---------------------------------------------------------------------- */

static size_t dev_sizes[6];
static int ndev_sizes;

/* 4K, 16K, 64K and upager's page size. */
static void device_sizes(size_t up_ps)
{
    const size_t ds[] = {4 * KiB, 16 * KiB, 64 * KiB};
    ndev_sizes = 0;
    bool have = false;
    for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
        dev_sizes[ndev_sizes++] = ds[i];
        have |= ds[i] == up_ps;
    }
    if (up_ps && !have && up_ps <= 2 * MiB)
        dev_sizes[ndev_sizes++] = up_ps;
}

static size_t device_file_size(void) { return bench_opt.quick ? 64 * MiB : 256 * MiB; }

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Two threads reading random 4K blocks at once: what the device gives
 * with two requests in flight, against one (the ceiling of two threads
 * faulting on independent pages). */
struct qd2 {
    int fd;
    size_t slots;
    int n;
    uint64_t seed;
    int err;
};

static void *qd2_main(void *arg)
{
    struct qd2 *q = arg;
    void *b = NULL;
    if (posix_memalign(&b, 4096, 4096) != 0) {
        q->err = ENOMEM;
        return NULL;
    }
    struct rng r = {q->seed};
    for (int i = 0; i < q->n && !q->err; i++)
        if (pread(q->fd, b, 4096, (off_t)(rng_below(&r, q->slots) * 4096)) != 4096)
            q->err = errno ? errno : EIO;
    free(b);
    return NULL;
}

/* One random major fault without upager, two ways, each the median of
 * first touches of random 4K pages of the device file:
 *   "mech4k"    the steps upager's fault takes, bare: a SIGSEGV handler on
 *               a PROT_NONE mapping of a memfd reads the 4K with O_DIRECT
 *               into a buffer, writes it into the memfd, and mprotects it
 *               readable -- no page table, lock, clock or eviction;
 *   "kfault4k"  the kernel's own major fault: the file mmapped, dropped
 *               from the page cache, MADV_RANDOM (a 4K read each).
 * What upager adds to the first is its own work; what the first adds to
 * the second is the price of the mechanism (signal, copy, mprotect). */
static struct {
    char *base, *buf;
    int fd, mfd;
} mech;

static void mech_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr & ~(uintptr_t)4095, b = (uintptr_t)mech.base;
    if (a < b || a >= b + device_file_size()) {
        signal(sig, SIG_DFL);
        return;
    }
    off_t off = (off_t)(a - b);
    if (pread(mech.fd, mech.buf, 4096, off) != 4096 ||
        pwrite(mech.mfd, mech.buf, 4096, off) != 4096 ||
        mprotect((void *)a, 4096, PROT_READ) != 0)
        _exit(98);
}

/* Median microseconds of the first touch of nreads random 4K pages of
 * base (a byte read each; a page touched before is drawn again). */
static double first_touch_median(const char *base, size_t fsize, int nreads, double *lat,
                                 uint64_t seed)
{
    size_t slots = fsize / 4096;
    unsigned char *seen = calloc(slots, 1);
    if (!seen)
        return 0;
    struct rng r = {seed};
    volatile unsigned sum = 0;
    for (int i = 0; i < nreads; i++) {
        size_t k;
        do
            k = (size_t)rng_below(&r, slots);
        while (seen[k]);
        seen[k] = 1;
        double t = bench_now();
        sum += (unsigned char)base[k * 4096 + 8];
        lat[i] = (bench_now() - t) * 1e6;
    }
    (void)sum;
    free(seen);
    qsort(lat, (size_t)nreads, sizeof *lat, cmp_dbl);
    return bench_median(lat, nreads);
}

/* Sends a phase of `ops` first touches whose median was `med` us. */
static void send_median(const char *name, int ops, double med)
{
    struct phase *p = &bench_res->ph[bench_res->nph++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ops = (uint64_t)ops;
    p->aux[0] = med;
    bench_child_send();
}

static void fault_mechanism(int fd, size_t fsize, int nreads, double *lat)
{
    /* the bare mechanism */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = mech_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    void *buf = NULL;
    mech.fd = fd;
    mech.mfd = memfd_create("bench-mech", MFD_CLOEXEC);
    if (mech.mfd >= 0 && ftruncate(mech.mfd, (off_t)fsize) == 0 &&
        posix_memalign(&buf, 4096, 4096) == 0 &&
        (mech.base = mmap(NULL, fsize, PROT_NONE, MAP_SHARED, mech.mfd, 0)) != MAP_FAILED &&
        sigaction(SIGSEGV, &sa, &old) == 0) {
        mech.buf = buf;
        double med = first_touch_median(mech.base, fsize, nreads, lat, SEED + 7);
        sigaction(SIGSEGV, &old, NULL);
        munmap(mech.base, fsize);
        send_median("mech4k", nreads, med);
    }
    free(buf);
    if (mech.mfd >= 0)
        close(mech.mfd);
    if (bench_res->nph >= MAXPH)
        return;
    /* the kernel's fault, on the same file through the page cache */
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    int kfd = open(path, O_RDONLY | O_CLOEXEC);
    if (kfd < 0)
        return;
    posix_fadvise(kfd, 0, (off_t)fsize, POSIX_FADV_DONTNEED);
    char *m = mmap(NULL, fsize, PROT_READ, MAP_SHARED, kfd, 0);
    if (m != MAP_FAILED) {
        madvise(m, fsize, MADV_RANDOM);
        double med = first_touch_median(m, fsize, nreads, lat, SEED + 8);
        munmap(m, fsize);
        send_median("kfault4k", nreads, med);
    }
    close(kfd);
}

void bench_wl_device(void)
{
    const size_t fsize = device_file_size(), chunk = MiB;
    const int nreads = bench_opt.quick ? 1000 : 4000;
    int fd = bench_tmpfile_fd();
    void *buf = NULL;
    double *lat = malloc((size_t)nreads * sizeof *lat);
    /* The buffer in a huge page, as upager's I/O buffers are where the
     * system allows it: a direct read into 4K pages is cut into requests
     * of max_segments pages and runs at half the device's speed here. */
    if (fd < 0 || posix_memalign(&buf, 2 * MiB, 2 * MiB) != 0 || !lat) {
        bench_child_fail("device file: %s", strerror(errno));
        return;
    }
    madvise(buf, 2 * MiB, MADV_HUGEPAGE);
    memset(buf, 0, 2 * MiB);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT) != 0) {
        bench_child_fail("O_DIRECT on %s: %s", bench_opt.dir, strerror(errno));
        return;
    }
    bench_ph_begin();
    for (size_t off = 0; off < fsize; off += chunk) {
        bench_fill_val(buf, chunk / 8, off / 8);
        if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
            bench_child_fail("O_DIRECT pwrite: %s", strerror(errno));
            return;
        }
    }
    fdatasync(fd);
    bench_ph_end("write", fsize, 0, 0);
    uint64_t bad = 0, s = 0;
    bench_ph_begin();
    for (size_t off = 0; off < fsize; off += chunk) {
        if (pread(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
            bench_child_fail("O_DIRECT pread: %s", strerror(errno));
            return;
        }
        s += bench_scan_val(buf, chunk / 8, off / 8, &bad);
    }
    bench_ph_end("read", fsize, s, bad);
    struct rng r = {SEED};
    for (int k = 0; k < ndev_sizes && bench_res->nph < MAXPH; k++) {
        size_t sz = dev_sizes[k], slots = fsize / sz;
        double t0 = bench_now();
        for (int i = 0; i < nreads; i++) {
            off_t off = (off_t)(rng_below(&r, slots) * sz);
            double t = bench_now();
            if (pread(fd, buf, sz, off) != (ssize_t)sz) {
                bench_child_fail("O_DIRECT pread of %zu: %s", sz, strerror(errno));
                return;
            }
            lat[i] = (bench_now() - t) * 1e6;
        }
        struct phase *p = &bench_res->ph[bench_res->nph++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "rand%zu", sz);
        p->sec = bench_now() - t0;
        p->ops = (uint64_t)nreads;
        qsort(lat, (size_t)nreads, sizeof *lat, cmp_dbl);
        p->aux[0] = bench_median(lat, nreads);
        p->aux[1] = lat[(size_t)nreads * 99 / 100];
        p->aux[2] = p->sec / nreads * 1e6;
        bench_child_send();
    }
    if (bench_res->nph < MAXPH) {
        struct qd2 q[2];
        pthread_t t[2];
        double t0 = bench_now();
        int started = 0;
        for (int i = 0; i < 2; i++) {
            q[i] = (struct qd2){fd, fsize / 4096, nreads, SEED + 1 + (uint64_t)i, 0};
            started += pthread_create(&t[i], NULL, qd2_main, &q[i]) == 0;
        }
        for (int i = 0; i < started; i++)
            pthread_join(t[i], NULL);
        if (started == 2 && !q[0].err && !q[1].err) {
            struct phase *p = &bench_res->ph[bench_res->nph++];
            memset(p, 0, sizeof *p);
            snprintf(p->name, sizeof p->name, "rand2t");
            p->sec = bench_now() - t0;
            p->ops = (uint64_t)(2 * nreads);
            bench_child_send();
        }
    }
    if (bench_res->nph < MAXPH)
        fault_mechanism(fd, fsize, nreads, lat);
    free(lat);
    free(buf);
    close(fd);
}

/* In the parent: medians over the runs. */
static struct dev_agg { size_t size; double med, p99, mean; } dev_rand[6];
static int ndev_rand;
static double dev_seq_mibps, dev_write_mibps, dev_qd2; /* reads/s, 2 in flight / 1 */
static double dev_mech_us, dev_kfault_us;              /* fault_mechanism()         */

static double phase_median(const char *name, int aux, bool rate)
{
    double v[256];
    int n = 0;
    for (int i = 0; i < bench_nruns && n < 256; i++) {
        if (bench_runs[i].wl != WL_DEVICE)
            continue;
        const struct phase *p = bench_find_phase(&bench_runs[i], name);
        if (!p || p->bad || (!rate && p->ops == 0))
            continue;
        if (rate)
            v[n++] = p->sec > 0 ? (double)p->ops / MiB / p->sec : 0;
        else
            v[n++] = p->aux[aux];
    }
    return n ? bench_median(v, n) : 0;
}

void bench_device_summary(FILE *tsv)
{
    bool any = false;
    for (int i = 0; i < bench_nruns; i++)
        any |= bench_runs[i].wl == WL_DEVICE;
    if (!any)
        return;
    dev_seq_mibps = phase_median("read", 0, true);
    dev_write_mibps = phase_median("write", 0, true);
    ndev_rand = 0;
    for (int k = 0; k < ndev_sizes; k++) {
        char name[32];
        snprintf(name, sizeof name, "rand%zu", dev_sizes[k]);
        double med = phase_median(name, 0, false), p99 = phase_median(name, 1, false);
        double mean = phase_median(name, 2, false);
        if (med > 0)
            dev_rand[ndev_rand++] = (struct dev_agg){dev_sizes[k], med, p99, mean};
    }
    {
        double v2[256], v1[256];
        int n2 = 0, n1 = 0;
        for (int i = 0; i < bench_nruns; i++) {
            if (bench_runs[i].wl != WL_DEVICE)
                continue;
            const struct phase *a = bench_find_phase(&bench_runs[i], "rand2t");
            const struct phase *o = bench_find_phase(&bench_runs[i], "rand4096");
            if (a && !a->bad && a->sec > 0 && n2 < 256)
                v2[n2++] = (double)a->ops / a->sec;
            if (o && !o->bad && o->sec > 0 && n1 < 256)
                v1[n1++] = (double)o->ops / o->sec;
        }
        dev_qd2 = n2 && n1 ? bench_median(v2, n2) / bench_median(v1, n1) : 0;
    }
    char b[32];
    printf("\n== device: O_DIRECT on a file of %s in %s ==\n",
           bench_fmt_size(b, sizeof b, (double)device_file_size()), bench_opt.dir);
    if (!dev_seq_mibps && !ndev_rand) {
        for (int i = 0; i < bench_nruns; i++)
            if (bench_runs[i].wl == WL_DEVICE && bench_runs[i].status[0]) {
                printf("   FAILED: %s\n", bench_runs[i].status);
                break;
            }
        return;
    }
    printf("   sequential, 1 MiB requests into a huge page: read %.0f MiB/s, write %.0f MiB/s (with fdatasync)\n",
           dev_seq_mibps, dev_write_mibps);
    fprintf(tsv, "device\tseq_read\t%zu\t%.2f\t\tMiB/s\n", (size_t)MiB, dev_seq_mibps);
    fprintf(tsv, "device\tseq_write\t%zu\t%.2f\t\tMiB/s\n", (size_t)MiB, dev_write_mibps);
    printf("   random reads, one at a time: %-8s %12s %12s %12s %12s\n", "size", "median us", "mean us",
           "p99 us", "MiB/s");
    for (int k = 0; k < ndev_rand; k++) {
        printf("   %30s %-8s %12.1f %12.1f %12.1f %12.1f\n", "",
               bench_fmt_size(b, sizeof b, (double)dev_rand[k].size), dev_rand[k].med, dev_rand[k].mean,
               dev_rand[k].p99, (double)dev_rand[k].size / MiB / (dev_rand[k].med * 1e-6));
        fprintf(tsv, "device\trand_read\t%zu\t%.2f\t%.2f\tus\n", dev_rand[k].size, dev_rand[k].med,
                dev_rand[k].p99);
        fprintf(tsv, "device\trand_read_mean\t%zu\t%.2f\t\tus\n", dev_rand[k].size, dev_rand[k].mean);
    }
    if (dev_qd2 > 0) {
        printf("   random 4K reads, two threads at once: x%.2f the reads per second of one\n", dev_qd2);
        fprintf(tsv, "device\trand_read_2_threads_over_1\t4096\t%.3f\t\tratio\n", dev_qd2);
    }
    dev_mech_us = phase_median("mech4k", 0, false);
    dev_kfault_us = phase_median("kfault4k", 0, false);
    if (dev_mech_us > 0 || dev_kfault_us > 0) {
        printf("   a random 4K major fault without upager, median: the kernel's own (mmap, MADV_RANDOM,\n"
               "   cold) %.1f us; SIGSEGV + O_DIRECT pread + pwrite into a memfd + mprotect %.1f us\n",
               dev_kfault_us, dev_mech_us);
        fprintf(tsv, "device\tkernel_major_fault\t4096\t%.2f\t\tus\n", dev_kfault_us);
        fprintf(tsv, "device\tmechanism_major_fault\t4096\t%.2f\t\tus\n", dev_mech_us);
    }
}

double bench_device_mech_us(void) { return dev_mech_us; }
double bench_device_kfault_us(void) { return dev_kfault_us; }

double bench_device_seq_mibps(void) { return dev_seq_mibps; }
double bench_device_qd2(void) { return dev_qd2; }

/* The device's median and mean latency for a random read of `bytes` (an
 * average read size, not a measured one): interpolated between the sizes
 * measured around it, the smallest one below them. */
bool bench_device_rand_at(double bytes, double *median, double *mean)
{
    if (ndev_rand == 0)
        return false;
    int k = 1;
    while (k < ndev_rand && bytes > (double)dev_rand[k].size)
        k++;
    if (bytes <= (double)dev_rand[0].size || k == ndev_rand) {
        const struct dev_agg *d = &dev_rand[bytes <= (double)dev_rand[0].size ? 0 : ndev_rand - 1];
        *median = d->med;
        *mean = d->mean;
        return true;
    }
    double lo = (double)dev_rand[k - 1].size, hi = (double)dev_rand[k].size, t = (bytes - lo) / (hi - lo);
    *median = dev_rand[k - 1].med + (dev_rand[k].med - dev_rand[k - 1].med) * t;
    *mean = dev_rand[k - 1].mean + (dev_rand[k].mean - dev_rand[k - 1].mean) * t;
    return true;
}

bool bench_device_rand_us(size_t size, double *median, double *p99)
{
    for (int k = 0; k < ndev_rand; k++)
        if (dev_rand[k].size == size) {
            *median = dev_rand[k].med;
            *p99 = dev_rand[k].p99;
            return true;
        }
    return false;
}
