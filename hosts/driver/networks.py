"""The libvirt side of networks: reading a host's networks.

How a NIC on a network is written, and what a network needs on the host, is the network's
backend's (``hosts.networks.backend_for``); this module only talks to libvirt.
"""

from __future__ import annotations

import libvirt

from hosts.netxml import parse_network

from .errors import DriverError


def read_networks(conn) -> list[dict]:
    """``parse_network`` fields plus ``active``, ``autostart`` and ``persistent`` of every
    network on the host; one removed while they are listed is left out. Raises ``DriverError``."""
    found = []
    try:
        networks = conn.listAllNetworks(0)
    except libvirt.libvirtError as exc:
        raise DriverError.from_libvirt(exc) from None
    for net in networks:
        try:
            values = parse_network(net.XMLDesc(0))
            values["active"] = bool(net.isActive())
            values["autostart"] = bool(net.autostart())
            values["persistent"] = bool(net.isPersistent())
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise DriverError.from_libvirt(exc) from None
            continue  # removed while we were listing
        found.append(values)
    return found
