"""What ``tuning`` hands to the rooms below it, called once from ``TuningConfig.ready()``:

* ``vms.hooks``: a create with a tuning policy (``tuning.create``), a ``vm.tune`` task ended (record the applied plan, or release what the task
  was promised), a VM's resources are free (gone), domains were read (the drift check);
* a ``pre_delete`` receiver on VMs: a deleted VM gives back its ledger rows (the hugepage
  counters are not a cascade);
* the ``vms.domxml`` contributor that tunes a new VM's build (``DomainBuild.tuning``);
* ``post_migrate``: the built-in profiles exist after every migrate;
* ``metrics.views``: drift, restart-needed, dedicated pCPUs and promised hugepages on ``/metrics``.
"""

from __future__ import annotations

from django.apps import apps
from django.db import transaction
from django.db.models.signals import post_migrate, pre_delete
from django.utils import timezone

from metrics.views import register_exporter
from panel import events
from vms import domxml, hooks
from vms.models import VirtualMachine

from . import create, domain, drift, exporters, ledger, profiles, services
from .models import VmTuning


def on_released(vm, reason: str) -> None:
    ledger.release(vm)


def _on_vm_deleted(sender, instance, **kwargs) -> None:
    ledger.release(instance)


#: what a running guest takes only by restarting: while a restart is pending, not drift (a
#: restart is seen as the domain's new id, a stop, or a "started" event)
RESTART_PARTS = ("numatune", "hugepages")


def on_observed(pairs: list, event: str) -> None:
    """Compare each tuned VM's live domain with its applied plan; flag and publish changes."""
    by_id = {vm.pk: (vm, xml) for vm, xml in pairs if vm.pk is not None}
    if not by_id:
        return
    rows = VmTuning.objects.filter(vm_id__in=list(by_id)).exclude(plan={})
    now = timezone.now()
    for row in rows:
        vm, xml = by_id[row.vm_id]
        if vm.lock_id is not None:
            continue  # a task is changing this VM: it re-reads and decides when done
        domain = row.plan.get("domain") or {}
        details = drift.compare(domain, xml)
        fields = {"drift_checked_at": now}
        if row.restart_needed:
            tuned_id, running_id = row.plan.get("domain_id"), domxml.domain_id(xml)
            restarted = (
                vm.state == "shutoff"  # it starts from the tuned definition
                or event == "started"
                or bool(tuned_id and running_id and running_id != tuned_id)
            )
            if restarted:
                fields["restart_needed"] = []
            else:  # the guest has not restarted into the plan yet: what waits is not drift
                details = [d for d in details if not d["what"].startswith(RESTART_PARTS)]
        changed = bool(details) != row.drift or details != row.drift_details
        if changed:
            fields.update(drift=bool(details), drift_details=details)
        VmTuning.objects.filter(pk=row.pk).update(**fields)
        if changed:
            message = {
                "type": "tuning.drift", "id": vm.pk, "name": vm.name, "drift": bool(details),
                "details": details[:20], "event": event,
            }  # fmt: skip
            transaction.on_commit(
                lambda m=message, v=vm: events.send_on_commit(events.groups_for_vm(v), m)
            )


def _builtins(sender, using="default", **kwargs) -> None:
    """After every migrate (and a test database's flush): the built-in profiles exist."""
    if using == "default":
        profiles.ensure_builtins()


def register() -> None:
    hooks.register_tuned(services.on_tuned)
    hooks.register_create_extension(create.TuningCreate())
    hooks.register_released(on_released)
    hooks.register_observed(on_observed)
    register_exporter(exporters.lines)
    pre_delete.connect(_on_vm_deleted, sender=VirtualMachine, dispatch_uid="tuning-ledger-release")
    domxml.register_contributor(domain.contribute)
    post_migrate.connect(
        _builtins, sender=apps.get_app_config("tuning"), dispatch_uid="tuning-builtins"
    )
