#!/usr/bin/env bash
# The main job: `ctsync demo`. Builds a throwaway firewall cluster in network namespaces
# (a client, two firewalls with nftables, SNAT and keepalived VRRP, a server; addresses
# from 198.18.0.0/15), runs TCP and UDP sessions through it, fails the primary hard and
# shows what happened to them, with ctsync and then without it. Removes everything it
# built, also on Ctrl-C. Needs root; installs what is missing (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "Building ctsync (release)…"
cargo build --release --locked -q -p ctsync
exec target/release/ctsync demo "$@"
