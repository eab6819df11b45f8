#!/usr/bin/env bash
# Install and start the system services Paddock needs on a Debian 12 machine.
#   scripts/setup-system.sh demo   libvirt + build tools for the Python packages
#   scripts/setup-system.sh test   everything the full test suite needs (default)
# Idempotent and quick when everything is already present: `make test` runs it every time.
set -euo pipefail

MODE="${1:-test}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

DEMO_PKGS=(libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
    qemu-system-x86 qemu-utils ovmf python3-venv gcc python3-dev)
TEST_PKGS=("${DEMO_PKGS[@]}" openssh-server openssh-client busybox-static cpio chromium iproute2
    postgresql redis-server prometheus)

case "$MODE" in
    demo) PKGS=("${DEMO_PKGS[@]}") ;;
    test) PKGS=("${TEST_PKGS[@]}") ;;
    *) echo "usage: $0 [demo|test]" >&2; exit 2 ;;
esac

# One dpkg-query call for all packages; unknown packages only print to stderr.
installed="$(dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null \
    | awk '$NF == "installed" { print $1 }' || true)"
missing=()
for pkg in "${PKGS[@]}"; do
    grep -qx "$pkg" <<<"$installed" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup-system: installing ${missing[*]}"
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
else
    echo "setup-system: all $MODE packages present"
fi

# libvirt-daemon-system normally creates these; without it the qemu driver of libvirtd
# refuses to start because its configured user and group do not exist.
getent group kvm >/dev/null || $SUDO groupadd --system kvm
getent group libvirt-qemu >/dev/null || $SUDO groupadd --system libvirt-qemu
if ! getent passwd libvirt-qemu >/dev/null; then
    $SUDO useradd --system --gid libvirt-qemu --groups kvm --home-dir /var/lib/libvirt \
        --no-create-home --shell /usr/sbin/nologin libvirt-qemu
elif ! id -nG libvirt-qemu | tr ' ' '\n' | grep -qx kvm; then
    $SUDO usermod -a -G kvm libvirt-qemu
fi
$SUDO mkdir -p /var/log/libvirt /var/lib/libvirt/images /var/run/libvirt

# Without udev, /dev/kvm can be left root-only (crw------- root root): libvirt still lists kvm,
# but QEMU, running as libvirt-qemu, cannot open it and every KVM start fails. Give it what
# Debian's udev rule gives it: group kvm, mode 0660.
if [ -c /dev/kvm ]; then
    if [ "$(stat -c %G /dev/kvm)" != kvm ] || [ $(( 0$(stat -c %a /dev/kvm) & 060 )) -ne 48 ]; then
        echo "setup-system: /dev/kvm -> group kvm, mode 0660 (no udev rule did it)"
        $SUDO chgrp kvm /dev/kvm
        $SUDO chmod 0660 /dev/kvm
    fi
fi

exec "$ROOT/scripts/start-services.sh" "$MODE"
