"""Reads of VMs, scoped to the user's tenants."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q, QuerySet

from hosts.models import ISO_Q, Volume
from panel.tenancy import Action, is_platform_admin, restrict

from .choices import DiskDevice
from .models import Disk, VirtualMachine

# What a volume is asked for. A tenant's own volumes serve every use; an image published to the
# tenant serves only read-only uses (a CD-ROM, the source of a copy, a linked clone's backing).
USE_ATTACH = "attach"  # read-write, as a disk of a VM
USE_SOURCE = "source"  # read-only: copied into a new volume, or the backing file of one
USE_CDROM = "cdrom"  # read-only, as a VM's CD-ROM medium
VOLUME_USES = (USE_ATTACH, USE_SOURCE, USE_CDROM)


def vms_for(user, action: str = Action.VM_VIEW) -> QuerySet[VirtualMachine]:
    qs = VirtualMachine.objects.select_related("host", "tenant").prefetch_related("disks", "nics")
    return restrict(qs, user, action)


def search(user, query: str, limit: int = 20) -> QuerySet[VirtualMachine]:
    """VMs matching a name fragment, a UUID (or its start) or a MAC address."""
    query = query.strip()
    if not query:
        return VirtualMachine.objects.none()
    cond = Q(name__icontains=query) | Q(nics__mac__iexact=query.lower())
    compact = query.replace("-", "").lower()
    if 4 <= len(compact) <= 32 and all(c in "0123456789abcdef" for c in compact):
        cond |= Q(uuid=compact) if len(compact) == 32 else Q(uuid__startswith=query.lower())
    return (
        restrict(VirtualMachine.objects.select_related("host", "tenant"), user)
        .filter(cond, gone=False)
        .distinct()
        .order_by("name")[:limit]
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
