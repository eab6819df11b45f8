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
def _on_worker_ready(**_kwargs) -> None:
    """A starting worker first resolves what dead workers left running."""
    taskrunner.recover_stale_tasks()


def consume_host_queue(host_id: int) -> None:
    """Tell running workers to consume a new host's queue: no restart needed."""
    from django.conf import settings

    from .celery import app

    if not settings.EMBEDDED:
        app.control.add_consumer(taskrunner.queue_for(host_id), reply=False)
