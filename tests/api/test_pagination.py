"""List pagination: offset pages, keyset (cursor) pages that neither skip nor repeat a row, an
optional count, and a count kept for a while above a size."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from panel.api import pagination
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(api, admin_user, synced_host):
    cache.clear()
    yield api.as_user(admin_user)
    cache.clear()


def _walk(client, url: str) -> tuple[list[str], int]:
    names, pages = [], 0
    while url:
        body = client.get(url).json()
        names += [vm["name"] for vm in body["results"]]
        assert body["previous"] is None
        url, pages = body["next"], pages + 1
    return names, pages


def test_cursor_pages_follow_the_ordering_without_skipping_or_repeating(client):
    expected = list(VirtualMachine.objects.order_by("name", "id").values_list("name", flat=True))
    assert len(expected) > 20
    # two VMs with one name on different hosts would tie on the name: the id breaks the tie
    names, pages = _walk(client, "/api/vms/?cursor=&limit=7")
    assert names == expected
    assert pages == -(-len(expected) // 7)


def test_offset_pages_and_count_false(client):
    total = VirtualMachine.objects.count()
    body = client.get("/api/vms/?limit=5&offset=5").json()
    assert body["count"] == total and len(body["results"]) == 5
    assert "offset=10" in body["next"] and body["previous"].endswith("limit=5")
    body = client.get("/api/vms/?limit=5&count=false").json()
    assert body["count"] is None and len(body["results"]) == 5 and "offset=5" in body["next"]
    last = client.get(f"/api/vms/?limit=5&offset={total - 2}&count=false").json()
    assert len(last["results"]) == 2 and last["next"] is None


def test_a_deep_cursor_page_costs_the_queries_of_the_first(client):
    first = client.get("/api/vms/?cursor=&limit=3&count=false").json()
    with CaptureQueriesContext(connection) as q_first:
        client.get(first["next"])
    deep = _walk_to_last(client)
    with CaptureQueriesContext(connection) as q_deep:
        client.get(deep)
    assert len(q_deep) == len(q_first)
    assert not any("OFFSET" in q["sql"].upper() for q in q_deep.captured_queries)


def _walk_to_last(client) -> str:
    url, last = "/api/vms/?cursor=&limit=3&count=false", None
    while url:
        last, url = url, client.get(url).json()["next"]
    return last


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGpzb24", "WzEsMiwzLDRd", "x" * 3000])
def test_a_cursor_it_did_not_give_out_is_a_400(client, cursor):
    response = client.get(f"/api/vms/?cursor={cursor}")
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_a_large_count_is_kept_for_a_while_and_a_small_one_is_exact(client, monkeypatch):
    total = client.get("/api/vms/?limit=1").json()["count"]
    vms = iter(VirtualMachine.objects.order_by("-name"))
    monkeypatch.setattr(pagination, "CACHED_COUNT_ABOVE", total)  # not above: exact
    next(vms).delete()
    assert client.get("/api/vms/?limit=1").json()["count"] == total - 1
    monkeypatch.setattr(pagination, "CACHED_COUNT_ABOVE", 1)  # above: kept
    assert client.get("/api/vms/?limit=1").json()["count"] == total - 1
    next(vms).delete()
    assert client.get("/api/vms/?limit=1").json()["count"] == total - 1
    cache.clear()  # (or COUNT_CACHE_SECONDS later)
    assert client.get("/api/vms/?limit=1").json()["count"] == total - 2
