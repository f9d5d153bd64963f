/*
 * wl_sort.c - the sort workload: 4x budget of uint64, each chunk of
 * budget/4 sorted in place (introsort, no allocation), then a k-way merge
 * into a second array; the same code on every system.  Run in the child by
 * harness.c.
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

/* Introsort of uint64, in place, no allocation. */
static void isort(uint64_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static void sift(uint64_t *a, size_t i, size_t n)
{
    uint64_t x = a[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && a[c + 1] > a[c])
            c++;
        if (a[c] <= x)
            break;
        a[i] = a[c];
        i = c;
    }
    a[i] = x;
}

static void hsort(uint64_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(a, i, n);
    for (size_t i = n; i-- > 1;) {
        uint64_t t = a[0];
        a[0] = a[i];
        a[i] = t;
        sift(a, 0, i);
    }
}

static void introsort(uint64_t *a, size_t n, int depth)
{
    while (n > 24) {
        if (depth-- == 0) {
            hsort(a, n);
            return;
        }
        uint64_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint64_t piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        size_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < piv)
                i++;
            while (a[j] > piv)
                j--;
            if (i >= j)
                break;
            uint64_t t = a[i];
            a[i] = a[j];
            a[j] = t;
            i++;
            j--;
        }
        size_t left = j + 1; /* [0, j] <= piv <= [j+1, n) */
        if (left < n - left) {
            introsort(a, left, depth);
            a += left;
            n -= left;
        } else {
            introsort(a + left, n - left, depth);
            n = left;
        }
    }
    isort(a, n);
}

static void sort_u64(uint64_t *a, size_t n)
{
    int d = 0;
    for (size_t m = n; m; m >>= 1)
        d++;
    introsort(a, n, 2 * d);
}

struct cursor { uint64_t v; size_t pos, end; };

static void heap_down(struct cursor *h, size_t i, size_t n)
{
    struct cursor x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1].v < h[c].v)
            c++;
        if (h[c].v >= x.v)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Merges the k sorted runs of `chunk` words of src into dst. */
static void kmerge(const uint64_t *src, uint64_t *dst, size_t n, size_t chunk)
{
    size_t k = (n + chunk - 1) / chunk, m = 0;
    struct cursor *h = malloc(k * sizeof *h);
    if (!h) {
        bench_child_fail("malloc of the merge heap");
        return;
    }
    for (size_t c = 0; c < k; c++) {
        size_t b = c * chunk, e = b + chunk < n ? b + chunk : n;
        if (b < e)
            h[m++] = (struct cursor){src[b], b, e};
    }
    for (size_t i = m / 2; i-- > 0;)
        heap_down(h, i, m);
    size_t o = 0;
    while (m) {
        dst[o++] = h[0].v;
        if (++h[0].pos < h[0].end) {
            h[0].v = src[h[0].pos];
        } else {
            h[0] = h[--m];
        }
        if (m)
            heap_down(h, 0, m);
    }
    free(h);
}

void bench_wl_sort(void)
{
    size_t n = bench_data / 8;
    size_t chunk = bench_budget / 4 / 8;
    uint64_t *a = bench_mem_alloc(bench_data);
    uint64_t *b = a ? bench_mem_alloc(bench_data) : NULL;
    if (!b)
        return;
    uint64_t sum = 0, x = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = mixv(i);
        a[i] = v;
        sum += v;
        x ^= v;
    }
    double t0 = bench_now();
    bench_ph_begin();
    for (size_t c = 0; c < n; c += chunk)
        sort_u64(a + c, chunk < n - c ? chunk : n - c);
    bench_ph_end("chunks", n, 0, 0);
    bench_ph_begin();
    kmerge(a, b, n, chunk);
    bench_ph_end("merge", n, 0, 0);
    double t1 = bench_now();
    /* a "total" phase: sums of the two */
    struct phase *p0 = &bench_res->ph[bench_res->nph - 2], *p1 = &bench_res->ph[bench_res->nph - 1];
    struct phase tot = *p1;
    snprintf(tot.name, sizeof tot.name, "total");
    tot.sec = t1 - t0;
    tot.faults += p0->faults;
    tot.major += p0->major;
    tot.minflt += p0->minflt;
    tot.majflt += p0->majflt;
    tot.io_rd += p0->io_rd;
    tot.io_wr += p0->io_wr;
    tot.st_rd += p0->st_rd;
    tot.st_wr += p0->st_wr;
    tot.evictions += p0->evictions;
    tot.writebacks += p0->writebacks;
    /* check: sorted, same sum and xor */
    uint64_t s2 = 0, x2 = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = b[i];
        s2 += v;
        x2 ^= v;
        bad += i && b[i - 1] > v;
    }
    if (s2 != sum || x2 != x)
        bad++;
    tot.sum = s2;
    tot.bad = bad;
    if (bench_res->nph < MAXPH)
        bench_res->ph[bench_res->nph++] = tot;
    bench_child_send();
    if (bad)
        bench_child_fail("sort: result not sorted or not a permutation (%" PRIu64 ")", bad);
    bench_mem_free(b, bench_data);
    bench_mem_free(a, bench_data);
}

