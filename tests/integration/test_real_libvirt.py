"""A real libvirtd host (qemu:///system): add it through the API and see its domains."""

from __future__ import annotations

import os
import uuid

import libvirt
import pytest

from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

from .guests import PREFIX, cleanup, define

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def qemu():
    conn = libvirt.open("qemu:///system")
    prefix = f"{PREFIX}{uuid.uuid4().hex[:6]}-"
    yield conn, prefix
    cleanup(conn, prefix)
    conn.close()


def test_real_host_shows_its_domains_with_their_states(api, admin_user, qemu):
    conn, prefix = qemu
    running = define(conn, f"{prefix}running", start=True)
    stopped = define(conn, f"{prefix}stopped")

    client = api.as_user(admin_user)
    response = client.post("/api/hosts/", {"name": "local", "uri": "qemu:///system"}, format="json")
    assert response.status_code == 201, response.content
    host_id = response.json()["id"]
    run_queued_tasks()

    host = client.get(f"/api/hosts/{host_id}/").json()
    assert host["status"] == "online", host["last_error"]
    assert host["simulated"] is False
    assert host["hypervisor"] == "QEMU"
    assert host["cpus"] == os.cpu_count()
    assert len(host["numa_cells"]) >= 1
    assert "qemu" in host["virt_types"]

    vms = {
        v["name"]: v for v in client.get(f"/api/vms/?host={host_id}&limit=1000").json()["results"]
    }
    assert vms[f"{prefix}running"]["state"] == "running"
    assert vms[f"{prefix}running"]["uuid"] == running.UUIDString()
    assert vms[f"{prefix}stopped"]["state"] == "shutoff"
    assert vms[f"{prefix}running"]["memory_mib"] == 64

    # A change made on the host is the inventory's truth after the next sync.
    running.destroy()
    stopped.undefine()
    client.post(f"/api/hosts/{host_id}/sync/")
    run_queued_tasks()
    vm = VirtualMachine.objects.get(uuid=running.UUIDString())
    assert vm.state == "shutoff" and vm.desired_state == "shutoff"
    assert VirtualMachine.objects.get(name=f"{prefix}stopped").gone is True


def test_forgetting_a_real_host_leaves_its_domains_alone(api, admin_user, qemu):
    conn, prefix = qemu
    dom = define(conn, f"{prefix}keep", start=True)
    client = api.as_user(admin_user)
    host_id = client.post(
        "/api/hosts/", {"name": "local", "uri": "qemu:///system"}, format="json"
    ).json()["id"]
    run_queued_tasks()
    assert client.delete(f"/api/hosts/{host_id}/").status_code == 204
    assert conn.lookupByUUIDString(dom.UUIDString()).isActive()


def test_kvm_that_qemu_cannot_open_falls_back_to_tcg(api, client, admin_user, monkeypatch):
    """libvirt lists kvm, but QEMU's user may not open /dev/kvm: the host says so, uses TCG."""
    from hosts import sync
    from hosts.kvm import kvm_problem
    from vms.services import default_virt_type

    monkeypatch.setattr(sync, "kvm_problem", lambda: "QEMU runs as 'libvirt-qemu', which may not")
    rest = api.as_user(admin_user)
    response = rest.post("/api/hosts/", {"name": "local", "uri": "qemu:///system"}, format="json")
    run_queued_tasks()
    host = rest.get(f"/api/hosts/{response.json()['id']}/").json()
    assert host["status"] == "online", host["last_error"]
    assert "kvm" not in host["virt_types"] and "qemu" in host["virt_types"]
    assert host["kvm_note"].startswith("QEMU runs as")
    from hosts.models import Host

    assert default_virt_type(Host.objects.get(pk=host["id"])) == "qemu"
    ui = client
    ui.force_login(admin_user)
    page = ui.get(f"/hosts/{host['id']}/")
    assert b"data-kvm-note" in page.content

    # This machine, as the set-up script leaves it: QEMU may open /dev/kvm where it exists.
    monkeypatch.undo()
    if os.path.exists("/dev/kvm"):
        assert kvm_problem() == ""
