"""VM lifecycle through the API on a test-driver host: validation, quotas, locks, roles."""

from __future__ import annotations

import libvirt
import pytest

from hosts.driver.connection import get_connection
from hosts.models import StoragePool, Volume
from panel.models import Task
from tests.api.conftest import create_body
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def _body(acme_sim, **over):
    return create_body(acme_sim, **over)


def _nothing_made(acme_sim, name="app-01"):
    assert not VirtualMachine.objects.filter(name=name).exists()
    assert not Task.objects.filter(kind="vm.create").exists()
    names = [d.name() for d in get_connection(acme_sim["host"]).listAllDomains()]
    assert name not in names


def test_create_defines_domain_and_volume_and_reports_task(api, acme_sim):
    client = api.as_user(acme_sim["admin"])
    response = client.post("/api/vms/", _body(acme_sim, start=True), format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["vm"]["lifecycle"] == "creating" and body["task"]["kind"] == "vm.create"
    run_queued_tasks()
    task = client.get(f"/api/tasks/{body['task']['id']}/").json()
    assert task["state"] == "succeeded", task
    conn = get_connection(acme_sim["host"])
    dom = conn.lookupByName("app-01")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    vm = client.get(f"/api/vms/{body['vm']['id']}/").json()
    assert vm["state"] == "running" and vm["lifecycle"] == "ready"
    assert vm["vcpus"] == 2 and vm["memory_mib"] == 1024
    assert [d["target"] for d in vm["disks"] if d["device"] == "disk"] == ["vda"]
    assert vm["disks"][0]["owned"] is True
    path = vm["disks"][0]["source"]
    assert conn.storageVolLookupByPath(path).info()[1] == 8 * 1024**3
    assert Volume.objects.filter(path=path).exists()
    assert vm["nics"][0]["mac"].startswith("52:54:00:")


@pytest.mark.parametrize(
    "over, field",
    [
        ({"disks": [{"size_gib": 8, "pool": 999999}]}, "disks[0]"),
        ({"disks": [{"size_gib": 100000, "pool": "POOL"}]}, "disks[0]"),
        (
            {
                "disks": [
                    {"size_gib": 90, "pool": "POOL"},
                    {"size_gib": 90, "pool": "POOL", "format": "raw"},
                ]
            },
            "disks",
        ),
        ({"vcpus": 64}, "vcpus"),
        ({"nics": [{"network": "NET", "mac": "zz:00:00:00:00:01"}]}, "nics[0]"),
        ({"nics": [{"network": "NET", "mac": "01:00:5e:00:00:01"}]}, "nics[0]"),
        ({"name": "bad<name>"}, "name"),
        ({"name": "x'; rm -rf /"}, "name"),
        ({"memory_mib": 8}, "memory_mib"),
        ({"virt_type": "kvm"}, "virt_type"),
        ({"nics": [{"network": 999999}]}, "nics[0]"),
    ],
)
def test_bad_input_answers_400_and_makes_nothing(api, acme_sim, over, field):
    body = _body(acme_sim, **over)
    for disk in body.get("disks", []):
        if disk.get("pool") == "POOL":
            disk["pool"] = acme_sim["pool"].pk
    for nic in body.get("nics", []):
        if nic.get("network") == "NET":
            nic["network"] = acme_sim["net"].pk
    response = api.as_user(acme_sim["admin"]).post("/api/vms/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    _nothing_made(acme_sim, body["name"])


def test_duplicate_name_on_host_is_refused(api, acme_sim):
    existing = VirtualMachine.objects.filter(host=acme_sim["host"]).first()
    response = api.as_user(acme_sim["admin"]).post(
        "/api/vms/", _body(acme_sim, name=existing.name), format="json"
    )
    assert response.status_code == 400 and "name" in response.json()


def test_duplicate_mac_is_refused(api, acme_sim):
    mac = VirtualMachine.objects.filter(nics__isnull=False).first().nics.first().mac
    response = api.as_user(acme_sim["admin"]).post(
        "/api/vms/",
        _body(acme_sim, nics=[{"network": acme_sim["net"].pk, "mac": mac}]),
        format="json",
    )
    assert response.status_code == 400 and "already in use" in str(response.json())


def test_quota_refuses_with_limit_and_usage(api, acme_sim):
    tenant = acme_sim["tenant"]
    tenant.max_vcpus = 3
    tenant.save()
    tenant.allowed_hosts.add(acme_sim["host"])
    tenant.allowed_pools.add(acme_sim["pool"])
    tenant.allowed_networks.add(acme_sim["net"])
    client = api.as_user(acme_sim["operator"])
    assert client.post("/api/vms/", _body(acme_sim), format="json").status_code == 202
    run_queued_tasks()
    response = client.post("/api/vms/", _body(acme_sim, name="app-02"), format="json")
    assert response.status_code == 400
    message = " ".join(response.json()["quota"])
    assert "limit 3" in message and "in use 2" in message
    usage = client.get(f"/api/tenants/{tenant.pk}/usage/").json()
    assert usage["limits"]["vcpus"] == 3 and usage["usage"]["vcpus"] == 2
    assert usage["usage"]["vms"] == 1 and usage["usage"]["disk_gib"] == 8


def test_tenant_operator_creates_only_where_allowed(api, acme_sim):
    client = api.as_user(acme_sim["operator"])
    response = client.post("/api/vms/", _body(acme_sim), format="json")
    assert response.status_code == 400
    assert "host" in response.json()
    acme_sim["tenant"].allowed_hosts.add(acme_sim["host"])
    response = client.post("/api/vms/", _body(acme_sim), format="json")
    assert response.status_code == 400 and "disks[0]" in response.json()
    acme_sim["tenant"].allowed_pools.add(acme_sim["pool"])
    acme_sim["tenant"].allowed_networks.add(acme_sim["net"])
    placement = client.get(f"/api/tenants/{acme_sim['tenant'].pk}/placement/").json()
    assert [p["name"] for p in placement["pools"]] == ["default"]
    assert client.post("/api/vms/", _body(acme_sim), format="json").status_code == 202


@pytest.mark.parametrize("role, status", [("member", 403), ("viewer", 403)])
def test_members_and_viewers_cannot_create(api, acme_sim, role, status):
    acme_sim["tenant"].allowed_hosts.add(acme_sim["host"])
    response = api.as_user(acme_sim[role]).post("/api/vms/", _body(acme_sim), format="json")
    assert response.status_code == status


def _tenant_vm(acme_sim, state="shutoff"):
    vm = VirtualMachine.objects.filter(host=acme_sim["host"], state=state).first()
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=acme_sim["tenant"])
    return vm


def test_power_actions_follow_libvirt(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    assert client.post(f"/api/vms/{vm.pk}/start/").status_code == 202
    run_queued_tasks()
    dom = get_connection(acme_sim["host"]).lookupByUUIDString(str(vm.uuid))
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    for action, expected in (("pause", 3), ("resume", 1), ("stop", 5)):
        response = client.post(f"/api/vms/{vm.pk}/{action}/")
        assert response.status_code == 202, (action, response.content)
        run_queued_tasks()
        assert dom.state()[0] == expected, action
    vm.refresh_from_db()
    assert vm.state == "shutoff" and vm.desired_state == "shutoff"


def test_power_action_in_wrong_state_is_400(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    response = api.as_user(acme_sim["member"]).post(f"/api/vms/{vm.pk}/pause/")
    assert response.status_code == 400
    assert "shut off" in str(response.json())


def test_viewer_cannot_power(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    assert api.as_user(acme_sim["viewer"]).post(f"/api/vms/{vm.pk}/start/").status_code == 403


def test_other_tenant_cannot_see_or_act(api, acme_sim, other_tenant, make_member):
    vm = _tenant_vm(acme_sim)
    outsider = make_member(other_tenant, "admin")
    client = api.as_user(outsider)
    for method, url in (
        ("post", f"/api/vms/{vm.pk}/start/"),
        ("post", f"/api/vms/{vm.pk}/clone/"),
        ("delete", f"/api/vms/{vm.pk}/"),
        ("get", f"/api/vms/{vm.pk}/snapshots/"),
    ):
        assert getattr(client, method)(url, {}, format="json").status_code == 404


def test_two_conflicting_operations_exactly_one_runs(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["operator"])
    first = client.post(f"/api/vms/{vm.pk}/start/")
    second = client.delete(f"/api/vms/{vm.pk}/")
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json()["task"]["id"] == first.json()["task"]["id"]
    run_queued_tasks()
    assert Task.objects.filter(vm=vm).count() == 1


def test_cloning_a_running_vm_is_409_with_reason(api, acme_sim):
    vm = _tenant_vm(acme_sim, state="running")
    response = api.as_user(acme_sim["operator"]).post(
        f"/api/vms/{vm.pk}/clone/", {"name": "copy"}, format="json"
    )
    assert response.status_code == 409
    assert "shut it down" in response.json()["detail"]


def test_linked_clone_needs_a_template(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    response = api.as_user(acme_sim["operator"]).post(
        f"/api/vms/{vm.pk}/clone/", {"name": "copy", "mode": "linked"}, format="json"
    )
    assert response.status_code == 400 and "template" in str(response.json())


def test_edit_cold_changes_vcpus_and_memory(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    response = api.as_user(acme_sim["operator"]).patch(
        f"/api/vms/{vm.pk}/", {"vcpus": 3, "memory_mib": 768, "description": "x"}, format="json"
    )
    assert response.status_code == 202, response.content
    run_queued_tasks()
    vm.refresh_from_db()
    assert vm.vcpus == 3 and vm.memory_mib == 768 and vm.description == "x"
    dom = get_connection(acme_sim["host"]).lookupByUUIDString(str(vm.uuid))
    assert dom.info()[3] == 3


def test_edit_running_vm_beyond_maximum_is_refused(api, acme_sim):
    vm = _tenant_vm(acme_sim, state="running")
    response = api.as_user(acme_sim["operator"]).patch(
        f"/api/vms/{vm.pk}/", {"vcpus": vm.max_vcpus + 1}, format="json"
    )
    assert response.status_code == 400 and "maximum" in str(response.json()["vcpus"])


def test_delete_removes_domain_and_only_asked_volumes(api, acme_sim):
    client = api.as_user(acme_sim["admin"])
    body = client.post("/api/vms/", _body(acme_sim), format="json").json()
    run_queued_tasks()
    vm = VirtualMachine.objects.get(pk=body["vm"]["id"])
    path = vm.disks.get(device="disk").source
    response = client.delete(f"/api/vms/{vm.pk}/?delete_volumes=true")
    assert response.status_code == 202
    run_queued_tasks()
    conn = get_connection(acme_sim["host"])
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("app-01")
    with pytest.raises(libvirt.libvirtError):
        conn.storageVolLookupByPath(path)
    assert not VirtualMachine.objects.filter(pk=vm.pk).exists()


def test_delete_of_vm_with_snapshots_succeeds_on_the_simulated_host(api, acme_sim):
    """The test driver refuses the NVRAM undefine flag; the snapshots must still go with it."""
    client = api.as_user(acme_sim["admin"])
    body = client.post("/api/vms/", _body(acme_sim), format="json").json()
    run_queued_tasks()
    vm_id = body["vm"]["id"]
    response = client.post(f"/api/vms/{vm_id}/snapshots/", {"name": "before"}, format="json")
    assert response.status_code == 202, response.content
    run_queued_tasks()
    dom = get_connection(acme_sim["host"]).lookupByName("app-01")
    assert dom.snapshotNum() == 1
    task_id = client.delete(f"/api/vms/{vm_id}/").json()["task"]["id"]
    run_queued_tasks()
    task = Task.objects.get(pk=task_id)
    assert task.state == "succeeded", task.error
    with pytest.raises(libvirt.libvirtError):
        get_connection(acme_sim["host"]).lookupByName("app-01")
    assert not VirtualMachine.objects.filter(pk=vm_id).exists()


def test_delete_keeps_volumes_unless_asked(api, acme_sim):
    client = api.as_user(acme_sim["admin"])
    body = client.post("/api/vms/", _body(acme_sim), format="json").json()
    run_queued_tasks()
    path = VirtualMachine.objects.get(pk=body["vm"]["id"]).disks.get(device="disk").source
    client.delete(f"/api/vms/{body['vm']['id']}/")
    run_queued_tasks()
    assert get_connection(acme_sim["host"]).storageVolLookupByPath(path) is not None


def test_schema_publishes_lifecycle_endpoints(api, admin_user):
    paths = api.as_user(admin_user).get("/api/schema/?format=json").json()["paths"]
    for path in (
        "/api/vms/{id}/start/", "/api/vms/{id}/shutdown/", "/api/vms/{id}/stop/",
        "/api/vms/{id}/reboot/", "/api/vms/{id}/reset/", "/api/vms/{id}/pause/",
        "/api/vms/{id}/resume/", "/api/vms/{id}/disks/", "/api/vms/{id}/disks/{disk_id}/",
        "/api/vms/{id}/nics/", "/api/vms/{id}/nics/{nic_id}/", "/api/vms/{id}/snapshots/",
        "/api/vms/{id}/snapshots/{name}/revert/", "/api/vms/{id}/snapshots/{name}/",
        "/api/vms/{id}/clone/", "/api/vms/{id}/template/", "/api/tenants/{id}/usage/",
    ):  # fmt: skip
        assert path in paths, path


def test_operator_cannot_use_volumes_or_isos_outside_allowed_pools(api, acme_sim):
    """Existing volumes and ISOs obey the tenant's allowed pools, like new disks do."""
    tenant = acme_sim["tenant"]
    tenant.allowed_hosts.add(acme_sim["host"])
    tenant.allowed_pools.add(acme_sim["pool"])
    tenant.allowed_networks.add(acme_sim["net"])
    foreign_pool = StoragePool.objects.get(host=acme_sim["host"], name="isos")
    iso = foreign_pool.volumes.first()
    Volume.objects.filter(pk=iso.pk).update(published=True)  # offered, but in a pool not granted
    client = api.as_user(acme_sim["operator"])
    response = client.post("/api/vms/", _body(acme_sim, cdrom=iso.pk), format="json")
    assert response.status_code == 400 and "cdrom" in response.json()

    vm = _tenant_vm(acme_sim)
    unattached = Volume.objects.filter(
        pool__host=acme_sim["host"], pool__name="vg0", disks__isnull=True
    ).first()
    response = client.post(f"/api/vms/{vm.pk}/disks/", {"volume": unattached.pk}, format="json")
    assert response.status_code == 400 and "volume" in response.json()
    with_drive = VirtualMachine.objects.filter(host=acme_sim["host"], disks__device="cdrom").first()
    VirtualMachine.objects.filter(pk=with_drive.pk).update(tenant=tenant)
    response = client.post(f"/api/vms/{with_drive.pk}/cdrom/", {"volume": iso.pk}, format="json")
    assert response.status_code == 400 and "volume" in response.json()
    tenant.allowed_pools.add(foreign_pool)
    assert client.post("/api/vms/", _body(acme_sim, cdrom=iso.pk), format="json").status_code == 202
