"""Inventory of virtual machines, their disks and NICs, as libvirt reports them."""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from hosts.models import GoneQuerySet
from panel.validators import validate_name, validate_tags

from .choices import DiskDevice, Firmware, Lifecycle, VMState


class VirtualMachine(models.Model):
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="vms")
    tenant = models.ForeignKey("panel.Tenant", on_delete=models.PROTECT, related_name="vms")
    # The rule the services apply to names Paddock gives. A domain imported from a host keeps
    # the name libvirt has (rows written from libvirt are not cleaned), until it is renamed.
    name = models.CharField(max_length=255, db_index=True, validators=[validate_name])
    # A VM is its UUID across every host: a domain that appears on another host is this VM
    # having moved there (``vms.sync``), never a second VM.
    uuid = models.UUIDField()
    description = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])

    # Observed state is what libvirt last said; desired state is what was last asked, by Paddock
    # or by whoever changed the domain on the host.
    state = models.CharField(
        max_length=16, choices=VMState.choices, default=VMState.UNKNOWN, db_index=True
    )
    state_reason = models.CharField(max_length=64, blank=True)
    desired_state = models.CharField(max_length=16, choices=VMState.choices, blank=True)

    vcpus = models.PositiveIntegerField(default=1)
    max_vcpus = models.PositiveIntegerField(default=1)
    memory_mib = models.PositiveIntegerField(default=0)
    max_memory_mib = models.PositiveIntegerField(default=0)
    virt_type = models.CharField(max_length=16, blank=True, help_text="kvm, qemu or test")
    os_type = models.CharField(max_length=16, blank=True)
    arch = models.CharField(max_length=16, blank=True)
    machine = models.CharField(max_length=64, blank=True)
    firmware = models.CharField(max_length=8, choices=Firmware.choices, default=Firmware.BIOS)
    cpu_mode = models.CharField(max_length=32, blank=True)
    cpu_model = models.CharField(max_length=64, blank=True)
    boot_devices = models.JSONField(default=list, blank=True)
    vnc_port = models.IntegerField(null=True, blank=True)
    autostart = models.BooleanField(default=False)
    persistent = models.BooleanField(default=True)
    is_template = models.BooleanField(default=False)
    # vCPUs were hot-plugged since the guest started: QEMU cannot restore a memory snapshot
    # of it. Cleared whenever the VM is seen shut off.
    vcpus_hotplugged = models.BooleanField(default=False)
    # The domain XML as Paddock last read it (watcher, sync, reconcile): what a tuning plan is
    # shown against before it is applied, without asking the host.
    definition = models.TextField(blank=True)
    lifecycle = models.CharField(
        max_length=16, choices=Lifecycle.choices, default=Lifecycle.READY, db_index=True
    )
    # The template this VM was created or cloned from (linked clones depend on its volumes).
    source_template = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="clones"
    )

    gone = models.BooleanField(default=False, db_index=True)
    gone_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    lock = models.ForeignKey(
        "panel.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    # Free-form Markdown the operators keep on the VM (the service caps it at NOTES_MAX_LENGTH).
    notes = models.TextField(blank=True)

    # The last sample the metrics collector took of the VM, written to the row (one bulk update
    # per host and interval) so the grid sorts by them in the database.
    cpu_percent = models.FloatField(null=True, blank=True)
    memory_percent = models.FloatField(null=True, blank=True)
    # The guest's addresses as its QEMU guest agent reports them (loopback left out).
    ip_addresses = models.JSONField(default=list, blank=True)
    sampled_at = models.DateTimeField(null=True, blank=True)
    # When the VM was first seen running since it was last seen stopped (uptime); null when not
    # running. Written by vms.sync.observe.
    started_at = models.DateTimeField(null=True, blank=True)

    objects = GoneQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]
        verbose_name = "virtual machine"
        indexes = [
            # Placement sums each host's committed memory: an index-only scan on PostgreSQL.
            models.Index(
                fields=["host"],
                include=["memory_mib"],
                condition=models.Q(gone=False),
                name="vm_host_memory_live",
            ),
            # The UI's counts (VMs per tenant and state, vCPUs and memory of the running ones)
            # are one grouped query: an index-only scan on PostgreSQL.
            models.Index(
                fields=["tenant", "state"],
                include=["vcpus", "memory_mib"],
                condition=models.Q(gone=False),
                name="vm_counts",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["uuid"],
                name="vm_unique_uuid",
                violation_error_message="A virtual machine with this UUID already exists.",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("ui:vm", args=[self.pk])


class Disk(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="disks")
    target = models.CharField(max_length=16, help_text="Guest device name, e.g. vda")
    bus = models.CharField(max_length=16, blank=True)
    device = models.CharField(max_length=8, choices=DiskDevice.choices, default=DiskDevice.DISK)
    source_type = models.CharField(max_length=16, blank=True)
    source = models.CharField(max_length=1024, blank=True)
    volume = models.ForeignKey(
        "hosts.Volume", null=True, blank=True, on_delete=models.SET_NULL, related_name="disks"
    )
    format = models.CharField(max_length=16, blank=True)
    cache = models.CharField(max_length=16, blank=True)
    io = models.CharField(max_length=16, blank=True)
    readonly = models.BooleanField(default=False)
    boot_order = models.PositiveSmallIntegerField(null=True, blank=True)
    # Paddock created this volume for this VM: deleting the VM may delete it.
    owned = models.BooleanField(default=False)

    class Meta:
        ordering = ["vm", "target"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "target"], name="disk_unique_vm_target")
        ]

    def __str__(self) -> str:
        return f"{self.target} ({self.source or 'empty'})"


class Nic(models.Model):
    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="nics")
    mac = models.CharField(max_length=17, db_index=True)
    model = models.CharField(max_length=32, blank=True)
    source_type = models.CharField(max_length=16, blank=True, help_text="network, bridge, direct")
    source = models.CharField(max_length=255, blank=True)
    network = models.ForeignKey(
        "hosts.Network", null=True, blank=True, on_delete=models.SET_NULL, related_name="nics"
    )
    target_dev = models.CharField(max_length=32, blank=True)
    vlan = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["vm", "id"]

    def __str__(self) -> str:
        return self.mac


class Snapshot(models.Model):
    """An internal snapshot of a VM, mirrored from libvirt (a tree by parent name)."""

    vm = models.ForeignKey(VirtualMachine, on_delete=models.CASCADE, related_name="snapshots")
    name = models.CharField(max_length=63)
    parent_name = models.CharField(max_length=63, blank=True)
    description = models.CharField(max_length=200, blank=True)
    vm_state = models.CharField(max_length=16, blank=True, help_text="VM state when taken")
    has_memory = models.BooleanField(default=False)
    is_current = models.BooleanField(default=False)
    created = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vm", "created", "name"]
        constraints = [
            models.UniqueConstraint(fields=["vm", "name"], name="snapshot_unique_vm_name")
        ]

    def __str__(self) -> str:
        return self.name


from .console_models import ConsoleKind, ConsoleTicket  # noqa: E402,F401
