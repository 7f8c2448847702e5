#!/usr/bin/env bash
# Failover of live sessions, side by side in one run: the demo's lab (client, two
# firewalls with nftables forward-drop, SNAT with random ports and nf_conntrack_tcp_loose=0,
# keepalived VRRP over LAN and WAN, server; all in network namespaces) with ctsync (hot
# standby), with conntrackd (FTFW over UDP on the sync link, driven by its own
# primary-backup.sh from keepalived's notify hooks) and with nothing (the control).
# Root; Debian 12.
#
#   bench/sessions.sh [--write] [ROUNDS]        (default 3 rounds)
#
# Each run: 50 TCP connections from the client to the server through the cluster, each
# sending every 100 ms and checking every echo; fw1 fails hard (links down, keepalived and
# the sync daemon killed with SIGKILL). Reported per system and VRRP advert interval:
# connections alive 6 s after fw2 became master, and the longest time any connection went
# without an echo (the stall). Three settings:
#   - advert_int 1 s (keepalived's default), 50 sessions alone in the table;
#   - advert_int 100 ms, 50 sessions alone;
#   - advert_int 100 ms, the 50 sessions among 100,000 other replicated entries (a busy
#     firewall): here the sync daemon's part of the takeover shows.
# Systems alternate within each round. The figure per cell is the median over ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
write=0
if [[ ${1:-} == --write ]]; then
    write=1
    shift
fi
ROUNDS=${1:-3}
scripts/setup.sh
if [[ -n ${CTSYNC_BIN:-} ]]; then
    CT=$(realpath "$CTSYNC_BIN")
else
    cargo build --release --locked -q -p ctsync
    CT=$PWD/target/release/ctsync
fi
OUT=$(mktemp -d /tmp/ctsync-bench-sessions-XXXXXX)
trap 'rm -rf "$OUT"' EXIT INT TERM

SETTINGS=("1000 0" "100 0" "100 100000")
SYSTEMS=(ctsync conntrackd none)
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p"; }

for ((r = 1; r <= ROUNDS; r++)); do
    for setting in "${SETTINGS[@]}"; do
        read -r advert background <<<"$setting"
        for sys in "${SYSTEMS[@]}"; do
            # The control with a busy table adds nothing (it loses everything anyway).
            if [[ $sys == none && $background != 0 ]]; then continue; fi
            echo "round $r: $sys, advert ${advert} ms, $background background entries" >&2
            line=$(timeout 300 "$CT" bench-sessions --daemon "$sys" --advert-ms "$advert" \
                --background "$background" 2>"$OUT/last.err" | tail -1) || {
                echo "run failed: $sys advert $advert background $background" >&2
                tail -40 "$OUT/last.err" >&2
                exit 1
            }
            echo "$line" >>"$OUT/$sys-$advert-$background"
        done
    done
done

# cell SYSTEM ADVERT BACKGROUND: "alive/total | stall s" (medians).
cell() {
    local f="$OUT/$1-$2-$3"
    [[ -f $f ]] || { echo "– | –"; return; }
    local alive total stall
    alive=$(field tcp_alive <"$f" | median)
    total=$(field tcp <"$f" | head -1)
    stall=$(field longest_stall_s <"$f" | median)
    printf "%s/%s | %.2f" "$alive" "$total" "$stall"
}
rounds() { # SYSTEM ADVERT BACKGROUND: per-round stalls
    field longest_stall_s <"$OUT/$1-$2-$3" | awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}'
}
ratio() { # ADVERT BACKGROUND: conntrackd's stall / ctsync's
    local a b
    a=$(field longest_stall_s <"$OUT/ctsync-$1-$2" | median)
    b=$(field longest_stall_s <"$OUT/conntrackd-$1-$2" | median)
    awk -v a="$a" -v b="$b" 'BEGIN { if (a > 0) printf "%.1f ×", b / a }'
}
takeover() { # ADVERT BACKGROUND: median seconds from the failure to fw2 master, all systems
    cat "$OUT"/*-"$1-$2" | field takeover_s | median | awk '{printf "%.2f", $1}'
}

table=$(
    cat <<TXT
Measured $(date -u +%Y-%m-%d) on $(machine), conntrackd $(conntrackd_version), keepalived $(keepalived -v 2>&1 | grep -o 'v[0-9][0-9.]*' | head -1 | tr -d v); median of $ROUNDS alternating rounds.
Reproduce: \`bench/sessions.sh --write $ROUNDS\` (as root).

| setting | failure → fw2 master (s) | ctsync: alive | ctsync: longest stall (s) | conntrackd: alive | conntrackd: longest stall (s) | no sync: alive | no sync: longest stall (s) | stall, conntrackd / ctsync |
|---|---|---|---|---|---|---|---|---|
| advert_int 1 s, 50 sessions | $(takeover 1000 0) | $(cell ctsync 1000 0) | $(cell conntrackd 1000 0) | $(cell none 1000 0) | $(ratio 1000 0) |
| advert_int 100 ms, 50 sessions | $(takeover 100 0) | $(cell ctsync 100 0) | $(cell conntrackd 100 0) | $(cell none 100 0) | $(ratio 100 0) |
| advert_int 100 ms, 50 sessions among 100,000 entries | $(takeover 100 100000) | $(cell ctsync 100 100000) | $(cell conntrackd 100 100000) | – | – | $(ratio 100 100000) |

Stalls per round (s): ctsync $(rounds ctsync 1000 0) / $(rounds ctsync 100 0) / $(rounds ctsync 100 100000); conntrackd $(rounds conntrackd 1000 0) / $(rounds conntrackd 100 0) / $(rounds conntrackd 100 100000).
TXT
)
echo "$table"
if ((write)); then
    write_section sessions "$table"
fi
