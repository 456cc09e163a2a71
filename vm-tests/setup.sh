#!/usr/bin/env bash
# Installs the system packages underlay's tests and lab need (Debian 12, as
# root). Safe to run again: installs only what is missing. Used by
# run-tests.sh and lab.sh; CI calls run-tests.sh.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: run as root (network namespaces and packages need it)" >&2
    exit 1
fi

# package:command pairs; a package is installed when its command is missing.
need=()
for pair in bird2:bird iproute2:ip nftables:nft iptables:iptables conntrack:conntrack \
            socat:socat tcpdump:tcpdump procps:sysctl openssl:openssl ipset:ipset \
            openssh-server:sshd openssh-client:ssh python3:python3; do
    cmd=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("${pair%%:*}")
done
# The Ansible tests make a venv (ansible-core from PyPI): Debian splits
# ensurepip out of python3.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian may start bird.service (and ssh.service) on install; it is the machine's own and left
# alone: the tests run their own BIRDs in namespaces, on their own sockets,
# and the fleet lab its own sshd per namespace (own config, keys, port).
