/*
 * soak.c - the load of the "robust" suite, for minutes: many threads on
 * the paged arena, every block checked against a reference copy.
 *
 *   ./tests/soak [seconds] [threads]      default: 180 seconds, 8 threads
 *
 * The budget is 16 pages of 64K unless UPAGER_BUDGET / UPAGER_PAGE_SIZE
 * say otherwise; the run moves it between 1x, 1.5x and 2x that.  Each
 * thread keeps up to 2 MiB of live blocks, so the data is many times the
 * budget.  It prints its progress every ten seconds, then its figures
 * (operations per second, faults, evictions, I/O, peak resident memory
 * against the budget, errors found) and exits 1 when it found an error.
 *
 * Built by `make`, never run by `make check`.  Uses the public API only.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loadgen.h"
#include "upager.h"

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? strtod(argv[1], NULL) : 180;
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    struct upager_stats s;
    struct lg_result r;

    if (argc > 3 || seconds <= 0 || threads < 1 || threads > LG_MAX_THREADS) {
        fprintf(stderr, "usage: %s [seconds (default 180)] [threads (default 8)]\n",
                argv[0]);
        return 2;
    }
    setenv("UPAGER_PAGE_SIZE", "65536", 0);
    setenv("UPAGER_BUDGET", "1M", 0);
    int err = upager_init();
    if (err || (err = upager_get_stats(&s))) {
        fprintf(stderr, "soak: upager_init: %s\n", strerror(err));
        return 1;
    }
    struct lg_config c = {
        .threads = threads,
        .seconds = seconds,
        .thread_bytes = 32 * s.page_size,
        .max_blocks = 24,
        .shared_pages = 3,
        .nbudgets = 3,
        .budgets = { s.budget_bytes, s.budget_bytes / 2 * 3, 2 * s.budget_bytes },
        .verify_every = 400,
        .seed = (uint64_t)time(NULL),
    };
    const char *seed = getenv("UPAGER_TEST_SEED");
    if (seed && *seed)
        c.seed = strtoull(seed, NULL, 0);
    printf("soak: %d threads for %.0f s, page %zu KiB, budget %zu KiB (up to %zu KiB), "
           "%zu KiB live per thread, seed %#llx\n",
           threads, seconds, s.page_size >> 10, s.budget_bytes >> 10,
           c.budgets[2] >> 10, c.thread_bytes >> 10, (unsigned long long)c.seed);
    fflush(stdout);
    err = lg_run(&c, &r);
    if (err) {
        fprintf(stderr, "soak: the load could not start: %s\n", strerror(err));
        return 1;
    }
    lg_print("soak", &r);
    printf("soak: %s\n", r.errors ? "FAILED" : "no errors");
    return r.errors ? 1 : 0;
}
