"""Host sync against libvirt's test driver: a fresh node file per test."""

from __future__ import annotations

import libvirt
import pytest
from django.core.exceptions import ValidationError
from lxml import etree

from hosts import services
from hosts.choices import HostStatus
from hosts.driver.connection import get_connection
from hosts.models import Host, Network, StoragePool, Volume
from panel.choices import TaskState
from panel.models import Task, Tenant
from tests.conftest import run_queued_tasks
from vms.models import Disk, Nic, VirtualMachine

pytestmark = pytest.mark.django_db

LIBVIRT_TO_PADDOCK = {1: "running", 3: "paused", 5: "shutoff", 6: "crashed", 7: "pmsuspended"}


def test_sync_imports_every_domain_with_its_libvirt_state(synced_host):
    conn = get_connection(synced_host)
    truth = {d.UUIDString(): LIBVIRT_TO_PADDOCK[d.state()[0]] for d in conn.listAllDomains()}
    rows = {str(vm.uuid): vm.state for vm in VirtualMachine.objects.filter(host=synced_host)}
    assert rows == truth
    assert len(rows) == 36
    assert {"running", "paused", "shutoff", "crashed", "pmsuspended"} <= set(rows.values())


def test_sync_reads_domain_definition(synced_host):
    conn = get_connection(synced_host)
    dom = conn.listAllDomains()[0]
    root = etree.fromstring(dom.XMLDesc(0).encode())
    vm = VirtualMachine.objects.get(uuid=dom.UUIDString())
    assert vm.name == dom.name()
    assert vm.vcpus == int(root.findtext("vcpu"))
    assert vm.max_memory_mib * 1024 == int(root.findtext("memory"))
    targets = sorted(d.get("dev") for d in root.findall("devices/disk/target"))
    assert sorted(vm.disks.values_list("target", flat=True)) == targets
    macs = sorted(m.get("address") for m in root.findall("devices/interface/mac"))
    assert sorted(vm.nics.values_list("mac", flat=True)) == macs


def test_imported_vms_belong_to_default_tenant(synced_host):
    default = Tenant.objects.get(name="default")
    assert VirtualMachine.objects.filter(host=synced_host).exclude(tenant=default).count() == 0


def test_sync_imports_pools_volumes_and_networks(synced_host):
    conn = get_connection(synced_host)
    pools = {p.name(): p for p in conn.listAllStoragePools()}
    assert set(StoragePool.objects.filter(host=synced_host).values_list("name", flat=True)) == set(
        pools
    )
    for name, pool in pools.items():
        paths = {v.path() for v in pool.listAllVolumes()}
        assert set(Volume.objects.filter(pool__name=name).values_list("path", flat=True)) == paths
    assert StoragePool.objects.get(host=synced_host, name="vg0").pool_type == "logical"
    assert {v.format for v in Volume.objects.filter(pool__name="default")} >= {"qcow2", "raw"}
    nets = {n.name() for n in conn.listAllNetworks()}
    assert set(Network.objects.filter(host=synced_host).values_list("name", flat=True)) == nets
    lan = Network.objects.get(host=synced_host, name="lan")
    assert lan.forward_mode == "bridge" and lan.bridge == "br0"
    isolated = Network.objects.get(host=synced_host, name="isolated")
    assert isolated.forward_mode == "isolated" and isolated.ip_prefix == 24


def test_disks_link_to_volumes_and_nics_to_networks(synced_host):
    file_disks = Disk.objects.filter(vm__host=synced_host, device="disk")
    assert file_disks.exists()
    assert not file_disks.filter(volume__isnull=True).exists()
    for disk in file_disks.select_related("volume"):
        assert disk.volume.path == disk.source
    network_nics = Nic.objects.filter(vm__host=synced_host, source_type="network")
    assert network_nics.exists()
    assert not network_nics.filter(network__isnull=True).exists()


def test_simulated_host_takes_topology_from_fixture(synced_host):
    assert synced_host.simulated is True
    assert synced_host.status == HostStatus.ONLINE
    assert len(synced_host.numa_cells) == 2
    assert synced_host.cpus == 32 and synced_host.sockets == 2
    assert synced_host.cores == 8 and synced_host.threads == 2
    cell0 = synced_host.numa_cells[0]
    assert len(cell0["cpus"]) == 16
    assert {p["size_kib"] for p in cell0["hugepages"]} == {2048, 1048576}
    assert synced_host.virt_types == ["test"]


def test_resync_is_idempotent(synced_host, admin_user):
    before = {
        "vms": VirtualMachine.objects.count(),
        "disks": Disk.objects.count(),
        "nics": Nic.objects.count(),
        "pools": StoragePool.objects.count(),
        "volumes": Volume.objects.count(),
        "networks": Network.objects.count(),
    }
    disk_ids = set(Disk.objects.values_list("pk", flat=True))
    task = services.host_sync(user=admin_user, host=synced_host)
    run_queued_tasks()
    task.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED
    assert task.result["created"] == 0 and task.result["gone"] == 0
    after = {
        "vms": VirtualMachine.objects.count(),
        "disks": Disk.objects.count(),
        "nics": Nic.objects.count(),
        "pools": StoragePool.objects.count(),
        "volumes": Volume.objects.count(),
        "networks": Network.objects.count(),
    }
    assert after == before
    # Unchanged devices are not rewritten.
    assert set(Disk.objects.values_list("pk", flat=True)) == disk_ids


def test_vanished_domain_is_marked_gone_and_revived_when_back(synced_host, admin_user):
    conn = get_connection(synced_host)
    dom = next(d for d in conn.listAllDomains() if not d.isActive())
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    dom.undefine()
    services.host_sync(user=admin_user, host=synced_host)
    run_queued_tasks()
    vm = VirtualMachine.objects.get(uuid=dom.UUIDString())
    assert vm.gone is True and vm.gone_at is not None
    assert vm.disks.exists(), "history is kept"

    conn.defineXML(xml)
    services.host_sync(user=admin_user, host=synced_host)
    run_queued_tasks()
    vm.refresh_from_db()
    assert vm.gone is False and vm.state == "shutoff"
    assert VirtualMachine.objects.filter(uuid=dom.UUIDString()).count() == 1


def test_state_changed_on_host_becomes_observed_and_desired(synced_host, admin_user):
    conn = get_connection(synced_host)
    dom = next(d for d in conn.listAllDomains() if d.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF)
    dom.create()
    services.host_sync(user=admin_user, host=synced_host)
    run_queued_tasks()
    vm = VirtualMachine.objects.get(uuid=dom.UUIDString())
    assert vm.state == "running"
    assert vm.desired_state == "running"


def test_moved_vm_keeps_its_tenant_across_resync(synced_host, admin_user, tenant):
    vm = VirtualMachine.objects.filter(host=synced_host).first()
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=tenant)
    services.host_sync(user=admin_user, host=synced_host)
    run_queued_tasks()
    vm.refresh_from_db()
    assert vm.tenant == tenant


def test_unreachable_host_ends_in_error_with_libvirts_message(admin_user, tmp_path):
    with pytest.raises(ValidationError, match=r"missing\.xml"):  # tried first, refused
        services.host_create(user=admin_user, name="ghost", uri=f"test://{tmp_path}/missing.xml")
    host, task = services.host_create(
        user=admin_user, name="ghost", uri=f"test://{tmp_path}/missing.xml", offline=True
    )
    run_queued_tasks()
    host.refresh_from_db()
    task.refresh_from_db()
    assert task.state == TaskState.FAILED
    assert "missing.xml" in task.error
    assert host.status == HostStatus.ERROR
    assert "missing.xml" in host.last_error
    assert host.lock_id is None


def test_forgetting_a_host_removes_inventory_but_never_touches_the_host(synced_host, admin_user):
    node_file = synced_host.uri.removeprefix("test://")
    node_before = open(node_file, "rb").read()
    before = len(get_connection(synced_host).listAllDomains())
    task_ids = list(Task.objects.filter(host=synced_host).values_list("pk", flat=True))
    services.host_delete(user=admin_user, host=synced_host)
    assert not Host.objects.filter(pk=synced_host.pk).exists()
    assert not VirtualMachine.objects.filter(host_id=synced_host.pk).exists()
    assert Task.objects.filter(pk__in=task_ids).count() == len(task_ids), "task history stays"
    assert open(node_file, "rb").read() == node_before
    conn = libvirt.open(synced_host.uri)
    try:
        assert len(conn.listAllDomains()) == before
    finally:
        conn.close()


def test_large_node_sync_uses_bulk_queries(admin_user, make_node, django_assert_max_num_queries):
    uri = make_node(domains=300)
    host, _ = services.host_create(user=admin_user, name="big", uri=uri)
    from hosts.sync import sync_host

    # 81: on SQLite (999 variables a statement) the VM rows' live columns make the 300
    # inserts one batch longer; PostgreSQL inserts them in one.
    with django_assert_max_num_queries(81):
        summary = sync_host(host)
    assert summary["domains"] == 300
    assert VirtualMachine.objects.filter(host=host).count() == 300


def test_sync_never_overwrites_a_row_refreshed_after_libvirt_was_read(synced_host, monkeypatch):
    """A reconcile that read libvirt before a task refreshed a VM must not write stale state."""
    from django.utils import timezone

    from vms import sync as vm_sync

    vm = VirtualMachine.objects.filter(host=synced_host, state="shutoff").first()
    real_read = vm_sync.read_domains

    def read_then_task_refreshes(conn):
        stale = real_read(conn)  # libvirt says shutoff ...
        # ... then a task starts the VM and refreshes its row before this sync writes.
        VirtualMachine.objects.filter(pk=vm.pk).update(
            state="running", desired_state="running", synced_at=timezone.now()
        )
        return stale

    monkeypatch.setattr(vm_sync, "read_domains", read_then_task_refreshes)
    vm_sync.sync_domains(synced_host, get_connection(synced_host))
    vm.refresh_from_db()
    assert vm.state == "running" and vm.desired_state == "running"


def test_pool_removed_while_listing_does_not_fail_the_sync(synced_host, monkeypatch):
    from hosts.sync import sync_pools

    conn = get_connection(synced_host)
    pools = conn.listAllStoragePools(0)
    doomed = next(p for p in pools if p.name() == "isos")
    doomed.destroy()
    doomed.undefine()
    monkeypatch.setattr(conn, "listAllStoragePools", lambda flags=0: pools)
    counts = sync_pools(synced_host, conn)
    assert counts["pools"] == len(pools) - 1
    assert StoragePool.objects.get(host=synced_host, name="isos").gone is True
