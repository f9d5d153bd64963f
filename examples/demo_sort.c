/*
 * demo_sort.c - sort an array of 64-bit keys many times larger than the
 * memory it is allowed to use.
 *
 *     demo_sort [MiB-of-keys]          (default 512 MiB: 64M keys)
 *
 * The keys live in upager memory under a budget of 32 MiB (set here with
 * upager_configure; UPAGER_BUDGET in the environment still wins).  The
 * program is an ordinary external merge sort, written for paging:
 *
 *   1. generate the keys sequentially (splitmix64, fixed seed), recording
 *      their sum and xor;
 *   2. sort runs of budget/4 bytes in place, one run at a time, so each run
 *      fits in memory while it is sorted (introsort: no temporary array,
 *      unlike glibc's qsort, which allocates one as large as its input);
 *   3. merge up to `fan_in` runs at a time into a second upager array,
 *      reading every run front to back, until one run is left;
 *   4. check that the result is sorted and has the same sum and xor.
 *
 * Every pass reads the array front to back, which is what a pager (and the
 * disk under it) does best.  The program exits 1 when the result is wrong.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <upager.h>

#define MIB (1024.0 * 1024.0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* splitmix64: a tiny, good, reproducible generator. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* ---- Step 2: in-place introsort of one run ---------------------------- */

static void swap(uint64_t *a, uint64_t *b)
{
    uint64_t t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(uint64_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint64_t v = a[i];
        size_t j = i;
        for (; j > 0 && a[j - 1] > v; j--)
            a[j] = a[j - 1];
        a[j] = v;
    }
}

static void sift_down(uint64_t *a, size_t root, size_t n)
{
    for (size_t child; (child = 2 * root + 1) < n; root = child) {
        if (child + 1 < n && a[child + 1] > a[child])
            child++;
        if (a[root] >= a[child])
            return;
        swap(&a[root], &a[child]);
    }
}

static void heap_sort(uint64_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t end = n; end-- > 1;) {
        swap(&a[0], &a[end]);
        sift_down(a, 0, end);
    }
}

/* Quicksort with a median-of-three pivot; falls back to heapsort when the
 * recursion gets too deep, and to insertion sort on short ranges. */
static void intro_sort(uint64_t *a, size_t n, int depth)
{
    while (n > 16) {
        if (depth-- == 0) {
            heap_sort(a, n);
            return;
        }
        size_t mid = n / 2;
        if (a[mid] < a[0])
            swap(&a[mid], &a[0]);
        if (a[n - 1] < a[0])
            swap(&a[n - 1], &a[0]);
        if (a[n - 1] < a[mid])
            swap(&a[n - 1], &a[mid]);
        uint64_t pivot = a[mid];

        size_t i = 0, j = n - 1;    /* Hoare partition */
        for (;;) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i >= j)
                break;
            swap(&a[i++], &a[j--]);
        }
        /* Recurse into the smaller half, loop on the larger one. */
        if (j + 1 < n - j - 1) {
            intro_sort(a, j + 1, depth);
            a += j + 1;
            n -= j + 1;
        } else {
            intro_sort(a + j + 1, n - j - 1, depth);
            n = j + 1;
        }
    }
    insertion_sort(a, n);
}

static void sort_run(uint64_t *a, size_t n)
{
    int depth = 0;
    for (size_t m = n; m > 1; m >>= 1)
        depth += 2;
    intro_sort(a, n, depth);
}

/* ---- Step 3: k-way merge with a small heap of cursors ------------------ */

struct cursor {
    const uint64_t *next, *end;     /* the unread part of one run */
};

/* Restores the heap order (smallest *next on top) below `i`. */
static void heap_fix(struct cursor *h, size_t i, size_t n)
{
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && *h[c + 1].next < *h[c].next)
            c++;
        if (*h[i].next <= *h[c].next)
            return;
        struct cursor t = h[i];
        h[i] = h[c];
        h[c] = t;
    }
}

/* Merges the sorted runs src[lo..hi) of `run` keys each (the last one may
 * be shorter) into dst[lo..hi).  `heap` has room for the runs. */
static void merge_runs(const uint64_t *src, uint64_t *dst, size_t lo,
                       size_t hi, size_t run, struct cursor *heap)
{
    size_t k = 0;
    for (size_t s = lo; s < hi; s += run) {
        size_t e = s + run < hi ? s + run : hi;
        heap[k++] = (struct cursor){ src + s, src + e };
    }
    for (size_t i = k / 2; i-- > 0;)
        heap_fix(heap, i, k);

    uint64_t *out = dst + lo;
    while (k > 0) {
        *out++ = *heap[0].next++;
        if (heap[0].next == heap[0].end)
            heap[0] = heap[--k];
        heap_fix(heap, 0, k);
    }
}

/* ---- The demo --------------------------------------------------------- */

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 512;
    if (mib == 0 || mib > (SIZE_MAX >> 22)) {
        fprintf(stderr, "usage: %s [MiB-of-keys]\n", argv[0]);
        return 2;
    }
    size_t bytes = mib << 20;
    size_t n = bytes / sizeof(uint64_t);    /* keys */

    setvbuf(stdout, NULL, _IOLBF, 0);   /* progress shows through a pipe too */

    /* A default budget for this program; UPAGER_BUDGET overrides it. */
    if (upager_configure("budget", "32M") != 0 || upager_init() != 0) {
        fprintf(stderr, "demo_sort: upager could not start\n");
        return 1;
    }
    struct upager_stats st;
    upager_get_stats(&st);

    /* Runs of a quarter of the budget stay resident while they are
     * sorted; a merge reads one page of each of its runs at a time, so
     * its fan-in is bounded the same way. */
    size_t run = (st.budget_bytes / 4 / st.page_size) * st.page_size / sizeof(uint64_t);
    if (run == 0)
        run = st.page_size / sizeof(uint64_t);
    size_t fan_in = st.budget_bytes / 4 / st.page_size;
    if (fan_in < 2)
        fan_in = 2;

    uint64_t *a = upager_malloc(bytes);
    uint64_t *b = upager_malloc(bytes);
    struct cursor *heap = malloc(fan_in * sizeof(*heap));
    if (a == NULL || b == NULL || heap == NULL) {
        perror("demo_sort: allocation");
        return 1;
    }
    printf("demo_sort: %zu MiB of keys (%zu keys), budget %.1f MiB, page %zu KiB\n",
           mib, n, st.budget_bytes / MIB, st.page_size / 1024);

    /* 1. Generate. */
    double t0 = now(), t = t0;
    uint64_t seed = 42, sum = 0, xsum = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t k = splitmix64(&seed);
        a[i] = k;
        sum += k;
        xsum ^= k;
    }
    printf("  generate  %7.2f s\n", now() - t);

    /* 2. Sort each run in place. */
    t = now();
    for (size_t s = 0; s < n; s += run)
        sort_run(a + s, s + run < n ? run : n - s);
    size_t nruns = (n + run - 1) / run;
    printf("  sort runs %7.2f s  (%zu run%s of %.1f MiB)\n", now() - t,
           nruns, nruns == 1 ? "" : "s", run * sizeof(uint64_t) / MIB);

    /* 3. Merge fan_in runs at a time, back and forth between a and b. */
    t = now();
    int passes = 0;
    while (run < n) {
        size_t group = run > n / fan_in ? n : run * fan_in;
        for (size_t lo = 0; lo < n; lo += group)
            merge_runs(a, b, lo, lo + group < n ? lo + group : n, run, heap);
        uint64_t *tmp = a;  /* the merged runs are in b now */
        a = b;
        b = tmp;
        run = group;
        passes++;
    }
    printf("  merge     %7.2f s  (%d pass%s of up to %zu runs)\n", now() - t,
           passes, passes == 1 ? "" : "es", fan_in);

    /* 4. Verify: sorted, and the same keys (by sum and xor). */
    t = now();
    uint64_t sum2 = 0, xsum2 = 0;
    size_t unsorted = 0;
    for (size_t i = 0; i < n; i++) {
        sum2 += a[i];
        xsum2 ^= a[i];
        if (i > 0 && a[i - 1] > a[i])
            unsorted++;
    }
    double total = now() - t0;
    printf("  verify    %7.2f s\n", now() - t);
    printf("total %.2f s, %.0f MiB/s of keys sorted\n", total, bytes / MIB / total);

    upager_get_stats(&st);
    printf("faults %llu (major %llu), evictions %llu, writebacks %llu\n",
           (unsigned long long)st.faults, (unsigned long long)st.major_faults,
           (unsigned long long)st.evictions, (unsigned long long)st.writebacks);
    printf("read %.1f MiB, written %.1f MiB, peak resident %.1f MiB of a %.1f MiB budget\n",
           st.bytes_read / MIB, st.bytes_written / MIB,
           st.peak_resident_bytes / MIB, st.budget_bytes / MIB);

    int ok = unsorted == 0 && sum2 == sum && xsum2 == xsum;
    if (!ok)
        printf("FAILED: %zu keys out of order, sum %s, xor %s\n", unsorted,
               sum2 == sum ? "ok" : "differs", xsum2 == xsum ? "ok" : "differs");
    else
        printf("OK: %zu keys sorted\n", n);

    free(heap);
    upager_free(a);
    upager_free(b);
    return ok ? 0 : 1;
}
