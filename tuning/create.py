"""A VM created with a tuning policy (``vm_create(tuning_policy=...)``): the ``vms.hooks``
create extension.

* ``clean``: the policy named, or the tenant's default, among those the user may use;
* ``place``: when Paddock chooses the host, only hosts where the policy fits, dedicated VMs
  packed (fewest free pCPUs first), shared ones spread (most free first);
* ``check_host``: the chosen or named host fits (pCPUs, NUMA, hugepages, quotas), else a field
  error at ``tuning_policy`` with the reasons;
* ``build``: the plan compiled against the VM's real disks and NICs: its domain part tunes
  the definition, its host actions run first, ``params["tuning"]`` records it;
* ``reserve``: the plan's pCPUs and hugepages promised in the create's transaction (the
  database refuses a pCPU already taken); a failed create deletes the VM row, and the ledger
  rows go with it.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db.models import Q

from hosts.models import Host
from vms.services import disk_targets

from . import ledger, services
from .compiler import NoFit, compile
from .models import TenantTuningDefault, TuningPolicyVersion, VmTuning
from .topology import HEAVY_FIELDS, HostTopology, VmFacts

FIELD = "tuning_policy"


def _facts(request: dict, params: dict | None = None) -> VmFacts:
    size = {"vcpus": request["vcpus"], "memory_mib": request["memory_mib"],
            "tenant_id": request["tenant"].pk}  # fmt: skip
    if params is None:  # before the devices are final: their count is what fits
        return VmFacts.for_spec(**size, disks=request["disks"], nics=request["nics"])
    disks = [
        {"target": target, "bus": bus, "format": d.get("format", ""), "device": "disk"}
        for d, (target, bus) in zip(params["disks"], disk_targets(params["disks"]), strict=True)
    ]
    nics = [{"mac": n["mac"], "model": n.get("model", "virtio")} for n in params["nics"]]
    return VmFacts(vm_id=None, name="new", **size, virt_type=params.get("virt_type") or "kvm",
                   disks=disks, nics=nics)  # fmt: skip


class TuningCreate:
    def wizard_options(self, user, tenant) -> dict:
        """The policies the tenant's VMs may use, for the wizard's select (blank: default)."""
        default = TenantTuningDefault.objects.filter(tenant=tenant).select_related("policy")
        blank = f"Tenant default ({default[0].policy.name})" if default else "Default (balanced)"
        policies = (
            services.policies_for(user)
            .filter(Q(tenant__isnull=True) | Q(tenant=tenant))
            .order_by("tenant_id", "name")
        )
        items = [{"value": "", "label": blank}] + [
            {"value": p.name, "label": f"{p.name} (v{p.version})" + (f" — {p.description}"
             if p.description else "")}
            for p in policies[:200]
        ]  # fmt: skip
        return {"tuning_policies": [(None, items)]}

    def clean(self, user, tenant, request: dict, errors) -> None:
        value = request.get(FIELD)
        policy = None
        if value in (None, ""):
            default = TenantTuningDefault.objects.filter(tenant=tenant).select_related("policy")
            policy = default[0].policy if default else None
        else:
            try:
                policy = services.resolve_policy(user, value)
                services.usable(policy, tenant.pk)
            except ValidationError as exc:
                errors.add(FIELD, "; ".join(exc.message_dict.get("policy", exc.messages)))
                return
        request["_policy"] = policy

    def place(self, user, tenant, request: dict, hosts, errors):
        policy = request.get("_policy")
        if policy is None:
            return hosts
        rows = services.fit_hosts(policy.knobs, _facts(request), hosts, tenant)
        ids = [r["host_id"] for r in rows if r["fits"]]
        found = Host.objects.defer(*HEAVY_FIELDS).in_bulk(ids)
        fitting = [found[pk] for pk in ids if pk in found]
        if not fitting:
            why = "; ".join(f"{r['host']}: {', '.join(r['reasons'])}" for r in rows[:5])
            errors.add(FIELD, f"{policy.name} fits no host this tenant may use ({why or 'none'}).")
        return fitting

    def check_host(self, user, tenant, request: dict, host, errors) -> None:
        policy = request.get("_policy")
        if policy is None:
            return
        rows = services.fit_hosts(policy.knobs, _facts(request), [host], tenant)
        if rows and not rows[0]["fits"]:
            errors.add(
                FIELD,
                f"{policy.name} does not fit on {host.name}: {'; '.join(rows[0]['reasons'])}.",
            )

    def build(self, request: dict, host) -> dict:
        policy = request.get("_policy")
        if policy is None:
            return {}
        topo = HostTopology.from_host(host)
        try:
            plan = compile(
                policy.knobs, _facts(request, request["params"]), topo, ledger.view(host),
                policy=policy.name, version=policy.version,
            )  # fmt: skip
        except NoFit as exc:  # the devices changed what fits since check_host
            raise ValidationError(
                {FIELD: f"{policy.name} does not fit on {host.name}: {exc}"}
            ) from None
        request["_plan"], request["_topology"] = plan, topo
        version = TuningPolicyVersion.objects.filter(policy=policy, version=policy.version).first()
        return {
            "tuning": plan.to_dict(),
            "policy_id": policy.pk,
            "version_id": version.pk if version else None,
        }

    def reserve(self, vm, task, request: dict) -> None:
        policy, plan = request.get("_policy"), request.get("_plan")
        if policy is None or plan is None:
            return
        try:
            ledger.reserve(vm, vm.host, request["_topology"], plan.allocations, task=task)
        except ledger.LedgerConflict as exc:
            raise ValidationError({FIELD: str(exc)}) from None
        VmTuning.objects.update_or_create(vm=vm, defaults={"policy": policy})
