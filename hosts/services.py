"""Writes on hosts: add, re-sync, edit and forget. The UI and the API both call these."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from panel import taskrunner
from panel.models import Task
from panel.tenancy import is_platform_admin
from panel.validators import validate_name, validate_tags

from .connection import InvalidURI, drop_connection, parse_uri
from .models import Host

SYNC_KIND = "host.sync"


def _require_admin(user) -> None:
    if not is_platform_admin(user):
        raise PermissionDenied("Only platform admins manage hosts.")


def _clean_ssh_key(key: str) -> str:
    key = " ".join((key or "").split())
    if not key:
        return ""
    fields = key.split(" ")
    if len(fields) < 2 or fields[0] not in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"):
        raise ValidationError(
            {"ssh_host_key": "Give the key as 'ssh-ed25519 AAAA…' (type and base64)."}
        )
    return f"{fields[0]} {fields[1]}"


def host_create(
    *, user, name: str, uri: str, description: str = "", tags: list | None = None,
    ssh_host_key: str = "",
) -> tuple[Host, Task]:  # fmt: skip
    """Add a host and queue its first sync (which pins its SSH key if none was given)."""
    _require_admin(user)
    errors = {}
    try:
        validate_name(name)
    except ValidationError as exc:
        errors["name"] = exc.messages
    try:
        parsed = parse_uri(uri)
    except InvalidURI as exc:
        errors["uri"] = [str(exc)]
        parsed = None
    try:
        validate_tags(tags or [])
    except ValidationError as exc:
        errors["tags"] = exc.messages
    if "name" not in errors and Host.objects.filter(name=name).exists():
        errors["name"] = ["A host with this name exists already."]
    if parsed and Host.objects.filter(uri=parsed.raw).exists():
        errors["uri"] = ["This host is added already."]
    key = ""
    try:
        key = _clean_ssh_key(ssh_host_key)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        host = Host.objects.create(
            name=name,
            uri=parsed.raw,
            description=description,
            tags=tags or [],
            simulated=parsed.simulated,
            ssh_address=parsed.address,
            ssh_port=parsed.port,
            ssh_user=parsed.user,
            ssh_host_key=key,
        )
        from panel.tasks import consume_host_queue

        # Workers subscribe to the new host's queue before its first task is published.
        transaction.on_commit(lambda: consume_host_queue(host.pk))
        task = taskrunner.create_task(
            kind=SYNC_KIND, user=user, host=host, target=f"host {host.name}", lock=[host]
        )
    return host, task


def host_sync(*, user, host: Host) -> Task:
    """Queue a re-sync; raises LockConflict while another task holds the host."""
    _require_admin(user)
    with transaction.atomic():
        return taskrunner.create_task(
            kind=SYNC_KIND, user=user, host=host, target=f"host {host.name}", lock=[host]
        )


def host_update(
    *, user, host: Host, description: str | None = None, tags: list | None = None
) -> Host:
    _require_admin(user)
    if description is not None:
        host.description = description
    if tags is not None:
        host.tags = tags
    host.full_clean()
    host.save(update_fields=["description", "tags", "updated"])
    return host


def host_delete(*, user, host: Host) -> None:
    """Forget the host and its inventory in Paddock. Never touches the host itself."""
    _require_admin(user)
    from panel.locks import LockConflict

    if host.lock_id and Task.objects.filter(pk=host.lock_id).unfinished().exists():
        raise LockConflict(host, host.lock)
    drop_connection(host)
    host.delete()


def inventory_update(*, user, obj, description: str | None = None, tags: list | None = None):
    """Edit Paddock's own fields (description, tags) of a pool, volume or network."""
    _require_admin(user)
    if description is not None:
        obj.description = description
    if tags is not None:
        obj.tags = tags
    obj.full_clean(validate_unique=False, validate_constraints=False)
    obj.save(update_fields=["description", "tags"])
    return obj
