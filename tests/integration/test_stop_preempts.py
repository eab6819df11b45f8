"""Stop during a pending shutdown, on the real libvirtd: a guest that ignores ACPI (a domain with
no OS; the tiny guest runs acpid and would power off) is asked to shut down with a long timeout,
then stopped a few seconds later: the shutdown ends cancelled at once, the stop runs, the VM is
off."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest
from django.db import connection

from hosts import services as host_services
from panel.models import Task
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

from .guests import define

# Real commits: the shutdown runs (eagerly, as a worker would) in its own thread while this one
# presses Stop.
pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_stop_preempts_a_shutdown_the_guest_ignores(api, lab):
    conn, prefix = lab["conn"], lab["prefix"]
    dom = define(conn, f"{prefix}deaf", start=True)  # no OS: nobody answers the power button
    host_services.host_sync(user=lab["admin"], host=lab["host"])
    run_queued_tasks()
    vm = VirtualMachine.objects.get(uuid=dom.UUIDString())
    assert vm.state == "running"

    answers = {}

    def press_shutdown():
        try:
            client = api.as_user(lab["admin"])
            answers["shutdown"] = client.post(
                f"/api/vms/{vm.pk}/shutdown/", {"timeout": 120}, format="json"
            )
        finally:
            connection.close()

    pressed = time.monotonic()
    worker = threading.Thread(target=press_shutdown, daemon=True)
    worker.start()
    # The shutdown task is running and waiting for the guest.
    deadline = time.monotonic() + 30
    shutdown = None
    while time.monotonic() < deadline:
        shutdown = Task.objects.filter(vm=vm, kind="vm.power", state="running").first()
        if shutdown is not None and shutdown.params.get("wait_until"):
            break
        time.sleep(0.2)
    assert shutdown is not None and shutdown.params.get("wait_until"), "the shutdown never waited"
    time.sleep(2)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # the guest ignored the button

    stop = api.as_user(lab["admin"]).post(f"/api/vms/{vm.pk}/stop/")
    assert stop.status_code == 202, stop.content
    worker.join(30)
    assert not worker.is_alive(), "the shutdown kept waiting after the Stop"
    assert time.monotonic() - pressed < 60  # far from the 120 s timeout

    shutdown.refresh_from_db()
    assert shutdown.state == "cancelled"
    assert shutdown.error == f"Cancelled by {lab['admin'].username}."
    stop_task = Task.objects.get(pk=stop.json()["task"]["id"])
    run_queued_tasks()  # eager already ran it; nothing is left queued either way
    stop_task.refresh_from_db()
    assert stop_task.state == "succeeded", stop_task.error
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    vm.refresh_from_db()
    assert vm.state == "shutoff" and vm.lock_id is None
