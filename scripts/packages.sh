# scripts/packages.sh - sourced by quickstart.sh and tests/sanitize.sh:
# ensure_packages WHO PKG...  installs the Debian packages that are missing
# (as root: apt-get update, then apt-get install -y), or, without root,
# names them with the apt-get line and exits 1.  Does nothing where there
# is no dpkg.  Expects a say function for progress lines.
#
# Copyright (C) 2026 the upager authors.
# SPDX-License-Identifier: GPL-2.0-or-later

ensure_packages() {
    local who=$1 p missing=
    shift
    command -v dpkg-query >/dev/null 2>&1 || return 0
    for p in "$@"; do
        case $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) in
            *" installed") ;;
            *) missing="$missing $p" ;;
        esac
    done
    [ -n "$missing" ] || return 0
    if [ "$(id -u)" -eq 0 ]; then
        say "installing:$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        # shellcheck disable=SC2086  # one word per package
        apt-get install -y --no-install-recommends $missing
    else
        echo "$who: these packages are missing:$missing" >&2
        echo "install them as root, then run this again:" >&2
        echo "    apt-get install$missing" >&2
        exit 1
    fi
}
