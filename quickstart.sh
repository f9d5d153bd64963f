#!/usr/bin/env bash
# quickstart.sh - build upager and run its demo or its test suite.
#
#   ./quickstart.sh demo [MiB]   build, then sort an array far larger than its
#                                memory budget and print the statistics
#   ./quickstart.sh check        build, then run the whole test suite
#
# On Debian (12 or later), run as root, it first installs the packages the
# build needs; without root it names the missing ones and stops.  It then
# runs autoreconf, configure and make only when their outputs are missing
# or stale, so running it again is cheap and harmless.
#
# Copyright (C) 2026 the upager authors.
# SPDX-License-Identifier: GPL-2.0-or-later

set -euo pipefail

usage() {
    echo "usage: $0 demo [MiB-of-keys] | check" >&2
    exit 2
}

[ $# -ge 1 ] || usage
action=$1
shift
case $action in
    demo) ;;
    check) [ $# -eq 0 ] || usage ;;
    *) usage ;;
esac

cd "$(dirname "$0")"

say() { printf '==> %s\n' "$*"; }

# --- 1. Packages -----------------------------------------------------------

packages="build-essential autoconf automake libtool pkg-config libsigsegv-dev check libsqlite3-dev sqlite3 python3-numpy time libhiredis-dev redis-server"
. scripts/packages.sh
if command -v dpkg-query >/dev/null 2>&1; then
    # shellcheck disable=SC2086  # one word per package
    ensure_packages quickstart $packages
else
    echo "quickstart: not a Debian system: make sure a C compiler, make, autoconf," >&2
    echo "automake, libtool, pkg-config, libsigsegv, Check and SQLite (for the tests)" >&2
    echo "are installed." >&2
fi

# --- 2. Build --------------------------------------------------------------

if [ ! -x configure ] || [ ! -f Makefile.in ] ||
   [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    say "autoreconf -fi"
    autoreconf -fi
fi
if [ ! -f Makefile ] || [ ! -f config.status ] || [ configure -nt config.status ] ||
   [ Makefile.in -nt Makefile ]; then
    say "./configure"
    ./configure
fi
jobs=$(nproc 2>/dev/null || echo 2)
say "make -j$jobs"
make -j"$jobs"

# --- 3. Run ----------------------------------------------------------------

case $action in
    demo)
        say "examples/demo_sort${*:+ $*}"
        UPAGER_STATS=1 ./examples/demo_sort "$@"
        ;;
    check)
        say "make check"
        if ! make -j"$jobs" check; then
            echo
            echo "quickstart: the test suite failed; its log follows."
            if [ -f test-suite.log ]; then
                cat test-suite.log
            fi
            exit 1
        fi
        # Check's own closing line ("100%: Checks: N, Failures: 0, Errors: 0").
        if [ -f tests/check_upager.log ]; then
            grep -E '^[0-9]+%: Checks: ' tests/check_upager.log | tail -n 1 || true
        fi
        ;;
esac
