#!/usr/bin/env bash
# The whole test suite, as root on Debian 12: set-up, formatting, lints, every test
# (the kernel tests in throwaway network namespaces included), a short fuzz run, and the
# Debian package installed and purged (scripts/package-test.sh).
#   FUZZ_SECONDS=60  seconds of fuzzing per target (0 skips the run, not the build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-}"

scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== the ctsync binary refuses to build with cfg(fuzzing) (its AEAD is stubbed)"
if out=$(cargo rustc -p ctsync --bin ctsync --profile check --locked -- --cfg fuzzing 2>&1) ||
    ! grep -q "must never be built with cfg(fuzzing)" <<<"$out"; then
    echo "test.sh: ctsync built with cfg(fuzzing), or failed for another reason:" >&2
    echo "$out" | tail -n 20 >&2
    exit 1
fi

echo "== cargo test (kernel tests run as root in namespaces ctnl-*)"
cargo test --workspace --locked

echo "== fuzz targets"
scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

echo "== C reference loader builds"
make -s -C bench/c-loader

echo "== the Debian package: build, dpkg -i, check, dpkg -P (release build)"
scripts/package-test.sh

echo "test.sh: all passed"
