"""VM task kinds: what a worker does on the host for each VM operation.

Orchestration only: libvirt is reached through ``hosts.driver`` (``Guest``, the connection),
domain XML is built by ``vms.domxml``.

Every kind that creates something on the host records it in the task's params as soon as it
exists, so that a failure, or recovery after a dead worker, can remove exactly that and nothing
else. ``vm.create`` and ``vm.clone`` do it through their plan (``task.params["plan"]``, built by
``vms.services``; the step handlers and undos are registered below); disk attach still records
``created_volumes``, and tasks queued before plans ``created_volumes`` and ``defined_uuid``.
"""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from hosts import storage
from hosts.driver.connection import get_connection
from hosts.driver.guest import SHUTOFF, Guest, GuestError, volume_exists
from hosts.executor import executor_for
from hosts.models import Host
from hosts.sync import sync_pools
from panel import plans
from panel.failpoints import failpoint
from panel.models import Task
from panel.taskrunner import Recovery, TaskCancelled, TaskContext, task_kind
from panel.tenancy import Action
from panel.units import GIB

from . import domxml, hooks
from .choices import DiskDevice, Lifecycle, PowerAction, VMState
from .models import Disk, VirtualMachine
from .services import clone_plan, create_plan
from .sync import refresh_vm

logger = logging.getLogger(__name__)


def _remember(task: Task, **values) -> None:
    """Write progress facts into the task's params at once: recovery reads them."""
    task.params.update(values)
    Task.objects.filter(pk=task.pk).update(params=task.params)


def _remember_volume(task: Task, path: str) -> None:
    task.params.setdefault("created_volumes", []).append(path)
    Task.objects.filter(pk=task.pk).update(params=task.params)


def _vm(ctx: TaskContext) -> VirtualMachine:
    return VirtualMachine.objects.select_related("host", "tenant").get(pk=ctx.task.vm_id)


def _open(ctx: TaskContext) -> tuple[VirtualMachine, dict, object, Guest]:
    """The task's VM, its params, the host connection and the VM's guest."""
    vm = _vm(ctx)
    conn = get_connection(vm.host)
    return vm, ctx.task.params, conn, Guest.get(conn, str(vm.uuid))


def _refresh_host_storage(host: Host, conn) -> None:
    """Re-read the host's pools after an operation that changed them; best effort: the
    operation itself succeeded, and the watcher and the reconcile catch up if this fails."""
    try:
        with transaction.atomic():
            sync_pools(host, conn)
    except GuestError as exc:
        logger.warning("storage refresh of %s failed: %s", host.name, exc)


# --- create -----------------------------------------------------------------------------------


def _rollback_created(task: Task, conn, uuid: str | None) -> list[str]:
    """Remove the domain and volumes this task created. Returns what was removed."""
    removed = []
    if uuid:
        guest = Guest.lookup(conn, uuid)
        if guest is not None:
            guest.undefine()
            removed.append(f"domain {uuid}")
    for path in reversed(task.params.get("created_volumes", [])):
        try:
            if storage.delete_volume(conn, path):
                removed.append(path)
        except storage.StorageError as exc:
            logger.warning("rollback could not delete %s: %s", path, exc)
    return removed


def _forget_unborn(task: Task) -> None:
    """Drop the inventory row of a VM whose creation failed: it never existed on the host."""
    VirtualMachine.objects.filter(pk=task.vm_id, lifecycle=Lifecycle.CREATING).delete()


@dataclass
class _Apply:
    """What plan steps of VM tasks work with: the host connection, and in a running task its
    context (for log lines) and VM. Recovery has the connection only. Host steps get the
    executor of ``host`` (built on first use)."""

    conn: object
    ctx: TaskContext | None = None
    vm: VirtualMachine | None = None
    host: Host | None = None
    _executor: object = None

    def log(self, message: str, level: str = "info") -> None:
        if self.ctx is not None:
            self.ctx.log(message, level)

    @property
    def executor(self):
        if self._executor is None:
            self._executor = executor_for(self.host, log=self.ctx)
        return self._executor


def _save_plan(task: Task):
    """A plan's ``save``: write it into the task's params at once (recovery reads them)."""

    def save(plan: plans.Plan) -> None:
        _remember(task, plan=plan.to_dict())

    return save


@plans.register_step(plans.STORAGE, "create_volume")
def _step_create_volume(step: plans.Step, run: plans.PlanRun) -> dict:
    a, c = step.args, run.context
    c.log(f"Creating {a['size_bytes'] / GIB:g} GiB {a['format']} volume {a['name']} in {a['pool']}")
    made = _record_volume_first(run, a)
    vol = storage.create_volume(c.conn, a["pool"], a["name"], a["size_bytes"], a["format"])
    made["path"] = vol["path"]  # saved with the step
    return {"path": vol["path"]}


def _record_volume_first(run: plans.PlanRun, a: dict) -> dict:
    """Record the volume a step is about to make, by pool and name, before the call: a worker
    killed inside it leaves libvirtd to finish the volume, and recovery must still find it.
    A volume of that name made by someone else is not recorded (the create refuses it)."""
    if storage.volume_exists(run.context.conn, a["pool"], a["name"]):
        return {}
    return run.record("volume", pool=a["pool"], name=a["name"])


@plans.register_step(plans.STORAGE, "clone_volume")
def _step_clone_volume(step: plans.Step, run: plans.PlanRun) -> dict:
    a, c = step.args, run.context
    if a.get("target"):  # a disk of a VM being cloned
        c.log(f"Copying {a['target']} ({a['mode']}) to {a['name']}")
    else:
        c.log(f"Cloning {a['source_path']} ({a['mode']}) as {a['name']} in {a['pool']}")
    made = _record_volume_first(run, a)
    vol = storage.clone_volume(c.conn, a["pool"], a["source_path"], a["name"], a["mode"])
    made["path"] = vol["path"]  # saved with the step
    return {"path": vol["path"]}


@plans.register_step(plans.DOMAIN, "define")
def _step_define(step: plans.Step, run: plans.PlanRun) -> dict:
    """Define the domain from a ``DomainBuild`` whose disks are the volumes earlier steps made
    (``disks``: each names the step id of its volume)."""
    a, c = step.args, run.context
    spec = domxml.domain_build_from_dict(a["build"])
    spec.disks = [
        domxml.DiskBuild(
            target=d["target"],
            path=run.outputs[d["volume"]]["path"],
            format=d["format"],
            bus=d["bus"],
            source_type=d["source_type"],
        )
        for d in a.get("disks", [])
    ]
    if c.ctx is not None:
        spec.task_id = c.ctx.task.pk
    c.log("Defining the domain")
    # Recorded before the call: a worker that dies inside it leaves a domain recovery removes.
    run.record("domain", uuid=a["uuid"])
    Guest.define(c.conn, domxml.build_domain(spec))
    return {"uuid": a["uuid"]}


@plans.register_step(plans.DOMAIN, "define_clone")
def _step_define_clone(step: plans.Step, run: plans.PlanRun) -> dict:
    """Define a copy of the source domain on the volumes earlier steps copied (``disks``: each
    guest target names the step id of its copy and the copy's format)."""
    a, c = step.args, run.context
    source = Guest.get(c.conn, a["source_uuid"])
    xml = domxml.clone_domain_xml(
        source.xml(inactive=True),
        name=a["name"],
        uuid=a["uuid"],
        disks={t: (run.outputs[d["volume"]]["path"], d["format"]) for t, d in a["disks"].items()},
        macs=a["macs"],
        task_id=c.ctx.task.pk if c.ctx is not None else None,
    )
    run.record("domain", uuid=a["uuid"])
    Guest.define(c.conn, xml)
    return {"uuid": a["uuid"]}


def _plan_guest(run: plans.PlanRun) -> Guest:
    return Guest.get(run.context.conn, run.plan.created_of("domain")[-1]["uuid"])


@plans.register_step(plans.DOMAIN, "set_autostart")
def _step_autostart(step: plans.Step, run: plans.PlanRun) -> None:
    _plan_guest(run).set_autostart(bool(step.args.get("on", True)))


@plans.register_step(plans.DOMAIN, "start")
def _step_start(step: plans.Step, run: plans.PlanRun) -> None:
    run.context.log("Starting")
    _plan_guest(run).start()


@plans.register_undo("domain")
def _undo_domain(obj: dict, context: _Apply) -> str | None:
    guest = Guest.lookup(context.conn, obj["uuid"])
    if guest is None:
        return None
    guest.undefine()
    return f"domain {obj['uuid']}"


@plans.register_undo("volume")
def _undo_volume(obj: dict, context: _Apply) -> str | None:
    try:
        path = obj.get("path")
        if path is None:  # recorded before a call that never reported back
            found = storage.lookup_volume(context.conn, obj["pool"], obj["name"], missing_ok=True)
            if found is None:
                return None
            path = found["path"]
        if storage.delete_volume(context.conn, path):
            return path
    except storage.StorageError as exc:
        logger.warning("rollback could not delete %s: %s", obj.get("path", obj.get("name")), exc)
    return None


def _task_plan(task: Task) -> plans.Plan | None:
    data = task.params.get("plan")
    return plans.Plan.from_dict(data) if data else None


def _rollback_task(task: Task, conn, vm: VirtualMachine | None) -> list[str]:
    """Undo what the task recorded: its plan's created objects, or (kinds not planned yet,
    tasks queued before plans) ``created_volumes`` and ``defined_uuid``. When the plan
    recorded no domain the VM's own UUID is checked too, as it always was."""
    plan = _task_plan(task)
    if plan is None:
        uuid = task.params.get("defined_uuid") or (str(vm.uuid) if vm else None)
        return _rollback_created(task, conn, uuid)
    if not plan.created_of("domain") and vm is not None:
        plan.created.append({"kind": "domain", "uuid": str(vm.uuid)})
    return plans.rollback(
        plan, _Apply(conn=conn, host=Host.objects.filter(pk=task.host_id).first())
    )


def _recover_create(task: Task) -> str:
    conn = get_connection(Host.objects.get(pk=task.host_id))
    vm = VirtualMachine.objects.filter(pk=task.vm_id).first()
    removed = _rollback_task(task, conn, vm)
    _forget_unborn(task)
    return (
        "Rolled back: removed "
        + (", ".join(removed) if removed else "nothing (nothing was made)")
        + "."
    )


@task_kind(
    "vm.create",
    recover=_recover_create,
    stoppable=True,
    cancelled=_forget_unborn,
    permission=Action.VM_CREATE,
)
def run_vm_create(ctx: TaskContext) -> dict:
    task = ctx.task
    vm = _vm(ctx)
    host = vm.host
    conn = get_connection(host)
    plan = _task_plan(task) or create_plan(vm.name, str(vm.uuid), task.params)
    volume_steps = sum(1 for s in plan.steps if s.kind == plans.STORAGE)

    def before(step: plans.Step, index: int) -> None:
        if step.kind == plans.DOMAIN and step.action == "define":
            failpoint("vm.create.volumes_made")

    def after(step: plans.Step, index: int) -> None:
        if step.kind == plans.STORAGE:
            ctx.progress(10 + 50 * (index + 1) // max(1, volume_steps))
        elif step.action == "define":
            ctx.progress(75)
            failpoint("vm.create.defined")

    try:
        if Guest.lookup_by_name(conn, vm.name) is not None:
            raise RuntimeError(f"A domain named {vm.name} exists on {host.name} already.")
        plans.apply(
            plan,
            _Apply(conn=conn, ctx=ctx, vm=vm, host=host),
            _save_plan(task),
            before=before,
            after=after,
            check=ctx.check_cancel,
        )
        ctx.progress(90)
    except Exception:
        ctx.log("Rolling back what this task created", level="warning")
        plans.rollback(plan, _Apply(conn=conn, ctx=ctx, vm=vm, host=host))
        _forget_unborn(task)
        raise
    # The domain exists: whatever happens while re-reading it, the VM is no longer "creating".
    VirtualMachine.objects.filter(pk=vm.pk).update(lifecycle=Lifecycle.READY)
    _refresh_host_storage(host, conn)
    refresh_vm(vm, conn)
    created = {obj["path"] for obj in plan.created_of("volume")}
    vm.disks.filter(source__in=created).update(owned=True)
    if task.params.get("tuning"):  # defined tuned: the plan is the VM's applied tuning
        hooks.tuned(vm, task, True, {"restart": []})
    ctx.log(f"Created {vm.name} ({vm.state})")
    return {"vm": vm.pk, "state": vm.state}


# --- clone ------------------------------------------------------------------------------------


@task_kind(
    "vm.clone",
    recover=_recover_create,
    stoppable=True,
    cancelled=_forget_unborn,
    permission=Action.VM_CREATE,
)
def run_vm_clone(ctx: TaskContext) -> dict:
    task = ctx.task
    vm = _vm(ctx)
    conn = get_connection(vm.host)
    plan = _task_plan(task) or clone_plan(vm.name, str(vm.uuid), task.params)
    volume_steps = sum(1 for s in plan.steps if s.kind == plans.STORAGE)

    def after(step: plans.Step, index: int) -> None:
        if step.kind == plans.STORAGE:
            ctx.progress(10 + 70 * (index + 1) // max(1, volume_steps))

    try:
        if Guest.get(conn, task.params["source_uuid"]).is_active:
            raise RuntimeError("The source VM was started meanwhile; cloning stopped.")
        plans.apply(
            plan,
            _Apply(conn=conn, ctx=ctx, vm=vm),
            _save_plan(task),
            after=after,
            check=ctx.check_cancel,
        )
    except Exception:
        ctx.log("Rolling back what this task created", level="warning")
        plans.rollback(plan, _Apply(conn=conn, ctx=ctx, vm=vm))
        _forget_unborn(task)
        raise
    VirtualMachine.objects.filter(pk=vm.pk).update(lifecycle=Lifecycle.READY)
    _refresh_host_storage(vm.host, conn)
    refresh_vm(vm, conn)
    created = {obj["path"] for obj in plan.created_of("volume")}
    vm.disks.filter(source__in=created).update(owned=True)
    ctx.log(f"Cloned into {vm.name}")
    return {"vm": vm.pk}


# --- delete -----------------------------------------------------------------------------------


def _recover_delete(task: Task) -> Recovery:
    """Finish the delete a dead worker started (deleting is idempotent): the domain, the
    volumes that were to go with it, the row."""
    host = Host.objects.get(pk=task.host_id)
    conn = get_connection(host)
    vm = VirtualMachine.objects.filter(pk=task.vm_id).first()
    volumes = task.params.get("volumes")
    if volumes is None:  # killed before it listed them
        volumes = _volumes_to_delete(vm, task) if vm is not None else []
    guest = Guest.lookup(conn, task.params["uuid"])
    if guest is not None:
        guest.undefine()
    removed, kept = [], []
    for path in volumes:
        try:
            if storage.delete_volume(conn, path):
                removed.append(path)
        except storage.StorageError as exc:
            logger.warning("recovery kept %s: %s", path, exc)
            kept.append(path)
    _refresh_host_storage(host, conn)
    VirtualMachine.objects.filter(pk=task.vm_id).delete()
    note = (
        "Recovery finished the deletion: "
        + ("undefined the domain" if guest is not None else "the domain was already undefined")
        + (f"; deleted {', '.join(removed)}" if removed else "")
        + (f"; kept {', '.join(kept)}" if kept else "")
        + "."
    )
    return Recovery(
        note=note, finished=True, result={"deleted_volumes": removed, "kept_volumes": kept}
    )


def _volumes_to_delete(vm: VirtualMachine, task: Task) -> list[str]:
    if not task.params.get("delete_volumes"):
        return []
    return [
        d.source
        for d in vm.disks.all()
        if d.device == DiskDevice.DISK and d.source and _deletable(vm, d)
    ]


def _delete_cancelled(task: Task) -> None:
    """A delete cancelled before it ran: the VM stays as it was."""
    VirtualMachine.objects.filter(pk=task.vm_id, lifecycle=Lifecycle.DELETING).update(
        lifecycle=Lifecycle.READY
    )


@task_kind(
    "vm.delete",
    recover=_recover_delete,
    cancelled=_delete_cancelled,
    permission=Action.VM_DELETE,
)
def run_vm_delete(ctx: TaskContext) -> dict:
    vm = _vm(ctx)
    conn = get_connection(vm.host)
    try:
        guest = Guest.lookup(conn, str(vm.uuid))
        volumes = _volumes_to_delete(vm, ctx.task)
        _remember(ctx.task, volumes=volumes)
        failpoint("vm.delete.listed")
        if guest is not None:
            ctx.log("Stopping and undefining the domain")
            guest.undefine()
        ctx.progress(50)
        failpoint("vm.delete.undefined")
        kept = []
        for path in volumes:
            try:
                storage.delete_volume(conn, path)
                ctx.log(f"Deleted volume {path}")
            except storage.StorageError as exc:
                kept.append(path)
                ctx.log(f"Kept {path}: {exc}", level="warning")
    except Exception:
        VirtualMachine.objects.filter(pk=vm.pk).update(lifecycle=Lifecycle.READY)
        raise
    _refresh_host_storage(vm.host, conn)
    VirtualMachine.objects.filter(pk=vm.pk).delete()
    return {"deleted_volumes": [v for v in volumes if v not in kept], "kept_volumes": kept}


def _deletable(vm: VirtualMachine, disk) -> bool:
    """A volume goes with the VM unless another VM uses it."""
    return (
        not Disk.objects.filter(source=disk.source, vm__host=vm.host, vm__gone=False)
        .exclude(vm=vm)
        .exists()
    )


# --- power and edit ---------------------------------------------------------------------------


def _resync_after_failure(vm: VirtualMachine, conn) -> None:
    try:
        refresh_vm(vm, conn)
    except GuestError:
        pass


#: how often a shutdown's wait looks at the guest and at the task's cancel request
SHUTDOWN_POLL_SECONDS = 0.5


def _power_stoppable(task: Task) -> str | None:
    """Only a shutdown waits (for the guest): the other actions are one quick call."""
    if task.params.get("action") == PowerAction.SHUTDOWN:
        return None
    return (
        f"{task.title} is one call to the host and cannot be stopped halfway; it ends in seconds."
    )


def _power_cancelled(task: Task) -> None:
    """A power action cancelled before it ran: the VM is wanted as it is."""
    VirtualMachine.objects.filter(pk=task.vm_id).update(desired_state=F("state"))


def _wait_for_shutoff(ctx: TaskContext, guest: Guest, timeout: float) -> bool:
    """Wait up to ``timeout`` for the guest to power off, checking between short sleeps
    whether the task was cancelled (a Stop preempting it, a Cancel); False on timeout. The
    deadline is written into the task for the page's countdown."""
    deadline = time.monotonic() + timeout
    until = timezone.now() + timedelta(seconds=timeout)
    _remember(ctx.task, wait_until=until.isoformat())
    ctx.progress(10)  # the pages hear of the deadline
    while time.monotonic() < deadline:
        if guest.state == SHUTOFF:
            return True
        ctx.check_cancel()
        time.sleep(min(SHUTDOWN_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
    return guest.state == SHUTOFF


@task_kind(
    "vm.power",
    stoppable=_power_stoppable,
    cancelled=_power_cancelled,
    permission=Action.VM_POWER,
)
def run_vm_power(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    action = p["action"]
    try:
        ctx.log(f"{action.capitalize()} {vm.name}")
        if action == PowerAction.START:
            guest.start()
        elif action == PowerAction.STOP:
            guest.destroy()
        elif action == PowerAction.REBOOT:
            guest.reboot()
        elif action == PowerAction.RESET:
            guest.reset()
        elif action == PowerAction.PAUSE:
            guest.pause()
        elif action == PowerAction.RESUME:
            guest.resume()
        elif action == PowerAction.SHUTDOWN:
            guest.shutdown()
            timeout = p.get("timeout", 120)
            ctx.log(f"Waiting up to {timeout} s for the guest to power off")
            if not _wait_for_shutoff(ctx, guest, timeout):
                if not p.get("force"):
                    raise RuntimeError(
                        f"The guest did not shut down within {timeout} s "
                        "(no ACPI support, or it ignored the request)."
                    )
                ctx.log(f"Still running after {timeout} s: forcing it off", level="warning")
                guest.destroy()
    except TaskCancelled:
        _resync_after_failure(vm, conn)
        # Wanted as it is again, unless the Stop that preempted this task holds the VM now.
        VirtualMachine.objects.filter(
            Q(lock__isnull=True) | Q(lock_id=ctx.task.pk), pk=vm.pk
        ).update(desired_state=F("state"))
        raise
    except Exception:
        _resync_after_failure(vm, conn)
        raise
    refresh_vm(vm, conn)
    return {"state": vm.state}


@task_kind("vm.edit")
def run_vm_edit(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    live = guest.is_active
    try:
        if "name" in p:
            ctx.log(f"Renaming to {p['name']}")
            guest.rename(p["name"])
        if "vcpus" in p:
            n = p["vcpus"]
            if live:
                ctx.log(f"Setting {n} vCPUs live")
                guest.set_vcpus(n, live=True, config=True)
                VirtualMachine.objects.filter(pk=vm.pk).update(vcpus_hotplugged=True)
            else:
                if n > guest.vcpus(config=True, maximum=True):
                    guest.set_vcpus(n, config=True, maximum=True)
                guest.set_vcpus(n, config=True)
                ctx.log(f"Set {n} vCPUs")
        if "memory_mib" in p:
            kib = p["memory_mib"] * 1024
            if live:
                ctx.log(f"Setting the balloon to {p['memory_mib']} MiB")
                guest.set_memory(kib, live=True, config=True)
            else:
                if kib > guest.max_memory_kib:
                    guest.set_memory(kib, config=True, maximum=True)
                guest.set_memory(kib, config=True)
                ctx.log(f"Set memory to {p['memory_mib']} MiB")
        if "autostart" in p:
            guest.set_autostart(bool(p["autostart"]))
            ctx.log(f"Autostart {'on' if p['autostart'] else 'off'}")
    except Exception:
        _resync_after_failure(vm, conn)
        raise
    refresh_vm(vm, conn)
    return {"vcpus": vm.vcpus, "memory_mib": vm.memory_mib}


# --- devices ----------------------------------------------------------------------------------

#: seconds a live detach waits for the guest to release the device
DETACH_WAIT = 20.0


def _disk_source(d: dict) -> str:
    """``<disk type>`` of a disk on a new volume: the pool backend's ``disk_source``, recorded
    by the service; tasks queued before it was recorded know only whether the pool is LVM."""
    return d.get("disk_source") or ("block" if d.get("logical") else "file")


def _recover_attach(task: Task) -> str:
    conn = get_connection(Host.objects.get(pk=task.host_id))
    vm = VirtualMachine.objects.filter(pk=task.vm_id).first()
    removed = []
    for path in task.params.get("created_volumes", []):
        guest = Guest.lookup(conn, str(vm.uuid)) if vm is not None else None
        in_use = guest is not None and any(
            d.source == path for d in domxml.parse_domain(guest.xml()).disks
        )
        if not in_use and storage.delete_volume(conn, path):
            removed.append(path)
    if vm is not None:
        refresh_vm(vm, conn)
    return "Removed the unattached volume " + ", ".join(removed) + "." if removed else ""


@task_kind("vm.disk_attach", recover=_recover_attach)
def run_disk_attach(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    created = None
    try:
        if p["kind"] == "existing":
            path, fmt = p["path"], p["format"]
        else:
            index = vm.disks.count()
            name = storage.volume_name_for(
                vm.name, index, p["format"] if not p.get("logical") else ""
            )
            while volume_exists(conn, p["pool"], name):
                index += 1
                name = storage.volume_name_for(
                    vm.name, index, p["format"] if not p.get("logical") else ""
                )
            ctx.log(f"Creating {p['size_bytes'] / GIB:g} GiB volume {name} in {p['pool']}")
            vol = storage.create_volume(conn, p["pool"], name, p["size_bytes"], p["format"])
            created = vol["path"]
            _remember_volume(ctx.task, created)
            path, fmt = created, p["format"] if not p.get("logical") else "raw"
        disk = domxml.DiskBuild(
            target=p["target"],
            path=path,
            format=fmt,
            bus=p["bus"],
            source_type=_disk_source(p),
        )
        live = guest.is_active
        ctx.log(f"Attaching {path} as {p['target']}{' (hot-plug)' if live else ''}")
        guest.attach_device(domxml.to_string(domxml.disk_element(disk)), live=live, config=True)
    except Exception:
        if created:
            storage.delete_volume(conn, created)
        _resync_after_failure(vm, conn)
        raise
    _refresh_host_storage(vm.host, conn)
    refresh_vm(vm, conn)
    if created:
        vm.disks.filter(source=created).update(owned=True)
    return {"target": p["target"], "path": path}


@task_kind("vm.disk_detach")
def run_disk_detach(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    xml = guest.device_xml("disk", p["target"])
    if xml is None:
        raise RuntimeError(f"The VM has no disk {p['target']}.")
    live = guest.is_active
    ctx.log(f"Detaching {p['target']}{' (the guest must release it)' if live else ''}")
    try:
        if not guest.detach_device(xml, live=live, config=True, wait=DETACH_WAIT):
            raise RuntimeError(
                f"The guest did not release {p['target']} within {DETACH_WAIT:g} s; it stays "
                "attached live "
                "and is removed from the configuration."
            )
    except Exception:
        _resync_after_failure(vm, conn)
        raise
    result = {"target": p["target"], "deleted_volume": False}
    if p.get("delete_volume") and p.get("path"):
        storage.delete_volume(conn, p["path"])
        ctx.log(f"Deleted volume {p['path']}")
        result["deleted_volume"] = True
        _refresh_host_storage(vm.host, conn)
    refresh_vm(vm, conn)
    return result


@task_kind("vm.disk_grow")
def run_disk_grow(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    if guest.is_active:
        ctx.log(f"Growing {p['target']} live to {p['size_bytes'] / GIB:g} GiB")
        guest.block_resize(p["target"], p["size_bytes"])
    else:
        ctx.log(f"Growing {p['path']} to {p['size_bytes'] / GIB:g} GiB")
        storage.grow_volume(conn, p["path"], p["size_bytes"])
    _refresh_host_storage(vm.host, conn)
    refresh_vm(vm, conn)
    return {"size_bytes": p["size_bytes"]}


@task_kind("vm.cdrom")
def run_cdrom(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    disk = domxml.DiskBuild(
        target=p["target"], path=p["path"], format="raw", bus=p["bus"], device=DiskDevice.CDROM
    )
    ctx.log(f"Inserting {p['path']}" if p["path"] else "Ejecting the CD-ROM")
    xml = domxml.to_string(domxml.disk_element(disk))
    guest.update_device(xml, live=guest.is_active, config=True)
    refresh_vm(vm, conn)
    return {"path": p["path"]}


@task_kind("vm.nic_attach")
def run_nic_attach(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    nic = domxml.NicBuild(
        mac=p["mac"],
        source=p["network"],
        model=p["model"],
        source_type=p.get("interface_type", "network"),
        source_attrs=p.get("interface_source"),
    )
    ctx.log(f"Attaching a {p['model']} NIC {p['mac']} on {p['network']}")
    try:
        xml = domxml.to_string(domxml.nic_element(nic))
        guest.attach_device(xml, live=guest.is_active, config=True)
    except Exception:
        _resync_after_failure(vm, conn)
        raise
    refresh_vm(vm, conn)
    return {"mac": p["mac"]}


@task_kind("vm.nic_detach")
def run_nic_detach(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    mac = p["mac"]
    xml = guest.device_xml("interface", mac)
    if xml is None:
        raise RuntimeError(f"The VM has no NIC {mac}.")
    live = guest.is_active
    ctx.log(f"Detaching NIC {mac}")
    try:
        if not guest.detach_device(xml, live=live, config=True, wait=DETACH_WAIT):
            raise RuntimeError(f"The guest did not release NIC {mac} within {DETACH_WAIT:g} s.")
    except Exception:
        _resync_after_failure(vm, conn)
        raise
    refresh_vm(vm, conn)
    return {"mac": mac}


# --- snapshots --------------------------------------------------------------------------------


@task_kind("vm.snapshot_create", permission=Action.VM_SNAPSHOT)
def run_snapshot_create(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    live = guest.is_active
    ctx.log(f"Taking snapshot {p['name']}{' with memory state' if live else ''}")
    guest.snapshot_create(p["name"], p.get("description", ""))
    refresh_vm(vm, conn)
    return {"name": p["name"], "memory": live}


@task_kind("vm.snapshot_revert", permission=Action.VM_SNAPSHOT)
def run_snapshot_revert(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    name = p["name"]
    ctx.log(f"Reverting to {name}")
    guest.snapshot_revert(name)
    refresh_vm(vm, conn)
    VirtualMachine.objects.filter(pk=vm.pk).update(desired_state=vm.state)
    return {"name": name, "state": vm.state}


@task_kind("vm.snapshot_delete", permission=Action.VM_SNAPSHOT)
def run_snapshot_delete(ctx: TaskContext) -> dict:
    vm, p, conn, guest = _open(ctx)
    name = p["name"]
    ctx.log(f"Deleting snapshot {name}")
    guest.snapshot_delete(name)
    refresh_vm(vm, conn)
    return {"name": name}


def observed_state(conn, uuid: str) -> str:
    guest = Guest.lookup(conn, uuid)
    return guest.state if guest else VMState.UNKNOWN


__all__ = ["observed_state", "uuidlib"]


# --- tuning -----------------------------------------------------------------------------------
#
# ``vm.tune`` applies a plan ``tuning`` computed (``task.params["plan"]``): host actions first
# (``hosts.plan_steps``), then ``domain/tune`` (the tuned definition, the live changes) and
# ``domain/verify_tuning`` (libvirt's read-back compared with what was asked). A failure
# reverts the host actions newest first and redefines the previous definition.


def _live_call(guest: Guest, op: dict) -> str:
    """Apply one live change to the running guest; a line for the log."""
    kind = op["op"]
    # The tuned definition is written already: these change the running guest only.
    live_only = {"live": True, "config": False}
    if kind == "vcpupin":
        guest.pin_vcpu(op["vcpu"], op["cpuset"], **live_only)
        return f"vCPU {op['vcpu']} pinned to {op['cpuset'] or 'every pCPU'}"
    if kind == "emulatorpin":
        guest.pin_emulator(op["cpuset"], **live_only)
        return f"emulator threads pinned to {op['cpuset'] or 'every pCPU'}"
    if kind == "iothreadpin":
        guest.pin_iothread(op["iothread"], op["cpuset"], **live_only)
        return f"I/O thread {op['iothread']} pinned to {op['cpuset']}"
    if kind == "schedinfo":
        guest.set_scheduler(op["params"], **live_only)
        return f"scheduler {op['params']}"
    if kind == "blkiotune":
        params = {k: int(op["params"].get(k, 0)) for k in BLKIOTUNE_KEYS}
        guest.set_block_iotune(op["target"], params, **live_only)
        return f"disk {op['target']} I/O limits {op['params'] or 'removed'}"
    if kind == "memstats_period":
        guest.set_memory_stats_period(op["seconds"], **live_only)
        return f"balloon stats every {op['seconds']} s"
    if kind == "memtune":
        p = op["params"]
        guest.set_memory_limits(
            hard_limit_kib=(p.get("hard_limit_mib") or 0) * 1024 or None,
            soft_limit_kib=(p.get("soft_limit_mib") or 0) * 1024 or None,
            **live_only,
        )
        return f"memory limits {p}"
    raise ValueError(f"Unknown live tuning change {kind!r}.")


BLKIOTUNE_KEYS = domxml.THROTTLE_KEYS
#: the scheduler values a tuning changes (``virsh schedinfo``)
SCHED_KEYS = ("cpu_shares", "vcpu_period", "vcpu_quota")


@plans.register_step(plans.DOMAIN, "tune")
def _step_tune(step: plans.Step, run: plans.PlanRun) -> dict:
    """Write the tuned definition (the plan's domain part applied to the definition as it is
    now), then apply to the running guest what it can take live."""
    a, c = step.args, run.context
    guest = Guest.get(c.conn, str(c.vm.uuid))
    before = guest.xml(inactive=True)
    after = domxml.tuned_xml(before, a.get("domain") or {})
    # What the running guest has now, so a rollback puts its scheduler values and throttles
    # back too (the previous definition alone would wait for a restart)
    live_before = {}
    if guest.is_active:
        state = guest.tuning_state(live=True)
        live_before = {
            "schedinfo": {k: v for k, v in state["schedinfo"].items() if k in SCHED_KEYS},
            "blkiotune": {t: {k: int(v.get(k, 0)) for k in BLKIOTUNE_KEYS}
                          for t, v in state["blkiotune"].items()},
        }  # fmt: skip
    # Recorded first: a worker that dies after the define leaves a definition recovery restores.
    run.record("domain_xml", uuid=str(c.vm.uuid), xml=before, live=live_before)
    c.log("Writing the tuned definition")
    Guest.define(c.conn, after)
    applied, restart, running_id = [], [], None
    if guest.is_active:
        live_xml = guest.xml()
        running_id = domxml.domain_id(live_xml)  # a restart gives the guest a new one
        live, restart = domxml.tuning_changes(live_xml, after, a.get("domain") or {})
        for op in live:
            line = _live_call(guest, op)
            c.log(f"Live: {line}")
            applied.append(op)
        for why in restart:
            c.log(f"Needs a restart: {why}", "warning")
    return {"live": applied, "restart": restart, "xml_after": after, "domain_id": running_id}


@plans.register_undo("domain_xml")
def _undo_domain_xml(obj: dict, context: _Apply) -> str | None:
    """Put back the definition the VM had before it was tuned. The running guest keeps what it
    took live until it restarts; the previous pins are put back live too where they differ."""
    guest = Guest.lookup(context.conn, obj["uuid"])
    if guest is None:
        return None
    Guest.define(context.conn, obj["xml"])
    if guest.is_active:
        previous = domxml.parse_domain(obj["xml"]).cputune or domxml.CpuTune()
        for vcpu in range(guest.vcpus(config=False)):
            guest.pin_vcpu(vcpu, previous.vcpupin.get(vcpu, ""), live=True, config=False)
        guest.pin_emulator(previous.emulatorpin, live=True, config=False)
        live = obj.get("live") or {}
        if live.get("schedinfo"):
            guest.set_scheduler(live["schedinfo"], live=True, config=False)
        for target, params in (live.get("blkiotune") or {}).items():
            guest.set_block_iotune(target, params, live=True, config=False)
    return f"the previous definition of {obj['uuid']}"


def verify_tuning(
    expected: dict, live_ops: list[dict], state: dict, restart: list[str]
) -> list[dict]:
    """Where libvirt's read-back (``Guest.tuning_state``) differs from the plan: the pins,
    scheduler parameters and block throttles always; NUMA and hugepages when no restart is
    pending for them."""
    out = []

    def differ(what, want, have):
        if want != have:
            out.append({"what": what, "expected": want, "actual": have})

    for vcpu, cpus in (expected.get("vcpupin") or {}).items():
        differ(f"vcpupin {vcpu}", cpus, state["vcpupin"].get(str(vcpu), ""))
    if expected.get("vcpupin") is not None:
        for vcpu in set(state["vcpupin"]) - set(expected["vcpupin"]):
            differ(f"vcpupin {vcpu}", "", state["vcpupin"][vcpu])
    if "emulatorpin" in expected:
        differ("emulatorpin", expected.get("emulatorpin") or "", state["emulatorpin"])
    for tid, cpus in (expected.get("iothreadpin") or {}).items():
        differ(f"iothreadpin {tid}", cpus, state["iothreadpin"].get(str(tid), ""))
    sched = state.get("schedinfo") or {}
    for key, param in (
        ("shares", "cpu_shares"),
        ("period", "vcpu_period"),
        ("quota", "vcpu_quota"),
    ):
        if expected.get(key):
            differ(f"schedinfo {param}", expected[key], sched.get(param))
    for target, disk in (expected.get("disks") or {}).items():
        have = (state.get("blkiotune") or {}).get(target)
        if have is None:
            continue
        for key in BLKIOTUNE_KEYS:
            differ(f"blkdeviotune {target} {key}", int((disk.get("iotune") or {}).get(key, 0)),
                   int(have.get(key, 0)))  # fmt: skip
    if not restart:
        numa = expected.get("numatune")
        have = state.get("numatune")
        differ("numatune", (numa or {}).get("mode"), (have or {}).get("mode"))
        if numa:
            differ("numatune nodeset", numa["nodeset"], (have or {}).get("nodeset"))
        pages = [p["size_kib"] for p in ((expected.get("memory_backing") or {}).get("pages") or [])]
        differ("hugepages", sorted(pages), state.get("hugepages") or [])
    return out


@plans.register_step(plans.DOMAIN, "verify_tuning")
def _step_verify(step: plans.Step, run: plans.PlanRun) -> dict:
    a, c = step.args, run.context
    guest = Guest.get(c.conn, str(c.vm.uuid))
    live = guest.is_active
    restart = list((run.outputs.get("tune") or {}).get("restart") or []) if live else []
    state = guest.tuning_state(live=live)
    wrong = verify_tuning(a.get("domain") or {}, a.get("live") or [], state, restart)
    if wrong:
        lines = "; ".join(
            f"{w['what']}: asked {w['expected']!r}, libvirt has {w['actual']!r}" for w in wrong
        )
        raise RuntimeError(f"The host did not take the tuning: {lines}.")
    c.log("Verified: libvirt reports the tuning the plan asked for" + (" (live)" if live else ""))
    return {"state": state}


def _recover_tune(task: Task) -> str:
    host = Host.objects.get(pk=task.host_id)
    conn = get_connection(host)
    vm = VirtualMachine.objects.filter(pk=task.vm_id).first()
    plan = _task_plan(task)
    if plan is None:
        return "Nothing was recorded to undo."
    removed = plans.rollback(plan, _Apply(conn=conn, vm=vm, host=host))
    if vm is not None:
        hooks.tuned(vm, task, False, "The worker stopped before the tuning was applied.")
    return "Rolled back: " + (", ".join(removed) if removed else "nothing was changed") + "."


@task_kind("vm.tune", recover=_recover_tune, stoppable=True)
def run_vm_tune(ctx: TaskContext) -> dict:
    task = ctx.task
    vm = _vm(ctx)
    host = vm.host
    conn = get_connection(host)
    plan = _task_plan(task)
    context = _Apply(conn=conn, ctx=ctx, vm=vm, host=host)
    total = max(1, len(plan.steps))

    def after(step: plans.Step, index: int) -> None:
        ctx.progress(10 + 85 * (index + 1) // total)

    try:
        plans.apply(plan, context, _save_plan(task), after=after, check=ctx.check_cancel)
    except Exception as exc:
        ctx.log("Putting back what this task changed", level="warning")
        removed = plans.rollback(
            plan,
            context,
            on_error=lambda obj, e: ctx.log(f"Could not undo {obj['kind']}: {e}", "error"),
        )
        if removed:
            ctx.log("Undone: " + ", ".join(removed))
        refresh_vm(vm, conn)
        hooks.tuned(vm, task, False, str(exc))
        raise
    refresh_vm(vm, conn)
    # what the guest took live, what waits for a restart, the definition written
    tuned = dict(plan.outputs.get("tune") or {})
    restart = list(tuned.get("restart") or [])
    hooks.tuned(vm, task, True, tuned)
    ctx.log(f"Tuned {vm.name}" + (f"; restart needed: {'; '.join(restart)}" if restart else ""))
    return {"vm": vm.pk, "restart": restart}
