"""Pages of hosts, storage pools and networks (platform admins only), and their tree nodes.

Built on the generic views of ``panel.generic``: the host page's tabs are registered (``vms``
registers the "Virtual machines" tab, so this module does not import it); a pool's volumes are
created, grown, deleted and uploaded through ``hosts.services``, like from the API, each as an
action view: a small form that works as a page of its own and, opened from a button with
``data-dialog``, inside the page's dialog; service errors stay on the form.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from panel import selectors as panel_selectors
from panel.filtersets import TaskFilterSet
from panel.forms import apply_service_errors
from panel.generic import (
    ActionView,
    ObjectDeleteView,
    ObjectEditView,
    ObjectListView,
    ObjectView,
    TreeChildrenView,
    ViewTab,
    fixed_query,
    paginate,
    post_or_none,
    queued_message,
    register_tab,
    require_platform_admin,
    task_link,
)
from panel.locks import LockConflict
from panel.models import Task, Tenant
from panel.units import GIB

from . import selectors, services
from .choices import HostStatus
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
from .models import Host, Network, StoragePool
from .storage import backend_for


class HostPage:
    """The admin's pages of hosts: platform admins only, hosts with their VM counts."""

    admin_only = True
    model = Host
    context_object_name = "host"

    def get_queryset(self, request: HttpRequest):
        return selectors.hosts()

    def reveal(self, request: HttpRequest, obj) -> str:
        return f"host-{obj.pk}"


class HostListView(HostPage, ObjectListView):
    template_name = "hosts/host_list.html"
    filterset_class = HostFilterSet
    active_tab = "hosts"

    def get_queryset(self, request: HttpRequest):
        return selectors.hosts().order_by("name")


@login_required
def host_add(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request)
    form = HostAddForm(request.POST or None)
    # The "add it anyway, offline" box shows once the connection failed (and stays shown).
    offer_offline = bool(request.POST.get("offline"))
    if request.method == "POST" and form.is_valid():
        try:
            host, task = services.host_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
            offer_offline = offer_offline or services.OFFLINE_HINT in exc.messages
        else:
            if host.status == HostStatus.OFFLINE:
                messages.warning(
                    request,
                    f"Host {host.name} added offline: {host.last_error} Its first sync "
                    f"(task #{task.pk}) tries again.",
                )
            else:
                messages.success(
                    request, f"Host {host.name} added; its first sync is task #{task.pk}."
                )
            return redirect(host)
    return render(
        request,
        "hosts/host_add.html",
        {"form": form, "active_tab": "hosts", "offer_offline": offer_offline},
        status=400 if form.errors else 200,
    )


class HostView(HostPage, ObjectView):
    """A host's page; its tabs are registered below (the VMs tab by ``vms``)."""

    template_name = "hosts/host_detail.html"

    def get_queryset(self, request: HttpRequest):
        return selectors.hosts().select_related("lock")


def _summary(request: HttpRequest, host) -> dict:
    return {"busy": host.lock if host.lock_id and not host.lock.is_final else None}


def _storage(request: HttpRequest, host) -> dict:
    pools = StoragePoolFilterSet(fixed_query(request, host=host.pk), queryset=selectors.pools())
    volumes = VolumeFilterSet(
        fixed_query(request, host=host.pk),
        queryset=selectors.volumes().prefetch_related("disks__vm"),
    )
    return {"pools": pools.qs, "volumes_filter": volumes, "page": paginate(request, volumes.qs)}


def _networks(request: HttpRequest, host) -> dict:
    networks = NetworkFilterSet(fixed_query(request, host=host.pk), queryset=selectors.networks())
    return {"networks": networks.qs.annotate(nic_count=Count("nics"))}


def _tasks(request: HttpRequest, host) -> dict:
    tasks = panel_selectors.tasks_for(request.user).prefetch_related(None)
    filterset = TaskFilterSet(fixed_query(request, host=host.pk), queryset=tasks)
    return {"page": paginate(request, filterset.qs)}


for _tab in (
    ViewTab("summary", "Summary", "summary", "hosts/tabs/summary.html", 100, context=_summary),
    ViewTab("storage", "Storage", "storage", "hosts/tabs/storage.html", 300, context=_storage),
    ViewTab("networks", "Networks", "network", "hosts/tabs/networks.html", 400, context=_networks),
    ViewTab("tasks", "Tasks", "tasks", "hosts/tabs/tasks.html", 500, context=_tasks),
):
    register_tab(Host, _tab)


class HostEditView(HostPage, ObjectEditView):
    template_name = "hosts/host_edit.html"
    form_class = HostEditForm

    def get_initial(self, obj) -> dict:
        return {"description": obj.description, "tags": obj.tags}

    def save(self, request: HttpRequest, obj, data: dict) -> str:
        services.host_update(user=request.user, host=obj, **data)
        return f"Host {obj.name} saved."


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


class HostRemoveView(HostPage, ObjectDeleteView):
    template_name = "hosts/host_remove.html"

    def delete(self, request: HttpRequest, obj) -> str:
        services.host_delete(user=request.user, host=obj)
        return f"Host {obj.name} removed from Paddock. The host itself is untouched."

    def success_url(self, obj) -> str:
        return reverse("ui:host_list")


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


class PoolView(ObjectView):
    admin_only = True
    model = StoragePool
    template_name = "hosts/pool_detail.html"
    context_object_name = "pool"

    def get_queryset(self, request: HttpRequest):
        return selectors.pools()

    def reveal(self, request: HttpRequest, obj) -> str:
        return f"host-{obj.host_id} host-{obj.host_id}-pools"

    def get_extra_context(self, request: HttpRequest, obj, tab) -> dict:
        volumes = VolumeFilterSet(
            fixed_query(request, pool=obj.pk),
            queryset=selectors.volumes().select_related("lock").prefetch_related("disks__vm"),
        )
        page = paginate(request, volumes.qs)
        for volume in page.object_list:
            volume.blocked = _volume_blocked(volume)
        return {
            "host": obj.host,
            "volumes_filter": volumes,
            "page": page,
            "pool_blocked": _pool_blocked(obj),
            "follow": _followed_task(request, obj),
        }


def _followed_task(request: HttpRequest, pool: StoragePool) -> Task | None:
    """The volume task the page was sent back to follow (``?task=``), when it is on this pool's
    host: the page shows how it goes and draws its volumes again when it ends."""
    raw = request.GET.get("task", "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        return None
    return Task.objects.filter(
        pk=int(raw), host_id=pool.host_id, kind__startswith="volume."
    ).first()


class NetworkView(ObjectView):
    admin_only = True
    model = Network
    template_name = "hosts/network_detail.html"
    context_object_name = "network"

    def get_queryset(self, request: HttpRequest):
        return selectors.networks()

    def reveal(self, request: HttpRequest, obj) -> str:
        return f"host-{obj.host_id} host-{obj.host_id}-networks"

    def get_extra_context(self, request: HttpRequest, obj, tab) -> dict:
        nics = obj.nics.select_related("vm", "vm__tenant").order_by("vm__name", "mac")
        return {"host": obj.host, "page": paginate(request, nics)}


# --- volume actions: one small form each, as a page or in the dialog ------------------------


class PoolActionView(ActionView):
    """An action on a pool's volumes: the object is the pool (``pk``); the page goes back to
    the pool. Service errors land on the form, a lock held by a task names the task."""

    admin_only = True
    context_object_name = "pool"
    template_name = "hosts/volume_action.html"
    dialog_template_name = "hosts/_volume_dialog.html"
    form_template = "hosts/_volume_form.html"
    error_fields = {"size": "file"}

    def get_queryset(self, request: HttpRequest):
        return selectors.pools()

    @property
    def pool(self):
        return self.object

    def return_url(self) -> str:
        return reverse("ui:pool", args=[self.pool.pk])

    def following(self, task) -> str:
        """The pool's page following ``task``: its volume list is drawn again when it ends."""
        return f"{self.return_url()}?task={task.pk}"

    def reveal(self, request: HttpRequest, obj) -> str:
        return f"host-{self.pool.host_id} host-{self.pool.host_id}-pools"

    def get_extra_context(self) -> dict:
        return {"pool": self.pool, "host": self.pool.host, "form_template": self.form_template}


class VolumeActionView(PoolActionView):
    """An action on one volume (``pk``): not one that is gone from its host."""

    context_object_name = "volume"

    def get_queryset(self, request: HttpRequest):
        return selectors.volumes().select_related("lock")

    def get_object(self, request: HttpRequest, **kwargs):
        volume = super().get_object(request, **kwargs)
        if volume.gone:
            raise Http404("This volume is gone from its host.")
        return volume

    @property
    def pool(self):
        return self.object.pool


class VolumeCreateView(PoolActionView):
    submit = "Create volume"
    icon = "plus"

    def get_form(self):
        return VolumeCreateForm(post_or_none(self.request), formats=backend_for(self.pool).formats)

    def get_title(self) -> str:
        return f"Create volume in {self.pool.name}"

    def get_intro(self) -> str:
        pool = self.pool
        free = f"{pool.available / GIB:.1f} GiB free"
        block = backend_for(pool).disk_source == "block"
        return f"Pool {pool.name} ({pool.get_pool_type_display()}) has {free}." + (
            " LVM volumes are raw block devices." if block else ""
        )

    def perform(self, data):
        task = services.volume_create(
            user=self.request.user,
            pool=self.pool,
            name=data["name"],
            size_gib=data["size_gib"],
            format=data.get("format", ""),
        )
        return self.following(task), queued_message(f"Creation of volume {data['name']}", task)


class VolumeUploadView(PoolActionView):
    """The upload form. With the page's script the browser streams the file to the API
    (``POST /api/storage-pools/{id}/upload/``) and shows its progress; without it, the form
    posts here and the file is stored the same way once received."""

    submit = "Upload"
    icon = "disc"
    form_template = "hosts/_upload_form.html"

    def get_form(self):
        return VolumeUploadForm(post_or_none(self.request), self.request.FILES or None)

    def get_title(self) -> str:
        return f"Upload to {self.pool.name}"

    def get_intro(self) -> str:
        return (
            f"Pool {self.pool.name} has {self.pool.available / GIB:.1f} GiB free. The file goes "
            "straight to the host; keep this page open until it is stored."
        )

    def get_extra_context(self) -> dict:
        url = reverse("api:storagepool-upload", args=[self.pool.pk])
        return {**super().get_extra_context(), "upload_url": url}

    def perform(self, data):
        upload = data["file"]
        volume, task = services.volume_upload(
            user=self.request.user,
            pool=self.pool,
            name=data["name"],
            size=upload.size,
            chunks=upload.chunks(),
            format=data["format"],
        )
        return None, format_html("Uploaded volume {} ({}).", volume.name, task_link(task))


class VolumeGrowView(VolumeActionView):
    form_class = VolumeGrowForm
    submit = "Grow volume"
    icon = "grow"

    def get_initial(self) -> dict:
        return {"size_gib": round(self.object.capacity / GIB, 3)}

    def get_title(self) -> str:
        return f"Grow volume {self.object.name}"

    def get_intro(self) -> str:
        return (
            f"{self.object.name} is {self.object.capacity / GIB:g} GiB now. Grow the partitions "
            "and file systems in it afterwards."
        )

    def perform(self, data):
        volume = self.object
        task = services.volume_grow(
            user=self.request.user, volume=volume, size_gib=data["size_gib"]
        )
        return self.following(task), queued_message(f"Growing volume {volume.name}", task)


class VolumePublishView(VolumeActionView):
    submit = "Save"
    icon = "check"
    intro = (
        "A published image is read-only for tenants. Their own disks are theirs alone: "
        "no other tenant sees them."
    )

    def get_form(self):
        self.tenants = {t.pk: t for t in Tenant.objects.order_by("name")}
        return VolumePublishForm(
            post_or_none(self.request),
            tenants=[(pk, t.name) for pk, t in self.tenants.items()],
            initial={"published": self.object.published, "tenant": self.object.tenant_id},
        )

    def get_title(self) -> str:
        return f"Publish volume {self.object.name}"

    def perform(self, data):
        volume = self.object
        services.volume_publish(
            user=self.request.user,
            volume=volume,
            published=data["published"],
            tenant=self.tenants.get(data["tenant"]),
        )
        if not data["published"]:
            return None, f"Volume {volume.name} is no longer offered as an image."
        to = self.tenants[data["tenant"]].name if data["tenant"] else "every tenant"
        return None, f"Volume {volume.name} is published to {to}."


class VolumeDeleteView(VolumeActionView):
    form_class = VolumeDeleteForm
    submit = "Delete volume"
    icon = "trash"
    danger = True

    def get_title(self) -> str:
        return f"Delete volume {self.object.name}?"

    def get_intro(self) -> str:
        volume = self.object
        return (
            f"Destroys {volume.path or volume.name} on {volume.pool.host.name}: its data is "
            "lost for good."
        )

    def perform(self, data):
        task = services.volume_delete(user=self.request.user, volume=self.object)
        return self.following(task), queued_message(f"Deletion of volume {self.object.name}", task)


# --- tree nodes ----------------------------------------------------------------------------


class HostTreeView(HostPage, TreeChildrenView):
    """A host's node of the tree: its pools or its networks."""

    tab = ""

    def more_url(self, parent) -> str:
        return f"{reverse('ui:host', args=[parent.pk])}?tab={self.tab}"


class TreeHostPoolsView(HostTreeView):
    template_name = "hosts/_tree_pools.html"
    context_children_name = "pools"
    tab = "storage"

    def get_children(self, request: HttpRequest, parent):
        return selectors.pools().filter(host=parent, gone=False).order_by("name")


class TreeHostNetworksView(HostTreeView):
    template_name = "hosts/_tree_networks.html"
    context_children_name = "networks"
    tab = "networks"

    def get_children(self, request: HttpRequest, parent):
        return selectors.networks().filter(host=parent, gone=False).order_by("name")
