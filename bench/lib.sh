# Shared by the benchmark scripts: sourced, not run (from the repository's root).
# shellcheck shell=bash

# median: the median of the numbers on stdin, one a line.
median() { sort -g | awk '{a[NR]=$1} END {if (NR) print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# machine: "2 cores, 24 GiB, Linux 6.18.44": for the "Measured ..." lines.
machine() { echo "$(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)"; }

# conntrackd_version: "1.4.7".
conntrackd_version() { conntrackd -v 2>&1 | grep -o 'v[0-9][0-9.]*[0-9]' | head -1 | tr -d v; }

# write_section NAME TEXT: replace what lies between the lines `<!-- NAME:begin -->` and
# `<!-- NAME:end -->` of BENCHMARKS.md (or of the file BENCH_MD names) with TEXT. Fails,
# and changes nothing, when the markers are missing.
write_section() {
    local name=$1 text=$2 file=${BENCH_MD:-BENCHMARKS.md}
    if ! grep -qx "<!-- $name:begin -->" "$file" || ! grep -qx "<!-- $name:end -->" "$file"; then
        echo "$file has no <!-- $name:begin --> ... <!-- $name:end --> markers: nothing written" >&2
        return 1
    fi
    NAME=$name TABLE=$text perl -0pi -e \
        's/(<!-- \Q$ENV{NAME}\E:begin -->\n).*?(<!-- \Q$ENV{NAME}\E:end -->)/$1$ENV{TABLE}\n$2/s' "$file"
    echo "wrote the $name section of $file" >&2
}

# ctsync_binary: set CT to the ctsync to measure: the one CTSYNC_BIN names (absolute, or
# relative to the repository's root), else the release build, built now.
ctsync_binary() {
    if [[ -n "${CTSYNC_BIN:-}" ]]; then
        CT=$(realpath -m "$CTSYNC_BIN")
        [[ -x "$CT" ]] || { echo "CTSYNC_BIN=$CTSYNC_BIN is not an executable" >&2; exit 1; }
    else
        cargo build --release --locked -q -p ctsync
        CT=$PWD/target/release/ctsync
    fi
}
