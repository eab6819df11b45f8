"""Per-object locks held by tasks, taken and released with compare-and-swap UPDATEs.

A lockable model has a nullable ``lock`` foreign key to the Task holding it. Taking a lock is
``UPDATE … SET lock = task WHERE id = … AND lock IS NULL``: exactly one concurrent request wins,
on SQLite and PostgreSQL alike. A lock left behind by a task that already ended (a worker killed
between finishing and releasing) is taken over with a second CAS on that exact holder.

The apps name their lockable models (``panel.registry.register_lockable``); a task's locks are
released on every one of them.
"""

from __future__ import annotations

from django.db import models

from .choices import FINAL_TASK_STATES
from .models import Task
from .registry import lockable_models


class LockConflict(Exception):
    def __init__(self, obj: models.Model, holder: Task | None):
        self.obj = obj
        self.holder = holder
        what = f"{obj._meta.verbose_name} {obj}"
        if holder is not None:
            msg = f"{what} is busy with task #{holder.pk} ({holder.kind}, {holder.state})."
        else:
            msg = f"{what} is busy."
        super().__init__(msg)


def acquire(obj: models.Model, task: Task) -> None:
    """Give ``obj``'s lock to ``task`` or raise LockConflict naming the task that holds it."""
    manager = type(obj)._default_manager
    if manager.filter(pk=obj.pk, lock__isnull=True).update(lock=task):
        obj.lock_id = task.pk
        return
    holder_id = manager.filter(pk=obj.pk).values_list("lock_id", flat=True).first()
    holder = Task.objects.filter(pk=holder_id).first() if holder_id else None
    if holder is None or holder.state in FINAL_TASK_STATES:
        # The holder ended (or vanished) without releasing: take over exactly that stale lock.
        if manager.filter(pk=obj.pk, lock_id=holder_id).update(lock=task):
            obj.lock_id = task.pk
            return
        holder_id = manager.filter(pk=obj.pk).values_list("lock_id", flat=True).first()
        holder = Task.objects.filter(pk=holder_id).first() if holder_id else None
    raise LockConflict(obj, holder)


def release_all(task: Task | int) -> None:
    task_id = task.pk if isinstance(task, Task) else task
    for model in lockable_models.values():
        model._default_manager.filter(lock_id=task_id).update(lock=None)
