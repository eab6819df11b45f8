"""The embedded default: web server, Celery worker and host watcher in one process.

With no Redis, Celery uses its in-process ``memory://`` broker, so the worker must live in the
same process as the web server that queues tasks. This process also owns every host's libvirt
connection, which keeps a test-driver host's simulated state consistent between the web
requests, the tasks and the watcher.
"""

from __future__ import annotations

import logging
import threading

import uvicorn
from celery.worker import WorkController
from django.conf import settings
from django.db import close_old_connections

from hosts.reconcile import run_forever
from hosts.watcher import start_watchers
from metrics.collector import interval as metrics_interval
from metrics.collector import run_forever as collect_metrics
from paddock.celery import app
from panel import taskrunner

logger = logging.getLogger(__name__)


def start_worker(concurrency: int = 4):
    """A Celery worker in a thread of this process, consuming the default queue."""
    app.finalize()
    app.set_current()
    app.set_default()
    worker = WorkController(
        app=app,
        concurrency=concurrency,
        pool="threads",
        hostname="embedded@paddock",
        queues=[settings.CELERY_TASK_DEFAULT_QUEUE],
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
        ready_callback=None,
    )
    thread = threading.Thread(target=worker.start, name="celery-worker", daemon=True)
    thread.start()
    return worker


def start_background(stop: threading.Event) -> list[threading.Thread]:
    """The host watchers (libvirt events per host), the reconcile loop and the recovery
    sweep, as daemon threads."""

    def recovery_loop() -> None:
        while not stop.wait(5):
            close_old_connections()
            try:
                taskrunner.recover_stale_tasks()
                taskrunner.resend_lost_tasks()
            except Exception:
                logger.exception("recovery sweep failed")

    threads = [
        threading.Thread(
            target=run_forever,
            args=(settings.PADDOCK["RECONCILE_SECONDS"], stop),
            name="host-watcher",
            daemon=True,
        ),
        threading.Thread(target=recovery_loop, name="task-recovery", daemon=True),
        threading.Thread(
            target=collect_metrics,
            args=(metrics_interval(), stop),
            name="metrics-collector",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    threads.append(start_watchers(stop))
    return threads


def run(host: str, port: int) -> None:
    # Tasks whose worker died with a previous run of this process, and queued tasks whose
    # in-memory messages died with it, are resolved or queued again before serving.
    taskrunner.recover_stale_tasks(force=True)
    start_worker()
    requeued = taskrunner.requeue_orphaned_queued_tasks()
    if requeued:
        logger.info("queued %d task(s) left over from the previous run", requeued)
    stop = threading.Event()
    start_background(stop)
    config = uvicorn.Config(
        "paddock.asgi:application", host=host, port=port, log_level="warning", lifespan="off"
    )
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()
