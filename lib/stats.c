/*
 * stats.c - the counters, upager_get_stats, and the report printed at exit
 * with UPAGER_STATS=1.
 *
 * The counters are relaxed atomics bumped where the events happen; the
 * frame counts come from the clock under its lock.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

int upager_get_stats(struct upager_stats *out)
{
    if (!out)
        return EINVAL;
    int err = upager__ensure_init();
    if (err)
        return err;
    /* Filled on the stack and copied out with no lock held: `out` may be
     * paged memory, and a fault on it needs the locks taken here. */
    struct upager__global *g = &upager__g;
    struct upager_stats s;
    memset(&s, 0, sizeof s);
    s.faults = LOAD(g->st.faults);
    s.major_faults = LOAD(g->st.major_faults);
    s.evictions = LOAD(g->st.evictions);
    s.writebacks = LOAD(g->st.writebacks);
    s.dirty_evictions = LOAD(g->st.dirty_evictions);
    s.bytes_read = LOAD(g->st.bytes_read);
    s.bytes_written = LOAD(g->st.bytes_written);
    s.io_errors = LOAD(g->st.io_errors);
    s.map_errors = LOAD(g->st.map_errors);
    s.allocated_bytes = upager__alloc_allocated_bytes(); /* thread caches too */
    s.page_size = g->page_size;
    upager__lock(&g->clock_lock);
    s.resident_bytes = upager__clock_memory() << g->block_shift;
    s.peak_resident_bytes = g->peak << g->block_shift;
    s.budget_bytes = g->limit * g->page_size;
    s.pinned_bytes = (uint64_t)g->pinned * g->page_size;
    upager__unlock(&g->clock_lock);
    memcpy(out, &s, sizeof s);
    return 0;
}

void upager__stats_print(int fd)
{
    struct upager_stats s;
    if (upager_get_stats(&s) != 0)
        return;
    char a[32], b[32], c[32], d[32];
    dprintf(fd,
            "upager: stats: faults %llu (major %llu, read-ahead pages %llu), evictions %llu "
            "(dirty %llu), writebacks %llu, read %llu bytes, written %llu bytes, "
            "io_errors %llu, map_errors %llu\n"
            "upager: stats: resident %s, peak %s, budget %s, page %s, allocated %llu bytes\n",
            (unsigned long long)s.faults, (unsigned long long)s.major_faults,
            (unsigned long long)LOAD(upager__g.st.readahead_pages),
            (unsigned long long)s.evictions, (unsigned long long)s.dirty_evictions,
            (unsigned long long)s.writebacks, (unsigned long long)s.bytes_read,
            (unsigned long long)s.bytes_written, (unsigned long long)s.io_errors,
            (unsigned long long)s.map_errors,
            upager__fmt_size(a, sizeof a, s.resident_bytes),
            upager__fmt_size(b, sizeof b, s.peak_resident_bytes),
            upager__fmt_size(c, sizeof c, s.budget_bytes),
            upager__fmt_size(d, sizeof d, s.page_size), (unsigned long long)s.allocated_bytes);
}
