"""Metric history of one VM, host or storage pool: ``GET …/<id>/metrics/?range=hour``."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.models import Host, StoragePool
from metrics.store import RANGES, get_store
from panel.api.permissions import IsPlatformAdmin
from panel.tenancy import Action, restrict
from vms.models import VirtualMachine

RANGE_PARAM = OpenApiParameter(
    "range", str, enum=list(RANGES), description="hour (10 s), day (1 min), week/month (1 h), "
    "year (1 day); default hour",
)  # fmt: skip


def metrics_payload(kind: str, obj_id: int, simulated: bool, range_name: str) -> dict:
    store = get_store()
    data = store.series(kind, obj_id, range_name)
    current = store.latest(kind, [obj_id]).get(obj_id)
    return {"simulated": simulated, **data, "current": current}


class _MetricsView(APIView):
    kind = ""

    def range_name(self, request) -> str:
        name = request.query_params.get("range", "hour")
        if name not in RANGES:
            raise ValidationError({"range": f"One of {', '.join(RANGES)}."})
        return name

    def target(self, request, pk) -> tuple[int, bool]:
        raise NotImplementedError

    @extend_schema(parameters=[RANGE_PARAM], responses=OpenApiTypes.OBJECT)
    def get(self, request, pk):
        name = self.range_name(request)
        obj_id, simulated = self.target(request, pk)
        return Response(metrics_payload(self.kind, obj_id, simulated, name))


class VmMetricsView(_MetricsView):
    """A VM's metrics, for whoever may see the VM (another tenant's VM answers 404)."""

    permission_classes = [IsAuthenticated]
    kind = "vm"

    def target(self, request, pk):
        qs = restrict(VirtualMachine.objects.select_related("host"), request.user, Action.VM_VIEW)
        vm = get_object_or_404(qs, pk=pk)
        return vm.pk, vm.host.simulated


class HostMetricsView(_MetricsView):
    permission_classes = [IsPlatformAdmin]
    kind = "host"

    def target(self, request, pk):
        host = get_object_or_404(Host.objects.all(), pk=pk)
        return host.pk, host.simulated


class StoragePoolMetricsView(_MetricsView):
    permission_classes = [IsPlatformAdmin]
    kind = "pool"

    def target(self, request, pk):
        pool = get_object_or_404(StoragePool.objects.select_related("host"), pk=pk)
        return pool.pk, pool.host.simulated
