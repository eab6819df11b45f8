"""UI routes: the server-rendered console (namespace ``ui``); each app's pages come from its
own ``urls.py``."""

from django.urls import include, path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)

from . import views

urlpatterns = [
    # Datacenter level
    path("", views.datacenter, name="datacenter"),
    path("search/", views.search, name="search"),
    path("tasks/", views.task_list, name="task_list"),
    path("tenants/", views.tenant_list, name="tenant_list"),
    path("users/", views.user_list, name="user_list"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<id:pk>/revoke/", views.token_revoke, name="token_revoke"),
    # Hosts and what they hold, VMs, and their nodes of the resource tree
    path("", include("hosts.urls")),
    path("", include("vms.urls")),
    # Tasks
    path("tasks/<id:pk>/", views.task_detail, name="task"),
    path("tasks/<id:pk>/live/", views.task_live, name="task_live"),
    path("tasks/<id:pk>/row/", views.task_row, name="task_row"),
    path("tasks/bar/", views.taskbar, name="taskbar"),
    # Tenancy
    path("tenants/<id:pk>/", views.tenant_detail, name="tenant"),
    path("tenants/<id:pk>/edit/", views.tenant_edit, name="tenant_edit"),
    path("tenants/<id:pk>/members/add/", views.membership_add, name="membership_add"),
    path("memberships/<id:pk>/role/", views.membership_role, name="membership_role"),
    path("memberships/<id:pk>/remove/", views.membership_remove, name="membership_remove"),
]
