"""Template helpers of the VM pages: option lists with data attributes, who may create VMs."""

from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from panel.tenancy import Action, is_platform_admin, tenant_ids

register = template.Library()


def _option(opt: dict, selected: str) -> SafeString:
    attrs = format_html_join(
        "", ' data-{}="{}"', ((key, value) for key, value in opt.get("data", {}).items())
    )
    value = str(opt["value"])
    return format_html(
        '<option value="{}"{}{}{}>{}</option>',
        value,
        attrs,
        " selected" if value == selected else "",
        " disabled" if opt.get("disabled") else "",
        opt["label"],
    )


@register.simple_tag
def options(groups, selected=None, blank: str = "") -> SafeString:
    """``<option>``s of ``groups`` ([(label or None, [option dicts])]), ``selected`` marked.

    Each option dict has ``value``, ``label`` and optionally ``data`` (rendered as ``data-*``
    attributes the wizard's script filters on) and ``disabled``. ``blank`` adds a first option
    with an empty value.
    """
    selected = "" if selected is None else str(selected)
    parts = [format_html('<option value="">{}</option>', blank)] if blank else []
    for label, items in groups or []:
        rendered = SafeString("".join(_option(opt, selected) for opt in items))
        if label:
            parts.append(format_html('<optgroup label="{}">{}</optgroup>', label, rendered))
        else:
            parts.append(rendered)
    return SafeString("".join(parts))


@register.simple_tag(takes_context=True)
def may_create_vms(context) -> bool:
    """Whether the user may create VMs in at least one tenant (the "Create VM" button)."""
    user = context["request"].user
    return is_platform_admin(user) or bool(tenant_ids(user, Action.VM_CREATE))
