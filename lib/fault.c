/*
 * fault.c - the SIGSEGV handler: page faults resolved in user space.
 *
 * NOTES ON THE DESIGN
 *
 * libsigsegv calls upager__fault with the faulting address.  The handler
 * declines (returns 0) every address outside the arena and every arena page
 * with no live allocation or mapping, so a genuine bad access still ends the
 * process with SIGSEGV; libsigsegv calls it a second time with serious=1
 * before it gives up, and the diagnostic line is printed on the first call.
 *
 * Read or write.  The kernel knows whether the access was a write and says
 * so in the signal context (x86-64: bit 1 of the page-fault error code;
 * aarch64: the WnR bit of the ESR record).  libsigsegv passes only the
 * address, so segv_entry() is installed in front of libsigsegv's own
 * SIGSEGV action: it reads the access type into a thread-local variable and
 * calls libsigsegv's action with the same arguments.  Where no context is
 * to be had (another architecture, or a later sigsegv_install_handler put
 * libsigsegv back in front), the access is UNKNOWN and a retry rule decides:
 *
 *   Every protection change of a page happens under its lock and gives the
 *   page a new generation (os.c, upager__protect).  When a thread faults on
 *   a page that its lock shows readable and clean, the access may have been
 *   a read that raced another thread's load, or a write.  The handler
 *   records (address, generation) for the thread and lets the instruction
 *   run again.  If the same thread faults at the same address and finds the
 *   page readable and clean with the same generation, the page was readable
 *   during the whole interval in which the second fault happened, and a
 *   read of a readable page does not fault: the access was a write.  A
 *   different generation proves nothing, so the rule records again.  Each
 *   repetition needs a protection change by another thread, so a thread
 *   makes progress unless the page is contended without end.  (Generations
 *   are 32 bits from a global counter: a false match needs 2^32 mprotects
 *   between two faults of one thread.)
 * Either way a read never marks a page dirty and never counts as a write to
 * a read-only mapping.
 *
 * For a live page the handler takes the page's lock (a thread faulting on a
 * page being loaded sleeps on that lock), then by state:
 *   EMPTY    take a frame (clock.c); open the page PROT_READ, or for a write
 *            PROT_READ|PROT_WRITE and dirty: the memfd hole reads as zeros
 *                                                                 (minor)
 *   STORED   take a frame, read the store into an I/O buffer, write it
 *            into the frame through the memfd while the page is still
 *            PROT_NONE (io.c), then open it (writable and dirty for a
 *            write); when the faults run sequentially the following pages
 *            come in the same read, write and mprotect, and the windows
 *            after them are asked of the I/O threads (readahead.c, ioq.c)
 *                                                                 (major)
 *            a read that is not part of a sequential run reads only the
 *            block it touches (4K): the page is resident "in part" (below)
 *   RESIDENT in part (p->blocks): a block it has is opened, one it
 *            lacks is read, or the whole page is read (a write, a scan,
 *            a third block): see "pages read in part" below
 *            cooled: set PF_REF, restore the protection (dirty on a write);
 *            a page read ahead by an I/O thread arrives cooled, and the
 *            first page of its window asks for the next one
 *            readable and clean: a write sets PF_DIRTY and opens it
 *            PROT_READ|PROT_WRITE; on a read-only mapping a write is a
 *            genuine fault.  A read: another thread opened it meanwhile.
 *            writable: another thread resolved it meanwhile.
 *            In the last two cases the protection the flags call for is
 *            applied again, so that a page left half-protected by a failed
 *            mprotect over a run cannot make the thread fault forever.
 *
 * A protection change that fails (mprotect gives ENOMEM at vm.max_map_count)
 * leaves the page in a state that loses nothing -- not loaded, or still
 * resident and clean, or cooled -- counts in map_errors, and the fault that
 * needed it raises SIGBUS with one line.  A read that fails raises SIGBUS
 * too, as the kernel does for a mapped file.  SIGBUS goes to the program's
 * own handler when it has one (si_code BUS_ADRERR, si_addr the faulting
 * address); with none, or with SIGBUS blocked or ignored, it ends the
 * process, as a kernel-raised SIGBUS would.
 *
 * The handler calls no malloc, stdio or lock the program could hold: only
 * system calls, the page locks and clock_lock (futexes the library takes
 * only around its own bookkeeping, never while running program code), and
 * the I/O buffers allocated at start-up.  errno is preserved.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <sigsegv.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "internal.h"

#define TLS __thread __attribute__((tls_model("initial-exec")))

enum { ACCESS_UNKNOWN, ACCESS_READ, ACCESS_WRITE };

static TLS int fault_access;           /* of the fault being handled      */
static TLS const void *retry_addr;     /* the retry rule: last ambiguous   */
static TLS uint32_t retry_gen;         /* ... fault and its generation     */
static TLS const void *declined_addr;  /* last fault that was declined     */
static struct sigaction segv_next;     /* libsigsegv's own SIGSEGV action  */
bool upager__fault_no_context;         /* tests: decide by the retry rule  */

/* ---- page-in -------------------------------------------------------- */

#define RUN_MAX 64 /* pages loaded by one read */

/* The protection the flags of a resident, referenced page call for. */
static int prot_of(const struct upager__page *p)
{
    return (p->flags & PF_DIRTY) ? PROT_READ | PROT_WRITE : PROT_READ;
}

/* Opens the frames of pages [page, page+run), filled and still PROT_NONE:
 * the first page writable when `write`, the others readable.  On failure
 * the whole run is made PROT_NONE again (a failed mprotect over several
 * kernel mappings may have changed part of the range; going back to
 * PROT_NONE only merges mappings, so it does not need a new one).
 * Precondition: the caller holds the locks of the pages. */
static int open_run(size_t page, size_t run, bool write)
{
    int err;
    if (write) {
        err = upager__protect(page, 1, PROT_READ | PROT_WRITE);
        if (!err && run > 1)
            err = upager__protect(page + 1, run - 1, PROT_READ);
    } else {
        err = upager__protect(page, run, PROT_READ);
    }
    if (err)
        upager__protect(page, run, PROT_NONE);
    return err;
}

enum { LOAD_READ, LOAD_WRITE, LOAD_AHEAD };

/* Marks pages [page, page+run) resident in `frames`: referenced, the first
 * one dirty for LOAD_WRITE; for LOAD_AHEAD cooled and marked read ahead,
 * the first page also as the mark of its window (readahead.c).
 * Precondition: their locks held. */
static void set_resident(size_t page, size_t run, const uint32_t *frames, int mode)
{
    for (size_t i = 0; i < run; i++) {
        struct upager__page *q = PG(page + i);
        uint8_t f = (uint8_t)(q->flags & ~(PF_DIRTY | PF_REF | PF_RA | PF_RAMARK));
        if (mode == LOAD_AHEAD)
            f |= (uint8_t)(PF_RA | (i == 0 ? PF_RAMARK : 0));
        else
            f |= (uint8_t)(PF_REF | (mode == LOAD_WRITE && i == 0 ? PF_DIRTY : 0));
        q->state = PAGE_RESIDENT;
        q->frame = frames[i];
        upager__flags(q, f);
        q->wb = 0;
        q->blocks = 0;
    }
}

/* Loads `page` (STORED, locked by the caller) together with up to n - 1
 * pages that follow it in the same allocation or mapping, are STORED and
 * can be locked at once: one read from the store, one write into the
 * frames through the memfd (io.c), one mprotect (two for a write).  Until
 * then the pages are PROT_NONE, so no thread sees them half-filled.
 * LOAD_AHEAD (an I/O thread reading ahead) waits for no frame and leaves
 * the pages PROT_NONE and cooled.  Returns 0 or the errno for `page`; on
 * error every page of the run stays STORED, and the read-ahead pages are
 * just left unloaded.  Precondition: the caller holds the lock of `page`
 * only; the other locks are dropped on return (LOAD_AHEAD: all of them). */
static int load_run(size_t page, size_t n, int mode)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    size_t max_run = upager__io_run_max();
    uint32_t frames[RUN_MAX];
    if (n > max_run)
        n = max_run;
    if (n > RUN_MAX)
        n = RUN_MAX;
    if (n < 1)
        n = 1;
    size_t run = 1;
    while (run < n && page + run < g->npages) {
        struct upager__page *q = PG(page + run);
        if (!upager__page_trylock(page + run))
            break;
        if (q->state != PAGE_STORED || q->owner != p->owner || q->kind != p->kind) {
            upager__unlock(&q->lock);
            break;
        }
        run++;
    }
    for (size_t i = 0; i < run; i++) {
        size_t f;
        int e = upager__frame_get(page + i, &f, i == 0 && mode != LOAD_AHEAD);
        if (e) { /* no room now: load less, or nothing */
            for (size_t k = i; k < run; k++)
                if (k)
                    upager__unlock(&PG(page + k)->lock);
            run = i;
            if (i == 0) {
                if (mode == LOAD_AHEAD)
                    upager__unlock(&p->lock);
                return e;
            }
            break;
        }
        frames[i] = (uint32_t)f;
    }

    int err = upager__io_read_run(page, run);
    if (!err && mode != LOAD_AHEAD)
        err = open_run(page, run, mode == LOAD_WRITE);
    if (err) {
        upager__frames_drop(page, run);
        for (size_t i = 0; i < run; i++)
            upager__frame_put(frames[i], 0);
        for (size_t i = 1; i < run; i++)
            upager__unlock(&PG(page + i)->lock);
        if (mode == LOAD_AHEAD) { /* a failed read-ahead is harmless */
            upager__unlock(&p->lock);
            return err;
        }
        if (run > 1) /* perhaps only a read-ahead page is bad: retry alone */
            return load_run(page, 1, mode);
        return err;
    }
    set_resident(page, run, frames, mode);
    for (size_t i = 1; i < run; i++)
        upager__unlock(&PG(page + i)->lock);
    atomic_fetch_add_explicit(&g->st.readahead_pages, mode == LOAD_AHEAD ? run : run - 1,
                              memory_order_relaxed);
    if (mode == LOAD_AHEAD)
        upager__unlock(&p->lock);
    else
        upager__ra_loaded(page, run, p->owner);
    return 0;
}

/* ---- pages read in part --------------------------------------------- */

/* A random read should not move a whole page: the budget and
 * vm.max_map_count set the page size (64K or more), and a read of 8 bytes
 * would bring in all of it.  So a read fault on a STORED page that does not
 * continue a sequential run reads only the block it touches (4K, or 1/32
 * of a larger page), from a store that serves reads of part of a page (a
 * file; Redis keeps whole pages): one block is read, written into the
 * frame and opened, the rest of the page stays PROT_NONE.  p->blocks
 * records which blocks hold the store's contents.
 *
 * A page read in part is never dirty.  A later fault on it:
 *   - at a block it has: that block's run of blocks is opened again;
 *   - at a block it lacks: that block is read, unless the page already has
 *     PART_MAX blocks or a neighbour of this one (a scan), and then
 *     (under UPAGER_ADVICE_RANDOM, neither: blocks only, as the kernel
 *     reads 4K a fault under MADV_RANDOM)
 *   - a write, or any of the above: the whole page is read into the frame
 *     (the blocks it has are rewritten with the same bytes, so readers of
 *     them see no change) and it becomes an ordinary page.
 * Opening a block leaves the runs of blocks open already as they are: a
 * random reader that comes back to a block it read finds it open.  Each
 * open run costs the kernel up to two mappings, as a whole open page does,
 * and the clock bounds the runs open at once, not the pages (clock.c).
 * The clock cools and evicts such a page as any other: PROT_NONE over the
 * whole page (all its runs closed), the frame punched.
 *
 * The kernel reading such a page (a system call) gets EFAULT at a block
 * that is not open, as at any page that is not; upager_pin and the
 * interposed calls read the whole page first. */
#define PART_MAX 2 /* blocks read one by one; the next miss reads the page
                      (with UPAGER_ADVICE_RANDOM, blocks to the last) */

static unsigned block_of(size_t page, const void *addr)
{
    return (unsigned)(((const char *)addr - PAGE_ADDR(page)) >> upager__g.block_shift);
}

static bool reads_part(size_t page)
{
    uint64_t off;
    size_t len;
    return upager__g.nblocks > 1 && !(PG(page)->flags & PF_SEQ) &&
           upager__page_store(page, &off, &len)->partial;
}

/* Opens the run of blocks `page` has around block b, readable, beside any
 * run open already.  Precondition: page locked, RESIDENT, read in part,
 * with block b. */
static int open_blocks(size_t page, unsigned b)
{
    struct upager__page *p = PG(page);
    unsigned lo = b, hi = b + 1;
    while (lo > 0 && ((p->blocks >> (lo - 1)) & 1))
        lo--;
    while (hi < upager__g.nblocks && ((p->blocks >> hi) & 1))
        hi++;
    uint32_t run = (uint32_t)(((2ull << (hi - 1)) - 1) & ~((1ull << lo) - 1));
    int err = upager__protect_blocks(page, lo, hi - lo, PROT_READ);
    if (err) { /* closed again: nothing open that the flags do not say */
        if (upager__protect(page, 1, PROT_NONE) == 0)
            upager__flags(p, p->flags & ~PF_REF);
        return err;
    }
    uint32_t openb = (p->flags & PF_REF) ? p->openb : 0;
    upager__set_open(p, (p->flags & ~(PF_RA | PF_RAMARK)) | PF_REF, openb | run);
    p->wb = 0;
    return 0;
}

/* Reads block b of a STORED page (locked) into its frame and opens it. */
static int load_block(size_t page, unsigned b)
{
    struct upager__page *p = PG(page);
    size_t f;
    int err = upager__frame_get_blocks(page, &f, true, 1);
    if (err)
        return err;
    uint32_t frame = (uint32_t)f;
    if (!(err = upager__io_read_block(page, b)) &&
        (err = upager__protect_blocks(page, b, 1, PROT_READ)))
        upager__protect(page, 1, PROT_NONE);
    if (err) {
        upager__frames_drop(page, 1);
        upager__frame_put(frame, upager__g.nblocks - 1);
        return err;
    }
    set_resident(page, 1, &frame, LOAD_READ);
    p->blocks = 1u << b;
    upager__set_open(p, p->flags, p->blocks);
    return 0;
}

/* Reads the whole of a page read in part (locked) into its frame, and
 * opens it: writable and dirty for a write.  On a failed read it stays
 * as it was; on a failed mprotect it is whole, clean and cooled. */
static int complete_page(size_t page, bool write)
{
    struct upager__page *p = PG(page);
    size_t more = PAGE_MISSING(p);
    int err = upager__frame_charge(more);
    if (err)
        return err;
    if ((err = upager__io_read_run(page, 1))) {
        upager__frame_uncharge(more);
        return err;
    }
    p->blocks = 0;
    upager__set_open(p, (p->flags & ~(PF_RA | PF_RAMARK)) | PF_REF | (write ? PF_DIRTY : 0), 0);
    p->wb = 0;
    if ((err = upager__protect(page, 1, prot_of(p)))) {
        upager__flags(p, p->flags & ~(PF_REF | PF_DIRTY));
        upager__protect(page, 1, PROT_NONE);
    }
    return err;
}

/* A fault at block b of a page read in part (locked).  *major is set when
 * the store was read. */
static int fault_part(size_t page, unsigned b, bool write, bool *major)
{
    struct upager__page *p = PG(page);
    uint32_t bit = 1u << b;
    /* With UPAGER_ADVICE_RANDOM the program said so: blocks only, as the
     * kernel reads 4K a fault under MADV_RANDOM. */
    bool random = (p->flags & PF_RANDOM) != 0;
    bool scan = !random && ((b > 0 && (p->blocks & (bit >> 1))) ||
                            (b + 1 < upager__g.nblocks && (p->blocks & (bit << 1))));
    unsigned max = random ? upager__g.nblocks : PART_MAX;
    if (write || (!(p->blocks & bit) && (scan || (unsigned)__builtin_popcount(p->blocks) >= max))) {
        *major = true;
        int err = complete_page(page, write);
        if (!err)
            upager__ra_loaded(page, 1, p->owner);
        return err;
    }
    if (!(p->blocks & bit)) {
        int err = upager__frame_charge(1);
        if (err)
            return err;
        if ((err = upager__io_read_block(page, b))) {
            upager__frame_uncharge(1);
            return err;
        }
        *major = true;
        p->blocks |= bit;
        if (p->blocks == (uint32_t)((2ull << (upager__g.nblocks - 1)) - 1)) {
            /* every block read: an ordinary page, opened whole */
            p->blocks = 0;
            upager__set_open(p, (p->flags & ~(PF_RA | PF_RAMARK)) | PF_REF, 0);
            int err = upager__protect(page, 1, PROT_READ);
            if (err) {
                upager__flags(p, p->flags & ~PF_REF);
                upager__protect(page, 1, PROT_NONE);
            }
            return err;
        }
    }
    return open_blocks(page, b);
}

int upager__load_async(size_t page, size_t n)
{
    return load_run(page, n, LOAD_AHEAD);
}

/* Gives an EMPTY page (locked by the caller) a frame: the memfd hole reads
 * as zeros, so there is nothing to load.  Opened readable, or writable and
 * dirty for a write.  When this thread's first writes run in order
 * (readahead.c), up to n - 1 EMPTY pages that follow in the same
 * allocation are opened writable and dirty with it, in one mprotect
 * (write-ahead): a sequential writer then takes one fault per run, not per
 * page.  Those take a frame only if one is free at once. */
static int open_empty(size_t page, bool write, size_t n)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    uint32_t frames[RUN_MAX];
    size_t f;
    int err = upager__frame_get(page, &f, true);
    if (err)
        return err;
    frames[0] = (uint32_t)f;
    size_t run = 1;
    if (n > RUN_MAX)
        n = RUN_MAX;
    while (write && run < n && page + run < g->npages) {
        struct upager__page *q = PG(page + run);
        if (!upager__page_trylock(page + run))
            break;
        if (q->state != PAGE_EMPTY || q->owner != p->owner || q->kind != p->kind ||
            (q->flags & PF_RDONLY) || upager__frame_get(page + run, &f, false)) {
            upager__unlock(&q->lock);
            break;
        }
        frames[run++] = (uint32_t)f;
    }
    if ((err = write ? upager__protect(page, run, PROT_READ | PROT_WRITE)
                     : open_run(page, 1, false))) {
        if (write)
            upager__protect(page, run, PROT_NONE);
        for (size_t i = 0; i < run; i++)
            upager__frame_put(frames[i], 0);
        for (size_t i = 1; i < run; i++)
            upager__unlock(&PG(page + i)->lock);
        return err;
    }
    set_resident(page, 1, frames, write ? LOAD_WRITE : LOAD_READ);
    for (size_t i = 1; i < run; i++) {
        set_resident(page + i, 1, &frames[i], LOAD_WRITE);
        upager__unlock(&PG(page + i)->lock);
    }
    if (write)
        upager__ra_written(page, run);
    return 0;
}

/* Opens, with one mprotect, up to max pages that follow `page` (locked by
 * the caller) in the same allocation and that a thread reading in order
 * touches next, as long as each can be locked at once and is
 *   AHEAD:  read ahead by an I/O thread and untouched (PF_RA, clean, not
 *           the mark of the next window, which must fault to ask for
 *           more): opened readable;
 *   COOLED: cooled by the clock, whole (not read in part), not read ahead,
 *           with the protection of the first: opened with it.
 * They count as referenced.  Returns the pages opened. */
enum { OPEN_AHEAD, OPEN_COOLED };

static bool opens(const struct upager__page *q, const struct upager__page *p, int mode)
{
    if (q->state != PAGE_RESIDENT || q->pins || q->owner != p->owner)
        return false;
    if (mode == OPEN_AHEAD)
        return (q->flags & (PF_RA | PF_RAMARK | PF_REF | PF_DIRTY)) == PF_RA;
    return !(q->flags & (PF_REF | PF_RA | PF_RAMARK)) && !q->blocks;
}

static size_t open_following(size_t page, size_t max, int mode)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    size_t run = 0;
    int prot = PROT_READ;
    while (run < max && page + 1 + run < g->npages) {
        struct upager__page *q = PG(page + 1 + run);
        if (!opens(q, p, mode) || !upager__page_trylock(page + 1 + run))
            break;
        if (!opens(q, p, mode) || (mode == OPEN_COOLED && run && prot_of(q) != prot)) {
            upager__unlock(&q->lock);
            break;
        }
        if (mode == OPEN_COOLED)
            prot = prot_of(q);
        run++;
    }
    bool opened = run && upager__protect(page + 1, run, prot) == 0;
    if (run && !opened)
        upager__protect(page + 1, run, PROT_NONE); /* as they were: cooled */
    for (size_t i = 1; i <= run; i++) {
        struct upager__page *q = PG(page + i);
        if (opened) {
            upager__flags(q, (uint8_t)((q->flags & ~PF_RA) | PF_REF));
            q->wb &= WB_EARLY; /* in use: not for the cleaner */
        }
        upager__unlock(&q->lock);
    }
    return opened ? run : 0;
}

/* The program touched a page an I/O thread read ahead: the pages after it
 * in its window, read ahead and untouched too, are opened with it -- a
 * sequential reader would touch each of them next -- up to the mark of
 * the next window.  Precondition: the caller holds the lock of `page`,
 * open now. */
static void open_window(size_t page)
{
    open_following(page, upager__io_run_max(), OPEN_AHEAD);
}

/* Soft faults in order.  The clock cools the pages of a hot set that the
 * program then reads again in order (a scan of a table that stays
 * resident): one soft fault a page, a signal and an mprotect each.  When
 * this thread's soft faults run in order, a soft fault also opens the
 * cooled pages that follow in the same allocation, the window doubling up
 * to the read-ahead (as reads ahead do for major faults); they count as
 * referenced, as the pages the scan is about to touch.  Pages read ahead
 * and not yet touched keep their own path (open_window), pages read in
 * part are left alone. */
static TLS size_t soft_next;   /* the page that would continue the run */
static TLS unsigned soft_window;

static void open_around(size_t page)
{
    struct upager__global *g = &upager__g;
    unsigned max = g->readahead < RUN_MAX ? (unsigned)g->readahead : RUN_MAX;
    if (page != soft_next || max == 0 || (PG(page)->flags & PF_RANDOM)) {
        soft_window = 0;
        soft_next = page + 1;
        return;
    }
    soft_window = soft_window ? (soft_window * 2 > max ? max : soft_window * 2) : 1;
    soft_next = page + 1 + open_following(page, soft_window, OPEN_COOLED);
}

int upager__page_in_locked(size_t page, bool counted)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    if (p->state == PAGE_EMPTY)
        return open_empty(page, false, 1);
    if (p->state == PAGE_RESIDENT && !p->blocks)
        return 0; /* whole already: never read over it */
    int err = p->state == PAGE_RESIDENT ? complete_page(page, false)
                                        : load_run(page, 1, LOAD_READ);
    if (!err && counted)
        atomic_fetch_add_explicit(&g->st.major_faults, 1, memory_order_relaxed);
    return err;
}

/* ---- the handler ---------------------------------------------------- */

/* The access type the kernel gives in the signal context of a page fault. */
static int access_of(const siginfo_t *si, const void *ctx)
{
    if (!ctx || si->si_code <= 0) /* sent by kill() or the like, no fault */
        return ACCESS_UNKNOWN;
#if defined(__x86_64__)
    const ucontext_t *uc = ctx;
    if (uc->uc_mcontext.gregs[REG_TRAPNO] != 14) /* not a page fault */
        return ACCESS_UNKNOWN;
    return (uc->uc_mcontext.gregs[REG_ERR] & 2) ? ACCESS_WRITE : ACCESS_READ;
#elif defined(__aarch64__)
    /* The kernel appends an ESR record (magic "ESR\x01") to the context. */
    const ucontext_t *uc = ctx;
    const unsigned char *r = (const unsigned char *)uc->uc_mcontext.__reserved;
    size_t off = 0, end = sizeof uc->uc_mcontext.__reserved;
    while (off + 16 <= end) {
        uint32_t magic, size;
        memcpy(&magic, r + off, 4);
        memcpy(&size, r + off + 4, 4);
        if (magic == 0 || size < 8)
            break;
        if (magic == 0x45535201) {
            uint64_t esr;
            memcpy(&esr, r + off + 8, 8);
            unsigned ec = (unsigned)(esr >> 26) & 0x3f;
            if (ec != 0x24 && ec != 0x25) /* not a data abort */
                return ACCESS_UNKNOWN;
            return (esr & (1u << 6)) ? ACCESS_WRITE : ACCESS_READ; /* WnR */
        }
        off += size;
    }
    return ACCESS_UNKNOWN;
#else
    (void)si;
    return ACCESS_UNKNOWN;
#endif
}

/* In front of libsigsegv's SIGSEGV action: notes the access type for the
 * handler below, then runs libsigsegv's action with the same arguments. */
static void segv_entry(int sig, siginfo_t *si, void *ctx)
{
    int saved = fault_access;
    fault_access = access_of(si, ctx);
    segv_next.sa_sigaction(sig, si, ctx);
    fault_access = saved;
}

static void genuine(const void *addr, const char *why)
{
    char hex[24];
    declined_addr = addr;
    upager__say_safe("segmentation fault at ", upager__hex(hex, (uintptr_t)addr), why);
}

/* A fault that cannot be served: SIGBUS, as the kernel raises it for a
 * mapped file it cannot read (BUS_ADRERR at the address).  The program's
 * handler gets it when there is one and SIGBUS is neither blocked nor
 * ignored; otherwise, as for a fault the kernel forces, the default action
 * ends the process.  If the program's handler returns, the access is tried
 * again.  Precondition: no lock held. */
static void raise_sigbus(const void *addr, int err)
{
    char hex[24];
    upager__say_safe("bus error at ", upager__hex(hex, (uintptr_t)addr),
                     err == ENOMEM
                         ? ": the page could not be mapped (the process is at vm.max_map_count)"
                         : ": the page could not be read from its store");
    struct sigaction cur;
    sigset_t mask;
    sigaction(SIGBUS, NULL, &cur);
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    bool handled = (cur.sa_flags & SA_SIGINFO) ? cur.sa_sigaction != NULL
                                               : cur.sa_handler != SIG_DFL &&
                                                     cur.sa_handler != SIG_IGN;
    if (!handled || sigismember(&mask, SIGBUS)) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(SIGBUS, &dfl, NULL);
        sigset_t bus;
        sigemptyset(&bus);
        sigaddset(&bus, SIGBUS);
        pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGBUS;
    si.si_code = BUS_ADRERR;
    si.si_addr = (void *)addr;
    syscall(SYS_rt_tgsigqueueinfo, getpid(), (pid_t)syscall(SYS_gettid), SIGBUS, &si);
}

/* The retry rule (above): notes the fault's address and the page's
 * generation, after the protection change that gave `err`, and lets the
 * access run again.  Precondition: the page's lock held; dropped here. */
static int run_again(void *addr, struct upager__page *p, int err)
{
    retry_addr = addr;
    retry_gen = p->gen;
    upager__unlock(&p->lock);
    if (err)
        raise_sigbus(addr, err);
    else
        upager__clock_open_check();
    return 1;
}

/* Resolves a fault at addr, whose access type is acc.  Returns 1 when the
 * access may run again, 0 when the fault is genuine. */
static int fault(void *addr, int acc)
{
    struct upager__global *g = &upager__g;
    size_t page = ADDR_PAGE(addr);
    struct upager__page *p = PG(page);
    bool write = acc == ACCESS_WRITE;
    bool major = false, mark = false;
    int err = 0;

    upager__page_lock(page);
    if (p->state == PAGE_FREE) {
        upager__unlock(&p->lock);
        genuine(addr, ": no live allocation or mapping there");
        return 0;
    }
    if (write && (p->flags & PF_RDONLY)) /* never dirty, never writable */
        goto read_only;

    switch (p->state) {
    case PAGE_EMPTY:
        err = open_empty(page, write, write ? upager__wa_window(page) : 1);
        break;

    case PAGE_STORED: {
        size_t n = upager__ra_window(page);
        if (n == 1 && !write && reads_part(page)) {
            if (!(err = load_block(page, block_of(page, addr))))
                upager__ra_loaded(page, 1, p->owner);
        } else {
            err = load_run(page, n, write ? LOAD_WRITE : LOAD_READ);
        }
        major = true;
        break;
    }

    case PAGE_RESIDENT:
        if (p->blocks) { /* read in part */
            unsigned b = block_of(page, addr);
            if (acc == ACCESS_UNKNOWN && (p->flags & PF_REF) && ((p->blocks >> b) & 1)) {
                if (!((p->openb >> b) & 1)) {
                    /* A read of a block not open, or a write: open it
                     * and see (the retry rule). */
                    return run_again(addr, p, open_blocks(page, b));
                }
                if (!(retry_addr == addr && retry_gen == p->gen)) {
                    /* Open: a read that raced the opening, or a write.
                     * Run it again and see (the retry rule). */
                    return run_again(addr, p, upager__protect_blocks(page, b, 1, PROT_READ));
                }
                if (p->flags & PF_RDONLY)
                    goto read_only;
                write = true;
            }
            err = fault_part(page, b, write, &major);
            break;
        }
        if (!(p->flags & PF_REF)) { /* cooled: referenced again */
            uint8_t old = p->flags;
            mark = (p->flags & PF_RAMARK) != 0; /* the program reached a window */
            bool ahead = (p->flags & PF_RA) != 0;
            p->flags &= (uint8_t)~(PF_RA | PF_RAMARK);
            upager__flags(p, p->flags | (PF_REF | (write ? PF_DIRTY : 0)));
            p->wb &= WB_EARLY; /* in use again: not for the cleaner */
            if ((err = upager__protect(page, 1, prot_of(p)))) {
                upager__flags(p, old);
                upager__protect(page, 1, PROT_NONE);
            } else if (ahead) {
                open_window(page);
            } else {
                open_around(page);
            }
            break;
        }
        if ((p->flags & PF_DIRTY) || acc == ACCESS_READ) {
            /* Open for this access already: another thread resolved it
             * meanwhile.  Apply the protection again (a no-op unless a
             * failed mprotect over a run left this page behind). */
            err = upager__protect(page, 1, prot_of(p));
            upager__unlock(&p->lock);
            if (err)
                raise_sigbus(addr, err);
            return 1;
        }
        if (acc == ACCESS_UNKNOWN && !(retry_addr == addr && retry_gen == p->gen)) {
            /* Readable and clean: a read that raced a load, or a write.
             * Run it again and see (the retry rule, above). */
            return run_again(addr, p, upager__protect(page, 1, PROT_READ));
        }
        /* A write to a readable, clean page: its first write. */
        if (p->flags & PF_RDONLY)
            goto read_only;
        p->flags |= PF_DIRTY;
        if ((err = upager__protect(page, 1, PROT_READ | PROT_WRITE))) {
            p->flags &= (uint8_t)~PF_DIRTY;
            upager__protect(page, 1, PROT_READ);
        }
        break;
    }
    upager__unlock(&p->lock);
    retry_addr = NULL;
    if (err) { /* the page cannot be served: do not loop on it */
        raise_sigbus(addr, err);
        return 1;
    }
    atomic_fetch_add_explicit(&g->st.faults, 1, memory_order_relaxed);
    if (major)
        atomic_fetch_add_explicit(&g->st.major_faults, 1, memory_order_relaxed);
    if (mark)
        upager__ra_hit(page, p->owner);
    if (major || mark)
        upager__ra_evict_behind(page);
    upager__clock_open_check();
    return 1;

read_only:
    upager__unlock(&p->lock);
    retry_addr = NULL;
    genuine(addr, ": write to a read-only mapping");
    return 0;
}

static int handler(void *addr, int serious)
{
    int acc = fault_access;
    fault_access = ACCESS_UNKNOWN; /* consumed: a later call without segv_entry guesses */
    if (!atomic_load_explicit(&upager__g.ready, memory_order_acquire) || !IN_ARENA(addr))
        return 0;
    if (serious && declined_addr == addr)
        return 0; /* declined on the first call already */
    int saved = errno;
    int r = fault(addr, acc);
    errno = saved;
    return r;
}

int upager__fault_install(void)
{
    if (sigsegv_install_handler(handler) < 0)
        return ENOSYS;
    /* Put segv_entry in front of libsigsegv's action, with its flags and
     * mask.  If that cannot be done the handler works without the access
     * type (the retry rule). */
    struct sigaction cur;
    if (!upager__fault_no_context && sigaction(SIGSEGV, NULL, &cur) == 0 &&
        (cur.sa_flags & SA_SIGINFO) &&
        cur.sa_sigaction != segv_entry) {
        segv_next = cur;
        cur.sa_sigaction = segv_entry;
        sigaction(SIGSEGV, &cur, NULL);
    }
    return 0;
}
