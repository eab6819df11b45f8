"""UI routes of hosts, pools, volumes and networks (included by the UI's URLconf, in its ``ui``
namespace)."""

from django.urls import path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)

from . import tree, views

urlpatterns = [
    path("hosts/", views.HostListView.as_view(), name="host_list"),
    path("hosts/add/", views.host_add, name="host_add"),
    path("hosts/<id:pk>/", views.HostView.as_view(), name="host"),
    path("hosts/<id:pk>/edit/", views.HostEditView.as_view(), name="host_edit"),
    path("hosts/<id:pk>/sync/", views.host_sync, name="host_sync"),
    path("hosts/<id:pk>/remove/", views.HostRemoveView.as_view(), name="host_remove"),
    path("pools/<id:pk>/", views.PoolView.as_view(), name="pool"),
    path("pools/<id:pk>/volumes/create/", views.VolumeCreateView.as_view(), name="volume_create"),
    path("pools/<id:pk>/volumes/upload/", views.VolumeUploadView.as_view(), name="volume_upload"),
    path("volumes/<id:pk>/grow/", views.VolumeGrowView.as_view(), name="volume_grow"),
    path("volumes/<id:pk>/delete/", views.VolumeDeleteView.as_view(), name="volume_delete"),
    path("volumes/<id:pk>/publish/", views.VolumePublishView.as_view(), name="volume_publish"),
    path("networks/<id:pk>/", views.NetworkView.as_view(), name="network"),
    # Lazily loaded nodes of the resource tree
    path("tree/hosts/", tree.TreeHostsView.as_view(), name="tree_hosts"),
    path("tree/hosts/<id:pk>/", tree.TreeHostView.as_view(), name="tree_host"),
    path("tree/hosts/<id:pk>/pools/", views.TreeHostPoolsView.as_view(), name="tree_host_pools"),
    path(
        "tree/hosts/<id:pk>/networks/",
        views.TreeHostNetworksView.as_view(),
        name="tree_host_networks",
    ),
]
