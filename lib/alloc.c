/*
 * alloc.c - the malloc-like API on the arena.
 *
 * Small blocks (up to a quarter page) are packed by size class into slabs of
 * one arena page; larger ones are runs of whole pages.  All metadata (slab
 * bitmaps, run descriptors) lives in ordinary memory outside the arena, so
 * free never faults a page in, and the page table tells for any address who
 * owns it.  A slab that becomes empty and a freed large block give their
 * pages back at once (frames dropped, store space punched): a later access
 * there is a genuine fault.
 *
 * Everything runs under alloc_lock; arena memory is touched only outside it
 * (calloc's zeroing, realloc's copy), as a lock held while touching arena
 * memory could be needed by the fault it causes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define NCLASSES 64

struct slab {
    size_t page;             /* arena page of the slab                 */
    uint32_t cls;            /* size class                             */
    uint32_t nfree;          /* free slots                             */
    struct slab *prev, *next;/* partial list of the class              */
    uint64_t bits[];         /* bit set: slot in use                   */
};

struct large {
    size_t first, npages;    /* the run of arena pages                 */
};

static uint32_t class_size[NCLASSES]; /* ascending, multiples of 16     */
static uint32_t class_slots[NCLASSES];
static unsigned nclasses;
static size_t max_small;              /* largest small block            */
static struct slab *partial[NCLASSES];

void upager__alloc_init(void)
{
    size_t ps = upager__g.page_size;
    /* 16..128 by 16, then four classes per doubling, up to ps / 4. */
    nclasses = 0;
    for (uint32_t s = 16; s <= 128 && s <= ps / 4; s += 16)
        class_size[nclasses++] = s;
    for (uint32_t base = 128; nclasses < NCLASSES; base *= 2) {
        for (uint32_t k = 1; k <= 4 && nclasses < NCLASSES; k++) {
            uint32_t s = base + k * base / 4;
            if (s > ps / 4)
                goto done;
            class_size[nclasses++] = s;
        }
    }
done:
    for (unsigned c = 0; c < nclasses; c++) {
        class_slots[c] = (uint32_t)(ps / class_size[c]);
        partial[c] = NULL;
    }
    max_small = class_size[nclasses - 1];
}

static unsigned class_of(size_t size, size_t align)
{
    for (unsigned c = 0; c < nclasses; c++) {
        if (class_size[c] >= size && class_size[c] % align == 0)
            return c;
    }
    return NCLASSES;
}

static void die(const char *what, const void *ptr)
{
    char hex[24];
    upager__say_safe(what, upager__hex(hex, (uintptr_t)ptr), "");
    abort();
}

static void list_push(unsigned c, struct slab *s)
{
    s->prev = NULL;
    s->next = partial[c];
    if (s->next)
        s->next->prev = s;
    partial[c] = s;
}

static void list_remove(unsigned c, struct slab *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        partial[c] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* Precondition: alloc_lock held. */
static void *small_alloc(unsigned c)
{
    struct slab *s = partial[c];
    if (!s) {
        size_t nwords = (class_slots[c] + 63) / 64;
        s = calloc(1, sizeof *s + nwords * sizeof(uint64_t));
        if (!s)
            return NULL;
        if (upager__space_alloc(1, 0, false, &s->page) != 0) {
            free(s);
            return NULL;
        }
        s->cls = c;
        s->nfree = class_slots[c];
        upager__pages_make_live(s->page, 1, OWNER_SLAB, s, 0);
        list_push(c, s);
    }
    size_t nwords = (class_slots[c] + 63) / 64;
    for (size_t w = 0; w < nwords; w++) {
        if (s->bits[w] == UINT64_MAX)
            continue;
        unsigned b = (unsigned)__builtin_ctzll(~s->bits[w]);
        size_t slot = w * 64 + b;
        if (slot >= class_slots[c])
            break;
        s->bits[w] |= 1ull << b;
        if (--s->nfree == 0)
            list_remove(c, s);
        atomic_fetch_add_explicit(&upager__g.st.allocated_bytes, class_size[c],
                                  memory_order_relaxed);
        return PAGE_ADDR(s->page) + slot * class_size[c];
    }
    die("slab bookkeeping is inconsistent at ", PAGE_ADDR(s->page));
    return NULL;
}

/* Precondition: alloc_lock held. */
static void *large_alloc(size_t size, size_t align)
{
    size_t ps = upager__g.page_size;
    if (size > SIZE_MAX - ps)
        return NULL;
    struct large *l = malloc(sizeof *l);
    if (!l)
        return NULL;
    l->npages = (size + ps - 1) / ps;
    if (upager__space_alloc(l->npages, align, true, &l->first) != 0) {
        free(l);
        return NULL;
    }
    upager__pages_make_live(l->first, l->npages, OWNER_LARGE, l, 0);
    atomic_fetch_add_explicit(&upager__g.st.allocated_bytes, l->npages * ps,
                              memory_order_relaxed);
    return PAGE_ADDR(l->first);
}

static void *alloc(size_t size, size_t align)
{
    int err = upager__ensure_init();
    if (err) {
        errno = err;
        return NULL;
    }
    if (size == 0)
        size = 1;
    void *p = NULL;
    unsigned c = size <= max_small ? class_of(size, align) : NCLASSES;
    pthread_mutex_lock(&upager__g.alloc_lock);
    if (c < NCLASSES)
        p = small_alloc(c);
    else
        p = large_alloc(size, align);
    pthread_mutex_unlock(&upager__g.alloc_lock);
    if (!p)
        errno = ENOMEM;
    return p;
}

void *upager_malloc(size_t size)
{
    return alloc(size, 16);
}

void *upager_calloc(size_t nmemb, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(nmemb, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = alloc(total, 16);
    /* Large blocks are fresh pages, which read as zeros; small slots may
     * have been used before.  Zeroed outside the lock: it may fault. */
    if (p && total <= max_small)
        memset(p, 0, total);
    return p;
}

void *upager_aligned_alloc(size_t alignment, size_t size)
{
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
        errno = EINVAL;
        return NULL;
    }
    return alloc(size, alignment < 16 ? 16 : alignment);
}

/* Looks up the block at ptr: its usable size, or aborts when ptr is not the
 * start of a live block.  Precondition: alloc_lock held. */
static size_t block_size(const void *ptr, const char *fn)
{
    struct upager__global *g = &upager__g;
    if (!atomic_load(&g->ready) || !IN_ARENA(ptr)) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s(): pointer not returned by upager: ", fn);
        die(msg, ptr);
    }
    struct upager__page *p = PG(ADDR_PAGE(ptr));
    if (p->kind == OWNER_SLAB) {
        struct slab *s = p->owner;
        size_t off = (size_t)((const char *)ptr - PAGE_ADDR(s->page));
        size_t sz = class_size[s->cls];
        size_t slot = off / sz;
        if (off % sz == 0 && (s->bits[slot / 64] >> (slot % 64) & 1))
            return sz;
    } else if (p->kind == OWNER_LARGE) {
        struct large *l = p->owner;
        if (ptr == PAGE_ADDR(l->first))
            return l->npages * g->page_size;
    } else if (p->kind == OWNER_MAP) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s(): a file mapping (use upager_unmap): ", fn);
        die(msg, ptr);
    }
    char msg[96];
    snprintf(msg, sizeof msg, "%s(): double free or pointer not returned by upager: ", fn);
    die(msg, ptr);
    return 0;
}

/* Precondition: alloc_lock held, ptr a live block. */
static void block_free(void *ptr)
{
    struct upager__global *g = &upager__g;
    struct upager__page *p = PG(ADDR_PAGE(ptr));
    if (p->kind == OWNER_SLAB) {
        struct slab *s = p->owner;
        unsigned c = s->cls;
        size_t slot = (size_t)((char *)ptr - PAGE_ADDR(s->page)) / class_size[c];
        s->bits[slot / 64] &= ~(1ull << (slot % 64));
        atomic_fetch_sub_explicit(&g->st.allocated_bytes, class_size[c],
                                  memory_order_relaxed);
        if (++s->nfree == class_slots[c]) { /* empty: give the page back */
            list_remove(c, s);
            if (upager__pages_release(s->page, 1, true) == 0)
                upager__space_free(s->page, 1);
            free(s);
        } else if (s->nfree == 1) {
            list_push(c, s);
        }
    } else {
        struct large *l = p->owner;
        if (upager__pages_release(l->first, l->npages, true) == 0)
            upager__space_free(l->first, l->npages);
        atomic_fetch_sub_explicit(&g->st.allocated_bytes, l->npages * g->page_size,
                                  memory_order_relaxed);
        free(l);
    }
}

void upager_free(void *ptr)
{
    if (!ptr)
        return;
    pthread_mutex_lock(&upager__g.alloc_lock);
    block_size(ptr, "upager_free");
    block_free(ptr);
    pthread_mutex_unlock(&upager__g.alloc_lock);
}

size_t upager_usable_size(const void *ptr)
{
    if (!ptr)
        return 0;
    pthread_mutex_lock(&upager__g.alloc_lock);
    size_t n = block_size(ptr, "upager_usable_size");
    pthread_mutex_unlock(&upager__g.alloc_lock);
    return n;
}

void *upager_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return upager_malloc(size);
    if (size == 0) {
        upager_free(ptr);
        return NULL;
    }
    struct upager__global *g = &upager__g;
    pthread_mutex_lock(&g->alloc_lock);
    size_t old = block_size(ptr, "upager_realloc");
    struct upager__page *p = PG(ADDR_PAGE(ptr));
    if (p->kind == OWNER_LARGE && size > max_small && size <= old) {
        /* Shrink in place, giving back the pages past the new end. */
        struct large *l = p->owner;
        size_t keep = (size + g->page_size - 1) / g->page_size;
        if (keep < l->npages) {
            if (upager__pages_release(l->first + keep, l->npages - keep, true) == 0)
                upager__space_free(l->first + keep, l->npages - keep);
            atomic_fetch_sub_explicit(&g->st.allocated_bytes,
                                      (l->npages - keep) * g->page_size,
                                      memory_order_relaxed);
            l->npages = keep;
        }
        pthread_mutex_unlock(&g->alloc_lock);
        return ptr;
    }
    if (p->kind == OWNER_SLAB && size <= old && class_of(size, 16) == ((struct slab *)p->owner)->cls) {
        pthread_mutex_unlock(&g->alloc_lock);
        return ptr;
    }
    pthread_mutex_unlock(&g->alloc_lock);
    void *q = upager_malloc(size);
    if (!q)
        return NULL;
    memcpy(q, ptr, old < size ? old : size); /* outside the lock: it faults */
    upager_free(ptr);
    return q;
}
