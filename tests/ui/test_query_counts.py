"""Query-count baselines for the console's pages: each list costs the same number of queries
with 2 and with 20 objects (tests/api/test_query_counts.py's Inventory makes them), and the
platform admin's pages cost a pinned number of queries however many hosts, VMs and tasks
there are."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api.test_query_counts import SIZES, Inventory

pytestmark = pytest.mark.django_db

BOTH = ("platform", "tenant")
PLATFORM = ("platform",)

# (URL, kind of object listed, actors): {host}, {tenant}, {pool} and {vm} are the inventory's.
UI_LISTS = [
    ("/", "hosts", PLATFORM),
    ("/hosts/", "hosts", PLATFORM),
    ("/vms/", "vms", BOTH),
    ("/tasks/", "tasks", BOTH),
    ("/tasks/bar/", "tasks", BOTH),
    ("/tenants/", "tenants", BOTH),
    ("/users/", "users", PLATFORM),
    ("/tokens/", "tokens", BOTH),
    ("/tuning/policies/", "policies", BOTH),
    ("/pools/{pool}/", "volumes", PLATFORM),
    ("/hosts/{host}/?tab=vms", "vms", PLATFORM),
    ("/hosts/{host}/?tab=storage", "pools", PLATFORM),
    ("/hosts/{host}/?tab=networks", "networks", PLATFORM),
    ("/hosts/{host}/?tab=tasks", "tasks", PLATFORM),
    ("/tenants/{tenant}/?tab=vms", "vms", BOTH),
    ("/tenants/{tenant}/?tab=members", "memberships", BOTH),
    ("/vms/{vm}/?tab=snapshots", "snapshots", BOTH),
    ("/vms/{vm}/?tab=tasks", "tasks", BOTH),
    ("/tree/hosts/{host}/vms/", "vms", PLATFORM),
    ("/tree/hosts/{host}/pools/", "pools", PLATFORM),
    ("/tree/hosts/{host}/networks/", "networks", PLATFORM),
    ("/tree/tenants/{tenant}/vms/", "vms", BOTH),
]
UI_CASES = [(url, kind, actor) for url, kind, actors in UI_LISTS for actor in actors]


def _queries(client, url: str) -> tuple[int, int]:
    """The number of queries and the page's length."""
    cache.clear()
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries), len(response.content)


@pytest.fixture
def inventory(admin_user, make_member):
    return Inventory(admin_user, make_member)


@pytest.mark.parametrize(
    "url, kind, actor", UI_CASES, ids=[f"{u.split('?')[0]}{u.partition('?')[2]}-{a}"
                                       for u, _k, a in UI_CASES]
)  # fmt: skip
def test_ui_list_query_count_does_not_grow(client, inventory, url, kind, actor):
    client.force_login(inventory.users[actor])
    url = url.format(host=inventory.host.pk, tenant=inventory.tenant.pk, pool=inventory.pool.pk,
                     vm=inventory.vm.pk)  # fmt: skip
    counts, lengths = {}, {}
    for size in SIZES:
        inventory.grow(kind, size)
        _queries(client, url)  # warm: session, content types
        counts[size], lengths[size] = _queries(client, url)
    assert counts[SIZES[0]] == counts[SIZES[1]], counts
    # The objects are on the page: it grows with them.
    assert lengths[SIZES[1]] > lengths[SIZES[0]], lengths


# The platform admin's pages at scale (benchmarks/bench_ui_pages.py) and the tree nodes they
# load: (URL, queries). Session and user are two of them; the resource tree adds none to a page
# (its levels load when they open), counts are one grouped query. A change to a number here is
# a change to what a page costs at 2,000 hosts / 50,000 VMs: say why in the commit.
ADMIN_PAGES = [
    ("/", 8),
    ("/vms/", 7),
    ("/hosts/{host}/", 6),
    ("/hosts/{host}/?tab=vms", 7),
    ("/vms/{vm}/", 7),
    ("/search/?q=qc-vm", 4),
    ("/tasks/", 7),
    ("/tree/hosts/", 3),
    ("/tree/hosts/{host}/", 4),
    ("/tree/hosts/{host}/vms/", 4),
    ("/tree/tenants/", 4),
]
GROWN = ("hosts", "vms", "tasks", "tenants")


@pytest.mark.parametrize("url, baseline", ADMIN_PAGES, ids=[u for u, _b in ADMIN_PAGES])
def test_admin_page_query_count_is_pinned(client, inventory, url, baseline):
    client.force_login(inventory.users["platform"])
    url = url.format(host=inventory.host.pk, vm=inventory.vm.pk)
    counts = {}
    for size in SIZES:
        for kind in GROWN:
            inventory.grow(kind, size)
        _queries(client, url)  # warm: session, content types
        counts[size], _length = _queries(client, url)
    assert counts == {size: baseline for size in SIZES}, counts
