"""A lab on the real libvirtd: qemu:///system added as a Paddock host, with a private dir pool
and a bridged network on a Linux bridge the fixture creates (and removes afterwards)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import libvirt
import pytest
from lxml import etree

from hosts import services as host_services
from hosts.models import Network, StoragePool
from panel.models import Tenant
from tests.conftest import run_queued_tasks

from .guests import PREFIX, cleanup


def _pool_xml(name: str, path: str) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = path
    return etree.tostring(pool).decode()


def _net_xml(name: str, bridge: str) -> str:
    net = etree.Element("network")
    etree.SubElement(net, "name").text = name
    etree.SubElement(net, "forward", mode="bridge")
    etree.SubElement(net, "bridge", name=bridge)
    return etree.tostring(net).decode()


@pytest.fixture
def lab(admin_user):
    """qemu:///system with a private dir pool and a bridged network on a Linux bridge."""
    conn = libvirt.open("qemu:///system")
    tag = uuid.uuid4().hex[:6]
    prefix = f"{PREFIX}{tag}-"
    path = f"/var/lib/libvirt/images/{prefix}pool"
    os.makedirs(path, mode=0o755)
    pool = conn.storagePoolDefineXML(_pool_xml(f"{prefix}pool", path), 0)
    pool.create(0)
    bridge = f"pdk{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    net = conn.networkDefineXML(_net_xml(f"{prefix}net", bridge))
    net.create()
    host, _ = host_services.host_create(user=admin_user, name="local", uri="qemu:///system")
    run_queued_tasks()
    host.refresh_from_db()
    assert host.status == "online", host.last_error
    yield {
        "conn": conn,
        "prefix": prefix,
        "host": host,
        "pool": StoragePool.objects.get(host=host, name=f"{prefix}pool"),
        "net": Network.objects.get(host=host, name=f"{prefix}net"),
        "tenant": Tenant.objects.create(name=f"t{tag}"),
        "admin": admin_user,
    }
    cleanup(conn, prefix)
    for vol in pool.listAllVolumes():
        vol.delete(0)
    pool.destroy()
    pool.undefine()
    shutil.rmtree(path, ignore_errors=True)
    if net.isActive():
        net.destroy()
    net.undefine()
    subprocess.run(["ip", "link", "del", bridge], check=False)
    conn.close()
