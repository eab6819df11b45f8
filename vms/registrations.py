"""What VMs tell the core (``panel.registry``), registered in ``VmsConfig.ready()``."""

from __future__ import annotations

from panel import events

from . import services
from .choices import VMState
from .models import VirtualMachine
from .selectors import vms_for

# A task takes the lock of the VM it changes.
LOCKABLE = (VirtualMachine,)
# Service errors the API answers with 409.
CONFLICTS = (services.CloneConflict,)
STATE_LABELS = dict(VMState.choices)


def visible_vms(user, ids: list[int]) -> list[int]:
    """The VMs of ``ids`` a user may follow on the events socket (the API's own scoping)."""
    return list(vms_for(user).filter(pk__in=ids).values_list("pk", flat=True))


def current_vms(user, ids: list[int]) -> list[dict]:
    """What the VMs of ``ids`` the user may follow are now, as ``vm.updated`` messages: the
    events socket's answer to a page that asks what it shows (``{"current": ...}``)."""
    vms = vms_for(user).filter(pk__in=ids).prefetch_related(None).order_by("pk")
    return [events.vm_message(vm, current=True) for vm in vms]


def tenant_usage(tenant) -> dict:
    """Quota limits (None = unlimited) and what the tenant uses now."""
    return {"limits": services.tenant_limits(tenant), "usage": services.tenant_usage(tenant)}
