"""Malformed input an attacker or a careless client sends is a 400 (or a 404 for a path id that
cannot exist), never a server error: huge integers, odd digits, NUL bytes, deep JSON."""

from __future__ import annotations

import json

import pytest

from panel.models import Tenant
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

HUGE = "99999999999999999999"


@pytest.fixture
def acme_vm_users(synced_host, admin_user, tenant, make_member):
    """acme's one VM (and its first disk), the platform admin and an acme operator and viewer."""
    vm = VirtualMachine.objects.filter(host=synced_host).order_by("name").first()
    vm.tenant = tenant
    vm.save(update_fields=["tenant"])
    return {
        "host": synced_host,
        "vm": vm,
        "disk": vm.disks.first(),
        "tenant": tenant,
        "admin": admin_user,
        "operator": make_member(tenant, "operator", "acme-operator"),
        "viewer": make_member(tenant, "viewer", "acme-viewer"),
    }


def test_tenant_create_with_documented_quota_fields(api, acme_vm_users):
    body = {"name": "quota-co", "max_vms": 3, "max_vcpus": 8, "max_memory_mib": 4096,
            "max_disk_gib": 100}  # fmt: skip
    for actor in ("operator", "viewer"):
        response = api.as_user(acme_vm_users[actor]).post("/api/tenants/", body, format="json")
        assert response.status_code == 403
    response = api.as_user(acme_vm_users["admin"]).post("/api/tenants/", body, format="json")
    assert response.status_code == 201, response.content
    created = Tenant.objects.get(name="quota-co")
    assert (created.max_vms, created.max_memory_mib) == (3, 4096)
    too_big = {**body, "name": "huge-co", "max_memory_mib": 2**63}
    response = api.as_user(acme_vm_users["admin"]).post("/api/tenants/", too_big, format="json")
    assert response.status_code == 400 and "max_memory_mib" in response.json()


@pytest.mark.parametrize(
    "url",
    [
        "/api/vms/?host=1e20", f"/api/vms/?host={HUGE}", "/api/vms/?host=-1",
        f"/api/tasks/?vm={HUGE}", f"/api/tasks/?tenant={HUGE}", "/api/tasks/?host=1e20",
        f"/api/storage-pools/?host={HUGE}", f"/api/volumes/?pool={HUGE}",
        f"/api/volumes/?host={HUGE}", f"/api/networks/?host={HUGE}",
        f"/api/memberships/?tenant={HUGE}", "/api/vms/?tenant=³",
    ],
)  # fmt: skip
def test_huge_or_odd_number_filters_are_400_or_empty(api, acme_vm_users, url):
    response = api.as_user(acme_vm_users["admin"]).get(url)
    assert response.status_code in (200, 400), response.content
    if response.status_code == 200:
        assert response.json()["count"] == 0


def test_superscript_digit_tenant_filter_is_a_name(api, acme_vm_users):
    # "³".isdigit() is true but int("³") fails: it is looked up as a (missing) tenant name.
    response = api.as_user(acme_vm_users["admin"]).get("/api/vms/?tenant=³")
    assert response.status_code == 200 and response.json()["count"] == 0


@pytest.mark.parametrize(
    "url",
    [
        f"/api/vms/{HUGE}/", f"/api/hosts/{HUGE}/", f"/api/tasks/{HUGE}/",
        f"/api/tenants/{HUGE}/", f"/api/users/{HUGE}/", f"/api/memberships/{HUGE}/",
        f"/api/tokens/{HUGE}/", f"/api/volumes/{HUGE}/", f"/api/vms/{HUGE}/metrics/",
        "/api/vms/9223372036854775808/", "/api/vms/³/",
    ],
)  # fmt: skip
def test_detail_id_beyond_64_bits_is_404(api, acme_vm_users, url):
    assert api.as_user(acme_vm_users["admin"]).get(url).status_code == 404


def test_device_ids_beyond_64_bits_are_404(api, acme_vm_users):
    client = api.as_user(acme_vm_users["admin"])
    vm = acme_vm_users["vm"].pk
    assert client.delete(f"/api/vms/{vm}/disks/{HUGE}/").status_code == 404
    assert client.post(f"/api/vms/{vm}/disks/{HUGE}/resize/", {"size_gib": 1}).status_code == 404
    assert client.delete(f"/api/vms/{vm}/nics/{HUGE}/").status_code == 404


def test_ui_detail_id_beyond_64_bits_is_404(client, acme_vm_users):
    client.force_login(acme_vm_users["admin"])
    for url in (f"/vms/{HUGE}/", f"/hosts/{HUGE}/", f"/tasks/{HUGE}/", f"/tenants/{HUGE}/"):
        assert client.get(url).status_code == 404, url


def _create_body(acme_vm_users, **over):
    return {"name": "bad-input", "tenant": acme_vm_users["tenant"].pk, "host": acme_vm_users["host"].pk,
            "vcpus": 1, "memory_mib": 256, **over}  # fmt: skip


@pytest.mark.parametrize(
    "over, field",
    [
        ({"max_memory_mib": 2**63}, "max_memory_mib"),
        ({"memory_mib": 2**64}, "memory_mib"),
        ({"vcpus": 10**30}, "vcpus"),
        ({"tenant": 10**20}, "tenant"),
        ({"host": 10**20}, "host"),
        ({"cdrom": 10**20}, "cdrom"),
        ({"disks": [{"source_volume": 10**20}]}, "disks"),
        ({"disks": [{"size_gib": 1e308, "pool": 1}]}, "disks"),
        ({"nics": [{"network": 10**20}]}, "nics"),
    ],
)
def test_vm_create_numbers_beyond_bounds_are_400(api, acme_vm_users, over, field):
    response = api.as_user(acme_vm_users["admin"]).post(
        "/api/vms/", _create_body(acme_vm_users, **over), format="json"
    )
    assert response.status_code == 400, response.content
    assert any(key.startswith(field) for key in response.json()), response.json()


def test_disk_resize_to_1e308_is_400(api, acme_vm_users):
    client = api.as_user(acme_vm_users["admin"])
    url = f"/api/vms/{acme_vm_users['vm'].pk}/disks/{acme_vm_users['disk'].pk}/resize/"
    for size in (1e308, 10**30):
        response = client.post(url, {"size_gib": size}, format="json")
        assert response.status_code == 400 and "size_gib" in response.json()
    volume = acme_vm_users["disk"].volume
    if volume is not None:
        response = client.post(f"/api/volumes/{volume.pk}/resize/", {"size_gib": 1e308})
        assert response.status_code == 400 and "size_gib" in response.json()


def test_device_attach_ids_beyond_64_bits_are_400(api, acme_vm_users):
    client = api.as_user(acme_vm_users["admin"])
    vm = acme_vm_users["vm"].pk
    for url, body in [
        (f"/api/vms/{vm}/disks/", {"volume": 10**20}),
        (f"/api/vms/{vm}/nics/", {"network": 10**20}),
        (f"/api/vms/{vm}/cdrom/", {"volume": 10**20}),
        ("/api/volumes/", {"pool": 10**20, "name": "x", "size_gib": 1}),
        ("/api/memberships/", {"user": "acme-viewer", "tenant": 10**20, "role": "viewer"}),
    ]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, (url, response.content)


@pytest.mark.parametrize("url", ["/api/auth/token/", "/api/vms/", "/api/tenants/"])
def test_deeply_nested_json_is_400(api, acme_vm_users, url):
    body = "[" * 100_000 + "]" * 100_000
    if url != "/api/auth/token/":
        api.as_user(acme_vm_users["admin"])
    response = api.post(url, body, content_type="application/json")
    assert response.status_code == 400
    if url != "/api/auth/token/":  # there the throttle reads the body first: a plain 400
        assert "nested" in response.json()["detail"]


def test_unauthenticated_deep_json_on_token_endpoint_is_400(api):
    body = '{"username": ' + "{" * 50_000 + "}" * 50_000 + "}"
    response = api.post("/api/auth/token/", body, content_type="application/json")
    assert response.status_code == 400


def test_ordinary_json_still_parses(api, acme_vm_users):
    body = json.dumps({"description": 'brackets "[{" in a string are text'})
    response = api.as_user(acme_vm_users["admin"]).patch(
        f"/api/vms/{acme_vm_users['vm'].pk}/", body, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["description"] == 'brackets "[{" in a string are text'


@pytest.mark.parametrize(
    "method, url, body",
    [
        ("post", "/api/memberships/", {"user": "a\x00b", "tenant": "{tenant}", "role": "viewer"}),
        ("get", "/api/memberships/?user=a%00b", None),
        ("get", "/api/vms/?q=a%00b", None),
        ("get", "/api/vms/?name=a%00b", None),
        ("get", "/api/vms/?tenant=a%00b", None),
        ("get", "/api/users/?username=a%00b", None),
        ("get", "/api/tenants/?q=a%00b", None),
        ("get", "/api/tasks/?kind=a%00b", None),
        ("get", "/api/volumes/?q=a%00b", None),
        ("post", "/api/tenants/", {"name": "a\x00b"}),
        ("post", "/api/auth/token/", {"username": "a\x00b", "password": "x"}),
        ("patch", "/api/vms/{vm}/", {"description": "a\x00b"}),
        ("post", "/api/vms/{vm}/snapshots/", {"name": "a\x00b"}),
    ],
)
def test_nul_bytes_are_400_with_a_field_message(api, acme_vm_users, method, url, body):
    url = url.replace("{vm}", str(acme_vm_users["vm"].pk))
    if body and body.get("tenant") == "{tenant}":
        body["tenant"] = acme_vm_users["tenant"].pk
    response = getattr(api.as_user(acme_vm_users["admin"]), method)(url, body, format="json")
    assert response.status_code == 400, response.content
    detail = response.json()
    assert any("ull character" in str(v) for v in detail.values()), detail


def test_nul_byte_in_snapshot_path_is_404(api, acme_vm_users):
    client = api.as_user(acme_vm_users["admin"])
    response = client.post(f"/api/vms/{acme_vm_users['vm'].pk}/snapshots/a%00b/revert/")
    assert response.status_code == 404


def test_ui_search_with_nul_byte_is_400(client, acme_vm_users):
    client.force_login(acme_vm_users["admin"])
    response = client.get("/search/?q=a%00b")
    assert response.status_code == 400
    response = client.get("/vms/?q=a%00b")
    assert response.status_code in (200, 400)


def test_vm_tenant_change_does_not_reveal_whether_a_tenant_exists(api, acme_vm_users, other_tenant):
    client = api.as_user(acme_vm_users["operator"])
    url = f"/api/vms/{acme_vm_users['vm'].pk}/"
    missing = client.patch(url, {"tenant": 999999}, format="json")
    hidden = client.patch(url, {"tenant": other_tenant.pk}, format="json")
    assert missing.status_code == hidden.status_code == 400
    assert missing.json() == hidden.json()
    acme_vm_users["vm"].refresh_from_db()
    assert acme_vm_users["vm"].tenant == acme_vm_users["tenant"]


def test_snapshots_schema_says_list_like_the_endpoint(api, acme_vm_users):
    schema = api.as_user(acme_vm_users["admin"]).get("/api/schema/?format=json").json()
    get = schema["paths"]["/api/vms/{id}/snapshots/"]["get"]
    body = get["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["type"] == "array"
    assert "parameters" not in get or not {p["name"] for p in get["parameters"]} & {
        "limit",
        "offset",
    }
    listed = api.get(f"/api/vms/{acme_vm_users['vm'].pk}/snapshots/")
    assert listed.status_code == 200 and isinstance(listed.json(), list)


def test_every_filter_set_uses_the_bounded_base():
    """A new filter set or number filter that skips the bounds fails here, not in production."""
    import django_filters

    import hosts.filtersets
    import panel.filtersets
    import vms.filtersets
    from panel.filtersets import IdFilter, PaddockFilterSet

    modules = (hosts.filtersets, panel.filtersets, vms.filtersets)
    sets = [
        obj
        for module in modules
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, django_filters.FilterSet)
        and obj.__module__ == module.__name__ and obj is not PaddockFilterSet
    ]  # fmt: skip
    assert len(sets) >= 8
    for filterset in sets:
        assert issubclass(filterset, PaddockFilterSet), filterset
        for name, flt in filterset.base_filters.items():
            if isinstance(flt, django_filters.NumberFilter):
                assert isinstance(flt, IdFilter), (filterset, name)
