#!/usr/bin/env bash
# Replication benchmark, side by side in one run: ctsync (hot standby) and conntrackd (FTFW
# over UDP, with its external cache). Root; Debian 12.
#
#   bench/replication.sh [--write] [SIZES...]     (default 10000 100000 200000)
#   ROUNDS=3 (median of that many alternating rounds), CTSYNC_BIN=path (a prebuilt ctsync,
#   absolute or relative to the repository's root; otherwise cargo builds the release),
#   CTSYNC_MODE=hot-standby (or commit: the backup keeps the copy in user space only, as
#   conntrackd's FTFW does), REPLICATION_LIMIT=120 (seconds any wait may take before the
#   script fails, saying what never completed).
#
# Two namespaces (bench/two-nodes.sh). Every measurement starts both daemons on empty
# kernel tables and waits until the backup is synced (conntrackd: after `-n`). Then:
#   1. table replication: `ctsync load fill --count SIZE` (realistic mix) on the primary;
#      the backup's copy (ctsync: `status` caches.external; conntrackd: `-s cache`
#      external) is read every ~5-10 ms until it holds every replicated flow. Reported:
#      from the end of the load, and from its start. ctsync (hot standby) also writes the
#      copy to the backup's kernel: when nf_conntrack_count got there is reported too.
#   2. resync on request, at the largest size, on the same pair: `ctsync request-resync`
#      / `conntrackd -n` on the backup, until the backup has received the whole table again.
#   3. bulk send, likewise: `ctsync bulk` / `conntrackd -B` on the primary.
#   4. bytes on the sync link per replicated flow: the veth's tx_bytes on each side (so
#      Ethernet, IP and UDP headers included), from the load's start until 1 s after the
#      backup held everything; primary → backup, and both directions (acks, keepalives).
#   5. peak RSS (VmHWM) and CPU seconds of each daemon per 100,000 flows, after step 1 at
#      the largest size.
# The target of every wait is what the primary replicates (a few synthetic entries use
# the sync link's addresses, which neither daemon replicates): counted once per size and
# system in a warm-up measurement (not reported: the primary's internal cache, read
# every second until two reads agree), and again in every round, in the background
# while the backup's copy is read. A round's copy is complete when it holds that round's
# count (the warm-up's until the round's is known; a copy above it ends the wait only
# once it stayed unchanged for 1 s), and its time is that of the first read that saw
# it, from a log of every read, so the settling does not delay it. A primary that
# replicates another count than in its warm-up (conntrackd's loses kernel events when
# its netlink socket overruns, at a million flows) is measured against its own count,
# and the report says so; bytes, memory and CPU per flow divide by that count. The
# end of a transfer (steps 2 and 3), on the backup: ctsync's stats.flows_received grew
# by the target and its peer is `synced` again (the end-of-transfer marker arrived);
# conntrackd's external cache counted that many more creations (`-s`, "connections
# created": a resent entry is destroyed and created again). Reads go on in the
# background from before the command; the time is when the read that saw the end
# returned, so an upper bound by one read interval. Every wait gives up after
# REPLICATION_LIMIT seconds.
#
# Prints Markdown tables; --write puts them into BENCHMARKS.md between the replication
# markers.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
if [[ "${1:-}" == "--write" ]]; then write=1; shift; fi
SIZES=("$@")
((${#SIZES[@]})) || SIZES=(10000 100000 200000)
ROUNDS=${ROUNDS:-3}
MODE=${CTSYNC_MODE:-hot-standby}
[[ $MODE == hot-standby || $MODE == commit ]] || { echo "CTSYNC_MODE must be hot-standby or commit" >&2; exit 2; }
for s in "${SIZES[@]}" "$ROUNDS"; do
    [[ $s =~ ^[1-9][0-9]*$ ]] || { echo "usage: bench/replication.sh [--write] [SIZES...] (positive integers; ROUNDS too)" >&2; exit 2; }
done
BIG=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)
N=$BIG # sizes conntrackd's cache (HashLimit)
TAG=brp
source bench/lib.sh
source bench/two-nodes.sh
room_for "$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)"
LIMIT=${REPLICATION_LIMIT:-120} # seconds any wait may take

say() { echo "replication: $*" >&2; }
die() { echo "replication: FAILED: $*" >&2; exit 1; }
jnum() { sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
st() { "$CT" status --json --socket "$DIR/$1.sock" 2>/dev/null || true; }
cd_() { local ns=$1; shift; ip netns exec "$ns" conntrackd -C "$DIR/$ns.conf" "$@" 2>/dev/null || true; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) * 1000}'; }
tx() { ip netns exec "$1" cat /sys/class/net/sync0/statistics/tx_bytes; }
txp() { ip netns exec "$1" cat /sys/class/net/sync0/statistics/tx_packets; }
# shellcheck disable=SC2016 # awk's $6, not the shell's
rcvbuf_errors() { ip netns exec "$1" awk '/^Udp:/ && ++n == 2 {print $6}' /proc/net/snmp; }

# What each system exposes, on the primary (A) or the backup (B).
internal_ctsync() { st "$A" | jnum internal; }
internal_conntrackd() { cd_ "$A" -s cache | awk '/^cache:internal/ {print $NF; exit}'; }
copy_ctsync() { st "$B" | jnum external; }
copy_conntrackd() { cd_ "$B" -s cache | awk '/^cache:external/ {print $NF; exit}'; }
received_ctsync() { st "$B" | jnum flows_received; }
received_conntrackd() { cd_ "$B" -s | awk '/^cache external:/ {e = 1} e && /^connections created:/ {print $3; exit}'; }
# received_done_SYS BEFORE TARGET: the backup has received TARGET flows since BEFORE.
received_done_ctsync() {
    local j
    j=$(st "$B")
    (($(jnum flows_received <<<"$j") + 0 >= $1 + $2)) && grep -q '"synced":true' <<<"$j"
}
received_done_conntrackd() { (($(received_conntrackd) + 0 >= $1 + $2)); }
backup_ready_ctsync() { st "$B" | grep -q '"synced":true.*],"ready":true'; }
start_pair() {
    for ns in "$A" "$B"; do "$CT" load --netns "$ns" flush >/dev/null; done
    if [[ $1 == ctsync ]]; then
        start_ctsync "$MODE"
        wait_until 30 backup_ready_ctsync || die "ctsync: the backup never became ready: $(st "$B")"
    else
        start_conntrackd off
        sleep 1
    fi
    (($("copy_$1") + 0 == 0)) || die "$1: the backup's copy is not empty at the start"
}
resync_ctsync() { "$CT" request-resync --socket "$DIR/$B.sock" >/dev/null; }
resync_conntrackd() { ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -n >/dev/null 2>&1; }
bulk_ctsync() { "$CT" bulk --socket "$DIR/$A.sock" >/dev/null; }
bulk_conntrackd() { ip netns exec "$A" conntrackd -C "$DIR/$A.conf" -B >/dev/null 2>&1; }

# poll LIMIT CMD...: run CMD every ~5 ms until it succeeds; print the time it returned
# success and how many runs it took. Fails after LIMIT seconds.
poll() {
    local limit=$1 end runs=1
    shift
    end=$(($(date +%s) + limit))
    until "$@"; do
        (($(date +%s) < end)) || return 1
        sleep 0.005
        runs=$((runs + 1))
    done
    echo "$(now) $runs"
}
copy_full() { (($("copy_$1") + 0 >= $2)); }
# copy_done SYS WARM: one read of the backup's copy, logged to $DIR/reads-SYS as "time
# count settled" (settled empty while unknown). True when the copy holds the round's
# count: the primary's settled count once the background settle wrote $DIR/settled-SYS,
# the warm-up's WARM until then. A copy above that count ends no wait on sight (the
# primary replicates more this time, or its count moved after it settled): only above a
# known settled count, and once it has not changed for 1 s.
COPY_LAST=-1 COPY_SINCE=0 # the last count read and when it was first read (per poll)
copy_done() {
    local c s="" t
    if [[ -f $DIR/settled-$1 ]]; then read -r s <"$DIR/settled-$1" || true; fi
    c=$(($("copy_$1") + 0))
    t=${EPOCHREALTIME/,/.}
    echo "$t $c $s" >>"$DIR/reads-$1"
    ((c == ${s:-$2})) && return 0
    if ((c != COPY_LAST)); then COPY_LAST=$c COPY_SINCE=$t; fi
    [[ -n $s ]] && ((c > s)) && awk -v a="$COPY_SINCE" -v b="$t" 'BEGIN {exit !(b - a >= 1)}'
}
# last_read SYS FIELD: the last read's count (2) or settled count (3) in $DIR/reads-SYS.
last_read() { tail -1 "$DIR/reads-$1" | awk -v f="$2" '{print $f}'; }
# wanted SYS WARM: what the copy was waited for, for a failure's message.
wanted() {
    local s
    s=$(last_read "$1" 3)
    if [[ -n $s ]]; then echo "the primary's $s flows ($2 in the warm-up)"; else echo "$2 flows (the warm-up's; this round's count never settled)"; fi
}
kernel_full() { (($(count "$B") + 0 >= $1)); }

declare -A R # "system size metric" -> the rounds' figures, space-separated
add() { R["$1 $2 $3"]+="${R["$1 $2 $3"]:+ }$4"; }
declare -A TARGET # "system size" -> flows the primary replicates
declare -A FIRST  # "system size" -> rounds whose copy was complete at the first read
declare -A SHORT  # system -> the rounds that replicated another count than the warm-up
declare -A INCOMPLETE # system -> the transfers that never completed

# load SYS SIZE: fill the primary; sets T0 and T1 (start and end of the load).
load() {
    local out
    T0=$(now)
    out=$("$CT" load --netns "$A" fill --count "$2")
    T1=$(now)
    [[ $(jnum applied <<<"$out") == "$2" ]] || die "$1: the load fell short: $out"
}

# settle SYS: read the primary's internal cache every second until two reads in a row
# agree (at most 60 reads); print the last read. Fails if it never settled, or at 0.
settle() {
    local t="" prev=""
    for _ in $(seq 1 60); do
        t=$("internal_$1")
        if [[ -n $t && $t == "$prev" ]]; then
            echo "$t"
            return $((t > 0 ? 0 : 1))
        fi
        prev=$t
        sleep 1
    done
    echo "$t"
    return 1
}

# calibrate SYS SIZE: a warm-up measurement; sets TARGET to what the primary replicates.
calibrate() {
    local sys=$1 size=$2 t
    say "warm-up: $sys, $size entries"
    start_pair "$sys"
    load "$sys" "$size"
    t=$(settle "$sys") || die "$sys: the primary's internal cache never settled ($t)"
    poll "$LIMIT" copy_full "$sys" "$t" >/dev/null || die "$sys: the backup never held $t flows (warm-up, $size): $("copy_$sys")"
    TARGET["$sys $size"]=$t
    stop_pair
}

# transfer SYS KIND TARGET: time KIND (resync | bulk) until the backup received TARGET flows.
transfer() {
    local sys=$1 kind=$2 target=$3 before a0 b0 t0 w
    before=$("received_$sys")
    [[ -n $before ]] || die "$sys: cannot read the backup's received counter"
    a0=$(tx "$A") b0=$(tx "$B")
    poll "$LIMIT" "received_done_$sys" "$before" "$target" >"$DIR/done" &
    w=$!
    PIDS+=("$w")
    sleep 0.1
    t0=$(now)
    "${kind}_$sys" || die "$sys: the $kind command failed"
    if ! wait "$w"; then
        # conntrackd's transfers of a million flows sometimes lose some: a figure of its
        # own, not the end of the benchmark.
        local got=$(($("received_$sys") - before))
        INCOMPLETE[$sys]+="${INCOMPLETE[$sys]:+; }its $kind in round $r received $got of $target flows within $LIMIT s"
        say "$sys: the $kind of $target flows never completed (received counter $before → $((before + got)))"
        return 0
    fi
    add "$sys" "$BIG" "${kind}_ms" "$(ms "$t0" "$(cut -d' ' -f1 "$DIR/done")")"
    sleep 1
    add "$sys" "$BIG" "${kind}_both" "$(awk -v a="$(($(tx "$A") - a0 + $(tx "$B") - b0))" -v n="$target" 'BEGIN {printf "%.1f", a / n}')"
}

# kernel_wait N: (ctsync, hot standby) time until the backup's kernel holds N flows.
kernel_wait() {
    local out
    out=$(poll "$LIMIT" kernel_full "$1") || die "ctsync: the backup's kernel never held $1 flows: $(count "$B")"
    t_kern=${out% *}
}

# measure SYS SIZE: one round of one system at one size.
measure() {
    local sys=$1 size=$2 warm=${TARGET["$1 $2"]} a0 b0 d0 p0 t_copy t_kern="" got reads settler settled n gap note="" at=""
    local kern=0 # ctsync, hot standby: the backup's kernel is timed too
    if [[ $sys == ctsync && $MODE == hot-standby ]]; then kern=1; fi
    say "$sys, $size entries (round $r of $ROUNDS)"
    start_pair "$sys"
    a0=$(tx "$A") b0=$(tx "$B") p0=$(txp "$A") d0=$(($(rcvbuf_errors "$A") + $(rcvbuf_errors "$B")))
    rm -f "$DIR/settled-$sys" "$DIR/settled-$sys.tmp"
    : >"$DIR/reads-$sys"
    load "$sys" "$size"
    # This round's count, settled in the background while the backup's copy is read.
    { settle "$sys" >"$DIR/settled-$sys.tmp" && mv "$DIR/settled-$sys.tmp" "$DIR/settled-$sys"; } &
    settler=$!
    PIDS+=("$settler")
    poll "$LIMIT" copy_done "$sys" "$warm" >/dev/null \
        || die "$sys: the backup never held $(wanted "$sys" "$warm") after loading $size: $("copy_$sys")"
    # What the copy was accepted at: the warm-up's count if this round's was not known yet.
    n=$(last_read "$sys" 2)
    ((kern == 0)) || kernel_wait "$n"
    sleep 1
    wait "$settler" || die "$sys: the primary's internal cache never settled ($(cat "$DIR/settled-$sys.tmp" 2>/dev/null))"
    settled=$(<"$DIR/settled-$sys")
    gap=0
    if [[ -z $(last_read "$sys" 3) && $n != "$settled" ]]; then
        # Accepted at the warm-up's count, and this round's differs: read on until the copy
        # holds this round's. Reads paused meanwhile: a first read that sees it is a bound.
        gap=$(wc -l <"$DIR/reads-$sys")
        poll "$LIMIT" copy_done "$sys" "$warm" >/dev/null \
            || die "$sys: the backup never held $(wanted "$sys" "$warm") after loading $size: $("copy_$sys")"
        n=$(last_read "$sys" 2)
        ((kern == 0)) || kernel_wait "$n"
        sleep 1
    fi
    # The copy's time: the first read that saw the round's count (n: the settled count,
    # or what the backup held when it stayed above it).
    read -r t_copy reads < <(awk -v n="$n" '$2 >= n {print $1, NR; exit}' "$DIR/reads-$sys")
    ((reads > 1)) || FIRST["$sys $size"]=$((${FIRST["$sys $size"]:-0} + 1))
    ((kern == 0)) || add "$sys" "$size" kern_ms "$(ms "$T1" "$t_kern")"
    got=$("internal_$sys")
    [[ $got =~ ^[1-9][0-9]*$ ]] || die "$sys: cannot read the primary's internal cache ($got)"
    ((n == settled)) || note+=", the backup's copy above the primary's $settled"
    ((got == n)) || note+=", the primary at $got after the copy"
    ((gap == 0 || reads > gap + 1)) || note+=", its times only bounds (the copy was first seen after the settling)"
    if ((n != warm)) || [[ -n $note ]]; then
        ((${#SIZES[@]} == 1)) || at=", $size entries"
        note="round $r$at: $n of $warm in the warm-up$note"
        SHORT[$sys]+="${SHORT[$sys]:+; }$note"
        say "$sys: $note"
    fi
    add "$sys" "$size" load_ms "$(ms "$T0" "$T1")"
    add "$sys" "$size" copy_ms "$(ms "$T1" "$t_copy")"
    add "$sys" "$size" total_ms "$(ms "$T0" "$t_copy")"
    add "$sys" "$size" tx_a "$(awk -v a="$(($(tx "$A") - a0))" -v n="$n" 'BEGIN {printf "%.1f", a / n}')"
    # Without the Ethernet, IPv4 and UDP headers (14 + 20 + 8 bytes a packet).
    add "$sys" "$size" payload "$(awk -v a="$(($(tx "$A") - a0))" -v p="$(($(txp "$A") - p0))" -v n="$n" 'BEGIN {printf "%.1f", (a - 42 * p) / n}')"
    add "$sys" "$size" both "$(awk -v a="$(($(tx "$A") - a0 + $(tx "$B") - b0))" -v n="$n" 'BEGIN {printf "%.1f", a / n}')"
    add "$sys" "$size" drops "$(($(rcvbuf_errors "$A") + $(rcvbuf_errors "$B") - d0))"
    if ((size == BIG)); then
        local h c k=$n
        for node in a b; do
            local pid=$PA
            [[ $node == b ]] && pid=$PB
            h=$(hwm_kib "$pid") c=$(cpu_s "$pid")
            add "$sys" "$size" "rss_$node" "$(awk -v h="$h" -v k="$k" 'BEGIN {printf "%.1f", h / 1024 / (k / 100000)}')"
            add "$sys" "$size" "cpu_$node" "$(awk -v c="$c" -v k="$k" 'BEGIN {printf "%.2f", c / (k / 100000)}')"
        done
        # The whole table again: what the primary holds now.
        transfer "$sys" resync "$got"
        transfer "$sys" bulk "$got"
    fi
    stop_pair
}

started=$(date +%s)
for size in "${SIZES[@]}"; do
    for sys in ctsync conntrackd; do calibrate "$sys" "$size"; done
done
for ((r = 1; r <= ROUNDS; r++)); do
    for size in "${SIZES[@]}"; do
        # Alternate who goes first, so neither always meets a warm or a cold machine.
        for sys in $( ((r % 2)) && echo "ctsync conntrackd" || echo "conntrackd ctsync"); do
            measure "$sys" "$size"
        done
    done
done
say "done in $(($(date +%s) - started)) s"

med() { tr ' ' '\n' <<<"${R["$1 $2 $3"]:-}" | median; }
raw() { echo "${R["$1 $2 $3"]:-–}"; }
fmt() { awk -v v="$1" -v d="$2" 'BEGIN {printf "%.*f", d, v}'; }
# ratio CTSYNC CONNTRACKD BETTER WORSE [BOUND]: lower is better; says how ctsync compares.
# BOUND (ctsync or conntrackd): that figure is only an upper bound.
ratio() {
    awk -v c="$1" -v d="$2" -v b="$3" -v w="$4" -v bound="${5:-}" 'BEGIN {
        if (c <= 0 || d <= 0) { print "–"; exit }
        at = ""
        if ((bound == "ctsync" && c <= d) || (bound == "conntrackd" && c > d)) at = "≥ "
        if (c <= d) printf "ctsync %s%.1f × %s\n", at, d / c, b; else printf "ctsync %s%.1f × %s\n", at, c / d, w
    }'
}
row() { # label metric size decimals better worse
    local c d cb="" db="" bound=""
    c=$(med ctsync "$3" "$2") d=$(med conntrackd "$3" "$2")
    # A copy complete at the first read in every round: its time is a bound (≤).
    if [[ $2 == copy_ms ]]; then
        ((${FIRST["ctsync $3"]:-0} < ROUNDS)) || { cb="≤ " bound=ctsync; }
        ((${FIRST["conntrackd $3"]:-0} < ROUNDS)) || { db="≤ " bound=conntrackd; }
    fi
    local cc="did not complete" dc="did not complete"
    [[ -z ${R["ctsync $3 $2"]:-} ]] || cc=$cb$(fmt "$c" "$4")
    [[ -z ${R["conntrackd $3 $2"]:-} ]] || dc=$db$(fmt "$d" "$4")
    echo "| $1 | $cc | $dc | $(ratio "${c:-0}" "${d:-0}" "$5" "$6" "$bound") |"
}
rounds_line() { # label metric sizes...: every round's figure, per system (and size)
    local label=$1 metric=$2 sys size part line=""
    shift 2
    for sys in ctsync conntrackd; do
        part=""
        for size in "$@"; do
            if (($# > 1)); then
                part+="${part:+, }$size: $(raw "$sys" "$size" "$metric")"
            else
                part=$(raw "$sys" "$size" "$metric")
            fi
        done
        line+="${line:+; }$sys $part"
    done
    echo "Rounds ($label): $line."
}
targets=""
for size in "${SIZES[@]}"; do
    targets+="${targets:+, }$size → ${TARGET["ctsync $size"]}"
    [[ ${TARGET["ctsync $size"]} == "${TARGET["conntrackd $size"]}" ]] || targets+=" (conntrackd ${TARGET["conntrackd $size"]})"
done
# The rounds that replicated another count than the warm-up: each measured against its own.
short=""
for sys in ctsync conntrackd; do
    [[ -z ${SHORT[$sys]:-} ]] || short+="${short:+; }$sys ${SHORT[$sys]}"
done
[[ -z $short ]] || short=" Counted again in every round; where a round's count differed from the warm-up's, that round was measured against its own (bytes, memory and CPU per flow divide by it): $short."
incomplete=""
for sys in ctsync conntrackd; do
    [[ -z ${INCOMPLETE[$sys]:-} ]] || incomplete+="${incomplete:+; }$sys: ${INCOMPLETE[$sys]}"
done
[[ -z $incomplete ]] || short+=" Transfers that never completed (no figure in their rows): $incomplete."
Q=$(printf '%s ' "${SIZES[@]}")
rounds_text="median of $ROUNDS alternating rounds"
((ROUNDS > 1)) || rounds_text="one round"
Q=${Q% }

table=$(
    cat <<TXT
Measured $(date -u +%Y-%m-%d) on $(machine), conntrackd $(conntrackd_version); ctsync $MODE mode, conntrackd FTFW with its external cache; $rounds_text.
Replicated flows per size (the realistic mix, less the few entries that use the sync link's addresses): $targets.$short
Reproduce: \`$([[ $MODE == commit ]] && echo "CTSYNC_MODE=commit ")ROUNDS=$ROUNDS bench/replication.sh --write $Q\` (as root).

**Table replication**: entries loaded on the primary (\`ctsync load fill\`) until the backup's copy holds them all.

| what | ctsync | conntrackd | ratio |
|---|---|---|---|
$(for size in "${SIZES[@]}"; do
        row "$size entries: the load itself, ms (both daemons listening)" load_ms "$size" 0 faster slower
        row "$size entries: load end → backup's copy complete, ms" copy_ms "$size" 1 faster slower
        row "$size entries: load start → backup's copy complete, ms" total_ms "$size" 0 faster slower
        [[ $MODE == commit ]] \
            || echo "| $size entries: load end → all in the backup's kernel, ms | $(fmt "$(med ctsync "$size" kern_ms)" 1) | – (FTFW keeps them in user space) | |"
    done)

$(rounds_line "ms from the load's end to the complete copy" copy_ms "${SIZES[@]}")
Copy already complete at the first read after the load (its time is then that of one read, ~10 ms: marked ≤, a bound and not a measurement): $(for sys in ctsync conntrackd; do
        n=0
        for size in "${SIZES[@]}"; do n=$((n + ${FIRST["$sys $size"]:-0})); done
        echo -n "$sys $n, "
    done | sed 's/, $//') of $((ROUNDS * ${#SIZES[@]})) measurements each.

**Resync on request**, $BIG entries (ctsync \`request-resync\`, conntrackd \`-n\`, on the backup), and **bulk send** (ctsync \`bulk\`, conntrackd \`-B\`, on the primary): until the backup has received the whole table again.

| what | ctsync | conntrackd | ratio |
|---|---|---|---|
$(row "resync on request, ms" resync_ms "$BIG" 0 faster slower)
$(row "bulk send, ms" bulk_ms "$BIG" 0 faster slower)
$(row "resync: bytes on the link per flow, both directions" resync_both "$BIG" 1 fewer more)
$(row "bulk: bytes on the link per flow, both directions" bulk_both "$BIG" 1 fewer more)

$(rounds_line "resync, ms" resync_ms "$BIG") $(rounds_line "bulk, ms" bulk_ms "$BIG")

**Bytes on the sync link per replicated flow** during the table replication (veth tx_bytes, from the load's start until 1 s after the copy was complete: Ethernet, IP and UDP headers included, except in the payload rows, which take 42 bytes per packet off; conntrackd's own figure for its UDP payload is 86.6 bytes per entry).

| what | ctsync | conntrackd | ratio |
|---|---|---|---|
$(for size in "${SIZES[@]}"; do
        row "$size entries: primary → backup, bytes/flow" tx_a "$size" 1 fewer more
        row "$size entries: primary → backup, UDP payload only, bytes/flow" payload "$size" 1 fewer more
        row "$size entries: both directions, bytes/flow" both "$size" 1 fewer more
        row "$size entries: datagrams dropped by a full socket buffer (UDP RcvbufErrors, both nodes)" drops "$size" 0 fewer more
    done)

$(rounds_line "primary → backup, bytes/flow" tx_a "${SIZES[@]}")

**Memory and CPU** of each daemon after replicating $BIG entries (peak RSS, user+system CPU seconds since its start; per 100,000 flows).

| what | ctsync | conntrackd | ratio |
|---|---|---|---|
$(row "primary: peak RSS, MiB/100k" rss_a "$BIG" 1 less more)
$(row "primary: CPU, s/100k" cpu_a "$BIG" 2 less more)
$(row "backup: peak RSS, MiB/100k" rss_b "$BIG" 1 less more)
$(row "backup: CPU, s/100k" cpu_b "$BIG" 2 less more)

$(rounds_line "backup CPU, s/100k" cpu_b "$BIG")
TXT
)
echo "$table"
if ((write)); then write_section replication "$table"; fi
