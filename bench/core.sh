#!/usr/bin/env bash
# Replication-core benchmark on one core (no kernel, no network): flow events in,
# sealed datagrams out, and datagrams in, flows applied, for both ciphers; plus wire
# bytes per flow. Usage: bench/core.sh [--write] [FLOWS]   (default 500000)
# --write puts the table into BENCHMARKS.md between the core markers.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
write=0
if [[ "${1:-}" == "--write" ]]; then write=1; shift; fi
n="${1:-500000}"
cargo build --release --locked -q -p ctsync-core --example throughput
json=$(taskset -c 0 target/release/examples/throughput "$n")
echo "$json"
field() { sed -n "s/.*\"cipher\":\"$1\",\"pass\":\"$2\".*\"$3\":\([0-9.]*\).*/\1/p" <<<"$json"; }
m() { awk "BEGIN{printf \"%.2f M\", $1 / 1e6}"; }
row() { echo "| $1, $2 | $(m "$(field "$1" "$2" send_flows_per_s)") | $(m "$(field "$1" "$2" receive_flows_per_s)") | $(field "$1" "$2" wire_bytes_per_flow) |"; }
table=$(cat <<TXT
Measured $(date -u +%Y-%m-%d) on one core (taskset) of this machine, $n flows (IPv4 TCP with SNAT).
Reproduce: \`bench/core.sh --write $n\`.

| cipher, pass | send: events → sealed datagrams, flows/s | receive: datagrams → flows applied, flows/s | wire bytes per flow |
|---|---|---|---|
$(row ChaCha20Poly1305 cold)
$(row ChaCha20Poly1305 steady)
$(row Aes256Gcm cold)
$(row Aes256Gcm steady)
TXT
)
echo "$table"
if ((write)); then write_section core "$table"; fi
