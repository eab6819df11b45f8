"""Policy + VM + host topology + ledger -> :class:`TuningPlan`. Pure: no database, no host.

How a plan is made, knob by knob (``docs/tuning.md`` maps each to its libvirt element):

1. **Where the vCPUs go.** ``shared``: they float over the host's pCPUs that no VM holds and
   that are not housekeeping (pinned there only when a NUMA mode asks for a node).
   ``dedicated``: one free pCPU per vCPU, sibling threads of a core together, all on one NUMA
   node when one has room (the node with the fewest free pCPUs that still fits: packing), else
   spread over nodes with guest NUMA cells mirrored onto them. ``dedicated-isolate-siblings``:
   a whole core per vCPU, its other threads kept idle (held in the ledger). Housekeeping pCPUs
   are never dedicated. An isolated emulator thread takes one more pCPU of the VM's first node;
   a shared one runs on the housekeeping set. I/O threads are pinned to housekeeping or to
   pCPUs of their own.
2. **Memory.** NUMA mode binds memory to the nodes of the pinned pCPUs (per guest cell when
   there are several). Hugepages are counted per node against the ledger; when the host has
   fewer free pages than the plan needs there, a host action reserves more (2 MiB at run
   time); 1 GiB pages the host lacks need a reboot with the kernel command line shown, and do
   not fit until then.
3. **Devices.** Disk cache/io/discard/queues/I/O thread and throttles; virtio NIC queues.
4. **Live or restart.** On a running guest, pins, scheduler parameters, block throttles and
   the balloon stats period change live; the rest is written to the definition and listed in
   ``restart`` until the guest restarts.
"""

from __future__ import annotations

from collections import defaultdict

from hosts.actions import Hugepages, SysfsValue
from panel.xmlutil import format_cpuset, parse_cpuset
from vms.domxml import tuned_xml, tuning_changes

from . import domain as tuning_domain
from .knobs import HUGEPAGES
from .plan import TuningPlan
from .topology import MIB_PER_PAGE, HostTopology, LedgerView, NodeInfo, VmFacts

DISK_DEFAULTS = {"cache": "none", "io": "native", "discard": "unmap"}
MAX_HOST_NET_QUEUES = 256
HOST_PATHS = {
    "halt_poll_ns": "/sys/module/kvm/parameters/halt_poll_ns",
    "thp": "/sys/kernel/mm/transparent_hugepage/enabled",
    "ksm": "/sys/kernel/mm/ksm/run",
}


class NoFit(Exception):
    """The policy cannot be applied to the VM on this host; ``reasons`` say exactly why."""

    def __init__(self, reasons: list[str]):
        super().__init__("; ".join(reasons))
        self.reasons = list(reasons)


def cpuset(cpus) -> str:
    """A sorted cpuset string: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    return format_cpuset(cpus)


# --- CPUs ---------------------------------------------------------------------------------------


def _free_cores(node: NodeInfo, taken: set[int], keep: frozenset[int]) -> list[list[int]]:
    """The node's cores as lists of their free threads (no housekeeping, no dedicated)."""
    cores: dict[tuple, list[int]] = defaultdict(list)
    for cpu in node.cpus:
        cores[(cpu.socket_id, cpu.core_id, cpu.siblings)].append(cpu.id)
    out = []
    for (_s, _c, siblings), ids in sorted(cores.items(), key=lambda kv: min(kv[1])):
        threads = sorted(set(siblings) | set(ids))
        out.append([t for t in threads if t not in taken and t not in keep and t in ids])
    return out


def _whole_cores(node: NodeInfo, taken: set[int], keep: frozenset[int]) -> list[list[int]]:
    """Cores none of whose threads is taken or housekeeping (for isolate-siblings)."""
    out = []
    seen = set()
    for cpu in sorted(node.cpus, key=lambda c: c.id):
        threads = tuple(sorted(set(cpu.siblings) | {cpu.id}))
        if threads in seen:
            continue
        seen.add(threads)
        if not any(t in taken or t in keep for t in threads):
            out.append(list(threads))
    return out


def _pick(node: NodeInfo, count: int, placement: str, taken: set[int], keep) -> list[dict] | None:
    """``count`` vCPU pCPUs on ``node`` (with the siblings they idle), or None."""
    if placement == "dedicated-isolate-siblings":
        cores = _whole_cores(node, taken, keep)
        if len(cores) < count:
            return None
        out = []
        for core in cores[:count]:
            out.append({"cpu": core[0], "use": "vcpu"})
            out += [{"cpu": t, "use": "sibling"} for t in core[1:]]
        return out
    # dedicated: fill whole free cores first (siblings of one core serve one guest core)
    cores = sorted(_free_cores(node, taken, keep), key=lambda c: (-len(c), c[:1]))
    picked: list[int] = []
    for core in cores:
        for thread in core:
            if len(picked) < count:
                picked.append(thread)
    if len(picked) < count:
        return None
    return [{"cpu": c, "use": "vcpu"} for c in picked]


def _node_memory_room(node: NodeInfo, size_kib: int, ledger: LedgerView) -> int:
    """MiB of guest memory the node can still take in pages of ``size_kib`` (0: normal pages:
    the node's memory, as the ledger does not count normal memory per node)."""
    if not size_kib:
        return node.memory_mib
    return ledger_free_pages(ledger, node, size_kib) * MIB_PER_PAGE[size_kib]


def hugepage_capacity(node: NodeInfo, size_kib: int) -> int:
    """How many pages of ``size_kib`` the ledger may promise on ``node``: 2 MiB pages up to
    90 % of the node's memory (reserved at run time when needed); 1 GiB pages only as many as
    the host reserved at boot."""
    if size_kib == 2048:
        return int(node.memory_mib * 0.9) // 2
    return int((node.hugepages.get(size_kib) or {}).get("total", 0))


def ledger_free_pages(ledger: LedgerView, node: NodeInfo, size_kib: int) -> int:
    pool = ledger.hugepages.get((node.id, size_kib))
    capacity = hugepage_capacity(node, size_kib)
    allocated = pool["allocated"] if pool else 0
    return max(0, capacity - allocated)


def _place_dedicated(knobs, vm: VmFacts, host: HostTopology, ledger: LedgerView, size_kib):
    """[(node, [allocations])] for the vCPUs: one node if any fits, else several."""
    placement = knobs["cpu"]["placement"]
    taken = set(ledger.dedicated)
    keep = host.housekeeping
    extra = 1 if knobs["cpu"]["emulator"] == "isolate" else 0
    if knobs["cpu"]["iothread_pin"] == "dedicated":
        extra += knobs["cpu"]["iothreads"]
    reasons = []
    fits = []
    for node in host.nodes:
        picked = _pick(node, vm.vcpus + extra, placement, taken, keep)
        room = _node_memory_room(node, size_kib, ledger)
        if picked is None:
            free = len([c for c in node.cpu_ids if c not in taken and c not in keep])
            what = "whole free cores" if placement == "dedicated-isolate-siblings" else "free pCPUs"
            reasons.append(
                f"node {node.id}: {vm.vcpus + extra} {what} needed "
                f"({vm.vcpus} vCPUs{f' + {extra} for emulator/I/O threads' if extra else ''}), "
                f"{free} pCPUs free outside housekeeping {cpuset(keep) or '-'}"
            )
        elif room < vm.memory_mib:
            reasons.append(
                f"node {node.id}: {vm.memory_mib} MiB needed"
                f"{f' in {size_kib // 1024} MiB pages' if size_kib else ''}, {room} MiB free"
            )
        else:
            free_count = len([c for c in node.cpu_ids if c not in taken and c not in keep])
            fits.append((free_count, node, picked))
    if fits:
        fits.sort(key=lambda f: (f[0], f[1].id))  # pack: the fullest node that fits
        _free, node, picked = fits[0]
        return [(node, picked)], []
    # Spread over nodes, guest cells mirrored: vCPUs split by the free room of each node.
    if len(host.nodes) > 1:
        plan, left_cpus, left_mem = [], vm.vcpus + extra, vm.memory_mib
        for node in sorted(host.nodes, key=lambda n: n.id):
            if left_cpus <= 0:
                break
            for count in range(min(left_cpus, len(node.cpus)), 0, -1):
                picked = _pick(node, count, placement, taken, keep)
                if picked is not None:
                    plan.append((node, picked))
                    left_cpus -= count
                    break
        if left_cpus <= 0 and len(plan) > 1:
            share = [sum(1 for a in p if a["use"] == "vcpu") for _n, p in plan]
            total = sum(share)
            mem_ok = True
            for (node, _p), n in zip(plan, share, strict=True):
                need = vm.memory_mib * n // total
                if _node_memory_room(node, size_kib, ledger) < need:
                    mem_ok = False
            if mem_ok and left_mem > 0:
                return plan, []
        reasons.append("no set of NUMA nodes has the pCPUs and memory together either")
    return None, reasons


# --- compile ------------------------------------------------------------------------------------


def compile(
    knobs: dict,
    vm: VmFacts,
    host: HostTopology,
    ledger: LedgerView,
    *,
    policy: str = "",
    version: int = 0,
    current_xml: str = "",
) -> TuningPlan:
    """The plan of ``knobs`` for ``vm`` on ``host`` given what ``ledger`` promised others, or
    :class:`NoFit` with every reason it cannot be applied there."""
    cpu_k, numa_k, mem_k = knobs["cpu"], knobs["numa"], knobs["memory"]
    disk_k, net_k, host_k = knobs["disk"], knobs["network"], knobs["host"]
    plan = TuningPlan(policy=policy, version=version, host_id=host.host_id)
    reasons: list[str] = []
    dom: dict = {}
    placement = cpu_k["placement"]
    dedicated = placement != "shared"
    size_kib = HUGEPAGES[mem_k["hugepages"]]
    all_cpus = sorted(host.cpus)

    # memory shape first: pages must divide the guest memory
    if size_kib:
        page_mib = MIB_PER_PAGE[size_kib]
        if vm.memory_mib < page_mib or vm.memory_mib % page_mib:
            reasons.append(
                f"memory.hugepages: {vm.memory_mib} MiB of guest memory is not a whole number of "
                f"{mem_k['hugepages']} pages"
            )
        if not any(size_kib in n.hugepages or size_kib == 2048 for n in host.nodes):
            reasons.append(f"memory.hugepages: host {host.name} has no {mem_k['hugepages']} pages")
    if dedicated and vm.vcpus > len([c for c in all_cpus if c not in host.housekeeping]):
        reasons.append(
            f"cpu.placement: {vm.vcpus} dedicated vCPUs on a host with "
            f"{len(all_cpus)} pCPUs, {len(host.housekeeping)} of them housekeeping"
        )
    if reasons:
        raise NoFit(reasons)

    # 1. CPUs
    allocations: list[dict] = []
    nodes_used: list[tuple[NodeInfo, list[dict]]] = []
    vcpupin: dict[str, str] = {}
    if dedicated:
        placed, why = _place_dedicated(knobs, vm, host, ledger, size_kib)
        if placed is None:
            raise NoFit([f"cpu.placement {placement}: " + r for r in why])
        nodes_used = placed
        vcpu_ids = iter(range(vm.vcpus))
        pool: list[tuple[int, int]] = []  # (node, cpu) of the vCPU pCPUs in order
        for node, picked in placed:
            for a in picked:
                if a["use"] == "vcpu":
                    pool.append((node.id, a["cpu"]))
        # vCPUs take the first pool entries; the rest are emulator / I/O threads
        for vcpu in vcpu_ids:
            node_id, cpu = pool[vcpu]
            vcpupin[str(vcpu)] = str(cpu)
            allocations.append({"cpu": cpu, "node": node_id, "use": "vcpu", "serves": vcpu})
        spare = pool[vm.vcpus :]
        for node, picked in placed:
            for a in picked:
                if a["use"] == "sibling":
                    allocations.append(
                        {"cpu": a["cpu"], "node": node.id, "use": "sibling", "serves": None}
                    )
    elif numa_k["mode"] != "none" and len(host.nodes) > 0:
        # shared vCPUs bound to one node: the one with most memory room
        node = max(host.nodes, key=lambda n: (_node_memory_room(n, size_kib, ledger), -n.id))
        # (hugepages are counted per node below, with the reason naming the page size)
        if not size_kib and node.memory_mib < vm.memory_mib and len(host.nodes) == 1:
            raise NoFit([f"numa: node {node.id} has {node.memory_mib} MiB; {vm.memory_mib} needed"])
        nodes_used = [(node, [])]
        floating = [
            c for c in node.cpu_ids if c not in ledger.dedicated and c not in host.housekeeping
        ]
        floating = floating or [c for c in node.cpu_ids if c not in ledger.dedicated]
        for vcpu in range(vm.vcpus):
            vcpupin[str(vcpu)] = cpuset(floating)
        spare = []
    else:
        spare = []
    keep = sorted(host.housekeeping)
    node_ids = [n.id for n, _p in nodes_used]
    emulatorpin = ""
    if cpu_k["emulator"] == "isolate":
        if not dedicated:
            raise NoFit(["cpu.emulator isolate: needs dedicated placement (a pCPU of its own)"])
        node_id, cpu = spare.pop(0)
        emulatorpin = str(cpu)
        allocations.append({"cpu": cpu, "node": node_id, "use": "emulator", "serves": None})
    elif dedicated or vcpupin:
        # shared emulator threads: the housekeeping pCPUs of the VM's nodes (else all of them)
        local = [c for c in keep if host.node_of(c) in node_ids] or keep
        emulatorpin = cpuset(local) if local else ""
    iothreadpin: dict[str, str] = {}
    for tid in range(1, cpu_k["iothreads"] + 1):
        if cpu_k["iothread_pin"] == "dedicated" and dedicated:
            node_id, cpu = spare.pop(0)
            iothreadpin[str(tid)] = str(cpu)
            allocations.append({"cpu": cpu, "node": node_id, "use": "iothread", "serves": tid})
        elif keep and (dedicated or vcpupin):
            iothreadpin[str(tid)] = emulatorpin or cpuset(keep)
    dom["vcpupin"] = vcpupin
    dom["emulatorpin"] = emulatorpin
    dom["iothreads"] = cpu_k["iothreads"]
    dom["iothreadpin"] = iothreadpin
    dom["shares"] = cpu_k["shares"]
    dom["period"] = cpu_k["period"]
    dom["quota"] = cpu_k["quota"]

    # guest CPU model and topology
    cpu_spec: dict = {"mode": "", "model": "", "topology": None, "numa_cells": []}
    model = cpu_k["model"]
    if model in ("host-passthrough", "host-model"):
        if not host.kvm_usable and not host.simulated:
            raise NoFit(
                [f"cpu.model {model}: host {host.name} runs guests under TCG (no usable KVM)"]
            )
        cpu_spec["mode"] = model
    elif model != "default":
        if model not in host.cpu_models:
            raise NoFit([f"cpu.model {model}: not among the CPU models host {host.name} can run"])
        cpu_spec.update(mode="custom", model=model)
    topo = cpu_k["topology"]
    if isinstance(topo, dict):
        count = topo["sockets"] * topo.get("dies", 1) * topo["cores"] * topo["threads"]
        if count != vm.vcpus:
            raise NoFit([f"cpu.topology: {count} vCPUs in the topology, the VM has {vm.vcpus}"])
        cpu_spec["topology"] = {"sockets": topo["sockets"], "dies": topo.get("dies", 1),
                                "cores": topo["cores"], "threads": topo["threads"]}  # fmt: skip
    elif topo == "auto" and dedicated:
        threads_per_core = 1
        if placement == "dedicated":
            cpus = host.cpus
            by_core: dict[tuple, int] = defaultdict(int)
            for pcpu in vcpupin.values():
                info = cpus[int(pcpu)]
                by_core[(info.socket_id, info.core_id)] += 1
            sizes = set(by_core.values())
            if len(sizes) == 1:
                threads_per_core = sizes.pop()
        cores = vm.vcpus // threads_per_core
        cpu_spec["topology"] = {
            "sockets": 1,
            "dies": 1,
            "cores": cores,
            "threads": threads_per_core,
        }
    elif topo == "auto":
        cpu_spec["topology"] = {"sockets": 1, "dies": 1, "cores": vm.vcpus, "threads": 1}
    # guest cells: one per host node that runs vCPUs (a node holding only the spare
    # emulator / I/O thread pCPUs gets no cell: a cell without vCPUs is no cell)
    cell_nodes = [
        (node, n)
        for node, _p in nodes_used
        if (n := sum(1 for a in allocations if a["use"] == "vcpu" and a["node"] == node.id))
    ]
    if len(cell_nodes) > 1:
        cells, start = [], 0
        per_page = MIB_PER_PAGE.get(size_kib, 1)
        mem_left = vm.memory_mib
        for i, (node, n) in enumerate(cell_nodes):
            mem = (
                mem_left
                if i == len(cell_nodes) - 1
                else (vm.memory_mib * n // vm.vcpus) // per_page * per_page
            )
            mem_left -= mem
            cells.append({"id": i, "cpus": cpuset(range(start, start + n)), "memory_mib": mem,
                          "host_node": node.id})  # fmt: skip
            start += n
        cpu_spec["numa_cells"] = cells
    dom["cpu"] = cpu_spec

    # 2. NUMA and memory
    mode = numa_k["mode"]
    if mode != "none":
        if not node_ids:  # no pins: the node with most room
            node = max(host.nodes, key=lambda n: _node_memory_room(n, size_kib, ledger))
            node_ids = [node.id]
        numatune = {"mode": mode, "nodeset": cpuset(node_ids), "memnodes": []}
        if len(cpu_spec["numa_cells"]) > 1:
            numatune["memnodes"] = [
                {"cellid": c["id"], "mode": mode if mode != "interleave" else "strict",
                 "nodeset": str(c["host_node"])}
                for c in cpu_spec["numa_cells"]
            ]  # fmt: skip
        dom["numatune"] = numatune
    else:
        dom["numatune"] = None
    page_alloc: list[dict] = []
    if size_kib:
        page_mib = MIB_PER_PAGE[size_kib]
        if cpu_spec["numa_cells"]:
            per_node = {c["host_node"]: c["memory_mib"] // page_mib for c in cpu_spec["numa_cells"]}
        else:
            if node_ids:
                target = node_ids[0]
            else:
                target = max(host.nodes, key=lambda n: ledger_free_pages(ledger, n, size_kib)).id
                node_ids = [target]
            per_node = {target: vm.memory_mib // page_mib}
        nodes = {n.id: n for n in host.nodes}
        for node_id, pages in per_node.items():
            node = nodes[node_id]
            free_ledger = ledger_free_pages(ledger, node, size_kib)
            if free_ledger < pages:
                reason = (
                    f"memory.hugepages: node {node_id} can promise {free_ledger} more "
                    f"{mem_k['hugepages']} pages; {pages} needed"
                )
                if size_kib == 1048576:
                    reason += (
                        "; 1 GiB pages are reserved at boot: add "
                        f"'default_hugepagesz=1G hugepagesz=1G hugepages={pages}' to the kernel "
                        "command line and reboot the host"
                    )
                raise NoFit([reason])
            page_alloc.append({"node": node_id, "size_kib": size_kib, "pages": pages})
            have = node.hugepages.get(size_kib) or {"total": 0, "free": 0}
            if have["free"] < pages:
                if size_kib == 1048576:
                    plan.host_reboot.append({
                        "why": f"{pages} x 1 GiB pages on node {node_id}; {have['free']} free",
                        "cmdline": f"default_hugepagesz=1G hugepagesz=1G hugepages={pages}",
                    })  # fmt: skip
                    raise NoFit([
                        f"memory.hugepages: node {node_id} has {have['free']} free 1G pages, "
                        f"{pages} needed; 1 GiB pages are reserved at boot: add "
                        f"'default_hugepagesz=1G hugepagesz=1G hugepages={pages}' to the kernel "
                        "command line and reboot the host"
                    ])  # fmt: skip
                total = have["total"] + (pages - have["free"])
                plan.host_actions.append(
                    {"kind": "host.hugetlbfs", "size_kib": size_kib}
                ) if not any(a.get("kind") == "host.hugetlbfs" for a in plan.host_actions) else None
                plan.host_actions.append(Hugepages(total, size_kib, node_id).to_dict())
        dom["memory_backing"] = {
            "pages": [{"size_kib": size_kib, "nodeset": ""}],
            "locked": mem_k["locked"],
            "nosharepages": mem_k["nosharepages"],
        }
    elif mem_k["locked"] or mem_k["nosharepages"]:
        dom["memory_backing"] = {
            "pages": [],
            "locked": mem_k["locked"],
            "nosharepages": mem_k["nosharepages"],
        }
    else:
        dom["memory_backing"] = None
    dom["memtune"] = {
        "hard_limit_mib": mem_k["hard_limit_mib"],
        "soft_limit_mib": mem_k["soft_limit_mib"],
    }
    if mem_k["locked"] and not mem_k["hard_limit_mib"]:
        plan.warnings.append({"field": "memory.locked", "message":
            "Locked memory without a hard limit: libvirt sets the lock limit to the guest memory "
            "plus 1 GiB."})  # fmt: skip
    dom["balloon"] = dict(mem_k["balloon"])

    # 3. devices
    queues = disk_k["queues"]
    disks = {}
    disk_targets = [d for d in vm.disks if d.get("device", "disk") == "disk"]
    for i, d in enumerate(disk_targets):
        virtio = (d.get("bus") or "virtio") == "virtio"
        spec = {
            "cache": DISK_DEFAULTS["cache"] if disk_k["cache"] == "default" else disk_k["cache"],
            "io": DISK_DEFAULTS["io"] if disk_k["io"] == "default" else disk_k["io"],
            "discard": DISK_DEFAULTS["discard"] if disk_k["discard"] == "default" else disk_k["discard"],
            "queues": None,
            "iothread": None,
            "iotune": {k: v for k, v in disk_k["throttle"].items() if v},
        }  # fmt: skip
        if spec["io"] == "native" and spec["cache"] not in ("none", "directsync"):
            spec["io"] = "threads"
        if virtio and queues != "default":
            spec["queues"] = vm.vcpus if queues == "vcpus" else queues
        if virtio and disk_k["iothread"] and cpu_k["iothreads"]:
            spec["iothread"] = i % cpu_k["iothreads"] + 1
        disks[d["target"]] = spec
    dom["disks"] = disks
    nics = {}
    for n in vm.nics:
        if (n.get("model") or "virtio") != "virtio":
            continue
        q = net_k["queues"]
        count = (
            None if q == "default" else min(vm.vcpus if q == "vcpus" else q, MAX_HOST_NET_QUEUES)
        )
        if count == 1:
            count = None
        nics[n["mac"].lower()] = {"queues": count, "rx_queue_size": net_k["rx_queue_size"],
                                  "tx_queue_size": None}  # fmt: skip
        if net_k["tx_queue_size"]:
            plan.warnings.append({"field": "network.tx_queue_size", "message":
                f"NIC {n['mac']}: tx_queue_size is honoured by vhost-user only; not set."})  # fmt: skip
    dom["nics"] = nics

    # host knobs
    if host_k["halt_poll_ns"] is not None:
        plan.host_actions.append(
            SysfsValue(HOST_PATHS["halt_poll_ns"], host_k["halt_poll_ns"]).to_dict()
        )
    if host_k["thp"] is not None:
        plan.host_actions.append(SysfsValue(HOST_PATHS["thp"], host_k["thp"]).to_dict())
    if host_k["ksm"] is not None:
        plan.host_actions.append(SysfsValue(HOST_PATHS["ksm"], 1 if host_k["ksm"] else 0).to_dict())
    if host_k["irq_affinity"] and keep:
        plan.host_actions.append({"kind": "tuning.irq_affinity", "cpus": keep})

    plan.domain = dom
    plan.allocations = {"cpus": allocations, "hugepages": page_alloc}

    # 4. live or restart
    if current_xml:
        plan.xml_before = current_xml
        after = tuned_xml(current_xml, dom)
        plan.xml_after = after
        plan.diff = tuning_domain.diff(current_xml, after)
        if vm.running:
            plan.live, plan.restart = tuning_changes(current_xml, after, dom)
    return plan


__all__ = ["NoFit", "compile", "cpuset", "hugepage_capacity", "ledger_free_pages", "parse_cpuset"]
