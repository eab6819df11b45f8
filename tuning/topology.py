"""What the compiler reads, as plain data: a host's topology, a VM's facts, the host's ledger.

``compile`` is pure: it never queries the database. Callers build these from rows
(``HostTopology.from_host``, ``VmFacts.from_vm``, ``tuning.ledger.view``) and may build many
plans from one topology and ledger.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field

from hosts.models import Host

MIB_PER_PAGE = {2048: 2, 1048576: 1024}


@dataclass(frozen=True)
class CpuInfo:
    id: int
    core_id: int
    socket_id: int
    siblings: tuple[int, ...]  # itself included


@dataclass
class NodeInfo:
    id: int
    cpus: list[CpuInfo] = field(default_factory=list)
    memory_mib: int = 0
    #: page size KiB -> {"total": reserved on the host now, "free": free on the host now}
    hugepages: dict[int, dict] = field(default_factory=dict)

    @property
    def cpu_ids(self) -> list[int]:
        return [c.id for c in self.cpus]


@dataclass
class HostTopology:
    host_id: int | None
    name: str
    nodes: list[NodeInfo] = field(default_factory=list)
    #: pCPUs kept for the host and shared emulator threads; never dedicated
    housekeeping: frozenset[int] = frozenset()
    cpu_models: list[str] = field(default_factory=list)
    virt_types: list[str] = field(default_factory=list)
    simulated: bool = False
    #: QEMU can open /dev/kvm (else guests run under TCG: no host-passthrough)
    kvm_usable: bool = True
    #: equal for hosts whose topology is the same in everything compile reads but the name
    signature: str = ""

    @property
    def cpus(self) -> dict[int, CpuInfo]:
        return {c.id: c for n in self.nodes for c in n.cpus}

    def node_of(self, cpu: int) -> int | None:
        for node in self.nodes:
            if cpu in node.cpu_ids:
                return node.id
        return None

    @classmethod
    def from_host(cls, host) -> HostTopology:
        """From a ``hosts.Host`` row (its parsed capabilities)."""
        nodes = []
        for cell in host.numa_cells or []:
            details = {d["id"]: d for d in cell.get("cpu_details") or []}
            cpus = []
            for cpu_id in cell.get("cpus") or []:
                d = details.get(cpu_id) or {}
                cpus.append(
                    CpuInfo(
                        id=cpu_id,
                        core_id=d.get("core_id") if d.get("core_id") is not None else cpu_id,
                        socket_id=d.get("socket_id") or 0,
                        siblings=tuple(d.get("siblings") or [cpu_id]),
                    )
                )
            pages = {
                int(p["size_kib"]): {"total": int(p.get("total", 0)), "free": int(p.get("free", 0))}
                for p in cell.get("hugepages") or []
            }
            nodes.append(
                NodeInfo(
                    id=int(cell.get("id", 0)),
                    cpus=cpus,
                    memory_mib=int(cell.get("memory_mib") or 0),
                    hugepages=pages,
                )
            )
        topo = cls(
            host_id=host.pk,
            name=host.name,
            nodes=nodes,
            cpu_models=list(host.cpu_models or []),
            virt_types=list(host.virt_types or []),
            simulated=bool(host.simulated),
            kvm_usable="kvm" in (host.virt_types or []) and not host.kvm_note,
        )
        topo.housekeeping = frozenset(host.housekeeping_cpus or default_housekeeping(topo))
        topo.signature = hashlib.blake2b(
            json.dumps(
                [host.numa_cells, sorted(topo.housekeeping), topo.cpu_models, topo.virt_types,
                 topo.simulated, topo.kvm_usable],
                sort_keys=True,
            ).encode(),
            digest_size=16,
        ).hexdigest()  # fmt: skip
        return topo


# --- many hosts' topologies, kept between fit reports ------------------------------------------

#: the host fields a topology is built from (a fit report reads its host rows without them)
TOPOLOGY_FIELDS = ("numa_cells", "cpu_models", "virt_types", "simulated", "kvm_note",
                   "housekeeping_cpus", "name")  # fmt: skip
#: what the host rows carry that is not needed for fitting and costs the most to read
HEAVY_FIELDS = ("numa_cells", "cpu_models", "machine_types")
CACHE_SECONDS = 60.0
CACHE_MAX = 50_000
_cache: dict[int, tuple[tuple, float, HostTopology]] = {}
_nodes: dict[str, list[NodeInfo]] = {}
_lock = threading.Lock()


def _stamp(host) -> tuple:
    # a sync writes the topology (and the live free hugepages) with last_synced; an edit
    # (housekeeping) saves updated
    return (host.name, host.last_synced, host.updated)


#: the host columns a fit report reads per host: id, name, status and the cache stamp
ROW_FIELDS = ("pk", "name", "status", "last_synced", "updated")


def topologies(hosts) -> dict[int, HostTopology]:
    """``HostTopology`` of each host row, by id. Built once per host and kept while the row's
    sync and edit times stay the same (and at most ``CACHE_SECONDS``): a fit across 2,000 hosts
    then reads no topology JSON at all. ``hosts`` are Host rows (which may come without
    :data:`HEAVY_FIELDS`) or ``ROW_FIELDS`` tuples; the hosts not in the cache are read in one
    query."""
    now = time.monotonic()
    out: dict[int, HostTopology] = {}
    missing: dict[int, tuple] = {}
    full: dict[int, object] = {}
    for host in hosts:
        if isinstance(host, tuple):
            pk, stamp = host[0], (host[1], host[3], host[4])
        else:
            pk, stamp = host.pk, _stamp(host)
            if not host.get_deferred_fields() & set(TOPOLOGY_FIELDS):
                full[pk] = host
        hit = _cache.get(pk)
        if hit is not None and hit[0] == stamp and now - hit[1] < CACHE_SECONDS:
            out[pk] = hit[2]
        else:
            missing[pk] = stamp
    if not missing:
        return out
    load = [pk for pk in missing if pk not in full]
    if load:
        for row in Host.objects.filter(pk__in=load).only(*TOPOLOGY_FIELDS):
            full[row.pk] = row
    with _lock:
        if len(_cache) + len(missing) > CACHE_MAX:
            _cache.clear()
            _nodes.clear()
        for pk, stamp in missing.items():
            topo = HostTopology.from_host(full[pk])
            # alike hosts share one node list (compile never changes it): a fleet's cache is
            # a few node lists, not hundreds of thousands of objects for the collector to walk
            topo.nodes = _nodes.setdefault(topo.signature, topo.nodes)
            _cache[pk] = (stamp, now, topo)
            out[pk] = topo
    return out


def forget(host_id: int | None = None) -> None:
    """Drop the kept topology of a host (every host with None)."""
    with _lock:
        if host_id is None:
            _cache.clear()
        else:
            _cache.pop(host_id, None)


def default_housekeeping(topo: HostTopology) -> set[int]:
    """The first core of each NUMA node, with its siblings."""
    keep: set[int] = set()
    for node in topo.nodes:
        if node.cpus:
            first = min(node.cpus, key=lambda c: c.id)
            keep.update(first.siblings)
    return keep


@dataclass
class VmFacts:
    vm_id: int | None
    name: str
    vcpus: int
    memory_mib: int
    running: bool = False
    tenant_id: int | None = None
    virt_type: str = "kvm"
    #: [{"target": "vda", "bus": "virtio", "format": "qcow2", "device": "disk"}]
    disks: list[dict] = field(default_factory=list)
    #: [{"mac": "52:54:00:..", "model": "virtio", "source_type": "network"}]
    nics: list[dict] = field(default_factory=list)
    #: vCPU delay %, CPU % etc. are not here: the advisor reads history itself

    @classmethod
    def for_spec(cls, *, vcpus: int, memory_mib: int, tenant_id: int, disks: int, nics: int):
        """A VM not made yet, by its size and device counts (virtio disks and NICs)."""
        return cls(
            vm_id=None, name="new", vcpus=vcpus, memory_mib=memory_mib, tenant_id=tenant_id,
            disks=[{"target": f"vd{chr(97 + i)}", "bus": "virtio", "device": "disk"}
                   for i in range(disks)],
            nics=[{"mac": f"52:54:00:00:00:{i:02x}", "model": "virtio"} for i in range(nics)],
        )  # fmt: skip

    @classmethod
    def from_vm(cls, vm) -> VmFacts:
        """From a ``vms.VirtualMachine`` row with its disks and NICs."""
        return cls(
            vm_id=vm.pk,
            name=vm.name,
            vcpus=vm.vcpus,
            memory_mib=vm.memory_mib,
            running=vm.state in ("running", "paused"),
            tenant_id=vm.tenant_id,
            virt_type=vm.virt_type or "kvm",
            disks=[
                {"target": d.target, "bus": d.bus, "format": d.format, "device": d.device}
                for d in vm.disks.all()
            ],
            nics=[
                {"mac": n.mac, "model": n.model, "source_type": n.source_type}
                for n in vm.nics.all()
            ],
        )


@dataclass
class LedgerView:
    """What a host has promised already (other VMs'; the VM being planned left out)."""

    #: pCPU -> the VM id holding it
    dedicated: dict[int, int] = field(default_factory=dict)
    #: (node, page size KiB) -> {"capacity": pages the node may promise, "allocated": promised}
    hugepages: dict[tuple[int, int], dict] = field(default_factory=dict)

    def free_pages(self, node: int, size_kib: int) -> int:
        pool = self.hugepages.get((node, size_kib))
        return (pool["capacity"] - pool["allocated"]) if pool else 0
