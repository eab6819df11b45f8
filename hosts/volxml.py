"""Storage volume XML for libvirt's ``storageVolCreateXML`` and ``createXMLFrom``, built with lxml.

What libvirt 9 does with the document, and why it is built this way:

- A qcow2 volume without ``<compat>`` is created as qcow2 version 2 (compat 0.10), so every
  qcow2 document asks for ``<compat>1.1</compat>``.
- A ``<backingStore>`` without ``<format>`` is recorded in the new image as a *raw* backing file,
  even when the base is qcow2: the guest would then see the base's qcow2 header instead of its
  data. The backing format is therefore required.
- In directory pools a raw volume without ``<allocation>`` is fully allocated; ``allocation=0``
  makes it sparse. Logical pools get no ``<allocation>`` at all (a thick LV of the full size):
  an allocation below the capacity asks LVM for a sparse snapshot-type LV.
"""

from __future__ import annotations

import re

from lxml import etree

# The alphabet of ``panel.validators.NAME_RE`` (no spaces, slashes, quotes or XML metacharacters,
# starting with a letter or digit), with room for a VM name plus a suffix such as
# ``-disk0.qcow2``; 127 characters is LVM's limit for a logical volume name.
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}$")

FORMATS = ("raw", "qcow2")
BACKING_FORMATS = ("raw", "qcow2")
QCOW2_COMPAT = "1.1"


def check_volume_name(name: object) -> str:
    """The name, if it may become a file or LV name; ``ValueError`` saying why not otherwise."""
    if not isinstance(name, str) or not VOLUME_NAME_RE.fullmatch(name):
        raise ValueError(
            f"Invalid volume name {name!r}: use 1-127 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def _size(value: object, what: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"The {what} must be a whole number of bytes, not {value!r}.")
    if value < minimum:
        raise ValueError(f"The {what} must be at least {minimum} bytes, not {value}.")
    return value


def build_volume_xml(
    name: str,
    capacity_bytes: int,
    fmt: str,
    *,
    allocation: int | None = None,
    backing_path: str | None = None,
    backing_format: str | None = None,
) -> str:
    """A ``<volume>`` document.

    ``fmt`` is ``"raw"`` or ``"qcow2"`` for file-based pools and ``""`` for a logical volume
    (no ``<format>``). ``allocation`` (bytes) is left out when ``None``. A backing file makes a
    linked clone: it needs ``fmt="qcow2"``, an absolute ``backing_path`` and its
    ``backing_format``.
    """
    check_volume_name(name)
    capacity = _size(capacity_bytes, "capacity", minimum=1)
    if fmt not in (*FORMATS, ""):
        raise ValueError(f"Unsupported volume format {fmt!r}: use raw or qcow2.")
    if allocation is not None:
        _size(allocation, "allocation", minimum=0)
        if allocation > capacity:
            raise ValueError(
                f"The allocation ({allocation} bytes) exceeds the capacity ({capacity} bytes)."
            )
    if backing_path is not None or backing_format is not None:
        if fmt != "qcow2":
            raise ValueError("Only a qcow2 volume can have a backing file.")
        if (
            not isinstance(backing_path, str)
            or not backing_path.startswith("/")
            or any(ord(ch) < 32 or ch == "\x7f" for ch in backing_path)
        ):
            raise ValueError(f"The backing file must be an absolute path, not {backing_path!r}.")
        if backing_format not in BACKING_FORMATS:
            raise ValueError(
                f"The backing file's format must be raw or qcow2, not {backing_format!r}."
            )

    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="bytes").text = str(capacity)
    if allocation is not None:
        etree.SubElement(root, "allocation", unit="bytes").text = str(allocation)
    if fmt:
        target = etree.SubElement(root, "target")
        etree.SubElement(target, "format", type=fmt)
        if fmt == "qcow2":
            etree.SubElement(target, "compat").text = QCOW2_COMPAT
    if backing_path is not None:
        backing = etree.SubElement(root, "backingStore")
        etree.SubElement(backing, "path").text = backing_path
        etree.SubElement(backing, "format", type=backing_format)
    return etree.tostring(root, encoding="unicode")
