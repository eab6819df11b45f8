"""API views of the panel room: tasks, tenants, users, memberships, tokens."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from panel import selectors, services, taskrunner
from panel.choices import Role
from panel.filtersets import MembershipFilterSet, TaskFilterSet, TenantFilterSet, UserFilterSet
from panel.models import ApiToken, TagColour, Tenant
from panel.registry import tenant_reports
from panel.security import TokenAddressThrottle, TokenUsernameThrottle, lockout_response
from panel.tenancy import is_platform_admin

from .serializers import (
    ApiTokenSerializer,
    MembershipSerializer,
    MembershipUpdateSerializer,
    TagColourListSerializer,
    TagColourSerializer,
    TaskSerializer,
    TenantSerializer,
    TenantUpdateSerializer,
    TokenCreatedSerializer,
    TokenObtainSerializer,
    UserSerializer,
)


class ScopedViewSetMixin:
    """The queryset is restricted to what the requesting user may see, once, for every action."""

    def get_queryset(self):
        return self.scoped_queryset(self.request.user)

    def scoped_queryset(self, user):  # pragma: no cover - each viewset says
        raise NotImplementedError


class TaskViewSet(ScopedViewSetMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = TaskSerializer
    filterset_class = TaskFilterSet

    def scoped_queryset(self, user):
        return selectors.tasks_for(user)

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(TaskSerializer, description="Cancelled (it was queued)."),
            202: OpenApiResponse(
                TaskSerializer, description="Asked: it stops at its next safe point."
            ),
            409: OpenApiResponse(description="It ended already, or cannot stop safely."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel the task: a queued one at once, a running one at its next safe point (what
        it made is undone as on a failure). Who may run its action may cancel it."""
        try:
            task = taskrunner.task_cancel(user=request.user, task=self.get_object())
        except taskrunner.CancelRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        code = status.HTTP_200_OK if task.is_final else status.HTTP_202_ACCEPTED
        return Response(TaskSerializer(task).data, status=code)


class TenantViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    serializer_class = TenantSerializer
    filterset_class = TenantFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user):
        # The grants are listed per tenant: one query each, not one per tenant.
        grants = ("allowed_hosts", "allowed_pools", "allowed_networks")
        return selectors.tenants_for(user).prefetch_related(*grants)

    def create(self, request, *args, **kwargs):
        if not is_platform_admin(request.user):  # before reading the body
            raise PermissionDenied("Only platform admins create tenants.")
        ser = TenantSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        tenant = services.tenant_create(user=request.user, **ser.validated_data)
        tenant.vm_count = 0
        return Response(TenantSerializer(tenant).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=TenantUpdateSerializer, responses=TenantSerializer)
    def partial_update(self, request, *args, **kwargs):
        tenant = self.get_object()
        ser = TenantUpdateSerializer(tenant, data=request.data, partial=True)
        ser.is_valid(raise_exception=True)
        services.tenant_update(user=request.user, tenant=tenant, **ser.validated_data)
        return Response(TenantSerializer(self.get_object()).data)

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def usage(self, request, pk=None):
        """Quota limits (null = unlimited) and what the tenant uses now."""
        return Response(tenant_reports["usage"](self.get_object()))

    @extend_schema(responses={200: dict})
    @action(detail=True, methods=["get"])
    def placement(self, request, pk=None):
        """The hosts, pools and networks the tenant's operators may create VMs on."""
        return Response(tenant_reports["placement"](self.get_object()))

    def destroy(self, request, *args, **kwargs):
        services.tenant_delete(user=request.user, tenant=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserViewSet(ScopedViewSetMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = UserSerializer
    filterset_class = UserFilterSet

    def scoped_queryset(self, user):
        return selectors.users_for(user)

    def create(self, request, *args, **kwargs):
        ser = UserSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        tenant = None
        if "tenant" in data:
            tenant = _visible_tenant(request.user, data["tenant"])
        user = services.user_create(
            user=request.user,
            username=data["username"],
            password=data["password"],
            email=data.get("email", ""),
            is_superuser=data.get("is_superuser", False),
            tenant=tenant,
            role=data.get("role", Role.MEMBER),
        )
        return Response(
            UserSerializer(user, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )


def _visible_tenant(user, tenant_id: int) -> Tenant:
    """A tenant the user can see; one they cannot is answered exactly like a missing one."""
    tenant = selectors.tenants_for(user).filter(pk=tenant_id).first()
    if tenant is None:
        raise ValidationError({"tenant": [f'Invalid pk "{tenant_id}" - object does not exist.']})
    return tenant


class MembershipViewSet(ScopedViewSetMixin, viewsets.ModelViewSet):
    serializer_class = MembershipSerializer
    filterset_class = MembershipFilterSet
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def scoped_queryset(self, user):
        return selectors.memberships_for(user)

    def create(self, request, *args, **kwargs):
        ser = MembershipSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        membership = services.membership_create(
            user=request.user,
            username=ser.validated_data["user"]["username"],
            tenant=_visible_tenant(request.user, ser.validated_data["tenant_id"]),
            role=ser.validated_data["role"],
        )
        return Response(MembershipSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=MembershipUpdateSerializer, responses=MembershipSerializer)
    def partial_update(self, request, *args, **kwargs):
        membership = self.get_object()
        ser = MembershipUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        services.membership_update(
            user=request.user, membership=membership, role=ser.validated_data["role"]
        )
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request, *args, **kwargs):
        services.membership_delete(user=request.user, membership=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenObtainView(APIView):
    """Exchange a username and password for a new API token."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []
    # Per address and per username, before any password is checked; a username or address
    # that axes locked (at this door or at /login/) is refused by authenticate() itself.
    throttle_classes = [TokenAddressThrottle, TokenUsernameThrottle]

    @extend_schema(
        request=TokenObtainSerializer,
        responses={
            201: TokenCreatedSerializer,
            403: OpenApiResponse(description="Wrong username or password."),
            429: OpenApiResponse(
                description="Too many attempts: throttled, or the username or address is "
                "locked out (Retry-After says for how long)."
            ),
        },
    )
    def post(self, request):
        ser = TokenObtainSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        user = authenticate(
            request._request,  # the Django request: axes marks a locked-out attempt on it
            username=ser.validated_data["username"],
            password=ser.validated_data["password"],
        )
        if getattr(request._request, "axes_locked_out", False):
            return lockout_response(request._request)
        if user is None or not user.is_active:
            raise AuthenticationFailed("Wrong username or password.")
        token, raw = services.token_issue(user=user, name=ser.validated_data.get("name", ""))
        return Response(
            {"token": raw, "id": token.pk, "name": token.name, "prefix": token.prefix},
            status=status.HTTP_201_CREATED,
        )


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The requesting user's own API tokens: list, create (secret shown once), revoke."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        if not self.request.user.is_authenticated:  # the schema generator asks as nobody
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(responses={201: TokenCreatedSerializer})
    def create(self, request, *args, **kwargs):
        ser = ApiTokenSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        token, raw = services.token_issue(
            user=request.user, name=ser.validated_data.get("name", "")
        )
        return Response(
            {"token": raw, "id": token.pk, "name": token.name, "prefix": token.prefix},
            status=status.HTTP_201_CREATED,
        )

    def perform_destroy(self, instance):
        services.token_revoke(user=self.request.user, token=instance)


class TagColourView(APIView):
    """The colours of tags' chips: everyone reads them, platform admins set the whole list
    (PUT replaces it; a tag left out loses its colour)."""

    @extend_schema(responses={200: TagColourSerializer(many=True)})
    def get(self, request):
        rows = TagColour.objects.values("tag", "colour")
        return Response(TagColourSerializer(rows, many=True).data)

    @extend_schema(
        request=TagColourSerializer(many=True), responses={200: TagColourSerializer(many=True)}
    )
    def put(self, request):
        if not is_platform_admin(request.user):
            raise PermissionDenied("Only platform admins set tag colours.")
        ser = TagColourListSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        TagColour.replace_all({item["tag"]: item["colour"] for item in ser.validated_data})
        return self.get(request)


class WhoAmIView(APIView):
    """The authenticated user and their tenant roles (also the benchmark's trivial endpoint)."""

    @extend_schema(responses={200: dict})
    def get(self, request):
        user = request.user
        return Response(
            {
                "id": user.pk,
                "username": user.username,
                "is_superuser": user.is_superuser,
            }
        )


class HealthView(APIView):
    """Liveness and readiness: the database answers. No authentication, no details leaked."""

    permission_classes = [permissions.AllowAny]
    authentication_classes: list = []

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception:
            return Response({"status": "unavailable"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"status": "ok"})
