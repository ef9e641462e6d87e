#!/usr/bin/env bash
# Installs what podshare needs from Debian's packages (crun for the cluster's
# extra RuntimeClass among them). Idempotent and quick
# when everything is already there.
#   install-deps.sh          everything the local cluster needs (and python)
#   install-deps.sh python   only what the project virtualenv needs
# Kubernetes itself is built from its Go module (build-binaries.sh, with the Go
# toolchain from go-toolchain.sh); etcd too (see k8s/cmd/etcd/main.go for why);
# so are the current stack's containerd 2 and runc (build-runtime.sh) and
# gVisor, runsc and its shim (build-gvisor.sh): Debian's runsc (2022) is not used.
# youki is built from its crate (build-youki.sh), with the rustc below.
set -euo pipefail
pkgs=(python3 python3-venv)
if [ "${1:-all}" != python ]; then
  pkgs+=(containerd runc containernetworking-plugins iptables conntrack
         mmdebstrap iproute2 openssl gcc libc6-dev ca-certificates curl unzip crun
         buildah prometheus-pushgateway  # buildah builds images/*.Containerfile; the metrics push is tested against a real Pushgateway
         libseccomp-dev pkgconf  # runc's and youki's seccomp (cgo, pkg-config): build-runtime.sh, build-youki.sh
         sshfs fuse3 socat openssh-sftp-server)  # the shared file system: an SFTP export and an sshfs client per node (shared_fs.py)
  # youki 0.7.0 (build-youki.sh) is edition 2024: rustc >= 1.85. A rustup
  # toolchain that new is used as it is; otherwise Debian's: bookworm's rustc is
  # 1.63, too old, but rustc-web and cargo-web (kept current in bookworm's
  # security updates for the browsers) are not; they replace Debian's rustc and cargo.
  rustc_now=$(PATH="${CARGO_HOME:-${HOME:-/root}/.cargo}/bin:$PATH" RUSTUP_AUTO_INSTALL=0 rustc --version 2>/dev/null | cut -d' ' -f2 || true)
  if [ -z "$rustc_now" ] || ! printf '1.85.0\n%s\n' "$rustc_now" | sort -V -C; then
    pkgs+=(rustc-web cargo-web)
  fi
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d keeps the packages' init scripts from starting a containerd of
  # their own: the cluster starts its runtime itself, with its own config.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
