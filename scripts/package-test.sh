#!/usr/bin/env bash
# The Debian package end to end, as root on Debian 12: builds it (scripts/package.sh;
# installs cargo-deb with `cargo install` if missing), installs it with `dpkg -i`, checks
# its files, the conffile, the unit (installed, not enabled, not started),
# `ctsync --version` and the man page; then `dpkg -P ctsync` and checks that nothing of
# it is left. Called by scripts/test.sh. It never starts the service.
#
# It refuses to run where ctsync is already installed, from a package or by hand (any of
# the package's paths present): it would overwrite that install and then purge it.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

fail() {
    echo "package-test: $*" >&2
    exit 1
}
[[ $(id -u) -eq 0 ]] || fail "run as root: it installs and purges the package with dpkg."

# Everything the package installs or its purge removes.
unit=/usr/lib/systemd/system/ctsync.service
owned=(/usr/sbin/ctsync /etc/ctsync /var/lib/ctsync /run/ctsync "$unit"
    /lib/systemd/system/ctsync.service /etc/systemd/system/ctsync.service
    /usr/share/doc/ctsync /usr/share/man/man8/ctsync.8.gz
    /usr/share/bash-completion/completions/ctsync)
status=$(dpkg-query -W -f='${db:Status-Status}' ctsync 2>/dev/null || true)
if [[ -n $status && $status != not-installed ]]; then
    fail "the ctsync package is on this machine already (dpkg status: $status); this test would replace and purge it. Leaving it alone: run the test on another machine, or \`dpkg -P ctsync\` first."
fi
for p in "${owned[@]}"; do
    if [[ -e $p || -L $p ]]; then
        fail "$p exists: ctsync is installed (by hand) or has run here; this test would overwrite and then delete it. Leaving it alone: run the test on another machine, or move $p away first."
    fi
done

if ! command -v cargo-deb >/dev/null; then
    echo "== cargo install cargo-deb" >&2
    cargo install cargo-deb --locked --version '^3.8'
fi

echo "== building the package (scripts/package.sh)" >&2
build_started=$SECONDS
deb=$(scripts/package.sh | tail -n 1)
build_secs=$((SECONDS - build_started))
[[ -f $deb ]] || fail "scripts/package.sh printed no .deb (got ${deb@Q})"
echo "package-test: built $deb in ${build_secs}s" >&2

# From here on the package is ours: purge it whatever happens.
cleanup() {
    if dpkg-query -W ctsync >/dev/null 2>&1; then
        dpkg -P ctsync >/dev/null 2>&1 || echo "package-test: could not purge ctsync: run \`dpkg -P ctsync\`" >&2
    fi
}
trap cleanup EXIT

echo "== dpkg -i" >&2
# Debian's slim images exclude /usr/share/doc and /usr/share/man in dpkg.cfg.d; the
# command line's includes come after them and win, so the files are checked everywhere.
dpkg --path-include='/usr/share/man/*' --path-include='/usr/share/doc/ctsync/*' -i "$deb"

echo "== files" >&2
listed=$(dpkg -L ctsync)
want=(/usr/sbin/ctsync "$unit" /etc/ctsync/ctsync.toml
    /usr/share/man/man8/ctsync.8.gz /usr/share/man/man8/ctsync-run.8.gz
    /usr/share/bash-completion/completions/ctsync /usr/share/zsh/vendor-completions/_ctsync
    /usr/share/fish/vendor_completions.d/ctsync.fish
    /usr/share/doc/ctsync/README.md /usr/share/doc/ctsync/copyright
    /usr/share/doc/ctsync/docs/SECURITY.md /usr/share/doc/ctsync/examples/keepalived.conf
    /usr/share/doc/ctsync/examples/ctsync.toml)
for f in "${want[@]}"; do
    grep -qxF "$f" <<<"$listed" || fail "dpkg -L ctsync does not list $f"
    [[ -f $f ]] || fail "$f is listed but not on disk"
done
[[ -x /usr/sbin/ctsync ]] || fail "/usr/sbin/ctsync is not executable"
dpkg-query -W -f='${Conffiles}\n' ctsync | grep -q '^ /etc/ctsync/ctsync.toml ' ||
    fail "/etc/ctsync/ctsync.toml is not a conffile"
cmp -s /etc/ctsync/ctsync.toml etc/ctsync.toml || fail "/etc/ctsync/ctsync.toml is not etc/ctsync.toml"
gzip -t /usr/share/man/man8/ctsync.8.gz || fail "ctsync.8.gz is not gzip"

echo "== ctsync --version, man, the unit" >&2
version=$(grep -m1 '^version = ' Cargo.toml | cut -d'"' -f2)
got=$(/usr/sbin/ctsync --version)
[[ $got == "ctsync $version" ]] || fail "ctsync --version says ${got@Q}, expected 'ctsync $version'"
key=$(/usr/sbin/ctsync keygen)
[[ $key =~ ^[0-9a-f]{64}$ ]] || fail "ctsync keygen printed no key"
if command -v man >/dev/null; then
    page=$(man -w 8 ctsync)
    [[ $page == /usr/share/man/man8/ctsync.8.gz ]] || fail "man -w 8 ctsync: ${page@Q}"
    text=$(man 8 ctsync-run 2>&1)
    grep -q -- '--config' <<<"$text" || fail "man 8 ctsync-run does not show --config: $text"
fi
grep -qx 'ExecStart=/usr/sbin/ctsync run --config /etc/ctsync/ctsync.toml' "$unit" ||
    fail "$unit does not start /usr/sbin/ctsync"
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $out"
    # It also reports on other units it loads; only ours counts here.
    if grep -i 'ctsync' <<<"$out"; then fail "systemd-analyze verify $unit complained"; fi
fi
# Installed, not enabled (it needs this node's config and key first), not started.
enabled=$(systemctl is-enabled ctsync.service 2>/dev/null || true)
[[ $enabled == disabled ]] || fail "ctsync.service is ${enabled@Q} after install, expected disabled"
if [[ -d /run/systemd/system ]]; then
    ! systemctl --quiet is-active ctsync.service || fail "ctsync.service was started on install"
fi
[[ ! -e /run/ctsync ]] || fail "/run/ctsync exists: something ran the daemon"

echo "== dpkg -P" >&2
# What the daemon would have made at run time, which the purge removes too.
install -d -m 0700 /var/lib/ctsync
echo 1 >/var/lib/ctsync/epoch
dpkg -P ctsync
trap - EXIT
left=()
while read -r f; do
    # Shared directories (/usr/share/man/man8, …) stay; ours and every file must go.
    if [[ -e $f && ! -d $f ]] || [[ -d $f && $f == *ctsync* ]]; then left+=("$f"); fi
done <<<"$listed"
for p in "${owned[@]}" /var/lib/systemd/deb-systemd-helper-enabled/ctsync.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-masked/ctsync.service \
    /etc/systemd/system/multi-user.target.wants/ctsync.service; do
    if [[ -e $p || -L $p ]]; then left+=("$p"); fi
done
((${#left[@]} == 0)) || fail "left after dpkg -P ctsync: ${left[*]}"
status=$(dpkg-query -W -f='${db:Status-Status}' ctsync 2>/dev/null || true)
[[ -z $status || $status == not-installed ]] || fail "dpkg still knows ctsync: $status"

echo "package-test: passed in $((SECONDS - started))s (package build ${build_secs}s); $deb purged" >&2
