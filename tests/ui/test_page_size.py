"""A platform admin's pages do not grow with the number of hosts: the resource tree's page
holds its first level only (the hosts load when the datacenter node opens), and counts are
numbers, not rows. The same page at 5 and at 60 hosts differs by a few digits at most."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from hosts.models import Host
from panel import views as panel_views
from panel.generic import CappedPaginator
from panel.models import Task, Tenant
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

# What a page may differ by: the counts' digits (hosts, CPUs, memory), never a row per host.
SLACK = 200


@pytest.fixture
def inventory(admin_user):
    host = Host.objects.create(name="size-host", uri="test:///tmp/size.xml", status="online")
    tenant = Tenant.objects.create(name="acme")
    vms = VirtualMachine.objects.bulk_create(
        VirtualMachine(host=host, tenant=tenant, name=f"size-vm-{n}", uuid=uuid.uuid4())
        for n in range(3)
    )
    Task.objects.create(kind="vm.start", user=admin_user, tenant=tenant, host=host, vm=vms[0])
    return {"host": host, "vm": vms[0]}


def _hosts(total: int) -> None:
    """Hosts up to ``total``, each with a VM (a tree that listed them inline would grow)."""
    have = Host.objects.count()
    hosts = Host.objects.bulk_create(
        Host(name=f"h-{n:03d}", uri=f"test:///tmp/h-{n}.xml", status="online", cpus=8,
             memory_mib=4096)
        for n in range(have, total)
    )  # fmt: skip
    tenant = Tenant.get_default()
    VirtualMachine.objects.bulk_create(
        VirtualMachine(host=h, tenant=tenant, name=f"{h.name}-vm", uuid=uuid.uuid4()) for h in hosts
    )


def _page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    # The CSRF token in the shell's headers differs from one response to the next.
    return re.sub(r'"X-CSRFToken": "[^"]+"', "", response.content.decode())


PAGES = [
    ("datacenter", lambda o: reverse("ui:datacenter")),
    ("host", lambda o: reverse("ui:host", args=[o["host"].pk])),
    ("host vms tab", lambda o: reverse("ui:host", args=[o["host"].pk]) + "?tab=vms"),
    ("vm summary", lambda o: reverse("ui:vm", args=[o["vm"].pk])),
    ("search", lambda o: reverse("ui:search") + "?q=size-vm"),
    ("tasks", lambda o: reverse("ui:task_list")),
]


@pytest.mark.parametrize("name, url", PAGES, ids=[name for name, _url in PAGES])
def test_admin_page_does_not_grow_with_hosts(client, admin_user, inventory, name, url):
    client.force_login(admin_user)
    url = url(inventory)
    sizes = {}
    for total in (5, 60):
        _hosts(total)
        sizes[total] = len(_page(client, url))
    assert abs(sizes[60] - sizes[5]) < SLACK, sizes


def test_vm_list_filters_stop_listing_hosts_past_the_limit(client, admin_user, inventory):
    """The VM list's host filter is a select of at most 100 hosts, an id field beyond."""
    client.force_login(admin_user)
    VirtualMachine.objects.exclude(host=inventory["host"]).delete()
    _hosts(20)
    VirtualMachine.objects.exclude(host=inventory["host"]).delete()
    page = _page(client, reverse("ui:vm_list"))
    assert page.count('<option value="') > 20  # hosts as choices
    sizes = {}
    for total in (120, 180):
        _hosts(total)
        VirtualMachine.objects.exclude(host=inventory["host"]).delete()
        page = _page(client, reverse("ui:vm_list"))
        assert 'name="host" value="" placeholder="Host id"' in page
        sizes[total] = len(page)
    assert abs(sizes[180] - sizes[120]) < SLACK, sizes
    # The field filters like the select did.
    page = _page(client, reverse("ui:vm_list") + f"?host={inventory['host'].pk}")
    assert "size-vm-0" in page and f'value="{inventory["host"].pk}"' in page


def test_tree_loads_hosts_when_the_datacenter_opens(client, admin_user, inventory):
    client.force_login(admin_user)
    _hosts(60)
    page = _page(client, reverse("ui:datacenter"))
    assert "h-059" not in page and reverse("ui:tree_hosts") in page
    hosts = _page(client, reverse("ui:tree_hosts"))
    assert "h-059" in hosts and "size-host" in hosts
    assert hosts.count('class="node"') == Host.objects.count() == 60
    # Icons by reference: the sprite, never inline path data.
    assert "<path" not in page + hosts and "icons.svg#host" in hosts
    host = _page(client, reverse("ui:tree_host", args=[inventory["host"].pk]))
    assert re.search(r'Virtual machines</span><span class="count">3<', host)


def test_task_pages_count_at_most_the_cap_and_keep_the_order(admin_user, inventory):
    Task.objects.bulk_create(Task(kind="vm.start", user=admin_user) for _ in range(7))
    tasks = Task.objects.select_related("vm", "host")  # newest first
    paginator = CappedPaginator(tasks, 2, cap=5)
    assert paginator.count == 5 and paginator.capped and paginator.num_pages == 3
    expected = list(tasks.values_list("pk", flat=True))
    assert [t.pk for t in paginator.page(2)] == expected[2:4]
    assert [t.pk for t in paginator.page(3)] == expected[4:5]  # the cap ends the last page
    whole = CappedPaginator(tasks, 50, cap=100)
    assert whole.count == 8 and not whole.capped


def test_task_list_says_more_than_the_cap(client, admin_user, inventory, monkeypatch):
    monkeypatch.setattr(panel_views, "TASK_COUNT_CAP", 3)
    Task.objects.bulk_create(Task(kind="vm.start", user=admin_user) for _ in range(4))
    client.force_login(admin_user)
    assert "1–3 of more than 3" in _page(client, reverse("ui:task_list"))
    monkeypatch.setattr(panel_views, "TASK_COUNT_CAP", 100)
    assert "1–5 of 5" in _page(client, reverse("ui:task_list"))
