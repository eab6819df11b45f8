"""Tuning on the real libvirtd, end to end through the API, read back with ``virsh`` itself.

This machine has 2 pCPUs on one NUMA node: the housekeeping set is pCPU 0 (the first core of
the node), so a ``dedicated`` policy pins the tiny guest's one vCPU on pCPU 1, its emulator
threads on pCPU 0, its memory strictly on node 0 in 2 MiB hugepages the plan reserves through
a host action (``/sys/.../nr_hugepages``, given back after the test), its disk with
``cache=none io=native`` and an I/O limit, its CPU shares doubled. Pins, shares and the I/O
limit change live; NUMA and hugepages after the restart the plan asks for. Then a pin changed
with ``virsh vcpupin`` is drift after one reconcile, and re-applying clears it; a policy that
cannot fit here is refused with its reasons and changes nothing.
"""

from __future__ import annotations

import re
import subprocess

import libvirt
import pytest

from hosts import services as host_services
from metrics.views import render
from panel.models import Task
from tests.conftest import run_queued_tasks
from tuning.models import DedicatedCpu, HugepageAllocation, VmTuning
from vms import jobs as vms_jobs
from vms.models import VirtualMachine

from .hugepages import pages
from .tinyguest import create_raw_disk, disk_xml, image_dir

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

DEDICATED = {
    "cpu": {"placement": "dedicated", "emulator": "share", "shares": 2048},
    "numa": {"mode": "strict"},
    "memory": {"hugepages": "2M", "balloon": {"enabled": False, "period": 0, "autodeflate": False}},
    "disk": {"cache": "none", "io": "native", "throttle": {"total_iops_sec": 500}},
}


def virsh(*args: str) -> str:
    return subprocess.run(
        ["virsh", "-c", "qemu:///system", *args], capture_output=True, text=True, check=True,
        timeout=30,
    ).stdout  # fmt: skip


def vcpu_affinity(name: str) -> dict[str, str]:
    """``virsh vcpupin``: vCPU -> affinity (" 0      1")."""
    return dict(re.findall(r"^\s*(\d+)\s+(\S+)\s*$", virsh("vcpupin", name), re.M))


def huge_free() -> int:
    text = open("/proc/meminfo").read()
    return int(re.search(r"HugePages_Free:\s+(\d+)", text).group(1))


def _task(response) -> Task:
    assert response.status_code == 202, response.content
    run_queued_tasks()
    return Task.objects.get(pk=response.json()["task"]["id"])


def _resync(lab) -> None:
    host_services.host_sync(user=lab["admin"], host=lab["host"])
    run_queued_tasks()


def test_a_dedicated_policy_applies_verifies_drifts_and_refuses_what_cannot_fit(
    hugepages_given_back, api, lab, make_tiny_guest
):
    guest = make_tiny_guest("tune")
    disk = create_raw_disk(image_dir() / f"{guest.name}-vdb.raw", 16)
    guest.dom.attachDeviceFlags(disk_xml(disk, "vdb"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    guest.start()
    _resync(lab)
    vm = VirtualMachine.objects.get(uuid=guest.dom.UUIDString())
    assert vm.state == "running"
    client = api.as_user(lab["admin"])

    response = client.post(
        "/api/tuning-policies/", {"name": "pin-one", "knobs": DEDICATED}, format="json"
    )
    assert response.status_code == 201, response.content

    # What applying would do, before anything changes.
    plan = client.post(f"/api/vms/{vm.pk}/tuning/plan/", {"policy": "pin-one"}, format="json")
    assert plan.status_code == 200, plan.content
    plan = plan.json()
    assert plan["domain"]["vcpupin"] == {"0": "1"} and plan["domain"]["emulatorpin"] == "0"
    assert {"kind": "sysfs.hugepages", "count": hugepages_given_back + 64, "size_kib": 2048,
            "node": 0} in plan["host_actions"]  # fmt: skip
    assert "<vcpupin" in plan["diff"]

    free_before = huge_free()
    task = _task(
        client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "pin-one"}, format="json")
    )
    assert task.state == "succeeded", task.error
    assert pages() == hugepages_given_back + 64  # reserved through the host action
    assert huge_free() == free_before + 64
    assert vcpu_affinity(guest.name) == {"0": "1"}
    assert re.search(r"\*:\s+0\b", virsh("emulatorpin", guest.name))
    assert re.search(r"cpu_shares\s*:\s*2048", virsh("schedinfo", guest.name))
    assert re.search(r"total_iops_sec\s*:\s*500", virsh("blkdeviotune", guest.name, "vdb"))
    status = client.get(f"/api/vms/{vm.pk}/tuning/").json()
    assert status["applied_policy"] == "pin-one" and status["drift"] is False
    assert any("NUMA" in why for why in status["restart_needed"]), status
    # the ledger holds pCPU 1 and 64 pages for this VM
    assert list(DedicatedCpu.objects.filter(vm=vm).values_list("cpu", flat=True)) == [1]
    assert HugepageAllocation.objects.get(vm=vm).pages == 64

    # Restart through Paddock: the guest comes up strict on node 0, in hugepages.
    assert _task(client.post(f"/api/vms/{vm.pk}/stop/", {}, format="json")).state == "succeeded"
    assert _task(client.post(f"/api/vms/{vm.pk}/start/", {}, format="json")).state == "succeeded"
    assert guest.dom.isActive()
    assert re.search(r"numa_mode\s*:\s*strict", virsh("numatune", guest.name))
    assert re.search(r"numa_nodeset\s*:\s*0", virsh("numatune", guest.name))
    xml = virsh("dumpxml", guest.name)
    assert "<hugepages>" in xml and "cache='none'" in xml and "io='native'" in xml
    assert huge_free() == free_before, "the guest's memory is in the reserved hugepages"
    assert vcpu_affinity(guest.name) == {"0": "1"}
    _resync(lab)
    tuning = VmTuning.objects.get(vm=vm)
    assert tuning.drift is False
    assert tuning.restart_needed == []  # it runs as a new domain (a new id): restarted

    # Drift: a pin changed on the host is flagged by the next reconcile, never undone.
    virsh("vcpupin", guest.name, "0", "0", "--live")
    _resync(lab)
    tuning = VmTuning.objects.get(vm=vm)
    assert tuning.drift is True
    assert {"what": "vcpupin 0", "expected": "1", "actual": "0"} in tuning.drift_details
    assert vcpu_affinity(guest.name) == {"0": "0"}
    listed = client.get("/api/vms/?drift=true").json()
    assert [v["id"] for v in listed["results"]] == [vm.pk]
    drifted = [
        line
        for line in render().splitlines()
        if line.startswith("paddock_vm_tuning_drift{") and f'vm="{guest.name}"' in line
    ]
    assert drifted and drifted[0].endswith(" 1")  # fmt: skip

    # Re-apply clears it.
    task = _task(
        client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "pin-one"}, format="json")
    )
    assert task.state == "succeeded", task.error
    assert vcpu_affinity(guest.name) == {"0": "1"}
    assert VmTuning.objects.get(vm=vm).drift is False

    # What cannot fit here is refused with its reasons, and nothing changes.
    tasks = Task.objects.count()
    refused = client.post(
        f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "latency-critical"}, format="json"
    )
    assert refused.status_code == 409, refused.content
    reasons = " ".join(r for h in refused.json()["report"]["hosts"] for r in h["reasons"])
    assert "emulator" in reasons and "node 0" in reasons
    gig = dict(DEDICATED, memory={"hugepages": "1G", "balloon": {"enabled": False, "period": 0,
               "autodeflate": False}})  # fmt: skip
    client.post("/api/tuning-policies/", {"name": "gig", "knobs": gig}, format="json")
    vm.refresh_from_db()
    refused = client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "gig"}, format="json")
    assert refused.status_code == 409, refused.content
    assert "1G" in refused.content.decode() or "1 GiB" in refused.content.decode()
    assert Task.objects.count() == tasks
    assert vcpu_affinity(guest.name) == {"0": "1"}

    guest.dom.destroy()  # its hugepages are free again before the fixture gives them back


def test_an_apply_that_fails_after_the_live_changes_puts_the_running_guest_back(
    api, lab, make_tiny_guest, monkeypatch
):
    """Verification fails after pins, shares and a throttle went live: the rollback restores the
    definition and what the running guest had, read back with virsh."""
    guest = make_tiny_guest("tune-undo")
    disk = create_raw_disk(image_dir() / f"{guest.name}-vdb.raw", 16)
    guest.dom.attachDeviceFlags(disk_xml(disk, "vdb"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    guest.start()
    _resync(lab)
    vm = VirtualMachine.objects.get(uuid=guest.dom.UUIDString())
    client = api.as_user(lab["admin"])
    shares_before = re.search(r"cpu_shares\s*:\s*(\d+)", virsh("schedinfo", guest.name)).group(1)
    xml_before = virsh("dumpxml", "--inactive", guest.name)
    knobs = {"cpu": {"placement": "dedicated", "shares": 4096},
             "disk": {"throttle": {"total_iops_sec": 300}}}  # fmt: skip
    assert client.post("/api/tuning-policies/", {"name": "undo-me", "knobs": knobs},
                       format="json").status_code == 201  # fmt: skip

    monkeypatch.setattr(
        vms_jobs, "verify_tuning",
        lambda *a: [{"what": "vcpupin 0", "expected": "1", "actual": "0"}],
    )  # fmt: skip
    task = _task(client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "undo-me"},
                             format="json"))  # fmt: skip
    assert task.state == "failed" and "did not take the tuning" in task.error
    assert vcpu_affinity(guest.name) == {"0": "0-1"}  # unpinned again
    assert re.search(rf"cpu_shares\s*:\s*{shares_before}\b", virsh("schedinfo", guest.name))
    assert re.search(r"total_iops_sec\s*:\s*0\b", virsh("blkdeviotune", guest.name, "vdb"))
    assert "<cputune>" not in virsh("dumpxml", "--inactive", guest.name)
    assert "<cputune>" not in xml_before
    assert not DedicatedCpu.objects.filter(vm=vm).exists()
    guest.dom.destroy()
