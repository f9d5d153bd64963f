/*
 * loadgen.c - many threads on the paged arena at once, checked against a
 * reference copy.  See loadgen.h.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define SOURCE_LEN ((size_t)256 << 10) /* random bytes to copy from      */
#define MAX_IO ((size_t)64 << 10)      /* longest single write or read   */
#define PIN_MAX ((size_t)16 << 10)     /* longest pinned range           */

struct block {
    unsigned char *up;     /* in the arena  */
    unsigned char *mirror; /* plain malloc  */
    size_t size;
};

struct worker {
    int id;
    pthread_t thread;
    uint64_t rng;
    struct block *blocks;
    int nblocks;
    size_t live;             /* bytes in blocks[]                          */
    uint64_t *own;           /* reference of this worker's shared words    */
    uint64_t stamp;          /* last value written to a shared word        */
    int out_fd;              /* scratch file for write(2) from pinned data */
    unsigned char *scratch;  /* PIN_MAX bytes                              */
    struct lg_result r;      /* this worker's counters                     */
};

static struct {
    const struct lg_config *cfg;
    _Atomic int stop;
    size_t page_size;
    volatile uint64_t *shared; /* the shared pages, in the arena          */
    size_t shared_words;
    unsigned char *source;     /* SOURCE_LEN random bytes ...             */
    int src_fd;                /* ... and a file holding the same bytes   */
    size_t max_budget;
    bool io_errors_ok;         /* EIO/ENOSPC are acceptable answers       */
} lg;

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t *s, uint64_t n)
{
    return n ? rnd(s) % n : 0;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fail(struct worker *w, const char *fmt, ...)
{
    w->r.errors++;
    if (w->r.first_error[0] != '\0')
        return;
    int n = snprintf(w->r.first_error, sizeof w->r.first_error, "worker %d: ", w->id);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->r.first_error + n, sizeof w->r.first_error - (size_t)n, fmt, ap);
    va_end(ap);
}

static bool io_error(int rc)
{
    return lg.io_errors_ok && (rc == EIO || rc == ENOSPC);
}

/* Compares [off, off+len) of a block with its reference; 0 when equal. */
static int compare(struct worker *w, const struct block *b, size_t off, size_t len,
                   const char *what)
{
    w->r.bytes_checked += len;
    if (memcmp(b->up + off, b->mirror + off, len) == 0)
        return 0;
    for (size_t i = off; i < off + len; i++) {
        if (b->up[i] != b->mirror[i]) {
            fail(w, "%s: byte %zu of the block at %p (%zu bytes) is %#x, expected %#x",
                 what, i, (void *)b->up, b->size, b->up[i], b->mirror[i]);
            break;
        }
    }
    return -1;
}

/* Copies random bytes into both copies of [off, off+len). */
static void fill(struct worker *w, struct block *b, size_t off, size_t len)
{
    for (size_t done = 0; done < len;) {
        size_t src = below(&w->rng, SOURCE_LEN);
        size_t n = SOURCE_LEN - src;
        if (n > len - done)
            n = len - done;
        memcpy(b->mirror + off + done, lg.source + src, n);
        memcpy(b->up + off + done, lg.source + src, n);
        done += n;
    }
}

static size_t random_size(struct worker *w)
{
    size_t max = lg.cfg->thread_bytes / 4;
    unsigned bits = 0;
    while (((size_t)1 << bits) < max)
        bits++;
    return 1 + (size_t)below(&w->rng, (uint64_t)1 << below(&w->rng, bits + 1));
}

static struct block *pick(struct worker *w)
{
    return w->nblocks ? &w->blocks[below(&w->rng, (uint64_t)w->nblocks)] : NULL;
}

/* ---- operations ---------------------------------------------------- */

static void op_alloc(struct worker *w)
{
    if (w->nblocks >= lg.cfg->max_blocks)
        return;
    size_t size = random_size(w);
    if (w->live + size > lg.cfg->thread_bytes)
        size = (lg.cfg->thread_bytes - w->live) / 2 + 1;
    struct block *b = &w->blocks[w->nblocks];
    int kind = (int)below(&w->rng, 4);
    switch (kind) {
    case 0: b->up = upager_malloc(size); break;
    case 1: b->up = upager_calloc(1, size); break;
    case 2: b->up = upager_aligned_alloc((size_t)1 << below(&w->rng, 14), size); break;
    default: b->up = upager_realloc(NULL, size); break;
    }
    b->mirror = calloc(1, size);
    if (b->up == NULL || b->mirror == NULL) {
        fail(w, "allocation %d of %zu bytes failed (errno %d)", kind, size, errno);
        free(b->mirror);
        return;
    }
    b->size = size;
    w->nblocks++;
    w->live += size;
    w->r.allocs++;
    if (kind == 1 && compare(w, b, 0, size, "calloc not zeroed"))
        return;
    fill(w, b, 0, size);
}

static void op_free(struct worker *w)
{
    if (w->nblocks == 0)
        return;
    int i = (int)below(&w->rng, (uint64_t)w->nblocks);
    struct block *b = &w->blocks[i];
    compare(w, b, 0, b->size, "before free");
    upager_free(b->up);
    free(b->mirror);
    w->live -= b->size;
    w->blocks[i] = w->blocks[--w->nblocks];
    w->r.frees++;
}

static void op_realloc(struct worker *w)
{
    struct block *b = pick(w);
    if (!b)
        return;
    size_t size = random_size(w);
    if (w->live - b->size + size > lg.cfg->thread_bytes)
        size = b->size / 2 + 1;
    unsigned char *up = upager_realloc(b->up, size);
    unsigned char *mirror = realloc(b->mirror, size);
    if (up == NULL || mirror == NULL) {
        fail(w, "realloc of %zu to %zu bytes failed (errno %d)", b->size, size, errno);
        if (up)
            b->up = up;
        if (mirror)
            b->mirror = mirror;
        return; /* sizes now disagree: stop trusting this block's tail */
    }
    size_t keep = size < b->size ? size : b->size;
    w->live = w->live - b->size + size;
    b->up = up;
    b->mirror = mirror;
    b->size = size;
    w->r.reallocs++;
    if (compare(w, b, 0, keep, "after realloc") == 0 && size > keep)
        fill(w, b, keep, size - keep);
}

static void op_write(struct worker *w)
{
    struct block *b = pick(w);
    if (!b)
        return;
    size_t off = below(&w->rng, b->size), room = b->size - off;
    uint64_t v;
    w->r.writes++;
    switch (below(&w->rng, 3)) {
    case 0:
        fill(w, b, off, 1 + below(&w->rng, room < MAX_IO ? room : MAX_IO));
        break;
    case 1:
        b->up[off] = b->mirror[off] = (unsigned char)rnd(&w->rng);
        break;
    default:
        if (room < 8)
            break;
        v = rnd(&w->rng);
        memcpy(b->up + off, &v, 8);
        memcpy(b->mirror + off, &v, 8);
        break;
    }
}

static void op_read(struct worker *w)
{
    struct block *b = pick(w);
    if (!b)
        return;
    size_t off = below(&w->rng, b->size), room = b->size - off;
    w->r.reads++;
    compare(w, b, off, 1 + below(&w->rng, room < MAX_IO ? room : MAX_IO), "read");
}

/* The shared pages: word i belongs to worker i % threads. */
static void op_shared(struct worker *w)
{
    size_t nt = (size_t)lg.cfg->threads;
    size_t mine = (lg.shared_words - (size_t)w->id + nt - 1) / nt; /* own words */
    size_t k = below(&w->rng, mine), i = k * nt + (size_t)w->id;
    w->r.shared_ops++;
    switch (below(&w->rng, 3)) {
    case 0: { /* write one of its own words */
        uint64_t v = ((uint64_t)(w->id + 1) << 56) | (++w->stamp & 0x00ffffffffffffffULL);
        lg.shared[i] = v;
        w->own[k] = v;
        break;
    }
    case 1: /* check one of its own words */
        w->r.bytes_checked += 8;
        if (lg.shared[i] != w->own[k])
            fail(w, "shared word %zu is %#llx, expected %#llx", i,
                 (unsigned long long)lg.shared[i], (unsigned long long)w->own[k]);
        break;
    default: { /* read a run of everyone's words */
        size_t n = 512 < lg.shared_words ? 512 : lg.shared_words;
        size_t start = below(&w->rng, lg.shared_words - n + 1);
        for (size_t j = start; j < start + n; j++) {
            uint64_t v = lg.shared[j];
            size_t owner = j % nt;
            if (v != 0 && (v >> 56) != owner + 1) {
                fail(w, "shared word %zu of worker %zu holds %#llx: not its stamp", j,
                     owner, (unsigned long long)v);
                break;
            }
            if (owner == (size_t)w->id && v != w->own[j / nt]) {
                fail(w, "own shared word %zu is %#llx, expected %#llx", j,
                     (unsigned long long)v, (unsigned long long)w->own[j / nt]);
                break;
            }
        }
        w->r.bytes_checked += 8 * n;
        break;
    }
    }
}

/* Pins a range inside one page and hands it to a system call: pread(2)
 * into it (pinned writable), or write(2) out of it. */
static void op_pin(struct worker *w)
{
    struct block *b = pick(w);
    if (!b)
        return;
    size_t off = below(&w->rng, b->size), room = b->size - off;
    size_t to_page_end = lg.page_size - ((uintptr_t)(b->up + off) & (lg.page_size - 1));
    size_t len = 1 + below(&w->rng, PIN_MAX);
    if (len > room)
        len = room;
    if (len > to_page_end)
        len = to_page_end;
    int writable = (int)below(&w->rng, 2);
    int rc = upager_pin(b->up + off, len, writable ? UPAGER_PIN_WRITE : 0);
    if (rc == ENOMEM) {
        w->r.pin_enomem++;
        return;
    }
    if (rc != 0) {
        if (!io_error(rc))
            fail(w, "upager_pin(%p, %zu) = %d", (void *)(b->up + off), len, rc);
        return;
    }
    w->r.pins++;
    if (writable) {
        size_t src = below(&w->rng, SOURCE_LEN - len + 1);
        ssize_t n = pread(lg.src_fd, b->up + off, len, (off_t)src);
        if (n != (ssize_t)len)
            fail(w, "pread into pinned memory: %zd of %zu bytes (errno %d)", n, len,
                 errno);
        else
            memcpy(b->mirror + off, lg.source + src, len);
    } else {
        ssize_t n = pwrite(w->out_fd, b->up + off, len, 0);
        if (n != (ssize_t)len) {
            fail(w, "write from pinned memory: %zd of %zu bytes (errno %d)", n, len,
                 errno);
        } else if (pread(w->out_fd, w->scratch, len, 0) != (ssize_t)len ||
                   memcmp(w->scratch, b->mirror + off, len) != 0) {
            fail(w, "the kernel read other bytes from pinned memory at %p",
                 (void *)(b->up + off));
        }
        w->r.bytes_checked += len;
    }
    compare(w, b, off, len, "pinned range");
    rc = upager_unpin(b->up + off, len);
    if (rc != 0)
        fail(w, "upager_unpin(%p, %zu) = %d", (void *)(b->up + off), len, rc);
}

static void op_advise(struct worker *w)
{
    struct block *b = pick(w);
    if (!b)
        return;
    int advice = below(&w->rng, 2) ? UPAGER_ADVICE_DONTNEED : UPAGER_ADVICE_WILLNEED;
    int rc = upager_advise(b->up, b->size, advice);
    w->r.advices++;
    if (rc != 0 && !io_error(rc))
        fail(w, "upager_advise(%p, %zu, %d) = %d", (void *)b->up, b->size, advice, rc);
}

static void op_budget(struct worker *w)
{
    const struct lg_config *c = lg.cfg;
    if (c->nbudgets == 0)
        return;
    size_t bytes = c->budgets[below(&w->rng, (uint64_t)c->nbudgets)];
    int rc;
    if (below(&w->rng, 2)) {
        rc = upager_set_budget(bytes);
    } else {
        char v[32];
        snprintf(v, sizeof v, "%zuK", bytes >> 10);
        rc = upager_configure("budget", v);
    }
    w->r.budget_changes++;
    if (rc == 0)
        return;
    w->r.budget_refused++;
    if (!io_error(rc))
        fail(w, "setting the budget to %zu bytes: %d", bytes, rc);
}

static void verify_all(struct worker *w, const char *when)
{
    for (int i = 0; i < w->nblocks; i++)
        compare(w, &w->blocks[i], 0, w->blocks[i].size, when);
    size_t nt = (size_t)lg.cfg->threads;
    for (size_t i = (size_t)w->id, k = 0; i < lg.shared_words; i += nt, k++) {
        if (lg.shared[i] != w->own[k]) {
            fail(w, "%s: own shared word %zu is %#llx, expected %#llx", when, i,
                 (unsigned long long)lg.shared[i], (unsigned long long)w->own[k]);
            break;
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    uint64_t op = 0;
    while (!atomic_load_explicit(&lg.stop, memory_order_relaxed)) {
        unsigned r = (unsigned)below(&w->rng, 1000);
        if (r < 40)
            op_alloc(w);
        else if (r < 70)
            op_free(w);
        else if (r < 95)
            op_realloc(w);
        else if (r < 340)
            op_write(w);
        else if (r < 580)
            op_read(w);
        else if (r < 900)
            op_shared(w);
        else if (r < 960)
            op_pin(w);
        else if (r < 990)
            op_advise(w);
        else if (r < 991)
            op_budget(w);
        else
            op_write(w);
        if (++op % (uint64_t)lg.cfg->verify_every == 0)
            verify_all(w, "periodic check");
    }
    w->r.ops = op;
    verify_all(w, "final check");
    for (int i = 0; i < w->nblocks; i++) {
        upager_free(w->blocks[i].up);
        free(w->blocks[i].mirror);
    }
    w->nblocks = 0;
    return NULL;
}

/* ---- the run ------------------------------------------------------- */

static int tmp_fd(void)
{
    const char *d = getenv("UPAGER_DIR");
    if (!d || !*d)
        d = getenv("TMPDIR");
    if (!d || !*d)
        d = "/tmp";
    return open(d, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

static size_t rss_bytes(void)
{
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    char *p = strstr(buf, "VmRSS:");
    return p ? (size_t)strtoull(p + 6, NULL, 10) * 1024 : 0;
}

static void add(struct lg_result *t, const struct lg_result *r)
{
    t->ops += r->ops;
    t->allocs += r->allocs;
    t->frees += r->frees;
    t->reallocs += r->reallocs;
    t->writes += r->writes;
    t->reads += r->reads;
    t->shared_ops += r->shared_ops;
    t->pins += r->pins;
    t->pin_enomem += r->pin_enomem;
    t->advices += r->advices;
    t->budget_changes += r->budget_changes;
    t->budget_refused += r->budget_refused;
    t->bytes_checked += r->bytes_checked;
    t->errors += r->errors;
    if (t->first_error[0] == '\0' && r->first_error[0] != '\0')
        memcpy(t->first_error, r->first_error, sizeof t->first_error);
}

static void main_fail(struct lg_result *res, const char *fmt, ...)
{
    res->errors++;
    if (res->first_error[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->first_error, sizeof res->first_error, fmt, ap);
    va_end(ap);
}

int lg_run(const struct lg_config *cfg, struct lg_result *res)
{
    static struct worker workers[LG_MAX_THREADS];
    int nt = cfg->threads, err = 0, started = 0;

    memset(res, 0, sizeof *res);
    if (nt < 1 || nt > LG_MAX_THREADS || cfg->verify_every < 1 || cfg->max_blocks < 1)
        return EINVAL;
    if ((err = upager_get_stats(&res->before)))
        return err;
    memset(&lg, 0, sizeof lg);
    lg.cfg = cfg;
    lg.page_size = res->before.page_size;
    lg.io_errors_ok = cfg->io_errors_ok != 0;
    lg.max_budget = res->before.budget_bytes;
    for (int i = 0; i < cfg->nbudgets; i++)
        if (cfg->budgets[i] > lg.max_budget)
            lg.max_budget = cfg->budgets[i];
    res->max_budget = lg.max_budget;

    /* The random bytes, in memory and in a file (the pread source). */
    uint64_t rng = cfg->seed ^ 0x10adULL;
    lg.source = malloc(SOURCE_LEN);
    lg.src_fd = tmp_fd();
    if (!lg.source || lg.src_fd < 0)
        return lg.src_fd < 0 ? errno : ENOMEM;
    for (size_t i = 0; i < SOURCE_LEN; i += 8) {
        uint64_t v = rnd(&rng);
        memcpy(lg.source + i, &v, 8);
    }
    if (pwrite(lg.src_fd, lg.source, SOURCE_LEN, 0) != (ssize_t)SOURCE_LEN)
        return errno ? errno : EIO;

    size_t shared_bytes = cfg->shared_pages * lg.page_size;
    lg.shared = upager_aligned_alloc(lg.page_size, shared_bytes);
    if (!lg.shared)
        return errno;
    memset((void *)lg.shared, 0, shared_bytes);
    lg.shared_words = shared_bytes / 8;
    if (lg.shared_words < (size_t)nt)
        return EINVAL;

    for (int t = 0; t < nt; t++) {
        struct worker *w = &workers[t];
        memset(w, 0, sizeof *w);
        w->id = t;
        w->rng = cfg->seed + (uint64_t)t * 0x9e3779b97f4a7c15ULL;
        w->blocks = calloc((size_t)cfg->max_blocks, sizeof *w->blocks);
        w->own = calloc(lg.shared_words / (size_t)nt + 1, sizeof *w->own);
        w->scratch = malloc(PIN_MAX);
        w->out_fd = tmp_fd();
        if (!w->blocks || !w->own || !w->scratch || w->out_fd < 0)
            return ENOMEM;
    }

    double t0 = now(), last_print = t0, last_rss = 0;
    for (; started < nt; started++) {
        if ((err = pthread_create(&workers[started].thread, NULL, worker_main,
                                  &workers[started])))
            break;
    }
    while (started == nt && now() - t0 < cfg->seconds) {
        struct upager_stats s;
        int have = upager_get_stats(&s) == 0;
        if (have) {
            res->samples++;
            if (s.resident_bytes > res->max_resident_sampled)
                res->max_resident_sampled = s.resident_bytes;
            if (s.resident_bytes > lg.max_budget && !lg.io_errors_ok)
                main_fail(res, "resident %zu bytes, over the largest budget %zu",
                          s.resident_bytes, lg.max_budget);
        }
        double t = now();
        if (t - last_rss > 0.1) {
            size_t rss = rss_bytes();
            if (rss > res->max_rss_sampled)
                res->max_rss_sampled = rss;
            last_rss = t;
        }
        if (!cfg->quiet && have && t - last_print >= 10) {
            uint64_t errors = 0;
            for (int i = 0; i < nt; i++)
                errors += workers[i].r.errors;
            printf("soak: %4.0f s: faults %llu, evictions %llu, resident %zu KiB of "
                   "%zu KiB, errors %llu\n",
                   t - t0, (unsigned long long)s.faults, (unsigned long long)s.evictions,
                   s.resident_bytes >> 10, s.budget_bytes >> 10,
                   (unsigned long long)errors);
            fflush(stdout);
            last_print = t;
        }
        usleep(5000);
    }
    atomic_store(&lg.stop, 1);
    for (int t = 0; t < started; t++)
        pthread_join(workers[t].thread, NULL);
    res->seconds = now() - t0;

    for (int t = 0; t < nt; t++) {
        struct worker *w = &workers[t];
        add(res, &w->r);
        free(w->blocks);
        free(w->own);
        free(w->scratch);
        close(w->out_fd);
    }
    upager_free((void *)lg.shared);
    close(lg.src_fd);
    free(lg.source);
    upager_get_stats(&res->after);
    if (res->after.allocated_bytes != res->before.allocated_bytes)
        main_fail(res, "allocated_bytes is %zu after every block was freed, was %zu before",
                  res->after.allocated_bytes, res->before.allocated_bytes);
    if (res->after.peak_resident_bytes > lg.max_budget && !lg.io_errors_ok)
        main_fail(res, "peak resident %zu bytes, over the largest budget %zu",
                  res->after.peak_resident_bytes, lg.max_budget);
    return err;
}

void lg_print(const char *tag, const struct lg_result *r)
{
    const struct upager_stats *a = &r->after, *b = &r->before;
    double s = r->seconds > 0 ? r->seconds : 1;
    printf("%s: %.1f s, %llu ops (%.0f ops/s): %llu alloc, %llu free, %llu realloc, "
           "%llu write, %llu read, %llu shared, %llu pin (%llu ENOMEM), %llu advise, "
           "%llu budget changes (%llu refused)\n",
           tag, r->seconds, (unsigned long long)r->ops, (double)r->ops / s,
           (unsigned long long)r->allocs, (unsigned long long)r->frees,
           (unsigned long long)r->reallocs, (unsigned long long)r->writes,
           (unsigned long long)r->reads, (unsigned long long)r->shared_ops,
           (unsigned long long)r->pins, (unsigned long long)r->pin_enomem,
           (unsigned long long)r->advices, (unsigned long long)r->budget_changes,
           (unsigned long long)r->budget_refused);
    printf("%s: faults %llu (%.0f/s, major %llu), evictions %llu (%.0f/s, dirty %llu), "
           "writebacks %llu, read %llu MiB, written %llu MiB, io_errors %llu\n",
           tag, (unsigned long long)(a->faults - b->faults), (double)(a->faults - b->faults) / s,
           (unsigned long long)(a->major_faults - b->major_faults),
           (unsigned long long)(a->evictions - b->evictions),
           (double)(a->evictions - b->evictions) / s,
           (unsigned long long)(a->dirty_evictions - b->dirty_evictions),
           (unsigned long long)(a->writebacks - b->writebacks),
           (unsigned long long)((a->bytes_read - b->bytes_read) >> 20),
           (unsigned long long)((a->bytes_written - b->bytes_written) >> 20),
           (unsigned long long)(a->io_errors - b->io_errors));
    printf("%s: page %zu KiB, budget up to %zu KiB, peak resident %zu KiB (sampled max "
           "%zu KiB), peak VmRSS sampled %zu KiB, %llu MiB compared, errors %llu%s%s\n",
           tag, a->page_size >> 10, r->max_budget >> 10, a->peak_resident_bytes >> 10,
           r->max_resident_sampled >> 10, r->max_rss_sampled >> 10,
           (unsigned long long)(r->bytes_checked >> 20), (unsigned long long)r->errors,
           r->errors ? ": " : "", r->errors ? r->first_error : "");
    fflush(stdout);
}
