/*
 * config.c - options: one table, one parser, for the environment and for
 * upager_configure alike.
 *
 * Parsing and validation only; init.c decides what the values mean together
 * (the page size against the budget, the directory by opening the store).
 * A bad value is refused with one line naming the option, the value and
 * the accepted form; it never falls back to a default.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

enum opt_kind { K_BUDGET, K_PAGE_SIZE, K_DIR, K_STORE, K_PASSWORD, K_ARENA, K_READAHEAD, K_DIRECT,
                K_BOOL };

struct opt {
    const char *name;     /* for upager_configure            */
    const char *env;      /* environment variable            */
    enum opt_kind kind;
    size_t field;         /* offset of the bool, for K_BOOL  */
    const char *expected; /* the accepted form, for errors   */
};

static const struct opt opts[] = {
    {"budget", "UPAGER_BUDGET", K_BUDGET, 0, "expected a size such as 512M, 4G or 25%"},
    {"page_size", "UPAGER_PAGE_SIZE", K_PAGE_SIZE, 0,
     "expected a power of two from the system page size to 2M, such as 64K"},
    {"dir", "UPAGER_DIR", K_DIR, 0, "expected an existing, writable directory"},
    {"store", "UPAGER_STORE", K_STORE, 0,
     "expected file:DIR with DIR an existing, writable directory, "
     "redis://[:password@]host[:port][/db][?prefix=P], or "
     "redis-cluster://[:password@]host:port[,host:port...][?prefix=P]"},
    {"store_password", "UPAGER_STORE_PASSWORD", K_PASSWORD, 0,
     "expected at most 255 bytes"},
    {"arena", "UPAGER_ARENA", K_ARENA, 0, "expected a size such as 64G or 1T"},
    {"readahead", "UPAGER_READAHEAD", K_READAHEAD, 0,
     "expected a number of pages from 0 to 64, or auto"},
    {"direct_io", "UPAGER_DIRECT_IO", K_DIRECT, 0,
     "expected 1 or 0 (or yes/no, on/off, true/false), or auto"},
    {"stats", "UPAGER_STATS", K_BOOL, offsetof(struct upager__config, stats),
     "expected 1 or 0 (or yes/no, on/off, true/false)"},
    {"verbose", "UPAGER_VERBOSE", K_BOOL, offsetof(struct upager__config, verbose),
     "expected 1 or 0 (or yes/no, on/off, true/false)"},
};

void upager__say(const char *fmt, ...)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "upager: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void upager__say_safe(const char *a, const char *b, const char *c)
{
    char line[512];
    size_t n = 0;
    const char *parts[] = {"upager: ", a, b, c};
    for (size_t i = 0; i < 4; i++) {
        for (const char *s = parts[i]; s && *s && n < sizeof line - 1; s++)
            line[n++] = *s;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

char *upager__hex(char *buf, uintptr_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    buf[0] = '0';
    buf[1] = 'x';
    for (int i = 0; i < n; i++)
        buf[2 + i] = tmp[n - 1 - i];
    buf[2 + n] = '\0';
    return buf;
}

char *upager__fmt_size(char *buf, size_t len, uint64_t b)
{
    static const char units[] = "KMGT";
    int u = -1;
    while (b >= 1024 && b % 1024 == 0 && u < 3) {
        b /= 1024;
        u++;
    }
    if (u < 0)
        snprintf(buf, len, "%llu", (unsigned long long)b);
    else
        snprintf(buf, len, "%llu%c", (unsigned long long)b, units[u]);
    return buf;
}

int upager__parse_size(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return EINVAL;
    uint64_t v = 0;
    for (; isdigit((unsigned char)*s); s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return EINVAL;
        v = v * 10 + d;
    }
    unsigned shift = 0;
    switch (*s) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    case 'b': case 'B':
        if (s[1] != '\0')
            return EINVAL;
        *out = v;
        return 0;
    case '\0':
        *out = v;
        return 0;
    default:
        return EINVAL;
    }
    s++;
    /* K, KB, KiB (any case for the letters that follow the unit) */
    if (*s == 'i' || *s == 'I') {
        s++;
        if (*s != 'b' && *s != 'B')
            return EINVAL;
    }
    if (*s == 'b' || *s == 'B')
        s++;
    if (*s != '\0')
        return EINVAL;
    if (v > (UINT64_MAX >> shift))
        return EINVAL;
    *out = v << shift;
    return 0;
}

int upager__parse_bool(const char *s, bool *out)
{
    static const char *yes[] = {"1", "yes", "on", "true"};
    static const char *no[] = {"0", "no", "off", "false"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return EINVAL;
}

static int parse_budget(struct upager__config *cfg, const char *v)
{
    size_t n = strlen(v);
    if (n > 1 && v[n - 1] == '%') {
        unsigned pct = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (!isdigit((unsigned char)v[i]) || pct > 100)
                return EINVAL;
            pct = pct * 10 + (unsigned)(v[i] - '0');
        }
        if (pct < 1 || pct > 100)
            return EINVAL;
        cfg->budget_pct = pct;
        cfg->budget = 0;
        return 0;
    }
    uint64_t b;
    if (upager__parse_size(v, &b) || b == 0)
        return EINVAL;
    cfg->budget = b;
    cfg->budget_pct = 0;
    return 0;
}

static int parse_page_size(struct upager__config *cfg, const char *v)
{
    uint64_t b;
    long sys = sysconf(_SC_PAGESIZE);
    if (upager__parse_size(v, &b) || b < (uint64_t)sys || b > UPAGER__MAX_PAGE ||
        (b & (b - 1)) != 0)
        return EINVAL;
    cfg->page_size = (size_t)b;
    return 0;
}

static int parse_dir(struct upager__config *cfg, const char *v)
{
    struct stat st;
    if (!*v || strlen(v) >= sizeof cfg->dir)
        return EINVAL;
    if (stat(v, &st) != 0 || !S_ISDIR(st.st_mode) || access(v, W_OK | X_OK) != 0)
        return EINVAL;
    strcpy(cfg->dir, v);
    return 0;
}

static int parse_arena(struct upager__config *cfg, const char *v)
{
    uint64_t b;
    /* At least 2M so that any page size fits; at most 2^47 bytes, the
     * user half of a 48-bit address space. */
    if (upager__parse_size(v, &b) || b < UPAGER__MAX_PAGE || b > ((uint64_t)1 << 47))
        return EINVAL;
    cfg->arena = b;
    return 0;
}

static int parse_readahead(struct upager__config *cfg, const char *v)
{
    if (strcasecmp(v, "auto") == 0) {
        cfg->readahead = -1;
        return 0;
    }
    if (!*v || strlen(v) > 3)
        return EINVAL;
    int n = 0;
    for (const char *s = v; *s; s++) {
        if (!isdigit((unsigned char)*s))
            return EINVAL;
        n = n * 10 + (*s - '0');
    }
    if (n > UPAGER__RA_MAX)
        return EINVAL;
    cfg->readahead = n;
    return 0;
}

/* redis://[[user]:password@]host[:port][/db][?prefix=P], port 6379 and
 * db 0 by default; redis-cluster://[[user]:password@]host[:port][,...]
 * [?prefix=P], the seeds of a cluster (database 0 only).  A host is a name
 * or an IPv4 address. */
static int parse_redis_url(struct upager__config *cfg, const char *v, bool cluster)
{
    const char *p = strstr(v, "://") + 3;
    char hosts[sizeof cfg->redis_host] = "", user[128] = "", pw[256] = "", prefix[200] = "";
    long port = 6379, db = 0;
    const char *at = strchr(p, '@');
    const char *slash = strchr(p, '/');
    const char *q = strchr(p, '?');
    if (at && (!slash || at < slash) && (!q || at < q)) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon)
            return EINVAL; /* user info is ":password" or "user:password" */
        size_t ul = (size_t)(colon - p), pl = (size_t)(at - colon - 1);
        if (ul >= sizeof user || pl >= sizeof pw || pl == 0)
            return EINVAL;
        memcpy(user, p, ul);
        memcpy(pw, colon + 1, pl);
        p = at + 1;
    }
    size_t used = 0;
    for (;;) {
        size_t hl = strcspn(p, ":/?,");
        if (hl == 0 || hl >= 256)
            return EINVAL;
        for (size_t i = 0; i < hl; i++)
            if (!isalnum((unsigned char)p[i]) && p[i] != '.' && p[i] != '-' && p[i] != '_')
                return EINVAL;
        const char *h = p;
        p += hl;
        port = 6379;
        if (*p == ':') {
            p++;
            if (!isdigit((unsigned char)*p))
                return EINVAL;
            port = 0;
            for (; isdigit((unsigned char)*p); p++) {
                port = port * 10 + (*p - '0');
                if (port > 65535)
                    return EINVAL;
            }
            if (port < 1)
                return EINVAL;
        }
        int n = snprintf(hosts + used, sizeof hosts - used, "%s%.*s:%ld", used ? "," : "",
                         (int)hl, h, port);
        if (n < 0 || (size_t)n >= sizeof hosts - used)
            return EINVAL;
        used += (size_t)n;
        if (*p != ',')
            break;
        if (!cluster)
            return EINVAL; /* one server */
        p++;
    }
    if (*p == '/') {
        p++;
        if (*p && *p != '?') {
            db = 0;
            for (; isdigit((unsigned char)*p); p++) {
                db = db * 10 + (*p - '0');
                if (db > 1000000)
                    return EINVAL;
            }
        }
        if (cluster && db != 0)
            return EINVAL; /* a cluster has database 0 only */
    }
    if (*p == '?') {
        p++;
        if (strncmp(p, "prefix=", 7) != 0)
            return EINVAL;
        p += 7;
        size_t l = strlen(p);
        if (l == 0 || l >= sizeof prefix)
            return EINVAL;
        for (size_t i = 0; i < l; i++)
            if ((unsigned char)p[i] <= ' ' || p[i] == 0x7f || p[i] == '&')
                return EINVAL;
        memcpy(prefix, p, l + 1);
        p += l;
    }
    if (*p != '\0')
        return EINVAL;
    cfg->store_redis = true;
    cfg->redis_cluster = cluster;
    if (cluster) {
        strcpy(cfg->redis_host, hosts);
    } else {
        char *colon = strrchr(hosts, ':');
        *colon = '\0';
        strcpy(cfg->redis_host, hosts);
    }
    strcpy(cfg->redis_user, user);
    strcpy(cfg->redis_password, pw);
    strcpy(cfg->redis_prefix, prefix);
    cfg->redis_port = (int)port;
    cfg->redis_db = (int)db;
    return 0;
}

static int parse_store(struct upager__config *cfg, const char *v)
{
    if (strncmp(v, "file:", 5) == 0) {
        int err = parse_dir(cfg, v + 5);
        if (!err)
            cfg->store_redis = cfg->redis_cluster = false;
        return err;
    }
    if (strncmp(v, "redis://", 8) == 0)
        return parse_redis_url(cfg, v, false);
    if (strncmp(v, "redis-cluster://", 16) == 0)
        return parse_redis_url(cfg, v, true);
    return EINVAL;
}

/* The value as it may be printed: a URL's password replaced by "***". */
static void mask_value(char *out, size_t n, const char *v)
{
    const char *at = strncmp(v, "redis", 5) == 0 ? strchr(v, '@') : NULL;
    const char *start = strstr(v, "://");
    if (!at || !start || at < start) {
        snprintf(out, n, "%s", v);
        return;
    }
    const char *colon = memchr(start + 3, ':', (size_t)(at - start - 3));
    if (!colon)
        colon = at;
    snprintf(out, n, "%.*s:***%s", (int)(colon - v), v, at);
}

static const struct opt *find_opt(const char *name)
{
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        if (strcasecmp(name, opts[i].name) == 0 || strcmp(name, opts[i].env) == 0)
            return &opts[i];
    }
    return NULL;
}

int upager__config_set(struct upager__config *cfg, const char *name, const char *value,
                       const char *label)
{
    const struct opt *o = name ? find_opt(name) : NULL;
    if (!o)
        return ENOENT;
    if (!value)
        value = "";
    int err;
    switch (o->kind) {
    case K_BUDGET: err = parse_budget(cfg, value); break;
    case K_PAGE_SIZE: err = parse_page_size(cfg, value); break;
    case K_DIR: err = parse_dir(cfg, value); break;
    case K_STORE: err = parse_store(cfg, value); break;
    case K_PASSWORD:
        if (strlen(value) >= sizeof cfg->store_password) {
            upager__say("%s: %s", label ? label : o->env, o->expected); /* never the value */
            return EINVAL;
        }
        strcpy(cfg->store_password, value);
        return 0;
    case K_ARENA: err = parse_arena(cfg, value); break;
    case K_READAHEAD: err = parse_readahead(cfg, value); break;
    case K_DIRECT: {
        bool b = false;
        err = 0;
        if (strcasecmp(value, "auto") == 0) {
            cfg->direct_io = -1;
        } else if ((err = upager__parse_bool(value, &b)) == 0) {
            cfg->direct_io = b;
        }
        break;
    }
    case K_BOOL: err = upager__parse_bool(value, (bool *)((char *)cfg + o->field)); break;
    default: err = EINVAL; break;
    }
    if (err) {
        char shown[512];
        mask_value(shown, sizeof shown, value);
        upager__say("%s=\"%s\": %s", label ? label : o->env, shown, o->expected);
    }
    return err;
}

int upager__config_from_env(struct upager__config *cfg)
{
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        const char *v = getenv(opts[i].env);
        if (!v)
            continue;
        int err = upager__config_set(cfg, opts[i].name, v, opts[i].env);
        if (err)
            return err;
    }
    return 0;
}
