#!/usr/bin/env bash
# tests/sanitize.sh - the test suite under sanitizers, the option parser
# under a fuzzer.
#
#   tests/sanitize.sh [ubsan] [asan] [fuzz]      default: all three
#
#   ubsan  build with -fsanitize=undefined -fno-sanitize-recover=undefined
#          and run `make check`: any undefined behaviour fails the run.
#          -fno-sanitize=null: the tests dereference NULL on purpose, to
#          show that a real SIGSEGV still ends the process; UBSan's null
#          check would end it with exit status 1 first.  A NULL access
#          elsewhere still crashes, and fails its test.
#   asan   build with -fsanitize=address and run `make check` with
#          ASAN_OPTIONS=handle_segv=0:handle_sigbus=0:detect_leaks=0
#          (below).
#   fuzz   build fuzz/fuzz_config.c with clang -fsanitize=fuzzer,address,
#          undefined and run it for FUZZ_SECONDS (default 60).
#
# Each build is out of tree, from a clean copy of the sources (the files git
# knows, committed or not; or `make distdir` of a configured tree): the tree
# itself may be configured in place, as quickstart.sh leaves it, and
# automake refuses a VPATH build beside an in-tree configuration.
#
# On Debian, as root, it first installs what it needs (the build's packages,
# clang and libclang-rt-dev, which holds libFuzzer and the sanitizer
# runtimes); without root it names the missing ones and stops.
#
# Why these options.  upager resolves its page faults in a SIGSEGV handler
# installed with libsigsegv.  ASan's own SIGSEGV handler (handle_segv=1, its
# default) is installed at start-up; libsigsegv replaces it when upager
# starts (ASan's allow_user_segv_handler=1 lets it), so paging works either
# way, but a genuine crash then ends without ASan's report.  handle_segv=0
# leaves SIGSEGV to the program from the start, the configuration the
# library is tested in.  handle_sigbus=0 likewise: a page the library
# cannot read raises SIGBUS for the program's own handler, which ASan's
# would otherwise be, ending the test with a report instead of the signal
# it expects.  ASan's shadow memory covers the arena without
# cost: the arena is one MAP_NORESERVE mapping that ASan neither poisons nor
# intercepts, and the fault path touches arena memory only through
# pread/pwrite on the memfd, which ASan checks against unpoisoned shadow.
# detect_leaks=0: the library keeps its start-up state for the life of the
# process, on purpose, and Check forks a process for every case.
#
# Valgrind is not run: under valgrind (3.19, memcheck and even --tool=none)
# an instruction that faults on a PROT_NONE page is not re-executed as the
# kernel does after the SIGSEGV handler returns: a plain sigaction handler
# sees its faulting store lost, and through libsigsegv the retry faults
# again at address 0 and the process dies.  A pager built on SIGSEGV cannot
# run under it, so there is no suppressions file: the reports of first
# touches would be the least of it.
#
# Environment: SANITIZE_DIR (work directory; default a new one under
# ${TMPDIR:-/tmp}, removed when every stage passed), FUZZ_SECONDS, JOBS.
#
# Copyright (C) 2026 the upager authors.
# SPDX-License-Identifier: GPL-2.0-or-later

set -euo pipefail

srcdir=$(cd "$(dirname "$0")/.." && pwd)
stages=${*:-ubsan asan fuzz}
for s in $stages; do
    case $s in
        ubsan|asan|fuzz) ;;
        *) echo "usage: $0 [ubsan] [asan] [fuzz]" >&2; exit 2 ;;
    esac
done
fuzz_seconds=${FUZZ_SECONDS:-60}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
say() { printf '==> sanitize: %s\n' "$*"; }
now() { date +%s; }

# --- 1. Packages ------------------------------------------------------------

packages="build-essential autoconf automake libtool pkg-config libsigsegv-dev check libsqlite3-dev sqlite3 python3-numpy time libhiredis-dev redis-server"
case " $stages " in *" fuzz "*) packages="$packages clang libclang-rt-dev" ;; esac
. "$srcdir/scripts/packages.sh"
# shellcheck disable=SC2086  # one word per package
ensure_packages sanitize $packages

# --- 2. A clean copy of the sources -------------------------------------------

work=${SANITIZE_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/upager-sanitize.XXXXXX")}
mkdir -p "$work"
src=$work/src
rm -rf "$src"
mkdir -p "$src"
t0=$(now)
if git -C "$srcdir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    say "copying the sources git knows from $srcdir"
    (cd "$srcdir" && git ls-files -z --cached --others --exclude-standard |
        tar --null --ignore-failed-read -T - -cf -) | tar -C "$src" -xf -
elif [ -f "$srcdir/config.status" ] && [ -f "$srcdir/Makefile" ]; then
    say "copying the distributed sources of $srcdir (make distdir)"
    make -C "$srcdir" distdir distdir="$src" >/dev/null
else
    say "copying $srcdir"
    cp -a "$srcdir/." "$src/"
fi
if [ ! -x "$src/configure" ]; then
    (cd "$src" && autoreconf -fi >"$work/autoreconf.log" 2>&1) ||
        { cat "$work/autoreconf.log"; exit 1; }
fi
say "sources ready in $(( $(now) - t0 )) s"

# --- 3. Stages --------------------------------------------------------------

failed=0
summary=

# Builds in $work/build-NAME with the given CFLAGS and runs make check there,
# with the environment in the remaining arguments.
check_build() {
    local name=$1 cflags=$2
    shift 2
    local b=$work/build-$name t
    t=$(now)
    rm -rf "$b"
    mkdir -p "$b"
    say "$name: configure CFLAGS=\"$cflags\""
    if ! (cd "$b" && "$src/configure" CFLAGS="$cflags" LDFLAGS="$cflags" \
            >configure.log 2>&1); then
        tail -n 30 "$b/configure.log"
        return 1
    fi
    say "$name: make"
    if ! make -C "$b" -j"$jobs" >"$b/make.log" 2>&1; then
        tail -n 40 "$b/make.log"
        return 1
    fi
    say "$name: make check"
    local rc=0
    env "$@" CK_TIMEOUT_MULTIPLIER="${CK_TIMEOUT_MULTIPLIER:-4}" \
        make -C "$b" -j"$jobs" check >"$b/check.log" 2>&1 || rc=$?
    grep -E '^(PASS|FAIL|ERROR|SKIP|XFAIL|XPASS):' "$b/check.log" || true
    if [ -f "$b/tests/check_upager.log" ]; then
        grep -E '^[0-9]+%: Checks: ' "$b/tests/check_upager.log" | tail -n 1 || true
        grep -E ':[FE]:' "$b/tests/check_upager.log" || true
    fi
    if [ "$rc" -ne 0 ]; then
        # The first sanitizer reports, with their stacks.
        cat "$b"/tests/*.log 2>/dev/null |
            grep -A20 -E 'runtime error|ERROR: AddressSanitizer' | head -n 60 || true
    fi
    say "$name: $( [ "$rc" -eq 0 ] && echo passed || echo FAILED ) in $(( $(now) - t )) s"
    return "$rc"
}

fuzz() {
    local d=$work/fuzz t
    t=$(now)
    rm -rf "$d"
    mkdir -p "$d/corpus"
    say "fuzz: clang -fsanitize=fuzzer,address,undefined fuzz/fuzz_config.c lib/config.c"
    clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I"$src/lib" -I"$src/include" "$src/fuzz/fuzz_config.c" "$src/lib/config.c" \
        -o "$d/fuzz_config"
    local i=0
    for seed in budget=512M budget=25% page_size=64K page_size=4096 dir=/tmp \
                arena=1T readahead=auto readahead=64 direct_io=yes stats=on \
                verbose=off UPAGER_BUDGET=4KiB budget=12Q arena=2M budget=16MB; do
        printf '%s' "$seed" >"$d/corpus/seed$i"
        i=$((i + 1))
    done
    say "fuzz: running for $fuzz_seconds s"
    local rc=0
    (cd "$d" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
        ./fuzz_config -max_total_time="$fuzz_seconds" -close_fd_mask=2 \
        -dict="$src/fuzz/config.dict" -artifact_prefix="$d/" corpus \
        >"$d/fuzz.log" 2>&1) || rc=$?
    grep -E '^(Done|#[0-9]+ *DONE)|ERROR|runtime error|SUMMARY' "$d/fuzz.log" | tail -n 5 || true
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$d/fuzz.log"
        ls "$d"/crash-* "$d"/leak-* "$d"/timeout-* 2>/dev/null || true
    fi
    say "fuzz: $( [ "$rc" -eq 0 ] && echo passed || echo FAILED ) in $(( $(now) - t )) s"
    return "$rc"
}

for s in $stages; do
    t=$(now)
    rc=0
    case $s in
        ubsan)
            check_build ubsan "-fsanitize=undefined -fno-sanitize=null -fno-sanitize-recover=undefined -g -O1" \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 || rc=$?
            ;;
        asan)
            check_build asan "-fsanitize=address -fno-omit-frame-pointer -g -O1" \
                ASAN_OPTIONS=handle_segv=0:handle_sigbus=0:allow_user_segv_handler=1:detect_leaks=0 || rc=$?
            ;;
        fuzz)
            fuzz || rc=$?
            ;;
    esac
    summary="$summary $s:$( [ "$rc" -eq 0 ] && echo ok || echo FAILED )($(( $(now) - t ))s)"
    [ "$rc" -eq 0 ] || failed=1
done

say "summary:$summary"
if [ "$failed" -ne 0 ]; then
    say "the logs are in $work"
    exit 1
fi
[ -n "${SANITIZE_DIR:-}" ] || rm -rf "$work"
