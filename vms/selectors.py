"""Reads of VMs, scoped to the user's tenants."""

from __future__ import annotations

import re

from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.expressions import RawSQL

from hosts.models import ISO_Q, Volume
from panel.tenancy import Action, is_platform_admin, restrict

from .choices import DiskDevice
from .models import Disk, Nic, VirtualMachine

# What a volume is asked for. A tenant's own volumes serve every use; an image published to the
# tenant serves only read-only uses (a CD-ROM, the source of a copy, a linked clone's backing).
USE_ATTACH = "attach"  # read-write, as a disk of a VM
USE_SOURCE = "source"  # read-only: copied into a new volume, or the backing file of one
USE_CDROM = "cdrom"  # read-only, as a VM's CD-ROM medium
VOLUME_USES = (USE_ATTACH, USE_SOURCE, USE_CDROM)


def vms_for(user, action: str = Action.VM_VIEW) -> QuerySet[VirtualMachine]:
    qs = VirtualMachine.objects.select_related("host", "tenant").prefetch_related("disks", "nics")
    return restrict(qs, user, action)


MAC_QUERY = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
HEX = frozenset("0123456789abcdef")


def search_condition(query: str) -> Q:
    """What a search box query matches, written so each part is served by an index.

    A MAC address (names cannot hold ``:``) matches NIC MACs exactly (the ``mac`` index);
    anything else matches a name fragment (a trigram GIN index on PostgreSQL) or, when it
    looks like the start of a UUID (8 hex digits or more, dashes allowed), the UUIDs in that
    prefix's range (the unique index). No join, so no ``DISTINCT``.
    """
    query = query.strip()
    lowered = query.lower()
    if MAC_QUERY.fullmatch(lowered):
        return Q(pk__in=Nic.objects.filter(mac=lowered).values("vm_id"))
    cond = Q(name__icontains=query)
    compact = lowered.replace("-", "")
    if 8 <= len(compact) <= 32 and set(compact) <= HEX:
        cond |= Q(uuid__gte=compact.ljust(32, "0"), uuid__lte=compact.ljust(32, "f"))
    return cond


def search(user, query: str, limit: int = 20) -> QuerySet[VirtualMachine]:
    """VMs matching a name fragment, a UUID (or its start) or a MAC address."""
    if not query.strip():
        return VirtualMachine.objects.none()
    return (
        restrict(VirtualMachine.objects.select_related("host", "tenant"), user)
        .filter(search_condition(query), gone=False)
        .order_by("name")[:limit]
    )


def with_tag(vms: QuerySet, tag: str) -> QuerySet:
    """``vms`` that carry ``tag`` ("" for those with no tag)."""
    if not tag:
        return vms.filter(tags=[])
    if connection.vendor == "postgresql":
        return vms.filter(tags__contains=[tag])  # jsonb @>
    table = VirtualMachine._meta.db_table
    return vms.filter(
        pk__in=RawSQL(f"SELECT v.id FROM {table} v, json_each(v.tags) j WHERE j.value = %s", [tag])
    )


def vms_for_admin() -> QuerySet[VirtualMachine]:
    """Unscoped, for answering a request about an object the caller was already allowed."""
    return VirtualMachine.objects.select_related("host", "tenant").prefetch_related("disks", "nics")


def _disk_of_tenant(tenant_id: int) -> Exists:
    return Exists(
        Disk.objects.filter(
            volume=OuterRef("pk"),
            device=DiskDevice.DISK,
            vm__tenant_id=tenant_id,
            vm__gone=False,
        )
    )


def volumes_usable(user, tenant, use: str) -> QuerySet[Volume]:
    """The volumes ``user`` may use for ``use`` in a VM of ``tenant``.

    A tenant's volume is one it owns (made for one of its VMs, or a disk of one of them) or a
    disk of one of its VMs or templates; it may be used any way. An image published to every
    tenant, or to this one, may be used read-only: mounted as a CD-ROM, copied, or as a linked
    clone's backing file. Nothing else is visible, whatever pool it sits in, and a tenant uses
    only pools it was granted. Platform admins may use any volume. A CD-ROM takes ISO images
    only, and what is attached read-write must not be a disk of any VM already.
    """
    if use not in VOLUME_USES:
        raise ValueError(f"unknown volume use {use!r}")
    qs = Volume.objects.select_related("pool__host").filter(gone=False)
    if use == USE_CDROM:
        qs = qs.filter(ISO_Q)
    else:
        qs = qs.exclude(ISO_Q)
    if use == USE_ATTACH:
        qs = qs.exclude(Exists(Disk.objects.filter(volume=OuterRef("pk"), vm__gone=False)))
    if is_platform_admin(user):
        return qs
    own = Q(tenant_id=tenant.pk, published=False)
    if use == USE_ATTACH:
        allowed = own
    else:
        published = Q(published=True) & (Q(tenant__isnull=True) | Q(tenant_id=tenant.pk))
        allowed = own | published | Q(_disk_of_tenant(tenant.pk))
    return qs.filter(allowed, pool__in=tenant.allowed_pools.values("pk"))
