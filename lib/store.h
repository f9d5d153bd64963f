/*
 * store.h - the backing-store interface.
 *
 * A store keeps the contents of pages that are not resident.  The pager
 * talks to it through a table of functions, so that other stores (a test
 * store that injects failures, a file mapped by upager_map_file) plug in
 * without touching the fault path.  Every function is called from the fault
 * path or from the clock, so an implementation must be async-signal-safe:
 * system calls only, no malloc, no stdio, no locks of its own that could be
 * held by the interrupted thread.
 *
 * All functions return 0 or an errno value.
 */
#ifndef UPAGER_STORE_H
#define UPAGER_STORE_H

#include <stddef.h>
#include <stdint.h>

#define UPAGER__STORE_VERSION 2

struct upager__store;

/* One piece of a batched write: len bytes of buf at off. */
struct upager__extent {
    const void *buf;
    size_t len;
    uint64_t off;
};

struct upager__store_ops {
    int version; /* UPAGER__STORE_VERSION */
    /* Reads len bytes at off into buf; bytes past the end of the store,
     * or in a hole, read as zeros. */
    int (*read)(struct upager__store *s, void *buf, size_t len, uint64_t off);
    /* Writes len bytes of buf at off, all of them or an error. */
    int (*write)(struct upager__store *s, const void *buf, size_t len, uint64_t off);
    /* Forgets [off, off+len): later reads return zeros, space is freed. */
    int (*discard)(struct upager__store *s, uint64_t off, uint64_t len);
    /* Makes the writes so far durable. */
    int (*sync)(struct upager__store *s);
    /* Releases the store. */
    void (*close)(struct upager__store *s);
    /* Optional (NULL: the pager calls write for each extent).  Writes n
     * extents, in any order or all at once (pipelined), and sets err[i] to
     * 0 or the errno of extent i: an extent is durable as far as write
     * makes it only when its err[i] is 0.  Returns 0 when every extent was
     * written, else the first errno.  Called by the I/O thread, never from
     * the fault path, with n <= UPAGER__STORE_BATCH. */
    int (*write_many)(struct upager__store *s, const struct upager__extent *v, size_t n,
                      int *err);
};

#define UPAGER__STORE_BATCH 64 /* most extents in one write_many */

struct upager__store {
    const struct upager__store_ops *ops;
    int fd;          /* the file, for file stores                   */
    int direct;      /* opened with O_DIRECT                         */
    int partial;     /* reads part of a page too, at a multiple of 4K
                        (file stores); 0: whole pages only (Redis)    */
    uint64_t size;   /* bytes of the file, for mapped-file stores    */
    int prealloc;    /* allocate before writing (the anonymous store,
                        file stores): writes that allocate blocks take
                        the file's lock alone, and reads wait for them */
    void *priv;      /* for other implementations (test stores)     */
};

/* The anonymous store: a file created unlinked (O_TMPFILE) in dir, sparse.
 * With direct, I/O bypasses the page cache (O_DIRECT). */
int upager__store_tmp_open(struct upager__store *s, const char *dir, int direct);

/* A store on an existing file descriptor (taken over: close closes it). */
void upager__store_fd_init(struct upager__store *s, int fd, uint64_t size);

extern const struct upager__store_ops upager__store_file_ops;
extern const struct upager__store_ops upager__store_redis_ops; /* store_redis.c */

#endif /* UPAGER_STORE_H */
