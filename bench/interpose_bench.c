/*
 * interpose_bench.c - what the C library functions libupager defines cost.
 *
 *     interpose_bench [iterations]      (default 2000000)
 *
 * libupager defines pthread_mutex_lock, read, write and the rest of
 * lib/interpose.def itself: for memory outside the arena each is a range
 * check and a tail call to the C library's.  This measures that fast path
 * against the C library's function called directly (found with dlsym in
 * libc.so.6), in nanoseconds per call, the best of 7 runs (the machine is
 * shared: other work only adds time), the two run alternately:
 *   - a pthread_mutex_lock + pthread_mutex_unlock pair on a mutex in
 *     ordinary memory, before upager starts and after;
 *   - write of 1 byte into a pipe and read of it back (one pair);
 * and, for scale, the slow path: the same mutex pair and pipe pair on
 * memory in the arena, which pin and unpin around each call.
 *
 * Built by make, never run by make check.  bench/RESULTS.md keeps the
 * figures.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <upager.h>

static long iters = 2000000;

typedef int mutex_fn(pthread_mutex_t *);
typedef ssize_t read_fn(int, void *, size_t);
typedef ssize_t write_fn(int, const void *, size_t);

static mutex_fn *libc_lock, *libc_unlock;
static read_fn *libc_read;
static write_fn *libc_write;

/* Called through these pointers, so that the compiler cannot tell the
 * interposed calls from the direct ones. */
static mutex_fn *volatile up_lock = pthread_mutex_lock;
static mutex_fn *volatile up_unlock = pthread_mutex_unlock;
static read_fn *volatile up_read = read;
static write_fn *volatile up_write = write;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double mutex_pair(mutex_fn *lock, mutex_fn *unlock, pthread_mutex_t *m, long n)
{
    double t0 = now();
    for (long i = 0; i < n; i++) {
        lock(m);
        unlock(m);
    }
    return (now() - t0) / n;
}

static int fds[2];

static double pipe_pair(write_fn *w, read_fn *r, char *buf, long n)
{
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (w(fds[1], buf, 1) != 1 || r(fds[0], buf, 1) != 1) {
            perror("interpose_bench: pipe");
            exit(1);
        }
    }
    return (now() - t0) / n;
}

#define RUNS 7

/* The best of the runs: the machine is shared, and other work only ever
 * adds time. */
static double best(double *v)
{
    qsort(v, RUNS, sizeof v[0], cmp);
    return v[0];
}

/* The C library's function and libupager's, run alternately (so that the
 * machine's drift falls on both), RUNS times each. */
static void compare(const char *what, bool io, long n)
{
    double d[RUNS], t[RUNS];
    static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    char byte = 'x';
    if (io)
        pipe_pair(libc_write, libc_read, &byte, n / 10); /* warm up */
    else
        mutex_pair(libc_lock, libc_unlock, &m, n / 10);
    for (int k = 0; k < RUNS; k++) {
        d[k] = io ? pipe_pair(libc_write, libc_read, &byte, n)
                  : mutex_pair(libc_lock, libc_unlock, &m, n);
        t[k] = io ? pipe_pair(up_write, up_read, &byte, n) : mutex_pair(up_lock, up_unlock, &m, n);
    }
    double dm = best(d), tm = best(t);
    printf("%-44s %9.1f %11.1f %+9.1f\n", what, dm, tm, tm - dm);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        iters = atol(argv[1]);
    if (iters < 1000) {
        fprintf(stderr, "usage: %s [iterations >= 1000]\n", argv[0]);
        return 2;
    }
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!libc) {
        fprintf(stderr, "interpose_bench: libc.so.6 not found: %s\n", dlerror());
        return 1;
    }
    libc_lock = (mutex_fn *)dlsym(libc, "pthread_mutex_lock");
    libc_unlock = (mutex_fn *)dlsym(libc, "pthread_mutex_unlock");
    libc_read = (read_fn *)dlsym(libc, "read");
    libc_write = (write_fn *)dlsym(libc, "write");
    if (!libc_lock || !libc_unlock || !libc_read || !libc_write ||
        (void *)libc_lock == (void *)up_lock || (void *)libc_read == (void *)up_read) {
        fprintf(stderr, "interpose_bench: the C library's functions are not told apart "
                        "from libupager's\n");
        return 1;
    }
    if (pipe(fds) != 0) {
        perror("interpose_bench: pipe");
        return 1;
    }
    long n = iters, nio = iters / 10;

    printf("ns per operation, best of %d runs of %ld (pipe: %ld)\n", RUNS, n, nio);
    printf("%-44s %9s %11s %9s\n", "operation", "C library", "libupager", "overhead");
    compare("mutex lock+unlock, upager not started", false, n);
    compare("pipe write+read 1 byte, upager not started", true, nio);

    upager_configure("budget", "16M");
    if (upager_init() != 0) {
        fprintf(stderr, "interpose_bench: upager_init failed\n");
        return 1;
    }
    compare("mutex lock+unlock, outside the arena", false, n);
    compare("pipe write+read 1 byte, outside the arena", true, nio);

    /* The slow path, for scale: objects in the arena, resident. */
    pthread_mutex_t *pm = upager_malloc(sizeof *pm);
    char *pb = upager_malloc(64);
    if (!pm || !pb) {
        perror("interpose_bench: upager_malloc");
        return 1;
    }
    pthread_mutex_init(pm, NULL);
    *pb = 'y';
    double v[RUNS];
    for (int k = 0; k < RUNS; k++)
        v[k] = mutex_pair(up_lock, up_unlock, pm, n / 10);
    printf("%-44s %9s %11.1f\n", "mutex lock+unlock, in the arena (pins)", "-", best(v));
    for (int k = 0; k < RUNS; k++)
        v[k] = pipe_pair(up_write, up_read, pb, nio);
    printf("%-44s %9s %11.1f\n", "pipe write+read 1 byte, in the arena (pins)", "-", best(v));
    upager_free(pb);
    upager_free(pm);
    return 0;
}
