/*
 * loadgen.h - many threads on the paged arena at once, checked against a
 * reference copy; shared by the "robust" suite (seconds) and tests/soak
 * (minutes).
 *
 * Each worker owns its blocks, each mirrored byte for byte in plain
 * memory, and mixes on them: allocation (malloc, calloc, aligned_alloc,
 * realloc) and free, writes and reads of random ranges, pins handed to
 * pread(2) and write(2), advice (DONTNEED, WILLNEED), and changes of the
 * budget (upager_set_budget and upager_configure("budget")).  All workers
 * also share a few pages, where each writes only its own words (word w
 * belongs to worker w % threads) and reads everyone's: a word holds either
 * zero or a value stamped with its owner.  The main thread samples the
 * statistics: resident memory must never exceed the largest budget used.
 *
 * Nothing here uses Check: failures are counted and the first is kept as
 * a message, for the caller to assert on or print.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef UPAGER_LOADGEN_H
#define UPAGER_LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#include "upager.h"

#define LG_MAX_THREADS 64
#define LG_MAX_BUDGETS 8

struct lg_config {
    int threads;                      /* workers, up to LG_MAX_THREADS          */
    double seconds;                   /* how long they run                      */
    size_t thread_bytes;              /* live bytes per worker, at most         */
    int max_blocks;                   /* live blocks per worker, at most        */
    size_t shared_pages;              /* pages all workers share                */
    size_t budgets[LG_MAX_BUDGETS];   /* budgets the run moves between (bytes)  */
    int nbudgets;                     /* 0: the budget never changes            */
    uint64_t seed;
    int verify_every;                 /* ops between full checks of a worker    */
    int quiet;                        /* 0: print progress every ~10 s (soak)   */
    int io_errors_ok;                 /* the store fails on purpose: EIO and    */
                                      /* ENOSPC are answers, not errors, and    */
                                      /* the budget may be exceeded             */
};

struct lg_result {
    uint64_t ops;                     /* operations done by all workers         */
    uint64_t allocs, frees, reallocs, writes, reads, shared_ops;
    uint64_t pins, pin_enomem, advices, budget_changes, budget_refused;
    uint64_t bytes_checked;           /* bytes compared with the reference      */
    uint64_t errors;                  /* mismatches and unexpected return codes */
    char first_error[512];
    double seconds;                   /* wall time of the run                   */
    size_t max_budget;                /* the largest budget in force            */
    size_t max_resident_sampled;      /* largest resident_bytes seen            */
    size_t max_rss_sampled;           /* largest VmRSS seen (bytes)             */
    uint64_t samples;
    struct upager_stats before, after;
};

/* Runs the load.  The library must be initialised, with a budget that is
 * budgets[0] when nbudgets > 0.  Returns 0 when the run could start (the
 * result says whether it found errors), or an errno. */
int lg_run(const struct lg_config *cfg, struct lg_result *res);

/* Prints the figures of a run, one item per line, each prefixed by tag. */
void lg_print(const char *tag, const struct lg_result *res);

#endif /* UPAGER_LOADGEN_H */
