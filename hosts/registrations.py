"""What hosts tell the core (``panel.registry``), registered in ``HostsConfig.ready()``."""

from __future__ import annotations

from panel import events, taskrunner
from panel.tenancy import is_platform_admin

from . import selectors
from .driver.connection import libvirt_error_message
from .models import Host, Volume

# A task takes the lock of the host or volume it changes.
LOCKABLE = (Host, Volume)


def task_error_message(exc: BaseException) -> str | None:
    """libvirt's own words for a failed host call (its quoted input removed); None otherwise."""
    message = libvirt_error_message(exc)
    return message if message != str(exc) else None


def host_queues() -> list[str]:
    """Each host's own queue, which every worker consumes."""
    return [taskrunner.queue_for(pk) for pk in Host.objects.values_list("pk", flat=True)]


def visible_hosts(user, ids: list[int]) -> list[int]:
    """The hosts of ``ids`` a user may follow on the events socket: platform admins only."""
    if not is_platform_admin(user):
        return []
    return list(Host.objects.filter(pk__in=ids).values_list("pk", flat=True))


def current_hosts(user, ids: list[int]) -> list[dict]:
    """What the hosts of ``ids`` the user may follow are now, as ``host.updated`` messages."""
    if not is_platform_admin(user):
        return []
    hosts = Host.objects.filter(pk__in=ids).order_by("pk")
    return [events.host_message(host, current=True) for host in hosts]


def tenant_placement(tenant) -> dict:
    """The hosts, pools and networks the tenant's operators may create VMs on (the placement
    selectors, as a tenant's operator sees them)."""
    return {
        "hosts": [
            {"id": h.pk, "name": h.name, "status": h.status}
            for h in selectors.hosts_for(None, tenant).order_by("pk")
        ],
        "pools": [
            {
                "id": p.pk,
                "name": p.name,
                "host": p.host_id,
                "pool_type": p.pool_type,
                "available": p.available,
            }
            for p in selectors.pools_for(None, tenant).order_by("pk")
        ],
        "networks": [
            {"id": n.pk, "name": n.name, "host": n.host_id}
            for n in selectors.networks_for(None, tenant).order_by("pk")
        ],
    }
