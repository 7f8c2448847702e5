#!/usr/bin/env bash
# A guided tour of ctsync's kernel layer in a
# throwaway network namespace. It fills a conntrack table with realistic entries (TCP,
# UDP, ICMP; IPv4 and IPv6; with SNAT), shows them with the kernel's own tool, reads the
# table back, churns short-lived flows, and removes everything, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "Building ctsync (release)…"
cargo build --release --locked -q -p ctsync
ctsync=target/release/ctsync

ns="ctsync-demo-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
ip netns add "$ns"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

say "1. Fill namespace $ns with 100,000 realistic entries"
out=$("$ctsync" load --netns "$ns" fill --count 100000)
echo "$out"
printf 'created %s entries in %.3f s: %.0f per second\n' \
    "$(field applied <<<"$out")" "$(field seconds <<<"$out")" "$(field per_second <<<"$out")"

say "2. The kernel's own tool agrees"
echo "conntrack -C: $(ip netns exec "$ns" conntrack -C)"
ip netns exec "$ns" conntrack -L 2>/dev/null | grep -m 3 -E 'ESTABLISHED|udp|icmp' || true

say "3. Read the whole table back through ctsync's decoder"
out=$("$ctsync" load --netns "$ns" dump)
echo "$out"
printf 'read %s entries in %.3f s\n' "$(field flows <<<"$out")" "$(field seconds <<<"$out")"

say "4. Delete them all in batches"
"$ctsync" load --netns "$ns" delete --count 100000

say "5. Churn: 20,000 new flows per second for 5 s, each living 1 s"
"$ctsync" load --netns "$ns" churn --rate 20000 --lifetime-ms 1000 --seconds 5
echo "left in the table: $(ip netns exec "$ns" conntrack -C)"

say "Done: the namespace is removed on exit."
