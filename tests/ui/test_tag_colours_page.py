"""The tag colours page: platform admins set the list (bad colours back at the page with a
400), tenant users may not open it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from panel.models import TagColour
from tests.ui.conftest import login, text

pytestmark = pytest.mark.django_db


def test_admin_sets_and_drops_colours(client, admin_user):
    TagColour.objects.create(tag="old", colour="red")
    login(client, admin_user)
    url = reverse("ui:tag_colours")
    assert 'class="tag tag-c-red" data-tag="old"' in text(client.get(url))
    response = client.post(
        url, {"tag": ["web", "db", "", "old"], "colour": ["teal", "#A1B2C3", "", "blue"]}
    )
    assert response.status_code == 302
    assert dict(TagColour.objects.values_list("tag", "colour")) == {
        "web": "teal",
        "db": "#a1b2c3",
        "old": "blue",
    }
    client.post(url, {"tag": ["web"], "colour": ["teal"]})
    assert list(TagColour.objects.values_list("tag", flat=True)) == ["web"]


@pytest.mark.parametrize(
    "tags, colours, message",
    [
        (["web"], ["javascript:alert(1)"], "web (colour)"),
        (["we b"], ["red"], "we b (tag)"),
        (["web", "web"], ["red", "blue"], "listed more than once"),
    ],
)
def test_bad_rows_come_back_with_their_message(client, admin_user, tags, colours, message):
    TagColour.objects.create(tag="keep", colour="red")
    login(client, admin_user)
    response = client.post(reverse("ui:tag_colours"), {"tag": tags, "colour": colours})
    assert response.status_code == 400
    assert message in text(response)
    assert list(TagColour.objects.values_list("tag", flat=True)) == ["keep"]


def test_tenant_users_may_not_open_it(client, tenant, make_member):
    login(client, make_member(tenant, "admin"))
    assert client.get(reverse("ui:tag_colours")).status_code == 403
    response = client.post(reverse("ui:tag_colours"), {"tag": ["web"], "colour": ["red"]})
    assert response.status_code == 403
    assert not TagColour.objects.exists()
