"""Memory in any whole MiB on the real libvirtd + QEMU: what Paddock asks is what runs.

QEMU sizes guest RAM in KiB and libvirt rounds a running x86 guest's memory up to whole MiB
(a definition of 1000001 KiB runs with 1000448 KiB); Paddock takes whole MiB, so there is
nothing to round and 1000 MiB is 1000 MiB, not the next multiple of 64.
"""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from panel.models import Task
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _kib(root, tag: str) -> int:
    el = root.find(tag)
    assert el.get("unit", "KiB") == "KiB", etree.tostring(el)
    return int(el.text)


# Maximum = memory: a guest without a balloon driver runs with its maximum as current memory,
# which the inventory then reads back (observed state), whatever its granularity.
@pytest.mark.parametrize("mib, max_mib", [(1000, 1000), (1001, 1001), (65, 65)])
def test_an_odd_mib_memory_is_defined_and_runs_as_asked(api, lab, mib, max_mib):
    conn, prefix = lab["conn"], lab["prefix"]
    name = f"{prefix}mem{mib}"
    client = api.as_user(lab["admin"])
    response = client.post(
        "/api/vms/",
        {
            "name": name,
            "tenant": lab["tenant"].pk,
            "host": lab["host"].pk,
            "vcpus": 1,
            "memory_mib": mib,
            "max_memory_mib": max_mib,
            "disks": [],
            "nics": [],
            "start": True,
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    run_queued_tasks()
    task = Task.objects.get(pk=response.json()["task"]["id"])
    assert task.state == "succeeded", task.error
    dom = conn.lookupByName(name)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    live = etree.fromstring(dom.XMLDesc(0))
    assert _kib(live, "memory") == max_mib * 1024
    assert _kib(live, "currentMemory") == mib * 1024
    assert dom.maxMemory() == max_mib * 1024
    definition = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert _kib(definition, "memory") == max_mib * 1024
    assert _kib(definition, "currentMemory") == mib * 1024
    vm = VirtualMachine.objects.get(name=name)
    assert (vm.memory_mib, vm.max_memory_mib) == (mib, max_mib)


def test_libvirt_rounds_a_sub_mib_memory_up_when_it_starts(lab):
    """Why Paddock asks in whole MiB: libvirt keeps KiB in the definition but runs the guest
    with its memory rounded up to the next MiB."""
    conn, prefix = lab["conn"], lab["prefix"]
    dom_el = etree.Element("domain", type="qemu")
    etree.SubElement(dom_el, "name").text = f"{prefix}kib"
    etree.SubElement(dom_el, "memory", unit="KiB").text = "1000001"
    etree.SubElement(dom_el, "currentMemory", unit="KiB").text = "1000001"
    etree.SubElement(dom_el, "vcpu").text = "1"
    os_el = etree.SubElement(dom_el, "os")
    etree.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    dom = conn.defineXML(etree.tostring(dom_el).decode())
    assert _kib(etree.fromstring(dom.XMLDesc(0)), "memory") == 1000001
    dom.create()
    try:
        assert _kib(etree.fromstring(dom.XMLDesc(0)), "memory") == 977 * 1024  # 1000448
    finally:
        dom.destroy()
