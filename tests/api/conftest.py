"""What the API tests share: where on the simulated host a VM goes, and acme's users."""

from __future__ import annotations

import pytest

from hosts.models import Network, StoragePool


@pytest.fixture
def sim_placement(synced_host) -> dict:
    """The simulated host, its pool 'default' and its network 'lan'."""
    return {
        "host": synced_host,
        "pool": StoragePool.objects.get(host=synced_host, name="default"),
        "net": Network.objects.get(host=synced_host, name="lan"),
    }


@pytest.fixture
def acme_users(tenant, admin_user, make_member) -> dict:
    """The platform admin ('admin') and one acme user per tenant role."""
    return {
        "admin": admin_user,
        "operator": make_member(tenant, "operator"),
        "member": make_member(tenant, "member"),
        "viewer": make_member(tenant, "viewer"),
    }
