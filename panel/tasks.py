"""Celery entry points of the task engine; thin wrappers over panel.taskrunner."""

from celery import shared_task
from celery.signals import worker_ready
from celery.worker.control import control_command

from . import taskrunner


@shared_task(name="panel.tasks.run_task", ignore_result=True)
def run_task(task_id: int) -> None:
    taskrunner.execute(task_id)


@shared_task(name="panel.tasks.recover_stale_tasks", ignore_result=True)
def recover_stale_tasks() -> None:
    """The periodic sweep: dead workers' tasks, and host queues no worker consumes yet."""
    taskrunner.recover_stale_tasks()
    sync_host_queues()


@worker_ready.connect
def _on_worker_ready(**_kwargs) -> None:
    """A starting worker first resolves what dead workers left running."""
    taskrunner.recover_stale_tasks()


@control_command()
def paddock_sync_queues(state) -> dict:
    """Run inside each worker's event loop: consume every host queue it does not consume yet.

    Idempotent, so it is broadcast when a host is added and again by the periodic sweep: a
    worker that was still starting when a host was added (and missed that broadcast) catches
    up within one sweep instead of leaving the host's tasks queued forever.
    """
    from hosts.models import Host

    consumer = state.consumer
    current = {q.name for q in consumer.task_consumer.queues}
    added = []
    for host_id in Host.objects.values_list("pk", flat=True):
        queue = taskrunner.queue_for(host_id)
        if queue not in current:
            consumer.add_task_queue(queue)
            added.append(queue)
    return {"ok": f"consuming {len(current) + len(added)} queues", "added": added}


def sync_host_queues() -> None:
    """Ask every running worker to consume the queues of all hosts (no restart needed)."""
    from django.conf import settings

    from .celery import app

    if not settings.EMBEDDED:
        app.control.broadcast("paddock_sync_queues", reply=False)


def consume_host_queue(host_id: int) -> None:
    """A host was added: running workers start consuming its queue."""
    sync_host_queues()
