"""vm.create through its plan: the service stores the plan on the task, the job applies it
and records what it made, a failing step rolls back exactly that."""

from __future__ import annotations

import pytest

from hosts.driver.connection import get_connection
from hosts.driver.guest import Guest
from hosts.models import Network, StoragePool
from panel import plans
from panel.models import Task
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(synced_host, tenant, admin_user):
    return {
        "host": synced_host,
        "pool": StoragePool.objects.get(host=synced_host, name="default"),
        "net": Network.objects.get(host=synced_host, name="lan"),
        "tenant": tenant,
        "admin": admin_user,
    }


def _create(api, world, **over):
    body = {
        "name": "planned-01",
        "tenant": world["tenant"].pk,
        "host": world["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
        "disks": [
            {"size_gib": 2, "pool": world["pool"].pk, "format": "qcow2"},
            {"size_gib": 1, "pool": world["pool"].pk, "format": "raw"},
        ],
        "nics": [{"network": world["net"].pk}],
        "start": True,
    }
    body.update(over)
    response = api.as_user(world["admin"]).post("/api/vms/", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def test_the_plan_is_stored_on_the_task_and_records_what_it_made(api, world):
    body = _create(api, world)
    task = Task.objects.get(pk=body["task"]["id"])
    plan = plans.Plan.from_dict(task.params["plan"])
    assert [(s.kind, s.action) for s in plan.steps] == [
        ("storage", "create_volume"),
        ("storage", "create_volume"),
        ("domain", "define"),
        ("domain", "start"),
    ]
    vm = VirtualMachine.objects.get(pk=body["vm"]["id"])
    assert plan.creates[-1] == {"kind": "domain", "uuid": str(vm.uuid)}
    assert plan.created == [] and plan.done == 0
    define = plan.steps[2].args
    assert [d["source_type"] for d in define["disks"]] == ["file", "file"]
    assert [d["target"] for d in define["disks"]] == ["vda", "vdb"]

    run_queued_tasks()
    task.refresh_from_db()
    assert task.state == "succeeded", task.error
    plan = plans.Plan.from_dict(task.params["plan"])
    assert plan.finished
    assert [o["kind"] for o in plan.created] == ["volume", "volume", "domain"]
    paths = [o["path"] for o in plan.created_of("volume")]
    assert sorted(vm.disks.filter(owned=True).values_list("source", flat=True)) == sorted(paths)
    guest = Guest.lookup(get_connection(world["host"]), str(vm.uuid))
    assert guest.state == "running"


def test_a_failing_step_rolls_back_exactly_what_the_plan_recorded(api, world, monkeypatch):
    conn = get_connection(world["host"])
    before = set(conn.storagePoolLookupByName("default").listVolumes())
    body = _create(api, world)

    def refuse(step, run):
        raise RuntimeError("the host refused to start it")

    monkeypatch.setitem(plans._steps, ("domain", "start"), refuse)
    run_queued_tasks()
    task = Task.objects.get(pk=body["task"]["id"])
    assert task.state == "failed" and "refused to start" in task.error
    assert any("Rolling back" in e.message for e in task.log_entries.all())
    assert set(conn.storagePoolLookupByName("default").listVolumes()) == before
    assert Guest.lookup_by_name(conn, "planned-01") is None
    assert not VirtualMachine.objects.filter(name="planned-01").exists()


def test_clone_is_planned_and_applied_the_same_way(api, world):
    body = _create(api, world, start=False, nics=[])
    run_queued_tasks()
    client = api.as_user(world["admin"])
    response = client.post(
        f"/api/vms/{body['vm']['id']}/clone/", {"name": "planned-02"}, format="json"
    )
    assert response.status_code == 202, response.content
    task = Task.objects.get(pk=response.json()["task"]["id"])
    plan = plans.Plan.from_dict(task.params["plan"])
    assert [(s.kind, s.action) for s in plan.steps] == [
        ("storage", "clone_volume"),
        ("storage", "clone_volume"),
        ("domain", "define_clone"),
    ]
    assert plan.steps[2].args["disks"]["vda"] == {"volume": "disk0", "format": "qcow2"}
    run_queued_tasks()
    task.refresh_from_db()
    assert task.state == "succeeded", task.error
    plan = plans.Plan.from_dict(task.params["plan"])
    assert [o["kind"] for o in plan.created] == ["volume", "volume", "domain"]
    clone = VirtualMachine.objects.get(name="planned-02")
    assert clone.disks.filter(owned=True).count() == 2
    assert Guest.lookup(get_connection(world["host"]), str(clone.uuid)).state == "shutoff"
