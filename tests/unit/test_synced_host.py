"""``synced_host`` copies the rows of one session-wide sync: it must equal a host synced now."""

from __future__ import annotations

import datetime

import pytest
from django.db import models, transaction
from django.utils import timezone

from hosts.driver.connection import get_connection
from hosts.models import Host, Network, StoragePool, Volume
from panel.models import Task, TaskLogEntry
from tests.conftest import restore_inventory_snapshot
from vms.models import Disk, Nic, VirtualMachine

pytestmark = pytest.mark.django_db


# Differs between any two runs of the same sync (a worker's identity).
VARIES = {"lease_owner"}


def _label(obj: models.Model) -> str:
    """What a foreign key names, without its id."""
    for attr in ("username", "name", "kind", "target"):
        if hasattr(obj, attr):
            return f"{obj._meta.label}:{getattr(obj, attr)}"
    return obj._meta.label


def _describe(obj: models.Model, uri: str) -> tuple:
    values = []
    for f in obj._meta.concrete_fields:
        if f.primary_key or isinstance(f, models.DateTimeField) or f.name in VARIES:
            continue
        value = getattr(obj, f.attname)
        if f.is_relation and value is not None:
            value = _label(getattr(obj, f.name))
        if isinstance(value, str):
            value = value.replace(uri, "<uri>")
        values.append((f.name, repr(value)))
    return tuple(values)


def _inventory(host: Host) -> dict[str, list]:
    """Every row the sync leaves for the host, ids replaced by what they name, times dropped."""
    querysets = {
        "host": Host.objects.filter(pk=host.pk),
        "pools": StoragePool.objects.filter(host=host),
        "volumes": Volume.objects.filter(pool__host=host),
        "networks": Network.objects.filter(host=host),
        "vms": VirtualMachine.objects.filter(host=host),
        "disks": Disk.objects.filter(vm__host=host),
        "nics": Nic.objects.filter(vm__host=host),
        "tasks": Task.objects.filter(host=host),
        "task log": TaskLogEntry.objects.filter(task__host=host),
    }
    return {name: sorted(_describe(o, host.uri) for o in qs) for name, qs in querysets.items()}


def _times(host: Host) -> list[datetime.datetime]:
    host.refresh_from_db()
    return [v for v in (host.created, host.last_seen, host.last_synced) if v]


def test_copied_inventory_equals_a_fresh_sync(admin_user, inventory_snapshot, freshly_synced_host):
    fresh = _inventory(freshly_synced_host)
    with transaction.atomic():
        # Both hosts are called sim-01: the copy lives only while the fresh one is gone.
        Host.objects.filter(pk=freshly_synced_host.pk).delete()
        copied_host = Host.objects.get(
            pk=restore_inventory_snapshot(inventory_snapshot, admin_user)
        )
        copied = _inventory(copied_host)
        now = timezone.now()
        assert all(abs(now - t) < datetime.timedelta(minutes=1) for t in _times(copied_host))
        transaction.set_rollback(True)
    for name in fresh:
        assert copied[name] == fresh[name], name
    assert len(fresh["vms"]) == 36 and fresh["volumes"] and fresh["networks"] and fresh["tasks"]


def test_each_test_gets_its_own_rows_and_a_pristine_hypervisor(synced_host):
    """A change made by one test (rows and the test driver's state) is gone in the next."""
    vm = synced_host.vms.order_by("name").first()
    conn = get_connection(synced_host)
    domain = conn.lookupByUUIDString(str(vm.uuid))
    _CHANGED.append((vm.name, domain.name()))
    synced_host.vms.filter(pk=vm.pk).delete()
    if domain.isActive():
        domain.destroy()
    domain.undefine()
    assert len(conn.listAllDomains()) == 35


_CHANGED: list[tuple[str, str]] = []


def test_the_next_test_sees_the_inventory_whole_again(synced_host):
    assert _CHANGED, "runs after the test above"
    name, domain_name = _CHANGED[0]
    assert synced_host.vms.filter(name=name).exists()
    conn = get_connection(synced_host)
    domain = conn.lookupByName(domain_name)
    assert domain.isPersistent()
    assert len(conn.listAllDomains()) == 36
