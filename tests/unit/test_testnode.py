"""hosts.testnode against libvirt's real test driver (no Django needed)."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from hosts.testnode import build_demo_fixture_xml, build_node_xml, write_node

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_FIXTURE = REPO_ROOT / "hosts" / "fixtures" / "demo-node.xml"
ALL_STATES = {
    libvirt.VIR_DOMAIN_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED,
}


@contextmanager
def connect(uri: str):
    conn = libvirt.open(uri)
    try:
        yield conn
    finally:
        conn.close()


def domain_trees(conn) -> list[etree._Element]:
    return [etree.fromstring(dom.XMLDesc()) for dom in conn.listAllDomains()]


def disk_paths(trees) -> list[str]:
    paths = []
    for tree in trees:
        for source in tree.iterfind("devices/disk/source"):
            paths.append(source.get("file") or source.get("dev"))
    return paths


def volume_paths(conn) -> dict[str, str]:
    """Volume path -> pool name, over every pool."""
    return {
        vol.path(): pool.name()
        for pool in conn.listAllStoragePools()
        for vol in pool.listAllVolumes()
    }


def test_default_node_has_36_domains_in_every_state(tmp_path):
    with connect(write_node(tmp_path / "node.xml")) as conn:
        domains = conn.listAllDomains()
        assert len(domains) == 36
        states = Counter(dom.state()[0] for dom in domains)
        assert set(states) == ALL_STATES
        # Roughly the intended mix: most running, a good share shut off.
        assert states[libvirt.VIR_DOMAIN_RUNNING] >= 15
        assert states[libvirt.VIR_DOMAIN_SHUTOFF] >= 8
        for dom in domains:
            assert dom.isActive() == (dom.state()[0] != libvirt.VIR_DOMAIN_SHUTOFF)


@pytest.mark.parametrize("count", [1, 5, 12])
def test_domain_count_is_the_requested_one(tmp_path, count):
    with connect(write_node(tmp_path / "node.xml", domains=count)) as conn:
        assert conn.numOfDomains() + conn.numOfDefinedDomains() == count
        assert len(conn.listAllDomains()) == count
        if count >= 5:
            assert {dom.state()[0] for dom in conn.listAllDomains()} == ALL_STATES


def test_host_cpu_and_memory(tmp_path):
    with connect(write_node(tmp_path / "node.xml", domains=1)) as conn:
        model, memory_mib, cpus, mhz, nodes, sockets, cores, threads = conn.getInfo()
        assert (model, memory_mib, cpus, mhz) == ("x86_64", 128 * 1024, 32, 2600)
        assert (nodes, sockets, cores, threads) == (2, 2, 8, 2)


def test_domains_look_like_real_guests(tmp_path):
    with connect(write_node(tmp_path / "node.xml")) as conn:
        trees = domain_trees(conn)
    for tree in trees:
        assert tree.get("type") == "test"
        assert tree.find("os/type").get("machine") == "pc-q35-7.2"
        assert 1 <= int(tree.findtext("vcpu")) <= 8
        memory_kib = int(tree.findtext("memory"))
        assert memory_kib // 1024 in {512, 1024, 2048, 4096, 8192, 16384}
        assert int(tree.findtext("currentMemory")) <= memory_kib
        assert 1 <= len(tree.findall("devices/disk[@device='disk']")) <= 3
        assert 1 <= len(tree.findall("devices/interface")) <= 2
        assert tree.find("devices/graphics[@type='vnc']").get("listen") == "127.0.0.1"
        assert tree.find("devices/serial") is not None
    firmware = Counter(tree.find("os").get("firmware") for tree in trees)
    assert 0 < firmware["efi"] < len(trees)
    assert 0 < sum(tree.find("cpu[@mode='host-model']") is not None for tree in trees) < len(trees)
    assert any(tree.findtext("description") for tree in trees)
    cdroms = [tree for tree in trees if tree.find("devices/disk[@device='cdrom']") is not None]
    assert len(cdroms) == len(trees) // 5 + (len(trees) % 5 > 0)
    for tree in cdroms:
        assert tree.find("devices/disk[@device='cdrom']/readonly") is not None
    iface_sources = Counter(
        iface.get("type") + ":" + (iface.find("source").get("network") or "")
        for tree in trees
        for iface in tree.iterfind("devices/interface")
    )
    assert {"network:lan", "network:isolated", "bridge:"} <= set(iface_sources)


def test_uuids_and_macs_are_unique(tmp_path):
    with connect(write_node(tmp_path / "node.xml", domains=300)) as conn:
        uuids = [dom.UUIDString() for dom in conn.listAllDomains()]
        names = [dom.name() for dom in conn.listAllDomains()]
        trees = domain_trees(conn)
    assert len(set(uuids)) == len(uuids) == 300
    assert len(set(names)) == len(names)
    macs = [mac.get("address") for tree in trees for mac in tree.iterfind("devices/interface/mac")]
    assert len(macs) > 300
    assert len(set(macs)) == len(macs)
    assert all(mac.startswith("52:54:00:") for mac in macs)


def test_every_disk_is_a_volume_of_some_pool(tmp_path):
    with connect(write_node(tmp_path / "node.xml")) as conn:
        referenced = disk_paths(domain_trees(conn))
        volumes = volume_paths(conn)
        pools = {pool.name(): pool for pool in conn.listAllStoragePools()}
        assert set(pools) == {"default", "isos", "vg0"}
        assert all(pool.isActive() for pool in pools.values())
        assert etree.fromstring(pools["vg0"].XMLDesc()).get("type") == "logical"
        for vol in pools["vg0"].listAllVolumes():
            assert etree.fromstring(vol.XMLDesc()).get("type") == "block"
        for vol in pools["default"].listAllVolumes():
            info = vol.info()  # type, capacity, allocation
            assert 10 * 1024**3 <= info[1] <= 200 * 1024**3
            assert info[2] <= info[1]
    missing = sorted(set(referenced) - set(volumes))
    assert not missing, f"disks without a volume: {missing[:5]}"
    # The default node exercises every kind of disk.
    assert any(volumes[p] == "vg0" for p in referenced)
    assert any(volumes[p] == "isos" for p in referenced)
    assert any(p.endswith(".raw") and volumes[p] == "default" for p in referenced)
    assert any(p.endswith(".qcow2") and volumes[p] == "default" for p in referenced)
    # Templates, the second ISO and the spare logical volume are left unused.
    unused = set(volumes) - set(referenced)
    assert {
        "/var/lib/libvirt/images/debian-12-base.qcow2",
        "/var/lib/libvirt/images/ubuntu-24.04-base.qcow2",
        "/var/lib/libvirt/images/rocky-9-base.raw",
        "/var/lib/libvirt/isos/alpine-3.20.iso",
    } <= unused
    assert any(volumes[p] == "vg0" for p in unused)


def test_networks(tmp_path):
    with connect(write_node(tmp_path / "node.xml", domains=1)) as conn:
        networks = {net.name(): net for net in conn.listAllNetworks()}
        assert set(networks) == {"lan", "isolated", "vlan100"}
        assert all(net.isActive() for net in networks.values())
        assert networks["lan"].bridgeName() == "br0"
        assert networks["vlan100"].bridgeName() == "br-vlan100"
        isolated = etree.fromstring(networks["isolated"].XMLDesc())
        assert isolated.find("forward") is None
        assert isolated.find("ip").get("address") == "10.90.0.1"
        assert len({net.UUIDString() for net in networks.values()}) == 3


def test_pools_and_networks_can_be_left_out(tmp_path):
    uri = write_node(tmp_path / "node.xml", domains=3, include_pools=False, include_networks=False)
    with connect(uri) as conn:
        assert len(conn.listAllDomains()) == 3
        assert conn.listAllStoragePools() == []
        assert conn.listAllNetworks() == []


def test_name_prefix(tmp_path):
    with connect(write_node(tmp_path / "node.xml", domains=8, name_prefix="lab1-")) as conn:
        names = [dom.name() for dom in conn.listAllDomains()]
        referenced = disk_paths(domain_trees(conn))
    assert len(names) == 8
    assert all(name.startswith("lab1-") for name in names)
    assert all("/lab1-" in path for path in referenced if "/isos/" not in path)


def test_write_node_returns_an_absolute_test_uri(tmp_path, monkeypatch):
    uri = write_node(tmp_path / "node.xml", domains=2)
    assert uri == "test://" + str((tmp_path / "node.xml").absolute())
    assert uri.startswith("test:///")
    monkeypatch.chdir(tmp_path)
    relative_uri = write_node("relative.xml", domains=2)
    assert relative_uri == "test://" + str(tmp_path.absolute() / "relative.xml")
    with connect(relative_uri) as conn:
        assert len(conn.listAllDomains()) == 2


def test_same_seed_same_xml_other_seed_differs():
    assert build_node_xml(seed=3) == build_node_xml(seed=3)
    assert build_node_xml() == build_node_xml(seed=7)
    assert build_node_xml(seed=3) != build_node_xml(seed=4)
    assert build_node_xml(domains=10) != build_node_xml(domains=11)


def test_output_is_pretty_printed_xml():
    xml = build_node_xml(domains=2)
    root = etree.fromstring(xml)
    assert root.tag == "node"
    assert "\n  <domain" in xml
    runstates = root.findall("domain/{http://libvirt.org/schemas/domain/test/1.0}runstate")
    assert [el.getparent()[-1] for el in runstates] == runstates  # last child of <domain>


def test_shipped_demo_fixture_matches_the_generator():
    shipped = DEMO_FIXTURE.read_text(encoding="utf-8")
    assert shipped == build_demo_fixture_xml(), "run scripts/gen_demo_node.py"
    tree = etree.parse(str(DEMO_FIXTURE))
    header = tree.getroot().getprevious()
    assert isinstance(header, etree._Comment)
    assert "scripts/gen_demo_node.py" in header.text
    assert etree.tostring(tree.getroot(), encoding="unicode") + "\n" == build_node_xml()


def test_shipped_demo_fixture_loads(tmp_path):
    with connect("test://" + str(DEMO_FIXTURE)) as conn:
        assert len(conn.listAllDomains()) == 36


def test_thousand_domains_load_quickly(tmp_path):
    uri = write_node(tmp_path / "node.xml", domains=1000)
    started = time.perf_counter()
    with connect(uri) as conn:
        domains = conn.listAllDomains()
        descriptions = [dom.XMLDesc() for dom in domains]
        volumes = volume_paths(conn)
    elapsed = time.perf_counter() - started
    assert len(domains) == len(descriptions) == 1000
    assert len(volumes) > 1000
    assert elapsed < 15, f"opening and describing 1000 domains took {elapsed:.1f}s"
