"""Run the host watchers: live libvirt events per host, the periodic reconcile and the metrics
collector (one process of the production shape), for every host or one shard of them."""

import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from hosts.reconcile import run_forever
from hosts.shards import Shard
from hosts.watcher import WatcherManager, WatcherPool
from metrics.collector import interval as metrics_interval
from metrics.collector import run_forever as collect_metrics

# Database connections besides the appliers': the reconcile loop, the metrics collector and
# the rescan.
OTHER_DB_CONNECTIONS = 3


def shard_argument(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise CommandError(f"--shard: {exc}") from None


def pool_max_size() -> int | None:
    """The database pool's size of this process (PostgreSQL), None without a pool."""
    options = settings.DATABASES["default"].get("OPTIONS", {})
    pool = options.get("pool")
    return pool.get("max_size") if isinstance(pool, dict) else None


class Command(BaseCommand):
    help = (
        "Watch the hosts (all, or the shard i/n: hosts whose id modulo n is i): libvirt events "
        "on one event loop with a fixed set of threads, hosts added later picked up and removed "
        "ones dropped, the periodic reconcile and the metrics collector of those hosts."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--shard",
            default="0/1",
            help="This process's share of the hosts, i/n with 0 <= i < n: the hosts whose id "
            "modulo n is i (default 0/1: every host). Run n processes, 0/n to n-1/n.",
        )
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
        shard = shard_argument(options["shard"])
        if options["interval"] <= 0 or options["rescan"] <= 0:
            raise CommandError("--interval and --rescan must be positive numbers of seconds.")
        pool = WatcherPool()
        pool_size = pool_max_size()
        if pool_size is not None and pool.appliers + OTHER_DB_CONNECTIONS > pool_size:
            appliers = max(1, pool_size - OTHER_DB_CONNECTIONS)
            self.stderr.write(
                f"WATCHER_APPLIERS={pool.appliers} needs {pool.appliers + OTHER_DB_CONNECTIONS} "
                f"database connections but the pool has {pool_size} (PADDOCK_DB_POOL_MAX): "
                f"running {appliers} appliers."
            )
            pool = WatcherPool(appliers=appliers)
        stop = threading.Event()
        manager = WatcherManager(options["rescan"], shard, pool)
        if not options["no_events"]:
            # The watchers first, so the reconcile's first round already leaves to them the
            # hosts they are still trying to reach: they reconcile when they connect.
            pool.start()
            manager.rescan()
        skip = None if options["no_events"] else pool.retrying
        reconcile = threading.Thread(
            target=run_forever,
            args=(options["interval"], stop, shard, skip),
            name="reconcile",
            daemon=True,
        )
        reconcile.start()
        # Metrics are collected here too: one bulk stats call per host per interval.
        threading.Thread(
            target=collect_metrics,
            args=(metrics_interval(), stop, shard),
            name="metrics",
            daemon=True,
        ).start()
        self.stdout.write(
            f"Watching hosts of shard {shard}: reconcile every {options['interval']:g} s"
            + (
                ""
                if options["no_events"]
                else f", libvirt events on {pool.openers} openers and {pool.appliers} appliers"
            )
        )
        self.stdout.flush()
        try:
            if options["no_events"]:
                stop.wait()
            else:
                manager.run(stop)
        except KeyboardInterrupt:
            pass
        finally:
            stop.set()
            reconcile.join(timeout=10)
