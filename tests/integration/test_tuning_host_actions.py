"""Tuning's host actions through the executor: over the project's sshd and locally on this
machine's real files (read back, nothing changed but what the hugepage tests give back), and
on the simulated host's sandbox root for what this machine cannot change (IRQ affinity, halt
polling, THP, KSM) — applied by a ``vm.tune`` task, reverted newest first when the domain part
fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from hosts.actions.tuning import HugetlbfsMounted, IrqAffinity, KernelCmdline, hugetlbfs_mounts
from hosts.executor import executor_for
from hosts.models import Host
from panel.models import Task
from tests.conftest import run_queued_tasks
from tests.integration import sshd as sshd_helpers
from tuning.models import DedicatedCpu, VmTuning
from tuning.profiles import ensure_builtins
from vms import domxml
from vms.models import VirtualMachine

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

ssh_client_key = sshd_helpers.ssh_client_key
sshd = sshd_helpers.sshd
paddock_ssh_key = sshd_helpers.paddock_ssh_key


def test_checks_over_ssh_read_what_this_machine_has(sshd, paddock_ssh_key):
    host = Host.objects.create(name="tune-ssh", uri=sshd.uri, ssh_host_key=sshd.host_key.public)
    local = Host.objects.create(name="tune-local", uri="qemu:///system")
    remote, here = executor_for(host), executor_for(local)
    mounts = hugetlbfs_mounts(Path("/proc/mounts").read_text())
    assert remote.check(HugetlbfsMounted(2048)) == mounts.get(2048) == "/dev/hugepages"
    cmdline = Path("/proc/cmdline").read_text().strip()
    assert remote.check(KernelCmdline()) == here.check(KernelCmdline()) == cmdline
    irqs = remote.check(IrqAffinity([0]))
    assert irqs == here.check(IrqAffinity([0]))
    for irq, value in list(irqs.items())[:5]:
        assert Path(f"/proc/irq/{irq}/smp_affinity_list").read_text().strip() == value


HOST_KNOBS = {"halt_poll_ns": 50000, "thp": "never", "ksm": True, "irq_affinity": True}


def _sandbox(host) -> Path:
    return Path(settings.DATA_DIR) / "simhosts" / str(host.pk)


def _read(host, path: str) -> str:
    return (_sandbox(host) / path.lstrip("/")).read_text().strip()


@pytest.fixture
def tuned_world(synced_host, admin_user, api):
    ensure_builtins()
    # a fresh sandbox (an earlier test's host may have had the same id)
    shutil.rmtree(_sandbox(synced_host), ignore_errors=True)
    # one vCPU: it is pinned on pCPU 1 (libvirt's test driver holds pins on its 8 pCPUs only)
    vm = (
        VirtualMachine.objects.filter(host=synced_host, state="running", vcpus=1)
        .order_by("name")
        .first()
    )
    client = api.as_user(admin_user)
    knobs = {"cpu": {"placement": "dedicated"}, "host": HOST_KNOBS}
    response = client.post("/api/tuning-policies/", {"name": "hostly", "knobs": knobs},
                           format="json")  # fmt: skip
    assert response.status_code == 201, response.content
    # the housekeeping set inside the test driver's 8 pCPUs too
    response = client.put(f"/api/hosts/{synced_host.pk}/tuning/", {"cpus": [0]}, format="json")
    assert response.status_code == 200, response.content
    synced_host.refresh_from_db()
    return {"host": synced_host, "vm": vm, "client": client}


def test_host_knobs_are_applied_on_the_sandbox_and_reverted_when_the_domain_part_fails(
    tuned_world, monkeypatch
):
    host, vm, client = tuned_world["host"], tuned_world["vm"], tuned_world["client"]
    executor_for(host).check(KernelCmdline())  # the sandbox exists, seeded as a fresh host
    plan = client.post(f"/api/vms/{vm.pk}/tuning/plan/", {"policy": "hostly"}, format="json")
    assert plan.status_code == 200, plan.content
    kinds = [a["kind"] for a in plan.json()["host_actions"]]
    assert kinds.count("sysfs.value") == 3 and "tuning.irq_affinity" in kinds

    # The domain part fails: every host action is put back, newest first.
    def refuse(xml, domain):
        raise RuntimeError("the definition was refused")

    monkeypatch.setattr(domxml, "tuned_xml", refuse)
    response = client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "hostly"}, format="json")
    assert response.status_code == 202, response.content
    run_queued_tasks()
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.state == "failed" and "refused" in task.error
    assert _read(host, "/sys/module/kvm/parameters/halt_poll_ns") == "200000"
    assert _read(host, "/sys/kernel/mm/transparent_hugepage/enabled") == "always [madvise] never"
    assert _read(host, "/sys/kernel/mm/ksm/run") == "0"
    assert _read(host, "/proc/irq/24/smp_affinity_list") == "0-31"
    assert not DedicatedCpu.objects.filter(vm=vm).exists()  # the failed task's promise is gone
    messages = " ".join(e.message for e in task.log_entries.all())
    assert "Undone" in messages

    monkeypatch.undo()
    response = client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "hostly"}, format="json")
    run_queued_tasks()
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.state == "succeeded", task.error
    assert _read(host, "/sys/module/kvm/parameters/halt_poll_ns") == "50000"
    assert "[never]" in _read(host, "/sys/kernel/mm/transparent_hugepage/enabled")
    assert _read(host, "/sys/kernel/mm/ksm/run") == "1"
    assert _read(host, "/proc/irq/24/smp_affinity_list") == "0"  # the housekeeping set
    assert VmTuning.objects.get(vm=vm).applied_at is not None
    assert list(DedicatedCpu.objects.filter(vm=vm).values_list("cpu", flat=True)) == [1]


def test_a_shut_off_simulated_vm_is_tuned_in_its_definition_and_read_back(tuned_world):
    host, client = tuned_world["host"], tuned_world["client"]
    vm = VirtualMachine.objects.filter(host=host, state="shutoff", vcpus=1).order_by("name").first()
    response = client.post(f"/api/vms/{vm.pk}/tuning/apply/", {"policy": "hostly"}, format="json")
    assert response.status_code == 202, response.content
    run_queued_tasks()
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.state == "succeeded", task.error
    tuning = VmTuning.objects.get(vm=vm)
    assert tuning.plan["domain"]["vcpupin"] == {"0": "1"} and tuning.restart_needed == []
