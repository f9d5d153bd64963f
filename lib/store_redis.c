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
 *   bump submit_seq, wake if asleep ------->  scan slots: READY -> BUSY
 *                                              pipeline GET/SET/UNLINK,
 *                                              values read into buf
 *   futex wait on the slot's state  <--------  result; -> DONE, wake if asleep
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
 * write up to five rounds, a read until its deadline).  MOVED names the
 * slot's owner, which is used at once; ASK sends that one page to the node
 * named, preceded by ASKING, for one try.  Writes to a master that has
 * replicas (in the slot map, or in CLUSTER NODES, which also lists the
 * replicas that are down or hold no data yet) are followed by WAIT 1
 * (WAIT_MS): when no
 * replica took them, they fail (EIO, the pages stay dirty and are written
 * again later) rather than count, so a failover does not lose them.  With
 * one server nothing waits: its persistence is the server's business.
 *
 * write_many (the pager's I/O thread) posts all its extents before waking
 * the I/O thread: they go out in one round.
 *
 * Not here: the URL parsing (config.c); the choice of store (init.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
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
/* Spinning before a futex sleep saves a wake-up only when the spinner
 * has a core to itself: on 2 vCPUs shared with the server it lost (the
 * spinner takes the CPU the server or the I/O thread needs; measured, see
 * bench/RESULTS.md), so it is on only with 4 CPUs or more (not measured). */
static int SPIN_US, IO_SPIN_US; /* a waiter, the I/O thread: spin this long */
#define SPIN_US_MANY_CPUS 30
#define SLEEPING 0x100u      /* slot state bit: its caller sleeps on it   */
#define RBUF 65536           /* a node's buffer for reply lines           */
#define MAX_ASK 8            /* ASK redirections a request keeps at once  */
#define WAIT_MS 1000         /* a write waits this long for a replica     */

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
    int nask;               /* I/O thread: pages sent elsewhere by ASK     */
    uint32_t ask_part[MAX_ASK]; /*   which pages                           */
    uint8_t ask_node[MAX_ASK];  /*   and where, for the next round only    */
};

struct node {
    char host[256];
    int port;
    redisContext *c;        /* NULL while not connected                   */
    int64_t next_connect_ms;/* backoff: no attempt before this            */
    int backoff_ms;
    int nreplicas;          /* cluster: replicas in the slot map           */
    int role_replicas;      /* cluster: replicas CLUSTER NODES lists        */
    char *rbuf;             /* replies received, not yet parsed (RBUF)     */
    size_t rpos, rlen;      /* rbuf[rpos, rlen) is unparsed                */
};

static struct redis_store {
    struct slot slot[NSLOT];
    _Atomic uint32_t submit_seq;    /* bumped on submission; I/O thread waits */
    _Atomic uint32_t free_seq;      /* bumped when a slot comes free          */
    _Atomic uint32_t free_waiters;  /* callers waiting for a slot             */
    _Atomic uint32_t io_sleeping;   /* the I/O thread sleeps on submit_seq    */
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

static int64_t now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* the vDSO: no system call */
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* Wakes the I/O thread for the slots made READY, if it sleeps. */
static void kick(void)
{
    atomic_fetch_add_explicit(&R.submit_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&R.io_sleeping, memory_order_seq_cst))
        upager__futex_wake(&R.submit_seq, 1);
}

/* A FREE slot, now FILLING; waits for one when all are taken.  Kicks the
 * I/O thread before it waits: the caller may hold READY slots itself. */
static struct slot *claim(void)
{
    struct redis_store *r = &R;
    for (;;) {
        uint32_t fseq = atomic_load_explicit(&r->free_seq, memory_order_acquire);
        for (int i = 0; i < NSLOT; i++) {
            uint32_t e = SLOT_FREE;
            if (atomic_compare_exchange_strong_explicit(&r->slot[i].state, &e, SLOT_FILLING,
                                                        memory_order_acquire,
                                                        memory_order_relaxed))
                return &r->slot[i];
        }
        kick();
        atomic_fetch_add(&r->free_waiters, 1);
        upager__futex_wait(&r->free_seq, fseq);
        atomic_fetch_sub(&r->free_waiters, 1);
    }
}

/* Fills a claimed slot and hands it to the I/O thread (kick() wakes it). */
static void post(struct slot *sl, int op, void *buf, size_t len, uint64_t off)
{
    sl->op = op;
    sl->buf = buf;
    sl->len = len;
    sl->off = off;
    sl->result = EIO;
    atomic_store_explicit(&sl->state, SLOT_READY, memory_order_release);
}

/* Waits for a posted slot to be DONE: spins SPIN_US (the I/O thread
 * answers within a round trip on loopback, and a futex sleep costs a
 * wake-up on each side), then sleeps with SLEEPING set so that finish()
 * knows to wake it.  Frees the slot; returns its result. */
static int wait_done(struct slot *sl)
{
    struct redis_store *r = &R;
    int64_t until = 0;
    for (unsigned spins = 0;; spins++) {
        uint32_t st = atomic_load_explicit(&sl->state, memory_order_acquire);
        if (st == SLOT_DONE)
            break;
        if (!(st & SLEEPING)) {
            if (spins % 64 != 63 || (until ? now_us() < until : (until = now_us() + SPIN_US))) {
                upager__cpu_relax();
                continue;
            }
            if (!atomic_compare_exchange_strong_explicit(&sl->state, &st, st | SLEEPING,
                                                         memory_order_acq_rel,
                                                         memory_order_acquire))
                continue;
            st |= SLEEPING;
        }
        upager__futex_wait(&sl->state, st);
    }
    int res = sl->result;
    atomic_store_explicit(&sl->state, SLOT_FREE, memory_order_release);
    atomic_fetch_add_explicit(&r->free_seq, 1, memory_order_release);
    if (atomic_load(&r->free_waiters))
        upager__futex_wake(&r->free_seq, INT_MAX);
    return res;
}

static int submit(int op, void *buf, size_t len, uint64_t off)
{
    if (atomic_load_explicit(&R.closed, memory_order_acquire))
        return EIO;
    struct slot *sl = claim();
    post(sl, op, buf, len, off);
    kick();
    return wait_done(sl);
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

/* All extents posted before the I/O thread is woken, so that they go out
 * in one round: pipelined on each node, the nodes of a cluster at once. */
static int redis_write_many(struct upager__store *s, const struct upager__extent *v, size_t n,
                            int *err)
{
    (void)s;
    struct slot *sl[UPAGER__STORE_BATCH];
    int first = 0;
    if (n > UPAGER__STORE_BATCH)
        n = UPAGER__STORE_BATCH; /* the interface's bound; never more */
    bool closed = atomic_load_explicit(&R.closed, memory_order_acquire);
    for (size_t i = 0; i < n; i++) {
        sl[i] = NULL;
        err[i] = closed ? EIO : (v[i].off & (R.page_size - 1)) ? EINVAL : 0;
        if (err[i] || v[i].len == 0)
            continue;
        sl[i] = claim();
        post(sl[i], OP_WRITE, (void *)v[i].buf, v[i].len, v[i].off);
    }
    kick();
    for (size_t i = 0; i < n; i++) {
        if (sl[i])
            err[i] = wait_done(sl[i]);
        if (err[i] && !first)
            first = err[i];
    }
    return first;
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
    if (!nd->rbuf && !(nd->rbuf = malloc(RBUF))) {
        snprintf(why, whylen, "out of memory");
        redisFree(c);
        return ENOMEM;
    }
    nd->rpos = nd->rlen = 0;
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

/* Cluster: the replicas each master is configured with, from CLUSTER
 * NODES as node i sees it.  CLUSTER SLOTS lists only the replicas that
 * are up and hold data (none in a fresh cluster); a replica that is down
 * still counts here, so that writes wait for it (and fail, keeping the
 * pages dirty, rather than count on a master alone).  Lines are
 *   <id> <ip:port@cport[,host]> <flags> <master-id|-> ...  */
static void count_replicas(int i)
{
    for (int n = 0; n < R.nnodes; n++)
        R.node[n].role_replicas = 0;
    redisReply *rep = redisCommand(R.node[i].c, "CLUSTER NODES");
    if (!rep || rep->type != REDIS_REPLY_STRING) {
        if (rep)
            freeReplyObject(rep);
        return;
    }
    enum { MAXN = 64 };
    char ids[MAXN][41];
    int node_of[MAXN], nids = 0;
    /* Pass 1: masters, id -> node index. */
    for (int pass = 0; pass < 2; pass++) {
        const char *line = rep->str;
        while (line && *line) {
            const char *end = strchr(line, '\n');
            char buf[512], id[64], addr[300], flags[200], master[64];
            size_t l = end ? (size_t)(end - line) : strlen(line);
            if (l >= sizeof buf)
                l = sizeof buf - 1;
            memcpy(buf, line, l);
            buf[l] = '\0';
            line = end ? end + 1 : NULL;
            if (sscanf(buf, "%63s %299s %199s %63s", id, addr, flags, master) != 4)
                continue;
            if (pass == 0 && strstr(flags, "master") && nids < MAXN) {
                char *at = strchr(addr, '@'), *colon = strrchr(addr, ':');
                if (at)
                    *at = '\0';
                colon = strrchr(addr, ':');
                if (!colon)
                    continue;
                *colon = '\0';
                const char *host = addr[0] ? addr : R.node[i].host;
                snprintf(ids[nids], sizeof ids[nids], "%.40s", id);
                node_of[nids++] = find_node(host, atoi(colon + 1), false);
            } else if (pass == 1 && strstr(flags, "slave")) {
                for (int k = 0; k < nids; k++)
                    if (strcmp(ids[k], master) == 0 && node_of[k] >= 0)
                        R.node[node_of[k]].role_replicas++;
            }
        }
    }
    freeReplyObject(rep);
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
            R.node[n].nreplicas = (int)e->elements - 3;
            long long lo = e->element[0]->integer, hi = e->element[1]->integer;
            for (long long s = lo; s <= hi && s < CLUSTER_SLOTS; s++)
                if (s >= 0)
                    R.slot_node[s] = (uint8_t)n;
        }
        freeReplyObject(rep);
        if (ok) {
            count_replicas(i);
            R.map_stale = false;
            return 0;
        }
    }
    return EIO;
}

static void finish(struct slot *sl, int result)
{
    sl->result = result;
    uint32_t old = atomic_exchange_explicit(&sl->state, SLOT_DONE, memory_order_acq_rel);
    if (old & SLEEPING)
        upager__futex_wake(&sl->state, 1);
}

/* The node an ASK redirection sent page `part` of sl to, or -1. */
static int ask_node_of(const struct slot *sl, uint32_t part)
{
    for (int k = 0; k < sl->nask; k++)
        if (sl->ask_part[k] == part)
            return sl->ask_node[k];
    return -1;
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
        int a = sl->nask ? ask_node_of(sl, (uint32_t)i) : -1;
        *node = a >= 0 ? a : node_of(key, *klen);
        *part = (uint32_t)i;
        return 1;
    }
    return 0;
}

/* ---- the wire: commands written and replies read without copies ------ *
 *
 * A round's commands are written with sendmsg straight from the callers'
 * buffers (a SET's value is never copied), and a GET's value is read with
 * recv straight into the caller's buffer; only the short lines go through
 * the node's rbuf.  All nodes are served at once from one poll loop.
 * hiredis keeps the connections and the commands outside a round
 * (AUTH, CLUSTER SLOTS, SCAN): between rounds both readers are empty. */

enum { K_DATA, K_ASKING, K_WAIT };

/* The commands of a round: which request, which node, which page. */
struct cmd {
    uint8_t bi;     /* index in the batch                      */
    uint8_t node;
    uint8_t kind;   /* K_*                                     */
    uint32_t part;  /* page of the request                     */
    uint32_t next;  /* the node's next command, or UINT32_MAX  */
};
static struct cmd *cmds;
static size_t ncmds, capcmds;

/* A piece of output: bytes of a caller's buffer, or of hdr (p == NULL). */
struct piece {
    const char *p;
    size_t off, len;
};
static struct piece *pieces;
static size_t npieces, cappieces;
static char *hdr;
static size_t nhdr, caphdr;

struct wire {               /* a node's share of the round            */
    size_t first, count;    /* its pieces: a run of the per-node list  */
    size_t sent_piece, sent_off;
    uint32_t head, tail;    /* its commands, in the order sent; head:  */
                            /*   the next one to be answered            */
    uint32_t head0;         /* its first command                       */
    bool lost;
};
static struct wire W[MAX_NODES];

static bool grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    void *m = realloc(*p, c * size);
    if (!m)
        return false;
    *p = m;
    *cap = c;
    return true;
}

static bool push_cmd(size_t bi, int node, int kind, uint32_t part)
{
    if (!grow((void **)&cmds, &capcmds, ncmds + 1, sizeof *cmds))
        return false;
    uint32_t k = (uint32_t)ncmds++;
    cmds[k] = (struct cmd){(uint8_t)bi, (uint8_t)node, (uint8_t)kind, part, UINT32_MAX};
    struct wire *w = &W[node];
    if (w->head == UINT32_MAX)
        w->head = k;
    else
        cmds[w->tail].next = k;
    w->tail = k;
    return true;
}

/* The round's pieces as they are made, each tagged with its node. */
struct tagged {
    uint8_t node;
    struct piece pc;
};
static struct tagged *tags;
static size_t ntags, captags;

static bool push_piece(int node, const char *p, size_t off, size_t len)
{
    if (!grow((void **)&tags, &captags, ntags + 1, sizeof *tags))
        return false;
    tags[ntags++] = (struct tagged){(uint8_t)node, {p, off, len}};
    return true;
}

/* Formats a command line into hdr, as a piece for node. */
static bool push_text(int node, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool push_text(int node, const char *fmt, ...)
{
    if (!grow((void **)&hdr, &caphdr, nhdr + 400, 1))
        return false;
    va_list ap;
    va_start(ap, fmt);
    int l = vsnprintf(hdr + nhdr, caphdr - nhdr, fmt, ap);
    va_end(ap);
    if (l < 0 || (size_t)l >= caphdr - nhdr)
        return false;
    bool ok = push_piece(node, NULL, nhdr, (size_t)l);
    nhdr += (size_t)l;
    return ok;
}

/* One command of the round for node: GET/SET/UNLINK of a key, ASKING, or
 * WAIT for a replica. */
static bool push_data(size_t bi, int node, uint32_t part, int op, const char *key, size_t kl,
                      const char *val, size_t vl)
{
    if (!push_cmd(bi, node, K_DATA, part))
        return false;
    if (op == OP_READ)
        return push_text(node, "*2\r\n$3\r\nGET\r\n$%zu\r\n%.*s\r\n", kl, (int)kl, key);
    if (op == OP_DISCARD)
        return push_text(node, "*2\r\n$6\r\nUNLINK\r\n$%zu\r\n%.*s\r\n", kl, (int)kl, key);
    return push_text(node, "*3\r\n$3\r\nSET\r\n$%zu\r\n%.*s\r\n$%zu\r\n", kl, (int)kl, key,
                     vl) &&
           push_piece(node, val, 0, vl) && push_piece(node, "\r\n", 0, 2);
}

/* Orders the round's pieces by node (stable), for W[i].first/count. */
static bool arrange_pieces(void)
{
    if (!grow((void **)&pieces, &cappieces, ntags ? ntags : 1, sizeof *pieces))
        return false;
    size_t at = 0;
    for (int i = 0; i < R.nnodes; i++) {
        W[i].first = at;
        for (size_t k = 0; k < ntags; k++)
            if (tags[k].node == i)
                pieces[at++] = tags[k].pc;
        W[i].count = at - W[i].first;
    }
    npieces = at;
    return true;
}

/* Sends what node i's socket takes now.  0, or -1 when the connection broke. */
static int send_some(int i)
{
    struct wire *w = &W[i];
    while (w->sent_piece < w->count) {
        struct iovec iov[64];
        int n = 0;
        for (size_t k = w->sent_piece; k < w->count && n < 64; k++, n++) {
            const struct piece *pc = &pieces[w->first + k];
            const char *b = pc->p ? pc->p : hdr + pc->off;
            size_t skip = k == w->sent_piece ? w->sent_off : 0;
            iov[n].iov_base = (void *)(b + skip);
            iov[n].iov_len = pc->len - skip;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t s = sendmsg(R.node[i].c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (s < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
        size_t left = (size_t)s;
        while (left) {
            const struct piece *pc = &pieces[w->first + w->sent_piece];
            size_t rest = pc->len - w->sent_off;
            if (left < rest) {
                w->sent_off += left;
                left = 0;
            } else {
                left -= rest;
                w->sent_piece++;
                w->sent_off = 0;
            }
        }
    }
    return 0;
}

/* A reply of a round, parsed. */
struct reply {
    char type;          /* '+', '-', ':', '$' (a value), 'n' (nil) */
    long long integer;  /* ':'                                     */
    const char *str;    /* '+' and '-': the line, NUL-terminated   */
};

static int on_reply(struct slot **batch, int *res, const struct cmd *cm, const struct reply *rp);

/* The reply being read on a node: its value's bytes go to dst. */
struct rstate {
    bool in_value;
    char *dst;          /* the caller's buffer, or NULL: skipped     */
    size_t want;        /* bytes still for dst                       */
    size_t skip;        /* bytes to skip after them (excess, CRLF)   */
    size_t zero;        /* bytes of dst to zero after (a short value) */
};
static struct rstate RS[MAX_NODES];

/* The destination of a GET's value: the caller's buffer, page `part`. */
static char *value_dst(const struct cmd *cm, struct slot **batch, size_t *room)
{
    struct slot *sl = batch[cm->bi];
    if (cm->kind != K_DATA || sl->op != OP_READ) {
        *room = 0;
        return NULL;
    }
    size_t d = (size_t)cm->part * R.page_size;
    *room = sl->len - d < R.page_size ? sl->len - d : R.page_size;
    return sl->buf + d;
}

/* recv without waiting: bytes read, 0 when none are there yet, or -1
 * (errno set) when the connection broke. */
static ssize_t recv_now(int fd, void *buf, size_t len)
{
    ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n == 0)
        errno = ECONNRESET;
    return n <= 0 ? -1 : n;
}

/* Reads and parses what node i has sent.  0, or -1 when the connection
 * broke or the reply made no sense. */
static int recv_some(int i, struct slot **batch, int *res)
{
    struct node *nd = &R.node[i];
    struct wire *w = &W[i];
    struct rstate *rs = &RS[i];
    for (;;) {
        if (w->head == UINT32_MAX) {
            errno = EPROTO;
            return nd->rpos == nd->rlen ? 0 : -1; /* a reply nobody asked for */
        }
        struct cmd *cm = &cmds[w->head];
        if (rs->in_value) {
            size_t have = nd->rlen - nd->rpos;
            if (rs->want && have) { /* the part read with the line before */
                size_t t = have < rs->want ? have : rs->want;
                memcpy(rs->dst, nd->rbuf + nd->rpos, t);
                rs->dst += t;
                rs->want -= t;
                nd->rpos += t;
            } else if (rs->want) { /* straight into the caller's buffer */
                ssize_t n = recv_now(nd->c->fd, rs->dst, rs->want);
                if (n <= 0)
                    return (int)n;
                rs->dst += n;
                rs->want -= (size_t)n;
            } else if (rs->skip && have) {
                size_t t = have < rs->skip ? have : rs->skip;
                nd->rpos += t;
                rs->skip -= t;
            } else if (rs->skip) {
                nd->rpos = nd->rlen = 0;
                ssize_t n = recv_now(nd->c->fd, nd->rbuf, RBUF);
                if (n <= 0)
                    return (int)n;
                nd->rlen = (size_t)n;
            } else {
                memset(rs->dst, 0, rs->zero);
                rs->in_value = false;
                struct reply rp = {'$', 0, NULL};
                w->head = cm->next;
                on_reply(batch, res, cm, &rp);
            }
            continue;
        }
        char *line = nd->rbuf + nd->rpos;
        char *eol = memchr(line, '\n', nd->rlen - nd->rpos);
        if (!eol) {
            if (nd->rpos) {
                memmove(nd->rbuf, line, nd->rlen - nd->rpos);
                nd->rlen -= nd->rpos;
                nd->rpos = 0;
            }
            if (nd->rlen == RBUF) {
                errno = EPROTO;
                return -1; /* a line longer than the buffer */
            }
            ssize_t n = recv_now(nd->c->fd, nd->rbuf + nd->rlen, RBUF - nd->rlen);
            if (n <= 0)
                return (int)n;
            nd->rlen += (size_t)n;
            continue;
        }
        nd->rpos = (size_t)(eol + 1 - nd->rbuf);
        errno = EPROTO;
        if (eol == line || eol[-1] != '\r')
            return -1;
        eol[-1] = '\0';
        struct reply rp = {line[0], 0, line + 1};
        switch (line[0]) {
        case '+':
        case '-':
            break;
        case ':':
            rp.integer = strtoll(line + 1, NULL, 10);
            break;
        case '$': {
            long long vl = strtoll(line + 1, NULL, 10);
            if (vl < 0) {
                rp.type = 'n';
                break;
            }
            size_t room;
            rs->dst = value_dst(cm, batch, &room);
            rs->want = rs->dst ? ((size_t)vl < room ? (size_t)vl : room) : 0;
            rs->skip = (size_t)vl - rs->want + 2;
            rs->zero = rs->dst ? room - rs->want : 0;
            rs->in_value = true;
            continue;
        }
        default:
            return -1; /* arrays and RESP3 are never asked for */
        }
        w->head = cm->next;
        on_reply(batch, res, cm, &rp);
    }
}

/* Outcomes of a request in a round, worst last. */
enum { OUT_OK, OUT_AGAIN, OUT_ASK, OUT_MOVED, OUT_LOST, OUT_FAIL, OUT_GONE };

static int worse(int a, int b)
{
    return a > b ? a : b;
}

/* "MOVED 3999 127.0.0.1:6381" or "ASK ...": the node named (added to the
 * table if new), or -1. */
static int redirect_node(const char *msg)
{
    const char *sp = strrchr(msg, ' ');
    const char *colon = strrchr(msg, ':');
    if (!sp || !colon || colon < sp)
        return -1;
    char host[256];
    size_t hl = (size_t)(colon - sp - 1);
    if (hl == 0 || hl >= sizeof host)
        return -1;
    memcpy(host, sp + 1, hl);
    host[hl] = '\0';
    return find_node(host, atoi(colon + 1), true);
}

/* One reply of a round; adds its outcome to res[cm->bi]. */
static int on_reply(struct slot **batch, int *res, const struct cmd *cm, const struct reply *rp)
{
    struct slot *sl = batch[cm->bi];
    int *r = &res[cm->bi];
    if (cm->kind == K_ASKING)
        return 0; /* an error here shows in the command it precedes */
    if (cm->kind == K_WAIT) {
        if (rp->type == ':' && rp->integer >= 1)
            return 0;
        /* No replica took the writes in time: a failover could lose them.
         * Fail every write of the round on this node; the map is read
         * again (a replica that failed leaves it). */
        io_say("no replica acknowledged a write, the pages stay in memory",
               rp->type == '-' ? rp->str : R.node[cm->node].host);
        R.map_stale = true;
        for (uint32_t k = W[cm->node].head0; k != UINT32_MAX && &cmds[k] != cm; k = cmds[k].next)
            if (batch[cmds[k].bi]->op == OP_WRITE)
                res[cmds[k].bi] = worse(res[cmds[k].bi], OUT_FAIL);
        return 0;
    }
    if (rp->type == '-') {
        if (R.cluster && strncmp(rp->str, "ASK ", 4) == 0) {
            int n = redirect_node(rp->str);
            if (n >= 0 && sl->nask < MAX_ASK) {
                sl->ask_part[sl->nask] = cm->part;
                sl->ask_node[sl->nask++] = (uint8_t)n;
                *r = worse(*r, OUT_ASK);
            } else {
                *r = worse(*r, OUT_MOVED);
            }
            return 0;
        }
        if (R.cluster && strncmp(rp->str, "MOVED ", 6) == 0) {
            /* The slot's owner, from the node that knows: follow it at
             * once (a map read elsewhere may not have seen the change). */
            int n = redirect_node(rp->str);
            long hs = strtol(rp->str + 6, NULL, 10);
            if (n >= 0 && hs >= 0 && hs < CLUSTER_SLOTS) {
                R.slot_node[hs] = (uint8_t)n;
                *r = worse(*r, OUT_ASK); /* retried at once, the map kept */
            } else {
                *r = worse(*r, OUT_MOVED);
            }
            return 0;
        }
        if (R.cluster && (strncmp(rp->str, "TRYAGAIN", 8) == 0 ||
                          strncmp(rp->str, "CLUSTERDOWN", 11) == 0)) {
            *r = worse(*r, OUT_MOVED);
            return 0;
        }
        io_say(sl->op == OP_READ    ? "read failed"
               : sl->op == OP_WRITE ? "write refused, the page stays in memory"
                                    : "discard failed",
               rp->str);
        *r = worse(*r, sl->op == OP_READ ? OUT_AGAIN : OUT_FAIL); /* LOADING after a restart */
        return 0;
    }
    if (sl->op != OP_READ || rp->type == '$')
        return 0;
    size_t d = (size_t)cm->part * R.page_size;
    size_t l = sl->len - d < R.page_size ? sl->len - d : R.page_size;
    if (rp->type != 'n') {
        *r = worse(*r, OUT_AGAIN); /* not a value: never zeros in its place */
    } else if (bit_get((sl->off + d) >> R.page_shift)) {
        /* Written, acknowledged, and gone: the server was flushed or
         * restarted without persistence.  Never zeros in its place. */
        io_say_now("a page written there is missing: was the server flushed, or "
                   "restarted without persistence?",
                   NULL);
        *r = worse(*r, OUT_GONE);
    } else {
        memset(sl->buf + d, 0, l); /* never written: a page of zeros */
    }
    return 0;
}

/* Sends the round's pieces and reads every reply, on all nodes at once.
 * A node that breaks, or says nothing for COMMAND_TIMEOUT_S, is marked
 * lost with the commands it did not answer. */
static void exchange(struct slot **batch, int *res)
{
    int64_t last = now_ms();
    for (;;) {
        struct pollfd pf[MAX_NODES];
        int who[MAX_NODES], np = 0;
        for (int i = 0; i < R.nnodes; i++) {
            struct wire *w = &W[i];
            if (w->lost || (w->head == UINT32_MAX && w->sent_piece == w->count))
                continue;
            short ev = 0;
            if (w->sent_piece < w->count)
                ev |= POLLOUT;
            if (w->head != UINT32_MAX)
                ev |= POLLIN;
            pf[np] = (struct pollfd){R.node[i].c->fd, ev, 0};
            who[np++] = i;
        }
        if (np == 0)
            return;
        int64_t t = now_ms();
        int left = (int)(last + COMMAND_TIMEOUT_S * 1000 - t);
        int k = left > 0 ? poll(pf, (nfds_t)np, left) : 0;
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) { /* silence: every node still owing is lost */
            for (int j = 0; j < np; j++) {
                W[who[j]].lost = true;
                snprintf(R.node[who[j]].c->errstr, sizeof R.node[who[j]].c->errstr,
                         "no reply in %d s", COMMAND_TIMEOUT_S);
            }
            return;
        }
        last = now_ms();
        for (int j = 0; j < np; j++) {
            int i = who[j];
            if (!pf[j].revents)
                continue;
            int bad = 0;
            if (pf[j].revents & (POLLOUT | POLLERR | POLLHUP))
                bad = send_some(i);
            if (!bad && (pf[j].revents & (POLLIN | POLLERR | POLLHUP)))
                bad = recv_some(i, batch, res);
            if (bad) {
                W[i].lost = true;
                snprintf(R.node[i].c->errstr, sizeof R.node[i].c->errstr, "%s",
                         strerror(errno));
            }
        }
    }
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
        struct slot *sl = &R.slot[i];
        uint32_t e = atomic_load_explicit(&sl->state, memory_order_relaxed);
        if ((e & ~SLEEPING) != SLOT_READY ||
            !atomic_compare_exchange_strong_explicit(&sl->state, &e,
                                                     SLOT_BUSY | (e & SLEEPING),
                                                     memory_order_acquire,
                                                     memory_order_relaxed))
            continue;
        sl->deadline_ms = sl->op == OP_READ ? t + READ_PATIENCE_S * 1000 : t;
        sl->tries = 0;
        sl->nask = 0;
        batch[k++] = sl;
    }
    return k;
}

static bool any_ready(void)
{
    for (int i = 0; i < NSLOT; i++)
        if ((atomic_load_explicit(&R.slot[i].state, memory_order_relaxed) & ~SLEEPING) ==
            SLOT_READY)
            return true;
    return false;
}

/* Serves the batch until no slot is left, taking in the requests that
 * arrive meanwhile: a write is not held up behind a read that waits for
 * the server to come back.  Each round pipelines the commands of every
 * request whose nodes are all connected, then reads the replies. */
static void serve(struct slot **batch, size_t n)
{
    char key[320];
    while ((n = take_ready(batch, n)) != 0) {
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
        /* The round's commands, each node's in the order of the batch. */
        ncmds = ntags = nhdr = 0;
        for (int i = 0; i < MAX_NODES; i++) {
            W[i] = (struct wire){.head = UINT32_MAX, .tail = UINT32_MAX};
            RS[i].in_value = false;
        }
        bool wrote[MAX_NODES] = {false};
        for (size_t b = 0; b < n; b++) {
            struct slot *sl = batch[b];
            if (sl->op == OP_CLEAN || res[b] != OUT_OK)
                continue;
            uint64_t it = 0;
            size_t kl;
            int node;
            uint32_t part;
            while (next_key(sl, &it, key, sizeof key, &kl, &node, &part)) {
                size_t d = (size_t)part * R.page_size;
                size_t l = sl->len - d < R.page_size ? sl->len - d : R.page_size;
                bool ok = true;
                if (sl->nask && ask_node_of(sl, part) >= 0)
                    ok = push_cmd(b, node, K_ASKING, part) &&
                         push_text(node, "*1\r\n$6\r\nASKING\r\n");
                if (sl->op == OP_WRITE) {
                    bit_set((sl->off + d) >> R.page_shift, true); /* before: a lost reply */
                    wrote[node] = true;
                }
                if (!ok || !push_data(b, node, part, sl->op, key, kl, sl->buf + d, l)) {
                    res[b] = OUT_FAIL; /* out of memory: its commands go out unanswered */
                    break;
                }
            }
            sl->nask = 0; /* an ASK holds for one try */
        }
        /* Writes to a master with replicas wait for one of them. */
        for (int i = 0; i < R.nnodes; i++)
            if (wrote[i] && (R.node[i].nreplicas > 0 || R.node[i].role_replicas > 0)) {
                char ms[16];
                int l = snprintf(ms, sizeof ms, "%d", WAIT_MS);
                if (!push_cmd(0, i, K_WAIT, 0) ||
                    !push_text(i, "*3\r\n$4\r\nWAIT\r\n$1\r\n1\r\n$%d\r\n%s\r\n", l, ms))
                    W[i].lost = true;
            }
        for (int i = 0; i < R.nnodes; i++)
            W[i].head0 = W[i].head;
        if (arrange_pieces())
            exchange(batch, res);
        else
            for (int i = 0; i < R.nnodes; i++)
                W[i].lost = W[i].head != UINT32_MAX;
        /* What a lost node did not answer is lost too. */
        for (int i = 0; i < R.nnodes; i++) {
            if (!W[i].lost)
                continue;
            for (uint32_t k = W[i].head; k != UINT32_MAX; k = cmds[k].next)
                if (cmds[k].kind != K_WAIT)
                    res[cmds[k].bi] = worse(res[cmds[k].bi], OUT_LOST);
                else /* the writes before it are not known to be replicated */
                    for (uint32_t j = W[i].head0; j != k; j = cmds[j].next)
                        if (batch[cmds[j].bi]->op == OP_WRITE)
                            res[cmds[j].bi] = worse(res[cmds[j].bi], OUT_LOST);
            drop_node(i, R.node[i].c && R.node[i].c->errstr[0] ? R.node[i].c->errstr
                                                               : "no reply");
        }
        /* Finish what is done; keep what may be tried again. */
        bool again = false;
        int64_t t = now_ms();
        for (size_t b = 0; b < n; b++) {
            struct slot *sl = batch[b];
            if (sl->op == OP_CLEAN)
                continue;
            int r = res[b];
            bool retry = false;
            if (r == OUT_ASK || r == OUT_MOVED) {
                if (r == OUT_MOVED)
                    R.map_stale = true;
                retry = ++sl->tries < 5 || (sl->op == OP_READ && t < sl->deadline_ms);
            } else if (r == OUT_LOST || r == OUT_AGAIN) {
                retry = sl->op == OP_READ && t < sl->deadline_ms;
            }
            if (r != OUT_ASK)
                sl->nask = 0;
            if (retry) {
                again = again || r != OUT_ASK;
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
            free(tags);
            free(pieces);
            free(hdr);
            cmds = NULL;
            tags = NULL;
            pieces = NULL;
            hdr = NULL;
            capcmds = captags = cappieces = caphdr = 0;
        }
        if (again) { /* a server coming back, a slot moving, LOADING */
            struct timespec ts = {0, 20 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
}

/* Waits for work: spins IO_SPIN_US (a faulting program sends the next
 * request soon after the last answer), then sleeps on submit_seq with
 * io_sleeping set, so that kick() knows to wake it. */
static void *io_thread(void *arg)
{
    (void)arg;
    struct slot *batch[NSLOT];
    for (;;) {
        size_t n = take_ready(batch, 0);
        if (n) {
            serve(batch, n);
            continue;
        }
        int64_t until = now_us() + IO_SPIN_US;
        bool work = false;
        while (!work && now_us() < until) {
            for (int k = 0; k < 32; k++)
                upager__cpu_relax();
            work = any_ready();
        }
        if (work)
            continue;
        uint32_t seq = atomic_load_explicit(&R.submit_seq, memory_order_seq_cst);
        atomic_store_explicit(&R.io_sleeping, 1, memory_order_seq_cst);
        if (!any_ready())
            upager__futex_wait(&R.submit_seq, seq);
        atomic_store_explicit(&R.io_sleeping, 0, memory_order_relaxed);
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
    .write_many = redis_write_many,
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
    SPIN_US = IO_SPIN_US = sysconf(_SC_NPROCESSORS_ONLN) >= 4 ? SPIN_US_MANY_CPUS : 0;
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
