"""Inventory of hypervisor hosts and what they hold besides VMs: storage pools, volumes, networks."""

from __future__ import annotations

from django.db import models
from django.urls import reverse

from panel.validators import validate_name, validate_tags

from .choices import ForwardMode, HostStatus, PoolState, PoolType

# An installer or seed image: a CD-ROM's medium, never a disk.
ISO_Q = models.Q(format="iso") | models.Q(name__iendswith=".iso")


class GoneQuerySet(models.QuerySet):
    """Objects that vanished from their host stay, marked gone, with their history."""

    def present(self):
        return self.filter(gone=False)


class Host(models.Model):
    name = models.CharField(max_length=63, unique=True, validators=[validate_name])
    uri = models.CharField(max_length=500, unique=True)
    description = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])

    # SSH endpoint for qemu+ssh hosts, with the host key pinned when the host was added.
    ssh_address = models.CharField(max_length=255, blank=True)
    ssh_port = models.PositiveIntegerField(null=True, blank=True)
    ssh_user = models.CharField(max_length=64, blank=True)
    ssh_host_key = models.TextField(blank=True)

    status = models.CharField(
        max_length=16, choices=HostStatus.choices, default=HostStatus.NEW, db_index=True
    )
    last_error = models.TextField(blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_synced = models.DateTimeField(null=True, blank=True)

    # A test-driver host: its topology comes from a shipped fixture and its metrics from a
    # simulator, and the UI says so.
    simulated = models.BooleanField(default=False)

    # Capabilities, parsed.
    hostname = models.CharField(max_length=255, blank=True)
    hypervisor = models.CharField(max_length=32, blank=True)
    hypervisor_version = models.CharField(max_length=32, blank=True)
    libvirt_version = models.CharField(max_length=32, blank=True)
    arch = models.CharField(max_length=32, blank=True)
    cpu_model = models.CharField(max_length=100, blank=True)
    cpu_vendor = models.CharField(max_length=64, blank=True)
    cpu_mhz = models.PositiveIntegerField(null=True, blank=True)
    sockets = models.PositiveIntegerField(null=True, blank=True)
    cores = models.PositiveIntegerField(null=True, blank=True, help_text="Cores per socket")
    threads = models.PositiveIntegerField(null=True, blank=True, help_text="Threads per core")
    cpus = models.PositiveIntegerField(null=True, blank=True, help_text="Logical CPUs")
    memory_mib = models.PositiveBigIntegerField(null=True, blank=True)
    # [{"id": 0, "cpus": [0, 1], "memory_mib": 1024,
    #   "hugepages": [{"size_kib": 2048, "total": 0, "free": 0}], "distances": {"0": 10}}]
    numa_cells = models.JSONField(default=list, blank=True)
    # The pCPUs kept for the host itself and for emulator threads that share: never dedicated
    # to a VM. Empty: the first core of each NUMA node with its siblings (``tuning.topology``).
    housekeeping_cpus = models.JSONField(default=list, blank=True)
    virt_types = models.JSONField(default=list, blank=True, help_text="e.g. ['kvm', 'qemu']")
    # From the domain capabilities of the preferred virt type: machine types, named CPU
    # models that can run here, and whether UEFI (OVMF) firmware is available.
    machine_types = models.JSONField(default=list, blank=True)
    cpu_models = models.JSONField(default=list, blank=True)
    uefi_loader = models.CharField(max_length=255, blank=True)
    # Why libvirt lists kvm but QEMU cannot use it here (guests then run under TCG), or "".
    kvm_note = models.CharField(max_length=500, blank=True)

    lock = models.ForeignKey(
        "panel.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("ui:host", args=[self.pk])

    @property
    def numa_count(self) -> int:
        return len(self.numa_cells)


class StoragePool(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="pools")
    name = models.CharField(max_length=255)
    uuid = models.CharField(max_length=36, blank=True)
    pool_type = models.CharField(max_length=16, choices=PoolType.choices, default=PoolType.DIR)
    path = models.CharField(max_length=1024, blank=True)
    source_name = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=PoolState.choices, default=PoolState.ACTIVE)
    autostart = models.BooleanField(default=False)
    capacity = models.PositiveBigIntegerField(default=0, help_text="bytes")
    allocation = models.PositiveBigIntegerField(default=0, help_text="bytes")
    available = models.PositiveBigIntegerField(default=0, help_text="bytes")
    description = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])
    gone = models.BooleanField(default=False, db_index=True)
    gone_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = GoneQuerySet.as_manager()

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "name"], name="pool_unique_host_name")
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}" if self.host_id else self.name

    @property
    def used_percent(self) -> float:
        return round(100.0 * self.allocation / self.capacity, 1) if self.capacity else 0.0


class Volume(models.Model):
    pool = models.ForeignKey(StoragePool, on_delete=models.CASCADE, related_name="volumes")
    name = models.CharField(max_length=255)
    key = models.CharField(max_length=1024, blank=True)
    path = models.CharField(max_length=1024, blank=True, db_index=True)
    vol_type = models.CharField(max_length=16, blank=True)
    format = models.CharField(max_length=16, blank=True)
    capacity = models.PositiveBigIntegerField(default=0, help_text="bytes")
    allocation = models.PositiveBigIntegerField(default=0, help_text="bytes")
    backing_path = models.CharField(max_length=1024, blank=True)
    backing_depth = models.PositiveSmallIntegerField(
        default=1, help_text="Images in the chain, this one included"
    )
    lock = models.ForeignKey(
        "panel.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Whose data this volume holds: the tenant whose VM it was made for or is a disk of (empty:
    # the platform's). Only the owner may attach it read-write.
    tenant = models.ForeignKey(
        "panel.Tenant", null=True, blank=True, on_delete=models.SET_NULL, related_name="volumes"
    )
    # An image offered read-only (CD-ROM, clone source, backing file): to every tenant when it
    # has no owner, else to its owner's tenant only.
    published = models.BooleanField(default=False)
    description = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])
    gone = models.BooleanField(default=False, db_index=True)
    gone_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = GoneQuerySet.as_manager()

    class Meta:
        ordering = ["pool__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "name"], name="volume_unique_pool_name")
        ]

    def __str__(self) -> str:
        return self.name


class Network(models.Model):
    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="networks")
    name = models.CharField(max_length=255)
    uuid = models.CharField(max_length=36, blank=True)
    forward_mode = models.CharField(
        max_length=16, choices=ForwardMode.choices, default=ForwardMode.ISOLATED
    )
    bridge = models.CharField(max_length=64, blank=True)
    ip_address = models.CharField(max_length=64, blank=True)
    ip_prefix = models.PositiveSmallIntegerField(null=True, blank=True)
    active = models.BooleanField(default=True)
    autostart = models.BooleanField(default=False)
    persistent = models.BooleanField(default=True)
    description = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True, validators=[validate_tags])
    gone = models.BooleanField(default=False, db_index=True)
    gone_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)

    objects = GoneQuerySet.as_manager()

    class Meta:
        ordering = ["host__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["host", "name"], name="network_unique_host_name")
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.host.name}" if self.host_id else self.name
