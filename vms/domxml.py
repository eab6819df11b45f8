"""Domain XML: the one place that reads and builds libvirt domain definitions.

``parse_domain`` reads a domain into a ``DomainSpec`` (devices, and the tuning a later drift
check compares: ``cputune``, ``numatune``, ``memoryBacking``). ``build_domain`` assembles a new
domain from contributors (see "building" below), and decides boot order and the CD-ROM's bus.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from lxml import etree

from panel.xmlutil import parse, text, to_bytes

from .choices import DiskDevice, Firmware

_DISK_DEVICES = {c.value for c in DiskDevice}


@dataclass
class DiskSpec:
    target: str
    bus: str = ""
    device: str = DiskDevice.DISK
    source_type: str = ""
    source: str = ""
    format: str = ""
    cache: str = ""
    io: str = ""
    readonly: bool = False
    boot_order: int | None = None


@dataclass
class NicSpec:
    mac: str
    model: str = ""
    source_type: str = ""
    source: str = ""
    target_dev: str = ""
    vlan: int | None = None


@dataclass
class CpuTune:
    """``<cputune>``: where vCPUs, the emulator and I/O threads run, and CPU shares/bandwidth."""

    vcpupin: dict[int, str] = field(default_factory=dict)  # vCPU id -> host cpuset ("0-3,^2")
    emulatorpin: str = ""
    iothreadpin: dict[int, str] = field(default_factory=dict)  # iothread id -> host cpuset
    shares: int | None = None
    period: int | None = None  # µs
    quota: int | None = None  # µs per period; negative: no limit


@dataclass
class MemNode:
    """``<numatune><memnode>``: the memory policy of one guest NUMA cell."""

    cellid: int
    mode: str = ""
    nodeset: str = ""


@dataclass
class NumaTune:
    """``<numatune>``: which host NUMA nodes back the guest's memory, and how strictly."""

    memory_mode: str = ""  # strict, interleave, preferred, restrictive
    memory_nodeset: str = ""
    memory_placement: str = ""  # static or auto
    memnodes: list[MemNode] = field(default_factory=list)


@dataclass
class HugePages:
    """One ``<hugepages><page>``: a page size (KiB) for the guest NUMA nodes in ``nodeset``
    (all of them when empty)."""

    size_kib: int
    nodeset: str = ""


@dataclass
class MemoryBacking:
    """``<memoryBacking>``: huge pages, locked memory, no page sharing (KSM)."""

    hugepages: bool = False
    pages: list[HugePages] = field(default_factory=list)
    locked: bool = False
    nosharepages: bool = False


@dataclass
class DomainSpec:
    name: str
    uuid: str
    virt_type: str = ""
    vcpus: int = 1
    max_vcpus: int = 1
    memory_mib: int = 0
    max_memory_mib: int = 0
    os_type: str = ""
    arch: str = ""
    machine: str = ""
    firmware: str = Firmware.BIOS
    cpu_mode: str = ""
    cpu_model: str = ""
    boot_devices: list[str] = field(default_factory=list)
    vnc_port: int | None = None
    description: str = ""
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    #: tuning as the domain has it; None when the element is absent
    cputune: CpuTune | None = None
    numatune: NumaTune | None = None
    memory_backing: MemoryBacking | None = None
    #: the XML this was parsed from, when the reader kept it (the sync does, for drift checks)
    xml: str = field(default="", repr=False)


def _int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _int_text(parent, tag: str) -> int | None:
    el = parent.find(tag)
    return _int(el.text) if el is not None else None


def _pins(parent, tag: str, id_attr: str) -> dict[int, str]:
    pins = {}
    for el in parent.findall(tag):
        key = _int(el.get(id_attr))
        if key is not None and el.get("cpuset"):
            pins[key] = el.get("cpuset")
    return pins


def parse_cputune(root) -> CpuTune | None:
    el = root.find("cputune")
    if el is None:
        return None
    emulator = el.find("emulatorpin")
    return CpuTune(
        vcpupin=_pins(el, "vcpupin", "vcpu"),
        emulatorpin=emulator.get("cpuset", "") if emulator is not None else "",
        iothreadpin=_pins(el, "iothreadpin", "iothread"),
        shares=_int_text(el, "shares"),
        period=_int_text(el, "period"),
        quota=_int_text(el, "quota"),
    )


def parse_numatune(root) -> NumaTune | None:
    el = root.find("numatune")
    if el is None:
        return None
    memory = el.find("memory")
    memnodes = []
    for node in el.findall("memnode"):
        cellid = _int(node.get("cellid"))
        if cellid is not None:
            memnodes.append(
                MemNode(cellid=cellid, mode=node.get("mode", ""), nodeset=node.get("nodeset", ""))
            )
    return NumaTune(
        memory_mode=memory.get("mode", "") if memory is not None else "",
        memory_nodeset=memory.get("nodeset", "") if memory is not None else "",
        memory_placement=memory.get("placement", "") if memory is not None else "",
        memnodes=memnodes,
    )


def parse_memory_backing(root) -> MemoryBacking | None:
    el = root.find("memoryBacking")
    if el is None:
        return None
    huge = el.find("hugepages")
    pages = []
    if huge is not None:
        for page in huge.findall("page"):
            # <page size='1' unit='G'/>: the unit defaults to KiB.
            sized = etree.Element("size", unit=page.get("unit", "KiB"))
            sized.text = page.get("size", "") if _int(page.get("size")) is not None else ""
            size = to_bytes(sized, default_unit="KiB")
            if size > 0:
                pages.append(HugePages(size_kib=size // 1024, nodeset=page.get("nodeset", "")))
    return MemoryBacking(
        hugepages=huge is not None,
        pages=pages,
        locked=el.find("locked") is not None,
        nosharepages=el.find("nosharepages") is not None,
    )


def _disk_source(disk) -> tuple[str, str]:
    source_type = disk.get("type", "")
    src = disk.find("source")
    if src is None:
        return source_type, ""
    for attr in ("file", "dev", "volume", "name", "dir"):
        if src.get(attr):
            value = src.get(attr)
            if attr == "volume" and src.get("pool"):
                value = f"{src.get('pool')}/{value}"
            return source_type, value
    return source_type, ""


def _nic_source(iface) -> str:
    src = iface.find("source")
    if src is None:
        return ""
    for attr in ("network", "bridge", "dev", "path"):
        if src.get(attr):
            return src.get(attr)
    return ""


def parse_domain(xml: str) -> DomainSpec:
    root = parse(xml)
    vcpu = root.find("vcpu")
    max_vcpus = int(vcpu.text) if vcpu is not None and (vcpu.text or "").strip() else 1
    current_vcpus = int(vcpu.get("current", max_vcpus)) if vcpu is not None else max_vcpus
    max_mem = to_bytes(root.find("memory"), default_unit="KiB") // (1024 * 1024)
    cur_el = root.find("currentMemory")
    cur_mem = (
        to_bytes(cur_el, default_unit="KiB") // (1024 * 1024) if cur_el is not None else max_mem
    )

    os_el = root.find("os")
    os_type, arch, machine = "", "", ""
    firmware = Firmware.BIOS
    boot_devices: list[str] = []
    if os_el is not None:
        type_el = os_el.find("type")
        if type_el is not None:
            os_type = (type_el.text or "").strip()
            arch = type_el.get("arch", "")
            machine = type_el.get("machine", "")
        loader = os_el.find("loader")
        if os_el.get("firmware") == "efi" or (
            loader is not None and loader.get("type") == "pflash"
        ):
            firmware = Firmware.UEFI
        boot_devices = [b.get("dev") for b in os_el.findall("boot") if b.get("dev")]

    cpu = root.find("cpu")
    cpu_mode = cpu.get("mode", "") if cpu is not None else ""
    cpu_model = text(cpu, "model") if cpu is not None else ""

    vnc_port = None
    for graphics in root.findall("devices/graphics"):
        if graphics.get("type") == "vnc":
            port = graphics.get("port")
            if port and port.lstrip("-").isdigit() and int(port) > 0:
                vnc_port = int(port)

    disks = []
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        source_type, source = _disk_source(disk)
        driver = disk.find("driver")
        boot = disk.find("boot")
        device = disk.get("device", DiskDevice.DISK)
        disks.append(
            DiskSpec(
                target=target.get("dev"),
                bus=target.get("bus", ""),
                device=device if device in _DISK_DEVICES else DiskDevice.DISK,
                source_type=source_type,
                source=source,
                format=driver.get("type", "") if driver is not None else "",
                cache=driver.get("cache", "") if driver is not None else "",
                io=driver.get("io", "") if driver is not None else "",
                readonly=disk.find("readonly") is not None,
                boot_order=int(boot.get("order"))
                if boot is not None and boot.get("order")
                else None,
            )
        )

    nics = []
    for iface in root.findall("devices/interface"):
        mac = iface.find("mac")
        model = iface.find("model")
        target = iface.find("target")
        vlan_tag = iface.find("vlan/tag")
        nics.append(
            NicSpec(
                mac=(mac.get("address", "") if mac is not None else "").lower(),
                model=model.get("type", "") if model is not None else "",
                source_type=iface.get("type", ""),
                source=_nic_source(iface),
                target_dev=target.get("dev", "") if target is not None else "",
                vlan=int(vlan_tag.get("id"))
                if vlan_tag is not None and vlan_tag.get("id")
                else None,
            )
        )

    return DomainSpec(
        name=text(root, "name"),
        uuid=text(root, "uuid"),
        virt_type=root.get("type", ""),
        vcpus=current_vcpus,
        max_vcpus=max_vcpus,
        memory_mib=cur_mem,
        max_memory_mib=max_mem,
        os_type=os_type,
        arch=arch,
        machine=machine,
        firmware=firmware,
        cpu_mode=cpu_mode,
        cpu_model=cpu_model,
        boot_devices=boot_devices,
        vnc_port=vnc_port,
        description=text(root, "description")[:200],
        disks=disks,
        nics=nics,
        cputune=parse_cputune(root),
        numatune=parse_numatune(root),
        memory_backing=parse_memory_backing(root),
        xml=xml if isinstance(xml, str) else xml.decode(),
    )


# --- building ---------------------------------------------------------------------------------
#
# A new domain is built by contributors: functions ``(root, spec)`` that each add their part to
# the ``<domain>`` element, in order. ``CONTRIBUTORS`` holds Paddock's own (identity and the
# metadata stamp, resources, platform, devices, consoles); later parts register theirs with
# ``register_contributor`` (appended after these) or pass ``patches`` to ``build_domain`` for
# one build. A patch is the same kind of function: ``tuning/`` will return one that adds
# ``<cputune>``, ``<numatune>`` and ``<memoryBacking>`` to the built tree. A contributor adds to
# or changes the tree it is given and returns nothing.

PADDOCK_NS = "https://paddock.invalid/xmlns/domain/1.0"
SPARE_ROOT_PORTS = 6


@dataclass
class DiskBuild:
    target: str
    path: str
    format: str = "qcow2"
    bus: str = "virtio"
    device: str = DiskDevice.DISK
    boot_order: int | None = None
    readonly: bool = False
    #: ``<disk type=...>``: ``file`` or ``block`` (a storage backend's ``disk_source``), or
    #: ``network`` (then ``path`` is the volume's ``pool/name`` and ``protocol`` says how)
    source_type: str = "file"
    protocol: str = ""


@dataclass
class NicBuild:
    mac: str
    source: str
    source_type: str = "network"  # the <interface type>: from the network's backend
    model: str = "virtio"
    boot_order: int | None = None
    #: the <source> attributes (``hosts.networks`` backend); default: ``{source_type: source}``
    source_attrs: dict[str, str] | None = None


@dataclass
class DomainBuild:
    name: str
    uuid: str
    virt_type: str
    vcpus: int
    memory_mib: int
    max_vcpus: int | None = None
    max_memory_mib: int | None = None
    machine: str = "q35"
    firmware: str = Firmware.BIOS
    cpu_model: str = ""  # "", "host-passthrough", "host-model" or a named model
    disks: list[DiskBuild] = field(default_factory=list)
    nics: list[NicBuild] = field(default_factory=list)
    #: boot devices in order: "disk" (the first disk), "cdrom", "network" (the first NIC)
    boot: list[str] = field(default_factory=lambda: ["disk"])
    #: a CD-ROM drive: None for none, "" for an empty drive, else the image's path
    cdrom: str | None = None
    description: str = ""
    task_id: int | None = None
    spare_root_ports: int = SPARE_ROOT_PORTS
    #: a tuning plan's domain part (``tuning/plan.py``), applied by a registered contributor
    tuning: dict | None = None


Contributor = Callable[[etree._Element, DomainBuild], None]


def domain_build_from_dict(data: dict) -> DomainBuild:
    """A ``DomainBuild`` from its JSON form (``dataclasses.asdict``), as a plan stores it."""
    data = dict(data)
    disks = [DiskBuild(**d) for d in data.pop("disks", [])]
    nics = [NicBuild(**n) for n in data.pop("nics", [])]
    return DomainBuild(**data, disks=disks, nics=nics)


def _el(parent, tag: str, text: object = None, **attrs):
    elem = etree.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        elem.text = str(text)
    return elem


def disk_element(disk: DiskBuild):
    kind = disk.source_type if disk.source_type in ("block", "network") else "file"
    el = etree.Element("disk", type=kind, device=disk.device)
    driver = {"name": "qemu", "type": disk.format or "raw"}
    if disk.device == DiskDevice.DISK:
        # No host page cache: safe for live migration and honest about flushes.
        driver.update(cache="none", io="native", discard="unmap")
    _el(el, "driver", **driver)
    if disk.path:
        if kind == "block":
            _el(el, "source", dev=disk.path)
        elif kind == "network":
            _el(el, "source", protocol=disk.protocol, name=disk.path)
        else:
            _el(el, "source", file=disk.path)
    _el(el, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly or disk.device == DiskDevice.CDROM:
        _el(el, "readonly")
    if disk.boot_order:
        _el(el, "boot", order=disk.boot_order)
    return el


def nic_element(nic: NicBuild):
    el = etree.Element("interface", type=nic.source_type)
    _el(el, "mac", address=nic.mac)
    _el(el, "source", **(nic.source_attrs or {nic.source_type: nic.source}))
    _el(el, "model", type=nic.model)
    if nic.boot_order:
        _el(el, "boot", order=nic.boot_order)
    return el


def to_string(element) -> str:
    return etree.tostring(element, pretty_print=True).decode()


def cdrom_placement(machine: str) -> tuple[str, str]:
    """(bus, target) of a new VM's CD-ROM drive: SATA on q35, IDE on the older pc machine."""
    return ("sata", "sda") if machine == "q35" else ("ide", "hdc")


def boot_devices(spec: DomainBuild) -> tuple[list[DiskBuild], list[NicBuild]]:
    """The VM's disks (its CD-ROM drive last) and NICs with their boot orders from ``spec.boot``.

    The first disk boots at the place of "disk" among the boot devices present before it, the
    CD-ROM and the first NIC at their place in ``spec.boot``. The spec is not changed.
    """
    boot = spec.boot or ["disk"]
    disks = [replace(d) for d in spec.disks]
    nics = [replace(n) for n in spec.nics]
    order = 1
    for dev in boot:
        if dev == "disk" and disks:
            disks[0].boot_order = order
            order += 1
        elif dev == "cdrom" and spec.cdrom is not None:
            order += 1
    if spec.cdrom is not None:
        bus, target = cdrom_placement(spec.machine)
        disks.append(
            DiskBuild(
                target=target,
                path=spec.cdrom,
                format="raw",
                bus=bus,
                device=DiskDevice.CDROM,
                boot_order=boot.index("cdrom") + 1 if "cdrom" in boot else None,
            )
        )
    if nics and "network" in boot:
        nics[0].boot_order = boot.index("network") + 1
    return disks, nics


def contribute_identity(dom, spec: DomainBuild) -> None:
    """Name, UUID, description and the metadata stamp (the task that created the domain)."""
    _el(dom, "name", spec.name)
    _el(dom, "uuid", spec.uuid)
    if spec.description:
        _el(dom, "description", spec.description)
    meta = _el(dom, "metadata")
    paddock = etree.SubElement(meta, f"{{{PADDOCK_NS}}}vm")
    if spec.task_id is not None:
        paddock.set("created-by-task", str(spec.task_id))


def contribute_resources(dom, spec: DomainBuild) -> None:
    """Memory and vCPUs, current and maximum."""
    max_mem = max(spec.max_memory_mib or spec.memory_mib, spec.memory_mib)
    _el(dom, "memory", max_mem, unit="MiB")
    _el(dom, "currentMemory", spec.memory_mib, unit="MiB")
    max_vcpus = max(spec.max_vcpus or spec.vcpus, spec.vcpus)
    vcpu_attrs = {"placement": "static"}
    if max_vcpus > spec.vcpus:
        vcpu_attrs["current"] = spec.vcpus
    _el(dom, "vcpu", max_vcpus, **vcpu_attrs)
    if max_vcpus > spec.vcpus and spec.virt_type != "test":
        # Each vCPU described, the first ones fixed and the rest hot-pluggable: libvirt then
        # starts a restored guest with the CPUs it had, so a snapshot of a VM whose vCPUs
        # were hot-plugged can be reverted.
        vcpus_el = _el(dom, "vcpus")
        for i in range(max_vcpus):
            on = i < spec.vcpus
            attrs = {
                "id": i,
                "enabled": "yes" if on else "no",
                "hotpluggable": "no" if i == 0 else "yes",
            }
            if on:
                attrs["order"] = i + 1
            _el(vcpus_el, "vcpu", **attrs)


def contribute_platform(dom, spec: DomainBuild) -> None:
    """Firmware, machine, features, CPU model, clock and lifecycle actions."""
    os_attrs = {"firmware": "efi"} if spec.firmware == Firmware.UEFI else {}
    os_el = _el(dom, "os", **os_attrs)
    type_attrs = {"arch": "x86_64"}
    if spec.virt_type != "test":
        type_attrs["machine"] = spec.machine
    _el(os_el, "type", "hvm", **type_attrs)
    if spec.firmware == Firmware.UEFI:
        # Plain OVMF: Secure Boot builds need SMM and enrolled keys, which not every host has.
        fw = _el(os_el, "firmware")
        _el(fw, "feature", enabled="no", name="secure-boot")
        _el(fw, "feature", enabled="no", name="enrolled-keys")
    features = _el(dom, "features")
    _el(features, "acpi")
    _el(features, "apic")

    if spec.cpu_model in ("host-passthrough", "host-model"):
        _el(dom, "cpu", mode=spec.cpu_model)
    elif spec.cpu_model:
        cpu = _el(dom, "cpu", mode="custom", match="exact", check="partial")
        _el(cpu, "model", spec.cpu_model, fallback="forbid")
    _el(dom, "clock", offset="utc")
    _el(dom, "on_poweroff", "destroy")
    _el(dom, "on_reboot", "restart")
    _el(dom, "on_crash", "destroy")


def _devices(dom):
    devices = dom.find("devices")
    return devices if devices is not None else _el(dom, "devices")


def contribute_devices(dom, spec: DomainBuild) -> None:
    """Disks (the CD-ROM drive with them), NICs, their boot orders and the controllers they
    need, with spare PCIe root ports on q35 so disks and NICs can be hot-plugged later."""
    devices = _devices(dom)
    disks, nics = boot_devices(spec)
    if spec.virt_type != "test" and any(d.bus == "scsi" for d in disks):
        _el(devices, "controller", type="scsi", index=0, model="virtio-scsi")
    for disk in disks:
        devices.append(disk_element(disk))
    for nic in nics:
        devices.append(nic_element(nic))
    if spec.virt_type != "test" and spec.machine == "q35":
        _el(devices, "controller", type="pci", index=0, model="pcie-root")
        for _ in range(spec.spare_root_ports):
            _el(devices, "controller", type="pci", model="pcie-root-port")


def contribute_consoles(dom, spec: DomainBuild) -> None:
    """A serial console, the guest agent's channel, VNC on loopback (with a tablet for the
    pointer), video and the memory balloon."""
    devices = _devices(dom)
    if spec.virt_type == "test":
        _el(devices, "graphics", type="vnc", port=-1, autoport="yes", listen="127.0.0.1")
        return
    serial = _el(devices, "serial", type="pty")
    _el(serial, "target", port=0)
    console = _el(devices, "console", type="pty")
    _el(console, "target", type="serial", port=0)
    channel = _el(devices, "channel", type="unix")
    _el(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    _el(devices, "input", type="tablet", bus="usb")
    graphics = _el(devices, "graphics", type="vnc", port=-1, autoport="yes", listen="127.0.0.1")
    _el(graphics, "listen", type="address", address="127.0.0.1")
    video = _el(devices, "video")
    _el(video, "model", type="virtio" if spec.machine == "q35" else "vga")
    _el(devices, "memballoon", model="virtio")


#: Paddock's contributors, in the order their elements appear in the domain XML.
CONTRIBUTORS: list[Contributor] = [
    contribute_identity,
    contribute_resources,
    contribute_platform,
    contribute_devices,
    contribute_consoles,
]


def register_contributor(contributor: Contributor) -> Contributor:
    """Add a contributor run after Paddock's own on every build (usable as a decorator)."""
    if contributor not in CONTRIBUTORS:
        CONTRIBUTORS.append(contributor)
    return contributor


def build_tree(spec: DomainBuild, patches: Iterable[Contributor] = ()) -> etree._Element:
    """The ``<domain>`` element for a new VM: every contributor, then the given patches."""
    dom = etree.Element("domain", type=spec.virt_type, nsmap={"paddock": PADDOCK_NS})
    for contributor in (*CONTRIBUTORS, *patches):
        contributor(dom, spec)
    return dom


def build_domain(spec: DomainBuild, patches: Iterable[Contributor] = ()) -> str:
    """The domain XML for a new VM: VNC on loopback, a serial console, spare PCIe root ports."""
    return to_string(build_tree(spec, patches))


def created_by_task(xml: str) -> int | None:
    """The task id stamped into a domain Paddock defined, if any."""
    root = parse(xml)
    el = root.find(f"metadata/{{{PADDOCK_NS}}}vm")
    if el is None or not el.get("created-by-task", "").isdigit():
        return None
    return int(el.get("created-by-task"))


def target_names(bus: str, used: set[str], count: int = 1) -> list[str]:
    """Free guest device names on a bus: vda, vdb… (virtio) or sda, sdb… (scsi, sata)."""
    prefix = "vd" if bus == "virtio" else "sd"
    names = []
    for i in range(26 * 27):
        suffix = chr(97 + i) if i < 26 else chr(96 + i // 26) + chr(97 + i % 26)
        name = prefix + suffix
        if name not in used and name not in names:
            names.append(name)
            if len(names) == count:
                return names
    raise ValueError("no free device name on this bus")


def clone_domain_xml(
    source_xml: str,
    *,
    name: str,
    uuid: str,
    disks: dict[str, tuple[str, str]],
    macs: dict[str, str],
    task_id: int | None = None,
) -> str:
    """A copy of a domain definition for a clone: new name, UUID, disk sources and MACs.

    ``disks`` maps a guest target (``vda``) to the clone's (path, format); ``macs`` maps each
    source MAC to the clone's. Per-VM state that must not be shared is dropped: the NVRAM file
    (libvirt makes a fresh one from the template), the VNC port, the guest agent socket path.
    """
    root = parse(source_xml)
    root.find("name").text = name
    uuid_el = root.find("uuid")
    if uuid_el is None:
        uuid_el = etree.SubElement(root, "uuid")
    uuid_el.text = uuid
    for path in ("os/nvram", "devices/graphics/@port"):
        if path.endswith("@port"):
            for g in root.findall("devices/graphics"):
                g.set("port", "-1")
                g.set("autoport", "yes")
        else:
            for el in root.findall(path):
                el.getparent().remove(el)
    for channel in root.findall("devices/channel/source"):
        channel.attrib.pop("path", None)
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is None or target.get("dev") not in disks:
            continue
        new_path, fmt = disks[target.get("dev")]
        src = disk.find("source")
        if src is None:
            src = etree.SubElement(disk, "source")
        src.attrib.clear()
        src.set("dev" if disk.get("type") == "block" else "file", new_path)
        driver = disk.find("driver")
        if driver is not None:
            driver.set("type", fmt)
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    for iface in root.findall("devices/interface"):
        mac = iface.find("mac")
        if mac is not None and mac.get("address", "").lower() in macs:
            mac.set("address", macs[mac.get("address").lower()])
        target = iface.find("target")
        if target is not None:
            iface.remove(target)
    meta = root.find("metadata")
    if meta is None:
        meta = etree.SubElement(root, "metadata")
    for old in meta.findall(f"{{{PADDOCK_NS}}}vm"):
        meta.remove(old)
    mark = etree.SubElement(meta, f"{{{PADDOCK_NS}}}vm", nsmap={"paddock": PADDOCK_NS})
    if task_id is not None:
        mark.set("created-by-task", str(task_id))
    return to_string(root)


# --- tuning: the patch a tuning plan's domain part makes --------------------------------------
#
# ``apply_tuning(root, domain)`` owns ``<iothreads>``, ``<cputune>``, ``<memtune>``,
# ``<numatune>``, ``<memoryBacking>``, the topology and NUMA cells of ``<cpu>`` (and its mode
# when the plan names one), the ``<driver>`` tuning attributes and ``<iotune>`` of disks, the
# ``<driver>`` queues of virtio NICs and the ``<memballoon>``. What the plan leaves empty is
# removed (applying ``balanced`` after ``latency-critical`` unpins the VM); every other
# element is left as it was. libvirt orders elements itself when it defines the domain.
# ``tuning_changes(before, after, domain)`` says which differences a running guest takes live
# and which need a restart. The shape of ``domain`` is documented in ``tuning/plan.py``.

# Where a new top-level element goes: before the first of these that exists.
_BEFORE = ("os", "features", "cpu", "clock", "on_poweroff", "devices")
#: libvirt's block I/O throttles, in the order its schema lists them in ``<iotune>``
THROTTLE_KEYS = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
    "total_bytes_sec_max", "read_bytes_sec_max", "write_bytes_sec_max",
    "total_iops_sec_max", "read_iops_sec_max", "write_iops_sec_max",
    "total_bytes_sec_max_length", "read_bytes_sec_max_length", "write_bytes_sec_max_length",
    "total_iops_sec_max_length", "read_iops_sec_max_length", "write_iops_sec_max_length",
)  # fmt: skip


def _tel(parent, tag: str, text=None, **attrs):
    el = etree.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = str(text)
    return el


def _put(root, tag: str, element) -> None:
    """Replace ``root``'s ``<tag>`` with ``element`` (None: remove it)."""
    for old in root.findall(tag):
        root.remove(old)
    if element is None:
        return
    for name in _BEFORE:
        anchor = root.find(name)
        if anchor is not None and name != tag:
            anchor.addprevious(element)
            return
    root.append(element)


def _cputune(d: dict):
    el = etree.Element("cputune")
    if d.get("shares"):
        _tel(el, "shares", d["shares"])
    if d.get("period"):
        _tel(el, "period", d["period"])
    if d.get("quota"):
        _tel(el, "quota", d["quota"])
    for vcpu, cpuset in sorted((d.get("vcpupin") or {}).items(), key=lambda kv: int(kv[0])):
        _tel(el, "vcpupin", vcpu=vcpu, cpuset=cpuset)
    if d.get("emulatorpin"):
        _tel(el, "emulatorpin", cpuset=d["emulatorpin"])
    for tid, cpuset in sorted((d.get("iothreadpin") or {}).items(), key=lambda kv: int(kv[0])):
        _tel(el, "iothreadpin", iothread=tid, cpuset=cpuset)
    return el if len(el) else None


def _memtune(d: dict):
    limits = d.get("memtune") or {}
    el = etree.Element("memtune")
    if limits.get("hard_limit_mib"):
        _tel(el, "hard_limit", limits["hard_limit_mib"], unit="MiB")
    if limits.get("soft_limit_mib"):
        _tel(el, "soft_limit", limits["soft_limit_mib"], unit="MiB")
    return el if len(el) else None


def _numatune(d: dict):
    numa = d.get("numatune")
    if not numa:
        return None
    el = etree.Element("numatune")
    _tel(el, "memory", mode=numa["mode"], nodeset=numa["nodeset"])
    for node in numa.get("memnodes") or []:
        _tel(el, "memnode", cellid=node["cellid"], mode=node["mode"], nodeset=node["nodeset"])
    return el


def _memory_backing(d: dict):
    backing = d.get("memory_backing")
    if not backing:
        return None
    el = etree.Element("memoryBacking")
    if backing.get("pages"):
        pages = _tel(el, "hugepages")
        for page in backing["pages"]:
            _tel(
                pages,
                "page",
                size=page["size_kib"],
                unit="KiB",
                nodeset=page.get("nodeset") or None,
            )
    if backing.get("nosharepages"):
        _tel(el, "nosharepages")
    if backing.get("locked"):
        _tel(el, "locked")
    return el if len(el) else None


def _cpu(root, d: dict) -> None:
    spec = d.get("cpu")
    if spec is None:
        return
    cpu = root.find("cpu")
    mode = spec.get("mode") or ""
    if cpu is None and not (mode or spec.get("topology") or spec.get("numa_cells")):
        return
    if cpu is None:
        cpu = etree.Element("cpu")
        _put(root, "cpu", cpu)
    if mode:
        for key in list(cpu.attrib):
            del cpu.attrib[key]
        for child in cpu.findall("model") + cpu.findall("feature") + cpu.findall("vendor"):
            cpu.remove(child)
        if mode == "custom":
            cpu.set("mode", "custom")
            cpu.set("match", "exact")
            cpu.set("check", "partial")
            model = etree.Element("model", fallback="forbid")
            model.text = spec["model"]
            cpu.insert(0, model)
        else:
            cpu.set("mode", mode)
            if mode == "host-passthrough":
                cpu.set("check", "none")
                cpu.set("migratable", "on")
    # a guest topology or NUMA cells the plan does not set are the VM's own: kept
    if spec.get("topology") or spec.get("numa_cells"):
        for child in cpu.findall("topology") + cpu.findall("numa"):
            cpu.remove(child)
    topo = spec.get("topology")
    if topo:
        _tel(cpu, "topology", sockets=topo["sockets"], dies=topo.get("dies", 1),
            cores=topo["cores"], threads=topo["threads"])  # fmt: skip
    cells = spec.get("numa_cells") or []
    if cells:
        numa = _tel(cpu, "numa")
        for cell in cells:
            _tel(
                numa,
                "cell",
                id=cell["id"],
                cpus=cell["cpus"],
                memory=cell["memory_mib"],
                unit="MiB",
            )
    if not len(cpu) and not cpu.attrib:
        root.remove(cpu)


def _disks(root, d: dict) -> None:
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        name = target.get("dev") if target is not None else None
        spec = (d.get("disks") or {}).get(name)
        if spec is None:
            continue
        driver = disk.find("driver")
        if driver is None:
            driver = etree.SubElement(disk, "driver", name="qemu")
        for attr in ("cache", "io", "queues", "iothread", "discard"):
            value = spec.get(attr)
            if value in (None, "", 0):
                driver.attrib.pop(attr, None)
            else:
                driver.set(attr, str(value))
        for old in disk.findall("iotune"):
            disk.remove(old)
        iotune = {k: v for k, v in (spec.get("iotune") or {}).items() if v}
        if iotune:
            el = etree.Element("iotune")
            for key in THROTTLE_KEYS:
                if iotune.get(key):
                    _tel(el, key, iotune[key])
            anchor = disk.find("target")
            (anchor.addnext(el) if anchor is not None else disk.append(el))


def _nics(root, d: dict) -> None:
    for iface in root.findall("devices/interface"):
        mac = iface.find("mac")
        spec = (d.get("nics") or {}).get(mac.get("address", "").lower() if mac is not None else "")
        if spec is None:
            continue
        driver = iface.find("driver")
        values = {k: spec.get(k) for k in ("queues", "rx_queue_size", "tx_queue_size")}
        if not any(values.values()):
            if driver is not None:
                for k in values:
                    driver.attrib.pop(k, None)
                driver.attrib.pop("name", None) if driver.get("name") == "vhost" else None
                if not driver.attrib and not len(driver):
                    iface.remove(driver)
            continue
        if driver is None:
            driver = etree.SubElement(iface, "driver")
        driver.set("name", "vhost")
        for key, value in values.items():
            if value:
                driver.set(key, str(value))
            else:
                driver.attrib.pop(key, None)


def _balloon(root, d: dict) -> None:
    spec = d.get("balloon")
    if spec is None:
        return
    devices = root.find("devices")
    if devices is None:
        return
    for old in devices.findall("memballoon"):
        devices.remove(old)
    if not spec.get("enabled", True):
        _tel(devices, "memballoon", model="none")
        return
    el = _tel(devices, "memballoon", model="virtio",
             autodeflate="on" if spec.get("autodeflate") else None)  # fmt: skip
    if spec.get("period"):
        _tel(el, "stats", period=spec["period"])


TUNED_BACKING = ("hugepages", "nosharepages", "locked")


def domain_id(xml: str) -> str | None:
    """The id of a running domain (a new one each time it starts), from its live XML."""
    match = re.search(r"<domain\b[^>]*\bid=['\"](\d+)['\"]", xml[:500]) if xml else None
    return match.group(1) if match else None


def apply_tuning(root, domain: dict) -> None:
    """Write ``domain`` (a ``TuningPlan.domain``) into the ``<domain>`` element ``root``."""
    if not domain:
        return
    if "iothreads" in domain:
        count = domain.get("iothreads") or 0
        iothreads = None
        if count:
            iothreads = etree.Element("iothreads")
            iothreads.text = str(count)
        _put(root, "iothreads", iothreads)
    _put(root, "cputune", _cputune(domain))
    if "memtune" in domain:
        _put(root, "memtune", _memtune(domain))
    if "numatune" in domain:
        _put(root, "numatune", _numatune(domain))
    if "memory_backing" in domain:
        # tuning owns hugepages, nosharepages and locked; the rest (source, access,
        # allocation, discard: e.g. the shared memfd virtiofs needs) is kept as it was
        old = root.find("memoryBacking")
        kept = [c for c in (old if old is not None else []) if c.tag not in TUNED_BACKING]
        el = _memory_backing(domain)
        if kept:
            el = el if el is not None else etree.Element("memoryBacking")
            for child in kept:
                el.append(child)
        _put(root, "memoryBacking", el)
    _cpu(root, domain)
    _disks(root, domain)
    _nics(root, domain)
    _balloon(root, domain)


def tuned_xml(xml: str, domain: dict) -> str:
    """``xml`` with ``domain`` applied, pretty-printed for the diff."""
    root = parse(xml)
    apply_tuning(root, domain)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode")


def pretty(xml: str) -> str:
    if not xml:
        return ""
    root = parse(xml)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode")


def pretty_el(element) -> str:
    """One element in canonical form (attributes sorted), for comparing; "" for None."""
    if element is None:
        return ""
    return etree.tostring(element, method="c14n").decode()


def _section(xml: str, path: str) -> str:
    root = parse(xml)
    els = root.findall(path)
    return "".join(pretty_el(e) for e in els)


def tuning_changes(before: str, after: str, dom: dict) -> tuple[list[dict], list[str]]:
    """What the running guest takes now, and why it must restart for the rest."""
    live: list[dict] = []
    restart: list[str] = []
    b, a = parse(before), parse(after)

    def pins(root, tag, key):
        return {p.get(key): p.get("cpuset") for p in root.findall(f"cputune/{tag}")}

    old_v, new_v = pins(b, "vcpupin", "vcpu"), pins(a, "vcpupin", "vcpu")
    for vcpu, cs in sorted(new_v.items(), key=lambda kv: int(kv[0])):
        if old_v.get(vcpu) != cs:
            live.append({"op": "vcpupin", "vcpu": int(vcpu), "cpuset": cs})
    for vcpu in old_v.keys() - new_v.keys():
        live.append({"op": "vcpupin", "vcpu": int(vcpu), "cpuset": ""})
    old_e = b.find("cputune/emulatorpin")
    new_e = a.find("cputune/emulatorpin")
    if (old_e.get("cpuset") if old_e is not None else "") != (
        new_e.get("cpuset") if new_e is not None else ""
    ):
        live.append(
            {"op": "emulatorpin", "cpuset": new_e.get("cpuset") if new_e is not None else ""}
        )
    if _section(before, "iothreads") != _section(after, "iothreads"):
        restart.append("the number of I/O threads changes")
    else:
        old_i, new_i = pins(b, "iothreadpin", "iothread"), pins(a, "iothreadpin", "iothread")
        for tid, cs in sorted(new_i.items()):
            if old_i.get(tid) != cs:
                live.append({"op": "iothreadpin", "iothread": int(tid), "cpuset": cs})
    sched = {}
    for tag, param in (
        ("shares", "cpu_shares"),
        ("period", "vcpu_period"),
        ("quota", "vcpu_quota"),
    ):
        ov, nv = b.findtext(f"cputune/{tag}"), a.findtext(f"cputune/{tag}")
        if ov != nv and nv is not None:
            sched[param] = int(nv)
        elif ov is not None and nv is None:  # the kernel's default comes back with a restart
            restart.append(f"CPU {tag} returns to the host's default")
    if sched:
        live.append({"op": "schedinfo", "params": sched})
    if _section(before, "memtune") != _section(after, "memtune"):
        live.append({"op": "memtune", "params": dict(dom.get("memtune") or {})})
    for path, why in (
        ("numatune", "the NUMA memory policy changes (libvirt cannot change its mode live)"),
        ("memoryBacking", "the memory backing (hugepages, locked, no sharing) changes"),
        ("cpu", "the guest CPU model, topology or NUMA cells change"),
    ):
        if _section(before, path) != _section(after, path):
            restart.append(why)
    for disk_b, disk_a in zip(b.findall("devices/disk"), a.findall("devices/disk"), strict=False):
        target = disk_a.find("target").get("dev") if disk_a.find("target") is not None else "?"
        if pretty_el(disk_b.find("driver")) != pretty_el(disk_a.find("driver")):
            restart.append(f"disk {target}: cache, io, queues or I/O thread change")
        if pretty_el(disk_b.find("iotune")) != pretty_el(disk_a.find("iotune")):
            params = dict((dom.get("disks") or {}).get(target, {}).get("iotune") or {})
            live.append({"op": "blkiotune", "target": target, "params": params})
    if _section(before, "devices/interface/driver") != _section(after, "devices/interface/driver"):
        restart.append("NIC queues change")
    ob, ab = b.find("devices/memballoon"), a.find("devices/memballoon")
    if (ob.get("model") if ob is not None else None) != (
        ab.get("model") if ab is not None else None
    ) or (
        (ob.get("autodeflate") if ob is not None else None)
        != (ab.get("autodeflate") if ab is not None else None)
    ):
        restart.append("the memory balloon device changes")
    else:
        old_p = (
            ob.find("stats").get("period")
            if ob is not None and ob.find("stats") is not None
            else None
        )
        new_p = (
            ab.find("stats").get("period")
            if ab is not None and ab.find("stats") is not None
            else None
        )
        if old_p != new_p:
            live.append({"op": "memstats_period", "seconds": int(new_p or 0)})
    return live, restart
