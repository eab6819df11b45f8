"""The VM nodes of the resource tree: a host's VMs (admins) and a tenant's; the tenants with
their VM counts; and, when the tree groups by tag, the tags with their counts and a tag's VMs."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.http import urlencode

from hosts import selectors as host_selectors
from panel import selectors as panel_selectors
from panel.generic import TREE_LIMIT, TreeChildrenView
from panel.tenancy import is_platform_admin, visible_tenants
from panel.validators import TAG_RE

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


@dataclass
class TagGroup:
    """A tag's node: its name ("" for the VMs without a tag) and how many visible VMs carry it."""

    name: str
    count: int


def tag_counts(vms: QuerySet, limit: int) -> list[TagGroup]:
    """The tags of ``vms`` with their counts, in one grouped query over the tags' JSON arrays
    (the untagged VMs last, as the tag ""): the first ``limit`` by name."""
    sql, params = vms.order_by().values("tags").query.sql_with_params()
    if connection.vendor == "postgresql":
        query = (
            f"SELECT t.tag, COUNT(*) FROM ({sql}) v LEFT JOIN LATERAL "
            "jsonb_array_elements_text(CASE jsonb_typeof(v.tags) WHEN 'array' THEN v.tags "
            "ELSE '[]'::jsonb END) AS t(tag) ON true "
            "GROUP BY t.tag ORDER BY t.tag IS NULL, t.tag LIMIT %s"
        )
    else:
        query = (
            f"SELECT j.value, COUNT(*) FROM ({sql}) v LEFT JOIN json_each(v.tags) j "
            "GROUP BY j.value ORDER BY j.value IS NULL, j.value LIMIT %s"
        )
    with connection.cursor() as cursor:
        cursor.execute(query, [*params, limit])
        return [TagGroup(tag or "", n) for tag, n in cursor.fetchall()]


class TreeTagsView(TreeChildrenView):
    """The tree's root when it groups by tag: the tags of the VMs the user may see, each with
    its count (one grouped query); a tag's VMs load when it opens."""

    root = True
    template_name = "vms/_tree_tags.html"
    context_children_name = "tags"

    def get_children(self, request: HttpRequest, parent):
        vms = selectors.vms_for(request.user).prefetch_related(None).filter(gone=False)
        return tag_counts(vms, TREE_LIMIT + 1)

    def more_url(self, parent) -> str:
        return reverse("ui:vm_list")


class TreeTagVmsView(TreeVmsView):
    """A tag's node: the visible VMs carrying ``?tag=`` (``?tag=`` empty: the untagged)."""

    root = True

    def get_children(self, request: HttpRequest, parent):
        tag = request.GET.get("tag", "")
        if tag and not TAG_RE.match(tag):
            return VirtualMachine.objects.none()
        self.tag = tag
        vms = selectors.vms_for(request.user).prefetch_related(None).filter(gone=False)
        return selectors.with_tag(vms, tag).order_by("name")

    def more_url(self, parent) -> str:
        return f"{reverse('ui:vm_list')}?{urlencode({'tag': self.tag})}"
