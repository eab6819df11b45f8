"""What the compiler reads, as plain data: a host's topology, a VM's facts, the host's ledger.

``compile`` is pure: it never queries the database. Callers build these from rows
(``HostTopology.from_host``, ``VmFacts.from_vm``, ``tuning.ledger.view``) and may build many
plans from one topology and ledger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        return topo


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
