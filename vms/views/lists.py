"""The VM table: the VM list, and the same table on the host and tenant pages."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hosts.models import Host
from panel.bounds import parse_id
from panel.generic import PanelView, paginate
from panel.tenancy import is_platform_admin, visible_tenants

from .. import selectors, services
from ..choices import VMState
from ..filtersets import ORDERINGS, VirtualMachineFilterSet

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
        "columns": sort_columns(request, filterset),
        "bulk_actions": services.BULK_ACTIONS,
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


def sort_columns(request: HttpRequest, filterset) -> dict[str, dict]:
    """Each sortable column's header link (``?ordering=``, the other filters kept, back to the
    first page) and whether the table is sorted by it now: "asc", "desc" or ""."""
    current = (filterset.form.cleaned_data.get("ordering") or "") if filterset.is_valid() else ""
    columns = {}
    for name in ORDERINGS:
        params = request.GET.copy()
        params.pop("page", None)
        sorted_by = "asc" if current == name else "desc" if current == f"-{name}" else ""
        params["ordering"] = f"-{name}" if sorted_by == "asc" else name
        columns[name] = {"url": f"?{params.urlencode()}", "sorted": sorted_by}
    return columns


class VmListView(PanelView):
    """Every VM the user may see (the table's filters share the API's FilterSet)."""

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        context = vm_table_context(request)
        context["active_tab"] = "vms"
        return render(request, "vms/vm_list.html", context)


class VmBulkView(PanelView):
    """The grid's bulk bar: one task per selected VM (``vms.services.bulk_action``, as
    POST /api/vms/bulk/); the answer is the group's result, in place (``grid.js``) or above
    the list without JavaScript."""

    methods = ("POST",)

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        ids = [parse_id(raw) for raw in request.POST.getlist("ids")]
        try:
            result = services.bulk_action(
                user=request.user,
                action=request.POST.get("action", ""),
                ids=[pk for pk in ids if pk is not None],
                delete_volumes=request.POST.get("delete_volumes") == "on",
            )
            context = {"result": result, "label": services.BULK_ACTIONS[result.action]}
        except ValidationError as exc:
            context = {"error": " ".join(exc.messages)}
        if request.headers.get("X-Requested-With") == "paddock-grid":
            status = 400 if "error" in context else 200
            return render(request, "vms/_bulk_result.html", context, status=status)
        context = {**vm_table_context(request), **context, "active_tab": "vms"}
        return render(request, "vms/vm_list.html", context)
