/*
 * check_suites.h - the Check suites of upager, one per tests/check_*.c.
 *
 * tests/main.c runs them all; each file builds its suite from test cases
 * grouped by the behaviour they prove.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef UPAGER_CHECK_SUITES_H
#define UPAGER_CHECK_SUITES_H

#include <check.h>

Suite *alloc_suite(void);     /* check_alloc.c: the malloc contract          */
Suite *config_suite(void);    /* check_config.c: environment and configure   */
Suite *fault_suite(void);     /* check_fault.c: genuine faults stay genuine  */
Suite *clock_suite(void);     /* check_clock.c: eviction, dirty pages, budget */
Suite *integrity_suite(void); /* check_integrity.c: data under threads       */
Suite *vma_suite(void);       /* check_vma.c: kernel mappings and metadata    */
Suite *map_suite(void);       /* check_map.c: file mapping, pin, advise      */
Suite *robust_suite(void);    /* check_robust.c: I/O errors, load, fork, misuse */
Suite *limits_suite(void);    /* check_limits.c: tiny budgets, huge sizes, races */
Suite *kernel_suite(void);    /* check_kernel.c: sync objects, system calls  */
Suite *redis_suite(void);     /* check_redis.c: the Redis store              */

#endif /* UPAGER_CHECK_SUITES_H */
