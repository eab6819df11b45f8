"""The task engine: compare-and-swap claims, locks, leases, recovery."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from hosts.models import Host
from panel import locks, taskrunner
from panel.choices import TaskState
from panel.models import Task

CALLS: list[int] = []
RECOVERED: list[int] = []


def _recover(task: Task) -> str:
    RECOVERED.append(task.pk)
    return "Checked the host: nothing to undo."


@taskrunner.task_kind("test.echo", recover=_recover)
def _echo(ctx: taskrunner.TaskContext) -> dict:
    CALLS.append(ctx.task.pk)
    ctx.log("echo ran")
    ctx.progress(50)
    if ctx.task.params.get("fail"):
        raise RuntimeError("the host said no")
    return {"echo": ctx.task.params.get("value")}


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    RECOVERED.clear()


@pytest.fixture
def host(db):
    return Host.objects.create(name="h1", uri="test:///tmp/h1.xml")


def _new_task(host, **params) -> Task:
    with transaction.atomic():
        return taskrunner.create_task(kind="test.echo", host=host, params=params, lock=[host])


@pytest.mark.django_db
def test_task_runs_once_and_releases_its_lock(host):
    task = _new_task(host, value=7)
    host.refresh_from_db()
    assert host.lock_id == task.pk
    assert taskrunner.execute(task.pk) is True
    task.refresh_from_db()
    host.refresh_from_db()
    assert task.state == TaskState.SUCCEEDED and task.progress == 100
    assert task.result == {"echo": 7}
    assert [e.message for e in task.log_entries.all()] == ["echo ran"]
    assert task.started and task.finished and task.lease_expires is None
    assert host.lock_id is None


@pytest.mark.django_db
def test_redelivered_message_does_nothing(host):
    task = _new_task(host)
    taskrunner.execute(task.pk)
    assert taskrunner.execute(task.pk) is False
    assert CALLS == [task.pk]


@pytest.mark.django_db
def test_failure_is_recorded_with_message_and_lock_released(host):
    task = _new_task(host, fail=True)
    taskrunner.execute(task.pk)
    task.refresh_from_db()
    host.refresh_from_db()
    assert task.state == TaskState.FAILED
    assert task.error == "the host said no"
    assert task.log_entries.filter(level="error", message="the host said no").exists()
    assert host.lock_id is None


@pytest.mark.django_db
def test_second_request_on_locked_object_conflicts_naming_the_holder(host):
    first = _new_task(host)
    with pytest.raises(locks.LockConflict) as exc:
        _new_task(host)
    assert exc.value.holder.pk == first.pk
    # The conflicting request left no task row behind.
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_stale_lock_of_an_ended_task_is_taken_over(host):
    ended = Task.objects.create(kind="test.echo", state=TaskState.FAILED)
    Host.objects.filter(pk=host.pk).update(lock=ended)
    task = _new_task(host)
    host.refresh_from_db()
    assert host.lock_id == task.pk


@pytest.mark.django_db
def test_expired_lease_is_recovered_failed_and_unlocked(host):
    task = _new_task(host)
    assert taskrunner.claim(task.pk, "dead-worker")
    Task.objects.filter(pk=task.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    assert taskrunner.recover_stale_tasks() == [task.pk]
    task.refresh_from_db()
    host.refresh_from_db()
    assert task.state == TaskState.FAILED
    assert "stopped before it finished" in task.error
    assert "nothing to undo" in task.error
    assert RECOVERED == [task.pk]
    assert host.lock_id is None
    # The message redelivered after recovery does nothing.
    assert taskrunner.execute(task.pk) is False
    assert CALLS == []


@pytest.mark.django_db
def test_live_lease_is_left_alone(host):
    task = _new_task(host)
    assert taskrunner.claim(task.pk, "busy-worker")
    assert taskrunner.recover_stale_tasks() == []
    task.refresh_from_db()
    assert task.state == TaskState.RUNNING


@pytest.mark.django_db
def test_worker_that_lost_its_lease_cannot_overwrite_the_verdict(host):
    task = _new_task(host)
    assert taskrunner.claim(task.pk, "slow-worker")
    Task.objects.filter(pk=task.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))
    taskrunner.recover_stale_tasks()
    assert taskrunner.finish(task, "slow-worker", TaskState.SUCCEEDED) is False
    task.refresh_from_db()
    assert task.state == TaskState.FAILED


@pytest.mark.django_db
def test_forced_recovery_at_startup_takes_every_running_task(host):
    task = _new_task(host)
    assert taskrunner.claim(task.pk, "previous-process")
    assert taskrunner.recover_stale_tasks(force=True) == [task.pk]


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_let_exactly_one_worker_run(host):
    # A bare queued row: four deliveries of its message race for it.
    task = Task.objects.create(kind="test.echo", host=host)
    barrier = threading.Barrier(4)
    results: list[bool] = []

    def worker(n: int) -> None:
        try:
            barrier.wait()
            results.append(taskrunner.execute(task.pk, owner=f"w{n}"))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert CALLS == [task.pk]


@pytest.mark.django_db(transaction=True)
def test_concurrent_lock_requests_let_exactly_one_through(host, monkeypatch):
    # The tasks stay queued: a task run (eagerly) at commit would finish and free its lock while
    # the others still race, and a finished holder's lock is rightly taken over.
    monkeypatch.setattr(taskrunner, "dispatch", lambda task_id, queue=None: None)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def request() -> None:
        try:
            barrier.wait()
            _new_task(host)
            outcomes.append("ok")
        except locks.LockConflict:
            outcomes.append("conflict")
        finally:
            connection.close()

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "ok"]
    assert Task.objects.count() == 1


@pytest.fixture
def sent(monkeypatch) -> list[int]:
    """Task ids handed to the broker (nothing reaches a broker)."""
    out: list[int] = []
    monkeypatch.setattr(taskrunner.run_task, "apply_async", lambda args, queue: out.append(args[0]))
    return out


@pytest.mark.django_db
def test_a_queued_task_whose_message_was_lost_is_sent_again(host, sent):
    """The web process died between commit and publish (never sent), or the broker restarted
    empty (sent, then lost): either way the row is the task, and the sweep sends it again."""
    never_sent = Task.objects.create(kind="test.echo", host=host)
    lost = Task.objects.create(kind="test.echo", host=host)
    taskrunner.dispatch(lost.pk, "host.x")
    assert sent == [lost.pk]
    lost.refresh_from_db()
    assert lost.sends == 1 and lost.sent_at is not None

    assert taskrunner.resend_lost_tasks() == []  # too young: a worker may be on its way
    later = timezone.now() + timedelta(seconds=11)
    assert taskrunner.resend_lost_tasks(now=later) == [never_sent.pk, lost.pk]
    assert sent == [lost.pk, never_sent.pk, lost.pk]
    # a duplicate message does nothing: the claim is a compare-and-swap on queued
    assert taskrunner.execute(lost.pk) is True
    assert taskrunner.execute(lost.pk) is False
    assert CALLS == [lost.pk]


@pytest.mark.django_db
def test_resends_back_off_and_skip_every_task_that_is_not_queued(host, sent):
    task = Task.objects.create(kind="test.echo", host=host)
    for state in (TaskState.CANCELLED, TaskState.RUNNING, TaskState.FAILED):
        Task.objects.create(kind="test.echo", host=host, state=state)
    start = timezone.now() + timedelta(seconds=11)
    assert taskrunner.resend_lost_tasks(now=start) == [task.pk]  # 1st send
    Task.objects.filter(pk=task.pk).update(sent_at=start)
    assert taskrunner.resend_lost_tasks(now=start + timedelta(seconds=11)) == [task.pk]
    Task.objects.filter(pk=task.pk).update(sent_at=start)  # 2nd send: next wait is 20 s
    assert taskrunner.resend_lost_tasks(now=start + timedelta(seconds=15)) == []
    assert taskrunner.resend_lost_tasks(now=start + timedelta(seconds=21)) == [task.pk]
    assert [taskrunner.resend_interval(n) for n in (1, 2, 3, 10)] == [10, 20, 40, 600]
