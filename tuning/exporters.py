"""Tuning's families on ``/metrics`` (registered with ``metrics.views.register_exporter``):

* ``paddock_vm_tuning_drift`` — 1 when a tuned VM's live domain differs from its applied plan;
* ``paddock_vm_tuning_restart_needed`` — 1 while a tuned VM waits for a restart;
* ``paddock_host_dedicated_cpus`` — pCPUs the ledger holds for VMs, per host;
* ``paddock_host_hugepages_promised`` — hugepages promised per host, node and page size.
"""

from __future__ import annotations

from django.db.models import Count

from .models import DedicatedCpu, HugepagePool, VmTuning


def lines(label) -> list[str]:
    out: list[str] = []
    drift, restart = [], []
    rows = VmTuning.objects.filter(applied_at__isnull=False, vm__gone=False).values_list(
        "vm__name", "vm__uuid", "vm__host__name", "vm__tenant__name", "drift", "restart_needed"
    )
    for name, uuid, host, tenant, drifted, needed in rows.iterator(chunk_size=5000):
        labels = f'vm="{label(name)}",uuid="{uuid}",host="{label(host)}",tenant="{label(tenant)}"'
        drift.append(f"paddock_vm_tuning_drift{{{labels}}} {1 if drifted else 0}")
        restart.append(f"paddock_vm_tuning_restart_needed{{{labels}}} {1 if needed else 0}")
    for metric, help_text, values in (
        ("paddock_vm_tuning_drift", "The VM's live tuning differs from what was applied", drift),
        ("paddock_vm_tuning_restart_needed", "The VM must restart to take its tuning", restart),
    ):
        if values:
            out += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *sorted(values)]
    held = (
        DedicatedCpu.objects.values_list("host__name")
        .annotate(n=Count("pk"))
        .order_by("host__name")
    )
    if held:
        out += ["# HELP paddock_host_dedicated_cpus pCPUs dedicated to VMs",
                "# TYPE paddock_host_dedicated_cpus gauge"]  # fmt: skip
        out += [f'paddock_host_dedicated_cpus{{host="{label(h)}"}} {n}' for h, n in held]
    pools = HugepagePool.objects.filter(allocated__gt=0).values_list(
        "host__name", "node", "size_kib", "allocated"
    )
    if pools:
        out += ["# HELP paddock_host_hugepages_promised Hugepages promised to VMs",
                "# TYPE paddock_host_hugepages_promised gauge"]  # fmt: skip
        out += [
            f'paddock_host_hugepages_promised{{host="{label(h)}",node="{node}",size_kib="{size}"}} '
            f"{allocated}"
            for h, node, size, allocated in pools.order_by("host__name", "node", "size_kib")
        ]
    return out
