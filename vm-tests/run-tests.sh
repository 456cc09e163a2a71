#!/usr/bin/env bash
# Runs every test of underlay from a fresh Debian 12 machine, as root:
# installs the system packages, builds from scratch, then runs the unit tests,
# the real-kernel namespace tests and the lab scenarios. Every namespace a
# test makes is its own and removed afterwards; the machine's network and
# /etc are never touched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh"
cd "$here/.."
cargo test --workspace --release --locked -- --test-threads=2
