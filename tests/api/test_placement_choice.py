"""Placement picks the allowed online host with the most free memory that fits, in one query."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.choices import HostStatus
from hosts.models import Host
from tests.conftest import grant_host
from vms.models import VirtualMachine
from vms.services import choose_host, placement_candidates

pytestmark = pytest.mark.django_db


def _host(name, *, cpus=8, memory_mib=16384, status=HostStatus.ONLINE) -> Host:
    return Host.objects.create(
        name=name, uri=f"test:///{name}", cpus=cpus, memory_mib=memory_mib, status=status
    )


def _vm(host, tenant, memory_mib, **kw):
    return VirtualMachine.objects.create(
        host=host, tenant=tenant, name=f"vm-{uuid.uuid4().hex[:6]}", uuid=uuid.uuid4(),
        memory_mib=memory_mib, **kw,
    )  # fmt: skip


def test_the_most_free_allowed_host_that_fits_wins_in_one_query(tenant, other_tenant, admin_user):
    busy, roomy, small, offline, foreign = (
        _host("busy"),
        _host("roomy"),
        _host("small", cpus=2),
        _host("off", memory_mib=65536, status=HostStatus.OFFLINE),
        _host("foreign", memory_mib=65536),
    )
    for h in (busy, roomy, small, offline):
        grant_host(tenant, h)
    grant_host(other_tenant, foreign)
    _vm(busy, tenant, 12288)
    _vm(roomy, tenant, 4096)
    _vm(roomy, tenant, 8192, gone=True)  # gone VMs hold nothing
    with CaptureQueriesContext(connection) as queries:
        chosen = choose_host(None, tenant, vcpus=4, memory_mib=4096)
    assert chosen == roomy
    assert len(queries) == 1
    names = [h.name for h in placement_candidates(None, tenant, 1, 1024)]
    assert names == ["small", "roomy", "busy"]  # 16, 12 and 4 GiB free
    assert choose_host(None, tenant, vcpus=4, memory_mib=20000) is None
