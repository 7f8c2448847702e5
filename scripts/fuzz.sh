#!/usr/bin/env bash
# Build every fuzz target and run each for SECONDS (default 60) on its checked-in corpus.
# Uses cargo-fuzz on stable (RUSTC_BOOTSTRAP for the sanitizer flags); installs it once.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (once, a few minutes)" >&2
    cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
for t in $targets; do
    echo "== fuzz $t: build"
    cargo fuzz build "$t" -O
    if [[ "$seconds" -gt 0 ]]; then
        echo "== fuzz $t: ${seconds}s"
        mkdir -p "fuzz/corpus/$t"
        # New inputs go to a scratch corpus; the checked-in seeds are read only.
        scratch=$(mktemp -d)
        trap 'rm -rf "$scratch"' EXIT
        cargo fuzz run "$t" -O "$scratch" "fuzz/corpus/$t" -- -max_total_time="$seconds" -max_len=4096 2>&1 | tail -n 5
        rm -rf "$scratch"
    fi
done
