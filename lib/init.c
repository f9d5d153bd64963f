/*
 * init.c - start-up: the configuration in force, the page size, the arena,
 * the handler; and what happens across fork.
 *
 * Initialisation runs once, on upager_init or the first call that needs the
 * pager.  A failed initialisation stays failed: its line is printed once and
 * every later call returns the same error.
 *
 * The page size.  Each run of pages with a protection different from its
 * neighbours costs the kernel a mapping, and vm.max_map_count (65530 by
 * default) bounds them for the whole process; mprotect fails with ENOMEM at
 * the limit, and so do malloc and mmap everywhere.  Every accessible page
 * is at most two runs, so the pager keeps resident pages at or below
 * (max_map_count / 3) / 2 and chooses the smallest page size (64K or more)
 * for which the budget fits in that many pages.  A page size or budget the
 * user forces that cannot fit is refused here, with what to change.
 *
 * fork.  The arena is not inherited (MADV_DONTFORK) and the child closes
 * the parent's memfd, store and mapped files: it can never write into them.
 * In the child the library starts afresh on its next call; the parent's
 * paged memory is not there, and an access to it is a genuine fault.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

struct upager__global upager__g = {
    .alloc_lock = PTHREAD_MUTEX_INITIALIZER,
};

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_error;          /* errno of a failed start-up, 0 otherwise */
static bool init_done;          /* start-up ran (successfully or not)      */
static struct upager__config user_cfg; /* values given to upager_configure */
static bool user_cfg_valid;

static void config_defaults(struct upager__config *c)
{
    memset(c, 0, sizeof *c);
    c->arena = UPAGER__DEFAULT_ARENA;
    c->readahead = -1;
    c->direct_io = -1;
}

/* The lowest memory limit of the memory cgroups that hold the process,
 * ancestors included: cgroup v2 (memory.max) or v1 (memory.limit_in_bytes
 * of the memory controller's hierarchy).  `cgroups` is the text of
 * /proc/self/cgroup, `root` where the cgroup file systems are mounted.
 * UINT64_MAX when no limit applies. */
uint64_t upager__cgroup_limit(const char *cgroups, const char *root)
{
    uint64_t best = UINT64_MAX;
    const char *line = cgroups;
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char buf[4096];
        if (len < sizeof buf) {
            memcpy(buf, line, len);
            buf[len] = '\0';
            /* "hierarchy-ID:controller-list:path" */
            char *c1 = strchr(buf, ':');
            char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            const char *dir = NULL, *file = NULL;
            if (c2 && c2 == c1 + 1 && strncmp(buf, "0:", 2) == 0) {
                dir = "";                     /* v2: the unified hierarchy */
                file = "memory.max";
            } else if (c2) {
                *c2 = '\0';
                char *save;
                for (char *tok = strtok_r(c1 + 1, ",", &save); tok;
                     tok = strtok_r(NULL, ",", &save))
                    if (strcmp(tok, "memory") == 0) {
                        dir = "/memory";      /* v1: the memory controller */
                        file = "memory.limit_in_bytes";
                    }
            }
            if (dir) {
                char *path = c2 + 1;
                /* Walk up from the process's cgroup: every ancestor's
                 * limit applies. */
                for (;;) {
                    char f[4300], v[64];
                    snprintf(f, sizeof f, "%s%s%s/%s", root, dir,
                             strcmp(path, "/") == 0 ? "" : path, file);
                    if (upager__read_file(f, v, sizeof v) == 0 && v[0] >= '0' &&
                        v[0] <= '9') {
                        uint64_t lim = strtoull(v, NULL, 10);
                        if (lim && lim < best)
                            best = lim;
                    }
                    char *slash = strrchr(path, '/');
                    if (!slash || strcmp(path, "/") == 0)
                        break;
                    if (slash == path)
                        path[1] = '\0'; /* up to the root */
                    else
                        *slash = '\0';
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return best;
}

/* Physical memory, or the memory cgroup's limit when lower. */
static uint64_t memory_available(void)
{
    uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    char buf[8192];
    if (upager__read_file("/proc/self/cgroup", buf, sizeof buf) == 0) {
        uint64_t lim = upager__cgroup_limit(buf, "/sys/fs/cgroup");
        if (lim < phys)
            phys = lim;
    }
    return phys;
}

static unsigned log2_size(size_t v)
{
    unsigned s = 0;
    while (((size_t)1 << s) < v)
        s++;
    return s;
}

static int choose_geometry(struct upager__global *g)
{
    struct upager__config *c = &g->cfg;
    size_t sys = (size_t)sysconf(_SC_PAGESIZE);
    char a[32], b[32], d[32];
    char buf[64];

    g->mem_avail = memory_available();
    g->max_map_count = 65530;
    if (upager__read_file("/proc/sys/vm/max_map_count", buf, sizeof buf) == 0 &&
        atol(buf) > 0)
        g->max_map_count = atol(buf);
    size_t max_frames = (size_t)(g->max_map_count / 3 - 1) / 2;

    bool budget_forced = c->budget || c->budget_pct;
    uint64_t budget = c->budget_pct ? g->mem_avail / 100 * c->budget_pct
                      : c->budget ? c->budget
                                  : g->mem_avail / 2;

    size_t ps = c->page_size;
    if (!ps) {
        /* The smallest page of 64K or more that fits the budget under the
         * mapping cap; smaller pages, down to the system's, when the budget
         * is small, so that it holds UPAGER__AUTO_PAGES pages and small
         * objects do not each cost 64K of it. */
        ps = UPAGER__MIN_AUTO_PAGE > sys ? UPAGER__MIN_AUTO_PAGE : sys;
        while (ps < UPAGER__MAX_PAGE && budget / ps > max_frames)
            ps *= 2;
        while (ps > sys && budget / ps < UPAGER__AUTO_PAGES)
            ps /= 2;
        if (budget / ps > max_frames) {
            if (budget_forced) {
                upager__say("UPAGER_BUDGET=%s needs more than the %zu pages of 2M that "
                            "vm.max_map_count=%ld allows: lower it to %s or raise "
                            "vm.max_map_count",
                            upager__fmt_size(a, sizeof a, budget), max_frames,
                            g->max_map_count,
                            upager__fmt_size(b, sizeof b, (uint64_t)max_frames * ps));
                return EINVAL;
            }
            budget = (uint64_t)max_frames * ps; /* the default, on a huge machine */
        }
    } else if (budget / ps > max_frames) {
        size_t need = ps;
        while (need < UPAGER__MAX_PAGE && budget / need > max_frames)
            need *= 2;
        upager__say("UPAGER_PAGE_SIZE=%s with a budget of %s needs %llu resident pages, "
                    "more than the %zu that vm.max_map_count=%ld allows: set "
                    "UPAGER_PAGE_SIZE=%s or more, or a budget of at most %s",
                    upager__fmt_size(a, sizeof a, ps), upager__fmt_size(b, sizeof b, budget),
                    (unsigned long long)(budget / ps), max_frames, g->max_map_count,
                    upager__fmt_size(d, sizeof d, need),
                    upager__fmt_size(buf, sizeof buf, (uint64_t)max_frames * ps));
        return EINVAL;
    }
    if (budget < (uint64_t)ps * UPAGER__MIN_PAGES) {
        /* One access may need several pages at once (an unaligned access
         * spans two, a string instruction four). */
        upager__fmt_size(d, sizeof d, (uint64_t)ps * UPAGER__MIN_PAGES);
        if (c->page_size > sys)
            upager__say("UPAGER_BUDGET=%s is below the minimum of %s (%d pages of "
                        "UPAGER_PAGE_SIZE=%s): expected at least %s, or a smaller page size",
                        upager__fmt_size(a, sizeof a, budget), d, UPAGER__MIN_PAGES,
                        upager__fmt_size(b, sizeof b, ps), d);
        else
            upager__say("UPAGER_BUDGET=%s is below the minimum of %s (%d pages of %s): "
                        "expected at least %s",
                        upager__fmt_size(a, sizeof a, budget), d, UPAGER__MIN_PAGES,
                        upager__fmt_size(b, sizeof b, ps), d);
        return EINVAL;
    }
    if (c->arena < (uint64_t)ps * 4) {
        upager__say("UPAGER_ARENA=%s is smaller than four pages of %s",
                    upager__fmt_size(a, sizeof a, c->arena), upager__fmt_size(b, sizeof b, ps));
        return EINVAL;
    }
    g->page_size = ps;
    g->page_shift = log2_size(ps);
    size_t blk = ps / UPAGER__MAX_BLOCKS < sys ? sys : ps / UPAGER__MAX_BLOCKS;
    g->block_shift = log2_size(blk < ps ? blk : ps);
    g->nblocks = (unsigned)(ps >> g->block_shift);
    /* The budget in pages stays within max_frames, so that whole pages may
     * all be open; pages read in part may hold one block each. */
    g->max_open = upager__test_max_open ? upager__test_max_open : max_frames;
    g->nframes = max_frames * g->nblocks;
    c->budget = budget;
    return 0;
}

static int open_store(struct upager__global *g)
{
    if (g->cfg.store_redis)
        return upager__store_redis_open(&g->anon, &g->cfg, "UPAGER_STORE", g->page_size,
                                        g->cfg.arena);
    const char *dir = g->cfg.dir;
    const char *label = "UPAGER_DIR";
    if (!*dir) {
        const char *t = getenv("TMPDIR");
        dir = (t && *t) ? t : "/var/tmp";
        label = (t && *t) ? "TMPDIR" : "the default directory";
        snprintf(g->cfg.dir, sizeof g->cfg.dir, "%s", dir);
    }
    /* Automatic: O_DIRECT when the file system takes it.  The store's file
     * is private, so its page cache would be a second copy of the frames,
     * outside the budget (and in a memory cgroup, charged to it). */
    int err = upager__store_tmp_open(&g->anon, dir, g->cfg.direct_io != 0);
    if (err == EINVAL && g->cfg.direct_io < 0)
        err = upager__store_tmp_open(&g->anon, dir, 0);
    if (!err && g->cfg.direct_io < 0)
        g->cfg.direct_io = g->anon.direct;
    if (err) {
        upager__say("%s=\"%s\": cannot create the store there (%s): expected an existing, "
                    "writable directory%s",
                    label, dir, strerror(err),
                    g->cfg.direct_io > 0 ? " on a file system that supports O_DIRECT" : "");
        return EINVAL;
    }
    return 0;
}

static void print_config(const struct upager__global *g)
{
    char a[32], b[32], c[32], d[32], store[4400];
    if (g->cfg.store_redis && g->cfg.redis_cluster) /* never the password */
        snprintf(store, sizeof store, "store=redis-cluster://%s prefix=%s", g->cfg.redis_host,
                 upager__store_redis_prefix());
    else if (g->cfg.store_redis)
        snprintf(store, sizeof store, "store=redis://%s:%d/%d prefix=%s", g->cfg.redis_host,
                 g->cfg.redis_port, g->cfg.redis_db, upager__store_redis_prefix());
    else
        snprintf(store, sizeof store, "dir=%s", g->cfg.dir);
    upager__say("budget=%s page_size=%s arena=%s %s readahead=%d direct_io=%d "
                "max_open_runs=%zu (vm.max_map_count=%ld) frames=%zu memory=%s",
                upager__fmt_size(a, sizeof a, g->limit * g->page_size),
                upager__fmt_size(b, sizeof b, g->page_size),
                upager__fmt_size(c, sizeof c, g->npages * g->page_size), store,
                g->readahead, g->cfg.direct_io, g->max_open, g->max_map_count, g->nframes,
                upager__fmt_size(d, sizeof d, g->mem_avail));
}

/* Where the statistics go at exit: a copy of fd 2 made at start-up, so
 * that a program that closes stderr in its own exit handlers (coreutils'
 * close_stdout does, and may run first) still gets them. */
static int stats_fd = -1;

static void at_exit(void)
{
    if (atomic_load(&upager__g.ready) && upager__g.cfg.stats)
        upager__stats_print(stats_fd >= 0 ? stats_fd : 2);
}

static void child_after_fork(void);

static int start(void)
{
    struct upager__global *g = &upager__g;
    struct upager__config cfg;
    if (user_cfg_valid)
        cfg = user_cfg;
    else
        config_defaults(&cfg);
    int err = upager__config_from_env(&cfg);
    if (err)
        return err;
    g->cfg = cfg;
    if ((err = choose_geometry(g)) || (err = open_store(g)))
        return err;
    if ((err = upager__arena_init())) {
        upager__say("cannot reserve the arena of %llu bytes (%s): lower UPAGER_ARENA",
                    (unsigned long long)g->cfg.arena, strerror(err));
        return err;
    }
    g->readahead = g->cfg.readahead >= 0 ? g->cfg.readahead : UPAGER__RA_AUTO_MAX;
    /* An I/O buffer holds a read-ahead run: the faulting page and the
     * read-ahead, within 64 pages, 4M and 1/128 of the budget or 4 pages
     * (the buffers are resident memory outside the budget). */
    size_t run = (size_t)g->readahead + 1;
    size_t cap = (size_t)(g->cfg.budget / 64);
    if (cap < 4 * g->page_size)
        cap = 4 * g->page_size;
    if (cap > ((size_t)4 << 20))
        cap = (size_t)4 << 20;
    while (run > 1 && (run > 64 || run * g->page_size > cap))
        run--;
    g->bounce_size = run * g->page_size;
    /* In huge pages where the system allows them (THP "madvise" or
     * "always"): a direct read into 4K pages is cut into requests of at
     * most max_segments pages (about 1M on virtio), and pins each page;
     * into 2M pages it goes in requests of the buffer's size.  Measured
     * here: 0.75-0.9 GB/s against 1.9-2.0 GB/s, sequential 2M reads. */
    size_t huge = (size_t)2 << 20, total = g->bounce_size * UPAGER__NBOUNCE;
    total = (total + huge - 1) & ~(huge - 1);
    char *r = mmap(NULL, total + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (r == MAP_FAILED)
        return ENOMEM;
    g->bounce = (char *)(((uintptr_t)r + huge - 1) & ~(uintptr_t)(huge - 1));
    if (g->bounce > r)
        munmap(r, (size_t)(g->bounce - r));
    munmap(g->bounce + total, (size_t)(r + huge - g->bounce));
    madvise(g->bounce, total, MADV_HUGEPAGE);
    memset(g->bounce, 0, total); /* allocated now, not in a fault */
    g->bounce_free = (1u << UPAGER__NBOUNCE) - 1;
    if ((err = upager__clock_init((size_t)(g->cfg.budget >> g->page_shift))))
        return err;
    upager__alloc_init();
    if ((err = upager__fault_install())) {
        upager__say("cannot install the SIGSEGV handler (libsigsegv)");
        return err;
    }
    if ((err = upager__ioq_start())) {
        upager__say("cannot start the I/O threads (%s)", strerror(err));
        return err;
    }
    static bool registered;
    if (!registered) {
        registered = true;
        pthread_atfork(NULL, NULL, child_after_fork);
        atexit(at_exit);
        stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
    }
    atomic_store_explicit(&g->ready, 1, memory_order_release);
    if (g->cfg.verbose)
        print_config(g);
    return 0;
}

int upager__ensure_init(void)
{
    if (atomic_load_explicit(&upager__g.ready, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&init_lock);
    if (!init_done) {
        init_error = start();
        init_done = true;
    }
    int err = init_error;
    pthread_mutex_unlock(&init_lock);
    return err;
}

int upager_init(void)
{
    return upager__ensure_init();
}

/* The parent's arena, in a child of fork: kept reserved (PROT_NONE), so
 * that nothing else is mapped there and an access is a genuine fault. */
static char *parent_base;
static size_t parent_len;

bool upager__in_parent_arena(const void *p)
{
    return parent_base && (const char *)p >= parent_base &&
           (const char *)p < parent_base + parent_len;
}

/* In the child of fork: close what belongs to the parent, forget the rest
 * (its memory is the child's copy, left alone), start afresh on next use. */
static void child_after_fork(void)
{
    struct upager__global *g = &upager__g;
    if (!atomic_load(&g->ready))
        return;
    parent_base = g->base;
    parent_len = g->npages << g->page_shift;
    mmap(parent_base, parent_len, PROT_NONE,
         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
    for (unsigned i = 0; i < g->nshard; i++)
        close(g->memfd[i]);
    g->anon.ops->close(&g->anon);
    for (struct upager__mapping *m = g->mappings; m; m = m->next)
        m->store.ops->close(&m->store);
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->alloc_lock, NULL);
    pthread_mutex_init(&init_lock, NULL);
    init_done = false;
    init_error = 0;
    upager__map_after_fork();
    upager__ioq_after_fork();
}

int upager_configure(const char *name, const char *value)
{
    if (!name || !value)
        return EINVAL;
    pthread_mutex_lock(&init_lock);
    bool started = init_done;
    pthread_mutex_unlock(&init_lock);
    if (started) {
        struct upager__config tmp = upager__g.cfg;
        int err = upager__config_set(&tmp, name, value, name);
        if (err == ENOENT) {
            upager__say("upager_configure: unknown option \"%s\"", name);
            return EINVAL;
        }
        if (err)
            return err;
        if (!strcasecmp(name, "budget") || !strcmp(name, "UPAGER_BUDGET")) {
            int e = upager__ensure_init();
            if (e)
                return e;
            uint64_t b = tmp.budget_pct ? upager__g.mem_avail / 100 * tmp.budget_pct
                                        : tmp.budget;
            return upager_set_budget((size_t)b);
        }
        if (!strcasecmp(name, "stats")) {
            upager__g.cfg.stats = tmp.stats;
            return 0;
        }
        if (!strcasecmp(name, "verbose")) {
            upager__g.cfg.verbose = tmp.verbose;
            return 0;
        }
        upager__say("upager_configure: \"%s\" cannot change once the library has started; "
                    "set it before the first call, or in the environment",
                    name);
        return EBUSY;
    }
    pthread_mutex_lock(&init_lock);
    if (!user_cfg_valid) {
        config_defaults(&user_cfg);
        user_cfg_valid = true;
    }
    struct upager__config tmp = user_cfg;
    int err = upager__config_set(&tmp, name, value, name);
    if (err == 0)
        user_cfg = tmp;
    pthread_mutex_unlock(&init_lock);
    if (err == ENOENT) {
        upager__say("upager_configure: unknown option \"%s\"", name);
        return EINVAL;
    }
    return err;
}

int upager_set_budget(size_t bytes)
{
    int err = upager__ensure_init();
    if (err)
        return err;
    struct upager__global *g = &upager__g;
    size_t pages = bytes >> g->page_shift;
    if (pages < UPAGER__MIN_PAGES || pages > g->nframes / g->nblocks)
        return EINVAL;
    upager__lock(&g->clock_lock);
    if (pages < g->pinned) {
        upager__unlock(&g->clock_lock);
        return EBUSY;
    }
    if (pages * g->nblocks >= upager__clock_memory()) {
        g->limit = pages;
        upager__unlock(&g->clock_lock);
        return 0;
    }
    upager__unlock(&g->clock_lock);
    return upager__clock_shrink(pages);
}
