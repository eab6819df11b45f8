"""Shared fixtures: users in every role, test-driver hosts, clients.

``synced_host`` is the fixture most tests stand on: a test-driver host (36 domains, pools,
volumes, networks) added through ``hosts.services.host_create`` and synced. Running that sync is
done once per session, in a transaction that is rolled back; what it wrote is kept as plain rows
and copied into each test's own database transaction (new primary keys, foreign keys remapped,
times moved to now). Each test still gets its own rows and, because libvirt's test driver keeps
its state per connection and every connection is closed after its test, its own pristine
hypervisor. ``freshly_synced_host`` runs the real add-and-sync for the tests that need it, and
``tests/test_synced_host.py`` checks that both give the same inventory.
"""

from __future__ import annotations

import datetime
import os
from collections import defaultdict
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from panel.choices import Role
from panel.models import Membership, Tenant

User = get_user_model()

ROLES = [Role.ADMIN, Role.OPERATOR, Role.MEMBER, Role.VIEWER]


@pytest.fixture(autouse=True)
def _close_libvirt_connections():
    """libvirt's test driver keeps state per connection: no connection outlives its test."""
    yield
    from hosts.driver.connection import close_all

    close_all()


@pytest.fixture
def admin_user(db):
    return User.objects.create_user(
        "root-admin", password="pw-admin", is_superuser=True, is_staff=True
    )


@pytest.fixture
def tenant(db):
    return Tenant.objects.create(name="acme")


@pytest.fixture
def other_tenant(db):
    return Tenant.objects.create(name="globex")


@pytest.fixture
def make_member(db):
    def make(tenant: Tenant, role: str, username: str | None = None):
        user = User.objects.create_user(username or f"{tenant.name}-{role}", password="pw")
        Membership.objects.create(user=user, tenant=tenant, role=role)
        return user

    return make


@pytest.fixture
def api():
    """An API client; ``api.as_user(u)`` authenticates it as ``u`` (session-less)."""
    client = APIClient()

    def as_user(user):
        client.force_authenticate(user=user)
        return client

    client.as_user = as_user
    return client


@pytest.fixture
def node_uri(tmp_path):
    """A fresh test-driver node file (36 domains, pools, networks) and its URI."""
    from hosts.testnode import write_node

    return write_node(tmp_path / "node.xml")


@pytest.fixture
def make_node(tmp_path):
    from hosts.testnode import write_node

    counter = {"n": 0}

    def make(**kwargs) -> str:
        counter["n"] += 1
        return write_node(tmp_path / f"node-{counter['n']}.xml", **kwargs)

    return make


def run_queued_tasks() -> None:
    """Run every queued task in this thread (tests wrap requests in a never-committed
    transaction, so on_commit dispatch does not fire)."""
    from panel import taskrunner
    from panel.choices import TaskState
    from panel.models import Task

    for task_id in Task.objects.filter(state=TaskState.QUEUED).values_list("pk", flat=True):
        taskrunner.execute(task_id)


@pytest.fixture
def run_tasks():
    return run_queued_tasks


SYNCED_HOST_NAME = "sim-01"


def grant_host(tenant: Tenant, host) -> None:
    """Let ``tenant`` place VMs on ``host`` and use all of its pools and networks."""
    tenant.allowed_hosts.add(host)
    tenant.allowed_pools.add(*host.pools.all())
    tenant.allowed_networks.add(*host.networks.all())


def add_and_sync_host(user, uri: str, name: str = SYNCED_HOST_NAME):
    """Add a test-driver host through the service and run its first sync."""
    from hosts import services

    host, _task = services.host_create(user=user, name=name, uri=uri)
    run_queued_tasks()
    host.refresh_from_db()
    return host


@dataclass
class InventorySnapshot:
    """The rows one add-and-sync wrote, in insertion order, to be copied into a test."""

    host_pk: int
    user_pk: int
    taken: datetime.datetime
    # (model, [{attname: value}]) in an order where every foreign key points backwards.
    tables: list[tuple[type[models.Model], list[dict]]] = field(default_factory=list)


def _all_models() -> list[type[models.Model]]:
    return [m for m in apps.get_models(include_auto_created=True) if not m._meta.proxy]


def _row(obj: models.Model) -> dict:
    return {f.attname: getattr(obj, f.attname) for f in obj._meta.concrete_fields}


def _fk_fields(model) -> list[models.ForeignKey]:
    return [f for f in model._meta.concrete_fields if f.is_relation and f.many_to_one]


def _insertion_order(created: dict) -> list:
    """Models so that a row's foreign keys name rows inserted before it (self references
    and cycles are filled in afterwards)."""
    order, placed = [], set()
    pending = list(created)
    while pending:
        for model in pending:
            deps = {f.related_model for f in _fk_fields(model)} & set(created)
            if deps - {model} <= placed:
                break
        else:
            model = pending[0]  # a cycle: its forward references are updated after insertion
        pending.remove(model)
        placed.add(model)
        order.append(model)
    return order


def take_inventory_snapshot(uri: str) -> InventorySnapshot:
    """Run the real add-and-sync in a transaction that is rolled back; keep what it wrote.

    Refuses (``RuntimeError``) when the sync changed a row that existed before it, which plain
    copying could not reproduce."""
    with transaction.atomic():
        user = User.objects.create_user("snapshot-admin", is_superuser=True, is_staff=True)
        before = {m: {o.pk: _row(o) for o in m._default_manager.all()} for m in _all_models()}
        taken = timezone.now()
        host = add_and_sync_host(user, uri)
        created = {}
        for model, old in before.items():
            rows = list(model._default_manager.order_by("pk"))
            new = [_row(o) for o in rows if o.pk not in old]
            changed = [o.pk for o in rows if o.pk in old and _row(o) != old[o.pk]]
            changed = [pk for pk in changed if not (model is User and pk == user.pk)]
            if changed:
                raise RuntimeError(f"the sync changed existing {model._meta.label} rows {changed}")
            if new:
                created[model] = new
        tables = [(m, created[m]) for m in _insertion_order(created)]
        snapshot = InventorySnapshot(host_pk=host.pk, user_pk=user.pk, taken=taken, tables=tables)
        transaction.set_rollback(True)
    from hosts.driver.connection import close_all

    close_all()
    return snapshot


def restore_inventory_snapshot(snapshot: InventorySnapshot, user) -> int:
    """Copy the snapshot's rows into the current transaction; return the new host's pk.

    Rows get fresh primary keys, foreign keys follow them, the snapshot's admin becomes ``user``,
    and every time moves forward by the snapshot's age. A row whose unique field names an
    existing row (the default tenant, say) is that row, as ``get_or_create`` would have it."""
    shift = timezone.now() - snapshot.taken
    mapping: dict[tuple[type, object], object] = {(User, snapshot.user_pk): user.pk}
    deferred = []  # (model, new pk, attname, old target) for references to rows not yet made
    for model, rows in snapshot.tables:
        meta = model._meta
        fks = _fk_fields(model)
        times = [f.attname for f in meta.concrete_fields if isinstance(f, models.DateTimeField)]
        uniques = [f for f in meta.concrete_fields if f.unique and not f.primary_key]
        existing = {}
        for f in uniques:
            values = [r[f.attname] for r in rows if r[f.attname] is not None]
            for obj in model._default_manager.filter(**{f"{f.attname}__in": values}):
                existing.setdefault(f.attname, {})[getattr(obj, f.attname)] = obj.pk
        fresh, fresh_rows = [], []
        for row in rows:
            found = next(
                (existing[f.attname][row[f.attname]] for f in uniques
                 if row[f.attname] in existing.get(f.attname, {})),
                None,
            )  # fmt: skip
            if found is not None:
                mapping[(model, row[meta.pk.attname])] = found
                continue
            values = dict(row)
            values.pop(meta.pk.attname)
            later = []
            for f in fks:
                target = values[f.attname]
                if target is None:
                    continue
                key = (f.related_model, target)
                if key in mapping:
                    values[f.attname] = mapping[key]
                elif any(m is f.related_model for m, _ in snapshot.tables):
                    later.append((f.attname, key))
                    values[f.attname] = None
            for name in times:
                if values[name] is not None:
                    values[name] += shift
            fresh.append(model(**values))
            fresh_rows.append((row, later))
        made = model._default_manager.bulk_create(fresh)
        for obj, (row, later) in zip(made, fresh_rows, strict=True):
            assert obj.pk is not None, f"{meta.label}: bulk_create returned no primary key"
            mapping[(model, row[meta.pk.attname])] = obj.pk
            deferred.extend((model, obj.pk, attname, key) for attname, key in later)
    updates = defaultdict(dict)
    for model, pk, attname, key in deferred:
        updates[(model, pk)][attname] = mapping[key]
    for (model, pk), values in updates.items():
        model._default_manager.filter(pk=pk).update(**values)
    from hosts.models import Host

    return mapping[(Host, snapshot.host_pk)]


@pytest.fixture(scope="session")
def synced_node_uri(tmp_path_factory):
    """One test-driver node file for the session: libvirt only reads it, and each connection
    (closed after its test) starts from what the file says."""
    from hosts.testnode import write_node

    return write_node(tmp_path_factory.mktemp("synced-node") / "node.xml")


@pytest.fixture(scope="session")
def inventory_snapshot(django_db_setup, django_db_blocker, synced_node_uri):
    with django_db_blocker.unblock():
        return take_inventory_snapshot(synced_node_uri)


@pytest.fixture
def synced_host(request, db, admin_user):
    """A test-driver host as adding it through the service and syncing it leaves it (the
    rows are copied from the session's one real sync; see the module docstring).
    ``PADDOCK_TEST_SYNCED_HOST=fresh`` runs the real add-and-sync in every test instead."""
    from hosts.models import Host

    if os.environ.get("PADDOCK_TEST_SYNCED_HOST") == "fresh":
        return request.getfixturevalue("freshly_synced_host")
    snapshot = request.getfixturevalue("inventory_snapshot")
    return Host.objects.get(pk=restore_inventory_snapshot(snapshot, admin_user))


@pytest.fixture
def freshly_synced_host(admin_user, node_uri):
    """A test-driver host added through the service and synced in this test."""
    return add_and_sync_host(admin_user, node_uri)


# --- how much the suite spends building synced hosts (printed with --durations) --------------

_SYNCED_HOST_USERS: set[str] = set()


def pytest_collection_modifyitems(config, items):
    _SYNCED_HOST_USERS.update(
        item.nodeid for item in items if "synced_host" in getattr(item, "fixturenames", ())
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if config.getoption("durations", None) is None or not _SYNCED_HOST_USERS:
        return
    setups = [
        report.duration
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "setup"
        and getattr(report, "nodeid", None) in _SYNCED_HOST_USERS
    ]
    terminalreporter.write_line(
        f"synced_host: {len(setups)} tests use it, their setups took {sum(setups):.2f}s in all"
    )
