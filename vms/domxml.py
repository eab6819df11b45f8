"""Domain XML: the one place that reads (and later builds) libvirt domain definitions."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    )


# --- building ---------------------------------------------------------------------------------

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
    source_type: str = "file"  # "file" or "block"


@dataclass
class NicBuild:
    mac: str
    source: str
    source_type: str = "network"  # "network" or "bridge"
    model: str = "virtio"
    boot_order: int | None = None


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
    description: str = ""
    task_id: int | None = None
    spare_root_ports: int = SPARE_ROOT_PORTS


def _el(parent, tag: str, text: object = None, **attrs):
    from lxml import etree

    elem = etree.SubElement(parent, tag, {k: str(v) for k, v in attrs.items()})
    if text is not None:
        elem.text = str(text)
    return elem


def disk_element(disk: DiskBuild):
    from lxml import etree

    kind = "block" if disk.source_type == "block" else "file"
    el = etree.Element("disk", type=kind, device=disk.device)
    driver = {"name": "qemu", "type": disk.format or "raw"}
    if disk.device == DiskDevice.DISK:
        # No host page cache: safe for live migration and honest about flushes.
        driver.update(cache="none", io="native", discard="unmap")
    _el(el, "driver", **driver)
    if disk.path:
        _el(el, "source", **({"dev": disk.path} if kind == "block" else {"file": disk.path}))
    _el(el, "target", dev=disk.target, bus=disk.bus)
    if disk.readonly or disk.device == DiskDevice.CDROM:
        _el(el, "readonly")
    if disk.boot_order:
        _el(el, "boot", order=disk.boot_order)
    return el


def nic_element(nic: NicBuild):
    from lxml import etree

    el = etree.Element("interface", type=nic.source_type)
    _el(el, "mac", address=nic.mac)
    _el(el, "source", **{nic.source_type: nic.source})
    _el(el, "model", type=nic.model)
    if nic.boot_order:
        _el(el, "boot", order=nic.boot_order)
    return el


def to_string(element) -> str:
    from lxml import etree

    return etree.tostring(element, pretty_print=True).decode()


def build_domain(spec: DomainBuild) -> str:
    """The domain XML for a new VM: VNC on loopback, a serial console, spare PCIe root ports."""
    from lxml import etree

    dom = etree.Element("domain", type=spec.virt_type, nsmap={"paddock": PADDOCK_NS})
    _el(dom, "name", spec.name)
    _el(dom, "uuid", spec.uuid)
    if spec.description:
        _el(dom, "description", spec.description)
    meta = _el(dom, "metadata")
    paddock = etree.SubElement(meta, f"{{{PADDOCK_NS}}}vm")
    if spec.task_id is not None:
        paddock.set("created-by-task", str(spec.task_id))

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

    devices = _el(dom, "devices")
    if spec.virt_type != "test" and any(d.bus == "scsi" for d in spec.disks):
        _el(devices, "controller", type="scsi", index=0, model="virtio-scsi")
    for disk in spec.disks:
        devices.append(disk_element(disk))
    for nic in spec.nics:
        devices.append(nic_element(nic))
    if spec.virt_type != "test":
        if spec.machine == "q35":
            # Empty PCIe root ports: disks and NICs can be hot-plugged later.
            _el(devices, "controller", type="pci", index=0, model="pcie-root")
            for _ in range(spec.spare_root_ports):
                _el(devices, "controller", type="pci", model="pcie-root-port")
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
    else:
        _el(devices, "graphics", type="vnc", port=-1, autoport="yes", listen="127.0.0.1")
    return to_string(dom)


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
    from lxml import etree

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
