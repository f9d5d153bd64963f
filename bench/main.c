/*
 * main.c - the upager benchmark: the same workloads on upager and on its
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
 * This file reads the options and runs the schedule; harness.c forks and
 * measures, wl_*.c and floor.c are the workloads, report.c the tables.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "harness.h"

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
            "  --workloads LIST   comma list of seq,seq2,rand,hotcold,hotcold2,fit,sort,thr1,thr2,file\n"
            "                     (default all)\n"
            "  --systems LIST     comma list of upager,malloc,kmmap,read,pread (default all)\n"
            "  --fracs LIST       sweep budgets as fractions of data (default 0.125,0.25,0.5,1,1.5)\n"
            "  --no-sweep, --no-floor, --no-device\n"
            "  --no-upager-cgroup upager's runs outside a memory cgroup (default: in one of budget + budget/8)\n"
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
            bench_die("unknown %s '%s'", what, t);
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
    bench_opt.floor = bench_opt.sweep = bench_opt.device = bench_opt.up_cgroup = true;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && (v || (bench_die("%s needs a value", name), 0)) && ++i)
        if (strcmp(a, "--quick") == 0)
            bench_opt.quick = true;
        else if (strcmp(a, "--no-sweep") == 0)
            bench_opt.sweep = false;
        else if (strcmp(a, "--no-floor") == 0)
            bench_opt.floor = false;
        else if (strcmp(a, "--no-device") == 0)
            bench_opt.device = false;
        else if (strcmp(a, "--no-upager-cgroup") == 0)
            bench_opt.up_cgroup = false;
        else if (strcmp(a, "--no-advice") == 0)
            bench_opt.no_advice = true;
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (ARG("--budget")) {
            if (parse_size(v, &budget) || budget < MiB)
                bench_die("bad --budget '%s'", v);
        } else if (ARG("--data")) {
            if (parse_size(v, &data) || data < MiB)
                bench_die("bad --data '%s'", v);
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
    bench_opt.budget = budget ? budget : bench_opt.quick ? 32 * MiB : 256 * MiB;
    bench_opt.budget = (bench_opt.budget + MiB - 1) / MiB * MiB;
    bench_opt.data = data ? data : 4 * bench_opt.budget;
    bench_opt.data = (bench_opt.data + MiB - 1) / MiB * MiB;
    bench_opt.reps = reps > 0 ? reps : 1;
    bench_opt.sweep_reps = sweep_reps > 0 ? sweep_reps : bench_opt.quick ? 1 : 3;
    bench_opt.nrand = nrand > 0 ? (uint64_t)nrand : bench_opt.quick ? 10000 : 100000;
    bench_opt.nrand_sweep = nsweep > 0 ? (uint64_t)nsweep : bench_opt.quick ? bench_opt.nrand : bench_opt.nrand / 2;
    bench_opt.timeout = timeout > 0 ? timeout : bench_opt.quick ? 15 : 120;
    bench_opt.out = out;
    const char *wl_names[NWL];
    for (int i = 0; i < NWL; i++)
        wl_names[i] = bench_wls[i].name;
    bench_opt.wl_mask = wl_list ? parse_list(wl_list, wl_names, NWL, "workload") : (1u << NWL) - 1;
    bench_opt.sys_mask = sys_list ? parse_list(sys_list, bench_sys_name, NSYS, "system") : (1u << NSYS) - 1;
    for (char *d = strdup(fracs), *t = strtok(d, ","); t && bench_opt.nfracs < 16; t = strtok(NULL, ",")) {
        double f = atof(t);
        if (f <= 0 || f > 16)
            bench_die("bad fraction '%s'", t);
        bench_opt.fracs[bench_opt.nfracs++] = f;
    }
    if (!dir)
        dir = getenv("UPAGER_DIR");
    if (!dir || !*dir)
        dir = "/var/tmp";
    snprintf(bench_opt.dir, sizeof bench_opt.dir, "%s", dir);
    if (access(bench_opt.dir, W_OK) != 0)
        bench_die("directory %s is not writable: %s", bench_opt.dir, strerror(errno));
    static char swbuf[PATH_MAX + 16];
    if (!sweep_out) {
        const char *sl = strrchr(out, '/');
        snprintf(swbuf, sizeof swbuf, "%.*ssweep.tsv", sl ? (int)(sl - out + 1) : 0, out);
        sweep_out = swbuf;
    }
    bench_opt.sweep_out = sweep_out;
    if (getenv("UPAGER_BUDGET"))
        fprintf(stderr, "upager_bench: UPAGER_BUDGET is ignored: the budget is set per run\n");

    FILE *tsv = fopen(bench_opt.out, "w");
    if (!tsv)
        bench_die("%s: %s", bench_opt.out, strerror(errno));
    FILE *sw = NULL;
    if (bench_opt.sweep && !(sw = fopen(bench_opt.sweep_out, "w")))
        bench_die("%s: %s", bench_opt.sweep_out, strerror(errno));

    bench_install_signals();

    bench_cg_detect();
    char b1[32], b2[32];
    struct utsname un;
    uname(&un);
    printf("upager benchmark: budget %s, data %s, %d runs each (median, min-max), %s mode\n",
           bench_fmt_size(b1, sizeof b1, (double)bench_opt.budget), bench_fmt_size(b2, sizeof b2, (double)bench_opt.data), bench_opt.reps,
           bench_opt.quick ? "quick" : "full");
    printf("files in %s; kernel peer: %s; Linux %s, %ld CPUs\n", bench_opt.dir, bench_cg_label(), un.release,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("upager's runs: %s\n", bench_opt.up_cgroup && bench_cg_version()
                                      ? "in a memory cgroup of budget + budget/8"
                                      : "unconstrained (no memory cgroup)");
    double t_start = bench_now();

    /* probe: upager's page size for this budget */
    size_t up_ps = 0;
    if (bench_opt.sys_mask & B(SYS_UPAGER)) {
        struct run *p = bench_run_child(WL_PROBE, SYS_UPAGER, 0, -1, bench_opt.budget, bench_opt.data);
        if (!p->status[0]) {
            up_ps = p->r.page_size;
            printf("upager: page size %s, budget %s\n", bench_fmt_size(b1, sizeof b1, (double)up_ps),
                   bench_fmt_size(b2, sizeof b2, (double)p->r.budget));
        } else {
            bench_problem("upager could not start: %s", p->status);
        }
    }
    fflush(stdout);

    bench_floor_sizes(up_ps);

    if (bench_opt.floor)
        for (int rep = 0; rep < bench_opt.reps; rep++)
            bench_run_child(WL_FLOOR, SYS_MALLOC, rep, -1, bench_opt.budget, bench_opt.data);
    if (bench_opt.device)
        for (int rep = 0; rep < bench_opt.reps; rep++) {
            double t0 = bench_now();
            struct run *ru = bench_run_child(WL_DEVICE, SYS_MALLOC, rep, -1, bench_opt.budget, bench_opt.data);
            fprintf(stderr, "  [%6.1fs] device          run %d: %.2f s%s\n", bench_now() - t_start, rep + 1,
                    bench_now() - t0, ru->status[0] ? " FAILED" : "");
        }

    if (bench_opt.wl_mask & B(WL_FILE))
        bench_file_prepare();

    for (int rep = 0; rep < bench_opt.reps; rep++) {
        for (int wl = 0; wl < NWL; wl++) {
            if (!(bench_opt.wl_mask & B(wl)))
                continue;
            for (int sys = 0; sys < NSYS; sys++) {
                if (!(bench_wls[wl].systems & B(sys)) || !(bench_opt.sys_mask & B(sys)))
                    continue;
                bool skip = false;
                for (int i = 0; i < bench_nruns; i++)
                    skip |= bench_runs[i].wl == wl && bench_runs[i].sys == sys && bench_runs[i].frac < 0 && bench_runs[i].timed_out;
                if (skip)
                    continue; /* it timed out once: the harness does not wait again */
                double t0 = bench_now();
                struct run *ru = bench_run_child(wl, sys, rep, -1, bench_opt.budget, bench_opt.data);
                fprintf(stderr, "  [%6.1fs] %-8s %-7s run %d: %.2f s%s\n", bench_now() - t_start, bench_wls[wl].name,
                        bench_sys_name[sys], rep + 1, bench_now() - t0, ru->status[0] ? " FAILED" : "");
            }
        }
    }
    bench_file_remove();

    if (bench_opt.sweep) {
        for (int rep = 0; rep < bench_opt.sweep_reps; rep++)
            for (int fi = 0; fi < bench_opt.nfracs; fi++) {
                size_t b = (size_t)(bench_opt.fracs[fi] * (double)bench_opt.data);
                b = (b + MiB - 1) / MiB * MiB;
                for (int sys = 0; sys < NSYS; sys++) {
                    if ((sys != SYS_UPAGER && sys != SYS_KMMAP) || !(bench_opt.sys_mask & B(sys)))
                        continue;
                    bool skip = false;
                    for (int i = 0; i < bench_nruns; i++)
                        skip |= bench_runs[i].wl == WL_SWEEP && bench_runs[i].sys == sys && bench_runs[i].frac == fi &&
                                bench_runs[i].timed_out;
                    if (skip)
                        continue;
                    double t0 = bench_now();
                    struct run *ru = bench_run_child(WL_SWEEP, sys, rep, fi, b, bench_opt.data);
                    fprintf(stderr, "  [%6.1fs] sweep %.3f %-7s run %d: %.2f s%s\n", bench_now() - t_start,
                            bench_opt.fracs[fi], bench_sys_name[sys], rep + 1, bench_now() - t0, ru->status[0] ? " FAILED" : "");
                }
            }
    }

    fprintf(tsv, "# upager_bench: budget %zu, data %zu, reps %d, kernel peer: %s\n", bench_opt.budget, bench_opt.data,
            bench_opt.reps, bench_cg_label());
    fprintf(tsv, "# kind\tworkload\tphase\tsystem\truns\tsec_median\tsec_min\tsec_max\tfaults\tmajor_faults\t"
                 "bytes_read\tbytes_written\tevictions\tpeak_rss\trss_at_start\tup_peak_resident\tpage_size\t"
                 "budget\tdata\tops\tx_malloc\tx_kmmap\tfailed_runs\tnote\tcg_limit\tcg_peak\toom_kills\tcpu_sec\n");
    bench_print_table(tsv);
    fprintf(tsv, "# kind\tpage_size\tbare_us\tbare_min\tbare_max\tpread_us\tpread_min\tpread_max\tpread_fresh_us\n");
    bench_floor_summary(tsv);
    fprintf(tsv, "# kind\tname\tsize\tmedian\tp99\tunit\n");
    bench_device_summary(tsv);
    if (sw) {
        bench_sweep_summary(sw);
        fclose(sw);
    }
    fprintf(tsv, "# kind\tname\tvalue\ttarget\tverdict\n");
    bench_targets(tsv);
    bench_targets13(tsv);

    /* problems seen */
    for (int i = 0; i < bench_nruns; i++) {
        struct run *ru = &bench_runs[i];
        const char *wn = bench_wl_name(ru->wl);
        if (ru->status[0] && ru->sys == SYS_UPAGER)
            bench_problem("%s/%s run %d (budget %zu, data %zu): %s", wn, bench_sys_name[ru->sys], ru->rep + 1, ru->budget,
                    ru->data, ru->status);
        else if (ru->status[0])
            bench_note("%s/%s run %d (budget %zu, data %zu): %s", wn, bench_sys_name[ru->sys], ru->rep + 1, ru->budget,
                 ru->data, ru->status);
        if (ru->sys == SYS_UPAGER && ru->r.up_io_errors)
            bench_problem("%s/upager run %d: %" PRIu64 " store I/O errors", wn, ru->rep + 1, ru->r.up_io_errors);
    }
    /* the same data must give the same checksums on every system */
    for (int wl = 0; wl < NWL; wl++)
        for (int k = 0; bench_wls[wl].phases[k]; k++) {
            uint64_t ref = 0;
            int have_ref = 0;
            for (int i = 0; i < bench_nruns; i++) {
                struct run *ru = &bench_runs[i];
                if (ru->wl != wl || ru->status[0] || ru->sys == SYS_PREAD)
                    continue;
                const struct phase *p = bench_find_phase(ru, bench_wls[wl].phases[k]);
                if (!p || (!p->sum && wl == WL_SORT && k < 2) || (wl == WL_SEQ && k == 0))
                    continue;
                if (!have_ref) {
                    ref = p->sum;
                    have_ref = 1;
                } else if (p->sum != ref) {
                    bench_problem("%s/%s/%s run %d: checksum %016" PRIx64 " differs from %016" PRIx64, bench_wls[wl].name,
                            bench_wls[wl].phases[k], bench_sys_name[ru->sys], ru->rep + 1, p->sum, ref);
                }
            }
        }
    bench_print_problems();
    printf("\ntotal time %.1f s; results in %s%s%s\n", bench_now() - t_start, bench_opt.out, sw ? " and " : "",
           sw ? bench_opt.sweep_out : "");
    fclose(tsv);
    return bench_have_problems() ? 1 : 0;
}
