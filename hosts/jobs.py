"""Task kinds carried out on hosts (registered with the task engine)."""

from __future__ import annotations

from django.db import transaction

from panel.models import Task
from panel.taskrunner import TaskContext, task_kind
from panel.units import GIB

from . import storage
from .choices import HostStatus
from .driver.connection import HostConnectError, get_connection, parse_uri, scan_host_key
from .models import Host
from .sync import mark_unreachable, sync_host, sync_pools


def _recover_sync(task: Task) -> str:
    # A sync writes nothing to the host and is idempotent: nothing to roll back.
    return "Nothing on the host was changed; re-sync to refresh the inventory."


@task_kind("host.sync", recover=_recover_sync)
def run_host_sync(ctx: TaskContext) -> dict:
    host = Host.objects.get(pk=ctx.task.host_id)
    parsed = parse_uri(host.uri)
    if parsed.kind == "ssh" and not host.ssh_host_key:
        try:
            key = scan_host_key(parsed.address, parsed.port)
        except HostConnectError as exc:
            mark_unreachable(host, str(exc), HostStatus.ERROR)
            raise
        Host.objects.filter(pk=host.pk).update(ssh_host_key=key)
        host.ssh_host_key = key
        ctx.log(f"Pinned SSH host key of {parsed.address}: {key.split()[0]} {key.split()[1][:24]}…")
    ctx.log(f"Connecting to {host.uri}")
    summary = sync_host(host, log=ctx.log, progress=ctx.progress)
    return summary


# --- volumes ----------------------------------------------------------------------------------


def _refresh_storage(host: Host, conn) -> None:
    with transaction.atomic():
        sync_pools(host, conn)


def _recover_volume_create(task: Task) -> str:
    conn = get_connection(Host.objects.get(pk=task.host_id))
    path = task.params.get("created_path")
    if path and storage.delete_volume(conn, path):
        _refresh_storage(Host.objects.get(pk=task.host_id), conn)
        return f"Removed the half-made volume {path}."
    return ""


@task_kind("volume.create", recover=_recover_volume_create)
def run_volume_create(ctx: TaskContext) -> dict:
    host = Host.objects.get(pk=ctx.task.host_id)
    p = ctx.task.params
    conn = get_connection(host)
    ctx.log(f"Creating {p['size_bytes'] / GIB:g} GiB volume {p['name']} in {p['pool']}")
    vol = storage.create_volume(conn, p["pool"], p["name"], p["size_bytes"], p["format"])
    p["created_path"] = vol["path"]
    Task.objects.filter(pk=ctx.task.pk).update(params=p)
    _refresh_storage(host, conn)
    return {"path": vol["path"]}


@task_kind("volume.delete")
def run_volume_delete(ctx: TaskContext) -> dict:
    host = Host.objects.get(pk=ctx.task.host_id)
    conn = get_connection(host)
    path = ctx.task.params["path"]
    ctx.log(f"Deleting {path}")
    deleted = storage.delete_volume(conn, path)
    _refresh_storage(host, conn)
    return {"deleted": deleted}


@task_kind("volume.grow")
def run_volume_grow(ctx: TaskContext) -> dict:
    host = Host.objects.get(pk=ctx.task.host_id)
    conn = get_connection(host)
    p = ctx.task.params
    ctx.log(f"Growing {p['path']} to {p['size_bytes'] / GIB:g} GiB")
    storage.grow_volume(conn, p["path"], p["size_bytes"])
    _refresh_storage(host, conn)
    return {"size_bytes": p["size_bytes"]}
