"""Writes on tenancy: tenants, users, memberships and API tokens. UI and API call these."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from .choices import Role
from .models import ApiToken, Membership, Tenant
from .selectors import addable_users
from .tenancy import Action, can, is_platform_admin
from .validators import validate_name

User = get_user_model()


def tenant_create(*, user, name: str, description: str = "", **limits) -> Tenant:
    """A new tenant, with quota limits (None = unlimited) when given."""
    if not is_platform_admin(user):
        raise PermissionDenied("Only platform admins create tenants.")
    unknown = set(limits) - set(QUOTA_FIELDS)
    if unknown:
        raise ValidationError({f: "Not settable here." for f in sorted(unknown)})
    tenant = Tenant(name=name, description=description, **limits)
    tenant.full_clean()
    tenant.save()
    return tenant


QUOTA_FIELDS = ("max_vms", "max_vcpus", "max_memory_mib", "max_disk_gib")
PLACEMENT_FIELDS = ("allowed_hosts", "allowed_pools", "allowed_networks")


def tenant_update(*, user, tenant: Tenant, **changes) -> Tenant:
    """Edit a tenant: description, quota limits (None = unlimited) and where it may create."""
    if not is_platform_admin(user):
        raise PermissionDenied("Only platform admins edit tenants.")
    unknown = set(changes) - {"description", *QUOTA_FIELDS, *PLACEMENT_FIELDS}
    if unknown:
        raise ValidationError({f: "Not editable." for f in unknown})
    fields = []
    for key in ("description", *QUOTA_FIELDS):
        if key in changes:
            setattr(tenant, key, changes[key])
            fields.append(key)
    tenant.full_clean()
    with transaction.atomic():
        if fields:
            tenant.save(update_fields=fields)
        for key in PLACEMENT_FIELDS:
            if key in changes:
                getattr(tenant, key).set(changes[key])
    return tenant


def tenant_delete(*, user, tenant: Tenant) -> None:
    if not is_platform_admin(user):
        raise PermissionDenied("Only platform admins delete tenants.")
    if tenant.name == "default":
        raise ValidationError(
            {"name": "The default tenant holds imported VMs and cannot be deleted."}
        )
    if tenant.vms.exists():
        raise ValidationError({"name": "Move or delete this tenant's VMs first."})
    tenant.delete()


# One answer for a user who does not exist and one a tenant admin may not add: neither says
# whether the name is taken elsewhere.
UNKNOWN_USER = "No such user among your tenants' members."


def user_create(
    *,
    user,
    username: str,
    password: str,
    email: str = "",
    is_superuser: bool = False,
    tenant: Tenant | None = None,
    role: str = Role.MEMBER,
):
    """A new user; platform admins create anyone, a tenant's admin creates a user in that
    tenant (``tenant`` and ``role``), never a platform admin."""
    if not is_platform_admin(user):
        if tenant is None or not can(user, Action.MEMBERSHIP_MANAGE, tenant.pk):
            raise PermissionDenied(
                "Only platform admins create users; a tenant admin creates them in their tenant."
            )
        if is_superuser:
            raise PermissionDenied("Only platform admins create platform admins.")
    errors = {}
    try:
        validate_name(username)
    except ValidationError as exc:
        errors["username"] = exc.messages
    if User.objects.filter(username=username).exists():
        errors["username"] = ["A user with this name exists already."]
    if tenant is not None and role not in Role.values:
        errors["role"] = [f"Choose one of: {', '.join(Role.values)}."]
    candidate = User(username=username, email=email)
    try:
        validate_password(password, candidate)
    except ValidationError as exc:
        errors["password"] = exc.messages
    if errors:
        raise ValidationError(errors)
    candidate.is_superuser = candidate.is_staff = bool(is_superuser)
    candidate.set_password(password)
    with transaction.atomic():
        candidate.save()
        if tenant is not None:
            Membership.objects.create(user=candidate, tenant=tenant, role=role)
    return candidate


def membership_create(*, user, username: str, tenant: Tenant, role: str) -> Membership:
    """Add an existing user to ``tenant``. A tenant admin adds only users who already belong to
    one of the tenants they administer; anyone else is answered as if they did not exist."""
    if not can(user, Action.MEMBERSHIP_MANAGE, tenant.pk):
        raise PermissionDenied("Only the tenant's admins manage its memberships.")
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})
    member = addable_users(user).filter(username=username).first()
    if member is None:
        raise ValidationError({"user": UNKNOWN_USER})
    try:
        with transaction.atomic():
            return Membership.objects.create(user=member, tenant=tenant, role=role)
    except IntegrityError:
        raise ValidationError({"user": "This user is already a member of this tenant."}) from None


def membership_update(*, user, membership: Membership, role: str) -> Membership:
    if not can(user, Action.MEMBERSHIP_MANAGE, membership.tenant_id):
        raise PermissionDenied("Only the tenant's admins manage its memberships.")
    if role not in Role.values:
        raise ValidationError({"role": f"Choose one of: {', '.join(Role.values)}."})
    _keep_one_admin(membership, new_role=role, user=user)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


def membership_delete(*, user, membership: Membership) -> None:
    if not can(user, Action.MEMBERSHIP_MANAGE, membership.tenant_id):
        raise PermissionDenied("Only the tenant's admins manage its memberships.")
    _keep_one_admin(membership, new_role=None, user=user)
    membership.delete()


def _keep_one_admin(membership: Membership, new_role: str | None, user) -> None:
    """A tenant admin may not remove the tenant's last admin (a platform admin may)."""
    if membership.role != Role.ADMIN or new_role == Role.ADMIN:
        return
    others = Membership.objects.filter(tenant_id=membership.tenant_id, role=Role.ADMIN).exclude(
        pk=membership.pk
    )
    if not others.exists() and not is_platform_admin(user):
        raise ValidationError({"role": "A tenant keeps at least one admin."})


def token_issue(*, user, name: str = "") -> tuple[ApiToken, str]:
    if len(name) > 100:
        raise ValidationError({"name": "At most 100 characters."})
    return ApiToken.issue(user=user, name=name)


def token_revoke(*, user, token: ApiToken) -> None:
    if token.user_id != user.pk:
        raise PermissionDenied("Only the owner revokes a token.")
    token.delete()
