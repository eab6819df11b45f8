"""tuning.drift.compare: the applied plan's domain part against a domain XML made from it with
vms.domxml.tuned_xml, then changed the way a host-side edit (virsh vcpupin, numatune,
blkdeviotune) would change it."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from tuning.compiler import compile
from tuning.drift import compare
from tuning.knobs import DEFAULTS, clean
from tuning.topology import CpuInfo, HostTopology, LedgerView, NodeInfo, VmFacts
from vms.domxml import tuned_xml

BASE_XML = """<domain type='kvm'>
  <name>guest</name>
  <uuid>0b0c9d2e-1f3a-4b5c-8d6e-7f8091a2b3c4</uuid>
  <memory unit='KiB'>2097152</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/guest.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:cc'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>"""

DOMAIN = {
    "vcpupin": {"0": "2", "1": "3"},
    "emulatorpin": "0-1",
    "iothreads": 1,
    "iothreadpin": {"1": "0-1"},
    "shares": 2048,
    "period": None,
    "quota": None,
    "cpu": {"mode": "host-passthrough", "model": "", "topology": None, "numa_cells": []},
    "numatune": {"mode": "strict", "nodeset": "0", "memnodes": []},
    "memory_backing": {"pages": [{"size_kib": 2048, "nodeset": ""}], "locked": True,
                       "nosharepages": False},
    "memtune": {"hard_limit_mib": None, "soft_limit_mib": None},
    "balloon": {"enabled": False, "period": 0, "autodeflate": False},
    "disks": {"vda": {"cache": "none", "io": "native", "discard": "unmap", "queues": None,
                      "iothread": 1, "iotune": {"total_iops_sec": 500, "read_bytes_sec": 0}}},
    "nics": {"52:54:00:aa:bb:cc": {"queues": 2, "rx_queue_size": 512, "tx_queue_size": None}},
}  # fmt: skip


def tuned() -> str:
    return tuned_xml(BASE_XML, DOMAIN)


def edit(xml: str, change) -> str:
    root = etree.fromstring(xml.encode())
    change(root)
    return etree.tostring(root, encoding="unicode")


def _set(path: str, **attrs):
    def change(root):
        for key, value in attrs.items():
            root.find(path).set(key, value)

    return change


def _remove(path: str):
    def change(root):
        el = root.find(path)
        el.getparent().remove(el)

    return change


def _text(path: str, value: str):
    def change(root):
        root.find(path).text = value

    return change


def _add_pin(root):
    etree.SubElement(root.find("cputune"), "vcpupin", vcpu="2", cpuset="7")


def test_the_xml_made_from_the_plan_has_no_drift():
    assert compare(DOMAIN, tuned()) == []


def test_a_compiled_plan_and_its_tuned_definition_have_no_drift():
    node = NodeInfo(id=0, cpus=[CpuInfo(i, i, 0, (i,)) for i in range(4)], memory_mib=8192)
    host = HostTopology(host_id=1, name="kvm1", nodes=[node], housekeeping=frozenset({0}))
    knobs = copy.deepcopy(DEFAULTS)
    knobs["cpu"].update(placement="dedicated", emulator="isolate")
    knobs["numa"]["mode"] = "strict"
    knobs["memory"].update(hugepages="2M", balloon={"enabled": False, "period": 0,
                                                    "autodeflate": False})  # fmt: skip
    knobs["disk"]["throttle"]["total_bytes_sec"] = 10**8
    facts = VmFacts(vm_id=1, name="guest", vcpus=2, memory_mib=2048,
                    disks=[{"target": "vda", "bus": "virtio", "device": "disk"}])  # fmt: skip
    plan = compile(clean(knobs), facts, host, LedgerView(), current_xml=BASE_XML)
    assert plan.domain["vcpupin"] == {"0": "1", "1": "2"}
    assert compare(plan.domain, plan.xml_after) == []
    # the untuned definition drifts from it in every compared part
    whats = {d["what"] for d in compare(plan.domain, BASE_XML)}
    assert whats == {"vcpupin 0", "vcpupin 1", "emulatorpin", "blkdeviotune vda",
                     "numatune mode", "numatune nodeset", "hugepages"}  # fmt: skip


def test_an_equal_cpuset_written_differently_is_no_drift():
    xml = edit(tuned(), _set("cputune/emulatorpin", cpuset="1,0"))
    xml = edit(xml, _set("cputune/vcpupin[@vcpu='0']", cpuset="2-2"))
    assert compare(DOMAIN, xml) == []


@pytest.mark.parametrize(
    ("change", "drift"),
    [
        pytest.param(_set("cputune/vcpupin[@vcpu='1']", cpuset="5"),
                     [{"what": "vcpupin 1", "expected": "3", "actual": "5"}], id="vcpupin"),
        pytest.param(_remove("cputune/vcpupin[@vcpu='0']"),
                     [{"what": "vcpupin 0", "expected": "2", "actual": ""}], id="vcpupin-gone"),
        pytest.param(_add_pin, [{"what": "vcpupin 2", "expected": "", "actual": "7"}],
                     id="vcpupin-extra"),
        pytest.param(_set("cputune/emulatorpin", cpuset="0-3"),
                     [{"what": "emulatorpin", "expected": "0-1", "actual": "0-3"}],
                     id="emulatorpin"),
        pytest.param(_remove("cputune/emulatorpin"),
                     [{"what": "emulatorpin", "expected": "0-1", "actual": ""}],
                     id="emulatorpin-gone"),
        pytest.param(_set("cputune/iothreadpin", cpuset="3"),
                     [{"what": "iothreadpin 1", "expected": "0-1", "actual": "3"}],
                     id="iothreadpin"),
        pytest.param(_text("cputune/shares", "1024"),
                     [{"what": "cputune shares", "expected": 2048, "actual": 1024}], id="shares"),
        pytest.param(_set("numatune/memory", mode="preferred"),
                     [{"what": "numatune mode", "expected": "strict", "actual": "preferred"}],
                     id="numatune-mode"),
        pytest.param(_set("numatune/memory", nodeset="1"),
                     [{"what": "numatune nodeset", "expected": "0", "actual": "1"}],
                     id="numatune-nodeset"),
        pytest.param(_remove("numatune"),
                     [{"what": "numatune mode", "expected": "strict", "actual": ""},
                      {"what": "numatune nodeset", "expected": "0", "actual": ""}],
                     id="numatune-gone"),
        pytest.param(_remove("memoryBacking/hugepages"),
                     [{"what": "hugepages", "expected": [2048], "actual": []}], id="hugepages"),
        pytest.param(_text("devices/disk/iotune/total_iops_sec", "100"),
                     [{"what": "blkdeviotune vda", "expected": {"total_iops_sec": 500},
                       "actual": {"total_iops_sec": 100}}], id="iotune"),
        pytest.param(_remove("devices/disk/iotune"),
                     [{"what": "blkdeviotune vda", "expected": {"total_iops_sec": 500},
                       "actual": {}}], id="iotune-gone"),
    ],
)  # fmt: skip
def test_a_changed_part_is_reported(change, drift):
    assert compare(DOMAIN, edit(tuned(), change)) == drift


def test_an_added_iotune_limit_is_reported():
    def add(root):
        etree.SubElement(root.find("devices/disk/iotune"), "read_bytes_sec").text = "4096"

    (found,) = compare(DOMAIN, edit(tuned(), add))
    assert found == {"what": "blkdeviotune vda", "expected": {"total_iops_sec": 500},
                     "actual": {"total_iops_sec": 500, "read_bytes_sec": 4096}}  # fmt: skip


def test_several_changes_are_all_reported_in_order():
    xml = edit(tuned(), _set("cputune/vcpupin[@vcpu='0']", cpuset="6"))
    xml = edit(xml, _set("cputune/emulatorpin", cpuset="7"))
    xml = edit(xml, _set("numatune/memory", nodeset="1"))
    assert [d["what"] for d in compare(DOMAIN, xml)] == [
        "vcpupin 0",
        "emulatorpin",
        "numatune nodeset",
    ]


def test_numatune_and_hugepages_are_not_drift_while_a_restart_is_pending():
    xml = edit(tuned(), _remove("numatune"))
    xml = edit(xml, _remove("memoryBacking"))
    assert compare(DOMAIN, xml, restart_pending=True) == []
    assert {d["what"] for d in compare(DOMAIN, xml)} == {
        "numatune mode",
        "numatune nodeset",
        "hugepages",
    }


def test_pins_are_drift_even_while_a_restart_is_pending():
    xml = edit(tuned(), _set("cputune/vcpupin[@vcpu='1']", cpuset="0"))
    assert compare(DOMAIN, xml, restart_pending=True) == [
        {"what": "vcpupin 1", "expected": "3", "actual": "0"}
    ]


def test_unpinned_plan_against_unpinned_xml_is_no_drift():
    domain = {**DOMAIN, "vcpupin": {}, "emulatorpin": "", "iothreadpin": {}, "shares": None,
              "numatune": None, "memory_backing": None, "disks": {}}  # fmt: skip
    assert compare(domain, tuned_xml(BASE_XML, domain)) == []
    assert compare(domain, BASE_XML) == []


@pytest.mark.parametrize(("domain", "xml"), [({}, BASE_XML), (DOMAIN, "")])
def test_nothing_to_compare_is_no_drift(domain, xml):
    assert compare(domain, xml) == []
