"""Day-two fixes through the API on the simulated host: deleting a VM with snapshots (stopped
or running, volumes too), the overcommit rule for new disks, memory in any whole MiB, task
titles that say what they do, and a host that does not answer is not added silently."""

from __future__ import annotations

import math
from types import SimpleNamespace

import libvirt
import pytest

from hosts.driver.connection import get_connection
from hosts.models import Host
from hosts.storage.backends import space_problem, thin_overcommit
from panel.models import Task
from panel.units import GIB
from tests.api.conftest import create_body
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def _body(acme_sim, **over):
    return create_body(acme_sim, **{"vcpus": 1, **over})


# --- delete with snapshots -------------------------------------------------------------------


@pytest.mark.parametrize("start", [False, True], ids=["shut-off", "running"])
def test_delete_with_snapshots_and_volumes_succeeds_on_the_simulated_host(api, acme_sim, start):
    client = api.as_user(acme_sim["admin"])
    body = client.post("/api/vms/", _body(acme_sim, start=start), format="json").json()
    run_queued_tasks()
    vm_id = body["vm"]["id"]
    path = VirtualMachine.objects.get(pk=vm_id).disks.get(device="disk").source
    for name in ("before-upgrade", "after-upgrade"):  # a parent and its child
        response = client.post(f"/api/vms/{vm_id}/snapshots/", {"name": name}, format="json")
        assert response.status_code == 202, response.content
        run_queued_tasks()
    conn = get_connection(acme_sim["host"])
    assert conn.lookupByName("app-01").snapshotNum() == 2
    task_id = client.delete(f"/api/vms/{vm_id}/?delete_volumes=true").json()["task"]["id"]
    run_queued_tasks()
    task = client.get(f"/api/tasks/{task_id}/").json()
    assert task["state"] == "succeeded", task["error"]
    assert task["title"] == "Delete VM app-01"
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("app-01")
    with pytest.raises(libvirt.libvirtError):
        conn.storageVolLookupByPath(path)
    assert not VirtualMachine.objects.filter(pk=vm_id).exists()


# --- the overcommit rule ---------------------------------------------------------------------


def test_a_qcow2_disk_larger_than_the_pools_free_space_is_refused_naming_the_numbers(api, acme_sim):
    pool = acme_sim["pool"]
    free = pool.available / GIB
    asked = math.ceil(free) + 100
    client = api.as_user(acme_sim["admin"])
    disks = [{"size_gib": asked, "pool": pool.pk, "format": "qcow2"}]
    response = client.post("/api/vms/", _body(acme_sim, disks=disks), format="json")
    assert response.status_code == 400, response.content
    message = response.json()["disks[0]"]
    assert message == [
        f"{asked} GiB asked, {free:.1f} GiB free on pool default.".replace(".0 ", " ")
    ]
    assert "size_gib" not in str(response.json())
    assert not VirtualMachine.objects.filter(name="app-01").exists()
    assert not Task.objects.filter(kind="vm.create").exists()
    # What fits is made, on the host too (the test driver reserves a volume's full size).
    disks = [{"size_gib": math.floor(free) - 1, "pool": pool.pk, "format": "qcow2"}]
    response = client.post("/api/vms/", _body(acme_sim, disks=disks), format="json")
    assert response.status_code == 202, response.content
    run_queued_tasks()
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.state == "succeeded", task.error


def test_two_disks_that_fit_alone_but_not_together_are_refused_on_the_disks(api, acme_sim):
    pool = acme_sim["pool"]
    half = math.ceil(pool.available / GIB / 2) + 1
    disks = [
        {"size_gib": half, "pool": pool.pk, "format": "qcow2"},
        {"size_gib": half, "pool": pool.pk, "format": "raw"},
    ]
    client = api.as_user(acme_sim["admin"])
    response = client.post("/api/vms/", _body(acme_sim, disks=disks), format="json")
    assert response.status_code == 400
    assert response.json()["disks"] == [
        f"{2 * half} GiB asked, {pool.available / GIB:.1f} GiB free on pool default.".replace(
            ".0 ", " "
        )
    ]


def test_disk_add_and_new_volume_follow_the_same_rule(api, acme_sim):
    pool = acme_sim["pool"]
    asked = math.ceil(pool.available / GIB) + 50
    client = api.as_user(acme_sim["admin"])
    response = client.post(
        "/api/volumes/",
        {"pool": pool.pk, "name": "huge.qcow2", "size_gib": asked, "format": "qcow2"},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert f"{asked} GiB asked" in str(response.json()["size_gib"])
    body = client.post("/api/vms/", _body(acme_sim), format="json").json()
    run_queued_tasks()
    response = client.post(
        f"/api/vms/{body['vm']['id']}/disks/",
        {"size_gib": asked, "pool": pool.pk, "format": "qcow2"},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert f"{asked} GiB asked" in str(response.json())


def _pool(available_gib: float, simulated: bool = False):
    return SimpleNamespace(
        name="fast", available=int(available_gib * GIB), host=SimpleNamespace(simulated=simulated)
    )


def test_thin_volumes_may_overcommit_by_the_setting_full_size_ones_never(settings):
    settings.PADDOCK = {**settings.PADDOCK, "THIN_OVERCOMMIT": 3}
    pool = _pool(224.9)
    assert thin_overcommit(pool) == 3
    assert space_problem(pool, thin_bytes=500 * GIB) is None  # 500 <= 3 x 224.9
    refused = space_problem(pool, full_bytes=500 * GIB)
    assert refused == "500 GiB asked, 224.9 GiB free on pool fast."
    over = space_problem(pool, thin_bytes=700 * GIB)
    assert over.startswith("700 GiB asked, 224.9 GiB free on pool fast.")
    assert "3x its free space (674.7 GiB)" in over
    # The simulated host's test driver reserves every volume's full size: no overcommit.
    assert thin_overcommit(_pool(224.9, simulated=True)) == 1
    assert space_problem(_pool(224.9, simulated=True), thin_bytes=500 * GIB) is not None


def test_without_the_setting_nothing_is_overcommitted(settings):
    settings.PADDOCK = {k: v for k, v in settings.PADDOCK.items() if k != "THIN_OVERCOMMIT"}
    assert space_problem(_pool(224.9), thin_bytes=500 * GIB) == (
        "500 GiB asked, 224.9 GiB free on pool fast."
    )
    assert space_problem(_pool(224.9), thin_bytes=224 * GIB) is None


# --- memory ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mib", [1000, 1001, 65])
def test_memory_in_any_whole_mib_is_created_as_asked(api, acme_sim, mib):
    client = api.as_user(acme_sim["admin"])
    response = client.post(
        "/api/vms/", _body(acme_sim, memory_mib=mib, max_memory_mib=mib + 3), format="json"
    )
    assert response.status_code == 202, response.content
    run_queued_tasks()
    vm = client.get(f"/api/vms/{response.json()['vm']['id']}/").json()
    assert vm["memory_mib"] == mib and vm["max_memory_mib"] == mib + 3
    dom = get_connection(acme_sim["host"]).lookupByName("app-01")
    assert dom.maxMemory() == (mib + 3) * 1024


def test_memory_below_the_minimum_says_so_once_without_field_names(api, acme_sim):
    client = api.as_user(acme_sim["admin"])
    response = client.post("/api/vms/", _body(acme_sim, memory_mib=63), format="json")
    assert response.status_code == 400
    assert response.json()["memory_mib"] == ["At least 64 MiB."]


# --- task titles -----------------------------------------------------------------------------


def test_every_task_says_its_verb_and_object(api, acme_sim):
    client = api.as_user(acme_sim["admin"])
    body = client.post("/api/vms/", _body(acme_sim, name="svc-01", start=True), format="json")
    vm_id = body.json()["vm"]["id"]
    assert body.json()["task"]["title"] == "Create VM svc-01"
    run_queued_tasks()
    titles = []
    for path, data in (
        (f"/api/vms/{vm_id}/snapshots/", {"name": "before-upgrade"}),
        (f"/api/vms/{vm_id}/stop/", {}),
        (f"/api/vms/{vm_id}/start/", {}),
        (f"/api/vms/{vm_id}/snapshots/before-upgrade/revert/", {}),
    ):
        response = client.post(path, data, format="json")
        assert response.status_code == 202, (path, response.content)
        titles.append(response.json()["task"]["title"])
        run_queued_tasks()
    assert titles == [
        "Snapshot svc-01: before-upgrade",
        "Stop svc-01",
        "Start svc-01",
        "Revert svc-01 to before-upgrade",
    ]
    host = acme_sim["host"]
    response = client.post(f"/api/hosts/{host.pk}/sync/")
    assert response.json()["task"]["title"] == f"Sync host {host.name}"
    # A kind nobody titled reads as its words and its target.
    assert Task(kind="vm.migrate", target="vm web-01").title == "Vm migrate vm web-01"


# --- host add --------------------------------------------------------------------------------


def test_a_host_that_does_not_answer_is_refused_with_the_connection_error(
    api, admin_user, tmp_path
):
    missing = tmp_path / "gone.xml"  # in an allowed folder, but no such file
    client = api.as_user(admin_user)
    response = client.post(
        "/api/hosts/", {"name": "kvm-2", "uri": f"test://{missing}"}, format="json"
    )
    assert response.status_code == 400, response.content
    said = " ".join(response.json()["uri"])
    assert f"Paddock could not connect to test://{missing}:" in said
    assert "Add it anyway, offline" in said
    assert not Host.objects.filter(name="kvm-2").exists()

    response = client.post(
        "/api/hosts/",
        {"name": "kvm-2", "uri": f"test://{missing}", "offline": True},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "offline" and body["last_error"]
    assert body["task"]["title"] == "Sync host kvm-2"


def test_a_host_that_answers_is_added_online(api, admin_user, node_uri):
    client = api.as_user(admin_user)
    response = client.post("/api/hosts/", {"name": "kvm-3", "uri": node_uri}, format="json")
    assert response.status_code == 201, response.content
    run_queued_tasks()
    assert Host.objects.get(name="kvm-3").status == "online"
