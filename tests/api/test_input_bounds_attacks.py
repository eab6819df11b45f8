"""What would be accepted and then fail on the host, or keep the server busy, is refused first."""

from __future__ import annotations

import pytest

from panel.models import Task
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def placement(sim_placement, tenant, admin_user):
    """host, pool (default), net (lan), tenant acme and the platform admin."""
    return {**sim_placement, "tenant": tenant, "admin": admin_user}


def _body(placement, **over):
    body = {
        "name": "bound-01",
        "tenant": placement["tenant"].pk,
        "host": placement["host"].pk,
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
    api, placement, count, django_assert_max_num_queries
):
    client = api.as_user(placement["admin"])
    nics = [{"network": placement["net"].pk}] * count
    with django_assert_max_num_queries(5):
        response = client.post("/api/vms/", _body(placement, nics=nics), format="json")
    assert response.status_code == 400
    assert "nics" in response.json()
    _nothing_made()


def test_too_many_disks_are_refused(api, placement):
    client = api.as_user(placement["admin"])
    disks = [{"size_gib": 1, "pool": placement["pool"].pk}] * 17
    response = client.post("/api/vms/", _body(placement, disks=disks), format="json")
    assert response.status_code == 400 and "disks" in response.json()
    _nothing_made()


def test_sixteen_nics_are_accepted(api, placement):
    client = api.as_user(placement["admin"])
    nics = [{"network": placement["net"].pk}] * 16
    response = client.post("/api/vms/", _body(placement, nics=nics), format="json")
    assert response.status_code == 202, response.content


def test_service_bounds_device_lists_for_every_door(placement):
    from django.core.exceptions import ValidationError

    from vms import services

    with pytest.raises(ValidationError) as exc:
        services.vm_create(
            user=placement["admin"],
            name="bound-01",
            tenant=placement["tenant"],
            vcpus=1,
            memory_mib=256,
            host=placement["host"],
            nics=[{"network": placement["net"].pk}] * 17,
        )
    assert "nics" in exc.value.message_dict


def test_nic_attach_beyond_the_limit_is_refused(placement):
    from django.core.exceptions import ValidationError

    from vms import services
    from vms.models import Nic

    vm = VirtualMachine.objects.filter(host=placement["host"], state="shutoff").first()
    Nic.objects.bulk_create(
        [Nic(vm=vm, mac=f"52:54:00:aa:bb:{i:02x}", network=placement["net"]) for i in range(16)]
    )
    with pytest.raises(ValidationError) as exc:
        services.nic_attach(user=placement["admin"], vm=vm, network=placement["net"].pk)
    assert "16 NICs" in str(exc.value)


@pytest.mark.parametrize("size", ["1e18", 1e18, "1e308", "inf", "nan", 65537])
def test_disk_grow_beyond_the_volume_cap_is_refused(api, placement, size):
    vm = VirtualMachine.objects.filter(host=placement["host"], disks__format="qcow2").first()
    disk = vm.disks.filter(device="disk", volume__isnull=False).first()
    client = api.as_user(placement["admin"])
    response = client.post(
        f"/api/vms/{vm.pk}/disks/{disk.pk}/resize/", {"size_gib": size}, format="json"
    )
    assert response.status_code == 400, response.content
    assert not Task.objects.filter(kind="vm.disk_grow").exists()


@pytest.mark.parametrize("size", ["nan", "inf", 1e18])
def test_new_disk_of_impossible_size_is_refused(api, placement, size):
    client = api.as_user(placement["admin"])
    disks = [{"size_gib": size, "pool": placement["pool"].pk}]
    response = client.post("/api/vms/", _body(placement, disks=disks), format="json")
    assert response.status_code == 400, response.content
    _nothing_made()


def test_max_memory_above_the_host_is_refused(api, placement):
    client = api.as_user(placement["admin"])
    host_mib = placement["host"].memory_mib
    response = client.post(
        "/api/vms/", _body(placement, max_memory_mib=host_mib * 4), format="json"
    )
    assert response.status_code == 400
    assert "max_memory_mib" in response.json()
    _nothing_made()


@pytest.mark.parametrize("field", ["memory_mib", "max_memory_mib", "vcpus", "max_vcpus"])
def test_values_beyond_64_bits_are_field_errors(placement, field):
    from django.core.exceptions import ValidationError

    from vms import services

    placement["host"].memory_mib = None  # a host whose size is not known yet bounds nothing
    placement["host"].cpus = None
    placement["host"].save()
    kwargs = {"vcpus": 1, "memory_mib": 256, field: 2**63}
    with pytest.raises(ValidationError) as exc:
        services.vm_create(
            user=placement["admin"],
            name="bound-01",
            tenant=placement["tenant"],
            host=placement["host"],
            **kwargs,
        )
    assert field in exc.value.message_dict
    _nothing_made()


def test_named_cpu_model_on_a_host_that_lists_none_is_refused(api, placement):
    placement["host"].cpu_models = []
    placement["host"].save()
    client = api.as_user(placement["admin"])
    response = client.post("/api/vms/", _body(placement, cpu_model="Skylake-Server"), format="json")
    assert response.status_code == 400
    assert "lists no named CPU models" in response.json()["cpu_model"][0]
    for ok in ("host-model", "host-passthrough", ""):
        response = client.post(
            "/api/vms/", _body(placement, name=f"ok-{ok or 'default'}", cpu_model=ok), format="json"
        )
        assert response.status_code == 202, response.content
