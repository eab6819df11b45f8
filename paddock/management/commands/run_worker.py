"""Run a Celery worker consuming the default queue and every host's queue.

The host queues known now are given on the worker's command line, so the worker polls them
from its first moment; hosts added later reach running workers as an ``add_consumer``
broadcast. Extra arguments go to ``celery worker`` (e.g. ``--concurrency 4 --loglevel INFO``).
"""

from django.conf import settings
from django.core.management.base import BaseCommand

from paddock.celery import app
from panel.tasks import registered_queues


class Command(BaseCommand):
    help = "Run a Celery worker on the default queue and the queue of every host."

    def add_arguments(self, parser):
        parser.add_argument("celery_args", nargs="*", help="Passed to `celery worker`.")

    def handle(self, *args, **options):
        queues = [settings.CELERY_TASK_DEFAULT_QUEUE, *registered_queues()]
        argv = ["worker", "-Q", ",".join(dict.fromkeys(queues)), *options["celery_args"]]
        app.worker_main(argv)
