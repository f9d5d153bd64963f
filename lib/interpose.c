/*
 * interpose.c - C library entry points that hand arena memory to the kernel.
 *
 * The kernel raises no SIGSEGV for itself: a system call or a futex on a
 * page that is not resident, or cooled (PROT_NONE), fails with EFAULT, and
 * glibc aborts on a futex that does.  libupager therefore defines the
 * common entry points itself (the list is lib/interpose.def); it is linked
 * before the C library, so calls from the program and from other libraries
 * come here.  Calls inside the C library to its own internal names do not.
 *
 * Each function is one check and a tail call when its memory is outside
 * the arena, or the library not started (it never starts it).  Otherwise
 * it pins the pages the call touches (upager__pin_range, map.c), writable
 * where the kernel writes, calls the real function, and unpins, also when
 * the thread is cancelled inside (pthread_cleanup_push; this file is built
 * with -fexceptions, so that costs no setjmp).  The real function is found
 * once, by a constructor, with dlsym(RTLD_NEXT); the fault path never
 * looks one up.
 *
 * Synchronization objects stay pinned for the whole call: a thread asleep
 * in pthread_cond_wait keeps the condition variable's page and the mutex's
 * page resident, so the futex words are there for the kernel when it
 * sleeps, when it is woken and when it takes the mutex back.  A timeout in
 * the arena is copied rather than pinned (the C library only reads it).
 *
 * I/O buffers are pinned in pieces: half the budget for positioned I/O,
 * stdio and regular files; an eighth for a call that may block on a pipe,
 * a socket or a device (a blocked call keeps its pins); the whole budget
 * for a datagram, which must go in one call.  A buffer that does not fit
 * goes in several calls where nobody can tell (pread and pwrite, stdio,
 * read and write on a regular file, a blocking write to a pipe or stream
 * socket, which the kernel completes too); a read from a pipe, a socket or
 * a device, and non-blocking I/O, return the count of the first piece, a
 * short count, with no second call after data moved.  Small objects the
 * call needs whole (a path, a struct stat, a socket address) are pinned
 * whole.
 *
 * The budget all pinned (ENOMEM from the pin): the call releases what it
 * pinned and waits, without being a cancellation point, until pins are
 * released; it never fails for it.  A page that holds no live memory
 * (EINVAL from the pin) is left to the kernel, which answers as it would
 * without the library (EFAULT, a short count).
 *
 * Callers: everyone, including this library (whose own buffers are never
 * in the arena) and the fault path (only the one range check, then the
 * real function).
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#undef _FORTIFY_SOURCE /* its inline wrappers would clash with these names */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Macros in <stdio.h> with optimisation; the functions are interposed. */
#undef fread_unlocked
#undef fwrite_unlocked

#define EXPORT __attribute__((visibility("default")))

/* ---- the real functions ---------------------------------------------- */

/* The checking variants of glibc (-D_FORTIFY_SOURCE), declared only when
 * a program is compiled with it. */
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen);
ssize_t __pread64_chk(int fd, void *buf, size_t n, off64_t off, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *restrict buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *restrict addr, socklen_t *restrict alen);
size_t __fread_chk(void *restrict buf, size_t buflen, size_t size, size_t n, FILE *restrict f);
ssize_t __readlink_chk(const char *restrict path, char *restrict buf, size_t len, size_t buflen);
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

static struct {
#define I(name) __typeof__(name) *name;
#include "interpose.def"
#undef I
} real;

/* Finds every real function.  A name this C library lacks (an older one)
 * stays NULL: no program that runs with it can call that name. */
__attribute__((constructor)) static void interpose_init(void)
{
#define I(name) __atomic_store_n(&real.name, (__typeof__(real.name))dlsym(RTLD_NEXT, #name), \
                                 __ATOMIC_RELAXED);
#include "interpose.def"
#undef I
}

__attribute__((noinline, cold)) static void *missing(void **slot, const char *name)
{
    interpose_init(); /* called before our constructor ran */
    void *f = __atomic_load_n(slot, __ATOMIC_RELAXED);
    if (!f) {
        upager__say_safe("cannot find the C library's ", name, "(): aborting");
        abort();
    }
    return f;
}

/* The real function.  Looked up here only when a constructor that ran
 * before ours calls it; never on the fault path, whose calls (pread,
 * pwrite, write) come after start-up. */
#define REAL(name)                                                            \
    (__builtin_expect(__atomic_load_n(&real.name, __ATOMIC_RELAXED) != NULL, 1) \
         ? real.name                                                          \
         : (__typeof__(real.name))missing((void **)&real.name, #name))

/* ---- where memory is -------------------------------------------------- */

/* Nothing to do: the pager has not started (or this is a child of fork). */
#define OFF() (!atomic_load_explicit(&upager__g.ready, memory_order_acquire))

/* [p, p + len) meets the arena. */
static inline bool overlaps(const void *p, size_t len)
{
    const struct upager__global *g = &upager__g;
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)g->base;
    return a - base < (g->npages << g->page_shift) || (a < base && len > base - a);
}

/* An object of the call in the arena (NULL is not). */
#define ARENA(p) IN_ARENA(p)

/* ---- pins ------------------------------------------------------------- */

#define IOV_LOCAL 64 /* iovec entries of one piece                          */
#define PIN_MAX (IOV_LOCAL + 4)

/* The ranges one call pinned, released by pins_release (also as the
 * cancellation cleanup). */
struct pinset {
    unsigned n;
    struct {
        const void *p;
        size_t len;
    } r[PIN_MAX];
};

struct pinobj {
    const void *p;
    size_t len;
    int flags; /* UPAGER_PIN_WRITE when the kernel or the call writes it */
};

static void pins_release(void *arg)
{
    struct pinset *ps = arg;
    int saved = errno;
    while (ps->n) {
        ps->n--;
        upager__unpin_range(ps->r[ps->n].p, ps->r[ps->n].len);
    }
    errno = saved;
}

/* Pins [p, p + len), recording what was pinned.  Returns the pin's result:
 * 0, ENOMEM or EINVAL, with *covered as upager__pin_range sets it. */
static int pin(struct pinset *ps, const void *p, size_t len, int flags, size_t *covered)
{
    int err = upager__pin_range(p, len, flags, covered);
    if (*covered && overlaps(p, *covered)) {
        ps->r[ps->n].p = p;
        ps->r[ps->n].len = *covered;
        ps->n++;
    }
    return err;
}

/* Waits for pins to be released when the budget is all pinned: 50 us, then
 * doubling up to 2 ms.  A raw system call, so that it is not a
 * cancellation point where the call it serves is none. */
static void budget_wait(unsigned *tries)
{
    long us = 50L << (*tries < 6 ? *tries : 6);
    if (us > 2000)
        us = 2000;
    struct timespec ts = {0, us * 1000};
    int saved = errno;
    syscall(SYS_nanosleep, &ts, NULL);
    errno = saved;
    ++*tries;
}

/* Pins each object whole, waiting while the budget is all pinned (and
 * holding no pin meanwhile, so that two waiting calls cannot block each
 * other).  A page with no live memory is left to the kernel. */
static void pin_objs(struct pinset *ps, const struct pinobj *o, int n)
{
    unsigned tries = 0;
    ps->n = 0;
    for (int i = 0; i < n; i++) {
        size_t covered;
        if (o[i].p && pin(ps, o[i].p, o[i].len, o[i].flags, &covered) == ENOMEM) {
            pins_release(ps);
            budget_wait(&tries);
            i = -1;
        }
    }
}

/* r = call, with the objects pinned for its duration and unpinned however
 * it ends (return or cancellation).  errno is the call's. */
#define PINNED(r, objs, call)                                                 \
    do {                                                                      \
        struct pinset ps_;                                                    \
        pin_objs(&ps_, objs, (int)(sizeof(objs) / sizeof(objs)[0]));         \
        pthread_cleanup_push(pins_release, &ps_);                             \
        r = call;                                                             \
        pthread_cleanup_pop(1);                                               \
    } while (0)

#define W UPAGER_PIN_WRITE

/* A timeout in the arena is read by the C library (and the kernel): give
 * it a copy on the stack instead. */
static inline const struct timespec *ts_copy(const struct timespec *t, struct timespec *copy)
{
    if (ARENA(t)) {
        *copy = *t;
        return copy;
    }
    return t;
}

/* ---- synchronization objects ---------------------------------------- */

/* One object of type T. */
#define SYNC1(ret, name, T, params, obj, args)                                \
    EXPORT ret name params                                                    \
    {                                                                         \
        if (OFF() || !ARENA(obj))                                             \
            return REAL(name) args;                                           \
        ret r;                                                                \
        struct pinobj o[] = {{obj, sizeof(T), W}};                               \
        PINNED(r, o, REAL(name) args);                                        \
        return r;                                                             \
    }

/* One object of type T and a timeout t. */
#define SYNC1T(ret, name, T, params, obj, t, args)                            \
    EXPORT ret name params                                                    \
    {                                                                         \
        if (OFF() || (!ARENA(obj) && !ARENA(t)))                              \
            return REAL(name) args;                                           \
        ret r;                                                                \
        struct timespec copy_;                                                \
        t = ts_copy(t, &copy_);                                               \
        struct pinobj o[] = {{obj, sizeof(T), W}};                               \
        PINNED(r, o, REAL(name) args);                                        \
        return r;                                                             \
    }

/* A condition variable of type C and its mutex of type M: both stay pinned
 * while the thread sleeps, and while it takes the mutex back (also when it
 * is cancelled: the C library takes the mutex back before our cleanup
 * runs). */
#define SYNC2(ret, name, C, M, params, c, m, args)                            \
    EXPORT ret name params                                                    \
    {                                                                         \
        if (OFF() || (!ARENA(c) && !ARENA(m)))                                \
            return REAL(name) args;                                           \
        ret r;                                                                \
        struct pinobj o[] = {{c, sizeof(C), W}, {m, sizeof(M), W}};              \
        PINNED(r, o, REAL(name) args);                                        \
        return r;                                                             \
    }

/* The same with a timeout t. */
#define SYNC2T(ret, name, C, M, params, c, m, t, args)                        \
    EXPORT ret name params                                                    \
    {                                                                         \
        if (OFF() || (!ARENA(c) && !ARENA(m) && !ARENA(t)))                   \
            return REAL(name) args;                                           \
        ret r;                                                                \
        struct timespec copy_;                                                \
        t = ts_copy(t, &copy_);                                               \
        struct pinobj o[] = {{c, sizeof(C), W}, {m, sizeof(M), W}};              \
        PINNED(r, o, REAL(name) args);                                        \
        return r;                                                             \
    }

typedef pthread_mutex_t mutex_t;
typedef pthread_cond_t cond_t;
typedef pthread_rwlock_t rwlock_t;

SYNC1(int, pthread_mutex_lock, mutex_t, (mutex_t *m), m, (m))
SYNC1(int, pthread_mutex_trylock, mutex_t, (mutex_t *m), m, (m))
SYNC1T(int, pthread_mutex_timedlock, mutex_t,
       (mutex_t *restrict m, const struct timespec *restrict t), m, t, (m, t))
SYNC1T(int, pthread_mutex_clocklock, mutex_t,
       (mutex_t *restrict m, clockid_t c, const struct timespec *restrict t), m, t, (m, c, t))
SYNC1(int, pthread_mutex_unlock, mutex_t, (mutex_t *m), m, (m))
SYNC1(int, pthread_mutex_consistent, mutex_t, (mutex_t *m), m, (m))

SYNC2(int, pthread_cond_wait, cond_t, mutex_t, (cond_t *restrict c, mutex_t *restrict m), c,
      m, (c, m))
SYNC2T(int, pthread_cond_timedwait, cond_t, mutex_t,
       (cond_t *restrict c, mutex_t *restrict m, const struct timespec *restrict t), c, m, t,
       (c, m, t))
SYNC2T(int, pthread_cond_clockwait, cond_t, mutex_t,
       (cond_t *restrict c, mutex_t *restrict m, clockid_t k, const struct timespec *restrict t),
       c, m, t, (c, m, k, t))
SYNC1(int, pthread_cond_signal, cond_t, (cond_t *c), c, (c))
SYNC1(int, pthread_cond_broadcast, cond_t, (cond_t *c), c, (c))

SYNC1(int, pthread_rwlock_rdlock, rwlock_t, (rwlock_t *l), l, (l))
SYNC1(int, pthread_rwlock_tryrdlock, rwlock_t, (rwlock_t *l), l, (l))
SYNC1T(int, pthread_rwlock_timedrdlock, rwlock_t,
       (rwlock_t *restrict l, const struct timespec *restrict t), l, t, (l, t))
SYNC1T(int, pthread_rwlock_clockrdlock, rwlock_t,
       (rwlock_t *restrict l, clockid_t c, const struct timespec *restrict t), l, t, (l, c, t))
SYNC1(int, pthread_rwlock_wrlock, rwlock_t, (rwlock_t *l), l, (l))
SYNC1(int, pthread_rwlock_trywrlock, rwlock_t, (rwlock_t *l), l, (l))
SYNC1T(int, pthread_rwlock_timedwrlock, rwlock_t,
       (rwlock_t *restrict l, const struct timespec *restrict t), l, t, (l, t))
SYNC1T(int, pthread_rwlock_clockwrlock, rwlock_t,
       (rwlock_t *restrict l, clockid_t c, const struct timespec *restrict t), l, t, (l, c, t))
SYNC1(int, pthread_rwlock_unlock, rwlock_t, (rwlock_t *l), l, (l))

SYNC1(int, pthread_barrier_wait, pthread_barrier_t, (pthread_barrier_t *b), b, (b))

SYNC1(int, sem_wait, sem_t, (sem_t *s), s, (s))
SYNC1(int, sem_trywait, sem_t, (sem_t *s), s, (s))
SYNC1T(int, sem_timedwait, sem_t, (sem_t *restrict s, const struct timespec *restrict t), s, t,
       (s, t))
SYNC1T(int, sem_clockwait, sem_t, (sem_t *restrict s, clockid_t c, const struct timespec *restrict t),
       s, t, (s, c, t))
SYNC1(int, sem_post, sem_t, (sem_t *s), s, (s))

/* glibc implements these with its internal pthread names (2.36: mtx_lock
 * calls __pthread_mutex_lock directly, not through the PLT), so they would
 * bypass the functions above. */
SYNC1(int, mtx_lock, mtx_t, (mtx_t *m), m, (m))
SYNC1(int, mtx_trylock, mtx_t, (mtx_t *m), m, (m))
SYNC1T(int, mtx_timedlock, mtx_t, (mtx_t *restrict m, const struct timespec *restrict t), m, t,
       (m, t))
SYNC1(int, mtx_unlock, mtx_t, (mtx_t *m), m, (m))
SYNC2(int, cnd_wait, cnd_t, mtx_t, (cnd_t *c, mtx_t *m), c, m, (c, m))
SYNC2T(int, cnd_timedwait, cnd_t, mtx_t,
       (cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict t), c, m, t,
       (c, m, t))
SYNC1(int, cnd_signal, cnd_t, (cnd_t *c), c, (c))
SYNC1(int, cnd_broadcast, cnd_t, (cnd_t *c), c, (c))

/* ---- I/O: buffers in pieces ------------------------------------------ */

struct io;
/* Performs the call on the piece v[0..n) of the buffers; `done` bytes went
 * before it.  Returns the bytes moved or -1 with errno. */
typedef ssize_t io_call(struct io *io, struct iovec *v, int n, size_t done);

/* After a whole piece: go on with the next, or return the count. */
enum {
    GO_ON,    /* positioned I/O, stdio, a regular file, a blocking write */
    DECIDE,   /* by the descriptor (decide), when it matters            */
    ONE_CALL, /* a read from a pipe, socket or device; non-blocking I/O */
};

struct io {
    io_call *call;
    int pflags;      /* W when the kernel writes into the buffers        */
    bool wr;         /* the kernel reads the buffers: a write            */
    bool whole;      /* a datagram: one call, with the whole buffer      */
    int more;        /* GO_ON, DECIDE, ONE_CALL                           */
    int fd, flags;
    off64_t off;     /* pread and friends: offset of the first byte      */
    FILE *f;
    const void *addr;   /* sendto's address; recvfrom's             */
    socklen_t addrlen;
    socklen_t *addrlenp;
    struct msghdr *msg; /* recvmsg, sendmsg: a copy, or the caller's */
    struct msghdr *umsg;
    struct pinobj need[3]; /* objects pinned whole, for every piece     */
    int nneed;
};

/* What a piece may be, by the descriptor.  A regular file goes on in
 * pieces: nobody can tell.  A datagram is one call with the whole buffer
 * (a piece would truncate it).  A blocking write to a pipe or a stream
 * socket goes on too, as the kernel's own would (POSIX wants the whole
 * count from it); a read returns what the first piece got, as a short
 * count, and makes no second call that could block after data moved. */
static void decide(struct io *io)
{
    struct stat st;
    int type, fl;
    socklen_t tl = sizeof type;
    if (REAL(fstat)(io->fd, &st) != 0) {
        io->more = ONE_CALL; /* the call itself will say why */
    } else if (S_ISREG(st.st_mode)) {
        io->more = GO_ON;
    } else if (S_ISSOCK(st.st_mode) &&
               getsockopt(io->fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 &&
               type != SOCK_STREAM) {
        io->more = ONE_CALL;
        io->whole = true;
    } else if (io->wr && !(io->flags & MSG_DONTWAIT) && (fl = fcntl(io->fd, F_GETFL)) >= 0 &&
               !(fl & O_NONBLOCK)) {
        io->more = GO_ON;
    } else {
        io->more = ONE_CALL;
    }
}

/* Pins a piece of the buffers that starts at byte `off` of iov[i]: up to
 * IOV_LOCAL entries and `cap` arena bytes, built into v.  Returns the
 * entries; *len gets the piece's bytes, *cut whether the budget cut it.
 * Precondition: ps holds the needed objects only. */
static int piece(struct io *io, struct pinset *ps, const struct iovec *iov, int cnt, int i,
                 size_t off, size_t cap, struct iovec *v, size_t *len, bool *cut)
{
    int n = 0;
    *len = 0;
    *cut = false;
    for (; i < cnt && n < IOV_LOCAL; i++, off = 0) {
        char *p = (char *)iov[i].iov_base + off;
        size_t l = iov[i].iov_len - off;
        bool last = false;
        if (l && overlaps(p, l)) {
            size_t want = l < cap ? l : cap, covered;
            int err = pin(ps, p, want, io->pflags, &covered);
            if (err == ENOMEM) {
                l = covered;
                *cut = last = true;
            } else if (err == 0) {
                if (want < l)
                    l = want, last = true;
                cap -= want;
            } /* EINVAL: all of it, the kernel stops at the page */
        }
        v[n].iov_base = p;
        v[n].iov_len = l;
        n++;
        *len += l;
        if (last || cap == 0)
            break;
    }
    return n;
}

/* The engine: the call on successive pieces of iov[0..cnt), each pinned
 * for its call; the vector is rebuilt in v (the caller's, in the arena or
 * not, is read in user space, where faults are resolved).  A piece holds at most an eighth of the budget when the
 * call may block on a pipe, a socket or a device (a blocked call keeps its
 * pins), half of it otherwise, the whole budget for a datagram.  Returns
 * the total moved, or -1 with errno when the first call failed. */
static ssize_t io_run(struct io *io, const struct iovec *iov, int cnt)
{
    const struct upager__global *g = &upager__g;
    struct pinset ps;
    struct iovec v[IOV_LOCAL];
    size_t all = 0, total = 0, off = 0;
    ssize_t result = 0;
    int i = 0;
    unsigned tries = 0;
    for (int k = 0; k < cnt; k++)
        all += iov[k].iov_len;
    size_t limit = g->limit ? g->limit : 1;
    size_t small = (limit / 8 ? limit / 8 : 1) << g->page_shift;
    if (io->more == DECIDE && all > small)
        decide(io);
    ps.n = 0;
    pthread_cleanup_push(pins_release, &ps);
    for (;;) {
        size_t cap = io->whole                ? limit << g->page_shift
                     : io->more == GO_ON      ? (limit / 2 ? limit / 2 : 1) << g->page_shift
                                              : small;
        pin_objs(&ps, io->need, io->nneed);
        size_t len;
        bool cut;
        int n = piece(io, &ps, iov, cnt, i, off, cap, v, &len, &cut);
        size_t left = all - total;
        if (cut && len < left) {
            if (io->more == DECIDE)
                decide(io);
            /* Not even PIPE_BUF bytes, or part of a datagram that fits the
             * budget: wait for pins to go rather than split it. */
            if (len < PIPE_BUF || (io->whole && left <= (limit << g->page_shift))) {
                pins_release(&ps);
                budget_wait(&tries);
                continue;
            }
        }
        tries = 0;
        ssize_t r = io->call(io, v, n, total);
        pins_release(&ps);
        if (r < 0) {
            result = total ? (ssize_t)total : -1;
            break;
        }
        total += (size_t)r;
        if ((size_t)r < len || total >= all) {
            result = (ssize_t)total;
            break;
        }
        if (io->more == DECIDE)
            decide(io);
        if (io->more == ONE_CALL) {
            result = (ssize_t)total;
            break;
        }
        /* The next piece starts where this one ended. */
        size_t skip = (size_t)r;
        while (i < cnt && skip >= iov[i].iov_len - off) {
            skip -= iov[i].iov_len - off;
            i++;
            off = 0;
        }
        off += skip;
    }
    pthread_cleanup_pop(0);
    return result;
}

/* One buffer. */
static ssize_t io_one(struct io *io, const void *buf, size_t n)
{
    struct iovec v = {(void *)buf, n};
    return io_run(io, &v, 1);
}

/* An iovec array touches the arena (the array itself, or a buffer). */
static bool iov_hits(const struct iovec *iov, int cnt)
{
    if (cnt <= 0 || cnt > IOV_MAX)
        return false; /* the real function says EINVAL */
    if (overlaps(iov, (size_t)cnt * sizeof *iov))
        return true;
    for (int k = 0; k < cnt; k++)
        if (iov[k].iov_len && overlaps(iov[k].iov_base, iov[k].iov_len))
            return true;
    return false;
}

/* read and write */

static ssize_t call_read(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n, (void)done;
    return REAL(read)(io->fd, v[0].iov_base, v[0].iov_len);
}
static ssize_t call_write(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n, (void)done;
    return REAL(write)(io->fd, v[0].iov_base, v[0].iov_len);
}
static ssize_t call_pread(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n;
    return REAL(pread64)(io->fd, v[0].iov_base, v[0].iov_len, io->off + (off64_t)done);
}
static ssize_t call_pwrite(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n;
    return REAL(pwrite64)(io->fd, v[0].iov_base, v[0].iov_len, io->off + (off64_t)done);
}
static ssize_t call_readv(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)done;
    return REAL(readv)(io->fd, v, n);
}
static ssize_t call_writev(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)done;
    return REAL(writev)(io->fd, v, n);
}
static ssize_t call_preadv(struct io *io, struct iovec *v, int n, size_t done)
{
    return REAL(preadv64)(io->fd, v, n, io->off + (off64_t)done);
}
static ssize_t call_pwritev(struct io *io, struct iovec *v, int n, size_t done)
{
    return REAL(pwritev64)(io->fd, v, n, io->off + (off64_t)done);
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    if (OFF() || !overlaps(buf, n))
        return REAL(read)(fd, buf, n);
    struct io io = {.call = call_read, .pflags = W, .more = DECIDE, .fd = fd};
    return io_one(&io, buf, n);
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    if (OFF() || !overlaps(buf, n))
        return REAL(write)(fd, buf, n);
    struct io io = {.call = call_write, .wr = true, .more = DECIDE, .fd = fd};
    return io_one(&io, buf, n);
}

#define PREAD(name, off_type)                                                 \
    EXPORT ssize_t name(int fd, void *buf, size_t n, off_type off)            \
    {                                                                         \
        if (OFF() || !overlaps(buf, n))                                       \
            return REAL(name)(fd, buf, n, off);                               \
        struct io io = {.call = call_pread, .pflags = W, .more = GO_ON, .fd = fd, \
                        .off = off};                                          \
        return io_one(&io, buf, n);                                           \
    }
#define PWRITE(name, off_type)                                                \
    EXPORT ssize_t name(int fd, const void *buf, size_t n, off_type off)      \
    {                                                                         \
        if (OFF() || !overlaps(buf, n))                                       \
            return REAL(name)(fd, buf, n, off);                               \
        struct io io = {.call = call_pwrite, .wr = true, .more = GO_ON, .fd = fd, .off = off}; \
        return io_one(&io, buf, n);                                           \
    }
PREAD(pread, off_t)
PREAD(pread64, off64_t)
PWRITE(pwrite, off_t)
PWRITE(pwrite64, off64_t)

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    if (OFF() || !iov_hits(iov, cnt))
        return REAL(readv)(fd, iov, cnt);
    struct io io = {.call = call_readv, .pflags = W, .more = DECIDE, .fd = fd};
    return io_run(&io, iov, cnt);
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    if (OFF() || !iov_hits(iov, cnt))
        return REAL(writev)(fd, iov, cnt);
    struct io io = {.call = call_writev, .wr = true, .more = DECIDE, .fd = fd};
    return io_run(&io, iov, cnt);
}

#define PREADV(name, off_type, fn, pf)                                        \
    EXPORT ssize_t name(int fd, const struct iovec *iov, int cnt, off_type off) \
    {                                                                         \
        if (OFF() || !iov_hits(iov, cnt))                                     \
            return REAL(name)(fd, iov, cnt, off);                             \
        struct io io = {.call = fn, .pflags = pf, .wr = !pf, .more = GO_ON, .fd = fd, .off = off}; \
        return io_run(&io, iov, cnt);                                         \
    }
PREADV(preadv, off_t, call_preadv, W)
PREADV(preadv64, off64_t, call_preadv, W)
PREADV(pwritev, off_t, call_pwritev, 0)
PREADV(pwritev64, off64_t, call_pwritev, 0)

/* sockets */

static ssize_t call_recv(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n, (void)done;
    return REAL(recv)(io->fd, v[0].iov_base, v[0].iov_len, io->flags);
}
static ssize_t call_send(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n, (void)done;
    return REAL(send)(io->fd, v[0].iov_base, v[0].iov_len, io->flags);
}
static ssize_t call_recvfrom(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n, (void)done;
    return REAL(recvfrom)(io->fd, v[0].iov_base, v[0].iov_len, io->flags,
                          (struct sockaddr *)io->addr, io->addrlenp);
}
static ssize_t call_sendto(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)n, (void)done;
    return REAL(sendto)(io->fd, v[0].iov_base, v[0].iov_len, io->flags,
                        (const struct sockaddr *)io->addr, io->addrlen);
}
static ssize_t call_recvmsg(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)done;
    io->msg->msg_iov = v;
    io->msg->msg_iovlen = (size_t)n;
    ssize_t r = REAL(recvmsg)(io->fd, io->msg, io->flags);
    if (r >= 0) { /* what the kernel writes back into the header */
        io->umsg->msg_namelen = io->msg->msg_namelen;
        io->umsg->msg_controllen = io->msg->msg_controllen;
        io->umsg->msg_flags = io->msg->msg_flags;
    }
    return r;
}
static ssize_t call_sendmsg(struct io *io, struct iovec *v, int n, size_t done)
{
    (void)done;
    io->msg->msg_iov = v;
    io->msg->msg_iovlen = (size_t)n;
    return REAL(sendmsg)(io->fd, io->msg, io->flags);
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (OFF() || !overlaps(buf, n))
        return REAL(recv)(fd, buf, n, flags);
    struct io io = {.call = call_recv, .pflags = W, .more = DECIDE, .fd = fd, .flags = flags};
    return io_one(&io, buf, n);
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (OFF() || !overlaps(buf, n))
        return REAL(send)(fd, buf, n, flags);
    struct io io = {.call = call_send, .wr = true, .more = DECIDE, .fd = fd, .flags = flags};
    return io_one(&io, buf, n);
}

EXPORT ssize_t recvfrom(int fd, void *restrict buf, size_t n, int flags, __SOCKADDR_ARG addr,
                        socklen_t *restrict alen)
{
    struct sockaddr *a = addr.__sockaddr__;
    if (OFF() || (!overlaps(buf, n) && !ARENA(a) && !ARENA(alen)))
        return REAL(recvfrom)(fd, buf, n, flags, addr, alen);
    struct io io = {.call = call_recvfrom, .pflags = W, .more = DECIDE, .fd = fd,
                    .flags = flags, .addr = a, .addrlenp = alen};
    io.need[0] = (struct pinobj){alen, sizeof *alen, W};
    io.need[1] = (struct pinobj){a, a && alen ? *alen : 0, W};
    io.nneed = 2;
    return io_one(&io, buf, n);
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, __CONST_SOCKADDR_ARG addr,
                      socklen_t alen)
{
    const struct sockaddr *a = addr.__sockaddr__;
    if (OFF() || (!overlaps(buf, n) && !ARENA(a)))
        return REAL(sendto)(fd, buf, n, flags, addr, alen);
    struct io io = {.call = call_sendto, .wr = true, .more = DECIDE, .fd = fd, .flags = flags,
                    .addr = a, .addrlen = alen};
    io.need[0] = (struct pinobj){a, a ? alen : 0, 0};
    io.nneed = 1;
    return io_one(&io, buf, n);
}

/* A message header touches the arena: itself, its vector, a buffer, its
 * name or its control data. */
static bool msg_hits(const struct msghdr *m)
{
    if (ARENA(m))
        return true;
    if (!m)
        return false;
    return (m->msg_iovlen <= IOV_MAX && iov_hits(m->msg_iov, (int)m->msg_iovlen)) ||
           (m->msg_namelen && overlaps(m->msg_name, m->msg_namelen)) ||
           (m->msg_controllen && overlaps(m->msg_control, m->msg_controllen));
}

static ssize_t msg_run(struct io *io, struct msghdr *umsg, int pf)
{
    struct msghdr m = *umsg; /* read in user space: faults are resolved */
    if (m.msg_iovlen > IOV_MAX || (m.msg_iovlen && !m.msg_iov)) {
        /* Let the kernel refuse it. */
        return io->call == call_recvmsg ? REAL(recvmsg)(io->fd, umsg, io->flags)
                                        : REAL(sendmsg)(io->fd, umsg, io->flags);
    }
    io->msg = &m;
    io->umsg = umsg;
    io->need[0] = (struct pinobj){m.msg_name, m.msg_name ? m.msg_namelen : 0, pf};
    io->need[1] = (struct pinobj){m.msg_control, m.msg_control ? m.msg_controllen : 0, pf};
    io->nneed = 2;
    if (m.msg_iovlen == 0) {
        struct iovec none = {NULL, 0};
        return io_run(io, &none, 1);
    }
    return io_run(io, m.msg_iov, (int)m.msg_iovlen);
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (OFF() || !msg_hits(msg))
        return REAL(recvmsg)(fd, msg, flags);
    struct io io = {.call = call_recvmsg, .pflags = W, .more = DECIDE, .fd = fd,
                    .flags = flags};
    return msg_run(&io, msg, W);
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (OFF() || !msg_hits(msg))
        return REAL(sendmsg)(fd, msg, flags);
    struct io io = {.call = call_sendmsg, .wr = true, .more = DECIDE, .fd = fd, .flags = flags};
    return msg_run(&io, (struct msghdr *)msg, 0);
}

/* stdio: the call goes on until done, as fread and fwrite do themselves.
 * fread and fwrite run the pieces under the FILE's lock (it is recursive),
 * so that another thread's call on the same FILE cannot come between
 * them; the _unlocked variants (coreutils uses them throughout) leave the
 * lock to their caller, as they do themselves. */

static void unlock_file(void *f)
{
    funlockfile(f);
}

static size_t stdio_run(struct io *io, const void *buf, size_t bytes, size_t size, bool lock)
{
    ssize_t r;
    if (!lock) {
        r = io_one(io, buf, bytes);
    } else {
        flockfile(io->f);
        pthread_cleanup_push(unlock_file, io->f);
        r = io_one(io, buf, bytes);
        pthread_cleanup_pop(1);
    }
    return r < 0 ? 0 : (size_t)r / size;
}

#define STDIOFN(name, CONST, PFLAGS, WR, LOCK)                                       \
    static ssize_t call_##name(struct io *io, struct iovec *v, int n, size_t done)  \
    {                                                                               \
        (void)n, (void)done;                                                        \
        return (ssize_t)REAL(name)(v[0].iov_base, 1, v[0].iov_len, io->f);          \
    }                                                                               \
    EXPORT size_t name(CONST void *restrict buf, size_t size, size_t n,             \
                       FILE *restrict f)                                            \
    {                                                                               \
        size_t bytes;                                                               \
        if (OFF() || __builtin_mul_overflow(size, n, &bytes) || bytes == 0 ||       \
            bytes > SSIZE_MAX || !overlaps(buf, bytes))                             \
            return REAL(name)(buf, size, n, f);                                     \
        struct io io = {.call = call_##name, .pflags = PFLAGS, .wr = WR,            \
                        .more = GO_ON, .f = f};                                     \
        return stdio_run(&io, buf, bytes, size, LOCK);                              \
    }

STDIOFN(fread, , W, false, true)
STDIOFN(fwrite, const, 0, true, true)
STDIOFN(fread_unlocked, , W, false, false)
STDIOFN(fwrite_unlocked, const, 0, true, false)

/* ---- paths and struct stat ------------------------------------------- */

/* Since glibc 2.33 a program calls stat, fstat, lstat and fstatat by these
 * names (stat64 and so on with _FILE_OFFSET_BITS=64, as libsqlite3 does);
 * the __xstat family is for older binaries only and is not covered. */

/* A path in the arena: the string, pinned readable.  (Its first byte says
 * where it is: a string that starts outside the arena and runs into it is
 * not looked for.) */
#define PATH_OBJ(path) {path, ARENA(path) ? strlen(path) + 1 : 0, 0}

#define STATFN(name, T)                                                       \
    EXPORT int name(const char *restrict path, struct T *restrict st)         \
    {                                                                         \
        if (OFF() || (!ARENA(path) && !ARENA(st)))                            \
            return REAL(name)(path, st);                                      \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path), {st, sizeof *st, W}};               \
        PINNED(r, o, REAL(name)(path, st));                                   \
        return r;                                                             \
    }
STATFN(stat, stat)
STATFN(stat64, stat64)
STATFN(lstat, stat)
STATFN(lstat64, stat64)

#define FSTATFN(name, T)                                                      \
    EXPORT int name(int fd, struct T *st)                                     \
    {                                                                         \
        if (OFF() || !ARENA(st))                                              \
            return REAL(name)(fd, st);                                        \
        int r;                                                                \
        struct pinobj o[] = {{st, sizeof *st, W}};                               \
        PINNED(r, o, REAL(name)(fd, st));                                     \
        return r;                                                             \
    }
FSTATFN(fstat, stat)
FSTATFN(fstat64, stat64)

#define FSTATATFN(name, T)                                                    \
    EXPORT int name(int dirfd, const char *restrict path, struct T *restrict st, int flags) \
    {                                                                         \
        if (OFF() || (!ARENA(path) && !ARENA(st)))                            \
            return REAL(name)(dirfd, path, st, flags);                        \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path), {st, sizeof *st, W}};               \
        PINNED(r, o, REAL(name)(dirfd, path, st, flags));                     \
        return r;                                                             \
    }
FSTATATFN(fstatat, stat)
FSTATATFN(fstatat64, stat64)

EXPORT int statx(int dirfd, const char *restrict path, int flags, unsigned mask,
                 struct statx *restrict st)
{
    if (OFF() || (!ARENA(path) && !ARENA(st)))
        return REAL(statx)(dirfd, path, flags, mask, st);
    int r;
    struct pinobj o[] = {PATH_OBJ(path), {st, sizeof *st, W}};
    PINNED(r, o, REAL(statx)(dirfd, path, flags, mask, st));
    return r;
}

#ifndef __OPEN_NEEDS_MODE
#define __OPEN_NEEDS_MODE(f) (((f) & O_CREAT) != 0 || ((f) & O_TMPFILE) == O_TMPFILE)
#endif

#define OPENFN(name)                                                          \
    EXPORT int name(const char *path, int flags, ...)                         \
    {                                                                         \
        mode_t mode = 0;                                                      \
        if (__OPEN_NEEDS_MODE(flags)) {                                       \
            va_list ap;                                                       \
            va_start(ap, flags);                                              \
            mode = va_arg(ap, mode_t);                                        \
            va_end(ap);                                                       \
        }                                                                     \
        if (OFF() || !ARENA(path))                                            \
            return REAL(name)(path, flags, mode);                             \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path)};                                    \
        PINNED(r, o, REAL(name)(path, flags, mode));                          \
        return r;                                                             \
    }
OPENFN(open)
OPENFN(open64)

#define OPENATFN(name)                                                        \
    EXPORT int name(int dirfd, const char *path, int flags, ...)              \
    {                                                                         \
        mode_t mode = 0;                                                      \
        if (__OPEN_NEEDS_MODE(flags)) {                                       \
            va_list ap;                                                       \
            va_start(ap, flags);                                              \
            mode = va_arg(ap, mode_t);                                        \
            va_end(ap);                                                       \
        }                                                                     \
        if (OFF() || !ARENA(path))                                            \
            return REAL(name)(dirfd, path, flags, mode);                      \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path)};                                    \
        PINNED(r, o, REAL(name)(dirfd, path, flags, mode));                   \
        return r;                                                             \
    }
OPENATFN(openat)
OPENATFN(openat64)

/* A call whose only memory is a path. */
#define PATHFN(name, params, args)                                            \
    EXPORT int name params                                                    \
    {                                                                         \
        if (OFF() || !ARENA(path))                                            \
            return REAL(name) args;                                           \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path)};                                    \
        PINNED(r, o, REAL(name) args);                                        \
        return r;                                                             \
    }
PATHFN(access, (const char *path, int mode), (path, mode))
PATHFN(unlink, (const char *path), (path))
PATHFN(mkdir, (const char *path, mode_t mode), (path, mode))
PATHFN(rmdir, (const char *path), (path))

EXPORT ssize_t readlink(const char *restrict path, char *restrict buf, size_t len)
{
    if (OFF() || (!ARENA(path) && !overlaps(buf, len)))
        return REAL(readlink)(path, buf, len);
    ssize_t r;
    struct pinobj o[] = {PATH_OBJ(path), {buf, len, W}};
    PINNED(r, o, REAL(readlink)(path, buf, len));
    return r;
}

/* ---- -D_FORTIFY_SOURCE ------------------------------------------------- */

/* The size check is the C library's: a request larger than the buffer goes
 * to its function, which reports the overflow and aborts; the rest is the
 * function above. */
EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (OFF() || n > buflen || !overlaps(buf, n))
        return REAL(__read_chk)(fd, buf, n, buflen);
    return read(fd, buf, n);
}

EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
    if (OFF() || n > buflen || !overlaps(buf, n))
        return REAL(__pread_chk)(fd, buf, n, off, buflen);
    return pread(fd, buf, n, off);
}

EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off64_t off, size_t buflen)
{
    if (OFF() || n > buflen || !overlaps(buf, n))
        return REAL(__pread64_chk)(fd, buf, n, off, buflen);
    return pread64(fd, buf, n, off);
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (OFF() || n > buflen || !overlaps(buf, n))
        return REAL(__recv_chk)(fd, buf, n, buflen, flags);
    return recv(fd, buf, n, flags);
}

EXPORT ssize_t __recvfrom_chk(int fd, void *restrict buf, size_t n, size_t buflen, int flags,
                              struct sockaddr *restrict addr, socklen_t *restrict alen)
{
    if (OFF() || n > buflen || (!overlaps(buf, n) && !ARENA(addr) && !ARENA(alen)))
        return REAL(__recvfrom_chk)(fd, buf, n, buflen, flags, addr, alen);
    return recvfrom(fd, buf, n, flags, addr, alen);
}

EXPORT size_t __fread_chk(void *restrict buf, size_t buflen, size_t size, size_t n,
                          FILE *restrict f)
{
    size_t bytes;
    if (OFF() || __builtin_mul_overflow(size, n, &bytes) || bytes > buflen ||
        !overlaps(buf, bytes))
        return REAL(__fread_chk)(buf, buflen, size, n, f);
    return fread(buf, size, n, f);
}

EXPORT ssize_t __readlink_chk(const char *restrict path, char *restrict buf, size_t len,
                              size_t buflen)
{
    if (OFF() || len > buflen || (!ARENA(path) && !overlaps(buf, len)))
        return REAL(__readlink_chk)(path, buf, len, buflen);
    return readlink(path, buf, len);
}

/* open without a mode: the C library checks that the flags need none. */
#define OPEN2FN(name)                                                         \
    EXPORT int name(const char *path, int flags)                              \
    {                                                                         \
        if (OFF() || !ARENA(path))                                            \
            return REAL(name)(path, flags);                                   \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path)};                                 \
        PINNED(r, o, REAL(name)(path, flags));                                \
        return r;                                                             \
    }
#define OPENAT2FN(name)                                                       \
    EXPORT int name(int dirfd, const char *path, int flags)                   \
    {                                                                         \
        if (OFF() || !ARENA(path))                                            \
            return REAL(name)(dirfd, path, flags);                            \
        int r;                                                                \
        struct pinobj o[] = {PATH_OBJ(path)};                                 \
        PINNED(r, o, REAL(name)(dirfd, path, flags));                         \
        return r;                                                             \
    }

OPEN2FN(__open_2)
OPEN2FN(__open64_2)
OPENAT2FN(__openat_2)
OPENAT2FN(__openat64_2)
