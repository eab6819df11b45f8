"""The tuning API: policies, a VM's tuning (status, attach, fit, apply), a create spec's fit,
a host's pCPUs and hugepages. Every answer comes from ``tuning.services``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from hosts.selectors import hosts_for
from panel.api.serializers import TaskSerializer
from panel.selectors import tenants_for
from panel.tenancy import is_platform_admin
from vms import selectors as vm_selectors

from .. import services
from .serializers import (
    CopySerializer,
    HousekeepingSerializer,
    PolicyRefSerializer,
    SpecFitSerializer,
    TuningPolicySerializer,
)


def _refused(exc: services.FitRefused) -> Response:
    return Response({"detail": str(exc), "report": exc.report}, status=status.HTTP_409_CONFLICT)


def _vm(request, pk):
    vm = vm_selectors.vms_for(request.user).filter(pk=pk).first()
    if vm is None:
        raise NotFound("No such VM.")
    return vm


class TuningPolicyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Tuning policies: the built-in profiles, the platform's and your tenants'."""

    serializer_class = TuningPolicySerializer
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]

    def get_queryset(self):
        return services.policies_for(self.request.user).select_related("tenant")

    def _tenant(self, tenant_id):
        if tenant_id is None:
            return None
        tenant = tenants_for(self.request.user).filter(pk=tenant_id).first()
        if tenant is None:
            raise ValidationError({"tenant": "Unknown tenant."})
        return tenant

    def create(self, request, *args, **kwargs):
        ser = self.get_serializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        policy = services.create_policy(
            request.user, name=data["name"], knobs=data.get("knobs") or {},
            tenant=self._tenant(data.get("tenant_id")), description=data.get("description", ""),
        )  # fmt: skip
        return Response(self.get_serializer(policy).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        policy = self.get_object()
        ser = self.get_serializer(policy, data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        if "tenant_id" in data and data["tenant_id"] != policy.tenant_id:
            raise ValidationError({"tenant": "A policy's owner does not change: copy it."})
        policy = services.update_policy(
            request.user, policy, knobs=data.get("knobs"), description=data.get("description"),
            name=data.get("name"),
        )  # fmt: skip
        return Response(self.get_serializer(policy).data)

    def destroy(self, request, *args, **kwargs):
        services.delete_policy(request.user, self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=CopySerializer, responses={201: TuningPolicySerializer})
    @action(detail=True, methods=["post"])
    def copy(self, request, pk=None):
        ser = CopySerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        policy = services.copy_policy(
            request.user, self.get_object(), name=ser.validated_data["name"],
            tenant=self._tenant(ser.validated_data.get("tenant")),
        )  # fmt: skip
        return Response(self.get_serializer(policy).data, status=status.HTTP_201_CREATED)


class VmTuningView(APIView):
    """``GET``: the VM's policy, applied version and plan, restart needs, drift, proof and
    advice. ``PUT {"policy"}``: attach a policy (null: inherit) without applying it."""

    @extend_schema(responses={200: dict})
    def get(self, request, pk):
        return Response(services.tuning_status(request.user, _vm(request, pk)))

    @extend_schema(request=PolicyRefSerializer, responses={200: dict})
    def put(self, request, pk):
        vm = _vm(request, pk)
        services.attach_policy(request.user, vm, request.data.get("policy"))
        return Response(services.tuning_status(request.user, vm))


class VmTuningFitView(APIView):
    """``POST {"policy"}``: where and why the policy fits the VM (its host today)."""

    @extend_schema(request=PolicyRefSerializer, responses={200: dict})
    def post(self, request, pk):
        ser = PolicyRefSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return Response(
            services.fit_vm(request.user, _vm(request, pk), ser.validated_data["policy"])
        )


class VmTuningPlanView(APIView):
    """``POST {"policy"}``: the plan applying the policy would carry out (nothing changes)."""

    @extend_schema(request=PolicyRefSerializer, responses={200: dict, 409: dict})
    def post(self, request, pk):
        ser = PolicyRefSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            plan = services.plan_vm(request.user, _vm(request, pk), ser.validated_data["policy"])
        except services.FitRefused as exc:
            return _refused(exc)
        return Response(plan.to_dict())


class VmTuningApplyView(APIView):
    """``POST {"policy"}``: 202 with the ``vm.tune`` task, or 409 with the fit report."""

    @extend_schema(request=PolicyRefSerializer, responses={202: dict, 409: dict})
    def post(self, request, pk):
        ser = PolicyRefSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            task = services.apply_policy(
                request.user, _vm(request, pk), ser.validated_data["policy"]
            )
        except services.FitRefused as exc:
            return _refused(exc)
        return Response({"task": TaskSerializer(task).data}, status=status.HTTP_202_ACCEPTED)


class SpecFitView(APIView):
    """``POST {"tenant", "policy", "vcpus", "memory_mib", "disks", "nics"}``: the fit of a VM
    not created yet, on every host the tenant may use, best first."""

    @extend_schema(request=SpecFitSerializer, responses={200: dict})
    def post(self, request):
        ser = SpecFitSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        tenant = tenants_for(request.user).filter(pk=data["tenant"]).first()
        if tenant is None:
            raise ValidationError({"tenant": "Unknown tenant."})
        return Response(
            services.fit_spec(
                request.user, tenant, vcpus=data["vcpus"], memory_mib=data["memory_mib"],
                policy=data["policy"], disks=range(data["disks"]), nics=range(data["nics"]),
            )
        )  # fmt: skip


class TenantTuningDefaultView(APIView):
    """``GET``: the policy a tenant's VMs get when nothing closer names one (null: balanced).
    ``PUT {"policy"}``: set it (an id or a name; null: none) — the tenant's admins."""

    def _tenant(self, request, pk):
        tenant = tenants_for(request.user).filter(pk=pk).first()
        if tenant is None:
            raise NotFound("No such tenant.")
        return tenant

    @staticmethod
    def _answer(tenant) -> Response:
        default = services.tenant_default(tenant)
        return Response({"tenant": tenant.pk, "policy": default.name if default else None,
                         "policy_id": default.pk if default else None})  # fmt: skip

    @extend_schema(responses={200: dict})
    def get(self, request, pk):
        return self._answer(self._tenant(request, pk))

    @extend_schema(request=PolicyRefSerializer, responses={200: dict})
    def put(self, request, pk):
        tenant = self._tenant(request, pk)
        if "policy" not in request.data:
            raise ValidationError({"policy": "A policy id or name, or null."})
        value = request.data.get("policy")
        if (value is not None and not isinstance(value, (int, str))) or isinstance(value, bool):
            raise ValidationError({"policy": "A policy id or name, or null."})
        services.set_tenant_default(request.user, tenant, value)
        return self._answer(tenant)


class HostTuningView(APIView):
    """``GET``: every pCPU by NUMA node and core with who holds it, hugepages per node.
    ``PUT {"cpus"}``: the host's housekeeping pCPUs (platform admins)."""

    def _host(self, request, pk):
        # who holds each pCPU names other tenants' VMs: a platform view, as hosts are
        if not is_platform_admin(request.user):
            raise PermissionDenied("Only platform admins see a host's tuning.")
        host = hosts_for(request.user, None).filter(pk=pk).first()
        if host is None:
            raise NotFound("No such host.")
        return host

    @extend_schema(responses={200: dict})
    def get(self, request, pk):
        return Response(services.host_tuning(self._host(request, pk)))

    @extend_schema(request=HousekeepingSerializer, responses={200: dict})
    def put(self, request, pk):
        host = self._host(request, pk)
        ser = HousekeepingSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        services.set_housekeeping(request.user, host, ser.validated_data["cpus"])
        host.refresh_from_db()
        return Response(services.host_tuning(host))
