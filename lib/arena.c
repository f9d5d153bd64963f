/*
 * arena.c - the reserved arena, its page table, and its address space.
 *
 * The arena is MAP_SHARED, PROT_NONE, MAP_NORESERVE mappings of memfds, one
 * per shard of the arena (up to UPAGER__NSHARD), back to back.  The memfds
 * hold the frames: a page is resident when its range of the memfd is
 * allocated.  The fault path fills a frame through a second, writable
 * mapping of the same memfds (the view, which the program is never given)
 * while the arena page is still inaccessible, and only then opens the
 * page; so no thread can see a page half-loaded.  Punching a hole in the
 * memfd gives a frame back, from both mappings.
 *
 * The address space is one sorted list of free runs over the whole arena:
 * an allocation may be as large as the largest free run, across shards.
 * Allocations that ask to be spread start their search at successive
 * shards, so that independent data lands in different memfds.
 *
 * The page table has an entry per arena page, in an anonymous reservation
 * that the kernel commits only where it is written.  Entries are created
 * on first use, so the table grows with the memory touched, not with the
 * memory allocated:
 *   - Every GROUP (128) entries -- one 4K page of the table -- share a
 *     group descriptor.  When an allocation or mapping covers a whole
 *     group, make_live writes only the descriptor (state, flags, owner),
 *     plus the entry of the range's first page, which the allocator looks
 *     up by address.  Entries of groups it covers in part are written at
 *     once.
 *   - A FREE entry in a live group is created from the descriptor when its
 *     page is first locked by upager__page_lock (the fault path, pinning,
 *     advice), under the group's lock.
 *   - release marks the covered groups dead under their locks first, so no
 *     entry is created after that; then it frees the entries that exist
 *     and gives the table's memory back to the kernel (MADV_DONTNEED).
 * Lock order: a page lock, then its group's lock; release takes a group
 * lock alone.
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

/* Free runs of arena pages, sorted by address; guarded by alloc_lock. */
struct run {
    size_t first, n;
    struct run *next;
};

static struct run *free_runs;
static unsigned next_shard; /* where the next spread allocation starts */
static size_t sys_page;     /* the system's page size */

#define GROUP ((size_t)128) /* page-table entries per group descriptor */
#define GR(i) (&upager__g.groups[(i) / GROUP])
#define GROUP_LIVE(gr) (__atomic_load_n(&(gr)->kind, __ATOMIC_ACQUIRE) != OWNER_NONE)

/* The frames a second time, writable, at another address that the program
 * is never given: store reads land there directly (one DMA with O_DIRECT,
 * no copy through a buffer) and write-backs go from there, while the
 * arena's page stays PROT_NONE or read-only.  A hole punch drops the
 * frame from both.  NULL when it cannot be had: io.c then goes through
 * its buffers. */
bool upager__no_view; /* tests: set before start-up to use the I/O buffers */

static char *map_view(size_t bytes, size_t slice, unsigned nshard)
{
    struct upager__global *g = &upager__g;
    char *v = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v == MAP_FAILED)
        return NULL;
    for (unsigned i = 0; i < nshard; i++) {
        if (mmap(v + (size_t)i * slice, slice, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_FIXED | MAP_NORESERVE, g->memfd[i], 0) == MAP_FAILED) {
            munmap(v, bytes);
            return NULL;
        }
    }
    madvise(v, bytes, MADV_DONTFORK);
    return v;
}

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
    g->view = upager__no_view ? NULL : map_view(bytes, slice, nshard);

    size_t npages = bytes / ps;
    size_t ngroups = (npages + GROUP - 1) / GROUP;
    void *t = mmap(NULL, npages * sizeof(struct upager__page), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    void *gt = mmap(NULL, ngroups * sizeof(struct upager__group), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    struct run *all = malloc(sizeof *all);
    if (t == MAP_FAILED || gt == MAP_FAILED || !all)
        return ENOMEM;

    g->base = base;
    g->npages = npages;
    g->nshard = nshard;
    g->shard_pages = slice / ps;
    g->pages = t;
    g->groups = gt;
    all->first = 0;
    all->n = npages;
    all->next = NULL;
    free_runs = all;
    next_shard = 0;
    sys_page = (size_t)sysconf(_SC_PAGESIZE);
    return 0;
}

/* ---- the page table -------------------------------------------------- */

/* Creates the entry of page i from its group when it has none yet.
 * Precondition: the page's lock is held (then its group's is taken). */
static void entry_create(size_t i)
{
    struct upager__page *p = PG(i);
    if (p->state != PAGE_FREE)
        return;
    struct upager__group *gr = GR(i);
    if (!GROUP_LIVE(gr)) /* reads only: a dead group's memory stays untouched */
        return;
    upager__lock(&gr->lock);
    if (gr->kind != OWNER_NONE) {
        p->state = gr->state;
        p->flags = gr->flags;
        p->kind = gr->kind;
        p->pins = 0;
        p->owner = gr->owner;
        gr->touched = 1;
    }
    upager__unlock(&gr->lock);
}

void upager__page_lock(size_t i)
{
    upager__lock(&PG(i)->lock);
    entry_create(i);
}

int upager__page_trylock(size_t i)
{
    if (!upager__trylock(&PG(i)->lock))
        return 0;
    entry_create(i); /* a group's lock is only ever held briefly */
    return 1;
}

/* ---- the address space ---------------------------------------------- */

static size_t align_up_page(size_t first, size_t align_bytes)
{
    if (align_bytes <= upager__g.page_size)
        return first;
    uintptr_t a = (uintptr_t)PAGE_ADDR(first);
    uintptr_t b = (a + align_bytes - 1) & ~(uintptr_t)(align_bytes - 1);
    return first + ((b - a) >> upager__g.page_shift);
}

/* Takes [f, f+n) out of the free run *pp.  Returns 0 or ENOMEM. */
static int carve(struct run **pp, size_t f, size_t n)
{
    struct run *r = *pp;
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
    return 0;
}

/* Finds n free pages, first fit.  With spread, successive calls start the
 * search at successive shards (large allocations and mappings: independent
 * data lands in different memfds), and wrap around; otherwise from the
 * arena's start.  Caller holds alloc_lock. */
int upager__space_alloc(size_t n, size_t align_bytes, bool spread, size_t *out)
{
    struct upager__global *g = &upager__g;
    size_t hint = spread ? (size_t)(next_shard++ % g->nshard) * g->shard_pages : 0;
    for (int pass = 0; pass < 2; pass++) {
        for (struct run **pp = &free_runs; *pp; pp = &(*pp)->next) {
            struct run *r = *pp;
            size_t lo = r->first, end = r->first + r->n;
            if (pass == 0) {
                if (end <= hint)
                    continue;
                if (lo < hint)
                    lo = hint;
            }
            size_t f = align_up_page(lo, align_bytes);
            if (f < lo || f > end || n > end - f)
                continue;
            if (carve(pp, f, n) != 0)
                return ENOMEM;
            *out = f;
            return 0;
        }
        if (hint == 0)
            break;
    }
    return ENOMEM;
}

/* Returns a run to the free list, merging with its neighbours. */
void upager__space_free(size_t first, size_t n)
{
    struct run **pp = &free_runs, *prev = NULL;
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
}

/* The whole groups inside [first, first+n): [*gfirst, *gend), empty when
 * there are none. */
static void whole_groups(size_t first, size_t n, size_t *gfirst, size_t *gend)
{
    size_t a = (first + GROUP - 1) / GROUP * GROUP, b = (first + n) / GROUP * GROUP;
    if (a >= b)
        a = b = first + n;
    *gfirst = a;
    *gend = b;
}

static void entry_make_live(size_t i, uint8_t state, int kind, void *owner, int flags)
{
    struct upager__page *p = PG(i);
    upager__lock(&p->lock);
    p->state = state;
    p->flags = (uint8_t)flags;
    p->kind = (uint8_t)kind;
    p->pins = 0;
    p->owner = owner;
    upager__unlock(&p->lock);
}

/* Makes FREE pages live: EMPTY (or STORED with PF_INSTORE), owned by
 * `owner`.  Caller holds alloc_lock. */
void upager__pages_make_live(size_t first, size_t n, int kind, void *owner, int flags)
{
    uint8_t state = (flags & PF_INSTORE) ? PAGE_STORED : PAGE_EMPTY;
    size_t gfirst, gend;
    whole_groups(first, n, &gfirst, &gend);
    for (size_t i = first; i < gfirst; i++)
        entry_make_live(i, state, kind, owner, flags);
    for (size_t gi = gfirst; gi < gend; gi += GROUP) {
        struct upager__group *gr = GR(gi);
        upager__lock(&gr->lock);
        gr->state = state;
        gr->flags = (uint8_t)flags;
        gr->owner = owner;
        gr->touched = 0;
        __atomic_store_n(&gr->kind, (uint8_t)kind, __ATOMIC_RELEASE);
        upager__unlock(&gr->lock);
    }
    for (size_t i = gend; i < first + n; i++)
        entry_make_live(i, state, kind, owner, flags);
    if (gfirst == first && gfirst < gend) /* looked up by address */
        upager__page_lock(first), upager__unlock(&PG(first)->lock);
}

/* Gives the kernel back the memory of [from, to) of an array of entries of
 * `size` bytes, in whole system pages; the entries there read as zeros. */
static void table_trim(void *array, size_t size, size_t from, size_t to)
{
    uintptr_t a = (uintptr_t)array + from * size, b = (uintptr_t)array + to * size;
    a = (a + sys_page - 1) & ~(uintptr_t)(sys_page - 1);
    b &= ~(uintptr_t)(sys_page - 1);
    if (a < b)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

/* Makes live pages FREE: their frames are dropped without write-back, and
 * with discard_store their store contents too (anonymous memory; a mapped
 * file keeps its bytes).  Caller holds alloc_lock.  The pages are locked
 * first, so that no fault or eviction is half-way through one when the
 * frames go.  Returns 0, or the errno of an mprotect that failed: then the
 * pages may still be accessible, and the caller must not reuse the space. */
int upager__pages_release(size_t first, size_t n, bool discard_store)
{
    struct upager__global *g = &upager__g;
    size_t end = first + n, gfirst, gend;
    whole_groups(first, n, &gfirst, &gend);
    /* No entry is created in a whole group from now on. */
    for (size_t gi = gfirst; gi < gend; gi += GROUP) {
        struct upager__group *gr = GR(gi);
        upager__lock(&gr->lock);
        __atomic_store_n(&gr->kind, (uint8_t)OWNER_NONE, __ATOMIC_RELEASE);
        upager__unlock(&gr->lock);
    }
    /* Lock the entries that exist: all of the partial groups, the touched
     * ones of the whole groups. */
    for (size_t i = first; i < end; i++) {
        if (i == gfirst && gfirst < gend) {
            for (size_t gi = gfirst; gi < gend; gi += GROUP) {
                struct upager__group *gr = GR(gi);
                for (size_t k = gi; k < gi + GROUP; k++)
                    if ((gr->touched || k == first) && PG(k)->state != PAGE_FREE)
                        upager__lock(&PG(k)->lock);
            }
            i = gend - 1;
            continue;
        }
        upager__lock(&PG(i)->lock);
    }
    int err = upager__protect_free(first, n);
    upager__frames_drop(first, n);
    if (discard_store)
        g->anon.ops->discard(&g->anon, (uint64_t)first << g->page_shift,
                             (uint64_t)n << g->page_shift);
    for (size_t i = first; i < end; i++) {
        struct upager__page *p = PG(i);
        if (i >= gfirst && i < gend) {
            struct upager__group *gr = GR(i);
            if (!gr->touched && i != first) {
                i = (i / GROUP + 1) * GROUP - 1; /* nothing of this group exists */
                continue;
            }
            if (p->state == PAGE_FREE)
                continue;
        }
        if (p->state == PAGE_RESIDENT) {
            if (p->pins) {
                upager__lock(&g->clock_lock);
                g->pinned--;
                upager__unlock(&g->clock_lock);
            }
            upager__frame_put(p->frame, PAGE_MISSING(p));
        }
        p->state = PAGE_FREE;
        upager__flags(p, 0);
        p->kind = OWNER_NONE;
        p->pins = 0;
        p->wb = 0;
        p->blocks = 0;
        p->owner = NULL;
        upager__unlock(&p->lock);
    }
    for (size_t gi = gfirst; gi < gend; gi += GROUP)
        GR(gi)->touched = 0;
    table_trim(g->pages, sizeof(struct upager__page), gfirst, gend);
    table_trim(g->groups, sizeof(struct upager__group), gfirst / GROUP, gend / GROUP);
    return err;
}
