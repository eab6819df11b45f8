"""The VM table: the VM list, and the same table on the host and tenant pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hosts.models import Host
from panel.generic import PanelView, paginate
from panel.tenancy import is_platform_admin, visible_tenants

from .. import selectors
from ..choices import VMState
from ..filtersets import VirtualMachineFilterSet

# A host or tenant filter lists at most this many choices; beyond, it takes an id.
CHOICES_LIMIT = 100


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
    # Choices of the host and tenant filters, read without counting VMs; a filter with more
    # than CHOICES_LIMIT of them takes an id instead (named in "many_choices").
    filters = {}
    if admin and "host" not in fixed:
        filters["host_choices"] = Host.objects.order_by("name").values_list("pk", "name")
    if "tenant" not in fixed:
        filters["tenant_choices"] = (
            visible_tenants(request.user).order_by("name").values_list("pk", "name")
        )
    context["many_choices"] = []
    for name, rows in filters.items():
        choices = list(rows[: CHOICES_LIMIT + 1])
        if len(choices) > CHOICES_LIMIT:
            context["many_choices"].append(name)
        else:
            context[name] = choices
    return context


class VmListView(PanelView):
    """Every VM the user may see (the table's filters share the API's FilterSet)."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        context = vm_table_context(request)
        context["active_tab"] = "vms"
        return render(request, "vms/vm_list.html", context)
