#!/usr/bin/env bash
# Installs what building, testing and benchmarking ctsync need on Debian 12, as root.
# Idempotent: installs only what is missing. Used by demo.sh, test.sh and bench/.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for pkg in iproute2 conntrack nftables keepalived conntrackd libnetfilter-conntrack-dev \
           libmnl-dev pkg-config gcc make time ca-certificates faketime; do
    have_pkg "$pkg" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo is missing. Install the Rust toolchain (rustup, stable >= 1.88) and run this again." >&2
    exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "setup: run as root: the tests create network namespaces and write conntrack tables." >&2
    exit 1
fi
