#!/usr/bin/env bash
# Prints the path of a Python venv holding ansible-core from PyPI, creating it
# when missing (the tests' controller: never the machine's own Python). Kept
# under UNDERLAY_ANSIBLE_VENV (default /var/cache/underlay-tests/venv) and
# reused while `ansible-playbook --version` works there. Serialized with
# flock so two test binaries never build it at once.
# ANSIBLE_CORE_SPEC picks the version (default: the newest ansible-core pip
# resolves for this Python; on Python 3.11 that is 2.19.x).
set -euo pipefail
venv="${UNDERLAY_ANSIBLE_VENV:-/var/cache/underlay-tests/venv}"
spec="${ANSIBLE_CORE_SPEC:-ansible-core}"
mkdir -p "$(dirname "$venv")"
# Even `--version` creates ~/.ansible/tmp: keep Ansible's files out of $HOME.
export ANSIBLE_HOME="$venv.home" ANSIBLE_LOCAL_TEMP="$venv.home/tmp"
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/ansible-playbook" --version >/dev/null 2>&1; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2
    "$venv/bin/ansible-playbook" --version >&2
fi
echo "$venv"
