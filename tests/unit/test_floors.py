"""The floors: the apps register what the core must know of them (the import rules themselves
are checked in tests/test_architecture.py)."""

from __future__ import annotations

import libvirt
import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from hosts.models import Host, Volume
from panel import locks, registry, taskrunner
from panel.api.exceptions import exception_handler
from panel.tasks import registered_queues
from vms.models import VirtualMachine
from vms.services import CloneConflict


def test_apps_register_what_the_core_needs():
    assert set(registry.lockable_models.values()) >= {Host, Volume, VirtualMachine}
    assert CloneConflict in registry.conflict_errors.values()
    assert {"vms", "hosts"} <= set(registry.subscriptions)
    assert "hosts" in registry.tree_sections
    assert registry.state_labels["vm"]["running"] == "Running"
    assert "usage" in registry.tenant_reports


def test_registry_register_replace_and_decorate():
    r = registry.Registry("things")
    r.register("a", 1)
    r.register("a", 2)

    @r.register("b")
    def b():
        return 3

    assert r.items() == [("a", 2), ("b", b)] and len(r) == 2 and "b" in r
    r.unregister("a")
    assert list(r) == ["b"]
    with pytest.raises(KeyError, match="nothing registered as 'x' in things"):
        r["x"]


@pytest.mark.django_db
def test_a_task_releases_the_locks_of_every_registered_model(settings):
    host = Host.objects.create(name="floors-h1", uri="test:///tmp/floors-h1.xml")
    with transaction.atomic():
        task = taskrunner.create_task(kind="test.none", host=host, lock=[host])
    assert Host.objects.get(pk=host.pk).lock_id == task.pk
    locks.release_all(task)
    assert Host.objects.get(pk=host.pk).lock_id is None
    settings.EMBEDDED = False  # the production shape: one queue per host
    assert registered_queues() == [f"host.{host.pk}"]


def test_task_errors_are_worded_by_the_registered_formatters():
    exc = libvirt.libvirtError("x")
    exc.err = (1, 0, "failed\nsecret line\n      ^", 0, "", None, None, 0, 0)
    assert taskrunner._error_message(exc) == "failed"
    assert taskrunner._error_message(RuntimeError("plain")) == "plain"
    assert taskrunner._error_message(RuntimeError()) == "RuntimeError"


def test_registered_conflicts_are_409():
    response = exception_handler(CloneConflict("the disk is busy"), {})
    assert response.status_code == 409 and response.data == {"detail": "the disk is busy"}
    assert exception_handler(ValidationError({"name": "bad"}), {}).status_code == 400
