#!/usr/bin/env bash
# Event-rate benchmark, side by side in one run: ctsync (hot standby) and conntrackd (FTFW
# over UDP, external cache). Root; Debian 12.
#
#   bench/events.sh [--write] [SECONDS] [RATES...]   (default 10 s at 5000 20000 50000 100000 0)
#   CTSYNC_BIN=path: a prebuilt ctsync (absolute, or relative to the repository's root)
#   instead of building the release with cargo.
#
# For each system and rate: two namespaces (bench/two-nodes.sh), both daemons, then
# `ctsync load churn` on the primary: short-lived flows (each deleted after 1 s) created
# at RATE per second (0: as fast as the loader goes) for SECONDS, and every flow still
# alive deleted when it ends. The primary's table is then empty, so the backup's copy
# must become empty too: what it still holds 1 s after the churn ended are phantoms
# (deletions it missed), and the time until it is empty says when the copy is exact
# again. Kernel event-socket overruns on the primary are counted (ctsync: `status`;
# conntrackd: its log), since each one loses events.
#
# Prints a Markdown table; --write also puts it into BENCHMARKS.md between the events
# markers, under a line saying when and how it was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
if [[ "${1:-}" == "--write" ]]; then write=1; shift; fi
SECS=${1:-10}
shift || true
RATES=("$@")
((${#RATES[@]})) || RATES=(5000 20000 50000 100000 0)
N=1000000
TAG=bev
source bench/lib.sh
source bench/two-nodes.sh
# emit LINE: print a line of the table, and keep it for --write.
emit() { printf '%s\n' "$1" | tee -a "$DIR/table.md"; }

copy_ctsync() { "$CT" status --json --socket "$DIR/$B.sock" | sed -n 's/.*"external":\([0-9]*\).*/\1/p'; }
copy_conntrackd() { ext_count "$DIR/$B.conf"; }
overruns_ctsync() { "$CT" status --json --socket "$DIR/$A.sock" | sed -n 's/.*"kernel_overruns":\([0-9]*\).*/\1/p'; }
overruns_conntrackd() { grep -ci "overrun" "$DIR/$A-conntrackd.log" 2>/dev/null || true; }

# measure SYSTEM RATE: churn, then watch the backup's copy drain.
measure() {
    local sys=$1 rate=$2 out t_end at1 empty=">30"
    for ns in "$A" "$B"; do "$CT" load --netns "$ns" flush >/dev/null; done
    if [[ $sys == ctsync ]]; then start_ctsync hot-standby; else start_conntrackd off; fi
    sleep 2
    out=$("$CT" load --netns "$A" churn --rate "$rate" --lifetime-ms 1000 --seconds "$SECS")
    t_end=$(now)
    sleep 1
    at1=$("copy_$sys")
    for _ in $(seq 1 300); do
        if (($("copy_$sys") + 0 == 0)); then
            empty=$(echo "$t_end $(now)" | awk '{printf "%.2f", $2 - $1}')
            break
        fi
        sleep 0.1
    done
    local created achieved
    created=$(sed -n 's/.*"created":\([0-9]*\).*/\1/p' <<<"$out")
    achieved=$(sed -n 's/.*"achieved_rate":\([0-9.]*\).*/\1/p' <<<"$out")
    emit "$(printf '| %s | %s | %.0f | %s | %s | %s | %s |' "$sys" "${rate/#0/flat out}" "$achieved" \
        "$created" "$("overruns_$sys")" "$at1" "$empty")"
    stop_pair
}

echo "Churn of 1-second flows for $SECS s ($(nproc) cores, $(uname -r), $(conntrackd -v 2>&1 | head -1))"
echo
emit "| system | target flows/s | achieved flows/s | flows created | primary event-socket overruns | backup's copy 1 s after the end (phantoms) | seconds until the copy is exact (empty) |"
emit "|---|---|---|---|---|---|---|"
for rate in "${RATES[@]}"; do
    measure ctsync "$rate"
    measure conntrackd "$rate"
done
if ((write)); then
    write_section events "$(
        cat <<TXT
Measured $(date -u +%Y-%m-%d) on $(machine) (loader, both daemons and both kernels share the
cores), conntrackd $(conntrackd_version); churn of 1-second flows for $SECS s, one run.
Reproduce: \`bench/events.sh --write $SECS ${RATES[*]}\` (as root).

$(cat "$DIR/table.md")
TXT
    )"
fi
