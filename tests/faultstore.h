/*
 * faultstore.h - a store that fails on request, for the tests only.
 *
 * fs_wrap() puts itself between the pager and a store it has already
 * opened (the anonymous store, upager__g.anon, once upager_init returned;
 * or the store of a file mapping): the original table of functions is
 * kept, and the table installed in its place calls through to it, except
 * for the calls that a rule says must fail.  A rule counts the calls of one
 * kind (read, write or sync) from the moment it is set, and fails
 *   FS_NTH    the nth call only,
 *   FS_EVERY  every nth call (n, 2n, 3n, ...),
 *   FS_FROM   the nth call and every call after it,
 * with an errno (EIO, ENOSPC, ...), or with FS_SHORT: a read that moves only
 * the first half of the bytes asked for, leaves garbage (0xA5) in the
 * rest, and reports EIO, as a store whose pread stopped short would.
 * fs_pass() lifts the rule: the store has recovered.
 *
 * The wrapped functions run on the fault path, inside the SIGSEGV
 * handler: they use atomics only, no lock, no allocation, no stdio.
 * Rules are set by the test's own thread; counters may be read anywhere.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef UPAGER_FAULTSTORE_H
#define UPAGER_FAULTSTORE_H

#include <stdint.h>

#include "store.h"

enum fs_op { FS_READ, FS_WRITE, FS_SYNC, FS_NOPS };
enum fs_mode { FS_PASS, FS_NTH, FS_EVERY, FS_FROM };

#define FS_SHORT (-1) /* the "errno" of a short read: half the bytes, then EIO */

/* Wraps store s (whose ops are set) so that rules apply to it.  Returns 0,
 * or EBUSY when s is wrapped already, ENOSPC when too many are. */
int fs_wrap(struct upager__store *s);

/* Puts every wrapped store's own functions back. */
void fs_unwrap_all(void);

/* The anonymous store, wrapped: upager_init, then fs_wrap(&upager__g.anon).
 * Returns the page size, or 0 when either failed. */
size_t fs_wrap_anon(void);

/* The store of the file mapping that starts at addr, or NULL. */
struct upager__store *fs_mapping_store(const void *addr);

/* Sets the rule of one kind of call; counting starts afresh. */
void fs_rule(enum fs_op op, enum fs_mode mode, uint64_t n, int err);

/* The same, for the calls whose bytes [off, off+len) meet [lo, hi) of the
 * store only (hi > lo); the other calls go through and are not counted by
 * the rule. */
void fs_rule_range(enum fs_op op, enum fs_mode mode, uint64_t n, int err, uint64_t lo,
                   uint64_t hi);
static inline void fs_fail_nth(enum fs_op op, uint64_t n, int err)
{
    fs_rule(op, FS_NTH, n, err);
}
static inline void fs_fail_every(enum fs_op op, uint64_t n, int err)
{
    fs_rule(op, FS_EVERY, n, err);
}
static inline void fs_fail_from(enum fs_op op, uint64_t n, int err)
{
    fs_rule(op, FS_FROM, n, err);
}
static inline void fs_pass(enum fs_op op)
{
    fs_rule(op, FS_PASS, 0, 0);
}

/* Calls of this kind since fs_reset_counts (or the start), and how many
 * of them were made to fail. */
uint64_t fs_calls(enum fs_op op);
uint64_t fs_failures(enum fs_op op);
/* The same, counting only calls from other threads than the one that
 * wrapped the anonymous store: the library's I/O threads, in a test that
 * runs one thread. */
uint64_t fs_io_thread_calls(enum fs_op op);
void fs_fail_io_threads(enum fs_op op, int err); /* 0: stop failing them */
uint64_t fs_io_thread_failures(enum fs_op op);
void fs_reset_counts(void);

#endif /* UPAGER_FAULTSTORE_H */
