"""tuning.compile over a matrix of host topologies built as plain HostTopology values.

Hosts have 1, 2 or 4 NUMA nodes, SMT on (two sibling threads per core) or off, 2 MiB and
1 GiB hugepages present or not per node, and pCPUs already dedicated to other VMs (the
LedgerView). Each test asserts what the plan pins, holds, refuses and classifies.
"""

from __future__ import annotations

import copy

import pytest

from tuning.compiler import NoFit, compile, hugepage_capacity
from tuning.knobs import DEFAULTS, clean
from tuning.plan import TuningPlan
from tuning.topology import (
    CpuInfo,
    HostTopology,
    LedgerView,
    NodeInfo,
    VmFacts,
    default_housekeeping,
)

NODE_MIB = 8192
NO_BALLOON = {"enabled": False, "period": 0, "autodeflate": False}
G1 = 1048576


def make_host(nodes=1, cores=4, smt=False, pages=None, memory_mib=NODE_MIB, housekeeping=None):
    """``nodes`` nodes of ``cores`` cores each; CPU ids are contiguous per node, and with SMT
    a core's threads are ``base + c`` and ``base + c + cores``. ``pages`` maps a node to its
    ``{size_kib: {"total", "free"}}``."""
    infos = []
    for n in range(nodes):
        base = n * cores * (2 if smt else 1)
        cpus = []
        for c in range(cores):
            threads = (base + c, base + c + cores) if smt else (base + c,)
            cpus += [CpuInfo(id=t, core_id=c, socket_id=n, siblings=threads) for t in threads]
        infos.append(
            NodeInfo(
                id=n,
                cpus=sorted(cpus, key=lambda cpu: cpu.id),
                memory_mib=memory_mib,
                hugepages=copy.deepcopy((pages or {}).get(n, {})),
            )
        )
    host = HostTopology(host_id=7, name="kvm1", nodes=infos, cpu_models=["Skylake-Server"],
                        virt_types=["kvm"])  # fmt: skip
    host.housekeeping = frozenset(
        housekeeping if housekeeping is not None else default_housekeeping(host)
    )
    return host


def knobs(**groups) -> dict:
    k = copy.deepcopy(DEFAULTS)
    for group, values in groups.items():
        k[group].update(values)
    return clean(k)


def vm(vcpus=2, memory_mib=2048, running=False, disks=(), nics=()) -> VmFacts:
    return VmFacts(vm_id=1, name="guest", vcpus=vcpus, memory_mib=memory_mib, running=running,
                   disks=list(disks), nics=list(nics))  # fmt: skip


def pins(plan: TuningPlan) -> list[int]:
    return [int(plan.domain["vcpupin"][str(i)]) for i in range(len(plan.domain["vcpupin"]))]


def uses(plan: TuningPlan, use: str) -> list[int]:
    return [a["cpu"] for a in plan.allocations["cpus"] if a["use"] == use]


def reasons(exc: pytest.ExceptionInfo) -> str:
    return "; ".join(exc.value.reasons)


# --- dedicated placement on one node --------------------------------------------------------

TOPOLOGIES = [
    pytest.param(nodes, smt, id=f"{nodes}node-{'smt' if smt else 'nosmt'}")
    for nodes in (1, 2, 4)
    for smt in (False, True)
]


@pytest.mark.parametrize(("nodes", "smt"), TOPOLOGIES)
@pytest.mark.parametrize("held_by_others", [False, True], ids=["empty-ledger", "some-held"])
def test_dedicated_vcpus_sit_on_one_node_off_housekeeping_and_others(nodes, smt, held_by_others):
    host = make_host(nodes=nodes, cores=4, smt=smt)
    held = {}
    if held_by_others:
        # the second core of every node is another VM's (both threads with SMT)
        for node in host.nodes:
            for cpu in node.cpus:
                if cpu.core_id == 1:
                    held[cpu.id] = 99
    plan = compile(knobs(cpu={"placement": "dedicated"}), vm(vcpus=2), host,
                   LedgerView(dedicated=held))  # fmt: skip

    pinned = pins(plan)
    assert len(pinned) == len(set(pinned)) == 2
    assert not set(pinned) & host.housekeeping
    assert not set(pinned) & set(held)
    assert len({host.node_of(c) for c in pinned}) == 1
    assert plan.domain["cpu"]["numa_cells"] == []
    assert sorted(uses(plan, "vcpu")) == sorted(pinned)
    assert [a["serves"] for a in plan.allocations["cpus"] if a["use"] == "vcpu"] == [0, 1]
    if smt:
        # two vCPUs fill one whole core: the two threads are siblings of each other
        cpus = host.cpus
        assert set(cpus[pinned[0]].siblings) == set(pinned)


@pytest.mark.parametrize("smt", [False, True], ids=["nosmt", "smt"])
def test_dedicated_packs_onto_the_fullest_node_that_fits(smt):
    host = make_host(nodes=2, cores=4, smt=smt)
    # node 1 is half held by another VM; the VM still fits there, so it goes there
    held = {c.id: 99 for c in host.nodes[1].cpus if c.core_id == 1}
    plan = compile(knobs(cpu={"placement": "dedicated"}), vm(vcpus=2), host,
                   LedgerView(dedicated=held))  # fmt: skip
    assert {host.node_of(c) for c in pins(plan)} == {1}


@pytest.mark.parametrize(("nodes", "smt"), TOPOLOGIES)
def test_isolate_siblings_keeps_the_other_threads_idle(nodes, smt):
    host = make_host(nodes=nodes, cores=4, smt=smt)
    plan = compile(knobs(cpu={"placement": "dedicated-isolate-siblings"}), vm(vcpus=3), host,
                   LedgerView())  # fmt: skip
    pinned = pins(plan)
    cpus = host.cpus
    siblings = uses(plan, "sibling")
    # one whole core per vCPU: no two vCPUs share a core
    assert len({cpus[c].siblings for c in pinned}) == 3
    expected = sorted(t for c in pinned for t in cpus[c].siblings if t != c)
    assert sorted(siblings) == expected
    assert not set(siblings) & set(pinned)
    assert not (set(siblings) | set(pinned)) & host.housekeeping
    assert len({host.node_of(c) for c in pinned + siblings}) == 1
    if not smt:
        assert siblings == []


def test_isolate_siblings_skips_cores_with_a_held_thread():
    host = make_host(nodes=1, cores=4, smt=True)  # cores (0,4) housekeeping, (1,5) (2,6) (3,7)
    plan = compile(knobs(cpu={"placement": "dedicated-isolate-siblings"}), vm(vcpus=2), host,
                   LedgerView(dedicated={5: 99}))  # fmt: skip
    assert pins(plan) == [2, 3]
    assert sorted(uses(plan, "sibling")) == [6, 7]


def test_isolate_siblings_refused_when_no_whole_core_is_free():
    host = make_host(nodes=1, cores=3, smt=True)  # (0,3) housekeeping, (1,4), (2,5)
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"placement": "dedicated-isolate-siblings"}), vm(vcpus=2), host,
                LedgerView(dedicated={4: 99}))  # fmt: skip
    assert "node 0: 2 whole free cores needed" in reasons(exc)


# --- emulator and I/O threads --------------------------------------------------------------


@pytest.mark.parametrize(("nodes", "smt"), TOPOLOGIES)
def test_isolated_emulator_takes_a_pcpu_of_its_own(nodes, smt):
    host = make_host(nodes=nodes, cores=4, smt=smt)
    plan = compile(knobs(cpu={"placement": "dedicated", "emulator": "isolate"}), vm(vcpus=2),
                   host, LedgerView())  # fmt: skip
    emulator = int(plan.domain["emulatorpin"])
    assert uses(plan, "emulator") == [emulator]
    assert emulator not in pins(plan)
    assert emulator not in host.housekeeping
    assert host.node_of(emulator) == host.node_of(pins(plan)[0])


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_shared_emulator_runs_on_the_housekeeping_set_of_the_vms_node(nodes):
    host = make_host(nodes=nodes, cores=4)
    plan = compile(knobs(cpu={"placement": "dedicated", "emulator": "share", "iothreads": 2}),
                   vm(vcpus=2), host, LedgerView())  # fmt: skip
    node = host.node_of(pins(plan)[0])
    local = sorted(c for c in host.housekeeping if host.node_of(c) == node)
    assert plan.domain["emulatorpin"] == ",".join(map(str, local))
    assert plan.domain["iothreadpin"] == {"1": plan.domain["emulatorpin"],
                                          "2": plan.domain["emulatorpin"]}  # fmt: skip
    assert uses(plan, "emulator") == []


def test_dedicated_iothreads_get_pcpus_of_their_own():
    host = make_host(nodes=1, cores=6)
    plan = compile(knobs(cpu={"placement": "dedicated", "iothreads": 2,
                              "iothread_pin": "dedicated"}), vm(vcpus=2), host, LedgerView())  # fmt: skip
    io = uses(plan, "iothread")
    assert len(io) == 2
    assert plan.domain["iothreadpin"] == {"1": str(io[0]), "2": str(io[1])}
    assert not set(io) & (set(pins(plan)) | host.housekeeping)


def test_isolated_emulator_needs_dedicated_placement():
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"emulator": "isolate"}), vm(), make_host(), LedgerView())
    assert "cpu.emulator isolate" in reasons(exc)


# --- larger than one node: guest NUMA cells mirrored onto host nodes -----------------------


@pytest.mark.parametrize(("nodes", "smt", "vcpus"), [(2, False, 5), (2, True, 10), (4, False, 10),
                                                     (4, True, 20)])  # fmt: skip
def test_vm_larger_than_a_node_gets_mirrored_guest_cells(nodes, smt, vcpus):
    host = make_host(nodes=nodes, cores=4, smt=smt)
    plan = compile(knobs(cpu={"placement": "dedicated"}, numa={"mode": "strict"}),
                   vm(vcpus=vcpus, memory_mib=4096), host, LedgerView())  # fmt: skip
    cells = plan.domain["cpu"]["numa_cells"]
    assert len(cells) > 1
    assert [c["id"] for c in cells] == list(range(len(cells)))
    assert sum(c["memory_mib"] for c in cells) == 4096
    covered = []
    pinned = pins(plan)
    for cell in cells:
        first, _, last = cell["cpus"].partition("-")
        ids = range(int(first), int(last or first) + 1)
        covered += ids
        # every vCPU of the cell is pinned onto the host node the cell mirrors
        assert {host.node_of(pinned[v]) for v in ids} == {cell["host_node"]}
    assert covered == list(range(vcpus))
    assert not set(pinned) & host.housekeeping
    numatune = plan.domain["numatune"]
    assert numatune["memnodes"] == [
        {"cellid": c["id"], "mode": "strict", "nodeset": str(c["host_node"])} for c in cells
    ]


def test_spread_hugepages_follow_the_guest_cells():
    host = make_host(nodes=2, cores=4)
    plan = compile(knobs(cpu={"placement": "dedicated"}, numa={"mode": "strict"},
                         memory={"hugepages": "2M", "balloon": NO_BALLOON}),
                   vm(vcpus=6, memory_mib=2048), host, LedgerView())  # fmt: skip
    cells = plan.domain["cpu"]["numa_cells"]
    assert plan.allocations["hugepages"] == [
        {"node": c["host_node"], "size_kib": 2048, "pages": c["memory_mib"] // 2} for c in cells
    ]
    assert sum(a["pages"] for a in plan.allocations["hugepages"]) == 1024


def test_a_node_holding_only_the_emulator_gets_no_guest_cell():
    # node 0 has exactly the 4 vCPUs' room, node 1 one free pCPU: the emulator spills there
    host = make_host(nodes=2, cores=5)  # housekeeping 0 and 5
    plan = compile(knobs(cpu={"placement": "dedicated", "emulator": "isolate"},
                         numa={"mode": "strict"}, memory={"hugepages": "2M", "balloon": NO_BALLOON}),
                   vm(vcpus=4, memory_mib=1024), host,
                   LedgerView(dedicated={7: 99, 8: 99, 9: 99}))  # fmt: skip
    assert pins(plan) == [1, 2, 3, 4]
    assert uses(plan, "emulator") == [6]
    assert plan.domain["cpu"]["numa_cells"] == []
    assert plan.allocations["hugepages"] == [{"node": 0, "size_kib": 2048, "pages": 512}]


def test_cells_count_only_vcpus_when_spare_threads_spill_over():
    # node 0 has 4 free pCPUs, node 1 three: 3 vCPUs + emulator + I/O thread spill onto node 1
    host = make_host(nodes=2, cores=5)  # housekeeping 0 and 5
    k = knobs(cpu={"placement": "dedicated", "emulator": "isolate", "iothreads": 1,
                   "iothread_pin": "dedicated"}, numa={"mode": "strict"})  # fmt: skip
    plan = compile(k, vm(vcpus=3, memory_mib=1024), host, LedgerView(dedicated={9: 99}))
    assert pins(plan) == [1, 2, 3]
    assert uses(plan, "emulator") == [4] and uses(plan, "iothread") == [6]
    assert plan.domain["cpu"]["numa_cells"] == []  # all vCPUs on node 0: one guest cell

    plan = compile(knobs(cpu={"placement": "dedicated", "emulator": "isolate"},
                         numa={"mode": "strict"}),
                   vm(vcpus=5, memory_mib=1024), host, LedgerView(dedicated={9: 99}))  # fmt: skip
    assert pins(plan) == [1, 2, 3, 4, 6]
    assert uses(plan, "emulator") == [7]
    assert plan.domain["cpu"]["numa_cells"] == [
        {"id": 0, "cpus": "0-3", "memory_mib": 819, "host_node": 0},
        {"id": 1, "cpus": "4", "memory_mib": 205, "host_node": 1},
    ]


# --- hugepages ------------------------------------------------------------------------------

HUGEPAGE_HOSTS = [
    pytest.param({}, id="no-pages"),
    pytest.param({0: {2048: {"total": 1024, "free": 1024}}}, id="2M-enough-on-node0"),
    pytest.param({0: {2048: {"total": 100, "free": 100}}}, id="2M-too-few-on-node0"),
]


@pytest.mark.parametrize("pages", HUGEPAGE_HOSTS)
def test_2m_pages_are_placed_on_the_vms_node_and_reserved_when_short(pages):
    host = make_host(nodes=1, cores=4, pages=pages)
    plan = compile(knobs(cpu={"placement": "dedicated"}, numa={"mode": "strict"},
                         memory={"hugepages": "2M", "balloon": NO_BALLOON}),
                   vm(vcpus=2, memory_mib=1024), host, LedgerView())  # fmt: skip
    assert plan.allocations["hugepages"] == [{"node": 0, "size_kib": 2048, "pages": 512}]
    assert plan.domain["memory_backing"]["pages"] == [{"size_kib": 2048, "nodeset": ""}]
    have = pages.get(0, {}).get(2048, {"total": 0, "free": 0})
    sysfs = [a for a in plan.host_actions if a["kind"] == "sysfs.hugepages"]
    if have["free"] >= 512:
        assert sysfs == []
    else:
        assert sysfs == [{"kind": "sysfs.hugepages", "count": have["total"] + 512 - have["free"],
                          "size_kib": 2048, "node": 0}]  # fmt: skip
        assert {"kind": "host.hugetlbfs", "size_kib": 2048} in plan.host_actions


@pytest.mark.parametrize("placement", ["shared", "dedicated"])
def test_2m_pages_refused_naming_the_node_when_the_ledger_has_none_left(placement):
    host = make_host(nodes=1, cores=4)
    full = hugepage_capacity(host.nodes[0], 2048)
    ledger = LedgerView(hugepages={(0, 2048): {"capacity": full, "allocated": full - 10}})
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"placement": placement}, numa={"mode": "strict"},
                      memory={"hugepages": "2M", "balloon": NO_BALLOON}),
                vm(vcpus=2, memory_mib=1024), host, ledger)  # fmt: skip
    text = reasons(exc)
    assert "node 0" in text
    assert "2M pages" in text or "2 MiB pages" in text


@pytest.mark.parametrize("nodes", [2, 4])
def test_1g_pages_go_to_the_only_node_that_has_them(nodes):
    pages = {nodes - 1: {G1: {"total": 4, "free": 4}}}
    host = make_host(nodes=nodes, cores=4, pages=pages)
    plan = compile(knobs(cpu={"placement": "dedicated"}, numa={"mode": "strict"},
                         memory={"hugepages": "1G", "balloon": NO_BALLOON}),
                   vm(vcpus=2, memory_mib=2048), host, LedgerView())  # fmt: skip
    assert {host.node_of(c) for c in pins(plan)} == {nodes - 1}
    assert plan.allocations["hugepages"] == [{"node": nodes - 1, "size_kib": G1, "pages": 2}]
    assert plan.domain["numatune"]["nodeset"] == str(nodes - 1)
    assert plan.host_actions == []  # 1 GiB pages are never reserved at run time


def test_1g_with_none_reserved_on_the_host_is_refused():
    host = make_host(nodes=2, cores=4, pages={0: {2048: {"total": 10, "free": 10}}})
    with pytest.raises(NoFit) as exc:
        compile(knobs(memory={"hugepages": "1G", "balloon": NO_BALLOON}), vm(memory_mib=2048),
                host, LedgerView())  # fmt: skip
    assert "host kvm1 has no 1G pages" in reasons(exc)


def test_1g_reserved_at_zero_is_refused_with_the_kernel_line():
    host = make_host(nodes=1, cores=4, pages={0: {G1: {"total": 0, "free": 0}}})
    with pytest.raises(NoFit) as exc:
        compile(knobs(numa={"mode": "strict"}, memory={"hugepages": "1G", "balloon": NO_BALLOON}),
                vm(memory_mib=2048), host, LedgerView())  # fmt: skip
    text = reasons(exc)
    assert "node 0" in text and "1G pages" in text
    assert "hugepagesz=1G hugepages=2" in text


def test_1g_promised_to_others_is_refused_naming_the_node():
    host = make_host(nodes=1, cores=4, pages={0: {G1: {"total": 4, "free": 4}}})
    ledger = LedgerView(hugepages={(0, G1): {"capacity": 4, "allocated": 3}})
    with pytest.raises(NoFit) as exc:
        compile(knobs(numa={"mode": "strict"}, memory={"hugepages": "1G", "balloon": NO_BALLOON}),
                vm(memory_mib=2048), host, ledger)  # fmt: skip
    assert "node 0 can promise 1 more 1G pages; 2 needed" in reasons(exc)


def test_1g_reserved_but_used_outside_the_ledger_is_refused():
    host = make_host(nodes=1, cores=4, pages={0: {G1: {"total": 4, "free": 1}}})
    with pytest.raises(NoFit) as exc:
        compile(knobs(memory={"hugepages": "1G", "balloon": NO_BALLOON}), vm(memory_mib=2048),
                host, LedgerView())  # fmt: skip
    assert "node 0 has 1 free 1G pages, 2 needed" in reasons(exc)


@pytest.mark.parametrize(("size", "memory_mib"), [("1G", 512), ("1G", 1536), ("2M", 1023)])
def test_guest_memory_not_a_whole_number_of_pages_is_refused(size, memory_mib):
    host = make_host(nodes=1, cores=4, pages={0: {G1: {"total": 8, "free": 8}}})
    with pytest.raises(NoFit) as exc:
        compile(knobs(memory={"hugepages": size, "balloon": NO_BALLOON}),
                vm(memory_mib=memory_mib), host, LedgerView())  # fmt: skip
    assert f"{memory_mib} MiB of guest memory is not a whole number of {size} pages" in reasons(exc)


# --- topology -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("placement", "smt", "vcpus", "cores", "threads"),
    [
        ("dedicated", True, 4, 2, 2),
        ("dedicated", True, 2, 1, 2),
        ("dedicated", False, 4, 4, 1),
        ("dedicated-isolate-siblings", True, 3, 3, 1),
        ("shared", True, 4, 4, 1),
    ],
)
def test_topology_auto_mirrors_the_host_cores_and_threads(placement, smt, vcpus, cores, threads):
    host = make_host(nodes=1, cores=6, smt=smt)
    plan = compile(knobs(cpu={"placement": placement, "topology": "auto"}), vm(vcpus=vcpus),
                   host, LedgerView())  # fmt: skip
    assert plan.domain["cpu"]["topology"] == {"sockets": 1, "dies": 1, "cores": cores,
                                              "threads": threads}  # fmt: skip


def test_topology_auto_with_a_split_core_falls_back_to_one_thread():
    host = make_host(nodes=1, cores=4, smt=True)
    plan = compile(knobs(cpu={"placement": "dedicated", "topology": "auto"}), vm(vcpus=3), host,
                   LedgerView())  # fmt: skip
    assert plan.domain["cpu"]["topology"]["threads"] == 1
    assert plan.domain["cpu"]["topology"]["cores"] == 3


def test_explicit_topology_must_count_the_vcpus():
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"topology": {"sockets": 1, "cores": 2, "threads": 2}}), vm(vcpus=2),
                make_host(), LedgerView())  # fmt: skip
    assert "cpu.topology: 4 vCPUs in the topology, the VM has 2" in reasons(exc)


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(("nodes", "smt"), TOPOLOGIES)
def test_more_dedicated_vcpus_than_pcpus_is_refused(nodes, smt):
    host = make_host(nodes=nodes, cores=2, smt=smt)
    too_many = len(host.cpus) - len(host.housekeeping) + 1
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"placement": "dedicated"}), vm(vcpus=too_many), host, LedgerView())
    assert reasons(exc).startswith(f"cpu.placement: {too_many} dedicated vCPUs on a host with")


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_dedicated_refused_per_node_when_others_hold_the_pcpus(nodes):
    host = make_host(nodes=nodes, cores=3)
    held = {c: 99 for c in host.cpus if c not in host.housekeeping and c % 3 == 1}
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"placement": "dedicated"}), vm(vcpus=2 * nodes), host,
                LedgerView(dedicated=held))  # fmt: skip
    for n in range(nodes):
        assert f"node {n}: {2 * nodes} free pCPUs needed" in reasons(exc)


def test_shared_placement_needs_no_free_pcpus():
    host = make_host(nodes=1, cores=2)
    held = {c: 99 for c in host.cpus if c not in host.housekeeping}
    plan = compile(knobs(), vm(vcpus=8), host, LedgerView(dedicated=held))
    assert plan.domain["vcpupin"] == {}
    assert plan.allocations == {"cpus": [], "hugepages": []}


def test_shared_with_numa_floats_over_the_nodes_unheld_pcpus():
    host = make_host(nodes=2, cores=4)
    plan = compile(knobs(numa={"mode": "preferred"}), vm(vcpus=2), host,
                   LedgerView(dedicated={2: 99}))  # fmt: skip
    # nodes tie on memory: the lowest id; pCPU 0 is housekeeping, 2 another VM's
    assert plan.domain["numatune"] == {"mode": "preferred", "nodeset": "0", "memnodes": []}
    assert plan.domain["vcpupin"] == {"0": "1,3", "1": "1,3"}
    assert plan.domain["emulatorpin"] == "0"
    assert plan.allocations["cpus"] == []


def test_named_cpu_model_the_host_cannot_run_is_refused():
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"model": "EPYC-Genoa"}), vm(), make_host(), LedgerView())
    assert "cpu.model EPYC-Genoa" in reasons(exc)


def test_host_passthrough_refused_under_tcg():
    host = make_host()
    host.kvm_usable = False
    with pytest.raises(NoFit) as exc:
        compile(knobs(cpu={"model": "host-passthrough"}), vm(), host, LedgerView())
    assert "runs guests under TCG" in reasons(exc)


# --- live or restart ------------------------------------------------------------------------

BASE_XML = """<domain type='kvm'>
  <name>guest</name>
  <uuid>0b0c9d2e-1f3a-4b5c-8d6e-7f8091a2b3c4</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none' io='native' discard='unmap'/>
      <source file='/var/lib/libvirt/images/guest.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='virtio'/>
  </devices>
</domain>"""

DISKS = [{"target": "vda", "bus": "virtio", "format": "qcow2", "device": "disk"}]
NICS = [{"mac": "52:54:00:aa:bb:cc", "model": "virtio", "source_type": "network"}]


def test_pins_change_live_numatune_and_hugepages_need_a_restart():
    host = make_host(nodes=2, cores=4)
    k = knobs(cpu={"placement": "dedicated"}, numa={"mode": "strict"},
              memory={"hugepages": "2M", "balloon": NO_BALLOON})  # fmt: skip
    plan = compile(k, vm(running=True, disks=DISKS, nics=NICS), host, LedgerView(),
                   current_xml=BASE_XML)  # fmt: skip
    live_ops = [op["op"] for op in plan.live]
    assert live_ops.count("vcpupin") == 2
    assert {"op": "vcpupin", "vcpu": 0, "cpuset": plan.domain["vcpupin"]["0"]} in plan.live
    assert {"op": "emulatorpin", "cpuset": plan.domain["emulatorpin"]} in plan.live
    restart = " ".join(plan.restart)
    assert "NUMA memory policy" in restart
    assert "memory backing" in restart
    assert "memory balloon device" in restart
    assert plan.needs_restart
    assert "<numatune>" in plan.xml_after and "<hugepages>" in plan.xml_after
    assert "+" in plan.diff


def test_only_live_changes_need_no_restart():
    host = make_host(nodes=1, cores=4)
    k = knobs(cpu={"placement": "dedicated", "shares": 2048},
              disk={"throttle": {**DEFAULTS["disk"]["throttle"], "total_iops_sec": 500}})  # fmt: skip
    plan = compile(k, vm(running=True, disks=DISKS, nics=NICS), host, LedgerView(),
                   current_xml=BASE_XML)  # fmt: skip
    assert plan.restart == []
    ops = {op["op"] for op in plan.live}
    assert ops == {"vcpupin", "emulatorpin", "schedinfo", "blkiotune"}
    assert {"op": "blkiotune", "target": "vda", "params": {"total_iops_sec": 500}} in plan.live
    assert {"op": "schedinfo", "params": {"cpu_shares": 2048}} in plan.live


def test_a_stopped_vm_takes_everything_at_its_next_start():
    host = make_host(nodes=1, cores=4)
    k = knobs(cpu={"placement": "dedicated"}, numa={"mode": "strict"})
    plan = compile(k, vm(running=False, disks=DISKS, nics=NICS), host, LedgerView(),
                   current_xml=BASE_XML)  # fmt: skip
    assert plan.live == [] and plan.restart == []
    assert "<vcpupin" in plan.xml_after


# --- host actions ---------------------------------------------------------------------------


def test_irq_affinity_moves_irqs_to_the_housekeeping_set():
    host = make_host(nodes=2, cores=4, smt=True)
    plan = compile(knobs(cpu={"placement": "dedicated"}, host={"irq_affinity": True}), vm(),
                   host, LedgerView())  # fmt: skip
    assert {"kind": "tuning.irq_affinity", "cpus": sorted(host.housekeeping)} in plan.host_actions


def test_no_irq_action_unless_asked():
    plan = compile(knobs(cpu={"placement": "dedicated"}), vm(), make_host(), LedgerView())
    assert plan.host_actions == []


def test_host_sysfs_knobs_become_sysfs_actions():
    plan = compile(knobs(host={"halt_poll_ns": 200000, "thp": "madvise", "ksm": False}), vm(),
                   make_host(), LedgerView())  # fmt: skip
    by_path = {a["path"]: a for a in plan.host_actions}
    assert by_path["/sys/module/kvm/parameters/halt_poll_ns"]["value"] == 200000
    assert by_path["/sys/kernel/mm/transparent_hugepage/enabled"]["value"] == "madvise"
    assert by_path["/sys/kernel/mm/ksm/run"]["value"] == 0


def test_the_plan_round_trips_and_becomes_task_steps():
    host = make_host(nodes=1, cores=4)
    plan = compile(knobs(cpu={"placement": "dedicated"}, memory={"hugepages": "2M",
                                                                 "balloon": NO_BALLOON}),
                   vm(memory_mib=1024), host, LedgerView(), policy="fast", version=3)  # fmt: skip
    assert TuningPlan.from_dict(plan.to_dict()) == plan
    steps = plan.to_plan().steps
    assert [s.id for s in steps][-2:] == ["tune", "verify"]
    assert len(steps) == len(plan.host_actions) + 2
