"""A VM is its UUID: the move rule, the registry hosts calls, and the migration that merges
rows that shared a UUID across hosts."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from hosts import hooks
from vms import domain_events
from vms.models import VirtualMachine
from vms.sync import moves_here, sync_domains


def vm(state: str, gone: bool = False) -> VirtualMachine:
    return VirtualMachine(state=state, gone=gone)


@pytest.mark.parametrize(
    "row_state, gone, copy_state, appeared, moves",
    [
        ("unknown", True, "shutoff", False, True),  # gone where it was
        ("shutoff", False, "running", False, True),  # runs here, not there
        ("running", False, "running", False, False),  # two live copies: stay
        ("shutoff", False, "shutoff", False, False),  # two stopped copies: stay
        ("shutoff", False, "shutoff", True, True),  # just defined here
        ("running", False, "shutoff", True, False),  # never trade a running VM for a copy
        ("running", False, "paused", True, True),  # a migration's incoming domain
    ],
)
def test_when_a_domain_on_another_host_is_a_move(row_state, gone, copy_state, appeared, moves):
    assert moves_here(vm(row_state, gone), copy_state, appeared=appeared) is moves


def test_vms_registers_its_domain_handler_sync_step_and_reconcile_observer():
    assert domain_events.on_domain_event in hooks._domain_handlers
    assert sync_domains in hooks._sync_steps
    assert domain_events.watch_reconcile in hooks._reconcile_observers


def test_registering_twice_registers_once(monkeypatch):
    monkeypatch.setattr(hooks, "_sync_steps", [])
    calls = []

    def step(host, conn):
        calls.append(host)
        return {"n": 1}

    hooks.register_sync_step(step)
    hooks.register_sync_step(step)
    assert hooks.run_sync_steps("h", None) == {"n": 1}
    assert calls == ["h"]


def test_vm_name_follows_the_name_rule():
    field = VirtualMachine._meta.get_field("name")
    field.run_validators("web-01.example")
    with pytest.raises(ValidationError):
        field.run_validators("web 01")


@pytest.mark.django_db(transaction=True)
def test_migration_merges_rows_that_share_a_uuid_keeping_their_tasks():
    executor = MigrationExecutor(connection)
    before = [
        ("vms", "0005_volume_owners"),
        ("hosts", "0006_host_kvm_note"),
        ("panel", "0004_tenant_name_validator"),
    ]
    after = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        apps = executor.loader.project_state(before).apps
        Host = apps.get_model("hosts", "Host")
        Tenant = apps.get_model("panel", "Tenant")
        Task = apps.get_model("panel", "Task")
        VM = apps.get_model("vms", "VirtualMachine")
        tenant = Tenant.objects.create(name="acme")
        a = Host.objects.create(name="a", uri="test:///default")
        b = Host.objects.create(name="b", uri="test:///tmp/b.xml")
        shared = uuid.uuid4()
        old = VM.objects.create(host=a, tenant=tenant, name="web", uuid=shared, gone=True)
        new = VM.objects.create(host=b, tenant=tenant, name="web", uuid=shared)
        lonely = VM.objects.create(host=a, tenant=tenant, name="db", uuid=uuid.uuid4())
        Task.objects.create(kind="vm.start", vm=old)
        Task.objects.create(kind="vm.stop", vm=new)

        executor = MigrationExecutor(connection)
        executor.migrate(after)
        apps = executor.loader.project_state(after).apps
        VM = apps.get_model("vms", "VirtualMachine")
        Task = apps.get_model("panel", "Task")
        assert list(VM.objects.filter(uuid=shared).values_list("pk", flat=True)) == [new.pk]
        assert VM.objects.filter(pk=lonely.pk).exists()
        assert set(Task.objects.values_list("vm_id", flat=True)) == {new.pk}
    finally:
        MigrationExecutor(connection).migrate(after)
