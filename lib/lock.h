/*
 * lock.h - a futex mutex small enough to sit in every page entry.
 *
 * Used by the fault path, so it must be async-signal-safe: it is a word and
 * two system calls, with no allocation and no thread-library state.  A
 * thread that cannot take the lock sleeps in the kernel; it never spins for
 * long.  (Drepper, "Futexes Are Tricky", mutex type 2.)
 *
 * States of the word: 0 unlocked, 1 locked, 2 locked with sleepers.
 */
#ifndef UPAGER_LOCK_H
#define UPAGER_LOCK_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

typedef _Atomic uint32_t upager__lock_t;

#if defined(__x86_64__) || defined(__i386__)
#define upager__cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define upager__cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define upager__cpu_relax() atomic_signal_fence(memory_order_seq_cst)
#endif

#define UPAGER__LOCK_INIT 0

static inline void upager__futex_wait(_Atomic uint32_t *w, uint32_t val)
{
    int saved = errno;
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
    errno = saved;
}

static inline void upager__futex_wake(_Atomic uint32_t *w, int n)
{
    int saved = errno;
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    errno = saved;
}

static inline int upager__trylock(upager__lock_t *l)
{
    uint32_t c = 0;
    return atomic_compare_exchange_strong_explicit(l, &c, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void upager__lock(upager__lock_t *l)
{
    uint32_t c = 0;
    if (atomic_compare_exchange_strong_explicit(l, &c, 1, memory_order_acquire,
                                                memory_order_relaxed))
        return;
    /* Brief spin: page locks are mostly held for a few microseconds. */
    for (int i = 0; i < 64; i++) {
        c = 0;
        if (atomic_load_explicit(l, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(l, &c, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        upager__cpu_relax();
    }
    if (c != 2)
        c = atomic_exchange_explicit(l, 2, memory_order_acquire);
    while (c != 0) {
        upager__futex_wait(l, 2);
        c = atomic_exchange_explicit(l, 2, memory_order_acquire);
    }
}

static inline void upager__unlock(upager__lock_t *l)
{
    if (atomic_exchange_explicit(l, 0, memory_order_release) == 2)
        upager__futex_wake(l, 1);
}

static inline int upager__is_locked(upager__lock_t *l)
{
    return atomic_load_explicit(l, memory_order_relaxed) != 0;
}

#endif /* UPAGER_LOCK_H */
