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

/* Sets the protection of arena pages [first, first+n).  Precondition: the
 * caller holds the locks of those pages (or they are not live). */
int upager__protect(size_t first, size_t n, int prot)
{
    if (n == 0)
        return 0;
    if (mprotect(PAGE_ADDR(first), n << upager__g.page_shift, prot) != 0)
        return errno;
    return 0;
}

/* Gives the frames of pages [first, first+n) back to the kernel: the memfd
 * range becomes a hole, and every mapping of it loses its entries. */
int upager__frames_drop(size_t first, size_t n)
{
    if (n == 0)
        return 0;
    off_t off = (off_t)first << upager__g.page_shift;
    off_t len = (off_t)n << upager__g.page_shift;
    if (fallocate(upager__g.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off,
                  len) != 0)
        return errno;
    return 0;
}

/* Writes the contents of npages pages into their frames through the memfd,
 * while the arena pages are still inaccessible: nobody sees them half-filled. */
int upager__frame_fill(size_t page, const void *buf, size_t npages)
{
    size_t len = npages << upager__g.page_shift, done = 0;
    off_t off = (off_t)page << upager__g.page_shift;
    while (done < len) {
        ssize_t n = pwrite(upager__g.memfd, (const char *)buf + done, len - done,
                           off + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        done += (size_t)n;
    }
    return 0;
}

/* Reads a page's frame through the memfd (the arena page may be
 * inaccessible).  Holes read as zeros. */
int upager__frame_copy(size_t page, void *buf)
{
    size_t len = upager__g.page_size, done = 0;
    off_t off = (off_t)page << upager__g.page_shift;
    while (done < len) {
        ssize_t n = pread(upager__g.memfd, (char *)buf + done, len - done,
                          off + (off_t)done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0) {
            memset((char *)buf + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
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
