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

enum opt_kind { K_BUDGET, K_PAGE_SIZE, K_DIR, K_STORE, K_ARENA, K_READAHEAD, K_BOOL };

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
     "expected file:DIR with DIR an existing, writable directory (this build has no "
     "redis:// or redis-cluster:// store)"},
    {"arena", "UPAGER_ARENA", K_ARENA, 0, "expected a size such as 64G or 1T"},
    {"readahead", "UPAGER_READAHEAD", K_READAHEAD, 0,
     "expected a number of pages from 0 to 64, or auto"},
    {"direct_io", "UPAGER_DIRECT_IO", K_BOOL, offsetof(struct upager__config, direct_io),
     "expected 1 or 0 (or yes/no, on/off, true/false)"},
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
    case K_STORE:
        err = strncmp(value, "file:", 5) == 0 ? parse_dir(cfg, value + 5) : EINVAL;
        break;
    case K_ARENA: err = parse_arena(cfg, value); break;
    case K_READAHEAD: err = parse_readahead(cfg, value); break;
    case K_BOOL: err = upager__parse_bool(value, (bool *)((char *)cfg + o->field)); break;
    default: err = EINVAL; break;
    }
    if (err)
        upager__say("%s=\"%s\": %s", label ? label : o->env, value, o->expected);
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
