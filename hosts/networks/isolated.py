"""Isolated networks: a libvirt bridge with no forwarding (guests reach each other only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hosts.choices import ForwardMode

from .base import NetworkBackend


@dataclass(frozen=True)
class IsolatedBackend(NetworkBackend):
    kind: ClassVar[str] = "isolated"
    label: ClassVar[str] = "isolated"
    forward_modes: ClassVar[tuple[str, ...]] = (ForwardMode.ISOLATED,)
