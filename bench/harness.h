/*
 * harness.h - what the files of the upager benchmark share: the systems and
 * workloads, the options, the data and its checks, the result a child sends
 * its parent, and the parent's record of each run.
 *
 * The harness (harness.c) forks a child per run; the child runs one
 * workload (wl_*.c, floor.c) on one system and reports its phases through
 * a pipe; the parent aggregates them (harness.c) and prints the tables and
 * the targets (report.c).  main.c reads the options and runs the schedule.
 * Not a library: names shared between files start with bench_, the rest is
 * static to its file.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef UPAGER_BENCH_HARNESS_H
#define UPAGER_BENCH_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define GiB ((size_t)1 << 30)

/* ------------------------------------------------------------------------
 * Systems and workloads
 * ---------------------------------------------------------------------- */

enum { SYS_UPAGER, SYS_MALLOC, SYS_KMMAP, SYS_READ, SYS_PREAD, NSYS };
extern const char *const bench_sys_name[NSYS];
#define B(s) (1u << (s))

/* The workloads of the table, in the order they run and print; then the
 * runs that are not a workload of the table. */
enum { WL_SEQ, WL_SEQ2, WL_RAND, WL_HOTCOLD, WL_HOTCOLD2, WL_FIT, WL_SORT, WL_THR1, WL_THR2,
       WL_FILE, NWL, WL_SWEEP = NWL, WL_FLOOR, WL_DEVICE, WL_PROBE };

struct wl_def {
    const char *name;
    const char *title;
    unsigned systems;             /* B(SYS_...) of the systems it runs on     */
    const char *phases[4];        /* the phases it reports, NULL-terminated   */
    void (*run)(void);            /* in the child                             */
};
extern const struct wl_def bench_wls[NWL];
const char *bench_wl_name(int wl); /* also "sweep", "floor", ... */

/* ------------------------------------------------------------------------
 * Options (main.c fills them)
 * ---------------------------------------------------------------------- */

struct bench_options {
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
    bool device;          /* measure the device (O_DIRECT)                  */
    bool up_cgroup;       /* upager's runs in a cgroup of budget + budget/8 */
};
extern struct bench_options bench_opt;

/* ------------------------------------------------------------------------
 * Small helpers (harness.c)
 * ---------------------------------------------------------------------- */

double bench_now(void);
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
char *bench_fmt_size(char *buf, size_t len, double bytes);
int bench_tmpfile_fd(void);   /* an unlinked file in the bench directory */
double bench_median(double *v, int n); /* sorts v */

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
    double cpu;                   /* getrusage: user + system seconds, all threads    */
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

/* ------------------------------------------------------------------------
 * In the child (harness.c): the system, the sizes, the result, the phases
 * ---------------------------------------------------------------------- */

extern int bench_sys;
extern size_t bench_budget, bench_data;
extern struct result *bench_res;

void bench_child_send(void);
void bench_child_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_ph_begin(void);
struct phase *bench_ph_end(const char *name, uint64_t ops, uint64_t sum, uint64_t bad);

void *bench_mem_alloc(size_t n);
void bench_mem_free(void *p, size_t n);
void bench_advise_random(void *p, size_t n);

void bench_fill_val(uint64_t *a, size_t n, uint64_t first);
uint64_t bench_scan_val(const uint64_t *a, size_t n, uint64_t first, uint64_t *bad);
uint64_t bench_rand_reads(const uint64_t *a, size_t n, uint64_t count, struct rng *r, uint64_t *bad);

/* The workloads (wl_*.c, floor.c). */
void bench_wl_seq(void);
void bench_wl_seq2(void);
void bench_wl_rand(void);
void bench_wl_hotcold(void);
void bench_wl_hotcold2(void);
void bench_wl_fit(void);
void bench_wl_sort(void);
void bench_wl_thr1(void);
void bench_wl_thr2(void);
void bench_wl_file(void);
void bench_wl_sweep(void);
void bench_wl_floor(void);
void bench_wl_device(void);

/* ------------------------------------------------------------------------
 * In the parent (harness.c): the runs and their aggregates
 * ---------------------------------------------------------------------- */

struct run {
    int wl, sys, rep, frac; /* frac: sweep index, else -1 */
    size_t budget, data;
    struct result r;
    char status[240];       /* "" when fine */
    bool timed_out;
    long ru_maxrss_kib;
    size_t cg_limit;        /* the child's memory cgroup limit, 0: none   */
    uint64_t cg_peak;       /* its peak usage (v1 max_usage_in_bytes, v2 memory.peak) */
    uint64_t cg_oom_kills;  /* oom_kill of memory.oom_control / memory.events */
};

extern struct run *bench_runs;
extern int bench_nruns;

void bench_cg_detect(void);
const char *bench_cg_label(void);
int bench_cg_version(void);
void bench_install_signals(void);
struct run *bench_run_child(int wl, int sys, int rep, int frac, size_t budget, size_t data);

struct agg {
    int n;                  /* good runs */
    int failed, timeouts, missing;
    char status[240];       /* first failure */
    double med, min, max;   /* seconds */
    double faults, major, rd, wr, evictions; /* medians */
    double cpu;             /* median CPU seconds of the process (all threads) */
    double ops;
    uint64_t hwm, base, up_peak; /* max over runs */
    uint64_t page_size;
    size_t cg_limit;        /* the cgroup's limit, 0: none                  */
    uint64_t cg_peak;       /* max over every run, failed ones included     */
    uint64_t oom_kills;     /* sum over the runs                            */
};

const struct phase *bench_find_phase(const struct run *ru, const char *ph);
bool bench_aggregate(int wl, int sys, int frac, const char *ph, struct agg *a);
const char *bench_sys_label(int sys);

/* What went wrong, printed at the end: upager's problems, the peers' notes. */
void bench_problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void bench_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool bench_have_problems(void);
void bench_print_problems(void);

/* ------------------------------------------------------------------------
 * The file workload's input (wl_file.c), the floor (floor.c), the report
 * (report.c)
 * ---------------------------------------------------------------------- */

void bench_file_prepare(void);     /* writes the input file of data bytes */
void bench_file_drop_cache(void);  /* before each run: a cold cache      */
void bench_file_remove(void);      /* async-signal-safe                  */

void bench_floor_sizes(size_t up_ps); /* the standard sizes and upager's */
void bench_floor_summary(FILE *tsv);
void bench_device_summary(FILE *tsv);
/* The device's figures (medians over the runs), 0 when not measured. */
double bench_device_seq_mibps(void);
double bench_device_qd2(void); /* random 4K reads/s, two threads / one; 0: not measured */
/* A random 4K major fault without upager (floor.c: fault_mechanism), median
 * us; 0: not measured.  The kernel's own, and upager's steps done bare. */
double bench_device_kfault_us(void);
double bench_device_mech_us(void);
bool bench_device_rand_at(double bytes, double *median, double *mean); /* interpolated */
bool bench_device_rand_us(size_t size, double *median, double *p99);

struct floor_agg { size_t ps; double bare, pread, fresh; double bmin, bmax, pmin, pmax; };
const struct floor_agg *bench_floor_for(size_t ps);

void bench_print_table(FILE *tsv);
void bench_sweep_summary(FILE *sw);
void bench_targets(FILE *tsv);
void bench_targets13(FILE *tsv);

#endif
