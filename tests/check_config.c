/*
 * check_config.c - the environment, upager_configure and start-up checks.
 *
 * Every bad value is refused, never replaced by a default: initialisation
 * fails with EINVAL, stays failed, and says so in exactly one line that
 * names the variable and the value.  Good values in every accepted
 * spelling are taken as written.  The option parser is also tested
 * directly through the internal library.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_suites.h"
#include "internal.h"
#include "testutil.h"

/* A value written "@file" stands for the path of a regular file that the
 * case creates; "@missing" for a directory that does not exist. */
struct bad_value {
    const char *name;
    const char *value;
};

static const struct bad_value bad_values[] = {
    { "UPAGER_BUDGET", "12Q" },
    { "UPAGER_BUDGET", "" },
    { "UPAGER_BUDGET", "-5" },
    { "UPAGER_BUDGET", "0" },
    { "UPAGER_BUDGET", "0%" },
    { "UPAGER_BUDGET", "101%" },
    { "UPAGER_BUDGET", "1.5G" },
    { "UPAGER_BUDGET", "64M " },
    { "UPAGER_BUDGET", " 64M" },
    { "UPAGER_BUDGET", "0x1000000" },
    { "UPAGER_BUDGET", "M" },
    { "UPAGER_BUDGET", "64KK" },
    { "UPAGER_BUDGET", "16E" },
    { "UPAGER_BUDGET", "99999999999999999999" },
    { "UPAGER_PAGE_SIZE", "3000" },       /* not a power of two */
    { "UPAGER_PAGE_SIZE", "12345" },
    { "UPAGER_PAGE_SIZE", "2048" },       /* below the system page size */
    { "UPAGER_PAGE_SIZE", "4M" },         /* above 2M */
    { "UPAGER_PAGE_SIZE", "0" },
    { "UPAGER_PAGE_SIZE", "" },
    { "UPAGER_PAGE_SIZE", "64X" },
    { "UPAGER_PAGE_SIZE", "-4096" },
    { "UPAGER_DIR", "@missing" },
    { "UPAGER_DIR", "@file" },
    { "UPAGER_DIR", "" },
    { "UPAGER_ARENA", "12Q" },
    { "UPAGER_ARENA", "" },
    { "UPAGER_ARENA", "0" },
    { "UPAGER_ARENA", "-1" },
    { "UPAGER_ARENA", "1.5T" },
    { "UPAGER_ARENA", "lots" },
    { "UPAGER_READAHEAD", "x" },
    { "UPAGER_READAHEAD", "-1" },
    { "UPAGER_READAHEAD", "" },
    { "UPAGER_READAHEAD", "4.5" },
    { "UPAGER_READAHEAD", "99999999999999999999" },
    { "UPAGER_DIRECT_IO", "2" },
    { "UPAGER_DIRECT_IO", "maybe" },
    { "UPAGER_DIRECT_IO", "" },
    { "UPAGER_DIRECT_IO", "yess" },
    { "UPAGER_STATS", "2" },
    { "UPAGER_STATS", "enabled" },
    { "UPAGER_STATS", "" },
    { "UPAGER_VERBOSE", "10" },
    { "UPAGER_VERBOSE", "y" },
    { "UPAGER_VERBOSE", "" },
};

/* Each bad value: upager_init returns EINVAL, upager_malloc returns NULL
 * with errno EINVAL, the failure is sticky (init, malloc, get_stats fail
 * again), and stderr holds exactly one line, starting with
 * upager: NAME="value": and going on to say what is expected. */
START_TEST(test_bad_env_value)
{
    const struct bad_value *b = &bad_values[_i];
    const char *value = b->value;
    char *path = NULL, *text, *prefix;
    struct tu_capture cap;
    struct upager_stats s;

    tu_env("16M", "65536");
    if (strcmp(value, "@missing") == 0) {
        path = tu_temp_path("nodir");
        value = path;
    } else if (strcmp(value, "@file") == 0) {
        path = tu_make_file("notdir", 10, 1);
        value = path;
    }
    tu_setenv(b->name, value);

    tu_capture_begin(&cap);
    int rc1 = upager_init();
    errno = 0;
    void *p = upager_malloc(16);
    int err = errno;
    int rc2 = upager_init();
    int rc3 = upager_get_stats(&s);
    void *p2 = upager_calloc(1, 16);
    text = tu_capture_end(&cap);

    ck_assert_msg(rc1 == EINVAL, "%s=\"%s\": upager_init returned %d", b->name,
                  value, rc1);
    ck_assert_msg(p == NULL && err == EINVAL,
                  "%s=\"%s\": upager_malloc returned %p, errno %d", b->name,
                  value, p, err);
    ck_assert_msg(rc2 == EINVAL, "%s=\"%s\": second upager_init returned %d",
                  b->name, value, rc2);
    ck_assert_msg(rc3 == EINVAL, "%s=\"%s\": upager_get_stats returned %d",
                  b->name, value, rc3);
    ck_assert_ptr_null(p2);

    ck_assert_int_ge(asprintf(&prefix, "upager: %s=\"%s\":", b->name, value), 0);
    ck_assert_msg(tu_count_lines(text) == 1,
                  "%s=\"%s\": expected one line on stderr, got:\n%s", b->name,
                  value, text);
    ck_assert_msg(tu_count_prefix(text, prefix) == 1,
                  "expected a line starting with '%s', got:\n%s", prefix, text);
    /* ... and it says what is accepted after the colon. */
    ck_assert_msg(strlen(text) > strlen(prefix) + 5, "no accepted form in: %s", text);

    free(prefix);
    free(text);
    if (path != NULL) {
        unlink(path);
        free(path);
    }
}
END_TEST

/* A directory that exists but where no file can be created is refused
 * too: a directory without write permission, or, for root (whom
 * permissions do not stop), /proc. */
START_TEST(test_bad_dir_not_writable)
{
    char *dir, *text, *prefix;
    struct tu_capture cap;
    int root = geteuid() == 0;

    tu_env("16M", "65536");
    if (root) {
        dir = strdup("/proc");
    } else {
        dir = tu_temp_path("rodir");
        ck_assert_int_eq(mkdir(dir, 0500), 0);
    }
    tu_setenv("UPAGER_DIR", dir);
    tu_capture_begin(&cap);
    int rc = upager_init();
    errno = 0;
    void *p = upager_malloc(100);
    int err = errno;
    text = tu_capture_end(&cap);
    if (!root)
        rmdir(dir);
    ck_assert_int_eq(rc, EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(err, EINVAL);
    ck_assert_int_ge(asprintf(&prefix, "upager: UPAGER_DIR=\"%s\":", dir), 0);
    ck_assert_msg(tu_count_prefix(text, prefix) == 1 && tu_count_lines(text) == 1,
                  "stderr: %s", text);
    free(prefix);
    free(text);
    free(dir);
}
END_TEST

/* The failure line is printed once, however many calls fail after it. */
START_TEST(test_bad_value_line_once)
{
    struct tu_capture cap;
    struct upager_stats s;
    char *text;

    tu_env("12Q", NULL);
    tu_capture_begin(&cap);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(upager_init(), EINVAL);
        ck_assert_ptr_null(upager_malloc(100));
        ck_assert_ptr_null(upager_aligned_alloc(64, 100));
        ck_assert_ptr_null(upager_realloc(NULL, 100));
        ck_assert_int_eq(upager_get_stats(&s), EINVAL);
    }
    text = tu_capture_end(&cap);
    ck_assert_msg(tu_count_lines(text) == 1, "stderr: %s", text);
    ck_assert_str_eq(text, "upager: UPAGER_BUDGET=\"12Q\": expected a size "
                           "such as 512M, 4G or 25%\n");
    free(text);
}
END_TEST

/* ---- good values ------------------------------------------------------- */

struct good_budget {
    const char *value;
    size_t bytes; /* 0: 25% of the memory available */
};

static const struct good_budget good_budgets[] = {
    { "32768", 32768 }, /* the smallest: 8 pages of 4K */
    { "512K", 512 * TU_KIB },
    { "64M", 64 * TU_MIB },
    { "2G", 2 * TU_GIB },
    { "64MiB", 64 * TU_MIB },
    { "64MB", 64 * TU_MIB },
    { "64m", 64 * TU_MIB },
    { "16777216", 16 * TU_MIB },
    { "25%", 0 },
};

/* Each accepted spelling of the budget is taken as written: init succeeds
 * and budget_bytes is the value, binary units; a percentage is of the
 * memory available.  A block can then be allocated and used. */
START_TEST(test_good_budget)
{
    const struct good_budget *g = &good_budgets[_i];
    struct upager_stats s;

    tu_env(g->value, NULL);
    int rc = upager_init();
    ck_assert_msg(rc == 0, "UPAGER_BUDGET=\"%s\": init returned %d", g->value, rc);
    tu_stats(&s);
    if (g->bytes != 0) {
        ck_assert_msg(s.budget_bytes == g->bytes, "UPAGER_BUDGET=\"%s\": budget %zu",
                      g->value, s.budget_bytes);
    } else {
        size_t want = tu_mem_available() / 4;
        size_t diff = s.budget_bytes > want ? s.budget_bytes - want
                                            : want - s.budget_bytes;
        ck_assert_msg(diff <= s.page_size, "25%%: budget %zu, expected about %zu",
                      s.budget_bytes, want);
    }
    ck_assert_uint_le(s.page_size, s.budget_bytes);
    volatile char *p = upager_malloc(100);
    ck_assert_ptr_nonnull((void *)p);
    p[0] = 42;
    ck_assert_int_eq(p[0], 42);
}
END_TEST

struct good_value {
    const char *name;
    const char *value;
};

static const struct good_value good_values[] = {
    { "UPAGER_PAGE_SIZE", "4096" },
    { "UPAGER_PAGE_SIZE", "64K" },
    { "UPAGER_PAGE_SIZE", "65536" },
    { "UPAGER_PAGE_SIZE", "128KiB" },
    { "UPAGER_PAGE_SIZE", "2M" },
    { "UPAGER_ARENA", "4G" },
    { "UPAGER_ARENA", "64G" },
    { "UPAGER_ARENA", "1T" },
    { "UPAGER_READAHEAD", "0" },
    { "UPAGER_READAHEAD", "4" },
    { "UPAGER_READAHEAD", "auto" },
    { "UPAGER_DIRECT_IO", "0" },
    { "UPAGER_DIRECT_IO", "no" },
    { "UPAGER_DIRECT_IO", "off" },
    { "UPAGER_DIRECT_IO", "false" },
    { "UPAGER_DIRECT_IO", "1" },
    { "UPAGER_DIRECT_IO", "yes" },
    { "UPAGER_DIRECT_IO", "on" },
    { "UPAGER_DIRECT_IO", "true" },
    { "UPAGER_DIRECT_IO", "auto" },
    { "UPAGER_STATS", "0" },
    { "UPAGER_STATS", "yes" },
    { "UPAGER_STATS", "off" },
    { "UPAGER_STATS", "true" },
    { "UPAGER_VERBOSE", "1" },
    { "UPAGER_VERBOSE", "no" },
    { "UPAGER_VERBOSE", "on" },
    { "UPAGER_VERBOSE", "false" },
};

/* Each accepted value of the other options lets the library start, and
 * data larger than the budget makes the round trip through the store (so
 * direct I/O, read-ahead settings and small arenas are exercised).  A page
 * size is taken as written. */
START_TEST(test_good_value)
{
    const struct good_value *g = &good_values[_i];
    struct tu_capture cap;
    struct upager_stats s;
    const size_t len = 32 * TU_MIB;

    tu_env("16M", NULL); /* 8 pages of the largest page size */
    tu_setenv(g->name, g->value);
    /* Keep the configuration and statistics printouts out of the log; the
     * capture stays open to the end, exit included. */
    tu_capture_begin(&cap);
    int rc = upager_init();
    ck_assert_msg(rc == 0, "%s=\"%s\": init returned %d", g->name, g->value, rc);
    tu_stats(&s);
    if (strcmp(g->name, "UPAGER_PAGE_SIZE") == 0) {
        uint64_t want;
        ck_assert_int_eq(upager__parse_size(g->value, &want), 0);
        ck_assert_uint_eq(s.page_size, want);
    }
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 9);
    size_t bad = tu_pattern_check(p, 0, len, 9);
    ck_assert_msg(bad == (size_t)-1, "%s=\"%s\": data differs at %zu", g->name,
                  g->value, bad);
    tu_stats(&s);
    ck_assert_uint_gt(s.writebacks, 0);
    ck_assert_uint_gt(s.major_faults, 0);
    ck_assert_uint_eq(s.io_errors, 0);
    upager_free(p);
}
END_TEST

/* Direct I/O with the smallest page (the system page): data larger than
 * the budget makes the round trip through an O_DIRECT store. */
START_TEST(test_direct_io_small_pages)
{
    const size_t len = 8 * TU_MIB;
    struct upager_stats s;

    tu_env("1M", "4096");
    tu_setenv("UPAGER_DIRECT_IO", "1");
    tu_init();
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, len, 11);
    size_t bad = tu_pattern_check(p, 0, len, 11);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu", bad);
    tu_stats(&s);
    ck_assert_uint_eq(s.page_size, 4096);
    ck_assert_uint_gt(s.major_faults, 0);
    ck_assert_uint_eq(s.io_errors, 0);
}
END_TEST

/* With no configuration at all, the budget is half the memory available
 * (physical, or the cgroup limit when lower) and the page size is chosen
 * from it: a power of two from 64K to 2M. */
/* The I/O buffers sit in memory the kernel may back with 2M pages
 * (MADV_HUGEPAGE, aligned to 2M), so that a direct read into them goes in
 * requests of the buffer's size, not of ~1M of 4K pages: the mapping that
 * holds them says "hg" in its VmFlags where the kernel has transparent
 * huge pages. */
START_TEST(test_io_buffers_huge)
{
    tu_env("32M", NULL);
    tu_init();
    uintptr_t b = (uintptr_t)upager__g.bounce;
    ck_assert_uint_eq(b % ((uintptr_t)2 << 20), 0);
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0) {
        printf("config: test_io_buffers_huge: no transparent huge pages here\n");
        return;
    }
    FILE *f = fopen("/proc/self/smaps", "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    bool in = false, found = false, huge = false;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            in = b >= lo && b < hi;
            found |= in;
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            huge = strstr(line, " hg") != NULL;
        }
    }
    fclose(f);
    ck_assert_msg(found, "no mapping holds the I/O buffers");
    ck_assert_msg(huge, "the I/O buffers are not marked for huge pages");
}
END_TEST

START_TEST(test_defaults)
{
    struct upager_stats s;

    tu_env(NULL, NULL);
    tu_init();
    tu_stats(&s);
    size_t avail = tu_mem_available();
    size_t want = avail / 2;
    size_t diff = s.budget_bytes > want ? s.budget_bytes - want : want - s.budget_bytes;
    ck_assert_uint_gt(s.budget_bytes, 0);
    ck_assert_uint_le(s.budget_bytes, avail);
    ck_assert_msg(diff <= s.page_size, "budget %zu, expected about %zu",
                  s.budget_bytes, want);
    ck_assert_uint_ge(s.page_size, 64 * TU_KIB);
    ck_assert_uint_le(s.page_size, 2 * TU_MIB);
    ck_assert_uint_eq(s.page_size & (s.page_size - 1), 0);
    ck_assert_uint_eq(s.resident_bytes, 0);
    ck_assert_uint_eq(s.allocated_bytes, 0);
}
END_TEST

/* With neither UPAGER_DIR nor TMPDIR the store goes to /var/tmp and the
 * library works. */
START_TEST(test_default_dir)
{
    tu_env("4M", "65536");
    tu_setenv("UPAGER_DIR", NULL);
    tu_setenv("TMPDIR", NULL);
    tu_init();
    unsigned char *p = upager_malloc(16 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, 16 * TU_MIB, 3);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 16 * TU_MIB, 3), (size_t)-1);
}
END_TEST

/* A combination that cannot work under the kernel's mapping limit (4K
 * pages for a 1G budget: 262144 pages) fails at start-up with one line
 * that names one of the variables to change. */
START_TEST(test_impossible_combination)
{
    struct tu_capture cap;
    char *text;

    tu_env("1G", "4096");
    tu_capture_begin(&cap);
    int rc = upager_init();
    int rc2 = upager_init();
    errno = 0;
    void *p = upager_malloc(10);
    int err = errno;
    text = tu_capture_end(&cap);
    ck_assert_int_eq(rc, EINVAL);
    ck_assert_int_eq(rc2, EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(err, EINVAL);
    ck_assert_msg(tu_count_lines(text) == 1, "stderr: %s", text);
    ck_assert_msg(strncmp(text, "upager: ", 8) == 0, "stderr: %s", text);
    ck_assert_msg(strstr(text, "UPAGER_PAGE_SIZE") != NULL
                  || strstr(text, "UPAGER_BUDGET") != NULL,
                  "the line does not say what to change: %s", text);
    free(text);
}
END_TEST

/* A budget smaller than the smallest page there can be (the system page)
 * fails at start-up with one line about UPAGER_BUDGET. */
START_TEST(test_budget_below_one_page)
{
    struct tu_capture cap;
    char *text;

    tu_env("100", NULL);
    tu_capture_begin(&cap);
    int rc = upager_init();
    errno = 0;
    void *p = upager_malloc(10);
    int err = errno;
    text = tu_capture_end(&cap);
    ck_assert_int_eq(rc, EINVAL);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(err, EINVAL);
    ck_assert_msg(tu_count_lines(text) == 1 && strncmp(text, "upager: ", 8) == 0
                  && strstr(text, "UPAGER_BUDGET") != NULL
                  && strstr(text, "100") != NULL,
                  "stderr: %s", text);
    free(text);
}
END_TEST

/* UPAGER_VERBOSE=1 prints the effective configuration at start-up. */
START_TEST(test_verbose)
{
    struct tu_capture cap;
    char *text;

    tu_env("8M", "65536");
    tu_setenv("UPAGER_VERBOSE", "1");
    tu_capture_begin(&cap);
    tu_init();
    text = tu_capture_end(&cap);
    ck_assert_msg(strstr(text, "budget") != NULL, "verbose output: %s", text);
    ck_assert_msg(strstr(text, "page") != NULL, "verbose output: %s", text);
    free(text);
}
END_TEST

/* Without UPAGER_VERBOSE, a successful start prints nothing. */
START_TEST(test_quiet_by_default)
{
    struct tu_capture cap;
    char *text;

    tu_env("8M", "65536");
    tu_capture_begin(&cap);
    tu_init();
    void *p = upager_malloc(TU_MIB);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, TU_MIB);
    upager_free(p);
    text = tu_capture_end(&cap);
    ck_assert_msg(text[0] == '\0', "unexpected output: %s", text);
    free(text);
}
END_TEST

static void stats_child(void *arg)
{
    (void)arg;
    unsigned char *p = upager_malloc(8 * TU_MIB);
    if (p == NULL)
        _exit(3);
    memset(p, 7, 8 * TU_MIB);
    tu_touch_read(p, 8 * TU_MIB, 4096);
    /* returns: tu_run_child calls exit(0), which runs the atexit print */
}

static void close_stderr(void)
{
    fclose(stderr);
}

/* The program closes stderr in an exit handler that runs before the
 * library's (registered later, as coreutils' close_stdout can be). */
static void stats_closing_child(void *arg)
{
    stats_child(arg);
    atexit(close_stderr);
}

/* UPAGER_STATS=1 prints the statistics to stderr when the program exits
 * normally; without it nothing is printed. */
START_TEST(test_stats_at_exit)
{
    char *err;
    int status;

    tu_env("2M", "65536");
    tu_setenv("UPAGER_STATS", "1");
    status = tu_run_child(stats_child, NULL, &err);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x, stderr: %s", (unsigned)status, err);
    ck_assert_msg(strstr(err, "faults") != NULL, "no statistics at exit: '%s'", err);
    free(err);

    status = tu_run_child(stats_closing_child, NULL, &err);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x, stderr: %s", (unsigned)status, err);
    ck_assert_msg(strstr(err, "faults") != NULL,
                  "no statistics at exit after the program closed stderr: '%s'", err);
    free(err);

    tu_setenv("UPAGER_STATS", "0");
    status = tu_run_child(stats_child, NULL, &err);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "child status %#x", (unsigned)status);
    ck_assert_msg(err[0] == '\0', "printed without UPAGER_STATS: '%s'", err);
    free(err);
}
END_TEST

/* ---- upager_configure -------------------------------------------------- */

/* A bad value is refused with EINVAL and one line naming it; it changes
 * nothing, so the library then starts with its defaults. */
START_TEST(test_configure_bad_value)
{
    struct tu_capture cap;
    struct upager_stats s;
    char *text;

    tu_env(NULL, NULL);
    tu_capture_begin(&cap);
    int rc = upager_configure("budget", "12Q");
    text = tu_capture_end(&cap);
    ck_assert_int_eq(rc, EINVAL);
    ck_assert_msg(tu_count_lines(text) == 1 && strstr(text, "12Q") != NULL,
                  "stderr: %s", text);
    free(text);
    ck_assert_int_eq(upager_configure("page_size", "3000"), EINVAL);
    ck_assert_int_eq(upager_configure("verbose", "maybe"), EINVAL);
    tu_init();
    tu_stats(&s);
    ck_assert_uint_gt(s.budget_bytes, 0);
    ck_assert_uint_eq(s.page_size & (s.page_size - 1), 0);
}
END_TEST

/* Unknown names and NULL arguments are refused with EINVAL. */
START_TEST(test_configure_unknown)
{
    struct tu_capture cap;

    tu_env(NULL, NULL);
    tu_capture_begin(&cap);
    ck_assert_int_eq(upager_configure("nosuch", "1"), EINVAL);
    ck_assert_int_eq(upager_configure("", "1"), EINVAL);
    ck_assert_int_eq(upager_configure(NULL, "1"), EINVAL);
    ck_assert_int_eq(upager_configure("budget", NULL), EINVAL);
    free(tu_capture_end(&cap));
}
END_TEST

/* Values set by upager_configure before start-up are in force, and the
 * names are taken in any case. */
START_TEST(test_configure_applies)
{
    struct upager_stats s;

    tu_env(NULL, NULL);
    ck_assert_int_eq(upager_configure("budget", "8M"), 0);
    ck_assert_int_eq(upager_configure("PAGE_SIZE", "128K"), 0);
    ck_assert_int_eq(upager_configure("Readahead", "0"), 0);
    tu_init();
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 8 * TU_MIB);
    ck_assert_uint_eq(s.page_size, 128 * TU_KIB);
}
END_TEST

/* The environment overrides upager_configure, option by option. */
START_TEST(test_env_overrides_configure)
{
    struct upager_stats s;

    tu_env("4M", NULL);
    ck_assert_int_eq(upager_configure("budget", "8M"), 0);
    ck_assert_int_eq(upager_configure("page_size", "128K"), 0);
    tu_init();
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 4 * TU_MIB);     /* from the environment */
    ck_assert_uint_eq(s.page_size, 128 * TU_KIB);      /* from configure */
}
END_TEST

/* After start-up only budget, stats and verbose may change; the others
 * return EBUSY and keep their value. */
START_TEST(test_configure_after_init)
{
    struct upager_stats s;

    tu_env("8M", "65536");
    tu_init();
    ck_assert_int_eq(upager_configure("page_size", "128K"), EBUSY);
    ck_assert_int_eq(upager_configure("arena", "4G"), EBUSY);
    ck_assert_int_eq(upager_configure("dir", "/tmp"), EBUSY);
    ck_assert_int_eq(upager_configure("budget", "2M"), 0);
    ck_assert_int_eq(upager_configure("stats", "0"), 0);
    ck_assert_int_eq(upager_configure("verbose", "0"), 0);
    struct tu_capture cap;
    tu_capture_begin(&cap);
    ck_assert_int_eq(upager_configure("budget", "12Q"), EINVAL);
    free(tu_capture_end(&cap));
    tu_stats(&s);
    ck_assert_uint_eq(s.page_size, 65536);
    ck_assert_uint_eq(s.budget_bytes, 2 * TU_MIB);
}
END_TEST

/* upager_set_budget refuses a budget below one page or beyond what the
 * page size allows under the mapping limit, and leaves the budget as it
 * was; a sensible one is taken. */
START_TEST(test_set_budget_bounds)
{
    struct upager_stats s;

    tu_env("8M", "65536");
    tu_init();
    ck_assert_int_eq(upager_set_budget(0), EINVAL);
    ck_assert_int_eq(upager_set_budget(1000), EINVAL);
    ck_assert_int_eq(upager_set_budget((size_t)1 << 40), EINVAL);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 8 * TU_MIB);
    ck_assert_int_eq(upager_set_budget(4 * TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 4 * TU_MIB);
    ck_assert_int_eq(upager_set_budget(12 * TU_MIB), 0);
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 12 * TU_MIB);
}
END_TEST

/* upager_get_stats(NULL) is EINVAL, not a crash. */
START_TEST(test_get_stats_null)
{
    tu_env("8M", "65536");
    ck_assert_int_eq(upager_get_stats(NULL), EINVAL);
}
END_TEST

/* ---- the parser itself (internal) ------------------------------------- */

/* Sizes: digits with K/M/G/T, binary, optionally followed by B or iB in
 * any case; anything else is EINVAL, overflow included. */
START_TEST(test_parse_size)
{
    static const struct { const char *s; uint64_t v; } good[] = {
        { "0", 0 }, { "1", 1 }, { "4096", 4096 }, { "512K", 512 << 10 },
        { "512k", 512 << 10 }, { "64M", 64ULL << 20 }, { "2G", 2ULL << 30 },
        { "1T", 1ULL << 40 }, { "64MiB", 64ULL << 20 }, { "64MB", 64ULL << 20 },
        { "64mb", 64ULL << 20 }, { "1KiB", 1024 },
        { "16777215T", 16777215ULL << 40 },
    };
    static const char *const bad[] = {
        "", "K", "12Q", "-5", "+5", "1.5G", " 64M", "64M ", "0x10", "64KK",
        "64iB", "64KiBB", "64Ki", "16E", "1P", "18446744073709551616",
        "16777216T", "4 K",
    };
    uint64_t v;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        v = 12345;
        ck_assert_msg(upager__parse_size(good[i].s, &v) == 0, "\"%s\" refused",
                      good[i].s);
        ck_assert_msg(v == good[i].v, "\"%s\" = %llu", good[i].s,
                      (unsigned long long)v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(upager__parse_size(bad[i], &v) == EINVAL, "\"%s\" accepted",
                      bad[i]);
}
END_TEST

/* Booleans: 1/0, yes/no, on/off, true/false; nothing else. */
START_TEST(test_parse_bool)
{
    static const char *const yes[] = { "1", "yes", "on", "true", "YES", "True" };
    static const char *const no[] = { "0", "no", "off", "false", "OFF" };
    static const char *const bad[] = { "", "2", "y", "n", "yess", "enabled", "01", " 1" };
    bool b;

    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        b = false;
        ck_assert_msg(upager__parse_bool(yes[i], &b) == 0 && b, "\"%s\"", yes[i]);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        b = true;
        ck_assert_msg(upager__parse_bool(no[i], &b) == 0 && !b, "\"%s\"", no[i]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(upager__parse_bool(bad[i], &b) == EINVAL, "\"%s\" accepted",
                      bad[i]);
}
END_TEST

/* One option through the common entry point: a percentage of 1..100 is
 * kept as such, a refused value leaves the configuration untouched and
 * prints one line with the label given. */
START_TEST(test_config_set)
{
    struct upager__config cfg;
    struct tu_capture cap;
    char *text;

    memset(&cfg, 0, sizeof cfg);
    ck_assert_int_eq(upager__config_set(&cfg, "budget", "25%", "UPAGER_BUDGET"), 0);
    ck_assert_uint_eq(cfg.budget_pct, 25);
    ck_assert_int_eq(upager__config_set(&cfg, "budget", "100%", "UPAGER_BUDGET"), 0);
    ck_assert_uint_eq(cfg.budget_pct, 100);
    ck_assert_int_eq(upager__config_set(&cfg, "budget", "1%", "UPAGER_BUDGET"), 0);
    ck_assert_uint_eq(cfg.budget_pct, 1);
    tu_capture_begin(&cap);
    ck_assert_int_eq(upager__config_set(&cfg, "budget", "101%", "UPAGER_BUDGET"), EINVAL);
    ck_assert_int_eq(upager__config_set(&cfg, "budget", "%", "UPAGER_BUDGET"), EINVAL);
    ck_assert_int_eq(upager__config_set(&cfg, "budget", "1000%", "UPAGER_BUDGET"), EINVAL);
    text = tu_capture_end(&cap);
    ck_assert_uint_eq(cfg.budget_pct, 1);
    ck_assert_int_eq(tu_count_prefix(text, "upager: UPAGER_BUDGET=\"101%\":"), 1);
    ck_assert_int_eq(tu_count_lines(text), 3);
    free(text);
}
END_TEST


/* ---- the memory available: cgroup limits ----------------------------- */

/* Writes `text` to root/rel, creating the directories on the way. */
static void put_file(const char *root, const char *rel, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    for (char *q = path + strlen(root) + 1; *q; q++) {
        if (*q == '/') {
            *q = '\0';
            mkdir(path, 0700);
            *q = '/';
        }
    }
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

/* The lowest limit of the process's memory cgroup and its ancestors
 * counts, in cgroup v2 and in v1's memory hierarchy; "max" and v1's huge
 * "unlimited" value are no limit; other v1 controllers are ignored. */
START_TEST(test_cgroup_limit)
{
    char *root = tu_temp_path("cgroup");
    ck_assert_int_eq(mkdir(root, 0700), 0);

    /* v2: the parent's limit applies to the child */
    put_file(root, "a/b/memory.max", "max\n");
    put_file(root, "a/memory.max", "1073741824\n");
    ck_assert_uint_eq(upager__cgroup_limit("0::/a/b\n", root), 1073741824);
    put_file(root, "a/b/memory.max", "536870912\n");
    ck_assert_uint_eq(upager__cgroup_limit("0::/a/b\n", root), 536870912);

    /* v1: the memory controller's hierarchy, among other controllers */
    put_file(root, "memory/user.slice/u/memory.limit_in_bytes", "9223372036854771712\n");
    put_file(root, "memory/user.slice/memory.limit_in_bytes", "268435456\n");
    put_file(root, "cpu/user.slice/u/memory.limit_in_bytes", "4096\n");
    ck_assert_uint_eq(upager__cgroup_limit("12:cpu,cpuacct:/user.slice/u\n"
                                           "4:memory:/user.slice/u\n"
                                           "1:name=systemd:/user.slice/u\n",
                                           root),
                      268435456);
    ck_assert_uint_eq(upager__cgroup_limit("5:cpuset,memory:/user.slice/u\n", root),
                      268435456);

    /* v1 at the root of its hierarchy (as in a container) */
    put_file(root, "memory/memory.limit_in_bytes", "134217728\n");
    ck_assert_uint_eq(upager__cgroup_limit("4:memory:/\n", root), 134217728);
    ck_assert_uint_eq(upager__cgroup_limit("4:memory:/user.slice/u\n", root), 134217728);

    /* no memory cgroup, or nothing readable */
    ck_assert_uint_eq(upager__cgroup_limit("3:cpu:/x\n", root), UINT64_MAX);
    ck_assert_uint_eq(upager__cgroup_limit("0::/nowhere\n", "/nonexistent"), UINT64_MAX);
    ck_assert_uint_eq(upager__cgroup_limit("", root), UINT64_MAX);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    ck_assert_int_eq(system(cmd), 0);
    free(root);
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("bad_values");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_bad_env_value, 0,
                        (int)(sizeof bad_values / sizeof bad_values[0]));
    tcase_add_test(tc, test_bad_dir_not_writable);
    tcase_add_test(tc, test_bad_value_line_once);
    tcase_add_test(tc, test_impossible_combination);
    tcase_add_test(tc, test_budget_below_one_page);
    suite_add_tcase(s, tc);

    tc = tcase_create("good_values");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_good_budget, 0,
                        (int)(sizeof good_budgets / sizeof good_budgets[0]));
    tcase_add_loop_test(tc, test_good_value, 0,
                        (int)(sizeof good_values / sizeof good_values[0]));
    tcase_add_test(tc, test_direct_io_small_pages);
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_io_buffers_huge);
    tcase_add_test(tc, test_default_dir);
    tcase_add_test(tc, test_verbose);
    tcase_add_test(tc, test_quiet_by_default);
    tcase_add_test(tc, test_stats_at_exit);
    suite_add_tcase(s, tc);

    tc = tcase_create("configure");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_configure_bad_value);
    tcase_add_test(tc, test_configure_unknown);
    tcase_add_test(tc, test_configure_applies);
    tcase_add_test(tc, test_env_overrides_configure);
    tcase_add_test(tc, test_configure_after_init);
    tcase_add_test(tc, test_set_budget_bounds);
    tcase_add_test(tc, test_get_stats_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("parser");
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_parse_bool);
    tcase_add_test(tc, test_config_set);
    tcase_add_test(tc, test_cgroup_limit);
    suite_add_tcase(s, tc);

    return s;
}
