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
 * returns EIO.  A bitmap of the pages written tells a page never written
 * (no key: zeros) from one the server lost (no key: EIO, never zeros).
 * The I/O thread prints at most one line every 10 s naming the server.
 * The keys of the process are removed on discard and at exit.
 *
 * A cluster (redis-cluster://) is the same with one connection per master:
 * each key goes to the node that owns its hash slot (CLUSTER SLOTS), and a
 * MOVED or ASK reply refreshes that map and sends the request again (a
 * write up to five rounds, a read until its deadline).
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
#define MAX_NODES 16         /* servers: one, or the masters of a cluster */
#define NO_NODE 0xff
#define CLUSTER_SLOTS 16384

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
    int tries;              /* I/O thread: rounds redirected (cluster)     */
};

struct node {
    char host[256];
    int port;
    redisContext *c;        /* NULL while not connected                   */
    int64_t next_connect_ms;/* backoff: no attempt before this            */
    int backoff_ms;
};

static struct redis_store {
    struct slot slot[NSLOT];
    _Atomic uint32_t submit_seq;    /* bumped on submission; I/O thread waits */
    _Atomic uint32_t free_seq;      /* bumped when a slot comes free          */
    _Atomic uint32_t free_waiters;  /* callers waiting for a slot             */
    _Atomic int open;               /* the store is up                        */
    _Atomic int closed;             /* cleaned up at exit: requests fail      */
    _Atomic int conn_fd[MAX_NODES]; /* the sockets, for a child of fork: -1   */
    pid_t pid;                      /* the process that opened it             */
    /* everything below belongs to the I/O thread once it runs */
    bool cluster;                   /* redis-cluster://                       */
    struct node node[MAX_NODES];    /* single: node[0]; cluster: seeds, then  */
    int nnodes;                     /*   the masters CLUSTER SLOTS names      */
    uint8_t slot_node[CLUSTER_SLOTS]; /* cluster: hash slot -> node, NO_NODE  */
    bool map_stale;                 /* cluster: read CLUSTER SLOTS again      */
    char user[128], password[256], prefix[256];
    char where[1100];               /* the URL without password, for messages */
    int db;
    size_t page_size;
    unsigned page_shift;
    uint8_t *written;               /* bit per page: a key may exist          */
    size_t written_bytes;
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

static size_t key_of(char *key, size_t n, uint64_t off)
{
    int l = snprintf(key, n, "%s:%llu", R.prefix, (unsigned long long)off);
    return l < 0 ? 0 : (size_t)l < n ? (size_t)l : n - 1;
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

/* CRC16 (XMODEM) of the key, or of its {hash tag}: the cluster's slot. */
static unsigned key_slot(const char *key, size_t len)
{
    const char *s = memchr(key, '{', len);
    if (s) {
        const char *e = memchr(s + 1, '}', len - (size_t)(s + 1 - key));
        if (e && e > s + 1) {
            key = s + 1;
            len = (size_t)(e - s - 1);
        }
    }
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)key[i] << 8);
        for (int k = 0; k < 8; k++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc & (CLUSTER_SLOTS - 1);
}

static int node_of(const char *key, size_t len)
{
    return R.cluster ? R.slot_node[key_slot(key, len)] : 0;
}

static void drop_node(int i, const char *why)
{
    struct node *nd = &R.node[i];
    if (nd->c) {
        char d[600];
        snprintf(d, sizeof d, "%s:%d: %s", nd->host, nd->port, why);
        io_say("connection lost, reconnecting", d);
        atomic_store(&R.conn_fd[i], -1);
        redisFree(nd->c);
        nd->c = NULL;
    }
    if (R.cluster)
        R.map_stale = true;
}

/* Connects to node i, authenticates and selects the database.  Returns 0,
 * or an errno with a reason in why.  At start-up and in the I/O thread. */
static int connect_node(int i, char *why, size_t whylen)
{
    struct node *nd = &R.node[i];
    struct timeval tv = {CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(nd->host, nd->port, tv);
    if (!c) {
        snprintf(why, whylen, "out of memory");
        return ENOMEM;
    }
    if (c->err) {
        snprintf(why, whylen, "cannot connect to %s:%d: %s", nd->host, nd->port, c->errstr);
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
    rep = R.cluster ? redisCommand(c, "PING") : redisCommand(c, "SELECT %d", R.db);
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
    nd->c = c;
    atomic_store(&R.conn_fd[i], c->fd);
    return 0;
}

/* Connects node i if needed and the backoff allows; true when connected. */
static bool ensure_node(int i)
{
    struct node *nd = &R.node[i];
    if (nd->c)
        return true;
    int64_t t = now_ms();
    if (t < nd->next_connect_ms)
        return false;
    char why[600];
    if (connect_node(i, why, sizeof why) == 0) {
        nd->backoff_ms = 0;
        return true;
    }
    io_say("server unreachable, retrying", why);
    nd->backoff_ms = nd->backoff_ms ? nd->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (nd->backoff_ms > BACKOFF_MAX_MS)
        nd->backoff_ms = BACKOFF_MAX_MS;
    nd->next_connect_ms = now_ms() + nd->backoff_ms;
    return false;
}

static int find_node(const char *host, int port, bool add)
{
    for (int i = 0; i < R.nnodes; i++)
        if (R.node[i].port == port && strcmp(R.node[i].host, host) == 0)
            return i;
    if (!add || R.nnodes == MAX_NODES)
        return -1;
    struct node *nd = &R.node[R.nnodes];
    memset(nd, 0, sizeof *nd);
    snprintf(nd->host, sizeof nd->host, "%s", host);
    nd->port = port;
    return R.nnodes++;
}

/* Cluster: reads the slot map (CLUSTER SLOTS) from the first node that
 * answers.  Returns 0, or EIO with a reason in why. */
static int refresh_map(char *why, size_t whylen)
{
    snprintf(why, whylen, "no node answered");
    for (int i = 0; i < R.nnodes; i++) {
        if (!ensure_node(i))
            continue;
        redisReply *rep = redisCommand(R.node[i].c, "CLUSTER SLOTS");
        if (!rep) {
            drop_node(i, R.node[i].c->errstr);
            continue;
        }
        if (rep->type != REDIS_REPLY_ARRAY) {
            snprintf(why, whylen, "CLUSTER SLOTS: %s",
                     rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
            freeReplyObject(rep);
            continue;
        }
        memset(R.slot_node, NO_NODE, sizeof R.slot_node);
        bool ok = rep->elements > 0;
        for (size_t k = 0; k < rep->elements && ok; k++) {
            redisReply *e = rep->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
                e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2) {
                ok = false;
                break;
            }
            redisReply *m = e->element[2];
            const char *host = m->element[0]->str && m->element[0]->str[0]
                                   ? m->element[0]->str : R.node[i].host;
            int n = find_node(host, (int)m->element[1]->integer, true);
            if (n < 0) {
                snprintf(why, whylen, "more than %d nodes", MAX_NODES);
                ok = false;
                break;
            }
            long long lo = e->element[0]->integer, hi = e->element[1]->integer;
            for (long long s = lo; s <= hi && s < CLUSTER_SLOTS; s++)
                if (s >= 0)
                    R.slot_node[s] = (uint8_t)n;
        }
        freeReplyObject(rep);
        if (ok) {
            R.map_stale = false;
            return 0;
        }
    }
    return EIO;
}

static void finish(struct slot *sl, int result)
{
    sl->result = result;
    atomic_store_explicit(&sl->state, SLOT_DONE, memory_order_release);
    upager__futex_wake(&sl->state, 1);
}

/* The keys of one request, one at a time: 1 and the key, its node and its
 * page index in *part, or 0 at the end.  *it starts at 0. */
static int next_key(const struct slot *sl, uint64_t *it, char *key, size_t n, size_t *klen,
                    int *node, uint32_t *part)
{
    size_t ps = R.page_size;
    uint64_t first = sl->off >> R.page_shift;
    uint64_t npages = (sl->len + ps - 1) / ps;
    while (*it < npages) {
        uint64_t i = (*it)++;
        if (sl->op == OP_DISCARD && !bit_get(first + i))
            continue; /* never written: no key */
        *klen = key_of(key, n, (first + i) << R.page_shift);
        *node = node_of(key, *klen);
        *part = (uint32_t)i;
        return 1;
    }
    return 0;
}

/* The commands of a round: which request, which node, which page. */
struct cmd {
    uint8_t bi;     /* index in the batch   */
    uint8_t node;
    uint32_t part;  /* page of the request  */
};
static struct cmd *cmds;
static size_t ncmds, capcmds;

static bool push_cmd(size_t bi, int node, uint32_t part)
{
    if (ncmds == capcmds) {
        size_t cap = capcmds ? capcmds * 2 : 1024;
        struct cmd *m = realloc(cmds, cap * sizeof *m);
        if (!m)
            return false;
        cmds = m;
        capcmds = cap;
    }
    cmds[ncmds++] = (struct cmd){(uint8_t)bi, (uint8_t)node, part};
    return true;
}

/* Outcomes of a request in a round, worst last. */
enum { OUT_OK, OUT_AGAIN, OUT_MOVED, OUT_LOST, OUT_FAIL, OUT_GONE };

static int worse(int a, int b)
{
    return a > b ? a : b;
}

static bool is_redirect(const redisReply *rep)
{
    return strncmp(rep->str, "MOVED", 5) == 0 || strncmp(rep->str, "ASK", 3) == 0 ||
           strncmp(rep->str, "TRYAGAIN", 8) == 0 || strncmp(rep->str, "CLUSTERDOWN", 11) == 0;
}

/* One reply for page `part` of request sl; returns its outcome. */
static int take_reply(struct slot *sl, uint32_t part, redisReply *rep)
{
    size_t ps = R.page_size;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (R.cluster && is_redirect(rep))
            return OUT_MOVED;
        io_say(sl->op == OP_READ    ? "read failed"
               : sl->op == OP_WRITE ? "write refused, the page stays in memory"
                                    : "discard failed",
               rep->str);
        return sl->op == OP_READ ? OUT_AGAIN : OUT_FAIL; /* LOADING after a restart */
    }
    if (sl->op != OP_READ)
        return OUT_OK;
    size_t d = (size_t)part * ps, l = sl->len - d < ps ? sl->len - d : ps;
    if (rep->type == REDIS_REPLY_STRING) {
        size_t m = rep->len < l ? rep->len : l;
        memcpy(sl->buf + d, rep->str, m);
        memset(sl->buf + d + m, 0, l - m);
    } else if (bit_get((sl->off + d) >> R.page_shift)) {
        /* Written, acknowledged, and gone: the server was flushed or
         * restarted without persistence.  Never zeros in its place. */
        io_say_now("a page written there is missing: was the server flushed, or "
                   "restarted without persistence?",
                   NULL);
        return OUT_GONE;
    } else {
        memset(sl->buf + d, 0, l); /* never written: a page of zeros */
    }
    return OUT_OK;
}

/* Removes every key of the prefix from every node that holds slots:
 * SCAN MATCH prefix:* and UNLINK, one key per command (a cluster refuses
 * keys of different slots in one). */
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
    int err = 0;
    for (int i = 0; i < R.nnodes; i++) {
        if (R.cluster && memchr(R.slot_node, i, sizeof R.slot_node) == NULL)
            continue; /* a seed that is not a master */
        if (!ensure_node(i)) {
            err = EIO;
            continue;
        }
        redisContext *c = R.node[i].c;
        char cursor[32] = "0";
        do {
            redisReply *rep = redisCommand(c, "SCAN %s MATCH %s COUNT 1000", cursor, pat);
            if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
                if (rep)
                    freeReplyObject(rep);
                err = EIO;
                break;
            }
            snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
            redisReply *keys = rep->element[1];
            for (size_t k = 0; k < keys->elements; k++)
                redisAppendCommand(c, "UNLINK %b", keys->element[k]->str,
                                   keys->element[k]->len);
            for (size_t k = 0; k < keys->elements; k++) {
                redisReply *u = NULL;
                if (redisGetReply(c, (void **)&u) != REDIS_OK || !u) {
                    err = EIO;
                    break;
                }
                if (u->type == REDIS_REPLY_ERROR)
                    err = EIO;
                freeReplyObject(u);
            }
            freeReplyObject(rep);
        } while (!err && strcmp(cursor, "0") != 0);
    }
    return err;
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
            sl->tries = 0;
            batch[k++] = sl;
        }
    }
    return k;
}

/* Serves the batch until no slot is left, taking in the requests that
 * arrive meanwhile: a write is not held up behind a read that waits for
 * the server to come back.  Each round pipelines the commands of every
 * request whose nodes are all connected, then reads the replies. */
static void serve(struct slot **batch, size_t n)
{
    char key[320];
    while ((n = take_ready(batch, n)) != 0) {
        int64_t t = now_ms();
        char why[600];
        if (R.cluster && R.map_stale && refresh_map(why, sizeof why) != 0)
            io_say("cannot read the cluster's slot map, retrying", why);
        int res[NSLOT];
        signed char up[MAX_NODES]; /* -1 not tried this round, 0 down, 1 up */
        memset(up, -1, sizeof up);
        /* Which requests can go: every node they need is connected. */
        for (size_t b = 0; b < n; b++) {
            struct slot *sl = batch[b];
            res[b] = OUT_OK;
            if (sl->op == OP_CLEAN)
                continue;
            uint64_t it = 0;
            size_t kl;
            int node;
            uint32_t part;
            while (next_key(sl, &it, key, sizeof key, &kl, &node, &part)) {
                if (node == NO_NODE) {
                    res[b] = OUT_LOST;
                    R.map_stale = true;
                    break;
                }
                if (up[node] < 0)
                    up[node] = ensure_node(node);
                if (!up[node]) {
                    res[b] = OUT_LOST;
                    if (R.cluster) /* a replica may have taken over */
                        R.map_stale = true;
                    break;
                }
            }
        }
        /* Send. */
        ncmds = 0;
        for (size_t b = 0; b < n; b++) {
            struct slot *sl = batch[b];
            if (sl->op == OP_CLEAN || res[b] != OUT_OK)
                continue;
            uint64_t it = 0;
            size_t kl;
            int node;
            uint32_t part;
            while (next_key(sl, &it, key, sizeof key, &kl, &node, &part)) {
                redisContext *c = R.node[node].c;
                if (!push_cmd(b, node, part)) {
                    res[b] = OUT_FAIL;
                    break;
                }
                if (sl->op == OP_READ) {
                    redisAppendCommand(c, "GET %b", key, kl);
                } else if (sl->op == OP_WRITE) {
                    size_t d = (size_t)part * R.page_size;
                    size_t l = sl->len - d < R.page_size ? sl->len - d : R.page_size;
                    bit_set((sl->off + d) >> R.page_shift, true); /* before: a lost reply */
                    redisAppendCommand(c, "SET %b %b", key, kl, sl->buf + d, l);
                } else {
                    redisAppendCommand(c, "UNLINK %b", key, kl);
                }
            }
        }
        /* Receive, in the order sent: each node's replies come in its order. */
        bool lost[MAX_NODES] = {false};
        for (size_t k = 0; k < ncmds; k++) {
            struct cmd *cm = &cmds[k];
            struct slot *sl = batch[cm->bi];
            if (lost[cm->node]) {
                res[cm->bi] = worse(res[cm->bi], OUT_LOST);
                continue;
            }
            redisReply *rep = NULL;
            if (redisGetReply(R.node[cm->node].c, (void **)&rep) != REDIS_OK || !rep) {
                lost[cm->node] = true;
                res[cm->bi] = worse(res[cm->bi], OUT_LOST);
                continue;
            }
            res[cm->bi] = worse(res[cm->bi], take_reply(sl, cm->part, rep));
            freeReplyObject(rep);
        }
        for (int i = 0; i < R.nnodes; i++)
            if (lost[i])
                drop_node(i, R.node[i].c->errstr[0] ? R.node[i].c->errstr : "no reply");
        /* Finish what is done; keep what may be tried again. */
        bool again = false;
        t = now_ms();
        for (size_t b = 0; b < n; b++) {
            struct slot *sl = batch[b];
            if (sl->op == OP_CLEAN)
                continue;
            int r = res[b];
            bool retry = false;
            if (r == OUT_MOVED) {
                R.map_stale = true;
                retry = ++sl->tries < 5 || (sl->op == OP_READ && t < sl->deadline_ms);
            } else if (r == OUT_LOST || r == OUT_AGAIN) {
                retry = sl->op == OP_READ && t < sl->deadline_ms;
            }
            if (retry) {
                again = true;
                continue;
            }
            if (r == OUT_OK && sl->op == OP_DISCARD) {
                uint64_t first = sl->off >> R.page_shift;
                uint64_t end = (sl->off + sl->len + R.page_size - 1) >> R.page_shift;
                for (uint64_t p = first; p < end; p++)
                    bit_set(p, false);
            }
            finish(sl, r == OUT_OK ? 0 : EIO);
            batch[b] = NULL;
        }
        for (size_t b = 0; b < n; b++) {
            struct slot *sl = batch[b];
            if (sl && sl->op == OP_CLEAN) {
                int err = clean_all();
                if (err)
                    io_say_now("could not remove the keys at exit; left under the prefix",
                               R.prefix);
                atomic_store_explicit(&R.closed, 1, memory_order_release);
                finish(sl, err);
                batch[b] = NULL;
            }
        }
        if (capcmds > 65536) { /* after a large discard */
            free(cmds);
            cmds = NULL;
            capcmds = 0;
        }
        if (again) { /* a server coming back, a slot moving, LOADING */
            struct timespec ts = {0, 20 * 1000000L};
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
        /* A child of fork: the connections and the keys are the parent's.
         * Close the sockets without a word to the servers (the contexts
         * are the parent's I/O thread's, perhaps half-changed at the fork). */
        for (int i = 0; i < MAX_NODES; i++) {
            int fd = atomic_exchange(&R.conn_fd[i], -1);
            if (fd >= 0)
                close(fd);
            R.node[i].c = NULL;
        }
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

/* A server's maxmemory-policy: CONFIG GET, else INFO memory (services
 * that disable CONFIG).  0 and the policy in out, or an errno. */
static int get_policy(redisContext *c, char *out, size_t n)
{
    redisReply *rep = redisCommand(c, "CONFIG GET maxmemory-policy");
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[1]->type == REDIS_REPLY_STRING) {
        snprintf(out, n, "%s", rep->element[1]->str);
        freeReplyObject(rep);
        return 0;
    }
    if (rep)
        freeReplyObject(rep);
    rep = redisCommand(c, "INFO memory");
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

static void close_all(void)
{
    for (int i = 0; i < R.nnodes; i++)
        if (R.node[i].c) {
            redisFree(R.node[i].c);
            R.node[i].c = NULL;
            atomic_store(&R.conn_fd[i], -1);
        }
}

int upager__store_redis_open(struct upager__store *s, const struct upager__config *cfg,
                             const char *label, size_t page_size, uint64_t bytes)
{
    struct redis_store *r = &R;
    pid_t parent = r->pid;
    if (r->written)
        munmap(r->written, r->written_bytes);
    memset(r, 0, sizeof *r);
    for (int i = 0; i < MAX_NODES; i++)
        r->conn_fd[i] = -1;
    r->pid = getpid();
    r->cluster = cfg->redis_cluster;
    /* "host:port[,host:port...]" for a cluster, as config.c checked it */
    if (r->cluster) {
        char list[sizeof cfg->redis_host], *save;
        snprintf(list, sizeof list, "%s", cfg->redis_host);
        for (char *t = strtok_r(list, ",", &save); t && r->nnodes < MAX_NODES;
             t = strtok_r(NULL, ",", &save)) {
            char *colon = strrchr(t, ':');
            if (!colon)
                continue;
            *colon = '\0';
            find_node(t, atoi(colon + 1), true);
        }
        snprintf(r->where, sizeof r->where, "redis-cluster://%s", cfg->redis_host);
    } else {
        find_node(cfg->redis_host, cfg->redis_port, true);
        snprintf(r->where, sizeof r->where, "redis://%.255s:%d/%d", cfg->redis_host,
                 cfg->redis_port, cfg->redis_db);
    }
    snprintf(r->user, sizeof r->user, "%s", cfg->redis_user);
    snprintf(r->password, sizeof r->password, "%s",
             cfg->store_password[0] ? cfg->store_password : cfg->redis_password);
    r->db = cfg->redis_db;
    r->page_size = page_size;
    while (((size_t)1 << r->page_shift) < page_size)
        r->page_shift++;
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

    /* Connect: the server, or the first seed of the cluster that answers,
     * then every master of the cluster. */
    char why[600] = "";
    int err = ECONNREFUSED;
    int nseeds = r->nnodes;
    for (int i = 0; i < nseeds && err; i++) {
        err = connect_node(i, why, sizeof why);
        if (err == EACCES)
            break;
    }
    if (!err && r->cluster && refresh_map(why, sizeof why) != 0)
        err = EIO;
    for (int i = 0; !err && r->cluster && i < r->nnodes; i++)
        if (!r->node[i].c && memchr(r->slot_node, i, sizeof r->slot_node))
            err = connect_node(i, why, sizeof why);
    if (err) {
        upager__say("%s=\"%s\": %s: expected a reachable Redis %s%s", label, r->where, why,
                    r->cluster ? "cluster" : "server",
                    err == EACCES ? " and the right UPAGER_STORE_PASSWORD" : "");
        close_all();
        return EINVAL;
    }
    for (int i = 0; i < r->nnodes; i++) {
        if (!r->node[i].c)
            continue;
        char policy[64];
        if (get_policy(r->node[i].c, policy, sizeof policy) != 0) {
            upager__say("%s=\"%s\": cannot read the maxmemory-policy of %s:%d (CONFIG GET "
                        "and INFO refused): pages could be evicted by the server, refusing it",
                        label, r->where, r->node[i].host, r->node[i].port);
            close_all();
            return EINVAL;
        }
        if (strcmp(policy, "noeviction") != 0) {
            upager__say("%s=\"%s\": the maxmemory-policy of %s:%d is %s, which evicts keys "
                        "and would lose pages: expected noeviction (CONFIG SET "
                        "maxmemory-policy noeviction)",
                        label, r->where, r->node[i].host, r->node[i].port, policy);
            close_all();
            return EINVAL;
        }
    }

    r->written_bytes = (size_t)((bytes / page_size + 7) / 8 + 1);
    r->written = mmap(NULL, r->written_bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (r->written == MAP_FAILED) {
        r->written = NULL;
        close_all();
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
        close_all();
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
