/*
 * alloc.c - the malloc-like API on the arena.
 *
 * NOTES ON THE DESIGN
 *
 * Small blocks (up to small_max: the page size, 64K at least) come in
 * size classes: 16..128 by 16, then eight per doubling (at most 12.5% lost
 * to rounding), so a size finds its class with a shift and a count of
 * leading zeros.  A class carves slabs, runs of arena pages (64K and eight
 * blocks at least, 4M at most), into slots.  Larger blocks are runs of
 * whole pages.
 *
 * All metadata lives outside the arena, in ordinary memory: the slab
 * descriptors with one state byte per slot, the run descriptors, an owner
 * map with one word per arena page (slab or run, NULL when neither), and
 * the thread caches.  So free never touches the block it frees: it never
 * faults a page in, and freed space causes no store I/O of its own.
 *
 * Thread caches (jemalloc's tcache, mimalloc's thread-local heap): each
 * thread has a heap, found with one initial-exec TLS load, that holds per
 * class a stack of free slots (address and state byte).  malloc pops,
 * free pushes: no lock, no system call, no arena access.  A free from any
 * thread goes to the freeing thread's cache, whoever allocated the block;
 * when a stack is full, half of it goes back to the slabs (a flush) under
 * the class's lock, and when empty, half a stack is taken from them (a
 * refill).  Cross-thread frees are thus correct and batched.  A thread's
 * cache goes back to the slabs when it exits (pthread key destructor).
 *
 * A slot's state byte:
 *
 *   FREE --refill--> CACHED --malloc--> LIVE --free--> CACHED --flush--> FREE
 *
 * FREE <-> CACHED change under the class lock only; CACHED <-> LIVE only by
 * the one thread that holds the slot (its cache or its user), so the byte
 * has one writer at a time.  free aborts unless the byte says LIVE: a
 * double free is caught at once, cached or flushed.
 *
 * Slabs with free slots are used before a new slab is made, so freed small
 * blocks are reused before new pages are touched.  An empty slab is kept
 * for reuse, newest first; it goes back to the pager (frames and store
 * dropped: a later access there is a genuine fault) once it has been
 * empty for ten seconds (jemalloc's default decay), or when the empty
 * slabs of all classes exceed an eighth of the budget, the oldest first;
 * the newest empty slab of a class always stays, so a block freed and
 * allocated again at a slab's boundary never costs a system call.  Slabs
 * due together go in one batch, neighbours in one call.  The check runs
 * when a thread's cache flushes or refills, so an idle program keeps its
 * empty slabs.
 *
 * Freed runs up to 16M are kept in a cache (32 runs, a sixteenth of the
 * budget and 64M at most), reused best fit by a request of half to all of
 * a run's size, or more up to its reservation (the pages added are fresh);
 * calloc zeroes a reused run.  Larger runs, and the oldest of the cache,
 * are given back at once.  (glibc keeps freed blocks up to 32M in its
 * heap.  In mstress, a cache of 1M runs and 8M faulted 17 times as many
 * fresh pages in, one of 4M runs and 32M six times as many.)
 *
 * A run reserves twice its pages of address space; the pages beyond its
 * end stay FREE (a genuine fault) until realloc grows into them, which
 * costs no copy.  When the arena runs short, these reservations and the
 * run cache are given up first.
 *
 * Locks: a lock per class (the slabs of the class), then alloc_lock (the
 * address space, the runs, the run cache, the owner map), in that order;
 * heaps_lock guards the list of heaps.  None is held while arena memory is
 * touched (calloc's zeroing, realloc's copy): a fault there may need the
 * pager, which must not wait for a lock its own thread holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define TLS __thread __attribute__((tls_model("initial-exec")))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define RELAXED memory_order_relaxed

#define NCLASSES 120                     /* enough for 2M with 8 per doubling   */
#define BIN_MAX 64                       /* slots a thread caches per class     */
#define BIN_BYTES ((size_t)256 << 10)    /* ... and bytes                       */
#define SLAB_MIN ((size_t)64 << 10)      /* bytes of a slab, at least           */
#define SLAB_MAX ((size_t)4 << 20)       /* bytes of a slab, at most            */
#define EMPTY_DECAY_MS 10000             /* an empty slab goes back after this   */
#define EMPTY_FRACTION 8                 /* ... or beyond budget / 8 of them     */
#define LCACHE_N 32                      /* freed runs kept, at most            */
#define LCACHE_RUN ((size_t)16 << 20)    /* largest run kept                    */
#define LCACHE_BYTES ((size_t)64 << 20)  /* bytes of runs kept, at most         */

enum { SLOT_FREE = 0, SLOT_CACHED = 1, SLOT_LIVE = 2 };
enum { ON_NONE = 0, ON_PARTIAL, ON_EMPTY };

struct slab {
    char *base;               /* first byte                               */
    uint32_t size;            /* slot size (the class size)               */
    uint32_t cls;             /* size class                               */
    uint64_t recip;           /* ceil(2^64 / size): off * recip >> 64 is  */
                              /* off / size, exact for off < 2^64 / size  */
    uint32_t nslots, nfree;   /* slots, and slots FREE (class lock)       */
    uint32_t cursor;          /* no FREE slot below it (class lock)       */
    uint8_t on;               /* ON_*: which list of the class            */
    uint32_t since;           /* now_ms() when it became empty            */
    size_t first, npages;     /* arena pages                              */
    struct slab *prev, *next; /* list of the class (class lock)           */
    _Atomic uint8_t state[];  /* SLOT_* per slot                          */
};

struct large {
    size_t first;             /* first arena page                         */
    size_t npages;            /* live pages: the usable size              */
    size_t reserved;          /* pages of address space held, >= npages   */
    bool live;                /* false while in the run cache             */
    struct large *prev, *next;/* every run (alloc_lock)                   */
};

struct ent {
    char *p;                  /* a CACHED slot                            */
    _Atomic uint8_t *st;      /* its state byte                           */
};

/* A thread's cache.  Only its thread writes it, except `delta`, which
 * upager_get_stats reads (relaxed) from any thread under heaps_lock. */
struct heap {
    uint16_t n[NCLASSES];     /* slots cached per class                   */
    uint16_t cap[NCLASSES];   /* stack size per class                     */
    _Atomic int64_t delta;    /* allocated bytes counted here, not in st  */
    unsigned gen;             /* alloc_gen it was made in                 */
    struct heap *prev, *next; /* every heap (heaps_lock)                  */
    struct ent e[][BIN_MAX];  /* the stacks, one per class                */
};

/* Read on every call; written by upager__alloc_init only. */
static struct {
    char *base;               /* the arena                                */
    size_t bytes;             /* 0 before start-up: every pointer foreign */
    unsigned shift;           /* page shift                               */
    size_t ps;                /* page size                                */
    size_t small_max;         /* 0 before start-up                        */
    _Atomic uintptr_t *omap;  /* owner per page: slab, run | 1, or 0      */
    size_t omap_bytes;
} A __attribute__((aligned(64)));

static uint32_t class_size[NCLASSES];
static uint32_t class_pages[NCLASSES]; /* pages per slab                  */
static uint16_t class_cap[NCLASSES];   /* thread cache stack size         */
static unsigned nclasses;

static _Atomic size_t empty_bytes; /* in empty slabs, every class       */

/* The budget now (upager_set_budget may change it): a relaxed read of the
 * clock's limit, a hint for the caches' bounds. */
static size_t budget_bytes(void)
{
    return __atomic_load_n(&upager__g.limit, __ATOMIC_RELAXED) << A.shift;
}

static struct central {
    upager__lock_t lock;
    struct slab *partial;     /* slabs with FREE slots, not all FREE       */
    struct slab *empty;       /* slabs all FREE, newest first              */
    struct slab *empty_tail;
    unsigned nempty;
} __attribute__((aligned(64))) central[NCLASSES];

/* Runs (alloc_lock). */
static struct large *runs;             /* every run                       */
static struct large *lcache[LCACHE_N]; /* freed runs kept, oldest first   */
static unsigned lcache_n;
static size_t lcache_bytes;

/* Heaps. */
static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct heap *heaps;
static unsigned alloc_gen;
static pthread_key_t heap_key;
static bool key_made, alloc_broken;
static TLS struct heap *tls_heap;
static TLS bool tls_dead; /* the thread's heap was torn down at its exit */

/* ---- size classes --------------------------------------------------- */

static inline unsigned size_class(size_t size)
{
    if (size <= 128)
        return size ? (unsigned)((size - 1) >> 4) : 0;
    size_t s = size - 1;
    unsigned sh = 63u - (unsigned)__builtin_clzll(s);
    return 8 + (sh - 7) * 8 + (unsigned)((s >> (sh - 3)) & 7);
}

static size_t class_bytes(unsigned c)
{
    if (c < 8)
        return 16 * (size_t)(c + 1);
    unsigned sh = 7 + (c - 8) / 8, m = (c - 8) % 8;
    return ((size_t)1 << sh) + (m + 1) * ((size_t)1 << (sh - 3));
}

/* The class for size bytes aligned to align (a power of two), or
 * nclasses when it takes a run. */
static unsigned class_for(size_t size, size_t align)
{
    if (align > 16) {
        if (align > A.ps || size > A.small_max)
            return nclasses;
        size = (size + align - 1) & ~(align - 1);
    }
    if (size > A.small_max)
        return nclasses;
    unsigned c = size_class(size);
    while (c < nclasses && class_size[c] % align)
        c++;
    return c;
}

/* ---- errors ---------------------------------------------------------- */

static void die(const char *what, const void *ptr)
{
    char hex[24];
    upager__say_safe(what, upager__hex(hex, (uintptr_t)ptr), "");
    abort();
}

__attribute__((noinline, noreturn)) static void bad_pointer(const char *fn, const void *ptr,
                                                           bool maybe_double)
{
    char msg[112];
    size_t off = (uintptr_t)ptr - (uintptr_t)A.base;
    if (off < A.bytes && atomic_load(&upager__g.ready) &&
        PG(off >> A.shift)->kind == OWNER_MAP)
        snprintf(msg, sizeof msg, "%s(): a file mapping (use upager_unmap): ", fn);
    else if (off < A.bytes && maybe_double)
        snprintf(msg, sizeof msg, "%s(): double free or pointer not returned by upager: ",
                 fn);
    else
        snprintf(msg, sizeof msg, "%s(): pointer not returned by upager: ", fn);
    die(msg, ptr);
    abort();
}

/* The owner word of ptr's page; aborts when ptr is outside the arena. */
static inline uintptr_t owner_of(const void *ptr, const char *fn)
{
    size_t off = (uintptr_t)ptr - (uintptr_t)A.base;
    if (unlikely(off >= A.bytes))
        bad_pointer(fn, ptr, false);
    return atomic_load_explicit(&A.omap[off >> A.shift], RELAXED);
}

/* ptr's slot in slab s, whose state byte must be LIVE; aborts otherwise. */
static inline _Atomic uint8_t *live_slot(struct slab *s, const void *ptr, const char *fn)
{
    size_t off = (size_t)((const char *)ptr - s->base);
    size_t slot = (size_t)(((unsigned __int128)off * s->recip) >> 64);
    if (unlikely(slot * s->size != off))
        bad_pointer(fn, ptr, false);
    _Atomic uint8_t *st = &s->state[slot];
    if (unlikely(atomic_load_explicit(st, RELAXED) != SLOT_LIVE))
        bad_pointer(fn, ptr, true);
    return st;
}

static inline void delta_add(struct heap *h, int64_t v)
{
    atomic_store_explicit(&h->delta, atomic_load_explicit(&h->delta, RELAXED) + v, RELAXED);
}

static inline void global_add(int64_t v)
{
    atomic_fetch_add_explicit(&upager__g.st.allocated_bytes, (size_t)v, RELAXED);
}

/* ---- slabs (class lock) ---------------------------------------------- */

static void list_remove(struct central *cen, struct slab *s)
{
    struct slab **head = s->on == ON_PARTIAL ? &cen->partial : &cen->empty;
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else if (s->on == ON_EMPTY)
        cen->empty_tail = s->prev;
    if (s->on == ON_EMPTY) {
        cen->nempty--;
        atomic_fetch_sub_explicit(&empty_bytes, s->npages * A.ps, RELAXED);
    }
    s->prev = s->next = NULL;
    s->on = ON_NONE;
}

static void push_partial(struct central *cen, struct slab *s)
{
    s->prev = NULL;
    s->next = cen->partial;
    if (s->next)
        s->next->prev = s;
    cen->partial = s;
    s->on = ON_PARTIAL;
}

static void push_empty(struct central *cen, struct slab *s)
{
    s->prev = NULL;
    s->next = cen->empty;
    if (s->next)
        s->next->prev = s;
    else
        cen->empty_tail = s;
    cen->empty = s;
    s->on = ON_EMPTY;
    cen->nempty++;
    atomic_fetch_add_explicit(&empty_bytes, s->npages * A.ps, RELAXED);
}

/* A new slab of class c, FREE throughout, on the partial list.
 * Precondition: the class lock is held (alloc_lock is taken here). */
static struct slab *slab_new(struct central *cen, unsigned c)
{
    size_t npages = class_pages[c];
    size_t nslots = npages * A.ps / class_size[c];
    struct slab *s = calloc(1, sizeof *s + nslots);
    if (!s)
        return NULL;
    pthread_mutex_lock(&upager__g.alloc_lock);
    if (upager__space_alloc(npages, 0, false, &s->first) != 0) {
        pthread_mutex_unlock(&upager__g.alloc_lock);
        free(s);
        return NULL;
    }
    s->npages = npages;
    s->base = A.base + (s->first << A.shift);
    s->size = class_size[c];
    s->cls = c;
    s->recip = UINT64_MAX / s->size + 1;
    s->nslots = s->nfree = (uint32_t)nslots;
    upager__pages_make_live(s->first, npages, OWNER_SLAB, s, 0);
    for (size_t i = 0; i < npages; i++)
        atomic_store_explicit(&A.omap[s->first + i], (uintptr_t)s, RELAXED);
    pthread_mutex_unlock(&upager__g.alloc_lock);
    push_partial(cen, s);
    return s;
}

/* Gives a list of empty slabs (linked by next, off every class list) back
 * to the pager: neighbouring slabs in one release.  Precondition: no lock
 * held (alloc_lock is taken here). */
static void slabs_release(struct slab *list)
{
    if (!list)
        return;
    /* Sort by address (the lists are short), then release runs. */
    struct slab *sorted = NULL;
    while (list) {
        struct slab *s = list, **pp = &sorted;
        list = list->next;
        while (*pp && (*pp)->first < s->first)
            pp = &(*pp)->next;
        s->next = *pp;
        *pp = s;
    }
    pthread_mutex_lock(&upager__g.alloc_lock);
    while (sorted) {
        size_t first = sorted->first, n = 0;
        while (sorted && sorted->first == first + n) {
            struct slab *s = sorted;
            sorted = s->next;
            for (size_t i = 0; i < s->npages; i++)
                atomic_store_explicit(&A.omap[s->first + i], 0, RELAXED);
            n += s->npages;
            free(s);
        }
        /* A failed release (mprotect at vm.max_map_count) keeps the
         * space out of use: its pages may still be accessible. */
        if (upager__pages_release(first, n, true) == 0)
            upager__space_free(first, n);
    }
    pthread_mutex_unlock(&upager__g.alloc_lock);
}

/* Milliseconds, coarse (a few ms): enough to age empty slabs. */
static uint32_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return (uint32_t)((uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000);
}

/* Moves to *victims the empty slabs of the class that are due to go back:
 * those empty for longer than EMPTY_DECAY_MS (all that were empty for half
 * that, so that they go in one batch), and the oldest while the empty
 * slabs of all classes exceed empty_max; the newest one of the class
 * stays either way.  Precondition: the class lock is held. */
static void empties_trim(struct central *cen, struct slab **victims)
{
    if (cen->nempty <= 1)
        return;
    uint32_t now = now_ms();
    bool aged = now - cen->empty_tail->since > EMPTY_DECAY_MS;
    while (cen->nempty > 1) {
        struct slab *v = cen->empty_tail;
        if (!(aged && now - v->since > EMPTY_DECAY_MS / 2) &&
            atomic_load_explicit(&empty_bytes, RELAXED) <= budget_bytes() / EMPTY_FRACTION)
            break;
        list_remove(cen, v);
        v->next = *victims;
        *victims = v;
    }
}

/* Slot `slot` of s goes back to FREE.  Precondition: the class lock is
 * held. */
static void slot_return(struct central *cen, struct slab *s, size_t slot)
{
    atomic_store_explicit(&s->state[slot], SLOT_FREE, RELAXED);
    if (slot < s->cursor)
        s->cursor = (uint32_t)slot;
    s->nfree++;
    if (s->nfree == s->nslots) {
        if (s->on == ON_PARTIAL)
            list_remove(cen, s);
        s->since = now_ms();
        push_empty(cen, s);
    } else if (s->on == ON_NONE) {
        push_partial(cen, s);
    }
}

/* Takes up to want FREE slots of class c into out[] (marked CACHED).
 * Returns how many; 0 when no memory is left.  Precondition: the class
 * lock is held. */
static unsigned slots_take(struct central *cen, unsigned c, struct ent *out, unsigned want)
{
    unsigned got = 0;
    while (got < want) {
        struct slab *s = cen->partial;
        if (!s && cen->empty) {
            s = cen->empty;
            list_remove(cen, s);
            push_partial(cen, s);
        }
        if (!s && !(s = slab_new(cen, c)))
            break;
        uint32_t i = s->cursor;
        for (; i < s->nslots && got < want; i++) {
            if (atomic_load_explicit(&s->state[i], RELAXED) != SLOT_FREE)
                continue;
            atomic_store_explicit(&s->state[i], SLOT_CACHED, RELAXED);
            out[got].p = s->base + (size_t)i * s->size;
            out[got].st = &s->state[i];
            got++;
            s->nfree--;
        }
        s->cursor = i;
        if (s->nfree == 0)
            list_remove(cen, s);
        else if (i >= s->nslots) /* cannot happen: nfree counts FREE slots */
            die("slab bookkeeping is inconsistent at ", s->base);
    }
    return got;
}

/* ---- thread heaps ----------------------------------------------------- */

/* Returns the first k cached slots of class c of h to their slabs. */
static void flush(struct heap *h, unsigned c, unsigned k)
{
    struct central *cen = &central[c];
    struct slab *victims = NULL;
    upager__lock(&cen->lock);
    for (unsigned i = 0; i < k; i++) {
        struct ent *e = &h->e[c][i];
        size_t off = (size_t)(e->p - A.base);
        struct slab *s = (struct slab *)atomic_load_explicit(&A.omap[off >> A.shift], RELAXED);
        slot_return(cen, s, (size_t)(e->st - s->state));
    }
    empties_trim(cen, &victims);
    upager__unlock(&cen->lock);
    unsigned n = h->n[c];
    memmove(&h->e[c][0], &h->e[c][k], (n - k) * sizeof(struct ent));
    h->n[c] = (uint16_t)(n - k);
    slabs_release(victims);
}

/* Fills the empty stack of class c of h halfway.  Returns the count. */
static unsigned refill(struct heap *h, unsigned c)
{
    struct central *cen = &central[c];
    unsigned want = h->cap[c] / 2 ? h->cap[c] / 2 : 1;
    struct ent tmp[BIN_MAX];
    struct slab *victims = NULL;
    upager__lock(&cen->lock);
    unsigned got = slots_take(cen, c, tmp, want);
    empties_trim(cen, &victims);
    upager__unlock(&cen->lock);
    slabs_release(victims);
    /* Lowest address on top: popped first. */
    for (unsigned i = 0; i < got; i++)
        h->e[c][i] = tmp[got - 1 - i];
    h->n[c] = (uint16_t)got;
    return got;
}

static void heap_exit(void *arg)
{
    struct heap *h = arg;
    tls_heap = NULL;
    tls_dead = true;
    if (h->gen != alloc_gen) { /* made before a fork: nothing of it is here */
        free(h);
        return;
    }
    for (unsigned c = 0; c < nclasses; c++) {
        if (h->n[c])
            flush(h, c, h->n[c]);
    }
    pthread_mutex_lock(&heaps_lock);
    if (h->prev)
        h->prev->next = h->next;
    else
        heaps = h->next;
    if (h->next)
        h->next->prev = h->prev;
    global_add(atomic_load_explicit(&h->delta, RELAXED));
    pthread_mutex_unlock(&heaps_lock);
    free(h);
}

/* The calling thread's heap, made on first use; NULL when the thread is
 * exiting (its heap is gone) or no memory is left for one. */
static struct heap *heap_get(void)
{
    struct heap *h = tls_heap;
    if (h || tls_dead || !key_made)
        return h;
    h = calloc(1, sizeof *h + nclasses * sizeof h->e[0]);
    if (!h)
        return NULL;
    for (unsigned c = 0; c < nclasses; c++)
        h->cap[c] = class_cap[c];
    pthread_mutex_lock(&heaps_lock);
    h->gen = alloc_gen;
    h->next = heaps;
    if (heaps)
        heaps->prev = h;
    heaps = h;
    pthread_mutex_unlock(&heaps_lock);
    pthread_setspecific(heap_key, h);
    tls_heap = h;
    return h;
}

/* Live bytes: the global count and every heap's share of it. */
size_t upager__alloc_allocated_bytes(void)
{
    pthread_mutex_lock(&heaps_lock);
    size_t sum = atomic_load_explicit(&upager__g.st.allocated_bytes, RELAXED);
    for (struct heap *h = heaps; h; h = h->next)
        sum += (size_t)atomic_load_explicit(&h->delta, RELAXED);
    pthread_mutex_unlock(&heaps_lock);
    return sum;
}

/* ---- runs (alloc_lock) ------------------------------------------------ */

static void run_unlink(struct large *l)
{
    if (l->prev)
        l->prev->next = l->next;
    else
        runs = l->next;
    if (l->next)
        l->next->prev = l->prev;
}

static void run_destroy(struct large *l)
{
    atomic_store_explicit(&A.omap[l->first], 0, RELAXED);
    if (upager__pages_release(l->first, l->npages, true) == 0)
        upager__space_free(l->first, l->reserved);
    else if (l->reserved > l->npages) /* the run stays out of use; the rest */
        upager__space_free(l->first + l->npages, l->reserved - l->npages);
    run_unlink(l);
    free(l);
}

/* Gives up every reservation beyond the runs' ends, and the run cache:
 * the arena is short of space. */
static void runs_shrink(void)
{
    while (lcache_n)
        run_destroy(lcache[--lcache_n]);
    lcache_bytes = 0;
    for (struct large *l = runs; l; l = l->next) {
        if (l->reserved > l->npages) {
            upager__space_free(l->first + l->npages, l->reserved - l->npages);
            l->reserved = l->npages;
        }
    }
}

static struct large *run_new(size_t npages, size_t align)
{
    struct large *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    size_t first, reserved = npages <= (A.bytes >> A.shift) / 2 ? 2 * npages : npages;
    if (upager__space_alloc(reserved, align, true, &first) != 0) {
        reserved = npages;
        if (upager__space_alloc(npages, align, true, &first) != 0) {
            runs_shrink();
            if (upager__space_alloc(npages, align, true, &first) != 0) {
                free(l);
                return NULL;
            }
        }
    }
    l->first = first;
    l->npages = npages;
    l->reserved = reserved;
    l->live = true;
    l->next = runs;
    if (runs)
        runs->prev = l;
    runs = l;
    upager__pages_make_live(first, npages, OWNER_LARGE, l, 0);
    atomic_store_explicit(&A.omap[first], (uintptr_t)l | 1, RELAXED);
    return l;
}

/* A cached run that can hold npages (growing into its reservation), or
 * NULL. */
static struct large *lcache_take(size_t npages)
{
    /* Best fit: the run whose live pages are closest to npages, among
     * those that can hold it (growing into their reservation: fresh
     * pages, no copy) and hold at most twice as much. */
    unsigned best = LCACHE_N;
    size_t best_d = SIZE_MAX;
    for (unsigned i = lcache_n; i-- > 0;) {
        struct large *l = lcache[i];
        if (l->reserved < npages || l->npages > 2 * npages)
            continue;
        size_t d = l->npages > npages ? l->npages - npages : npages - l->npages;
        if (d < best_d) {
            best = i;
            best_d = d;
        }
    }
    if (best == LCACHE_N)
        return NULL;
    struct large *l = lcache[best];
    memmove(&lcache[best], &lcache[best + 1], (lcache_n - best - 1) * sizeof lcache[0]);
    lcache_n--;
    lcache_bytes -= l->npages * A.ps;
    if (l->npages < npages) {
        upager__pages_make_live(l->first + l->npages, npages - l->npages, OWNER_LARGE, l, 0);
        l->npages = npages;
    }
    l->live = true;
    return l;
}

static void run_free(struct large *l)
{
    size_t bytes = l->npages * A.ps;
    l->live = false;
    size_t max_bytes = budget_bytes() / 16 < LCACHE_BYTES ? budget_bytes() / 16 : LCACHE_BYTES;
    if (bytes > LCACHE_RUN || bytes > max_bytes) {
        run_destroy(l);
        return;
    }
    while (lcache_n && (lcache_n == LCACHE_N || lcache_bytes + bytes > max_bytes)) {
        struct large *old = lcache[0];
        memmove(&lcache[0], &lcache[1], (lcache_n - 1) * sizeof lcache[0]);
        lcache_n--;
        lcache_bytes -= old->npages * A.ps;
        run_destroy(old);
    }
    lcache[lcache_n++] = l;
    lcache_bytes += bytes;
}

static void *large_alloc(size_t size, size_t align, bool zero)
{
    if (size > SIZE_MAX - A.ps) {
        errno = ENOMEM;
        return NULL;
    }
    size_t npages = (size + A.ps - 1) >> A.shift;
    pthread_mutex_lock(&upager__g.alloc_lock);
    struct large *l = NULL;
    bool recycled = false;
    if (align <= A.ps)
        recycled = (l = lcache_take(npages)) != NULL;
    if (!l)
        l = run_new(npages, align);
    pthread_mutex_unlock(&upager__g.alloc_lock);
    if (!l) {
        errno = ENOMEM;
        return NULL;
    }
    global_add((int64_t)(l->npages * A.ps));
    char *p = A.base + (l->first << A.shift);
    if (zero && recycled) /* a new run reads as zeros; a cached one does not */
        memset(p, 0, size); /* no lock held: it may fault */
    return p;
}

/* The live run starting at ptr; aborts otherwise.  Precondition:
 * alloc_lock held (it is released before aborting). */
static struct large *live_run(uintptr_t o, const void *ptr, const char *fn)
{
    struct large *l = (struct large *)(o & ~(uintptr_t)1);
    if (!l->live || ptr != A.base + (l->first << A.shift)) {
        pthread_mutex_unlock(&upager__g.alloc_lock);
        bad_pointer(fn, ptr, true);
    }
    return l;
}

/* ---- the API ----------------------------------------------------------- */

__attribute__((noinline)) static void *alloc_slow(size_t size, size_t align, bool zero)
{
    int err = upager__ensure_init();
    if (err) {
        errno = err;
        return NULL;
    }
    if (alloc_broken) {
        errno = ENOMEM;
        return NULL;
    }
    if (size == 0)
        size = 1;
    unsigned c = class_for(size, align);
    if (c >= nclasses)
        return large_alloc(size, align, zero);
    struct heap *h = heap_get();
    if (h) {
        if (h->n[c] == 0 && refill(h, c) == 0) {
            errno = ENOMEM;
            return NULL;
        }
        struct ent *e = &h->e[c][--h->n[c]];
        atomic_store_explicit(e->st, SLOT_LIVE, RELAXED);
        delta_add(h, class_size[c]);
        return e->p;
    }
    /* No heap (the thread is exiting): straight from the slabs. */
    struct ent e;
    upager__lock(&central[c].lock);
    unsigned got = slots_take(&central[c], c, &e, 1);
    upager__unlock(&central[c].lock);
    if (!got) {
        errno = ENOMEM;
        return NULL;
    }
    atomic_store_explicit(e.st, SLOT_LIVE, RELAXED);
    global_add(class_size[c]);
    return e.p;
}

void *upager_malloc(size_t size)
{
    struct heap *h = tls_heap;
    if (likely(h != NULL && size <= A.small_max)) {
        unsigned c = size_class(size);
        unsigned n = h->n[c];
        if (likely(n)) {
            struct ent *e = &h->e[c][n - 1];
            h->n[c] = (uint16_t)(n - 1);
            atomic_store_explicit(e->st, SLOT_LIVE, RELAXED);
            delta_add(h, class_size[c]);
            return e->p;
        }
    }
    return alloc_slow(size, 16, false);
}

void *upager_calloc(size_t nmemb, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(nmemb, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (total > A.small_max || !tls_heap) {
        void *p = alloc_slow(total, 16, true); /* runs: zeroed by large_alloc */
        if (p && total <= A.small_max)
            memset(p, 0, total);
        return p;
    }
    void *p = upager_malloc(total);
    if (p)
        memset(p, 0, total); /* no lock held: it may fault */
    return p;
}

void *upager_aligned_alloc(size_t alignment, size_t size)
{
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    if (alignment <= 16)
        return upager_malloc(size);
    return alloc_slow(size, alignment, false);
}

static void free_large(void *ptr, uintptr_t o, const char *fn)
{
    if (!o)
        bad_pointer(fn, ptr, true);
    pthread_mutex_lock(&upager__g.alloc_lock);
    struct large *l = live_run(o, ptr, fn);
    global_add(-(int64_t)(l->npages * A.ps));
    run_free(l);
    pthread_mutex_unlock(&upager__g.alloc_lock);
}

__attribute__((noinline)) static void free_small_slow(struct slab *s, _Atomic uint8_t *st,
                                                      void *ptr)
{
    unsigned c = s->cls;
    struct heap *h = heap_get();
    if (h) {
        if (h->n[c] >= h->cap[c])
            flush(h, c, h->cap[c] / 2 ? h->cap[c] / 2 : 1);
        atomic_store_explicit(st, SLOT_CACHED, RELAXED);
        h->e[c][h->n[c]++] = (struct ent){ ptr, st };
        delta_add(h, -(int64_t)s->size);
        return;
    }
    struct central *cen = &central[c];
    struct slab *victims = NULL;
    global_add(-(int64_t)s->size);
    upager__lock(&cen->lock);
    slot_return(cen, s, (size_t)(st - s->state));
    empties_trim(cen, &victims);
    upager__unlock(&cen->lock);
    slabs_release(victims);
}

void upager_free(void *ptr)
{
    if (!ptr)
        return;
    uintptr_t o = owner_of(ptr, "upager_free");
    if (likely(o && !(o & 1))) {
        struct slab *s = (struct slab *)o;
        _Atomic uint8_t *st = live_slot(s, ptr, "upager_free");
        struct heap *h = tls_heap;
        unsigned c = s->cls;
        if (likely(h != NULL && h->n[c] < h->cap[c])) {
            atomic_store_explicit(st, SLOT_CACHED, RELAXED);
            h->e[c][h->n[c]++] = (struct ent){ ptr, st };
            delta_add(h, -(int64_t)s->size);
            return;
        }
        free_small_slow(s, st, ptr);
        return;
    }
    free_large(ptr, o, "upager_free");
}

size_t upager_usable_size(const void *ptr)
{
    if (!ptr)
        return 0;
    uintptr_t o = owner_of(ptr, "upager_usable_size");
    if (o && !(o & 1)) {
        struct slab *s = (struct slab *)o;
        live_slot(s, ptr, "upager_usable_size");
        return s->size;
    }
    if (!o)
        bad_pointer("upager_usable_size", ptr, true);
    pthread_mutex_lock(&upager__g.alloc_lock);
    size_t n = live_run(o, ptr, "upager_usable_size")->npages * A.ps;
    pthread_mutex_unlock(&upager__g.alloc_lock);
    return n;
}

/* Moves the block to a new one of size bytes, copying keep bytes. */
static void *realloc_move(void *ptr, size_t keep, size_t size)
{
    void *q = upager_malloc(size);
    if (!q)
        return NULL;
    memcpy(q, ptr, keep < size ? keep : size); /* no lock held: it faults */
    upager_free(ptr);
    return q;
}

void *upager_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return upager_malloc(size);
    if (size == 0) {
        upager_free(ptr);
        return NULL;
    }
    uintptr_t o = owner_of(ptr, "upager_realloc");
    if (o && !(o & 1)) {
        struct slab *s = (struct slab *)o;
        live_slot(s, ptr, "upager_realloc");
        if (size <= s->size) /* shrinking stays in place */
            return ptr;
        return realloc_move(ptr, s->size, size);
    }
    if (!o)
        bad_pointer("upager_realloc", ptr, true);
    if (size > SIZE_MAX - A.ps) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = (size + A.ps - 1) >> A.shift;
    pthread_mutex_lock(&upager__g.alloc_lock);
    struct large *l = live_run(o, ptr, "upager_realloc");
    size_t old = l->npages;
    if (need <= old) {
        /* Shrinking stays in place; to half or less, the pages past the
         * new end go back (they stay reserved for growing again). */
        if (need * 2 <= old && upager__pages_release(l->first + need, old - need, true) == 0) {
            l->npages = need;
            global_add(-(int64_t)((old - need) * A.ps));
        }
        pthread_mutex_unlock(&upager__g.alloc_lock);
        return ptr;
    }
    if (need <= l->reserved) { /* grow into the reservation: no copy */
        upager__pages_make_live(l->first + old, need - old, OWNER_LARGE, l, 0);
        l->npages = need;
        pthread_mutex_unlock(&upager__g.alloc_lock);
        global_add((int64_t)((need - old) * A.ps));
        return ptr;
    }
    pthread_mutex_unlock(&upager__g.alloc_lock);
    return realloc_move(ptr, old * A.ps, size);
}

/* ---- start-up and fork ------------------------------------------------- */

/* In the child of fork: the parent's heaps and slabs stay behind (the
 * child has no arena); the library starts afresh on next use. */
static void alloc_after_fork(void)
{
    tls_heap = NULL;
    tls_dead = false;
    if (key_made)
        pthread_setspecific(heap_key, NULL);
    A.bytes = 0;
    A.small_max = 0;
    pthread_mutex_init(&heaps_lock, NULL);
    heaps = NULL;
}

void upager__alloc_init(void)
{
    struct upager__global *g = &upager__g;
    static bool registered;
    if (!registered) {
        registered = true;
        key_made = pthread_key_create(&heap_key, heap_exit) == 0;
        pthread_atfork(NULL, NULL, alloc_after_fork);
    }
    size_t ps = g->page_size;
    size_t small_max = ps < ((size_t)64 << 10) ? (size_t)64 << 10 : ps;
    nclasses = size_class(small_max) + 1;
    for (unsigned c = 0; c < nclasses; c++) {
        size_t sz = class_bytes(c);
        size_t bytes = 8 * sz > SLAB_MIN ? 8 * sz : SLAB_MIN;
        size_t pages = (bytes + ps - 1) / ps;
        if (pages * ps > SLAB_MAX && pages > 1)
            pages = SLAB_MAX / ps;
        class_size[c] = (uint32_t)sz;
        class_pages[c] = (uint32_t)pages;
        size_t cap = BIN_BYTES / sz;
        class_cap[c] = (uint16_t)(cap < 2 ? 2 : cap > BIN_MAX ? BIN_MAX : cap);
        memset(&central[c], 0, sizeof central[c]);
    }
    atomic_store(&empty_bytes, 0);
    lcache_n = 0;
    lcache_bytes = 0;
    runs = NULL;

    /* The owner map: a word per arena page, committed where touched. */
    if (A.omap)
        munmap((void *)A.omap, A.omap_bytes); /* the parent's, in a child */
    A.omap_bytes = g->npages * sizeof(uintptr_t);
    void *m = mmap(NULL, A.omap_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    alloc_broken = m == MAP_FAILED;
    A.omap = alloc_broken ? NULL : m;

    pthread_mutex_lock(&heaps_lock);
    heaps = NULL;
    alloc_gen++;
    pthread_mutex_unlock(&heaps_lock);
    A.base = g->base;
    A.shift = g->page_shift;
    A.ps = ps;
    A.bytes = alloc_broken ? 0 : g->npages << g->page_shift;
    A.small_max = alloc_broken ? 0 : small_max;
}
