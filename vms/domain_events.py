"""What a host's domains mean to the VM inventory: the handlers ``vms`` registers with ``hosts``.

The host watcher (``hosts.watcher``), the host sync and the reconcile know nothing of VMs;
they call what :func:`register` hands to ``hosts.hooks``:

* :func:`on_domain_event`: one domain's event re-reads that domain. A domain the inventory
  does not know is imported (default tenant, desired state = observed), one whose UUID is
  known on another host is that VM moving here (``vms.sync.moves_here``), an undefined one is
  marked gone; a state change made on the host becomes the observed and the desired state
  (unless a Paddock task holds the VM, which then owns its desired state). ``vm.updated`` is
  sent once the transaction commits;
* ``vms.sync.sync_domains``: the "sync domains" step of a host sync;
* :func:`watch_reconcile`: what a reconcile round changed in VM rows is published as
  ``vm.updated`` (``event="reconciled"``).

Every row write goes through ``vms.sync`` (:func:`vms.sync.observe` and its neighbours).
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.utils import timezone

from hosts import hooks
from hosts.driver import domains as driver
from hosts.models import Host
from panel import events
from panel.models import Tenant

from . import hooks as vm_hooks
from .domxml import parse_domain
from .models import VirtualMachine
from .sync import (
    GONE_FIELDS,
    HostConnection,
    mark_gone,
    moves_here,
    new_vm,
    refresh_vm,
    sync_domains,
    vm_state,
)

# Events after which a domain is newly there: on another host than its VM row's, a move.
APPEARED_EVENTS = frozenset({"defined", "started", "resumed"})

# The VM fields whose change a reconcile publishes.
_WATCHED = ("state", "desired_state", "lifecycle", "gone", "tenant_id", "name")


def on_domain_event(host: Host, conn: HostConnection, uuid: str, event: str) -> None:
    """Bring one domain's VM row in line with the host and publish ``vm.updated``."""
    try:
        _apply(host, conn, uuid, event)
    except driver.DriverError as exc:
        if not driver.is_no_domain(exc):
            raise
        # Undefined while it was being read (the transaction rolled back): look again, which
        # now finds it gone. Not a connection failure.
        _apply(host, conn, uuid, event)


def _apply(host: Host, conn: HostConnection, uuid: str, event: str) -> None:
    info = driver.find_domain(conn, uuid)  # None: undefined, or a transient domain that stopped
    vm = VirtualMachine.objects.filter(uuid=uuid).first()
    if vm is not None and vm.host_id != host.pk:
        # A VM is its UUID: this domain is known on another host.
        if info is None or not moves_here(
            vm, vm_state(info.state), appeared=event in APPEARED_EVENTS
        ):
            return  # a copy here, or one that left; the VM lives on where it is
        with transaction.atomic():
            refresh_vm(vm, conn, host=host, host_change_is_desired=True)
            events.vm_changed(vm, event="moved")
        return
    with transaction.atomic():
        if info is None:
            if vm is None or vm.gone:
                return
            mark_gone(vm, timezone.now())
            vm.save(update_fields=GONE_FIELDS)
            gone = vm
            transaction.on_commit(lambda: vm_hooks.released(gone, "gone"))
        elif vm is None:
            # New to the inventory: imported alone, as the full sync would, without re-reading
            # every domain of the host.
            vm = import_domain(host, conn, info)
            if vm.host_id != host.pk:
                return  # imported on another host meanwhile; its next event decides
        elif vm.lock_id is not None:
            # A Paddock task is working on this VM and re-reads it when done: only the
            # observed state here, the task owns the rest (and the desired state).
            vm.state, vm.state_reason = vm_state(info.state), info.reason
            vm.synced_at = timezone.now()
            vm.save(update_fields=["state", "state_reason", "synced_at"])
        else:
            refresh_vm(vm, conn, host_change_is_desired=True)
        events.vm_changed(vm, event=event)
        if info is not None:
            seen, xml = vm, info.xml
            transaction.on_commit(lambda: vm_hooks.observed([(seen, xml)], event))


def import_domain(host: Host, conn: HostConnection, info: driver.DomainInfo) -> VirtualMachine:
    """A VM row for a domain the inventory does not know, then its devices and snapshots."""
    spec = parse_domain(info.xml)
    vm = new_vm(
        host, Tenant.get_default(), spec, vm_state(info.state), info.reason, info.autostart,
        info.persistent, timezone.now(),
    )  # fmt: skip
    try:
        with transaction.atomic():
            vm.save(force_insert=True)
    except IntegrityError:
        # The periodic reconcile imported it meanwhile (here or on another host).
        vm = VirtualMachine.objects.get(uuid=vm.uuid)
        if vm.host_id != host.pk:
            return vm
    return refresh_vm(vm, conn)


def _vm_snapshot(host: Host) -> dict[int, tuple]:
    return {
        row[0]: row[1:]
        for row in VirtualMachine.objects.filter(host=host).values_list("pk", *_WATCHED)
    }


def watch_reconcile(host: Host) -> Callable[[], int]:
    """Note ``host``'s VM rows; the returned call publishes those a reconcile changed."""
    before = _vm_snapshot(host)

    def publish() -> int:
        after = _vm_snapshot(host)
        changed = [pk for pk, values in after.items() if before.get(pk) != values]
        # A VM that moved to another host this round is no longer ``host``'s, but changed.
        changed += [pk for pk in before if pk not in after]
        if not changed:
            return 0
        published = 0
        for vm in VirtualMachine.objects.filter(pk__in=changed).order_by("pk"):
            events.vm_changed(vm, event="reconciled")
            published += 1
        return published

    return publish


def register() -> None:
    """Hand the VM inventory's handlers to ``hosts`` (from ``VmsConfig.ready``)."""
    hooks.register_domain_handler(on_domain_event)
    hooks.register_sync_step(sync_domains)
    hooks.register_reconcile_observer(watch_reconcile)
