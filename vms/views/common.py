"""What the VM pages share: the VM looked up among the user's, the tree to open, the busy state
and the buttons a user's role allows."""

from __future__ import annotations

from csp.decorators import csp_update
from django.http import HttpRequest
from django.urls import reverse

from panel.generic import ActionView
from panel.models import Task
from panel.tenancy import Action, can, is_platform_admin

from .. import selectors, services
from ..choices import Lifecycle, PowerAction, VMState
from ..models import VirtualMachine

# The one exception to the strict Content-Security-Policy: xterm.js (the serial console, on the
# VM page and the console window) writes its cell metrics and theme into <style> elements it
# creates, which style-src 'self' refuses. Only <style> elements, only on these two pages;
# style attributes stay refused (style-src-attr falls back to style-src 'self') and scripts
# are untouched.
XTERM_STYLES = csp_update({"style-src-elem": ["'self'", "'unsafe-inline'"]})

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


def vm_reveal(user, vm) -> str:
    """The tree nodes to open for a VM's page."""
    if is_platform_admin(user):
        return f"host-{vm.host_id} host-{vm.host_id}-vms"
    return f"tenant-{vm.tenant_id}"


def vm_url(vm: VirtualMachine, tab: str = "summary") -> str:
    url = reverse("ui:vm", args=[vm.pk])
    return url if tab == "summary" else f"{url}?tab={tab}"


def busy_task(vm: VirtualMachine) -> Task | None:
    return vm.lock if vm.lock_id and not vm.lock.is_final else None


def blocked(vm: VirtualMachine, busy: Task | None) -> str:
    """Why no action can start on this VM right now ('' when they can)."""
    if busy is not None:
        return f"Busy with task #{busy.pk}"
    if vm.gone:
        return "Gone from its host"
    if vm.lifecycle != Lifecycle.READY:
        return f"{vm.get_lifecycle_display()}…"
    return ""


def permissions(user, vm: VirtualMachine) -> dict:
    return {
        "can_edit": can(user, Action.VM_CHANGE, vm.tenant_id),
        "can_power": can(user, Action.VM_POWER, vm.tenant_id),
        "can_snapshot": can(user, Action.VM_SNAPSHOT, vm.tenant_id),
        "can_delete": can(user, Action.VM_DELETE, vm.tenant_id),
        "can_create": can(user, Action.VM_CREATE, vm.tenant_id),
        "can_console": can(user, Action.VM_CONSOLE, vm.tenant_id) and not vm.is_template,
    }


def power_buttons(vm: VirtualMachine, reason_blocked: str) -> list[dict]:
    """The header's power buttons: the sensible ones enabled, the others disabled, saying why."""
    buttons = []
    paused = vm.state in (VMState.PAUSED, VMState.PMSUSPENDED)
    for action, label, icon, confirm in POWER_BUTTONS:
        # Pause and Resume share a place: the one that makes sense now.
        if (action == PowerAction.PAUSE and paused) or (
            action == PowerAction.RESUME and not paused
        ):
            continue
        reason = reason_blocked
        if action == PowerAction.STOP and services.stop_preempts(busy_task(vm)):
            reason = ""  # a Stop ends a pending shutdown or reboot first (as Proxmox does)
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


class VmPage:
    """A page about one VM: looked up among the VMs the user may see (else 404)."""

    model = VirtualMachine
    context_object_name = "vm"

    def get_queryset(self, request: HttpRequest):
        return selectors.vms_for(request.user).select_related("lock")

    def reveal(self, request: HttpRequest, obj) -> str:
        return vm_reveal(request.user, obj)


class VmActionView(VmPage, ActionView):
    """An action on a VM: a form, one service call, the VM's page (``tab``) again.

    A subclass names the role it needs (``permission``, ``permission_what``), its form and its
    words, and implements ``perform(data)`` with one ``vms.services`` call, returning
    ``(url or None, message)``.
    """

    template_name = "vms/action.html"
    dialog_template_name = "vms/_action_dialog.html"
    conflicts = (services.CloneConflict,)
    tab = "summary"

    @property
    def vm(self) -> VirtualMachine:
        return self.object

    def return_url(self) -> str:
        return vm_url(self.vm, self.tab)

    @property
    def running(self) -> bool:
        return self.vm.state in (VMState.RUNNING, VMState.PAUSED)
