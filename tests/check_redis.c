/*
 * check_redis.c - the Redis store (UPAGER_STORE=redis://...).
 *
 * Each case starts its own redis-server on a free loopback port, as a child
 * process that dies with the case (PR_SET_PDEATHSIG, and an atexit handler
 * that kills and reaps it, also when an assertion ends the case).  Without
 * redis-server on PATH the cases pass after printing why they were skipped.
 *
 * Cases: data under threads against a malloc mirror; keys removed on free
 * and at exit; one line and EINVAL at start-up for a bad URL, an
 * unreachable server, a refused password and an evicting maxmemory-policy;
 * nothing lost when the server is killed and restarted mid-run, or full;
 * pages the server lost raise SIGBUS, never read as zeros.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "check_suites.h"
#include "internal.h"
#include "testutil.h"

/* ---- a redis-server of the case's own ---------------------------------- */

static pid_t srv_pid, srv_owner;
static int srv_port;
static char srv_dir[512];

static bool have_redis(void)
{
    if (system("command -v redis-server >/dev/null 2>&1") == 0)
        return true;
    printf("check_redis: redis-server not found on PATH: case skipped "
           "(on Debian: apt-get install redis-server)\n");
    return false;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &l), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void server_stop(void)
{
    if (srv_pid > 0 && getpid() == srv_owner) {
        kill(srv_pid, SIGKILL);
        waitpid(srv_pid, NULL, 0);
    }
    srv_pid = 0;
}

static redisContext *server_connect(void)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", srv_port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* Starts redis-server on srv_port (a free one when 0) with the options
 * given (NULL-terminated), waits until it answers. */
static void server_start(const char *const *extra)
{
    static bool registered;
    if (!registered) {
        registered = true;
        atexit(server_stop);
    }
    if (!srv_port)
        srv_port = free_port();
    if (!srv_dir[0]) {
        snprintf(srv_dir, sizeof srv_dir, "%s/upager-redis-XXXXXX", tu_tmpdir());
        ck_assert_ptr_nonnull(mkdtemp(srv_dir));
    }
    char port[16];
    snprintf(port, sizeof port, "%d", srv_port);
    const char *argv[40] = {"redis-server", "--port", port, "--bind", "127.0.0.1",
                            "--save", "", "--daemonize", "no", "--dir", srv_dir,
                            "--logfile", "redis.log"};
    int argc = 13;
    bool aof = false;
    for (int i = 0; extra && extra[i]; i++) {
        if (strcmp(extra[i], "--appendonly") == 0)
            aof = true;
        argv[argc++] = extra[i];
    }
    if (!aof) {
        argv[argc++] = "--appendonly";
        argv[argc++] = "no";
    }
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    srv_pid = pid;
    srv_owner = parent;
    for (int i = 0; i < 500; i++) { /* up to 5 s */
        redisContext *c = server_connect();
        if (c) {
            redisReply *r = redisCommand(c, "PING");
            bool up = r && !(r->type == REDIS_REPLY_ERROR && strncmp(r->str, "LOADING", 7) == 0);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (up)
                return;
        }
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "redis-server exited at start-up");
        usleep(10000);
    }
    ck_abort_msg("redis-server did not answer PING on port %d", srv_port);
}

/* DBSIZE of the server, or -1. */
static long long server_dbsize(void)
{
    redisContext *c = server_connect();
    if (!c)
        return -1;
    redisReply *r = redisCommand(c, "DBSIZE");
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return n;
}

/* One command at a server on port: its reply (freeReplyObject it), or NULL. */
static redisReply *cmd_at(int port, const char *fmt, ...)
{
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

/* The store alone, through its table of functions, as the pager's I/O
 * thread calls it. */
enum { PS = 65536 };
static void open_store(const char *url, struct upager__store *s)
{
    struct upager__config c;
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(upager__config_set(&c, "store", url, NULL), 0);
    ck_assert_int_eq(upager__store_redis_open(s, &c, "UPAGER_STORE", PS, (uint64_t)1 << 30), 0);
    ck_assert_ptr_nonnull(s->ops->write_many);
}

static double elapsed_s(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void use_server(const char *budget)
{
    char url[64];
    tu_env(budget, "64K");
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv_port);
    tu_setenv("UPAGER_STORE", url);
}

/* ---- data under threads ------------------------------------------------ */

enum { NTHREADS = 3, OPS = 1500 };
#define REGION (6 * TU_MIB) /* per thread: 18M in all, over a 4M budget */

struct worker {
    pthread_t th;
    uint64_t rng;
    unsigned char *up, *mirror;
    char error[256];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < OPS && !w->error[0]; i++) {
        size_t off = tu_below(&w->rng, REGION);
        size_t len = 1 + tu_below(&w->rng, 96 * TU_KIB);
        if (off + len > REGION)
            len = REGION - off;
        if (tu_below(&w->rng, 2)) {
            unsigned char b = (unsigned char)tu_rand(&w->rng);
            memset(w->up + off, b, len);
            memset(w->mirror + off, b, len);
        } else if (memcmp(w->up + off, w->mirror + off, len) != 0) {
            snprintf(w->error, sizeof w->error, "op %d: [%zu, +%zu) differs", i, off, len);
        }
    }
    return NULL;
}

START_TEST(test_integrity)
{
    if (!have_redis())
        return;
    server_start(NULL);
    use_server("4M");
    tu_init();
    struct worker w[NTHREADS];
    uint64_t seed = tu_seed(0x4ed15);
    for (int t = 0; t < NTHREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].rng = seed + (uint64_t)t * 7919;
        w[t].up = upager_malloc(REGION);
        w[t].mirror = malloc(REGION);
        ck_assert(w[t].up && w[t].mirror);
        tu_pattern_fill(w[t].up, 0, REGION, seed + (uint64_t)t);
        tu_pattern_fill(w[t].mirror, 0, REGION, seed + (uint64_t)t);
    }
    ck_assert_int_gt(server_dbsize(), 0);
    for (int t = 0; t < NTHREADS; t++)
        ck_assert_int_eq(pthread_create(&w[t].th, NULL, worker_main, &w[t]), 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(w[t].th, NULL);
    for (int t = 0; t < NTHREADS; t++) {
        ck_assert_msg(!w[t].error[0], "thread %d, seed %#llx: %s", t,
                      (unsigned long long)seed, w[t].error);
        ck_assert_msg(memcmp(w[t].up, w[t].mirror, REGION) == 0,
                      "thread %d: final comparison differs", t);
    }
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
    ck_assert_uint_gt(s.major_faults, 0);
    ck_assert_uint_gt(s.writebacks, 0);
    ck_assert_uint_le(s.peak_resident_bytes, s.budget_bytes);
}
END_TEST

/* ---- keys removed ------------------------------------------------------- */

struct keys_result {
    long long during, after_free;
    int ok;
};

static void keys_child(void *arg)
{
    struct keys_result *r = arg;
    if (upager_init() != 0)
        return;
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    if (!p)
        return;
    tu_pattern_fill(p, 0, n, 3);
    r->ok = tu_pattern_check(p, 0, n, 3) == (size_t)-1;
    r->during = server_dbsize();
    upager_free(p);
    r->after_free = server_dbsize();
    /* exit(0) follows: the atexit handler removes what is left */
}

static void keys_child_exit(void *arg)
{
    struct keys_result *r = arg;
    if (upager_init() != 0)
        return;
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    if (!p)
        return;
    tu_pattern_fill(p, 0, n, 4);
    r->ok = tu_pattern_check(p, 0, n, 4) == (size_t)-1;
    r->during = server_dbsize();
}

START_TEST(test_keys_removed)
{
    if (!have_redis())
        return;
    server_start(NULL);
    use_server("2M");
    struct keys_result *r = tu_shared_alloc(sizeof *r);
    char *err = NULL;
    int st = tu_run_child(keys_child, r, &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %s", err);
    ck_assert_msg(r->ok, "data differs: %s", err);
    ck_assert_int_gt(r->during, 0);
    ck_assert_msg(r->after_free == 0, "%lld keys left after free", r->after_free);
    ck_assert_int_eq(server_dbsize(), 0);
    free(err);

    /* Keys still in use at exit go too. */
    memset(r, 0, sizeof *r);
    st = tu_run_child(keys_child_exit, r, &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %s", err);
    ck_assert_msg(r->ok, "data differs: %s", err);
    ck_assert_int_gt(r->during, 0);
    ck_assert_int_eq(server_dbsize(), 0);
    free(err);
}
END_TEST

/* A child of fork starts afresh with keys of its own: its writes and its
 * exit leave the parent's pages alone. */
static void fork_child(void *arg)
{
    int *ok = arg;
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n); /* starts the library in the child */
    if (!p)
        return;
    tu_pattern_fill(p, 0, n, 42);
    *ok = tu_pattern_check(p, 0, n, 42) == (size_t)-1;
}

START_TEST(test_fork_own_keys)
{
    if (!have_redis())
        return;
    server_start(NULL);
    use_server("2M");
    tu_init();
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, n, 41);
    upager__ioq_drain(); /* background write-backs done */
    long long before = server_dbsize();
    ck_assert_int_gt(before, 0);
    int *ok = tu_shared_alloc(sizeof *ok);
    char *err = NULL;
    int st = tu_run_child(fork_child, ok, &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0 && *ok, "child: %s", err);
    free(err);
    ck_assert_int_eq(server_dbsize(), before); /* the child removed its own keys only */
    ck_assert_uint_eq(tu_pattern_check(p, 0, n, 41), (size_t)-1);
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
}
END_TEST

/* ---- start-up refusals -------------------------------------------------- */

static void expect_refusal(const char *want1, const char *want2, const char *secret)
{
    struct tu_capture cap;
    tu_capture_begin(&cap);
    int rc = upager_init();
    errno = 0;
    void *p = upager_malloc(100);
    int e = errno;
    char *out = tu_capture_end(&cap);
    ck_assert_msg(rc == EINVAL, "upager_init returned %d; stderr: %s", rc, out);
    ck_assert_ptr_null(p);
    ck_assert_int_eq(e, EINVAL);
    ck_assert_msg(tu_count_lines(out) == 1, "expected one line, got: %s", out);
    ck_assert_msg(strstr(out, want1), "no \"%s\" in: %s", want1, out);
    ck_assert_msg(!want2 || strstr(out, want2), "no \"%s\" in: %s", want2, out);
    ck_assert_msg(!secret || !strstr(out, secret), "the password is printed: %s", out);
    free(out);
}

START_TEST(test_bad_url)
{
    static const char *bad[] = {
        "redis://",          "redis://127.0.0.1:0",    "redis://127.0.0.1:99999",
        "redis://host:port", "redis://h:1/x",          "redis://h:1?prefix=",
        "redis://h:1?pfx=a", "redis://:hunter2@h:notaport", "redis:/h:1",
        "redis://h:1,h:2", "redis-cluster://h:1/2", "redis-cluster://h:1,,h:2",
    };
    tu_env("4M", NULL);
    tu_setenv("UPAGER_STORE", bad[_i]);
    expect_refusal("UPAGER_STORE=", "redis://", "hunter2");
}
END_TEST

/* The parser alone: every form of the URL, and the password never shown. */
START_TEST(test_url_forms)
{
    struct upager__config c;
    memset(&c, 0, sizeof c);
    ck_assert_int_eq(upager__config_set(&c, "store", "redis://cache.example-1.net", NULL), 0);
    ck_assert(c.store_redis);
    ck_assert_str_eq(c.redis_host, "cache.example-1.net");
    ck_assert_int_eq(c.redis_port, 6379);
    ck_assert_int_eq(c.redis_db, 0);
    ck_assert_str_eq(c.redis_prefix, "");
    ck_assert_int_eq(upager__config_set(&c, "store", "redis://10.0.0.2:7000/3?prefix=job:7",
                                        NULL), 0);
    ck_assert_str_eq(c.redis_host, "10.0.0.2");
    ck_assert_int_eq(c.redis_port, 7000);
    ck_assert_int_eq(c.redis_db, 3);
    ck_assert_str_eq(c.redis_prefix, "job:7");
    ck_assert_str_eq(c.redis_password, "");
    ck_assert_int_eq(upager__config_set(&c, "store", "redis://:pw@h:1/", NULL), 0);
    ck_assert_str_eq(c.redis_password, "pw");
    ck_assert_str_eq(c.redis_user, "");
    ck_assert_int_eq(upager__config_set(&c, "store", "redis://alice:pw2@h?prefix=x", NULL), 0);
    ck_assert_str_eq(c.redis_user, "alice");
    ck_assert_str_eq(c.redis_password, "pw2");
    ck_assert_int_eq(c.redis_port, 6379);
    ck_assert_int_eq(upager__config_set(&c, "UPAGER_STORE_PASSWORD", "envpw", NULL), 0);
    ck_assert_str_eq(c.store_password, "envpw");
    ck_assert_int_eq(upager__config_set(&c, "store",
                                        "redis-cluster://10.0.0.1:7000,node-b,10.0.0.3:7002", NULL), 0);
    ck_assert(c.store_redis && c.redis_cluster);
    ck_assert_str_eq(c.redis_host, "10.0.0.1:7000,node-b:6379,10.0.0.3:7002");
    ck_assert_int_eq(upager__config_set(&c, "store", "file:/tmp", NULL), 0);
    ck_assert(!c.store_redis && !c.redis_cluster);

    struct tu_capture cap;
    tu_capture_begin(&cap);
    int rc = upager_configure("store", "redis://u:topsecret@h:x");
    char *out = tu_capture_end(&cap);
    ck_assert_int_eq(rc, EINVAL);
    ck_assert_msg(tu_count_lines(out) == 1 && strstr(out, "u:***@h:x") &&
                  !strstr(out, "topsecret"), "%s", out);
    free(out);
}
END_TEST

START_TEST(test_unreachable)
{
    char url[64], where[64];
    int port = free_port();
    tu_env("4M", NULL);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(where, sizeof where, "127.0.0.1:%d", port);
    tu_setenv("UPAGER_STORE", url);
    expect_refusal("UPAGER_STORE=", where, NULL);
}
END_TEST

START_TEST(test_wrong_password)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--requirepass", "s3cret-pw", NULL};
    server_start(opts);
    char url[128];
    tu_env("4M", NULL);
    snprintf(url, sizeof url, "redis://:wrong-pw@127.0.0.1:%d", srv_port);
    tu_setenv("UPAGER_STORE", url);
    expect_refusal("password", NULL, "wrong-pw");
}
END_TEST

START_TEST(test_no_password)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--requirepass", "s3cret-pw", NULL};
    server_start(opts);
    use_server("4M");
    expect_refusal("password", "UPAGER_STORE_PASSWORD", NULL);
}
END_TEST

START_TEST(test_right_password)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--requirepass", "s3cret-pw", NULL};
    server_start(opts);
    use_server("2M");
    tu_setenv("UPAGER_STORE_PASSWORD", "s3cret-pw");
    tu_setenv("UPAGER_VERBOSE", "1");
    struct tu_capture cap;
    tu_capture_begin(&cap);
    int rc = upager_init();
    char *out = tu_capture_end(&cap);
    ck_assert_msg(rc == 0, "init: %d: %s", rc, out);
    ck_assert_msg(!strstr(out, "s3cret"), "the password is printed: %s", out);
    free(out);
    unsigned char *p = upager_malloc(8 * TU_MIB);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, 8 * TU_MIB, 9);
    ck_assert_uint_eq(tu_pattern_check(p, 0, 8 * TU_MIB, 9), (size_t)-1);
}
END_TEST

START_TEST(test_evicting_policy)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--maxmemory-policy", "allkeys-lru", NULL};
    server_start(opts);
    use_server("4M");
    expect_refusal("allkeys-lru", "noeviction", NULL);
}
END_TEST

/* ---- nothing lost -------------------------------------------------------- */

START_TEST(test_server_restart)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--appendonly", "yes", "--appendfsync", "always", NULL};
    server_start(opts);
    use_server("2M");
    tu_init();
    size_t na = 8 * TU_MIB, nb = 4 * TU_MIB;
    unsigned char *a = upager_malloc(na), *b = upager_malloc(nb);
    ck_assert(a && b);
    tu_pattern_fill(a, 0, na, 21);
    struct upager_stats s0, s1, s2;
    tu_stats(&s0);
    ck_assert_uint_eq(s0.io_errors, 0);

    /* From the stop on, background write-backs may fail and say so. */
    struct tu_capture cap;
    tu_capture_begin(&cap);
    server_stop(); /* SIGKILL: appendfsync always kept every acknowledged write */
    /* New pages need frames: the dirty pages of a cannot be written back,
     * so they stay in memory, over the budget. */
    tu_pattern_fill(b, 0, nb, 22);
    tu_stats(&s1);
    /* The same port and directory: the append-only file brings the keys back. */
    server_start(opts);
    size_t bad_a = tu_pattern_check(a, 0, na, 21);
    size_t bad_b = tu_pattern_check(b, 0, nb, 22);
    tu_stats(&s2);
    char *out = tu_capture_end(&cap);
    ck_assert_msg(bad_a == (size_t)-1, "a differs at %zu; stderr: %s", bad_a, out);
    ck_assert_msg(bad_b == (size_t)-1, "b differs at %zu; stderr: %s", bad_b, out);
    ck_assert_msg(s1.io_errors > 0, "no write-back failed while the server was down");
    ck_assert_uint_gt(s2.writebacks, s1.writebacks);
    ck_assert_uint_gt(s2.major_faults, s1.major_faults);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", srv_port);
    ck_assert_msg(strstr(out, where), "no line names the server: %s", out);
    free(out);
    /* The pages written back after the restart read back too. */
    ck_assert_int_eq(upager_set_budget(TU_MIB), 0);
    ck_assert_uint_eq(tu_pattern_check(a, 0, na, 21), (size_t)-1);
    ck_assert_uint_eq(tu_pattern_check(b, 0, nb, 22), (size_t)-1);
}
END_TEST

START_TEST(test_server_full)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--maxmemory", "4mb", "--maxmemory-policy",
                                       "noeviction", NULL};
    server_start(opts);
    use_server("2M");
    tu_init();
    size_t n = 16 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    ck_assert_ptr_nonnull(p);
    struct tu_capture cap;
    tu_capture_begin(&cap);
    tu_pattern_fill(p, 0, n, 31);
    size_t bad = tu_pattern_check(p, 0, n, 31);
    struct upager_stats s;
    tu_stats(&s);
    char *out = tu_capture_end(&cap);
    ck_assert_msg(bad == (size_t)-1, "differs at %zu; stderr: %s", bad, out);
    ck_assert_msg(s.io_errors > 0, "no write-back failed on a full server");
    ck_assert_msg(strstr(out, "OOM"), "no line gives the server's reason: %s", out);
    free(out);
}
END_TEST

/* Pages the server lost (flushed, or restarted without persistence) are
 * never read back as zeros: the fault raises SIGBUS after a line that names
 * the server. */
static void lost_child(void *arg)
{
    (void)arg;
    if (upager_init() != 0)
        return;
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    if (!p)
        return;
    tu_pattern_fill(p, 0, n, 5);
    redisContext *c = server_connect();
    if (!c)
        return;
    redisReply *r = redisCommand(c, "FLUSHALL");
    if (r)
        freeReplyObject(r);
    redisFree(c);
    tu_touch_read(p, n, 4096); /* the first pages were evicted: SIGBUS */
}

START_TEST(test_server_lost_pages)
{
    if (!have_redis())
        return;
    server_start(NULL);
    use_server("2M");
    char *err = NULL;
    int st = tu_run_child(lost_child, NULL, &err);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS,
                  "expected SIGBUS, got status %#x; stderr: %s", st, err);
    char where[64];
    snprintf(where, sizeof where, "127.0.0.1:%d", srv_port);
    ck_assert_msg(strstr(err, where) && strstr(err, "missing"),
                  "no line names the server and the missing page: %s", err);
    free(err);
}
END_TEST

/* ---- batched writes --------------------------------------------------- */

/* write_many: a batch in any order, an extent refused alone (EINVAL), the
 * rest written; a run of pages read back in one read; a batch to a server
 * that is gone fails extent by extent. */
START_TEST(test_write_many)
{
    if (!have_redis())
        return;
    server_start(NULL);
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", srv_port);
    struct upager__store s;
    open_store(url, &s);
    enum { N = UPAGER__STORE_BATCH };
    unsigned char *buf = malloc((size_t)N * PS), *back = malloc((size_t)N * PS);
    ck_assert(buf && back);
    tu_pattern_fill(buf, 0, (size_t)N * PS, 61);
    struct upager__extent v[N];
    int err[N];
    for (int i = 0; i < N; i++) /* extent i holds page N-1-i */
        v[i] = (struct upager__extent){buf + (size_t)i * PS, PS, (uint64_t)(N - 1 - i) * PS};
    v[5].off += 1;
    ck_assert_int_eq(s.ops->write_many(&s, v, N, err), EINVAL);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(err[i], i == 5 ? EINVAL : 0);
    ck_assert_int_eq(server_dbsize(), N - 1);
    ck_assert_int_eq(s.ops->read(&s, back, (size_t)N * PS, 0), 0);
    for (int i = 0; i < N; i++) {
        const unsigned char *got = back + (size_t)(N - 1 - i) * PS;
        if (i == 5) /* never written: zeros */
            ck_assert(got[0] == 0 && memcmp(got, got + 1, PS - 1) == 0);
        else
            ck_assert_msg(memcmp(got, buf + (size_t)i * PS, PS) == 0, "extent %d differs", i);
    }
    server_stop();
    v[5].off -= 1;
    ck_assert_int_eq(s.ops->write_many(&s, v, N, err), EIO);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(err[i], EIO);
    free(buf);
    free(back);
}
END_TEST

/* ---- a slow server ------------------------------------------------------ */

static void *stall_main(void *arg)
{
    (void)arg;
    usleep(300000);
    redisReply *r = cmd_at(srv_port, "DEBUG SLEEP 2");
    ck_assert_msg(r && r->type == REDIS_REPLY_STATUS, "DEBUG SLEEP: %s",
                  r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    freeReplyObject(r);
    return NULL;
}

/* The server stalls for two seconds mid-run: faults and write-backs wait
 * and complete, nothing is lost, nothing fails. */
START_TEST(test_slow_server)
{
    if (!have_redis())
        return;
    static const char *const opts[] = {"--enable-debug-command", "local", NULL};
    server_start(opts);
    use_server("2M");
    tu_init();
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    ck_assert_ptr_nonnull(p);
    tu_pattern_fill(p, 0, n, 70);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, stall_main, NULL), 0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double longest = 0, last = 0;
    for (uint64_t k = 71; elapsed_s(&t0) < 3.5; k++) {
        ck_assert_uint_eq(tu_pattern_check(p, 0, n, k - 1), (size_t)-1);
        tu_pattern_fill(p, 0, n, k);
        double t = elapsed_s(&t0);
        if (t - last > longest)
            longest = t - last;
        last = t;
    }
    pthread_join(th, NULL);
    ck_assert_msg(longest > 1.5, "the stall was not seen (longest pass %.2f s)", longest);
    struct upager_stats st;
    tu_stats(&st);
    ck_assert_uint_eq(st.io_errors, 0);
    ck_assert_uint_gt(st.major_faults, 0);
}
END_TEST

/* ---- a cluster of three masters --------------------------------------- */

#define CL_MAX 6
static pid_t cl_pid[CL_MAX], cl_owner;
static int cl_port[CL_MAX], cl_n;

static void cluster_stop(void)
{
    if (getpid() != cl_owner)
        return;
    for (int i = 0; i < CL_MAX; i++)
        if (cl_pid[i] > 0) {
            kill(cl_pid[i], SIGKILL);
            waitpid(cl_pid[i], NULL, 0);
            cl_pid[i] = 0;
        }
}

/* A free port whose cluster bus port (+10000) is free too. */
static int cluster_port(void)
{
    for (int tries = 0; tries < 100; tries++) {
        int p = free_port();
        if (p + 10000 > 65535)
            continue;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(p + 10000))};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return p;
    }
    ck_abort_msg("no free port pair for a cluster node");
    return 0;
}

static long long dbsize_at(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return -1;
    }
    redisReply *r = redisCommand(c, "DBSIZE");
    long long n = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return n;
}

static bool cluster_ok(int port)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return false;
    }
    redisReply *r = redisCommand(c, "CLUSTER INFO");
    bool ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok");
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

/* Starts a cluster of three masters, each with `replicas` replicas (0 or
 * 1), the given cluster-node-timeout, and waits until it is ok. */
static void cluster_start_with(int replicas, int node_timeout_ms)
{
    atexit(cluster_stop);
    cl_owner = getpid();
    cl_n = 3 * (1 + replicas);
    char dir[512], timeout[16];
    snprintf(timeout, sizeof timeout, "%d", node_timeout_ms);
    snprintf(dir, sizeof dir, "%s/upager-cluster-XXXXXX", tu_tmpdir());
    ck_assert_ptr_nonnull(mkdtemp(dir));
    for (int i = 0; i < cl_n; i++) {
        bool dup;
        do {
            cl_port[i] = cluster_port();
            dup = false;
            for (int j = 0; j < i; j++)
                dup = dup || cl_port[j] == cl_port[i] || cl_port[j] + 10000 == cl_port[i] ||
                      cl_port[j] == cl_port[i] + 10000;
        } while (dup);
        char port[16], conf[64], log[64];
        snprintf(port, sizeof port, "%d", cl_port[i]);
        snprintf(conf, sizeof conf, "nodes-%d.conf", cl_port[i]);
        snprintf(log, sizeof log, "redis-%d.log", cl_port[i]);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != cl_owner)
                _exit(127);
            execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
                   "--cluster-enabled", "yes", "--cluster-config-file", conf, "--save", "",
                   "--appendonly", "no", "--daemonize", "no", "--dir", dir, "--logfile", log,
                   "--cluster-node-timeout", timeout, "--cluster-replica-validity-factor", "0",
                   "--enable-debug-command", "local",
                   (char *)NULL);
            _exit(127);
        }
        cl_pid[i] = pid;
    }
    for (int i = 0; i < cl_n; i++) {
        int k = 0;
        while (dbsize_at(cl_port[i]) < 0 && k++ < 500)
            usleep(10000);
        ck_assert_msg(k < 500, "cluster node %d did not start", cl_port[i]);
    }
    char cmd[512];
    int l = snprintf(cmd, sizeof cmd, "redis-cli --cluster create");
    for (int i = 0; i < cl_n; i++)
        l += snprintf(cmd + l, sizeof cmd - (size_t)l, " 127.0.0.1:%d", cl_port[i]);
    snprintf(cmd + l, sizeof cmd - (size_t)l,
             " --cluster-replicas %d --cluster-yes >/dev/null 2>&1", replicas);
    ck_assert_msg(system(cmd) == 0, "redis-cli --cluster create failed");
    for (int k = 0; k < 1000; k++) {
        bool ok = true;
        for (int i = 0; i < cl_n && ok; i++)
            ok = cluster_ok(cl_port[i]);
        if (ok)
            return;
        usleep(10000);
    }
    ck_abort_msg("the cluster did not become ok");
}

static void cluster_start(void)
{
    cluster_start_with(0, 15000);
}

static long long cluster_keys(int *nodes_with_keys)
{
    long long sum = 0;
    *nodes_with_keys = 0;
    for (int i = 0; i < 3; i++) {
        long long n = dbsize_at(cl_port[i]);
        if (n > 0) {
            sum += n;
            (*nodes_with_keys)++;
        }
    }
    return sum;
}

static void cluster_exit_child(void *arg)
{
    int *ok = arg;
    size_t n = 8 * TU_MIB;
    unsigned char *p = upager_malloc(n);
    if (!p)
        return;
    tu_pattern_fill(p, 0, n, 51);
    int nodes;
    ok[0] = tu_pattern_check(p, 0, n, 51) == (size_t)-1;
    ok[1] = cluster_keys(&nodes) > 0 && nodes == 3;
}

/* Pages spread over the masters of a cluster (the URL names two of the
 * three: the third comes from the slot map); data under threads, keys
 * removed on free and at exit. */
START_TEST(test_cluster)
{
    if (!have_redis())
        return;
    cluster_start();
    char url[128];
    tu_env("4M", "64K");
    snprintf(url, sizeof url, "redis-cluster://127.0.0.1:%d,127.0.0.1:%d", cl_port[0],
             cl_port[1]);
    tu_setenv("UPAGER_STORE", url);
    tu_init();
    struct worker w[NTHREADS];
    uint64_t seed = tu_seed(0xc105);
    for (int t = 0; t < NTHREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].rng = seed + (uint64_t)t * 104729;
        w[t].up = upager_malloc(REGION);
        w[t].mirror = malloc(REGION);
        ck_assert(w[t].up && w[t].mirror);
        tu_pattern_fill(w[t].up, 0, REGION, seed + (uint64_t)t);
        tu_pattern_fill(w[t].mirror, 0, REGION, seed + (uint64_t)t);
    }
    int nodes;
    ck_assert_int_gt(cluster_keys(&nodes), 0);
    ck_assert_int_eq(nodes, 3);
    for (int t = 0; t < NTHREADS; t++)
        ck_assert_int_eq(pthread_create(&w[t].th, NULL, worker_main, &w[t]), 0);
    for (int t = 0; t < NTHREADS; t++)
        pthread_join(w[t].th, NULL);
    for (int t = 0; t < NTHREADS; t++) {
        ck_assert_msg(!w[t].error[0], "thread %d, seed %#llx: %s", t,
                      (unsigned long long)seed, w[t].error);
        ck_assert_msg(memcmp(w[t].up, w[t].mirror, REGION) == 0,
                      "thread %d: final comparison differs", t);
    }
    struct upager_stats s;
    tu_stats(&s);
    ck_assert_uint_eq(s.io_errors, 0);
    ck_assert_uint_gt(s.major_faults, 0);
    for (int t = 0; t < NTHREADS; t++)
        upager_free(w[t].up);
    ck_assert_int_eq(cluster_keys(&nodes), 0);

    int *ok = tu_shared_alloc(2 * sizeof *ok);
    char *err = NULL;
    int st = tu_run_child(cluster_exit_child, ok, &err);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0 && ok[0] && ok[1], "child: %s", err);
    free(err);
    ck_assert_int_eq(cluster_keys(&nodes), 0);
}
END_TEST

/* The role of a node ("master" or "slave") and, for a master, how many
 * replicas are connected to it; for a replica, whether its link is up. */
static bool node_ready(int port, bool *master)
{
    redisReply *r = cmd_at(port, "INFO replication");
    bool ok = false;
    if (r && r->type == REDIS_REPLY_STRING) {
        *master = strstr(r->str, "role:master") != NULL;
        ok = *master ? strstr(r->str, "connected_slaves:1") != NULL
                     : strstr(r->str, "master_link_status:up") != NULL;
    }
    if (r)
        freeReplyObject(r);
    return ok;
}

/* A master of a cluster with replicas is killed in the middle of a run:
 * its replica takes over, the store follows the new slot map, and nothing
 * is lost -- every write was acknowledged by a replica too (WAIT), so the
 * pages the killed master held are read back from the promoted one. */
START_TEST(test_cluster_failover)
{
    if (!have_redis())
        return;
    cluster_start_with(1, 2000);
    /* Every master with its replica in sync before the library reads the
     * slot map (the replicas are what makes it wait for them). */
    int masters[CL_MAX], nm = 0;
    for (int k = 0; k < 1000; k++) {
        bool all = true;
        nm = 0;
        for (int i = 0; i < cl_n; i++) {
            bool m = false;
            all = node_ready(cl_port[i], &m) && all;
            if (m)
                masters[nm++] = i;
        }
        if (all && nm == 3)
            break;
        usleep(10000);
    }
    ck_assert_int_eq(nm, 3);
    char url[64];
    snprintf(url, sizeof url, "redis-cluster://127.0.0.1:%d", cl_port[masters[1]]);
    tu_env("2M", "64K");
    tu_setenv("UPAGER_STORE", url);
    tu_init();
    size_t len = 16 * TU_MIB;
    unsigned char *p = upager_malloc(len);
    ck_assert_ptr_nonnull(p);
    uint64_t seed = tu_seed(0xfa11);
    tu_pattern_fill(p, 0, len, seed);
    upager__ioq_drain();
    int nodes;
    ck_assert_int_gt(cluster_keys(&nodes), 0);
    /* The writes waited for a replica (on a loaded machine a spurious
     * failover may have swapped a master and its replica meanwhile: at
     * least one master saw WAIT). */
    int waited = 0;
    for (int i = 0; i < nm; i++) {
        redisReply *r = cmd_at(cl_port[masters[i]], "INFO commandstats");
        waited += r && r->type == REDIS_REPLY_STRING && strstr(r->str, "cmdstat_wait:");
        if (r)
            freeReplyObject(r);
    }
    ck_assert_msg(waited > 0, "no WAIT reached a master");

    /* The first master dies; its replica is promoted after the node
     * timeout (2 s), and reads of its slots wait for that. */
    int victim = masters[0];
    kill(cl_pid[victim], SIGKILL);
    waitpid(cl_pid[victim], NULL, 0);
    cl_pid[victim] = 0;
    struct tu_capture cap;
    tu_capture_begin(&cap);
    size_t bad = tu_pattern_check(p, 0, len, seed);
    tu_pattern_fill(p, 0, len, seed + 1); /* and writes go on */
    size_t bad2 = tu_pattern_check(p, 0, len, seed + 1);
    char *out = tu_capture_end(&cap);
    ck_assert_msg(bad == (size_t)-1, "data differs at %zu after the failover; stderr: %s", bad,
                  out);
    ck_assert_msg(bad2 == (size_t)-1, "data written after the failover differs at %zu; stderr: %s",
                  bad2, out);
    free(out);
    struct upager_stats st;
    tu_stats(&st);
    ck_assert_uint_gt(st.major_faults, 0);
    upager_free(p);
}
END_TEST

/* The node id of a cluster node. */
static void node_id(int port, char *id, size_t n)
{
    redisReply *r = cmd_at(port, "CLUSTER MYID");
    ck_assert_msg(r && r->type == REDIS_REPLY_STRING, "CLUSTER MYID at %d", port);
    snprintf(id, n, "%s", r->str);
    freeReplyObject(r);
}

/* A slot in migration: the store's page 0 moved to another master by
 * MIGRATE while its slot is MIGRATING/IMPORTING.  The old owner answers
 * ASK; the store must send ASKING before the command at the new one (a
 * plain GET there is answered MOVED back).  Also: write_many over the
 * three masters. */
START_TEST(test_cluster_ask)
{
    if (!have_redis())
        return;
    cluster_start();
    char url[64];
    snprintf(url, sizeof url, "redis-cluster://127.0.0.1:%d", cl_port[0]);
    struct upager__store s;
    open_store(url, &s);
    enum { N = UPAGER__STORE_BATCH };
    unsigned char *buf = malloc((size_t)N * PS), *back = malloc((size_t)N * PS);
    ck_assert(buf && back);
    tu_pattern_fill(buf, 0, (size_t)N * PS, 90);
    struct upager__extent v[N];
    int err[N];
    for (int i = 0; i < N; i++)
        v[i] = (struct upager__extent){buf + (size_t)i * PS, PS, (uint64_t)i * PS};
    ck_assert_int_eq(s.ops->write_many(&s, v, N, err), 0);
    int nodes;
    ck_assert_int_eq(cluster_keys(&nodes), N);
    ck_assert_int_eq(nodes, 3);

    char key[400];
    snprintf(key, sizeof key, "%s:0", upager__store_redis_prefix());
    redisReply *r = cmd_at(cl_port[0], "CLUSTER KEYSLOT %s", key);
    ck_assert(r && r->type == REDIS_REPLY_INTEGER);
    long long slot = r->integer;
    freeReplyObject(r);
    int src = -1;
    for (int i = 0; i < 3 && src < 0; i++) {
        r = cmd_at(cl_port[i], "EXISTS %s", key);
        if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
            src = i;
        if (r)
            freeReplyObject(r);
    }
    ck_assert_int_ge(src, 0);
    int dst = (src + 1) % 3;
    char src_id[64], dst_id[64];
    node_id(cl_port[src], src_id, sizeof src_id);
    node_id(cl_port[dst], dst_id, sizeof dst_id);
    r = cmd_at(cl_port[dst], "CLUSTER SETSLOT %lld IMPORTING %s", slot, src_id);
    ck_assert(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = cmd_at(cl_port[src], "CLUSTER SETSLOT %lld MIGRATING %s", slot, dst_id);
    ck_assert(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    r = cmd_at(cl_port[src], "MIGRATE 127.0.0.1 %d %s 0 5000", cl_port[dst], key);
    ck_assert_msg(r && r->type == REDIS_REPLY_STATUS, "MIGRATE: %s",
                  r && r->str ? r->str : "no reply");
    freeReplyObject(r);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(back, 0, PS);
    ck_assert_int_eq(s.ops->read(&s, back, PS, 0), 0); /* ASK, then ASKING + GET */
    ck_assert(memcmp(back, buf, PS) == 0);
    ck_assert_int_eq(s.ops->read(&s, back, (size_t)N * PS, 0), 0); /* in a run */
    ck_assert(memcmp(back, buf, (size_t)N * PS) == 0);
    memset(buf, 0x5a, PS);
    ck_assert_int_eq(s.ops->write(&s, buf, PS, 0), 0); /* ASK, then ASKING + SET */
    ck_assert_int_eq(s.ops->read(&s, back, PS, 0), 0);
    ck_assert(memcmp(back, buf, PS) == 0);
    ck_assert_msg(elapsed_s(&t0) < 3, "redirections took %.1f s", elapsed_s(&t0));
    for (int i = 0; i < 3; i++) { /* the slot is dst's: keys removed at exit */
        r = cmd_at(cl_port[i], "CLUSTER SETSLOT %lld NODE %s", slot, dst_id);
        if (r)
            freeReplyObject(r);
    }
    free(buf);
    free(back);
}
END_TEST

Suite *redis_suite(void)
{
    Suite *s = suite_create("redis");
    TCase *tc;

    tc = tcase_create("integrity");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_integrity);
    suite_add_tcase(s, tc);

    tc = tcase_create("keys");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_keys_removed);
    tcase_add_test(tc, test_fork_own_keys);
    suite_add_tcase(s, tc);

    tc = tcase_create("refused");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_bad_url, 0, 12);
    tcase_add_test(tc, test_url_forms);
    tcase_add_test(tc, test_unreachable);
    tcase_add_test(tc, test_wrong_password);
    tcase_add_test(tc, test_no_password);
    tcase_add_test(tc, test_right_password);
    tcase_add_test(tc, test_evicting_policy);
    suite_add_tcase(s, tc);

    tc = tcase_create("lossless");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_server_restart);
    tcase_add_test(tc, test_server_full);
    tcase_add_test(tc, test_server_lost_pages);
    tcase_add_test(tc, test_slow_server);
    suite_add_tcase(s, tc);

    tc = tcase_create("batched");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_write_many);
    suite_add_tcase(s, tc);

    tc = tcase_create("cluster");
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, test_cluster);
    tcase_add_test(tc, test_cluster_ask);
    tcase_add_test(tc, test_cluster_failover);
    suite_add_tcase(s, tc);
    return s;
}
