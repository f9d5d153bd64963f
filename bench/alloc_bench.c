/*
 * alloc_bench.c - upager_malloc against the C library's malloc on the
 * standard allocator benchmark workloads, in one run.
 *
 *   alloc_bench [--reps N] [--threads N] [--scale X] [--only glibc|upager] [BENCH...]
 *
 * BENCH is any of: pair larson xmalloc mstress cache-scratch glibc-simple
 * glibc-thread (default: all).  Each workload runs with glibc malloc and
 * with upager_malloc, through the same function pointers, interleaved
 * (the order alternates from one repetition to the next), --reps times
 * (default 3); it prints the median time of each and their ratio,
 * upager / glibc (below 1: upager is faster).  It also prints the faults
 * and evictions of the upager runs: with the default budget of 1G
 * (UPAGER_BUDGET, set here when unset) nothing pages.
 *
 * The workloads follow the originals (sizes, shapes, cross-thread
 * traffic), scaled to run in about a second each on two cores:
 *   pair          a lone malloc(32) + free, repeated: the latency of a pair
 *   larson        Larson & Krishnan's server simulation (as in
 *                 mimalloc-bench: sizes 8..1000, 1000 blocks a thread):
 *                 threads replace random blocks of a shared array, and
 *                 each thread's slice passes to a new thread, which frees
 *                 what the old one allocated
 *   xmalloc       xmalloc-test (Lever & Boreham): producer threads
 *                 allocate batches of blocks, consumer threads free them
 *   mstress       mimalloc-bench's stress.c: many threads, sizes from 8
 *                 bytes to hundreds of KiB, some blocks retained to the
 *                 end, pointers exchanged through a shared array
 *   cache-scratch Hoard's passive false sharing test: each thread frees a
 *                 small block the main thread allocated, then allocates,
 *                 writes and frees blocks of the same size in a loop
 *   glibc-simple  glibc's bench-malloc-simple: 25..1600 blocks of one
 *                 size, 16 bytes to 16 KiB, allocated then freed
 *   glibc-thread  glibc's bench-malloc-thread: a working set of 1024
 *                 blocks of 4..32K bytes (small ones likelier) replaced at
 *                 random, one loop per thread
 *
 * Built by make; never run by make check (bench/run_alloc runs it).
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "upager.h"

struct allocator {
    const char *name;
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*realloc)(void *, size_t);
    void *(*calloc)(size_t, size_t);
};

static const struct allocator sys_alloc = { "glibc", malloc, free, realloc, calloc };
static const struct allocator up_alloc = { "upager", upager_malloc, upager_free,
                                           upager_realloc, upager_calloc };

static int nthreads = 2;
static int only = -1; /* --only: 0 glibc, 1 upager (for profiling) */
static double scale = 1.0;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline uint64_t rnd(uint64_t *s) /* splitmix64 */
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void fail(const char *what)
{
    fprintf(stderr, "alloc_bench: %s\n", what);
    exit(1);
}

static void run_threads(int n, void *(*fn)(void *), void *args, size_t argsize)
{
    pthread_t *t = malloc((size_t)n * sizeof *t);
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[i], NULL, fn, (char *)args + (size_t)i * argsize) != 0)
            fail("pthread_create");
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    free(t);
}

/* ---- pair ---------------------------------------------------------------- */

static long pair_n(void) { return (long)(20000000 * scale); }

static double bench_pair(const struct allocator *a)
{
    long n = pair_n();
    double t = now();
    for (long i = 0; i < n; i++) {
        void *p = a->malloc(32);
        __asm__ volatile("" ::"r"(p) : "memory");
        a->free(p);
    }
    return now() - t;
}

/* ---- larson ---------------------------------------------------------------- */

enum { LARSON_MIN = 8, LARSON_MAX = 1000, LARSON_CHUNKS = 1000 };

struct larson_arg {
    const struct allocator *a;
    void **blocks;          /* this thread's slice of the shared array */
    long rounds;            /* replacements left in this generation     */
    int generations;        /* threads still to come after this one     */
    uint64_t seed;
};

static void *larson_thread(void *p)
{
    struct larson_arg *la = p;
    const struct allocator *a = la->a;
    for (long i = 0; i < la->rounds; i++) {
        size_t k = rnd(&la->seed) % LARSON_CHUNKS;
        a->free(la->blocks[k]);
        size_t sz = LARSON_MIN + rnd(&la->seed) % (LARSON_MAX - LARSON_MIN + 1);
        char *b = a->malloc(sz);
        if (!b)
            fail("larson: out of memory");
        b[0] = (char)sz; /* touch it, as the original does */
        b[sz - 1] = 1;
        la->blocks[k] = b;
    }
    /* As in Larson's benchmark: the slice passes to a new thread, which
     * frees the blocks this one allocated. */
    if (--la->generations > 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, larson_thread, la) != 0)
            fail("pthread_create");
        pthread_join(t, NULL);
    }
    return NULL;
}

static double bench_larson(const struct allocator *a)
{
    int n = nthreads;
    void **blocks = malloc((size_t)n * LARSON_CHUNKS * sizeof *blocks);
    struct larson_arg *args = calloc((size_t)n, sizeof *args);
    uint64_t seed = 4141;
    for (long i = 0; i < (long)n * LARSON_CHUNKS; i++) { /* warm-up, as in the original */
        size_t sz = LARSON_MIN + rnd(&seed) % (LARSON_MAX - LARSON_MIN + 1);
        blocks[i] = a->malloc(sz);
        memset(blocks[i], 0, 8 < sz ? 8 : sz);
    }
    for (int i = 0; i < n; i++) {
        args[i].a = a;
        args[i].blocks = blocks + (size_t)i * LARSON_CHUNKS;
        args[i].rounds = (long)(400000 * scale);
        args[i].generations = 10;
        args[i].seed = 4141 + (uint64_t)i;
    }
    double t = now();
    run_threads(n, larson_thread, args, sizeof *args);
    t = now() - t;
    for (long i = 0; i < (long)n * LARSON_CHUNKS; i++)
        a->free(blocks[i]);
    free(blocks);
    free(args);
    return t;
}

/* ---- xmalloc-test ---------------------------------------------------------- */

enum { XM_BATCH = 4096, XM_SIZE = 64 };

struct xm_batch {
    void *p[XM_BATCH];
    struct xm_batch *next;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct xm_batch *head;
    int queued;
    int producers_left;
} xq = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0 };

struct xm_arg {
    const struct allocator *a;
    long batches;
    uint64_t seed;
};

static void *xm_producer(void *p)
{
    struct xm_arg *xa = p;
    for (long b = 0; b < xa->batches; b++) {
        struct xm_batch *bt = malloc(sizeof *bt);
        for (int i = 0; i < XM_BATCH; i++) {
            /* xmalloc-test -s 64: sizes up to 64 bytes, random */
            size_t sz = 1 + rnd(&xa->seed) % XM_SIZE;
            char *q = xa->a->malloc(sz);
            if (!q)
                fail("xmalloc: out of memory");
            q[0] = 1;
            bt->p[i] = q;
        }
        pthread_mutex_lock(&xq.lock);
        while (xq.queued >= 64) /* bounded, like the original's bins */
            pthread_cond_wait(&xq.cond, &xq.lock);
        bt->next = xq.head;
        xq.head = bt;
        xq.queued++;
        pthread_cond_broadcast(&xq.cond);
        pthread_mutex_unlock(&xq.lock);
    }
    pthread_mutex_lock(&xq.lock);
    xq.producers_left--;
    pthread_cond_broadcast(&xq.cond);
    pthread_mutex_unlock(&xq.lock);
    return NULL;
}

static void *xm_consumer(void *p)
{
    struct xm_arg *xa = p;
    for (;;) {
        pthread_mutex_lock(&xq.lock);
        while (!xq.head && xq.producers_left > 0)
            pthread_cond_wait(&xq.cond, &xq.lock);
        struct xm_batch *bt = xq.head;
        if (bt) {
            xq.head = bt->next;
            xq.queued--;
            pthread_cond_broadcast(&xq.cond);
        }
        pthread_mutex_unlock(&xq.lock);
        if (!bt)
            return NULL;
        for (int i = 0; i < XM_BATCH; i++)
            xa->a->free(bt->p[i]);
        free(bt);
    }
}

static void *xm_role(void *p)
{
    struct xm_arg *xa = p;
    return xa->seed & 1 ? xm_consumer(p) : xm_producer(p);
}

static double bench_xmalloc(const struct allocator *a)
{
    int n = nthreads < 1 ? 1 : nthreads; /* n producers and n consumers */
    struct xm_arg *args = calloc(2 * (size_t)n, sizeof *args);
    for (int i = 0; i < 2 * n; i++) {
        args[i].a = a;
        args[i].batches = (long)(500 * scale);
        args[i].seed = ((uint64_t)i << 1) | (uint64_t)(i & 1); /* odd: a consumer */
    }
    xq.head = NULL;
    xq.queued = 0;
    xq.producers_left = n;
    double t = now();
    run_threads(2 * n, xm_role, args, sizeof *args);
    t = now() - t;
    free(args);
    return t;
}

/* ---- mstress (mimalloc-bench stress.c) -------------------------------------- */

enum { MS_TRANSFERS = 1000 };
static const uintptr_t ms_cookie = 0xbf58476d1ce4e5b9ULL;
static _Atomic(void *) ms_transfer[MS_TRANSFERS];
static const struct allocator *ms_a;
static long ms_scale = 50;

static uintptr_t ms_pick(uint64_t *r) { return (uintptr_t)rnd(r); }
static int ms_chance(unsigned perc, uint64_t *r) { return ms_pick(r) % 100 <= perc; }

static void *ms_alloc_items(size_t items, uint64_t *r)
{
    if (ms_chance(1, r)) {
        if (ms_chance(1, r))
            items *= 10000; /* 0.01%: up to 32 * 10000 words: 2.5 MiB */
        else if (ms_chance(10, r))
            items *= 1000;  /* 0.1%: large */
        else
            items *= 100;   /* 1%: medium */
    }
    if (items == 40)
        items++; /* pthreads uses that size for its thread stacks */
    uintptr_t *p = ms_a->calloc(items, sizeof(uintptr_t));
    if (!p)
        fail("mstress: out of memory");
    for (uintptr_t i = 0; i < items; i++)
        p[i] = (items - i) ^ ms_cookie;
    return p;
}

static void ms_free_items(void *p)
{
    if (!p)
        return;
    uintptr_t *q = p;
    uintptr_t items = q[0] ^ ms_cookie;
    for (uintptr_t i = 0; i < items; i++) {
        if ((q[i] ^ ms_cookie) != items - i)
            fail("mstress: memory corruption");
    }
    ms_a->free(p);
}

static void *ms_thread(void *arg)
{
    intptr_t tid = (intptr_t)(*(int *)arg);
    uint64_t r = (uint64_t)(tid + 1) * 43;
    const size_t max_item_shift = 5; /* 128 */
    const size_t max_item_retained_shift = max_item_shift + 2;
    size_t allocs = 100 * (size_t)ms_scale * (size_t)(tid % 8 + 1);
    size_t retain = allocs / 2;
    void **data = NULL;
    size_t data_size = 0, data_top = 0;
    void **retained = ms_a->calloc(retain, sizeof(void *));
    size_t retain_top = 0;

    while (allocs > 0 || retain > 0) {
        if (retain == 0 || (ms_chance(50, &r) && allocs > 0)) {
            allocs--;
            if (data_top >= data_size) {
                data_size += 100000;
                data = ms_a->realloc(data, data_size * sizeof(void *));
                if (!data)
                    fail("mstress: out of memory");
            }
            data[data_top++] = ms_alloc_items((size_t)1 << (ms_pick(&r) % max_item_shift), &r);
        } else {
            retained[retain_top++] =
                ms_alloc_items((size_t)1 << (ms_pick(&r) % max_item_retained_shift), &r);
            retain--;
        }
        if (ms_chance(66, &r) && data_top > 0) {
            size_t idx = ms_pick(&r) % data_top;
            ms_free_items(data[idx]);
            data[idx] = NULL;
        }
        if (ms_chance(25, &r) && data_top > 0) {
            size_t data_idx = ms_pick(&r) % data_top;
            size_t transfer_idx = ms_pick(&r) % MS_TRANSFERS;
            data[data_idx] = atomic_exchange(&ms_transfer[transfer_idx], data[data_idx]);
        }
    }
    for (size_t i = 0; i < retain_top; i++)
        ms_free_items(retained[i]);
    for (size_t i = 0; i < data_top; i++)
        ms_free_items(data[i]);
    ms_a->free(retained);
    ms_a->free(data);
    return NULL;
}

static double bench_mstress(const struct allocator *a)
{
    int n = 2 * nthreads; /* more threads than cores, as mstress runs */
    int iters = (int)(10 * scale) < 1 ? 1 : (int)(10 * scale);
    int *ids = malloc((size_t)n * sizeof *ids);
    uint64_t r = 42;
    ms_a = a;
    for (int i = 0; i < n; i++)
        ids[i] = i;
    double t = now();
    for (int it = 0; it < iters; it++) {
        run_threads(n, ms_thread, ids, sizeof *ids);
        for (int i = 0; i < MS_TRANSFERS; i++) {
            if (ms_chance(50, &r) || it + 1 == iters)
                ms_free_items(atomic_exchange(&ms_transfer[i], NULL));
        }
    }
    t = now() - t;
    free(ids);
    return t;
}

/* ---- cache-scratch ------------------------------------------------------------- */

struct cs_arg {
    const struct allocator *a;
    char *obj;          /* allocated by the main thread */
    int iterations, repetitions, size;
};

static void *cs_thread(void *p)
{
    struct cs_arg *c = p;
    c->a->free(c->obj);
    for (int i = 0; i < c->iterations; i++) {
        char *obj = c->a->malloc((size_t)c->size);
        for (int j = 0; j < c->repetitions; j++) {
            for (int k = 0; k < c->size; k++) {
                obj[k] = (char)k;
                volatile char ch = obj[k];
                ch++;
            }
        }
        c->a->free(obj);
    }
    return NULL;
}

static double bench_cache_scratch(const struct allocator *a)
{
    int n = nthreads;
    struct cs_arg *args = calloc((size_t)n, sizeof *args);
    for (int i = 0; i < n; i++) { /* neighbouring small blocks, one a thread */
        args[i].a = a;
        args[i].obj = a->malloc(8);
        args[i].iterations = 1000;
        args[i].repetitions = (int)(20000 * scale);
        args[i].size = 8;
    }
    double t = now();
    run_threads(n, cs_thread, args, sizeof *args);
    t = now() - t;
    free(args);
    return t;
}

/* ---- glibc bench-malloc-simple ---------------------------------------------- */

static double bench_glibc_simple(const struct allocator *a)
{
    static const int counts[] = { 25, 100, 400, 1600 };
    static void *blocks[1600];
    double total = 0;
    for (size_t size = 16; size <= 16384; size *= 2) {
        for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
            int n = counts[c];
            /* the same number of pairs for every count; fewer for big blocks */
            long iters = (long)(scale * 400000 / n / (size >= 4096 ? 4 : 1));
            double t = now();
            for (long it = 0; it < iters; it++) {
                for (int i = 0; i < n; i++)
                    blocks[i] = a->malloc(size);
                for (int i = 0; i < n; i++)
                    a->free(blocks[i]);
            }
            total += now() - t;
        }
    }
    return total;
}

/* ---- glibc bench-malloc-thread ---------------------------------------------- */

enum { GT_WS = 1024, GT_MIN = 4, GT_MAX = 32768, GT_RAND = 1024 };
static size_t gt_sizes[GT_RAND];

/* As glibc: sizes drawn with a probability inversely proportional to size. */
static void gt_init(void)
{
    uint64_t s = 1;
    const double min = GT_MIN, max = GT_MAX;
    for (int i = 0; i < GT_RAND; i++) {
        double u = (double)(rnd(&s) >> 11) / (double)(1ULL << 53);
        /* inverse CDF of density ~ 1/x on [min, max] */
        double x = min * __builtin_exp(u * __builtin_log(max / min));
        gt_sizes[i] = (size_t)x;
    }
}

struct gt_arg {
    const struct allocator *a;
    long iters;
    uint64_t seed;
};

static void *gt_thread(void *p)
{
    struct gt_arg *g = p;
    void *ws[GT_WS] = { 0 };
    for (long i = 0; i < g->iters; i++) {
        uint64_t r = rnd(&g->seed);
        size_t k = r % GT_WS;
        g->a->free(ws[k]);
        ws[k] = g->a->malloc(gt_sizes[(r >> 20) % GT_RAND]);
    }
    for (int k = 0; k < GT_WS; k++)
        g->a->free(ws[k]);
    return NULL;
}

static double bench_glibc_thread(const struct allocator *a)
{
    int n = nthreads;
    struct gt_arg *args = calloc((size_t)n, sizeof *args);
    for (int i = 0; i < n; i++) {
        args[i].a = a;
        args[i].iters = (long)(3000000 * scale);
        args[i].seed = 88172645463325252ULL + (uint64_t)i;
    }
    double t = now();
    run_threads(n, gt_thread, args, sizeof *args);
    t = now() - t;
    free(args);
    return t;
}

/* ---- driver --------------------------------------------------------------------- */

static const struct bench {
    const char *name;
    double (*fn)(const struct allocator *);
    const char *what;
} benches[] = {
    { "pair", bench_pair, "malloc(32)+free, ns a pair" },
    { "larson", bench_larson, "8..1000 B, blocks freed by the next thread" },
    { "xmalloc", bench_xmalloc, "producers allocate, consumers free" },
    { "mstress", bench_mstress, "mimalloc-bench stress, 2 threads a core" },
    { "cache-scratch", bench_cache_scratch, "passive false sharing" },
    { "glibc-simple", bench_glibc_simple, "16..16K, 25..1600 blocks, one thread" },
    { "glibc-thread", bench_glibc_thread, "4..32K working set, a thread a core" },
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int reps = 3;
    const char *want[16];
    int nwant = 0;
    long np = sysconf(_SC_NPROCESSORS_ONLN);
    nthreads = np > 0 ? (int)np : 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            nthreads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc)
            scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = !strcmp(argv[++i], "upager");
        else if (!strcmp(argv[i], "--help") || argv[i][0] == '-') {
            printf("usage: alloc_bench [--reps N] [--threads N] [--scale X] [--only glibc|upager]"
                   " [BENCH...]\n"
                   "BENCH: pair larson xmalloc mstress cache-scratch glibc-simple "
                   "glibc-thread\n");
            return argv[i][1] == '-' && !strcmp(argv[i], "--help") ? 0 : 2;
        } else if (nwant < 16)
            want[nwant++] = argv[i];
    }
    if (reps < 1 || nthreads < 1 || scale <= 0)
        fail("bad option value");
    setenv("UPAGER_BUDGET", "1G", 0);
    if (upager_init() != 0)
        fail("upager_init failed");
    gt_init();

    struct upager_stats s;
    upager_get_stats(&s);
    printf("# alloc_bench: %d threads, %d repetitions, scale %g, budget %zu MiB, page %zu KiB\n",
           nthreads, reps, scale, s.budget_bytes >> 20, s.page_size >> 10);
    printf("%-14s %12s %12s %8s %8s %8s  %s\n", "benchmark", "glibc", "upager", "ratio",
           "faults", "evict", "workload");
    for (size_t b = 0; b < sizeof benches / sizeof benches[0]; b++) {
        const struct bench *bn = &benches[b];
        int run = nwant == 0;
        for (int k = 0; k < nwant; k++)
            run |= !strcmp(want[k], bn->name);
        if (!run)
            continue;
        double tg[16], tu[16];
        struct upager_stats s0, s1;
        uint64_t faults = 0, evictions = 0;
        for (int r = 0; r < reps && r < 16; r++) {
            for (int k = 0; k < 2; k++) {
                bool up = (k + r) % 2 == 1; /* alternate which goes first */
                if (only >= 0 && up != (only == 1)) {
                    (up ? tu : tg)[r] = 1; /* not run: a ratio of nothing */
                    continue;
                }
                if (up) {
                    upager_get_stats(&s0);
                    tu[r] = bn->fn(&up_alloc);
                    upager_get_stats(&s1);
                    faults += s1.faults - s0.faults;
                    evictions += s1.evictions - s0.evictions;
                } else {
                    tg[r] = bn->fn(&sys_alloc);
                }
            }
        }
        int n = reps < 16 ? reps : 16;
        qsort(tg, (size_t)n, sizeof tg[0], cmp_double);
        qsort(tu, (size_t)n, sizeof tu[0], cmp_double);
        double g = tg[n / 2], u = tu[n / 2];
        if (bn->fn == bench_pair)
            printf("%-14s %10.1fns %10.1fns %8.2f %8llu %8llu  %s\n", bn->name,
                   g / (double)pair_n() * 1e9, u / (double)pair_n() * 1e9, u / g,
                   (unsigned long long)faults, (unsigned long long)evictions, bn->what);
        else
            printf("%-14s %11.3fs %11.3fs %8.2f %8llu %8llu  %s\n", bn->name, g, u, u / g,
                   (unsigned long long)faults, (unsigned long long)evictions, bn->what);
        fflush(stdout);
    }
    upager_get_stats(&s);
    if (s.allocated_bytes != 0)
        printf("# warning: %zu bytes still allocated with upager\n", s.allocated_bytes);
    return 0;
}
