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
    username = forms.CharField(max_length=150, label="User")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


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
