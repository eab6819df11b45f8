"""hosts.volxml: volume documents for libvirt, read back with lxml."""

from __future__ import annotations

import pytest
from lxml import etree

from hosts.poolxml import parse_volume
from hosts.volxml import build_volume_xml, check_volume_name

GIB = 1024**3


def tree(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


def test_qcow2_volume_asks_for_qcow2_v3():
    root = tree(build_volume_xml("web-01-disk0.qcow2", 20 * GIB, "qcow2"))
    assert root.tag == "volume"
    assert root.findtext("name") == "web-01-disk0.qcow2"
    assert root.find("capacity").get("unit") == "bytes"
    assert root.findtext("capacity") == str(20 * GIB)
    assert root.find("target/format").get("type") == "qcow2"
    assert root.findtext("target/compat") == "1.1"
    assert root.find("allocation") is None
    assert root.find("backingStore") is None


def test_sparse_raw_volume():
    root = tree(build_volume_xml("data.raw", GIB, "raw", allocation=0))
    assert root.find("target/format").get("type") == "raw"
    assert root.find("target/compat") is None
    assert root.findtext("allocation") == "0"
    assert root.find("allocation").get("unit") == "bytes"


def test_logical_volume_has_no_format_and_no_allocation():
    root = tree(build_volume_xml("db-01-disk1", 8 * GIB, ""))
    assert root.find("target") is None
    assert root.find("allocation") is None
    assert parse_volume(etree.tostring(root))["capacity"] == 8 * GIB


def test_linked_clone_names_backing_file_and_format():
    xml = build_volume_xml(
        "web-02-disk0.qcow2",
        10 * GIB,
        "qcow2",
        backing_path="/var/lib/libvirt/images/debian-12.qcow2",
        backing_format="qcow2",
    )
    root = tree(xml)
    assert root.findtext("backingStore/path") == "/var/lib/libvirt/images/debian-12.qcow2"
    assert root.find("backingStore/format").get("type") == "qcow2"
    parsed = parse_volume(xml)
    assert parsed["backing_path"] == "/var/lib/libvirt/images/debian-12.qcow2"
    assert parsed["format"] == "qcow2"


def test_backing_path_characters_are_escaped_not_interpreted():
    xml = build_volume_xml(
        "c.qcow2", GIB, "qcow2", backing_path="/images/a&b<c>.qcow2", backing_format="raw"
    )
    root = tree(xml)
    assert root.findtext("backingStore/path") == "/images/a&b<c>.qcow2"
    assert len(root.findall(".//*")) == 8  # no element smuggled in


@pytest.mark.parametrize(
    "name",
    ["../x", "a b", "<x>", "", ".hidden", "-x", "a/b", "x\n", "é", "a" * 128, None, 5],
)
def test_bad_names_are_refused(name):
    with pytest.raises(ValueError, match="Invalid volume name"):
        build_volume_xml(name, GIB, "raw")
    with pytest.raises(ValueError):
        check_volume_name(name)


def test_long_vm_based_names_fit():
    name = "a" * 63 + "-disk12.qcow2"
    assert check_volume_name(name) == name


@pytest.mark.parametrize("capacity", [0, -1, True, 1.5, "10", None])
def test_bad_capacity_is_refused(capacity):
    with pytest.raises(ValueError, match="capacity"):
        build_volume_xml("x.raw", capacity, "raw")


def test_allocation_must_fit_capacity():
    with pytest.raises(ValueError, match="exceeds the capacity"):
        build_volume_xml("x.raw", GIB, "raw", allocation=GIB + 1)
    with pytest.raises(ValueError, match="allocation"):
        build_volume_xml("x.raw", GIB, "raw", allocation=-1)


@pytest.mark.parametrize("fmt", ["vmdk", "QCOW2", None, "raw'/><x y='"])
def test_unknown_formats_are_refused(fmt):
    with pytest.raises(ValueError, match="Unsupported volume format"):
        build_volume_xml("x.img", GIB, fmt)


@pytest.mark.parametrize(
    ("fmt", "path", "backing_format", "message"),
    [
        ("raw", "/images/base.qcow2", "qcow2", "Only a qcow2 volume"),
        ("", "/images/base.qcow2", "qcow2", "Only a qcow2 volume"),
        ("qcow2", "/images/base.qcow2", None, "backing file's format"),
        ("qcow2", "/images/base.qcow2", "vmdk", "backing file's format"),
        ("qcow2", "base.qcow2", "qcow2", "absolute path"),
        ("qcow2", None, "qcow2", "absolute path"),
        ("qcow2", "/images/a\x00b", "qcow2", "absolute path"),
    ],
)
def test_backing_file_needs_qcow2_absolute_path_and_format(fmt, path, backing_format, message):
    with pytest.raises(ValueError, match=message):
        build_volume_xml("c.qcow2", GIB, fmt, backing_path=path, backing_format=backing_format)
