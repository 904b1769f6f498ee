#!/usr/bin/env bash
# Installs the Debian 12 packages Gantry needs to build, run and test.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  # Building: libcontainer links libseccomp through pkg-config.
  build-essential pkg-config libseccomp-dev
  # Running: overlayfs and namespaces need nothing extra; networking uses these
  # (conntrack: the service proxy forgets UDP flows to removed endpoints).
  iproute2 nftables conntrack
  # Testing: test images are built from busybox-static; image pulls are tested
  # against a real registry, the etcd backend against a real etcd.
  busybox-static docker-registry etcd-server etcd-client curl
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# The Debian packages enable their services; Gantry's tests start their own
# instances on loopback, so the system-wide ones are not wanted.
for svc in docker-registry etcd; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
