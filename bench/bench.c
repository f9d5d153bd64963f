/*
 * bench.c - the upager benchmark: the same workloads on upager and on its
 * peers, in one run, reported as ratios.
 *
 * Systems (each run of each workload is a forked child of its own, so that
 * the peak RSS is per system and a crash ends only that run):
 *   upager  the memory comes from upager_malloc (or upager_map_file);
 *   malloc  plain malloc: everything in RAM, the best case;
 *   kmmap   the kernel's own paging: an unlinked file in the bench
 *           directory mapped MAP_SHARED, the child placed in a memory cgroup
 *           whose limit is the budget (v2 memory.max, else v1
 *           memory.limit_in_bytes), unconstrained when neither works;
 *   read    (file scan only) read(2) of the whole file into a malloc buffer;
 *   pread   (sequential read only) raw pread(2) of the same bytes in 1 MiB
 *           chunks, with the same per-word check loop.
 *
 * Workloads (data = 4 x budget unless --data says otherwise):
 *   seq      sequential write, then sequential read, of one array of data;
 *   rand     uniform random 8-byte reads over data (a fixed count);
 *   hotcold  a hot set of budget/2 read between chunks of a cold scan of
 *            data (the cold array scanned twice);
 *   fit      data that fits (budget/2): after the first touch, 4
 *            read-modify-write passes and random reads;
 *   sort     data of uint64: each chunk of budget/4 sorted in place
 *            (introsort), then a k-way merge into a second array;
 *   thr1     two arrays of data/2, random reads on both from one thread;
 *   thr2     the same reads from two threads, one per array;
 *   file     a read-only file of data scanned once from a cold cache.
 * The floor: a bare SIGSEGV handler that mprotects the page RW, and the
 * same plus pread of the page from a page-cache-hot file, per page size.
 * The sweep: sequential-read and random-read throughput of upager and
 * kmmap against the budget as a fraction of data.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "upager.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

/* ------------------------------------------------------------------------
 * Systems and workloads
 * ---------------------------------------------------------------------- */

enum { SYS_UPAGER, SYS_MALLOC, SYS_KMMAP, SYS_READ, SYS_PREAD, NSYS };
static const char *const sys_name[NSYS] = {"upager", "malloc", "kmmap", "read", "pread"};
#define B(s) (1u << (s))

enum { WL_SEQ, WL_RAND, WL_HOTCOLD, WL_FIT, WL_SORT, WL_THR1, WL_THR2, WL_FILE,
       NWL, WL_SWEEP = NWL, WL_FLOOR, WL_PROBE };

struct wl_def {
    const char *name;
    const char *title;
    unsigned systems;
};
static const struct wl_def wls[NWL] = {
    [WL_SEQ] = {"seq", "sequential write, then read, of one array of 4x budget",
                B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP) | B(SYS_PREAD)},
    [WL_RAND] = {"rand", "uniform random 8-byte reads over 4x budget (after a fill)",
                 B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP)},
    [WL_HOTCOLD] = {"hotcold", "hot set of budget/2 re-read between chunks of a cold scan (4x budget, twice)",
                    B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP)},
    [WL_FIT] = {"fit", "data that fits (budget/2), after first touch: RMW passes (2 GiB in all) + random reads",
                B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP)},
    [WL_SORT] = {"sort", "sort 4x budget of uint64: introsort chunks of budget/4, k-way merge into a 2nd array",
                 B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP)},
    [WL_THR1] = {"thr1", "random reads on two arrays of 2x budget, one thread",
                 B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP)},
    [WL_THR2] = {"thr2", "the same reads from two threads, one array each",
                 B(SYS_UPAGER) | B(SYS_MALLOC) | B(SYS_KMMAP)},
    [WL_FILE] = {"file", "read-only file of 4x budget scanned once, cache dropped before",
                 B(SYS_UPAGER) | B(SYS_KMMAP) | B(SYS_READ)},
};

/* ------------------------------------------------------------------------
 * Options
 * ---------------------------------------------------------------------- */

static struct {
    bool quick;
    size_t budget;
    size_t data;
    int reps;
    int sweep_reps;
    uint64_t nrand;       /* random reads in rand / thr / sweep            */
    uint64_t nrand_sweep;
    const char *out;
    const char *sweep_out;
    char dir[PATH_MAX];
    unsigned wl_mask;
    unsigned sys_mask;
    bool floor;
    bool sweep;
    double fracs[16];
    int nfracs;
    int timeout;          /* seconds per child                             */
    bool no_advice;       /* no MADV_RANDOM / UPAGER_ADVICE_RANDOM          */
} opt;

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("upager_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    size_t mul = 1;
    switch (toupper((unsigned char)*end)) {
    case 'K': mul = KiB; end++; break;
    case 'M': mul = MiB; end++; break;
    case 'G': mul = GiB; end++; break;
    case 'T': mul = GiB * 1024; end++; break;
    case '\0': break;
    default: return -1;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -1;
    *out = (size_t)(v * (double)mul);
    return 0;
}

static char *fmt_size(char *buf, size_t len, double bytes)
{
    if (bytes >= GiB && fmod(bytes, GiB) == 0)
        snprintf(buf, len, "%.0fG", bytes / GiB);
    else if (bytes >= MiB && fmod(bytes, MiB) == 0)
        snprintf(buf, len, "%.0fM", bytes / MiB);
    else if (bytes >= KiB && fmod(bytes, KiB) == 0)
        snprintf(buf, len, "%.0fK", bytes / KiB);
    else
        snprintf(buf, len, "%.0f", bytes);
    return buf;
}

/* 0 past the end of a value; reads "Key:   123 kB" style lines. */
static uint64_t proc_field(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    size_t kl = strlen(key);
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtoull(line + kl + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static int write_str(const char *path, const char *s)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, s, strlen(s));
    int e = errno;
    close(fd);
    errno = e;
    return n == (ssize_t)strlen(s) ? 0 : -1;
}

static int read_str(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return 0;
}

/* Creates an unlinked temporary file in the bench directory. */
static int tmpfile_fd(void)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/upager-bench-XXXXXX", opt.dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -1;
    unlink(path);
    return fd;
}

/* ------------------------------------------------------------------------
 * Data: word i of an array holds val(i) (cheap to check) or mixv(i)
 * (random-looking, for the sort).
 * ---------------------------------------------------------------------- */

#define SEED 0x5eed5eedULL
static inline uint64_t val(uint64_t i) { return (i * 0x9E3779B97F4A7C15ULL) ^ SEED; }

static inline uint64_t mixv(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

struct rng { uint64_t s; };
static inline uint64_t rng_next(struct rng *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* ------------------------------------------------------------------------
 * Results passed from a child to the parent through a pipe
 * ---------------------------------------------------------------------- */

#define MAXPH 24

struct phase {
    char name[32];
    double sec;
    uint64_t faults, major;       /* upager stats, or ru_minflt+ru_majflt / ru_majflt */
    uint64_t minflt, majflt;      /* getrusage, every system                          */
    uint64_t io_rd, io_wr;        /* /proc/self/io read_bytes / write_bytes           */
    uint64_t st_rd, st_wr;        /* upager bytes_read / bytes_written                */
    uint64_t evictions, writebacks;
    uint64_t ops;                 /* reads, bytes, ... per workload                   */
    uint64_t sum, bad;            /* checksum and mismatches                          */
    double aux[4];                /* floor: us per fault for each mode                */
};

struct result {
    int ok;
    char err[200];
    int nph;
    struct phase ph[MAXPH];
    uint64_t base_rss, hwm;       /* VmRSS after the HWM reset, VmHWM at the end      */
    uint64_t rss_file;            /* RssFile at the end: program text and libraries   */
    uint64_t base_anon;           /* RssAnon at the start: the program's own          */
    uint64_t page_size, budget, up_peak_resident, up_io_errors;
    char cg_label[64];
};

static struct result *R; /* the child's result (in the child) */
static int result_fd = -1; /* the pipe to the parent (in the child) */

/* Sends the whole result so far: after each phase, so that the phases done
 * before a crash or a timeout are kept, and at the end (ok != 0). */
static void child_send(void)
{
    const char *p = (const char *)R;
    size_t left = sizeof *R;
    while (left) {
        ssize_t w = write(result_fd, p, left);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(3);
        p += w;
        left -= (size_t)w;
    }
}

static void child_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void child_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (R->ok >= 0) {
        vsnprintf(R->err, sizeof R->err, fmt, ap);
        R->ok = -1;
    }
    va_end(ap);
}

/* ------------------------------------------------------------------------
 * Phase measurement (in the child)
 * ---------------------------------------------------------------------- */

struct snap {
    double t;
    struct rusage ru;
    uint64_t io_rd, io_wr;
    struct upager_stats st;
};

static int cur_sys;

static void snap_take(struct snap *s, bool end)
{
    if (end)
        s->t = now();
    getrusage(RUSAGE_SELF, &s->ru);
    s->io_rd = proc_field("/proc/self/io", "read_bytes");
    s->io_wr = proc_field("/proc/self/io", "write_bytes");
    if (cur_sys == SYS_UPAGER)
        upager_get_stats(&s->st);
    else
        memset(&s->st, 0, sizeof s->st);
    if (!end)
        s->t = now();
}

static struct snap ph_begin_snap;

static void ph_begin(void) { snap_take(&ph_begin_snap, false); }

static struct phase *ph_end(const char *name, uint64_t ops, uint64_t sum, uint64_t bad)
{
    struct snap e;
    snap_take(&e, true);
    struct snap *b = &ph_begin_snap;
    if (R->nph >= MAXPH)
        return NULL;
    struct phase *p = &R->ph[R->nph++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->sec = e.t - b->t;
    p->minflt = e.ru.ru_minflt - b->ru.ru_minflt;
    p->majflt = e.ru.ru_majflt - b->ru.ru_majflt;
    p->io_rd = e.io_rd - b->io_rd;
    p->io_wr = e.io_wr - b->io_wr;
    if (cur_sys == SYS_UPAGER) {
        p->faults = e.st.faults - b->st.faults;
        p->major = e.st.major_faults - b->st.major_faults;
        p->st_rd = e.st.bytes_read - b->st.bytes_read;
        p->st_wr = e.st.bytes_written - b->st.bytes_written;
        p->evictions = e.st.evictions - b->st.evictions;
        p->writebacks = e.st.writebacks - b->st.writebacks;
    } else {
        p->faults = p->minflt + p->majflt;
        p->major = p->majflt;
    }
    p->ops = ops;
    p->sum = sum;
    p->bad = bad;
    if (bad)
        child_fail("%s: %" PRIu64 " words read back wrong", name, bad);
    R->hwm = proc_field("/proc/self/status", "VmHWM") * KiB;
    R->rss_file = proc_field("/proc/self/status", "RssFile") * KiB;
    child_send();
    return p;
}

/* ------------------------------------------------------------------------
 * Memory of each system (in the child)
 * ---------------------------------------------------------------------- */

static void *mem_alloc(size_t n)
{
    void *p = NULL;
    switch (cur_sys) {
    case SYS_UPAGER:
        p = upager_malloc(n);
        if (!p)
            child_fail("upager_malloc(%zu): %s", n, strerror(errno));
        return p;
    case SYS_MALLOC:
    case SYS_READ:
    case SYS_PREAD:
        p = malloc(n);
        if (!p)
            child_fail("malloc(%zu): %s", n, strerror(errno));
        return p;
    case SYS_KMMAP: {
        int fd = tmpfile_fd();
        if (fd < 0) {
            child_fail("temporary file in %s: %s", opt.dir, strerror(errno));
            return NULL;
        }
        if (ftruncate(fd, (off_t)n) != 0) {
            child_fail("ftruncate: %s", strerror(errno));
            close(fd);
            return NULL;
        }
        p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED) {
            child_fail("mmap: %s", strerror(errno));
            return NULL;
        }
        return p;
    }
    }
    return NULL;
}

static void mem_free(void *p, size_t n)
{
    if (!p)
        return;
    switch (cur_sys) {
    case SYS_UPAGER: upager_free(p); break;
    case SYS_KMMAP: munmap(p, n); break;
    default: free(p); break;
    }
}

/* Random-access advice before a random-read phase (unless --no-advice): the
 * paged systems are told, malloc needs nothing. */
static void advise_random(void *p, size_t n)
{
    if (opt.no_advice)
        return;
    if (cur_sys == SYS_UPAGER) {
        int e = upager_advise(p, n, UPAGER_ADVICE_RANDOM);
        if (e)
            child_fail("upager_advise(RANDOM): %s", strerror(e));
    } else if (cur_sys == SYS_KMMAP) {
        if (madvise(p, n, MADV_RANDOM) != 0)
            child_fail("madvise(MADV_RANDOM): %s", strerror(errno));
    }
}

/* ------------------------------------------------------------------------
 * The work itself: the same code for every system
 * ---------------------------------------------------------------------- */

static void fill_val(uint64_t *a, size_t n, uint64_t first)
{
    for (size_t i = 0; i < n; i++)
        a[i] = val(first + i);
}

/* Sums the words and counts those that are not val(first + i). */
static uint64_t scan_val(const uint64_t *a, size_t n, uint64_t first, uint64_t *bad)
{
    uint64_t s = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = a[i];
        s += v;
        b += v != val(first + i);
    }
    *bad += b;
    return s;
}

static uint64_t rand_reads(const uint64_t *a, size_t n, uint64_t count, struct rng *r,
                           uint64_t *bad)
{
    uint64_t s = 0, b = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t j = rng_below(r, n);
        uint64_t v = ((const volatile uint64_t *)a)[j];
        s += v;
        b += v != val(j);
    }
    *bad += b;
    return s;
}

/* Introsort of uint64, in place, no allocation. */
static void isort(uint64_t *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint64_t x = a[i];
        size_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

static void sift(uint64_t *a, size_t i, size_t n)
{
    uint64_t x = a[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && a[c + 1] > a[c])
            c++;
        if (a[c] <= x)
            break;
        a[i] = a[c];
        i = c;
    }
    a[i] = x;
}

static void hsort(uint64_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(a, i, n);
    for (size_t i = n; i-- > 1;) {
        uint64_t t = a[0];
        a[0] = a[i];
        a[i] = t;
        sift(a, 0, i);
    }
}

static void introsort(uint64_t *a, size_t n, int depth)
{
    while (n > 24) {
        if (depth-- == 0) {
            hsort(a, n);
            return;
        }
        uint64_t x = a[0], y = a[n / 2], z = a[n - 1];
        uint64_t piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        size_t i = 0, j = n - 1;
        for (;;) {
            while (a[i] < piv)
                i++;
            while (a[j] > piv)
                j--;
            if (i >= j)
                break;
            uint64_t t = a[i];
            a[i] = a[j];
            a[j] = t;
            i++;
            j--;
        }
        size_t left = j + 1; /* [0, j] <= piv <= [j+1, n) */
        if (left < n - left) {
            introsort(a, left, depth);
            a += left;
            n -= left;
        } else {
            introsort(a + left, n - left, depth);
            n = left;
        }
    }
    isort(a, n);
}

static void sort_u64(uint64_t *a, size_t n)
{
    int d = 0;
    for (size_t m = n; m; m >>= 1)
        d++;
    introsort(a, n, 2 * d);
}

struct cursor { uint64_t v; size_t pos, end; };

static void heap_down(struct cursor *h, size_t i, size_t n)
{
    struct cursor x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && h[c + 1].v < h[c].v)
            c++;
        if (h[c].v >= x.v)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Merges the k sorted runs of `chunk` words of src into dst. */
static void kmerge(const uint64_t *src, uint64_t *dst, size_t n, size_t chunk)
{
    size_t k = (n + chunk - 1) / chunk, m = 0;
    struct cursor *h = malloc(k * sizeof *h);
    if (!h) {
        child_fail("malloc of the merge heap");
        return;
    }
    for (size_t c = 0; c < k; c++) {
        size_t b = c * chunk, e = b + chunk < n ? b + chunk : n;
        if (b < e)
            h[m++] = (struct cursor){src[b], b, e};
    }
    for (size_t i = m / 2; i-- > 0;)
        heap_down(h, i, m);
    size_t o = 0;
    while (m) {
        dst[o++] = h[0].v;
        if (++h[0].pos < h[0].end) {
            h[0].v = src[h[0].pos];
        } else {
            h[0] = h[--m];
        }
        if (m)
            heap_down(h, 0, m);
    }
    free(h);
}

/* ------------------------------------------------------------------------
 * Workloads (in the child)
 * ---------------------------------------------------------------------- */

static size_t wl_budget, wl_data; /* for this child */

static void run_seq(void)
{
    size_t n = wl_data / 8;
    uint64_t bad = 0;
    if (cur_sys == SYS_PREAD) {
        int fd = tmpfile_fd();
        size_t chunk = MiB;
        uint64_t *buf = malloc(chunk);
        if (fd < 0 || !buf) {
            child_fail("pread setup: %s", strerror(errno));
            return;
        }
        for (size_t off = 0; off < wl_data; off += chunk) {
            fill_val(buf, chunk / 8, off / 8);
            if (pwrite(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
                child_fail("pwrite: %s", strerror(errno));
                return;
            }
        }
        for (int pass = 0; pass < 3; pass++) {
            /* 0: warm the page cache, 1: hot, 2: cold */
            if (pass == 2) {
                fdatasync(fd);
                posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            }
            uint64_t s = 0;
            if (pass)
                ph_begin();
            for (size_t off = 0; off < wl_data; off += chunk) {
                if (pread(fd, buf, chunk, (off_t)off) != (ssize_t)chunk) {
                    child_fail("pread: %s", strerror(errno));
                    return;
                }
                s += scan_val(buf, chunk / 8, off / 8, &bad);
            }
            if (pass)
                ph_end(pass == 1 ? "read" : "read-cold", wl_data, s, bad);
        }
        close(fd);
        free(buf);
        return;
    }
    uint64_t *a = mem_alloc(wl_data);
    if (!a)
        return;
    ph_begin();
    fill_val(a, n, 0);
    ph_end("write", wl_data, 0, 0);
    ph_begin();
    uint64_t s = scan_val(a, n, 0, &bad);
    ph_end("read", wl_data, s, bad);
    mem_free(a, wl_data);
}

static void run_rand(void)
{
    size_t n = wl_data / 8;
    uint64_t *a = mem_alloc(wl_data);
    if (!a)
        return;
    fill_val(a, n, 0);
    advise_random(a, wl_data);
    struct rng r = {SEED};
    uint64_t bad = 0;
    ph_begin();
    uint64_t s = rand_reads(a, n, opt.nrand, &r, &bad);
    ph_end("read", opt.nrand, s, bad);
    mem_free(a, wl_data);
}

static void run_hotcold(void)
{
    size_t hot = wl_budget / 2, cold = wl_data;
    size_t hn = hot / 8, cn = cold / 8;
    size_t chunk = wl_budget / 4 / 8; /* words of cold per round */
    uint64_t *c = mem_alloc(cold);
    uint64_t *h = c ? mem_alloc(hot) : NULL;
    if (!h)
        return;
    fill_val(c, cn, 0);
    fill_val(h, hn, 0);
    size_t rounds = 2 * ((cn + chunk - 1) / chunk);
    uint64_t s = 0, bad = 0;
    size_t cpos = 0;
    ph_begin();
    for (size_t r = 0; r < rounds; r++) {
        /* the hot set: one word of each cache line, checked */
        for (size_t i = 0; i < hn; i += 8) {
            uint64_t v = h[i];
            s += v;
            bad += v != val(i);
        }
        size_t len = chunk < cn - cpos ? chunk : cn - cpos;
        s += scan_val(c + cpos, len, cpos, &bad);
        cpos += len;
        if (cpos == cn)
            cpos = 0;
    }
    ph_end("mixed", rounds, s, bad);
    mem_free(h, hot);
    mem_free(c, cold);
}

static void run_fit(void)
{
    size_t bytes = wl_budget / 2, n = bytes / 8;
    uint64_t *a = mem_alloc(bytes);
    if (!a)
        return;
    fill_val(a, n, 0); /* first touch, not timed */
    uint64_t s = 0, bad = 0;
    /* enough passes for about 2 GiB of traffic, so that the phase is long
     * enough to time */
    int passes = (int)(2 * GiB / bytes);
    if (passes < 4)
        passes = 4;
    ph_begin();
    for (int pass = 0; pass < passes; pass++)
        for (size_t i = 0; i < n; i++) {
            uint64_t v = a[i];
            s += v;
            a[i] = v + 1;
        }
    struct rng r = {SEED};
    uint64_t nr = n / 2, rs = 0;
    for (uint64_t k = 0; k < nr; k++) {
        uint64_t j = rng_below(&r, n);
        uint64_t v = ((volatile uint64_t *)a)[j];
        rs += v;
        bad += v != val(j) + (uint64_t)passes;
    }
    ph_end("rw", (uint64_t)passes * bytes, s + rs, bad);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != val(i) + (uint64_t)passes;
    if (bad)
        child_fail("fit: %" PRIu64 " words wrong after the passes", bad);
    mem_free(a, bytes);
}

static void run_sort(void)
{
    size_t n = wl_data / 8;
    size_t chunk = wl_budget / 4 / 8;
    uint64_t *a = mem_alloc(wl_data);
    uint64_t *b = a ? mem_alloc(wl_data) : NULL;
    if (!b)
        return;
    uint64_t sum = 0, x = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = mixv(i);
        a[i] = v;
        sum += v;
        x ^= v;
    }
    double t0 = now();
    ph_begin();
    for (size_t c = 0; c < n; c += chunk)
        sort_u64(a + c, chunk < n - c ? chunk : n - c);
    ph_end("chunks", n, 0, 0);
    ph_begin();
    kmerge(a, b, n, chunk);
    ph_end("merge", n, 0, 0);
    double t1 = now();
    /* a "total" phase: sums of the two */
    struct phase *p0 = &R->ph[R->nph - 2], *p1 = &R->ph[R->nph - 1];
    struct phase tot = *p1;
    snprintf(tot.name, sizeof tot.name, "total");
    tot.sec = t1 - t0;
    tot.faults += p0->faults;
    tot.major += p0->major;
    tot.minflt += p0->minflt;
    tot.majflt += p0->majflt;
    tot.io_rd += p0->io_rd;
    tot.io_wr += p0->io_wr;
    tot.st_rd += p0->st_rd;
    tot.st_wr += p0->st_wr;
    tot.evictions += p0->evictions;
    tot.writebacks += p0->writebacks;
    /* check: sorted, same sum and xor */
    uint64_t s2 = 0, x2 = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = b[i];
        s2 += v;
        x2 ^= v;
        bad += i && b[i - 1] > v;
    }
    if (s2 != sum || x2 != x)
        bad++;
    tot.sum = s2;
    tot.bad = bad;
    if (R->nph < MAXPH)
        R->ph[R->nph++] = tot;
    child_send();
    if (bad)
        child_fail("sort: result not sorted or not a permutation (%" PRIu64 ")", bad);
    mem_free(b, wl_data);
    mem_free(a, wl_data);
}

struct thr_arg {
    const uint64_t *a;
    size_t n;
    uint64_t count;
    uint64_t seed;
    uint64_t sum, bad;
};

static void *thr_main(void *p)
{
    struct thr_arg *t = p;
    struct rng r = {t->seed};
    t->sum = rand_reads(t->a, t->n, t->count, &r, &t->bad);
    return NULL;
}

static void run_thr(int nthreads)
{
    size_t half = wl_data / 2, n = half / 8;
    uint64_t *a = mem_alloc(half);
    uint64_t *b = a ? mem_alloc(half) : NULL;
    if (!b)
        return;
    fill_val(a, n, 0);
    fill_val(b, n, 0);
    advise_random(a, half);
    advise_random(b, half);
    uint64_t per = opt.nrand / 2;
    struct thr_arg t[2] = {{a, n, per, SEED, 0, 0}, {b, n, per, SEED * 3 + 1, 0, 0}};
    ph_begin();
    if (nthreads == 2) {
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&th[i], NULL, thr_main, &t[i]) != 0) {
                child_fail("pthread_create");
                return;
            }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
    } else {
        /* the same accesses, interleaved in one thread */
        struct rng r0 = {t[0].seed}, r1 = {t[1].seed};
        for (uint64_t k = 0; k < per; k++) {
            t[0].sum += rand_reads(a, n, 1, &r0, &t[0].bad);
            t[1].sum += rand_reads(b, n, 1, &r1, &t[1].bad);
        }
    }
    ph_end("read", 2 * per, t[0].sum + t[1].sum, t[0].bad + t[1].bad);
    mem_free(b, half);
    mem_free(a, half);
}

static const char *input_path; /* the file of the file workload */

static void run_file(void)
{
    size_t n = wl_data / 8;
    uint64_t bad = 0, s = 0;
    if (cur_sys == SYS_UPAGER) {
        ph_begin();
        const uint64_t *a = upager_map_file(input_path, 0, UPAGER_MAP_READ);
        if (!a) {
            child_fail("upager_map_file(%s): %s", input_path, strerror(errno));
            return;
        }
        s = scan_val(a, n, 0, &bad);
        int e = upager_unmap((void *)a);
        ph_end("scan", wl_data, s, bad);
        if (e)
            child_fail("upager_unmap: %s", strerror(e));
    } else if (cur_sys == SYS_KMMAP) {
        ph_begin();
        int fd = open(input_path, O_RDONLY | O_CLOEXEC);
        const uint64_t *a = fd < 0 ? MAP_FAILED
                                   : mmap(NULL, wl_data, PROT_READ, MAP_SHARED, fd, 0);
        if (a == MAP_FAILED) {
            child_fail("mmap %s: %s", input_path, strerror(errno));
            return;
        }
        close(fd);
        s = scan_val(a, n, 0, &bad);
        munmap((void *)a, wl_data);
        ph_end("scan", wl_data, s, bad);
    } else {
        ph_begin();
        int fd = open(input_path, O_RDONLY | O_CLOEXEC);
        uint64_t *a = fd < 0 ? NULL : malloc(wl_data);
        if (!a) {
            child_fail("open/malloc: %s", strerror(errno));
            return;
        }
        for (size_t off = 0; off < wl_data;) {
            ssize_t r = read(fd, (char *)a + off, wl_data - off);
            if (r <= 0) {
                child_fail("read: %s", r ? strerror(errno) : "short file");
                return;
            }
            off += (size_t)r;
        }
        close(fd);
        s = scan_val(a, n, 0, &bad);
        ph_end("scan", wl_data, s, bad);
        free(a);
    }
}

static void run_sweep(void)
{
    size_t n = wl_data / 8;
    uint64_t *a = mem_alloc(wl_data);
    if (!a)
        return;
    fill_val(a, n, 0);
    uint64_t bad = 0;
    ph_begin();
    uint64_t s = scan_val(a, n, 0, &bad);
    ph_end("seqread", wl_data, s, bad);
    struct rng r = {SEED};
    bad = 0;
    advise_random(a, wl_data);
    ph_begin();
    s = rand_reads(a, n, opt.nrand_sweep, &r, &bad);
    ph_end("randread", opt.nrand_sweep, s, bad);
    mem_free(a, wl_data);
}

/* ------------------------------------------------------------------------
 * The floor: bare SIGSEGV + mprotect round trips, and the same with a pread
 * ---------------------------------------------------------------------- */

static struct {
    char *base;
    size_t len, ps, fsize;
    int fd, pread;
} fl;

static void floor_handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    uintptr_t a = (uintptr_t)si->si_addr, b = (uintptr_t)fl.base;
    if (a < b || a >= b + fl.len) {
        signal(sig, SIG_DFL); /* not ours: fault again and die */
        return;
    }
    char *pg = (char *)(a & ~(uintptr_t)(fl.ps - 1));
    if (mprotect(pg, fl.ps, PROT_READ | PROT_WRITE) != 0)
        _exit(99);
    if (fl.pread) {
        ssize_t r = pread(fl.fd, pg, fl.ps, (off_t)((size_t)(pg - fl.base) % fl.fsize));
        (void)r;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    if (n <= 0)
        return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static size_t floor_sizes[8];
static int nfloor_sizes;

static void run_floor(void)
{
    const size_t fsize = 64 * MiB;
    int fd = tmpfile_fd();
    char *buf = malloc(MiB);
    if (fd < 0 || !buf) {
        child_fail("floor file: %s", strerror(errno));
        return;
    }
    for (size_t off = 0; off < fsize; off += MiB) {
        fill_val((uint64_t *)buf, MiB / 8, off / 8);
        if (pwrite(fd, buf, MiB, (off_t)off) != (ssize_t)MiB) {
            child_fail("floor pwrite: %s", strerror(errno));
            return;
        }
    }
    for (size_t off = 0; off < fsize; off += MiB) /* hot in the page cache */
        if (pread(fd, buf, MiB, (off_t)off) != (ssize_t)MiB) {
            child_fail("floor pread: %s", strerror(errno));
            return;
        }
    free(buf);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = floor_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    fl.fd = fd;
    fl.fsize = fsize;
    for (int k = 0; k < nfloor_sizes; k++) {
        size_t ps = floor_sizes[k];
        size_t np = 64 * MiB / ps;
        if (np > 4096)
            np = 4096;
        size_t len = np * ps;
        char *raw = mmap(NULL, len + ps, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) {
            child_fail("floor mmap: %s", strerror(errno));
            return;
        }
        char *base = (char *)(((uintptr_t)raw + ps - 1) & ~(uintptr_t)(ps - 1));
        int rounds = 5;
        struct phase *p = &R->ph[R->nph];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%zu", ps);
        p->ops = np * (size_t)rounds;
        for (int mode = 0; mode < 3; mode++) {
            /* 0: bare, frames resident; 1: + pread, frames resident;
             * 2: + pread into fresh frames (MADV_DONTNEED between rounds) */
            mprotect(base, len, PROT_READ | PROT_WRITE);
            memset(base, 1, len);
            fl.base = base;
            fl.len = len;
            fl.ps = ps;
            fl.pread = mode > 0;
            double per[512];
            int nr = rounds < 512 ? rounds : 512;
            for (int r = 0; r < nr; r++) {
                if (mode == 2)
                    madvise(base, len, MADV_DONTNEED);
                mprotect(base, len, PROT_NONE);
                double t0 = now();
                for (size_t i = 0; i < np; i++)
                    (void)*(volatile char *)(base + i * ps);
                per[r] = (now() - t0) / (double)np * 1e6;
            }
            p->aux[mode] = median(per, nr);
        }
        fl.len = 0;
        munmap(raw, len + ps);
        R->nph++;
    }
    close(fd);
}

/* ------------------------------------------------------------------------
 * The child
 * ---------------------------------------------------------------------- */

static char cg_path[PATH_MAX]; /* the cgroup made for this child, or "" */

static int up_setup(size_t budget)
{
    char b[32];
    snprintf(b, sizeof b, "%zu", budget);
    if (getenv("UPAGER_BUDGET"))
        unsetenv("UPAGER_BUDGET");
    int e = upager_configure("budget", b);
    if (e) {
        child_fail("upager_configure(budget, %s): %s", b, strerror(e));
        return -1;
    }
    if (!getenv("UPAGER_DIR") && (e = upager_configure("dir", opt.dir)) != 0) {
        child_fail("upager_configure(dir, %s): %s", opt.dir, strerror(e));
        return -1;
    }
    if ((e = upager_init()) != 0) {
        child_fail("upager_init: %s", strerror(e));
        return -1;
    }
    return 0;
}

static void child_main(int wl, int sys, size_t budget, size_t data)
{
    cur_sys = sys;
    wl_budget = budget;
    wl_data = data;
    if (sys == SYS_KMMAP && cg_path[0]) {
        char p[PATH_MAX + 32], pid[32];
        snprintf(p, sizeof p, "%s/cgroup.procs", cg_path);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        if (write_str(p, pid) != 0) {
            child_fail("joining cgroup %s: %s", cg_path, strerror(errno));
            return;
        }
    }
    write_str("/proc/self/clear_refs", "5"); /* reset VmHWM to VmRSS */
    R->base_rss = proc_field("/proc/self/status", "VmRSS") * KiB;
    R->base_anon = proc_field("/proc/self/status", "RssAnon") * KiB;
    if (sys == SYS_UPAGER && up_setup(budget) != 0)
        return;
    switch (wl) {
    case WL_SEQ: run_seq(); break;
    case WL_RAND: run_rand(); break;
    case WL_HOTCOLD: run_hotcold(); break;
    case WL_FIT: run_fit(); break;
    case WL_SORT: run_sort(); break;
    case WL_THR1: run_thr(1); break;
    case WL_THR2: run_thr(2); break;
    case WL_FILE: run_file(); break;
    case WL_SWEEP: run_sweep(); break;
    case WL_FLOOR: run_floor(); break;
    case WL_PROBE: break;
    }
    R->hwm = proc_field("/proc/self/status", "VmHWM") * KiB;
    R->rss_file = proc_field("/proc/self/status", "RssFile") * KiB;
    if (sys == SYS_UPAGER) {
        struct upager_stats st;
        if (upager_get_stats(&st) == 0) {
            R->page_size = st.page_size;
            R->budget = st.budget_bytes;
            R->up_peak_resident = st.peak_resident_bytes;
            R->up_io_errors = st.io_errors;
        }
    }
}

/* ------------------------------------------------------------------------
 * Cgroups (in the parent)
 * ---------------------------------------------------------------------- */

static struct {
    int version;           /* 2, 1, or 0: none                               */
    char parent[PATH_MAX]; /* where to make ours                             */
    char label[64];
    int seq;
} cg;

/* mount point and root of the cgroup hierarchy: v2, or the v1 one that has
 * the memory controller. */
static int cg_find_mount(int version, char *mnt, size_t mlen, char *root, size_t rlen)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        char r[PATH_MAX], m[PATH_MAX];
        if (sscanf(line, "%*s %*s %*s %4095s %4095s", r, m) != 2)
            continue;
        char *dash = strstr(line, " - ");
        if (!dash)
            continue;
        char fstype[64], src[256], sopts[1024] = "";
        if (sscanf(dash + 3, "%63s %255s %1023s", fstype, src, sopts) < 2)
            continue;
        if (version == 2 && strcmp(fstype, "cgroup2") != 0)
            continue;
        if (version == 1) {
            if (strcmp(fstype, "cgroup") != 0)
                continue;
            bool mem = false;
            for (char *t = strtok(sopts, ","); t; t = strtok(NULL, ","))
                mem |= strcmp(t, "memory") == 0;
            if (!mem)
                continue;
        }
        snprintf(mnt, mlen, "%s", m);
        snprintf(root, rlen, "%s", r);
        found = 0;
        break;
    }
    fclose(f);
    return found;
}

/* Our own cgroup path in that hierarchy (from /proc/self/cgroup). */
static int cg_own_path(int version, char *out, size_t len)
{
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f)
        return -1;
    char line[4096];
    int found = -1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c1 = *c2 = '\0';
        bool match = false;
        if (version == 2)
            match = strcmp(line, "0") == 0 && c1[1] == '\0';
        else
            for (char *t = strtok(c1 + 1, ","); t; t = strtok(NULL, ","))
                match |= strcmp(t, "memory") == 0;
        if (match) {
            snprintf(out, len, "%s", c2 + 1);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static const char *cg_limit_file(void)
{
    return cg.version == 2 ? "memory.max" : "memory.limit_in_bytes";
}

/* Makes a fresh cgroup with the limit; returns 0 and its path. */
static int cg_make(size_t limit, char *out, size_t len)
{
    if (!cg.version)
        return -1;
    if ((size_t)snprintf(out, len, "%.3900s/upager-bench-%d-%d", cg.parent, (int)getpid(), cg.seq++) >= len)
        return -1;
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return -1;
    char p[PATH_MAX + 64], v[32];
    snprintf(p, sizeof p, "%s/%s", out, cg_limit_file());
    snprintf(v, sizeof v, "%zu", limit);
    if (write_str(p, v) != 0) {
        rmdir(out);
        return -1;
    }
    if (cg.version == 2) {
        snprintf(p, sizeof p, "%s/memory.swap.max", out);
        if (access(p, F_OK) == 0)
            write_str(p, "0");
    }
    return 0;
}

static void cg_remove(const char *path)
{
    for (int i = 0; i < 50; i++) {
        if (rmdir(path) == 0 || errno == ENOENT)
            return;
        usleep(20000);
    }
    fprintf(stderr, "upager_bench: could not remove cgroup %s: %s\n", path, strerror(errno));
}

/* Tries a parent directory: makes a test cgroup with a limit, moves a
 * child into it. */
static bool cg_try(int version, const char *parent)
{
    cg.version = version;
    snprintf(cg.parent, sizeof cg.parent, "%s", parent);
    if (version == 2) {
        char p[PATH_MAX + 64], buf[512];
        snprintf(p, sizeof p, "%s/cgroup.controllers", parent);
        if (read_str(p, buf, sizeof buf) != 0 || !strstr(buf, "memory"))
            goto no;
        snprintf(p, sizeof p, "%s/cgroup.subtree_control", parent);
        if (read_str(p, buf, sizeof buf) != 0)
            goto no;
        if (!strstr(buf, "memory") && write_str(p, "+memory") != 0)
            goto no;
    }
    char path[PATH_MAX];
    if (cg_make(64 * MiB, path, sizeof path) != 0)
        goto no;
    pid_t pid = fork();
    if (pid == 0) {
        char p[PATH_MAX + 32], s[32];
        snprintf(p, sizeof p, "%s/cgroup.procs", path);
        snprintf(s, sizeof s, "%d", (int)getpid());
        _exit(write_str(p, s) == 0 ? 0 : 1);
    }
    int st = 1;
    if (pid > 0)
        waitpid(pid, &st, 0);
    cg_remove(path);
    if (pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return true;
no:
    cg.version = 0;
    return false;
}

static void cg_detect(void)
{
    char mnt[PATH_MAX], root[PATH_MAX], own[PATH_MAX], dir[3 * PATH_MAX];
    for (int v = 2; v >= 1; v--) {
        if (cg_find_mount(v, mnt, sizeof mnt, root, sizeof root) != 0)
            continue;
        if (cg_own_path(v, own, sizeof own) == 0) {
            const char *rel = own;
            size_t rl = strlen(root);
            if (strcmp(root, "/") != 0 && strncmp(own, root, rl) == 0)
                rel = own + rl;
            snprintf(dir, sizeof dir, "%s%s", mnt, rel);
            size_t dl = strlen(dir);
            while (dl > 1 && dir[dl - 1] == '/')
                dir[--dl] = '\0';
            if (cg_try(v, dir))
                goto found;
        }
        if (cg_try(v, mnt))
            goto found;
    }
    snprintf(cg.label, sizeof cg.label, "kernel mmap (unconstrained)");
    return;
found:
    snprintf(cg.label, sizeof cg.label, "kernel mmap (cgroup v%d %s)", cg.version,
             cg_limit_file());
}

/* ------------------------------------------------------------------------
 * Running children (in the parent)
 * ---------------------------------------------------------------------- */

struct run {
    int wl, sys, rep, frac; /* frac: sweep index, else -1 */
    size_t budget, data;
    struct result r;
    char status[240];       /* "" when fine */
    bool timed_out;
    long ru_maxrss_kib;
};

static struct run *runs;
static int nruns, cap_runs;
static char input_file[PATH_MAX + 32];

static void cleanup(void)
{
    if (input_file[0])
        unlink(input_file);
}

static volatile pid_t cur_child; /* the child running now, in the parent */

static void on_signal(int sig)
{
    if (cur_child > 0) {
        kill(cur_child, SIGKILL);
        waitpid(cur_child, NULL, 0);
        if (cg_path[0])
            rmdir(cg_path);
    }
    if (input_file[0])
        unlink(input_file);
    signal(sig, SIG_DFL);
    raise(sig);
}

static struct run *run_child(int wl, int sys, int rep, int frac, size_t budget, size_t data)
{
    if (nruns == cap_runs) {
        cap_runs = cap_runs ? 2 * cap_runs : 256;
        runs = realloc(runs, (size_t)cap_runs * sizeof *runs);
        if (!runs)
            die("out of memory");
    }
    struct run *ru = &runs[nruns++];
    memset(ru, 0, sizeof *ru);
    ru->wl = wl;
    ru->sys = sys;
    ru->rep = rep;
    ru->frac = frac;
    ru->budget = budget;
    ru->data = data;
    cg_path[0] = '\0';
    if (sys == SYS_KMMAP && cg.version && cg_make(budget, cg_path, sizeof cg_path) != 0) {
        fprintf(stderr, "upager_bench: cgroup for the kmmap run: %s\n", strerror(errno));
        cg_path[0] = '\0';
    }
    if (wl == WL_FILE) {
        /* every system starts from a cold cache */
        int fd = open(input_file, O_RDONLY);
        if (fd >= 0) {
            fdatasync(fd);
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0)
        die("pipe: %s", strerror(errno));
    fflush(NULL);
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        close(pfd[0]);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        static struct result res;
        R = &res;
        result_fd = pfd[1];
        child_main(wl, sys, budget, data);
        if (R->ok == 0)
            R->ok = 1;
        child_send();
        _exit(0);
    }
    cur_child = pid;
    close(pfd[1]);
    static struct result tmp;
    size_t got = 0;
    char *dst = (char *)&tmp;
    bool timed_out = false, final = false;
    for (;;) {
        int left_ms = (int)((t0 + opt.timeout - now()) * 1000);
        if (left_ms <= 0) {
            timed_out = true;
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd pf = {pfd[0], POLLIN, 0};
        int n = poll(&pf, 1, left_ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            continue;
        ssize_t r = read(pfd[0], dst + got, sizeof tmp - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got == sizeof tmp) {
            ru->r = tmp;  /* the latest complete report */
            final = tmp.ok != 0;
            got = 0;
        }
    }
    close(pfd[0]);
    int st = 0;
    struct rusage rus;
    while (wait4(pid, &st, 0, &rus) < 0 && errno == EINTR)
        ;
    cur_child = 0;
    ru->ru_maxrss_kib = rus.ru_maxrss;
    if (cg_path[0]) {
        snprintf(ru->r.cg_label, sizeof ru->r.cg_label, "%s", cg.label);
        cg_remove(cg_path);
    }
    ru->timed_out = timed_out;
    if (timed_out)
        snprintf(ru->status, sizeof ru->status, "timed out after %d s (killed)", opt.timeout);
    else if (WIFSIGNALED(st))
        snprintf(ru->status, sizeof ru->status, "killed by signal %d (%s)%s", WTERMSIG(st),
                 strsignal(WTERMSIG(st)),
                 WTERMSIG(st) == SIGKILL && sys == SYS_KMMAP ? ", cgroup OOM?" : "");
    else if (!final)
        snprintf(ru->status, sizeof ru->status, "exited with status %d without a result",
                 WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    else if (ru->r.ok != 1)
        snprintf(ru->status, sizeof ru->status, "%s", ru->r.err[0] ? ru->r.err : "failed");
    if (ru->status[0])
        fprintf(stderr, "upager_bench: %s/%s run %d: %s\n",
                wl < NWL ? wls[wl].name : wl == WL_SWEEP ? "sweep" : wl == WL_FLOOR ? "floor" : "probe",
                sys_name[sys], rep + 1, ru->status);
    return ru;
}

/* ------------------------------------------------------------------------
 * Summaries (in the parent)
 * ---------------------------------------------------------------------- */

struct agg {
    int n;                  /* good runs */
    int failed, timeouts, missing;
    char status[240];       /* first failure */
    double med, min, max;   /* seconds */
    double faults, major, rd, wr, evictions; /* medians */
    double ops;
    uint64_t hwm, base, up_peak; /* max over runs */
    uint64_t page_size;
};

static const struct phase *find_phase(const struct run *ru, const char *ph)
{
    for (int i = 0; i < ru->r.nph; i++)
        if (strcmp(ru->r.ph[i].name, ph) == 0)
            return &ru->r.ph[i];
    return NULL;
}

static bool aggregate(int wl, int sys, int frac, const char *ph, struct agg *a)
{
    memset(a, 0, sizeof *a);
    double t[256], f[256], m[256], rd[256], wr[256], ev[256];
    int n = 0, any = 0;
    for (int i = 0; i < nruns; i++) {
        struct run *ru = &runs[i];
        if (ru->wl != wl || ru->sys != sys || ru->frac != frac)
            continue;
        any++;
        const struct phase *p = find_phase(ru, ph);
        if (ru->status[0]) {
            a->failed++;
            if (!a->status[0])
                snprintf(a->status, sizeof a->status, "%s", ru->status);
        }
        if (ru->timed_out)
            a->timeouts++;
        if (!p || p->bad || n >= 256)
            continue;
        t[n] = p->sec;
        bool up = sys == SYS_UPAGER;
        f[n] = (double)p->faults;
        m[n] = (double)p->major;
        rd[n] = (double)(up ? p->st_rd : p->io_rd);
        wr[n] = (double)(up ? p->st_wr : p->io_wr);
        ev[n] = (double)p->evictions;
        a->ops = (double)p->ops;
        if (ru->r.hwm > a->hwm) {
            a->hwm = ru->r.hwm;
            a->base = ru->r.base_rss;
        }
        if (ru->r.up_peak_resident > a->up_peak)
            a->up_peak = ru->r.up_peak_resident;
        a->page_size = ru->r.page_size;
        n++;
    }
    if (!any)
        return false;
    a->n = n;
    a->missing = any - n;
    if (n) {
        double s[256];
        memcpy(s, t, sizeof(double) * (size_t)n);
        a->med = median(s, n);
        a->min = s[0];
        a->max = s[n - 1];
        a->faults = median(f, n);
        a->major = median(m, n);
        a->rd = median(rd, n);
        a->wr = median(wr, n);
        a->evictions = median(ev, n);
    }
    return true;
}

static const char *sys_label(int sys)
{
    static char buf[96];
    switch (sys) {
    case SYS_UPAGER: return "upager";
    case SYS_MALLOC: return "malloc (in RAM)";
    case SYS_KMMAP:
        snprintf(buf, sizeof buf, "%s", cg.version ? "kernel mmap (cgroup)" : "kernel mmap (unconstrained)");
        return buf;
    case SYS_READ: return "read() into malloc";
    case SYS_PREAD: return "raw pread 1M";
    }
    return "?";
}

static const char *const phases_of[NWL][4] = {
    [WL_SEQ] = {"write", "read", "read-cold", NULL},
    [WL_RAND] = {"read", NULL},
    [WL_HOTCOLD] = {"mixed", NULL},
    [WL_FIT] = {"rw", NULL},
    [WL_SORT] = {"chunks", "merge", "total", NULL},
    [WL_THR1] = {"read", NULL},
    [WL_THR2] = {"read", NULL},
    [WL_FILE] = {"scan", NULL},
};

static char problems[8192]; /* upager's */
static char notes[8192];    /* the peers' (timeouts of the kernel peer...) */
static void vappend(char *buf, size_t len, const char *fmt, va_list ap)
{
    size_t l = strlen(buf);
    if (l + 4 >= len)
        return;
    buf[l++] = ' ';
    buf[l++] = ' ';
    buf[l++] = ' ';
    vsnprintf(buf + l, len - l, fmt, ap);
    l = strlen(buf);
    if (l + 1 < len) {
        buf[l] = '\n';
        buf[l + 1] = '\0';
    }
}
static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(problems, sizeof problems, fmt, ap);
    va_end(ap);
}
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vappend(notes, sizeof notes, fmt, ap);
    va_end(ap);
}

static void print_table(FILE *tsv)
{
    char b1[32], b2[32];
    for (int wl = 0; wl < NWL; wl++) {
        if (!(opt.wl_mask & B(wl)))
            continue;
        size_t data = wl == WL_FIT ? opt.budget / 2 : opt.data;
        printf("\n== %s: %s ==\n   data %s, budget %s\n", wls[wl].name, wls[wl].title,
               fmt_size(b1, sizeof b1, (double)data), fmt_size(b2, sizeof b2, (double)opt.budget));
        printf("   %-9s %-28s %24s %18s %9s %9s %9s %7s %7s\n", "phase", "system",
               "time s median (min-max)", "faults (major)", "read MiB", "wrote MiB",
               "peak RSS", "x mall", "x kmmap");
        for (int k = 0; phases_of[wl][k]; k++) {
            const char *ph = phases_of[wl][k];
            struct agg am, ak;
            bool hm = aggregate(wl, SYS_MALLOC, -1, ph, &am) && am.n;
            bool hk = aggregate(wl, SYS_KMMAP, -1, ph, &ak) && ak.n;
            bool ak_timeout = !hk && aggregate(wl, SYS_KMMAP, -1, ph, &ak) && ak.timeouts;
            for (int sys = 0; sys < NSYS; sys++) {
                if (!(wls[wl].systems & B(sys)) || !(opt.sys_mask & B(sys)))
                    continue;
                struct agg a;
                if (!aggregate(wl, sys, -1, ph, &a))
                    continue;
                /* the seq phases: pread has no write, only pread has read-cold */
                if (wl == WL_SEQ && strcmp(ph, "read") != 0 && (sys == SYS_PREAD) != (strcmp(ph, "read-cold") == 0))
                    continue;
                if (!a.n) {
                    if (a.timeouts)
                        printf("   %-9s %-28s %24s   (timed out: the run was killed%s)\n", ph, sys_label(sys),
                               "> timeout", opt.reps > 1 ? " and not repeated" : "");
                    else if (a.failed)
                        printf("   %-9s %-28s FAILED: %s\n", ph, sys_label(sys), a.status);
                    fprintf(tsv, "workload\t%s\t%s\t%s\t0\tNaN\tNaN\tNaN\t\t\t\t\t\t\t\t\t\t%zu\t%zu\t\t-\t-\t%d\t%s\n",
                            wls[wl].name, ph, sys_name[sys], opt.budget, data, a.failed,
                            a.timeouts ? "timeout" : a.status);
                    continue;
                }
                char t[64], fl[48], xm[16] = "-", xk[16] = "-", rss[32];
                snprintf(t, sizeof t, "%.3f (%.3f-%.3f)", a.med, a.min, a.max);
                snprintf(fl, sizeof fl, "%.0f (%.0f)", a.faults, a.major);
                snprintf(rss, sizeof rss, "%.1fM", (double)a.hwm / MiB);
                if (hm && am.med > 0)
                    snprintf(xm, sizeof xm, "%.2f", a.med / am.med);
                if (hk && ak.med > 0)
                    snprintf(xk, sizeof xk, "%.2f", a.med / ak.med);
                else if (sys != SYS_KMMAP && ak_timeout)
                    snprintf(xk, sizeof xk, "<%.2f", a.med / opt.timeout);
                char note[64] = "";
                if (a.missing)
                    snprintf(note, sizeof note, " (%d of %d runs failed)", a.missing, a.missing + a.n);
                printf("   %-9s %-28s %24s %18s %9.1f %9.1f %9s %7s %7s%s\n", ph, sys_label(sys), t,
                       fl, a.rd / MiB, a.wr / MiB, rss, xm, xk, note);
                fprintf(tsv,
                        "workload\t%s\t%s\t%s\t%d\t%.6f\t%.6f\t%.6f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t"
                        "%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%zu\t%zu\t%.0f\t%s\t%s\t%d\t%s\n",
                        wls[wl].name, ph, sys_name[sys], a.n, a.med, a.min, a.max, a.faults, a.major,
                        a.rd, a.wr, a.evictions, a.hwm, a.base, a.up_peak, a.page_size,
                        opt.budget, data, a.ops, xm, xk, a.missing, a.missing ? a.status : "");
            }
        }
    }
}

/* the floor (per page size) */
struct floor_agg { size_t ps; double bare, pread, fresh; double bmin, bmax, pmin, pmax; };
static struct floor_agg floors[8];
static int nfloors;

static void summarise_floor(FILE *tsv)
{
    nfloors = 0;
    for (int k = 0; k < nfloor_sizes; k++) {
        double v[3][256];
        int n = 0;
        char name[32];
        snprintf(name, sizeof name, "%zu", floor_sizes[k]);
        for (int i = 0; i < nruns && n < 256; i++) {
            if (runs[i].wl != WL_FLOOR || runs[i].status[0])
                continue;
            const struct phase *p = find_phase(&runs[i], name);
            if (!p)
                continue;
            for (int m = 0; m < 3; m++)
                v[m][n] = p->aux[m];
            n++;
        }
        if (!n)
            continue;
        struct floor_agg *f = &floors[nfloors++];
        f->ps = floor_sizes[k];
        f->bare = median(v[0], n);
        f->bmin = v[0][0];
        f->bmax = v[0][n - 1];
        f->pread = median(v[1], n);
        f->pmin = v[1][0];
        f->pmax = v[1][n - 1];
        f->fresh = median(v[2], n);
        fprintf(tsv, "floor\t%zu\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\t%.3f\n", f->ps, f->bare,
                f->bmin, f->bmax, f->pread, f->pmin, f->pmax, f->fresh);
    }
    if (!nfloors)
        return;
    printf("\n== floor: a plain sigaction SIGSEGV handler on a PROT_NONE page (us per fault) ==\n");
    printf("   %-9s %26s %30s %22s\n", "page", "mprotect RW (frames resident)",
           "+ pread, page-cache hot (resident)", "+ pread into fresh frames");
    for (int i = 0; i < nfloors; i++) {
        char b[32];
        struct floor_agg *f = &floors[i];
        printf("   %-9s %10.2f (%.2f-%.2f) %15.2f (%.2f-%.2f) %22.2f\n", fmt_size(b, sizeof b, (double)f->ps),
               f->bare, f->bmin, f->bmax, f->pread, f->pmin, f->pmax, f->fresh);
    }
}

static const struct floor_agg *floor_for(size_t ps)
{
    for (int i = 0; i < nfloors; i++)
        if (floors[i].ps == ps)
            return &floors[i];
    return NULL;
}

static void summarise_sweep(FILE *sw)
{
    if (!opt.sweep)
        return;
    fprintf(sw, "# frac\tbudget\tsystem\tseq_MiBps\tseq_min\tseq_max\trand_Mreads_s\trand_min\trand_max\tpage_size\tpeak_rss\tfailed\n");
    printf("\n== sweep: throughput against budget / data (data %.0f MiB) ==\n", (double)opt.data / MiB);
    printf("   %-6s %-9s %-28s %26s %28s %9s\n", "frac", "budget", "system",
           "seq read MiB/s (min-max)", "random reads M/s (min-max)", "peak RSS");
    for (int sys = 0; sys < NSYS; sys++) {
        if (sys != SYS_UPAGER && sys != SYS_KMMAP)
            continue;
        if (!(opt.sys_mask & B(sys)))
            continue;
        for (int fi = 0; fi < opt.nfracs; fi++) {
            struct agg s, r;
            if (!aggregate(WL_SWEEP, sys, fi, "seqread", &s))
                continue;
            aggregate(WL_SWEEP, sys, fi, "randread", &r);
            size_t budget = (size_t)(opt.fracs[fi] * (double)opt.data);
            budget = (budget + MiB - 1) / MiB * MiB;
            char b[32];
            if (!s.n) {
                printf("   %-6.3f %-9s %-28s FAILED: %s\n", opt.fracs[fi], fmt_size(b, sizeof b, (double)budget),
                       sys_label(sys), s.status);
                fprintf(sw, "%.4f\t%zu\t%s\tNaN\tNaN\tNaN\tNaN\tNaN\tNaN\t0\t0\t%d\n", opt.fracs[fi], budget,
                        sys_name[sys], s.failed);
                continue;
            }
            double mb = (double)opt.data / MiB, nr = (double)opt.nrand_sweep / 1e6;
            printf("   %-6.3f %-9s %-28s %10.0f (%.0f-%.0f) %14.3f (%.3f-%.3f) %8.1fM\n", opt.fracs[fi],
                   fmt_size(b, sizeof b, (double)budget), sys_label(sys), mb / s.med, mb / s.max,
                   mb / s.min, nr / r.med, nr / r.max, nr / r.min, (double)s.hwm / MiB);
            fprintf(sw, "%.4f\t%zu\t%s\t%.2f\t%.2f\t%.2f\t%.5f\t%.5f\t%.5f\t%" PRIu64 "\t%" PRIu64 "\t%d\n",
                    opt.fracs[fi], budget, sys_name[sys], mb / s.med, mb / s.max, mb / s.min, nr / r.med,
                    nr / r.max, nr / r.min, s.page_size, s.hwm, s.failed);
        }
        fprintf(sw, "\n\n"); /* one gnuplot data block per system */
    }
}

static void targets(FILE *tsv)
{
    printf("\n== issue-5 targets (upager) ==\n");
    struct agg a, b;
    char line[512];
    /* 1. random major fault / floor */
    if (aggregate(WL_RAND, SYS_UPAGER, -1, "read", &a) && a.n && a.major > 0) {
        double us = a.med / a.major * 1e6;
        const struct floor_agg *f = floor_for(a.page_size);
        if (f) {
            double x = us / f->pread;
            snprintf(line, sizeof line,
                     "random-read time / major faults = %.2f us at page %zu; floor (fault+mprotect+pread) %.2f us: x%.2f "
                     "(into fresh frames %.2f us: x%.2f; bare fault+mprotect %.2f us: x%.2f)",
                     us, (size_t)a.page_size, f->pread, x, f->fresh, us / f->fresh, f->bare, us / f->bare);
            printf("   [%s] major fault / floor <= 1.3: %s\n", x <= 1.3 ? "met" : "NOT met", line);
            fprintf(tsv, "target\tmajor_fault_over_floor\t%.3f\t<=1.3\t%s\n", x, x <= 1.3 ? "met" : "not met");
        } else {
            printf("   [?] major fault / floor: %.2f us per major fault, no floor at page %zu\n", us,
                   (size_t)a.page_size);
        }
    } else {
        printf("   [?] major fault / floor: no upager random-read result with major faults\n");
    }
    /* 2. sequential read / raw pread */
    if (aggregate(WL_SEQ, SYS_UPAGER, -1, "read", &a) && a.n &&
        aggregate(WL_SEQ, SYS_PREAD, -1, "read", &b) && b.n) {
        double x = b.med / a.med;
        printf("   [%s] sequential read 4x budget / raw pread (hot) >= 0.6: %.2f (%.0f vs %.0f MiB/s)\n",
               x >= 0.6 ? "met" : "NOT met", x, (double)opt.data / MiB / a.med, (double)opt.data / MiB / b.med);
        fprintf(tsv, "target\tseq_read_over_pread\t%.3f\t>=0.6\t%s\n", x, x >= 0.6 ? "met" : "not met");
    } else {
        printf("   [?] sequential read / raw pread: missing results\n");
    }
    /* 3. fits after first touch / malloc */
    if (aggregate(WL_FIT, SYS_UPAGER, -1, "rw", &a) && a.n && aggregate(WL_FIT, SYS_MALLOC, -1, "rw", &b) && b.n) {
        double x = a.med / b.med;
        printf("   [%s] data that fits, after first touch / malloc <= 1.05: %.3f (%.3f s vs %.3f s, %.0f faults)\n",
               x <= 1.05 ? "met" : "NOT met", x, a.med, b.med, a.faults);
        fprintf(tsv, "target\tfit_over_malloc\t%.3f\t<=1.05\t%s\n", x, x <= 1.05 ? "met" : "not met");
    } else {
        printf("   [?] fits / malloc: missing results\n");
    }
    /* 4. two threads / one thread */
    if (aggregate(WL_THR1, SYS_UPAGER, -1, "read", &a) && a.n && aggregate(WL_THR2, SYS_UPAGER, -1, "read", &b) && b.n) {
        double x = a.med / b.med;
        struct agg km1, km2;
        char peers[128] = "";
        if (aggregate(WL_THR1, SYS_KMMAP, -1, "read", &km1) && km1.n &&
            aggregate(WL_THR2, SYS_KMMAP, -1, "read", &km2) && km2.n)
            snprintf(peers, sizeof peers, "; kernel mmap %.2f", km1.med / km2.med);
        printf("   [%s] two threads / one thread (throughput) >= 1.6: %.2f (%.3f s vs %.3f s%s)\n",
               x >= 1.6 ? "met" : "NOT met", x, a.med, b.med, peers);
        fprintf(tsv, "target\tthreads_scaling\t%.3f\t>=1.6\t%s\n", x, x >= 1.6 ? "met" : "not met");
    } else {
        printf("   [?] two threads / one thread: missing results\n");
    }
    /* 5. peak RSS.  VmHWM counts the program's text and libraries too
     * (RssFile, about 1.5 MiB here) and the harness's own anonymous memory
     * (RssAnon before the library starts, about 0.4 MiB): neither is the
     * library's doing, so the measure is VmHWM - RssFile at the end -
     * RssAnon at the start: the arena, the library's metadata and buffers. */
    double worst = 0, worst_base = 0, worst_abs = 0, worst_sweep = 0;
    const char *wname = "?";
    uint64_t peak_res = 0;
    for (int i = 0; i < nruns; i++) {
        struct run *ru = &runs[i];
        if (ru->sys != SYS_UPAGER || (ru->wl >= NWL && ru->wl != WL_SWEEP) || !ru->r.hwm)
            continue;
        double d = (double)(ru->r.hwm - ru->r.rss_file - ru->r.base_anon) / (double)ru->budget;
        if (ru->wl == WL_SWEEP) {
            if (ru->budget < ru->data && d > worst_sweep)
                worst_sweep = d;
        } else if (d > worst) {
            worst = d;
            worst_base = (double)(ru->r.hwm - ru->r.base_rss) / (double)ru->budget;
            worst_abs = (double)ru->r.hwm / (double)ru->budget;
            wname = wls[ru->wl].name;
        }
        if (ru->r.up_peak_resident > peak_res && ru->wl < NWL)
            peak_res = ru->r.up_peak_resident;
        if (ru->r.up_peak_resident > ru->budget)
            problem("upager %s run %d (budget %zu): peak_resident_bytes %" PRIu64 " > budget",
                    ru->wl < NWL ? wls[ru->wl].name : "sweep", ru->rep + 1, ru->budget, ru->r.up_peak_resident);
    }
    if (worst > 0) {
        printf("   [%s] peak RSS <= budget + 2%%: worst (VmHWM - RssFile - harness RssAnon) / budget = %.3f (%s); "
               "VmHWM / budget %.3f, (VmHWM - RSS at start) / budget %.3f; stats.peak_resident_bytes max %.1f MiB",
               worst <= 1.02 ? "met" : "NOT met", worst, wname, worst_abs, worst_base, (double)peak_res / MiB);
        if (worst_sweep > 0)
            printf("; sweep budgets below the data: worst %.3f", worst_sweep);
        printf("\n");
        fprintf(tsv, "target\tpeak_rss_over_budget\t%.4f\t<=1.02\t%s\n", worst, worst <= 1.02 ? "met" : "not met");
    }
}

/* ------------------------------------------------------------------------
 * main
 * ---------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: upager_bench [options]\n"
            "  --quick            small sizes (budget 32M, data 128M): about a minute\n"
            "  --budget SIZE      resident budget (default 256M; quick 32M)\n"
            "  --data SIZE        data size of the big workloads (default 4 x budget)\n"
            "  --reps N           runs of each workload and system (default 3)\n"
            "  --sweep-reps N     runs of each sweep point (default 1 quick, 3 full)\n"
            "  --random-reads N   random reads in rand/thr1/thr2 (default 100000; quick 10000)\n"
            "  --sweep-reads N    random reads of a sweep point (default --random-reads; full: half of it)\n"
            "  --workloads LIST   comma list of seq,rand,hotcold,fit,sort,thr1,thr2,file (default all)\n"
            "  --systems LIST     comma list of upager,malloc,kmmap,read,pread (default all)\n"
            "  --fracs LIST       sweep budgets as fractions of data (default 0.125,0.25,0.5,1,1.5)\n"
            "  --no-sweep, --no-floor\n"
            "  --no-advice        no MADV_RANDOM / UPAGER_ADVICE_RANDOM before random reads\n"
            "  --dir DIR          where the files go (default $UPAGER_DIR, else /var/tmp)\n"
            "  --out FILE         results TSV (default bench/results.tsv)\n"
            "  --sweep-out FILE   sweep TSV for the plot (default: sweep.tsv beside --out)\n"
            "  --timeout SEC      per child run; a run that times out is not repeated (default 120; quick 15)\n");
}

static unsigned parse_list(const char *s, const char *const *names, int n, const char *what)
{
    unsigned m = 0;
    char *dup = strdup(s);
    for (char *t = strtok(dup, ","); t; t = strtok(NULL, ",")) {
        int i;
        for (i = 0; i < n; i++)
            if (names[i] && strcmp(t, names[i]) == 0)
                break;
        if (i == n)
            die("unknown %s '%s'", what, t);
        m |= B(i);
    }
    free(dup);
    return m;
}

int main(int argc, char **argv)
{
    size_t budget = 0, data = 0;
    int reps = 3, sweep_reps = -1;
    long long nrand = -1, nsweep = -1;
    const char *out = "bench/results.tsv", *sweep_out = NULL, *dir = NULL;
    const char *wl_list = NULL, *sys_list = NULL, *fracs = "0.125,0.25,0.5,1,1.5";
    int timeout = -1;
    opt.floor = opt.sweep = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && (v || (die("%s needs a value", name), 0)) && ++i)
        if (strcmp(a, "--quick") == 0)
            opt.quick = true;
        else if (strcmp(a, "--no-sweep") == 0)
            opt.sweep = false;
        else if (strcmp(a, "--no-floor") == 0)
            opt.floor = false;
        else if (strcmp(a, "--no-advice") == 0)
            opt.no_advice = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (ARG("--budget")) {
            if (parse_size(v, &budget) || budget < MiB)
                die("bad --budget '%s'", v);
        } else if (ARG("--data")) {
            if (parse_size(v, &data) || data < MiB)
                die("bad --data '%s'", v);
        } else if (ARG("--reps")) {
            reps = atoi(v);
        } else if (ARG("--sweep-reps")) {
            sweep_reps = atoi(v);
        } else if (ARG("--random-reads")) {
            nrand = atoll(v);
        } else if (ARG("--sweep-reads")) {
            nsweep = atoll(v);
        } else if (ARG("--workloads")) {
            wl_list = v;
        } else if (ARG("--systems")) {
            sys_list = v;
        } else if (ARG("--fracs")) {
            fracs = v;
        } else if (ARG("--dir")) {
            dir = v;
        } else if (ARG("--out")) {
            out = v;
        } else if (ARG("--sweep-out")) {
            sweep_out = v;
        } else if (ARG("--timeout")) {
            timeout = atoi(v);
        } else {
            usage(stderr);
            return 2;
        }
#undef ARG
    }
    opt.budget = budget ? budget : opt.quick ? 32 * MiB : 256 * MiB;
    opt.budget = (opt.budget + MiB - 1) / MiB * MiB;
    opt.data = data ? data : 4 * opt.budget;
    opt.data = (opt.data + MiB - 1) / MiB * MiB;
    opt.reps = reps > 0 ? reps : 1;
    opt.sweep_reps = sweep_reps > 0 ? sweep_reps : opt.quick ? 1 : 3;
    opt.nrand = nrand > 0 ? (uint64_t)nrand : opt.quick ? 10000 : 100000;
    opt.nrand_sweep = nsweep > 0 ? (uint64_t)nsweep : opt.quick ? opt.nrand : opt.nrand / 2;
    opt.timeout = timeout > 0 ? timeout : opt.quick ? 15 : 120;
    opt.out = out;
    opt.wl_mask = wl_list ? parse_list(wl_list, (const char *const[]){"seq", "rand", "hotcold", "fit", "sort",
                                                                        "thr1", "thr2", "file"}, NWL, "workload")
                          : (1u << NWL) - 1;
    opt.sys_mask = sys_list ? parse_list(sys_list, sys_name, NSYS, "system") : (1u << NSYS) - 1;
    for (char *d = strdup(fracs), *t = strtok(d, ","); t && opt.nfracs < 16; t = strtok(NULL, ",")) {
        double f = atof(t);
        if (f <= 0 || f > 16)
            die("bad fraction '%s'", t);
        opt.fracs[opt.nfracs++] = f;
    }
    if (!dir)
        dir = getenv("UPAGER_DIR");
    if (!dir || !*dir)
        dir = "/var/tmp";
    snprintf(opt.dir, sizeof opt.dir, "%s", dir);
    if (access(opt.dir, W_OK) != 0)
        die("directory %s is not writable: %s", opt.dir, strerror(errno));
    static char swbuf[PATH_MAX + 16];
    if (!sweep_out) {
        const char *sl = strrchr(out, '/');
        snprintf(swbuf, sizeof swbuf, "%.*ssweep.tsv", sl ? (int)(sl - out + 1) : 0, out);
        sweep_out = swbuf;
    }
    opt.sweep_out = sweep_out;
    if (getenv("UPAGER_BUDGET"))
        fprintf(stderr, "upager_bench: UPAGER_BUDGET is ignored: the budget is set per run\n");

    FILE *tsv = fopen(opt.out, "w");
    if (!tsv)
        die("%s: %s", opt.out, strerror(errno));
    FILE *sw = NULL;
    if (opt.sweep && !(sw = fopen(opt.sweep_out, "w")))
        die("%s: %s", opt.sweep_out, strerror(errno));

    atexit(cleanup);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGHUP, on_signal);

    cg_detect();
    char b1[32], b2[32];
    struct utsname un;
    uname(&un);
    printf("upager benchmark: budget %s, data %s, %d runs each (median, min-max), %s mode\n",
           fmt_size(b1, sizeof b1, (double)opt.budget), fmt_size(b2, sizeof b2, (double)opt.data), opt.reps,
           opt.quick ? "quick" : "full");
    printf("files in %s; kernel peer: %s; Linux %s, %ld CPUs\n", opt.dir, cg.label, un.release,
           sysconf(_SC_NPROCESSORS_ONLN));
    double t_start = now();

    /* probe: upager's page size for this budget */
    size_t up_ps = 0;
    if (opt.sys_mask & B(SYS_UPAGER)) {
        struct run *p = run_child(WL_PROBE, SYS_UPAGER, 0, -1, opt.budget, opt.data);
        if (!p->status[0]) {
            up_ps = p->r.page_size;
            printf("upager: page size %s, budget %s\n", fmt_size(b1, sizeof b1, (double)up_ps),
                   fmt_size(b2, sizeof b2, (double)p->r.budget));
        } else {
            problem("upager could not start: %s", p->status);
        }
    }
    fflush(stdout);

    nfloor_sizes = 0;
    const size_t fs[] = {4 * KiB, 64 * KiB, 128 * KiB, 2 * MiB};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++)
        if (fs[i] >= (size_t)sysconf(_SC_PAGESIZE))
            floor_sizes[nfloor_sizes++] = fs[i];
    bool have = false;
    for (int i = 0; i < nfloor_sizes; i++)
        have |= floor_sizes[i] == up_ps;
    if (up_ps && !have && up_ps <= 2 * MiB)
        floor_sizes[nfloor_sizes++] = up_ps;

    if (opt.floor)
        for (int rep = 0; rep < opt.reps; rep++)
            run_child(WL_FLOOR, SYS_MALLOC, rep, -1, opt.budget, opt.data);

    /* the input file of the file workload */
    if ((opt.wl_mask & B(WL_FILE))) {
        snprintf(input_file, sizeof input_file, "%s/upager-bench-input-XXXXXX", opt.dir);
        int fd = mkostemp(input_file, O_CLOEXEC);
        if (fd < 0)
            die("%s: %s", input_file, strerror(errno));
        uint64_t *buf = malloc(MiB);
        for (size_t off = 0; off < opt.data; off += MiB) {
            fill_val(buf, MiB / 8, off / 8);
            if (pwrite(fd, buf, MiB, (off_t)off) != (ssize_t)MiB)
                die("writing %s: %s", input_file, strerror(errno));
        }
        free(buf);
        fsync(fd);
        close(fd);
        input_path = input_file;
    }

    for (int rep = 0; rep < opt.reps; rep++) {
        for (int wl = 0; wl < NWL; wl++) {
            if (!(opt.wl_mask & B(wl)))
                continue;
            for (int sys = 0; sys < NSYS; sys++) {
                if (!(wls[wl].systems & B(sys)) || !(opt.sys_mask & B(sys)))
                    continue;
                bool skip = false;
                for (int i = 0; i < nruns; i++)
                    skip |= runs[i].wl == wl && runs[i].sys == sys && runs[i].frac < 0 && runs[i].timed_out;
                if (skip)
                    continue; /* it timed out once: the harness does not wait again */
                double t0 = now();
                struct run *ru = run_child(wl, sys, rep, -1, opt.budget, opt.data);
                fprintf(stderr, "  [%6.1fs] %-8s %-7s run %d: %.2f s%s\n", now() - t_start, wls[wl].name,
                        sys_name[sys], rep + 1, now() - t0, ru->status[0] ? " FAILED" : "");
            }
        }
    }
    if (input_file[0]) {
        unlink(input_file);
        input_file[0] = '\0';
    }

    if (opt.sweep) {
        for (int rep = 0; rep < opt.sweep_reps; rep++)
            for (int fi = 0; fi < opt.nfracs; fi++) {
                size_t b = (size_t)(opt.fracs[fi] * (double)opt.data);
                b = (b + MiB - 1) / MiB * MiB;
                for (int sys = 0; sys < NSYS; sys++) {
                    if ((sys != SYS_UPAGER && sys != SYS_KMMAP) || !(opt.sys_mask & B(sys)))
                        continue;
                    bool skip = false;
                    for (int i = 0; i < nruns; i++)
                        skip |= runs[i].wl == WL_SWEEP && runs[i].sys == sys && runs[i].frac == fi &&
                                runs[i].timed_out;
                    if (skip)
                        continue;
                    double t0 = now();
                    struct run *ru = run_child(WL_SWEEP, sys, rep, fi, b, opt.data);
                    fprintf(stderr, "  [%6.1fs] sweep %.3f %-7s run %d: %.2f s%s\n", now() - t_start,
                            opt.fracs[fi], sys_name[sys], rep + 1, now() - t0, ru->status[0] ? " FAILED" : "");
                }
            }
    }

    fprintf(tsv, "# upager_bench: budget %zu, data %zu, reps %d, kernel peer: %s\n", opt.budget, opt.data,
            opt.reps, cg.label);
    fprintf(tsv, "# kind\tworkload\tphase\tsystem\truns\tsec_median\tsec_min\tsec_max\tfaults\tmajor_faults\t"
                 "bytes_read\tbytes_written\tevictions\tpeak_rss\trss_at_start\tup_peak_resident\tpage_size\t"
                 "budget\tdata\tops\tx_malloc\tx_kmmap\tfailed_runs\tnote\n");
    print_table(tsv);
    fprintf(tsv, "# kind\tpage_size\tbare_us\tbare_min\tbare_max\tpread_us\tpread_min\tpread_max\tpread_fresh_us\n");
    summarise_floor(tsv);
    if (sw) {
        summarise_sweep(sw);
        fclose(sw);
    }
    fprintf(tsv, "# kind\tname\tvalue\ttarget\tverdict\n");
    targets(tsv);

    /* problems seen */
    for (int i = 0; i < nruns; i++) {
        struct run *ru = &runs[i];
        const char *wn = ru->wl < NWL ? wls[ru->wl].name : ru->wl == WL_SWEEP ? "sweep" : ru->wl == WL_FLOOR ? "floor" : "probe";
        if (ru->status[0] && ru->sys == SYS_UPAGER)
            problem("%s/%s run %d (budget %zu, data %zu): %s", wn, sys_name[ru->sys], ru->rep + 1, ru->budget,
                    ru->data, ru->status);
        else if (ru->status[0])
            note("%s/%s run %d (budget %zu, data %zu): %s", wn, sys_name[ru->sys], ru->rep + 1, ru->budget,
                 ru->data, ru->status);
        if (ru->sys == SYS_UPAGER && ru->r.up_io_errors)
            problem("%s/upager run %d: %" PRIu64 " store I/O errors", wn, ru->rep + 1, ru->r.up_io_errors);
    }
    /* the same data must give the same checksums on every system */
    for (int wl = 0; wl < NWL; wl++)
        for (int k = 0; phases_of[wl][k]; k++) {
            uint64_t ref = 0;
            int have_ref = 0;
            for (int i = 0; i < nruns; i++) {
                struct run *ru = &runs[i];
                if (ru->wl != wl || ru->status[0] || ru->sys == SYS_PREAD)
                    continue;
                const struct phase *p = find_phase(ru, phases_of[wl][k]);
                if (!p || (!p->sum && wl == WL_SORT && k < 2) || (wl == WL_SEQ && k == 0))
                    continue;
                if (!have_ref) {
                    ref = p->sum;
                    have_ref = 1;
                } else if (p->sum != ref) {
                    problem("%s/%s/%s run %d: checksum %016" PRIx64 " differs from %016" PRIx64, wls[wl].name,
                            phases_of[wl][k], sys_name[ru->sys], ru->rep + 1, p->sum, ref);
                }
            }
        }
    printf("\n== upager problems seen ==\n%s", problems[0] ? problems : "   none\n");
    if (notes[0])
        printf("\n== peer runs that failed ==\n%s", notes);
    printf("\ntotal time %.1f s; results in %s%s%s\n", now() - t_start, opt.out, sw ? " and " : "",
           sw ? opt.sweep_out : "");
    fclose(tsv);
    return problems[0] ? 1 : 0;
}
