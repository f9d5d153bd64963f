/*
 * report.c - the tables of the upager benchmark, from the runs the parent
 * collected: each workload per system and phase, the sweep, and the
 * targets.  Printed on stdout and written to the results TSV.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

void bench_print_table(FILE *tsv)
{
    char b1[32], b2[32];
    for (int wl = 0; wl < NWL; wl++) {
        if (!(bench_opt.wl_mask & B(wl)))
            continue;
        size_t data = wl == WL_FIT ? bench_opt.budget / 2 : bench_opt.data;
        printf("\n== %s: %s ==\n   data %s, budget %s\n", bench_wls[wl].name, bench_wls[wl].title,
               bench_fmt_size(b1, sizeof b1, (double)data), bench_fmt_size(b2, sizeof b2, (double)bench_opt.budget));
        printf("   %-9s %-28s %24s %18s %9s %9s %9s %7s %7s\n", "phase", "system",
               "time s median (min-max)", "faults (major)", "read MiB", "wrote MiB",
               "peak RSS", "x mall", "x kmmap");
        for (int k = 0; bench_wls[wl].phases[k]; k++) {
            const char *ph = bench_wls[wl].phases[k];
            struct agg am, ak;
            bool hm = bench_aggregate(wl, SYS_MALLOC, -1, ph, &am) && am.n;
            bool hk = bench_aggregate(wl, SYS_KMMAP, -1, ph, &ak) && ak.n;
            bool ak_timeout = !hk && bench_aggregate(wl, SYS_KMMAP, -1, ph, &ak) && ak.timeouts;
            for (int sys = 0; sys < NSYS; sys++) {
                if (!(bench_wls[wl].systems & B(sys)) || !(bench_opt.sys_mask & B(sys)))
                    continue;
                struct agg a;
                if (!bench_aggregate(wl, sys, -1, ph, &a))
                    continue;
                /* the seq phases: pread has no write, only pread has read-cold */
                if (wl == WL_SEQ && strcmp(ph, "read") != 0 && (sys == SYS_PREAD) != (strcmp(ph, "read-cold") == 0))
                    continue;
                if (!a.n) {
                    if (a.timeouts)
                        printf("   %-9s %-28s %24s   (timed out: the run was killed%s)\n", ph, bench_sys_label(sys),
                               "> timeout", bench_opt.reps > 1 ? " and not repeated" : "");
                    else if (a.failed)
                        printf("   %-9s %-28s FAILED: %s\n", ph, bench_sys_label(sys), a.status);
                    fprintf(tsv, "workload\t%s\t%s\t%s\t0\tNaN\tNaN\tNaN\t\t\t\t\t\t\t\t\t\t%zu\t%zu\t\t-\t-\t%d\t%s\n",
                            bench_wls[wl].name, ph, bench_sys_name[sys], bench_opt.budget, data, a.failed,
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
                    snprintf(xk, sizeof xk, "<%.2f", a.med / bench_opt.timeout);
                char note[64] = "";
                if (a.missing)
                    snprintf(note, sizeof note, " (%d of %d runs failed)", a.missing, a.missing + a.n);
                printf("   %-9s %-28s %24s %18s %9.1f %9.1f %9s %7s %7s%s\n", ph, bench_sys_label(sys), t,
                       fl, a.rd / MiB, a.wr / MiB, rss, xm, xk, note);
                fprintf(tsv,
                        "workload\t%s\t%s\t%s\t%d\t%.6f\t%.6f\t%.6f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t"
                        "%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%zu\t%zu\t%.0f\t%s\t%s\t%d\t%s\n",
                        bench_wls[wl].name, ph, bench_sys_name[sys], a.n, a.med, a.min, a.max, a.faults, a.major,
                        a.rd, a.wr, a.evictions, a.hwm, a.base, a.up_peak, a.page_size,
                        bench_opt.budget, data, a.ops, xm, xk, a.missing, a.missing ? a.status : "");
            }
        }
    }
}
void bench_sweep_summary(FILE *sw)
{
    if (!bench_opt.sweep)
        return;
    fprintf(sw, "# frac\tbudget\tsystem\tseq_MiBps\tseq_min\tseq_max\trand_Mreads_s\trand_min\trand_max\tpage_size\tpeak_rss\tfailed\n");
    printf("\n== sweep: throughput against budget / data (data %.0f MiB) ==\n", (double)bench_opt.data / MiB);
    printf("   %-6s %-9s %-28s %26s %28s %9s\n", "frac", "budget", "system",
           "seq read MiB/s (min-max)", "random reads M/s (min-max)", "peak RSS");
    for (int sys = 0; sys < NSYS; sys++) {
        if (sys != SYS_UPAGER && sys != SYS_KMMAP)
            continue;
        if (!(bench_opt.sys_mask & B(sys)))
            continue;
        for (int fi = 0; fi < bench_opt.nfracs; fi++) {
            struct agg s, r;
            if (!bench_aggregate(WL_SWEEP, sys, fi, "seqread", &s))
                continue;
            bench_aggregate(WL_SWEEP, sys, fi, "randread", &r);
            size_t budget = (size_t)(bench_opt.fracs[fi] * (double)bench_opt.data);
            budget = (budget + MiB - 1) / MiB * MiB;
            char b[32];
            if (!s.n) {
                printf("   %-6.3f %-9s %-28s FAILED: %s\n", bench_opt.fracs[fi], bench_fmt_size(b, sizeof b, (double)budget),
                       bench_sys_label(sys), s.status);
                fprintf(sw, "%.4f\t%zu\t%s\tNaN\tNaN\tNaN\tNaN\tNaN\tNaN\t0\t0\t%d\n", bench_opt.fracs[fi], budget,
                        bench_sys_name[sys], s.failed);
                continue;
            }
            double mb = (double)bench_opt.data / MiB, nr = (double)bench_opt.nrand_sweep / 1e6;
            printf("   %-6.3f %-9s %-28s %10.0f (%.0f-%.0f) %14.3f (%.3f-%.3f) %8.1fM\n", bench_opt.fracs[fi],
                   bench_fmt_size(b, sizeof b, (double)budget), bench_sys_label(sys), mb / s.med, mb / s.max,
                   mb / s.min, nr / r.med, nr / r.max, nr / r.min, (double)s.hwm / MiB);
            fprintf(sw, "%.4f\t%zu\t%s\t%.2f\t%.2f\t%.2f\t%.5f\t%.5f\t%.5f\t%" PRIu64 "\t%" PRIu64 "\t%d\n",
                    bench_opt.fracs[fi], budget, bench_sys_name[sys], mb / s.med, mb / s.max, mb / s.min, nr / r.med,
                    nr / r.max, nr / r.min, s.page_size, s.hwm, s.failed);
        }
        fprintf(sw, "\n\n"); /* one gnuplot data block per system */
    }
}

void bench_targets(FILE *tsv)
{
    printf("\n== issue-5 targets (upager) ==\n");
    struct agg a, b;
    char line[512];
    /* 1. random major fault / floor */
    if (bench_aggregate(WL_RAND, SYS_UPAGER, -1, "read", &a) && a.n && a.major > 0) {
        double us = a.med / a.major * 1e6;
        const struct floor_agg *f = bench_floor_for(a.page_size);
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
    if (bench_aggregate(WL_SEQ, SYS_UPAGER, -1, "read", &a) && a.n &&
        bench_aggregate(WL_SEQ, SYS_PREAD, -1, "read", &b) && b.n) {
        double x = b.med / a.med;
        printf("   [%s] sequential read 4x budget / raw pread (hot) >= 0.6: %.2f (%.0f vs %.0f MiB/s)\n",
               x >= 0.6 ? "met" : "NOT met", x, (double)bench_opt.data / MiB / a.med, (double)bench_opt.data / MiB / b.med);
        fprintf(tsv, "target\tseq_read_over_pread\t%.3f\t>=0.6\t%s\n", x, x >= 0.6 ? "met" : "not met");
    } else {
        printf("   [?] sequential read / raw pread: missing results\n");
    }
    /* 3. fits after first touch / malloc */
    if (bench_aggregate(WL_FIT, SYS_UPAGER, -1, "rw", &a) && a.n && bench_aggregate(WL_FIT, SYS_MALLOC, -1, "rw", &b) && b.n) {
        double x = a.med / b.med;
        printf("   [%s] data that fits, after first touch / malloc <= 1.05: %.3f (%.3f s vs %.3f s, %.0f faults)\n",
               x <= 1.05 ? "met" : "NOT met", x, a.med, b.med, a.faults);
        fprintf(tsv, "target\tfit_over_malloc\t%.3f\t<=1.05\t%s\n", x, x <= 1.05 ? "met" : "not met");
    } else {
        printf("   [?] fits / malloc: missing results\n");
    }
    /* 4. two threads / one thread */
    if (bench_aggregate(WL_THR1, SYS_UPAGER, -1, "read", &a) && a.n && bench_aggregate(WL_THR2, SYS_UPAGER, -1, "read", &b) && b.n) {
        double x = a.med / b.med;
        struct agg km1, km2;
        char peers[128] = "";
        if (bench_aggregate(WL_THR1, SYS_KMMAP, -1, "read", &km1) && km1.n &&
            bench_aggregate(WL_THR2, SYS_KMMAP, -1, "read", &km2) && km2.n)
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
    for (int i = 0; i < bench_nruns; i++) {
        struct run *ru = &bench_runs[i];
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
            wname = bench_wls[ru->wl].name;
        }
        if (ru->r.up_peak_resident > peak_res && ru->wl < NWL)
            peak_res = ru->r.up_peak_resident;
        if (ru->r.up_peak_resident > ru->budget)
            bench_problem("upager %s run %d (budget %zu): peak_resident_bytes %" PRIu64 " > budget",
                    ru->wl < NWL ? bench_wls[ru->wl].name : "sweep", ru->rep + 1, ru->budget, ru->r.up_peak_resident);
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
