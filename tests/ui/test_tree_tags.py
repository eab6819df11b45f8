"""The resource tree grouped by tag: the tags of the VMs a user may see with their counts (one
grouped query, the same for 5 tagged VMs or 30), a tag's VMs, and nothing of another tenant."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from panel.choices import Role
from panel.models import TagColour
from tests.ui.conftest import login, text
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db


def tag(vms, *tags):
    VirtualMachine.objects.filter(pk__in=[vm.pk for vm in vms]).update(tags=list(tags))


def test_tags_are_counted_for_what_the_user_sees(client, make_member, acme_vms, globex_vms):
    tag(acme_vms[:2], "web", "prod")
    tag(acme_vms[2:3], "prod")
    tag(globex_vms, "secret-project", "prod")
    TagColour.objects.create(tag="web", colour="teal")
    login(client, make_member(acme_vms[0].tenant, Role.VIEWER))
    tree = text(client.get(reverse("ui:tree_tags")))
    assert 'data-node="tag-prod"' in tree and 'data-node="tag-web"' in tree
    assert "secret-project" not in tree
    assert 'class="tag tag-c-teal" data-tag="web"' in tree
    found = re.findall(
        r'data-node="tag-([^"]+)".*?<span class="count"[^>]*>(\d+)</span>', tree, re.S
    )
    counts = {name: int(n) for name, n in found}
    assert counts == {"prod": 3, "web": 2, "-": len(acme_vms) - 3}

    prod = text(client.get(reverse("ui:tree_tag_vms") + "?tag=prod"))
    assert {vm.name for vm in acme_vms[:3]} <= {n for n in _names(prod)}
    assert not {vm.name for vm in globex_vms} & set(_names(prod))
    untagged = _names(text(client.get(reverse("ui:tree_tag_vms") + "?tag=")))
    assert set(untagged) == {vm.name for vm in acme_vms[3:]}


def _names(html: str) -> list[str]:
    return re.findall(r'<span class="label">([^<]+)</span>', html)


def test_a_tag_that_cannot_exist_lists_nothing(client, admin_user, synced_host):
    login(client, admin_user)
    response = client.get(reverse("ui:tree_tag_vms") + "?tag=%27%3Cscript%3E")
    assert response.status_code == 200
    assert "No virtual machines." in text(response)


def test_tag_nodes_cost_the_same_queries_however_many_vms_are_tagged(
    client, admin_user, synced_host
):
    login(client, admin_user)
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    counts = []
    for n in (3, len(vms)):
        for i, vm in enumerate(vms[:n]):
            VirtualMachine.objects.filter(pk=vm.pk).update(tags=[f"t{i % 7}", "all"])
        client.get(reverse("ui:tree_tags"))
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("ui:tree_tags")).status_code == 200
            assert client.get(reverse("ui:tree_tag_vms") + "?tag=all").status_code == 200
        counts.append(len(ctx.captured_queries))
    assert counts[0] == counts[1], counts
