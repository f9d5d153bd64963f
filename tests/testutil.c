/*
 * testutil.c - helpers shared by the Check test suites of upager.
 *
 * See testutil.h.  Nothing here calls the library except tu_stats and
 * tu_init; everything else reads the process from /proc or prepares
 * files, environments and child processes for the cases.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <check.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* ---- environment ------------------------------------------------------ */

const char *tu_tmpdir(void)
{
    /* Read once: the cases change UPAGER_DIR (to bad values too) after
     * the first call, made by tu_env. */
    static char dir[PATH_MAX];

    if (dir[0] == '\0') {
        const char *d = getenv("UPAGER_DIR");
        if (d == NULL || *d == '\0')
            d = getenv("TMPDIR");
        if (d == NULL || *d == '\0')
            d = "/tmp";
        snprintf(dir, sizeof dir, "%s", d);
    }
    return dir;
}

void tu_setenv(const char *name, const char *value)
{
    int rc = value != NULL ? setenv(name, value, 1) : unsetenv(name);

    ck_assert_msg(rc == 0, "setenv %s: %s", name, strerror(errno));
}

void tu_env(const char *budget, const char *page_size)
{
    static const char *const options[] = {
        "UPAGER_BUDGET", "UPAGER_PAGE_SIZE", "UPAGER_ARENA",
        "UPAGER_READAHEAD", "UPAGER_DIRECT_IO", "UPAGER_STATS",
        "UPAGER_VERBOSE",
    };
    const char *dir = tu_tmpdir();

    for (size_t i = 0; i < sizeof options / sizeof options[0]; i++)
        tu_setenv(options[i], NULL);
    tu_setenv("UPAGER_DIR", dir);
    /* The default store I/O (automatic: O_DIRECT where the file system
     * takes it) unless UPAGER_TEST_DIRECT_IO asks for another. */
    const char *direct = getenv("UPAGER_TEST_DIRECT_IO");
    if (direct != NULL && *direct)
        tu_setenv("UPAGER_DIRECT_IO", direct);
    if (budget != NULL)
        tu_setenv("UPAGER_BUDGET", budget);
    if (page_size != NULL)
        tu_setenv("UPAGER_PAGE_SIZE", page_size);
}

/* ---- statistics ------------------------------------------------------- */

void tu_stats(struct upager_stats *s)
{
    memset(s, 0, sizeof *s);
    int rc = upager_get_stats(s);
    ck_assert_msg(rc == 0, "upager_get_stats: %s", strerror(rc));
}

size_t tu_init(void)
{
    struct upager_stats s;
    int rc = upager_init();

    ck_assert_msg(rc == 0, "upager_init: %s", strerror(rc));
    tu_stats(&s);
    ck_assert_uint_gt(s.page_size, 0);
    return s.page_size;
}

/* ---- the process as the kernel sees it -------------------------------- */

size_t tu_status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t flen = strlen(field);
    long long kb = -1;

    ck_assert_msg(f != NULL, "/proc/self/status: %s", strerror(errno));
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            kb = strtoll(line + flen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    ck_assert_msg(kb >= 0, "no %s in /proc/self/status", field);
    return (size_t)kb * 1024;
}

int tu_reset_hwm(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    int rc = -1;

    if (fd < 0)
        return -1;
    if (write(fd, "5", 1) == 1)
        rc = 0;
    close(fd);
    return rc;
}

long tu_maps_count(void)
{
    /* Read with read(2) into a static buffer: no stdio buffer of our own
     * appears in the count and nothing is allocated while counting. */
    static char buf[1 << 16];
    int fd = open("/proc/self/maps", O_RDONLY);
    long lines = 0;
    ssize_t n;

    ck_assert_msg(fd >= 0, "/proc/self/maps: %s", strerror(errno));
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            lines += buf[i] == '\n';
    }
    close(fd);
    return lines;
}

long tu_max_map_count(void)
{
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long v = -1;

    ck_assert_msg(f != NULL, "max_map_count: %s", strerror(errno));
    ck_assert_int_eq(fscanf(f, "%ld", &v), 1);
    fclose(f);
    ck_assert_int_gt(v, 0);
    return v;
}

uint64_t tu_memfd_bytes(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    uint64_t total = 0;

    ck_assert_msg(d != NULL, "/proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d)) != NULL) {
        char path[300], target[PATH_MAX];
        struct stat st;
        ssize_t n;

        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        n = readlink(path, target, sizeof target - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, "/memfd:", 7) != 0)
            continue;
        if (stat(path, &st) == 0)
            total += (uint64_t)st.st_blocks * 512;
    }
    closedir(d);
    return total;
}

long tu_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;

    ck_assert_msg(d != NULL, "/proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

size_t tu_mem_available(void)
{
    size_t phys = (size_t)sysconf(_SC_PHYS_PAGES) * (size_t)sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/sys/fs/cgroup/memory.max", "r");

    if (f != NULL) {
        unsigned long long lim;
        if (fscanf(f, "%llu", &lim) == 1 && lim > 0 && lim < phys)
            phys = (size_t)lim;
        fclose(f);
    }
    return phys;
}

/* ---- pseudo-random numbers and patterns ------------------------------- */

uint64_t tu_seed(uint64_t fixed)
{
    const char *s = getenv("UPAGER_TEST_SEED");

    if (s != NULL && *s != '\0')
        return strtoull(s, NULL, 0);
    return fixed;
}

static inline uint64_t pattern_word(size_t word, uint64_t seed)
{
    uint64_t st = seed ^ ((uint64_t)word * 0xd1342543de82ef95ULL);
    return tu_rand(&st);
}

unsigned char tu_pattern_byte(size_t off, uint64_t seed)
{
    return (unsigned char)(pattern_word(off / 8, seed) >> (8 * (off % 8)));
}

void tu_pattern_fill(void *dst, size_t off, size_t len, uint64_t seed)
{
    unsigned char *p = dst;
    size_t i = 0;

    while (i < len && (off + i) % 8 != 0) {
        p[i] = tu_pattern_byte(off + i, seed);
        i++;
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word((off + i) / 8, seed);
        memcpy(p + i, &w, 8); /* little-endian byte order, as tu_pattern_byte */
    }
    for (; i < len; i++)
        p[i] = tu_pattern_byte(off + i, seed);
}

size_t tu_pattern_check(const void *src, size_t off, size_t len,
                        uint64_t seed)
{
    const unsigned char *p = src;
    size_t i = 0;

    while (i < len && (off + i) % 8 != 0) {
        if (p[i] != tu_pattern_byte(off + i, seed))
            return i;
        i++;
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word((off + i) / 8, seed), got;
        memcpy(&got, p + i, 8);
        if (got != w)
            break; /* find the byte below */
    }
    for (; i < len; i++) {
        if (p[i] != tu_pattern_byte(off + i, seed))
            return i;
    }
    return (size_t)-1;
}

size_t tu_find_not(const void *p, size_t len, unsigned char c)
{
    static unsigned char block[4096];
    const unsigned char *b = p;

    if (block[0] != c)
        memset(block, c, sizeof block);
    for (size_t off = 0; off < len; off += sizeof block) {
        size_t n = len - off < sizeof block ? len - off : sizeof block;
        if (memcmp(b + off, block, n) != 0) {
            for (size_t i = off; i < off + n; i++)
                if (b[i] != c)
                    return i;
        }
    }
    return (size_t)-1;
}

unsigned tu_touch_read(const void *p, size_t len, size_t stride)
{
    const volatile unsigned char *b = p;
    unsigned sum = 0;

    for (size_t i = 0; i < len; i += stride)
        sum += b[i];
    return sum;
}

/* ---- files ------------------------------------------------------------ */

char *tu_temp_path(const char *tag)
{
    static unsigned counter;
    char *path;

    ck_assert_int_ge(asprintf(&path, "%s/upager-test-%s-%ld-%u", tu_tmpdir(),
                              tag, (long)getpid(), counter++), 0);
    unlink(path); /* a leftover of an earlier run with the same pid */
    return path;
}

char *tu_make_file(const char *tag, size_t size, uint64_t seed)
{
    char *path = tu_temp_path(tag);
    size_t chunk = TU_MIB;
    unsigned char *buf = malloc(chunk);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);

    ck_assert_msg(fd >= 0, "create %s: %s", path, strerror(errno));
    ck_assert_ptr_nonnull(buf);
    for (size_t off = 0; off < size; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        tu_pattern_fill(buf, off, n, seed);
        ck_assert_msg(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n,
                      "write %s: %s", path, strerror(errno));
    }
    ck_assert_int_eq(close(fd), 0);
    free(buf);
    return path;
}

off_t tu_file_size(const char *path)
{
    struct stat st;

    ck_assert_msg(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
    return st.st_size;
}

/* ---- stderr and child processes --------------------------------------- */

static int temp_fd(void)
{
    char *path = tu_temp_path("stderr");
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);

    ck_assert_msg(fd >= 0, "create %s: %s", path, strerror(errno));
    unlink(path);
    free(path);
    return fd;
}

static char *read_all(int fd)
{
    off_t size = lseek(fd, 0, SEEK_END);
    char *text;

    ck_assert_int_ge(size, 0);
    text = malloc((size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(fd, text, (size_t)size, 0), size);
    text[size] = '\0';
    return text;
}

void tu_capture_begin(struct tu_capture *c)
{
    fflush(stderr);
    c->file_fd = temp_fd();
    c->saved_fd = dup(2);
    ck_assert_int_ge(c->saved_fd, 0);
    ck_assert_int_eq(dup2(c->file_fd, 2), 2);
}

char *tu_capture_end(struct tu_capture *c)
{
    char *text;

    fflush(stderr);
    ck_assert_int_eq(dup2(c->saved_fd, 2), 2);
    close(c->saved_fd);
    text = read_all(c->file_fd);
    close(c->file_fd);
    return text;
}

int tu_run_child(void (*fn)(void *), void *arg, char **err)
{
    int fd = temp_fd();
    int status = 0;
    pid_t pid;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        if (dup2(fd, 2) != 2)
            _exit(126);
        fn(arg);
        exit(0);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    *err = read_all(fd);
    close(fd);
    return status;
}

void *tu_shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    ck_assert_msg(p != MAP_FAILED, "mmap: %s", strerror(errno));
    return p;
}

int tu_count_lines(const char *text)
{
    int n = 0;

    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '\n' || p[1] == '\0')
            n++;
    }
    return n;
}

int tu_count_prefix(const char *text, const char *prefix)
{
    size_t plen = strlen(prefix);
    int n = 0;

    for (const char *line = text; *line != '\0';) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, prefix, plen) == 0)
            n++;
        if (nl == NULL)
            break;
        line = nl + 1;
    }
    return n;
}

int tu_mentions_address(const char *text, uintptr_t p)
{
    char hex[32];
    size_t hlen = (size_t)snprintf(hex, sizeof hex, "%" PRIxPTR, p);

    for (const char *t = text; *t != '\0'; t++) {
        const char *b = t;

        if (strncasecmp(t, hex, hlen) != 0 || isxdigit((unsigned char)t[hlen]))
            continue;
        while (b > text && b[-1] == '0') /* zero padding: 0x00007f... */
            b--;
        if (b == text || !isxdigit((unsigned char)b[-1]) || b[-1] == 'x')
            return 1;
    }
    return 0;
}
