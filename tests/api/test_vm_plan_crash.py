"""A worker that dies inside a volume call: libvirtd finishes the volume, the worker never hears
of it, and recovery still removes it (the plan records a volume by pool and name first)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts import storage
from hosts.driver.connection import get_connection
from hosts.models import StoragePool
from panel import plans, taskrunner
from panel.models import Task
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


class _Killed(BaseException):
    """The worker process dying: nothing in the task catches it."""


@pytest.fixture
def world(synced_host, tenant, admin_user):
    return {
        "host": synced_host,
        "pool": StoragePool.objects.get(host=synced_host, name="default"),
        "tenant": tenant,
        "admin": admin_user,
    }


def _volumes(world) -> set[str]:
    return set(get_connection(world["host"]).storagePoolLookupByName("default").listVolumes())


def _die_after(real):
    def call(*args, **kwargs):
        real(*args, **kwargs)  # libvirtd made the volume...
        raise _Killed  # ...and the worker died before the answer came back

    return call


def _kill_inside_the_call_and_recover(task_id: int) -> Task:
    with pytest.raises(_Killed):
        taskrunner.execute(task_id, owner="dying-worker")
    Task.objects.filter(pk=task_id).update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert taskrunner.recover_stale_tasks() == [task_id]
    return Task.objects.get(pk=task_id)


def test_a_volume_made_while_the_worker_died_is_rolled_back(api, world, monkeypatch):
    before = _volumes(world)
    body = {
        "name": "dies-01",
        "tenant": world["tenant"].pk,
        "host": world["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
        "disks": [{"size_gib": 1, "pool": world["pool"].pk, "format": "qcow2"}],
    }
    response = api.as_user(world["admin"]).post("/api/vms/", body, format="json")
    assert response.status_code == 202, response.content
    monkeypatch.setattr(storage, "create_volume", _die_after(storage.create_volume))

    task = _kill_inside_the_call_and_recover(response.json()["task"]["id"])
    assert task.state == "failed" and "Rolled back" in task.error
    assert _volumes(world) == before
    assert not VirtualMachine.objects.filter(name="dies-01").exists()


def test_a_volume_named_like_the_plans_but_not_made_by_it_is_kept(api, world, monkeypatch):
    conn = get_connection(world["host"])
    body = {
        "name": "dies-02",
        "tenant": world["tenant"].pk,
        "host": world["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
        "disks": [{"size_gib": 1, "pool": world["pool"].pk, "format": "qcow2"}],
    }
    response = api.as_user(world["admin"]).post("/api/vms/", body, format="json")
    assert response.status_code == 202, response.content
    task = Task.objects.get(pk=response.json()["task"]["id"])
    step = plans.Plan.from_dict(task.params["plan"]).steps[0]
    # Someone else made a volume of that name meanwhile: the create fails, and must not take it.
    storage.create_volume(conn, "default", step.args["name"], 1 << 30, "qcow2")
    taskrunner.execute(task.pk)
    task.refresh_from_db()
    assert task.state == "failed" and "already exists" in task.error
    assert step.args["name"] in _volumes(world)
