#!/usr/bin/env bash
# Many routers on two network nodes (docs/NEUTRON.md), side by side in one run (root;
# Debian 12):
#   ctsync, many:  one `ctsync run` per host with [namespaces], ROUTERS routers of FLOWS
#                  flows each;
#   ctsync, one:   the same daemon with one router of ROUTERS × FLOWS flows (the cost the
#                  many routers are held to: within 1.5 ×);
#   conntrackd:    what Neutron would have to run without ctsync: one conntrackd per
#                  router namespace and host (FTFW over the router's own HA link).
# Each: start-up until the backup host holds every router's flows; CPU and memory of each
# host's daemons (summed over processes); CPU over IDLE seconds of idle; then FLOWS more
# flows per router on the primary host, CPU until the backup holds them.
#
#   bench/routers.sh [--write] [ROUTERS [FLOWS]]    (defaults 500 and 100)
#   IDLE=seconds of idle measured (30); CTSYNC_BIN=path to use instead of building;
#   CONNTRACKD=0 leaves out the conntrackd round (to compare ctsync builds; no --write);
#   PERF_IDLE=directory records each ctsync round's idle period with `perf record` there
#   (SUFFIX.data; read it with `perf report -i`).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
write=0
if [[ "${1:-}" == --write ]]; then
    write=1
    shift
fi
R=${1:-500}
FLOWS=${2:-100}
IDLE=${IDLE:-30}
[[ $R =~ ^[0-9]+$ && $FLOWS =~ ^[0-9]+$ && $R -ge 1 && $FLOWS -ge 1 && $R -le 2000 ]] || {
    echo "usage: bench/routers.sh [--write] [ROUTERS (1-2000) [FLOWS]]" >&2
    exit 2
}
TOTAL=$((R * FLOWS))
CONNTRACKD=${CONNTRACKD:-1}
if [[ $CONNTRACKD == 0 && $write == 1 ]]; then
    echo "bench/routers.sh: --write needs the conntrackd round (CONNTRACKD=0 given)" >&2
    exit 2
fi

scripts/setup.sh
ctsync_binary

P="ctsy-rt-$$"
DIR=$(mktemp -d "/tmp/ctsync-bench-rt-XXXXXX")
PIDS=()
MAXF=/proc/sys/net/netfilter/nf_conntrack_max
WAS_MAX=$(cat "$MAXF")
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    ip netns list | awk -v p="$P-" 'index($1, p) == 1 {print "netns del " $1}' | ip -force -batch - 2>/dev/null || true
    rm -rf "$DIR"
    echo "$WAS_MAX" >"$MAXF"
}
trap cleanup EXIT INT TERM
# Room for both hosts' tables twice over (the limit is global and read-only inside a
# namespace); put back at exit.
want=$((4 * TOTAL + 20000))
((want > WAS_MAX)) && echo "$want" >"$MAXF"

now() { date +%s.%N; }
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# user_s PID: its CPU in user space alone (the daemon's own work: the kernel's part, in
# system time, includes offering each conntrack event to every namespace's sockets).
user_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", $14 / t}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
sum_cpu() { local s=0 p; for p in "$@"; do s=$(awk -v a="$s" -v b="$(cpu_s "$p")" 'BEGIN {print a + b}'); done; echo "$s"; }
sum_user() { local s=0 p; for p in "$@"; do s=$(awk -v a="$s" -v b="$(user_s "$p")" 'BEGIN {print a + b}'); done; echo "$s"; }
sum_rss_mib() { local s=0 p; for p in "$@"; do s=$((s + $(rss_kib "$p"))); done; awk -v k="$s" 'BEGIN {printf "%.1f", k / 1024}'; }
wait_until() { # SECONDS CMD...: poll every 200 ms
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        (($(date +%s) < end)) || return 1
        sleep 0.2
    done
}

# wait_until_1s SECONDS CMD...: poll every second (each look at a daemon of namespaces
# asks every router: looking five times a second cost more CPU than the routers did).
wait_until_1s() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        (($(date +%s) < end)) || return 1
        sleep 1
    done
}

echo "routers: $R routers × $FLOWS flows on two hosts ($(machine))" >&2
# The hosts (the sync link between their own namespaces), the routers' replicas, and
# each router's HA link between its replicas (used by conntrackd only). Every router uses
# the same addresses: they are separate namespaces, as Neutron's tenants' are.
{
    # Each ctsync round has host namespaces of its own, so that nothing the first round
    # leaves in them (namespace ids given there live as long as the routers'
    # namespaces, and a socket listening to every namespace looks through all of them
    # on each event) weighs on the second.
    for h in many one; do echo "netns add $P-ha$h"; echo "netns add $P-hb$h"; done
    for i in $(seq "$R"); do echo "netns add $P-a-r$i"; echo "netns add $P-b-r$i"; done
    echo "netns add $P-a-one"
    echo "netns add $P-b-one"
} | ip -batch -
for h in many one; do
    ip -n "$P-ha$h" link add sync0 type veth peer name sync0 netns "$P-hb$h"
    ip -n "$P-ha$h" addr add 198.18.250.1/24 dev sync0
    ip -n "$P-hb$h" addr add 198.18.250.2/24 dev sync0
    ip -n "$P-ha$h" link set sync0 up
    ip -n "$P-hb$h" link set sync0 up
done
for i in $(seq "$R"); do
    ip link add name ha0 netns "$P-a-r$i" type veth peer name ha0 netns "$P-b-r$i"
    ip -n "$P-a-r$i" addr add 198.18.251.1/24 dev ha0
    ip -n "$P-b-r$i" addr add 198.18.251.2/24 dev ha0
    ip -n "$P-a-r$i" link set ha0 up
    ip -n "$P-b-r$i" link set ha0 up
done
"$CT" keygen >"$DIR/cluster.key"
chmod 600 "$DIR/cluster.key"
for i in $(seq "$R"); do
    "$CT" load --netns "$P-a-r$i" fill --count "$FLOWS" >/dev/null
done
"$CT" load --netns "$P-a-one" fill --count "$TOTAL" >/dev/null

ctsync_conf() { # host(a|b) me peer match round(many|one)
    cat >"$DIR/host-$1.toml" <<EOF
node = "host-$1"
netns = "$P-h$1$5"
[namespaces]
match = "$4"
role = "keepalived-state"
state_file = "$DIR/ha-$1/{id}/state"
[sync]
interface = "sync0"
local = "$2:3780"
peers = ["$3:3780"]
key_file = "$DIR/cluster.key"
[control]
socket = "$DIR/host-$1.sock"
EOF
}
for i in $(seq "$R") ne; do
    mkdir -p "$DIR/ha-a/$i" "$DIR/ha-b/$i"
    echo primary >"$DIR/ha-a/$i/state"
    echo backup >"$DIR/ha-b/$i/state"
done

# sum_of KEY JSON: the sum of every "KEY":number in JSON.
sum_of() { grep -o "\"$1\":[0-9]*" <<<"$2" | awk -F: '{s += $2} END {print s + 0}'; }
# complete N EXPECTED: host b's daemon lists N routers, each ready, and holds every flow
# host a's routers hold (at least 99 % of N × EXPECTED: the filter leaves out a few
# entries of the synthetic mix, such as loopback ones).
# Host a is asked only once host b looks complete: each look at a daemon of namespaces
# asks every router, and asking the primary host while its routers start slowed them.
complete() {
    local a b own copied
    b=$("$CT" status --json --socket "$DIR/host-b.sock" 2>/dev/null) || return 1
    copied=$(sum_of external "$b")
    [[ $(grep -o '"ready":true' <<<"$b" | wc -l) -eq $1 ]] && ((copied * 100 >= $1 * $2 * 99)) || return 1
    a=$("$CT" status --json --socket "$DIR/host-a.sock" 2>/dev/null) || return 1
    own=$(sum_of internal "$a")
    ((copied == own))
}

# run_ctsync LABEL PATTERN_SUFFIX ROUTERS PER_ROUTER HOSTS: one measured round, on the
# host namespaces of HOSTS (many|one), its load by $FILL; prints a row.
run_ctsync() {
    local label=$1 suffix=$2 n=$3 per=$4 hosts=$5 t0 t1 pa pb c0 c1 ca cb
    ctsync_conf a 198.18.250.1 198.18.250.2 "$P-a-$suffix" "$hosts"
    ctsync_conf b 198.18.250.2 198.18.250.1 "$P-b-$suffix" "$hosts"
    rm -rf "$DIR"/host-*.run "$DIR"/host-*.sock
    t0=$(now)
    STATE_DIRECTORY="$DIR/host-a.state" RUNTIME_DIRECTORY="$DIR/host-a.run" "$CT" run --config "$DIR/host-a.toml" 2>>"$DIR/host-a.log" &
    pa=$!
    STATE_DIRECTORY="$DIR/host-b.state" RUNTIME_DIRECTORY="$DIR/host-b.run" "$CT" run --config "$DIR/host-b.toml" 2>>"$DIR/host-b.log" &
    pb=$!
    PIDS+=("$pa" "$pb")
    wait_until_1s 600 complete "$n" "$per" || { echo "routers: $label: the backup host never held every router's flows" >&2; tail -5 "$DIR/host-b.log" >&2; exit 1; }
    t1=$(now)
    local start_s start_cpu rss_a rss_b idle_cpu idle_user u0 u1 load_cpu_a load_cpu_b load_s ub load_user_b
    start_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    start_cpu=$(sum_cpu "$pa" "$pb")
    c0=$(sum_cpu "$pa" "$pb")
    u0=$(sum_user "$pa" "$pb")
    if [[ -n ${PERF_IDLE:-} ]]; then
        perf record -q -F 499 -g -p "$pa,$pb" -o "$PERF_IDLE/$suffix.data" -- sleep "$IDLE" 2>/dev/null
    else
        sleep "$IDLE"
    fi
    c1=$(sum_cpu "$pa" "$pb")
    u1=$(sum_user "$pa" "$pb")
    idle_cpu=$(awk -v a="$c0" -v b="$c1" -v t="$IDLE" 'BEGIN {printf "%.2f", (b - a) / t * 100}')
    idle_user=$(awk -v a="$u0" -v b="$u1" -v t="$IDLE" 'BEGIN {printf "%.2f", (b - a) / t * 100}')
    rss_a=$(sum_rss_mib "$pa")
    rss_b=$(sum_rss_mib "$pb")
    ca=$(cpu_s "$pa")
    cb=$(cpu_s "$pb")
    ub=$(user_s "$pb")
    t0=$(now)
    "$FILL" "$per"
    wait_until_1s 600 complete "$n" $((2 * per)) || { echo "routers: $label: the load never reached the backup host" >&2; exit 1; }
    t1=$(now)
    load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
    load_cpu_a=$(awk -v a="$ca" -v b="$(cpu_s "$pa")" 'BEGIN {printf "%.2f", b - a}')
    load_cpu_b=$(awk -v a="$cb" -v b="$(cpu_s "$pb")" 'BEGIN {printf "%.2f", b - a}')
    load_user_b=$(awk -v a="$ub" -v b="$(user_s "$pb")" 'BEGIN {printf "%.2f", b - a}')
    kill "$pa" "$pb"
    wait "$pa" "$pb" 2>/dev/null || true
    echo "$label|$start_s|$start_cpu|$rss_a|$rss_b|$idle_cpu|$load_s|$load_cpu_a|$load_cpu_b|$idle_user|$load_user_b"
}
fill_many() { local i; for i in $(seq "$R"); do "$CT" load --netns "$P-a-r$i" fill --start "$1" --count "$1" >/dev/null; done; }
fill_one() { "$CT" load --netns "$P-a-one" fill --start "$TOTAL" --count "$TOTAL" >/dev/null; }

FILL=fill_many
row_many=$(run_ctsync "ctsync, $R routers × $FLOWS" "r*" "$R" "$FLOWS" many)
echo "$row_many" >&2
# The many routers' second FLOWS flows are in the kernels now; the one router's table
# holds TOTAL, and gets TOTAL more.
FILL=fill_one
row_one=$(run_ctsync "ctsync, 1 router × $TOTAL" "o*" 1 "$TOTAL" one)
echo "$row_one" >&2
((CONNTRACKD)) || exit 0

# conntrackd: one per router and host, FTFW over the router's HA link, as Neutron would
# have to run it (each with its own socket, lock and log in DIR).
cd_conf() { # side(a|b) i me peer
    cat >"$DIR/cd-$1-$2.conf" <<EOF
Sync {
    Mode FTFW {
        DisableExternalCache Off
    }
    UDP {
        IPv4_address $3
        IPv4_Destination_Address $4
        Port 3781
        Interface ha0
        SndSocketBuffer 1249280
        RcvSocketBuffer 1249280
        Checksum on
    }
}
General {
    Systemd off
    HashSize 1024
    HashLimit $((FLOWS * 8 + 1024))
    LogFile off
    Syslog off
    LockFile $DIR/cd-$1-$2.lock
    UNIX {
        Path $DIR/cd-$1-$2.ctl
    }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
}
EOF
}
# The routers' tables back to FLOWS each on the primary host, as for ctsync's round, and
# empty on the backup host (ctsync's hot standby wrote its copies there).
for i in $(seq "$R"); do
    "$CT" load --netns "$P-a-r$i" delete --start "$FLOWS" --count "$FLOWS" >/dev/null
    "$CT" load --netns "$P-b-r$i" flush >/dev/null
done
ext_at_least() { # i n: router i's backup conntrackd holds at least n external flows
    local c
    c=$(ip netns exec "$P-b-r$1" conntrackd -C "$DIR/cd-b-$1.conf" -s cache 2>/dev/null | awk '/^cache:external/ {print $NF; exit}')
    [[ -n "$c" && "$c" -ge $2 ]]
}
cd_complete() { # n: every backup conntrackd holds n
    local i
    for i in $(seq "$R"); do wait_until 600 ext_at_least "$i" "$1" || return 1; done
}
CPA=() CPB=()
t0=$(now)
for i in $(seq "$R"); do
    cd_conf a "$i" 198.18.251.1 198.18.251.2
    cd_conf b "$i" 198.18.251.2 198.18.251.1
    ip netns exec "$P-a-r$i" conntrackd -C "$DIR/cd-a-$i.conf" >/dev/null 2>&1 &
    CPA+=($!)
    ip netns exec "$P-b-r$i" conntrackd -C "$DIR/cd-b-$i.conf" >/dev/null 2>&1 &
    CPB+=($!)
done
PIDS+=("${CPA[@]}" "${CPB[@]}")
for i in $(seq "$R"); do
    wait_until 60 test -S "$DIR/cd-b-$i.ctl"
    # As primary-backup.sh does on BACKUP.
    ip netns exec "$P-b-r$i" conntrackd -C "$DIR/cd-b-$i.conf" -n >/dev/null 2>&1 || true
done
cd_complete "$FLOWS" || { echo "routers: conntrackd: the backups never held every router's flows" >&2; exit 1; }
t1=$(now)
cd_start_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
cd_start_cpu=$(sum_cpu "${CPA[@]}" "${CPB[@]}")
c0=$(sum_cpu "${CPA[@]}" "${CPB[@]}")
u0=$(sum_user "${CPA[@]}" "${CPB[@]}")
sleep "$IDLE"
c1=$(sum_cpu "${CPA[@]}" "${CPB[@]}")
u1=$(sum_user "${CPA[@]}" "${CPB[@]}")
cd_idle=$(awk -v a="$c0" -v b="$c1" -v t="$IDLE" 'BEGIN {printf "%.2f", (b - a) / t * 100}')
cd_idle_user=$(awk -v a="$u0" -v b="$u1" -v t="$IDLE" 'BEGIN {printf "%.2f", (b - a) / t * 100}')
cd_rss_a=$(sum_rss_mib "${CPA[@]}")
cd_rss_b=$(sum_rss_mib "${CPB[@]}")
ca=$(sum_cpu "${CPA[@]}")
cb=$(sum_cpu "${CPB[@]}")
ub=$(sum_user "${CPB[@]}")
t0=$(now)
fill_many "$FLOWS"
cd_complete $((2 * FLOWS)) || { echo "routers: conntrackd: the load never reached the backups" >&2; exit 1; }
t1=$(now)
cd_load_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
cd_load_a=$(awk -v a="$ca" -v b="$(sum_cpu "${CPA[@]}")" 'BEGIN {printf "%.2f", b - a}')
cd_load_b=$(awk -v a="$cb" -v b="$(sum_cpu "${CPB[@]}")" 'BEGIN {printf "%.2f", b - a}')
cd_load_user_b=$(awk -v a="$ub" -v b="$(sum_user "${CPB[@]}")" 'BEGIN {printf "%.2f", b - a}')
row_cd="conntrackd, $R × 2 processes|$cd_start_s|$cd_start_cpu|$cd_rss_a|$cd_rss_b|$cd_idle|$cd_load_s|$cd_load_a|$cd_load_b|$cd_idle_user|$cd_load_user_b"
echo "$row_cd" >&2

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
table() {
    echo "Measured with \`bench/routers.sh --write $R $FLOWS\` (IDLE=$IDLE) on build $rev ($(date -u +%Y-%m-%d)), $(machine), conntrackd $(conntrackd_version). Start-up: from starting the daemons until the backup host holds every router's flows (the primaries' fill is before); CPU in seconds, both hosts' daemons summed; RSS of each host's daemons summed after the idle period; idle CPU in % of one core over $IDLE s, and of it in user space (the daemons' own work; the rest is the kernel's, in their system calls); load: $FLOWS more flows per router created on the primary host (one \`ctsync load\` per router, included in the time) until the backup host holds them, CPU of each host's daemons, and of host b's in user space."
    echo
    echo "| | start-up | its CPU | RSS host a / b (MiB) | idle CPU (user) | load | load CPU host a / b (b's user) |"
    echo "|---|---|---|---|---|---|---|"
    local r
    for r in "$row_many" "$row_one" "$row_cd"; do
        IFS='|' read -r l s c ra rb i ls la lb iu lu <<<"$r"
        echo "| $l | $s s | $c s | $ra / $rb | $i % ($iu %) | $ls s | $la / $lb s ($lu s) |"
    done
    echo
    awk -F'|' -v m="$row_many" -v o="$row_one" -v c="$row_cd" 'BEGIN {
        split(m, a, "|"); split(o, b, "|"); split(c, d, "|")
        printf "Ratios: %d routers against one router of the same flows: RSS %.2f × (host b), load CPU %.2f × (host b; in user space %.2f ×), idle CPU %.2f × (in user space %.2f ×); against %d conntrackd processes per host: RSS %.2f × (host b), idle CPU %.2f ×, start-up %.2f ×, load CPU %.2f × (host b).\n",
            '"$R"', a[5] / b[5], a[9] / (b[9] > 0 ? b[9] : 0.01), a[11] / (b[11] > 0 ? b[11] : 0.01), a[6] / (b[6] > 0 ? b[6] : 0.01), a[10] / (b[10] > 0 ? b[10] : 0.01), '"$R"', a[5] / d[5], a[6] / (d[6] > 0 ? d[6] : 0.01), a[2] / d[2], a[9] / (d[9] > 0 ? d[9] : 0.01)
    }'
}
out=$(table)
echo "$out"
if ((write)); then write_section routers "$out"; fi
