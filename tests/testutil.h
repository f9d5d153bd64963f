/*
 * testutil.h - helpers shared by the Check test suites of upager.
 *
 * What the suites need around the library itself: the environment set
 * before the library initialises, the statistics read with their return
 * code checked, the process's memory as the kernel reports it
 * (/proc/self/status, /proc/self/maps), a reproducible PRNG, data patterns
 * that can be checked without a copy, stderr captured into a string, and
 * a child process run with its stderr and exit status collected.
 *
 * Helpers named tu_* that check something use ck_assert, so they may only
 * be called from the test's own thread, never from a worker thread or
 * from a child forked by the test.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef UPAGER_TESTUTIL_H
#define UPAGER_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "upager.h"

#define TU_KIB ((size_t)1 << 10)
#define TU_MIB ((size_t)1 << 20)
#define TU_GIB ((size_t)1 << 30)

/* ---- environment ------------------------------------------------------ */

/* The directory for store files and test files: $UPAGER_DIR, else
 * $TMPDIR, else /tmp, as they were at the first call. */
const char *tu_tmpdir(void);

/* Sets (value non-NULL) or unsets (value NULL) one variable; asserts. */
void tu_setenv(const char *name, const char *value);

/* Starts a case from a known configuration: unsets every UPAGER_*
 * option, points UPAGER_DIR at tu_tmpdir(), then sets UPAGER_BUDGET and
 * UPAGER_PAGE_SIZE when the arguments are not NULL.  Call it first, before
 * any upager function: the library reads the environment once. */
void tu_env(const char *budget, const char *page_size);

/* ---- statistics ------------------------------------------------------- */

/* upager_get_stats, asserting that it succeeded. */
void tu_stats(struct upager_stats *s);

/* upager_init, asserting that it succeeded; returns the page size. */
size_t tu_init(void);

/* ---- the process as the kernel sees it -------------------------------- */

/* A field of /proc/self/status ("VmRSS", "VmHWM", "VmSize"), in bytes. */
size_t tu_status_bytes(const char *field);
static inline size_t tu_rss(void) { return tu_status_bytes("VmRSS"); }
static inline size_t tu_hwm(void) { return tu_status_bytes("VmHWM"); }
static inline size_t tu_vmsize(void) { return tu_status_bytes("VmSize"); }

/* Resets VmHWM to the current RSS (writes 5 to /proc/self/clear_refs);
 * returns 0, or -1 when the kernel does not allow it. */
int tu_reset_hwm(void);

/* Lines of /proc/self/maps: the kernel mappings (VMAs) of the process. */
long tu_maps_count(void);

/* /proc/sys/vm/max_map_count. */
long tu_max_map_count(void);

/* Bytes of memory held by the memfd files of the process (the frames of
 * the arena), from st_blocks of each /proc/self/fd entry that is one. */
uint64_t tu_memfd_bytes(void);

/* Number of open file descriptors. */
long tu_fd_count(void);

/* Memory the library's percentages refer to: physical memory, or the
 * cgroup v2 memory.max when that is lower. */
size_t tu_mem_available(void);

/* ---- pseudo-random numbers and patterns ------------------------------- */

/* splitmix64: the next number of the sequence at *state. */
static inline uint64_t tu_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A number in [0, n), n > 0. */
static inline uint64_t tu_below(uint64_t *state, uint64_t n)
{
    return tu_rand(state) % n;
}

/* The seed of a case: $UPAGER_TEST_SEED when set, else `fixed`. */
uint64_t tu_seed(uint64_t fixed);

/* A deterministic pattern: the byte at offset `off` of stream `seed`.
 * Filling and checking go a word at a time; both work on any range. */
void tu_pattern_fill(void *dst, size_t off, size_t len, uint64_t seed);

/* Returns the index (from dst) of the first byte that differs from the
 * pattern, or (size_t)-1 when the range matches. */
size_t tu_pattern_check(const void *src, size_t off, size_t len,
                        uint64_t seed);

/* The expected byte at `off` of stream `seed`. */
unsigned char tu_pattern_byte(size_t off, uint64_t seed);

/* The index of the first byte of [p, p+len) that is not c, or (size_t)-1.
 * (Use it rather than ck_assert in a loop: each ck_assert that passes
 * still costs a message to the Check runner.) */
size_t tu_find_not(const void *p, size_t len, unsigned char c);

/* Reads one byte of every `stride` bytes of [p, p+len): faults the pages
 * in without the compiler dropping the reads.  Returns a checksum. */
unsigned tu_touch_read(const void *p, size_t len, size_t stride);

/* ---- files ------------------------------------------------------------ */

/* Creates a file of `size` bytes holding tu_pattern(seed) in tu_tmpdir();
 * returns its path (malloc'd; free it and unlink the file). */
char *tu_make_file(const char *tag, size_t size, uint64_t seed);

/* A new, unique path in tu_tmpdir() where nothing exists yet (malloc'd). */
char *tu_temp_path(const char *tag);

/* Size of the file at `path`, asserting that stat succeeds. */
off_t tu_file_size(const char *path);

/* ---- stderr and child processes --------------------------------------- */

/* Redirects fd 2 to a temporary file until tu_capture_end, which restores
 * it and returns what was written (malloc'd, NUL-terminated). */
struct tu_capture {
    int saved_fd; /* the original fd 2 */
    int file_fd;  /* the unlinked temporary file */
};
void tu_capture_begin(struct tu_capture *c);
char *tu_capture_end(struct tu_capture *c);

/* Runs fn(arg) in a child process with its stderr sent to a temporary
 * file; the child then calls exit(0), so atexit handlers run.  Returns the
 * wait status; *err receives the child's stderr (malloc'd). */
int tu_run_child(void (*fn)(void *), void *arg, char **err);

/* Memory shared with children forked afterwards (MAP_SHARED anonymous). */
void *tu_shared_alloc(size_t size);

/* Number of lines in text (a last line without '\n' counts). */
int tu_count_lines(const char *text);

/* Number of lines of text that start with prefix. */
int tu_count_prefix(const char *text, const char *prefix);

/* Whether text contains the address p written in hexadecimal, with or
 * without 0x, in either case. */
int tu_mentions_address(const char *text, uintptr_t p);

#endif /* UPAGER_TESTUTIL_H */
