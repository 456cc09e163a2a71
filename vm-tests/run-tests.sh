#!/usr/bin/env bash
# Runs every test of underlay from a fresh Debian 12 machine, as root:
# installs the system packages, builds from scratch, then runs the unit tests,
# the real-kernel namespace tests and the lab scenarios. Every namespace a
# test makes is its own and removed afterwards; the machine's network and
# /etc are never touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
command -v cargo >/dev/null 2>&1 || . "$HOME/.cargo/env"
cd "$here/.."
# Debug profile: the suite checks behaviour, not speed (benchmarks use release),
# and a debug build from scratch is several times faster on two cores.
cargo test --workspace --locked -- --test-threads=2
