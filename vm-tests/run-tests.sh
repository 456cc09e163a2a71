#!/usr/bin/env bash
# Runs every test of underlay from a fresh Debian 12 machine, as root:
# installs the system packages, builds from scratch, builds the .deb, then
# runs the unit tests, the real-kernel namespace tests, the lab scenarios,
# the package checks and the QEMU tier (Debian 12 VMs that install and boot
# the .deb; the image is cached in /var/cache/underlay-vm-tests, or
# UNDERLAY_VM_CACHE). Every namespace a test makes is its own and removed
# afterwards; the machine's network and /etc are never touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
command -v cargo >/dev/null 2>&1 || . "$HOME/.cargo/env"
cd "$here/.."
# The .deb: a release build, what an operator installs (the VM tier boots it,
# vm-tests/tests/package.rs lists it). cargo-deb is pinned: its options move.
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --version 3.8.0 --locked
cargo deb -p underlay --locked
# Debug profile: the suite checks behaviour, not speed (benchmarks use release),
# and a debug build from scratch is several times faster on two cores.
cargo test --workspace --locked -- --test-threads=2
