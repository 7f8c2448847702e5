#!/usr/bin/env bash
# Kernel-layer benchmark, side by side in one run on this machine, as root:
#   * batched create of N entries: ctsync vs a batched C loader on libnetfilter_conntrack
#     (bench/c-loader), the same entries (tcp-snat mix), alternating rounds;
#   * full dump of N entries: `ctsync load dump` vs `conntrack -L > /dev/null`;
#   * peak memory of a streaming dump at N/20 and N entries (it must not grow).
# Usage: bench/kernel.sh [--write] [N] [ROUNDS]   (default 200000 entries, 5 rounds)
# --write puts the table into BENCHMARKS.md between the kernel markers.
# CTSYNC_BIN=path: a prebuilt ctsync (absolute, or relative to the repository's root)
# instead of building the release with cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0
if [[ "${1:-}" == "--write" ]]; then write=1; shift; fi
n="${1:-200000}"
rounds="${2:-5}"

source bench/lib.sh
scripts/setup.sh
if [[ -n "${CTSYNC_BIN:-}" ]]; then
    ctsync=$(realpath -m "$CTSYNC_BIN")
    [[ -x "$ctsync" ]] || { echo "CTSYNC_BIN=$CTSYNC_BIN is not an executable" >&2; exit 1; }
else
    cargo build --release --locked -q -p ctsync
    ctsync=target/release/ctsync
fi
make -s -C bench/c-loader
cload=bench/c-loader/ctload

ns="ctsync-bench-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
ip netns add "$ns"
inns() { ip netns exec "$ns" "$@"; }

json() { sed -n "s/.*\"$1\":\([0-9.e+-]*\).*/\1/p"; }

c_create=() ; r_create=() ; r_dump=() ; l_dump=()
for ((r = 1; r <= rounds; r++)); do
    # Alternate who goes first, so neither always meets a warm or a cold kernel.
    for who in $( ((r % 2)) && echo "c rust" || echo "rust c"); do
        if [[ $who == c ]]; then
            out=$(inns "$cload" create "$n")
            [[ $(json created <<<"$out") == "$n" ]] || { echo "C loader fell short: $out" >&2; exit 1; }
            c_create+=("$(json per_second <<<"$out")")
            inns "$cload" delete "$n" >/dev/null
        else
            out=$("$ctsync" load --netns "$ns" fill --mix tcp-snat --count "$n")
            [[ $(json applied <<<"$out") == "$n" ]] || { echo "ctsync fell short: $out" >&2; exit 1; }
            r_create+=("$(json per_second <<<"$out")")
            for d in $( ((r % 2)) && echo "rust tool" || echo "tool rust"); do
                if [[ $d == rust ]]; then
                    out=$("$ctsync" load --netns "$ns" dump)
                    [[ $(json flows <<<"$out") == "$n" ]] || { echo "dump fell short: $out" >&2; exit 1; }
                    r_dump+=("$(json seconds <<<"$out")")
                else
                    s=$(date +%s.%N); inns conntrack -L >/dev/null 2>&1; e=$(date +%s.%N)
                    l_dump+=("$(awk "BEGIN{print $e - $s}")")
                fi
            done
            "$ctsync" load --netns "$ns" delete --mix tcp-snat --count "$n" >/dev/null
        fi
    done
done

# Peak memory of a streaming dump: the same at 5% and 100% of N.
rss() {
    "$ctsync" load --netns "$ns" fill --mix tcp-snat --count "$1" >/dev/null
    /usr/bin/time -f %M "$ctsync" load --netns "$ns" dump 2>&1 >/dev/null | tail -n 1
    "$ctsync" load --netns "$ns" flush >/dev/null
}
rss_small=$(rss $((n / 20)))
rss_full=$(rss "$n")
flow_bytes=$("$ctsync" load --netns "$ns" dump | json flow_bytes)

mc=$(printf '%s\n' "${c_create[@]}" | median)
mr=$(printf '%s\n' "${r_create[@]}" | median)
md=$(printf '%s\n' "${r_dump[@]}" | median)
ml=$(printf '%s\n' "${l_dump[@]}" | median)
ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
int() { awk "BEGIN{printf \"%d\", $1}"; }
sec() { awk "BEGIN{printf \"%.3f\", $1}"; }

table=$(cat <<TXT
Measured $(date -u +%Y-%m-%d) on $(machine); $n entries (tcp-snat mix), median of $rounds alternating rounds.
Reproduce: \`bench/kernel.sh --write $n $rounds\` (as root).

| what | ctsync | reference | ratio |
|---|---|---|---|
| batched create, entries/s | $(int "$mr") | $(int "$mc") (C, libnetfilter_conntrack, batched) | $(ratio "$mr" "$mc") × |
| full dump of $n entries, s | $(sec "$md") | $(sec "$ml") (\`conntrack -L > /dev/null\`) | $(ratio "$ml" "$md") × faster |
| peak RSS of a dump, $((n / 20)) → $n entries | ${rss_small} KiB → ${rss_full} KiB | | streaming: memory does not grow with the table |
| bytes per decoded flow (\`size_of::<Flow>()\`) | $flow_bytes | | no heap per flow |

Rounds (entries/s, create): ctsync ${r_create[*]%.*}; C ${c_create[*]%.*}.
TXT
)
echo "$table"
if ((write)); then write_section kernel "$table"; fi
