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
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
