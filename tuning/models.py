"""Tuning policies (named, versioned), what each VM was tuned with, and the per-host ledger.

The ledger is what a host has promised to VMs: dedicated pCPUs (one row per pCPU, unique per
host, so two VMs can never hold the same one) and hugepages per NUMA node and size (a counter
per node and size whose ``allocated`` can never pass ``capacity``, a database CHECK). Rows are
written in the same transaction as the VM or task they serve, and released when the VM goes
or the task that asked for them fails.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.urls import reverse

from panel.validators import validate_name


class TuningPolicy(models.Model):
    """A named set of knobs (``tuning.knobs``), owned by the platform (no tenant) or a tenant.

    Editing the knobs makes a new :class:`TuningPolicyVersion`; ``version`` is the current one.
    Built-in profiles (``builtin``) belong to the platform and are copied, never edited.
    """

    name = models.CharField(max_length=63, validators=[validate_name])
    tenant = models.ForeignKey(
        "panel.Tenant",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="tuning_policies",
        help_text="Empty: a platform policy every tenant may use.",
    )
    description = models.CharField(max_length=200, blank=True)
    builtin = models.BooleanField(default=False)
    version = models.PositiveIntegerField(default=1)
    #: the current version's knobs, cleaned (``tuning.knobs.clean``): every group present
    knobs = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name_plural = "tuning policies"
        constraints = [
            models.UniqueConstraint(
                fields=["name"],
                condition=Q(tenant__isnull=True),
                name="tuning_policy_unique_platform_name",
                violation_error_message="A platform policy with this name exists.",
            ),
            models.UniqueConstraint(
                fields=["tenant", "name"],
                name="tuning_policy_unique_tenant_name",
                violation_error_message="This tenant has a policy with this name.",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("ui:tuning-policy", args=[self.pk])


class TuningPolicyVersion(models.Model):
    """One version of a policy's knobs, kept so a VM can say what it was tuned with."""

    policy = models.ForeignKey(TuningPolicy, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    knobs = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["policy", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "version"], name="tuning_policy_version_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.version}"


class TenantTuningDefault(models.Model):
    """The policy a tenant's VMs get when neither the VM, its flavor nor its template names one."""

    tenant = models.OneToOneField(
        "panel.Tenant", on_delete=models.CASCADE, related_name="tuning_default"
    )
    policy = models.ForeignKey(TuningPolicy, on_delete=models.PROTECT, related_name="+")

    def __str__(self) -> str:
        return f"{self.tenant} -> {self.policy}"


class VmTuning(models.Model):
    """A VM's (or template's) tuning: the policy attached, the plan last applied, and drift.

    ``policy`` is what is attached (None: inherit the template's, then the tenant default);
    ``applied_version`` and ``plan`` are what was last applied (the compiled ``TuningPlan`` as
    JSON: the expected state the drift check compares the live domain with).
    """

    vm = models.OneToOneField("vms.VirtualMachine", on_delete=models.CASCADE, related_name="tuning")
    policy = models.ForeignKey(
        TuningPolicy, null=True, blank=True, on_delete=models.PROTECT, related_name="vm_tunings"
    )
    applied_version = models.ForeignKey(
        TuningPolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    plan = models.JSONField(default=dict, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    applied_task = models.ForeignKey(
        "panel.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    #: why the running guest does not have the applied plan yet (empty: it does)
    restart_needed = models.JSONField(default=list, blank=True)
    drift = models.BooleanField(default=False, db_index=True)
    #: [{"what": "vcpupin 0", "expected": "1", "actual": "0"}]
    drift_details = models.JSONField(default=list, blank=True)
    drift_checked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"tuning of {self.vm_id}"


# --- the ledger ---------------------------------------------------------------------------------


class DedicatedCpu(models.Model):
    """A host pCPU promised to one VM (a vCPU's pin, an isolated emulator thread, or the idle
    sibling of a ``dedicated-isolate-siblings`` vCPU). Unique per host: never two VMs."""

    class Use(models.TextChoices):
        VCPU = "vcpu", "vCPU"
        EMULATOR = "emulator", "emulator threads"
        IOTHREAD = "iothread", "I/O thread"
        SIBLING = "sibling", "kept idle (sibling)"

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="dedicated_cpus")
    cpu = models.PositiveIntegerField()
    node = models.PositiveIntegerField(default=0)
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.CASCADE, related_name="dedicated_cpus"
    )
    use = models.CharField(max_length=16, choices=Use.choices, default=Use.VCPU)
    #: the vCPU (or iothread) id it serves, when it serves one
    serves = models.PositiveIntegerField(null=True, blank=True)
    #: the task that asked for it: released when that task fails before it is applied
    task = models.ForeignKey(
        "panel.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["host", "cpu"]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "cpu"],
                name="dedicated_cpu_unique_host_cpu",
                violation_error_message="This pCPU is already dedicated to a VM.",
            )
        ]

    def __str__(self) -> str:
        return f"cpu {self.cpu}@{self.host_id} -> vm {self.vm_id}"


class HugepagePool(models.Model):
    """Hugepages of one size on one NUMA node of a host: how many the ledger may promise
    (``capacity``: what the node can hold for guests) and how many it has (``allocated``).
    The CHECK keeps ``0 <= allocated <= capacity`` in the database itself."""

    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="hugepage_pools")
    node = models.PositiveIntegerField()
    size_kib = models.PositiveIntegerField()
    capacity = models.PositiveIntegerField(default=0)
    allocated = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["host", "node", "size_kib"]
        constraints = [
            models.UniqueConstraint(
                fields=["host", "node", "size_kib"], name="hugepage_pool_unique_node_size"
            ),
            models.CheckConstraint(
                condition=Q(allocated__lte=F("capacity")),
                name="hugepage_pool_within_capacity",
                violation_error_message="A NUMA node cannot promise more hugepages than it has.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.allocated}/{self.capacity} x {self.size_kib} KiB on node {self.node}"

    @property
    def free(self) -> int:
        return self.capacity - self.allocated


class HugepageAllocation(models.Model):
    """Hugepages promised to one VM from one pool (one row per VM and pool)."""

    pool = models.ForeignKey(HugepagePool, on_delete=models.CASCADE, related_name="allocations")
    vm = models.ForeignKey(
        "vms.VirtualMachine", on_delete=models.CASCADE, related_name="hugepage_allocations"
    )
    pages = models.PositiveIntegerField()
    task = models.ForeignKey(
        "panel.Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["pool", "vm"]
        constraints = [
            models.UniqueConstraint(fields=["pool", "vm"], name="hugepage_allocation_unique"),
            models.CheckConstraint(condition=Q(pages__gt=0), name="hugepage_allocation_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.pages} pages of {self.pool}"
