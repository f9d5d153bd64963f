/*
 * big_array.c - an array several times larger than the memory budget,
 * used as if it were ordinary memory.
 *
 *     big_array [MiB]                  (default 256 MiB, budget 32 MiB)
 *
 * The array is filled, then summed twice.  The statistics after each pass
 * show what the pager did: the fill writes every page (dirty pages are
 * written to the store when evicted); the sums only read, so the pages
 * they evict are clean and dropped without writing anything.
 * UPAGER_BUDGET in the environment overrides the budget set here.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <upager.h>

#define MIB (1024.0 * 1024.0)

static void report(const char *pass)
{
    struct upager_stats st;
    upager_get_stats(&st);
    printf("%-6s faults %8llu  evictions %8llu  writebacks %8llu  "
           "read %7.1f MiB  written %7.1f MiB  peak %5.1f/%.1f MiB\n",
           pass, (unsigned long long)st.faults,
           (unsigned long long)st.evictions, (unsigned long long)st.writebacks,
           st.bytes_read / MIB, st.bytes_written / MIB,
           st.peak_resident_bytes / MIB, st.budget_bytes / MIB);
}

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 256;
    if (mib == 0 || mib > (SIZE_MAX >> 22)) {
        fprintf(stderr, "usage: %s [MiB]\n", argv[0]);
        return 2;
    }
    size_t n = (mib << 20) / sizeof(uint64_t);

    upager_configure("budget", "32M");  /* the environment may override */

    /* upager_malloc is malloc: NULL and errno on failure.  It also reports
     * a configuration that cannot work, e.g. UPAGER_BUDGET=12Q. */
    uint64_t *a = upager_malloc(n * sizeof(uint64_t));
    if (a == NULL) {
        perror("big_array: upager_malloc");
        return 1;
    }

    for (size_t i = 0; i < n; i++)
        a[i] = i * 3 + 1;
    report("fill");

    /* sum of 3i + 1 for i < n */
    uint64_t expect = 3 * ((uint64_t)n * (n - 1) / 2) + n;
    int bad = 0;
    for (int pass = 1; pass <= 2; pass++) {
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += a[i];
        report(pass == 1 ? "sum 1" : "sum 2");
        if (sum != expect) {
            printf("FAILED: sum %llu, expected %llu\n",
                   (unsigned long long)sum, (unsigned long long)expect);
            bad = 1;
        }
    }
    if (!bad)
        printf("OK: %zu MiB array, sums match\n", mib);
    upager_free(a);
    return bad;
}
