"""Pages of hosts, storage pools and networks (platform admins only), and their tree nodes."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from panel import selectors as panel_selectors
from panel.filtersets import TaskFilterSet
from panel.forms import apply_service_errors
from panel.locks import LockConflict
from panel.templatetags.paddock import TREE_LIMIT
from panel.views import current_tab, paginate, require_platform_admin
from vms import selectors as vm_selectors
from vms.choices import VMState

from . import selectors, services
from .filtersets import HostFilterSet, NetworkFilterSet, StoragePoolFilterSet, VolumeFilterSet
from .forms import HostAddForm, HostEditForm

HOST_TABS = ("summary", "vms", "storage", "networks", "tasks")


def _fixed(request: HttpRequest, **values) -> dict:
    """The request's query with some filters pinned (a page's own object)."""
    data = request.GET.copy()
    for key, value in values.items():
        data[key] = str(value)
    return data


@login_required
def host_list(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request)
    filterset = HostFilterSet(request.GET or None, queryset=selectors.hosts().order_by("name"))
    return render(
        request,
        "hosts/host_list.html",
        {"active_tab": "hosts", "filterset": filterset, "page": paginate(request, filterset.qs)},
    )


@login_required
def host_add(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request)
    form = HostAddForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            host, task = services.host_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Host {host.name} added; its first sync is task #{task.pk}.")
            return redirect(host)
    return render(
        request,
        "hosts/host_add.html",
        {"form": form, "active_tab": "hosts"},
        status=400 if form.errors else 200,
    )


@login_required
def host_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(selectors.hosts().select_related("lock"), pk=pk)
    tab = current_tab(request, HOST_TABS)
    context = {"host": host, "tab": tab, "tree_reveal": f"host-{host.pk}"}
    if tab == "summary":
        vms = (
            vm_selectors.vms_for(request.user).prefetch_related(None).filter(host=host, gone=False)
        )
        by_state = dict(vms.order_by().values_list("state").annotate(n=Count("pk")))
        context["vm_states"] = [
            (value, label, by_state[value]) for value, label in VMState.choices if value in by_state
        ]
        context["vm_total"] = sum(by_state.values())
        context["running"] = vms.filter(state=VMState.RUNNING).aggregate(
            vcpus=Sum("vcpus"), memory_mib=Sum("memory_mib")
        )
        context["busy"] = host.lock if host.lock_id and not host.lock.is_final else None
    elif tab == "vms":
        from vms.views import vm_table_context

        context["tree_reveal"] = f"host-{host.pk} host-{host.pk}-vms"
        context.update(vm_table_context(request, fixed={"host": host.pk}))
    elif tab == "storage":
        pools = StoragePoolFilterSet(_fixed(request, host=host.pk), queryset=selectors.pools())
        volumes = VolumeFilterSet(
            _fixed(request, host=host.pk),
            queryset=selectors.volumes().prefetch_related("disks__vm"),
        )
        context["pools"] = pools.qs
        context["volumes_filter"] = volumes
        context["page"] = paginate(request, volumes.qs)
    elif tab == "networks":
        networks = NetworkFilterSet(_fixed(request, host=host.pk), queryset=selectors.networks())
        context["networks"] = networks.qs.annotate(nic_count=Count("nics"))
    else:
        tasks = panel_selectors.tasks_for(request.user).prefetch_related(None)
        filterset = TaskFilterSet(_fixed(request, host=host.pk), queryset=tasks)
        context["page"] = paginate(request, filterset.qs)
    return render(request, "hosts/host_detail.html", context)


@login_required
def host_edit(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(selectors.hosts(), pk=pk)
    initial = {"description": host.description, "tags": host.tags}
    form = HostEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.host_update(user=request.user, host=host, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Host {host.name} saved.")
            return redirect(host)
    return render(
        request,
        "hosts/host_edit.html",
        {"host": host, "form": form, "tree_reveal": f"host-{host.pk}"},
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def host_sync(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(selectors.hosts(), pk=pk)
    try:
        task = services.host_sync(user=request.user, host=host)
    except LockConflict as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Re-sync of {host.name} queued as task #{task.pk}.")
    return redirect(host)


@login_required
def host_remove(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(selectors.hosts(), pk=pk)
    if request.method == "POST":
        try:
            services.host_delete(user=request.user, host=host)
        except LockConflict as exc:
            messages.error(request, str(exc))
            return redirect(host)
        messages.success(
            request, f"Host {host.name} removed from Paddock. The host itself is untouched."
        )
        return redirect("ui:host_list")
    return render(
        request, "hosts/host_remove.html", {"host": host, "tree_reveal": f"host-{host.pk}"}
    )


@login_required
def pool_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    pool = get_object_or_404(selectors.pools(), pk=pk)
    volumes = VolumeFilterSet(
        _fixed(request, pool=pool.pk), queryset=selectors.volumes().prefetch_related("disks__vm")
    )
    return render(
        request,
        "hosts/pool_detail.html",
        {
            "pool": pool,
            "host": pool.host,
            "volumes_filter": volumes,
            "page": paginate(request, volumes.qs),
            "tree_reveal": f"host-{pool.host_id} host-{pool.host_id}-pools",
        },
    )


@login_required
def network_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    network = get_object_or_404(selectors.networks(), pk=pk)
    nics = network.nics.select_related("vm", "vm__tenant").order_by("vm__name", "mac")
    return render(
        request,
        "hosts/network_detail.html",
        {
            "network": network,
            "host": network.host,
            "page": paginate(request, nics),
            "tree_reveal": f"host-{network.host_id} host-{network.host_id}-networks",
        },
    )


# --- tree nodes ----------------------------------------------------------------------------


@login_required
@require_GET
def tree_host_pools(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(selectors.hosts(), pk=pk)
    pools = list(selectors.pools().filter(host=host, gone=False).order_by("name")[: TREE_LIMIT + 1])
    return render(
        request,
        "hosts/_tree_pools.html",
        {
            "pools": pools[:TREE_LIMIT],
            "more_url": f"{reverse('ui:host', args=[host.pk])}?tab=storage"
            if len(pools) > TREE_LIMIT
            else "",
        },
    )


@login_required
@require_GET
def tree_host_networks(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    host = get_object_or_404(selectors.hosts(), pk=pk)
    networks = list(
        selectors.networks().filter(host=host, gone=False).order_by("name")[: TREE_LIMIT + 1]
    )
    return render(
        request,
        "hosts/_tree_networks.html",
        {
            "networks": networks[:TREE_LIMIT],
            "more_url": f"{reverse('ui:host', args=[host.pk])}?tab=networks"
            if len(networks) > TREE_LIMIT
            else "",
        },
    )
