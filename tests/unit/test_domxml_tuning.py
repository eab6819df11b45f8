"""parse_domain reads tuning (samples from libvirt's domain XML format documentation), and
build_domain is assembled from contributors that later parts can extend."""

from __future__ import annotations

from lxml import etree

from vms import domxml
from vms.domxml import CpuTune, HugePages, MemNode, MemoryBacking, NumaTune, parse_domain

_DOMAIN = """<domain type='kvm'>
  <name>tuned</name><uuid>8f6d3a5e-4b7c-4e0a-9f1e-2d3c4b5a6f70</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>4</vcpu>
  {body}
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
</domain>"""

# https://libvirt.org/formatdomain.html#cpu-tuning
CPUTUNE = """<cputune>
    <vcpupin vcpu="0" cpuset="1-4,^2"/>
    <vcpupin vcpu="1" cpuset="0,1"/>
    <vcpupin vcpu="2" cpuset="2,3"/>
    <vcpupin vcpu="3" cpuset="0,4"/>
    <emulatorpin cpuset="1-3"/>
    <iothreadpin iothread="1" cpuset="5,6"/>
    <iothreadpin iothread="2" cpuset="7,8"/>
    <shares>2048</shares>
    <period>1000000</period>
    <quota>-1</quota>
    <global_period>1000000</global_period>
    <global_quota>-1</global_quota>
    <emulator_period>1000000</emulator_period>
    <emulator_quota>-1</emulator_quota>
    <iothread_period>1000000</iothread_period>
    <iothread_quota>-1</iothread_quota>
    <vcpusched vcpus='0-4,^3' scheduler='fifo' priority='1'/>
    <iothreadsched iothreads='2' scheduler='batch'/>
    <cachetune vcpus='0-3'>
      <cache id='0' level='3' type='both' size='3' unit='MiB'/>
      <cache id='1' level='3' type='both' size='3' unit='MiB'/>
      <monitor level='3' vcpus='1'/>
      <monitor level='3' vcpus='0-3'/>
    </cachetune>
    <memorytune vcpus='0-3'>
      <node id='0' bandwidth='60'/>
    </memorytune>
  </cputune>"""

# https://libvirt.org/formatdomain.html#numa-node-tuning
NUMATUNE = """<numatune>
    <memory mode="strict" nodeset="1-4,^3"/>
    <memnode cellid="0" mode="strict" nodeset="1"/>
    <memnode cellid="2" mode="preferred" nodeset="2"/>
  </numatune>"""

# https://libvirt.org/formatdomain.html#memory-backing
MEMORY_BACKING = """<memoryBacking>
    <hugepages>
      <page size="1" unit="G" nodeset="0-3,5"/>
      <page size="2" unit="M" nodeset="4"/>
    </hugepages>
    <nosharepages/>
    <locked/>
    <source type="memfd"/>
    <access mode="shared"/>
    <allocation mode="immediate" threads='8'/>
    <discard/>
  </memoryBacking>"""


def _parse(body: str):
    return parse_domain(_DOMAIN.format(body=body))


def test_cputune_pins_shares_and_bandwidth():
    spec = _parse(CPUTUNE)
    assert spec.cputune == CpuTune(
        vcpupin={0: "1-4,^2", 1: "0,1", 2: "2,3", 3: "0,4"},
        emulatorpin="1-3",
        iothreadpin={1: "5,6", 2: "7,8"},
        shares=2048,
        period=1000000,
        quota=-1,
    )


def test_numatune_memory_and_memnodes():
    spec = _parse(NUMATUNE)
    assert spec.numatune == NumaTune(
        memory_mode="strict",
        memory_nodeset="1-4,^3",
        memnodes=[
            MemNode(cellid=0, mode="strict", nodeset="1"),
            MemNode(cellid=2, mode="preferred", nodeset="2"),
        ],
    )


def test_numatune_automatic_placement():
    spec = _parse('<numatune><memory mode="interleave" placement="auto"/></numatune>')
    assert spec.numatune == NumaTune(memory_mode="interleave", memory_placement="auto")


def test_memory_backing_hugepages_locked_nosharepages():
    spec = _parse(MEMORY_BACKING)
    assert spec.memory_backing == MemoryBacking(
        hugepages=True,
        pages=[
            HugePages(size_kib=1024 * 1024, nodeset="0-3,5"),
            HugePages(size_kib=2048, nodeset="4"),
        ],
        locked=True,
        nosharepages=True,
    )


def test_hugepages_without_page_sizes_and_default_unit():
    spec = _parse("<memoryBacking><hugepages/></memoryBacking>")
    assert spec.memory_backing == MemoryBacking(hugepages=True)
    spec = _parse("<memoryBacking><hugepages><page size='2048'/></hugepages></memoryBacking>")
    assert spec.memory_backing.pages == [HugePages(size_kib=2048)]


def test_all_three_together_and_absent():
    spec = _parse(CPUTUNE + NUMATUNE + MEMORY_BACKING)
    assert spec.cputune.shares == 2048
    assert spec.numatune.memory_mode == "strict"
    assert spec.memory_backing.locked
    plain = _parse("")
    assert plain.cputune is None and plain.numatune is None and plain.memory_backing is None


def test_malformed_values_are_skipped_not_fatal():
    spec = _parse(
        "<cputune><vcpupin vcpu='x' cpuset='1'/><vcpupin vcpu='1'/><shares>lots</shares>"
        "</cputune><numatune><memnode mode='strict'/></numatune>"
        "<memoryBacking><hugepages><page size='big'/></hugepages></memoryBacking>"
    )
    assert spec.cputune == CpuTune()
    assert spec.numatune == NumaTune()
    assert spec.memory_backing == MemoryBacking(hugepages=True)


# --- building from contributors ---------------------------------------------------------------


def _spec(**kwargs) -> domxml.DomainBuild:
    base = dict(name="vm", uuid="u", virt_type="kvm", vcpus=2, memory_mib=512)
    base.update(kwargs)
    return domxml.DomainBuild(**base)


def test_a_patch_is_applied_to_the_built_tree_and_parsed_back():
    def pin_first_vcpu(root, spec):
        tune = etree.Element("cputune")
        etree.SubElement(tune, "vcpupin", vcpu="0", cpuset="2")
        root.find("vcpu").addnext(tune)

    xml = domxml.build_domain(_spec(), patches=[pin_first_vcpu])
    assert parse_domain(xml).cputune == CpuTune(vcpupin={0: "2"})
    assert parse_domain(domxml.build_domain(_spec())).cputune is None


def test_a_registered_contributor_runs_on_every_build():
    def stamp(root, spec):
        root.find("description").text += " (stamped)"

    domxml.register_contributor(stamp)
    try:
        assert "(stamped)" in domxml.build_domain(_spec(description="d"))
        domxml.register_contributor(stamp)  # registering twice adds it once
        assert domxml.CONTRIBUTORS.count(stamp) == 1
    finally:
        domxml.CONTRIBUTORS.remove(stamp)


def test_boot_order_and_cdrom_placement_are_decided_here():
    disk = domxml.DiskBuild(target="vda", path="/a")
    nic = domxml.NicBuild(mac="52:54:00:00:00:01", source="default")
    spec = _spec(disks=[disk], nics=[nic], boot=["cdrom", "disk", "network"], cdrom="")
    disks, nics = domxml.boot_devices(spec)
    assert [(d.target, d.bus, d.boot_order) for d in disks] == [
        ("vda", "virtio", 2),
        ("sda", "sata", 1),
    ]
    assert nics[0].boot_order == 3
    assert disk.boot_order is None  # the spec is not changed
    disks, _ = domxml.boot_devices(_spec(machine="pc", disks=[disk], cdrom="/x.iso"))
    assert [(d.target, d.bus, d.path, d.boot_order) for d in disks] == [
        ("vda", "virtio", "/a", 1),
        ("hdc", "ide", "/x.iso", None),
    ]
    assert domxml.boot_devices(_spec(disks=[disk]))[0][-1].device == "disk"  # no drive


def test_disk_source_follows_the_backend_kind():
    def source(kind, path):
        el = domxml.disk_element(domxml.DiskBuild(target="vda", path=path, source_type=kind))
        return el.get("type"), dict(el.find("source").attrib)

    assert source("file", "/p/a.qcow2") == ("file", {"file": "/p/a.qcow2"})
    assert source("block", "/dev/vg/a") == ("block", {"dev": "/dev/vg/a"})
    net = domxml.disk_element(
        domxml.DiskBuild(target="vda", path="rbd/a", source_type="network", protocol="rbd")
    )
    assert net.get("type") == "network"
    assert dict(net.find("source").attrib) == {"protocol": "rbd", "name": "rbd/a"}


def test_tuning_keeps_what_is_not_its_own_in_memory_backing_and_the_guest_cpu():
    """A virtiofs guest's shared memfd and a VM's own guest topology survive any policy."""
    xml = (
        "<domain type='kvm'><name>fs</name><memory unit='KiB'>1048576</memory><vcpu>2</vcpu>"
        "<memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>"
        "<cpu mode='host-model'><topology sockets='1' dies='1' cores='2' threads='1'/></cpu>"
        "<devices/></domain>"
    )
    balanced = {"memory_backing": None, "cpu": {"mode": "", "model": "", "topology": None,
                                                "numa_cells": []}}  # fmt: skip
    root = etree.fromstring(domxml.tuned_xml(xml, balanced).encode())
    assert root.find("memoryBacking/source").get("type") == "memfd"
    assert root.find("memoryBacking/access").get("mode") == "shared"
    assert root.find("cpu/topology").get("cores") == "2"

    huge = {"memory_backing": {"pages": [{"size_kib": 2048, "nodeset": "0"}], "locked": True,
                               "nosharepages": False}}  # fmt: skip
    root = etree.fromstring(domxml.tuned_xml(xml, huge).encode())
    backing = root.find("memoryBacking")
    assert [c.tag for c in backing] == ["hugepages", "locked", "source", "access"]
    assert backing.find("hugepages/page").get("size") == "2048"


def test_a_running_domain_is_known_by_its_id():
    assert domxml.domain_id("<domain type='kvm' id='17'><name>a</name></domain>") == "17"
    assert domxml.domain_id("<domain type='kvm'><name>a</name></domain>") is None


def test_a_scheduler_value_a_policy_drops_waits_for_a_restart():
    before = ("<domain type='kvm' id='3'><cputune><shares>2048</shares></cputune>"
              "<devices/></domain>")  # fmt: skip
    after = "<domain type='kvm'><devices/></domain>"
    live, restart = domxml.tuning_changes(before, after, {})
    assert not [op for op in live if op["op"] == "schedinfo"]
    assert "CPU shares returns to the host's default" in restart
