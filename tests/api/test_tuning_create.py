"""A VM created with a tuning policy: fitted before anything is queued, placed where it fits,
promised its pCPUs and hugepages in the create's transaction, defined tuned, recorded as its
applied tuning; refused at the field when it does not fit; deleted, it gives them back.

The simulated host (test driver) has 2 NUMA nodes x 8 cores x 2 threads; its housekeeping set
is the first core of each node with its sibling (pCPUs 0, 16, 8, 24).
"""

from __future__ import annotations

import pytest
from lxml import etree

from hosts.driver.connection import get_connection
from hosts.driver.guest import Guest
from hosts.models import Host
from panel.models import Task, Tenant
from tests.conftest import grant_host, run_queued_tasks
from tuning.compiler import hugepage_capacity
from tuning.knobs import clean
from tuning.models import DedicatedCpu, HugepageAllocation, HugepagePool, TuningPolicy, VmTuning
from tuning.profiles import ensure_builtins
from tuning.services import fit_spec
from tuning.topology import HostTopology
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

PINNED = {"cpu": {"placement": "dedicated-isolate-siblings"}, "numa": {"mode": "strict"},
          "memory": {"hugepages": "2M", "balloon": {"enabled": False}}}  # fmt: skip


@pytest.fixture
def world(synced_host, admin_user, make_member):
    ensure_builtins()
    # the simulated VMs commit nearly all of the host's memory: room for the VMs made here
    type(synced_host).objects.filter(pk=synced_host.pk).update(memory_mib=262144)
    synced_host.refresh_from_db()
    acme = Tenant.objects.create(name="acme")
    grant_host(acme, synced_host)
    TuningPolicy.objects.create(name="pinned", tenant=acme, knobs=clean(PINNED))
    return {"host": synced_host, "acme": acme, "operator": make_member(acme, "operator")}


def _create(client, world, name, vcpus, policy, **extra):
    body = {"name": name, "tenant": world["acme"].pk, "vcpus": vcpus, "memory_mib": 1024,
            "tuning_policy": policy, **extra}  # fmt: skip
    return client.post("/api/vms/", body, format="json")


def test_a_pinned_create_is_reserved_defined_tuned_and_given_back_on_delete(api, world):
    client = api.as_user(world["operator"])
    response = _create(client, world, "pinned-1", 4, "pinned")
    assert response.status_code == 202, response.content
    vm = VirtualMachine.objects.get(name="pinned-1")
    task = Task.objects.get(vm=vm, kind="vm.create")
    # promised before the task runs, to the task (a failed create gives them back)
    held = DedicatedCpu.objects.filter(vm=vm)
    assert held.count() == 8 and all(row.task_id == task.pk for row in held)  # + idle siblings
    cpus = sorted(held.filter(use="vcpu").values_list("cpu", flat=True))
    siblings = sorted(held.filter(use="sibling").values_list("cpu", flat=True))
    assert len(cpus) == 4 and siblings == [c + 16 for c in cpus]  # whole cores, one node
    assert not set(cpus + siblings) & {0, 8, 16, 24}  # never the housekeeping set
    assert HugepageAllocation.objects.get(vm=vm).pages == 512  # 1 GiB in 2 MiB pages

    run_queued_tasks()
    task.refresh_from_db()
    assert task.state == "succeeded", task.error
    xml = Guest.get(get_connection(world["host"]), str(vm.uuid)).xml(inactive=True)
    root = etree.fromstring(xml.encode())
    pins = {int(p.get("vcpu")): p.get("cpuset") for p in root.findall("cputune/vcpupin")}
    assert sorted(int(c) for c in pins.values()) == cpus
    assert root.find("numatune/memory").get("mode") == "strict"
    assert root.find("memoryBacking/hugepages") is not None
    tuning = VmTuning.objects.get(vm=vm)
    assert tuning.policy.name == "pinned" and tuning.applied_at is not None
    assert tuning.plan["domain"]["vcpupin"] and tuning.drift is False
    assert not DedicatedCpu.objects.filter(vm=vm, task__isnull=False).exists()  # the VM's now

    response = client.delete(f"/api/vms/{vm.pk}/")
    assert response.status_code == 202, response.content
    run_queued_tasks()
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()
    assert not DedicatedCpu.objects.filter(host=world["host"]).exists()
    assert not HugepageAllocation.objects.exists()


def test_what_does_not_fit_is_refused_at_the_field_and_nothing_is_made(api, world):
    client = api.as_user(world["operator"])
    # 7 free whole cores per node: a 7-vCPU VM with idle siblings fills one node
    for name in ("fill-a", "fill-b"):
        response = _create(client, world, name, 7, "pinned")
        assert response.status_code == 202, response.content
    assert DedicatedCpu.objects.filter(host=world["host"], use="vcpu").count() == 14
    vms, tasks = VirtualMachine.objects.count(), Task.objects.count()

    response = _create(client, world, "one-more", 1, "pinned")
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["tuning_policy"])
    assert "pinned" in message and "node" in message
    response = _create(client, world, "nope", 1, "no-such-policy")
    assert response.status_code == 400
    assert "Unknown policy" in " ".join(response.json()["tuning_policy"])
    assert (VirtualMachine.objects.count(), Task.objects.count()) == (vms, tasks)
    assert DedicatedCpu.objects.filter(host=world["host"], use="vcpu").count() == 14

    # shared VMs still go there: the policy is only for pinned ones
    assert _create(client, world, "shared-1", 2, "balanced").status_code == 202


def test_a_fit_report_over_alike_hosts_answers_each_by_its_own_ledger(world):
    """Alike hosts share a compile (same topology and ledger); each row still says its own."""
    sim = world["host"]
    twins = [
        Host.objects.create(name=f"twin-{i}", uri=f"test:///twin-{i}.xml", status="online",
                            numa_cells=sim.numa_cells, virt_types=sim.virt_types,
                            cpus=sim.cpus, memory_mib=sim.memory_mib, simulated=True)
        for i in range(3)
    ]  # fmt: skip
    for twin in twins:
        grant_host(world["acme"], twin)
    # twin-2's free whole cores are all held by a VM of its own
    other = VirtualMachine.objects.create(host=twins[2], tenant=world["acme"], name="holder",
                                          uuid="00000000-0000-4000-8000-000000000002")  # fmt: skip
    free = [c for cell in sim.numa_cells for c in cell["cpus"] if c not in (0, 8, 16, 24)]
    DedicatedCpu.objects.bulk_create(
        DedicatedCpu(host=twins[2], cpu=c, node=0 if c % 16 < 8 else 1, vm=other) for c in free
    )
    report = fit_spec(world["operator"], world["acme"], vcpus=2, memory_mib=1024,
                      policy="pinned", host_ids=[t.pk for t in twins])  # fmt: skip
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["twin-0"]["fits"] and rows["twin-1"]["fits"]
    assert rows["twin-0"]["nodes"] == rows["twin-1"]["nodes"]
    assert not rows["twin-2"]["fits"] and rows["twin-2"]["reasons"]
    assert all(n["free_cpus"] == [] for n in rows["twin-2"]["nodes"])
    assert report["hosts"][-1]["host"] == "twin-2"  # what fits comes first


def test_a_tenant_default_policy_is_set_by_its_admins_and_used_by_creates(api, world, make_member):
    admin = make_member(world["acme"], "admin", "acme-boss")
    url = f"/api/tenants/{world['acme'].pk}/tuning-default/"
    client = api.as_user(admin)
    first = client.get(url)
    assert first.status_code == 200 and first.json()["policy"] is None, first.content
    assert client.put(url, {"policy": "nope"}, format="json").status_code == 400
    response = client.put(url, {"policy": "pinned"}, format="json")
    assert response.status_code == 200 and response.json()["policy"] == "pinned"
    # a create naming no policy gets the tenant's default: pinned and promised
    response = _create(api.as_user(world["operator"]), world, "by-default", 2, "")
    assert response.status_code == 202, response.content
    vm = VirtualMachine.objects.get(name="by-default")
    assert DedicatedCpu.objects.filter(vm=vm, use="vcpu").count() == 2
    client = api.as_user(admin)
    assert client.put(url, {"policy": None}, format="json").json()["policy"] is None


def test_a_fit_report_sees_a_changed_promise_at_once(world):
    """The ledger kept between reports is re-read as soon as any promise changes."""
    host = world["host"]

    def fits():
        report = fit_spec(world["operator"], world["acme"], vcpus=2, memory_mib=1024,
                          policy="pinned", host_ids=[host.pk])  # fmt: skip
        return report["hosts"][0]

    assert fits()["fits"]
    # every 2 MiB page of both nodes promised (only the counters change, no row is added)
    cap = hugepage_capacity(HostTopology.from_host(host).nodes[0], 2048)  # what may be reserved
    pools = [HugepagePool.objects.create(host=host, node=n, size_kib=2048, capacity=cap,
                                         allocated=0) for n in (0, 1)]  # fmt: skip
    assert fits()["fits"]
    HugepagePool.objects.filter(pk__in=[p.pk for p in pools]).update(allocated=cap)
    row = fits()
    assert (not row["fits"] and "2M" in " ".join(row["reasons"])) or "page" in " ".join(
        row["reasons"]
    )
    HugepagePool.objects.filter(pk__in=[p.pk for p in pools]).update(allocated=0)
    assert fits()["fits"]
