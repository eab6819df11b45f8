"""The tuning proof (metrics before and after each applied change) and the advisor's rules."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from hosts.models import Host, StoragePool, Volume
from metrics.store import get_store, reset_store
from panel.models import Task
from tuning import advisor, proof, services
from tuning.models import TuningPolicyVersion, VmTuning
from tuning.profiles import ensure_builtins
from vms.models import Disk, VirtualMachine

pytestmark = pytest.mark.django_db

DAY = 86400
T = 1_700_000_000 - 1_700_000_000 % DAY + 12 * 3600  # noon UTC: aligned on every tier
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _fresh_store():
    reset_store()
    yield
    reset_store()


def _cell(node: int, cpus: list[int]) -> dict:
    return {
        "id": node,
        "cpus": cpus,
        "memory_mib": 4096,
        "cpu_details": [{"id": c, "core_id": c, "socket_id": node, "siblings": [c]} for c in cpus],
        "hugepages": [],
    }


@pytest.fixture
def host(db):
    return Host.objects.create(
        name="hv1",
        uri="test:///default",
        numa_cells=[_cell(0, [0, 1, 2, 3]), _cell(1, [4, 5, 6, 7])],
        virt_types=["kvm"],
    )


def _xml(
    *,
    vcpus=2,
    memory_mib=2048,
    cputune="",
    numatune="",
    cache="none",
    nic_driver="<driver name='vhost' queues='2'/>",
    balloon="<memballoon model='none'/>",
    backing="<backingStore/>",
) -> str:
    return f"""<domain type='kvm'>
  <name>vm</name><uuid>{uuid.uuid4()}</uuid>
  <memory unit='KiB'>{memory_mib * 1024}</memory>
  <vcpu placement='static'>{vcpus}</vcpu>
  {cputune}{numatune}
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='{cache}'/>
      <source file='/var/lib/libvirt/images/vm.qcow2'/>
      {backing}
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:01'/>
      <source network='default'/>
      <model type='virtio'/>
      {nic_driver}
    </interface>
    {balloon}
  </devices>
</domain>"""


@pytest.fixture
def make_vm(host, tenant):
    def make(name="vm", vcpus=2, memory_mib=2048, **xml) -> VirtualMachine:
        return VirtualMachine.objects.create(
            host=host, tenant=tenant, name=name, uuid=uuid.uuid4(), vcpus=vcpus,
            max_vcpus=vcpus, memory_mib=memory_mib, max_memory_mib=memory_mib,
            definition=_xml(vcpus=vcpus, memory_mib=memory_mib, **xml),
        )  # fmt: skip

    return make


def _ingest(vm, start: int, values: list[dict], step: int = 10) -> None:
    store = get_store()
    for i, point in enumerate(values):
        store.ingest("vm", start + i * step, {vm.pk: point})


def _rules(vm, **kwargs) -> dict:
    return {r["rule"]: r for r in advisor.recommendations(vm, **kwargs)}


def _critical(vm) -> None:
    VmTuning.objects.create(vm=vm, policy=ensure_builtins()["latency-critical"])


# --- proof ------------------------------------------------------------------------------------


def test_a_change_with_history_on_both_sides_gives_the_windows_averages(make_vm):
    vm = make_vm()
    policy = ensure_builtins()["throughput"]
    version = TuningPolicyVersion.objects.get(policy=policy, version=policy.version)
    plan = {
        "policy": "throughput",
        "version": policy.version,
        "domain": {
            "vcpupin": {"0": "2", "1": "3"},
            "numatune": {"mode": "strict", "nodeset": "0"},
            "memory_backing": {"pages": [{"size_kib": 2048, "nodeset": ""}]},
            "disks": {"vda": {"cache": "none", "io": "native"}},
        },
        "allocations": {"cpus": [{"cpu": 2, "use": "vcpu"}, {"cpu": 3, "use": "vcpu"}]},
    }
    VmTuning.objects.create(
        vm=vm, policy=policy, applied_version=version, plan=plan,
        applied_at=datetime.fromtimestamp(T, UTC),
    )  # fmt: skip
    # 10 rows before the change (alternating 10 and 30 % CPU, 8 % delay), 6 rows after
    before = [
        {"cpu_percent": 10.0 if i % 2 else 30.0, "vcpu_delay_percent": 8.0, "net_rx_bps": 1000.0}
        for i in range(10)
    ]
    after = [{"cpu_percent": 12.0, "vcpu_delay_percent": 0.5 + i} for i in range(6)]
    _ingest(vm, T - 100, before)
    _ingest(vm, T, after)

    out = proof.proof_for(vm, now=T + 60)
    assert len(out["changes"]) == 1
    change = out["changes"][0]
    assert change["policy"] == "throughput" and change["version"] == policy.version
    assert change["applied_at"] == datetime.fromtimestamp(T, UTC).isoformat()
    assert change["window"]["resolution"] == 10 and change["window"]["range"] == "hour"
    assert change["status"] == "ok"
    assert change["before"]["cpu_percent"] == {"avg": 20.0, "max": 30.0, "points": 10}
    assert change["before"]["vcpu_delay_percent"] == {"avg": 8.0, "max": 8.0, "points": 10}
    assert change["after"]["cpu_percent"] == {"avg": 12.0, "max": 12.0, "points": 6}
    assert change["after"]["vcpu_delay_percent"] == {"avg": 3.0, "max": 5.5, "points": 6}
    assert change["delta"]["cpu_percent"] == -8.0
    assert change["delta"]["vcpu_delay_percent"] == -5.0
    # net_rx_bps exists only before: no delta is made up
    assert change["before"]["net_rx_bps"]["points"] == 10
    assert change["after"]["net_rx_bps"] == {"avg": None, "max": None, "points": 0}
    assert change["delta"]["net_rx_bps"] is None
    assert "disk_latency" not in change["before"]
    assert change["plan_summary"] == {
        "placement": "dedicated", "pins": {"0": "2", "1": "3"}, "numa": "strict",
        "hugepages": "2M", "disk_cache": "none", "disk_io": "native",
    }  # fmt: skip


def test_a_change_without_history_says_insufficient_data(make_vm):
    vm = make_vm()
    VmTuning.objects.create(vm=vm, plan={}, applied_at=datetime.fromtimestamp(T, UTC))
    change = proof.proof_for(vm, now=T + 600)["changes"][0]
    assert change["status"] == "insufficient data"
    for name in proof.PROOF_METRICS:
        assert change["before"][name] == {"avg": None, "max": None, "points": 0}
        assert change["after"][name] == {"avg": None, "max": None, "points": 0}
        assert change["delta"][name] is None
    assert change["plan_summary"]["placement"] == "shared"
    assert change["plan_summary"]["hugepages"] == "none"


def test_no_applied_change_means_no_proof(make_vm):
    assert proof.proof_for(make_vm(), now=T)["changes"] == []


def test_past_tune_tasks_are_changes_newest_first_read_from_the_minute_tier(make_vm):
    vm = make_vm()
    older = T - 6 * 3600
    newer = T - 3 * 3600
    for when, version in ((older, 1), (newer, 2)):
        Task.objects.create(
            kind="vm.tune", state="succeeded", vm=vm,
            finished=datetime.fromtimestamp(when, UTC),
            params={"tuning": {"policy": "custom", "version": version, "domain": {}}},
        )  # fmt: skip
    Task.objects.create(
        kind="vm.tune", state="failed", vm=vm, finished=datetime.fromtimestamp(T - 3600, UTC)
    )
    # one point a minute: 5 minutes at 40 % before the newer change, 4 at 10 % after
    _ingest(vm, newer - 300, [{"cpu_percent": 40.0}] * 5, step=60)
    _ingest(vm, newer, [{"cpu_percent": 10.0}] * 4, step=60)

    changes = proof.proof_for(vm, now=T)["changes"]
    assert [c["version"] for c in changes] == [2, 1]
    assert all(c["policy"] == "custom" for c in changes)
    first = changes[0]
    assert first["window"]["resolution"] == 60
    assert first["before"]["cpu_percent"] == {"avg": 40.0, "max": 40.0, "points": 5}
    assert first["after"]["cpu_percent"] == {"avg": 10.0, "max": 10.0, "points": 4}
    assert first["delta"]["cpu_percent"] == -30.0
    assert changes[1]["status"] == "insufficient data"


def test_at_most_five_changes(make_vm):
    vm = make_vm()
    for i in range(7):
        Task.objects.create(
            kind="vm.tune", state="succeeded", vm=vm,
            finished=datetime.fromtimestamp(T - i * 3600, UTC),
            params={"tuning": {"policy": "p", "version": 7 - i}},
        )  # fmt: skip
    changes = proof.proof_for(vm, now=T)["changes"]
    assert [c["version"] for c in changes] == [7, 6, 5, 4, 3]


# --- advisor ----------------------------------------------------------------------------------


def test_a_quiet_well_tuned_vm_gets_no_advice(make_vm):
    vm = make_vm()
    _ingest(vm, T - 300, [{"vcpu_delay_percent": 1.0, "memory_balloon_bytes": 1024 * MIB}] * 20)
    assert advisor.recommendations(vm, now=T) == []


def test_sustained_vcpu_delay_suggests_dedicated_cpus(make_vm):
    vm = make_vm()
    _ingest(vm, T - 200, [{"vcpu_delay_percent": 6.0 + (i % 2) * 4} for i in range(12)])
    rule = _rules(vm, now=T)["vcpu-delay"]
    assert rule["severity"] == "warning"
    assert rule["evidence"]["avg"] == 8.0
    assert rule["evidence"]["max"] == 10.0
    assert rule["evidence"]["points"] == 12
    assert rule["policy"]["cpu"]["placement"] == "dedicated"
    assert rule["policy"]["numa"]["mode"] == "none"  # the rest of the policy kept


def test_vcpu_delay_needs_enough_points_and_a_high_average(make_vm):
    few = make_vm("few")
    _ingest(few, T - 100, [{"vcpu_delay_percent": 20.0}] * 5)
    low = make_vm("low")
    _ingest(low, T - 200, [{"vcpu_delay_percent": 4.0}] * 12)
    old = make_vm("old")  # high, but more than 30 minutes ago
    _ingest(old, T - 3000, [{"vcpu_delay_percent": 20.0}] * 12)
    for vm in (few, low, old):
        assert "vcpu-delay" not in _rules(vm, now=T)


def test_pins_across_numa_nodes_are_flagged_with_a_one_node_policy(make_vm):
    vm = make_vm(cputune="<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='5'/>"
                 "</cputune>")  # fmt: skip
    rule = _rules(vm, now=T)["numa-span"]
    assert rule["evidence"]["cpu_nodes"] == [0, 1]
    assert rule["evidence"]["nodes_that_fit"] == [0, 1]
    assert rule["policy"]["numa"]["mode"] == "strict"
    assert rule["policy"]["cpu"]["placement"] == "dedicated"


def test_memory_on_another_node_than_the_pins_is_flagged(make_vm):
    vm = make_vm(
        cputune="<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='2'/></cputune>",
        numatune="<numatune><memory mode='strict' nodeset='0-1'/></numatune>",
    )
    rule = _rules(vm, now=T)["numa-span"]
    assert rule["evidence"]["cpu_nodes"] == [0]
    assert rule["evidence"]["memory_nodes"] == [0, 1]


def test_pins_and_memory_on_one_node_are_fine(make_vm):
    vm = make_vm(
        cputune="<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='1' cpuset='2'/></cputune>",
        numatune="<numatune><memory mode='strict' nodeset='0'/></numatune>",
    )
    assert "numa-span" not in _rules(vm, now=T)


def test_single_queue_virtio_nic_on_a_multi_vcpu_vm_suggests_multiqueue(make_vm):
    vm = make_vm(vcpus=2, nic_driver="")
    rule = _rules(vm, now=T)["multiqueue"]
    assert rule["severity"] == "info"
    assert rule["evidence"] == {"nics": ["52:54:00:aa:bb:01"], "queues": 1, "vcpus": 2}
    assert rule["policy"]["network"]["queues"] == "vcpus"
    one_queue = make_vm("one-queue", vcpus=4, nic_driver="<driver name='vhost' queues='1'/>")
    assert "multiqueue" in _rules(one_queue, now=T)


def test_multiqueue_is_silent_with_queues_or_one_vcpu(make_vm):
    assert "multiqueue" not in _rules(make_vm("mq", vcpus=4), now=T)
    assert "multiqueue" not in _rules(make_vm("one", vcpus=1, nic_driver=""), now=T)


def test_an_inflated_balloon_on_a_latency_critical_vm_is_flagged(make_vm):
    vm = make_vm(memory_mib=2048)
    _critical(vm)
    _ingest(vm, T - 100, [{"memory_balloon_bytes": 1024 * MIB}] * 5)
    rule = _rules(vm, now=T)["balloon-on-critical"]
    assert rule["evidence"]["balloon_bytes"]["avg"] == 1024 * MIB
    assert rule["evidence"]["memory_bytes"] == 2048 * MIB
    assert rule["policy"]["memory"]["balloon"] == {
        "enabled": False, "period": 0, "autodeflate": False,
    }  # fmt: skip


def test_a_balloon_polling_stats_on_a_critical_vm_is_flagged(make_vm):
    vm = make_vm(balloon="<memballoon model='virtio'><stats period='10'/></memballoon>")
    _critical(vm)
    rule = _rules(vm, now=T)["balloon-on-critical"]
    assert rule["evidence"]["memballoon"]["stats_period"] == 10


def test_the_balloon_rule_is_silent_when_full_or_not_critical(make_vm):
    full = make_vm("full", memory_mib=2048)
    _critical(full)
    _ingest(full, T - 100, [{"memory_balloon_bytes": 2048 * MIB}] * 5)
    assert "balloon-on-critical" not in _rules(full, now=T)
    shared = make_vm("shared", memory_mib=2048)  # balanced: ballooning is its business
    _ingest(shared, T - 100, [{"memory_balloon_bytes": 512 * MIB}] * 5)
    assert "balloon-on-critical" not in _rules(shared, now=T)


def test_writeback_on_a_critical_vm_warns(make_vm):
    vm = make_vm(cache="writeback")
    _critical(vm)
    rule = _rules(vm, now=T)["writeback-on-critical"]
    assert rule["severity"] == "warning"
    assert rule["evidence"]["disks"] == ["vda"]
    assert rule["policy"]["disk"]["cache"] == "none"


def test_writeback_is_silent_on_a_normal_vm_or_with_cache_none(make_vm):
    assert "writeback-on-critical" not in _rules(make_vm("normal", cache="writeback"), now=T)
    safe = make_vm("safe", cache="none")
    _critical(safe)
    assert "writeback-on-critical" not in _rules(safe, now=T)


def test_a_policy_passed_in_is_the_effective_one(make_vm):
    vm = make_vm(cache="writeback")
    critical = ensure_builtins()["latency-critical"]
    assert "writeback-on-critical" in _rules(vm, policy=critical, now=T)


def _chain(depth: int) -> str:
    """A definition's ``<backingStore>`` nesting for a chain of ``depth`` images."""
    inner = "<backingStore/>"
    for i in range(depth - 1, 0, -1):
        inner = (
            f"<backingStore type='file'><format type='qcow2'/>"
            f"<source file='/images/base{i}.qcow2'/>{inner}</backingStore>"
        )
    return inner


def test_a_deep_backing_chain_in_the_definition_suggests_flattening(make_vm):
    vm = make_vm(backing=_chain(5))
    rule = _rules(vm, now=T)["backing-chain"]
    assert rule["evidence"]["disks"]["vda"]["depth"] == 5
    assert rule["evidence"]["disks"]["vda"]["source"] == "definition"
    assert rule["policy"] is None
    assert "backing-chain" not in _rules(make_vm("shallow", backing=_chain(3)), now=T)


def test_a_deep_chain_recorded_in_the_inventory_suggests_flattening(make_vm, host):
    vm = make_vm(backing="<backingStore/>")
    pool = StoragePool.objects.create(host=host, name="default", path="/var/lib/libvirt/images")
    volume = Volume.objects.create(
        pool=pool, name="vm.qcow2", path="/var/lib/libvirt/images/vm.qcow2", format="qcow2",
        backing_path="/images/base.qcow2", backing_depth=4,
    )  # fmt: skip
    Disk.objects.create(vm=vm, target="vda", source=volume.path, format="qcow2")
    rule = _rules(vm, now=T)["backing-chain"]
    assert rule["evidence"]["disks"]["vda"]["depth"] == 4
    assert rule["evidence"]["disks"]["vda"]["source"] == "inventory"
    Volume.objects.filter(pk=volume.pk).update(backing_depth=3)
    assert "backing-chain" not in _rules(vm, now=T)


def test_tuning_status_carries_the_proof_and_the_advice(make_vm, admin_user):
    vm = make_vm(nic_driver="")
    VmTuning.objects.create(vm=vm, plan={}, applied_at=datetime.fromtimestamp(T, UTC))
    status = services.tuning_status(admin_user, vm)
    assert len(status["proof"]["changes"]) == 1
    assert [a["rule"] for a in status["advice"]] == ["multiqueue"]
