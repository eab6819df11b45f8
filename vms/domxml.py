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
