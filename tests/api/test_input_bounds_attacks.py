"""What would be accepted and then fail on the host, or keep the server busy, is refused first."""

from __future__ import annotations

import pytest

from hosts.models import Network, StoragePool
from panel.models import Task
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(synced_host, tenant, admin_user):
    return {
        "host": synced_host,
        "pool": StoragePool.objects.get(host=synced_host, name="default"),
        "net": Network.objects.get(host=synced_host, name="lan"),
        "tenant": tenant,
        "admin": admin_user,
    }


def _body(world, **over):
    body = {
        "name": "bound-01",
        "tenant": world["tenant"].pk,
        "host": world["host"].pk,
        "vcpus": 1,
        "memory_mib": 256,
    }
    body.update(over)
    return body


def _nothing_made():
    assert not VirtualMachine.objects.filter(name="bound-01").exists()
    assert not Task.objects.filter(kind="vm.create").exists()


@pytest.mark.parametrize("count", [17, 1000, 10_000])
def test_thousands_of_nics_are_refused_before_any_lookup(
    api, world, count, django_assert_max_num_queries
):
    client = api.as_user(world["admin"])
    nics = [{"network": world["net"].pk}] * count
    with django_assert_max_num_queries(5):
        response = client.post("/api/vms/", _body(world, nics=nics), format="json")
    assert response.status_code == 400
    assert "nics" in response.json()
    _nothing_made()


def test_too_many_disks_are_refused(api, world):
    client = api.as_user(world["admin"])
    disks = [{"size_gib": 1, "pool": world["pool"].pk}] * 17
    response = client.post("/api/vms/", _body(world, disks=disks), format="json")
    assert response.status_code == 400 and "disks" in response.json()
    _nothing_made()


def test_sixteen_nics_are_accepted(api, world):
    client = api.as_user(world["admin"])
    nics = [{"network": world["net"].pk}] * 16
    response = client.post("/api/vms/", _body(world, nics=nics), format="json")
    assert response.status_code == 202, response.content


def test_service_bounds_device_lists_for_every_door(world):
    from django.core.exceptions import ValidationError

    from vms import services

    with pytest.raises(ValidationError) as exc:
        services.vm_create(
            user=world["admin"],
            name="bound-01",
            tenant=world["tenant"],
            vcpus=1,
            memory_mib=256,
            host=world["host"],
            nics=[{"network": world["net"].pk}] * 17,
        )
    assert "nics" in exc.value.message_dict


def test_nic_attach_beyond_the_limit_is_refused(world):
    from django.core.exceptions import ValidationError

    from vms import services
    from vms.models import Nic

    vm = VirtualMachine.objects.filter(host=world["host"], state="shutoff").first()
    Nic.objects.bulk_create(
        [Nic(vm=vm, mac=f"52:54:00:aa:bb:{i:02x}", network=world["net"]) for i in range(16)]
    )
    with pytest.raises(ValidationError) as exc:
        services.nic_attach(user=world["admin"], vm=vm, network=world["net"].pk)
    assert "16 NICs" in str(exc.value)


@pytest.mark.parametrize("size", ["1e18", 1e18, "1e308", "inf", "nan", 65537])
def test_disk_grow_beyond_the_volume_cap_is_refused(api, world, size):
    vm = VirtualMachine.objects.filter(host=world["host"], disks__format="qcow2").first()
    disk = vm.disks.filter(device="disk", volume__isnull=False).first()
    client = api.as_user(world["admin"])
    response = client.post(
        f"/api/vms/{vm.pk}/disks/{disk.pk}/resize/", {"size_gib": size}, format="json"
    )
    assert response.status_code == 400, response.content
    assert not Task.objects.filter(kind="vm.disk_grow").exists()


@pytest.mark.parametrize("size", ["nan", "inf", 1e18])
def test_new_disk_of_impossible_size_is_refused(api, world, size):
    client = api.as_user(world["admin"])
    disks = [{"size_gib": size, "pool": world["pool"].pk}]
    response = client.post("/api/vms/", _body(world, disks=disks), format="json")
    assert response.status_code == 400, response.content
    _nothing_made()


def test_max_memory_above_the_host_is_refused(api, world):
    client = api.as_user(world["admin"])
    host_mib = world["host"].memory_mib
    response = client.post("/api/vms/", _body(world, max_memory_mib=host_mib * 4), format="json")
    assert response.status_code == 400
    assert "max_memory_mib" in response.json()
    _nothing_made()


@pytest.mark.parametrize("field", ["memory_mib", "max_memory_mib", "vcpus", "max_vcpus"])
def test_values_beyond_64_bits_are_field_errors(world, field):
    from django.core.exceptions import ValidationError

    from vms import services

    world["host"].memory_mib = None  # a host whose size is not known yet bounds nothing
    world["host"].cpus = None
    world["host"].save()
    kwargs = {"vcpus": 1, "memory_mib": 256, field: 2**63}
    with pytest.raises(ValidationError) as exc:
        services.vm_create(
            user=world["admin"],
            name="bound-01",
            tenant=world["tenant"],
            host=world["host"],
            **kwargs,
        )
    assert field in exc.value.message_dict
    _nothing_made()


def test_named_cpu_model_on_a_host_that_lists_none_is_refused(api, world):
    world["host"].cpu_models = []
    world["host"].save()
    client = api.as_user(world["admin"])
    response = client.post("/api/vms/", _body(world, cpu_model="Skylake-Server"), format="json")
    assert response.status_code == 400
    assert "lists no named CPU models" in response.json()["cpu_model"][0]
    for ok in ("host-model", "host-passthrough", ""):
        response = client.post(
            "/api/vms/", _body(world, name=f"ok-{ok or 'default'}", cpu_model=ok), format="json"
        )
        assert response.status_code == 202, response.content
