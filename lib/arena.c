/*
 * arena.c - the reserved arena, its page table, and its address space.
 *
 * The arena is MAP_SHARED, PROT_NONE, MAP_NORESERVE mappings of memfds, one
 * per shard of the arena (up to UPAGER__NSHARD).  The memfds hold the frames: a page is resident
 * when its range of the memfd is allocated.  The fault path fills a frame
 * through the memfd's file descriptor while the arena page is still
 * inaccessible, and only then opens the page; so no thread can see a page
 * half-loaded.  Punching a hole in the memfd gives a frame back.
 *
 * The page table has an entry per arena page, in an anonymous reservation
 * the kernel commits page by page as entries are first touched.
 *
 * The address-space functions (space_*, pages_*) run under alloc_lock, in
 * the allocator and in map.c, never on the fault path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

/* Free runs of arena pages below `top`, sorted by address, per shard. */
struct run {
    size_t first, n;
    struct run *next;
};

static struct shard_space {
    struct run *free_runs;
    size_t top; /* pages at and above (to the shard's end) are unused */
} space[UPAGER__NSHARD];
static unsigned next_shard; /* where the next spread allocation goes */

int upager__arena_init(void)
{
    struct upager__global *g = &upager__g;
    size_t ps = g->page_size;
    size_t align = UPAGER__MAX_PAGE; /* so that 2M pages can be huge pages */
    /* Shards of at least 1G, each a memfd of its own: the kernel serialises
     * writes and hole punches per file, so faults on allocations in
     * different shards do not wait for each other there. */
    unsigned nshard = (unsigned)(g->cfg.arena >> 30);
    nshard = nshard < 1 ? 1 : nshard > UPAGER__NSHARD ? UPAGER__NSHARD : nshard;
    size_t slice = (size_t)((g->cfg.arena / nshard + align - 1) & ~(uint64_t)(align - 1));
    size_t bytes = slice * nshard;

    /* Reserve with room to align, then place the memfd mappings inside. */
    char *r = mmap(NULL, bytes + align, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r == MAP_FAILED)
        return errno;
    char *base = (char *)(((uintptr_t)r + align - 1) & ~(uintptr_t)(align - 1));
    if (base > r)
        munmap(r, (size_t)(base - r));
    if (r + bytes + align > base + bytes)
        munmap(base + bytes, (size_t)(r + bytes + align - (base + bytes)));
    for (unsigned i = 0; i < nshard; i++) {
        int fd = memfd_create("upager", MFD_CLOEXEC);
        if (fd < 0)
            return errno;
        g->memfd[i] = fd;
        if (ftruncate(fd, (off_t)slice) != 0)
            return errno;
        if (mmap(base + (size_t)i * slice, slice, PROT_NONE,
                 MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd, 0) == MAP_FAILED)
            return errno;
    }
    /* A child of fork must not reach the parent's frames: it gets no arena. */
    madvise(base, bytes, MADV_DONTFORK);

    size_t table = bytes / ps * sizeof(struct upager__page);
    void *t = mmap(NULL, table, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (t == MAP_FAILED)
        return errno;

    g->base = base;
    g->npages = bytes / ps;
    g->nshard = nshard;
    g->shard_pages = slice / ps;
    g->pages = t;
    for (unsigned i = 0; i < UPAGER__NSHARD; i++) {
        space[i].free_runs = NULL;
        space[i].top = (size_t)i * g->shard_pages;
    }
    next_shard = 0;
    return 0;
}

static size_t align_up_page(size_t first, size_t align_bytes)
{
    if (align_bytes <= upager__g.page_size)
        return first;
    uintptr_t a = (uintptr_t)PAGE_ADDR(first);
    uintptr_t b = (a + align_bytes - 1) & ~(uintptr_t)(align_bytes - 1);
    return first + ((b - a) >> upager__g.page_shift);
}

/* First fit over the free runs of one shard, then its top. */
static int shard_alloc(unsigned sh, size_t n, size_t align_bytes, size_t *out)
{
    struct shard_space *sp = &space[sh];
    size_t end = (size_t)(sh + 1) * upager__g.shard_pages;
    for (struct run **pp = &sp->free_runs; *pp; pp = &(*pp)->next) {
        struct run *r = *pp;
        size_t f = align_up_page(r->first, align_bytes);
        if (f + n > r->first + r->n)
            continue;
        size_t before = f - r->first, after = r->first + r->n - (f + n);
        if (before && after) {
            struct run *tail = malloc(sizeof *tail);
            if (!tail)
                return ENOMEM;
            tail->first = f + n;
            tail->n = after;
            tail->next = r->next;
            r->n = before;
            r->next = tail;
        } else if (before) {
            r->n = before;
        } else if (after) {
            r->first = f + n;
            r->n = after;
        } else {
            *pp = r->next;
            free(r);
        }
        *out = f;
        return 0;
    }
    size_t top = sp->top;
    size_t f = align_up_page(top, align_bytes);
    if (f < top || f > end || n > end - f)
        return ENOMEM;
    sp->top = f + n;
    if (f > top)
        upager__space_free(top, f - top);
    *out = f;
    return 0;
}

/* Finds n free pages.  With spread, successive calls start in successive
 * shards (large allocations and mappings: independent data lands in
 * different memfds); otherwise shard 0 first.  Caller holds alloc_lock. */
int upager__space_alloc(size_t n, size_t align_bytes, bool spread, size_t *out)
{
    unsigned ns = upager__g.nshard;
    unsigned start = spread ? next_shard++ % ns : 0;
    for (unsigned k = 0; k < ns; k++) {
        if (shard_alloc((start + k) % ns, n, align_bytes, out) == 0)
            return 0;
    }
    return ENOMEM;
}

/* Returns a run to its shard's free list, merging with its neighbours and
 * the top. */
void upager__space_free(size_t first, size_t n)
{
    struct shard_space *sp = &space[first / upager__g.shard_pages];
    struct run **pp = &sp->free_runs, *prev = NULL;
    while (*pp && (*pp)->first < first) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    struct run *next = *pp;
    if (prev && prev->first + prev->n == first) {
        prev->n += n;
        if (next && prev->first + prev->n == next->first) {
            prev->n += next->n;
            prev->next = next->next;
            free(next);
        }
    } else if (next && first + n == next->first) {
        next->first = first;
        next->n += n;
    } else {
        struct run *r = malloc(sizeof *r);
        if (!r)
            return; /* the space is lost, nothing else: it stays FREE */
        r->first = first;
        r->n = n;
        r->next = next;
        *pp = r;
    }
    /* A run that reaches the top lowers it. */
    struct run **last = &sp->free_runs;
    while (*last && (*last)->next)
        last = &(*last)->next;
    if (*last && (*last)->first + (*last)->n == sp->top) {
        sp->top = (*last)->first;
        free(*last);
        *last = NULL;
    }
}

/* Makes FREE pages live: EMPTY, owned by `owner`.  Caller holds alloc_lock. */
void upager__pages_make_live(size_t first, size_t n, int kind, void *owner, int flags)
{
    for (size_t i = first; i < first + n; i++) {
        struct upager__page *p = PG(i);
        upager__lock(&p->lock);
        p->state = (flags & PF_INSTORE) ? PAGE_STORED : PAGE_EMPTY;
        p->flags = (uint8_t)flags;
        p->kind = (uint8_t)kind;
        p->pins = 0;
        p->owner = owner;
        upager__unlock(&p->lock);
    }
}

/* Makes live pages FREE: their frames are dropped without write-back, and
 * with discard_store their store contents too (anonymous memory; a mapped
 * file keeps its bytes).  Caller holds alloc_lock.  All the pages are
 * locked first, so that no fault or eviction is half-way through one when
 * the frames go. */
void upager__pages_release(size_t first, size_t n, bool discard_store)
{
    struct upager__global *g = &upager__g;
    for (size_t i = first; i < first + n; i++)
        upager__lock(&PG(i)->lock);
    upager__protect(first, n, PROT_NONE);
    upager__frames_drop(first, n);
    if (discard_store)
        g->anon.ops->discard(&g->anon, (uint64_t)first << g->page_shift,
                             (uint64_t)n << g->page_shift);
    for (size_t i = first; i < first + n; i++) {
        struct upager__page *p = PG(i);
        if (p->state == PAGE_RESIDENT) {
            if (p->pins) {
                upager__lock(&g->clock_lock);
                g->pinned--;
                upager__unlock(&g->clock_lock);
            }
            upager__frame_put(p->frame);
        }
        p->state = PAGE_FREE;
        p->flags = 0;
        p->kind = OWNER_NONE;
        p->pins = 0;
        p->owner = NULL;
        upager__unlock(&p->lock);
    }
}
