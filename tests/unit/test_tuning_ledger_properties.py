"""Property tests of the per-host ledger (tuning.ledger) against its database invariants.

Random sequences of reserve (a tune task's promises), release (the VM deleted) and
release_task (the tune task failed) run against a plain model of what should be held. After
every step: no pCPU of a host is held by two VMs, no NUMA node promises more pages than its
capacity, each pool's counter is the sum of its allocations, and the rows are the model's.
Releasing everything leaves the ledger empty. The constraints themselves refuse a duplicate
pCPU or an overcommitted pool written directly, without the ledger code.

Each hypothesis example runs in a savepoint that is rolled back, so examples are independent
on SQLite and PostgreSQL alike; the hosts, VMs and tasks are made once per test.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hosts.models import Host
from panel.models import Task
from tuning import ledger
from tuning.compiler import NoFit, compile, hugepage_capacity
from tuning.knobs import DEFAULTS, clean
from tuning.models import DedicatedCpu, HugepageAllocation, HugepagePool
from tuning.topology import CpuInfo, HostTopology, NodeInfo, VmFacts
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db(transaction=False)

PROPERTY = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
G1 = 1048576
CPUS_PER_NODE = 4
NODES = 2


def topology(host_id: int, name: str) -> HostTopology:
    """Two nodes of four pCPUs and 64 MiB: 28 x 2 MiB pages each; 3 x 1 GiB on node 0 only."""
    nodes = [
        NodeInfo(
            id=n,
            cpus=[
                CpuInfo(c, c, n, (c,)) for c in range(n * CPUS_PER_NODE, (n + 1) * CPUS_PER_NODE)
            ],
            memory_mib=64,
            hugepages={G1: {"total": 3 if n == 0 else 0, "free": 3 if n == 0 else 0}},
        )
        for n in range(NODES)
    ]
    return HostTopology(host_id=host_id, name=name, nodes=nodes, housekeeping=frozenset({0, 4}))


@dataclass
class World:
    hosts: list[Host]
    topologies: dict[int, HostTopology]
    vms: list[VirtualMachine]
    tasks: list[Task]

    def capacity(self, host_id: int, node: int, size_kib: int) -> int:
        return hugepage_capacity(self.topologies[host_id].nodes[node], size_kib)


@pytest.fixture
def world(tenant) -> World:
    hosts = [Host.objects.create(name=f"ledger{i}", uri=f"test:///ledger-{i}") for i in range(2)]
    # three VMs share host 0 (they compete for its pCPUs and pages); one lives on host 1
    vms = [
        VirtualMachine.objects.create(
            host=hosts[0 if i < 3 else 1], tenant=tenant, name=f"vm{i}", uuid=uuid.uuid4(),
            vcpus=2, memory_mib=16,
        )
        for i in range(4)
    ]  # fmt: skip
    tasks = [Task.objects.create(kind="vm.tune", host=hosts[0]) for _ in range(3)]
    return World(hosts, {h.pk: topology(h.pk, h.name) for h in hosts}, vms, tasks)


def isolated(example) -> None:
    """Run ``example`` in a savepoint that is always rolled back."""
    with transaction.atomic():
        sid = transaction.savepoint()
        try:
            example()
        finally:
            transaction.savepoint_rollback(sid)


# --- the model ------------------------------------------------------------------------------


class Model:
    """What the ledger should hold: pCPUs and page allocations, each with the task that asked."""

    def __init__(self, world: World):
        self.world = world
        self.cpus: dict[tuple[int, int], tuple[int, int | None]] = {}  # (host, cpu) -> (vm, task)
        self.pages: dict[tuple[int, int, int, int], tuple[int, int | None]] = {}
        # ^ (vm, host, node, size) -> (pages, task)

    def fits(self, vm, allocations) -> bool:
        """Whether the database will accept ``allocations`` for ``vm`` (others' rows kept)."""
        others = {cpu for (h, cpu), (v, _t) in self.cpus.items() if h == vm.host_id and v != vm.pk}
        if others & {a["cpu"] for a in allocations["cpus"]}:
            return False
        for a in allocations["hugepages"]:
            held = sum(
                p
                for (v, h, n, s), (p, _t) in self.pages.items()
                if (h, n, s) == (vm.host_id, a["node"], a["size_kib"]) and v != vm.pk
            )
            if held + a["pages"] > self.world.capacity(vm.host_id, a["node"], a["size_kib"]):
                return False
        return True

    def reserve(self, vm, allocations, task) -> None:
        self.release(vm)
        tid = task.pk if task else None
        for a in allocations["cpus"]:
            self.cpus[(vm.host_id, a["cpu"])] = (vm.pk, tid)
        for a in allocations["hugepages"]:
            self.pages[(vm.pk, vm.host_id, a["node"], a["size_kib"])] = (a["pages"], tid)

    def release(self, vm) -> None:
        self.cpus = {k: v for k, v in self.cpus.items() if v[0] != vm.pk}
        self.pages = {k: v for k, v in self.pages.items() if k[0] != vm.pk}

    def release_task(self, task) -> None:
        self.cpus = {k: v for k, v in self.cpus.items() if v[1] != task.pk}
        self.pages = {k: v for k, v in self.pages.items() if v[1] != task.pk}


def check_invariants(world: World, model: Model) -> None:
    # no pCPU of a host held twice (the unique constraint, seen from the rows)
    dupes = DedicatedCpu.objects.values("host", "cpu").annotate(n=Count("id")).filter(n__gt=1)
    assert not dupes.exists()
    # every pool within capacity, and its counter the sum of its allocations
    for pool in HugepagePool.objects.annotate(total=Sum("allocations__pages")):
        assert 0 <= pool.allocated <= pool.capacity
        assert pool.allocated == (pool.total or 0)
        assert pool.capacity == world.capacity(pool.host_id, pool.node, pool.size_kib)
    # the rows are the model's
    cpus = {
        (h, c): (v, t)
        for h, c, v, t in DedicatedCpu.objects.values_list("host_id", "cpu", "vm_id", "task_id")
    }
    assert cpus == model.cpus
    pages = {
        (v, h, n, s): (p, t)
        for v, h, n, s, p, t in HugepageAllocation.objects.values_list(
            "vm_id", "pool__host_id", "pool__node", "pool__size_kib", "pages", "task_id"
        )
    }
    assert pages == model.pages
    # and the views the compiler reads agree with them
    views = ledger.views([h.pk for h in world.hosts])
    for host in world.hosts:
        held = {c: v for (h, c), (v, _t) in model.cpus.items() if h == host.pk}
        assert ledger.view(host).dedicated == held
        assert views[host.pk].dedicated == held


def assert_empty(world: World) -> None:
    assert not DedicatedCpu.objects.exists()
    assert not HugepageAllocation.objects.exists()
    assert set(HugepagePool.objects.values_list("allocated", flat=True)) <= {0}
    for host in world.hosts:
        assert ledger.view(host).dedicated == {}
        assert ledger.view(host).hugepages == {}
        assert ledger.held_by(host)["cpus"] == {}
    assert all(
        not v.dedicated and not v.hugepages
        for v in ledger.views([h.pk for h in world.hosts]).values()
    )


# --- operations -----------------------------------------------------------------------------

allocation = st.builds(
    lambda cpus, pages: {
        "cpus": [{"cpu": c, "node": c // CPUS_PER_NODE, "use": "vcpu", "serves": i}
                 for i, c in enumerate(sorted(cpus))],
        "hugepages": [{"node": n, "size_kib": s, "pages": p} for (n, s), p in sorted(pages.items())],
    },
    st.sets(st.integers(0, NODES * CPUS_PER_NODE - 1), max_size=4),
    st.dictionaries(st.tuples(st.integers(0, NODES - 1), st.sampled_from([2048, G1])),
                    st.integers(1, 20), max_size=2),
)  # fmt: skip
task_index = st.none() | st.integers(0, 2)
operation = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 3), allocation, task_index),
    st.tuples(st.just("tune"), st.integers(0, 3), st.integers(1, 3), st.booleans(), task_index),
    st.tuples(st.just("release"), st.integers(0, 3)),
    st.tuples(st.just("release_task"), st.integers(0, 2)),
)

_knobs = copy.deepcopy(DEFAULTS)
_knobs["cpu"]["placement"] = "dedicated"
_knobs["numa"]["mode"] = "strict"
TUNE_PLAIN = clean(_knobs)
_knobs["memory"].update(hugepages="2M", balloon={"enabled": False, "period": 0,
                                                 "autodeflate": False})  # fmt: skip
TUNE_PAGES = clean(_knobs)


def run(world: World, model: Model, op) -> None:
    kind, *args = op
    if kind == "reserve":
        vm_i, allocations, task_i = args
        vm = world.vms[vm_i]
        task = world.tasks[task_i] if task_i is not None else None
        if model.fits(vm, allocations):
            ledger.reserve(vm, vm.host, world.topologies[vm.host_id], allocations, task=task)
            model.reserve(vm, allocations, task)
            event("reserve accepted")
        else:
            event("reserve refused")
            with pytest.raises(ledger.LedgerConflict):
                ledger.reserve(vm, vm.host, world.topologies[vm.host_id], allocations, task=task)
            # the whole promise is refused: the VM keeps what it held
    elif kind == "tune":
        # what the services do: compile against the ledger without the VM, then reserve;
        # a plan the compiler makes is one the database accepts
        vm_i, vcpus, pages, task_i = args
        vm = world.vms[vm_i]
        task = world.tasks[task_i] if task_i is not None else None
        topo = world.topologies[vm.host_id]
        facts = VmFacts(vm_id=vm.pk, name=vm.name, vcpus=vcpus, memory_mib=16)
        try:
            plan = compile(TUNE_PAGES if pages else TUNE_PLAIN, facts, topo,
                           ledger.view(vm.host, exclude_vm=vm))  # fmt: skip
        except NoFit:
            event("tune: no fit")
            return
        assert not {a["cpu"] for a in plan.allocations["cpus"]} & topo.housekeeping
        assert model.fits(vm, plan.allocations)
        ledger.reserve(vm, vm.host, topo, plan.allocations, task=task)
        model.reserve(vm, plan.allocations, task)
        event("tune: reserved")
    elif kind == "release":
        vm = world.vms[args[0]]
        ledger.release(vm)
        model.release(vm)
    else:
        task = world.tasks[args[0]]
        ledger.release_task(task)
        model.release_task(task)


@PROPERTY
@given(ops=st.lists(operation, max_size=12))
def test_random_reserve_release_sequences_keep_the_ledger_invariants(world, ops):
    def example():
        model = Model(world)
        for op in ops:
            run(world, model, op)
            check_invariants(world, model)
        for vm in world.vms:
            ledger.release(vm)
        assert_empty(world)

    isolated(example)


@PROPERTY
@given(ops=st.lists(operation, max_size=12))
def test_failing_every_task_leaves_only_what_no_task_asked_for(world, ops):
    def example():
        model = Model(world)
        for op in ops:
            run(world, model, op)
        for task in world.tasks:
            ledger.release_task(task)
            model.release_task(task)
        assert not DedicatedCpu.objects.filter(task__isnull=False).exists()
        assert not HugepageAllocation.objects.filter(task__isnull=False).exists()
        check_invariants(world, model)

    isolated(example)


# --- the database refuses what the code would never write ----------------------------------


@PROPERTY
@given(cpu=st.integers(0, 7), first=st.integers(0, 2), second=st.integers(0, 2))
def test_a_pcpu_can_be_dedicated_once_per_host(world, cpu, first, second):
    def example():
        host = world.hosts[0]
        a, b = world.vms[first], world.vms[second]
        DedicatedCpu.objects.create(host=host, cpu=cpu, vm=a)
        with pytest.raises(IntegrityError), transaction.atomic():
            DedicatedCpu.objects.create(host=host, cpu=cpu, vm=b)
        # the same pCPU number on another host is another pCPU
        DedicatedCpu.objects.create(host=world.hosts[1], cpu=cpu, vm=world.vms[3])
        assert DedicatedCpu.objects.filter(cpu=cpu).count() == 2

    isolated(example)


@PROPERTY
@given(capacity=st.integers(0, 50), allocated=st.integers(0, 100), grow=st.integers(0, 60))
def test_a_pool_never_holds_more_than_its_capacity(world, capacity, allocated, grow):
    def example():
        host = world.hosts[0]
        if allocated > capacity:
            with pytest.raises(IntegrityError), transaction.atomic():
                HugepagePool.objects.create(
                    host=host, node=0, size_kib=2048, capacity=capacity, allocated=allocated
                )
            return
        pool = HugepagePool.objects.create(
            host=host, node=0, size_kib=2048, capacity=capacity, allocated=allocated
        )
        grown = HugepagePool.objects.filter(pk=pool.pk)
        if allocated + grow > capacity:
            with pytest.raises(IntegrityError), transaction.atomic():
                grown.update(allocated=allocated + grow)
        else:
            grown.update(allocated=allocated + grow)
        pool.refresh_from_db()
        assert pool.allocated <= pool.capacity
        assert pool.allocated in (allocated, allocated + grow)

    isolated(example)


def test_pools_and_allocations_are_unique_and_positive(world):
    def example():
        host, vm = world.hosts[0], world.vms[0]
        pool = HugepagePool.objects.create(host=host, node=0, size_kib=2048, capacity=10)
        with pytest.raises(IntegrityError), transaction.atomic():
            HugepagePool.objects.create(host=host, node=0, size_kib=2048, capacity=10)
        HugepageAllocation.objects.create(pool=pool, vm=vm, pages=2)
        with pytest.raises(IntegrityError), transaction.atomic():
            HugepageAllocation.objects.create(pool=pool, vm=vm, pages=3)
        with pytest.raises(IntegrityError), transaction.atomic():
            HugepageAllocation.objects.create(pool=pool, vm=world.vms[1], pages=0)

    isolated(example)


def test_a_refused_reserve_keeps_what_the_vm_held(world):
    def example():
        a, b = world.vms[0], world.vms[1]
        topo = world.topologies[a.host_id]
        mine = {"cpus": [{"cpu": 1, "node": 0}], "hugepages": [{"node": 0, "size_kib": G1,
                                                                  "pages": 2}]}  # fmt: skip
        ledger.reserve(a, a.host, topo, mine)
        # b asks for a's pCPU: refused
        with pytest.raises(ledger.LedgerConflict, match="ledger0 can no longer promise"):
            ledger.reserve(b, b.host, topo, {"cpus": [{"cpu": 1, "node": 0}], "hugepages": []})
        # a asks again for more 1 GiB pages than node 0 has: refused, a keeps its old promise
        more = {"cpus": [{"cpu": 2, "node": 0}], "hugepages": [{"node": 0, "size_kib": G1,
                                                                  "pages": 4}]}  # fmt: skip
        with pytest.raises(ledger.LedgerConflict):
            ledger.reserve(a, a.host, topo, more)
        assert ledger.held_by(a.host) == {
            "cpus": {1: (a.pk, "vcpu")},
            "pages": {(0, G1): {"capacity": 3, "allocated": 2}},
        }
        # node 1 has no 1 GiB pages at all
        with pytest.raises(ledger.LedgerConflict):
            ledger.reserve(b, b.host, topo, {"cpus": [], "hugepages": [{"node": 1,
                                                                       "size_kib": G1,
                                                                       "pages": 1}]})  # fmt: skip

    isolated(example)
