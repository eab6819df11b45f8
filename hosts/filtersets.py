"""Filters of the hosts room, shared by API lists and UI lists."""

import django_filters

from panel.filtersets import IdFilter, PaddockFilterSet

from .choices import HostStatus, PoolState, PoolType
from .models import Host, Network, StoragePool, Volume


class GoneFilterMixin(PaddockFilterSet):
    """Objects gone from their host are hidden unless ``?gone=true`` (or false) is asked."""

    gone = django_filters.BooleanFilter()

    def filter_queryset(self, queryset):
        if self.form.cleaned_data.get("gone") is None:
            queryset = queryset.filter(gone=False)
        return super().filter_queryset(queryset)


class HostFilterSet(PaddockFilterSet):
    name = django_filters.CharFilter(lookup_expr="iexact")
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    status = django_filters.MultipleChoiceFilter(choices=HostStatus.choices, distinct=False)

    class Meta:
        model = Host
        fields = ["name", "q", "status", "simulated"]


class StoragePoolFilterSet(GoneFilterMixin):
    host = IdFilter(field_name="host_id")
    name = django_filters.CharFilter(lookup_expr="iexact")
    pool_type = django_filters.MultipleChoiceFilter(choices=PoolType.choices, distinct=False)
    state = django_filters.MultipleChoiceFilter(choices=PoolState.choices, distinct=False)

    class Meta:
        model = StoragePool
        fields = ["host", "name", "pool_type", "state", "gone"]


class VolumeFilterSet(GoneFilterMixin):
    host = IdFilter(field_name="pool__host_id")
    pool = IdFilter(field_name="pool_id")
    name = django_filters.CharFilter(lookup_expr="iexact")
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains")
    # Not "format": DRF reserves ?format= for choosing the response renderer.
    image_format = django_filters.CharFilter(field_name="format")

    class Meta:
        model = Volume
        fields = ["host", "pool", "name", "q", "image_format", "gone"]


class NetworkFilterSet(GoneFilterMixin):
    host = IdFilter(field_name="host_id")
    name = django_filters.CharFilter(lookup_expr="iexact")

    class Meta:
        model = Network
        fields = ["host", "name", "forward_mode", "active", "gone"]
