"""Host capabilities XML -> topology fields (CPU, NUMA cells, hugepages, virt types)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from panel.xmlutil import parse, text

SIMULATED_CAPABILITIES = Path(__file__).parent / "fixtures" / "simulated-capabilities.xml"


@dataclass
class Topology:
    arch: str = ""
    cpu_model: str = ""
    cpu_vendor: str = ""
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    cpus: int | None = None
    memory_mib: int | None = None
    numa_cells: list[dict] = field(default_factory=list)
    virt_types: list[str] = field(default_factory=list)

    def as_fields(self) -> dict:
        return {
            "arch": self.arch,
            "cpu_model": self.cpu_model,
            "cpu_vendor": self.cpu_vendor,
            "sockets": self.sockets,
            "cores": self.cores,
            "threads": self.threads,
            "cpus": self.cpus,
            "memory_mib": self.memory_mib,
            "numa_cells": self.numa_cells,
            "virt_types": self.virt_types,
        }


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _cpulist(value: str | None) -> list[int]:
    """``"0,16"`` or ``"0-3,8"`` as a sorted list of CPU ids (bad parts are skipped)."""
    out: set[int] = set()
    for part in (value or "").split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def parse_capabilities(xml: str) -> Topology:
    root = parse(xml)
    host = root.find("host")
    topo = Topology()
    if host is None:
        return topo
    cpu = host.find("cpu")
    if cpu is not None:
        topo.arch = text(cpu, "arch")
        topo.cpu_model = text(cpu, "model")
        topo.cpu_vendor = text(cpu, "vendor")
        t = cpu.find("topology")
        if t is not None:
            # libvirt reports sockets per NUMA node here; the total comes from the cells.
            topo.cores = _int(t.get("cores"))
            topo.threads = _int(t.get("threads"))
            topo.sockets = _int(t.get("sockets"))

    cells = []
    socket_ids: set[str] = set()
    total_cpus = 0
    total_kib = 0
    for cell in host.findall("topology/cells/cell"):
        cpus = []
        details = []
        for c in cell.findall("cpus/cpu"):
            cpu_id = _int(c.get("id"))
            if cpu_id is None:
                continue
            cpus.append(cpu_id)
            if c.get("socket_id") is not None:
                socket_ids.add(c.get("socket_id"))
            details.append(
                {
                    "id": cpu_id,
                    "socket_id": _int(c.get("socket_id")),
                    "core_id": _int(c.get("core_id")),
                    "siblings": _cpulist(c.get("siblings")) or [cpu_id],
                }
            )
        mem_kib = _int(text(cell, "memory")) or 0
        hugepages = []
        for page in cell.findall("pages"):
            size = _int(page.get("size")) or 0
            count = _int(page.text) or 0
            if size > 4:
                hugepages.append({"size_kib": size, "total": count, "free": count})
        distances = {s.get("id"): _int(s.get("value")) for s in cell.findall("distances/sibling")}
        cells.append(
            {
                "id": _int(cell.get("id")) or 0,
                "cpus": sorted(cpus),
                # per pCPU: {"id", "socket_id", "core_id", "siblings": [ids, itself included]}
                "cpu_details": sorted(details, key=lambda d: d["id"]),
                "memory_mib": mem_kib // 1024,
                "hugepages": hugepages,
                "distances": distances,
            }
        )
        total_cpus += len(cpus)
        total_kib += mem_kib
    topo.numa_cells = cells
    if cells:
        topo.cpus = total_cpus
        topo.memory_mib = total_kib // 1024
        if socket_ids:
            topo.sockets = len(socket_ids)

    virt = []
    for dom in root.findall("guest/arch/domain"):
        vtype = dom.get("type")
        if vtype and vtype not in virt:
            virt.append(vtype)
    topo.virt_types = virt
    return topo


def apply_free_hugepages(topo: Topology, free_by_cell: dict[int, dict[int, int]]) -> None:
    """Fill in free hugepage counts read from the host (cell -> size KiB -> free pages)."""
    for cell in topo.numa_cells:
        free = free_by_cell.get(cell["id"], {})
        for page in cell["hugepages"]:
            if page["size_kib"] in free:
                page["free"] = free[page["size_kib"]]


def simulated_topology() -> Topology:
    return parse_capabilities(SIMULATED_CAPABILITIES.read_text())


def parse_machine_types(xml: str, arch: str = "x86_64") -> list[str]:
    """Machine type names (aliases such as ``q35`` and ``pc`` first) offered for ``arch``."""
    root = parse(xml)
    aliases, names = [], []
    for machine in root.findall(f"guest/arch[@name='{arch}']/machine"):
        name = (machine.text or "").strip()
        if not name:
            continue
        target = aliases if machine.get("canonical") else names
        if name not in target:
            target.append(name)
    return aliases + [n for n in names if n not in aliases]


def parse_domain_capabilities(xml: str) -> dict:
    """Usable named CPU models and the UEFI firmware path from ``getDomainCapabilities``."""
    root = parse(xml)
    models = [
        (m.text or "").strip()
        for m in root.findall("cpu/mode[@name='custom']/model")
        if m.get("usable") == "yes" and (m.text or "").strip()
    ]
    loader = ""
    for value in root.findall("os/loader/value"):
        path = (value.text or "").strip()
        # Prefer the plain OVMF build: no Secure Boot keys to enrol.
        if path and "secboot" not in path and "ms" not in path.rsplit("/", 1)[-1].split("."):
            loader = path
            break
    if root.find("os[@supported='yes']/enum[@name='firmware']/value") is None and not loader:
        for value in root.findall("os/loader/value"):
            loader = (value.text or "").strip()
            break
    return {"cpu_models": models, "uefi_loader": loader}
