"""UI routes: the server-rendered console (namespace ``ui``); each app's pages come from its
own ``urls.py``; the core's pages (tasks, users, tokens) from ``panel.views``, the pages that
span the apps from ``paddock.views``."""

from django.urls import include, path

import panel.bounds  # noqa: F401  (registers the <id:> and <name:> path converters)
from panel import tag_colours, views

from . import views as pages

urlpatterns = [
    # Datacenter level
    path("", pages.datacenter, name="datacenter"),
    path("search/", pages.search, name="search"),
    path("tasks/", views.task_list, name="task_list"),
    path("tenants/", pages.tenant_list, name="tenant_list"),
    path("users/", views.user_list, name="user_list"),
    path("tokens/", views.tokens, name="tokens"),
    path("tag-colours/", tag_colours.tag_colours, name="tag_colours"),
    path("tokens/<id:pk>/revoke/", views.token_revoke, name="token_revoke"),
    # Hosts and what they hold, VMs, and their nodes of the resource tree
    path("", include("hosts.urls")),
    path("", include("vms.urls")),
    path("", include("tuning.urls")),
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
]
