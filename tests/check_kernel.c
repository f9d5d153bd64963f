/*
 * check_kernel.c - the kernel touches paged memory: synchronization objects
 * and system call buffers in the arena, resident or not.
 *
 * The kernel raises no SIGSEGV for itself, so a futex or a system call on
 * a page that is evicted or cooled would fail with EFAULT; the functions
 * of lib/interpose.c pin for the call.  (In this test program they are
 * linked from the convenience library, so they stand in for the C
 * library's everywhere in the process, Check's own calls included.)
 *
 *   sync_*   8 threads on mutexes, condition variables, rwlocks, barriers,
 *            semaphores and C11 mtx/cnd in paged memory, under a budget of
 *            16 pages of 4K while another thread streams through a buffer
 *            64 times larger and the objects' pages are evicted on
 *            purpose; exact counts.
 *   io_*     every covered call with evicted buffers (and iovecs, message
 *            headers, paths, struct stat) on a file, a pipe and a socket,
 *            against the same call on malloc memory; buffers larger than
 *            the budget; the budget all pinned; cancellation; the
 *            _FORTIFY_SOURCE variants.
 *   sqlite_* SQLite with upager as its allocator: threads, a file
 *            database, VACUUM; the same results as with malloc.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include "check_suites.h"
#include "internal.h"
#include "testutil.h"

#define NO_MISMATCH ((size_t)-1)
#define PS 4096 /* the page size of these cases */

/* The environment of these cases: the smallest page, a tiny budget, and
 * buffered store I/O (they test system calls and synchronization objects
 * under eviction, not the device: direct I/O of 4K pages would only slow
 * the pressure down), unless UPAGER_TEST_DIRECT_IO says otherwise. */
static void kernel_env(const char *budget)
{
    tu_env(budget, "4096");
    if (!getenv("UPAGER_TEST_DIRECT_IO"))
        tu_setenv("UPAGER_DIRECT_IO", "0");
}

/* ---- a budget under pressure ----------------------------------------- */

/* The smallest page and a budget of 16 of them; a streamer thread writes
 * through 64 budgets, and evicts the pages of `hot` (the objects under
 * test) whenever they are not pinned. */
struct pressure {
    pthread_t thread;
    unsigned char *big;
    size_t big_len;
    void *hot;
    size_t hot_len;
    atomic_int stop;
    atomic_ulong sweeps;
};

static void *streamer(void *arg)
{
    struct pressure *pr = arg;
    unsigned char v = 0;
    while (!atomic_load(&pr->stop)) {
        v++;
        for (size_t i = 0; i < pr->big_len && !atomic_load(&pr->stop); i += PS) {
            pr->big[i] = v;
            if ((i / PS) % 64 == 0)
                upager_advise(pr->hot, pr->hot_len, UPAGER_ADVICE_DONTNEED);
        }
        atomic_fetch_add(&pr->sweeps, 1);
    }
    return NULL;
}

static void pressure_start(struct pressure *pr, void *hot, size_t hot_len)
{
    pr->big_len = 64 * 16 * PS;
    pr->big = upager_malloc(pr->big_len);
    ck_assert_ptr_nonnull(pr->big);
    pr->hot = hot;
    pr->hot_len = hot_len;
    atomic_store(&pr->stop, 0);
    atomic_store(&pr->sweeps, 0);
    ck_assert_int_eq(pthread_create(&pr->thread, NULL, streamer, pr), 0);
}

static void pressure_stop(struct pressure *pr)
{
    /* At least one sweep (64 budgets written) before it stops, however
     * the threads were scheduled: the pressure is then certain. */
    for (int i = 0; i < 20000 && atomic_load(&pr->sweeps) == 0; i++)
        usleep(1000);
    atomic_store(&pr->stop, 1);
    ck_assert_int_eq(pthread_join(pr->thread, NULL), 0);
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_msg(s.evictions > 100, "only %llu evictions: no pressure",
                  (unsigned long long)s.evictions);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
    upager_free(pr->big);
}

/* An object of upager memory, spread so that each field of interest sits
 * on a page of its own. */
static void *paged_zalloc(size_t len)
{
    void *p = upager_calloc(1, len);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* A deadline far enough to be never reached, in the clock given. */
static struct timespec later(clockid_t clk)
{
    struct timespec t;
    clock_gettime(clk, &t);
    t.tv_sec += 60;
    return t;
}

#define NTHREADS 8
#define ROUNDS 3000

struct worker {
    pthread_t t;
    int id;
    void *shared;
};

static void run_workers(void *(*fn)(void *), void *shared)
{
    struct worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i].id = i;
        w[i].shared = shared;
        ck_assert_int_eq(pthread_create(&w[i].t, NULL, fn, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++) {
        void *res;
        ck_assert_int_eq(pthread_join(w[i].t, &res), 0);
        ck_assert_msg(res == NULL, "worker %d: %s", i, (const char *)res);
    }
}

/* ---- mutex and condition variable ------------------------------------ */

/* The mutex, the condition variable, the counters and a timeout each on a
 * page of their own: a waiter keeps two pages pinned. */
struct mc {
    pthread_mutex_t m;
    char pad1[PS];
    pthread_cond_t c;
    char pad2[PS];
    long count;     /* increments under m                        */
    int inflight;   /* at most 2 threads between enter and leave */
    int max_seen;
    char pad3[PS];
    struct timespec deadline; /* a timeout in paged memory        */
};

static void mc_lock(struct mc *s, int how)
{
    int r = 0;
    struct timespec t;
    switch (how % 4) {
    case 0:
        r = pthread_mutex_lock(&s->m);
        break;
    case 1:
        while ((r = pthread_mutex_trylock(&s->m)) == EBUSY)
            sched_yield();
        break;
    case 2:
        t = later(CLOCK_REALTIME);
        r = pthread_mutex_timedlock(&s->m, &t);
        break;
    case 3:
        t = later(CLOCK_MONOTONIC);
        r = pthread_mutex_clocklock(&s->m, CLOCK_MONOTONIC, &t);
        break;
    }
    if (r)
        abort();
}

static void *mc_worker(void *arg)
{
    struct worker *w = arg;
    struct mc *s = w->shared;
    for (int i = 0; i < ROUNDS; i++) {
        mc_lock(s, w->id + i);
        while (s->inflight >= 2) {
            int r;
            if (w->id % 3 == 0) {
                r = pthread_cond_wait(&s->c, &s->m);
            } else if (w->id % 3 == 1) {
                s->deadline = later(CLOCK_REALTIME); /* read from paged memory */
                r = pthread_cond_timedwait(&s->c, &s->m, &s->deadline);
            } else {
                struct timespec t = later(CLOCK_MONOTONIC);
                r = pthread_cond_clockwait(&s->c, &s->m, CLOCK_MONOTONIC, &t);
            }
            if (r)
                return "condition wait failed";
        }
        s->inflight++;
        if (s->inflight > s->max_seen)
            s->max_seen = s->inflight;
        s->count++;
        if (pthread_mutex_unlock(&s->m))
            return "unlock failed";
        sched_yield();
        mc_lock(s, w->id + i + 1);
        s->inflight--;
        if (i % 2)
            pthread_cond_signal(&s->c);
        else
            pthread_cond_broadcast(&s->c);
        if (pthread_mutex_unlock(&s->m))
            return "unlock failed";
    }
    return NULL;
}

START_TEST(test_sync_mutex_cond)
{
    struct pressure pr;
    kernel_env("64K");
    struct mc *s = paged_zalloc(sizeof *s);
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    ck_assert_int_eq(pthread_mutex_init(&s->m, &a), 0);
    ck_assert_int_eq(pthread_cond_init(&s->c, NULL), 0);
    pressure_start(&pr, s, sizeof *s);
    run_workers(mc_worker, s);
    pressure_stop(&pr);
    ck_assert_int_eq(s->count, (long)NTHREADS * ROUNDS);
    ck_assert_int_eq(s->inflight, 0);
    ck_assert_int_eq(s->max_seen, 2);
    ck_assert_int_eq(pthread_cond_destroy(&s->c), 0);
    ck_assert_int_eq(pthread_mutex_destroy(&s->m), 0);
    struct upager_stats st;
    tu_stats(&st);
    ck_assert_uint_eq(st.pinned_bytes, 0);
    upager_free(s);
}
END_TEST

/* ---- rwlock ------------------------------------------------------------ */

struct rw {
    pthread_rwlock_t l;
    char pad[PS];
    long a, b;      /* always equal outside the write lock */
    long reads;     /* atomically, under the read lock     */
};

static void *rw_worker(void *arg)
{
    struct worker *w = arg;
    struct rw *s = w->shared;
    for (int i = 0; i < ROUNDS; i++) {
        struct timespec t;
        int r = 0, how = (w->id + i) % 4;
        if (i % 4 == 0) { /* write */
            switch (how) {
            case 0: r = pthread_rwlock_wrlock(&s->l); break;
            case 1:
                while ((r = pthread_rwlock_trywrlock(&s->l)) == EBUSY)
                    sched_yield();
                break;
            case 2: t = later(CLOCK_REALTIME); r = pthread_rwlock_timedwrlock(&s->l, &t); break;
            case 3:
                t = later(CLOCK_MONOTONIC);
                r = pthread_rwlock_clockwrlock(&s->l, CLOCK_MONOTONIC, &t);
                break;
            }
            if (r)
                return "write lock failed";
            s->a++;
            sched_yield();
            s->b++;
        } else {
            switch (how) {
            case 0: r = pthread_rwlock_rdlock(&s->l); break;
            case 1:
                while ((r = pthread_rwlock_tryrdlock(&s->l)) == EBUSY)
                    sched_yield();
                break;
            case 2: t = later(CLOCK_REALTIME); r = pthread_rwlock_timedrdlock(&s->l, &t); break;
            case 3:
                t = later(CLOCK_MONOTONIC);
                r = pthread_rwlock_clockrdlock(&s->l, CLOCK_MONOTONIC, &t);
                break;
            }
            if (r)
                return "read lock failed";
            if (s->a != s->b)
                return "a reader saw a half-done write";
            __atomic_fetch_add(&s->reads, 1, __ATOMIC_RELAXED);
        }
        if (pthread_rwlock_unlock(&s->l))
            return "unlock failed";
    }
    return NULL;
}

START_TEST(test_sync_rwlock)
{
    struct pressure pr;
    kernel_env("64K");
    struct rw *s = paged_zalloc(sizeof *s);
    ck_assert_int_eq(pthread_rwlock_init(&s->l, NULL), 0);
    pressure_start(&pr, s, sizeof *s);
    run_workers(rw_worker, s);
    pressure_stop(&pr);
    ck_assert_int_eq(s->a, (long)NTHREADS * (ROUNDS / 4));
    ck_assert_int_eq(s->b, s->a);
    ck_assert_int_eq(s->reads, (long)NTHREADS * ROUNDS - s->a);
    ck_assert_int_eq(pthread_rwlock_destroy(&s->l), 0);
    upager_free(s);
}
END_TEST

/* ---- barrier ----------------------------------------------------------- */

#define BARRIER_ROUNDS 300

struct bar {
    pthread_barrier_t b;
    char pad[PS];
    long arrived;   /* atomically */
    long serial;    /* PTHREAD_BARRIER_SERIAL_THREAD returns */
    long wrong;
};

static void *bar_worker(void *arg)
{
    struct worker *w = arg;
    struct bar *s = w->shared;
    for (long r = 0; r < BARRIER_ROUNDS; r++) {
        __atomic_fetch_add(&s->arrived, 1, __ATOMIC_SEQ_CST);
        int x = pthread_barrier_wait(&s->b);
        if (x == PTHREAD_BARRIER_SERIAL_THREAD)
            __atomic_fetch_add(&s->serial, 1, __ATOMIC_SEQ_CST);
        else if (x != 0)
            return "barrier wait failed";
        if (__atomic_load_n(&s->arrived, __ATOMIC_SEQ_CST) < (r + 1) * NTHREADS)
            __atomic_fetch_add(&s->wrong, 1, __ATOMIC_SEQ_CST);
        if ((x = pthread_barrier_wait(&s->b)) != 0 && x != PTHREAD_BARRIER_SERIAL_THREAD)
            return "barrier wait failed";
    }
    return NULL;
}

START_TEST(test_sync_barrier)
{
    struct pressure pr;
    kernel_env("64K");
    struct bar *s = paged_zalloc(sizeof *s);
    ck_assert_int_eq(pthread_barrier_init(&s->b, NULL, NTHREADS), 0);
    pressure_start(&pr, s, sizeof *s);
    run_workers(bar_worker, s);
    pressure_stop(&pr);
    ck_assert_int_eq(s->arrived, (long)NTHREADS * BARRIER_ROUNDS);
    ck_assert_int_eq(s->serial, BARRIER_ROUNDS);
    ck_assert_int_eq(s->wrong, 0);
    ck_assert_int_eq(pthread_barrier_destroy(&s->b), 0);
    upager_free(s);
}
END_TEST

/* ---- semaphores --------------------------------------------------------- */

struct sem {
    sem_t lock;     /* a binary semaphore used as a lock     */
    char pad1[PS];
    sem_t items;    /* counts posts not yet taken            */
    char pad2[PS];
    long count;
    struct timespec deadline;
};

static void *sem_worker(void *arg)
{
    struct worker *w = arg;
    struct sem *s = w->shared;
    for (int i = 0; i < ROUNDS; i++) {
        int r = 0;
        struct timespec t;
        switch ((w->id + i) % 4) {
        case 0: r = sem_wait(&s->lock); break;
        case 1:
            while ((r = sem_trywait(&s->lock)) == -1 && errno == EAGAIN)
                sched_yield();
            break;
        case 2: t = later(CLOCK_REALTIME); r = sem_timedwait(&s->lock, &t); break;
        case 3:
            t = later(CLOCK_MONOTONIC);
            r = sem_clockwait(&s->lock, CLOCK_MONOTONIC, &t);
            break;
        }
        if (r)
            return "semaphore wait failed";
        s->count++;
        if (sem_post(&s->lock))
            return "semaphore post failed";
        /* Half the threads produce, half consume. */
        if (w->id % 2) {
            if (sem_post(&s->items))
                return "post failed";
        } else {
            s->deadline.tv_sec = later(CLOCK_REALTIME).tv_sec; /* racy, never reached */
            struct timespec d = later(CLOCK_REALTIME);
            if (sem_timedwait(&s->items, i % 2 ? &d : &s->deadline) && errno != ETIMEDOUT)
                return "consume failed";
        }
    }
    return NULL;
}

START_TEST(test_sync_semaphore)
{
    struct pressure pr;
    kernel_env("64K");
    struct sem *s = paged_zalloc(sizeof *s);
    ck_assert_int_eq(sem_init(&s->lock, 0, 1), 0);
    ck_assert_int_eq(sem_init(&s->items, 0, 0), 0);
    s->deadline = later(CLOCK_REALTIME);
    pressure_start(&pr, s, sizeof *s);
    run_workers(sem_worker, s);
    pressure_stop(&pr);
    ck_assert_int_eq(s->count, (long)NTHREADS * ROUNDS);
    int v = -1;
    ck_assert_int_eq(sem_getvalue(&s->lock, &v), 0);
    ck_assert_int_eq(v, 1);
    ck_assert_int_eq(sem_getvalue(&s->items, &v), 0);
    ck_assert_int_eq(v, 0);
    sem_destroy(&s->lock);
    sem_destroy(&s->items);
    upager_free(s);
}
END_TEST

/* ---- C11 threads ------------------------------------------------------- */

struct c11 {
    mtx_t m;
    char pad1[PS];
    cnd_t c;
    char pad2[PS];
    long count;
    int inflight, max_seen;
};

static void *c11_worker(void *arg)
{
    struct worker *w = arg;
    struct c11 *s = w->shared;
    for (int i = 0; i < ROUNDS; i++) {
        int r;
        struct timespec t;
        switch ((w->id + i) % 3) {
        case 0: r = mtx_lock(&s->m); break;
        case 1:
            while ((r = mtx_trylock(&s->m)) == thrd_busy)
                thrd_yield();
            break;
        default: t = later(CLOCK_REALTIME); r = mtx_timedlock(&s->m, &t); break;
        }
        if (r != thrd_success)
            return "mtx lock failed";
        while (s->inflight >= 2) {
            if (w->id % 2) {
                r = cnd_wait(&s->c, &s->m);
            } else {
                t = later(CLOCK_REALTIME);
                r = cnd_timedwait(&s->c, &s->m, &t);
            }
            if (r != thrd_success)
                return "cnd wait failed";
        }
        s->inflight++;
        if (s->inflight > s->max_seen)
            s->max_seen = s->inflight;
        s->count++;
        mtx_unlock(&s->m);
        thrd_yield();
        if (mtx_lock(&s->m) != thrd_success)
            return "mtx lock failed";
        s->inflight--;
        r = i % 2 ? cnd_signal(&s->c) : cnd_broadcast(&s->c);
        if (r != thrd_success || mtx_unlock(&s->m) != thrd_success)
            return "signal or unlock failed";
    }
    return NULL;
}

START_TEST(test_sync_c11)
{
    struct pressure pr;
    kernel_env("64K");
    struct c11 *s = paged_zalloc(sizeof *s);
    ck_assert_int_eq(mtx_init(&s->m, mtx_timed), thrd_success);
    ck_assert_int_eq(cnd_init(&s->c), thrd_success);
    pressure_start(&pr, s, sizeof *s);
    run_workers(c11_worker, s);
    pressure_stop(&pr);
    ck_assert_int_eq(s->count, (long)NTHREADS * ROUNDS);
    ck_assert_int_eq(s->inflight, 0);
    ck_assert_int_eq(s->max_seen, 2);
    cnd_destroy(&s->c);
    mtx_destroy(&s->m);
    upager_free(s);
}
END_TEST

/* A thread cancelled while it waits on a condition variable in paged
 * memory leaves no pin behind, and holds the mutex in its cleanup. */
static void unlock_cleanup(void *m)
{
    pthread_mutex_unlock(m);
}

static void *cancel_waiter(void *arg)
{
    struct mc *s = arg;
    pthread_mutex_lock(&s->m);
    pthread_cleanup_push(unlock_cleanup, &s->m);
    s->inflight = 1;
    for (;;)
        pthread_cond_wait(&s->c, &s->m);
    pthread_cleanup_pop(1);
    return NULL;
}

START_TEST(test_sync_cancel)
{
    kernel_env("64K");
    struct mc *s = paged_zalloc(sizeof *s);
    ck_assert_int_eq(pthread_mutex_init(&s->m, NULL), 0);
    ck_assert_int_eq(pthread_cond_init(&s->c, NULL), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, cancel_waiter, s), 0);
    for (;;) {
        pthread_mutex_lock(&s->m);
        int in = s->inflight;
        pthread_mutex_unlock(&s->m);
        if (in)
            break;
        usleep(1000);
    }
    struct upager_stats st;
    for (int i = 0; i < 5000; i++) { /* until the waiter is asleep in the call */
        tu_stats(&st);
        if (st.pinned_bytes >= 2 * PS)
            break;
        usleep(1000);
    }
    ck_assert_uint_ge(st.pinned_bytes, 2 * PS); /* the waiter's two pages */
    ck_assert_int_eq(pthread_cancel(t), 0);
    void *res;
    ck_assert_int_eq(pthread_join(t, &res), 0);
    ck_assert_ptr_eq(res, PTHREAD_CANCELED);
    tu_stats(&st);
    ck_assert_uint_eq(st.pinned_bytes, 0);
    ck_assert_int_eq(pthread_mutex_trylock(&s->m), 0);
    pthread_mutex_unlock(&s->m);
    upager_free(s);
}
END_TEST

/* ---- I/O --------------------------------------------------------------- */

/* An upager buffer of len bytes filled with junk and evicted: every page
 * STORED, PROT_NONE. */
static unsigned char *evicted(size_t len, int junk)
{
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    memset(p, junk, len);
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
    return p;
}

static void evict(const void *p, size_t len)
{
    ck_assert_int_eq(upager_advise(p, len, UPAGER_ADVICE_DONTNEED), 0);
}

static void assert_no_pins(void)
{
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.pinned_bytes, 0);
}

#define FILE_LEN (96 * TU_KIB)

/* read, pread, readv, preadv, fread from a file into evicted memory at odd
 * offsets that straddle pages, against the same calls into malloc memory. */
START_TEST(test_io_file_reads)
{
    kernel_env("64K");
    char *path = tu_make_file("kread", FILE_LEN, 11);
    int fu = open(path, O_RDONLY), fm = open(path, O_RDONLY);
    ck_assert_int_ge(fu, 0);
    ck_assert_int_ge(fm, 0);
    const size_t len = 40000, at = 3000; /* 10 pages, first one partly */
    unsigned char *m = malloc(len + at);
    ck_assert_ptr_nonnull(m);

    /* read: twice, then at the end of the file (short), then at EOF */
    for (int k = 0; k < 4; k++) {
        unsigned char *u = evicted(len + at, 0xee);
        memset(m, 0xee, len + at);
        ssize_t ru = read(fu, u + at, len), rm = read(fm, m + at, len);
        ck_assert_int_eq(ru, rm);
        ck_assert_int_eq(memcmp(u, m, len + at), 0);
        upager_free(u);
    }
    ck_assert_int_eq(lseek(fu, 0, SEEK_CUR), FILE_LEN);

    /* pread, pread64 */
    unsigned char *u = evicted(len + at, 0xee);
    memset(m, 0xee, len + at);
    ck_assert_int_eq(pread(fu, u + at, len, 12345), pread(fm, m + at, len, 12345));
    ck_assert_int_eq(memcmp(u, m, len + at), 0);
    evict(u, len + at);
    ck_assert_int_eq(pread64(fu, u + at, len, FILE_LEN - 100), 100);
    ck_assert_uint_eq(tu_pattern_check(u + at, FILE_LEN - 100, 100, 11), NO_MISMATCH);
    upager_free(u);

    /* readv, preadv: the iovec array itself evicted too */
    struct iovec *iu = (struct iovec *)evicted(PS, 0);
    unsigned char *b1 = evicted(3 * PS, 1), *b2 = evicted(3 * PS, 2);
    unsigned char mb[3 * PS], mc[3 * PS];
    memset(mb, 1, sizeof mb);
    memset(mc, 2, sizeof mc);
    struct iovec im[3] = {{mb + 100, 5000}, {mb + 6000, 0}, {mc + 10, 7000}};
    iu[0] = (struct iovec){b1 + 100, 5000};
    iu[1] = (struct iovec){b1 + 6000, 0};
    iu[2] = (struct iovec){b2 + 10, 7000};
    evict(iu, PS);
    ck_assert_int_eq(lseek(fu, 777, SEEK_SET), 777);
    ck_assert_int_eq(lseek(fm, 777, SEEK_SET), 777);
    ck_assert_int_eq(readv(fu, iu, 3), 12000);
    ck_assert_int_eq(readv(fm, im, 3), 12000);
    ck_assert_int_eq(memcmp(b1, mb, sizeof mb), 0);
    ck_assert_int_eq(memcmp(b2, mc, sizeof mc), 0);
    evict(b1, 3 * PS);
    evict(b2, 3 * PS);
    evict(iu, PS);
    ck_assert_int_eq(preadv(fu, iu, 3, FILE_LEN - 6000), 6000);
    ck_assert_int_eq(preadv64(fm, im, 3, FILE_LEN - 6000), 6000);
    ck_assert_int_eq(memcmp(b1, mb, sizeof mb), 0);
    ck_assert_int_eq(memcmp(b2, mc, sizeof mc), 0);

    /* fread: whole items, then a short count at the end */
    FILE *f1 = fopen(path, "r"), *f2 = fopen(path, "r");
    ck_assert_ptr_nonnull(f1);
    ck_assert_ptr_nonnull(f2);
    u = evicted(len + at, 0xee);
    memset(m, 0xee, len + at);
    ck_assert_uint_eq(fread(u + at, 100, len / 100, f1), len / 100);
    ck_assert_uint_eq(fread(m + at, 100, len / 100, f2), len / 100);
    ck_assert_int_eq(memcmp(u, m, len + at), 0);
    evict(u, len + at);
    ck_assert_int_eq(fseek(f1, FILE_LEN - 25300, SEEK_SET), 0);
    ck_assert_int_eq(fseek(f2, FILE_LEN - 25300, SEEK_SET), 0);
    size_t r1 = fread(u + at, 1000, 40, f1), r2 = fread(m + at, 1000, 40, f2);
    ck_assert_uint_eq(r1, r2);
    ck_assert_uint_eq(r1, 25);
    ck_assert_int_eq(memcmp(u, m, len + at), 0);
    ck_assert_int_ne(feof(f1), 0);
    fclose(f1);
    fclose(f2);

    /* errors come back as they would: a bad descriptor */
    errno = 0;
    ck_assert_int_eq(read(-1, u + at, 10), -1);
    ck_assert_int_eq(errno, EBADF);
    errno = 0;
    ck_assert_int_eq(pread(fu, u, 10, -1), -1);
    ck_assert_int_eq(errno, EINVAL);
    assert_no_pins();
    upager_free(u);
    upager_free(b1);
    upager_free(b2);
    upager_free((void *)iu);
    free(m);
    close(fu);
    close(fm);
    unlink(path);
    free(path);
}
END_TEST

/* write, pwrite, writev, pwritev, fwrite from evicted memory into files. */
START_TEST(test_io_file_writes)
{
    kernel_env("64K");
    char *path = tu_temp_path("kwrite");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    const size_t len = 40000, at = 1234;
    unsigned char *u = upager_malloc(len + at);
    ck_assert_ptr_nonnull(u);
    tu_pattern_fill(u + at, 0, len, 21);
    evict(u, len + at);

    ck_assert_int_eq(write(fd, u + at, 10000), 10000);
    evict(u, len + at);
    ck_assert_int_eq(pwrite(fd, u + at + 10000, 10000, 10000), 10000);
    evict(u, len + at);
    ck_assert_int_eq(pwrite64(fd, u + at + 20000, 5000, 20000), 5000);
    struct iovec *iv = upager_malloc(2 * sizeof *iv);
    iv[0] = (struct iovec){u + at + 25000, 3000};
    iv[1] = (struct iovec){u + at + 28000, 2000};
    evict(u, len + at);
    evict(iv, 2 * sizeof *iv);
    ck_assert_int_eq(lseek(fd, 25000, SEEK_SET), 25000);
    ck_assert_int_eq(writev(fd, iv, 2), 5000);
    iv[0] = (struct iovec){u + at + 30000, 1000};
    iv[1] = (struct iovec){u + at + 31000, 4000};
    evict(u, len + at);
    evict(iv, 2 * sizeof *iv);
    ck_assert_int_eq(pwritev(fd, iv, 2, 30000), 5000);
    ck_assert_int_eq(pwritev64(fd, iv, 1, 30000), 1000);
    FILE *f = fdopen(dup(fd), "r+");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, 35000, SEEK_SET), 0);
    evict(u, len + at);
    ck_assert_uint_eq(fwrite(u + at + 35000, 500, 10, f), 10);
    ck_assert_int_eq(fclose(f), 0);

    unsigned char *back = malloc(len);
    ck_assert_int_eq(pread(fd, back, len, 0), (ssize_t)len);
    ck_assert_uint_eq(tu_pattern_check(back, 0, len, 21), NO_MISMATCH);
    errno = 0;
    ck_assert_int_eq(write(-1, u + at, 10), -1);
    ck_assert_int_eq(errno, EBADF);
    assert_no_pins();
    free(back);
    upager_free(iv);
    upager_free(u);
    close(fd);
    unlink(path);
    free(path);
}
END_TEST

/* A buffer of 16 budgets: pwrite and pread in pieces, transparently;
 * read and write on a regular file the same; on a pipe read returns a
 * short count and loses nothing. */
START_TEST(test_io_larger_than_budget)
{
    kernel_env("64K");
    const size_t len = 1 * TU_MIB;
    char *path = tu_temp_path("kbig");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    unsigned char *u = upager_malloc(len);
    ck_assert_ptr_nonnull(u);
    tu_pattern_fill(u, 0, len, 31);
    evict(u, len);
    ck_assert_int_eq(pwrite(fd, u + 5, len - 5, 5), (ssize_t)(len - 5));
    ck_assert_int_eq(pwrite(fd, u, 5, 0), 5);
    memset(u, 0, len);
    evict(u, len);
    ck_assert_int_eq(pread(fd, u, len, 0), (ssize_t)len);
    ck_assert_uint_eq(tu_pattern_check(u, 0, len, 31), NO_MISMATCH);
    memset(u, 0, len);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    ck_assert_int_eq(read(fd, u, len + 100), (ssize_t)len); /* to EOF */
    ck_assert_uint_eq(tu_pattern_check(u, 0, len, 31), NO_MISMATCH);
    ck_assert_int_eq(ftruncate(fd, 0), 0);
    ck_assert_int_eq(lseek(fd, 0, SEEK_SET), 0);
    evict(u, len);
    ck_assert_int_eq(write(fd, u, len), (ssize_t)len);
    ck_assert_int_eq(tu_file_size(path), (off_t)len);

    /* a pipe: what one read returns is what was written, in order */
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    unsigned char *src = malloc(48 * TU_KIB);
    tu_pattern_fill(src, 0, 48 * TU_KIB, 32);
    ck_assert_int_eq(write(p[1], src, 48 * TU_KIB), (ssize_t)(48 * TU_KIB));
    close(p[1]);
    size_t got = 0;
    memset(u, 0, len);
    evict(u, len);
    for (;;) {
        ssize_t r = read(p[0], u + got, len - got);
        ck_assert_int_ge(r, 0);
        if (r == 0)
            break;
        got += (size_t)r;
    }
    ck_assert_uint_eq(got, 48 * TU_KIB);
    ck_assert_uint_eq(tu_pattern_check(u, 0, got, 32), NO_MISMATCH);
    assert_no_pins();
    free(src);
    close(p[0]);
    upager_free(u);
    close(fd);
    unlink(path);
    free(path);
}
END_TEST

/* A blocking write larger than the pieces to a pipe completes, as the
 * kernel's own would; a datagram larger than a piece goes whole. */
struct drain {
    int fd;
    unsigned char *buf;
    size_t len, got;
};

static void *drainer(void *arg)
{
    struct drain *d = arg;
    ssize_t r;
    while (d->got < d->len && (r = read(d->fd, d->buf + d->got, d->len - d->got)) > 0)
        d->got += (size_t)r;
    return NULL;
}

START_TEST(test_io_blocking_write_and_datagram)
{
    kernel_env("64K");
    const size_t len = 512 * TU_KIB;
    unsigned char *u = upager_malloc(len);
    ck_assert_ptr_nonnull(u);
    tu_pattern_fill(u, 0, len, 81);
    evict(u, len);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    static struct drain d;
    d.fd = p[0];
    d.buf = malloc(len);
    d.len = len;
    d.got = 0;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, drainer, &d), 0);
    ck_assert_int_eq(write(p[1], u, len), (ssize_t)len);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_uint_eq(d.got, len);
    ck_assert_uint_eq(tu_pattern_check(d.buf, 0, len, 81), NO_MISMATCH);
    close(p[0]);
    close(p[1]);

    /* 40K datagrams: more than an eighth of the budget, less than all */
    const size_t dg = 40 * TU_KIB;
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv), 0);
    int sz = 4 * (int)dg;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    evict(u, len);
    ck_assert_int_eq(send(sv[0], u + 3, dg, 0), (ssize_t)dg);
    ck_assert_int_eq(write(sv[0], u + 3 + dg, dg), (ssize_t)dg);
    unsigned char *in = evicted(2 * dg + PS, 0);
    ck_assert_int_eq(recv(sv[1], in + 1, dg + PS, 0), (ssize_t)dg);
    ck_assert_uint_eq(tu_pattern_check(in + 1, 3, dg, 81), NO_MISMATCH);
    evict(in, 2 * dg + PS);
    ck_assert_int_eq(read(sv[1], in + 5, dg + PS), (ssize_t)dg);
    ck_assert_uint_eq(tu_pattern_check(in + 5, 3 + dg, dg, 81), NO_MISMATCH);
    close(sv[0]);
    close(sv[1]);
    assert_no_pins();
    upager_free(in);
    free(d.buf);
    upager_free(u);
}
END_TEST

/* A pipe: reads and writes from evicted memory; a partial read leaves the
 * rest in the pipe. */
START_TEST(test_io_pipe)
{
    kernel_env("64K");
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    const size_t len = 20000;
    unsigned char *u = upager_malloc(len + 100), *m = malloc(len);
    tu_pattern_fill(u + 100, 0, len, 41);
    evict(u, len + 100);
    ck_assert_int_eq(write(p[1], u + 100, len), (ssize_t)len);
    memset(u, 0, len + 100);
    evict(u, len + 100);
    ck_assert_int_eq(read(p[0], u + 3, 7000), 7000);
    ck_assert_uint_eq(tu_pattern_check(u + 3, 0, 7000, 41), NO_MISMATCH);
    ck_assert_int_eq(read(p[0], m, len), (ssize_t)(len - 7000));
    ck_assert_uint_eq(tu_pattern_check(m, 7000, len - 7000, 41), NO_MISMATCH);

    /* writev / readv on the pipe, and an empty pipe with O_NONBLOCK */
    struct iovec iv[2] = {{u + 3, 3000}, {u + 9000, 4000}};
    evict(u, len + 100);
    ck_assert_int_eq(writev(p[1], iv, 2), 7000);
    memset(u, 0, len + 100);
    evict(u, len + 100);
    ck_assert_int_eq(readv(p[0], iv, 2), 7000);
    ck_assert_uint_eq(tu_pattern_check(u + 3, 0, 3000, 41), NO_MISMATCH);
    ck_assert_int_eq(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);
    evict(u, len + 100);
    errno = 0;
    ck_assert_int_eq(read(p[0], u, 10), -1);
    ck_assert_int_eq(errno, EAGAIN);
    close(p[1]);
    ck_assert_int_eq(read(p[0], u, 10), 0);
    assert_no_pins();
    close(p[0]);
    free(m);
    upager_free(u);
}
END_TEST

/* Sockets: send/recv, sendto/recvfrom with addresses, sendmsg/recvmsg
 * with the header, its vector, the name and an SCM_RIGHTS control
 * message all in evicted memory; against the same on malloc memory. */
START_TEST(test_io_socket)
{
    kernel_env("64K");
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    const size_t len = 12000;
    unsigned char *u = upager_malloc(len + 64), *m = malloc(len);
    tu_pattern_fill(u + 64, 0, len, 51);
    evict(u, len + 64);
    ck_assert_int_eq(send(sv[0], u + 64, len, 0), (ssize_t)len);
    memset(u, 0, len + 64);
    evict(u, len + 64);
    ck_assert_int_eq(recv(sv[1], u + 7, 5000, MSG_WAITALL), 5000);
    ck_assert_uint_eq(tu_pattern_check(u + 7, 0, 5000, 51), NO_MISMATCH);
    ck_assert_int_eq(recv(sv[1], m, len - 5000, MSG_WAITALL), (ssize_t)(len - 5000));
    ck_assert_uint_eq(tu_pattern_check(m, 5000, len - 5000, 51), NO_MISMATCH);
    errno = 0;
    ck_assert_int_eq(recv(sv[1], u, 10, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);

    /* datagrams with addresses in paged memory: abstract AF_UNIX names */
    int a = socket(AF_UNIX, SOCK_DGRAM, 0), b = socket(AF_UNIX, SOCK_DGRAM, 0);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(b, 0);
    struct sockaddr_un *na = upager_calloc(1, 2 * sizeof *na), *nb = na + 1;
    na->sun_family = nb->sun_family = AF_UNIX;
    snprintf(na->sun_path + 1, sizeof na->sun_path - 1, "upager-k-a-%d", (int)getpid());
    snprintf(nb->sun_path + 1, sizeof nb->sun_path - 1, "upager-k-b-%d", (int)getpid());
    socklen_t nlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
                                 strlen(na->sun_path + 1));
    ck_assert_int_eq(bind(a, (struct sockaddr *)na, nlen), 0);
    ck_assert_int_eq(bind(b, (struct sockaddr *)nb, nlen), 0);
    evict(u, len + 64);
    evict(na, 2 * sizeof *na);
    ck_assert_int_eq(sendto(a, u + 100, 3000, 0, (struct sockaddr *)nb, nlen), 3000);
    struct {
        struct sockaddr_un from;
        socklen_t fromlen;
    } *fr = upager_calloc(1, sizeof *fr);
    fr->fromlen = sizeof fr->from;
    memset(u, 0, len + 64);
    evict(u, len + 64);
    evict(fr, sizeof *fr);
    ck_assert_int_eq(recvfrom(b, u + 5, 3000, 0, (struct sockaddr *)&fr->from, &fr->fromlen),
                     3000);
    ck_assert_int_eq(fr->fromlen, nlen);
    ck_assert_int_eq(memcmp(&fr->from, na, nlen), 0);

    /* sendmsg/recvmsg: header, vector, name and control all paged */
    struct msgbox {
        struct msghdr h;
        struct iovec iov[2];
        struct sockaddr_un name;
        union {
            char buf[CMSG_SPACE(sizeof(int))];
            struct cmsghdr align;
        } ctl;
    } *mb = upager_calloc(2, sizeof *mb);
    struct msgbox *in = mb + 1;
    tu_pattern_fill(u, 0, len, 52);
    mb->iov[0] = (struct iovec){u + 10, 1000};
    mb->iov[1] = (struct iovec){u + 5000, 2000};
    mb->h.msg_iov = mb->iov;
    mb->h.msg_iovlen = 2;
    mb->h.msg_name = nb;
    mb->h.msg_namelen = nlen;
    mb->h.msg_control = mb->ctl.buf;
    mb->h.msg_controllen = sizeof mb->ctl.buf;
    struct cmsghdr *c = CMSG_FIRSTHDR(&mb->h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int passed = open("/dev/null", O_RDONLY);
    memcpy(CMSG_DATA(c), &passed, sizeof passed);
    unsigned char *dst = upager_calloc(1, 3 * PS);
    in->iov[0] = (struct iovec){dst + 3, 2500};
    in->iov[1] = (struct iovec){dst + 2 * PS + 100, 1000};
    in->h.msg_iov = in->iov;
    in->h.msg_iovlen = 2;
    in->h.msg_name = &in->name;
    in->h.msg_namelen = sizeof in->name;
    in->h.msg_control = in->ctl.buf;
    in->h.msg_controllen = sizeof in->ctl.buf;
    evict(u, len + 64);
    evict(mb, 2 * sizeof *mb);
    evict(na, 2 * sizeof *na);
    evict(dst, 3 * PS);
    ck_assert_int_eq(sendmsg(a, &mb->h, 0), 3000);
    evict(mb, 2 * sizeof *mb);
    ck_assert_int_eq(recvmsg(b, &in->h, 0), 3000);
    ck_assert_int_eq(in->h.msg_namelen, nlen);
    ck_assert_int_eq(memcmp(&in->name, na, nlen), 0);
    ck_assert_int_eq(in->h.msg_flags, 0);
    ck_assert_uint_eq(tu_pattern_check(dst + 3, 10, 1000, 52), NO_MISMATCH);
    ck_assert_uint_eq(tu_pattern_check(dst + 3 + 1000, 5000, 1500, 52), NO_MISMATCH);
    ck_assert_uint_eq(tu_pattern_check(dst + 2 * PS + 100, 6500, 500, 52), NO_MISMATCH);
    struct cmsghdr *rc = CMSG_FIRSTHDR(&in->h);
    ck_assert_ptr_nonnull(rc);
    ck_assert_int_eq(rc->cmsg_type, SCM_RIGHTS);
    int got;
    memcpy(&got, CMSG_DATA(rc), sizeof got);
    struct stat s1, s2;
    ck_assert_int_eq(fstat(got, &s1), 0);
    ck_assert_int_eq(fstat(passed, &s2), 0);
    ck_assert_uint_eq(s1.st_ino, s2.st_ino);
    close(got);
    close(passed);
    errno = 0;
    ck_assert_int_eq(recvmsg(-1, &in->h, 0), -1);
    ck_assert_int_eq(errno, EBADF);
    assert_no_pins();
    close(a);
    close(b);
    close(sv[0]);
    close(sv[1]);
    upager_free(dst);
    upager_free(mb);
    upager_free(fr);
    upager_free(na);
    upager_free(u);
    free(m);
}
END_TEST

/* The stat family and the calls that take a path, with the path and the
 * struct stat in evicted memory. */
START_TEST(test_io_paths)
{
    kernel_env("64K");
    char *path = tu_make_file("kpath", 5000, 61);
    char *pp = upager_malloc(3 * PS);
    char *pth = pp + PS - 5; /* straddles a page boundary */
    strcpy(pth, path);
    struct stat *su = upager_malloc(4 * sizeof *su), ref;
    struct stat64 *su64 = (struct stat64 *)(su + 2);
    ck_assert_int_eq(stat(path, &ref), 0);
#define FRESH() (evict(pp, 3 * PS), evict(su, 4 * sizeof *su), memset(su, 0, sizeof *su))
#define SAME(st) ((st)->st_ino == ref.st_ino && (st)->st_size == ref.st_size && \
                  (st)->st_mode == ref.st_mode)
    FRESH();
    ck_assert_int_eq(stat(pth, su), 0);
    ck_assert(SAME(su));
    FRESH();
    ck_assert_int_eq(lstat(pth, su), 0);
    ck_assert(SAME(su));
    FRESH();
    ck_assert_int_eq(stat64(pth, su64), 0);
    ck_assert(SAME(su64));
    FRESH();
    ck_assert_int_eq(lstat64(pth, su64), 0);
    ck_assert(SAME(su64));
    FRESH();
    ck_assert_int_eq(fstatat(AT_FDCWD, pth, su, 0), 0);
    ck_assert(SAME(su));
    FRESH();
    ck_assert_int_eq(fstatat64(AT_FDCWD, pth, su64, 0), 0);
    ck_assert(SAME(su64));
    FRESH();
    struct statx *sx = (struct statx *)su;
    ck_assert_int_eq(statx(AT_FDCWD, pth, 0, STATX_BASIC_STATS, sx), 0);
    ck_assert_uint_eq(sx->stx_ino, ref.st_ino);
    ck_assert_uint_eq(sx->stx_size, (uint64_t)ref.st_size);
    FRESH();
    ck_assert_int_eq(access(pth, R_OK), 0);
    FRESH();
    int fd = open(pth, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    FRESH();
    ck_assert_int_eq(fstat(fd, su), 0);
    ck_assert(SAME(su));
    FRESH();
    ck_assert_int_eq(fstat64(fd, su64), 0);
    ck_assert(SAME(su64));
    close(fd);
    FRESH();
    fd = openat(AT_FDCWD, pth, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    close(fd);
    FRESH();
    fd = open64(pth, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    close(fd);

    /* a symbolic link read into paged memory */
    char *lnk = tu_temp_path("klink");
    ck_assert_int_eq(symlink(path, lnk), 0);
    strcpy(pth, lnk);
    char *out = pp + 2 * PS - 10;
    FRESH();
    ck_assert_int_eq(readlink(pth, out, PS), (ssize_t)strlen(path));
    ck_assert_int_eq(memcmp(out, path, strlen(path)), 0);
    FRESH();
    ck_assert_int_eq(lstat(pth, su), 0);
    ck_assert(S_ISLNK(su->st_mode));
    FRESH();
    ck_assert_int_eq(unlink(pth), 0);
    ck_assert_int_eq(access(lnk, F_OK), -1);

    /* a directory made, created into and removed by paged paths */
    snprintf(pth, 200, "%s.d", lnk);
    FRESH();
    ck_assert_int_eq(mkdir(pth, 0700), 0);
    strcat(pth, "/f");
    FRESH();
    fd = open(pth, O_CREAT | O_WRONLY | O_EXCL, 0600);
    ck_assert_int_ge(fd, 0);
    close(fd);
    FRESH();
    ck_assert_int_eq(unlink(pth), 0);
    pth[strlen(pth) - 2] = '\0';
    FRESH();
    ck_assert_int_eq(rmdir(pth), 0);
    FRESH();
    errno = 0;
    ck_assert_int_eq(stat(pth, su), -1);
    ck_assert_int_eq(errno, ENOENT);
    FRESH();
    errno = 0;
    ck_assert_int_eq(open(pth, O_RDONLY), -1);
    ck_assert_int_eq(errno, ENOENT);
#undef FRESH
#undef SAME
    assert_no_pins();
    upager_free(su);
    upager_free(pp);
    unlink(path);
    free(path);
    free(lnk);
}
END_TEST

/* Before the library starts, and for memory outside the arena, the calls
 * are the C library's: nothing starts upager. */
START_TEST(test_io_before_init)
{
    kernel_env(NULL);
    int p[2];
    char buf[8];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "abc", 3), 3);
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 3);
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    ck_assert_int_eq(pthread_mutex_lock(&m), 0);
    ck_assert_int_eq(pthread_mutex_unlock(&m), 0);
    struct stat st;
    ck_assert_int_eq(stat("/", &st), 0);
    close(p[0]);
    close(p[1]);
    ck_assert_int_eq(atomic_load(&upager__g.ready), 0);
    /* Not started: a later configure still works as before start-up. */
    ck_assert_int_eq(upager_configure("budget", "128K"), 0);
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.budget_bytes, 128 * TU_KIB);
}
END_TEST

/* Errors: the same return value and errno as the call on malloc memory. */
#define SAME_ERROR(call_u, call_m)                                             \
    do {                                                                       \
        errno = 0;                                                             \
        long ru_ = (long)(call_u);                                             \
        int eu_ = errno;                                                       \
        errno = 0;                                                             \
        long rm_ = (long)(call_m);                                             \
        int em_ = errno;                                                       \
        ck_assert_msg(ru_ == rm_ && eu_ == em_,                                \
                      "%s: %ld (errno %d) against %ld (errno %d) on malloc memory", \
                      #call_u, ru_, eu_, rm_, em_);                            \
    } while (0)

START_TEST(test_io_errors_as_malloc)
{
    kernel_env("64K");
    unsigned char *u = evicted(4 * PS, 1), *m = malloc(4 * PS);
    struct iovec *iu = upager_malloc(2 * sizeof *iu), im[2];
    iu[0] = (struct iovec){u + 1, 100};
    iu[1] = (struct iovec){u + 2 * PS, 100};
    im[0] = (struct iovec){m + 1, 100};
    im[1] = (struct iovec){m + 2 * PS, 100};
    int p[2], ro = open("/dev/null", O_RDONLY);
    ck_assert_int_eq(pipe(p), 0);
    evict(iu, 2 * sizeof *iu);
    SAME_ERROR(pread(p[0], u + 5, 100, 0), pread(p[0], m + 5, 100, 0));       /* ESPIPE */
    SAME_ERROR(pwrite(p[1], u + 5, 100, 0), pwrite(p[1], m + 5, 100, 0));
    SAME_ERROR(write(ro, u, 10), write(ro, m, 10));                           /* EBADF */
    SAME_ERROR(read(p[1], u, 10), read(p[1], m, 10));
    SAME_ERROR(recv(ro, u, 10, 0), recv(ro, m, 10, 0));                       /* ENOTSOCK */
    SAME_ERROR(send(p[1], u, 10, 0), send(p[1], m, 10, 0));
    volatile int neg = -1; /* opaque to the compiler, which warns on a constant */
    SAME_ERROR(readv(p[0], iu, neg), readv(p[0], im, neg));                   /* EINVAL */
    SAME_ERROR(writev(ro, iu, 2), writev(ro, im, 2));
    SAME_ERROR(preadv(p[0], iu, 2, 0), preadv(p[0], im, 2, 0));
    SAME_ERROR(read(ro, u, 10), read(ro, m, 10));                             /* 0: EOF */
    SAME_ERROR(write(p[1], u, 0), write(p[1], m, 0));
    SAME_ERROR(fstat(-1, (struct stat *)u), fstat(-1, (struct stat *)m));
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    SAME_ERROR(write(p[1], u, 10), write(p[1], m, 10)); /* EPIPE */
    close(p[1]);
    close(ro);
    assert_no_pins();
    upager_free(iu);
    upager_free(u);
    free(m);
}
END_TEST

/* The budget all pinned: a call that needs a page of its own waits for a
 * pin to go, then completes; it never fails with ENOMEM. */
struct waiter {
    int fd;
    unsigned char *buf;
    pthread_mutex_t *m;
    atomic_int done;
    ssize_t got;
};

static void *budget_reader(void *arg)
{
    struct waiter *w = arg;
    w->got = read(w->fd, w->buf + 10, 100);
    if (pthread_mutex_lock(w->m) == 0)
        pthread_mutex_unlock(w->m);
    atomic_store(&w->done, 1);
    return NULL;
}

START_TEST(test_io_budget_all_pinned)
{
    kernel_env("64K");
    unsigned char *hog = upager_malloc(16 * PS);
    unsigned char *buf = evicted(PS, 0);
    pthread_mutex_t *m = upager_malloc(sizeof *m);
    pthread_mutex_init(m, NULL);
    evict(m, sizeof *m);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "0123456789", 10), 10);
    ck_assert_int_eq(upager_pin(hog, 16 * PS, UPAGER_PIN_WRITE), 0);
    static struct waiter w; /* not in the arena: the test thread reads it */
    w.fd = p[0];
    w.buf = buf;
    w.m = m;
    atomic_store(&w.done, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, budget_reader, &w), 0);
    usleep(200000);
    ck_assert_int_eq(atomic_load(&w.done), 0); /* waiting for the budget */
    ck_assert_int_eq(upager_unpin(hog, 16 * PS), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(w.got, 10);
    ck_assert_int_eq(memcmp(buf + 10, "0123456789", 10), 0);
    assert_no_pins();
    close(p[0]);
    close(p[1]);
    upager_free(m);
    upager_free(buf);
    upager_free(hog);
}
END_TEST

/* A thread cancelled in read(2) into paged memory leaves no pin behind,
 * and nothing is taken from the pipe. */
static void *blocked_reader(void *arg)
{
    struct waiter *w = arg;
    w->got = read(w->fd, w->buf, PS);
    return NULL;
}

START_TEST(test_io_cancel)
{
    kernel_env("64K");
    unsigned char *buf = evicted(2 * PS, 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    static struct waiter w;
    w.fd = p[0];
    w.buf = buf + 100;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, blocked_reader, &w), 0);
    struct upager_stats s;
    for (int i = 0; i < 5000; i++) { /* the reader pins its two pages one by one */
        tu_stats(&s);
        if (s.pinned_bytes == 2 * PS)
            break;
        usleep(1000);
    }
    ck_assert_uint_eq(s.pinned_bytes, 2 * PS);
    usleep(10000);
    ck_assert_int_eq(pthread_cancel(t), 0);
    void *res;
    ck_assert_int_eq(pthread_join(t, &res), 0);
    ck_assert_ptr_eq(res, PTHREAD_CANCELED);
    assert_no_pins();
    ck_assert_int_eq(write(p[1], "ab", 2), 2);
    evict(buf, 2 * PS);
    ck_assert_int_eq(read(p[0], buf, 10), 2);
    close(p[0]);
    close(p[1]);
    upager_free(buf);
}
END_TEST

/* What -D_FORTIFY_SOURCE compiles the calls to, with the buffers in
 * evicted memory; the size check is still made. */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
ssize_t __pread64_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *addr, socklen_t *alen);
size_t __fread_chk(void *buf, size_t buflen, size_t size, size_t n, FILE *f);
ssize_t __readlink_chk(const char *path, char *buf, size_t len, size_t buflen);
int __open_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);

START_TEST(test_io_fortify)
{
    kernel_env("64K");
    char *path = tu_make_file("kfort", 20000, 71);
    char *pth = upager_malloc(3 * PS);
    unsigned char *u = upager_malloc(3 * PS);
    strcpy(pth + PS - 3, path);
#define FRESH() (evict(pth, 3 * PS), evict(u, 3 * PS))
    FRESH();
    int fd = __open_2(pth + PS - 3, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    FRESH();
    ck_assert_int_eq(__read_chk(fd, u + 5, 6000, 3 * PS - 5), 6000);
    ck_assert_uint_eq(tu_pattern_check(u + 5, 0, 6000, 71), NO_MISMATCH);
    FRESH();
    ck_assert_int_eq(__pread_chk(fd, u + 5, 6000, 100, 3 * PS - 5), 6000);
    ck_assert_uint_eq(tu_pattern_check(u + 5, 100, 6000, 71), NO_MISMATCH);
    FRESH();
    ck_assert_int_eq(__pread64_chk(fd, u + 5, 6000, 200, 3 * PS - 5), 6000);
    ck_assert_uint_eq(tu_pattern_check(u + 5, 200, 6000, 71), NO_MISMATCH);
    close(fd);
    FRESH();
    fd = __openat_2(AT_FDCWD, pth + PS - 3, O_RDONLY);
    ck_assert_int_ge(fd, 0);
    FILE *f = fdopen(fd, "r");
    FRESH();
    ck_assert_uint_eq(__fread_chk(u + 7, 3 * PS - 7, 10, 600, f), 600);
    ck_assert_uint_eq(tu_pattern_check(u + 7, 0, 6000, 71), NO_MISMATCH);
    fclose(f);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(write(sv[0], "hello world", 11), 11);
    FRESH();
    ck_assert_int_eq(__recv_chk(sv[1], u + PS - 2, 5, 100, MSG_WAITALL), 5);
    ck_assert_int_eq(memcmp(u + PS - 2, "hello", 5), 0);
    FRESH();
    ck_assert_int_eq(__recvfrom_chk(sv[1], u + 2 * PS - 2, 6, 100, 0, NULL, NULL), 6);
    ck_assert_int_eq(memcmp(u + 2 * PS - 2, " world", 6), 0);
    close(sv[0]);
    close(sv[1]);
    char *lnk = tu_temp_path("kfortl");
    ck_assert_int_eq(symlink(path, lnk), 0);
    strcpy(pth + PS - 3, lnk);
    FRESH();
    ck_assert_int_eq(__readlink_chk(pth + PS - 3, (char *)u + 1, 2 * PS, 3 * PS - 1),
                     (ssize_t)strlen(path));
    ck_assert_int_eq(memcmp(u + 1, path, strlen(path)), 0);
#undef FRESH
    assert_no_pins();
    unlink(lnk);
    free(lnk);
    unlink(path);
    free(path);
    upager_free(u);
    upager_free(pth);
}
END_TEST

/* A request larger than the buffer the compiler saw still aborts. */
START_TEST(test_io_fortify_overflow)
{
    kernel_env("64K");
    unsigned char *u = evicted(PS, 0);
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    ck_assert_int_eq(write(p[1], "x", 1), 1);
    struct tu_capture c;
    tu_capture_begin(&c); /* keep glibc's line out of the log */
    __read_chk(p[0], u, 200, 100);
    free(tu_capture_end(&c));
}
END_TEST

/* ---- SQLite with upager as its allocator --------------------------------- */

static int sq_init(void *arg) { (void)arg; return 0; }
static void sq_shutdown(void *arg) { (void)arg; }
static void *sq_malloc(int n) { return upager_malloc((size_t)n); }
static void sq_free(void *p) { upager_free(p); }
static void *sq_realloc(void *p, int n) { return upager_realloc(p, (size_t)n); }
static int sq_size(void *p) { return (int)upager_usable_size(p); }
static int sq_roundup(int n) { return (n + 15) & ~15; }

static const sqlite3_mem_methods upager_mem = {
    sq_malloc, sq_free, sq_realloc, sq_size, sq_roundup, sq_init, sq_shutdown, NULL,
};

#define SQ_THREADS 4
#define SQ_ROWS 1500

struct sq_result {
    int ok;
    char error[256];
    long long count, sum, textlen, after_count, after_sum;
    char digest[64];
    unsigned long long faults;
};

struct sq_thread {
    const char *path;
    int id;
    char error[200];
};

#define SQ_TRY(db, call, t)                                                    \
    do {                                                                       \
        int rc_ = (call);                                                      \
        if (rc_ != SQLITE_OK && rc_ != SQLITE_DONE && rc_ != SQLITE_ROW) {     \
            snprintf((t)->error, sizeof (t)->error, "%s: %s", #call,           \
                     (db) ? sqlite3_errmsg(db) : sqlite3_errstr(rc_));         \
            goto out;                                                          \
        }                                                                      \
    } while (0)

static void *sq_worker(void *arg)
{
    struct sq_thread *t = arg;
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL, *sel = NULL;
    SQ_TRY(db, sqlite3_open_v2(t->path, &db,
                               SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, NULL), t);
    sqlite3_busy_timeout(db, 30000);
    SQ_TRY(db, sqlite3_prepare_v2(db, "INSERT INTO t(k, v, s) VALUES (?, ?, ?)", -1, &ins,
                                  NULL), t);
    SQ_TRY(db, sqlite3_prepare_v2(db, "SELECT sum(v) FROM t WHERE k % 4 = ?", -1, &sel, NULL),
           t);
    for (int batch = 0; batch < 5; batch++) {
        SQ_TRY(db, sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), t);
        for (int i = 0; i < SQ_ROWS / 5; i++) {
            int k = t->id + SQ_THREADS * (batch * (SQ_ROWS / 5) + i);
            char s[200];
            int n = 20 + (k * 37) % 150;
            for (int j = 0; j < n; j++)
                s[j] = (char)('a' + (k + j) % 26);
            s[n] = '\0';
            sqlite3_bind_int(ins, 1, k);
            sqlite3_bind_int64(ins, 2, (long long)k * k);
            sqlite3_bind_text(ins, 3, s, n, SQLITE_TRANSIENT);
            SQ_TRY(db, sqlite3_step(ins), t);
            sqlite3_reset(ins);
        }
        SQ_TRY(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), t);
        sqlite3_bind_int(sel, 1, t->id);
        SQ_TRY(db, sqlite3_step(sel), t);
        sqlite3_reset(sel);
    }
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE t SET v = v + 1, s = s || 'x' WHERE k %% %d = %d",
             SQ_THREADS, t->id);
    SQ_TRY(db, sqlite3_exec(db, sql, NULL, NULL, NULL), t);
    snprintf(sql, sizeof sql, "DELETE FROM t WHERE k %% 7 = 3 AND k %% %d = %d", SQ_THREADS,
             t->id);
    SQ_TRY(db, sqlite3_exec(db, sql, NULL, NULL, NULL), t);
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(sel);
    sqlite3_close(db);
    return NULL;
}

static int sq_summary(sqlite3 *db, long long *count, long long *sum, long long *textlen,
                      char *digest)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT count(*), sum(v), sum(length(s)) FROM t", -1, &st,
                           NULL) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW)
        return -1;
    *count = sqlite3_column_int64(st, 0);
    *sum = sqlite3_column_int64(st, 1);
    if (textlen)
        *textlen = sqlite3_column_int64(st, 2);
    sqlite3_finalize(st);
    if (digest) { /* an order-sensitive hash of every row */
        unsigned long long h = 1469598103934665603ULL;
        if (sqlite3_prepare_v2(db, "SELECT k, v, s FROM t ORDER BY k", -1, &st, NULL) !=
            SQLITE_OK)
            return -1;
        while (sqlite3_step(st) == SQLITE_ROW) {
            h = (h ^ (unsigned long long)sqlite3_column_int64(st, 0)) * 1099511628211ULL;
            h = (h ^ (unsigned long long)sqlite3_column_int64(st, 1)) * 1099511628211ULL;
            const unsigned char *s = sqlite3_column_text(st, 2);
            for (; s && *s; s++)
                h = (h ^ *s) * 1099511628211ULL;
        }
        sqlite3_finalize(st);
        snprintf(digest, 64, "%016llx", h);
    }
    return 0;
}

/* One run, in a child (sqlite3_config must come before SQLite starts). */
static void sq_run(void *arg)
{
    struct sq_result *res = arg;
    int paged = res->ok; /* in: 1 for upager, 0 for malloc */
    res->ok = 0;
    if (paged && sqlite3_config(SQLITE_CONFIG_MALLOC, &upager_mem) != SQLITE_OK) {
        snprintf(res->error, sizeof res->error, "sqlite3_config failed");
        return;
    }
    char dir[4200], path[4300];
    snprintf(dir, sizeof dir, "%s/upager-sqlite-XXXXXX", tu_tmpdir());
    if (!mkdtemp(dir)) {
        snprintf(res->error, sizeof res->error, "mkdtemp: %s", strerror(errno));
        return;
    }
    snprintf(path, sizeof path, "%s/test.db", dir);
    sqlite3 *db = NULL;
    struct sq_thread th[SQ_THREADS];
    pthread_t tid[SQ_THREADS];
    if (sqlite3_open_v2(path, &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK ||
        sqlite3_exec(db, "CREATE TABLE t(k INTEGER PRIMARY KEY, v INTEGER, s TEXT);"
                         "CREATE INDEX t_v ON t(v); CREATE INDEX t_s ON t(s);",
                     NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(res->error, sizeof res->error, "create: %s", sqlite3_errmsg(db));
        goto out;
    }
    for (int i = 0; i < SQ_THREADS; i++) {
        th[i].path = path;
        th[i].id = i;
        th[i].error[0] = '\0';
        pthread_create(&tid[i], NULL, sq_worker, &th[i]);
    }
    for (int i = 0; i < SQ_THREADS; i++) {
        pthread_join(tid[i], NULL);
        if (th[i].error[0] && !res->error[0])
            snprintf(res->error, sizeof res->error, "thread %d: %s", i, th[i].error);
    }
    if (res->error[0])
        goto out;
    if (sq_summary(db, &res->count, &res->sum, &res->textlen, res->digest) != 0 ||
        sqlite3_exec(db, "VACUUM", NULL, NULL, NULL) != SQLITE_OK ||
        sq_summary(db, &res->after_count, &res->after_sum, NULL, NULL) != 0) {
        snprintf(res->error, sizeof res->error, "summary or VACUUM: %s", sqlite3_errmsg(db));
        goto out;
    }
    char *err = NULL;
    if (sqlite3_exec(db, "PRAGMA integrity_check", NULL, NULL, &err) != SQLITE_OK) {
        snprintf(res->error, sizeof res->error, "integrity_check: %s", err ? err : "?");
        goto out;
    }
    res->ok = 1;
out:
    sqlite3_close(db);
    if (paged) {
        struct upager_stats s;
        if (upager_get_stats(&s) == 0)
            res->faults = s.faults;
    }
    char aux[4400];
    unlink(path);
    snprintf(aux, sizeof aux, "%s-journal", path);
    unlink(aux);
    rmdir(dir);
}

START_TEST(test_sqlite_threads)
{
    kernel_env("512K");
    struct sq_result *r = tu_shared_alloc(2 * sizeof *r);
    char *err = NULL;
    r[0].ok = 0; /* malloc */
    int st = tu_run_child(sq_run, &r[0], &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "malloc run: status %d: %s", st, err);
    ck_assert_msg(r[0].ok, "malloc run: %s", r[0].error);
    free(err);
    r[1].ok = 1; /* upager */
    st = tu_run_child(sq_run, &r[1], &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "upager run: status %d: %s", st, err);
    ck_assert_msg(r[1].ok, "upager run: %s (stderr: %s)", r[1].error, err);
    free(err);
    ck_assert_msg(r[1].faults > 1000, "only %llu faults: SQLite did not use upager",
                  r[1].faults);
    ck_assert_int_eq(r[0].count, r[1].count);
    ck_assert_int_eq(r[0].sum, r[1].sum);
    ck_assert_int_eq(r[0].textlen, r[1].textlen);
    ck_assert_str_eq(r[0].digest, r[1].digest);
    ck_assert_int_eq(r[1].after_count, r[1].count);
    ck_assert_int_eq(r[1].after_sum, r[1].sum);
    ck_assert_int_gt(r[0].count, (long long)SQ_THREADS * SQ_ROWS * 5 / 7);
}
END_TEST

Suite *kernel_suite(void)
{
    Suite *s = suite_create("kernel");

    TCase *tc = tcase_create("sync");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sync_mutex_cond);
    tcase_add_test(tc, test_sync_rwlock);
    tcase_add_test(tc, test_sync_barrier);
    tcase_add_test(tc, test_sync_semaphore);
    tcase_add_test(tc, test_sync_c11);
    tcase_add_test(tc, test_sync_cancel);
    suite_add_tcase(s, tc);

    tc = tcase_create("io");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_io_file_reads);
    tcase_add_test(tc, test_io_file_writes);
    tcase_add_test(tc, test_io_larger_than_budget);
    tcase_add_test(tc, test_io_pipe);
    tcase_add_test(tc, test_io_blocking_write_and_datagram);
    tcase_add_test(tc, test_io_socket);
    tcase_add_test(tc, test_io_paths);
    tcase_add_test(tc, test_io_before_init);
    tcase_add_test(tc, test_io_errors_as_malloc);
    tcase_add_test(tc, test_io_budget_all_pinned);
    tcase_add_test(tc, test_io_cancel);
    tcase_add_test(tc, test_io_fortify);
    tcase_add_test_raise_signal(tc, test_io_fortify_overflow, SIGABRT);
    suite_add_tcase(s, tc);

    tc = tcase_create("sqlite");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sqlite_threads);
    suite_add_tcase(s, tc);
    return s;
}
