"""The base of network backends and their registry (see the package's docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class NetworkBackend:
    """A libvirt network: NICs name it, the host needs nothing more."""

    #: the backend's name
    kind: ClassVar[str] = "network"
    label: ClassVar[str] = "network"
    #: the ``<forward mode=...>`` values (``hosts.choices.ForwardMode``) this backend serves
    forward_modes: ClassVar[tuple[str, ...]] = ()

    def interface_source(self, network) -> tuple[str, dict[str, str]]:
        """``<interface type=...>`` of a NIC on ``network`` and its ``<source>`` attributes."""
        return "network", {"network": network.name}

    def host_actions(self, network) -> list:
        """What must be set on the host, outside libvirt, before a NIC can use ``network``:
        actions for the host-action executor, in order. Today's kinds need none."""
        return []


_BY_MODE: dict[str, NetworkBackend] = {}
_FALLBACK = NetworkBackend()


def register(backend: NetworkBackend) -> NetworkBackend:
    for mode in backend.forward_modes:
        _BY_MODE[str(mode)] = backend
    return backend


def backend_for(network_or_mode) -> NetworkBackend:
    """The backend of a network (a ``Network`` row, or its ``forward_mode`` string). A mode no
    backend claims is a plain libvirt network."""
    mode = getattr(network_or_mode, "forward_mode", network_or_mode)
    return _BY_MODE.get(str(mode or ""), _FALLBACK)
