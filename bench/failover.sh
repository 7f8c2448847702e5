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
N=${1:-200000}
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
    "$CT" load --netns "$A" fill --count "$N" --timeout 3600 >/dev/null
}
# takeover NS: seconds from now until NS's kernel holds N flows.
takeover_clock() {
    local t0=$1 t1
    wait_until 60 bash -c "(( \$(ip netns exec $B cat /proc/sys/net/netfilter/nf_conntrack_count) >= $N ))"
    t1=$(now)
    echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
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
    local mode=$1 pa pb t0 took
    fill_primary
    ctsync_conf "$A" 198.18.255.1 198.18.255.2 "$mode"
    ctsync_conf "$B" 198.18.255.2 198.18.255.1 "$mode"
    sed -i '2a role = "primary"' "$DIR/$A.toml"
    "$CT" run --config "$DIR/$A.toml" 2>"$DIR/$A-$mode.log" &
    pa=$!
    PIDS+=("$pa")
    "$CT" run --config "$DIR/$B.toml" 2>"$DIR/$B-$mode.log" &
    pb=$!
    PIDS+=("$pb")
    wait_until 120 bash -c "$CT status --json --socket $DIR/$B.sock 2>/dev/null | grep -q '\"external\":$N,.*\"ready\":true\\|\"ready\":true.*\"external\":$N'" \
        || { echo "ctsync $mode: the backup never held $N flows" >&2; tail "$DIR/$B-$mode.log" >&2; exit 1; }
    local before
    before=$(count "$B")
    t0=$(now)
    "$CT" role primary --socket "$DIR/$B.sock" >/dev/null
    took=$(takeover_clock "$t0")
    echo "| ctsync $mode | $took | $before | $(report "$pa" "$pb") |"
    kill "$pa" "$pb"
    wait "$pa" "$pb" 2>/dev/null || true
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

ext_count() { # conf
    conntrackd -C "$1" -s cache 2>/dev/null | awk '/external cache/ {e=1} e && /current active connections/ {print $NF; exit}'
}

run_conntrackd() { # inject(on/off)
    local inject=$1 pa pb t0 took label
    label="conntrackd FTFW"
    [[ $inject == on ]] && label="conntrackd FTFW DisableExternalCache"
    fill_primary
    conntrackd_conf "$A" 198.18.255.1 198.18.255.2 "$inject"
    conntrackd_conf "$B" 198.18.255.2 198.18.255.1 "$inject"
    ip netns exec "$A" conntrackd -C "$DIR/$A.conf" >/dev/null 2>&1 &
    pa=$!
    PIDS+=("$pa")
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" >/dev/null 2>&1 &
    pb=$!
    PIDS+=("$pb")
    wait_until 10 test -S "$DIR/$A.ctl"
    wait_until 10 test -S "$DIR/$B.ctl"
    # The backup asks for the primary's table, as primary-backup.sh does on BACKUP.
    conntrackd -C "$DIR/$B.conf" -n
    if [[ $inject == on ]]; then
        wait_until 120 bash -c "(( \$(ip netns exec $B cat /proc/sys/net/netfilter/nf_conntrack_count) >= $N ))" \
            || { echo "$label: the backup's kernel never held $N flows ($(count "$B"))" >&2; exit 1; }
    else
        wait_until 120 bash -c "(( \$(conntrackd -C $DIR/$B.conf -s cache 2>/dev/null | awk '/external cache/ {e=1} e && /current active connections/ {print \$NF; exit}') >= $N ))" \
            || { echo "$label: the backup's external cache never held $N flows ($(ext_count "$DIR/$B.conf"))" >&2; exit 1; }
    fi
    local before
    before=$(count "$B")
    t0=$(now)
    conntrackd -C "$DIR/$B.conf" -c >/dev/null 2>&1 || true
    took=$(takeover_clock "$t0")
    echo "| $label | $took | $before | $(report "$pa" "$pb") |"
    kill "$pa" "$pb"
    wait "$pa" "$pb" 2>/dev/null || true
}

report() { # pid-primary pid-backup: per 100k flows
    local per=$((N / 100000))
    ((per > 0)) || per=1
    local ha hb ca cb
    ha=$(hwm_kib "$1")
    hb=$(hwm_kib "$2")
    ca=$(cpu_s "$1")
    cb=$(cpu_s "$2")
    awk -v ha="$ha" -v hb="$hb" -v ca="$ca" -v cb="$cb" -v n="$N" 'BEGIN {
        k = n / 100000
        printf "%.1f | %.1f | %.2f | %.2f", ha / 1024 / k, hb / 1024 / k, ca / k, cb / k
    }'
}

echo "Takeover with $N replicated flows ($(nproc) cores, $(uname -r), $(conntrackd -v 2>&1 | head -1))"
echo
echo "| system | MASTER → all flows in the backup's kernel (s) | flows already in its kernel before | peak RSS primary (MiB/100k) | peak RSS backup (MiB/100k) | CPU primary (s/100k) | CPU backup (s/100k) |"
echo "|---|---|---|---|---|---|---|"
run_ctsync hot-standby
run_ctsync commit
run_conntrackd off
run_conntrackd on
