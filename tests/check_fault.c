/*
 * check_fault.c - the fault path: what it resolves and what it must not.
 *
 * Faults on live memory are resolved (fresh pages read as zeros, a page
 * comes in read-only and its first write is a fault of its own); faults
 * that would crash without the library still crash with SIGSEGV: outside
 * the arena, on a freed large block, on a slab given back, on arena pages
 * that never held anything.  Inside the arena the death is preceded by
 * exactly one diagnostic line naming the address.  Whether an access was a
 * read or a write is known, with the fault's context and with the retry
 * rule alike: threads that only read never dirty a page, nor die on a
 * read-only mapping.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>
#include <stdatomic.h>

#include "check_suites.h"
#include "internal.h"
#include "testutil.h"

static void setup_env(void)
{
    tu_env("4M", "65536");
}

static unsigned char read_byte(const void *p)
{
    return *(const volatile unsigned char *)p;
}

/* ---- genuine faults end the process --------------------------------- */

/* A NULL dereference still ends with SIGSEGV once the handler is in. */
START_TEST(test_null_deref)
{
    setup_env();
    tu_init();
    void *p = upager_malloc(100);
    volatile uintptr_t null_address = 0;
    ck_assert_ptr_nonnull(p);
    read_byte((void *)null_address);
}
END_TEST

/* A fault on memory the program mapped itself, outside the arena, is not
 * the library's: SIGSEGV. */
START_TEST(test_outside_arena)
{
    setup_env();
    tu_init();
    void *q = mmap(NULL, 65536, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(q, MAP_FAILED);
    read_byte((char *)q + 100);
}
END_TEST

/* Reading a freed large block, still resident when freed: SIGSEGV. */
START_TEST(test_freed_large)
{
    setup_env();
    char *p = upager_malloc(2 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, 2 * TU_MIB);
    upager_free(p);
    read_byte(p);
}
END_TEST

/* Writing a freed large block whose pages had gone to the store: SIGSEGV,
 * not a page loaded back. */
START_TEST(test_freed_large_evicted)
{
    setup_env();
    char *p = upager_malloc(16 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, 16 * TU_MIB); /* four times the budget: the start is evicted */
    upager_free(p);
    p[0] = 2;
}
END_TEST

/* An arena address far past the only allocation, which never held any
 * allocation: SIGSEGV, not a zero-filled page. */
START_TEST(test_never_allocated)
{
    setup_env();
    char *p = upager_malloc(TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, TU_MIB);
    read_byte(p + 64 * TU_MIB);
}
END_TEST

/* The page right after a large block (the only allocation), inside the
 * arena: SIGSEGV.  The block's own last usable byte is fine. */
START_TEST(test_past_large_end)
{
    setup_env();
    size_t ps = tu_init();
    char *p = upager_aligned_alloc(ps, 8 * ps);
    ck_assert_ptr_nonnull(p);
    size_t usable = upager_usable_size(p);
    ck_assert_uint_ge(usable, 8 * ps);
    p[usable - 1] = 1;
    ck_assert_int_eq(read_byte(p + usable - 1), 1);
    read_byte(p + (usable + ps - 1) / ps * ps + ps / 2);
}
END_TEST

/* Many small blocks of one size fill whole slabs; once all are freed the
 * allocator gives slabs back, and touching one of them is SIGSEGV.  (A few
 * empty slabs per class are kept for reuse, and the thread's cache holds
 * some blocks; reading every block finds one that was given back.) */
START_TEST(test_freed_slab)
{
    enum { SIZE = 64, N = 64 * 65536 / SIZE }; /* 64 pages of 64K */
    char **p = malloc(N * sizeof *p);

    setup_env();
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < N; i++) {
        p[i] = upager_malloc(SIZE);
        ck_assert_ptr_nonnull(p[i]);
        memset(p[i], 0x5C, SIZE);
    }
    for (int i = 0; i < N; i++)
        upager_free(p[i]);
    for (int i = 0; i < N; i++)
        read_byte(p[i]);
    ck_abort_msg("no freed slab faulted: empty slabs are not given back");
}
END_TEST

/* ---- the diagnostic line ---------------------------------------------- */

struct bad_access {
    int kind;                 /* which access: see bad_access_child  */
    volatile uintptr_t *addr; /* shared with the parent: the address */
    const char *path;         /* a file, for kind 3                  */
};

static void bad_access_child(void *arg)
{
    struct bad_access *b = arg;
    char *p;

    switch (b->kind) {
    case 0: /* a freed large block */
        p = upager_malloc(2 * TU_MIB);
        if (p == NULL)
            _exit(3);
        memset(p, 1, 2 * TU_MIB);
        upager_free(p);
        *b->addr = (uintptr_t)(p + 4096);
        read_byte(p + 4096);
        break;
    case 1: /* arena memory that never held anything */
        p = upager_malloc(TU_MIB);
        if (p == NULL)
            _exit(3);
        p += 64 * TU_MIB + 12345;
        *b->addr = (uintptr_t)p;
        read_byte(p);
        break;
    case 2: /* outside the arena */
        p = upager_malloc(TU_MIB);
        if (p == NULL)
            _exit(3);
        p = mmap(NULL, 65536, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            _exit(4);
        *b->addr = (uintptr_t)p;
        read_byte(p);
        break;
    case 3: /* a write to a read-only file mapping */
        p = upager_map_file(b->path, 0, UPAGER_MAP_READ);
        if (p == NULL)
            _exit(3);
        p += 70000;
        *b->addr = (uintptr_t)p;
        *(volatile char *)p = 1;
        break;
    }
    _exit(5); /* survived the access */
}

/* Runs a bad access of the given kind in a child; asserts it died of
 * SIGSEGV; returns its stderr and the address it touched. */
static char *bad_access(int kind, uintptr_t *addr)
{
    struct bad_access b = { kind, tu_shared_alloc(4096), NULL };
    char *err;
    int status;

    setup_env();
    if (kind == 3)
        b.path = tu_make_file("rodiag", 200000, 5);
    status = tu_run_child(bad_access_child, &b, &err);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV,
                  "kind %d: child status %#x, expected death by SIGSEGV; stderr: %s",
                  kind, (unsigned)status, err);
    *addr = *b.addr;
    ck_assert_uint_ne(*addr, 0);
    if (b.path != NULL)
        unlink(b.path);
    return err;
}

/* Makes bad access `kind` (see bad_access) and checks that the library
 * printed exactly one line, naming the faulting address. */
static void expect_one_line_naming_address(int kind)
{
    uintptr_t a;
    char *err = bad_access(kind, &a);

    ck_assert_msg(tu_count_lines(err) == 1 && tu_count_prefix(err, "upager: ") == 1,
                  "expected one diagnostic line, got:\n%s", err);
    ck_assert_msg(tu_mentions_address(err, a), "the line does not name %#lx: %s",
                  (unsigned long)a, err);
    free(err);
}

/* A freed large block: death by SIGSEGV after exactly one line from the
 * library, which names the faulting address (not two: libsigsegv calls
 * the handler again with serious=1). */
START_TEST(test_diag_freed_large)
{
    expect_one_line_naming_address(0);
}
END_TEST

/* Arena memory that never held anything: the same. */
START_TEST(test_diag_never_allocated)
{
    expect_one_line_naming_address(1);
}
END_TEST

/* A write to a read-only file mapping: the same. */
START_TEST(test_diag_readonly_mapping)
{
    expect_one_line_naming_address(3);
}
END_TEST

/* Outside the arena the library stays silent: the fault is not its own. */
START_TEST(test_diag_outside_arena_silent)
{
    uintptr_t a;
    char *err = bad_access(2, &a);

    ck_assert_msg(tu_count_prefix(err, "upager:") == 0,
                  "the library spoke about a fault outside its arena: %s", err);
    free(err);
}
END_TEST

/* ---- faults that are resolved ------------------------------------------ */

/* Fresh memory reads as zeros, even when it is four times the budget, and
 * writing after reading keeps the written data, through the store. */
START_TEST(test_fresh_reads_zero)
{
    const size_t len = 16 * TU_MIB;
    static const unsigned char zero[4096];

    tu_env("4M", "65536");
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    for (size_t off = 0; off < len; off += sizeof zero)
        ck_assert_msg(memcmp(p + off, zero, sizeof zero) == 0,
                      "fresh memory not zero near offset %zu", off);
    tu_pattern_fill(p, 0, len, 21);
    size_t bad = tu_pattern_check(p, 0, len, 21);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu", bad);

    /* A second fresh block, after the store has been used. */
    unsigned char *q = upager_malloc(len);
    ck_assert_ptr_nonnull(q);
    for (size_t off = 0; off < len; off += sizeof zero)
        ck_assert_msg(memcmp(q + off, zero, sizeof zero) == 0,
                      "second fresh block not zero near offset %zu", off);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 21), (size_t)-1);
}
END_TEST

/* A page comes in read-only: reading fresh pages faults once per page and
 * reads nothing from the store; the first write to each is one more fault;
 * after that, within the budget, the pages are accessed without faults. */
START_TEST(test_read_then_write)
{
    struct upager_stats s0, s1, s2, s3;
    const size_t pages = 16;

    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, pages * ps);
    ck_assert_ptr_nonnull(p);

    tu_stats(&s0);
    for (size_t i = 0; i < pages; i++)
        ck_assert_int_eq(read_byte(p + i * ps + 7), 0);
    tu_stats(&s1);
    ck_assert_uint_ge(s1.faults - s0.faults, pages);
    ck_assert_uint_eq(s1.major_faults, s0.major_faults); /* nothing to read */
    ck_assert_uint_eq(s1.bytes_read, s0.bytes_read);

    for (size_t i = 0; i < pages; i++)
        p[i * ps + 7] = (unsigned char)(i + 1);
    tu_stats(&s2);
    ck_assert_msg(s2.faults - s1.faults >= pages,
                  "first writes to read-only pages: %llu faults for %zu pages",
                  (unsigned long long)(s2.faults - s1.faults), pages);

    for (size_t i = 0; i < pages; i++) {
        ck_assert_int_eq(read_byte(p + i * ps + 7), i + 1);
        p[i * ps + 8] = 1;
    }
    tu_stats(&s3);
    ck_assert_uint_eq(s3.faults, s2.faults);
    ck_assert_uint_eq(s3.writebacks, 0);
    ck_assert_uint_eq(s3.evictions, 0);
    ck_assert_uint_eq(s3.resident_bytes, pages * ps);
}
END_TEST

/* Data written, evicted and read back comes from the store (major faults
 * and bytes_read grow) and is intact. */
START_TEST(test_round_trip_through_store)
{
    struct upager_stats s0, s1;
    const size_t len = 32 * TU_MIB;

    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = tu_init();
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 31);
    tu_stats(&s0);
    size_t bad = tu_pattern_check(p, 0, len, 31);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu", bad);
    tu_stats(&s1);
    /* All but the pages still resident came back from the store. */
    ck_assert_uint_ge(s1.major_faults - s0.major_faults, (len - 4 * TU_MIB) / ps);
    ck_assert_uint_ge(s1.bytes_read - s0.bytes_read, len - 4 * TU_MIB);
    ck_assert_uint_ge(s0.writebacks, (len - 4 * TU_MIB) / ps);
    ck_assert_uint_eq(s1.io_errors, 0);
}
END_TEST


/* ---- read or write ------------------------------------------------------ */

/* A write to fresh memory is one fault per page, the page opened writable
 * and dirty at once; reading it back costs nothing more. */
START_TEST(test_fresh_write_one_fault)
{
    struct upager_stats s0, s1, s2;
    const size_t pages = 16;

    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, pages * ps);
    ck_assert_ptr_nonnull(p);
    tu_stats(&s0);
    for (size_t i = 0; i < pages; i++)
        p[i * ps + 3] = (unsigned char)(i + 1);
    tu_stats(&s1);
    ck_assert_uint_eq(s1.faults - s0.faults, pages);
    for (size_t i = 0; i < pages; i++)
        ck_assert_int_eq(read_byte(p + i * ps + 3), i + 1);
    tu_stats(&s2);
    ck_assert_uint_eq(s2.faults, s1.faults);
    ck_assert_uint_eq(s2.writebacks, 0);
}
END_TEST

/* The cases below run twice: _i 0 with the fault's context, _i 1 with the
 * retry rule that decides without it. */
static void access_mode(int i)
{
    upager__fault_no_context = i == 1;
}

struct reader {
    const unsigned char *map;
    size_t len;
    atomic_int *stop;
    size_t wrong, reads;
};

/* Every reader walks the same offsets, so that they fault on the same
 * pages at the same time. */
static void *reader_main(void *arg)
{
    struct reader *r = arg;
    while (!atomic_load(r->stop)) {
        for (size_t off = 100; off < r->len; off += 4096 + 8) {
            if (read_byte(r->map + off) != tu_pattern_byte(off, 5))
                r->wrong++;
            r->reads++;
        }
    }
    return NULL;
}

static void read_race(int flags)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s;
    char *path = tu_make_file("race", len, 5);
    tu_env("256K", "4096");
    unsigned char *map = upager_map_file(path, 0, flags);
    ck_assert_ptr_nonnull(map);
    atomic_int stop = 0;
    struct reader r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (struct reader){map, len, &stop, 0, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, reader_main, &r[i]), 0);
    }
    usleep(2000 * 1000);
    atomic_store(&stop, 1);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_msg(r[i].wrong == 0, "reader %d: %zu wrong bytes", i, r[i].wrong);
        ck_assert_uint_gt(r[i].reads, len / 4096);
    }
    tu_stats(&s);
    ck_assert_uint_gt(s.major_faults, 0);
    ck_assert_msg(s.writebacks == 0 && s.bytes_written == 0,
                  "reads made %llu write-backs", (unsigned long long)s.writebacks);
    ck_assert_int_eq(upager_unmap(map), 0);
    unlink(path);
    free(path);
}

/* Threads reading the same bytes of a read-only mapping under a small
 * budget: a read that races another thread's load of the page is not
 * taken for a write, so the process lives and every byte is right. */
START_TEST(test_read_race_readonly)
{
    access_mode(_i);
    read_race(UPAGER_MAP_READ);
}
END_TEST

/* The same on a read-write mapping that is only read: no page becomes
 * dirty, nothing is written back. */
START_TEST(test_read_race_clean)
{
    access_mode(_i);
    read_race(UPAGER_MAP_READ | UPAGER_MAP_WRITE);
}
END_TEST

/* Writes are still found: data four times the budget round-trips through
 * the store, and every page written was written back. */
START_TEST(test_writes_found)
{
    struct upager_stats s;
    const size_t len = 16 * TU_MIB;

    access_mode(_i);
    tu_env("4M", "65536");
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    for (size_t off = 0; off < len; off += 4096)
        (void)read_byte(p + off); /* loaded for a read first */
    tu_pattern_fill(p, 0, len, 8);
    size_t bad = tu_pattern_check(p, 0, len, 8);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu", bad);
    tu_stats(&s);
    ck_assert_uint_ge(s.writebacks, (len - 4 * TU_MIB) / s.page_size);
}
END_TEST

/* A write to a read-only mapping is still a genuine SIGSEGV. */
START_TEST(test_readonly_write_dies)
{
    access_mode(_i);
    char *path = tu_make_file("rowrite", 256 * TU_KIB, 3);
    tu_env("4M", "65536");
    unsigned char *map = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(map);
    unlink(path);
    ck_assert_int_eq(read_byte(map + 10), tu_pattern_byte(10, 3));
    *(volatile unsigned char *)(map + 70000) = 1;
}
END_TEST

/* ---- pages read in part ---------------------------------------------- */

/* Fills len bytes with pattern `seed`, then touches 3 x budget of other
 * memory so that every page of it is written out and evicted. */
static unsigned char *filled_and_evicted(size_t len, uint64_t seed)
{
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, seed);
    struct upager_stats s;
    tu_stats(&s);
    size_t other_len = 3 * s.budget_bytes;
    unsigned char *other = upager_malloc(other_len);
    ck_assert_ptr_nonnull(other);
    memset(other, 1, other_len);
    upager_free(other);
    for (size_t i = 0; i < len; i += s.page_size)
        ck_assert_int_ne(PG(ADDR_PAGE(p + i))->state, PAGE_RESIDENT);
    return p;
}

/* A random read of an evicted page reads one block (4K of a 64K page) and
 * opens that block only; the bytes are right; a page of a store that keeps
 * whole pages is read whole (check_redis). */
START_TEST(test_part_random_read_one_block)
{
    const size_t len = 8 * TU_MIB;
    struct upager_stats s0, s1;
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 41);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    size_t npages = len / ps, reads = 0;
    tu_stats(&s0);
    for (size_t k = 0; k < 8; k++) {
        size_t page = (k * 37) % npages, off = page * ps + ((k * 5) % 16) * 4096 + 100;
        ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 41));
        struct upager__page *pg = PG(ADDR_PAGE(p + off));
        ck_assert_int_eq(pg->state, PAGE_RESIDENT);
        ck_assert_uint_eq(pg->blocks, 1u << ((k * 5) % 16));
        ck_assert(!(pg->flags & PF_DIRTY));
        reads++;
    }
    tu_stats(&s1);
    ck_assert_uint_eq(s1.major_faults - s0.major_faults, reads);
    ck_assert_uint_eq(s1.bytes_read - s0.bytes_read, reads * 4096);
    /* Every byte of the pages read in part is right, also where the page
     * did not hold the store's bytes yet: those blocks were never open. */
    for (size_t k = 0; k < 8; k++) {
        size_t page = (k * 37) % npages;
        size_t bad = tu_pattern_check(p + page * ps, page * ps, ps, 41);
        ck_assert_msg(bad == (size_t)-1, "page %zu differs at %zu", page, bad);
        ck_assert_uint_eq(PG(ADDR_PAGE(p + page * ps))->blocks, 0); /* whole now */
    }
}
END_TEST

/* A second block of a page read in part is read alone; the next miss (or
 * a block next to one it has: a scan) reads the whole page. */
START_TEST(test_part_second_block_then_whole)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s0, s1;
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 42);
    unsigned char *q = p + 5 * ps;
    struct upager__page *pg = PG(ADDR_PAGE(q));
    tu_stats(&s0);
    ck_assert_int_eq(read_byte(q + 2 * 4096), tu_pattern_byte(5 * ps + 2 * 4096, 42));
    ck_assert_int_eq(read_byte(q + 9 * 4096 + 7), tu_pattern_byte(5 * ps + 9 * 4096 + 7, 42));
    ck_assert_uint_eq(pg->blocks, (1u << 2) | (1u << 9));
    /* The first block again: open, no read. */
    ck_assert_int_eq(read_byte(q + 2 * 4096 + 1), tu_pattern_byte(5 * ps + 2 * 4096 + 1, 42));
    tu_stats(&s1);
    ck_assert_uint_eq(s1.bytes_read - s0.bytes_read, 2 * 4096);
    ck_assert_uint_eq(s1.major_faults - s0.major_faults, 2);
    ck_assert_int_eq(read_byte(q + 14 * 4096), tu_pattern_byte(5 * ps + 14 * 4096, 42));
    ck_assert_uint_eq(pg->blocks, 0);
    tu_stats(&s1);
    ck_assert_uint_eq(s1.bytes_read - s0.bytes_read, 2 * 4096 + ps);
    /* A scan: the block after one the page has reads all of it. */
    unsigned char *r = p + 9 * ps;
    ck_assert_int_eq(read_byte(r + 4 * 4096), tu_pattern_byte(9 * ps + 4 * 4096, 42));
    ck_assert_uint_eq(PG(ADDR_PAGE(r))->blocks, 1u << 4);
    ck_assert_int_eq(read_byte(r + 5 * 4096), tu_pattern_byte(9 * ps + 5 * 4096, 42));
    ck_assert_uint_eq(PG(ADDR_PAGE(r))->blocks, 0);
    size_t bad = tu_pattern_check(r, 9 * ps, ps, 42);
    ck_assert_msg(bad == (size_t)-1, "differs at %zu", bad);
    /* Under UPAGER_ADVICE_RANDOM, blocks only: neighbours and a third
     * block are read alone too, and the last one read makes it whole. */
    unsigned char *t = p + 20 * ps;
    ck_assert_int_eq(upager_advise(t, ps, UPAGER_ADVICE_RANDOM), 0);
    tu_stats(&s0);
    for (unsigned blk = 0; blk < 16; blk++) {
        unsigned k = (blk * 7 + 1) % 16; /* 1, 8, 15, 6, ... */
        ck_assert_int_eq(read_byte(t + k * 4096 + 5), tu_pattern_byte(20 * ps + k * 4096 + 5, 42));
        if (blk < 15)
            ck_assert_uint_eq(__builtin_popcount(PG(ADDR_PAGE(t))->blocks), blk + 1);
    }
    ck_assert_uint_eq(PG(ADDR_PAGE(t))->blocks, 0);
    tu_stats(&s1);
    ck_assert_uint_eq(s1.bytes_read - s0.bytes_read, ps);
    ck_assert_uint_eq(s1.major_faults - s0.major_faults, 16);
    bad = tu_pattern_check(t, 20 * ps, ps, 42);
    ck_assert_msg(bad == (size_t)-1, "differs at %zu", bad);
}
END_TEST

/* A write to a page read in part (to a block it has, and to one it lacks)
 * reads the rest first, and the write survives eviction; both with the
 * fault's context and with the retry rule (_i 1). */
START_TEST(test_part_write)
{
    const size_t len = 4 * TU_MIB;
    access_mode(_i);
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 43);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    unsigned char *a = p + 3 * ps, *b = p + 11 * ps;
    ck_assert_int_eq(read_byte(a + 6 * 4096), tu_pattern_byte(3 * ps + 6 * 4096, 43));
    ck_assert_int_eq(read_byte(b + 1 * 4096), tu_pattern_byte(11 * ps + 1 * 4096, 43));
    ck_assert_uint_ne(PG(ADDR_PAGE(a))->blocks, 0);
    ck_assert_uint_ne(PG(ADDR_PAGE(b))->blocks, 0);
    a[6 * 4096 + 3] = 0xEE;  /* a block the page has, open */
    b[12 * 4096 + 3] = 0xDD; /* a block it lacks */
    ck_assert_uint_eq(PG(ADDR_PAGE(a))->blocks, 0);
    ck_assert_uint_eq(PG(ADDR_PAGE(b))->blocks, 0);
    ck_assert(PG(ADDR_PAGE(a))->flags & PF_DIRTY);
    ck_assert(PG(ADDR_PAGE(b))->flags & PF_DIRTY);
    /* Out and back in: the rest of each page as it was. */
    unsigned char *other = upager_malloc(4 * TU_MIB);
    ck_assert_ptr_nonnull(other);
    memset(other, 2, 4 * TU_MIB);
    ck_assert_int_ne(PG(ADDR_PAGE(a))->state, PAGE_RESIDENT);
    size_t wrong_a = 0, wrong_b = 0;
    for (size_t i = 0; i < ps; i++) {
        unsigned char want = i == 6 * 4096 + 3 ? 0xEE : tu_pattern_byte(3 * ps + i, 43);
        wrong_a += read_byte(a + i) != want;
        want = i == 12 * 4096 + 3 ? 0xDD : tu_pattern_byte(11 * ps + i, 43);
        wrong_b += read_byte(b + i) != want;
    }
    ck_assert_msg(wrong_a == 0 && wrong_b == 0, "wrong bytes: %zu in a, %zu in b", wrong_a,
                  wrong_b);
}
END_TEST

/* The kernel touching a page read in part: upager_pin reads it whole, so
 * a raw write(2) of the whole page (no interposition) succeeds. */
START_TEST(test_part_pin_then_syscall)
{
    const size_t len = 4 * TU_MIB;
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 44);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    unsigned char *a = p + 7 * ps;
    ck_assert_int_eq(read_byte(a + 8 * 4096), tu_pattern_byte(7 * ps + 8 * 4096, 44));
    ck_assert_uint_ne(PG(ADDR_PAGE(a))->blocks, 0);
    ck_assert_int_eq(upager_pin(a, ps, 0), 0);
    ck_assert_uint_eq(PG(ADDR_PAGE(a))->blocks, 0);
    char *path = tu_temp_path("partpin");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(syscall(SYS_write, fd, a, ps), (long)ps);
    ck_assert_int_eq(upager_unpin(a, ps), 0);
    unsigned char *buf = malloc(ps);
    ck_assert_int_eq(pread(fd, buf, ps, 0), (ssize_t)ps);
    size_t bad = tu_pattern_check(buf, 7 * ps, ps, 44);
    ck_assert_msg(bad == (size_t)-1, "differs at %zu", bad);
    free(buf);
    close(fd);
    unlink(path);
    free(path);
}
END_TEST

/* A mapped file whose end falls inside a block: the block reads the file's
 * bytes, then zeros; past the end of the file, zeros. */
START_TEST(test_part_file_tail)
{
    const size_t size = 3 * 65536 + 5000;
    char *path = tu_make_file("parttail", size, 45);
    tu_env("1M", "65536");
    unsigned char *map = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(map);
    ck_assert_int_eq(upager_advise(map, size, UPAGER_ADVICE_RANDOM), 0);
    ck_assert_int_eq(read_byte(map + size - 1), tu_pattern_byte(size - 1, 45));
    ck_assert_uint_eq(PG(ADDR_PAGE(map + size - 1))->blocks, 1u << 1);
    ck_assert_int_eq(read_byte(map + 3 * 65536 + 4096 + 904), 0);
    ck_assert_int_eq(read_byte(map + 3 * 65536 + 100), tu_pattern_byte(3 * 65536 + 100, 45));
    ck_assert_int_eq(read_byte(map + 65536 + 3 * 4096), tu_pattern_byte(65536 + 3 * 4096, 45));
    ck_assert_uint_eq(PG(ADDR_PAGE(map + 65536))->blocks, 1u << 3);
    ck_assert_int_eq(upager_unmap(map), 0);
    unlink(path);
    free(path);
}
END_TEST

/* The budget counts the memory a page read in part holds, not its frame:
 * 64 pages read in part (a block each) stay resident under a budget of
 * 16 pages, and read again they cost no I/O; made whole, they are evicted
 * down to the budget. */
START_TEST(test_part_budget_in_blocks)
{
    const size_t len = 8 * TU_MIB;
    struct upager_stats s0, s1;
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 47);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    for (size_t k = 0; k < 64; k++) {
        size_t off = 2 * k * ps + (k % 16) * 4096 + 9;
        ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 47));
    }
    tu_stats(&s0);
    ck_assert_uint_eq(s0.resident_bytes, 64 * 4096);
    size_t resident = 0;
    for (size_t k = 0; k < 64; k++)
        resident += PG(ADDR_PAGE(p + 2 * k * ps))->state == PAGE_RESIDENT;
    ck_assert_uint_eq(resident, 64); /* four times the budget's 16 pages */
    for (size_t k = 0; k < 64; k++) {
        size_t off = 2 * k * ps + (k % 16) * 4096 + 11;
        ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 47));
    }
    tu_stats(&s1);
    ck_assert_uint_eq(s1.major_faults, s0.major_faults);
    ck_assert_uint_eq(s1.bytes_read, s0.bytes_read);
    for (size_t k = 0; k < 64; k++) {
        size_t bad = tu_pattern_check(p + 2 * k * ps, 2 * k * ps, ps, 47);
        ck_assert_msg(bad == (size_t)-1, "page %zu differs at %zu", 2 * k, bad);
    }
    tu_stats(&s1);
    ck_assert_uint_le(s1.resident_bytes, s1.budget_bytes);
    ck_assert_uint_le(s1.peak_resident_bytes, s1.budget_bytes);
    ck_assert_uint_gt(s1.evictions, s0.evictions);
}
END_TEST

/* Blocks of a page read in part stay open beside each other: under
 * UPAGER_ADVICE_RANDOM, three blocks apart are read and all three stay
 * readable with no fault more; each stretch of open blocks counts as one
 * run against the bound, and two that meet count as one. */
START_TEST(test_part_blocks_stay_open)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s0, s1;
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 47);
    upager__ioq_drain();
    unsigned char *q = p + 7 * ps;
    struct upager__page *pg = PG(ADDR_PAGE(q));
    ck_assert_int_eq(upager_advise(q, ps, UPAGER_ADVICE_RANDOM), 0);
    size_t open0 = atomic_load(&upager__g.open);
    const unsigned blk[3] = {1, 8, 3};
    for (unsigned i = 0; i < 3; i++) {
        size_t off = 7 * ps + blk[i] * 4096 + 11;
        ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 47));
    }
    ck_assert_uint_eq(pg->blocks, (1u << 1) | (1u << 8) | (1u << 3));
    ck_assert_uint_eq(pg->openb, pg->blocks);
    ck_assert_uint_eq(atomic_load(&upager__g.open), open0 + 3);
    tu_stats(&s0);
    for (unsigned r = 0; r < 2; r++)
        for (unsigned i = 0; i < 3; i++) {
            size_t off = 7 * ps + blk[i] * 4096 + 4000;
            ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 47));
        }
    tu_stats(&s1);
    ck_assert_uint_eq(s1.faults, s0.faults);
    /* Block 2 joins 1 and 3 into one run. */
    ck_assert_int_eq(read_byte(q + 2 * 4096), tu_pattern_byte(7 * ps + 2 * 4096, 47));
    ck_assert_uint_eq(pg->openb, (1u << 1) | (1u << 2) | (1u << 3) | (1u << 8));
    ck_assert_uint_eq(atomic_load(&upager__g.open), open0 + 2);
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
    /* The budget shrunk and restored: the count still agrees. */
    ck_assert_int_eq(upager_set_budget(64 * TU_KIB * 8), 0);
    ck_assert_int_eq(upager_set_budget(TU_MIB), 0);
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
}
END_TEST

/* vm.max_map_count bounds the runs open at once, not the resident pages.
 * With max_open at 24 (a test hook; 10,921 at the default 65530), random
 * reads of 200 pages fill a 16-page budget with 200 pages read in part,
 * never more than 24 runs open (the count agrees with the pages' flags
 * and open blocks) and the process's mappings grow by at most two per
 * open run.
 * Every byte is right, and reading the 200 again reads nothing. */
START_TEST(test_part_open_bound)
{
    const size_t len = 32 * TU_MIB;
    enum { N = 200, MAX_OPEN = 24 };
    struct upager_stats s0, s1;
    upager__test_max_open = MAX_OPEN;
    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = filled_and_evicted(len, 53);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    long maps0 = tu_maps_count(), maps_max = maps0;
    size_t open_max = 0;
    for (size_t k = 0; k < N; k++) {
        size_t off = 2 * k * ps + (k % 16) * 4096 + 3;
        ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 53));
        size_t open = atomic_load(&upager__g.open);
        open_max = open > open_max ? open : open_max;
        if (k % 10 == 0) {
            long m = tu_maps_count();
            maps_max = m > maps_max ? m : maps_max;
        }
    }
    ck_assert_msg(open_max <= MAX_OPEN, "%zu pages open at once, for a bound of %d",
                  open_max, MAX_OPEN);
    ck_assert_uint_ge(open_max, MAX_OPEN - MAX_OPEN / 8);
    ck_assert_msg(maps_max - maps0 <= 2 * MAX_OPEN + 4,
                  "%ld more mappings with at most %d pages open", maps_max - maps0, MAX_OPEN);
    size_t resident = 0;
    for (size_t k = 0; k < N; k++)
        resident += PG(ADDR_PAGE(p + 2 * k * ps))->state == PAGE_RESIDENT;
    ck_assert_uint_eq(resident, N);
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
    tu_stats(&s0);
    ck_assert_uint_eq(s0.resident_bytes, N * 4096);
    for (size_t k = 0; k < N; k++) {
        size_t off = 2 * k * ps + (k % 16) * 4096 + 5;
        ck_assert_int_eq(read_byte(p + off), tu_pattern_byte(off, 53));
    }
    tu_stats(&s1);
    ck_assert_uint_eq(s1.major_faults, s0.major_faults);
    ck_assert_uint_eq(s1.bytes_read, s0.bytes_read);
    ck_assert_uint_le(atomic_load(&upager__g.open), MAX_OPEN);
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
}
END_TEST

struct part_worker {
    unsigned char *p;   /* shared upager memory            */
    unsigned char *ref; /* the same, in plain memory       */
    size_t len, ps;
    unsigned id, nthreads;
    uint64_t seed;
    size_t wrong;
};

/* Random reads everywhere; writes only to bytes this thread owns (offset
 * % nthreads == id), mirrored into the reference. */
static void *part_worker_main(void *arg)
{
    struct part_worker *w = arg;
    uint64_t st = w->seed;
    for (int i = 0; i < 5000; i++) {
        size_t off = (size_t)tu_below(&st, w->len);
        if (tu_below(&st, 8) == 0) {
            off -= off % w->nthreads;
            off += w->id;
            if (off >= w->len)
                continue;
            unsigned char v = (unsigned char)tu_rand(&st);
            w->p[off] = v;
            w->ref[off] = v;
        } else {
            unsigned char got = read_byte(w->p + off);
            if (off % w->nthreads == w->id && got != w->ref[off]) /* ours: no race */
                w->wrong++;
        }
    }
    return NULL;
}

/* Four threads, random reads and writes over 8x the budget: pages read in
 * part, made whole, written back and evicted under them; every byte is
 * compared with a plain-memory reference at the end. */
START_TEST(test_part_threads_integrity)
{
    const size_t len = 16 * TU_MIB;
    enum { T = 4 };
    tu_env("2M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_malloc(len);
    unsigned char *ref = malloc(len);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(ref);
    tu_pattern_fill(p, 0, len, 46);
    tu_pattern_fill(ref, 0, len, 46);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    struct part_worker w[T];
    pthread_t t[T];
    uint64_t seed = tu_seed(4600);
    for (unsigned i = 0; i < T; i++) {
        w[i] = (struct part_worker){p, ref, len, ps, i, T, seed + i, 0};
        ck_assert_int_eq(pthread_create(&t[i], NULL, part_worker_main, &w[i]), 0);
    }
    for (unsigned i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        ck_assert_msg(w[i].wrong == 0, "thread %u read %zu wrong bytes", i, w[i].wrong);
    }
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_gt(s.major_faults, 1000);
    ck_assert_uint_lt(s.bytes_read, s.major_faults * ps / 2); /* mostly blocks */
    ck_assert_int_eq(memcmp(p, ref, len), 0);
    /* every change of a page's reference bit was counted */
    upager__ioq_drain();
    ck_assert_uint_eq(upager__clock_open_recount(), atomic_load(&upager__g.open));
    free(ref);
}
END_TEST

/* ---- the two I/O paths ------------------------------------------------ */

/* The same data through both write-back paths (_i 0: straight from the
 * frames through the view; _i 1: through the memfd and an I/O buffer):
 * written back and read again whole, in blocks, from a mapped file; and
 * with the view, the process's RSS does not count the frames twice. */
START_TEST(test_io_paths)
{
    const size_t len = 32 * TU_MIB;
    upager__no_view = _i == 1;
    char *path = tu_make_file("iopath", 3 * 65536 + 5000, 50);
    tu_env("4M", "65536");
    size_t ps = tu_init();
    ck_assert(_i == 1 ? upager__g.view == NULL : upager__g.view != NULL);
    unsigned char *tiny = upager_malloc(16);
    ck_assert_ptr_nonnull(tiny);
    tiny[0] = 1;
    size_t rss0 = tu_rss();
    tu_reset_hwm();
    unsigned char *p = filled_and_evicted(len, 51);
    size_t bad = tu_pattern_check(p, 0, len, 51); /* whole pages, read ahead */
    ck_assert_msg(bad == (size_t)-1, "differs at %zu", bad);
    size_t hwm = tu_hwm();
    ck_assert_msg(hwm <= rss0 + 4 * TU_MIB + 2 * TU_MIB,
                  "VmHWM %zu KiB > RSS at start %zu KiB + budget 4 MiB + 2 MiB", hwm >> 10,
                  rss0 >> 10);
    unsigned char *q = filled_and_evicted(len, 52);
    ck_assert_int_eq(upager_advise(q, len, UPAGER_ADVICE_RANDOM), 0);
    for (size_t k = 0; k < 64; k++) { /* blocks */
        size_t off = (k * 29 % (len / ps)) * ps + (k % 16) * 4096 + 77;
        ck_assert_int_eq(read_byte(q + off), tu_pattern_byte(off, 52));
    }
    unsigned char *map = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(map);
    bad = tu_pattern_check(map, 0, 3 * 65536 + 5000, 50);
    ck_assert_msg(bad == (size_t)-1, "the mapped file differs at %zu", bad);
    ck_assert_int_eq(read_byte(map + 3 * 65536 + 5000), 0);
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
    ck_assert_int_eq(upager_unmap(map), 0);
    unlink(path);
    free(path);
}
END_TEST

Suite *fault_suite(void)
{
    Suite *s = suite_create("fault");
    TCase *tc;

    tc = tcase_create("genuine");
    tcase_set_timeout(tc, 60);
    tcase_add_test_raise_signal(tc, test_null_deref, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_outside_arena, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_freed_large, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_freed_large_evicted, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_never_allocated, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_past_large_end, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_freed_slab, SIGSEGV);
    suite_add_tcase(s, tc);

    tc = tcase_create("diagnostic");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_diag_freed_large);
    tcase_add_test(tc, test_diag_never_allocated);
    tcase_add_test(tc, test_diag_readonly_mapping);
    tcase_add_test(tc, test_diag_outside_arena_silent);
    suite_add_tcase(s, tc);

    tc = tcase_create("resolved");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_fresh_reads_zero);
    tcase_add_test(tc, test_read_then_write);
    tcase_add_test(tc, test_round_trip_through_store);
    suite_add_tcase(s, tc);

    tc = tcase_create("access");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fresh_write_one_fault);
    tcase_add_loop_test(tc, test_read_race_readonly, 0, 2);
    tcase_add_loop_test(tc, test_read_race_clean, 0, 2);
    tcase_add_loop_test(tc, test_writes_found, 0, 2);
    tcase_add_loop_test_raise_signal(tc, test_readonly_write_dies, SIGSEGV, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("part");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_part_random_read_one_block);
    tcase_add_test(tc, test_part_second_block_then_whole);
    tcase_add_loop_test(tc, test_part_write, 0, 2);
    tcase_add_test(tc, test_part_pin_then_syscall);
    tcase_add_test(tc, test_part_file_tail);
    tcase_add_test(tc, test_part_budget_in_blocks);
    tcase_add_test(tc, test_part_blocks_stay_open);
    tcase_add_test(tc, test_part_open_bound);
    tcase_add_test(tc, test_part_threads_integrity);
    tcase_add_loop_test(tc, test_io_paths, 0, 2);
    suite_add_tcase(s, tc);

    return s;
}
