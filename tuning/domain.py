"""The domain part of a tuning plan written into a domain XML tree (lxml), and its diff.

:func:`apply_tuning` is the patch: it owns ``<iothreads>``, ``<cputune>``, ``<memtune>``,
``<numatune>``, ``<memoryBacking>``, the topology and NUMA cells of ``<cpu>`` (and its mode
when the plan names one), the ``<driver>`` tuning attributes and ``<iotune>`` of disks, the
``<driver>`` queues of virtio NICs and the ``<memballoon>``. What the plan leaves empty is
removed from the tree (applying ``balanced`` after ``latency-critical`` unpins the VM); every
other element is left as it was. libvirt orders the elements itself when it defines the domain.
"""

from __future__ import annotations

import difflib

from lxml import etree

from panel.xmlutil import parse

# Where a new top-level element goes: before the first of these that exists.
_BEFORE = ("os", "features", "cpu", "clock", "on_poweroff", "devices")
_THROTTLE_ORDER = (
    "total_bytes_sec", "read_bytes_sec", "write_bytes_sec",
    "total_iops_sec", "read_iops_sec", "write_iops_sec",
    "total_bytes_sec_max", "read_bytes_sec_max", "write_bytes_sec_max",
    "total_iops_sec_max", "read_iops_sec_max", "write_iops_sec_max",
    "total_bytes_sec_max_length", "read_bytes_sec_max_length", "write_bytes_sec_max_length",
    "total_iops_sec_max_length", "read_iops_sec_max_length", "write_iops_sec_max_length",
)  # fmt: skip


def _el(parent, tag: str, text=None, **attrs):
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
        _el(el, "shares", d["shares"])
    if d.get("period"):
        _el(el, "period", d["period"])
    if d.get("quota"):
        _el(el, "quota", d["quota"])
    for vcpu, cpuset in sorted((d.get("vcpupin") or {}).items(), key=lambda kv: int(kv[0])):
        _el(el, "vcpupin", vcpu=vcpu, cpuset=cpuset)
    if d.get("emulatorpin"):
        _el(el, "emulatorpin", cpuset=d["emulatorpin"])
    for tid, cpuset in sorted((d.get("iothreadpin") or {}).items(), key=lambda kv: int(kv[0])):
        _el(el, "iothreadpin", iothread=tid, cpuset=cpuset)
    return el if len(el) else None


def _memtune(d: dict):
    limits = d.get("memtune") or {}
    el = etree.Element("memtune")
    if limits.get("hard_limit_mib"):
        _el(el, "hard_limit", limits["hard_limit_mib"], unit="MiB")
    if limits.get("soft_limit_mib"):
        _el(el, "soft_limit", limits["soft_limit_mib"], unit="MiB")
    return el if len(el) else None


def _numatune(d: dict):
    numa = d.get("numatune")
    if not numa:
        return None
    el = etree.Element("numatune")
    _el(el, "memory", mode=numa["mode"], nodeset=numa["nodeset"])
    for node in numa.get("memnodes") or []:
        _el(el, "memnode", cellid=node["cellid"], mode=node["mode"], nodeset=node["nodeset"])
    return el


def _memory_backing(d: dict):
    backing = d.get("memory_backing")
    if not backing:
        return None
    el = etree.Element("memoryBacking")
    if backing.get("pages"):
        pages = _el(el, "hugepages")
        for page in backing["pages"]:
            _el(
                pages,
                "page",
                size=page["size_kib"],
                unit="KiB",
                nodeset=page.get("nodeset") or None,
            )
    if backing.get("nosharepages"):
        _el(el, "nosharepages")
    if backing.get("locked"):
        _el(el, "locked")
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
    for child in cpu.findall("topology") + cpu.findall("numa"):
        cpu.remove(child)
    topo = spec.get("topology")
    if topo:
        _el(cpu, "topology", sockets=topo["sockets"], dies=topo.get("dies", 1),
            cores=topo["cores"], threads=topo["threads"])  # fmt: skip
    cells = spec.get("numa_cells") or []
    if cells:
        numa = _el(cpu, "numa")
        for cell in cells:
            _el(
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
            for key in _THROTTLE_ORDER:
                if iotune.get(key):
                    _el(el, key, iotune[key])
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
        _el(devices, "memballoon", model="none")
        return
    el = _el(devices, "memballoon", model="virtio",
             autodeflate="on" if spec.get("autodeflate") else None)  # fmt: skip
    if spec.get("period"):
        _el(el, "stats", period=spec["period"])


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
        _put(root, "memoryBacking", _memory_backing(domain))
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


def diff(before: str, after: str) -> str:
    """A unified diff of two domain definitions, for people."""
    return "".join(
        difflib.unified_diff(
            pretty(before).splitlines(keepends=True),
            pretty(after).splitlines(keepends=True),
            fromfile="current",
            tofile="tuned",
            n=2,
        )
    )


def contribute(dom, spec) -> None:
    """A ``vms.domxml`` contributor: a new VM's tuning (``DomainBuild.tuning``), when it has one."""
    tuning = getattr(spec, "tuning", None)
    if tuning:
        apply_tuning(dom, tuning)


def pretty_el(element) -> str:
    """One element in canonical form (attributes sorted), for comparing; "" for None."""
    if element is None:
        return ""
    return etree.tostring(element, method="c14n").decode()
