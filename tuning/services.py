"""Tuning's writes and its answers: policies, fit reports, plans, apply, status.

The UI and the API call only these. Each validates (400 with the knob's dotted name), checks
the user's role in the object's tenant (another tenant's objects are 404 before they reach
here), and for an apply compiles the plan against the VM's host and ledger, promises the
ledger rows and writes the ``vm.tune`` task in one transaction; a policy that does not fit is
refused with its fit report (409) and nothing is changed.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from hosts.choices import HostStatus
from hosts.models import Host
from hosts.selectors import hosts_for
from panel import events, taskrunner
from panel.models import Task, Tenant
from panel.tenancy import Action, can, is_platform_admin
from panel.tenancy import tenant_ids as tenant_ids_for
from vms.choices import Lifecycle
from vms.models import VirtualMachine

from . import advisor, ledger, profiles, proof, topology
from .compiler import NoFit, compile, ledger_free_pages
from .knobs import clean
from .models import (
    DedicatedCpu,
    HugepageAllocation,
    TenantTuningDefault,
    TuningPolicy,
    TuningPolicyVersion,
    VmTuning,
)
from .plan import TuningPlan
from .topology import HostTopology, VmFacts


class FitRefused(Exception):
    """The policy does not fit; ``report`` is the fit report (the API answers 409 with it)."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# --- who may ----------------------------------------------------------------------------------


def policies_for(user):
    """The policies a user may see and use: the platform's, and their tenants'."""
    qs = TuningPolicy.objects.all()
    if is_platform_admin(user):
        return qs
    return qs.filter(Q(tenant__isnull=True) | Q(tenant_id__in=_tenant_ids(user)))


def _tenant_ids(user) -> list[int]:
    return tenant_ids_for(user, Action.TENANT_VIEW)


def may_manage(user, tenant_id: int | None) -> bool:
    """Whether ``user`` manages the policies of ``tenant_id`` (None: the platform's)."""
    if tenant_id is None:
        return is_platform_admin(user)
    return can(user, Action.MEMBERSHIP_MANAGE, tenant_id)


def _require_manage(user, tenant_id: int | None) -> None:
    if not may_manage(user, tenant_id):
        raise PermissionDenied(
            "Only platform admins manage platform policies."
            if tenant_id is None
            else "Only the tenant's admins manage its policies."
        )


def _require_vm_change(user, vm: VirtualMachine) -> None:
    if not can(user, Action.VM_CHANGE, vm.tenant_id):
        raise PermissionDenied("Your role may not change this VM's tuning.")


def usable(policy: TuningPolicy, tenant_id: int) -> None:
    if policy.tenant_id is not None and policy.tenant_id != tenant_id:
        raise ValidationError({"policy": "Unknown policy."})


# --- policies ---------------------------------------------------------------------------------


def resolve_policy(user, value) -> TuningPolicy:
    """A policy by id or name among those the user may use; 400 on anything else."""
    if isinstance(value, TuningPolicy):
        return value
    qs = policies_for(user)
    policy = None
    if isinstance(value, int) and not isinstance(value, bool):
        policy = qs.filter(pk=value).first()
    elif isinstance(value, str) and value.strip():
        name = value.strip()
        policy = qs.filter(pk=int(name)).first() if name.isdigit() else None
        policy = policy or qs.filter(name=name).order_by("tenant_id").first()
    if policy is None:
        raise ValidationError({"policy": f"Unknown policy {value!r}."})
    return policy


def create_policy(user, *, name, knobs, tenant=None, description="") -> TuningPolicy:
    tenant_id = tenant.pk if isinstance(tenant, Tenant) else tenant
    _require_manage(user, tenant_id)
    cleaned = clean(knobs)
    policy = TuningPolicy(
        name=name or "", tenant_id=tenant_id, description=description or "", knobs=cleaned
    )
    try:
        policy.full_clean(exclude=["knobs"])
    except ValidationError as exc:
        raise ValidationError(exc.message_dict) from None
    try:
        with transaction.atomic():
            policy.save()
            TuningPolicyVersion.objects.create(
                policy=policy, version=1, knobs=cleaned, created_by=_user(user)
            )
    except IntegrityError:
        raise ValidationError({"name": f"A policy named {name} exists."}) from None
    return policy


def _user(user):
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def update_policy(user, policy, *, knobs=None, description=None, name=None) -> TuningPolicy:
    _require_manage(user, policy.tenant_id)
    if policy.builtin:
        raise ValidationError({"policy": "Built-in profiles are not edited: copy one instead."})
    fields = []
    if name is not None and name != policy.name:
        policy.name = name
        fields.append("name")
    if description is not None:
        policy.description = description
        fields.append("description")
    if knobs is not None:
        cleaned = clean(knobs)
        if cleaned != policy.knobs:
            policy.knobs = cleaned
            policy.version += 1
            fields += ["knobs", "version"]
    if not fields:
        return policy
    try:
        policy.full_clean(exclude=["knobs"])
    except ValidationError as exc:
        raise ValidationError(exc.message_dict) from None
    try:
        with transaction.atomic():
            policy.save(update_fields=[*fields, "updated"])
            if "version" in fields:
                TuningPolicyVersion.objects.create(
                    policy=policy, version=policy.version, knobs=policy.knobs,
                    created_by=_user(user),
                )  # fmt: skip
    except IntegrityError:
        raise ValidationError({"name": f"A policy named {name} exists."}) from None
    return policy


def copy_policy(user, policy, *, name, tenant=None) -> TuningPolicy:
    return create_policy(
        user, name=name, knobs=policy.knobs, tenant=tenant,
        description=f"Copy of {policy.name}: {policy.description}"[:200],
    )  # fmt: skip


def delete_policy(user, policy) -> None:
    _require_manage(user, policy.tenant_id)
    if policy.builtin:
        raise ValidationError({"policy": "Built-in profiles cannot be deleted."})
    if (
        VmTuning.objects.filter(policy=policy).exists()
        or TenantTuningDefault.objects.filter(policy=policy).exists()
    ):
        raise ValidationError(
            {"policy": "The policy is attached to VMs or a tenant: detach it first."}
        )
    policy.delete()


def tenant_default(tenant) -> TuningPolicy | None:
    row = TenantTuningDefault.objects.filter(tenant=tenant).select_related("policy").first()
    return row.policy if row else None


def set_tenant_default(user, tenant, policy) -> None:
    _require_manage(user, tenant.pk)
    if policy is None:
        TenantTuningDefault.objects.filter(tenant=tenant).delete()
        return
    policy = resolve_policy(user, policy)
    usable(policy, tenant.pk)
    TenantTuningDefault.objects.update_or_create(tenant=tenant, defaults={"policy": policy})


def balanced() -> TuningPolicy:
    found = TuningPolicy.objects.filter(name="balanced", tenant__isnull=True).first()
    return found or profiles.ensure_builtins()["balanced"]


def effective_policy(vm) -> TuningPolicy:
    """VM > template > tenant default > balanced."""
    own = VmTuning.objects.filter(vm=vm).select_related("policy").first()
    if own and own.policy:
        return own.policy
    if vm.source_template_id:
        tpl = VmTuning.objects.filter(vm_id=vm.source_template_id).select_related("policy").first()
        if tpl and tpl.policy:
            return tpl.policy
    default = (
        TenantTuningDefault.objects.filter(tenant_id=vm.tenant_id).select_related("policy").first()
    )
    return default.policy if default else balanced()


def attach_policy(user, vm, policy) -> VmTuning:
    _require_vm_change(user, vm)
    if policy is not None:
        policy = resolve_policy(user, policy)
        usable(policy, vm.tenant_id)
    tuning, _ = VmTuning.objects.get_or_create(vm=vm)
    tuning.policy = policy
    tuning.save(update_fields=["policy"])
    return tuning


# --- fit --------------------------------------------------------------------------------------


class _QuotaUse:
    """What a tenant holds against its tuning quotas (read once per report, when needed)."""

    def __init__(self, tenant: Tenant | None, vm_id: int | None):
        self.tenant, self.vm_id = tenant, vm_id
        self._cpus: int | None = None
        self._mib: int | None = None

    @property
    def cpus(self) -> int:
        if self._cpus is None:
            self._cpus = (
                DedicatedCpu.objects.filter(vm__tenant=self.tenant)
                .exclude(vm_id=self.vm_id)
                .count()
            )
        return self._cpus

    @property
    def mib(self) -> int:
        if self._mib is None:
            rows = (
                HugepageAllocation.objects.filter(vm__tenant=self.tenant)
                .exclude(vm_id=self.vm_id)
                .values_list("pages", "pool__size_kib")
            )
            self._mib = sum(pages * (size // 1024) for pages, size in rows)
        return self._mib

    def reasons(self, cpus: int, mib: int) -> list[str]:
        tenant, out = self.tenant, []
        if tenant is None:
            return out
        if tenant.max_dedicated_cpus is not None and cpus:
            if self.cpus + cpus > tenant.max_dedicated_cpus:
                out.append(
                    f"quota: tenant {tenant.name} may hold {tenant.max_dedicated_cpus} dedicated "
                    f"pCPUs, holds {self.cpus}, this needs {cpus}"
                )
        if tenant.max_hugepages_mib is not None and mib:
            if self.mib + mib > tenant.max_hugepages_mib:
                out.append(
                    f"quota: tenant {tenant.name} may back {tenant.max_hugepages_mib} MiB with "
                    f"hugepages, uses {self.mib}, this needs {mib}"
                )
        return out


def _plan_needs(plan: TuningPlan) -> tuple[int, int]:
    """Dedicated pCPUs and hugepage MiB a plan promises (what the tuning quotas count)."""
    cpus = len(plan.allocations["cpus"])
    mib = sum(a["pages"] * (a["size_kib"] // 1024) for a in plan.allocations["hugepages"])
    return cpus, mib


def _quota_reasons(tenant: Tenant, plan: TuningPlan, vm_id: int | None) -> list[str]:
    return _QuotaUse(tenant, vm_id).reasons(*_plan_needs(plan))


def fit_hosts(knobs, facts: VmFacts, hosts, tenant, *, current_host_id=None) -> list[dict]:
    """One row per host: fits or not and why, with its free pCPUs and pages per node.

    ``hosts`` is a query of hosts (read as plain rows: id, name, status, the cache stamp) or a
    list of Host rows. Hosts whose topology (``HostTopology.signature``) and ledger are the
    same get the same answer: compile runs once per distinct (topology, ledger), so a fleet of
    alike hosts costs a few compiles, not one per host. Topologies come from
    ``topology.topologies`` (kept between reports); the quota totals are read once."""
    if isinstance(hosts, QuerySet):
        rows = list(hosts.values_list(*topology.ROW_FIELDS))
        topos = topology.topologies(rows)
    else:  # Host rows: topologies built from what they carry
        rows = [(h.pk, h.name, h.status, h.last_synced, h.updated) for h in hosts]
        topos = topology.topologies(hosts)
    promised = ledger.all_summaries()  # every host's, kept while the ledger is unchanged
    quota = _QuotaUse(tenant, facts.vm_id)
    memo: dict[tuple, tuple] = {}
    out = []
    for pk, name, status, _synced, _updated in rows:
        topo = topos[pk]
        summary = promised.get(pk, ledger.EMPTY)
        own = current_host_id == pk and facts.vm_id
        online = status == HostStatus.ONLINE
        # alike hosts (same topology, same promises) get one compile; the VM's own host is
        # answered apart (its own promises are left out)
        key = (topo.signature, summary[0], summary[2], online, pk if own else None)
        hit = memo.get(key)
        if hit is None:
            led = ledger.view_of(summary)
            if own:
                led.dedicated = {c: v for c, v in led.dedicated.items() if v != facts.vm_id}
                mine = HugepageAllocation.objects.filter(vm_id=facts.vm_id, pool__host_id=pk)
                for node, size, pages in mine.values_list("pool__node", "pool__size_kib", "pages"):
                    entry = led.hugepages.get((node, size))
                    if entry:
                        entry["allocated"] -= pages
            refused, needs, restart = [f"host {topo.name} is {status}"], (0, 0), []
            if online:
                try:
                    plan = compile(knobs, facts, topo, led)
                    refused, needs, restart = None, _plan_needs(plan), list(plan.restart)
                except NoFit as exc:
                    refused = list(exc.reasons)
            nodes = []
            for node in topo.nodes:
                free = [c for c in node.cpu_ids
                        if c not in led.dedicated and c not in topo.housekeeping]  # fmt: skip
                pages = {str(size): ledger_free_pages(led, node, size)
                         for size in sorted(set(node.hugepages) | {2048})}  # fmt: skip
                nodes.append({"node": node.id, "free_cpus": free, "free_pages": pages})
            hit = (topo.name, refused, needs, restart, nodes,
                   sum(len(n["free_cpus"]) for n in nodes))  # fmt: skip
            memo[key] = hit
        seen_as, refused, needs, restart, nodes, free_count = hit
        # the lists are shared by the rows of alike hosts (read-only)
        row = {"host": name, "host_id": pk, "current": pk == current_host_id, "fits": False,
               "reasons": (), "restart_needed": (), "nodes": nodes, "_free": free_count}  # fmt: skip
        if refused is not None:
            row["reasons"] = (
                [r.replace(f"host {seen_as} ", f"host {name} ") for r in refused]
                if seen_as != name else refused
            )  # fmt: skip
        else:
            over = quota.reasons(*needs)
            row["reasons"] = over or ()
            row["fits"] = not over
            row["restart_needed"] = restart
            row["dedicated"] = needs[0]
        out.append(row)
    dedicated = knobs["cpu"]["placement"] != "shared"
    # pack dedicated VMs (fewest free pCPUs first), spread shared ones (most free first)
    out.sort(key=lambda r: (not r["fits"], r["_free"] if dedicated else -r["_free"], r["host"]))
    for row in out:
        row.pop("_free")
    return out


def fit_vm(user, vm, policy) -> dict:
    policy = resolve_policy(user, policy)
    usable(policy, vm.tenant_id)
    facts = VmFacts.from_vm(vm)
    # every host the VM may use (its own first among equals): where it could go, and why not
    allowed = hosts_for(user, vm.tenant)
    if allowed.query.where:  # the tenant's hosts, and the one the VM is on
        allowed = Host.objects.filter(Q(pk__in=allowed.values("pk")) | Q(pk=vm.host_id))
    hosts = allowed.order_by("name")
    rows = fit_hosts(policy.knobs, facts, hosts, vm.tenant, current_host_id=vm.host_id)
    return {"policy": policy.name, "version": policy.version, "vm": vm.pk, "hosts": rows}


def fit_spec(user, tenant, *, vcpus, memory_mib, policy, disks=(), nics=(), host_ids=None) -> dict:
    """The fit of a VM that does not exist yet, on every host the tenant may use."""
    if not can(user, Action.VM_CREATE, tenant.pk):
        raise PermissionDenied("Your role may not create VMs in this tenant.")
    errors = {}
    if not isinstance(vcpus, int) or isinstance(vcpus, bool) or not 1 <= vcpus <= 512:
        errors["vcpus"] = ["1 to 512 vCPUs."]
    if (
        not isinstance(memory_mib, int)
        or isinstance(memory_mib, bool)
        or not 64 <= memory_mib <= 2**24
    ):
        errors["memory_mib"] = ["64 MiB to 16 TiB."]
    if errors:
        raise ValidationError(errors)
    policy = resolve_policy(user, policy)
    usable(policy, tenant.pk)
    facts = VmFacts.for_spec(vcpus=vcpus, memory_mib=memory_mib, tenant_id=tenant.pk,
                             disks=len(disks), nics=len(nics))  # fmt: skip
    hosts = hosts_for(user, tenant)
    if host_ids is not None:
        hosts = hosts.filter(pk__in=host_ids)
    rows = fit_hosts(policy.knobs, facts, hosts.order_by("name"), tenant)
    return {"policy": policy.name, "version": policy.version, "hosts": rows}


# --- plan and apply ---------------------------------------------------------------------------


def plan_vm(user, vm, policy) -> TuningPlan:
    """The plan of ``policy`` for ``vm`` on its host (ledger without the VM's own rows)."""
    _require_vm_change(user, vm)
    policy = resolve_policy(user, policy)
    usable(policy, vm.tenant_id)
    host = vm.host
    topo = HostTopology.from_host(host)
    facts = VmFacts.from_vm(vm)
    led = ledger.view(host, exclude_vm=vm)
    try:
        plan = compile(
            policy.knobs, facts, topo, led, policy=policy.name, version=policy.version,
            current_xml=vm.definition,
        )  # fmt: skip
    except NoFit as exc:
        report = fit_vm(user, vm, policy)
        raise FitRefused(
            f"{policy.name} does not fit {vm.name} on {host.name}: {exc}", report
        ) from None
    reasons = _quota_reasons(vm.tenant, plan, vm.pk)
    if reasons:
        raise FitRefused("; ".join(reasons), fit_vm(user, vm, policy))
    return plan


def apply_policy(user, vm, policy) -> Task:
    """Queue ``vm.tune`` with the plan of ``policy`` (compiled against the definition Paddock
    last read; the task applies it to the definition as it is then)."""
    if vm.gone or vm.lifecycle != Lifecycle.READY:
        raise ValidationError({"vm": f"This VM is {vm.get_lifecycle_display().lower()}."})
    policy = resolve_policy(user, policy)
    plan = plan_vm(user, vm, policy)
    version = TuningPolicyVersion.objects.filter(policy=policy, version=policy.version).first()
    with transaction.atomic():
        task = taskrunner.create_task(
            kind="vm.tune", user=user, tenant=vm.tenant, host=vm.host, vm=vm,
            target=f"vm {vm.name}", lock=[vm],
            params={"plan": plan.to_plan().to_dict(), "tuning": plan.to_dict(),
                    "policy_id": policy.pk, "version_id": version.pk if version else None},
        )  # fmt: skip
        try:
            ledger.reserve(
                vm, vm.host, HostTopology.from_host(vm.host), plan.allocations, task=task
            )
        except ledger.LedgerConflict as exc:
            raise FitRefused(str(exc), fit_vm(user, vm, policy)) from None
        tuning, _ = VmTuning.objects.get_or_create(vm=vm)
        if tuning.policy_id != policy.pk:
            tuning.policy = policy
            tuning.save(update_fields=["policy"])
    return task


# --- what tuning hooks into vms ----------------------------------------------------------------


def on_tuned(vm, task, ok: bool, result) -> None:
    """A ``vm.tune`` task ended: record the applied plan, or give back what it promised."""
    if not ok:
        ledger.release_task(task)
        return
    params = task.params or {}
    plan = dict(params.get("tuning") or {})
    result = result if isinstance(result, dict) else {}
    plan["restart"] = list(result.get("restart") or [])
    if result.get("xml_after"):
        plan["xml_after"] = result["xml_after"]
    # the running guest's id when it was tuned: a restart is seen as a new id
    plan["domain_id"] = result.get("domain_id")
    tuning, _ = VmTuning.objects.get_or_create(vm=vm)
    tuning.plan = plan
    tuning.applied_version_id = params.get("version_id")
    tuning.applied_at = timezone.now()
    tuning.applied_task = task
    tuning.restart_needed = plan["restart"]
    tuning.drift = False
    tuning.drift_details = []
    tuning.drift_checked_at = timezone.now()
    tuning.save()
    # the promises are the VM's now, not the task's: a later failed task does not release them
    DedicatedCpu.objects.filter(task=task).update(task=None)
    HugepageAllocation.objects.filter(task=task).update(task=None)


def tuning_status(user, vm) -> dict:

    tuning = VmTuning.objects.filter(vm=vm).select_related("applied_version__policy").first()
    policy = effective_policy(vm)
    applied = tuning.applied_version if tuning else None
    return {
        "policy": policy.name,
        "policy_id": policy.pk,
        "version": policy.version,
        "applied_policy": applied.policy.name if applied else None,
        "applied_version": applied.version if applied else None,
        "applied_at": tuning.applied_at.isoformat() if tuning and tuning.applied_at else None,
        "plan": tuning.plan if tuning else {},
        "restart_needed": tuning.restart_needed if tuning else [],
        "drift": bool(tuning and tuning.drift),
        "drift_details": tuning.drift_details if tuning else [],
        "proof": proof.proof_for(vm),
        "advice": advisor.recommendations(vm),
    }


def host_tuning(host: Host) -> dict:
    """Every pCPU of a host by node and core with who holds it, and hugepages per node."""
    topo = HostTopology.from_host(host)
    held = ledger.held_by(host)
    names = dict(
        VirtualMachine.objects.filter(pk__in={v for v, _u in held["cpus"].values()}).values_list(
            "pk", "name"
        )
    )
    nodes = []
    for node in topo.nodes:
        cores: dict[tuple, list] = {}
        for cpu in sorted(node.cpus, key=lambda c: c.id):
            key = tuple(sorted(set(cpu.siblings) | {cpu.id}))
            vm_id, use = held["cpus"].get(cpu.id, (None, ""))
            holder = (
                "housekeeping" if cpu.id in topo.housekeeping
                else (names.get(vm_id, f"vm {vm_id}") if vm_id else "")
            )  # fmt: skip
            cores.setdefault(key, []).append(
                {"cpu": cpu.id, "holder": holder, "vm_id": vm_id, "use": use}
            )
        pages = []
        for size, have in sorted(node.hugepages.items()):
            pool = held["pages"].get((node.id, size), {"capacity": 0, "allocated": 0})
            pages.append({"size_kib": size, "reserved": have["total"], "free": have["free"],
                          "promised": pool["allocated"]})  # fmt: skip
        nodes.append({"node": node.id, "memory_mib": node.memory_mib,
                      "cores": list(cores.values()), "hugepages": pages})  # fmt: skip
    return {"host": host.name, "housekeeping": sorted(topo.housekeeping), "nodes": nodes,
            "simulated": host.simulated}  # fmt: skip


def set_housekeeping(user, host: Host, cpus: list[int]) -> None:
    if not is_platform_admin(user):
        raise PermissionDenied("Only platform admins set a host's housekeeping pCPUs.")
    topo = HostTopology.from_host(host)
    known = set(topo.cpus)
    if (
        not isinstance(cpus, list)
        or not cpus
        or not all(isinstance(c, int) and not isinstance(c, bool) for c in cpus)
    ):
        raise ValidationError({"housekeeping": "A non-empty list of pCPU ids."})
    unknown = sorted(set(cpus) - known)
    if unknown:
        raise ValidationError({"housekeeping": f"Host {host.name} has no pCPU {unknown[0]}."})
    taken = sorted(
        set(cpus) & set(DedicatedCpu.objects.filter(host=host).values_list("cpu", flat=True))
    )
    if taken:
        raise ValidationError({"housekeeping": f"pCPU {taken[0]} is dedicated to a VM."})
    host.housekeeping_cpus = sorted(set(cpus))
    host.save(update_fields=["housekeeping_cpus", "updated"])
    topology.forget(host.pk)
    events.host_changed(host)
