"""Run the host watcher: reconcile every host with the inventory, forever."""

from django.conf import settings
from django.core.management.base import BaseCommand

from hosts.reconcile import run_forever


class Command(BaseCommand):
    help = "Watch the hosts: reconcile each host's libvirt state with the inventory periodically."

    def add_arguments(self, parser):
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.PADDOCK["RECONCILE_SECONDS"],
            help="Seconds between reconcile rounds.",
        )

    def handle(self, *args, **options):
        self.stdout.write(f"Watching hosts every {options['interval']:.0f} s")
        try:
            run_forever(options["interval"])
        except KeyboardInterrupt:
            pass
