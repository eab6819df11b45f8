"""Writes on VMs. The UI and the API both call these; neither talks to libvirt."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError

from panel.models import Tenant
from panel.tenancy import Action, can, is_platform_admin
from panel.validators import validate_tags

from .models import VirtualMachine


def vm_update(
    *, user, vm: VirtualMachine, description: str | None = None, tags: list | None = None,
    tenant: Tenant | None = None,
) -> VirtualMachine:  # fmt: skip
    """Edit Paddock's own fields of a VM: description, tags and (platform admins) tenant."""
    if not can(user, Action.VM_CHANGE, vm.tenant_id):
        raise PermissionDenied("Your role may not edit this VM.")
    fields = []
    if description is not None:
        if len(description) > 200:
            raise ValidationError({"description": "At most 200 characters."})
        vm.description = description
        fields.append("description")
    if tags is not None:
        try:
            validate_tags(tags)
        except ValidationError as exc:
            raise ValidationError({"tags": exc.messages}) from None
        vm.tags = tags
        fields.append("tags")
    if tenant is not None and tenant.pk != vm.tenant_id:
        if not is_platform_admin(user):
            raise PermissionDenied("Only platform admins move VMs between tenants.")
        vm.tenant = tenant
        fields.append("tenant")
    if fields:
        vm.save(update_fields=[*fields, "updated"])
    return vm
