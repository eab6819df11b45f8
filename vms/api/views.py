"""API views of VMs."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.response import Response

from vms import selectors, services
from vms.filtersets import VirtualMachineFilterSet

from .serializers import VirtualMachineSerializer, VirtualMachineUpdateSerializer


class VirtualMachineViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = VirtualMachineSerializer
    filterset_class = VirtualMachineFilterSet
    http_method_names = ["get", "patch", "head", "options"]

    def get_queryset(self):
        return selectors.vms_for(self.request.user)

    @extend_schema(request=VirtualMachineUpdateSerializer, responses=VirtualMachineSerializer)
    def partial_update(self, request, *args, **kwargs):
        vm = self.get_object()
        ser = VirtualMachineUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        services.vm_update(user=request.user, vm=vm, **ser.validated_data)
        return Response(VirtualMachineSerializer(self.get_object()).data)
