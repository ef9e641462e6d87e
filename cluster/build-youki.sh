#!/usr/bin/env bash
# Builds youki (a Rust OCI runtime) from crates.io with `cargo install --locked`:
# the crate's own Cargo.lock pins every dependency. Features for these nodes:
#   v1, v2    libcgroups' managers for v1 (these hybrid VMs: controllers on v1,
#             cgroup2 only at /sys/fs/cgroup/unified, where youki picks v1) and v2
#   seccomp   libseccomp through Debian's libseccomp-dev (pkg-config), as runc's
# Left out: systemd (the nodes' containerds use SystemdCgroup = false and there
# is no systemd here), cgroupsv2_devices (eBPF device filters, used only on a
# unified host; here devices is a v1 controller), the wasm runtimes.
# Output goes to a directory keyed by the version, features, rustc and
# libseccomp-dev: a warm call finds it and returns at once. Prints the directory.
#   build-youki.sh --where   print the directory without building; exit 3 if not built
set -euo pipefail
version=0.7.0
features=v1,v2,seccomp
cache=${PODSHARE_CACHE:-/var/cache/podshare}
# rustup's proxies must never fetch a toolchain (there is no network for it).
export RUSTUP_AUTO_INSTALL=0
# rustup's toolchain first where there is one, Debian's otherwise: the same rustc
# on every call (it is part of the cache key), whatever PATH the caller has.
PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH"
for tool in cargo rustc; do
  command -v "$tool" >/dev/null || { echo "build-youki.sh: no $tool (see cluster/install-deps.sh)" >&2; exit 2; }
done
rustc_version=$(rustc --version)
# youki 0.7.0 is edition 2024, which rustc 1.85 brought; its lock's newest
# dependencies need no later one than the rustc checked with (README).
if ! printf '1.85.0\n%s\n' "$(rustc --version | cut -d' ' -f2)" | sort -V -C; then
  echo "build-youki.sh: $rustc_version is older than 1.85, which youki $version needs" >&2; exit 2
fi
key=$( { echo "youki $version|$features"; echo "$rustc_version"
         dpkg-query -W -f='${Version}' libseccomp-dev 2>/dev/null || true; } | sha256sum | cut -c1-16)
out="$cache/youki/$key"
if [ -x "$out/youki" ] || [ "${1:-}" = --where ]; then echo "$out"; [ -x "$out/youki" ] || exit 3; exit 0; fi

echo "building youki $version ($features) into $out (cold: see cluster/README.md for the time)" >&2
tmp="$out.tmp.$$"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
# The crate's downloads stay in cargo's registry cache (as Go's module cache);
# the build itself is thrown away with $tmp.
nice -n 10 cargo install youki --version "=$version" --locked --no-default-features --features "$features" \
  --root "$tmp/root" --target-dir "$tmp/target" -j "${PODSHARE_CARGO_JOBS:-1}" >&2
mv "$tmp/root/bin/youki" "$tmp/youki"
rm -rf "$tmp/root" "$tmp/target"
mkdir -p "$cache/youki"
rm -rf "$out" && mv "$tmp" "$out"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$out"
