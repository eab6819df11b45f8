"""Host watchers: libvirt events turned into inventory updates and live messages.

One :class:`HostWatcher` per host holds a libvirt connection with keepalive and registers
callbacks for domain lifecycle, device added/removed, job completed, reboot, storage pool
lifecycle and network lifecycle events. A watcher has no thread of its own: every watcher of
the process is carried by one :class:`WatcherPool`, whose threads are fixed in number whatever
the number of hosts:

* libvirt's one event loop thread (``hosts.driver.events``) runs every connection's callbacks,
  keepalive and close callbacks; the callbacks only queue what happened;
* a **scheduler** thread keeps a heap of due times: a (re)connect attempt is an entry there,
  not a sleeping thread, so an unreachable host costs one heap entry between attempts. It also
  checks once a second that the watched connections are alive (``isAlive``: no call to the
  host);
* a bounded pool of **openers** (``PADDOCK["WATCHER_OPENERS"]``) opens the connections that
  are due, each open under the host call deadline (``hosts.driver.connection``);
* a **prober** thread (``hosts.probe``) first asks a remote host's SSH port whether it accepts
  a TCP connection, for thousands of hosts at once: only one that does costs an ssh process
  and a libvirt open; one that does not is offline with the probe's reason at once, and an
  address that drops packets costs a socket for ``CONNECT_TIMEOUT`` seconds, not a thread;
* a bounded pool of **appliers** (``PADDOCK["WATCHER_APPLIERS"]``) does the database work,
  taking hosts with queued events from one queue; a host is held by one applier at a time, so
  its events are applied in order, and events queued meanwhile collapse into one batch
  (:class:`_Batch`): a domain re-read once for many events, pools once, networks once.

What an applier does:

* a domain event goes to the domain handlers registered in ``hosts.hooks`` (``vms`` registers
  the one that re-reads that domain into its VM row: ``vms.domain_events``);
* a pool or network event re-reads the host's pools or networks;
* a connect runs a full reconcile (events may have been missed while no callback was
  registered), a failed connect marks the host offline with libvirt's message;

and sends ``host.updated`` after the transaction commits (``panel.events``). The libvirt side
(the connection with keepalive, the callbacks and their constants) is ``hosts.driver.watch``.

When the connection dies (keepalive, close callback, a failed call, or the liveness check) the
watcher is due to reconnect at once; while it cannot, the host is offline with libvirt's
message and attempts follow with backoff (1, 2, 4 ... 30 s). The database connections a
process holds are bounded: one per applier while it has work, plus the reconcile loop, the
metrics collector and the rescan (see ``docs/events.md``). The periodic reconcile
(``hosts.reconcile``) stays as the safety net.

A test-driver host (``test:///...``) keeps its simulated state per connection, so its watcher
registers on the process's shared connection (``hosts.driver.connection.get_connection``); its
events are the ones caused through that connection, i.e. by this process.

:class:`WatcherManager` keeps one watcher per host row of its shard (``hosts.shards``),
starting watchers for hosts added later and stopping those of removed hosts; ``manage.py
watch_hosts`` and the embedded default run it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.db.models import Case, Value, When

from panel import events

from . import hooks
from .choices import HostStatus
from .driver.connection import (
    HostConnectError,
    InvalidURI,
    get_connection,
    libvirt_error_message,
    parse_uri,
)
from .driver.domains import DriverError
from .driver.events import ensure_event_loop
from .driver.watch import Subscription, connection_alive, open_watch_connection, subscribe
from .models import Host
from .probe import Prober
from .reconcile import reconcile_host
from .shards import ALL, Shard
from .sync import sync_networks, sync_pools

logger = logging.getLogger(__name__)

APPLY_GROUP = 100  # hosts an applier takes from the queue in one round (a backlog)
BACKOFF_MIN = 1.0
BACKOFF_MAX = 30.0
LIVENESS_SECONDS = 1.0

# --- what the callbacks queue ------------------------------------------------------------------


@dataclass
class _Batch:
    """Work queued for one host and applied in one go; repeated events for one object
    collapse. A connect's reconcile and a failed connect's offline mark replace each other:
    the later one is what holds."""

    domains: dict[str, str] = field(default_factory=dict)  # uuid -> last event name
    pools: bool = False
    networks: bool = False
    reconcile: bool = False
    offline: str | None = None  # libvirt's message of the last failed connect

    def __bool__(self) -> bool:
        return bool(self.domains or self.pools or self.networks or self.reconcile or self.offline)

    def merge(self, later: _Batch) -> None:
        """Add what was queued after this batch (the later event of each kind holds)."""
        self.domains.update(later.domains)
        self.pools |= later.pools
        self.networks |= later.networks
        if later.reconcile:
            self.add(("reconcile",))
        if later.offline is not None:
            self.add(("offline", later.offline))

    def add(self, item: tuple) -> None:
        kind = item[0]
        if kind == "domain":
            self.domains[item[1]] = item[2]
        elif kind == "pools":
            self.pools = True
        elif kind == "networks":
            self.networks = True
        elif kind == "reconcile":
            self.reconcile, self.offline = True, None
        elif kind == "offline":
            self.reconcile, self.offline = False, item[1]


@dataclass(frozen=True)
class _Target:
    """What opening a host's connection needs, read at rescan: no database on the openers."""

    pk: int
    name: str
    uri: str
    ssh_host_key: str

    @classmethod
    def of(cls, host) -> _Target:
        return cls(host.pk, host.name, host.uri, host.ssh_host_key or "")


# --- the scheduler: due times in a heap ---------------------------------------------------------


class Scheduler:
    """Calls due at a time, kept in a heap and fired by one thread: a reconnect attempt with
    backoff is an entry, not a thread. ``at(when, key, fn)`` replaces the key's earlier entry
    (only the latest one fires); ``cancel(key)`` drops it. ``every(seconds, fn)`` runs ``fn``
    on the scheduler's thread between entries (the liveness check)."""

    def __init__(self, name: str = "watch-scheduler") -> None:
        self.name = name
        self._heap: list[tuple[float, int, object]] = []
        self._latest: dict[object, int] = {}  # key -> sequence of its live entry
        self._calls: dict[int, object] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._periodic: list[tuple[float, object]] = []
        self._next_periodic = 0.0
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def every(self, seconds: float, fn) -> None:
        with self._cond:
            self._periodic.append((seconds, fn))
            self._next_periodic = time.monotonic() + seconds
            self._cond.notify_all()

    def at(self, when: float, key, fn) -> None:
        with self._cond:
            seq = next(self._seq)
            old = self._latest.get(key)
            if old is not None:
                self._calls.pop(old, None)
            self._latest[key] = seq
            self._calls[seq] = (key, fn)
            heapq.heappush(self._heap, (when, seq, key))
            self._cond.notify_all()

    def cancel(self, key) -> None:
        with self._cond:
            seq = self._latest.pop(key, None)
            if seq is not None:
                self._calls.pop(seq, None)

    def pending(self) -> int:
        with self._cond:
            return len(self._calls)

    def due(self, now: float) -> list:
        """Pop the calls due at ``now`` (the loop's step, and what unit tests drive)."""
        fired = []
        with self._cond:
            while self._heap and self._heap[0][0] <= now:
                _when, seq, key = heapq.heappop(self._heap)
                entry = self._calls.pop(seq, None)
                if entry is None:
                    continue  # replaced or cancelled
                if self._latest.get(key) == seq:
                    del self._latest[key]
                fired.append(entry[1])
        return fired

    def _wait_seconds(self, now: float) -> float:
        waits = [1.0]
        if self._heap:
            waits.append(self._heap[0][0] - now)
        if self._periodic:
            waits.append(self._next_periodic - now)
        return max(0.0, min(waits))

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                self._cond.wait(self._wait_seconds(time.monotonic()))
                if self._stopped:
                    return
            now = time.monotonic()
            for fn in self.due(now):
                self._call(fn)
            if self._periodic and now >= self._next_periodic:
                self._next_periodic = now + min(s for s, _ in self._periodic)
                for _seconds, fn in list(self._periodic):
                    self._call(fn)

    @staticmethod
    def _call(fn) -> None:
        try:
            fn()
        except Exception:
            logger.exception("scheduled call failed")


def backoff(delay: float) -> float:
    """The wait after ``delay`` when an attempt failed again: doubled, at most BACKOFF_MAX."""
    return min(max(delay, BACKOFF_MIN) * 2, BACKOFF_MAX)


# --- one host ------------------------------------------------------------------------------------


class HostWatcher:
    """Watch one host on a :class:`WatcherPool` (the process's own unless given one):
    :meth:`start` schedules its first connect, :meth:`stop` ends it."""

    def __init__(self, host_id: int, pool: WatcherPool | None = None) -> None:
        self.host_id = host_id
        self.host: Host | None = None
        self.target: _Target | None = None
        self.conn = None  # the driver's connection while watching
        self.ready = threading.Event()  # set while callbacks are registered
        self.stats = {"connects": 0, "reconciles": 0, "events": 0, "applied": 0, "failures": 0}
        self.last_error = ""
        self.delay = BACKOFF_MIN  # the wait before the next attempt if this one fails
        self._pool = pool
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopped = False
        self._busy = 0  # an opener or applier is working on this host
        self._pending = _Batch()
        self._queued = False  # in the appliers' queue, or being applied
        self._generation = 0
        self._subscription: Subscription | None = None
        self._own_connection = True
        self._probed = False  # the probe before this attempt found the port open
        self._opening = False  # an opener is on this host now
        self._again = False  # asked to (re)connect while it was
        self._marked: str | None = None  # the offline message this watcher last wrote

    # -- start and stop -----------------------------------------------------------------------

    def start(self, target: _Target | None = None) -> HostWatcher:
        if target is None:
            try:
                target = _Target.of(Host.objects.get(pk=self.host_id))
            except Host.DoesNotExist:
                self._stopped = True
                return self
        self.target = target
        self._pool = self._pool or default_pool()
        self._pool.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching: no further attempt, callbacks deregistered, the connection closed;
        waits (up to ``timeout``) for an open or a batch in progress to end."""
        with self._lock:
            self._stopped = True
            self._pending = _Batch()
        if self._pool is not None:
            self._pool.remove(self)
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy and time.monotonic() < deadline:
                self._idle.wait(max(0.01, deadline - time.monotonic()))
        self._disconnect()

    @property
    def alive(self) -> bool:
        return not self._stopped

    def _enter(self) -> bool:
        with self._lock:
            if self._stopped:
                return False
            self._busy += 1
            return True

    def _leave(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    # -- queueing work for the appliers ------------------------------------------------------

    def _put(self, item: tuple) -> None:
        """Queue ``item`` for this host; the host joins the appliers' queue unless it is
        there or being applied already (then the applier picks the item up after)."""
        with self._lock:
            if self._stopped:
                return
            self._pending.add(item)
            if self._queued:
                return
            self._queued = True
        self._pool.ready.put(self)

    def _take(self) -> _Batch:
        with self._lock:
            batch, self._pending = self._pending, _Batch()
            return batch

    def _give_back(self, batch: _Batch) -> None:
        """Put a batch taken but not applied back in front of what came since; the host stays
        queued (the caller puts it back in the appliers' queue)."""
        with self._lock:
            later, self._pending = self._pending, batch
            batch.merge(later)

    def _done(self) -> bool:
        """After a batch: True (and still queued) when more work came meanwhile."""
        with self._lock:
            if self._pending and not self._stopped:
                return True
            self._queued = False
            return False

    # -- the connection (on an opener) -----------------------------------------------------------

    def _cycle(self) -> None:
        """Drop the old connection if any, connect; schedule the next attempt on failure. A
        remote host's port is probed first (:mod:`hosts.probe`); the answer brings the
        watcher back here, to open the connection, or marks the host offline."""
        with self._lock:
            # Once at a time: a scheduled attempt and a probe's answer (or a lost connection)
            # may put the watcher in the openers' queue twice; the attempt under way decides.
            if self._stopped:
                return
            if self._opening:
                self._again = True
                return
            self._opening = True
            self._busy += 1
        try:
            self._disconnect()
            if not self._probed:
                try:
                    probe = self._probe_target()
                except (OSError, InvalidURI) as exc:
                    self._failed(str(exc))
                    return
                if probe is not None:
                    self._pool.prober.submit(*probe, self._probe_done)
                    return
            self._probed = False
            try:
                self._connect()
            except (HostConnectError, InvalidURI) as exc:
                self._failed(str(exc))
                return
            self.delay = BACKOFF_MIN
            if self._stopped:  # stopped during the open: stop() may have missed it
                self._disconnect()
                return
            # Events may have been missed while no callback was registered: a full
            # reconcile brings the inventory back in line (and the host back online).
            self._put(("reconcile",))
        finally:
            with self._lock:
                self._opening = False
                again, self._again = self._again, False
            if (
                again
                and not self._stopped
                and not (self.ready.is_set() and connection_alive(self.conn))
            ):
                # Asked again meanwhile (the new connection died at once, say): once more.
                self._pool.schedule(self, 0)
            self._leave()

    def _failed(self, message: str) -> None:
        """An attempt failed: the host is offline with ``message``; the next attempt waits."""
        self.last_error = message
        self._put(("offline", message))
        self._pool.schedule(self, self.delay)
        self.delay = backoff(self.delay)

    def _probe_target(self) -> tuple[str, int, float] | None:
        """(IP address, port, timeout) to probe before opening; None when the transport has
        no TCP port of its own to ask (a local or test-driver host)."""
        uri = parse_uri(self.target.uri)
        if uri.kind != "ssh":
            return None
        port = uri.port or 22
        try:
            address = socket.getaddrinfo(uri.address, port, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            raise OSError(f"Cannot resolve {uri.address}: {exc.strerror or exc}.") from None
        return address, port, float(settings.PADDOCK.get("CONNECT_TIMEOUT", 15))

    def _probe_done(self, message: str | None) -> None:
        """The probe's answer (on the prober's thread: only queues)."""
        if self._stopped:
            return
        if message is None:
            self._probed = True
            self._pool.due.put(self)
        else:
            self._failed(message)

    def _connect(self) -> None:
        target = self.target
        with self._lock:
            self._generation += 1
            gen = self._generation
        self._own_connection = not parse_uri(target.uri).simulated
        if self._own_connection:
            conn = open_watch_connection(target)
        else:
            # The test driver's state lives in the connection: use the process's shared one.
            conn = get_connection(target)

        def on_domain(uuid: str, event: str) -> None:
            if gen == self._generation:  # not a connection this watcher already left
                self.stats["events"] += 1
                self._put(("domain", uuid, event))

        def on_object(kind: str):
            def callback() -> None:
                if gen == self._generation:
                    self.stats["events"] += 1
                    self._put((kind,))

            return callback

        def on_close(message: str) -> None:
            if gen == self._generation:
                self.last_error = message
                self._lost()

        self._subscription = subscribe(
            conn,
            own=self._own_connection,
            on_domain=on_domain,
            on_pools=on_object("pools"),
            on_networks=on_object("networks"),
            on_close=on_close,
        )
        self.conn = conn
        self.stats["connects"] += 1
        self.last_error = ""
        self.ready.set()
        logger.info("watching host %s", target.name)

    def _lost(self) -> None:
        """The connection died (close callback, keepalive, liveness, a failed call): straight
        back to connecting; the host is marked offline only if that fails, so a dropped
        connection that comes back at once does not flap."""
        with self._lock:
            if self._stopped or self.conn is None:
                return
            self._generation += 1  # this connection's callbacks are ignored from now on
        self.ready.clear()
        logger.info("host %s: connection lost: %s", self.host_id, self.last_error)
        self._pool.schedule(self, 0)

    def _check_alive(self) -> None:
        if self.conn is not None and self.ready.is_set() and not connection_alive(self.conn):
            self.last_error = self.last_error or "Connection to the host lost."
            self._lost()

    def _disconnect(self) -> None:
        self.ready.clear()
        with self._lock:
            self.conn = None
            self._generation += 1
            subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.cancel()  # and closes the connection if it is the watcher's own

    # -- applying events (on an applier) -------------------------------------------------------

    def _run_batch(self, batch: _Batch) -> None:
        if not batch:
            return
        try:
            self._apply(batch)
        except DriverError as exc:
            self.stats["failures"] += 1
            self.last_error = libvirt_error_message(exc)
            logger.warning("host %s: %s", self.host_id, self.last_error)
            if not connection_alive(self.conn):
                self._lost()
        except Exception:
            self.stats["failures"] += 1
            if connection_alive(self.conn):
                logger.exception("host %s: applying events failed", self.host_id)
            else:
                # The connection went away under the call; the reconnect's full reconcile
                # covers what these events were about.
                self._lost()

    def _apply(self, batch: _Batch) -> None:
        if batch.offline is not None:
            _mark_offline([(self, batch.offline)])
        if not (batch.reconcile or batch.pools or batch.networks or batch.domains):
            return
        try:
            host = Host.objects.get(pk=self.host_id)
        except Host.DoesNotExist:
            return  # removed: the rescan stops this watcher
        self.host = host
        conn = self.conn
        if batch.reconcile:
            self._marked = None
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


def _mark_offline(items: list[tuple[HostWatcher, str]]) -> None:
    """Mark the hosts of ``items`` (watcher, libvirt's or the probe's message) offline: one
    read of their rows and one UPDATE for all that change, and their ``host.updated``
    messages sent together after commit. A watcher that wrote the same message last time
    costs nothing: its row says so already."""
    items = [(w, m[:2000]) for w, m in items if m[:2000] != w._marked]
    if not items:
        return
    current = {
        pk: (status, error)
        for pk, status, error in Host.objects.filter(
            pk__in=[w.host_id for w, _ in items]
        ).values_list("pk", "status", "last_error")
    }
    changed = [
        (w, m)
        for w, m in items
        if current.get(w.host_id, (HostStatus.OFFLINE, m))
        != (
            HostStatus.OFFLINE,
            m,
        )
    ]
    if changed:
        Host.objects.filter(pk__in=[w.host_id for w, _ in changed]).update(
            status=HostStatus.OFFLINE,
            last_error=Case(*(When(pk=w.host_id, then=Value(m)) for w, m in changed)),
        )
        hosts = [
            Host(pk=w.host_id, name=w.target.name, status=HostStatus.OFFLINE, last_error=m)
            for w, m in changed
        ]
        _publish_offline(hosts)
        for host in hosts:
            logger.info("host %s offline: %s", host.name, host.last_error)
    for watcher, message in items:
        watcher._marked = message


def _publish_offline(hosts: list[Host]) -> None:
    """``host.updated`` (``offline``) of each host after commit, as ``events.host_changed``
    sends it, in one go: a thousand hosts failing at once are one pass of the channel layer,
    not a thousand."""
    messages = [(events.groups_for_host(h), events.host_message(h, event="offline")) for h in hosts]

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return

        async def send_all() -> None:
            for groups, message in messages:
                await events.publish(layer, groups, message)

        try:
            async_to_sync(send_all)()
        except Exception:
            logger.warning("could not publish %d offline hosts", len(messages), exc_info=True)

    transaction.on_commit(send)


# --- the threads every watcher of a process shares ----------------------------------------------


def _setting(name: str, default: int) -> int:
    return max(1, int(getattr(settings, "PADDOCK", {}).get(name, default)))


class WatcherPool:
    """The fixed threads that carry every watcher of the process: the scheduler, the
    openers and the appliers (libvirt's event loop thread besides). Their number does not
    depend on the number of hosts."""

    def __init__(self, openers: int | None = None, appliers: int | None = None) -> None:
        self.openers = openers or _setting("WATCHER_OPENERS", 8)
        self.appliers = appliers or _setting("WATCHER_APPLIERS", 4)
        self.scheduler = Scheduler()
        self.prober = Prober()
        self.due: queue.Queue = queue.Queue()  # watchers to (re)connect
        self.ready: queue.Queue = queue.Queue()  # watchers with work for the appliers
        self.watchers: dict[int, HostWatcher] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = False

    def start(self) -> WatcherPool:
        with self._lock:
            if self._started:
                return self
            self._started = True
        ensure_event_loop()
        self.scheduler.start()
        self.prober.start()
        self.scheduler.every(LIVENESS_SECONDS, self._check_alive)
        for number in range(self.openers):
            self._spawn(self._open_loop, f"watch-open-{number}")
        for number in range(self.appliers):
            self._spawn(self._apply_loop, f"watch-apply-{number}")
        return self

    def stop(self) -> None:
        """Stop every watcher and end the pool's threads (tests; a process's own pool lives
        as long as the process)."""
        with self._lock:
            watchers = list(self.watchers.values())
        for watcher in watchers:
            watcher.stop(timeout=1.0)
        self.scheduler.stop()
        self.prober.stop()
        for _ in range(self.openers):
            self.due.put(None)
        for _ in range(self.appliers):
            self.ready.put(None)
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def threads(self) -> int:
        return len(self._threads) + 2  # and the scheduler's and the prober's

    def retrying(self, host_id: int) -> bool:
        """Whether this pool watches the host and has no connection to it now (it is
        connecting, or waiting for its next attempt)."""
        watcher = self.watchers.get(host_id)
        return watcher is not None and not watcher.ready.is_set()

    def add(self, watcher: HostWatcher) -> None:
        self.start()
        with self._lock:
            self.watchers[watcher.host_id] = watcher
        self.schedule(watcher, 0)

    def remove(self, watcher: HostWatcher) -> None:
        self.scheduler.cancel(watcher)
        with self._lock:
            if self.watchers.get(watcher.host_id) is watcher:
                del self.watchers[watcher.host_id]

    def schedule(self, watcher: HostWatcher, seconds: float) -> None:
        """A (re)connect attempt in ``seconds``; replaces one scheduled earlier."""
        self.scheduler.at(time.monotonic() + seconds, watcher, lambda: self.due.put(watcher))

    def _check_alive(self) -> None:
        with self._lock:
            watchers = list(self.watchers.values())
        for watcher in watchers:
            watcher._check_alive()

    def _open_loop(self) -> None:
        while True:
            watcher = self.due.get()
            if watcher is None:
                return
            try:
                watcher._cycle()
            except Exception:
                logger.exception("host %s: connecting failed", watcher.host_id)
                if watcher.alive:
                    self.schedule(watcher, watcher.delay)
                    watcher.delay = backoff(watcher.delay)

    def _apply_loop(self) -> None:
        while True:
            try:
                watcher = self.ready.get_nowait()
            except queue.Empty:
                # Idle: the database connection goes back to the pool (or is closed) before
                # waiting, so an idle applier holds none.
                connections.close_all()
                watcher = self.ready.get()
            if watcher is None:
                connections.close_all()
                return
            # The hosts queued behind it go in the same round: their offline marks are one
            # UPDATE (many hosts failing at once), the rest is applied host by host.
            group = [watcher]
            while len(group) < APPLY_GROUP:
                try:
                    more = self.ready.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.ready.put(None)  # the pool stops: this loop or another one ends
                    break
                group.append(more)
            held = []
            for member in group:
                if member._enter():
                    held.append(member)
                else:  # stopped meanwhile: its work was dropped
                    member._done()
            try:
                close_old_connections()
                batches = [(member, member._take()) for member in held]
                offline = [(m, b.offline) for m, b in batches if b.offline is not None]
                if offline:
                    try:
                        _mark_offline(offline)
                    except Exception:
                        logger.exception("marking %d hosts offline failed", len(offline))
                for index, (member, batch) in enumerate(batches):
                    batch.offline = None
                    if index and batch:
                        # More than offline marks (a reconcile, events): back in the queue,
                        # for whichever applier is free, so one round does not serialise
                        # many hosts' syncs.
                        member._give_back(batch)
                        self.ready.put(member)
                        continue
                    member._run_batch(batch)
                    while member._done():
                        member._run_batch(member._take())
                if self.ready.empty():
                    # Before the hosts count as idle: a stopped watcher leaves no connection
                    # in use behind it.
                    connections.close_all()
            except Exception:
                logger.exception("applying events failed")
            finally:
                for member in held:
                    member._leave()


_default: WatcherPool | None = None
_default_lock = threading.Lock()


def default_pool() -> WatcherPool:
    """The process's pool, started on first use (settings ``WATCHER_OPENERS`` and
    ``WATCHER_APPLIERS``)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = WatcherPool().start()
        return _default


# --- every host of a shard --------------------------------------------------------------------


class WatcherManager:
    """One :class:`HostWatcher` per host row of ``shard``: new hosts get one, removed hosts
    lose theirs, a host whose URI or pinned key changed gets a fresh one."""

    def __init__(
        self,
        rescan_seconds: float = 5.0,
        shard: Shard = ALL,
        pool: WatcherPool | None = None,
    ) -> None:
        self.rescan_seconds = rescan_seconds
        self.shard = shard
        self.pool = pool
        self.watchers: dict[int, tuple[_Target, HostWatcher]] = {}

    def rescan(self) -> None:
        close_old_connections()
        pool = self.pool = self.pool or default_pool()
        rows = self.shard.hosts(Host.objects.all()).values_list("pk", "name", "uri", "ssh_host_key")
        targets = {pk: _Target(pk, name, uri, key or "") for pk, name, uri, key in rows}
        connections.close_all()  # the rescan holds no database connection between rounds
        for pk in list(self.watchers):
            target, watcher = self.watchers[pk]
            if targets.get(pk) != target or not watcher.alive:
                watcher.stop()
                del self.watchers[pk]
        for pk, target in targets.items():
            if pk not in self.watchers:
                self.watchers[pk] = (target, HostWatcher(pk, pool).start(target))

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
        for _target, watcher in self.watchers.values():
            watcher.stop(timeout=1.0)
        self.watchers.clear()


def start_watchers(
    stop: threading.Event, rescan_seconds: float = 5.0, shard: Shard = ALL
) -> threading.Thread:
    """The manager in a daemon thread (the embedded default and ``watch_hosts``)."""
    manager = WatcherManager(rescan_seconds, shard)
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
