"""Placement selectors and id resolution: what a tenant may place VMs on, and how an id of
something it may not use is answered (exactly like one that does not exist)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from hosts.models import Host, Network, StoragePool
from hosts.selectors import hosts_for, networks_for, pools_for
from hosts.storage import backend_for
from panel.generic import ViewTab, register_tab, tabs_for
from panel.models import Tenant
from vms import services
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

UNKNOWN_ID = 99_999_999


@pytest.fixture
def placed(synced_host, make_member):
    """acme may use the host, its "default" pool and its first network; nothing else."""
    acme = Tenant.objects.create(name="acme")
    acme.allowed_hosts.add(synced_host)
    pool = synced_host.pools.get(name="default")
    acme.allowed_pools.add(pool)
    network = synced_host.networks.order_by("name").first()
    acme.allowed_networks.add(network)
    other = Host.objects.create(name="other-01", uri="test:///default", status="online")
    return {
        "acme": acme,
        "operator": make_member(acme, "operator", "acme-operator"),
        "host": synced_host,
        "pool": pool,
        "network": network,
        "other_host": other,
    }


def test_selectors_answer_what_the_tenant_was_granted(placed, admin_user):
    acme, operator = placed["acme"], placed["operator"]
    assert list(hosts_for(operator, acme)) == [placed["host"]]
    assert list(pools_for(operator, acme)) == [placed["pool"]]
    assert list(networks_for(operator, acme)) == [placed["network"]]
    assert not pools_for(operator, acme, placed["other_host"]).exists()
    assert not hosts_for(operator, None).exists()
    # A platform admin may place any tenant's VMs anywhere.
    assert hosts_for(admin_user, acme).count() == Host.objects.count()
    assert pools_for(admin_user, acme, placed["host"]).count() == (
        StoragePool.objects.filter(host=placed["host"], gone=False).count()
    )
    assert networks_for(admin_user, acme, [placed["host"]]).count() == (
        Network.objects.filter(host=placed["host"], gone=False).count()
    )


def _create_errors(placed, **kwargs) -> dict:
    with pytest.raises(ValidationError) as exc:
        services.vm_create(
            user=placed["operator"],
            tenant=placed["acme"],
            name="new-01",
            vcpus=1,
            memory_mib=256,
            **kwargs,
        )
    return exc.value.message_dict


def test_a_host_the_tenant_may_not_use_reads_like_a_missing_one(placed):
    foreign = _create_errors(placed, host=placed["other_host"].pk)
    missing = _create_errors(placed, host=UNKNOWN_ID)
    assert foreign["host"] == missing["host"] == ["Unknown host."]
    assert "other-01" not in str(foreign)


def test_a_pool_or_network_the_tenant_may_not_use_is_not_named(placed):
    host = placed["host"]
    vg0 = host.pools.get(name="vg0")
    foreign = _create_errors(placed, host=host.pk, disks=[{"pool": vg0.pk, "size_gib": 1}])
    assert foreign["disks[0]"] == [f"Unknown pool {vg0.pk!r} on this host."]
    assert "vg0" not in str(foreign)
    network = host.networks.exclude(pk=placed["network"].pk).first()
    foreign = _create_errors(placed, host=host.pk, nics=[{"network": network.pk}])
    missing = _create_errors(placed, host=host.pk, nics=[{"network": UNKNOWN_ID}])
    assert foreign["nics[0]"] == [f"Unknown network {network.pk!r} on this host."]
    assert missing["nics[0]"] == [f"Unknown network {UNKNOWN_ID!r} on this host."]
    assert network.name not in str(foreign)


def test_a_nic_attach_to_a_foreign_network_reads_like_a_missing_one(placed):
    host = placed["host"]
    vm = VirtualMachine.objects.filter(host=host, gone=False).order_by("name").first()
    VirtualMachine.objects.filter(pk=vm.pk).update(tenant=placed["acme"])
    vm.refresh_from_db()
    network = host.networks.exclude(pk=placed["network"].pk).first()
    answers = []
    for pk in (network.pk, UNKNOWN_ID):
        with pytest.raises(ValidationError) as exc:
            services.nic_attach(user=placed["operator"], vm=vm, network=pk)
        answers.append(exc.value.message_dict["network"])
    assert answers[0] == answers[1] == ["Unknown network on this VM's host."]


def test_pool_rules_come_from_the_storage_backend(placed):
    host = placed["host"]
    vg0 = host.pools.get(name="vg0")
    assert backend_for(vg0).formats == ("raw",)
    assert backend_for(placed["pool"]).linked_clones


def test_tabs_are_registered_by_weight_and_by_other_apps():
    # Apps register their tabs when their views load, which the URL conf does.
    reverse("ui:host", args=[1])
    names = [tab.name for tab in tabs_for(Host)]
    assert names == ["summary", "vms", "tuning", "storage", "networks", "tasks"]
    assert [t.name for t in tabs_for(VirtualMachine)] == [
        "summary",
        "hardware",
        "tuning",
        "snapshots",
        "tasks",
        "console",
    ]

    class Thing:
        class _meta:
            label_lower = "tests.thing"

    register_tab(Thing, ViewTab("b", "B", "summary", "b.html", weight=20))
    register_tab(Thing, ViewTab("a", "A", "summary", "a.html", weight=10))
    assert [t.name for t in tabs_for(Thing)] == ["a", "b"]
