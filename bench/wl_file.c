/*
 * wl_file.c - the file workload: a read-only file of data bytes, its page
 * cache dropped before each run, scanned once through upager_map_file, a
 * kernel mapping, or read(2) into a malloc buffer.  The input file is made
 * once by the parent (bench_file_prepare) and removed at exit.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "upager.h"
#include "harness.h"

static char input_file[PATH_MAX + 32]; /* "" when there is none */


void bench_wl_file(void)
{
    size_t n = bench_data / 8;
    uint64_t bad = 0, s = 0;
    if (bench_sys == SYS_UPAGER) {
        bench_ph_begin();
        const uint64_t *a = upager_map_file(input_file, 0, UPAGER_MAP_READ);
        if (!a) {
            bench_child_fail("upager_map_file(%s): %s", input_file, strerror(errno));
            return;
        }
        s = bench_scan_val(a, n, 0, &bad);
        int e = upager_unmap((void *)a);
        bench_ph_end("scan", bench_data, s, bad);
        if (e)
            bench_child_fail("upager_unmap: %s", strerror(e));
    } else if (bench_sys == SYS_KMMAP) {
        bench_ph_begin();
        int fd = open(input_file, O_RDONLY | O_CLOEXEC);
        const uint64_t *a = fd < 0 ? MAP_FAILED
                                   : mmap(NULL, bench_data, PROT_READ, MAP_SHARED, fd, 0);
        if (a == MAP_FAILED) {
            bench_child_fail("mmap %s: %s", input_file, strerror(errno));
            return;
        }
        close(fd);
        s = bench_scan_val(a, n, 0, &bad);
        munmap((void *)a, bench_data);
        bench_ph_end("scan", bench_data, s, bad);
    } else {
        bench_ph_begin();
        int fd = open(input_file, O_RDONLY | O_CLOEXEC);
        uint64_t *a = fd < 0 ? NULL : malloc(bench_data);
        if (!a) {
            bench_child_fail("open/malloc: %s", strerror(errno));
            return;
        }
        for (size_t off = 0; off < bench_data;) {
            ssize_t r = read(fd, (char *)a + off, bench_data - off);
            if (r <= 0) {
                bench_child_fail("read: %s", r ? strerror(errno) : "short file");
                return;
            }
            off += (size_t)r;
        }
        close(fd);
        s = bench_scan_val(a, n, 0, &bad);
        bench_ph_end("scan", bench_data, s, bad);
        free(a);
    }
}


void bench_file_prepare(void)
{
    snprintf(input_file, sizeof input_file, "%s/upager-bench-input-XXXXXX", bench_opt.dir);
    int fd = mkostemp(input_file, O_CLOEXEC);
    if (fd < 0)
        bench_die("%s: %s", input_file, strerror(errno));
    uint64_t *buf = malloc(MiB);
    if (!buf)
        bench_die("out of memory");
    for (size_t off = 0; off < bench_opt.data; off += MiB) {
        bench_fill_val(buf, MiB / 8, off / 8);
        if (pwrite(fd, buf, MiB, (off_t)off) != (ssize_t)MiB)
            bench_die("writing %s: %s", input_file, strerror(errno));
    }
    free(buf);
    fsync(fd);
    close(fd);
}

void bench_file_drop_cache(void)
{
    if (!input_file[0])
        return;
    int fd = open(input_file, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        close(fd);
    }
}

void bench_file_remove(void)
{
    if (input_file[0])
        unlink(input_file);
    input_file[0] = '\0';
}
