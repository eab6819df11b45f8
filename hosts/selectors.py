"""Reads of hosts and what they hold: the admin's inventory, and what a tenant may place VMs on."""

from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from panel.tenancy import is_platform_admin

from .models import Host, Network, StoragePool, Volume


def hosts() -> QuerySet[Host]:
    return Host.objects.annotate(vm_count=Count("vms", filter=Q(vms__gone=False)))


def pools() -> QuerySet[StoragePool]:
    return StoragePool.objects.select_related("host")


def volumes() -> QuerySet[Volume]:
    return Volume.objects.select_related("pool__host")


def networks() -> QuerySet[Network]:
    return Network.objects.select_related("host")


# --- placement: what a tenant may put its VMs on ------------------------------------------------
#
# One answer to "which hosts, pools and networks may this tenant use", for the services (which
# resolve every id a request names through these, so an id of something the user may not see is
# answered exactly like one that does not exist), the create wizard, the VM pages and the API.
# A platform admin may place any tenant's VMs anywhere; anyone else only on what the tenant was
# granted. ``tenant=None`` (no tenant chosen) grants nothing but to a platform admin.


def _on(qs: QuerySet, host) -> QuerySet:
    """``qs`` narrowed to one host (a Host or its id) or several (an iterable of them)."""
    if host is None:
        return qs
    if isinstance(host, (Host, int, str)):
        return qs.filter(host=host)
    return qs.filter(host__in=list(host))


def hosts_for(user, tenant) -> QuerySet[Host]:
    """The hosts on which ``user`` may place VMs of ``tenant``."""
    qs = Host.objects.all()
    if is_platform_admin(user):
        return qs
    if tenant is None:
        return qs.none()
    return qs.filter(pk__in=tenant.allowed_hosts.values("pk"))


def pools_for(user, tenant, host=None) -> QuerySet[StoragePool]:
    """The storage pools (not gone) that ``user`` may use for VMs of ``tenant``, on ``host``."""
    qs = _on(StoragePool.objects.select_related("host").filter(gone=False), host)
    if is_platform_admin(user):
        return qs
    if tenant is None:
        return qs.none()
    return qs.filter(pk__in=tenant.allowed_pools.values("pk"))


def networks_for(user, tenant, host=None) -> QuerySet[Network]:
    """The networks (not gone) that ``user`` may attach VMs of ``tenant`` to, on ``host``."""
    qs = _on(Network.objects.select_related("host").filter(gone=False), host)
    if is_platform_admin(user):
        return qs
    if tenant is None:
        return qs.none()
    return qs.filter(pk__in=tenant.allowed_networks.values("pk"))
