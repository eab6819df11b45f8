"""Pages of the UI shell: tasks and the task bar, users, tokens; helpers the apps' views share.

The datacenter, search and tenant pages, which span the apps, are ``paddock.views``.

Views are thin: they read through selectors, write through the same services as the API, put
a service's ValidationError back on the form, and turn a LockConflict into a message.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services
from .choices import TaskState
from .filtersets import TaskFilterSet
from .forms import (
    TokenCreateForm,
    UserCreateForm,
    apply_service_errors,
)
from .generic import TASK_COUNT_CAP, paginate, require_platform_admin
from .models import ApiToken
from .templatetags.paddock import recent_tasks
from .tenancy import is_platform_admin

User = get_user_model()

# How long the task list's kind filter keeps the kinds it read.
TASK_KINDS_SECONDS = 60


# The helpers shared by the apps' views (paginate, current_tab, task_link...) live in panel.generic.


@login_required
def task_list(request: HttpRequest) -> HttpResponse:
    tasks = selectors.tasks_for(request.user).prefetch_related(None)
    filterset = TaskFilterSet(request.GET or None, queryset=tasks)
    return render(
        request,
        "panel/task_list.html",
        {
            "active_tab": "tasks",
            "filterset": filterset,
            "page": paginate(request, filterset.qs, cap=TASK_COUNT_CAP),
            "kinds": task_kinds(request.user, tasks),
            "task_states": TaskState.choices,
            "selected_states": request.GET.getlist("state"),
        },
    )


def task_kinds(user, tasks) -> list[str]:
    """The kinds of the tasks a user sees, for the kind filter: a DISTINCT over every task, so
    kept for a minute (per user; a platform admin's are everyone's)."""
    key = "paddock:task-kinds:" + ("all" if is_platform_admin(user) else str(user.pk))
    kinds = cache.get(key)
    if kinds is None:
        kinds = list(tasks.order_by("kind").values_list("kind", flat=True).distinct())
        cache.set(key, kinds, TASK_KINDS_SECONDS)
    return kinds


@login_required
def task_detail(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(selectors.tasks_for(request.user), pk=pk)
    return render(
        request,
        "panel/task_detail.html",
        {"task": task, "tree_reveal": _reveal(request.user, task)},
    )


@login_required
@require_GET
def task_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of a task page: state, progress, error and log; polled while unfinished."""
    task = get_object_or_404(selectors.tasks_for(request.user), pk=pk)
    return render(request, "panel/_task_live.html", {"task": task})


@login_required
@require_GET
def taskbar(request: HttpRequest) -> HttpResponse:
    """The rows of the task bar (polled; a websocket push can later call task_row instead)."""
    return render(request, "includes/taskbar_rows.html", {"tasks": recent_tasks(request.user)})


@login_required
@require_GET
def task_row(request: HttpRequest, pk: int) -> HttpResponse:
    """One row of the task bar, for a client that heard this task changed."""
    task = get_object_or_404(selectors.tasks_for(request.user).prefetch_related(None), pk=pk)
    return render(request, "includes/taskbar_row.html", {"task": task})


def _reveal(user, task) -> str:
    """Tree nodes to open on a task's page: the path to what it acted on."""
    if not is_platform_admin(user):
        return f"tenant-{task.tenant_id}" if task.tenant_id else ""
    if task.vm_id:
        return f"host-{task.vm.host_id} host-{task.vm.host_id}-vms"
    if task.host_id:
        return f"host-{task.host_id}"
    return ""


# --- users ---------------------------------------------------------------------------------


@login_required
def user_list(request: HttpRequest) -> HttpResponse:
    require_platform_admin(request)
    form = UserCreateForm(request.POST or None, prefix="user")
    if request.method == "POST" and form.is_valid():
        try:
            created = services.user_create(user=request.user, **form.cleaned_data)
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            messages.success(request, f"User {created.username} created.")
            return redirect("ui:user_list")
    users = selectors.users_for(request.user).prefetch_related("memberships__tenant")
    return render(
        request,
        "panel/user_list.html",
        {"active_tab": "users", "page": paginate(request, users), "form": form},
        status=400 if form.errors else 200,
    )


# --- API tokens ----------------------------------------------------------------------------


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    """The user's own API tokens. A new token's secret is in this one response, never again."""
    form = TokenCreateForm(request.POST or None)
    secret = created = None
    if request.method == "POST" and form.is_valid():
        try:
            created, secret = services.token_issue(
                user=request.user, name=form.cleaned_data["name"]
            )
        except ValidationError as exc:
            apply_service_errors(form, exc)
        else:
            form = TokenCreateForm()
    response = render(
        request,
        "panel/tokens.html",
        {
            "active_tab": "tokens",
            "tokens": ApiToken.objects.filter(user=request.user),
            "form": form,
            "secret": secret,
            "created": created,
        },
    )
    if secret:
        response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken.objects.filter(user=request.user), pk=pk)
    services.token_revoke(user=request.user, token=token)
    messages.success(request, f"Token {token.prefix}… ({token.name or 'unnamed'}) revoked.")
    return redirect("ui:tokens")
