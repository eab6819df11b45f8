"""Shared lxml helpers: a hardened parser and unit conversion for libvirt XML."""

from __future__ import annotations

from lxml import etree

# libvirt's XML is trusted more than user input, but never enough to expand entities or fetch.
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True)

_UNIT_BYTES = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
    "p": 1024**5,
    "pib": 1024**5,
    "pb": 1000**5,
}


def parse(xml: str | bytes) -> etree._Element:
    if isinstance(xml, str):
        xml = xml.encode()
    return etree.fromstring(xml, PARSER)


def to_bytes(elem: etree._Element | None, default_unit: str = "bytes") -> int:
    """Size of a libvirt element like ``<capacity unit='GiB'>20</capacity>`` in bytes."""
    if elem is None or not (elem.text or "").strip():
        return 0
    unit = (elem.get("unit") or default_unit).lower()
    return int(elem.text.strip()) * _UNIT_BYTES.get(unit, 1)


def text(root: etree._Element, path: str, default: str = "") -> str:
    value = root.findtext(path)
    return value.strip() if value else default


def parse_cpuset(spec: str) -> list[int]:
    """Expand a libvirt cpuset such as ``0-3,8,^2`` into a sorted list of CPU ids."""
    include: set[int] = set()
    exclude: set[int] = set()
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        target = exclude if part.startswith("^") else include
        part = part.lstrip("^")
        if "-" in part:
            lo, hi = part.split("-", 1)
            target.update(range(int(lo), int(hi) + 1))
        else:
            target.add(int(part))
    return sorted(include - exclude)


def format_cpuset(cpus) -> str:
    """A sorted, compact cpuset: ``[0, 1, 2, 5]`` -> ``"0-2,5"`` (the inverse of
    :func:`parse_cpuset`)."""
    parts: list[str] = []
    start = prev = None
    for cpu in sorted(set(cpus)):
        if start is None:
            start = prev = cpu
        elif cpu == prev + 1:
            prev = cpu
        else:
            parts.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = cpu
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(parts)
