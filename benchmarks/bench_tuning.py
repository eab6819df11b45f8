"""Tuning at scale: a fit report across 2,000 hosts, and the compiler's speed.

(a) **Fit across 2,000 hosts.** In a throwaway database: 2,000 online host rows
(``bulk_create``), each with a parsed topology of 2 NUMA nodes x 16 cores x 2 threads (64 pCPUs,
Linux numbering: node 0 holds 0-15 and their siblings 32-47), 128 GiB and 2 MiB hugepages per
node, and a ledger: on four hosts of five one VM of another tenant holds 4 to 16 dedicated
pCPUs of node 0 and 2 MiB pages there (``DedicatedCpu``, ``HugepagePool``,
``HugepageAllocation``); one host in fifty is full (every pCPU outside housekeeping held), so
the report has refusals too. Timed: ``tuning.services.fit_spec`` (the fit of a VM that does not
exist yet on every host the tenant may use, the report the API's ``POST /api/tuning/fit/``
answers) for 8 vCPUs, 16 GiB, one disk and one NIC with a dedicated built-in profile:

- ``latency-critical`` as a platform admin (all hosts), 50 runs after 3 warm-up runs — the
  goal: p95 < 50 ms;
- ``throughput`` as a platform admin (20 runs);
- ``latency-critical`` as a tenant operator whose tenant is allowed all 2,000 hosts (20 runs);
- the same with tenant quotas on dedicated pCPUs and hugepages set (10 runs: it makes two
  queries per host that fits).

``tuning.services.fit_vm`` (the report ``POST /api/vms/{id}/tuning/fit/`` answers: an existing
VM of that tenant, 8 vCPUs, 16 GiB, a disk and a NIC, on every host it may use, its own marked
current) is timed the same way (50 runs), with the same goal. The queries of each call are counted.
Then the phases of one report are timed apart (reading the host rows, with and without their
``numa_cells`` JSON; the ledgers; ``HostTopology.from_host``; ``compile``), and when the goal
is missed one more call is profiled (cProfile) and its top functions printed.

(b) **Compile.** ``tuning.compiler.compile`` (pure) for 10,000 plans built from plain
``HostTopology``/``VmFacts``/``LedgerView`` objects: the four built-in profiles, 1 to 16 vCPUs,
three ledger fills; total seconds and µs per plan (NoFit included) — goal: under 5 s. Then
1,000 plans with a current definition, where the compiler also writes the tuned XML, its diff
and the live/restart split of a running guest.

No Redis, no server, no libvirt: the figures are Python and PostgreSQL only.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BenchDatabase,
    BenchError,
    bench_environment,
    figure,
    header,
    note,
    run_main,
    setup_django_and_migrate,
    summary_ms,
)

HOSTS = 2_000
NODES = 2
CORES_PER_NODE = 16
THREADS = 2
NODE_MEMORY_MIB = 131_072
RUNS = 50
SIDE_RUNS = 20
QUOTA_RUNS = 10
SPEC_LABEL = "fit_spec latency-critical, platform admin"
VM_LABEL = "fit_vm latency-critical, platform admin"
WARMUP = 3
FIT_GOAL_MS = 50.0
PLANS = 10_000
XML_PLANS = 1_000
COMPILE_GOAL_S = 5.0
VM_VCPUS = 8
VM_MEMORY_MIB = 16_384


# --- topology -----------------------------------------------------------------------------------


def numa_cells(free_2m: dict[int, int] | None = None) -> list[dict]:
    """``Host.numa_cells`` as ``hosts.capabilities`` parses them: 2 nodes x 16 cores x 2 threads."""
    total_cpus = NODES * CORES_PER_NODE * THREADS
    half = total_cpus // THREADS
    cells = []
    for node in range(NODES):
        first = [node * CORES_PER_NODE + c for c in range(CORES_PER_NODE)]
        ids = sorted(first + [c + half for c in first])
        details = [
            {
                "id": cpu,
                "socket_id": node,
                "core_id": cpu % half - node * CORES_PER_NODE,
                "siblings": sorted({cpu % half, cpu % half + half}),
            }
            for cpu in ids
        ]
        pages_2m = 16_384
        free = pages_2m if free_2m is None else free_2m.get(node, pages_2m)
        cells.append({
            "id": node, "cpus": ids, "cpu_details": details, "memory_mib": NODE_MEMORY_MIB,
            "hugepages": [{"size_kib": 2048, "total": pages_2m, "free": free},
                          {"size_kib": 1048576, "total": 0, "free": 0}],
            "distances": {str(n): 10 if n == node else 21 for n in range(NODES)},
        })  # fmt: skip
    return cells


def housekeeping(cells: list[dict]) -> set[int]:
    """The default housekeeping set (``tuning.topology.default_housekeeping``)."""
    keep = set()
    for cell in cells:
        first = min(cell["cpu_details"], key=lambda d: d["id"])
        keep.update(first["siblings"])
    return keep


# --- (a) the fit report -------------------------------------------------------------------------


def populate() -> dict:
    """Users, tenants, 2,000 hosts, their ledgers; returns what the measurements need."""
    from django.contrib.auth import get_user_model

    from hosts.models import Host
    from panel.models import Membership, Tenant
    from tuning.compiler import hugepage_capacity
    from tuning.models import DedicatedCpu, HugepageAllocation, HugepagePool
    from tuning.topology import HostTopology
    from vms.models import Disk, Nic, VirtualMachine

    user_model = get_user_model()
    admin = user_model.objects.create_user("bench-tuning-admin", is_superuser=True, is_staff=True)
    operator = user_model.objects.create_user("bench-tuning-operator")
    tenant = Tenant.objects.create(name="bench-tuning")
    quota_tenant = Tenant.objects.create(
        name="bench-tuning-quota", max_dedicated_cpus=10_000, max_hugepages_mib=10_000_000
    )
    other = Tenant.objects.create(name="bench-tuning-others")
    for t in (tenant, quota_tenant):
        Membership.objects.create(user=operator, tenant=t, role="operator")

    cells = numa_cells()
    keep = housekeeping(cells)
    hosts = Host.objects.bulk_create(
        [
            Host(
                name=f"bench-tuning-{i:04d}", uri=f"qemu+ssh://root@10.{i >> 8}.{i & 255}.1/system",
                status="online", hypervisor="QEMU", arch="x86_64", cpu_model="Skylake-Server",
                sockets=NODES, cores=CORES_PER_NODE, threads=THREADS,
                cpus=NODES * CORES_PER_NODE * THREADS, memory_mib=NODES * NODE_MEMORY_MIB,
                numa_cells=cells, virt_types=["kvm", "qemu"],
                cpu_models=["Skylake-Server", "Cascadelake-Server"],
            )
            for i in range(HOSTS)
        ],
        batch_size=500,
    )  # fmt: skip
    tenant.allowed_hosts.set(hosts)
    quota_tenant.allowed_hosts.set(hosts)

    # One VM of another tenant per host (except one in five), holding pCPUs of node 0.
    vms, holders = [], []
    for i, host in enumerate(hosts):
        full = i % 50 == 1
        count = 4 * (i % 5)
        if not count and not full:
            continue
        vm = VirtualMachine(
            host=host, tenant=other, name=f"held-{i:04d}", uuid=uuid.UUID(int=i + 1, version=4),
            state="running", desired_state="running", vcpus=max(count, 1),
            max_vcpus=max(count, 1), memory_mib=2048 * max(count, 1), virt_type="kvm",
            os_type="hvm", arch="x86_64", machine="pc-q35-7.2", lifecycle="ready",
        )  # fmt: skip
        vms.append(vm)
        holders.append((host, vm, full, count))
    VirtualMachine.objects.bulk_create(vms, batch_size=1000)

    node0 = HostTopology.from_host(hosts[0]).nodes[0]
    free_node0 = [c for c in cells[0]["cpus"] if c not in keep]
    free_all = [c for cell in cells for c in cell["cpus"] if c not in keep]
    cpus, pools = [], []
    for host, vm, full, count in holders:
        held = free_all if full else free_node0[:count]
        for n, cpu in enumerate(held):
            node = 0 if cpu in cells[0]["cpus"] else 1
            cpus.append(DedicatedCpu(host=host, cpu=cpu, node=node, vm=vm, use="vcpu", serves=n))
        pools.append(
            HugepagePool(host=host, node=0, size_kib=2048,
                         capacity=hugepage_capacity(node0, 2048), allocated=vm.memory_mib // 2)
        )  # fmt: skip
    DedicatedCpu.objects.bulk_create(cpus, batch_size=5000)
    HugepagePool.objects.bulk_create(pools, batch_size=1000)
    HugepageAllocation.objects.bulk_create(
        [
            HugepageAllocation(pool=pool, vm=vm, pages=pool.allocated)
            for pool, (_h, vm, _f, _c) in zip(pools, holders, strict=True)
        ],
        batch_size=1000,
    )
    # The VM whose fit_vm is timed: the tenant's own, 8 vCPUs, 16 GiB, a disk and a NIC.
    tuned_vm = VirtualMachine.objects.create(
        host=hosts[3], tenant=tenant, name="bench-tuned", uuid=uuid.UUID(int=10**6, version=4),
        state="running", desired_state="running", vcpus=VM_VCPUS, max_vcpus=VM_VCPUS,
        memory_mib=VM_MEMORY_MIB, max_memory_mib=VM_MEMORY_MIB, virt_type="kvm", os_type="hvm",
        arch="x86_64", machine="pc-q35-7.2", lifecycle="ready",
    )  # fmt: skip
    Disk.objects.create(vm=tuned_vm, target="vda", bus="virtio", source_type="file",
                        source="/var/lib/libvirt/images/bench-tuned.qcow2", format="qcow2")  # fmt: skip
    Nic.objects.create(vm=tuned_vm, mac="52:54:00:00:10:01", model="virtio",
                       source_type="network", source="default")  # fmt: skip
    return {
        "admin": admin,
        "operator": operator,
        "tenant": tenant,
        "quota_tenant": quota_tenant,
        "hosts": hosts,
        "vms": len(vms),
        "dedicated": len(cpus),
        "pools": len(pools),
        "tuned_vm": tuned_vm,
    }


def timed(fn, runs: int = RUNS, warmup: int = WARMUP) -> tuple[list[float], object, int]:
    """``runs`` timings of ``fn()`` after ``warmup`` calls; the last result; queries per call."""
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    for _ in range(warmup):
        fn()
    with CaptureQueriesContext(connection) as ctx:
        result = fn()
    queries = len(ctx.captured_queries)
    reset_queries()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - start)
    return samples, result, queries


def print_summary(label: str, samples: list[float], queries: int) -> dict:
    s = summary_ms(samples)
    figure(f"{label} p50", s["p50"], "ms", 1)
    figure(f"{label} p95", s["p95"], "ms", 1)
    figure(f"{label} mean / min / max", f"{s['mean']:.1f} / {s['min']:.1f} / {s['max']:.1f} ms")
    figure(f"{label} SQL queries", queries, "queries")
    return s


def profile(fn, top: int = 18) -> None:
    """cProfile one call of ``fn``; the top functions by cumulative and by own time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    for key, title in (("cumulative", "cumulative time"), ("tottime", "own time")):
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
        note(f"profile of one call, by {title}:")
        for line in out.getvalue().splitlines():
            if line.strip() and not line.lstrip().startswith(("Ordered by", "List reduced")):
                print("    " + line.rstrip(), flush=True)


def measure_fit(data: dict) -> bool:
    from tuning import services

    spec = {"vcpus": VM_VCPUS, "memory_mib": VM_MEMORY_MIB, "disks": [{}], "nics": [{}]}

    def fit(user, tenant, policy):
        return lambda: services.fit_spec(user, tenant, policy=policy, **spec)

    header(f"fit of one VM ({VM_VCPUS} vCPUs, {VM_MEMORY_MIB} MiB) across {HOSTS} hosts")
    # (label, call, runs): the goal's two in full, the others with fewer runs (the quota
    # variant makes queries per host)
    vm = data["tuned_vm"]
    variants = [
        (SPEC_LABEL, fit(data["admin"], data["tenant"], "latency-critical"), RUNS),
        (VM_LABEL, lambda: services.fit_vm(data["admin"], vm, "latency-critical"), RUNS),
        ("fit_spec throughput, platform admin",
         fit(data["admin"], data["tenant"], "throughput"), SIDE_RUNS),
        ("fit_spec latency-critical, tenant operator",
         fit(data["operator"], data["tenant"], "latency-critical"), SIDE_RUNS),
        ("fit_spec latency-critical, tenant operator, tenant quotas set",
         fit(data["operator"], data["quota_tenant"], "latency-critical"), QUOTA_RUNS),
    ]  # fmt: skip
    results = {}
    for label, fn, runs in variants:
        samples, report, queries = timed(fn, runs=runs, warmup=1 if runs < RUNS else WARMUP)
        rows = report["hosts"]
        if len(rows) != HOSTS:
            raise BenchError(f"{label}: the report has {len(rows)} hosts, expected {HOSTS}")
        fits = sum(1 for r in rows if r["fits"])
        if not fits or fits == HOSTS:
            raise BenchError(f"{label}: {fits} of {HOSTS} hosts fit; the ledger was not read")
        header(label)
        note(f"{len(samples)} runs")
        s = print_summary(label, samples, queries)
        figure(f"{label}: hosts that fit", f"{fits} of {HOSTS}")
        figure(f"{label}: per host", s["p50"] * 1000 / HOSTS, "µs", 1)
        results[label] = (s, fn, report)

    _s, fn, report = results[SPEC_LABEL]
    refused = next(r for r in report["hosts"] if not r["fits"])
    note(f"a refusal: {refused['host']}: {'; '.join(refused['reasons'])[:160]}")
    best = report["hosts"][0]
    note(f"first host (packing): {best['host']}, {best['dedicated']} pCPUs promised")
    current = [r["host"] for r in results[VM_LABEL][2]["hosts"] if r["current"]]
    note(f"fit_vm marks its own host current: {', '.join(current)}")

    header("result: fit across hosts")
    figure("goal: p95 below", FIT_GOAL_MS, "ms", 0)
    ok = True
    for label in (SPEC_LABEL, VM_LABEL):
        p95 = results[label][0]["p95"]
        passed = p95 < FIT_GOAL_MS
        ok = ok and passed
        figure(f"{label} p95", f"{p95:.1f} ms {'PASS' if passed else 'FAIL'}")
    print("PASS" if ok else "FAIL", flush=True)
    breakdown(data)
    if not ok:
        profile(fn)
    return ok


def breakdown(data: dict) -> None:
    """The phases of one fit report, timed apart with the functions ``fit_hosts`` calls
    (median of 5): reading the host rows (with and without the JSON fields the topology does
    not need), the ledgers, ``HostTopology.from_host``, ``compile``."""
    import json
    import statistics

    from hosts.selectors import hosts_for
    from tuning import ledger, topology
    from tuning.compiler import NoFit, compile
    from tuning.profiles import BUILTINS
    from tuning.topology import HostTopology, VmFacts

    knobs = BUILTINS["latency-critical"]
    facts = VmFacts(
        vm_id=None, name="new", vcpus=VM_VCPUS, memory_mib=VM_MEMORY_MIB,
        disks=[{"target": "vda", "bus": "virtio", "device": "disk"}],
        nics=[{"mac": "52:54:00:00:00:00", "model": "virtio"}],
    )  # fmt: skip
    needed = ("name", "status", "numa_cells", "housekeeping_cpus", "virt_types", "cpu_models",
              "simulated", "kvm_note")  # fmt: skip
    phases: dict[str, list[float]] = {}

    def clock(label, fn):
        start = time.perf_counter()
        out = fn()
        phases.setdefault(label, []).append(time.perf_counter() - start)
        return out

    for _ in range(5):
        qs = hosts_for(data["admin"], data["tenant"]).order_by("name")
        hosts = clock("read 2,000 host rows (every column)", lambda qs=qs: list(qs))
        clock("read 2,000 host rows (.only() what the topology reads)",
              lambda qs=qs: list(qs.only(*needed)))  # fmt: skip
        clock("read 2,000 host rows (.only(), numa_cells deferred)",
              lambda qs=qs: list(qs.only(*needed).defer("numa_cells")))  # fmt: skip
        views = clock("ledger.views (2 queries)", lambda h=hosts: ledger.views([x.pk for x in h]))
        clock("topology.topologies x 2,000 (kept between reports)",
              lambda qs=qs: topology.topologies(list(qs.values_list(*topology.ROW_FIELDS))))  # fmt: skip
        topos = clock("HostTopology.from_host x 2,000",
                      lambda h=hosts: [HostTopology.from_host(x) for x in h])  # fmt: skip

        def compile_all(topos=topos, views=views):
            for topo in topos:
                try:
                    compile(knobs, facts, topo, views[topo.host_id])
                except NoFit:
                    pass

        clock("compile x 2,000 (every host; a report compiles once per alike host)", compile_all)
    header("where the time of one fit report goes (latency-critical, median of 5)")
    for label, samples in phases.items():
        figure(label, statistics.median(samples) * 1000, "ms", 1)
    note(f"numa_cells of one host: {len(json.dumps(hosts[0].numa_cells))} characters of JSON")


# --- (b) the compiler ---------------------------------------------------------------------------

DOMAIN_XML = """<domain type='kvm'>
  <name>bench</name>
  <uuid>00000000-0000-4000-8000-000000000001</uuid>
  <memory unit='MiB'>{memory}</memory>
  <currentMemory unit='MiB'>{memory}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <cpu mode='host-model' check='partial'/>
  <clock offset='utc'/>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/bench.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:00:00:01'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='virtio'/>
  </devices>
</domain>"""


def compile_inputs():
    """(knobs, facts, topology, ledger) cases: 4 profiles x 5 sizes x 3 ledger fills."""
    from tuning.profiles import BUILTINS
    from tuning.topology import CpuInfo, HostTopology, LedgerView, NodeInfo, VmFacts

    def node(cell: dict) -> NodeInfo:
        cpus = [
            CpuInfo(id=d["id"], core_id=d["core_id"], socket_id=d["socket_id"],
                    siblings=tuple(d["siblings"]))
            for d in cell["cpu_details"]
        ]  # fmt: skip
        pages = {p["size_kib"]: {"total": p["total"], "free": p["free"]} for p in cell["hugepages"]}
        return NodeInfo(id=cell["id"], cpus=cpus, memory_mib=cell["memory_mib"], hugepages=pages)

    cells = numa_cells()
    nodes = [node(cell) for cell in cells]
    keep = frozenset(housekeeping(cells))
    topo = HostTopology(host_id=1, name="bench", nodes=nodes, housekeeping=keep,
                        cpu_models=["Skylake-Server"], virt_types=["kvm", "qemu"])  # fmt: skip
    free = [c for n in nodes for c in n.cpu_ids if c not in keep]
    ledgers = [
        LedgerView(),
        LedgerView(dedicated={c: 900 for c in free[:8]},
                   hugepages={(0, 2048): {"capacity": 0, "allocated": 4096}}),
        LedgerView(dedicated={c: 901 for c in free[:40]},
                   hugepages={(0, 2048): {"capacity": 0, "allocated": 40_000},
                              (1, 2048): {"capacity": 0, "allocated": 20_000}}),
    ]  # fmt: skip
    cases = []
    for name, knobs in sorted(BUILTINS.items()):
        for vcpus in (1, 2, 4, 8, 16):
            facts = VmFacts(
                vm_id=1, name="bench", vcpus=vcpus, memory_mib=2048 * vcpus, running=True,
                disks=[{"target": "vda", "bus": "virtio", "format": "qcow2", "device": "disk"}],
                nics=[{"mac": "52:54:00:00:00:01", "model": "virtio", "source_type": "network"}],
            )  # fmt: skip
            for led in ledgers:
                cases.append((name, knobs, facts, topo, led))
    return cases


def measure_compile() -> bool:
    from tuning.compiler import NoFit, compile

    cases = compile_inputs()
    header(
        f"compile: {PLANS} plans ({len(cases)} distinct cases: 4 profiles x 5 sizes x 3 ledgers)"
    )
    for _name, knobs, facts, topo, led in cases:  # warm-up
        try:
            compile(knobs, facts, topo, led)
        except NoFit:
            pass
    refused = 0
    start = time.perf_counter()
    for i in range(PLANS):
        name, knobs, facts, topo, led = cases[i % len(cases)]
        try:
            compile(knobs, facts, topo, led, policy=name, version=1)
        except NoFit:
            refused += 1
    total = time.perf_counter() - start
    figure("plans compiled", PLANS, "plans")
    figure("of them NoFit", refused, "plans")
    figure("total", total, "s", 3)
    figure("per plan", total * 1e6 / PLANS, "µs", 1)

    header(
        f"compile with the current definition: {XML_PLANS} plans (tuned XML, diff, live/restart)"
    )
    xml_cases = [
        (c, DOMAIN_XML.format(memory=c[2].memory_mib, vcpus=c[2].vcpus)) for c in cases
    ]  # fmt: skip
    refused_xml = 0
    live_ops = restarts = 0
    start = time.perf_counter()
    for i in range(XML_PLANS):
        (name, knobs, facts, topo, led), xml = xml_cases[i % len(xml_cases)]
        try:
            plan = compile(knobs, facts, topo, led, policy=name, version=1, current_xml=xml)
            live_ops += len(plan.live)
            restarts += bool(plan.restart)
        except NoFit:
            refused_xml += 1
    xml_total = time.perf_counter() - start
    figure("plans compiled", XML_PLANS, "plans")
    figure("of them NoFit", refused_xml, "plans")
    figure("plans needing a restart", restarts, "plans")
    figure("live changes listed", live_ops, "changes")
    figure("total", xml_total, "s", 3)
    figure("per plan", xml_total * 1e6 / XML_PLANS, "µs", 1)

    header("result: compile")
    figure(f"{PLANS} plans", total, "s", 3)
    figure("goal: below", COMPILE_GOAL_S, "s", 1)
    ok = total < COMPILE_GOAL_S
    print("PASS" if ok else "FAIL", flush=True)
    return ok


def main() -> None:
    from_scratch = time.perf_counter()
    with BenchDatabase(prefix="paddock_bench_tuning") as db, bench_environment(db):
        header(f"Tuning benchmark ({HOSTS} hosts, {PLANS} plans)")
        note(f"database {db.name} (created for this run, dropped at the end)")
        setup_django_and_migrate()
        figure("create and migrate database", time.perf_counter() - from_scratch, "s")

        start = time.perf_counter()
        data = populate()
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        figure("populate", time.perf_counter() - start, "s")
        figure("hosts", HOSTS, "hosts")
        figure("pCPUs per host", NODES * CORES_PER_NODE * THREADS,
               f"({NODES} nodes x {CORES_PER_NODE} cores x {THREADS} threads)")  # fmt: skip
        figure("VMs holding pCPUs", data["vms"], "VMs")
        figure("dedicated pCPU rows", data["dedicated"], "rows")
        figure("hugepage pools", data["pools"], "rows")

        fit_ok = measure_fit(data)
        compile_ok = measure_compile()
        failed = [name for name, ok in (("fit", fit_ok), ("compile", compile_ok)) if not ok]
        if failed:
            raise BenchError(f"goal missed: {', '.join(failed)}")


if __name__ == "__main__":
    run_main(main)
