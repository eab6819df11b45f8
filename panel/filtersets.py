"""Filters of the panel room, shared by API lists and UI lists, and the base every filter set
of every room uses."""

import django_filters
from django.contrib.auth import get_user_model
from django.db import models

from .bounds import IdFormField
from .choices import Role, TaskState
from .models import Membership, Task, Tenant
from .tenancy import is_platform_admin


class IdFilter(django_filters.NumberFilter):
    """An object id: whole, non-negative and within 64 bits, so ``?host=1e20`` is a 400 and
    never an overflow in the database."""

    field_class = IdFormField


class PaddockFilterSet(django_filters.FilterSet):
    """The base of every filter set: integer fields generated from ``Meta.fields`` get the
    bounded id filter too (text filters already refuse NUL: Django's form CharField does)."""

    FILTER_DEFAULTS = {
        **django_filters.FilterSet.FILTER_DEFAULTS,
        **{
            field: {"filter_class": IdFilter}
            for field in (
                models.AutoField,
                models.BigAutoField,
                models.IntegerField,
                models.BigIntegerField,
                models.PositiveIntegerField,
                models.PositiveBigIntegerField,
                models.PositiveSmallIntegerField,
                models.SmallIntegerField,
                models.ForeignKey,
                models.OneToOneField,
            )
        },
    }


class TaskFilterSet(PaddockFilterSet):
    vm = IdFilter(field_name="vm_id")
    host = IdFilter(field_name="host_id")
    tenant = IdFilter(field_name="tenant_id")
    state = django_filters.MultipleChoiceFilter(choices=TaskState.choices, distinct=False)
    kind = django_filters.CharFilter()

    class Meta:
        model = Task
        fields = ["vm", "host", "tenant", "state", "kind"]


class TenantFilterSet(PaddockFilterSet):
    name = django_filters.CharFilter(lookup_expr="iexact")
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = Tenant
        fields = ["name", "q"]


class UserFilterSet(PaddockFilterSet):
    username = django_filters.CharFilter(lookup_expr="iexact")
    is_superuser = django_filters.BooleanFilter(
        method="filter_is_superuser", help_text="Platform admins only (ignored for others)"
    )

    def filter_is_superuser(self, queryset, name, value):
        # Who is a platform admin is not a tenant admin's to learn, not even by filtering.
        if not is_platform_admin(getattr(self.request, "user", None)):
            return queryset
        return queryset.filter(is_superuser=value)

    class Meta:
        model = get_user_model()
        fields = ["username", "is_superuser"]


class MembershipFilterSet(PaddockFilterSet):
    tenant = IdFilter(field_name="tenant_id")
    user = django_filters.CharFilter(field_name="user__username", lookup_expr="iexact")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["tenant", "user", "role"]
