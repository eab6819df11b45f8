"""What the server-rendered console's tests share: tenants owning part of the simulated host,
and reading pages."""

from __future__ import annotations

import pytest

from vms.models import VirtualMachine


def login(client, user):
    client.force_login(user)
    return client


def text(response) -> str:
    return response.content.decode()


def main(response) -> str:
    """The main panel only (not the tree or the task bar)."""
    page = text(response)
    return page[page.index('<main class="main"') : page.index("</main>")]


@pytest.fixture
def acme_vms(synced_host, tenant):
    """The web-* VMs of the simulated host belong to tenant 'acme'; the rest stay in default."""
    VirtualMachine.objects.filter(host=synced_host, name__startswith="web-").update(tenant=tenant)
    return list(VirtualMachine.objects.filter(tenant=tenant).order_by("name"))


@pytest.fixture
def acme_vm(acme_vms):
    """acme's first VM that is not a template."""
    return next(vm for vm in acme_vms if not vm.is_template)


@pytest.fixture
def globex_vms(synced_host, other_tenant):
    """The db-* VMs of the simulated host belong to tenant 'globex'."""
    VirtualMachine.objects.filter(host=synced_host, name__startswith="db-").update(
        tenant=other_tenant
    )
    return list(VirtualMachine.objects.filter(tenant=other_tenant).order_by("name"))
