"""Pages of virtual machines: the list, the create wizard, a VM's tabs and its lifecycle actions.

Views are thin: they read the inventory, call the same ``vms.services`` functions as the API,
put a service's ValidationError back on the form, and turn a LockConflict into "busy with task
#N". Each action is a small form that works as a page of its own and, opened from a button with
``data-dialog``, inside the page's dialog.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from csp.decorators import csp_update
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET

from hosts import selectors as host_selectors
from hosts.choices import HostStatus, PoolState
from hosts.models import Host, StoragePool, Volume
from hosts.selectors import hosts_for, networks_for, pools_for
from hosts.storage import backend_for
from panel import selectors as panel_selectors
from panel.filtersets import TaskFilterSet
from panel.forms import apply_service_errors
from panel.generic import (
    busy_message,
    current_tab,
    is_htmx,
    paginate,
    queued_message,
    require_platform_admin,
    task_link,
)
from panel.locks import LockConflict
from panel.models import Task, Tenant
from panel.templatetags.paddock import TREE_LIMIT
from panel.tenancy import Action, can, is_platform_admin, restrict

from . import selectors, services
from .choices import (
    CloneMode,
    DiskBus,
    DiskDevice,
    DiskFormat,
    Lifecycle,
    NicModel,
    PowerAction,
    VMState,
)
from .filtersets import VirtualMachineFilterSet
from .forms import (
    CdromForm,
    CloneForm,
    ConfirmForm,
    CreateWizard,
    DeleteForm,
    DiskAddForm,
    DiskGrowForm,
    DiskRemoveForm,
    DiskRowForm,
    NicAddForm,
    NicRowForm,
    ShutdownForm,
    SnapshotForm,
    VmEditForm,
    VmResourcesForm,
)
from .models import Disk, VirtualMachine

VM_TABS = ("summary", "hardware", "snapshots", "tasks", "console")
GIB = 1024**3

# Power buttons of a VM's header: action, label, icon, whether it asks for confirmation first.
POWER_BUTTONS = (
    (PowerAction.START, "Start", "play", False),
    (PowerAction.SHUTDOWN, "Shutdown", "power", False),
    (PowerAction.REBOOT, "Reboot", "refresh", False),
    (PowerAction.STOP, "Stop", "stop", True),
    (PowerAction.RESET, "Reset", "zap", True),
    (PowerAction.PAUSE, "Pause", "pause", False),
    (PowerAction.RESUME, "Resume", "play", False),
)
POWER_WORDS = {action: label for action, label, _icon, _confirm in POWER_BUTTONS}
# Quota keys, their labels with the unit the numbers are in, and their names.
QUOTA_LABELS = (
    ("vms", "VMs", "VMs"),
    ("vcpus", "vCPUs", "vCPUs"),
    ("memory_mib", "Memory (MiB)", "Memory"),
    ("disk_gib", "Disk (GiB)", "Disk"),
)
# With "automatic" placement the wizard lists the storage and networks of every host Paddock
# may choose; past this many hosts it asks for a host first instead.
AUTO_HOST_LIMIT = 25


def vm_table_context(request: HttpRequest, fixed: dict | None = None) -> dict:
    """A filtered, paginated VM table; ``fixed`` pins filters of the page's own object.

    The filters are the API's FilterSet, so the page's query string works on /api/vms/ too.
    The number of queries does not grow with the number of VMs.
    """
    fixed = fixed or {}
    data = request.GET.copy()
    for key, value in fixed.items():
        data[key] = str(value)
    queryset = selectors.vms_for(request.user).prefetch_related(None)
    filterset = VirtualMachineFilterSet(data, queryset=queryset)
    admin = is_platform_admin(request.user)
    context = {
        "filterset": filterset,
        "page": paginate(request, filterset.qs),
        "vm_states": VMState.choices,
        "selected_states": request.GET.getlist("state"),
        "fixed": fixed,
        "show_host": "host" not in fixed,
        "show_tenant": "tenant" not in fixed,
    }
    if admin and "host" not in fixed:
        context["host_choices"] = list(
            host_selectors.hosts().order_by("name").values_list("pk", "name")
        )
    if "tenant" not in fixed:
        context["tenant_choices"] = list(
            panel_selectors.tenants_for(request.user).order_by("name").values_list("pk", "name")
        )
    return context


@login_required
def vm_list(request: HttpRequest) -> HttpResponse:
    context = vm_table_context(request)
    context["active_tab"] = "vms"
    return render(request, "vms/vm_list.html", context)


# --- helpers -------------------------------------------------------------------------------


def _reveal(user, vm) -> str:
    if is_platform_admin(user):
        return f"host-{vm.host_id} host-{vm.host_id}-vms"
    return f"tenant-{vm.tenant_id}"


def _vm_url(vm: VirtualMachine, tab: str = "summary") -> str:
    url = reverse("ui:vm", args=[vm.pk])
    return url if tab == "summary" else f"{url}?tab={tab}"


def _finish(request: HttpRequest, url: str) -> HttpResponse:
    """After a successful action: back to the page (a dialog's script follows HX-Redirect)."""
    if is_htmx(request):
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


def _require(user, action: str, vm: VirtualMachine, what: str) -> None:
    if not can(user, action, vm.tenant_id):
        raise PermissionDenied(f"Your role may not {what}.")


def _get_vm(request: HttpRequest, pk: int) -> VirtualMachine:
    return get_object_or_404(selectors.vms_for(request.user).select_related("lock"), pk=pk)


def _busy_task(vm: VirtualMachine) -> Task | None:
    return vm.lock if vm.lock_id and not vm.lock.is_final else None


def _blocked(vm: VirtualMachine, busy: Task | None) -> str:
    """Why no action can start on this VM right now ('' when they can)."""
    if busy is not None:
        return f"Busy with task #{busy.pk}"
    if vm.gone:
        return "Gone from its host"
    if vm.lifecycle != Lifecycle.READY:
        return f"{vm.get_lifecycle_display()}…"
    return ""


def _permissions(user, vm: VirtualMachine) -> dict:
    return {
        "can_edit": can(user, Action.VM_CHANGE, vm.tenant_id),
        "can_power": can(user, Action.VM_POWER, vm.tenant_id),
        "can_snapshot": can(user, Action.VM_SNAPSHOT, vm.tenant_id),
        "can_delete": can(user, Action.VM_DELETE, vm.tenant_id),
        "can_create": can(user, Action.VM_CREATE, vm.tenant_id),
        "can_console": can(user, Action.VM_CONSOLE, vm.tenant_id) and not vm.is_template,
    }


def _power_buttons(vm: VirtualMachine, blocked: str) -> list[dict]:
    """The header's power buttons: the sensible ones enabled, the others disabled, saying why."""
    buttons = []
    paused = vm.state in (VMState.PAUSED, VMState.PMSUSPENDED)
    for action, label, icon, confirm in POWER_BUTTONS:
        # Pause and Resume share a place: the one that makes sense now.
        if (action == PowerAction.PAUSE and paused) or (
            action == PowerAction.RESUME and not paused
        ):
            continue
        reason = blocked
        if not reason and vm.state not in services.POWER_FROM[action]:
            reason = f"Not possible while {vm.get_state_display().lower()}"
        buttons.append(
            {
                "action": action,
                "label": label,
                "icon": icon,
                "confirm": confirm,
                "enabled": not reason,
                "reason": reason,
            }
        )
    return buttons


# --- the VM page ---------------------------------------------------------------------------

# The one exception to the strict Content-Security-Policy: xterm.js (the serial console, on the
# VM page and the console window) writes its cell metrics and theme into <style> elements it
# creates, which style-src 'self' refuses. Only <style> elements, only on these two pages;
# style attributes stay refused (style-src-attr falls back to style-src 'self') and scripts
# are untouched.
XTERM_STYLES = csp_update({"style-src-elem": ["'self'", "'unsafe-inline'"]})


@login_required
@XTERM_STYLES
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    vm = _get_vm(request, pk)
    tab = current_tab(request, VM_TABS)
    busy = _busy_task(vm)
    blocked = _blocked(vm, busy)
    perms = _permissions(user, vm)
    if tab == "console" and not perms["can_console"]:
        tab = VM_TABS[0]
    context = {
        "vm": vm,
        "tab": tab,
        "busy": busy,
        "blocked": blocked,
        "tree_reveal": _reveal(user, vm),
        "power_buttons": _power_buttons(vm, blocked) if not vm.is_template else [],
        **perms,
    }
    if tab == "hardware":
        # Disks before CD-ROMs, as the guest numbers them.
        context["disks"] = vm.disks.select_related("volume").order_by("-device", "target")
        context["nics"] = vm.nics.select_related("network").order_by("id")
    elif tab == "snapshots":
        context["snapshot_rows"] = snapshot_rows(list(vm.snapshots.all()))
        context["snapshot_refusal"] = services.snapshot_refusal(vm)
    elif tab == "console":
        kind = request.GET.get("kind", "vnc")
        context["console_kind"] = kind if kind in ("vnc", "serial") else "vnc"
    elif tab == "tasks":
        tasks = panel_selectors.tasks_for(user).prefetch_related(None)
        filterset = TaskFilterSet({"vm": vm.pk}, queryset=tasks)
        context["page"] = paginate(request, filterset.qs)
    if vm.is_template:
        context["clone_count"] = vm.clones.filter(gone=False).count()
    return render(request, "vms/vm_detail.html", context)


@login_required
@require_GET
@XTERM_STYLES
def vm_console_popout(request: HttpRequest, pk: int) -> HttpResponse:
    """A VM's console alone in a window of its own (opened from the Console tab)."""
    vm = _get_vm(request, pk)
    if vm.is_template or not can(request.user, Action.VM_CONSOLE, vm.tenant_id):
        raise PermissionDenied("Your role may not open this VM's console.")
    kind = request.GET.get("kind", "vnc")
    return render(
        request,
        "vms/console_popout.html",
        {"vm": vm, "kind": kind if kind in ("vnc", "serial") else "vnc"},
    )


def snapshot_rows(snapshots: list) -> list[dict]:
    """Snapshots as tree rows (depth-first by parent), with a "now" row under the current one.

    A snapshot whose parent is unknown is a root, so a partial history still shows everything.
    """
    names = {snap.name for snap in snapshots}
    children: dict[str, list] = {}
    for snap in snapshots:
        parent = snap.parent_name if snap.parent_name in names else ""
        children.setdefault(parent, []).append(snap)
    rows: list[dict] = []
    current_seen = False

    def walk(parent: str, depth: int) -> None:
        nonlocal current_seen
        for snap in children.get(parent, []):
            rows.append({"snap": snap, "depth": depth})
            walk(snap.name, depth + 1)
            if snap.is_current:
                current_seen = True
                rows.append({"now": True, "depth": depth + 1})

    walk("", 0)
    if not current_seen:
        rows.append({"now": True, "depth": 0})
    return rows


@login_required
def vm_edit(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    vm = get_object_or_404(selectors.vms_for(user), pk=pk)
    if not can(user, Action.VM_CHANGE, vm.tenant_id):
        raise PermissionDenied("Your role may not edit this VM.")
    tenants = (
        panel_selectors.tenants_for(user).order_by("name") if is_platform_admin(user) else None
    )
    initial = {"description": vm.description, "tags": vm.tags, "tenant": vm.tenant_id}
    form = VmEditForm(request.POST or None, initial=initial, tenants=tenants)
    if request.method == "POST" and form.is_valid():
        try:
            services.vm_update(user=user, vm=vm, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"VM {vm.name} saved.")
            return redirect(vm)
    return render(
        request,
        "vms/vm_edit.html",
        {"vm": vm, "form": form, "tree_reveal": _reveal(user, vm)},
        status=400 if form.errors else 200,
    )


# --- actions: one small form each, as a page or in the dialog ------------------------------


def _action(
    request: HttpRequest,
    vm: VirtualMachine,
    form,
    perform: Callable[[dict], tuple[str | None, str]],
    *,
    title: str,
    submit: str,
    icon: str = "check",
    danger: bool = False,
    intro: str = "",
    tab: str = "summary",
    extra: dict | None = None,
    can_submit: bool = True,
) -> HttpResponse:
    """Show ``form``; on a valid POST call ``perform(cleaned_data)``, which returns where to go
    next and the message to show there. Service errors land on the form."""
    if request.method == "POST" and can_submit and form.is_valid():
        try:
            url, message = perform(form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        except LockConflict as exc:
            form.add_error(None, busy_message(exc))
        except services.CloneConflict as exc:
            form.add_error(None, str(exc))
        else:
            if message:
                messages.success(request, message)
            return _finish(request, url or _vm_url(vm, tab))
    context = {
        "vm": vm,
        "form": form,
        "title": title,
        "submit": submit,
        "icon": icon,
        "danger": danger,
        "intro": intro,
        "action_url": request.get_full_path(),
        "cancel_url": _vm_url(vm, tab),
        "can_submit": can_submit,
        "tree_reveal": _reveal(request.user, vm),
        **(extra or {}),
    }
    template = "vms/_action_dialog.html" if is_htmx(request) else "vms/action.html"
    return render(request, template, context, status=400 if form.errors else 200)


def _post_or_none(request: HttpRequest):
    return request.POST if request.method == "POST" else None


@login_required
def vm_power(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """A power action: header buttons POST here at once; Stop, Reset and the shutdown options
    show a confirmation (GET) first."""
    if action not in PowerAction.values:
        raise Http404("Unknown power action.")
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_POWER, vm, "power this VM")
    word = POWER_WORDS[action]
    if action == PowerAction.SHUTDOWN:
        form = ShutdownForm(_post_or_none(request))
        intro = (
            "Asks the guest to shut down (ACPI). A guest that ignores it keeps running unless "
            "you force it off after the timeout."
        )
    else:
        form = ConfirmForm(_post_or_none(request))
        intro = {
            PowerAction.STOP: "Stop pulls the plug: the guest does not shut down cleanly and "
            "unsaved data in it is lost.",
            PowerAction.RESET: "Reset presses the reset button: the guest restarts at once, "
            "without shutting down, and unsaved data in it is lost.",
        }.get(action, "")

    def perform(data):
        task = services.vm_power(
            user=request.user,
            vm=vm,
            action=action,
            force=bool(data.get("force")),
            timeout=data.get("timeout") or 120,
        )
        return None, queued_message(f"{word} of {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"{word} {vm.name}?",
        submit=word,
        icon={"stop": "stop", "reset": "zap", "shutdown": "power"}.get(action, "play"),
        danger=action in (PowerAction.STOP, PowerAction.RESET),
        intro=intro,
    )


@login_required
def vm_clone(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CREATE, vm, "create VMs in this tenant")
    initial = {"name": f"{vm.name}-clone"[:63], "mode": "linked" if vm.is_template else "full"}
    form = CloneForm(_post_or_none(request), initial=initial)

    def perform(data):
        clone, task = services.vm_clone(
            user=request.user, vm=vm, name=data["name"], mode=data["mode"]
        )
        return _vm_url(clone), queued_message(f"Clone {clone.name} of {vm.name}", task)

    intro = (
        "Copies this VM's definition and disks to a new VM on the same host, in the same "
        "tenant, with new MAC addresses. The source must be shut off."
    )
    if not vm.is_template:
        intro += " Linked clones are made from templates."
    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Clone {vm.name}",
        submit="Clone",
        icon="copy",
        intro=intro,
    )


@login_required
def vm_template(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "edit this VM")

    def perform(data):
        services.vm_make_template(user=request.user, vm=vm)
        return None, f"{vm.name} is now a template: clone it to make VMs."

    return _action(
        request,
        vm,
        ConfirmForm(_post_or_none(request)),
        perform,
        title=f"Convert {vm.name} to a template?",
        submit="Convert to template",
        icon="template",
        intro="A template cannot be started; it is the source of clones and of new VMs "
        "(linked clones share its disks). The VM must be shut off.",
        can_submit=not vm.is_template,
    )


@login_required
def vm_delete(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_DELETE, vm, "delete this VM")
    clones = list(vm.clones.filter(gone=False).values_list("name", flat=True)[:10])
    form = DeleteForm(_post_or_none(request))

    def perform(data):
        task = services.vm_delete(user=request.user, vm=vm, delete_volumes=data["delete_volumes"])
        url = f"{reverse('ui:tenant', args=[vm.tenant_id])}?tab=vms"
        return url, queued_message(f"Deletion of {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Delete {vm.name}?",
        submit="Delete",
        icon="trash",
        danger=True,
        intro="Stops the VM if it runs and removes its definition from the host. "
        "This cannot be undone.",
        extra={"clones": clones},
    )


# --- hardware --------------------------------------------------------------------------------


@login_required
def vm_resources(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "edit this VM")
    initial = {
        "name": vm.name,
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "autostart": vm.autostart,
    }
    form = VmResourcesForm(_post_or_none(request), initial=initial)
    running = vm.state in (VMState.RUNNING, VMState.PAUSED)
    if running:
        form.fields["name"].disabled = True
        form.fields["name"].help_text = "Shut the VM down to rename it."

    def perform(data):
        task = services.vm_update(user=request.user, vm=vm, **data)
        if task is None:
            return None, f"{vm.name}: nothing changed."
        return None, queued_message(f"Hardware change of {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"CPU, memory and name of {vm.name}",
        submit="Apply",
        icon="cpu",
        tab="hardware",
        extra={"limits": {"running": running, "host": vm.host}, "submit_icon": "check"},
    )


@login_required
def disk_add(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "change this VM's hardware")
    pools = list(pools_for(request.user, vm.tenant, vm.host_id).order_by("name"))
    active = [p for p in pools if p.state == PoolState.ACTIVE]
    volumes = (
        selectors.volumes_usable(request.user, vm.tenant, selectors.USE_ATTACH)
        .filter(pool__host=vm.host_id)
        .order_by("pool__name", "name")
    )
    form = DiskAddForm(
        _post_or_none(request),
        pools=[
            (p.pk, f"{p.name} ({p.get_pool_type_display()}, {p.available / GIB:.1f} GiB free)")
            for p in active
        ],
        volumes=[(v.pk, f"{v.pool.name}/{v.name} ({v.capacity / GIB:.1f} GiB)") for v in volumes],
        initial={"pool": active[0].pk if active else None},
    )

    def perform(data):
        task = services.disk_attach(user=request.user, vm=vm, **form.service_kwargs())
        return None, queued_message(f"New disk for {vm.name}", task)

    running = vm.state in (VMState.RUNNING, VMState.PAUSED)
    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Add a disk to {vm.name}",
        submit="Add disk",
        icon="disk",
        tab="hardware",
        intro="A running VM gets the disk hot-plugged (VirtIO or SCSI; SATA needs the VM shut off)."
        if running
        else "",
        extra={"disk_form": True},
    )


def _get_disk(vm: VirtualMachine, disk_pk: int) -> Disk:
    return get_object_or_404(vm.disks.select_related("volume"), pk=disk_pk)


@login_required
def disk_remove(request: HttpRequest, pk: int, disk_pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "change this VM's hardware")
    disk = _get_disk(vm, disk_pk)
    form = DiskRemoveForm(_post_or_none(request))

    def perform(data):
        task = services.disk_detach(
            user=request.user, vm=vm, disk=disk, delete_volume=data["delete_volume"]
        )
        return None, queued_message(f"Removal of {disk.target} from {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Remove disk {disk.target} from {vm.name}?",
        submit="Remove disk",
        icon="trash",
        danger=True,
        tab="hardware",
        intro=f"Detaches {disk.source or 'the disk'} from the VM. The guest loses the device; "
        "unmount it in the guest first.",
    )


@login_required
def disk_grow(request: HttpRequest, pk: int, disk_pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "change this VM's hardware")
    disk = _get_disk(vm, disk_pk)
    current = disk.volume.capacity / GIB if disk.volume else 0
    form = DiskGrowForm(_post_or_none(request), initial={"size_gib": round(current, 2)})

    def perform(data):
        task = services.disk_grow(user=request.user, vm=vm, disk=disk, size_gib=data["size_gib"])
        return None, queued_message(f"Growing {disk.target} of {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Grow disk {disk.target}",
        submit="Grow disk",
        icon="grow",
        tab="hardware",
        intro=f"{disk.target} is {current:g} GiB now. Grow the partition and file system in "
        "the guest afterwards.",
    )


@login_required
def cdrom_change(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "change this VM's hardware")
    drive = vm.disks.filter(device=DiskDevice.CDROM).first()
    isos = (
        selectors.volumes_usable(request.user, vm.tenant, selectors.USE_CDROM)
        .filter(pool__host=vm.host_id)
        .order_by("name")
    )
    current = next((v.pk for v in isos if drive and v.path == drive.source), None)
    form = CdromForm(
        _post_or_none(request),
        isos=[(v.pk, f"{v.name} ({v.pool.name}, {v.capacity / GIB:.1f} GiB)") for v in isos],
        initial={"volume": current},
    )

    def perform(data):
        task = services.cdrom_change(user=request.user, vm=vm, volume=data["volume"])
        what = "Eject of the CD-ROM" if data["volume"] is None else "CD-ROM change"
        return None, queued_message(f"{what} of {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"CD/DVD drive of {vm.name}",
        submit="Apply",
        icon="disc",
        tab="hardware",
    )


@login_required
def nic_add(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "change this VM's hardware")
    networks = networks_for(request.user, vm.tenant, vm.host_id).order_by("name")
    form = NicAddForm(
        _post_or_none(request),
        networks=[(n.pk, f"{n.name} ({n.get_forward_mode_display()})") for n in networks],
    )

    def perform(data):
        task = services.nic_attach(
            user=request.user,
            vm=vm,
            network=data["network"],
            mac=data["mac"] or None,
            model=data["model"],
        )
        return None, queued_message(f"New network device for {vm.name}", task)

    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Add a network device to {vm.name}",
        submit="Add",
        icon="nic",
        tab="hardware",
    )


@login_required
def nic_remove(request: HttpRequest, pk: int, nic_pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_CHANGE, vm, "change this VM's hardware")
    nic = get_object_or_404(vm.nics, pk=nic_pk)

    def perform(data):
        task = services.nic_detach(user=request.user, vm=vm, nic=nic)
        return None, queued_message(f"Removal of NIC {nic.mac} from {vm.name}", task)

    return _action(
        request,
        vm,
        ConfirmForm(_post_or_none(request)),
        perform,
        title=f"Remove network device {nic.mac}?",
        submit="Remove",
        icon="trash",
        danger=True,
        tab="hardware",
        intro="The guest loses this network interface.",
    )


# --- snapshots -------------------------------------------------------------------------------


@login_required
def snapshot_add(request: HttpRequest, pk: int) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_SNAPSHOT, vm, "take snapshots of this VM")
    refusal = services.snapshot_refusal(vm)
    form = SnapshotForm(_post_or_none(request))

    def perform(data):
        task = services.snapshot_create(user=request.user, vm=vm, **data)
        return None, queued_message(f"Snapshot {data['name']} of {vm.name}", task)

    running = vm.state in (VMState.RUNNING, VMState.PAUSED)
    return _action(
        request,
        vm,
        form,
        perform,
        title=f"Take a snapshot of {vm.name}",
        submit="Take snapshot",
        icon="camera",
        tab="snapshots",
        can_submit=not refusal,
        extra={"refusal": refusal},
        intro="The VM is running: the snapshot includes its memory, and reverting to it resumes "
        "the guest where it was."
        if running
        else "The VM is shut off: the snapshot holds its disks.",
    )


@login_required
def snapshot_revert(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_SNAPSHOT, vm, "revert this VM")
    snap = get_object_or_404(vm.snapshots, name=name)

    def perform(data):
        task = services.snapshot_revert(user=request.user, vm=vm, name=snap.name)
        return None, queued_message(f"Revert of {vm.name} to {snap.name}", task)

    return _action(
        request,
        vm,
        ConfirmForm(_post_or_none(request)),
        perform,
        title=f"Revert {vm.name} to {snap.name}?",
        submit="Revert",
        icon="undo",
        danger=True,
        tab="snapshots",
        intro="Everything that changed since the snapshot was taken is lost"
        + (" and the VM runs on from the saved memory." if snap.has_memory else "."),
    )


@login_required
def snapshot_delete(request: HttpRequest, pk: int, name: str) -> HttpResponse:
    vm = _get_vm(request, pk)
    _require(request.user, Action.VM_SNAPSHOT, vm, "delete this VM's snapshots")
    snap = get_object_or_404(vm.snapshots, name=name)

    def perform(data):
        task = services.snapshot_delete(user=request.user, vm=vm, name=snap.name)
        return None, queued_message(f"Deletion of snapshot {snap.name}", task)

    return _action(
        request,
        vm,
        ConfirmForm(_post_or_none(request)),
        perform,
        title=f"Delete snapshot {snap.name}?",
        submit="Delete snapshot",
        icon="trash",
        danger=True,
        tab="snapshots",
        intro="The VM stays as it is; only this point to go back to is removed (its children "
        "keep theirs).",
    )


# --- create wizard ---------------------------------------------------------------------------


def creatable_tenants(user):
    """Tenants in which ``user`` may create VMs."""
    return restrict(Tenant.objects.order_by("name"), user, Action.VM_CREATE, field="pk")


def _opt(value, label: str, **data) -> dict:
    return {"value": value, "label": label, "data": data}


def _grouped(items: list[tuple[Host, dict]], group: bool) -> list:
    """Options grouped by host (optgroups) when several hosts are listed."""
    if not group:
        return [(None, [opt for _host, opt in items])]
    groups: dict[str, list] = {}
    for host, opt in items:
        groups.setdefault(host.name, []).append(opt)
    return list(groups.items())


def _pool_option(pool: StoragePool) -> dict:
    label = f"{pool.name} ({pool.pool_type}, {pool.available / GIB:.1f} GiB free)"
    if pool.state != PoolState.ACTIVE:
        label += f" — {pool.state}"
    opt = _opt(
        pool.pk,
        label,
        host=pool.host_id,
        abilities=json.dumps(backend_for(pool).abilities()),
        free=round(pool.available / GIB, 1),
    )
    opt["disabled"] = pool.state != PoolState.ACTIVE
    return opt


def _volume_option(volume: Volume, label: str) -> dict:
    return _opt(
        volume.pk,
        f"{label} ({volume.capacity / GIB:.1f} GiB)",
        host=volume.pool.host_id,
        gib=round(volume.capacity / GIB, 2),
        linked=int(backend_for(volume.pool).linked_clones),
    )


def _host_option(host: Host) -> dict:
    label = f"{host.name} ({host.cpus or '?'} CPUs, {(host.memory_mib or 0) / 1024:.0f} GiB)"
    if host.status != HostStatus.ONLINE:
        label += f" — {host.get_status_display().lower()}"
    opt = _opt(host.pk, label, name=host.name, cpus=host.cpus or 0, memory=host.memory_mib or 0)
    opt["disabled"] = host.status != HostStatus.ONLINE
    return opt


def _source_volumes(user, tenant: Tenant, scope: list[Host], pools: list[StoragePool]) -> list:
    """Volumes a new disk can start from: templates' disks, then images and loose volumes.

    Only what the tenant may use as a source (its own volumes, images published to it) is
    offered; the service checks the same rule again on submit.
    """
    usable = selectors.volumes_usable(user, tenant, selectors.USE_SOURCE).filter(pool__in=pools)
    templates = VirtualMachine.objects.filter(is_template=True, gone=False, host__in=scope)
    if not is_platform_admin(user):
        templates = templates.filter(tenant=tenant)
    disks = (
        Disk.objects.filter(vm__in=templates, device=DiskDevice.DISK, volume__in=usable)
        .select_related("vm", "volume__pool__host")
        .order_by("vm__name", "target")
    )
    sources = [
        (d.volume.pool.host, _volume_option(d.volume, f"{d.vm.name} / {d.target}")) for d in disks
    ]
    loose = usable.filter(disks__isnull=True).order_by("pool__host__name", "pool__name", "name")
    for v in loose[:200]:
        what = "image" if v.published else "not attached"
        sources.append((v.pool.host, _volume_option(v, f"{v.pool.name}/{v.name}, {what}")))
    return sources


def quota_rows(tenant: Tenant) -> list[dict]:
    """The tenant's limits beside its usage: what is left for new VMs (None: unlimited)."""
    usage = services.tenant_usage(tenant)
    limits = services.tenant_limits(tenant)
    rows = []
    for key, label, name in QUOTA_LABELS:
        limit, used = limits[key], usage[key]
        left = None if limit is None else max(0, round(limit - used, 1))
        rows.append(
            {"key": key, "label": label, "name": name, "used": used, "limit": limit, "left": left}
        )
    return rows


def wizard_options(user, tenant: Tenant, host_id: int | None) -> dict:
    """What the wizard offers for a tenant and a host (or automatic placement).

    Tenant operators see only what their tenant may use; platform admins see everything.
    """
    hosts = list(hosts_for(user, tenant).order_by("name"))
    online = [h for h in hosts if h.status == HostStatus.ONLINE]
    host = next((h for h in hosts if h.pk == host_id), None)
    if host is not None:
        scope = [host]
    else:
        scope = online if len(online) <= AUTO_HOST_LIMIT else []
    group = host is None and len(scope) > 1

    pools = list(pools_for(user, tenant, scope).order_by("host__name", "name"))
    networks = list(networks_for(user, tenant, scope).order_by("host__name", "name"))
    isos = (
        selectors.volumes_usable(user, tenant, selectors.USE_CDROM)
        .filter(pool__in=pools)
        .order_by("pool__host__name", "name")
    )

    cpu_models = [
        (
            None,
            [
                _opt("", "Default (hypervisor's)"),
                _opt("host-model", "host-model"),
                _opt("host-passthrough", "host-passthrough"),
            ],
        )
    ]
    models = [(h, _opt(m, m, host=h.pk)) for h in scope for m in h.cpu_models or []]
    if models:
        cpu_models += _grouped(models, group)

    quota = quota_rows(tenant)
    quota_json = {q["key"]: {"left": q["left"], "limit": q["limit"]} for q in quota}
    return {
        "host": host,
        "hosts": [(None, [_host_option(h) for h in hosts])],
        "host_count": len(online),
        "too_many_hosts": host is None and not scope and bool(online),
        "pools": _grouped([(p.host, _pool_option(p)) for p in pools], group),
        "first_pool": next((p for p in pools if p.state == PoolState.ACTIVE), None),
        "isos": _grouped(
            [
                (v.pool.host, _opt(v.pk, f"{v.name} ({v.pool.name})", host=v.pool.host_id))
                for v in isos
            ],
            group,
        ),
        "networks": _grouped(
            [
                (n.host, _opt(n.pk, f"{n.name} ({n.get_forward_mode_display()})", host=n.host_id))
                for n in networks
            ],
            group,
        ),
        "first_network": networks[0] if networks else None,
        "sources": _grouped(_source_volumes(user, tenant, scope, pools), group),
        "cpu_models": cpu_models,
        "quota": quota,
        "quota_json": json.dumps(quota_json),
    }


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _template_initial(template: VirtualMachine) -> dict:
    """The wizard pre-filled from a template: its size, firmware, disks (as copies) and NICs."""
    initial = {
        "tenant": template.tenant_id,
        "host": template.host_id,
        "vcpus": template.vcpus,
        "max_vcpus": template.max_vcpus if template.max_vcpus > template.vcpus else None,
        "memory_mib": template.memory_mib,
        "max_memory_mib": template.max_memory_mib
        if template.max_memory_mib > template.memory_mib
        else None,
        "firmware": template.firmware,
        "machine": "pc" if "i440fx" in template.machine or template.machine == "pc" else "q35",
        "cpu_model": template.cpu_model,
        "description": template.description,
        "tags": template.tags,
    }
    disks = [
        {
            "source": "template",
            "volume": d.volume_id,
            "bus": d.bus or DiskBus.VIRTIO,
            "clone": CloneMode.LINKED
            if backend_for(d.volume.pool).linked_clones
            else CloneMode.FULL,
        }
        for d in template.disks.select_related("volume__pool").order_by("target")
        if d.device == DiskDevice.DISK and d.volume_id
    ]
    nics = [
        {"network": n.network_id, "model": n.model or NicModel.VIRTIO}
        for n in template.nics.order_by("id")
        if n.network_id
    ]
    return {**initial, "disks": disks, "nics": nics}


@login_required
def vm_create(request: HttpRequest) -> HttpResponse:
    """The create wizard: one form in steps (General, OS, Disks, CPU, Memory, Network, Confirm)
    that ``vms.services.vm_create`` validates; errors come back on the step that shows them."""
    user = request.user
    tenants = list(creatable_tenants(user))
    if not tenants:
        raise PermissionDenied("Your role may not create VMs in any tenant.")
    posted = request.method == "POST"
    source = request.POST if posted else request.GET
    template = None
    initial: dict = {}
    if not posted and source.get("template"):
        template = get_object_or_404(
            selectors.vms_for(user).filter(is_template=True), pk=_int_or_none(source["template"])
        )
        initial = _template_initial(template)
    tenant = _tenant(tenants, _int_or_none(source.get("tenant")) or initial.get("tenant"))
    tenant = tenant or tenants[0]
    host_id = _int_or_none(source.get("host")) or initial.get("host")
    options = wizard_options(user, tenant, host_id)

    if posted:
        wizard = CreateWizard(request.POST)
        if wizard.is_valid():
            response = _create(request, wizard)
            if response is not None:
                return response
    else:
        disks = initial.pop("disks", None)
        nics = initial.pop("nics", None)
        if template is None:
            pool, net = options["first_pool"], options["first_network"]
            disks = [_new_disk(pool)] if pool else []
            nics = [{"network": net.pk, "model": NicModel.VIRTIO}] if net else []
        initial.update(tenant=tenant.pk, host=host_id)
        wizard = CreateWizard(initial=initial, disks=disks, nics=nics)

    errors = wizard.errors_by_step() if posted else {}
    context = {
        "wizard": wizard,
        "form": wizard.form,
        "tenants": [(None, [_opt(t.pk, t.name) for t in tenants])],
        "options": options,
        "host_id": host_id,
        "steps": [(step, label, errors.get(step, False)) for step, label in wizard.STEPS],
        "start_step": wizard.first_error_step() if posted else "general",
        "template": template,
        "disk_template_row": DiskRowForm(prefix="disk-__i__", initial=_new_disk(None)),
        "nic_template_row": NicRowForm(prefix="nic-__i__", initial={"model": NicModel.VIRTIO}),
        "tree_reveal": "" if is_platform_admin(user) else f"tenant-{tenant.pk}",
    }
    return render(request, "vms/vm_create.html", context, status=400 if posted else 200)


def _new_disk(pool: StoragePool | None) -> dict:
    """A new row of the wizard's disks before the user touches it (in the pool's default
    format: raw on LVM)."""
    return {
        "source": "new",
        "size_gib": 32,
        "pool": pool.pk if pool else None,
        "format": backend_for(pool).default_format if pool else DiskFormat.QCOW2,
        "bus": DiskBus.VIRTIO,
    }


def _tenant(tenants: list[Tenant], tenant_id: int | None) -> Tenant | None:
    return next((t for t in tenants if t.pk == tenant_id), None)


def _create(request: HttpRequest, wizard: CreateWizard) -> HttpResponse | None:
    """Call ``vm_create`` with the wizard's input; None when its errors are on the wizard."""
    data = wizard.form.cleaned_data
    tenant = panel_selectors.tenants_for(request.user).filter(pk=data["tenant"]).first()
    if tenant is None:
        wizard.form.add_error("tenant", "Unknown tenant.")
        return None
    try:
        # The service looks the host up among those the tenant may use.
        vm, task = services.vm_create(
            user=request.user,
            tenant=tenant,
            host=data["host"] or None,
            cdrom=data["cdrom"],
            **wizard.service_kwargs(),
        )
    except ValidationError as exc:
        wizard.apply_service_errors(exc)
        return None
    messages.success(
        request,
        format_html("VM {} is being created on {}: {}.", vm.name, vm.host.name, task_link(task)),
    )
    return redirect(vm)


@login_required
@require_GET
def vm_create_options(request: HttpRequest) -> HttpResponse:
    """The wizard's host-dependent choices for a tenant and host (fetched when either changes)."""
    user = request.user
    tenants = list(creatable_tenants(user))
    if not tenants:
        raise PermissionDenied("Your role may not create VMs in any tenant.")
    tenant = _tenant(tenants, _int_or_none(request.GET.get("tenant"))) or tenants[0]
    host_id = _int_or_none(request.GET.get("host"))
    return render(
        request,
        "vms/_create_options.html",
        {
            "options": wizard_options(user, tenant, host_id),
            "tenant_id": tenant.pk,
            "host_id": host_id,
        },
    )


# --- tree nodes ----------------------------------------------------------------------------


def _tree_vms(request: HttpRequest, queryset, more_url: str) -> HttpResponse:
    vms = list(
        queryset.prefetch_related(None).filter(gone=False).order_by("name")[: TREE_LIMIT + 1]
    )
    return render(
        request,
        "vms/_tree_vms.html",
        {"vms": vms[:TREE_LIMIT], "more_url": more_url if len(vms) > TREE_LIMIT else ""},
    )


@login_required
@require_GET
def tree_host_vms(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(host_selectors.hosts(), pk=pk)
    return _tree_vms(
        request,
        selectors.vms_for(request.user).filter(host=host),
        f"{reverse('ui:vm_list')}?host={host.pk}",
    )


@login_required
@require_GET
def tree_tenant_vms(request: HttpRequest, pk: int) -> HttpResponse:
    tenant = get_object_or_404(panel_selectors.tenants_for(request.user), pk=pk)
    return _tree_vms(
        request,
        selectors.vms_for(request.user).filter(tenant=tenant),
        f"{reverse('ui:vm_list')}?tenant={tenant.pk}",
    )
