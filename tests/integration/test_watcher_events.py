"""The pooled watcher on real hosts: ``virsh`` on the real libvirtd (``qemu:///system``) and
changes through a test-driver host's connection still become VM row updates and ``vm.updated``
events, carried by the fixed threads of one :class:`WatcherPool`; a manager of the other shard
does not watch the host."""

from __future__ import annotations

import subprocess
import threading

import pytest

from hosts.driver.connection import get_connection
from hosts.shards import Shard
from hosts.watcher import WatcherManager, WatcherPool, wait_until
from panel import events
from vms.models import VirtualMachine

from .guests import define

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def published(monkeypatch):
    """Every message panel.events sends, as it leaves for the channel layer."""
    sent: list[dict] = []
    lock = threading.Lock()
    real = events._send

    def record(groups, message):
        with lock:
            sent.append(message)
        real(groups, message)

    monkeypatch.setattr(events, "_send", record)
    return sent


@pytest.fixture
def pool():
    pool = WatcherPool(openers=2, appliers=2)
    yield pool
    pool.stop()


def virsh(*args: str) -> None:
    subprocess.run(["virsh", "-c", "qemu:///system", *args], check=True, capture_output=True)


def vm_updated(sent: list[dict], vm_id: int, state: str, since: int = 0) -> bool:
    """Whether a ``vm.updated`` of the VM in ``state`` was sent, from message ``since`` on."""
    return any(
        m.get("type") == "vm.updated" and m["id"] == vm_id and m["state"] == state
        for m in list(sent)[since:]
    )


def managers_for(host, pool) -> tuple[WatcherManager, WatcherManager]:
    """The manager of the host's shard (of two) and the other one, both rescanned once."""
    mine = WatcherManager(60, Shard(host.pk % 2, 2), pool)
    other = WatcherManager(60, Shard(1 - host.pk % 2, 2), pool)
    for manager in (mine, other):
        manager.rescan()
    return mine, other


def test_virsh_start_and_destroy_reach_the_row_and_the_feed(lab, pool, published):
    host = lab["host"]
    mine, other = managers_for(host, pool)
    try:
        assert host.pk in mine.watchers and host.pk not in other.watchers
        watcher = mine.watchers[host.pk][1]
        assert watcher.ready.wait(15), watcher.last_error
        assert wait_until(lambda: watcher.stats["reconciles"] >= 1, 30)
        name = lab["prefix"] + "virsh"
        dom = define(lab["conn"], name)
        uuid = dom.UUIDString()
        assert wait_until(
            lambda: VirtualMachine.objects.filter(host=host, uuid=uuid).exists(), 10
        ), "the defined domain was not imported"
        vm = VirtualMachine.objects.get(host=host, uuid=uuid)
        for command, state in (("start", "running"), ("destroy", "shutoff")):
            since = len(published)
            virsh(command, name)
            assert wait_until(lambda s=state, n=since: vm_updated(published, vm.pk, s, n), 10), (
                command,
                [m for m in published if m.get("type") == "vm.updated"],
            )
            vm.refresh_from_db()
            # Observed and desired: what was done on the host is never undone.
            assert (vm.state, vm.desired_state) == (state, state)
        assert watcher.stats["applied"] >= 2
    finally:
        mine.stop_all()
        other.stop_all()


def test_test_driver_host_changes_reach_the_row_and_the_feed(synced_host, pool, published):
    mine, other = managers_for(synced_host, pool)
    try:
        assert synced_host.pk not in other.watchers
        watcher = mine.watchers[synced_host.pk][1]
        assert watcher.ready.wait(15), watcher.last_error
        assert wait_until(lambda: watcher.stats["reconciles"] >= 1, 30)
        dom = next(d for d in get_connection(synced_host).listAllDomains() if d.isActive())
        vm = VirtualMachine.objects.get(host=synced_host, uuid=dom.UUIDString())
        for action, state in ((dom.destroy, "shutoff"), (dom.create, "running")):
            since = len(published)
            action()
            assert wait_until(lambda s=state, n=since: vm_updated(published, vm.pk, s, n), 10)
            vm.refresh_from_db()
            assert (vm.state, vm.desired_state) == (state, state)
    finally:
        mine.stop_all()
        other.stop_all()
