"""Shared fixtures: users in every role, test-driver hosts (a fresh node file per test), clients."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
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


@pytest.fixture
def synced_host(admin_user, node_uri):
    """A test-driver host added through the service and synced."""
    from hosts import services

    host, _task = services.host_create(user=admin_user, name="sim-01", uri=node_uri)
    run_queued_tasks()
    host.refresh_from_db()
    return host
