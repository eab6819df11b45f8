"""Import a host's domains into the VM inventory: idempotent, bulk, never deleting history.

The one writer of VM rows from what a host says: :func:`observe` writes a row's fields from a
parsed domain and holds the desired-state rule (a change made on the host becomes the desired
state, unless a Paddock task holds the VM); :func:`new_vm` is a domain's first row and
:func:`mark_gone` a vanished one's. The full sync (:func:`sync_domains`), the re-read after a
task (:func:`refresh_vm`) and the domain events (``vms.domain_events``) all go through them.
Libvirt is read through ``hosts.driver.domains``, as plain data.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from hosts.driver import domains as driver
from hosts.models import Host, Network, Volume
from panel.models import Tenant
from panel.xmlutil import parse as parse_xml

from . import hooks
from .choices import DiskDevice, VMState
from .domxml import DiskSpec, DomainSpec, NicSpec, parse_domain
from .models import Disk, Nic, Snapshot, VirtualMachine

HostConnection = Any  # a connection from ``hosts.driver.connection``

# The driver's state names as VM states.
VM_STATES = {
    "nostate": VMState.UNKNOWN,
    "running": VMState.RUNNING,
    "blocked": VMState.RUNNING,
    "paused": VMState.PAUSED,
    # "shutdown" means the guest is being shut down: it still runs.
    "shutdown": VMState.RUNNING,
    "shutoff": VMState.SHUTOFF,
    "crashed": VMState.CRASHED,
    "pmsuspended": VMState.PMSUSPENDED,
}

# States in which a domain runs on its host (a guest, paused or not, is there).
ACTIVE_STATES = frozenset({VMState.RUNNING, VMState.PAUSED})

# Fields of VirtualMachine that mirror the domain definition.
_MIRRORED = (
    "name",
    "virt_type",
    "vcpus",
    "max_vcpus",
    "memory_mib",
    "max_memory_mib",
    "os_type",
    "arch",
    "machine",
    "firmware",
    "cpu_mode",
    "cpu_model",
    "boot_devices",
    "vnc_port",
)

# What marking a VM gone writes.
GONE_FIELDS = ["gone", "gone_at", "state", "vnc_port"]

# When the VM started (uptime) and the collector's last sample: cleared when it stops.
LIVE_FIELDS = ("started_at", "cpu_percent", "memory_percent", "ip_addresses")


def vm_state(name: str) -> str:
    """A VM state for one of the driver's state names."""
    return VM_STATES.get(name, VMState.UNKNOWN)


def moves_here(vm: VirtualMachine, state: str, appeared: bool = False) -> bool:
    """Whether a domain seen on a host other than its VM row's is that VM having moved here.

    A VM is its UUID: the row follows the domain, keeping its tenant, tasks and history. While
    a copy is still on the row's host (a migration under way, a domain copied by hand), the row
    moves when it is gone there, when the copy here runs and the one there does not, or when
    the copy here has just ``appeared`` (an event: defined, started, resumed) and that does not
    trade a running VM for a stopped copy. Anything else leaves the row where it is, so two
    copies never make it flap between hosts.
    """
    if vm.gone:
        return True
    here, there = state in ACTIVE_STATES, vm.state in ACTIVE_STATES
    if here and not there:
        return True
    return appeared and not (there and not here)


def _observed(spec: DomainSpec, state: str, reason: str, autostart: bool, persistent: bool):
    values = {f: getattr(spec, f) for f in _MIRRORED}
    values.update(state=state, state_reason=reason, autostart=autostart, persistent=persistent)
    if spec.xml:
        values["definition"] = spec.xml
    return values


def _live(vm: VirtualMachine | None, state: str, now: datetime) -> dict:
    """``started_at`` set when a VM is first seen running (kept while it runs, paused or not),
    cleared with the last sample's figures when it is seen stopped."""
    if state in ACTIVE_STATES:
        started = vm.started_at if vm is not None else None
        return {"started_at": started or now}
    return {"started_at": None, "cpu_percent": None, "memory_percent": None, "ip_addresses": []}


def new_vm(
    host: Host,
    tenant: Tenant,
    spec: DomainSpec,
    state: str,
    reason: str,
    autostart: bool,
    persistent: bool,
    now: datetime,
) -> VirtualMachine:
    """The first row of a domain (unsaved), in ``tenant`` (the default tenant, until an admin
    moves it), its desired state the observed one."""
    return VirtualMachine(
        host=host,
        tenant=tenant,
        uuid=str(uuidlib.UUID(spec.uuid)),
        description=spec.description,
        desired_state=state,
        synced_at=now,
        **_live(None, state, now),
        **_observed(spec, state, reason, autostart, persistent),
    )


def observe(
    vm: VirtualMachine,
    host_id: int,
    spec: DomainSpec,
    state: str,
    reason: str,
    autostart: bool,
    persistent: bool,
    now: datetime,
    *,
    host_change_is_desired: bool,
) -> set[str]:
    """Set ``vm``'s fields to what host ``host_id`` says of its domain; return those changed.

    The desired-state rule lives here: when ``host_change_is_desired`` (the sync, an event:
    someone changed the domain on the host) a changed state becomes the desired state too,
    never undone, unless a Paddock task holds the VM (the task owns its desired state). A
    task's own re-read passes False. A gone VM is revived; a VM seen on a host lives there.
    """
    values = _observed(spec, state, reason, autostart, persistent)
    values.update(host_id=host_id, gone=False, gone_at=None)
    values.update(_live(vm, state, now))
    if state == VMState.SHUTOFF:
        values["vcpus_hotplugged"] = False
    changed = {f for f, v in values.items() if getattr(vm, f) != v}
    if host_change_is_desired and "state" in changed and vm.lock_id is None:
        values["desired_state"] = state
        changed.add("desired_state")
    for f, v in values.items():
        setattr(vm, f, v)
    vm.synced_at = now
    return changed


def mark_gone(vm: VirtualMachine, now: datetime) -> None:
    """The domain vanished from its host: the row stays, with its history (:data:`GONE_FIELDS`)."""
    vm.gone, vm.gone_at = True, now
    vm.state, vm.vnc_port = VMState.UNKNOWN, None


def _disk_key(d) -> tuple:
    return (d.target, d.bus, d.device, d.source_type, d.source, d.format, d.cache, d.io,
            d.readonly, d.boot_order)  # fmt: skip


def _nic_key(n) -> tuple:
    return (n.mac, n.model, n.source_type, n.source, n.target_dev, n.vlan)


def read_domains(conn: HostConnection) -> list[tuple[DomainSpec, str, str, bool, bool]]:
    """(spec, state, reason, autostart, persistent) for every domain of the host."""
    out = []
    for d in driver.list_domains(conn):
        spec = parse_domain(d.xml)
        out.append((spec, vm_state(d.state), d.reason, d.autostart, d.persistent))
    return out


def claim_volumes(disks: list[Disk]) -> None:
    """A volume with no owner that is a disk of a VM belongs to that VM's tenant from now on.

    Ownership decides who may attach the volume read-write later (once it is detached); a
    published image is never claimed, and a volume that has an owner keeps it.
    """
    by_tenant: dict[int, set[int]] = {}
    for disk in disks:
        if disk.volume_id and disk.device == DiskDevice.DISK:
            by_tenant.setdefault(disk.vm.tenant_id, set()).add(disk.volume_id)
    for tenant_id, volume_ids in by_tenant.items():
        Volume.objects.filter(pk__in=volume_ids, tenant__isnull=True, published=False).update(
            tenant_id=tenant_id
        )


def sync_domains(host: Host, conn: HostConnection) -> dict:
    """Bring the host's VM rows in line with libvirt. Returns counts of what changed."""
    now = timezone.now()
    default_tenant = Tenant.get_default()
    volumes_by_path = dict(
        Volume.objects.filter(pool__host=host, gone=False)
        .exclude(path="")
        .values_list("path", "pk")
    )
    networks_by_name = dict(Network.objects.filter(host=host, gone=False).values_list("name", "pk"))

    existing = {
        str(vm.uuid): vm
        for vm in VirtualMachine.objects.filter(host=host).prefetch_related("disks", "nics")
    }
    # When each row was last refreshed, read before libvirt is: a row refreshed by someone else
    # (a task, the watcher) after that holds newer truth and must not be overwritten.
    read_at = {vm.pk: vm.synced_at for vm in existing.values()}
    domains = read_domains(conn)
    # Domains new to this host whose UUID Paddock knows on another host: moves, not imports.
    unknown = [str(uuidlib.UUID(spec.uuid)) for spec, *_ in domains]
    unknown = [key for key in unknown if key not in existing]
    elsewhere = {
        str(vm.uuid): vm
        for vm in VirtualMachine.objects.filter(uuid__in=unknown)
        .exclude(host=host)
        .prefetch_related("disks", "nics")
    }
    read_at.update({vm.pk: vm.synced_at for vm in elsewhere.values()})
    seen: set[str] = set()
    moved: list[VirtualMachine] = []
    elsewhere_kept = 0
    to_create: list[tuple[VirtualMachine, DomainSpec]] = []
    to_update: list[VirtualMachine] = []
    devices_changed: list[tuple[VirtualMachine, DomainSpec]] = []
    update_fields: set[str] = set()
    untouched: list[int] = []
    observed: list[tuple[VirtualMachine, str]] = []

    for spec, state, reason, autostart, persistent in domains:
        key = str(uuidlib.UUID(spec.uuid))
        seen.add(key)
        vm = existing.get(key)
        if vm is None and key in elsewhere:
            vm = elsewhere[key]
            if not moves_here(vm, state):
                elsewhere_kept += 1
                continue
            moved.append(vm)
        if vm is None:
            vm = new_vm(host, default_tenant, spec, state, reason, autostart, persistent, now)
            to_create.append((vm, spec))
            continue
        observed.append((vm, spec.xml))
        before_disks = sorted(_disk_key(d) for d in vm.disks.all())
        before_nics = sorted(_nic_key(n) for n in vm.nics.all())
        changed = observe(
            vm,
            host.pk,
            spec,
            state,
            reason,
            autostart,
            persistent,
            now,
            host_change_is_desired=True,
        )
        if changed:
            to_update.append(vm)
            update_fields |= changed
        else:
            untouched.append(vm.pk)
        if "host_id" in changed:
            devices_changed.append((vm, spec))  # re-read against the new host's volumes
        elif before_disks != sorted(_disk_key(d) for d in spec.disks) or before_nics != sorted(
            _nic_key(n) for n in spec.nics
        ):
            devices_changed.append((vm, spec))
        elif any(d.volume_id != volumes_by_path.get(d.source) for d in vm.disks.all()):
            devices_changed.append((vm, spec))

    vanished = [vm for key, vm in existing.items() if key not in seen and not vm.gone]

    with transaction.atomic():
        touched = [vm.pk for vm in to_update] + [vm.pk for vm in vanished] + untouched
        touched += [vm.pk for vm, _ in devices_changed]
        newer = {
            pk
            for pk, synced in VirtualMachine.objects.filter(pk__in=touched)
            .select_for_update()
            .values_list("pk", "synced_at")
            if synced != read_at.get(pk)
        }
        if newer:
            to_update = [vm for vm in to_update if vm.pk not in newer]
            vanished = [vm for vm in vanished if vm.pk not in newer]
            untouched = [pk for pk in untouched if pk not in newer]
            devices_changed = [(vm, spec) for vm, spec in devices_changed if vm.pk not in newer]
        if to_create:
            VirtualMachine.objects.bulk_create([vm for vm, _ in to_create], batch_size=500)
        if to_update:
            VirtualMachine.objects.bulk_update(
                to_update, sorted(update_fields | {"synced_at"}), batch_size=500
            )
        if untouched:
            VirtualMachine.objects.filter(pk__in=untouched).update(synced_at=now)
        for vm in vanished:
            mark_gone(vm, now)
        if vanished:
            VirtualMachine.objects.bulk_update(vanished, GONE_FIELDS, batch_size=500)

        rewrite = to_create + devices_changed
        owned = {
            (vm.pk, d.target, d.source)
            for vm, _ in devices_changed
            for d in vm.disks.all()
            if d.owned
        }
        if devices_changed:
            ids = [vm.pk for vm, _ in devices_changed]
            Disk.objects.filter(vm_id__in=ids).delete()
            Nic.objects.filter(vm_id__in=ids).delete()
        disks, nics = [], []
        for vm, spec in rewrite:
            for d in spec.disks:
                disk = _disk_row(vm, d, volumes_by_path)
                disk.owned = (vm.pk, disk.target, disk.source) in owned
                disks.append(disk)
            for n in spec.nics:
                nics.append(_nic_row(vm, n, networks_by_name))
        Disk.objects.bulk_create(disks, batch_size=1000)
        Nic.objects.bulk_create(nics, batch_size=1000)
        claim_volumes(disks)
        moved = [vm for vm in moved if vm.pk not in newer]
        for vm in moved:
            sync_snapshots(vm, conn)

    for vm in vanished:
        hooks.released(vm, "gone")
    hooks.observed([(vm, xml) for vm, xml in observed if vm.pk not in newer and xml], "reconciled")

    return {
        "domains": len(domains),
        "created": len(to_create),
        "updated": len(to_update),
        "unchanged": len(untouched),
        "gone": len(vanished),
        "moved": len(moved),
        "elsewhere": elsewhere_kept,
    }


def _disk_row(vm: VirtualMachine, d: DiskSpec, volumes_by_path: dict[str, int]) -> Disk:
    return Disk(vm=vm, volume_id=volumes_by_path.get(d.source), **asdict(d))


def _nic_row(vm: VirtualMachine, n: NicSpec, networks_by_name: dict[str, int]) -> Nic:
    network_id = networks_by_name.get(n.source) if n.source_type == "network" else None
    return Nic(vm=vm, network_id=network_id, **asdict(n))


def refresh_vm(
    vm: VirtualMachine,
    conn: HostConnection,
    *,
    host: Host | None = None,
    host_change_is_desired: bool = False,
) -> VirtualMachine:
    """Re-read one VM's domain (on ``host``, by default the VM's): fields, devices, snapshots.

    After a Paddock operation by default; a domain event passes ``host_change_is_desired``
    (see :func:`observe`). Disks keep their ``owned`` flag by guest target and source path.
    Raises the driver's error when the host has no such domain.
    """
    info = driver.read_domain(conn, str(vm.uuid))
    spec = parse_domain(info.xml)
    host_id = host.pk if host else vm.host_id
    state = vm_state(info.state)
    changed = observe(
        vm, host_id, spec, state, info.reason, info.autostart, info.persistent, timezone.now(),
        host_change_is_desired=host_change_is_desired,
    )  # fmt: skip
    # Every observed field is written, not only those that differ from ``vm``: the caller's
    # copy may be older than the row. The two a task may own are written only when set here.
    fields = [*_MIRRORED, "state", "state_reason", "autostart", "persistent", "host_id", "gone",
              "gone_at", "synced_at"]  # fmt: skip
    if "desired_state" in changed:
        fields.append("desired_state")
    if state == VMState.SHUTOFF:
        fields.append("vcpus_hotplugged")
    fields += [f for f in LIVE_FIELDS if f in changed]
    owned = {(d.target, d.source) for d in vm.disks.filter(owned=True)}
    volumes_by_path = dict(
        Volume.objects.filter(pool__host_id=vm.host_id, gone=False)
        .exclude(path="")
        .values_list("path", "pk")
    )
    networks_by_name = dict(
        Network.objects.filter(host_id=vm.host_id, gone=False).values_list("name", "pk")
    )
    with transaction.atomic():
        VirtualMachine.objects.filter(pk=vm.pk).update(**{f: getattr(vm, f) for f in fields})
        Disk.objects.filter(vm=vm).delete()
        Nic.objects.filter(vm=vm).delete()
        disks = [_disk_row(vm, d, volumes_by_path) for d in spec.disks]
        for disk in disks:
            disk.owned = (disk.target, disk.source) in owned
        Disk.objects.bulk_create(disks)
        claim_volumes(disks)
        Nic.objects.bulk_create([_nic_row(vm, n, networks_by_name) for n in spec.nics])
        sync_snapshots(vm, conn)
    return vm


def sync_snapshots(vm: VirtualMachine, conn: HostConnection) -> None:
    snaps = driver.list_snapshots(conn, str(vm.uuid))
    if snaps is None:
        return  # the driver keeps no snapshots
    rows = []
    for snap in snaps:
        root = parse_xml(snap.xml)
        created = root.findtext("creationTime")
        rows.append(
            Snapshot(
                vm=vm,
                name=snap.name,
                parent_name=snap.parent,
                description=(root.findtext("description") or "")[:200],
                vm_state=root.findtext("state") or "",
                has_memory=root.find("memory[@snapshot='internal']") is not None
                or (root.findtext("state") or "") in ("running", "paused"),
                is_current=snap.current,
                created=datetime.fromtimestamp(int(created), tz=UTC) if created else None,
            )
        )
    Snapshot.objects.filter(vm=vm).delete()
    Snapshot.objects.bulk_create(rows)
