/*
 * floor.c - what a fault costs without upager: a plain sigaction SIGSEGV
 * handler on a PROT_NONE page that mprotects it RW, the same plus a pread
 * of one page from a page-cache-hot file, and that pread into fresh frames,
 * per page size.  The child measures (bench_wl_floor), the parent takes the
 * medians and prints them (bench_floor_summary).
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
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

