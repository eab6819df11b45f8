"""Task kinds carried out on hosts (registered with the task engine)."""

from __future__ import annotations

from panel.models import Task
from panel.taskrunner import TaskContext, task_kind

from .choices import HostStatus
from .connection import HostConnectError, parse_uri, scan_host_key
from .models import Host
from .sync import mark_unreachable, sync_host


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
