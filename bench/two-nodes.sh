# shellcheck shell=bash
# Shared by the benchmarks that compare ctsync and conntrackd on two nodes: sourced, not
# run. Expects TAG (part of the namespace names) and N (flows, sizes conntrackd's cache).
# Sets up two network namespaces A and B joined by a sync link (198.18.255.1/.2), the
# release build CT (or the binary CTSYNC_BIN names, without building), a cluster key in
# DIR, and removes everything on exit.
scripts/setup.sh
ctsync_binary

P="ctsy-$TAG-$$"
A="$P-a"
B="$P-b"
DIR=$(mktemp -d "/tmp/ctsync-bench-$TAG-XXXXXX")
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

# room_for N: the kernel's table limit (net.netfilter.nf_conntrack_max) and its hash
# (net.netfilter.nf_conntrack_buckets) are global and read-only inside a namespace:
# raised for N entries with room to spare if they are below, and put back when the script
# exits. The hash gets two buckets per entry of the limit: both namespaces' tables share
# it, and a hot-standby backup's kernel holds its copy beside the primary's, so a hash
# sized for one table would give each lookup twice the chain a real firewall's kernel
# walks (at a million entries, a quarter of both daemons' CPU went there).
room_for() {
    local f=/proc/sys/net/netfilter/nf_conntrack_max b=/proc/sys/net/netfilter/nf_conntrack_buckets
    local want=$(($1 + $1 / 4 + 10000)) was was_b restore=cleanup
    was=$(cat "$f") was_b=$(cat "$b")
    if ((want > was)); then
        echo "$want" >"$f"
        echo "$TAG: net.netfilter.nf_conntrack_max $was → $want (restored at the end)" >&2
        restore+="; echo $was >$f"
    fi
    if ((2 * want > was_b)); then
        echo $((2 * want)) >"$b"
        echo "$TAG: net.netfilter.nf_conntrack_buckets $was_b → $(cat "$b") (restored at the end)" >&2
        restore+="; echo $was_b >$b"
    fi
    # shellcheck disable=SC2064 # the values to restore are fixed now
    trap "$restore" EXIT INT TERM
}

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


# start_ctsync MODE: both daemons (A primary, B backup); sets PA and PB.
start_ctsync() {
    ctsync_conf "$A" 198.18.255.1 198.18.255.2 "$1"
    ctsync_conf "$B" 198.18.255.2 198.18.255.1 "$1"
    sed -i '2a role = "primary"' "$DIR/$A.toml"
    rm -f "$DIR/$A.sock" "$DIR/$B.sock"
    # A fresh pair: no role kept from a previous pair's `ctsync role` (the runtime
    # directory is what a reboot clears), so each starts in its configured role.
    rm -rf "$DIR/$A.run" "$DIR/$B.run"
    STATE_DIRECTORY="$DIR/$A.state" RUNTIME_DIRECTORY="$DIR/$A.run" "$CT" run --config "$DIR/$A.toml" 2>>"$DIR/$A-ctsync.log" &
    PA=$!
    PIDS+=("$PA")
    STATE_DIRECTORY="$DIR/$B.state" RUNTIME_DIRECTORY="$DIR/$B.run" "$CT" run --config "$DIR/$B.toml" 2>>"$DIR/$B-ctsync.log" &
    PB=$!
    PIDS+=("$PB")
    wait_until 10 "$CT" status --socket "$DIR/$A.sock" >/dev/null 2>&1
    wait_until 10 "$CT" status --socket "$DIR/$B.sock" >/dev/null 2>&1
}

# start_conntrackd INJECT(on/off): both daemons, the backup asking for the table; sets PA, PB.
start_conntrackd() {
    conntrackd_conf "$A" 198.18.255.1 198.18.255.2 "$1"
    conntrackd_conf "$B" 198.18.255.2 198.18.255.1 "$1"
    rm -f "$DIR/$A.ctl" "$DIR/$B.ctl" "$DIR/$A.lock" "$DIR/$B.lock"
    ip netns exec "$A" conntrackd -C "$DIR/$A.conf" >/dev/null 2>&1 &
    PA=$!
    PIDS+=("$PA")
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" >/dev/null 2>&1 &
    PB=$!
    PIDS+=("$PB")
    wait_until 10 test -S "$DIR/$A.ctl"
    wait_until 10 test -S "$DIR/$B.ctl"
    # As primary-backup.sh does on BACKUP.
    ip netns exec "$B" conntrackd -C "$DIR/$B.conf" -n
}

stop_pair() {
    kill "$PA" "$PB" 2>/dev/null || true
    wait "$PA" "$PB" 2>/dev/null || true
}
