"""A tiny Linux guest for tests on the real libvirtd, and the pytest fixtures around it.

``scripts/build-tiny-guest.sh`` packs a Debian kernel and a busybox initramfs whose ``/init`` loads
the ACPI button and virtio drivers, runs acpid (power button -> power off), reports hot-plugged
disks and NICs, and prints ``READY_MARKER`` on the serial console. The guest boots straight from
the kernel (no disk) under TCG (``<domain type='qemu'>``: under KVM here the kernel hangs early)
in a few seconds, and it reacts like a real OS to an ACPI shutdown request and to device unplug.

QEMU runs as an unprivileged user, so the kernel and initrd are copied into ``IMAGE_DIR`` (a
world-readable directory under libvirt's image directory) before use; disks and serial logs for
these guests belong there too.

Console lines the guest prints (see the build script):

- ``PADDOCK-TINY-GUEST READY``: drivers loaded, acpid and the hotplug reporter listening;
- ``PADDOCK-TINY-GUEST add block vda`` / ``... remove block vda`` / ``... add net eth0``: the
  guest's view of a hot-plugged or unplugged device;
- ``tiny guest: ACPI power button, powering off``: the shutdown request reached the guest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from lxml import etree

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-tiny-guest.sh"
BUILD_DIR = REPO_ROOT / "var" / "tiny-guest"
IMAGE_DIR = Path("/var/lib/libvirt/images/paddocktest-tiny")
URI = "qemu:///system"
PREFIX = "paddocktest-tiny-"
READY_MARKER = "PADDOCK-TINY-GUEST READY"
POWEROFF_MARKER = "tiny guest: ACPI power button, powering off"
CMDLINE = "console=ttyS0"
ROOT_PORTS = 6  # empty pcie-root-port controllers, for hot-plugged disks and NICs
# Seconds from start to READY_MARKER: about 3 s on a quiet 2-core machine, several times that
# when other work competes for the CPUs (TCG emulation is CPU-bound).
BOOT_TIMEOUT = 120.0
BUILD_TIMEOUT = 900.0
STALE_AFTER = 24 * 3600.0  # seconds: copies of other builds unused this long leave IMAGE_DIR


# --- build --------------------------------------------------------------------------------


def build(outdir: Path = BUILD_DIR) -> tuple[Path, Path]:
    """Run the build script (a no-op when its outputs are current); (kernel, initrd) in outdir.

    The kernel is the uncompressed ``vmlinux``, which QEMU boots through its PVH entry point:
    under TCG that reaches the marker seconds sooner than the ``vmlinuz`` bzImage beside it
    (which boots too, with the same initrd).
    """
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(outdir)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(
            f"{BUILD_SCRIPT.name} failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    outputs = {Path(line).name: Path(line) for line in result.stdout.splitlines() if line}
    return outputs["vmlinux"], outputs["initramfs.cpio.gz"]


def image_dir() -> Path:
    """``IMAGE_DIR``, created if needed (0755: QEMU's user can enter it and read from it)."""
    IMAGE_DIR.mkdir(parents=True, exist_ok=True)
    IMAGE_DIR.chmod(0o755)
    return IMAGE_DIR


def publish(path: Path, stem: str) -> Path:
    """Copy ``path`` into ``image_dir()`` as ``<stem>-<content hash>`` (0644), atomically, so
    concurrent sessions share identical copies and never see a half-written one."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    dest = image_dir() / f"{stem}-{digest}"
    for old in dest.parent.glob(f"{stem}-*"):
        if old != dest and time.time() - old.stat().st_mtime > STALE_AFTER:
            old.unlink(missing_ok=True)
    if dest.exists():
        os.utime(dest)
        return dest
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{stem}-")
    os.close(fd)
    try:
        shutil.copyfile(path, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


# --- XML ----------------------------------------------------------------------------------


def tiny_guest_xml(
    name: str,
    kernel: str | os.PathLike,
    initrd: str | os.PathLike,
    *,
    serial_log: str | os.PathLike | None = None,
    machine: str = "q35",
    memory_mib: int = 128,
    cmdline: str = CMDLINE,
    root_ports: int = ROOT_PORTS,
) -> str:
    """Domain XML for a TCG guest booting ``kernel`` + ``initrd`` directly.

    The serial console is a pty, or the file ``serial_log`` when given (the boot text and
    ``READY_MARKER`` land there). On q35 the guest gets ``root_ports`` empty pcie-root-port
    controllers, so devices can be hot-plugged and unplugged later. Power-off destroys it.
    """
    dom = etree.Element("domain", type="qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "uuid").text = str(uuid.uuid4())
    etree.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(dom, "vcpu").text = "1"

    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine=machine).text = "hvm"
    etree.SubElement(os_el, "kernel").text = os.fspath(kernel)
    etree.SubElement(os_el, "initrd").text = os.fspath(initrd)
    etree.SubElement(os_el, "cmdline").text = cmdline

    features = etree.SubElement(dom, "features")
    etree.SubElement(features, "acpi")
    etree.SubElement(features, "apic")
    etree.SubElement(dom, "clock", offset="utc")
    etree.SubElement(dom, "on_poweroff").text = "destroy"
    etree.SubElement(dom, "on_reboot").text = "restart"
    etree.SubElement(dom, "on_crash").text = "destroy"

    devices = etree.SubElement(dom, "devices")
    if "q35" in machine:
        etree.SubElement(devices, "controller", type="pci", index="0", model="pcie-root")
        for index in range(1, root_ports + 1):
            etree.SubElement(
                devices, "controller", type="pci", index=str(index), model="pcie-root-port"
            )
    etree.SubElement(devices, "controller", type="usb", model="none")
    for kind in ("serial", "console"):
        if serial_log is None:
            chardev = etree.SubElement(devices, kind, type="pty")
        else:
            chardev = etree.SubElement(devices, kind, type="file")
            etree.SubElement(chardev, "source", path=os.fspath(serial_log), append="off")
        if kind == "serial":
            etree.SubElement(chardev, "target", type="isa-serial", port="0")
        else:
            etree.SubElement(chardev, "target", type="serial", port="0")
    etree.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    etree.SubElement(devices, "memballoon", model="none")
    return etree.tostring(dom, pretty_print=True).decode()


def disk_xml(path: str | os.PathLike, target: str = "vdb", bus: str = "virtio") -> str:
    """``<disk>`` XML for a raw image file, to hot-plug with ``attachDeviceFlags``."""
    disk = etree.Element("disk", type="file", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type="raw")
    etree.SubElement(disk, "source", file=os.fspath(path))
    etree.SubElement(disk, "target", dev=target, bus=bus)
    return etree.tostring(disk).decode()


def create_raw_disk(path: str | os.PathLike, size_mib: int = 16) -> Path:
    """A sparse raw image of ``size_mib`` MiB at ``path`` (put it under ``image_dir()``)."""
    path = Path(path)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "raw", str(path), f"{size_mib}M"],
        check=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    path.chmod(0o644)
    return path


def disk_targets(dom: libvirt.virDomain, flags: int = 0) -> set[str]:
    """Target names (``vda``, ...) of the domain's disks, live by default."""
    root = etree.fromstring(dom.XMLDesc(flags).encode())
    return set(root.xpath("/domain/devices/disk/target/@dev"))


# --- waiting and cleaning up ----------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last truth value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


def read_log(path: str | os.PathLike) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_for_text(
    serial_log: str | os.PathLike, text: str = READY_MARKER, timeout: float = BOOT_TIMEOUT
) -> float | None:
    """Seconds until ``text`` shows up in ``serial_log``, or None if not within ``timeout``."""
    start = time.monotonic()
    if wait_until(lambda: text in read_log(serial_log), timeout, interval=0.05):
        return time.monotonic() - start
    return None


def is_shut_off(dom: libvirt.virDomain) -> bool:
    try:
        return dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    except libvirt.libvirtError:
        return True  # a transient domain is gone once it is off


def cleanup(conn: libvirt.virConnect, prefix: str = PREFIX) -> None:
    """Destroy and undefine every domain whose name starts with ``prefix``."""
    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError:
            if not is_shut_off(dom):
                raise


@dataclass
class TinyGuest:
    """A defined tiny guest whose serial console goes to ``serial_log``."""

    conn: libvirt.virConnect
    dom: libvirt.virDomain
    serial_log: Path

    @property
    def name(self) -> str:
        return self.dom.name()

    def console(self) -> str:
        return read_log(self.serial_log)

    def tail(self, lines: int = 30) -> str:
        """The end of the console text, for assertion messages."""
        return "\n".join(self.console().splitlines()[-lines:])

    def start(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Start the guest and wait for ``READY_MARKER``; seconds from start to the marker."""
        started = time.monotonic()
        self.dom.create()
        if wait_for_text(self.serial_log, READY_MARKER, timeout) is None:
            raise AssertionError(
                f"{self.name}: no {READY_MARKER!r} within {timeout:.0f}s; console:\n{self.tail()}"
            )
        return time.monotonic() - started

    def wait_for(self, text: str, timeout: float) -> float | None:
        return wait_for_text(self.serial_log, text, timeout)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_guest_files() -> tuple[Path, Path]:
    """(kernel, initrd) of the tiny guest, built once per session and readable by QEMU."""
    kernel, initrd = build()
    return publish(kernel, "vmlinux"), publish(initrd, "initramfs.cpio.gz")


@pytest.fixture
def make_tiny_guest(tiny_guest_files) -> Iterator[Callable[..., TinyGuest]]:
    """Define tiny guests on ``qemu:///system``: ``make_tiny_guest("name", **xml_options)``.

    Each gets a unique ``paddocktest-tiny-`` name and a serial log in ``IMAGE_DIR``. At teardown
    the guests are destroyed and undefined, and every file in ``IMAGE_DIR`` named after them
    (logs, disks the test created as ``<guest name>-*``) is removed.
    """
    kernel, initrd = tiny_guest_files
    conn = libvirt.open(URI)
    prefix = f"{PREFIX}{uuid.uuid4().hex[:8]}-"

    def make(suffix: str = "guest", **xml_options) -> TinyGuest:
        name = f"{prefix}{suffix}"
        serial_log = image_dir() / f"{name}.log"
        serial_log.unlink(missing_ok=True)
        xml = tiny_guest_xml(name, kernel, initrd, serial_log=serial_log, **xml_options)
        return TinyGuest(conn, conn.defineXML(xml), serial_log)

    yield make
    try:
        cleanup(conn, prefix)
    finally:
        for leftover in IMAGE_DIR.glob(f"{prefix}*"):
            leftover.unlink(missing_ok=True)
        conn.close()
