/*
 * check_robust.c - faults, load and bad input: nothing is lost.
 *
 * I/O errors, injected by the fault store (faultstore.c) between the pager
 * and its store: a write-back that fails keeps the page resident and dirty,
 * counts in io_errors, says so in one line, and is retried until the data
 * is safe; a read that fails during a fault raises SIGBUS, and nothing else
 * aborts.  A real full disk (a small tmpfs, when the tests run as root)
 * does the same.  Under load, eight threads on two cores mix every call of
 * the API under a budget of sixteen pages and agree with a reference copy
 * (loadgen.c).  Across fork, a child never reaches the parent's store or
 * frames.  Faults that are not the library's still kill, whichever
 * SIGSEGV handler the program has, and bad arguments are refused with an
 * errno, or abort with a message where the API says so.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "faultstore.h"
#include "internal.h"
#include "loadgen.h"
#include "testutil.h"

#define NO_MISMATCH ((size_t)-1)
#define PS ((size_t)65536)

/* Reads a byte.  Not instrumented by UBSan, whose null check would turn
 * the deliberate NULL accesses below into an exit instead of a SIGSEGV. */
__attribute__((no_sanitize("undefined"))) static unsigned char read_byte(const void *p)
{
    return *(const volatile unsigned char *)p;
}

/* A known configuration with the anonymous store wrapped by the fault
 * store: budget, page size 64K, no read-ahead unless asked for. */
static void start_wrapped(const char *budget, int readahead)
{
    tu_env(budget, "65536");
    if (!readahead)
        tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = fs_wrap_anon();
    ck_assert_msg(ps == PS, "upager_init or the fault store failed (page size %zu)", ps);
}

/* Asserts that text holds exactly one line, from the library, containing each
 * of the words given (NULL-terminated). */
static void assert_one_line(const char *text, const char *what, ...)
{
    va_list ap;

    ck_assert_msg(tu_count_lines(text) == 1 && tu_count_prefix(text, "upager: ") == 1,
                  "%s: expected one line from the library, got:\n%s", what, text);
    va_start(ap, what);
    for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
        ck_assert_msg(strstr(text, w) != NULL, "%s: the line does not say \"%s\": %s",
                      what, w, text);
    va_end(ap);
}

/* ====================================================================
 * Write-back errors
 * ==================================================================== */

/* Every write-back fails with EIO: each page stays resident and dirty
 * (the budget is exceeded meanwhile), the failures are counted, one line
 * says why, and the data reads back intact throughout.  Once the store
 * recovers, the pages are written back after all: the resident memory
 * comes back under the budget, and every page, pushed out and read back
 * from the store, holds what was written. */
START_TEST(test_writeback_eio_keeps_pages)
{
    const size_t len = 4 * TU_MIB; /* 64 pages, the budget is 16 */
    struct upager_stats s0, s1, s2, s3, s4;
    struct tu_capture cap;

    start_wrapped("1M", 0);
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 601);
    tu_stats(&s0);
    ck_assert_uint_gt(s0.writebacks, 0);
    ck_assert_uint_eq(s0.io_errors, 0);

    upager__ioq_drain(); /* no background write-back still under way */
    tu_stats(&s0);
    fs_fail_from(FS_WRITE, 1, EIO);
    tu_capture_begin(&cap);
    tu_pattern_fill(p, 0, len, 602); /* every page dirty again; none can go */
    size_t bad = tu_pattern_check(p, 0, len, 602);
    tu_stats(&s1);
    char *text = tu_capture_end(&cap);

    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu while write-backs fail", bad);
    ck_assert_uint_gt(fs_failures(FS_WRITE), 0);
    ck_assert_uint_eq(s1.io_errors, fs_failures(FS_WRITE));
    ck_assert_uint_eq(s1.writebacks, s0.writebacks);
    ck_assert_msg(s1.resident_bytes >= len,
                  "%zu bytes resident: a page whose write-back failed left memory",
                  s1.resident_bytes);
    ck_assert_uint_gt(s1.resident_bytes, s1.budget_bytes);

    /* The store recovers: the next faults evict down to the budget. */
    fs_pass(FS_WRITE);
    unsigned char *q = upager_malloc(2 * TU_MIB);
    ck_assert_ptr_nonnull(q);
    memset(q, 7, 2 * TU_MIB);
    tu_stats(&s2);
    ck_assert_uint_le(s2.resident_bytes, s2.budget_bytes);
    ck_assert_uint_ge(s2.writebacks - s1.writebacks, (len - TU_MIB) / PS);
    ck_assert_uint_eq(s2.io_errors, s1.io_errors);

    /* Everything out, then back from the store. */
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    tu_stats(&s3);
    bad = tu_pattern_check(p, 0, len, 602);
    tu_stats(&s4);
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu after the store recovered", bad);
    ck_assert_uint_ge(s4.major_faults - s3.major_faults, len / PS);
    ck_assert_uint_eq(s4.io_errors, s1.io_errors);
    assert_one_line(text, "persistent EIO", "write-back", "input/output error", NULL);
    free(text);
}
END_TEST

/* One write-back fails with ENOSPC: counted once, one line naming the
 * error, and the page is written on a later try: after everything went
 * through the store, the data is intact. */
START_TEST(test_writeback_enospc_once)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s0, s1;
    struct tu_capture cap;

    start_wrapped("1M", 0);
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    fs_fail_nth(FS_WRITE, 3, ENOSPC);
    tu_capture_begin(&cap);
    tu_pattern_fill(p, 0, len, 611);
    char *text = tu_capture_end(&cap);
    tu_stats(&s0);
    ck_assert_uint_eq(fs_failures(FS_WRITE), 1);
    ck_assert_uint_eq(s0.io_errors, 1);

    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    size_t bad = tu_pattern_check(p, 0, len, 611);
    tu_stats(&s1);
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu: the failed write-back was "
                  "not retried", bad);
    ck_assert_uint_eq(s1.io_errors, 1);
    ck_assert_uint_ge(s1.major_faults - s0.major_faults, len / PS);
    assert_one_line(text, "one ENOSPC", "write-back", "no space left on device", NULL);
    free(text);
}
END_TEST

/* Every third write-back fails, or every second one is torn (half of the
 * page reaches the store, then EIO), while sixteen times the budget is
 * written twice: nothing is lost, and the failures are all counted. */
static void intermittent(int every, int err, uint64_t seed)
{
    const size_t len = 16 * TU_MIB;
    struct upager_stats s0, s1;
    struct tu_capture cap;

    start_wrapped("1M", 0);
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, seed);
    fs_reset_counts();
    fs_fail_every(FS_WRITE, (uint64_t)every, err);
    tu_capture_begin(&cap);
    tu_pattern_fill(p, 0, len, seed + 1);
    size_t bad = tu_pattern_check(p, 0, len, seed + 1);
    char *text = tu_capture_end(&cap);
    tu_stats(&s0);
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu while every %d write fails",
                  bad, every);
    ck_assert_uint_ge(fs_failures(FS_WRITE), len / PS / (size_t)every / 2);
    ck_assert_uint_eq(s0.io_errors, fs_failures(FS_WRITE));
    ck_assert_int_eq(tu_count_lines(text), tu_count_prefix(text, "upager: "));
    printf("robust: every %d write-back failing (%s): %llu failures, %d lines on "
           "stderr, peak resident %zu KiB of %zu KiB\n",
           every, err == FS_SHORT ? "torn" : strerror(err),
           (unsigned long long)fs_failures(FS_WRITE), tu_count_lines(text),
           s0.peak_resident_bytes >> 10, s0.budget_bytes >> 10);
    free(text);

    fs_pass(FS_WRITE);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    tu_stats(&s0);
    ck_assert_uint_le(s0.resident_bytes, s0.budget_bytes);
    bad = tu_pattern_check(p, 0, len, seed + 1);
    tu_stats(&s1);
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu after the store recovered", bad);
    ck_assert_uint_ge(s1.major_faults - s0.major_faults, (len - TU_MIB) / PS);
}

START_TEST(test_writeback_every_third_eio)
{
    intermittent(3, EIO, 621);
}
END_TEST

START_TEST(test_writeback_torn)
{
    intermittent(2, FS_SHORT, 631);
}
END_TEST

/* Lowering the budget, or advising DONTNEED, while every write-back fails:
 * an error comes back, nothing is lost, nothing aborts; once the store
 * recovers the same calls succeed and the budget holds. */
START_TEST(test_shrink_while_writes_fail)
{
    const size_t len = 2 * TU_MIB;
    struct upager_stats s;

    start_wrapped("2M", 0);
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 641); /* 32 dirty pages, all resident */
    fs_fail_from(FS_WRITE, 1, EIO);

    struct tu_capture cap;
    tu_capture_begin(&cap);
    int rc = upager_set_budget(TU_MIB);
    int rc2 = upager_advise(p, len, UPAGER_ADVICE_DONTNEED);
    free(tu_capture_end(&cap));
    ck_assert_msg(rc == EIO || rc == ENOSPC, "upager_set_budget while write-backs fail: %d",
                  rc);
    ck_assert_msg(rc2 == EIO, "upager_advise(DONTNEED) while write-backs fail: %d", rc2);
    tu_stats(&s);
    ck_assert_uint_eq(s.resident_bytes, len);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 641), NO_MISMATCH);

    fs_pass(FS_WRITE);
    ck_assert_int_eq(upager_set_budget(TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, TU_MIB);
    ck_assert_msg(s.resident_bytes <= TU_MIB,
                  "upager_set_budget(1M) returned 0 with %zu KiB still resident",
                  s.resident_bytes >> 10);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 641), NO_MISMATCH);
}
END_TEST

/* A file mapping whose writes fail: upager_sync and upager_unmap return
 * the error and the mapping stays, with its data; after recovery both
 * succeed and the file holds the data.  A failing fdatasync is reported
 * by upager_sync too. */
START_TEST(test_mapping_write_fails)
{
    const size_t len = 2 * TU_MIB;
    char *path = tu_temp_path("robust-map");

    start_wrapped("1M", 0);
    unsigned char *p = upager_map_file(path, len, UPAGER_MAP_READ | UPAGER_MAP_WRITE |
                                                      UPAGER_MAP_CREATE);
    ck_assert_ptr_nonnull(p);
    struct upager__store *st = fs_mapping_store(p);
    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(fs_wrap(st), 0);

    struct tu_capture cap;
    tu_capture_begin(&cap);
    fs_fail_from(FS_WRITE, 1, EIO);
    tu_pattern_fill(p, 0, len, 651);
    int rc_sync = upager_sync(p, len);
    int rc_unmap = upager_unmap(p);
    fs_pass(FS_WRITE);
    fs_fail_from(FS_SYNC, 1, EIO);
    int rc_sync2 = upager_sync(p, len);
    free(tu_capture_end(&cap));
    ck_assert_int_eq(rc_sync, EIO);
    ck_assert_int_eq(rc_unmap, EIO);
    ck_assert_int_eq(rc_sync2, EIO);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 651), NO_MISMATCH);

    fs_pass(FS_SYNC);
    ck_assert_int_eq(upager_sync(p, len), 0);
    ck_assert_int_eq(upager_unmap(p), 0);
    unsigned char *buf = malloc(len);
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pread(fd, buf, len, 0), (ssize_t)len);
    close(fd);
    ck_assert_uint_eq(tu_pattern_check(buf, 0, len, 651), NO_MISMATCH);
    free(buf);
    unlink(path);
    free(path);
}
END_TEST

/* ====================================================================
 * Read errors
 * ==================================================================== */

/* Data four times the budget: its first pages are in the store. */
static unsigned char *evicted_block(size_t len, uint64_t seed)
{
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, seed);
    return p;
}

/* A read that fails during a fault raises SIGBUS. */
START_TEST(test_read_eio_sigbus)
{
    start_wrapped("1M", 0);
    unsigned char *p = evicted_block(4 * TU_MIB, 661);
    fs_fail_from(FS_READ, 1, EIO);
    read_byte(p + 100);
}
END_TEST

/* So does a short read. */
START_TEST(test_read_short_sigbus)
{
    start_wrapped("1M", 0);
    unsigned char *p = evicted_block(4 * TU_MIB, 662);
    fs_fail_nth(FS_READ, 1, FS_SHORT);
    p[100] = 1; /* a write needs the page read first too */
}
END_TEST

struct sigbus_child {
    volatile uintptr_t *addr;
};

static void sigbus_child(void *arg)
{
    struct sigbus_child *c = arg;
    tu_env("1M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    if (fs_wrap_anon() != PS)
        _exit(3);
    unsigned char *p = upager_malloc(4 * TU_MIB);
    if (!p)
        _exit(4);
    memset(p, 3, 4 * TU_MIB);
    fs_fail_from(FS_READ, 1, EIO);
    *c->addr = (uintptr_t)(p + 4321);
    read_byte(p + 4321);
    _exit(5);
}

/* The SIGBUS comes after one line naming the address. */
START_TEST(test_read_error_line)
{
    struct sigbus_child c = { tu_shared_alloc(4096) };
    char *err;

    tu_env("1M", "65536");
    int status = tu_run_child(sigbus_child, &c, &err);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS,
                  "child status %#x, expected death by SIGBUS; stderr: %s",
                  (unsigned)status, err);
    assert_one_line(err, "read error", "bus error", NULL);
    ck_assert_msg(tu_mentions_address(err, *c.addr), "the line does not name %#lx: %s",
                  (unsigned long)*c.addr, err);
    free(err);
}
END_TEST

/* upager_pin over pages whose read fails returns EIO and pins nothing; the
 * page that was half read is not installed: pinned again after recovery,
 * every byte is right. */
START_TEST(test_pin_read_error)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s;

    start_wrapped("1M", 0);
    unsigned char *p = evicted_block(len, 671);
    fs_reset_counts();
    fs_fail_nth(FS_READ, 3, FS_SHORT);
    ck_assert_int_eq(upager_pin(p, 4 * PS, 0), EIO);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
    ck_assert_uint_eq(s.io_errors, 1);
    ck_assert_uint_eq(fs_failures(FS_READ), 1);

    fs_pass(FS_READ);
    ck_assert_int_eq(upager_pin(p, 4 * PS, 0), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 4 * PS);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 4 * PS, 671), NO_MISMATCH);
    ck_assert_int_eq(upager_unpin(p, 4 * PS), 0);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 671), NO_MISMATCH);
}
END_TEST

/* Write-back in the background (ioq.c) fails: the I/O threads' writes are
 * refused, and the pages they took stay dirty and resident -- nothing is
 * lost; the failures count in io_errors.  Once the store recovers, the
 * I/O threads write them after all, while the program does nothing but
 * wait, and every page reads back from the store intact. */
START_TEST(test_background_writeback_fails)
{
    const size_t len = 4 * TU_MIB; /* 64 pages, the budget is 16 */
    struct upager_stats s0, s1, s2;
    struct tu_capture cap;

    start_wrapped("1M", 0);
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 611);
    upager__ioq_drain();
    fs_reset_counts();
    fs_fail_from(FS_WRITE, 1, EIO);
    tu_capture_begin(&cap);
    /* Rewrite every page, then read it all twice: the hand passes over the
     * cooled dirty pages for the I/O threads, whose writes fail. */
    tu_pattern_fill(p, 0, len, 612);
    size_t bad = tu_pattern_check(p, 0, len, 612);
    if (bad == NO_MISMATCH)
        bad = tu_pattern_check(p, 0, len, 612);
    upager__ioq_drain();
    tu_stats(&s0);
    free(tu_capture_end(&cap));
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu while write-backs fail", bad);
    ck_assert_msg(fs_io_thread_failures(FS_WRITE) > 0,
                  "no background write-back was tried (%llu writes, %llu from I/O threads)",
                  (unsigned long long)fs_calls(FS_WRITE),
                  (unsigned long long)fs_io_thread_calls(FS_WRITE));
    ck_assert_uint_ge(s0.io_errors, fs_io_thread_failures(FS_WRITE));
    ck_assert_uint_gt(s0.resident_bytes, s0.budget_bytes); /* kept, not dropped */

    fs_pass(FS_WRITE);
    uint64_t before = fs_io_thread_calls(FS_WRITE);
    /* After a failure the clock writes its victims alone for a moment
     * (ioq.c), then hands the dirty ones to the I/O threads again. */
    struct timespec pause = {0, 200 * 1000 * 1000};
    nanosleep(&pause, NULL);
    /* Everything is resident (over the budget): new memory makes the
     * clock evict again. */
    unsigned char *q = upager_malloc(len);
    ck_assert_ptr_nonnull(q);
    tu_pattern_fill(q, 0, len, 613);
    upager__ioq_drain();
    ck_assert_msg(fs_io_thread_calls(FS_WRITE) > before,
                  "the I/O threads wrote nothing once the store recovered");
    tu_stats(&s1);
    ck_assert_uint_le(s1.resident_bytes, s1.budget_bytes);
    /* Everything pushed out and read back from the store. */
    ck_assert_int_eq(upager_set_budget(8 * PS), 0);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 612), NO_MISMATCH);
    tu_stats(&s2);
    ck_assert_uint_ge(s2.major_faults - s1.major_faults, len / PS - 16);
    ck_assert_uint_eq(tu_pattern_check(q, 0, len, 613), NO_MISMATCH);
    upager_free(p);
    upager_free(q);
}
END_TEST

/* Read-ahead served by the I/O threads fails (the store refuses every
 * read they make): harmless -- the program's own faults load the pages,
 * no SIGBUS, everything intact, the failures counted. */
START_TEST(test_async_readahead_fails)
{
    const size_t len = 8 * TU_MIB; /* 128 pages, the budget is 32 */
    struct upager_stats s0, s1;
    struct tu_capture cap;

    start_wrapped("2M", 1);
    unsigned char *p = evicted_block(len, 621);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_SEQUENTIAL), 0);
    upager__ioq_drain();
    fs_reset_counts();
    tu_stats(&s0);
    fs_fail_io_threads(FS_READ, EIO);
    tu_capture_begin(&cap);
    size_t bad = tu_pattern_check(p, 0, len, 621); /* a sequential scan */
    upager__ioq_drain();
    fs_fail_io_threads(FS_READ, 0);
    free(tu_capture_end(&cap));
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu", bad);
    ck_assert_msg(fs_io_thread_failures(FS_READ) > 0,
                  "no read-ahead by the I/O threads was tried (%llu reads)",
                  (unsigned long long)fs_calls(FS_READ));
    tu_stats(&s1);
    ck_assert_uint_ge(s1.io_errors - s0.io_errors, fs_io_thread_failures(FS_READ));
    ck_assert_uint_le(s1.resident_bytes, s1.budget_bytes);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 621), NO_MISMATCH);
}
END_TEST

/* A read-ahead run whose read fails because of a page the program did not
 * ask for: the faulting pages still load, no SIGBUS; once the store
 * recovers everything reads back intact.  (Page 6 is unreadable; pages 0
 * to 5 are read in order, so the read-ahead window, doubling, reaches
 * page 6 while the program faults on an earlier page.) */
START_TEST(test_readahead_read_error)
{
    const size_t len = 4 * TU_MIB, bad_page = 6;
    struct upager_stats s;

    start_wrapped("1M", 1);
    unsigned char *p = evicted_block(len, 681);
    ck_assert_int_eq((uintptr_t)p % PS, 0);
    uint64_t bad_off = (uint64_t)ADDR_PAGE(p + bad_page * PS) << upager__g.page_shift;
    fs_reset_counts();
    fs_rule_range(FS_READ, FS_FROM, 1, EIO, bad_off, bad_off + PS);
    for (size_t i = 0; i < bad_page; i++)
        read_byte(p + i * PS);
    upager__ioq_drain(); /* the read-ahead of the I/O threads is done */
    ck_assert_msg(fs_failures(FS_READ) >= 1,
                  "no read-ahead reached page %zu (%llu reads)", bad_page,
                  (unsigned long long)fs_calls(FS_READ));
    ck_assert_uint_eq(tu_pattern_check(p, 0, bad_page * PS, 681), NO_MISMATCH);
    fs_pass(FS_READ);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 681), NO_MISMATCH);
    tu_stats(&s);
    ck_assert_uint_ge(s.io_errors, 1);
}
END_TEST

/* WILLNEED over pages whose reads fail loads nothing and kills nothing. */
START_TEST(test_willneed_read_error)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s0, s1;

    start_wrapped("1M", 0);
    unsigned char *p = evicted_block(len, 691);
    tu_stats(&s0);
    fs_fail_from(FS_READ, 1, EIO);
    int rc = upager_advise(p, 2 * TU_MIB, UPAGER_ADVICE_WILLNEED);
    ck_assert_msg(rc == 0 || rc == EIO, "upager_advise(WILLNEED): %d", rc);
    for (int i = 0; i < 200 && fs_failures(FS_READ) < 2 * TU_MIB / PS; i++)
        usleep(10000); /* the loading may go on in the background */
    tu_stats(&s1);
    ck_assert_uint_gt(s1.io_errors, s0.io_errors);
    ck_assert_uint_le(s1.resident_bytes, s1.budget_bytes);
    fs_pass(FS_READ);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 691), NO_MISMATCH);
}
END_TEST

/* ====================================================================
 * A real full disk
 * ==================================================================== */

/* The store on a tmpfs of 8 MiB, in a mount namespace of the case's own;
 * a filler file leaves 1 MiB free; 6 MiB of data under a 2 MiB budget:
 * write-backs fail with ENOSPC, the pages stay resident (the budget is
 * exceeded), one line says why, and the data is intact.  Once the filler
 * is gone every page goes through the store and reads back right. */
START_TEST(test_full_disk)
{
    const size_t len = 6 * TU_MIB;
    struct upager_stats s0, s1;
    struct tu_capture cap;
    char dir[4096], filler[4200];

    if (geteuid() != 0) {
        printf("robust: full disk: skipped: not root, cannot mount a tmpfs\n");
        return;
    }
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
        printf("robust: full disk: skipped: no mount namespace (%s)\n", strerror(errno));
        return;
    }
    /* Both mounts live in this process's namespace only, and vanish with
     * it: the first, over the test directory, holds the mount point (and
     * the files that capture stderr); the second is the small disk. */
    snprintf(dir, sizeof dir, "%s/disk", tu_tmpdir());
    if (mount("upager-test", tu_tmpdir(), "tmpfs", MS_NOSUID | MS_NODEV, "size=64m") != 0 ||
        mkdir(dir, 0700) != 0 ||
        mount("upager-test", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=8m,mode=0700") != 0) {
        printf("robust: full disk: skipped: cannot mount a tmpfs (%s)\n", strerror(errno));
        return;
    }
    tu_env("2M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    tu_setenv("UPAGER_DIR", dir);
    tu_init();

    struct statvfs vfs;
    snprintf(filler, sizeof filler, "%s/filler", dir);
    int fd = open(filler, O_RDWR | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(statvfs(dir, &vfs), 0);
    off_t room = (off_t)vfs.f_bavail * (off_t)vfs.f_frsize;
    ck_assert_int_eq(fallocate(fd, 0, 0, room - (off_t)TU_MIB), 0);

    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_capture_begin(&cap);
    tu_pattern_fill(p, 0, len, 701);
    size_t bad = tu_pattern_check(p, 0, len, 701);
    char *text = tu_capture_end(&cap);
    tu_stats(&s0);
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu on a full disk", bad);
    ck_assert_uint_gt(s0.io_errors, 0);
    ck_assert_uint_gt(s0.resident_bytes, s0.budget_bytes);
    ck_assert_uint_ge(s0.resident_bytes, len - 2 * TU_MIB);

    ck_assert_int_eq(close(fd), 0);
    ck_assert_int_eq(unlink(filler), 0);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    tu_stats(&s0);
    ck_assert_uint_le(s0.resident_bytes, s0.budget_bytes);
    bad = tu_pattern_check(p, 0, len, 701);
    tu_stats(&s1);
    ck_assert_msg(bad == NO_MISMATCH, "data differs at %zu after space came back", bad);
    ck_assert_uint_ge(s1.major_faults - s0.major_faults, len / PS);
    ck_assert_uint_eq(s1.io_errors, s0.io_errors);
    printf("robust: full disk: %llu write-backs refused with ENOSPC, all %zu MiB intact\n",
           (unsigned long long)s0.io_errors, len >> 20);
    upager_free(p);
    assert_one_line(text, "full disk", "write-back", "no space left on device", NULL);
    free(text);
}
END_TEST

/* ====================================================================
 * Load
 * ==================================================================== */

static void run_load(const char *tag, const char *budget, const char *page_size,
                     struct lg_config *cfg, int every_write_fails)
{
    struct lg_result r;
    struct tu_capture cap;

    tu_env(budget, page_size);
    /* The load measures concurrency, not the device: buffered store I/O
     * keeps it fast (integrity and the rest run with the default, direct
     * I/O), unless UPAGER_TEST_DIRECT_IO says otherwise. */
    if (!getenv("UPAGER_TEST_DIRECT_IO"))
        tu_setenv("UPAGER_DIRECT_IO", "0");
    if (every_write_fails)
        ck_assert_uint_ne(fs_wrap_anon(), 0);
    else
        tu_init();
    cfg->seed = tu_seed(cfg->seed);
    cfg->quiet = 1;
    if (every_write_fails) {
        fs_fail_every(FS_WRITE, (uint64_t)every_write_fails, ENOSPC);
        cfg->io_errors_ok = 1;
        tu_capture_begin(&cap); /* a line for each failure after a success */
    }
    int rc = lg_run(cfg, &r);
    if (every_write_fails) {
        fs_pass(FS_WRITE);
        free(tu_capture_end(&cap));
    }
    lg_print(tag, &r);
    ck_assert_msg(rc == 0, "%s: the load could not start: %s", tag, strerror(rc));
    ck_assert_msg(r.errors == 0, "%s (seed %#llx): %llu errors, the first: %s", tag,
                  (unsigned long long)cfg->seed, (unsigned long long)r.errors,
                  r.first_error);
    ck_assert_uint_gt(r.ops, 10000);
    ck_assert_uint_gt(r.pins, 100);
    ck_assert_uint_gt(r.budget_changes, 5);
    ck_assert_uint_gt(r.after.evictions - r.before.evictions, 1000);
    ck_assert_uint_gt(r.after.major_faults - r.before.major_faults, 1000);
    if (every_write_fails) {
        ck_assert_uint_gt(r.after.io_errors, 0);
    } else {
        ck_assert_uint_eq(r.after.io_errors, 0);
        ck_assert_uint_le(r.after.peak_resident_bytes, r.max_budget);
    }
}

/* Eight threads, 4K pages, a budget of 16 to 32 pages. */
START_TEST(test_load_small_pages)
{
    struct lg_config c = {
        .threads = 8, .seconds = 8, .thread_bytes = 256 * TU_KIB, .max_blocks = 24,
        .shared_pages = 4, .nbudgets = 3, .verify_every = 400, .seed = 0x10ad4,
        .budgets = { 64 * TU_KIB, 96 * TU_KIB, 128 * TU_KIB },
    };
    run_load("robust: load 4K", "64K", "4096", &c, 0);
}
END_TEST

/* Eight threads, 64K pages, a budget of 16 to 32 pages. */
START_TEST(test_load_large_pages)
{
    struct lg_config c = {
        .threads = 8, .seconds = 8, .thread_bytes = 2 * TU_MIB, .max_blocks = 24,
        .shared_pages = 3, .nbudgets = 3, .verify_every = 400, .seed = 0x10ad64,
        .budgets = { TU_MIB, 3 * TU_MIB / 2, 2 * TU_MIB },
    };
    run_load("robust: load 64K", "1M", "65536", &c, 0);
}
END_TEST

/* The same, while every fifth write-back fails with ENOSPC. */
START_TEST(test_load_write_errors)
{
    struct lg_config c = {
        .threads = 8, .seconds = 6, .thread_bytes = 2 * TU_MIB, .max_blocks = 24,
        .shared_pages = 3, .nbudgets = 3, .verify_every = 400, .seed = 0x10ade,
        .budgets = { TU_MIB, 3 * TU_MIB / 2, 2 * TU_MIB },
    };
    run_load("robust: load 64K, every 5th write fails", "1M", "65536", &c, 5);
}
END_TEST

/* ====================================================================
 * fork
 * ==================================================================== */

static unsigned char *parent_block;
static int parent_store_fd;

static void child_reads_parent(void *arg)
{
    (void)arg;
    read_byte(parent_block); /* in the parent's store */
    _exit(10);
}

static void child_writes_parent(void *arg)
{
    (void)arg;
    parent_block[4 * TU_MIB - 1] = 0xEE; /* resident and dirty in the parent */
    _exit(10);
}

/* The number of descriptors of the process that are memfds of upager. */
static int upager_memfds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k > 0) {
            target[k] = '\0';
            n += strncmp(target, "/memfd:upager", 13) == 0;
        }
    }
    closedir(d);
    return n;
}

/* Nothing of the parent's stays open in the child: no memfd, and the
 * parent's store descriptor is closed. */
static void child_checks_fds(void *arg)
{
    (void)arg;
    if (upager_memfds() != 0)
        _exit(11);
    if (fcntl(parent_store_fd, F_GETFD) != -1 || errno != EBADF)
        _exit(12);
    _exit(0);
}

/* The child pages memory of its own, four times its budget. */
static void child_allocates(void *arg)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s;
    (void)arg;
    unsigned char *q = upager_malloc(len);
    if (!q)
        _exit(20);
    tu_pattern_fill(q, 0, len, 802);
    if (tu_pattern_check(q, 0, len, 802) != NO_MISMATCH)
        _exit(21);
    if (upager_get_stats(&s) != 0 || s.evictions == 0 || s.major_faults == 0)
        _exit(22);
    if (upager_memfds() != (int)upager__g.nshard) /* its own, afresh */
        _exit(23);
    upager_free(q);
    _exit(0);
}

static void child_execs(void *arg)
{
    (void)arg;
    execl("/bin/true", "true", (char *)NULL);
    _exit(30);
}

static void expect_status(int status, int sig, int code, const char *what, char *err)
{
    if (sig)
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == sig,
                      "%s: status %#x, expected death by signal %d; stderr: %s", what,
                      (unsigned)status, sig, err);
    else
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == code,
                      "%s: status %#x, expected exit %d; stderr: %s", what,
                      (unsigned)status, code, err);
    free(err);
}

/* Runs fn in a child (tu_run_child) and checks how it ended: killed by
 * signal sig, or (sig 0) exited with code. */
static void run_expect(void (*fn)(void *), void *arg, int sig, int code, const char *what)
{
    char *err;
    int status = tu_run_child(fn, arg, &err);
    expect_status(status, sig, code, what, err);
}

/* A child touching the parent's paged memory (a page in the store, a
 * resident dirty page) dies of SIGSEGV; it holds none of the parent's
 * descriptors; it may exec, and may page memory of its own.  The parent's
 * data, resident and evicted, is intact afterwards, and it goes on
 * paging. */
START_TEST(test_fork_policy)
{
    const size_t len = 4 * TU_MIB;
    struct upager_stats s;

    tu_env("1M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    tu_init();
    parent_block = upager_malloc(len);
    ck_assert_ptr_nonnull(parent_block);
    tu_pattern_fill(parent_block, 0, len, 801);
    parent_store_fd = upager__g.anon.fd;
    ck_assert_int_ge(parent_store_fd, 0);
    ck_assert_int_eq(upager_memfds(), (int)upager__g.nshard);

    run_expect(child_reads_parent, NULL, SIGSEGV, 0,
                  "child reading the parent's evicted page");
    run_expect(child_writes_parent, NULL, SIGSEGV, 0,
                  "child writing the parent's resident page");
    run_expect(child_checks_fds, NULL, 0, 0,
                  "child's descriptors (11: a memfd, 12: the store)");
    run_expect(child_allocates, NULL, 0, 0,
                  "child paging its own memory");
    run_expect(child_execs, NULL, 0, 0, "child exec /bin/true");

    size_t bad = tu_pattern_check(parent_block, 0, len, 801);
    ck_assert_msg(bad == NO_MISMATCH, "parent data differs at %zu after the children", bad);
    unsigned char *q = upager_malloc(len);
    ck_assert_ptr_nonnull(q);
    tu_pattern_fill(q, 0, len, 803);
    ck_assert_uint_eq(tu_pattern_check(q, 0, len, 803), NO_MISMATCH);
    ck_assert_uint_eq(tu_pattern_check(parent_block, 0, len, 801), NO_MISMATCH);
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
}
END_TEST

static atomic_int scan_stop;

static void *scanner(void *arg)
{
    unsigned char *p = arg;
    uint64_t sum = 0;
    while (!atomic_load(&scan_stop)) {
        volatile unsigned char *v = p;
        size_t i = sum % (4 * TU_MIB);
        sum += tu_touch_read(p, 4 * TU_MIB, 4096);
        v[i] = v[i]; /* and dirty a page now and then, keeping its data */
    }
    return (void *)(uintptr_t)sum;
}

/* Children forked while another thread of the parent is in the middle of
 * faults and evictions (it may hold page locks, the clock lock, an I/O
 * buffer) start afresh and page their own memory. */
START_TEST(test_fork_during_faults)
{
    const size_t len = 4 * TU_MIB;
    pthread_t th;

    tu_env("1M", "65536");
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 811);
    ck_assert_int_eq(pthread_create(&th, NULL, scanner, p), 0);
    for (int i = 0; i < 12; i++) {
        usleep(20000);
        run_expect(child_allocates, NULL, 0, 0,
                      "child forked during faults");
    }
    atomic_store(&scan_stop, 1);
    pthread_join(th, NULL);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 811), NO_MISMATCH);
}
END_TEST

/* ====================================================================
 * Other SIGSEGV handlers
 * ==================================================================== */

struct handler_log {
    volatile int paged_ok;      /* the library's faults were resolved     */
    volatile int own_called;    /* the program's handler ran              */
    volatile uintptr_t own_addr;/* the address it was called for          */
    volatile int own_handled;   /* faults in its own region it resolved   */
    volatile uintptr_t expected;/* the address the child touched          */
    void *volatile bad_free;    /* the pointer a child passed to free     */
};

static struct handler_log *hlog;
static struct sigaction previous;
static char *own_region;
#define OWN_LEN ((size_t)65536)

static void recording_handler(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    hlog->own_called = 1;
    hlog->own_addr = (uintptr_t)si->si_addr;
    _exit(42);
}

/* The program's handler resolves its own region and passes anything else
 * to the handler it replaced. */
static void chaining_handler(int sig, siginfo_t *si, void *ctx)
{
    char *a = si->si_addr;
    if (a >= own_region && a < own_region + OWN_LEN) {
        mprotect(own_region, OWN_LEN, PROT_READ | PROT_WRITE);
        hlog->own_handled++;
        return;
    }
    if (previous.sa_flags & SA_SIGINFO)
        previous.sa_sigaction(sig, si, ctx);
    else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN)
        previous.sa_handler(sig);
    else
        signal(sig, SIG_DFL); /* returns: the access faults again, and kills */
}

static int page_some(uint64_t seed)
{
    const size_t len = 4 * TU_MIB;
    unsigned char *p = upager_malloc(len);
    if (!p)
        return -1;
    tu_pattern_fill(p, 0, len, seed);
    int ok = tu_pattern_check(p, 0, len, seed) == NO_MISMATCH;
    upager_free(p);
    return ok ? 0 : -1;
}

static void install(void (*fn)(int, siginfo_t *, void *), struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, old) != 0)
        _exit(50);
}

/* A handler installed before the library starts. */
static void child_handler_before(void *arg)
{
    volatile uintptr_t null_address = 0;
    (void)arg;
    install(recording_handler, NULL);
    if (page_some(901) != 0)
        _exit(51);
    hlog->paged_ok = 1;
    read_byte((void *)null_address);
    _exit(52);
}

/* A handler installed after the library started, that does not chain. */
static void child_handler_after(void *arg)
{
    (void)arg;
    if (page_some(902) != 0)
        _exit(51);
    hlog->paged_ok = 1;
    unsigned char *p = upager_malloc(4 * TU_MIB);
    if (!p)
        _exit(53);
    memset(p, 1, 4 * TU_MIB); /* its first page is in the store now */
    install(recording_handler, NULL);
    hlog->expected = (uintptr_t)p;
    read_byte(p);
    _exit(54); /* the page was loaded: the library still got the fault */
}

/* A handler installed after the library started, that chains. */
static void child_handler_chained(void *arg)
{
    volatile uintptr_t null_address = 0;
    (void)arg;
    if (upager_init() != 0)
        _exit(55);
    own_region = mmap(NULL, OWN_LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (own_region == MAP_FAILED)
        _exit(56);
    install(chaining_handler, &previous);
    own_region[10] = 1; /* its own fault */
    if (page_some(903) != 0)
        _exit(51);
    own_region[20] = 2;
    hlog->paged_ok = 1;
    read_byte((void *)null_address);
    _exit(52);
}

static void handler_env(void)
{
    tu_env("1M", "65536");
    hlog = tu_shared_alloc(4096);
    memset((void *)hlog, 0, sizeof *hlog);
}

/* A program's SIGSEGV handler installed before upager starts is replaced
 * by libsigsegv's: upager's faults work, and a fault that is not upager's
 * kills the process with SIGSEGV without reaching the program's handler. */
START_TEST(test_handler_installed_before)
{
    char *err;

    handler_env();
    int status = tu_run_child(child_handler_before, NULL, &err);
    ck_assert_msg(hlog->paged_ok, "upager's faults failed under a handler installed "
                  "before it (status %#x): %s", (unsigned)status, err);
    ck_assert_msg(!hlog->own_called, "the program's handler was called (status %#x)",
                  (unsigned)status);
    expect_status(status, SIGSEGV, 0, "NULL access with an earlier handler", err);
}
END_TEST

/* A program's handler installed after upager started takes every SIGSEGV,
 * upager's own faults included: it is called for an arena page that is in
 * the store. */
START_TEST(test_handler_installed_after)
{
    char *err;

    handler_env();
    int status = tu_run_child(child_handler_after, NULL, &err);
    ck_assert(hlog->paged_ok);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 42,
                  "status %#x: expected the program's handler to get the fault", (unsigned)status);
    ck_assert(hlog->own_called);
    ck_assert_uint_eq(hlog->own_addr, hlog->expected);
    free(err);
}
END_TEST

/* A handler installed after upager started that passes the faults it does
 * not own to the previous handler: upager works, the program's own faults
 * work, and a NULL access still dies of SIGSEGV. */
START_TEST(test_handler_chained)
{
    char *err;

    handler_env();
    int status = tu_run_child(child_handler_chained, NULL, &err);
    ck_assert_msg(hlog->paged_ok, "status %#x: paging under a chaining handler failed: %s",
                  (unsigned)status, err);
    ck_assert_int_eq(hlog->own_handled, 1);
    expect_status(status, SIGSEGV, 0, "NULL access under a chaining handler", err);
}
END_TEST

static void *null_thread(void *arg)
{
    volatile uintptr_t null_address = (uintptr_t)arg;
    read_byte((void *)null_address);
    return NULL;
}

/* A NULL access in another thread, while the library pages: SIGSEGV. */
START_TEST(test_null_deref_thread)
{
    pthread_t th;

    tu_env("1M", "65536");
    ck_assert_int_eq(page_some(904), 0);
    unsigned char *p = evicted_block(4 * TU_MIB, 905);
    ck_assert_int_eq(pthread_create(&th, NULL, null_thread, NULL), 0);
    tu_touch_read(p, 4 * TU_MIB, 4096);
    pthread_join(th, NULL);
}
END_TEST

/* ====================================================================
 * Bad input
 * ==================================================================== */

START_TEST(test_free_foreign)
{
    static int x;
    tu_env("1M", "65536");
    tu_init();
    upager_free(&x);
}
END_TEST

START_TEST(test_free_twice)
{
    tu_env("1M", "65536");
    void *p = upager_malloc(100000);
    ck_assert_ptr_nonnull(p);
    upager_free(p);
    upager_free(p);
}
END_TEST

static void *bad_ptr;

static void child_free(void *arg)
{
    int kind = (int)(intptr_t)arg;
    char stack_var[16];
    void *p;

    switch (kind) {
    case 0: /* before the library ever started */
        bad_ptr = stack_var;
        break;
    case 1: /* a libc pointer */
        upager_init();
        bad_ptr = malloc(64);
        break;
    case 2: /* a small block, twice */
        p = upager_malloc(24);
        upager_free(p);
        bad_ptr = p;
        break;
    case 3: /* inside a large block */
        p = upager_malloc(TU_MIB);
        bad_ptr = (char *)p + 4096;
        break;
    }
    hlog->bad_free = bad_ptr;
    upager_free(bad_ptr);
    _exit(60);
}

/* Each bad free aborts after one line that names the function and the
 * address. */
START_TEST(test_free_messages)
{
    static const char *what[] = { "before start-up", "libc pointer", "double free",
                                  "interior pointer" };
    tu_env("1M", "65536");
    hlog = tu_shared_alloc(4096);
    memset((void *)hlog, 0, sizeof *hlog);
    for (int kind = 0; kind < 4; kind++) {
        char *err;
        int status = tu_run_child(child_free, (void *)(intptr_t)kind, &err);
        ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                      "%s: status %#x, expected SIGABRT; stderr: %s", what[kind],
                      (unsigned)status, err);
        ck_assert_msg(tu_count_prefix(err, "upager: ") == 1 && strstr(err, "upager_free"),
                      "%s: expected one line naming upager_free: %s", what[kind], err);
        ck_assert_msg(tu_mentions_address(err, (uintptr_t)hlog->bad_free),
                      "%s: the line does not name %p: %s", what[kind], hlog->bad_free, err);
        free(err);
    }
}
END_TEST

/* Residency calls outside the arena return EINVAL. */
START_TEST(test_outside_arena_einval)
{
    char stack[8192];
    char *heap = malloc(8192);

    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_malloc(TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 9, TU_MIB);
    ck_assert_ptr_nonnull(heap);
    char *end = upager__g.base + (upager__g.npages << upager__g.page_shift);
    const void *addrs[] = { stack, heap, NULL, (void *)1, end, end + ps };
    for (size_t i = 0; i < sizeof addrs / sizeof addrs[0]; i++) {
        const void *a = addrs[i];
        ck_assert_int_eq(upager_pin(a, 4096, 0), EINVAL);
        ck_assert_int_eq(upager_pin(a, 4096, UPAGER_PIN_WRITE), EINVAL);
        ck_assert_int_eq(upager_unpin(a, 4096), EINVAL);
        ck_assert_int_eq(upager_advise(a, 4096, UPAGER_ADVICE_DONTNEED), EINVAL);
        ck_assert_int_eq(upager_advise(a, 4096, UPAGER_ADVICE_WILLNEED), EINVAL);
        ck_assert_int_eq(upager_sync(a, 4096), EINVAL);
    }
    /* Ranges that start inside and run past the end of the arena. */
    ck_assert_int_eq(upager_pin(end - ps, 2 * ps, 0), EINVAL);
    ck_assert_int_eq(upager_advise(end - ps, 2 * ps, UPAGER_ADVICE_DONTNEED), EINVAL);
    ck_assert_int_eq(upager_sync(end - ps, 2 * ps), EINVAL);
    ck_assert_int_eq(upager_pin(p, SIZE_MAX, 0), EINVAL);
    ck_assert_int_eq(upager_advise(p, SIZE_MAX, UPAGER_ADVICE_WILLNEED), EINVAL);
    ck_assert_int_eq(upager_sync(p, SIZE_MAX), EINVAL);
    ck_assert_int_eq(upager_pin(p, 4096, 0x80), EINVAL); /* unknown flag */
    ck_assert_int_eq(upager_unmap(p), EINVAL);            /* not a mapping */
    ck_assert_int_eq(upager_unmap(stack), EINVAL);
    /* Nothing changed. */
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
    ck_assert_uint_eq(tu_find_not(p, TU_MIB, 9), NO_MISMATCH);
    free(heap);
}
END_TEST

/* Sizes that overflow: NULL with ENOMEM, the block given to realloc left
 * as it was, nothing counted as allocated. */
START_TEST(test_overflowing_sizes)
{
    struct upager_stats s0, s1;

    tu_env("1M", "65536");
    tu_init();
    unsigned char *p = upager_malloc(1000);
    ck_assert_ptr_nonnull(p);
    memset(p, 4, 1000);
    tu_stats(&s0);

#define EXPECT_ENOMEM(call)                                                     \
    do {                                                                        \
        errno = 0;                                                              \
        void *r_ = (call);                                                      \
        int e_ = errno;                                                         \
        ck_assert_msg(r_ == NULL && e_ == ENOMEM, "%s: %p, errno %d", #call, r_, e_); \
    } while (0)
    EXPECT_ENOMEM(upager_malloc(SIZE_MAX));
    EXPECT_ENOMEM(upager_malloc(SIZE_MAX - 4096));
    EXPECT_ENOMEM(upager_malloc(SIZE_MAX / 2));
    EXPECT_ENOMEM(upager_calloc(SIZE_MAX / 2 + 1, 2));
    EXPECT_ENOMEM(upager_calloc(65537, SIZE_MAX / 65536));
    EXPECT_ENOMEM(upager_calloc(SIZE_MAX, SIZE_MAX));
    EXPECT_ENOMEM(upager_realloc(p, SIZE_MAX));
    EXPECT_ENOMEM(upager_realloc(p, SIZE_MAX - 100));
    EXPECT_ENOMEM(upager_aligned_alloc(16, SIZE_MAX));
    EXPECT_ENOMEM(upager_aligned_alloc(4096, SIZE_MAX - 8192));
    EXPECT_ENOMEM(upager_aligned_alloc((size_t)1 << 62, 16));
    EXPECT_ENOMEM(upager_aligned_alloc((size_t)1 << 63, TU_MIB));
    EXPECT_ENOMEM(upager_aligned_alloc((size_t)1 << 40, (size_t)1 << 40));
#undef EXPECT_ENOMEM

    tu_stats(&s1);
    ck_assert_uint_eq(s1.allocated_bytes, s0.allocated_bytes);
    ck_assert_uint_ge(upager_usable_size(p), 1000);
    ck_assert_uint_eq(tu_find_not(p, 1000, 4), NO_MISMATCH);
    /* The allocator still works. */
    void *q = upager_malloc(3 * TU_MIB);
    ck_assert_ptr_nonnull(q);
    memset(q, 5, 3 * TU_MIB);
    upager_free(q);
    upager_free(p);
}
END_TEST

/* After start-up: page_size is refused with EBUSY and one clear line;
 * budget works as upager_set_budget does, evicting down before it
 * returns; a bad budget changes nothing. */
START_TEST(test_configure_after_start)
{
    const size_t len = 16 * TU_MIB;
    struct upager_stats s;
    struct tu_capture cap;

    tu_env("16M", "65536");
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 951);
    tu_stats(&s);
    ck_assert_uint_gt(s.resident_bytes, 12 * TU_MIB);

    tu_capture_begin(&cap);
    int rc = upager_configure("page_size", "128K");
    char *text = tu_capture_end(&cap);
    ck_assert_int_eq(rc, EBUSY);
    assert_one_line(text, "page_size after start", "page_size", "cannot change", NULL);
    free(text);

    ck_assert_int_eq(upager_configure("budget", "8M"), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 8 * TU_MIB);
    ck_assert_uint_le(s.resident_bytes, 8 * TU_MIB);
    ck_assert_uint_eq(s.page_size, PS);

    tu_capture_begin(&cap);
    rc = upager_configure("budget", "12Q");
    text = tu_capture_end(&cap);
    ck_assert_int_eq(rc, EINVAL);
    assert_one_line(text, "bad budget after start", "12Q", NULL);
    free(text);
    ck_assert_int_eq(upager_configure(NULL, "1"), EINVAL);
    ck_assert_int_eq(upager_configure("budget", NULL), EINVAL);
    ck_assert_int_eq(upager_set_budget(SIZE_MAX), EINVAL);
    ck_assert_int_eq(upager_set_budget(0), EINVAL);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 8 * TU_MIB);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 951), NO_MISMATCH);
    tu_stats(&s);
    ck_assert_uint_le(s.peak_resident_bytes, 16 * TU_MIB);
    ck_assert_uint_le(s.resident_bytes, 8 * TU_MIB);
}
END_TEST


/* ---- a memory cgroup with the default budget ----------------------------- */

/* Creates a memory cgroup limited to `limit` bytes (v2 where the unified
 * hierarchy has the memory controller, else v1); its directory into dir.
 * Returns false with *why when it cannot (not root, no memory controller). */
static bool cgroup_make(char *dir, size_t len, size_t limit, const char **why)
{
    char buf[256] = "";
    FILE *f = fopen("/sys/fs/cgroup/cgroup.controllers", "r");
    bool v2 = f && fgets(buf, sizeof buf, f) && strstr(buf, "memory");
    if (f)
        fclose(f);
    snprintf(dir, len, "%s/upager-check-%d", v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory",
             (int)getpid());
    if (mkdir(dir, 0755) != 0) {
        *why = "cannot create a memory cgroup (not root, or no memory controller)";
        return false;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, v2 ? "memory.max" : "memory.limit_in_bytes");
    f = fopen(path, "w");
    if (!f || fprintf(f, "%zu\n", limit) < 0 || fclose(f) != 0) {
        rmdir(dir);
        *why = "cannot set the cgroup's memory limit";
        return false;
    }
    return true;
}

static const char *cg_dir;

static void cgroup_child(void *arg)
{
    (void)arg;
    char path[512];
    snprintf(path, sizeof path, "%s/cgroup.procs", cg_dir);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0)
        _exit(3);
    /* The default budget: half of the cgroup's limit.  Four times that in
     * data, written and read back twice. */
    struct upager_stats s;
    if (upager_init() != 0 || upager_get_stats(&s) != 0 || s.budget_bytes > 64 * TU_MIB)
        _exit(4);
    size_t n = 4 * s.budget_bytes / sizeof(uint64_t);
    uint64_t *a = upager_malloc(n * sizeof *a);
    if (!a)
        _exit(5);
    for (size_t i = 0; i < n; i++)
        a[i] = i * 2654435761u;
    for (int r = 0; r < 2; r++)
        for (size_t i = 0; i < n; i++)
            if (a[i] != i * 2654435761u)
                _exit(6);
}

/* A program in a memory cgroup of 128M, with the default settings, is not
 * OOM-killed: the default budget is half of the cgroup's limit (v1 or v2),
 * leaving room for the page cache that the store's I/O fills. */
START_TEST(test_cgroup_default_budget)
{
    char dir[256], *err = NULL;
    const char *why = NULL;
    tu_env(NULL, NULL);
    if (!cgroup_make(dir, sizeof dir, 128 * TU_MIB, &why)) {
        printf("robust: cgroup: skipped: %s\n", why);
        return;
    }
    cg_dir = dir;
    int st = tu_run_child(cgroup_child, NULL, &err);
    rmdir(dir);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "child in a 128M cgroup: %s %d; stderr: %s",
                  WIFSIGNALED(st) ? "killed by signal" : "exit status",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), err);
    free(err);
}
END_TEST

Suite *robust_suite(void)
{
    Suite *s = suite_create("robust");
    TCase *tc;

    tc = tcase_create("write_errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_writeback_eio_keeps_pages);
    tcase_add_test(tc, test_background_writeback_fails);
    tcase_add_test(tc, test_writeback_enospc_once);
    tcase_add_test(tc, test_writeback_every_third_eio);
    tcase_add_test(tc, test_writeback_torn);
    tcase_add_test(tc, test_shrink_while_writes_fail);
    tcase_add_test(tc, test_mapping_write_fails);
    suite_add_tcase(s, tc);

    tc = tcase_create("read_errors");
    tcase_set_timeout(tc, 60);
    tcase_add_test_raise_signal(tc, test_read_eio_sigbus, SIGBUS);
    tcase_add_test_raise_signal(tc, test_read_short_sigbus, SIGBUS);
    tcase_add_test(tc, test_read_error_line);
    tcase_add_test(tc, test_pin_read_error);
    tcase_add_test(tc, test_readahead_read_error);
    tcase_add_test(tc, test_async_readahead_fails);
    tcase_add_test(tc, test_willneed_read_error);
    suite_add_tcase(s, tc);

    tc = tcase_create("full_disk");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_full_disk);
    suite_add_tcase(s, tc);

    tc = tcase_create("cgroup");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_cgroup_default_budget);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_load_small_pages);
    tcase_add_test(tc, test_load_large_pages);
    tcase_add_test(tc, test_load_write_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("fork");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_fork_policy);
    tcase_add_test(tc, test_fork_during_faults);
    suite_add_tcase(s, tc);

    tc = tcase_create("handlers");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_handler_installed_before);
    tcase_add_test(tc, test_handler_installed_after);
    tcase_add_test(tc, test_handler_chained);
    tcase_add_test_raise_signal(tc, test_null_deref_thread, SIGSEGV);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_input");
    tcase_set_timeout(tc, 60);
    tcase_add_test_raise_signal(tc, test_free_foreign, SIGABRT);
    tcase_add_test_raise_signal(tc, test_free_twice, SIGABRT);
    tcase_add_test(tc, test_free_messages);
    tcase_add_test(tc, test_outside_arena_einval);
    tcase_add_test(tc, test_overflowing_sizes);
    tcase_add_test(tc, test_configure_after_start);
    suite_add_tcase(s, tc);

    return s;
}
