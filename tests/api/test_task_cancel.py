"""Cancelling tasks, and a Stop that preempts a pending shutdown or reboot, on the simulated
host: a queued task ends at once and is never sent or run again, a running one stops at a
safe point and undoes what it made, other conflicts still answer 409 naming the holder."""

from __future__ import annotations

import time
import types

import pytest

from hosts.driver.connection import get_connection
from hosts.driver.guest import Guest
from panel import taskrunner
from panel.choices import TaskState
from panel.models import Task
from tests.conftest import grant_host, run_queued_tasks
from vms import jobs
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme_sim(sim_placement, tenant, acme_users):
    return {**sim_placement, "tenant": tenant, **acme_users}


def _tenant_vm(acme_sim, state="running"):
    vm = VirtualMachine.objects.filter(host=acme_sim["host"], state=state).first()
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=acme_sim["tenant"])
    vm.refresh_from_db()
    return vm


def _task(response) -> Task:
    assert response.status_code == 202, response.content
    return Task.objects.get(pk=response.json()["task"]["id"])


def _domain_state(acme_sim, vm) -> int:
    return get_connection(acme_sim["host"]).lookupByUUIDString(str(vm.uuid)).state()[0]


# --- queued -----------------------------------------------------------------------------------


def test_cancel_of_a_queued_task_is_final_at_once_and_frees_the_vm(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    shutdown = _task(client.post(f"/api/vms/{vm.pk}/shutdown/"))
    response = client.post(f"/api/tasks/{shutdown.pk}/cancel/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["state"] == "cancelled"
    assert body["error"] == f"Cancelled by {acme_sim['member'].username}."
    vm.refresh_from_db()
    assert vm.lock_id is None
    assert vm.desired_state == vm.state == "running"  # wanted as it is again
    # Final: cancelling again says so.
    again = client.post(f"/api/tasks/{shutdown.pk}/cancel/")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def test_a_cancelled_task_is_never_sent_run_or_recovered(api, acme_sim, monkeypatch):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    shutdown = _task(client.post(f"/api/vms/{vm.pk}/shutdown/"))
    assert client.post(f"/api/tasks/{shutdown.pk}/cancel/").status_code == 200
    sent = []
    monkeypatch.setattr(taskrunner, "dispatch", lambda task_id, queue=None: sent.append(task_id))
    monkeypatch.setattr(taskrunner, "broker_was_emptied", lambda url=None: True)
    assert shutdown.pk not in taskrunner.resend_lost_tasks(everything=True)
    assert shutdown.pk not in taskrunner.resend_lost_tasks()
    assert taskrunner.requeue_orphaned_queued_tasks() == 0
    assert shutdown.pk not in taskrunner.recover_stale_tasks(force=True)
    assert sent == []
    # A message that was on its way already finds nothing to claim.
    assert taskrunner.execute(shutdown.pk) is False
    shutdown.refresh_from_db()
    assert shutdown.state == TaskState.CANCELLED and shutdown.started is None
    assert _domain_state(acme_sim, vm) == 1  # still running: nothing reached the host


def test_a_cancelled_queued_create_leaves_nothing(api, acme_sim):
    client = api.as_user(acme_sim["admin"])
    body = {
        "name": "cancel-me",
        "tenant": acme_sim["tenant"].pk,
        "host": acme_sim["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
        "disks": [{"size_gib": 1, "pool": acme_sim["pool"].pk, "format": "qcow2"}],
    }
    create = _task(client.post("/api/vms/", body, format="json"))
    assert client.post(f"/api/tasks/{create.pk}/cancel/").status_code == 200
    assert not VirtualMachine.objects.filter(name="cancel-me").exists()
    run_queued_tasks()
    conn = get_connection(acme_sim["host"])
    assert "cancel-me" not in [d.name() for d in conn.listAllDomains()]
    assert not [
        v for v in conn.storagePoolLookupByName("default").listVolumes() if "cancel-me" in v
    ]


# --- running: safe points and rollback ---------------------------------------------------------


def test_a_create_cancelled_while_it_runs_stops_before_the_next_step_and_rolls_back(
    api, acme_sim, monkeypatch
):
    client = api.as_user(acme_sim["admin"])
    body = {
        "name": "half-made",
        "tenant": acme_sim["tenant"].pk,
        "host": acme_sim["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
        "disks": [{"size_gib": 1, "pool": acme_sim["pool"].pk, "format": "qcow2"}],
    }
    create = _task(client.post("/api/vms/", body, format="json"))
    real_create_volume = jobs.storage.create_volume
    made = []

    def create_then_cancel(conn, pool, name, size, fmt):
        vol = real_create_volume(conn, pool, name, size, fmt)
        made.append(vol["path"])
        # The user presses Cancel while the volume is being made: the request is noted.
        answer = client.post(f"/api/tasks/{create.pk}/cancel/")
        assert answer.status_code == 202, answer.content
        assert answer.json()["state"] == "running"
        return vol

    monkeypatch.setattr(jobs.storage, "create_volume", create_then_cancel)
    assert taskrunner.execute(create.pk) is True
    create.refresh_from_db()
    assert create.state == TaskState.CANCELLED
    assert create.error == f"Cancelled by {acme_sim['admin'].username}."
    messages = list(create.log_entries.values_list("message", flat=True))
    assert any("Rolling back" in m for m in messages)
    assert not any(m == "Defining the domain" for m in messages)  # stopped before that step
    conn = get_connection(acme_sim["host"])
    assert "half-made" not in [d.name() for d in conn.listAllDomains()]
    assert made and not jobs.storage.volume_exists(conn, "default", made[0].rsplit("/", 1)[-1])
    assert not VirtualMachine.objects.filter(name="half-made").exists()


def test_a_shutdown_waiting_for_the_guest_stops_at_a_cancel(api, acme_sim, monkeypatch):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    shutdown = _task(client.post(f"/api/vms/{vm.pk}/shutdown/", {"timeout": 60}, format="json"))
    monkeypatch.setattr(Guest, "shutdown", lambda self: None)  # a guest that ignores ACPI
    asked = []

    def sleep(seconds):
        if not asked:  # the user presses Cancel during the wait
            answer = client.post(f"/api/tasks/{shutdown.pk}/cancel/")
            asked.append(answer.status_code)
        time.sleep(0.01)

    monkeypatch.setattr(jobs, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    started = time.monotonic()
    assert taskrunner.execute(shutdown.pk) is True
    assert time.monotonic() - started < 10  # not the 60 s timeout
    assert asked == [202]
    shutdown.refresh_from_db()
    assert shutdown.state == TaskState.CANCELLED
    assert shutdown.params["wait_until"]  # the countdown's deadline was written
    vm.refresh_from_db()
    assert vm.lock_id is None and vm.state == "running"
    assert vm.desired_state == "running"  # wanted as it is again


def test_a_running_task_without_a_safe_point_refuses_with_its_reason(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    reboot = _task(client.post(f"/api/vms/{vm.pk}/reboot/"))
    assert taskrunner.claim(reboot.pk, "worker-1")
    response = client.post(f"/api/tasks/{reboot.pk}/cancel/")
    assert response.status_code == 409
    assert "cannot be stopped halfway" in response.json()["detail"]
    reboot.refresh_from_db()
    assert reboot.state == TaskState.RUNNING and reboot.cancel_requested is None


def test_recovery_of_a_dead_worker_task_asked_to_cancel_ends_it_cancelled(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    shutdown = _task(client.post(f"/api/vms/{vm.pk}/shutdown/"))
    assert taskrunner.claim(shutdown.pk, "dead-worker")
    assert client.post(f"/api/tasks/{shutdown.pk}/cancel/").status_code == 202
    assert taskrunner.recover_stale_tasks(force=True) == [shutdown.pk]
    shutdown.refresh_from_db()
    assert shutdown.state == TaskState.CANCELLED
    assert shutdown.error.startswith(f"Cancelled by {acme_sim['member'].username}.")
    # Final: no later sweep touches it.
    assert taskrunner.recover_stale_tasks(force=True) == []


# --- permissions ------------------------------------------------------------------------------


def test_who_may_run_the_action_may_cancel_it(api, acme_sim, other_tenant, make_member):
    vm = _tenant_vm(acme_sim)
    shutdown = _task(api.as_user(acme_sim["member"]).post(f"/api/vms/{vm.pk}/shutdown/"))
    url = f"/api/tasks/{shutdown.pk}/cancel/"
    assert api.as_user(acme_sim["viewer"]).post(url).status_code == 403
    assert api.as_user(make_member(other_tenant, "admin")).post(url).status_code == 404
    shutdown.refresh_from_db()
    assert shutdown.state == TaskState.QUEUED
    assert api.as_user(acme_sim["operator"]).post(url).status_code == 200


def test_a_member_may_not_cancel_a_create(api, acme_sim):
    grant_host(acme_sim["tenant"], acme_sim["host"])
    body = {
        "name": "kept",
        "tenant": acme_sim["tenant"].pk,
        "host": acme_sim["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
    }
    create = _task(api.as_user(acme_sim["operator"]).post("/api/vms/", body, format="json"))
    url = f"/api/tasks/{create.pk}/cancel/"
    assert api.as_user(acme_sim["member"]).post(url).status_code == 403
    assert api.as_user(acme_sim["operator"]).post(url).status_code == 200


# --- Stop preempts ----------------------------------------------------------------------------


@pytest.mark.parametrize("pending", ["shutdown", "reboot"])
def test_stop_preempts_a_queued_shutdown_or_reboot(api, acme_sim, pending):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    first = _task(client.post(f"/api/vms/{vm.pk}/{pending}/"))
    stop = _task(client.post(f"/api/vms/{vm.pk}/stop/"))
    first.refresh_from_db()
    vm.refresh_from_db()
    assert first.state == TaskState.CANCELLED
    assert vm.lock_id == stop.pk and vm.desired_state == "shutoff"
    run_queued_tasks()
    stop.refresh_from_db()
    assert stop.state == TaskState.SUCCEEDED
    assert _domain_state(acme_sim, vm) == 5  # shut off


def test_stop_preempts_a_running_shutdown_whose_worker_then_does_nothing(
    api, acme_sim, monkeypatch
):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    shutdown = _task(client.post(f"/api/vms/{vm.pk}/shutdown/"))
    monkeypatch.setattr(Guest, "shutdown", lambda self: None)  # the guest ignores ACPI
    stops = []

    def sleep(seconds):
        if not stops:  # Stop pressed while the shutdown waits
            stops.append(_task(client.post(f"/api/vms/{vm.pk}/stop/")))
        time.sleep(0.01)

    monkeypatch.setattr(jobs, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    assert taskrunner.execute(shutdown.pk) is True
    shutdown.refresh_from_db()
    assert shutdown.state == TaskState.CANCELLED
    assert shutdown.error == f"Cancelled by {acme_sim['member'].username}."
    vm.refresh_from_db()
    assert vm.lock_id == stops[0].pk  # the shutdown's worker left the Stop's lock alone
    assert vm.desired_state == "shutoff"  # and what the Stop wants
    run_queued_tasks()
    stops[0].refresh_from_db()
    assert stops[0].state == TaskState.SUCCEEDED
    assert _domain_state(acme_sim, vm) == 5


def test_other_conflicts_still_answer_409_naming_the_holder(api, acme_sim):
    vm = _tenant_vm(acme_sim)
    client = api.as_user(acme_sim["member"])
    snap = _task(client.post(f"/api/vms/{vm.pk}/snapshots/", {"name": "s1"}, format="json"))
    response = client.post(f"/api/vms/{vm.pk}/stop/")
    assert response.status_code == 409
    assert response.json()["task"]["id"] == snap.pk
    snap.refresh_from_db()
    assert snap.state == TaskState.QUEUED
    # Only Stop preempts: a Reset over a pending shutdown is still a conflict.
    client.post(f"/api/tasks/{snap.pk}/cancel/")
    shutdown = _task(client.post(f"/api/vms/{vm.pk}/shutdown/"))
    response = client.post(f"/api/vms/{vm.pk}/reset/")
    assert response.status_code == 409 and response.json()["task"]["id"] == shutdown.pk
