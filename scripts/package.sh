#!/usr/bin/env bash
# Builds the Debian package: a release build of the ctsync binary, its man pages and
# shell completions written by the binary itself (`ctsync generate`), then `cargo deb`
# (crates/ctsync/Cargo.toml, [package.metadata.deb]). Prints the .deb's path last:
#   TARGET/debian/ctsync_<version>-1_<arch>.deb    (TARGET: cargo's target directory)
# Needs cargo-deb (`cargo install cargo-deb --locked`); no root. Install the result with
# `dpkg -i` (README, "Install from the package").
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
    echo "package: cargo-deb is missing: run \`cargo install cargo-deb --locked\` and this again." >&2
    exit 1
fi
target=$(cargo metadata --format-version 1 --no-deps --locked |
    grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)

echo "== cargo build --release -p ctsync" >&2
cargo build --release --locked -p ctsync --bin ctsync

echo "== man pages and completions (ctsync generate)" >&2
generated="$target/release/ctsync-generated"
rm -rf "$generated"
"$target/release/ctsync" generate man "$generated/man" >/dev/null
# Compressed as Debian policy asks (cargo-deb compresses only pages it did not find
# under target/); -n: no name or time stamp, so the same pages give the same bytes.
gzip -9n "$generated"/man/*.8
"$target/release/ctsync" generate completions "$generated/completions" >/dev/null

echo "== cargo deb" >&2
# --strip: the release profile keeps line tables (debug = 1) for profiling; the package
# does not need them.
cargo deb -p ctsync --no-build --locked --strip | tail -n 1
