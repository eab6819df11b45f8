"""Network XML -> inventory fields."""

from __future__ import annotations

import ipaddress

from panel.xmlutil import parse, text

from .choices import ForwardMode

_KNOWN_MODES = {c.value for c in ForwardMode}


def parse_network(xml: str) -> dict:
    root = parse(xml)
    forward = root.find("forward")
    if forward is None:
        mode = ForwardMode.ISOLATED
    else:
        mode = forward.get("mode") or ForwardMode.NAT  # libvirt's default forward mode
        if mode not in _KNOWN_MODES:
            mode = ForwardMode.ISOLATED
    bridge = root.find("bridge")
    ip = root.find("ip")
    address, prefix = "", None
    if ip is not None and ip.get("address"):
        address = ip.get("address")
        if ip.get("prefix"):
            prefix = int(ip.get("prefix"))
        elif ip.get("netmask"):
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{ip.get('netmask')}").prefixlen
    return {
        "name": text(root, "name"),
        "uuid": text(root, "uuid"),
        "forward_mode": mode,
        "bridge": bridge.get("name", "") if bridge is not None else "",
        "ip_address": address,
        "ip_prefix": prefix,
    }
