/*
 * main.c - runs every Check suite of upager.
 *
 * Each case runs in a forked process (CK_FORK), so it starts with a fresh
 * library, environment, signal state and arena, and a crash fails the case
 * instead of ending the run.  The usual Check variables apply: CK_RUN_SUITE
 * and CK_RUN_CASE pick what runs, CK_VERBOSITY sets the output (normal by
 * default), CK_TIMEOUT_MULTIPLIER stretches the timeouts on a slow machine.
 * UPAGER_TEST_SEED replaces the fixed seeds of the randomised cases.
 *
 * The exit status is 0 when every case passed, 1 otherwise.
 *
 * Copyright (C) 2026 the upager authors.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdlib.h>

#include "check_suites.h"

int main(void)
{
    SRunner *sr = srunner_create(alloc_suite());
    int failed;

    srunner_add_suite(sr, config_suite());
    srunner_add_suite(sr, fault_suite());
    srunner_add_suite(sr, clock_suite());
    srunner_add_suite(sr, integrity_suite());
    srunner_add_suite(sr, vma_suite());
    srunner_add_suite(sr, map_suite());
    srunner_add_suite(sr, robust_suite());
    srunner_add_suite(sr, limits_suite());
    srunner_add_suite(sr, kernel_suite());
    srunner_add_suite(sr, redis_suite());

    srunner_set_fork_status(sr, CK_FORK);
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
