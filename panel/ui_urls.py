"""UI routes: the server-rendered console (namespace ``ui``)."""

from django.urls import path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)
from hosts import views as host_views
from paddock import views as pages
from vms import views as vm_views

from . import views

urlpatterns = [
    # Datacenter level
    path("", pages.datacenter, name="datacenter"),
    path("search/", pages.search, name="search"),
    path("hosts/", host_views.host_list, name="host_list"),
    path("vms/", vm_views.vm_list, name="vm_list"),
    path("tasks/", views.task_list, name="task_list"),
    path("tenants/", pages.tenant_list, name="tenant_list"),
    path("users/", views.user_list, name="user_list"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<id:pk>/revoke/", views.token_revoke, name="token_revoke"),
    # Hosts and what they hold
    path("hosts/add/", host_views.host_add, name="host_add"),
    path("hosts/<id:pk>/", host_views.host_detail, name="host"),
    path("hosts/<id:pk>/edit/", host_views.host_edit, name="host_edit"),
    path("hosts/<id:pk>/sync/", host_views.host_sync, name="host_sync"),
    path("hosts/<id:pk>/remove/", host_views.host_remove, name="host_remove"),
    path("pools/<id:pk>/", host_views.pool_detail, name="pool"),
    path("pools/<id:pk>/volumes/create/", host_views.volume_create, name="volume_create"),
    path("pools/<id:pk>/volumes/upload/", host_views.volume_upload, name="volume_upload"),
    path("volumes/<id:pk>/grow/", host_views.volume_grow, name="volume_grow"),
    path("volumes/<id:pk>/delete/", host_views.volume_delete, name="volume_delete"),
    path("volumes/<id:pk>/publish/", host_views.volume_publish, name="volume_publish"),
    path("networks/<id:pk>/", host_views.network_detail, name="network"),
    # VMs
    path("vms/create/", vm_views.vm_create, name="vm_create"),
    path("vms/create/options/", vm_views.vm_create_options, name="vm_create_options"),
    path("vms/<id:pk>/", vm_views.vm_detail, name="vm"),
    path("vms/<id:pk>/edit/", vm_views.vm_edit, name="vm_edit"),
    path("vms/<id:pk>/console/", vm_views.vm_console_popout, name="vm_console_popout"),
    path("vms/<id:pk>/power/<str:action>/", vm_views.vm_power, name="vm_power"),
    path("vms/<id:pk>/clone/", vm_views.vm_clone, name="vm_clone"),
    path("vms/<id:pk>/template/", vm_views.vm_template, name="vm_template"),
    path("vms/<id:pk>/delete/", vm_views.vm_delete, name="vm_delete"),
    path("vms/<id:pk>/resources/", vm_views.vm_resources, name="vm_resources"),
    path("vms/<id:pk>/disks/add/", vm_views.disk_add, name="vm_disk_add"),
    path("vms/<id:pk>/disks/<id:disk_pk>/remove/", vm_views.disk_remove, name="vm_disk_remove"),
    path("vms/<id:pk>/disks/<id:disk_pk>/grow/", vm_views.disk_grow, name="vm_disk_grow"),
    path("vms/<id:pk>/cdrom/", vm_views.cdrom_change, name="vm_cdrom"),
    path("vms/<id:pk>/nics/add/", vm_views.nic_add, name="vm_nic_add"),
    path("vms/<id:pk>/nics/<id:nic_pk>/remove/", vm_views.nic_remove, name="vm_nic_remove"),
    path("vms/<id:pk>/snapshots/add/", vm_views.snapshot_add, name="vm_snapshot_add"),
    path(
        "vms/<id:pk>/snapshots/<name:name>/revert/",
        vm_views.snapshot_revert,
        name="vm_snapshot_revert",
    ),
    path(
        "vms/<id:pk>/snapshots/<name:name>/delete/",
        vm_views.snapshot_delete,
        name="vm_snapshot_delete",
    ),
    # Tasks
    path("tasks/<id:pk>/", views.task_detail, name="task"),
    path("tasks/<id:pk>/live/", views.task_live, name="task_live"),
    path("tasks/<id:pk>/row/", views.task_row, name="task_row"),
    path("tasks/bar/", views.taskbar, name="taskbar"),
    # Tenancy
    path("tenants/<id:pk>/", pages.tenant_detail, name="tenant"),
    path("tenants/<id:pk>/edit/", pages.tenant_edit, name="tenant_edit"),
    path("tenants/<id:pk>/members/add/", pages.membership_add, name="membership_add"),
    path("memberships/<id:pk>/role/", pages.membership_role, name="membership_role"),
    path("memberships/<id:pk>/remove/", pages.membership_remove, name="membership_remove"),
    # Lazily loaded nodes of the resource tree
    path("tree/hosts/<id:pk>/vms/", vm_views.tree_host_vms, name="tree_host_vms"),
    path("tree/hosts/<id:pk>/pools/", host_views.tree_host_pools, name="tree_host_pools"),
    path("tree/hosts/<id:pk>/networks/", host_views.tree_host_networks, name="tree_host_networks"),
    path("tree/tenants/<id:pk>/vms/", vm_views.tree_tenant_vms, name="tree_tenant_vms"),
]
