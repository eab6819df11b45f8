"""The hosts' nodes of the resource tree: the datacenter's hosts and what a host holds (its
pools and networks are ``hosts.views``' tree views, its VMs ``vms.views.tree``'s)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from panel.generic import PanelView, TreeChildrenView

from .models import Host
from .views import HostPage


class TreeHostsView(TreeChildrenView):
    """The datacenter's node for a platform admin: the first hosts by name, each with its
    status dot; what a host holds loads when it opens (``TreeHostView``). No VM is counted
    here: a host's count is on its "Virtual machines" node."""

    admin_only = True
    root = True
    template_name = "hosts/_tree_hosts.html"
    context_children_name = "hosts"

    def get_children(self, request: HttpRequest, parent):
        return Host.objects.order_by("name").only("pk", "name", "status", "simulated")

    def more_url(self, parent) -> str:
        return reverse("ui:host_list")


class TreeHostView(HostPage, PanelView):
    """A host's node: its VMs (counted through the host's index), pools and networks, each
    loading its own children when it opens."""

    methods = ("GET", "HEAD")

    def get_queryset(self, request: HttpRequest):
        return Host.objects.only("pk")

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        host = self.get_object(request, **kwargs)
        vm_count = host.vms.filter(gone=False).count()
        return render(request, "hosts/_tree_host.html", {"host": host, "vm_count": vm_count})
