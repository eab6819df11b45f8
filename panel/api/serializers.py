"""API shapes of the panel room: tasks, tenants, users, memberships, tokens."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from panel.bounds import MAX_ID
from panel.choices import Role
from panel.models import (
    TAG_PALETTE,
    ApiToken,
    Membership,
    TagColour,
    Task,
    Tenant,
    validate_tag_colour,
)
from panel.tenancy import is_platform_admin

User = get_user_model()

# Quota limits: far beyond any platform, inside the database's columns (32-bit counts, 64-bit
# sizes on PostgreSQL).
MAX_QUOTA = {
    "max_vms": 2**31 - 1,
    "max_vcpus": 2**31 - 1,
    "max_memory_mib": 2**62,
    "max_disk_gib": 2**62,
}


class IdField(serializers.IntegerField):
    """An object id in a request body: 0 .. 2**63-1, so a huge number is a 400 with a field
    message rather than an overflow in the database."""

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(**kwargs)


class BriefSerializer(serializers.Serializer):
    """``{"id", "name"}`` of a related object."""

    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class BriefUserSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)


class TaskSerializer(serializers.ModelSerializer):
    host = BriefSerializer(read_only=True, allow_null=True)
    destination_host = BriefSerializer(read_only=True, allow_null=True)
    vm = BriefSerializer(read_only=True, allow_null=True)
    tenant = BriefSerializer(read_only=True, allow_null=True)
    user = BriefUserSerializer(read_only=True, allow_null=True)
    log = serializers.SerializerMethodField()
    wait_until = serializers.SerializerMethodField()
    title = serializers.CharField(
        read_only=True, help_text="What the task does, verb and object: 'Stop web-01'."
    )

    class Meta:
        model = Task
        fields = [
            "id", "kind", "title", "state", "progress", "target", "vm", "host", "destination_host", "user",
            "tenant", "created", "started", "finished", "error", "result", "log",
            "cancel_requested", "wait_until",
        ]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_wait_until(self, task: Task) -> str | None:
        """When the task's wait ends (a shutdown waiting for the guest): a page's countdown."""
        return task.params.get("wait_until") if not task.is_final else None

    @extend_schema_field(
        serializers.ListField(
            child=serializers.DictField(), help_text="Log lines: {ts, level, message}"
        )
    )
    def get_log(self, task: Task) -> list[dict]:
        return [
            {"ts": e.ts, "level": e.level, "message": e.message} for e in task.log_entries.all()
        ]


class TaskEnvelopeSerializer(serializers.Serializer):
    """An action's answer: 202 with the task that carries it out."""

    task = TaskSerializer()


_QUOTA_KWARGS = {name: {"min_value": 0, "max_value": bound} for name, bound in MAX_QUOTA.items()}


class TenantSerializer(serializers.ModelSerializer):
    vm_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Tenant
        fields = [
            "id", "name", "description", "created", "vm_count", "max_vms", "max_vcpus",
            "max_memory_mib", "max_disk_gib", "allowed_hosts", "allowed_pools", "allowed_networks",
        ]  # fmt: skip
        read_only_fields = [
            "id", "created", "vm_count", "allowed_hosts", "allowed_pools", "allowed_networks",
        ]  # fmt: skip
        extra_kwargs = _QUOTA_KWARGS


class TenantUpdateSerializer(serializers.ModelSerializer):
    """Platform admins: description, quota limits (null = unlimited) and placement grants."""

    class Meta:
        model = Tenant
        fields = [
            "description", "max_vms", "max_vcpus", "max_memory_mib", "max_disk_gib",
            "allowed_hosts", "allowed_pools", "allowed_networks",
        ]  # fmt: skip
        extra_kwargs = {
            **_QUOTA_KWARGS,
            "allowed_hosts": {"required": False},
            "allowed_pools": {"required": False},
            "allowed_networks": {"required": False},
        }


class UserSerializer(serializers.ModelSerializer):
    """A user. ``email`` and ``is_superuser`` are shown to platform admins only; a tenant admin
    creates a user in one of their tenants by giving ``tenant`` (and ``role``)."""

    password = serializers.CharField(write_only=True, style={"input_type": "password"})
    tenant = IdField(
        write_only=True, required=False, help_text="Create the user as a member of this tenant"
    )
    role = serializers.ChoiceField(
        choices=Role.choices, write_only=True, required=False, default=Role.MEMBER
    )

    class Meta:
        model = User
        fields = [
            "id", "username", "email", "is_superuser", "is_active", "date_joined", "password",
            "tenant", "role",
        ]  # fmt: skip
        read_only_fields = ["id", "is_active", "date_joined"]

    PLATFORM_ONLY = ("email", "is_superuser")

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is None or not is_platform_admin(request.user):
            for name in self.PLATFORM_ONLY:
                data.pop(name, None)
        return data


class MembershipSerializer(serializers.ModelSerializer):
    # Resolved by the service against the users the requester may add, never against all
    # users (a lookup over every username would tell a tenant admin which ones exist).
    user = serializers.CharField(source="user.username", max_length=150, help_text="Username")
    tenant = IdField(source="tenant_id")
    role = serializers.ChoiceField(choices=Role.choices)

    class Meta:
        model = Membership
        fields = ["id", "user", "tenant", "role", "created"]
        read_only_fields = ["id", "created"]
        # Uniqueness is checked by the service (400 with a field message).
        validators = []


class MembershipUpdateSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class TokenObtainSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(style={"input_type": "password"})
    name = serializers.CharField(required=False, allow_blank=True, max_length=100)


class TokenCreatedSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="The secret; shown only now.")
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()


class ApiTokenSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created", "last_used", "expires"]
        read_only_fields = ["id", "prefix", "created", "last_used", "expires"]


class TagColourSerializer(serializers.Serializer):
    tag = serializers.CharField(
        max_length=50, validators=[TagColour._meta.get_field("tag").validators[0]]
    )
    colour = serializers.CharField(
        max_length=7,
        validators=[validate_tag_colour],
        help_text=f"One of {', '.join(TAG_PALETTE)}, or #rrggbb.",
    )


# The whole list is read and written at once: a bound on what one PUT may hold.
MAX_TAG_COLOURS = 1000


class TagColourListSerializer(serializers.ListSerializer):
    child = TagColourSerializer()

    def validate(self, attrs):
        if len(attrs) > MAX_TAG_COLOURS:
            raise serializers.ValidationError(f"At most {MAX_TAG_COLOURS} tag colours.")
        tags = [item["tag"] for item in attrs]
        if len(set(tags)) != len(tags):
            raise serializers.ValidationError("A tag is listed more than once.")
        return attrs
