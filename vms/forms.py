"""Forms of the VM pages: the create wizard, lifecycle dialogs and the edit forms.

Forms only shape input into the services' arguments; ``vms.services`` validates it against the
inventory and answers with field messages, which go back onto these forms.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from panel.forms import TagsField

from .choices import (
    MAX_DISKS,
    MAX_NICS,
    CloneMode,
    DiskBus,
    DiskFormat,
    Firmware,
    MachineType,
    NicModel,
)

BOOT_ORDERS = [
    ("disk,cdrom,network", "Disk, CD-ROM, network"),
    ("cdrom,disk,network", "CD-ROM, disk, network"),
    ("network,disk,cdrom", "Network (PXE), disk, CD-ROM"),
]
# Rows a wizard request may carry; more is a mistake or abuse, not a VM.


def _number(attrs: dict | None = None) -> forms.NumberInput:
    return forms.NumberInput(attrs={"class": "num-input", **(attrs or {})})


# --- create wizard -------------------------------------------------------------------------


class VmCreateForm(forms.Form):
    """The wizard's single-valued fields. Ids (tenant, host, ISO) are resolved by the view."""

    # General
    name = forms.CharField(max_length=63, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    tenant = forms.IntegerField()
    host = forms.IntegerField(required=False)
    description = forms.CharField(max_length=200, required=False)
    tags = TagsField(help_text="")
    # OS
    cdrom = forms.IntegerField(required=False, label="ISO image")
    firmware = forms.ChoiceField(choices=Firmware.choices, initial=Firmware.BIOS)
    machine = forms.ChoiceField(choices=MachineType.choices, initial=MachineType.Q35)
    boot = forms.ChoiceField(choices=BOOT_ORDERS, initial=BOOT_ORDERS[0][0], label="Boot order")
    # CPU
    vcpus = forms.IntegerField(initial=1, label="vCPUs", widget=_number({"min": 1}))
    max_vcpus = forms.IntegerField(
        required=False,
        label="Maximum vCPUs",
        widget=_number({"min": 1}),
        help_text="For hot-plug: a running VM can grow to this many. Empty: same as vCPUs.",
    )
    cpu_model = forms.CharField(required=False, max_length=64, label="CPU type")
    tuning_policy = forms.CharField(required=False, max_length=63, label="Tuning policy")
    # Memory
    # Any whole MiB from 64 up (QEMU sizes guest memory in KiB; libvirt keeps whole MiB as given).
    memory_mib = forms.IntegerField(
        initial=2048,
        label="Memory (MiB)",
        widget=_number({"min": 64, "step": 1}),
        help_text="Any whole MiB from 64 up, e.g. 1000: libvirt runs a guest's memory in whole "
        "MiB, so nothing is rounded.",
    )
    max_memory_mib = forms.IntegerField(
        required=False,
        label="Maximum memory (MiB)",
        widget=_number({"min": 64, "step": 1}),
        help_text="The balloon can give a running VM up to this much. Empty: same as memory.",
    )
    # Confirm
    start = forms.BooleanField(required=False, label="Start after created")
    autostart = forms.BooleanField(required=False, label="Start at host boot")


class DiskRowForm(forms.Form):
    """One disk of the wizard: a new volume, or a copy of a template's volume."""

    source = forms.ChoiceField(
        choices=[("new", "New volume"), ("template", "From template volume")], initial="new"
    )
    size_gib = forms.FloatField(
        required=False, initial=32, label="Size (GiB)", widget=_number({"min": 0.1, "step": "any"})
    )
    pool = forms.IntegerField(required=False, label="Storage")
    format = forms.ChoiceField(choices=DiskFormat.choices, initial=DiskFormat.QCOW2, required=False)
    bus = forms.ChoiceField(choices=DiskBus.choices, initial=DiskBus.VIRTIO, label="Bus")
    volume = forms.IntegerField(required=False, label="Template volume")
    clone = forms.ChoiceField(choices=CloneMode.choices, initial=CloneMode.LINKED, required=False)

    def clean(self):
        data = super().clean()
        if data.get("source") == "template":
            if not data.get("volume"):
                self.add_error("volume", "Choose the volume to copy.")
        else:
            if data.get("size_gib") is None and "size_gib" not in self.errors:
                self.add_error("size_gib", "How many GiB?")
            if not data.get("pool"):
                self.add_error("pool", "Choose a storage pool.")
        return data

    def spec(self) -> dict:
        """The disk as ``vm_create`` takes it."""
        data = self.cleaned_data
        if data["source"] == "template":
            return {
                "source_volume": data["volume"],
                "clone": data["clone"] or CloneMode.LINKED,
                "bus": data["bus"],
            }
        return {
            "size_gib": data["size_gib"],
            "pool": data["pool"],
            "format": data["format"] or None,
            "bus": data["bus"],
        }


class NicRowForm(forms.Form):
    network = forms.IntegerField(label="Network")
    model = forms.ChoiceField(choices=NicModel.choices, initial=NicModel.VIRTIO, label="Model")
    mac = forms.CharField(
        required=False,
        max_length=17,
        label="MAC address",
        widget=forms.TextInput(
            attrs={"placeholder": "auto", "spellcheck": "false", "autocomplete": "off"}
        ),
    )

    def spec(self) -> dict:
        data = self.cleaned_data
        return {"network": data["network"], "mac": data["mac"] or None, "model": data["model"]}


def bound_rows(form_class, data, prefix: str) -> list[forms.Form]:
    """The rows of one kind a request carries (``disk-3-pool``...), in index order.

    Rows are numbered by the browser when they are added; removing one leaves a gap, which is
    fine: only the order counts.
    """
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-")
    indexes = sorted({int(m.group(1)) for key in data if (m := pattern.match(key))})
    return [form_class(data, prefix=f"{prefix}-{i}") for i in indexes]


class CreateWizard:
    """The create wizard's form and its disk and NIC rows, and which step shows which error."""

    STEPS = [
        ("general", "General"),
        ("os", "OS"),
        ("disks", "Disks"),
        ("cpu", "CPU"),
        ("memory", "Memory"),
        ("network", "Network"),
        ("confirm", "Confirm"),
    ]
    STEP_OF_FIELD = {
        "name": "general",
        "tenant": "general",
        "host": "general",
        "description": "general",
        "tags": "general",
        "virt_type": "general",
        "cdrom": "os",
        "firmware": "os",
        "machine": "os",
        "boot": "os",
        "disks": "disks",
        "vcpus": "cpu",
        "max_vcpus": "cpu",
        "cpu_model": "cpu",
        "tuning_policy": "cpu",
        "memory_mib": "memory",
        "max_memory_mib": "memory",
        "nics": "network",
    }
    _ROW_ERROR = re.compile(r"^(disks|nics)\[(\d+)\]$")

    def __init__(self, data=None, *, initial=None, disks=None, nics=None):
        self.form = VmCreateForm(data, initial=initial)
        if data is not None:
            self.disks = bound_rows(DiskRowForm, data, "disk")
            self.nics = bound_rows(NicRowForm, data, "nic")
        else:
            self.disks = [
                DiskRowForm(prefix=f"disk-{i}", initial=row) for i, row in enumerate(disks or [])
            ]
            self.nics = [
                NicRowForm(prefix=f"nic-{i}", initial=row) for i, row in enumerate(nics or [])
            ]
        # Messages about a whole step rather than one field (quota, pool space...).
        self.step_errors: dict[str, list[str]] = {}

    def is_valid(self) -> bool:
        valid = self.form.is_valid()
        for row in (*self.disks, *self.nics):
            valid = row.is_valid() and valid
        if len(self.disks) > MAX_DISKS or len(self.nics) > MAX_NICS:
            self.add_step_error("confirm", f"At most {MAX_DISKS} disks and {MAX_NICS} NICs.")
            valid = False
        return valid

    def add_step_error(self, step: str, message) -> None:
        messages = message if isinstance(message, list) else [message]
        self.step_errors.setdefault(step, []).extend(messages)

    def service_kwargs(self) -> dict:
        """Everything ``vm_create`` takes except user, tenant, host and the ISO."""
        data = self.form.cleaned_data
        return {
            "name": data["name"],
            "vcpus": data["vcpus"],
            "memory_mib": data["memory_mib"],
            "max_vcpus": data["max_vcpus"],
            "max_memory_mib": data["max_memory_mib"],
            "firmware": data["firmware"],
            "machine": data["machine"],
            "cpu_model": data["cpu_model"],
            "tuning_policy": data["tuning_policy"] or None,
            "disks": [row.spec() for row in self.disks],
            "nics": [row.spec() for row in self.nics],
            "boot": data["boot"].split(","),
            "autostart": data["autostart"],
            "start": data["start"],
            "description": data["description"],
            "tags": data["tags"],
        }

    def apply_service_errors(self, exc: ValidationError) -> None:
        """Put a ``vm_create`` error where its step shows it: fields, rows or the step's top."""
        if not hasattr(exc, "error_dict"):
            self.add_step_error("confirm", exc.messages)
            return
        for key, errors in exc.error_dict.items():
            messages = list(dict.fromkeys(m for e in errors for m in e.messages))  # once each
            row = self._ROW_ERROR.match(key)
            if row:
                rows = self.disks if row.group(1) == "disks" else self.nics
                index = int(row.group(2))
                if index < len(rows):
                    # At the row's field the service names (the error's code), else the row.
                    for error in errors:
                        part = error.code if error.code in rows[index].fields else None
                        rows[index].add_error(part, error.messages)
                    continue
                key = row.group(1)
            if key in self.form.fields:
                self.form.add_error(key, messages)
            else:
                self.add_step_error(self.STEP_OF_FIELD.get(key, "confirm"), messages)

    def errors_by_step(self) -> dict[str, bool]:
        steps = {step: bool(self.step_errors.get(step)) for step, _label in self.STEPS}
        for name in self.form.errors:
            if name != NON_FIELD_ERRORS:
                steps[self.STEP_OF_FIELD.get(name, "confirm")] = True
        if self.form.non_field_errors():
            steps["confirm"] = True
        steps["disks"] = steps["disks"] or any(row.errors for row in self.disks)
        steps["network"] = steps["network"] or any(row.errors for row in self.nics)
        return steps

    def first_error_step(self) -> str:
        steps = self.errors_by_step()
        return next((step for step, _label in self.STEPS if steps[step]), "general")


# --- lifecycle dialogs ---------------------------------------------------------------------


class ShutdownForm(forms.Form):
    force = forms.BooleanField(
        required=False,
        label="Force stop after the timeout",
        help_text="Pull the plug when the guest has not shut down in time.",
    )
    timeout = forms.IntegerField(
        required=False,
        initial=120,
        label="Timeout (seconds)",
        widget=_number({"min": 5, "max": 3600}),
        help_text="How long to wait for the guest (5-3600 seconds).",
    )


class ConfirmForm(forms.Form):
    """A confirmation without fields: the POST itself is the answer."""


class CloneForm(forms.Form):
    name = forms.CharField(max_length=63, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    mode = forms.ChoiceField(
        choices=[
            (CloneMode.FULL, "Full clone (an independent copy of every disk)"),
            (CloneMode.LINKED, "Linked clone (qcow2 overlays on the template's disks)"),
        ],
        initial=CloneMode.FULL,
        widget=forms.RadioSelect,
    )


class DeleteForm(forms.Form):
    delete_volumes = forms.BooleanField(
        required=False,
        label="Also delete its volumes",
        help_text="Destroys the disk images Paddock created for this VM. Without this, they stay "
        "in their pools.",
    )


class VmResourcesForm(forms.Form):
    """Hardware the host must change: name, vCPUs, memory, autostart."""

    name = forms.CharField(max_length=63, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    vcpus = forms.IntegerField(label="vCPUs", widget=_number({"min": 1}))
    memory_mib = forms.IntegerField(label="Memory (MiB)", widget=_number({"min": 64, "step": 1}))
    autostart = forms.BooleanField(required=False, label="Start at host boot")


class DiskAddForm(forms.Form):
    source = forms.ChoiceField(
        choices=[("new", "New volume"), ("existing", "Existing volume")],
        initial="new",
        widget=forms.RadioSelect,
    )
    size_gib = forms.FloatField(
        required=False, initial=16, label="Size (GiB)", widget=_number({"min": 0.1, "step": "any"})
    )
    pool = forms.TypedChoiceField(coerce=int, required=False, label="Storage")
    format = forms.ChoiceField(choices=DiskFormat.choices, initial=DiskFormat.QCOW2, required=False)
    volume = forms.TypedChoiceField(coerce=int, required=False, label="Volume")
    bus = forms.ChoiceField(choices=DiskBus.choices, initial=DiskBus.VIRTIO)

    def __init__(self, *args, pools=(), volumes=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["pool"].choices = [("", "—"), *pools]
        self.fields["volume"].choices = [("", "—"), *volumes]

    def clean(self):
        data = super().clean()
        if data.get("source") == "existing":
            if not data.get("volume"):
                self.add_error("volume", "Choose a volume.")
        else:
            if data.get("size_gib") is None and "size_gib" not in self.errors:
                self.add_error("size_gib", "How many GiB?")
            if not data.get("pool"):
                self.add_error("pool", "Choose a storage pool.")
        return data

    def service_kwargs(self) -> dict:
        data = self.cleaned_data
        if data["source"] == "existing":
            return {"volume": data["volume"], "bus": data["bus"]}
        return {
            "size_gib": data["size_gib"],
            "pool": data["pool"],
            "format": data["format"] or None,
            "bus": data["bus"],
        }


class DiskRemoveForm(forms.Form):
    delete_volume = forms.BooleanField(
        required=False,
        label="Also delete the volume",
        help_text="Destroys the disk image in its pool. Without this, the volume stays and can be "
        "attached again.",
    )


class DiskGrowForm(forms.Form):
    size_gib = forms.FloatField(
        label="New size (GiB)",
        widget=_number({"min": 0.1, "step": "any"}),
        help_text="Disks only grow: shrinking would destroy the data past the new end.",
    )


class CdromForm(forms.Form):
    volume = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="ISO image")

    def __init__(self, *args, isos=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["volume"].choices = [("", "No media (eject)"), *isos]


class NicAddForm(forms.Form):
    network = forms.TypedChoiceField(coerce=int, label="Network")
    model = forms.ChoiceField(choices=NicModel.choices, initial=NicModel.VIRTIO)
    mac = forms.CharField(
        required=False,
        max_length=17,
        label="MAC address",
        widget=forms.TextInput(attrs={"placeholder": "auto", "spellcheck": "false"}),
    )

    def __init__(self, *args, networks=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["network"].choices = list(networks)


class SnapshotForm(forms.Form):
    name = forms.CharField(
        max_length=63, widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )
    description = forms.CharField(
        max_length=200, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


# --- edit ----------------------------------------------------------------------------------


class VmEditForm(forms.Form):
    description = forms.CharField(max_length=200, required=False)
    tags = TagsField()
    tenant = forms.ModelChoiceField(queryset=None, required=False, empty_label=None)

    def __init__(self, *args, tenants=None, **kwargs):
        super().__init__(*args, **kwargs)
        if tenants is None:
            # Only platform admins move VMs between tenants.
            del self.fields["tenant"]
        else:
            self.fields["tenant"].queryset = tenants
            self.fields["tenant"].required = True
