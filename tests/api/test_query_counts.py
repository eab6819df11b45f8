"""The VM list costs the same number of queries at 10 and at 1,000 VMs."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import Host
from panel.models import Tenant
from vms.models import Disk, Nic, VirtualMachine

pytestmark = pytest.mark.django_db


def _populate(count: int, host: Host, tenant: Tenant) -> None:
    vms = VirtualMachine.objects.bulk_create(
        [
            VirtualMachine(host=host, tenant=tenant, name=f"vm-{i:05d}", uuid=uuid.uuid4())
            for i in range(count)
        ]
    )
    Disk.objects.bulk_create(
        [Disk(vm=vm, target=t, source=f"/img/{vm.name}-{t}") for vm in vms for t in ("vda", "vdb")]
    )
    Nic.objects.bulk_create(
        [Nic(vm=vm, mac=f"52:54:00:00:{i // 256:02x}:{i % 256:02x}") for i, vm in enumerate(vms)]
    )


def _queries(client, user, url: str) -> int:
    # A fresh user object per request, as a real request has (no per-object caches carried over).
    client.as_user(type(user).objects.get(pk=user.pk))
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("actor", ["platform", "tenant"])
def test_vm_list_query_count_is_constant(api, admin_user, make_member, actor):
    host = Host.objects.create(name="h", uri="test:///tmp/none.xml")
    tenant = Tenant.objects.create(name="acme")
    user = admin_user if actor == "platform" else make_member(tenant, "viewer")
    client = api.as_user(user)

    _populate(10, host, tenant)
    small = _queries(client, user, "/api/vms/?limit=1000")
    _populate(990, host, tenant)
    large = _queries(client, user, "/api/vms/?limit=1000")
    assert client.get("/api/vms/?limit=1000").json()["count"] == 1000
    assert small == large, (small, large)
    assert large <= 6
