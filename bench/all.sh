#!/usr/bin/env bash
# Every side-by-side benchmark, one after the other, each writing its section of
# BENCHMARKS.md (root; Debian 12). About 12 minutes on the project's 2-core machine (732 s
# in the full run of build 4523246, 2026-11-22), plus the build:
#   bench/kernel.sh --write          ctsync vs a batched C loader and conntrack -L   ~1 min
#   bench/replication.sh --write     table replication, resync, bulk, bytes/flow     ~2 min
#   bench/failover.sh --write        takeover with 200,000 flows                    ~1 min
#   bench/standby.sh --write         hot standby's sequence (load, commit, flush +
#                                    resync, flush + bulk, delete) at 10k and 200k  ~1 min
#   bench/events.sh --write          churn at 5k-100k flows/s and flat out          ~5 min
#   bench/sessions.sh --write        50 live sessions through a lab failover, 3 rounds of
#                                    8 failovers                                    ~6 min
#   bench/routers.sh --write         500 router namespaces on two hosts: one daemon
#                                    per host, one router of the same flows, and
#                                    one conntrackd per router                      ~5 min
# (bench/core.sh, the replication core alone, has no reference to run next to; run it by
# itself.) A benchmark whose section has no markers in BENCHMARKS.md is skipped, and said
# so, before anything runs; the run stops at the first benchmark that fails.
#
#   bench/all.sh [--dry-run | --quick]
#   --dry-run  print the commands, run nothing
#   --quick    a tiny configuration (a few minutes) to check that everything runs; it
#              writes into a copy of BENCHMARKS.md (or the file BENCH_MD names), never
#              into BENCHMARKS.md itself
#   CTSYNC_BIN=path: use this ctsync (absolute, or relative to the repository's root)
#   instead of building the release once with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
case "${1:-}" in
--dry-run) mode=dry ;;
--quick) mode=quick ;;
"") ;;
*) echo "usage: bench/all.sh [--dry-run | --quick]" >&2; exit 2 ;;
esac

if [[ $mode == quick ]]; then
    runs=(
        "bench/kernel.sh --write 20000 1"
        "env ROUNDS=1 bench/replication.sh --write 10000 20000"
        "bench/failover.sh --write 20000"
        "bench/standby.sh --write 10000"
        "bench/events.sh --write 2 20000"
        "bench/sessions.sh --write 1"
        "env IDLE=5 bench/routers.sh --write 20 50"
    )
    if [[ -z "${BENCH_MD:-}" ]]; then
        BENCH_MD=$(mktemp /tmp/ctsync-benchmarks-quick-XXXXXX.md)
        cp BENCHMARKS.md "$BENCH_MD"
    fi
    export BENCH_MD
else
    runs=(
        "bench/kernel.sh --write"
        "bench/replication.sh --write"
        "bench/failover.sh --write"
        "bench/standby.sh --write"
        "bench/events.sh --write"
        "bench/sessions.sh --write"
        "bench/routers.sh --write"
    )
fi

# Each script writes the section named like it (failover.sh: failover, ...).
md=${BENCH_MD:-BENCHMARKS.md}
todo=() skipped=()
for run in "${runs[@]}"; do
    name=${run#*bench/}
    name=${name%%.sh*}
    if grep -qx "<!-- $name:begin -->" "$md" && grep -qx "<!-- $name:end -->" "$md"; then
        todo+=("$run")
    else
        echo "all: $md has no <!-- $name:begin --> ... <!-- $name:end --> markers: skipping $run" >&2
        skipped+=("${run%% --*}")
    fi
done

if [[ $mode == dry ]]; then
    [[ -n "${CTSYNC_BIN:-}" ]] || echo "cargo build --release --locked -q -p ctsync"
    printf '%s\n' "${todo[@]}"
    exit 0
fi

scripts/setup.sh
if [[ -z "${CTSYNC_BIN:-}" ]]; then
    cargo build --release --locked -q -p ctsync
    CTSYNC_BIN=$PWD/target/release/ctsync
fi
CTSYNC_BIN=$(realpath -m "$CTSYNC_BIN")
export CTSYNC_BIN

started=$(date +%s)
for run in "${todo[@]}"; do
    t=$(date +%s)
    echo "== $run" >&2
    # shellcheck disable=SC2086 # the words of the command line
    $run || { echo "all: FAILED: $run" >&2; exit 1; }
    echo "== $run: $(($(date +%s) - t)) s" >&2
done
echo "all: done in $(($(date +%s) - started)) s; wrote $md${skipped[*]:+; SKIPPED (no section): ${skipped[*]}}" >&2
