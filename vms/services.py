"""Writes on VMs. The UI and the API both call these; neither talks to libvirt.

Each function authorizes for the VM's tenant, validates everything it can from the inventory
(answering ValidationError with field messages before anything is queued), checks the
tenant's quota, takes the VM's lock and writes a Task that a worker carries out.
"""

from __future__ import annotations

import random
import re
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from hosts.choices import HostStatus, PoolState
from hosts.models import Host, Network, StoragePool, Volume
from hosts.networks import backend_for as network_backend_for
from hosts.plan_steps import action_steps
from hosts.selectors import hosts_for, networks_for, pools_for
from hosts.storage import backend_for, volume_name_for
from hosts.storage.backends import space_problem
from panel import taskrunner
from panel.locks import LockConflict
from panel.models import Task, Tenant
from panel.plans import DOMAIN, STORAGE, Plan
from panel.registry import conflict_errors
from panel.tenancy import Action, can, is_platform_admin, restrict
from panel.units import GIB, volume_bytes
from panel.validators import NAME_RE, validate_tags

from . import hooks
from .choices import (
    MAX_DISKS,
    MAX_NICS,
    BootDevice,
    CloneMode,
    DiskBus,
    DiskDevice,
    DiskFormat,
    Firmware,
    Lifecycle,
    MachineType,
    NicModel,
    PowerAction,
    VMState,
)
from .domxml import DomainBuild, NicBuild, target_names
from .models import Disk, Nic, VirtualMachine
from .selectors import USE_ATTACH, USE_CDROM, USE_SOURCE, volumes_usable

MIN_MEMORY_MIB = 64
# Bounds no real host reaches, checked before a value meets the database or libvirt.
MAX_VCPUS = 4096
MAX_MEMORY_MIB = 2**31 - 1  # 2 PiB

# The Markdown notes of a VM (rendered on its Summary).
NOTES_MAX_LENGTH = 20_000

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}\Z")
SNAPSHOT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")

# Observed states from which each power action makes sense.
POWER_FROM = {
    PowerAction.START: {VMState.SHUTOFF, VMState.CRASHED},
    PowerAction.SHUTDOWN: {VMState.RUNNING},
    PowerAction.STOP: {VMState.RUNNING, VMState.PAUSED, VMState.CRASHED, VMState.PMSUSPENDED},
    PowerAction.REBOOT: {VMState.RUNNING},
    PowerAction.RESET: {VMState.RUNNING, VMState.PAUSED},
    PowerAction.PAUSE: {VMState.RUNNING},
    PowerAction.RESUME: {VMState.PAUSED, VMState.PMSUSPENDED},
}
POWER_DESIRED = {
    PowerAction.START: VMState.RUNNING,
    PowerAction.SHUTDOWN: VMState.SHUTOFF,
    PowerAction.STOP: VMState.SHUTOFF,
    PowerAction.REBOOT: VMState.RUNNING,
    PowerAction.RESET: VMState.RUNNING,
    PowerAction.PAUSE: VMState.PAUSED,
    PowerAction.RESUME: VMState.RUNNING,
}


class Errors:
    """Collects field errors so a request hears about every problem at once."""

    def __init__(self):
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str, part: str = "") -> None:
        """``message`` on ``field``; ``part`` names the field inside a row (``disks[0]``'s
        ``size_gib``) as the error's code, for a form that shows it at that field."""
        error = ValidationError(message, code=part) if part else message
        self.errors.setdefault(field, []).append(error)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def _require(user, action: str, tenant_id: int | None, what: str) -> None:
    if not can(user, action, tenant_id):
        raise PermissionDenied(f"Your role may not {what}.")


def _check_device_counts(disks, nics) -> None:
    """Refuse too many disks or NICs at once, before any of them costs a query."""
    errors = Errors()
    for field, rows, limit in (("disks", disks, MAX_DISKS), ("nics", nics, MAX_NICS)):
        if rows is not None and not isinstance(rows, list):
            errors.add(field, "A list.")
        elif rows and len(rows) > limit:
            errors.add(field, f"At most {limit} per VM; asked {len(rows)}.")
    errors.raise_if_any()


def _require_ready(vm: VirtualMachine) -> None:
    if vm.gone:
        raise ValidationError({"vm": "This VM is gone from its host."})
    if vm.lifecycle != Lifecycle.READY:
        raise ValidationError({"vm": f"This VM is {vm.get_lifecycle_display().lower()}."})


# --- quotas and placement ---------------------------------------------------------------------


def tenant_usage(tenant: Tenant) -> dict:
    vms = VirtualMachine.objects.filter(tenant=tenant, gone=False, is_template=False)
    agg = vms.aggregate(vcpus=Sum("vcpus"), memory=Sum("memory_mib"))
    disk_bytes = (
        Volume.objects.filter(disks__vm__tenant=tenant, disks__vm__gone=False, disks__device="disk")
        .distinct()
        .aggregate(total=Sum("capacity"))["total"]
        or 0
    )
    return {
        "vms": vms.count(),
        "vcpus": agg["vcpus"] or 0,
        "memory_mib": agg["memory"] or 0,
        "disk_gib": round(disk_bytes / GIB, 1),
    }


def tenant_limits(tenant: Tenant) -> dict:
    return {
        "vms": tenant.max_vms,
        "vcpus": tenant.max_vcpus,
        "memory_mib": tenant.max_memory_mib,
        "disk_gib": tenant.max_disk_gib,
    }


def check_quota(tenant: Tenant, *, vms=0, vcpus=0, memory_mib=0, disk_gib=0.0) -> None:
    """Refuse a request that would take the tenant over a limit, saying limit and usage."""
    asked = {"vms": vms, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib}
    if not any(extra > 0 for extra in asked.values()):
        return  # nothing more is asked: no limit can be passed
    usage = tenant_usage(tenant)
    limits = tenant_limits(tenant)
    errors = Errors()
    for key, extra in asked.items():
        limit = limits[key]
        if limit is not None and extra > 0 and usage[key] + extra > limit:
            errors.add(
                "quota",
                f"Quota of tenant {tenant.name} exceeded for {key}: limit {limit}, "
                f"in use {usage[key]}, asked {extra:g} more.",
            )
    errors.raise_if_any()


@contextmanager
def quota_guard(tenant: Tenant, **asked):
    """Check the quota and write what uses it in one transaction, one request per tenant at a time.

    The tenant's row lock makes concurrent requests of one tenant queue here, so none of them
    reads the usage before another's new rows are committed. (SQLite's IMMEDIATE transactions
    serialize all writers already; ``select_for_update`` is a no-op there.)
    """
    with transaction.atomic():
        Tenant.objects.select_for_update().filter(pk=tenant.pk).exists()
        check_quota(tenant, **asked)
        yield


def _resolve(scope, pk):
    """The object with id ``pk`` among ``scope`` (a placement selector's answer), or None.

    Anything outside the scope, another tenant's or not existing at all, is None alike, so no
    answer tells a user about an object they may not see.
    """
    if pk is None or pk == "" or isinstance(pk, bool):
        return None
    try:
        pk = int(getattr(pk, "pk", pk))
    except (TypeError, ValueError):
        return None
    return scope.filter(pk=pk).first()


def committed_memory_mib(host: Host) -> int:
    return (
        VirtualMachine.objects.filter(host=host, gone=False).aggregate(m=Sum("memory_mib"))["m"]
        or 0
    )


def placement_candidates(user, tenant: Tenant, vcpus: int, memory_mib: int):
    """The online hosts allowed to the tenant that fit the VM, most free memory first, in one
    query: each host's committed memory is a grouped subquery over the VM host index, so
    the cost does not grow by a query per host."""
    committed = (
        VirtualMachine.objects.filter(host=OuterRef("pk"), gone=False)
        .order_by()
        .values("host")
        .annotate(total=Sum("memory_mib"))
        .values("total")
    )
    return (
        hosts_for(user, tenant)
        .filter(status=HostStatus.ONLINE)
        .filter(cpus__gte=vcpus)
        .annotate(
            free_mib=Coalesce("memory_mib", 0)
            - Coalesce(Subquery(committed, output_field=IntegerField()), 0)
        )
        .filter(free_mib__gte=memory_mib)
        .order_by("-free_mib", "name")
    )


def choose_host(user, tenant: Tenant, vcpus: int, memory_mib: int) -> Host | None:
    """The online host with the most free memory that fits the VM, among those allowed."""
    return placement_candidates(user, tenant, vcpus, memory_mib).first()


def default_virt_type(host: Host) -> str:
    if "test" in host.virt_types:
        return "test"
    return "kvm" if "kvm" in host.virt_types else "qemu"


def new_mac() -> str:
    while True:
        mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        if not Nic.objects.filter(mac=mac, vm__gone=False).exists():
            return mac


def _clean_mac(raw: str | None, errors: Errors, field: str, taken: set[str]) -> str:
    if not raw:
        mac = new_mac()
        while mac in taken:
            mac = new_mac()
        taken.add(mac)
        return mac
    mac = raw.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        errors.add(field, f"{raw!r} is not a MAC address (aa:bb:cc:dd:ee:ff).")
    elif int(mac[:2], 16) & 1:
        errors.add(field, f"{raw} is a multicast address; a NIC needs a unicast MAC.")
    elif mac in taken or Nic.objects.filter(mac=mac, vm__gone=False).exists():
        errors.add(field, f"MAC {mac} is already in use.")
    taken.add(mac)
    return mac


# --- create -----------------------------------------------------------------------------------


@dataclass
class _DiskPlan:
    params: dict
    gib: float
    pool_id: int | None


def _plan_disks(user, tenant, host, disks, errors: Errors) -> list[_DiskPlan]:
    plans: list[_DiskPlan] = []
    # per pool: bytes needed in full now, bytes promised to volumes growing on demand, rows
    need_per_pool: dict[int, list] = {}

    def need(pool_id: int, index: int, *, full: int = 0, thin: int = 0) -> None:
        entry = need_per_pool.setdefault(pool_id, [0, 0, []])
        entry[0] += full
        entry[1] += thin
        entry[2].append(index)

    for i, disk in enumerate(disks or []):
        field = f"disks[{i}]"
        bus = disk.get("bus") or DiskBus.VIRTIO
        if bus not in DiskBus.values:
            errors.add(field, f"Unknown bus {bus!r}: use {', '.join(DiskBus.values)}.", "bus")
        if disk.get("source_volume"):
            # Another tenant's volume is as unknown as a missing one: the same answer for both.
            vol = (
                volumes_usable(user, tenant, USE_SOURCE)
                .filter(pk=disk["source_volume"], pool__host=host)
                .first()
            )
            mode = disk.get("clone") or CloneMode.LINKED
            if vol is None:
                errors.add(field, "Unknown source volume on this host.", "volume")
                continue
            if mode not in CloneMode.values:
                errors.add(field, "clone must be 'linked' or 'full'.")
                continue
            if mode == CloneMode.LINKED and not backend_for(vol.pool).linked_clones:
                errors.add(
                    field,
                    f"Linked clones need a file pool (qcow2 backing files); "
                    f"{vol.pool.name} is a {backend_for(vol.pool).label} pool.",
                )
                continue
            gib = vol.capacity / GIB
            # A linked clone is an overlay that grows on demand; a full copy is written whole.
            if mode == CloneMode.LINKED:
                need(vol.pool_id, i, thin=vol.capacity)
            else:
                need(vol.pool_id, i, full=max(vol.allocation, 1))
            plans.append(
                _DiskPlan(
                    params={
                        "kind": "clone",
                        "source_path": vol.path,
                        "pool": vol.pool.name,
                        "mode": mode,
                        "bus": bus,
                        "format": DiskFormat.QCOW2
                        if mode == CloneMode.LINKED
                        else (vol.format or DiskFormat.RAW),
                        "disk_source": backend_for(vol.pool).disk_source,
                    },
                    gib=gib,
                    pool_id=vol.pool_id,
                )
            )
            continue
        # A pool the tenant may not use reads exactly like one that does not exist.
        pool = _resolve(pools_for(user, tenant, host), disk.get("pool"))
        if pool is None:
            errors.add(field, f"Unknown pool {disk.get('pool')!r} on this host.", "pool")
            continue
        if pool.state != PoolState.ACTIVE:
            errors.add(field, f"Pool {pool.name} is {pool.state}.", "pool")
            continue
        backend = backend_for(pool)
        fmt = disk.get("format") or backend.default_format
        if fmt not in DiskFormat.values:
            errors.add(field, "Format: raw or qcow2.", "format")
            continue
        problem = backend.format_problem(fmt, pool.name)
        if problem:
            errors.add(field, problem, "format")
            continue
        try:
            size_bytes = volume_bytes(disk.get("size_gib"))
        except ValidationError as exc:
            errors.add(field, f"Disk size: {exc.message_dict['size_gib'][0]}", "size_gib")
            continue
        size = size_bytes / GIB
        if backend.grows_on_demand(fmt):
            need(pool.pk, i, thin=size_bytes)
        else:
            need(pool.pk, i, full=size_bytes)
        plans.append(
            _DiskPlan(
                params={
                    "kind": "new",
                    "pool": pool.name,
                    "size_bytes": size_bytes,
                    "format": fmt,
                    "bus": bus,
                    "logical": backend.disk_source == "block",
                    "disk_source": backend.disk_source,
                },
                gib=size,
                pool_id=pool.pk,
            )
        )
    # The overcommit rule (hosts.storage.backends.space_problem); the error sits on the disk
    # when it is the pool's only new one, on the disks together otherwise.
    pools = StoragePool.objects.select_related("host").in_bulk(list(need_per_pool))
    for pool_id, (full, thin, rows) in need_per_pool.items():
        problem = space_problem(pools[pool_id], full_bytes=full, thin_bytes=thin)
        if problem:
            if len(rows) == 1:
                errors.add(f"disks[{rows[0]}]", problem, "size_gib")
            else:
                errors.add("disks", problem)
    return plans


def _host_of(user, tenant: Tenant, disks, cdrom, nics) -> Host | None:
    """The host implied by the pools, volumes and networks a request names.

    Only what the tenant may use implies anything: an id of another tenant's object must not
    steer placement or name that object's host in an error.
    """
    pools = pools_for(user, tenant)
    networks = networks_for(user, tenant)
    for disk in disks or []:
        if disk.get("source_volume"):
            vol = volumes_usable(user, tenant, USE_SOURCE).filter(pk=disk["source_volume"]).first()
            if vol:
                return vol.pool.host
        elif disk.get("pool"):
            pool = _resolve(pools, disk["pool"])
            if pool:
                return pool.host
    if cdrom:
        vol = volumes_usable(user, tenant, USE_CDROM).filter(pk=cdrom).first()
        if vol:
            return vol.pool.host
    for nic in nics or []:
        net = _resolve(networks, nic.get("network"))
        if net:
            return net.host
    return None


def vm_create(
    *,
    user,
    name: str,
    tenant: Tenant,
    vcpus: int,
    memory_mib: int,
    host: Host | int | None = None,
    max_vcpus: int | None = None,
    max_memory_mib: int | None = None,
    firmware: str = Firmware.BIOS,
    machine: str = MachineType.Q35,
    virt_type: str | None = None,
    cpu_model: str = "",
    disks: list[dict] | None = None,
    cdrom: int | None = None,
    nics: list[dict] | None = None,
    boot: list[str] | None = None,
    autostart: bool = False,
    start: bool = False,
    description: str = "",
    tags: list | None = None,
    tuning_policy: object = None,
) -> tuple[VirtualMachine, Task]:
    """Validate a new VM against the inventory, quota and placement, and queue its creation.

    ``host`` (a Host or its id) is looked up among the hosts this tenant may use: any other is
    answered "Unknown host.", exactly like one that does not exist. ``tuning_policy`` (an id
    or a name) is for the create extensions (``vms.hooks``): tuning fits, places and reserves
    it, and the domain is defined tuned.
    """
    _require(user, Action.VM_CREATE, tenant.pk, "create VMs in this tenant")
    _check_device_counts(disks, nics)
    errors = Errors()
    extensions = hooks.create_extensions()
    # what the extensions see of the create: the fields they own and the VM's size
    request = {
        "tuning_policy": tuning_policy, "vcpus": vcpus, "memory_mib": memory_mib,
        "disks": len(disks or []), "nics": len(nics or []), "tenant": tenant,
    }  # fmt: skip
    if host is not None:
        asked_host = host
        host = _resolve(hosts_for(user, tenant), asked_host)
        if host is None:
            errors.add("host", "Unknown host.")
    if not NAME_RE.match(name or ""):
        errors.add(
            "name", "Use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit."
        )
    if not isinstance(vcpus, int) or vcpus < 1:
        errors.add("vcpus", "At least 1 vCPU.")
    if not isinstance(memory_mib, int) or memory_mib < MIN_MEMORY_MIB:
        errors.add("memory_mib", f"At least {MIN_MEMORY_MIB} MiB.")
    for field, value, limit in (
        ("vcpus", vcpus, MAX_VCPUS),
        ("max_vcpus", max_vcpus, MAX_VCPUS),
        ("memory_mib", memory_mib, MAX_MEMORY_MIB),
        ("max_memory_mib", max_memory_mib, MAX_MEMORY_MIB),
    ):
        if isinstance(value, int) and value > limit:
            errors.add(field, f"At most {limit}.")
    if firmware not in Firmware.values:
        errors.add("firmware", "bios or uefi.")
    if machine not in MachineType.values:
        errors.add("machine", "q35 or pc.")
    try:
        validate_tags(tags or [])
    except ValidationError as exc:
        errors.add("tags", "; ".join(exc.messages))
    for ext in extensions:
        ext.clean(user, tenant, request, errors)
    errors.raise_if_any()

    implied = _host_of(user, tenant, disks, cdrom, nics)
    if host is not None and implied is not None and implied.pk != host.pk:
        errors.add("host", "The pools, volumes and networks asked for are on another host.")
    if host is None and implied is None:
        candidates = placement_candidates(user, tenant, vcpus, memory_mib)
        for ext in extensions:
            candidates = ext.place(user, tenant, request, candidates, errors)
        host = next(iter(candidates[:1]), None)
        if host is None:
            errors.raise_if_any()  # an extension said why no host would do
    host = host or implied
    if host is None:
        errors.add("host", "No online host this tenant may use has room for this VM.")
        errors.raise_if_any()
    if host.status != HostStatus.ONLINE:
        errors.add("host", f"Host {host.name} is {host.status}.")
    if host.cpus and vcpus > host.cpus:
        errors.add("vcpus", f"Host {host.name} has {host.cpus} CPUs; asked {vcpus}.")
    max_vcpus = max(max_vcpus or vcpus, vcpus)
    if host.cpus and max_vcpus > host.cpus:
        errors.add("max_vcpus", f"Host {host.name} has {host.cpus} CPUs; asked {max_vcpus}.")
    if host.memory_mib and memory_mib > host.memory_mib:
        errors.add("memory_mib", f"Host {host.name} has {host.memory_mib} MiB; asked {memory_mib}.")
    max_memory_mib = max(max_memory_mib or memory_mib, memory_mib)
    if host.memory_mib and max_memory_mib > host.memory_mib:
        errors.add(
            "max_memory_mib",
            f"Host {host.name} has {host.memory_mib} MiB; asked up to {max_memory_mib}.",
        )
    virt_type = virt_type or default_virt_type(host)
    if virt_type not in host.virt_types:
        errors.add("virt_type", f"Host {host.name} offers {', '.join(host.virt_types) or 'none'}.")
    if firmware == Firmware.UEFI and not (host.uefi_loader or host.simulated):
        errors.add("firmware", f"Host {host.name} has no UEFI firmware (OVMF).")
    if cpu_model and cpu_model not in ("host-passthrough", "host-model"):
        if not host.cpu_models:
            errors.add(
                "cpu_model",
                f"Host {host.name} lists no named CPU models it can run; use host-model, "
                "host-passthrough, or the hypervisor's default.",
            )
        elif cpu_model not in host.cpu_models:
            errors.add("cpu_model", f"CPU model {cpu_model} cannot run on host {host.name}.")
    if VirtualMachine.objects.filter(host=host, name=name, gone=False).exists():
        errors.add("name", f"A VM named {name} exists on host {host.name}.")
    if host.status == HostStatus.ONLINE:
        for ext in extensions:
            ext.check_host(user, tenant, request, host, errors)

    disk_plans = _plan_disks(user, tenant, host, disks, errors)
    cdrom_path = ""
    if cdrom:
        iso = volumes_usable(user, tenant, USE_CDROM).filter(pk=cdrom, pool__host=host).first()
        if iso is None:
            errors.add("cdrom", "Unknown ISO volume on this host.")
        else:
            cdrom_path = iso.path
    nic_params = []
    taken: set[str] = set()
    for i, nic in enumerate(nics or []):
        field = f"nics[{i}]"
        net = _resolve(networks_for(user, tenant, host), nic.get("network"))
        if net is None:
            errors.add(field, f"Unknown network {nic.get('network')!r} on this host.")
            continue
        model = nic.get("model") or NicModel.VIRTIO
        if model not in NicModel.values:
            errors.add(field, f"NIC model: {', '.join(NicModel.values)}.")
            continue
        mac = _clean_mac(nic.get("mac"), errors, field, taken)
        nic_params.append({"mac": mac, "network": net.name, "model": model, **_interface(net)})
    boot = boot or list(BootDevice.values)
    if any(b not in BootDevice.values for b in boot):
        errors.add("boot", "Boot devices are disk, cdrom and network.")
    errors.raise_if_any()

    params = {
        "vcpus": vcpus,
        "max_vcpus": max_vcpus,
        "memory_mib": memory_mib,
        "max_memory_mib": max_memory_mib,
        "firmware": firmware,
        "machine": machine,
        "virt_type": virt_type,
        "cpu_model": cpu_model,
        "disks": [p.params for p in disk_plans],
        "cdrom": cdrom_path,
        "with_cdrom": bool(cdrom) or "cdrom" in boot[:1],
        "nics": nic_params,
        "boot": boot,
        "autostart": bool(autostart),
        "start": bool(start),
        "description": description,
        "created_volumes": [],
    }
    request["params"] = params
    for ext in extensions:
        params.update(ext.build(request, host))
    vm_uuid = uuidlib.uuid4()
    params["plan"] = create_plan(name, str(vm_uuid), params).to_dict()
    asked = {"vms": 1, "vcpus": vcpus, "memory_mib": memory_mib}
    with quota_guard(tenant, **asked, disk_gib=sum(p.gib for p in disk_plans)):
        vm = VirtualMachine.objects.create(
            host=host,
            tenant=tenant,
            name=name,
            uuid=vm_uuid,
            description=description,
            tags=tags or [],
            vcpus=vcpus,
            max_vcpus=max_vcpus,
            memory_mib=memory_mib,
            max_memory_mib=max_memory_mib,
            firmware=firmware,
            machine=machine,
            virt_type=virt_type,
            autostart=bool(autostart),
            lifecycle=Lifecycle.CREATING,
            desired_state=VMState.RUNNING if start else VMState.SHUTOFF,
        )
        task = taskrunner.create_task(
            kind="vm.create",
            user=user,
            tenant=tenant,
            host=host,
            vm=vm,
            target=f"vm {name}",
            params=params,
            lock=[vm],
        )
        for ext in extensions:
            ext.reserve(vm, task, request)
    return vm, task


def disk_targets(disks: list[dict]) -> list[tuple[str, str]]:
    """The target (``vda``, ``sda``...) and bus of each new disk, in the order given."""
    out, used = [], set()
    for d in disks:
        bus = d.get("bus", "virtio")
        target = target_names("virtio" if bus == "virtio" else "scsi", used)[0]
        used.add(target)
        out.append((target, bus))
    return out


def create_plan(name: str, uuid: str, p: dict) -> Plan:
    """The plan of ``vm.create`` from its validated parameters: make or clone each disk's
    volume, define the domain on them, then autostart and start it when asked."""
    plan = Plan()
    tuning = p.get("tuning") or {}
    # host prerequisites of a tuned create (hugepages reserved...), recorded and reverted first
    plan.steps += action_steps(tuning.get("host_actions") or [])
    disks = []
    for i, (d, (target, bus)) in enumerate(zip(p["disks"], disk_targets(p["disks"]), strict=True)):
        logical = bool(d.get("logical"))
        volume = volume_name_for(name, i, d["format"] if not logical else "")
        ref = f"disk{i}"
        if d["kind"] == "new":
            plan.add(
                STORAGE, "create_volume", id=ref, pool=d["pool"], name=volume,
                size_bytes=d["size_bytes"], format=d["format"],
                describe=f"Create {d['size_bytes'] / GIB:g} GiB {d['format']} volume {volume} "
                f"in {d['pool']}",
            )  # fmt: skip
        else:
            plan.add(
                STORAGE, "clone_volume", id=ref, pool=d["pool"], name=volume,
                source_path=d["source_path"], mode=d["mode"],
                describe=f"Clone {d['source_path']} ({d['mode']}) as {volume} in {d['pool']}",
            )  # fmt: skip
        plan.creates.append({"kind": "volume", "pool": d["pool"], "name": volume})
        disks.append(
            {
                "volume": ref,
                "target": target,
                "format": d["format"] if not logical else "raw",
                "bus": bus,
                "source_type": d.get("disk_source") or ("block" if logical else "file"),
            }
        )
    build = DomainBuild(
        name=name,
        uuid=uuid,
        virt_type=p["virt_type"],
        vcpus=p["vcpus"],
        max_vcpus=p["max_vcpus"],
        memory_mib=p["memory_mib"],
        max_memory_mib=p["max_memory_mib"],
        machine=p["machine"],
        firmware=p["firmware"],
        cpu_model=p.get("cpu_model", ""),
        nics=[
            NicBuild(
                mac=n["mac"],
                source=n["network"],
                model=n.get("model", "virtio"),
                source_type=n.get("interface_type", "network"),
                source_attrs=n.get("interface_source"),
            )
            for n in p["nics"]
        ],
        boot=p.get("boot") or ["disk"],
        cdrom=p.get("cdrom", "") if p.get("with_cdrom") or p.get("cdrom") else None,
        description=p.get("description", ""),
        tuning=tuning.get("domain") or None,
    )
    plan.add(
        DOMAIN, "define", uuid=uuid, build=asdict(build), disks=disks,
        describe=f"Define the domain {name}",
    )  # fmt: skip
    plan.creates.append({"kind": "domain", "uuid": uuid})
    if p.get("autostart"):
        plan.add(DOMAIN, "set_autostart", on=True, describe="Start it with the host")
    if p.get("start"):
        plan.add(DOMAIN, "start", describe="Start it")
    return plan


# --- power ------------------------------------------------------------------------------------


def vm_power(
    *, user, vm: VirtualMachine, action: str, force: bool = False, timeout: int = 120
) -> Task:
    _require(user, Action.VM_POWER, vm.tenant_id, "power this VM")
    if action not in PowerAction.values:
        raise ValidationError({"action": f"Unknown action {action!r}."})
    _require_ready(vm)
    if vm.is_template and action == PowerAction.START:
        raise ValidationError({"vm": "A template cannot be started; clone it."})
    if vm.state not in POWER_FROM[action]:
        raise ValidationError(
            {"vm": f"Cannot {action} a VM that is {vm.get_state_display().lower()}."}
        )
    if not 5 <= int(timeout) <= 3600:
        raise ValidationError({"timeout": "Between 5 and 3600 seconds."})
    with transaction.atomic():
        if action == PowerAction.STOP:
            _preempt_pending_power(user, vm)
        task = taskrunner.create_task(
            kind="vm.power",
            user=user,
            tenant=vm.tenant,
            host=vm.host,
            vm=vm,
            target=f"vm {vm.name}",
            params={"action": action, "force": bool(force), "timeout": int(timeout)},
            lock=[vm],
        )
        VirtualMachine.objects.filter(pk=vm.pk).update(desired_state=POWER_DESIRED[action])
    return task


#: pending power actions a Stop ends first (as Proxmox does): they only wait for the guest
PREEMPTED_BY_STOP = (PowerAction.SHUTDOWN, PowerAction.REBOOT)


def stop_preempts(holder: Task | None) -> bool:
    """Whether a Stop may end ``holder`` (the task holding the VM) and run instead: a pending
    shutdown or reboot of the VM."""
    return (
        holder is not None
        and not holder.is_final
        and holder.kind == "vm.power"
        and holder.params.get("action") in PREEMPTED_BY_STOP
    )


def _preempt_pending_power(user, vm: VirtualMachine) -> None:
    """End the pending shutdown or reboot holding ``vm``'s lock (it ends ``cancelled``, its
    lock released), so the Stop that follows takes the lock. Any other holder is left to
    answer the conflict."""
    holder_id = VirtualMachine.objects.filter(pk=vm.pk).values_list("lock_id", flat=True).first()
    holder = Task.objects.filter(pk=holder_id).first() if holder_id else None
    if not stop_preempts(holder):
        return
    try:
        taskrunner.cancel(holder, user, preempt=True)
    except taskrunner.CancelRefused:
        pass  # it ended meanwhile: its lock is free, or taken by what the conflict names


# --- edit -------------------------------------------------------------------------------------


def vm_update(
    *,
    user,
    vm: VirtualMachine,
    description: str | None = None,
    tags: list | None = None,
    tenant: Tenant | None = None,
    name: str | None = None,
    vcpus: int | None = None,
    memory_mib: int | None = None,
    autostart: bool | None = None,
    notes: str | None = None,
) -> Task | None:
    """Edit a VM. Paddock's own fields change at once; what the host must change is a task.

    Returns the task, or None when nothing on the host had to change.
    """
    _require(user, Action.VM_CHANGE, vm.tenant_id, "edit this VM")
    errors = Errors()
    fields = []
    if description is not None:
        if len(description) > 200:
            errors.add("description", "At most 200 characters.")
        vm.description = description
        fields.append("description")
    if tags is not None:
        try:
            validate_tags(tags)
        except ValidationError as exc:
            errors.add("tags", "; ".join(exc.messages))
        vm.tags = tags
        fields.append("tags")
    if notes is not None:
        if len(notes) > NOTES_MAX_LENGTH:
            errors.add(
                "notes", f"At most {NOTES_MAX_LENGTH:,} characters; these are {len(notes):,}."
            )
        vm.notes = notes
        fields.append("notes")
    if tenant is not None and tenant.pk != vm.tenant_id:
        if not is_platform_admin(user):
            raise PermissionDenied("Only platform admins move VMs between tenants.")
        vm.tenant = tenant
        fields.append("tenant")

    host_change: dict = {}
    running = vm.state in (VMState.RUNNING, VMState.PAUSED)
    if name is not None and name != vm.name:
        if not NAME_RE.match(name):
            errors.add("name", "Use 1-63 letters, digits, '.', '_' or '-'.")
        elif VirtualMachine.objects.filter(host=vm.host, name=name, gone=False).exists():
            errors.add("name", f"A VM named {name} exists on host {vm.host.name}.")
        elif running:
            errors.add("name", "Shut the VM down to rename it.")
        host_change["name"] = name
    if vcpus is not None and vcpus != vm.vcpus:
        if vcpus < 1:
            errors.add("vcpus", "At least 1 vCPU.")
        elif vcpus > MAX_VCPUS:
            errors.add("vcpus", f"At most {MAX_VCPUS}.")
        elif vm.host.cpus and vcpus > vm.host.cpus:
            errors.add("vcpus", f"Host {vm.host.name} has {vm.host.cpus} CPUs; asked {vcpus}.")
        elif running and vcpus > vm.max_vcpus:
            errors.add(
                "vcpus",
                f"A running VM can grow to its maximum of {vm.max_vcpus} vCPUs; "
                "shut it down to go further.",
            )
        host_change["vcpus"] = vcpus
    if memory_mib is not None and memory_mib != vm.memory_mib:
        if memory_mib < MIN_MEMORY_MIB:
            errors.add("memory_mib", f"At least {MIN_MEMORY_MIB} MiB.")
        elif memory_mib > MAX_MEMORY_MIB:
            errors.add("memory_mib", f"At most {MAX_MEMORY_MIB} MiB.")
        elif vm.host.memory_mib and memory_mib > vm.host.memory_mib:
            errors.add("memory_mib", f"Host {vm.host.name} has {vm.host.memory_mib} MiB.")
        elif running and memory_mib > vm.max_memory_mib:
            errors.add(
                "memory_mib",
                f"A running VM's balloon can reach its maximum of {vm.max_memory_mib} MiB; "
                "shut it down to go further.",
            )
        host_change["memory_mib"] = memory_mib
    if autostart is not None and autostart != vm.autostart:
        host_change["autostart"] = bool(autostart)
    errors.raise_if_any()
    if host_change:
        _require_ready(vm)
    growth = {
        "vcpus": max(0, host_change.get("vcpus", vm.vcpus) - vm.vcpus),
        "memory_mib": max(0, host_change.get("memory_mib", vm.memory_mib) - vm.memory_mib),
    }
    with quota_guard(vm.tenant, **growth):
        if fields:
            vm.save(update_fields=[*fields, "updated"])
        if "tenant" in fields:
            # The VM's data moves with it: its disks now belong to the new tenant.
            Volume.objects.filter(
                disks__vm=vm, disks__device=DiskDevice.DISK, published=False
            ).update(tenant=vm.tenant)
        if not host_change:
            return None
        return taskrunner.create_task(
            kind="vm.edit",
            user=user,
            tenant=vm.tenant,
            host=vm.host,
            vm=vm,
            target=f"vm {vm.name}",
            params=host_change,
            lock=[vm],
        )


# --- devices ----------------------------------------------------------------------------------


def _vm_task(user, vm: VirtualMachine, kind: str, params: dict) -> Task:
    with transaction.atomic():
        return taskrunner.create_task(
            kind=kind,
            user=user,
            tenant=vm.tenant,
            host=vm.host,
            vm=vm,
            target=f"vm {vm.name}",
            params=params,
            lock=[vm],
        )


def disk_attach(
    *, user, vm: VirtualMachine, size_gib=None, pool=None, format=None, bus="virtio", volume=None
) -> Task:
    """Add a new volume (size, pool, format) or an existing one to the VM, hot when it runs."""
    _require(user, Action.VM_CHANGE, vm.tenant_id, "change this VM's hardware")
    _require_ready(vm)
    errors = Errors()
    used = set(vm.disks.values_list("target", flat=True))
    if vm.disks.filter(device=DiskDevice.DISK).count() >= MAX_DISKS:
        raise ValidationError({"vm": f"{vm.name} has {MAX_DISKS} disks, the most a VM may have."})
    if bus not in DiskBus.values:
        errors.add("bus", f"Use {', '.join(DiskBus.values)}.")
    if vm.state in (VMState.RUNNING, VMState.PAUSED) and bus == DiskBus.SATA:
        errors.add("bus", "SATA disks cannot be hot-plugged; use virtio or scsi.")
    target = target_names(bus if bus == "virtio" else "scsi", used)[0]
    params: dict = {"bus": bus, "target": target, "created_volumes": []}
    disk_gib = 0.0
    if volume is not None:
        # Read-write use: only the tenant's own volumes that no VM uses. Anything else (another
        # tenant's disk, a published image, a disk in use) is answered as unknown, alike.
        vol = volumes_usable(user, vm.tenant, USE_ATTACH).filter(pk=volume, pool__host=vm.host_id)
        vol = vol.first()
        if vol is None:
            errors.add("volume", "Unknown volume on this VM's host, or attached to a VM already.")
        else:
            params.update(
                kind="existing",
                path=vol.path,
                format=vol.format or "raw",
                disk_source=backend_for(vol.pool).disk_source,
            )
        errors.raise_if_any()
    else:
        plans = _plan_disks(
            user, vm.tenant, vm.host, [{"size_gib": size_gib, "pool": pool, "format": format,
                                        "bus": bus}], errors,
        )  # fmt: skip
        errors.raise_if_any()
        disk_gib = plans[0].gib
        params.update(plans[0].params)
    with quota_guard(vm.tenant, disk_gib=disk_gib):
        return _vm_task(user, vm, "vm.disk_attach", params)


def disk_detach(*, user, vm: VirtualMachine, disk: Disk, delete_volume: bool = False) -> Task:
    _require(user, Action.VM_CHANGE, vm.tenant_id, "change this VM's hardware")
    _require_ready(vm)
    if disk.device == DiskDevice.CDROM:
        raise ValidationError({"disk": "Eject the CD-ROM instead of removing the drive."})
    if vm.state in (VMState.RUNNING, VMState.PAUSED) and disk.bus == DiskBus.SATA:
        raise ValidationError({"disk": "SATA disks cannot be unplugged live; shut the VM down."})
    return _vm_task(
        user,
        vm,
        "vm.disk_detach",
        {"target": disk.target, "path": disk.source, "delete_volume": bool(delete_volume)},
    )


def disk_grow(*, user, vm: VirtualMachine, disk: Disk, size_gib) -> Task:
    _require(user, Action.VM_CHANGE, vm.tenant_id, "change this VM's hardware")
    _require_ready(vm)
    new_bytes = volume_bytes(size_gib)
    size = new_bytes / GIB
    current = disk.volume.capacity if disk.volume else 0
    if disk.device != DiskDevice.DISK or not disk.source:
        raise ValidationError({"disk": "Only disks with a volume can grow."})
    if new_bytes < current:
        raise ValidationError(
            {"size_gib": f"Shrinking is refused: the disk is {current / GIB:g} GiB and "
             f"shrinking it would destroy the data past {size:g} GiB."}
        )  # fmt: skip
    if new_bytes == current:
        raise ValidationError({"size_gib": f"The disk is {size:g} GiB already."})
    with quota_guard(vm.tenant, disk_gib=(new_bytes - current) / GIB):
        return _vm_task(
            user, vm, "vm.disk_grow", {"target": disk.target, "path": disk.source,
                                       "size_bytes": new_bytes}
        )  # fmt: skip


def cdrom_change(*, user, vm: VirtualMachine, volume: int | None) -> Task:
    _require(user, Action.VM_CHANGE, vm.tenant_id, "change this VM's hardware")
    _require_ready(vm)
    drive = vm.disks.filter(device=DiskDevice.CDROM).first()
    if drive is None:
        raise ValidationError({"cdrom": "This VM has no CD-ROM drive."})
    path = ""
    if volume is not None:
        iso = volumes_usable(user, vm.tenant, USE_CDROM).filter(pk=volume, pool__host=vm.host_id)
        iso = iso.first()
        if iso is None:
            raise ValidationError({"volume": "Unknown ISO volume on this VM's host."})
        path = iso.path
    return _vm_task(user, vm, "vm.cdrom", {"target": drive.target, "bus": drive.bus, "path": path})


def _interface(network: Network) -> dict:
    """How a NIC on ``network`` is written, from the network's backend (task parameters)."""
    kind, attrs = network_backend_for(network).interface_source(network)
    return {"interface_type": kind, "interface_source": attrs}


def nic_attach(*, user, vm: VirtualMachine, network: int, mac: str | None = None,
               model: str = NicModel.VIRTIO) -> Task:  # fmt: skip
    _require(user, Action.VM_CHANGE, vm.tenant_id, "change this VM's hardware")
    _require_ready(vm)
    if vm.nics.count() >= MAX_NICS:
        raise ValidationError({"vm": f"{vm.name} has {MAX_NICS} NICs, the most a VM may have."})
    errors = Errors()
    net = _resolve(networks_for(user, vm.tenant, vm.host_id), network)
    if net is None:
        errors.add("network", "Unknown network on this VM's host.")
    if model not in NicModel.values:
        errors.add("model", "virtio, e1000e or rtl8139.")
    mac = _clean_mac(mac, errors, "mac", set())
    errors.raise_if_any()
    params = {"mac": mac, "network": net.name, "model": model, **_interface(net)}
    return _vm_task(user, vm, "vm.nic_attach", params)


def nic_detach(*, user, vm: VirtualMachine, nic: Nic) -> Task:
    _require(user, Action.VM_CHANGE, vm.tenant_id, "change this VM's hardware")
    _require_ready(vm)
    return _vm_task(user, vm, "vm.nic_detach", {"mac": nic.mac})


# --- snapshots --------------------------------------------------------------------------------


def snapshot_refusal(vm: VirtualMachine) -> str | None:
    """Why an internal snapshot is impossible for this VM, or None."""
    disks = [d for d in vm.disks.all() if d.device == DiskDevice.DISK]
    raw = [d.target for d in disks if d.format != "qcow2"]
    if raw:
        return (
            f"Internal snapshots need qcow2 disks; {', '.join(raw)} "
            f"{'is' if len(raw) == 1 else 'are'} not qcow2."
        )
    if vm.vcpus_hotplugged and vm.state in (VMState.RUNNING, VMState.PAUSED):
        return (
            "vCPUs were hot-plugged since this VM started, and QEMU cannot restore a memory "
            "snapshot of such a guest; shut it down and start it again, or snapshot it shut off."
        )
    if vm.firmware == Firmware.UEFI and vm.state in (VMState.RUNNING, VMState.PAUSED):
        return "A running UEFI VM cannot take an internal snapshot (its NVRAM is not qcow2); shut it down first."
    return None


def snapshot_create(*, user, vm: VirtualMachine, name: str, description: str = "") -> Task:
    _require(user, Action.VM_SNAPSHOT, vm.tenant_id, "take snapshots of this VM")
    _require_ready(vm)
    if not SNAPSHOT_NAME_RE.match(name or ""):
        raise ValidationError({"name": "Use 1-63 letters, digits, '.', '_' or '-'."})
    if vm.snapshots.filter(name=name).exists():
        raise ValidationError({"name": f"A snapshot named {name} exists."})
    if len(description) > 200:
        raise ValidationError({"description": "At most 200 characters."})
    reason = snapshot_refusal(vm)
    if reason:
        raise ValidationError({"vm": reason})
    return _vm_task(user, vm, "vm.snapshot_create", {"name": name, "description": description})


def snapshot_revert(*, user, vm: VirtualMachine, name: str) -> Task:
    _require(user, Action.VM_SNAPSHOT, vm.tenant_id, "revert this VM")
    _require_ready(vm)
    return _vm_task(user, vm, "vm.snapshot_revert", {"name": name})


def snapshot_delete(*, user, vm: VirtualMachine, name: str) -> Task:
    _require(user, Action.VM_SNAPSHOT, vm.tenant_id, "delete this VM's snapshots")
    _require_ready(vm)
    return _vm_task(user, vm, "vm.snapshot_delete", {"name": name})


# --- templates, clones, delete ----------------------------------------------------------------


def vm_make_template(*, user, vm: VirtualMachine) -> VirtualMachine:
    _require(user, Action.VM_CHANGE, vm.tenant_id, "edit this VM")
    _require_ready(vm)
    if vm.state != VMState.SHUTOFF:
        raise ValidationError({"vm": "Shut the VM down before making it a template."})
    vm.is_template = True
    vm.save(update_fields=["is_template", "updated"])
    return vm


class CloneConflict(Exception):
    """The source is running: cloning would copy disks that are being written."""


def vm_clone(
    *, user, vm: VirtualMachine, name: str, mode: str = "full"
) -> tuple[VirtualMachine, Task]:
    _require(user, Action.VM_CREATE, vm.tenant_id, "create VMs in this tenant")
    _require_ready(vm)
    if vm.state != VMState.SHUTOFF:
        raise CloneConflict(
            f"{vm.name} is {vm.get_state_display().lower()}: shut it down before cloning, "
            "so its disks are not copied while they are written."
        )
    errors = Errors()
    if mode not in CloneMode.values:
        errors.add("mode", "full or linked.")
    elif mode == CloneMode.LINKED and not vm.is_template:
        errors.add("mode", "Linked clones are made from templates; mark the VM as a template.")
    if not NAME_RE.match(name or ""):
        errors.add("name", "Use 1-63 letters, digits, '.', '_' or '-'.")
    elif VirtualMachine.objects.filter(host=vm.host, name=name, gone=False).exists():
        errors.add("name", f"A VM named {name} exists on host {vm.host.name}.")
    disks = [d for d in vm.disks.select_related("volume__pool") if d.device == DiskDevice.DISK]
    for d in disks:
        if d.volume is None:
            errors.add("vm", f"Disk {d.target} is not a volume of a pool Paddock knows.")
        elif mode == CloneMode.LINKED and not backend_for(d.volume.pool).linked_clones:
            errors.add(
                "mode",
                f"Disk {d.target} is on a {backend_for(d.volume.pool).label} pool; "
                "linked clones need a file pool.",
            )
    errors.raise_if_any()
    disk_gib = sum(d.volume.capacity for d in disks) / GIB
    params = {
        "source_uuid": str(vm.uuid),
        "name": name,
        "mode": mode,
        "disks": [
            {
                "target": d.target,
                "path": d.source,
                "pool": d.volume.pool.name,
                "format": d.volume.format,
            }
            for d in disks
        ],
        "macs": {n.mac: new_mac() for n in vm.nics.all()},
        "created_volumes": [],
    }
    clone_uuid = uuidlib.uuid4()
    params["plan"] = clone_plan(name, str(clone_uuid), params).to_dict()
    asked = {"vms": 1, "vcpus": vm.vcpus, "memory_mib": vm.memory_mib, "disk_gib": disk_gib}
    with quota_guard(vm.tenant, **asked):
        clone = VirtualMachine.objects.create(
            host=vm.host,
            tenant=vm.tenant,
            name=name,
            uuid=clone_uuid,
            vcpus=vm.vcpus,
            max_vcpus=vm.max_vcpus,
            memory_mib=vm.memory_mib,
            max_memory_mib=vm.max_memory_mib,
            firmware=vm.firmware,
            machine=vm.machine,
            virt_type=vm.virt_type,
            lifecycle=Lifecycle.CREATING,
            desired_state=VMState.SHUTOFF,
            source_template=vm if vm.is_template else None,
        )
        task = taskrunner.create_task(
            kind="vm.clone",
            user=user,
            tenant=vm.tenant,
            host=vm.host,
            vm=clone,
            target=f"vm {name} (clone of {vm.name})",
            params=params,
            # The source is locked too: it must not start or change while it is copied.
            lock=[clone, vm],
        )
    return clone, task


def clone_plan(name: str, uuid: str, p: dict) -> Plan:
    """The plan of ``vm.clone``: copy each disk of the source (a full copy, or a qcow2
    overlay on it for a linked clone), then define a copy of its domain on the copies."""
    plan = Plan()
    disks = {}
    for i, d in enumerate(p["disks"]):
        fmt = "qcow2" if p["mode"] == "linked" else (d.get("format") or "raw")
        volume = volume_name_for(name, i, fmt)
        ref = f"disk{i}"
        plan.add(
            STORAGE, "clone_volume", id=ref, pool=d["pool"], name=volume, source_path=d["path"],
            mode=p["mode"], target=d["target"],
            describe=f"Copy {d['target']} ({p['mode']}) to {volume} in {d['pool']}",
        )  # fmt: skip
        plan.creates.append({"kind": "volume", "pool": d["pool"], "name": volume})
        disks[d["target"]] = {"volume": ref, "format": fmt}
    plan.add(
        DOMAIN, "define_clone", uuid=uuid, name=name, source_uuid=p["source_uuid"],
        disks=disks, macs=p["macs"], describe=f"Define the domain {name}",
    )  # fmt: skip
    plan.creates.append({"kind": "domain", "uuid": uuid})
    return plan


def vm_delete(*, user, vm: VirtualMachine, delete_volumes: bool = False) -> Task:
    _require(user, Action.VM_DELETE, vm.tenant_id, "delete this VM")
    if vm.lifecycle == Lifecycle.CREATING and vm.lock_id is not None:
        raise ValidationError({"vm": "This VM is still being created."})
    if vm.is_template and vm.clones.filter(gone=False).exists() and delete_volumes:
        names = ", ".join(vm.clones.filter(gone=False).values_list("name", flat=True)[:5])
        raise ValidationError(
            {"delete_volumes": f"Linked clones ({names}) use this template's volumes."}
        )
    with transaction.atomic():
        task = taskrunner.create_task(
            kind="vm.delete",
            user=user,
            tenant=vm.tenant,
            host=vm.host,
            vm=vm,
            target=f"vm {vm.name}",
            params={"delete_volumes": bool(delete_volumes), "uuid": str(vm.uuid)},
            lock=[vm],
        )
        VirtualMachine.objects.filter(pk=vm.pk).update(lifecycle=Lifecycle.DELETING)
    return task


# --- bulk actions ----------------------------------------------------------------------------

# What the VM grid does to its selected rows, each VM its own task.
BULK_ACTIONS = {
    "start": "Start",
    "shutdown": "Shut down",
    "stop": "Stop",
    "delete": "Delete",
}
MAX_BULK = 500


@dataclass
class BulkResult:
    """What a bulk action did: the task of each VM that got one, the reason of each refused."""

    action: str
    tasks: list[tuple[VirtualMachine, Task]]
    refused: list[tuple[int, VirtualMachine | None, str]]  # (id asked, its VM if seen, why)


def _refusal(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


def bulk_action(*, user, action: str, ids: list[int], delete_volumes: bool = False) -> BulkResult:
    """``action`` (start, shutdown, stop, delete) on each VM of ``ids``, through the same
    service as the VM's own button: one task per VM. What a VM may not get (the user's role,
    its state, a task holding it) is refused for that VM alone, with the reason; an id the user
    cannot see is refused like one that does not exist."""
    if action not in BULK_ACTIONS:
        raise ValidationError({"action": f"One of {', '.join(BULK_ACTIONS)}."})
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise ValidationError({"ids": "Select at least one VM."})
    if len(ids) > MAX_BULK:
        raise ValidationError({"ids": f"At most {MAX_BULK} VMs at once; asked {len(ids)}."})
    found = {vm.pk: vm for vm in restrict(
        VirtualMachine.objects.select_related("host", "tenant"), user, Action.VM_VIEW
    ).filter(pk__in=ids)}  # fmt: skip
    result = BulkResult(action=action, tasks=[], refused=[])
    for pk in ids:
        vm = found.get(pk)
        if vm is None:
            result.refused.append((pk, None, "No such VM."))
            continue
        try:
            with transaction.atomic():
                if action == "delete":
                    task = vm_delete(user=user, vm=vm, delete_volumes=delete_volumes)
                else:
                    task = vm_power(user=user, vm=vm, action=action)
        except (ValidationError, PermissionDenied, LockConflict, *conflict_errors.values()) as exc:
            result.refused.append((pk, vm, _refusal(exc)))
            continue
        result.tasks.append((vm, task))
    return result


# --- task titles ------------------------------------------------------------------------------
# What each VM task does, verb and object, as the task bar, task pages and the API name it
# (``panel.registry.task_titles``; registered in ``VmsConfig.ready()``).


def _clone_title(task: Task) -> str:
    new, _sep, source = task.object_name.partition(" (clone of ")
    return f"Clone {source.rstrip(')')} to {new}" if source else f"Clone to {new}"


def _edit_title(task: Task) -> str:
    what = [w for key, w in (("name", "rename"), ("vcpus", "vCPUs"), ("memory_mib", "memory"),
                             ("autostart", "autostart")) if key in task.params]  # fmt: skip
    return f"Change {', '.join(what) or 'the settings'} of {task.object_name}"


def _cdrom_title(task: Task) -> str:
    path = task.params.get("path") or ""
    if not path:
        return f"Eject the CD-ROM of {task.object_name}"
    return f"Insert {path.rsplit('/', 1)[-1]} into {task.object_name}"


TASK_TITLES = {
    "vm.create": lambda t: f"Create VM {t.object_name}",
    "vm.clone": _clone_title,
    "vm.delete": lambda t: f"Delete VM {t.object_name}",
    "vm.power": lambda t: f"{PowerAction(t.params['action']).label} {t.object_name}",
    "vm.edit": _edit_title,
    "vm.disk_attach": lambda t: f"Add a disk to {t.object_name}",
    "vm.disk_detach": lambda t: f"Remove disk {t.params['target']} from {t.object_name}",
    "vm.disk_grow": lambda t: (
        f"Grow disk {t.params['target']} of {t.object_name} to {t.params['size_bytes'] / GIB:g} GiB"
    ),
    "vm.cdrom": _cdrom_title,
    "vm.nic_attach": lambda t: f"Add a network device to {t.object_name}",
    "vm.nic_detach": lambda t: f"Remove NIC {t.params['mac']} from {t.object_name}",
    "vm.snapshot_create": lambda t: f"Snapshot {t.object_name}: {t.params['name']}",
    "vm.snapshot_revert": lambda t: f"Revert {t.object_name} to {t.params['name']}",
    "vm.snapshot_delete": lambda t: f"Delete snapshot {t.params['name']} of {t.object_name}",
    "vm.tune": lambda t: f"Tune {t.object_name}",
}
