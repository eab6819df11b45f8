"""The Guest wrapper on libvirt's test driver: Paddock words in, libvirt calls out."""

from __future__ import annotations

import uuid as uuidlib

import libvirt
import pytest

from hosts.driver.guest import Guest, GuestError, volume_exists


def _xml(name: str, uuid: str) -> str:
    return f"""<domain type='test'>
  <name>{name}</name><uuid>{uuid}</uuid>
  <memory unit='MiB'>256</memory><currentMemory unit='MiB'>128</currentMemory>
  <vcpu current='1'>2</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><source file='/tmp/paddock-guest-a.img'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/tmp/paddock-guest-b.img'/>
      <target dev='vdb' bus='virtio'/></disk>
    <interface type='network'><mac address='52:54:00:AA:00:01'/>
      <source network='default'/></interface>
  </devices>
</domain>"""


@pytest.fixture
def guest():
    conn = libvirt.open("test:///default")
    uuid = str(uuidlib.uuid4())
    g = Guest.define(conn, _xml(f"guest-{uuid[:8]}", uuid))
    yield g
    if Guest.lookup(conn, uuid) is not None:
        g.undefine()
    conn.close()


def test_lookup_and_identity(guest):
    conn = guest.domain.connect()
    assert Guest.lookup(conn, guest.uuid).name == guest.name
    assert Guest.lookup(conn, str(uuidlib.uuid4())) is None
    assert Guest.lookup_by_name(conn, "no-such-guest") is None
    with pytest.raises(GuestError):
        Guest.get(conn, str(uuidlib.uuid4()))
    assert guest.state == "shutoff" and not guest.is_active
    assert "<name>" in guest.xml() and "<name>" in guest.xml(inactive=True)


def test_power_cycle_in_paddock_words(guest):
    guest.start()
    assert guest.wait_for_state({"running"}, timeout=2)
    guest.pause()
    assert guest.state == "paused"
    guest.resume()
    assert guest.state == "running"
    guest.reboot()
    guest.reset()
    guest.destroy()
    assert guest.state == "shutoff"
    assert not guest.wait_for_state({"running"}, timeout=0.3, interval=0.1)


def test_devices_are_found_by_parsed_xml_not_substring(guest):
    assert guest.has_device("disk", "vda") and guest.has_device("disk", "vdb")
    assert not guest.has_device("disk", "vd")  # a substring of "vda" is no device
    assert guest.has_device("interface", "52:54:00:aa:00:01")  # MACs compare lower case
    xml = guest.device_xml("disk", "vdb")
    assert "paddock-guest-b" in xml
    assert not guest.wait_device_gone("disk", "vdb", timeout=0.3, interval=0.1)
    # The test driver cannot detach; a redefinition without the disk removes it as well.
    conn = guest.domain.connect()
    without = _xml(guest.name, guest.uuid)
    start = without.index("<disk", without.index("vda"))
    Guest.define(conn, without[:start] + without[without.index("</disk>", start) + 7 :])
    assert guest.wait_device_gone("disk", "vdb", timeout=1)
    assert guest.has_device("disk", "vda", inactive=True)
    assert guest.device_xml("disk", "vdb") is None


def test_vcpus_memory_autostart_and_snapshots(guest):
    guest.set_vcpus(2, config=True)
    assert guest.vcpus(config=True) == 2
    assert guest.vcpus(config=True, maximum=True) == 2
    guest.set_memory(192 * 1024, config=True)
    assert guest.max_memory_kib == 256 * 1024
    guest.set_autostart(True)
    guest.snapshot_create("one", "first")
    assert guest.snapshot_names() == ["one"]
    guest.snapshot_revert("one")
    guest.snapshot_delete("one")
    assert guest.snapshot_names() == []


def test_undefine_falls_back_where_the_driver_has_no_nvram(guest):
    conn = guest.domain.connect()
    guest.snapshot_create("kept-with-it")
    guest.start()
    guest.undefine()
    assert Guest.lookup(conn, guest.uuid) is None


def test_migrate_is_a_documented_placeholder(guest):
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        guest.migrate(None)


def test_volume_exists():
    conn = libvirt.open("test:///default")
    pool = conn.listAllStoragePools()[0]
    name = pool.listVolumes()[0] if pool.listVolumes() else ""
    assert volume_exists(conn, pool.name(), name) == bool(name)
    assert not volume_exists(conn, pool.name(), "no-such-volume")
    assert not volume_exists(conn, "no-such-pool", "x")
    conn.close()
