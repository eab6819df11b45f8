"""A tenant's disks are its own: no other tenant copies, backs onto, mounts or attaches them.

Two tenants share one pool (the usual set-up). Every attack below names a victim volume by id,
as a client can; each is refused with the same answer a missing volume gets, nothing is queued,
and the legitimate uses (own disks, published images) keep working.
"""

from __future__ import annotations

import pytest

from hosts import services as host_services
from hosts.models import Network, StoragePool, Volume
from panel.models import Task
from tests.conftest import run_queued_tasks
from vms import services
from vms.models import VirtualMachine
from vms.selectors import USE_ATTACH, USE_CDROM, USE_SOURCE, volumes_usable

pytestmark = pytest.mark.django_db


@pytest.fixture
def shared(synced_host, tenant, other_tenant, admin_user, make_member):
    """acme and globex granted the same host, pools and network; globex owns k8s-node-02."""
    pools = list(StoragePool.objects.filter(host=synced_host))
    net = Network.objects.get(host=synced_host, name="lan")
    for t in (tenant, other_tenant):
        t.allowed_hosts.add(synced_host)
        t.allowed_pools.add(*pools)
        t.allowed_networks.add(net)
    victim = VirtualMachine.objects.get(host=synced_host, name="k8s-node-02")
    services.vm_update(user=admin_user, vm=victim, tenant=other_tenant)
    own = VirtualMachine.objects.get(host=synced_host, name="ci-runner-01")
    services.vm_update(user=admin_user, vm=own, tenant=tenant)
    default = StoragePool.objects.get(host=synced_host, name="default")
    # A detached disk of globex's, and one of acme's: data that stays its tenant's.
    scratch_globex = Volume.objects.get(pool=default, name="debian-12-base.qcow2")
    scratch_globex.tenant = other_tenant
    scratch_globex.save()
    scratch_acme = Volume.objects.get(pool=default, name="ubuntu-24.04-base.qcow2")
    scratch_acme.tenant = tenant
    scratch_acme.save()
    image = Volume.objects.get(pool=default, name="rocky-9-base.raw")
    host_services.volume_publish(user=admin_user, volume=image, published=True)
    iso = Volume.objects.get(name="alpine-3.20.iso")
    host_services.volume_publish(user=admin_user, volume=iso, published=True)
    return {
        "host": synced_host,
        "pool": default,
        "net": net,
        "acme": tenant,
        "globex": other_tenant,
        "operator": make_member(tenant, "operator"),
        "globex_operator": make_member(other_tenant, "operator"),
        "admin": admin_user,
        "victim_disk": victim.disks.get(target="vda").volume,
        "own_vm": own,
        "own_disk": own.disks.get(target="vda").volume,
        "globex_detached": scratch_globex,
        "acme_detached": scratch_acme,
        "image": image,
        "iso": iso,
        "unpublished_iso": Volume.objects.get(name="debian-12.iso"),
    }


def _create(client, w, **over):
    body = {
        "name": "thief-01",
        "tenant": w["acme"].pk,
        "vcpus": 1,
        "memory_mib": 256,
        "nics": [{"network": w["net"].pk}],
    }
    body.update(over)
    return client.post("/api/vms/", body, format="json")


def _nothing_queued():
    assert not VirtualMachine.objects.filter(name="thief-01").exists()
    assert not Task.objects.filter(kind__in=["vm.create", "vm.cdrom", "vm.disk_attach"]).exists()


def test_victim_disk_is_owned_by_its_tenant(shared):
    assert shared["victim_disk"].tenant == shared["globex"]
    assert shared["own_disk"].tenant == shared["acme"]


@pytest.mark.parametrize("mode", ["full", "linked"])
def test_operator_cannot_clone_other_tenants_volume(api, shared, mode):
    client = api.as_user(shared["operator"])
    disks = [{"source_volume": shared["victim_disk"].pk, "clone": mode}]
    response = _create(client, shared, disks=disks)
    assert response.status_code == 400, response.content
    assert response.json()["disks[0]"] == ["Unknown source volume on this host."]
    _nothing_queued()


def test_operator_cannot_clone_other_tenants_detached_volume(api, shared):
    client = api.as_user(shared["operator"])
    disks = [{"source_volume": shared["globex_detached"].pk, "clone": "full"}]
    response = _create(client, shared, disks=disks)
    assert response.status_code == 400
    assert "disks[0]" in response.json()
    _nothing_queued()


def test_answer_for_other_tenants_volume_equals_answer_for_missing_one(api, shared):
    client = api.as_user(shared["operator"])
    foreign = _create(client, shared, disks=[{"source_volume": shared["victim_disk"].pk}])
    missing = _create(client, shared, disks=[{"source_volume": 10**9}])
    assert foreign.status_code == missing.status_code == 400
    assert foreign.json() == missing.json()
    assert shared["host"].name not in foreign.content.decode()


def test_operator_cannot_mount_other_tenants_disk_as_cdrom_at_create(api, shared):
    client = api.as_user(shared["operator"])
    response = _create(client, shared, cdrom=shared["victim_disk"].pk)
    assert response.status_code == 400
    assert "cdrom" in response.json()
    _nothing_queued()


def test_operator_cannot_mount_other_tenants_disk_as_cdrom(api, shared):
    client = api.as_user(shared["operator"])
    vm = shared["own_vm"]
    response = client.post(
        f"/api/vms/{vm.pk}/cdrom/", {"volume": shared["victim_disk"].pk}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["volume"] == ["Unknown ISO volume on this VM's host."]
    assert not Task.objects.filter(kind="vm.cdrom").exists()


def test_cdrom_takes_iso_images_only_even_for_admins(api, shared):
    client = api.as_user(shared["admin"])
    vm = shared["own_vm"]
    response = client.post(
        f"/api/vms/{vm.pk}/cdrom/", {"volume": shared["image"].pk}, format="json"
    )
    assert response.status_code == 400
    assert not Task.objects.filter(kind="vm.cdrom").exists()


@pytest.mark.parametrize(
    "victim", ["globex_detached", "image", "unpublished_iso", "victim_disk", "own_disk"]
)
def test_operator_cannot_attach_volume_read_write_unless_own_and_free(api, shared, victim):
    """Another tenant's detached disk, a published image, a platform volume, a disk in use."""
    client = api.as_user(shared["operator"])
    vm = shared["own_vm"]
    response = client.post(f"/api/vms/{vm.pk}/disks/", {"volume": shared[victim].pk}, format="json")
    assert response.status_code == 400, response.content
    assert "volume" in response.json()
    assert not Task.objects.filter(kind="vm.disk_attach").exists()


def test_operator_attaches_own_detached_volume(api, shared):
    client = api.as_user(shared["operator"])
    vm = shared["own_vm"]
    response = client.post(
        f"/api/vms/{vm.pk}/disks/", {"volume": shared["acme_detached"].pk}, format="json"
    )
    assert response.status_code == 202, response.content


def test_operator_uses_published_image_and_iso(api, shared):
    client = api.as_user(shared["operator"])
    disks = [{"source_volume": shared["image"].pk, "clone": "linked"}]
    response = _create(client, shared, disks=disks, cdrom=shared["iso"].pk)
    assert response.status_code == 202, response.content
    run_queued_tasks()
    task = Task.objects.get(kind="vm.create")
    assert task.state == "succeeded", task.error
    vm = VirtualMachine.objects.get(name="thief-01")
    new_volume = Volume.objects.get(disks__vm=vm, disks__device="disk")
    assert new_volume.tenant == shared["acme"]  # the clone's own data is acme's
    image = Volume.objects.get(pk=shared["image"].pk)
    assert image.published and image.tenant is None  # the backing image stays the platform's


@pytest.mark.parametrize("mode", ["full", "linked"])
def test_operator_clones_own_disk(api, shared, mode):
    client = api.as_user(shared["operator"])
    own = shared["own_disk"]
    pool = own.pool
    disks = [{"source_volume": own.pk, "clone": mode}]
    if mode == "linked":
        # The overlay may grow to the disk's whole size, which the simulated host reserves at
        # once: it must fit in the pool's free space (hosts.storage.backends.space_problem).
        assert own.capacity > pool.available
        refused = _create(client, shared, disks=disks)
        assert refused.status_code == 400, refused.content
        assert "GiB asked" in str(refused.json()["disks[0]"])
        StoragePool.objects.filter(pk=pool.pk).update(available=own.capacity * 2)
    response = _create(client, shared, disks=disks)
    assert response.status_code == 202, response.content


def test_image_published_to_one_tenant_is_not_offered_to_another(shared, admin_user):
    host_services.volume_publish(
        user=admin_user, volume=shared["image"], published=True, tenant=shared["globex"]
    )
    acme = volumes_usable(shared["operator"], shared["acme"], USE_SOURCE)
    globex = volumes_usable(shared["globex_operator"], shared["globex"], USE_SOURCE)
    assert not acme.filter(pk=shared["image"].pk).exists()
    assert globex.filter(pk=shared["image"].pk).exists()


def test_usable_volumes_a_tenant_sees(shared):
    op, acme = shared["operator"], shared["acme"]
    source = set(volumes_usable(op, acme, USE_SOURCE).values_list("pk", flat=True))
    attach = set(volumes_usable(op, acme, USE_ATTACH).values_list("pk", flat=True))
    cdrom = set(volumes_usable(op, acme, USE_CDROM).values_list("pk", flat=True))
    own_disks = set(
        shared["own_vm"].disks.filter(device="disk").values_list("volume_id", flat=True)
    )
    assert source == own_disks | {shared["acme_detached"].pk, shared["image"].pk}
    assert attach == {shared["acme_detached"].pk}
    assert cdrom == {shared["iso"].pk}


def test_pool_grant_still_required(shared):
    shared["acme"].allowed_pools.clear()
    assert not volumes_usable(shared["operator"], shared["acme"], USE_SOURCE).exists()


def test_moving_a_vm_to_another_tenant_moves_its_disks(shared, admin_user):
    vm = shared["own_vm"]
    services.vm_update(user=admin_user, vm=vm, tenant=shared["globex"])
    assert Volume.objects.get(pk=shared["own_disk"].pk).tenant == shared["globex"]


def test_publishing_a_disk_in_use_is_refused(shared, admin_user):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        host_services.volume_publish(user=admin_user, volume=shared["victim_disk"], published=True)


def test_admin_publishes_through_the_api(api, shared):
    client = api.as_user(shared["admin"])
    vol = shared["globex_detached"]
    response = client.patch(
        f"/api/volumes/{vol.pk}/", {"published": True, "tenant": None}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["published"] is True and response.json()["tenant"] is None
    vol.refresh_from_db()
    assert vol.published and vol.tenant is None


def test_wizard_refuses_other_tenants_volume(client, shared):
    """The UI wizard posts a volume id; the service refuses it, whatever the page offered."""
    client.force_login(shared["operator"])
    data = {
        "name": "thief-01",
        "tenant": shared["acme"].pk,
        "host": shared["host"].pk,
        "firmware": "bios",
        "machine": "q35",
        "boot": "disk,cdrom,network",
        "disk-0-source": "template",
        "disk-0-volume": shared["victim_disk"].pk,
        "disk-0-clone": "full",
        "disk-0-bus": "virtio",
        "vcpus": "1",
        "memory_mib": "256",
        "nic-0-network": shared["net"].pk,
        "nic-0-model": "virtio",
    }
    response = client.post("/vms/create/", data)
    assert response.status_code == 400
    assert "Unknown source volume on this host." in response.content.decode()
    assert not VirtualMachine.objects.filter(name="thief-01").exists()
    assert not Task.objects.filter(kind="vm.create").exists()


def test_wizard_offers_only_usable_volumes(client, shared):
    client.force_login(shared["operator"])
    response = client.get(f"/vms/create/?tenant={shared['acme'].pk}&host={shared['host'].pk}")
    assert response.status_code == 200
    page = response.content.decode()
    assert "k8s-node-02-disk0" not in page
    assert "debian-12-base.qcow2" not in page  # globex's detached disk
    assert "rocky-9-base.raw" in page  # the published image
    assert "alpine-3.20.iso" in page and "debian-12.iso" not in page


def test_disk_add_page_offers_only_own_detached_volumes(client, shared):
    client.force_login(shared["operator"])
    response = client.get(f"/vms/{shared['own_vm'].pk}/disks/add/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "ubuntu-24.04-base.qcow2" in page
    assert "debian-12-base.qcow2" not in page and "rocky-9-base.raw" not in page
