"""Who may see and do what: role -> actions, and the one queryset restriction used everywhere.

A user sees a tenant's objects through a membership in that tenant; platform admins
(superusers) see everything. An object the user may not see does not exist for them (404);
an object they may see but not act on gives 403.
"""

from __future__ import annotations

from django.db.models import QuerySet

from .choices import Role
from .models import Membership, Tenant


class Action:
    VM_VIEW = "vm.view"
    VM_CREATE = "vm.create"
    VM_CHANGE = "vm.change"
    VM_DELETE = "vm.delete"
    VM_POWER = "vm.power"
    VM_CONSOLE = "vm.console"
    VM_SNAPSHOT = "vm.snapshot"
    TASK_VIEW = "task.view"
    TENANT_VIEW = "tenant.view"
    MEMBERSHIP_MANAGE = "membership.manage"


_ALL = {Role.ADMIN, Role.OPERATOR, Role.MEMBER, Role.VIEWER}
_OPERATORS = {Role.ADMIN, Role.OPERATOR}
_MEMBERS = {Role.ADMIN, Role.OPERATOR, Role.MEMBER}

ROLE_ACTIONS: dict[str, set[str]] = {
    Action.VM_VIEW: _ALL,
    Action.TASK_VIEW: _ALL,
    Action.TENANT_VIEW: _ALL,
    Action.VM_CREATE: _OPERATORS,
    Action.VM_CHANGE: _OPERATORS,
    Action.VM_DELETE: _OPERATORS,
    Action.VM_POWER: _MEMBERS,
    Action.VM_CONSOLE: _MEMBERS,
    Action.VM_SNAPSHOT: _MEMBERS,
    Action.MEMBERSHIP_MANAGE: {Role.ADMIN},
}


def is_platform_admin(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_superuser)


def tenant_ids(user, action: str = Action.VM_VIEW) -> list[int]:
    """Tenants in which ``user`` may perform ``action`` (platform admins: not used, see below)."""
    if not (user and user.is_authenticated and user.is_active):
        return []
    cache = getattr(user, "_paddock_roles", None)
    if cache is None:
        cache = dict(Membership.objects.filter(user=user).values_list("tenant_id", "role"))
        user._paddock_roles = cache
    allowed = ROLE_ACTIONS[action]
    return [tid for tid, role in cache.items() if role in allowed]


def role_in(user, tenant_id: int) -> str | None:
    tenant_ids(user)  # fills the cache
    return getattr(user, "_paddock_roles", {}).get(tenant_id)


def can(user, action: str, tenant_id: int | None) -> bool:
    if is_platform_admin(user):
        return True
    if tenant_id is None:
        return False
    return tenant_id in tenant_ids(user, action)


def restrict(
    queryset: QuerySet, user, action: str = Action.VM_VIEW, field: str = "tenant"
) -> QuerySet:
    """The part of ``queryset`` (objects with a ``tenant`` FK) that ``user`` may ``action``."""
    if is_platform_admin(user):
        return queryset
    ids = tenant_ids(user, action)
    if not ids:
        return queryset.none()
    return queryset.filter(**{f"{field}__in": ids})


def visible_tenants(user) -> QuerySet[Tenant]:
    return restrict(Tenant.objects.all(), user, Action.TENANT_VIEW, field="pk")
