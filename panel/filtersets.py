"""Filters of the panel room, shared by API lists and UI lists."""

import django_filters
from django.contrib.auth import get_user_model

from .choices import Role, TaskState
from .models import Membership, Task, Tenant


class TaskFilterSet(django_filters.FilterSet):
    vm = django_filters.NumberFilter(field_name="vm_id")
    host = django_filters.NumberFilter(field_name="host_id")
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    state = django_filters.MultipleChoiceFilter(choices=TaskState.choices)
    kind = django_filters.CharFilter()

    class Meta:
        model = Task
        fields = ["vm", "host", "tenant", "state", "kind"]


class TenantFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="iexact")
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains")

    class Meta:
        model = Tenant
        fields = ["name", "q"]


class UserFilterSet(django_filters.FilterSet):
    username = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = get_user_model()
        fields = ["username", "is_superuser"]


class MembershipFilterSet(django_filters.FilterSet):
    tenant = django_filters.NumberFilter(field_name="tenant_id")
    user = django_filters.CharFilter(field_name="user__username", lookup_expr="iexact")
    role = django_filters.ChoiceFilter(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["tenant", "user", "role"]
