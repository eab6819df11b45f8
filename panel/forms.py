"""Forms of the UI shell (tenancy, users, tokens) and helpers shared by every app's forms.

Forms only shape input; the services validate it. A service's ``ValidationError`` is put back
on the form with :func:`apply_service_errors`, so the UI shows the API's messages.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from .choices import Role

_TAG_SPLIT = re.compile(r"[\s,]+")


def apply_service_errors(
    form: forms.Form, exc: ValidationError, field_map: dict[str, str] | None = None
) -> None:
    """Show a service's ValidationError on the form's fields (unknown fields: on the form)."""
    field_map = field_map or {}
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc.messages)
        return
    for field, errors in exc.message_dict.items():
        name = field_map.get(field, field)
        if name == NON_FIELD_ERRORS or name not in form.fields:
            form.add_error(None, errors)
        else:
            form.add_error(name, errors)


class TagsField(forms.CharField):
    """Tags typed as one line, separated by commas or spaces; cleaned to a list."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("help_text", "Separate tags with commas or spaces.")
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, (list, tuple)):
            return ", ".join(value)
        return value

    def to_python(self, value) -> list[str]:
        value = super().to_python(value)
        return [tag for tag in _TAG_SPLIT.split(value or "") if tag]


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=63)
    description = forms.CharField(max_length=200, required=False)


class MembershipAddForm(forms.Form):
    """Add a member of one of your tenants, or (with a password) create a new user here."""

    username = forms.CharField(
        max_length=150,
        label="User",
        help_text="A member of one of your tenants, or the name of a new user.",
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        label="New user's password",
        help_text="Only to create a new user in this tenant.",
    )


class MembershipRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class UserCreateForm(forms.Form):
    username = forms.CharField(max_length=63)
    email = forms.EmailField(required=False)
    password = forms.CharField(widget=forms.PasswordInput(render_value=False), strip=False)
    is_superuser = forms.BooleanField(
        required=False,
        label="Platform admin",
        help_text="Platform admins manage hosts, tenants and users and see every tenant.",
    )


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        required=False,
        help_text="What the token is for, e.g. 'terraform' or 'backup script'.",
    )


def _by_host(queryset) -> list:
    """Choices of pools or networks grouped by their host (optgroups)."""
    groups: dict[str, list] = {}
    for obj in queryset.select_related("host").order_by("host__name", "name"):
        groups.setdefault(obj.host.name, []).append((obj.pk, obj.name))
    return list(groups.items())


class TenantEditForm(forms.Form):
    """A tenant's description, quota limits (empty: unlimited) and where it may create VMs."""

    description = forms.CharField(max_length=200, required=False)
    max_vms = forms.IntegerField(required=False, min_value=0, label="VMs")
    max_vcpus = forms.IntegerField(required=False, min_value=0, label="vCPUs")
    max_memory_mib = forms.IntegerField(required=False, min_value=0, label="Memory (MiB)")
    max_disk_gib = forms.IntegerField(required=False, min_value=0, label="Disk (GiB)")
    allowed_hosts = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        label="Hosts",
        widget=forms.SelectMultiple(attrs={"size": 6}),
    )
    allowed_pools = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        label="Storage pools",
        widget=forms.SelectMultiple(attrs={"size": 8}),
    )
    allowed_networks = forms.ModelMultipleChoiceField(
        queryset=None,
        required=False,
        label="Networks",
        widget=forms.SelectMultiple(attrs={"size": 8}),
    )

    def __init__(self, *args, tenant, **kwargs):
        initial = {
            "description": tenant.description,
            "max_vms": tenant.max_vms,
            "max_vcpus": tenant.max_vcpus,
            "max_memory_mib": tenant.max_memory_mib,
            "max_disk_gib": tenant.max_disk_gib,
            "allowed_hosts": list(tenant.allowed_hosts.values_list("pk", flat=True)),
            "allowed_pools": list(tenant.allowed_pools.values_list("pk", flat=True)),
            "allowed_networks": list(tenant.allowed_networks.values_list("pk", flat=True)),
        }
        super().__init__(*args, initial=initial, **kwargs)
        # The placement models are those of the tenant's relations (the core imports no app).
        pools = tenant.allowed_pools.model.objects.filter(gone=False)
        networks = tenant.allowed_networks.model.objects.filter(gone=False)
        self.fields["allowed_hosts"].queryset = tenant.allowed_hosts.model.objects.order_by("name")
        self.fields["allowed_pools"].queryset = pools
        self.fields["allowed_networks"].queryset = networks
        self.fields["allowed_pools"].widget.choices = _by_host(pools)
        self.fields["allowed_networks"].widget.choices = _by_host(networks)
        for name in ("max_vms", "max_vcpus", "max_memory_mib", "max_disk_gib"):
            self.fields[name].widget.attrs.update(placeholder="unlimited", min=0)
