"""The VM nodes of the resource tree: a host's VMs (admins) and a tenant's; the tenants with
their VM counts."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest
from django.urls import reverse

from hosts import selectors as host_selectors
from panel import selectors as panel_selectors
from panel.generic import TreeChildrenView
from panel.tenancy import is_platform_admin, visible_tenants

from .. import selectors
from ..models import VirtualMachine


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


class TreeTenantsView(TreeChildrenView):
    """The tenants the user may see, each with its VM count (one grouped query): the
    datacenter's node for a tenant member, the "Tenants" node for a platform admin."""

    root = True
    template_name = "vms/_tree_tenants.html"
    context_children_name = "tenants"

    def get_children(self, request: HttpRequest, parent):
        return visible_tenants(request.user).order_by("name")

    def more_url(self, parent) -> str:
        return reverse("ui:tenant_list")

    def get_extra_context(self, request: HttpRequest, parent, children: list) -> dict:
        # The shown tenants' VMs counted in one grouped query on the vm_counts index.
        counts = dict(
            VirtualMachine.objects.filter(gone=False, tenant__in=children)
            .order_by()
            .values_list("tenant_id")
            .annotate(n=Count("*"))
        )
        for tenant in children:
            tenant.vm_count = counts.get(tenant.pk, 0)
        return {"is_platform_admin": is_platform_admin(request.user)}
