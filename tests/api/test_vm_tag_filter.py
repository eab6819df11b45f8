"""?tag= on the VM list (the API and the console's list, which the tree's "Show all" for a tag
opens): exactly the VMs that carry the tag, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import pytest

from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


@pytest.fixture
def tagged(synced_host):
    vms = list(VirtualMachine.objects.filter(host=synced_host, gone=False).order_by("name")[:3])
    VirtualMachine.objects.filter(pk=vms[0].pk).update(tags=["web", "prod"])
    VirtualMachine.objects.filter(pk=vms[1].pk).update(tags=["web"])
    VirtualMachine.objects.filter(pk=vms[2].pk).update(tags=["webby"])
    return vms


def test_the_api_lists_the_vms_that_carry_the_tag(api, admin_user, tagged):
    api.as_user(admin_user)
    rows = api.get("/api/vms/?tag=web&limit=1000").json()["results"]
    assert {row["id"] for row in rows} == {tagged[0].pk, tagged[1].pk}
    rows = api.get("/api/vms/?tag=prod").json()["results"]
    assert [row["id"] for row in rows] == [tagged[0].pk]


@pytest.mark.parametrize("tag", ["%", "' OR 1=1 --", 'a"b', "nobody"])
def test_an_odd_or_unknown_tag_is_an_empty_list(api, admin_user, tagged, tag):
    api.as_user(admin_user)
    response = api.get("/api/vms/", {"tag": tag})
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_the_console_list_filters_by_tag(client, admin_user, tagged):
    client.force_login(admin_user)
    page = client.get("/vms/?tag=web").content.decode()
    assert tagged[0].name in page and tagged[1].name in page
    assert tagged[2].name not in page
