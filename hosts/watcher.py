"""Host watchers: libvirt events turned into inventory updates and live messages.

One :class:`HostWatcher` per host holds a libvirt connection with an event loop and keepalive,
and registers callbacks for domain lifecycle, device added/removed, job completed, reboot,
storage pool lifecycle and network lifecycle events. The callbacks run on libvirt's event
thread and only queue what happened; a worker thread per host does the database work:

* a domain event goes to the domain handlers registered in ``hosts.hooks`` (``vms`` registers
  the one that re-reads that domain into its VM row: ``vms.domain_events``);
* a pool or network event re-reads the host's pools or networks;

and sends ``host.updated`` after the transaction commits (``panel.events``). The libvirt side
(the connection with keepalive, the callbacks and their constants) is ``hosts.driver.watch``.

When the connection dies (keepalive, close callback, or a failed call) the watcher reconnects;
while it cannot, it marks the host offline with libvirt's message and retries with backoff
(1, 2, 4 ... 30 s). Once connected again it runs a full reconcile, since events may have been
missed meanwhile. The periodic reconcile
(``hosts.reconcile``) stays as the safety net.

A test-driver host (``test:///...``) keeps its simulated state per connection, so its watcher
registers on the process's shared connection (``hosts.driver.connection.get_connection``); its events
are the ones caused through that connection, i.e. by this process.

:class:`WatcherManager` keeps one watcher per host row, starting watchers for hosts added later
and stopping those of removed hosts; ``manage.py watch_hosts`` and the embedded default run it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from django.db import close_old_connections, connections, transaction

from panel import events

from . import hooks
from .choices import HostStatus
from .driver.connection import (
    HostConnectError,
    effective_uri,
    get_connection,
    libvirt_error_message,
    parse_uri,
)
from .driver.domains import DriverError
from .driver.events import ensure_event_loop
from .driver.watch import Subscription, connection_alive, open_watch_connection, subscribe
from .models import Host
from .reconcile import reconcile_host
from .sync import sync_networks, sync_pools

logger = logging.getLogger(__name__)

BACKOFF_MAX = 30.0
LIVENESS_SECONDS = 1.0

# --- what the callbacks queue ------------------------------------------------------------------


@dataclass
class _Batch:
    """Events drained from the queue in one go; repeated events for one object collapse."""

    domains: dict[str, str] = field(default_factory=dict)  # uuid -> last event name
    pools: bool = False
    networks: bool = False
    reconcile: bool = False


class HostWatcher:
    """Watch one host; :meth:`start` runs it in threads until :meth:`stop`."""

    def __init__(self, host_id: int) -> None:
        self.host_id = host_id
        self.host: Host | None = None
        self.conn = None  # the driver's connection while watching
        self.ready = threading.Event()  # set while callbacks are registered
        self.stats = {"connects": 0, "reconciles": 0, "events": 0, "applied": 0, "failures": 0}
        self.last_error = ""
        self._stop = threading.Event()
        self._dead = threading.Event()
        self._queue: queue.Queue = queue.Queue()
        self._generation = 0
        self._subscription: Subscription | None = None
        self._own_connection = True
        self._threads: list[threading.Thread] = []

    # -- threads ------------------------------------------------------------------------------

    def start(self) -> HostWatcher:
        ensure_event_loop()
        self._threads = [
            threading.Thread(target=self._run, name=f"watch-host-{self.host_id}", daemon=True),
            threading.Thread(target=self._work, name=f"apply-host-{self.host_id}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._dead.set()
        self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _run(self) -> None:
        """Connect, watch until the connection dies, reconnect with backoff; until stopped."""
        delay = 1.0
        try:
            while not self._stop.is_set():
                close_old_connections()
                try:
                    host = Host.objects.get(pk=self.host_id)
                except Host.DoesNotExist:
                    return
                self.host = host
                try:
                    self._connect(host)
                except HostConnectError as exc:
                    self._mark_offline(host, str(exc))
                    self._stop.wait(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                delay = 1.0
                # Events may have been missed while no callback was registered: a full
                # reconcile brings the inventory back in line (and the host back online).
                self._queue.put(("reconcile",))
                self._watch()
                self._disconnect()
                if not self._stop.is_set():
                    # Straight back to connecting: the host is marked offline only if that
                    # fails, so a dropped connection that comes back at once does not flap.
                    logger.info("host %s: connection lost: %s", host.name, self.last_error)
        finally:
            self._disconnect()
            connections.close_all()

    def _work(self) -> None:
        """Apply queued events to the inventory, off libvirt's event thread."""
        try:
            while not self._stop.is_set():
                item = self._queue.get()
                if item is None:
                    continue
                batch = _Batch()
                self._add(batch, item)
                while True:  # everything queued meanwhile, collapsed
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        self._add(batch, item)
                if self._stop.is_set():
                    return
                close_old_connections()
                try:
                    self._apply(batch)
                except DriverError as exc:
                    self.stats["failures"] += 1
                    self.last_error = libvirt_error_message(exc)
                    logger.warning("host %s: %s", self.host_id, self.last_error)
                    if not self._connection_alive():
                        self._dead.set()
                except Exception:
                    self.stats["failures"] += 1
                    if self._connection_alive():
                        logger.exception("host %s: applying events failed", self.host_id)
                    else:
                        # The connection went away under the call; the reconnect's full
                        # reconcile covers what these events were about.
                        self._dead.set()
        finally:
            connections.close_all()

    # -- the connection -----------------------------------------------------------------------

    def _connect(self, host: Host) -> None:
        self._dead.clear()
        self._generation += 1
        gen = self._generation
        self._own_connection = not parse_uri(host.uri).simulated
        if self._own_connection:
            conn = open_watch_connection(effective_uri(host))
        else:
            # The test driver's state lives in the connection: use the process's shared one.
            conn = get_connection(host)
        self.conn = conn

        def on_domain(uuid: str, event: str) -> None:
            if gen == self._generation:  # not a connection this watcher already left
                self.stats["events"] += 1
                self._queue.put(("domain", uuid, event))

        def on_object(kind: str):
            def callback() -> None:
                if gen == self._generation:
                    self.stats["events"] += 1
                    self._queue.put((kind,))

            return callback

        def on_close(message: str) -> None:
            if gen == self._generation:
                self.last_error = message
                self._dead.set()

        try:
            self._subscription = subscribe(
                conn,
                own=self._own_connection,
                on_domain=on_domain,
                on_pools=on_object("pools"),
                on_networks=on_object("networks"),
                on_close=on_close,
            )
        except HostConnectError:
            self.conn = None
            raise
        self.stats["connects"] += 1
        self.last_error = ""
        self.ready.set()
        logger.info("watching host %s", host.name)

    def _connection_alive(self) -> bool:
        return connection_alive(self.conn)

    def _watch(self) -> None:
        """Until stopped or the connection dies: keepalive and the close callback set
        ``_dead``; a closed connection object is noticed by the liveness check."""
        while not self._stop.is_set():
            if self._dead.wait(LIVENESS_SECONDS):
                return
            if not self._connection_alive():
                self.last_error = self.last_error or "Connection to the host lost."
                return

    def _disconnect(self) -> None:
        self.ready.clear()
        self.conn = None
        self._generation += 1  # callbacks of the old connection are ignored from now on
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.cancel()  # and closes the connection if it is the watcher's own

    def _mark_offline(self, host: Host, message: str) -> None:
        self.last_error = message
        changed = Host.objects.filter(pk=host.pk).exclude(
            status=HostStatus.OFFLINE, last_error=message[:2000]
        )
        if changed.update(status=HostStatus.OFFLINE, last_error=message[:2000]):
            host.status, host.last_error = HostStatus.OFFLINE, message[:2000]
            events.host_changed(host, event="offline")
            logger.info("host %s offline: %s", host.name, message)

    # -- applying events ----------------------------------------------------------------------

    @staticmethod
    def _add(batch: _Batch, item: tuple) -> None:
        kind = item[0]
        if kind == "domain":
            batch.domains[item[1]] = item[2]
        elif kind == "pools":
            batch.pools = True
        elif kind == "networks":
            batch.networks = True
        elif kind == "reconcile":
            batch.reconcile = True

    def _apply(self, batch: _Batch) -> None:
        host = Host.objects.get(pk=self.host_id)
        conn = self.conn
        if batch.reconcile:
            reconcile_host(host, publish=True)
            self.stats["reconciles"] += 1
        if conn is None:
            return
        if batch.pools or batch.networks:
            with transaction.atomic():
                if batch.pools:
                    sync_pools(host, conn)
                if batch.networks:
                    sync_networks(host, conn)
                changed = [
                    n for n, flag in (("pools", batch.pools), ("networks", batch.networks)) if flag
                ]
                events.host_changed(host, event="inventory", changed=changed)
        for uuid, event in batch.domains.items():
            hooks.handle_domain_event(host, conn, uuid, event)
            self.stats["applied"] += 1


# --- every host --------------------------------------------------------------------------------


class WatcherManager:
    """One :class:`HostWatcher` per host row: new hosts get one, removed hosts lose theirs, a
    host whose URI changed gets a fresh one."""

    def __init__(self, rescan_seconds: float = 5.0) -> None:
        self.rescan_seconds = rescan_seconds
        self.watchers: dict[int, tuple[str, HostWatcher]] = {}

    def rescan(self) -> None:
        close_old_connections()
        hosts = dict(Host.objects.values_list("pk", "uri"))
        for pk in list(self.watchers):
            uri, watcher = self.watchers[pk]
            if hosts.get(pk) != uri or not watcher.alive:
                watcher.stop()
                del self.watchers[pk]
        for pk, uri in hosts.items():
            if pk not in self.watchers:
                self.watchers[pk] = (uri, HostWatcher(pk).start())

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.rescan()
                except Exception:
                    logger.exception("host watcher rescan failed")
                stop.wait(self.rescan_seconds)
        finally:
            self.stop_all()
            connections.close_all()

    def stop_all(self) -> None:
        for _uri, watcher in self.watchers.values():
            watcher.stop()
        self.watchers.clear()


def start_watchers(stop: threading.Event, rescan_seconds: float = 5.0) -> threading.Thread:
    """The manager in a daemon thread (the embedded default and ``watch_hosts``)."""
    manager = WatcherManager(rescan_seconds)
    thread = threading.Thread(target=manager.run, args=(stop,), name="host-watchers", daemon=True)
    thread.manager = manager  # type: ignore[attr-defined]
    thread.start()
    return thread


def wait_until(predicate, timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
