"""Reads of VMs, scoped to the user's tenants."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from panel.tenancy import Action, restrict

from .models import VirtualMachine


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
