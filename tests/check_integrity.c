/*
 * check_integrity.c - data survives paging under threads.
 *
 * Four threads allocate, write, read, reallocate and free at random, with
 * ten times the budget in live data, and every upager block is mirrored in
 * a plain malloc block: they must agree byte for byte, checked along the
 * way and at the end.  The threads also share one large block, where each
 * writes its own interleaved stripes and reads everything.  A second case
 * makes all threads fault on the same non-resident page at the same
 * moment, reading and writing it.
 *
 * Across fork, a child uses memory it allocates itself and never reaches
 * the parent's frames or store.
 *
 * The seeds are fixed (UPAGER_TEST_SEED replaces them) and every failure
 * message carries the seed of the thread that saw it.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "testutil.h"

enum {
    NTHREADS = 4,
    MAX_BLOCKS = 40,          /* live blocks per thread                  */
    OPS = 10000,              /* operations per thread                   */
    VERIFY_EVERY = 500,       /* full comparison of a thread's blocks    */
    STRIPE = 1024,            /* bytes of the shared block per stripe    */
};
#define THREAD_CAP (11 * TU_MIB)   /* live bytes per thread            */
#define SHARED_LEN (8 * TU_MIB)    /* the block all threads share      */
#define SOURCE_LEN (TU_MIB)        /* random bytes to copy from        */

struct block {
    unsigned char *up;     /* in the arena         */
    unsigned char *mirror; /* plain malloc         */
    size_t size;
};

struct worker {
    int id;
    uint64_t seed, rng;
    pthread_t thread;
    struct block blocks[MAX_BLOCKS];
    int nblocks;
    size_t live;                  /* bytes in blocks[]                 */
    unsigned char *source;        /* random bytes, plain memory        */
    uint64_t moved;               /* bytes written or compared         */
    char error[512];              /* the first failure, if any         */
};

static unsigned char *shared_up, *shared_mirror;
static atomic_int workers_done;

static void worker_fail(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (w->error[0] != '\0')
        return;
    n = snprintf(w->error, sizeof w->error, "thread %d, seed %#llx: ", w->id,
                 (unsigned long long)w->seed);
    va_start(ap, fmt);
    vsnprintf(w->error + n, sizeof w->error - (size_t)n, fmt, ap);
    va_end(ap);
}

/* Compares [off, off+len) of a block with its mirror; 0 when equal. */
static int compare(struct worker *w, const unsigned char *up,
                   const unsigned char *mirror, size_t off, size_t len,
                   const char *what)
{
    w->moved += len;
    if (memcmp(up + off, mirror + off, len) == 0)
        return 0;
    for (size_t i = off; i < off + len; i++) {
        if (up[i] != mirror[i]) {
            worker_fail(w, "%s: byte %zu of %p is %#x, expected %#x", what, i,
                 (const void *)up, up[i], mirror[i]);
            break;
        }
    }
    return -1;
}

/* A size from 1 byte to 16 MiB, spread evenly over the orders of
 * magnitude. */
static size_t random_size(struct worker *w)
{
    unsigned bits = (unsigned)tu_below(&w->rng, 25);
    return 1 + (size_t)tu_below(&w->rng, (uint64_t)1 << bits);
}

static void fill_random(struct worker *w, unsigned char *up, unsigned char *mirror,
                        size_t len)
{
    for (size_t done = 0; done < len;) {
        size_t src = tu_below(&w->rng, SOURCE_LEN);
        size_t n = SOURCE_LEN - src;
        if (n > len - done)
            n = len - done;
        memcpy(mirror + done, w->source + src, n);
        memcpy(up + done, w->source + src, n);
        done += n;
    }
    w->moved += len;
}

static int op_alloc(struct worker *w)
{
    size_t size = random_size(w);
    struct block *b;

    if (w->nblocks == MAX_BLOCKS)
        return 0;
    if (w->live + size > THREAD_CAP)
        size = (THREAD_CAP - w->live) / 2 + 1;
    b = &w->blocks[w->nblocks];
    switch (tu_below(&w->rng, 3)) {
    case 0:
        b->up = upager_calloc(1, size);
        break;
    case 1:
        b->up = upager_aligned_alloc((size_t)1 << tu_below(&w->rng, 16), size);
        break;
    default:
        b->up = upager_malloc(size);
        break;
    }
    b->mirror = malloc(size);
    if (b->up == NULL || b->mirror == NULL) {
        worker_fail(w, "allocation of %zu bytes failed", size);
        return -1;
    }
    b->size = size;
    w->nblocks++;
    w->live += size;
    fill_random(w, b->up, b->mirror, size);
    return 0;
}

static int op_free(struct worker *w)
{
    if (w->nblocks == 0)
        return 0;
    int i = (int)tu_below(&w->rng, (uint64_t)w->nblocks);
    struct block *b = &w->blocks[i];

    if (compare(w, b->up, b->mirror, 0, b->size, "before free"))
        return -1;
    upager_free(b->up);
    free(b->mirror);
    w->live -= b->size;
    *b = w->blocks[--w->nblocks];
    return 0;
}

static int op_realloc(struct worker *w)
{
    if (w->nblocks == 0)
        return 0;
    struct block *b = &w->blocks[tu_below(&w->rng, (uint64_t)w->nblocks)];
    size_t size = random_size(w);

    if (w->live - b->size + size > THREAD_CAP)
        size = b->size / 2 + 1;
    unsigned char *up = upager_realloc(b->up, size);
    unsigned char *mirror = realloc(b->mirror, size);
    if (up == NULL || mirror == NULL) {
        worker_fail(w, "realloc of %zu to %zu bytes failed", b->size, size);
        return -1;
    }
    size_t keep = size < b->size ? size : b->size;
    w->live = w->live - b->size + size;
    b->up = up;
    b->mirror = mirror;
    b->size = size;
    if (compare(w, up, mirror, 0, keep, "after realloc"))
        return -1;
    if (size > keep)
        fill_random(w, up + keep, mirror + keep, size - keep);
    return 0;
}

/* One random write or read on one of the thread's blocks. */
static int op_access(struct worker *w)
{
    if (w->nblocks == 0)
        return 0;
    struct block *b = &w->blocks[tu_below(&w->rng, (uint64_t)w->nblocks)];
    size_t off = tu_below(&w->rng, b->size);
    size_t room = b->size - off;
    size_t len;
    uint64_t word;

    switch (tu_below(&w->rng, 4)) {
    case 0: /* memcpy of a random length */
        len = 1 + tu_below(&w->rng, room < 256 * TU_KIB ? room : 256 * TU_KIB);
        fill_random(w, b->up + off, b->mirror + off, len);
        return 0;
    case 1: /* a single byte */
        b->up[off] = b->mirror[off] = (unsigned char)tu_rand(&w->rng);
        w->moved++;
        return 0;
    case 2: /* an 8-byte word, aligned when the offset allows */
        if (room < 8)
            return 0;
        word = tu_rand(&w->rng);
        if (((uintptr_t)(b->up + off) & 7) == 0)
            *(uint64_t *)(b->up + off) = word;
        else
            memcpy(b->up + off, &word, 8);
        memcpy(b->mirror + off, &word, 8);
        w->moved += 8;
        return 0;
    default: /* a read of a random length */
        len = 1 + tu_below(&w->rng, room < 256 * TU_KIB ? room : 256 * TU_KIB);
        return compare(w, b->up, b->mirror, off, len, "read");
    }
}

/* The shared block: write inside one of the thread's own stripes, compare
 * one of them, or read a range that crosses everyone's stripes. */
static int op_shared(struct worker *w)
{
    size_t nstripes = SHARED_LEN / STRIPE;
    size_t stripe = tu_below(&w->rng, nstripes / NTHREADS) * NTHREADS + (size_t)w->id;
    size_t start = stripe * STRIPE;
    size_t a = tu_below(&w->rng, STRIPE), len = 1 + tu_below(&w->rng, STRIPE - a);

    switch (tu_below(&w->rng, 3)) {
    case 0:
        fill_random(w, shared_up + start + a, shared_mirror + start + a, len);
        return 0;
    case 1:
        return compare(w, shared_up, shared_mirror, start, STRIPE, "own stripe");
    default:
        tu_touch_read(shared_up + tu_below(&w->rng, SHARED_LEN - 64 * STRIPE),
                      64 * STRIPE, 64);
        w->moved += 64 * STRIPE;
        return 0;
    }
}

static int verify_all(struct worker *w, const char *when)
{
    for (int i = 0; i < w->nblocks; i++) {
        struct block *b = &w->blocks[i];
        if (compare(w, b->up, b->mirror, 0, b->size, when))
            return -1;
    }
    for (size_t s = (size_t)w->id; s < SHARED_LEN / STRIPE; s += NTHREADS) {
        if (compare(w, shared_up, shared_mirror, s * STRIPE, STRIPE, when))
            return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int rc = 0;

    for (int op = 0; op < OPS && rc == 0; op++) {
        uint64_t r = tu_below(&w->rng, 100);
        if (r < 8)
            rc = op_alloc(w);
        else if (r < 12)
            rc = op_free(w);
        else if (r < 16)
            rc = op_realloc(w);
        else if (r < 30)
            rc = op_shared(w);
        else
            rc = op_access(w);
        if (rc == 0 && op % VERIFY_EVERY == VERIFY_EVERY - 1)
            rc = verify_all(w, "periodic check");
    }
    if (rc == 0)
        verify_all(w, "final check");
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

/* Four threads of random work over ten times the budget, each block
 * checked against its mirror; the budget holds all along. */
START_TEST(test_threads_random)
{
    static struct worker workers[NTHREADS];
    struct upager_stats s;
    size_t max_resident = 0, max_allocated = 0;
    uint64_t moved = 0;
    uint64_t seed = tu_seed(0x5eed1234);

    tu_env("4M", "65536");
    tu_init();
    shared_up = upager_calloc(1, SHARED_LEN);
    shared_mirror = calloc(1, SHARED_LEN);
    ck_assert_ptr_nonnull(shared_up);
    ck_assert_ptr_nonnull(shared_mirror);

    for (int t = 0; t < NTHREADS; t++) {
        struct worker *w = &workers[t];
        memset(w, 0, sizeof *w);
        w->id = t;
        w->seed = w->rng = seed + (uint64_t)t * 1000003;
        w->source = malloc(SOURCE_LEN);
        ck_assert_ptr_nonnull(w->source);
        for (size_t i = 0; i < SOURCE_LEN; i += 8) {
            uint64_t v = tu_rand(&w->rng);
            memcpy(w->source + i, &v, 8);
        }
    }
    for (int t = 0; t < NTHREADS; t++)
        ck_assert_int_eq(pthread_create(&workers[t].thread, NULL, worker_main,
                                        &workers[t]), 0);
    /* While they run, sample the resident bytes. */
    while (atomic_load(&workers_done) < NTHREADS) {
        tu_stats(&s);
        if (s.resident_bytes > max_resident)
            max_resident = s.resident_bytes;
        if (s.allocated_bytes > max_allocated)
            max_allocated = s.allocated_bytes;
        usleep(5000);
    }
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(workers[t].thread, NULL);
        ck_assert_msg(workers[t].error[0] == '\0', "%s", workers[t].error);
        moved += workers[t].moved;
    }

    /* The whole shared block, every stripe, against its mirror. */
    for (size_t i = 0; i < SHARED_LEN; i++)
        if (shared_up[i] != shared_mirror[i])
            ck_abort_msg("seed %#llx: shared byte %zu (stripe of thread %zu) is "
                         "%#x, expected %#x", (unsigned long long)seed, i,
                         (i / STRIPE) % NTHREADS, shared_up[i], shared_mirror[i]);

    tu_stats(&s);
    printf("integrity: up to %zu MiB allocated, %llu MiB written or compared, "
           "%llu faults, %llu major, %llu evictions, peak resident %zu KiB of "
           "%zu KiB\n", max_allocated >> 20,
           (unsigned long long)(moved >> 20), (unsigned long long)s.faults,
           (unsigned long long)s.major_faults, (unsigned long long)s.evictions,
           s.peak_resident_bytes >> 10, s.budget_bytes >> 10);
    ck_assert_uint_ge(max_allocated, 8 * s.budget_bytes);
    ck_assert_uint_ge(moved, 8 * s.budget_bytes);
    ck_assert_uint_gt(s.evictions, 1000);
    ck_assert_uint_le(max_resident, s.budget_bytes);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_uint_eq(s.io_errors, 0);

    for (int t = 0; t < NTHREADS; t++) {
        struct worker *w = &workers[t];
        for (int i = 0; i < w->nblocks; i++) {
            upager_free(w->blocks[i].up);
            free(w->blocks[i].mirror);
        }
        free(w->source);
    }
    upager_free(shared_up);
    free(shared_mirror);
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
}
END_TEST

/* ---- all threads on one page ------------------------------------------ */

enum { TARGET_PAGES = 32, FLUSH_PAGES = 48, ROUNDS = 600 };

struct same_page {
    pthread_barrier_t start, done;
    unsigned char *target, *flush;
    size_t ps;
    uint64_t page_seed[TARGET_PAGES]; /* what each target page holds */
    char error[NTHREADS][256];
};

static struct same_page sp;

static void *same_page_main(void *arg)
{
    int t = (int)(intptr_t)arg;
    size_t ps = sp.ps, quarter = ps / NTHREADS;

    for (int r = 0; r < ROUNDS; r++) {
        int k = r % TARGET_PAGES, mode = r % 3;
        unsigned char *page = sp.target + (size_t)k * ps;
        size_t page_off = (size_t)k * ps;

        if (t == 0) /* push every target page out of memory: every 4K, so
                       that the pages come in whole, not a block each */
            tu_touch_read(sp.flush + (size_t)(r % 2) * (FLUSH_PAGES / 2) * ps,
                          (FLUSH_PAGES / 2) * ps, 4096);
        pthread_barrier_wait(&sp.start);

        uint64_t seed = sp.page_seed[k], new_seed = 1000 + (uint64_t)r;
        size_t bad = (size_t)-1;
        if (mode == 0) { /* everyone reads the whole page */
            bad = tu_pattern_check(page, page_off, ps, seed);
        } else if (mode == 1) { /* everyone writes a quarter with new data */
            tu_pattern_fill(page + t * quarter, page_off + t * quarter, quarter,
                            new_seed);
        } else if (t < 2) { /* half read ... */
            bad = tu_pattern_check(page, page_off, ps, seed);
        } else { /* ... while half rewrite their quarter with the same data */
            tu_pattern_fill(page + t * quarter, page_off + t * quarter, quarter, seed);
        }
        if (bad != (size_t)-1 && sp.error[t][0] == '\0')
            snprintf(sp.error[t], sizeof sp.error[t],
                     "thread %d, round %d (mode %d): page %d byte %zu differs",
                     t, r, mode, k, bad);
        pthread_barrier_wait(&sp.done);

        if (mode == 1) {
            bad = tu_pattern_check(page, page_off, ps, new_seed);
            if (bad != (size_t)-1 && sp.error[t][0] == '\0')
                snprintf(sp.error[t], sizeof sp.error[t],
                         "thread %d, round %d: page %d byte %zu differs after "
                         "the concurrent writes", t, r, k, bad);
            pthread_barrier_wait(&sp.done);
            if (t == 0)
                sp.page_seed[k] = new_seed;
        }
    }
    return NULL;
}

/* All threads fault on the same non-resident page at the same moment, to
 * read it, to write disjoint parts of it, or some reading while the others
 * write: every thread sees the page complete and the writes all land. */
START_TEST(test_threads_same_page)
{
    pthread_t th[NTHREADS];
    struct upager_stats s0, s1;

    tu_env("1M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    sp.ps = tu_init();
    sp.target = upager_aligned_alloc(sp.ps, TARGET_PAGES * sp.ps);
    sp.flush = upager_aligned_alloc(sp.ps, FLUSH_PAGES * sp.ps);
    ck_assert_ptr_nonnull(sp.target);
    ck_assert_ptr_nonnull(sp.flush);
    for (int k = 0; k < TARGET_PAGES; k++) {
        sp.page_seed[k] = 7 + (uint64_t)k;
        tu_pattern_fill(sp.target + (size_t)k * sp.ps, (size_t)k * sp.ps, sp.ps,
                        sp.page_seed[k]);
    }
    memset(sp.flush, 1, FLUSH_PAGES * sp.ps);
    ck_assert_int_eq(pthread_barrier_init(&sp.start, NULL, NTHREADS), 0);
    ck_assert_int_eq(pthread_barrier_init(&sp.done, NULL, NTHREADS), 0);

    tu_stats(&s0);
    for (int t = 0; t < NTHREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, same_page_main,
                                        (void *)(intptr_t)t), 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(th[t], NULL);
    tu_stats(&s1);
    for (int t = 0; t < NTHREADS; t++)
        ck_assert_msg(sp.error[t][0] == '\0', "%s", sp.error[t]);
    for (int k = 0; k < TARGET_PAGES; k++) {
        size_t bad = tu_pattern_check(sp.target + (size_t)k * sp.ps,
                                      (size_t)k * sp.ps, sp.ps, sp.page_seed[k]);
        ck_assert_msg(bad == (size_t)-1, "page %d differs at %zu at the end", k, bad);
    }
    /* The flushes went through the store: the target page, touched before
     * 24 pages were read through a 16-page budget, was out of memory when
     * the round began. */
    ck_assert_uint_ge(s1.major_faults - s0.major_faults,
                      (uint64_t)ROUNDS * (FLUSH_PAGES / 2 - 16));
    ck_assert_uint_le(s1.peak_resident_bytes, s1.budget_bytes);
    ck_assert_uint_eq(s1.io_errors, 0);
}
END_TEST

/* ---- fork ---------------------------------------------------------------- */

static unsigned char *fork_parent_block;

/* The child allocates, fills and checks more than its budget of its own;
 * exit status 0 when its data came back intact. */
static void fork_child_allocates(void *arg)
{
    const size_t len = 8 * TU_MIB;
    unsigned char *q = upager_malloc(len);

    (void)arg;
    if (q == NULL)
        _exit(2);
    tu_pattern_fill(q, 0, len, 302);
    if (tu_pattern_check(q, 0, len, 302) != (size_t)-1)
        _exit(3);
    upager_free(q);
}

/* The child writes where the parent's block is, resident or not.  It may
 * die of it; what it must not do is change the parent's data. */
static void fork_child_writes_parent(void *arg)
{
    volatile unsigned char *p = fork_parent_block;

    (void)arg;
    p[0] = 0xEE;               /* resident in the parent when it forked */
    p[6 * TU_MIB] = 0xEE;      /* evicted to the parent's store          */
}

/* A child of fork allocates and uses memory of its own while the parent's
 * data, resident and evicted, stays intact, and the parent goes on paging
 * afterwards. */
START_TEST(test_fork_child_allocates)
{
    const size_t len = 8 * TU_MIB;
    struct upager_stats s;
    char *err;

    tu_env("2M", "65536");
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 301);

    int status = tu_run_child(fork_child_allocates, NULL, &err);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x, stderr: %s", (unsigned)status, err);
    free(err);

    size_t bad = tu_pattern_check(p, 0, len, 301);
    ck_assert_msg(bad == (size_t)-1, "parent data differs at %zu after fork", bad);
    tu_pattern_fill(p, 0, len, 303);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 303), (size_t)-1);
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
}
END_TEST

/* A child that writes into the parent's block (a page resident in the
 * parent and a page in its store) changes nothing the parent sees. */
START_TEST(test_fork_child_cannot_write_parent)
{
    const size_t len = 8 * TU_MIB;
    char *err;

    tu_env("2M", "65536");
    fork_parent_block = upager_malloc(len);
    ck_assert_ptr_nonnull(fork_parent_block);
    tu_pattern_fill(fork_parent_block, 0, len, 304);
    ck_assert_uint_eq(tu_pattern_check(fork_parent_block, 0, TU_MIB, 304), (size_t)-1);
    /* The first MiB resident and writable (dirty) when the child starts. */
    tu_pattern_fill(fork_parent_block, 0, TU_MIB, 304);

    int status = tu_run_child(fork_child_writes_parent, NULL, &err);
    printf("integrity: a child writing into the parent's block: %s %d\n",
           WIFSIGNALED(status) ? "killed by signal" : "exit status",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    free(err);

    size_t bad = tu_pattern_check(fork_parent_block, 0, len, 304);
    ck_assert_msg(bad == (size_t)-1, "parent data differs at %zu after the child "
                  "wrote into it", bad);
    tu_touch_read(fork_parent_block, len, 4096); /* through the store again */
    ck_assert_uint_eq(tu_pattern_check(fork_parent_block, 0, len, 304), (size_t)-1);
}
END_TEST

Suite *integrity_suite(void)
{
    Suite *s = suite_create("integrity");
    TCase *tc;

    tc = tcase_create("random");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_threads_random);
    suite_add_tcase(s, tc);

    tc = tcase_create("same_page");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_threads_same_page);
    suite_add_tcase(s, tc);

    tc = tcase_create("fork");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fork_child_allocates);
    tcase_add_test(tc, test_fork_child_cannot_write_parent);
    suite_add_tcase(s, tc);

    return s;
}
