/*
 * os.c - thin wrappers over the system calls that change the arena.
 *
 * Each returns 0 or an errno value and is async-signal-safe (the fault path
 * calls them).  They take page indices, not addresses, so that the page
 * arithmetic lives in one place.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

static _Atomic uint32_t protect_gen; /* source of upager__page.gen values */

/* Sets the protection of arena pages [first, first+n), and gives each page a
 * new protection generation (fault.c's retry rule relies on it: a page whose
 * generation did not change kept its protection).  On failure (ENOMEM at
 * vm.max_map_count) the kernel may have changed part of the range; the
 * generations are new all the same.  Precondition: the caller holds the
 * locks of those pages. */
int upager__protect(size_t first, size_t n, int prot)
{
    if (n == 0)
        return 0;
    uint32_t gen = atomic_fetch_add_explicit(&protect_gen, 1, memory_order_relaxed) + 1;
    for (size_t i = first; i < first + n; i++)
        PG(i)->gen = gen;
    if (mprotect(PAGE_ADDR(first), n << upager__g.page_shift, prot) != 0) {
        atomic_fetch_add_explicit(&upager__g.st.map_errors, 1, memory_order_relaxed);
        return errno;
    }
    return 0;
}

int upager__protect_blocks(size_t page, unsigned blk, unsigned n, int prot)
{
    struct upager__global *g = &upager__g;
    PG(page)->gen = atomic_fetch_add_explicit(&protect_gen, 1, memory_order_relaxed) + 1;
    if (mprotect(PAGE_ADDR(page) + ((size_t)blk << g->block_shift), (size_t)n << g->block_shift,
                 prot) != 0) {
        atomic_fetch_add_explicit(&g->st.map_errors, 1, memory_order_relaxed);
        return errno;
    }
    return 0;
}

/* Makes arena pages [first, first+n) PROT_NONE as they are released: no
 * generations, so that the entries of pages never used stay untouched. */
int upager__protect_free(size_t first, size_t n)
{
    if (n && mprotect(PAGE_ADDR(first), n << upager__g.page_shift, PROT_NONE) != 0) {
        atomic_fetch_add_explicit(&upager__g.st.map_errors, 1, memory_order_relaxed);
        return errno;
    }
    return 0;
}

/* The memfd and its offset for a page. */
static int frame_fd(size_t page, off_t *off)
{
    size_t sp = upager__g.shard_pages;
    *off = (off_t)(page % sp) << upager__g.page_shift;
    return upager__g.memfd[page / sp];
}

/* Pages of [first, first+n) that share first's memfd. */
static size_t in_shard(size_t first, size_t n)
{
    size_t left = upager__g.shard_pages - first % upager__g.shard_pages;
    return n < left ? n : left;
}

/* Writes into a memfd and hole punches take the file's lock for writing,
 * and a thread that waits for it in the kernel spins while the holder
 * runs: with the I/O threads filling frames and reclaim punching others,
 * a fifth of the CPU went to that spinning (seq reads at 1G, two CPUs).
 * Waiting on this lock instead, they sleep.  Held around one system call,
 * with no other lock taken inside. */
static upager__lock_t *memfd_lock(size_t page)
{
    return &upager__g.memfd_lock[page / upager__g.shard_pages];
}

/* Gives the frames of pages [first, first+n) back to the kernel: the memfd
 * range becomes a hole, and every mapping of it loses its entries. */
int upager__frames_drop(size_t first, size_t n)
{
    while (n) {
        size_t k = in_shard(first, n);
        off_t off;
        int fd = frame_fd(first, &off);
        upager__lock(memfd_lock(first));
        int r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                          (off_t)k << upager__g.page_shift);
        upager__unlock(memfd_lock(first));
        if (r != 0) {
            if (errno == EINTR)
                continue;
            atomic_fetch_add_explicit(&upager__g.st.map_errors, 1, memory_order_relaxed);
            return errno;
        }
        first += k;
        n -= k;
    }
    return 0;
}

/* Moves len bytes between buf and the frames from byte `at` of `page` on,
 * through the memfds (pwrite when `in`, else pread; holes read as zeros). */
static int frame_io(size_t page, size_t at, char *buf, size_t len, bool in)
{
    size_t done = 0;
    while (done < len) {
        size_t pos = at + done;
        size_t pg = page + (pos >> upager__g.page_shift);
        off_t off;
        int fd = frame_fd(pg, &off);
        size_t within = pos & (upager__g.page_size - 1);
        size_t to_end = ((upager__g.shard_pages - pg % upager__g.shard_pages)
                         << upager__g.page_shift) - within; /* bytes left in the memfd */
        size_t chunk = len - done < to_end ? len - done : to_end;
        off += (off_t)within;
        ssize_t r;
        if (in) {
            upager__lock(memfd_lock(pg));
            r = pwrite(fd, buf + done, chunk, off);
            upager__unlock(memfd_lock(pg));
        } else {
            r = pread(fd, buf + done, chunk, off);
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (r == 0) {
            if (in)
                return EIO;
            memset(buf + done, 0, len - done);
            break;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Writes len bytes into the frames from byte `at` of `page` on, through
 * the memfd, while the arena pages are still inaccessible: nobody sees
 * them half-filled. */
int upager__frame_fill_at(size_t page, size_t at, const void *buf, size_t len)
{
    return frame_io(page, at, (char *)buf, len, true);
}

/* Reads the frames of npages pages through the memfd (the arena pages may
 * be inaccessible).  Holes read as zeros. */
int upager__frame_read(size_t page, void *buf, size_t npages)
{
    return frame_io(page, 0, buf, npages << upager__g.page_shift, false);
}

/* Reads a small text file (for /proc and /sys); NUL-terminates. */
int upager__read_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    ssize_t n = read(fd, buf, len - 1);
    int err = n < 0 ? errno : 0;
    close(fd);
    buf[n < 0 ? 0 : n] = '\0';
    return err;
}
