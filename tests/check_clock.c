/*
 * check_clock.c - eviction: the clock, dirty tracking and the budget.
 *
 * The clock's reference bits are real (a hot set that fits the budget
 * survives a scan, which FIFO would not allow); only pages written since
 * they were loaded are written back; resident memory never exceeds the
 * budget, and neither does the process's peak RSS beyond a small bound for
 * the library's metadata.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "check_suites.h"
#include "internal.h"
#include "testutil.h"

static unsigned char read_byte(const void *p)
{
    return *(const volatile unsigned char *)p;
}

/* A hot set of 16 pages, touched (written) after every cold page, survives
 * a scan of 1000 cold pages under a budget of 64 pages: the scan costs one
 * major fault per cold page and the hot pages are never read again.  FIFO
 * would evict each hot page every ~48 cold pages: about 330 extra major
 * faults and as many write-backs.  A hot page the hand finds cooled (the
 * hand can go round in one eviction when the pages ahead are all in use)
 * may be written back by the I/O threads, in the background, and stays:
 * such writes are bounded here by a third of the scan (one every ~5 steps
 * is what they come to on this test at worst, measured); writing the hot
 * pages at every access would be 16000. */
START_TEST(test_hot_set_survives_scan)
{
    enum { HOT = 16, COLD = 1000 };
    struct upager_stats s0, s1;

    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = tu_init();
    ck_assert_uint_eq(ps, 65536);
    unsigned char *hot = upager_aligned_alloc(ps, HOT * ps);
    unsigned char *cold = upager_aligned_alloc(ps, COLD * ps);
    ck_assert_ptr_nonnull(hot);
    ck_assert_ptr_nonnull(cold);

    /* Every cold page written once, so that it exists in the store. */
    for (size_t i = 0; i < COLD; i++)
        cold[i * ps + 1] = (unsigned char)(i * 7 + 1);
    for (size_t h = 0; h < HOT; h++)
        hot[h * ps] = 0;

    tu_stats(&s0);
    for (size_t i = 0; i < COLD; i++) {
        ck_assert_int_eq(read_byte(cold + i * ps + 1), (unsigned char)(i * 7 + 1));
        for (size_t h = 0; h < HOT; h++)
            hot[h * ps]++;
    }
    tu_stats(&s1);

    uint64_t majors = s1.major_faults - s0.major_faults;
    uint64_t writes = s1.writebacks - s0.writebacks;
    ck_assert_msg(majors <= COLD + HOT,
                  "%llu major faults for a scan of %d cold pages: the hot set "
                  "was evicted", (unsigned long long)majors, COLD);
    ck_assert_msg(majors >= COLD - 64,
                  "only %llu major faults: the cold pages were not evicted",
                  (unsigned long long)majors);
    /* The scan itself only reads; what it may write back are the cold
     * pages still resident and dirty from the writing loop, at most a
     * budget of them, and hot pages now and then in the background. */
    ck_assert_msg(writes <= 4 * TU_MIB / ps + COLD / 3,
                  "%llu write-backs during a read-only scan: hot pages were evicted",
                  (unsigned long long)writes);
    for (size_t h = 0; h < HOT; h++)
        ck_assert_int_eq(hot[h * ps], (unsigned char)COLD);
    ck_assert_uint_le(s1.peak_resident_bytes, s1.budget_bytes);
}
END_TEST

/* Data written once and then only read, at eight times the budget: the
 * read passes evict pages all the time but write nothing back (clean pages
 * are dropped).  The counters agree: every write-back is of a dirty page,
 * a page at a time. */
START_TEST(test_clean_pages_not_written)
{
    const size_t len = 32 * TU_MIB;
    struct upager_stats s0, s1;

    tu_env("4M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 41);
    /* A first read pass evicts the pages left dirty by the fill. */
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 41), (size_t)-1);

    tu_stats(&s0);
    ck_assert_uint_ge(s0.writebacks, (len - 4 * TU_MIB) / ps);
    for (int pass = 0; pass < 2; pass++) {
        size_t bad = tu_pattern_check(p, 0, len, 41);
        ck_assert_msg(bad == (size_t)-1, "pass %d: data differs at %zu", pass, bad);
    }
    tu_stats(&s1);
    ck_assert_msg(s1.evictions - s0.evictions >= 2 * (len - 4 * TU_MIB) / ps,
                  "only %llu evictions in two read passes",
                  (unsigned long long)(s1.evictions - s0.evictions));
    ck_assert_msg(s1.writebacks == s0.writebacks,
                  "%llu clean pages written back",
                  (unsigned long long)(s1.writebacks - s0.writebacks));
    ck_assert_uint_eq(s1.bytes_written, s0.bytes_written);
    /* Every write-back is of a dirty page: at eviction, or before it by
     * the I/O threads (then the eviction is clean); each page was
     * written once. */
    ck_assert_uint_ge(s1.writebacks, s1.dirty_evictions);
    ck_assert_uint_le(s1.writebacks, len / ps);
    ck_assert_uint_eq(s1.bytes_written, s1.writebacks * ps);
    ck_assert_uint_eq(s1.io_errors, 0);
}
END_TEST

/* Exactly the pages written since they were loaded are written back: ten
 * pages re-dirtied in the first half of the data (with the bytes they
 * already held) cost ten write-backs once a read pass has pushed them out. */
START_TEST(test_only_dirty_pages_written)
{
    enum { K = 10 };
    const size_t len = 32 * TU_MIB;
    struct upager_stats s0, s1;

    tu_env("4M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 43);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 43), (size_t)-1); /* all clean now */

    tu_stats(&s0);
    for (size_t k = 0; k < K; k++) {
        size_t off = (k * 23 + 3) * ps + 100; /* pages 3..210 of 512 */
        p[off] = tu_pattern_byte(off, 43);
    }
    size_t bad = tu_pattern_check(p, 0, len, 43);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu", bad);
    tu_stats(&s1);
    ck_assert_msg(s1.writebacks - s0.writebacks == K,
                  "%llu write-backs after dirtying %d pages",
                  (unsigned long long)(s1.writebacks - s0.writebacks), K);
    ck_assert_uint_eq(s1.bytes_written - s0.bytes_written, K * ps);
}
END_TEST

/* The budget holds under random access to six times its size: the
 * resident bytes sampled along the way and their peak stay within it, so
 * do the frames the memfd holds, and the process's peak RSS (VmHWM) stays
 * within its RSS at start + budget + 4 MiB of metadata.  The page size is
 * the one chosen by default for this budget. */
START_TEST(test_budget_respected)
{
    const size_t budget = 8 * TU_MIB, len = 48 * TU_MIB;
    struct upager_stats s;
    uint64_t rng = tu_seed(0xb0d6e7);
    size_t max_resident = 0;
    uint64_t max_memfd = 0;

    tu_env("8M", NULL);
    tu_init();
    unsigned char *tiny = upager_malloc(16);
    ck_assert_ptr_nonnull(tiny);
    tiny[0] = 1;
    size_t rss0 = tu_rss();
    if (tu_reset_hwm() != 0)
        printf("clock: test_budget_respected: cannot reset VmHWM; the bound "
               "holds for the peak since the process started\n");

    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 47);
    for (int i = 0; i < 20000; i++) {
        size_t off = tu_below(&rng, len - 64);
        if (i % 3 == 0)
            tu_pattern_fill(p + off, off, 64, 47); /* a write of the same data */
        size_t bad = tu_pattern_check(p + off, off, 64, 47);
        if (bad != (size_t)-1)
            ck_abort_msg("seed %#llx: data differs at %zu",
                         (unsigned long long)tu_seed(0xb0d6e7), off + bad);
        if (i % 500 == 0) {
            tu_stats(&s);
            if (s.resident_bytes > max_resident)
                max_resident = s.resident_bytes;
            uint64_t m = tu_memfd_bytes();
            if (m > max_memfd)
                max_memfd = m;
        }
    }
    tu_stats(&s);
    size_t hwm = tu_hwm();
    ck_assert_uint_eq(s.budget_bytes, budget);
    ck_assert_uint_le(max_resident, budget);
    ck_assert_msg(s.peak_resident_bytes <= budget, "peak resident %zu > budget %zu",
                  s.peak_resident_bytes, budget);
    ck_assert_uint_ge(s.peak_resident_bytes, budget / 2); /* it was used */
    ck_assert_msg(max_memfd <= budget + TU_MIB,
                  "the memfd holds %llu bytes of frames for a budget of %zu",
                  (unsigned long long)max_memfd, budget);
    ck_assert_msg(hwm <= rss0 + budget + 4 * TU_MIB,
                  "VmHWM %zu KiB > RSS at start %zu KiB + budget %zu KiB + 4 MiB",
                  hwm >> 10, rss0 >> 10, budget >> 10);
}
END_TEST

/* Starts the pager with a 4M budget of 64K pages and the read-ahead
 * given, and returns a file of 64 pages (the budget) of pattern `seed`
 * mapped read-only (so clean: the hand evicts the first ones it meets, not
 * whichever the cleaner has written), and in *x one page more, to send
 * the hand round.  *psp is the page size. */
static unsigned char *budget_of_file(const char *readahead, uint64_t seed, size_t *psp,
                                     unsigned char **x)
{
    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", readahead);
    size_t ps = *psp = tu_init();
    char *path = tu_make_file("budget", 64 * ps, seed);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    unlink(path);
    *x = upager_aligned_alloc(ps, ps);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(*x);
    return p;
}

/* The file of budget_of_file with a read-ahead of 8, all read and then
 * cooled by one visit of the hand (one page more).  *psp is the page
 * size, *first the first page still resident. */
static unsigned char *cooled_table(size_t *psp, size_t *first)
{
    enum { N = 64 };
    unsigned char *x, *p = budget_of_file("8", 61, psp, &x);
    size_t ps = *psp;
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(read_byte(p + i * ps + 3), tu_pattern_byte(i * ps + 3, 61));
    ck_assert_int_eq(read_byte(x), 0); /* one more page: the hand goes round */
    upager__ioq_drain();
    size_t f = 0;
    while (f < N && PG(ADDR_PAGE(p + f * ps))->state != PAGE_RESIDENT)
        f++;
    ck_assert_uint_le(f, 16);
    for (size_t i = f; i < N; i++) {
        struct upager__page *pg = PG(ADDR_PAGE(p + i * ps));
        ck_assert_int_eq(pg->state, PAGE_RESIDENT);
        ck_assert(!(pg->flags & (PF_REF | PF_DIRTY | PF_RA)));
    }
    *first = f;
    return p;
}

/* Reads pages [first, 64) of the table in order, checking a byte of each;
 * returns the faults that took (none of them major). */
static uint64_t read_in_order(const unsigned char *p, size_t ps, size_t first)
{
    struct upager_stats s0, s1;
    tu_stats(&s0);
    for (size_t i = first; i < 64; i++)
        ck_assert_int_eq(read_byte(p + i * ps + 9), tu_pattern_byte(i * ps + 9, 61));
    tu_stats(&s1);
    ck_assert_uint_eq(s1.major_faults, s0.major_faults);
    return s1.faults - s0.faults;
}

/* A table that stays resident but that the hand cooled, read again in
 * order: the soft faults open the cooled pages that follow too, the window
 * doubling up to the read-ahead (8 here), so a few faults open it all (9
 * for 48 to 56 pages, against one a page); every byte is right, the
 * pages so opened count as referenced, and the open count agrees. */
START_TEST(test_soft_faults_in_order)
{
    size_t ps, first;
    unsigned char *p = cooled_table(&ps, &first);
    size_t n = 64 - first;
    uint64_t faults = read_in_order(p, ps, first);
    ck_assert_msg(faults <= 9, "%llu faults to read %zu cooled pages in order",
                  (unsigned long long)faults, n);
    for (size_t i = first; i < 64; i++)
        ck_assert(PG(ADDR_PAGE(p + i * ps))->flags & PF_REF);
    size_t bad = tu_pattern_check(p + first * ps, first * ps, n * ps, 61);
    ck_assert_msg(bad == (size_t)-1, "differs at %zu", bad);
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
}
END_TEST

/* Under UPAGER_ADVICE_RANDOM soft faults open their own page only. */
START_TEST(test_soft_faults_random_advice)
{
    size_t ps, first;
    unsigned char *p = cooled_table(&ps, &first);
    ck_assert_int_eq(upager_advise(p, 64 * ps, UPAGER_ADVICE_RANDOM), 0);
    ck_assert_uint_eq(read_in_order(p, ps, first), 64 - first);
}
END_TEST

/* Opens pages [first, first + n), which are open already, again with one
 * mprotect, as a read-ahead window is opened: one protection generation. */
static void open_together(size_t first, size_t n)
{
    for (size_t i = first; i < first + n; i++)
        upager__page_lock(i);
    ck_assert_int_eq(upager__protect(first, n, PROT_READ), 0);
    for (size_t i = first; i < first + n; i++)
        upager__unlock(&PG(i)->lock);
}

/* The hand cools in one mprotect the pages that follow its page in the
 * arena and were opened with it, whatever frames they sit in, and not the
 * ones opened later.  64 pages are loaded page 0 first, then 63 down to 1,
 * so their frames run against the arena (each is read at two neighbouring
 * blocks, so that it is read whole); pages 0-31 are then opened together,
 * and 32-63 together after them.  One more page sends the hand round: at
 * frame 0 it cools 0-31 with one mprotect (one generation), where one a
 * page gives each its own, and 32-63 it cools at their own frames, each
 * alone.  The pages cooled ahead of the hand keep their second chance:
 * the hand passes them at their own frames, and the victims are the run
 * that had its chance, from page 0, not page 31 (frame 33). */
START_TEST(test_cool_run_scattered_frames)
{
    enum { N = 64, H = N / 2 };
    size_t ps;
    unsigned char *x, *p = budget_of_file("0", 67, &ps, &x);
    size_t first = ADDR_PAGE(p);
    for (size_t k = 0; k < N; k++) { /* two neighbouring blocks: the whole page */
        size_t i = k ? N - k : 0;
        for (size_t off = i * ps + 1; off < i * ps + 8192; off += 4096)
            ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 67));
        ck_assert_uint_eq(PG(first + i)->blocks, 0);
    }
    for (size_t i = 1; i + 1 < N; i++) /* the frames run against the arena */
        ck_assert_uint_ne(PG(first + i + 1)->frame, PG(first + i)->frame + 1);
    open_together(first, H);
    open_together(first + H, N - H);
    struct upager_stats s0, s1;
    tu_stats(&s0);
    ck_assert_uint_eq(s0.evictions, 0);
    ck_assert_int_eq(read_byte(x), 0); /* one more page: the hand goes round */
    upager__ioq_drain();
    tu_stats(&s1);
    ck_assert_uint_ge(s1.evictions, 1);
    ck_assert_msg(PG(first)->state != PAGE_RESIDENT,
                  "page 0, the oldest cooled, was not the victim");
    ck_assert_msg(PG(first + H - 1)->state == PAGE_RESIDENT,
                  "page 31, cooled ahead of the hand, was evicted before its chance");
    uint32_t gen = 0;
    size_t resident = 0;
    for (size_t i = 1; i < N; i++) {
        struct upager__page *pg = PG(first + i);
        if (pg->state != PAGE_RESIDENT)
            continue;
        ck_assert(!(pg->flags & PF_REF));
        if (i < H) {
            if (!resident++)
                gen = pg->gen;
            ck_assert_msg(pg->gen == gen, "page %zu cooled by its own mprotect", i);
        } else {
            ck_assert_msg(pg->gen != PG(first + i - 1)->gen,
                          "page %zu, opened later, cooled with page %zu", i, i - 1);
        }
    }
    ck_assert_uint_ge(resident, H - 16);
    size_t bad = tu_pattern_check(p, 0, N * ps, 67);
    ck_assert_msg(bad == (size_t)-1, "differs at %zu", bad);
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
}
END_TEST

/* A dirty page the hand cools is written back in the background and stays
 * resident (the kernel's flusher), not only once it is a victim.  64 pages
 * fill the budget, the even ones written, the odd ones only read; one more
 * page costs one visit of the hand, which cools all 64 and evicts the
 * first clean ones.  The I/O threads then write the 32 dirty pages, once
 * each, and the pages not evicted stay resident.  (Marking only the dirty
 * victims the hand passes over would write one.) */
START_TEST(test_cooled_dirty_written)
{
    enum { N = 64 };
    struct upager_stats s0, s;
    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, N * ps);
    unsigned char *x = upager_aligned_alloc(ps, ps);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(x);
    for (size_t i = 0; i < N; i++) {
        if (i % 2 == 0)
            p[i * ps + 5] = (unsigned char)(i + 1);
        else
            ck_assert_int_eq(read_byte(p + i * ps + 5), 0);
    }
    tu_stats(&s0);
    ck_assert_uint_eq(s0.evictions, 0);
    ck_assert_uint_eq(s0.writebacks, 0);
    ck_assert_int_eq(read_byte(x), 0); /* one more page: the hand goes round */
    upager__ioq_drain();
    tu_stats(&s);
    ck_assert_msg(s.writebacks == N / 2,
                  "%llu of the %d cooled dirty pages written back",
                  (unsigned long long)s.writebacks, N / 2);
    ck_assert_uint_le(s.evictions, 8);
    ck_assert_uint_ge(s.resident_bytes, (N - 8) * ps);
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(read_byte(p + i * ps + 5), i % 2 == 0 ? (unsigned char)(i + 1) : 0);
    /* The program writes them again (and reads the others): rewritten in
     * place, they are not written early again when the hand cools them a
     * second time (at most the odd dirty victim it passes over is). */
    unsigned char *y = upager_aligned_alloc(ps, 16 * ps);
    ck_assert_ptr_nonnull(y);
    struct upager_stats s2;
    bool again[N] = {false};
    size_t rewritten = 0;
    for (size_t i = 0; i < N; i += 2) {
        if (PG(ADDR_PAGE(p + i * ps))->state == PAGE_RESIDENT) {
            p[i * ps + 5] = (unsigned char)(i + 2);
            again[i] = true;
            rewritten++;
        }
    }
    ck_assert_uint_ge(rewritten, N / 2 - 8);
    for (size_t i = 1; i < N; i += 2) /* and the others referenced again */
        ck_assert_int_eq(read_byte(p + i * ps + 5), 0);
    /* Pages enough to fill the frames the first eviction freed, and one
     * more: the hand goes round again. */
    tu_stats(&s2);
    size_t room = (s2.budget_bytes - s2.resident_bytes) / ps;
    ck_assert_uint_lt(room, 16);
    for (size_t k = 0; k <= room; k++)
        ck_assert_int_eq(read_byte(y + k * ps), 0);
    upager__ioq_drain();
    tu_stats(&s2);
    ck_assert_msg(s2.writebacks - s.writebacks <= 4,
                  "%llu pages written early again after the program rewrote them",
                  (unsigned long long)(s2.writebacks - s.writebacks));
    for (size_t i = 0; i < N; i++)
        ck_assert_int_eq(read_byte(p + i * ps + 5),
                         i % 2 ? 0 : (unsigned char)(i + 1 + (again[i] ? 1 : 0)));
}
END_TEST

/* Data that fits the budget: half of it written and the I/O threads let
 * finish; *s is the counters then.  The data is freed after. */
static void fill_half_budget(size_t budget, uint64_t seed, struct upager_stats *s)
{
    unsigned char *fits = upager_malloc(budget / 2);
    ck_assert_ptr_nonnull(fits);
    tu_pattern_fill(fits, 0, budget / 2, seed);
    upager__ioq_drain();
    tu_stats(s);
    upager_free(fits);
}

/* Write-behind: once the budget has been full, the I/O threads write back
 * what a sequential writer left behind it, and keep it.  A fill of 8x the
 * budget (64 pages) leaves at most a quarter of the budget dirty, where
 * every resident page would be otherwise; data that fits the budget is
 * never written.  A page written back this way is write-protected: the
 * program's next write to it dirties it again, and that write survives
 * eviction. */
START_TEST(test_write_behind)
{
    const size_t budget = 8 * TU_MIB, len = 64 * TU_MIB;
    struct upager_stats s;
    tu_env("8M", "65536");
    tu_setenv("UPAGER_READAHEAD", "4");
    size_t ps = tu_init();

    fill_half_budget(budget, 50, &s);
    ck_assert_uint_eq(s.writebacks, 0);

    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 51);
    upager__ioq_drain();
    size_t dirty = 0, resident = 0, first = (size_t)-1, last_dirty = 0;
    for (size_t i = 0; i < len / ps; i++) {
        struct upager__page *q = PG(ADDR_PAGE(p + i * ps));
        if (q->state != PAGE_RESIDENT)
            continue;
        resident++;
        if (q->flags & PF_DIRTY)
            dirty++, last_dirty = i;
        else if (first == (size_t)-1 && (q->flags & PF_REF))
            first = i; /* written behind, still open: read-only */
    }
    ck_assert_uint_ge(resident, budget / ps / 2);
    ck_assert_msg(dirty <= budget / ps / 4, "%zu of %zu resident pages left dirty", dirty,
                  resident);
    if (first == (size_t)-1) {
        /* On a loaded machine the hand can cool the pages written behind
         * before the check (or the cleaner write them cooled): ask for the
         * write-behind of the writer's last page, open and dirty, as its
         * faults do, and take that one. */
        struct upager__page *q = PG(ADDR_PAGE(p + last_dirty * ps));
        ck_assert(q->flags & PF_REF);
        ck_assert(upager__ioq_writebehind(ADDR_PAGE(p + last_dirty * ps), 1, q->owner));
        upager__ioq_drain();
        if (q->state == PAGE_RESIDENT && (q->flags & (PF_REF | PF_DIRTY)) == PF_REF)
            first = last_dirty;
    }
    ck_assert_msg(first != (size_t)-1, "no page written behind and kept open");
    /* A write to it: dirty again, and kept through eviction. */
    p[first * ps + 7] = (unsigned char)~tu_pattern_byte(first * ps + 7, 51);
    ck_assert(PG(ADDR_PAGE(p + first * ps))->flags & PF_DIRTY);
    ck_assert_int_eq(upager_advise(p + first * ps, ps, UPAGER_ADVICE_DONTNEED), 0);
    ck_assert_int_ne(PG(ADDR_PAGE(p + first * ps))->state, PAGE_RESIDENT);
    ck_assert_int_eq(p[first * ps + 7], (unsigned char)~tu_pattern_byte(first * ps + 7, 51));
    p[first * ps + 7] = tu_pattern_byte(first * ps + 7, 51);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 51), (size_t)-1);
}
END_TEST

/* Once the budget is full, an I/O thread keeps a reserve of limit/32
 * frames free ahead of the faults (background reclaim): after a stream of
 * writes through 4x the budget, and the threads idle, the resident pages
 * are at least half that reserve below the budget; the data is intact.  Data
 * that fits the budget never starts it: every page stays resident. */
START_TEST(test_background_reclaim)
{
    const size_t budget = 8 * TU_MIB, len = 32 * TU_MIB;
    struct upager_stats s0, s;
    tu_env("8M", "65536");
    size_t ps = tu_init();
    size_t reserve = budget / ps / 32;
    ck_assert_uint_ge(reserve, 4);

    fill_half_budget(budget, 48, &s0);
    ck_assert_uint_eq(s0.evictions, 0);
    ck_assert_uint_eq(s0.resident_bytes, budget / 2);

    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 49);
    upager__ioq_drain();
    tu_stats(&s);
    ck_assert_uint_gt(s.evictions, 0);
    /* Reclaim frees the whole reserve when asked, and is asked when a
     * fault leaves less than half of it: whatever the last faults took,
     * half the reserve is free. */
    ck_assert_msg(s.resident_bytes + reserve / 2 * ps <= budget,
                  "resident %zu KiB: not even half the reserve of %zu frames free below "
                  "the budget of %zu KiB", s.resident_bytes >> 10, reserve, budget >> 10);
    size_t bad = tu_pattern_check(p, 0, len, 49);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu", bad);
}
END_TEST

Suite *clock_suite(void)
{
    Suite *s = suite_create("clock");
    TCase *tc;

    tc = tcase_create("clock");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_hot_set_survives_scan);
    tcase_add_test(tc, test_clean_pages_not_written);
    tcase_add_test(tc, test_only_dirty_pages_written);
    tcase_add_test(tc, test_budget_respected);
    tcase_add_test(tc, test_background_reclaim);
    tcase_add_test(tc, test_cooled_dirty_written);
    tcase_add_test(tc, test_soft_faults_in_order);
    tcase_add_test(tc, test_soft_faults_random_advice);
    tcase_add_test(tc, test_cool_run_scattered_frames);
    tcase_add_test(tc, test_write_behind);
    suite_add_tcase(s, tc);

    return s;
}
