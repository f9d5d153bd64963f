/*
 * readahead.c - when to read ahead, and how far.
 *
 * Each thread keeps the page that would continue its run of major faults.
 * A fault there is sequential: the window of pages loaded with it doubles,
 * up to UPAGER_READAHEAD pages and never more than a quarter of the
 * budget; any other fault starts over at one page (random access reads
 * only the page it needs).  UPAGER_ADVICE_SEQUENTIAL starts at the full
 * window, UPAGER_ADVICE_RANDOM never reads ahead.
 *
 * Once a run is sequential, the fault also asks the I/O threads (ioq.c)
 * for the two windows that follow the pages it loaded.  Their first pages
 * are marked; the program touching a mark asks for the window two further
 * on, so that about two windows are read while the program uses a third.
 * Those pages arrive cooled: unused, they are the clock's first victims.
 *
 * A sequential writer's pages well behind it are written back early
 * (write-behind, below).
 *
 * With UPAGER_ADVICE_SEQUENTIAL the pages well behind a sequential fault
 * will not be wanted again soon: they are evicted at once (evict behind),
 * so that a scan does not push out the rest of the resident set.
 *
 * Called from the fault path: thread-local state and atomics only.
 */
#include "internal.h"

#define TLS __thread __attribute__((tls_model("initial-exec")))

/* A major fault in [seq_lo, seq_hi] continues this thread's run: the page
 * after the last one loaded, or one of the windows in flight. */
static TLS size_t seq_lo, seq_hi;
static TLS unsigned seq_window; /* read-ahead pages for this thread */

#define RA_AHEAD UPAGER__IO_THREADS /* windows in flight: one per I/O thread */

size_t upager__ra_window(size_t page)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(page);
    unsigned max = (unsigned)g->readahead;
    if (max == 0 || (p->flags & PF_RANDOM)) {
        seq_window = 0;
    } else if ((page >= seq_lo && page <= seq_hi && seq_hi) || (p->flags & PF_SEQ)) {
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

/* Write-ahead: first writes to EMPTY pages in order (a sequential writer
 * filling fresh memory) open the pages after them too, the window doubling
 * as for reads. */
static TLS size_t wseq_next;
static TLS unsigned wseq_window;

size_t upager__wa_window(size_t page)
{
    struct upager__global *g = &upager__g;
    unsigned max = (unsigned)g->readahead;
    if (max == 0 || (PG(page)->flags & PF_RANDOM) || page != wseq_next || !wseq_next)
        wseq_window = 0;
    else
        wseq_window = wseq_window ? (wseq_window * 2 > max ? max : wseq_window * 2) : 1;
    size_t n = wseq_window;
    if (n > g->limit / 8)
        n = g->limit / 8;
    return 1 + n;
}

/* Write-behind.  Once the budget has been full, the pages a sequential
 * writer left well behind it are written back by the I/O threads while it
 * goes on, as the kernel's flusher writes a streaming writer's pages: they
 * stay resident, clean and write-protected, the evictions that take them
 * later write nothing, and what a fill leaves dirty is a few windows, not
 * the budget.  Before the budget is full nothing is written: data that
 * fits is never written at all. */
void upager__ra_written(size_t page, size_t run)
{
    bool seq = wseq_next && page == wseq_next;
    wseq_next = page + run;
    size_t lag = 4 * ((size_t)upager__g.readahead + 1);
    if (lag > upager__g.limit / 8) /* behind the run it has written, well
                                     * before the hand */
        lag = upager__g.limit / 8;
    if (seq && page >= lag + run && upager__clock_pressed())
        upager__ioq_writebehind(page - lag - run, run, PG(page)->owner);
}

/* Pages in one asynchronous window: the full read-ahead, at most an
 * eighth of the budget (two are in flight), and no more than a buffer. */
static size_t async_window(void)
{
    struct upager__global *g = &upager__g;
    size_t w = (size_t)g->readahead;
    if (w > g->limit / 8)
        w = g->limit / 8;
    if (w > upager__io_run_max())
        w = upager__io_run_max();
    return w;
}

void upager__ra_loaded(size_t page, size_t run, const void *owner)
{
    seq_lo = seq_hi = page + run;
    if (seq_window == 0 || !upager__ioq_running())
        return;
    size_t w = async_window();
    if (w == 0)
        return;
    for (size_t k = 0; k < RA_AHEAD; k++)
        upager__ioq_readahead(page + run + k * w, w, owner);
    seq_hi = page + run + RA_AHEAD * w;
}

void upager__ra_hit(size_t page, const void *owner)
{
    size_t w = async_window();
    if (w == 0)
        return;
    if (seq_window == 0)
        seq_window = (unsigned)w; /* the run goes on in this thread */
    upager__ioq_readahead(page + RA_AHEAD * w, w, owner);
    seq_lo = page;
    seq_hi = page + (RA_AHEAD + 1) * w;
}

void upager__ra_evict_behind(size_t page)
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
