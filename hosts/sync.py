"""Sync a host from libvirt: capabilities, storage pools and volumes, networks, then domains.

Idempotent: running it twice changes nothing the second time. What vanished from the host is
marked gone (with the time), never deleted with its history; what comes back is revived.
"""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.utils import timezone

from . import hooks
from .capabilities import (
    apply_free_hugepages,
    parse_capabilities,
    parse_domain_capabilities,
    parse_machine_types,
    simulated_topology,
)
from .choices import HostStatus, PoolState
from .driver.connection import (
    Guarded,
    HostConnectError,
    drop_connection,
    get_connection,
    guarded,
    libvirt_error_message,
    parse_uri,
)
from .driver.errors import NO_STORAGE_POOL, OPERATION_INVALID, DriverError
from .driver.networks import read_networks
from .driver.storage import pool_state
from .kvm import kvm_problem
from .models import Host, Network, StoragePool, Volume
from .poolxml import parse_pool, parse_volume

Log = Callable[[str], None]


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def mark_unreachable(host: Host, message: str, status: str = HostStatus.ERROR) -> None:
    Host.objects.filter(pk=host.pk).update(status=status, last_error=message[:2000])
    host.status, host.last_error = status, message


def read_host_facts(host: Host, conn: Guarded) -> dict:
    conn = guarded(conn)
    caps_xml = conn.getCapabilities()
    topo = parse_capabilities(caps_xml)
    if parse_uri(host.uri).simulated:
        virt_types = topo.virt_types
        topo = simulated_topology()
        topo.virt_types = virt_types
    elif topo.numa_cells:
        sizes = sorted({p["size_kib"] for c in topo.numa_cells for p in c["hugepages"]})
        if sizes:
            try:
                free = conn.getFreePages(sizes, 0, len(topo.numa_cells))
                apply_free_hugepages(topo, {int(k): v for k, v in free.items()})
            except DriverError:
                pass  # older hosts: keep totals as free
    kvm_note = ""
    if parse_uri(host.uri).kind == "local" and "kvm" in topo.virt_types:
        # libvirt lists kvm whenever the device exists; QEMU's user may still be unable to
        # open it. Then guests here run under TCG, and the host page says why.
        kvm_note = kvm_problem()
        if kvm_note:
            topo.virt_types = [t for t in topo.virt_types if t != "kvm"]
    model, memory_kib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
    fields = topo.as_fields()
    fields["kvm_note"] = kvm_note
    fields["cpus"] = fields["cpus"] or cpus
    fields["memory_mib"] = fields["memory_mib"] or memory_kib
    fields["sockets"] = fields["sockets"] or sockets * nodes
    fields["cores"] = fields["cores"] or cores
    fields["threads"] = fields["threads"] or threads
    fields["arch"] = fields["arch"] or model
    fields["cpu_mhz"] = mhz
    fields["hostname"] = conn.getHostname()
    fields["hypervisor"] = conn.getType()
    fields["hypervisor_version"] = _version(conn.getVersion())
    fields["libvirt_version"] = _version(conn.getLibVersion())
    fields["simulated"] = parse_uri(host.uri).simulated
    fields["machine_types"] = parse_machine_types(caps_xml)
    fields["cpu_models"], fields["uefi_loader"] = [], ""
    preferred = "kvm" if "kvm" in topo.virt_types else "qemu"
    if preferred in topo.virt_types:
        try:
            domcaps = conn.getDomainCapabilities(None, "x86_64", None, preferred, 0)
        except DriverError:
            domcaps = None  # not every driver answers; named models stay unknown
        if domcaps:
            parsed = parse_domain_capabilities(domcaps)
            fields["cpu_models"] = parsed["cpu_models"]
            fields["uefi_loader"] = parsed["uefi_loader"]
    return fields


def sync_pools(host: Host, conn: Guarded) -> dict:
    conn = guarded(conn)
    now = timezone.now()
    seen_pools: set[str] = set()
    counts = {"pools": 0, "volumes": 0}
    existing = {p.name: p for p in StoragePool.objects.filter(host=host)}
    for pool in conn.listAllStoragePools(0):
        try:
            values = parse_pool(pool.XMLDesc(0))
            values["state"] = pool_state(pool)
        except DriverError as exc:
            if exc.get_error_code() != NO_STORAGE_POOL:
                raise
            continue  # removed while we were listing: gone at the next sync
        values["autostart"] = bool(pool.autostart())
        values.update(gone=False, gone_at=None, synced_at=now)
        name = values.pop("name")
        row = existing.get(name)
        if row is None:
            row = StoragePool.objects.create(host=host, name=name, **values)
        else:
            StoragePool.objects.filter(pk=row.pk).update(**values)
        seen_pools.add(name)
        counts["pools"] += 1
        if values["state"] == PoolState.ACTIVE:
            try:
                counts["volumes"] += _sync_volumes(row, pool, now)
            except DriverError as exc:
                if exc.get_error_code() not in (
                    NO_STORAGE_POOL,
                    OPERATION_INVALID,  # stopped while we were listing
                ):
                    raise
    StoragePool.objects.filter(host=host, gone=False).exclude(name__in=seen_pools).update(
        gone=True, gone_at=now
    )
    update_backing_depths(host)
    return counts


def update_backing_depths(host: Host) -> None:
    """How many images each volume's chain holds (itself included), from the inventory."""
    rows = list(
        Volume.objects.filter(pool__host=host, gone=False).values_list(
            "pk", "path", "backing_path", "backing_depth"
        )
    )
    backing_of = {path: backing for _pk, path, backing, _d in rows if path}
    changed: dict[int, list[int]] = {}
    for pk, path, backing, current in rows:
        depth, seen, cursor = 1, {path}, backing
        while cursor and cursor not in seen and depth < 64:
            depth += 1
            seen.add(cursor)
            cursor = backing_of.get(cursor)  # a base outside the inventory ends the chain
        if depth != current:
            changed.setdefault(depth, []).append(pk)
    for depth, pks in changed.items():
        Volume.objects.filter(pk__in=pks).update(backing_depth=depth)


def _sync_volumes(row: StoragePool, pool: Guarded, now) -> int:
    existing = {v.name: v for v in Volume.objects.filter(pool=row)}
    seen: set[str] = set()
    create, update, unchanged = [], [], []
    fields: set[str] = set()
    for vol in pool.listAllVolumes(0):
        try:
            values = parse_volume(vol.XMLDesc(0))
        except DriverError:
            continue  # deleted while listing
        values.update(gone=False, gone_at=None)
        name = values.pop("name")
        seen.add(name)
        current = existing.get(name)
        if current is None:
            create.append(Volume(pool=row, name=name, synced_at=now, **values))
            continue
        changed = {k for k, v in values.items() if getattr(current, k) != v}
        if not changed:
            unchanged.append(current.pk)
            continue
        for key in changed:
            setattr(current, key, values[key])
        current.synced_at = now
        update.append(current)
        fields |= changed
    Volume.objects.bulk_create(create, batch_size=500)
    if update:
        # Only the rows and columns that changed: a quiet host costs one UPDATE, not N.
        Volume.objects.bulk_update(update, sorted(fields | {"synced_at"}), batch_size=500)
    if unchanged:
        Volume.objects.filter(pk__in=unchanged).update(synced_at=now)
    Volume.objects.filter(pool=row, gone=False).exclude(name__in=seen).update(
        gone=True, gone_at=now
    )
    return len(seen)


def sync_networks(host: Host, conn: Guarded) -> int:
    conn = guarded(conn)
    now = timezone.now()
    seen: set[str] = set()
    for values in read_networks(conn):
        values.update(gone=False, gone_at=None, synced_at=now)
        name = values.pop("name")
        seen.add(name)
        Network.objects.update_or_create(host=host, name=name, defaults=values)
    Network.objects.filter(host=host, gone=False).exclude(name__in=seen).update(
        gone=True, gone_at=now
    )
    return len(seen)


def sync_host(
    host: Host, log: Log = lambda _m: None, progress: Callable[[int], None] = lambda _p: None
) -> dict:
    """Read everything from the host and update the inventory. Raises HostConnectError."""
    try:
        conn = get_connection(host)
    except HostConnectError as exc:
        mark_unreachable(host, str(exc))
        raise
    try:
        log("Reading host capabilities")
        facts = read_host_facts(host, conn)
        progress(15)
        log("Reading storage pools and volumes")
        with transaction.atomic():
            storage = sync_pools(host, conn)
        progress(40)
        log("Reading networks")
        with transaction.atomic():
            networks = sync_networks(host, conn)
        progress(55)
        log("Reading domains")
        domains = hooks.run_sync_steps(host, conn)  # the "sync domains" step of vms
        progress(95)
    except DriverError as exc:
        message = libvirt_error_message(exc)
        mark_unreachable(host, message)
        # The connection may be dead: the next attempt opens a fresh one.
        drop_connection(host)
        raise HostConnectError(message) from None
    now = timezone.now()
    facts.update(status=HostStatus.ONLINE, last_error="", last_seen=now, last_synced=now)
    Host.objects.filter(pk=host.pk).update(**facts)
    for key, value in facts.items():
        setattr(host, key, value)
    summary = {**storage, "networks": networks, **domains}
    log(
        "Synced {domains} domains ({created} new, {gone} gone), {pools} pools, "
        "{volumes} volumes, {networks} networks".format(**summary)
    )
    return summary
