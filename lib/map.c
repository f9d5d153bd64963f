/*
 * map.c - file mappings, pinning and advice.
 *
 * A mapping is a run of arena pages whose store is the file itself: a page
 * is read from the file at its offset and, for UPAGER_MAP_WRITE, written
 * back there, never past `length`.  It shares the frames and the budget
 * with allocated memory.  Pinning loads pages and keeps the clock away from
 * them, so that system calls can be handed paged memory.  Advice sets the
 * read-ahead of a range, loads it, or evicts it.
 *
 * Callers: the public API only; the fault path never comes here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* Starts the library if needed and converts [addr, addr+len) to arena
 * pages; EINVAL outside the arena. */
static int range_pages(const void *addr, size_t len, size_t *first, size_t *end)
{
    struct upager__global *g = &upager__g;
    int err = upager__ensure_init();
    if (err)
        return err;
    if (!addr || !IN_ARENA(addr))
        return EINVAL;
    size_t off = (size_t)((const char *)addr - g->base);
    size_t limit = g->npages << g->page_shift;
    if (len > limit - off)
        return EINVAL;
    *first = off >> g->page_shift;
    *end = len ? (off + len - 1) / g->page_size + 1 : *first;
    return 0;
}

void *upager_map_file(const char *path, size_t length, int flags)
{
    struct upager__global *g = &upager__g;
    int err = upager__ensure_init();
    if (err) {
        errno = err;
        return NULL;
    }
    if (!path || (flags & ~(UPAGER_MAP_READ | UPAGER_MAP_WRITE | UPAGER_MAP_CREATE)) ||
        !(flags & (UPAGER_MAP_READ | UPAGER_MAP_WRITE)) ||
        ((flags & UPAGER_MAP_CREATE) && !(flags & UPAGER_MAP_WRITE)) ||
        ((flags & UPAGER_MAP_CREATE) && length == 0)) {
        errno = EINVAL;
        return NULL;
    }
    bool writable = flags & UPAGER_MAP_WRITE;
    int oflags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC |
                 ((flags & UPAGER_MAP_CREATE) ? O_CREAT : 0);
    int fd = open(path, oflags, 0666);
    if (fd < 0) {
        if (errno == EISDIR)
            errno = EINVAL;
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;
        return NULL;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (length == 0) {
        if (size == 0 || size > SIZE_MAX) {
            close(fd);
            errno = EINVAL;
            return NULL;
        }
        length = (size_t)size;
    } else if (length > size) {
        if (!(flags & UPAGER_MAP_CREATE)) {
            close(fd);
            errno = EINVAL;
            return NULL;
        }
        if (ftruncate(fd, (off_t)length) != 0) {
            err = errno;
            close(fd);
            errno = err;
            return NULL;
        }
    }
    struct upager__mapping *m = calloc(1, sizeof *m);
    if (!m) {
        close(fd);
        errno = ENOMEM;
        return NULL;
    }
    upager__store_fd_init(&m->store, fd, length);
    m->file_size = length;
    m->flags = flags;
    m->npages = (length + g->page_size - 1) / g->page_size;
    pthread_mutex_lock(&g->alloc_lock);
    if (upager__space_alloc(m->npages, 0, true, &m->first) != 0) {
        pthread_mutex_unlock(&g->alloc_lock);
        close(fd);
        free(m);
        errno = ENOMEM;
        return NULL;
    }
    upager__pages_make_live(m->first, m->npages, OWNER_MAP, m,
                            PF_INSTORE | (writable ? 0 : PF_RDONLY));
    m->next = g->mappings;
    g->mappings = m;
    pthread_mutex_unlock(&g->alloc_lock);
    return PAGE_ADDR(m->first);
}

/* Writes back the dirty mapped pages of [first, end) and syncs the files.
 * Precondition: none of the pages' locks held. */
static int sync_pages(size_t first, size_t end)
{
    int err = 0;
    struct upager__mapping *last = NULL;
    for (size_t i = first; i < end; i++) {
        struct upager__page *p = PG(i);
        /* Only resident pages can be dirty.  The look without the lock is
         * safe: a page dirty when the sync began stays RESIDENT until it
         * is written back, and then the fdatasync below covers it. */
        if (p->state != PAGE_RESIDENT)
            continue;
        upager__lock(&p->lock);
        if (p->kind == OWNER_MAP) {
            int e = upager__writeback_locked(i);
            if (e && !err)
                err = e;
            struct upager__mapping *m = p->owner;
            if (m != last && last) {
                int e2 = last->store.ops->sync(&last->store);
                if (e2 && !err)
                    err = e2;
            }
            last = m;
        }
        upager__unlock(&p->lock);
    }
    if (last) {
        int e = last->store.ops->sync(&last->store);
        if (e && !err)
            err = e;
    }
    return err;
}

int upager_sync(const void *addr, size_t length)
{
    size_t first, end;
    int err;
    if ((err = range_pages(addr, length, &first, &end)))
        return err;
    return sync_pages(first, end);
}

int upager_unmap(void *addr)
{
    struct upager__global *g = &upager__g;
    int err = upager__ensure_init();
    if (err)
        return err;
    pthread_mutex_lock(&g->alloc_lock);
    struct upager__mapping **pp = &g->mappings;
    while (*pp && PAGE_ADDR((*pp)->first) != (char *)addr)
        pp = &(*pp)->next;
    struct upager__mapping *m = *pp;
    if (!m) {
        pthread_mutex_unlock(&g->alloc_lock);
        return EINVAL;
    }
    err = sync_pages(m->first, m->first + m->npages);
    if (err) {
        pthread_mutex_unlock(&g->alloc_lock);
        return err;
    }
    *pp = m->next;
    if (upager__pages_release(m->first, m->npages, false) == 0)
        upager__space_free(m->first, m->npages);
    pthread_mutex_unlock(&g->alloc_lock);
    m->store.ops->close(&m->store);
    free(m);
    return 0;
}

/* ---- pinning -------------------------------------------------------- */

/* Drops one pin of page i.  Precondition: page lock held, pins > 0. */
static void unpin_locked(size_t i)
{
    struct upager__global *g = &upager__g;
    if (--PG(i)->pins == 0) {
        upager__lock(&g->clock_lock);
        g->pinned--;
        upager__unlock(&g->clock_lock);
        upager__clock_signal();
    }
}

/* Pins page i once, loading it when it is not resident.  Returns 0, EINVAL
 * (no live allocation or mapping there, or UPAGER_PIN_WRITE on a read-only
 * mapping) or ENOMEM (the budget is all pinned).  Precondition: no lock
 * held. */
static int pin_page(size_t i, int flags)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(i);
    int err = 0;
    upager__page_lock(i);
    if (!PAGE_IS_LIVE(p) || ((flags & UPAGER_PIN_WRITE) && (p->flags & PF_RDONLY))) {
        err = EINVAL;
    } else if (p->pins == 0) {
        upager__lock(&g->clock_lock);
        if (g->pinned + 1 > g->limit)
            err = ENOMEM;
        else
            g->pinned++;
        upager__unlock(&g->clock_lock);
    }
    if (!err && (p->state != PAGE_RESIDENT || p->blocks)) { /* not there, or in part */
        err = upager__page_in_locked(i, true);
        if (err && p->pins == 0) {
            upager__lock(&g->clock_lock);
            g->pinned--;
            upager__unlock(&g->clock_lock);
        } else if (!err) {
            atomic_fetch_add_explicit(&g->st.faults, 1, memory_order_relaxed);
        }
    }
    if (err) {
        upager__unlock(&p->lock);
        return err;
    }
    /* Already open as asked (referenced, and dirty when pinned for writing):
     * no mprotect, which matters to the interposed calls that pin a mutex
     * on every lock and unlock. */
    bool open = (p->flags & PF_REF) && (!(flags & UPAGER_PIN_WRITE) || (p->flags & PF_DIRTY));
    if (!open) {
        uint8_t old = p->flags;
        upager__flags(p, p->flags | (PF_REF | ((flags & UPAGER_PIN_WRITE) ? PF_DIRTY : 0)));
        err = upager__protect(i, 1, (p->flags & PF_DIRTY) ? PROT_READ | PROT_WRITE : PROT_READ);
        if (err) { /* vm.max_map_count: back to what it was */
            upager__flags(p, old);
            upager__protect(i, 1, !(old & PF_REF)   ? PROT_NONE
                                  : (old & PF_DIRTY) ? PROT_READ | PROT_WRITE
                                                     : PROT_READ);
            if (p->pins == 0) {
                upager__lock(&g->clock_lock);
                g->pinned--;
                upager__unlock(&g->clock_lock);
            }
            upager__unlock(&p->lock);
            return err;
        }
    }
    p->pins++;
    upager__unlock(&p->lock);
    upager__clock_open_check();
    return 0;
}

int upager_pin(const void *addr, size_t length, int flags)
{
    size_t first, end;
    int err = range_pages(addr, length, &first, &end);
    if (err || (flags & ~UPAGER_PIN_WRITE))
        return err ? err : EINVAL;
    size_t i;
    for (i = first; i < end; i++) {
        if ((err = pin_page(i, flags)))
            break;
    }
    if (err) { /* pin nothing: undo the pages pinned so far */
        for (size_t j = first; j < i; j++) {
            upager__lock(&PG(j)->lock);
            unpin_locked(j);
            upager__unlock(&PG(j)->lock);
        }
    }
    return err;
}

int upager_unpin(const void *addr, size_t length)
{
    size_t first, end;
    int err;
    if ((err = range_pages(addr, length, &first, &end)))
        return err;
    for (size_t i = first; i < end; i++) {
        if (PG(i)->pins == 0)
            return EINVAL;
    }
    for (size_t i = first; i < end; i++) {
        upager__lock(&PG(i)->lock);
        if (PG(i)->pins)
            unpin_locked(i);
        upager__unlock(&PG(i)->lock);
    }
    return 0;
}

/* The arena pages under [addr, addr + len), clipped to the arena: [*first,
 * *end), empty when the range misses it.  Precondition: the library is
 * ready. */
static void clip_pages(const void *addr, size_t len, size_t *first, size_t *end)
{
    struct upager__global *g = &upager__g;
    uintptr_t lo = (uintptr_t)addr, base = (uintptr_t)g->base;
    uintptr_t top = base + (g->npages << g->page_shift);
    uintptr_t hi = len > UINTPTR_MAX - lo ? UINTPTR_MAX : lo + len;
    if (len == 0 || hi <= base || lo >= top) {
        *first = *end = 0;
        return;
    }
    if (lo < base)
        lo = base;
    if (hi > top)
        hi = top;
    *first = (lo - base) >> g->page_shift;
    *end = ((hi - 1 - base) >> g->page_shift) + 1;
}

int upager__pin_range(const void *addr, size_t len, int flags, size_t *covered)
{
    size_t first, end, i;
    int err = 0;
    clip_pages(addr, len, &first, &end);
    for (i = first; i < end; i++) {
        if ((err = pin_page(i, flags)))
            break;
    }
    if (!err) {
        *covered = len;
    } else {
        uintptr_t stop = (uintptr_t)PAGE_ADDR(i);
        *covered = stop > (uintptr_t)addr ? (size_t)(stop - (uintptr_t)addr) : 0;
    }
    return err;
}

void upager__unpin_range(const void *addr, size_t len)
{
    size_t first, end;
    clip_pages(addr, len, &first, &end);
    for (size_t i = first; i < end; i++) {
        upager__lock(&PG(i)->lock);
        if (PG(i)->pins)
            unpin_locked(i);
        upager__unlock(&PG(i)->lock);
    }
}

/* ---- advice --------------------------------------------------------- */

/* WILLNEED is served by a loader thread, started on first use, so that the
 * caller returns at once; a full queue (or no thread) loads in the caller.
 * The loader never touches arena memory: it fills frames through the memfd
 * like the fault path. */
#define WQ_LEN 64

static pthread_mutex_t wq_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wq_cond = PTHREAD_COND_INITIALIZER;
static struct { size_t first, end; } wq[WQ_LEN];
static size_t wq_head, wq_count;
static int wq_thread; /* 0 not started, 1 running, -1 could not start */

/* Loads the STORED pages of [first, end), at most half the budget of them:
 * more would only push out the first ones.  Precondition: no lock held. */
static void load_range(size_t first, size_t end)
{
    size_t loaded = 0;
    for (size_t i = first; i < end && loaded < upager__g.limit / 2; i++) {
        struct upager__page *p = PG(i);
        upager__page_lock(i);
        if (p->state == PAGE_STORED && upager__page_in_locked(i, false) == 0)
            loaded++;
        upager__unlock(&p->lock);
    }
}

static void *loader(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&wq_lock);
        while (wq_count == 0)
            pthread_cond_wait(&wq_cond, &wq_lock);
        size_t first = wq[wq_head].first, end = wq[wq_head].end;
        wq_head = (wq_head + 1) % WQ_LEN;
        wq_count--;
        pthread_mutex_unlock(&wq_lock);
        load_range(first, end);
    }
    return NULL;
}

static void will_need(size_t first, size_t end)
{
    pthread_mutex_lock(&wq_lock);
    if (wq_thread == 0) {
        /* The loader takes no signals: they stay with the program's threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t t;
        wq_thread = pthread_create(&t, NULL, loader, NULL) == 0 ? 1 : -1;
        if (wq_thread == 1)
            pthread_detach(t);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    if (wq_thread == 1 && wq_count < WQ_LEN) {
        wq[(wq_head + wq_count) % WQ_LEN].first = first;
        wq[(wq_head + wq_count) % WQ_LEN].end = end;
        wq_count++;
        pthread_cond_signal(&wq_cond);
        pthread_mutex_unlock(&wq_lock);
        return;
    }
    pthread_mutex_unlock(&wq_lock);
    load_range(first, end);
}

void upager__map_after_fork(void)
{
    /* The loader thread does not exist in the child. */
    pthread_mutex_init(&wq_lock, NULL);
    pthread_cond_init(&wq_cond, NULL);
    wq_head = wq_count = 0;
    wq_thread = 0;
}

int upager_advise(const void *addr, size_t length, int advice)
{
    size_t first, end;
    int err;
    if ((err = range_pages(addr, length, &first, &end)))
        return err;
    if (advice < UPAGER_ADVICE_NORMAL || advice > UPAGER_ADVICE_DONTNEED)
        return EINVAL;
    if (advice == UPAGER_ADVICE_WILLNEED) {
        will_need(first, end);
        return 0;
    }
    for (size_t i = first; i < end; i++) {
        struct upager__page *p = PG(i);
        if (advice == UPAGER_ADVICE_DONTNEED && p->state != PAGE_RESIDENT)
            continue; /* a racy look: only resident pages have anything to do */
        upager__page_lock(i);
        if (!PAGE_IS_LIVE(p)) {
            upager__unlock(&p->lock);
            continue;
        }
        switch (advice) {
        case UPAGER_ADVICE_NORMAL:
            p->flags &= (uint8_t) ~(PF_SEQ | PF_RANDOM);
            break;
        case UPAGER_ADVICE_SEQUENTIAL:
            p->flags = (uint8_t)((p->flags & ~PF_RANDOM) | PF_SEQ);
            break;
        case UPAGER_ADVICE_RANDOM:
            p->flags = (uint8_t)((p->flags & ~PF_SEQ) | PF_RANDOM);
            break;
        case UPAGER_ADVICE_DONTNEED: {
            int e = upager__evict_locked(i);
            if (e && !err)
                err = e;
            break;
        }
        }
        upager__unlock(&p->lock);
    }
    return err;
}
