"""What the API tests share: where on the simulated host a VM goes, acme's users, and two
tenants with an object of every kind (for tests/api/base.py)."""

from __future__ import annotations

import pytest

from hosts.models import Network, StoragePool
from panel.models import ApiToken, Membership, Task
from tests.conftest import grant_host
from vms.models import VirtualMachine

TENANT_ROLES = ["admin", "operator", "member", "viewer"]


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


@pytest.fixture
def tenancy(synced_host, tenant, other_tenant, admin_user, make_member) -> dict:
    """Tenants acme and globex on the simulated host (each granted it, its pools and networks;
    acme owns the first three VMs by name, globex the next two), a user per role in acme plus
    acme-extra (a viewer), globex's tenant admin, a task in each tenant and the platform
    admin's API token. ``users`` maps the actors of tests/api/base.py to their users."""
    acme, globex = tenant, other_tenant
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[:3]]).update(tenant=acme)
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[3:5]]).update(tenant=globex)
    for t in (acme, globex):
        grant_host(t, synced_host)
    users = {"platform": admin_user}
    users.update({role: make_member(acme, role, f"acme-{role}") for role in TENANT_ROLES})
    users["outsider"] = make_member(globex, "admin", "globex-admin")
    extra = make_member(acme, "viewer", "acme-extra")
    acme_vm, globex_vm = VirtualMachine.objects.get(pk=vms[0].pk), vms[3]
    token, _secret = ApiToken.issue(user=admin_user, name="generic")
    return {
        "host": synced_host,
        "acme": acme,
        "globex": globex,
        "users": users,
        "extra": extra,
        "acme_vm": acme_vm,
        "globex_vm": globex_vm,
        "acme_task": Task.objects.create(kind="vm.start", tenant=acme, vm=acme_vm, target="vm"),
        "globex_task": Task.objects.create(
            kind="vm.stop", tenant=globex, vm=globex_vm, target="vm"
        ),
        "extra_membership": Membership.objects.get(user=extra, tenant=acme),
        "globex_membership": Membership.objects.get(user=users["outsider"], tenant=globex),
        "token": token,
    }


@pytest.fixture
def acme_sim(sim_placement, tenant, acme_users):
    """host, pool (default), net (lan); tenant acme (granted nothing) and its users per role."""
    return {**sim_placement, "tenant": tenant, **acme_users}


def create_body(acme_sim, **over) -> dict:
    """A valid POST /api/vms/ body on the simulated host's pool and network; ``over`` replaces
    fields."""
    body = {
        "name": "app-01",
        "tenant": acme_sim["tenant"].pk,
        "host": acme_sim["host"].pk,
        "vcpus": 2,
        "memory_mib": 1024,
        "disks": [{"size_gib": 8, "pool": acme_sim["pool"].pk, "format": "qcow2"}],
        "nics": [{"network": acme_sim["net"].pk}],
    }
    body.update(over)
    return body
