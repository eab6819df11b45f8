"""What ``tuning`` hands to the rooms below it: VM create, release and observe hooks, the
domain XML contributor, tabs, events. Called once from ``TuningConfig.ready()``."""

from __future__ import annotations


def register() -> None:
    """Each part of tuning registers itself here (hooks, tabs, step handlers)."""
