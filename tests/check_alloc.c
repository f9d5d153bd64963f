/*
 * check_alloc.c - the allocation API follows the malloc contract.
 *
 * malloc, calloc, realloc, aligned_alloc, free and usable_size, from one
 * byte to tens of MiB, with a budget smaller than the data so that the
 * contents go through the store; allocated_bytes follows the live bytes;
 * and the misuses glibc catches (double free, a pointer upager did not
 * return) abort the process.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check_suites.h"
#include "testutil.h"

/* Every case: a 16 MiB budget of 64 KiB pages. */
static void setup_env(void)
{
    tu_env("16M", "65536");
}

static int is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* malloc(0) returns distinct non-NULL pointers that free accepts. */
START_TEST(test_malloc_zero)
{
    setup_env();
    void *a = upager_malloc(0);
    void *b = upager_malloc(0);

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_ptr_ne(a, b);
    upager_free(a);
    upager_free(b);
}
END_TEST

/* Sizes from 1 byte to 24 MiB, all alive at once (more than the budget):
 * each block is 16-byte aligned, has usable_size >= its size, and keeps
 * its own contents, so no two blocks overlap. */
START_TEST(test_malloc_sizes)
{
    static const size_t sizes[] = {
        1, 2, 3, 7, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 100, 127,
        128, 129, 255, 256, 257, 511, 512, 513, 1000, 1024, 1025, 2047, 2048,
        2049, 4095, 4096, 4097, 8191, 8192, 8193, 16384, 32767, 32768, 32769,
        65535, 65536, 65537, 131072, 200000, 1 << 20, (1 << 20) + 1,
        3 * (1 << 20) + 17, 8 << 20, 24 << 20,
    };
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *p[N];
    size_t total = 0;

    setup_env();
    for (int i = 0; i < N; i++) {
        p[i] = upager_malloc(sizes[i]);
        ck_assert_msg(p[i] != NULL, "malloc(%zu): %s", sizes[i], strerror(errno));
        ck_assert_msg(is_aligned(p[i], 16), "malloc(%zu) = %p not 16-aligned",
                      sizes[i], (void *)p[i]);
        ck_assert_uint_ge(upager_usable_size(p[i]), sizes[i]);
        tu_pattern_fill(p[i], 0, sizes[i], (uint64_t)i + 1);
        total += sizes[i];
    }
    ck_assert_uint_gt(total, 32 * TU_MIB); /* twice the budget */
    for (int i = 0; i < N; i++) {
        size_t bad = tu_pattern_check(p[i], 0, sizes[i], (uint64_t)i + 1);
        ck_assert_msg(bad == (size_t)-1, "block %d (%zu bytes) differs at %zu",
                      i, sizes[i], bad);
    }
    for (int i = 0; i < N; i++)
        upager_free(p[i]);
}
END_TEST

/* Many small blocks of one size are distinct and keep their contents. */
START_TEST(test_malloc_many_small)
{
    enum { N = 50000 };
    uint64_t **p = malloc(N * sizeof *p);
    struct upager_stats s;

    setup_env();
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < N; i++) {
        p[i] = upager_malloc(24);
        ck_assert_ptr_nonnull(p[i]);
        p[i][0] = (uint64_t)i;
        p[i][1] = ~(uint64_t)i;
        p[i][2] = (uint64_t)i * 3;
    }
    for (int i = 0; i < N; i++) {
        if (p[i][0] != (uint64_t)i || p[i][1] != ~(uint64_t)i
            || p[i][2] != (uint64_t)i * 3)
            ck_abort_msg("block %d overwritten", i);
    }
    for (int i = 0; i < N; i++)
        upager_free(p[i]);
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
    free(p);
}
END_TEST

/* Allocations that cannot be satisfied fail with NULL and ENOMEM: more
 * than the address space, and more than the arena reserved. */
START_TEST(test_malloc_too_large)
{
    tu_env("16M", "65536");
    tu_setenv("UPAGER_ARENA", "1G");
    errno = 0;
    ck_assert_ptr_null(upager_malloc(SIZE_MAX));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(upager_malloc(SIZE_MAX / 2));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(upager_malloc(2 * TU_GIB)); /* beyond the 1G arena */
    ck_assert_int_eq(errno, ENOMEM);
    /* The failures left the allocator usable. */
    void *p = upager_malloc(TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, TU_MIB);
    upager_free(p);
}
END_TEST

/* A small arena runs out: malloc fails with ENOMEM and nothing is lost;
 * freeing gives the address space back, so the same allocations succeed
 * again, many times over. */
START_TEST(test_arena_exhaustion_and_reuse)
{
    enum { MAX = 64 };
    void *p[MAX];
    int n = 0, first = -1;

    tu_env("4M", "65536");
    tu_setenv("UPAGER_ARENA", "64M");
    for (int round = 0; round < 5; round++) {
        for (n = 0; n < MAX; n++) {
            errno = 0;
            p[n] = upager_malloc(4 * TU_MIB);
            if (p[n] == NULL)
                break;
            *(volatile char *)p[n] = 1;
        }
        ck_assert_msg(n < MAX, "a 64M arena held %d blocks of 4M", n);
        ck_assert_int_eq(errno, ENOMEM);
        ck_assert_int_gt(n, 8); /* at least half the arena was usable */
        if (first < 0)
            first = n;
        ck_assert_msg(n == first, "round %d: %d blocks, first round %d", round, n,
                      first);
        for (int i = 0; i < n; i++)
            upager_free(p[i]);
    }
    /* Small blocks still come after the large ones were all given back. */
    void *q = upager_malloc(100);
    ck_assert_ptr_nonnull(q);
    upager_free(q);
}
END_TEST

/* calloc returns zeroed memory, fresh or recycled: blocks dirtied and
 * freed, small and large, come back zeroed. */
START_TEST(test_calloc_zeroes)
{
    static const size_t sizes[] = { 1, 24, 100, 4000, 70000, TU_MIB, 5 * TU_MIB };

    setup_env();
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        for (int round = 0; round < 20; round++) {
            unsigned char *p = upager_calloc(1, n);
            ck_assert_msg(p != NULL, "calloc(1, %zu)", n);
            size_t bad = tu_find_not(p, n, 0);
            if (bad != (size_t)-1)
                ck_abort_msg("calloc(1, %zu) round %d: byte %zu is %d", n, round,
                             bad, p[bad]);
            memset(p, 0xA5, n); /* dirty it for the next round's reuse */
            upager_free(p);
            /* Also recycle through malloc, so the slot is dirty whichever
             * path handed it out. */
            p = upager_malloc(n);
            ck_assert_ptr_nonnull(p);
            memset(p, 0x5A, n);
            upager_free(p);
        }
    }
    /* nmemb * size, both non-trivial. */
    uint32_t *a = upager_calloc(1000, sizeof(uint32_t));
    ck_assert_ptr_nonnull(a);
    for (int i = 0; i < 1000; i++)
        ck_assert_uint_eq(a[i], 0);
    upager_free(a);
}
END_TEST

/* calloc with nmemb * size overflowing returns NULL with ENOMEM. */
START_TEST(test_calloc_overflow)
{
    setup_env();
    errno = 0;
    ck_assert_ptr_null(upager_calloc(SIZE_MAX / 2 + 1, 2));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(upager_calloc(SIZE_MAX, SIZE_MAX));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(upager_calloc((SIZE_MAX >> 16) + 2, (size_t)1 << 16));
    ck_assert_int_eq(errno, ENOMEM);
    /* Zero elements is not an overflow. */
    void *p = upager_calloc(0, SIZE_MAX);
    ck_assert_ptr_nonnull(p);
    upager_free(p);
}
END_TEST

/* realloc keeps the contents up to the smaller size through growing and
 * shrinking, small to large and large to small. */
START_TEST(test_realloc_contents)
{
    static const size_t steps[] = {
        1, 17, 64, 100, 1000, 4096, 5000, 65536, 100000, TU_MIB,
        20 * TU_MIB, 3 * TU_MIB, 200000, 70000, 3000, 40, 8, 1,
        12 * TU_MIB, 33,
    };
    unsigned char *p = NULL;
    size_t cur = 0;

    setup_env();
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++) {
        size_t n = steps[k];
        size_t keep = cur < n ? cur : n;
        unsigned char *q = upager_realloc(p, n);

        ck_assert_msg(q != NULL, "realloc(%zu -> %zu)", cur, n);
        ck_assert_uint_ge(upager_usable_size(q), n);
        size_t bad = tu_pattern_check(q, 0, keep, 77);
        ck_assert_msg(bad == (size_t)-1,
                      "realloc %zu -> %zu lost byte %zu", cur, n, bad);
        tu_pattern_fill(q, 0, n, 77); /* the whole new block for the next step */
        p = q;
        cur = n;
    }
    upager_free(p);
}
END_TEST

/* realloc(NULL, n) is malloc(n); realloc(p, 0) frees p and returns NULL. */
START_TEST(test_realloc_null_and_zero)
{
    struct upager_stats s0, s1, s2;

    setup_env();
    tu_stats(&s0);
    unsigned char *p = upager_realloc(NULL, 5000);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(upager_usable_size(p), 5000);
    memset(p, 7, 5000);
    tu_stats(&s1);
    ck_assert_uint_ge(s1.allocated_bytes, s0.allocated_bytes + 5000);
    ck_assert_ptr_null(upager_realloc(p, 0));
    tu_stats(&s2);
    ck_assert_uint_eq(s2.allocated_bytes, s0.allocated_bytes);

    /* The same for a large block. */
    p = upager_realloc(NULL, 4 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 7, 4 * TU_MIB);
    ck_assert_ptr_null(upager_realloc(p, 0));
    tu_stats(&s2);
    ck_assert_uint_eq(s2.allocated_bytes, s0.allocated_bytes);
}
END_TEST

/* A realloc that fails returns NULL with ENOMEM and leaves the block as it
 * was, still owned by the caller. */
START_TEST(test_realloc_failure_keeps_block)
{
    setup_env();
    unsigned char *p = upager_malloc(3000);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, 3000, 5);
    errno = 0;
    ck_assert_ptr_null(upager_realloc(p, SIZE_MAX - 4096));
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 3000, 5), (size_t)-1);
    p = upager_realloc(p, 6000); /* still a live block */
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 3000, 5), (size_t)-1);
    upager_free(p);
}
END_TEST

/* aligned_alloc honours every power-of-two alignment from 1 to 2 MiB, for
 * sizes smaller than, equal to and larger than the alignment, and the
 * whole block is usable. */
START_TEST(test_aligned_alloc)
{
    setup_env();
    for (size_t a = 1; a <= 2 * TU_MIB; a <<= 1) {
        const size_t sizes[] = { 1, a, 3 * a + 5 };
        for (int k = 0; k < 3; k++) {
            unsigned char *p = upager_aligned_alloc(a, sizes[k]);
            ck_assert_msg(p != NULL, "aligned_alloc(%zu, %zu): %s", a, sizes[k],
                          strerror(errno));
            ck_assert_msg(is_aligned(p, a), "aligned_alloc(%zu, %zu) = %p", a,
                          sizes[k], (void *)p);
            ck_assert_uint_ge(upager_usable_size(p), sizes[k]);
            memset(p, 0xCC, sizes[k]);
            ck_assert_uint_eq(p[sizes[k] - 1], 0xCC);
            upager_free(p);
        }
    }
}
END_TEST

/* aligned_alloc with an alignment that is not a power of two returns NULL
 * with EINVAL. */
START_TEST(test_aligned_alloc_bad_alignment)
{
    static const size_t bad[] = { 0, 3, 24, 48, 1000, 4095, 65537, SIZE_MAX };

    setup_env();
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        errno = 0;
        void *p = upager_aligned_alloc(bad[k], 4096);
        ck_assert_msg(p == NULL, "aligned_alloc(%zu) returned %p", bad[k], p);
        ck_assert_msg(errno == EINVAL, "aligned_alloc(%zu): errno %d", bad[k],
                      errno);
    }
}
END_TEST

/* usable_size: 0 for NULL; otherwise at least the size asked for, and all
 * of it may be written without touching a neighbouring block. */
START_TEST(test_usable_size)
{
    static const size_t sizes[] = { 1, 13, 40, 500, 3000, 9000, 70000, 2 * TU_MIB + 3 };
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *p[N], *guard[N];

    setup_env();
    ck_assert_uint_eq(upager_usable_size(NULL), 0);
    for (int i = 0; i < N; i++) {
        p[i] = upager_malloc(sizes[i]);
        guard[i] = upager_malloc(sizes[i]); /* likely the neighbour */
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_ptr_nonnull(guard[i]);
        memset(guard[i], 0x11, sizes[i]);
    }
    for (int i = 0; i < N; i++) {
        size_t u = upager_usable_size(p[i]);
        ck_assert_uint_ge(u, sizes[i]);
        memset(p[i], 0xEE, u);
    }
    for (int i = 0; i < N; i++) {
        size_t bad = tu_find_not(guard[i], sizes[i], 0x11);
        ck_assert_msg(bad == (size_t)-1, "guard %d byte %zu overwritten", i, bad);
        upager_free(p[i]);
        upager_free(guard[i]);
    }
}
END_TEST

/* allocated_bytes goes up by at least the size of each block and back to
 * where it was when the blocks are freed. */
START_TEST(test_allocated_bytes)
{
    static const size_t sizes[] = { 10, 1000, 50000, TU_MIB, 9 * TU_MIB };
    enum { N = sizeof sizes / sizeof sizes[0] };
    struct upager_stats s0, s;
    void *p[N];
    size_t sum = 0;

    setup_env();
    tu_stats(&s0);
    ck_assert_uint_eq(s0.allocated_bytes, 0);
    for (int i = 0; i < N; i++) {
        p[i] = upager_malloc(sizes[i]);
        ck_assert_ptr_nonnull(p[i]);
        sum += sizes[i];
        tu_stats(&s);
        ck_assert_uint_ge(s.allocated_bytes, sum);
        /* ... and not wildly more: at most a page of slack per block. */
        ck_assert_uint_le(s.allocated_bytes, sum + (size_t)(i + 1) * s.page_size);
    }
    for (int i = N - 1; i >= 0; i--) {
        size_t before;
        tu_stats(&s);
        before = s.allocated_bytes;
        upager_free(p[i]);
        tu_stats(&s);
        ck_assert_uint_le(s.allocated_bytes + sizes[i], before);
    }
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
}
END_TEST

/* free(NULL) does nothing, before and after initialisation. */
START_TEST(test_free_null)
{
    struct upager_stats s;

    setup_env();
    upager_free(NULL);
    void *p = upager_malloc(100);
    ck_assert_ptr_nonnull(p);
    upager_free(NULL);
    tu_stats(&s);
    ck_assert_uint_ge(s.allocated_bytes, 100);
    upager_free(p);
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
}
END_TEST

/* Freed memory is reused: allocating and freeing the same sizes many
 * times does not make allocated_bytes or the RSS grow. */
START_TEST(test_free_reuses)
{
    struct upager_stats s;
    size_t rss0 = 0;

    setup_env();
    for (int round = 0; round < 200; round++) {
        void *a = upager_malloc(100), *b = upager_malloc(70000);
        void *c = upager_malloc(2 * TU_MIB);
        ck_assert_ptr_nonnull(a);
        ck_assert_ptr_nonnull(b);
        ck_assert_ptr_nonnull(c);
        memset(a, 1, 100);
        memset(b, 2, 70000);
        memset(c, 3, 2 * TU_MIB);
        upager_free(c);
        upager_free(b);
        upager_free(a);
        if (round == 10)
            rss0 = tu_rss();
    }
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
    ck_assert_uint_le(tu_rss(), rss0 + TU_MIB);
}
END_TEST


/* ---- threads and the fast path ----------------------------------------- */

static double now_s(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* A block with its pattern: its bytes are tu_pattern(seed) from offset 0. */
struct sblock {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

enum { ST_THREADS = 8, ST_LIVE = 48, ST_MBOX = 256, ST_ITERS = 2500 };

/* Blocks posted by one thread for another to check and free. */
static struct {
    pthread_mutex_t lock;
    struct sblock b[ST_MBOX];
    int n;
} mbox = { PTHREAD_MUTEX_INITIALIZER, { { NULL, 0, 0 } }, 0 };

static _Atomic int st_errors;
static char st_msg[256];

/* Records the first failure of a worker (ck_assert is for the main
 * thread only). */
static void st_fail(const char *fmt, ...)
{
    va_list ap;

    if (atomic_fetch_add(&st_errors, 1) != 0)
        return;
    va_start(ap, fmt);
    vsnprintf(st_msg, sizeof st_msg, fmt, ap);
    va_end(ap);
}

/* Mostly small, sometimes up to 1 MiB. */
static size_t st_size(uint64_t *r)
{
    uint64_t k = tu_below(r, 100);

    if (k < 70)
        return 1 + tu_below(r, 256);
    if (k < 90)
        return 257 + tu_below(r, 16 * TU_KIB);
    if (k < 98)
        return 16 * TU_KIB + tu_below(r, 240 * TU_KIB);
    return 256 * TU_KIB + tu_below(r, 768 * TU_KIB + 1);
}

static void st_check(const struct sblock *b, const char *when)
{
    size_t bad = tu_pattern_check(b->p, 0, b->n, b->seed);

    if (bad != (size_t)-1)
        st_fail("%s: block %p of %zu bytes differs at byte %zu (overlap?)", when,
                (void *)b->p, b->n, bad);
}

static int st_new(struct sblock *b, uint64_t *r, uint64_t seed)
{
    size_t n = st_size(r), align = 16;

    if (tu_below(r, 10) == 0) {
        align = (size_t)1 << (4 + tu_below(r, 9)); /* 16 .. 4096 */
        b->p = upager_aligned_alloc(align, n);
    } else {
        b->p = upager_malloc(n);
    }
    if (b->p == NULL) {
        st_fail("malloc(%zu) failed", n);
        return -1;
    }
    if (((uintptr_t)b->p & (align - 1)) != 0)
        st_fail("%p not aligned to %zu", (void *)b->p, align);
    if (upager_usable_size(b->p) < n)
        st_fail("usable_size %zu < %zu", upager_usable_size(b->p), n);
    b->n = n;
    b->seed = seed;
    tu_pattern_fill(b->p, 0, n, seed);
    return 0;
}

static void *st_worker(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    uint64_t r = tu_seed(0x5eed) ^ (id * 0x9e3779b97f4a7c15ULL);
    struct sblock live[ST_LIVE];
    int nlive = 0;

    for (int it = 0; it < ST_ITERS && atomic_load(&st_errors) == 0; it++) {
        uint64_t op = tu_below(&r, 100);
        uint64_t seed = (id << 32) | (uint64_t)it;

        if (op < 40 && nlive < ST_LIVE) {
            if (st_new(&live[nlive], &r, seed) == 0)
                nlive++;
        } else if (op < 60 && nlive > 0) { /* free one of its own */
            int k = (int)tu_below(&r, (uint64_t)nlive);
            st_check(&live[k], "free");
            upager_free(live[k].p);
            live[k] = live[--nlive];
        } else if (op < 75 && nlive > 0) { /* realloc keeps the contents */
            int k = (int)tu_below(&r, (uint64_t)nlive);
            struct sblock *b = &live[k];
            size_t n2 = st_size(&r), keep = b->n < n2 ? b->n : n2;
            unsigned char *q = upager_realloc(b->p, n2);

            if (q == NULL) {
                st_fail("realloc(%zu -> %zu) failed", b->n, n2);
                break;
            }
            if (((uintptr_t)q & 15) != 0 || upager_usable_size(q) < n2)
                st_fail("realloc: %p misaligned or too small", (void *)q);
            b->p = q;
            b->n = keep;
            st_check(b, "realloc");
            tu_pattern_fill(q + keep, keep, n2 - keep, b->seed);
            b->n = n2;
        } else if (op < 88 && nlive > 0) { /* post one for another thread */
            int k = (int)tu_below(&r, (uint64_t)nlive);
            pthread_mutex_lock(&mbox.lock);
            if (mbox.n < ST_MBOX) {
                mbox.b[mbox.n++] = live[k];
                live[k] = live[--nlive];
            }
            pthread_mutex_unlock(&mbox.lock);
        } else { /* check and free one another thread posted */
            struct sblock b = { NULL, 0, 0 };
            pthread_mutex_lock(&mbox.lock);
            if (mbox.n > 0) {
                int k = (int)tu_below(&r, (uint64_t)mbox.n);
                b = mbox.b[k];
                mbox.b[k] = mbox.b[--mbox.n];
            }
            pthread_mutex_unlock(&mbox.lock);
            if (b.p != NULL) {
                st_check(&b, "cross-thread free");
                upager_free(b.p);
            }
        }
    }
    while (nlive > 0) {
        st_check(&live[--nlive], "final free");
        upager_free(live[nlive].p);
    }
    return NULL;
}

/* Eight threads allocate, reallocate and free random sizes from 1 byte to
 * 1 MiB, a third of them freed by another thread than the one that
 * allocated them; every block's bytes are checked against its own pattern
 * before it is freed (so no two live blocks overlap), each block is
 * aligned and as large as asked.  The budget is smaller than the data at
 * its peak, so blocks also go through the store.  When all threads have
 * exited, allocated_bytes is back to exactly 0: thread caches included.
 * With pages of 64K, 4K (slabs of several pages) and 2M (size classes up
 * to 2M). */
START_TEST(test_threads_random)
{
    static const char *const geometry[][2] = {
        { "16M", "65536" }, { "16M", "4096" }, { "64M", "2M" },
    };
    pthread_t t[ST_THREADS];
    struct upager_stats s;

    tu_env(geometry[_i][0], geometry[_i][1]);
    tu_init();
    for (uintptr_t i = 0; i < ST_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, st_worker, (void *)i), 0);
    for (int i = 0; i < ST_THREADS; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(atomic_load(&st_errors) == 0, "%d errors, first: %s",
                  atomic_load(&st_errors), st_msg);
    for (int i = 0; i < mbox.n; i++) {
        size_t bad = tu_pattern_check(mbox.b[i].p, 0, mbox.b[i].n, mbox.b[i].seed);
        ck_assert_msg(bad == (size_t)-1, "posted block %d differs at %zu", i, bad);
        upager_free(mbox.b[i].p);
    }
    tu_stats(&s);
    printf("alloc: 8 threads, %zu KiB pages: %llu faults, %llu evictions, peak %zu KiB\n",
           s.page_size >> 10, (unsigned long long)s.faults, (unsigned long long)s.evictions,
           s.peak_resident_bytes >> 10);
    ck_assert_uint_eq(s.allocated_bytes, 0);
    ck_assert_uint_eq(s.io_errors, 0);
}
END_TEST

/* Thread exchange for test_thread_exit_returns_cache. */
enum { TX_N = 2000, TX_SIZE = 48 };
static void *tx_blocks[TX_N];
static void *tx_from_main[100];

static void *tx_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < TX_N; i++) {
        tx_blocks[i] = upager_malloc(TX_SIZE);
        if (tx_blocks[i] == NULL)
            return (void *)1;
        memset(tx_blocks[i], 0x3C, TX_SIZE);
    }
    for (int i = 0; i < TX_N; i += 2) { /* half freed here, half left to main */
        upager_free(tx_blocks[i]);
        tx_blocks[i] = NULL;
    }
    for (int i = 0; i < 100; i++) /* blocks main allocated, freed here */
        upager_free(tx_from_main[i]);
    return NULL; /* its cache goes back as it exits */
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

/* A thread that exits with blocks in its cache gives them back: the
 * counts stay exact across cross-thread frees and the exit, and the same
 * small blocks allocated again come from the pages already used, not new
 * ones (freed blocks are reused before new pages are touched). */
START_TEST(test_thread_exit_returns_cache)
{
    pthread_t t;
    void *ret;
    struct upager_stats s;
    static uintptr_t pages[TX_N + 100];
    size_t npages = 0;

    tu_env("16M", "65536");
    size_t ps = tu_init();
    for (int i = 0; i < 100; i++) {
        tx_from_main[i] = upager_malloc(TX_SIZE);
        ck_assert_ptr_nonnull(tx_from_main[i]);
        pages[npages++] = (uintptr_t)tx_from_main[i] & ~(uintptr_t)(ps - 1);
    }
    ck_assert_int_eq(pthread_create(&t, NULL, tx_worker, NULL), 0);
    pthread_join(t, &ret);
    ck_assert_ptr_null(ret);
    size_t u = upager_usable_size(tx_blocks[1]);
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, (TX_N / 2) * u);
    for (int i = 1; i < TX_N; i += 2) {
        ck_assert_uint_eq(tu_find_not(tx_blocks[i], TX_SIZE, 0x3C), (size_t)-1);
        pages[npages++] = (uintptr_t)tx_blocks[i] & ~(uintptr_t)(ps - 1);
        upager_free(tx_blocks[i]);
    }
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
    qsort(pages, npages, sizeof pages[0], cmp_ptr);

    /* Every page the worker used held at least one block main saw, or
     * was a neighbour: allocate the same number again and check each
     * lands on a page of the first round. */
    uint64_t memfd0 = tu_memfd_bytes();
    for (int i = 0; i < TX_N; i++) {
        tx_blocks[i] = upager_malloc(TX_SIZE);
        ck_assert_ptr_nonnull(tx_blocks[i]);
        uintptr_t pg = (uintptr_t)tx_blocks[i] & ~(uintptr_t)(ps - 1);
        ck_assert_msg(bsearch(&pg, pages, npages, sizeof pages[0], cmp_ptr) != NULL,
                      "block %d at %p: a new page, though freed blocks were there", i,
                      tx_blocks[i]);
    }
    ck_assert_uint_le(tu_memfd_bytes(), memfd0);
    for (int i = 0; i < TX_N; i++)
        upager_free(tx_blocks[i]);
    tu_stats(&s);
    ck_assert_uint_eq(s.allocated_bytes, 0);
}
END_TEST

/* Once warm, a million malloc(32) + free pairs take the thread cache
 * only: no fault, no eviction, no store I/O, no new kernel mapping or
 * frame (so no mprotect or hole punch on the way), allocated_bytes
 * unchanged, and well under a microsecond a pair. */
START_TEST(test_fast_path_no_faults)
{
    enum { N = 1000000 };
    struct upager_stats s0, s1;

    tu_env("16M", "65536");
    tu_init();
    void *keep = upager_malloc(32);
    ck_assert_ptr_nonnull(keep);
    for (int i = 0; i < 1000; i++) {
        char *p = upager_malloc(32);
        ck_assert_ptr_nonnull(p);
        memset(p, i, 32);
        upager_free(p);
    }
    /* Each helper once first, so that its own allocations are done. */
    uint64_t memfd0 = tu_memfd_bytes();
    long maps0 = tu_maps_count();
    memfd0 = tu_memfd_bytes();
    maps0 = tu_maps_count();
    tu_stats(&s0);
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        volatile char *p = upager_malloc(32);
        p[0] = (char)i;
        upager_free((void *)p);
    }
    double dt = now_s() - t0;
    tu_stats(&s1);
    long maps1 = tu_maps_count();
    uint64_t memfd1 = tu_memfd_bytes();
    printf("alloc: %d malloc(32)+free pairs: %.1f ns a pair\n", N, dt / N * 1e9);
    ck_assert_uint_eq(s1.faults, s0.faults);
    ck_assert_uint_eq(s1.evictions, s0.evictions);
    ck_assert_uint_eq(s1.bytes_written, s0.bytes_written);
    ck_assert_uint_eq(s1.bytes_read, s0.bytes_read);
    ck_assert_uint_eq(s1.allocated_bytes, s0.allocated_bytes);
    ck_assert_int_eq(maps1, maps0);
    ck_assert_uint_eq(memfd1, memfd0);
    ck_assert_msg(dt < 1.0, "%d pairs took %.3f s", N, dt);
    upager_free(keep);
}
END_TEST

/* A block of a few hundred KiB freed and allocated again in a loop reuses
 * its pages: after the first round, no more faults. */
START_TEST(test_large_reuse_no_faults)
{
    enum { SIZE = 300 * 1024 };
    struct upager_stats s0, s1;

    tu_env("16M", "65536");
    tu_init();
    for (int i = 0; i < 3; i++) {
        char *p = upager_malloc(SIZE);
        ck_assert_ptr_nonnull(p);
        memset(p, i, SIZE);
        upager_free(p);
    }
    tu_stats(&s0);
    for (int i = 0; i < 1000; i++) {
        char *p = upager_malloc(SIZE);
        ck_assert_ptr_nonnull(p);
        memset(p, i, SIZE);
        upager_free(p);
    }
    tu_stats(&s1);
    ck_assert_uint_eq(s1.faults, s0.faults);
    ck_assert_uint_eq(s1.allocated_bytes, 0);
}
END_TEST

/* realloc grows a large block in place while the pages after it are
 * free, and shrinking stays in place, small or large. */
START_TEST(test_realloc_in_place)
{
    setup_env();
    unsigned char *p = upager_malloc(TU_MIB);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, TU_MIB, 5);
    unsigned char *q = upager_realloc(p, 2 * TU_MIB - 100);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_ge(upager_usable_size(q), 2 * TU_MIB - 100);
    ck_assert_uint_eq(tu_pattern_check(q, 0, TU_MIB, 5), (size_t)-1);
    tu_pattern_fill(q, 0, 2 * TU_MIB - 100, 6);
    q = upager_realloc(p, 1500 * TU_KIB);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(tu_pattern_check(q, 0, 1500 * TU_KIB, 6), (size_t)-1);
    q = upager_realloc(p, 100);
    ck_assert_ptr_eq(q, p);
    ck_assert_uint_eq(tu_pattern_check(q, 0, 100, 6), (size_t)-1);
    upager_free(q);

    unsigned char *s = upager_malloc(1000);
    ck_assert_ptr_nonnull(s);
    memset(s, 7, 1000);
    ck_assert_ptr_eq(upager_realloc(s, 10), s);
    ck_assert_uint_eq(tu_find_not(s, 10, 7), (size_t)-1);
    upager_free(s);
    struct upager_stats st;
    tu_stats(&st);
    ck_assert_uint_eq(st.allocated_bytes, 0);
}
END_TEST

/* Empty slabs stay for reuse, then go back once they have been empty for
 * a while (ten seconds), at the next cache flush or refill: the page of a
 * freed block is live right after the frees, and no longer ten seconds
 * later (upager_pin tells: it refuses memory that holds no allocation). */
START_TEST(test_empty_slabs_go_back_later)
{
    enum { SIZE = 64, N = 20 * 65536 / SIZE };
    char **p = malloc(N * sizeof *p);
    struct timespec pause = { 10, 500 * 1000 * 1000 };

    tu_env("512M", "65536");
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < N; i++) {
        p[i] = upager_malloc(SIZE);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], 0x5C, SIZE);
    }
    char *first = p[0];
    for (int i = 0; i < N; i++)
        upager_free(p[i]);
    ck_assert_int_eq(upager_pin(first, 1, 0), 0); /* kept */
    ck_assert_int_eq(upager_unpin(first, 1), 0);
    nanosleep(&pause, NULL);
    for (int i = 0; i < 300; i++) /* refills, then flushes */
        p[i] = upager_malloc(SIZE);
    for (int i = 0; i < 300; i++)
        upager_free(p[i]);
    ck_assert_int_eq(upager_pin(first, 1, 0), EINVAL); /* given back */
    free(p);
}
END_TEST

/* A freed run small enough for the run cache (a sixteenth of the budget)
 * stays for reuse, and the next allocation of its size gets it back; once
 * upager_set_budget lowers the budget, the same run freed again is given
 * back to the pager at once (upager_pin refuses it). */
START_TEST(test_run_cache_follows_budget)
{
    const size_t len = 2 * TU_MIB;

    tu_env("64M", "65536");
    char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, len);
    upager_free(p);
    ck_assert_int_eq(upager_pin(p, 1, 0), 0); /* kept */
    ck_assert_int_eq(upager_unpin(p, 1), 0);
    char *q = upager_malloc(len);
    ck_assert_ptr_eq(q, p);
    ck_assert_int_eq(upager_set_budget(8 * TU_MIB), 0);
    upager_free(q);
    ck_assert_int_eq(upager_pin(p, 1, 0), EINVAL); /* given back */
}
END_TEST

/* ---- misuse aborts, as in glibc ---------------------------------------- */

/* A small block freed twice aborts. */
START_TEST(test_double_free_small)
{
    setup_env();
    void *p = upager_malloc(32);
    ck_assert_ptr_nonnull(p);
    upager_free(p);
    upager_free(p);
}
END_TEST

/* A large block freed twice aborts. */
START_TEST(test_double_free_large)
{
    setup_env();
    void *p = upager_malloc(4 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    upager_free(p);
    upager_free(p);
}
END_TEST

/* realloc(p, 0) freed p: freeing it again aborts. */
START_TEST(test_free_after_realloc_zero)
{
    setup_env();
    void *p = upager_malloc(200);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_null(upager_realloc(p, 0));
    upager_free(p);
}
END_TEST

/* Freeing a stack address aborts. */
START_TEST(test_free_stack)
{
    char local[64];

    setup_env();
    void *p = upager_malloc(32); /* the library is initialised */
    ck_assert_ptr_nonnull(p);
    upager_free(local);
}
END_TEST

/* Freeing a pointer from the C library's malloc aborts. */
START_TEST(test_free_libc_pointer)
{
    setup_env();
    void *p = upager_malloc(32);
    void *q = malloc(32);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(q);
    upager_free(q);
}
END_TEST

/* Freeing a pointer inside a large block (not its start) aborts. */
START_TEST(test_free_interior_large)
{
    setup_env();
    char *p = upager_malloc(4 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    upager_free(p + 65536);
}
END_TEST

/* Freeing a pointer inside a small block (not its start) aborts. */
START_TEST(test_free_interior_small)
{
    setup_env();
    char *p = upager_malloc(64);
    ck_assert_ptr_nonnull(p);
    upager_free(p + 16);
}
END_TEST

Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *tc;

    tc = tcase_create("malloc");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_malloc_zero);
    tcase_add_test(tc, test_malloc_sizes);
    tcase_add_test(tc, test_malloc_many_small);
    tcase_add_test(tc, test_malloc_too_large);
    tcase_add_test(tc, test_arena_exhaustion_and_reuse);
    tcase_add_test(tc, test_usable_size);
    tcase_add_test(tc, test_allocated_bytes);
    tcase_add_test(tc, test_free_null);
    tcase_add_test(tc, test_free_reuses);
    suite_add_tcase(s, tc);

    tc = tcase_create("calloc");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_calloc_zeroes);
    tcase_add_test(tc, test_calloc_overflow);
    suite_add_tcase(s, tc);

    tc = tcase_create("realloc");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_realloc_contents);
    tcase_add_test(tc, test_realloc_null_and_zero);
    tcase_add_test(tc, test_realloc_failure_keeps_block);
    tcase_add_test(tc, test_realloc_in_place);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_threads_random, 0, 3);
    tcase_add_test(tc, test_thread_exit_returns_cache);
    tcase_add_test(tc, test_fast_path_no_faults);
    tcase_add_test(tc, test_large_reuse_no_faults);
    tcase_add_test(tc, test_empty_slabs_go_back_later);
    tcase_add_test(tc, test_run_cache_follows_budget);
    suite_add_tcase(s, tc);

    tc = tcase_create("aligned_alloc");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_aligned_alloc);
    tcase_add_test(tc, test_aligned_alloc_bad_alignment);
    suite_add_tcase(s, tc);

    tc = tcase_create("misuse");
    tcase_set_timeout(tc, 30);
    tcase_add_test_raise_signal(tc, test_double_free_small, SIGABRT);
    tcase_add_test_raise_signal(tc, test_double_free_large, SIGABRT);
    tcase_add_test_raise_signal(tc, test_free_after_realloc_zero, SIGABRT);
    tcase_add_test_raise_signal(tc, test_free_stack, SIGABRT);
    tcase_add_test_raise_signal(tc, test_free_libc_pointer, SIGABRT);
    tcase_add_test_raise_signal(tc, test_free_interior_large, SIGABRT);
    tcase_add_test_raise_signal(tc, test_free_interior_small, SIGABRT);
    suite_add_tcase(s, tc);

    return s;
}
