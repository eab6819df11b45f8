"""The VM lifecycle on the real libvirtd + QEMU: libvirt agrees at every step."""

from __future__ import annotations

import json
import os
import subprocess

import libvirt
import pytest
from lxml import etree

from panel.models import Task
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _ok(response, status=202):
    assert response.status_code == status, response.content
    return response.json()


def _run_and_check(task_id: int) -> Task:
    run_queued_tasks()
    task = Task.objects.get(pk=task_id)
    assert task.state == "succeeded", (task.kind, task.error)
    return task


def _qemu_img(path: str) -> dict:
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-U", path], capture_output=True, check=True
    )
    return json.loads(out.stdout)


def test_lifecycle_on_real_libvirt(api, lab):
    conn, prefix = lab["conn"], lab["prefix"]
    client = api.as_user(lab["admin"])
    name = f"{prefix}vm"

    # Create and start: a running domain with its qcow2 volume, VNC on loopback, a serial
    # console and spare PCIe root ports.
    body = _ok(
        client.post(
            "/api/vms/",
            {
                "name": name,
                "tenant": lab["tenant"].pk,
                "host": lab["host"].pk,
                "vcpus": 1,
                "max_vcpus": 2,
                "memory_mib": 96,
                "disks": [{"size_gib": 1, "pool": lab["pool"].pk, "format": "qcow2"}],
                "nics": [{"network": lab["net"].pk}],
                "start": True,
            },
            format="json",
        )
    )
    _run_and_check(body["task"]["id"])
    vm_id = body["vm"]["id"]
    dom = conn.lookupByName(name)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    live = etree.fromstring(dom.XMLDesc(0).encode())
    assert live.find("devices/graphics[@type='vnc']").get("listen") == "127.0.0.1"
    assert live.find("devices/serial") is not None
    assert len(live.findall("devices/controller[@model='pcie-root-port']")) >= 6
    disk_path = live.find("devices/disk[@device='disk']/source").get("file")
    info = _qemu_img(disk_path)
    assert info["format"] == "qcow2" and info["virtual-size"] == 1024**3
    vm = VirtualMachine.objects.get(pk=vm_id)
    assert vm.state == "running" and vm.lifecycle == "ready"
    assert vm.nics.get().mac == live.find("devices/interface/mac").get("address")

    # Hot-plug a second disk into the running VM.
    task = _ok(
        client.post(
            f"/api/vms/{vm_id}/disks/",
            {"size_gib": 0.5, "pool": lab["pool"].pk, "format": "qcow2"},
            format="json",
        )
    )["task"]
    _run_and_check(task["id"])
    live = etree.fromstring(dom.XMLDesc(0).encode())
    assert sorted(t.get("dev") for t in live.findall("devices/disk/target")) == ["vda", "vdb"]
    assert VirtualMachine.objects.get(pk=vm_id).disks.filter(target="vdb", owned=True).exists()

    # Live vCPU hot-plug up to the maximum.
    task = _ok(client.patch(f"/api/vms/{vm_id}/", {"vcpus": 2}, format="json"))["task"]
    _run_and_check(task["id"])
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2

    # QEMU cannot restore a memory snapshot taken after a vCPU hot-plug: refused, with why.
    refused = client.post(f"/api/vms/{vm_id}/snapshots/", {"name": "s0"}, format="json")
    assert refused.status_code == 400 and "hot-plugged" in str(refused.json())
    _run_and_check(_ok(client.post(f"/api/vms/{vm_id}/stop/"))["task"]["id"])
    _run_and_check(_ok(client.post(f"/api/vms/{vm_id}/start/"))["task"]["id"])
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2

    # Snapshot with memory state, then revert to it after a change.
    task = _ok(client.post(f"/api/vms/{vm_id}/snapshots/", {"name": "s1"}, format="json"))["task"]
    _run_and_check(task["id"])
    snap = dom.snapshotLookupByName("s1", 0)
    assert etree.fromstring(snap.getXMLDesc(0).encode()).findtext("state") == "running"
    tree = client.get(f"/api/vms/{vm_id}/snapshots/").json()
    assert [s["name"] for s in tree] == ["s1"] and tree[0]["is_current"] is True
    _run_and_check(_ok(client.post(f"/api/vms/{vm_id}/pause/"))["task"]["id"])
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    _run_and_check(_ok(client.post(f"/api/vms/{vm_id}/snapshots/s1/revert/"))["task"]["id"])
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING

    # Cloning a running VM is refused with the reason.
    refused = client.post(f"/api/vms/{vm_id}/clone/", {"name": f"{prefix}copy"}, format="json")
    assert refused.status_code == 409 and "shut it down" in refused.json()["detail"]

    # Stop, then delete the snapshot and grow the first disk offline.
    _run_and_check(_ok(client.post(f"/api/vms/{vm_id}/stop/"))["task"]["id"])
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    _run_and_check(_ok(client.delete(f"/api/vms/{vm_id}/snapshots/s1/"))["task"]["id"])
    assert dom.snapshotNum(0) == 0
    vda = VirtualMachine.objects.get(pk=vm_id).disks.get(target="vda")
    shrink = client.post(
        f"/api/vms/{vm_id}/disks/{vda.pk}/resize/", {"size_gib": 0.5}, format="json"
    )
    assert shrink.status_code == 400 and "Shrinking is refused" in str(shrink.json())
    task = _ok(
        client.post(f"/api/vms/{vm_id}/disks/{vda.pk}/resize/", {"size_gib": 2}, format="json")
    )
    _run_and_check(task["task"]["id"])
    assert _qemu_img(disk_path)["virtual-size"] == 2 * 1024**3

    # Full clone: new domain, new volumes, new MACs.
    body = _ok(client.post(f"/api/vms/{vm_id}/clone/", {"name": f"{prefix}full"}, format="json"))
    _run_and_check(body["task"]["id"])
    clone = conn.lookupByName(f"{prefix}full")
    clone_xml = etree.fromstring(clone.XMLDesc(0).encode())
    clone_disk = clone_xml.find("devices/disk[@device='disk']/source").get("file")
    assert clone_disk != disk_path and "backing-filename" not in _qemu_img(clone_disk)
    assert clone_xml.find("devices/interface/mac").get("address") != vm.nics.get().mac

    # Template, then a linked clone backed by the template's volume.
    _ok(client.post(f"/api/vms/{vm_id}/template/"), status=200)
    body = _ok(
        client.post(
            f"/api/vms/{vm_id}/clone/", {"name": f"{prefix}linked", "mode": "linked"}, format="json"
        )
    )
    _run_and_check(body["task"]["id"])
    linked = conn.lookupByName(f"{prefix}linked")
    linked_disk = (
        etree.fromstring(linked.XMLDesc(0).encode())
        .find("devices/disk[@device='disk']/source")
        .get("file")
    )
    assert _qemu_img(linked_disk)["backing-filename"] == disk_path
    from hosts.models import Volume

    assert Volume.objects.get(path=linked_disk).backing_depth == 2
    assert client.post(f"/api/vms/{vm_id}/start/").status_code == 400  # templates don't start

    # The template's base image stays while the linked clone uses it.
    refused = client.delete(f"/api/vms/{vm_id}/?delete_volumes=true")
    assert refused.status_code == 400 and "Linked clones" in str(refused.json())

    # Delete the clones with their volumes, then the template.
    for clone_name in (f"{prefix}linked", f"{prefix}full"):
        clone_vm = VirtualMachine.objects.get(name=clone_name)
        _run_and_check(
            _ok(client.delete(f"/api/vms/{clone_vm.pk}/?delete_volumes=true"))["task"]["id"]
        )
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(clone_name)
    assert not os.path.exists(linked_disk) and not os.path.exists(clone_disk)
    _run_and_check(_ok(client.delete(f"/api/vms/{vm_id}/?delete_volumes=true"))["task"]["id"])
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(name)
    assert not os.path.exists(disk_path)
    assert not VirtualMachine.objects.filter(name__startswith=prefix).exists()


def test_failed_create_leaves_nothing_behind(api, lab):
    """A libvirt error mid-task fails the task with libvirt's message and rolls back."""
    conn, prefix = lab["conn"], lab["prefix"]
    client = api.as_user(lab["admin"])
    name = f"{prefix}doomed"
    body = _ok(
        client.post(
            "/api/vms/",
            {
                "name": name,
                "tenant": lab["tenant"].pk,
                "host": lab["host"].pk,
                "vcpus": 1,
                "memory_mib": 64,
                "disks": [{"size_gib": 1, "pool": lab["pool"].pk}],
                "nics": [{"network": lab["net"].pk}],
                "start": True,
            },
            format="json",
        )
    )
    # The network vanishes from the host after the request was validated: the volume gets
    # made and the domain defined, then starting it fails.
    net = conn.networkLookupByName(f"{prefix}net")
    net.destroy()
    run_queued_tasks()
    task = Task.objects.get(pk=body["task"]["id"])
    assert task.state == "failed"
    assert f"{prefix}net" in task.error  # libvirt's own message names the network
    messages = [e.message for e in task.log_entries.all()]
    assert any("Rolling back" in m for m in messages)
    assert not VirtualMachine.objects.filter(name=name).exists()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(name)
    pool = conn.storagePoolLookupByName(f"{prefix}pool")
    pool.refresh(0)
    assert pool.listVolumes() == []
    assert not VirtualMachine.objects.filter(lock__isnull=False).exists()
    net.create()
