#!/usr/bin/env bash
# Runs Gantry's whole test suite (unit and integration tests, as root: the
# engine's tests create namespaces, mounts and cgroups).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
# A one-shot build gains nothing from incremental caches, which cost gigabytes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
