"""Pages of hosts, storage pools and networks (platform admins only), and their tree nodes.

A pool's volumes are created, grown, deleted and uploaded through ``hosts.services``, like from
the API. Each action is a small form that works as a page of its own and, opened from a button
with ``data-dialog``, inside the page's dialog; service errors stay on the form.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_POST

from panel import selectors as panel_selectors
from panel.filtersets import TaskFilterSet
from panel.forms import apply_service_errors
from panel.generic import (
    busy_message,
    current_tab,
    is_htmx,
    paginate,
    queued_message,
    require_platform_admin,
    task_link,
)
from panel.locks import LockConflict
from panel.models import Tenant
from panel.templatetags.paddock import TREE_LIMIT
from vms import selectors as vm_selectors
from vms.choices import VMState

from . import selectors, services
from .filtersets import HostFilterSet, NetworkFilterSet, StoragePoolFilterSet, VolumeFilterSet
from .forms import (
    HostAddForm,
    HostEditForm,
    VolumeCreateForm,
    VolumeDeleteForm,
    VolumeGrowForm,
    VolumePublishForm,
    VolumeUploadForm,
)
from .storage import backend_for

HOST_TABS = ("summary", "vms", "storage", "networks", "tasks")
GIB = 1024**3


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


def _pool_blocked(pool) -> str:
    """Why no volume can be added to this pool right now ('' when one can)."""
    if pool.gone:
        return "Gone from its host"
    if pool.state != "active":
        return f"Pool {pool.name} is not active"
    return ""


def _volume_blocked(volume) -> str:
    """Why no action can start on this volume right now ('' when they can)."""
    if volume.gone:
        return "Gone from its host"
    if volume.lock_id and volume.lock and not volume.lock.is_final:
        return f"Busy with task #{volume.lock_id}"
    return ""


@login_required
def pool_detail(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    pool = get_object_or_404(selectors.pools(), pk=pk)
    volumes = VolumeFilterSet(
        _fixed(request, pool=pool.pk),
        queryset=selectors.volumes().select_related("lock").prefetch_related("disks__vm"),
    )
    page = paginate(request, volumes.qs)
    for volume in page.object_list:
        volume.blocked = _volume_blocked(volume)
    return render(
        request,
        "hosts/pool_detail.html",
        {
            "pool": pool,
            "host": pool.host,
            "volumes_filter": volumes,
            "page": page,
            "pool_blocked": _pool_blocked(pool),
            "tree_reveal": f"host-{pool.host_id} host-{pool.host_id}-pools",
        },
    )


# --- volume actions: one small form each, as a page or in the dialog ------------------------


def _post_or_none(request: HttpRequest):
    return request.POST if request.method == "POST" else None


def _volume_action(
    request: HttpRequest,
    pool,
    form,
    perform: Callable[[dict], str],
    *,
    title: str,
    submit: str,
    icon: str = "check",
    danger: bool = False,
    intro: str = "",
    template: str = "hosts/_volume_form.html",
    extra: dict | None = None,
) -> HttpResponse:
    """Show ``form``; on a valid POST call ``perform(cleaned_data)``, which returns the message
    for the pool page. Service errors land on the form, a lock held by a task names the task."""
    pool_url = reverse("ui:pool", args=[pool.pk])
    if request.method == "POST" and form.is_valid():
        try:
            message = perform(form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc, {"size": "file"})
        except LockConflict as exc:
            form.add_error(None, busy_message(exc))
        else:
            messages.success(request, message)
            if is_htmx(request):
                return HttpResponse(status=204, headers={"HX-Redirect": pool_url})
            return redirect(pool_url)
    context = {
        "pool": pool,
        "host": pool.host,
        "form": form,
        "form_template": template,
        "title": title,
        "submit": submit,
        "icon": icon,
        "danger": danger,
        "intro": intro,
        "action_url": request.get_full_path(),
        "cancel_url": pool_url,
        "tree_reveal": f"host-{pool.host_id} host-{pool.host_id}-pools",
        **(extra or {}),
    }
    page = "hosts/_volume_dialog.html" if is_htmx(request) else "hosts/volume_action.html"
    return render(request, page, context, status=400 if form.errors else 200)


def _get_volume(pk: int):
    volume = get_object_or_404(selectors.volumes().select_related("lock"), pk=pk)
    if volume.gone:
        raise Http404("This volume is gone from its host.")
    return volume


@login_required
def volume_create(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    pool = get_object_or_404(selectors.pools(), pk=pk)
    backend = backend_for(pool)
    form = VolumeCreateForm(_post_or_none(request), formats=backend.formats)

    def perform(data):
        task = services.volume_create(
            user=request.user,
            pool=pool,
            name=data["name"],
            size_gib=data["size_gib"],
            format=data.get("format", ""),
        )
        return queued_message(f"Creation of volume {data['name']}", task)

    free = f"{pool.available / GIB:.1f} GiB free"
    return _volume_action(
        request,
        pool,
        form,
        perform,
        title=f"Create volume in {pool.name}",
        submit="Create volume",
        icon="plus",
        intro=f"Pool {pool.name} ({pool.get_pool_type_display()}) has {free}."
        + (" LVM volumes are raw block devices." if backend.disk_source == "block" else ""),
    )


@login_required
def volume_upload(request: HttpRequest, pk: int) -> HttpResponse:
    """The upload form. With the page's script the browser streams the file to the API
    (``POST /api/storage-pools/{id}/upload/``) and shows its progress; without it, the form
    posts here and the file is stored the same way once received."""
    require_platform_admin(request)
    pool = get_object_or_404(selectors.pools(), pk=pk)
    form = VolumeUploadForm(_post_or_none(request), request.FILES or None)

    def perform(data):
        upload = data["file"]
        volume, task = services.volume_upload(
            user=request.user,
            pool=pool,
            name=data["name"],
            size=upload.size,
            chunks=upload.chunks(),
            format=data["format"],
        )
        return format_html("Uploaded volume {} ({}).", volume.name, task_link(task))

    return _volume_action(
        request,
        pool,
        form,
        perform,
        title=f"Upload to {pool.name}",
        submit="Upload",
        icon="disc",
        intro=f"Pool {pool.name} has {pool.available / GIB:.1f} GiB free. The file goes "
        "straight to the host; keep this page open until it is stored.",
        template="hosts/_upload_form.html",
        extra={"upload_url": reverse("api:storagepool-upload", args=[pool.pk])},
    )


@login_required
def volume_grow(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    volume = _get_volume(pk)
    current = volume.capacity / GIB
    form = VolumeGrowForm(_post_or_none(request), initial={"size_gib": round(current, 3)})

    def perform(data):
        task = services.volume_grow(user=request.user, volume=volume, size_gib=data["size_gib"])
        return queued_message(f"Growing volume {volume.name}", task)

    return _volume_action(
        request,
        volume.pool,
        form,
        perform,
        title=f"Grow volume {volume.name}",
        submit="Grow volume",
        icon="grow",
        intro=f"{volume.name} is {current:g} GiB now. Grow the partitions and file systems in "
        "it afterwards.",
    )


@login_required
def volume_publish(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    volume = _get_volume(pk)
    tenants = {t.pk: t for t in Tenant.objects.order_by("name")}
    form = VolumePublishForm(
        _post_or_none(request),
        tenants=[(pk, t.name) for pk, t in tenants.items()],
        initial={"published": volume.published, "tenant": volume.tenant_id},
    )

    def perform(data):
        services.volume_publish(
            user=request.user,
            volume=volume,
            published=data["published"],
            tenant=tenants.get(data["tenant"]),
        )
        if not data["published"]:
            return f"Volume {volume.name} is no longer offered as an image."
        to = tenants[data["tenant"]].name if data["tenant"] else "every tenant"
        return f"Volume {volume.name} is published to {to}."

    return _volume_action(
        request,
        volume.pool,
        form,
        perform,
        title=f"Publish volume {volume.name}",
        submit="Save",
        icon="check",
        intro="A published image is read-only for tenants. Their own disks are theirs alone: "
        "no other tenant sees them.",
    )


@login_required
def volume_delete(request: HttpRequest, pk: int) -> HttpResponse:
    require_platform_admin(request)
    volume = _get_volume(pk)
    form = VolumeDeleteForm(_post_or_none(request))

    def perform(data):
        task = services.volume_delete(user=request.user, volume=volume)
        return queued_message(f"Deletion of volume {volume.name}", task)

    return _volume_action(
        request,
        volume.pool,
        form,
        perform,
        title=f"Delete volume {volume.name}?",
        submit="Delete volume",
        icon="trash",
        danger=True,
        intro=f"Destroys {volume.path or volume.name} on {volume.pool.host.name}: its data is "
        "lost for good.",
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
