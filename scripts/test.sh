#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: set-up, formatting, lints, every test
# (the kernel tests in throwaway network namespaces included), and a short fuzz run.
#   FUZZ_SECONDS=60  seconds of fuzzing per target (0 skips the run, not the build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-}"

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (kernel tests run as root in namespaces ctnl-*)"
cargo test --workspace --locked

echo "== fuzz targets"
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

echo "== C reference loader builds"
make -s -C bench/c-loader

echo "test.sh: all passed"
