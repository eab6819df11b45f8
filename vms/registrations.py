"""What VMs tell the core (``panel.registry``), registered in ``VmsConfig.ready()``."""

from __future__ import annotations

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


def tenant_usage(tenant) -> dict:
    """Quota limits (None = unlimited) and what the tenant uses now."""
    return {"limits": services.tenant_limits(tenant), "usage": services.tenant_usage(tenant)}
