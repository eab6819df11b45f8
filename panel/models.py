"""Tenancy (tenants, memberships, API tokens) and the task log (tasks and their log lines)."""

from __future__ import annotations

import hashlib
import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from . import registry
from .choices import FINAL_TASK_STATES, Role, TaskState
from .validators import TAG_RE, validate_name

DEFAULT_TENANT_NAME = "default"


class Tenant(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[validate_name])
    description = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    # Where the tenant's operators may create VMs (platform admins create anywhere).
    allowed_hosts = models.ManyToManyField("hosts.Host", blank=True, related_name="tenants")
    allowed_pools = models.ManyToManyField("hosts.StoragePool", blank=True, related_name="tenants")
    allowed_networks = models.ManyToManyField("hosts.Network", blank=True, related_name="tenants")

    # Limits; empty means unlimited.
    max_vms = models.PositiveIntegerField(null=True, blank=True)
    max_vcpus = models.PositiveIntegerField(null=True, blank=True)
    max_memory_mib = models.PositiveBigIntegerField(null=True, blank=True)
    max_disk_gib = models.PositiveBigIntegerField(null=True, blank=True)
    # Tuning resources: pCPUs dedicated to the tenant's VMs, memory backed by hugepages.
    max_dedicated_cpus = models.PositiveIntegerField(null=True, blank=True)
    max_hugepages_mib = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def get_default(cls) -> Tenant:
        tenant, _ = cls.objects.get_or_create(
            name=DEFAULT_TENANT_NAME,
            defaults={"description": "VMs imported from hosts, until an admin moves them."},
        )
        return tenant


class Membership(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant__name", "user__username"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "tenant"],
                name="membership_unique_user_tenant",
                violation_error_message="This user is already a member of this tenant.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


def _hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(Q(expires__isnull=True) | Q(expires__gt=now))


class ApiToken(models.Model):
    """A bearer token for automation; only its SHA-256 is stored, the secret is shown once."""

    PREFIX_LEN = 8

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=PREFIX_LEN, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @classmethod
    def issue(cls, *, user, name: str = "", expires=None) -> tuple[ApiToken, str]:
        raw = secrets.token_urlsafe(32)
        token = cls.objects.create(
            user=user,
            name=name,
            prefix=raw[: cls.PREFIX_LEN],
            key_hash=_hash_token(raw),
            expires=expires,
        )
        return token, raw

    @classmethod
    def lookup(cls, raw: str) -> ApiToken | None:
        return (
            cls.objects.active()
            .select_related("user")
            .filter(key_hash=_hash_token(raw), user__is_active=True)
            .first()
        )


class TaskQuerySet(models.QuerySet):
    def unfinished(self) -> TaskQuerySet:
        return self.filter(state__in=[TaskState.QUEUED, TaskState.RUNNING])


class Task(models.Model):
    """One long operation: who asked, on what, how far it got, what it logged, how it ended."""

    kind = models.CharField(max_length=64, db_index=True)
    state = models.CharField(
        max_length=16, choices=TaskState.choices, default=TaskState.QUEUED, db_index=True
    )
    progress = models.PositiveSmallIntegerField(default=0)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    host = models.ForeignKey(
        "hosts.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    # Where a task moves its VM to (a migration), next to the host it runs on.
    destination_host = models.ForeignKey(
        "hosts.Host", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    vm = models.ForeignKey(
        "vms.VirtualMachine",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="tasks",
    )
    # What the task acts on, kept readable after the object itself is gone.
    target = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created = models.DateTimeField(default=timezone.now, db_index=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=128, blank=True)
    lease_expires = models.DateTimeField(null=True, blank=True)
    # When the task's message was last handed to the broker, and how many times: a queued task
    # whose message was lost (the web process died between commit and publish, the broker
    # restarted empty) is sent again by the resend sweep, less often each time.
    sent_at = models.DateTimeField(null=True, blank=True)
    sends = models.PositiveIntegerField(default=0)
    # A running task's cancel request: its handler checks it at its safe points, undoes what
    # it did as a failure would, and the task ends ``cancelled`` (``panel.taskrunner.cancel``).
    cancel_requested = models.DateTimeField(null=True, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            models.Index(fields=["state", "lease_expires"], name="task_state_lease"),
            models.Index(fields=["tenant", "-created"], name="task_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_TASK_STATES

    @property
    def object_name(self) -> str:
        """The name of what the task acts on: ``target`` without its kind word ("vm web-01"
        -> "web-01")."""
        _kind, _sep, rest = (self.target or "").partition(" ")
        return rest or self.target or ""

    @property
    def title(self) -> str:
        """What the task does, verb and object ("Stop web-01"): the app's registered title for
        its kind (``panel.registry.task_titles``), else its kind's words and its target."""
        titled = registry.task_titles.get(self.kind)
        if titled is not None:
            try:
                return titled(self)
            except (KeyError, TypeError, ValueError, AttributeError):
                pass  # a task row older than its title's params: the plain words below
        words = self.kind.replace(".", " ").replace("_", " ").capitalize()
        return f"{words} {self.target}".strip() if self.target else words


class TaskLogEntry(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="log_entries")
    ts = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=8, default="info")
    message = models.TextField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}"


# The named colours of tag chips; the stylesheet draws each in light and dark mode. Any other
# colour is a #rrggbb, drawn as the chip's dot.
TAG_PALETTE = ("grey", "red", "orange", "yellow", "green", "teal", "blue", "purple", "pink")
HEX_COLOUR_RE = re.compile(r"^#[0-9a-fA-F]{6}\Z")


def validate_tag_colour(value: str) -> None:
    if value in TAG_PALETTE or HEX_COLOUR_RE.match(value or ""):
        return
    raise ValidationError(
        f"Use one of {', '.join(TAG_PALETTE)} or a #rrggbb colour.", code="invalid_colour"
    )


class TagColour(models.Model):
    """The colour of a tag's chips in the tree, the VM list and a VM's summary."""

    tag = models.CharField(
        max_length=50,
        unique=True,
        validators=[RegexValidator(TAG_RE, message="Use up to 50 letters, digits or _.:=-.")],
    )
    colour = models.CharField(max_length=7, validators=[validate_tag_colour])

    class Meta:
        ordering = ["tag"]

    def __str__(self) -> str:
        return f"{self.tag}: {self.colour}"

    def save(self, *args, **kwargs):
        if HEX_COLOUR_RE.match(self.colour or ""):
            self.colour = self.colour.lower()
        super().save(*args, **kwargs)

    @property
    def is_named(self) -> bool:
        return self.colour in TAG_PALETTE

    @classmethod
    def replace_all(cls, colours: dict[str, str]) -> None:
        """Make ``colours`` (tag -> colour) the whole set: other tags lose their colour."""
        with transaction.atomic():
            cls.objects.exclude(tag__in=list(colours)).delete()
            existing = {tc.tag: tc for tc in cls.objects.select_for_update()}
            for tag, colour in colours.items():
                row = existing.get(tag) or cls(tag=tag)
                if row.pk is None or row.colour != colour:
                    row.colour = colour
                    row.save()
