"""Bridged networks: a libvirt network over a bridge that exists on the host already."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hosts.choices import ForwardMode

from .base import NetworkBackend


@dataclass(frozen=True)
class BridgeBackend(NetworkBackend):
    """The NIC names the libvirt network, which names the host's bridge (``network.bridge``);
    the bridge is the host's own, so Paddock sets nothing up for it."""

    kind: ClassVar[str] = "bridge"
    label: ClassVar[str] = "bridge"
    forward_modes: ClassVar[tuple[str, ...]] = (ForwardMode.BRIDGE,)
