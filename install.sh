#!/usr/bin/env bash
# Sets Gantry up on a fresh Debian 12 machine: system packages, then the
# `gantry` binary in /usr/local/bin.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cargo build --release -p gantry
install -m 0755 target/release/gantry /usr/local/bin/gantry
echo "Installed $(/usr/local/bin/gantry --version). Start a cluster with: gantry server"
