/*
 * map_file.c - a file larger than the memory budget, seen as memory.
 *
 *     map_file [MiB [dir]]     (default 64 MiB in $TMPDIR or /tmp, budget 16 MiB)
 *
 * The program writes a file with ordinary write(2), maps it read-only with
 * upager_map_file and checks its contents, maps it again read-write and
 * changes one word in every 4 KiB, then upager_sync + upager_unmap, and
 * reads the file back with pread(2) to see that every change reached it.
 * The file is removed at the end.  UPAGER_BUDGET overrides the budget.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <upager.h>

#define CHUNK (1 << 20)             /* bytes per write(2) / pread(2) */
#define STRIDE 512                  /* words: one change per 4 KiB */

/* The file's contents: word i is a hash of i. */
static uint64_t word(uint64_t i)
{
    uint64_t z = i + 0x9e3779b97f4a7c15u;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* ... and after the read-write pass. */
static uint64_t changed_word(uint64_t i)
{
    return i % STRIDE == 0 ? ~word(i) : word(i);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 64;
    const char *dir = argc > 2 ? argv[2] : getenv("TMPDIR");
    if (mib == 0 || mib > (SIZE_MAX >> 22)) {
        fprintf(stderr, "usage: %s [MiB [dir]]\n", argv[0]);
        return 2;
    }
    size_t size = mib << 20, n = size / sizeof(uint64_t);
    char path[4096];
    snprintf(path, sizeof(path), "%s/upager-map-XXXXXX", dir && *dir ? dir : "/tmp");

    upager_configure("budget", "16M");  /* the environment may override */

    /* 1. An ordinary file, written with write(2). */
    uint64_t *buf = malloc(CHUNK);
    int fd = mkstemp(path);
    if (buf == NULL || fd < 0) {
        perror("map_file: creating the file");
        return 1;
    }
    uint64_t expect = 0;
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        for (; k < CHUNK / sizeof(uint64_t) && i < n; k++, i++) {
            buf[k] = word(i);
            expect += buf[k];
        }
        if (write(fd, buf, k * sizeof(uint64_t)) != (ssize_t)(k * sizeof(uint64_t))) {
            perror("map_file: write");
            unlink(path);
            return 1;
        }
    }
    int ok = 1;

    /* 2. Read-only: length 0 maps the whole file.  A store through this
     *    pointer would be a genuine fault (SIGSEGV). */
    const uint64_t *ro = upager_map_file(path, 0, UPAGER_MAP_READ);
    if (ro == NULL) {
        perror("map_file: upager_map_file(READ)");
        unlink(path);
        return 1;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += ro[i];
    if (sum != expect) {
        printf("FAILED: read-only checksum %llx, file has %llx\n",
               (unsigned long long)sum, (unsigned long long)expect);
        ok = 0;
    }
    upager_unmap((void *)ro);

    /* 3. Read-write: dirty pages go back to the file when they are
     *    evicted, and at the latest at upager_sync or upager_unmap. */
    uint64_t *rw = upager_map_file(path, 0, UPAGER_MAP_READ | UPAGER_MAP_WRITE);
    if (rw == NULL) {
        perror("map_file: upager_map_file(WRITE)");
        unlink(path);
        return 1;
    }
    for (size_t i = 0; i < n; i += STRIDE)
        rw[i] = ~rw[i];
    int err = upager_sync(rw, size);
    if (err == 0)
        err = upager_unmap(rw);
    if (err != 0) {
        printf("FAILED: upager_sync/upager_unmap: %s\n", strerror(err));
        ok = 0;
    }

    /* 4. Check the file itself, without upager. */
    size_t wrong = 0;
    for (size_t i = 0; i < n;) {
        ssize_t got = pread(fd, buf, CHUNK, (off_t)(i * sizeof(uint64_t)));
        if (got <= 0) {
            perror("map_file: pread");
            ok = 0;
            break;
        }
        for (size_t k = 0; k < (size_t)got / sizeof(uint64_t); k++, i++)
            wrong += buf[k] != changed_word(i);
    }
    if (wrong != 0) {
        printf("FAILED: %zu words of the file differ after the read-write pass\n", wrong);
        ok = 0;
    }

    struct upager_stats st;
    upager_get_stats(&st);
    printf("faults %llu, read %.1f MiB, written %.1f MiB, peak resident %.1f MiB of %.1f MiB\n",
           (unsigned long long)st.faults, st.bytes_read / 1048576.0,
           st.bytes_written / 1048576.0, st.peak_resident_bytes / 1048576.0,
           st.budget_bytes / 1048576.0);
    if (ok)
        printf("OK: %zu MiB file mapped, checked, changed and synced\n", mib);

    close(fd);
    unlink(path);
    free(buf);
    return ok ? 0 : 1;
}
