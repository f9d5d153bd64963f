/*
 * store_redis.c - the Redis store: each page a key "<prefix>:<offset>"
 * (the page's byte offset in the store, in decimal) holding its bytes.
 *
 * The store functions run on the faulting thread, inside the SIGSEGV
 * handler, or in the clock: they must not call hiredis (malloc, a socket
 * whose state a faulting thread could have interrupted).  So they only
 * hand a request to one I/O thread and sleep until it is done:
 *
 *   caller (any thread, signal handler)        I/O thread (signals blocked)
 *   claim a FREE slot (CAS) -> FILLING
 *   fill op, buf, len, off; -> READY
 *   bump submit_seq, futex wake  ----------->  scan slots: READY -> BUSY
 *                                              pipeline GET/SET/UNLINK,
 *                                              copy replies into buf
 *   futex wait on the slot's state  <--------  result; -> DONE, futex wake
 *   read result; -> FREE; bump free_seq
 *
 * The callers use atomics and the futex system call only, and hold no lock
 * while they wait: a thread interrupted anywhere in here by a fault that
 * comes back in just claims another slot.  Buffers are the pager's I/O
 * buffers (ordinary memory mapped at start-up), never arena pages, so the
 * I/O thread copies into them without faulting.
 *
 * Failures.  A write or discard the server does not acknowledge returns
 * EIO at once (the clock keeps the page dirty and retries); a read is
 * retried, reconnecting with backoff, for READ_PATIENCE_S seconds, then
 * returns EIO.  The I/O thread prints at most one line every 10 s naming
 * the server.  The keys of the process are removed on discard and at exit.
 *
 * Not here: the URL parsing (config.c); the choice of store (init.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "internal.h"

#define NSLOT 64             /* requests in flight at once                */
#define READ_PATIENCE_S 15   /* a read is retried this long, then EIO     */
#define CONNECT_TIMEOUT_MS 2000
#define COMMAND_TIMEOUT_S 10
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define UNLINK_BATCH 256     /* keys per UNLINK                           */

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY, SLOT_BUSY, SLOT_DONE };
enum { OP_READ, OP_WRITE, OP_DISCARD, OP_CLEAN };

struct slot {
    _Atomic uint32_t state; /* SLOT_*; the caller sleeps on it            */
    int op;                 /* OP_*                                        */
    char *buf;              /* the caller's buffer (read: filled here)    */
    size_t len;             /* bytes of buf                                */
    uint64_t off;           /* store offset of buf[0]                      */
    int result;             /* 0 or an errno, valid in SLOT_DONE           */
    int64_t deadline_ms;    /* I/O thread: give up after this              */
};

static struct redis_store {
    struct slot slot[NSLOT];
    _Atomic uint32_t submit_seq;    /* bumped on submission; I/O thread waits */
    _Atomic uint32_t free_seq;      /* bumped when a slot comes free          */
    _Atomic uint32_t free_waiters;  /* callers waiting for a slot             */
    _Atomic int open;               /* the store is up                        */
    _Atomic int closed;             /* cleaned up at exit: requests fail      */
    _Atomic int conn_fd;            /* the socket, for a child of fork: -1    */
    pid_t pid;                      /* the process that opened it             */
    /* everything below belongs to the I/O thread once it runs */
    redisContext *c;
    char host[256], user[128], password[256], prefix[256];
    char where[320];                /* "redis://host:port/db", for messages   */
    int port, db;
    size_t page_size;
    unsigned page_shift;
    uint8_t *written;               /* bit per page: a key may exist          */
    size_t written_bytes;
    int64_t next_connect_ms;        /* backoff: no attempt before this        */
    int backoff_ms;
    int64_t last_said_ms;           /* rate limit of the I/O thread's lines   */
} R;

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- the caller's side: async-signal-safe ----------------------------- */

static int submit(int op, void *buf, size_t len, uint64_t off)
{
    struct redis_store *r = &R;
    struct slot *sl = NULL;
    if (atomic_load_explicit(&r->closed, memory_order_acquire))
        return EIO;
    for (;;) {
        uint32_t fseq = atomic_load_explicit(&r->free_seq, memory_order_acquire);
        for (int i = 0; i < NSLOT && !sl; i++) {
            uint32_t e = SLOT_FREE;
            if (atomic_compare_exchange_strong_explicit(&r->slot[i].state, &e, SLOT_FILLING,
                                                        memory_order_acquire,
                                                        memory_order_relaxed))
                sl = &r->slot[i];
        }
        if (sl)
            break;
        atomic_fetch_add(&r->free_waiters, 1);
        upager__futex_wait(&r->free_seq, fseq);
        atomic_fetch_sub(&r->free_waiters, 1);
    }
    sl->op = op;
    sl->buf = buf;
    sl->len = len;
    sl->off = off;
    sl->result = EIO;
    atomic_store_explicit(&sl->state, SLOT_READY, memory_order_release);
    atomic_fetch_add_explicit(&r->submit_seq, 1, memory_order_release);
    upager__futex_wake(&r->submit_seq, 1);
    uint32_t st;
    while ((st = atomic_load_explicit(&sl->state, memory_order_acquire)) != SLOT_DONE)
        upager__futex_wait(&sl->state, st);
    int res = sl->result;
    atomic_store_explicit(&sl->state, SLOT_FREE, memory_order_release);
    atomic_fetch_add_explicit(&r->free_seq, 1, memory_order_release);
    if (atomic_load(&r->free_waiters))
        upager__futex_wake(&r->free_seq, INT_MAX);
    return res;
}

static int redis_read(struct upager__store *s, void *buf, size_t len, uint64_t off)
{
    (void)s;
    if (len == 0)
        return 0;
    if (off & (R.page_size - 1))
        return EINVAL;
    return submit(OP_READ, buf, len, off);
}

static int redis_write(struct upager__store *s, const void *buf, size_t len, uint64_t off)
{
    (void)s;
    if (len == 0)
        return 0;
    if (off & (R.page_size - 1))
        return EINVAL;
    return submit(OP_WRITE, (void *)buf, len, off);
}

static int redis_discard(struct upager__store *s, uint64_t off, uint64_t len)
{
    (void)s;
    if (len == 0)
        return 0;
    return submit(OP_DISCARD, NULL, (size_t)len, off);
}

static int redis_sync(struct upager__store *s)
{
    (void)s; /* every write returned only once the server acknowledged it */
    return 0;
}

/* ---- the I/O thread ---------------------------------------------------- */

/* One line from the I/O thread (not a signal handler), at most every 10 s. */
static void io_say(const char *what, const char *detail)
{
    int64_t t = now_ms();
    if (R.last_said_ms && t - R.last_said_ms < 10000)
        return;
    R.last_said_ms = t;
    upager__say("Redis store %s: %s%s%s%s", R.where, what, detail ? " (" : "",
                detail ? detail : "", detail ? ")" : "");
}

/* The same, for what must be said even right after another line. */
static void io_say_now(const char *what, const char *detail)
{
    R.last_said_ms = 0;
    io_say(what, detail);
}

static void key_of(char *key, size_t n, uint64_t off)
{
    snprintf(key, n, "%s:%llu", R.prefix, (unsigned long long)off);
}

static bool bit_get(uint64_t page)
{
    return page / 8 < R.written_bytes && (R.written[page / 8] >> (page % 8)) & 1;
}

static void bit_set(uint64_t page, bool on)
{
    if (page / 8 >= R.written_bytes)
        return;
    if (on)
        R.written[page / 8] |= (uint8_t)(1u << (page % 8));
    else
        R.written[page / 8] &= (uint8_t) ~(1u << (page % 8));
}

static void drop_connection(const char *why)
{
    if (R.c) {
        io_say("connection lost, reconnecting", why);
        atomic_store(&R.conn_fd, -1);
        redisFree(R.c);
        R.c = NULL;
    }
}

/* Connects, authenticates and selects the database.  Returns 0, or an
 * errno with a reason in why.  Used at start-up and by the I/O thread. */
static int connect_server(char *why, size_t whylen)
{
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(R.host, R.port, tv);
    if (!c) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    if (c->err) {
        snprintf(why, whylen, "cannot connect: %s", c->errstr);
        redisFree(c);
        return ECONNREFUSED;
    }
    struct timeval ct = {COMMAND_TIMEOUT_S, 0};
    redisSetTimeout(c, ct);
    redisEnableKeepAlive(c);
    redisReply *rep;
    if (R.password[0]) {
        rep = R.user[0] ? redisCommand(c, "AUTH %s %s", R.user, R.password)
                        : redisCommand(c, "AUTH %s", R.password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, whylen, "the server refused the password: %s",
                     rep ? rep->str : c->errstr);
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            return EACCES;
        }
        freeReplyObject(rep);
    }
    rep = redisCommand(c, "SELECT %d", R.db);
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        bool noauth = rep && strncmp(rep->str, "NOAUTH", 6) == 0;
        snprintf(why, whylen, "%s: %s",
                 noauth ? "the server requires a password (set UPAGER_STORE_PASSWORD)"
                        : "cannot select the database",
                 rep ? rep->str : c->errstr);
        if (rep)
            freeReplyObject(rep);
        redisFree(c);
        return noauth ? EACCES : EIO;
    }
    freeReplyObject(rep);
    R.c = c;
    atomic_store(&R.conn_fd, c->fd);
    return 0;
}

/* Connects if not connected and the backoff allows; true when connected. */
static bool ensure_connected(void)
{
    if (R.c)
        return true;
    int64_t t = now_ms();
    if (t < R.next_connect_ms)
        return false;
    char why[512];
    if (connect_server(why, sizeof why) == 0) {
        R.backoff_ms = 0;
        return true;
    }
    io_say("server unreachable, retrying", why);
    R.backoff_ms = R.backoff_ms ? R.backoff_ms * 2 : BACKOFF_MIN_MS;
    if (R.backoff_ms > BACKOFF_MAX_MS)
        R.backoff_ms = BACKOFF_MAX_MS;
    R.next_connect_ms = now_ms() + R.backoff_ms;
    return false;
}

static void finish(struct slot *sl, int result)
{
    sl->result = result;
    atomic_store_explicit(&sl->state, SLOT_DONE, memory_order_release);
    upager__futex_wake(&sl->state, 1);
}

/* Appends the commands of one request; returns how many replies follow. */
static size_t append(struct slot *sl)
{
    size_t ps = R.page_size, n = 0;
    char key[320];
    switch (sl->op) {
    case OP_READ:
        for (size_t d = 0; d < sl->len; d += ps, n++) {
            key_of(key, sizeof key, sl->off + d);
            redisAppendCommand(R.c, "GET %s", key);
        }
        break;
    case OP_WRITE:
        for (size_t d = 0; d < sl->len; d += ps, n++) {
            size_t l = sl->len - d < ps ? sl->len - d : ps;
            key_of(key, sizeof key, sl->off + d);
            bit_set((sl->off + d) >> R.page_shift, true); /* before: a lost reply */
            redisAppendCommand(R.c, "SET %s %b", key, sl->buf + d, l);
        }
        break;
    case OP_DISCARD: {
        static char keys[UNLINK_BATCH][320];
        const char *argv[UNLINK_BATCH + 1];
        size_t argvlen[UNLINK_BATCH + 1];
        int argc = 1;
        argv[0] = "UNLINK";
        argvlen[0] = 6;
        uint64_t first = sl->off >> R.page_shift;
        uint64_t end = (sl->off + sl->len + ps - 1) >> R.page_shift;
        for (uint64_t p = first; p <= end; p++) {
            if (p < end && bit_get(p)) {
                key_of(keys[argc - 1], sizeof keys[0], p << R.page_shift);
                argv[argc] = keys[argc - 1];
                argvlen[argc] = strlen(keys[argc - 1]);
                argc++;
            }
            if (argc == UNLINK_BATCH + 1 || (p == end && argc > 1)) {
                redisAppendCommandArgv(R.c, argc, argv, argvlen);
                n++;
                argc = 1;
            }
        }
        break;
    }
    default:
        break;
    }
    return n;
}

/* Reads the replies of one request; 0, EIO (connection lost: *lost set),
 * EAGAIN (the server answered with an error a read may retry, such as
 * LOADING after a restart), ENODATA (a page written and acknowledged is
 * not on the server: it lost it) or EIO. */
static int collect(struct slot *sl, size_t n, bool *lost)
{
    size_t ps = R.page_size;
    int err = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *rep = NULL;
        if (redisGetReply(R.c, (void **)&rep) != REDIS_OK || !rep) {
            *lost = true;
            return EIO;
        }
        if (rep->type == REDIS_REPLY_ERROR) {
            if (!err)
                io_say(sl->op == OP_READ    ? "read failed"
                       : sl->op == OP_WRITE ? "write refused, the page stays in memory"
                                            : "discard failed",
                       rep->str);
            if (err != ENODATA)
                err = sl->op == OP_READ ? EAGAIN : EIO;
        } else if (sl->op == OP_READ) {
            size_t d = i * ps, l = sl->len - d < ps ? sl->len - d : ps;
            if (rep->type == REDIS_REPLY_STRING) {
                size_t m = rep->len < l ? rep->len : l;
                memcpy(sl->buf + d, rep->str, m);
                memset(sl->buf + d + m, 0, l - m);
            } else if (bit_get((sl->off + d) >> R.page_shift)) {
                /* Written, acknowledged, and gone: the server was flushed or
                 * restarted without persistence.  Never zeros in its place. */
                if (err != ENODATA)
                    io_say_now("a page written there is missing: was the server flushed, or "
                           "restarted without persistence?",
                           NULL);
                err = ENODATA;
            } else {
                memset(sl->buf + d, 0, l); /* never written: a page of zeros */
            }
        }
        freeReplyObject(rep);
    }
    if (!err && sl->op == OP_DISCARD) {
        uint64_t first = sl->off >> R.page_shift;
        uint64_t end = (sl->off + sl->len + ps - 1) >> R.page_shift;
        for (uint64_t p = first; p < end; p++)
            bit_set(p, false);
    }
    return err;
}

/* Removes every key of the prefix: SCAN MATCH prefix:* and UNLINK. */
static int clean_all(void)
{
    char pat[600];
    size_t n = 0;
    for (const char *s = R.prefix; *s && n < sizeof pat - 4; s++) {
        if (strchr("*?[]\\", *s))
            pat[n++] = '\\';
        pat[n++] = *s;
    }
    memcpy(pat + n, ":*", 3);
    char cursor[32] = "0";
    do {
        redisReply *rep = redisCommand(R.c, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
        if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
            if (rep)
                freeReplyObject(rep);
            return EIO;
        }
        snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
        redisReply *keys = rep->element[1];
        if (keys->elements) {
            const char **argv = malloc((keys->elements + 1) * sizeof *argv);
            size_t *argvlen = malloc((keys->elements + 1) * sizeof *argvlen);
            if (!argv || !argvlen) {
                free(argv);
                free(argvlen);
                freeReplyObject(rep);
                return ENOMEM;
            }
            argv[0] = "UNLINK";
            argvlen[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                argv[i + 1] = keys->element[i]->str;
                argvlen[i + 1] = keys->element[i]->len;
            }
            redisReply *u = redisCommandArgv(R.c, (int)keys->elements + 1, argv, argvlen);
            free(argv);
            free(argvlen);
            bool ok = u && u->type != REDIS_REPLY_ERROR;
            if (u)
                freeReplyObject(u);
            if (!ok) {
                freeReplyObject(rep);
                return EIO;
            }
        }
        freeReplyObject(rep);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* Compacts the batch (finished slots are NULL) and adds the slots that
 * became READY, now BUSY; returns its size.  At most NSLOT: every slot in
 * it is distinct. */
static size_t take_ready(struct slot **batch, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (batch[i])
            batch[k++] = batch[i];
    int64_t t = now_ms();
    for (int i = 0; i < NSLOT; i++) {
        uint32_t e = SLOT_READY;
        if (atomic_compare_exchange_strong_explicit(&R.slot[i].state, &e, SLOT_BUSY,
                                                    memory_order_acquire,
                                                    memory_order_relaxed)) {
            struct slot *sl = &R.slot[i];
            sl->deadline_ms = sl->op == OP_READ ? t + READ_PATIENCE_S * 1000 : t;
            batch[k++] = sl;
        }
    }
    return k;
}

static size_t count_left(struct slot **batch, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += batch[i] != NULL;
    return k;
}

/* Serves the batch until no slot is left, taking in the requests that
 * arrive meanwhile: a write is not held up behind a read that waits for
 * the server to come back. */
static void serve(struct slot **batch, size_t n)
{
    while ((n = take_ready(batch, n)) != 0) {
        int64_t t = now_ms();
        if (!ensure_connected()) {
            /* Writes and discards fail at once; reads wait for the server
             * until their deadline. */
            for (size_t i = 0; i < n; i++) {
                struct slot *sl = batch[i];
                if (sl->op != OP_READ || t >= sl->deadline_ms) {
                    if (sl->op == OP_CLEAN)
                        io_say_now("server unreachable at exit: keys left under the prefix",
                                   R.prefix);
                    finish(sl, EIO);
                    batch[i] = NULL;
                }
            }
            if (count_left(batch, n)) {
                int64_t w = R.next_connect_ms - now_ms();
                if (w > 100)
                    w = 100; /* look at new requests meanwhile */
                struct timespec ts = {0, (w > 0 ? w : 1) * 1000000L};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        size_t replies[NSLOT];
        for (size_t i = 0; i < n; i++)
            replies[i] = batch[i]->op == OP_CLEAN ? 0 : append(batch[i]);
        bool lost = false;
        for (size_t i = 0; i < n; i++) {
            struct slot *sl = batch[i];
            if (sl->op == OP_CLEAN)
                continue;
            int err = lost ? EIO : collect(sl, replies[i], &lost);
            if (err == 0 || err == ENODATA || sl->op != OP_READ ||
                now_ms() >= sl->deadline_ms) {
                finish(sl, err ? EIO : 0);
                batch[i] = NULL;
            }
        }
        if (lost) {
            drop_connection(R.c->errstr[0] ? R.c->errstr : "no reply");
            continue;
        }
        for (size_t i = 0; i < n; i++) {
            struct slot *sl = batch[i];
            if (sl && sl->op == OP_CLEAN) {
                int err = clean_all();
                if (err)
                    io_say_now("could not remove the keys at exit; left under the prefix",
                               R.prefix);
                atomic_store_explicit(&R.closed, 1, memory_order_release);
                finish(sl, err);
                batch[i] = NULL;
            }
        }
        if (count_left(batch, n)) { /* reads the server refused for now (LOADING) */
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

static void *io_thread(void *arg)
{
    (void)arg;
    struct slot *batch[NSLOT];
    for (;;) {
        uint32_t seq = atomic_load_explicit(&R.submit_seq, memory_order_acquire);
        size_t n = take_ready(batch, 0);
        if (n == 0) {
            upager__futex_wait(&R.submit_seq, seq);
            continue;
        }
        serve(batch, n);
    }
    return NULL;
}

/* ---- opening and closing ----------------------------------------------- */

static void redis_close(struct upager__store *s)
{
    (void)s;
    if (getpid() != R.pid) {
        /* A child of fork: the connection and the keys are the parent's.
         * Close the socket without a word to the server (R.c is the
         * parent's I/O thread's, perhaps half-changed at the fork). */
        int fd = atomic_exchange(&R.conn_fd, -1);
        if (fd >= 0)
            close(fd);
        R.c = NULL;
        atomic_store(&R.open, 0);
        return;
    }
    if (atomic_load(&R.open) && !atomic_load(&R.closed))
        submit(OP_CLEAN, NULL, 0, 0);
}

static void at_exit_clean(void)
{
    if (R.pid == getpid() && atomic_load(&R.open) && !atomic_load(&R.closed))
        submit(OP_CLEAN, NULL, 0, 0);
}

const struct upager__store_ops upager__store_redis_ops = {
    .version = UPAGER__STORE_VERSION,
    .read = redis_read,
    .write = redis_write,
    .discard = redis_discard,
    .sync = redis_sync,
    .close = redis_close,
};

/* The server's maxmemory-policy: CONFIG GET, else INFO memory (services
 * that disable CONFIG).  0 and the policy in out, or an errno. */
static int get_policy(char *out, size_t n)
{
    redisReply *rep = redisCommand(R.c, "CONFIG GET maxmemory-policy");
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(out, n, "%s", rep->element[1]->str);
        freeReplyObject(rep);
        return 0;
    }
    if (rep)
        freeReplyObject(rep);
    rep = redisCommand(R.c, "INFO memory");
    int err = EIO;
    if (rep && rep->type == REDIS_REPLY_STRING) {
        const char *p = strstr(rep->str, "maxmemory_policy:");
        if (p) {
            p += strlen("maxmemory_policy:");
            size_t l = strcspn(p, "\r\n");
            snprintf(out, n, "%.*s", (int)l, p);
            err = 0;
        }
    }
    if (rep)
        freeReplyObject(rep);
    return err;
}

int upager__store_redis_open(struct upager__store *s, const struct upager__config *cfg,
                             const char *label, size_t page_size, uint64_t bytes)
{
    struct redis_store *r = &R;
    pid_t parent = r->pid;
    if (r->written)
        munmap(r->written, r->written_bytes);
    memset(r, 0, sizeof *r);
    r->conn_fd = -1;
    r->pid = getpid();
    snprintf(r->host, sizeof r->host, "%s", cfg->redis_host);
    snprintf(r->user, sizeof r->user, "%s", cfg->redis_user);
    snprintf(r->password, sizeof r->password, "%s",
             cfg->store_password[0] ? cfg->store_password : cfg->redis_password);
    r->port = cfg->redis_port;
    r->db = cfg->redis_db;
    r->page_size = page_size;
    while (((size_t)1 << r->page_shift) < page_size)
        r->page_shift++;
    snprintf(r->where, sizeof r->where, "redis://%.255s:%d/%d", r->host, r->port, r->db);
    if (cfg->redis_prefix[0]) {
        /* A child of fork that starts afresh must not share its parent's keys. */
        if (parent && parent != r->pid)
            snprintf(r->prefix, sizeof r->prefix, "%s:%ld", cfg->redis_prefix, (long)r->pid);
        else
            snprintf(r->prefix, sizeof r->prefix, "%s", cfg->redis_prefix);
    } else {
        char host[128] = "localhost";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        uint64_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != sizeof rnd)
            rnd = (uint64_t)now_ms() ^ ((uint64_t)r->pid << 32) ^ (uintptr_t)&rnd;
        snprintf(r->prefix, sizeof r->prefix, "upager:%s:%ld:%016llx", host, (long)r->pid,
                 (unsigned long long)rnd);
    }

    char why[512];
    int err = connect_server(why, sizeof why);
    if (err) {
        upager__say("%s=\"%s\": %s: expected a reachable Redis server%s", label, r->where,
                    why, err == EACCES ? " and the right UPAGER_STORE_PASSWORD" : "");
        return EINVAL;
    }
    char policy[64];
    if (get_policy(policy, sizeof policy) != 0) {
        upager__say("%s=\"%s\": cannot read the server's maxmemory-policy (CONFIG GET and "
                    "INFO refused): pages could be evicted by the server, refusing it",
                    label, r->where);
        redisFree(r->c);
        r->c = NULL;
        return EINVAL;
    }
    if (strcmp(policy, "noeviction") != 0) {
        upager__say("%s=\"%s\": the server's maxmemory-policy is %s, which evicts keys and "
                    "would lose pages: expected noeviction (CONFIG SET maxmemory-policy "
                    "noeviction)",
                    label, r->where, policy);
        redisFree(r->c);
        r->c = NULL;
        return EINVAL;
    }

    r->written_bytes = (size_t)((bytes / page_size + 7) / 8 + 1);
    r->written = mmap(NULL, r->written_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r->written == MAP_FAILED) {
        r->written = NULL;
        redisFree(r->c);
        r->c = NULL;
        return ENOMEM;
    }

    /* The I/O thread takes no signal: it is never interrupted by a fault
     * handler, and SIGPIPE from a dead socket stays away from the program. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    err = pthread_create(&th, NULL, io_thread, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err) {
        upager__say("cannot start the Redis store's I/O thread (%s)", strerror(err));
        redisFree(r->c);
        r->c = NULL;
        return err;
    }
    pthread_detach(th);
    memset(s, 0, sizeof *s);
    s->ops = &upager__store_redis_ops;
    s->fd = -1;
    s->priv = r;
    atomic_store(&r->open, 1);
    static bool registered;
    if (!registered) {
        registered = true;
        atexit(at_exit_clean);
    }
    return 0;
}

const char *upager__store_redis_prefix(void)
{
    return R.prefix;
}
