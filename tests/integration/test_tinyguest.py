"""The tiny guest on the real libvirtd: it boots under TCG, powers off on an ACPI shutdown request
and lets a hot-plugged disk go again, as the tests of power and device actions need."""

from __future__ import annotations

import time

import libvirt
import pytest

from tests.integration import tinyguest

pytestmark = pytest.mark.integration

# The fixtures live in the helper module; naming them here registers them for this module.
tiny_guest_files = tinyguest.tiny_guest_files
make_tiny_guest = tinyguest.make_tiny_guest

SHUTDOWN_TIMEOUT = 30.0
HOTPLUG_TIMEOUT = 20.0


def test_acpi_shutdown_powers_the_tiny_guest_off(make_tiny_guest, record_property):
    guest = make_tiny_guest("acpi")
    boot = guest.start()
    record_property("boot_to_marker_s", round(boot, 2))
    assert guest.dom.isActive()

    started = time.monotonic()
    guest.dom.shutdown()  # the ACPI power button, as `virsh shutdown` presses it
    assert tinyguest.wait_until(lambda: tinyguest.is_shut_off(guest.dom), SHUTDOWN_TIMEOUT), (
        f"still {guest.dom.state()} {SHUTDOWN_TIMEOUT:.0f}s after shutdown(); "
        f"console:\n{guest.tail()}"
    )
    record_property("shutdown_s", round(time.monotonic() - started, 2))

    # The guest powered itself off (not destroyed, not crashed), because of the button.
    state, reason = guest.dom.state()
    assert (state, reason) == (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN)
    assert tinyguest.POWEROFF_MARKER in guest.console()


def test_hot_plugged_disk_can_be_unplugged_from_the_tiny_guest(make_tiny_guest, record_property):
    guest = make_tiny_guest("hotplug")
    record_property("boot_to_marker_s", round(guest.start(), 2))
    disk = tinyguest.create_raw_disk(tinyguest.image_dir() / f"{guest.name}-vdb.raw", 16)
    xml = tinyguest.disk_xml(disk, target="vdb")
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE

    guest.dom.attachDeviceFlags(xml, live)
    assert "vdb" in tinyguest.disk_targets(guest.dom)
    seen = guest.wait_for("PADDOCK-TINY-GUEST add block vda", HOTPLUG_TIMEOUT)
    assert seen is not None, f"the guest never saw the disk; console:\n{guest.tail()}"
    record_property("attach_seen_by_guest_s", round(seen, 2))

    started = time.monotonic()
    guest.dom.detachDeviceFlags(xml, live)
    assert tinyguest.wait_until(
        lambda: "vdb" not in tinyguest.disk_targets(guest.dom), HOTPLUG_TIMEOUT
    ), f"vdb still in the live XML {HOTPLUG_TIMEOUT:.0f}s after detach; console:\n{guest.tail()}"
    record_property("detach_s", round(time.monotonic() - started, 2))
    assert guest.wait_for("PADDOCK-TINY-GUEST remove block vda", 5) is not None, guest.tail()
    # Only the disk went away: the guest is still up, and the definition never had the disk.
    assert guest.dom.isActive()
    assert "vdb" not in tinyguest.disk_targets(guest.dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
