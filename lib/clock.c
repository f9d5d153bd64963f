/*
 * clock.c - frames, the clock hand, eviction and the budget.
 *
 * NOTES ON THE DESIGN
 *
 * A frame is a slot for one resident page.  The frames in use hold at most
 * the budget (invariant 1); the frame table maps each slot to its page and
 * the hand sweeps the slots in order.  Reference bits are real: a page the
 * program can access has PF_REF set; the hand "cools" it by clearing the bit
 * and making the page PROT_NONE while keeping its frame, so the next access
 * is a cheap soft fault that sets the bit again (fault.c).  A page the hand
 * finds cooled has not been touched for a whole turn: it is the victim.
 *
 *            allocation              fault (fault.c)
 *     FREE ------------> EMPTY ----------------------+
 *       ^                  ^                          v
 *       | free        evict, never stored      RESIDENT, REF: PROT_READ
 *       |                  |                    |  first write: DIRTY, PROT_READ|WRITE
 *   (any live state)     STORED <--- evict ---+ |  hand: clear REF, PROT_NONE (cooled)
 *                          |     (write back   | |  access: REF again (soft fault)
 *                          |      if DIRTY)    | v
 *                          +-- fault: read --> COOLED -- hand again --> evict
 *
 * Invariants
 *  1. The memory of the resident pages (upager__clock_memory, in blocks:
 *     a page read in part counts the blocks it holds) stays within the
 *     budget, except while write-backs fail (one line says so).
 *  2. A RESIDENT page is accessible iff PF_REF, writable iff PF_REF and
 *     PF_DIRTY (a page read in part: only its blocks, one run of them at
 *     a time, fault.c); a page that is not RESIDENT is PROT_NONE with no
 *     frame.
 *  3. A page's state, flags and frame change only under its lock; the frame
 *     table and the counters here only under clock_lock.
 *  4. Lock order: a page lock, then clock_lock.  Under clock_lock other
 *     page locks are only tried, never waited for, so no cycle can form.
 *  5. No I/O under clock_lock: the victim leaves the table, the lock is
 *     dropped, then the victim is written and its frame dropped.
 *
 * Write-back mostly happens before the hand comes back: a dirty page the
 * hand cools is marked (wb) for the I/O threads, which write it in the
 * background (ioq.c) unless the program touches it again first -- the
 * kernel's flusher writing what has not been written for a while.  A page
 * the program wrote again after such a write (WB_EARLY) is rewritten in
 * place: it is not written early again, only once it is a victim.  A
 * cooled dirty page the hand meets is passed over, and evicted at its next
 * visit, clean.  Only when it has passed over DIRTY_SKIP of them, or gone
 * round once, does the hand take the oldest dirty one and write it itself.
 *  6. Pinned pages (pins > 0) are never chosen.
 *
 * Once the budget has been full, an I/O thread runs the hand ahead of the
 * faults, so that they find a free frame (background reclaim, below).  A
 * page read in part (fault.c) is cooled and evicted like any other.
 *
 * Open runs are what keeps the kernel's mapping count bounded: a whole
 * accessible page, or a stretch of open blocks of a page read in part, is
 * one run and costs at most two mappings, and at most max_open runs, a
 * third of vm.max_map_count / 2, are open at once (below).  init.c chooses
 * the page size so that the budget in pages stays under max_open, so whole
 * pages may all be open; pages read in part take more frames, up to a
 * block each, and the hand cools them to keep the bound.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

static int prot_of(const struct upager__page *p)
{
    return (p->flags & PF_DIRTY) ? PROT_READ | PROT_WRITE : PROT_READ;
}

static bool reclaim_on; /* a fault had to evict: the budget is full (below) */
static bool pressed;    /* ... whether or not there is a reserve        */

bool upager__clock_pressed(void)
{
    return __atomic_load_n(&pressed, __ATOMIC_RELAXED);
}

int upager__clock_init(size_t limit)
{
    struct upager__global *g = &upager__g;
    size_t n = g->nframes;
    g->frame_page = mmap(NULL, n * sizeof(size_t) * 2, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->frame_page == MAP_FAILED)
        return errno;
    /* Committed as it is used: slots are handed out from the low end
     * (take_slot), and the stack of free ones grows with the frees. */
    g->free_frames = g->frame_page + n;
    g->nfree = 0;
    g->hand = 0;
    g->used = 0;
    g->missing = 0;
    g->limit = limit;
    g->pinned = 0;
    g->peak = 0;
    g->span = 0;
    reclaim_on = false;
    pressed = false;
    return 0;
}

/* Something that may let the clock make progress happened: a frame came
 * free, a page was unpinned or unlocked by an eviction.  Waiters sleep on
 * the counter, with a timeout, since a page that was only busy (locked by
 * a fault) frees up without a signal. */
static _Atomic uint32_t clock_event;
static _Atomic uint32_t clock_waiters;

void upager__clock_signal(void)
{
    atomic_fetch_add(&clock_event, 1);
    if (atomic_load(&clock_waiters))
        upager__futex_wake(&clock_event, INT_MAX);
}

/* Waits for upager__clock_signal, at most usec.  `seen` is clock_event as
 * read under clock_lock, before the caller dropped it, so that no signal
 * is missed.  Precondition: clock_lock not held. */
static void clock_wait(uint32_t seen, long usec)
{
    struct timespec ts = {usec / 1000000, (usec % 1000000) * 1000};
    atomic_fetch_add(&clock_waiters, 1);
    if (atomic_load(&clock_event) == seen) {
        int saved = errno;
        syscall(SYS_futex, (uint32_t *)&clock_event, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
        errno = saved;
    }
    atomic_fetch_sub(&clock_waiters, 1);
}

/* Memory in use and the budget, in blocks: a whole page costs nblocks, a
 * page read in part (fault.c) the blocks it holds.  So pages read in part
 * take frames beyond `limit`, up to a frame per block of the budget
 * (nframes), while the memory stays within the budget.
 * Precondition: clock_lock. */
size_t upager__clock_memory(void)
{
    return upager__g.used * upager__g.nblocks - upager__g.missing;
}

static size_t budget_blocks(void)
{
    return upager__g.limit * upager__g.nblocks;
}

/* A frame slot can be had.  Precondition: clock_lock. */
static bool slot_free(void)
{
    return upager__g.nfree || upager__g.span < upager__g.nframes;
}

/* Hands out an unused slot to `page`, for `blocks` blocks of memory: a
 * freed one, else the next never used.  Precondition: clock_lock,
 * slot_free(). */
static size_t take_slot(size_t page, size_t blocks)
{
    struct upager__global *g = &upager__g;
    size_t f = g->nfree ? g->free_frames[--g->nfree] : g->span;
    g->frame_page[f] = page;
    if (f + 1 > g->span)
        g->span = f + 1;
    g->used++;
    g->missing += g->nblocks - blocks;
    if (upager__clock_memory() > g->peak)
        g->peak = upager__clock_memory();
    return f;
}

/* Takes a RESIDENT page out of memory, keeping its contents (written back
 * when dirty).  Its frame slot is left to the caller.  Precondition: caller
 * holds the page lock, not clock_lock; the page is not pinned.  On a failed
 * write-back or frame drop the page stays resident (cooled: the next access
 * is a soft fault), and nothing is lost. */
static int evict_page(size_t page)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    int err;
    if (p->flags & PF_REF) { /* stop the program's access first */
        if ((err = upager__protect(page, 1, PROT_NONE))) {
            /* Back as it was; a page read in part stays referenced with
             * whatever blocks the failed call left open (fault.c). */
            if (!p->blocks)
                upager__protect(page, 1, prot_of(p));
            return err;
        }
        upager__flags(p, p->flags & ~PF_REF);
    }
    if (p->flags & PF_DIRTY) {
        if ((err = upager__io_write_page(page)))
            return err; /* stays resident, dirty and cooled */
        p->flags = (uint8_t)((p->flags & ~PF_DIRTY) | PF_INSTORE);
        atomic_fetch_add_explicit(&g->st.dirty_evictions, 1, memory_order_relaxed);
    }
    if ((err = upager__frames_drop(page, 1)))
        return err; /* stays resident, clean and cooled */
    p->state = (p->flags & PF_INSTORE) ? PAGE_STORED : PAGE_EMPTY;
    upager__flags(p, p->flags & ~(PF_REF | PF_DIRTY | PF_RA | PF_RAMARK));
    p->wb = 0;
    p->blocks = 0;
    atomic_fetch_add_explicit(&g->st.evictions, 1, memory_order_relaxed);
    return 0;
}

#define COOL_RUN 64    /* pages cooled by one mprotect     */
#define EVICT_BATCH 16 /* pages evicted by one visit       */

struct batch {
    size_t n;
    int err;                   /* first write-back or frame-drop error */
    bool cool_failed;          /* a cooling mprotect failed            */
    size_t page[EVICT_BATCH];  /* locked, RESIDENT, cooled, not pinned */
    size_t frame[EVICT_BATCH];
    size_t missing[EVICT_BATCH]; /* PAGE_MISSING before the eviction   */
    bool ok[EVICT_BATCH];      /* evicted; its frame is free          */
};

/* q is resident, referenced, not pinned, and was opened no later than the
 * page whose protection generation is gen (generations come from one
 * counter, in the order of the mprotects): not more recently used. */
static bool older(const struct upager__page *q, uint32_t gen)
{
    return q->state == PAGE_RESIDENT && (q->flags & PF_REF) && !q->pins &&
           (int32_t)(q->gen - gen) <= 0;
}

/* Cools `page` and the referenced pages that follow it in the arena and
 * were opened no later than it, up to COOL_RUN, with one mprotect; the
 * dirty ones are marked for the I/O threads to write back.
 *
 * The pages of a run sit in whatever frames were free when it was loaded
 * (the victims before them were runs too, and several threads load at
 * once), seldom in the slots the hand comes to next; cooled one mprotect
 * each, a sequential scan paid a system call and a TLB shootdown per page.
 * So the pages opened with this one (one mprotect, one generation: a
 * read-ahead window, a run of soft faults in order) or before it are
 * cooled at once -- never one opened later, which the program may still
 * be using -- and a page of the run whose frame the hand has not reached
 * is marked WB_AHEAD: when the hand gets there it only clears the mark and
 * passes, so the page's second chance still starts at the hand's visit, as
 * the clock means it to.  When the run does sit in the next slots the hand
 * moves past it.
 *
 * Precondition: caller holds clock_lock and the lock of `page`, which is
 * RESIDENT, referenced and not pinned; it is unlocked here.  clock_lock is
 * dropped around the mprotect.  Returns false when the mprotect failed
 * (vm.max_map_count). */
static bool cool_run(size_t page, size_t frame)
{
    struct upager__global *g = &upager__g;
    size_t n = 1, next = 1; /* pages, and of them those in the slots after frame */
    uint32_t gen = PG(page)->gen;
    while (n < COOL_RUN && page + n < g->npages) {
        struct upager__page *q = PG(page + n);
        if (!older(q, gen) || !upager__trylock(&q->lock))
            break;
        if (!older(q, gen)) {
            upager__unlock(&q->lock);
            break;
        }
        if (next == n && q->frame == frame + n)
            next++;
        n++;
    }
    g->hand = frame + next >= g->span ? 0 : frame + next; /* the hand passed them */
    /* The pages are locked: the mprotect needs no clock_lock, and other
     * threads' faults should not wait for it. */
    upager__unlock(&g->clock_lock);
    /* If the mprotect fails (vm.max_map_count), part of the run may be
     * PROT_NONE already: the pages stay referenced, which is safe -- an
     * access there faults and the handler applies the protection again --
     * whereas a page taken for cooled while still writable could be
     * evicted under a write. */
    bool cooled = upager__protect(page, n, PROT_NONE) == 0, dirty = false;
    for (size_t i = 0; i < n; i++) {
        struct upager__page *q = PG(page + i);
        if (cooled) {
            upager__flags(q, q->flags & ~PF_REF);
            q->wb = (uint8_t)(i < next ? q->wb & ~WB_AHEAD : q->wb | WB_AHEAD);
            if ((q->flags & PF_DIRTY) && !(q->wb & WB_EARLY)) {
                q->wb |= WB_WANTED; /* written back before the hand is back */
                dirty = true;
            }
        }
        upager__unlock(&q->lock);
    }
    if (dirty)
        upager__ioq_clean();
    upager__lock(&g->clock_lock);
    return cooled;
}

/* Adds `page` to b when it sits in `frame` (FRAME_NONE: in whichever frame
 * it has), cooled, unpinned and free to lock.  Returns whether it did.
 * Precondition: clock_lock held. */
static bool batch_add(struct batch *b, size_t page, size_t frame, bool clean_only)
{
    struct upager__global *g = &upager__g;
    struct upager__page *q = PG(page);
    uint8_t no = (uint8_t)(PF_REF | (clean_only ? PF_DIRTY : 0));
    if (frame == FRAME_NONE)
        frame = q->frame; /* read unlocked: checked again below */
    if (frame >= g->span || g->frame_page[frame] != page || (q->flags & no) || q->pins ||
        !upager__trylock(&q->lock))
        return false;
    if (q->state != PAGE_RESIDENT || q->frame != frame || (q->flags & no) || q->pins) {
        upager__unlock(&q->lock);
        return false;
    }
    b->page[b->n] = page;
    b->frame[b->n] = q->frame;
    b->missing[b->n] = PAGE_MISSING(q);
    b->ok[b->n] = false;
    b->n++;
    return true;
}

/* The hand.  Cools referenced pages and stops at the first cooled one: the
 * victim.  The cooled pages that follow it in the arena join it, in
 * whatever frames they are (a sequential run is loaded by several threads
 * at once, so its frames interleave), so that one visit frees a run with
 * one punch; cooled, they have not been touched since the hand last
 * passed them.  When they sit in the next slots the hand moves past them
 * as it would have.  Fills b with locked
 * pages, taken out of the frame table; b->n is 0 when two turns found
 * nothing (all pinned or busy).  Precondition: caller holds clock_lock.
 *
 * While the I/O threads run (and their writes succeed), a cooled page that
 * is still dirty is passed over (the cleaner is asked to write it) for up to DIRTY_SKIP of them:
 * the fault then waits for no write-back.  Past that, the dirty victim is
 * taken and written here, so that a program that dirties pages faster than
 * the store takes them is slowed down to the store's speed. */
#define DIRTY_SKIP 32
static void find_victims(struct batch *b, size_t max)
{
    struct upager__global *g = &upager__g;
    size_t span = g->span; /* sweep only the slots ever handed out */
    b->n = 0;
    b->err = 0;
    b->cool_failed = false;
    size_t skipped = upager__ioq_cleaning() ? 0 : DIRTY_SKIP;
    size_t first_pg = FRAME_NONE, first_f = 0; /* the first dirty page passed over */
    for (size_t scanned = 0; span && scanned < 2 * span + 1; scanned++) {
        size_t f = g->hand, pg;
        /* Dirty pages are passed over in the first turn only: in a second
         * one the hand meets pages it cooled itself a moment ago (hot
         * ones, perhaps), which are no one's victims yet. */
        bool clean_only = skipped < DIRTY_SKIP && scanned < span;
        if (!clean_only && first_pg != FRAME_NONE) {
            /* Enough dirty pages passed over: the oldest of them goes. */
            f = first_f;
            pg = first_pg;
            first_pg = FRAME_NONE;
            if (!batch_add(b, pg, f, false))
                continue;
        } else {
            g->hand = f + 1 >= span ? 0 : f + 1;
            pg = g->frame_page[f];
            if (pg == FRAME_NONE)
                continue;
            struct upager__page *p = PG(pg);
            if (!upager__trylock(&p->lock))
                continue;
            if (p->state != PAGE_RESIDENT || p->frame != f || p->pins) {
                upager__unlock(&p->lock);
                continue;
            }
            if (p->flags & PF_REF) { /* second chance: cool it */
                if (!cool_run(pg, f))
                    b->cool_failed = true;
                continue;
            }
            if (p->wb & WB_AHEAD) { /* cooled with a run: its chance starts now */
                p->wb &= (uint8_t)~WB_AHEAD;
                upager__unlock(&p->lock);
                continue;
            }
            bool dirty = (p->flags & PF_DIRTY) != 0;
            if (clean_only && dirty)
                p->wb |= WB_WANTED; /* for the cleaner, until referenced again */
            upager__unlock(&p->lock);
            if (clean_only && dirty) { /* left to the cleaner, for now */
                if (skipped++ == 0) {
                    first_pg = pg;
                    first_f = f;
                    upager__ioq_clean();
                }
                continue;
            }
            if (!batch_add(b, pg, f, clean_only))
                continue;
        }
        /* The victim's cooled arena neighbours go with it. */
        while (b->n < max && pg + b->n < g->npages &&
               batch_add(b, pg + b->n, FRAME_NONE, clean_only))
            ;
        size_t next = 1; /* of them in the slots that follow f */
        while (next < b->n && b->frame[next] == f + next)
            next++;
        if (f == g->hand || (f < g->hand ? g->hand - f : g->hand + span - f) <= next)
            g->hand = f + next >= span ? 0 : f + next;
        for (size_t i = 0; i < b->n; i++)
            g->frame_page[b->frame[i]] = FRAME_NONE; /* out of the hand's way */
        return;
    }
}

/* Evicts the pages of b: dirty ones written back, then the frames of the
 * run dropped with as few punches as possible.  A page whose write-back
 * fails stays resident, cooled and dirty (ok false).  Precondition: the
 * pages are locked, clock_lock is not held. */
static size_t evict_batch(struct batch *b)
{
    struct upager__global *g = &upager__g;
    size_t done = 0;
    for (size_t i = 0; i < b->n; i++) {
        struct upager__page *p = PG(b->page[i]);
        if (p->flags & PF_DIRTY) {
            int err = upager__io_write_page(b->page[i]);
            if (err) {
                if (!b->err)
                    b->err = err;
                continue;
            }
            p->flags = (uint8_t)((p->flags & ~PF_DIRTY) | PF_INSTORE);
            atomic_fetch_add_explicit(&g->st.dirty_evictions, 1, memory_order_relaxed);
        }
        b->ok[i] = true;
        done++;
    }
    for (size_t i = 0; i < b->n;) { /* runs of consecutive evicted pages */
        if (!b->ok[i]) {
            i++;
            continue;
        }
        size_t j = i + 1;
        while (j < b->n && b->ok[j] && b->page[j] == b->page[j - 1] + 1)
            j++;
        int err = upager__frames_drop(b->page[i], j - i);
        for (size_t k = i; k < j; k++) {
            struct upager__page *p = PG(b->page[k]);
            if (err) { /* written back, so clean: it stays resident, cooled */
                b->ok[k] = false;
                done--;
                continue;
            }
            p->state = (p->flags & PF_INSTORE) ? PAGE_STORED : PAGE_EMPTY;
            p->flags &= (uint8_t) ~(PF_RA | PF_RAMARK);
            p->wb = 0;
            p->blocks = 0;
        }
        if (err && !b->err)
            b->err = err;
        i = j;
    }
    atomic_fetch_add_explicit(&g->st.evictions, done, memory_order_relaxed);
    return done;
}

/* Gives the frames of b back (or to their pages, when the eviction failed)
 * and unlocks the pages.  Precondition: caller holds clock_lock. */
static void batch_finish(struct batch *b)
{
    struct upager__global *g = &upager__g;
    for (size_t i = b->n; i-- > 0;) { /* pushed last first: popped in order */
        if (b->ok[i]) {
            g->free_frames[g->nfree++] = b->frame[i];
            g->used--;
            g->missing -= b->missing[i];
        } else {
            g->frame_page[b->frame[i]] = b->page[i];
        }
        upager__unlock(&PG(b->page[i])->lock);
    }
}

/* One visit of the hand: finds victims and evicts them, dropping clock_lock
 * for the I/O.  Returns the pages evicted, or -1 when there was no victim;
 * *err is the first error met: of a write-back or frame drop (the page
 * stays resident), or ENOMEM when no page could be cooled because mprotect
 * failed.  Precondition: caller holds clock_lock (held again on return). */
/* Pages one visit of the hand may evict: limit/8, from 1 to EVICT_BATCH. */
static size_t batch_max(void)
{
    size_t max = upager__g.limit / 8;
    return max < 1 ? 1 : max > EVICT_BATCH ? EVICT_BATCH : max;
}

static long evict_some(int *err, size_t max)
{
    struct upager__global *g = &upager__g;
    struct batch b;
    find_victims(&b, max);
    *err = b.cool_failed ? ENOMEM : 0;
    if (b.n == 0)
        return -1;
    upager__unlock(&g->clock_lock);
    size_t done = evict_batch(&b);
    upager__lock(&g->clock_lock);
    batch_finish(&b);
    if (b.err)
        *err = b.err;
    if (done)
        upager__clock_signal();
    return (long)done;
}

static void say_all_pinned(void)
{
    static _Atomic int said;
    if (!atomic_exchange(&said, 1))
        upager__say_safe("every resident page is pinned or busy: a fault waits for "
                         "upager_unpin (or a larger budget)", "", "");
}

/* Background reclaim.  A fault that finds no free frame evicts for itself,
 * and its mprotect and hole punch (some 20 us, TLB shootdowns included)
 * add to the wait for its read.  So once the budget has been full, an I/O
 * thread keeps a reserve of limit/32 frames free ahead of the faults (the
 * kernel's kswapd and its watermarks): asked when a fault leaves fewer
 * than half the reserve, it runs the hand until the reserve is free
 * again.  A program whose data fits the budget never evicts, so never
 * starts it; small budgets (under 128 pages) have no reserve. */

static size_t reserve_of(void)
{
    size_t r = upager__g.limit / 32;
    return r < 4 ? 0 : r;
}

/* Open runs.  An accessible page costs the kernel up to two mappings for
 * each open run (a whole page is one; a page read in part has one per
 * stretch of open blocks: upager__open_runs), where a cooled page is
 * PROT_NONE like its neighbours and costs none.  So vm.max_map_count
 * bounds the runs open at once, not the resident pages: at most max_open
 * (init.c).  Pages read in part may fill the budget a block each, far more
 * pages than that; when the open runs near the bound, the hand cools pages
 * ahead of its turn -- an I/O thread from open_high() down to open_low(),
 * a faulting thread itself past max_open. */
size_t upager__test_max_open;

static size_t open_high(void)
{
    return upager__g.max_open - upager__g.max_open / 16;
}

static size_t open_low(void)
{
    return upager__g.max_open - upager__g.max_open / 8;
}

static size_t open_now(void)
{
    return atomic_load_explicit(&upager__g.open, memory_order_relaxed);
}

/* Runs the hand, cooling referenced pages, until at most `target` pages
 * are open or it has gone round once.  Precondition: clock_lock held
 * (dropped around each mprotect). */
static void cool_to(size_t target)
{
    struct upager__global *g = &upager__g;
    for (size_t scanned = 0; scanned < g->span && open_now() > target; scanned++) {
        size_t f = g->hand;
        g->hand = f + 1 >= g->span ? 0 : f + 1;
        size_t pg = g->frame_page[f];
        if (pg == FRAME_NONE)
            continue;
        struct upager__page *p = PG(pg);
        if (!(p->flags & PF_REF) || p->pins || !upager__trylock(&p->lock))
            continue;
        if (p->state != PAGE_RESIDENT || p->frame != f || !(p->flags & PF_REF) || p->pins) {
            upager__unlock(&p->lock);
            continue;
        }
        if (!cool_run(pg, f))
            break; /* at vm.max_map_count already: leave it to the faults */
    }
}

void upager__clock_open_check(void)
{
    struct upager__global *g = &upager__g;
    size_t open = open_now();
    if (open <= open_high())
        return;
    if (open <= g->max_open && upager__ioq_running()) {
        upager__ioq_reclaim();
        return;
    }
    upager__lock(&g->clock_lock);
    cool_to(upager__ioq_running() ? g->max_open : open_low());
    upager__unlock(&g->clock_lock);
}

size_t upager__clock_open_recount(void)
{
    struct upager__global *g = &upager__g;
    size_t n = 0;
    upager__lock(&g->clock_lock);
    for (size_t f = 0; f < g->span; f++)
        if (g->frame_page[f] != FRAME_NONE && PG(g->frame_page[f])->frame == f)
            n += upager__open_runs(PG(g->frame_page[f])->flags, PG(g->frame_page[f])->openb);
    upager__unlock(&g->clock_lock);
    return n;
}

void upager__clock_reclaim(void)
{
    struct upager__global *g = &upager__g;
    static _Atomic int running; /* one reclaimer at a time: no overshoot */
    if (atomic_exchange(&running, 1))
        return;
    upager__lock(&g->clock_lock);
    if (open_now() > open_high())
        cool_to(open_low());
    for (unsigned i = 0; i < 64; i++) {
        size_t r = reclaim_on ? reserve_of() : 0;
        size_t need = upager__clock_memory() + r * g->nblocks, budget = budget_blocks();
        if (!r || need <= budget)
            break;
        /* Evict what the reserve lacks, not a whole batch more; but not
         * page by page either: a punch each is what reclaim saves. */
        size_t pages = (need - budget + g->nblocks - 1) / g->nblocks;
        if (pages < r / 4)
            pages = r / 4;
        int err;
        if (evict_some(&err, pages < batch_max() ? pages : batch_max()) <= 0)
            break;
    }
    upager__unlock(&g->clock_lock);
    atomic_store(&running, 0);
}

/* Evicts until `blocks` more fit in the budget and, when `slot`, a frame
 * slot is free.  Returns 0; EAGAIN when !wait and there is no room at
 * once; ENOMEM when three turns of the hand could cool nothing (the
 * process is at vm.max_map_count).  When write-backs fail, the victims
 * keep their frames: it returns 0 over the budget rather than stall.
 * Precondition: clock_lock held (dropped while it evicts or waits). */
static int make_room(size_t blocks, bool slot, bool wait)
{
    struct upager__global *g = &upager__g;
    unsigned idle = 0, unmappable = 0;
    for (;;) {
        if (upager__clock_memory() + blocks <= budget_blocks() && (!slot || slot_free()))
            return 0;
        reclaim_on = reserve_of() && upager__ioq_running();
        __atomic_store_n(&pressed, true, __ATOMIC_RELAXED);
        int err;
        long done = evict_some(&err, batch_max());
        if (done > 0)
            continue;
        if (!wait)
            return EAGAIN;
        if (done < 0 && err == ENOMEM && ++unmappable == 3)
            return ENOMEM;
        if (done == 0 && (!slot || slot_free()))
            return 0; /* write-backs failed: a spare slot beyond the budget */
        uint32_t seen = atomic_load(&clock_event);
        upager__unlock(&g->clock_lock);
        if (done < 0 && err != ENOMEM && ++idle == 1000) /* a second, not a moment */
            say_all_pinned();
        clock_wait(seen, done < 0 ? 1000 : 10000);
        upager__lock(&g->clock_lock);
    }
}

int upager__frame_get_blocks(size_t page, size_t *frame, bool wait, size_t blocks)
{
    struct upager__global *g = &upager__g;
    upager__lock(&g->clock_lock);
    int err = make_room(blocks, true, wait);
    bool low = false;
    if (!err) {
        *frame = take_slot(page, blocks);
        low = reclaim_on &&
              upager__clock_memory() + reserve_of() / 2 * g->nblocks > budget_blocks();
    }
    upager__unlock(&g->clock_lock);
    if (low)
        upager__ioq_reclaim();
    return err;
}

int upager__frame_get(size_t page, size_t *frame, bool wait)
{
    return upager__frame_get_blocks(page, frame, wait, upager__g.nblocks);
}

int upager__frame_charge(size_t blocks)
{
    struct upager__global *g = &upager__g;
    upager__lock(&g->clock_lock);
    int err = make_room(blocks, false, true);
    if (!err) {
        g->missing -= blocks;
        if (upager__clock_memory() > g->peak)
            g->peak = upager__clock_memory();
    }
    upager__unlock(&g->clock_lock);
    return err;
}

void upager__frame_uncharge(size_t blocks)
{
    struct upager__global *g = &upager__g;
    upager__lock(&g->clock_lock);
    g->missing += blocks;
    upager__unlock(&g->clock_lock);
    upager__clock_signal();
}

void upager__frame_put(size_t frame, size_t missing)
{
    struct upager__global *g = &upager__g;
    upager__lock(&g->clock_lock);
    g->frame_page[frame] = FRAME_NONE;
    g->free_frames[g->nfree++] = frame;
    g->used--;
    g->missing -= missing;
    upager__unlock(&g->clock_lock);
    upager__clock_signal();
}

int upager__evict_locked(size_t page)
{
    struct upager__page *p = PG(page);
    if (p->state != PAGE_RESIDENT || p->pins)
        return 0;
    size_t f = p->frame, missing = PAGE_MISSING(p);
    int err = evict_page(page);
    if (!err)
        upager__frame_put(f, missing);
    return err;
}

int upager__writeback_locked(size_t page)
{
    struct upager__page *p = PG(page);
    if (p->state != PAGE_RESIDENT || !(p->flags & PF_DIRTY))
        return 0;
    /* Stop further writes first: a write during the copy re-dirties it. */
    int err;
    if ((p->flags & PF_REF) && (err = upager__protect(page, 1, PROT_READ))) {
        upager__protect(page, 1, PROT_READ | PROT_WRITE);
        return err;
    }
    err = upager__io_write_page(page);
    if (err) {
        if (p->flags & PF_REF)
            upager__protect(page, 1, PROT_READ | PROT_WRITE);
        return err;
    }
    p->flags = (uint8_t)((p->flags & ~PF_DIRTY) | PF_INSTORE);
    return 0;
}

int upager__clock_shrink(size_t limit)
{
    struct upager__global *g = &upager__g;
    upager__lock(&g->clock_lock);
    size_t old = g->limit;
    g->limit = limit;
    while (upager__clock_memory() > budget_blocks()) {
        if (g->pinned > limit) { /* pinned meanwhile */
            g->limit = old;
            upager__unlock(&g->clock_lock);
            return EBUSY;
        }
        int err;
        long done = evict_some(&err, batch_max());
        if (done > 0)
            continue;
        if (err) { /* write-backs fail, or no room: the budget stays as it was */
            g->limit = old;
            upager__unlock(&g->clock_lock);
            return err;
        }
        /* Every candidate is busy (being loaded) or pinned: wait until
         * a page is unpinned or a frame comes free. */
        uint32_t seen = atomic_load(&clock_event);
        upager__unlock(&g->clock_lock);
        clock_wait(seen, 1000);
        upager__lock(&g->clock_lock);
    }
    upager__unlock(&g->clock_lock);
    return 0;
}
