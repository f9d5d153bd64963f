/*
 * ioq.c - the I/O threads: write-back in the background, read-ahead served
 * asynchronously.
 *
 * NOTES ON THE DESIGN
 *
 * A fault should wait for its own read, not for somebody's write-back, and
 * a sequential reader should find the next pages loaded, or being loaded,
 * when it gets there.  Both need I/O that nobody waits for; it is done by
 * UPAGER__IO_THREADS threads started with the pager, which block every
 * signal and never touch the arena (frames are reached through the memfd).
 *
 * Requests.  The fault path asks for read-ahead by putting (page, count,
 * owner) in a slot of a fixed ring (compare-and-swap on the slot's state,
 * then a futex wake): async-signal-safe, no allocation.  When the ring is
 * full the request is dropped: read-ahead is a hint.  Write-back needs no
 * request: the clock sets `clean_wanted` when it cools a dirty page or
 * passes over a dirty victim, and a thread wakes and cleans.
 *
 * Cleaning.  A cooled, dirty page is PROT_NONE: the program cannot change
 * it.  When the hand cools a dirty page, or finds one cooled since its last
 * visit -- a victim -- it marks it (wb) for the cleaner, which takes the
 * marked pages that are free to lock (under clock_lock, which guarantees they
 * still exist, and with trylock only: invariant 4 of clock.c), together
 * with the cooled dirty pages that follow each in the arena, then drops
 * clock_lock and writes each run with one store write (write_many for a
 * store that keeps pages apart).  A page written is clean and stays
 * resident; the hand evicts it at its next visit with a hole punch, no
 * write.  So the dirty pages a program left behind (a fill, then reads)
 * reach the store while it goes on, not in its later faults' evictions.
 * A page referenced again before the cleaner gets to it is not written
 * (the soft fault clears WB_WANTED); one written and then dirtied again
 * (WB_EARLY) is written again only when the hand takes it for a victim,
 * so a page the program keeps rewriting is not written every turn.  A
 * write that fails leaves the page dirty (nothing is lost) and the clock
 * writes its victims itself for 100 ms, retrying them and saying so, before
 * it passes dirty ones to the threads again.  The clock still
 * writes a dirty victim itself when it finds no clean one soon enough, so
 * a program that dirties memory faster than the store takes it is slowed,
 * never stopped.
 *
 * Write-behind.  A sequential writer's fault asks, through the same ring,
 * for the dirty pages a little behind it to be written (readahead.c).  The
 * thread takes runs of them that are free to lock, makes the open ones
 * read-only first (a write meanwhile faults, waits for the page, and
 * dirties it again), writes each run and leaves the pages resident and
 * clean.  A failed write leaves them dirty and writable, and the clock
 * writes its own victims for a while, as for the cleaner.
 *
 * Reclaim.  Once the budget is full, a fault that finds no free frame
 * would evict for itself, with an mprotect and a hole punch in its wait;
 * the clock asks the threads (reclaim_wanted) to keep a small reserve of
 * frames free ahead of the faults instead (clock.c, upager__clock_reclaim).
 *
 * Read-ahead.  The thread takes the first page of the request with
 * trylock (a fault there is loading it already), skips it when its
 * protection changed since the request (served late: loaded by the
 * program's faults, used and evicted meanwhile), and loads the run like a
 * fault would, but without waiting for frames and leaving the pages
 * cooled: PROT_NONE, not referenced.  The first access is a soft fault
 * (fault.c), and a page that was read ahead and never used is the hand's
 * first victim.  The first page of each window is marked; touching it asks
 * for a window further on (readahead.c), so windows stay in flight ahead of
 * a sequential reader.
 *
 * What the kernel sees: the threads' pread/pwrite go to the store and to
 * the memfd, never to the arena, so a PROT_NONE page is never handed to a
 * system call.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define RING 32          /* read-ahead requests that can wait              */
#define SCAN_MAX 512     /* frames looked at under clock_lock in one go    */
#define CLEAN_RUNS 8     /* runs written before looking for requests again */

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_TAKEN };

struct request {
    _Atomic uint32_t state;
    size_t page, n;
    const void *owner;
    uint32_t gen; /* the first page's protection generation when asked */
    bool write;   /* write-behind; else read-ahead */
};

static struct request ring[RING];
static _Atomic uint32_t event;        /* futex word: bumped on new work     */
static _Atomic uint32_t sleepers;     /* threads asleep on event            */
static _Atomic uint32_t clean_wanted; /* the clock asked for write-back     */
static _Atomic uint32_t reclaim_wanted; /* ... for free frames (clock.c)    */
static _Atomic int running;           /* the threads are up                 */
static _Atomic int64_t failed_at;     /* ms of the cleaner's last failure   */
static _Atomic uint32_t working;      /* threads serving something now      */
static size_t clean_hand;             /* where the cleaner looks next       */
static pthread_t threads[UPAGER__IO_THREADS];
static unsigned nthreads;

static void wake(void)
{
    atomic_fetch_add(&event, 1);
    if (atomic_load(&sleepers))
        upager__futex_wake(&event, 1);
}

bool upager__ioq_running(void)
{
    return atomic_load_explicit(&running, memory_order_relaxed);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define FAIL_PAUSE_MS 100 /* after a failed write, the clock writes alone */

bool upager__ioq_cleaning(void)
{
    if (!atomic_load_explicit(&running, memory_order_relaxed))
        return false;
    int64_t t = atomic_load_explicit(&failed_at, memory_order_relaxed);
    return t == 0 || now_ms() - t >= FAIL_PAUSE_MS;
}

void upager__ioq_clean(void)
{
    if (!atomic_load_explicit(&running, memory_order_relaxed))
        return;
    if (atomic_exchange(&clean_wanted, 1) == 0)
        wake();
}

void upager__ioq_reclaim(void)
{
    if (!atomic_load_explicit(&running, memory_order_relaxed))
        return;
    if (atomic_exchange(&reclaim_wanted, 1) == 0)
        wake();
}

static bool request(size_t page, size_t n, const void *owner, bool write)
{
    if (!atomic_load_explicit(&running, memory_order_relaxed) || n == 0)
        return false;
    for (unsigned i = 0; i < RING; i++) { /* asked already: once is enough */
        if (atomic_load(&ring[i].state) == SLOT_READY && ring[i].page == page &&
            ring[i].write == write)
            return true;
    }
    for (unsigned i = 0; i < RING; i++) {
        uint32_t expect = SLOT_FREE;
        if (atomic_compare_exchange_strong(&ring[i].state, &expect, SLOT_FILLING)) {
            ring[i].page = page;
            ring[i].n = n;
            ring[i].owner = owner;
            /* Read unlocked, compared under the lock; a window may start
             * past the arena's last page (serve_readahead drops it). */
            ring[i].gen = page < upager__g.npages ? PG(page)->gen : 0;
            ring[i].write = write;
            atomic_store(&ring[i].state, SLOT_READY);
            wake();
            return true;
        }
    }
    return false; /* the ring is full: a hint dropped */
}

bool upager__ioq_readahead(size_t page, size_t n, const void *owner)
{
    return request(page, n, owner, false);
}

bool upager__ioq_writebehind(size_t page, size_t n, const void *owner)
{
    return request(page, n, owner, true);
}

/* ---- cleaning ----------------------------------------------------------- */

/* A page the cleaner may write: resident, cooled, dirty, unpinned. */
static bool cleanable(const struct upager__page *p)
{
    return p->state == PAGE_RESIDENT && (p->flags & (PF_REF | PF_DIRTY)) == PF_DIRTY &&
           !p->pins && (p->wb & WB_WANTED);
}

/* A page that may join a run: cooled and dirty, in the arena after a page
 * the hand passed over -- cold too, in all likelihood (a scan). */
static bool neighbour(const struct upager__page *p)
{
    return p->state == PAGE_RESIDENT && (p->flags & (PF_REF | PF_DIRTY)) == PF_DIRTY &&
           !p->pins;
}

struct run {
    size_t page, n;
};

/* Collects up to `max` runs of marked pages, locked, looking at SCAN_MAX
 * frames from clean_hand on.  Returns the runs found; *seen is set to the
 * frames looked at. */
static size_t collect(struct run *r, size_t max, size_t *seen)
{
    struct upager__global *g = &upager__g;
    size_t found = 0, cap = upager__io_run_max();
    upager__lock(&g->clock_lock);
    size_t span = g->span, scanned = 0;
    size_t window = span > SCAN_MAX ? SCAN_MAX : span;
    size_t f = clean_hand < span ? clean_hand : 0;
    for (; span && scanned < window && found < max; scanned++) {
        size_t pg = g->frame_page[f];
        f = f + 1 >= span ? 0 : f + 1;
        if (pg == FRAME_NONE)
            continue;
        struct upager__page *p = PG(pg);
        if (!cleanable(p) || !upager__trylock(&p->lock))
            continue;
        if (!cleanable(p)) {
            upager__unlock(&p->lock);
            continue;
        }
        size_t n = 1;
        while (n < cap && pg + n < g->npages) {
            struct upager__page *q = PG(pg + n);
            /* The entry exists: its page is in a frame (frame_page says so
             * under clock_lock), or the check below fails on its state. */
            if (q->frame >= span || g->frame_page[q->frame] != pg + n || !neighbour(q) ||
                q->owner != p->owner || q->kind != p->kind || !upager__trylock(&q->lock))
                break;
            if (!neighbour(q) || q->owner != p->owner) {
                upager__unlock(&q->lock);
                break;
            }
            n++;
        }
        r[found++] = (struct run){pg, n};
    }
    clean_hand = f;
    *seen = scanned ? scanned : 1;
    upager__unlock(&g->clock_lock);
    return found;
}

/* A page the I/O threads wrote: clean, in the store, and resident still
 * (WB_EARLY, clock.c).  Precondition: its lock held. */
static void written(struct upager__page *p)
{
    p->flags = (uint8_t)((p->flags & ~PF_DIRTY) | PF_INSTORE);
    p->wb = (uint8_t)(WB_EARLY | (p->wb & WB_AHEAD));
}

/* Writes the runs and unlocks their pages; returns the first error. */
static int write_runs(struct run *r, size_t nr)
{
    bool ok[UPAGER__STORE_BATCH > 64 ? UPAGER__STORE_BATCH : 64];
    int first = 0;
    for (size_t k = 0; k < nr; k++) {
        int err = first ? first : upager__io_write_run(r[k].page, r[k].n, ok);
        for (size_t i = 0; i < r[k].n; i++) {
            struct upager__page *p = PG(r[k].page + i);
            if (!err || (first == 0 && ok[i]))
                written(p);
            upager__unlock(&p->lock);
        }
        if (err && !first)
            first = err;
    }
    upager__clock_signal(); /* clean victims for whoever waits */
    return first;
}

/* One pass of the cleaner: looks at every frame once at most, writes up
 * to CLEAN_RUNS runs.  Returns true when there may be more to do. */
static bool clean_some(void)
{
    struct run r[CLEAN_RUNS];
    size_t nr = 0, looked = 0, span = upager__g.span;
    while (nr == 0 && looked < span) {
        size_t seen;
        nr = collect(r, CLEAN_RUNS, &seen);
        looked += seen;
    }
    if (nr == 0)
        return false;
    if (write_runs(r, nr)) {
        /* The store refuses: the clock writes its victims itself (it
         * retries, and says so) until a write of the cleaner succeeds. */
        atomic_store(&failed_at, now_ms());
        return false;
    }
    atomic_store(&failed_at, 0);
    return nr == CLEAN_RUNS;
}

/* ---- the threads ---------------------------------------------------------- */

static void serve_readahead(struct request *q)
{
    size_t page = q->page, n = q->n;
    const void *owner = q->owner;
    uint32_t gen = q->gen;
    atomic_store(&q->state, SLOT_FREE);
    struct upager__global *g = &upager__g;
    if (page >= g->npages)
        return;
    if (n > g->npages - page)
        n = g->npages - page;
    if (!upager__page_trylock(page))
        return; /* being loaded by a fault, or busy: leave it */
    struct upager__page *p = PG(page);
    /* A request served late (the threads were busy, or the machine) may
     * find its window loaded by the program's own faults, used, and
     * evicted again since: its protection changed (a new generation), and
     * reading it again would be a scan's pages brought back behind it. */
    if (p->state != PAGE_STORED || p->owner != owner || p->gen != gen) {
        upager__unlock(&p->lock);
        return;
    }
    upager__load_async(page, n); /* unlocks */
}

/* A page write-behind may take: resident, dirty, unpinned, of the owner. */
static bool behind(const struct upager__page *p, const void *owner)
{
    return p->state == PAGE_RESIDENT && (p->flags & PF_DIRTY) && !p->pins &&
           p->owner == owner;
}

/* Writes back the dirty pages of a request, in runs of pages free to lock
 * whose protection is the same: those the program can access are made
 * read-only first, so that a write while theirs is in flight faults and
 * waits, and dirties the page again after. */
static void serve_writebehind(struct request *q)
{
    struct upager__global *g = &upager__g;
    size_t page = q->page, end = q->page + q->n, cap = upager__io_run_max();
    const void *owner = q->owner;
    atomic_store(&q->state, SLOT_FREE);
    if (end > g->npages)
        end = g->npages;
    if (cap > 64)
        cap = 64;
    bool ok[64];
    while (page < end && upager__ioq_cleaning()) {
        size_t n = 0;
        bool open = false;
        while (page + n < end && n < cap) {
            struct upager__page *p = PG(page + n);
            if (!behind(p, owner) || !upager__trylock(&p->lock))
                break;
            if (!behind(p, owner) || (n && ((p->flags & PF_REF) != 0) != open)) {
                upager__unlock(&p->lock);
                break;
            }
            if (n == 0)
                open = (p->flags & PF_REF) != 0;
            n++;
        }
        if (n == 0) {
            page++;
            continue;
        }
        for (size_t i = 0; i < n; i++)
            ok[i] = false;
        int err = open ? upager__protect(page, n, PROT_READ) : 0;
        if (!err && (err = upager__io_write_run(page, n, ok)))
            atomic_store(&failed_at, now_ms()); /* the clock writes alone a while */
        for (size_t i = 0; i < n; i++) {
            struct upager__page *p = PG(page + i);
            if (!err || ok[i])
                written(p);
            else if (open) /* still dirty: writable again */
                upager__protect(page + i, 1, PROT_READ | PROT_WRITE);
            upager__unlock(&p->lock);
        }
        page += n;
    }
    upager__clock_signal();
}

static void *io_thread(void *arg)
{
    (void)arg;
    for (;;) {
        uint32_t seen = atomic_load(&event);
        bool busy = false;
        atomic_fetch_add(&working, 1);
        for (unsigned i = 0; i < RING; i++) {
            uint32_t expect = SLOT_READY;
            if (atomic_compare_exchange_strong(&ring[i].state, &expect, SLOT_TAKEN)) {
                if (ring[i].write)
                    serve_writebehind(&ring[i]);
                else
                    serve_readahead(&ring[i]);
                busy = true;
            }
        }
        if (atomic_exchange(&reclaim_wanted, 0)) {
            upager__clock_reclaim();
            busy = true;
        }
        if (atomic_exchange(&clean_wanted, 0)) {
            bool more = clean_some();
            /* Pages just cleaned can be evicted now: a reclaim that found
             * only dirty victims may free its reserve (clock.c). */
            upager__ioq_reclaim();
            if (more) {
                upager__ioq_clean(); /* more to clean: again, perhaps by another */
                busy = true;
            }
        }
        atomic_fetch_sub(&working, 1);
        if (busy)
            continue;
        atomic_fetch_add(&sleepers, 1);
        if (atomic_load(&event) == seen) {
            struct timespec ts = {1, 0};
            syscall(SYS_futex, (uint32_t *)&event, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
        }
        atomic_fetch_sub(&sleepers, 1);
    }
    return NULL;
}

int upager__ioq_start(void)
{

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the threads */
    int err = 0;
    for (nthreads = 0; nthreads < UPAGER__IO_THREADS; nthreads++) {
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&a, (size_t)256 << 10);
        err = pthread_create(&threads[nthreads], &a, io_thread, NULL);
        pthread_attr_destroy(&a);
        if (err)
            break;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (nthreads == 0)
        return err;
    atomic_store(&running, 1);
    return 0;
}

void upager__ioq_after_fork(void)
{
    /* The threads are the parent's: the child has none until it starts. */
    memset(ring, 0, sizeof ring);
    atomic_store(&event, 0);
    atomic_store(&sleepers, 0);
    atomic_store(&clean_wanted, 0);
    atomic_store(&reclaim_wanted, 0);
    atomic_store(&running, 0);
    atomic_store(&failed_at, 0);
    atomic_store(&working, 0);
    clean_hand = 0;
    nthreads = 0;
}

void upager__ioq_drain(void)
{
    for (int tries = 0; tries < 10000 && atomic_load(&running); tries++) {
        bool idle = atomic_load(&clean_wanted) == 0 && atomic_load(&reclaim_wanted) == 0 &&
                    atomic_load(&working) == 0;
        for (unsigned i = 0; i < RING && idle; i++)
            idle = atomic_load(&ring[i].state) == SLOT_FREE;
        if (idle)
            return;
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}
