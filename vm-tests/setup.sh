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
# The second line is the VM tier's: systemd-analyze (unit checks), the image
# build (mmdebstrap, mke2fs), the NoCloud seed (mkfs.vfat, mcopy), overlays;
# dnsmasq-base is the pxe-boot scenario's DHCP server in a ToR namespace.
need=()
for pair in bird2:bird iproute2:ip nftables:nft iptables:iptables conntrack:conntrack \
            socat:socat tcpdump:tcpdump procps:sysctl openssl:openssl ipset:ipset \
            systemd:systemd-analyze mmdebstrap:mmdebstrap e2fsprogs:mke2fs \
            dosfstools:mkfs.vfat mtools:mcopy qemu-utils:qemu-img \
            openssh-server:sshd openssh-client:ssh python3:python3 \
            dnsmasq-base:dnsmasq; do
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

# QEMU for the VM tier (vm-tests/src/vm/). Debian 12's qemu-system-x86 (7.2)
# cannot sit next to a backported qemu-utils (10.x Breaks
# qemu-system-common << 8.0, so apt would remove qemu-utils). Where the
# machine has that backport (these CI machines do), qemu-system-x86 comes from
# bookworm-backports as well, through a private source list and lists
# directory: nothing is removed or downgraded and /etc/apt is not changed.
# Elsewhere it comes from bookworm itself.
if ! command -v qemu-system-x86_64 >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    utils=$(dpkg-query -W -f '${Version}' qemu-utils 2>/dev/null || true)
    if [[ "$utils" == *~bpo12* ]]; then
        echo "setup: installing qemu-system-x86 from bookworm-backports (as the installed qemu-utils $utils)"
        apt_tmp=$(mktemp -d)
        mkdir -p "$apt_tmp/parts" "$apt_tmp/lists/partial"
        for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
            if [ -f "$f" ]; then cp "$f" "$apt_tmp/parts/"; fi
        done
        if [ -s /etc/apt/sources.list ]; then cp /etc/apt/sources.list "$apt_tmp/parts/host.list"; fi
        printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
            'Suites: bookworm-backports' 'Components: main' \
            'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
            >"$apt_tmp/parts/underlay-backports.sources"
        apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_tmp/parts"
                  -o "Dir::State::Lists=$apt_tmp/lists")
        apt-get "${apt_opts[@]}" update -qq
        apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
            -t bookworm-backports qemu-system-x86 >/dev/null
        rm -rf "$apt_tmp"
    else
        echo "setup: installing qemu-system-x86 (bookworm)"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils >/dev/null
    fi
fi
# Debian may start bird.service on install; it is the machine's own and left
# alone: the tests run their own BIRDs in namespaces, on their own sockets.
# Debian may start bird.service (and ssh.service) on install; it is the machine's own and left
# alone: the tests run their own BIRDs in namespaces, on their own sockets,
# and the fleet lab its own sshd per namespace (own config, keys, port).
