"""A VM's actions: power, clone, template, delete, hardware and snapshots.

Each is one ``VmActionView``: a small form that works as a page of its own and, opened from a
button with ``data-dialog``, inside the page's dialog; ``perform`` calls one ``vms.services``
function (the same the API's ``@action`` calls) and says where to go and what to tell.

Adding a VM action is four pieces, one per room:

1. a service function in ``vms/services.py`` (authorize, validate, lock, queue a ``Task``);
2. the job step that carries it out (``vms/jobs.py``, through ``hosts.driver``);
3. an action class here: subclass ``VmActionView`` (or ``HardwareActionView`` /
   ``SnapshotActionView``), set ``permission``, ``permission_what``, ``form_class``, ``submit``
   and ``icon``, and write ``perform(data)`` calling the service; the base class finds the VM
   among the user's (404 otherwise), checks the role (403), shows the form as a page or in the
   dialog, and puts service errors and lock conflicts on the form;
4. a route in ``vms/urls.py`` (and, for the API, an ``@action`` on the viewset calling the same
   service), plus a button in the VM page's template.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from hosts.choices import PoolState
from hosts.selectors import networks_for, pools_for
from panel.generic import is_htmx, post_or_none, queued_message
from panel.tenancy import Action
from panel.units import GIB

from .. import selectors, services
from ..choices import CloneMode, DiskDevice, PowerAction
from ..forms import (
    CdromForm,
    CloneForm,
    ConfirmForm,
    DeleteForm,
    DiskAddForm,
    DiskGrowForm,
    DiskRemoveForm,
    NicAddForm,
    ShutdownForm,
    SnapshotForm,
    VmResourcesForm,
)
from .common import POWER_WORDS, VmActionView, vm_url

POWER_INTROS = {
    PowerAction.STOP: "Stop pulls the plug: the guest does not shut down cleanly and "
    "unsaved data in it is lost.",
    PowerAction.RESET: "Reset presses the reset button: the guest restarts at once, "
    "without shutting down, and unsaved data in it is lost.",
}
SHUTDOWN_INTRO = (
    "Asks the guest to shut down (ACPI). A guest that ignores it keeps running unless "
    "you force it off after the timeout."
)


class VmPowerView(VmActionView):
    """A power action: header buttons POST here at once; Stop, Reset and the shutdown options
    show a confirmation (GET) first."""

    permission = Action.VM_POWER
    permission_what = "power this VM"

    def get_object(self, request: HttpRequest, **kwargs):
        if kwargs["action"] not in PowerAction.values:
            raise Http404("Unknown power action.")
        self.action = kwargs["action"]
        return super().get_object(request, **kwargs)

    @property
    def word(self) -> str:
        return POWER_WORDS[self.action]

    def get_form(self):
        form_class = ShutdownForm if self.action == PowerAction.SHUTDOWN else ConfirmForm
        return form_class(post_or_none(self.request))

    def get_title(self) -> str:
        return f"{self.word} {self.vm.name}?"

    def get_intro(self) -> str:
        if self.action == PowerAction.SHUTDOWN:
            return SHUTDOWN_INTRO
        return POWER_INTROS.get(self.action, "")

    @property
    def submit(self) -> str:
        return self.word

    @property
    def icon(self) -> str:
        return {"stop": "stop", "reset": "zap", "shutdown": "power"}.get(self.action, "play")

    @property
    def danger(self) -> bool:
        return self.action in (PowerAction.STOP, PowerAction.RESET)

    def perform(self, data):
        task = services.vm_power(
            user=self.request.user,
            vm=self.vm,
            action=self.action,
            force=bool(data.get("force")),
            timeout=data.get("timeout") or 120,
        )
        return None, queued_message(f"{self.word} of {self.vm.name}", task)


class VmCloneView(VmActionView):
    permission = Action.VM_CREATE
    permission_what = "create VMs in this tenant"
    form_class = CloneForm
    submit = "Clone"
    icon = "copy"

    def get_initial(self) -> dict:
        mode = CloneMode.LINKED if self.vm.is_template else CloneMode.FULL
        return {"name": f"{self.vm.name}-clone"[:63], "mode": mode}

    def get_title(self) -> str:
        return f"Clone {self.vm.name}"

    def get_intro(self) -> str:
        intro = (
            "Copies this VM's definition and disks to a new VM on the same host, in the same "
            "tenant, with new MAC addresses. The source must be shut off."
        )
        if not self.vm.is_template:
            intro += " Linked clones are made from templates."
        return intro

    def perform(self, data):
        clone, task = services.vm_clone(
            user=self.request.user, vm=self.vm, name=data["name"], mode=data["mode"]
        )
        return vm_url(clone), queued_message(f"Clone {clone.name} of {self.vm.name}", task)


class VmTemplateView(VmActionView):
    permission = Action.VM_CHANGE
    permission_what = "edit this VM"
    form_class = ConfirmForm
    submit = "Convert to template"
    icon = "template"
    intro = (
        "A template cannot be started; it is the source of clones and of new VMs "
        "(linked clones share its disks). The VM must be shut off."
    )

    def get_title(self) -> str:
        return f"Convert {self.vm.name} to a template?"

    def can_submit(self) -> bool:
        return not self.vm.is_template

    def perform(self, data):
        services.vm_make_template(user=self.request.user, vm=self.vm)
        return None, f"{self.vm.name} is now a template: clone it to make VMs."


class VmDeleteView(VmActionView):
    permission = Action.VM_DELETE
    permission_what = "delete this VM"
    form_class = DeleteForm
    submit = "Delete"
    icon = "trash"
    danger = True
    intro = (
        "Stops the VM if it runs and removes its definition from the host. This cannot be undone."
    )

    def get_title(self) -> str:
        return f"Delete {self.vm.name}?"

    def get_extra_context(self) -> dict:
        return {
            "clones": list(self.vm.clones.filter(gone=False).values_list("name", flat=True)[:10])
        }

    def perform(self, data):
        self.task = services.vm_delete(
            user=self.request.user, vm=self.vm, delete_volumes=data["delete_volumes"]
        )
        if is_htmx(self.request):
            return None, ""  # the dialog says it (finish)
        return None, queued_message(f"Deletion of {self.vm.name}", self.task)

    def finish(self, url: str) -> HttpResponse:
        """The page stays until the delete ends: the dialog follows the task (static/js/
        actions.js), goes on to the tenant's VMs when it worked and says why when it failed.
        Without the dialog's script, the task's page says how it ends."""
        if not is_htmx(self.request):
            return redirect("ui:task", self.task.pk)
        vms_url = f"{reverse('ui:tenant', args=[self.vm.tenant_id])}?tab=vms"
        return render(
            self.request,
            "vms/_delete_follow.html",
            {"vm": self.vm, "task": self.task, "done_url": vms_url},
        )


# --- hardware --------------------------------------------------------------------------------


class HardwareActionView(VmActionView):
    permission = Action.VM_CHANGE
    permission_what = "change this VM's hardware"
    tab = "hardware"


class VmResourcesView(HardwareActionView):
    permission_what = "edit this VM"
    submit = "Apply"
    icon = "cpu"

    def get_form(self):
        vm = self.vm
        initial = {
            "name": vm.name,
            "vcpus": vm.vcpus,
            "memory_mib": vm.memory_mib,
            "autostart": vm.autostart,
        }
        form = VmResourcesForm(post_or_none(self.request), initial=initial)
        if self.running:
            form.fields["name"].disabled = True
            form.fields["name"].help_text = "Shut the VM down to rename it."
        return form

    def get_title(self) -> str:
        return f"CPU, memory and name of {self.vm.name}"

    def get_extra_context(self) -> dict:
        return {"limits": {"running": self.running, "host": self.vm.host}, "submit_icon": "check"}

    def perform(self, data):
        task = services.vm_update(user=self.request.user, vm=self.vm, **data)
        if task is None:
            return None, f"{self.vm.name}: nothing changed."
        return None, queued_message(f"Hardware change of {self.vm.name}", task)


class DiskAddView(HardwareActionView):
    submit = "Add disk"
    icon = "disk"

    def get_form(self):
        user, vm = self.request.user, self.vm
        pools = list(pools_for(user, vm.tenant, vm.host_id).order_by("name"))
        active = [p for p in pools if p.state == PoolState.ACTIVE]
        volumes = (
            selectors.volumes_usable(user, vm.tenant, selectors.USE_ATTACH)
            .filter(pool__host=vm.host_id)
            .order_by("pool__name", "name")
        )
        return DiskAddForm(
            post_or_none(self.request),
            pools=[
                (p.pk, f"{p.name} ({p.get_pool_type_display()}, {p.available / GIB:.1f} GiB free)")
                for p in active
            ],
            volumes=[
                (v.pk, f"{v.pool.name}/{v.name} ({v.capacity / GIB:.1f} GiB)") for v in volumes
            ],
            initial={"pool": active[0].pk if active else None},
        )

    def get_title(self) -> str:
        return f"Add a disk to {self.vm.name}"

    def get_intro(self) -> str:
        if self.running:
            return (
                "A running VM gets the disk hot-plugged (VirtIO or SCSI; SATA needs the VM "
                "shut off)."
            )
        return ""

    def get_extra_context(self) -> dict:
        return {"disk_form": True}

    def perform(self, data):
        task = services.disk_attach(
            user=self.request.user, vm=self.vm, **self.form.service_kwargs()
        )
        return None, queued_message(f"New disk for {self.vm.name}", task)


class DiskActionView(HardwareActionView):
    """An action on one of the VM's disks (``disk_pk``)."""

    def setup_action(self, request: HttpRequest, obj, **kwargs) -> None:
        self.disk = get_object_or_404(obj.disks.select_related("volume"), pk=kwargs["disk_pk"])


class DiskRemoveView(DiskActionView):
    form_class = DiskRemoveForm
    submit = "Remove disk"
    icon = "trash"
    danger = True

    def get_title(self) -> str:
        return f"Remove disk {self.disk.target} from {self.vm.name}?"

    def get_intro(self) -> str:
        return (
            f"Detaches {self.disk.source or 'the disk'} from the VM. The guest loses the device; "
            "unmount it in the guest first."
        )

    def perform(self, data):
        task = services.disk_detach(
            user=self.request.user,
            vm=self.vm,
            disk=self.disk,
            delete_volume=data["delete_volume"],
        )
        return None, queued_message(f"Removal of {self.disk.target} from {self.vm.name}", task)


class DiskGrowView(DiskActionView):
    form_class = DiskGrowForm
    submit = "Grow disk"
    icon = "grow"

    @property
    def current(self) -> float:
        return self.disk.volume.capacity / GIB if self.disk.volume else 0

    def get_initial(self) -> dict:
        return {"size_gib": round(self.current, 2)}

    def get_title(self) -> str:
        return f"Grow disk {self.disk.target}"

    def get_intro(self) -> str:
        return (
            f"{self.disk.target} is {self.current:g} GiB now. Grow the partition and file "
            "system in the guest afterwards."
        )

    def perform(self, data):
        task = services.disk_grow(
            user=self.request.user, vm=self.vm, disk=self.disk, size_gib=data["size_gib"]
        )
        return None, queued_message(f"Growing {self.disk.target} of {self.vm.name}", task)


class CdromView(HardwareActionView):
    submit = "Apply"
    icon = "disc"

    def get_form(self):
        user, vm = self.request.user, self.vm
        drive = vm.disks.filter(device=DiskDevice.CDROM).first()
        isos = (
            selectors.volumes_usable(user, vm.tenant, selectors.USE_CDROM)
            .filter(pool__host=vm.host_id)
            .order_by("name")
        )
        current = next((v.pk for v in isos if drive and v.path == drive.source), None)
        return CdromForm(
            post_or_none(self.request),
            isos=[(v.pk, f"{v.name} ({v.pool.name}, {v.capacity / GIB:.1f} GiB)") for v in isos],
            initial={"volume": current},
        )

    def get_title(self) -> str:
        return f"CD/DVD drive of {self.vm.name}"

    def perform(self, data):
        task = services.cdrom_change(user=self.request.user, vm=self.vm, volume=data["volume"])
        what = "Eject of the CD-ROM" if data["volume"] is None else "CD-ROM change"
        return None, queued_message(f"{what} of {self.vm.name}", task)


class NicAddView(HardwareActionView):
    submit = "Add"
    icon = "nic"

    def get_form(self):
        vm = self.vm
        networks = networks_for(self.request.user, vm.tenant, vm.host_id).order_by("name")
        return NicAddForm(
            post_or_none(self.request),
            networks=[(n.pk, f"{n.name} ({n.get_forward_mode_display()})") for n in networks],
        )

    def get_title(self) -> str:
        return f"Add a network device to {self.vm.name}"

    def perform(self, data):
        task = services.nic_attach(
            user=self.request.user,
            vm=self.vm,
            network=data["network"],
            mac=data["mac"] or None,
            model=data["model"],
        )
        return None, queued_message(f"New network device for {self.vm.name}", task)


class NicRemoveView(HardwareActionView):
    form_class = ConfirmForm
    submit = "Remove"
    icon = "trash"
    danger = True
    intro = "The guest loses this network interface."

    def setup_action(self, request: HttpRequest, obj, **kwargs) -> None:
        self.nic = get_object_or_404(obj.nics, pk=kwargs["nic_pk"])

    def get_title(self) -> str:
        return f"Remove network device {self.nic.mac}?"

    def perform(self, data):
        task = services.nic_detach(user=self.request.user, vm=self.vm, nic=self.nic)
        return None, queued_message(f"Removal of NIC {self.nic.mac} from {self.vm.name}", task)


# --- snapshots -------------------------------------------------------------------------------


class SnapshotActionView(VmActionView):
    permission = Action.VM_SNAPSHOT
    tab = "snapshots"


class SnapshotAddView(SnapshotActionView):
    permission_what = "take snapshots of this VM"
    form_class = SnapshotForm
    submit = "Take snapshot"
    icon = "camera"

    def setup_action(self, request: HttpRequest, obj, **kwargs) -> None:
        self.refusal = services.snapshot_refusal(obj)

    def can_submit(self) -> bool:
        return not self.refusal

    def get_title(self) -> str:
        return f"Take a snapshot of {self.vm.name}"

    def get_intro(self) -> str:
        if self.running:
            return (
                "The VM is running: the snapshot includes its memory, and reverting to it "
                "resumes the guest where it was."
            )
        return "The VM is shut off: the snapshot holds its disks."

    def get_extra_context(self) -> dict:
        return {"refusal": self.refusal}

    def perform(self, data):
        task = services.snapshot_create(user=self.request.user, vm=self.vm, **data)
        return None, queued_message(f"Snapshot {data['name']} of {self.vm.name}", task)


class SnapshotView(SnapshotActionView):
    """An action on one of the VM's snapshots (``name``), confirmed first."""

    form_class = ConfirmForm
    danger = True

    def setup_action(self, request: HttpRequest, obj, **kwargs) -> None:
        self.snap = get_object_or_404(obj.snapshots, name=kwargs["name"])


class SnapshotRevertView(SnapshotView):
    permission_what = "revert this VM"
    submit = "Revert"
    icon = "undo"

    def get_title(self) -> str:
        return f"Revert {self.vm.name} to {self.snap.name}?"

    def get_intro(self) -> str:
        return "Everything that changed since the snapshot was taken is lost" + (
            " and the VM runs on from the saved memory." if self.snap.has_memory else "."
        )

    def perform(self, data):
        task = services.snapshot_revert(user=self.request.user, vm=self.vm, name=self.snap.name)
        return None, queued_message(f"Revert of {self.vm.name} to {self.snap.name}", task)


class SnapshotDeleteView(SnapshotView):
    permission_what = "delete this VM's snapshots"
    submit = "Delete snapshot"
    icon = "trash"
    intro = (
        "The VM stays as it is; only this point to go back to is removed (its children "
        "keep theirs)."
    )

    def get_title(self) -> str:
        return f"Delete snapshot {self.snap.name}?"

    def perform(self, data):
        task = services.snapshot_delete(user=self.request.user, vm=self.vm, name=self.snap.name)
        return None, queued_message(f"Deletion of snapshot {self.snap.name}", task)


__all__ = [
    "CdromView",
    "DiskAddView",
    "DiskGrowView",
    "DiskRemoveView",
    "NicAddView",
    "NicRemoveView",
    "SnapshotAddView",
    "SnapshotDeleteView",
    "SnapshotRevertView",
    "VmCloneView",
    "VmDeleteView",
    "VmPowerView",
    "VmResourcesView",
    "VmTemplateView",
]
