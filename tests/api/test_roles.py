"""Every routed API endpoint for every role, and for a member of another tenant.

The endpoints come from the URL conf (the router and the API's own paths), so a new endpoint
without a row fails ``test_every_routed_endpoint_has_a_matrix_row``. A row: (method, the route
as the schema spells it, which object each path parameter names, body, expected status per
actor). Actors: the platform admin, acme's tenant admin / operator / member / viewer, globex's
tenant admin (another tenant), and anonymous. Another tenant's object answers 404 (it does not
exist for them); a visible object the role may not change answers 403; admin-only collections
answer 403 to tenant users. Every actor's request runs in a savepoint that is rolled back, so
one set of objects (``matrix_objects``) serves a whole row and nothing reaches a host (tasks are queued, never run).
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from drf_spectacular.generators import EndpointEnumerator

from panel.models import ApiToken, Membership, Task, Tenant
from tests.conftest import grant_host
from tuning.knobs import clean
from tuning.models import TuningPolicy
from tuning.profiles import ensure_builtins
from vms.models import Snapshot, VirtualMachine

pytestmark = pytest.mark.django_db

ACTORS = ["platform", "admin", "operator", "member", "viewer", "outsider", "anonymous"]


@pytest.fixture
def matrix_objects(synced_host, admin_user, make_member):
    """acme and globex with VMs, a task, a snapshot, users per role and a token: an object for
    every path parameter of the matrix, in acme and in another tenant."""
    acme = Tenant.objects.create(name="acme")
    globex = Tenant.objects.create(name="globex")
    vms = list(VirtualMachine.objects.filter(host=synced_host).order_by("name"))
    # acme's first VM runs, so every power action is one its state allows.
    vms.sort(key=lambda v: v.state != "running")
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[:3]]).update(tenant=acme)
    VirtualMachine.objects.filter(pk__in=[v.pk for v in vms[3:5]]).update(tenant=globex)
    for t in (acme, globex):
        grant_host(t, synced_host)
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
    vm = VirtualMachine.objects.get(pk=vms[0].pk)
    acme_task = Task.objects.create(kind="vm.start", tenant=acme, vm=vm, target="vm")
    Snapshot.objects.create(vm=vm, name="before-upgrade")
    globex_vm = vms[3]
    disk = vm.disks.select_related("volume").first()
    pool = disk.volume.pool if disk and disk.volume else synced_host.pools.first()
    globex_disk = globex_vm.disks.exclude(volume=None).first()
    token, _raw = ApiToken.issue(user=admin_user, name="matrix")
    ensure_builtins()
    acme_policy = TuningPolicy.objects.create(name="acme-pinned", tenant=acme, knobs=clean({}))
    return {
        "acme": acme,
        "globex": globex,
        "vm": vm,
        "globex_vm": globex_vm,
        "host": synced_host,
        "pool": pool,
        "volume": synced_host.pools.get(name="default").volumes.first(),
        "globex_volume": globex_disk.volume if globex_disk else None,
        "network": synced_host.networks.first(),
        "disk": disk,
        "nic": vm.nics.first(),
        "snapshot": "before-upgrade",
        "users": users,
        "extra": extra,
        "extra_membership": extra_membership,
        "acme_task": acme_task,
        "token": token,
        "builtin_policy": TuningPolicy.objects.get(name="balanced", tenant=None),
        "acme_policy": acme_policy,
    }


def S(platform, admin, operator, member, viewer, outsider, anonymous=401):
    return dict(
        zip(ACTORS, [platform, admin, operator, member, viewer, outsider, anonymous], strict=True)
    )


ALL_200 = S(200, 200, 200, 200, 200, 200)
PLATFORM = S(200, 403, 403, 403, 403, 403)  # platform admins only
SEEN = S(200, 200, 200, 200, 200, 404)  # any acme role sees it; globex does not
CHANGE = S(202, 202, 202, 403, 403, 404)  # operators and up (vm.change, vm.create, vm.delete)
POWER = S(202, 202, 202, 202, 403, 404)  # members and up (vm.power, vm.snapshot)
OPEN = S(200, 200, 200, 200, 200, 200, 200)  # no authentication


def PAST_ROLE(status, fewest):
    """The role check passes for ``fewest`` and up, then the object's state answers ``status``
    (e.g. starting a running VM): the refused roles still get 403, another tenant 404."""
    order = ["platform", "admin", "operator", "member", "viewer"]
    allowed = order[: order.index(fewest) + 1]
    return {**{a: (status if a in allowed else 403) for a in order}, "outsider": 404,
            "anonymous": 401}  # fmt: skip


def R(method, route, expected, body=None, **path):
    """A row; ``path`` names the ``matrix_objects`` entry each route parameter is filled with."""
    return (method, route, path, body, expected)


NEW_VM = {"name": "matrix-new", "tenant": "{acme}", "host": "{host}", "vcpus": 1,
          "memory_mib": 256}  # fmt: skip

MATRIX = [
    # VMs: inventory, create, edit, delete
    R("get", "/api/vms/", ALL_200),
    R("post", "/api/vms/", S(202, 202, 202, 403, 403, 400), NEW_VM),
    R("get", "/api/vms/{pk}/", SEEN, pk="vm"),
    R("get", "/api/vms/{pk}/", S(200, 404, 404, 404, 404, 200), pk="globex_vm"),
    R("patch", "/api/vms/{pk}/", S(200, 200, 200, 403, 403, 404), {"description": "x"}, pk="vm"),
    # Another tenant's id: the same 400 as a tenant that does not exist (not a 403 oracle).
    R("patch", "/api/vms/{pk}/", S(200, 400, 400, 400, 400, 404), {"tenant": "{globex}"}, pk="vm"),
    R("delete", "/api/vms/{pk}/", CHANGE, pk="vm"),
    # The VM runs: it cannot become a template, and a running VM's clone conflicts.
    R("post", "/api/vms/{pk}/template/", PAST_ROLE(400, "operator"), pk="vm"),
    R("post", "/api/vms/{pk}/clone/", PAST_ROLE(409, "operator"), {"name": "matrix-clone"},
      pk="vm"),
    # Power (start and resume: the VM already runs)
    *[R("post", f"/api/vms/{{pk}}/{verb}/", POWER, pk="vm")
      for verb in ("shutdown", "stop", "reboot", "reset", "pause")],
    R("post", "/api/vms/{pk}/start/", PAST_ROLE(400, "member"), pk="vm"),
    R("post", "/api/vms/{pk}/resume/", PAST_ROLE(400, "member"), pk="vm"),
    # Bulk: every signed-in user is answered 202; what a role may not do is refused per VM
    # inside the answer (tests/api/test_vm_grid.py holds which).
    R("post", "/api/vms/bulk/", S(202, 202, 202, 202, 202, 202), {"action": "stop", "ids": ["{vm}"]}),
    # Devices
    R("post", "/api/vms/{pk}/disks/", CHANGE, {"size_gib": 1, "pool": "{pool}"}, pk="vm"),
    R("delete", "/api/vms/{pk}/disks/{disk_id}/", CHANGE, pk="vm", disk_id="disk"),
    R("post", "/api/vms/{pk}/disks/{disk_id}/resize/", CHANGE, {"size_gib": 500},
      pk="vm", disk_id="disk"),
    R("post", "/api/vms/{pk}/nics/", CHANGE, {"network": "{network}"}, pk="vm"),
    R("delete", "/api/vms/{pk}/nics/{nic_id}/", CHANGE, pk="vm", nic_id="nic"),
    R("post", "/api/vms/{pk}/cdrom/", PAST_ROLE(400, "operator"), {"volume": None}, pk="vm"),
    # Another tenant's disk: never attached, mounted or cloned by acme (a platform admin may).
    R("post", "/api/vms/{pk}/disks/", S(400, 400, 400, 403, 403, 404),
      {"volume": "{globex_volume}"}, pk="vm"),
    R("post", "/api/vms/{pk}/cdrom/", S(400, 400, 400, 403, 403, 404),
      {"volume": "{globex_volume}"}, pk="vm"),
    R("post", "/api/vms/", S(202, 400, 400, 403, 403, 400),
      {**NEW_VM, "disks": [{"source_volume": "{globex_volume}", "clone": "full"}]}),
    # Snapshots
    R("get", "/api/vms/{pk}/snapshots/", SEEN, pk="vm"),
    R("post", "/api/vms/{pk}/snapshots/", POWER, {"name": "matrix-snap"}, pk="vm"),
    R("post", "/api/vms/{pk}/snapshots/{name}/revert/", POWER, pk="vm", name="snapshot"),
    R("delete", "/api/vms/{pk}/snapshots/{name}/", POWER, pk="vm", name="snapshot"),
    # Console and metrics
    R("get", "/api/vms/{pk}/console/", SEEN, pk="vm"),  # who is on: anyone who sees the VM
    R("post", "/api/vms/{pk}/console/", S(201, 201, 201, 201, 403, 404), pk="vm"),
    R("get", "/api/vms/{pk}/metrics/", SEEN, pk="vm"),
    # Hosts and what they hold: platform admins only
    R("get", "/api/hosts/", PLATFORM),
    R("post", "/api/hosts/", S(400, 403, 403, 403, 403, 403), {"name": "x", "uri": "bad"}),
    R("get", "/api/hosts/{pk}/", PLATFORM, pk="host"),
    R("patch", "/api/hosts/{pk}/", PLATFORM, {"description": "x"}, pk="host"),
    R("delete", "/api/hosts/{pk}/", S(204, 403, 403, 403, 403, 403), pk="host"),
    R("post", "/api/hosts/{pk}/sync/", S(202, 403, 403, 403, 403, 403), pk="host"),
    R("get", "/api/hosts/{pk}/metrics/", PLATFORM, pk="host"),
    R("get", "/api/storage-pools/", PLATFORM),
    R("get", "/api/storage-pools/{pk}/", PLATFORM, pk="pool"),
    R("patch", "/api/storage-pools/{pk}/", PLATFORM, {"description": "x"}, pk="pool"),
    R("get", "/api/storage-pools/{pk}/metrics/", PLATFORM, pk="pool"),
    R("post", "/api/storage-pools/{pk}/upload/", S(400, 403, 403, 403, 403, 403), pk="pool"),
    R("get", "/api/volumes/", PLATFORM),
    R("post", "/api/volumes/", S(202, 403, 403, 403, 403, 403),
      {"pool": "{pool}", "name": "matrix-vol.qcow2", "size_gib": 1}),
    R("get", "/api/volumes/{pk}/", PLATFORM, pk="volume"),
    R("patch", "/api/volumes/{pk}/", PLATFORM, {"description": "x"}, pk="volume"),
    # The volume is a VM's disk: refused for that, after the role check.
    R("delete", "/api/volumes/{pk}/", S(400, 403, 403, 403, 403, 403), pk="volume"),
    R("post", "/api/volumes/{pk}/resize/", S(400, 403, 403, 403, 403, 403), {"size_gib": 500},
      pk="volume"),
    R("get", "/api/networks/", PLATFORM),
    R("get", "/api/networks/{pk}/", PLATFORM, pk="network"),
    R("patch", "/api/networks/{pk}/", PLATFORM, {"description": "x"}, pk="network"),
    # Tuning: policies (the built-ins are everyone's, a tenant's are its admins' to change),
    # a VM's tuning (operators and up apply), a host's pCPUs (platform admins)
    R("get", "/api/tuning-policies/", ALL_200),
    R("post", "/api/tuning-policies/", S(201, 403, 403, 403, 403, 403), {"name": "m-pol"}),
    R("post", "/api/tuning-policies/", S(201, 201, 403, 403, 403, 400),
      {"name": "m-pol", "tenant": "{acme}"}),
    R("get", "/api/tuning-policies/{pk}/", ALL_200, pk="builtin_policy"),
    R("get", "/api/tuning-policies/{pk}/", SEEN, pk="acme_policy"),
    R("patch", "/api/tuning-policies/{pk}/", S(400, 403, 403, 403, 403, 403),
      {"description": "x"}, pk="builtin_policy"),
    R("patch", "/api/tuning-policies/{pk}/", S(200, 200, 403, 403, 403, 404),
      {"description": "x"}, pk="acme_policy"),
    R("put", "/api/tuning-policies/{pk}/", S(200, 200, 403, 403, 403, 404),
      {"name": "acme-pinned", "knobs": {"cpu": {"placement": "dedicated"}}}, pk="acme_policy"),
    R("delete", "/api/tuning-policies/{pk}/", S(204, 204, 403, 403, 403, 404), pk="acme_policy"),
    R("post", "/api/tuning-policies/{pk}/copy/", S(201, 201, 403, 403, 403, 400),
      {"name": "mine", "tenant": "{acme}"}, pk="builtin_policy"),
    R("get", "/api/vms/{pk}/tuning/", SEEN, pk="vm"),
    R("put", "/api/vms/{pk}/tuning/", S(200, 200, 200, 403, 403, 404), {"policy": "balanced"},
      pk="vm"),
    R("post", "/api/vms/{pk}/tuning/fit/", S(200, 200, 200, 200, 200, 404),
      {"policy": "balanced"}, pk="vm"),
    R("post", "/api/vms/{pk}/tuning/plan/", S(200, 200, 200, 403, 403, 404),
      {"policy": "balanced"}, pk="vm"),
    R("post", "/api/vms/{pk}/tuning/apply/", CHANGE, {"policy": "balanced"}, pk="vm"),
    R("post", "/api/tuning/fit/", S(200, 200, 200, 403, 403, 400),
      {"tenant": "{acme}", "policy": "balanced", "vcpus": 1, "memory_mib": 256}),
    R("get", "/api/tenants/{pk}/tuning-default/", SEEN, pk="acme"),
    R("put", "/api/tenants/{pk}/tuning-default/", S(200, 200, 403, 403, 403, 404),
      {"policy": "latency-critical"}, pk="acme"),
    R("get", "/api/hosts/{pk}/tuning/", PLATFORM, pk="host"),
    R("put", "/api/hosts/{pk}/tuning/", PLATFORM, {"cpus": [0]}, pk="host"),
    # Tasks
    R("get", "/api/tasks/", ALL_200),
    R("get", "/api/tasks/{pk}/", SEEN, pk="acme_task"),
    # A queued task of no particular kind: who may change the VM may cancel it (operators up).
    R("post", "/api/tasks/{pk}/cancel/", S(200, 200, 200, 403, 403, 404), pk="acme_task"),
    # Tenants
    R("get", "/api/tenants/", ALL_200),
    R("post", "/api/tenants/", S(201, 403, 403, 403, 403, 403), {"name": "newco", "max_vms": 2}),
    R("get", "/api/tenants/{pk}/", SEEN, pk="acme"),
    R("patch", "/api/tenants/{pk}/", S(200, 403, 403, 403, 403, 404), {"description": "x"},
      pk="acme"),
    R("delete", "/api/tenants/{pk}/", S(400, 403, 403, 403, 403, 404), pk="acme"),
    R("get", "/api/tenants/{pk}/usage/", SEEN, pk="acme"),
    R("get", "/api/tenants/{pk}/placement/", SEEN, pk="acme"),
    # Users: a tenant admin sees their tenants' members and creates users only in them
    R("get", "/api/users/", ALL_200),
    R("post", "/api/users/", S(201, 403, 403, 403, 403, 403),
      {"username": "zed", "password": "pw-zed-123"}),
    R("post", "/api/users/", S(201, 201, 403, 403, 403, 400),
      {"username": "zed", "password": "pw-zed-123", "tenant": "{acme}"}),
    R("get", "/api/users/{pk}/", S(200, 200, 404, 404, 404, 404), pk="extra"),
    # Memberships: a user in none of the admin's tenants is "no such user" to a tenant admin
    R("get", "/api/memberships/", ALL_200),
    R("post", "/api/memberships/", S(201, 400, 403, 403, 403, 400),
      {"user": "acme-extra2", "tenant": "{acme}", "role": "viewer"}),
    R("get", "/api/memberships/{pk}/", S(200, 200, 404, 404, 404, 404), pk="extra_membership"),
    R("patch", "/api/memberships/{pk}/", S(200, 200, 404, 404, 404, 404), {"role": "member"},
      pk="extra_membership"),
    R("delete", "/api/memberships/{pk}/", S(204, 204, 404, 404, 404, 404), pk="extra_membership"),
    # Tokens: one's own only
    R("get", "/api/tokens/", ALL_200),
    R("post", "/api/tokens/", S(201, 201, 201, 201, 201, 201), {"name": "ci"}),
    R("get", "/api/tokens/{pk}/", S(200, 404, 404, 404, 404, 404), pk="token"),
    R("delete", "/api/tokens/{pk}/", S(204, 404, 404, 404, 404, 404), pk="token"),
    # Tag colours: everyone reads them, platform admins set them
    R("get", "/api/tag-colours/", ALL_200),
    R("put", "/api/tag-colours/", PLATFORM, [{"tag": "web", "colour": "blue"}]),
    # Identity, health, the schema
    # No authenticator runs on this door, so a wrong password is DRF's 403.
    R("post", "/api/auth/token/", S(403, 403, 403, 403, 403, 403, 403),
      {"username": "acme-viewer", "password": "wrong"}),
    R("get", "/api/auth/whoami/", ALL_200),
    R("get", "/api/health/", OPEN),
    R("get", "/api/schema/", OPEN),
    R("get", "/api/docs/", OPEN),
]  # fmt: skip


def _ids(matrix_objects) -> dict:
    def pk(obj):
        return getattr(obj, "pk", obj)

    keys = ["vm", "globex_vm", "host", "pool", "volume", "globex_volume", "network", "acme",
            "globex", "acme_task", "extra", "extra_membership", "disk", "nic", "token",
            "builtin_policy", "acme_policy"]  # fmt: skip
    ids = {key: pk(matrix_objects[key]) for key in keys}
    ids["snapshot"] = matrix_objects["snapshot"]
    return ids


def _fill(value, ids):
    if isinstance(value, str):
        for key, pk in ids.items():
            token = "{" + key + "}"
            if value == token:
                return pk
            value = value.replace(token, str(pk))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def routed_endpoints() -> set[tuple[str, str]]:
    """(method, route) of every API endpoint in the URL conf, as the schema names them."""
    return {
        (method.lower(), path)
        for path, _regex, method, _view in EndpointEnumerator().get_api_endpoints()
        if path.startswith("/api/")
    }


def test_every_routed_endpoint_has_a_matrix_row():
    rows = {(method, route) for method, route, _path, _body, _expected in MATRIX}
    missing = routed_endpoints() - rows
    assert not missing, f"endpoints without a role-matrix row: {sorted(missing)}"
    stale = rows - routed_endpoints()
    assert not stale, f"matrix rows for endpoints that are not routed: {sorted(stale)}"


def _row_id(row):
    method, route, path, body, _expected = row
    return f"{method.upper()} {route} {path or ''} {sorted(body) if body else ''}".strip()


@pytest.mark.parametrize("method, route, path, body, expected", MATRIX, ids=map(_row_id, MATRIX))
def test_role_matrix(api, matrix_objects, method, route, path, body, expected):
    from django.core.cache import cache

    get_user_model().objects.create_user("acme-extra2", password="pw")
    ids = _ids(matrix_objects)
    url = route.format(**{param: ids[key] for param, key in path.items()})
    got = {}
    for actor in ACTORS:
        cache.clear()  # throttles count per process; each actor starts fresh
        user = matrix_objects["users"][actor]
        api.force_authenticate(user=user)
        with transaction.atomic():
            response = getattr(api, method)(url, _fill(body, ids), format="json")
            transaction.set_rollback(True)
        got[actor] = response.status_code
    assert got == expected, (method, url, body)


@pytest.mark.parametrize("actor", ["admin", "operator", "member", "viewer"])
def test_tenant_user_lists_only_their_tenants_objects(api, matrix_objects, actor):
    client = api.as_user(matrix_objects["users"][actor])
    vms = client.get("/api/vms/?limit=1000").json()
    assert vms["count"] == 3
    assert {v["tenant"]["name"] for v in vms["results"]} == {"acme"}
    tenants = client.get("/api/tenants/").json()
    assert [t["name"] for t in tenants["results"]] == ["acme"]
    tasks = client.get("/api/tasks/").json()
    assert [t["id"] for t in tasks["results"]] == [matrix_objects["acme_task"].pk]
    # Filters and counts never reveal another tenant's objects.
    assert client.get(f"/api/vms/?tenant={matrix_objects['globex'].pk}").json()["count"] == 0
    assert client.get("/api/vms/?tenant=globex").json()["count"] == 0
    assert client.get(f"/api/vms/?q={matrix_objects['globex_vm'].uuid}").json()["count"] == 0


def test_outsider_sees_only_their_own_tenant(api, matrix_objects):
    client = api.as_user(matrix_objects["users"]["outsider"])
    vms = client.get("/api/vms/").json()
    assert vms["count"] == 2
    assert {v["tenant"]["name"] for v in vms["results"]} == {"globex"}
    users = {u["username"] for u in client.get("/api/users/").json()["results"]}
    assert users == {"globex-admin"}
    memberships = client.get("/api/memberships/").json()["results"]
    assert {m["user"] for m in memberships} == {"globex-admin"}


def test_tenant_admin_never_sees_another_tenant(api, matrix_objects):
    client = api.as_user(matrix_objects["users"]["admin"])
    names = {t["name"] for t in client.get("/api/tenants/").json()["results"]}
    assert names == {"acme"}
    users = {u["username"] for u in client.get("/api/users/").json()["results"]}
    assert "globex-admin" not in users
    assert client.get(f"/api/tenants/{matrix_objects['globex'].pk}/").status_code == 404


def test_tenant_admin_cannot_remove_last_admin(api, matrix_objects):
    client = api.as_user(matrix_objects["users"]["admin"])
    own = Membership.objects.get(user=matrix_objects["users"]["admin"])
    response = client.patch(f"/api/memberships/{own.pk}/", {"role": "viewer"}, format="json")
    assert response.status_code == 400
    own.refresh_from_db()
    assert own.role == "admin"
