/*
 * threads.c - several threads sharing one paged array, and system calls
 * on paged memory.
 *
 *     threads [MiB [threads]]          (default 128 MiB, 4 threads, budget 16 MiB)
 *
 * Each thread writes its own stripe of the array; after a barrier every
 * thread reads the whole array and checks it.  Faults happen in all the
 * threads at once, on the same pages and on different ones; nothing in the
 * program has to know.
 *
 * The second part is about system calls on paged memory.  The kernel does
 * not raise a fault that upager could resolve when a system call writes
 * into a page that is not resident: the raw call fails with EFAULT.
 * libupager defines read(2) and the other common calls itself and pins
 * their buffers for them (see upager(3)); for the calls it does not cover,
 * upager_pin makes the range resident (writable, with UPAGER_PIN_WRITE)
 * until upager_unpin.  The read here is pinned explicitly, as such a call
 * would be; the pin nests with the one read takes.
 * UPAGER_BUDGET overrides the budget set here.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <upager.h>

#define MAX_THREADS 64

static uint64_t *array;
static size_t n;                    /* words in the array */
static int nthreads;
static pthread_barrier_t written;

static uint64_t value(size_t i)
{
    return (uint64_t)i * 0x9e3779b97f4a7c15u;
}

static void *worker(void *arg)
{
    size_t t = (size_t)(uintptr_t)arg;
    size_t lo = n * t / nthreads, hi = n * (t + 1) / nthreads;
    for (size_t i = lo; i < hi; i++)
        array[i] = value(i);

    pthread_barrier_wait(&written);

    /* Everyone reads everything, starting at a different place. */
    size_t wrong = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = (lo + k) % n;
        wrong += array[i] != value(i);
    }
    return (void *)(uintptr_t)wrong;
}

/* A system call into paged memory: pin, read, unpin (read itself would not
 * need it).  The range straddles a page boundary to make the point that
 * any range may be pinned. */
static int read_into_paged_memory(void)
{
    struct upager_stats st;
    upager_get_stats(&st);
    size_t len = 16384;
    char *start = (char *)array, *end = start + n * sizeof(uint64_t);
    uintptr_t boundary = ((uintptr_t)start + st.page_size) & ~(uintptr_t)(st.page_size - 1);
    char *buf = (char *)boundary - len / 2;
    if (buf < start || buf + len > end)
        buf = start;                /* a small array: no boundary to show */
    char msg[16384];
    for (size_t i = 0; i < len; i++)
        msg[i] = (char)('a' + i % 26);

    int fds[2];
    if (pipe(fds) != 0 || write(fds[1], msg, len) != (ssize_t)len) {
        perror("threads: pipe");
        return 0;
    }
    int err = upager_pin(buf, len, UPAGER_PIN_WRITE);
    if (err != 0) {
        printf("FAILED: upager_pin: %s\n", strerror(err));
        return 0;
    }
    ssize_t got = read(fds[0], buf, len);  /* safe: the range is pinned */
    upager_unpin(buf, len);
    close(fds[0]);
    close(fds[1]);
    if (got != (ssize_t)len || memcmp(buf, msg, len) != 0) {
        printf("FAILED: read(2) into pinned memory returned %zd\n", got);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 128;
    nthreads = argc > 2 ? atoi(argv[2]) : 4;
    if (mib == 0 || mib > (SIZE_MAX >> 22) || nthreads < 1 || nthreads > MAX_THREADS) {
        fprintf(stderr, "usage: %s [MiB [threads (1-%d)]]\n", argv[0], MAX_THREADS);
        return 2;
    }
    n = (mib << 20) / sizeof(uint64_t);

    upager_configure("budget", "16M");  /* the environment may override */
    array = upager_malloc(n * sizeof(uint64_t));
    if (array == NULL) {
        perror("threads: upager_malloc");
        return 1;
    }

    pthread_t tid[MAX_THREADS];
    pthread_barrier_init(&written, NULL, (unsigned)nthreads);
    for (int t = 0; t < nthreads; t++)
        if (pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t) != 0) {
            perror("threads: pthread_create");
            return 1;
        }
    size_t wrong = 0;
    for (int t = 0; t < nthreads; t++) {
        void *res;
        pthread_join(tid[t], &res);
        wrong += (size_t)(uintptr_t)res;
    }
    pthread_barrier_destroy(&written);

    int ok = wrong == 0;
    if (!ok)
        printf("FAILED: %zu words read back wrong\n", wrong);
    ok &= read_into_paged_memory();

    struct upager_stats st;
    upager_get_stats(&st);
    printf("%d threads: faults %llu (major %llu), evictions %llu, writebacks %llu, "
           "peak resident %.1f MiB of %.1f MiB\n", nthreads,
           (unsigned long long)st.faults, (unsigned long long)st.major_faults,
           (unsigned long long)st.evictions, (unsigned long long)st.writebacks,
           st.peak_resident_bytes / 1048576.0, st.budget_bytes / 1048576.0);
    if (ok)
        printf("OK: %d threads shared %zu MiB; read(2) into pinned memory worked\n",
               nthreads, mib);
    upager_free(array);
    return ok ? 0 : 1;
}
