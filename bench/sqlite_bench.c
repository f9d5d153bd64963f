/*
 * sqlite_bench.c - SQLite on upager_malloc against SQLite on the C
 * library's malloc, in the manner of SQLite's speedtest1.
 *
 *   sqlite_bench upager|system [ROWS]
 *
 * One configuration a process: sqlite3_config(SQLITE_CONFIG_MALLOC) must
 * come before SQLite initialises, so bench/run_alloc runs this twice (and
 * once more with upager at a quarter of the heap's peak, UPAGER_BUDGET set
 * by the caller).  "system" leaves SQLite's default allocator (malloc).
 * The database is in memory, so all of it is heap: tables and indexes live
 * in the page cache SQLite allocates with the configured malloc.
 *
 * The workload (ROWS default 200000): inserts into three tables (random
 * order, key order, and with a text index), unindexed range selects, an
 * index built, indexed range selects, updates by key and by range,
 * deletes, a VACUUM, and a final checksum that must be the same for every
 * configuration.  Prints the time of each step and the total, SQLite's
 * peak heap (sqlite3_status64 SQLITE_STATUS_MEMORY_USED) and, for upager,
 * the faults, evictions, bytes written and peak resident bytes.
 *
 * Built by make when SQLite is found; never run by make check.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upager.h"

static sqlite3 *db;
static int rows = 200000;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "sqlite_bench: %s: %s\n", what, db ? sqlite3_errmsg(db) : "");
    exit(1);
}

/* ---- upager as SQLite's allocator --------------------------------------- */

static void *up_malloc(int n) { return upager_malloc((size_t)n); }
static void up_free(void *p) { upager_free(p); }
static void *up_realloc(void *p, int n) { return upager_realloc(p, (size_t)n); }
static int up_size(void *p) { return (int)upager_usable_size(p); }
static int up_roundup(int n) { return (n + 15) & ~15; }
static int up_init(void *x) { (void)x; return upager_init() == 0 ? SQLITE_OK : SQLITE_NOMEM; }
static void up_shutdown(void *x) { (void)x; }

static const sqlite3_mem_methods up_methods = {
    up_malloc, up_free, up_realloc, up_size, up_roundup, up_init, up_shutdown, NULL,
};

/* ---- speedtest1's helpers ---------------------------------------------------- */

static uint64_t rstate = 0x12345678;
static unsigned rnd(void)
{
    rstate ^= rstate << 13;
    rstate ^= rstate >> 7;
    rstate ^= rstate << 17;
    return (unsigned)(rstate >> 16);
}

/* A number in words, as speedtest1's speedtest1_numbername. */
static int numname(unsigned n, char *out, int len)
{
    static const char *ones[] = { "zero", "one", "two", "three", "four", "five", "six",
                                  "seven", "eight", "nine", "ten", "eleven", "twelve",
                                  "thirteen", "fourteen", "fifteen", "sixteen",
                                  "seventeen", "eighteen", "nineteen" };
    static const char *tens[] = { "", "ten", "twenty", "thirty", "forty", "fifty",
                                  "sixty", "seventy", "eighty", "ninety" };
    int i = 0;
    if (n >= 1000000000) {
        i += numname(n / 1000000000, out + i, len - i);
        i += snprintf(out + i, (size_t)(len - i), " billion");
        n %= 1000000000;
    }
    if (n >= 1000000) {
        if (i && i < len - 1) out[i++] = ' ';
        i += numname(n / 1000000, out + i, len - i);
        i += snprintf(out + i, (size_t)(len - i), " million");
        n %= 1000000;
    }
    if (n >= 1000) {
        if (i && i < len - 1) out[i++] = ' ';
        i += numname(n / 1000, out + i, len - i);
        i += snprintf(out + i, (size_t)(len - i), " thousand");
        n %= 1000;
    }
    if (n >= 100) {
        if (i && i < len - 1) out[i++] = ' ';
        i += snprintf(out + i, (size_t)(len - i), "%s hundred", ones[n / 100]);
        n %= 100;
    }
    if (n >= 20) {
        if (i && i < len - 1) out[i++] = ' ';
        i += snprintf(out + i, (size_t)(len - i), "%s", tens[n / 10]);
        n %= 10;
    }
    if (n > 0) {
        if (i && i < len - 1) out[i++] = ' ';
        i += snprintf(out + i, (size_t)(len - i), "%s", ones[n]);
    }
    if (i == 0)
        i += snprintf(out, (size_t)len, "zero");
    out[i < len ? i : len - 1] = 0;
    return i < len ? i : len - 1;
}

static void exec(const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite_bench: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

static sqlite3_stmt *prep(const char *sql)
{
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
        die(sql);
    return s;
}

static void run(sqlite3_stmt *s)
{
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        ;
    if (rc != SQLITE_DONE)
        die("step");
    sqlite3_reset(s);
}

static double t_step;
static double total;
static void step_begin(void) { t_step = now(); }
static void step_end(const char *name)
{
    double t = now() - t_step;
    total += t;
    printf("  %-40s %8.3f s\n", name, t);
    fflush(stdout);
}

/* ---- the workload --------------------------------------------------------------- */

static void insert(const char *table, int ordered)
{
    char sql[128], text[200];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES(?1,?2,?3)", table);
    sqlite3_stmt *s = prep(sql);
    exec("BEGIN");
    for (int i = 1; i <= rows; i++) {
        unsigned x = rnd() % ((unsigned)rows * 2);
        int n = numname(x, text, sizeof text);
        sqlite3_bind_int64(s, 1, ordered ? i : (sqlite3_int64)(rnd() % 1000000000u));
        sqlite3_bind_int(s, 2, (int)x);
        sqlite3_bind_text(s, 3, text, n, SQLITE_STATIC);
        run(s);
    }
    exec("COMMIT");
    sqlite3_finalize(s);
}

static void select_range(int n, int width)
{
    sqlite3_stmt *s = prep("SELECT count(*), avg(b), sum(length(c)) FROM t1 "
                           "WHERE b BETWEEN ?1 AND ?2");
    for (int i = 0; i < n; i++) {
        int lo = (int)(rnd() % ((unsigned)rows * 2));
        sqlite3_bind_int(s, 1, lo);
        sqlite3_bind_int(s, 2, lo + width);
        run(s);
    }
    sqlite3_finalize(s);
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "upager") && strcmp(argv[1], "system"))) {
        fprintf(stderr, "usage: sqlite_bench upager|system [ROWS]\n");
        return 2;
    }
    int up = !strcmp(argv[1], "upager");
    if (argc > 2)
        rows = atoi(argv[2]);
    if (rows < 100)
        rows = 100;
    if (sqlite3_config(SQLITE_CONFIG_SINGLETHREAD) != SQLITE_OK)
        die("SQLITE_CONFIG_SINGLETHREAD");
    if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 1) != SQLITE_OK)
        die("SQLITE_CONFIG_MEMSTATUS");
    if (up && sqlite3_config(SQLITE_CONFIG_MALLOC, &up_methods) != SQLITE_OK)
        die("SQLITE_CONFIG_MALLOC");
    if (sqlite3_initialize() != SQLITE_OK)
        die("sqlite3_initialize");
    if (sqlite3_open(":memory:", &db) != SQLITE_OK)
        die("open");
    exec("PRAGMA cache_size=-1000000"); /* an in-memory db: all of it in the cache */
    printf("sqlite_bench %s, %d rows, SQLite %s\n", argv[1], rows, sqlite3_libversion());

    step_begin();
    exec("CREATE TABLE t1(a INTEGER, b INTEGER, c TEXT)");
    exec("CREATE TABLE t2(a INTEGER PRIMARY KEY, b INTEGER, c TEXT)");
    exec("CREATE TABLE t3(a INTEGER, b INTEGER, c TEXT)");
    exec("CREATE INDEX t3c ON t3(c)");
    insert("t1", 0);
    step_end("insert, random order, no index");
    step_begin();
    insert("t2", 1);
    step_end("insert, key order (INTEGER PRIMARY KEY)");
    step_begin();
    insert("t3", 0);
    step_end("insert into a table with a text index");

    step_begin();
    select_range(40, rows / 10);
    step_end("unindexed range selects (40)");

    step_begin();
    exec("CREATE INDEX t1b ON t1(b)");
    step_end("CREATE INDEX on t1(b)");

    step_begin();
    select_range(rows / 4, 20);
    step_end("indexed range selects");

    step_begin();
    {
        sqlite3_stmt *s = prep("UPDATE t2 SET b=b*2, c=c||'x' WHERE a BETWEEN ?1 AND ?1+9");
        exec("BEGIN");
        for (int i = 0; i < rows / 10; i++) {
            sqlite3_bind_int(s, 1, (int)(rnd() % (unsigned)rows));
            run(s);
        }
        exec("COMMIT");
        sqlite3_finalize(s);
    }
    exec("UPDATE t1 SET c=substr(c,1,20) WHERE b%5=0");
    step_end("updates by key and by range");

    step_begin();
    exec("DELETE FROM t3 WHERE b%3=0");
    exec("DELETE FROM t1 WHERE a%4=0");
    step_end("deletes");

    step_begin();
    exec("VACUUM");
    step_end("VACUUM");

    step_begin();
    sqlite3_stmt *s = prep("SELECT (SELECT count(*)||'/'||sum(b)||'/'||sum(length(c)) FROM t1)"
                           "||' '||(SELECT count(*)||'/'||sum(b) FROM t2)"
                           "||' '||(SELECT count(*)||'/'||sum(length(c)) FROM t3)");
    if (sqlite3_step(s) != SQLITE_ROW)
        die("checksum");
    char sum[256];
    snprintf(sum, sizeof sum, "%s", (const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    exec("PRAGMA integrity_check");
    step_end("checksum and integrity_check");

    sqlite3_int64 cur, hi;
    sqlite3_status64(SQLITE_STATUS_MEMORY_USED, &cur, &hi, 0);
    sqlite3_close(db);
    db = NULL;
    printf("total %.3f s\n", total);
    printf("checksum %s\n", sum);
    printf("heap peak %lld bytes\n", (long long)hi);
    if (up) {
        struct upager_stats st;
        upager_get_stats(&st);
        printf("upager: budget %zu, page %zu, faults %llu (major %llu), evictions %llu, "
               "written %llu bytes, peak resident %zu\n",
               st.budget_bytes, st.page_size, (unsigned long long)st.faults,
               (unsigned long long)st.major_faults, (unsigned long long)st.evictions,
               (unsigned long long)st.bytes_written, st.peak_resident_bytes);
    }
    return 0;
}
