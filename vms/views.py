"""Pages of virtual machines: the list, a VM's tabs, its edit form, and the VM nodes of the tree."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from hosts import selectors as host_selectors
from panel import selectors as panel_selectors
from panel.filtersets import TaskFilterSet
from panel.forms import apply_service_errors
from panel.templatetags.paddock import TREE_LIMIT
from panel.tenancy import Action, can, is_platform_admin
from panel.views import current_tab, paginate, require_platform_admin

from . import selectors, services
from .choices import VMState
from .filtersets import VirtualMachineFilterSet
from .forms import VmEditForm

VM_TABS = ("summary", "hardware", "tasks")


def vm_table_context(request: HttpRequest, fixed: dict | None = None) -> dict:
    """A filtered, paginated VM table; ``fixed`` pins filters of the page's own object.

    The filters are the API's FilterSet, so the page's query string works on /api/vms/ too.
    The number of queries does not grow with the number of VMs.
    """
    fixed = fixed or {}
    data = request.GET.copy()
    for key, value in fixed.items():
        data[key] = str(value)
    queryset = selectors.vms_for(request.user).prefetch_related(None)
    filterset = VirtualMachineFilterSet(data, queryset=queryset)
    admin = is_platform_admin(request.user)
    context = {
        "filterset": filterset,
        "page": paginate(request, filterset.qs),
        "vm_states": VMState.choices,
        "selected_states": request.GET.getlist("state"),
        "fixed": fixed,
        "show_host": "host" not in fixed,
        "show_tenant": "tenant" not in fixed,
    }
    if admin and "host" not in fixed:
        context["host_choices"] = list(
            host_selectors.hosts().order_by("name").values_list("pk", "name")
        )
    if "tenant" not in fixed:
        context["tenant_choices"] = list(
            panel_selectors.tenants_for(request.user).order_by("name").values_list("pk", "name")
        )
    return context


@login_required
def vm_list(request: HttpRequest) -> HttpResponse:
    context = vm_table_context(request)
    context["active_tab"] = "vms"
    return render(request, "vms/vm_list.html", context)


@login_required
def vm_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    vm = get_object_or_404(selectors.vms_for(user).select_related("lock"), pk=pk)
    tab = current_tab(request, VM_TABS)
    context = {
        "vm": vm,
        "tab": tab,
        "can_edit": can(user, Action.VM_CHANGE, vm.tenant_id),
        "busy": vm.lock if vm.lock_id and not vm.lock.is_final else None,
        "tree_reveal": _reveal(user, vm),
    }
    if tab == "hardware":
        context["disks"] = vm.disks.select_related("volume").order_by("target")
        context["nics"] = vm.nics.select_related("network").order_by("id")
    elif tab == "tasks":
        tasks = panel_selectors.tasks_for(user).prefetch_related(None)
        filterset = TaskFilterSet({"vm": vm.pk}, queryset=tasks)
        context["page"] = paginate(request, filterset.qs)
    return render(request, "vms/vm_detail.html", context)


def _reveal(user, vm) -> str:
    if is_platform_admin(user):
        return f"host-{vm.host_id} host-{vm.host_id}-vms"
    return f"tenant-{vm.tenant_id}"


@login_required
def vm_edit(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    vm = get_object_or_404(selectors.vms_for(user), pk=pk)
    if not can(user, Action.VM_CHANGE, vm.tenant_id):
        raise PermissionDenied("Your role may not edit this VM.")
    tenants = (
        panel_selectors.tenants_for(user).order_by("name") if is_platform_admin(user) else None
    )
    initial = {"description": vm.description, "tags": vm.tags, "tenant": vm.tenant_id}
    form = VmEditForm(request.POST or None, initial=initial, tenants=tenants)
    if request.method == "POST" and form.is_valid():
        try:
            services.vm_update(user=user, vm=vm, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"VM {vm.name} saved.")
            return redirect(vm)
    return render(
        request,
        "vms/vm_edit.html",
        {"vm": vm, "form": form, "tree_reveal": _reveal(user, vm)},
        status=400 if form.errors else 200,
    )


# --- tree nodes ----------------------------------------------------------------------------


def _tree_vms(request: HttpRequest, queryset, more_url: str) -> HttpResponse:
    vms = list(
        queryset.prefetch_related(None).filter(gone=False).order_by("name")[: TREE_LIMIT + 1]
    )
    return render(
        request,
        "vms/_tree_vms.html",
        {"vms": vms[:TREE_LIMIT], "more_url": more_url if len(vms) > TREE_LIMIT else ""},
    )


@login_required
@require_GET
def tree_host_vms(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(host_selectors.hosts(), pk=pk)
    return _tree_vms(
        request,
        selectors.vms_for(request.user).filter(host=host),
        f"{reverse('ui:vm_list')}?host={host.pk}",
    )


@login_required
@require_GET
def tree_tenant_vms(request: HttpRequest, pk: int) -> HttpResponse:
    tenant = get_object_or_404(panel_selectors.tenants_for(request.user), pk=pk)
    return _tree_vms(
        request,
        selectors.vms_for(request.user).filter(tenant=tenant),
        f"{reverse('ui:vm_list')}?tenant={tenant.pk}",
    )
