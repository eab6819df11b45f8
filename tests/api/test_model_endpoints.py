"""Every API model endpoint through the generic base (tests/api/base.py): list, get, filters,
editable and read-only fields, and who may read and change it."""

from __future__ import annotations

import pytest

from tests.api.base import EVERY_ACME_ROLE, PLATFORM_ONLY, ModelEndpointTests, per_actor

pytestmark = pytest.mark.django_db

ALL_LIST = per_actor(200, 200, 200, 200, 200, 200)
OPERATORS_UP = per_actor(200, 200, 200, 403, 403, 404)
ACME_ADMINS = per_actor(200, 200, 404, 404, 404, 404)
OWN_ONLY = per_actor(200, 404, 404, 404, 404, 404)


def host_is(key="host"):
    return lambda row, t: row[key]["id"] == t["host"].pk


class TestHosts(ModelEndpointTests):
    url = "/api/hosts/"
    fields = {
        "id", "name", "uri", "description", "tags", "status", "last_error", "last_seen",
        "last_synced", "simulated", "ssh_address", "ssh_port", "ssh_user", "ssh_host_key",
        "hostname", "hypervisor", "hypervisor_version", "libvirt_version", "arch", "cpu_model",
        "cpu_vendor", "cpu_mhz", "sockets", "cores", "threads", "cpus", "memory_mib",
        "numa_cells", "virt_types", "kvm_note", "lock", "vm_count", "created", "updated",
    }  # fmt: skip
    filters = {
        "name": ("SIM-01", lambda row, t: row["name"] == "sim-01"),
        "q": ("im-0", lambda row, t: "im-0" in row["name"]),
        "status": ("online", lambda row, t: row["status"] == "online"),
        "simulated": ("true", lambda row, t: row["simulated"] is True),
    }
    editable = {"description": "rack 4", "tags": ["lab", "rack-4"]}
    read_only = {"name": "renamed", "uri": "test:///tmp/other.xml", "status": "error",
                 "cpus": 999, "vm_count": 0}  # fmt: skip
    get_status = PLATFORM_ONLY
    patch_status = PLATFORM_ONLY

    def acme_object(self, t):
        return t["host"]


class TestStoragePools(ModelEndpointTests):
    url = "/api/storage-pools/"
    fields = {
        "id", "name", "host", "uuid", "pool_type", "path", "source_name", "state", "autostart",
        "capacity", "allocation", "available", "used_percent", "description", "tags", "gone",
        "gone_at", "synced_at",
    }  # fmt: skip
    filters = {
        "host": (lambda t: t["host"].pk, host_is()),
        "name": ("DEFAULT", lambda row, t: row["name"] == "default"),
        "pool_type": ("logical", lambda row, t: row["pool_type"] == "logical"),
        "state": ("active", lambda row, t: row["state"] == "active"),
        "gone": ("false", lambda row, t: row["gone"] is False),
    }
    editable = {"description": "fast disks", "tags": ["ssd"]}
    read_only = {"name": "renamed", "pool_type": "logical", "capacity": 1, "gone": True}
    get_status = PLATFORM_ONLY
    patch_status = PLATFORM_ONLY

    def acme_object(self, t):
        return t["host"].pools.get(name="default")


class TestVolumes(ModelEndpointTests):
    url = "/api/volumes/"
    fields = {
        "id", "name", "pool", "host", "key", "path", "vol_type", "format", "capacity",
        "allocation", "backing_path", "backing_depth", "lock", "tenant", "published",
        "description", "tags", "gone", "gone_at", "synced_at",
    }  # fmt: skip
    filters = {
        "host": (lambda t: t["host"].pk, host_is()),
        "pool": (lambda t: t["host"].pools.get(name="default").pk,
                 lambda row, t: row["pool"]["name"] == "default"),
        "name": ("DEBIAN-12.ISO", lambda row, t: row["name"] == "debian-12.iso"),
        "q": ("base", lambda row, t: "base" in row["name"]),
        "image_format": ("qcow2", lambda row, t: row["format"] == "qcow2"),
        "gone": ("false", lambda row, t: row["gone"] is False),
    }  # fmt: skip
    editable = {"description": "golden image", "tags": ["image"], "published": True,
                "tenant": lambda t: t["acme"].pk}  # fmt: skip
    read_only = {"name": "renamed.qcow2", "format": "raw", "capacity": 1, "path": "/etc/passwd"}
    get_status = PLATFORM_ONLY
    patch_status = PLATFORM_ONLY

    def acme_object(self, t):
        return t["host"].pools.get(name="default").volumes.get(name="debian-12-base.qcow2")


class TestNetworks(ModelEndpointTests):
    url = "/api/networks/"
    fields = {
        "id", "name", "host", "uuid", "forward_mode", "bridge", "ip_address", "ip_prefix",
        "active", "autostart", "persistent", "description", "tags", "gone", "gone_at",
        "synced_at",
    }  # fmt: skip
    filters = {
        "host": (lambda t: t["host"].pk, host_is()),
        "name": ("LAN", lambda row, t: row["name"] == "lan"),
        "active": ("true", lambda row, t: row["active"] is True),
        "gone": ("false", lambda row, t: row["gone"] is False),
    }
    editable = {"description": "office LAN", "tags": ["office"]}
    read_only = {"name": "renamed", "bridge": "br-evil", "active": False}
    get_status = PLATFORM_ONLY
    patch_status = PLATFORM_ONLY

    def acme_object(self, t):
        return t["host"].networks.get(name="lan")


class TestVirtualMachines(ModelEndpointTests):
    url = "/api/vms/"
    fields = {
        "id", "name", "uuid", "host", "tenant", "state", "state_reason", "desired_state",
        "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "virt_type", "os_type", "arch",
        "machine", "firmware", "cpu_mode", "cpu_model", "boot_devices", "autostart",
        "persistent", "is_template", "lifecycle", "description", "tags", "gone", "gone_at",
        "synced_at", "lock", "disks", "nics", "created", "updated", "notes",
        "cpu_percent", "memory_percent", "started_at", "ip_addresses", "sampled_at",
    }  # fmt: skip
    filters = {
        "host": (lambda t: t["host"].pk, host_is()),
        "tenant": (lambda t: t["acme"].pk, lambda row, t: row["tenant"]["name"] == "acme"),
        "name": (lambda t: t["acme_vm"].name.upper(),
                 lambda row, t: row["id"] == t["acme_vm"].pk),
        "q": (lambda t: str(t["acme_vm"].uuid), lambda row, t: row["id"] == t["acme_vm"].pk),
        "state": ("running", lambda row, t: row["state"] == "running"),
        "is_template": ("false", lambda row, t: row["is_template"] is False),
        "gone": ("false", lambda row, t: row["gone"] is False),
    }  # fmt: skip
    editable = {"description": "billing front end", "tags": ["billing"]}
    read_only = {"name": "renamed", "uuid": "00000000-0000-0000-0000-000000000000",
                 "state": lambda t: "paused" if t["acme_vm"].state != "paused" else "running",
                 "is_template": True, "lifecycle": "deleting",
                 "gone": True}  # fmt: skip
    get_status = EVERY_ACME_ROLE
    patch_status = OPERATORS_UP

    def acme_object(self, t):
        return t["acme_vm"]

    def globex_object(self, t):
        return t["globex_vm"]


class TestTasks(ModelEndpointTests):
    url = "/api/tasks/"
    fields = {
        "id", "kind", "title", "state", "progress", "target", "vm", "host", "destination_host", "user", "tenant",
        "created", "started", "finished", "error", "result", "log", "cancel_requested",
        "wait_until",
    }  # fmt: skip
    filters = {
        "vm": (lambda t: t["acme_vm"].pk, lambda row, t: row["vm"]["id"] == t["acme_vm"].pk),
        "tenant": (lambda t: t["acme"].pk, lambda row, t: row["tenant"]["name"] == "acme"),
        "host": (lambda t: t["host"].pk, host_is()),
        "state": ("queued", lambda row, t: row["state"] == "queued"),
        "kind": ("vm.start", lambda row, t: row["kind"] == "vm.start"),
    }
    get_status = EVERY_ACME_ROLE
    list_status = ALL_LIST

    def acme_object(self, t):
        return t["acme_task"]

    def globex_object(self, t):
        return t["globex_task"]

    def test_tasks_are_read_only(self, api, tenancy):
        client = self.client(api, tenancy, "platform")
        url = self.detail(tenancy["acme_task"])
        assert client.patch(url, {"state": "failed"}, format="json").status_code == 405
        assert client.delete(url).status_code == 405


class TestTenants(ModelEndpointTests):
    url = "/api/tenants/"
    fields = {
        "id", "name", "description", "created", "vm_count", "max_vms", "max_vcpus",
        "max_memory_mib", "max_disk_gib", "allowed_hosts", "allowed_pools", "allowed_networks",
    }  # fmt: skip
    filters = {
        "name": ("ACME", lambda row, t: row["name"] == "acme"),
        "q": ("lob", lambda row, t: row["name"] == "globex"),
    }
    editable = {"description": "the customer", "max_vms": 5, "max_memory_mib": 8192}
    read_only = {"name": "renamed", "vm_count": 0}
    get_status = EVERY_ACME_ROLE
    patch_status = per_actor(200, 403, 403, 403, 403, 404)
    list_status = ALL_LIST

    def acme_object(self, t):
        return t["acme"]

    def globex_object(self, t):
        return t["globex"]


class TestUsers(ModelEndpointTests):
    url = "/api/users/"
    fields = {"id", "username", "email", "is_superuser", "is_active", "date_joined"}
    filters = {
        "username": ("ACME-EXTRA", lambda row, t: row["username"] == "acme-extra"),
        "is_superuser": ("true", lambda row, t: row["is_superuser"] is True),
    }
    get_status = ACME_ADMINS
    list_status = ALL_LIST

    def acme_object(self, t):
        return t["extra"]

    def globex_object(self, t):
        return t["users"]["outsider"]

    def test_users_are_not_edited_here(self, api, tenancy):
        client = self.client(api, tenancy, "platform")
        url = self.detail(tenancy["extra"])
        assert client.patch(url, {"username": "x"}, format="json").status_code == 405
        assert client.delete(url).status_code == 405

    def test_email_and_superuser_flag_are_for_platform_admins(self, api, tenancy):
        body = self.client(api, tenancy, "admin").get(self.detail(tenancy["extra"])).json()
        assert set(body) == self.fields - {"email", "is_superuser"}


class TestMemberships(ModelEndpointTests):
    url = "/api/memberships/"
    fields = {"id", "user", "tenant", "role", "created"}
    filters = {
        "tenant": (lambda t: t["acme"].pk, lambda row, t: row["tenant"] == t["acme"].pk),
        "user": ("ACME-EXTRA", lambda row, t: row["user"] == "acme-extra"),
        "role": ("viewer", lambda row, t: row["role"] == "viewer"),
    }
    editable = {"role": "member"}
    read_only = {"user": "acme-admin", "tenant": lambda t: t["globex"].pk}
    get_status = ACME_ADMINS
    patch_status = ACME_ADMINS
    list_status = ALL_LIST

    def acme_object(self, t):
        return t["extra_membership"]

    def globex_object(self, t):
        return t["globex_membership"]


class TestTokens(ModelEndpointTests):
    url = "/api/tokens/"
    fields = {"id", "name", "prefix", "created", "last_used", "expires"}
    get_status = OWN_ONLY
    list_status = ALL_LIST

    def acme_object(self, t):
        return t["token"]

    def test_tokens_are_not_edited(self, api, tenancy):
        client = self.client(api, tenancy, "platform")
        response = client.patch(self.detail(tenancy["token"]), {"name": "x"}, format="json")
        assert response.status_code == 405
