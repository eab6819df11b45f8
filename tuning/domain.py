"""The domain part of a tuning plan in domain XML: the patch lives with the rest of the domain
XML in ``vms.domxml`` (``apply_tuning``, ``tuned_xml``, ``tuning_changes``); here are the diff
shown before an apply and the contributor that tunes a new VM's build."""

from __future__ import annotations

import difflib

from vms.domxml import apply_tuning, pretty, pretty_el, tuned_xml, tuning_changes

__all__ = [
    "apply_tuning",
    "contribute",
    "diff",
    "pretty",
    "pretty_el",
    "tuned_xml",
    "tuning_changes",
]


def diff(before: str, after: str) -> str:
    """A unified diff of two domain definitions, for people."""
    return "".join(
        difflib.unified_diff(
            pretty(before).splitlines(keepends=True),
            pretty(after).splitlines(keepends=True),
            fromfile="current",
            tofile="tuned",
            n=2,
        )
    )


def contribute(dom, spec) -> None:
    """A ``vms.domxml`` contributor: a new VM's tuning (``DomainBuild.tuning``), when it has one."""
    tuning = getattr(spec, "tuning", None)
    if tuning:
        apply_tuning(dom, tuning)
