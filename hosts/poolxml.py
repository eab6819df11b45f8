"""Storage pool and volume XML -> inventory fields."""

from __future__ import annotations

from panel.xmlutil import parse, text, to_bytes

from .choices import PoolType

_KNOWN_POOL_TYPES = {c.value for c in PoolType}


# Sizes are stored as signed 64-bit integers; libvirt reports unsigned ones.
_MAX_SIZE = 2**63 - 1


def _sizes(capacity: int, allocation: int, available: int) -> dict:
    capacity, allocation = min(capacity, _MAX_SIZE), min(allocation, _MAX_SIZE)
    if available > capacity:
        # An unsigned underflow (allocation above capacity, as libvirt's test driver reports
        # when its volumes outgrow its fixed pool size): nothing is available.
        available = max(0, capacity - allocation)
    return {"capacity": capacity, "allocation": allocation, "available": available}


def parse_pool(xml: str) -> dict:
    root = parse(xml)
    pool_type = root.get("type", "")
    return {
        "name": text(root, "name"),
        "uuid": text(root, "uuid"),
        "pool_type": pool_type if pool_type in _KNOWN_POOL_TYPES else PoolType.OTHER,
        "path": text(root, "target/path"),
        "source_name": text(root, "source/name"),
        **_sizes(
            to_bytes(root.find("capacity")),
            to_bytes(root.find("allocation")),
            to_bytes(root.find("available")),
        ),
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
        "capacity": min(to_bytes(root.find("capacity")), _MAX_SIZE),
        "allocation": min(to_bytes(root.find("allocation")), _MAX_SIZE),
        "backing_path": text(root, "backingStore/path"),
    }
