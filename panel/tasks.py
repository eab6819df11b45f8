"""Celery entry points of the task engine; thin wrappers over panel.taskrunner.

Besides the default queue, workers consume the queues the apps register
(``panel.registry.worker_queues``: one per host).
"""

from celery import current_app, shared_task
from celery.signals import worker_ready
from celery.worker.control import control_command
from django.conf import settings

from . import taskrunner
from .registry import worker_queues
from .taskrunner import run_task

__all__ = [
    "consume_host_queue",
    "recover_stale_tasks",
    "resend_lost_tasks",
    "run_task",
    "sync_host_queues",
]


@shared_task(name="panel.tasks.recover_stale_tasks", ignore_result=True)
def recover_stale_tasks() -> None:
    """The periodic sweep: dead workers' tasks, and host queues no worker consumes yet."""
    taskrunner.recover_stale_tasks()
    sync_host_queues()


@shared_task(name="panel.tasks.resend_lost_tasks", ignore_result=True)
def resend_lost_tasks() -> None:
    """The periodic sweep for queued tasks whose broker message was lost."""
    taskrunner.resend_lost_tasks()


@worker_ready.connect
def _on_worker_ready(**_kwargs) -> None:
    """A starting worker first resolves what dead workers left running, and sends every queued
    task again: a worker killed before it started the messages it had taken leaves them
    unacknowledged in the broker (for its visibility timeout, an hour), however short their
    resend wait."""
    taskrunner.recover_stale_tasks()
    taskrunner.resend_lost_tasks(everything=True)


def registered_queues() -> list[str]:
    """Every queue the apps registered (the hosts' queues), without repeats."""
    queues: dict[str, None] = {}
    for source in worker_queues.values():
        queues.update(dict.fromkeys(source()))
    return list(queues)


@control_command()
def paddock_sync_queues(state) -> dict:
    """Run inside each worker's event loop: consume every host queue it does not consume yet.

    Idempotent, so it is broadcast when a host is added and again by the periodic sweep: a
    worker that was still starting when a host was added (and missed that broadcast) catches
    up within one sweep instead of leaving the host's tasks queued forever.
    """
    consumer = state.consumer
    current = {q.name for q in consumer.task_consumer.queues}
    added = []
    for queue in registered_queues():
        if queue not in current:
            consumer.add_task_queue(queue)
            added.append(queue)
    return {"ok": f"consuming {len(current) + len(added)} queues", "added": added}


def sync_host_queues() -> None:
    """Ask every running worker to consume the queues of all hosts (no restart needed)."""
    if not settings.EMBEDDED:
        current_app.control.broadcast("paddock_sync_queues", reply=False)


def consume_host_queue(host_id: int) -> None:
    """A host was added: running workers start consuming its queue."""
    sync_host_queues()
