#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the DPDK crates need
# when missing (Debian: libdpdk-dev, clang, pkg-config), then checks formatting
# and lints and runs every test, DPDK ones included, checks the deployment
# files (installing Ansible from PyPI) and rehearses a deployment in network
# namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pkg-config --exists libdpdk 2>/dev/null || need+=(libdpdk-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy (all crates, DPDK included)"
cargo clippy --workspace --all-targets --all-features -- -D warnings
echo "== tests (one process per test: DPDK's EAL initializes once per process)"
cargo nextest run --workspace --all-features --no-fail-fast "$@"
echo "== deployment files (deploy/check.sh: hosts.yml from jasper plan, Ansible syntax and lint, systemd units, Terraform)"
./deploy/check.sh
echo "== rehearsal (deploy/rehearse.sh: the planned tree in network namespaces, a proxy and the publisher restarted)"
# Release binaries, as deployed: 14 processes share two cores here, and the
# debug build's per-packet cost leaves the tree too little headroom when
# the machine is busy with anything else.
cargo build --release --workspace --all-features --bins
./deploy/rehearse.sh --bin-dir target/release
echo "== doc tests"
cargo test --workspace --all-features --doc
