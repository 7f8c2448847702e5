#!/usr/bin/env bash
# Takeover benchmark, side by side in one run: ctsync (hot standby, commit) and
# conntrackd (FTFW with its external cache, the default; and DisableExternalCache, its
# inject-directly mode). Root; Debian 12.
#
#   bench/failover.sh [--write] [FLOWS]        (default 200000)
#   CTSYNC_BIN=path: a prebuilt ctsync (absolute, or relative to the repository's root)
#   instead of building the release with cargo.
#
# For each system: two network namespaces joined by a sync link; FLOWS entries in the
# primary's kernel (`ctsync load fill`, realistic mix with SNAT); both daemons started,
# the backup pulls the table (ctsync: by itself; conntrackd: `-n`, as its primary-backup
# script does) until its cache holds them all. Then the MASTER transition is signalled to
# the backup (ctsync: `ctsync role primary`, what keepalived's FIFO line does; conntrackd:
# `conntrackd -c`, what its script runs first), and the clock runs until the backup's
# kernel holds every flow (nf_conntrack_count, polled every few ms). Also reported: peak
# RSS (VmHWM) and CPU seconds of each daemon, per 100,000 flows. First, the floor of a
# commit: the kernel's own time to create the same entries (the loader alone, no daemon,
# the primary's namespace holding its table as at a takeover).
#
# Prints a Markdown table; --write also puts it into BENCHMARKS.md between the failover
# markers, under a line saying when and how it was measured.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
if [[ "${1:-}" == "--write" ]]; then write=1; shift; fi
REQ=${1:-200000}
N=$REQ
TAG=bfo
source bench/lib.sh
source bench/two-nodes.sh
room_for "$REQ"
# emit LINE: print a line of the table, and keep it for --write.
emit() { printf '%s\n' "$1" | tee -a "$DIR/table.md"; }

fill_primary() {
    for ns in "$A" "$B"; do "$CT" load --netns "$ns" flush >/dev/null; done
    "$CT" load --netns "$A" fill --count "$REQ" --timeout 3600 >/dev/null || true
}
# takeover CMD...: run CMD (the MASTER transition) and print the seconds from just
# before it until the backup's kernel holds N flows (0 if it held them before). A waiter
# reading nf_conntrack_count every millisecond runs from before the signal.
takeover() {
    local before t0 out
    before=$(count "$B")
    if ((before >= N)); then
        "$@" >/dev/null 2>&1 || true
        echo "0.000"
        return
    fi
    "$CT" load --netns "$B" wait-count --count "$N" --timeout 60 >"$DIR/wait.json" &
    local w=$!
    sleep 0.2
    t0=$(now)
    "$@" >/dev/null 2>&1 || true
    wait "$w" || { echo "the backup's kernel never held $N flows: $(cat "$DIR/wait.json")" >&2; exit 1; }
    out=$(sed -n 's/.*"reached_at":\([0-9.]*\).*/\1/p' "$DIR/wait.json")
    echo "$t0 $out" | awk '{printf "%.3f", $2 - $1}'
}

run_ctsync() { # mode
    local mode=$1 took
    fill_primary
    start_ctsync "$mode"
    # The target: what the primary replicates (its internal cache; a few synthetic
    # entries use the sync link's addresses, which are never replicated).
    N=$("$CT" status --json --socket "$DIR/$A.sock" | sed -n 's/.*"internal":\([0-9]*\).*/\1/p')
    wait_until 120 bash -c "$CT status --json --socket $DIR/$B.sock 2>/dev/null | grep -q '\"external\":$N,.*\"ready\":true'" \
        || { echo "ctsync $mode: the backup never held $N flows" >&2; tail "$DIR/$B-ctsync.log" >&2; exit 1; }
    local before rep
    before=$(count "$B")
    rep=$(usage "$PA")
    fail_primary "$PA"
    took=$(takeover "$CT" role primary --socket "$DIR/$B.sock")
    sleep 1
    emit "| ctsync $mode | $took | $before | $rep | $(usage "$PB") |"
    stop_pair
}

run_conntrackd() { # inject(on/off)
    local inject=$1 took label
    label="conntrackd FTFW"
    [[ $inject == on ]] && label="conntrackd FTFW DisableExternalCache"
    fill_primary
    start_conntrackd "$inject"
    # The target: what the primary replicates (its internal cache, filtered alike).
    N=$(ip netns exec "$A" conntrackd -C "$DIR/$A.conf" -s cache 2>/dev/null | awk '/^cache:internal/ {print $NF; exit}')
    if [[ $inject == on ]]; then
        wait_until 120 bash -c "(( \$(ip netns exec $B cat /proc/sys/net/netfilter/nf_conntrack_count) >= $N ))" \
            || { echo "$label: the backup's kernel never held $N flows ($(count "$B"))" >&2; exit 1; }
    else
        wait_until 120 bash -c "(( \$(ext_count $DIR/$B.conf) + 0 >= $N ))" \
            || { echo "$label: the backup's external cache never held $N flows ($(ext_count "$DIR/$B.conf"))" >&2; exit 1; }
    fi
    local before rep
    before=$(count "$B")
    rep=$(usage "$PA")
    fail_primary "$PA"
    took=$(takeover ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -c)
    sleep 1
    emit "| $label | $took | $before | $rep | $(usage "$PB") |"
    stop_pair
}

echo "Takeover with $REQ replicated flows ($(nproc) cores, $(uname -r), $(conntrackd -v 2>&1 | head -1))"
echo
emit "| system | MASTER → all flows in the backup's kernel (s) | flows in its kernel before | primary: peak RSS (MiB/100k) | primary: CPU (s/100k) | backup: peak RSS (MiB/100k) | backup: CPU (s/100k) |"
emit "|---|---|---|---|---|---|---|"
# The kernel alone: the same entries created by the loader into the backup's empty
# namespace, no daemon running (the floor of a commit, which writes them all), while the
# primary's namespace holds its table, as it does at a takeover: one kernel serves both
# namespaces here, and its NAT source hash (sized at boot, not by nf_conntrack_buckets)
# holds both tables' entries, so a create costs more with the primary's table beside it.
kernel_alone() {
    local t0 t1
    fill_primary
    t0=$(now)
    "$CT" load --netns "$B" fill --count "$REQ" --timeout 3600 >/dev/null
    t1=$(now)
    "$CT" load --netns "$B" flush >/dev/null
    "$CT" load --netns "$A" flush >/dev/null
    emit "| the kernel alone: the loader creating the same $REQ entries in the backup's empty namespace beside the primary's table, no daemon | $(echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}') | – | – | – | – | – |"
}
kernel_alone
run_ctsync hot-standby
run_ctsync commit
run_conntrackd off
run_conntrackd on
if ((write)); then
    write_section failover "$(
        cat <<TXT
Measured $(date -u +%Y-%m-%d) on $(machine), conntrackd $(conntrackd_version); $REQ entries loaded, $N replicated$( ((N == REQ)) || echo "
(a few synthetic entries use the sync link's addresses, which neither daemon replicates)"), one run.
Reproduce: \`bench/failover.sh --write $REQ\` (as root).

$(cat "$DIR/table.md")
TXT
    )"
fi
