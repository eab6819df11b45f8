"""SR-IOV networks (forward mode ``hostdev``): libvirt hands each NIC a virtual function from
the network's pool. Creating the VFs on the host is not Paddock's yet: when it is, this
backend's ``host_actions`` returns the action that sets ``sriov_numvfs``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from hosts.choices import ForwardMode

from .base import NetworkBackend


@dataclass(frozen=True)
class HostdevBackend(NetworkBackend):
    kind: ClassVar[str] = "hostdev"
    label: ClassVar[str] = "SR-IOV (hostdev)"
    forward_modes: ClassVar[tuple[str, ...]] = (ForwardMode.HOSTDEV,)
