"""Filters of VMs, shared by the API list and the UI list."""

import django_filters

from hosts.filtersets import GoneFilterMixin
from panel.bounds import parse_id
from panel.filtersets import IdFilter

from .choices import VMState
from .models import VirtualMachine
from .selectors import search_condition


class VirtualMachineFilterSet(GoneFilterMixin):
    host = IdFilter(field_name="host_id")
    tenant = django_filters.CharFilter(method="filter_tenant", help_text="Tenant id or name")
    name = django_filters.CharFilter(lookup_expr="iexact")
    q = django_filters.CharFilter(method="filter_q", help_text="Name fragment, UUID or MAC")
    state = django_filters.MultipleChoiceFilter(choices=VMState.choices, distinct=False)
    is_template = django_filters.BooleanFilter()
    # Tuning's drift flag (``tuning.VmTuning``, related name ``tuning``): a lookup by name, so
    # the filter needs no import of the room above.
    drift = django_filters.BooleanFilter(
        method="filter_drift", help_text="VMs whose live tuning differs from what was applied"
    )

    class Meta:
        model = VirtualMachine
        fields = ["host", "tenant", "name", "q", "state", "is_template", "gone", "drift"]

    def filter_tenant(self, queryset, name, value):
        # Only ASCII digits within 64 bits are an id ("³" is a digit to str.isdigit, not to int).
        tenant_id = parse_id(value)
        if tenant_id is not None:
            return queryset.filter(tenant_id=tenant_id)
        return queryset.filter(tenant__name=value)

    def filter_drift(self, queryset, name, value):
        if value is None:
            return queryset
        if value:
            return queryset.filter(tuning__drift=True)
        return queryset.exclude(tuning__drift=True)

    def filter_q(self, queryset, name, value):
        return queryset.filter(search_condition(value))
