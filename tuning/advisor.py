"""Recommendations from real data, each with its evidence and plan (filled in by its owner)."""

from __future__ import annotations


def recommendations(vm) -> list[dict]:
    """``[{"rule", "severity", "message", "evidence": {...}, "policy": {knobs} | None}]``."""
    return []
