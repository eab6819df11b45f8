"""Query-count baselines: every API list costs the same number of queries with 2 and with 20
objects (and the VM list at 10 and at 1,000). The UI's list pages: tests/ui/test_query_counts.py.

``Inventory`` grows each kind of object to a given number, each with the relations its list
shows (a VM's disks, volumes and NICs, a task's log, a tenant's grants and VMs...), so a list
that reads a relation per row shows as a count that grows.
"""

from __future__ import annotations

import itertools
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from hosts.models import Host, Network, StoragePool, Volume
from panel.models import ApiToken, Membership, Task, TaskLogEntry, Tenant
from tests.api.test_roles import routed_endpoints
from tuning.models import TuningPolicy
from vms.models import Disk, Nic, Snapshot, VirtualMachine

pytestmark = pytest.mark.django_db


def _populate(count: int, host: Host, tenant: Tenant) -> None:
    vms = VirtualMachine.objects.bulk_create(
        [
            VirtualMachine(host=host, tenant=tenant, name=f"vm-{i:05d}", uuid=uuid.uuid4())
            for i in range(count)
        ]
    )
    Disk.objects.bulk_create(
        [Disk(vm=vm, target=t, source=f"/img/{vm.name}-{t}") for vm in vms for t in ("vda", "vdb")]
    )
    Nic.objects.bulk_create(
        [Nic(vm=vm, mac=f"52:54:00:00:{i // 256:02x}:{i % 256:02x}") for i, vm in enumerate(vms)]
    )


def _queries(client, user, url: str) -> int:
    # A fresh user object per request, as a real request has (no per-object caches carried over).
    client.as_user(type(user).objects.get(pk=user.pk))
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("actor", ["platform", "tenant"])
def test_vm_list_query_count_is_constant(api, admin_user, make_member, actor):
    host = Host.objects.create(name="h", uri="test:///tmp/none.xml")
    tenant = Tenant.objects.create(name="acme")
    user = admin_user if actor == "platform" else make_member(tenant, "viewer")
    client = api.as_user(user)

    _populate(10, host, tenant)
    small = _queries(client, user, "/api/vms/?limit=1000")
    _populate(990, host, tenant)
    large = _queries(client, user, "/api/vms/?limit=1000")
    assert client.get("/api/vms/?limit=1000").json()["count"] == 1000
    assert small == large, (small, large)
    assert large <= 6


# --- every list, at 2 and at 20 objects --------------------------------------------------------

SIZES = (2, 20)


class Inventory:
    """A host with a pool and a network, tenant acme, a platform admin and acme's tenant
    admin; ``grow(kind, n)`` makes n objects of a kind exist, visible to both."""

    def __init__(self, admin_user, make_member):
        self.seq = itertools.count()
        self.host = Host.objects.create(name="qc-host", uri="test:///tmp/qc-none.xml",
                                        status="online")  # fmt: skip
        self.pool = StoragePool.objects.create(host=self.host, name="qc-pool", path="/qc")
        self.network = Network.objects.create(host=self.host, name="qc-net")
        self.tenant = Tenant.objects.create(name="acme")
        self.tenant.allowed_hosts.add(self.host)
        self.tenant.allowed_pools.add(self.pool)
        self.tenant.allowed_networks.add(self.network)
        self.users = {"platform": admin_user, "tenant": make_member(self.tenant, "admin")}
        self.vm = self._vms(1)[0]  # the VM whose snapshots and tasks are listed

    def _n(self) -> int:
        return next(self.seq)

    def _vms(self, n, host=None, tenant=None):
        host, tenant = host or self.host, tenant or self.tenant
        vms = VirtualMachine.objects.bulk_create(
            VirtualMachine(host=host, tenant=tenant, name=f"qc-vm-{self._n()}", uuid=uuid.uuid4())
            for _ in range(n)
        )
        pool = host.pools.first() or StoragePool.objects.create(host=host, name="p", path="/p")
        vols = Volume.objects.bulk_create(
            Volume(pool=pool, name=f"{vm.name}-{t}.qcow2", tenant=tenant, format="qcow2")
            for vm in vms for t in ("vda", "vdb")
        )  # fmt: skip
        Disk.objects.bulk_create(
            Disk(vm=vm, target=t, source=f"/qc/{vm.name}-{t}", volume=vols[2 * i + j])
            for i, vm in enumerate(vms) for j, t in enumerate(("vda", "vdb"))
        )  # fmt: skip
        Nic.objects.bulk_create(
            Nic(vm=vm, mac=f"52:54:00:{i // 65536:02x}:{i // 256 % 256:02x}:{i % 256:02x}",
                network=self.network if host == self.host else None)
            for vm in vms for i in [self._n()]
        )  # fmt: skip
        return vms

    def grow(self, kind: str, n: int) -> None:
        have = self.count(kind)
        if n > have:
            getattr(self, f"_grow_{kind}")(n - have)
        assert self.count(kind) == n, kind

    def count(self, kind: str) -> int:
        return {
            "hosts": lambda: Host.objects.count(),
            "pools": lambda: StoragePool.objects.filter(host=self.host).count(),
            "volumes": lambda: Volume.objects.filter(pool=self.pool).count(),
            "networks": lambda: Network.objects.filter(host=self.host).count(),
            "vms": lambda: VirtualMachine.objects.filter(host=self.host).count(),
            "tasks": lambda: Task.objects.filter(vm=self.vm).count(),
            "tenants": lambda: Tenant.objects.count(),
            "users": lambda: Membership.objects.filter(tenant=self.tenant).count(),
            "memberships": lambda: Membership.objects.filter(tenant=self.tenant).count(),
            "tokens": lambda: ApiToken.objects.filter(user=self.users["platform"]).count(),
            "snapshots": lambda: self.vm.snapshots.count(),
            "policies": lambda: TuningPolicy.objects.filter(name__startswith="qc-pol").count(),
        }[kind]()

    def _grow_hosts(self, n):
        for _ in range(n):
            i = self._n()
            host = Host.objects.create(name=f"qc-h{i}", uri=f"test:///tmp/qc-{i}.xml")
            self.tenant.allowed_hosts.add(host)
            self._vms(1, host=host)

    def _grow_pools(self, n):
        pools = StoragePool.objects.bulk_create(
            StoragePool(host=self.host, name=f"qc-pool-{self._n()}", path="/qc", capacity=10,
                        allocation=5)
            for _ in range(n)
        )  # fmt: skip
        self.tenant.allowed_pools.add(*pools)
        Volume.objects.bulk_create(Volume(pool=p, name="v.qcow2") for p in pools)

    def _grow_volumes(self, n):
        Volume.objects.bulk_create(
            Volume(pool=self.pool, name=f"qc-{self._n()}.qcow2", tenant=self.tenant,
                   format="qcow2")
            for _ in range(n)
        )  # fmt: skip

    def _grow_networks(self, n):
        nets = Network.objects.bulk_create(
            Network(host=self.host, name=f"qc-net-{self._n()}") for _ in range(n)
        )
        self.tenant.allowed_networks.add(*nets)

    def _grow_vms(self, n):
        self._vms(n)

    def _grow_tasks(self, n):
        tasks = Task.objects.bulk_create(
            Task(kind="vm.start", state="succeeded", tenant=self.tenant, host=self.host,
                 vm=self.vm, user=self.users["tenant"], target=self.vm.name)
            for _ in range(n)
        )  # fmt: skip
        TaskLogEntry.objects.bulk_create(
            TaskLogEntry(task=t, message=f"step {j}") for t in tasks for j in range(2)
        )

    def _grow_tenants(self, n):
        for _ in range(n):
            tenant = Tenant.objects.create(name=f"qc-t{self._n()}")
            tenant.allowed_hosts.add(self.host)
            tenant.allowed_pools.add(self.pool)
            Membership.objects.create(user=self.users["tenant"], tenant=tenant, role="viewer")
            self._vms(1, tenant=tenant)

    def _grow_users(self, n):
        users = get_user_model().objects.bulk_create(
            get_user_model()(username=f"qc-u{self._n()}") for _ in range(n)
        )
        Membership.objects.bulk_create(
            Membership(user=u, tenant=self.tenant, role="viewer") for u in users
        )

    _grow_memberships = _grow_users

    def _grow_tokens(self, n):
        # Each actor lists their own tokens: both get n.
        for _ in range(n):
            for user in self.users.values():
                ApiToken.issue(user=user, name=f"qc-{self._n()}")

    def _grow_policies(self, n):
        # half the platform's, half acme's: both actors see every one
        TuningPolicy.objects.bulk_create(
            TuningPolicy(name=f"qc-pol-{self._n()}", tenant=self.tenant if i % 2 else None)
            for i in range(n)
        )

    def _grow_snapshots(self, n):
        Snapshot.objects.bulk_create(
            Snapshot(vm=self.vm, name=f"qc-snap-{self._n()}") for _ in range(n)
        )


@pytest.fixture
def inventory(admin_user, make_member):
    return Inventory(admin_user, make_member)


def _api_queries(api, user, url: str) -> tuple[int, dict]:
    cache.clear()
    api.force_authenticate(user=type(user).objects.get(pk=user.pk))
    with CaptureQueriesContext(connection) as ctx:
        response = api.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return len(ctx.captured_queries), response.json()


BOTH = ("platform", "tenant")
PLATFORM = ("platform",)

# (URL, kind of object listed, actors); {vm} is the VM whose snapshots are listed.
API_LISTS = [
    ("/api/hosts/", "hosts", PLATFORM),
    ("/api/storage-pools/", "pools", PLATFORM),
    ("/api/volumes/", "volumes", PLATFORM),
    ("/api/networks/", "networks", PLATFORM),
    ("/api/vms/", "vms", BOTH),
    ("/api/tasks/", "tasks", BOTH),
    ("/api/tenants/", "tenants", BOTH),
    ("/api/users/", "users", BOTH),
    ("/api/memberships/", "memberships", BOTH),
    ("/api/tokens/", "tokens", BOTH),
    ("/api/vms/{vm}/snapshots/", "snapshots", BOTH),
    ("/api/tuning-policies/", "policies", BOTH),
]
API_CASES = [(url, kind, actor) for url, kind, actors in API_LISTS for actor in actors]


# GET routes that answer one object or no list of the database's rows.
NOT_LISTS = {
    "/api/auth/whoami/", "/api/health/", "/api/schema/", "/api/docs/",
    "/api/tenants/{pk}/usage/", "/api/tenants/{pk}/placement/",
    "/api/vms/{pk}/console/",  # who is on the console now: the console's own store
    "/api/vms/{pk}/tuning/", "/api/hosts/{pk}/tuning/",  # one VM's / host's tuning
    "/api/tenants/{pk}/tuning-default/",
    "/api/tag-colours/",  # the whole palette in one query, at most MAX_TAG_COLOURS rows
}  # fmt: skip


def test_every_api_list_has_a_baseline():
    """A new list route needs a row in API_LISTS (the role matrix's endpoint list says which)."""
    lists = {
        route
        for method, route in routed_endpoints()
        if method == "get" and not route.endswith("}/") and "metrics" not in route
    }
    rows = {url.replace("{vm}", "{pk}") for url, _kind, _actors in API_LISTS}
    assert lists - NOT_LISTS - rows == set()
    assert rows - lists == set(), "baselines for routes that are not routed"


@pytest.mark.parametrize("url, kind, actor", API_CASES, ids=[f"{k}-{a}" for _u, k, a in API_CASES])
def test_api_list_query_count_does_not_grow(api, inventory, url, kind, actor):
    user = inventory.users[actor]
    url = url.format(vm=inventory.vm.pk) + "?limit=1000"
    counts = {}
    for size in SIZES:
        inventory.grow(kind, size)
        _api_queries(api, user, url)  # warm: content types, sessions
        counts[size], body = _api_queries(api, user, url)
        rows = body["results"] if isinstance(body, dict) else body
        assert len(rows) >= size, (size, len(rows))
    assert counts[SIZES[0]] == counts[SIZES[1]], counts
