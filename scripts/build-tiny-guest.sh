#!/usr/bin/env bash
# Build the tiny guest used by the integration tests: a Debian kernel and a busybox initramfs.
#
#   scripts/build-tiny-guest.sh [OUTDIR]        (default: var/tiny-guest under the repo root)
#
# Outputs, in OUTDIR:
#   vmlinuz             the kernel of the current linux-image-6.1.0-<abi>-amd64 package (bzImage)
#   vmlinux             the same kernel uncompressed (ELF with a PVH entry point): QEMU boots it
#                       directly, which under TCG saves the seconds the bzImage spends unpacking
#   initramfs.cpio.gz   busybox-static, the kernel modules below and an /init that
#                       - mounts proc, sysfs and devtmpfs and loads the modules in dependency order,
#                       - runs busybox acpid so the ACPI power button powers the guest off,
#                       - reports hot-plugged disks and NICs on the console
#                         ("PADDOCK-TINY-GUEST add block vdb", "... remove block vdb"),
#                       - prints "PADDOCK-TINY-GUEST READY" on the console (console=ttyS0),
#                       - then keeps a shell on the console.
#   build-info.txt      kernel release, and which drivers are modules and which are built in
#
# Nothing is installed: the kernel package is only downloaded and unpacked (dpkg-deb -x), and so is
# busybox-static when it is not installed already. The script does nothing when the outputs exist
# and are newer than the script itself.
set -euo pipefail

SCRIPT="$(readlink -f "${BASH_SOURCE[0]}")"
REPO_ROOT="$(cd "$(dirname "$SCRIPT")/.." && pwd)"
OUTDIR="${1:-$REPO_ROOT/var/tiny-guest}"
MARKER="PADDOCK-TINY-GUEST READY"

# Drivers the guest should have, as "module:CONFIG_SYMBOL". A driver whose symbol is =y is built
# into the kernel; one that is =m is packed into the initramfs together with its dependencies.
DRIVERS=(
    button:CONFIG_ACPI_BUTTON          # ACPI power button -> input events
    evdev:CONFIG_INPUT_EVDEV           # /dev/input/event*, which acpid reads
    virtio_pci:CONFIG_VIRTIO_PCI
    virtio_blk:CONFIG_VIRTIO_BLK
    virtio_net:CONFIG_VIRTIO_NET
    virtio_console:CONFIG_VIRTIO_CONSOLE
    virtio_scsi:CONFIG_SCSI_VIRTIO
    sd_mod:CONFIG_BLK_DEV_SD           # disks behind virtio-scsi
    virtio_balloon:CONFIG_VIRTIO_BALLOON
)
# Must be built in: PCI hotplug, both native PCIe (pciehp) and ACPI (acpiphp; QEMU 7.2's q35 keeps
# hotplug of its root ports with the firmware, so acpiphp is what handles plug and unplug there),
# the serial console, devtmpfs and a gzip initramfs.
REQUIRED_BUILTIN=(
    CONFIG_HOTPLUG_PCI_PCIE CONFIG_HOTPLUG_PCI_ACPI CONFIG_SERIAL_8250_CONSOLE
    CONFIG_DEVTMPFS CONFIG_BLK_DEV_INITRD CONFIG_RD_GZIP
)

log() { printf '%s\n' "$*" >&2; }
die() { log "build-tiny-guest: $*"; exit 1; }

OUTPUTS=(vmlinuz vmlinux initramfs.cpio.gz)

print_outputs() {
    local name
    for name in "${OUTPUTS[@]}"; do printf '%s\n' "$OUTDIR/$name"; done
}

outputs_current() {
    local name
    for name in "${OUTPUTS[@]}"; do
        [[ -s "$OUTDIR/$name" && "$OUTDIR/$name" -nt "$SCRIPT" ]] || return 1
    done
}

if outputs_current; then
    print_outputs
    exit 0
fi

for tool in apt-cache apt-get dpkg-deb dpkg-query gzip find; do
    command -v "$tool" >/dev/null || die "missing tool: $tool"
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tiny-guest.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

APT_DOWNLOAD=(apt-get download -q)
if [[ $EUID -eq 0 ]]; then
    # The download goes to a private temp dir that apt's sandbox user cannot write to.
    APT_DOWNLOAD+=(-o APT::Sandbox::User=root)
fi

# --- the kernel package --------------------------------------------------------------------------
find_kernel_package() {
    local pkg
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)"
    if [[ -z "$pkg" ]]; then
        pkg="$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null \
            | cut -d' ' -f1 | sort -V | tail -n1)"
    fi
    printf '%s' "$pkg"
}

KPKG="$(find_kernel_package)"
if [[ -z "$KPKG" ]]; then
    log "no linux-image-6.1.0-*-amd64 in the package lists; running apt-get update"
    apt-get update -q >&2
    KPKG="$(find_kernel_package)"
fi
[[ -n "$KPKG" ]] || die "no linux-image-6.1.0-<abi>-amd64 package found"

log "downloading $KPKG"
(cd "$WORK" && "${APT_DOWNLOAD[@]}" "$KPKG" >&2)
KROOT="$WORK/kernel"
dpkg-deb -x "$WORK"/"$KPKG"_*.deb "$KROOT"

shopt -s nullglob
vmlinuz=("$KROOT"/boot/vmlinuz-*)
configs=("$KROOT"/boot/config-*)
shopt -u nullglob
[[ ${#vmlinuz[@]} -eq 1 && ${#configs[@]} -eq 1 ]] || die "unexpected contents of $KPKG"
KVER="${vmlinuz[0]##*/vmlinuz-}"
KCONFIG="${configs[0]}"
MODDIR="$KROOT/lib/modules/$KVER"
[[ -d "$MODDIR/kernel" ]] || die "no modules for $KVER in $KPKG"

config_value() {  # config_value CONFIG_FOO -> y, m or "" (not set)
    sed -n "s/^$1=\(.*\)$/\1/p" "$KCONFIG"
}

for sym in "${REQUIRED_BUILTIN[@]}"; do
    [[ "$(config_value "$sym")" == y ]] || die "$KVER: $sym is not built in"
done

# --- the uncompressed kernel ---------------------------------------------------------------------
# The bzImage header (Documentation/x86/boot.rst) gives the compressed payload's place: it starts
# payload_offset (0x248) bytes into the protected-mode code, which follows (setup_sects + 1) * 512
# bytes of setup, and it is payload_length (0x24c) bytes long, including a 4-byte size trailer.
header_u() {  # header_u FILE OFFSET SIZE -> the little-endian unsigned integer there
    od -An -tu"$3" -j "$2" -N "$3" "$1" | tr -d ' \n'
}

extract_vmlinux() {  # extract_vmlinux BZIMAGE OUT
    local bz="$1" out="$2" sects off len magic
    [[ "$(od -An -c -j $((0x202)) -N4 "$bz" | tr -d ' \n')" == HdrS ]] || die "$bz is no bzImage"
    sects="$(header_u "$bz" $((0x1f1)) 1)"
    [[ "$sects" -eq 0 ]] && sects=4
    off="$(header_u "$bz" $((0x248)) 4)"
    len="$(header_u "$bz" $((0x24c)) 4)"
    dd if="$bz" of="$WORK/payload" bs=64K iflag=skip_bytes,count_bytes status=none \
        skip=$(((sects + 1) * 512 + off)) count="$len"
    magic="$(od -An -tx1 -N4 "$WORK/payload" | tr -d ' \n')"
    case "$magic" in
        fd377a58) xz -dc --single-stream "$WORK/payload" >"$out" ;;
        1f8b*) gzip -dc "$WORK/payload" >"$out" 2>/dev/null || true ;;  # ignores the trailer
        28b52ffd) zstd -qdc "$WORK/payload" >"$out" ;;
        *) die "$bz: unsupported kernel compression (payload starts with $magic)" ;;
    esac
    rm -f "$WORK/payload"
    [[ "$(od -An -tx1 -N4 "$out" | tr -d ' \n')" == 7f454c46 ]] || die "$bz: payload is no ELF"
}

[[ "$(config_value CONFIG_PVH)" == y ]] || die "$KVER: no PVH entry point (CONFIG_PVH)"
extract_vmlinux "${vmlinuz[0]}" "$WORK/vmlinux"

# --- busybox -------------------------------------------------------------------------------------
BUSYBOX=""
if dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
    BUSYBOX="$(dpkg-query -L busybox-static | grep -E '/bin/busybox$' | head -n1)"
fi
if [[ -z "$BUSYBOX" || ! -x "$BUSYBOX" ]]; then
    log "busybox-static is not installed; downloading it"
    (cd "$WORK" && "${APT_DOWNLOAD[@]}" busybox-static >&2)
    dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/busybox"
    BUSYBOX="$WORK/busybox/bin/busybox"
    [[ -x "$BUSYBOX" ]] || die "busybox-static has no /bin/busybox"
fi

# --- the module list, in dependency order -------------------------------------------------------
# The package ships no modules.dep (its postinst runs depmod): generate one for the unpacked tree.
"$BUSYBOX" depmod -b "$KROOT" "$KVER"
[[ -s "$MODDIR/modules.dep" ]] || die "depmod produced no modules.dep"

WANTED=()
BUILTIN=()
for entry in "${DRIVERS[@]}"; do
    mod="${entry%%:*}"
    sym="${entry#*:}"
    case "$(config_value "$sym")" in
        y) BUILTIN+=("$mod") ;;
        m) WANTED+=("$mod") ;;
        *) die "$KVER: $sym ($mod) is not enabled" ;;
    esac
done

# modules.dep lists, for every module, all the modules it needs (transitively). Emit the closure of
# the wanted modules so that every module comes after everything it needs.
LOAD_ORDER=()
if [[ ${#WANTED[@]} -gt 0 ]]; then
    mapfile -t LOAD_ORDER < <(awk -v wanted="${WANTED[*]}" '
        function base(p,   b) { b = p; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b);
                                 gsub(/-/, "_", b); return b }
        {
            mod = $1; sub(/:$/, "", mod)
            deps[mod] = ""
            for (i = 2; i <= NF; i++) deps[mod] = deps[mod] " " $i
            byname[base(mod)] = mod
        }
        function visit(m,   n, list, i) {
            if (m in done) return
            if (m in active) { print "dependency cycle at " m > "/dev/stderr"; exit 1 }
            active[m] = 1
            n = split(deps[m], list, " ")
            for (i = 1; i <= n; i++) visit(list[i])
            delete active[m]
            done[m] = 1
            print m
        }
        END {
            n = split(wanted, names, " ")
            for (i = 1; i <= n; i++) {
                key = names[i]; gsub(/-/, "_", key)
                if (!(key in byname)) { print "no module " names[i] > "/dev/stderr"; exit 1 }
                visit(byname[key])
            }
        }' "$MODDIR/modules.dep")
    [[ ${#LOAD_ORDER[@]} -gt 0 ]] || die "could not resolve the module dependencies"
fi

# --- the initramfs tree --------------------------------------------------------------------------
ROOT="$WORK/root"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,root,etc/acpi/PWRF,var/log}
mkdir -p "$ROOT/lib/modules/$KVER"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
chmod 0755 "$ROOT/bin/busybox"
while read -r applet; do
    case "$applet" in
        */*) dest="$applet" ;;
        *) dest="bin/$applet" ;;
    esac
    dest="${dest#/}"
    [[ "$dest" == bin/busybox || -e "$ROOT/$dest" || -L "$ROOT/$dest" ]] && continue
    mkdir -p "$ROOT/$(dirname "$dest")"
    ln -s /bin/busybox "$ROOT/$dest"
done < <("$BUSYBOX" --list-full 2>/dev/null || "$BUSYBOX" --list)

GUEST_MODULES=()
for rel in "${LOAD_ORDER[@]}"; do
    src="$MODDIR/$rel"
    dest_rel="${rel%.xz}"
    dest_rel="${dest_rel%.zst}"
    dest_rel="${dest_rel%.gz}"
    mkdir -p "$ROOT/lib/modules/$KVER/$(dirname "$dest_rel")"
    case "$rel" in  # busybox insmod loads plain .ko files only
        *.ko.xz) xz -dc "$src" >"$ROOT/lib/modules/$KVER/$dest_rel" ;;
        *.ko.zst) zstd -qdc "$src" >"$ROOT/lib/modules/$KVER/$dest_rel" ;;
        *.ko.gz) gzip -dc "$src" >"$ROOT/lib/modules/$KVER/$dest_rel" ;;
        *.ko) cp "$src" "$ROOT/lib/modules/$KVER/$dest_rel" ;;
        *) die "unexpected module file $rel" ;;
    esac
    GUEST_MODULES+=("/lib/modules/$KVER/$dest_rel")
done

# busybox acpid maps the power button's KEY_POWER input event to "PWRF" and runs
# <confdir>/PWRF/00000080 (a file is executed, a directory is run with run-parts).
cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "tiny guest: ACPI power button, powering off"
sync
poweroff -f
EOF
chmod 0755 "$ROOT/etc/acpi/PWRF/00000080"
printf '%s\n' "PWRF PWRF/00000080" >"$ROOT/etc/acpid.conf"

# Hot-plugged disks and NICs, as the guest sees them, reported on the console.
cat >"$ROOT/etc/tiny-hotplug" <<'EOF'
#!/bin/sh
case "$SUBSYSTEM:$ACTION" in
    block:add | block:remove)
        [ "$DEVTYPE" = disk ] && echo "PADDOCK-TINY-GUEST $ACTION block ${DEVNAME##*/}" ;;
    net:add | net:remove)
        echo "PADDOCK-TINY-GUEST $ACTION net $INTERFACE" ;;
esac >/dev/console 2>&1
exit 0
EOF
chmod 0755 "$ROOT/etc/tiny-hotplug"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"

{
    cat <<'EOF'
#!/bin/sh
# Paddock tiny guest: PID 1 of an initramfs-only system.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
hostname tinyguest

EOF
    printf 'for m in'
    for m in "${GUEST_MODULES[@]}"; do printf ' \\\n    %s' "$m"; done
    printf '\ndo\n'
    cat <<'EOF'
    insmod "$m" || echo "tiny guest: could not load $m"
done

# Power button -> poweroff. acpid opens the /dev/input/event* nodes present when it starts, so it
# starts after the button driver is loaded; it writes its pid file once they are all open.
acpid -d -c /etc/acpi -a /etc/acpid.conf -p /run/acpid.pid &
# Devices plugged in or out from now on: "PADDOCK-TINY-GUEST add|remove block|net NAME" lines.
uevent /etc/tiny-hotplug &
uevent_pid=$!

# Ready means both listen: acpid's pid file exists and uevent's socket is bound to the kernel's
# uevent multicast group (protocol 15 in /proc/net/netlink, non-zero groups).
ready=""
i=0
while [ $i -lt 200 ]; do
    if [ -s /run/acpid.pid ] && awk -v pid="$uevent_pid" \
        '$2 == 15 && $3 == pid && $4 != "00000000" { found = 1 } END { exit !found }' \
        /proc/net/netlink; then
        ready=1
        break
    fi
    usleep 25000
    i=$((i + 1))
done
if [ -n "$ready" ]; then
EOF
    printf '    echo "%s"\n' "$MARKER"
    cat <<'EOF'
else
    echo "PADDOCK-TINY-GUEST FAILED: acpid or uevent did not start"
fi

while :; do
    setsid cttyhack sh -l
    sleep 1
done
EOF
} >"$ROOT/init"
chmod 0755 "$ROOT/init"

# --- pack ----------------------------------------------------------------------------------------
mkdir -p "$OUTDIR"
# Same inputs, same bytes: fixed timestamps, sorted names and (GNU cpio) renumbered inodes.
find "$ROOT" -exec touch -h -d @0 {} +
if command -v cpio >/dev/null; then
    CPIO_OPTS=(--null --create --format=newc --owner=0:0 --quiet)
    cpio --help 2>/dev/null | grep -q -- --reproducible && CPIO_OPTS+=(--reproducible)
    (cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio "${CPIO_OPTS[@]}") \
        | gzip -9n >"$WORK/initramfs.cpio.gz"
else
    (cd "$ROOT" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc) \
        | gzip -9n >"$WORK/initramfs.cpio.gz"
fi

{
    echo "kernel_package=$KPKG"
    echo "kernel_release=$KVER"
    echo "modules=${WANTED[*]}"
    echo "builtin_drivers=${BUILTIN[*]}"
    echo "required_builtin=${REQUIRED_BUILTIN[*]}"
    echo "load_order=$(for m in "${GUEST_MODULES[@]}"; do basename "$m" .ko; done | tr '\n' ' ')"
} >"$WORK/build-info.txt"

cp "${vmlinuz[0]}" "$WORK/vmlinuz"
for name in build-info.txt "${OUTPUTS[@]}"; do
    install -m 0644 "$WORK/$name" "$OUTDIR/$name.new"
    mv -f "$OUTDIR/$name.new" "$OUTDIR/$name"
done

log "tiny guest: kernel $KVER; modules: ${WANTED[*]:-none}; built in: ${BUILTIN[*]:-none}"
print_outputs
