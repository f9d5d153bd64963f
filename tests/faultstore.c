/*
 * faultstore.c - a store that fails on request, for the tests only.
 *
 * See faultstore.h.  The wrapper keeps, for each store it wraps, the
 * store's address and its own table of functions, in a fixed array filled
 * before the pager uses the store through the wrapper; the functions called
 * on the fault path look the store up there and read the rule with atomic
 * loads.  Nothing here allocates, locks or prints.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultstore.h"
#include "internal.h"

#define FS_MAX_STORES 8

struct wrapped {
    struct upager__store *_Atomic store;        /* NULL: free slot        */
    const struct upager__store_ops *_Atomic ops; /* the store's own table  */
};

struct rule {
    _Atomic int mode;     /* enum fs_mode; FS_PASS while being changed */
    _Atomic uint64_t n;
    _Atomic int err;
    _Atomic uint64_t seen; /* calls since the rule was set            */
    _Atomic uint64_t lo, hi; /* only calls touching [lo, hi); hi 0: all */
};

static struct wrapped stores[FS_MAX_STORES];
static struct rule rules[FS_NOPS];
static _Atomic uint64_t calls[FS_NOPS], failures[FS_NOPS];
static _Atomic uint64_t io_thread_calls[FS_NOPS], io_thread_failures[FS_NOPS];
static _Atomic pid_t test_tid; /* the thread that wrapped the anonymous store */
static _Atomic int io_thread_err[FS_NOPS]; /* fail every call from other threads */

static const struct upager__store_ops *orig_ops(struct upager__store *s)
{
    for (int i = 0; i < FS_MAX_STORES; i++) {
        if (atomic_load_explicit(&stores[i].store, memory_order_acquire) == s)
            return atomic_load_explicit(&stores[i].ops, memory_order_acquire);
    }
    return NULL; /* cannot happen: only wrapped stores reach here */
}

/* Counts a call of kind op; returns 0 to let it through, or the errno
 * (FS_SHORT included) it must fail with. */
static int decide(enum fs_op op, uint64_t off, uint64_t len)
{
    struct rule *r = &rules[op];
    atomic_fetch_add_explicit(&calls[op], 1, memory_order_relaxed);
    bool io_thread = (pid_t)syscall(SYS_gettid) != atomic_load(&test_tid);
    if (io_thread) {
        atomic_fetch_add_explicit(&io_thread_calls[op], 1, memory_order_relaxed);
        int e = atomic_load(&io_thread_err[op]);
        if (e) {
            atomic_fetch_add_explicit(&failures[op], 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&io_thread_failures[op], 1, memory_order_relaxed);
            return e;
        }
    }
    int mode = atomic_load_explicit(&r->mode, memory_order_acquire);
    if (mode == FS_PASS)
        return 0;
    uint64_t hi = atomic_load_explicit(&r->hi, memory_order_relaxed);
    if (hi && (off >= hi || off + len <= atomic_load_explicit(&r->lo, memory_order_relaxed)))
        return 0; /* outside the range the rule watches */
    uint64_t k = atomic_fetch_add_explicit(&r->seen, 1, memory_order_relaxed) + 1;
    uint64_t n = atomic_load_explicit(&r->n, memory_order_relaxed);
    bool fail = (mode == FS_NTH && k == n) || (mode == FS_EVERY && n && k % n == 0) ||
                (mode == FS_FROM && k >= n);
    if (!fail)
        return 0;
    atomic_fetch_add_explicit(&failures[op], 1, memory_order_relaxed);
    if (io_thread)
        atomic_fetch_add_explicit(&io_thread_failures[op], 1, memory_order_relaxed);
    return atomic_load_explicit(&r->err, memory_order_relaxed);
}

static int fs_read(struct upager__store *s, void *buf, size_t len, uint64_t off)
{
    const struct upager__store_ops *o = orig_ops(s);
    int err = decide(FS_READ, off, len);
    if (err == FS_SHORT) {
        size_t half = len / 2;
        int e = half ? o->read(s, buf, half, off) : 0;
        memset((char *)buf + half, 0xA5, len - half);
        (void)e;
        return EIO;
    }
    if (err)
        return err;
    return o->read(s, buf, len, off);
}

static int fs_write(struct upager__store *s, const void *buf, size_t len, uint64_t off)
{
    const struct upager__store_ops *o = orig_ops(s);
    int err = decide(FS_WRITE, off, len);
    if (err == FS_SHORT) { /* a torn write: the first half lands */
        if (len / 2)
            o->write(s, buf, len / 2, off);
        return EIO;
    }
    if (err)
        return err;
    return o->write(s, buf, len, off);
}

static int fs_discard(struct upager__store *s, uint64_t off, uint64_t len)
{
    return orig_ops(s)->discard(s, off, len);
}

static int fs_sync(struct upager__store *s)
{
    int err = decide(FS_SYNC, 0, UINT64_MAX);
    if (err)
        return err == FS_SHORT ? EIO : err;
    return orig_ops(s)->sync(s);
}

static void fs_close(struct upager__store *s)
{
    orig_ops(s)->close(s);
}

static const struct upager__store_ops fs_ops = {
    .version = UPAGER__STORE_VERSION,
    .read = fs_read,
    .write = fs_write,
    .discard = fs_discard,
    .sync = fs_sync,
    .close = fs_close,
};

int fs_wrap(struct upager__store *s)
{
    if (s->ops == &fs_ops)
        return EBUSY;
    for (int i = 0; i < FS_MAX_STORES; i++) {
        if (atomic_load(&stores[i].store) == NULL) {
            atomic_store(&stores[i].ops, s->ops);
            atomic_store(&stores[i].store, s);
            /* From here on the pager calls through the wrapper. */
            __atomic_store_n(&s->ops, &fs_ops, __ATOMIC_RELEASE);
            return 0;
        }
    }
    return ENOSPC;
}

void fs_unwrap_all(void)
{
    for (int i = 0; i < FS_MAX_STORES; i++) {
        struct upager__store *s = atomic_load(&stores[i].store);
        if (s == NULL)
            continue;
        __atomic_store_n(&s->ops, atomic_load(&stores[i].ops), __ATOMIC_RELEASE);
        /* The slot stays: a call already inside the wrapper still finds
         * the store's own functions. */
    }
}

size_t fs_wrap_anon(void)
{
    if (upager_init() != 0)
        return 0;
    atomic_store(&test_tid, (pid_t)syscall(SYS_gettid));
    int err = fs_wrap(&upager__g.anon);
    if (err && err != EBUSY)
        return 0;
    return upager__g.page_size;
}

struct upager__store *fs_mapping_store(const void *addr)
{
    struct upager__store *found = NULL;
    pthread_mutex_lock(&upager__g.alloc_lock);
    for (struct upager__mapping *m = upager__g.mappings; m; m = m->next) {
        if (PAGE_ADDR(m->first) == (const char *)addr) {
            found = &m->store;
            break;
        }
    }
    pthread_mutex_unlock(&upager__g.alloc_lock);
    return found;
}

void fs_rule(enum fs_op op, enum fs_mode mode, uint64_t n, int err)
{
    struct rule *r = &rules[op];
    atomic_store_explicit(&r->mode, FS_PASS, memory_order_release);
    atomic_store(&r->n, n);
    atomic_store(&r->err, err);
    atomic_store(&r->seen, 0);
    atomic_store(&r->lo, 0);
    atomic_store(&r->hi, 0);
    atomic_store_explicit(&r->mode, mode, memory_order_release);
}

void fs_rule_range(enum fs_op op, enum fs_mode mode, uint64_t n, int err, uint64_t lo,
                   uint64_t hi)
{
    struct rule *r = &rules[op];
    fs_rule(op, FS_PASS, 0, 0);
    atomic_store(&r->n, n);
    atomic_store(&r->err, err);
    atomic_store(&r->lo, lo);
    atomic_store(&r->hi, hi);
    atomic_store_explicit(&r->mode, mode, memory_order_release);
}

uint64_t fs_calls(enum fs_op op)
{
    return atomic_load(&calls[op]);
}

uint64_t fs_failures(enum fs_op op)
{
    return atomic_load(&failures[op]);
}

void fs_fail_io_threads(enum fs_op op, int err)
{
    atomic_store(&io_thread_err[op], err);
}

uint64_t fs_io_thread_calls(enum fs_op op)
{
    return atomic_load(&io_thread_calls[op]);
}

uint64_t fs_io_thread_failures(enum fs_op op)
{
    return atomic_load(&io_thread_failures[op]);
}

void fs_reset_counts(void)
{
    for (int i = 0; i < FS_NOPS; i++) {
        atomic_store(&calls[i], 0);
        atomic_store(&failures[i], 0);
        atomic_store(&io_thread_calls[i], 0);
        atomic_store(&io_thread_failures[i], 0);
    }
}
