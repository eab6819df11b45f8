"""What needs a guest OS to react, through Paddock: ACPI shutdown and live unplug (tiny TCG guest)."""

from __future__ import annotations

import libvirt
import pytest

from hosts import services as host_services
from panel.models import Task
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

from .guests import define
from .tinyguest import POWEROFF_MARKER, disk_targets

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _resync(admin, host) -> None:
    host_services.host_sync(user=admin, host=host)
    run_queued_tasks()


def _task(response) -> Task:
    assert response.status_code == 202, response.content
    run_queued_tasks()
    return Task.objects.get(pk=response.json()["task"]["id"])


def test_acpi_shutdown_and_live_unplug_through_paddock(api, lab, make_tiny_guest):
    guest = make_tiny_guest("acts")
    guest.start()
    _resync(lab["admin"], lab["host"])
    vm = VirtualMachine.objects.get(uuid=guest.dom.UUIDString())
    assert vm.state == "running"
    client = api.as_user(lab["admin"])

    # Hot-plug a new volume; the guest sees it arrive.
    task = _task(
        client.post(
            f"/api/vms/{vm.pk}/disks/",
            {"size_gib": 0.05, "pool": lab["pool"].pk, "format": "raw"},
            format="json",
        )
    )
    assert task.state == "succeeded", task.error
    target = task.result["target"]
    assert target in disk_targets(guest.dom)
    assert guest.wait_for("add block", 20) is not None, guest.tail()

    # Unplug it live: the guest must release it, and it leaves the live definition.
    disk = vm.disks.get(target=target)
    task = _task(client.delete(f"/api/vms/{vm.pk}/disks/{disk.pk}/?delete_volume=true"))
    assert task.state == "succeeded", task.error
    assert target not in disk_targets(guest.dom)
    assert guest.wait_for("remove block", 20) is not None, guest.tail()
    assert task.result["deleted_volume"] is True

    # ACPI shutdown: the guest powers itself off within the timeout.
    task = _task(client.post(f"/api/vms/{vm.pk}/shutdown/", {"timeout": 60}, format="json"))
    assert task.state == "succeeded", task.error
    state, reason = guest.dom.state()
    assert state == libvirt.VIR_DOMAIN_SHUTOFF
    assert reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
    assert POWEROFF_MARKER in guest.console()
    vm.refresh_from_db()
    assert vm.state == "shutoff" and vm.desired_state == "shutoff" and vm.lock_id is None


def test_shutdown_of_a_guest_that_ignores_acpi_fails_or_forces(api, lab):
    conn, prefix = lab["conn"], lab["prefix"]
    dom = define(conn, f"{prefix}deaf", start=True)  # no OS: nobody answers the power button
    _resync(lab["admin"], lab["host"])
    vm = VirtualMachine.objects.get(uuid=dom.UUIDString())
    client = api.as_user(lab["admin"])

    task = _task(client.post(f"/api/vms/{vm.pk}/shutdown/", {"timeout": 5}, format="json"))
    assert task.state == "failed"
    assert "did not shut down within 5 s" in task.error
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    vm.refresh_from_db()
    assert vm.lock_id is None and vm.state == "running"

    task = _task(
        client.post(f"/api/vms/{vm.pk}/shutdown/", {"timeout": 5, "force": True}, format="json")
    )
    assert task.state == "succeeded", task.error
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert any("forcing it off" in e.message for e in task.log_entries.all())
