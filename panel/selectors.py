"""Reads of the panel room, scoped to what the user may see."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Count, Q, QuerySet

from .models import Membership, Task, Tenant
from .tenancy import Action, is_platform_admin, restrict, tenant_ids

User = get_user_model()


def tasks_for(user) -> QuerySet[Task]:
    qs = Task.objects.select_related(
        "host", "destination_host", "vm", "tenant", "user"
    ).prefetch_related("log_entries")
    return restrict(qs, user, Action.TASK_VIEW)


def tenants_for(user) -> QuerySet[Tenant]:
    qs = Tenant.objects.annotate(vm_count=Count("vms", filter=Q(vms__gone=False)))
    return restrict(qs, user, Action.TENANT_VIEW, field="pk")


def memberships_for(user) -> QuerySet[Membership]:
    qs = Membership.objects.select_related("user", "tenant")
    if is_platform_admin(user):
        return qs
    if not user.is_authenticated:  # the schema generator asks as nobody
        return qs.none()
    admin_of = tenant_ids(user, Action.MEMBERSHIP_MANAGE)
    return qs.filter(Q(tenant_id__in=admin_of) | Q(user=user))


def users_for(user) -> QuerySet:
    qs = User.objects.order_by("username")
    if is_platform_admin(user):
        return qs
    admin_of = tenant_ids(user, Action.MEMBERSHIP_MANAGE)
    return qs.filter(Q(pk=user.pk) | Q(memberships__tenant_id__in=admin_of)).distinct()


def addable_users(user) -> QuerySet:
    """Users ``user`` may add to a tenant: anyone for a platform admin; for a tenant admin, the
    members of the tenants they administer (never the platform's whole user list)."""
    qs = User.objects.filter(is_active=True)
    if is_platform_admin(user):
        return qs
    admin_of = tenant_ids(user, Action.MEMBERSHIP_MANAGE)
    if not admin_of:
        return qs.none()
    return qs.filter(memberships__tenant_id__in=admin_of).distinct()
