"""The VM table: the VM list, and the same table on the host and tenant pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hosts import selectors as host_selectors
from panel import selectors as panel_selectors
from panel.generic import PanelView, paginate
from panel.tenancy import is_platform_admin

from .. import selectors
from ..choices import VMState
from ..filtersets import VirtualMachineFilterSet


def vm_table_context(request: HttpRequest, fixed: dict | None = None) -> dict:
    """A filtered, paginated VM table; ``fixed`` pins filters of the page's own object.

    The filters are the API's FilterSet, so the page's query string works on /api/vms/ too.
    The number of queries does not grow with the number of VMs.
    """
    fixed = fixed or {}
    data = request.GET.copy()
    for key, value in fixed.items():
        data[key] = str(value)
    queryset = selectors.vms_for(request.user).prefetch_related(None)
    filterset = VirtualMachineFilterSet(data, queryset=queryset)
    admin = is_platform_admin(request.user)
    context = {
        "filterset": filterset,
        "page": paginate(request, filterset.qs),
        "vm_states": VMState.choices,
        "selected_states": request.GET.getlist("state"),
        "fixed": fixed,
        "show_host": "host" not in fixed,
        "show_tenant": "tenant" not in fixed,
    }
    if admin and "host" not in fixed:
        context["host_choices"] = list(
            host_selectors.hosts().order_by("name").values_list("pk", "name")
        )
    if "tenant" not in fixed:
        context["tenant_choices"] = list(
            panel_selectors.tenants_for(request.user).order_by("name").values_list("pk", "name")
        )
    return context


class VmListView(PanelView):
    """Every VM the user may see (the table's filters share the API's FilterSet)."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        context = vm_table_context(request)
        context["active_tab"] = "vms"
        return render(request, "vms/vm_list.html", context)
