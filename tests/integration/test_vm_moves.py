"""A VM is its UUID: a domain that appears on another host is the same VM having moved there.

Two test-driver hosts; a domain of the first is defined on the second (same UUID) and removed
from the first, as a migration leaves things. The VM keeps its Paddock id, tenant and task
history, whether the full sync or the watcher sees it first.
"""

from __future__ import annotations

import threading

import libvirt
import pytest
from django.db import connection

from hosts import services
from hosts.driver.connection import get_connection
from hosts.sync import sync_host
from hosts.watcher import HostWatcher, wait_until
from panel.models import Task
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine


def second_host(admin_user, make_node):
    host, _task = services.host_create(
        user=admin_user, name="sim-02", uri=make_node(domains=3, seed=11)
    )
    run_queued_tasks()
    host.refresh_from_db()
    return host


def owned_vm(host, tenant, admin_user, other):
    """A shut-off VM of ``host`` given to ``tenant``, with a task in its history; its name is
    free on ``other`` (libvirt refuses a second domain of one name)."""
    taken = {d.name() for d in get_connection(other).listAllDomains()}
    dom = next(
        d
        for d in get_connection(host).listAllDomains()
        if d.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and d.name() not in taken
    )
    vm = VirtualMachine.objects.get(uuid=dom.UUIDString())
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=tenant)
    task = Task.objects.create(kind="vm.edit", state="succeeded", vm=vm, host=host, user=admin_user)
    return dom, vm, task


def copy_to(dom, host) -> None:
    get_connection(host).defineXML(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def assert_moved(vm, host, tenant, task) -> None:
    rows = VirtualMachine.objects.filter(uuid=vm.uuid)
    assert rows.count() == 1, "never a second import"
    moved = rows.get()
    assert moved.pk == vm.pk
    assert moved.host_id == host.pk and moved.gone is False
    assert moved.tenant_id == tenant.pk
    assert list(moved.tasks.values_list("pk", flat=True)) == [task.pk]
    assert moved.disks.exists() and moved.nics.exists()
    assert not moved.disks.exclude(volume__isnull=True).exclude(volume__pool__host=host).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("order", ["new host first", "old host first"])
def test_full_sync_moves_a_domain_to_its_new_host(
    synced_host, admin_user, make_node, tenant, order
):
    other = second_host(admin_user, make_node)
    dom, vm, task = owned_vm(synced_host, tenant, admin_user, other)
    copy_to(dom, other)
    dom.undefine()
    hosts = [other, synced_host] if order == "new host first" else [synced_host, other]
    for host in hosts + hosts:
        sync_host(host)
    assert_moved(vm, other, tenant, task)
    assert not VirtualMachine.objects.filter(host=other).exclude(pk=vm.pk).filter(tenant=tenant)


@pytest.mark.django_db
def test_a_copy_on_another_host_is_neither_imported_nor_taken_from_the_living_vm(
    synced_host, admin_user, make_node, tenant
):
    other = second_host(admin_user, make_node)
    dom, vm, _task = owned_vm(synced_host, tenant, admin_user, other)
    copy_to(dom, other)
    for host in (other, synced_host, other, synced_host):
        summary = sync_host(host)
    assert summary["gone"] == 0
    vm.refresh_from_db()
    assert vm.host_id == synced_host.pk and vm.gone is False
    assert VirtualMachine.objects.filter(uuid=vm.uuid).count() == 1


@pytest.mark.django_db
def test_a_running_copy_takes_over_from_a_stopped_one(synced_host, admin_user, make_node, tenant):
    other = second_host(admin_user, make_node)
    dom, vm, _task = owned_vm(synced_host, tenant, admin_user, other)
    copy_to(dom, other)
    get_connection(other).lookupByUUIDString(dom.UUIDString()).create()
    for host in (other, synced_host, other, synced_host):
        sync_host(host)
    vm.refresh_from_db()
    assert vm.host_id == other.pk and vm.state == "running"
    assert VirtualMachine.objects.filter(uuid=vm.uuid).count() == 1


def start_watcher(host) -> HostWatcher:
    watcher = HostWatcher(host.pk).start()
    assert watcher.ready.wait(15), watcher.last_error
    assert wait_until(lambda: watcher.stats["reconciles"] >= 1, 30), _diagnosis(watcher)
    return watcher


def _diagnosis(watcher) -> str:
    """What the process holds when a watcher cannot start: its error, threads, database pool."""
    pool = getattr(connection, "pool", None)
    stats = pool.get_stats() if pool is not None else "no pool"
    threads = sorted(t.name for t in threading.enumerate())
    return f"{watcher.last_error!r}; pool: {stats}; threads: {threads}"


@pytest.mark.django_db(transaction=True)
def test_watcher_moves_a_domain_to_its_new_host(synced_host, admin_user, make_node, tenant):
    other = second_host(admin_user, make_node)
    dom, vm, task = owned_vm(synced_host, tenant, admin_user, other)
    watchers = [start_watcher(synced_host), start_watcher(other)]
    try:
        copy_to(dom, other)
        assert wait_until(lambda: VirtualMachine.objects.filter(pk=vm.pk, host=other).exists(), 10)
        applied = watchers[0].stats["applied"]
        dom.undefine()
        assert wait_until(lambda: watchers[0].stats["applied"] > applied, 10)
    finally:
        for watcher in watchers:
            watcher.stop()
    assert_moved(vm, other, tenant, task)


@pytest.mark.django_db
def test_task_api_names_the_destination_host(synced_host, admin_user, make_node, api):
    other = second_host(admin_user, make_node)
    task = Task.objects.create(
        kind="vm.migrate", state="queued", host=synced_host, destination_host=other
    )
    body = api.as_user(admin_user).get(f"/api/tasks/{task.pk}/").json()
    assert body["host"]["id"] == synced_host.pk
    assert body["destination_host"] == {"id": other.pk, "name": "sim-02"}
    listed = api.as_user(admin_user).get("/api/tasks/", {"kind": "host.sync"}).json()
    assert all(row["destination_host"] is None for row in listed["results"])
