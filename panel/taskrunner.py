"""The task engine: create, queue, claim, run, log, finish and recover Tasks.

A task row moves ``queued -> running`` exactly once, by a compare-and-swap that also writes the
lease owner and expiry; a redelivered or duplicated message for the same task finds it no longer
queued and does nothing. The running task renews its lease; finishing is another CAS on
``(state=running, lease_owner=me)``, so a worker that lost its lease to recovery cannot
overwrite the verdict. Recovery resolves expired leases through each kind's ``recover`` hook
(which looks at the host's truth): the hook rolls back and the task fails with a message, or,
for an idempotent kind such as a delete, it finishes the work and the task succeeds; either
way its locks are released.

A task is cancelled with :func:`cancel`: a queued one ends ``cancelled`` at once (final: no
sweep sends it again, no claim runs it); a running one gets a request (``cancel_requested``)
its handler checks at its safe points (``TaskContext.check_cancel``: between plan steps, in a
wait loop), undoing what it did as on a failure, and ends ``cancelled`` too. A kind whose
running tasks have no safe point says why (``task_kind(stoppable=...)``), and the cancel is
refused with that reason.

A failed task stores its exception's message; an app that raises its own kind of error (the
driver's host calls) registers how to word it (``panel.registry.task_error_formatters``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import redis
from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from . import locks
from .choices import TaskState
from .events import task_changed, task_log
from .failpoints import failpoint
from .models import Task, TaskLogEntry
from .registry import task_error_formatters
from .tenancy import Action, can

logger = logging.getLogger(__name__)

Handler = Callable[["TaskContext"], dict | None]


@dataclass
class Recovery:
    """What a kind's ``recover`` hook did about a dead worker's task: a note for the task's
    log and, when the hook could finish the work itself (an idempotent kind), its result."""

    note: str
    finished: bool = False
    result: dict | None = None


#: returns a note (the task fails with it) or a Recovery
Recover = Callable[[Task], "str | Recovery"]


#: why a running task of a kind cannot stop now (None: it stops at its next safe point)
Stoppable = Callable[[Task], "str | None"]

NOT_STOPPABLE = (
    "A running {title} task cannot be stopped safely: it is one change on the host with no "
    "point to stop at. It ends on its own."
)


@dataclass
class TaskKind:
    name: str
    handler: Handler
    recover: Recover | None = None
    #: whether a running task checks for a cancel at safe points (or, per task, why not)
    stoppable: bool | Stoppable = False
    #: tidies the inventory after a queued task was cancelled (a create's unborn VM row)
    cancelled: Callable[[Task], None] | None = None
    #: the role action that may run, and so cancel, a task of this kind
    permission: str = Action.VM_CHANGE

    def refusal(self, task: Task) -> str | None:
        """Why this running task cannot be cancelled (None: it can)."""
        if callable(self.stoppable):
            return self.stoppable(task)
        return None if self.stoppable else NOT_STOPPABLE.format(title=task.title)


_KINDS: dict[str, TaskKind] = {}


def task_kind(
    name: str,
    *,
    recover: Recover | None = None,
    stoppable: bool | Stoppable = False,
    cancelled: Callable[[Task], None] | None = None,
    permission: str = Action.VM_CHANGE,
) -> Callable[[Handler], Handler]:
    """Register the function that carries out tasks of ``name``."""

    def register(fn: Handler) -> Handler:
        _KINDS[name] = TaskKind(
            name=name,
            handler=fn,
            recover=recover,
            stoppable=stoppable,
            cancelled=cancelled,
            permission=permission,
        )
        return fn

    return register


def get_kind(name: str) -> TaskKind:
    if name not in _KINDS:
        # Kinds register when their app's jobs module is imported.
        autodiscover_modules("jobs")
    return _KINDS[name]


def lease_seconds() -> int:
    return settings.PADDOCK["TASK_LEASE_SECONDS"]


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


# --- creating ---------------------------------------------------------------------------------


def create_task(
    *,
    kind: str,
    user=None,
    tenant=None,
    host=None,
    vm=None,
    target: str = "",
    params: dict | None = None,
    lock: list | None = None,
) -> Task:
    """Write a queued Task, take the locks it needs, and queue it once the transaction commits.

    Must run inside ``transaction.atomic()``: a LockConflict rolls the task row back with it.
    """
    task = Task.objects.create(
        kind=kind,
        user=user if user is not None and user.is_authenticated else None,
        tenant=tenant,
        host=host,
        vm=vm,
        target=target,
        params=params or {},
    )
    for obj in lock or []:
        locks.acquire(obj, task)
    queue = queue_for(host.pk if host is not None else None)
    transaction.on_commit(lambda: dispatch(task.pk, queue))
    task_changed(task)
    return task


def queue_for(host_id: int | None) -> str:
    """Each host has its own queue, so workers can run on (or near) the host they serve.

    In the embedded default the one in-process worker takes everything from one queue.
    """
    if settings.EMBEDDED or host_id is None:
        return settings.CELERY_TASK_DEFAULT_QUEUE
    return f"host.{host_id}"


@shared_task(name="panel.tasks.run_task", ignore_result=True)
def run_task(task_id: int) -> None:
    """The Celery entry point of every task (its historic name kept for queued messages)."""
    execute(task_id)


def dispatch(task_id: int, queue: str | None = None) -> None:
    """Hand the task's message to the broker and note when (the resend sweep reads it)."""
    failpoint("task.dispatch")  # the row is committed, the message not sent yet
    run_task.apply_async(args=[task_id], queue=queue or settings.CELERY_TASK_DEFAULT_QUEUE)
    Task.objects.filter(pk=task_id, state=TaskState.QUEUED).update(
        sent_at=timezone.now(), sends=F("sends") + 1
    )


# --- running ----------------------------------------------------------------------------------


class TaskCancelled(Exception):
    """Raised at a handler's safe point when its task was cancelled: the handler undoes what
    it did as on any failure, and the task ends ``cancelled`` with this message."""


class TaskContext:
    """What a handler gets: the task row, and ways to log and report progress."""

    def __init__(self, task: Task, owner: str):
        self.task = task
        self.owner = owner

    # Both wait out a database restart (as finishing does): a handler's rollback logs first,
    # and must not be skipped because the log line could not be written at once.
    def log(self, message: str, level: str = "info") -> None:
        _until_database_answers(
            lambda: TaskLogEntry.objects.create(task=self.task, message=message, level=level)
        )
        task_log(self.task, message, level)

    def progress(self, percent: int) -> None:
        percent = max(0, min(100, int(percent)))
        _until_database_answers(
            lambda: Task.objects.filter(
                pk=self.task.pk, state=TaskState.RUNNING, lease_owner=self.owner
            ).update(progress=percent)
        )
        self.task.progress = percent
        task_changed(self.task)

    def check_cancel(self) -> None:
        """A safe point: raise TaskCancelled when the task was asked to stop, or was ended
        meanwhile (a Stop preempting a pending shutdown ends it at once)."""
        row = _until_database_answers(
            lambda: (
                Task.objects.filter(pk=self.task.pk)
                .values("state", "lease_owner", "cancel_requested", "error", "cancelled_by_id")
                .first()
            )
        )
        if row is None:
            raise TaskCancelled("The task is gone.")
        if row["state"] == TaskState.CANCELLED:
            raise TaskCancelled(row["error"] or "Cancelled.")
        if row["cancel_requested"] is not None:
            raise TaskCancelled(_cancelled_message(row["cancelled_by_id"]))
        if row["state"] != TaskState.RUNNING or row["lease_owner"] != self.owner:
            raise TaskCancelled("This worker lost the task: it was ended meanwhile.")


class _Heartbeat(threading.Thread):
    """Renews the running task's lease until stopped."""

    def __init__(self, task_id: int, owner: str):
        super().__init__(daemon=True, name=f"lease-{task_id}")
        self.task_id = task_id
        self.owner = owner
        self.stop_event = threading.Event()

    def run(self) -> None:
        interval = max(1.0, lease_seconds() / 4)
        try:
            while not self.stop_event.wait(interval):
                try:
                    Task.objects.filter(
                        pk=self.task_id, state=TaskState.RUNNING, lease_owner=self.owner
                    ).update(lease_expires=timezone.now() + timedelta(seconds=lease_seconds()))
                except DatabaseError:
                    # The database restarting is no reason to give the task up: renew again
                    # on a new connection at the next beat (the lease outlasts a few misses).
                    logger.warning("could not renew the lease of task %s", self.task_id)
                    connection.close()
        finally:
            connection.close()

    def stop(self) -> None:
        self.stop_event.set()


def claim(task_id: int, owner: str) -> bool:
    now = timezone.now()
    return bool(
        Task.objects.filter(pk=task_id, state=TaskState.QUEUED).update(
            state=TaskState.RUNNING,
            started=now,
            lease_owner=owner,
            lease_expires=now + timedelta(seconds=lease_seconds()),
        )
    )


def execute(task_id: int, owner: str | None = None) -> bool:
    """Run a queued task to its end. Returns False when the task was not ours to run."""
    owner = owner or worker_identity()
    # A database restarting as the message arrives must not drop it (the message is gone
    # once this returns): wait for it, as finishing does.
    if not _until_database_answers(lambda: claim(task_id, owner)):
        logger.info("task %s is not queued any more; message ignored", task_id)
        return False
    task = _until_database_answers(
        lambda: Task.objects.select_related("host", "vm", "tenant", "user").get(pk=task_id)
    )
    task_changed(task)
    ctx = TaskContext(task, owner)
    heartbeat = _Heartbeat(task_id, owner)
    heartbeat.start()
    try:
        kind = get_kind(task.kind)
        result = kind.handler(ctx) or {}
    except TaskCancelled as exc:
        message = str(exc)
        logger.info("task %s (%s) cancelled: %s", task_id, task.kind, message)
        if finish(task, owner, TaskState.CANCELLED, error=message):
            ctx.log(message, level="warning")
    except (OperationalError, InterfaceError) as exc:
        # The database went away mid-task: what the handler did on the host is unknown here,
        # so it is resolved as a dead worker's task is, once the database answers again.
        logger.warning("task %s (%s) lost the database: %s", task_id, task.kind, exc)
        why = _db_lost_message(exc)
        _until_database_answers(lambda: _resolve(task, owner, kind, why))
    except Exception as exc:
        message = _error_message(exc)
        logger.info("task %s (%s) failed: %s", task_id, task.kind, message)
        try:
            ctx.log(message, level="error")
        except Exception:
            logger.exception("could not log task failure")
        finish(task, owner, TaskState.FAILED, error=message)
    else:
        finish(task, owner, TaskState.SUCCEEDED, result=result)
    finally:
        heartbeat.stop()
    return True


def _error_message(exc: BaseException) -> str:
    """The first registered formatter's wording of ``exc``, else its own message."""
    for formatter in task_error_formatters.values():
        message = formatter(exc)
        if message:
            return message
    return str(exc) or exc.__class__.__name__


def finish(
    task: Task, owner: str, state: str, *, error: str = "", result: dict | None = None
) -> bool:
    values = {"state": state, "finished": timezone.now(), "error": error, "lease_expires": None}
    if state == TaskState.SUCCEEDED:
        values["progress"] = 100
    if result is not None:
        values["result"] = result
    done = _until_database_answers(lambda: _finish_once(task, owner, values))
    if done:
        for key, value in values.items():
            setattr(task, key, value)
        task_changed(task)
    return bool(done)


def _finish_once(task: Task, owner: str, values: dict) -> int:
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, state=TaskState.RUNNING, lease_owner=owner).update(
            **values
        )
        if done:
            locks.release_all(task)
    return done


#: how long a finished task's verdict waits for the database to come back before it is dropped
#: (the lease then runs out and recovery decides from the host's truth)
FINISH_RETRY_SECONDS = 60.0


def _until_database_answers(write: Callable[[], object]):
    """Run ``write`` again on a new connection while the database is unreachable (restarting):
    the work is done on the host, and losing its verdict would make recovery guess. Inside a
    transaction nothing can be retried: the error goes to the caller at once."""
    deadline = time.monotonic() + FINISH_RETRY_SECONDS
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block or time.monotonic() > deadline:
                raise
            logger.warning("the database did not answer; writing the task's end again")
            connection.close()
            time.sleep(1)


# --- recovering -------------------------------------------------------------------------------


def recover_stale_tasks(*, force: bool = False) -> list[int]:
    """Resolve running tasks whose lease expired (their worker died). Returns their ids.

    ``force`` treats every running task as stale: for a process that knows it is the only
    worker (the embedded default at start-up), whatever was running died with the last run.
    """
    now = timezone.now()
    recovered = []
    stale = Task.objects.filter(state=TaskState.RUNNING)
    if not force:
        stale = stale.filter(lease_expires__lt=now)
    for task in stale.order_by("id"):
        try:
            kind = get_kind(task.kind)
        except KeyError:
            kind = None
        outcome, message, values = _outcome(
            task, kind, "The worker running this task stopped before it finished."
        )
        with transaction.atomic():
            # CAS on the very lease we saw expire: a worker that renewed meanwhile keeps its task.
            claim = Task.objects.filter(
                pk=task.pk, state=TaskState.RUNNING, lease_owner=task.lease_owner
            )
            if not force:
                claim = claim.filter(lease_expires__lt=now)
            done = claim.update(finished=timezone.now(), lease_expires=None, **values)
            if done:
                locks.release_all(task)
                level = "warning" if outcome.finished else "error"
                TaskLogEntry.objects.create(task=task, message=message, level=level)
        if done:
            recovered.append(task.pk)
            task.refresh_from_db()
            task_changed(task)
    return recovered


def _outcome(task: Task, kind: TaskKind | None, why: str) -> tuple[Recovery, str, dict]:
    """Ask the kind's ``recover`` hook about an interrupted task: (its answer, the message for
    the log, the values that end the task)."""
    outcome = Recovery(note="")
    if kind is not None and kind.recover is not None:
        try:
            outcome = kind.recover(task)
        except Exception as exc:
            logger.exception("recovery of task %s failed", task.pk)
            outcome = f"recovery could not inspect the host: {_error_message(exc)}"
        if not isinstance(outcome, Recovery):
            outcome = Recovery(note=outcome or "")
    message = f"{why} {outcome.note}" if outcome.note else why
    if outcome.finished:
        values = {"state": TaskState.SUCCEEDED, "progress": 100, "error": ""}
        values["result"] = outcome.result or {}
    elif task.cancel_requested is not None:
        # Asked to stop, then undone as a failure is: the end the user asked for.
        message = f"{_cancelled_message(task.cancelled_by_id)} {message}"
        values = {"state": TaskState.CANCELLED, "error": message}
    else:
        values = {"state": TaskState.FAILED, "error": message}
    return outcome, message, values


def _db_lost_message(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
    return f"The database connection was lost while this task ran ({first})."


def _resolve(task: Task, owner: str, kind: TaskKind, why: str) -> bool:
    """End our own running task the way recovery ends a dead worker's (the kind's hook looks
    at the host's truth: rolls back, or finishes an idempotent kind)."""
    task.refresh_from_db()
    outcome, message, values = _outcome(task, kind, why)
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, state=TaskState.RUNNING, lease_owner=owner).update(
            finished=timezone.now(), lease_expires=None, **values
        )
        if done:
            locks.release_all(task)
            level = "warning" if outcome.finished else "error"
            TaskLogEntry.objects.create(task=task, message=message, level=level)
    if done:
        task.refresh_from_db()
        task_changed(task)
    return bool(done)


#: a queued task unclaimed this long after its last send is sent again (doubling each time)
RESEND_AFTER_SECONDS = 10.0
RESEND_MAX_INTERVAL_SECONDS = 600.0
RESEND_BATCH = 500


def resend_interval(sends: int) -> float:
    """Seconds to wait after the ``sends``-th send before sending again: 10, 20, 40 ... 600."""
    return min(RESEND_MAX_INTERVAL_SECONDS, RESEND_AFTER_SECONDS * 2 ** max(0, sends - 1))


#: a key the sweep keeps in a Redis broker: gone means the broker lost what it held
BROKER_MARK = "paddock:broker-mark"


def broker_was_emptied(url: str | None = None) -> bool:
    """Whether a Redis broker lost its contents since the last sweep (restarted empty, or
    flushed): the mark the sweep keeps there is gone. Sets the mark again. False for other
    brokers, and when Redis does not answer (its messages are then no worse off)."""
    url = url or settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return False
    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        with client:
            return bool(client.set(BROKER_MARK, "1", nx=True))
    except redis.RedisError:
        return False


def resend_lost_tasks(now=None, *, everything: bool = False) -> list[int]:
    """Send again the queued tasks whose message may be lost. Returns their ids.

    A task is the database row, the broker message only a wake-up call: the row is committed
    first and the message sent after the commit, so a web process that dies in between, or a
    broker that restarts empty, leaves a task no worker will ever hear of. Any task still
    ``queued`` a while after its last send (or never sent) is sent again. A duplicate message
    does nothing: the claim is a compare-and-swap on ``queued``. Cancelled, running and
    finished tasks are never sent. The wait doubles with each send, so a task queued behind a
    long one on its host's queue does not flood the broker; but when the broker was emptied
    (``broker_was_emptied``), or ``everything`` is asked (a worker starting, whose predecessor
    may have died holding messages), every queued task is sent at once, whatever its wait.
    """
    now = now or timezone.now()
    everything = broker_was_emptied() or everything
    first = now - timedelta(seconds=RESEND_AFTER_SECONDS)
    candidates = Task.objects.filter(state=TaskState.QUEUED)
    if not everything:
        candidates = candidates.filter(
            Q(sent_at__isnull=True, created__lt=first) | Q(sent_at__lt=first)
        )
    candidates = candidates.order_by("id").values_list("pk", "host_id", "sent_at", "sends")
    resent = []
    # Lost for certain: all of them now; otherwise a batch a sweep.
    for task_id, host_id, sent_at, sends in candidates if everything else candidates[:RESEND_BATCH]:
        if (
            not everything
            and sent_at is not None
            and (now - sent_at).total_seconds() < resend_interval(sends)
        ):
            continue
        dispatch(task_id, queue_for(host_id))
        resent.append(task_id)
    if resent:
        logger.warning("sent %d queued task(s) again: %s", len(resent), resent[:20])
    return resent


def requeue_orphaned_queued_tasks() -> int:
    """Queue again the queued tasks whose message died with an in-process broker."""
    rows = list(Task.objects.filter(state=TaskState.QUEUED).values_list("pk", "host_id"))
    for task_id, host_id in rows:
        dispatch(task_id, queue_for(host_id))
    return len(rows)


# --- cancelling -------------------------------------------------------------------------------


class CancelRefused(Exception):
    """The task cannot be cancelled: it ended already, or it runs and has no safe point to
    stop at (the reason is the kind's). The API answers 409 with the message."""


def _username(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    return get_user_model().objects.filter(pk=user_id).values_list("username", flat=True).first()


def _cancelled_message(user_id: int | None) -> str:
    who = _username(user_id)
    return f"Cancelled by {who}." if who else "Cancelled."


def _kind_or_none(name: str) -> TaskKind | None:
    try:
        return get_kind(name)
    except KeyError:
        return None


def task_cancel(*, user, task: Task) -> Task:
    """Cancel ``task`` for ``user``, who may if their role may run its kind's action in the
    task's tenant (the task itself is looked up among those the user may see)."""
    kind = _kind_or_none(task.kind)
    permission = kind.permission if kind is not None else Action.VM_CHANGE
    if not can(user, permission, task.tenant_id):
        raise PermissionDenied("Your role may not cancel this task.")
    return cancel(task, user)


def cancel(task: Task, user=None, *, preempt: bool = False) -> Task:
    """Cancel ``task``. Queued: it ends ``cancelled`` at once, its locks released, and the
    kind's ``cancelled`` hook tidies what the request wrote. Running: a cancel request the
    handler honours at its next safe point, or CancelRefused with the kind's reason.
    ``preempt`` ends a running task at once, its locks released, for a caller that knows
    the rest of its work is only waiting (a Stop over a pending shutdown): its worker finds
    it ended at its next check and does nothing more. Ended already: CancelRefused."""
    user_id = user.pk if user is not None and user.is_authenticated else None
    message = _cancelled_message(user_id)
    kind = _kind_or_none(task.kind)
    for _attempt in range(3):  # each CAS that loses sees a newer state
        now = timezone.now()
        ended = {
            "state": TaskState.CANCELLED,
            "finished": now,
            "error": message,
            "cancel_requested": now,
            "cancelled_by_id": user_id,
            "lease_expires": None,
        }
        with transaction.atomic():
            done = Task.objects.filter(pk=task.pk, state=TaskState.QUEUED).update(**ended)
            if done:
                locks.release_all(task)
                TaskLogEntry.objects.create(task=task, message=message, level="warning")
                if kind is not None and kind.cancelled is not None:
                    kind.cancelled(task)
        if done:
            break
        task.refresh_from_db()
        if task.is_final:
            raise CancelRefused(f"Task #{task.pk} ended already ({task.state}).")
        if task.state != TaskState.RUNNING:
            continue
        if preempt:
            with transaction.atomic():
                done = Task.objects.filter(
                    pk=task.pk, state=TaskState.RUNNING, lease_owner=task.lease_owner
                ).update(**ended)
                if done:
                    locks.release_all(task)
                    TaskLogEntry.objects.create(task=task, message=message, level="warning")
            if done:
                break
            continue
        reason = kind.refusal(task) if kind is not None else NOT_STOPPABLE.format(title=task.title)
        if reason:
            raise CancelRefused(reason)
        done = Task.objects.filter(
            pk=task.pk, state=TaskState.RUNNING, cancel_requested__isnull=True
        ).update(cancel_requested=now, cancelled_by_id=user_id)
        if done:
            who = _username(user_id) or "the system"
            TaskLogEntry.objects.create(
                task=task,
                message=f"Cancel asked by {who}: the task stops at its next safe point.",
                level="warning",
            )
        break  # asked now, or asked already: the handler stops at its next safe point
    task.refresh_from_db()
    task_changed(task)
    return task
