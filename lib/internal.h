/*
 * internal.h - what the modules of lib/ share; nothing here is public.
 *
 * Names are upager__*, and the library is built with -fvisibility=hidden,
 * so none of this is exported.  Who owns what:
 *   config.c   options: parsing and validation (environment, upager_configure)
 *   init.c     start-up, fork handling, the effective configuration
 *   arena.c    the reserved arena, the page table, the address-space runs
 *   fault.c    the SIGSEGV handler and page-in
 *   clock.c    frames, the clock hand, eviction, the budget
 *   io.c       transfers between frames and stores, the I/O buffers
 *   ioq.c      the I/O threads: background write-back, async read-ahead
 *   readahead.c  the read-ahead policy
 *   store*.c   the backing stores
 *   alloc.c    the malloc-like API
 *   map.c      file mappings, pinning, advice
 *   stats.c    counters and their printing
 */
#ifndef UPAGER_INTERNAL_H
#define UPAGER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lock.h"
#include "store.h"
#include "upager.h"

#define UPAGER__MIN_AUTO_PAGE ((size_t)64 << 10) /* smallest default page size  */
#define UPAGER__MAX_BLOCKS 32 /* blocks of a page read in part (page->blocks)    */
#define UPAGER__MAX_PAGE ((size_t)2 << 20)       /* largest page size accepted  */
#define UPAGER__DEFAULT_ARENA ((uint64_t)1 << 40) /* 1T of address space       */
#define UPAGER__NBOUNCE 4                        /* I/O buffers, in page units  */
#define UPAGER__RA_AUTO_MAX 16                   /* automatic read-ahead, pages */
#define UPAGER__RA_MAX 64                        /* largest UPAGER_READAHEAD    */
#define UPAGER__NSHARD 8                         /* memfds behind the arena     */
#define UPAGER__IO_THREADS 3                     /* background I/O threads      */

/* ------------------------------------------------------------------------
 * Options (config.c)
 * ---------------------------------------------------------------------- */

struct upager__config {
    uint64_t budget;        /* bytes; 0 with budget_pct 0: half of memory   */
    unsigned budget_pct;    /* 1..100 when given as a percentage, else 0     */
    size_t page_size;       /* 0: chosen at start-up                        */
    char dir[4096];         /* "" : $TMPDIR, else /var/tmp                   */
    uint64_t arena;         /* bytes of address space to reserve            */
    int readahead;          /* pages; -1: automatic                          */
    int direct_io;          /* 1, 0, or -1: automatic (O_DIRECT where the
                               store's file system takes it)                */
    bool stats;
    bool verbose;
    /* UPAGER_STORE=redis://[[user]:password@]host[:port][/db][?prefix=P]
     * or redis-cluster://[[user]:password@]host[:port][,host[:port]...][?prefix=P] */
    bool store_redis;       /* the anonymous store is a Redis server        */
    bool redis_cluster;     /* ... a cluster; redis_host: "h:p,h:p..."       */
    char redis_host[1024];
    int redis_port;
    int redis_db;
    char redis_user[128];     /* from the URL, for AUTH user password        */
    char redis_password[256]; /* from the URL; never printed                 */
    char redis_prefix[200];   /* "" : upager:<hostname>:<pid>:<random>       */
    char store_password[256]; /* UPAGER_STORE_PASSWORD, over the URL's       */
};

/* Parses one option into cfg.  `label` names it in the error line (the
 * environment variable, or the name given to upager_configure).  Returns 0,
 * or EINVAL after printing one line; ENOENT for an unknown name (no line). */
int upager__config_set(struct upager__config *cfg, const char *name,
                       const char *value, const char *label);

/* Applies every UPAGER_* variable of the environment over cfg. */
int upager__config_from_env(struct upager__config *cfg);

/* Size parsing, exposed for the unit tests: digits with an optional binary
 * suffix K, M, G, T (also KiB/KB/kB...).  Returns 0 or EINVAL. */
int upager__parse_size(const char *s, uint64_t *out);
int upager__parse_bool(const char *s, bool *out);

/* Formats a size as "64K", "1G", or plain bytes; returns buf. */
char *upager__fmt_size(char *buf, size_t len, uint64_t bytes);

/* Prints "upager: " and the formatted text as one line on stderr, with
 * write(2), so it is safe anywhere (fault path included when fmt is a
 * plain string: see upager__say_safe). */
void upager__say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Async-signal-safe: writes the pieces, then a newline, in one write(2).
 * Pieces are strings; an address is formatted with upager__hex. */
void upager__say_safe(const char *a, const char *b, const char *c);
char *upager__hex(char *buf, uintptr_t v); /* buf of 24 bytes */

/* The Redis store (store_redis.c): connects, authenticates, selects the
 * database, refuses a server whose maxmemory-policy may evict keys, and
 * starts its I/O thread.  `bytes` is the size of the store's offsets (the
 * arena).  Returns 0, or EINVAL (or an errno) after printing one line that
 * starts with `label`. */
int upager__store_redis_open(struct upager__store *s, const struct upager__config *cfg,
                             const char *label, size_t page_size, uint64_t bytes);
const char *upager__store_redis_prefix(void); /* the key prefix in use */

/* ------------------------------------------------------------------------
 * The page table (arena.c)
 *
 * One entry per arena page, in a reservation of its own that the kernel
 * commits only where it is touched: the table grows with the part of the
 * arena in use, not with the reservation.
 * ---------------------------------------------------------------------- */

enum upager__page_state {
    PAGE_FREE = 0,  /* no allocation or mapping: a fault here is genuine   */
    PAGE_EMPTY,     /* live, all zeros, nothing in the store, no frame     */
    PAGE_STORED,    /* live, contents in the store, no frame               */
    PAGE_RESIDENT,  /* live, in a frame (protection: see flags)            */
};

/* flags */
#define PF_REF     0x01 /* referenced: accessible; clear = cooled, PROT_NONE */
#define PF_DIRTY   0x02 /* written since loaded: PROT_READ|PROT_WRITE        */
#define PF_INSTORE 0x04 /* the store holds contents for this page            */
#define PF_RDONLY  0x08 /* a read-only mapping: a write is a genuine fault   */
#define PF_SEQ     0x10 /* advice: sequential                                */
#define PF_RANDOM  0x20 /* advice: random, no read-ahead                     */
#define PF_RA      0x40 /* read ahead by an I/O thread, not yet accessed      */
#define PF_RAMARK  0x80 /* ... and the first page of its window               */

/* wb */
#define WB_WANTED 0x01 /* dirty, cooled: the I/O threads write it back       */
#define WB_EARLY  0x02 /* the I/O threads wrote it while it stayed resident:
                          dirty again, it is rewritten in place, and is not
                          written again before it is a victim (clock.c)    */
#define WB_AHEAD  0x04 /* cooled with the run of the page at the hand, before
                          the hand came to its own frame: the hand's visit
                          there only passes it (clock.c, cool_run)         */

/* kind: who owns a live page */
enum { OWNER_NONE = 0, OWNER_SLAB, OWNER_LARGE, OWNER_MAP };

struct upager__page {
    upager__lock_t lock; /* held for every state change, and across its I/O  */
    uint8_t state;       /* enum upager__page_state                          */
    uint8_t flags;       /* PF_*                                             */
    uint8_t kind;        /* OWNER_*; set by alloc.c / map.c under alloc_lock */
    uint8_t wb;          /* WB_*: write-back in the background (ioq.c), and
                            WB_AHEAD (clock.c)                               */
    uint32_t pins;       /* upager_pin nesting count; pinned pages stay      */
    uint32_t frame;      /* frame index while PAGE_RESIDENT                  */
    uint32_t gen;        /* protection generation: new at every mprotect     */
    uint32_t blocks;     /* RESIDENT and read in part (fault.c): the blocks
                            whose store contents are in the frame; 0: the
                            whole page.  Such a page is never dirty.         */
    uint32_t openb;      /* of those, the blocks open (readable) while
                            PF_REF; 0 for a whole page (upager__set_open)    */
    void *owner;         /* struct slab / large / mapping of alloc.c, map.c  */
};

#define PAGE_IS_LIVE(p) ((p)->state != PAGE_FREE)

/* Blocks of a resident page that are not in memory: a page read in part
 * holds only some (fault.c); the budget counts what is held. */
#define PAGE_MISSING(p) \
    ((p)->blocks ? upager__g.nblocks - (size_t)__builtin_popcount((p)->blocks) : 0)

/* What the pages of a group of page-table entries become on first use,
 * when one allocation or mapping covers the whole group (arena.c). */
struct upager__group {
    upager__lock_t lock; /* held to change the descriptor or create entries */
    uint8_t kind;        /* OWNER_*; OWNER_NONE: the group is not live      */
    uint8_t state;       /* PAGE_EMPTY or PAGE_STORED                        */
    uint8_t flags;       /* PF_*                                             */
    uint8_t touched;     /* an entry was created from this descriptor        */
    void *owner;
};

/* A file mapping (map.c); the owner of its pages. */
struct upager__mapping {
    struct upager__store store; /* the file                                  */
    size_t first, npages;       /* arena pages                               */
    uint64_t file_size;         /* bytes of the file that belong to the map  */
    int flags;                  /* UPAGER_MAP_*                              */
    struct upager__mapping *next;
};

/* ------------------------------------------------------------------------
 * Global state.  Set up once by upager_init, read-only afterwards except
 * where a field says which lock guards it.
 * ---------------------------------------------------------------------- */

struct upager__stats_counters {
    _Atomic uint64_t faults, major_faults, evictions, writebacks, dirty_evictions;
    _Atomic uint64_t bytes_read, bytes_written, io_errors;
    _Atomic uint64_t readahead_pages;
    _Atomic uint64_t map_errors;  /* mprotect/fallocate failures           */
    _Atomic size_t allocated_bytes;
};

struct upager__global {
    _Atomic int ready;            /* 1 once the pager may run               */
    struct upager__config cfg;    /* effective configuration                */
    uint64_t mem_avail;           /* physical memory or cgroup limit        */
    long max_map_count;

    /* arena */
    size_t page_size;
    unsigned page_shift;
    unsigned block_shift;         /* blocks of a page read in part (fault.c) */
    unsigned nblocks;             /* blocks per page; 1: pages read whole   */
    char *base;                   /* first arena byte                       */
    char *view;                   /* the memfds again, for write-backs only
                                     (io.c); NULL: through I/O buffers     */
    size_t npages;                /* arena pages                            */
    int memfd[UPAGER__NSHARD];    /* the frames; the arena maps them        */
    upager__lock_t memfd_lock[UPAGER__NSHARD]; /* around writes and punches
                                     of a memfd (os.c)                      */
    unsigned nshard;              /* memfds in use                          */
    size_t shard_pages;           /* arena pages per memfd                  */
    struct upager__page *pages;   /* the page table                         */
    struct upager__group *groups; /* its group descriptors                  */
    struct upager__store anon;    /* store of allocated memory              */

    /* clock: everything below is guarded by clock_lock */
    upager__lock_t clock_lock;
    size_t nframes;               /* size of the frame table: the budget in
                                     blocks at its largest, since a page
                                     read in part may hold one block       */
    size_t max_open;              /* open runs allowed: what
                                     vm.max_map_count bounds (clock.c)      */
    _Atomic size_t open;          /* open runs of pages (upager__set_open)  */
    size_t *frame_page;           /* page in each frame, or FRAME_NONE      */
    size_t *free_frames;          /* stack of unused frame indices          */
    size_t nfree;
    size_t hand;                  /* next frame the hand looks at           */
    size_t span;                  /* slots [0, span) were ever handed out   */
    size_t used;                  /* frames holding or being given a page   */
    size_t missing;               /* blocks of those frames not in memory:
                                     pages read in part (fault.c)           */
    size_t limit;                 /* budget in pages                        */
    size_t pinned;                /* pages with pins > 0                    */
    size_t peak;                  /* highest memory in use, in blocks       */
    bool overrun_said;            /* the over-budget line was printed       */

    /* I/O buffers for the fault path */
    char *bounce;                 /* UPAGER__NBOUNCE buffers of bounce_size */
    size_t bounce_size;
    _Atomic uint32_t bounce_free; /* bit i set: buffer i free               */
    _Atomic uint32_t bounce_seq;  /* bumped on release; waiters sleep on it */
    _Atomic uint32_t bounce_waiters; /* threads asleep on bounce_seq        */
    int readahead;                /* pages read ahead on sequential faults  */

    /* allocator and mappings, guarded by alloc_lock (never the fault path) */
    pthread_mutex_t alloc_lock;
    struct upager__mapping *mappings;

    struct upager__stats_counters st;
};

extern struct upager__global upager__g;

#define FRAME_NONE ((size_t)-1)

/* What an accessible page costs the kernel, in open runs: each is at most
 * two mappings (the run, and the PROT_NONE rest of the page split off
 * behind it).  A whole page open is one run; a page read in part has a run
 * per stretch of open blocks; a cooled page costs none.  g->open is the sum
 * over all pages, and vm.max_map_count bounds it (clock.c). */
static inline size_t upager__open_runs(unsigned flags, uint32_t openb)
{
    if (!(flags & PF_REF))
        return 0;
    return openb ? (size_t)__builtin_popcount(openb & ~(openb << 1)) : 1;
}

/* Sets a page's flags and open blocks (its lock held).  Every change of
 * PF_REF or openb goes through here or upager__flags, so that g->open
 * stays the sum of upager__open_runs.  Without PF_REF nothing is open. */
static inline void upager__set_open(struct upager__page *p, unsigned f, uint32_t openb)
{
    if (!(f & PF_REF))
        openb = 0;
    size_t was = upager__open_runs(p->flags, p->openb), now = upager__open_runs(f, openb);
    if (now > was)
        atomic_fetch_add_explicit(&upager__g.open, now - was, memory_order_relaxed);
    else if (now < was)
        atomic_fetch_sub_explicit(&upager__g.open, was - now, memory_order_relaxed);
    p->flags = (uint8_t)f;
    p->openb = openb;
}

/* Sets a page's flags (its lock held), its open blocks unchanged. */
static inline void upager__flags(struct upager__page *p, unsigned f)
{
    upager__set_open(p, f, p->openb);
}
#define PG(i) (&upager__g.pages[(i)])
#define PAGE_ADDR(i) (upager__g.base + ((size_t)(i) << upager__g.page_shift))
#define VIEW(i) (upager__g.view + ((size_t)(i) << upager__g.page_shift))
#define ADDR_PAGE(a) ((size_t)((const char *)(a) - upager__g.base) >> upager__g.page_shift)
#define IN_ARENA(a)                                                        \
    ((const char *)(a) >= upager__g.base &&                                \
     (const char *)(a) < upager__g.base + (upager__g.npages << upager__g.page_shift))

/* init.c */
int upager__ensure_init(void); /* 0, or the errno of a failed start-up */
uint64_t upager__cgroup_limit(const char *proc_self_cgroup, const char *root);
bool upager__in_parent_arena(const void *p); /* in a child of fork */
#define UPAGER__MIN_PAGES 8 /* smallest budget: one access may span this many */
#define UPAGER__AUTO_PAGES 256 /* the automatic page size gives at least this many */

/* arena.c  (address-space functions: caller holds alloc_lock) */
int upager__arena_init(void);
int upager__space_alloc(size_t npages, size_t align_bytes, bool spread, size_t *first);
void upager__space_free(size_t first, size_t npages);
void upager__pages_make_live(size_t first, size_t n, int kind, void *owner, int flags);
int upager__pages_release(size_t first, size_t n, bool discard_store);
/* Lock a page's entry, creating it from its group first when needed:
 * every lock of a page by its index goes through these (fault path
 * included), never a bare upager__lock. */
void upager__page_lock(size_t page);
int upager__page_trylock(size_t page); /* 1 when locked */

/* clock.c */
int upager__clock_init(size_t limit);
/* A frame for `page`, whose lock the caller holds: 0, or ENOMEM at
 * vm.max_map_count, or EAGAIN when !wait and no frame can be had at once.
 * A caller that holds frames already (a read-ahead run) must not wait:
 * threads holding frames and waiting for more could take the whole budget. */
int upager__frame_get(size_t page, size_t *frame, bool wait);
/* The same for a page read in part: the frame holds `blocks` blocks. */
int upager__frame_get_blocks(size_t page, size_t *frame, bool wait, size_t blocks);
/* A page read in part (locked by the caller) takes `blocks` more blocks
 * of memory, evicting others to make room: 0 or ENOMEM. */
int upager__frame_charge(size_t blocks);
void upager__frame_uncharge(size_t blocks); /* ... gives them back */
size_t upager__clock_memory(void);        /* blocks in memory; clock_lock held */
void upager__clock_signal(void);          /* a frame or a pin came free */
/* Frees a frame whose page (locked by the caller) has `missing` blocks
 * not in memory (page_missing). */
void upager__frame_put(size_t frame, size_t missing);
int upager__evict_locked(size_t page);    /* caller holds the page's lock */
int upager__clock_shrink(size_t limit);   /* evict down to limit pages    */
void upager__clock_reclaim(void); /* an I/O thread: free the reserve of frames */
/* After a page was opened: cools pages when too many runs are open (at
 * max_open, here; nearing it, by an I/O thread). */
void upager__clock_open_check(void);
bool upager__clock_pressed(void); /* the budget has been full: a fault evicted */
size_t upager__clock_open_recount(void); /* tests: open runs, counted     */
extern size_t upager__test_max_open;     /* tests: set before start-up  */
int upager__writeback_locked(size_t page);/* write a dirty page, keep it  */

/* fault.c */
int upager__fault_install(void);
extern bool upager__no_view; /* tests: set before start-up: I/O through
                                 the buffers, not the view (arena.c) */
extern bool upager__fault_no_context; /* tests: set before start-up to use
                                         the retry rule instead of the
                                         fault's context */
int upager__page_in_locked(size_t page, bool for_pin); /* 0 or errno */
/* Reads ahead: `page` (STORED, locked by the caller) and up to n - 1
 * pages after it, cooled, waiting for no frame; unlocks every page. */
int upager__load_async(size_t page, size_t n);

/* io.c: the transfers.  Locks of the pages are held by the caller, and
 * the pages are PROT_NONE (or read-only) in the arena meanwhile. */
char *upager__bounce_get(void);
void upager__bounce_put(char *b);
size_t upager__io_run_max(void); /* pages of one I/O buffer */
struct upager__store *upager__page_store(size_t page, uint64_t *off, size_t *len);
/* Store -> frames of pages [page, page+run), all of one store, run <=
 * io_run_max.  Counts bytes_read, or io_errors. */
int upager__io_read_run(size_t page, size_t run);
/* Store -> frame of `page`, block `blk` only (a random read, fault.c). */
int upager__io_read_block(size_t page, unsigned blk);
/* Frames -> store; ok[i] says which pages were written (all or none,
 * except with a store's write_many).  Counts writebacks and bytes_written;
 * a failure counts in io_errors and is said on stderr (at most every 10 s). */
int upager__io_write_run(size_t page, size_t run, bool *ok);
int upager__io_write_page(size_t page);

/* ioq.c: the I/O threads */
int upager__ioq_start(void);
void upager__ioq_after_fork(void);
bool upager__ioq_running(void);
bool upager__ioq_cleaning(void); /* running, and its write-backs succeed */
void upager__ioq_clean(void); /* cooled dirty pages wait: write them back */
void upager__ioq_reclaim(void); /* free frames run low: evict ahead (clock.c) */
bool upager__ioq_readahead(size_t page, size_t n, const void *owner); /* a hint */
/* Asks for the dirty pages of [page, page+n) of `owner` to be written back
 * and kept, write-protected (readahead.c, write-behind); a hint too. */
bool upager__ioq_writebehind(size_t page, size_t n, const void *owner);
void upager__ioq_drain(void); /* tests: until the threads are idle (10 s at most) */

/* readahead.c: the policy (thread-local state; fault path) */
size_t upager__ra_window(size_t page); /* pages to load with a major fault */
void upager__ra_loaded(size_t page, size_t run, const void *owner);
void upager__ra_hit(size_t page, const void *owner); /* a window's mark touched */
void upager__ra_evict_behind(size_t page);
size_t upager__wa_window(size_t page); /* pages to open with a first write */
void upager__ra_written(size_t page, size_t run);

/* os.c: thin wrappers, each returning 0 or an errno */
int upager__protect(size_t first, size_t n, int prot);
int upager__protect_free(size_t first, size_t n); /* PROT_NONE, for release */
/* Blocks [blk, blk+n) of `page` only (a page read in part, fault.c). */
int upager__protect_blocks(size_t page, unsigned blk, unsigned n, int prot);
int upager__frames_drop(size_t first, size_t n);            /* punch memfd */
int upager__frame_read(size_t page, void *buf, size_t npages); /* memfd read */
int upager__frame_fill_at(size_t page, size_t at, const void *buf, size_t len);
int upager__read_file(const char *path, char *buf, size_t len);

/* map.c */
void upager__map_after_fork(void);
/* Pins the live pages under [addr, addr + len) (the part in the arena) for
 * a system call: like upager_pin, but it never starts the library (the
 * caller checked `ready`) and it keeps what it pinned when it stops.
 * *covered is set to the bytes from addr that are pinned or outside the
 * arena: len when it returns 0; up to the first page it could not pin when
 * it returns ENOMEM (the budget is all pinned) or EINVAL (no live memory
 * there, or UPAGER_PIN_WRITE on a read-only mapping).  Release with
 * upager__unpin_range(addr, *covered).  Precondition: no lock held. */
int upager__pin_range(const void *addr, size_t len, int flags, size_t *covered);
void upager__unpin_range(const void *addr, size_t len);

/* alloc.c */
void upager__alloc_init(void);
size_t upager__alloc_allocated_bytes(void); /* exact when no call is in flight */

/* stats.c */
void upager__stats_print(int fd);

#endif /* UPAGER_INTERNAL_H */
