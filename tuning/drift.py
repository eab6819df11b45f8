"""Drift: where a VM's live domain no longer has the tuning last applied to it.

:func:`compare` is pure: the applied plan's domain part against the domain XML the watcher,
a sync or a reconcile just read. Pins, scheduler parameters and block throttles are compared
always; the NUMA policy and the hugepage backing only once the guest has restarted into them
(while a restart is pending, the running guest may differ and that is not drift). A change
made on the host (``virsh vcpupin``) is reported, never undone: the user re-applies.
"""

from __future__ import annotations

from panel.xmlutil import format_cpuset, parse, parse_cpuset
from vms.domxml import parse_domain


def _norm(cpus: str) -> str:
    return format_cpuset(parse_cpuset(cpus)) if cpus else ""


def compare(domain: dict, xml: str, *, restart_pending: bool = False) -> list[dict]:
    """``[{"what", "expected", "actual"}]`` where ``xml`` differs from ``domain``; [] = none."""
    if not domain or not xml:
        return []
    spec = parse_domain(xml)
    root = parse(xml)
    out: list[dict] = []

    def differ(what: str, expected, actual) -> None:
        if expected != actual:
            out.append({"what": what, "expected": expected, "actual": actual})

    cputune = spec.cputune
    pins = {str(k): _norm(v) for k, v in (cputune.vcpupin if cputune else {}).items()}
    wanted = {str(k): _norm(v) for k, v in (domain.get("vcpupin") or {}).items()}
    for vcpu in sorted(set(pins) | set(wanted), key=int):
        differ(f"vcpupin {vcpu}", wanted.get(vcpu, ""), pins.get(vcpu, ""))
    differ("emulatorpin", _norm(domain.get("emulatorpin") or ""),
           _norm(cputune.emulatorpin if cputune else ""))  # fmt: skip
    io_pins = {str(k): _norm(v) for k, v in (cputune.iothreadpin if cputune else {}).items()}
    for tid, cpus in (domain.get("iothreadpin") or {}).items():
        differ(f"iothreadpin {tid}", _norm(cpus), io_pins.get(str(tid), ""))
    for key in ("shares", "period", "quota"):
        if domain.get(key):
            differ(f"cputune {key}", domain[key], getattr(cputune, key, None) if cputune else None)
    for disk in root.findall("devices/disk[@device='disk']"):
        target = disk.find("target")
        name = target.get("dev") if target is not None else None
        want = (domain.get("disks") or {}).get(name)
        if want is None:
            continue
        have = {
            el.tag: int(el.text or 0)
            for el in disk.findall("iotune/*")
            if (el.text or "").isdigit()
        }
        expected = {k: int(v) for k, v in (want.get("iotune") or {}).items() if v}
        differ(f"blkdeviotune {name}", expected, {k: v for k, v in have.items() if v})
    if not restart_pending:
        numa = domain.get("numatune")
        have = spec.numatune
        differ("numatune mode", (numa or {}).get("mode", ""), have.memory_mode if have else "")
        if numa:
            differ("numatune nodeset", _norm(numa["nodeset"]),
                   _norm(have.memory_nodeset) if have else "")  # fmt: skip
        pages = sorted(
            p["size_kib"] for p in ((domain.get("memory_backing") or {}).get("pages") or [])
        )
        backing = spec.memory_backing
        have_pages = sorted(p.size_kib for p in backing.pages) if backing else []
        if backing and backing.hugepages and not have_pages:
            have_pages = [2048]
        differ("hugepages", pages, have_pages)
    return out
