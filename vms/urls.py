"""UI routes of VMs (included by the UI's URLconf, in its ``ui`` namespace)."""

from django.urls import path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)

from . import views
from .views import actions, lists, pages, tree

urlpatterns = [
    path("vms/", lists.VmListView.as_view(), name="vm_list"),
    path("vms/bulk/", lists.VmBulkView.as_view(), name="vm_bulk"),
    path("vms/create/", views.vm_create, name="vm_create"),
    path("vms/create/options/", views.vm_create_options, name="vm_create_options"),
    path("vms/<id:pk>/", pages.VmView.as_view(), name="vm"),
    path("vms/<id:pk>/edit/", pages.VmEditView.as_view(), name="vm_edit"),
    path("vms/<id:pk>/notes/", pages.VmNotesView.as_view(), name="vm_notes"),
    path("vms/<id:pk>/console/", pages.VmConsolePopoutView.as_view(), name="vm_console_popout"),
    path("vms/<id:pk>/power/<str:action>/", actions.VmPowerView.as_view(), name="vm_power"),
    path("vms/<id:pk>/clone/", actions.VmCloneView.as_view(), name="vm_clone"),
    path("vms/<id:pk>/template/", actions.VmTemplateView.as_view(), name="vm_template"),
    path("vms/<id:pk>/delete/", actions.VmDeleteView.as_view(), name="vm_delete"),
    path("vms/<id:pk>/resources/", actions.VmResourcesView.as_view(), name="vm_resources"),
    path("vms/<id:pk>/disks/add/", actions.DiskAddView.as_view(), name="vm_disk_add"),
    path(
        "vms/<id:pk>/disks/<id:disk_pk>/remove/",
        actions.DiskRemoveView.as_view(),
        name="vm_disk_remove",
    ),
    path(
        "vms/<id:pk>/disks/<id:disk_pk>/grow/", actions.DiskGrowView.as_view(), name="vm_disk_grow"
    ),
    path("vms/<id:pk>/cdrom/", actions.CdromView.as_view(), name="vm_cdrom"),
    path("vms/<id:pk>/nics/add/", actions.NicAddView.as_view(), name="vm_nic_add"),
    path(
        "vms/<id:pk>/nics/<id:nic_pk>/remove/",
        actions.NicRemoveView.as_view(),
        name="vm_nic_remove",
    ),
    path("vms/<id:pk>/snapshots/add/", actions.SnapshotAddView.as_view(), name="vm_snapshot_add"),
    path(
        "vms/<id:pk>/snapshots/<name:name>/revert/",
        actions.SnapshotRevertView.as_view(),
        name="vm_snapshot_revert",
    ),
    path(
        "vms/<id:pk>/snapshots/<name:name>/delete/",
        actions.SnapshotDeleteView.as_view(),
        name="vm_snapshot_delete",
    ),
    # Lazily loaded nodes of the resource tree
    path("tree/hosts/<id:pk>/vms/", tree.TreeHostVmsView.as_view(), name="tree_host_vms"),
    path("tree/tenants/", tree.TreeTenantsView.as_view(), name="tree_tenants"),
    path("tree/tenants/<id:pk>/vms/", tree.TreeTenantVmsView.as_view(), name="tree_tenant_vms"),
    path("tree/tags/", tree.TreeTagsView.as_view(), name="tree_tags"),
    path("tree/tags/vms/", tree.TreeTagVmsView.as_view(), name="tree_tag_vms"),
]
