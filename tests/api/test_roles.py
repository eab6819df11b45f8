"""Every endpoint for every role, and for a member of another tenant.

Rows: (method, url, body, expected status per actor). Actors: the platform admin, acme's tenant
admin / operator / member / viewer, globex's tenant admin (another tenant), and anonymous.
Another tenant's object answers 404 (it does not exist for them); a visible object the role may
not change answers 403; admin-only collections answer 403 to tenant users.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from panel.models import Membership, Task, Tenant
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

ACTORS = ["platform", "admin", "operator", "member", "viewer", "outsider", "anonymous"]


@pytest.fixture
def world(synced_host, admin_user, make_member):
    acme = Tenant.objects.create(name="acme")
    globex = Tenant.objects.create(name="globex")
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[:3]]).update(tenant=acme)
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[3:5]]).update(tenant=globex)
    users = {
        "platform": admin_user,
        "admin": make_member(acme, "admin", "acme-admin"),
        "operator": make_member(acme, "operator", "acme-operator"),
        "member": make_member(acme, "member", "acme-member"),
        "viewer": make_member(acme, "viewer", "acme-viewer"),
        "outsider": make_member(globex, "admin", "globex-admin"),
        "anonymous": None,
    }
    extra = get_user_model().objects.create_user("acme-extra", password="pw")
    extra_membership = Membership.objects.create(user=extra, tenant=acme, role="viewer")
    acme_task = Task.objects.create(kind="vm.start", tenant=acme, vm=vms[0], target="vm")
    return {
        "acme": acme,
        "globex": globex,
        "vm": vms[0],
        "globex_vm": vms[3],
        "host": synced_host,
        "pool": synced_host.pools.first(),
        "volume": synced_host.pools.get(name="default").volumes.first(),
        "network": synced_host.networks.first(),
        "users": users,
        "extra_membership": extra_membership,
        "acme_task": acme_task,
    }


def S(platform, admin, operator, member, viewer, outsider, anonymous=401):
    return dict(
        zip(ACTORS, [platform, admin, operator, member, viewer, outsider, anonymous], strict=True)
    )


MATRIX = [
    # VMs
    ("get", "/api/vms/", None, S(200, 200, 200, 200, 200, 200)),
    ("get", "/api/vms/{vm}/", None, S(200, 200, 200, 200, 200, 404)),
    ("patch", "/api/vms/{vm}/", {"description": "x"}, S(200, 200, 200, 403, 403, 404)),
    ("patch", "/api/vms/{vm}/", {"tenant": "{globex}"}, S(200, 403, 403, 403, 403, 404)),
    ("get", "/api/vms/{globex_vm}/", None, S(200, 404, 404, 404, 404, 200)),
    # Hosts and what they hold: platform admins only
    ("get", "/api/hosts/", None, S(200, 403, 403, 403, 403, 403)),
    ("get", "/api/hosts/{host}/", None, S(200, 403, 403, 403, 403, 403)),
    ("post", "/api/hosts/", {"name": "x", "uri": "bad"}, S(400, 403, 403, 403, 403, 403)),
    ("patch", "/api/hosts/{host}/", {"description": "x"}, S(200, 403, 403, 403, 403, 403)),
    ("post", "/api/hosts/{host}/sync/", None, S(202, 403, 403, 403, 403, 403)),
    ("get", "/api/storage-pools/", None, S(200, 403, 403, 403, 403, 403)),
    ("get", "/api/storage-pools/{pool}/", None, S(200, 403, 403, 403, 403, 403)),
    ("patch", "/api/storage-pools/{pool}/", {"description": "x"}, S(200, 403, 403, 403, 403, 403)),
    ("get", "/api/volumes/", None, S(200, 403, 403, 403, 403, 403)),
    ("get", "/api/volumes/{volume}/", None, S(200, 403, 403, 403, 403, 403)),
    ("get", "/api/networks/", None, S(200, 403, 403, 403, 403, 403)),
    ("get", "/api/networks/{network}/", None, S(200, 403, 403, 403, 403, 403)),
    # Tasks
    ("get", "/api/tasks/", None, S(200, 200, 200, 200, 200, 200)),
    ("get", "/api/tasks/{acme_task}/", None, S(200, 200, 200, 200, 200, 404)),
    # Tenants
    ("get", "/api/tenants/", None, S(200, 200, 200, 200, 200, 200)),
    ("get", "/api/tenants/{acme}/", None, S(200, 200, 200, 200, 200, 404)),
    ("post", "/api/tenants/", {"name": "newco"}, S(201, 403, 403, 403, 403, 403)),
    ("patch", "/api/tenants/{acme}/", {"description": "x"}, S(200, 403, 403, 403, 403, 404)),
    # Users
    ("get", "/api/users/", None, S(200, 200, 200, 200, 200, 200)),
    ("post", "/api/users/", {"username": "zed", "password": "pw-zed-123"}, S(201, 403, 403, 403, 403, 403)),
    # Memberships
    ("get", "/api/memberships/", None, S(200, 200, 200, 200, 200, 200)),
    ("post", "/api/memberships/", {"user": "acme-extra2", "tenant": "{acme}", "role": "viewer"},
     S(201, 201, 403, 403, 403, 400)),
    ("patch", "/api/memberships/{extra_membership}/", {"role": "member"}, S(200, 200, 404, 404, 404, 404)),
    ("delete", "/api/memberships/{extra_membership}/", None, S(204, 204, 404, 404, 404, 404)),
    # Tokens and identity
    ("get", "/api/tokens/", None, S(200, 200, 200, 200, 200, 200)),
    ("get", "/api/auth/whoami/", None, S(200, 200, 200, 200, 200, 200)),
]  # fmt: skip


def _fill(value, world):
    ids = {
        "vm": world["vm"].pk,
        "globex_vm": world["globex_vm"].pk,
        "host": world["host"].pk,
        "pool": world["pool"].pk,
        "volume": world["volume"].pk,
        "network": world["network"].pk,
        "acme": world["acme"].pk,
        "globex": world["globex"].pk,
        "acme_task": world["acme_task"].pk,
        "extra_membership": world["extra_membership"].pk,
    }
    if isinstance(value, str):
        for key, pk in ids.items():
            token = "{" + key + "}"
            if value == token:
                return pk
            value = value.replace(token, str(pk))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, world) for k, v in value.items()}
    return value


@pytest.mark.parametrize("actor", ACTORS)
@pytest.mark.parametrize(
    "method, url, body, expected",
    MATRIX,
    ids=[f"{m.upper()} {u} {sorted(b) if b else ''}" for m, u, b, _ in MATRIX],
)
def test_role_matrix(api, world, actor, method, url, body, expected):
    get_user_model().objects.create_user("acme-extra2", password="pw")
    user = world["users"][actor]
    if user is not None:
        api.as_user(user)
    response = getattr(api, method)(_fill(url, world), _fill(body, world), format="json")
    assert response.status_code == expected[actor], (actor, method, url, response.content[:300])


@pytest.mark.parametrize("actor", ["admin", "operator", "member", "viewer"])
def test_tenant_user_lists_only_their_tenants_objects(api, world, actor):
    client = api.as_user(world["users"][actor])
    vms = client.get("/api/vms/?limit=1000").json()
    assert vms["count"] == 3
    assert {v["tenant"]["name"] for v in vms["results"]} == {"acme"}
    tenants = client.get("/api/tenants/").json()
    assert [t["name"] for t in tenants["results"]] == ["acme"]
    tasks = client.get("/api/tasks/").json()
    assert [t["id"] for t in tasks["results"]] == [world["acme_task"].pk]
    # Filters and counts never reveal another tenant's objects.
    assert client.get(f"/api/vms/?tenant={world['globex'].pk}").json()["count"] == 0
    assert client.get("/api/vms/?tenant=globex").json()["count"] == 0
    assert client.get(f"/api/vms/?q={world['globex_vm'].uuid}").json()["count"] == 0


def test_outsider_sees_only_their_own_tenant(api, world):
    client = api.as_user(world["users"]["outsider"])
    vms = client.get("/api/vms/").json()
    assert vms["count"] == 2
    assert {v["tenant"]["name"] for v in vms["results"]} == {"globex"}
    users = {u["username"] for u in client.get("/api/users/").json()["results"]}
    assert users == {"globex-admin"}
    memberships = client.get("/api/memberships/").json()["results"]
    assert {m["user"] for m in memberships} == {"globex-admin"}


def test_tenant_admin_never_sees_another_tenant(api, world):
    client = api.as_user(world["users"]["admin"])
    names = {t["name"] for t in client.get("/api/tenants/").json()["results"]}
    assert names == {"acme"}
    users = {u["username"] for u in client.get("/api/users/").json()["results"]}
    assert "globex-admin" not in users
    assert client.get(f"/api/tenants/{world['globex'].pk}/").status_code == 404


def test_tenant_admin_cannot_remove_last_admin(api, world):
    client = api.as_user(world["users"]["admin"])
    own = Membership.objects.get(user=world["users"]["admin"])
    response = client.patch(f"/api/memberships/{own.pk}/", {"role": "viewer"}, format="json")
    assert response.status_code == 400
    own.refresh_from_db()
    assert own.role == "admin"
