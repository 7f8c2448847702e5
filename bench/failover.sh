#!/usr/bin/env bash
# Takeover benchmark, side by side in one run: ctsync (hot standby, commit) and
# conntrackd (FTFW with its external cache, the default; and DisableExternalCache, its
# inject-directly mode). Root; Debian 12.
#
#   bench/failover.sh [FLOWS]        (default 200000)
#
# For each system: two network namespaces joined by a sync link; FLOWS entries in the
# primary's kernel (`ctsync load fill`, realistic mix with SNAT); both daemons started,
# the backup pulls the table (ctsync: by itself; conntrackd: `-n`, as its primary-backup
# script does) until its cache holds them all. Then the MASTER transition is signalled to
# the backup (ctsync: `ctsync role primary`, what keepalived's FIFO line does; conntrackd:
# `conntrackd -c`, what its script runs first), and the clock runs until the backup's
# kernel holds every flow (nf_conntrack_count, polled every few ms). Also reported: peak
# RSS (VmHWM) and CPU seconds of each daemon, per 100,000 flows.
#
# Prints a Markdown table; BENCHMARKS.md records the figures with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
REQ=${1:-200000}
N=$REQ
scripts/setup.sh
cargo build --release --locked -q -p ctsync
CT=$PWD/target/release/ctsync

P="ctsy-bfo-$$"
A="$P-a"
B="$P-b"
DIR=$(mktemp -d /tmp/ctsync-bench-failover-XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add name sync0 type veth peer name sync0 netns "$B"
ip -n "$A" addr add 198.18.255.1/24 dev sync0
ip -n "$B" addr add 198.18.255.2/24 dev sync0
for ns in "$A" "$B"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set sync0 up
done
"$CT" keygen >"$DIR/cluster.key"
chmod 600 "$DIR/cluster.key"

now() { date +%s.%N; }
count() { ip netns exec "$1" cat /proc/sys/net/netfilter/nf_conntrack_count; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
# wait_until SECONDS CMD...: poll CMD every 20 ms; fail after SECONDS.
wait_until() {
    local limit=$1
    shift
    local end=$(($(date +%s) + limit))
    until "$@"; do
        if (($(date +%s) >= end)); then return 1; fi
        sleep 0.02
    done
}
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

ctsync_conf() { # ns me peer mode
    cat >"$DIR/$1.toml" <<EOF
node = "$1"
netns = "$1"
[sync]
interface = "sync0"
local = "$2:3780"
peers = ["$3:3780"]
key_file = "$DIR/cluster.key"
mode = "$4"
kernel_resync_secs = 0
[control]
socket = "$DIR/$1.sock"
EOF
}

run_ctsync() { # mode
    local mode=$1 pa pb took
    fill_primary
    ctsync_conf "$A" 198.18.255.1 198.18.255.2 "$mode"
    ctsync_conf "$B" 198.18.255.2 198.18.255.1 "$mode"
    sed -i '2a role = "primary"' "$DIR/$A.toml"
    rm -f "$DIR/$A.sock" "$DIR/$B.sock"
    "$CT" run --config "$DIR/$A.toml" 2>"$DIR/$A-$mode.log" &
    pa=$!
    PIDS+=("$pa")
    "$CT" run --config "$DIR/$B.toml" 2>"$DIR/$B-$mode.log" &
    pb=$!
    PIDS+=("$pb")
    wait_until 10 "$CT" status --socket "$DIR/$A.sock" >/dev/null 2>&1
    # The target: what the primary replicates (its internal cache; a few synthetic
    # entries use the sync link's addresses, which are never replicated).
    N=$("$CT" status --json --socket "$DIR/$A.sock" | sed -n 's/.*"internal":\([0-9]*\).*/\1/p')
    wait_until 120 bash -c "$CT status --json --socket $DIR/$B.sock 2>/dev/null | grep -q '\"external\":$N,.*\"ready\":true\\|\"ready\":true.*\"external\":$N'" \
        || { echo "ctsync $mode: the backup never held $N flows" >&2; tail "$DIR/$B-$mode.log" >&2; exit 1; }
    local before rep
    before=$(count "$B")
    rep=$(usage "$pa")
    fail_primary "$pa"
    took=$(takeover "$CT" role primary --socket "$DIR/$B.sock")
    sleep 1
    echo "| ctsync $mode | $took | $before | $rep | $(usage "$pb") |"
    kill "$pb"
    wait "$pb" 2>/dev/null || true
}

conntrackd_conf() { # ns me peer inject(on/off)
    cat >"$DIR/$1.conf" <<EOF
Sync {
    Mode FTFW {
        DisableExternalCache $4
    }
    UDP {
        IPv4_address $2
        IPv4_Destination_Address $3
        Port 3781
        Interface sync0
        SndSocketBuffer 24985600
        RcvSocketBuffer 24985600
        Checksum on
    }
}
General {
    Systemd off
    HashSize 65536
    HashLimit $((N * 4))
    LogFile $DIR/$1-conntrackd.log
    Syslog off
    LockFile $DIR/$1.lock
    UNIX {
        Path $DIR/$1.ctl
    }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 134217728
    Filter From Userspace {
        Address Ignore {
            IPv4_address 127.0.0.1
            IPv4_address 198.18.255.1
            IPv4_address 198.18.255.2
        }
    }
}
EOF
}

ext_count() { # conf: objects in conntrackd's external cache
    ip netns exec "$B" conntrackd -C "$1" -s cache 2>/dev/null | awk '/^cache:external/ {print $NF; exit}'
}
export -f ext_count
export B

run_conntrackd() { # inject(on/off)
    local inject=$1 pa pb t0 took label
    label="conntrackd FTFW"
    [[ $inject == on ]] && label="conntrackd FTFW DisableExternalCache"
    fill_primary
    conntrackd_conf "$A" 198.18.255.1 198.18.255.2 "$inject"
    conntrackd_conf "$B" 198.18.255.2 198.18.255.1 "$inject"
    rm -f "$DIR/$A.ctl" "$DIR/$B.ctl" "$DIR/$A.lock" "$DIR/$B.lock"
    ip netns exec "$A" conntrackd -C "$DIR/$A.conf" >/dev/null 2>&1 &
    pa=$!
    PIDS+=("$pa")
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" >/dev/null 2>&1 &
    pb=$!
    PIDS+=("$pb")
    wait_until 10 test -S "$DIR/$A.ctl"
    wait_until 10 test -S "$DIR/$B.ctl"
    # The target: what the primary replicates (its internal cache, filtered alike).
    N=$(ip netns exec "$A" conntrackd -C "$DIR/$A.conf" -s cache 2>/dev/null | awk '/^cache:internal/ {print $NF; exit}')
    # The backup asks for the primary's table, as primary-backup.sh does on BACKUP.
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -n
    if [[ $inject == on ]]; then
        wait_until 120 bash -c "(( \$(ip netns exec $B cat /proc/sys/net/netfilter/nf_conntrack_count) >= $N ))" \
            || { echo "$label: the backup's kernel never held $N flows ($(count "$B"))" >&2; exit 1; }
    else
        wait_until 120 bash -c "(( \$(ext_count $DIR/$B.conf) + 0 >= $N ))" \
            || { echo "$label: the backup's external cache never held $N flows ($(ext_count "$DIR/$B.conf"))" >&2; exit 1; }
    fi
    local before rep
    before=$(count "$B")
    rep=$(usage "$pa")
    fail_primary "$pa"
    took=$(takeover ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -c)
    sleep 1
    echo "| $label | $took | $before | $rep | $(usage "$pb") |"
    kill "$pb"
    wait "$pb" 2>/dev/null || true
}

# The primary fails (SIGKILL) before the backup is told to take over, as in a real
# failover. It also matters for fairness: the kernel's list of event listeners is global
# across network namespaces, so a live daemon in the primary's namespace would make every
# write in the backup's namespace build events too.
fail_primary() {
    kill -9 "$1"
    wait "$1" 2>/dev/null || true
}

usage() { # pid: "peak RSS MiB | CPU s", per 100k flows
    awk -v h="$(hwm_kib "$1")" -v c="$(cpu_s "$1")" -v n="$N" 'BEGIN {
        k = n / 100000
        printf "%.1f | %.2f", h / 1024 / k, c / k
    }'
}

echo "Takeover with $REQ replicated flows ($(nproc) cores, $(uname -r), $(conntrackd -v 2>&1 | head -1))"
echo
echo "| system | MASTER → all flows in the backup's kernel (s) | flows in its kernel before | primary: peak RSS (MiB/100k) | primary: CPU (s/100k) | backup: peak RSS (MiB/100k) | backup: CPU (s/100k) |"
echo "|---|---|---|---|---|---|---|"
run_ctsync hot-standby
run_ctsync commit
run_conntrackd off
run_conntrackd on
