"""Recommendations from real data, each with its evidence and the policy that would fix it.

Six rules, each read from what Paddock has recorded (the metric history, the domain
definition as last read, the host's topology, the storage inventory), never guessed:

- ``vcpu-delay``: vCPUs wait for a pCPU (delay above :data:`DELAY_PERCENT` on average over
  the last :data:`RECENT` seconds, with at least :data:`MIN_POINTS` rows): dedicated pCPUs,
  or fewer vCPUs when they are dedicated already;
- ``numa-span``: the pinned pCPUs or the bound memory sit on more than one NUMA node;
- ``multiqueue``: a virtio NIC with one queue on a VM with several vCPUs;
- ``balloon-on-critical``: a latency-critical VM whose balloon is inflated or active;
- ``writeback-on-critical``: ``cache=writeback`` disks on a latency-critical VM;
- ``backing-chain``: a disk whose qcow2 chain holds more than :data:`MAX_CHAIN` images.

A recommendation's ``policy`` is the VM's effective knobs with the change made (cleaned: it can
be applied as it is), or None when no knob fixes it.
"""

from __future__ import annotations

import copy
import time

from django.core.exceptions import ValidationError
from lxml import etree

from hosts.models import Volume
from metrics.store import get_store
from panel.xmlutil import parse, parse_cpuset
from vms.domxml import parse_domain

from .knobs import clean
from .models import TenantTuningDefault, TuningPolicy, VmTuning
from .profiles import BUILTINS
from .topology import HostTopology

RECENT = 30 * 60  # seconds of history a rule reads
DELAY_PERCENT = 5.0
MIN_POINTS = 10
MAX_CHAIN = 3  # images in a disk's chain, the disk's own image included
BALLOON_SLACK = 0.98  # a balloon below this share of the VM's memory is inflated
MIB = 1024 * 1024
CRITICAL = "latency-critical"


def recommendations(vm, policy=None, now: float | None = None) -> list[dict]:
    """``[{"rule", "severity", "message", "evidence": {...}, "policy": {knobs} | None}]``.

    ``policy`` is the VM's effective policy (a ``TuningPolicy``) when the caller has it; it
    is read here otherwise (the VM's, its template's, the tenant default, ``balanced``)."""
    now = time.time() if now is None else float(now)
    name, knobs = _effective(vm, policy)
    spec, root = _definition(vm)
    series = get_store().series("vm", vm.pk, "hour", now=now)["series"]
    recent = {
        metric: [v for ts, v in points if ts > now - RECENT] for metric, points in series.items()
    }
    critical = name == CRITICAL or knobs["cpu"]["placement"] == "dedicated-isolate-siblings"
    out = []
    for rule in (
        _vcpu_delay(vm, knobs, recent),
        _numa_span(vm, knobs, spec),
        _multiqueue(vm, knobs, root),
        _balloon(vm, name, knobs, root, recent) if critical else None,
        _writeback(vm, name, knobs, spec) if critical else None,
        _backing_chain(vm, spec, root),
    ):
        if rule:
            out.append(rule)
    return out


# --- what the rules read ----------------------------------------------------------------------


def _effective(vm, policy) -> tuple[str, dict]:
    """The effective policy's name and cleaned knobs (VM > template > tenant > balanced),
    read without writing anything."""
    if policy is None:
        own = VmTuning.objects.filter(vm=vm).select_related("policy").first()
        policy = own.policy if own else None
    if policy is None and vm.source_template_id:
        tpl = VmTuning.objects.filter(vm_id=vm.source_template_id).select_related("policy").first()
        policy = tpl.policy if tpl else None
    if policy is None:
        default = (
            TenantTuningDefault.objects.filter(tenant_id=vm.tenant_id)
            .select_related("policy")
            .first()
        )
        policy = default.policy if default else None
    if policy is None:
        policy = TuningPolicy.objects.filter(name="balanced", tenant__isnull=True).first()
    if policy is None:
        return "balanced", copy.deepcopy(BUILTINS["balanced"])
    try:
        return policy.name, clean(policy.knobs)
    except ValidationError:
        return policy.name, copy.deepcopy(BUILTINS["balanced"])


def _definition(vm):
    """``(DomainSpec, root element)`` of the definition Paddock last read, or ``(None, None)``."""
    if not (vm.definition or "").strip():
        return None, None
    try:
        return parse_domain(vm.definition), parse(vm.definition)
    except (etree.LxmlError, ValueError):
        return None, None


def _with(knobs: dict, **changes) -> dict | None:
    """``knobs`` with ``changes`` (``cpu__placement="dedicated"``) made and what they exclude
    reset; None when the result is not a valid policy."""
    out = copy.deepcopy(knobs)
    for dotted, value in changes.items():
        *groups, key = dotted.split("__")
        target = out
        for group in groups:
            target = target[group]
        target[key] = value
    if out["cpu"]["placement"] != "shared":
        out["cpu"]["quota"] = None
        if out["numa"]["mode"] == "interleave":
            out["numa"]["mode"] = "strict"
    try:
        return clean(out)
    except ValidationError:
        return None


def _stats(values: list[float]) -> dict:
    if not values:
        return {"avg": None, "max": None, "points": 0}
    return {
        "avg": round(sum(values) / len(values), 3),
        "max": round(max(values), 3),
        "points": len(values),
    }


# --- the rules --------------------------------------------------------------------------------


def _vcpu_delay(vm, knobs: dict, recent: dict) -> dict | None:
    stats = _stats(recent.get("vcpu_delay_percent") or [])
    if stats["points"] < MIN_POINTS or stats["avg"] <= DELAY_PERCENT:
        return None
    placement = knobs["cpu"]["placement"]
    evidence = {
        "metric": "vcpu_delay_percent",
        "window_seconds": RECENT,
        **stats,
        "threshold": DELAY_PERCENT,
        "placement": placement,
        "vcpus": vm.vcpus,
    }
    if placement == "shared":
        return {
            "rule": "vcpu-delay",
            "severity": "warning",
            "message": (
                f"vCPUs waited for a host CPU {stats['avg']:.1f} % of the time over the last "
                f"{RECENT // 60} minutes (above {DELAY_PERCENT:g} %): give the VM dedicated "
                f"pCPUs, or fewer vCPUs than its {vm.vcpus}."
            ),
            "evidence": evidence,
            "policy": _with(knobs, cpu__placement="dedicated"),
        }
    isolate = _with(knobs, cpu__emulator="isolate") if knobs["cpu"]["emulator"] == "share" else None
    return {
        "rule": "vcpu-delay",
        "severity": "warning",
        "message": (
            f"vCPUs waited {stats['avg']:.1f} % of the time over the last {RECENT // 60} "
            f"minutes although they are dedicated: the guest has more runnable work than its "
            f"{vm.vcpus} vCPUs, or the emulator threads share them; consider fewer vCPUs or "
            f"isolating the emulator threads."
        ),
        "evidence": evidence,
        "policy": isolate,
    }


def _numa_span(vm, knobs: dict, spec) -> dict | None:
    if spec is None:
        return None
    topo = HostTopology.from_host(vm.host)
    if len(topo.nodes) < 2:
        return None
    pins = (spec.cputune.vcpupin if spec.cputune else {}) or {}
    cpu_nodes: set[int] = set()
    for cpuset in pins.values():
        for cpu in parse_cpuset(cpuset):
            node = topo.node_of(cpu)
            if node is not None:
                cpu_nodes.add(node)
    mem_nodes: set[int] = set()
    numatune = spec.numatune
    if numatune:
        mem_nodes.update(parse_cpuset(numatune.memory_nodeset))
        for memnode in numatune.memnodes:
            mem_nodes.update(parse_cpuset(memnode.nodeset))
    spans = len(cpu_nodes) > 1 or len(mem_nodes) > 1
    apart = bool(cpu_nodes and mem_nodes and cpu_nodes != mem_nodes)
    if not (spans or apart):
        return None
    fitting = [
        n.id
        for n in topo.nodes
        if len([c for c in n.cpu_ids if c not in topo.housekeeping]) >= vm.vcpus
        and (not n.memory_mib or n.memory_mib >= vm.memory_mib)
    ]
    evidence = {
        "pins": {str(k): v for k, v in sorted(pins.items())},
        "cpu_nodes": sorted(cpu_nodes),
        "memory_nodes": sorted(mem_nodes),
        "host_nodes": [n.id for n in topo.nodes],
        "nodes_that_fit": fitting,
    }
    where = (
        f"pCPUs on nodes {_list(cpu_nodes)}"
        if len(cpu_nodes) > 1
        else f"memory on nodes {_list(mem_nodes)}"
        if len(mem_nodes) > 1
        else f"pCPUs on node {_list(cpu_nodes)} but memory on node {_list(mem_nodes)}"
    )
    if fitting:
        message = (
            f"The VM spans NUMA nodes ({where}): every remote access crosses the interconnect. "
            f"Its {vm.vcpus} vCPUs and {vm.memory_mib} MiB fit on node {fitting[0]}: pin it "
            f"to one node with strict memory."
        )
        mode = (
            knobs["numa"]["mode"]
            if knobs["numa"]["mode"] in ("strict", "restrictive")
            else ("strict")
        )
        placement = knobs["cpu"]["placement"]
        policy = _with(
            knobs,
            cpu__placement="dedicated" if placement == "shared" else placement,
            numa__mode=mode,
        )
    else:
        message = (
            f"The VM spans NUMA nodes ({where}) and no node of {vm.host.name} has room for its "
            f"{vm.vcpus} vCPUs and {vm.memory_mib} MiB: fewer vCPUs or less memory would let "
            f"it fit in one."
        )
        policy = None
    return {"rule": "numa-span", "severity": "warning", "message": message,
            "evidence": evidence, "policy": policy}  # fmt: skip


def _list(values) -> str:
    return ", ".join(str(v) for v in sorted(values))


def _multiqueue(vm, knobs: dict, root) -> dict | None:
    if root is None or vm.vcpus <= 1:
        return None
    single = []
    for iface in root.findall("devices/interface"):
        model = iface.find("model")
        if model is None or model.get("type") != "virtio":
            continue  # only virtio-net has queues
        driver = iface.find("driver")
        queues = (driver.get("queues") if driver is not None else None) or "1"
        if queues.strip() in ("", "1"):
            mac = iface.find("mac")
            single.append(mac.get("address", "").lower() if mac is not None else "")
    if not single:
        return None
    return {
        "rule": "multiqueue",
        "severity": "info",
        "message": (
            f"{len(single)} virtio NIC{'s' if len(single) > 1 else ''} use one queue while "
            f"the VM has {vm.vcpus} vCPUs: one vCPU handles all packets. Enable multiqueue "
            f"(one queue per vCPU)."
        ),
        "evidence": {"nics": single, "queues": 1, "vcpus": vm.vcpus},
        "policy": _with(knobs, network__queues="vcpus"),
    }


def _balloon(vm, name: str, knobs: dict, root, recent: dict) -> dict | None:
    memory = max(vm.max_memory_mib or 0, vm.memory_mib or 0) * MIB
    stats = _stats(recent.get("memory_balloon_bytes") or [])
    inflated = bool(memory and stats["points"] and stats["avg"] < memory * BALLOON_SLACK)
    device = None
    if root is not None:
        for el in root.findall("devices/memballoon"):
            if el.get("model", "virtio") != "none":
                stats_el = el.find("stats")
                device = {
                    "model": el.get("model", "virtio"),
                    "stats_period": int(stats_el.get("period") or 0) if stats_el is not None else 0,
                    "autodeflate": el.get("autodeflate") == "on",
                }
    active = bool(device and device["stats_period"])
    if not (inflated or active):
        return None
    evidence = {"policy": name, "placement": knobs["cpu"]["placement"],
                "memory_bytes": memory, "balloon_bytes": stats, "memballoon": device}  # fmt: skip
    if inflated:
        what = (
            f"its balloon holds {stats['avg'] / MIB:.0f} MiB of {memory // MIB} MiB on "
            f"average over the last {RECENT // 60} minutes"
        )
    else:
        what = f"its balloon polls statistics every {device['stats_period']} s"
    return {
        "rule": "balloon-on-critical",
        "severity": "warning",
        "message": (
            f"A latency-critical VM ({name}) should own its memory, but {what}: the guest pages "
            f"memory back and forth with the host. Disable the balloon."
        ),
        "evidence": evidence,
        "policy": _with(
            knobs, memory__balloon={"enabled": False, "period": 0, "autodeflate": False}
        ),
    }


def _writeback(vm, name: str, knobs: dict, spec) -> dict | None:
    disks = [d.target for d in (spec.disks if spec else []) if d.cache == "writeback"]
    policy_writeback = knobs["disk"]["cache"] == "writeback"
    if not disks and not policy_writeback:
        return None
    return {
        "rule": "writeback-on-critical",
        "severity": "warning",
        "message": (
            f"A latency-critical VM ({name}) uses cache=writeback"
            f"{' on ' + ', '.join(disks) if disks else ' in its policy'}: writes are "
            f"acknowledged from the host's page cache (lost on a host crash) and flushes stall "
            f"unpredictably. Use cache=none."
        ),
        "evidence": {"disks": disks, "policy_cache": knobs["disk"]["cache"], "policy": name},
        "policy": _with(knobs, disk__cache="none"),
    }


def _chain_depth(el) -> int:
    """Images in the chain of a ``<disk>`` element: its own and each ``<backingStore>`` with
    a source (an empty ``<backingStore/>`` ends the chain)."""
    depth = 1
    cursor = el.find("backingStore")
    while cursor is not None and cursor.find("source") is not None:
        depth += 1
        cursor = cursor.find("backingStore")
    return depth


def _backing_chain(vm, spec, root) -> dict | None:
    depths: dict[str, dict] = {}
    for disk in vm.disks.select_related("volume").all():
        volume = disk.volume
        if volume is None and disk.source:
            volume = Volume.objects.filter(
                pool__host_id=vm.host_id, path=disk.source, gone=False
            ).first()
        if volume is not None:
            depths[disk.target] = {
                "depth": volume.backing_depth,
                "source": "inventory",
                "path": volume.path,
                "format": volume.format,
            }
    if root is not None:
        for el in root.findall("devices/disk"):
            target = el.find("target")
            if target is None or not target.get("dev"):
                continue
            depth = _chain_depth(el)
            dev = target.get("dev")
            if depth > depths.get(dev, {}).get("depth", 0):
                driver = el.find("driver")
                depths[dev] = {
                    "depth": depth,
                    "source": "definition",
                    "path": "",
                    "format": driver.get("type", "") if driver is not None else "",
                }
    deep = {t: d for t, d in sorted(depths.items()) if d["depth"] > MAX_CHAIN}
    if not deep:
        return None
    worst = max(d["depth"] for d in deep.values())
    return {
        "rule": "backing-chain",
        "severity": "warning" if worst > 2 * MAX_CHAIN else "info",
        "message": (
            f"{', '.join(deep)}: a qcow2 chain of {worst} images (more than {MAX_CHAIN}); each "
            f"read that misses the top image walks down the chain. Flatten the disk (block "
            f"pull or commit) to one image."
        ),
        "evidence": {"disks": deep, "max_depth": MAX_CHAIN},
        "policy": None,
    }
