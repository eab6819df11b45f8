"""Network backends: one class per kind of network, declaring how a VM's NIC on it is written
and what the host needs before a NIC can use it.

The interface (stable; ``vms/domxml.py`` calls it)::

    from hosts.networks import backend_for

    backend = backend_for(network)          # a Network row, or its forward mode ("nat", ...)
    backend.kind                            # "isolated", "nat", "bridge", "macvtap", "hostdev"
    backend.interface_source(network)       # -> ("network", {"network": "default"})
    backend.host_actions(network)           # -> [] (actions for the host-action executor)

``interface_source`` gives the ``type`` of the ``<interface>`` element and the attributes of its
``<source>``: ``<interface type="network"><source network="default"/>``. Every kind Paddock
knows today is a libvirt network, so its NICs name the network (libvirt then picks the bridge,
the macvtap device or the VF). ``host_actions`` lists what must be set on the host, outside
libvirt, before a NIC can use the network; none of today's kinds needs any. A VXLAN or SR-IOV
backend that creates its device on the host returns its actions there.

Adding a network type is one new module here with a ``NetworkBackend`` subclass, registered
with ``register``.
"""

from __future__ import annotations

from .base import NetworkBackend, backend_for, register
from .bridge import BridgeBackend
from .hostdev import HostdevBackend
from .isolated import IsolatedBackend
from .macvtap import MacvtapBackend
from .nat import NatBackend

for _backend in (
    IsolatedBackend(),
    NatBackend(),
    BridgeBackend(),
    MacvtapBackend(),
    HostdevBackend(),
):
    register(_backend)

__all__ = [
    "BridgeBackend",
    "HostdevBackend",
    "IsolatedBackend",
    "MacvtapBackend",
    "NatBackend",
    "NetworkBackend",
    "backend_for",
    "register",
]
