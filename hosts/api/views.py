"""API views of the hosts room: hosts (add, sync, edit, forget), pools, volumes, networks."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from hosts import selectors, services
from hosts.filtersets import HostFilterSet, NetworkFilterSet, StoragePoolFilterSet, VolumeFilterSet
from panel.api.permissions import IsPlatformAdmin
from panel.api.serializers import TaskEnvelopeSerializer, TaskSerializer

from .serializers import (
    HostCreateSerializer,
    HostSerializer,
    HostUpdateSerializer,
    NetworkSerializer,
    StoragePoolSerializer,
    VolumeCreateSerializer,
    VolumeResizeSerializer,
    VolumeSerializer,
)


class HostViewSet(viewsets.ModelViewSet):
    permission_classes = [IsPlatformAdmin]
    serializer_class = HostSerializer
    filterset_class = HostFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.hosts()

    @extend_schema(request=HostCreateSerializer, responses={201: HostSerializer})
    def create(self, request, *args, **kwargs):
        ser = HostCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        host, task = services.host_create(user=request.user, **ser.validated_data)
        data = HostSerializer(selectors.hosts().get(pk=host.pk)).data
        data["task"] = TaskSerializer(task).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=HostUpdateSerializer, responses=HostSerializer)
    def partial_update(self, request, *args, **kwargs):
        host = self.get_object()
        ser = HostUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        services.host_update(user=request.user, host=host, **ser.validated_data)
        return Response(HostSerializer(self.get_object()).data)

    def destroy(self, request, *args, **kwargs):
        services.host_delete(user=request.user, host=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        task = services.host_sync(user=request.user, host=self.get_object())
        return Response({"task": TaskSerializer(task).data}, status=status.HTTP_202_ACCEPTED)


class StreamParser(BaseParser):
    """Accepts any body without reading it: the upload view streams it itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


class InventoryViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Mirrors of the hosts: read-only but for Paddock's own fields (description, tags)."""

    permission_classes = [IsPlatformAdmin]
    http_method_names = ["get", "patch", "head", "options"]

    def perform_update(self, serializer):
        data = serializer.validated_data
        services.inventory_update(
            user=self.request.user,
            obj=serializer.instance,
            description=data.get("description"),
            tags=data.get("tags"),
        )


class StoragePoolViewSet(InventoryViewSet):
    serializer_class = StoragePoolSerializer
    filterset_class = StoragePoolFilterSet
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.pools()

    @extend_schema(
        parameters=[
            # Not "format": DRF takes ?format= for the response's renderer.
            OpenApiParameter(
                "volume_name", str, required=True, description="Volume name, e.g. debian.iso"
            ),
            OpenApiParameter(
                "volume_format",
                str,
                enum=["raw", "qcow2", "iso"],
                description="raw (default), qcow2 or iso",
            ),
        ],
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={201: VolumeSerializer},
        description="Stream a file (ISO or disk image) into the pool. The body is the file, "
        "Content-Length is required and must fit the pool's free space.",
    )
    @action(detail=True, methods=["post"], parser_classes=[StreamParser])
    def upload(self, request, pk=None):
        pool = self.get_object()
        try:
            size = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        raw = request._request  # the Django request: read the body as a stream, never whole
        chunk = 1024 * 1024

        def chunks():
            while True:
                data = raw.read(chunk)
                if not data:
                    return
                yield data

        volume, _task = services.volume_upload(
            user=request.user,
            pool=pool,
            name=request.query_params.get("volume_name", ""),
            size=size,
            chunks=chunks(),
            format=request.query_params.get("volume_format", "raw"),
        )
        volume = selectors.volumes().get(pk=volume.pk)
        return Response(VolumeSerializer(volume).data, status=status.HTTP_201_CREATED)


class VolumeViewSet(mixins.CreateModelMixin, mixins.DestroyModelMixin, InventoryViewSet):
    """Volumes: created, grown and deleted on the host by tasks (202)."""

    serializer_class = VolumeSerializer
    filterset_class = VolumeFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return selectors.volumes()

    def perform_update(self, serializer):
        super().perform_update(serializer)
        data = serializer.validated_data
        if "published" in data or "tenant" in data:
            volume = serializer.instance
            services.volume_publish(
                user=self.request.user,
                volume=volume,
                published=data.get("published", volume.published),
                tenant=data.get("tenant", volume.tenant),
            )

    @extend_schema(request=VolumeCreateSerializer, responses={202: TaskEnvelopeSerializer})
    def create(self, request, *args, **kwargs):
        ser = VolumeCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = dict(ser.validated_data)
        pool = get_object_or_404(selectors.pools(), pk=data.pop("pool"))
        task = services.volume_create(user=request.user, pool=pool, **data)
        return Response({"task": TaskSerializer(task).data}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={202: TaskEnvelopeSerializer})
    def destroy(self, request, *args, **kwargs):
        task = services.volume_delete(user=request.user, volume=self.get_object())
        return Response({"task": TaskSerializer(task).data}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=VolumeResizeSerializer, responses={202: TaskEnvelopeSerializer})
    @action(detail=True, methods=["post"])
    def resize(self, request, pk=None):
        ser = VolumeResizeSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        task = services.volume_grow(
            user=request.user, volume=self.get_object(), size_gib=ser.validated_data["size_gib"]
        )
        return Response({"task": TaskSerializer(task).data}, status=status.HTTP_202_ACCEPTED)


class NetworkViewSet(InventoryViewSet):
    serializer_class = NetworkSerializer
    filterset_class = NetworkFilterSet

    def get_queryset(self):
        return selectors.networks()
