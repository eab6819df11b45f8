"""Pages that span the apps: the datacenter summary, search, tenants and their memberships.

Views are thin: they read through selectors, write through the same services as the API, put
a service's ValidationError back on the form, and turn a LockConflict into a message.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from hosts.choices import HostStatus
from hosts.models import Host
from panel import selectors, services
from panel.choices import Role
from panel.forms import (
    MembershipAddForm,
    MembershipRoleForm,
    TenantCreateForm,
    TenantEditForm,
    apply_service_errors,
)
from panel.generic import current_tab, is_htmx, paginate, require_platform_admin
from panel.tenancy import Action, can, is_platform_admin, role_in, visible_tenants
from vms import selectors as vm_selectors
from vms.choices import VMState
from vms.views import quota_rows, vm_table_context

SEARCH_LIMIT = 50
SEARCH_SUGGESTIONS = 8


# --- datacenter ----------------------------------------------------------------------------


@login_required
def datacenter(request: HttpRequest) -> HttpResponse:
    user = request.user
    admin = is_platform_admin(user)
    counts = vm_counts(user)
    by_state = counts["by_state"]
    vm_states = [
        (value, label, by_state.get(value, 0))
        for value, label in VMState.choices
        if by_state.get(value) or value in (VMState.RUNNING, VMState.SHUTOFF)
    ]
    # The tenants without their VM counts (the counts above have them): no join over the VMs.
    tenants = visible_tenants(user).order_by("name")
    shown = list(tenants[:50])
    for tenant in shown:
        tenant.vm_count = sum(counts["by_tenant"].get(tenant.pk, {}).values())
    context = {
        "active_tab": "summary",
        "vm_total": sum(by_state.values()),
        "vm_states": vm_states,
        "running": counts["running"],
        "recent_tasks": selectors.tasks_for(user).prefetch_related(None)[:10],
        "tenants": shown,
        "tenant_count": tenants.count(),
    }
    if admin:
        status_counts = {
            status: Count("pk", filter=Q(status=status)) for status in HostStatus.values
        }
        hosts = Host.objects.aggregate(
            total=Count("pk"), cpus=Sum("cpus"), memory_mib=Sum("memory_mib"), **status_counts
        )
        context["hosts"] = hosts
        context["host_states"] = [
            (value, label, hosts[value]) for value, label in HostStatus.choices if hosts[value]
        ]
    else:
        context["tenant_states"] = counts["by_tenant"]
    return render(request, "panel/datacenter.html", context)


def vm_counts(user) -> dict:
    """The VMs a user sees counted in one grouped query (tenant, state; the covering index
    ``vm_counts`` answers it without reading the table): VMs by state, the vCPUs and memory
    of the running ones, and each tenant's VMs by state."""
    rows = (
        vm_selectors.vms_for(user)
        .prefetch_related(None)
        .filter(gone=False)
        .order_by()
        .values_list("tenant_id", "state")
        .annotate(n=Count("*"), vcpus=Sum("vcpus"), memory_mib=Sum("memory_mib"))
    )
    by_state: dict[str, int] = {}
    by_tenant: dict[int, dict[str, int]] = {}
    running = {"vcpus": 0, "memory_mib": 0}
    for tenant_id, state, n, vcpus, memory_mib in rows:
        by_state[state] = by_state.get(state, 0) + n
        by_tenant.setdefault(tenant_id, {})[state] = n
        if state == VMState.RUNNING:
            running["vcpus"] += vcpus or 0
            running["memory_mib"] += memory_mib or 0
    return {"by_state": by_state, "by_tenant": by_tenant, "running": running}


# --- search --------------------------------------------------------------------------------


@login_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    if "\x00" in query:  # PostgreSQL refuses NUL in a query: the client's mistake, a 400
        return HttpResponseBadRequest("q: Null characters are not allowed.")
    if is_htmx(request):
        results = list(vm_selectors.search(request.user, query, limit=SEARCH_SUGGESTIONS + 1))
        return render(
            request,
            "panel/_search_suggestions.html",
            {
                "q": query,
                "results": results[:SEARCH_SUGGESTIONS],
                "more": len(results) > SEARCH_SUGGESTIONS,
            },
        )
    results = list(vm_selectors.search(request.user, query, limit=SEARCH_LIMIT + 1))
    return render(
        request,
        "panel/search.html",
        {"q": query, "results": results[:SEARCH_LIMIT], "more": len(results) > SEARCH_LIMIT},
    )


# --- tenants and memberships ---------------------------------------------------------------


@login_required
def tenant_list(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = None
    if is_platform_admin(user):
        form = TenantCreateForm(request.POST or None, prefix="tenant")
        if request.method == "POST" and form.is_valid():
            try:
                tenant = services.tenant_create(user=user, **form.cleaned_data)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, f"Tenant {tenant.name} created.")
                return redirect("ui:tenant", pk=tenant.pk)
    elif request.method == "POST":
        raise PermissionDenied("Only platform admins create tenants.")
    tenants = selectors.tenants_for(user).order_by("name")
    return render(
        request,
        "panel/tenant_list.html",
        {"active_tab": "tenants", "page": paginate(request, tenants), "form": form},
    )


@login_required
def tenant_detail(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    tenant = get_object_or_404(selectors.tenants_for(user), pk=pk)
    tab = current_tab(request, ("summary", "members", "vms"))
    can_manage = can(user, Action.MEMBERSHIP_MANAGE, tenant.pk)
    role = None if is_platform_admin(user) else role_in(user, tenant.pk)
    context = {
        "tenant": tenant,
        "tab": tab,
        "can_manage": can_manage,
        "can_create": can(user, Action.VM_CREATE, tenant.pk),
        "tree_reveal": f"tenants tenant-{tenant.pk}",
        "my_role": Role(role).label if role else "",
    }
    if tab == "summary":
        context["quota"] = quota_rows(tenant)
        context["placement"] = _placement(tenant)
    elif tab == "members":
        context["memberships"] = selectors.memberships_for(user).filter(tenant=tenant)
        context["roles"] = Role.choices
        if can_manage:
            context["add_form"] = MembershipAddForm(prefix="member")
    else:
        context.update(vm_table_context(request, fixed={"tenant": str(tenant.pk)}))
    return render(request, "panel/tenant_detail.html", context)


def _placement(tenant) -> list[tuple[str, list]]:
    """Where the tenant's operators may create VMs: hosts, pools and networks."""
    return [
        ("Hosts", list(tenant.allowed_hosts.order_by("name"))),
        ("Storage pools", list(tenant.allowed_pools.select_related("host"))),
        ("Networks", list(tenant.allowed_networks.select_related("host"))),
    ]


@login_required
def tenant_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Quota limits and placement of a tenant (platform admins only)."""
    require_platform_admin(request)
    tenant = get_object_or_404(selectors.tenants_for(request.user), pk=pk)
    form = TenantEditForm(request.POST or None, tenant=tenant)
    if request.method == "POST" and form.is_valid():
        try:
            services.tenant_update(user=request.user, tenant=tenant, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"Tenant {tenant.name} saved.")
            return redirect("ui:tenant", pk=tenant.pk)
    return render(
        request,
        "panel/tenant_edit.html",
        {"tenant": tenant, "form": form, "tree_reveal": f"tenants tenant-{tenant.pk}"},
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def membership_add(request: HttpRequest, pk: int) -> HttpResponse:
    user = request.user
    tenant = get_object_or_404(selectors.tenants_for(user), pk=pk)
    form = MembershipAddForm(request.POST, prefix="member")
    if form.is_valid():
        data = form.cleaned_data
        try:
            if data["password"]:
                # A new user, created straight into this tenant.
                services.user_create(
                    user=user,
                    username=data["username"],
                    password=data["password"],
                    tenant=tenant,
                    role=data["role"],
                )
            else:
                services.membership_create(
                    user=user, username=data["username"], tenant=tenant, role=data["role"]
                )
        except ValidationError as exc:
            apply_service_errors(form, exc, {"user": "username"})
        else:
            messages.success(request, f"{data['username']} added to {tenant.name}.")
            return redirect("ui:tenant", pk=tenant.pk)
    elif not can(user, Action.MEMBERSHIP_MANAGE, tenant.pk):
        raise PermissionDenied("Only the tenant's admins manage its memberships.")
    return render(
        request,
        "panel/tenant_detail.html",
        {
            "tenant": tenant,
            "tab": "members",
            "can_manage": can(user, Action.MEMBERSHIP_MANAGE, tenant.pk),
            "memberships": selectors.memberships_for(user).filter(tenant=tenant),
            "roles": Role.choices,
            "add_form": form,
            "tree_reveal": f"tenants tenant-{tenant.pk}",
        },
        status=400,
    )


@login_required
@require_POST
def membership_role(request: HttpRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(selectors.memberships_for(request.user), pk=pk)
    form = MembershipRoleForm(request.POST)
    if form.is_valid():
        try:
            services.membership_update(
                user=request.user, membership=membership, role=form.cleaned_data["role"]
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(
                request, f"{membership.user.username} is now {membership.get_role_display()}."
            )
    else:
        messages.error(request, "Choose a valid role.")
    return redirect("ui:tenant", pk=membership.tenant_id)


@login_required
@require_POST
def membership_remove(request: HttpRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(selectors.memberships_for(request.user), pk=pk)
    tenant_id = membership.tenant_id
    try:
        services.membership_delete(user=request.user, membership=membership)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request, f"{membership.user.username} removed from {membership.tenant.name}."
        )
    if selectors.tenants_for(request.user).filter(pk=tenant_id).exists():
        return redirect("ui:tenant", pk=tenant_id)
    return redirect("ui:tenant_list")
