/*
 * wl_seq.c - the sequential workloads: seq (write, then read, one array;
 * raw pread of the same bytes for comparison), seq2 (the same from two
 * threads, one per half) and fit (data that fits in the budget, after the
 * first touch).  Run in the child by harness.c.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "upager.h"
#include "harness.h"

void bench_wl_seq(void)
{
    size_t n = bench_data / 8;
    uint64_t bad = 0;
    if (bench_sys == SYS_PREAD) {
        int fd = bench_tmpfile_fd();
        size_t chunk = MiB;
        uint64_t *buf = malloc(chunk);
        if (fd < 0 || !buf) {
            bench_child_fail("pread setup: %s", strerror(errno));
            return;
        }
        for (size_t off = 0; off < bench_data; off += chunk) {
            bench_fill_val(buf, chunk / 8, off / 8);
            if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
                bench_child_fail("pwrite: %s", strerror(errno));
                return;
            }
        }
        for (int pass = 0; pass < 3; pass++) {
            /* 0: warm the page cache, 1: hot, 2: cold */
            if (pass == 2) {
                fdatasync(fd);
                posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            }
            uint64_t s = 0;
            if (pass)
                bench_ph_begin();
            for (size_t off = 0; off < bench_data; off += chunk) {
                if (pread(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
                    bench_child_fail("pread: %s", strerror(errno));
                    return;
                }
                s += bench_scan_val(buf, chunk / 8, off / 8, &bad);
            }
            if (pass)
                bench_ph_end(pass == 1 ? "read" : "read-cold", bench_data, s, bad);
        }
        close(fd);
        free(buf);
        return;
    }
    uint64_t *a = bench_mem_alloc(bench_data);
    if (!a)
        return;
    bench_ph_begin();
    bench_fill_val(a, n, 0);
    bench_ph_end("write", bench_data, 0, 0);
    bench_ph_begin();
    uint64_t s = bench_scan_val(a, n, 0, &bad);
    bench_ph_end("read", bench_data, s, bad);
    bench_mem_free(a, bench_data);
}

/* seq2: one thread per half of the array, the same bytes as seq. */
struct seq_part {
    uint64_t *a;
    size_t first, n;       /* words [first, first + n) */
    bool write;
    uint64_t sum, bad;
};

static void *seq_part_main(void *p)
{
    struct seq_part *t = p;
    if (t->write)
        bench_fill_val(t->a + t->first, t->n, t->first);
    else
        t->sum = bench_scan_val(t->a + t->first, t->n, t->first, &t->bad);
    return NULL;
}

static int seq_parts(struct seq_part *t, bool write)
{
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        t[i].write = write;
        if (pthread_create(&th[i], NULL, seq_part_main, &t[i]) != 0) {
            bench_child_fail("pthread_create");
            while (i-- > 0)
                pthread_join(th[i], NULL);
            return -1;
        }
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    return 0;
}

void bench_wl_seq2(void)
{
    size_t n = bench_data / 8, half = n / 2;
    uint64_t *a = bench_mem_alloc(bench_data);
    if (!a)
        return;
    struct seq_part t[2] = {{a, 0, half, true, 0, 0}, {a, half, n - half, true, 0, 0}};
    bench_ph_begin();
    if (seq_parts(t, true) != 0)
        return;
    bench_ph_end("write", bench_data, 0, 0);
    bench_ph_begin();
    if (seq_parts(t, false) != 0)
        return;
    bench_ph_end("read", bench_data, t[0].sum + t[1].sum, t[0].bad + t[1].bad);
    bench_mem_free(a, bench_data);
}

void bench_wl_fit(void)
{
    size_t bytes = bench_budget / 2, n = bytes / 8;
    uint64_t *a = bench_mem_alloc(bytes);
    if (!a)
        return;
    bench_fill_val(a, n, 0); /* first touch, not timed */
    uint64_t s = 0, bad = 0;
    /* enough passes for about 2 GiB of traffic, so that the phase is long
     * enough to time */
    int passes = (int)(2 * GiB / bytes);
    if (passes < 4)
        passes = 4;
    bench_ph_begin();
    for (int pass = 0; pass < passes; pass++)
        for (size_t i = 0; i < n; i++) {
            uint64_t v = a[i];
            s += v;
            a[i] = v + 1;
        }
    struct rng r = {SEED};
    uint64_t nr = n / 2, rs = 0;
    for (uint64_t k = 0; k < nr; k++) {
        uint64_t j = rng_below(&r, n);
        uint64_t v = ((volatile uint64_t *)a)[j];
        rs += v;
        bad += v != val(j) + (uint64_t)passes;
    }
    bench_ph_end("rw", (uint64_t)passes * bytes, s + rs, bad);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != val(i) + (uint64_t)passes;
    if (bad)
        bench_child_fail("fit: %" PRIu64 " words wrong after the passes", bad);
    bench_mem_free(a, bytes);
}

