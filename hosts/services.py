"""Writes on hosts: add, re-sync, edit and forget. The UI and the API both call these."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from panel import taskrunner
from panel.choices import TaskState
from panel.locks import LockConflict
from panel.models import Task
from panel.tasks import consume_host_queue
from panel.tenancy import is_platform_admin
from panel.units import GIB, volume_bytes
from panel.validators import validate_name, validate_tags

from . import storage
from .choices import HostStatus
from .driver.connection import (
    InvalidURI,
    close_connection,
    drop_connection,
    get_connection,
    open_connection,
    parse_uri,
    scan_host_key,
)
from .driver.errors import DriverError, HostConnectError, libvirt_error_message
from .models import Host, StoragePool, Volume
from .storage import backend_for
from .storage.backends import space_problem
from .sync import sync_pools
from .volxml import VOLUME_NAME_RE

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


def connection_problem(host: Host) -> str | None:
    """Why Paddock cannot open a libvirt connection to ``host`` (an unsaved row will do), in
    libvirt's words; None when it opens. A qemu+ssh host without a key gets the key it offers
    now (``host.ssh_host_key`` is set to it: the key the connection was checked with)."""
    parsed = parse_uri(host.uri)
    try:
        if parsed.kind == "ssh" and not host.ssh_host_key:
            host.ssh_host_key = scan_host_key(parsed.address, parsed.port)
        conn = open_connection(host)
    except (HostConnectError, DriverError) as exc:
        return libvirt_error_message(exc) or str(exc) or exc.__class__.__name__
    close_connection(conn)
    return None


OFFLINE_HINT = "Add it anyway, offline, and sync it once it answers."


def host_create(
    *, user, name: str, uri: str, description: str = "", tags: list | None = None,
    ssh_host_key: str = "", offline: bool = False,
) -> tuple[Host, Task]:  # fmt: skip
    """Add a host and queue its first sync (which pins its SSH key if none was given).

    The connection is tried first: a host that does not answer is refused with libvirt's
    error on ``uri``, unless ``offline`` is asked for; then it is added offline with that
    error, and its first sync is queued all the same (it tries again, and pins the SSH key
    when the host answers; its Sync button, or ``POST /api/hosts/{id}/sync/``, later on).
    """
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
    same = (
        {"uri": parsed.raw}
        if parsed and parsed.kind == "test"
        else {"uri__iexact": parsed.raw if parsed else ""}
    )
    if parsed and Host.objects.filter(**same).exists():
        errors["uri"] = ["This host is added already."]
    key = ""
    try:
        key = _clean_ssh_key(ssh_host_key)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    host = Host(
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
    problem = connection_problem(host)
    if problem and not offline:
        raise ValidationError(
            {"uri": [f"Paddock could not connect to {parsed.raw}: {problem}", OFFLINE_HINT]}
        )
    if problem:
        host.status = HostStatus.OFFLINE
        host.last_error = problem
    with transaction.atomic():
        host.save()
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


# --- volumes ----------------------------------------------------------------------------------


def volume_publish(*, user, volume: Volume, published: bool, tenant=None) -> Volume:
    """Offer a volume as an image (read-only: CD-ROM, copy or backing file), or stop offering it.

    Published with no tenant, every tenant may use it; with a tenant, that tenant only. An image
    that a VM uses as a disk cannot be published: its owner writes to it.
    """
    _require_admin(user)
    if published and volume.disks.filter(vm__gone=False, device="disk").exists():
        raise ValidationError(
            {"published": f"Volume {volume.name} is a disk of a VM; detach it before publishing."}
        )
    volume.published = bool(published)
    fields = ["published"]
    if published or tenant is not None:
        volume.tenant = tenant
        fields.append("tenant")
    volume.save(update_fields=fields)
    return volume


def volume_create(*, user, pool: StoragePool, name: str, size_gib, format: str = "qcow2") -> Task:
    """Create a volume in a pool (a task: the host does the work)."""
    _require_admin(user)
    if pool.gone or pool.state != "active":
        raise ValidationError({"pool": f"Pool {pool.name} is not active."})
    if not VOLUME_NAME_RE.fullmatch(name or ""):
        raise ValidationError({"name": "Use letters, digits, '.', '_' or '-' (up to 127)."})
    if pool.volumes.filter(name=name, gone=False).exists():
        raise ValidationError({"name": f"Pool {pool.name} has a volume named {name}."})
    if not backend_for(pool).names_format:
        format = ""  # LVM: a raw logical volume, no format in libvirt's XML
    elif format not in ("raw", "qcow2"):
        raise ValidationError({"format": "raw or qcow2."})
    size = volume_bytes(size_gib)
    if backend_for(pool).grows_on_demand(format):
        problem = space_problem(pool, thin_bytes=size)
    else:
        problem = space_problem(pool, full_bytes=size)
    if problem:
        raise ValidationError({"size_gib": problem})
    with transaction.atomic():
        return taskrunner.create_task(
            kind="volume.create",
            user=user,
            host=pool.host,
            target=f"volume {name} in {pool.name}",
            params={"pool": pool.name, "name": name, "size_bytes": size, "format": format},
        )


def _attached(volume: Volume) -> str | None:
    disk = volume.disks.filter(vm__gone=False).select_related("vm").first()
    return disk.vm.name if disk else None


def volume_delete(*, user, volume: Volume) -> Task:
    _require_admin(user)
    vm_name = _attached(volume)
    if vm_name:
        raise ValidationError({"volume": f"Volume {volume.name} is a disk of VM {vm_name}."})
    children = Volume.objects.filter(
        pool__host=volume.pool.host_id, backing_path=volume.path, gone=False
    )
    if volume.path and children.exists():
        raise ValidationError(
            {"volume": f"{volume.name} is the base image of {children.first().name}."}
        )
    with transaction.atomic():
        return taskrunner.create_task(
            kind="volume.delete",
            user=user,
            host=volume.pool.host,
            target=f"volume {volume.name}",
            params={"path": volume.path},
            lock=[volume],
        )


def volume_grow(*, user, volume: Volume, size_gib) -> Task:
    _require_admin(user)
    size = volume_bytes(size_gib)
    if size < volume.capacity:
        raise ValidationError(
            {"size_gib": f"Shrinking is refused: {volume.name} is {volume.capacity / GIB:g} GiB."}
        )
    if size == volume.capacity:
        raise ValidationError(
            {"size_gib": f"{volume.name} is {volume.capacity / GIB:g} GiB already."}
        )
    vm_name = _attached(volume)
    if vm_name:
        raise ValidationError(
            {"volume": f"Grow it from VM {vm_name}'s hardware: it is a disk there."}
        )
    with transaction.atomic():
        return taskrunner.create_task(
            kind="volume.grow",
            user=user,
            host=volume.pool.host,
            target=f"volume {volume.name}",
            params={"path": volume.path, "size_bytes": size},
            lock=[volume],
        )


def volume_upload(*, user, pool: StoragePool, name: str, size: int, chunks, format: str = "raw"):
    """Stream an ISO or image into a pool, size-checked, while the request lasts.

    The bytes cannot travel through a task queue, so this runs in the request; it is still
    recorded as a Task (with its log) like every other change.
    """
    _require_admin(user)
    if not VOLUME_NAME_RE.fullmatch(name or ""):
        raise ValidationError({"name": "Use letters, digits, '.', '_' or '-' (up to 127)."})
    if format not in ("raw", "qcow2", "iso"):
        raise ValidationError({"format": "raw, qcow2 or iso."})
    if size <= 0:
        raise ValidationError({"size": "Send the file with its Content-Length."})
    if size > pool.available:
        raise ValidationError(
            {"size": f"{size / GIB:.2f} GiB does not fit: pool {pool.name} has "
             f"{pool.available / GIB:.2f} GiB free."}
        )  # fmt: skip
    if pool.volumes.filter(name=name, gone=False).exists():
        raise ValidationError({"name": f"Pool {pool.name} has a volume named {name}."})
    task = Task.objects.create(
        kind="volume.upload",
        user=user,
        host=pool.host,
        target=f"volume {name} in {pool.name}",
        params={"pool": pool.name, "name": name, "size": size, "format": format},
    )
    owner = taskrunner.worker_identity()
    taskrunner.claim(task.pk, owner)
    ctx = taskrunner.TaskContext(task, owner)
    ctx.log(f"Receiving {size} bytes into {pool.name}/{name}")
    try:
        vol = storage.upload_volume(
            get_connection(pool.host), pool.name, name, chunks, size,
            "raw" if format == "iso" else format,
        )  # fmt: skip
    except storage.StorageError as exc:
        taskrunner.finish(task, owner, TaskState.FAILED, error=str(exc))
        raise ValidationError({"file": str(exc)}) from None
    except Exception as exc:
        taskrunner.finish(task, owner, TaskState.FAILED, error=str(exc))
        raise
    with transaction.atomic():
        sync_pools(pool.host, get_connection(pool.host))
    ctx.log(f"Stored {vol['path']}")
    taskrunner.finish(task, owner, TaskState.SUCCEEDED, result={"path": vol["path"]})
    task.finished = timezone.now()
    return Volume.objects.get(pool=pool, name=name), task


# --- task titles ------------------------------------------------------------------------------
# What each host and volume task does, verb and object (``panel.registry.task_titles``,
# registered in ``HostsConfig.ready()``). Volume targets read "volume NAME in POOL".


def _volume_title(verb: str, preposition: str = "in"):
    def title(task: Task) -> str:
        name, _sep, pool = task.object_name.partition(" in ")
        return f"{verb} {name} {preposition} {pool}" if pool else f"{verb} {name}"

    return title


TASK_TITLES = {
    SYNC_KIND: lambda t: f"Sync host {t.object_name}",
    "volume.create": _volume_title("Create volume"),
    "volume.delete": _volume_title("Delete volume"),
    "volume.grow": _volume_title("Grow volume"),
    "volume.upload": _volume_title("Upload", "to"),
}
