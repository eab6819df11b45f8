"""Run the metrics collector on its own: every host, every PADDOCK_METRICS_INTERVAL seconds."""

from django.core.management.base import BaseCommand

from metrics.collector import interval, run_forever


class Command(BaseCommand):
    help = "Collect host, VM and storage pool metrics every interval, forever."

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval", type=float, default=None, help="Seconds between rounds (default 10)."
        )

    def handle(self, *args, **options):
        seconds = options["interval"] or interval()
        self.stdout.write(f"Collecting metrics every {seconds:g} s")
        try:
            run_forever(seconds)
        except KeyboardInterrupt:
            pass
