/*
 * store_file.c - the file store: pages kept in a file at their own offset.
 *
 * Used for the anonymous store (a file created unlinked in UPAGER_DIR, so
 * it never outlives the process) and for files mapped with upager_map_file.
 * Called from the fault path and the clock: system calls only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int file_read(struct upager__store *s, void *buf, size_t len, uint64_t off)
{
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(s->fd, p + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0) { /* end of file: the rest reads as zeros */
            memset(p + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
}

/* A direct write that allocates blocks, or extends the file, holds the
 * file's lock (ext4, xfs) for the whole transfer, and every read of the
 * store waits for it: the write-back of a fill would hold up the loads of
 * the program's next faults.  Blocks allocated first (fallocate, no I/O:
 * unwritten extents, read as zeros) make the write an overwrite, which
 * shares the lock with reads. */
static int file_prealloc(struct upager__store *s, size_t len, uint64_t off)
{
    if (fallocate(s->fd, 0, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
        s->prealloc = 0; /* not on this file system: write as it is */
        return 0;
    }
    return errno; /* ENOSPC, EIO: the write would fail too; nothing lost */
}

static int file_write(struct upager__store *s, const void *buf, size_t len, uint64_t off)
{
    const char *p = buf;
    size_t done = 0;
    if (s->prealloc) {
        int err = file_prealloc(s, len, off);
        if (err)
            return err;
    }
    while (done < len) {
        ssize_t n = pwrite(s->fd, p + done, len - done, (off_t)(off + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (n == 0)
            return EIO;
        done += (size_t)n;
    }
    return 0;
}

static int file_discard(struct upager__store *s, uint64_t off, uint64_t len)
{
    if (len == 0)
        return 0;
    if (fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
                  (off_t)len) != 0) {
        /* A file system without hole punching keeps the old bytes; the
         * pager never reads a discarded page before writing it again. */
        if (errno == EOPNOTSUPP || errno == ENOSYS)
            return 0;
        return errno;
    }
    return 0;
}

static int file_sync(struct upager__store *s)
{
    while (fdatasync(s->fd) != 0) {
        if (errno != EINTR)
            return errno;
    }
    return 0;
}

static void file_close(struct upager__store *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

const struct upager__store_ops upager__store_file_ops = {
    .version = UPAGER__STORE_VERSION,
    .read = file_read,
    .write = file_write,
    .discard = file_discard,
    .sync = file_sync,
    .close = file_close,
};

void upager__store_fd_init(struct upager__store *s, int fd, uint64_t size)
{
    memset(s, 0, sizeof *s);
    s->ops = &upager__store_file_ops;
    s->fd = fd;
    s->size = size;
    s->partial = 1;
}

int upager__store_tmp_open(struct upager__store *s, const char *dir, int direct)
{
    int flags = O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0);
    int fd = open(dir, O_TMPFILE | flags, 0600);
    if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
        /* No O_TMPFILE on this file system: create, then unlink at once. */
        char path[4096];
        size_t n = strlen(dir);
        if (n + sizeof "/upager-XXXXXX" > sizeof path)
            return ENAMETOOLONG;
        memcpy(path, dir, n);
        memcpy(path + n, "/upager-XXXXXX", sizeof "/upager-XXXXXX");
        fd = mkostemp(path, O_CLOEXEC | (direct ? O_DIRECT : 0));
        if (fd >= 0)
            unlink(path);
    }
    if (fd < 0)
        return errno;
    upager__store_fd_init(s, fd, 0);
    s->direct = direct;
    s->prealloc = 1;
    return 0;
}
