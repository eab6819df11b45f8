"""API views of VMs: inventory reads and every lifecycle action, through vms.services."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from panel.api.serializers import BriefSerializer, TaskEnvelopeSerializer, TaskSerializer
from panel.models import Tenant
from panel.selectors import tenants_for
from vms import console as vm_console
from vms import selectors, services
from vms.choices import PowerAction
from vms.filtersets import VirtualMachineFilterSet

from .serializers import (
    VM_ROWS,
    BulkActionSerializer,
    CdromSerializer,
    CloneSerializer,
    DiskAttachSerializer,
    DiskResizeSerializer,
    NicAttachSerializer,
    PowerSerializer,
    SnapshotSerializer,
    VirtualMachineCreateSerializer,
    VirtualMachineEditSerializer,
    VirtualMachineSerializer,
    vm_rows,
)

BulkResultSerializer = inline_serializer(
    "VmBulkResult",
    {
        "action": serializers.CharField(),
        "tasks": inline_serializer(
            "VmBulkTask", {"vm": BriefSerializer(), "task": TaskSerializer()}, many=True
        ),
        "refused": inline_serializer(
            "VmBulkRefusal",
            {
                "id": serializers.IntegerField(),
                "vm": BriefSerializer(allow_null=True),
                "detail": serializers.CharField(),
            },
            many=True,
        ),
    },
)


def bulk_body(result: services.BulkResult) -> dict:
    """The answer to a bulk action: each VM's task, each refused id with its reason."""
    return {
        "action": result.action,
        "tasks": [
            {"vm": {"id": vm.pk, "name": vm.name}, "task": TaskSerializer(task).data}
            for vm, task in result.tasks
        ],
        "refused": [
            {"id": pk, "vm": None if vm is None else {"id": vm.pk, "name": vm.name}, "detail": why}
            for pk, vm, why in result.refused
        ],
    }


VmTaskSerializer = inline_serializer(
    "VmTaskEnvelope", {"vm": VirtualMachineSerializer(), "task": TaskSerializer()}
)


def _accepted(task, vm=None) -> Response:
    body = {"task": TaskSerializer(task).data}
    if vm is not None:
        body = {
            "vm": VirtualMachineSerializer(selectors.vms_for_admin().get(pk=vm.pk)).data,
            **body,
        }
    return Response(body, status=status.HTTP_202_ACCEPTED)


class VirtualMachineViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = VirtualMachineSerializer
    filterset_class = VirtualMachineFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.vms_for(self.request.user)

    def list(self, request, *args, **kwargs):
        # Read as rows (vms.api.serializers.vm_rows): the same shape as the serializer at a
        # fraction of its cost per VM, which is most of a big page's time.
        queryset = self.filter_queryset(self.get_queryset()).prefetch_related(None)
        # A sort key that is an annotation (``?ordering=cpu_percent``) is read with the row:
        # the cursor pagination takes the last row's values of the ordering.
        sort_keys = [f for f in queryset.query.annotations if f not in VM_ROWS.paths]
        page = self.paginate_queryset(queryset.values(*VM_ROWS.paths, *sort_keys))
        return self.get_paginated_response(vm_rows(page))

    @extend_schema(request=BulkActionSerializer, responses={202: BulkResultSerializer})
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        """Start, shut down, stop or delete several VMs: one task each; the VMs that may not
        get one are answered in ``refused`` with the reason (an id the user cannot see is
        refused like one that does not exist)."""
        ser = BulkActionSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        result = services.bulk_action(user=request.user, **ser.validated_data)
        return Response(bulk_body(result), status=status.HTTP_202_ACCEPTED)

    # -- create, edit, delete --------------------------------------------------------------

    @extend_schema(request=VirtualMachineCreateSerializer, responses={202: VmTaskSerializer})
    def create(self, request, *args, **kwargs):
        ser = VirtualMachineCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        tenant = tenants_for(request.user).filter(pk=data.pop("tenant")).first()
        if tenant is None:
            raise ValidationError({"tenant": "Unknown tenant."})
        # The service resolves the host among those the tenant may use ("Unknown host." else).
        vm, task = services.vm_create(user=request.user, tenant=tenant, **data)
        return _accepted(task, vm)

    @extend_schema(
        request=VirtualMachineEditSerializer,
        responses={200: VirtualMachineSerializer, 202: VmTaskSerializer},
    )
    def partial_update(self, request, *args, **kwargs):
        vm = self.get_object()
        ser = VirtualMachineEditSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        if "tenant" in data:
            # A tenant the user cannot see is answered exactly like one that does not exist.
            data["tenant"] = tenants_for(request.user).filter(pk=data["tenant"]).first()
            if data["tenant"] is None:
                raise ValidationError({"tenant": "Unknown tenant."})
        task = services.vm_update(user=request.user, vm=vm, **data)
        if task is not None:
            return _accepted(task, vm)
        return Response(VirtualMachineSerializer(self.get_object()).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("delete_volumes", bool, description="Also delete its volumes")
        ],
        responses={202: TaskEnvelopeSerializer},
    )
    def destroy(self, request, *args, **kwargs):
        vm = self.get_object()
        delete_volumes = request.query_params.get("delete_volumes", "").lower() in (
            "1",
            "true",
            "yes",
        )
        task = services.vm_delete(user=request.user, vm=vm, delete_volumes=delete_volumes)
        return _accepted(task)

    # -- power -----------------------------------------------------------------------------

    def _power(self, request, action_name):
        vm = self.get_object()
        ser = PowerSerializer(data=request.data or {})
        ser.is_valid(raise_exception=True)
        task = services.vm_power(user=request.user, vm=vm, action=action_name, **ser.validated_data)
        return _accepted(task)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def start(self, request, pk=None):
        return self._power(request, PowerAction.START)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def shutdown(self, request, pk=None):
        return self._power(request, PowerAction.SHUTDOWN)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def stop(self, request, pk=None):
        return self._power(request, PowerAction.STOP)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def reboot(self, request, pk=None):
        return self._power(request, PowerAction.REBOOT)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def reset(self, request, pk=None):
        return self._power(request, PowerAction.RESET)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def pause(self, request, pk=None):
        return self._power(request, PowerAction.PAUSE)

    @extend_schema(request=PowerSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        return self._power(request, PowerAction.RESUME)

    # -- devices ---------------------------------------------------------------------------

    @extend_schema(request=DiskAttachSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"], url_path="disks")
    def disks(self, request, pk=None):
        vm = self.get_object()
        ser = DiskAttachSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        task = services.disk_attach(user=request.user, vm=vm, **ser.validated_data)
        return _accepted(task)

    @extend_schema(
        parameters=[OpenApiParameter("delete_volume", bool, description="Also delete the volume")],
        responses={202: TaskEnvelopeSerializer},
    )
    @action(detail=True, methods=["delete"], url_path="disks/<id:disk_id>")
    def disk_detach(self, request, pk=None, disk_id=None):
        vm = self.get_object()
        disk = get_object_or_404(vm.disks, pk=disk_id)
        delete_volume = request.query_params.get("delete_volume", "").lower() in (
            "1",
            "true",
            "yes",
        )
        task = services.disk_detach(
            user=request.user, vm=vm, disk=disk, delete_volume=delete_volume
        )
        return _accepted(task)

    @extend_schema(request=DiskResizeSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"], url_path="disks/<id:disk_id>/resize")
    def disk_resize(self, request, pk=None, disk_id=None):
        vm = self.get_object()
        disk = get_object_or_404(vm.disks.select_related("volume"), pk=disk_id)
        ser = DiskResizeSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        task = services.disk_grow(user=request.user, vm=vm, disk=disk, **ser.validated_data)
        return _accepted(task)

    @extend_schema(request=NicAttachSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"], url_path="nics")
    def nics(self, request, pk=None):
        vm = self.get_object()
        ser = NicAttachSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        task = services.nic_attach(user=request.user, vm=vm, **ser.validated_data)
        return _accepted(task)

    @extend_schema(request=None, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["delete"], url_path="nics/<id:nic_id>")
    def nic_detach(self, request, pk=None, nic_id=None):
        vm = self.get_object()
        nic = get_object_or_404(vm.nics, pk=nic_id)
        return _accepted(services.nic_detach(user=request.user, vm=vm, nic=nic))

    @extend_schema(request=CdromSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def cdrom(self, request, pk=None):
        vm = self.get_object()
        ser = CdromSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return _accepted(services.cdrom_change(user=request.user, vm=vm, **ser.validated_data))

    # -- snapshots -------------------------------------------------------------------------

    @extend_schema(methods=["get"], responses={200: SnapshotSerializer(many=True)}, request=None)
    @extend_schema(
        methods=["post"], request=SnapshotSerializer, responses={202: TaskEnvelopeSerializer}
    )
    # The list is the VM's whole snapshot tree, never paginated (the schema says so too).
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def snapshots(self, request, pk=None):
        vm = self.get_object()
        if request.method == "GET":
            snaps = list(vm.snapshots.all())
            children: dict[str, list[str]] = {}
            for snap in snaps:
                children.setdefault(snap.parent_name, []).append(snap.name)
            for snap in snaps:
                snap.children_names = children.get(snap.name, [])
            return Response(SnapshotSerializer(snaps, many=True).data)
        ser = SnapshotSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        task = services.snapshot_create(
            user=request.user, vm=vm, name=ser.validated_data["name"],
            description=ser.validated_data.get("description", ""),
        )  # fmt: skip
        return _accepted(task)

    @extend_schema(request=None, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"], url_path="snapshots/<name:name>/revert")
    def snapshot_revert(self, request, pk=None, name=None):
        vm = self.get_object()
        get_object_or_404(vm.snapshots, name=name)
        return _accepted(services.snapshot_revert(user=request.user, vm=vm, name=name))

    @extend_schema(request=None, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["delete"], url_path="snapshots/<name:name>")
    def snapshot_delete(self, request, pk=None, name=None):
        vm = self.get_object()
        get_object_or_404(vm.snapshots, name=name)
        return _accepted(services.snapshot_delete(user=request.user, vm=vm, name=name))

    # -- console -------------------------------------------------------------------------

    @extend_schema(
        methods=["post"],
        request=vm_console.ConsoleRequestSerializer,
        responses={201: vm_console.ConsoleTicketSerializer},
    )
    @extend_schema(
        methods=["get"], request=None, responses={200: vm_console.ConsoleStatusSerializer}
    )
    @action(detail=True, methods=["get", "post"])
    def console(self, request, pk=None):
        """POST: a single-use ticket (valid 30 s) and the websocket URL it opens; GET: who is on."""
        return vm_console.console_response(request, self.get_object())

    # -- templates and clones --------------------------------------------------------------

    @extend_schema(request=CloneSerializer, responses={202: VmTaskSerializer})
    @action(detail=True, methods=["post"])
    def clone(self, request, pk=None):
        vm = self.get_object()
        ser = CloneSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        clone, task = services.vm_clone(user=request.user, vm=vm, **ser.validated_data)
        return _accepted(task, clone)

    @extend_schema(request=None, responses={200: VirtualMachineSerializer})
    @action(detail=True, methods=["post"])
    def template(self, request, pk=None):
        vm = services.vm_make_template(user=request.user, vm=self.get_object())
        return Response(VirtualMachineSerializer(self.get_queryset().get(pk=vm.pk)).data)


TenantUsageSerializer = inline_serializer(
    "TenantUsage",
    {"limits": serializers.DictField(), "usage": serializers.DictField()},
)


def tenant_usage_response(tenant: Tenant) -> Response:
    return Response(
        {"limits": services.tenant_limits(tenant), "usage": services.tenant_usage(tenant)}
    )
