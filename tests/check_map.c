/*
 * check_map.c - file mappings, pinning, advice and the run-time budget.
 *
 * A file seen through upager_map_file reads byte-exact under a budget far
 * smaller than it, a read-write mapping's changes reach the file (on
 * eviction, upager_sync and upager_unmap) and nothing past its end, a
 * read-only mapping stays read-only, and every error is an errno, never a
 * crash.  Pinned memory may be handed to read(2) and write(2), stays
 * resident, nests, and never exceeds the budget.  Advice moves the fault
 * counts in the direction it promises.  upager_set_budget lowers the
 * resident memory before it returns.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_suites.h"
#include "testutil.h"

#define NO_MISMATCH ((size_t)-1)

/* Pushes everything that is not pinned out of memory: reads a block of
 * three times the budget, written once so that it lives in the store. */
static void flush(void)
{
    static unsigned char *junk;
    static size_t len;
    struct upager_stats s;

    if (junk == NULL) {
        tu_stats(&s);
        len = 3 * s.budget_bytes;
        junk = upager_malloc(len);
        ck_assert_ptr_nonnull(junk);
        memset(junk, 0x6b, len);
    }
    tu_touch_read(junk, len, 4096);
}

/* Compares the file at `path` over [off, off+len) with pattern `seed`,
 * reading it with pread on a descriptor of its own. */
static size_t file_check(const char *path, size_t off, size_t len, uint64_t seed)
{
    unsigned char *buf = malloc(len);
    int fd = open(path, O_RDONLY);
    size_t bad;

    ck_assert_ptr_nonnull(buf);
    ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
    ck_assert_int_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
    bad = tu_pattern_check(buf, off, len, seed);
    free(buf);
    return bad;
}

/* ---- mapping ------------------------------------------------------------ */

/* A file twelve times the budget reads byte-exact through a read-only
 * mapping, the whole file or a prefix of it, and the resident memory stays
 * within the budget. */
START_TEST(test_map_read_exact)
{
    const size_t len = 24 * TU_MIB;
    struct upager_stats s;

    tu_env("2M", "65536");
    char *path = tu_make_file("read", len, 61);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    size_t bad = tu_pattern_check(p, 0, len, 61);
    ck_assert_msg(bad == NO_MISMATCH, "mapping differs from the file at %zu", bad);
    bad = tu_pattern_check(p, 0, len, 61); /* again, after evictions */
    ck_assert_msg(bad == NO_MISMATCH, "second pass differs at %zu", bad);
    tu_stats(&s);
    ck_assert_uint_ge(s.bytes_read, 2 * len - 4 * TU_MIB);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_uint_eq(s.writebacks, 0);
    ck_assert_int_eq(upager_unmap(p), 0);

    unsigned char *q = upager_map_file(path, 8 * TU_MIB, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(q);
    ck_assert_uint_eq(tu_pattern_check(q, 0, 8 * TU_MIB, 61), NO_MISMATCH);
    ck_assert_int_eq(upager_unmap(q), 0);
    unlink(path);
    free(path);
}
END_TEST

/* A read-write mapping: dirty pages reach the file when evicted, all of
 * them after upager_sync, and later changes after upager_unmap; pread on
 * a separate descriptor sees them, and the file keeps its size. */
START_TEST(test_map_write_sync_unmap)
{
    const size_t len = 8 * TU_MIB;

    tu_env("2M", "65536");
    char *path = tu_make_file("rw", len, 62);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 62), NO_MISMATCH);

    tu_pattern_fill(p, 0, len, 63);
    /* The first MiB was evicted long ago: it is in the file already. */
    ck_assert_uint_eq(file_check(path, 0, TU_MIB, 63), NO_MISMATCH);
    ck_assert_int_eq(upager_sync(p, len), 0);
    ck_assert_uint_eq(file_check(path, 0, len, 63), NO_MISMATCH);

    tu_pattern_fill(p + 3 * TU_MIB, 3 * TU_MIB, 100000, 64);
    ck_assert_int_eq(upager_unmap(p), 0);
    ck_assert_uint_eq(file_check(path, 0, 3 * TU_MIB, 63), NO_MISMATCH);
    ck_assert_uint_eq(file_check(path, 3 * TU_MIB, 100000, 64), NO_MISMATCH);
    ck_assert_uint_eq(file_check(path, 3 * TU_MIB + 100000,
                                 len - 3 * TU_MIB - 100000, 63), NO_MISMATCH);
    ck_assert_int_eq(tu_file_size(path), (off_t)len);
    unlink(path);
    free(path);
}
END_TEST

/* A write to a resident page of a read-only mapping is a genuine fault. */
START_TEST(test_map_readonly_write_resident)
{
    tu_env("2M", "65536");
    char *path = tu_make_file("ro1", TU_MIB, 65);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(*(volatile unsigned char *)p, tu_pattern_byte(0, 65));
    unlink(path);
    *(volatile unsigned char *)p = 1;
}
END_TEST

/* A write to a page of a read-only mapping that was never loaded is a
 * genuine fault too, not a load. */
START_TEST(test_map_readonly_write_cold)
{
    tu_env("2M", "65536");
    char *path = tu_make_file("ro2", 8 * TU_MIB, 66);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(p);
    unlink(path);
    *(volatile unsigned char *)(p + 6 * TU_MIB) = 1;
}
END_TEST

/* After upager_unmap the addresses are gone: SIGSEGV. */
START_TEST(test_map_access_after_unmap)
{
    tu_env("2M", "65536");
    char *path = tu_make_file("gone", TU_MIB, 67);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(*(volatile unsigned char *)p, tu_pattern_byte(0, 67));
    ck_assert_int_eq(upager_unmap(p), 0);
    unlink(path);
    (void)*(volatile unsigned char *)p;
}
END_TEST

/* A file whose size is not a multiple of the page size: the bytes past
 * its end in the last page read as zeros, and writes there never reach
 * the file, whose size does not change.  Run with 64K and 4K pages, with
 * and without direct I/O (whose transfers must stay aligned). */
START_TEST(test_map_partial_page)
{
    const size_t size = 100000;

    tu_env("2M", (_i & 1) ? "4096" : "65536");
    tu_setenv("UPAGER_DIRECT_IO", (_i & 2) ? "1" : "0");
    size_t ps = tu_init();
    char *path = tu_make_file("partial", size, 68);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    size_t end = (size + ps - 1) / ps * ps;
    ck_assert_uint_eq(tu_pattern_check(p, 0, size, 68), NO_MISMATCH);
    size_t nz = tu_find_not(p + size, end - size, 0);
    ck_assert_msg(nz == NO_MISMATCH, "byte %zu past the end of the file is %d",
                  size + nz, p[size + nz]);

    tu_pattern_fill(p, 0, size, 69);
    memset(p + size, 0xFF, end - size);
    ck_assert_int_eq(upager_sync(p, size), 0);
    ck_assert_int_eq(tu_file_size(path), (off_t)size);
    ck_assert_uint_eq(file_check(path, 0, size, 69), NO_MISMATCH);
    flush();
    ck_assert_uint_eq(tu_pattern_check(p, 0, size, 69), NO_MISMATCH);
    ck_assert_int_eq(upager_unmap(p), 0);
    ck_assert_int_eq(tu_file_size(path), (off_t)size);
    ck_assert_uint_eq(file_check(path, 0, size, 69), NO_MISMATCH);
    unlink(path);
    free(path);
}
END_TEST

static void expect_map_error(const char *path, size_t length, int flags, int err,
                             const char *what)
{
    errno = 0;
    void *p = upager_map_file(path, length, flags);
    int e = errno;
    ck_assert_msg(p == NULL, "%s: mapped at %p", what, p);
    ck_assert_msg(e == err, "%s: errno %d (%s), expected %d (%s)", what, e,
                  strerror(e), err, strerror(err));
}

/* For root, whom file permissions do not stop: the permission checks run
 * in a child that gives up root for the "nobody" user.  Exit status 0:
 * both EACCES as expected; 1, 2: the first or second check failed; 10:
 * could not drop privileges; 11: nobody cannot use the store directory. */
static const char *eacces_path;

static void eacces_child(void *arg)
{
    (void)arg;
    if (setgid(65534) != 0 || setuid(65534) != 0)
        _exit(10);
    if (access(tu_tmpdir(), W_OK | X_OK) != 0)
        _exit(11);
    errno = 0;
    if (upager_map_file(eacces_path, 0, UPAGER_MAP_READ) != NULL || errno != EACCES)
        _exit(1);
    if (chmod(eacces_path, 0644) == 0) /* not the owner: must fail */
        _exit(3);
    errno = 0;
    if (upager_map_file(eacces_path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE) != NULL
        || errno != EACCES)
        _exit(2);
}

/* Every misuse is an errno, and the library works afterwards. */
START_TEST(test_map_errors)
{
    tu_env("2M", "65536");
    char *missing = tu_temp_path("missing");
    char *empty = tu_make_file("empty", 0, 1);
    char *small = tu_make_file("small", 100000, 70);
    const int R = UPAGER_MAP_READ, W = UPAGER_MAP_WRITE, C = UPAGER_MAP_CREATE;

    expect_map_error(missing, 0, R, ENOENT, "missing file");
    expect_map_error(missing, 4096, R | W, ENOENT, "missing file, read-write");
    expect_map_error(tu_tmpdir(), 0, R, EINVAL, "a directory");
    expect_map_error(empty, 0, R, EINVAL, "empty file, length 0");
    expect_map_error(empty, 0, R | W, EINVAL, "empty file, length 0, read-write");
    expect_map_error(small, TU_MIB, R, EINVAL, "length beyond the file");
    expect_map_error(small, TU_MIB, R | W, EINVAL, "length beyond the file, read-write");
    expect_map_error(small, TU_MIB, R | C, EINVAL, "CREATE without WRITE");
    expect_map_error(missing, TU_MIB, C, EINVAL, "CREATE alone");
    expect_map_error(small, 0, R | 0x100, EINVAL, "unknown flag");
    ck_assert_int_eq(access(missing, F_OK), -1); /* nothing was created */
    ck_assert_int_eq(tu_file_size(small), 100000);

    if (geteuid() == 0) {
        char *err;
        char *priv = tu_make_file("private", 4096, 1);
        ck_assert_int_eq(chmod(priv, 0600), 0);
        eacces_path = priv;
        int status = tu_run_child(eacces_child, NULL, &err);
        ck_assert_msg(WIFEXITED(status), "child status %#x: %s", (unsigned)status, err);
        int code = WEXITSTATUS(status);
        if (code == 10 || code == 11)
            printf("map: test_map_errors: cannot run as user nobody here (%s): "
                   "EACCES not tested\n", code == 10 ? "setuid failed"
                                                    : "the directory is not writable");
        else
            ck_assert_msg(code == 0, "as user nobody: check %d failed (%s)", code,
                          code == 1 ? "read mapping of a 0600 file of root"
                                    : "read-write mapping of a 0600 file of root");
        unlink(priv);
        free(priv);
        free(err);
    } else {
        ck_assert_int_eq(chmod(small, 0), 0);
        expect_map_error(small, 0, R, EACCES, "unreadable file");
        ck_assert_int_eq(chmod(small, 0444), 0);
        expect_map_error(small, 0, R | W, EACCES, "read-only file, read-write");
        ck_assert_int_eq(chmod(small, 0600), 0);
    }

    /* upager_unmap of what is not the start of a mapping. */
    unsigned char *p = upager_map_file(small, 0, R);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    void *m = upager_malloc(1000);
    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(upager_unmap(m), EINVAL);
    ck_assert_int_eq(upager_unmap(p + 65536), EINVAL);
    ck_assert_int_eq(upager_unmap(NULL), EINVAL);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 100000, 70), NO_MISMATCH);
    ck_assert_int_eq(upager_unmap(p), 0);
    ck_assert_int_eq(upager_unmap(p), EINVAL); /* no longer a mapping */

    unlink(empty);
    unlink(small);
    free(missing);
    free(empty);
    free(small);
}
END_TEST

/* A file larger than the address space left in the arena: NULL, ENOMEM. */
START_TEST(test_map_no_address_space)
{
    tu_env("2M", "65536");
    tu_setenv("UPAGER_ARENA", "16M");
    char *path = tu_make_file("big", 32 * TU_MIB, 92);
    expect_map_error(path, 0, UPAGER_MAP_READ, ENOMEM, "file larger than the arena");
    unsigned char *p = upager_map_file(path, 4 * TU_MIB, UPAGER_MAP_READ);
    ck_assert_msg(p != NULL, "a 4M mapping in a 16M arena: %s", strerror(errno));
    ck_assert_uint_eq(tu_pattern_check(p, 0, 4 * TU_MIB, 92), NO_MISMATCH);
    ck_assert_int_eq(upager_unmap(p), 0);
    unlink(path);
    free(path);
}
END_TEST

/* CREATE with WRITE creates a file of the length asked for, or extends an
 * existing one, zero-filled, keeping what it held. */
START_TEST(test_map_create)
{
    tu_env("2M", "65536");
    char *fresh = tu_temp_path("create");
    unsigned char *p = upager_map_file(fresh, 3 * TU_MIB,
                                       UPAGER_MAP_WRITE | UPAGER_MAP_CREATE);
    ck_assert_msg(p != NULL, "create: %s", strerror(errno));
    ck_assert_int_eq(tu_file_size(fresh), 3 * TU_MIB);
    for (size_t i = 0; i < 3 * TU_MIB; i += 4093)
        ck_assert_int_eq(p[i], 0);
    tu_pattern_fill(p, 0, 3 * TU_MIB, 71);
    ck_assert_int_eq(upager_unmap(p), 0);
    ck_assert_uint_eq(file_check(fresh, 0, 3 * TU_MIB, 71), NO_MISMATCH);

    char *small = tu_make_file("extend", 100000, 72);
    p = upager_map_file(small, TU_MIB, UPAGER_MAP_READ | UPAGER_MAP_WRITE
                                           | UPAGER_MAP_CREATE);
    ck_assert_msg(p != NULL, "extend: %s", strerror(errno));
    ck_assert_int_eq(tu_file_size(small), TU_MIB);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 100000, 72), NO_MISMATCH);
    ck_assert_uint_eq(tu_find_not(p + 100000, TU_MIB - 100000, 0), NO_MISMATCH);
    p[TU_MIB - 1] = 9;
    ck_assert_int_eq(upager_unmap(p), 0);
    ck_assert_uint_eq(file_check(small, 0, 100000, 72), NO_MISMATCH);
    int fd = open(small, O_RDONLY);
    unsigned char last = 0;
    ck_assert_int_eq(pread(fd, &last, 1, TU_MIB - 1), 1);
    ck_assert_int_eq(last, 9);
    close(fd);

    unlink(fresh);
    unlink(small);
    free(fresh);
    free(small);
}
END_TEST

/* 500 map/unmap cycles leak nothing: address space, memory and file
 * descriptors stay where they were after the first cycles, and the last
 * write is in the file. */
START_TEST(test_map_unmap_cycles)
{
    enum { CYCLES = 500 };
    size_t vm0 = 0, rss0 = 0;
    long fds0 = 0;

    tu_env("2M", "65536");
    char *path = tu_make_file("cycles", TU_MIB, 73);
    for (int c = 0; c < CYCLES; c++) {
        unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE);
        ck_assert_msg(p != NULL, "cycle %d: %s", c, strerror(errno));
        p[0] = (unsigned char)c;
        p[300000] = (unsigned char)(c + 1);
        ck_assert_int_eq(p[TU_MIB - 1], tu_pattern_byte(TU_MIB - 1, 73));
        ck_assert_int_eq(upager_unmap(p), 0);
        if (c == 49) {
            vm0 = tu_vmsize();
            rss0 = tu_rss();
            fds0 = tu_fd_count();
        }
    }
    ck_assert_uint_le(tu_vmsize(), vm0 + TU_MIB);
    ck_assert_uint_le(tu_rss(), rss0 + TU_MIB);
    ck_assert_int_eq(tu_fd_count(), fds0);
    int fd = open(path, O_RDONLY);
    unsigned char b[2];
    ck_assert_int_eq(pread(fd, &b[0], 1, 0), 1);
    ck_assert_int_eq(pread(fd, &b[1], 1, 300000), 1);
    close(fd);
    ck_assert_int_eq(b[0], (unsigned char)(CYCLES - 1));
    ck_assert_int_eq(b[1], (unsigned char)CYCLES);
    unlink(path);
    free(path);
}
END_TEST

/* Threads on one mapping: the workers of test_map_threads. */
enum { MAP_THREADS = 4, MAP_STRIPE = 40000 };
#define MAP_THREADS_LEN (24 * TU_MIB)

static pthread_barrier_t map_barrier;

struct map_worker {
    unsigned char *p;
    int id;
    size_t bad; /* first wrong byte seen, or NO_MISMATCH */
};

static void *map_worker_main(void *arg)
{
    struct map_worker *w = arg;
    const size_t len = MAP_THREADS_LEN;

    w->bad = NO_MISMATCH;
    /* Read everything first: every stripe still holds the file's data. */
    size_t start = (size_t)w->id * (len / MAP_THREADS);
    for (size_t done = 0; done < len && w->bad == NO_MISMATCH; done += MAP_STRIPE) {
        size_t off = (start + done) % len;
        size_t n = len - off < MAP_STRIPE ? len - off : MAP_STRIPE;
        size_t b = tu_pattern_check(w->p + off, off, n, 90);
        if (b != NO_MISMATCH)
            w->bad = off + b;
    }
    /* Then, once everyone has read, rewrite this thread's stripes with new
     * data, and check them. */
    pthread_barrier_wait(&map_barrier);
    for (size_t off = (size_t)w->id * MAP_STRIPE; off < len;
         off += MAP_THREADS * MAP_STRIPE) {
        size_t n = len - off < MAP_STRIPE ? len - off : MAP_STRIPE;
        tu_pattern_fill(w->p + off, off, n, 91);
    }
    for (size_t off = (size_t)w->id * MAP_STRIPE;
         off < len && w->bad == NO_MISMATCH; off += MAP_THREADS * MAP_STRIPE) {
        size_t n = len - off < MAP_STRIPE ? len - off : MAP_STRIPE;
        size_t b = tu_pattern_check(w->p + off, off, n, 91);
        if (b != NO_MISMATCH)
            w->bad = off + b;
    }
    return NULL;
}

/* Four threads on one mapping at once, under a budget twelve times smaller
 * than the file: each reads the whole file, then writes its own
 * interleaved stripes; after upager_unmap the file holds every thread's
 * writes. */
START_TEST(test_map_threads)
{
    pthread_t th[MAP_THREADS];
    struct map_worker w[MAP_THREADS];
    struct upager_stats s;

    tu_env("2M", "65536");
    char *path = tu_make_file("threads", MAP_THREADS_LEN, 90);
    unsigned char *p = upager_map_file(path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE);
    ck_assert_msg(p != NULL, "upager_map_file: %s", strerror(errno));
    ck_assert_int_eq(pthread_barrier_init(&map_barrier, NULL, MAP_THREADS), 0);
    for (int t = 0; t < MAP_THREADS; t++) {
        w[t].p = p;
        w[t].id = t;
        ck_assert_int_eq(pthread_create(&th[t], NULL, map_worker_main, &w[t]), 0);
    }
    for (int t = 0; t < MAP_THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_msg(w[t].bad == NO_MISMATCH, "thread %d: byte %zu differs", t,
                      w[t].bad);
    }
    tu_stats(&s);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    ck_assert_uint_eq(s.io_errors, 0);
    ck_assert_int_eq(upager_unmap(p), 0);
    ck_assert_uint_eq(file_check(path, 0, MAP_THREADS_LEN, 91), NO_MISMATCH);
    unlink(path);
    free(path);
}
END_TEST

/* ---- pinning ------------------------------------------------------------ */

/* The read system call into arena memory that is not resident fails with
 * EFAULT (the kernel raises no signal for it: the raw call shows it, the
 * library's read() would pin for itself); pinned with UPAGER_PIN_WRITE, the
 * same call works, and the rest of the block is untouched. */
START_TEST(test_pin_for_read)
{
    const size_t n = 256 * TU_KIB;
    struct upager_stats s;

    tu_env("1M", "65536");
    char *path = tu_make_file("pinread", n, 74);
    unsigned char *buf = upager_malloc(2 * n);
    ck_assert_ptr_nonnull(buf);
    tu_pattern_fill(buf, 0, 2 * n, 75);
    flush();

    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    errno = 0;
    ssize_t r = syscall(SYS_read, fd, buf, n);
    ck_assert_msg(r == -1 && errno == EFAULT,
                  "read(2) into evicted memory returned %zd, errno %d", r, errno);

    ck_assert_int_eq(upager_pin(buf, n, UPAGER_PIN_WRITE), 0);
    tu_stats(&s);
    ck_assert_uint_ge(s.pinned_bytes, n);
    ck_assert_uint_ge(s.resident_bytes, n);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    r = syscall(SYS_read, fd, buf, n);
    ck_assert_msg(r == (ssize_t)n, "read(2) into pinned memory returned %zd: %s",
                  r, strerror(errno));
    ck_assert_int_eq(upager_unpin(buf, n), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
    ck_assert_uint_eq(tu_pattern_check(buf, 0, n, 74), NO_MISMATCH);
    ck_assert_uint_eq(tu_pattern_check(buf + n, n, n, 75), NO_MISMATCH);
    close(fd);
    unlink(path);
    free(path);
}
END_TEST

/* Pinned pages stay resident and usable by system calls while three
 * budgets of other data go through: read(2) into a writable pin, write(2)
 * from a read-only pin of memory that had been evicted. */
START_TEST(test_pin_survives_pressure)
{
    const size_t n = 256 * TU_KIB;
    struct upager_stats s;

    tu_env("1M", "65536");
    char *path = tu_make_file("pinpress", n, 76);
    char *out = tu_temp_path("pinout");
    unsigned char *a = upager_malloc(n), *b = upager_malloc(n);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    tu_pattern_fill(b, 0, n, 77);

    ck_assert_int_eq(upager_pin(a, n, UPAGER_PIN_WRITE), 0);
    flush();
    tu_stats(&s);
    ck_assert_uint_ge(s.pinned_bytes, n);
    ck_assert_uint_le(s.resident_bytes, s.budget_bytes);
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(read(fd, a, n), (ssize_t)n);
    close(fd);
    ck_assert_uint_eq(tu_pattern_check(a, 0, n, 76), NO_MISMATCH);

    /* b was evicted by the flush; a read-only pin makes it readable for
     * write(2). */
    ck_assert_int_eq(upager_pin(b, n, 0), 0);
    fd = open(out, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    ssize_t w = write(fd, b, n);
    ck_assert_msg(w == (ssize_t)n, "write(2) from pinned memory returned %zd: %s",
                  w, strerror(errno));
    close(fd);
    ck_assert_uint_eq(file_check(out, 0, n, 77), NO_MISMATCH);
    ck_assert_int_eq(upager_unpin(b, n), 0);
    ck_assert_int_eq(upager_unpin(a, n), 0);
    unlink(path);
    unlink(out);
    free(path);
    free(out);
}
END_TEST

/* A pin that would take the pinned bytes over the budget fails with ENOMEM
 * and pins nothing. */
START_TEST(test_pin_beyond_budget)
{
    struct upager_stats s;

    tu_env("1M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, 4 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 5, 4 * TU_MIB);

    ck_assert_int_eq(upager_pin(p, 2 * TU_MIB, 0), ENOMEM);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
    ck_assert_int_eq(upager_pin(p, 512 * TU_KIB, 0), 0);
    ck_assert_int_eq(upager_pin(p + TU_MIB, 768 * TU_KIB, 0), ENOMEM);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 512 * TU_KIB);
    ck_assert_uint_le(s.resident_bytes, s.budget_bytes);
    /* The refused range was not left pinned: unpinning it is EINVAL. */
    ck_assert_int_eq(upager_unpin(p + TU_MIB, 768 * TU_KIB), EINVAL);
    ck_assert_int_eq(upager_unpin(p, 512 * TU_KIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
    for (size_t i = 0; i < 4 * TU_MIB; i += 4096)
        ck_assert_int_eq(p[i], 5);
}
END_TEST

/* Pins nest: pinned twice, the range stays pinned after one unpin (and is
 * counted once); after the second it can be evicted again (the pread system
 * call into it fails once more), and a third unpin is EINVAL. */
START_TEST(test_pin_nests)
{
    const size_t n = 256 * TU_KIB;
    struct upager_stats s;

    tu_env("1M", "65536");
    char *path = tu_make_file("pinnest", n, 78);
    unsigned char *p = upager_malloc(n);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, n);
    int fd = open(path, O_RDONLY);
    ck_assert_int_ge(fd, 0);

    ck_assert_int_eq(upager_pin(p, n, UPAGER_PIN_WRITE), 0);
    ck_assert_int_eq(upager_pin(p, n, UPAGER_PIN_WRITE), 0);
    tu_stats(&s);
    ck_assert_uint_ge(s.pinned_bytes, n);
    ck_assert_uint_lt(s.pinned_bytes, 2 * n);
    ck_assert_int_eq(upager_unpin(p, n), 0);
    flush();
    tu_stats(&s);
    ck_assert_uint_ge(s.pinned_bytes, n);
    ck_assert_int_eq(syscall(SYS_pread64, fd, p, n, 0), (ssize_t)n);
    ck_assert_int_eq(upager_unpin(p, n), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
    ck_assert_int_eq(upager_unpin(p, n), EINVAL);

    flush();
    errno = 0;
    ck_assert_int_eq(syscall(SYS_pread64, fd, p, n, 0), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_uint_eq(tu_pattern_check(p, 0, n, 78), NO_MISMATCH);
    close(fd);
    unlink(path);
    free(path);
}
END_TEST

/* Pin, unpin, advise and sync refuse what is not live arena memory. */
START_TEST(test_residency_errors)
{
    char stack[8192];

    tu_env("1M", "65536");
    unsigned char *p = upager_malloc(TU_MIB);
    unsigned char *gone = upager_malloc(TU_MIB);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_nonnull(gone);
    memset(p, 1, TU_MIB);
    upager_free(gone);
    memset(stack, 0, sizeof stack);

    ck_assert_int_eq(upager_pin(stack, sizeof stack, 0), EINVAL);
    ck_assert_int_eq(upager_pin(gone, 4096, 0), EINVAL);
    ck_assert_int_eq(upager_unpin(p, 4096), EINVAL); /* never pinned */
    ck_assert_int_eq(upager_unpin(stack, 4096), EINVAL);
    ck_assert_int_eq(upager_advise(stack, sizeof stack, UPAGER_ADVICE_DONTNEED), EINVAL);
    ck_assert_int_eq(upager_advise(p, TU_MIB, 99), EINVAL);
    ck_assert_int_eq(upager_advise(p, TU_MIB, -1), EINVAL);
    ck_assert_int_eq(upager_sync(stack, sizeof stack), EINVAL);
    ck_assert_int_eq(upager_sync(p, TU_MIB), 0); /* not a mapping: no-op */
    for (size_t i = 0; i < TU_MIB; i += 4096)
        ck_assert_int_eq(p[i], 1);
}
END_TEST

/* ---- the budget at run time -------------------------------------------- */

/* upager_set_budget below the bytes pinned is EBUSY and keeps the budget;
 * above them it is taken. */
START_TEST(test_set_budget_below_pinned)
{
    struct upager_stats s;

    tu_env("4M", "65536");
    unsigned char *p = upager_malloc(4 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 2, 4 * TU_MIB);
    ck_assert_int_eq(upager_pin(p, 2 * TU_MIB, 0), 0);
    ck_assert_int_eq(upager_set_budget(TU_MIB), EBUSY);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 4 * TU_MIB);
    ck_assert_int_eq(upager_set_budget(3 * TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 3 * TU_MIB);
    ck_assert_uint_le(s.resident_bytes, 3 * TU_MIB);
    ck_assert_int_eq(upager_unpin(p, 2 * TU_MIB), 0);
    ck_assert_int_eq(upager_set_budget(TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_le(s.resident_bytes, TU_MIB);
    for (size_t i = 0; i < 4 * TU_MIB; i += 4096)
        ck_assert_int_eq(p[i], 2);
}
END_TEST

/* Lowering the budget at run time evicts down to it before returning, the
 * frames are given back, and the resident memory stays under the new
 * budget while the program goes on; raising it again lets it grow. */
START_TEST(test_set_budget_lowered)
{
    const size_t len = 16 * TU_MIB;
    struct upager_stats s;
    uint64_t rng = tu_seed(0x10e4);

    tu_env("8M", "65536");
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 79);
    tu_stats(&s);
    ck_assert_uint_gt(s.resident_bytes, 6 * TU_MIB);

    ck_assert_int_eq(upager_set_budget(2 * TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 2 * TU_MIB);
    ck_assert_msg(s.resident_bytes <= 2 * TU_MIB,
                  "resident %zu right after lowering the budget to 2M",
                  s.resident_bytes);
    ck_assert_msg(tu_memfd_bytes() <= 3 * TU_MIB,
                  "the memfd still holds %llu bytes of frames",
                  (unsigned long long)tu_memfd_bytes());

    for (int i = 0; i < 3000; i++) {
        size_t off = tu_below(&rng, len - 256);
        if (i % 2)
            tu_pattern_fill(p + off, off, 256, 79);
        size_t bad = tu_pattern_check(p + off, off, 256, 79);
        if (bad != NO_MISMATCH)
            ck_abort_msg("seed %#llx: data differs at %zu",
                         (unsigned long long)tu_seed(0x10e4), off + bad);
        if (i % 100 == 0) {
            tu_stats(&s);
            ck_assert_msg(s.resident_bytes <= 2 * TU_MIB, "resident %zu at step %d",
                          s.resident_bytes, i);
        }
    }
    ck_assert_int_eq(upager_set_budget(8 * TU_MIB), 0);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 79), NO_MISMATCH);
    tu_stats(&s);
    ck_assert_uint_gt(s.resident_bytes, 4 * TU_MIB);
    ck_assert_uint_le(s.resident_bytes, 8 * TU_MIB);
}
END_TEST

/* Threads paging while the budget changes: test_set_budget_concurrent. */
enum { BUDGET_THREADS = 3 };
#define BUDGET_REGION (6 * TU_MIB) /* per thread */

struct budget_worker {
    unsigned char *p;
    uint64_t seed;
    size_t bad;
};

static atomic_int budget_stop;

static void *budget_worker_main(void *arg)
{
    struct budget_worker *w = arg;
    uint64_t rng = w->seed;

    w->bad = NO_MISMATCH;
    while (!atomic_load(&budget_stop) && w->bad == NO_MISMATCH) {
        size_t off = tu_below(&rng, BUDGET_REGION - 512);
        if (tu_rand(&rng) & 1)
            tu_pattern_fill(w->p + off, off, 512, w->seed);
        size_t b = tu_pattern_check(w->p + off, off, 512, w->seed);
        if (b != NO_MISMATCH)
            w->bad = off + b;
    }
    return NULL;
}

/* The budget changes while three threads page at random: each lowering
 * leaves the resident bytes within the new budget when it returns, and
 * the data stays intact. */
START_TEST(test_set_budget_concurrent)
{
    pthread_t th[BUDGET_THREADS];
    struct budget_worker w[BUDGET_THREADS];
    struct upager_stats s;

    tu_env("8M", "65536");
    for (int t = 0; t < BUDGET_THREADS; t++) {
        w[t].seed = tu_seed(0xb06e7) + (uint64_t)t;
        w[t].p = upager_malloc(BUDGET_REGION);
        ck_assert_ptr_nonnull(w[t].p);
        tu_pattern_fill(w[t].p, 0, BUDGET_REGION, w[t].seed);
    }
    for (int t = 0; t < BUDGET_THREADS; t++)
        ck_assert_int_eq(pthread_create(&th[t], NULL, budget_worker_main, &w[t]), 0);
    for (int round = 0; round < 60; round++) {
        size_t budget = (round % 2) ? 8 * TU_MIB : (size_t)(1 + round % 3) * TU_MIB;
        int rc = upager_set_budget(budget);
        tu_stats(&s);
        if (rc != 0 || s.budget_bytes != budget || s.resident_bytes > budget) {
            atomic_store(&budget_stop, 1);
            ck_abort_msg("round %d: set_budget(%zu) = %d, budget %zu, resident %zu",
                         round, budget, rc, s.budget_bytes, s.resident_bytes);
        }
        usleep(20000);
    }
    atomic_store(&budget_stop, 1);
    for (int t = 0; t < BUDGET_THREADS; t++) {
        pthread_join(th[t], NULL);
        ck_assert_msg(w[t].bad == NO_MISMATCH, "seed %#llx: byte %zu differs",
                      (unsigned long long)w[t].seed, w[t].bad);
        ck_assert_uint_eq(tu_pattern_check(w[t].p, 0, BUDGET_REGION, w[t].seed),
                          NO_MISMATCH);
    }
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
}
END_TEST

/* ---- advice ------------------------------------------------------------- */

/* DONTNEED on resident data evicts it early: evictions go up and the
 * resident bytes down; the data comes back from the store, intact. */
START_TEST(test_advise_dontneed)
{
    const size_t len = 2 * TU_MIB;
    struct upager_stats s0, s1, s2;

    tu_env("4M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 80);
    tu_stats(&s0);
    ck_assert_uint_eq(s0.evictions, 0);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    tu_stats(&s1);
    ck_assert_msg(s1.evictions - s0.evictions >= len / ps / 2,
                  "DONTNEED evicted %llu of %zu pages",
                  (unsigned long long)(s1.evictions - s0.evictions), len / ps);
    ck_assert_uint_le(s1.resident_bytes + len / 2, s0.resident_bytes);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 80), NO_MISMATCH);
    tu_stats(&s2);
    ck_assert_uint_ge(s2.major_faults - s1.major_faults, 1);
    ck_assert_uint_ge(s2.bytes_read - s1.bytes_read, len / 2);
}
END_TEST

/* WILLNEED on evicted data starts loading it: once the reads are done,
 * going through the data takes fewer major faults than pages (without the
 * advice, and without read-ahead, it takes one per page). */
START_TEST(test_advise_willneed)
{
    const size_t len = 2 * TU_MIB;
    struct upager_stats s0, s1, s2;

    tu_env("4M", "65536");
    tu_setenv("UPAGER_READAHEAD", "0");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 81);
    flush();

    tu_stats(&s0);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_WILLNEED), 0);
    for (int i = 0; i < 500; i++) { /* up to 5 s for the loads to finish */
        tu_stats(&s1);
        if (s1.bytes_read - s0.bytes_read >= len)
            break;
        usleep(10000);
    }
    ck_assert_uint_ge(s1.bytes_read - s0.bytes_read, len / 2);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 81), NO_MISMATCH);
    tu_stats(&s2);
    ck_assert_msg(s2.major_faults - s1.major_faults <= len / ps / 2,
                  "%llu major faults on %zu pages after WILLNEED",
                  (unsigned long long)(s2.major_faults - s1.major_faults), len / ps);
}
END_TEST

/* A sequential scan of evicted data advised SEQUENTIAL takes fewer major
 * faults than the same scan advised RANDOM (which reads no page ahead:
 * one major fault per page). */
START_TEST(test_advise_sequential_vs_random)
{
    const size_t len = 16 * TU_MIB;
    struct upager_stats s0, s1, s2, s3;

    tu_env("2M", "65536");
    size_t ps = tu_init();
    unsigned char *p = upager_aligned_alloc(ps, len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 82);
    flush();

    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_RANDOM), 0);
    tu_stats(&s0);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 82), NO_MISMATCH);
    tu_stats(&s1);
    flush();
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_SEQUENTIAL), 0);
    tu_stats(&s2);
    ck_assert_uint_eq(tu_pattern_check(p, 0, len, 82), NO_MISMATCH);
    tu_stats(&s3);

    uint64_t random = s1.major_faults - s0.major_faults;
    uint64_t sequential = s3.major_faults - s2.major_faults;
    printf("map: sequential scan of %zu pages: %llu major faults advised RANDOM, "
           "%llu advised SEQUENTIAL\n", len / ps, (unsigned long long)random,
           (unsigned long long)sequential);
    ck_assert_uint_ge(random, len / ps - 2 * TU_MIB / ps);
    ck_assert_msg(sequential < random, "SEQUENTIAL %llu major faults, RANDOM %llu",
                  (unsigned long long)sequential, (unsigned long long)random);
    ck_assert_uint_eq(upager_advise(p, len, UPAGER_ADVICE_NORMAL), 0);
}
END_TEST

Suite *map_suite(void)
{
    Suite *s = suite_create("map");
    TCase *tc;

    tc = tcase_create("map_file");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_map_read_exact);
    tcase_add_test(tc, test_map_write_sync_unmap);
    tcase_add_test_raise_signal(tc, test_map_readonly_write_resident, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_map_readonly_write_cold, SIGSEGV);
    tcase_add_test_raise_signal(tc, test_map_access_after_unmap, SIGSEGV);
    tcase_add_loop_test(tc, test_map_partial_page, 0, 4);
    tcase_add_test(tc, test_map_errors);
    tcase_add_test(tc, test_map_create);
    tcase_add_test(tc, test_map_no_address_space);
    tcase_add_test(tc, test_map_unmap_cycles);
    tcase_add_test(tc, test_map_threads);
    suite_add_tcase(s, tc);

    tc = tcase_create("pin");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_pin_for_read);
    tcase_add_test(tc, test_pin_survives_pressure);
    tcase_add_test(tc, test_pin_beyond_budget);
    tcase_add_test(tc, test_pin_nests);
    tcase_add_test(tc, test_residency_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("budget");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_set_budget_below_pinned);
    tcase_add_test(tc, test_set_budget_lowered);
    tcase_add_test(tc, test_set_budget_concurrent);
    suite_add_tcase(s, tc);

    tc = tcase_create("advise");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_advise_dontneed);
    tcase_add_test(tc, test_advise_willneed);
    tcase_add_test(tc, test_advise_sequential_vs_random);
    suite_add_tcase(s, tc);

    return s;
}
