"""API per model, NetBox style: list, get, filter, the editable fields, validation."""

from __future__ import annotations

import pytest

from hosts.models import Host, Network, StoragePool, Volume
from panel.choices import TaskState
from panel.models import ApiToken, Membership, Task, Tenant
from tests.conftest import run_queued_tasks
from vms.models import VirtualMachine

pytestmark = pytest.mark.django_db

PAGE_KEYS = {"count", "next", "previous", "results"}


def _list(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == PAGE_KEYS
    return body


class TestHosts:
    def test_create_returns_201_and_queues_first_sync(self, api, admin_user, node_uri):
        client = api.as_user(admin_user)
        response = client.post("/api/hosts/", {"name": "sim-02", "uri": node_uri}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["name"] == "sim-02" and body["status"] == "new"
        assert body["task"]["kind"] == "host.sync" and body["task"]["state"] == "queued"
        run_queued_tasks()
        host = client.get(f"/api/hosts/{body['id']}/").json()
        assert host["status"] == "online" and host["simulated"] is True
        assert host["vm_count"] == 36 and len(host["numa_cells"]) == 2

    @pytest.mark.parametrize(
        "uri, fragment",
        [
            ("http://example.com/", "Unsupported scheme"),
            ("qemu://remote/system", "ssh transport"),
            ("qemu:///nowhere", "qemu:///system"),
            ("test://relative.xml", "no host part"),
            ("qemu+ssh://root@bad_host!/system", "host name"),
            ("test:///tmp/x.xml?foo=1", "Query parameters"),
            ("test:///tmp/<x>.xml", "not allowed"),
            ("", "blank"),
        ],
    )
    def test_malformed_uri_answers_400_with_field_message(self, api, admin_user, uri, fragment):
        response = api.as_user(admin_user).post(
            "/api/hosts/", {"name": "bad", "uri": uri}, format="json"
        )
        assert response.status_code == 400
        body = response.json()
        assert "uri" in body
        assert any(fragment in m for m in body["uri"]), body
        assert not Host.objects.exists()
        assert not Task.objects.exists()

    def test_name_with_xml_characters_is_refused(self, api, admin_user, node_uri):
        response = api.as_user(admin_user).post(
            "/api/hosts/", {"name": "a<b>", "uri": node_uri}, format="json"
        )
        assert response.status_code == 400 and "name" in response.json()

    def test_duplicate_uri_is_refused(self, api, admin_user, synced_host):
        response = api.as_user(admin_user).post(
            "/api/hosts/", {"name": "again", "uri": synced_host.uri}, format="json"
        )
        assert response.status_code == 400 and "uri" in response.json()

    def test_sync_action_answers_202_with_task(self, api, admin_user, synced_host):
        response = api.as_user(admin_user).post(f"/api/hosts/{synced_host.pk}/sync/")
        assert response.status_code == 202
        task = response.json()["task"]
        assert task["kind"] == "host.sync" and task["host"]["id"] == synced_host.pk

    def test_second_sync_while_first_queued_conflicts_with_409(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        first = client.post(f"/api/hosts/{synced_host.pk}/sync/").json()["task"]
        second = client.post(f"/api/hosts/{synced_host.pk}/sync/")
        assert second.status_code == 409
        assert second.json()["task"]["id"] == first["id"]
        assert "busy" in second.json()["detail"]

    def test_editable_fields_only(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        response = client.patch(
            f"/api/hosts/{synced_host.pk}/",
            {"description": "rack 4", "tags": ["prod", "dc1"]},
            format="json",
        )
        assert response.status_code == 200
        assert response.json()["description"] == "rack 4"
        assert response.json()["tags"] == ["prod", "dc1"]
        bad = client.patch(f"/api/hosts/{synced_host.pk}/", {"tags": ["no spaces"]}, format="json")
        assert bad.status_code == 400 and "tags" in bad.json()

    def test_filter_by_status_and_name(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        assert _list(client, "/api/hosts/", status="online")["count"] == 1
        assert _list(client, "/api/hosts/", status="error")["count"] == 0
        assert _list(client, "/api/hosts/", name="SIM-01")["count"] == 1

    def test_delete_forgets_host(self, api, admin_user, synced_host):
        response = api.as_user(admin_user).delete(f"/api/hosts/{synced_host.pk}/")
        assert response.status_code == 204
        assert not VirtualMachine.objects.exists()


class TestVMs:
    def test_list_shape_and_fields(self, api, admin_user, synced_host):
        body = _list(api.as_user(admin_user), "/api/vms/")
        assert body["count"] == 36
        vm = body["results"][0]
        for field in ("id", "name", "uuid", "host", "tenant", "state", "vcpus", "memory_mib"):
            assert field in vm
        assert vm["host"] == {"id": synced_host.pk, "name": "sim-01"}
        assert isinstance(vm["disks"], list) and isinstance(vm["nics"], list)
        assert vm["state"] in {"running", "paused", "shutoff", "crashed", "pmsuspended", "unknown"}

    def test_filters_host_tenant_name_state(self, api, admin_user, synced_host, tenant):
        client = api.as_user(admin_user)
        some = VirtualMachine.objects.filter(host=synced_host).order_by("name")[:3]
        VirtualMachine.objects.filter(pk__in=[v.pk for v in some]).update(tenant=tenant)
        assert _list(client, "/api/vms/", host=synced_host.pk)["count"] == 36
        assert _list(client, "/api/vms/", tenant=tenant.pk)["count"] == 3
        assert _list(client, "/api/vms/", tenant="acme")["count"] == 3
        name = some[0].name
        assert [v["name"] for v in _list(client, "/api/vms/", name=name)["results"]] == [name]
        running = VirtualMachine.objects.filter(state="running").count()
        assert _list(client, "/api/vms/", state="running")["count"] == running
        both = VirtualMachine.objects.filter(state__in=["running", "paused"]).count()
        assert client.get("/api/vms/?state=running&state=paused").json()["count"] == both
        assert client.get("/api/vms/?state=bogus").status_code == 400

    def test_search_by_uuid_and_mac(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        vm = VirtualMachine.objects.filter(nics__isnull=False).first()
        mac = vm.nics.first().mac
        assert [v["id"] for v in _list(client, "/api/vms/", q=mac)["results"]] == [vm.pk]
        assert [v["id"] for v in _list(client, "/api/vms/", q=str(vm.uuid))["results"]] == [vm.pk]
        assert vm.pk in [v["id"] for v in _list(client, "/api/vms/", q=str(vm.uuid)[:8])["results"]]

    def test_gone_vms_hidden_unless_asked(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        VirtualMachine.objects.filter(pk=VirtualMachine.objects.first().pk).update(gone=True)
        assert _list(client, "/api/vms/")["count"] == 35
        assert _list(client, "/api/vms/", gone="true")["count"] == 1

    def test_patch_editable_fields_and_readonly_ignored(self, api, admin_user, synced_host, tenant):
        client = api.as_user(admin_user)
        vm = VirtualMachine.objects.first()
        other_state = "paused" if vm.state != "paused" else "running"
        response = client.patch(
            f"/api/vms/{vm.pk}/",
            {
                "description": "web tier",
                "tags": ["web"],
                "tenant": tenant.pk,
                "state": other_state,
                "uuid": "00000000-0000-4000-8000-000000000000",
            },
            format="json",
        )
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["description"] == "web tier" and body["tags"] == ["web"]
        assert body["tenant"]["id"] == tenant.pk
        vm.refresh_from_db()
        assert vm.state != other_state
        assert str(vm.uuid) != "00000000-0000-4000-8000-000000000000"

    def test_patch_rejects_bad_tags_with_field_message(self, api, admin_user, synced_host):
        vm = VirtualMachine.objects.first()
        response = api.as_user(admin_user).patch(
            f"/api/vms/{vm.pk}/", {"tags": ["<script>"]}, format="json"
        )
        assert response.status_code == 400
        assert "tags" in response.json()

    def test_create_without_fields_is_400_with_field_messages(self, api, admin_user):
        response = api.as_user(admin_user).post("/api/vms/", {}, format="json")
        assert response.status_code == 400
        assert {"name", "tenant", "vcpus", "memory_mib"} <= set(response.json())


class TestStorageAndNetworks:
    def test_pools_list_filter_and_edit(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        body = _list(client, "/api/storage-pools/", host=synced_host.pk)
        assert body["count"] == StoragePool.objects.filter(host=synced_host).count()
        lvm = _list(client, "/api/storage-pools/", pool_type="logical")["results"]
        assert [p["name"] for p in lvm] == ["vg0"]
        pool = StoragePool.objects.get(name="default")
        response = client.patch(
            f"/api/storage-pools/{pool.pk}/",
            {"description": "fast ssd", "capacity": 1},
            format="json",
        )
        assert response.status_code == 200 and response.json()["description"] == "fast ssd"
        pool.refresh_from_db()
        assert pool.capacity != 1

    def test_volumes_list_filter(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        qcow2 = Volume.objects.filter(format="qcow2").count()
        assert _list(client, "/api/volumes/", image_format="qcow2")["count"] == qcow2
        pool = StoragePool.objects.get(name="vg0")
        assert _list(client, "/api/volumes/", pool=pool.pk)["count"] == pool.volumes.count()
        vol = _list(client, "/api/volumes/", host=synced_host.pk)["results"][0]
        assert vol["host"] == {"id": synced_host.pk, "name": "sim-01"}

    def test_networks_list_filter(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        assert (
            _list(client, "/api/networks/", host=synced_host.pk)["count"] == Network.objects.count()
        )
        lan = _list(client, "/api/networks/", name="lan")["results"][0]
        assert lan["forward_mode"] == "bridge"
        assert client.post("/api/networks/", {}, format="json").status_code == 405


class TestTasks:
    def test_task_shape_and_filters(self, api, admin_user, synced_host):
        client = api.as_user(admin_user)
        body = _list(client, "/api/tasks/", host=synced_host.pk)
        task = body["results"][0]
        for field in (
            "id", "kind", "state", "progress", "vm", "host", "user", "tenant",
            "created", "started", "finished", "error", "log",
        ):  # fmt: skip
            assert field in task
        assert task["state"] == "succeeded" and task["progress"] == 100
        assert any("Synced" in line["message"] for line in task["log"])
        assert _list(client, "/api/tasks/", state="failed")["count"] == 0
        assert _list(client, "/api/tasks/", state="succeeded")["count"] == 1


class TestTenancyEndpoints:
    def test_tenant_create_and_validation(self, api, admin_user):
        client = api.as_user(admin_user)
        response = client.post("/api/tenants/", {"name": "initech"}, format="json")
        assert response.status_code == 201 and response.json()["name"] == "initech"
        dup = client.post("/api/tenants/", {"name": "initech"}, format="json")
        assert dup.status_code == 400 and "name" in dup.json()
        bad = client.post("/api/tenants/", {"name": "a b"}, format="json")
        assert bad.status_code == 400 and "name" in bad.json()

    def test_user_and_membership_create(self, api, admin_user, tenant):
        client = api.as_user(admin_user)
        response = client.post(
            "/api/users/", {"username": "dana", "password": "s3cret-pass"}, format="json"
        )
        assert response.status_code == 201
        assert "password" not in response.json()
        response = client.post(
            "/api/memberships/",
            {"user": "dana", "tenant": tenant.pk, "role": "operator"},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert Membership.objects.get(user__username="dana").role == "operator"
        dup = client.post(
            "/api/memberships/",
            {"user": "dana", "tenant": tenant.pk, "role": "viewer"},
            format="json",
        )
        assert dup.status_code == 400 and "user" in dup.json()
        bad_role = client.post(
            "/api/memberships/", {"user": "dana", "tenant": tenant.pk, "role": "god"}, format="json"
        )
        assert bad_role.status_code == 400 and "role" in bad_role.json()

    def test_default_tenant_cannot_be_deleted(self, api, admin_user):
        default = Tenant.get_default()
        response = api.as_user(admin_user).delete(f"/api/tenants/{default.pk}/")
        assert response.status_code == 400
        assert Tenant.objects.filter(pk=default.pk).exists()


class TestTokens:
    def test_obtain_token_and_use_it(self, api, admin_user):
        response = api.post(
            "/api/auth/token/",
            {"username": "root-admin", "password": "pw-admin", "name": "ci"},
            format="json",
        )
        assert response.status_code == 201
        raw = response.json()["token"]
        stored = ApiToken.objects.get()
        assert raw not in stored.key_hash and stored.name == "ci"
        api.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        assert api.get("/api/auth/whoami/").json()["username"] == "root-admin"

    def test_wrong_password_gets_no_token(self, api, admin_user):
        response = api.post(
            "/api/auth/token/", {"username": "root-admin", "password": "nope"}, format="json"
        )
        assert response.status_code in (401, 403)
        assert not ApiToken.objects.exists()

    def test_revoked_token_stops_working(self, api, admin_user):
        token, raw = ApiToken.issue(user=admin_user, name="temp")
        api.credentials(HTTP_AUTHORIZATION=f"Token {raw}")
        assert api.get("/api/tokens/").json()["count"] == 1
        assert api.delete(f"/api/tokens/{token.pk}/").status_code == 204
        assert api.get("/api/vms/").status_code == 401

    def test_tokens_are_listed_only_to_their_owner(self, api, admin_user, tenant, make_member):
        other = make_member(tenant, "viewer")
        token, _ = ApiToken.issue(user=admin_user, name="mine")
        client = api.as_user(other)
        assert client.get("/api/tokens/").json()["count"] == 0
        assert client.delete(f"/api/tokens/{token.pk}/").status_code == 404
        assert ApiToken.objects.filter(pk=token.pk).exists()

    def test_garbage_token_is_401(self, api, db):
        api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
        assert api.get("/api/vms/").status_code == 401


class TestSchema:
    def test_openapi_schema_lists_every_collection(self, api, admin_user):
        response = api.as_user(admin_user).get("/api/schema/?format=json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        for path in (
            "/api/hosts/", "/api/hosts/{id}/sync/", "/api/storage-pools/", "/api/volumes/",
            "/api/networks/", "/api/vms/", "/api/tasks/", "/api/tenants/", "/api/users/",
            "/api/memberships/", "/api/auth/token/", "/api/tokens/",
        ):  # fmt: skip
            assert path in paths, path

    def test_docs_served_without_cdn(self, client, admin_user):
        client.force_login(admin_user)
        response = client.get("/api/docs/")
        assert response.status_code == 200
        html = response.content.decode()
        assert "swagger" in html.lower()
        assert "cdn" not in html.lower() and "unpkg" not in html.lower()


def test_task_engine_state_is_queued_before_worker(api, admin_user, node_uri):
    api.as_user(admin_user).post("/api/hosts/", {"name": "h", "uri": node_uri}, format="json")
    assert Task.objects.get().state == TaskState.QUEUED
