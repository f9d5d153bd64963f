/*
 * io.c - moving page contents between the frames and the stores.
 *
 * The I/O path has three parts, apart from the clock's policy:
 *   io.c         the transfers: a run of pages read from its store into
 *                its frames, a run of frames written to its store; the
 *                I/O buffers; which store and offset a page has
 *   ioq.c        the I/O threads: write-back in the background, in
 *                batches, and read-ahead served asynchronously
 *   readahead.c  when to read ahead, and how far
 *
 * A frame is reached through its memfd or through the view (arena.c: the
 * memfds mapped a second time, at an address the program never sees),
 * never through the arena: the arena page stays PROT_NONE while it is
 * filled (nobody sees it half-loaded) and while it is written back (nobody
 * changes it meanwhile), and a system call never touches a PROT_NONE page.
 *
 * A load reads the store into an I/O buffer (with O_DIRECT, the device's
 * DMA: no copy) and writes the buffer into the frames through the memfd:
 * one copy.  Reading straight into the frames through the view was
 * measured too, and is slower: the kernel must fault in and zero each 4K
 * of the view before the DMA, and drop the entries after, where the memfd
 * write allocates the frames in one pass.  A write-back writes the frames
 * to the store straight from the view (with O_DIRECT, DMA: no copy); the
 * frames exist, so nothing is allocated.  The entries that write leaves
 * in the view would count each frame twice in the process's RSS: they are
 * dropped after each write (view_done).  Where the view cannot be had, a
 * write-back goes memfd -> buffer -> store.
 *
 * Everything here is async-signal-safe (the fault path loads pages): system
 * calls, atomics and futexes on buffers allocated at start-up.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>

#include "internal.h"

/* ---- I/O buffers --------------------------------------------------- */

char *upager__bounce_get(void)
{
    struct upager__global *g = &upager__g;
    for (;;) {
        uint32_t m = atomic_load(&g->bounce_free);
        if (m == 0) {
            uint32_t seq = atomic_load(&g->bounce_seq);
            atomic_fetch_add(&g->bounce_waiters, 1);
            if (atomic_load(&g->bounce_free) == 0)
                upager__futex_wait(&g->bounce_seq, seq);
            atomic_fetch_sub(&g->bounce_waiters, 1);
            continue;
        }
        unsigned i = (unsigned)__builtin_ctz(m);
        if (atomic_compare_exchange_weak(&g->bounce_free, &m, m & ~(1u << i)))
            return g->bounce + (size_t)i * g->bounce_size;
    }
}

void upager__bounce_put(char *b)
{
    struct upager__global *g = &upager__g;
    unsigned i = (unsigned)((size_t)(b - g->bounce) / g->bounce_size);
    atomic_fetch_or(&g->bounce_free, 1u << i);
    atomic_fetch_add(&g->bounce_seq, 1);
    if (atomic_load(&g->bounce_waiters)) /* no system call when nobody waits */
        upager__futex_wake(&g->bounce_seq, 1);
}

size_t upager__io_run_max(void)
{
    return upager__g.bounce_size >> upager__g.page_shift;
}

/* ---- where a page lives in its store -------------------------------- */

struct upager__store *upager__page_store(size_t page, uint64_t *off, size_t *len)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    if (p->kind == OWNER_MAP) {
        struct upager__mapping *m = p->owner;
        uint64_t o = (uint64_t)(page - m->first) << g->page_shift;
        uint64_t left = m->file_size > o ? m->file_size - o : 0;
        *off = o;
        *len = left < g->page_size ? (size_t)left : g->page_size;
        return &m->store;
    }
    *off = (uint64_t)page << g->page_shift;
    *len = g->page_size;
    return &g->anon;
}

/* ---- loads ------------------------------------------------------------ */

/* A write through the view (arena.c) left entries in its page tables: the
 * kernel counts a frame mapped twice twice in the process's RSS (and in
 * the OOM killer's score), so they are dropped at once.  On a shared
 * mapping MADV_DONTNEED drops the entries only, never the frames. */
static void view_done(char *at, size_t len)
{
    int saved = errno;
    madvise(at, len, MADV_DONTNEED);
    errno = saved;
}

/* The store of pages [page, page+run), their offset there, and the bytes
 * it has of them (less than run pages at the end of a mapped file). */
static struct upager__store *run_extent(size_t page, size_t run, uint64_t *off, size_t *total)
{
    uint64_t off_last;
    size_t len, len_last;
    struct upager__store *s = upager__page_store(page, off, &len);
    upager__page_store(page + run - 1, &off_last, &len_last);
    *total = (size_t)(off_last - *off) + len_last;
    return s;
}

/* Reads `have` bytes of store s at off into an I/O buffer and writes len
 * bytes of it into the frames from byte `at` of `page`, zeros past
 * `have` (a direct store reads whole blocks and zeros past its end
 * itself).  Counts bytes_read, or io_errors. */
static int load(struct upager__store *s, uint64_t off, size_t have, size_t page, size_t at,
                size_t len)
{
    struct upager__global *g = &upager__g;
    char *b = upager__bounce_get();
    int err = 0;
    if (have)
        err = s->ops->read(s, b, s->direct ? len : have, off);
    if (!err) {
        if (have < len && !(have && s->direct))
            memset(b + have, 0, len - have);
        err = upager__frame_fill_at(page, at, b, len);
    }
    upager__bounce_put(b);
    if (err)
        atomic_fetch_add_explicit(&g->st.io_errors, 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&g->st.bytes_read, have, memory_order_relaxed);
    return err;
}

int upager__io_read_run(size_t page, size_t run)
{
    size_t total;
    uint64_t off;
    struct upager__store *s = run_extent(page, run, &off, &total);
    return load(s, off, total, page, 0, run << upager__g.page_shift);
}

int upager__io_read_block(size_t page, unsigned blk)
{
    struct upager__global *g = &upager__g;
    size_t bs = (size_t)1 << g->block_shift, at = (size_t)blk << g->block_shift;
    uint64_t off;
    size_t len;
    struct upager__store *s = upager__page_store(page, &off, &len);
    size_t have = len > at ? (len - at < bs ? len - at : bs) : 0; /* bytes the store has */
    return load(s, off + at, have, page, at, bs);
}

/* ---- write-backs ------------------------------------------------------ */

static _Atomic int64_t write_error_said; /* when a failed write-back was last said, +1 */

static const char *errname(int err)
{
    /* Whole sentences, so that the line is one write(2). */
#define KEPT ": the page stays in memory, dirty, and is retried (the budget may be exceeded meanwhile)"
    switch (err) {
    case ENOSPC: return " (no space left on device)" KEPT;
    case EIO: return " (input/output error)" KEPT;
    case EDQUOT: return " (disk quota exceeded)" KEPT;
    case EFBIG: return " (file too large)" KEPT;
    case EROFS: return " (read-only file system)" KEPT;
    default: return " (write error)" KEPT;
    }
#undef KEPT
}

/* Counts a failed write-back and says so: one line, and again at most
 * every 10 s while failures go on. */
static void write_failed(size_t page, int err)
{
    atomic_fetch_add_explicit(&upager__g.st.io_errors, 1, memory_order_relaxed);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t last = atomic_load(&write_error_said);
    if ((last == 0 || now.tv_sec - last >= 10) &&
        atomic_compare_exchange_strong(&write_error_said, &last, (int64_t)now.tv_sec + 1)) {
        char hex[24];
        upager__say_safe("write-back failed at ", upager__hex(hex, (uintptr_t)PAGE_ADDR(page)),
                         errname(err));
    }
}

int upager__io_write_run(size_t page, size_t run, bool *ok)
{
    struct upager__global *g = &upager__g;
    size_t ps = g->page_size, total;
    uint64_t off;
    struct upager__store *s = run_extent(page, run, &off, &total);
    for (size_t i = 0; i < run; i++)
        ok[i] = false;
    char *b = g->view ? VIEW(page) : upager__bounce_get();
    int first = g->view ? 0 : upager__frame_read(page, b, run);
    size_t written = 0, bytes = 0;
    if (!first && run > 1 && s->ops->write_many) {
        /* One extent per page: a store that keeps pages apart (Redis)
         * pipelines them. */
        struct upager__extent v[UPAGER__STORE_BATCH];
        int e[UPAGER__STORE_BATCH];
        size_t at[UPAGER__STORE_BATCH], lens[UPAGER__STORE_BATCH], n = 0;
        for (size_t i = 0; i < run; i++) {
            uint64_t o;
            size_t l;
            upager__page_store(page + i, &o, &l);
            if (!l) { /* past the end of a mapped file: nothing to keep */
                ok[i] = true;
                written++;
                continue;
            }
            v[n] = (struct upager__extent){b + i * ps, s->direct ? ps : l, o};
            e[n] = 0;
            at[n] = i;
            lens[n++] = l;
        }
        if (n)
            s->ops->write_many(s, v, n, e);
        for (size_t k = 0; k < n; k++) {
            if (e[k] == 0) {
                ok[at[k]] = true;
                written++;
                bytes += lens[k];
            } else if (!first) {
                first = e[k];
            }
        }
    } else if (!first) {
        first = total ? s->ops->write(s, b, s->direct ? run * ps : total, off) : 0;
        if (!first) {
            for (size_t i = 0; i < run; i++)
                ok[i] = true;
            written = run;
            bytes = total;
        }
    }
    if (g->view)
        view_done(b, run * ps);
    else
        upager__bounce_put(b);
    if (first)
        write_failed(page, first);
    atomic_fetch_add_explicit(&g->st.writebacks, written, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->st.bytes_written, bytes, memory_order_relaxed);
    return first;
}

int upager__io_write_page(size_t page)
{
    bool ok;
    return upager__io_write_run(page, 1, &ok);
}
