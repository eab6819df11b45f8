"""The task engine under faults: a recovery that finishes the work, a database that goes away
mid-task, a lease renewal that fails once."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import OperationalError, transaction
from django.utils import timezone

from hosts.models import Host
from panel import taskrunner, tasks
from panel.choices import TaskState
from panel.models import Task

RECOVERED: list[int] = []


def _finish_it(task: Task) -> taskrunner.Recovery:
    RECOVERED.append(task.pk)
    return taskrunner.Recovery(note="Finished on the host.", finished=True, result={"done": 1})


@taskrunner.task_kind("test.idempotent", recover=_finish_it)
def _idempotent(ctx: taskrunner.TaskContext) -> dict:
    if ctx.task.params.get("lose_database"):
        raise OperationalError("server closed the connection unexpectedly\nmore")
    return {"ran": True}


def _roll_back(task: Task) -> str:
    RECOVERED.append(task.pk)
    return "Rolled back: removed nothing."


@taskrunner.task_kind("test.rollback", recover=_roll_back)
def _rolls_back(ctx: taskrunner.TaskContext) -> dict:
    raise OperationalError("the connection is closed")


@pytest.fixture(autouse=True)
def _reset():
    RECOVERED.clear()


@pytest.fixture
def host(db):
    return Host.objects.create(name="h1", uri="test:///tmp/h1.xml")


def _new_task(host, kind: str, **params) -> Task:
    with transaction.atomic():
        return taskrunner.create_task(kind=kind, host=host, params=params, lock=[host])


@pytest.mark.django_db
def test_recovery_that_finishes_the_work_ends_the_task_succeeded(host):
    task = _new_task(host, "test.idempotent")
    assert taskrunner.claim(task.pk, "dead-worker")
    Task.objects.filter(pk=task.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert taskrunner.recover_stale_tasks() == [task.pk]
    task.refresh_from_db()
    host.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED and task.error == "" and task.progress == 100
    assert task.result == {"done": 1}
    assert host.lock_id is None
    last = task.log_entries.last()
    assert "stopped before it finished" in last.message and "Finished on the host" in last.message
    assert last.level == "warning"


@pytest.mark.django_db
def test_a_task_that_loses_the_database_is_resolved_by_its_recover_hook(host):
    task = _new_task(host, "test.idempotent", lose_database=True)
    assert taskrunner.execute(task.pk) is True
    task.refresh_from_db()
    host.refresh_from_db()
    assert RECOVERED == [task.pk]
    assert task.state == TaskState.SUCCEEDED and task.result == {"done": 1}
    assert "database connection was lost" in task.log_entries.last().message
    assert host.lock_id is None


@pytest.mark.django_db
def test_a_rolled_back_task_that_lost_the_database_fails_saying_so(host):
    task = _new_task(host, "test.rollback")
    assert taskrunner.execute(task.pk) is True
    task.refresh_from_db()
    assert task.state == TaskState.FAILED
    assert "database connection was lost" in task.error and "Rolled back" in task.error
    assert "(the connection is closed)" in task.error
    host.refresh_from_db()
    assert host.lock_id is None


def test_writes_wait_for_the_database_outside_a_transaction(monkeypatch):
    monkeypatch.setattr(taskrunner.time, "sleep", lambda _s: None)
    monkeypatch.setattr(taskrunner.connection, "close", lambda: None)
    calls = []

    def write():
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("restarting")
        return 1

    assert taskrunner._until_database_answers(write) == 1
    assert len(calls) == 3


def test_writes_give_up_when_the_database_stays_away(monkeypatch):
    clock = iter(range(0, 10_000, 20))
    monkeypatch.setattr(taskrunner.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(taskrunner.time, "sleep", lambda _s: None)
    monkeypatch.setattr(taskrunner.connection, "close", lambda: None)

    def write():
        raise OperationalError("gone")

    with pytest.raises(OperationalError):
        taskrunner._until_database_answers(write)


@pytest.mark.django_db(transaction=True)
def test_writes_inside_a_transaction_are_not_retried(monkeypatch):
    calls = []

    def write():
        calls.append(1)
        raise OperationalError("restarting")

    with pytest.raises(OperationalError), transaction.atomic():
        taskrunner._until_database_answers(write)
    assert calls == [1]


@pytest.mark.django_db(transaction=True)
def test_heartbeat_keeps_renewing_after_a_failed_renewal(host, monkeypatch):
    monkeypatch.setattr(taskrunner, "lease_seconds", lambda: 4)  # a beat each second
    task = Task.objects.create(kind="test.idempotent", host=host)
    assert taskrunner.claim(task.pk, "me")
    Task.objects.filter(pk=task.pk).update(lease_expires=timezone.now())
    real_update = type(Task.objects.all()).update
    failures = []

    def flaky_update(qs, **values):
        if "lease_expires" in values and not failures:
            failures.append(1)
            raise OperationalError("server closed the connection unexpectedly")
        return real_update(qs, **values)

    monkeypatch.setattr(type(Task.objects.all()), "update", flaky_update)
    beat = taskrunner._Heartbeat(task.pk, "me")
    beat.start()
    try:
        deadline = timezone.now() + timedelta(seconds=10)
        while timezone.now() < deadline:
            expires = Task.objects.get(pk=task.pk).lease_expires
            if failures and expires > timezone.now() + timedelta(seconds=2):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the lease was not renewed after the failed renewal")
    finally:
        beat.stop()
        beat.join(5)
    assert beat.is_alive() is False and failures == [1]


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """Task ids handed to the broker (nothing reaches a broker)."""
    out: list[int] = []
    monkeypatch.setattr(taskrunner.run_task, "apply_async", lambda args, queue: out.append(args[0]))
    return out


@pytest.mark.django_db
def test_an_emptied_broker_has_every_queued_task_sent_at_once(host, sent, monkeypatch):
    waiting = Task.objects.create(kind="test.idempotent", host=host)
    Task.objects.filter(pk=waiting.pk).update(sent_at=timezone.now(), sends=6)  # a long wait
    Task.objects.create(kind="test.idempotent", host=host, state=TaskState.CANCELLED)
    monkeypatch.setattr(taskrunner, "broker_was_emptied", lambda url=None: False)
    assert taskrunner.resend_lost_tasks() == []
    monkeypatch.setattr(taskrunner, "broker_was_emptied", lambda url=None: True)
    assert taskrunner.resend_lost_tasks() == [waiting.pk]
    assert sent == [waiting.pk]  # never the cancelled one


@pytest.mark.django_db
def test_a_starting_worker_sends_every_queued_task_again(host, sent):
    waiting = Task.objects.create(kind="test.idempotent", host=host)
    Task.objects.filter(pk=waiting.pk).update(sent_at=timezone.now(), sends=3)
    tasks._on_worker_ready()
    assert sent == [waiting.pk]


def test_a_broker_that_is_not_redis_is_never_taken_for_emptied():
    assert taskrunner.broker_was_emptied("memory://") is False
    assert taskrunner.broker_was_emptied("redis://127.0.0.1:1/0") is False  # nothing answers
