"""Virtual networks with forwarding: NAT, routed and open (a libvirt-managed bridge)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hosts.choices import ForwardMode

from .base import NetworkBackend


@dataclass(frozen=True)
class NatBackend(NetworkBackend):
    kind: ClassVar[str] = "nat"
    label: ClassVar[str] = "NAT, routed or open"
    forward_modes: ClassVar[tuple[str, ...]] = (
        ForwardMode.NAT,
        ForwardMode.ROUTE,
        ForwardMode.OPEN,
    )
