"""Storage pool and volume XML -> inventory fields."""

from __future__ import annotations

from panel.xmlutil import parse, text, to_bytes

from .choices import PoolType

_KNOWN_POOL_TYPES = {c.value for c in PoolType}


def parse_pool(xml: str) -> dict:
    root = parse(xml)
    pool_type = root.get("type", "")
    return {
        "name": text(root, "name"),
        "uuid": text(root, "uuid"),
        "pool_type": pool_type if pool_type in _KNOWN_POOL_TYPES else PoolType.OTHER,
        "path": text(root, "target/path"),
        "source_name": text(root, "source/name"),
        "capacity": to_bytes(root.find("capacity")),
        "allocation": to_bytes(root.find("allocation")),
        "available": to_bytes(root.find("available")),
    }


def parse_volume(xml: str) -> dict:
    root = parse(xml)
    fmt = root.find("target/format")
    return {
        "name": text(root, "name"),
        "key": text(root, "key"),
        "path": text(root, "target/path"),
        "vol_type": root.get("type", ""),
        "format": fmt.get("type", "") if fmt is not None else "",
        "capacity": to_bytes(root.find("capacity")),
        "allocation": to_bytes(root.find("allocation")),
        "backing_path": text(root, "backingStore/path"),
    }
