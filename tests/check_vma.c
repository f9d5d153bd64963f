/*
 * check_vma.c - the kernel's mapping limit and the library's metadata.
 *
 * Every run of pages with its own protection is a kernel mapping (VMA),
 * and a process may have vm.max_map_count of them.  Random touches over
 * twice a large budget must keep the mappings far below that, and leave
 * the process able to malloc and mmap.  The library's metadata grows with
 * the memory in use, not with the 1T arena it reserves.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check_suites.h"
#include "internal.h"
#include "testutil.h"

/* The value a touched page holds at its first byte. */
static unsigned char page_mark(size_t k)
{
    return (unsigned char)(k % 251 + 1);
}

/* Touches one byte of each of `n` pages of `ps` bytes at p, in a random
 * order, writing about half of them; then reads them all back in another
 * random order and checks them.  Returns the most lines /proc/self/maps
 * had, sampled along the way. */
static long random_touches(unsigned char *p, size_t n, size_t ps, uint64_t seed)
{
    uint32_t *order = malloc(n * sizeof *order);
    unsigned char *written = calloc(n, 1);
    uint64_t rng = seed;
    long max_maps = tu_maps_count();

    ck_assert_ptr_nonnull(order);
    ck_assert_ptr_nonnull(written);
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++)
            order[i] = (uint32_t)i;
        for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = tu_below(&rng, i + 1);
            uint32_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        for (size_t i = 0; i < n; i++) {
            size_t k = order[i];
            volatile unsigned char *b = p + k * ps;
            if (pass == 0 && (tu_rand(&rng) & 1)) {
                *b = page_mark(k);
                written[k] = 1;
            } else {
                unsigned char want = written[k] ? page_mark(k) : 0, got = *b;
                if (got != want)
                    ck_abort_msg("seed %#llx: page %zu holds %d, expected %d",
                                 (unsigned long long)seed, k, got, want);
            }
            if (i % 256 == 0) {
                long m = tu_maps_count();
                if (m > max_maps)
                    max_maps = m;
            }
        }
    }
    free(order);
    free(written);
    return max_maps;
}

/* After the library has run, the process can still map memory: malloc of
 * 1 MiB (an mmap in glibc), mmap/mprotect/munmap of its own. */
static void process_still_maps(void)
{
    char *m = malloc(TU_MIB);
    ck_assert_msg(m != NULL, "malloc(1M) failed: %s", strerror(errno));
    memset(m, 3, TU_MIB);
    free(m);
    for (int i = 0; i < 16; i++) {
        char *q = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ck_assert_msg(q != MAP_FAILED, "mmap failed: %s", strerror(errno));
        q[0] = 1;
        ck_assert_msg(mprotect(q + 4096, 4096, PROT_READ) == 0, "mprotect: %s",
                      strerror(errno));
        ck_assert_int_eq(munmap(q, 16 * 4096), 0);
    }
}

/* A 1 GiB budget, one byte touched in every page of 2 GiB in random order
 * at the page size chosen by default: no failure, the data is right, the
 * kernel mappings stay below a third of max_map_count, and the process can
 * still map memory afterwards. */
START_TEST(test_random_touches_large_budget)
{
    struct upager_stats s;
    const size_t len = 2 * TU_GIB;

    tu_env("1G", NULL);
    size_t ps = tu_init();
    size_t n = len / ps;
    unsigned char *p = upager_aligned_alloc(ps, len);
    ck_assert_ptr_nonnull(p);

    long max_maps = random_touches(p, n, ps, tu_seed(0x7a11));
    long limit = tu_max_map_count();
    tu_stats(&s);
    printf("vma: page size %zu KiB, %zu pages, at most %ld mappings "
           "(max_map_count %ld), %llu faults, %llu evictions\n", ps >> 10, n,
           max_maps, limit, (unsigned long long)s.faults,
           (unsigned long long)s.evictions);
    ck_assert_msg(max_maps < limit / 3, "%ld mappings, max_map_count %ld",
                  max_maps, limit);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_uint_gt(s.evictions, 0);
    ck_assert_uint_eq(s.io_errors, 0);
    process_still_maps();
    upager_free(p);
    process_still_maps();
}
END_TEST

/* A page size the user forces small for the budget (4K pages for 64M,
 * 16384 pages): the library either refuses it at start-up, with one line
 * naming what to change, or runs it without ever nearing the mapping
 * limit. */
START_TEST(test_forced_small_pages)
{
    struct tu_capture cap;
    char *text;

    tu_env("64M", "4096");
    tu_capture_begin(&cap);
    int rc = upager_init();
    text = tu_capture_end(&cap);
    if (rc != 0) {
        ck_assert_int_eq(rc, EINVAL);
        ck_assert_msg(tu_count_lines(text) == 1
                      && (strstr(text, "UPAGER_PAGE_SIZE") != NULL
                          || strstr(text, "UPAGER_BUDGET") != NULL),
                      "refused without saying what to change: %s", text);
        printf("vma: 4K pages for a 64M budget refused at start-up: %s", text);
        free(text);
        return;
    }
    free(text);
    const size_t len = 128 * TU_MIB, ps = 4096;
    unsigned char *p = upager_aligned_alloc(ps, len);
    ck_assert_ptr_nonnull(p);
    long max_maps = random_touches(p, len / ps, ps, tu_seed(0x7a12));
    long limit = tu_max_map_count();
    ck_assert_msg(max_maps < limit / 3, "%ld mappings, max_map_count %ld",
                  max_maps, limit);
    process_still_maps();
}
END_TEST

/* Touching 64 MiB of a 1T arena costs well under 1 MiB of metadata: the
 * RSS grows by the data's own resident bytes and less than 1 MiB more.
 * (A frame mapped twice, or a page table sized by the arena, would show.) */
START_TEST(test_metadata_grows_with_use)
{
    struct upager_stats s0, s1;
    const size_t len = 64 * TU_MIB;

    tu_env("128M", NULL);
    tu_init();
    tu_stats(&s0);
    ck_assert_uint_ge(s0.budget_bytes, len + TU_MIB);
    unsigned char *tiny = upager_malloc(16);
    ck_assert_ptr_nonnull(tiny);
    tiny[0] = 1;
    tu_stats(&s0);
    size_t rss0 = tu_rss();

    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, len);
    size_t rss1 = tu_rss();
    tu_stats(&s1);

    size_t data = s1.resident_bytes - s0.resident_bytes;
    long long growth = (long long)rss1 - (long long)rss0;
    printf("vma: RSS grew by %lld KiB for %zu KiB of resident data\n",
           growth >> 10, data >> 10);
    ck_assert_uint_ge(data, len);
    ck_assert_msg(growth - (long long)data < (long long)TU_MIB,
                  "RSS grew by %lld KiB for %zu KiB of data: %lld KiB of metadata",
                  growth >> 10, data >> 10, (growth - (long long)data) >> 10);
    ck_assert_msg(growth >= (long long)(data / 2),
                  "RSS grew by %lld KiB only, for %zu KiB of data", growth >> 10,
                  data >> 10);
    ck_assert_uint_eq(s1.evictions, 0);
}
END_TEST

/* The arena is several memfds (the kernel serialises writes and hole
 * punches per file): successive large allocations land in different ones,
 * and their data pages in and out correctly across the boundary. */
START_TEST(test_large_allocations_spread)
{
    const size_t len = 8 * TU_MIB;

    tu_env("2M", "65536");
    tu_init();
    ck_assert_uint_gt(upager__g.nshard, 1);
    unsigned char *a = upager_malloc(len);
    unsigned char *b = upager_malloc(len);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    size_t sa = ADDR_PAGE(a) / upager__g.shard_pages;
    size_t sb = ADDR_PAGE(b) / upager__g.shard_pages;
    ck_assert_uint_ne(sa, sb);
    tu_pattern_fill(a, 0, len, 71);
    tu_pattern_fill(b, 0, len, 72);
    ck_assert_uint_eq(tu_pattern_check(a, 0, len, 71), (size_t)-1);
    ck_assert_uint_eq(tu_pattern_check(b, 0, len, 72), (size_t)-1);
    upager_free(a);
    upager_free(b);
}
END_TEST

Suite *vma_suite(void)
{
    Suite *s = suite_create("vma");
    TCase *tc;

    tc = tcase_create("vma");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_random_touches_large_budget);
    tcase_add_test(tc, test_forced_small_pages);
    tcase_add_test(tc, test_metadata_grows_with_use);
    tcase_add_test(tc, test_large_allocations_spread);
    suite_add_tcase(s, tc);

    return s;
}
