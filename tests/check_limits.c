/*
 * check_limits.c - the library at the edges of what it promises.
 *
 * Cases that push one limit each: threads reading the same pages of a file
 * mapping under a tiny budget (a read racing a load is still a read: no
 * "write to a read-only mapping", nothing dirtied on a read-write mapping),
 * the smallest budget accepted (refused below eight pages, and enough for
 * an access that straddles two pages, and for four threads at once), a read error delivered to the
 * program's own SIGBUS handler with the faulting address, upager_get_stats
 * writing into paged memory while other threads page, the errno of
 * upager_set_budget when write-backs fail or pins are in the way, one
 * allocation larger than an eighth of the arena, and a process that has
 * used up nearly all its kernel mappings before the library starts.
 *
 * Each case checks every value against a reference (the pattern of
 * testutil.h or a malloc'd mirror) and has a timeout: a hang fails.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_suites.h"
#include "faultstore.h"
#include "internal.h"
#include "testutil.h"

#define NO_MISMATCH ((size_t)-1)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned char read_byte(const void *p)
{
    return *(const volatile unsigned char *)p;
}

/* Compares the file at `path` with pattern `seed` over [0, len). */
static size_t file_check(const char *path, size_t len, uint64_t seed)
{
    unsigned char *buf = malloc(len);
    int fd = open(path, O_RDONLY);
    size_t bad;

    ck_assert_ptr_nonnull(buf);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    ck_assert_int_eq(pread(fd, buf, len, 0), (ssize_t)len);
    close(fd);
    bad = tu_pattern_check(buf, 0, len, seed);
    free(buf);
    return bad;
}

/* ====================================================================
 * Threads reading the same pages of a file mapping
 * ==================================================================== */

#define RO_THREADS 4
#define RO_SECONDS 3.0
#define RO_FILE (8 * TU_MIB)

struct ro_run {
    const unsigned char *p;     /* the mapping                            */
    uint64_t seed;              /* the file's pattern                     */
    size_t window;              /* bytes walked at a time: twice the budget */
    double begin, end;          /* when the readers start and stop        */
    pthread_barrier_t start;    /* the readers start together             */
    _Atomic uint64_t reads;     /* bytes read and compared                */
    _Atomic uint64_t bad;       /* ... that differed from the file        */
    _Atomic size_t first_bad;   /* offset of the first that differed + 1  */
    _Atomic uint64_t passes;    /* walks over the whole file              */
};

/* Every reader walks the same sequence of offsets: one byte of each 4K
 * page of a window twice the budget, at a position that moves with the
 * pass, so that the threads fault on the same pages at the same time while
 * the budget keeps evicting them.  The window moves through the file with
 * the clock (every 150 ms), the same for every thread. */
static void *ro_reader(void *arg)
{
    struct ro_run *r = arg;
    const size_t wpages = r->window / 4096, nwin = RO_FILE / r->window;
    uint64_t reads = 0;
    double t;

    pthread_barrier_wait(&r->start);
    for (size_t pass = 0; (t = now()) < r->end; pass++) {
        size_t base = (size_t)((t - r->begin) / 0.15) % nwin * r->window;
        for (size_t k = 0; k < wpages; k++) {
            size_t off = base + k * 4096 + (k * 131 + pass * 17) % 4096;
            unsigned char v = read_byte(r->p + off);
            reads++;
            if (v != tu_pattern_byte(off, r->seed)) {
                size_t zero = 0;
                atomic_fetch_add(&r->bad, 1);
                atomic_compare_exchange_strong(&r->first_bad, &zero, off + 1);
            }
        }
        atomic_fetch_add(&r->passes, 1);
    }
    atomic_fetch_add(&r->reads, reads);
    return NULL;
}

/* Runs RO_THREADS readers over the mapping at p for RO_SECONDS, then
 * asserts that every byte read was the file's. */
static void ro_readers(const unsigned char *p, uint64_t seed, const char *what)
{
    struct upager_stats s;
    static struct ro_run r; /* static: the barrier and atomics outlive no thread */
    pthread_t th[RO_THREADS];

    memset(&r, 0, sizeof r);
    r.p = p;
    r.seed = seed;
    tu_stats(&s);
    r.window = 2 * s.budget_bytes;
    ck_assert_int_eq(pthread_barrier_init(&r.start, NULL, RO_THREADS), 0);
    r.begin = now();
    r.end = r.begin + RO_SECONDS;
    for (int i = 0; i < RO_THREADS; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, ro_reader, &r), 0);
    for (int i = 0; i < RO_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&r.start);
    ck_assert_msg(atomic_load(&r.bad) == 0,
                  "%s: %llu of %llu bytes read differ from the file, the first at "
                  "offset %zu",
                  what, (unsigned long long)atomic_load(&r.bad),
                  (unsigned long long)atomic_load(&r.reads), atomic_load(&r.first_bad) - 1);
    ck_assert_uint_ge(atomic_load(&r.passes), 4 * RO_THREADS);
    printf("limits: %s: %d threads, %llu bytes read in %llu passes, all right\n", what,
           RO_THREADS, (unsigned long long)atomic_load(&r.reads),
           (unsigned long long)atomic_load(&r.passes));
}

/* Four threads read the same bytes of a read-only mapping of a file 32
 * times the budget: a read that waited for another thread's load is a
 * read, not a write to a read-only mapping; the process survives and every
 * value is the file's. */
START_TEST(test_ro_map_threads)
{
    struct upager_stats s;

    tu_env("256K", "4096");
    tu_init();
    char *path = tu_make_file("limits-ro", RO_FILE, 1001);
    const unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    ro_readers(p, 1001, "read-only mapping");
    tu_stats(&s);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_uint_eq(s.writebacks, 0);
    ck_assert_int_eq(upager_unmap((void *)p), 0);
    ck_assert_uint_eq(file_check(path, RO_FILE, 1001), NO_MISMATCH);
    unlink(path);
    free(path);
}
END_TEST

/* The same on a read-write mapping whose threads only read: no page is
 * taken as written, so nothing is written back, not even at upager_unmap,
 * and the file is unchanged, its modification time included. */
START_TEST(test_rw_map_clean_stays_clean)
{
    struct upager_stats s;
    struct stat st0, st1;

    tu_env("256K", "4096");
    tu_init();
    char *path = tu_make_file("limits-rw", RO_FILE, 1002);
    ck_assert_int_eq(stat(path, &st0), 0);
    const unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    ro_readers(p, 1002, "read-write mapping, reads only");
    tu_stats(&s);
    ck_assert_msg(s.writebacks == 0 && s.bytes_written == 0,
                  "reads only, yet %llu pages (%llu bytes) were written back",
                  (unsigned long long)s.writebacks, (unsigned long long)s.bytes_written);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_int_eq(upager_unmap((void *)p), 0);
    tu_stats(&s);
    ck_assert_msg(s.writebacks == 0 && s.bytes_written == 0,
                  "reads only, yet upager_unmap wrote back %llu pages (%llu bytes)",
                  (unsigned long long)s.writebacks, (unsigned long long)s.bytes_written);
    ck_assert_uint_eq(file_check(path, RO_FILE, 1002), NO_MISMATCH);
    ck_assert_int_eq(stat(path, &st1), 0);
    ck_assert_msg(st1.st_mtim.tv_sec == st0.st_mtim.tv_sec &&
                      st1.st_mtim.tv_nsec == st0.st_mtim.tv_nsec,
                  "the file was modified (mtime %lld.%09ld, was %lld.%09ld)",
                  (long long)st1.st_mtim.tv_sec, st1.st_mtim.tv_nsec,
                  (long long)st0.st_mtim.tv_sec, st0.st_mtim.tv_nsec);
    ck_assert_int_eq(tu_file_size(path), (off_t)RO_FILE);
    unlink(path);
    free(path);
}
END_TEST

/* ====================================================================
 * The smallest budget
 * ==================================================================== */

static volatile int *init_rc; /* shared with the child */

static void child_init(void *arg)
{
    (void)arg;
    *init_rc = upager_init();
}

/* A budget below eight pages is refused at start-up: upager_init returns
 * EINVAL after one line naming UPAGER_BUDGET and the minimum ("at least").
 * Eight pages are accepted. */
START_TEST(test_tiny_budget_refused)
{
    static const char *const refused[] = { "4096", "16K", "28K" }; /* 1, 4, 7 pages */
    struct upager_stats s;

    init_rc = tu_shared_alloc(4096);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char *err;
        tu_env(refused[i], "4096");
        *init_rc = -1;
        int status = tu_run_child(child_init, NULL, &err);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "UPAGER_BUDGET=%s: the child ended with status %#x: %s", refused[i],
                      (unsigned)status, err);
        ck_assert_msg(*init_rc == EINVAL,
                      "UPAGER_BUDGET=%s with 4K pages: upager_init returned %d, expected "
                      "EINVAL (%d)",
                      refused[i], *init_rc, EINVAL);
        ck_assert_msg(tu_count_lines(err) == 1 && tu_count_prefix(err, "upager: ") == 1,
                      "UPAGER_BUDGET=%s: expected one line from the library, got:\n%s",
                      refused[i], err);
        ck_assert_msg(strstr(err, "UPAGER_BUDGET") && strstr(err, "at least"),
                      "UPAGER_BUDGET=%s: the line does not name UPAGER_BUDGET and the "
                      "minimum (\"at least\"): %s",
                      refused[i], err);
        free(err);
    }

    tu_env("32K", "4096"); /* eight pages */
    ck_assert_int_eq(upager_init(), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.page_size, 4096);
    ck_assert_uint_eq(s.budget_bytes, 32 * TU_KIB);
}
END_TEST

typedef uint64_t unaligned_u64 __attribute__((aligned(1), may_alias));

/* Under the smallest budget accepted (eight 4K pages), while a block of
 * 64 pages streams through memory: an unaligned 8-byte load and store
 * straddling two pages, and a memcpy from a range straddling two pages
 * into another range straddling two pages (four pages needed at once),
 * each complete with the right values.  A livelock hits the timeout. */
START_TEST(test_min_budget_straddle)
{
    const size_t len = 64 * 4096, stream_len = 64 * 4096;
    uint64_t rng = tu_seed(1004);
    struct upager_stats s;

    tu_env("32K", "4096");
    ck_assert_uint_eq(tu_init(), 4096);
    unsigned char *a = upager_malloc(len);
    unsigned char *b = upager_malloc(len);
    unsigned char *stream = upager_malloc(stream_len);
    unsigned char *ma = malloc(len), *mb = malloc(len);
    ck_assert(a && b && stream && ma && mb);
    tu_pattern_fill(a, 0, len, 1005);
    tu_pattern_fill(ma, 0, len, 1005);
    tu_pattern_fill(b, 0, len, 1006);
    tu_pattern_fill(mb, 0, len, 1006);

    for (int round = 0; round < 300; round++) {
        /* Push everything out: 64 pages through an 8-page budget. */
        memset(stream, round & 0xff, stream_len);

        /* An 8-byte store and load across a page boundary. */
        size_t page = 1 + (size_t)tu_below(&rng, len / 4096 - 1);
        size_t off = page * 4096 - 1 - (size_t)tu_below(&rng, 7);
        uint64_t v = tu_rand(&rng);
        *(volatile unaligned_u64 *)(a + off) = v;
        memcpy(ma + off, &v, 8);
        memset(stream, (round + 1) & 0xff, stream_len);
        uint64_t got = *(volatile unaligned_u64 *)(a + off);
        ck_assert_msg(got == v, "round %d: 8 bytes at %zu across a page boundary read "
                      "%#llx, wrote %#llx", round, off, (unsigned long long)got,
                      (unsigned long long)v);

        /* memcpy between two ranges that each straddle a page boundary. */
        size_t n = 64 + (size_t)tu_below(&rng, 512);
        size_t src = (1 + (size_t)tu_below(&rng, len / 4096 - 1)) * 4096 - n / 2;
        size_t dst = (1 + (size_t)tu_below(&rng, len / 4096 - 1)) * 4096 - n / 3;
        memset(stream, (round + 2) & 0xff, stream_len);
        memcpy(b + dst, a + src, n);
        memcpy(mb + dst, ma + src, n);
        ck_assert_msg(memcmp(b + dst, mb + dst, n) == 0,
                      "round %d: memcpy of %zu bytes from %zu to %zu across page "
                      "boundaries differs", round, n, src, dst);
    }
    ck_assert_msg(memcmp(a, ma, len) == 0, "block a differs from its mirror");
    ck_assert_msg(memcmp(b, mb, len) == 0, "block b differs from its mirror");
    ck_assert_uint_eq(tu_find_not(stream, stream_len, 301 & 0xff), NO_MISMATCH);
    tu_stats(&s);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_uint_gt(s.evictions, 300 * 64);
    free(ma);
    free(mb);
}
END_TEST

/* The smallest budget with threads: four threads read the same pages of
 * a file mapping under eight 4K pages, with the default read-ahead.  No
 * thread may wait forever for a frame that another thread holds while it
 * waits too: every read completes (a hang hits the timeout) and is right. */
START_TEST(test_min_budget_threads)
{
    struct upager_stats s;

    tu_env("32K", "4096");
    tu_init();
    char *path = tu_make_file("limits-min", RO_FILE, 1007);
    const unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    ro_readers(p, 1007, "eight-page budget");
    tu_stats(&s);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_int_eq(upager_unmap((void *)p), 0);
    unlink(path);
    free(path);
}
END_TEST

/* ====================================================================
 * A read error reaches the program's SIGBUS handler
 * ==================================================================== */

#define BUS_PS ((size_t)65536)

static sigjmp_buf bus_jmp;
static volatile sig_atomic_t bus_calls;
static volatile int bus_signo, bus_code;
static void *volatile bus_addr;

static void bus_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    bus_calls++;
    bus_signo = si->si_signo;
    bus_code = si->si_code;
    bus_addr = si->si_addr;
    siglongjmp(bus_jmp, 1);
}

static void install_bus_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = bus_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGBUS, &sa, NULL), 0);
}

/* A read from the store that fails during a fault, with a SIGBUS handler
 * (SA_SIGINFO) the program installed before upager_init (_i 0, 1) or
 * after it (_i 2, 3), on a read (_i even) or a write (_i odd): the handler
 * is called once with SIGBUS, BUS_ADRERR and the very address accessed,
 * and siglongjmps out.  Once the store recovers, the page reads back as
 * it was written. */
START_TEST(test_sigbus_to_program_handler)
{
    const size_t len = 4 * TU_MIB;
    const int before = _i < 2, write = _i & 1;
    struct tu_capture cap;

    tu_env("1M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    if (before)
        install_bus_handler();
    ck_assert_uint_eq(fs_wrap_anon(), BUS_PS);
    if (!before)
        install_bus_handler();
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 1010 + (uint64_t)_i); /* the first MiBs are in the store */

    unsigned char *volatile addr = p + 65536 + 4321;
    bus_calls = 0;
    fs_fail_from(FS_READ, 1, EIO);
    tu_capture_begin(&cap);
    if (sigsetjmp(bus_jmp, 1) == 0) {
        if (write)
            *(volatile unsigned char *)addr = 0x5a;
        else
            (void)read_byte(addr);
        free(tu_capture_end(&cap));
        ck_abort_msg("the %s at %p completed although its page could not be read",
                     write ? "write" : "read", (void *)addr);
    }
    char *text = tu_capture_end(&cap);
    ck_assert_msg(bus_calls == 1, "the program's SIGBUS handler was called %d times",
                  (int)bus_calls);
    ck_assert_int_eq(bus_signo, SIGBUS);
    ck_assert_msg(bus_code == BUS_ADRERR, "si_code %d, expected BUS_ADRERR (%d)", bus_code,
                  BUS_ADRERR);
    ck_assert_msg(bus_addr == (void *)addr, "si_addr %p, expected the address accessed, %p",
                  bus_addr, (void *)addr);
    free(text);

    fs_pass(FS_READ);
    size_t bad = tu_pattern_check(p, 0, len, 1010 + (uint64_t)_i);
    ck_assert_msg(bad == NO_MISMATCH, "after the store recovered, byte %zu differs", bad);
}
END_TEST

/* With no SIGBUS handler of the program's, the same read kills the
 * process with SIGBUS. */
START_TEST(test_sigbus_no_handler)
{
    tu_env("1M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    ck_assert_uint_eq(fs_wrap_anon(), BUS_PS);
    unsigned char *p = upager_malloc(4 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, 4 * TU_MIB, 1020);
    fs_fail_from(FS_READ, 1, EIO);
    (void)read_byte(p + 65536 + 4321);
}
END_TEST

/* ====================================================================
 * upager_get_stats into paged memory
 * ==================================================================== */

#define ST_THREADS 3
#define ST_SECONDS 3.0

struct st_run {
    double end;
    unsigned char *stats_mem;    /* two pages per stats thread, in the arena */
    size_t page;
    _Atomic int next_reader;     /* thread numbers                          */
    _Atomic int next_streamer;
    _Atomic uint64_t calls;      /* upager_get_stats calls                  */
    _Atomic uint64_t insane;     /* ... whose result broke an invariant     */
    _Atomic uint64_t bad_data;   /* streamed passes that read back wrong    */
    _Atomic uint64_t streamed;   /* passes over the streamed buffers        */
    char why[256];               /* the first broken invariant              */
    _Atomic int why_set;
};

static void st_insane(struct st_run *r, const char *fmt, unsigned long long a,
                      unsigned long long b)
{
    atomic_fetch_add(&r->insane, 1);
    if (!atomic_exchange(&r->why_set, 1))
        snprintf(r->why, sizeof r->why, fmt, a, b);
}

static void *st_reader(void *arg)
{
    struct st_run *r = arg;
    int me = atomic_fetch_add(&r->next_reader, 1);
    /* Near the end of its page, so that the fields written last lie in the
     * next one: the struct straddles two pages of the arena. */
    struct upager_stats *s = (struct upager_stats *)(r->stats_mem + (size_t)(2 * me + 1) * r->page -
                                                     (sizeof(struct upager_stats) / 2 & ~(size_t)7));
    uint64_t last_faults = 0, calls = 0;

    while (now() < r->end) {
        int rc = upager_get_stats(s);
        calls++;
        if (rc != 0) {
            st_insane(r, "upager_get_stats returned %llu (%llu)", (unsigned long long)rc, 0);
            continue;
        }
        if (s->resident_bytes > s->budget_bytes)
            st_insane(r, "resident %llu > budget %llu", s->resident_bytes, s->budget_bytes);
        if (s->peak_resident_bytes > s->budget_bytes)
            st_insane(r, "peak %llu > budget %llu", s->peak_resident_bytes, s->budget_bytes);
        if (s->budget_bytes != 256 * TU_KIB || s->page_size != 4096)
            st_insane(r, "budget %llu, page size %llu", s->budget_bytes, s->page_size);
        if (s->faults < last_faults)
            st_insane(r, "faults went back from %llu to %llu", last_faults, s->faults);
        if (s->major_faults > s->faults)
            st_insane(r, "major faults %llu > faults %llu", s->major_faults, s->faults);
        last_faults = s->faults;
    }
    atomic_fetch_add(&r->calls, calls);
    return NULL;
}

static void *st_streamer(void *arg)
{
    struct st_run *r = arg;
    int me = atomic_fetch_add(&r->next_streamer, 1);
    const size_t len = 2 * TU_MIB; /* eight times the budget */
    unsigned char *p = upager_malloc(len);

    if (p == NULL) {
        atomic_fetch_add(&r->bad_data, 1);
        return NULL;
    }
    for (uint64_t pass = 0; now() < r->end; pass++) {
        uint64_t seed = 1030 + 100 * (uint64_t)me + pass;
        tu_pattern_fill(p, 0, len, seed);
        if (tu_pattern_check(p, 0, len, seed) != NO_MISMATCH)
            atomic_fetch_add(&r->bad_data, 1);
        atomic_fetch_add(&r->streamed, 1);
    }
    upager_free(p);
    return NULL;
}

/* Pushes the stats structs out of memory again and again, so that a
 * store into one of them faults whenever the clock or this thread took
 * its page in between. */
static void *st_evictor(void *arg)
{
    struct st_run *r = arg;

    while (now() < r->end) {
        int rc = upager_advise(r->stats_mem, 2 * ST_THREADS * r->page, UPAGER_ADVICE_DONTNEED);
        if (rc != 0)
            st_insane(r, "upager_advise(DONTNEED) on the stats returned %llu (%llu)",
                      (unsigned long long)rc, 0);
    }
    return NULL;
}

/* Three threads call upager_get_stats into structs that live in paged
 * memory (each straddling two pages) while three threads stream through
 * buffers eight times the budget and one more keeps advising DONTNEED on
 * the structs, for three seconds: nothing deadlocks
 * (the timeout fails the case), every call succeeds, every result is sane
 * and the streamed data is right. */
START_TEST(test_stats_no_deadlock)
{
    static struct st_run r;
    pthread_t th[2 * ST_THREADS + 1];
    struct upager_stats s;

    tu_env("256K", "4096");
    memset(&r, 0, sizeof r);
    r.page = tu_init();
    r.stats_mem = upager_malloc(2 * ST_THREADS * r.page);
    ck_assert_ptr_nonnull(r.stats_mem);
    memset(r.stats_mem, 0, 2 * ST_THREADS * r.page);
    r.end = now() + ST_SECONDS;
    for (int i = 0; i < ST_THREADS; i++) {
        ck_assert_int_eq(pthread_create(&th[2 * i], NULL, st_reader, &r), 0);
        ck_assert_int_eq(pthread_create(&th[2 * i + 1], NULL, st_streamer, &r), 0);
    }
    ck_assert_int_eq(pthread_create(&th[2 * ST_THREADS], NULL, st_evictor, &r), 0);
    for (int i = 0; i < 2 * ST_THREADS + 1; i++)
        pthread_join(th[i], NULL);
    ck_assert_msg(atomic_load(&r.insane) == 0, "%llu of %llu results broke an invariant; "
                  "the first: %s", (unsigned long long)atomic_load(&r.insane),
                  (unsigned long long)atomic_load(&r.calls), r.why);
    ck_assert_uint_eq(atomic_load(&r.bad_data), 0);
    ck_assert_uint_ge(atomic_load(&r.streamed), ST_THREADS);
    ck_assert_uint_gt(atomic_load(&r.calls), 0);
    tu_stats(&s);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    printf("limits: stats in paged memory: %llu calls while %llu buffers streamed\n",
           (unsigned long long)atomic_load(&r.calls),
           (unsigned long long)atomic_load(&r.streamed));
}
END_TEST

/* ====================================================================
 * upager_set_budget's errors
 * ==================================================================== */

/* Lowering the budget while every write-back fails with ENOSPC returns
 * ENOSPC (the store's error, not a generic EIO) and leaves the budget as
 * it was, with the data intact.  Lowering it below the bytes pinned
 * returns EBUSY at once (under 100 ms), with write-backs failing or not,
 * and changes nothing either. */
START_TEST(test_set_budget_errno)
{
    const size_t len = 2 * TU_MIB, ps = 65536;
    struct upager_stats s;
    struct tu_capture cap;

    tu_env("2M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    ck_assert_uint_eq(fs_wrap_anon(), ps);
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 1040); /* 32 dirty pages, all resident */
    tu_stats(&s);
    ck_assert_uint_eq(s.resident_bytes, len);

    fs_fail_from(FS_WRITE, 1, ENOSPC);
    tu_capture_begin(&cap);
    int rc = upager_set_budget(TU_MIB);
    free(tu_capture_end(&cap));
    ck_assert_msg(rc == ENOSPC, "upager_set_budget while write-backs fail with ENOSPC "
                  "returned %d (%s), expected ENOSPC", rc, strerror(rc));
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 2 * TU_MIB);
    ck_assert_uint_eq(s.resident_bytes, len);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 1040), NO_MISMATCH);

    /* Twelve pages pinned; a budget of ten pages (above the smallest
     * budget, eight pages) is below them. */
    ck_assert_int_eq(upager_pin(p, 12 * ps, 0), 0);
    for (int failing = 1; failing >= 0; failing--) {
        if (!failing)
            fs_pass(FS_WRITE);
        tu_capture_begin(&cap);
        double t0 = now();
        rc = upager_set_budget(10 * ps);
        double dt = now() - t0;
        free(tu_capture_end(&cap));
        ck_assert_msg(rc == EBUSY, "upager_set_budget below the pinned bytes (write-backs "
                      "%s) returned %d, expected EBUSY", failing ? "failing" : "working", rc);
        ck_assert_msg(dt < 0.1, "upager_set_budget took %.0f ms to return EBUSY", dt * 1e3);
        tu_stats(&s);
        ck_assert_uint_eq(s.budget_bytes, 2 * TU_MIB);
        ck_assert_uint_eq(s.pinned_bytes, 12 * ps);
    }
    ck_assert_int_eq(upager_unpin(p, 12 * ps), 0);
    ck_assert_int_eq(upager_set_budget(TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, TU_MIB);
    ck_assert_uint_le(s.resident_bytes, TU_MIB);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 1040), NO_MISMATCH);
}
END_TEST

/* ====================================================================
 * One allocation larger than a part of the arena
 * ==================================================================== */

/* On the default arena (1T), one allocation of 200G succeeds, and bytes at
 * its start, middle and end read back as written (and one never written
 * reads as zero).  Then six allocations of 100G, each freed at once: each
 * cycle takes under 100 ms, and VmRSS after them is within 8M of what it
 * was before: neither the allocation nor its free touches memory in
 * proportion to its size. */
START_TEST(test_huge_alloc)
{
    const size_t big = 200 * TU_GIB, cycle = 100 * TU_GIB;

    tu_env("64M", NULL);
    tu_init();
    errno = 0;
    unsigned char *p = upager_malloc(big);
    ck_assert_msg(p != NULL, "upager_malloc(200G) on a 1T arena: %s", strerror(errno));
    ck_assert_uint_ge(upager_usable_size(p), big);
    size_t at[3] = { 0, big / 2 + 12345, big - 1 };
    for (int i = 0; i < 3; i++)
        p[at[i]] = (unsigned char)(0x11 * (i + 1));
    for (int i = 0; i < 3; i++)
        ck_assert_msg(read_byte(p + at[i]) == 0x11 * (i + 1), "byte %zu of 200G: %#x", at[i],
                      read_byte(p + at[i]));
    ck_assert_int_eq(read_byte(p + big / 4), 0);
    upager_free(p);

    size_t rss0 = tu_rss();
    for (int i = 0; i < 6; i++) {
        double t0 = now();
        unsigned char *q = upager_malloc(cycle);
        ck_assert_msg(q != NULL, "cycle %d: upager_malloc(100G): %s", i, strerror(errno));
        upager_free(q);
        double dt = now() - t0;
        ck_assert_msg(dt < 0.1, "cycle %d: upager_malloc(100G) + upager_free took %.0f ms", i,
                      dt * 1e3);
    }
    size_t rss1 = tu_rss();
    ck_assert_msg(rss1 <= rss0 + 8 * TU_MIB,
                  "VmRSS grew by %zu KiB over six cycles of upager_malloc(100G)/upager_free",
                  (rss1 - rss0) >> 10);
}
END_TEST

/* ====================================================================
 * Kernel mappings nearly used up
 * ==================================================================== */

#define VMA_LEFT 200
#define VMA_LEN (4 * TU_MIB)

struct vma_result {
    int stage;      /* how far the child got                */
    long ops;       /* operations done                      */
    size_t bad_off; /* first offset that differed, or -1    */
};

static volatile struct vma_result *vma_res;
static unsigned char *vma_mirror;

/* Pages 4M of 4K pages under a 2M budget, every value checked against
 * the mirror: first reads through the first 1.5M (resident, read-only, in
 * few kernel mappings), then a write to every other page of it (each one
 * splits a mapping), then random 8-byte writes and reads over the whole
 * block, then the whole block. */
static void vma_child(void *arg)
{
    uint64_t rng = *(uint64_t *)arg;
    const size_t warm = 1536 * TU_KIB;

    /* A livelock ends as SIGALRM, not as an orphan that spins; the
     * default action, not the handler inherited from Check's runner,
     * which would kill the whole process group. */
    signal(SIGALRM, SIG_DFL);
    alarm(15);
    vma_res->stage = 1;
    if (upager_init() != 0)
        _exit(10);
    unsigned char *p = upager_malloc(VMA_LEN);
    if (p == NULL)
        _exit(11);
    vma_res->stage = 2;
    for (size_t off = 0; off < warm; off += 4096) {
        if (read_byte(p + off + 100) != 0) {
            vma_res->bad_off = off + 100;
            _exit(12);
        }
    }
    vma_res->stage = 3;
    for (size_t off = 0; off < warm; off += 2 * 4096) {
        p[off + 200] = (unsigned char)(off >> 13);
        vma_mirror[off + 200] = (unsigned char)(off >> 13);
    }
    vma_res->stage = 4;
    for (long i = 0; i < 200000; i++) {
        size_t off = (size_t)tu_below(&rng, VMA_LEN - 8);
        if (tu_rand(&rng) & 1) {
            uint64_t v = tu_rand(&rng);
            memcpy(p + off, &v, 8);
            memcpy(vma_mirror + off, &v, 8);
        } else if (memcmp(p + off, vma_mirror + off, 8) != 0) {
            vma_res->bad_off = off;
            vma_res->ops = i;
            _exit(13);
        }
        vma_res->ops = i + 1;
    }
    vma_res->stage = 5;
    for (size_t off = 0; off < VMA_LEN; off += 4096) {
        if (memcmp(p + off, vma_mirror + off, 4096) != 0) {
            vma_res->bad_off = off;
            _exit(14);
        }
    }
    vma_res->stage = 6;
}

/* The process has used all but about 200 of its vm.max_map_count kernel
 * mappings before the library starts (one-page mappings of alternating
 * protection), then pages a block twice its budget with 4K pages: either
 * every value is right, or the process dies of SIGBUS after a line from
 * the library.  Wrong data, SIGSEGV or a hang (SIGALRM after 15 s) fail. */
START_TEST(test_vma_exhaustion)
{
    uint64_t seed = tu_seed(1050);
    long max = tu_max_map_count();
    char *err;

    tu_env("2M", "4096");
    vma_res = tu_shared_alloc(4096);
    memset((void *)vma_res, 0, sizeof *vma_res);
    vma_res->bad_off = NO_MISMATCH;
    vma_mirror = calloc(1, VMA_LEN);
    ck_assert_ptr_nonnull(vma_mirror);
    memset(vma_mirror, 0, VMA_LEN); /* committed now, in its one mapping */

    long have = tu_maps_count();
    long want = max - VMA_LEFT - have;
    ck_assert_int_gt(want, 1000);
    size_t filler_len = (size_t)want * 4096;
    unsigned char *filler = mmap(NULL, filler_len, PROT_NONE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    ck_assert_msg(filler != MAP_FAILED, "mmap: %s", strerror(errno));
    for (long i = 1; i < want; i += 2) {
        if (mprotect(filler + (size_t)i * 4096, 4096, PROT_READ) != 0) {
            ck_assert_msg(errno == ENOMEM, "mprotect: %s", strerror(errno));
            break;
        }
    }
    long left = max - tu_maps_count();
    ck_assert_msg(left >= VMA_LEFT / 2 && left <= 2 * VMA_LEFT,
                  "%ld kernel mappings left of %ld, expected about %d", left, max, VMA_LEFT);

    int status = tu_run_child(vma_child, &seed, &err);
    munmap(filler, filler_len);
    free(vma_mirror);

    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS) {
        ck_assert_msg(strstr(err, "upager:") != NULL,
                      "SIGBUS with %ld mappings left, without a line from the library: %s",
                      left, err);
        printf("limits: %ld kernel mappings left: SIGBUS after %ld operations: %s", left,
               vma_res->ops, err);
    } else {
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0 && vma_res->stage == 6,
                      "%ld kernel mappings left: the child ended with status %#x (%s %d) at "
                      "stage %d after %ld operations, first wrong offset %zd; stderr: %s",
                      left, (unsigned)status,
                      WIFSIGNALED(status) ? "signal" : "exit",
                      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
                      vma_res->stage, vma_res->ops, (ssize_t)vma_res->bad_off, err);
        printf("limits: %ld kernel mappings left: all %ld operations right\n", left,
               vma_res->ops);
    }
    free(err);
}
END_TEST

Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");
    TCase *tc;

    tc = tcase_create("ro_map_threads");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_ro_map_threads);
    tcase_add_test(tc, test_rw_map_clean_stays_clean);
    suite_add_tcase(s, tc);

    tc = tcase_create("min_budget");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_tiny_budget_refused);
    tcase_add_test(tc, test_min_budget_straddle);
    tcase_add_test(tc, test_min_budget_threads);
    suite_add_tcase(s, tc);

    tc = tcase_create("sigbus");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_sigbus_to_program_handler, 0, 4);
    tcase_add_test_raise_signal(tc, test_sigbus_no_handler, SIGBUS);
    suite_add_tcase(s, tc);

    tc = tcase_create("stats");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_stats_no_deadlock);
    suite_add_tcase(s, tc);

    tc = tcase_create("set_budget");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_set_budget_errno);
    suite_add_tcase(s, tc);

    tc = tcase_create("huge_alloc");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_huge_alloc);
    suite_add_tcase(s, tc);

    tc = tcase_create("vma_exhaustion");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_vma_exhaustion);
    suite_add_tcase(s, tc);

    return s;
}
