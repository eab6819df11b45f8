"""Tuning in the console: a VM's "Tuning" tab (status, plan, fit, apply, proof, advice), the
policy list and editor, and a host's "Tuning" tab (pCPUs by node and core, hugepages, the
housekeeping set).

Every answer and every write comes from ``tuning.services``, as for the API; the views only
turn forms into the services' arguments and their answers and errors into pages. The two tabs
are registered here (``panel.generic.register_tab``), so ``vms`` and ``hosts`` import nothing
of tuning; this module is imported by ``tuning.urls``.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import F, Q
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.dateparse import parse_datetime

from hosts import selectors as host_selectors
from hosts.models import Host
from hosts.views import HostView
from panel.generic import PanelView, ViewTab, paginate, queued_message, register_tab
from panel.selectors import tenants_for
from panel.tenancy import Action, can, is_platform_admin
from panel.xmlutil import format_cpuset
from vms.models import VirtualMachine
from vms.views.common import vm_url
from vms.views.pages import VmView

from . import knobs as knob_defs
from . import services
from .models import TuningPolicy, VmTuning
from .proof import INSUFFICIENT

# --- the knob form -----------------------------------------------------------------------------

GROUPS = (
    ("cpu", "CPU"),
    ("numa", "NUMA"),
    ("memory", "Memory"),
    ("disk", "Disk"),
    ("network", "Network"),
    ("host", "Host"),
)

#: the knobs with a fixed set of values (``tuning.knobs``); ``None`` in a list is "not set"
CHOICES: dict[str, tuple] = {
    "cpu.placement": knob_defs.PLACEMENTS,
    "cpu.emulator": knob_defs.EMULATOR,
    "cpu.iothread_pin": ("shared", "dedicated"),
    "numa.mode": knob_defs.NUMA_MODES,
    "memory.hugepages": tuple(knob_defs.HUGEPAGES),
    "disk.cache": knob_defs.CACHE_MODES,
    "disk.io": knob_defs.IO_MODES,
    "disk.discard": knob_defs.DISCARD,
    "network.rx_queue_size": (None, *knob_defs.QUEUE_SIZES),
    "network.tx_queue_size": (None, *knob_defs.QUEUE_SIZES),
    "host.thp": (None, *knob_defs.THP_MODES),
    "host.ksm": (None, True, False),
}
#: the knobs taking a word or a number (``default``, ``vcpus`` or 1..n)
WORD_OR_NUMBER = {"disk.queues", "network.queues"}
#: the knobs shown folded under their group (many, and rarely set)
FOLDED = ("disk.throttle.",)

HELP = {
    "cpu.placement": "dedicated pins each vCPU to a pCPU of its own; isolate-siblings keeps "
    "the other thread of each core idle.",
    "cpu.emulator": "isolate gives QEMU's emulator threads a pCPU of their own.",
    "cpu.topology": "default, auto (from the host's cores and threads) or "
    "sockets=1, cores=4, threads=2.",
    "cpu.model": "default, host-passthrough, host-model or a named CPU model.",
    "cpu.shares": "Relative CPU weight (2 to 262144); empty: not set.",
    "cpu.period": "µs (1000 to 1000000); empty: not set.",
    "cpu.quota": "µs per vCPU per period; needs a period; shared placement only.",
    "disk.queues": "default, vcpus or 1 to 64.",
    "network.queues": "default, vcpus or 1 to 256.",
    "memory.balloon.period": "Stats period in seconds; 0: off.",
    "host.halt_poll_ns": "KVM halt polling in ns; empty: the host's.",
}


def _flatten(defaults: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in defaults.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "cpu.topology":
            out += _flatten(value, f"{name}.")
        else:
            out.append((name, value))
    return out


#: every knob by its dotted name, with its default, in the order of ``tuning.knobs.DEFAULTS``
KNOBS = _flatten(knob_defs.DEFAULTS)


def _word(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


LABELS = {
    "cpu.iothreads": "I/O threads",
    "cpu.iothread_pin": "I/O thread pins",
    "cpu.model": "CPU model",
    "memory.locked": "Locked in RAM",
    "memory.nosharepages": "No page sharing (KSM)",
    "memory.balloon.enabled": "Balloon",
    "memory.balloon.autodeflate": "Balloon autodeflate",
    "memory.hard_limit_mib": "Hard limit (MiB)",
    "memory.soft_limit_mib": "Soft limit (MiB)",
    "disk.io": "I/O mode",
    "disk.iothread": "Disks on an I/O thread",
    "network.rx_queue_size": "RX queue size",
    "network.tx_queue_size": "TX queue size",
    "host.halt_poll_ns": "Halt polling (ns)",
    "host.thp": "Transparent hugepages",
    "host.ksm": "KSM",
    "host.irq_affinity": "IRQs off dedicated pCPUs",
}


def _label(name: str) -> str:
    if name in LABELS:
        return LABELS[name]
    if name.startswith("disk.throttle."):
        return name.rpartition(".")[2]  # libvirt's <iotune> names
    return name.split(".", 1)[1].replace(".", " ").replace("_", " ").capitalize()


def _knob_field(name: str, default, disabled: bool) -> forms.Field:
    help_text = HELP.get(name, "")
    common = {"label": _label(name), "required": False, "disabled": disabled}
    if name in CHOICES:
        values = CHOICES[name]
        choices = [(_word(v), _word(v) if v is not None else "not set") for v in values]
        field = forms.ChoiceField(choices=choices, **common)
    elif isinstance(default, bool):
        field = forms.BooleanField(**common)
    elif isinstance(default, int) or default is None:
        field = forms.IntegerField(**common)
    else:
        field = forms.CharField(max_length=64, **common)
    field.help_text = help_text
    field.knob = name
    field.widget.attrs["data-knob"] = name
    return field


def _to_value(name: str, default, raw):
    """A form value as the knob's JSON value (the service checks it)."""
    if name in CHOICES:
        by_word = {_word(v): v for v in CHOICES[name]}
        return by_word.get(raw, raw)
    if isinstance(default, bool):
        return bool(raw)
    if isinstance(default, int):
        return default if raw is None else raw
    if default is None:
        return raw
    text = (raw or "").strip()
    if name == "cpu.topology":
        if "=" not in text:
            return text or "default"
        parts = {}
        for item in text.replace(",", " ").split():
            key, _eq, number = item.partition("=")
            parts[key.strip()] = int(number) if number.strip().isdigit() else number.strip()
        return parts
    if name in WORD_OR_NUMBER and text.isdigit():
        return int(text)
    return text or default


def _initial_value(name: str, value):
    if name in CHOICES:
        return _word(value)
    if name == "cpu.topology" and isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return value


def _get(knobs: dict, name: str):
    value = knobs
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _set(knobs: dict, name: str, value) -> None:
    parts = name.split(".")
    if name.startswith("cpu.topology"):
        parts = ["cpu", "topology"]
    target = knobs
    for part in parts[:-1]:
        target = target.setdefault(part, {})
    target[parts[-1]] = value


class PolicyForm(forms.Form):
    """A policy's name, description, owner (when new) and every knob by its dotted name."""

    name = forms.CharField(max_length=63)
    description = forms.CharField(max_length=200, required=False)

    def __init__(self, *args, owners=None, readonly=False, knobs=None, **kwargs):
        super().__init__(*args, **kwargs)
        if owners is not None:
            self.fields["tenant"] = forms.ChoiceField(
                choices=owners, required=False, label="Owner",
                help_text="A platform policy is for every tenant; a tenant's for its VMs.",
            )  # fmt: skip
        for name, default in KNOBS:
            self.fields[name] = _knob_field(name, default, readonly)
            if knobs is not None and not self.is_bound:
                self.initial[name] = _initial_value(name, _get(knobs, name))
        if readonly:
            for field in self.fields.values():
                field.disabled = True

    def knobs(self) -> dict:
        out: dict = {}
        for name, default in KNOBS:
            _set(out, name, _to_value(name, default, self.cleaned_data.get(name)))
        return out

    def add_service_errors(self, exc: ValidationError) -> dict[str, list[str]]:
        """The service's errors at their fields (``cpu.topology.cores`` at ``cpu.topology``);
        what names a group, not a field, is returned by group; the rest is the form's."""
        by_group: dict[str, list[str]] = {}
        if not hasattr(exc, "error_dict"):
            self.add_error(None, exc.messages)
            return by_group
        for key, errors in exc.message_dict.items():
            field = key
            while field and field not in self.fields:
                field = field.rpartition(".")[0]
            if field:
                self.add_error(field, errors if field == key else [f"{key}: {e}" for e in errors])
            elif key.split(".")[0] in dict(GROUPS):
                by_group.setdefault(key.split(".")[0], []).extend(f"{key}: {e}" for e in errors)
            elif key == "tenant" and "tenant" in self.fields:
                self.add_error("tenant", errors)
            else:
                self.add_error(None, errors)
        return by_group

    def groups(self, group_errors: dict | None = None) -> list[dict]:
        out = []
        for group, label in GROUPS:
            names = [n for n, _d in KNOBS if n.startswith(f"{group}.")]
            folded = [n for n in names if n.startswith(FOLDED)]
            out.append(
                {
                    "name": group,
                    "label": label,
                    "fields": [self[n] for n in names if n not in folded],
                    "folded": [self[n] for n in folded],
                    "folded_errors": any(self[n].errors for n in folded),
                    "errors": (group_errors or {}).get(group, []),
                }
            )
        return out


def _owners(user) -> list[tuple[str, str]]:
    """Who a new policy may belong to: the platform (platform admins) and the tenants whose
    admin the user is."""
    owners = [("", "Platform (every tenant)")] if is_platform_admin(user) else []
    for tenant in tenants_for(user).order_by("name"):
        if can(user, Action.MEMBERSHIP_MANAGE, tenant.pk):
            owners.append((str(tenant.pk), f"Tenant {tenant.name}"))
    return owners


def _may_manage(user, policy: TuningPolicy) -> bool:
    return not policy.builtin and services.may_manage(user, policy.tenant_id)


# --- the policy pages --------------------------------------------------------------------------


class PolicyPage(PanelView):
    """A page about one tuning policy: among the policies the user may see (else 404)."""

    model = TuningPolicy

    def get_queryset(self, request: HttpRequest):
        return services.policies_for(request.user).select_related("tenant")


class PolicyListView(PanelView):
    """Every policy the user may see: the built-in profiles, the platform's and their
    tenants'; the built-ins are copied, the others edited by whoever manages them."""

    methods = ("GET", "HEAD")

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        policies = (
            services.policies_for(request.user)
            .select_related("tenant")
            .order_by(F("tenant__name").asc(nulls_first=True), "-builtin", "name", "pk")
        )
        page = paginate(request, policies)
        rows = [{"policy": p, "manage": _may_manage(request.user, p)} for p in page.object_list]
        context = {
            "active_tab": "tuning",
            "page": page,
            "rows": rows,
            "may_create": bool(_owners(request.user)),
        }
        return render(request, "tuning/policy_list.html", context)


def _policy_page(request, form, policy, *, readonly, group_errors=None, status=200):
    context = {
        "active_tab": "tuning",
        "policy": policy,
        "form": form,
        "groups": form.groups(group_errors),
        "readonly": readonly,
        "may_manage": policy is not None and _may_manage(request.user, policy),
    }
    return render(request, "tuning/policy_edit.html", context, status=status)


class PolicyCreateView(PanelView):
    """A new policy: its owner, name, description and knobs (defaults to start from)."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        owners = _owners(request.user)
        if not owners:
            raise PermissionDenied("Only platform and tenant admins create tuning policies.")
        form = PolicyForm(
            request.POST if request.method == "POST" else None,
            owners=owners, knobs=knob_defs.DEFAULTS,
        )  # fmt: skip
        group_errors = None
        if request.method == "POST" and form.is_valid():
            tenant = form.cleaned_data.get("tenant") or None
            try:
                policy = services.create_policy(
                    request.user, name=form.cleaned_data["name"], knobs=form.knobs(),
                    tenant=int(tenant) if tenant else None,
                    description=form.cleaned_data["description"],
                )  # fmt: skip
            except ValidationError as exc:
                group_errors = form.add_service_errors(exc)
            else:
                messages.success(request, f"Policy {policy.name} created (version 1).")
                return redirect("ui:tuning_policy", pk=policy.pk)
        status = 400 if form.errors or group_errors else 200
        return _policy_page(request, form, None, readonly=False, group_errors=group_errors,
                            status=status)  # fmt: skip


class PolicyEditView(PolicyPage):
    """A policy's page: its knobs as a form; read-only for built-ins and for users who do not
    manage it. Saving changed knobs makes a new version."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        policy = self.get_object(request, **kwargs)
        readonly = not _may_manage(request.user, policy)
        if request.method == "POST" and readonly:
            raise PermissionDenied(
                "Built-in profiles are not edited: copy one instead."
                if policy.builtin
                else "Your role may not change this policy."
            )
        data = request.POST if request.method == "POST" else None
        form = PolicyForm(
            data, readonly=readonly, knobs=policy.knobs,
            initial={"name": policy.name, "description": policy.description},
        )  # fmt: skip
        group_errors = None
        if request.method == "POST" and form.is_valid():
            before = policy.version
            try:
                policy = services.update_policy(
                    request.user, policy, knobs=form.knobs(), name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                )  # fmt: skip
            except ValidationError as exc:
                group_errors = form.add_service_errors(exc)
                policy.refresh_from_db()
            else:
                changed = policy.version != before
                messages.success(
                    request,
                    f"Policy {policy.name} saved"
                    + (f" as version {policy.version}." if changed else "."),
                )
                return redirect("ui:tuning_policy", pk=policy.pk)
        status = 400 if form.errors or group_errors else 200
        return _policy_page(request, form, policy, readonly=readonly, group_errors=group_errors,
                            status=status)  # fmt: skip


class CopyForm(forms.Form):
    name = forms.CharField(max_length=63, label="Name of the copy")

    def __init__(self, *args, owners=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tenant"] = forms.ChoiceField(choices=owners, required=False, label="Owner")


class PolicyCopyView(PolicyPage):
    """A copy of a policy (a built-in profile, usually) that its owner may edit."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        policy = self.get_object(request, **kwargs)
        owners = _owners(request.user)
        if not owners:
            raise PermissionDenied("Only platform and tenant admins create tuning policies.")
        initial = {"name": f"{policy.name}-copy"[:63]}
        if policy.tenant_id and str(policy.tenant_id) in dict(owners):
            initial["tenant"] = str(policy.tenant_id)
        form = CopyForm(
            request.POST if request.method == "POST" else None, owners=owners, initial=initial
        )
        if request.method == "POST" and form.is_valid():
            tenant = form.cleaned_data.get("tenant") or None
            try:
                copy = services.copy_policy(
                    request.user, policy, name=form.cleaned_data["name"],
                    tenant=int(tenant) if tenant else None,
                )  # fmt: skip
            except ValidationError as exc:
                for key, errors in exc.message_dict.items():
                    form.add_error(key if key in form.fields else None, errors)
            else:
                messages.success(request, f"Policy {copy.name} created from {policy.name}.")
                return redirect("ui:tuning_policy", pk=copy.pk)
        context = {"active_tab": "tuning", "policy": policy, "form": form}
        return render(
            request, "tuning/policy_copy.html", context, status=400 if form.errors else 200
        )


class PolicyDeleteView(PolicyPage):
    """A confirmation (GET), then the deletion (POST); a policy in use is refused."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        policy = self.get_object(request, **kwargs)
        if not _may_manage(request.user, policy):
            raise PermissionDenied(
                "Built-in profiles cannot be deleted."
                if policy.builtin
                else "Your role may not delete this policy."
            )
        error = ""
        if request.method == "POST":
            try:
                services.delete_policy(request.user, policy)
            except ValidationError as exc:
                error = " ".join(exc.messages)
            else:
                messages.success(request, f"Policy {policy.name} deleted.")
                return redirect("ui:tuning_policy_list")
        context = {"active_tab": "tuning", "policy": policy, "error": error}
        return render(request, "tuning/policy_delete.html", context, status=400 if error else 200)


# --- a VM's tuning tab -------------------------------------------------------------------------


def diff_lines(diff: str) -> list[dict]:
    """A unified diff as lines with a class each: added, removed, a hunk, a file, the same."""
    out = []
    for line in (diff or "").splitlines():
        if line.startswith(("+++", "---")):
            kind = "file"
        elif line.startswith("@@"):
            kind = "hunk"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append({"text": line, "kind": kind})
    return out


def describe_action(action: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in action.items() if k != "kind")
    return f"{action.get('kind', '?')}: {params}" if params else str(action.get("kind", "?"))


def describe_live(change: dict) -> str:
    params = ", ".join(
        f"{k}={v}" for k, v in change.items() if k != "op" and not isinstance(v, dict)
    )
    nested = [
        ", ".join(f"{k}={v}" for k, v in value.items())
        for value in change.values()
        if isinstance(value, dict)
    ]
    return "; ".join(part for part in (params, *nested) if part)


def _plan_context(plan: dict) -> dict:
    return {
        "plan": plan,
        "diff": diff_lines(plan.get("diff", "")),
        "host_actions": [describe_action(a) for a in plan.get("host_actions") or []],
        "promised_cpus": format_cpuset(
            a["cpu"] for a in (plan.get("allocations") or {}).get("cpus") or []
        ),
        "live": [
            {"op": c.get("op", "?"), "params": describe_live(c)} for c in plan.get("live") or []
        ],
    }


def _proof_rows(proof: dict) -> list[dict]:
    changes = []
    for change in proof.get("changes") or []:
        rows = []
        for metric in proof.get("metrics") or []:
            before = (change.get("before") or {}).get(metric) or {}
            after = (change.get("after") or {}).get(metric) or {}
            rows.append(
                {
                    "metric": metric,
                    "before": before.get("avg"),
                    "before_points": before.get("points", 0),
                    "after": after.get("avg"),
                    "after_points": after.get("points", 0),
                    "delta": (change.get("delta") or {}).get(metric),
                }
            )
        changes.append(
            {
                **change,
                "applied": parse_datetime(change.get("applied_at") or ""),
                "rows": rows,
                "insufficient": change.get("status") == INSUFFICIENT,
            }
        )
    return changes


def _usable_policies(user, vm):
    return (
        services.policies_for(user)
        .filter(Q(tenant__isnull=True) | Q(tenant_id=vm.tenant_id))
        .select_related("tenant")
        .order_by(F("tenant__name").asc(nulls_first=True), "-builtin", "name")
    )


def _vm_tuning(request: HttpRequest, vm) -> dict:
    user = request.user
    status = services.tuning_status(user, vm)
    may_apply = can(user, Action.VM_CHANGE, vm.tenant_id) and not vm.gone
    context = {
        "status": status,
        "applied_at": parse_datetime(status["applied_at"] or ""),
        "may_apply": may_apply,
        "tuning_policies": list(_usable_policies(user, vm)),
        "proof_changes": _proof_rows(status["proof"]),
        "proof_window_min": status["proof"].get("window_seconds", 0) // 60,
        "apply_url": reverse("ui:vm_tuning_apply", args=[vm.pk]),
        "tuning_refused": getattr(request, "tuning_refused", None),
    }
    refused = context["tuning_refused"]
    chosen = request.GET.get("policy") or (refused["policy_id"] if refused else "")
    if not chosen:
        context["chosen_id"] = status["policy_id"]
        return context
    try:
        policy = services.resolve_policy(user, str(chosen))
        services.usable(policy, vm.tenant_id)
    except ValidationError as exc:
        context["plan_error"] = " ".join(exc.messages)
        return context
    context["chosen"] = policy
    context["chosen_id"] = policy.pk
    context["fit"] = services.fit_vm(user, vm, policy)
    if not may_apply:
        return context
    try:
        plan = services.plan_vm(user, vm, policy)
    except services.FitRefused as exc:
        context["plan_refused"] = str(exc)
    except ValidationError as exc:
        context["plan_error"] = " ".join(exc.messages)
    else:
        context.update(_plan_context(plan.to_dict()))
    return context


def _vm_tuning_badge(vm) -> str | None:
    """ "drift" beside the tab's label while the VM drifted, "restart" while it must restart."""
    row = VmTuning.objects.filter(vm=vm).values("drift", "restart_needed").first()
    if row is None:
        return None
    return "drift" if row["drift"] else ("restart" if row["restart_needed"] else None)


register_tab(
    VirtualMachine,
    ViewTab("tuning", "Tuning", "numa", "tuning/tabs/vm_tuning.html", 250, context=_vm_tuning,
            badge=_vm_tuning_badge),
)  # fmt: skip


def _render_tab(view_class, request: HttpRequest, tab: str, status: int, **kwargs):
    """The object's page at ``tab`` (a POST that failed shows its errors there)."""
    request.GET = QueryDict(f"tab={tab}")
    response = view_class.as_view()(request, **kwargs)
    response.status_code = status
    return response


class VmTuningApplyView(PanelView):
    """Apply a policy to a VM (POST): queue ``vm.tune`` and go back to the tab with the task;
    a policy that does not fit shows its fit report on the tab (409)."""

    methods = ("POST",)
    model = VirtualMachine
    permission = Action.VM_CHANGE
    permission_what = "change this VM's tuning"

    def get_queryset(self, request: HttpRequest):
        return VmView().get_queryset(request)

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        vm = self.get_object(request, **kwargs)
        self.check_permission(request, vm)
        policy = request.POST.get("policy", "")
        try:
            policy = services.resolve_policy(request.user, policy)
            task = services.apply_policy(request.user, vm, policy)
        except services.FitRefused as exc:
            request.tuning_refused = {"message": str(exc), "report": exc.report,
                                      "policy_id": policy.pk}  # fmt: skip
            return _render_tab(VmView, request, "tuning", 409, pk=vm.pk)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect(vm_url(vm, "tuning"))
        messages.success(request, queued_message(f"Tuning of {vm.name} with {policy.name}", task))
        return redirect(f"{vm_url(vm, 'tuning')}&task={task.pk}")


# --- a host's tuning tab -----------------------------------------------------------------------


def parse_cpus(text: str) -> list[int]:
    """``0,8,16-17`` as ``[0, 8, 16, 17]``; a ValidationError at the field otherwise."""
    cpus: list[int] = []
    for part in (text or "").replace(" ", ",").split(","):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValidationError({"housekeeping": f"{part!r} is not a pCPU or a range."})
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first or last - first > 4096:
            raise ValidationError({"housekeeping": f"{part!r} is not a range."})
        cpus += range(first, last + 1)
    return cpus


def _pages_rows(pages: list[dict]) -> list[dict]:
    rows = []
    for p in pages:
        reserved = int(p.get("reserved") or 0)
        free = int(p.get("free") or 0)
        promised = int(p.get("promised") or 0)
        used = max(0, reserved - free)
        rows.append(
            {
                **p,
                "used": used,
                "used_pct": round(100 * used / reserved) if reserved else 0,
                "promised_pct": round(100 * promised / reserved) if reserved else 0,
                "available": max(0, free - promised),
            }
        )
    return rows


def _host_tuning(request: HttpRequest, host) -> dict:
    data = services.host_tuning(host)
    for node in data["nodes"]:
        node["hugepages"] = _pages_rows(node["hugepages"])
        node["cpu_count"] = sum(len(core) for core in node["cores"])
        node["free_count"] = sum(1 for core in node["cores"] for c in core if not c["holder"])
    error = getattr(request, "housekeeping_error", None)
    return {
        "host_tuning": data,
        "housekeeping_value": getattr(request, "housekeeping_value", None)
        or format_cpuset(data["housekeeping"]),
        "housekeeping_error": error,
        "may_set_housekeeping": is_platform_admin(request.user),
    }


register_tab(
    Host,
    ViewTab("tuning", "Tuning", "numa", "tuning/tabs/host_tuning.html", 250, context=_host_tuning),
)


class HousekeepingView(PanelView):
    """A host's housekeeping pCPUs (POST, platform admins): kept off every dedicated VM."""

    methods = ("POST",)
    admin_only = True

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        host = get_object_or_404(host_selectors.hosts(), pk=kwargs["pk"])
        value = request.POST.get("housekeeping", "")
        try:
            services.set_housekeeping(request.user, host, parse_cpus(value))
        except ValidationError as exc:
            request.housekeeping_error = " ".join(exc.messages)
            request.housekeeping_value = value
            return _render_tab(HostView, request, "tuning", 400, pk=host.pk)
        host.refresh_from_db()
        messages.success(
            request,
            f"Housekeeping pCPUs of {host.name}: {format_cpuset(host.housekeeping_cpus)}.",
        )
        return redirect(f"{reverse('ui:host', args=[host.pk])}?tab=tuning")
