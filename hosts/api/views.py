"""API views of the hosts room: hosts (add, sync, edit, forget), pools, volumes, networks."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
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

    def get_queryset(self):
        return selectors.pools()


class VolumeViewSet(InventoryViewSet):
    serializer_class = VolumeSerializer
    filterset_class = VolumeFilterSet

    def get_queryset(self):
        return selectors.volumes()


class NetworkViewSet(InventoryViewSet):
    serializer_class = NetworkSerializer
    filterset_class = NetworkFilterSet

    def get_queryset(self):
        return selectors.networks()
