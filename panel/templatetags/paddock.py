"""Template helpers of the UI shell: icons, state badges, sizes, the resource tree, the task bar."""

from __future__ import annotations

import functools

from django import template
from django.conf import settings
from django.templatetags.static import static
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from panel import selectors as panel_selectors
from panel.choices import TaskState
from panel.markdown import render_markdown
from panel.models import TAG_PALETTE, TagColour
from panel.registry import state_labels, tree_sections
from panel.tenancy import is_platform_admin, role_in

register = template.Library()

# Rows of the task bar.
TASKBAR_ROWS = 12

_TASK_STATE_LABELS = dict(TaskState.choices)
_TASK_STATE_ICONS = {
    TaskState.QUEUED: "clock",
    TaskState.RUNNING: "spinner",
    TaskState.SUCCEEDED: "check",
    TaskState.FAILED: "alert",
    TaskState.CANCELLED: "x",
}


@functools.lru_cache(maxsize=4)
def _sprite(static_url: str) -> str:
    """The sprite's URL, worked out once (a page draws a few hundred icons; the hashed name of
    a deployed sprite changes only with a new process)."""
    return static("img/icons.svg")


@register.simple_tag
def icon(name: str, extra_class: str = "", title: str = "") -> SafeString:
    """An icon of the sprite in static/img/icons.svg."""
    sprite = _sprite(settings.STATIC_URL)
    if title:
        return format_html(
            '<svg class="i i-{} {}" role="img" aria-label="{}"><title>{}</title>'
            '<use href="{}#{}"></use></svg>',
            name, extra_class, title, title, sprite, name,
        )  # fmt: skip
    return format_html(
        '<svg class="i i-{} {}" aria-hidden="true"><use href="{}#{}"></use></svg>',
        name, extra_class, sprite, name,
    )  # fmt: skip


@register.simple_tag
def vm_state(state: str, label: bool = True) -> SafeString:
    """A VM's observed state: a coloured glyph and, unless ``label=False``, its name."""
    labels = state_labels.get("vm") or {}
    text = labels.get(state, state)
    glyph = icon(f"st-{state}" if state in labels else "st-unknown")
    if not label:
        return format_html('<span class="state state-{}" title="{}">{}</span>', state, text, glyph)
    return format_html('<span class="state state-{}">{}{}</span>', state, glyph, text)


@register.simple_tag
def task_state(state: str, label: bool = True) -> SafeString:
    text = _TASK_STATE_LABELS.get(state, state)
    glyph = icon(_TASK_STATE_ICONS.get(state, "clock"))
    if not label:
        return format_html(
            '<span class="tstate tstate-{}" title="{}">{}</span>', state, text, glyph
        )
    return format_html('<span class="tstate tstate-{}">{}{}</span>', state, glyph, text)


def tag_colours(request) -> dict[str, str]:
    """Tag -> colour, read once per request (a list page draws a chip per tag of each row)."""
    colours = getattr(request, "_paddock_tag_colours", None) if request is not None else None
    if colours is None:
        colours = dict(TagColour.objects.values_list("tag", "colour"))
        if request is not None:
            request._paddock_tag_colours = colours
    return colours


@register.simple_tag(takes_context=True)
def tag_chip(context, tag: str) -> SafeString:
    """A tag as a chip in its colour: a palette colour's class, or a #rrggbb as the chip's dot
    (an SVG fill, since the CSP allows no style attribute)."""
    colour = tag_colours(context.get("request")).get(tag, "")
    if colour in TAG_PALETTE:
        return format_html('<span class="tag tag-c-{}" data-tag="{}">{}</span>', colour, tag, tag)
    if colour:
        return format_html(
            '<span class="tag tag-hex" data-tag="{}"><svg class="tag-dot" viewBox="0 0 8 8" '
            'aria-hidden="true"><circle cx="4" cy="4" r="4" fill="{}"></circle></svg>{}</span>',
            tag, colour, tag,
        )  # fmt: skip
    return format_html('<span class="tag" data-tag="{}">{}</span>', tag, tag)


@register.filter
def markdown(text: str) -> SafeString:
    """Markdown notes as sanitized HTML (``panel.markdown``)."""
    return render_markdown(text or "")


@register.filter
def mib(value) -> str:
    """Mebibytes as a readable size: 2048 -> '2.0 GiB'."""
    if value in (None, ""):
        return "—"
    value = float(value)
    for unit in ("MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "MiB" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # pragma: no cover


@register.filter
def kib(value) -> str:
    """A page size in KiB as the kernel names it: 2048 -> '2 MiB', 1048576 -> '1 GiB'."""
    value = int(value or 0)
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value} {unit}"
        value //= 1024
    return ""  # pragma: no cover


@register.filter
def iec(value) -> str:
    """Bytes as a readable size with binary units."""
    if value in (None, ""):
        return "—"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # pragma: no cover


@register.filter
def percent(part, whole) -> float:
    """``part`` as a share of ``whole`` in percent (0 when ``whole`` is empty)."""
    try:
        return round(100.0 * float(part or 0) / float(whole), 1) if whole else 0.0
    except (TypeError, ValueError):
        return 0.0


@register.filter
def bar_class(value) -> str:
    """The width class (``w-0`` .. ``w-100``) of a bar: a percentage clamped and rounded.

    Bars take their width from a class, not a ``style`` attribute, so the strict
    Content-Security-Policy (style-src 'self') holds."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = 0.0
    return f"w-{round(max(0.0, min(100.0, value)))}"


@register.filter
def indent_class(depth) -> str:
    """The indent class (``indent-0`` .. ``indent-20``) of a tree row at ``depth``."""
    try:
        depth = int(depth)
    except (TypeError, ValueError):
        depth = 0
    return f"indent-{max(0, min(20, depth))}"


@register.filter
def cpu_ranges(cpus) -> str:
    """CPU ids as ranges: [0, 1, 2, 3, 8, 9] -> '0-3, 8-9'."""
    ids = sorted({int(c) for c in cpus or []})
    if not ids:
        return "—"
    ranges, start, prev = [], ids[0], ids[0]
    for cpu in ids[1:]:
        if cpu != prev + 1:
            ranges.append((start, prev))
            start = cpu
        prev = cpu
    ranges.append((start, prev))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


@register.filter
def task_kind(kind: str) -> str:
    """'host.sync' -> 'Host sync'."""
    return kind.replace(".", " ").replace("_", " ").capitalize() if kind else ""


@register.filter
def duration(task) -> str:
    """How long a task ran (or has been running)."""
    if not task.started:
        return ""
    end = task.finished or timezone.now()
    seconds = max(0, int((end - task.started).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


@register.filter
def role_of(user, tenant_id) -> str:
    """The user's role in a tenant ('' when none)."""
    return role_in(user, tenant_id) or ""


@register.simple_tag(takes_context=True)
def tab_url(context, tab: str) -> str:
    """The current page with ``?tab=`` set (other query parameters dropped)."""
    return f"{context['request'].path}?tab={tab}"


@register.inclusion_tag("includes/tree.html", takes_context=True)
def resource_tree(context) -> dict:
    """The left resource tree: its first level only, read with no query.

    Every node's children load when it opens (``panel.generic.TreeChildrenView``: the hosts,
    the tenants, what a host holds, a host's or tenant's VMs), so a page's HTML is the same
    size with 5 hosts or 2,000; ``tree_reveal`` names the nodes to open for the page's object.
    """
    request = context["request"]
    admin = is_platform_admin(request.user)
    # The Datacenter node opens to what the apps registered for admins (the hosts), else the
    # tenants the user belongs to.
    sections = list(tree_sections.values()) if admin else []
    return {
        "request": request,
        "is_platform_admin": admin,
        "dc_children": reverse(sections[0] if sections else "ui:tree_tenants"),
        "reveal": context.get("tree_reveal", ""),
    }


@register.inclusion_tag("includes/taskbar.html", takes_context=True)
def taskbar(context) -> dict:
    request = context["request"]
    return {
        "request": request,
        "tasks": recent_tasks(request.user),
        "collapsed": request.COOKIES.get("paddock_taskbar") == "collapsed",
        "is_platform_admin": is_platform_admin(request.user),
    }


def recent_tasks(user) -> list:
    """The task bar's rows: the user's most recent tasks (their logs are not needed here)."""
    return list(panel_selectors.tasks_for(user).prefetch_related(None)[:TASKBAR_ROWS])


@register.filter
def get_item(mapping, key):
    """``mapping[key]`` in a template (None when missing)."""
    return (mapping or {}).get(key)


@register.filter
def other_states(states) -> int:
    """VMs of a state count mapping that are neither running nor shut off."""
    return sum(n for state, n in (states or {}).items() if state not in ("running", "shutoff"))


@register.filter
def hugepages_used(hp: dict) -> float:
    """Share of a hugepage pool in use, in percent."""
    total = int(hp.get("total") or 0)
    return round(100.0 * (total - int(hp.get("free") or 0)) / total, 1) if total else 0.0
