"""Generic UI views, the NetBox way: an object page with registered tabs, a list, an edit form,
a delete confirmation, an action (form + service + result) and a tree node's children.

The base class holds what every page asks first: a signed-in user (else the login page), a
platform admin where the page is the admin's (``admin_only``), the object looked up among what
the user may see (``get_queryset``: anything else is a 404, never a 403) and the role the user
needs on the object's tenant (``permission``). Subclasses say what to show and which service to
call; they never repeat those checks.

Tabs of an object page are registered, not written as ``if`` chains: an app adds a tab to
another app's page (``vms`` adds the host page's "Virtual machines" tab) with
``register_tab(Host, ViewTab(...))``, so the page's own app does not import it.

This module is the core: it imports no app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import classonlymethod
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.views import View

from .forms import apply_service_errors
from .locks import LockConflict
from .models import Task
from .tenancy import can, is_platform_admin

PAGE_SIZE = 50
# The task lists count this many tasks at most: 200 pages; older ones are a filter away.
TASK_COUNT_CAP = 10_000
# Children a node of the resource tree lists before it links to the full list instead.
TREE_LIMIT = 200

# --- helpers shared by the apps' views -------------------------------------------------------


def require_platform_admin(request: HttpRequest) -> None:
    if not is_platform_admin(request.user):
        raise PermissionDenied("Only platform admins see this page.")


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


class CappedPaginator(Paginator):
    """A paginator that counts at most ``cap`` rows (``COUNT(*)`` over a ``LIMIT cap + 1``
    subquery), so a list of 200,000 tasks is not counted on every page; ``capped`` says there
    are more than the pages reach (the filters narrow them)."""

    def __init__(self, object_list, per_page: int, cap: int) -> None:
        super().__init__(object_list, per_page)
        self.cap = cap
        self.capped = False

    @cached_property
    def count(self) -> int:
        n = self.object_list[: self.cap + 1].count()
        self.capped = n > self.cap
        return min(n, self.cap)

    def page(self, number):
        """The page's ids first (an index walk, however deep), then its rows with their joins:
        an OFFSET over the joined rows would join every row it skips."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = min(bottom + self.per_page, self.count)
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        rows = {row.pk: row for row in self.object_list.filter(pk__in=ids)}
        return self._get_page([rows[pk] for pk in ids if pk in rows], number, self)


def paginate(request: HttpRequest, queryset, per_page: int = PAGE_SIZE, cap: int | None = None):
    """A page of ``queryset`` (``?page=``); with ``cap``, at most that many rows are counted."""
    paginator = CappedPaginator(queryset, per_page, cap) if cap else Paginator(queryset, per_page)
    return paginator.get_page(request.GET.get("page"))


def current_tab(request: HttpRequest, tabs: tuple[str, ...]) -> str:
    tab = request.GET.get("tab", tabs[0])
    return tab if tab in tabs else tabs[0]


def post_or_none(request: HttpRequest):
    return request.POST if request.method == "POST" else None


def fixed_query(request: HttpRequest, **values):
    """The request's query with some filters pinned (a page's own object)."""
    data = request.GET.copy()
    for key, value in values.items():
        data[key] = str(value)
    return data


def task_link(task: Task):
    """A link to a task's page, as "task #N"."""
    return format_html('<a href="{}">task #{}</a>', reverse("ui:task", args=[task.pk]), task.pk)


def queued_message(what: str, task: Task):
    return format_html("{} queued as {}.", what, task_link(task))


def busy_message(exc):
    """A LockConflict as "… is busy with task #N", the task linked."""
    holder = exc.holder
    what = f"{exc.obj._meta.verbose_name.capitalize()} {exc.obj}"
    if holder is None:
        return f"{what} is busy."
    return format_html(
        "{} is busy with {} ({}, {}).", what, task_link(holder), holder.kind, holder.state
    )


# --- registered tabs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ViewTab:
    """One tab of an object page, shown at ``?tab=<name>``.

    ``template`` is rendered inside the page; ``context(request, obj)`` adds what it needs.
    ``visible(request, obj)`` hides the tab (and its URL falls back to the first tab);
    ``badge(obj)`` is the count beside its label; ``reveal(obj)`` the tree nodes to open.
    """

    name: str
    label: str
    icon: str
    template: str
    weight: int = 1000
    context: Callable[[HttpRequest, Model], dict] | None = None
    visible: Callable[[HttpRequest, Model], bool] | None = None
    badge: Callable[[Model], object] | None = None
    reveal: Callable[[Model], str] | None = None
    decorators: tuple = field(default=())

    def is_visible(self, request: HttpRequest, obj: Model) -> bool:
        return self.visible is None or bool(self.visible(request, obj))


_TABS: dict[str, dict[str, ViewTab]] = {}
_TAB_EXTRAS: dict[str, dict[str, list[Callable[[HttpRequest, Model], dict]]]] = {}


def _key(model) -> str:
    return model._meta.label_lower


def register_tab(model, tab: ViewTab) -> ViewTab:
    """Add ``tab`` to the object page of ``model`` (a later registration of a name replaces it)."""
    _TABS.setdefault(_key(model), {})[tab.name] = tab
    return tab


def extend_tab(model, name: str, context: Callable[[HttpRequest, Model], dict]) -> None:
    """Add to the context of another app's tab (``vms`` counts a host's VMs on its summary)."""
    _TAB_EXTRAS.setdefault(_key(model), {}).setdefault(name, []).append(context)


def tab_context(request: HttpRequest, model, obj, tab: ViewTab) -> dict:
    """What ``tab`` of ``obj``'s page shows: its own context and what other apps add."""
    context = tab.context(request, obj) if tab.context is not None else {}
    for extra in _TAB_EXTRAS.get(_key(model), {}).get(tab.name, []):
        context.update(extra(request, obj))
    return context


def tab_bar(request: HttpRequest, model, obj, active: ViewTab | None = None) -> dict:
    """The tab bar of ``obj``'s page (on the page itself, or on its edit and action pages)."""
    tabs = [t for t in tabs_for(model) if t.is_visible(request, obj)]
    if not tabs:
        return {}
    return {
        "tabs": [
            {"tab": t, "badge": t.badge(obj) if t.badge else None, "active": t is active}
            for t in tabs
        ],
        "tabs_url": obj.get_absolute_url(),
    }


def tabs_for(model) -> list[ViewTab]:
    """The tabs of ``model``'s page, by weight, then in the order they were registered."""
    tabs = list(_TABS.get(_key(model), {}).values())
    return sorted(tabs, key=lambda t: t.weight)


# --- the base view ---------------------------------------------------------------------------


class PanelView(View):
    """A signed-in user's page about one object (or none): checks first, then ``handle``.

    ``methods`` limits the HTTP methods (405 otherwise); by default a page answers any method,
    its form reading only a POST. ``decorators`` wrap the view (e.g. a CSP exception).
    """

    #: only platform admins see this page (others get a 403)
    admin_only: bool = False
    #: the ``panel.tenancy.Action`` needed on the object's tenant, and what it lets one do
    permission: str | None = None
    permission_what: str = "do this"
    #: the object's model, for ``get_queryset``'s default and the object page's tabs
    model: type[Model] | None = None
    #: URL keyword of the object's id
    pk_kwarg: str = "pk"
    methods: tuple[str, ...] | None = None
    decorators: tuple = ()

    @classonlymethod
    def as_view(cls, **initkwargs):
        view = super().as_view(**initkwargs)
        for decorator in reversed(cls.decorators):
            view = decorator(view)
        return login_required(view)

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if self.methods is not None and request.method not in self.methods:
            return self.http_method_not_allowed(request, *args, **kwargs)
        if self.admin_only:
            require_platform_admin(request)
        return self.handle(request, **kwargs)

    # -- the object, the user may see -----------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        """What the user may see; an id outside it is a 404."""
        if self.model is None:
            raise NotImplementedError(f"{type(self).__name__} names no model or queryset")
        return self.model._default_manager.all()

    def get_object(self, request: HttpRequest, **kwargs) -> Model:
        return get_object_or_404(self.get_queryset(request), pk=kwargs[self.pk_kwarg])

    def tenant_of(self, obj) -> int | None:
        """The tenant whose role ``permission`` is checked in (an object's ``tenant_id``)."""
        return getattr(obj, "tenant_id", None)

    def check_permission(self, request: HttpRequest, obj) -> None:
        if self.permission and not can(request.user, self.permission, self.tenant_of(obj)):
            raise PermissionDenied(f"Your role may not {self.permission_what}.")

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        raise NotImplementedError

    def reveal(self, request: HttpRequest, obj) -> str:
        """The resource tree's nodes to open for this page."""
        return ""


# --- list --------------------------------------------------------------------------------------


class ObjectListView(PanelView):
    """A filtered, paginated table: ``filterset_class`` over ``get_queryset``."""

    template_name: str = ""
    filterset_class = None
    active_tab: str = ""

    def get_extra_context(self, request: HttpRequest) -> dict:
        return {}

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        filterset = self.filterset_class(request.GET or None, queryset=self.get_queryset(request))
        context = {
            "active_tab": self.active_tab,
            "filterset": filterset,
            "page": paginate(request, filterset.qs),
            **self.get_extra_context(request),
        }
        return render(request, self.template_name, context)


# --- object page with tabs -------------------------------------------------------------------


class ObjectView(PanelView):
    """An object's page: its header, and the registered tab asked for by ``?tab=``.

    The template gets the object under ``context_object_name``, ``tab`` (the tab's name),
    ``tabs`` (the visible ones, for the tab bar) and ``tab_template`` (what to include).
    """

    template_name: str = ""
    context_object_name: str = "object"

    def get_extra_context(self, request: HttpRequest, obj, tab: ViewTab) -> dict:
        return {}

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        obj = self.get_object(request, **kwargs)
        self.check_permission(request, obj)
        tabs = [t for t in tabs_for(self.model) if t.is_visible(request, obj)]
        tab = None
        if tabs:
            name = current_tab(request, tuple(t.name for t in tabs))
            tab = next(t for t in tabs if t.name == name)
        context = {
            self.context_object_name: obj,
            "tree_reveal": tab.reveal(obj)
            if tab is not None and tab.reveal
            else self.reveal(request, obj),
        }
        if tab is not None:
            context.update(tab=tab.name, tab_template=tab.template)
            context.update(tab_bar(request, self.model, obj, tab))
        context.update(self.get_extra_context(request, obj, tab))
        if tab is not None:
            context.update(tab_context(request, self.model, obj, tab))
        return render(request, self.template_name, context)


# --- edit ----------------------------------------------------------------------------------


class ObjectEditView(PanelView):
    """An object's edit form: ``get_initial`` fills it, ``save`` calls the service; service
    errors land on the form (400), success goes back to the object with a message."""

    template_name: str = ""
    form_class = None
    context_object_name: str = "object"

    def get_initial(self, obj) -> dict:
        return {}

    def get_form(self, request: HttpRequest, obj):
        return self.form_class(request.POST or None, initial=self.get_initial(obj))

    def save(self, request: HttpRequest, obj, data: dict) -> str:
        """Call the service; return the message to show."""
        raise NotImplementedError

    def success_url(self, obj) -> str:
        return obj.get_absolute_url()

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        obj = self.get_object(request, **kwargs)
        self.check_permission(request, obj)
        form = self.get_form(request, obj)
        if request.method == "POST" and form.is_valid():
            try:
                message = self.save(request, obj, form.cleaned_data)
            except ValidationError as exc:
                apply_service_errors(form, exc)
            else:
                messages.success(request, message)
                return redirect(self.success_url(obj))
        context = {
            self.context_object_name: obj,
            "form": form,
            "tree_reveal": self.reveal(request, obj),
            **tab_bar(request, self.model, obj),
        }
        return render(request, self.template_name, context, status=400 if form.errors else 200)


# --- delete --------------------------------------------------------------------------------


class ObjectDeleteView(PanelView):
    """A confirmation page (GET) and the deletion (POST) through ``delete``; a lock held by a
    task goes back to the object with the error."""

    template_name: str = ""
    context_object_name: str = "object"

    def delete(self, request: HttpRequest, obj) -> str:
        """Call the service; return the message to show."""
        raise NotImplementedError

    def success_url(self, obj) -> str:
        raise NotImplementedError

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        obj = self.get_object(request, **kwargs)
        self.check_permission(request, obj)
        if request.method == "POST":
            try:
                message = self.delete(request, obj)
            except LockConflict as exc:
                messages.error(request, str(exc))
                return redirect(obj)
            messages.success(request, message)
            return redirect(self.success_url(obj))
        context = {
            self.context_object_name: obj,
            "tree_reveal": self.reveal(request, obj),
            **tab_bar(request, self.model, obj),
        }
        return render(request, self.template_name, context)


# --- action: form + service + result ---------------------------------------------------------


class ActionView(PanelView):
    """One small action on an object: a form that works as a page of its own and, opened from
    a button with ``data-dialog``, inside the page's dialog.

    On a valid POST ``perform(data)`` calls the service and returns where to go next (None:
    back to ``return_url``) and the message to show there. A service's ValidationError lands on
    the form's fields, a LockConflict names the task holding the lock, and the exceptions in
    ``conflicts`` are shown above the form. ``setup`` looks up what else the URL names (a disk,
    a snapshot) after the object and the role were checked.
    """

    form_class = None
    template_name: str = ""
    dialog_template_name: str = ""
    title: str = ""
    submit: str = "Apply"
    icon: str = "check"
    danger: bool = False
    intro: str = ""
    #: service field names renamed to the form's
    error_fields: dict | None = None
    conflicts: tuple[type[Exception], ...] = ()
    context_object_name: str = "object"

    def setup_action(self, request: HttpRequest, obj, **kwargs) -> None:
        """Look up what else the URL names; raise Http404 for what is not there."""

    def get_initial(self) -> dict:
        return {}

    def get_form(self):
        return self.form_class(post_or_none(self.request), initial=self.get_initial())

    def get_title(self) -> str:
        return self.title

    def get_intro(self) -> str:
        return self.intro

    def can_submit(self) -> bool:
        return True

    def get_extra_context(self) -> dict:
        return {}

    def perform(self, data: dict) -> tuple[str | None, str]:
        raise NotImplementedError

    def return_url(self) -> str:
        """Where the action goes back to: the object's page (or the tab it started from)."""
        return self.object.get_absolute_url()

    def finish(self, url: str) -> HttpResponse:
        """After a success: back to the page (a dialog's script follows HX-Redirect)."""
        if is_htmx(self.request):
            return HttpResponse(status=204, headers={"HX-Redirect": url})
        return redirect(url)

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        self.object = self.get_object(request, **kwargs)
        self.check_permission(request, self.object)
        self.setup_action(request, self.object, **kwargs)
        form = self.get_form()
        self.form = form
        can_submit = self.can_submit()
        if request.method == "POST" and can_submit and form.is_valid():
            try:
                url, message = self.perform(form.cleaned_data)
            except ValidationError as exc:
                apply_service_errors(form, exc, self.error_fields)
            except LockConflict as exc:
                form.add_error(None, busy_message(exc))
            except self.conflicts as exc:
                form.add_error(None, str(exc))
            else:
                if message:
                    messages.success(request, message)
                return self.finish(url or self.return_url())
        context = {
            self.context_object_name: self.object,
            "form": form,
            "title": self.get_title(),
            "submit": self.submit,
            "icon": self.icon,
            "danger": self.danger,
            "intro": self.get_intro(),
            "action_url": request.get_full_path(),
            "cancel_url": self.return_url(),
            "can_submit": can_submit,
            "tree_reveal": self.reveal(request, self.object),
            **self.get_extra_context(),
        }
        template = self.dialog_template_name if is_htmx(request) else self.template_name
        return render(request, template, context, status=400 if form.errors else 200)


# --- tree children -------------------------------------------------------------------------


class TreeChildrenView(PanelView):
    """A lazily loaded node of the resource tree: the first ``TREE_LIMIT`` children of an
    object, and a link to the full list when there are more.

    The page's own HTML holds only the first level's nodes, each with an empty list that loads
    from a view like this one when the node opens; so a page does not grow with the hosts and
    VMs. A ``root`` view lists a first-level node's children (the datacenter's hosts, the
    tenants): it has no parent object, ``get_children`` gets ``None``.
    """

    methods = ("GET", "HEAD")
    template_name: str = ""
    context_children_name: str = "children"
    root: bool = False

    def get_children(self, request: HttpRequest, parent) -> QuerySet:
        raise NotImplementedError

    def more_url(self, parent) -> str:
        raise NotImplementedError

    def handle(self, request: HttpRequest, **kwargs) -> HttpResponse:
        parent = None
        if not self.root:
            parent = self.get_object(request, **kwargs)
            self.check_permission(request, parent)
        children = list(self.get_children(request, parent)[: TREE_LIMIT + 1])
        more = self.more_url(parent) if len(children) > TREE_LIMIT else ""
        context = {self.context_children_name: children[:TREE_LIMIT], "more_url": more}
        context.update(self.get_extra_context(request, parent, context[self.context_children_name]))
        return render(request, self.template_name, context)

    def get_extra_context(self, request: HttpRequest, parent, children: list) -> dict:
        """More for the template (e.g. counts of the children, read in one query)."""
        return {}
