#!/usr/bin/env bash
# The main job on the embedded lab, from a fresh Debian 12 machine as root:
# installs packages, builds, and runs `underlay-lab up` (two ToRs, hosts
# converged by underlay, real BIRD 2 everywhere), then prints the status.
# Arguments are passed to underlay-lab: `lab.sh up --hosts 3`, `lab.sh down`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
"$here/setup.sh" >&2
command -v cargo >/dev/null 2>&1 || . "$HOME/.cargo/env"
(cd "$here/.." && cargo build --workspace --release --locked 2>&1 | tail -n 1) >&2
export UNDERLAY_BIN="$here/../target/release/underlay"
exec "$here/../target/release/underlay-lab" "${@:-up}"
