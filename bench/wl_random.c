/*
 * wl_random.c - the random-access workloads: rand (random reads over one
 * array), hotcold and hotcold2 (a hot set between chunks of a cold scan, from
 * one thread or two), thr1 and thr2
 * (random reads on two arrays from one thread or two), and the sweep's
 * runs (a sequential and a random read at one budget).  Run in the child
 * by harness.c.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "upager.h"
#include "harness.h"

void bench_wl_rand(void)
{
    size_t n = bench_data / 8;
    uint64_t *a = bench_mem_alloc(bench_data);
    if (!a)
        return;
    bench_fill_val(a, n, 0);
    bench_advise_random(a, bench_data);
    struct rng r = {SEED};
    uint64_t bad = 0;
    bench_ph_begin();
    uint64_t s = bench_rand_reads(a, n, bench_opt.nrand, &r, &bad);
    bench_ph_end("read", bench_opt.nrand, s, bad);
    bench_mem_free(a, bench_data);
}

/* One thread's share of hotcold: words [h0, h1) of the hot array read
 * between chunks of words [c0, c1) of the cold array, for `rounds` rounds. */
struct hc_part {
    const uint64_t *h, *c;
    size_t h0, h1, c0, c1, chunk, rounds;
    uint64_t sum, bad;
};

static void *hc_main(void *p)
{
    struct hc_part *t = p;
    uint64_t s = 0, bad = 0;
    size_t cpos = t->c0;
    for (size_t r = 0; r < t->rounds; r++) {
        /* the hot set: one word of each cache line, checked */
        for (size_t i = t->h0; i < t->h1; i += 8) {
            uint64_t v = t->h[i];
            s += v;
            bad += v != val(i);
        }
        size_t len = t->chunk < t->c1 - cpos ? t->chunk : t->c1 - cpos;
        s += bench_scan_val(t->c + cpos, len, cpos, &bad);
        cpos += len;
        if (cpos == t->c1)
            cpos = t->c0;
    }
    t->sum = s;
    t->bad = bad;
    return NULL;
}

/* hotcold on nthreads threads, each on its own share of both arrays, the
 * same rounds: the same reads in all whatever the count. */
static void run_hotcold(int nthreads)
{
    size_t hot = bench_budget / 2, cold = bench_data;
    size_t hn = hot / 8, cn = cold / 8;
    size_t chunk = bench_budget / 4 / 8; /* words of cold per round, in all */
    uint64_t *c = bench_mem_alloc(cold);
    uint64_t *h = c ? bench_mem_alloc(hot) : NULL;
    if (!h)
        return;
    bench_fill_val(c, cn, 0);
    bench_fill_val(h, hn, 0);
    size_t rounds = 2 * ((cn + chunk - 1) / chunk);
    struct hc_part t[2];
    for (int i = 0; i < nthreads; i++) {
        /* shares of the hot set in whole cache lines */
        size_t hl = hn / 8;
        t[i] = (struct hc_part){h, c, hl * (size_t)i / (size_t)nthreads * 8,
                                hl * (size_t)(i + 1) / (size_t)nthreads * 8,
                                cn * (size_t)i / (size_t)nthreads, cn * (size_t)(i + 1) / (size_t)nthreads,
                                chunk / (size_t)nthreads, rounds, 0, 0};
    }
    bench_ph_begin();
    if (nthreads == 1) {
        hc_main(&t[0]);
    } else {
        pthread_t th[2];
        for (int i = 0; i < nthreads; i++)
            if (pthread_create(&th[i], NULL, hc_main, &t[i]) != 0) {
                bench_child_fail("pthread_create");
                return;
            }
        for (int i = 0; i < nthreads; i++)
            pthread_join(th[i], NULL);
    }
    uint64_t s = 0, bad = 0;
    for (int i = 0; i < nthreads; i++) {
        s += t[i].sum;
        bad += t[i].bad;
    }
    bench_ph_end("mixed", rounds, s, bad);
    bench_mem_free(h, hot);
    bench_mem_free(c, cold);
}

void bench_wl_hotcold(void) { run_hotcold(1); }
void bench_wl_hotcold2(void) { run_hotcold(2); }

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
    t->sum = bench_rand_reads(t->a, t->n, t->count, &r, &t->bad);
    return NULL;
}

static void run_thr(int nthreads)
{
    size_t half = bench_data / 2, n = half / 8;
    uint64_t *a = bench_mem_alloc(half);
    uint64_t *b = a ? bench_mem_alloc(half) : NULL;
    if (!b)
        return;
    bench_fill_val(a, n, 0);
    bench_fill_val(b, n, 0);
    bench_advise_random(a, half);
    bench_advise_random(b, half);
    uint64_t per = bench_opt.nrand / 2;
    struct thr_arg t[2] = {{a, n, per, SEED, 0, 0}, {b, n, per, SEED * 3 + 1, 0, 0}};
    bench_ph_begin();
    if (nthreads == 2) {
        pthread_t th[2];
        for (int i = 0; i < 2; i++)
            if (pthread_create(&th[i], NULL, thr_main, &t[i]) != 0) {
                bench_child_fail("pthread_create");
                return;
            }
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
    } else {
        /* the same accesses, interleaved in one thread */
        struct rng r0 = {t[0].seed}, r1 = {t[1].seed};
        for (uint64_t k = 0; k < per; k++) {
            t[0].sum += bench_rand_reads(a, n, 1, &r0, &t[0].bad);
            t[1].sum += bench_rand_reads(b, n, 1, &r1, &t[1].bad);
        }
    }
    bench_ph_end("read", 2 * per, t[0].sum + t[1].sum, t[0].bad + t[1].bad);
    bench_mem_free(b, half);
    bench_mem_free(a, half);
}

void bench_wl_sweep(void)
{
    size_t n = bench_data / 8;
    uint64_t *a = bench_mem_alloc(bench_data);
    if (!a)
        return;
    bench_fill_val(a, n, 0);
    uint64_t bad = 0;
    bench_ph_begin();
    uint64_t s = bench_scan_val(a, n, 0, &bad);
    bench_ph_end("seqread", bench_data, s, bad);
    struct rng r = {SEED};
    bad = 0;
    bench_advise_random(a, bench_data);
    bench_ph_begin();
    s = bench_rand_reads(a, n, bench_opt.nrand_sweep, &r, &bad);
    bench_ph_end("randread", bench_opt.nrand_sweep, s, bad);
    bench_mem_free(a, bench_data);
}


void bench_wl_thr1(void) { run_thr(1); }
void bench_wl_thr2(void) { run_thr(2); }
