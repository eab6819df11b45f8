"""A filter value with a "%" in it is refused with its field's message, never a 500: django-filter
interpolates every error message with its params, so a value must travel as a param."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path",
    [
        "/api/vms/?ordering=10%25d",
        "/api/vms/?ordering=-%25s%25s",
        "/api/vms/?state=%25s",
        "/api/vms/?host=%25d",
        "/api/tasks/?state=%25(x)s",
        "/api/hosts/?status=%25",
    ],
)
def test_a_percent_in_a_filter_value_is_a_400_naming_the_field(api, admin_user, path):
    api.as_user(admin_user)
    response = api.get(path)
    assert response.status_code == 400, response.content
    field = path.split("?")[1].split("=")[0]
    assert field in response.json()


def test_an_unknown_ordering_names_the_value(api, admin_user):
    api.as_user(admin_user)
    response = api.get("/api/vms/?ordering=10%25d")
    assert "'10%d'" in response.json()["ordering"][0]
