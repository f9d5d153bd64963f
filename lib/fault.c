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
 * For a live page it takes the page's lock (a thread faulting on a page
 * being loaded sleeps on that lock), then by state:
 *   EMPTY    take a frame (clock.c), open the page PROT_READ: the memfd
 *            hole reads as zeros                                 (minor)
 *   STORED   take a frame, read the store into an I/O buffer, write it
 *            into the frame through the memfd while the page is still
 *            PROT_NONE, then open it PROT_READ; when the faults run
 *            sequentially the following pages come in the same read,
 *            write and mprotect (read-ahead)                     (major)
 *   RESIDENT cooled: set PF_REF, restore the protection          (soft)
 *            readable and clean: the access was a write; set PF_DIRTY and
 *            open it PROT_READ|PROT_WRITE.  On a read-only mapping that is a
 *            genuine fault, once the same thread faults twice in a row at
 *            the same address (the first may be a race with a load).
 *            writable: another thread resolved it meanwhile; retry.
 * A read that fails raises SIGBUS, as the kernel does for a mapped file.
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
#include <unistd.h>

#include "internal.h"

#define TLS __thread __attribute__((tls_model("initial-exec")))

static TLS const void *ambiguous_addr; /* last fault that was retried      */
static TLS const void *declined_addr;  /* last fault that was declined     */
static TLS size_t seq_next;            /* page that would continue a run   */
static TLS unsigned seq_window;        /* read-ahead pages for this thread */

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

/* ---- page-in -------------------------------------------------------- */

#define RUN_MAX 64 /* pages loaded by one read */

/* Loads `page` (STORED, locked by the caller) together with up to n - 1
 * pages that follow it in the same allocation or mapping, are STORED and
 * can be locked at once: one read from the store, one write into the
 * frames through the memfd, one mprotect.  Until that mprotect the pages
 * are PROT_NONE, so no thread sees them half-filled.  Returns 0 or the
 * errno for `page`; the pages that follow are just left unloaded on error.
 * Precondition: the caller holds the lock of `page` only. */
static int load_run(size_t page, size_t n)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    size_t ps = g->page_size;
    size_t max_run = g->bounce_size / ps;
    uint32_t frames[RUN_MAX];
    if (n > max_run)
        n = max_run;
    if (n < 1)
        n = 1;
    size_t run = 1;
    while (run < n && page + run < g->npages) {
        struct upager__page *q = PG(page + run);
        if (q->state != PAGE_STORED || q->owner != p->owner || !upager__trylock(&q->lock))
            break;
        if (q->state != PAGE_STORED || q->owner != p->owner || q->kind != p->kind) {
            upager__unlock(&q->lock);
            break;
        }
        run++;
    }
    for (size_t i = 0; i < run; i++)
        frames[i] = (uint32_t)upager__frame_get(page + i);

    uint64_t off, off_last;
    size_t len, len_last;
    struct upager__store *s = upager__page_store(page, &off, &len);
    upager__page_store(page + run - 1, &off_last, &len_last);
    size_t total = (size_t)(off_last - off) + len_last; /* bytes the store has */
    char *b = upager__bounce_get();
    int err = 0;
    if (total)
        err = s->ops->read(s, b, s->direct ? run * ps : total, off);
    if (!err) {
        if (total < run * ps && !s->direct)
            memset(b + total, 0, run * ps - total);
        err = upager__frame_fill(page, b, run);
    }
    upager__bounce_put(b);
    if (!err)
        err = upager__protect(page, run, PROT_READ);
    if (err) {
        upager__frames_drop(page, run);
        for (size_t i = 0; i < run; i++)
            upager__frame_put(frames[i]);
        for (size_t i = 1; i < run; i++)
            upager__unlock(&PG(page + i)->lock);
        atomic_fetch_add_explicit(&g->st.io_errors, 1, memory_order_relaxed);
        if (run > 1) /* perhaps only a read-ahead page is bad: retry alone */
            return load_run(page, 1);
        return err;
    }
    for (size_t i = 0; i < run; i++) {
        struct upager__page *q = PG(page + i);
        q->state = PAGE_RESIDENT;
        q->frame = frames[i];
        q->flags = (uint8_t)((q->flags & ~PF_DIRTY) | PF_REF);
        if (i)
            upager__unlock(&q->lock);
    }
    atomic_fetch_add_explicit(&g->st.bytes_read, total, memory_order_relaxed);
    atomic_fetch_add_explicit(&g->st.readahead_pages, run - 1, memory_order_relaxed);
    seq_next = page + run;
    return 0;
}

int upager__page_in_locked(size_t page, bool counted)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    if (p->state == PAGE_STORED) {
        int err = load_run(page, 1);
        if (!err && counted)
            atomic_fetch_add_explicit(&g->st.major_faults, 1, memory_order_relaxed);
        return err;
    }
    size_t f = upager__frame_get(page); /* EMPTY: the memfd hole reads as zeros */
    int err = upager__protect(page, 1, PROT_READ);
    if (err) {
        upager__frame_put(f);
        return err;
    }
    p->state = PAGE_RESIDENT;
    p->frame = (uint32_t)f;
    p->flags = (uint8_t)((p->flags & ~PF_DIRTY) | PF_REF);
    return 0;
}

/* Read-ahead: how many pages to load with a major fault on `page`.  When
 * this thread's major faults run in order (or the range was advised
 * SEQUENTIAL) the window doubles up to the read-ahead limit, and never
 * exceeds a quarter of the budget; otherwise it is one page. */
static size_t ra_pages(size_t page)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    unsigned max = (unsigned)g->readahead;
    if (max == 0 || (p->flags & PF_RANDOM)) {
        seq_window = 0;
    } else if (page == seq_next || (p->flags & PF_SEQ)) {
        seq_window = seq_window ? (seq_window * 2 > max ? max : seq_window * 2)
                                : ((p->flags & PF_SEQ) ? max : 1);
    } else {
        seq_window = 0;
    }
    size_t n = seq_window;
    if (n > g->limit / 4)
        n = g->limit / 4;
    return 1 + n;
}

/* With UPAGER_ADVICE_SEQUENTIAL the pages well behind a sequential fault
 * will not be wanted again soon: evict them now (evict behind), so that
 * a scan does not push out the rest of the resident set.  Pages that are
 * busy or pinned are left to the clock.  Precondition: no lock held. */
static void evict_behind(size_t page)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    size_t lag = 2 * (size_t)(g->readahead ? g->readahead : 1);
    if (!(p->flags & PF_SEQ) || page < 2 * lag)
        return;
    for (size_t i = page - 2 * lag; i < page - lag; i++) {
        struct upager__page *q = PG(i);
        if (q->state != PAGE_RESIDENT || q->owner != p->owner || !(q->flags & PF_SEQ) ||
            !upager__trylock(&q->lock))
            continue;
        if (q->owner == p->owner)
            upager__evict_locked(i);
        upager__unlock(&q->lock);
    }
}

/* ---- the handler ---------------------------------------------------- */

static void genuine(const void *addr, const char *why)
{
    char hex[24];
    declined_addr = addr;
    upager__say_safe("segmentation fault at ", upager__hex(hex, (uintptr_t)addr), why);
}

static void raise_sigbus(const void *addr, int err)
{
    char hex[24];
    upager__say_safe("bus error at ", upager__hex(hex, (uintptr_t)addr),
                     err == ENOMEM ? ": the page could not be mapped (out of kernel mappings)"
                                   : ": the page could not be read from its store");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGBUS, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGBUS);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(SIGBUS);
}

static int fault(void *addr)
{
    struct upager__global *g = &upager__g;
    size_t page = ADDR_PAGE(addr);
    struct upager__page *p = PG(page);

    upager__lock(&p->lock);
    switch (p->state) {
    case PAGE_FREE:
        upager__unlock(&p->lock);
        genuine(addr, ": no live allocation or mapping there");
        return 0;

    case PAGE_EMPTY: {
        int err = upager__page_in_locked(page, false);
        upager__unlock(&p->lock);
        if (err) { /* the page cannot be opened: do not loop on it */
            raise_sigbus(addr, err);
            return 0;
        }
        atomic_fetch_add_explicit(&g->st.faults, 1, memory_order_relaxed);
        break;
    }

    case PAGE_STORED: {
        int err = load_run(page, ra_pages(page));
        upager__unlock(&p->lock);
        if (err) {
            raise_sigbus(addr, err);
            return 0;
        }
        atomic_fetch_add_explicit(&g->st.faults, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&g->st.major_faults, 1, memory_order_relaxed);
        evict_behind(page);
        break;
    }

    case PAGE_RESIDENT:
        if (!(p->flags & PF_REF)) { /* cooled: referenced again */
            p->flags |= PF_REF;
            upager__protect(page, 1,
                            (p->flags & PF_DIRTY) ? PROT_READ | PROT_WRITE : PROT_READ);
        } else if (p->flags & PF_DIRTY) {
            upager__unlock(&p->lock); /* resolved by another thread meanwhile */
            return 1;
        } else if (p->flags & PF_RDONLY) {
            /* Readable: a write, or a read that raced with the load. */
            upager__unlock(&p->lock);
            if (ambiguous_addr == addr) {
                ambiguous_addr = NULL;
                genuine(addr, ": write to a read-only mapping");
                return 0;
            }
            ambiguous_addr = addr;
            return 1;
        } else { /* first write */
            p->flags |= PF_DIRTY;
            upager__protect(page, 1, PROT_READ | PROT_WRITE);
        }
        upager__unlock(&p->lock);
        atomic_fetch_add_explicit(&g->st.faults, 1, memory_order_relaxed);
        break;
    }
    ambiguous_addr = NULL;
    return 1;
}

static int handler(void *addr, int serious)
{
    if (!atomic_load_explicit(&upager__g.ready, memory_order_acquire) || !IN_ARENA(addr))
        return 0;
    if (serious && declined_addr == addr)
        return 0; /* declined on the first call already */
    int saved = errno;
    int r = fault(addr);
    errno = saved;
    return r;
}

int upager__fault_install(void)
{
    if (sigsegv_install_handler(handler) < 0)
        return ENOSYS;
    return 0;
}
