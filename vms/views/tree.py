"""The VM nodes of the resource tree: a host's VMs (admins) and a tenant's."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse

from hosts import selectors as host_selectors
from panel import selectors as panel_selectors
from panel.generic import TreeChildrenView

from .. import selectors


class TreeVmsView(TreeChildrenView):
    template_name = "vms/_tree_vms.html"
    context_children_name = "vms"
    #: the VM list's filter naming the parent
    filter_name = ""

    def get_children(self, request: HttpRequest, parent):
        vms = selectors.vms_for(request.user).prefetch_related(None)
        return vms.filter(**{self.filter_name: parent}, gone=False).order_by("name")

    def more_url(self, parent) -> str:
        return f"{reverse('ui:vm_list')}?{self.filter_name}={parent.pk}"


class TreeHostVmsView(TreeVmsView):
    admin_only = True
    filter_name = "host"

    def get_queryset(self, request: HttpRequest):
        return host_selectors.hosts()


class TreeTenantVmsView(TreeVmsView):
    filter_name = "tenant"

    def get_queryset(self, request: HttpRequest):
        return panel_selectors.tenants_for(request.user)
