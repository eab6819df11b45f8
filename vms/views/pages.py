"""A VM's page and its registered tabs, its console window and its edit form."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from panel import selectors as panel_selectors
from panel.filtersets import TaskFilterSet
from panel.generic import (
    ObjectEditView,
    ObjectView,
    PanelView,
    ViewTab,
    paginate,
    register_tab,
)
from panel.tenancy import Action, can, is_platform_admin

from .. import services
from ..forms import VmEditForm
from ..models import VirtualMachine
from .common import XTERM_STYLES, VmPage, blocked, busy_task, permissions, power_buttons

CONSOLE_KINDS = ("vnc", "serial")


def console_kind(request: HttpRequest) -> str:
    kind = request.GET.get("kind", "vnc")
    return kind if kind in CONSOLE_KINDS else "vnc"


class VmView(VmPage, ObjectView):
    """A VM's page: its header (state, power buttons) and the tab asked for."""

    template_name = "vms/vm_detail.html"
    decorators = (XTERM_STYLES,)

    def get_extra_context(self, request: HttpRequest, obj, tab) -> dict:
        vm = obj
        busy = busy_task(vm)
        reason = blocked(vm, busy)
        context = {
            "busy": busy,
            "blocked": reason,
            "power_buttons": power_buttons(vm, reason) if not vm.is_template else [],
            **permissions(request.user, vm),
        }
        if vm.is_template:
            context["clone_count"] = vm.clones.filter(gone=False).count()
        return context


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


def _hardware(request: HttpRequest, vm) -> dict:
    # Disks before CD-ROMs, as the guest numbers them.
    return {
        "disks": vm.disks.select_related("volume").order_by("-device", "target"),
        "nics": vm.nics.select_related("network").order_by("id"),
    }


def _snapshots(request: HttpRequest, vm) -> dict:
    return {
        "snapshot_rows": snapshot_rows(list(vm.snapshots.all())),
        "snapshot_refusal": services.snapshot_refusal(vm),
    }


def _tasks(request: HttpRequest, vm) -> dict:
    tasks = panel_selectors.tasks_for(request.user).prefetch_related(None)
    filterset = TaskFilterSet({"vm": vm.pk}, queryset=tasks)
    return {"page": paginate(request, filterset.qs)}


def _console(request: HttpRequest, vm) -> dict:
    return {"console_kind": console_kind(request)}


def _may_console(request: HttpRequest, vm) -> bool:
    return can(request.user, Action.VM_CONSOLE, vm.tenant_id) and not vm.is_template


for _tab in (
    ViewTab("summary", "Summary", "summary", "vms/tabs/summary.html", 100),
    ViewTab("hardware", "Hardware", "cpu", "vms/tabs/hardware.html", 200, context=_hardware),
    ViewTab("snapshots", "Snapshots", "camera", "vms/tabs/snapshots.html", 300, context=_snapshots),
    ViewTab("tasks", "Tasks", "tasks", "vms/tabs/tasks.html", 400, context=_tasks),
    ViewTab(
        "console",
        "Console",
        "vm",
        "vms/tabs/console.html",
        500,
        context=_console,
        visible=_may_console,
        # Said on the tab itself, before it is opened: libvirt's test driver runs no guest.
        badge=lambda vm: "none on a simulated host" if vm.host.simulated else None,
    ),
):
    register_tab(VirtualMachine, _tab)


class VmConsolePopoutView(VmPage, PanelView):
    """A VM's console alone in a window of its own (opened from the Console tab)."""

    methods = ("GET", "HEAD")
    decorators = (XTERM_STYLES,)

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        vm = self.get_object(request, **kwargs)
        if not _may_console(request, vm):
            raise PermissionDenied("Your role may not open this VM's console.")
        return render(request, "vms/console_popout.html", {"vm": vm, "kind": console_kind(request)})


class VmNotesView(VmPage, PanelView):
    """A VM's notes saved from its Summary (edit in place): answers the notes panel, or the
    page itself when the browser posted the form without htmx."""

    methods = ("POST",)
    permission = Action.VM_CHANGE
    permission_what = "edit this VM's notes"

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        vm = self.get_object(request, **kwargs)
        self.check_permission(request, vm)
        notes = request.POST.get("notes", "").replace("\r\n", "\n")
        error = ""
        try:
            services.vm_update(user=request.user, vm=vm, notes=notes)
        except ValidationError as exc:
            error = "; ".join(getattr(exc, "message_dict", {}).get("notes", exc.messages))
            vm.refresh_from_db(fields=["notes"])
        if not request.headers.get("HX-Request"):
            return redirect(vm.get_absolute_url()) if not error else HttpResponse(error, status=400)
        context = {"vm": vm, "can_edit": True, "notes_error": error, "notes_draft": notes}
        return render(request, "vms/_notes.html", context, status=400 if error else 200)


class VmEditView(VmPage, ObjectEditView):
    """Description, tags and (platform admins) tenant of a VM."""

    template_name = "vms/vm_edit.html"
    permission = Action.VM_CHANGE
    permission_what = "edit this VM"

    def get_form(self, request: HttpRequest, obj):
        user = request.user
        tenants = (
            panel_selectors.tenants_for(user).order_by("name") if is_platform_admin(user) else None
        )
        initial = {"description": obj.description, "tags": obj.tags, "tenant": obj.tenant_id}
        return VmEditForm(request.POST or None, initial=initial, tenants=tenants)

    def save(self, request: HttpRequest, obj, data: dict) -> str:
        services.vm_update(user=request.user, vm=obj, **data)
        return f"VM {obj.name} saved."
