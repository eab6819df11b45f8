"""Run the host watchers: live libvirt events per host, the periodic reconcile and the metrics
collector (one process of the production shape)."""

import threading

from django.conf import settings
from django.core.management.base import BaseCommand

from hosts.reconcile import run_forever
from hosts.watcher import WatcherManager
from metrics.collector import interval as metrics_interval
from metrics.collector import run_forever as collect_metrics


class Command(BaseCommand):
    help = (
        "Watch the hosts: one libvirt event watcher per host (hosts added later are picked up, "
        "removed ones dropped), and a periodic reconcile of each host with the inventory."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.PADDOCK["RECONCILE_SECONDS"],
            help="Seconds between reconcile rounds (the safety net under the events).",
        )
        parser.add_argument(
            "--rescan",
            type=float,
            default=5.0,
            help="Seconds between looks for added or removed hosts.",
        )
        parser.add_argument(
            "--no-events",
            action="store_true",
            help="Only the periodic reconcile, no event watchers.",
        )

    def handle(self, *args, **options):
        stop = threading.Event()
        reconcile = threading.Thread(
            target=run_forever, args=(options["interval"], stop), name="reconcile", daemon=True
        )
        reconcile.start()
        # Metrics are collected here too: one bulk stats call per host per interval.
        threading.Thread(
            target=collect_metrics, args=(metrics_interval(), stop), name="metrics", daemon=True
        ).start()
        self.stdout.write(
            f"Watching hosts: reconcile every {options['interval']:.0f} s"
            + ("" if options["no_events"] else ", libvirt events per host")
        )
        try:
            if options["no_events"]:
                stop.wait()
            else:
                WatcherManager(options["rescan"]).run(stop)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            reconcile.join(timeout=10)
