"""Periodic reconcile: compare each host with the inventory and repair drift.

The watcher process (or thread, in the embedded default) runs this loop. A host busy with a
Paddock task is skipped this round; one that does not answer is marked offline with libvirt's
message and retried next round. Live events on top of this come with the event watcher.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from .choices import HostStatus
from .connection import HostConnectError, drop_connection
from .models import Host
from .sync import mark_unreachable, sync_host

logger = logging.getLogger(__name__)


def reconcile_host(host: Host) -> dict | None:
    if host.lock_id is not None:
        return None
    try:
        return sync_host(host)
    except HostConnectError as exc:
        drop_connection(host)
        mark_unreachable(host, str(exc), HostStatus.OFFLINE)
        logger.info("host %s unreachable: %s", host.name, exc)
        return None


def reconcile_all() -> int:
    count = 0
    for host in Host.objects.all().order_by("pk"):
        try:
            if reconcile_host(host) is not None:
                count += 1
        except Exception:
            logger.exception("reconcile of host %s failed", host.name)
    return count


def run_forever(interval: float, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    while not stop.is_set():
        close_old_connections()
        started = time.monotonic()
        reconcile_all()
        stop.wait(max(1.0, interval - (time.monotonic() - started)))
