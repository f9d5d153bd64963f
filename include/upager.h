/*
 * upager.h - arrays larger than RAM, paged by the program itself.
 *
 * upager reserves a large virtual region, keeps the pages that are not
 * resident inaccessible, resolves the faults on them by loading the page
 * from a disk-backed store, and evicts with a clock so that the resident
 * memory stays under a budget.  This is its one public header.
 *
 * Functions that return int return 0 on success or an errno value
 * (EINVAL, ENOMEM, EIO, ENOSPC, EBUSY, ...), never -1.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef UPAGER_H
#define UPAGER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define UPAGER_API __attribute__((visibility("default")))
#else
#define UPAGER_API
#endif

/* ------------------------------------------------------------------------
 * Allocation: the malloc contract.
 *
 * The memory returned lives in the paged arena: it may be larger than RAM
 * in total, only `budget` bytes of it are resident at any time.  On failure
 * the functions return NULL and set errno (ENOMEM, or EINVAL when the
 * library could not be initialised from its configuration).
 * ---------------------------------------------------------------------- */

/* Allocates `size` bytes, aligned to 16 bytes.  size 0 returns a unique
 * pointer that may be passed to upager_free(). */
UPAGER_API void *upager_malloc(size_t size);

/* Allocates an array of `nmemb` elements of `size` bytes, zeroed.
 * nmemb * size overflowing returns NULL with errno ENOMEM. */
UPAGER_API void *upager_calloc(size_t nmemb, size_t size);

/* Resizes the block at `ptr` to `size` bytes, keeping its contents up to
 * the smaller size.  ptr NULL behaves as upager_malloc(size); size 0 frees
 * ptr and returns NULL.  On failure the old block is left untouched. */
UPAGER_API void *upager_realloc(void *ptr, size_t size);

/* Allocates `size` bytes aligned to `alignment`, a power of two.
 * Returns NULL with errno EINVAL when alignment is not a power of two. */
UPAGER_API void *upager_aligned_alloc(size_t alignment, size_t size);

/* Frees a block returned by the functions above; NULL is a no-op.  A
 * pointer upager did not return, or one freed already, aborts the process
 * with a message, as glibc does. */
UPAGER_API void upager_free(void *ptr);

/* Returns the number of bytes usable at `ptr` (at least the size asked
 * for), or 0 for NULL. */
UPAGER_API size_t upager_usable_size(const void *ptr);

/* ------------------------------------------------------------------------
 * Memory mapping: a file on disk seen as paged memory under the budget.
 * ---------------------------------------------------------------------- */

#define UPAGER_MAP_READ   0x1 /* read-only: a write is a genuine fault           */
#define UPAGER_MAP_WRITE  0x2 /* read-write (implies READ): dirty pages go back   */
#define UPAGER_MAP_CREATE 0x4 /* with WRITE: create the file, or extend it to `length` */

/* Maps `length` bytes of the file at `path` (0: the whole file).  Pages are
 * loaded from the file on access and, with UPAGER_MAP_WRITE, written back
 * to it when evicted, synced or unmapped.  Bytes past the end of the file
 * in its last page read as zeros and are never written.
 * Returns the address, or NULL with errno: ENOENT (no such file), EACCES
 * (permission), EINVAL (a directory, an empty file with length 0, a length
 * beyond the file without UPAGER_MAP_CREATE, CREATE without WRITE, unknown
 * flags), ENOMEM (no address space left). */
UPAGER_API void *upager_map_file(const char *path, size_t length, int flags);

/* Writes back the dirty pages of the mapping range [addr, addr+length) and
 * calls fdatasync on the file.  For arena memory that is not a file mapping
 * it is a no-op.  Returns 0, or EINVAL (outside the arena), EIO/ENOSPC. */
UPAGER_API int upager_sync(const void *addr, size_t length);

/* Syncs, then releases the mapping that starts at `addr`.  Returns 0, or
 * EINVAL (not the start of a mapping), or the error of the final sync (the
 * mapping is then kept). */
UPAGER_API int upager_unmap(void *addr);

/* ------------------------------------------------------------------------
 * Residency control.
 * ---------------------------------------------------------------------- */

#define UPAGER_PIN_WRITE 0x1 /* pin writable (for read(2) into the buffer) */

/* Faults in the pages of [addr, addr+length) and keeps them resident until
 * upager_unpin.  Pins nest.  Pinned memory may be handed to system calls:
 * the kernel does not raise a fault that upager could resolve for them.
 * (The common calls, read, write, send, recv, stat, pthread and C11
 * synchronization and the others listed in upager(3), pin for themselves:
 * libupager defines them.)
 * Returns 0, or EINVAL (outside the arena, or memory that is not live),
 * ENOMEM (the pinned bytes would exceed the budget; nothing is pinned),
 * EIO (a page could not be read). */
UPAGER_API int upager_pin(const void *addr, size_t length, int flags);

/* Undoes one upager_pin of the same range.  Returns 0 or EINVAL (not pinned). */
UPAGER_API int upager_unpin(const void *addr, size_t length);

enum {
    UPAGER_ADVICE_NORMAL,     /* default read-ahead and eviction            */
    UPAGER_ADVICE_SEQUENTIAL, /* read ahead harder, evict behind            */
    UPAGER_ADVICE_RANDOM,     /* no read-ahead                              */
    UPAGER_ADVICE_WILLNEED,   /* start loading now                          */
    UPAGER_ADVICE_DONTNEED    /* evict early; the contents are kept         */
};

/* Gives advice on the expected use of [addr, addr+length).  WILLNEED
 * starts loading in the background and returns at once.  Returns 0, or
 * EINVAL (outside the arena, or an unknown advice), EIO/ENOSPC (DONTNEED:
 * a dirty page could not be written back and stays resident). */
UPAGER_API int upager_advise(const void *addr, size_t length, int advice);

/* ------------------------------------------------------------------------
 * Configuration.
 *
 * Names are those of the environment variables without the UPAGER_ prefix,
 * in any case: "budget", "page_size", "dir", "arena", "readahead",
 * "direct_io", "stats", "verbose".  Environment variables override values
 * set here, so that a program's users can still tune it.
 * ---------------------------------------------------------------------- */

/* Sets option `name` to `value`, with the parser and checks of the
 * environment variables.  Before initialisation any option may be set;
 * afterwards only "budget" (as upager_set_budget), "stats" and "verbose".
 * Returns 0, or EINVAL (unknown name or bad value, with one line on
 * stderr), EBUSY (the option cannot change once the library started). */
UPAGER_API int upager_configure(const char *name, const char *value);

/* Initialises the library now.  Optional: the first call of any other
 * function initialises it.  Returns 0, or the errno of a failed
 * initialisation (EINVAL for a bad configuration); a failed initialisation
 * stays failed. */
UPAGER_API int upager_init(void);

/* Changes the budget at run time.  Lowering it evicts down to the new
 * budget before returning.  Returns 0, or EBUSY (below the bytes pinned;
 * the budget is left as it was), EINVAL (below one page, or above what the
 * page size allows under the kernel's mapping limit), EIO/ENOSPC (dirty
 * pages could not be written back; the budget is left as it was). */
UPAGER_API int upager_set_budget(size_t bytes);

/* ------------------------------------------------------------------------
 * Statistics.
 * ---------------------------------------------------------------------- */

struct upager_stats {
    uint64_t faults;              /* every fault the library resolved            */
    uint64_t major_faults;        /* ... that waited for a read from the store   */
    uint64_t evictions;           /* pages taken out of memory                   */
    uint64_t writebacks;          /* dirty pages written to the store            */
    uint64_t bytes_read;          /* from the store, read-ahead included         */
    uint64_t bytes_written;       /* to the store                                */
    uint64_t io_errors;           /* store reads/writes that failed              */
    size_t   resident_bytes;      /* arena pages in memory now (pinned included) */
    size_t   peak_resident_bytes; /* highest resident_bytes since start          */
    size_t   budget_bytes;        /* resident bytes allowed                      */
    size_t   page_size;           /* the pager's page size                       */
    size_t   allocated_bytes;     /* live upager_malloc bytes                    */
    uint64_t dirty_evictions;     /* evictions of dirty pages                    */
    uint64_t pinned_bytes;        /* bytes pinned now                            */
    uint64_t map_errors;          /* mprotect/fallocate calls that failed (e.g.  */
                                  /* at vm.max_map_count); nothing was lost      */
};

/* Fills `out` with the current counters.  Returns 0, or EINVAL when out is
 * NULL, or the errno of a failed initialisation. */
UPAGER_API int upager_get_stats(struct upager_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* UPAGER_H */
