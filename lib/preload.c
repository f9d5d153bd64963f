/*
 * preload.c - libupager-preload.so: the malloc family of an unmodified
 * program, on upager.
 *
 * Loaded with LD_PRELOAD (upager-run sets it up), this file defines
 * malloc, free, calloc, realloc, reallocarray, posix_memalign,
 * aligned_alloc, memalign, valloc, pvalloc and malloc_usable_size for the
 * whole process: every thread, every library, from the first allocation
 * the dynamic loader makes through the program's.  Blocks of at least
 * UPAGER_PRELOAD_MIN bytes are paged (upager_malloc and friends); smaller
 * ones stay with the system allocator, reached through glibc's exported
 * __libc_malloc family.  A free or realloc goes to the owner of the block,
 * which the address tells: upager's blocks are in its arena.
 *
 * What the C library allocates for itself stays with the system allocator,
 * whatever its size: a stdio buffer, a directory stream, the buffers of
 * getaddrinfo.  The C library hands those to the kernel from the inside
 * (its own read and write, which no interposed function sees), and a
 * paged one would fail there with EFAULT: a FILE's buffer lost at exit.
 * The call's return address tells: inside libc's text, the block is
 * libc's.  (A program's own buffers that libc grows, such as getline's,
 * start in the program and stay paged.)
 *
 * The library's own allocations (its metadata, made with malloc while it
 * serves one of these calls) go to the system allocator: a thread-local
 * flag marks the calls in progress, so that nothing recurses.  A failed
 * start-up (a bad UPAGER_* value) has printed its line; the program is
 * then stopped, as running it without the budget it asked for would be
 * worse.  The system calls that upager makes safe on paged memory
 * (interpose.c) come with this library too.
 *
 * Not used by libupager.so itself: only this preload defines these names.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define EXPORT __attribute__((visibility("default")))
#define TLS __thread __attribute__((tls_model("initial-exec")))

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);

/* The default of UPAGER_PRELOAD_MIN, chosen by measurement (README): low
 * enough that SQLite's page-cache objects (about 4.3K each) are paged. */
#define PRELOAD_MIN_DEFAULT ((size_t)4096)

static size_t min_size;      /* 0 until read from the environment       */
static TLS int busy;         /* this thread is inside the library        */
static size_t (*libc_usable)(void *); /* the system's malloc_usable_size */

/* Reads UPAGER_PRELOAD_MIN once.  A bad value is one line, then exit. */
static size_t threshold(void)
{
    size_t m = __atomic_load_n(&min_size, __ATOMIC_RELAXED);
    if (m)
        return m;
    const char *v = getenv("UPAGER_PRELOAD_MIN");
    uint64_t x = PRELOAD_MIN_DEFAULT;
    if (v && (upager__parse_size(v, &x) != 0 || x == 0)) {
        upager__say("UPAGER_PRELOAD_MIN=\"%s\": expected a size of at least 1, such as 4096 "
                    "or 64K",
                    v);
        _exit(127);
    }
    __atomic_store_n(&min_size, (size_t)x, __ATOMIC_RELAXED);
    return (size_t)x;
}

/* Whether p is a block of upager's (its arena), not of the system's. */
static bool paged(const void *p)
{
    return p && atomic_load_explicit(&upager__g.ready, memory_order_acquire) && IN_ARENA(p);
}

/* The C library's text: [libc_lo, libc_hi), found once. */
static uintptr_t libc_lo, libc_hi;
static int libc_found; /* 0 not yet, 1 found, -1 not found */

static int find_libc(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    uintptr_t target = (uintptr_t)data, lo = UINTPTR_MAX, hi = 0;
    bool hit = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        lo = a < lo ? a : lo;
        hi = b > hi ? b : hi;
        hit |= target >= a && target < b;
    }
    if (!hit)
        return 0;
    libc_lo = lo;
    libc_hi = hi;
    return 1;
}

/* Whether the call came from inside the C library. */
static bool from_libc(const void *caller)
{
    if (!libc_found) {
        busy = 1; /* dl_iterate_phdr may allocate */
        libc_found = dl_iterate_phdr(find_libc, (void *)(uintptr_t)&__libc_malloc) ? 1 : -1;
        busy = 0;
    }
    return libc_found == 1 && (uintptr_t)caller >= libc_lo && (uintptr_t)caller < libc_hi;
}

/* Whether a block of n bytes, asked for from `caller`, goes to upager;
 * starts upager on first use, and stops the program when it cannot. */
#define take(n) take_from((n), __builtin_return_address(0))
static bool take_from(size_t n, const void *caller)
{
    if (busy || n < threshold() || from_libc(caller))
        return false;
    busy = 1;
    int err = upager__ensure_init();
    busy = 0;
    if (err) /* its line is printed: the budget asked for cannot be kept */
        _exit(127);
    return true;
}

EXPORT void *malloc(size_t n)
{
    if (!take(n))
        return __libc_malloc(n);
    busy = 1;
    void *p = upager_malloc(n);
    busy = 0;
    return p;
}

EXPORT void *calloc(size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    if (!take(n))
        return __libc_calloc(nmemb, size);
    busy = 1;
    void *p = upager_calloc(nmemb, size);
    busy = 0;
    return p;
}

EXPORT void free(void *p)
{
    if (upager__in_parent_arena(p))
        return; /* a block of the parent's, in a child of fork: gone with it */
    if (!paged(p)) {
        __libc_free(p);
        return;
    }
    int was = busy;
    busy = 1;
    upager_free(p);
    busy = was;
}

static size_t usable(void *p)
{
    if (paged(p))
        return upager_usable_size(p);
    if (!libc_usable) {
        void *f = dlsym(RTLD_NEXT, "malloc_usable_size");
        __atomic_store_n(&libc_usable, (size_t(*)(void *))f, __ATOMIC_RELAXED);
    }
    return libc_usable ? libc_usable(p) : 0;
}

EXPORT void *realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (paged(p)) { /* a paged block stays paged */
        int was = busy;
        busy = 1;
        void *q = upager_realloc(p, n);
        busy = was;
        return q;
    }
    if (!take(n))
        return __libc_realloc(p, n);
    /* Grown past the threshold: the block moves to upager. */
    busy = 1;
    void *q = upager_malloc(n);
    busy = 0;
    if (!q)
        return NULL;
    size_t old = usable(p);
    memcpy(q, p, old < n ? old : n);
    __libc_free(p);
    return q;
}

EXPORT void *reallocarray(void *p, size_t nmemb, size_t size)
{
    size_t n;
    if (__builtin_mul_overflow(nmemb, size, &n)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, n);
}

/* The aligned family.  alignment: a power of two (checked by the callers
 * that must). */
static void *aligned(size_t alignment, size_t n, const void *caller)
{
    if (!take_from(n, caller))
        return __libc_memalign(alignment, n);
    busy = 1;
    void *p = upager_aligned_alloc(alignment, n);
    busy = 0;
    return p;
}

EXPORT int posix_memalign(void **out, size_t alignment, size_t n)
{
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0)
        return EINVAL;
    int saved = errno;
    void *p = aligned(alignment, n, __builtin_return_address(0));
    int err = p ? 0 : errno;
    errno = saved;
    if (p)
        *out = p;
    return err;
}

EXPORT void *aligned_alloc(size_t alignment, size_t n)
{
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(alignment, n, __builtin_return_address(0));
}

EXPORT void *memalign(size_t alignment, size_t n)
{
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return aligned(alignment, n, __builtin_return_address(0));
}

EXPORT void *valloc(size_t n)
{
    return aligned((size_t)sysconf(_SC_PAGESIZE), n, __builtin_return_address(0));
}

EXPORT void *pvalloc(size_t n)
{
    size_t ps = (size_t)sysconf(_SC_PAGESIZE);
    if (n > SIZE_MAX - ps) {
        errno = ENOMEM;
        return NULL;
    }
    return aligned(ps, n ? (n + ps - 1) & ~(ps - 1) : ps, __builtin_return_address(0));
}

EXPORT size_t malloc_usable_size(void *p)
{
    return p ? usable(p) : 0;
}
