"""The create wizard: one form in steps, its host-dependent choices, and the quota it shows."""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.html import format_html
from django.views.decorators.http import require_GET

from hosts.choices import HostStatus, PoolState
from hosts.models import Host, StoragePool, Volume
from hosts.selectors import hosts_for, networks_for, pools_for
from hosts.storage import backend_for
from panel import selectors as panel_selectors
from panel.choices import TaskState
from panel.generic import task_link
from panel.models import Tenant
from panel.tenancy import Action, is_platform_admin, restrict
from panel.units import GIB

from .. import hooks, selectors, services
from ..choices import CloneMode, DiskBus, DiskDevice, DiskFormat, NicModel
from ..forms import CreateWizard, DiskRowForm, NicRowForm
from ..models import Disk, VirtualMachine

# Quota keys, their labels with the unit the numbers are in, and their names.
QUOTA_LABELS = (
    ("vms", "VMs", "VMs"),
    ("vcpus", "vCPUs", "vCPUs"),
    ("memory_mib", "Memory (MiB)", "Memory"),
    ("disk_gib", "Disk (GiB)", "Disk"),
)
# With "automatic" placement the wizard lists the storage and networks of every host Paddock
# may choose; past this many hosts it asks for a host first instead.
AUTO_HOST_LIMIT = 25


def creatable_tenants(user):
    """Tenants in which ``user`` may create VMs."""
    return restrict(Tenant.objects.order_by("name"), user, Action.VM_CREATE, field="pk")


def _opt(value, label: str, **data) -> dict:
    return {"value": value, "label": label, "data": data}


def _grouped(items: list[tuple[Host, dict]], group: bool) -> list:
    """Options grouped by host (optgroups) when several hosts are listed."""
    if not group:
        return [(None, [opt for _host, opt in items])]
    groups: dict[str, list] = {}
    for host, opt in items:
        groups.setdefault(host.name, []).append(opt)
    return list(groups.items())


def _pool_option(pool: StoragePool) -> dict:
    label = f"{pool.name} ({pool.pool_type}, {pool.available / GIB:.1f} GiB free)"
    if pool.state != PoolState.ACTIVE:
        label += f" — {pool.state}"
    opt = _opt(
        pool.pk,
        label,
        host=pool.host_id,
        abilities=json.dumps(backend_for(pool).abilities()),
        free=round(pool.available / GIB, 1),
    )
    opt["disabled"] = pool.state != PoolState.ACTIVE
    return opt


def _volume_option(volume: Volume, label: str) -> dict:
    return _opt(
        volume.pk,
        f"{label} ({volume.capacity / GIB:.1f} GiB)",
        host=volume.pool.host_id,
        gib=round(volume.capacity / GIB, 2),
        linked=int(backend_for(volume.pool).linked_clones),
    )


def _host_option(host: Host) -> dict:
    label = f"{host.name} ({host.cpus or '?'} CPUs, {(host.memory_mib or 0) / 1024:.0f} GiB)"
    if host.status != HostStatus.ONLINE:
        label += f" — {host.get_status_display().lower()}"
    opt = _opt(host.pk, label, name=host.name, cpus=host.cpus or 0, memory=host.memory_mib or 0)
    opt["disabled"] = host.status != HostStatus.ONLINE
    return opt


def _source_volumes(user, tenant: Tenant, scope: list[Host], pools: list[StoragePool]) -> list:
    """Volumes a new disk can start from: templates' disks, then images and loose volumes.

    Only what the tenant may use as a source (its own volumes, images published to it) is
    offered; the service checks the same rule again on submit.
    """
    usable = selectors.volumes_usable(user, tenant, selectors.USE_SOURCE).filter(pool__in=pools)
    templates = VirtualMachine.objects.filter(is_template=True, gone=False, host__in=scope)
    if not is_platform_admin(user):
        templates = templates.filter(tenant=tenant)
    disks = (
        Disk.objects.filter(vm__in=templates, device=DiskDevice.DISK, volume__in=usable)
        .select_related("vm", "volume__pool__host")
        .order_by("vm__name", "target")
    )
    sources = [
        (d.volume.pool.host, _volume_option(d.volume, f"{d.vm.name} / {d.target}")) for d in disks
    ]
    loose = usable.filter(disks__isnull=True).order_by("pool__host__name", "pool__name", "name")
    for v in loose[:200]:
        what = "image" if v.published else "not attached"
        sources.append((v.pool.host, _volume_option(v, f"{v.pool.name}/{v.name}, {what}")))
    return sources


def quota_rows(tenant: Tenant) -> list[dict]:
    """The tenant's limits beside its usage: what is left for new VMs (None: unlimited)."""
    usage = services.tenant_usage(tenant)
    limits = services.tenant_limits(tenant)
    rows = []
    for key, label, name in QUOTA_LABELS:
        limit, used = limits[key], usage[key]
        left = None if limit is None else max(0, round(limit - used, 1))
        rows.append(
            {"key": key, "label": label, "name": name, "used": used, "limit": limit, "left": left}
        )
    return rows


def wizard_options(user, tenant: Tenant, host_id: int | None) -> dict:
    """What the wizard offers for a tenant and a host (or automatic placement).

    Tenant operators see only what their tenant may use; platform admins see everything.
    """
    hosts = list(hosts_for(user, tenant).order_by("name"))
    online = [h for h in hosts if h.status == HostStatus.ONLINE]
    host = next((h for h in hosts if h.pk == host_id), None)
    if host is not None:
        scope = [host]
    else:
        scope = online if len(online) <= AUTO_HOST_LIMIT else []
    group = host is None and len(scope) > 1

    pools = list(pools_for(user, tenant, scope).order_by("host__name", "name"))
    networks = list(networks_for(user, tenant, scope).order_by("host__name", "name"))
    isos = (
        selectors.volumes_usable(user, tenant, selectors.USE_CDROM)
        .filter(pool__in=pools)
        .order_by("pool__host__name", "name")
    )

    cpu_models = [
        (
            None,
            [
                _opt("", "Default (hypervisor's)"),
                _opt("host-model", "host-model"),
                _opt("host-passthrough", "host-passthrough"),
            ],
        )
    ]
    models = [(h, _opt(m, m, host=h.pk)) for h in scope for m in h.cpu_models or []]
    if models:
        cpu_models += _grouped(models, group)

    quota = quota_rows(tenant)
    quota_json = {q["key"]: {"left": q["left"], "limit": q["limit"]} for q in quota}
    extra = {}  # what the create extensions offer (tuning: its policies)
    for ext in hooks.create_extensions():
        extra.update(ext.wizard_options(user, tenant))
    return {
        **extra,
        "host": host,
        "hosts": [(None, [_host_option(h) for h in hosts])],
        "host_count": len(online),
        "too_many_hosts": host is None and not scope and bool(online),
        "pools": _grouped([(p.host, _pool_option(p)) for p in pools], group),
        "first_pool": next((p for p in pools if p.state == PoolState.ACTIVE), None),
        "isos": _grouped(
            [
                (v.pool.host, _opt(v.pk, f"{v.name} ({v.pool.name})", host=v.pool.host_id))
                for v in isos
            ],
            group,
        ),
        "networks": _grouped(
            [
                (n.host, _opt(n.pk, f"{n.name} ({n.get_forward_mode_display()})", host=n.host_id))
                for n in networks
            ],
            group,
        ),
        "first_network": networks[0] if networks else None,
        "sources": _grouped(_source_volumes(user, tenant, scope, pools), group),
        "cpu_models": cpu_models,
        "quota": quota,
        "quota_json": json.dumps(quota_json),
    }


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _template_initial(template: VirtualMachine) -> dict:
    """The wizard pre-filled from a template: its size, firmware, disks (as copies) and NICs."""
    initial = {
        "tenant": template.tenant_id,
        "host": template.host_id,
        "vcpus": template.vcpus,
        "max_vcpus": template.max_vcpus if template.max_vcpus > template.vcpus else None,
        "memory_mib": template.memory_mib,
        "max_memory_mib": template.max_memory_mib
        if template.max_memory_mib > template.memory_mib
        else None,
        "firmware": template.firmware,
        "machine": "pc" if "i440fx" in template.machine or template.machine == "pc" else "q35",
        "cpu_model": template.cpu_model,
        "description": template.description,
        "tags": template.tags,
    }
    disks = [
        {
            "source": "template",
            "volume": d.volume_id,
            "bus": d.bus or DiskBus.VIRTIO,
            "clone": CloneMode.LINKED
            if backend_for(d.volume.pool).linked_clones
            else CloneMode.FULL,
        }
        for d in template.disks.select_related("volume__pool").order_by("target")
        if d.device == DiskDevice.DISK and d.volume_id
    ]
    nics = [
        {"network": n.network_id, "model": n.model or NicModel.VIRTIO}
        for n in template.nics.order_by("id")
        if n.network_id
    ]
    return {**initial, "disks": disks, "nics": nics}


@login_required
def vm_create(request: HttpRequest) -> HttpResponse:
    """The create wizard: one form in steps (General, OS, Disks, CPU, Memory, Network, Confirm)
    that ``vms.services.vm_create`` validates; errors come back on the step that shows them."""
    user = request.user
    tenants = list(creatable_tenants(user))
    if not tenants:
        raise PermissionDenied("Your role may not create VMs in any tenant.")
    posted = request.method == "POST"
    source = request.POST if posted else request.GET
    template = None
    initial: dict = {}
    if not posted and source.get("template"):
        template = get_object_or_404(
            selectors.vms_for(user).filter(is_template=True), pk=_int_or_none(source["template"])
        )
        initial = _template_initial(template)
    tenant = _tenant(tenants, _int_or_none(source.get("tenant")) or initial.get("tenant"))
    tenant = tenant or tenants[0]
    host_id = _int_or_none(source.get("host")) or initial.get("host")
    options = wizard_options(user, tenant, host_id)

    if posted:
        wizard = CreateWizard(request.POST)
        if wizard.is_valid():
            response = _create(request, wizard)
            if response is not None:
                return response
    else:
        disks = initial.pop("disks", None)
        nics = initial.pop("nics", None)
        if template is None:
            pool, net = options["first_pool"], options["first_network"]
            disks = [_new_disk(pool)] if pool else []
            nics = [{"network": net.pk, "model": NicModel.VIRTIO}] if net else []
        initial.update(tenant=tenant.pk, host=host_id)
        wizard = CreateWizard(initial=initial, disks=disks, nics=nics)

    errors = wizard.errors_by_step() if posted else {}
    context = {
        "wizard": wizard,
        "form": wizard.form,
        "tenants": [(None, [_opt(t.pk, t.name) for t in tenants])],
        "options": options,
        "host_id": host_id,
        "steps": [(step, label, errors.get(step, False)) for step, label in wizard.STEPS],
        "start_step": wizard.first_error_step() if posted else "general",
        "template": template,
        "disk_template_row": DiskRowForm(prefix="disk-__i__", initial=_new_disk(None)),
        "nic_template_row": NicRowForm(prefix="nic-__i__", initial={"model": NicModel.VIRTIO}),
        "tree_reveal": "" if is_platform_admin(user) else f"tenant-{tenant.pk}",
    }
    return render(request, "vms/vm_create.html", context, status=400 if posted else 200)


def _new_disk(pool: StoragePool | None) -> dict:
    """A new row of the wizard's disks before the user touches it (in the pool's default
    format: raw on LVM)."""
    return {
        "source": "new",
        "size_gib": 32,
        "pool": pool.pk if pool else None,
        "format": backend_for(pool).default_format if pool else DiskFormat.QCOW2,
        "bus": DiskBus.VIRTIO,
    }


def _tenant(tenants: list[Tenant], tenant_id: int | None) -> Tenant | None:
    return next((t for t in tenants if t.pk == tenant_id), None)


def _create(request: HttpRequest, wizard: CreateWizard) -> HttpResponse | None:
    """Call ``vm_create`` with the wizard's input; None when its errors are on the wizard."""
    data = wizard.form.cleaned_data
    tenant = panel_selectors.tenants_for(request.user).filter(pk=data["tenant"]).first()
    if tenant is None:
        wizard.form.add_error("tenant", "Unknown tenant.")
        return None
    try:
        # The service looks the host up among those the tenant may use.
        vm, task = services.vm_create(
            user=request.user,
            tenant=tenant,
            host=data["host"] or None,
            cdrom=data["cdrom"],
            **wizard.service_kwargs(),
        )
    except ValidationError as exc:
        wizard.apply_service_errors(exc)
        return None
    task.refresh_from_db(fields=["state", "error"])
    if task.state == TaskState.FAILED:
        # The task ran already (a worker in this process, the simulated host) and took the VM
        # back: the wizard says why, with everything the user typed still in it.
        wizard.add_step_error(
            "confirm",
            format_html(
                "Creating {} on {} failed: {} ({}). Nothing was kept.",
                vm.name,
                vm.host.name,
                task.error or "no reason was recorded",
                task_link(task),
            ),
        )
        return None
    messages.success(
        request,
        format_html("VM {} is being created on {}: {}.", vm.name, vm.host.name, task_link(task)),
    )
    return redirect(vm)


@login_required
@require_GET
def vm_create_options(request: HttpRequest) -> HttpResponse:
    """The wizard's host-dependent choices for a tenant and host (fetched when either changes)."""
    user = request.user
    tenants = list(creatable_tenants(user))
    if not tenants:
        raise PermissionDenied("Your role may not create VMs in any tenant.")
    tenant = _tenant(tenants, _int_or_none(request.GET.get("tenant"))) or tenants[0]
    host_id = _int_or_none(request.GET.get("host"))
    return render(
        request,
        "vms/_create_options.html",
        {
            "options": wizard_options(user, tenant, host_id),
            "tenant_id": tenant.pk,
            "host_id": host_id,
        },
    )
