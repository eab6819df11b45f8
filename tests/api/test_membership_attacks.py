"""A tenant admin can neither enumerate the platform's users nor pull outsiders into a tenant."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from panel.models import Membership

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def people(admin_user, tenant, other_tenant, make_member):
    """The platform admin, tenants acme, acme-labs and globex, an admin of both acme tenants,
    an acme viewer, a globex operator and a user in no tenant."""
    second = type(tenant).objects.create(name="acme-labs")
    acme_admin = make_member(tenant, "admin", "acme-admin")
    Membership.objects.create(user=acme_admin, tenant=second, role="admin")
    return {
        "platform": admin_user,
        "acme": tenant,
        "acme_labs": second,
        "globex": other_tenant,
        "acme_admin": acme_admin,
        "acme_viewer": make_member(tenant, "viewer", "acme-viewer"),
        "globex_user": make_member(other_tenant, "operator", "globex-op"),
        "loner": User.objects.create_user("loner", password="pw", email="loner@example.com"),
    }


def _add(client, username, tenant, role="viewer"):
    return client.post(
        "/api/memberships/", {"user": username, "tenant": tenant.pk, "role": role}, format="json"
    )


def test_tenant_admin_cannot_pull_platform_admin_into_tenant(api, people):
    client = api.as_user(people["acme_admin"])
    response = _add(client, people["platform"].username, people["acme"], role="viewer")
    assert response.status_code == 400
    assert not Membership.objects.filter(user=people["platform"]).exists()


def test_tenant_admin_cannot_pull_outside_users_into_tenant(api, people):
    client = api.as_user(people["acme_admin"])
    for username in ("globex-op", "loner"):
        assert _add(client, username, people["acme"]).status_code == 400
    assert not Membership.objects.filter(tenant=people["acme"], user__username="loner").exists()


def test_outside_and_missing_users_get_the_same_answer(api, people):
    client = api.as_user(people["acme_admin"])
    outside = _add(client, "globex-op", people["acme"])
    missing = _add(client, "no-such-user", people["acme"])
    platform = _add(client, people["platform"].username, people["acme"])
    assert outside.status_code == missing.status_code == platform.status_code == 400
    assert outside.json() == missing.json() == platform.json()


def test_tenant_admin_adds_member_of_own_other_tenant(api, people):
    client = api.as_user(people["acme_admin"])
    Membership.objects.create(user=people["loner"], tenant=people["acme_labs"], role="viewer")
    response = _add(client, "loner", people["acme"], role="member")
    assert response.status_code == 201, response.content
    assert Membership.objects.get(user=people["loner"], tenant=people["acme"]).role == "member"


def test_tenant_admin_creates_new_user_in_own_tenant(api, people):
    client = api.as_user(people["acme_admin"])
    body = {"username": "newbie", "password": "Long-pass-4-newbie", "tenant": people["acme"].pk}
    response = client.post("/api/users/", {**body, "role": "operator"}, format="json")
    assert response.status_code == 201, response.content
    assert set(response.json()) == {"id", "username", "is_active", "date_joined"}
    assert Membership.objects.get(user__username="newbie").tenant == people["acme"]
    # Not in a tenant they do not administer, never a platform admin, never without a tenant.
    other = client.post(
        "/api/users/", {**body, "username": "newbie2", "tenant": people["globex"].pk}, format="json"
    )
    assert other.status_code == 400 and "tenant" in other.json()
    root = client.post(
        "/api/users/", {**body, "username": "newbie3", "is_superuser": True}, format="json"
    )
    assert root.status_code == 403
    bare = client.post(
        "/api/users/", {"username": "newbie4", "password": body["password"]}, format="json"
    )
    assert bare.status_code == 403
    assert not User.objects.filter(username__in=["newbie2", "newbie3", "newbie4"]).exists()


def test_viewer_cannot_create_users_in_own_tenant(api, people):
    client = api.as_user(people["acme_viewer"])
    body = {"username": "sneaky", "password": "Long-pass-4-sneaky", "tenant": people["acme"].pk}
    assert client.post("/api/users/", body, format="json").status_code == 403


def test_platform_admin_adds_anyone(api, people):
    client = api.as_user(people["platform"])
    assert _add(client, "loner", people["acme"]).status_code == 201
    assert _add(client, "globex-op", people["acme"]).status_code == 201


def test_tenant_admin_never_sees_email_or_superuser_flag(api, people):
    people["acme_viewer"].email = "viewer@example.com"
    people["acme_viewer"].save()
    client = api.as_user(people["acme_admin"])
    users = client.get("/api/users/").json()["results"]
    assert {u["username"] for u in users} == {"acme-admin", "acme-viewer"}
    for user in users:
        assert "email" not in user and "is_superuser" not in user
    one = client.get(f"/api/users/{people['acme_viewer'].pk}/").json()
    assert "email" not in one and "is_superuser" not in one
    # The platform admin sees both.
    full = api.as_user(people["platform"]).get(f"/api/users/{people['acme_viewer'].pk}/").json()
    assert full["email"] == "viewer@example.com" and full["is_superuser"] is False


def test_tenant_admin_cannot_enumerate_usernames(api, people):
    client = api.as_user(people["acme_admin"])
    listed = {u["username"] for u in client.get("/api/users/?limit=1000").json()["results"]}
    assert "loner" not in listed and people["platform"].username not in listed
    assert client.get("/api/users/?username=loner").json()["count"] == 0
    assert client.get(f"/api/users/{people['loner'].pk}/").status_code == 404
    # The browsable form and the schema offer no list of every username either.
    options = client.options("/api/memberships/").content.decode()
    assert "loner" not in options and people["platform"].username not in options


def test_ui_tenant_admin_cannot_pull_outside_user(client, people):
    client.force_login(people["acme_admin"])
    url = f"/tenants/{people['acme'].pk}/members/add/"
    outside = client.post(url, {"member-username": "loner", "member-role": "viewer"})
    missing = client.post(url, {"member-username": "nobody-here", "member-role": "viewer"})
    assert outside.status_code == missing.status_code == 400
    assert "No such user among your tenants" in outside.content.decode()
    assert not Membership.objects.filter(user=people["loner"]).exists()
    created = client.post(
        url,
        {"member-username": "fresh", "member-role": "viewer", "member-password": "Long-pw-4-fresh"},
    )
    assert created.status_code == 302
    assert Membership.objects.get(user__username="fresh").tenant == people["acme"]


def test_tenant_admin_cannot_filter_users_by_superuser_flag(api, people):
    Membership.objects.create(user=people["platform"], tenant=people["acme"], role="viewer")
    client = api.as_user(people["acme_admin"])
    every = {u["id"] for u in client.get("/api/users/").json()["results"]}
    for flag in ("true", "false"):
        filtered = client.get(f"/api/users/?is_superuser={flag}").json()["results"]
        assert {u["id"] for u in filtered} == every
    platform = api.as_user(people["platform"]).get("/api/users/?is_superuser=true").json()
    assert [u["username"] for u in platform["results"]] == [people["platform"].username]
