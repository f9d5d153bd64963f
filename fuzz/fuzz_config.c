/*
 * fuzz_config.c - libFuzzer target for the option parser (lib/config.c).
 *
 * The input is "name=value" (the bytes before the first '=' name the
 * option; without '=' the whole input is both).  Each input goes through
 *   upager__parse_size, upager__parse_bool     the value alone,
 *   upager__config_set                         name and value, on a
 *                                              configuration of defaults,
 * and through two properties that must hold for any input:
 *   - a size that parses prints back (upager__fmt_size) as a string that
 *     parses to the same size;
 *   - upager__config_set returns 0, EINVAL or ENOENT, and leaves every
 *     field of the configuration within its documented range.
 * A broken property calls __builtin_trap, which libFuzzer reports as a
 * crash, with the input saved.
 *
 * Built by tests/sanitize.sh with clang -fsanitize=fuzzer,address,undefined
 * and run for a bounded time; not part of `make`.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define FUZZ_MAX_INPUT 8192

static void check_config(const struct upager__config *c)
{
    if (c->budget_pct > 100)
        __builtin_trap();
    if (c->budget_pct && c->budget)
        __builtin_trap();
    if (c->page_size && (c->page_size > UPAGER__MAX_PAGE ||
                         (c->page_size & (c->page_size - 1)) != 0))
        __builtin_trap();
    if (c->readahead < -1 || c->readahead > UPAGER__RA_MAX)
        __builtin_trap();
    if (c->arena < UPAGER__MAX_PAGE || c->arena > ((uint64_t)1 << 47))
        __builtin_trap();
    if (memchr(c->dir, '\0', sizeof c->dir) == NULL)
        __builtin_trap();
    if (c->store_redis &&
        (c->redis_port < 1 || c->redis_port > 65535 || c->redis_db < 0 || !c->redis_host[0] ||
         !memchr(c->redis_host, '\0', sizeof c->redis_host) ||
         !memchr(c->redis_user, '\0', sizeof c->redis_user) ||
         !memchr(c->redis_password, '\0', sizeof c->redis_password) ||
         !memchr(c->redis_prefix, '\0', sizeof c->redis_prefix)))
        __builtin_trap();
    if (!memchr(c->store_password, '\0', sizeof c->store_password))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char buf[FUZZ_MAX_INPUT + 1];
    if (size > FUZZ_MAX_INPUT)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    char *name = buf, *value = buf;
    char *eq = memchr(buf, '=', size);
    if (eq) {
        *eq = '\0';
        value = eq + 1;
    }

    uint64_t v = 0;
    if (upager__parse_size(value, &v) == 0) {
        char text[64];
        uint64_t back = 0;
        upager__fmt_size(text, sizeof text, v);
        if (upager__parse_size(text, &back) != 0 || back != v)
            __builtin_trap();
    }
    bool b;
    upager__parse_bool(value, &b);

    struct upager__config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.arena = UPAGER__DEFAULT_ARENA;
    cfg.readahead = -1;
    int err = upager__config_set(&cfg, name, value, NULL);
    if (err != 0 && err != EINVAL && err != ENOENT)
        __builtin_trap();
    check_config(&cfg);
    return 0;
}
