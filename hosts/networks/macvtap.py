"""Direct networks: macvtap on a host interface (passthrough, private or VEPA mode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hosts.choices import ForwardMode

from .base import NetworkBackend


@dataclass(frozen=True)
class MacvtapBackend(NetworkBackend):
    """libvirt creates the macvtap device of each NIC from the network's interface pool."""

    kind: ClassVar[str] = "macvtap"
    label: ClassVar[str] = "macvtap"
    forward_modes: ClassVar[tuple[str, ...]] = (
        ForwardMode.PASSTHROUGH,
        ForwardMode.PRIVATE,
        ForwardMode.VEPA,
    )
