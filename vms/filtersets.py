"""Filters of VMs, shared by the API list and the UI list."""

from datetime import UTC, datetime

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import DateTimeField, Value
from django.db.models.functions import Coalesce

from hosts.filtersets import GoneFilterMixin
from panel.bounds import parse_id
from panel.filtersets import IdFilter

from .choices import VMState
from .models import VirtualMachine
from .selectors import search_condition, with_tag

# Far past and far future stand in for "no sample" and "not running" so a sorted column has no
# NULLs: the cursor pagination (panel.api.pagination) compares every ordering value.
_NO_SAMPLE = Value(-1.0)
_NOT_STARTED = Value(datetime(9999, 12, 31, tzinfo=UTC))

# ``?ordering=`` name -> (field or annotation to order by, its annotation when it needs one).
ORDERINGS = {
    "name": ("name", None),
    "state": ("state", None),
    "host": ("host__name", None),
    "tenant": ("tenant__name", None),
    "vcpus": ("vcpus", None),
    "memory_mib": ("memory_mib", None),
    "created": ("created", None),
    "cpu_percent": ("sort_cpu_percent", Coalesce("cpu_percent", _NO_SAMPLE)),
    "memory_percent": ("sort_memory_percent", Coalesce("memory_percent", _NO_SAMPLE)),
    # Uptime: the longest running first is the earliest started_at; stopped VMs last.
    "started_at": (
        "sort_started_at",
        Coalesce("started_at", _NOT_STARTED, output_field=DateTimeField()),
    ),
}


def _orderings(value: str) -> list[tuple[str, bool]]:
    """``(name, descending)`` of each comma-separated part of ``?ordering=``."""
    parts = [part.strip() for part in value.split(",") if part.strip()]
    return [(part.removeprefix("-"), part.startswith("-")) for part in parts]


def validate_ordering(value: str) -> None:
    unknown = [name for name, _desc in _orderings(value) if name not in ORDERINGS]
    if unknown:
        # The value goes in as a parameter: django-filter interpolates every message with its
        # params, so a "%" typed into the query must not be part of the message itself.
        raise ValidationError(
            "Unknown field %(field)s; sort by one of %(fields)s (-field: descending).",
            params={"field": repr(unknown[0]), "fields": ", ".join(ORDERINGS)},
        )


class OrderingFilter(django_filters.CharFilter):
    """``?ordering=field`` (``-field`` descending, several comma separated) among
    :data:`ORDERINGS`; anything else is a form error on ``ordering`` (400 in the API)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("validators", [validate_ordering])
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if not value:
            return qs
        order, annotations = [], {}
        for name, desc in _orderings(value):
            target, annotation = ORDERINGS[name]
            if annotation is not None:
                annotations[target] = annotation
            order.append(f"-{target}" if desc else target)
        # Ties are broken by the id: pages by offset stay stable, and the cursor needs it.
        return qs.annotate(**annotations).order_by(*order, "pk")


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
    tag = django_filters.CharFilter(method="filter_tag", help_text="VMs that carry this tag")
    ordering = OrderingFilter(help_text=f"Sort by one of {', '.join(ORDERINGS)} (-x: descending)")

    class Meta:
        model = VirtualMachine
        fields = [
            "host", "tenant", "name", "q", "state", "is_template", "gone", "drift", "tag",
            "ordering",
        ]  # fmt: skip

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

    def filter_tag(self, queryset, name, value):
        return with_tag(queryset, value)

    def filter_q(self, queryset, name, value):
        return queryset.filter(search_condition(value))
