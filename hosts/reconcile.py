"""Periodic reconcile: compare each host with the inventory and repair drift.

The safety net under the event watchers (``hosts.watcher``): a host busy with a Paddock task is
skipped this round; one that does not answer is marked offline with libvirt's message and
retried next round. What a round changed (a VM's state, a VM that appeared or vanished, the
host's status) is published as ``vm.updated`` / ``host.updated``, so browsers see drift repairs
as they see events. A watcher process that serves one shard of the hosts (``hosts.shards``,
``watch_hosts --shard i/n``) reconciles that shard's hosts only, and leaves out the hosts its
watchers are still trying to reach (``skip``): they retry with backoff and reconcile as soon
as they connect, so the round does not wait for an unreachable host twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections

from panel import events

from . import hooks
from .choices import HostStatus
from .driver.connection import HostConnectError, drop_connection
from .models import Host
from .shards import ALL, Shard
from .sync import mark_unreachable, sync_host

logger = logging.getLogger(__name__)


def reconcile_host(host: Host, publish: bool = True) -> dict | None:
    if host.lock_id is not None:
        return None
    status, error = host.status, host.last_error
    # What the apps above (vms) publish of the round's changes to their rows.
    finish = hooks.observe_reconcile(host) if publish else None
    try:
        summary = sync_host(host)
    except HostConnectError as exc:
        drop_connection(host)
        mark_unreachable(host, str(exc), HostStatus.OFFLINE)
        logger.info("host %s unreachable: %s", host.name, exc)
        if publish and (host.status, host.last_error) != (status, error):
            events.host_changed(host, event="offline")
        return None
    if publish:
        summary["published"] = finish()
        if (host.status, host.last_error) != (status, error):
            events.host_changed(host, event="online")
    return summary


def reconcile_all(shard: Shard = ALL, skip: Callable[[int], bool] | None = None) -> int:
    count = 0
    for host in shard.hosts(Host.objects.all()).order_by("pk"):
        if skip is not None and skip(host.pk):
            continue
        try:
            if reconcile_host(host) is not None:
                count += 1
        except Exception:
            logger.exception("reconcile of host %s failed", host.name)
    return count


def run_forever(
    interval: float,
    stop: threading.Event | None = None,
    shard: Shard = ALL,
    skip: Callable[[int], bool] | None = None,
) -> None:
    stop = stop or threading.Event()
    while not stop.is_set():
        close_old_connections()
        started = time.monotonic()
        reconcile_all(shard, skip)
        stop.wait(max(1.0, interval - (time.monotonic() - started)))
