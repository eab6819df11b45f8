"""Celery entry points of the task engine; thin wrappers over panel.taskrunner."""

from celery import shared_task
from celery.signals import worker_ready

from . import taskrunner


@shared_task(name="panel.tasks.run_task", ignore_result=True)
def run_task(task_id: int) -> None:
    taskrunner.execute(task_id)


@shared_task(name="panel.tasks.recover_stale_tasks", ignore_result=True)
def recover_stale_tasks() -> None:
    taskrunner.recover_stale_tasks()


@worker_ready.connect
def _recover_on_start(**_kwargs) -> None:
    """A starting worker first resolves what dead workers left running."""
    taskrunner.recover_stale_tasks()
