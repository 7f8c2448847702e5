#!/usr/bin/env bash
# Hot standby at the kernel's floor (issue 16), side by side in one run: ctsync (hot
# standby) and conntrackd (FTFW over UDP, with its external cache). Root; Debian 12.
#
#   bench/standby.sh [--write] [SIZES...]      (default 10000 200000; 1000000 works too)
#   CTSYNC_BIN=path (a prebuilt ctsync, absolute or relative to the repository's root;
#   otherwise cargo builds the release), STANDBY_LIMIT=120 (seconds any step may take
#   before the script fails, saying what never completed), IDLE_MS=150 (see below),
#   STANDBY_SYSTEMS=ctsync (one system only, to look at it: its figures one per line, no
#   table, nothing written), PERF_STEP=load|commit|flush_resync|flush_bulk|delete (a
#   `perf record -g` of each system's backup daemon during that step, and the top of its
#   `perf report` into PERF_OUT, default /tmp/standby-perf-SYS-SIZE-STEP.txt).
#
# Two namespaces (bench/two-nodes.sh). For each size and each system, on one pair started
# on empty kernel tables (the backup synced), this sequence:
#   1. load: `ctsync load fill --count SIZE` (realistic mix) on the primary;
#   2. commit on the backup (ctsync `commit`: in hot standby its kernel already holds
#      every flow; conntrackd `-c`: writes its external cache into the kernel);
#   3. flush + resync on the backup (ctsync `flush external`, which asks for the resync
#      itself; conntrackd `-f external` then `-n`);
#   4. flush + bulk (ctsync `flush external` on the backup, which asks for a resync too,
#      then `bulk` on the primary; conntrackd `-f external` then `-B` on the primary);
#   5. delete: every entry of the primary's kernel flushed (`ctsync load flush`).
# Before each size, with no daemon running, the same entries are created into the
# backup's empty namespace by the loader alone, then deleted one by one: the kernel's
# create and delete times, which a hot-standby backup adds to a transfer and to a
# deletion (FTFW's backup keeps its copy in user space). The table gives the load and
# the delete against those floors.
# Each step is timed from its command until the backup is really done: its copy is
# complete (ctsync: status caches.external and the peer `synced`, flows_received grown by
# the table for a transfer; conntrackd: `-s cache` external, "connections created" grown
# by the table), ctsync's backup kernel holds the table (step 1) or no longer does (step
# 5), and then the backup daemon stays idle (its CPU time in /proc/PID/stat does not move)
# for IDLE_MS: the time reported is when that idle stretch began (so kernel writes, which
# a daemon does after its copy is complete, are counted; the clock ticks are 10 ms, and
# status reads are not made during the idle watch). Also reported, for the backup: CPU
# seconds over the whole sequence, peak RSS (VmHWM), RSS after the load (steady) and
# what it grew by per replicated flow.
#
# The target of every wait is what the primary replicates (a few synthetic entries use the
# sync link's addresses, which neither daemon replicates): the primary's internal cache
# once stable after the load (ctsync: status; conntrackd: `-s cache` internal).
# net.netfilter.nf_conntrack_max and nf_conntrack_buckets are raised for the largest
# size (and restored at the end): see room_for in bench/two-nodes.sh.
#
# Prints a Markdown table; --write puts it into BENCHMARKS.md between the standby
# markers. About 1 minute at 10000 and 200000 on the project's 2-core machine; 1000000
# adds about 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
if [[ "${1:-}" == "--write" ]]; then write=1; shift; fi
SIZES=("$@")
((${#SIZES[@]})) || SIZES=(10000 200000)
for s in "${SIZES[@]}"; do
    [[ $s =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/standby.sh [--write] [SIZES...] (positive integers)" >&2; exit 2; }
done
BIG=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)
N=$BIG # sizes conntrackd's cache (HashLimit)
TAG=bsb
source bench/lib.sh
source bench/two-nodes.sh
LIMIT=${STANDBY_LIMIT:-120}
IDLE_MS=${IDLE_MS:-150}

say() { echo "standby: $*" >&2; }
die() { echo "standby: FAILED: $*" >&2; exit 1; }

# The kernel's table limit and hash are global: raised for the largest size (see
# room_for in bench/two-nodes.sh), and put back on exit.
room_for "$BIG"

jnum() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
st() { "$CT" status --json --socket "$DIR/$1.sock" 2>/dev/null || true; }
cd_() { local ns=$1; shift; ip netns exec "$ns" conntrackd -C "$DIR/$ns.conf" "$@" 2>/dev/null || true; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) * 1000}'; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

internal_ctsync() { st "$A" | jnum internal; }
internal_conntrackd() { cd_ "$A" -s cache | awk '/^cache:internal/ {print $NF; exit}'; }
copy_ctsync() { st "$B" | jnum external; }
copy_conntrackd() { cd_ "$B" -s cache | awk '/^cache:external/ {print $NF; exit}'; }
received_ctsync() { st "$B" | jnum flows_received; }
received_conntrackd() { cd_ "$B" -s | awk '/^cache external:/ {e = 1} e && /^connections created:/ {print $3; exit}'; }
backup_ready_ctsync() { st "$B" | grep -q '"synced":true.*],"ready":true'; }

# full SYS TARGET [RECEIVED_BEFORE]: the backup's copy holds TARGET flows (and received
# TARGET more since RECEIVED_BEFORE; ctsync: its peer synced, and its kernel holds them).
full_ctsync() {
    local j
    j=$(st "$B")
    (($(jnum external <<<"$j") + 0 >= $1)) && grep -q '"synced":true' <<<"$j" \
        && { [[ -z ${2:-} ]] || (($(jnum flows_received <<<"$j") + 0 >= $2 + $1)); } \
        && (($(count "$B") >= $1))
}
full_conntrackd() {
    (($(copy_conntrackd) + 0 >= $1)) && { [[ -z ${2:-} ]] || (($(received_conntrackd) + 0 >= $2 + $1)); }
}
# empty SYS: the backup's copy is empty (ctsync: its kernel holds only the sync link's
# own few entries).
empty_ctsync() { (($(copy_ctsync) + 0 == 0)) && (($(count "$B") < 10)); }
empty_conntrackd() { (($(copy_conntrackd) + 0 == 0)); }
kernel_has() { (($(count "$B") >= $1)); }
always() { true; }

# done_when CMD...: poll CMD every ~10 ms until it holds; then watch the backup daemon's
# CPU time until it has not moved for IDLE_MS; print when that idle stretch began.
done_when() {
    local end last since t cur
    end=$(($(date +%s) + LIMIT))
    until "$@"; do
        (($(date +%s) < end)) || return 1
        sleep 0.01
    done
    last=$(ticks "$PB") since=$(now)
    while :; do
        sleep 0.01
        t=$(now) cur=$(ticks "$PB")
        if [[ $cur != "$last" ]]; then
            last=$cur since=$t
        elif awk -v a="$since" -v b="$t" -v w="$IDLE_MS" 'BEGIN {exit !((b - a) * 1000 >= w)}'; then
            break
        fi
        (($(date +%s) < end)) || return 1
    done
    echo "$since"
}

start_pair() {
    for ns in "$A" "$B"; do "$CT" load --netns "$ns" flush >/dev/null; done
    if [[ $1 == ctsync ]]; then
        start_ctsync hot-standby
        wait_until 30 backup_ready_ctsync || die "ctsync: the backup never became ready: $(st "$B")"
    else
        start_conntrackd off
        sleep 1
    fi
    (($("copy_$1") + 0 == 0)) || die "$1: the backup's copy is not empty at the start"
}

commit_ctsync() { "$CT" commit --socket "$DIR/$B.sock" >/dev/null; }
commit_conntrackd() { ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -c >/dev/null 2>&1; }
flush_resync_ctsync() { "$CT" flush external --socket "$DIR/$B.sock" >/dev/null; }
flush_resync_conntrackd() {
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -f external >/dev/null 2>&1
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -n >/dev/null 2>&1
}
flush_bulk_ctsync() {
    "$CT" flush external --socket "$DIR/$B.sock" >/dev/null
    "$CT" bulk --socket "$DIR/$A.sock" >/dev/null
}
flush_bulk_conntrackd() {
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -f external >/dev/null 2>&1
    ip netns exec "$A" conntrackd -C "$DIR/$A.conf" -B >/dev/null 2>&1
}

declare -A R # "system size metric" -> figure

# perf_start SYS STEP / perf_stop SYS SIZE STEP: with PERF_STEP=STEP, a call-graph profile
# of the backup daemon during that step (perf from the Debian package linux-perf).
PERF_PID=""
perf_start() {
    [[ ${PERF_STEP:-} == "$2" ]] || return 0
    command -v perf >/dev/null || apt-get install -y -qq linux-perf >/dev/null
    perf record -g -q -o "$DIR/perf-$1.data" -p "$PB" 2>/dev/null &
    PERF_PID=$!
    PIDS+=("$PERF_PID")
    sleep 0.5 # perf attached before the step starts
}
perf_stop() {
    [[ -n $PERF_PID ]] || return 0
    local out=${PERF_OUT:-/tmp/standby-perf-$1-$2-$3.txt}
    kill -INT "$PERF_PID"
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    {
        perf report -i "$DIR/perf-$1.data" --stdio --sort dso -g none 2>/dev/null | grep -v '^$'
        perf report -i "$DIR/perf-$1.data" --stdio --no-children --sort sym -g none --percent-limit 0.5 2>/dev/null | grep -v '^$'
        perf report -i "$DIR/perf-$1.data" --stdio --children --sort sym -g none --percent-limit 3 2>/dev/null | grep -v '^$'
    } >"$out"
    say "$1, $2: perf profile of the backup during $3 in $out"
}

# step SYS SIZE NAME CMD -- WAIT...: run CMD, then time until WAIT holds and the backup
# is idle.
step() {
    local sys=$1 size=$2 name=$3 cmd=$4 t0 t1
    shift 5
    perf_start "$sys" "$name"
    t0=$(now)
    "$cmd" || die "$sys: $name: the command failed"
    t1=$(done_when "$@") || die "$sys, $size: $name never completed ($*): copy $("copy_$sys"), backup kernel $(count "$B")"
    perf_stop "$sys" "$size" "$name"
    R["$sys $size $name"]=$(ms "$t0" "$t1")
    say "$sys, $size: $name ${R["$sys $size $name"]} ms (backup RSS $(rss_kib "$PB") KiB, peak $(hwm_kib "$PB") KiB)"
}

# sequence SYS SIZE: the whole sequence on one pair.
sequence() {
    local sys=$1 size=$2 target t prev=-1 c0 rss0 out before
    say "$sys, $size entries"
    start_pair "$sys"
    c0=$(ticks "$PB") rss0=$(rss_kib "$PB")
    local t0
    t0=$(now)
    out=$("$CT" load --netns "$A" fill --count "$size")
    [[ $(jnum applied <<<"$out") == "$size" ]] || die "$sys: the load fell short: $out"
    for _ in $(seq 1 600); do # what the primary replicates: stable for 0.2 s
        t=$("internal_$sys")
        [[ -n $t && $t == "$prev" && $t -gt 0 ]] && break
        prev=$t
        sleep 0.2
    done
    [[ -n $t && $t == "$prev" && $t -gt 0 ]] || die "$sys: the primary's internal cache never settled ($t)"
    target=$t
    R["$sys $size target"]=$target
    out=$(done_when "full_$sys" "$target") \
        || die "$sys, $size: the backup never held $target flows: copy $("copy_$sys"), kernel $(count "$B")"
    R["$sys $size load"]=$(ms "$t0" "$out")
    say "$sys, $size: load ${R["$sys $size load"]} ms ($target replicated; backup RSS $(rss_kib "$PB") KiB, peak $(hwm_kib "$PB") KiB)"
    R["$sys $size steady"]=$(rss_kib "$PB")
    R["$sys $size perflow"]=$(awk -v a="$rss0" -v b="${R["$sys $size steady"]}" -v n="$target" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}')
    if [[ $sys == ctsync ]]; then
        step "$sys" "$size" commit commit_ctsync -- always
    else
        step "$sys" "$size" commit commit_conntrackd -- kernel_has "$target"
    fi
    before=$("received_$sys")
    step "$sys" "$size" flush_resync "flush_resync_$sys" -- "full_$sys" "$target" "$before"
    before=$("received_$sys")
    step "$sys" "$size" flush_bulk "flush_bulk_$sys" -- "full_$sys" "$target" "$before"
    delete_all() { "$CT" load --netns "$A" flush >/dev/null; }
    step "$sys" "$size" delete delete_all -- "empty_$sys"
    R["$sys $size cpu"]=$(awk -v a="$c0" -v b="$(ticks "$PB")" -v t="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (b - a) / t}')
    R["$sys $size hwm"]=$(hwm_kib "$PB")
    stop_pair
}

# kernel_alone SIZE: the same entries created with no daemon running, into the backup's
# empty namespace, by the batched loader alone: the kernel's own create time, the floor
# a hot-standby backup adds to a transfer (it writes every flow it receives; FTFW's
# backup keeps them in user space until a commit).
kernel_alone() {
    local t0 t1 out
    "$CT" load --netns "$B" flush >/dev/null
    t0=$(now)
    out=$("$CT" load --netns "$B" fill --count "$1")
    t1=$(now)
    [[ $(jnum applied <<<"$out") == "$1" ]] || die "the kernel alone: the load fell short: $out"
    R["kernel $1 create"]=$(ms "$t0" "$t1")
    # And deleted entry by entry, as a hot-standby backup deletes its copies.
    t0=$(now)
    out=$("$CT" load --netns "$B" delete --count "$1")
    t1=$(now)
    [[ $(jnum applied <<<"$out") == "$1" ]] || die "the kernel alone: the delete fell short: $out"
    "$CT" load --netns "$B" flush >/dev/null
    R["kernel $1 delete"]=$(ms "$t0" "$t1")
    say "the kernel alone, $1 entries created in ${R["kernel $1 create"]} ms, deleted in ${R["kernel $1 delete"]} ms"
}

started=$(date +%s)
for size in "${SIZES[@]}"; do
    kernel_alone "$size"
    for sys in ${STANDBY_SYSTEMS:-ctsync conntrackd}; do sequence "$sys" "$size"; done
done
say "done in $(($(date +%s) - started)) s"
if [[ -n ${STANDBY_SYSTEMS:-} ]]; then
    # One system: its figures, one per line, no table.
    for k in "${!R[@]}"; do echo "$k ${R[$k]}"; done | sort
    exit 0
fi

fmt() { awk -v v="$1" -v d="$2" 'BEGIN {printf "%.*f", d, v}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# ratio CTSYNC CONNTRACKD: ctsync's figure over conntrackd's (lower is better for ctsync).
ratio() { awk -v c="$1" -v d="$2" 'BEGIN {if (d <= 0) print "–"; else printf "%.2f ×\n", c / d}'; }
row() { # label size metric decimals
    local c=${R["ctsync $2 $3"]} d=${R["conntrackd $2 $3"]}
    echo "| $1 | $(fmt "$c" "$4") | $(fmt "$d" "$4") | $(ratio "$c" "$d") |"
}
mrow() { # label size metric (KiB shown as MiB)
    local c=${R["ctsync $2 $3"]} d=${R["conntrackd $2 $3"]}
    echo "| $1 | $(mib "$c") | $(mib "$d") | $(ratio "$c" "$d") |"
}
Q=$(printf '%s ' "${SIZES[@]}")
Q=${Q% }
table=$(
    cat <<TXT
Measured $(date -u +%Y-%m-%d) on $(machine), conntrackd $(conntrackd_version); ctsync hot-standby mode, conntrackd FTFW with its external cache; one run, both systems one after the other at each size.
Reproduce: \`bench/standby.sh --write $Q\` (as root). Each step is timed until the backup is done: copy complete, kernel written (ctsync), then idle for $IDLE_MS ms (the time is when the idle stretch began). The ratio is ctsync's figure over conntrackd's: at or below 1 is as good or better.

| what | ctsync | conntrackd | ctsync / conntrackd |
|---|---|---|---|
$(for size in "${SIZES[@]}"; do
        echo "| **$size entries** ($(fmt "${R["ctsync $size target"]}" 0) replicated) | | | |"
        row "load on the primary → backup done, ms" "$size" load 0
        floor=$(awk -v d="${R["conntrackd $size load"]}" -v k="${R["kernel $size create"]}" 'BEGIN {print d + k}')
        echo "| the load against its floor (conntrackd's load + the kernel alone creating the entries: $(fmt "${R["kernel $size create"]}" 0) ms), ms | $(fmt "${R["ctsync $size load"]}" 0) | $(fmt "$floor" 0) | $(ratio "${R["ctsync $size load"]}" "$floor") |"
        row "commit on the backup, ms (ctsync: kernel already complete; conntrackd writes its cache)" "$size" commit 0
        row "flush external + resync → backup done, ms" "$size" flush_resync 0
        row "flush external + bulk → backup done, ms" "$size" flush_bulk 0
        row "delete all on the primary → backup done, ms" "$size" delete 0
        floor=$(awk -v d="${R["conntrackd $size delete"]}" -v k="${R["kernel $size delete"]}" 'BEGIN {print d + k}')
        echo "| the delete against its floor (conntrackd's delete + the kernel alone deleting the entries: $(fmt "${R["kernel $size delete"]}" 0) ms), ms | $(fmt "${R["ctsync $size delete"]}" 0) | $(fmt "$floor" 0) | $(ratio "${R["ctsync $size delete"]}" "$floor") |"
        row "backup CPU over the sequence, s" "$size" cpu 2
        mrow "backup peak RSS (VmHWM), MiB" "$size" hwm
        mrow "backup RSS after the load, MiB" "$size" steady
        row "backup RSS growth per replicated flow, bytes" "$size" perflow 0
    done)
TXT
)
echo "$table"
if ((write)); then write_section standby "$table"; fi
