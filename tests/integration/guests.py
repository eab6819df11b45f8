"""Tiny guests for tests on the real libvirtd: diskless domains built with lxml."""

from __future__ import annotations

import uuid

import libvirt
from lxml import etree

from hosts.kvm import kvm_usable as host_kvm_usable

PREFIX = "paddocktest-"


def kvm_usable(conn: libvirt.virConnect) -> bool:
    """KVM that QEMU's user can open, not just root (the product asks the same question)."""
    if not host_kvm_usable():
        return False
    caps = etree.fromstring(conn.getCapabilities().encode())
    return bool(caps.xpath("//guest/arch[@name='x86_64']/domain[@type='kvm']"))


def diskless_domain_xml(name: str, virt_type: str, memory_mib: int = 64) -> str:
    dom = etree.Element("domain", type=virt_type)
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "uuid").text = str(uuid.uuid4())
    etree.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    etree.SubElement(os_el, "boot", dev="network")
    devices = etree.SubElement(dom, "devices")
    etree.SubElement(devices, "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1")
    etree.SubElement(devices, "memballoon", model="none")
    return etree.tostring(dom).decode()


def define(conn: libvirt.virConnect, name: str, *, start: bool = False) -> libvirt.virDomain:
    """Define (and start) a diskless guest: KVM where it works, TCG otherwise."""
    virt = "kvm" if kvm_usable(conn) else "qemu"
    dom = conn.defineXML(diskless_domain_xml(name, virt))
    if start:
        try:
            dom.create()
        except libvirt.libvirtError:
            if virt != "kvm":
                raise
            dom.undefine()
            dom = conn.defineXML(diskless_domain_xml(name, "qemu"))
            dom.create()
    return dom


def cleanup(conn: libvirt.virConnect, prefix: str = PREFIX) -> None:
    for dom in conn.listAllDomains():
        if dom.name().startswith(prefix):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
