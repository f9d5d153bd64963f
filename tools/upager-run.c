/*
 * upager-run - run an unmodified program with its memory paged by upager.
 *
 *   upager-run [--budget SIZE] [--page-size SIZE] [--dir DIR] [--store URL]
 *              [--preload-min SIZE] [--stats] [--] PROGRAM [ARGS...]
 *
 * Sets the UPAGER_* environment from the options, puts libupager-preload.so
 * in front of LD_PRELOAD, and execs the program, whose exit status is then
 * upager-run's.  Like env(1) and nice(1) it only sets up: the program runs
 * in this process.  Options are checked here, so that a bad one is one line
 * and the program never starts; the library checks the environment the
 * same way.  Exit status 125 for a bad option, 126/127 when the program
 * cannot be run (as env(1)).
 *
 * The preload library is looked for in $UPAGER_PRELOAD_LIB, then where it
 * is installed; the test suite runs it from the build tree with the first.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#ifndef UPAGER_PRELOAD_PATH
#define UPAGER_PRELOAD_PATH "libupager-preload.so"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: upager-run [OPTION]... [--] PROGRAM [ARGUMENT]...\n"
            "Run PROGRAM with the memory it allocates paged by upager, under a budget.\n"
            "\n"
            "  -b, --budget SIZE       resident bytes allowed: 512M, 2G, 25%% (UPAGER_BUDGET)\n"
            "  -p, --page-size SIZE    the pager's page size, 4K to 2M (UPAGER_PAGE_SIZE)\n"
            "  -d, --dir DIR           where the store file goes (UPAGER_DIR)\n"
            "      --store URL         where evicted pages go: file:DIR (UPAGER_STORE)\n"
            "  -m, --preload-min SIZE  allocations below this stay with the system\n"
            "                          allocator (UPAGER_PRELOAD_MIN, default 4K)\n"
            "  -s, --stats             print upager's statistics at exit (UPAGER_STATS)\n"
            "  -h, --help              show this help and exit\n"
            "  -V, --version           show the version and exit\n"
            "\n"
            "The exit status is PROGRAM's; 125 for a bad option, 126 or 127 when\n"
            "PROGRAM cannot be run.  See upager-run(1) and upager(3).\n");
}

static void die(int status, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "upager-run: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    exit(status);
}

/* A size for --budget (a percentage too when pct) and the others. */
static void check_size(const char *opt, const char *v, bool pct)
{
    uint64_t x;
    size_t n = strlen(v);
    if (pct && n > 1 && v[n - 1] == '%') {
        char *end;
        unsigned long p = strtoul(v, &end, 10);
        if (end == v + n - 1 && p >= 1 && p <= 100 && v[0] >= '0' && v[0] <= '9')
            return;
    } else if (upager__parse_size(v, &x) == 0 && x > 0) {
        return;
    }
    die(125, pct ? "%s \"%s\": expected a size such as 512M, 4G or 25%%"
                 : "%s \"%s\": expected a size such as 4096, 64K or 2M",
        opt, v);
}

static void set(const char *name, const char *value)
{
    if (setenv(name, value, 1) != 0)
        die(125, "cannot set %s: %s", name, strerror(errno));
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"budget", required_argument, NULL, 'b'},
        {"page-size", required_argument, NULL, 'p'},
        {"dir", required_argument, NULL, 'd'},
        {"store", required_argument, NULL, 'S'},
        {"preload-min", required_argument, NULL, 'm'},
        {"stats", no_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0;
    /* '+': stop at the first non-option, which is the program. */
    while ((c = getopt_long(argc, argv, "+b:p:d:m:shV", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            check_size("--budget", optarg, true);
            set("UPAGER_BUDGET", optarg);
            break;
        case 'p':
            check_size("--page-size", optarg, false);
            set("UPAGER_PAGE_SIZE", optarg);
            break;
        case 'd': {
            struct stat st;
            if (stat(optarg, &st) != 0 || !S_ISDIR(st.st_mode) ||
                access(optarg, W_OK | X_OK) != 0)
                die(125, "--dir \"%s\": expected an existing, writable directory%s", optarg,
                    "");
            set("UPAGER_DIR", optarg);
            break;
        }
        case 'S':
            if (strncmp(optarg, "file:", 5) != 0)
                die(125,
                    "--store \"%s\": expected file:DIR%s", optarg,
                    " (this build has no redis:// or redis-cluster:// store)");
            set("UPAGER_STORE", optarg);
            break;
        case 'm':
            check_size("--preload-min", optarg, false);
            set("UPAGER_PRELOAD_MIN", optarg);
            break;
        case 's':
            set("UPAGER_STATS", "1");
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("upager-run (upager) %s\n", PACKAGE_VERSION);
            return 0;
        default:
            if (optopt && optopt != '?')
                die(125, "option -%c%s: unknown, or missing its value (see --help)",
                    (char[]){(char)optopt, 0}, "");
            die(125, "option %s%s: unknown, or missing its value (see --help)",
                argv[optind - 1], "");
        }
    }
    if (optind >= argc)
        die(125, "no program to run%s%s (see --help)", "", "");

    const char *lib = getenv("UPAGER_PRELOAD_LIB");
    if (!lib || !*lib)
        lib = UPAGER_PRELOAD_PATH;
    if (access(lib, R_OK) != 0)
        die(125, "cannot use the preload library %s: %s", lib, strerror(errno));
    const char *old = getenv("LD_PRELOAD");
    if (old && *old) {
        size_t n = strlen(lib) + strlen(old) + 2;
        char *both = malloc(n);
        if (!both)
            die(125, "out of memory%s%s", "", "");
        snprintf(both, n, "%s:%s", lib, old);
        set("LD_PRELOAD", both);
    } else {
        set("LD_PRELOAD", lib);
    }
    execvp(argv[optind], argv + optind);
    int err = errno;
    die(err == ENOENT ? 127 : 126, "%s: %s", argv[optind], strerror(err));
    return 127;
}
